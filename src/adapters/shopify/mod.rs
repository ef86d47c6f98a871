//! `stockpool adapter shopify`: connects one Shopify shop to stockpool.
//!
//! - Orders in ([`webhook`], [`orders`]): Shopify's order webhooks,
//!   verified by HMAC, become Reserve / Release / Fulfill / Restock.
//! - Levels out ([`levels`]): stockpool's `WatchChannelStock("shopify")`
//!   (followed from a durable cursor by [`crate::adapters::stream`])
//!   becomes the location's quantities, written with
//!   `inventorySetQuantities` over Admin GraphQL 2026-04 ([`graphql`]).
//! - Reconciliation: at start and every `reconcile_interval_s`, every SKU
//!   is compared with Shopify and corrected.
//! - Its own port ([`crate::adapters::serve`]): metrics, health, the list
//!   of what never applied.
//!
//! It is a client of stockpool's public contract only.

pub mod config;
pub mod graphql;
pub mod levels;
pub mod orders;
pub mod payload;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};

pub use config::{ReserveOn, ShopifyConfig};

use super::serve::{self, Readiness};
use super::state::StateDb;
use super::Upstream;

/// A running adapter's addresses (ports 0 in the config are resolved).
pub struct Running {
    pub webhook_addr: SocketAddr,
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

/// Binds both ports and starts the adapter's tasks.
pub async fn start(config: ShopifyConfig, upstream: Upstream) -> anyhow::Result<Running> {
    let metrics = crate::telemetry::install_metrics()?;
    super::metrics::describe(&config.channel);
    let db = StateDb::open(&config.state_dir, "shopify").await?;
    orders::Orders::init(&db).await?;
    webhook::init(&db).await?;
    let ready = Readiness::default();
    let (stop_tx, stop) = watch::channel(false);
    let wake = Arc::new(Notify::new());

    let hooks_listener = TcpListener::bind(config.webhook_addr)
        .await
        .map_err(|e| anyhow::anyhow!("webhook_addr {}: {e}", config.webhook_addr))?;
    let metrics_listener = TcpListener::bind(config.metrics_addr)
        .await
        .map_err(|e| anyhow::anyhow!("metrics_addr {}: {e}", config.metrics_addr))?;
    let webhook_addr = hooks_listener.local_addr()?;
    let metrics_addr = metrics_listener.local_addr()?;

    let orders = Arc::new(orders::Orders::new(
        upstream.clone(),
        db.clone(),
        config.channel.clone(),
        config.reserve_on,
    ));
    let admin = Arc::new(graphql::Admin::new(&config)?);
    let mut tasks = Vec::new();

    let serve_on =
        |listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>| {
            tokio::spawn(async move {
                let result = axum::serve(listener, router)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "an adapter listener stopped");
                }
            })
        };
    tasks.push(serve_on(
        hooks_listener,
        webhook::router(
            config.client_secret.clone(),
            config.channel.clone(),
            orders,
            db.clone(),
        ),
        stop.clone(),
    ));
    tasks.push(serve_on(
        metrics_listener,
        serve::router(metrics, ready.clone(), db.clone()),
        stop.clone(),
    ));
    // Connect to stockpool in the background: until then webhooks get 503.
    {
        let upstream = upstream.clone();
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = upstream.get() => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }));
    }
    tasks.push(tokio::spawn(super::stream::follow(
        upstream,
        db.clone(),
        config.channel.clone(),
        ready.clone(),
        wake.clone(),
        stop.clone(),
    )));
    let writer = levels::Writer::new(&config, admin, db.clone());
    tasks.push(tokio::spawn(writer.run(
        wake.clone(),
        ready.clone(),
        stop.clone(),
    )));
    tasks.push(tokio::spawn(reconcile(
        db,
        config.channel.clone(),
        config.reconcile_interval,
        wake,
        stop,
    )));
    tracing::info!(%webhook_addr, %metrics_addr, shop = %config.shop, location = %config.location_id, "Shopify adapter started");
    Ok(Running {
        webhook_addr,
        metrics_addr,
        stop: stop_tx,
        tasks,
    })
}

/// Marks every SKU for a comparison with Shopify at start and every
/// `interval` (0: at start only); the writer does the comparing.
async fn reconcile(
    db: StateDb,
    channel: String,
    interval: std::time::Duration,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        match db.mark_all_for_reconcile().await {
            Ok(n) => {
                super::metrics::reconciliation(&channel);
                tracing::info!(%channel, skus = n, "reconciling every SKU with Shopify");
                wake.notify_one();
            }
            Err(e) => tracing::error!(error = %e, "could not start a reconciliation"),
        }
        if interval.is_zero() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `stockpool adapter shopify --config FILE`: runs until Ctrl-C or SIGTERM.
pub async fn run(
    config: ShopifyConfig,
    server: &str,
    token: Option<&str>,
    ca_file: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    let running = start(config, Upstream::new(server, token, ca_file)).await?;
    crate::telemetry::shutdown_signal().await;
    tracing::info!("stopping the Shopify adapter");
    running.stop().await;
    Ok(())
}
