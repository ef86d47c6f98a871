//! Time to serving on Postgres: how long `PostgresStore::connect` plus
//! `Engine::open` take over a database of N SKUs in 3 warehouses, and how
//! much resident memory the loaded state costs per pool.
//!
//! `cargo bench --bench startup` (N = 1,000,000 by default;
//! `STOCKPOOL_STARTUP_SKUS=N` to change; the server is `STOCKPOOL_TEST_PG`,
//! default `postgres://postgres@127.0.0.1:5432`). It fills a fresh database
//! `stockpool_bench_<random>` server-side with `generate_series`, measures,
//! and drops the database. Without a reachable server it says so and exits 0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use stockpool::engine::{Engine, Seed, SystemClock};
use stockpool::store::{PostgresStore, Store};

const DEFAULT_SKUS: i64 = 1_000_000;

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(run());
}

fn server_url() -> String {
    std::env::var("STOCKPOOL_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
        .trim_end_matches('/')
        .to_string()
}

/// `VmRSS` and `VmHWM` (peak) of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

async fn run() {
    let skus: i64 = std::env::var("STOCKPOOL_STARTUP_SKUS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(DEFAULT_SKUS);
    let maintenance_url = format!("{}/postgres", server_url());
    let mut admin = match tokio::time::timeout(
        Duration::from_secs(5),
        PgConnection::connect(&maintenance_url),
    )
    .await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            return println!("startup bench: Postgres unreachable ({e}); nothing measured")
        }
        Err(_) => return println!("startup bench: Postgres did not answer; nothing measured"),
    };
    let name = format!("stockpool_bench_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .expect("create the bench database");
    let url = format!("{}/{name}", server_url());

    let result = measure(&url, skus).await;

    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .expect("drop the bench database");
    let _ = admin.close().await;
    if let Err(e) = result {
        eprintln!("startup bench failed: {e}");
        std::process::exit(1);
    }
}

async fn measure(url: &str, skus: i64) -> Result<(), Box<dyn std::error::Error>> {
    let pools = skus * 3;
    println!("startup bench: {skus} SKUs x 3 warehouses = {pools} pools");

    // Schema, then rows made by the server itself.
    PostgresStore::connect(url).await?.close().await;
    let filled = Instant::now();
    let mut conn = PgConnection::connect(url).await?;
    conn.execute("SET synchronous_commit = off").await?;
    conn.execute(
        "INSERT INTO warehouses (code, name, position) VALUES \
         ('WH-EAST', 'East', 1), ('WH-WEST', 'West', 2), ('WH-CENTRAL', 'Central', 3)",
    )
    .await?;
    sqlx::query(
        "INSERT INTO pools (sku, warehouse, on_hand, reserved, version) \
         SELECT 'SKU-' || lpad(i::text, 8, '0'), w.code, 100 + i % 50, i % 7, 1 + i % 3 \
         FROM generate_series(1, $1::bigint) AS i CROSS JOIN warehouses AS w",
    )
    .bind(skus)
    .execute(&mut conn)
    .await?;
    // As a long-lived database would be: statistics known, pages all-visible.
    conn.execute("VACUUM ANALYZE pools").await?;
    conn.close().await?;
    println!(
        "  fill (INSERT ... SELECT FROM generate_series, VACUUM ANALYZE): {:.1} s",
        filled.elapsed().as_secs_f64()
    );

    let (rss_before, _) = memory();
    let started = Instant::now();
    let store = Arc::new(PostgresStore::connect(url).await?);
    let connected = started.elapsed();
    let engine = Engine::open(store.clone(), Seed::default(), Arc::new(SystemClock)).await?;
    let serving = started.elapsed();
    let (rss_after, peak) = memory();
    let loaded_skus = engine.skus().len();
    if loaded_skus as i64 != skus {
        return Err(format!("loaded {loaded_skus} SKUs, expected {skus}").into());
    }

    let growth = rss_after.saturating_sub(rss_before);
    let peak_growth = peak.saturating_sub(rss_before);
    println!(
        "  PostgresStore::connect (pool + migrations check): {:.0} ms",
        connected.as_secs_f64() * 1000.0
    );
    println!(
        "  Engine::open (load + build memory): {:.0} ms",
        (serving - connected).as_secs_f64() * 1000.0
    );
    println!(
        "  time to serving: {:.2} s ({:.2} us per pool)",
        serving.as_secs_f64(),
        serving.as_secs_f64() * 1e6 / pools as f64
    );
    println!(
        "  resident memory: {:.0} MiB before, {:.0} MiB serving: +{:.0} MiB, {:.0} bytes per pool",
        mib(rss_before),
        mib(rss_after),
        mib(growth),
        growth as f64 / pools as f64
    );
    println!(
        "  peak resident during open: +{:.0} MiB over before ({:.0} bytes per pool)",
        mib(peak_growth),
        peak_growth as f64 / pools as f64
    );

    // The load alone, again, now that everything is warm.
    let again = Instant::now();
    let snapshot = store.load().await?;
    println!(
        "  store.load() alone, warm: {:.0} ms for {} pools",
        again.elapsed().as_secs_f64() * 1000.0,
        snapshot.pools.len()
    );
    drop(snapshot);
    drop(engine);
    store.close().await;
    Ok(())
}
