//! `POST /odoo/webhook`: what Odoo's "Send Webhook Notification" actions
//! call, served on the HTTP port. Refused unless the shared secret matches;
//! a notification is answered at once (Odoo waits for the answer inside its
//! transaction, at most a second) and read later by [`Inbound`].

use std::sync::Arc;

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, Uri},
    routing::post,
    Json, Router,
};

use super::inbound::{Inbound, SyncError};

/// The webhook's route, to merge into the HTTP router.
pub fn routes(inbound: Arc<Inbound>) -> Router {
    Router::new()
        .route("/odoo/webhook", post(odoo_webhook))
        .with_state(inbound)
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

/// A `stock.quant` or `stock.picking` notification. 200 with when Odoo
/// will be read (the notification is taken, not yet applied); 401 on a wrong secret, 400 when the body is not JSON, 422
/// when it is not a notification stockpool takes. Nothing is read from
/// Odoo before answering.
async fn odoo_webhook(
    State(inbound): State<Arc<Inbound>>,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    let error = |status: StatusCode, outcome: &'static str, message: String| {
        crate::telemetry::odoo_webhook(outcome);
        (status, Json(serde_json::json!({ "error": message })))
    };
    if !inbound.webhook_enabled() {
        return error(
            StatusCode::NOT_FOUND,
            "refused",
            "the Odoo webhook is off: set odoo.webhook_secret to turn it on".into(),
        );
    }
    let presented = presented_secret(&uri, &headers);
    if !presented.is_some_and(|p| inbound.secret_matches(&p)) {
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
    match inbound.notice(&body) {
        Ok(notice) => {
            crate::telemetry::odoo_webhook("accepted");
            (StatusCode::OK, Json(serde_json::json!(notice)))
        }
        Err(SyncError::BadRequest(m)) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
        Err(e) => {
            tracing::warn!(error = %crate::telemetry::chain(&e), "Odoo webhook failed");
            error(StatusCode::SERVICE_UNAVAILABLE, "invalid", e.to_string())
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
