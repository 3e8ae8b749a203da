//! The ingest service: the one door identity events come in by.
//!
//! It validates events (the same rules over HTTP and gRPC), assigns ids, resolves targets and
//! publishes one message per (event, target) to `scimrelay.events` with publisher confirms. It
//! answers 202 / OK **only after the broker confirmed every copy**: a refused, unroutable or
//! unconfirmed publish is an error to the caller (503 / UNAVAILABLE), never a silent loss. A
//! caller that retries after an error may cause duplicates; they are harmless because events are
//! versioned desired state (docs/design.md, "Events are desired state").
//!
//! # Authentication and TLS
//! With `SCIMRELAY_API_KEYS_FILE` set (see [`scimrelay_core::auth`]), `POST /v1/events` and
//! `IngestService/Publish` need `Authorization: Bearer <key>` (HTTP header or gRPC metadata)
//! from a key with the `send` scope, and every event's `tenant` must be one the key may act
//! for. The key is checked **before** the body is read, so an unauthenticated caller learns
//! nothing about size limits or validation. The tenants of the whole request are checked
//! before anything is published: one foreign tenant refuses the request, naming the field
//! (`events[3].tenant`). Refusals log the key's id (never the key) at info, or at debug for
//! a missing key and for rate limiting, which a misbehaving client repeats.
//!
//! | refusal                         | HTTP                                 | gRPC                |
//! |---------------------------------|--------------------------------------|---------------------|
//! | no key                          | 401 + `WWW-Authenticate: Bearer`     | `UNAUTHENTICATED`   |
//! | unknown or revoked key          | 401 + `WWW-Authenticate`             | `UNAUTHENTICATED`   |
//! | key without the `send` scope    | 403                                  | `PERMISSION_DENIED` |
//! | an event's tenant not the key's | 403, `field` names the event         | `PERMISSION_DENIED` |
//! | over the key's rate             | 429 + `Retry-After` (seconds)        | `RESOURCE_EXHAUSTED` + `retry-after` metadata |
//!
//! Without a keys file authentication is off (every caller may send for every tenant), and
//! [`run`] refuses to listen on a non-loopback address unless
//! `SCIMRELAY_ALLOW_UNAUTHENTICATED=true`. `/healthz`, `/readyz`, `/metrics` and
//! `/openapi.json` never need a key. The keys file is re-read while running, so a revocation
//! takes effect within seconds.
//!
//! With `SCIMRELAY_TLS_CERT_FILE` and `SCIMRELAY_TLS_KEY_FILE` both listeners speak TLS only
//! (see [`tls`]); with `SCIMRELAY_TLS_CLIENT_CA_FILE` too, clients must present a certificate
//! from that CA (mutual TLS) or the handshake fails. The health endpoints share the HTTP
//! listener, so under mutual TLS a probe needs a client certificate too: use a TCP or exec
//! probe, or give the probe a certificate.

pub mod broker;
pub mod grpc;
pub mod http;
pub mod model;
pub mod tls;
pub mod wait;

use std::sync::Arc;

use opentelemetry::trace::TraceContextExt as _;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use scimrelay_core::amqp::{self, EVENTS_EXCHANGE};
use scimrelay_core::auth::{AuthError, Authenticator, Principal, Scope};
use scimrelay_core::config::{
    ConfigError, EnvConfig, TargetConfig, TargetsFile, env_or, env_parse,
};
use scimrelay_core::metrics::metrics;
use scimrelay_core::telemetry;
use scimrelay_core::tls::ServerTls;
use scimrelay_proto::v1::{AcceptedEvent, Delivery, IdentityEvent, Outcome, Priority};

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
#[derive(Clone)]
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
    /// `SCIMRELAY_INGEST_MAX_WAIT_SECS`: the longest wait for outcomes a request may ask for.
    pub max_wait: std::time::Duration,
    /// The targets file (`SCIMRELAY_CONFIG`).
    pub targets: TargetsFile,
    /// Who may publish: the keys file `SCIMRELAY_API_KEYS_FILE`; disabled (anyone, for every
    /// tenant) without it.
    pub auth: Authenticator,
    /// `SCIMRELAY_TLS_CERT_FILE` / `_KEY_FILE` / `_CLIENT_CA_FILE`: both listeners speak TLS
    /// (mutual with a client CA) when set; plain HTTP and gRPC when `None`.
    pub tls: Option<ServerTls>,
}

impl std::fmt::Debug for IngestConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IngestConfig")
            .field("http_addr", &self.http_addr)
            .field("grpc_addr", &self.grpc_addr)
            .field(
                "amqp_url",
                &scimrelay_core::config::redact_url(&self.amqp_url),
            )
            .field("max_body_bytes", &self.max_body_bytes)
            .field("max_batch", &self.max_batch)
            .field("max_wait", &self.max_wait)
            .field("targets", &self.targets.targets.len())
            .field("auth", &self.auth.enabled())
            .field("tls", &self.tls)
            .finish()
    }
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
            max_wait: std::time::Duration::from_secs(env_parse(
                "SCIMRELAY_INGEST_MAX_WAIT_SECS",
                wait::DEFAULT_MAX_WAIT_SECS,
            )?),
            targets: env.targets()?,
            amqp_url: env.amqp_url,
            auth: Authenticator::from_env()?,
            tls: ServerTls::from_env()?,
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
    /// The caller's key was refused: missing, unknown, revoked, without the `send` scope, or
    /// over its rate. Nothing was read or published.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// An event's tenant is not one the caller's key may act for; nothing of the request was
    /// published.
    #[error("{field}: {source}")]
    TenantForbidden {
        /// The event's `tenant` field (`events[3].tenant`, or `tenant` for a single event).
        field: String,
        /// The refusal, naming the key's id and the tenant.
        source: AuthError,
    },
    /// A key limited to bulk work marked an event interactive; nothing was published.
    #[error("{field}: API key {key} may send bulk events only (bulk_only in the keys file)")]
    PriorityForbidden {
        /// The event's `priority` field (`events[3].priority`, or `priority`).
        field: String,
        /// The key's id.
        key: String,
    },
}

/// What a request published, and what it waited for.
#[derive(Debug, Default)]
pub struct Published {
    /// Every event with the targets it went to.
    pub accepted: Vec<AcceptedEvent>,
    /// Whether the request waited for outcomes (it asked, and its key had a wait to spare).
    pub waited: bool,
    /// The outcomes that arrived while it waited, one per (event, target).
    pub outcomes: Vec<Outcome>,
    /// Whether every (event, target) has its outcome in `outcomes`.
    pub complete: bool,
}

/// Logs a refusal with the key's id (never the key). Missing keys and rate limiting are
/// logged at debug: a misconfigured or misbehaving client repeats them at request rate.
fn log_refusal(e: &AuthError, transport: &'static str) {
    match e {
        AuthError::Missing => tracing::debug!(transport, "refused: no API key"),
        AuthError::Invalid => tracing::info!(transport, "refused: unknown API key"),
        AuthError::Revoked(key) => {
            tracing::info!(transport, key = %key, "refused: revoked API key")
        }
        AuthError::Scope { key, scope } => {
            tracing::info!(transport, key = %key, scope, "refused: API key lacks the scope")
        }
        // Not produced by `authenticate`; `Ingest::publish` logs tenant refusals with the field.
        AuthError::Tenant { key, tenant } => tracing::info!(
            transport,
            key = %key,
            tenant = %tenant,
            "refused: API key may not act for the tenant"
        ),
        AuthError::RateLimited { key, .. } => {
            tracing::debug!(transport, key = %key, "refused: API key over its rate")
        }
    }
}

/// How long a request may wait for the broker to confirm its copies. A broker that takes
/// longer (blocked by a memory or disk alarm, a quorum queue without quorum, a frozen network)
/// gets a 503 and the platform sends again later, rather than a request that hangs; copies
/// confirmed meanwhile are harmless duplicates (the event id is the idempotency key).
pub const CONFIRM_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The validated, published form of a request: the business logic behind both transports.
pub struct Ingest {
    targets: TargetsFile,
    max_batch: usize,
    max_wait: std::time::Duration,
    broker: broker::Broker,
    auth: Authenticator,
    waiters: Arc<wait::Waiters>,
}

impl Ingest {
    /// Builds the service over a broker handle; `auth` decides who may publish; outcomes the
    /// broker's reply queue receives go to `waiters`.
    pub fn new(config: &IngestConfig, broker: broker::Broker, waiters: Arc<wait::Waiters>) -> Self {
        Ingest {
            targets: config.targets.clone(),
            max_batch: config.max_batch,
            max_wait: config.max_wait,
            broker,
            auth: config.auth.clone(),
            waiters,
        }
    }

    /// The longest wait a request may ask for.
    pub fn max_wait(&self) -> std::time::Duration {
        self.max_wait
    }

    /// Checks the caller's `Authorization` value (`Bearer <key>`; `None` when absent), the
    /// key's rate and its `send` scope. Tenants are checked by [`Ingest::publish`], per event.
    pub fn authenticate(
        &self,
        authorization: Option<&[u8]>,
        transport: &'static str,
    ) -> Result<Principal, IngestError> {
        let authenticated = match authorization.map(std::str::from_utf8) {
            None => self.auth.authenticate(None),
            Some(Ok(value)) => self.auth.authenticate(Some(value)),
            // Not UTF-8: cannot be one of our keys (ignored, like any value, when off).
            Some(Err(_)) if self.auth.enabled() => Err(AuthError::Invalid),
            Some(Err(_)) => self.auth.authenticate(None),
        };
        authenticated
            .and_then(|principal| {
                // Ingest's one operation needs `send`; checking it here refuses a read-only key
                // before the request body is read or decoded.
                principal.require(Scope::Send)?;
                Ok(principal)
            })
            .map_err(|e| {
                log_refusal(&e, transport);
                IngestError::Auth(e)
            })
    }

    /// The broker handle (readiness).
    pub fn broker(&self) -> &broker::Broker {
        &self.broker
    }

    /// Checks that `principal` may send for every event's tenant and priority, validates every
    /// event, then publishes one message per (event, target) and waits for every confirm.
    /// All-or-error: a single refused or invalid event rejects the whole request unpublished.
    /// With `wait`, it then waits that long for the outcomes (see [`wait`]).
    pub async fn publish(
        &self,
        principal: &Principal,
        mut events: Vec<IdentityEvent>,
        wait: Option<std::time::Duration>,
    ) -> Result<Published, IngestError> {
        self.check_request(principal, &mut events)?;
        let session = self
            .broker
            .session()
            .ok_or_else(|| IngestError::Unavailable("not connected to RabbitMQ".into()))?;
        let now_ms = now_ms();
        for event in &mut events {
            if event.id.is_empty() {
                event.id = uuid::Uuid::now_v7().to_string();
            }
            if event.occurred_at_ms == 0 {
                event.occurred_at_ms = now_ms;
            }
        }
        // Registered before anything is published: an outcome can come before the confirm.
        let registration = match (wait.filter(|w| !w.is_zero()), &session.reply_queue) {
            (Some(_), Some(_)) => self.waiters.register(
                &principal.key_id,
                principal.max_waiting,
                events
                    .iter()
                    .map(|e| (e.tenant.clone(), e.id.clone()))
                    .collect(),
            ),
            _ => None,
        };
        let reply_to = registration
            .as_ref()
            .and(session.reply_queue.clone())
            .unwrap_or_default();
        let accepted = self
            .send_all(&session.publisher, &events, now_ms, &reply_to)
            .await?;
        let Some(registration) = registration else {
            return Ok(Published {
                accepted,
                ..Published::default()
            });
        };
        let expected = accepted
            .iter()
            .flat_map(|a| a.targets.iter().map(|t| (a.id.clone(), t.clone())))
            .collect();
        let collected = registration
            .collect(&expected, wait.unwrap_or_default())
            .await;
        Ok(Published {
            accepted,
            waited: true,
            outcomes: collected.outcomes,
            complete: collected.complete,
        })
    }

    /// Publishes every copy of `events` (ids assigned) and waits for the broker's confirms.
    async fn send_all(
        &self,
        publisher: &amqp::Publisher,
        events: &[IdentityEvent],
        now_ms: i64,
        reply_to: &str,
    ) -> Result<Vec<AcceptedEvent>, IngestError> {
        let batch = events.len() > 1;
        let request_span = tracing::Span::current();
        let mut pending = Vec::new();
        let mut accepted = Vec::with_capacity(events.len());
        for event in events {
            let targets = self.targets_of(event);
            let subject = event.subject_ref();
            let event_span = event_span(event, batch, &request_span);
            telemetry::record_ids(&event_span);
            for target in &targets {
                let delivery = Delivery {
                    event: Some(event.clone()),
                    target: target.id.clone(),
                    provider: target.provider.as_str().to_owned(),
                    accepted_at_ms: now_ms,
                    attempt: 0,
                    waits: 0,
                    reply_to: reply_to.to_owned(),
                    retrigger: false,
                };
                let key = if event.priority() == Priority::Interactive {
                    amqp::lane_routing_key(target.provider.as_str(), &target.id)
                } else {
                    let shard = amqp::shard_of(&subject, target.shards);
                    amqp::event_routing_key(target.provider.as_str(), &target.id, shard)
                };
                let (sent, span) =
                    send_copy(publisher, &delivery, target, &key, &event_span).await?;
                pending.push((sent, span, target.id.clone()));
            }
            accepted.push(AcceptedEvent {
                id: event.id.clone(),
                targets: targets.iter().map(|t| t.id.clone()).collect(),
            });
        }
        await_confirms(pending, accepted.len()).await?;
        tracing::debug!(events = accepted.len(), "published");
        Ok(accepted)
    }

    /// Everything checked before anything is published: the scope, the request's size, every
    /// event's tenant against the key, then every event's fields.
    fn check_request(
        &self,
        principal: &Principal,
        events: &mut [IdentityEvent],
    ) -> Result<(), IngestError> {
        // Also checked by `authenticate`; kept so that `publish` is safe on its own.
        principal.require(Scope::Send)?;
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
        let prefix = |i: usize| {
            if batch {
                format!("events[{i}]")
            } else {
                String::new()
            }
        };
        // Tenants first, over the whole request: a key learns nothing about another tenant's
        // events, not even whether they are valid. An empty tenant is left to validation.
        for (i, e) in events.iter().enumerate() {
            if e.tenant.is_empty() {
                continue;
            }
            if let Err(source) = principal.require_tenant(&e.tenant) {
                let p = prefix(i);
                let field = if p.is_empty() {
                    "tenant".to_owned()
                } else {
                    format!("{p}.tenant")
                };
                // Inside the request span, which names the transport.
                tracing::info!(
                    key = %principal.key_id,
                    tenant = %e.tenant,
                    %field,
                    "refused: API key may not act for the tenant"
                );
                return Err(IngestError::TenantForbidden { field, source });
            }
        }
        for (i, e) in events.iter().enumerate() {
            model::validate(e, &prefix(i), &self.targets)?;
        }
        for (i, e) in events.iter_mut().enumerate() {
            e.priority = resolve_priority(principal, e.priority(), batch, &prefix(i))? as i32;
        }
        Ok(())
    }

    /// The targets an event goes to: the ones it names, or else every target of its tenant.
    fn targets_of<'a>(&'a self, event: &'a IdentityEvent) -> Vec<&'a TargetConfig> {
        if event.targets.is_empty() {
            self.targets.targets_for_tenant(&event.tenant).collect()
        } else {
            event
                .targets
                .iter()
                .filter_map(|t| self.targets.target(t))
                .collect()
        }
    }
}

/// The priority an event is published with: as sent, or by default interactive for the only
/// event of a request and bulk in a batch or from a `bulk_only` key; an `interactive` event
/// from a `bulk_only` key is refused, naming its field.
fn resolve_priority(
    principal: &Principal,
    sent: Priority,
    batch: bool,
    prefix: &str,
) -> Result<Priority, IngestError> {
    match sent {
        Priority::Interactive if principal.bulk_only => {
            let field = if prefix.is_empty() {
                "priority".to_owned()
            } else {
                format!("{prefix}.priority")
            };
            tracing::info!(key = %principal.key_id, %field, "refused: API key may send bulk events only");
            Err(IngestError::PriorityForbidden {
                field,
                key: principal.key_id.clone(),
            })
        }
        Priority::Unspecified if batch || principal.bulk_only => Ok(Priority::Bulk),
        Priority::Unspecified => Ok(Priority::Interactive),
        other => Ok(other),
    }
}

/// The span of one event: a single event continues the request's trace; each event of a batch
/// starts its own trace, linked to the request span.
fn event_span(event: &IdentityEvent, batch: bool, request_span: &tracing::Span) -> tracing::Span {
    if batch {
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
            parent: request_span,
            "ingest event",
            "scimrelay.event_kind" = event.kind().api_name(),
            "scimrelay.tenant" = %event.tenant,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        )
    }
}

/// Sends one copy of an event under routing key `key` (its target's shard, or its interactive
/// lane), in a `publish` span under the event's span that travels in the message headers;
/// returns the confirm to wait for, and the span.
async fn send_copy(
    publisher: &amqp::Publisher,
    delivery: &Delivery,
    target: &TargetConfig,
    key: &str,
    event_span: &tracing::Span,
) -> Result<(amqp::PendingConfirm, tracing::Span), IngestError> {
    let span = tracing::info_span!(
        parent: event_span,
        "publish",
        "otel.name" = "publish scimrelay.events",
        "otel.kind" = "producer",
        "messaging.system" = "rabbitmq",
        "messaging.destination.name" = EVENTS_EXCHANGE,
        "scimrelay.target" = %target.id,
        "scimrelay.provider" = target.provider.as_str(),
        "messaging.rabbitmq.destination.routing_key" = key,
    );
    let mut headers = lapin::types::FieldTable::default();
    telemetry::inject_span(&span, &mut amqp::Headers(&mut headers));
    let props = amqp::properties(scimrelay_proto::TYPE_DELIVERY, headers);
    let sent = tokio::time::timeout(
        CONFIRM_TIMEOUT,
        publisher
            .send(EVENTS_EXCHANGE, key, &delivery.encode_to_vec(), props)
            .instrument(span.clone()),
    )
    .await
    .map_err(|_| {
        IngestError::Unavailable(format!(
            "RabbitMQ took no event within {} s; send them again",
            CONFIRM_TIMEOUT.as_secs()
        ))
    })?
    .map_err(|e| IngestError::Unavailable(e.to_string()))?;
    Ok((sent, span))
}

/// Waits for the broker's confirm of every copy sent (each counted per target, or its span
/// marked failed), at most [`CONFIRM_TIMEOUT`]; the first copy not confirmed is the error.
async fn await_confirms(
    pending: Vec<(amqp::PendingConfirm, tracing::Span, String)>,
    events: usize,
) -> Result<(), IngestError> {
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
    let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, futures::future::join_all(confirms))
        .await
        .map_err(|_| {
            tracing::warn!(
                events,
                timeout_ms = CONFIRM_TIMEOUT.as_millis() as u64,
                "the broker did not confirm in time; answering 503"
            );
            IngestError::Unavailable(format!(
                "RabbitMQ did not confirm the events within {} s; send them again",
                CONFIRM_TIMEOUT.as_secs()
            ))
        })?;
    for result in confirmed {
        result.map_err(|e| IngestError::Unavailable(e.to_string()))?;
    }
    Ok(())
}

pub use scimrelay_core::now_ms;

/// Runs ingest on already-bound listeners until `shutdown` is cancelled.
///
/// Serves TLS on both listeners when `config.tls` is set, and re-reads the keys file while
/// running. Checking that a listener may run without keys is [`run`]'s job.
pub async fn serve(
    config: IngestConfig,
    http_listener: tokio::net::TcpListener,
    grpc_listener: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Build the TLS configurations first, so a bad certificate fails before anything starts.
    let tls = match &config.tls {
        Some(tls) => Some((
            tls.rustls_config(&[b"http/1.1"])?,
            tls.rustls_config(&[b"h2"])?,
        )),
        None => None,
    };
    config.auth.spawn_reload(shutdown.clone());
    let waiters = Arc::new(wait::Waiters::default());
    let broker = broker::Broker::start(
        config.amqp_url.clone(),
        config.targets.clone(),
        waiters.clone(),
        shutdown.clone(),
    );
    let ingest = Arc::new(Ingest::new(&config, broker, waiters));
    let http = http::router(ingest.clone(), config.max_body_bytes);
    let (http_task, grpc_task) = match tls {
        None => (
            tokio::spawn({
                let shutdown = shutdown.clone();
                async move {
                    scimrelay_core::health::serve(http_listener, http, shutdown).await?;
                    anyhow::Ok(())
                }
            }),
            tokio::spawn(grpc::serve(
                ingest.clone(),
                tokio_stream::wrappers::TcpListenerStream::new(grpc_listener),
                shutdown.clone(),
            )),
        ),
        Some((http_tls, grpc_tls)) => {
            let http_incoming = tls::TlsIncoming::start(http_listener, http_tls, shutdown.clone())?;
            let grpc_incoming = tls::TlsIncoming::start(grpc_listener, grpc_tls, shutdown.clone())?;
            let router = http.merge(scimrelay_core::metrics::routes());
            let http_shutdown = shutdown.clone();
            (
                tokio::spawn(async move {
                    axum::serve(http_incoming, router)
                        .with_graceful_shutdown(http_shutdown.cancelled_owned())
                        .await?;
                    anyhow::Ok(())
                }),
                tokio::spawn(grpc::serve(
                    ingest.clone(),
                    grpc_incoming.into_stream(),
                    shutdown.clone(),
                )),
            )
        }
    };
    let (h, g) = tokio::join!(http_task, grpc_task);
    h??;
    g??;
    Ok(())
}

fn listen_addr(addr: &str, key: &str) -> Result<std::net::SocketAddr, ConfigError> {
    addr.parse().map_err(|e| ConfigError::Invalid {
        key: key.to_owned(),
        message: format!("{addr:?} is not a socket address: {e}"),
    })
}

/// Checks that the listeners may run as configured (keys are required off loopback unless
/// `SCIMRELAY_ALLOW_UNAUTHENTICATED=true`), binds them and serves until `shutdown` is cancelled.
pub async fn run(config: IngestConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    for (addr, key) in [
        (&config.http_addr, "SCIMRELAY_INGEST_HTTP_ADDR"),
        (&config.grpc_addr, "SCIMRELAY_INGEST_GRPC_ADDR"),
    ] {
        scimrelay_core::auth::require_for_listener(&config.auth, key, &listen_addr(addr, key)?)?;
    }
    let http =
        scimrelay_core::health::bind(&config.http_addr, "SCIMRELAY_INGEST_HTTP_ADDR").await?;
    let grpc =
        scimrelay_core::health::bind(&config.grpc_addr, "SCIMRELAY_INGEST_GRPC_ADDR").await?;
    tracing::info!(
        http = %http.local_addr()?,
        grpc = %grpc.local_addr()?,
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
        authentication = config.auth.enabled(),
        "ingest listening"
    );
    serve(config, http, grpc, shutdown).await
}
