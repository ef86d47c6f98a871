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

/// Malformed input at the boundary.
pub fn invalid(e: InvalidInput) -> Status {
    Status::invalid_argument(e.to_string())
}

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Status {
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
