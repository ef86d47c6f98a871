//! Orders in: what each webhook means for the order's reservation in
//! stockpool, applied so that duplicated, retried and reordered deliveries
//! change nothing wrongly.
//!
//! The adapter keeps, per Shopify order, what it learnt (in its state
//! database): the order's lines (SKU, quantity, price), whether it was
//! paid or cancelled, and the units removed from each line by order edits
//! and by refunds that cancel unfulfilled units, each edit and refund
//! counted once by its id. Every webhook first merges what it says into
//! that record, then brings stockpool to match it:
//!
//! - the order is reserved once (`Reserve` is idempotent on the order id),
//!   at `orders/create` or once paid, with prices, currency, customer and
//!   `prices_include_tax`; whatever topic arrives first does it;
//! - a cancelled order releases every open unit, and is never reserved
//!   after (a cancel delivered before the create);
//! - units removed by edits or cancel-refunds are released as the
//!   difference between what the record says and what stockpool already
//!   released, so a repeated or late webhook releases nothing more;
//! - `fulfillments/create` ships by `shipment_id` = the fulfillment id and
//!   `refunds/create` restocks returns by `refund_id` = the refund id
//!   (both idempotent in stockpool); a return that arrives before its
//!   shipment reached stockpool waits (503, Shopify retries).
//!
//! Webhooks of one order are applied one at a time. What can never apply
//! (a line without a SKU, a SKU stockpool would refuse, an order refused
//! for stock, units added by an edit) is logged, counted and listed for
//! ops, and answered 200 so Shopify stops retrying. stockpool unreachable
//! is 503: Shopify retries, and nothing is answered 200 unless applied.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use dashmap::DashMap;
use tonic::Code;

use super::config::ReserveOn;
use super::payload::{Fulfillment, Order, OrderEdit, Refund};
use crate::adapters::metrics;
use crate::adapters::state::StateDb;
use crate::adapters::Upstream;
use crate::api::pb;

/// What a webhook came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// stockpool holds what the webhook says (possibly already did).
    Applied,
    /// Nothing to do, by design (e.g. `orders/create` in paid mode).
    Skipped(String),
    /// Can never apply; listed for ops.
    Unapplied(&'static str, String),
    /// Not applied now: answer 503 so Shopify delivers it again.
    Retry(String),
}

/// Removed units of one line, and where it came from.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct LineState {
    sku: String,
    quantity: i64,
    price: String,
    /// Units removed by order edits (each edit counted once).
    removed: i64,
    /// Units cancelled by refunds with `restock_type` cancel.
    cancelled: i64,
}

/// What the adapter learnt of one order.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
struct OrderState {
    name: String,
    /// By line item id.
    lines: BTreeMap<String, LineState>,
    currency: String,
    customer_ref: String,
    taxes_included: bool,
    /// An order payload was seen (its lines are known).
    seen: bool,
    paid: bool,
    cancelled: bool,
    /// stockpool holds the reservation.
    reserved: bool,
    /// stockpool refused the order for good, with why.
    refused: Option<String>,
    edits: BTreeSet<String>,
    refunds: BTreeSet<String>,
}

/// The orders side of the adapter.
pub struct Orders {
    upstream: Upstream,
    db: StateDb,
    channel: String,
    reserve_on: ReserveOn,
    locks: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

pub use crate::adapters::{micros, price_text, valid_sku};

/// The unit price of a SKU ordered on several lines: the quantity-weighted
/// mean of theirs (empty when any is not a price).
fn mean_price(lines: &[(&str, i64)]) -> String {
    let mut total: i128 = 0;
    let mut units: i128 = 0;
    for (price, q) in lines {
        let Some(m) = micros(price) else {
            return String::new();
        };
        total += m as i128 * *q as i128;
        units += *q as i128;
    }
    if units == 0 {
        return String::new();
    }
    price_text((total / units) as i64)
}

fn code_name(status: &tonic::Status) -> String {
    format!("{:?}", status.code())
}

impl Orders {
    pub fn new(upstream: Upstream, db: StateDb, channel: String, reserve_on: ReserveOn) -> Orders {
        Orders {
            upstream,
            db,
            channel,
            reserve_on,
            locks: DashMap::new(),
        }
    }

    /// Creates the orders table.
    pub async fn init(db: &StateDb) -> anyhow::Result<()> {
        sqlx::query("CREATE TABLE IF NOT EXISTS shopify_orders (order_id TEXT PRIMARY KEY, state TEXT NOT NULL)")
            .execute(db.pool())
            .await?;
        Ok(())
    }

    async fn load(&self, order_id: &str) -> anyhow::Result<OrderState> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT state FROM shopify_orders WHERE order_id = ?1")
                .bind(order_id)
                .fetch_optional(self.db.pool())
                .await?;
        Ok(match text {
            Some(t) => serde_json::from_str(&t)?,
            None => OrderState::default(),
        })
    }

    async fn save(&self, order_id: &str, state: &OrderState) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO shopify_orders (order_id, state) VALUES (?1, ?2)
             ON CONFLICT (order_id) DO UPDATE SET state = excluded.state",
        )
        .bind(order_id)
        .bind(serde_json::to_string(state)?)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    async fn unapplied(
        &self,
        topic: &str,
        order: &str,
        reason: &'static str,
        detail: String,
    ) -> Outcome {
        match self.db.unapplied(topic, order, &detail).await {
            Ok(true) => {
                metrics::unapplied(&self.channel, reason);
                tracing::warn!(channel = %self.channel, topic, order, reason, detail = %detail, "a Shopify event that can never apply: listed at /unapplied");
            }
            Ok(false) => {}
            Err(e) => tracing::error!(error = %e, "could not list an unapplied event"),
        }
        Outcome::Unapplied(reason, detail)
    }

    /// Runs `f` on the order's record under the order's lock, saving it.
    async fn with_order<F, Fut>(&self, order_id: &str, f: F) -> Outcome
    where
        F: FnOnce(OrderState) -> Fut,
        Fut: std::future::Future<Output = (OrderState, Outcome)>,
    {
        let lock = self
            .locks
            .entry(order_id.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let _held = lock.lock().await;
        let state = match self.load(order_id).await {
            Ok(s) => s,
            Err(e) => return Outcome::Retry(format!("the adapter's state: {e}")),
        };
        let (state, outcome) = f(state).await;
        let saved = self.save(order_id, &state).await;
        drop(_held);
        drop(lock);
        // Forget the lock unless another delivery of this order holds it.
        self.locks
            .remove_if(order_id, |_, l| Arc::strong_count(l) == 1);
        match saved {
            Ok(()) => outcome,
            Err(e) => Outcome::Retry(format!("the adapter's state: {e}")),
        }
    }

    fn merge(state: &mut OrderState, order: &Order) {
        state.seen = true;
        state.name = order.name.clone();
        state.currency = order.currency.clone();
        state.taxes_included = order.taxes_included;
        state.customer_ref = order
            .customer
            .as_ref()
            .and_then(|c| c.id.clone())
            .unwrap_or_default();
        state.paid |= order.is_paid();
        state.cancelled |= order.cancelled_at.is_some();
        for li in &order.line_items {
            let line = state.lines.entry(li.id.clone()).or_default();
            if line.quantity == 0 {
                line.quantity = li.quantity;
            }
            if line.sku.is_empty() {
                line.sku = li.sku.trim().to_string();
            }
            if line.price.is_empty() {
                line.price = li.price.clone();
            }
        }
        for refund in &order.refunds {
            Self::count_cancels(state, refund);
        }
    }

    /// Counts a refund's cancelled units once.
    fn count_cancels(state: &mut OrderState, refund: &Refund) {
        if state.refunds.contains(&refund.id) {
            return;
        }
        for rli in refund
            .refund_line_items
            .iter()
            .filter(|r| r.restock_type == "cancel")
        {
            let line = state.lines.entry(rli.line_item_id.clone()).or_default();
            if let Some(li) = &rli.line_item {
                if line.sku.is_empty() {
                    line.sku = li.sku.trim().to_string();
                }
                if line.quantity == 0 {
                    line.quantity = li.quantity;
                }
            }
            line.cancelled += rli.quantity.max(0);
        }
        state.refunds.insert(refund.id.clone());
    }

    /// orders/create, orders/paid, orders/updated, orders/cancelled.
    pub async fn order(&self, topic: &str, order: Order) -> Outcome {
        let id = order.id.clone();
        self.with_order(&id.clone(), |mut state| async move {
            Self::merge(&mut state, &order);
            let outcome = self.converge(topic, &id, &mut state).await;
            (state, outcome)
        })
        .await
    }

    /// orders/edited: removals release, additions are listed.
    pub async fn edited(&self, topic: &str, edit: OrderEdit) -> Outcome {
        let id = edit.order_id.clone();
        self.with_order(&id.clone(), |mut state| async move {
            if !state.edits.contains(&edit.id) {
                let unknown: Vec<&str> = edit
                    .line_items
                    .removals
                    .iter()
                    .filter(|r| !state.lines.contains_key(&r.id))
                    .map(|r| r.id.as_str())
                    .collect();
                if !unknown.is_empty() {
                    let why = format!("edit {} removes line items {} not seen yet: waiting for the order", edit.id, unknown.join(","));
                    return (state, Outcome::Retry(why));
                }
                for r in &edit.line_items.removals {
                    if let Some(line) = state.lines.get_mut(&r.id) {
                        line.removed += r.delta.max(0);
                    }
                }
                state.edits.insert(edit.id.clone());
                if !edit.line_items.additions.is_empty() {
                    let added: i64 = edit.line_items.additions.iter().map(|a| a.delta.max(0)).sum();
                    self.unapplied(topic, &id, "edit_adds_units", format!("edit {} adds {added} unit(s): stockpool reservations cannot grow; reserve them as a new order", edit.id)).await;
                }
            }
            let outcome = self.converge(topic, &id, &mut state).await;
            (state, outcome)
        })
        .await
    }

    /// refunds/create: cancels release, returns restock, no_restock nothing.
    pub async fn refund(&self, topic: &str, refund: Refund) -> Outcome {
        let id = refund.order_id.clone();
        self.with_order(&id.clone(), |mut state| async move {
            Self::count_cancels(&mut state, &refund);
            let outcome = self.converge(topic, &id, &mut state).await;
            if outcome != Outcome::Applied {
                return (state, outcome);
            }
            let mut returns: BTreeMap<String, i64> = BTreeMap::new();
            for rli in refund
                .refund_line_items
                .iter()
                .filter(|r| matches!(r.restock_type.as_str(), "return" | "legacy_restock"))
            {
                let sku = state
                    .lines
                    .get(&rli.line_item_id)
                    .map(|l| l.sku.clone())
                    .filter(|s| !s.is_empty())
                    .or_else(|| rli.line_item.as_ref().map(|l| l.sku.trim().to_string()))
                    .unwrap_or_default();
                if valid_sku(&sku) {
                    *returns.entry(sku).or_default() += rli.quantity.max(0);
                }
            }
            if returns.is_empty() {
                return (state, Outcome::Applied);
            }
            let outcome = self.restock(&id, &state, &refund.id, returns).await;
            (state, outcome)
        })
        .await
    }

    /// fulfillments/create: ships the fulfillment's lines.
    pub async fn fulfillment(&self, topic: &str, f: Fulfillment) -> Outcome {
        let id = f.order_id.clone();
        self.with_order(&id.clone(), |mut state| async move {
            if matches!(f.status.as_str(), "cancelled" | "failure" | "error") {
                return (
                    state,
                    Outcome::Skipped(format!("fulfillment {} is {}", f.id, f.status)),
                );
            }
            let outcome = self.converge(topic, &id, &mut state).await;
            if outcome != Outcome::Applied {
                return (state, outcome);
            }
            if !state.reserved {
                let why = if state.seen {
                    Outcome::Skipped(format!("order {id} is not reserved in stockpool"))
                } else {
                    Outcome::Retry(format!("order {id} not seen yet: waiting for it"))
                };
                return (state, why);
            }
            let mut lines: BTreeMap<String, i64> = BTreeMap::new();
            for li in &f.line_items {
                let sku = li.sku.trim();
                if valid_sku(sku) {
                    *lines.entry(sku.to_string()).or_default() += li.quantity.max(0);
                }
            }
            if lines.is_empty() {
                return (state, Outcome::Skipped("no line with a SKU".into()));
            }
            let request = pb::FulfillRequest {
                channel: self.channel.clone(),
                order_id: id.clone(),
                lines: lines.iter().map(|(s, q)| line(s, *q)).collect(),
                shipment_id: f.id.clone(),
            };
            let conn = self.upstream.get().await;
            let started = Instant::now();
            let result = conn.inventory().fulfill(request).await;
            metrics::rpc(&self.channel, "Fulfill", started.elapsed());
            let outcome = match result {
                Ok(_) => Outcome::Applied,
                Err(s)
                    if s.code() == Code::FailedPrecondition
                        || s.code() == Code::InvalidArgument =>
                {
                    self.unapplied(
                        topic,
                        &id,
                        "fulfill_refused",
                        format!("fulfillment {}: {}: {}", f.id, code_name(&s), s.message()),
                    )
                    .await
                }
                Err(s) => Outcome::Retry(format!("Fulfill: {}: {}", code_name(&s), s.message())),
            };
            (state, outcome)
        })
        .await
    }

    /// Brings stockpool to what `state` says: reserved once, released as
    /// cancelled or removed.
    async fn converge(&self, topic: &str, id: &str, state: &mut OrderState) -> Outcome {
        if let Some(why) = &state.refused {
            return Outcome::Skipped(format!("order {id} was refused by stockpool: {why}"));
        }
        let Some(conn) = self.upstream.try_get() else {
            return Outcome::Retry("stockpool not connected yet".into());
        };
        let mut inv = conn.inventory();
        if state.cancelled {
            if !state.reserved {
                return Outcome::Applied;
            }
            let started = Instant::now();
            let result = inv
                .release(pb::ReleaseRequest {
                    channel: self.channel.clone(),
                    order_id: id.to_string(),
                    lines: vec![],
                    reason: "cancelled on Shopify".into(),
                })
                .await;
            metrics::rpc(&self.channel, "Release", started.elapsed());
            return match result {
                Ok(_) => Outcome::Applied,
                // Nothing open any more (shipped, or released already).
                Err(s) if s.code() == Code::FailedPrecondition => Outcome::Applied,
                Err(s) => Outcome::Retry(format!("Release: {}: {}", code_name(&s), s.message())),
            };
        }
        let wanted = match self.reserve_on {
            ReserveOn::Create => state.seen,
            ReserveOn::Paid => state.seen && state.paid,
        };
        if !state.reserved {
            if !wanted {
                return Outcome::Skipped(if state.seen {
                    format!("order {id} waits to be paid")
                } else {
                    format!("order {id} not seen yet")
                });
            }
            match self.reserve(topic, id, state, &mut inv).await {
                Outcome::Applied => state.reserved = true,
                other => return other,
            }
        }
        self.release_removed(id, state, &mut inv).await
    }

    async fn reserve(
        &self,
        topic: &str,
        id: &str,
        state: &mut OrderState,
        inv: &mut crate::adapters::Inventory,
    ) -> Outcome {
        let (request, without) = reserve_request(&self.channel, id, state);
        for why in without {
            self.unapplied(topic, id, "line_without_sku", why).await;
        }
        let Some(request) = request else {
            return Outcome::Skipped(format!("order {id} has no line stockpool can hold"));
        };
        let started = Instant::now();
        let result = inv.reserve(request).await;
        metrics::rpc(&self.channel, "Reserve", started.elapsed());
        match result {
            Ok(_) => Outcome::Applied,
            Err(s) if s.code() == Code::AlreadyExists => {
                // Reserved before with other lines (an edit added some):
                // the reservation stands; what it lacks is listed.
                self.unapplied(
                    topic,
                    id,
                    "lines_differ",
                    format!(
                        "stockpool holds this order with other lines: {}",
                        s.message()
                    ),
                )
                .await;
                Outcome::Applied
            }
            Err(s) if s.code() == Code::FailedPrecondition => {
                let why = format!(
                    "not enough stock in stockpool (an oversell on Shopify): {}",
                    s.message()
                );
                state.refused = Some(why.clone());
                self.unapplied(topic, id, "refused_for_stock", why).await
            }
            Err(s) if s.code() == Code::InvalidArgument => {
                let why = format!("stockpool refused the order: {}", s.message());
                state.refused = Some(why.clone());
                self.unapplied(topic, id, "refused", why).await
            }
            Err(s) => Outcome::Retry(format!("Reserve: {}: {}", code_name(&s), s.message())),
        }
    }

    /// Releases what edits and cancel-refunds removed and stockpool still
    /// holds: the record's total removed per SKU minus what is released.
    async fn release_removed(
        &self,
        id: &str,
        state: &OrderState,
        inv: &mut crate::adapters::Inventory,
    ) -> Outcome {
        let mut removed: BTreeMap<&str, i64> = BTreeMap::new();
        for l in state.lines.values().filter(|l| valid_sku(&l.sku)) {
            let gone = (l.removed + l.cancelled).min(l.quantity.max(0));
            if gone > 0 {
                *removed.entry(l.sku.as_str()).or_default() += gone;
            }
        }
        if removed.is_empty() {
            return Outcome::Applied;
        }
        let r = match self.get(id, inv).await {
            Ok(r) => r,
            Err(o) => return o,
        };
        let mut lines = Vec::new();
        for (sku, gone) in removed {
            let allocs = r.allocations.iter().filter(|a| a.sku == sku);
            let (released, open) = allocs.fold((0, 0), |(rel, open), a| {
                (
                    rel + a.released,
                    open + a.quantity - a.fulfilled - a.released,
                )
            });
            let more = (gone - released).min(open);
            if more > 0 {
                lines.push(line(sku, more));
            }
        }
        if lines.is_empty() {
            return Outcome::Applied;
        }
        let started = Instant::now();
        let result = inv
            .release(pb::ReleaseRequest {
                channel: self.channel.clone(),
                order_id: id.to_string(),
                lines,
                reason: "removed on Shopify (order edit or refund)".into(),
            })
            .await;
        metrics::rpc(&self.channel, "Release", started.elapsed());
        match result {
            Ok(_) => Outcome::Applied,
            Err(s) => Outcome::Retry(format!("Release: {}: {}", code_name(&s), s.message())),
        }
    }

    async fn get(
        &self,
        id: &str,
        inv: &mut crate::adapters::Inventory,
    ) -> Result<pb::Reservation, Outcome> {
        let started = Instant::now();
        let result = inv
            .get_reservation(pb::GetReservationRequest {
                channel: self.channel.clone(),
                order_id: id.to_string(),
            })
            .await;
        metrics::rpc(&self.channel, "GetReservation", started.elapsed());
        result.map(|r| r.into_inner()).map_err(|s| {
            Outcome::Retry(format!(
                "GetReservation: {}: {}",
                code_name(&s),
                s.message()
            ))
        })
    }

    async fn restock(
        &self,
        id: &str,
        state: &OrderState,
        refund_id: &str,
        returns: BTreeMap<String, i64>,
    ) -> Outcome {
        if !state.reserved {
            return if state.seen {
                Outcome::Skipped(format!("order {id} is not reserved in stockpool"))
            } else {
                Outcome::Retry(format!("order {id} not seen yet: waiting for it"))
            };
        }
        let conn = self.upstream.get().await;
        let mut inv = conn.inventory();
        let r = match self.get(id, &mut inv).await {
            Ok(r) => r,
            Err(o) => return o,
        };
        for (sku, want) in &returns {
            let (shipped, open) =
                r.allocations
                    .iter()
                    .filter(|a| &a.sku == sku)
                    .fold((0, 0), |(s, o), a| {
                        (
                            s + a.fulfilled - a.restocked,
                            o + a.quantity - a.fulfilled - a.released,
                        )
                    });
            if shipped < *want && open > 0 {
                return Outcome::Retry(format!("refund {refund_id} returns {want} of {sku} but stockpool has {shipped} shipped: waiting for the shipment"));
            }
        }
        let started = Instant::now();
        let result = inv
            .restock(pb::RestockRequest {
                channel: self.channel.clone(),
                order_id: id.to_string(),
                refund_id: refund_id.to_string(),
                lines: returns.iter().map(|(s, q)| line(s, *q)).collect(),
            })
            .await;
        metrics::rpc(&self.channel, "Restock", started.elapsed());
        match result {
            Ok(_) => Outcome::Applied,
            Err(s) if s.code() == Code::FailedPrecondition || s.code() == Code::InvalidArgument => {
                self.unapplied(
                    "refunds/create",
                    id,
                    "restock_refused",
                    format!("refund {refund_id}: {}: {}", code_name(&s), s.message()),
                )
                .await
            }
            Err(s) => Outcome::Retry(format!("Restock: {}: {}", code_name(&s), s.message())),
        }
    }
}

/// The Reserve of an order as the record has it (one line per SKU, its
/// quantities summed, its price the mean of its lines'), and the lines that
/// cannot be reserved, with why. None: no line can be.
fn reserve_request(
    channel: &str,
    id: &str,
    state: &OrderState,
) -> (Option<pb::ReserveRequest>, Vec<String>) {
    let mut per_sku: BTreeMap<String, Vec<(&str, i64)>> = BTreeMap::new();
    let mut without: Vec<String> = Vec::new();
    for (line_id, l) in &state.lines {
        if l.quantity <= 0 {
            continue;
        }
        if valid_sku(&l.sku) {
            per_sku
                .entry(l.sku.clone())
                .or_default()
                .push((l.price.as_str(), l.quantity));
        } else {
            without.push(if l.sku.is_empty() {
                    format!("line {line_id} has no SKU")
                } else {
                    format!("line {line_id}: SKU {:?} is not one stockpool accepts (at most 64 letters, digits, -, _, .)", l.sku)
                });
        }
    }
    if per_sku.is_empty() {
        return (None, without);
    }
    let lines: Vec<pb::Line> = per_sku
        .iter()
        .map(|(sku, parts)| pb::Line {
            sku: sku.clone(),
            quantity: parts.iter().map(|(_, q)| q).sum(),
            warehouse: String::new(),
            unit_price: mean_price(parts),
        })
        .collect();
    let any_price = lines.iter().any(|l| !l.unit_price.is_empty());
    let request = pb::ReserveRequest {
        channel: channel.to_string(),
        order_id: id.to_string(),
        lines,
        hold_seconds: 0,
        currency: if any_price {
            state.currency.clone()
        } else {
            String::new()
        },
        customer_ref: state.customer_ref.clone(),
        prices_include_tax: state.taxes_included,
    };
    (Some(request), without)
}

fn line(sku: &str, quantity: i64) -> pb::Line {
    pb::Line {
        sku: sku.to_string(),
        quantity,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_decimals_and_a_sku_on_several_lines_gets_their_weighted_mean() {
        assert_eq!(micros("19.90"), Some(19_900_000));
        assert_eq!(micros("5"), Some(5_000_000));
        assert_eq!(micros("-1.00"), None);
        assert_eq!(micros("1.1234567"), None);
        assert_eq!(mean_price(&[("19.90", 1)]), "19.90");
        assert_eq!(mean_price(&[("10.00", 1), ("20.00", 3)]), "17.50");
        assert_eq!(mean_price(&[("10.00", 1), ("", 1)]), "");
    }

    #[test]
    fn the_reserve_carries_prices_currency_customer_and_tax_and_lists_lines_without_a_sku() {
        let order: Order = serde_json::from_value(serde_json::json!({
            "id": 5001, "name": "#1001", "currency": "EUR", "taxes_included": true,
            "financial_status": "paid", "customer": { "id": 207119551 },
            "line_items": [
                { "id": 1, "sku": "TEE", "quantity": 1, "price": "10.00" },
                { "id": 2, "sku": "TEE", "quantity": 3, "price": "20.00" },
                { "id": 3, "sku": "MUG", "quantity": 2, "price": "7.5" },
                { "id": 4, "sku": null, "quantity": 1, "price": "5.00" }
            ]
        }))
        .unwrap();
        let mut state = OrderState::default();
        Orders::merge(&mut state, &order);
        let (request, without) = reserve_request("shopify", "5001", &state);
        let r = request.unwrap();
        assert_eq!(
            (r.channel.as_str(), r.order_id.as_str(), r.hold_seconds),
            ("shopify", "5001", 0)
        );
        assert_eq!(
            (
                r.currency.as_str(),
                r.customer_ref.as_str(),
                r.prices_include_tax
            ),
            ("EUR", "207119551", true)
        );
        let lines: Vec<(&str, i64, &str)> = r
            .lines
            .iter()
            .map(|l| (l.sku.as_str(), l.quantity, l.unit_price.as_str()))
            .collect();
        assert_eq!(lines, vec![("MUG", 2, "7.50"), ("TEE", 4, "17.50")]);
        assert_eq!(without, vec!["line 4 has no SKU".to_string()]);
    }

    #[test]
    fn skus_follow_stockpools_rule() {
        assert!(valid_sku("TEE-BLK-M"));
        assert!(!valid_sku(""));
        assert!(!valid_sku("TEE BLK"));
        assert!(!valid_sku(&"X".repeat(65)));
    }
}
