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

pub use crate::store::Level;

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

/// A movement decided and enqueued: its level, its ticket, the locked cell.
type Prepared = (StockLevel, crate::store::Ticket, Vec<Arc<SkuCell>>);

/// What a movement was: a reuse of its id with other content is refused.
fn fingerprint(kind: &str, sku: &Sku, warehouse: &WarehouseCode, value: i64) -> String {
    format!("{kind} {sku} {warehouse} {value}")
}

/// Refuses a zero change and one beyond [`MAX_QUANTITY`] either way
/// (`i64::MIN` included: no absolute value is taken).
fn check_delta(delta: i64) -> Result<(), EngineError> {
    if delta == 0 || !(-MAX_QUANTITY..=MAX_QUANTITY).contains(&delta) {
        return Err(InvalidInput::new(
            "delta",
            format!("must be a non-zero change of at most {MAX_QUANTITY} units, got {delta}"),
        )
        .into());
    }
    Ok(())
}

/// The on-hand an adjustment leaves, refused below 0 and above
/// [`MAX_QUANTITY`] (checked: `delta` comes from a client).
fn adjusted(pool: &Pool, cmd: &AdjustCmd) -> Result<i64, EngineError> {
    match pool.on_hand.checked_add(cmd.delta) {
        Some(on_hand) if on_hand < 0 => Err(DomainError::NegativeStock {
            sku: cmd.sku.clone(),
            warehouse: cmd.warehouse.clone(),
            on_hand: pool.on_hand,
            delta: cmd.delta,
        }
        .into()),
        Some(on_hand) if on_hand <= MAX_QUANTITY => Ok(on_hand),
        _ => Err(EngineError::Refused(format!(
            "{} in {} has {} on hand: a change of {} would take it above the {MAX_QUANTITY} a pool may hold",
            cmd.sku, cmd.warehouse, pool.on_hand, cmd.delta
        ))),
    }
}

/// Refuses a count whose expected version is not the pool's.
fn check_version(pool: &Pool, cmd: &SetCmd) -> Result<(), EngineError> {
    match cmd.expected_version {
        Some(expected) if expected != pool.version => Err(EngineError::StaleVersion {
            sku: cmd.sku.clone(),
            warehouse: cmd.warehouse.clone(),
            expected,
            actual: pool.version,
        }),
        _ => Ok(()),
    }
}

/// Every channel's figures for one SKU with these pools and open units
/// (by channel index).
pub(super) fn channel_levels(
    catalog: &Catalog,
    sku: &Sku,
    pools: &[Pool],
    open: &[i64],
) -> Vec<Level> {
    let rules = catalog.effective_all_shared(sku);
    let n = catalog.warehouses.len();
    (0..catalog.channels.len())
        .map(|c| {
            let (atp, published) = crate::domain::levels(&rules, pools, c, n);
            Level {
                channel: catalog.channels[c].code.clone(),
                atp,
                published,
                open: open.get(c).copied().unwrap_or(0),
            }
        })
        .collect()
}

impl Engine {
    pub(super) fn check_warehouse(
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
        self.to_completion(move |e| async move { e.adjust_stock_now(cmd).await })
            .await
    }

    async fn adjust_stock_now(&self, cmd: AdjustCmd) -> Result<StockLevel, EngineError> {
        let catalog = self.catalog();
        let w = self.check_warehouse(&catalog, &cmd.warehouse)?;
        check_delta(cmd.delta)?;
        let print = fingerprint("adjust", &cmd.sku, &cmd.warehouse, cmd.delta);
        if self.claim_movement(&cmd.movement_id, &print)? {
            return Ok(self.level(&cmd.sku, &catalog, w));
        }
        let skus = [cmd.sku.clone()];
        let prepared = (|| -> Result<Prepared, EngineError> {
            // A SKU seen for the first time gets its cell only once the
            // movement fits, so a refused one leaves nothing behind.
            if !self.is_known(&cmd.sku) {
                adjusted(&Pool::default(), &cmd)?;
            }
            let cells: Vec<Arc<SkuCell>> = vec![self.cell(&cmd.sku, true)];
            let mut guards = self.lock_all(&skus, &cells)?;
            let pool = guards[0].pools.get(w).copied().unwrap_or_default();
            adjusted(&pool, &cmd)?;
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
            Self::apply_changes(
                &catalog,
                self.now_ms(),
                &skus,
                &mut guards,
                [change],
                &mut ops,
            );
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
            Ok((
                level,
                self.enqueue_locked(&skus, &cells, &mut guards, ops),
                cells.clone(),
            ))
        })();
        let (level, ticket, cells) = prepared.inspect_err(|_| self.unclaim(&cmd.movement_id))?;
        self.settle(&skus, &cells, ticket)
            .await
            .inspect_err(|_| self.unclaim(&cmd.movement_id))?;
        Ok(level)
    }

    /// Sets `on_hand` to a physical count. A count below `reserved` is
    /// accepted: the shortfall is reported in the level and counted.
    pub async fn set_stock(&self, cmd: SetCmd) -> Result<StockLevel, EngineError> {
        self.to_completion(move |e| async move { e.set_stock_now(cmd).await })
            .await
    }

    async fn set_stock_now(&self, cmd: SetCmd) -> Result<StockLevel, EngineError> {
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
        let prepared = (|| -> Result<Prepared, EngineError> {
            if !self.is_known(&cmd.sku) {
                check_version(&Pool::default(), &cmd)?;
            }
            let cells: Vec<Arc<SkuCell>> = vec![self.cell(&cmd.sku, true)];
            let mut guards = self.lock_all(&skus, &cells)?;
            check_version(&guards[0].pools.get(w).copied().unwrap_or_default(), &cmd)?;
            let pool = guards[0].pool_mut(w);
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
            Ok((
                level,
                self.enqueue_locked(&skus, &cells, &mut guards, ops),
                cells.clone(),
            ))
        })();
        let (level, ticket, cells) = prepared.inspect_err(|_| self.unclaim(&cmd.movement_id))?;
        self.settle(&skus, &cells, ticket)
            .await
            .inspect_err(|_| self.unclaim(&cmd.movement_id))?;
        Ok(level)
    }

    /// Many counts committed together (BatchSetStock), through the same
    /// checks as [`Self::set_stock`], in request order. A bad item fails
    /// alone with its error and the others apply; the applied ones are
    /// written in one commit, so when that commit fails none of them is
    /// applied and the outer error says why. `Ok((level, true))`: the
    /// item's movement id was already applied (a replay).
    pub async fn batch_set_stock(
        &self,
        cmds: Vec<SetCmd>,
    ) -> Result<Vec<Result<(StockLevel, bool), EngineError>>, EngineError> {
        self.to_completion(move |e| async move { e.batch_set_stock_now(cmds).await })
            .await
    }

    async fn batch_set_stock_now(
        &self,
        cmds: Vec<SetCmd>,
    ) -> Result<Vec<Result<(StockLevel, bool), EngineError>>, EngineError> {
        let catalog = self.catalog();
        let mut out: Vec<Option<Result<(StockLevel, bool), EngineError>>> =
            (0..cmds.len()).map(|_| None).collect();
        // Checks that need no lock, and movement ids claimed.
        let mut todo: Vec<(usize, usize, String)> = Vec::new();
        for (i, cmd) in cmds.iter().enumerate() {
            let w = match self.check_warehouse(&catalog, &cmd.warehouse) {
                Ok(w) => w,
                Err(e) => {
                    out[i] = Some(Err(e));
                    continue;
                }
            };
            if !(0..=MAX_QUANTITY).contains(&cmd.on_hand) {
                out[i] = Some(Err(InvalidInput::new(
                    "on_hand",
                    format!("must be between 0 and {MAX_QUANTITY}, got {}", cmd.on_hand),
                )
                .into()));
                continue;
            }
            if !self.is_known(&cmd.sku) {
                if let Err(e) = check_version(&Pool::default(), cmd) {
                    out[i] = Some(Err(e));
                    continue;
                }
            }
            let print = fingerprint("count", &cmd.sku, &cmd.warehouse, cmd.on_hand);
            match self.claim_movement(&cmd.movement_id, &print) {
                Ok(true) => out[i] = Some(Ok((self.level(&cmd.sku, &catalog, w), true))),
                Ok(false) => todo.push((i, w, print)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let mut skus: Vec<Sku> = todo.iter().map(|(i, _, _)| cmds[*i].sku.clone()).collect();
        skus.sort();
        skus.dedup();
        let cells: Vec<Arc<SkuCell>> = skus.iter().map(|s| self.cell(s, true)).collect();
        let mut applied: Vec<usize> = Vec::new();
        let ticket = {
            let mut guards: Vec<_> = cells.iter().map(|c| c.lock()).collect();
            let mut ops = Vec::with_capacity(todo.len() * 3);
            let at_ms = self.now_ms();
            for (i, w, print) in &todo {
                let cmd = &cmds[*i];
                let k = skus.binary_search(&cmd.sku).expect("a locked SKU");
                let g = &mut guards[k];
                if g.needs_reload {
                    self.unclaim(&cmd.movement_id);
                    out[*i] = Some(Err(EngineError::Reloading(cmd.sku.clone())));
                    continue;
                }
                if let Err(e) = check_version(&g.pools.get(*w).copied().unwrap_or_default(), cmd) {
                    self.unclaim(&cmd.movement_id);
                    out[*i] = Some(Err(e));
                    continue;
                }
                let pool = g.pool_mut(*w);
                let delta = cmd.on_hand - pool.on_hand;
                pool.on_hand = cmd.on_hand;
                pool.version += 1;
                let pool = *pool;
                if pool.shortfall() > 0 {
                    crate::telemetry::shortfall(pool.shortfall());
                }
                ops.push(Op::PoolSetOnHand {
                    sku: cmd.sku.clone(),
                    warehouse: cmd.warehouse.clone(),
                    on_hand: cmd.on_hand,
                });
                ops.push(Op::Ledger(LedgerEntry {
                    at_ms,
                    sku: cmd.sku.clone(),
                    warehouse: cmd.warehouse.clone(),
                    kind: MovementKind::Count,
                    on_hand_delta: delta,
                    reserved_delta: 0,
                    on_hand_after: pool.on_hand,
                    reserved_after: pool.reserved,
                    reason: cmd.reason.clone(),
                    reference: cmd.movement_id.clone().unwrap_or_default(),
                }));
                if let Some(id) = &cmd.movement_id {
                    ops.push(Op::Movement(MovementRecord {
                        movement_id: id.clone(),
                        fingerprint: print.clone(),
                    }));
                }
                out[*i] = Some(Ok((
                    StockLevel {
                        sku: cmd.sku.clone(),
                        warehouse: cmd.warehouse.clone(),
                        pool,
                    },
                    false,
                )));
                applied.push(*i);
            }
            (!ops.is_empty()).then(|| self.enqueue_locked(&skus, &cells, &mut guards, ops))
        };
        if let Some(ticket) = ticket {
            if let Err(e) = self.settle(&skus, &cells, ticket).await {
                for i in applied {
                    self.unclaim(&cmds[i].movement_id);
                }
                return Err(e);
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.expect("every item decided"))
            .collect())
    }

    /// A page of the SKUs that ever held stock, in code order: at most
    /// `size` after `after` (from the first when None), and whether more
    /// follow.
    ///
    /// Linear in the SKUs after `after` (a selection, not a sort of them
    /// all), then a sort of the page.
    pub fn sku_page(&self, after: Option<&Sku>, size: usize) -> (Vec<Sku>, bool) {
        let mut page: Vec<Sku> = self
            .inner
            .skus
            .iter()
            .filter(|e| after.is_none_or(|a| e.key() > a))
            .filter(|e| !e.value().lock().pools.is_empty())
            .map(|e| e.key().clone())
            .collect();
        let more = page.len() > size;
        if more {
            page.select_nth_unstable(size);
            page.truncate(size);
        }
        page.sort_unstable();
        (page, more)
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
    /// explanation.
    pub fn levels(&self, skus: &[Sku]) -> Vec<(Sku, Vec<Level>)> {
        let catalog = self.catalog();
        skus.iter()
            .map(|sku| {
                let (pools, open) = self.pools_and_open(sku);
                (sku.clone(), channel_levels(&catalog, sku, &pools, &open))
            })
            .collect()
    }

    /// Ledger lines after `after_id`, of one SKU or all, of one warehouse
    /// or all, oldest first (ListMovements).
    pub async fn movements(
        &self,
        sku: Option<&Sku>,
        warehouse: Option<&WarehouseCode>,
        after_id: i64,
        limit: i64,
    ) -> Result<Vec<crate::store::LedgerRow>, EngineError> {
        self.inner
            .store
            .movements(sku, warehouse, after_id, limit)
            .await
            .map_err(EngineError::Load)
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn adjust(delta: i64) -> AdjustCmd {
        AdjustCmd {
            sku: Sku::parse("TEE").unwrap(),
            warehouse: WarehouseCode::parse("WH-EAST").unwrap(),
            delta,
            reason: String::new(),
            movement_id: None,
        }
    }

    #[test]
    fn the_most_negative_delta_is_invalid_not_a_wrapped_absolute_value() {
        let err = check_delta(i64::MIN).unwrap_err();
        assert!(
            matches!(&err, EngineError::Domain(d) if matches!(**d, DomainError::Invalid(_))),
            "{err:?}"
        );
        assert!(err.to_string().contains("-9223372036854775808"), "{err}");
    }

    #[test]
    fn an_adjustment_past_what_a_pool_may_hold_is_refused() {
        let full = Pool {
            on_hand: MAX_QUANTITY,
            ..Pool::default()
        };
        let err = adjusted(&full, &adjust(1)).unwrap_err();
        assert!(matches!(err, EngineError::Refused(_)), "{err:?}");
        assert!(err.to_string().contains("above the 1000000000"), "{err}");
        assert_eq!(adjusted(&full, &adjust(-MAX_QUANTITY)).unwrap(), 0);
    }

    proptest! {
        #[test]
        fn any_delta_on_any_pool_is_refused_or_leaves_on_hand_within_bounds(
            delta in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), -3..=3i64],
            on_hand in prop_oneof![0..=MAX_QUANTITY, Just(MAX_QUANTITY), Just(i64::MAX)],
        ) {
            let pool = Pool { on_hand, ..Pool::default() };
            if check_delta(delta).is_ok() {
                if let Ok(after) = adjusted(&pool, &adjust(delta)) {
                    prop_assert_eq!(i128::from(after), i128::from(on_hand) + i128::from(delta));
                    prop_assert!((0..=MAX_QUANTITY).contains(&after));
                }
            }
        }
    }
}
