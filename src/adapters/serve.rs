//! The adapter's own HTTP port, apart from the channel's webhooks:
//! `/metrics` (Prometheus), `/healthz` (alive), `/readyz` (200 once every
//! readiness check passes, else 503 naming what is not ready), and
//! `/unapplied` (JSON: the events that can never apply, newest first).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::{extract::State, http::StatusCode, routing::get, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;

use super::state::StateDb;

/// Named readiness checks; each is not ready (with a reason) until set.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
}

impl Readiness {
    /// A check that starts not ready, for `reason`.
    pub fn add(&self, name: &'static str, reason: &str) {
        self.lock().insert(name, Some(reason.to_string()));
    }

    pub fn ready(&self, name: &'static str) {
        self.lock().insert(name, None);
    }

    pub fn not_ready(&self, name: &'static str, reason: String) {
        self.lock().insert(name, Some(reason));
    }

    /// Whether the check `name` passes now.
    pub fn passes(&self, name: &'static str) -> bool {
        matches!(self.lock().get(name), Some(None))
    }

    /// None when every check passes, else what fails.
    pub fn failing(&self) -> Option<String> {
        let checks = self.lock();
        let failing: Vec<String> = checks
            .iter()
            .filter_map(|(name, reason)| reason.as_ref().map(|r| format!("{name}: {r}")))
            .collect();
        (!failing.is_empty()).then(|| failing.join("; "))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Option<String>>> {
        self.checks.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Clone)]
struct Served {
    metrics: PrometheusHandle,
    ready: Readiness,
    state: StateDb,
}

pub fn router(metrics: PrometheusHandle, ready: Readiness, state: StateDb) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(scrape))
        .route("/unapplied", get(unapplied))
        .with_state(Served {
            metrics,
            ready,
            state,
        })
}

async fn readyz(State(s): State<Served>) -> (StatusCode, String) {
    match s.ready.failing() {
        None => (StatusCode::OK, "ready\n".into()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn scrape(State(s): State<Served>) -> String {
    s.metrics.render()
}

async fn unapplied(State(s): State<Served>) -> (StatusCode, Json<serde_json::Value>) {
    match s.state.list_unapplied(1000).await {
        Ok(list) => (
            StatusCode::OK,
            Json(serde_json::json!({ "unapplied": list })),
        ),
        Err(e) => {
            tracing::error!(error = %e, "reading the unapplied list");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(
                    serde_json::json!({ "error": "could not read the list; see the adapter's log" }),
                ),
            )
        }
    }
}
