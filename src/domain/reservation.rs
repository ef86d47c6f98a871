//! The reservation state machine: what Confirm, Fulfill, Release, Restock
//! and expiry may do to a reservation, decided without touching stock. The
//! engine turns the returned [`Take`]s into pool changes.

use std::fmt;

use super::{ChannelCode, DomainError, OrderId, OrderTerms, Quantity, Sku, WarehouseCode};

/// Most lines one request may carry.
pub const MAX_LINES: usize = 200;
/// Longest hold a Reserve may ask for (7 days).
pub const MAX_HOLD_SECONDS: u32 = 7 * 24 * 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Status {
    Held,
    Confirmed,
    Fulfilled,
    Released,
    Expired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Held => "HELD",
            Status::Confirmed => "CONFIRMED",
            Status::Fulfilled => "FULFILLED",
            Status::Released => "RELEASED",
            Status::Expired => "EXPIRED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "HELD" => Status::Held,
            "CONFIRMED" => Status::Confirmed,
            "FULFILLED" => Status::Fulfilled,
            "RELEASED" => Status::Released,
            "EXPIRED" => Status::Expired,
            _ => return None,
        })
    }

    /// Open reservations still hold units.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Held | Status::Confirmed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who books the physical movements of stock (deliveries, returns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StockMaster {
    /// stockpool: a Fulfill takes the shipped units off on-hand, a Restock
    /// puts returned units back.
    #[default]
    Stockpool,
    /// The ERP (Odoo): on-hand follows its counts. A Fulfill records what
    /// the channel shipped but the units stay claimed until the ERP
    /// delivers them; a Restock records the refund, and the units come back
    /// on hand when the ERP receives them.
    Erp,
}

/// Units of one SKU allocated to one warehouse, and what became of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(from = "AllocationRecord")]
pub struct Allocation {
    pub sku: Sku,
    pub warehouse: WarehouseCode,
    pub quantity: i64,
    /// Units shipped: the larger of what the channel reported (`shipped`)
    /// and what was delivered (`delivered`). Both report the same
    /// shipments, so a unit is never counted as shipped twice.
    pub fulfilled: i64,
    pub released: i64,
    pub restocked: i64,
    /// Units the channel reported shipped with Fulfill.
    pub shipped: i64,
    /// Units whose leaving is booked on the pool: no longer in `reserved`
    /// (and, with stockpool as the master, no longer in `on_hand`). With
    /// the ERP as master, the ERP's deliveries book them.
    pub delivered: i64,
}

/// An allocation as stored; rows written before `shipped` and `delivered`
/// existed were booked by Fulfill alone, so both equal `fulfilled`.
#[derive(serde::Deserialize)]
struct AllocationRecord {
    sku: Sku,
    warehouse: WarehouseCode,
    quantity: i64,
    fulfilled: i64,
    released: i64,
    restocked: i64,
    #[serde(default)]
    shipped: Option<i64>,
    #[serde(default)]
    delivered: Option<i64>,
}

impl From<AllocationRecord> for Allocation {
    fn from(r: AllocationRecord) -> Allocation {
        Allocation {
            shipped: r.shipped.unwrap_or(r.fulfilled),
            delivered: r.delivered.unwrap_or(r.fulfilled),
            sku: r.sku,
            warehouse: r.warehouse,
            quantity: r.quantity,
            fulfilled: r.fulfilled,
            released: r.released,
            restocked: r.restocked,
        }
    }
}

impl Allocation {
    /// A fresh allocation: nothing shipped, released or restocked.
    pub fn new(sku: Sku, warehouse: WarehouseCode, quantity: i64) -> Allocation {
        Allocation {
            sku,
            warehouse,
            quantity,
            fulfilled: 0,
            released: 0,
            restocked: 0,
            shipped: 0,
            delivered: 0,
        }
    }

    /// Units still open: neither shipped nor released.
    pub fn open(&self) -> i64 {
        self.quantity - self.fulfilled - self.released
    }

    /// Units the pool still holds for this allocation (its share of
    /// `reserved`): not released and not yet delivered. Above `open` while
    /// the channel has shipped units the ERP has not delivered yet.
    pub fn held(&self) -> i64 {
        self.quantity - self.released - self.delivered
    }

    /// Units the channel may still report shipped.
    fn unreported(&self) -> i64 {
        self.quantity - self.released - self.shipped
    }

    fn settle_fulfilled(&mut self) {
        self.fulfilled = self.shipped.max(self.delivered);
    }
}

/// A line of a Fulfill, Release or Restock request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRequest {
    pub sku: Sku,
    pub quantity: Quantity,
    /// Only this warehouse's allocation; else allocations in allocation order.
    pub warehouse: Option<WarehouseCode>,
}

/// `quantity` units of allocation number `allocation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Take {
    pub allocation: usize,
    pub quantity: i64,
}

/// A processed refund, kept so that the same `refund_id` replays its answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refund {
    pub refund_id: String,
    pub restocked: Vec<Take>,
}

/// Units held for one channel order, identified by `(channel, order_id)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub id: String,
    pub channel: ChannelCode,
    pub order_id: OrderId,
    pub status: Status,
    /// The lines as first requested, sorted by SKU: a replay must match them.
    pub lines: Vec<(Sku, i64)>,
    pub allocations: Vec<Allocation>,
    pub created_at_ms: i64,
    /// When a HELD reservation expires; 0 once confirmed or never held.
    pub expires_at_ms: i64,
    /// Shipment ids already applied (Fulfill is idempotent on them).
    pub shipments: Vec<String>,
    /// Refunds already applied (Restock is idempotent on them).
    pub refunds: Vec<Refund>,
    /// Prices, currency and customer as given on Reserve: a replay must
    /// carry the same.
    pub terms: OrderTerms,
}

/// Lines sorted by SKU: the form replays are compared in.
pub fn canonical_lines(lines: &[(Sku, i64)]) -> Vec<(Sku, i64)> {
    let mut v = lines.to_vec();
    v.sort();
    v
}

impl Reservation {
    /// A new reservation; HELD for `hold_seconds` when non-zero, else CONFIRMED.
    pub fn new(
        id: String,
        channel: ChannelCode,
        order_id: OrderId,
        mut lines: Vec<(Sku, i64)>,
        allocations: Vec<Allocation>,
        now_ms: i64,
        hold_seconds: u32,
    ) -> Self {
        let held = hold_seconds > 0;
        lines.sort();
        Reservation {
            id,
            channel,
            order_id,
            status: if held {
                Status::Held
            } else {
                Status::Confirmed
            },
            lines,
            allocations,
            created_at_ms: now_ms,
            expires_at_ms: if held {
                now_ms + i64::from(hold_seconds) * 1000
            } else {
                0
            },
            shipments: Vec::new(),
            refunds: Vec::new(),
            terms: OrderTerms::default(),
        }
    }

    /// Whether a Reserve with `lines` is a replay of this one, whatever the
    /// order of the lines on either side.
    pub fn same_lines(&self, lines: &[(Sku, i64)]) -> bool {
        canonical_lines(&self.lines) == canonical_lines(lines)
    }

    /// Whether a Reserve with `lines` and `terms` is a replay of this one.
    pub fn same_order(&self, lines: &[(Sku, i64)], terms: &OrderTerms) -> bool {
        self.same_lines(lines) && &self.terms == terms
    }

    fn wrong(&self, action: &'static str) -> DomainError {
        DomainError::WrongStatus {
            channel: self.channel.clone(),
            order_id: self.order_id.clone(),
            status: self.status,
            action,
        }
    }

    /// A HELD reservation whose hold has run out (the sweeper expires it).
    pub fn hold_lapsed(&self, now_ms: i64) -> bool {
        self.status == Status::Held && self.expires_at_ms <= now_ms
    }

    /// HELD → CONFIRMED. CONFIRMED and FULFILLED stay as they are (Ok(false));
    /// RELEASED, EXPIRED and a lapsed hold are refused.
    pub fn confirm(&mut self, now_ms: i64) -> Result<bool, DomainError> {
        match self.status {
            Status::Held if self.hold_lapsed(now_ms) => Err(DomainError::WrongStatus {
                channel: self.channel.clone(),
                order_id: self.order_id.clone(),
                status: Status::Expired,
                action: "confirm",
            }),
            Status::Held => {
                self.status = Status::Confirmed;
                self.expires_at_ms = 0;
                Ok(true)
            }
            Status::Confirmed | Status::Fulfilled => Ok(false),
            Status::Released | Status::Expired => Err(self.wrong("confirm")),
        }
    }

    /// Which open units a Fulfill (`action = "fulfill"`, CONFIRMED only) or a
    /// Release (`"release"`, HELD or CONFIRMED) takes. No lines: all open.
    pub fn plan_takes(
        &self,
        action: &'static str,
        lines: &[LineRequest],
    ) -> Result<Vec<Take>, DomainError> {
        let allowed = match action {
            "fulfill" => self.status == Status::Confirmed,
            _ => self.status.is_open(),
        };
        if !allowed {
            return Err(self.wrong(action));
        }
        self.plan(action, lines, Allocation::open)
    }

    /// Which units a Fulfill reports shipped. With stockpool as master, the
    /// open units ([`Self::plan_takes`]). With the ERP as master, the units
    /// the channel has not reported yet, even those the ERP already
    /// delivered: a channel's Fulfill after the ERP's delivery is the same
    /// shipment told twice, not an error. No lines: all of them.
    pub fn plan_fulfill(
        &self,
        lines: &[LineRequest],
        master: StockMaster,
    ) -> Result<Vec<Take>, DomainError> {
        if master == StockMaster::Stockpool {
            return self.plan_takes("fulfill", lines);
        }
        let unreported: i64 = self.allocations.iter().map(Allocation::unreported).sum();
        let allowed = match self.status {
            Status::Confirmed => true,
            Status::Fulfilled => unreported > 0,
            _ => false,
        };
        if !allowed {
            return Err(self.wrong("fulfill"));
        }
        self.plan("fulfill", lines, Allocation::unreported)
    }

    /// The takes of `lines` (all of `room` when none), refused whole when a
    /// line wants more than `room` leaves.
    fn plan(
        &self,
        action: &'static str,
        lines: &[LineRequest],
        room: fn(&Allocation) -> i64,
    ) -> Result<Vec<Take>, DomainError> {
        if lines.is_empty() {
            return Ok(self
                .allocations
                .iter()
                .enumerate()
                .filter(|(_, a)| room(a) > 0)
                .map(|(allocation, a)| Take {
                    allocation,
                    quantity: room(a),
                })
                .collect());
        }
        let mut taken = vec![0i64; self.allocations.len()];
        let mut out = Vec::new();
        for line in lines {
            let candidates = self.allocations_of(line)?;
            let open: i64 = candidates
                .iter()
                .map(|&i| room(&self.allocations[i]) - taken[i])
                .sum();
            let wanted = line.quantity.get();
            if wanted > open {
                return Err(DomainError::ExceedsOpen {
                    channel: self.channel.clone(),
                    order_id: self.order_id.clone(),
                    action,
                    sku: line.sku.clone(),
                    warehouse: line.warehouse.clone(),
                    wanted,
                    open,
                });
            }
            let mut left = wanted;
            for i in candidates {
                let q = (room(&self.allocations[i]) - taken[i]).min(left);
                if q > 0 {
                    taken[i] += q;
                    left -= q;
                    out.push(Take {
                        allocation: i,
                        quantity: q,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The allocations a request line names, in allocation order: its SKU,
    /// in its warehouse when one is given. None is refused.
    fn allocations_of(&self, line: &LineRequest) -> Result<Vec<usize>, DomainError> {
        let found: Vec<usize> = self
            .allocations
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.sku == line.sku && line.warehouse.as_ref().is_none_or(|w| &a.warehouse == w)
            })
            .map(|(i, _)| i)
            .collect();
        if found.is_empty() {
            return Err(DomainError::NoSuchLine {
                channel: self.channel.clone(),
                order_id: self.order_id.clone(),
                sku: line.sku.clone(),
                warehouse: line.warehouse.clone(),
            });
        }
        Ok(found)
    }

    /// Applies a planned Fulfill: the channel shipped these units. With
    /// stockpool as master their leaving is booked at once; with the ERP
    /// as master it is booked when the ERP delivers them
    /// ([`Self::erp_delivered`]).
    pub fn fulfill(&mut self, takes: &[Take], shipment_id: Option<String>, master: StockMaster) {
        for t in takes {
            let a = &mut self.allocations[t.allocation];
            a.shipped += t.quantity;
            if master == StockMaster::Stockpool {
                a.delivered += t.quantity;
            }
            a.settle_fulfilled();
        }
        if let Some(s) = shipment_id {
            self.shipments.push(s);
        }
        self.settle(Status::Released);
    }

    /// The ERP reports that it has delivered `total` units of allocation
    /// `allocation` so far (a running total, so a repeated or late report
    /// changes nothing). Books the units not booked yet, never more than
    /// were ordered and not released; returns how many. Only an order the
    /// ERP holds (CONFIRMED or FULFILLED) can be delivered.
    pub fn erp_delivered(&mut self, allocation: usize, total: i64) -> i64 {
        if !matches!(self.status, Status::Confirmed | Status::Fulfilled) {
            return 0;
        }
        let a = &mut self.allocations[allocation];
        let booked = total.min(a.quantity - a.released).max(a.delivered);
        let newly = booked - a.delivered;
        if newly > 0 {
            a.delivered = booked;
            a.settle_fulfilled();
            self.settle(Status::Released);
        }
        newly
    }

    /// Applies a planned Release: the units go back to free stock.
    pub fn release(&mut self, takes: &[Take]) {
        for t in takes {
            self.allocations[t.allocation].released += t.quantity;
        }
        self.settle(Status::Released);
    }

    /// Releases every open unit of a lapsed hold; returns what was released.
    /// Anything but a HELD reservation is left as it is (nothing released):
    /// a hold confirmed or released before the sweeper reached it stays so.
    pub fn expire(&mut self) -> Vec<Take> {
        if self.status != Status::Held {
            return Vec::new();
        }
        let takes = self.plan_takes("expire", &[]).unwrap_or_default();
        for t in &takes {
            self.allocations[t.allocation].released += t.quantity;
        }
        self.settle(Status::Expired);
        takes
    }

    /// What a Restock puts back on hand: per allocation never more than was
    /// fulfilled minus already restocked; the excess is dropped, not refused.
    /// No lines: everything shipped and not yet restocked. A line naming a
    /// SKU (or warehouse) the reservation never held is refused.
    pub fn plan_restock(&self, lines: &[LineRequest]) -> Result<Vec<Take>, DomainError> {
        let returnable = |a: &Allocation| a.fulfilled - a.restocked;
        if lines.is_empty() {
            return Ok(self
                .allocations
                .iter()
                .enumerate()
                .filter(|(_, a)| returnable(a) > 0)
                .map(|(allocation, a)| Take {
                    allocation,
                    quantity: returnable(a),
                })
                .collect());
        }
        let mut taken = vec![0i64; self.allocations.len()];
        let mut out = Vec::new();
        for line in lines {
            let candidates = self.allocations_of(line)?;
            let mut left = line.quantity.get();
            for i in candidates {
                let q = (returnable(&self.allocations[i]) - taken[i]).min(left);
                if q > 0 {
                    taken[i] += q;
                    left -= q;
                    out.push(Take {
                        allocation: i,
                        quantity: q,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Applies a planned Restock under `refund_id`.
    pub fn restock(&mut self, refund_id: String, takes: Vec<Take>) {
        for t in &takes {
            self.allocations[t.allocation].restocked += t.quantity;
        }
        self.refunds.push(Refund {
            refund_id,
            restocked: takes,
        });
    }

    /// The earlier answer to `refund_id`, if it was already applied.
    pub fn refund(&self, refund_id: &str) -> Option<&Refund> {
        self.refunds.iter().find(|r| r.refund_id == refund_id)
    }

    pub fn has_shipment(&self, shipment_id: &str) -> bool {
        self.shipments.iter().any(|s| s == shipment_id)
    }

    /// Units still open (neither shipped nor released).
    pub fn open_units(&self) -> i64 {
        self.allocations.iter().map(Allocation::open).sum()
    }

    /// Units the pools still hold for this reservation: open ones, and
    /// those shipped by the channel but not yet delivered by the ERP.
    pub fn held_units(&self) -> i64 {
        self.allocations.iter().map(Allocation::held).sum()
    }

    /// Once nothing is open: FULFILLED when something shipped, else `closed`.
    fn settle(&mut self, closed: Status) {
        if self.open_units() == 0 {
            let shipped = self.allocations.iter().any(|a| a.fulfilled > 0);
            self.status = if shipped { Status::Fulfilled } else { closed };
            self.expires_at_ms = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{ch, order, sku, wh};

    const NOW: i64 = 1_700_000_000_000;

    fn alloc(s: &str, w: &str, quantity: i64) -> Allocation {
        Allocation::new(sku(s), wh(w), quantity)
    }

    /// TEE: 3 in WH-EAST then 2 in WH-WEST; MUG: 4 in WH-EAST.
    fn reservation(hold_seconds: u32) -> Reservation {
        Reservation::new(
            "r-1".into(),
            ch("shopify"),
            order("#1001"),
            vec![(sku("TEE"), 5), (sku("MUG"), 4)],
            vec![
                alloc("TEE", "WH-EAST", 3),
                alloc("TEE", "WH-WEST", 2),
                alloc("MUG", "WH-EAST", 4),
            ],
            NOW,
            hold_seconds,
        )
    }

    fn confirmed() -> Reservation {
        reservation(0)
    }

    fn req(s: &str, quantity: i64, warehouse: Option<&str>) -> LineRequest {
        LineRequest {
            sku: sku(s),
            quantity: Quantity::parse("quantity", quantity).unwrap(),
            warehouse: warehouse.map(wh),
        }
    }

    fn fulfill(r: &mut Reservation, lines: &[LineRequest]) {
        let takes = r.plan_takes("fulfill", lines).unwrap();
        r.fulfill(&takes, None, StockMaster::Stockpool);
    }

    fn release(r: &mut Reservation, lines: &[LineRequest]) {
        let takes = r.plan_takes("release", lines).unwrap();
        r.release(&takes);
    }

    #[test]
    fn a_reserve_without_a_hold_is_confirmed_at_once_and_never_expires() {
        let r = confirmed();
        assert_eq!(
            (r.status, r.expires_at_ms, r.created_at_ms),
            (Status::Confirmed, 0, NOW)
        );
        assert!(!r.hold_lapsed(i64::MAX));
        assert_eq!(r.open_units(), 9);
    }

    #[test]
    fn a_reserve_with_a_hold_is_held_until_the_hold_runs_out() {
        let r = reservation(60);
        assert_eq!((r.status, r.expires_at_ms), (Status::Held, NOW + 60_000));
        assert!(!r.hold_lapsed(NOW + 59_999));
        assert!(r.hold_lapsed(NOW + 60_000));
    }

    #[test]
    fn the_reserved_lines_are_kept_sorted_by_sku() {
        assert_eq!(confirmed().lines, vec![(sku("MUG"), 4), (sku("TEE"), 5)]);
    }

    #[test]
    fn same_lines_compares_lines_whatever_their_order() {
        let r = confirmed();
        assert!(r.same_lines(&[(sku("MUG"), 4), (sku("TEE"), 5)]));
        assert!(r.same_lines(&[(sku("TEE"), 5), (sku("MUG"), 4)]));
        assert!(!r.same_lines(&[(sku("TEE"), 5), (sku("MUG"), 3)]));
        assert!(!r.same_lines(&[(sku("TEE"), 5)]));
        assert!(!r.same_lines(&[(sku("TEE"), 5), (sku("MUG"), 4), (sku("CAP"), 1)]));
    }

    #[test]
    fn same_lines_does_not_depend_on_how_the_stored_lines_were_ordered() {
        let mut r = confirmed();
        r.lines = vec![(sku("TEE"), 5), (sku("MUG"), 4)];
        assert!(r.same_lines(&[(sku("MUG"), 4), (sku("TEE"), 5)]));
    }

    #[test]
    fn confirm_moves_a_held_reservation_to_confirmed_and_clears_its_expiry() {
        let mut r = reservation(60);
        assert_eq!(r.confirm(NOW + 1_000), Ok(true));
        assert_eq!((r.status, r.expires_at_ms), (Status::Confirmed, 0));
    }

    #[test]
    fn confirm_of_a_confirmed_or_fulfilled_reservation_changes_nothing() {
        let mut r = confirmed();
        assert_eq!(r.confirm(NOW), Ok(false));
        assert_eq!(r.status, Status::Confirmed);
        fulfill(&mut r, &[]);
        assert_eq!(r.confirm(NOW), Ok(false));
        assert_eq!(r.status, Status::Fulfilled);
    }

    #[test]
    fn confirm_of_a_lapsed_hold_is_refused_as_expired() {
        let mut r = reservation(60);
        let err = r.confirm(NOW + 60_000).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reservation shopify/#1001 is EXPIRED: cannot confirm it"
        );
        assert_eq!(
            r.status,
            Status::Held,
            "the sweeper, not confirm, expires it"
        );
    }

    #[test]
    fn confirm_of_a_released_or_expired_reservation_is_refused() {
        let mut released = confirmed();
        release(&mut released, &[]);
        assert_eq!(
            released.confirm(NOW).unwrap_err().to_string(),
            "reservation shopify/#1001 is RELEASED: cannot confirm it"
        );
        let mut expired = reservation(60);
        expired.expire();
        assert!(matches!(
            expired.confirm(NOW),
            Err(DomainError::WrongStatus {
                status: Status::Expired,
                ..
            })
        ));
    }

    #[test]
    fn fulfill_on_a_held_reservation_is_refused() {
        let r = reservation(60);
        let err = r.plan_takes("fulfill", &[]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reservation shopify/#1001 is HELD: cannot fulfill it"
        );
    }

    #[test]
    fn a_held_reservation_can_be_released() {
        let mut r = reservation(60);
        release(&mut r, &[]);
        assert_eq!(
            (r.status, r.expires_at_ms, r.open_units()),
            (Status::Released, 0, 0)
        );
    }

    #[test]
    fn fulfill_with_no_lines_ships_every_open_unit_and_ends_fulfilled() {
        let mut r = confirmed();
        let takes = r.plan_takes("fulfill", &[]).unwrap();
        assert_eq!(
            takes,
            vec![
                Take {
                    allocation: 0,
                    quantity: 3
                },
                Take {
                    allocation: 1,
                    quantity: 2
                },
                Take {
                    allocation: 2,
                    quantity: 4
                },
            ]
        );
        r.fulfill(&takes, Some("ship-1".into()), StockMaster::Stockpool);
        assert_eq!(r.status, Status::Fulfilled);
        assert!(r.has_shipment("ship-1"));
        assert!(!r.has_shipment("ship-2"));
    }

    #[test]
    fn a_partial_fulfill_leaves_the_reservation_confirmed_with_the_rest_open() {
        let mut r = confirmed();
        fulfill(&mut r, &[req("MUG", 1, None)]);
        assert_eq!(r.status, Status::Confirmed);
        assert_eq!(
            (r.allocations[2].fulfilled, r.allocations[2].open()),
            (1, 3)
        );
        assert_eq!(r.open_units(), 8);
    }

    #[test]
    fn a_line_spanning_two_warehouses_is_taken_in_allocation_order() {
        let r = confirmed();
        assert_eq!(
            r.plan_takes("release", &[req("TEE", 4, None)]).unwrap(),
            vec![
                Take {
                    allocation: 0,
                    quantity: 3
                },
                Take {
                    allocation: 1,
                    quantity: 1
                }
            ]
        );
    }

    #[test]
    fn a_line_naming_a_warehouse_takes_only_from_that_warehouse() {
        let r = confirmed();
        assert_eq!(
            r.plan_takes("fulfill", &[req("TEE", 2, Some("WH-WEST"))])
                .unwrap(),
            vec![Take {
                allocation: 1,
                quantity: 2
            }]
        );
    }

    #[test]
    fn taking_more_than_is_open_is_refused_with_what_is_open() {
        let mut r = confirmed();
        fulfill(&mut r, &[req("TEE", 2, None)]);
        let err = r.plan_takes("release", &[req("TEE", 4, None)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot release 4 of TEE: only 3 open on reservation shopify/#1001"
        );
        let err = r
            .plan_takes("fulfill", &[req("TEE", 3, Some("WH-EAST"))])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot fulfill 3 of TEE in WH-EAST: only 1 open on reservation shopify/#1001"
        );
    }

    #[test]
    fn two_lines_of_one_request_cannot_together_take_more_than_is_open() {
        let r = confirmed();
        let err = r
            .plan_takes("release", &[req("MUG", 3, None), req("MUG", 2, None)])
            .unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::ExceedsOpen {
                    wanted: 2,
                    open: 1,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_line_for_a_sku_or_warehouse_never_held_is_refused_as_no_such_line() {
        let r = confirmed();
        let err = r.plan_takes("release", &[req("CAP", 1, None)]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "reservation shopify/#1001 holds no units of CAP"
        );
        let err = r
            .plan_takes("fulfill", &[req("MUG", 1, Some("WH-WEST"))])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "reservation shopify/#1001 holds no units of MUG in WH-WEST"
        );
    }

    #[test]
    fn a_request_is_refused_whole_when_any_line_exceeds_what_is_open() {
        let r = confirmed();
        let err = r
            .plan_takes("release", &[req("MUG", 1, None), req("TEE", 9, None)])
            .unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::ExceedsOpen {
                    wanted: 9,
                    open: 5,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn releasing_everything_unshipped_ends_released() {
        let mut r = confirmed();
        release(&mut r, &[req("TEE", 5, None)]);
        assert_eq!(r.status, Status::Confirmed);
        release(&mut r, &[]);
        assert_eq!((r.status, r.open_units()), (Status::Released, 0));
        assert!(r.allocations.iter().all(|a| a.released == a.quantity));
    }

    #[test]
    fn releasing_the_rest_after_a_partial_shipment_ends_fulfilled() {
        let mut r = confirmed();
        fulfill(&mut r, &[req("TEE", 1, None)]);
        release(&mut r, &[]);
        assert_eq!(r.status, Status::Fulfilled);
        assert_eq!(
            (r.allocations[0].fulfilled, r.allocations[0].released),
            (1, 2)
        );
    }

    #[test]
    fn a_closed_reservation_cannot_be_released_or_fulfilled_again() {
        let mut r = confirmed();
        fulfill(&mut r, &[]);
        assert_eq!(
            r.plan_takes("release", &[]).unwrap_err().to_string(),
            "reservation shopify/#1001 is FULFILLED: cannot release it"
        );
        assert!(r.plan_takes("fulfill", &[]).is_err());
    }

    #[test]
    fn expiring_a_hold_releases_its_open_units_and_ends_expired() {
        let mut r = reservation(60);
        release(&mut r, &[req("MUG", 4, None)]);
        let takes = r.expire();
        assert_eq!(
            takes,
            vec![
                Take {
                    allocation: 0,
                    quantity: 3
                },
                Take {
                    allocation: 1,
                    quantity: 2
                }
            ]
        );
        assert_eq!(
            (r.status, r.expires_at_ms, r.open_units()),
            (Status::Expired, 0, 0)
        );
    }

    #[test]
    fn expire_leaves_a_confirmed_reservation_alone() {
        let mut r = reservation(60);
        r.confirm(NOW).unwrap();
        let before = r.clone();
        assert!(r.expire().is_empty());
        assert_eq!(r, before);
    }

    #[test]
    fn expire_leaves_a_closed_reservation_in_its_status() {
        let mut released = reservation(60);
        release(&mut released, &[]);
        assert!(released.expire().is_empty());
        assert_eq!(released.status, Status::Released);

        let mut fulfilled = confirmed();
        fulfill(&mut fulfilled, &[]);
        assert!(fulfilled.expire().is_empty());
        assert_eq!(fulfilled.status, Status::Fulfilled);
    }

    #[test]
    fn restock_never_puts_back_more_than_was_fulfilled() {
        let mut r = confirmed();
        fulfill(&mut r, &[req("TEE", 4, None)]);
        let takes = r.plan_restock(&[req("TEE", 10, None)]).unwrap();
        assert_eq!(
            takes,
            vec![
                Take {
                    allocation: 0,
                    quantity: 3
                },
                Take {
                    allocation: 1,
                    quantity: 1
                }
            ]
        );
        r.restock("refund-1".into(), takes);
        assert_eq!(r.plan_restock(&[req("TEE", 1, None)]).unwrap(), vec![]);
    }

    #[test]
    fn a_second_refund_for_the_same_goods_restocks_only_what_is_left() {
        let mut r = confirmed();
        fulfill(&mut r, &[]);
        let first = r.plan_restock(&[req("MUG", 3, None)]).unwrap();
        r.restock("shopify-refund".into(), first);
        assert_eq!(
            r.plan_restock(&[req("MUG", 3, None)]).unwrap(),
            vec![Take {
                allocation: 2,
                quantity: 1
            }],
            "the same return reported under another id restocks only the unit not yet back"
        );
    }

    #[test]
    fn restock_with_no_lines_returns_everything_shipped_and_not_yet_restocked() {
        let mut r = confirmed();
        fulfill(&mut r, &[req("TEE", 3, None), req("MUG", 2, None)]);
        r.restock(
            "refund-1".into(),
            vec![Take {
                allocation: 0,
                quantity: 1,
            }],
        );
        assert_eq!(
            r.plan_restock(&[]).unwrap(),
            vec![
                Take {
                    allocation: 0,
                    quantity: 2
                },
                Take {
                    allocation: 2,
                    quantity: 2
                }
            ]
        );
    }

    #[test]
    fn restock_before_anything_shipped_puts_nothing_back() {
        assert_eq!(
            confirmed().plan_restock(&[req("TEE", 2, None)]).unwrap(),
            vec![]
        );
    }

    #[test]
    fn restock_of_a_sku_never_held_is_refused() {
        let err = confirmed()
            .plan_restock(&[req("CAP", 1, None)])
            .unwrap_err();
        assert!(matches!(err, DomainError::NoSuchLine { .. }), "{err}");
    }

    #[test]
    fn restock_can_name_the_warehouse_the_goods_return_to() {
        let mut r = confirmed();
        fulfill(&mut r, &[]);
        assert_eq!(
            r.plan_restock(&[req("TEE", 5, Some("WH-WEST"))]).unwrap(),
            vec![Take {
                allocation: 1,
                quantity: 2
            }]
        );
    }

    #[test]
    fn a_refund_id_finds_its_earlier_answer() {
        let mut r = confirmed();
        fulfill(&mut r, &[]);
        let takes = r.plan_restock(&[req("MUG", 2, None)]).unwrap();
        r.restock("refund-1".into(), takes.clone());
        assert_eq!(r.allocations[2].restocked, 2);
        assert_eq!(
            r.refund("refund-1"),
            Some(&Refund {
                refund_id: "refund-1".into(),
                restocked: takes
            })
        );
        assert_eq!(r.refund("refund-2"), None);
    }

    fn erp_fulfill(r: &mut Reservation, lines: &[LineRequest]) {
        let takes = r.plan_fulfill(lines, StockMaster::Erp).unwrap();
        r.fulfill(&takes, None, StockMaster::Erp);
    }

    #[test]
    fn with_the_erp_as_master_a_channel_fulfill_keeps_the_units_held_until_the_erp_delivers() {
        let mut r = confirmed();
        erp_fulfill(&mut r, &[req("MUG", 4, None)]);
        let mug = &r.allocations[2];
        assert_eq!((mug.fulfilled, mug.open(), mug.held()), (4, 0, 4));
        assert_eq!(r.held_units(), 9, "still claimed on the pool");
        assert_eq!(r.open_units(), 5);

        assert_eq!(
            r.erp_delivered(2, 4),
            4,
            "the delivery books the held units"
        );
        let mug = &r.allocations[2];
        assert_eq!((mug.fulfilled, mug.delivered, mug.held()), (4, 4, 0));
        assert_eq!(r.erp_delivered(2, 4), 0, "a repeated report books nothing");
        assert_eq!(
            r.erp_delivered(2, 3),
            0,
            "a late, lower report books nothing"
        );
    }

    #[test]
    fn an_erp_delivery_before_the_channels_fulfill_ships_the_units_and_the_fulfill_only_reports_them(
    ) {
        let mut r = confirmed();
        assert_eq!(r.erp_delivered(0, 3), 3);
        assert_eq!(r.erp_delivered(1, 2), 2);
        assert_eq!(r.erp_delivered(2, 4), 4);
        assert_eq!(r.status, Status::Fulfilled);
        assert_eq!((r.open_units(), r.held_units()), (0, 0));

        erp_fulfill(&mut r, &[]);
        assert!(r.allocations.iter().all(|a| a.shipped == a.quantity));
        assert!(r.allocations.iter().all(|a| a.fulfilled == a.quantity));
        assert_eq!(
            r.plan_fulfill(&[], StockMaster::Erp)
                .unwrap_err()
                .to_string(),
            "reservation shopify/#1001 is FULFILLED: cannot fulfill it",
            "once the channel reported everything, another Fulfill is refused"
        );
    }

    #[test]
    fn a_channel_cannot_report_more_shipped_than_it_ordered_whatever_the_erp_did() {
        let mut r = confirmed();
        r.erp_delivered(2, 3);
        let err = r
            .plan_fulfill(&[req("MUG", 5, None)], StockMaster::Erp)
            .unwrap_err();
        assert!(
            matches!(
                err,
                DomainError::ExceedsOpen {
                    wanted: 5,
                    open: 4,
                    ..
                }
            ),
            "{err}"
        );
        erp_fulfill(&mut r, &[req("MUG", 4, None)]);
        assert_eq!(
            (r.allocations[2].fulfilled, r.allocations[2].held()),
            (4, 1)
        );
    }

    #[test]
    fn the_erp_never_books_more_than_was_ordered_and_not_released() {
        let mut r = confirmed();
        release(&mut r, &[req("MUG", 1, None)]);
        assert_eq!(r.erp_delivered(2, 9), 3);
        assert_eq!(r.allocations[2].held(), 0);
        let mut held = reservation(60);
        assert_eq!(held.erp_delivered(0, 3), 0, "Odoo never holds a HELD order");
    }

    #[test]
    fn an_allocation_stored_before_shipped_and_delivered_existed_was_booked_by_fulfill() {
        let a: Allocation = serde_json::from_str(
            r#"{"sku":"TEE","warehouse":"WH-EAST","quantity":5,"fulfilled":3,"released":1,"restocked":0}"#,
        )
        .unwrap();
        assert_eq!((a.shipped, a.delivered, a.held(), a.open()), (3, 3, 1, 1));
        let back: Allocation = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn statuses_read_and_parse_as_the_api_names_them() {
        for status in [
            Status::Held,
            Status::Confirmed,
            Status::Fulfilled,
            Status::Released,
            Status::Expired,
        ] {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(status.to_string(), status.as_str());
        }
        assert_eq!(Status::parse("held"), None);
        assert!(Status::Held.is_open() && Status::Confirmed.is_open());
        assert!(
            !Status::Fulfilled.is_open()
                && !Status::Released.is_open()
                && !Status::Expired.is_open()
        );
    }
}
