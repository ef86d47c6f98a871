//! The pure core: validated types, allocation rules, the ATP and published
//! formula, sourcing, and the reservation state machine.
//!
//! Everything here is synchronous and side-effect free: no I/O, no locks, no
//! clocks (time comes in as `now_ms`), and no knowledge of gRPC or SQL. The
//! engine feeds it snapshots and applies what it decides.

// `DomainError` is large (ExceedsOpen names channel, order, SKU and
// warehouse) but refusals are rare and its shape is shared with callers:
// boxing it would change every signature here.
#![allow(clippy::result_large_err)]

mod allocation;
mod catalog;
mod codes;
mod error;
mod reservation;
mod terms;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod proptests;

pub use allocation::{
    atp, availability, lay_fences, levels, published, source_order, Availability, ExplainStep,
    Laid, OrderLine, Placement,
};
pub use catalog::{Catalog, Channel, Effective, FieldSource, Rule, Warehouse, BUILTIN_CHANNELS};
pub use codes::{
    check_text, ChannelCode, OrderId, Quantity, Sku, TextKind, WarehouseCode, MAX_CODE_LEN,
    MAX_QUANTITY, MAX_TEXT_LEN,
};
pub use error::{DomainError, InvalidInput, Shortfall};
pub use reservation::{
    canonical_lines, Allocation, LineRequest, Refund, Reservation, Status, StockMaster, Take,
    MAX_HOLD_SECONDS, MAX_LINES,
};
pub use terms::{
    Currency, CustomerRef, OrderTerms, UnitPrice, MAX_CUSTOMER_REF_LEN, PRICE_DECIMALS,
};

/// Stock of one SKU in one warehouse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pool {
    /// Units physically there.
    pub on_hand: i64,
    /// Units held for open reservations. May exceed `on_hand` after a count
    /// found less than was reserved (a shortfall).
    pub reserved: i64,
    /// Bumped by every change; the compare-and-set token of `SetStock`.
    pub version: u64,
}

impl Pool {
    /// `max(0, on_hand - reserved)`: what may still be reserved here.
    pub fn free(&self) -> i64 {
        (self.on_hand - self.reserved).max(0)
    }

    /// Units reserved beyond what is on hand (0 when none).
    pub fn shortfall(&self) -> i64 {
        (self.reserved - self.on_hand).max(0)
    }
}

/// The one movement that makes a pool follow the ERP when the ERP is the
/// master of physical stock: on-hand becomes the ERP's `count` and the
/// `newly_delivered` units (booked by [`Reservation::erp_delivered`]) leave
/// `reserved`, together, so no unit is taken off twice and free never
/// rises before on-hand has dropped. Returns the (on_hand, reserved)
/// deltas.
pub fn follow_erp(pool: &Pool, count: i64, newly_delivered: i64) -> (i64, i64) {
    (count - pool.on_hand, -newly_delivered)
}
