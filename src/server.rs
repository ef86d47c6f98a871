//! Building and running the service: open the store, load the engine, bind
//! the listeners (port 0 works: the bound addresses are reported), serve
//! until the shutdown future resolves, then drain within the grace period.

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
use crate::listen::{Protocol, Tls};
use crate::publish::redis::RedisMirror;
use crate::publish::Publisher;
use crate::store::{SqliteStore, Store};

/// A built service whose listeners are bound but not yet serving.
pub struct Application {
    grpc: TcpListener,
    http: TcpListener,
    engine: Engine,
    config: Config,
    /// Renders the process-wide Prometheus recorder at `/metrics`.
    metrics: PrometheusHandle,
    /// The Odoo connection, checked, when configured.
    odoo: Option<crate::odoo::Connector>,
    /// The certificate both listeners serve, when TLS is configured.
    tls: Option<Arc<Tls>>,
}

impl Application {
    /// Installs the metrics recorder (once per process), opens the store,
    /// loads every pool and reservation into memory, and binds both
    /// listeners.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let metrics = crate::telemetry::install_metrics()?;
        let tls = config.tls.clone().map(Tls::load).transpose()?;
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
        let odoo = match &config.odoo {
            Some(odoo) => Some(crate::odoo::Connector::prepare(odoo, &engine).await?),
            None => None,
        };
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
        for (listener, addr) in plaintext_beyond_loopback(&config) {
            tracing::warn!(%addr, "the {listener} listener is reachable beyond loopback without TLS: bearer tokens and stock figures cross the network in plaintext; set --tls-cert and --tls-key (or terminate TLS in front of stockpool)");
        }
        Ok(Application {
            grpc,
            http,
            engine,
            config,
            metrics,
            odoo,
            tls,
        })
    }

    /// The certificate in use, when TLS is configured (tests reload it as
    /// SIGHUP does).
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.clone()
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

    /// The inbound side of the Odoo connection, when configured (tests wait
    /// on it).
    pub fn odoo_inbound(&self) -> Option<Arc<crate::odoo::Inbound>> {
        self.odoo.as_ref().map(|o| o.inbound())
    }

    /// Serves gRPC and HTTP and sweeps lapsed holds until `shutdown`
    /// resolves; requests in flight then have the grace period to finish,
    /// after which the connections still open are closed and it returns.
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
            odoo,
            tls,
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
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
        let (odoo_routes, odoo_tasks) = match odoo {
            Some(odoo) => {
                let (routes, tasks) = odoo.start(&engine, &stop_rx);
                (Some(routes), tasks)
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
        let grpc_task = tokio::spawn(crate::listen::serve(
            "grpc",
            grpc,
            Protocol::Grpc,
            routes.into_axum_router(),
            tls.clone(),
            config.listen,
            stop_rx.clone(),
        ));
        let http_addr = http.local_addr()?;
        let http_app =
            crate::http::router(engine.clone(), metrics, config.tokens.clone(), odoo_routes);
        let http_task = tokio::spawn(crate::listen::serve(
            "http",
            http,
            Protocol::Http,
            http_app,
            tls.clone(),
            config.listen,
            stop_rx.clone(),
        ));
        let hangup_task = tls.map(|tls| tokio::spawn(reload_on_hangup(tls, stop_rx.clone())));
        tracing::info!(%grpc_addr, %http_addr, tls = hangup_task.is_some(), "stockpool serving");

        shutdown.await;
        let grace = config.listen.shutdown_grace;
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "shutting down: finishing requests in flight"
        );
        let _ = stop_tx.send(true);
        let drain = async {
            let grpc_result = grpc_task.await;
            let http_result = http_task.await;
            let _ = sweeper.await;
            let _ = publisher_task.await;
            if let Some(mirror) = mirror_task {
                let _ = mirror.await;
            }
            let _ = health_task.await;
            for task in odoo_tasks {
                let _ = task.await;
            }
            if let Some(task) = hangup_task {
                let _ = task.await;
            }
            (grpc_result, http_result)
        };
        // The listeners close what is left at the grace; the margin is for
        // the other tasks, which stop as soon as they see the signal.
        let Ok((grpc_result, http_result)) =
            tokio::time::timeout(grace + DRAIN_MARGIN, drain).await
        else {
            tracing::warn!("shutdown did not finish within its grace period: exiting anyway");
            return Ok(());
        };
        grpc_result.context("gRPC server task")?;
        http_result.context("HTTP server task")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The listeners that take bearer tokens in plaintext from beyond loopback:
/// tokens configured, no TLS, an address that is not loopback.
fn plaintext_beyond_loopback(config: &Config) -> Vec<(&'static str, SocketAddr)> {
    if config.tls.is_some() || config.tokens.is_empty() {
        return Vec::new();
    }
    [("gRPC", config.grpc_addr), ("HTTP", config.http_addr)]
        .into_iter()
        .filter(|(_, addr)| !addr.ip().is_loopback())
        .collect()
}

/// Beyond the grace period, how long shutdown waits for the background
/// tasks (sweeper, publisher, mirrors, Odoo) before it returns anyway.
const DRAIN_MARGIN: Duration = Duration::from_secs(2);

/// Reads the certificate and key again on every SIGHUP until `stop`; a
/// failed read keeps the certificate in use.
async fn reload_on_hangup(tls: Arc<Tls>, mut stop: watch::Receiver<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP: the TLS certificate is not reloaded");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = hangup.recv() => match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "SIGHUP: the TLS certificate could not be reloaded; the previous one stays in use"),
                },
                _ = stop.changed() => return,
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (tls, stop.changed().await);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Role, Tokens};

    #[test]
    fn only_listeners_beyond_loopback_with_tokens_and_without_tls_are_warned_about() {
        let mut config = Config::for_tests(std::path::Path::new("unused"));
        config.grpc_addr = "0.0.0.0:50051".parse().unwrap();
        assert!(
            plaintext_beyond_loopback(&config).is_empty(),
            "no tokens: the server refuses to start there anyway"
        );
        config.tokens = Tokens::new([("t".repeat(16), Role::Ops)].into_iter().collect());
        assert_eq!(
            plaintext_beyond_loopback(&config),
            [("gRPC", config.grpc_addr)]
        );
        config.tls = Some(crate::listen::TlsFiles {
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        });
        assert!(plaintext_beyond_loopback(&config).is_empty());
    }
}
