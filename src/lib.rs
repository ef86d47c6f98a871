//! # stockpool
//!
//! A multi-channel inventory allocation service: one SKU sold on several
//! channels from stock in several warehouses, split by per-channel rules.
//!
//! # Layout
//!
//! Data flows one way, from the edges to the core and back:
//!
//! - [`domain`]: pure types and decisions (validation, rules, the ATP and
//!   published formula, sourcing, the reservation state machine). No I/O.
//! - [`engine`]: every pool in memory behind per-SKU locks; applies the
//!   domain's decisions and hands them to the store.
//! - [`store`]: durability (the `Store` trait, SQLite, the group-commit
//!   writer, loading state at start).
//! - [`publish`]: what each channel is told it can sell: level changes,
//!   numbered per channel, stored, then streamed to watchers.
//! - [`api`]: the gRPC services, validation at the boundary, auth, and the
//!   one error mapping to `Status`.
//! - [`odoo`]: the ERP, both ways: priced sale orders pushed from the
//!   outbox, and Odoo's deliveries and counts followed through the
//!   engine's public API.
//! - [`ha`]: the process's role (active or standby) and the term the
//!   active one serves, which both listeners route by.
//! - [`http`]: health endpoints. [`listen`]: the listeners (connection
//!   limits, timeouts, TLS, shutdown). [`server`] wires everything and runs it;
//!   [`config`] resolves flags and the TOML file; [`cli`] is the client.
//! - [`odoo`]: the ERP, both directions. [`outbound`]: the JSON-over-HTTP
//!   client it and the adapters share.
//! - [`adapters`]: channel adapters (`stockpool adapter shopify`), clients
//!   of the public gRPC contract only, run as their own process.

pub mod adapters;
pub mod alloc;
pub mod api;
pub mod cli;
pub mod config;
pub mod domain;
pub mod engine;
pub mod ha;
pub mod http;
pub mod listen;
pub mod odoo;
pub mod outbound;
pub mod publish;
pub mod server;
pub mod store;
pub mod telemetry;
