//! Building and running the service: open the store, load the engine, bind
//! the listeners (port 0 works: the bound addresses are reported), serve
//! until the shutdown future resolves, then drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::{Config, StoreConfig};
use crate::engine::{Engine, SystemClock};
use crate::odoo::{Dispatcher, OdooConfig, Pusher, StockReader};
use crate::publish::redis::RedisMirror;
use crate::publish::Publisher;
use crate::store::{SqliteStore, Store};
use crate::sync::OdooSync;

/// A built service whose listeners are bound but not yet serving.
pub struct Application {
    grpc: TcpListener,
    http: TcpListener,
    engine: Engine,
    config: Config,
    /// Renders the process-wide Prometheus recorder at `/metrics`.
    metrics: PrometheusHandle,
}

impl Application {
    /// Installs the metrics recorder (once per process), opens the store,
    /// loads every pool and reservation into memory, and binds both
    /// listeners.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let metrics = crate::telemetry::install_metrics()?;
        let store: Arc<dyn Store> = match &config.store {
            StoreConfig::Sqlite { data_dir } => {
                Arc::new(SqliteStore::open(data_dir).await.with_context(|| {
                    format!("opening the SQLite store in {}", data_dir.display())
                })?)
            }
            StoreConfig::Postgres { url } => Arc::new(
                crate::store::PostgresStore::connect(url)
                    .await
                    .with_context(|| {
                        format!(
                            "connecting to Postgres at {}",
                            crate::store::redact_url(url)
                        )
                    })?,
            ),
        };
        let started = std::time::Instant::now();
        let engine = Engine::open(store, config.seed.clone(), Arc::new(SystemClock)).await?;
        if config.odoo.is_some() {
            engine.enable_outbox();
        }
        tracing::info!(
            skus = engine.skus().len(),
            reservations = engine.reservation_count(),
            took_ms = started.elapsed().as_millis() as u64,
            "state loaded"
        );
        let grpc = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC address {}", config.grpc_addr))?;
        let http = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding the HTTP address {}", config.http_addr))?;
        Ok(Application {
            grpc,
            http,
            engine,
            config,
            metrics,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http
            .local_addr()
            .expect("bound listener has an address")
    }

    /// The engine (tests and benches look inside).
    pub fn engine(&self) -> Engine {
        self.engine.clone()
    }

    /// Serves gRPC and HTTP and sweeps lapsed holds until `shutdown`
    /// resolves; requests in flight finish before it returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            grpc,
            http,
            engine,
            config,
            metrics,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };

        let sweeper = tokio::spawn(sweep_holds(
            engine.clone(),
            Duration::from_millis(config.hold_sweep_ms),
            stop_rx.clone(),
        ));
        let (publisher, publisher_task) = Publisher::start(engine.clone(), stop_rx.clone());
        let mirror_task = match config.redis.clone() {
            Some(redis) => Some(RedisMirror::start(
                redis,
                engine.clone(),
                &publisher,
                stop_rx.clone(),
            )?),
            None => None,
        };
        let (odoo_sync, odoo_tasks) = match &config.odoo {
            Some(odoo) => {
                let (sync, tasks) = start_odoo(odoo, &engine, &stop_rx)?;
                (Some(sync), tasks)
            }
            None => (None, Vec::new()),
        };
        let (routes, health) =
            crate::api::routes(engine.clone(), publisher, config.tokens.clone()).await?;
        let health_task = tokio::spawn(crate::http::follow_readiness(
            engine.clone(),
            health,
            stop_rx.clone(),
        ));
        let grpc_addr = grpc.local_addr()?;
        let grpc_task = tokio::spawn(
            tonic::transport::Server::builder()
                .add_routes(routes)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                    stopped(stop_rx.clone()),
                ),
        );
        let http_addr = http.local_addr()?;
        let http_app =
            crate::http::router(engine.clone(), metrics, config.tokens.clone(), odoo_sync);
        let http_stop = stopped(stop_rx.clone());
        let http_task = tokio::spawn(async move {
            axum::serve(http, http_app)
                .with_graceful_shutdown(http_stop)
                .await
        });
        tracing::info!(%grpc_addr, %http_addr, "stockpool serving");

        shutdown.await;
        tracing::info!("shutting down: finishing requests in flight");
        let _ = stop_tx.send(true);
        let grpc_result = grpc_task.await.context("gRPC server task")?;
        let http_result = http_task.await.context("HTTP server task")?;
        let _ = sweeper.await;
        let _ = publisher_task.await;
        if let Some(mirror) = mirror_task {
            let _ = mirror.await;
        }
        let _ = health_task.await;
        for task in odoo_tasks {
            let _ = task.await;
        }
        grpc_result.context("gRPC server")?;
        http_result.context("HTTP server")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Starts the outbox dispatcher and, when configured, the stock
/// reconciliation; returns the inbound side for the webhook and the tasks.
fn start_odoo(
    config: &OdooConfig,
    engine: &Engine,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(Arc<OdooSync>, Vec<tokio::task::JoinHandle<()>>)> {
    for channel in &engine.catalog().channels {
        if !config.partners.contains_key(&channel.code) {
            tracing::warn!(channel = %channel.code, "no Odoo partner configured for this channel: its reservations will be dead-lettered until odoo.partners has it");
        }
    }
    let pusher = Arc::new(Pusher::new(config)?);
    let mut tasks = vec![tokio::spawn(
        Dispatcher::new(engine.clone(), pusher.clone(), config).run(stop.clone()),
    )];
    let sync = Arc::new(OdooSync::new(
        engine.clone(),
        StockReader::new(pusher),
        config.webhook_secret.clone(),
        config.reconcile_correct,
    ));
    if let Some(every) = config.reconcile_every {
        tasks.push(tokio::spawn(
            sync.clone().run_reconciliation(every, stop.clone()),
        ));
    }
    tracing::info!(url = %config.url, database = %config.database, webhook = sync.webhook_enabled(), reconcile = ?config.reconcile_every, "pushing reservations to Odoo");
    Ok((sync, tasks))
}

async fn sweep_holds(engine: Engine, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let n = engine.expire_due().await;
                if n > 0 {
                    tracing::debug!(expired = n, "holds expired");
                }
            }
            _ = stop.changed() => return,
        }
    }
}
