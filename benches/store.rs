//! One group-commit transaction of the hot workload, as the writer hands it
//! to each store: N one-line orders of one SKU (a pool delta, a ledger line
//! and a reservation each). The SQLite store sends it as one query; the
//! Postgres store in three round trips (`BEGIN` with the fencing step and
//! the writers' lock, one statement for every kind of row, `COMMIT`). The
//! writer's batches also carry channel events; this one does not. Durable:
//! SQLite with `synchronous=FULL`, Postgres with `synchronous_commit=on`,
//! so each figure includes the disk's flush.
//!
//! `cargo bench --bench store` (Postgres at `STOCKPOOL_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432`; skipped when unreachable).

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sqlx::{Connection, Executor, PgConnection};
use stockpool::store::{PostgresStore, SqliteStore, Store};

/// A fresh database on the test server, dropped by the caller; None when
/// the server is unreachable.
async fn postgres() -> Option<(String, String)> {
    let server = std::env::var("STOCKPOOL_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string());
    let server = server.trim_end_matches('/').to_string();
    let name = format!("stockpool_bench_store_{}", std::process::id());
    let mut admin = tokio::time::timeout(
        Duration::from_secs(5),
        PgConnection::connect(&format!("{server}/postgres")),
    )
    .await
    .ok()?
    .ok()?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .ok()?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .ok()?;
    Some((server, name))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<(&str, Arc<dyn Store>)> = vec![(
        "sqlite",
        Arc::new(rt.block_on(SqliteStore::open(dir.path())).unwrap()),
    )];
    let pg = rt.block_on(postgres());
    match &pg {
        Some((server, name)) => stores.push((
            "postgres",
            Arc::new(
                rt.block_on(PostgresStore::connect(&format!("{server}/{name}")))
                    .unwrap(),
            ),
        )),
        None => eprintln!("store bench: Postgres unreachable, measuring SQLite only"),
    }
    let next = AtomicU64::new(0);
    let mut group = c.benchmark_group("commit");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    for (name, store) in &stores {
        for orders in support::BATCHES {
            group.throughput(Throughput::Elements(orders));
            group.bench_with_input(BenchmarkId::new(*name, orders), &orders, |b, &orders| {
                b.iter_batched(
                    || support::hot_batch(&next, orders),
                    |ops| rt.block_on(store.commit(&ops)).unwrap(),
                    criterion::BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
    drop(stores);
    if let Some((server, name)) = pg {
        rt.block_on(async {
            if let Ok(mut admin) = PgConnection::connect(&format!("{server}/postgres")).await {
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
