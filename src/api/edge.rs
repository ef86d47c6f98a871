//! The gRPC listener's one service, [`Edge`]: it routes each call by its
//! path to the process's own services (health, reflection,
//! `GetServerInfo`) or to the current term's [`TermServices`], and around
//! every call does in one place what the edge promises: reflection behind a
//! token ([`auth::refuse_reflection`]), the client's deadline and tonic's
//! own refusals rewritten ([`protocol`]), the call counted and timed
//! ([`RpcCall`]). A call costs no allocation of its own unless its path is
//! one this server does not serve.
//!
//! It answers exactly as the axum routers and middleware layers it
//! replaces did, down to what a router adds to a response: the `Allow`
//! header of a 405, `Content-Length` when the body's size is known, no body
//! for `HEAD`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tonic::body::Body;
use tonic::codegen::{Service, StdError};
use tonic::Status;
use tonic_health::pb::health_server::{self, HealthServer};
use tonic_health::server::{HealthReporter, HealthService};
use tonic_reflection::pb::{v1, v1alpha};
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

use super::error::not_active;
use super::pb::{admin_server, inventory_server};
use super::{auth, info, protocol, AdminService, InventoryService, Tokens};
use crate::engine::Engine;
use crate::ha::Serving;
use crate::publish::Publisher;
use crate::telemetry::{self, RpcBody, RpcCall};

/// What a service's answer is awaited as.
type Answering = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

/// A reflection service: tonic builds them with types it does not name.
/// Reflection is called rarely, so a box per call costs nothing that
/// matters.
type Reflection = BoxCloneSyncService<Request<Body>, Response<Body>, Infallible>;

/// Everything the gRPC listener serves, in either role (see the module
/// doc). Cheap to clone.
#[derive(Clone)]
pub struct Edge(Arc<Services>);

struct Services {
    serving: Serving,
    tokens: Tokens,
    health: HealthServer<HealthService>,
    reflection_v1: Reflection,
    reflection_v1alpha: Reflection,
}

impl Edge {
    /// The edge of a process in `serving`'s role, and the health reporter
    /// the server keeps in step with readiness.
    pub fn new(serving: Serving, tokens: Tokens) -> anyhow::Result<(Edge, HealthReporter)> {
        let reporter = HealthReporter::new();
        let health = HealthServer::new(HealthService::from_health_reporter(reporter.clone()));
        // Both reflection versions: grpcurl before 1.9 and many other tools
        // speak only v1alpha. Health is in the reflection data too.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(super::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_v1 = BoxCloneSyncService::new(reflection().build_v1()?);
        let reflection_v1alpha = BoxCloneSyncService::new(reflection().build_v1alpha()?);
        let edge = Edge(Arc::new(Services {
            serving,
            tokens,
            health,
            reflection_v1,
            reflection_v1alpha,
        }));
        Ok((edge, reporter))
    }

    fn begin<B>(&self, request: Request<B>) -> EdgeFuture
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send,
    {
        let call = RpcCall::start(request.uri().path());
        let path = match call.known_path() {
            Some(path) => CallPath::Known(path),
            None => CallPath::Other(request.uri().path().into()),
        };
        let verb = Verb::of(request.method());
        let limit = protocol::client_deadline(request.headers());
        let answer = match auth::refuse_reflection(&self.0.tokens, path.as_str(), request.headers())
        {
            Some(refusal) => Answer::Now(Some(refusal.into_http())),
            None => self.route(request),
        };
        EdgeFuture {
            stage: Stage::Waiting {
                answer: protocol::Deadline::new(limit, answer),
            },
            call: Some(call),
            path,
            verb,
        }
    }

    /// The process's own services by path, the term's for every other.
    fn route<B>(&self, request: Request<B>) -> Answer
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send,
    {
        let services = &*self.0;
        if request.uri().path() == info::PATH {
            if request.method() != Method::POST {
                return Answer::Now(Some(method_not_allowed()));
            }
            let answer = info::call(&services.serving, &services.tokens, request);
            return Answer::Later(Box::pin(async move { Ok(answer.await) }));
        }
        // The generated servers are always ready: they are called at once.
        match service_of(request.uri().path()) {
            Some(health_server::SERVICE_NAME) => {
                Answer::Later(services.health.clone().call(request))
            }
            Some(v1::server_reflection_server::SERVICE_NAME) => {
                reflect(&services.reflection_v1, request)
            }
            Some(v1alpha::server_reflection_server::SERVICE_NAME) => {
                reflect(&services.reflection_v1alpha, request)
            }
            _ => services
                .serving
                .with_serving_term(|term| term.grpc.answer(request))
                .unwrap_or_else(|| {
                    Answer::Now(Some(
                        not_active(services.serving.standby_message()).into_http(),
                    ))
                }),
        }
    }
}

fn reflect<B>(reflection: &Reflection, request: Request<B>) -> Answer
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError>,
{
    Answer::Later(Box::pin(reflection.clone().oneshot(request.map(Body::new))))
}

/// The service a gRPC path names (`/package.Service/Method`), when it names
/// a method too.
fn service_of(path: &str) -> Option<&str> {
    let (service, method) = path.strip_prefix('/')?.split_once('/')?;
    (!method.is_empty()).then_some(service)
}

/// An axum router's answer to a method its route does not take.
fn method_not_allowed() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static("POST"));
    response
}

/// The services of one term of an active server: Inventory and Admin over
/// its engine, answered by [`Edge`] while the term is served.
#[derive(Clone)]
pub struct TermServices {
    inventory: inventory_server::InventoryServer<InventoryService>,
    admin: admin_server::AdminServer<AdminService>,
}

impl TermServices {
    pub fn new(engine: Engine, publisher: Publisher, tokens: Tokens, serving: Serving) -> Self {
        TermServices {
            inventory: inventory_server::InventoryServer::new(InventoryService {
                engine: engine.clone(),
                publisher,
                tokens: tokens.clone(),
            })
            .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES),
            admin: admin_server::AdminServer::new(AdminService {
                engine,
                tokens,
                serving,
            })
            .max_decoding_message_size(protocol::MAX_MESSAGE_BYTES),
        }
    }

    /// The answer to a call that is not the process's own. Like the term's
    /// router before, a method of neither service is tonic's bare
    /// `UNIMPLEMENTED` (which the edge then rewrites).
    fn answer<B>(&self, request: Request<B>) -> Answer
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<StdError> + Send,
    {
        let answering = match service_of(request.uri().path()) {
            Some(inventory_server::SERVICE_NAME) => self.inventory.clone().call(request),
            Some(admin_server::SERVICE_NAME) => self.admin.clone().call(request),
            _ => return Answer::Now(Some(Status::unimplemented("").into_http())),
        };
        Answer::Later(answering)
    }
}

/// What a request's method changes in how a router finishes its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Head,
    Connect,
    Other,
}

impl Verb {
    fn of(method: &Method) -> Verb {
        if method == Method::HEAD {
            Verb::Head
        } else if method == Method::CONNECT {
            Verb::Connect
        } else {
            Verb::Other
        }
    }
}

/// Finishes `response` as an axum router finishes the answer of its route:
/// a successful answer to CONNECT loses any body; any other answer gets a
/// `Content-Length` when its body's size is known, and no body for HEAD.
fn finish_as_router<B: http_body::Body + Default>(verb: Verb, response: &mut Response<B>) {
    if verb == Verb::Connect {
        if response.status().is_success()
            && (response.headers().contains_key(CONTENT_LENGTH)
                || response.headers().contains_key(TRANSFER_ENCODING)
                || response.body().size_hint().lower() != 0)
        {
            *response.body_mut() = B::default();
        }
        return;
    }
    if let Some(size) = response.body().size_hint().exact() {
        if !response.headers().contains_key(CONTENT_LENGTH) {
            response
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(size));
        }
    }
    if verb == Verb::Head {
        *response.body_mut() = B::default();
    }
}

/// How a call is answered.
enum Answer {
    /// At once (taken when polled).
    Now(Option<Response<Body>>),
    /// By one of the process's services or the term's.
    Later(Answering),
}

impl Future for Answer {
    type Output = Response<Body>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Response<Body>> {
        match &mut *self {
            Answer::Now(response) => Poll::Ready(response.take().expect("an answer is taken once")),
            Answer::Later(answering) => {
                let Ok(response) = ready!(answering.as_mut().poll(cx));
                Poll::Ready(response)
            }
        }
    }
}

/// The path of a call, for the texts that name it.
enum CallPath {
    /// A method this server serves.
    Known(&'static str),
    /// Any other path, copied from the request.
    Other(Box<str>),
}

impl CallPath {
    fn as_str(&self) -> &str {
        match self {
            CallPath::Known(path) => path,
            CallPath::Other(path) => path,
        }
    }
}

pin_project! {
    #[project = StageProj]
    enum Stage {
        Waiting { #[pin] answer: protocol::Deadline<Answer> },
        Answered,
    }
}

pin_project! {
    /// One call through the [`Edge`], up to the head of its response.
    pub struct EdgeFuture {
        #[pin]
        stage: Stage,
        call: Option<RpcCall>,
        path: CallPath,
        verb: Verb,
    }
}

impl Future for EdgeFuture {
    type Output = Result<Response<RpcBody<Body>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let answered = match this.stage.as_mut().project() {
            StageProj::Waiting { answer } => ready!(answer.poll(cx)),
            StageProj::Answered => panic!("an edge call was polled after its answer"),
        };
        // The service's future goes before its answer is looked at, as the
        // layers let it go before.
        this.stage.set(Stage::Answered);
        let path = this.path.as_str();
        let response = match answered {
            Ok(response) => response,
            Err(passed) => passed.answer(path).into_http(),
        };
        let mut code = telemetry::grpc_status(response.headers());
        let response = match code.and_then(|c| protocol::rewrite(path, c, response.headers())) {
            Some(replacement) => {
                code = Some(replacement.code());
                replacement.into_http()
            }
            None => response,
        };
        let call = this.call.take().expect("a call is tracked once");
        let mut response = call.track(code, response);
        finish_as_router(*this.verb, &mut response);
        Poll::Ready(Ok(response))
    }
}

impl<B> Service<Request<B>> for Edge
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send,
{
    type Response = Response<RpcBody<Body>>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> EdgeFuture {
        self.begin(request)
    }
}

/// What the listener serves connections with, without a clone per call.
impl<B> hyper::service::Service<Request<B>> for Edge
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<StdError> + Send,
{
    type Response = Response<RpcBody<Body>>;
    type Error = Infallible;
    type Future = EdgeFuture;

    fn call(&self, request: Request<B>) -> EdgeFuture {
        self.begin(request)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use http_body_util::Empty;
    use tonic::Code;

    use super::*;
    use crate::api::Role;

    fn standby_edge(tokens: Tokens) -> Edge {
        Edge::new(Serving::new("sqlite"), tokens).unwrap().0
    }

    fn request(method: Method, path: &str) -> Request<Empty<Bytes>> {
        Request::builder()
            .method(method)
            .uri(path)
            .body(Empty::new())
            .unwrap()
    }

    async fn answer(edge: &Edge, request: Request<Empty<Bytes>>) -> Response<RpcBody<Body>> {
        edge.clone().oneshot(request).await.unwrap()
    }

    #[test]
    fn a_path_names_a_service_only_when_it_names_a_method_too() {
        assert_eq!(
            service_of("/grpc.health.v1.Health/Check"),
            Some("grpc.health.v1.Health")
        );
        assert_eq!(
            service_of("/stockpool.v1.Inventory/Reserve/more"),
            Some("stockpool.v1.Inventory")
        );
        for path in [
            "",
            "/",
            "/grpc.health.v1.Health",
            "/grpc.health.v1.Health/",
            "grpc.health.v1.Health/Check",
        ] {
            assert_eq!(service_of(path), None, "{path:?}");
        }
    }

    #[test]
    fn answers_are_finished_as_a_router_finishes_them() {
        let mut trailers_only: Response<Body> = Status::internal("x").into_http();
        finish_as_router(Verb::Other, &mut trailers_only);
        assert_eq!(trailers_only.headers()[CONTENT_LENGTH], "0");

        let mut streaming = Response::new(Body::new(http_body_util::StreamBody::new(
            tokio_stream::empty::<Result<http_body::Frame<Bytes>, Status>>(),
        )));
        finish_as_router(Verb::Other, &mut streaming);
        assert!(!streaming.headers().contains_key(CONTENT_LENGTH));

        let mut head = Response::new(Body::new(http_body_util::Full::new(Bytes::from("abc"))));
        finish_as_router(Verb::Head, &mut head);
        assert_eq!(head.headers()[CONTENT_LENGTH], "3");
        assert!(http_body::Body::is_end_stream(head.body()));
    }

    #[tokio::test]
    async fn a_standby_refuses_the_term_s_calls_and_unknown_paths_as_unavailable() {
        let edge = standby_edge(Tokens::default());
        for path in ["/stockpool.v1.Inventory/Reserve", "/nope.v1.Nothing/Call"] {
            let response = answer(&edge, request(Method::POST, path)).await;
            let status = Status::from_header_map(response.headers()).expect("a gRPC status");
            assert_eq!(status.code(), Code::Unavailable, "{path}");
            assert_eq!(status.metadata().get("stockpool-role").unwrap(), "standby");
        }
    }

    #[tokio::test]
    async fn get_server_info_takes_only_post_as_its_route_did() {
        let edge = standby_edge(Tokens::default());
        let response = answer(&edge, request(Method::GET, info::PATH)).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[ALLOW], "POST");
        assert_eq!(response.headers()[CONTENT_LENGTH], "0");
    }

    #[tokio::test]
    async fn with_tokens_reflection_without_one_is_unauthenticated() {
        let tokens = Tokens::new(HashMap::from([("secret".to_string(), Role::Read)]));
        let edge = standby_edge(tokens);
        let path = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo";
        let response = answer(&edge, request(Method::POST, path)).await;
        let status = Status::from_header_map(response.headers()).expect("a gRPC status");
        assert_eq!(status.code(), Code::Unauthenticated);
    }
}
