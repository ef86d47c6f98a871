//! The one place that decides what a client sees when something goes wrong.
//! Business refusals carry their sentence; internal failures are logged with
//! their cause chain and reach the client as a plain sentence, never SQL.

use tonic::{Code, Status};

use crate::domain::{DomainError, InvalidInput};
use crate::engine::EngineError;
use crate::store::Failure;

/// The canonical name of a gRPC status code (`FAILED_PRECONDITION`), as
/// clients, logs and metric labels spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The metadata key on every refusal of a server that is not the active one
/// (a standby, or an active one stepping down), with the value
/// [`STANDBY`]: nothing was done, and the call belongs on the active server.
/// The CLI's connection moves to its next server on it.
pub const ROLE_KEY: &str = "stockpool-role";
/// The role [`ROLE_KEY`] names.
pub const STANDBY: &str = "standby";

/// `UNAVAILABLE` from a server that is not the active one.
pub fn not_active(message: impl Into<String>) -> Status {
    let mut status = Status::unavailable(message);
    status.metadata_mut().insert(
        ROLE_KEY,
        tonic::metadata::MetadataValue::from_static(STANDBY),
    );
    status
}

/// Malformed input at the boundary.
pub fn invalid(e: InvalidInput) -> Status {
    Status::invalid_argument(e.to_string())
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Status {
        if let EngineError::Unavailable(c) = &e {
            if c.failure() == Failure::Deposed {
                tracing::warn!(error = %crate::telemetry::chain(&e), "write refused: this server is no longer the active one");
                return not_active(
                    "this stockpool server is no longer the active one: it is stepping down to \
                     standby, and the change was not saved; retry on the active server",
                );
            }
            if c.failure() == Failure::Isolated {
                // The sentence names the cause: the lease could not be
                // renewed. Marked like a standby's refusal: nothing was
                // done, and the write belongs on the active server.
                tracing::warn!(error = %c, "write refused: this server is isolated from Postgres");
                return not_active(c.to_string());
            }
        }
        let code = match &e {
            EngineError::Domain(d) if matches!(**d, DomainError::Invalid(_)) => {
                Code::InvalidArgument
            }
            EngineError::Domain(_) | EngineError::Refused(_) => Code::FailedPrecondition,
            EngineError::ReservationNotFound { .. } | EngineError::NotFound { .. } => {
                Code::NotFound
            }
            EngineError::Conflict(_) => Code::AlreadyExists,
            EngineError::StaleVersion { .. } => Code::Aborted,
            // A commit the database refused for its content will be refused
            // again: not a reason to retry, and a bug to look into.
            EngineError::Unavailable(c) if c.failure() == Failure::Rejected => Code::Internal,
            EngineError::Unavailable(_)
            | EngineError::Reloading(_)
            | EngineError::OrderBusy { .. } => Code::Unavailable,
            EngineError::Load(_) => Code::Internal,
        };
        match code {
            Code::Unavailable | Code::Internal => {
                tracing::error!(error = %crate::telemetry::chain(&e), "request failed");
            }
            _ => tracing::debug!(error = %e, "request refused"),
        }
        let message = match code {
            Code::Internal => {
                "internal error; the operators have the details in the logs".to_string()
            }
            _ => e.to_string(),
        };
        Status::new(code, message)
    }
}
