//! Integration tests: gRPC against a real server on loopback, over its own
//! embedded store.

mod access;
mod amazon;
mod backup;
mod bench;
mod cli;
mod errors;
mod fake_odoo;
#[path = "../support/fake_shopify.rs"]
mod fake_shopify;
mod fake_spapi;
mod faults;
mod ha;
mod helpers;
mod hostile;
mod lifecycle;
mod listeners;
mod load;
mod metrics;
mod migrate;
mod odoo;
mod postgres;
mod redis;
mod scale;
mod service;
mod shopify;
mod terms;
mod tooling;
mod watch;
