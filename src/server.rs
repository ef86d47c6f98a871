//! Building and running the service: open the store, load the engine, bind
//! the listeners (port 0 works: the bound addresses are reported), serve
//! until the shutdown future resolves, then drain within the grace period.
//!
//! On SQLite one process serves a data directory (it holds the directory's
//! lock), active from start to end. On Postgres any number of processes
//! share one database: each runs terms. A standby campaigns for the lease
//! (`store::lease`); the winner loads state from the database (after its
//! takeover, so it sees every commit of its predecessor), starts the
//! background work (hold expiry, the channel publisher, the Redis mirror,
//! Odoo), and serves. When the lease cannot be renewed in time (Postgres
//! unreachable) it is **isolated**: it keeps its memory and serves reads,
//! its store refuses writes, its background work pauses and `/readyz`
//! answers 503; a renewal that gets through with its own epoch makes it
//! active again at once, with the same memory. When its tenure ends
//! (another server took over, found at a renewal or by a fenced commit) it
//! steps down: it stops serving
//! calls at once, its store refuses every commit (waiting writers get
//! `UNAVAILABLE` naming the role), its background work stops, its memory is
//! dropped, and it campaigns again like any standby. It does not exit: it
//! stays reachable for `GetServerInfo` and `/readyz`, needs no supervisor to
//! come back, and a later takeover loads everything afresh, so nothing of
//! the old term survives. On SIGTERM the active server drains, stops its
//! background work, then releases the lease for its successor.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, StoreConfig};
use crate::engine::{Engine, SystemClock};
use crate::ha::{Serving, Term};
use crate::listen::{Protocol, Tls};
use crate::publish::redis::RedisMirror;
use crate::publish::Publisher;
use crate::store::{
    Campaign, DataDirLock, Elector, Lease, PostgresStore, SqliteStore, Store, Tenure,
};

/// A built service whose listeners are bound but not yet serving.
pub struct Application {
    grpc: TcpListener,
    http: TcpListener,
    config: Config,
    /// Renders the process-wide Prometheus recorder at `/metrics`.
    metrics: PrometheusHandle,
    /// The certificate both listeners serve, when TLS is configured.
    tls: Option<Arc<Tls>>,
    /// The role, and the term served while active.
    serving: Serving,
    backend: Backend,
}

/// Where state lives, and how this process comes to serve it.
enum Backend {
    /// One process per data directory, active throughout.
    Sqlite {
        term: Box<Loaded>,
        /// Held until the process ends.
        _lock: DataDirLock,
    },
    /// Elected among the processes on one database.
    Postgres {
        store: Arc<PostgresStore>,
        elector: Box<Elector>,
        /// The term taken over at build, when the lease was free.
        first: Option<Box<Loaded>>,
    },
}

/// A term whose state is loaded and checked, not yet serving.
struct Loaded {
    engine: Engine,
    /// The Odoo connection, checked, when configured.
    odoo: Option<crate::odoo::Connector>,
    /// On Postgres: the lease this term holds.
    lease: Option<Lease>,
    /// How long loading the state took, for the start-up line.
    took_ms: u64,
}

impl Application {
    /// Installs the metrics recorder (once per process), opens the store
    /// and binds both listeners. On SQLite it locks the data directory and
    /// loads every pool and reservation into memory. On Postgres it looks at
    /// the lease once: free, it takes over and loads; held by another
    /// server, this one starts as a standby.
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let metrics = crate::telemetry::install_metrics()?;
        let tls = config.tls.clone().map(Tls::load).transpose()?;
        let (grpc, http) = bind(&config).await?;
        let grpc_addr = grpc.local_addr()?;
        let (serving, backend) = match &config.store {
            StoreConfig::Sqlite { data_dir } => {
                let lock = DataDirLock::acquire(data_dir)?;
                let store = SqliteStore::open(data_dir).await.with_context(|| {
                    format!("opening the SQLite store in {}", data_dir.display())
                })?;
                let term = load(Arc::new(store), &config, None, true).await?;
                (
                    Serving::new("sqlite"),
                    Backend::Sqlite {
                        term: Box::new(term),
                        _lock: lock,
                    },
                )
            }
            StoreConfig::Postgres { url } => {
                let store = Arc::new(
                    PostgresStore::connect_with(url, config.lease)
                        .await
                        .with_context(|| {
                            format!(
                                "connecting to Postgres at {}",
                                crate::store::redact_url(url)
                            )
                        })?,
                );
                let mut elector = store.elector(identity(grpc_addr));
                let serving = Serving::new("postgres");
                let first = match elector
                    .campaign()
                    .await
                    .context("looking at the lease in Postgres")?
                {
                    Campaign::Won(lease) => {
                        let fenced = Arc::new(store.fenced(lease.tenure()));
                        Some(Box::new(load(fenced, &config, Some(lease), true).await?))
                    }
                    Campaign::Held(leader) => {
                        serving.observe_leader(leader.epoch, &leader.holder);
                        tracing::info!(epoch = leader.epoch, holder = %leader.holder, "another server is active on this database: starting as a standby");
                        None
                    }
                };
                (
                    serving,
                    Backend::Postgres {
                        store,
                        elector: Box::new(elector),
                        first,
                    },
                )
            }
        };
        for (listener, addr) in plaintext_beyond_loopback(&config) {
            tracing::warn!(%addr, "the {listener} listener is reachable beyond loopback without TLS: bearer tokens and stock figures cross the network in plaintext; set --tls-cert and --tls-key (or terminate TLS in front of stockpool)");
        }
        Ok(Application {
            grpc,
            http,
            config,
            metrics,
            tls,
            serving,
            backend,
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

    /// The engine loaded at build (tests and benches look inside); None for
    /// a server that starts as a standby.
    pub fn engine(&self) -> Option<Engine> {
        self.loaded().map(|t| t.engine.clone())
    }

    /// The role and the term being served, as it changes (tests follow
    /// takeovers with it).
    pub fn serving(&self) -> Serving {
        self.serving.clone()
    }

    /// The inbound side of the Odoo connection of the term loaded at build,
    /// when configured (tests wait on it).
    pub fn odoo_inbound(&self) -> Option<Arc<crate::odoo::Inbound>> {
        self.loaded()
            .and_then(|t| t.odoo.as_ref())
            .map(|o| o.inbound())
    }

    fn loaded(&self) -> Option<&Loaded> {
        match &self.backend {
            Backend::Sqlite { term, .. } => Some(term),
            Backend::Postgres { first, .. } => first.as_deref(),
        }
    }

    /// Serves gRPC and HTTP until `shutdown` resolves: on SQLite as the
    /// active server throughout; on Postgres term after term, as the lease
    /// decides. Requests in flight then have the grace period to finish,
    /// after which the connections still open are closed and it returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            grpc,
            http,
            config,
            metrics,
            tls,
            serving,
            backend,
        } = self;
        let load_ms = match &backend {
            Backend::Sqlite { term, .. } => Some(term.took_ms),
            Backend::Postgres { first, .. } => first.as_ref().map(|t| t.took_ms),
        };
        // A term loaded at build is served from the first call on.
        let (first, postgres, _lock) = match backend {
            Backend::Sqlite { term, _lock } => (Some(*term), None, Some(_lock)),
            Backend::Postgres {
                store,
                elector,
                first,
            } => (first.map(|t| *t), Some((store, elector)), None),
        };
        let first = first
            .map(|t| Running::start(t, &config, &serving))
            .transpose()?;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (grpc_edge, health) = crate::api::edge(serving.clone(), config.tokens.clone())?;
        crate::http::report_health(&serving, &health).await;
        let health_task = tokio::spawn(crate::http::follow_readiness(
            serving.clone(),
            health,
            stop_rx.clone(),
        ));
        let grpc_addr = grpc.local_addr()?;
        let grpc_task = tokio::spawn(crate::listen::serve(
            "grpc",
            grpc,
            Protocol::Grpc,
            grpc_edge,
            tls.clone(),
            config.listen,
            stop_rx.clone(),
        ));
        let http_addr = http.local_addr()?;
        let http_app = crate::http::router(serving.clone(), metrics, config.tokens.clone());
        let http_task = tokio::spawn(crate::listen::serve(
            "http",
            http,
            Protocol::Http,
            hyper_util::service::TowerToHyperService::new(http_app),
            tls.clone(),
            config.listen,
            stop_rx.clone(),
        ));
        let hangup_task = tls.map(|tls| tokio::spawn(reload_on_hangup(tls, stop_rx.clone())));

        let store = match &config.store {
            StoreConfig::Sqlite { data_dir } => {
                format!("sqlite {}", data_dir.join("stockpool.db").display())
            }
            StoreConfig::Postgres { url } => crate::store::redact_url(url),
        };
        let engine = serving.engine();
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            %store,
            %grpc_addr,
            %http_addr,
            tls = hangup_task.is_some(),
            role = serving.role().as_str(),
            skus = engine.as_ref().map_or(0, |e| e.skus().len()),
            reservations = engine.as_ref().map_or(0, Engine::reservation_count),
            load_ms = load_ms.unwrap_or(0),
            "stockpool serving"
        );
        tokio::pin!(shutdown);
        let running = match postgres {
            None => {
                shutdown.as_mut().await;
                first
            }
            Some((store, mut elector)) => {
                serve_terms(
                    &store,
                    &mut elector,
                    first,
                    &config,
                    &serving,
                    shutdown.as_mut(),
                )
                .await
            }
        };

        let grace = config.listen.shutdown_grace;
        tracing::info!(
            grace_s = grace.as_secs_f64(),
            "shutting down: finishing requests in flight"
        );
        let _ = stop_tx.send(true);
        let (term_stop, term_tasks, lease) = match running {
            Some(r) => {
                let _ = r.stop.send(true);
                (Some(r.stop), r.tasks, r.lease)
            }
            None => (None, Vec::new(), None),
        };
        let drain = async {
            let grpc_result = grpc_task.await;
            let http_result = http_task.await;
            for task in term_tasks {
                let _ = task.await;
            }
            let _ = health_task.await;
            if let Some(task) = hangup_task {
                let _ = task.await;
            }
            (grpc_result, http_result)
        };
        // The listeners close what is left at the grace; the margin is for
        // the other tasks, which stop as soon as they see the signal.
        let drained = tokio::time::timeout(grace + DRAIN_MARGIN, drain).await;
        drop(term_stop);
        serving.stand_by();
        // Last: the successor takes over once nothing more is committed
        // here.
        if let Some(lease) = lease {
            lease.release().await;
        }
        let Ok((grpc_result, http_result)) = drained else {
            tracing::warn!("shutdown did not finish within its grace period: exiting anyway");
            return Ok(());
        };
        grpc_result.context("gRPC server task")?;
        http_result.context("HTTP server task")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Binds both listeners.
async fn bind(config: &Config) -> anyhow::Result<(TcpListener, TcpListener)> {
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding the gRPC address {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP address {}", config.http_addr))?;
    Ok((grpc, http))
}

/// How this process names itself as the lease's holder, for people reading
/// `GetServerInfo`, the logs or the `leader` row: host, process id and gRPC
/// address.
fn identity(grpc_addr: SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{host} pid {} grpc {grpc_addr}", std::process::id())
}

/// Loads a term's state from `store` (fenced by `lease` on Postgres) and
/// checks its Odoo connection: fully at the start of the process
/// (`at_start`), without waiting for Odoo at a later takeover.
async fn load(
    store: Arc<dyn Store>,
    config: &Config,
    lease: Option<Lease>,
    at_start: bool,
) -> anyhow::Result<Loaded> {
    let started = Instant::now();
    let engine = Engine::open(store, config.seed.clone(), Arc::new(SystemClock)).await?;
    let odoo = match &config.odoo {
        Some(odoo) if at_start => Some(crate::odoo::Connector::prepare(odoo, &engine).await?),
        Some(odoo) => Some(crate::odoo::Connector::prepare_at_takeover(odoo, &engine).await?),
        None => None,
    };
    let took_ms = started.elapsed().as_millis() as u64;
    // At start the "stockpool serving" line says it; a takeover says it here.
    if !at_start {
        tracing::info!(
            skus = engine.skus().len(),
            reservations = engine.reservation_count(),
            epoch = lease.as_ref().map_or(0, Lease::epoch),
            took_ms,
            "state loaded"
        );
    }
    Ok(Loaded {
        engine,
        odoo,
        lease,
        took_ms,
    })
}

/// A term being served: the background work that runs only on the active
/// server, and the lease it holds.
struct Running {
    /// Stops the term's background work.
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    lease: Option<Lease>,
}

impl Running {
    /// Starts the term's background work (hold expiry, the publisher and
    /// its Redis mirror, Odoo) and serves it.
    fn start(loaded: Loaded, config: &Config, serving: &Serving) -> anyhow::Result<Running> {
        let Loaded {
            engine,
            odoo,
            lease,
            ..
        } = loaded;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(sweep_holds(
            engine.clone(),
            Duration::from_millis(config.hold_sweep_ms),
            stop_rx.clone(),
        ))];
        let (publisher, publisher_task) = Publisher::start(engine.clone(), stop_rx.clone());
        tasks.push(publisher_task);
        if let Some(redis) = config.redis.clone() {
            tasks.push(RedisMirror::start(
                redis,
                engine.clone(),
                &publisher,
                stop_rx.clone(),
            )?);
        }
        let http = match odoo {
            Some(odoo) => {
                let predecessor_until = lease.as_ref().and_then(Lease::predecessor_until);
                let (routes, odoo_tasks) = odoo.start(&engine, predecessor_until, &stop_rx);
                tasks.extend(odoo_tasks);
                routes
            }
            None => axum::Router::new(),
        };
        let epoch = lease.as_ref().map_or(0, Lease::epoch);
        let grpc = crate::api::TermServices::new(
            engine.clone(),
            publisher,
            config.tokens.clone(),
            serving.clone(),
        );
        serving.activate(Term {
            epoch,
            engine,
            grpc,
            http,
        });
        crate::telemetry::role(true, epoch);
        Ok(Running { stop, tasks, lease })
    }

    fn tenure(&self) -> Option<Tenure> {
        self.lease.as_ref().map(Lease::tenure)
    }

    /// Steps down: serves no more calls, stops the background work (for at
    /// most `STEP_DOWN_WAIT`), and lets the memory and the lease go. The
    /// store already refuses every commit (the tenure has ended).
    async fn step_down(self, serving: &Serving, why: &str) {
        serving.stand_by();
        let _ = self.stop.send(true);
        let stopped = async {
            for task in self.tasks {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(STEP_DOWN_WAIT, stopped).await.is_err() {
            tracing::warn!(
                "background work of the old term did not stop in time; it commits nothing more"
            );
        }
        let epoch = self.lease.as_ref().map_or(0, Lease::epoch);
        drop(self.lease);
        crate::telemetry::role(false, epoch);
        tracing::warn!(epoch, %why, "stepped down to standby");
    }
}

/// How long a step-down waits for the old term's background work.
const STEP_DOWN_WAIT: Duration = Duration::from_secs(5);

/// Serves terms on Postgres until `shutdown`: campaigns while standby,
/// serves while active, steps down when the tenure ends. Returns the term
/// being served when `shutdown` came, if any.
async fn serve_terms(
    store: &Arc<PostgresStore>,
    elector: &mut Elector,
    mut first: Option<Running>,
    config: &Config,
    serving: &Serving,
    mut shutdown: std::pin::Pin<&mut impl Future<Output = ()>>,
) -> Option<Running> {
    loop {
        let running = match first.take() {
            Some(running) => running,
            None => {
                crate::telemetry::role(false, serving.info().leader_epoch);
                let loaded = tokio::select! {
                    loaded = campaign(store, elector, config, serving) => loaded,
                    _ = shutdown.as_mut() => return None,
                };
                match Running::start(loaded, config, serving) {
                    Ok(running) => running,
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "could not start serving the term; standing by");
                        serving.stand_by();
                        tokio::time::sleep(config.lease.ttl).await;
                        continue;
                    }
                }
            }
        };
        let tenure = running.tenure().expect("a Postgres term holds a lease");
        tracing::info!(epoch = tenure.epoch(), "active");
        let why = tokio::select! {
            why = serve_tenure(&tenure, serving) => why,
            _ = shutdown.as_mut() => return Some(running),
        };
        let reason = if why.contains("taken over") || why.contains("fenced") {
            "deposed"
        } else {
            "lapsed"
        };
        metrics::counter!(crate::telemetry::STEP_DOWNS, "reason" => reason).increment(1);
        running.step_down(serving, &why).await;
    }
}

/// Follows one tenure until it ends, with the reason: active while the
/// lease is held, isolated while it has lapsed (Postgres could not be
/// reached to renew it: memory kept, reads served, writes and background
/// work paused), active again when a renewal gets through.
async fn serve_tenure(tenure: &Tenure, serving: &Serving) -> std::sync::Arc<str> {
    loop {
        tokio::select! {
            why = tenure.lost() => return why,
            _ = tenure.lapsed() => {}
        }
        if tenure.ended().is_some() {
            continue;
        }
        let since = Instant::now();
        serving.refresh_role();
        metrics::counter!(crate::telemetry::ISOLATIONS).increment(1);
        metrics::gauge!(crate::telemetry::ISOLATED).set(1.0);
        tracing::warn!(
            epoch = tenure.epoch(),
            trouble = tenure.trouble().as_deref().unwrap_or("no answer"),
            "isolated: the lease could not be renewed in time; writes are refused and background work paused, reads are served from memory until Postgres answers"
        );
        let regained = tenure.regained().await;
        metrics::gauge!(crate::telemetry::ISOLATED).set(0.0);
        serving.refresh_role();
        if regained {
            tracing::info!(
                epoch = tenure.epoch(),
                isolated_ms = since.elapsed().as_millis() as u64,
                "lease renewed: active again with the same memory"
            );
        }
    }
}

/// Campaigns until this server wins the lease and has loaded its state.
async fn campaign(
    store: &Arc<PostgresStore>,
    elector: &mut Elector,
    config: &Config,
    serving: &Serving,
) -> Loaded {
    let poll = config.lease.poll_every;
    let mut failing_since: Option<Instant> = None;
    loop {
        match elector.campaign().await {
            Ok(Campaign::Won(lease)) => {
                failing_since = None;
                let epoch = lease.epoch();
                let started = Instant::now();
                tracing::info!(epoch, "took over the lease: loading state");
                let fenced = Arc::new(store.fenced(lease.tenure()));
                match load(fenced, config, Some(lease), false).await {
                    Ok(loaded) => {
                        metrics::counter!(crate::telemetry::TAKEOVERS, "outcome" => "loaded")
                            .increment(1);
                        tracing::info!(
                            epoch,
                            took_ms = started.elapsed().as_millis() as u64,
                            "took over"
                        );
                        return loaded;
                    }
                    Err(e) => {
                        // `load` dropped the lease with the engine: the
                        // session closes and another server may take over.
                        metrics::counter!(crate::telemetry::TAKEOVERS, "outcome" => "failed")
                            .increment(1);
                        tracing::error!(epoch, error = %format!("{e:#}"), "took over but could not load state; the lease is given back");
                        // Another server may do better meanwhile.
                        tokio::time::sleep(config.lease.ttl).await;
                    }
                }
            }
            Ok(Campaign::Held(leader)) => {
                failing_since = None;
                serving.observe_leader(leader.epoch, &leader.holder);
                crate::telemetry::role(false, leader.epoch);
            }
            Err(e) => {
                if failing_since.is_none() {
                    tracing::warn!(error = %crate::telemetry::chain(&e), "cannot look at the lease in Postgres; retrying");
                    failing_since = Some(Instant::now());
                }
            }
        }
        tokio::time::sleep(poll).await;
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
                // Paused while isolated: the holds expire once the lease
                // is renewed (or on the successor).
                if !engine.is_current() {
                    continue;
                }
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
