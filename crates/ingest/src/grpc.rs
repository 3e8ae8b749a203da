//! The gRPC API (`scimrelay.v1.IngestService`), a thin adapter over [`crate::Ingest`].

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

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
        let span = tracing::info_span!(
            "ingest request",
            "otel.name" = "scimrelay.v1.IngestService/Publish",
            "otel.kind" = "server",
            "rpc.system" = "grpc",
            "rpc.service" = "scimrelay.v1.IngestService",
            "rpc.method" = "Publish",
            "rpc.grpc.status_code" = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        scimrelay_core::telemetry::set_parent(&span, request.metadata());
        let started = std::time::Instant::now();
        let result = self
            .0
            .publish(request.into_inner().events)
            .instrument(span.clone())
            .await
            .map_err(Status::from);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        span.record("rpc.grpc.status_code", code as i32);
        let m = scimrelay_core::metrics::metrics();
        m.ingest_requests
            .get_or_create(&vec![
                ("transport", "grpc".to_owned()),
                ("status", format!("{code:?}")),
            ])
            .inc();
        m.ingest_duration
            .get_or_create(&vec![("transport", "grpc".to_owned())])
            .observe(started.elapsed().as_secs_f64());
        Ok(Response::new(PublishResponse { accepted: result? }))
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
