//! The loop every adapter's level writer runs: nothing is written before
//! the stream is followed once (a refused cursor resets the stored levels
//! first); then rounds, each settling what is due, back to back while
//! there is work, waiting for the stream's wake-up (or a second) when
//! there is none, and backing off while the channel fails. The channel's
//! readiness check follows the last round's outcome.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};

use super::metrics;
use super::pacing::Backoff;
use super::serve::Readiness;

/// One channel's writer: a round writes what is due.
pub trait Rounds: Send {
    /// Why a round failed, shown at `/readyz` and in the log.
    type Error: std::fmt::Display + Send;
    /// Settles due levels; how many (0: nothing was due).
    fn round(&mut self) -> impl Future<Output = Result<usize, Self::Error>> + Send;
}

/// Runs `writer` until `stop`. Readiness check `check` (e.g. `shopify`).
pub async fn drive<W: Rounds>(
    mut writer: W,
    channel: String,
    check: &'static str,
    mut backoff: Backoff,
    wake: Arc<Notify>,
    ready: Readiness,
    mut stop: watch::Receiver<bool>,
) {
    ready.add(check, "no call to the channel yet");
    while !ready.passes("stream") {
        tokio::select! {
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stop.changed() => return,
        }
    }
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match writer.round().await {
            Ok(0) => {
                ready.ready(check);
                backoff.reset();
                tokio::select! {
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                continue;
            }
            Ok(_) => {
                ready.ready(check);
                backoff.reset();
                continue;
            }
            Err(e) => {
                metrics::channel_error(&channel);
                ready.not_ready(check, e.to_string());
                tracing::warn!(channel = %channel, error = %e, "writing levels to the channel failed; retrying");
                backoff.next_wait()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}
