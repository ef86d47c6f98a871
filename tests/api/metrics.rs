//! Observability: `/metrics` after real traffic (what the Grafana dashboard
//! queries is there, `promtool` accepts it, RPCs are labelled by method and
//! code) and gRPC health following readiness.
//!
//! Every server in this binary shares the process's one recorder, so these
//! tests assert that series exist and counters reached what their own
//! traffic adds, never exact values.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use stockpool::api::pb;
use stockpool::domain::{ChannelCode, OrderId, Quantity, Sku};
use stockpool::engine::{Engine, ReserveCmd, SystemClock};
use stockpool::publish::Publisher;
use stockpool::store::SqliteStore;
use tonic_health::pb::health_server::Health;
use tonic_health::pb::{health_check_response::ServingStatus, HealthCheckRequest};
use tonic_health::server::HealthService;

use crate::helpers::{http_get, spawn_app, Flaky, TestApp};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/dashboards/grafana/stockpool.json"
);

/// Traffic that makes every kind of series appear: a count, an accepted
/// reservation, its replay, a rejected one, and a lookup that fails.
async fn serve_some_traffic(app: &mut TestApp) {
    app.set_stock("MUG", "WH-WEST", 10).await;
    app.reserve("shopify", "m-1", &[("MUG", 2)], 0)
        .await
        .expect("fits");
    let again = app
        .reserve("shopify", "m-1", &[("MUG", 2)], 0)
        .await
        .expect("replay");
    assert!(again.replayed);
    let refused = app
        .reserve("shopify", "m-2", &[("MUG", 1_000)], 0)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    let missing = app
        .inventory
        .get_reservation(pb::GetReservationRequest {
            channel: "shopify".into(),
            order_id: "never-reserved".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

/// The body of a `/metrics` response, after checking it is a 200.
async fn scrape(app: &TestApp) -> String {
    let response = http_get(app.http_addr, "/metrics").await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    body.to_string()
}

/// One sample line of the text format: name, labels as written, value.
struct Sample<'a> {
    name: &'a str,
    labels: &'a str,
    value: f64,
}

fn samples(scrape: &str) -> Vec<Sample<'_>> {
    scrape
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.trim_end_matches('}')),
                None => (series, ""),
            };
            Sample {
                name,
                labels,
                value: value.parse().expect("a numeric value"),
            }
        })
        .collect()
}

/// The value of the sample named `name` carrying every one of `labels`.
fn value_of(scrape: &str, name: &str, labels: &[&str]) -> Option<f64> {
    samples(scrape)
        .into_iter()
        .find(|s| s.name == name && labels.iter().all(|l| s.labels.contains(l)))
        .map(|s| s.value)
}

/// Every `stockpool_*` name in every query of the dashboard: panel targets
/// (rows included) and templating variables.
fn dashboard_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(DASHBOARD).expect("the dashboard file is readable");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut queries = Vec::new();
    let mut panels: Vec<&serde_json::Value> = dashboard["panels"]
        .as_array()
        .expect("the dashboard has panels")
        .iter()
        .collect();
    while let Some(panel) = panels.pop() {
        if let Some(nested) = panel["panels"].as_array() {
            panels.extend(nested);
        }
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.extend(target["expr"].as_str().map(str::to_string));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        queries.extend(variable["definition"].as_str().map(str::to_string));
    }
    assert!(!queries.is_empty(), "the dashboard queries nothing");

    let mut names = BTreeSet::new();
    for query in &queries {
        let mut rest = query.as_str();
        while let Some(at) = rest.find("stockpool_") {
            let preceded_by_ident = rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
            let tail = &rest[at..];
            let len = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(tail.len());
            if !preceded_by_ident {
                names.insert(tail[..len].to_string());
            }
            rest = &tail[len..];
        }
    }
    names
}

#[tokio::test]
async fn every_metric_the_dashboard_queries_is_exported_after_traffic() {
    let mut app = spawn_app().await;
    serve_some_traffic(&mut app).await;
    let scrape = scrape(&app).await;

    let exported: BTreeSet<&str> = samples(&scrape).iter().map(|s| s.name).collect();
    let queried = dashboard_metric_names();
    assert!(
        queried.len() >= 15,
        "the dashboard should chart every area; found only {queried:?}"
    );
    // Exact sample names: a `_bucket` query needs a real histogram, which
    // the scrape only has when buckets were configured (not a summary).
    let missing: Vec<&String> = queried
        .iter()
        .filter(|name| !exported.contains(name.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics /metrics does not export: {missing:?}\n--- scrape ---\n{scrape}"
    );
}

#[tokio::test]
async fn reservations_are_counted_by_channel_and_outcome() {
    let mut app = spawn_app().await;
    serve_some_traffic(&mut app).await;
    let scrape = scrape(&app).await;

    for outcome in ["accepted", "rejected", "replayed"] {
        let n = value_of(
            &scrape,
            "stockpool_reservations_total",
            &["channel=\"shopify\"", &format!("outcome=\"{outcome}\"")],
        );
        assert!(n >= Some(1.0), "{outcome}: {n:?}");
    }
    let b2b = value_of(
        &scrape,
        "stockpool_reservations_total",
        &["channel=\"b2b\"", "outcome=\"rejected\""],
    );
    assert!(
        b2b.is_some(),
        "a declared channel's series exist before its first reservation"
    );
    assert!(value_of(
        &scrape,
        "stockpool_published_units",
        &["channel=\"amazon\""]
    )
    .is_some());
}

#[tokio::test]
async fn rpc_calls_are_counted_and_timed_by_method_and_the_code_they_ended_with() {
    let mut app = spawn_app().await;
    serve_some_traffic(&mut app).await;
    let scrape = scrape(&app).await;

    // OK travels in the trailers; errors in the headers of a trailers-only
    // response. Both must be read.
    for (method, code) in [
        ("SetStock", "OK"),
        ("Reserve", "OK"),
        ("Reserve", "FAILED_PRECONDITION"),
        ("GetReservation", "NOT_FOUND"),
    ] {
        let labels = [format!("method=\"{method}\""), format!("code=\"{code}\"")];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        let calls = value_of(&scrape, "stockpool_rpcs_total", &labels);
        assert!(calls >= Some(1.0), "{method} {code}: {calls:?}");
        let timed = value_of(&scrape, "stockpool_rpc_duration_seconds_count", &labels);
        assert!(timed >= Some(1.0), "{method} {code} timed: {timed:?}");
    }
    assert!(
        scrape.contains("stockpool_rpc_duration_seconds_bucket{")
            && scrape.contains("le=\"0.000025\""),
        "RPC latency is a histogram whose buckets start at 25 µs"
    );
}

#[tokio::test]
async fn a_path_the_server_does_not_implement_is_labelled_unknown() {
    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(app.grpc_url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = "/stockpool.v1.Inventory/NoSuchMethod-3f1c9a"
        .parse()
        .unwrap();
    let err = grpc
        .unary::<_, (), _>(
            tonic::Request::new(()),
            path,
            tonic_prost::ProstCodec::<(), ()>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    let scrape = scrape(&app).await;
    assert!(
        !scrape.contains("NoSuchMethod"),
        "a request path became a label"
    );
    let unknown = value_of(
        &scrape,
        "stockpool_rpcs_total",
        &["method=\"unknown\"", "code=\"UNIMPLEMENTED\""],
    );
    assert!(unknown >= Some(1.0), "{unknown:?}");
}

#[tokio::test]
async fn the_scrape_passes_promtool_check_metrics() {
    let mut app = spawn_app().await;
    serve_some_traffic(&mut app).await;
    let scrape = scrape(&app).await;

    let promtool = std::process::Command::new("promtool")
        .arg("--version")
        .output();
    if promtool.is_err() {
        let on_ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !on_ci,
            "promtool is not on PATH: install Debian's `prometheus` package"
        );
        eprintln!(
            "\n!!!!!!!! promtool is not on PATH: `promtool check metrics` was NOT run. \
             Install it (apt-get install prometheus) to run this check. !!!!!!!!\n"
        );
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("scrape.prom");
    std::fs::write(&file, &scrape).unwrap();
    let output = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool check metrics failed:\n{}{}\n--- scrape ---\n{scrape}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

async fn health_of(health: &HealthService, service: &str) -> ServingStatus {
    let response = health
        .check(tonic::Request::new(HealthCheckRequest {
            service: service.into(),
        }))
        .await
        .expect("the service has a status");
    response.into_inner().status()
}

async fn wait_for_health(health: &HealthService, service: &str, want: ServingStatus) {
    for _ in 0..100 {
        if health_of(health, service).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{service:?} never became {want:?}");
}

#[tokio::test]
async fn grpc_health_is_not_serving_while_readyz_would_fail_and_serving_again_after() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Flaky::new(SqliteStore::open(dir.path()).await.unwrap()));
    let engine = Engine::open(store.clone(), crate::helpers::seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    let sku = Sku::parse("TEE").unwrap();
    crate::helpers::count_in(&engine, sku.as_str(), "WH-WEST", 10)
        .await
        .unwrap();
    let (reporter, _server) = tonic_health::server::health_reporter();
    let health = HealthService::from_health_reporter(reporter.clone());
    let serving = stockpool::ha::Serving::new("sqlite");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (publisher, _publishing) = Publisher::start(engine.clone(), stopped.clone());
    serving.activate(stockpool::ha::Term {
        epoch: 0,
        engine: engine.clone(),
        grpc: stockpool::api::TermServices::new(
            engine.clone(),
            publisher,
            Default::default(),
            serving.clone(),
        ),
        http: axum::Router::new(),
    });
    let follower = tokio::spawn(stockpool::http::follow_readiness(
        serving.clone(),
        reporter,
        stopped,
    ));
    assert_eq!(health_of(&health, "").await, ServingStatus::Serving);

    store.failing.store(true, Ordering::SeqCst);
    store.reads_failing.store(true, Ordering::SeqCst);
    engine
        .reserve(ReserveCmd {
            channel: ChannelCode::parse("shopify").unwrap(),
            order_id: OrderId::parse("h-1").unwrap(),
            lines: vec![(sku, Quantity::parse("quantity", 1).unwrap())],
            hold_seconds: 0,
            terms: Default::default(),
        })
        .await
        .expect_err("the store is down");
    assert!(!stockpool::http::is_ready(&serving));
    wait_for_health(&health, "", ServingStatus::NotServing).await;
    wait_for_health(&health, "stockpool.v1.Inventory", ServingStatus::NotServing).await;

    store.failing.store(false, Ordering::SeqCst);
    store.reads_failing.store(false, Ordering::SeqCst);
    wait_for_health(&health, "", ServingStatus::Serving).await;
    wait_for_health(&health, "stockpool.v1.Admin", ServingStatus::Serving).await;
    assert!(stockpool::http::is_ready(&serving));

    stop.send(true).unwrap();
    follower.await.unwrap();
    assert_eq!(
        health_of(&health, "stockpool.v1.Inventory").await,
        ServingStatus::NotServing,
        "a stopping server tells balancers to go elsewhere"
    );
}

#[tokio::test]
async fn the_scrape_has_build_info_process_series_and_rpcs_labelled_by_service() {
    let mut app = spawn_app().await;
    serve_some_traffic(&mut app).await;
    let scrape = scrape(&app).await;
    let info = value_of(
        &scrape,
        "stockpool_build_info",
        &[
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
            "store=\"sqlite\"",
        ],
    );
    assert_eq!(info, Some(1.0));
    for series in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        let v = value_of(&scrape, series, &[]);
        assert!(v.is_some_and(|v| v > 0.0), "{series}: {v:?}");
    }
    let reserve = value_of(
        &scrape,
        "stockpool_rpcs_total",
        &["service=\"stockpool.v1.Inventory\"", "method=\"Reserve\""],
    );
    assert!(reserve >= Some(1.0), "{reserve:?}");
}

#[test]
fn the_alert_rules_pass_their_promtool_unit_tests() {
    if std::process::Command::new("promtool")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "promtool is not on PATH: install Debian's `prometheus` package"
        );
        eprintln!("\n!!!!!!!! promtool is not on PATH: the alert rules were NOT tested !!!!!!!!\n");
        return;
    }
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/dashboards/prometheus"
            ))
            .output()
            .expect("promtool runs");
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
