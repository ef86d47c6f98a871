//! The Shopify adapter's lag: from a committed Reserve (its answer) to
//! Shopify's write of the new level, against a real server on the
//! embedded store and the fake Shopify (`tests/support/fake_shopify.rs`)
//! with a Shopify Plus-sized bucket, so the figure is the adapter's own
//! path (stream, state, read, mutation), not Shopify's rate limit.
//!
//! Orders go one at a time (each waits for its write): p50/p99/max of the
//! lag, and of the Reserve call.
//!
//! `cargo bench --bench shopify_lag` (`STOCKPOOL_BENCH_ORDERS`, default 1000)

#[path = "support/mod.rs"]
mod support;

#[path = "../tests/support/fake_shopify.rs"]
mod fake_shopify;

use std::time::{Duration, Instant};

use stockpool::adapters::shopify::{self, ShopifyConfig};
use stockpool::adapters::Upstream;
use stockpool::api::pb::{self, inventory_client::InventoryClient};
use stockpool::config::Config;
use stockpool::server::Application;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn lag(orders: usize) {
    let skus = 100;
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.seed = support::seed();
    let app = Application::build(config).await.unwrap();
    let engine = app.engine().expect("SQLite: active from the start");
    let fake = fake_shopify::FakeShopify::start(20_000.0, 1_000.0).await;
    for i in 0..skus {
        let sku = format!("LAG-{i}");
        engine
            .set_stock(stockpool::engine::SetCmd {
                sku: stockpool::domain::Sku::parse(sku.clone()).unwrap(),
                warehouse: stockpool::domain::WarehouseCode::parse("WH-WEST").unwrap(),
                on_hand: 100_000,
                reason: String::new(),
                expected_version: None,
                movement_id: None,
            })
            .await
            .unwrap();
        fake.add_variant(&sku);
    }
    let url = format!("http://{}", app.grpc_addr());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stopped.await;
    }));
    let text = format!(
        "shop = \"bench.myshopify.com\"\nadmin_url = \"{}\"\nlocation_id = \"{}\"\n\
         webhook_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n\
         reconcile_interval_s = 0\n",
        fake.url(),
        fake_shopify::LOCATION,
        dir.path().join("adapter").display()
    );
    let config = ShopifyConfig::parse(
        &text,
        Some(fake_shopify::SECRET.into()),
        Some(fake_shopify::TOKEN.into()),
    )
    .unwrap();
    let adapter = shopify::start(config, Upstream::new(&url, None, None))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while (0..skus).any(|i| fake.level(&format!("LAG-{i}")).available != 100_000) {
        assert!(
            Instant::now() < deadline,
            "the first levels were not written"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let mut inv = InventoryClient::connect(url).await.unwrap();
    let mut lags = Vec::with_capacity(orders);
    let mut calls = Vec::with_capacity(orders);
    for n in 0..orders {
        let sku = format!("LAG-{}", n % skus);
        let expected = 100_000 - 1 - (n / skus) as i64;
        let sent = Instant::now();
        inv.reserve(pb::ReserveRequest {
            channel: "amazon".into(),
            order_id: format!("bench-{n}"),
            lines: vec![pb::Line {
                sku: sku.clone(),
                quantity: 1,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap();
        let acked = Instant::now();
        calls.push(acked - sent);
        loop {
            if let Some(w) = fake
                .writes()
                .iter()
                .rev()
                .find(|w| w.sku == sku && w.on_hand == expected)
            {
                lags.push(w.at.saturating_duration_since(acked));
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(10),
                "no write for order {n}"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    }
    lags.sort();
    calls.sort();
    println!(
        "shopify lag over {orders} orders (committed Reserve -> Shopify's write): p50 {:?} p99 {:?} max {:?}; \
         Reserve call: p50 {:?} p99 {:?}; {} throttled calls",
        percentile(&lags, 0.5),
        percentile(&lags, 0.99),
        lags.last().unwrap(),
        percentile(&calls, 0.5),
        percentile(&calls, 0.99),
        fake.calls().iter().filter(|c| c.over_budget).count(),
    );
    adapter.stop().await;
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

fn main() {
    let orders = std::env::var("STOCKPOOL_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(lag(orders));
}
