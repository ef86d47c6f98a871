//! What the engine refuses or fails with. The api layer maps each variant to
//! one gRPC status; messages are written for the person reading them.

use crate::domain::{ChannelCode, DomainError, InvalidInput, OrderId, Sku, WarehouseCode};
use crate::store::{CommitError, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Malformed input or a business refusal decided by the domain.
    #[error(transparent)]
    Domain(Box<DomainError>),

    #[error("no reservation {channel}/{order_id}")]
    ReservationNotFound {
        channel: ChannelCode,
        order_id: OrderId,
    },

    #[error("no {what} {code:?}")]
    NotFound { what: &'static str, code: String },

    /// A request that cannot apply to the state it found.
    #[error("{0}")]
    Refused(String),

    /// An idempotency key reused with other content.
    #[error("{0}")]
    Conflict(String),

    #[error("{sku} in {warehouse} is at version {actual}, not the expected {expected}: read the level again and recount")]
    StaleVersion {
        sku: Sku,
        warehouse: WarehouseCode,
        expected: u64,
        actual: u64,
    },

    /// The store did not commit; nothing was changed.
    #[error(
        "the change was not saved: the store is not accepting writes right now; retry shortly"
    )]
    Unavailable(#[source] CommitError),

    /// Another call on this order has held it for too long: a commit in
    /// flight, or the read-back of one whose outcome is not yet known.
    #[error("reservation {channel}/{order_id} is busy: its last change is not settled yet; retry shortly")]
    OrderBusy {
        channel: ChannelCode,
        order_id: OrderId,
    },

    /// Memory for these SKUs is being reloaded after a failed commit.
    #[error("{0} is being reloaded after a failed write; retry shortly")]
    Reloading(Sku),

    /// Start-up failed.
    #[error("could not load state from the store")]
    Load(#[source] StoreError),
}

impl From<DomainError> for EngineError {
    fn from(e: DomainError) -> Self {
        EngineError::Domain(Box::new(e))
    }
}

impl From<InvalidInput> for EngineError {
    fn from(e: InvalidInput) -> Self {
        DomainError::Invalid(e).into()
    }
}
