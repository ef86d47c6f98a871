//! One group-commit transaction of the hot workload, as the writer hands it
//! to each store: N one-line orders of one SKU (a pool delta, a ledger line
//! and a reservation each). The SQLite store sends it as one query; the
//! Postgres store as one statement per kind of row. Durable: SQLite with
//! `synchronous=FULL`, Postgres with `synchronous_commit=on`, so each
//! figure includes the disk's flush.
//!
//! `cargo bench --bench store` (Postgres at `STOCKPOOL_TEST_PG`, default
//! `postgres://postgres@127.0.0.1:5432`; skipped when unreachable).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sqlx::{Connection, Executor, PgConnection};
use stockpool::domain::{
    Allocation, ChannelCode, OrderId, Reservation, Sku, Status, WarehouseCode,
};
use stockpool::store::{LedgerEntry, MovementKind, Op, PostgresStore, SqliteStore, Store};

/// Orders per transaction: one alone (an idle server), and the batches a
/// loaded hot SKU produces.
const BATCHES: [u64; 3] = [1, 32, 256];

/// The ops of `orders` one-unit orders of the hot SKU, numbered from `next`.
fn batch(next: &AtomicU64, orders: u64) -> Vec<Op> {
    let sku = Sku::parse("HOT").unwrap();
    let wh = WarehouseCode::parse("WH-EAST").unwrap();
    let channel = ChannelCode::parse("shopify").unwrap();
    let mut ops = Vec::new();
    for _ in 0..orders {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let order_id = OrderId::parse(format!("o-{n}")).unwrap();
        ops.push(Op::PoolDelta {
            sku: sku.clone(),
            warehouse: wh.clone(),
            on_hand: 0,
            reserved: 1,
        });
        ops.push(Op::Ledger(LedgerEntry {
            at_ms: 1_700_000_000_000,
            sku: sku.clone(),
            warehouse: wh.clone(),
            kind: MovementKind::Reserve,
            on_hand_delta: 0,
            reserved_delta: 1,
            on_hand_after: 1_000_000,
            reserved_after: n as i64,
            reason: String::new(),
            reference: format!("shopify/o-{n}"),
        }));
        ops.push(Op::Reservation(Box::new(Reservation {
            id: format!("res_{n:032x}"),
            channel: channel.clone(),
            order_id,
            status: Status::Confirmed,
            lines: vec![(sku.clone(), 1)],
            allocations: vec![Allocation::new(sku.clone(), wh.clone(), 1)],
            created_at_ms: 1_700_000_000_000,
            expires_at_ms: 0,
            shipments: Vec::new(),
            refunds: Vec::new(),
            terms: Default::default(),
        })));
    }
    ops
}

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
        for orders in BATCHES {
            group.throughput(Throughput::Elements(orders));
            group.bench_with_input(BenchmarkId::new(*name, orders), &orders, |b, &orders| {
                b.iter_batched(
                    || batch(&next, orders),
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
