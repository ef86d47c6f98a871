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

/// Honours the client's `grpc-timeout`: a call whose answer is not ready
/// when the client's deadline passes is answered `DEADLINE_EXCEEDED` and
/// the handler stops waiting. A write already handed to the engine still
/// runs to its end there (it may commit: the client learns the outcome by
/// retrying, which is a replay). For a stream the deadline covers its
/// opening, not the updates that follow.
pub async fn deadline(request: Request, next: Next) -> Response {
    let Some(limit) = request
        .headers()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
    else {
        return next.run(request).await;
    };
    let method = request.uri().path().to_string();
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::debug!(%method, ?limit, "the client's deadline passed before the answer");
            Status::deadline_exceeded(format!(
                "no answer within the client's deadline of {limit:?}"
            ))
            .into_http()
        }
    }
}

/// Reads a `grpc-timeout` value (1 to 8 digits and a unit, H M S m u n,
/// per the gRPC HTTP/2 protocol); None for anything else, which is then
/// not a deadline.
fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let digits = value.get(..value.len().checked_sub(1)?)?;
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match &value[digits.len()..] {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
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
    fn a_grpc_timeout_is_read_in_each_unit_and_anything_malformed_is_no_deadline() {
        use std::time::Duration;
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(
            parse_grpc_timeout("99999999u"),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in [
            "",
            "m",
            "100",
            "123456789m",
            "-1S",
            "1.5S",
            "10x",
            "1 S",
            "١S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    fn slow_service() -> axum::Router {
        axum::Router::new()
            .route(
                "/stockpool.v1.Inventory/Reserve",
                axum::routing::post(|| async {
                    tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                    "late"
                }),
            )
            .layer(axum::middleware::from_fn(deadline))
    }

    fn call(timeout: Option<&str>) -> axum::extract::Request {
        let mut b = axum::http::Request::post("/stockpool.v1.Inventory/Reserve");
        if let Some(t) = timeout {
            b = b.header("grpc-timeout", t);
        }
        b.body(axum::body::Body::empty()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_still_unanswered_at_the_client_s_deadline_is_deadline_exceeded() {
        use tower::ServiceExt;
        let response = slow_service().oneshot(call(Some("250m"))).await.unwrap();
        let status = Status::from_header_map(response.headers()).expect("a gRPC status");
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("250ms"), "{}", status.message());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_a_deadline_or_with_a_malformed_one_waits_for_its_answer() {
        use tower::ServiceExt;
        for timeout in [None, Some("soon")] {
            let response = slow_service().oneshot(call(timeout)).await.unwrap();
            assert!(
                Status::from_header_map(response.headers()).is_none(),
                "{timeout:?}"
            );
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
