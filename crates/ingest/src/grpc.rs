//! The gRPC API (`scimrelay.v1.IngestService`), a thin adapter over [`crate::Ingest`].
//!
//! The API key (metadata `authorization: Bearer <key>`) is checked by an interceptor, which
//! runs before the request message is decoded: an unauthenticated caller cannot make ingest
//! decode up to [`MAX_GRPC_MESSAGE_BYTES`], nor learn the limit. [`IngestError`] becomes a
//! `Status` in one place, `From<IngestError> for Status`.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tonic::transport::server::Connected;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use scimrelay_core::auth::{AuthError, Principal};
use scimrelay_proto::v1::ingest_service_server::{IngestService, IngestServiceServer};
use scimrelay_proto::v1::{PublishRequest, PublishResponse};

use crate::{Ingest, IngestError};

/// Largest decoded gRPC request, matching the HTTP body limit's intent.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The metadata entry carrying the seconds to wait after `RESOURCE_EXHAUSTED` for a rate.
pub const RETRY_AFTER_METADATA: &str = "retry-after";

struct Service(Arc<Ingest>);

impl From<IngestError> for Status {
    fn from(e: IngestError) -> Self {
        let message = e.to_string();
        match &e {
            IngestError::Invalid(_) => Status::invalid_argument(message),
            IngestError::TooManyEvents { .. } => Status::resource_exhausted(message),
            IngestError::Unavailable(_) => Status::unavailable(message),
            IngestError::Auth(AuthError::Missing | AuthError::Invalid | AuthError::Revoked(_)) => {
                Status::unauthenticated(message)
            }
            IngestError::Auth(AuthError::Scope { .. } | AuthError::Tenant { .. })
            | IngestError::TenantForbidden { .. }
            | IngestError::PriorityForbidden { .. } => Status::permission_denied(message),
            IngestError::Auth(AuthError::RateLimited {
                retry_after_secs, ..
            }) => {
                let mut status = Status::resource_exhausted(message);
                status.metadata_mut().insert(
                    RETRY_AFTER_METADATA,
                    tonic::metadata::MetadataValue::from(*retry_after_secs),
                );
                status
            }
        }
    }
}

fn record(code: tonic::Code, started: std::time::Instant) {
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
}

/// Authenticates a call from its metadata, before its message is decoded, and hands the
/// [`Principal`] to the handler in the request's extensions.
fn authenticate(ingest: &Ingest, mut request: Request<()>) -> Result<Request<()>, Status> {
    let started = std::time::Instant::now();
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|v| v.as_encoded_bytes());
    match ingest.authenticate(authorization, "grpc") {
        Ok(p) => {
            request.extensions_mut().insert(p);
            Ok(request)
        }
        Err(e) => {
            let status = Status::from(e);
            record(status.code(), started);
            Err(status)
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
        // Put there by `authenticate`, which runs before every call of this service.
        let principal = request
            .extensions()
            .get::<Principal>()
            .cloned()
            .ok_or_else(|| Status::internal("the caller was not authenticated"))?;
        let request = request.into_inner();
        let ingest = &self.0;
        let result = async {
            let wait = crate::wait::check_wait(
                std::time::Duration::from_millis(u64::from(request.wait_ms)),
                ingest.max_wait(),
                "wait_ms",
                "wait_ms",
            )
            .map_err(IngestError::Invalid)?;
            ingest.publish(&principal, request.events, Some(wait)).await
        }
        .instrument(span.clone())
        .await
        .map_err(Status::from);
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        };
        span.record("rpc.grpc.status_code", code as i32);
        record(code, started);
        let published = result?;
        Ok(Response::new(PublishResponse {
            accepted: published.accepted,
            outcomes: published.outcomes,
            complete: published.complete,
        }))
    }
}

/// Serves the gRPC API on `incoming` connections (plain TCP or TLS) until `shutdown`.
pub async fn serve<I, IO, IE>(
    ingest: Arc<Ingest>,
    incoming: I,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    I: futures::Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let svc = IngestServiceServer::new(Service(ingest.clone()))
        .max_decoding_message_size(MAX_GRPC_MESSAGE_BYTES);
    let svc = tonic::service::interceptor::InterceptedService::new(svc, move |r| {
        authenticate(&ingest, r)
    });
    tonic::transport::Server::builder()
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
        .await?;
    Ok(())
}
