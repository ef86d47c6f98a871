//! Fixtures shared by the benches: a store that commits instantly, the seed
//! operator's world, and an engine stocked with many SKUs.

#![allow(dead_code)]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use stockpool::domain::{
    Allocation, ChannelCode, OrderId, Reservation, Rule, Sku, Status, Warehouse, WarehouseCode,
};
use stockpool::engine::{Engine, Seed, SetCmd, SystemClock};
use stockpool::store::{
    ChannelEvent, LedgerEntry, LedgerRow, MovementKind, Op, OutboxEntry, OutboxState, OutboxStats,
    PoolRow, RuleChange, Snapshot, Store, StoreError,
};

pub const WAREHOUSES: [&str; 3] = ["WH-EAST", "WH-WEST", "WH-CENTRAL"];

/// Commits instantly and keeps nothing: isolates the engine's own cost.
pub struct NullStore;

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
    async fn ledger(
        &self,
        _s: Option<&Sku>,
        _a: i64,
        _l: i64,
    ) -> Result<Vec<LedgerRow>, StoreError> {
        Ok(Vec::new())
    }
    async fn outbox_due(&self, _now: i64, _limit: i64) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(Vec::new())
    }
    async fn outbox_list(
        &self,
        _state: Option<OutboxState>,
        _after: i64,
        _limit: i64,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(Vec::new())
    }
    async fn outbox_entries(&self, _ids: &[i64]) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(Vec::new())
    }
    async fn outbox_stats(&self) -> Result<OutboxStats, StoreError> {
        Ok(OutboxStats::default())
    }
}

/// Three warehouses; b2b fences 100 over WH-CENTRAL then WH-EAST; amazon is
/// shown 60% less a buffer of 5.
pub fn seed() -> Seed {
    let wh = |c: &str| WarehouseCode::parse(c).unwrap();
    Seed {
        warehouses: WAREHOUSES
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

/// An engine over `store` whose SKUs `SKU-0..skus` each hold `on_hand` in
/// every warehouse; counts go in concurrently so group commit batches them.
pub async fn stocked_engine(store: Arc<dyn Store>, skus: usize, on_hand: i64) -> Engine {
    let engine = Engine::open(store, seed(), Arc::new(SystemClock))
        .await
        .unwrap();
    let tasks: Vec<_> = (0..64)
        .map(|t| {
            let engine = engine.clone();
            tokio::spawn(async move {
                for i in (t..skus).step_by(64) {
                    for w in WAREHOUSES {
                        engine
                            .set_stock(SetCmd {
                                sku: Sku::parse(format!("SKU-{i}")).unwrap(),
                                warehouse: WarehouseCode::parse(w).unwrap(),
                                on_hand,
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
}

/// Orders per transaction in the store benches: one alone (an idle server),
/// and the batches a loaded hot SKU produces.
pub const BATCHES: [u64; 3] = [1, 32, 256];

/// The ops of `orders` one-unit orders of the hot SKU (a pool delta, a
/// ledger line and a reservation each): one group commit of the hot
/// workload as the writer hands it to a store, numbered from `next`.
pub fn hot_batch(next: &AtomicU64, orders: u64) -> Vec<Op> {
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
        ops.push(Op::Reservation(Arc::new(Reservation {
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
