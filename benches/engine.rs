//! Reserve throughput of the in-process engine: one hot SKU (a flash sale)
//! and orders spread over 10k SKUs, 16 concurrent callers. Measured twice:
//! over a store that commits instantly (the engine's own cost: locking,
//! rule resolution, fences, sourcing) and over the embedded SQLite store
//! (durable acknowledgement with group commit), the hot SKU also with the
//! Odoo outbox row written in each reservation's transaction.
//!
//! `cargo bench --bench engine`

#[path = "support/mod.rs"]
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stockpool::domain::{ChannelCode, OrderId, Quantity, Sku};
use stockpool::engine::{Engine, ReserveCmd};
use stockpool::store::{SqliteStore, Store};

const CALLERS: u64 = 16;
const CHANNELS: [&str; 3] = ["shopify", "amazon", "b2b"];

/// An engine whose `skus` SKUs each hold plenty in every warehouse.
fn engine(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>, skus: usize) -> Engine {
    rt.block_on(support::stocked_engine(store, skus, 1_000_000_000))
}

/// Runs `iters` one-unit reserves from [`CALLERS`] concurrent tasks.
fn reserve_many(
    rt: &tokio::runtime::Runtime,
    engine: &Engine,
    skus: u64,
    next: &Arc<AtomicU64>,
    iters: u64,
) -> Duration {
    let commands: Vec<Vec<ReserveCmd>> = (0..CALLERS)
        .map(|caller| {
            (0..iters.div_ceil(CALLERS))
                .map(|_| {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let sku = (n.wrapping_mul(2_654_435_761) ^ caller) % skus;
                    ReserveCmd {
                        channel: ChannelCode::parse(CHANNELS[(n % 3) as usize]).unwrap(),
                        order_id: OrderId::parse(format!("o-{n}")).unwrap(),
                        lines: vec![(
                            Sku::parse(format!("SKU-{sku}")).unwrap(),
                            Quantity::parse("q", 1).unwrap(),
                        )],
                        hold_seconds: 0,
                        terms: Default::default(),
                    }
                })
                .collect()
        })
        .collect();
    rt.block_on(async {
        let started = Instant::now();
        let tasks: Vec<_> = commands
            .into_iter()
            .map(|batch| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    for cmd in batch {
                        engine.reserve(cmd).await.expect("stock is plentiful");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        started.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = |name: &str| -> Arc<dyn Store> {
        Arc::new(
            rt.block_on(SqliteStore::open(&dir.path().join(name)))
                .unwrap(),
        )
    };
    // (name, SKUs, store, Odoo outbox written with each reservation)
    let cases: Vec<(&str, u64, Arc<dyn Store>, bool)> = vec![
        ("memory/hot_sku", 1, Arc::new(support::NullStore), false),
        (
            "memory/10k_skus",
            10_000,
            Arc::new(support::NullStore),
            false,
        ),
        ("sqlite/hot_sku", 1, sqlite("hot"), false),
        ("sqlite/10k_skus", 10_000, sqlite("wide"), false),
        ("sqlite+outbox/hot_sku", 1, sqlite("hot-outbox"), true),
    ];
    let mut group = c.benchmark_group("reserve");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (name, skus, store, outbox) in cases {
        let engine = engine(&rt, store, skus as usize);
        if outbox {
            engine.enable_outbox();
        }
        let next = Arc::new(AtomicU64::new(0));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| reserve_many(&rt, &engine, skus, &next, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
