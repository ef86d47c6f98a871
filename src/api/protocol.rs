//! What a client is told when its call fails before any handler runs: tonic
//! answers those itself (an unknown method, a message over the size limit,
//! bytes that are not the request message), with codes and texts that
//! contradict the README. [`rewrite`] replaces exactly those answers, so
//! the README's Errors table holds for every call: `UNIMPLEMENTED` naming
//! the method, `RESOURCE_EXHAUSTED` for a message over the limit, and
//! `INVALID_ARGUMENT` (without the decoder's internals) for a message that
//! does not decode. Also the client's deadline (`grpc-timeout`), which
//! [`Deadline`] holds a call's answer to. The gRPC edge applies both to
//! every call.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName};
use pin_project_lite::pin_project;
use tokio::time::Timeout;
use tonic::{Code, Status};

/// Largest request message accepted, in bytes (gRPC's customary 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// What to answer instead of tonic's own answer to a call of `method` that
/// never reached a handler, given the `code` in the response `headers`
/// (tonic answers those as trailers-only responses: the status is in the
/// headers, and the body is empty). None for every other response, which
/// passes untouched.
pub fn rewrite(method: &str, code: Code, headers: &HeaderMap) -> Option<Status> {
    if !matches!(
        code,
        Code::Unimplemented | Code::OutOfRange | Code::Internal
    ) {
        return None;
    }
    let status = Status::from_header_map(headers)?;
    let replacement = replace(method, &status)?;
    tracing::debug!(%method, was = ?status.code(), message = status.message(), "call refused before reaching its handler");
    Some(replacement)
}

/// The client's deadline for a call with these request headers: its
/// `grpc-timeout`, when that is well formed.
pub fn client_deadline(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(GRPC_TIMEOUT)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
}

pin_project! {
    /// Honours the client's `grpc-timeout`: a call whose answer is not
    /// ready when the client's deadline passes is answered
    /// `DEADLINE_EXCEEDED` (see [`DeadlinePassed`]) and the handler stops
    /// waiting. A write already handed to the engine still runs to its end
    /// there (it may commit: the client learns the outcome by retrying,
    /// which is a replay). For a stream the deadline covers its opening,
    /// not the updates that follow.
    #[project = DeadlineProj]
    pub enum Deadline<F> {
        Open { #[pin] answer: F },
        Bounded { #[pin] answer: Timeout<F>, limit: Duration },
    }
}

impl<F: Future> Deadline<F> {
    /// `answer`, within `limit` (the [`client_deadline`]) when there is one.
    pub fn new(limit: Option<Duration>, answer: F) -> Self {
        match limit {
            None => Deadline::Open { answer },
            Some(limit) => Deadline::Bounded {
                answer: tokio::time::timeout(limit, answer),
                limit,
            },
        }
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Result<F::Output, DeadlinePassed>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DeadlineProj::Open { answer } => answer.poll(cx).map(Ok),
            DeadlineProj::Bounded { answer, limit } => answer
                .poll(cx)
                .map(|answered| answered.map_err(|_| DeadlinePassed(*limit))),
        }
    }
}

/// The client's deadline passed before the answer.
#[derive(Debug, Clone, Copy)]
pub struct DeadlinePassed(Duration);

impl DeadlinePassed {
    /// What the client of `method` is told.
    pub fn answer(self, method: &str) -> Status {
        let limit = self.0;
        tracing::debug!(%method, ?limit, "the client's deadline passed before the answer");
        Status::deadline_exceeded(format!(
            "no answer within the client's deadline of {limit:?}"
        ))
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

    /// What a slow Reserve called with `timeout` is answered.
    async fn slow_reserve(timeout: Option<&str>) -> http::Response<tonic::body::Body> {
        let mut b = http::Request::post("/stockpool.v1.Inventory/Reserve");
        if let Some(t) = timeout {
            b = b.header("grpc-timeout", t);
        }
        let call = b.body(()).unwrap();
        let late = async {
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            http::Response::new(tonic::body::Body::empty())
        };
        match Deadline::new(client_deadline(call.headers()), late).await {
            Ok(response) => response,
            Err(passed) => passed.answer(call.uri().path()).into_http(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_still_unanswered_at_the_client_s_deadline_is_deadline_exceeded() {
        let response = slow_reserve(Some("250m")).await;
        let status = Status::from_header_map(response.headers()).expect("a gRPC status");
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert!(status.message().contains("250ms"), "{}", status.message());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_without_a_deadline_or_with_a_malformed_one_waits_for_its_answer() {
        for timeout in [None, Some("soon")] {
            let response = slow_reserve(timeout).await;
            assert!(
                Status::from_header_map(response.headers()).is_none(),
                "{timeout:?}"
            );
        }
    }

    #[test]
    fn a_trailers_only_answer_of_tonic_s_own_is_rewritten_from_its_headers() {
        let tonic_s: http::Response<()> = Status::unimplemented("").into_http();
        let replaced =
            rewrite("/x.Y/Z", Code::Unimplemented, tonic_s.headers()).expect("rewritten");
        assert_eq!(replaced.code(), Code::Unimplemented);
        assert!(replaced.message().contains("/x.Y/Z"), "{replaced:?}");

        let the_service_s: http::Response<()> =
            Status::unimplemented("gzip is not supported").into_http();
        assert!(rewrite("/x.Y/Z", Code::Unimplemented, the_service_s.headers()).is_none());
        let refused: http::Response<()> = Status::not_found("no such order").into_http();
        assert!(rewrite("/x.Y/Z", Code::NotFound, refused.headers()).is_none());
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
