//! What the process answers itself, in either role: `Admin.GetServerInfo`
//! (readable with any token, also on a standby), and the routing of every
//! other call to the current term or, without one, the standby's refusal.

use axum::response::{IntoResponse, Response};
use tonic::metadata::MetadataMap;
use tonic::Status;
use tower::ServiceExt;

use super::auth::{Need, Tokens};
use super::error::not_active;
use super::pb;
use crate::ha::Serving;

/// The gRPC path of `Admin.GetServerInfo`, answered by the process rather
/// than by the term's Admin service, so a standby answers it too.
pub const PATH: &str = "/stockpool.v1.Admin/GetServerInfo";

/// `GetServerInfo`'s answer, for any valid token.
pub fn server_info(
    serving: &Serving,
    tokens: &Tokens,
    metadata: &MetadataMap,
) -> Result<pb::ServerInfo, Status> {
    tokens.check(metadata, Need::Read)?;
    let info = serving.info();
    Ok(pb::ServerInfo {
        version: info.version.to_string(),
        role: info.role.as_str().to_string(),
        store: info.store.to_string(),
        started_at_ms: info.started_at_ms,
        leader_epoch: info.leader_epoch,
    })
}

/// The route serving [`PATH`].
pub fn route(serving: Serving, tokens: Tokens) -> axum::routing::MethodRouter {
    axum::routing::post(move |request: axum::extract::Request| {
        let service = InfoService {
            serving: serving.clone(),
            tokens: tokens.clone(),
        };
        async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .max_decoding_message_size(super::protocol::MAX_MESSAGE_BYTES);
            grpc.unary(service, request)
                .await
                .map(axum::body::Body::new)
        }
    })
}

/// One `GetServerInfo` call, in the shape tonic's unary handling takes.
struct InfoService {
    serving: Serving,
    tokens: Tokens,
}

impl tonic::server::UnaryService<pb::GetServerInfoRequest> for InfoService {
    type Response = pb::ServerInfo;
    type Future = std::future::Ready<Result<tonic::Response<pb::ServerInfo>, Status>>;

    fn call(&mut self, request: tonic::Request<pb::GetServerInfoRequest>) -> Self::Future {
        std::future::ready(
            server_info(&self.serving, &self.tokens, request.metadata()).map(tonic::Response::new),
        )
    }
}

/// A call for the term's services: served by the current term (also while
/// isolated: reads from memory, writes refused by its store), or refused as
/// a standby's when there is none, or when its tenure has just ended and
/// the server is stepping down.
pub async fn to_term(serving: &Serving, request: axum::extract::Request) -> Response {
    match serving.serving_term() {
        Some(term) => match term.grpc.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        },
        _ => not_active(serving.standby_message()).into_http(),
    }
    .into_response()
}
