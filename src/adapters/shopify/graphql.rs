//! Shopify's Admin GraphQL API (2026-04): one POST per operation with the
//! access token, paced by the cost Shopify reports.
//!
//! Every answer carries `extensions.cost` with the bucket
//! (`throttleStatus`: maximumAvailable, currentlyAvailable, restoreRate)
//! and the `requestedQueryCost`. The client remembers both per kind of
//! operation and waits before a call until the bucket holds its expected
//! cost, so after the first `THROTTLED` no call is sent over budget. A call
//! Shopify refuses as too costly for any bucket (`MAX_COST_EXCEEDED`) comes
//! back as [`GqlError::TooCostly`] for the caller to split.

use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::config::ShopifyConfig;
use crate::adapters::pacing::CostBucket;
use crate::outbound::JsonHttp;

/// Why an operation gave no data.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GqlError {
    /// Shopify did not answer or answered 5xx: retry later.
    #[error("Shopify is unreachable: {0}")]
    Unavailable(String),
    /// 401/403: the token is wrong or lacks a scope.
    #[error("Shopify refused the access token: {0}")]
    Auth(String),
    /// More than a full bucket could pay for: make the call smaller.
    #[error("the call costs {cost}, more than Shopify's bucket of {max}")]
    TooCostly { cost: f64, max: f64 },
    /// Any other error Shopify reported.
    #[error("Shopify refused the call: {0}")]
    Refused(String),
}

pub struct Admin {
    http: JsonHttp,
    url: hyper::Uri,
    token: String,
    timeout: Duration,
    bucket: Mutex<CostBucket>,
    channel: String,
}

fn cost_of(answer: &Value) -> Option<(f64, f64, f64, f64)> {
    let cost = answer.pointer("/extensions/cost")?;
    let status = cost.get("throttleStatus")?;
    Some((
        cost.get("requestedQueryCost")?.as_f64()?,
        status.get("maximumAvailable")?.as_f64()?,
        status.get("currentlyAvailable")?.as_f64()?,
        status.get("restoreRate")?.as_f64()?,
    ))
}

fn codes(answer: &Value) -> Vec<String> {
    answer
        .get("errors")
        .and_then(Value::as_array)
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e.pointer("/extensions/code").and_then(Value::as_str))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl Admin {
    pub fn new(config: &ShopifyConfig) -> anyhow::Result<Admin> {
        Ok(Admin {
            http: JsonHttp::new(),
            url: config
                .graphql_url()
                .parse()
                .map_err(|e| anyhow::anyhow!("admin_url {:?}: {e}", config.admin_url))?,
            token: config.access_token.clone(),
            timeout: config.timeout,
            bucket: Mutex::new(CostBucket::default()),
            channel: config.channel.clone(),
        })
    }

    fn bucket(&self) -> std::sync::MutexGuard<'_, CostBucket> {
        self.bucket.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The largest `kind` call a full bucket pays for, once known.
    pub fn max_size(&self, kind: &'static str) -> Option<usize> {
        self.bucket().max_size(kind)
    }

    /// Runs one operation of `kind` over `size` items; the `data` object.
    /// Waits for budget first; retries after `THROTTLED` once the bucket
    /// has restored the cost Shopify named.
    pub async fn run(
        &self,
        kind: &'static str,
        size: usize,
        query: &str,
        variables: Value,
    ) -> Result<Value, GqlError> {
        let body = json!({ "query": query, "variables": variables }).to_string();
        loop {
            let wait = self.bucket().wait_for(kind, size);
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            let (status, bytes) = self
                .http
                .post(
                    &self.url,
                    &[("X-Shopify-Access-Token", self.token.as_str())],
                    body.clone(),
                    self.timeout,
                )
                .await
                .map_err(|e| GqlError::Unavailable(e.to_string()))?;
            if status == hyper::StatusCode::UNAUTHORIZED || status == hyper::StatusCode::FORBIDDEN {
                return Err(GqlError::Auth(format!(
                    "HTTP {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                )));
            }
            if status.is_server_error() {
                return Err(GqlError::Unavailable(format!("HTTP {status}")));
            }
            let answer: Value = serde_json::from_slice(&bytes)
                .map_err(|e| GqlError::Unavailable(format!("HTTP {status}, not JSON ({e})")))?;
            let codes = codes(&answer);
            if let Some((requested, max, available, restore)) = cost_of(&answer) {
                let mut bucket = self.bucket();
                bucket.report(max, available, restore);
                bucket.learn(kind, size, requested);
                if codes.iter().any(|c| c == "THROTTLED") {
                    bucket.note_throttled();
                    drop(bucket);
                    crate::adapters::metrics::throttled(&self.channel);
                    tracing::info!(
                        kind,
                        requested,
                        available,
                        restore,
                        "Shopify throttled a call; waiting for its budget"
                    );
                    if requested > max {
                        return Err(GqlError::TooCostly {
                            cost: requested,
                            max,
                        });
                    }
                    continue;
                }
            }
            if codes.iter().any(|c| c == "MAX_COST_EXCEEDED") {
                let cost = answer
                    .pointer("/errors/0/extensions/cost")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                let max = answer
                    .pointer("/errors/0/extensions/maxCost")
                    .and_then(Value::as_f64)
                    .unwrap_or(0.0);
                return Err(GqlError::TooCostly { cost, max });
            }
            if status == hyper::StatusCode::TOO_MANY_REQUESTS {
                // Throttled without figures: wait a second and try again.
                crate::adapters::metrics::throttled(&self.channel);
                self.bucket().note_throttled();
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            if let Some(errors) = answer.get("errors") {
                return Err(GqlError::Refused(errors.to_string()));
            }
            if !status.is_success() {
                return Err(GqlError::Refused(format!("HTTP {status}")));
            }
            return answer
                .get("data")
                .cloned()
                .ok_or_else(|| GqlError::Refused("an answer without data".into()));
        }
    }
}
