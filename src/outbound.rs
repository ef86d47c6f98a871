//! JSON over HTTP(S) to the services stockpool calls (Odoo's JSON-RPC,
//! Shopify's Admin GraphQL): one pooled hyper client with rustls (webpki
//! roots, HTTP/1.1), a timeout on the whole exchange and a cap on the body
//! read. It knows no API: callers interpret the status and the JSON.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Longest response body read.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// Why an exchange gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("{0}")]
    Failed(String),
    #[error("no answer within {0} ms")]
    Timeout(u128),
}

/// A pooled HTTP(S) client. Cheap to clone.
#[derive(Clone)]
pub struct JsonHttp {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl Default for JsonHttp {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonHttp {
    pub fn new() -> JsonHttp {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        JsonHttp { http }
    }

    /// POSTs `body` as JSON with `headers`; the status and the body read
    /// (whatever the status), or why there was none within `timeout`.
    pub async fn post(
        &self,
        uri: &hyper::Uri,
        headers: &[(&str, &str)],
        body: String,
        timeout: Duration,
    ) -> Result<(hyper::StatusCode, Bytes), TransportError> {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(hyper::Method::POST, uri, &all, Bytes::from(body), timeout)
            .await
            .map(|a| (a.status, a.body))
    }

    /// Any method with `headers` (a `content-type` among them when there
    /// is a body); the status, the answer's headers and its body.
    pub async fn send(
        &self,
        method: hyper::Method,
        uri: &hyper::Uri,
        headers: &[(&str, &str)],
        body: Bytes,
        timeout: Duration,
    ) -> Result<Answer, TransportError> {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(uri.clone())
            .header(hyper::header::ACCEPT, "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(body))
            .map_err(|e| TransportError::Failed(e.to_string()))?;
        let exchange = async {
            let response = self
                .http
                .request(request)
                .await
                .map_err(|e| TransportError::Failed(crate::telemetry::chain(&e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = http_body_util::Limited::new(response.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| TransportError::Failed(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, TransportError>(Answer {
                status,
                headers,
                body,
            })
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| TransportError::Timeout(timeout.as_millis()))?
    }
}

/// An answer: status, headers (a rate limit may be in them), body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: hyper::StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}
