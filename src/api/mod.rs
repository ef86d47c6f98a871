//! The gRPC edge: tonic services, conversion and validation of requests,
//! authentication, and the one mapping from errors to `Status`. No business
//! logic lives here.

mod admin;
pub mod auth;
pub mod convert;
pub mod error;
mod inventory;
pub mod protocol;

use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use crate::engine::Engine;
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

/// Every gRPC service: Inventory, Admin, health and reflection (behind a
/// token when tokens are configured), each call counted and timed by
/// [`crate::telemetry::track_rpc`], tonic's own refusals rewritten by
/// [`protocol::protocol_errors`]. Health reports
/// SERVING once built (the engine has loaded its state by then); the
/// reporter is returned so the server can keep it in step with readiness.
pub async fn routes(
    engine: Engine,
    publisher: Publisher,
    tokens: Tokens,
) -> anyhow::Result<(Routes, HealthReporter)> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<pb::inventory_server::InventoryServer<InventoryService>>()
        .await;
    reporter
        .set_serving::<pb::admin_server::AdminServer<AdminService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let mut routes = Routes::new(health);
    routes = routes
        .add_service(reflection)
        .add_service(
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
                tokens: tokens.clone(),
            })
            .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES),
        );
    let routes = Routes::from(
        routes
            .into_axum_router()
            .layer(axum::middleware::from_fn_with_state(
                tokens,
                auth::reflection_needs_token,
            ))
            .layer(axum::middleware::from_fn(protocol::protocol_errors))
            .layer(axum::middleware::from_fn(crate::telemetry::track_rpc)),
    );
    Ok((routes, reporter))
}
