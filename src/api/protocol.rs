//! What a client is told when its call fails before any handler runs: tonic
//! answers those itself (an unknown method, a message over the size limit,
//! bytes that are not the request message), with codes and texts that
//! contradict the README. This layer rewrites exactly those answers, so the
//! README's Errors table holds for every call: `UNIMPLEMENTED` naming the
//! method, `RESOURCE_EXHAUSTED` for a message over the limit, and
//! `INVALID_ARGUMENT` (without the decoder's internals) for a message that
//! does not decode.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use tonic::{Code, Status};

/// Largest request message accepted, in bytes (gRPC's customary 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Rewrites tonic's own answers to calls that never reached a handler.
/// Every other response passes untouched.
pub async fn protocol_errors(request: Request, next: Next) -> Response {
    let method = request.uri().path().to_string();
    let response = next.run(request).await;
    // tonic answers these as trailers-only responses: the status is in the
    // headers, and the body is empty.
    let Some(status) = Status::from_header_map(response.headers()) else {
        return response;
    };
    let Some(replacement) = replace(&method, &status) else {
        return response;
    };
    tracing::debug!(%method, was = ?status.code(), message = status.message(), "call refused before reaching its handler");
    replacement.into_http()
}

/// The answer the README promises instead of `status`, if it differs.
fn replace(method: &str, status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::Unimplemented if message.is_empty() => Some(Status::unimplemented(format!(
            "unknown method {method}: this server serves stockpool.v1.Inventory, \
             stockpool.v1.Admin, grpc.health.v1.Health and server reflection"
        ))),
        Code::OutOfRange if message.starts_with("Error, decoded message length too large") => {
            Some(Status::resource_exhausted(format!(
                "the request message is larger than the {MAX_MESSAGE_BYTES} bytes a message may have; \
                 send fewer items per call"
            )))
        }
        Code::Internal if message.starts_with("failed to decode") => {
            Some(Status::invalid_argument(format!(
                "the request body is not a valid message for {method}: check that the client uses \
                 stockpool's protos"
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tonic_s_own_refusals_get_the_codes_the_readme_names() {
        let m = "/stockpool.v1.Inventory/Reserve";
        let cases = [
            (Status::unimplemented(""), Code::Unimplemented),
            (
                Status::out_of_range(
                    "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
                ),
                Code::ResourceExhausted,
            ),
            (
                Status::internal("failed to decode Protobuf message: invalid wire type value: 7"),
                Code::InvalidArgument,
            ),
        ];
        for (status, code) in cases {
            let replaced = replace(m, &status).expect("replaced");
            assert_eq!(replaced.code(), code);
            assert!(!replaced.message().is_empty());
            assert!(!replaced.message().contains("wire type"), "{replaced:?}");
        }
    }

    #[test]
    fn refusals_of_the_service_itself_are_left_alone() {
        for status in [
            Status::out_of_range("after_seq 9 is beyond the channel's last sequence number 3"),
            Status::internal("internal error; the operators have the details in the logs"),
            Status::unimplemented("gzip is not supported"),
        ] {
            assert!(replace("/x/y", &status).is_none(), "{status:?}");
        }
    }
}
