//! Integration tests of the webhooks: one binary, a module per topic.

mod cases;
mod chart;
mod hostile;
mod https;
mod lanyard;
mod spin;
mod support;
