//! The Amazon adapter against a real server and the strict fake SP-API
//! (`fake_spapi.rs`): orders polled in, levels out by patch or feed, with
//! the usage plans scaled up so the tests run in seconds (the fake's
//! buckets use the same figures as the adapter's config).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use stockpool::adapters::amazon::{self, AmazonConfig, Running, Secrets};
use stockpool::adapters::Upstream;
use stockpool::api::pb;
use tempfile::TempDir;

use crate::fake_spapi::{
    plans, FakeSpApi, CLIENT_ID, CLIENT_SECRET, MARKETPLACE, REFRESH_TOKEN, SELLER,
};
use crate::helpers::{free_port, spawn_app, AdapterProcess, TestApp};

/// The documented plans, scaled: (operation, rate per second, burst).
const RATES: &[(&str, f64, u32)] = &[
    ("getOrders", 20.0, 20),
    ("getOrderItems", 300.0, 30),
    ("patchListingsItem", 100.0, 5),
    // Read-backs follow every feed: scaled further so 2,000 stay quick.
    ("getListingsItem", 2000.0, 20),
    ("createFeedDocument", 20.0, 15),
    ("createFeed", 10.0, 15),
    ("getFeed", 40.0, 15),
    ("getFeedDocument", 20.0, 10),
    ("createRestrictedDataToken", 50.0, 10),
];
/// The two-minute rule, scaled.
const RULE: Duration = Duration::from_millis(300);

fn secrets() -> Secrets {
    Secrets {
        client_id: Some(CLIENT_ID.into()),
        client_secret: Some(CLIENT_SECRET.into()),
        refresh_token: Some(REFRESH_TOKEN.into()),
    }
}

/// The adapter's file: keys in `keys` replace the defaults; `tables`
/// (e.g. `[sku_map]`) are appended.
fn config_text(fake: &FakeSpApi, dir: &std::path::Path, keys: &str, tables: &str) -> String {
    let base = format!(
        "endpoint = \"{}\"\nlwa_url = \"{}\"\nseller_id = \"{SELLER}\"\nmarketplace_id = \"{MARKETPLACE}\"\n\
         metrics_addr = \"127.0.0.1:0\"\nstate_dir = \"{}\"\npoll_interval_ms = 100\noverlap_s = 5\n\
         data_delay_ms = {}\nstart_back_s = 60\nhold_s = 3600\nfeed_threshold = 500\nfeed_poll_ms = 50\n\
         verify_after_ms = 50\nverify_attempts = 3\ntimeout_ms = 5000\nmax_backoff_ms = 500\npage_size = 30\n",
        fake.url(),
        fake.lwa_url(),
        dir.join("adapter").display(),
        RULE.as_millis()
    );
    let key = |line: &str| line.split('=').next().unwrap_or("").trim().to_string();
    let overridden: Vec<String> = keys.lines().map(key).collect();
    let kept: String = base
        .lines()
        .filter(|l| !overridden.contains(&key(l)))
        .map(|l| format!("{l}\n"))
        .collect();
    let rates: String = RATES
        .iter()
        .map(|(op, rate, burst)| format!("{op} = {{ rate = {rate:?}, burst = {burst} }}\n"))
        .collect();
    format!("{kept}{keys}\n[rates]\n{rates}{tables}")
}

struct Rig {
    app: TestApp,
    fake: FakeSpApi,
    adapter: Option<Running>,
    dir: TempDir,
}

async fn put_rule(app: &mut TestApp, buffer: i64) {
    app.admin
        .put_rule(pb::PutRuleRequest {
            rule: Some(pb::Rule {
                channel: "amazon".into(),
                warehouses: vec!["WH-WEST".into()],
                fence: Some(0),
                share_percent: Some(100),
                buffer: Some(buffer),
                ..Default::default()
            }),
            changed_by: "test".into(),
            comment: String::new(),
        })
        .await
        .unwrap();
}

/// Sets every count at once (many calls in flight, so the levels change
/// together as far as the stream is concerned).
async fn batch_stock(app: &mut TestApp, stock: &[(String, i64)]) {
    for part in stock.chunks(200) {
        let calls = part.iter().map(|(sku, n)| {
            let mut inv = app.inventory.clone();
            let request = pb::SetStockRequest {
                sku: sku.clone(),
                warehouse: "WH-WEST".into(),
                on_hand: *n,
                reason: "count".into(),
                ..Default::default()
            };
            async move { inv.set_stock(request).await.expect("set stock") }
        });
        futures_join(calls).await;
    }
}

async fn futures_join<F: std::future::Future + Send + 'static>(calls: impl Iterator<Item = F>)
where
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = calls.map(tokio::spawn).collect();
    for t in tasks {
        t.await.unwrap();
    }
}

impl Rig {
    /// `skus` stocked in WH-WEST, each listed on Amazon at 0; the amazon
    /// rule keeps `buffer`; the fake's plans are [`RATES`] unless given.
    async fn new(skus: &[(String, i64)], buffer: i64, fake: FakeSpApi) -> Rig {
        let mut app = spawn_app().await;
        put_rule(&mut app, buffer).await;
        batch_stock(&mut app, skus).await;
        for (sku, _) in skus {
            fake.add_listing(sku, 0);
        }
        Rig {
            app,
            fake,
            adapter: None,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    async fn standard_fake() -> FakeSpApi {
        FakeSpApi::start(plans(RATES), RULE, Duration::from_secs(3600)).await
    }

    fn config(&self, keys: &str, tables: &str) -> AmazonConfig {
        AmazonConfig::parse(
            &config_text(&self.fake, self.dir.path(), keys, tables),
            secrets(),
        )
        .unwrap()
    }

    async fn start_adapter(&mut self, keys: &str, tables: &str) {
        let config = self.config(keys, tables);
        let running = amazon::start(config, Upstream::new(&self.app.grpc_url, None, None))
            .await
            .expect("adapter starts");
        self.adapter = Some(running);
    }

    async fn published(&mut self, skus: &[String]) -> BTreeMap<String, i64> {
        let mut out = BTreeMap::new();
        for part in skus.chunks(1000) {
            let items = self
                .app
                .inventory
                .get_availability(pb::GetAvailabilityRequest {
                    skus: part.to_vec(),
                    channel: "amazon".into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner()
                .items;
            out.extend(items.into_iter().map(|i| (i.sku, i.published)));
        }
        out
    }

    /// Waits (at most `within`) until every listing shows stockpool's
    /// published level.
    async fn converged(&mut self, skus: &[String], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let published = self.published(skus).await;
            let wrong: Vec<String> = skus
                .iter()
                .filter(|s| self.fake.listing(s) != Some(published[*s]))
                .take(5)
                .map(|s| {
                    format!(
                        "{s}: amazon {:?}, published {}",
                        self.fake.listing(s),
                        published[s]
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
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn reservation(&mut self, order_id: &str) -> Option<pb::Reservation> {
        reservation(&mut self.app, order_id).await
    }
}

async fn reservation(app: &mut TestApp, order_id: &str) -> Option<pb::Reservation> {
    app.inventory
        .get_reservation(pb::GetReservationRequest {
            channel: "amazon".into(),
            order_id: order_id.into(),
        })
        .await
        .ok()
        .map(|r| r.into_inner())
}

fn sum(r: &pb::Reservation, f: impl Fn(&pb::Allocation) -> i64) -> i64 {
    r.allocations.iter().map(f).sum()
}

/// The reservations of one Amazon order: every generation it was held
/// under (`<id>`, `<id>/2`, ...).
async fn generations(app: &mut TestApp, id: &str) -> Vec<pb::Reservation> {
    let mut out = Vec::new();
    if let Some(r) = reservation(app, id).await {
        out.push(r);
        for n in 2.. {
            match reservation(app, &format!("{id}/{n}")).await {
                Some(r) => out.push(r),
                None => break,
            }
        }
    }
    out
}

/// What stockpool must hold for Amazon's orders: per order, its units
/// fulfilled when Shipped, nothing open when Canceled, held or confirmed
/// otherwise; no other reservation; and stock taken off once per shipped
/// unit. None when it does; else what differs.
async fn mismatch(
    app: &mut TestApp,
    fake: &FakeSpApi,
    initial: &BTreeMap<String, i64>,
) -> Option<String> {
    let orders = fake.orders();
    let open = |r: &pb::Reservation| sum(r, |a| a.quantity - a.fulfilled - a.released);
    let mut shipped: BTreeMap<String, i64> = BTreeMap::new();
    let mut held: BTreeMap<String, i64> = BTreeMap::new();
    for o in &orders {
        let ordered: i64 = o.items.iter().map(|i| i.quantity).sum();
        let mine = generations(app, &o.id).await;
        let fulfilled: i64 = mine.iter().map(|r| sum(r, |a| a.fulfilled)).sum();
        let opened: i64 = mine.iter().map(open).sum();
        let right = match o.status.as_str() {
            "Shipped" => fulfilled == ordered && opened == 0,
            "Canceled" => fulfilled == 0 && opened == 0,
            _ => fulfilled == 0 && opened == ordered,
        };
        if !right {
            return Some(format!(
                "order {} ({}): {ordered} ordered, stockpool has {fulfilled} fulfilled and {opened} open",
                o.id, o.status
            ));
        }
        for i in &o.items {
            match o.status.as_str() {
                "Shipped" => *shipped.entry(i.seller_sku.clone()).or_default() += i.quantity,
                "Canceled" => {}
                _ => *held.entry(i.seller_sku.clone()).or_default() += i.quantity,
            }
        }
    }
    let skus: Vec<String> = initial.keys().cloned().collect();
    let levels = app
        .inventory
        .get_stock(pb::GetStockRequest {
            skus: skus.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .levels;
    for sku in &skus {
        let on_hand: i64 = levels
            .iter()
            .filter(|l| &l.sku == sku)
            .map(|l| l.on_hand)
            .sum();
        let reserved: i64 = levels
            .iter()
            .filter(|l| &l.sku == sku)
            .map(|l| l.reserved)
            .sum();
        let want = initial[sku] - shipped.get(sku).copied().unwrap_or(0);
        let want_reserved = held.get(sku).copied().unwrap_or(0);
        if (on_hand, reserved) != (want, want_reserved) {
            return Some(format!("{sku}: on hand {on_hand} reserved {reserved}, want {want} and {want_reserved} (each unit counted once)"));
        }
    }
    None
}

async fn settled(
    app: &mut TestApp,
    fake: &FakeSpApi,
    initial: &BTreeMap<String, i64>,
    within: Duration,
) {
    let deadline = Instant::now() + within;
    loop {
        match mismatch(app, fake, initial).await {
            None => return,
            Some(why) => assert!(
                Instant::now() < deadline,
                "not settled within {within:?}: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
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

fn stock(prefix: &str, n: usize, each: i64) -> Vec<(String, i64)> {
    (0..n).map(|i| (format!("{prefix}-{i}"), each)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_orders_through_pending_unshipped_shipped_some_cancelled_end_with_reservations_matching_amazon_exactly(
) {
    let stock = stock("AMZ", 20, 100);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let initial: BTreeMap<String, i64> = stock.iter().cloned().collect();
    let mut rig = Rig::new(&stock, 3, Rig::standard_fake().await).await;
    rig.start_adapter("", "").await;
    rig.converged(&skus, Duration::from_secs(20)).await;

    let mut rng = Lcg(16);
    let mut ids = Vec::new();
    for _ in 0..100 {
        let a = rng.next(20) as usize;
        let b = (a + 1 + rng.next(19) as usize) % 20;
        let mut lines = vec![(skus[a].as_str(), 1 + rng.next(3) as i64, "19.90")];
        if rng.next(2) == 0 {
            lines.push((skus[b].as_str(), 1, "5.00"));
        }
        ids.push(
            rig.fake
                .place_order(&lines, rng.next(4) == 0, false)
                .unwrap(),
        );
        if ids.len() % 25 == 0 {
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }
    // Amazon moves them on at its pace: a fifth cancelled while Pending,
    // the rest paid, then shipped; some change twice before a poll sees them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, id) in ids.iter().enumerate() {
        if i % 5 == 0 {
            rig.fake.set_status(id, "Canceled");
        } else if i % 7 != 0 {
            rig.fake.set_status(id, "Unshipped");
        }
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (i, id) in ids.iter().enumerate() {
        if i % 5 != 0 {
            rig.fake.set_status(id, "Shipped");
        }
        if i % 10 == 9 {
            tokio::time::sleep(Duration::from_millis(60)).await;
        }
    }
    settled(&mut rig.app, &rig.fake, &initial, Duration::from_secs(30)).await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    // Prices and the business buyer passed through on the Reserve.
    let first = rig.reservation(&ids[1]).await.unwrap();
    assert_eq!(first.currency, "EUR");
    assert!(
        first.allocations.iter().any(|a| a.unit_price == "19.90"),
        "{first:?}"
    );
    // The in-flight window the adapter achieved (placed on Amazon to
    // reserved in stockpool), measured, not asserted on.
    let metrics =
        crate::helpers::http_get(rig.adapter.as_ref().unwrap().metrics_addr, "/metrics").await;
    let series = |name: &str| {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (sum, count) = (
        series("stockpool_adapter_order_inflight_seconds_sum"),
        series("stockpool_adapter_order_inflight_seconds_count"),
    );
    assert!(count >= 1.0, "the window is measured");
    assert!(
        rig.fake.next_pages() >= 1,
        "getOrders pages followed by NextToken"
    );
    eprintln!(
        "in-flight window: {:.3} s on average over {count} orders (rule {RULE:?}, poll every 100 ms)",
        sum / count
    );
    assert!(
        rig.fake.throttled_total() <= 1,
        "no call over a plan after the first throttle: {:?}",
        rig.fake.throttles()
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_skus_changing_at_once_converge_through_the_feed_path_with_no_429_after_the_first(
) {
    let stock = stock("BULK", 2000, 10);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 2, Rig::standard_fake().await).await;
    rig.start_adapter("feed_threshold = 200", "").await;
    // The first snapshot: 2,000 SKUs due at once.
    rig.converged(&skus, Duration::from_secs(30)).await;
    let feeds = rig.fake.feeds();
    assert!(feeds >= 1, "the snapshot went by feed");
    // Every SKU changes at once: the amazon rule's buffer moves (one
    // commit, 2,000 levels).
    put_rule(&mut rig.app, 4).await;
    rig.converged(&skus, Duration::from_secs(30)).await;
    assert!(rig.fake.feeds() > feeds, "the change went by feed too");
    assert!(
        rig.fake.calls("patchListingsItem") < 500,
        "not thousands of patches: {}",
        rig.fake.calls("patchListingsItem")
    );
    assert!(
        rig.fake.throttled_total() <= 1,
        "{} calls throttled: {:?}",
        rig.fake.throttled_total(),
        rig.fake.throttles()
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_expiring_mid_run_is_refreshed_without_a_failed_write() {
    let stock = stock("TOK", 10, 30);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    // Tokens live 4 seconds here (3600 on Amazon).
    let fake = FakeSpApi::start(plans(RATES), RULE, Duration::from_secs(4)).await;
    let mut rig = Rig::new(&stock, 0, fake).await;
    rig.start_adapter("", "").await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    let started = Instant::now();
    let mut round = 0;
    while started.elapsed() < Duration::from_secs(6) || rig.fake.grants() < 2 {
        round += 1;
        for (i, sku) in skus.iter().enumerate() {
            rig.app
                .set_stock(sku, "WH-WEST", 30 + ((round + i) % 5) as i64)
                .await;
        }
        rig.converged(&skus, Duration::from_secs(20)).await;
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "no new token within 40 s"
        );
    }
    assert!(
        rig.fake.grants() >= 2,
        "the token was refreshed before it expired"
    );
    assert_eq!(
        rig.fake.unauthorized(),
        0,
        "no call was sent with an expired token"
    );
    // A token revoked early: the refusal (403 Unauthorized) is met with a
    // new token and the same call again, not a failed write.
    rig.fake.revoke_tokens();
    for sku in &skus {
        rig.app.set_stock(sku, "WH-WEST", 12).await;
    }
    rig.converged(&skus, Duration::from_secs(20)).await;
    assert!(
        rig.fake.unauthorized() >= 1,
        "the revoked token was refused"
    );
    let metrics =
        crate::helpers::http_get(rig.adapter.as_ref().unwrap().metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("stockpool_adapter_token_refreshes_total"),
        "refreshes are counted"
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amazon_down_slows_no_reservation_and_the_newest_level_of_each_sku_goes_out_when_it_is_back(
) {
    let stock = stock("DOWN", 8, 50);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 1, Rig::standard_fake().await).await;
    rig.start_adapter("", "").await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    let metrics_addr = rig.adapter.as_ref().unwrap().metrics_addr;
    let ready = crate::helpers::http_get(metrics_addr, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    rig.fake.set_down(true);
    // While Amazon is down, the other channels go on reserving and the
    // levels move many times.
    for round in 0..5 {
        for (i, sku) in skus.iter().enumerate() {
            rig.app
                .reserve("shopify", &format!("shop-{round}-{i}"), &[(sku, 1)], 0)
                .await
                .expect("stockpool answers whatever Amazon does");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = crate::helpers::http_get(metrics_addr, "/readyz").await;
        if ready.starts_with("HTTP/1.1 503") {
            assert!(ready.contains("amazon"), "{ready}");
            break;
        }
        assert!(Instant::now() < deadline, "never not ready: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pending = crate::helpers::http_get(metrics_addr, "/metrics").await;
    assert!(
        pending.lines().any(|l| l
            .starts_with("stockpool_adapter_levels_pending{channel=\"amazon\"}")
            && !l.ends_with(" 0")),
        "the backlog is visible"
    );
    rig.fake.set_down(false);
    rig.converged(&skus, Duration::from_secs(20)).await;
    let ready = crate::helpers::http_get(metrics_addr, "/readyz").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut ready = ready;
    while !ready.starts_with("HTTP/1.1 200") {
        assert!(Instant::now() < deadline, "never ready again: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        ready = crate::helpers::http_get(metrics_addr, "/readyz").await;
    }
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_amazon_refuses_as_too_recent_is_ended_earlier_and_no_order_is_missed() {
    let stock = stock("SKEW", 1, 10);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 1, Rig::standard_fake().await).await;
    // The adapter thinks the rule is shorter than Amazon applies it (as a
    // host clock running ahead would): Amazon refuses its windows.
    rig.start_adapter("data_delay_ms = 50", "").await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    let id = rig
        .fake
        .place_order(&[(skus[0].as_str(), 2, "1.00")], false, false)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.reservation(&id).await.is_none() {
        assert!(Instant::now() < deadline, "the order never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.adapter.take().unwrap().stop().await;
}

fn spawn_adapter(grpc: &str, config: &std::path::Path) -> AdapterProcess {
    AdapterProcess::spawn(
        grpc,
        "amazon",
        config,
        &[
            ("STOCKPOOL_AMAZON_CLIENT_ID", CLIENT_ID),
            ("STOCKPOOL_AMAZON_CLIENT_SECRET", CLIENT_SECRET),
            ("STOCKPOOL_AMAZON_REFRESH_TOKEN", REFRESH_TOKEN),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_killed_with_sigkill_and_restarted_misses_no_order_and_applies_none_twice() {
    let stock = stock("KILL", 6, 60);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let initial: BTreeMap<String, i64> = stock.iter().cloned().collect();
    let mut rig = Rig::new(&stock, 2, Rig::standard_fake().await).await;
    let text = config_text(
        &rig.fake,
        rig.dir.path(),
        &format!("metrics_addr = \"127.0.0.1:{}\"", free_port()),
        "",
    );
    let path = rig.dir.path().join("amazon.toml");
    std::fs::write(&path, text).unwrap();
    let mut adapter = spawn_adapter(&rig.app.grpc_url, &path);
    rig.converged(&skus, Duration::from_secs(20)).await;

    let mut ids = Vec::new();
    for i in 0..30 {
        let sku = skus[i % skus.len()].as_str();
        ids.push(
            rig.fake
                .place_order(&[(sku, 1 + (i % 2) as i64, "7.50")], false, false)
                .unwrap(),
        );
    }
    // Let the adapter take some of them, then move them on and kill it
    // while it polls.
    let deadline = Instant::now() + Duration::from_secs(20);
    while reservation(&mut rig.app, &ids[0]).await.is_none() {
        assert!(Instant::now() < deadline, "the first orders never arrived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids[..10] {
        rig.fake.set_status(id, "Unshipped");
    }
    for id in &ids[..5] {
        rig.fake.set_status(id, "Shipped");
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    adapter.kill();
    // While it is dead, Amazon goes on.
    for id in &ids[10..15] {
        rig.fake.set_status(id, "Canceled");
    }
    for id in &ids[15..20] {
        rig.fake.set_status(id, "Unshipped");
        rig.fake.set_status(id, "Shipped");
    }
    let late = rig
        .fake
        .place_order(&[(skus[0].as_str(), 2, "7.50")], false, false)
        .unwrap();
    ids.push(late);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut adapter = spawn_adapter(&rig.app.grpc_url, &path);
    settled(&mut rig.app, &rig.fake, &initial, Duration::from_secs(30)).await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    adapter.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_still_pending_at_the_end_of_its_hold_is_held_again_and_never_counted_twice() {
    // 4 on hand, a buffer of 1, an order of 3: both holds cannot stand at
    // once, so the old one is let go just before the new one is taken.
    let stock = stock("HOLD", 1, 4);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let initial: BTreeMap<String, i64> = stock.iter().cloned().collect();
    let mut rig = Rig::new(&stock, 1, Rig::standard_fake().await).await;
    rig.start_adapter("hold_s = 2", "").await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    let id = rig
        .fake
        .place_order(&[(skus[0].as_str(), 3, "1.00")], false, false)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let second = format!("{id}/2");
    loop {
        if let Some(r) = rig.reservation(&second).await {
            assert_eq!(r.status, pb::ReservationStatus::Held as i32);
            break;
        }
        assert!(Instant::now() < deadline, "never held again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = rig.reservation(&id).await.unwrap();
    assert_eq!(
        sum(&first, |a| a.quantity - a.fulfilled - a.released),
        0,
        "the old hold was let go: {first:?}"
    );
    let level = rig.app.stock(&[skus[0].as_str()]).await;
    assert_eq!(
        level.iter().map(|l| l.reserved).sum::<i64>(),
        3,
        "held once at a time"
    );
    rig.fake.set_status(&id, "Unshipped");
    rig.fake.set_status(&id, "Shipped");
    settled(&mut rig.app, &rig.fake, &initial, Duration::from_secs(20)).await;
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fba_orders_are_skipped_and_seller_skus_map_through_the_table() {
    let stock = stock("MAP", 2, 20);
    let mut rig = Rig::new(&stock, 1, Rig::standard_fake().await).await;
    rig.fake.add_listing("AMZ-SKU-0", 0);
    rig.start_adapter("", "[sku_map]\n\"AMZ-SKU-0\" = \"MAP-0\"\n")
        .await;
    // MAP-0's level (20 less the buffer of 1) goes to the listing AMZ-SKU-0.
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.fake.listing("AMZ-SKU-0") != Some(19) || rig.fake.listing("MAP-1") != Some(19) {
        assert!(
            Instant::now() < deadline,
            "AMZ-SKU-0 shows {:?}",
            rig.fake.listing("AMZ-SKU-0")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fba = rig
        .fake
        .place_order(&[("MAP-1", 1, "3.00")], false, true)
        .unwrap();
    // Three items: two pages of getOrderItems; MAP-1 on two of them.
    let mapped = rig
        .fake
        .place_order(
            &[
                ("AMZ-SKU-0", 2, "4.25"),
                ("MAP-1", 1, "3.00"),
                ("MAP-1", 2, "6.00"),
            ],
            true,
            false,
        )
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        if let Some(r) = rig.reservation(&mapped).await {
            break r;
        }
        assert!(Instant::now() < deadline, "the mapped order never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let lines: Vec<(&str, i64, &str)> = r
        .allocations
        .iter()
        .map(|a| (a.sku.as_str(), a.quantity, a.unit_price.as_str()))
        .collect();
    assert_eq!(
        lines,
        vec![("MAP-0", 2, "4.25"), ("MAP-1", 3, "5.00")],
        "mapped, summed per SKU, unit prices from the lines' totals"
    );
    assert_eq!(
        r.customer_ref, "",
        "without buyer_info no restricted data token, so no BuyerInfo: {r:?}"
    );
    assert_eq!(rig.fake.buyer_info_served(), 0);
    assert!(
        r.prices_include_tax,
        "Amazon.de's ItemPrice includes VAT: {r:?}"
    );
    // Later polls have gone by the FBA order too; it is not ours to hold.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        rig.reservation(&fba).await.is_none(),
        "FBA ships from Amazon's stock"
    );
    let metrics =
        crate::helpers::http_get(rig.adapter.as_ref().unwrap().metrics_addr, "/metrics").await;
    assert!(
        metrics.contains("step=\"skipped_afn\""),
        "skipped and counted"
    );
    assert!(
        metrics.contains("stockpool_adapter_order_inflight_seconds"),
        "the in-flight window is measured"
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_whose_report_cannot_be_read_is_confirmed_by_reading_every_sku_back() {
    let stock = stock("GZ", 300, 6);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 0, Rig::standard_fake().await).await;
    rig.fake.gzip_reports(true);
    rig.start_adapter("feed_threshold = 100", "").await;
    rig.converged(&skus, Duration::from_secs(30)).await;
    assert!(rig.fake.feeds() >= 1, "by feed");
    // Every SKU's level is confirmed by a read of its listing.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rig.fake.calls("getListingsItem") < skus.len() as u64 {
        assert!(
            Instant::now() < deadline,
            "read-backs never finished: {}",
            rig.fake.calls("getListingsItem")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_message_accepted_and_not_applied_is_found_by_its_read_back_and_sent_again() {
    let stock = stock("FEEDLOSS", 300, 7);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 0, Rig::standard_fake().await).await;
    // Every 25th message is accepted (no issue in the report) and lost.
    rig.fake.drop_feed_every(25);
    rig.start_adapter("feed_threshold = 100", "").await;
    rig.converged(&skus, Duration::from_secs(30)).await;
    // (The first levels of the snapshot may go by patch before the
    // backlog reaches the threshold.)
    assert_eq!(rig.fake.feeds(), 1, "one feed; the few lost went by patch");
    assert!(rig.fake.feed_dropped() >= 1, "Amazon lost some");
    assert!(
        rig.fake.calls("getListingsItem") >= rig.fake.feed_dropped() * 25,
        "the feed's SKUs were read back"
    );
    assert!(
        rig.fake.calls("patchListingsItem") < 150,
        "not every SKU sent again: {}",
        rig.fake.calls("patchListingsItem")
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_backs_after_a_feed_never_hold_up_a_newer_level() {
    // Amazon reads listings back at 20/s: 300 read-backs take 15 s.
    let fake_rates: Vec<(&str, f64, u32)> = RATES
        .iter()
        .map(|&(op, rate, burst)| match op {
            "getListingsItem" => (op, 20.0, 20),
            _ => (op, rate, burst),
        })
        .collect();
    let fake = FakeSpApi::start(plans(&fake_rates), RULE, Duration::from_secs(3600)).await;
    let stock = stock("SLOWREAD", 300, 5);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 0, fake).await;
    rig.start_adapter("feed_threshold = 100", "").await;
    rig.converged(&skus, Duration::from_secs(30)).await;
    assert_eq!(rig.fake.feeds(), 1);
    // The read-backs are under way; one SKU moves on.
    batch_stock(&mut rig.app, &[("SLOWREAD-299".to_string(), 9)]).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while rig.fake.listing("SLOWREAD-299") != Some(9) {
        assert!(Instant::now() < deadline, "the newer level never went out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reads = rig.fake.calls("getListingsItem");
    assert!(
        reads < skus.len() as u64,
        "the newer level went out between the read-backs, not after them: {reads} reads first"
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_patch_that_did_not_take_is_read_back_and_sent_again() {
    let stock = stock("LOSSY", 12, 9);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 0, Rig::standard_fake().await).await;
    rig.fake.drop_every(4);
    rig.start_adapter("", "").await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    assert!(
        rig.fake.dropped() >= 2,
        "some accepted patches never applied"
    );
    assert!(
        rig.fake.calls("getListingsItem") >= skus.len() as u64,
        "each was read back"
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_listings_api_is_met_by_the_rate_it_names_and_everything_converges() {
    // Amazon's plan for this account is lower than the config says.
    let mut fake_rates = RATES.to_vec();
    fake_rates[2] = ("patchListingsItem", 40.0, 2);
    let fake = FakeSpApi::start(plans(&fake_rates), RULE, Duration::from_secs(3600)).await;
    let stock = stock("SLOW", 30, 4);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 0, fake).await;
    rig.start_adapter("", "").await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    assert!(
        rig.fake.throttled("patchListingsItem") >= 1,
        "Amazon throttled"
    );
    assert!(
        rig.fake.throttled("patchListingsItem") < skus.len() as u64,
        "the adapter slowed to Amazon's rate rather than retrying blindly"
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_buyer_comes_through_a_restricted_data_token_renewed_before_it_expires() {
    let stock = stock("B2B", 2, 20);
    let fake = Rig::standard_fake().await;
    // Renewed a quarter of its life before expiry: every 750 ms.
    fake.set_rdt_life(Duration::from_secs(1));
    let mut rig = Rig::new(&stock, 0, fake).await;
    rig.start_adapter("buyer_info = true", "").await;
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    rig.converged(&skus, Duration::from_secs(20)).await;
    let business = rig
        .fake
        .place_order(&[("B2B-0", 2, "10.00")], true, false)
        .unwrap();
    let retail = rig
        .fake
        .place_order(&[("B2B-1", 1, "5.00")], false, false)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (b, r) = loop {
        if let (Some(b), Some(r)) = (
            rig.reservation(&business).await,
            rig.reservation(&retail).await,
        ) {
            break (b, r);
        }
        assert!(Instant::now() < deadline, "the orders never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        b.customer_ref, "ACME GmbH",
        "the company's legal name from BuyerInfo: {b:?}"
    );
    assert_eq!(r.customer_ref, "", "a retail buyer is not named: {r:?}");
    // Polls go on past the RDT's life: it is asked for again, not per call.
    while rig.fake.rdt_grants() < 3 {
        assert!(
            Instant::now() < deadline,
            "the RDT was not renewed: {} grants",
            rig.fake.rdt_grants()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (grants, polls) = (rig.fake.rdt_grants(), rig.fake.calls("getOrders"));
    assert!(
        grants * 2 < polls,
        "cached between polls: {grants} RDTs for {polls} getOrders"
    );
    assert_eq!(rig.fake.rdt_refused(), 0);
    assert_eq!(
        rig.fake.unauthorized(),
        0,
        "no call went with an expired token"
    );
    assert!(rig.fake.buyer_info_served() >= 1);
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_role_for_buyer_info_orders_still_arrive_without_their_buyer() {
    let stock = stock("NOROLE", 1, 20);
    let skus: Vec<String> = stock.iter().map(|(s, _)| s.clone()).collect();
    let mut rig = Rig::new(&stock, 0, Rig::standard_fake().await).await;
    rig.fake.deny_rdt(true);
    rig.start_adapter("buyer_info = true", "").await;
    rig.converged(&skus, Duration::from_secs(20)).await;
    let id = rig
        .fake
        .place_order(&[("NOROLE-0", 1, "10.00")], true, false)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let r = loop {
        if let Some(r) = rig.reservation(&id).await {
            break r;
        }
        assert!(Instant::now() < deadline, "the order never arrived");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(r.customer_ref, "", "{r:?}");
    // Polls go on; the refused token is not asked for at every one.
    let polls = rig.fake.calls("getOrders");
    while rig.fake.calls("getOrders") < polls + 5 {
        assert!(Instant::now() < deadline, "polling stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        rig.fake.calls("createRestrictedDataToken") <= 2,
        "asked once (and once more with a fresh access token): {}",
        rig.fake.calls("createRestrictedDataToken")
    );
    rig.adapter.take().unwrap().stop().await;
}

#[tokio::test]
async fn the_fake_refuses_what_sp_api_refuses() {
    let fake = Rig::standard_fake().await;
    let http = stockpool::outbound::JsonHttp::new();
    let send = |method: hyper::Method, path: String, token: Option<String>, body: &'static str| {
        let http = http.clone();
        let url = format!("{}{path}", fake.url());
        async move {
            let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
            let token = token.unwrap_or_default();
            if !token.is_empty() {
                headers = vec![("x-amz-access-token", token.as_str())];
            }
            let a = http
                .send(
                    method,
                    &url.parse().unwrap(),
                    &headers,
                    bytes::Bytes::from(body),
                    Duration::from_secs(5),
                )
                .await
                .unwrap();
            let v: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
            (a.status.as_u16(), a.headers, v)
        }
    };
    let orders = |after: String| {
        format!(
            "/orders/v0/orders?MarketplaceIds={MARKETPLACE}&LastUpdatedAfter={}",
            stockpool::adapters::amazon::spapi::enc(&after)
        )
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, _, v) = send(
        hyper::Method::GET,
        orders(amazon::iso::format(now - 60_000)),
        None,
        "",
    )
    .await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_str()),
        (403, Some("Unauthorized")),
        "no token"
    );
    let (status, _, v) = send(
        hyper::Method::POST,
        "/auth/o2/token".into(),
        None,
        "grant_type=refresh_token&refresh_token=nope",
    )
    .await;
    assert_eq!(status, 401, "{v}");
    let form: &'static str = Box::leak(
        format!("grant_type=refresh_token&refresh_token={}&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}", stockpool::adapters::amazon::spapi::enc(REFRESH_TOKEN)).into_boxed_str(),
    );
    let (status, _, v) = send(hyper::Method::POST, "/auth/o2/token".into(), None, form).await;
    assert_eq!((status, v["expires_in"].as_u64()), (200, Some(3600)));
    let token = v["access_token"].as_str().unwrap().to_string();
    let (status, _, v) = send(
        hyper::Method::GET,
        orders(amazon::iso::format(now)),
        Some(token.clone()),
        "",
    )
    .await;
    assert_eq!(
        (status, v["errors"][0]["code"].as_str()),
        (400, Some("InvalidInput")),
        "newer than the rule allows: {v}"
    );
    let (status, _, _) = send(
        hyper::Method::GET,
        orders("yesterday".into()),
        Some(token.clone()),
        "",
    )
    .await;
    assert_eq!(status, 400, "not a date");
    // Restricted data tokens: only for what the fake knows, and only for it.
    for (body, why) in [
        (
            r#"{"restrictedResources":[{"method":"GET","path":"/orders/v0/orders/{orderId}/address","dataElements":["buyerInfo"]}]}"#,
            "a path it does not support",
        ),
        (
            r#"{"restrictedResources":[{"method":"GET","path":"/orders/v0/orders","dataElements":["buyerTaxIdentity"]}]}"#,
            "a data element it does not support",
        ),
        (
            r#"{"restrictedResources":[{"method":"GET","path":"/orders/v0/orders"}]}"#,
            "no data element",
        ),
        (r#"{"restrictedResources":[]}"#, "no resource"),
    ] {
        let (status, _, v) = send(
            hyper::Method::POST,
            "/tokens/2021-03-01/restrictedDataToken".into(),
            Some(token.clone()),
            body,
        )
        .await;
        assert_eq!(
            (status, v["errors"][0]["code"].as_str()),
            (400, Some("InvalidInput")),
            "{why}: {v}"
        );
    }
    let (status, _, v) = send(
        hyper::Method::POST,
        "/tokens/2021-03-01/restrictedDataToken".into(),
        Some(token.clone()),
        r#"{"restrictedResources":[{"method":"GET","path":"/orders/v0/orders","dataElements":["buyerInfo"]}]}"#,
    )
    .await;
    assert_eq!((status, v["expiresIn"].as_u64()), (200, Some(3600)), "{v}");
    let rdt = v["restrictedDataToken"].as_str().unwrap().to_string();
    let (status, _, _) = send(
        hyper::Method::GET,
        "/orders/v0/orders/123-1234567-1234567/orderItems".into(),
        Some(rdt.clone()),
        "",
    )
    .await;
    assert_eq!(status, 403, "an RDT is for the operation it was asked for");
    fake.add_listing("RDT-1", 5);
    let id = fake
        .place_order(&[("RDT-1", 1, "2.00")], true, false)
        .unwrap();
    tokio::time::sleep(RULE + Duration::from_millis(100)).await;
    let after = amazon::iso::format(now - 60_000);
    let (status, _, plain) = send(
        hyper::Method::GET,
        orders(after.clone()),
        Some(token.clone()),
        "",
    )
    .await;
    assert_eq!(status, 200, "{plain}");
    assert_eq!(plain["payload"]["Orders"][0]["AmazonOrderId"], id.as_str());
    assert!(
        plain["payload"]["Orders"][0].get("BuyerInfo").is_none(),
        "no BuyerInfo without an RDT: {plain}"
    );
    let (status, _, restricted) = send(hyper::Method::GET, orders(after), Some(rdt), "").await;
    assert_eq!(status, 200, "{restricted}");
    assert_eq!(
        restricted["payload"]["Orders"][0]["BuyerInfo"]["BuyerTaxInfo"]["CompanyLegalName"],
        "ACME GmbH"
    );
    let mut throttled = None;
    for _ in 0..40 {
        let (status, headers, v) = send(
            hyper::Method::GET,
            orders(amazon::iso::format(now - 60_000)),
            Some(token.clone()),
            "",
        )
        .await;
        if status == 429 {
            assert_eq!(v["errors"][0]["code"], "QuotaExceeded");
            throttled = headers
                .get("x-amzn-RateLimit-Limit")
                .map(|h| h.to_str().unwrap().to_string());
            break;
        }
        assert_eq!(status, 200, "{v}");
    }
    assert_eq!(
        throttled.as_deref(),
        Some("20"),
        "over the burst: 429 with the rate"
    );
}
