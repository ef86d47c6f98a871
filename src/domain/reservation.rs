//! The reservation state machine: what Confirm, Fulfill, Release, Restock
//! and expiry may do to a reservation, decided without touching stock. The
//! engine turns the returned [`Take`]s into pool changes.

use std::fmt;

use super::{ChannelCode, DomainError, OrderId, Quantity, Sku, WarehouseCode};

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

/// Units of one SKU allocated to one warehouse, and what became of them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Allocation {
    pub sku: Sku,
    pub warehouse: WarehouseCode,
    pub quantity: i64,
    pub fulfilled: i64,
    pub released: i64,
    pub restocked: i64,
}

impl Allocation {
    /// Units still held: neither shipped nor released.
    pub fn open(&self) -> i64 {
        self.quantity - self.fulfilled - self.released
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
        lines: &[(Sku, i64)],
        allocations: Vec<Allocation>,
        now_ms: i64,
        hold_seconds: u32,
    ) -> Self {
        let held = hold_seconds > 0;
        Reservation {
            id,
            channel,
            order_id,
            status: if held {
                Status::Held
            } else {
                Status::Confirmed
            },
            lines: canonical_lines(lines),
            allocations,
            created_at_ms: now_ms,
            expires_at_ms: if held {
                now_ms + i64::from(hold_seconds) * 1000
            } else {
                0
            },
            shipments: Vec::new(),
            refunds: Vec::new(),
        }
    }

    /// Whether a Reserve with `lines` is a replay of this one, whatever the
    /// order of the lines on either side.
    pub fn same_lines(&self, lines: &[(Sku, i64)]) -> bool {
        canonical_lines(&self.lines) == canonical_lines(lines)
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
        if lines.is_empty() {
            return Ok(self
                .allocations
                .iter()
                .enumerate()
                .filter(|(_, a)| a.open() > 0)
                .map(|(allocation, a)| Take {
                    allocation,
                    quantity: a.open(),
                })
                .collect());
        }
        let mut taken = vec![0i64; self.allocations.len()];
        let mut out = Vec::new();
        for line in lines {
            let candidates: Vec<usize> = self
                .allocations
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    a.sku == line.sku && line.warehouse.as_ref().is_none_or(|w| &a.warehouse == w)
                })
                .map(|(i, _)| i)
                .collect();
            if candidates.is_empty() {
                return Err(DomainError::NoSuchLine {
                    channel: self.channel.clone(),
                    order_id: self.order_id.clone(),
                    sku: line.sku.clone(),
                    warehouse: line.warehouse.clone(),
                });
            }
            let open: i64 = candidates
                .iter()
                .map(|&i| self.allocations[i].open() - taken[i])
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
                let q = (self.allocations[i].open() - taken[i]).min(left);
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

    /// Applies a planned Fulfill: the units shipped.
    pub fn fulfill(&mut self, takes: &[Take], shipment_id: Option<String>) {
        for t in takes {
            self.allocations[t.allocation].fulfilled += t.quantity;
        }
        if let Some(s) = shipment_id {
            self.shipments.push(s);
        }
        self.settle(Status::Released);
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
            let candidates: Vec<usize> = self
                .allocations
                .iter()
                .enumerate()
                .filter(|(_, a)| {
                    a.sku == line.sku && line.warehouse.as_ref().is_none_or(|w| &a.warehouse == w)
                })
                .map(|(i, _)| i)
                .collect();
            if candidates.is_empty() {
                return Err(DomainError::NoSuchLine {
                    channel: self.channel.clone(),
                    order_id: self.order_id.clone(),
                    sku: line.sku.clone(),
                    warehouse: line.warehouse.clone(),
                });
            }
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

    /// Units still held.
    pub fn open_units(&self) -> i64 {
        self.allocations.iter().map(Allocation::open).sum()
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
