//! What the process answers itself, in either role: `Admin.GetServerInfo`
//! (readable with any token, also on a standby).

use std::future::Future;

use tonic::body::Body;
use tonic::codegen::StdError;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::auth::{Need, Tokens};
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

/// The answer to a POST of [`PATH`].
pub fn call<B>(
    serving: &Serving,
    tokens: &Tokens,
    request: http::Request<B>,
) -> impl Future<Output = http::Response<Body>> + Send + 'static
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<StdError> + Send,
{
    let service = InfoService {
        serving: serving.clone(),
        tokens: tokens.clone(),
    };
    async move {
        let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
            .max_decoding_message_size(super::protocol::MAX_MESSAGE_BYTES);
        grpc.unary(service, request).await
    }
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
