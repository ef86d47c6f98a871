//! Stock movements (AdjustStock, SetStock) and the reads: levels and
//! channel availability.

use std::sync::Arc;

use super::{Engine, EngineError, PoolChange, SkuCell};
use crate::domain::{
    availability, Availability, Catalog, ChannelCode, DomainError, InvalidInput, Pool, Sku,
    WarehouseCode, MAX_QUANTITY,
};
use crate::store::{LedgerEntry, MovementKind, MovementRecord, Op};

/// One SKU in one warehouse, as reads return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockLevel {
    pub sku: Sku,
    pub warehouse: WarehouseCode,
    pub pool: Pool,
}

/// One channel's figures for one SKU, without the explanation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub channel: ChannelCode,
    pub atp: i64,
    pub published: i64,
    /// Units of this SKU in the channel's open reservations.
    pub open: i64,
}

/// A channel's availability of one SKU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelAvailability {
    pub sku: Sku,
    pub channel: ChannelCode,
    pub availability: Availability,
}

/// A relative stock movement (receipt, damage, correction).
#[derive(Debug, Clone)]
pub struct AdjustCmd {
    pub sku: Sku,
    pub warehouse: WarehouseCode,
    /// Non-zero.
    pub delta: i64,
    pub reason: String,
    /// Idempotency key when set.
    pub movement_id: Option<String>,
}

/// A physical count.
#[derive(Debug, Clone)]
pub struct SetCmd {
    pub sku: Sku,
    pub warehouse: WarehouseCode,
    pub on_hand: i64,
    pub reason: String,
    /// Compare-and-set against the pool's version.
    pub expected_version: Option<u64>,
    pub movement_id: Option<String>,
}

/// What a movement was: a reuse of its id with other content is refused.
fn fingerprint(kind: &str, sku: &Sku, warehouse: &WarehouseCode, value: i64) -> String {
    format!("{kind} {sku} {warehouse} {value}")
}

impl Engine {
    fn check_warehouse(
        &self,
        catalog: &Catalog,
        warehouse: &WarehouseCode,
    ) -> Result<usize, EngineError> {
        catalog.warehouse_index(warehouse).ok_or_else(|| {
            InvalidInput::new(
                "warehouse",
                format!(
                    "\"{warehouse}\" is not a declared warehouse ({})",
                    catalog.warehouse_list()
                ),
            )
            .into()
        })
    }

    /// Claims a movement id. `Ok(true)`: already applied with the same
    /// content (a replay). `Ok(false)`: claimed, to be released with
    /// [`Self::unclaim`] if the movement does not commit.
    fn claim_movement(&self, id: &Option<String>, print: &str) -> Result<bool, EngineError> {
        let Some(id) = id else { return Ok(false) };
        match self.inner.movements.entry(id.clone()) {
            dashmap::Entry::Occupied(e) if e.get() == print => Ok(true),
            dashmap::Entry::Occupied(e) => Err(EngineError::Conflict(format!(
                "movement_id {id:?} was already used for another movement ({}); use a new id",
                e.get()
            ))),
            dashmap::Entry::Vacant(v) => {
                v.insert(print.to_string());
                Ok(false)
            }
        }
    }

    fn unclaim(&self, id: &Option<String>) {
        if let Some(id) = id {
            self.inner.movements.remove(id);
        }
    }

    fn level(&self, sku: &Sku, catalog: &Catalog, warehouse: usize) -> StockLevel {
        let pool = self
            .pools_of(sku)
            .get(warehouse)
            .copied()
            .unwrap_or_default();
        StockLevel {
            sku: sku.clone(),
            warehouse: catalog.warehouses[warehouse].code.clone(),
            pool,
        }
    }

    /// Adds `delta` to `on_hand`; `on_hand` may not go below 0.
    pub async fn adjust_stock(&self, cmd: AdjustCmd) -> Result<StockLevel, EngineError> {
        let catalog = self.catalog();
        let w = self.check_warehouse(&catalog, &cmd.warehouse)?;
        if cmd.delta == 0 || cmd.delta.abs() > MAX_QUANTITY {
            return Err(InvalidInput::new(
                "delta",
                format!(
                    "must be a non-zero change of at most {MAX_QUANTITY} units, got {}",
                    cmd.delta
                ),
            )
            .into());
        }
        let print = fingerprint("adjust", &cmd.sku, &cmd.warehouse, cmd.delta);
        if self.claim_movement(&cmd.movement_id, &print)? {
            return Ok(self.level(&cmd.sku, &catalog, w));
        }
        let skus = [cmd.sku.clone()];
        let cells: Vec<Arc<SkuCell>> = vec![self.cell(&cmd.sku, true)];
        let prepared = (|| -> Result<(StockLevel, crate::store::Ticket), EngineError> {
            let mut guards = Self::lock_all(&skus, &cells)?;
            let pool = guards[0].pools.get(w).copied().unwrap_or_default();
            if pool.on_hand + cmd.delta < 0 {
                return Err(DomainError::NegativeStock {
                    sku: cmd.sku.clone(),
                    warehouse: cmd.warehouse.clone(),
                    on_hand: pool.on_hand,
                    delta: cmd.delta,
                }
                .into());
            }
            let change = PoolChange {
                sku: cmd.sku.clone(),
                warehouse: w,
                on_hand: cmd.delta,
                reserved: 0,
                kind: MovementKind::Adjust,
                reason: cmd.reason.clone(),
                reference: cmd.movement_id.clone().unwrap_or_default(),
            };
            let mut ops = Vec::with_capacity(3);
            self.apply_changes(&catalog, &skus, &mut guards, &[change], &mut ops);
            if let Some(id) = &cmd.movement_id {
                ops.push(Op::Movement(MovementRecord {
                    movement_id: id.clone(),
                    fingerprint: print.clone(),
                }));
            }
            let level = StockLevel {
                sku: cmd.sku.clone(),
                warehouse: cmd.warehouse.clone(),
                pool: guards[0].pools[w],
            };
            Ok((level, self.enqueue_locked(&cells, &mut guards, ops)))
        })();
        let (level, ticket) = prepared.inspect_err(|_| self.unclaim(&cmd.movement_id))?;
        self.settle(&skus, &cells, ticket)
            .await
            .inspect_err(|_| self.unclaim(&cmd.movement_id))?;
        Ok(level)
    }

    /// Sets `on_hand` to a physical count. A count below `reserved` is
    /// accepted: the shortfall is reported in the level and counted.
    pub async fn set_stock(&self, cmd: SetCmd) -> Result<StockLevel, EngineError> {
        let catalog = self.catalog();
        let w = self.check_warehouse(&catalog, &cmd.warehouse)?;
        if !(0..=MAX_QUANTITY).contains(&cmd.on_hand) {
            return Err(InvalidInput::new(
                "on_hand",
                format!("must be between 0 and {MAX_QUANTITY}, got {}", cmd.on_hand),
            )
            .into());
        }
        let print = fingerprint("count", &cmd.sku, &cmd.warehouse, cmd.on_hand);
        if self.claim_movement(&cmd.movement_id, &print)? {
            return Ok(self.level(&cmd.sku, &catalog, w));
        }
        let skus = [cmd.sku.clone()];
        let cells: Vec<Arc<SkuCell>> = vec![self.cell(&cmd.sku, true)];
        let prepared = (|| -> Result<(StockLevel, crate::store::Ticket), EngineError> {
            let mut guards = Self::lock_all(&skus, &cells)?;
            let pool = guards[0].pool_mut(w);
            if let Some(expected) = cmd.expected_version {
                if expected != pool.version {
                    return Err(EngineError::StaleVersion {
                        sku: cmd.sku.clone(),
                        warehouse: cmd.warehouse.clone(),
                        expected,
                        actual: pool.version,
                    });
                }
            }
            let delta = cmd.on_hand - pool.on_hand;
            pool.on_hand = cmd.on_hand;
            pool.version += 1;
            let pool = *pool;
            if pool.shortfall() > 0 {
                crate::telemetry::shortfall(pool.shortfall());
                tracing::warn!(sku = %cmd.sku, warehouse = %cmd.warehouse, on_hand = pool.on_hand, reserved = pool.reserved, "count is below what is reserved");
            }
            let mut ops = vec![
                Op::PoolSetOnHand {
                    sku: cmd.sku.clone(),
                    warehouse: cmd.warehouse.clone(),
                    on_hand: cmd.on_hand,
                },
                Op::Ledger(LedgerEntry {
                    at_ms: self.now_ms(),
                    sku: cmd.sku.clone(),
                    warehouse: cmd.warehouse.clone(),
                    kind: MovementKind::Count,
                    on_hand_delta: delta,
                    reserved_delta: 0,
                    on_hand_after: pool.on_hand,
                    reserved_after: pool.reserved,
                    reason: cmd.reason.clone(),
                    reference: cmd.movement_id.clone().unwrap_or_default(),
                }),
            ];
            if let Some(id) = &cmd.movement_id {
                ops.push(Op::Movement(MovementRecord {
                    movement_id: id.clone(),
                    fingerprint: print.clone(),
                }));
            }
            let level = StockLevel {
                sku: cmd.sku.clone(),
                warehouse: cmd.warehouse.clone(),
                pool,
            };
            Ok((level, self.enqueue_locked(&cells, &mut guards, ops)))
        })();
        let (level, ticket) = prepared.inspect_err(|_| self.unclaim(&cmd.movement_id))?;
        self.settle(&skus, &cells, ticket)
            .await
            .inspect_err(|_| self.unclaim(&cmd.movement_id))?;
        Ok(level)
    }

    /// One level per SKU and declared warehouse, in request order (every SKU
    /// that ever held stock when `skus` is empty). A SKU never stocked reads
    /// as zero everywhere.
    pub fn get_stock(&self, skus: &[Sku]) -> Vec<StockLevel> {
        let catalog = self.catalog();
        let all;
        let skus = if skus.is_empty() {
            all = self.skus();
            &all
        } else {
            skus
        };
        let mut out = Vec::with_capacity(skus.len() * catalog.warehouses.len());
        for sku in skus {
            let pools = self.pools_of(sku);
            for (i, w) in catalog.warehouses.iter().enumerate() {
                out.push(StockLevel {
                    sku: sku.clone(),
                    warehouse: w.code.clone(),
                    pool: pools.get(i).copied().unwrap_or_default(),
                });
            }
        }
        out
    }

    /// ATP and published figure with explanation, per SKU and channel (every
    /// channel when `channel` is None; every SKU when `skus` is empty).
    pub fn availability(
        &self,
        skus: &[Sku],
        channel: Option<&ChannelCode>,
    ) -> Result<Vec<ChannelAvailability>, EngineError> {
        let catalog = self.catalog();
        let channels: Vec<usize> = match channel {
            Some(c) => vec![self.check_channel(&catalog, c)?],
            None => (0..catalog.channels.len()).collect(),
        };
        let all;
        let skus = if skus.is_empty() {
            all = self.skus();
            &all
        } else {
            skus
        };
        let mut out = Vec::with_capacity(skus.len() * channels.len());
        for sku in skus {
            let pools = self.pools_of(sku);
            let rules = catalog.effective_all(sku);
            for &c in &channels {
                out.push(ChannelAvailability {
                    sku: sku.clone(),
                    channel: catalog.channels[c].code.clone(),
                    availability: availability(&catalog, sku, &rules, &pools, c),
                });
            }
        }
        Ok(out)
    }

    /// ATP and published figure of every channel for each SKU, without the
    /// explanation: what the publisher compares.
    pub fn levels(&self, skus: &[Sku]) -> Vec<(Sku, Vec<Level>)> {
        let catalog = self.catalog();
        let n = catalog.warehouses.len();
        skus.iter()
            .map(|sku| {
                let (pools, open) = self.pools_and_open(sku);
                let rules = catalog.effective_all(sku);
                let per_channel = (0..catalog.channels.len())
                    .map(|c| {
                        let (atp, published) = crate::domain::levels(&rules, &pools, c, n);
                        Level {
                            channel: catalog.channels[c].code.clone(),
                            atp,
                            published,
                            open: open.get(c).copied().unwrap_or(0),
                        }
                    })
                    .collect();
                (sku.clone(), per_channel)
            })
            .collect()
    }

    /// Ledger lines after `after_id` (of one SKU or all), oldest first.
    pub async fn ledger(
        &self,
        sku: Option<&Sku>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<crate::store::LedgerRow>, EngineError> {
        self.inner
            .store
            .ledger(sku, after_id, limit)
            .await
            .map_err(EngineError::Load)
    }
}
