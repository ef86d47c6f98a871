//! Two figures of issue 4, printed rather than sampled by criterion:
//!
//! 1. Latency from a Reserve to a `WatchChannelStock` watcher receiving the
//!    new level, over gRPC against a real server on the embedded store:
//!    p50/p99 of "Reserve sent -> update received" and of the Reserve call.
//! 2. `SimulateRules` (the engine's dry run) over 100k SKUs.
//!
//! `cargo bench --bench publish` (`STOCKPOOL_BENCH_ORDERS`, default 2000)

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockpool::api::pb::{self, inventory_client::InventoryClient};
use stockpool::config::Config;
use stockpool::domain::{ChannelCode, Rule};
use stockpool::server::Application;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

async fn watch_latency(orders: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path());
    config.seed = support::seed();
    let app = Application::build(config).await.unwrap();
    // Stock every SKU in WH-WEST only: outside b2b's fence, so each
    // one-unit shopify order moves shopify's published figure.
    let engine = app.engine().expect("SQLite: active from the start");
    for i in 0..orders {
        engine
            .set_stock(stockpool::engine::SetCmd {
                sku: stockpool::domain::Sku::parse(format!("SKU-{i}")).unwrap(),
                warehouse: stockpool::domain::WarehouseCode::parse("WH-WEST").unwrap(),
                on_hand: 10,
                reason: String::new(),
                expected_version: None,
                movement_id: None,
            })
            .await
            .unwrap();
    }
    let url = format!("http://{}", app.grpc_addr());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run(async {
        let _ = stop_rx.await;
    }));
    let mut client = InventoryClient::connect(url).await.unwrap();
    let mut stream = client
        .watch_channel_stock(pb::WatchChannelStockRequest {
            channel: "shopify".into(),
            after_seq: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut snapshot = 0;
    while snapshot < orders {
        let u = stream.message().await.unwrap().unwrap();
        if u.published == 10 {
            snapshot += 1;
        }
    }

    let mut to_watcher = Vec::with_capacity(orders);
    let mut rpc = Vec::with_capacity(orders);
    for i in 0..orders {
        let sku = format!("SKU-{i}");
        let sent = Instant::now();
        client
            .reserve(pb::ReserveRequest {
                channel: "shopify".into(),
                order_id: format!("bench-{i}"),
                lines: vec![pb::Line {
                    sku: sku.clone(),
                    quantity: 1,
                    warehouse: String::new(),
                    ..Default::default()
                }],
                hold_seconds: 0,
                ..Default::default()
            })
            .await
            .unwrap();
        rpc.push(sent.elapsed());
        loop {
            let u = stream.message().await.unwrap().unwrap();
            if u.sku == sku && u.published == 9 {
                break;
            }
        }
        to_watcher.push(sent.elapsed());
    }
    to_watcher.sort();
    rpc.sort();
    println!(
        "watch latency over {orders} orders: Reserve sent -> watcher got the level: p50 {:?} p99 {:?} max {:?}; \
         Reserve call alone: p50 {:?} p99 {:?}",
        percentile(&to_watcher, 0.5),
        percentile(&to_watcher, 0.99),
        to_watcher.last().unwrap(),
        percentile(&rpc, 0.5),
        percentile(&rpc, 0.99),
    );
    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
}

async fn simulate(skus: usize) {
    let engine = support::stocked_engine(Arc::new(support::NullStore), skus, 500).await;
    let proposed = vec![Rule {
        channel: Some(ChannelCode::parse("amazon").unwrap()),
        share_percent: Some(30),
        buffer: Some(2),
        ..Rule::default()
    }];
    let mut best = Duration::MAX;
    let mut changed = 0;
    for _ in 0..5 {
        let started = Instant::now();
        changed = engine.simulate_rules(&proposed, &[]).unwrap().len();
        best = best.min(started.elapsed());
    }
    println!("SimulateRules over {skus} SKUs (amazon default changed, {changed} figures differ): best of 5 {best:?}");
}

fn main() {
    let orders = std::env::var("STOCKPOOL_BENCH_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(watch_latency(orders));
    rt.block_on(simulate(100_000));
}
