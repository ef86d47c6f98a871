//! The gRPC edge: tonic services, conversion and validation of requests,
//! authentication, and the one mapping from errors to `Status`. No business
//! logic lives here.

mod admin;
pub mod auth;
pub mod convert;
pub mod error;
pub mod info;
mod inventory;
pub mod paging;
pub mod protocol;

use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::engine::Engine;
use crate::ha::Serving;
use crate::publish::Publisher;

pub use admin::AdminService;
pub use auth::{Role, Tokens};
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

/// The services of one term of an active server: Inventory and Admin over
/// its engine. [`edge`] routes to them while the term is served.
pub fn term_routes(
    engine: Engine,
    publisher: Publisher,
    tokens: Tokens,
    serving: Serving,
) -> axum::Router {
    Routes::new(
        pb::inventory_server::InventoryServer::new(InventoryService {
            engine: engine.clone(),
            publisher,
            tokens: tokens.clone(),
        })
        .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES),
    )
    .add_service(
        pb::admin_server::AdminServer::new(AdminService {
            engine,
            tokens,
            serving,
        })
        .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES),
    )
    .into_axum_router()
}

/// Everything the gRPC listener serves, in either role: health,
/// reflection (behind a token when tokens are configured) and
/// `GetServerInfo` from the process itself; every other call goes to the
/// current term's [`term_routes`], or is refused `UNAVAILABLE` as a
/// standby's (naming the role and the active server). Each call is counted
/// and timed by [`crate::telemetry::track_rpc`], and tonic's own refusals
/// are rewritten by [`protocol::protocol_errors`]. The health reporter is
/// returned so the server keeps it in step with readiness.
pub fn edge(serving: Serving, tokens: Tokens) -> anyhow::Result<(axum::Router, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    // Both reflection versions: grpcurl before 1.9 and many other tools
    // speak only v1alpha. Health is in the reflection data too.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    let info = info::route(serving.clone(), tokens.clone());
    let router = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .into_axum_router()
        .route(info::PATH, info)
        .fallback(move |request: axum::extract::Request| {
            let serving = serving.clone();
            async move { info::to_term(&serving, request).await }
        })
        .layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::reflection_needs_token,
        ))
        .layer(axum::middleware::from_fn(protocol::deadline))
        .layer(axum::middleware::from_fn(protocol::protocol_errors))
        .layer(axum::middleware::from_fn(crate::telemetry::track_rpc));
    Ok((router, reporter))
}
