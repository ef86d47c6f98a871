//! `stockpool bench` against a real server: what it reports is what the
//! server did.

use stockpool::api::pb;
use stockpool::cli::bench::{self, BenchArgs, Format, Workload};

use crate::helpers::spawn_app;

fn args(app: &crate::helpers::TestApp, workload: Workload) -> BenchArgs {
    BenchArgs {
        workload,
        clients: 4,
        rate: None,
        duration: 1.0,
        connections: 2,
        skus: 20,
        channel: "shopify".into(),
        metrics: format!("http://{}/metrics", app.http_addr),
        probe_every_ms: 20,
        no_setup: false,
        output: Format::Json,
    }
}

async fn reserved(app: &mut crate::helpers::TestApp, skus: &[&str]) -> i64 {
    app.stock(skus).await.iter().map(|l| l.reserved).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_closed_loop_reports_every_order_the_server_took_with_commit_batches_and_watch_lag() {
    let mut app = spawn_app().await;
    let report = bench::run(&app.grpc_url, None, None, &args(&app, Workload::Hot))
        .await
        .expect("the bench runs");

    assert!(report.orders > 0 && report.errors.is_empty(), "{report:?}");
    assert_eq!(
        reserved(&mut app, &["BENCH-HOT"]).await,
        report.orders as i64,
        "every order counted was reserved, once"
    );
    let reserve = &report.latency["Reserve"];
    assert_eq!(reserve.count, report.orders);
    assert!(
        reserve.p50_ms <= reserve.p90_ms
            && reserve.p90_ms <= reserve.p99_ms
            && reserve.p99_ms <= reserve.p999_ms
            && reserve.p999_ms <= reserve.max_ms
            && reserve.p50_ms > 0.0,
        "{reserve:?}"
    );
    let batches = report.commit_batches.as_ref().expect("metrics were read");
    assert!(
        batches.commits > 0 && batches.mean_jobs >= 1.0,
        "{batches:?}"
    );
    let lag = report.watch_lag.as_ref().expect("a probe ran");
    assert!(
        lag.count > 0 && report.watch_lost == 0,
        "{lag:?}, lost {}",
        report.watch_lost
    );
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["workload"], "hot");
    assert_eq!(json["mode"], "closed");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_open_loop_sends_the_rate_asked_for_and_the_lifecycle_ships_what_it_reserved() {
    let mut app = spawn_app().await;
    let mut open = args(&app, Workload::Catalog);
    open.rate = Some(200.0);
    open.probe_every_ms = 0;
    let report = bench::run(&app.grpc_url, None, None, &open).await.unwrap();
    assert_eq!(report.mode, "open");
    assert_eq!(
        report.orders, 200,
        "200 orders due in one second, all taken: {report:?}"
    );
    assert!(report.watch_lag.is_none());

    let mut lifecycle = args(&app, Workload::Lifecycle);
    lifecycle.no_setup = true;
    lifecycle.probe_every_ms = 0;
    let skus: Vec<String> = (0..20).map(|i| format!("BENCH-{i}")).collect();
    let skus: Vec<&str> = skus.iter().map(String::as_str).collect();
    let before: Vec<pb::StockLevel> = app.stock(&skus).await;
    let report = bench::run(&app.grpc_url, None, None, &lifecycle)
        .await
        .unwrap();
    assert!(report.orders > 0 && report.errors.is_empty(), "{report:?}");
    for rpc in ["Reserve", "Confirm", "Fulfill"] {
        assert_eq!(report.latency[rpc].count, report.orders, "{rpc}");
    }
    let levels = app.stock(&skus).await;
    let shipped: i64 = levels.iter().map(|l| 1_000_000_000 - l.on_hand).sum();
    assert!(
        shipped >= report.orders as i64 && shipped <= 3 * report.orders as i64,
        "each order shipped 1 to 3 units: {shipped} for {} orders",
        report.orders
    );
    assert_eq!(
        levels.iter().map(|l| l.reserved).sum::<i64>()
            - before.iter().map(|l| l.reserved).sum::<i64>(),
        0,
        "shipped orders hold nothing"
    );
    app.stop().await;
}
