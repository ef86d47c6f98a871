//! Integration tests: gRPC against a real server on loopback, over its own
//! embedded store.

mod bench;
mod errors;
mod fake_odoo;
mod faults;
mod helpers;
mod lifecycle;
mod load;
mod metrics;
mod odoo;
mod postgres;
mod redis;
mod service;
mod watch;
