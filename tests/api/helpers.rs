//! `spawn_app()`: a real server on loopback port 0 over its own SQLite
//! directory, and gRPC clients to talk to it.

use std::collections::HashMap;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use stockpool::api::pb::{self, admin_client::AdminClient, inventory_client::InventoryClient};
use stockpool::api::{Role, Tokens};
use stockpool::config::Config;

use async_trait::async_trait;
use stockpool::domain::{
    Channel, ChannelCode, OrderId, Reservation, Rule, Sku, Warehouse, WarehouseCode,
};
use stockpool::engine::{Engine, EngineError, Seed, SetCmd};
use stockpool::server::Application;
use stockpool::store::{
    ChannelEvent, LedgerRow, Op, OutboxEntry, OutboxState, OutboxStats, PoolRow, RuleChange,
    Snapshot, SqliteStore, Store, StoreError,
};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel as GrpcChannel;

pub type Inventory = InventoryClient<GrpcChannel>;
pub type Admin = AdminClient<GrpcChannel>;

pub const WAREHOUSES: [&str; 3] = ["WH-EAST", "WH-WEST", "WH-CENTRAL"];

/// The seed operator's world: three warehouses; b2b fences 100 units and
/// prefers WH-CENTRAL; amazon sees 60% less a buffer of 5.
pub fn seed() -> Seed {
    let wh = |c: &str| WarehouseCode::parse(c).unwrap();
    let ch = |c: &str| ChannelCode::parse(c).unwrap();
    Seed {
        warehouses: WAREHOUSES
            .iter()
            .map(|c| Warehouse {
                code: wh(c),
                name: c.to_string(),
            })
            .collect(),
        channels: vec![Channel {
            code: ch("b2b"),
            name: "B2B portal".into(),
        }],
        rules: vec![
            Rule {
                channel: Some(ch("b2b")),
                warehouses: vec![wh("WH-CENTRAL"), wh("WH-EAST")],
                fence: Some(100),
                ..Rule::default()
            },
            Rule {
                channel: Some(ch("amazon")),
                share_percent: Some(60),
                buffer: Some(5),
                ..Rule::default()
            },
        ],
    }
}

pub struct TestApp {
    pub inventory: Inventory,
    pub admin: Admin,
    pub engine: Engine,
    /// The inbound side of the Odoo connection, when configured.
    pub odoo: Option<std::sync::Arc<stockpool::odoo::Inbound>>,
    pub grpc_url: String,
    pub http_addr: std::net::SocketAddr,
    /// The certificate the server serves, when it has TLS.
    pub tls: Option<std::sync::Arc<stockpool::listen::Tls>>,
    /// Kept so the directory outlives the servers started on it.
    _dir: TempDir,
    config: Config,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// A started server and the handles a test holds on it.
struct Started {
    inventory: Inventory,
    admin: Admin,
    engine: Engine,
    odoo: Option<std::sync::Arc<stockpool::odoo::Inbound>>,
    grpc_url: String,
    http_addr: std::net::SocketAddr,
    tls: Option<std::sync::Arc<stockpool::listen::Tls>>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

async fn start(config: Config) -> Started {
    let app = Application::build(config).await.expect("server builds");
    let tls = app.tls();
    let grpc_addr = app.grpc_addr();
    let http_addr = app.http_addr();
    let engine = app
        .engine()
        .expect("a server alone on its store is active from the start");
    let odoo = app.odoo_inbound();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    // Over TLS the clients are the test's own business; these stay plain.
    let grpc_url = match &tls {
        Some(_) => format!("https://localhost:{}", grpc_addr.port()),
        None => format!("http://{grpc_addr}"),
    };
    let channel = GrpcChannel::from_shared(format!("http://{grpc_addr}"))
        .unwrap()
        .connect_lazy();
    Started {
        inventory: InventoryClient::new(channel.clone()),
        admin: AdminClient::new(channel),
        engine,
        odoo,
        grpc_url,
        http_addr,
        tls,
        stop,
        task,
    }
}

/// A fresh server on its own data directory with [`seed`].
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Like [`spawn_app`], with the config adjusted first.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.seed = seed();
    adjust(&mut config);
    let started = start(config.clone()).await;
    TestApp {
        inventory: started.inventory,
        admin: started.admin,
        engine: started.engine,
        odoo: started.odoo,
        grpc_url: started.grpc_url,
        http_addr: started.http_addr,
        tls: started.tls,
        _dir: dir,
        config,
        stop: Some(started.stop),
        task: Some(started.task),
    }
}

/// Tokens for the auth tests.
pub fn tokens() -> Tokens {
    let mut t = HashMap::new();
    t.insert("ops-token-0123456789".to_string(), Role::Ops);
    t.insert(
        "shopify-token-0123456789".to_string(),
        Role::Channel(ChannelCode::parse("shopify").unwrap()),
    );
    t.insert("read-token-0123456789".to_string(), Role::Read);
    Tokens::new(t)
}

impl TestApp {
    /// Stops the server gracefully and starts a new one on the same data.
    pub async fn restart(&mut self) {
        self.stop().await;
        let started = start(self.config.clone()).await;
        self.inventory = started.inventory;
        self.admin = started.admin;
        self.engine = started.engine;
        self.odoo = started.odoo;
        self.grpc_url = started.grpc_url;
        self.http_addr = started.http_addr;
        self.tls = started.tls;
        self.stop = Some(started.stop);
        self.task = Some(started.task);
    }

    /// The SQLite data directory this server runs on.
    pub fn data_dir(&self) -> std::path::PathBuf {
        match &self.config.store {
            stockpool::config::StoreConfig::Sqlite { data_dir } => data_dir.clone(),
            _ => panic!("not a SQLite server"),
        }
    }

    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().expect("server stops cleanly");
        }
    }

    pub async fn set_stock(&mut self, sku: &str, warehouse: &str, on_hand: i64) -> pb::StockLevel {
        self.inventory
            .set_stock(pb::SetStockRequest {
                sku: sku.into(),
                warehouse: warehouse.into(),
                on_hand,
                reason: "count".into(),
                ..Default::default()
            })
            .await
            .expect("set stock")
            .into_inner()
    }

    pub async fn reserve(
        &mut self,
        channel: &str,
        order: &str,
        lines: &[(&str, i64)],
        hold: u32,
    ) -> Result<pb::ReserveResponse, tonic::Status> {
        self.inventory
            .reserve(pb::ReserveRequest {
                channel: channel.into(),
                order_id: order.into(),
                lines: lines.iter().map(|(s, q)| line(s, *q)).collect(),
                hold_seconds: hold,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn stock(&mut self, skus: &[&str]) -> Vec<pb::StockLevel> {
        self.inventory
            .get_stock(pb::GetStockRequest {
                skus: skus.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })
            .await
            .expect("get stock")
            .into_inner()
            .levels
    }

    /// Everything a refused request must leave alone: levels, ledger length,
    /// reservation count.
    pub async fn fingerprint(&mut self) -> (Vec<pb::StockLevel>, usize, usize) {
        let levels = self.stock(&[]).await;
        let ledger = self.engine.ledger(None, 0, i64::MAX).await.unwrap().len();
        (levels, ledger, self.engine.reservation_count())
    }
}

pub fn line(sku: &str, quantity: i64) -> pb::Line {
    pb::Line {
        sku: sku.into(),
        quantity,
        warehouse: String::new(),
        ..Default::default()
    }
}

pub fn line_at(sku: &str, quantity: i64, warehouse: &str) -> pb::Line {
    pb::Line {
        sku: sku.into(),
        quantity,
        warehouse: warehouse.into(),
        ..Default::default()
    }
}

/// A raw HTTP/1.1 GET on the side port: the whole response, status line
/// and headers included.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// A store that fails on demand: commits while `failing` (or once, with
/// `fail_once`), reloads while `reads_failing`; with `lose_answer_once` a
/// commit applies and then reports its outcome unknown, as a COMMIT whose
/// answer was lost. Commits wait while a test holds `gate`; `commits`
/// counts commit attempts and `read_backs` reservation reads.
pub struct Flaky {
    pub inner: SqliteStore,
    pub failing: AtomicBool,
    pub fail_once: AtomicBool,
    pub lose_answer_once: AtomicBool,
    pub reads_failing: AtomicBool,
    pub gate: tokio::sync::Mutex<()>,
    pub commits: AtomicUsize,
    pub read_backs: AtomicUsize,
    /// While set, the store stands as an isolated server's (its lease
    /// lapsed): it refuses commits without trying them.
    pub isolated: AtomicBool,
}

impl Flaky {
    pub fn new(inner: SqliteStore) -> Self {
        Flaky {
            inner,
            failing: AtomicBool::new(false),
            fail_once: AtomicBool::new(false),
            lose_answer_once: AtomicBool::new(false),
            reads_failing: AtomicBool::new(false),
            gate: Default::default(),
            commits: AtomicUsize::new(0),
            read_backs: AtomicUsize::new(0),
            isolated: AtomicBool::new(false),
        }
    }

    fn unreachable() -> StoreError {
        StoreError::Database(sqlx::Error::PoolTimedOut)
    }
}

#[async_trait]
impl Store for Flaky {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        self.inner.load().await
    }
    async fn commit(&self, ops: &[Op]) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        drop(self.gate.lock().await);
        if self.failing.load(Ordering::SeqCst) || self.fail_once.swap(false, Ordering::SeqCst) {
            return Err(Self::unreachable());
        }
        self.inner.commit(ops).await?;
        if self.lose_answer_once.swap(false, Ordering::SeqCst) {
            return Err(StoreError::InDoubt("the answer to COMMIT was lost".into()));
        }
        Ok(())
    }
    async fn load_pools(&self, skus: &[Sku]) -> Result<Vec<PoolRow>, StoreError> {
        if self.reads_failing.load(Ordering::SeqCst) {
            return Err(Self::unreachable());
        }
        self.inner.load_pools(skus).await
    }
    async fn load_reservation(
        &self,
        c: &ChannelCode,
        o: &OrderId,
    ) -> Result<Option<Reservation>, StoreError> {
        self.read_backs.fetch_add(1, Ordering::SeqCst);
        if self.reads_failing.load(Ordering::SeqCst) {
            return Err(Self::unreachable());
        }
        self.inner.load_reservation(c, o).await
    }
    async fn rule_history(
        &self,
        c: &ChannelCode,
        s: Option<&Sku>,
        all: bool,
    ) -> Result<Vec<RuleChange>, StoreError> {
        self.inner.rule_history(c, s, all).await
    }
    async fn channel_events(
        &self,
        c: &ChannelCode,
        after: u64,
        limit: i64,
    ) -> Result<Vec<ChannelEvent>, StoreError> {
        self.inner.channel_events(c, after, limit).await
    }
    async fn ledger(
        &self,
        sku: Option<&Sku>,
        after: i64,
        limit: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        self.inner.ledger(sku, after, limit).await
    }
    async fn outbox_due(&self, now_ms: i64, limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_due(now_ms, limit).await
    }
    async fn outbox_list(
        &self,
        state: Option<OutboxState>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_list(state, after_id, limit).await
    }
    async fn outbox_entries(&self, ids: &[i64]) -> Result<Vec<OutboxEntry>, StoreError> {
        self.inner.outbox_entries(ids).await
    }
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        self.inner.outbox_stats().await
    }
    fn is_current(&self) -> bool {
        !self.isolated.load(Ordering::SeqCst)
    }
    fn standing(&self) -> stockpool::store::Standing {
        if self.isolated.load(Ordering::SeqCst) {
            stockpool::store::Standing::Isolated(
                "this stockpool server is isolated (a test)".into(),
            )
        } else {
            stockpool::store::Standing::Current
        }
    }
}

/// Asserts that every acknowledged order is stored and that the stored
/// reserved units of `sku` are exactly one per acknowledged order; returns
/// the snapshot for further checks.
pub async fn assert_store_holds_exactly(
    store: &dyn Store,
    acked: &[String],
    sku: &str,
) -> Snapshot {
    let stored = store.load().await.unwrap();
    for id in acked {
        assert!(
            stored
                .reservations
                .iter()
                .any(|r| r.order_id.as_str() == id),
            "acknowledged reservation {id} is not in the store"
        );
    }
    let reserved: i64 = stored
        .pools
        .iter()
        .filter(|p| p.sku.as_str() == sku)
        .map(|p| p.pool.reserved)
        .sum();
    assert_eq!(
        reserved,
        acked.len() as i64,
        "the store holds exactly the acknowledged units"
    );
    stored
}

/// One gRPC call sent as raw bytes (a message frame around `message`, with
/// an optional bearer token): what a hostile or broken client sends. Returns
/// the call's status: from the headers of a trailers-only answer, else from
/// the trailers; OK when it succeeded.
pub async fn raw_grpc(url: &str, path: &str, message: &[u8], token: Option<&str>) -> tonic::Status {
    use http_body_util::BodyExt;
    use tonic::codegen::{http, Service};

    let mut channel = GrpcChannel::from_shared(url.to_string())
        .unwrap()
        .connect()
        .await
        .expect("server reachable");
    let mut frame = Vec::with_capacity(message.len() + 5);
    frame.push(0);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    let mut request = http::Request::post(format!("{url}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(tonic::body::Body::new(http_body_util::Full::new(
            bytes::Bytes::from(frame),
        )))
        .unwrap();
    std::future::poll_fn(|cx| channel.poll_ready(cx))
        .await
        .expect("channel ready");
    let response = channel.call(request).await.expect("an HTTP answer");
    if let Some(status) = tonic::Status::from_header_map(response.headers()) {
        return status;
    }
    let collected = response
        .into_body()
        .collect()
        .await
        .expect("the whole body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    tonic::Status::from_header_map(&trailers).unwrap_or_else(|| tonic::Status::unknown("no status"))
}

/// A free loopback port (bound, then released for a process to take).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A channel adapter run as its own `stockpool adapter CHANNEL` process,
/// killed when dropped.
pub struct AdapterProcess {
    child: std::process::Child,
}

impl AdapterProcess {
    /// Starts `stockpool --server GRPC adapter CHANNEL --config CONFIG` with
    /// the credentials in `env`.
    pub fn spawn(
        grpc: &str,
        channel: &str,
        config: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Self {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_stockpool"))
            .args(["--server", grpc, "adapter", channel, "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("the stockpool binary runs");
        AdapterProcess { child }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for AdapterProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A physical count of `on_hand` units of `sku` in `warehouse`, straight to
/// the engine.
pub async fn count_in(
    engine: &Engine,
    sku: &str,
    warehouse: &str,
    on_hand: i64,
) -> Result<(), EngineError> {
    engine
        .set_stock(SetCmd {
            sku: Sku::parse(sku).unwrap(),
            warehouse: WarehouseCode::parse(warehouse).unwrap(),
            on_hand,
            reason: String::new(),
            expected_version: None,
            movement_id: None,
        })
        .await
        .map(|_| ())
}
