//! Odoo's external JSON-RPC API: `POST <url>/jsonrpc`, `common.login` for
//! the uid, then `object.execute_kw` for every model call. Odoo reports its
//! own errors with HTTP 200 and an `error` object; both those and transport
//! failures come back as [`RpcError`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{json, Value};

use super::OdooConfig;
use crate::outbound::{JsonHttp, TransportError};

/// Why a call did not return a result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    /// No answer: connection refused or reset, timeout, HTTP error status.
    #[error("Odoo is unreachable: {0}")]
    Transport(String),
    /// Odoo answered with an error (`data.name` is the exception class).
    #[error("Odoo refused {call}: {name}: {message}")]
    Odoo {
        call: String,
        name: String,
        message: String,
    },
    /// The login was refused: wrong database, login or API key.
    #[error("Odoo refused the login of {login} to database {database}: check odoo.login and the API key")]
    Login { login: String, database: String },
    /// An answer that is not what the API promises.
    #[error("unexpected answer from Odoo to {call}: {detail}")]
    Protocol { call: String, detail: String },
}

/// Exception classes (the last part of `data.name`) with which Odoo refuses
/// a request that no retry can change: its own refusals (a validation, a
/// business rule such as a locked order, missing rights, a record that is
/// gone) and a request it cannot run at all (an unknown field, a bad
/// value).
const PERMANENT: &[&str] = &[
    "ValidationError",
    "UserError",
    "AccessError",
    "MissingError",
    "RedirectWarning",
    "ValueError",
    "KeyError",
    "TypeError",
    "AttributeError",
    "IntegrityError",
    "UniqueViolation",
    "NotNullViolation",
    "CheckViolation",
    "ForeignKeyViolation",
];

impl RpcError {
    /// Whether no retry can change the answer: Odoo itself refused, with a
    /// class in [`PERMANENT`]. Transport failures, 5xx, timeouts, a login
    /// refused (a key being rotated), a garbled answer and any other Odoo
    /// exception (a serialization failure under load, a worker killed) may
    /// pass: they are retried with backoff.
    pub fn is_permanent(&self) -> bool {
        match self {
            RpcError::Odoo { name, .. } => {
                let class = name.rsplit('.').next().unwrap_or(name);
                PERMANENT.contains(&class)
            }
            RpcError::Transport(_) | RpcError::Login { .. } | RpcError::Protocol { .. } => false,
        }
    }

    /// Odoo's own message, for a refusal (the exception class without its
    /// module, then the message).
    pub fn odoo_message(&self) -> Option<String> {
        match self {
            RpcError::Odoo { name, message, .. } => {
                let class = name.rsplit('.').next().unwrap_or(name);
                Some(format!("{class}: {message}"))
            }
            _ => None,
        }
    }
}

/// A JSON-RPC client for one Odoo database and user. Cheap to share: the
/// HTTP connections are pooled and the uid is cached after the first login.
pub struct OdooClient {
    http: JsonHttp,
    endpoint: hyper::Uri,
    database: String,
    login: String,
    api_key: String,
    timeout: Duration,
    uid: Mutex<Option<i64>>,
    next_id: AtomicU64,
}

impl OdooClient {
    pub fn new(config: &OdooConfig) -> anyhow::Result<OdooClient> {
        let http = JsonHttp::new();
        let endpoint = format!("{}/jsonrpc", config.url)
            .parse()
            .map_err(|e| anyhow::anyhow!("odoo.url {:?}: {e}", config.url))?;
        Ok(OdooClient {
            http,
            endpoint,
            database: config.database.clone(),
            login: config.login.clone(),
            api_key: config.api_key.clone(),
            timeout: config.timeout,
            uid: Mutex::new(None),
            next_id: AtomicU64::new(1),
        })
    }

    /// `model.method(*args, **kwargs)` as the configured user.
    pub async fn execute_kw(
        &self,
        model: &str,
        method: &str,
        args: Value,
        kwargs: Value,
    ) -> Result<Value, RpcError> {
        let uid = self.uid().await?;
        let call = format!("{model}.{method}");
        let result = self
            .call(
                &call,
                "object",
                "execute_kw",
                json!([
                    self.database,
                    uid,
                    self.api_key,
                    model,
                    method,
                    args,
                    kwargs
                ]),
            )
            .await;
        if let Err(RpcError::Odoo { name, .. }) = &result {
            if name.ends_with("AccessDenied") {
                // The key may have been rotated: log in again next time.
                *self.uid.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        result
    }

    /// The user id, logging in on first use.
    async fn uid(&self) -> Result<i64, RpcError> {
        if let Some(uid) = *self.uid.lock().unwrap_or_else(|p| p.into_inner()) {
            return Ok(uid);
        }
        let answer = self
            .call(
                "login",
                "common",
                "login",
                json!([self.database, self.login, self.api_key]),
            )
            .await?;
        let uid = match answer {
            Value::Number(n) => n.as_i64().ok_or_else(|| RpcError::Protocol {
                call: "login".into(),
                detail: format!("uid {n} is not an integer"),
            })?,
            Value::Bool(false) => {
                return Err(RpcError::Login {
                    login: self.login.clone(),
                    database: self.database.clone(),
                })
            }
            other => {
                return Err(RpcError::Protocol {
                    call: "login".into(),
                    detail: format!("expected a uid or false, got {other}"),
                })
            }
        };
        *self.uid.lock().unwrap_or_else(|p| p.into_inner()) = Some(uid);
        Ok(uid)
    }

    async fn call(
        &self,
        call: &str,
        service: &str,
        method: &str,
        args: Value,
    ) -> Result<Value, RpcError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body = json!({
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": id,
        });
        let (status, body) = self
            .http
            .post(&self.endpoint, &[], body.to_string(), self.timeout)
            .await
            .map_err(|e| match e {
                TransportError::Timeout(ms) => {
                    RpcError::Transport(format!("no answer to {call} within {ms} ms"))
                }
                TransportError::Failed(e) => RpcError::Transport(e),
            })?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            return Err(RpcError::Transport(format!(
                "HTTP {status} on {call}: {}",
                text.trim()
            )));
        }
        let answer: Value = serde_json::from_slice(&body).map_err(|e| RpcError::Protocol {
            call: call.to_string(),
            detail: format!("not JSON: {e}"),
        })?;
        if let Some(error) = answer.get("error") {
            let data = error.get("data");
            let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
            let name = text(data.and_then(|d| d.get("name")));
            let mut message = text(data.and_then(|d| d.get("message")));
            if message.is_empty() {
                message = text(error.get("message"));
            }
            return Err(RpcError::Odoo {
                call: call.to_string(),
                name: if name.is_empty() {
                    "error".to_string()
                } else {
                    name
                },
                message,
            });
        }
        answer
            .get("result")
            .cloned()
            .ok_or_else(|| RpcError::Protocol {
                call: call.to_string(),
                detail: "neither result nor error".into(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn odoo(name: &str) -> RpcError {
        RpcError::Odoo {
            call: "sale.order.line.write".into(),
            name: name.into(),
            message: "It is forbidden to modify the following fields in a locked order:\nQuantity"
                .into(),
        }
    }

    #[test]
    fn odoos_refusals_are_permanent_and_failures_to_answer_are_not() {
        for name in [
            "odoo.exceptions.ValidationError",
            "odoo.exceptions.UserError",
            "odoo.exceptions.AccessError",
            "odoo.exceptions.MissingError",
            "builtins.ValueError",
        ] {
            assert!(odoo(name).is_permanent(), "{name}");
        }
        for e in [
            odoo("psycopg2.errors.SerializationFailure"),
            odoo("odoo.exceptions.AccessDenied"),
            RpcError::Transport("HTTP 502 Bad Gateway on sale.order.create".into()),
            RpcError::Transport("no answer to sale.order.create within 10000 ms".into()),
            RpcError::Protocol {
                call: "login".into(),
                detail: "not JSON".into(),
            },
        ] {
            assert!(!e.is_permanent(), "{e}");
        }
        assert_eq!(
            odoo("odoo.exceptions.UserError").odoo_message().unwrap(),
            "UserError: It is forbidden to modify the following fields in a locked order:\nQuantity"
        );
    }
}
