//! What the domain refuses, and why, in words a person can act on.

use std::fmt;

use super::{ChannelCode, OrderId, Sku, Status, WarehouseCode};

/// Malformed input: which field, and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidInput {
    pub field: String,
    pub problem: String,
}

impl InvalidInput {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The same problem, located inside a larger request (`lines[2].sku`).
    pub fn at(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

impl fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.field, self.problem)
    }
}

impl std::error::Error for InvalidInput {}

/// One line of an order that did not fit the channel's ATP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    pub sku: Sku,
    pub wanted: i64,
    pub available: i64,
}

/// Every refusal the pure core can decide.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    Invalid(#[from] InvalidInput),

    #[error("not enough stock for channel {channel}: {}", shorts_text(.shorts))]
    Insufficient {
        channel: ChannelCode,
        shorts: Vec<Shortfall>,
    },

    #[error("reservation {channel}/{order_id} is {status}: cannot {action} it")]
    WrongStatus {
        channel: ChannelCode,
        order_id: OrderId,
        status: Status,
        action: &'static str,
    },

    #[error("reservation {channel}/{order_id} holds no units of {sku}{}", at_warehouse(.warehouse))]
    NoSuchLine {
        channel: ChannelCode,
        order_id: OrderId,
        sku: Sku,
        warehouse: Option<WarehouseCode>,
    },

    #[error("cannot {action} {wanted} of {sku}{}: only {open} open on reservation {channel}/{order_id}", at_warehouse(.warehouse))]
    ExceedsOpen {
        channel: ChannelCode,
        order_id: OrderId,
        action: &'static str,
        sku: Sku,
        warehouse: Option<WarehouseCode>,
        wanted: i64,
        open: i64,
    },

    #[error(
        "{sku} in {warehouse} has {on_hand} on hand: a change of {delta} would take it below 0"
    )]
    NegativeStock {
        sku: Sku,
        warehouse: WarehouseCode,
        on_hand: i64,
        delta: i64,
    },
}

fn shorts_text(shorts: &[Shortfall]) -> String {
    shorts
        .iter()
        .map(|s| format!("{} wanted {}, available {}", s.sku, s.wanted, s.available))
        .collect::<Vec<_>>()
        .join("; ")
}

fn at_warehouse(w: &Option<WarehouseCode>) -> String {
    w.as_ref().map(|w| format!(" in {w}")).unwrap_or_default()
}
