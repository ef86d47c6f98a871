//! High availability: several servers on one Postgres database, one active.
//!
//! Servers run in this process where the test only needs their network
//! (a proxy in front of one of them stalls or cuts its connections to
//! Postgres exactly when the test says), and as `stockpool serve`
//! processes where the test kills or stops them (SIGKILL, SIGSTOP). Every
//! wait is a convergence deadline, never a timed assertion: the failover
//! times are printed (`--nocapture`) and reported from a measurement.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use stockpool::api::pb::{self, admin_client::AdminClient, inventory_client::InventoryClient};
use stockpool::config::{Config, StoreConfig};
use stockpool::ha::{Role, Serving};
use stockpool::server::Application;
use stockpool::store::LeaseTimings;
use tokio::io::AsyncBufReadExt;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::Code;

use crate::helpers::{http_get, line, seed};
use crate::postgres::pg::TestDb;
use crate::postgres::{Proxy, STALL_AFTER, STALL_BEFORE};

/// Longest any convergence in these tests may take before the test fails
/// (a loaded 2-core machine included).
const NEVER: Duration = Duration::from_secs(60);

/// Short leases, so a test of a pause or a cut takes seconds.
pub(crate) fn short_lease() -> LeaseTimings {
    LeaseTimings {
        ttl: Duration::from_millis(1200),
        renew_every: Duration::from_millis(300),
        poll_every: Duration::from_millis(50),
    }
}

/// A server in this process on a Postgres database.
pub(crate) struct Node {
    pub serving: Serving,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    channel: Channel,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Node {
    /// A server on the database at `url` (maybe through a proxy) with the
    /// seed world and `lease`.
    pub(crate) async fn start(url: &str, lease: LeaseTimings) -> Node {
        Node::start_with(url, lease, |_| {}).await
    }

    pub(crate) async fn start_with(
        url: &str,
        lease: LeaseTimings,
        adjust: impl FnOnce(&mut Config),
    ) -> Node {
        let mut config = Config::for_tests(std::path::Path::new("unused"));
        config.store = StoreConfig::Postgres {
            url: url.to_string(),
        };
        config.seed = seed();
        config.lease = lease;
        config.listen.shutdown_grace = Duration::from_secs(2);
        adjust(&mut config);
        let app = Application::build(config).await.expect("server builds");
        let (grpc, http) = (app.grpc_addr(), app.http_addr());
        let serving = app.serving();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run(async {
            let _ = stopped.await;
        }));
        let channel = Channel::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect_lazy();
        Node {
            serving,
            grpc,
            http,
            channel,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn inventory(&self) -> InventoryClient<Channel> {
        InventoryClient::new(self.channel.clone())
    }

    pub(crate) fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel.clone())
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// Waits until the node plays `role`.
    pub(crate) async fn wait_role(&self, role: Role) {
        converge(
            &format!("the server at {} becomes {role:?}", self.grpc),
            || {
                let serving = self.serving.clone();
                async move { serving.role() == role }
            },
        )
        .await;
    }

    /// Stops the server gracefully (it releases the lease last).
    pub(crate) async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().expect("server stops cleanly");
        }
    }
}

/// Waits for `done` to hold, checking every 20 ms, for at most [`NEVER`].
pub(crate) async fn converge<F, Fut>(what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + NEVER;
    while Instant::now() < deadline {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never converged: {what}");
}

async fn server_info(url: &str) -> Result<pb::ServerInfo, tonic::Status> {
    let channel = Channel::from_shared(url.to_string())
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    AdminClient::new(channel)
        .get_server_info(pb::GetServerInfoRequest {})
        .await
        .map(|r| r.into_inner())
}

/// How long after `since` the server behind `inventory` first
/// acknowledged a reservation of `order_id` (sent again on every
/// `UNAVAILABLE`, every 10 ms): the failover time.
async fn first_write_after(
    since: Instant,
    mut inventory: InventoryClient<Channel>,
    order_id: &str,
) -> Duration {
    loop {
        match inventory.reserve(order(order_id, 1, 0)).await {
            Ok(_) => return since.elapsed(),
            Err(s) if s.code() == Code::Unavailable => {
                assert!(since.elapsed() < NEVER, "the standby never took over");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(s) => panic!("unexpected {s:?}"),
        }
    }
}

/// Waits until the (standby) server at `url` reports the successor's epoch.
async fn wait_for_successor(url: &str, epoch: u64) {
    converge(&format!("{url} sees epoch {epoch} held"), || async {
        server_info(url)
            .await
            .is_ok_and(|i| i.role == "standby" && i.leader_epoch == epoch)
    })
    .await;
}

fn order(order_id: &str, quantity: i64, hold_seconds: u32) -> pb::ReserveRequest {
    pb::ReserveRequest {
        channel: "shopify".into(),
        order_id: order_id.into(),
        lines: vec![line("HOT", quantity)],
        hold_seconds,
        ..Default::default()
    }
}

fn count(on_hand: i64) -> pb::SetStockRequest {
    pb::SetStockRequest {
        sku: "HOT".into(),
        warehouse: "WH-EAST".into(),
        on_hand,
        reason: "count".into(),
        ..Default::default()
    }
}

/// A connection to the test database itself, to look at what was stored.
pub(crate) async fn look(db: &TestDb) -> PgConnection {
    PgConnection::connect(&db.url).await.unwrap()
}

/// Order ids of the stored reservations of shopify, with their status.
pub(crate) async fn stored_orders(db: &TestDb) -> HashMap<String, String> {
    let mut conn = look(db).await;
    sqlx::query_as::<_, (String, String)>(
        "SELECT order_id, status FROM reservations WHERE channel = 'shopify'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

/// References that have more than one ledger line of `kind`: a change
/// applied twice.
pub(crate) async fn twice_in_ledger(db: &TestDb, kind: &str) -> Vec<(String, i64)> {
    let mut conn = look(db).await;
    sqlx::query_as(
        "SELECT reference, count(*) FROM ledger WHERE kind = $1 \
         GROUP BY reference HAVING count(*) > 1",
    )
    .bind(kind)
    .fetch_all(&mut conn)
    .await
    .unwrap()
}

/// (on_hand, reserved) of HOT in WH-EAST as stored.
async fn stored_hot(db: &TestDb) -> (i64, i64) {
    let mut conn = look(db).await;
    sqlx::query_as(
        "SELECT on_hand, reserved FROM pools WHERE sku = 'HOT' AND warehouse = 'WH-EAST'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_refuses_calls_naming_its_role_but_answers_health_reflection_and_server_info() {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut active = Node::start(&db.url, short_lease()).await;
    active.wait_role(Role::Active).await;
    let standby = Node::start(&db.url, short_lease()).await;
    assert_eq!(standby.serving.role(), Role::Standby, "the lease was held");

    let refused = standby
        .inventory()
        .get_stock(pb::GetStockRequest {
            skus: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable);
    assert!(refused.message().contains("standby"), "{refused:?}");
    assert!(
        refused.message().contains(&active.grpc.to_string()),
        "it names the active server: {refused:?}"
    );
    assert_eq!(
        refused.metadata().get("stockpool-role").unwrap(),
        "standby",
        "marked, so clients move to the next server"
    );
    let refused = standby
        .admin()
        .list_rules(pb::ListRulesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "Admin too: {refused:?}");
    // The reads and the batch write of "Reading at scale" route the same way.
    let mut inventory = standby.inventory();
    let refusals = [
        inventory
            .list_reservations(pb::ListReservationsRequest::default())
            .await
            .map(|_| ()),
        inventory
            .list_movements(pb::ListMovementsRequest::default())
            .await
            .map(|_| ()),
        inventory
            .batch_set_stock(pb::BatchSetStockRequest::default())
            .await
            .map(|_| ()),
    ];
    for refused in refusals {
        assert_eq!(refused.unwrap_err().code(), Code::Unavailable);
    }

    let info = server_info(&standby.url()).await.unwrap();
    assert_eq!(
        (info.role.as_str(), info.store.as_str(), info.leader_epoch),
        ("standby", "postgres", 1)
    );
    assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    assert!(info.started_at_ms > 0);
    let info = server_info(&active.url()).await.unwrap();
    assert_eq!((info.role.as_str(), info.leader_epoch), ("active", 1));

    let readyz = http_get(standby.http, "/readyz").await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    assert!(readyz.contains("standby"), "{readyz}");
    assert!(http_get(active.http, "/readyz")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(http_get(standby.http, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    let metrics = http_get(standby.http, "/metrics").await;
    assert!(
        metrics.contains("stockpool_active"),
        "metrics are served by a standby too"
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(standby.url()).unwrap().connect_lazy(),
    );
    converge("the standby's gRPC health says NOT_SERVING", || {
        let mut health = health.clone();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "stockpool.v1.Inventory".into(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == 2)
        }
    })
    .await;
    health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("health answers on a standby");

    let mut reflection =
        tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient::new(
            Channel::from_shared(standby.url()).unwrap().connect_lazy(),
        );
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            tonic_reflection::pb::v1::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            ),
        ),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection answers on a standby")
        .into_inner();
    assert!(answers.message().await.unwrap().is_some());

    active.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_active_server_stops_the_standby_takes_over_and_a_cli_connection_to_both_follows()
{
    let Some(db) = TestDb::create().await else {
        return;
    };
    let mut first = Node::start(&db.url, short_lease()).await;
    first.wait_role(Role::Active).await;
    let mut second = Node::start(&db.url, short_lease()).await;
    // The standby first in the list: the call moves on to the active one.
    let conn = stockpool::cli::Conn::open(&format!("{},{}", second.url(), first.url()), None, None)
        .await
        .unwrap();
    let mut inventory = conn.inventory();
    inventory.set_stock(count(1000)).await.unwrap();
    inventory.reserve(order("#1", 2, 0)).await.unwrap();

    first.stop().await;
    second.wait_role(Role::Active).await;
    assert_eq!(second.serving.info().leader_epoch, 2);
    let replay = inventory
        .reserve(order("#1", 2, 0))
        .await
        .expect("the connection follows the new active server")
        .into_inner();
    assert!(replay.replayed, "the successor loaded the reservation");
    inventory.reserve(order("#2", 3, 0)).await.unwrap();
    let levels = inventory
        .get_stock(pb::GetStockRequest {
            skus: vec!["HOT".into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .levels;
    let east = levels.iter().find(|l| l.warehouse == "WH-EAST").unwrap();
    assert_eq!((east.on_hand, east.reserved), (1000, 5));
    second.stop().await;
}

/// The stall proxy holds a commit's `COMMIT` (`mode`) and then all of the
/// active server's traffic to Postgres, as a process stopped mid-commit
/// would; the standby takes over; the test then lets the traffic through.
/// Returns the old server's answer to the held reservation and whether the
/// reservation is stored; the old server has stepped down by then.
async fn hold_a_commit_past_the_lease(mode: u8) -> Option<(Result<(), Code>, bool)> {
    let db = TestDb::create().await?;
    let proxy = Proxy::start().await;
    let mut old = Node::start(&proxy.url(&db), short_lease()).await;
    old.wait_role(Role::Active).await;
    let mut new = Node::start(&db.url, short_lease()).await;
    old.inventory().set_stock(count(1000)).await.unwrap();
    // The publisher's commit of the count's level changes comes first: the
    // next COMMIT is then the reservation's.
    converge("the count's level changes are stored", || async {
        let mut conn = look(&db).await;
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM channel_events WHERE sku = 'HOT'")
            .fetch_one(&mut conn)
            .await
            .unwrap()
            > 0
    })
    .await;

    proxy
        .next_commit
        .store(mode, std::sync::atomic::Ordering::SeqCst);
    let mut inventory = old.inventory();
    let held = tokio::spawn(async move {
        inventory
            .reserve(order("held-1", 1, 0))
            .await
            .map(|_| ())
            .map_err(|s| s.code())
    });
    new.wait_role(Role::Active).await;
    new.inventory()
        .reserve(order("new-1", 1, 0))
        .await
        .expect("the successor commits");
    proxy.resume();
    let answer = tokio::time::timeout(NEVER, held)
        .await
        .expect("the held call is answered once the traffic flows")
        .unwrap();
    old.wait_role(Role::Standby).await;
    let stored = stored_orders(&db).await.contains_key("held-1");
    assert!(
        new.inventory()
            .get_reservation(pb::GetReservationRequest {
                channel: "shopify".into(),
                order_id: "held-1".into(),
            })
            .await
            .is_ok()
            == stored,
        "the successor's memory holds what is stored"
    );
    old.stop().await;
    new.stop().await;
    Some((answer, stored))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_held_open_past_the_lease_is_ended_by_the_database_and_never_lands() {
    let Some((answer, stored)) = hold_a_commit_past_the_lease(STALL_BEFORE).await else {
        return;
    };
    assert_eq!(
        answer,
        Err(Code::Unavailable),
        "the old server acknowledges nothing"
    );
    assert!(
        !stored,
        "its transaction was ended before the takeover went through"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_landed_before_the_takeover_is_on_the_successor_whatever_the_old_server_answers(
) {
    let Some((answer, stored)) = hold_a_commit_past_the_lease(STALL_AFTER).await else {
        return;
    };
    assert!(
        stored,
        "it committed before the takeover: the successor loaded it"
    );
    eprintln!(
        "the old server answered the commit it made before its successor took over: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_cut_off_from_postgres_is_isolated_while_the_standby_takes_over_and_steps_down_without_committing_when_the_cut_heals(
) {
    let Some(db) = TestDb::create().await else {
        return;
    };
    // The production timings: this test measures the failover.
    let lease = LeaseTimings::default();
    let proxy = Proxy::start().await;
    let mut old = Node::start(&proxy.url(&db), lease).await;
    old.wait_role(Role::Active).await;
    let mut new = Node::start(&db.url, lease).await;
    old.inventory().set_stock(count(1000)).await.unwrap();
    old.inventory()
        .reserve(order("before", 1, 0))
        .await
        .unwrap();
    let before = hot_reads(&old).await;

    proxy.stall();
    let cut = Instant::now();
    let mut during = old.inventory();
    let refused = tokio::spawn(async move { during.reserve(order("during", 1, 0)).await });
    let took_over = first_write_after(cut, new.inventory(), "after").await;
    eprintln!(
        "failover after a cut from Postgres: first acknowledged write on the new active {} ms after the cut (lease {} ms)",
        took_over.as_millis(),
        lease.ttl.as_millis()
    );
    // Cut off, the old server cannot know it was deposed: it is isolated,
    // serves reads from its memory and refuses writes.
    old.wait_role(Role::Isolated).await;
    let readyz = http_get(old.http, "/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 503") && readyz.contains("isolated"),
        "{readyz}"
    );
    // Served from memory: that memory still holds the write whose commit
    // the cut caught ("during", refused below), until HOT is reloaded
    // once Postgres answers.
    let (levels, _) = hot_reads(&old).await;
    assert_eq!(
        levels.iter().map(|l| l.on_hand).collect::<Vec<_>>(),
        before.0.iter().map(|l| l.on_hand).collect::<Vec<_>>(),
        "reads are served from memory"
    );
    let late = old
        .inventory()
        .reserve(order("late", 1, 0))
        .await
        .expect_err("an isolated server acknowledges no write");
    assert_refused_as_isolated(&late);
    // Answered while the network is still silent: a commit waits for an
    // answer a bounded time, not until TCP gives up.
    let during = tokio::time::timeout(NEVER, refused).await.unwrap().unwrap();
    assert_eq!(during.unwrap_err().code(), Code::Unavailable);

    // The cut heals: its renewal finds the epoch taken over, and it steps
    // down without committing anything.
    proxy.resume();
    wait_for_successor(&old.url(), 2).await;
    assert_eq!(old.serving.role(), Role::Standby);
    let readyz = http_get(old.http, "/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 503") && readyz.contains("standby"),
        "{readyz}"
    );
    let refused = old
        .inventory()
        .reserve(order("later", 1, 0))
        .await
        .expect_err("a standby acknowledges no write");
    assert!(refused.message().contains("standby"), "{refused:?}");
    let stored = stored_orders(&db).await;
    assert!(stored.contains_key("before") && stored.contains_key("after"));
    for never in ["during", "late", "later"] {
        assert!(
            !stored.contains_key(never),
            "the cut-off server wrote {never}"
        );
    }

    // Healed, it is a standby like any other: it takes over when the
    // active one goes.
    new.stop().await;
    old.wait_role(Role::Active).await;
    let replay = old
        .inventory()
        .reserve(order("after", 1, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(replay.replayed, "it loaded what its successor wrote");
    assert_eq!(old.serving.info().leader_epoch, 3);
    assert_gap_free(&db).await;
    old.stop().await;
}

/// What the reads of HOT answer: its levels, and shopify's availability.
async fn hot_reads(node: &Node) -> (Vec<pb::StockLevel>, Vec<(i64, i64)>) {
    let levels = node
        .inventory()
        .get_stock(pb::GetStockRequest {
            skus: vec!["HOT".into()],
            ..Default::default()
        })
        .await
        .expect("GetStock is served")
        .into_inner()
        .levels;
    let availability = node
        .inventory()
        .get_availability(pb::GetAvailabilityRequest {
            skus: vec!["HOT".into()],
            channel: "shopify".into(),
            ..Default::default()
        })
        .await
        .expect("GetAvailability is served")
        .into_inner()
        .items
        .into_iter()
        .map(|i| (i.atp, i.published))
        .collect();
    (levels, availability)
}

/// The level of HOT a new `WatchChannelStock` of shopify starts with:
/// what the channel was last told, as stored.
async fn watched_hot(node: &Node) -> i64 {
    let mut stream = node
        .inventory()
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: "shopify".into(),
            after_seq: 0,
        })
        .await
        .expect("WatchChannelStock is served")
        .into_inner();
    loop {
        let update = tokio::time::timeout(NEVER, stream.message())
            .await
            .expect("the watch starts with the current levels")
            .expect("the watch streams")
            .expect("the watch stays open");
        if update.sku == "HOT" {
            return update.published;
        }
    }
}

/// Asserts `refused` is an isolated server's refusal of a write: nothing
/// done, the cause named, marked for clients to go elsewhere.
fn assert_refused_as_isolated(refused: &tonic::Status) {
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("isolated") && refused.message().contains("lease"),
        "it names the cause: {refused:?}"
    );
    assert_eq!(
        refused
            .metadata()
            .get("stockpool-role")
            .and_then(|v| v.to_str().ok()),
        Some("standby"),
        "marked like a standby's refusal: nothing was done"
    );
}

/// How long the hold placed just before the cut lasts: longer than the
/// lease, so it falls due while the server is isolated.
const HOLD_S: u32 = 4;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_server_cut_off_from_postgres_past_its_lease_serves_reads_refuses_writes_and_resumes_with_the_same_state_when_the_cut_heals(
) {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let proxy = Proxy::start().await;
    let mut node = Node::start(&proxy.url(&db), short_lease()).await;
    node.wait_role(Role::Active).await;
    let mut inventory = node.inventory();
    inventory.set_stock(count(1000)).await.unwrap();
    inventory
        .set_stock(pb::SetStockRequest {
            sku: "PROBE".into(),
            ..count(1000)
        })
        .await
        .unwrap();
    inventory.reserve(order("before-1", 2, 0)).await.unwrap();
    inventory.reserve(order("held-1", 3, HOLD_S)).await.unwrap();
    let hold_due = Instant::now() + Duration::from_secs(u64::from(HOLD_S));
    let before = hot_reads(&node).await;
    let published = before.1[0].1;
    converge("the channel was told HOT's level", || async {
        watched_hot(&node).await == published
    })
    .await;

    proxy.partition();
    let cut = Instant::now();
    // A write on another SKU right after the cut: how soon it is refused.
    let refused = node
        .inventory()
        .reserve(pb::ReserveRequest {
            lines: vec![line("PROBE", 1)],
            ..order("probe-1", 1, 0)
        })
        .await
        .expect_err("a write is never acknowledged without Postgres");
    let first_refusal = cut.elapsed();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    node.wait_role(Role::Isolated).await;
    let isolated_after = cut.elapsed();
    eprintln!(
        "lone server cut from Postgres: first write refused {} ms after the cut; isolated {} ms after the cut (lease {} ms)",
        first_refusal.as_millis(),
        isolated_after.as_millis(),
        short_lease().ttl.as_millis()
    );
    let info = server_info(&node.url())
        .await
        .expect("GetServerInfo is served");
    assert_eq!((info.role.as_str(), info.leader_epoch), ("isolated", 1));
    let readyz = http_get(node.http, "/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 503") && readyz.contains("isolated"),
        "{readyz}"
    );
    let health = tonic_health::pb::health_client::HealthClient::new(
        Channel::from_shared(node.url()).unwrap().connect_lazy(),
    );
    converge("the isolated server's gRPC health says NOT_SERVING", || {
        let mut health = health.clone();
        async move {
            health
                .check(tonic_health::pb::HealthCheckRequest {
                    service: "stockpool.v1.Inventory".into(),
                })
                .await
                .is_ok_and(|r| r.into_inner().status == 2)
        }
    })
    .await;
    assert_eq!(
        hot_reads(&node).await,
        before,
        "reads are served from memory"
    );
    assert_eq!(watched_hot(&node).await, published, "and so is a new watch");
    for (n, refused) in [
        inventory.reserve(order("during-1", 1, 0)).await.map(|_| ()),
        inventory.set_stock(count(50)).await.map(|_| ()),
    ]
    .into_iter()
    .enumerate()
    {
        let refused = refused.expect_err(&format!("write {n} is refused while isolated"));
        assert_refused_as_isolated(&refused);
    }
    assert_eq!(
        hot_reads(&node).await,
        before,
        "a refused write changed nothing"
    );
    // Past the hold's due time, still isolated: hold expiry waits too.
    let wait = hold_due + Duration::from_millis(500);
    if isolated_after < Duration::from_secs(u64::from(HOLD_S)) {
        tokio::time::sleep_until(wait.into()).await;
        if node.serving.role() == Role::Isolated {
            assert_eq!(
                hot_reads(&node).await,
                before,
                "no hold expires while isolated"
            );
        }
    } else {
        eprintln!("isolated only after the hold fell due: its pause is not checked");
    }

    proxy.heal();
    let healed = Instant::now();
    let resumed = first_write_after(healed, node.inventory(), "after-1").await;
    eprintln!(
        "lone server: first acknowledged write {} ms after the cut healed",
        resumed.as_millis()
    );
    assert_eq!(node.serving.role(), Role::Active);
    let info = server_info(&node.url()).await.unwrap();
    assert_eq!(
        (info.role.as_str(), info.leader_epoch),
        ("active", 1),
        "active again under the same epoch: no takeover, no reload"
    );
    // The hold expires once the background work resumes.
    converge("the hold placed before the cut expires", || async {
        let (levels, _) = hot_reads(&node).await;
        levels
            .iter()
            .find(|l| l.warehouse == "WH-EAST")
            .is_some_and(|l| l.reserved == 2 + 1)
    })
    .await;
    converge("memory and the store agree on HOT", || async {
        stored_hot(&db).await == (1000, 3)
    })
    .await;
    // Ready once the SKU of the write refused before the lease lapsed has
    // been reloaded.
    converge("the server is ready again", || async {
        http_get(node.http, "/readyz")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    let stored = stored_orders(&db).await;
    assert_eq!(
        stored.get("before-1").map(String::as_str),
        Some("CONFIRMED")
    );
    assert_eq!(stored.get("held-1").map(String::as_str), Some("EXPIRED"));
    assert_eq!(stored.get("after-1").map(String::as_str), Some("CONFIRMED"));
    assert!(
        stored
            .keys()
            .all(|k| !k.starts_with("during-") && !k.starts_with("probe-")),
        "a refused write was stored: {stored:?}"
    );
    assert!(twice_in_ledger(&db, "reserve").await.is_empty());
    let replay = node
        .inventory()
        .reserve(order("before-1", 2, 0))
        .await
        .unwrap()
        .into_inner();
    assert!(
        replay.replayed,
        "the reservation from before the cut is still known once"
    );

    // A second outage, with Postgres refusing connections (down, or
    // restarting) rather than silent: the same isolation, and the same
    // resumption.
    proxy
        .refusing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    proxy.cut_connections();
    node.wait_role(Role::Isolated).await;
    proxy
        .refusing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let healed = Instant::now();
    let resumed = first_write_after(healed, node.inventory(), "after-2").await;
    eprintln!(
        "lone server: first acknowledged write {} ms after Postgres accepted connections again",
        resumed.as_millis()
    );
    assert_eq!(
        server_info(&node.url()).await.unwrap().leader_epoch,
        1,
        "still the same epoch"
    );
    assert!(stored_orders(&db).await.contains_key("after-2"));
    assert!(twice_in_ledger(&db, "reserve").await.is_empty());
    assert_gap_free(&db).await;
    node.stop().await;
}

#[tokio::test]
async fn a_write_refused_while_isolated_changes_no_memory_reaches_no_store_and_needs_no_reload() {
    use std::sync::atomic::Ordering;
    use stockpool::domain::{ChannelCode, OrderId, Quantity, Sku, WarehouseCode};
    use stockpool::engine::{Engine, EngineError, ReserveCmd, SetCmd, SystemClock};
    use stockpool::store::{Failure, SqliteStore};

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::helpers::Flaky::new(
        SqliteStore::open(dir.path()).await.unwrap(),
    ));
    let engine = Engine::open(store.clone(), seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    let hot = Sku::parse("HOT").unwrap();
    engine
        .set_stock(SetCmd {
            sku: hot.clone(),
            warehouse: WarehouseCode::parse("WH-EAST").unwrap(),
            on_hand: 1000,
            reason: "count".into(),
            expected_version: None,
            movement_id: None,
        })
        .await
        .unwrap();
    let reserve = |id: &str| ReserveCmd {
        channel: ChannelCode::parse("shopify").unwrap(),
        order_id: OrderId::parse(id).unwrap(),
        lines: vec![(hot.clone(), Quantity::parse("quantity", 2).unwrap())],
        hold_seconds: 0,
        terms: Default::default(),
    };
    let before = engine.get_stock(std::slice::from_ref(&hot));
    let commits = store.commits.load(Ordering::SeqCst);

    store.isolated.store(true, Ordering::SeqCst);
    let refused = engine.reserve(reserve("o-1")).await.unwrap_err();
    assert!(
        matches!(&refused, EngineError::Unavailable(c)
            if c.failure() == Failure::Isolated && c.to_string().contains("isolated")),
        "{refused:?}"
    );
    assert_eq!(engine.get_stock(std::slice::from_ref(&hot)), before);
    assert!(engine.is_consistent(), "nothing waits for a reload");
    assert_eq!(
        store.commits.load(Ordering::SeqCst),
        commits,
        "nothing reached the store"
    );

    store.isolated.store(false, Ordering::SeqCst);
    engine
        .reserve(reserve("o-1"))
        .await
        .expect("writes resume once current again");
}

/// Every channel's event log numbers its entries 1, 2, 3, … without a gap
/// or a repeat, across every failover.
async fn assert_gap_free(db: &TestDb) {
    let mut conn = look(db).await;
    let logs: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT channel, count(*), count(DISTINCT seq), max(seq) FROM channel_events GROUP BY channel",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(!logs.is_empty());
    for (channel, n, distinct, max) in logs {
        assert_eq!((n, distinct), (max, max), "channel {channel}'s seqs");
    }
}

/// A `stockpool serve` process.
struct Process {
    child: tokio::process::Child,
    pid: u32,
    grpc: SocketAddr,
    http: SocketAddr,
    /// Every log line so far (JSON).
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Process {
    /// `stockpool serve` on `database_url` with the seed warehouses and
    /// `lease`; returns once it serves (active or standby).
    async fn start(database_url: &str, lease: LeaseTimings) -> Process {
        let dir = tempfile::tempdir().unwrap();
        let mut config = format!(
            "[server]\ngrpc_addr = \"127.0.0.1:0\"\nhttp_addr = \"127.0.0.1:0\"\n\
             database_url = {database_url:?}\nhold_sweep_ms = 50\nshutdown_grace_s = 1\n\
             lease_ms = {}\nlease_renew_ms = {}\nstandby_poll_ms = {}\n",
            lease.ttl.as_millis(),
            lease.renew_every.as_millis(),
            lease.poll_every.as_millis()
        );
        for w in crate::helpers::WAREHOUSES {
            config.push_str(&format!("\n[[warehouses]]\ncode = \"{w}\"\n"));
        }
        let path = dir.path().join("stockpool.toml");
        std::fs::write(&path, config).unwrap();
        Process::spawn(&["--config", path.to_str().unwrap()], dir).await
    }

    async fn spawn(args: &[&str], dir: tempfile::TempDir) -> Process {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockpool"))
            .args(["serve", "--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = child.id().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (serving_tx, serving_rx) = oneshot::channel();
        tokio::spawn({
            let log = log.clone();
            async move {
                let mut serving_tx = Some(serving_tx);
                while let Ok(Some(line)) = lines.next_line().await {
                    let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if v["fields"]["message"] == "stockpool serving" {
                        if let Some(tx) = serving_tx.take() {
                            let _ = tx.send(v["fields"].clone());
                        }
                    }
                    log.lock().unwrap().push(line);
                }
            }
        });
        let fields = tokio::time::timeout(NEVER, serving_rx)
            .await
            .expect("the server started")
            .unwrap_or_else(|_| {
                panic!(
                    "the server exited before serving: {:?}",
                    log.lock().unwrap()
                )
            });
        Process {
            child,
            pid,
            grpc: fields["grpc_addr"].as_str().unwrap().parse().unwrap(),
            http: fields["http_addr"].as_str().unwrap().parse().unwrap(),
            log,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([name, &self.pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {name}");
    }

    /// SIGSTOP, returning once every thread of the process is stopped.
    async fn pause(&self) {
        self.signal("-STOP");
        let status = format!("/proc/{}/status", self.pid);
        converge("the process is stopped", || {
            let status = status.clone();
            async move {
                std::fs::read_to_string(&status).is_ok_and(|s| {
                    s.lines()
                        .any(|l| l.starts_with("State:") && l.contains("T"))
                })
            }
        })
        .await;
    }

    fn logged(&self, message: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(message))
    }

    async fn role(&self) -> Option<String> {
        server_info(&self.url()).await.ok().map(|i| i.role)
    }

    async fn wait_role(&self, role: &str) {
        converge(
            &format!("the process {} becomes {role}", self.pid),
            || async { self.role().await.as_deref() == Some(role) },
        )
        .await;
    }
}

/// What one writer saw of one order.
#[derive(Debug, Clone)]
struct Sent {
    order_id: String,
    acked: bool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_active_process_is_killed_under_16_writers_the_standby_takes_over_and_every_acknowledged_reservation_is_there_once(
) {
    const WRITERS: usize = 16;
    const HELD: usize = 20;
    let Some(db) = TestDb::create().await else {
        return;
    };
    // The production timings: this test measures the failover.
    let lease = LeaseTimings::default();
    let mut a = Process::start(&db.url, lease).await;
    a.wait_role("active").await;
    let b = Process::start(&db.url, lease).await;
    assert_eq!(b.role().await.as_deref(), Some("standby"));
    let both = format!("{},{}", a.url(), b.url());
    let conn = stockpool::cli::Conn::open(&both, None, None).await.unwrap();
    conn.inventory().set_stock(count(1_000_000)).await.unwrap();
    // Holds that run out after the kill: the successor expires them.
    for i in 0..HELD {
        conn.inventory()
            .reserve(order(&format!("held-{i}"), 1, 2))
            .await
            .unwrap();
    }

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked_total = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let both = both.clone();
        let stop = stop.clone();
        let acked_total = acked_total.clone();
        writers.push(tokio::spawn(async move {
            let conn = stockpool::cli::Conn::open(&both, None, None).await.unwrap();
            let mut inventory = conn.inventory();
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let order_id = format!("w{w}-{i}");
                let acked = inventory.reserve(order(&order_id, 1, 0)).await.is_ok();
                if acked {
                    acked_total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                sent.push(Sent { order_id, acked });
                i += 1;
            }
            sent
        }));
    }
    converge("the writers got going", || {
        let acked_total = acked_total.clone();
        async move { acked_total.load(std::sync::atomic::Ordering::SeqCst) >= 300 }
    })
    .await;

    a.child.start_kill().unwrap();
    let killed = Instant::now();
    let _ = a.child.wait().await;
    let probe = InventoryClient::new(Channel::from_shared(b.url()).unwrap().connect_lazy());
    let took_over = first_write_after(killed, probe, "probe").await;
    let at_kill = acked_total.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!(
        "failover after SIGKILL: first acknowledged write on the new active {} ms after the kill ({at_kill} reservations acknowledged by then, {WRITERS} writers)",
        took_over.as_millis()
    );
    converge("the writers carry on on the new active server", || {
        let acked_total = acked_total.clone();
        async move { acked_total.load(std::sync::atomic::Ordering::SeqCst) >= at_kill + 300 }
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut sent = Vec::new();
    for w in writers {
        sent.extend(w.await.unwrap());
    }

    let stored = stored_orders(&db).await;
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.acked).collect();
    let missing: Vec<&str> = acked
        .iter()
        .filter(|s| !stored.contains_key(&s.order_id))
        .map(|s| s.order_id.as_str())
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    assert!(
        twice_in_ledger(&db, "reserve").await.is_empty(),
        "no reservation applied twice"
    );
    // Every unit reserved belongs to exactly one open reservation.
    converge("every hold has run out and been expired", || async {
        let stored = stored_orders(&db).await;
        (0..HELD).all(|i| stored.get(&format!("held-{i}")).map(String::as_str) == Some("EXPIRED"))
    })
    .await;
    assert!(
        twice_in_ledger(&db, "expire").await.is_empty(),
        "each hold expired once"
    );
    let stored = stored_orders(&db).await;
    let open = stored
        .values()
        .filter(|s| s.as_str() == "CONFIRMED")
        .count() as i64;
    assert_eq!(stored_hot(&db).await, (1_000_000, open));
    assert_eq!(b.role().await.as_deref(), Some("active"));
    assert_gap_free(&db).await;
    eprintln!(
        "{} orders sent, {} acknowledged, {} stored",
        sent.len(),
        acked.len(),
        stored.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_process_stopped_past_its_lease_commits_nothing_after_its_successor_took_over_and_steps_down(
) {
    let Some(db) = TestDb::create().await else {
        return;
    };
    let a = Process::start(&db.url, short_lease()).await;
    a.wait_role("active").await;
    let b = Process::start(&db.url, short_lease()).await;
    let to_a = stockpool::cli::Conn::open(&a.url(), None, None)
        .await
        .unwrap();
    to_a.inventory().set_stock(count(100_000)).await.unwrap();

    // Writers on A right up to the stop: some of their calls are in flight
    // (some commits too) when it comes.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut inventory = to_a.inventory();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let order_id = format!("pre-{w}-{i}");
                let acked = inventory.reserve(order(&order_id, 1, 0)).await.is_ok();
                sent.push(Sent { order_id, acked });
                i += 1;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.pause().await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    // Calls sent to A while it is stopped: it reads them only after SIGCONT.
    let mut after = Vec::new();
    for i in 0..10 {
        let mut inventory = to_a.inventory();
        after.push(tokio::spawn(async move {
            inventory.reserve(order(&format!("post-{i}"), 1, 0)).await
        }));
    }
    b.wait_role("active").await;
    let mut to_b = InventoryClient::new(Channel::from_shared(b.url()).unwrap().connect_lazy());
    to_b.reserve(order("successor-1", 1, 0))
        .await
        .expect("the successor commits");

    a.signal("-CONT");
    for call in after {
        let answer = tokio::time::timeout(NEVER, call).await.unwrap().unwrap();
        let refused = answer.expect_err("a call read after the takeover is never acknowledged");
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        assert!(
            refused.message().contains("standby"),
            "it names the role: {refused:?}"
        );
    }
    let mut sent = Vec::new();
    for w in writers {
        sent.extend(tokio::time::timeout(NEVER, w).await.unwrap().unwrap());
    }
    a.wait_role("standby").await;
    wait_for_successor(&a.url(), 2).await;
    let readyz = http_get(a.http, "/readyz").await;
    assert!(
        readyz.starts_with("HTTP/1.1 503") && readyz.contains("standby"),
        "{readyz}"
    );
    assert!(a.logged("stepped down to standby"));

    let stored = stored_orders(&db).await;
    for i in 0..10 {
        assert!(
            !stored.contains_key(&format!("post-{i}")),
            "post-{i} was written"
        );
    }
    for s in sent.iter().filter(|s| s.acked) {
        assert!(
            stored.contains_key(&s.order_id),
            "{} acknowledged, not stored",
            s.order_id
        );
    }
    // Nothing of A's was committed after the successor's first commit: the
    // ledger's ids follow commit order.
    let mut conn = look(&db).await;
    let (last_old, first_new): (Option<i64>, Option<i64>) = sqlx::query_as(
        "SELECT (SELECT max(id) FROM ledger WHERE reference LIKE 'shopify/pre-%' \
                   OR reference LIKE 'shopify/post-%'), \
                (SELECT min(id) FROM ledger WHERE reference = 'shopify/successor-1')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(last_old.unwrap() < first_new.unwrap());
    let acked = sent.iter().filter(|s| s.acked).count();
    eprintln!(
        "{} calls before the stop ({acked} acknowledged), 10 after: all refused",
        sent.len()
    );
    assert!(twice_in_ledger(&db, "reserve").await.is_empty());
    assert_gap_free(&db).await;
}

#[tokio::test]
async fn a_second_serve_on_one_sqlite_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let first = Process::spawn(
        &[
            "--data-dir",
            data.to_str().unwrap(),
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ],
        tempfile::tempdir().unwrap(),
    )
    .await;
    let second = tokio::process::Command::new(env!("CARGO_BIN_EXE_stockpool"))
        .args([
            "serve",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&data)
        .output()
        .await
        .unwrap();
    assert!(!second.status.success());
    let said = String::from_utf8_lossy(&second.stderr);
    assert!(
        said.contains("already using the data directory")
            && said.contains(&format!("process {}", first.pid)),
        "{said}"
    );
    assert!(first.logged("stockpool serving"));
    let info = server_info(&first.url()).await.unwrap();
    assert_eq!(
        (info.role.as_str(), info.store.as_str()),
        ("active", "sqlite")
    );
    drop(first);

    // In one process too: the directory is the server's until it stops.
    let mut config = Config::for_tests(&dir.path().join("other"));
    config.seed = seed();
    let app = Application::build(config.clone()).await.unwrap();
    let refused = Application::build(config.clone()).await.err().unwrap();
    assert!(
        format!("{refused:#}").contains("already using"),
        "{refused:#}"
    );
    drop(app);
    Application::build(config)
        .await
        .expect("free again once the first is gone");
}
