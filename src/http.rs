//! The HTTP side port: liveness, readiness and Prometheus metrics for
//! orchestrators and scrapers, and the routes of the edges that are called
//! over HTTP (the Odoo webhook, from [`crate::odoo::routes`], served by the
//! active term only; a standby answers them 503). Readiness is defined once
//! here, served at `/readyz` (503 with the word `standby` on a standby,
//! `isolated` on an active server that cannot renew its lease, for load
//! balancers) and mirrored into gRPC health. The Odoo webhook is served
//! only while current: an isolated server answers it 503 (it could not
//! apply what Odoo sends).
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
use crate::ha::Serving;
use tower::ServiceExt;

/// How often gRPC health re-reads readiness.
const HEALTH_POLL: Duration = Duration::from_millis(500);

/// What the handlers need: the role and term to observe, the recorder to
/// render, the tokens a scrape must present.
#[derive(Clone)]
struct HttpState {
    serving: Serving,
    metrics: PrometheusHandle,
    tokens: Tokens,
}

/// Health, readiness and metrics, in either role; any other path goes to
/// the current term's routes (with an Odoo connection, its webhook, e.g.
/// `POST /odoo/webhook`), or is answered 503 by a standby.
pub fn router(serving: Serving, metrics: PrometheusHandle, tokens: Tokens) -> Router {
    let fallback = serving.clone();
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .with_state(HttpState {
            serving,
            metrics,
            tokens,
        })
        .fallback(move |request: axum::extract::Request| {
            let serving = fallback.clone();
            async move {
                match serving.term() {
                    Some(term) if term.engine.is_current() => {
                        match term.http.oneshot(request).await {
                            Ok(response) => response,
                            Err(never) => match never {},
                        }
                    }
                    _ => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("{}\n", serving.refusal()),
                    )
                        .into_response(),
                }
            }
        })
}

/// Ready when active, state loaded (it is, once a term is served) and no
/// SKU waits for a reload after a failed commit.
pub fn is_ready(serving: &Serving) -> bool {
    serving.unready().is_none()
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, String) {
    match state.serving.unready() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// The Prometheus text format, after refreshing the levels computed at
/// scrape time. That pass walks every SKU, so it runs on a blocking thread
/// rather than on an async worker that RPCs need.
async fn scrape(State(state): State<HttpState>, headers: HeaderMap) -> axum::response::Response {
    let HttpState {
        serving,
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
        crate::telemetry::observe_build(serving.info().store);
        if let Some(engine) = serving.engine() {
            crate::telemetry::observe_engine(&engine);
        }
        metrics.render() + &crate::telemetry::process_metrics_text()
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

/// The services gRPC health reports on: the overall status ("") and
/// every stockpool service.
const HEALTH_SERVICES: [&str; 3] = [
    "",
    crate::api::pb::inventory_server::SERVICE_NAME,
    crate::api::pb::admin_server::SERVICE_NAME,
];

/// Reports readiness on gRPC health once, so a health check that arrives
/// as soon as the listener opens finds every service registered.
pub async fn report_health(serving: &Serving, reporter: &HealthReporter) {
    let status = if is_ready(serving) {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for service in HEALTH_SERVICES {
        reporter.set_service_status(service, status).await;
    }
}

/// Keeps gRPC health in step with `/readyz` (at once when the role
/// changes) until `stop` fires, then reports NOT_SERVING so balancers stop
/// sending calls while the server drains. Covers the overall status ("")
/// and every stockpool service.
pub async fn follow_readiness(
    serving: Serving,
    reporter: HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let set = |status: ServingStatus| {
        let reporter = reporter.clone();
        async move {
            for service in HEALTH_SERVICES {
                reporter.set_service_status(service, status).await;
            }
        }
    };
    let mut tick = tokio::time::interval(HEALTH_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut role = serving.watch_role();
    let mut reported: Option<bool> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = role.changed() => {}
            _ = stop.changed() => {
                set(ServingStatus::NotServing).await;
                return;
            }
        }
        let ready = is_ready(&serving);
        if reported != Some(ready) {
            if reported.is_some() {
                if ready {
                    tracing::info!("ready: gRPC health SERVING");
                } else {
                    tracing::warn!(
                        why = serving.unready().unwrap_or(""),
                        "not ready: gRPC health NOT_SERVING"
                    );
                }
            }
            reported = Some(ready);
            set(if ready {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            })
            .await;
        }
    }
}
