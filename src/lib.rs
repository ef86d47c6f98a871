//! stockpool: multi-channel inventory allocation.
pub mod domain;
pub mod store;
pub mod telemetry;
