//! `stockpool adapter amazon`: connects one Amazon seller account and
//! marketplace to stockpool through the Selling Partner API.
//!
//! - Orders in ([`orders`]): getOrders polled by `LastUpdatedAfter` (the
//!   window's end kept durably, with an overlap), within its rate, each
//!   order's items read once; statuses become Reserve (held while Pending),
//!   Confirm, Fulfill, Release.
//! - Levels out ([`levels`]): `WatchChannelStock("amazon")` (followed from
//!   a durable cursor by [`crate::adapters::stream`]) becomes each
//!   listing's `fulfillment_availability`, by patch or, above a backlog,
//!   one JSON_LISTINGS_FEED; accepted patches are read back.
//! - SP-API itself ([`spapi`]): LWA tokens, per-operation token buckets,
//!   429 handling; dates ([`iso`]); the file ([`config`]).
//! - Its own port ([`crate::adapters::serve`]): metrics, health, the list
//!   of what never applied.
//!
//! # Orders in flight
//!
//! Amazon takes a unit off the listing the moment an order is placed, but
//! the adapter sees the order minutes later (getOrders data is at least two
//! minutes old, and sustains one call a minute). A quantity pushed in that
//! window is absolute: it gives the units of those orders back to Amazon.
//! The adapter measures the window it achieves
//! (`stockpool_adapter_order_inflight_seconds`, PurchaseDate to Reserve);
//! the amazon rule's `buffer` must cover the units sold in that window.
//! The adapter warns at start when the rule has none.
//!
//! It is a client of stockpool's public contract only.

pub mod config;
pub mod iso;
pub mod levels;
pub mod orders;
pub mod spapi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

pub use config::{AmazonConfig, Rate, Rates, Secrets};

use super::pacing::Backoff;
use super::serve::{self, Readiness};
use super::state::StateDb;
use super::Upstream;
use crate::api::pb;

/// A running adapter's address (port 0 in the config is resolved).
pub struct Running {
    pub metrics_addr: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Stops every task and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds the port and starts the adapter's tasks.
pub async fn start(config: AmazonConfig, upstream: Upstream) -> anyhow::Result<Running> {
    let metrics = crate::telemetry::install_metrics()?;
    super::metrics::describe(&config.channel);
    let db = StateDb::open(&config.state_dir, "amazon").await?;
    orders::Orders::init(&db).await?;
    let ready = Readiness::default();
    let (stop_tx, stop) = watch::channel(false);
    let wake = Arc::new(Notify::new());
    let listener = TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics_addr {}: {e}", config.metrics_addr))?;
    let metrics_addr = listener.local_addr()?;
    let api = Arc::new(spapi::SpApi::new(&config)?);
    let mut tasks = Vec::new();
    {
        let router = serve::router(metrics, ready.clone(), db.clone());
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let result = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "the adapter's port stopped");
            }
        }));
    }
    {
        let upstream = upstream.clone();
        let channel = config.channel.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = warn_without_buffer(&upstream, &channel) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }));
    }
    tasks.push(tokio::spawn(super::stream::follow(
        upstream.clone(),
        db.clone(),
        config.channel.clone(),
        ready.clone(),
        wake.clone(),
        stop.clone(),
    )));
    let writer = levels::Writer::new(&config, api.clone(), db.clone());
    tasks.push(tokio::spawn(super::writer::drive(
        writer,
        config.channel.clone(),
        "amazon_listings",
        Backoff::new(Duration::from_millis(200), config.max_backoff),
        wake,
        ready.clone(),
        stop.clone(),
    )));
    let orders = orders::Orders::new(api, upstream, db, config.clone());
    tasks.push(tokio::spawn(poll(orders, config.clone(), ready, stop)));
    tracing::info!(%metrics_addr, endpoint = %config.endpoint, marketplace = %config.marketplace_id, "Amazon adapter started");
    Ok(Running {
        metrics_addr,
        stop: stop_tx,
        tasks,
    })
}

/// Says loudly when the amazon rule holds no buffer for orders in flight.
async fn warn_without_buffer(upstream: &Upstream, channel: &str) {
    let conn = upstream.get().await;
    match conn
        .admin()
        .list_rules(pb::ListRulesRequest {
            channel: channel.to_string(),
        })
        .await
    {
        Ok(rules) => {
            let default = rules
                .into_inner()
                .rules
                .into_iter()
                .find(|r| r.sku.is_empty());
            if default.and_then(|r| r.buffer).unwrap_or(0) <= 0 {
                tracing::warn!(channel, "the {channel} rule has no buffer: Amazon's orders reach stockpool minutes after they are placed, and a level written in between gives their units back (README \"Amazon\": size the buffer to the orders of stockpool_adapter_order_inflight_seconds)");
            }
        }
        Err(s) => {
            tracing::warn!(channel, error = %s.message(), "could not read the {channel} rule to check its buffer")
        }
    }
}

/// Polls getOrders every `poll_interval` until `stop`; backs off while
/// Amazon or stockpool fails. Readiness check `amazon_orders`.
async fn poll(
    orders: orders::Orders,
    config: AmazonConfig,
    ready: Readiness,
    mut stop: watch::Receiver<bool>,
) {
    ready.add("amazon_orders", "no poll yet");
    let mut backoff = Backoff::new(
        Duration::from_millis(200),
        config.max_backoff.max(config.poll_interval),
    );
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match orders.poll().await {
            Ok(n) => {
                ready.ready("amazon_orders");
                backoff.reset();
                tracing::debug!(channel = %config.channel, orders = n, "polled Amazon's orders");
                config.poll_interval
            }
            Err(e) => {
                super::metrics::channel_error(&config.channel);
                ready.not_ready("amazon_orders", e.clone());
                tracing::warn!(channel = %config.channel, error = %e, "polling Amazon's orders failed; the same window is polled again");
                backoff.next_wait()
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `stockpool adapter amazon --config FILE`: runs until Ctrl-C or SIGTERM.
pub async fn run(
    config: AmazonConfig,
    server: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let running = start(config, Upstream::new(server, token, ca_file)).await?;
    crate::telemetry::shutdown_signal().await;
    tracing::info!("stopping the Amazon adapter");
    running.stop().await;
    Ok(())
}
