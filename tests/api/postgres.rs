//! The Postgres store under failure: connections terminated mid-load, a
//! server that goes away, and a COMMIT whose answer is lost. Each test has a
//! database of its own (`support/pg.rs`); without a reachable server they
//! are skipped outside CI and fail under CI.
//!
//! A small TCP proxy in front of the server cuts connections at exact
//! moments: after forwarding a COMMIT (the batch commits, the client never
//! hears it), instead of forwarding it (it never commits), or all at once.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockpool::api::pb;
use stockpool::config::StoreConfig;
use stockpool::domain::{ChannelCode, OrderId, Quantity, Rule, Sku, WarehouseCode};
use stockpool::engine::{Engine, EngineError, ReserveCmd, SystemClock};
use stockpool::store::{
    GroupCommit, LedgerEntry, MovementKind, MovementRecord, Op, PostgresStore, Store, StoreError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[path = "../support/pg.rs"]
pub(crate) mod pg;

use pg::TestDb;

fn sku(s: &str) -> Sku {
    Sku::parse(s).unwrap()
}

fn wh(s: &str) -> WarehouseCode {
    WarehouseCode::parse(s).unwrap()
}

fn delta(s: &str, on_hand: i64, reserved: i64) -> Op {
    Op::PoolDelta {
        sku: sku(s),
        warehouse: wh("WH-WEST"),
        on_hand,
        reserved,
    }
}

fn movement(id: &str) -> Op {
    Op::Movement(MovementRecord {
        movement_id: id.into(),
        fingerprint: format!("fp-{id}"),
    })
}

fn order(id: &str, s: &str, q: i64) -> ReserveCmd {
    ReserveCmd {
        channel: ChannelCode::parse("shopify").unwrap(),
        order_id: OrderId::parse(id).unwrap(),
        lines: vec![(sku(s), Quantity::parse("quantity", q).unwrap())],
        hold_seconds: 0,
        terms: Default::default(),
    }
}

async fn count(engine: &Engine, s: &str, on_hand: i64) {
    crate::helpers::count_in(engine, s, "WH-WEST", on_hand)
        .await
        .unwrap();
}

async fn wait_consistent(engine: &Engine) {
    for _ in 0..1000 {
        if engine.is_consistent() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("memory was never reloaded from the store");
}

/// (on_hand, reserved, version) of one pool in WH-WEST as stored.
async fn stored_pool(store: &dyn Store, s: &str) -> Option<(i64, i64, u64)> {
    store
        .load_pools(&[sku(s)])
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.warehouse.as_str() == "WH-WEST")
        .map(|r| (r.pool.on_hand, r.pool.reserved, r.pool.version))
}

async fn stored_movements(store: &dyn Store) -> Vec<String> {
    let mut ids: Vec<String> = store
        .load()
        .await
        .unwrap()
        .movements
        .into_iter()
        .map(|m| m.movement_id)
        .collect();
    ids.sort();
    ids
}

/// What the proxy does with the next COMMIT it sees.
const PASS: u8 = 0;
/// Forward it, then drop the client's connection: the batch commits and the
/// client never hears so.
const LOSE_ANSWER: u8 = 1;
/// Drop the connection instead of forwarding it: the batch never commits.
const SWALLOW: u8 = 2;
/// Hold it, and from then on everything on every connection, until
/// [`Proxy::resume`]: the transaction stays open on the server, as when the
/// client is stopped (SIGSTOP) just before committing.
pub(crate) const STALL_BEFORE: u8 = 3;
/// Forward it, then hold everything on every connection (its answer too)
/// until [`Proxy::resume`]: the batch commits, and the client hears of it
/// only when it runs again.
pub(crate) const STALL_AFTER: u8 = 4;

/// The simple-protocol message sqlx sends to commit: 'Q', length 11, "COMMIT\0".
const COMMIT_MESSAGE: &[u8] = b"Q\0\0\0\x0bCOMMIT\0";

/// A TCP proxy on loopback in front of the test server.
pub(crate) struct Proxy {
    port: u16,
    pub(crate) next_commit: Arc<AtomicU8>,
    /// While set, new connections are accepted and closed at once.
    pub(crate) refusing: Arc<AtomicBool>,
    /// While set, new connections are accepted and never answered, as
    /// behind a network cut.
    silent: Arc<AtomicBool>,
    /// Connections accepted while `silent`: each is one attempt to connect.
    silent_accepts: Arc<AtomicUsize>,
    cut: watch::Sender<u64>,
    /// While true, nothing is forwarded either way on any connection (the
    /// bytes wait), as behind a network that went silent or a client that
    /// is stopped.
    stall: Arc<watch::Sender<bool>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start() -> Proxy {
        let server = sqlx::postgres::PgConnectOptions::from_str(&pg::server_url()).unwrap();
        let upstream: SocketAddr = tokio::net::lookup_host((server.get_host(), server.get_port()))
            .await
            .unwrap()
            .next()
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let next_commit = Arc::new(AtomicU8::new(PASS));
        let refusing = Arc::new(AtomicBool::new(false));
        let silent = Arc::new(AtomicBool::new(false));
        let silent_accepts = Arc::new(AtomicUsize::new(0));
        let (cut, _) = watch::channel(0u64);
        let stall = Arc::new(watch::channel(false).0);
        let accept = tokio::spawn({
            let stall = stall.clone();
            let next_commit = next_commit.clone();
            let refusing = refusing.clone();
            let silent = silent.clone();
            let silent_accepts = silent_accepts.clone();
            let cut = cut.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if refusing.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    if silent.load(Ordering::SeqCst) {
                        silent_accepts.fetch_add(1, Ordering::SeqCst);
                        let mut cut = cut.subscribe();
                        tokio::spawn(async move {
                            let _ = cut.changed().await;
                            drop(client);
                        });
                        continue;
                    }
                    tokio::spawn(relay(
                        client,
                        upstream,
                        next_commit.clone(),
                        cut.subscribe(),
                        stall.clone(),
                    ));
                }
            }
        });
        Proxy {
            port,
            next_commit,
            refusing,
            silent,
            silent_accepts,
            cut,
            stall,
            accept,
        }
    }

    /// Holds every byte on every connection from now on.
    pub(crate) fn stall(&self) {
        self.stall.send_replace(true);
    }

    /// Forwards what was held, and everything after.
    pub(crate) fn resume(&self) {
        self.stall.send_replace(false);
    }

    /// Cuts every open connection; the port stays open.
    pub(crate) fn cut_connections(&self) {
        self.cut.send_modify(|n| *n += 1);
    }

    /// A network cut: every open connection drops, and new ones are
    /// accepted and never answered.
    pub(crate) fn partition(&self) {
        self.silent.store(true, Ordering::SeqCst);
        self.cut_connections();
    }

    /// The cut heals: new connections go through again (those accepted
    /// during the cut stay unanswered until their clients give up on them).
    pub(crate) fn heal(&self) {
        self.silent.store(false, Ordering::SeqCst);
    }

    /// `db`'s URL through this proxy.
    pub(crate) fn url(&self, db: &TestDb) -> String {
        let server = sqlx::postgres::PgConnectOptions::from_str(&pg::server_url()).unwrap();
        format!(
            "postgres://{}@127.0.0.1:{}/{}",
            server.get_username(),
            self.port,
            db.name
        )
    }

    /// Closes the port and every connection through it.
    fn stop(&self) {
        self.accept.abort();
        self.cut_connections();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits while the proxy is stalled; false when the connection is cut
/// meanwhile.
async fn unstalled(stall: &mut watch::Receiver<bool>, cut: &mut watch::Receiver<u64>) -> bool {
    tokio::select! {
        held = stall.wait_for(|s| !*s) => held.is_ok(),
        _ = cut.changed() => false,
    }
}

async fn relay(
    client: TcpStream,
    upstream: SocketAddr,
    next_commit: Arc<AtomicU8>,
    mut cut: watch::Receiver<u64>,
    stall_tx: Arc<watch::Sender<bool>>,
) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        return;
    };
    let (mut from_client, to_client) = client.into_split();
    let (from_server, mut to_server) = server.into_split();
    let mut stall = stall_tx.subscribe();
    let back = tokio::spawn({
        let mut stall = stall_tx.subscribe();
        let mut cut = cut.clone();
        async move {
            let (mut from_server, mut to_client) = (from_server, to_client);
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match from_server.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                if !unstalled(&mut stall, &mut cut).await {
                    return;
                }
                if to_client.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    });
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            read = from_client.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = cut.changed() => break,
        };
        let chunk = &buf[..n];
        let is_commit = chunk
            .windows(COMMIT_MESSAGE.len())
            .any(|w| w == COMMIT_MESSAGE);
        let mode = if is_commit {
            next_commit.swap(PASS, Ordering::SeqCst)
        } else {
            PASS
        };
        if mode == SWALLOW {
            break;
        }
        if mode == STALL_BEFORE {
            stall_tx.send_replace(true);
        }
        if !unstalled(&mut stall, &mut cut).await {
            break;
        }
        if to_server.write_all(chunk).await.is_err() {
            break;
        }
        if mode == STALL_AFTER {
            stall_tx.send_replace(true);
        }
        if mode == LOSE_ANSWER {
            // The client loses its connection now; the server keeps its
            // side a while so it reads and runs the COMMIT first.
            back.abort();
            drop(from_client);
            tokio::time::sleep(Duration::from_millis(500)).await;
            return;
        }
    }
    back.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_acknowledged_reservation_is_lost_when_postgres_connections_are_terminated_mid_load() {
    const TASKS: usize = 8;
    const ORDERS: usize = 100;
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = Arc::new(PostgresStore::connect(&db.url).await.unwrap());
    let engine = Engine::open(store.clone(), crate::helpers::seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    count(&engine, "HOT", 500).await;

    let attempted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let engine = engine.clone();
        let attempted = attempted.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..ORDERS {
                let id = format!("t{t}-{i}");
                match engine.reserve(order(&id, "HOT", 1)).await {
                    Ok(_) => acked.push(id),
                    // Failed commits, SKUs being reloaded, and (800 orders
                    // for 500 units) sold out.
                    Err(
                        EngineError::Unavailable(_)
                        | EngineError::Reloading(_)
                        | EngineError::Domain(_),
                    ) => {}
                    Err(e) => panic!("unexpected error {e:?}"),
                }
                attempted.fetch_add(1, Ordering::SeqCst);
            }
            acked
        }));
    }
    // Terminate every connection of the test database at six points of the
    // run, whatever the machine's speed.
    let mut terminated = 0;
    for at in [80, 160, 240, 320, 400, 480] {
        while attempted.load(Ordering::SeqCst) < at && !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        terminated += db.terminate_connections().await;
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    wait_consistent(&engine).await;
    eprintln!(
        "{} of {} orders acknowledged; {terminated} connections terminated",
        acked.len(),
        TASKS * ORDERS
    );
    assert!(terminated > 0, "the test never cut a connection");
    assert!(!acked.is_empty(), "nothing was acknowledged");
    assert!(acked.len() <= 500);

    let stored = crate::helpers::assert_store_holds_exactly(store.as_ref(), &acked, "HOT").await;
    assert_eq!(
        stored.reservations.len(),
        acked.len(),
        "no reservation was stored that its caller was told failed"
    );

    let memory: Vec<_> = engine
        .get_stock(&[sku("HOT")])
        .into_iter()
        .map(|l| l.pool)
        .collect();
    let reopened = Engine::open(store.clone(), crate::helpers::seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    let from_database: Vec<_> = reopened
        .get_stock(&[sku("HOT")])
        .into_iter()
        .map(|l| l.pool)
        .collect();
    assert_eq!(
        memory, from_database,
        "memory equals the database afterwards"
    );
}

#[tokio::test]
async fn commits_fail_within_about_a_second_while_postgres_is_unreachable() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let proxy = Proxy::start().await;
    let store = PostgresStore::connect(&proxy.url(&db)).await.unwrap();
    store.commit(&[delta("TEE", 5, 0)]).await.unwrap();

    // A network cut: the server's address takes connections and never
    // answers. The commit waits for a connection only so long.
    proxy.silent.store(true, Ordering::SeqCst);
    proxy.cut_connections();
    let started = Instant::now();
    let err = store.commit(&[delta("TEE", 1, 0)]).await.unwrap_err();
    let took = started.elapsed();
    eprintln!("commit behind a silent address failed after {took:?}: {err}");
    assert!(
        took < Duration::from_millis(2500),
        "a commit waited {took:?} for a server that never answers"
    );
    assert!(
        matches!(err, StoreError::Database(_)),
        "nothing was sent, so nothing is in doubt: {err:?}"
    );

    // The server gone: its port closed.
    proxy.stop();
    let started = Instant::now();
    let err = store.commit(&[delta("TEE", 1, 0)]).await.unwrap_err();
    let took = started.elapsed();
    eprintln!("commit to a closed port failed after {took:?}: {err}");
    assert!(
        took < Duration::from_millis(2500),
        "a commit waited {took:?} for an unreachable server"
    );
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");

    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = Instant::now();
    let refused =
        PostgresStore::connect(&format!("postgres://postgres@127.0.0.1:{port}/stockpool")).await;
    assert!(refused.is_err(), "connected to a closed port");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "connecting to a closed port took {:?}",
        started.elapsed()
    );

    let direct = PostgresStore::connect(&db.url).await.unwrap();
    assert_eq!(
        stored_pool(&direct, "TEE").await,
        Some((5, 0, 1)),
        "the failed commit wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_network_cut_every_waiting_write_is_refused_after_one_connection_attempt_and_writes_resume_when_it_heals(
) {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let proxy = Proxy::start().await;
    let store = Arc::new(PostgresStore::connect(&proxy.url(&db)).await.unwrap());
    let (writer, _task) = GroupCommit::spawn(store.clone());
    writer
        .enqueue(vec![delta("TEE", 1, 0)])
        .wait()
        .await
        .unwrap();

    // The network is cut: open connections drop, new ones are never
    // answered. Eight writers wait on the writer.
    proxy.silent.store(true, Ordering::SeqCst);
    proxy.cut_connections();
    let tickets: Vec<_> = (0..8)
        .map(|i| writer.enqueue(vec![delta(&format!("SKU-{i}"), 1, 0)]))
        .collect();
    for ticket in tickets {
        let err = ticket.wait().await.expect_err("refused");
        assert_eq!(
            err.failure(),
            stockpool::store::Failure::Unavailable,
            "nothing was sent, so nothing is in doubt: {err}"
        );
    }
    assert_eq!(
        proxy.silent_accepts.load(Ordering::SeqCst),
        1,
        "every waiting write was refused after one attempt to connect, not one attempt each"
    );

    // The cut heals: the next write commits on its first attempt.
    proxy.silent.store(false, Ordering::SeqCst);
    writer
        .enqueue(vec![delta("TEE", 1, 0)])
        .wait()
        .await
        .expect("writes resume as soon as the server answers");
    assert_eq!(proxy.silent_accepts.load(Ordering::SeqCst), 1);
    let direct = PostgresStore::connect(&db.url).await.unwrap();
    assert_eq!(stored_pool(&direct, "TEE").await, Some((2, 0, 2)));
    assert_eq!(stored_pool(&direct, "SKU-0").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_commit_answer_is_lost_is_acknowledged_and_applied_once() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let proxy = Proxy::start().await;
    let store = Arc::new(PostgresStore::connect(&proxy.url(&db)).await.unwrap());

    proxy.next_commit.store(LOSE_ANSWER, Ordering::SeqCst);
    store
        .commit(&[delta("TEE", 10, 2), movement("mv-1")])
        .await
        .expect("the batch committed, so the commit says so");
    assert_eq!(
        proxy.next_commit.load(Ordering::SeqCst),
        PASS,
        "the proxy lost a COMMIT answer"
    );

    // Through the writer: a batch of two jobs whose answer is lost is
    // acknowledged to both, and not retried job by job.
    let (writer, task) = GroupCommit::spawn(store.clone());
    proxy.next_commit.store(LOSE_ANSWER, Ordering::SeqCst);
    let first = writer.enqueue(vec![delta("TEE", 1, 0), movement("mv-2")]);
    let second = writer.enqueue(vec![delta("TEE", 1, 0), movement("mv-3")]);
    first.wait().await.unwrap();
    second.wait().await.unwrap();
    drop(writer);
    task.await.unwrap();

    let direct = PostgresStore::connect(&db.url).await.unwrap();
    let (on_hand, reserved, _) = stored_pool(&direct, "TEE").await.unwrap();
    assert_eq!((on_hand, reserved), (12, 2), "every delta applied once");
    assert_eq!(stored_movements(&direct).await, ["mv-1", "mv-2", "mv-3"]);
}

#[tokio::test]
async fn a_batch_whose_commit_never_reached_the_server_is_reported_failed_and_wrote_nothing() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let proxy = Proxy::start().await;
    let store = PostgresStore::connect(&proxy.url(&db)).await.unwrap();

    proxy.next_commit.store(SWALLOW, Ordering::SeqCst);
    let err = store
        .commit(&[delta("TEE", 10, 0), movement("mv-1")])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");

    store
        .commit(&[delta("TEE", 10, 0), movement("mv-1")])
        .await
        .expect("the retry is a first write");
    assert_eq!(stored_pool(&store, "TEE").await, Some((10, 0, 1)));
    assert_eq!(stored_movements(&store).await, ["mv-1"]);
}

#[tokio::test]
async fn while_a_commit_outcome_is_unknown_nothing_is_written_and_its_retried_jobs_are_not_applied_twice(
) {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let proxy = Proxy::start().await;
    let store = PostgresStore::connect(&proxy.url(&db)).await.unwrap();
    let job_a = [delta("A", 0, 1), movement("mv-a")];
    let job_b = [delta("B", 0, 1), movement("mv-b")];
    let batch: Vec<Op> = job_a.iter().chain(&job_b).cloned().collect();

    // The batch commits but its answer is lost, and the server cannot be
    // asked: the store cannot tell.
    proxy.next_commit.store(LOSE_ANSWER, Ordering::SeqCst);
    proxy.refusing.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let err = store.commit(&batch).await.unwrap_err();
    assert!(matches!(err, StoreError::InDoubt(_)), "{err:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "gave up after {:?}",
        started.elapsed()
    );

    // Still unreachable: the writer's retry of a job, a new commit, a
    // reload and a read-back are all refused rather than guessed, and none
    // of them is itself in doubt (nothing was sent).
    for ops in [&job_a[..], &[delta("C", 1, 0)][..]] {
        let err = store.commit(ops).await.unwrap_err();
        assert!(matches!(err, StoreError::Blocked(_)), "{err:?}");
    }
    assert!(matches!(
        store.load_pools(&[sku("A")]).await,
        Err(StoreError::Blocked(_))
    ));
    assert!(matches!(
        store
            .load_reservation(
                &ChannelCode::parse("shopify").unwrap(),
                &OrderId::parse("o-1").unwrap()
            )
            .await,
        Err(StoreError::Blocked(_))
    ));

    // The server answers again: the batch had committed, so the retried
    // jobs are acknowledged without being written a second time.
    proxy.refusing.store(false, Ordering::SeqCst);
    store.commit(&job_a).await.unwrap();
    store.commit(&job_b).await.unwrap();
    store.commit(&[delta("A", 0, 1)]).await.unwrap();

    let direct = PostgresStore::connect(&db.url).await.unwrap();
    assert_eq!(stored_pool(&direct, "A").await, Some((0, 2, 2)));
    assert_eq!(stored_pool(&direct, "B").await, Some((0, 1, 1)));
    assert_eq!(stored_pool(&direct, "C").await, None);
    assert_eq!(stored_movements(&direct).await, ["mv-a", "mv-b"]);
}

#[tokio::test]
async fn a_commit_refused_by_the_server_at_commit_time_is_reported_failed() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.url).await.unwrap();
    // A deferred check fails the COMMIT itself, not an earlier statement.
    db.execute(
        "CREATE FUNCTION refuse_666() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.on_hand = 666 THEN RAISE EXCEPTION 'on_hand 666 refused at commit'; END IF; \
         RETURN NULL; END $$; \
         CREATE CONSTRAINT TRIGGER refuse_666 AFTER INSERT OR UPDATE ON pools \
         DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_666()",
    )
    .await
    .unwrap();

    let err = store
        .commit(&[delta("TEE", 666, 0), movement("mv-1")])
        .await
        .unwrap_err();
    assert!(
        stockpool::telemetry::chain(&err).contains("666 refused"),
        "{err:?}"
    );
    store
        .commit(&[delta("TEE", 5, 0), movement("mv-1")])
        .await
        .unwrap();
    assert_eq!(stored_pool(&store, "TEE").await, Some((5, 0, 1)));
}

#[tokio::test]
async fn the_ledger_and_the_rule_history_refuse_updates_deletes_and_truncation() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.url).await.unwrap();
    store
        .commit(&[
            Op::Ledger(LedgerEntry {
                at_ms: 1,
                sku: sku("TEE"),
                warehouse: wh("WH-EAST"),
                kind: MovementKind::Adjust,
                on_hand_delta: 5,
                reserved_delta: 0,
                on_hand_after: 5,
                reserved_after: 0,
                reason: "receipt".into(),
                reference: "m-1".into(),
            }),
            Op::RuleChange(Box::new(stockpool::store::RuleChange {
                at_ms: 1,
                changed_by: "ops".into(),
                comment: String::new(),
                channel: ChannelCode::parse("b2b").unwrap(),
                sku: None,
                before: None,
                after: Some(Rule {
                    channel: Some(ChannelCode::parse("b2b").unwrap()),
                    fence: Some(3),
                    ..Rule::default()
                }),
            })),
        ])
        .await
        .unwrap();
    for sql in [
        "UPDATE ledger SET on_hand_delta = 6",
        "DELETE FROM ledger",
        "TRUNCATE ledger",
        "UPDATE rule_history SET comment = 'x'",
        "DELETE FROM rule_history",
        "TRUNCATE rule_history",
    ] {
        let err = db.execute(sql).await.expect_err(sql);
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    assert_eq!(store.ledger(None, 0, 10).await.unwrap().len(), 1);
    let b2b = ChannelCode::parse("b2b").unwrap();
    assert_eq!(store.rule_history(&b2b, None, true).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_rule_without_a_channel_is_refused_naming_the_column() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let store = PostgresStore::connect(&db.url).await.unwrap();
    let err = store
        .commit(&[Op::PutRule(Rule::default())])
        .await
        .expect_err("no channel");
    let text = stockpool::telemetry::chain(&err);
    assert!(
        text.contains("null value") && text.contains("\"channel\""),
        "{text}"
    );
}

#[tokio::test]
async fn the_server_serves_from_postgres_and_keeps_its_state_across_a_restart() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let url = db.url.clone();
    let mut app =
        crate::helpers::spawn_app_with(move |c| c.store = StoreConfig::Postgres { url }).await;
    app.set_stock("TEE", "WH-WEST", 10).await;
    let reserved = app
        .reserve("shopify", "#1001", &[("TEE", 3)], 0)
        .await
        .unwrap();
    assert!(!reserved.replayed);

    app.restart().await;
    let levels: Vec<pb::StockLevel> = app.stock(&["TEE"]).await;
    let west = levels.iter().find(|l| l.warehouse == "WH-WEST").unwrap();
    assert_eq!((west.on_hand, west.reserved), (10, 3));
    let replay = app
        .reserve("shopify", "#1001", &[("TEE", 3)], 0)
        .await
        .unwrap();
    assert!(replay.replayed, "the reservation came back from Postgres");
    app.stop().await;
}

#[tokio::test]
async fn a_commit_of_an_old_epoch_fails_in_the_database_even_while_its_server_believes_it_is_active(
) {
    use stockpool::store::{Campaign, LeaseTimings};
    let Some(db) = TestDb::create().await else {
        return;
    };
    let timings = LeaseTimings {
        ttl: Duration::from_secs(30),
        renew_every: Duration::from_secs(10),
        poll_every: Duration::from_millis(50),
    };
    let store = PostgresStore::connect_with(&db.url, timings).await.unwrap();
    let won = |c: Campaign| match c {
        Campaign::Won(lease) => lease,
        Campaign::Held(l) => panic!("held by {l:?}"),
    };
    let first = won(store.elector("first".into()).campaign().await.unwrap());
    assert_eq!(first.epoch(), 1);
    let old = store.fenced(first.tenure());
    old.commit(&[movement("m1")]).await.unwrap();

    // The lease runs out by the database's clock, and another server takes
    // over, before the first one has renewed or heard anything.
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&db.url)
        .await
        .unwrap();
    sqlx::query("UPDATE leader SET expires_at = '-infinity'")
        .execute(&mut conn)
        .await
        .unwrap();
    let second = won(store.elector("second".into()).campaign().await.unwrap());
    assert_eq!(second.epoch(), 2);
    let Campaign::Held(seen) = store.elector("third".into()).campaign().await.unwrap() else {
        panic!("a lease just taken is not free");
    };
    assert_eq!((seen.epoch, seen.holder.as_str()), (2, "second"));
    assert!(
        first.tenure().is_held(),
        "the first server has not heard yet"
    );

    let refused = old.commit(&[movement("m2")]).await.unwrap_err();
    assert!(
        matches!(&refused, StoreError::Fenced(m) if m.contains("epoch 2 is held by second")),
        "{refused:?}"
    );
    assert!(!first.tenure().is_held(), "a fenced commit ends the tenure");
    let refused = old.commit(&[movement("m3")]).await.unwrap_err();
    assert!(matches!(refused, StoreError::Fenced(_)), "{refused:?}");
    store
        .fenced(second.tenure())
        .commit(&[movement("m4")])
        .await
        .unwrap();
    assert_eq!(stored_movements(&store).await, ["m1", "m4"]);
}
