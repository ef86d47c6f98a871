//! Reserve throughput of the in-process engine: one hot SKU (a flash sale)
//! and orders spread over 10k SKUs, 16 concurrent callers. Measured twice:
//! over a store that commits instantly (the engine's own cost: locking,
//! rule resolution, fences, sourcing) and over the embedded SQLite store
//! (durable acknowledgement with group commit).
//!
//! `cargo bench --bench engine`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stockpool::domain::{
    ChannelCode, OrderId, Quantity, Reservation, Rule, Sku, Warehouse, WarehouseCode,
};
use stockpool::engine::{Engine, ReserveCmd, Seed, SetCmd, SystemClock};
use stockpool::store::{
    ChannelEvent, LedgerRow, Op, PoolRow, RuleChange, Snapshot, SqliteStore, Store, StoreError,
};

const CALLERS: u64 = 16;
const CHANNELS: [&str; 3] = ["shopify", "amazon", "b2b"];

/// Commits instantly and keeps nothing: isolates the engine's own cost.
struct NullStore;

#[async_trait]
impl Store for NullStore {
    async fn load(&self) -> Result<Snapshot, StoreError> {
        Ok(Snapshot::default())
    }
    async fn commit(&self, _ops: &[Op]) -> Result<(), StoreError> {
        Ok(())
    }
    async fn load_pools(&self, _skus: &[Sku]) -> Result<Vec<PoolRow>, StoreError> {
        Ok(Vec::new())
    }
    async fn load_reservation(
        &self,
        _c: &ChannelCode,
        _o: &OrderId,
    ) -> Result<Option<Reservation>, StoreError> {
        Ok(None)
    }
    async fn ledger(
        &self,
        _s: Option<&Sku>,
        _a: i64,
        _l: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        Ok(Vec::new())
    }
    async fn rule_history(
        &self,
        _c: &ChannelCode,
        _s: Option<&Sku>,
        _all: bool,
    ) -> Result<Vec<RuleChange>, StoreError> {
        Ok(Vec::new())
    }
    async fn channel_events(
        &self,
        _c: &ChannelCode,
        _after: u64,
        _limit: i64,
    ) -> Result<Vec<ChannelEvent>, StoreError> {
        Ok(Vec::new())
    }
}

fn seed() -> Seed {
    let wh = |c: &str| WarehouseCode::parse(c).unwrap();
    Seed {
        warehouses: ["WH-EAST", "WH-WEST", "WH-CENTRAL"]
            .iter()
            .map(|c| Warehouse {
                code: wh(c),
                name: c.to_string(),
            })
            .collect(),
        channels: Vec::new(),
        rules: vec![
            Rule {
                channel: Some(ChannelCode::parse("b2b").unwrap()),
                warehouses: vec![wh("WH-CENTRAL"), wh("WH-EAST")],
                fence: Some(100),
                ..Rule::default()
            },
            Rule {
                channel: Some(ChannelCode::parse("amazon").unwrap()),
                share_percent: Some(60),
                buffer: Some(5),
                ..Rule::default()
            },
        ],
    }
}

/// An engine whose `skus` SKUs each hold plenty in every warehouse.
fn engine(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>, skus: usize) -> Engine {
    rt.block_on(async {
        let engine = Engine::open(store, seed(), Arc::new(SystemClock))
            .await
            .unwrap();
        // Concurrent counts, so group commit batches them.
        let tasks: Vec<_> = (0..64)
            .map(|t| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    for i in (t..skus).step_by(64) {
                        for w in ["WH-EAST", "WH-WEST", "WH-CENTRAL"] {
                            engine
                                .set_stock(SetCmd {
                                    sku: Sku::parse(format!("SKU-{i}")).unwrap(),
                                    warehouse: WarehouseCode::parse(w).unwrap(),
                                    on_hand: 1_000_000_000,
                                    reason: String::new(),
                                    expected_version: None,
                                    movement_id: None,
                                })
                                .await
                                .unwrap();
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        engine
    })
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
    let cases: Vec<(&str, u64, Arc<dyn Store>)> = vec![
        ("memory/hot_sku", 1, Arc::new(NullStore)),
        ("memory/10k_skus", 10_000, Arc::new(NullStore)),
        (
            "sqlite/hot_sku",
            1,
            Arc::new(
                rt.block_on(SqliteStore::open(&dir.path().join("hot")))
                    .unwrap(),
            ),
        ),
        (
            "sqlite/10k_skus",
            10_000,
            Arc::new(
                rt.block_on(SqliteStore::open(&dir.path().join("wide")))
                    .unwrap(),
            ),
        ),
    ];
    let mut group = c.benchmark_group("reserve");
    group.throughput(Throughput::Elements(1));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for (name, skus, store) in cases {
        let engine = engine(&rt, store, skus as usize);
        let next = Arc::new(AtomicU64::new(0));
        group.bench_function(name, |b| {
            b.iter_custom(|iters| reserve_many(&rt, &engine, skus, &next, iters))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
