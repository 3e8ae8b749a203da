//! The ingest service: the one door identity events come in by.
//!
//! It validates events (the same rules over HTTP and gRPC), assigns ids, resolves targets and
//! publishes one message per (event, target) to `scimrelay.events` with publisher confirms. It
//! answers 202 / OK **only after the broker confirmed every copy**: a refused, unroutable or
//! unconfirmed publish is an error to the caller (503 / UNAVAILABLE), never a silent loss. A
//! caller that retries after an error may cause duplicates; they are harmless because events are
//! versioned desired state (design.md §3).

pub mod broker;
pub mod grpc;
pub mod http;
pub mod model;

use std::sync::Arc;

use opentelemetry::trace::TraceContextExt as _;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use scimrelay_core::amqp::{self, EVENTS_EXCHANGE};
use scimrelay_core::config::{ConfigError, EnvConfig, TargetsFile, env_or, env_parse};
use scimrelay_core::metrics::metrics;
use scimrelay_core::telemetry;
use scimrelay_proto::v1::{AcceptedEvent, Delivery, IdentityEvent};

pub use model::FieldError;

/// Default HTTP address.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8080";
/// Default gRPC address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50051";
/// Default largest accepted HTTP body: enough for a batch of 1,000 full user events.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Default most events in one request.
pub const DEFAULT_MAX_BATCH: usize = 1000;

/// Ingest settings (environment variables, see the README).
#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// `SCIMRELAY_INGEST_HTTP_ADDR`.
    pub http_addr: String,
    /// `SCIMRELAY_INGEST_GRPC_ADDR`.
    pub grpc_addr: String,
    /// `SCIMRELAY_AMQP_URL`.
    pub amqp_url: String,
    /// `SCIMRELAY_INGEST_MAX_BODY_BYTES`.
    pub max_body_bytes: usize,
    /// `SCIMRELAY_INGEST_MAX_BATCH`.
    pub max_batch: usize,
    /// The targets file (`SCIMRELAY_CONFIG`).
    pub targets: TargetsFile,
}

impl IngestConfig {
    /// Reads the environment and the targets file; errors name the variable or key.
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = EnvConfig::from_env()?;
        let max_batch = env_parse("SCIMRELAY_INGEST_MAX_BATCH", DEFAULT_MAX_BATCH)?;
        if max_batch == 0 {
            return Err(ConfigError::Invalid {
                key: "SCIMRELAY_INGEST_MAX_BATCH".into(),
                message: "must be at least 1".into(),
            });
        }
        Ok(IngestConfig {
            http_addr: env_or("SCIMRELAY_INGEST_HTTP_ADDR", DEFAULT_HTTP_ADDR),
            grpc_addr: env_or("SCIMRELAY_INGEST_GRPC_ADDR", DEFAULT_GRPC_ADDR),
            max_body_bytes: env_parse("SCIMRELAY_INGEST_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)?,
            max_batch,
            targets: env.targets()?,
            amqp_url: env.amqp_url,
        })
    }
}

/// Why a publish request was not accepted. Mapped to HTTP and gRPC in exactly one place each.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// An event is invalid; nothing of the request was published.
    #[error(transparent)]
    Invalid(#[from] FieldError),
    /// The request holds more events than allowed.
    #[error("events: {count} events in one request; at most {max} are accepted")]
    TooManyEvents {
        /// Events sent.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The broker is unreachable or did not confirm; the caller must retry.
    #[error("broker unavailable, retry later: {0}")]
    Unavailable(String),
}

/// The validated, published form of a request: the business logic behind both transports.
pub struct Ingest {
    targets: TargetsFile,
    max_batch: usize,
    broker: broker::Broker,
}

impl Ingest {
    /// Builds the service over a broker handle.
    pub fn new(targets: TargetsFile, max_batch: usize, broker: broker::Broker) -> Self {
        Ingest {
            targets,
            max_batch,
            broker,
        }
    }

    /// The broker handle (readiness).
    pub fn broker(&self) -> &broker::Broker {
        &self.broker
    }

    /// Validates every event, then publishes one message per (event, target) and waits for
    /// every confirm. All-or-error: a single invalid event rejects the whole request unpublished.
    pub async fn publish(
        &self,
        mut events: Vec<IdentityEvent>,
    ) -> Result<Vec<AcceptedEvent>, IngestError> {
        if events.len() > self.max_batch {
            return Err(IngestError::TooManyEvents {
                count: events.len(),
                max: self.max_batch,
            });
        }
        if events.is_empty() {
            return Err(FieldError {
                field: "events".into(),
                message: "must hold at least one event".into(),
            }
            .into());
        }
        let batch = events.len() > 1;
        for (i, e) in events.iter().enumerate() {
            let prefix = if batch {
                format!("events[{i}]")
            } else {
                String::new()
            };
            model::validate(e, &prefix, &self.targets)?;
        }
        let publisher = self
            .broker
            .publisher()
            .ok_or_else(|| IngestError::Unavailable("not connected to RabbitMQ".into()))?;
        let request_span = tracing::Span::current();
        let now_ms = now_ms();
        let mut pending = Vec::new();
        let mut accepted = Vec::with_capacity(events.len());
        for event in &mut events {
            if event.id.is_empty() {
                event.id = uuid::Uuid::now_v7().to_string();
            }
            if event.occurred_at_ms == 0 {
                event.occurred_at_ms = now_ms;
            }
            let targets: Vec<_> = if event.targets.is_empty() {
                self.targets.targets_for_tenant(&event.tenant).collect()
            } else {
                event
                    .targets
                    .iter()
                    .filter_map(|t| self.targets.target(t))
                    .collect()
            };
            let subject = event.subject_id().to_owned();
            // One trace per event: a single event continues the request's trace; each event of
            // a batch starts its own trace, linked to the request span.
            let event_span = if batch {
                let span = tracing::info_span!(
                    parent: None,
                    "ingest event",
                    "scimrelay.event_kind" = event.kind().api_name(),
                    "scimrelay.tenant" = %event.tenant,
                    trace_id = tracing::field::Empty,
                    span_id = tracing::field::Empty,
                );
                let link = request_span.context().span().span_context().clone();
                if link.is_valid() {
                    span.add_link(link);
                }
                span
            } else {
                tracing::info_span!(
                    parent: &request_span,
                    "ingest event",
                    "scimrelay.event_kind" = event.kind().api_name(),
                    "scimrelay.tenant" = %event.tenant,
                    trace_id = tracing::field::Empty,
                    span_id = tracing::field::Empty,
                )
            };
            telemetry::record_ids(&event_span);
            for target in &targets {
                let delivery = Delivery {
                    event: Some(event.clone()),
                    target: target.id.clone(),
                    provider: target.provider.as_str().to_owned(),
                    accepted_at_ms: now_ms,
                    attempt: 0,
                };
                let shard = amqp::shard_of(&subject, target.shards);
                let key = amqp::event_routing_key(target.provider.as_str(), &target.id, shard);
                let span = tracing::info_span!(
                    parent: &event_span,
                    "publish",
                    "otel.name" = "publish scimrelay.events",
                    "otel.kind" = "producer",
                    "messaging.system" = "rabbitmq",
                    "messaging.destination.name" = EVENTS_EXCHANGE,
                    "scimrelay.target" = %target.id,
                    "scimrelay.provider" = target.provider.as_str(),
                    "scimrelay.shard" = shard,
                );
                let mut headers = lapin::types::FieldTable::default();
                telemetry::inject_span(&span, &mut amqp::Headers(&mut headers));
                let props = amqp::properties(scimrelay_proto::TYPE_DELIVERY, headers);
                let sent = publisher
                    .send(EVENTS_EXCHANGE, &key, &delivery.encode_to_vec(), props)
                    .instrument(span.clone())
                    .await
                    .map_err(|e| IngestError::Unavailable(e.to_string()))?;
                pending.push((sent, span, target.id.clone()));
            }
            accepted.push(AcceptedEvent {
                id: event.id.clone(),
                targets: targets.iter().map(|t| t.id.clone()).collect(),
            });
        }
        let confirms = pending.into_iter().map(|(p, span, target)| {
            async move {
                let r = p.wait().await;
                if r.is_ok() {
                    metrics()
                        .ingest_published
                        .get_or_create(&scimrelay_core::metrics::target(&target))
                        .inc();
                } else {
                    tracing::Span::current()
                        .set_status(opentelemetry::trace::Status::error("publish not confirmed"));
                }
                r
            }
            .instrument(span)
        });
        for result in futures::future::join_all(confirms).await {
            result.map_err(|e| IngestError::Unavailable(e.to_string()))?;
        }
        tracing::debug!(events = accepted.len(), "published");
        Ok(accepted)
    }
}

pub use scimrelay_core::now_ms;

/// Runs ingest on already-bound listeners until `shutdown` is cancelled.
pub async fn serve(
    config: IngestConfig,
    http_listener: tokio::net::TcpListener,
    grpc_listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let broker = broker::Broker::start(
        config.amqp_url.clone(),
        config.targets.clone(),
        shutdown.clone(),
    );
    let ingest = Arc::new(Ingest::new(
        config.targets.clone(),
        config.max_batch,
        broker,
    ));
    let http = http::router(ingest.clone(), config.max_body_bytes);
    let http_task = tokio::spawn(scimrelay_core::health::serve(
        http_listener,
        http,
        shutdown.clone(),
    ));
    let grpc_task = tokio::spawn(grpc::serve(ingest.clone(), grpc_listener, shutdown.clone()));
    let (h, g) = tokio::join!(http_task, grpc_task);
    h??;
    g??;
    Ok(())
}

/// Binds the configured addresses and serves until `shutdown` is cancelled.
pub async fn run(config: IngestConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let http =
        scimrelay_core::health::bind(&config.http_addr, "SCIMRELAY_INGEST_HTTP_ADDR").await?;
    let grpc =
        scimrelay_core::health::bind(&config.grpc_addr, "SCIMRELAY_INGEST_GRPC_ADDR").await?;
    tracing::info!(http = %http.local_addr()?, grpc = %grpc.local_addr()?, "ingest listening");
    serve(config, http, grpc, shutdown).await
}
