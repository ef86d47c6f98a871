//! Proto messages to validated domain commands and back. Every check on the
//! shape of a request happens here, once; errors name the field.

use std::collections::HashSet;

use tonic::Status;

use super::error::invalid;
use super::pb;
use crate::domain::{
    self, check_text, Allocation, ChannelCode, Currency, CustomerRef, InvalidInput, LineRequest,
    OrderId, OrderTerms, Quantity, Reservation, Rule, Sku, Status as ResStatus, TextKind,
    UnitPrice, WarehouseCode, MAX_LINES,
};
use crate::engine::{ChannelAvailability, StockLevel};
use crate::store::{LedgerRow, OutboxEntry, OutboxState};

pub fn channel(raw: &str) -> Result<ChannelCode, Status> {
    ChannelCode::parse(raw).map_err(invalid)
}

pub fn order_id(raw: &str) -> Result<OrderId, Status> {
    OrderId::parse(raw).map_err(invalid)
}

pub fn sku(raw: &str) -> Result<Sku, Status> {
    Sku::parse(raw).map_err(invalid)
}

pub fn warehouse(raw: &str) -> Result<WarehouseCode, Status> {
    WarehouseCode::parse(raw).map_err(invalid)
}

pub fn skus(raw: &[String]) -> Result<Vec<Sku>, Status> {
    raw.iter()
        .enumerate()
        .map(|(i, s)| {
            Sku::parse(s.as_str())
                .map_err(|e| invalid(InvalidInput::new(format!("skus[{i}]"), e.problem)))
        })
        .collect()
}

/// A note a person wrote (a reason, a comment): tabs and line breaks
/// allowed, no other control character, at most
/// [`domain::MAX_TEXT_LEN`] characters.
pub fn text(field: &str, raw: &str) -> Result<String, Status> {
    check_text(field, raw, TextKind::Note).map_err(invalid)?;
    Ok(raw.to_string())
}

/// One line of free text (a name, who made a change): no control
/// character at all.
pub fn line_text(field: &str, raw: &str) -> Result<String, Status> {
    check_text(field, raw, TextKind::Line).map_err(invalid)?;
    Ok(raw.to_string())
}

/// An optional idempotency key (one line): empty means none.
pub fn key(field: &str, raw: &str) -> Result<Option<String>, Status> {
    let raw = line_text(field, raw)?;
    Ok((!raw.is_empty()).then_some(raw))
}

fn check_count(len: usize) -> Result<(), Status> {
    if len > MAX_LINES {
        return Err(invalid(InvalidInput::new(
            "lines",
            format!("has {len} lines; at most {MAX_LINES} are allowed"),
        )));
    }
    Ok(())
}

/// Reserve lines: at least one, each SKU once, no warehouse (stockpool picks).
pub fn reserve_lines(lines: &[pb::Line]) -> Result<Vec<(Sku, Quantity)>, Status> {
    if lines.is_empty() {
        return Err(invalid(InvalidInput::new(
            "lines",
            "must name at least one SKU",
        )));
    }
    check_count(lines.len())?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let at = format!("lines[{i}]");
        let sku = Sku::parse(l.sku.as_str()).map_err(|e| invalid(e.at(&at)))?;
        let quantity = Quantity::parse("quantity", l.quantity).map_err(|e| invalid(e.at(&at)))?;
        if !l.warehouse.is_empty() {
            return Err(invalid(InvalidInput::new(
                format!("{at}.warehouse"),
                "must be empty on Reserve: stockpool picks the warehouses from the channel's rules",
            )));
        }
        if !seen.insert(sku.clone()) {
            return Err(invalid(InvalidInput::new(
                at,
                format!("names {sku} again; an order names each SKU once"),
            )));
        }
        out.push((sku, quantity));
    }
    Ok(out)
}

/// The books' side of a Reserve: each line's `unit_price` (empty: none),
/// `currency` (required once a line has a price), `customer_ref` (empty:
/// anonymous) and `prices_include_tax`. Call after [`reserve_lines`], which
/// checks the lines themselves.
pub fn order_terms(r: &pb::ReserveRequest) -> Result<OrderTerms, Status> {
    let mut prices = Vec::new();
    for (i, l) in r.lines.iter().enumerate() {
        if l.unit_price.is_empty() {
            continue;
        }
        let at = format!("lines[{i}]");
        let sku = Sku::parse(l.sku.as_str()).map_err(|e| invalid(e.at(&at)))?;
        let price =
            UnitPrice::parse("unit_price", &l.unit_price).map_err(|e| invalid(e.at(&at)))?;
        prices.push((sku, price));
    }
    let currency = if r.currency.is_empty() {
        None
    } else {
        Some(Currency::parse("currency", &r.currency).map_err(invalid)?)
    };
    let customer_ref = if r.customer_ref.is_empty() {
        None
    } else {
        Some(CustomerRef::parse("customer_ref", &r.customer_ref).map_err(invalid)?)
    };
    OrderTerms::new(currency, customer_ref, r.prices_include_tax, prices).map_err(invalid)
}

/// Fulfill/Release/Restock lines: each (SKU, warehouse) once; may be empty.
pub fn line_requests(lines: &[pb::Line]) -> Result<Vec<LineRequest>, Status> {
    check_count(lines.len())?;
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let at = format!("lines[{i}]");
        let sku = Sku::parse(l.sku.as_str()).map_err(|e| invalid(e.at(&at)))?;
        let quantity = Quantity::parse("quantity", l.quantity).map_err(|e| invalid(e.at(&at)))?;
        let warehouse = if l.warehouse.is_empty() {
            None
        } else {
            Some(WarehouseCode::parse(l.warehouse.as_str()).map_err(|e| invalid(e.at(&at)))?)
        };
        if !seen.insert((sku.clone(), warehouse.clone())) {
            return Err(invalid(InvalidInput::new(
                at,
                format!("names {sku} again; name each SKU (and warehouse) once"),
            )));
        }
        out.push(LineRequest {
            sku,
            quantity,
            warehouse,
        });
    }
    Ok(out)
}

fn status(s: ResStatus) -> pb::ReservationStatus {
    match s {
        ResStatus::Held => pb::ReservationStatus::Held,
        ResStatus::Confirmed => pb::ReservationStatus::Confirmed,
        ResStatus::Fulfilled => pb::ReservationStatus::Fulfilled,
        ResStatus::Released => pb::ReservationStatus::Released,
        ResStatus::Expired => pb::ReservationStatus::Expired,
    }
}

/// A status filter of ListReservations: one of the five statuses.
pub fn reservation_status(field: &str, raw: i32) -> Result<ResStatus, Status> {
    match pb::ReservationStatus::try_from(raw) {
        Ok(pb::ReservationStatus::Held) => Ok(ResStatus::Held),
        Ok(pb::ReservationStatus::Confirmed) => Ok(ResStatus::Confirmed),
        Ok(pb::ReservationStatus::Fulfilled) => Ok(ResStatus::Fulfilled),
        Ok(pb::ReservationStatus::Released) => Ok(ResStatus::Released),
        Ok(pb::ReservationStatus::Expired) => Ok(ResStatus::Expired),
        _ => Err(invalid(InvalidInput::new(
            field,
            format!("{raw} is not a status: HELD, CONFIRMED, FULFILLED, RELEASED or EXPIRED"),
        ))),
    }
}

/// A ledger line as ListMovements answers it.
pub fn movement(row: &LedgerRow) -> pb::Movement {
    let e = &row.entry;
    pb::Movement {
        id: row.id.max(0) as u64,
        at_ms: e.at_ms,
        sku: e.sku.to_string(),
        warehouse: e.warehouse.to_string(),
        kind: e.kind.as_str().to_string(),
        on_hand_delta: e.on_hand_delta,
        reserved_delta: e.reserved_delta,
        on_hand_after: e.on_hand_after,
        reserved_after: e.reserved_after,
        reason: e.reason.clone(),
        reference: e.reference.clone(),
    }
}

/// An allocation with the unit price its order line was reserved at.
pub fn allocation(a: &Allocation, terms: &OrderTerms) -> pb::Allocation {
    pb::Allocation {
        sku: a.sku.to_string(),
        warehouse: a.warehouse.to_string(),
        quantity: a.quantity,
        fulfilled: a.fulfilled,
        released: a.released,
        restocked: a.restocked,
        unit_price: terms
            .unit_price(&a.sku)
            .map(|p| p.to_string())
            .unwrap_or_default(),
    }
}

pub fn reservation(r: &Reservation) -> pb::Reservation {
    let terms = &r.terms;
    pb::Reservation {
        id: r.id.clone(),
        channel: r.channel.to_string(),
        order_id: r.order_id.to_string(),
        status: status(r.status) as i32,
        allocations: r.allocations.iter().map(|a| allocation(a, terms)).collect(),
        created_at_ms: r.created_at_ms,
        expires_at_ms: r.expires_at_ms,
        currency: terms
            .currency
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        customer_ref: terms
            .customer_ref
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        prices_include_tax: terms.prices_include_tax,
    }
}

pub fn stock_level(l: &StockLevel) -> pb::StockLevel {
    pb::StockLevel {
        sku: l.sku.to_string(),
        warehouse: l.warehouse.to_string(),
        on_hand: l.pool.on_hand,
        reserved: l.pool.reserved,
        free: l.pool.free(),
        version: l.pool.version,
        shortfall: l.pool.shortfall(),
    }
}

pub fn channel_availability(a: &ChannelAvailability) -> pb::ChannelAvailability {
    pb::ChannelAvailability {
        sku: a.sku.to_string(),
        channel: a.channel.to_string(),
        atp: a.availability.atp,
        published: a.availability.published,
        explain: a
            .availability
            .explain
            .iter()
            .map(|s| pb::ExplainStep {
                step: s.step.to_string(),
                value: s.value,
                detail: s.detail.clone(),
            })
            .collect(),
    }
}

/// A proto rule to a domain rule (shape only; the engine checks it against
/// the declared channels and warehouses).
pub fn rule(r: &pb::Rule) -> Result<Rule, Status> {
    let channel = ChannelCode::parse(r.channel.as_str()).map_err(|e| invalid(e.at("rule")))?;
    let sku = if r.sku.is_empty() {
        None
    } else {
        Some(Sku::parse(r.sku.as_str()).map_err(|e| invalid(e.at("rule")))?)
    };
    let warehouses = r
        .warehouses
        .iter()
        .enumerate()
        .map(|(i, w)| {
            WarehouseCode::parse(w.as_str()).map_err(|e| {
                invalid(InvalidInput::new(
                    format!("rule.warehouses[{i}]"),
                    e.problem,
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Rule {
        channel: Some(channel),
        sku,
        warehouses,
        fence: r.fence,
        share_percent: r.share_percent,
        buffer: r.buffer,
        max_published: r.max_published,
        min_published: r.min_published,
    })
}

pub fn rule_to_pb(r: &Rule) -> pb::Rule {
    pb::Rule {
        channel: r
            .channel
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default(),
        sku: r.sku.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        warehouses: r.warehouses.iter().map(|w| w.to_string()).collect(),
        fence: r.fence,
        share_percent: r.share_percent,
        buffer: r.buffer,
        max_published: r.max_published,
        min_published: r.min_published,
    }
}

/// A display name: free text, defaulting to the code.
pub fn name(raw: &str, code: &str) -> Result<String, Status> {
    let n = line_text("name", raw)?;
    Ok(if n.is_empty() { code.to_string() } else { n })
}

pub fn warehouse_pb(w: &domain::Warehouse) -> pb::Warehouse {
    pb::Warehouse {
        code: w.code.to_string(),
        name: w.name.clone(),
    }
}

pub fn channel_pb(c: &domain::Channel) -> pb::Channel {
    pb::Channel {
        code: c.code.to_string(),
        name: c.name.clone(),
    }
}

/// A ListOutbox state filter; UNSPECIFIED: every state.
pub fn outbox_state(raw: i32) -> Result<Option<OutboxState>, Status> {
    match pb::OutboxState::try_from(raw) {
        Ok(pb::OutboxState::Unspecified) => Ok(None),
        Ok(pb::OutboxState::Pending) => Ok(Some(OutboxState::Pending)),
        Ok(pb::OutboxState::Pushed) => Ok(Some(OutboxState::Pushed)),
        Ok(pb::OutboxState::Dead) => Ok(Some(OutboxState::Dead)),
        Err(_) => Err(Status::invalid_argument(format!(
            "state: {raw} is not an outbox state (PENDING, PUSHED or DEAD; unset for all)"
        ))),
    }
}

/// Most ids one RetryOutbox takes.
const MAX_RETRY_IDS: usize = 1000;

/// RetryOutbox ids: at least one, each positive, none twice.
pub fn outbox_ids(ids: &[i64]) -> Result<Vec<i64>, Status> {
    if ids.is_empty() {
        return Err(Status::invalid_argument(
            "ids: give at least one outbox entry id (ListOutbox with state DEAD lists them)",
        ));
    }
    if ids.len() > MAX_RETRY_IDS {
        return Err(Status::invalid_argument(format!(
            "ids: {} ids is more than the {MAX_RETRY_IDS} allowed at once",
            ids.len()
        )));
    }
    let mut seen = HashSet::new();
    for id in ids {
        if *id <= 0 {
            return Err(Status::invalid_argument(format!(
                "ids: {id} is not an outbox entry id"
            )));
        }
        if !seen.insert(*id) {
            return Err(Status::invalid_argument(format!(
                "ids: {id} is given twice"
            )));
        }
    }
    Ok(ids.to_vec())
}

pub fn outbox_entry_pb(e: &OutboxEntry) -> pb::OutboxEntry {
    pb::OutboxEntry {
        id: e.id,
        channel: e.entry.channel.to_string(),
        order_id: e.entry.order_id.to_string(),
        reservation_id: e.entry.reservation_id.clone(),
        event: e.entry.event.as_str().to_string(),
        state: match e.state {
            OutboxState::Pending => pb::OutboxState::Pending,
            OutboxState::Pushed => pb::OutboxState::Pushed,
            OutboxState::Dead => pb::OutboxState::Dead,
        } as i32,
        attempts: e.attempts,
        last_error: e.last_error.clone(),
        created_at_ms: e.entry.at_ms,
        next_attempt_at_ms: e.next_attempt_at_ms,
        updated_at_ms: e.updated_at_ms,
        lines: e
            .entry
            .lines
            .iter()
            .map(|l| pb::OutboxLine {
                warehouse: l.warehouse.to_string(),
                sku: l.sku.to_string(),
                ordered: l.ordered,
                fulfilled: l.fulfilled,
            })
            .collect(),
    }
}
