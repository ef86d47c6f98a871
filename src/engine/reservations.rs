//! Reserve, Confirm, Release, Fulfill, Restock and hold expiry: the
//! reservation lifecycle applied to memory and handed to the store.

use std::sync::Arc;
use std::time::Duration;

use smallvec::SmallVec;
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

use super::{open_deltas, Engine, EngineError, PoolChange, ResKey, SkuCell, Slot};
use crate::domain::{
    Allocation, Catalog, ChannelCode, InvalidInput, LineRequest, OrderId, OrderLine, OrderTerms,
    Quantity, Reservation, Sku, Status, StockMaster, Take, MAX_HOLD_SECONDS,
};
use crate::store::{Failure, MovementKind, Op, OutboxEvent};

/// A Reserve request after boundary validation.
#[derive(Debug, Clone)]
pub struct ReserveCmd {
    pub channel: ChannelCode,
    pub order_id: OrderId,
    /// One line per SKU (the api refuses duplicates).
    pub lines: Vec<(Sku, Quantity)>,
    /// 0: CONFIRMED at once; else HELD this long.
    pub hold_seconds: u32,
    /// Prices, currency and customer for the ERP's books; part of the
    /// replay comparison.
    pub terms: OrderTerms,
}

#[derive(Debug, Clone)]
pub struct ReleaseCmd {
    pub channel: ChannelCode,
    pub order_id: OrderId,
    /// Empty: every open unit.
    pub lines: Vec<LineRequest>,
    pub reason: String,
}

#[derive(Debug, Clone)]
pub struct FulfillCmd {
    pub channel: ChannelCode,
    pub order_id: OrderId,
    /// Empty: every open unit.
    pub lines: Vec<LineRequest>,
    /// Idempotency key; `None` ships every time it is called.
    pub shipment_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RestockCmd {
    pub channel: ChannelCode,
    pub order_id: OrderId,
    pub refund_id: String,
    /// Empty: everything shipped and not yet restocked.
    pub lines: Vec<LineRequest>,
}

/// What a Restock put back on hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restocked {
    /// One per allocation restocked; `quantity` is the units put back.
    pub allocations: Vec<Allocation>,
    pub replayed: bool,
    /// The reservation's terms (the restocked lines' prices).
    pub terms: OrderTerms,
}

/// A new reservation id: `res_` and 32 hex digits, unique for good and
/// increasing. The first 16 are when the process started (ms) and 16 random
/// bits, the last 16 a counter. Increasing ids are appended to the id
/// index, so a commit writes one index page, not one per reservation (a
/// random id per reservation also cost a `getrandom` call).
fn new_reservation_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let random = uuid::Uuid::new_v4().as_u64_pair().0 & 0xffff;
        (started << 16) | random
    });
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut id = *b"res_00000000000000000000000000000000";
    put_hex(&mut id[4..20], prefix);
    put_hex(&mut id[20..], n);
    String::from_utf8(id.to_vec()).expect("ASCII")
}

/// `n` as 16 lower-case hex digits, as `{n:016x}` writes it, into `out`.
fn put_hex(out: &mut [u8], n: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, digit) in out.iter_mut().enumerate() {
        *digit = DIGITS[((n >> ((15 - i) * 4)) & 0xf) as usize];
    }
}

/// `channel/order_id`: what the ledger lines of an order's changes name.
fn reference(channel: &ChannelCode, order_id: &OrderId) -> String {
    let (c, o) = (channel.as_str(), order_id.as_str());
    let mut r = String::with_capacity(c.len() + 1 + o.len());
    r.push_str(c);
    r.push('/');
    r.push_str(o);
    r
}

/// One item per line of an order, inline for the usual few lines.
type Lines<T> = SmallVec<[T; 4]>;

impl Engine {
    pub(super) fn slot(&self, key: &ResKey) -> Option<super::Slot> {
        self.inner.reservations.get(key).map(|s| s.clone())
    }

    pub(super) fn check_channel(
        &self,
        catalog: &Catalog,
        channel: &ChannelCode,
    ) -> Result<usize, EngineError> {
        catalog.channel_index(channel).ok_or_else(|| {
            InvalidInput::new(
                "channel",
                format!(
                    "\"{channel}\" is not a declared channel ({})",
                    catalog.channel_list()
                ),
            )
            .into()
        })
    }

    /// Refuses lines that name a warehouse which is not declared: malformed
    /// input, whatever the reservation holds.
    fn check_line_warehouses(&self, lines: &[LineRequest]) -> Result<(), EngineError> {
        let catalog = self.catalog();
        for (i, line) in lines.iter().enumerate() {
            if let Some(w) = &line.warehouse {
                self.check_warehouse(&catalog, w).map_err(|_| {
                    EngineError::from(InvalidInput::new(
                        format!("lines[{i}].warehouse"),
                        format!(
                            "\"{w}\" is not a declared warehouse ({})",
                            catalog.warehouse_list()
                        ),
                    ))
                })?;
            }
        }
        Ok(())
    }

    /// Reserves an order whole or not at all. Idempotent on
    /// `(channel, order_id)`: the same lines and terms again return the
    /// reservation as it stands with `replayed = true`; other lines or
    /// other terms are a conflict.
    pub async fn reserve(&self, cmd: ReserveCmd) -> Result<(Reservation, bool), EngineError> {
        self.to_completion(move |e| async move { e.reserve_now(cmd).await })
            .await
    }

    async fn reserve_now(&self, mut cmd: ReserveCmd) -> Result<(Reservation, bool), EngineError> {
        let catalog = self.catalog();
        let channel = self.check_channel(&catalog, &cmd.channel)?;
        if cmd.hold_seconds > MAX_HOLD_SECONDS {
            return Err(InvalidInput::new(
                "hold_seconds",
                format!(
                    "{} is longer than the {MAX_HOLD_SECONDS} allowed (7 days)",
                    cmd.hold_seconds
                ),
            )
            .into());
        }
        // Sorted by SKU: the reservation's canonical lines, and the order
        // the SKUs are locked in.
        let mut lines: Vec<(Sku, i64)> = std::mem::take(&mut cmd.lines)
            .into_iter()
            .map(|(s, q)| (s, q.get()))
            .collect();
        lines.sort();
        let key: ResKey = (cmd.channel.clone(), cmd.order_id.clone());
        let slot = self
            .inner
            .reservations
            .entry(key.clone())
            .or_insert_with(|| Arc::new(AsyncMutex::new(None)))
            .clone();
        let mut current = self.lock_slot(&key, &slot).await?;
        if let Some(existing) = current.as_ref() {
            if existing.same_order(&lines, &cmd.terms) {
                crate::telemetry::reservation_outcome(&cmd.channel, "replayed");
                return Ok((existing.clone(), true));
            }
            if existing.same_lines(&lines) {
                return Err(EngineError::Conflict(format!(
                    "reservation {}/{} already exists with other prices or customer ({}, not {}); use a new order_id for a new order",
                    cmd.channel,
                    cmd.order_id,
                    existing.terms.describe(),
                    cmd.terms.describe(),
                )));
            }
            return Err(EngineError::Conflict(format!(
                "reservation {}/{} already exists with other lines ({}); use a new order_id for a new order",
                cmd.channel,
                cmd.order_id,
                existing.lines.iter().map(|(s, q)| format!("{s} x{q}")).collect::<Vec<_>>().join(", ")
            )));
        }

        let skus: Lines<Sku> = lines.iter().map(|(s, _)| s.clone()).collect();
        let cells: Lines<Arc<SkuCell>> = skus.iter().map(|s| self.cell(s, false)).collect();
        // Scoped to the decision, so the future that waits for the commit
        // does not carry them.
        let (reservation, ticket) = {
            // Everything that does not depend on the pools is prepared
            // before the SKUs are locked: a hot SKU's lock is held only to
            // decide, apply and enqueue.
            let rules: Lines<_> = skus
                .iter()
                .map(|s| catalog.effective_all_shared(s))
                .collect();
            let mut refer = Some(reference(&cmd.channel, &cmd.order_id));
            let id = new_reservation_id();
            let mut guards = match self.lock_all(&skus, &cells) {
                Ok(g) => g,
                Err(e) => {
                    drop(current);
                    self.forget_empty_slot(&key, &slot);
                    return Err(e);
                }
            };
            let now = self.now_ms();
            let order: Lines<OrderLine<'_>> = lines
                .iter()
                .zip(guards.iter())
                .zip(&rules)
                .map(|(((sku, q), g), r)| OrderLine {
                    sku,
                    quantity: *q,
                    pools: &g.pools,
                    rules: r,
                })
                .collect();
            let placements = match crate::domain::source_order(&catalog, channel, &order) {
                Ok(p) => p,
                Err(e) => {
                    drop(order);
                    drop(guards);
                    drop(current);
                    self.forget_empty_slot(&key, &slot);
                    crate::telemetry::reservation_outcome(&cmd.channel, "rejected");
                    return Err(e.into());
                }
            };
            drop(order);
            let allocations: Vec<Allocation> = placements
                .iter()
                .map(|p| {
                    Allocation::new(
                        skus[p.line].clone(),
                        catalog.warehouses[p.warehouse].code.clone(),
                        p.quantity,
                    )
                })
                .collect();
            // The reference is moved into the last ledger line, cloned for
            // the others (an order usually ships from one warehouse).
            let last = placements.len().saturating_sub(1);
            let changes = placements.iter().enumerate().map(|(i, p)| PoolChange {
                sku: skus[p.line].clone(),
                warehouse: p.warehouse,
                on_hand: 0,
                reserved: p.quantity,
                kind: MovementKind::Reserve,
                reason: String::new(),
                reference: if i == last {
                    refer.take().unwrap_or_default()
                } else {
                    refer.clone().unwrap_or_default()
                },
            });
            let mut ops = Vec::with_capacity(placements.len() * 2 + 2);
            Self::apply_changes(&catalog, now, &skus, &mut guards, changes, &mut ops);
            let mut reservation = Reservation::new(
                id,
                cmd.channel.clone(),
                cmd.order_id.clone(),
                lines,
                allocations,
                now,
                cmd.hold_seconds,
            );
            reservation.terms = std::mem::take(&mut cmd.terms);
            // A new reservation's open units are its allocations.
            for a in reservation.allocations.iter().filter(|a| a.quantity != 0) {
                let i = skus
                    .binary_search(&a.sku)
                    .expect("allocation of a locked SKU");
                guards[i].add_open(channel, a.quantity);
            }
            let stored = Arc::new(reservation);
            ops.push(Op::Reservation(stored.clone()));
            ops.extend(self.outbox_op(None, &stored, Some(OutboxEvent::Confirmed)));
            let ticket = self.enqueue_locked(&skus, &cells, &mut guards, ops);
            (stored, ticket)
        };
        *current = Some(Reservation::clone(&reservation));
        if let Err(e) = self.settle(&skus, &cells, ticket).await {
            if self.restore_slot(&key, current, None, &e) {
                self.forget_empty_slot(&key, &slot);
            }
            return Err(e);
        }
        // The writer has usually let its copy go by now.
        let reservation = Arc::try_unwrap(reservation).unwrap_or_else(|r| Reservation::clone(&r));
        if reservation.status == Status::Held {
            self.track_hold(&reservation);
        }
        if self.stock_master() == StockMaster::Erp {
            self.track_held_units(&reservation);
        }
        crate::telemetry::reservation_outcome(&cmd.channel, "accepted");
        Ok((reservation, false))
    }

    /// Drops a slot that a refused Reserve created, so refused orders do not
    /// accumulate in memory.
    fn forget_empty_slot(&self, key: &ResKey, slot: &super::Slot) {
        self.inner.reservations.remove_if(key, |_, s| {
            Arc::ptr_eq(s, slot) && s.try_lock().map(|g| g.is_none()).unwrap_or(false)
        });
    }

    fn track_hold(&self, r: &Reservation) {
        self.inner
            .holds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((r.expires_at_ms, (r.channel.clone(), r.order_id.clone())));
    }

    /// The reservation as last committed.
    pub async fn get_reservation(
        &self,
        channel: &ChannelCode,
        order_id: &OrderId,
    ) -> Result<Reservation, EngineError> {
        let key = (channel.clone(), order_id.clone());
        let Some(slot) = self.slot(&key) else {
            return Err(not_found(&key));
        };
        let guard = self.lock_slot(&key, &slot).await?;
        guard.clone().ok_or_else(|| not_found(&key))
    }

    /// Reservations matching `filter`, newest first (by creation time, then
    /// id): at most `size` that come after `after` (the `(created_at_ms,
    /// id)` of the last one of the previous page), and whether more follow.
    pub async fn list_reservations(
        &self,
        filter: &ReservationFilter,
        after: Option<&(i64, String)>,
        size: usize,
    ) -> (Vec<Reservation>, bool) {
        let slots: Vec<Slot> = self
            .inner
            .reservations
            .iter()
            .filter(|e| filter.channel.as_ref().is_none_or(|c| &e.key().0 == c))
            .map(|e| e.value().clone())
            .collect();
        let mut found: Vec<Reservation> = Vec::new();
        for slot in slots {
            let guard = slot.lock().await;
            let Some(r) = guard.as_ref() else { continue };
            let wanted = (filter.statuses.is_empty() || filter.statuses.contains(&r.status))
                && filter
                    .sku
                    .as_ref()
                    .is_none_or(|sku| r.allocations.iter().any(|a| &a.sku == sku))
                && r.created_at_ms > filter.created_after_ms
                && after.is_none_or(|(at, id)| (r.created_at_ms, &r.id) < (*at, id));
            if wanted {
                found.push(r.clone());
            }
        }
        found.sort_by(|a, b| (b.created_at_ms, &b.id).cmp(&(a.created_at_ms, &a.id)));
        let more = found.len() > size;
        found.truncate(size);
        (found, more)
    }

    /// HELD → CONFIRMED; CONFIRMED and FULFILLED are returned unchanged.
    pub async fn confirm(
        &self,
        channel: &ChannelCode,
        order_id: &OrderId,
    ) -> Result<Reservation, EngineError> {
        let (channel, order_id) = (channel.clone(), order_id.clone());
        self.to_completion(move |e| async move { e.confirm_now(&channel, &order_id).await })
            .await
    }

    async fn confirm_now(
        &self,
        channel: &ChannelCode,
        order_id: &OrderId,
    ) -> Result<Reservation, EngineError> {
        let now = self.now_ms();
        self.change(channel, order_id, Some(OutboxEvent::Confirmed), |r, _| {
            r.confirm(now)?;
            Ok((Vec::new(), ()))
        })
        .await
        .map(|(r, ())| r)
    }

    /// Releases the named lines (or every open unit) back to free stock.
    pub async fn release(&self, cmd: ReleaseCmd) -> Result<Reservation, EngineError> {
        self.to_completion(move |e| async move { e.release_now(cmd).await })
            .await
    }

    async fn release_now(&self, cmd: ReleaseCmd) -> Result<Reservation, EngineError> {
        self.check_line_warehouses(&cmd.lines)?;
        let refer = reference(&cmd.channel, &cmd.order_id);
        self.change(
            &cmd.channel,
            &cmd.order_id,
            Some(OutboxEvent::Released),
            |r, catalog| {
                let takes = r.plan_takes("release", &cmd.lines)?;
                let changes = pool_changes(
                    r,
                    catalog,
                    &takes,
                    MovementKind::Release,
                    &cmd.reason,
                    &refer,
                    |q| (0, -q),
                );
                r.release(&takes);
                Ok((changes, ()))
            },
        )
        .await
        .map(|(r, ())| r)
    }

    /// Ships the named lines (or every open unit): `on_hand` and `reserved`
    /// both drop. A repeated `shipment_id` changes nothing. With the ERP as
    /// master of physical stock, only the reservation changes: the units
    /// stay in `reserved` until the ERP delivers them (see
    /// [`Engine::follow_erp`]), so free stock is never overstated while
    /// on-hand still counts them.
    pub async fn fulfill(&self, cmd: FulfillCmd) -> Result<Reservation, EngineError> {
        self.to_completion(move |e| async move { e.fulfill_now(cmd).await })
            .await
    }

    async fn fulfill_now(&self, cmd: FulfillCmd) -> Result<Reservation, EngineError> {
        let master = self.stock_master();
        self.check_line_warehouses(&cmd.lines)?;
        let refer = cmd.shipment_id.clone().map_or_else(
            || reference(&cmd.channel, &cmd.order_id),
            |s| format!("{}/{} shipment {s}", cmd.channel, cmd.order_id),
        );
        self.change(
            &cmd.channel,
            &cmd.order_id,
            Some(OutboxEvent::Fulfilled),
            |r, catalog| {
                if let Some(id) = &cmd.shipment_id {
                    if r.has_shipment(id) {
                        return Ok((Vec::new(), ()));
                    }
                }
                let takes = r.plan_fulfill(&cmd.lines, master)?;
                let changes = match master {
                    StockMaster::Stockpool => {
                        pool_changes(r, catalog, &takes, MovementKind::Fulfill, "", &refer, |q| {
                            (-q, -q)
                        })
                    }
                    StockMaster::Erp => Vec::new(),
                };
                r.fulfill(&takes, cmd.shipment_id.clone(), master);
                Ok((changes, ()))
            },
        )
        .await
        .map(|(r, ())| r)
    }

    /// Puts returned units back on hand, never more per allocation than was
    /// shipped and not yet restocked. Idempotent on `refund_id`. With the
    /// ERP as master, the refund is recorded on the reservation and on-hand
    /// is left to the ERP's count: the units are back when the ERP receives
    /// them, once, however many refunds report the return.
    pub async fn restock(&self, cmd: RestockCmd) -> Result<Restocked, EngineError> {
        self.to_completion(move |e| async move { e.restock_now(cmd).await })
            .await
    }

    async fn restock_now(&self, cmd: RestockCmd) -> Result<Restocked, EngineError> {
        let master = self.stock_master();
        self.check_line_warehouses(&cmd.lines)?;
        let refer = format!("{}/{} refund {}", cmd.channel, cmd.order_id, cmd.refund_id);
        let (r, (takes, replayed)) = self
            .change(&cmd.channel, &cmd.order_id, None, |r, catalog| {
                if let Some(done) = r.refund(&cmd.refund_id) {
                    return Ok((Vec::new(), (done.restocked.clone(), true)));
                }
                let takes = r.plan_restock(&cmd.lines)?;
                let changes = match master {
                    StockMaster::Stockpool => {
                        pool_changes(r, catalog, &takes, MovementKind::Restock, "", &refer, |q| {
                            (q, 0)
                        })
                    }
                    StockMaster::Erp => Vec::new(),
                };
                r.restock(cmd.refund_id.clone(), takes.clone());
                Ok((changes, (takes, false)))
            })
            .await?;
        let allocations = takes
            .iter()
            .map(|t| {
                let a = &r.allocations[t.allocation];
                let mut back = Allocation::new(a.sku.clone(), a.warehouse.clone(), t.quantity);
                back.restocked = t.quantity;
                back
            })
            .collect();
        Ok(Restocked {
            allocations,
            replayed,
            terms: r.terms,
        })
    }

    /// Expires every hold that has lapsed by now; returns how many.
    pub async fn expire_due(&self) -> usize {
        let now = self.now_ms();
        let due: Vec<(i64, ResKey)> = {
            let mut holds = self.inner.holds.lock().unwrap_or_else(|p| p.into_inner());
            let mut due = Vec::new();
            while let Some(first) = holds.first() {
                if first.0 > now {
                    break;
                }
                due.push(holds.pop_first().expect("first exists"));
            }
            due
        };
        let mut expired = 0;
        for (at, (channel, order_id)) in due {
            let result = self
                .change(&channel, &order_id, None, |r, catalog| {
                    if !r.hold_lapsed(now) {
                        return Ok((Vec::new(), false));
                    }
                    let snapshot = r.clone();
                    let takes = r.expire();
                    let refer = reference(&channel, &order_id);
                    let changes = pool_changes(
                        &snapshot,
                        catalog,
                        &takes,
                        MovementKind::Expire,
                        "hold expired",
                        &refer,
                        |q| (0, -q),
                    );
                    Ok((changes, true))
                })
                .await;
            match result {
                Ok((_, true)) => {
                    expired += 1;
                    crate::telemetry::hold_expired(&channel);
                }
                Ok((_, false)) => {}
                Err(e) => {
                    tracing::warn!(error = %crate::telemetry::chain(&e), %channel, %order_id, "could not expire a hold; will retry");
                    self.inner
                        .holds
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert((at, (channel, order_id)));
                }
            }
        }
        expired
    }

    /// Runs `decide` on the reservation under its lock; applies the pool
    /// changes it returns and commits the new reservation state. When the
    /// reservation did not change, nothing is written. On a failed commit
    /// the reservation is restored to what it was. `event` names the change
    /// for the Odoo outbox (None: Odoo does not hear of it).
    async fn change<T>(
        &self,
        channel: &ChannelCode,
        order_id: &OrderId,
        event: Option<OutboxEvent>,
        decide: impl FnOnce(&mut Reservation, &Catalog) -> Result<(Vec<PoolChange>, T), EngineError>,
    ) -> Result<(Reservation, T), EngineError> {
        let key = (channel.clone(), order_id.clone());
        let slot = self.slot(&key).ok_or_else(|| not_found(&key))?;
        let mut guard = self.lock_slot(&key, &slot).await?;
        let before = guard.clone().ok_or_else(|| not_found(&key))?;
        let catalog = self.catalog();
        let mut after = before.clone();
        let (changes, out) = decide(&mut after, &catalog)?;
        if after == before {
            return Ok((after, out));
        }
        // The SKUs whose pools or open units move: a Fulfill with the ERP
        // as master moves no pool but closes units the channel is told of.
        let open = open_deltas(Some(&before), &after);
        let mut skus: Vec<Sku> = changes
            .iter()
            .map(|c| c.sku.clone())
            .chain(open.iter().map(|(s, _)| s.clone()))
            .collect();
        skus.sort();
        skus.dedup();
        let cells: Vec<Arc<SkuCell>> = skus.iter().map(|s| self.cell(s, true)).collect();
        let ticket = {
            let mut guards = self.lock_all(&skus, &cells)?;
            let mut ops = Vec::with_capacity(changes.len() * 2 + 1);
            Self::apply_changes(
                &catalog,
                self.now_ms(),
                &skus,
                &mut guards,
                changes,
                &mut ops,
            );
            if let Some(c) = catalog.channel_index(channel) {
                Self::track_open(&skus, &mut guards, c, &open);
            }
            ops.push(Op::Reservation(Arc::new(after.clone())));
            ops.extend(self.outbox_op(Some(&before), &after, event));
            self.enqueue_locked(&skus, &cells, &mut guards, ops)
        };
        *guard = Some(after.clone());
        if let Err(e) = self.settle(&skus, &cells, ticket).await {
            self.restore_slot(&key, guard, Some(before), &e);
            return Err(e);
        }
        Ok((after, out))
    }
}

/// How long a call waits for another call on the same order (a commit in
/// flight, or the read-back of a commit whose outcome is unknown) before it
/// is refused as UNAVAILABLE.
const SLOT_WAIT: Duration = Duration::from_secs(1);

/// The slot's lock, owned so that a background read-back can keep it.
type SlotGuard = OwnedMutexGuard<Option<Reservation>>;

impl Engine {
    /// Locks an order's slot, waiting at most [`SLOT_WAIT`].
    pub(super) async fn lock_slot(
        &self,
        key: &ResKey,
        slot: &super::Slot,
    ) -> Result<SlotGuard, EngineError> {
        // Free (as a new order's slot always is): taken without arming
        // the timer.
        if let Ok(guard) = slot.clone().try_lock_owned() {
            return Ok(guard);
        }
        // Boxed: the wait and its timer are only paid for when the slot is
        // busy, not carried in every write's future.
        Box::pin(tokio::time::timeout(SLOT_WAIT, slot.clone().lock_owned()))
            .await
            .map_err(|_| EngineError::OrderBusy {
                channel: key.0.clone(),
                order_id: key.1.clone(),
            })
    }

    /// Puts an order's slot right after its commit failed. When nothing was
    /// written, it goes back to `before` at once (true is returned). When
    /// the commit may have landed (its COMMIT was lost), what the store
    /// holds is read back in the background, retrying until the store
    /// answers, while the slot stays locked: calls on this order are
    /// refused as UNAVAILABLE meanwhile rather than decided on a guess, and
    /// the caller is answered now.
    pub(super) fn restore_slot(
        &self,
        key: &ResKey,
        mut guard: SlotGuard,
        before: Option<Reservation>,
        error: &EngineError,
    ) -> bool {
        let in_doubt =
            matches!(error, EngineError::Unavailable(e) if e.failure() == Failure::InDoubt);
        if !in_doubt {
            *guard = before;
            return true;
        }
        let engine = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(5);
            loop {
                match engine.inner.store.load_reservation(&key.0, &key.1).await {
                    Ok(stored) => {
                        *guard = stored;
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %crate::telemetry::chain(&e),
                            channel = %key.0,
                            order_id = %key.1,
                            "cannot yet read back a reservation whose commit may have landed; retrying"
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                }
            }
        });
        false
    }
}

/// Longest pause between two read-backs (or reloads) while the store does
/// not answer; each attempt itself waits up to the store's own timeout.
pub(super) const RETRY_MAX: Duration = Duration::from_millis(250);

fn not_found(key: &ResKey) -> EngineError {
    EngineError::ReservationNotFound {
        channel: key.0.clone(),
        order_id: key.1.clone(),
    }
}

/// The pool changes of `takes` on `r`'s allocations; `deltas` maps a taken
/// quantity to (on_hand, reserved) deltas.
fn pool_changes(
    r: &Reservation,
    catalog: &Catalog,
    takes: &[Take],
    kind: MovementKind,
    reason: &str,
    reference: &str,
    deltas: impl Fn(i64) -> (i64, i64),
) -> Vec<PoolChange> {
    takes
        .iter()
        .filter_map(|t| {
            let a = &r.allocations[t.allocation];
            let warehouse = catalog.warehouse_index(&a.warehouse)?;
            let (on_hand, reserved) = deltas(t.quantity);
            Some(PoolChange {
                sku: a.sku.clone(),
                warehouse,
                on_hand,
                reserved,
                kind,
                reason: reason.to_string(),
                reference: reference.to_string(),
            })
        })
        .collect()
}

/// Which reservations [`Engine::list_reservations`] returns; a filter
/// left empty matches all.
#[derive(Debug, Clone, Default)]
pub struct ReservationFilter {
    pub channel: Option<ChannelCode>,
    pub statuses: Vec<Status>,
    pub sku: Option<Sku>,
    /// Only those created after this time (ms since the Unix epoch).
    pub created_after_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_are_written_as_the_016x_format_writes_them() {
        for n in [0, 1, 0xabc, u64::MAX, 0x0123_4567_89ab_cdef] {
            let mut s = [0u8; 16];
            put_hex(&mut s, n);
            assert_eq!(std::str::from_utf8(&s).unwrap(), format!("{n:016x}"));
        }
    }

    #[test]
    fn reservation_ids_are_res_and_32_hex_digits_and_increase() {
        let (a, b) = (new_reservation_id(), new_reservation_id());
        assert!(a.starts_with("res_") && a.len() == 36, "{a}");
        assert!(a[4..].chars().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert!(a < b, "{a} then {b}");
    }

    #[test]
    fn a_reference_is_the_channel_a_slash_and_the_order_id() {
        let (c, o) = (
            ChannelCode::parse("shopify").unwrap(),
            OrderId::parse("#1001").unwrap(),
        );
        assert_eq!(reference(&c, &o), "shopify/#1001");
    }
}
