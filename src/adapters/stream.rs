//! Follows `WatchChannelStock(channel, after_seq)` into the adapter's
//! state: each batch of updates and the cursor that covers it are stored
//! in one transaction, then the writer is woken. It reads as fast as the
//! server sends, whatever the channel does (the state coalesces per SKU),
//! so the server never waits on the adapter.
//!
//! A broken stream is reopened from the stored cursor with backoff. A
//! cursor the server refuses (`OUT_OF_RANGE`: the server's log was reset,
//! or a cursor it no longer keeps) starts again from a snapshot
//! (`after_seq = 0`: every SKU's current level).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

use super::pacing::Backoff;
use super::serve::Readiness;
use super::state::StateDb;
use super::Upstream;
use crate::api::pb;

/// Updates stored per transaction at most.
const BATCH: usize = 500;
/// How long a batch waits for more updates once one arrived.
const GATHER: Duration = Duration::from_millis(2);

/// Follows the stream until `stop`. Readiness check `stream`.
pub async fn follow(
    upstream: Upstream,
    db: StateDb,
    channel: String,
    ready: Readiness,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let name = format!("stock:{channel}");
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    ready.add("stream", "not connected to stockpool yet");
    loop {
        if *stop.borrow() {
            return;
        }
        let outcome = tokio::select! {
            o = follow_once(&upstream, &db, &channel, &name, &ready, &wake) => o,
            _ = stop.changed() => return,
        };
        let wait = match outcome {
            Ok(()) => {
                backoff.reset();
                backoff.next_wait()
            }
            Err(e) => {
                tracing::warn!(channel = %channel, error = %e, "level stream interrupted; reconnecting");
                backoff.next_wait()
            }
        };
        ready.not_ready("stream", "reconnecting to stockpool".into());
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

async fn follow_once(
    upstream: &Upstream,
    db: &StateDb,
    channel: &str,
    name: &str,
    ready: &Readiness,
    wake: &Notify,
) -> anyhow::Result<()> {
    let conn = upstream.get().await;
    let mut inv = conn.inventory();
    let cursor = db.cursor(name).await?;
    let request = |after_seq| pb::WatchChannelStockRequest {
        channel: channel.to_string(),
        after_seq,
    };
    let mut stream = match inv.watch_channel_stock(request(cursor)).await {
        Ok(s) => s.into_inner(),
        Err(s) if s.code() == tonic::Code::OutOfRange => {
            tracing::warn!(channel, cursor, reason = %s.message(), "stockpool refused the stored cursor; starting from a snapshot of every level");
            db.reset_stream(name).await?;
            inv.watch_channel_stock(request(0)).await?.into_inner()
        }
        Err(s) => return Err(anyhow::anyhow!("{}: {}", s.code(), s.message())),
    };
    ready.ready("stream");
    tracing::info!(channel, cursor, "following stockpool's levels");
    let mut last = db.cursor(name).await?;
    loop {
        let Some(first) = stream.message().await? else {
            return Ok(());
        };
        let mut batch = vec![first];
        let started = Instant::now();
        while batch.len() < BATCH && started.elapsed() < GATHER * 10 {
            match tokio::time::timeout(GATHER, stream.message()).await {
                Ok(Ok(Some(u))) => batch.push(u),
                Ok(Ok(None)) => break,
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => break,
            }
        }
        last = batch.iter().map(|u| u.seq).fold(last, u64::max);
        let rows: Vec<_> = batch
            .into_iter()
            .map(|u| (u.sku, u.published, u.open, u.seq, u.at_ms))
            .collect();
        db.store_levels(name, last, &rows).await?;
        super::metrics::cursor(channel, last);
        wake.notify_one();
    }
}
