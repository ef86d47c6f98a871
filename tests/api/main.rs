//! Integration tests: gRPC against a real server on loopback, over its own
//! embedded store.

mod errors;
mod fake_odoo;
#[path = "../support/fake_shopify.rs"]
mod fake_shopify;
mod faults;
mod helpers;
mod lifecycle;
mod load;
mod metrics;
mod odoo;
mod postgres;
mod redis;
mod service;
mod shopify;
mod watch;
