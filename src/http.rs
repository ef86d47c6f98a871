//! The HTTP side port: liveness and readiness for orchestrators.

use axum::{extract::State, http::StatusCode, routing::get, Router};

use crate::engine::Engine;

pub fn router(engine: Engine) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(engine)
}

/// Ready once state is loaded (it is, or the server would not be serving)
/// and no SKU waits for a reload after a failed commit.
async fn readyz(State(engine): State<Engine>) -> (StatusCode, &'static str) {
    if engine.is_consistent() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "reloading state after a failed write\n",
        )
    }
}
