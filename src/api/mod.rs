//! The gRPC edge: tonic services, conversion and validation of requests,
//! authentication, and the one mapping from errors to `Status`. No business
//! logic lives here.

mod admin;
pub mod auth;
pub mod convert;
mod edge;
pub mod error;
pub mod info;
mod inventory;
pub mod paging;
pub mod protocol;

use tonic_health::server::HealthReporter;

use crate::ha::Serving;

pub use admin::AdminService;
pub use auth::{Role, Tokens};
pub use edge::{Edge, EdgeFuture, TermServices};
pub use inventory::InventoryService;

/// Code generated from `proto/stockpool/v1/*.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("stockpool.v1");

    /// The compiled protos, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/stockpool_descriptor.bin"));
}

/// How the generated messages serialize their enum fields to JSON (the
/// CLI's `-o json`): by the proto name of the value, as grpcurl shows them.
pub mod pb_json {
    use super::pb;

    pub fn reservation_status<S: serde::Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        match pb::ReservationStatus::try_from(*v) {
            Ok(x) => s.serialize_str(x.as_str_name()),
            Err(_) => s.serialize_i32(*v),
        }
    }

    pub fn outbox_state<S: serde::Serializer>(v: &i32, s: S) -> Result<S::Ok, S::Error> {
        match pb::OutboxState::try_from(*v) {
            Ok(x) => s.serialize_str(x.as_str_name()),
            Err(_) => s.serialize_i32(*v),
        }
    }
}

/// Everything the gRPC listener serves, in either role: health,
/// reflection (behind a token when tokens are configured) and
/// `GetServerInfo` from the process itself; every other call goes to the
/// current term's [`TermServices`], or is refused `UNAVAILABLE` as a
/// standby's (naming the role and the active server). Each call is counted
/// and timed, and tonic's own refusals are rewritten (see [`Edge`]). The
/// health reporter is returned so the server keeps it in step with
/// readiness.
pub fn edge(serving: Serving, tokens: Tokens) -> anyhow::Result<(Edge, HealthReporter)> {
    Edge::new(serving, tokens)
}
