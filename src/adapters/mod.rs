//! Channel adapters: long-running gRPC clients of a stockpool server that
//! connect one sales channel (`stockpool adapter shopify`). They are
//! clients of the public contract only (`api::pb` and the CLI's
//! connection), never of `engine` or `store`, exactly as another team's
//! adapter would be.
//!
//! What every adapter shares lives here, written for any channel:
//!
//! - [`state`]: the adapter's own durable state (an SQLite file): the
//!   stream cursor, the newest level of every SKU not yet written to the
//!   channel (coalesced per SKU), and the list of events that can never
//!   apply, for ops.
//! - [`stream`]: follows `WatchChannelStock` from the cursor into that
//!   state, reconnecting with backoff, starting from a snapshot when the
//!   cursor is refused.
//! - [`pacing`]: exponential backoff with jitter, and a cost bucket that
//!   paces calls to a rate-limited API from what it reports.
//! - [`serve`]: the adapter's own HTTP port: `/metrics`, `/healthz`,
//!   `/readyz`, `/unapplied`.
//! - [`writer`]: the level writer's loop (rounds, wake-ups, backoff,
//!   readiness), for any channel.
//! - [`metrics`]: the adapter metric names, labelled by channel.
//! - [`shopify`]: the Shopify adapter.
//! - [`amazon`]: the Amazon (SP-API) adapter.

pub mod amazon;
pub mod metrics;
pub mod pacing;
pub mod serve;
pub mod shopify;
pub mod state;
pub mod stream;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

/// stockpool's SKU rule (README: at most 64 letters, digits, `-`, `_`, `.`).
pub fn valid_sku(sku: &str) -> bool {
    !sku.is_empty()
        && sku.len() <= 64
        && sku
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// A decimal price (`19.90`) in millionths, or None when it is not one.
pub fn micros(price: &str) -> Option<i64> {
    let (whole, frac) = price.trim().split_once('.').unwrap_or((price.trim(), ""));
    if whole.is_empty()
        || frac.len() > 6
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let frac: i64 = format!("{frac:0<6}").parse().ok()?;
    whole.checked_mul(1_000_000)?.checked_add(frac)
}

/// Millionths as a decimal with at least two places (`19.90`).
pub fn price_text(micros: i64) -> String {
    let text = format!("{}.{:06}", micros / 1_000_000, micros % 1_000_000);
    let trimmed = text.trim_end_matches('0');
    let (whole, frac) = trimmed.split_once('.').unwrap_or((trimmed, ""));
    format!("{whole}.{frac:0<2}")
}

/// The gRPC client adapters use: the CLI's connection, bearer token included.
pub use crate::cli::client::{Conn, Inventory};

/// The connection to stockpool, made on first use and retried with backoff
/// until the server answers (an adapter may start before its server). Once
/// made, the channel reconnects by itself. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    conn: Arc<tokio::sync::OnceCell<Conn>>,
    server: String,
    token: Option<String>,
    /// The CAs that sign the server's certificate over https, when not the
    /// public roots.
    ca_file: Option<std::path::PathBuf>,
}

impl Upstream {
    pub fn new(server: &str, token: Option<&str>, ca_file: Option<&std::path::Path>) -> Upstream {
        Upstream {
            conn: Arc::new(tokio::sync::OnceCell::new()),
            server: server.to_string(),
            token: token.map(str::to_string),
            ca_file: ca_file.map(std::path::Path::to_path_buf),
        }
    }

    /// The connection, waiting (and retrying) until there is one.
    pub async fn get(&self) -> Conn {
        self.conn
            .get_or_init(|| async {
                let mut backoff =
                    pacing::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
                loop {
                    match Conn::open(&self.server, self.token.as_deref(), self.ca_file.as_deref()).await {
                        Ok(c) => return c,
                        Err(e) => {
                            tracing::warn!(error = %format!("{e:#}"), "stockpool unreachable; retrying");
                            tokio::time::sleep(backoff.next_wait()).await;
                        }
                    }
                }
            })
            .await
            .clone()
    }

    /// The connection if it was made.
    pub fn try_get(&self) -> Option<Conn> {
        self.conn.get().cloned()
    }
}
