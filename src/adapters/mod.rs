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

pub mod metrics;
pub mod pacing;
pub mod serve;
pub mod shopify;
pub mod state;
pub mod stream;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

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
