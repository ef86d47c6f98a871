//! The Odoo connection against a fake Odoo JSON-RPC server: pushes through
//! the outbox (down and back, a timeout after Odoo committed, an unknown
//! product), ops retrying the dead letter, the stock webhook and the
//! reconciliation.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stockpool::api::pb;
use stockpool::domain::{ChannelCode, WarehouseCode};
use stockpool::engine::{Engine, SetCmd, SystemClock};
use stockpool::odoo::{OdooConfig, Pusher, StockReader, WarehouseRef};
use stockpool::store::SqliteStore;
use stockpool::sync::OdooSync;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

use crate::fake_odoo::FakeOdoo;
use crate::helpers::{seed, spawn_app_with, TestApp};

const SECRET: &str = "webhook-secret-0123456789";

/// Odoo's side of the seed world: the three warehouses (one configured by
/// id, two by their Odoo code), a partner per channel, and products.
struct World {
    odoo: FakeOdoo,
    warehouses: HashMap<&'static str, i64>,
    products: HashMap<&'static str, i64>,
}

impl World {
    async fn new(products: &[&'static str]) -> World {
        let odoo = FakeOdoo::start().await;
        let warehouses = [
            ("WH-EAST", "EAST"),
            ("WH-WEST", "WEST"),
            ("WH-CENTRAL", "CENT"),
        ]
        .into_iter()
        .map(|(ours, theirs)| (ours, odoo.add_warehouse(theirs)))
        .collect();
        let products = products.iter().map(|p| (*p, odoo.add_product(p))).collect();
        World {
            odoo,
            warehouses,
            products,
        }
    }

    fn config(&self) -> OdooConfig {
        let o = &self.odoo;
        let mut c = OdooConfig::for_tests(&o.url(), o.db(), o.login(), o.api_key());
        for (channel, partner) in [("shopify", 7), ("amazon", 8), ("b2b", 9)] {
            c.partners
                .insert(ChannelCode::parse(channel).unwrap(), partner);
        }
        let wh = |c: &str| WarehouseCode::parse(c).unwrap();
        c.warehouses
            .insert(wh("WH-EAST"), WarehouseRef::Id(self.warehouses["WH-EAST"]));
        c.warehouses
            .insert(wh("WH-WEST"), WarehouseRef::Code("WEST".into()));
        c.warehouses
            .insert(wh("WH-CENTRAL"), WarehouseRef::Code("CENT".into()));
        c.webhook_secret = Some(SECRET.into());
        c
    }

    async fn app(&self, adjust: impl FnOnce(&mut OdooConfig)) -> TestApp {
        let mut odoo = self.config();
        adjust(&mut odoo);
        let mut app = spawn_app_with(|c| c.odoo = Some(odoo)).await;
        stock_up(&mut app, &["TEE", "MUG"]).await;
        app
    }

    /// The mutating calls Odoo received for one order, in order:
    /// `create`, `action_confirm`, `write <qty>`, `action_cancel`.
    fn writes_of(&self, reference: &str) -> Vec<String> {
        let Some(order) = self.odoo.order_by_ref(reference) else {
            return Vec::new();
        };
        let line_ids: Vec<i64> = order.lines.iter().map(|l| l.id).collect();
        let first_id = |args: &serde_json::Value| args[0][0].as_i64();
        self.odoo
            .writes()
            .into_iter()
            .filter_map(|c| match (c.model.as_str(), c.method.as_str()) {
                ("sale.order", "create")
                    if c.args[0]["client_order_ref"].as_str() == Some(reference) =>
                {
                    Some("create".to_string())
                }
                ("sale.order", m) if first_id(&c.args) == Some(order.id) => Some(m.to_string()),
                ("sale.order.line", "write")
                    if first_id(&c.args).is_some_and(|id| line_ids.contains(&id)) =>
                {
                    Some(format!("write {}", c.args[1]["product_uom_qty"]))
                }
                _ => None,
            })
            .collect()
    }
}

/// 10 units of each SKU in WH-EAST, where shopify and amazon ship from
/// first, and 100 in WH-CENTRAL, which covers b2b's fence of 100.
async fn stock_up(app: &mut TestApp, skus: &[&str]) {
    for sku in skus {
        app.set_stock(sku, "WH-EAST", 10).await;
        app.set_stock(sku, "WH-CENTRAL", 100).await;
    }
}

async fn outbox(app: &mut TestApp, state: pb::OutboxState) -> Vec<pb::OutboxEntry> {
    app.admin
        .list_outbox(pb::ListOutboxRequest {
            state: state as i32,
            after_id: 0,
            limit: 1000,
        })
        .await
        .expect("list outbox")
        .into_inner()
        .entries
}

/// Polls the outbox until `done` holds (at most 30 s).
async fn wait_for(
    app: &mut TestApp,
    what: &str,
    done: impl Fn(&[pb::OutboxEntry]) -> bool,
) -> Vec<pb::OutboxEntry> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = outbox(app, pb::OutboxState::Unspecified).await;
        if done(&all) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn all_pushed(entries: &[pb::OutboxEntry]) -> bool {
    !entries.is_empty()
        && entries
            .iter()
            .all(|e| e.state == pb::OutboxState::Pushed as i32)
}

async fn release(app: &mut TestApp, channel: &str, order: &str, lines: Vec<pb::Line>) {
    app.inventory
        .release(pb::ReleaseRequest {
            channel: channel.into(),
            order_id: order.into(),
            lines,
            reason: "customer cancelled".into(),
        })
        .await
        .expect("release");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_odoo_is_down_reservations_go_on_and_every_push_arrives_once_in_order_when_it_is_back(
) {
    let world = World::new(&["TEE", "MUG"]).await;
    let mut app = world
        .app(|c| {
            c.max_attempts = 10_000;
            c.backoff_max = Duration::from_millis(100);
        })
        .await;
    world.odoo.set_down(true);

    // Every kind of change, all while Odoo is down.
    app.reserve("shopify", "1001", &[("TEE", 3)], 0)
        .await
        .expect("confirmed at once");
    app.reserve("amazon", "A-1", &[("TEE", 2)], 600)
        .await
        .expect("held");
    app.inventory
        .confirm(pb::ConfirmRequest {
            channel: "amazon".into(),
            order_id: "A-1".into(),
        })
        .await
        .expect("confirm");
    app.reserve("shopify", "1002", &[("TEE", 2), ("MUG", 1)], 0)
        .await
        .expect("two lines");
    release(
        &mut app,
        "shopify",
        "1002",
        vec![crate::helpers::line("TEE", 1)],
    )
    .await;
    app.reserve("shopify", "1003", &[("TEE", 1)], 0)
        .await
        .expect("to be cancelled");
    release(&mut app, "shopify", "1003", Vec::new()).await;
    app.reserve("shopify", "1004", &[("MUG", 1)], 600)
        .await
        .expect("held, never confirmed");
    release(&mut app, "shopify", "1004", Vec::new()).await;

    // Each reservation's first entry is retried; its later ones wait.
    let waiting = wait_for(&mut app, "failed attempts while Odoo is down", |all| {
        all.len() == 6 && all.iter().filter(|e| e.attempts >= 2).count() == 4
    })
    .await;
    for e in &waiting {
        assert_eq!(e.state, pb::OutboxState::Pending as i32, "{e:?}");
        if e.event == "released" {
            assert_eq!(e.attempts, 0, "waits behind its confirmation: {e:?}");
        } else {
            assert!(e.last_error.contains("503"), "{e:?}");
        }
    }
    assert!(world.odoo.orders().is_empty(), "nothing reached Odoo");

    world.odoo.set_down(false);
    let pushed = wait_for(&mut app, "every entry pushed", all_pushed).await;
    let events: Vec<(String, String)> = pushed
        .iter()
        .map(|e| (format!("{}:{}", e.channel, e.order_id), e.event.clone()))
        .collect();
    assert_eq!(
        events,
        [
            ("shopify:1001", "confirmed"),
            ("amazon:A-1", "confirmed"),
            ("shopify:1002", "confirmed"),
            ("shopify:1002", "released"),
            ("shopify:1003", "confirmed"),
            ("shopify:1003", "released"),
        ]
        .map(|(o, e)| (o.to_string(), e.to_string())),
        "a hold released before confirmation is never pushed"
    );

    assert_eq!(
        world.writes_of("shopify:1001:WH-EAST"),
        ["create", "action_confirm"]
    );
    assert_eq!(
        world.writes_of("amazon:A-1:WH-EAST"),
        ["create", "action_confirm"]
    );
    assert_eq!(
        world.writes_of("shopify:1002:WH-EAST"),
        ["create", "action_confirm", "write 1"],
        "the partial release lowers the line after the order exists"
    );
    assert_eq!(
        world.writes_of("shopify:1003:WH-EAST"),
        ["create", "action_confirm", "action_cancel"]
    );
    assert!(world.odoo.order_by_ref("shopify:1004:WH-EAST").is_none());
    for reference in [
        "shopify:1001:WH-EAST",
        "amazon:A-1:WH-EAST",
        "shopify:1002:WH-EAST",
    ] {
        assert_eq!(world.odoo.creates_of(reference), 1, "{reference}");
    }

    let order = world.odoo.order_by_ref("shopify:1002:WH-EAST").unwrap();
    assert_eq!(
        (order.partner_id, order.warehouse_id),
        (7, world.warehouses["WH-EAST"])
    );
    assert_eq!(order.state, "sale");
    let mut lines: Vec<(i64, f64)> = order.lines.iter().map(|l| (l.product_id, l.qty)).collect();
    lines.sort_by_key(|l| l.0);
    let mut want = vec![(world.products["TEE"], 1.0), (world.products["MUG"], 1.0)];
    want.sort_by_key(|l| l.0);
    assert_eq!(lines, want);
    assert_eq!(
        world
            .odoo
            .order_by_ref("amazon:A-1:WH-EAST")
            .unwrap()
            .partner_id,
        8
    );
    assert_eq!(
        world
            .odoo
            .order_by_ref("shopify:1003:WH-EAST")
            .unwrap()
            .state,
        "cancel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_after_odoo_created_the_order_does_not_create_it_twice() {
    let world = World::new(&["TEE"]).await;
    let mut app = world.app(|c| c.timeout = Duration::from_millis(300)).await;
    world
        .odoo
        .delay_after_commit("sale.order", "create", Duration::from_secs(2));

    app.reserve("shopify", "2001", &[("TEE", 4)], 0)
        .await
        .unwrap();
    let pushed = wait_for(&mut app, "the entry pushed", all_pushed).await;

    assert_eq!(pushed.len(), 1);
    assert_eq!(
        pushed[0].attempts, 2,
        "the first attempt timed out: {pushed:#?}"
    );
    assert_eq!(world.odoo.creates_of("shopify:2001:WH-EAST"), 1);
    assert_eq!(
        world.writes_of("shopify:2001:WH-EAST"),
        ["create", "action_confirm"],
        "the retry found the order and only confirmed it"
    );
    assert_eq!(
        world
            .odoo
            .order_by_ref("shopify:2001:WH-EAST")
            .unwrap()
            .state,
        "sale"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sku_odoo_does_not_know_is_dead_lettered_at_once_and_pushed_when_ops_retry_it() {
    let world = World::new(&["TEE"]).await;
    let mut app = world.app(|_| {}).await;
    stock_up(&mut app, &["GHOST"]).await;

    app.reserve("shopify", "3001", &[("GHOST", 1)], 0)
        .await
        .unwrap();
    let dead = wait_for(&mut app, "a dead letter", |all| {
        all.first()
            .is_some_and(|e| e.state == pb::OutboxState::Dead as i32)
    })
    .await;
    assert_eq!(
        dead[0].attempts, 1,
        "no retry for a product Odoo does not know"
    );
    assert!(
        dead[0]
            .last_error
            .contains("no product with internal reference GHOST"),
        "{}",
        dead[0].last_error
    );
    assert_eq!(outbox(&mut app, pb::OutboxState::Dead).await.len(), 1);
    assert!(world.odoo.order_by_ref("shopify:3001:WH-EAST").is_none());

    // Refused retries change nothing.
    let refused = |r: Result<tonic::Response<pb::RetryOutboxResponse>, tonic::Status>| {
        r.expect_err("refused")
    };
    let e = refused(
        app.admin
            .retry_outbox(pb::RetryOutboxRequest { ids: vec![] })
            .await,
    );
    assert_eq!(e.code(), Code::InvalidArgument);
    let e = refused(
        app.admin
            .retry_outbox(pb::RetryOutboxRequest {
                ids: vec![dead[0].id, 999_999],
            })
            .await,
    );
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("999999"), "{}", e.message());
    assert_eq!(
        outbox(&mut app, pb::OutboxState::Dead).await.len(),
        1,
        "all or nothing"
    );

    // Ops fix the product in Odoo and retry.
    world.odoo.add_product("GHOST");
    let retried = app
        .admin
        .retry_outbox(pb::RetryOutboxRequest {
            ids: vec![dead[0].id],
        })
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(
        (retried[0].state, retried[0].attempts),
        (pb::OutboxState::Pending as i32, 0)
    );
    let pushed = wait_for(&mut app, "the retried entry pushed", all_pushed).await;
    assert_eq!(pushed[0].last_error, "");
    assert_eq!(world.odoo.creates_of("shopify:3001:WH-EAST"), 1);

    let e = refused(
        app.admin
            .retry_outbox(pb::RetryOutboxRequest {
                ids: vec![dead[0].id],
            })
            .await,
    );
    assert_eq!(e.code(), Code::FailedPrecondition, "already pushed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_odoo_configured_no_outbox_entry_is_written() {
    let mut app = spawn_app_with(|_| {}).await;
    stock_up(&mut app, &["TEE"]).await;
    app.reserve("shopify", "4001", &[("TEE", 1)], 0)
        .await
        .unwrap();
    assert!(outbox(&mut app, pb::OutboxState::Unspecified)
        .await
        .is_empty());
}

/// POSTs `body` to the HTTP port; the status code and the body.
async fn post(app: &TestApp, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(app.http_addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn quant_notification(world: &World, product: &str) -> String {
    serde_json::json!({
        "_action": "Send Webhook Notification(#42)",
        "_id": 1,
        "_model": "stock.quant",
        "product_id": world.products[product],
        "location_id": 8,
        "quantity": 1.0,
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_with_a_wrong_or_missing_secret_is_refused_and_changes_nothing() {
    let world = World::new(&["TEE"]).await;
    let mut app = world.app(|_| {}).await;
    world
        .odoo
        .set_quant(world.products["TEE"], world.warehouses["WH-EAST"], 2.0, 0.0);
    let before = app.fingerprint().await;
    let body = quant_notification(&world, "TEE");

    for (path, headers) in [
        ("/odoo/webhook?secret=wrong-secret-0123456789", vec![]),
        ("/odoo/webhook", vec![]),
        (
            "/odoo/webhook",
            vec![("X-Stockpool-Secret", "wrong-secret-0123456789")],
        ),
        ("/odoo/webhook?secret=", vec![]),
    ] {
        let (status, answer) = post(&app, path, &headers, &body).await;
        assert_eq!(status, 401, "{path} {headers:?}: {answer}");
        assert!(answer.contains("wrong secret"), "{answer}");
    }
    assert_eq!(app.fingerprint().await, before);
    assert!(
        world.odoo.calls().iter().all(|c| c.model != "stock.quant"),
        "Odoo is not even asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_sets_each_warehouse_to_the_count_odoo_holds_for_the_product() {
    let world = World::new(&["TEE", "MUG"]).await;
    let mut app = world.app(|_| {}).await;
    let tee = world.products["TEE"];
    world
        .odoo
        .set_quant(tee, world.warehouses["WH-EAST"], 7.0, 1.0);
    world
        .odoo
        .set_quant(tee, world.warehouses["WH-CENTRAL"], 2.5, 0.0);
    // WH-WEST has no quant left in Odoo: 0 there.
    app.set_stock("TEE", "WH-WEST", 10).await;
    let mug_before = app.stock(&["MUG"]).await;

    let path = format!("/odoo/webhook?secret={SECRET}");
    let (status, answer) = post(&app, &path, &[], &quant_notification(&world, "TEE")).await;
    assert_eq!(status, 200, "{answer}");
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["sku"], "TEE");

    let levels: HashMap<String, i64> = app
        .stock(&["TEE"])
        .await
        .into_iter()
        .map(|l| (l.warehouse, l.on_hand))
        .collect();
    assert_eq!(levels["WH-EAST"], 7);
    assert_eq!(levels["WH-WEST"], 0);
    assert_eq!(levels["WH-CENTRAL"], 2, "a fraction is rounded down");
    assert_eq!(
        app.stock(&["MUG"]).await,
        mug_before,
        "other products are left alone"
    );

    // The same notification again (or a late one) changes nothing more.
    let before = app.fingerprint().await;
    let headers = [("X-Stockpool-Secret", SECRET)];
    let (status, _) = post(
        &app,
        "/odoo/webhook",
        &headers,
        &quant_notification(&world, "TEE"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(app.fingerprint().await, before);

    let (status, answer) = post(&app, &path, &[], r#"{"_model":"res.partner","_id":3}"#).await;
    assert_eq!(status, 422, "{answer}");
    assert!(answer.contains("stock.quant"), "{answer}");
    let (status, _) = post(&app, &path, &[], "not json").await;
    assert_eq!(status, 400);
    assert_eq!(app.fingerprint().await, before);
}

/// An engine over its own SQLite file with the seed world and `stock`
/// (SKU, warehouse, on_hand) set.
async fn engine_with(dir: &std::path::Path, stock: &[(&str, &str, i64)]) -> Engine {
    let store = SqliteStore::open(dir).await.unwrap();
    engine_over(Arc::new(store), stock).await
}

/// An engine over `store` with the seed world and `stock` set.
async fn engine_over(
    store: Arc<dyn stockpool::store::Store>,
    stock: &[(&str, &str, i64)],
) -> Engine {
    let engine = Engine::open(store, seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    for (sku, warehouse, on_hand) in stock {
        engine
            .set_stock(SetCmd {
                sku: stockpool::domain::Sku::parse(*sku).unwrap(),
                warehouse: WarehouseCode::parse(*warehouse).unwrap(),
                on_hand: *on_hand,
                reason: "test".into(),
                expected_version: None,
                movement_id: None,
            })
            .await
            .unwrap();
    }
    engine
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_reports_drift_and_corrects_on_hand_only_when_configured() {
    let world = World::new(&["TEE", "MUG"]).await;
    let (tee, mug) = (world.products["TEE"], world.products["MUG"]);
    world
        .odoo
        .set_quant(tee, world.warehouses["WH-EAST"], 10.0, 0.0);
    world
        .odoo
        .set_quant(tee, world.warehouses["WH-WEST"], 6.0, 2.0);
    world
        .odoo
        .set_quant(mug, world.warehouses["WH-CENTRAL"], 4.0, 0.0);
    let stock = [
        ("TEE", "WH-EAST", 10),  // agrees
        ("TEE", "WH-WEST", 8),   // Odoo counted 6
        ("MUG", "WH-EAST", 3),   // Odoo has none there
        ("LOCAL", "WH-EAST", 2), // Odoo does not know the product
    ];
    let config = world.config();
    for correct in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let engine = engine_with(dir.path(), &stock).await;
        let pusher = Arc::new(Pusher::new(&config).unwrap());
        let sync = OdooSync::new(engine.clone(), StockReader::new(pusher), None, correct);

        let drift = sync.reconcile().await.unwrap();
        let mut differing: Vec<(String, String, i64, i64)> = drift
            .differing
            .iter()
            .map(|c| (c.sku.clone(), c.warehouse.clone(), c.before, c.after))
            .collect();
        differing.sort();
        assert_eq!(
            differing,
            vec![
                ("MUG".into(), "WH-CENTRAL".into(), 0, 4),
                ("MUG".into(), "WH-EAST".into(), 3, 0),
                ("TEE".into(), "WH-WEST".into(), 8, 6),
            ]
        );
        assert_eq!(drift.unknown_in_odoo, vec!["LOCAL".to_string()]);
        assert_eq!(drift.compared, 4);

        let on_hand = |sku: &str, warehouse: &str| {
            engine
                .get_stock(&[stockpool::domain::Sku::parse(sku).unwrap()])
                .into_iter()
                .find(|l| l.warehouse.as_str() == warehouse)
                .map_or(0, |l| l.pool.on_hand)
        };
        if correct {
            assert_eq!(
                [
                    on_hand("TEE", "WH-WEST"),
                    on_hand("MUG", "WH-EAST"),
                    on_hand("MUG", "WH-CENTRAL")
                ],
                [6, 0, 4]
            );
            let again = sync.reconcile().await.unwrap();
            assert!(again.differing.is_empty(), "{again:?}");
        } else {
            assert_eq!(
                [
                    on_hand("TEE", "WH-WEST"),
                    on_hand("MUG", "WH-EAST"),
                    on_hand("MUG", "WH-CENTRAL")
                ],
                [8, 3, 0],
                "reporting only changes nothing"
            );
        }
        assert_eq!(on_hand("LOCAL", "WH-EAST"), 2);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_the_outbox_survives_a_restart_while_odoo_is_down() {
    let Some(db) = crate::postgres::pg::TestDb::create().await else {
        return;
    };
    let world = World::new(&["TEE"]).await;
    let mut odoo = world.config();
    odoo.max_attempts = 10_000;
    let url = db.url.clone();
    let mut app = spawn_app_with(move |c| {
        c.store = stockpool::config::StoreConfig::Postgres { url };
        c.odoo = Some(odoo);
    })
    .await;
    stock_up(&mut app, &["TEE"]).await;
    world.odoo.set_down(true);
    app.reserve("shopify", "5001", &[("TEE", 2)], 0)
        .await
        .unwrap();
    app.reserve("amazon", "A-5", &[("TEE", 1)], 0)
        .await
        .unwrap();
    release(
        &mut app,
        "shopify",
        "5001",
        vec![crate::helpers::line("TEE", 1)],
    )
    .await;
    wait_for(&mut app, "a failed attempt", |all| {
        all.iter().any(|e| e.attempts >= 1)
    })
    .await;

    app.restart().await;
    world.odoo.set_down(false);
    let pushed = wait_for(&mut app, "every entry pushed after the restart", all_pushed).await;
    assert_eq!(pushed.len(), 3);
    assert_eq!(
        world.writes_of("shopify:5001:WH-EAST"),
        ["create", "action_confirm", "write 1"]
    );
    assert_eq!(
        world.writes_of("amazon:A-5:WH-EAST"),
        ["create", "action_confirm"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reservation_whose_commit_fails_leaves_no_outbox_entry_and_its_retry_leaves_one() {
    use std::sync::atomic::Ordering;
    use stockpool::domain::{OrderId, Quantity, Sku};
    use stockpool::engine::ReserveCmd;

    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(crate::helpers::Flaky::new(
        SqliteStore::open(dir.path()).await.unwrap(),
    ));
    let engine = engine_over(
        store.clone(),
        &[("TEE", "WH-EAST", 10), ("TEE", "WH-CENTRAL", 100)],
    )
    .await;
    engine.enable_outbox();
    let order = || ReserveCmd {
        channel: ChannelCode::parse("shopify").unwrap(),
        order_id: OrderId::parse("6001").unwrap(),
        lines: vec![(
            Sku::parse("TEE").unwrap(),
            Quantity::parse("quantity", 2).unwrap(),
        )],
        hold_seconds: 0,
        terms: Default::default(),
    };

    store.fail_once.store(true, Ordering::SeqCst);
    engine.reserve(order()).await.expect_err("the commit fails");
    assert!(engine.outbox_list(None, 0, 100).await.unwrap().is_empty());

    while !engine.is_consistent() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.reserve(order()).await.expect("the retry commits");
    let entries = engine.outbox_list(None, 0, 100).await.unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].entry.lines[0].ordered, 2);
}
