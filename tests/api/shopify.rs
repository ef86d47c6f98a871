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
use crate::helpers::{spawn_app, TestApp};

/// The server, the fake shop, and the adapter between them.
struct Rig {
    app: TestApp,
    fake: FakeShopify,
    adapter: Option<Running>,
    dir: TempDir,
    hook_ids: AtomicU64,
}

fn config_text(fake: &FakeShopify, dir: &std::path::Path, extra: &str) -> String {
    format!(
        "shop = \"demo.myshopify.com\"\nadmin_url = \"{}\"\nlocation_id = \"{LOCATION}\"\n\
         webhook_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\
         reconcile_interval_s = 0\nmax_backoff_ms = 500\ntimeout_ms = 2000\n{extra}",
        fake.url(),
        dir.join("adapter").display()
    )
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
        let text = config_text(&self.fake, self.dir.path(), "");
        let config = ShopifyConfig::parse(&text, Some(SECRET.into()), Some(TOKEN.into())).unwrap();
        let running = shopify::start(config, Upstream::new(&self.app.grpc_url, None))
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
            assert!(Instant::now() < deadline, "{topic} never accepted (last {code})");
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
            })
            .await
            .unwrap()
            .into_inner()
            .items;
        items.into_iter().map(|i| (i.sku, (i.published, i.atp))).collect()
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
                .map(|s| format!("{s}: shopify {:?}, published {}", self.fake.level(s), published[s].0))
                .collect();
            if wrong.is_empty() {
                return;
            }
            assert!(Instant::now() < deadline, "not converged within {within:?}: {wrong:?}");
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
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_shopify_orders_while_other_channels_reserve_never_oversell_and_end_at_published() {
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
            let mut inv = pb::inventory_client::InventoryClient::connect(grpc).await.unwrap();
            for round in 0..2 {
                for (i, sku) in skus.iter().enumerate() {
                    let channel = if (i + round) % 2 == 0 { "amazon" } else { "b2b" };
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
            let mut inv = pb::inventory_client::InventoryClient::connect(grpc).await.unwrap();
            let mut samples = 0;
            while !done.load(Ordering::SeqCst) {
                let shown: Vec<i64> = skus.iter().map(|s| fake.level(s).available).collect();
                let items = inv
                    .get_availability(pb::GetAvailabilityRequest {
                        skus: skus.clone(),
                        channel: "shopify".into(),
                    })
                    .await
                    .unwrap()
                    .into_inner()
                    .items;
                for (sku, shown) in skus.iter().zip(shown) {
                    let atp = items.iter().find(|i| &i.sku == sku).unwrap().atp;
                    assert!(shown <= atp, "{sku}: Shopify shows {shown}, stockpool would admit {atp}");
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
                assert_eq!(deliver(hooks, "orders/create", &order, &format!("{id}-again")).await, 200);
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
        let r = rig.reservation(id).await.expect("every Shopify order reserved");
        assert_eq!((r.allocations[0].sku.as_str(), sum(&r, |a| a.quantity)), (sku.as_str(), *q));
        assert_eq!(r.currency, "", "prices go out; the echo is issue 10's (not asserted)");
    }
    assert!(rig.unapplied().await.is_empty(), "no order refused by stockpool");
    for level in rig.app.stock(&[]).await {
        assert!(level.reserved <= level.on_hand, "no oversell in stockpool: {level:?}");
    }
}

#[tokio::test]
async fn an_order_whose_webhook_is_delayed_while_another_channel_drains_the_sku_is_never_given_back() {
    let mut rig = Rig::start(&[("MUG", 5)], 0, FakeShopify::standard().await).await;
    let skus = vec!["MUG".to_string()];
    rig.converged(&skus, Duration::from_secs(10)).await;
    // Shopify sells 2; the webhook is held back.
    let order = rig.fake.place_order(&[("MUG", 2)], "12.00").unwrap();
    let sold_at = Instant::now();
    assert_eq!(rig.fake.level("MUG").available, 3);
    // Amazon takes the 3 others in stockpool: published for shopify is 2.
    rig.app.reserve("amazon", "amz-1", &[("MUG", 3)], 0).await.unwrap();
    let fake = rig.fake.clone();
    wait_for("the drained level written", || fake.level("MUG").on_hand() == 2).await;
    let after_drain = rig.fake.level("MUG");
    assert_eq!(
        after_drain.available, 0,
        "the 2 sold on Shopify stay subtracted: {after_drain:?}"
    );
    for w in rig.fake.writes().iter().filter(|w| w.at > sold_at) {
        assert!(w.available <= 0, "no write after the sale gave the 2 back: {w:?}");
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
