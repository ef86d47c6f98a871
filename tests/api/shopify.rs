//! The Shopify adapter against a real server and the strict fake Shopify
//! (`tests/support/fake_shopify.rs`): orders in by webhook, levels out by
//! GraphQL, nothing oversold in between.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use stockpool::adapters::shopify::{self, Running, ShopifyConfig};
use stockpool::adapters::Upstream;
use stockpool::api::pb;
use tempfile::TempDir;

use crate::fake_shopify::{deliver, post_raw, FakeShopify, Level, LOCATION, SECRET, TOKEN};
use crate::helpers::{free_port, spawn_app, AdapterProcess, TestApp};

/// The server, the fake shop, and the adapter between them.
struct Rig {
    app: TestApp,
    fake: FakeShopify,
    adapter: Option<Running>,
    dir: TempDir,
    hook_ids: AtomicU64,
}

/// The adapter's file for the rig; keys in `extra` replace the defaults.
fn config_text(fake: &FakeShopify, dir: &std::path::Path, extra: &str) -> String {
    let base = format!(
        "shop = \"demo.myshopify.com\"\nadmin_url = \"{}\"\nlocation_id = \"{LOCATION}\"\n\
         webhook_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\
         reconcile_interval_s = 0\nmax_backoff_ms = 500\ntimeout_ms = 2000\n",
        fake.url(),
        dir.join("adapter").display()
    );
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = extra.lines().map(key).collect();
    let kept: String = base
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    kept + extra
}

impl Rig {
    /// `skus` with their on-hand in WH-WEST, a Shopify variant each;
    /// shopify's rule keeps a buffer of `buffer`; the adapter started.
    async fn start(skus: &[(&str, i64)], buffer: i64, fake: FakeShopify) -> Rig {
        let mut app = spawn_app().await;
        put_rule(&mut app, "shopify", vec!["WH-WEST"], buffer).await;
        put_rule(&mut app, "b2b", vec!["WH-WEST"], 0).await;
        for (sku, n) in skus {
            app.set_stock(sku, "WH-WEST", *n).await;
            fake.add_variant(sku);
        }
        let dir = tempfile::tempdir().unwrap();
        let mut rig = Rig {
            app,
            fake,
            adapter: None,
            dir,
            hook_ids: AtomicU64::new(1),
        };
        rig.start_adapter().await;
        rig
    }

    async fn start_adapter(&mut self) {
        self.start_adapter_with("").await;
    }

    async fn start_adapter_with(&mut self, extra: &str) {
        let text = config_text(&self.fake, self.dir.path(), extra);
        let config = ShopifyConfig::parse(&text, Some(SECRET.into()), Some(TOKEN.into())).unwrap();
        let running = shopify::start(config, Upstream::new(&self.app.grpc_url, None, None))
            .await
            .expect("adapter starts");
        self.adapter = Some(running);
    }

    fn hooks(&self) -> SocketAddr {
        self.adapter.as_ref().unwrap().webhook_addr
    }

    fn metrics(&self) -> SocketAddr {
        self.adapter.as_ref().unwrap().metrics_addr
    }

    /// Delivers like Shopify: signed, a fresh webhook id, sent again on
    /// anything but 2xx until accepted (bounded).
    async fn send(&self, topic: &str, body: &Value) -> u16 {
        let id = format!("wh-{}", self.hook_ids.fetch_add(1, Ordering::Relaxed));
        self.send_as(topic, body, &id).await
    }

    async fn send_as(&self, topic: &str, body: &Value, id: &str) -> u16 {
        deliver(self.hooks(), topic, body, id).await
    }

    async fn send_until_ok(&self, topic: &str, body: &Value) {
        let id = format!("wh-{}", self.hook_ids.fetch_add(1, Ordering::Relaxed));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let code = self.send_as(topic, body, &id).await;
            if code == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{topic} never accepted (last {code})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn published(&mut self, skus: &[String]) -> BTreeMap<String, (i64, i64)> {
        let items = self
            .app
            .inventory
            .get_availability(pb::GetAvailabilityRequest {
                skus: skus.to_vec(),
                channel: "shopify".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        items
            .into_iter()
            .map(|i| (i.sku, (i.published, i.atp)))
            .collect()
    }

    /// Waits (at most `within`) until Shopify's available equals
    /// stockpool's published for every SKU.
    async fn converged(&mut self, skus: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let published = self.published(skus).await;
            let wrong: Vec<String> = skus
                .iter()
                .filter(|s| self.fake.level(s).available != published[*s].0)
                .map(|s| {
                    format!(
                        "{s}: shopify {:?}, published {}",
                        self.fake.level(s),
                        published[s].0
                    )
                })
                .collect();
            if wrong.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not converged within {within:?}: {wrong:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn reservation(&mut self, order_id: &str) -> Option<pb::Reservation> {
        self.app
            .inventory
            .get_reservation(pb::GetReservationRequest {
                channel: "shopify".into(),
                order_id: order_id.into(),
            })
            .await
            .ok()
            .map(|r| r.into_inner())
    }

    async fn unapplied(&self) -> Vec<Value> {
        let text = crate::helpers::http_get(self.metrics(), "/unapplied").await;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("{}");
        let v: Value = serde_json::from_str(body).unwrap_or(json!({}));
        v["unapplied"].as_array().cloned().unwrap_or_default()
    }
}

async fn put_rule(app: &mut TestApp, channel: &str, warehouses: Vec<&str>, buffer: i64) {
    app.admin
        .put_rule(pb::PutRuleRequest {
            rule: Some(pb::Rule {
                channel: channel.into(),
                warehouses: warehouses.into_iter().map(String::from).collect(),
                fence: Some(0),
                buffer: Some(buffer),
                ..Default::default()
            }),
            changed_by: "test".into(),
            comment: String::new(),
        })
        .await
        .unwrap();
}

fn sum(r: &pb::Reservation, f: impl Fn(&pb::Allocation) -> i64) -> i64 {
    r.allocations.iter().map(f).sum()
}

/// A tiny deterministic generator, so a failure can be replayed.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_shopify_orders_while_other_channels_reserve_never_oversell_and_end_at_published(
) {
    let skus: Vec<String> = (0..20).map(|i| format!("SKU-{i:02}")).collect();
    let stock: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 25)).collect();
    // Shopify is shown ATP minus 5: more than the other channels take of
    // any SKU (2 each) while a level is on its way.
    let mut rig = Rig::start(&stock, 5, FakeShopify::standard().await).await;
    rig.converged(&skus, Duration::from_secs(10)).await;
    let rig = Arc::new(tokio::sync::Mutex::new(rig));
    let (hooks, fake) = {
        let r = rig.lock().await;
        (r.hooks(), r.fake.clone())
    };
    let grpc = rig.lock().await.app.grpc_url.clone();
    let done = Arc::new(AtomicBool::new(false));

    // Other channels reserve 2 units of every SKU, one at a time.
    let others = {
        let grpc = grpc.clone();
        let skus = skus.clone();
        tokio::spawn(async move {
            let mut inv = pb::inventory_client::InventoryClient::connect(grpc)
                .await
                .unwrap();
            for round in 0..2 {
                for (i, sku) in skus.iter().enumerate() {
                    let channel = if (i + round) % 2 == 0 {
                        "amazon"
                    } else {
                        "b2b"
                    };
                    inv.reserve(pb::ReserveRequest {
                        channel: channel.into(),
                        order_id: format!("{channel}-{round}-{sku}"),
                        lines: vec![crate::helpers::line(sku, 1)],
                        ..Default::default()
                    })
                    .await
                    .expect("other channels fit: no oversell");
                    tokio::time::sleep(Duration::from_millis(7)).await;
                }
            }
        })
    };

    // The sampler: Shopify's available, then stockpool's ATP, per SKU.
    let sampler = {
        let grpc = grpc.clone();
        let skus = skus.clone();
        let fake = fake.clone();
        let done = done.clone();
        tokio::spawn(async move {
            let mut inv = pb::inventory_client::InventoryClient::connect(grpc)
                .await
                .unwrap();
            let mut samples = 0;
            while !done.load(Ordering::SeqCst) {
                let shown: Vec<i64> = skus.iter().map(|s| fake.level(s).available).collect();
                let items = inv
                    .get_availability(pb::GetAvailabilityRequest {
                        skus: skus.clone(),
                        channel: "shopify".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .items;
                for (sku, shown) in skus.iter().zip(shown) {
                    let atp = items.iter().find(|i| &i.sku == sku).unwrap().atp;
                    assert!(
                        shown <= atp,
                        "{sku}: Shopify shows {shown}, stockpool would admit {atp}"
                    );
                }
                samples += 1;
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            samples
        })
    };

    // 200 storefront orders; each webhook delivered after a random delay,
    // some twice, out of order across orders.
    let mut rng = Lcg(11);
    let mut deliveries = Vec::new();
    let mut placed: Vec<(String, String, i64)> = Vec::new();
    for n in 0..200 {
        let sku = skus[rng.next(20) as usize].clone();
        let q = 1 + rng.next(2) as i64;
        let Some(order) = fake.place_order(&[(sku.as_str(), q)], "19.90") else {
            continue; // sold out on the storefront
        };
        placed.push((order["id"].to_string(), sku, q));
        let delay = Duration::from_millis(rng.next(40));
        let twice = rng.next(10) == 0;
        deliveries.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let id = format!("create-{n}");
            for attempt in 0..200 {
                if deliver(hooks, "orders/create", &order, &id).await == 200 {
                    break;
                }
                assert!(attempt < 199, "order {n} never accepted");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if twice {
                assert_eq!(
                    deliver(hooks, "orders/create", &order, &format!("{id}-again")).await,
                    200
                );
            }
        }));
        tokio::time::sleep(Duration::from_millis(rng.next(4))).await;
    }
    for d in deliveries {
        d.await.unwrap();
    }
    others.await.unwrap();
    let mut rig = rig.lock().await;
    rig.converged(&skus, Duration::from_secs(10)).await;
    done.store(true, Ordering::SeqCst);
    let samples = sampler.await.unwrap();
    assert!(samples > 10, "the sampler ran ({samples} rounds)");
    assert!(placed.len() > 150, "most orders sold: {}", placed.len());
    for (id, sku, q) in &placed {
        let r = rig
            .reservation(id)
            .await
            .expect("every Shopify order reserved");
        assert_eq!(
            (r.allocations[0].sku.as_str(), sum(&r, |a| a.quantity)),
            (sku.as_str(), *q)
        );
    }
    assert!(
        rig.unapplied().await.is_empty(),
        "no order refused by stockpool"
    );
    for level in rig.app.stock(&[]).await {
        assert!(
            level.reserved <= level.on_hand,
            "no oversell in stockpool: {level:?}"
        );
    }
}

#[tokio::test]
async fn an_order_whose_webhook_is_delayed_while_another_channel_drains_the_sku_is_never_given_back(
) {
    let mut rig = Rig::start(&[("MUG", 5)], 0, FakeShopify::standard().await).await;
    let skus = vec!["MUG".to_string()];
    rig.converged(&skus, Duration::from_secs(10)).await;
    // Shopify sells 2; the webhook is held back.
    let order = rig.fake.place_order(&[("MUG", 2)], "12.00").unwrap();
    let sold_at = Instant::now();
    assert_eq!(rig.fake.level("MUG").available, 3);
    // Amazon takes the 3 others in stockpool: published for shopify is 2.
    rig.app
        .reserve("amazon", "amz-1", &[("MUG", 3)], 0)
        .await
        .unwrap();
    let fake = rig.fake.clone();
    wait_for("the drained level written", || {
        fake.level("MUG").on_hand() == 2
    })
    .await;
    let after_drain = rig.fake.level("MUG");
    assert_eq!(
        after_drain.available, 0,
        "the 2 sold on Shopify stay subtracted: {after_drain:?}"
    );
    for w in rig.fake.writes().iter().filter(|w| w.at > sold_at) {
        assert!(
            w.available <= 0,
            "no write after the sale gave the 2 back: {w:?}"
        );
    }
    // The webhook arrives: stockpool admits it, Shopify still shows 0.
    rig.send_until_ok("orders/create", &order).await;
    let r = rig.reservation(&order["id"].to_string()).await.unwrap();
    assert_eq!(sum(&r, |a| a.quantity), 2);
    rig.converged(&skus, Duration::from_secs(10)).await;
    assert_eq!(rig.fake.level("MUG").available, 0);
    assert!(rig.unapplied().await.is_empty());
}

/// Waits (at most 10 s) for `cond`.
async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn order_json(id: u64, lines: &[(u64, &str, i64)]) -> Value {
    json!({
        "id": id, "name": format!("#{id}"), "currency": "EUR", "taxes_included": false,
        "financial_status": "paid", "cancelled_at": null, "customer": { "id": 42 },
        "line_items": lines.iter().map(|(lid, sku, q)| json!({
            "id": lid, "sku": sku, "quantity": q, "price": "10.00"
        })).collect::<Vec<_>>(),
        "refunds": [],
    })
}

#[tokio::test]
async fn a_forged_webhook_is_refused_and_changes_nothing() {
    let mut rig = Rig::start(&[("TEE", 10)], 0, FakeShopify::standard().await).await;
    let order = order_json(9001, &[(1, "TEE", 2)]);
    let body = order.to_string();
    let forged = stockpool::adapters::shopify::webhook::sign("not-the-secret", body.as_bytes());
    assert_eq!(
        post_raw(rig.hooks(), "orders/create", &body, Some(&forged), "f-1").await,
        401
    );
    assert_eq!(
        post_raw(rig.hooks(), "orders/create", &body, None, "f-2").await,
        401
    );
    // A valid signature over another body does not verify this one.
    let other = stockpool::adapters::shopify::webhook::sign(SECRET, b"{}");
    assert_eq!(
        post_raw(rig.hooks(), "orders/create", &body, Some(&other), "f-3").await,
        401
    );
    assert!(rig.reservation("9001").await.is_none(), "nothing reserved");
    let metrics = crate::helpers::http_get(rig.metrics(), "/metrics").await;
    assert!(
        metrics.contains("stockpool_adapter_webhooks_total{channel=\"shopify\",topic=\"unknown\",outcome=\"unauthorized\"} 3"),
        "{metrics}"
    );
    // The genuine delivery goes through.
    assert_eq!(rig.send("orders/create", &order).await, 200);
    assert!(rig.reservation("9001").await.is_some());
}

#[tokio::test]
async fn duplicated_and_reordered_deliveries_change_nothing() {
    let mut rig = Rig::start(
        &[("TEE", 20), ("CAP", 20)],
        0,
        FakeShopify::standard().await,
    )
    .await;

    // orders/updated before its orders/create, then the create twice.
    let a = order_json(100, &[(1, "TEE", 3), (2, "CAP", 1)]);
    assert_eq!(rig.send("orders/updated", &a).await, 200);
    assert_eq!(rig.send("orders/create", &a).await, 200);
    assert_eq!(rig.send_as("orders/create", &a, "same-id").await, 200);
    assert_eq!(rig.send_as("orders/create", &a, "same-id").await, 200);
    let r = rig.reservation("100").await.unwrap();
    assert_eq!(sum(&r, |a| a.quantity), 4, "reserved once: {r:?}");

    // A cancel delivered before the create: never reserved.
    let b = order_json(200, &[(3, "TEE", 2)]);
    let mut b_cancelled = b.clone();
    b_cancelled["cancelled_at"] = json!("2026-11-27T09:00:00Z");
    assert_eq!(rig.send("orders/cancelled", &b_cancelled).await, 200);
    assert_eq!(rig.send("orders/create", &b).await, 200);
    assert!(
        rig.reservation("200").await.is_none(),
        "a cancelled order is not reserved late"
    );

    // An edit removing one TEE, delivered twice (new ids), plus the
    // orders/updated that follows it: one unit released.
    let edit = json!({ "order_edit": { "id": 555, "order_id": 100, "line_items": {
        "additions": [], "removals": [{ "id": 1, "delta": 1 }] } } });
    assert_eq!(rig.send("orders/edited", &edit).await, 200);
    assert_eq!(rig.send("orders/edited", &edit).await, 200);
    assert_eq!(rig.send("orders/updated", &a).await, 200);
    let r = rig.reservation("100").await.unwrap();
    assert_eq!(sum(&r, |a| a.released), 1, "{r:?}");

    // An edit of an order never seen: 503 until the order arrives.
    let early = json!({ "order_edit": { "id": 556, "order_id": 300, "line_items": {
        "additions": [], "removals": [{ "id": 9, "delta": 1 }] } } });
    assert_eq!(rig.send("orders/edited", &early).await, 503);
    let c = order_json(300, &[(9, "CAP", 2)]);
    assert_eq!(rig.send("orders/create", &c).await, 200);
    assert_eq!(rig.send("orders/edited", &early).await, 200);
    let r = rig.reservation("300").await.unwrap();
    assert_eq!((sum(&r, |a| a.quantity), sum(&r, |a| a.released)), (2, 1));

    // A return refunded before its shipment reached stockpool waits; the
    // shipment delivered twice ships once; the refund twice restocks once.
    let refund = json!({ "id": 777, "order_id": 100, "refund_line_items": [
        { "id": 1, "line_item_id": 2, "quantity": 1, "restock_type": "return",
          "line_item": { "id": 2, "sku": "CAP", "quantity": 1, "price": "10.00" } }
    ]});
    assert_eq!(rig.send("refunds/create", &refund).await, 503);
    let fulfillment = json!({ "id": 888, "order_id": 100, "status": "success", "line_items": [
        { "id": 1, "sku": "TEE", "quantity": 2, "price": "10.00" },
        { "id": 2, "sku": "CAP", "quantity": 1, "price": "10.00" } ] });
    assert_eq!(rig.send("fulfillments/create", &fulfillment).await, 200);
    assert_eq!(rig.send("fulfillments/create", &fulfillment).await, 200);
    assert_eq!(rig.send("refunds/create", &refund).await, 200);
    assert_eq!(rig.send("refunds/create", &refund).await, 200);
    let r = rig.reservation("100").await.unwrap();
    assert_eq!(
        (
            sum(&r, |a| a.fulfilled),
            sum(&r, |a| a.restocked),
            sum(&r, |a| a.released)
        ),
        (3, 1, 1),
        "{r:?}"
    );
    // A refund that cancels the other CAP of order 300, twice; and a
    // no_restock refund: nothing.
    let cancel = json!({ "id": 778, "order_id": 300, "refund_line_items": [
        { "id": 2, "line_item_id": 9, "quantity": 1, "restock_type": "cancel" } ] });
    assert_eq!(rig.send("refunds/create", &cancel).await, 200);
    assert_eq!(rig.send("refunds/create", &cancel).await, 200);
    let keep = json!({ "id": 779, "order_id": 300, "refund_line_items": [
        { "id": 3, "line_item_id": 9, "quantity": 1, "restock_type": "no_restock" } ] });
    assert_eq!(rig.send("refunds/create", &keep).await, 200);
    let r = rig.reservation("300").await.unwrap();
    assert_eq!(
        (sum(&r, |a| a.released), sum(&r, |a| a.restocked)),
        (2, 0),
        "{r:?}"
    );

    // A line without a SKU is listed for ops; the rest is reserved.
    let d = order_json(400, &[(11, "", 1), (12, "TEE", 1)]);
    assert_eq!(rig.send("orders/create", &d).await, 200);
    assert_eq!(
        sum(&rig.reservation("400").await.unwrap(), |a| a.quantity),
        1
    );
    let listed = rig.unapplied().await;
    assert!(
        listed
            .iter()
            .any(|u| u["reference"] == "400" && u["reason"].as_str().unwrap().contains("no SKU")),
        "{listed:?}"
    );
    // An order stockpool refuses for stock: 200, listed, nothing changes.
    let e = order_json(500, &[(13, "TEE", 500)]);
    assert_eq!(rig.send("orders/create", &e).await, 200);
    assert!(rig.reservation("500").await.is_none());
    assert!(rig
        .unapplied()
        .await
        .iter()
        .any(|u| u["reference"] == "500"));
}

#[tokio::test]
async fn stockpool_unreachable_is_503_and_the_retry_applies_it() {
    let mut rig = Rig::start(&[("TEE", 10)], 0, FakeShopify::standard().await).await;
    rig.adapter.take().unwrap().stop().await;
    // The same adapter state, its stockpool out of reach.
    let text = config_text(&rig.fake, rig.dir.path(), "");
    let config = ShopifyConfig::parse(&text, Some(SECRET.into()), Some(TOKEN.into())).unwrap();
    let nowhere = format!("http://127.0.0.1:{}", free_port());
    rig.adapter = Some(
        shopify::start(config, Upstream::new(&nowhere, None, None))
            .await
            .unwrap(),
    );
    let order = order_json(600, &[(1, "TEE", 1)]);
    assert_eq!(
        rig.send("orders/create", &order).await,
        503,
        "not applied: Shopify must retry"
    );
    let ready = crate::helpers::http_get(rig.metrics(), "/readyz").await;
    assert!(ready.contains("503") && ready.contains("stream"), "{ready}");
    rig.adapter.take().unwrap().stop().await;
    rig.start_adapter().await;
    rig.send_until_ok("orders/create", &order).await;
    assert!(rig.reservation("600").await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_shop_still_converges_without_a_call_over_budget_after_the_first_throttle() {
    let fake = FakeShopify::start(50.0, 5.0).await;
    fake.drain();
    let skus: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
    let mut rig = Rig::start(&[("A", 10), ("B", 10), ("C", 10)], 0, fake).await;
    rig.converged(&skus, Duration::from_secs(30)).await;
    for (i, sku) in skus.iter().enumerate() {
        rig.app
            .reserve("amazon", &format!("t-{i}"), &[(sku, 2)], 0)
            .await
            .unwrap();
    }
    rig.converged(&skus, Duration::from_secs(30)).await;
    let calls = rig.fake.calls();
    let first = calls
        .iter()
        .position(|c| c.over_budget)
        .expect("the drained bucket throttled a call");
    let later: Vec<_> = calls[first + 1..]
        .iter()
        .filter(|c| c.over_budget)
        .collect();
    assert!(
        later.is_empty(),
        "calls over budget after the first THROTTLED: {later:?} of {calls:?}"
    );
    let metrics = crate::helpers::http_get(rig.metrics(), "/metrics").await;
    assert!(
        metrics.contains("stockpool_adapter_throttles_total{channel=\"shopify\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shopify_down_for_30_seconds_slows_no_reservation_and_every_sku_is_right_within_10_seconds_of_its_return(
) {
    let skus: Vec<String> = (0..10).map(|i| format!("D-{i}")).collect();
    let stock: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 50)).collect();
    let mut rig = Rig::start(&stock, 0, FakeShopify::standard().await).await;
    rig.converged(&skus, Duration::from_secs(10)).await;
    rig.fake.set_down(true);
    let down_at = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut n = 0;
    while down_at.elapsed() < Duration::from_secs(30) {
        let sku = skus[n % skus.len()].clone();
        let started = Instant::now();
        rig.app
            .reserve("amazon", &format!("down-{n}"), &[(&sku, 1)], 0)
            .await
            .unwrap();
        slowest = slowest.max(started.elapsed());
        n += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rig.fake.set_down(false);
    let back = Instant::now();
    rig.converged(&skus, Duration::from_secs(10)).await;
    eprintln!("{n} reservations while Shopify was down, slowest {slowest:?}; converged {:?} after its return", back.elapsed());
    assert!(
        slowest < Duration::from_secs(2),
        "a reservation waited on Shopify: {slowest:?}"
    );
    let metrics = crate::helpers::http_get(rig.metrics(), "/metrics").await;
    assert!(
        !metrics.contains("stockpool_adapter_channel_errors_total{channel=\"shopify\"} 0"),
        "the outage was seen"
    );
}

fn spawn_adapter(grpc: &str, config: &std::path::Path) -> AdapterProcess {
    AdapterProcess::spawn(
        grpc,
        "shopify",
        config,
        &[
            ("STOCKPOOL_SHOPIFY_CLIENT_SECRET", SECRET),
            ("STOCKPOOL_SHOPIFY_ACCESS_TOKEN", TOKEN),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_killed_with_sigkill_and_restarted_misses_nothing_and_applies_nothing_twice() {
    let skus: Vec<String> = (0..5).map(|i| format!("K-{i}")).collect();
    let stock: Vec<(&str, i64)> = skus.iter().map(|s| (s.as_str(), 40)).collect();
    let fake = FakeShopify::standard().await;
    let mut app = spawn_app().await;
    put_rule(&mut app, "shopify", vec!["WH-WEST"], 0).await;
    for (sku, n) in &stock {
        app.set_stock(sku, "WH-WEST", *n).await;
        fake.add_variant(sku);
    }
    let dir = tempfile::tempdir().unwrap();
    let hooks: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let text = config_text(&fake, dir.path(), "")
        .replace(
            "webhook_addr = \"127.0.0.1:0\"",
            &format!("webhook_addr = \"{hooks}\""),
        )
        .replace(
            "metrics_addr = \"127.0.0.1:0\"",
            &format!("metrics_addr = \"127.0.0.1:{}\"", free_port()),
        );
    let path = dir.path().join("shopify.toml");
    std::fs::write(&path, text).unwrap();
    let mut adapter = spawn_adapter(&app.grpc_url, &path);
    {
        let fake = fake.clone();
        let skus = skus.clone();
        wait_for("the first levels written", move || {
            skus.iter().all(|s| fake.level(s).available == 40)
        })
        .await;
    }

    let mut orders = Vec::new();
    for i in 0..30 {
        let sku = &skus[i % skus.len()];
        orders.push(
            fake.place_order(&[(sku.as_str(), 1 + (i % 2) as i64)], "5.00")
                .unwrap(),
        );
    }
    // Shopify's delivery: each webhook sent until answered 200 (it
    // retries for hours); the adapter is killed half way through.
    let deliver_all = |orders: Vec<Value>, topic: &'static str| async move {
        for (i, o) in orders.iter().enumerate() {
            let id = format!("{topic}-{i}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while deliver(hooks, topic, o, &id).await != 200 {
                assert!(Instant::now() < deadline, "{topic} {i} never accepted");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    deliver_all(orders[..15].to_vec(), "orders/create").await;
    let fulfilled: Vec<Value> = orders[..5].iter().map(|o| fake.fulfill(o)).collect();
    deliver_all(fulfilled.clone(), "fulfillments/create").await;
    adapter.kill();
    // While it is dead: Shopify goes on selling (webhooks fail), and
    // other channels change levels.
    for (i, sku) in skus.iter().enumerate() {
        app.reserve("amazon", &format!("dead-{i}"), &[(sku, 3)], 0)
            .await
            .unwrap();
    }
    assert_eq!(
        deliver(hooks, "orders/create", &orders[15], "orders/create-15").await,
        0,
        "dead"
    );
    let mut adapter = spawn_adapter(&app.grpc_url, &path);
    // Shopify delivers everything again (it cannot know what got through).
    deliver_all(orders.clone(), "orders/create").await;
    deliver_all(fulfilled, "fulfillments/create").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let items = app
            .inventory
            .get_availability(pb::GetAvailabilityRequest {
                skus: skus.clone(),
                channel: "shopify".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        let right = items
            .iter()
            .all(|i| fake.level(&i.sku).available == i.published);
        if right {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "levels not right after the restart: {items:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (i, o) in orders.iter().enumerate() {
        let r = app
            .inventory
            .get_reservation(pb::GetReservationRequest {
                channel: "shopify".into(),
                order_id: o["id"].to_string(),
            })
            .await
            .unwrap()
            .into_inner();
        let q = 1 + (i % 2) as i64;
        assert_eq!(sum(&r, |a| a.quantity), q, "order {i} reserved once");
        assert_eq!(
            sum(&r, |a| a.fulfilled),
            if i < 5 { q } else { 0 },
            "order {i} shipped once"
        );
    }
    adapter.kill();
}

#[tokio::test]
async fn a_cursor_stockpool_refuses_starts_again_from_a_snapshot() {
    let fake = FakeShopify::standard().await;
    let mut app = spawn_app().await;
    put_rule(&mut app, "shopify", vec!["WH-WEST"], 0).await;
    app.set_stock("HAT", "WH-WEST", 7).await;
    fake.add_variant("HAT");
    let dir = tempfile::tempdir().unwrap();
    // A cursor from another server's log, far ahead of this one's.
    let state = stockpool::adapters::state::StateDb::open(&dir.path().join("adapter"), "shopify")
        .await
        .unwrap();
    state
        .store_levels(
            "stock:shopify",
            1_000_000,
            &[("HAT".into(), 99, 0, 999_999, 1)],
        )
        .await
        .unwrap();
    drop(state);
    let mut rig = Rig {
        app,
        fake,
        adapter: None,
        dir,
        hook_ids: AtomicU64::new(1),
    };
    rig.start_adapter().await;
    rig.converged(&["HAT".to_string()], Duration::from_secs(10))
        .await;
    assert_eq!(rig.fake.level("HAT").available, 7);
}

#[tokio::test]
async fn in_paid_mode_an_order_is_reserved_once_paid_and_once_only() {
    let mut rig = Rig::start(&[("TEE", 10)], 0, FakeShopify::standard().await).await;
    rig.adapter.take().unwrap().stop().await;
    rig.start_adapter_with("reserve_on = \"orders/paid\"\n")
        .await;
    let mut order = order_json(700, &[(1, "TEE", 2), (2, "TEE", 1)]);
    order["financial_status"] = json!("pending");
    assert_eq!(rig.send("orders/create", &order).await, 200);
    assert!(
        rig.reservation("700").await.is_none(),
        "not paid: not reserved"
    );
    order["financial_status"] = json!("paid");
    assert_eq!(rig.send("orders/paid", &order).await, 200);
    let r = rig.reservation("700").await.expect("reserved once paid");
    assert_eq!(sum(&r, |a| a.quantity), 3, "both lines of the SKU, merged");
    assert_eq!(rig.send("orders/updated", &order).await, 200);
    assert_eq!(
        sum(&rig.reservation("700").await.unwrap(), |a| a.quantity),
        3
    );
}

#[tokio::test]
async fn reconciliation_corrects_shopify_at_start_and_every_interval_and_counts_the_difference() {
    let mut rig = Rig::start(&[("TEE", 10), ("CAP", 4)], 0, FakeShopify::standard().await).await;
    let skus: Vec<String> = vec!["TEE".into(), "CAP".into()];
    rig.converged(&skus, Duration::from_secs(10)).await;
    // Someone edits Shopify by hand while the adapter is stopped.
    rig.adapter.take().unwrap().stop().await;
    rig.fake.set_level(
        "TEE",
        Level {
            available: 3,
            committed: 0,
            unavailable: 0,
        },
    );
    rig.start_adapter_with("reconcile_interval_s = 1\n").await;
    rig.converged(&skus, Duration::from_secs(10)).await;
    // And again while it runs: the next pass puts it right.
    rig.fake.set_level(
        "CAP",
        Level {
            available: 9,
            committed: 0,
            unavailable: 0,
        },
    );
    rig.converged(&skus, Duration::from_secs(10)).await;
    let metrics = crate::helpers::http_get(rig.metrics(), "/metrics").await;
    let drift = metrics
        .lines()
        .find(|l| {
            l.starts_with("stockpool_adapter_reconcile_drift_units_total{channel=\"shopify\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(drift >= 12.0, "7 + 5 units of difference counted: {drift}");
    // The other series a scrape shows.
    rig.app
        .reserve("amazon", "m-1", &[("TEE", 1)], 0)
        .await
        .unwrap();
    let order = order_json(800, &[(1, "TEE", 1)]);
    assert_eq!(rig.send("orders/create", &order).await, 200);
    rig.converged(&skus, Duration::from_secs(10)).await;
    let metrics = crate::helpers::http_get(rig.metrics(), "/metrics").await;
    for series in [
        "stockpool_adapter_lag_seconds_bucket{channel=\"shopify\"",
        "stockpool_adapter_rpc_duration_seconds_bucket{channel=\"shopify\",rpc=\"Reserve\"",
        "stockpool_adapter_webhooks_total{channel=\"shopify\",topic=\"orders/create\",outcome=\"applied\"}",
        "stockpool_adapter_writes_total{channel=\"shopify\",outcome=\"written\"}",
        "stockpool_adapter_stale_retries_total{channel=\"shopify\"}",
        "stockpool_adapter_unmapped_skus{channel=\"shopify\"}",
    ] {
        assert!(metrics.contains(series), "{series} missing from:\n{metrics}");
    }
    let ready = crate::helpers::http_get(rig.metrics(), "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
}

#[tokio::test]
async fn levels_are_read_by_sku_when_the_api_refuses_reading_them_by_item_id() {
    let fake = FakeShopify::standard().await;
    fake.refuse_nodes();
    let mut rig = Rig::start(&[("TEE", 6), ("CAP", 2)], 0, fake).await;
    let skus: Vec<String> = vec!["TEE".into(), "CAP".into()];
    rig.converged(&skus, Duration::from_secs(10)).await;
    rig.app
        .reserve("amazon", "n-1", &[("TEE", 2)], 0)
        .await
        .unwrap();
    rig.converged(&skus, Duration::from_secs(10)).await;
    assert_eq!(rig.fake.level("TEE").available, 4);
}
