//! The gRPC API (`scimrelay.v1.IngestService`), a thin adapter over [`crate::Ingest`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use scimrelay_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use scimrelay_proto::v1::{PublishRequest, PublishResponse};

use crate::{Ingest, IngestError};

/// Largest decoded gRPC request, matching the HTTP body limit's intent.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

struct Service(Arc<Ingest>);

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        match &e {
            IngestError::Invalid(_) => Status::invalid_argument(e.to_string()),
            IngestError::TooManyEvents { .. } => Status::resource_exhausted(e.to_string()),
            IngestError::Unavailable(_) => Status::unavailable(e.to_string()),
        }
    }
}

#[tonic::async_trait]
impl IngestService for Service {
    async fn publish(
        &self,
        request: Request<PublishRequest>,
    ) -> Result<Response<PublishResponse>, Status> {
        let accepted = self.0.publish(request.into_inner().events).await?;
        Ok(Response::new(PublishResponse { accepted }))
    }
}

/// Serves the gRPC API on `listener` until `shutdown`.
pub async fn serve(
    ingest: Arc<Ingest>,
    listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let svc =
        IngestServiceServer::new(Service(ingest)).max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown.cancelled_owned(),
        )
        .await?;
    Ok(())
}
