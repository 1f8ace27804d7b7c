//! Integration tests of the webhook.
