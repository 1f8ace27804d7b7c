//! Integration tests of the webhooks: one binary, a module per topic.

// Tests and benchmarks fail by panicking and index fixtures they built.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod cases;
mod chart;
mod hostile;
mod https;
mod lanyard;
mod spin;
mod support;
