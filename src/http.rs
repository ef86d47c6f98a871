//! The HTTP side port: liveness, readiness and Prometheus metrics for
//! orchestrators and scrapers, and the routes of the edges that are called
//! over HTTP (the Odoo webhook, from [`crate::odoo::routes`]). Readiness is
//! defined once here, served at `/readyz` and mirrored into gRPC health.
//! With tokens configured, `/metrics` (stock and channel figures) answers
//! only a bearer token of any role; `/healthz` and `/readyz` stay open for
//! probes.

use std::time::Duration;

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::IntoResponse,
    routing::get,
    Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::auth::{Need, Tokens};
use crate::engine::Engine;

/// How often gRPC health re-reads readiness.
const HEALTH_POLL: Duration = Duration::from_millis(500);

/// What the handlers need: the engine to observe, the recorder to render,
/// the tokens a scrape must present.
#[derive(Clone)]
struct HttpState {
    engine: Engine,
    metrics: PrometheusHandle,
    tokens: Tokens,
}

/// Health, readiness, metrics and, with an Odoo connection, its webhook
/// (`extra`, e.g. `POST /odoo/webhook`).
pub fn router(
    engine: Engine,
    metrics: PrometheusHandle,
    tokens: Tokens,
    extra: Option<Router>,
) -> Router {
    let base = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(HttpState {
            engine,
            metrics,
            tokens,
        });
    match extra {
        Some(routes) => base.merge(routes),
        None => base,
    }
}

/// Ready once state is loaded (it is, or the server would not be serving)
/// and no SKU waits for a reload after a failed commit.
pub fn is_ready(engine: &Engine) -> bool {
    engine.is_consistent()
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, &'static str) {
    if is_ready(&state.engine) {
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
async fn scrape(State(state): State<HttpState>, headers: HeaderMap) -> axum::response::Response {
    let HttpState {
        engine,
        metrics,
        tokens,
    } = state;
    let metadata = tonic::metadata::MetadataMap::from_headers(headers);
    if let Err(refused) = tokens.check(&metadata, Need::Read) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            format!("{}\n", refused.message()),
        )
            .into_response();
    }
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
    .into_response()
}

/// Keeps gRPC health in step with `/readyz` until `stop` fires, then reports
/// NOT_SERVING so balancers stop sending calls while the server drains.
/// Covers the overall status ("") and every stockpool service.
pub async fn follow_readiness(
    engine: Engine,
    reporter: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let services = [
        "",
        crate::api::pb::inventory_server::SERVICE_NAME,
        crate::api::pb::admin_server::SERVICE_NAME,
    ];
    let set = |status: ServingStatus| {
        let reporter = reporter.clone();
        async move {
            for service in services {
                reporter.set_service_status(service, status).await;
            }
        }
    };
    let mut tick = tokio::time::interval(HEALTH_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut serving = true;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let ready = is_ready(&engine);
                if ready != serving {
                    serving = ready;
                    if ready {
                        tracing::info!("ready again: gRPC health SERVING");
                        set(ServingStatus::Serving).await;
                    } else {
                        tracing::warn!("not ready: gRPC health NOT_SERVING");
                        set(ServingStatus::NotServing).await;
                    }
                }
            }
            _ = stop.changed() => {
                set(ServingStatus::NotServing).await;
                return;
            }
        }
    }
}
