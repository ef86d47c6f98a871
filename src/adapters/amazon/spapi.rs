//! The Selling Partner API client: Login with Amazon access tokens, one
//! token bucket per operation, and SP-API's error shapes.
//!
//! - Auth: the refresh-token grant (`grant_type=refresh_token`, form
//!   encoded) gives an access token for `expires_in` seconds (3600). It is
//!   cached and refreshed a while before it expires (a quarter of its life,
//!   at most a minute), and at once when a call is answered 403
//!   `Unauthorized` (revoked or expired early): the call is sent again with
//!   the new token, so an expiring token never fails a write.
//! - Pacing: every operation has its own bucket with the usage plan's rate
//!   and burst (configurable), used at [`HEADROOM`] of the rate and
//!   restored only from when each call was answered (Amazon took its
//!   token somewhere in between). A call waits for a token; a 429
//!   `QuotaExceeded` empties the bucket, takes the rate named in
//!   `x-amzn-RateLimit-Limit` when lower, and the call waits its turn again.
//! - Restricted data: with `buyer_info`, getOrders goes with a Restricted
//!   Data Token (Tokens API 2021-03-01, `createRestrictedDataToken` for
//!   `GET /orders/v0/orders` and `buyerInfo`) in `x-amz-access-token`
//!   instead of the access token; it is cached like the access token
//!   (refreshed a quarter of its life, at most a minute, before
//!   `expiresIn`, and at once when refused).
//! - Errors: `{"errors":[{"code","message","details"}]}`; 5xx and no answer
//!   are [`SpError::Unavailable`] (retried by the caller with backoff).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use serde_json::Value;

use super::config::{AmazonConfig, Rate};
use crate::adapters::metrics;
use crate::adapters::pacing::TokenBucket;
use crate::outbound::{Answer, JsonHttp};

/// The part of a plan's rate the adapter uses. Its clock and Amazon's
/// see a call at different moments (the time on the wire varies), so at
/// exactly the rate a call now and then meets an empty bucket; a tenth
/// below it, Amazon's bucket refills faster than it is used, and that
/// slack absorbs the difference.
pub const HEADROOM: f64 = 0.9;

/// Why a call gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SpError {
    /// No answer, or 5xx: retry later.
    #[error("Amazon is unreachable: {0}")]
    Unavailable(String),
    /// Login with Amazon refused the credentials, or the API refused a
    /// fresh token (a missing role).
    #[error("Amazon refused the credentials: {0}")]
    Auth(String),
    /// Any other refusal, with SP-API's code and message.
    #[error("Amazon refused {op}: HTTP {status} {code}: {message}")]
    Refused {
        op: &'static str,
        status: u16,
        code: String,
        message: String,
    },
}

impl SpError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, SpError::Refused { status: 404, .. })
    }
}

/// The cached access token.
struct Token {
    value: String,
    refresh_at: Instant,
}

/// Which token a call carries.
#[derive(Debug, Clone, Copy)]
pub enum Auth {
    /// The LWA access token: every operation.
    Access,
    /// A Restricted Data Token for `GET /orders/v0/orders` with
    /// `dataElements: ["buyerInfo"]`: getOrders answers with `BuyerInfo`.
    BuyerInfo,
}

/// The restricted resource the buyer-info RDT is asked for.
pub const BUYER_INFO_PATH: &str = "/orders/v0/orders";

/// One seller's SP-API client. Shared by the poller and the writer.
pub struct SpApi {
    http: JsonHttp,
    /// The region's SP-API base address.
    endpoint: String,
    lwa: hyper::Uri,
    client_id: String,
    client_secret: String,
    refresh_token: String,
    /// The access token; an async lock so one refresh serves every caller.
    token: tokio::sync::Mutex<Option<Token>>,
    /// The buyer-info Restricted Data Token, when asked for.
    rdt: tokio::sync::Mutex<Option<Token>>,
    /// Per operation, made on first use from `plans`.
    buckets: Mutex<HashMap<&'static str, TokenBucket>>,
    /// The configured usage plans by operation name.
    plans: HashMap<&'static str, Rate>,
    timeout: Duration,
    channel: String,
}

/// SP-API's first error: (code, message).
fn first_error(body: &[u8]) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.pointer("/errors/0");
    let get = |k: &str| {
        e.and_then(|e| e.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let code = get("code");
    if code.is_empty() {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).to_string();
        return (String::new(), text);
    }
    (code, get("message"))
}

fn rate_limit(answer: &Answer) -> Option<f64> {
    answer
        .headers
        .get("x-amzn-RateLimit-Limit")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl SpApi {
    pub fn new(config: &AmazonConfig) -> anyhow::Result<SpApi> {
        let r = &config.rates;
        let plans = HashMap::from([
            ("getOrders", r.get_orders),
            ("getOrderItems", r.get_order_items),
            ("patchListingsItem", r.patch_listings_item),
            ("getListingsItem", r.get_listings_item),
            ("createFeedDocument", r.create_feed_document),
            ("createFeed", r.create_feed),
            ("getFeed", r.get_feed),
            ("getFeedDocument", r.get_feed_document),
            ("createRestrictedDataToken", r.create_restricted_data_token),
        ]);
        Ok(SpApi {
            http: JsonHttp::new(),
            endpoint: config.endpoint.clone(),
            lwa: config
                .lwa_url
                .parse()
                .map_err(|e| anyhow::anyhow!("lwa_url {:?}: {e}", config.lwa_url))?,
            client_id: config.client_id.clone(),
            client_secret: config.client_secret.clone(),
            refresh_token: config.refresh_token.clone(),
            token: tokio::sync::Mutex::new(None),
            rdt: tokio::sync::Mutex::new(None),
            buckets: Mutex::new(HashMap::new()),
            plans,
            timeout: config.timeout,
            channel: config.channel.clone(),
        })
    }

    /// Takes a token of `op`'s bucket, waiting for it.
    async fn pace(&self, op: &'static str) {
        let wait = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let plan = self.plans.get(op).copied().unwrap_or(Rate {
                rate: 1.0,
                burst: 1,
            });
            buckets
                .entry(op)
                .or_insert_with(|| TokenBucket::new(plan.rate * HEADROOM, plan.burst))
                .take()
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    fn answered(&self, op: &'static str, in_flight: Duration) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get_mut(op) {
            b.answered(in_flight);
        }
    }

    fn throttled(&self, op: &'static str, limit: Option<f64>) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = buckets.get_mut(op) {
            b.throttled(limit.map(|l| l * HEADROOM));
        }
    }

    /// Tokens left in `op`'s bucket (for the writer's choice of path).
    pub fn tokens(&self, op: &'static str) -> Option<f64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        buckets.get_mut(op).map(TokenBucket::tokens)
    }

    /// The access token, refreshed when due (or when `stale` is the one
    /// cached: the API refused it).
    async fn access_token(&self, stale: Option<&str>) -> Result<String, SpError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref() {
            let refused = stale == Some(t.value.as_str());
            if !refused && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let body: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "refresh_token")
            .append_pair("refresh_token", &self.refresh_token)
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", &self.client_secret)
            .finish();
        let asked = Instant::now();
        let answer = self
            .http
            .send(
                Method::POST,
                &self.lwa,
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded;charset=UTF-8",
                )],
                Bytes::from(body),
                self.timeout,
            )
            .await
            .map_err(|e| SpError::Unavailable(format!("Login with Amazon: {e}")))?;
        if answer.status.is_server_error() {
            return Err(SpError::Unavailable(format!(
                "Login with Amazon: HTTP {}",
                answer.status
            )));
        }
        let v: Value = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
        let (Some(token), true) = (
            v.get("access_token").and_then(Value::as_str),
            answer.status.is_success(),
        ) else {
            let why = v
                .get("error_description")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .unwrap_or("no access_token in the answer");
            return Err(SpError::Auth(format!(
                "Login with Amazon: HTTP {}: {why}",
                answer.status
            )));
        };
        let life = Duration::from_secs(v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600));
        let margin = (life / 4).min(Duration::from_secs(60));
        metrics::token_refresh(&self.channel);
        tracing::debug!(channel = %self.channel, expires_in_s = life.as_secs(), "new SP-API access token");
        *cached = Some(Token {
            value: token.to_string(),
            refresh_at: asked + life - margin,
        });
        Ok(token.to_string())
    }

    /// The buyer-info RDT, asked for when due (or when `stale` is the one
    /// cached: the API refused it).
    async fn restricted_token(&self, stale: Option<&str>) -> Result<String, SpError> {
        let mut cached = self.rdt.lock().await;
        if let Some(t) = cached.as_ref() {
            let refused = stale == Some(t.value.as_str());
            if !refused && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let body = serde_json::json!({
            "restrictedResources": [{
                "method": "GET",
                "path": BUYER_INFO_PATH,
                "dataElements": ["buyerInfo"],
            }]
        });
        let asked = Instant::now();
        // Boxed: this call goes through `call_as`, which comes back here
        // for restricted calls.
        let v = Box::pin(self.call_as(
            Auth::Access,
            "createRestrictedDataToken",
            Method::POST,
            "/tokens/2021-03-01/restrictedDataToken",
            Some(&body),
        ))
        .await?;
        let Some(token) = v.get("restrictedDataToken").and_then(Value::as_str) else {
            return Err(SpError::Refused {
                op: "createRestrictedDataToken",
                status: 200,
                code: String::new(),
                message: "no restrictedDataToken in the answer".into(),
            });
        };
        let life = Duration::from_secs(v.get("expiresIn").and_then(Value::as_u64).unwrap_or(3600));
        let margin = (life / 4).min(Duration::from_secs(60));
        tracing::debug!(channel = %self.channel, expires_in_s = life.as_secs(), "new restricted data token (buyerInfo)");
        *cached = Some(Token {
            value: token.to_string(),
            refresh_at: asked + life - margin,
        });
        Ok(token.to_string())
    }

    /// One operation: `path_query` under the endpoint, a JSON body or
    /// none; the JSON answer (Null for an empty body).
    pub async fn call(
        &self,
        op: &'static str,
        method: Method,
        path_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, SpError> {
        self.call_as(Auth::Access, op, method, path_query, body)
            .await
    }

    /// [`SpApi::call`] with the token `auth` names.
    pub async fn call_as(
        &self,
        auth: Auth,
        op: &'static str,
        method: Method,
        path_query: &str,
        body: Option<&Value>,
    ) -> Result<Value, SpError> {
        let uri: hyper::Uri = format!("{}{path_query}", self.endpoint)
            .parse()
            .map_err(|e| SpError::Refused {
                op,
                status: 0,
                code: "InvalidInput".into(),
                message: format!("{path_query}: {e}"),
            })?;
        let body = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let mut refused_token: Option<String> = None;
        loop {
            self.pace(op).await;
            let token = match auth {
                Auth::Access => self.access_token(refused_token.as_deref()).await?,
                Auth::BuyerInfo => self.restricted_token(refused_token.as_deref()).await?,
            };
            let mut headers = vec![
                ("x-amz-access-token", token.as_str()),
                ("user-agent", "stockpool-adapter/1.0 (Language=Rust)"),
            ];
            if !body.is_empty() {
                headers.push(("content-type", "application/json"));
            }
            let started = Instant::now();
            let answer = self
                .http
                .send(method.clone(), &uri, &headers, body.clone(), self.timeout)
                .await
                .map_err(|e| SpError::Unavailable(format!("{op}: {e}")))?;
            metrics::channel_call(&self.channel, op, started.elapsed());
            self.answered(op, started.elapsed());
            let status = answer.status.as_u16();
            if status == 429 {
                metrics::throttled(&self.channel);
                let limit = rate_limit(&answer);
                tracing::info!(channel = %self.channel, op, ?limit, "Amazon throttled a call (QuotaExceeded); waiting for its rate");
                self.throttled(op, limit);
                continue;
            }
            if status == 403 {
                let (code, message) = first_error(&answer.body);
                if refused_token.is_none() && (code == "Unauthorized" || code.is_empty()) {
                    tracing::info!(channel = %self.channel, op, message = %message, "the access token was refused; refreshing it");
                    refused_token = Some(token.clone());
                    continue;
                }
                return Err(SpError::Auth(format!("{op}: {code}: {message}")));
            }
            if answer.status.is_server_error() {
                return Err(SpError::Unavailable(format!("{op}: HTTP {status}")));
            }
            if !answer.status.is_success() {
                let (code, message) = first_error(&answer.body);
                return Err(SpError::Refused {
                    op,
                    status,
                    code,
                    message,
                });
            }
            if answer.body.is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_slice(&answer.body)
                .map_err(|e| SpError::Unavailable(format!("{op}: HTTP {status}, not JSON ({e})")));
        }
    }

    /// A feed document's upload or download (a presigned URL: no token,
    /// no SP-API bucket).
    pub async fn document(
        &self,
        method: Method,
        url: &str,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<Bytes, SpError> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| SpError::Unavailable(format!("feed document URL {url:?}: {e}")))?;
        let headers: Vec<(&str, &str)> = content_type
            .map(|c| vec![("content-type", c)])
            .unwrap_or_default();
        let answer = self
            .http
            .send(method, &uri, &headers, body, self.timeout)
            .await
            .map_err(|e| SpError::Unavailable(format!("feed document: {e}")))?;
        if !answer.status.is_success() {
            return Err(SpError::Unavailable(format!(
                "feed document: HTTP {}",
                answer.status
            )));
        }
        Ok(answer.body)
    }
}

/// Percent-encodes a path segment or query value.
pub fn enc(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
