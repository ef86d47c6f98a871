//! The webhook listener: `POST /webhooks` (any path works: Shopify posts
//! every topic to the address of its subscription), the topic in
//! `X-Shopify-Topic`.
//!
//! The signature comes first: `X-Shopify-Hmac-Sha256` must be the base64
//! HMAC-SHA256 of the raw body keyed with the app's client secret,
//! compared in constant time; a bad or missing one is 401 and nothing is
//! parsed or called. Then a delivery already answered 200
//! (`X-Shopify-Webhook-Id` seen) is 200 at once. Otherwise the topic's
//! handler runs; 200 only once stockpool acknowledged, or when the event
//! can never apply (listed for ops); 503 when it should come again.

use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
    Router,
};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::orders::{Orders, Outcome};
use super::payload;
use crate::adapters::metrics;
use crate::adapters::state::StateDb;

/// Topics the adapter handles.
pub const TOPICS: [&str; 7] = [
    "orders/create",
    "orders/paid",
    "orders/updated",
    "orders/edited",
    "orders/cancelled",
    "fulfillments/create",
    "refunds/create",
];

/// Whether `signature` (the header, base64) is the HMAC-SHA256 of `body`
/// under `secret`. Constant time in the signature.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The signature Shopify would send for `body` (tests and the fake use it).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[derive(Clone)]
struct Hooks {
    secret: Arc<String>,
    channel: String,
    orders: Arc<Orders>,
    db: StateDb,
}

/// The listener's routes.
pub fn router(secret: String, channel: String, orders: Arc<Orders>, db: StateDb) -> Router {
    let hooks = Hooks {
        secret: Arc::new(secret),
        channel,
        orders,
        db,
    };
    Router::new()
        .route("/", post(receive))
        .route("/{*path}", post(receive))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(hooks)
}

/// Creates the table of deliveries answered 200.
pub async fn init(db: &StateDb) -> anyhow::Result<()> {
    sqlx::query("CREATE TABLE IF NOT EXISTS shopify_webhooks (webhook_id TEXT PRIMARY KEY, topic TEXT NOT NULL, at_ms INTEGER NOT NULL)")
        .execute(db.pool())
        .await?;
    Ok(())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn seen(db: &StateDb, id: &str) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT 1 FROM shopify_webhooks WHERE webhook_id = ?1")
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .ok()
        .flatten()
        .is_some()
}

async fn remember(db: &StateDb, id: &str, topic: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let result = sqlx::query("INSERT INTO shopify_webhooks (webhook_id, topic, at_ms) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING")
        .bind(id)
        .bind(topic)
        .bind(now)
        .execute(db.pool())
        .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not record a webhook delivery (a redelivery will be applied again, harmlessly)");
    }
}

async fn receive(State(h): State<Hooks>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    let topic = header(&headers, "x-shopify-topic")
        .unwrap_or("")
        .to_string();
    let signed =
        header(&headers, "x-shopify-hmac-sha256").is_some_and(|sig| verify(&h.secret, &body, sig));
    if !signed {
        metrics::webhook(&h.channel, "unknown", "unauthorized");
        tracing::warn!(topic = %topic, "webhook refused: bad or missing X-Shopify-Hmac-Sha256");
        return (StatusCode::UNAUTHORIZED, "invalid signature\n".into());
    }
    let label = if TOPICS.contains(&topic.as_str()) {
        topic.as_str()
    } else {
        "other"
    };
    let webhook_id = header(&headers, "x-shopify-webhook-id").map(str::to_string);
    if let Some(id) = &webhook_id {
        if seen(&h.db, id).await {
            metrics::webhook(&h.channel, label, "duplicate");
            return (
                StatusCode::OK,
                "duplicate delivery: already applied\n".into(),
            );
        }
    }
    let outcome = dispatch(&h, &topic, &body).await;
    let (status, text, name) = match &outcome {
        Outcome::Applied => (StatusCode::OK, "applied".to_string(), "applied"),
        Outcome::Skipped(why) => (StatusCode::OK, format!("skipped: {why}"), "skipped"),
        Outcome::Unapplied(_, why) => (
            StatusCode::OK,
            format!("can never apply: {why}"),
            "unapplied",
        ),
        Outcome::Retry(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not applied, send again: {why}"),
            "retry",
        ),
    };
    metrics::webhook(&h.channel, label, name);
    match &outcome {
        Outcome::Retry(why) => {
            tracing::info!(topic = %topic, why = %why, "webhook not applied yet; answered 503 so Shopify sends it again")
        }
        Outcome::Skipped(why) => tracing::debug!(topic = %topic, why = %why, "webhook skipped"),
        _ => {}
    }
    if status == StatusCode::OK {
        if let Some(id) = &webhook_id {
            remember(&h.db, id, &topic).await;
        }
    }
    (status, text + "\n")
}

async fn dispatch(h: &Hooks, topic: &str, body: &[u8]) -> Outcome {
    fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
        serde_json::from_slice(body)
            .map_err(|e| format!("the payload is not what Shopify sends: {e}"))
    }
    let malformed = |why: String| async move {
        let _ = h.db.unapplied(topic, "", &why).await;
        metrics::unapplied(&h.channel, "malformed");
        tracing::warn!(topic, why = %why, "a signed webhook that cannot be read: listed at /unapplied");
        Outcome::Unapplied("malformed", why)
    };
    match topic {
        "orders/create" | "orders/paid" | "orders/updated" | "orders/cancelled" => {
            match parse::<payload::Order>(body) {
                Ok(o) => h.orders.order(topic, o).await,
                Err(why) => malformed(why).await,
            }
        }
        "orders/edited" => match parse::<payload::OrderEdited>(body) {
            Ok(e) => h.orders.edited(topic, e.order_edit).await,
            Err(why) => malformed(why).await,
        },
        "fulfillments/create" => match parse::<payload::Fulfillment>(body) {
            Ok(f) => h.orders.fulfillment(topic, f).await,
            Err(why) => malformed(why).await,
        },
        "refunds/create" => match parse::<payload::Refund>(body) {
            Ok(r) => h.orders.refund(topic, r).await,
            Err(why) => malformed(why).await,
        },
        other => Outcome::Skipped(format!("topic {other:?} is not one the adapter handles")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_hmac_of_the_raw_body_under_the_secret_verifies() {
        let body = br#"{"id":1}"#;
        let sig = sign("shh", body);
        assert!(verify("shh", body, &sig));
        assert!(!verify("other", body, &sig));
        assert!(!verify("shh", br#"{"id":2}"#, &sig));
        assert!(!verify("shh", body, "not base64!"));
        assert!(!verify("shh", body, ""));
    }
}
