//! The ERP as master of physical stock (Odoo, with `[odoo]`): on-hand
//! follows the ERP's counts, and reservations close when the ERP delivers
//! them.
//!
//! The invariant, per pool: `reserved` is the sum of what the reservations
//! hold ([`crate::domain::Allocation::held`]: ordered, not released, not yet
//! delivered). A channel's Fulfill changes what is *shipped* but not what is
//! held, so it moves nothing on the pool; only [`Engine::follow_erp`] books
//! a delivery, and it does so in the same movement that sets on-hand to the
//! ERP's count. Since the ERP commits a delivery and the count it lowers
//! together, and the caller reads the delivered totals before the counts,
//! `free` can be understated for a moment (a count read before its
//! delivery was seen) but never overstated, and each unit leaves once.
//!
//! The engine knows nothing of Odoo: it takes counts and running delivered
//! totals, which the `odoo` module reads.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{open_deltas, Engine, EngineError, PoolChange, ResKey, SkuCell};
use crate::domain::{
    follow_erp, ChannelCode, InvalidInput, OrderId, Pool, Reservation, Sku, Status, StockMaster,
    WarehouseCode, MAX_QUANTITY,
};
use crate::store::{MovementKind, Op};

/// What the ERP holds of one SKU, read after its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpStock {
    pub sku: Sku,
    /// The ERP's count per warehouse, in whole units. A warehouse not
    /// listed keeps its on-hand.
    pub counts: Vec<(WarehouseCode, i64)>,
    /// Running totals the ERP has delivered for reservation lines of this
    /// SKU. A total at or below what is already booked changes nothing.
    pub delivered: Vec<ErpDelivery>,
    /// Recorded in the ledger, e.g. `odoo stock.picking webhook`.
    pub reason: String,
}

/// Units of one reservation's line the ERP has delivered so far from one
/// warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErpDelivery {
    pub channel: ChannelCode,
    pub order_id: OrderId,
    pub warehouse: WarehouseCode,
    pub delivered: i64,
    /// What delivered them, for the ledger (an Odoo order name).
    pub reference: String,
}

/// A reservation line of a SKU whose units the pool still holds and that
/// the ERP knows of (CONFIRMED or FULFILLED): the ERP may deliver it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwaitingDelivery {
    pub channel: ChannelCode,
    pub order_id: OrderId,
    pub warehouse: WarehouseCode,
    /// Units already booked as delivered.
    pub delivered: i64,
    /// Units still held on the pool.
    pub held: i64,
}

/// One pool changed by [`Engine::follow_erp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedPool {
    pub warehouse: WarehouseCode,
    pub before: Pool,
    pub after: Pool,
    /// Units booked as delivered in this movement.
    pub delivered: i64,
}

impl Engine {
    /// Who books physical movements: [`StockMaster::Erp`] makes Fulfill and
    /// Restock leave on-hand to the ERP.
    pub fn set_stock_master(&self, master: StockMaster) {
        self.inner
            .erp_master
            .store(master == StockMaster::Erp, Ordering::Relaxed);
    }

    pub fn stock_master(&self) -> StockMaster {
        if self.inner.erp_master.load(Ordering::Relaxed) {
            StockMaster::Erp
        } else {
            StockMaster::Stockpool
        }
    }

    /// Notes the SKUs of which `r` holds units, for [`Self::awaiting_delivery`]
    /// (with the ERP as master; at start every stored reservation is noted).
    pub(super) fn track_held_units(&self, r: &Reservation) {
        for a in r.allocations.iter().filter(|a| a.held() > 0) {
            self.inner
                .awaiting
                .entry(a.sku.clone())
                .or_default()
                .insert((r.channel.clone(), r.order_id.clone()));
        }
    }

    /// The reservation lines of `sku` the ERP may still deliver, by
    /// reservation. Reservations that no longer hold units of the SKU are
    /// dropped from the index on the way.
    pub async fn awaiting_delivery(&self, sku: &Sku) -> Vec<AwaitingDelivery> {
        let keys: Vec<ResKey> = self
            .inner
            .awaiting
            .get(sku)
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        let mut done = Vec::new();
        for key in keys {
            let Some(slot) = self.slot(&key) else {
                done.push(key);
                continue;
            };
            // An order whose last change is still settling is left out
            // this time; the next sync sees it.
            let Ok(guard) = self.lock_slot(&key, &slot).await else {
                continue;
            };
            let Some(r) = guard.as_ref() else {
                done.push(key);
                continue;
            };
            let held: Vec<_> = r
                .allocations
                .iter()
                .filter(|a| &a.sku == sku && a.held() > 0)
                .collect();
            if held.is_empty() {
                done.push(key);
                continue;
            }
            if matches!(r.status, Status::Confirmed | Status::Fulfilled) {
                out.extend(held.into_iter().map(|a| AwaitingDelivery {
                    channel: r.channel.clone(),
                    order_id: r.order_id.clone(),
                    warehouse: a.warehouse.clone(),
                    delivered: a.delivered,
                    held: a.held(),
                }));
            }
        }
        if !done.is_empty() {
            if let Some(mut keys) = self.inner.awaiting.get_mut(sku) {
                for key in &done {
                    keys.remove(key);
                }
            }
            self.inner
                .awaiting
                .remove_if(sku, |_, keys| keys.is_empty());
        }
        out
    }

    /// Every SKU some reservation holds units of.
    pub fn skus_awaiting_delivery(&self) -> Vec<Sku> {
        let mut skus: Vec<Sku> = self
            .inner
            .awaiting
            .iter()
            .map(|e| e.key().clone())
            .collect();
        skus.sort();
        skus
    }

    /// Makes one SKU follow the ERP: books what the ERP delivered on the
    /// reservations and, per warehouse, sets on-hand to the ERP's count and
    /// takes the newly delivered units out of `reserved` in one movement
    /// (one ledger line, one version bump). Repeated or late reports change
    /// nothing; nothing is written when nothing changes.
    pub async fn follow_erp(&self, cmd: ErpStock) -> Result<Vec<FollowedPool>, EngineError> {
        self.to_completion(move |e| async move { e.follow_erp_now(cmd).await })
            .await
    }

    async fn follow_erp_now(&self, cmd: ErpStock) -> Result<Vec<FollowedPool>, EngineError> {
        let catalog = self.catalog();
        let mut counts: BTreeMap<usize, i64> = BTreeMap::new();
        for (warehouse, count) in &cmd.counts {
            let w = self.check_warehouse(&catalog, warehouse)?;
            if !(0..=MAX_QUANTITY).contains(count) {
                return Err(InvalidInput::new(
                    "on_hand",
                    format!("must be between 0 and {MAX_QUANTITY}, got {count}"),
                )
                .into());
            }
            counts.insert(w, *count);
        }
        let mut by_key: BTreeMap<ResKey, Vec<&ErpDelivery>> = BTreeMap::new();
        for d in &cmd.delivered {
            by_key
                .entry((d.channel.clone(), d.order_id.clone()))
                .or_default()
                .push(d);
        }
        // Reservation locks in key order, so two syncs never deadlock.
        let mut slots = Vec::new();
        for (key, deliveries) in by_key {
            if let Some(slot) = self.slot(&key) {
                slots.push((key, slot, deliveries));
            }
        }
        let mut guards = Vec::with_capacity(slots.len());
        for (key, slot, _) in &slots {
            guards.push(Some(self.lock_slot(key, slot).await?));
        }
        let mut newly: BTreeMap<usize, (i64, BTreeSet<String>)> = BTreeMap::new();
        let mut changed: Vec<(usize, Reservation, Reservation)> = Vec::new();
        for (i, ((_, _, deliveries), guard)) in slots.iter().zip(&guards).enumerate() {
            let Some(before) = guard.as_ref().and_then(|g| g.as_ref()) else {
                continue;
            };
            let mut after = before.clone();
            for d in deliveries {
                let Some(a) = after
                    .allocations
                    .iter()
                    .position(|a| a.sku == cmd.sku && a.warehouse == d.warehouse)
                else {
                    tracing::warn!(channel = %d.channel, order_id = %d.order_id, sku = %cmd.sku, warehouse = %d.warehouse, "the ERP delivered a line the reservation does not hold; ignored");
                    continue;
                };
                let booked = after.erp_delivered(a, d.delivered);
                if booked > 0 {
                    let w = self.check_warehouse(&catalog, &d.warehouse)?;
                    let entry = newly.entry(w).or_default();
                    entry.0 += booked;
                    entry.1.insert(if d.reference.is_empty() {
                        format!("{}/{}", d.channel, d.order_id)
                    } else {
                        format!("{}/{} {}", d.channel, d.order_id, d.reference)
                    });
                }
            }
            if &after != before {
                changed.push((i, before.clone(), after));
            }
        }

        let skus = [cmd.sku.clone()];
        let cells: Vec<Arc<SkuCell>> = vec![self.cell(&cmd.sku, true)];
        let (followed, ticket) = {
            let mut sku_guards = self.lock_all(&skus, &cells)?;
            let mut warehouses: BTreeSet<usize> = counts.keys().copied().collect();
            warehouses.extend(newly.keys().copied());
            let mut changes = Vec::new();
            let mut followed = Vec::new();
            for w in warehouses {
                let before = sku_guards[0].pools.get(w).copied().unwrap_or_default();
                let count = counts.get(&w).copied().unwrap_or(before.on_hand);
                let (delivered, references) = newly.remove(&w).unwrap_or_default();
                let (on_hand, reserved) = follow_erp(&before, count, delivered);
                if on_hand == 0 && reserved == 0 {
                    continue;
                }
                changes.push(PoolChange {
                    sku: cmd.sku.clone(),
                    warehouse: w,
                    on_hand,
                    reserved,
                    kind: if delivered > 0 {
                        MovementKind::Fulfill
                    } else {
                        MovementKind::Count
                    },
                    reason: cmd.reason.clone(),
                    reference: references.into_iter().collect::<Vec<_>>().join(", "),
                });
                let mut after = before;
                after.on_hand += on_hand;
                after.reserved += reserved;
                after.version += 1;
                if after.shortfall() > 0 {
                    crate::telemetry::shortfall(after.shortfall());
                    tracing::warn!(sku = %cmd.sku, warehouse = %catalog.warehouses[w].code, on_hand = after.on_hand, reserved = after.reserved, "the ERP counts less than is reserved");
                }
                followed.push(FollowedPool {
                    warehouse: catalog.warehouses[w].code.clone(),
                    before,
                    after,
                    delivered,
                });
            }
            if changes.is_empty() && changed.is_empty() {
                return Ok(Vec::new());
            }
            let mut ops = Vec::with_capacity(changes.len() * 2 + changed.len());
            Self::apply_changes(
                &catalog,
                self.now_ms(),
                &skus,
                &mut sku_guards,
                changes,
                &mut ops,
            );
            for (_, before, after) in &changed {
                if let Some(c) = catalog.channel_index(&after.channel) {
                    let open = open_deltas(Some(before), after);
                    Self::track_open(&skus, &mut sku_guards, c, &open);
                }
                ops.push(Op::Reservation(Arc::new(after.clone())));
            }
            (
                followed,
                self.enqueue_locked(&skus, &cells, &mut sku_guards, ops),
            )
        };
        for (i, _, after) in &changed {
            if let Some(g) = guards[*i].as_mut() {
                **g = Some(after.clone());
            }
        }
        if let Err(e) = self.settle(&skus, &cells, ticket).await {
            for (i, before, _) in changed {
                let key = (before.channel.clone(), before.order_id.clone());
                if let Some(guard) = guards[i].take() {
                    self.restore_slot(&key, guard, Some(before), &e);
                }
            }
            return Err(e);
        }
        Ok(followed)
    }
}
