//! The HTTP side port: liveness, readiness and Prometheus metrics for
//! orchestrators and scrapers, and the webhook Odoo calls when stock
//! changes. Readiness is defined once here, served at `/readyz` and
//! mirrored into gRPC health. Only the webhook changes state, through
//! [`crate::sync`], once its shared secret is checked. With tokens
//! configured, `/metrics` (stock and channel figures) answers only a bearer
//! token of any role; `/healthz` and `/readyz` stay open for probes.

use std::time::Duration;

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode, Uri},
    response::IntoResponse,
    routing::{get, post},
    Json, Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::api::auth::{Need, Tokens};
use crate::engine::Engine;
use crate::sync::{OdooSync, SyncError};

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

/// Health, readiness, metrics and, with an Odoo connection, the webhook at
/// `POST /odoo/webhook`.
pub fn router(
    engine: Engine,
    metrics: PrometheusHandle,
    tokens: Tokens,
    odoo: Option<Arc<OdooSync>>,
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
    match odoo {
        Some(sync) => base.merge(
            Router::new()
                .route("/odoo/webhook", post(odoo_webhook))
                .with_state(sync),
        ),
        None => base,
    }
}

/// The webhook's shared secret: `?secret=` in the URL (Odoo's server action
/// cannot add headers), or the `X-Stockpool-Secret` header.
fn presented_secret(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    let from_query = uri.query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(key, _)| key == "secret")
            .map(|(_, value)| value.into_owned())
    });
    from_query.or_else(|| {
        headers
            .get("x-stockpool-secret")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    })
}

/// Odoo's "Send Webhook Notification" on `stock.quant`. Refused unless the
/// secret matches; the answer says what was set, for Odoo's logs.
async fn odoo_webhook(
    State(sync): State<Arc<OdooSync>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let error = |status: StatusCode, outcome: &'static str, message: String| {
        crate::telemetry::odoo_webhook(outcome);
        (status, Json(serde_json::json!({ "error": message })))
    };
    if !sync.webhook_enabled() {
        return error(
            StatusCode::NOT_FOUND,
            "refused",
            "the Odoo webhook is off: set odoo.webhook_secret to turn it on".into(),
        );
    }
    let presented = presented_secret(&uri, &headers);
    if !presented.is_some_and(|p| sync.secret_matches(&p)) {
        tracing::warn!("Odoo webhook call refused: missing or wrong secret");
        return error(
            StatusCode::UNAUTHORIZED,
            "refused",
            "missing or wrong secret: call /odoo/webhook?secret=<odoo.webhook_secret>".into(),
        );
    }
    let body: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid",
                format!("the body is not JSON: {e}"),
            )
        }
    };
    match sync.quant_changed(&body).await {
        Ok(outcome) => {
            crate::telemetry::odoo_webhook("applied");
            (StatusCode::OK, Json(serde_json::json!(outcome)))
        }
        Err(SyncError::BadRequest(m)) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
        Err(e @ SyncError::Odoo(_)) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "Odoo webhook: could not read Odoo");
            error(StatusCode::BAD_GATEWAY, "failed", e.to_string())
        }
        Err(SyncError::Engine(e)) => {
            let status = tonic::Status::from(e);
            let code = if status.code() == tonic::Code::InvalidArgument {
                StatusCode::UNPROCESSABLE_ENTITY
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            error(code, "failed", status.message().to_string())
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_of(uri: &str, header: Option<&str>) -> Option<String> {
        let mut headers = HeaderMap::new();
        if let Some(h) = header {
            headers.insert("x-stockpool-secret", h.parse().unwrap());
        }
        presented_secret(&uri.parse().unwrap(), &headers)
    }

    #[test]
    fn the_webhook_secret_is_read_from_the_query_then_the_header() {
        assert_eq!(
            secret_of("/odoo/webhook?a=1&secret=s3cr%2Fet+x", None).as_deref(),
            Some("s3cr/et x")
        );
        assert_eq!(
            secret_of("/odoo/webhook", Some("from-header")).as_deref(),
            Some("from-header")
        );
        assert_eq!(
            secret_of("/odoo/webhook?secret=q", Some("h")).as_deref(),
            Some("q")
        );
        assert_eq!(secret_of("/odoo/webhook?other=1", None), None);
    }

    #[test]
    fn a_malformed_escape_is_kept_as_written() {
        assert_eq!(
            secret_of("/odoo/webhook?secret=a%zzb%4", None).as_deref(),
            Some("a%zzb%4")
        );
        assert_eq!(
            secret_of("/odoo/webhook?secret=%41%e2%82%ac", None).as_deref(),
            Some("A€")
        );
    }
}
