//! The HTTP side port: liveness, readiness and Prometheus metrics for
//! orchestrators and scrapers. Nothing here changes state.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::Engine;

/// What the handlers need: the engine to observe and the recorder to render.
#[derive(Clone)]
struct HttpState {
    engine: Engine,
    metrics: PrometheusHandle,
}

pub fn router(engine: Engine, metrics: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(HttpState { engine, metrics })
}

/// Ready once state is loaded (it is, or the server would not be serving)
/// and no SKU waits for a reload after a failed commit.
async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if state.engine.is_consistent() {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "reloading state after a failed write\n",
        )
    }
}

/// The Prometheus text format, after refreshing the levels computed at
/// scrape time. That pass walks every SKU, so it runs on a blocking thread
/// rather than on an async worker that RPCs need.
async fn scrape(State(state): State<HttpState>) -> impl IntoResponse {
    let HttpState { engine, metrics } = state;
    let body = tokio::task::spawn_blocking(move || {
        crate::telemetry::observe_engine(&engine);
        metrics.render()
    })
    .await;
    match body {
        Ok(body) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            body,
        ),
        Err(e) => {
            tracing::error!(error = %e, "rendering metrics failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "rendering metrics failed\n".to_string(),
            )
        }
    }
}
