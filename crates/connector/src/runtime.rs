//! The consume → converge → outcome → ack loop, its broker sessions and its shutdown.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use prost::Message;
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::breaker::Breaker;
use crate::exec::TargetIo;
use crate::limits::{Limits, LimitsConfig};
use crate::provider::ProviderDefaults;
use crate::status::{Admission, GuardClient, LedgerLookup, REPORT_INTERVAL, StatusClients};
use scimrelay_core::amqp::{self, DEAD_EXCHANGE, OUTCOMES_EXCHANGE, Publisher};
use scimrelay_core::config::{ConfigError, TargetConfig, TargetMode};
use scimrelay_core::metrics::{self, metrics};
use scimrelay_core::telemetry;
use scimrelay_proto::v1::{
    Delivery, EventKind, HeldEvent, IdentityEvent, Operation, Outcome, OutcomeResult,
};
use scimrelay_scim::{ClientConfig, ScimClient};

/// Header carrying the original routing key of a parked message, so a replay can route it back.
pub const ROUTING_KEY_HEADER: &str = "x-scimrelay-routing-key";

use crate::ConnectorConfig;
use crate::exec::Exec;
use crate::ledger::{Ledger, LedgerEntry};
use crate::provider::{ConvergeError, ConvergeInput, FailureClass, Provider};
use scimrelay_core::now_ms;

/// Longest wait between broker reconnection attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);

/// One target's runtime state.
struct TargetRuntime {
    config: TargetConfig,
    io: Arc<TargetIo>,
    ledger: Ledger,
}

fn build_targets(
    config: &ConnectorConfig,
    defaults: &ProviderDefaults,
) -> Result<Vec<Arc<TargetRuntime>>, ConfigError> {
    config
        .targets
        .iter()
        .map(|served| {
            let t = &served.config;
            let client = ScimClient::new(ClientConfig {
                base_url: t.base_url.clone(),
                auth: served.auth.clone(),
                timeout_secs: t.timeout_secs,
                user_agent: format!("scimrelay/{}", env!("CARGO_PKG_VERSION")),
                content_type: "application/scim+json".into(),
                ca_file: t.tls.ca_file.clone(),
            })
            .map_err(|e| ConfigError::Invalid {
                key: served.key.clone(),
                message: e.to_string(),
            })?;
            let ceiling = t
                .rate_limit_per_sec
                .or(defaults.rate_limit_per_sec)
                .map(|r| r / f64::from(config.replicas.max(1)));
            let limits = Limits::new(&LimitsConfig {
                ceiling_per_sec: ceiling,
                min_concurrency: t.concurrency.min,
                max_concurrency: t.concurrency.max,
            });
            Ok(Arc::new(TargetRuntime {
                config: t.clone(),
                io: Arc::new(TargetIo {
                    client,
                    limits,
                    breaker: Breaker::default(),
                    replicas: config.replicas.max(1),
                }),
                ledger: Ledger::default(),
            }))
        })
        .collect()
}

/// Runs the connector until `shutdown` is cancelled: health endpoints plus broker sessions,
/// reconnecting with backoff when the broker goes away. Secrets are loaded before anything
/// else, so a missing secret stops the service at start with the key named.
pub async fn run(
    config: ConnectorConfig,
    provider: Arc<dyn Provider>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let targets = build_targets(&config, &provider.defaults())?;
    for t in &targets {
        crate::exec::init_fault_series(&t.config.id);
    }
    if targets.is_empty() {
        tracing::warn!(
            provider = config.provider.as_str(),
            "no target of this provider in the targets file; idling"
        );
    }
    let ready = scimrelay_core::health::Readiness::default();
    let listener =
        scimrelay_core::health::bind(&config.http_addr, "SCIMRELAY_CONNECTOR_HTTP_ADDR").await?;
    tracing::info!(addr = %listener.local_addr()?, provider = config.provider.as_str(), targets = targets.len(), "connector started");
    let health = tokio::spawn(scimrelay_core::health::serve(
        listener,
        scimrelay_core::health::routes(ready.clone()),
        shutdown.clone(),
    ));

    let status = StatusClients::start(&config, shutdown.clone());
    // Shutdown is bounded: in-flight work gets the drain deadline, the broker gets its close
    // timeouts, and past that the connector exits anyway (non-zero) rather than hang — an
    // unacked message goes back to its queue when the socket closes, so nothing is lost.
    let limit = config.drain_timeout + amqp::CLOSE_TIMEOUT * 3;
    let watchdog = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(limit).await;
        }
    };
    let work = async {
        serve(&config, &targets, provider, &status, &ready, &shutdown).await;
        let _ = health.await;
    };
    tokio::select! {
        _ = work => {}
        _ = watchdog => {
            tracing::error!(limit_ms = limit.as_millis() as u64, "shutdown did not finish in time; exiting");
            anyhow::bail!("shutdown did not finish within {} ms", limit.as_millis());
        }
    }
    tracing::info!("connector stopped");
    Ok(())
}

/// Broker sessions until `shutdown`, reconnecting with backoff.
async fn serve(
    config: &ConnectorConfig,
    targets: &[Arc<TargetRuntime>],
    provider: Arc<dyn Provider>,
    status: &StatusClients,
    ready: &scimrelay_core::health::Readiness,
    shutdown: &CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match amqp::connect(
            &config.amqp_url,
            &format!("{}-connector", config.provider.as_str()),
        )
        .await
        {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                match session(
                    config,
                    &conn,
                    targets,
                    provider.clone(),
                    status,
                    ready,
                    shutdown,
                )
                .await
                {
                    Ok(()) => {}
                    Err(e) => tracing::warn!(error = %e, "broker session ended"),
                }
                ready.set(false);
                amqp::close(&conn, "connector session over").await;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "RabbitMQ unavailable")
            }
        }
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }
}

async fn session(
    config: &ConnectorConfig,
    conn: &Connection,
    targets: &[Arc<TargetRuntime>],
    provider: Arc<dyn Provider>,
    status: &StatusClients,
    ready: &scimrelay_core::health::Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    amqp::declare_all(conn, targets.iter().map(|t| &t.config)).await?;
    let publisher = Publisher::new(conn).await?;
    let tracker = TaskTracker::new();
    let lost = CancellationToken::new();
    for target in targets {
        for shard in 0..target.config.shards {
            let channel = conn.create_channel().await?;
            let prefetch = u16::try_from(target.config.concurrency.max).unwrap_or(u16::MAX);
            channel
                .basic_qos(prefetch, BasicQosOptions::default())
                .await?;
            let queue = amqp::shard_queue(&target.config.id, shard);
            let tag = format!(
                "{}-{}-{}",
                config.provider.as_str(),
                std::process::id(),
                shard
            );
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    tag.as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            let shard_ctx = ShardCtx {
                lookup: status.ledger.clone(),
                guard: status.guard.clone(),
                target: target.clone(),
                provider: provider.clone(),
                publisher: publisher.clone(),
                channel,
                tag,
                drain: config.drain_timeout,
            };
            let (shutdown, lost) = (shutdown.clone(), lost.clone());
            tracker.spawn(async move {
                if let Err(e) = shard_ctx.run(consumer, shutdown, lost.clone()).await {
                    tracing::warn!(error = %e, queue = %queue, "shard consumer stopped");
                    lost.cancel();
                }
            });
        }
    }
    ready.set(true);
    let reporter = tokio::spawn(report_loop(
        targets.to_vec(),
        publisher.clone(),
        shutdown.clone(),
        lost.clone(),
    ));
    tracing::info!("consuming");
    tracker.close();
    tokio::select! {
        _ = tracker.wait() => {}
        _ = lost.cancelled() => { tracker.wait().await; }
    }
    reporter.abort();
    let _ = reporter.await;
    publisher.close().await;
    if lost.is_cancelled() && !shutdown.is_cancelled() {
        anyhow::bail!("lost the RabbitMQ connection");
    }
    Ok(())
}

struct ShardCtx {
    target: Arc<TargetRuntime>,
    lookup: LedgerLookup,
    guard: GuardClient,
    provider: Arc<dyn Provider>,
    publisher: Publisher,
    channel: Channel,
    tag: String,
    drain: Duration,
}

/// A received message with its decoded body (None: undecodable).
struct Incoming {
    raw: lapin::message::Delivery,
    decoded: Option<Delivery>,
}

impl ShardCtx {
    async fn run(
        self,
        mut consumer: lapin::Consumer,
        shutdown: CancellationToken,
        lost: CancellationToken,
    ) -> anyhow::Result<()> {
        let me = Arc::new(self);
        // Per-subject queues of messages waiting behind one in flight.
        let mut busy: HashMap<String, VecDeque<Incoming>> = HashMap::new();
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<String>();
        let mut result = Ok(());
        loop {
            tokio::select! {
                biased;
                Some(subject) = done_rx.recv() => me.next_of(&mut busy, &subject, &done_tx),
                _ = shutdown.cancelled() => break,
                _ = lost.cancelled() => break,
                msg = consumer.next() => match msg {
                    Some(Ok(raw)) => {
                        let decoded = Delivery::decode(raw.data.as_slice()).ok().filter(|d| d.event.is_some());
                        let subject = decoded
                            .as_ref()
                            .and_then(|d| d.event.as_ref())
                            .map(|e| e.subject_id().to_owned())
                            .unwrap_or_default();
                        let incoming = Incoming { raw, decoded };
                        match busy.get_mut(&subject) {
                            Some(waiting) => waiting.push_back(incoming),
                            None => {
                                busy.insert(subject.clone(), VecDeque::new());
                                me.spawn(incoming, subject, done_tx.clone());
                            }
                        }
                    }
                    Some(Err(e)) => { result = Err(anyhow::anyhow!("consumer error: {e}")); break; }
                    None => { result = Err(anyhow::anyhow!("consumer cancelled by the broker")); break; }
                },
            }
        }
        // Stop deliveries, give back what never started, let in-flight work finish.
        let _ = me
            .channel
            .basic_cancel(me.tag.as_str().into(), BasicCancelOptions::default())
            .await;
        for waiting in busy.values_mut() {
            for incoming in waiting.drain(..) {
                let _ = incoming
                    .raw
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await;
            }
        }
        let deadline = tokio::time::Instant::now() + me.drain;
        while !busy.is_empty() {
            match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                Ok(Some(subject)) => {
                    busy.remove(&subject);
                }
                _ => break,
            }
        }
        if !busy.is_empty() {
            tracing::warn!(
                in_flight = busy.len(),
                "drain deadline passed; unacked messages return to the queue"
            );
        }
        amqp::close_channel(&me.channel, "shard consumer stopping").await;
        result
    }

    fn next_of(
        self: &Arc<Self>,
        busy: &mut HashMap<String, VecDeque<Incoming>>,
        subject: &str,
        done: &mpsc::UnboundedSender<String>,
    ) {
        let next = busy.get_mut(subject).and_then(VecDeque::pop_front);
        match next {
            Some(incoming) => self.spawn(incoming, subject.to_owned(), done.clone()),
            None => {
                busy.remove(subject);
            }
        }
    }

    fn spawn(
        self: &Arc<Self>,
        incoming: Incoming,
        subject: String,
        done: mpsc::UnboundedSender<String>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            if let Err(e) = me.handle(incoming).await {
                tracing::warn!(error = %e, target = %me.target.config.id, "message left unacked; it will be redelivered");
            }
            let _ = done.send(subject);
        });
    }

    /// One `consume` span per message, child of the publish that sent it (ingest's, or the
    /// retry publish of the previous attempt), so every attempt of an event is in one trace.
    async fn handle(&self, incoming: Incoming) -> anyhow::Result<()> {
        let t = &self.target.config;
        let span = tracing::info_span!(
            "consume",
            "otel.name" = format!("process scimrelay.{}", t.id),
            "otel.kind" = "consumer",
            "messaging.system" = "rabbitmq",
            "messaging.destination.name" = incoming.raw.routing_key.as_str(),
            "scimrelay.target" = %t.id,
            "scimrelay.provider" = t.provider.as_str(),
            "scimrelay.attempt" = incoming.decoded.as_ref().map(|d| d.attempt + 1).unwrap_or(1),
            "scimrelay.event_kind" = incoming
                .decoded
                .as_ref()
                .and_then(|d| d.event.as_ref())
                .map(|e| e.kind().api_name())
                .unwrap_or("undecodable"),
            "scimrelay.result" = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::set_parent(&span, &amqp::ReadHeaders::of(&incoming.raw.properties));
        self.handle_in_span(incoming).instrument(span).await
    }

    /// Processes one message: a terminal outcome (published, then acked) or a retry copy on a
    /// delay tier (confirmed, then acked). The shard never waits for a retry.
    async fn handle_in_span(&self, incoming: Incoming) -> anyhow::Result<()> {
        let Incoming { raw, decoded } = incoming;
        let Some(delivery) = decoded else {
            return self.park_poison(raw).await;
        };
        let started = std::time::Instant::now();
        let released = amqp::header_bool(&raw.properties, scimrelay_proto::HEADER_RELEASED);
        let step = self.process(&delivery, released).await;
        let target = self.target.config.id.as_str();
        let result_name = match &step {
            Step::Done(o) => OutcomeResult::try_from(o.result)
                .unwrap_or(OutcomeResult::Unspecified)
                .name(),
            Step::Hold { .. } => "held",
            Step::Retry { .. } => "retry",
        };
        tracing::Span::current().record("scimrelay.result", result_name);
        metrics()
            .event_duration
            .get_or_create(&metrics::target_and(target, "result", result_name))
            .observe(started.elapsed().as_secs_f64());
        match step {
            Step::Done(outcome) => {
                if outcome.result == OutcomeResult::DeadLettered as i32 {
                    self.park(
                        &raw.data,
                        raw.routing_key.as_str(),
                        scimrelay_proto::TYPE_DELIVERY,
                    )
                    .await?;
                }
                self.publish_outcome(&outcome).await?;
            }
            Step::Hold { reason } => {
                self.publish_held(&delivery, raw.routing_key.as_str(), &reason)
                    .await?;
            }
            Step::Retry {
                wait,
                attempt,
                reason,
                class,
            } => {
                let tier = amqp::retry_tier(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
                let copy = Delivery {
                    attempt,
                    ..delivery
                };
                let exchange = amqp::retry_exchange(tier);
                let span = tracing::info_span!(
                    "publish",
                    "otel.name" = format!("publish {exchange}"),
                    "otel.kind" = "producer",
                    "messaging.system" = "rabbitmq",
                    "messaging.destination.name" = %exchange,
                    "scimrelay.target" = target,
                    "scimrelay.retry_reason" = class,
                    "scimrelay.retry_tier_ms" = tier,
                );
                let mut headers = FieldTable::default();
                telemetry::inject_span(&span, &mut amqp::Headers(&mut headers));
                let props = amqp::properties(scimrelay_proto::TYPE_DELIVERY, headers);
                self.publisher
                    .publish(
                        &exchange,
                        raw.routing_key.as_str(),
                        &copy.encode_to_vec(),
                        props,
                    )
                    .instrument(span)
                    .await?;
                metrics()
                    .retries
                    .get_or_create(&metrics::target_and(target, "reason", class))
                    .inc();
                tracing::info!(target = %self.target.config.id, attempt, tier_ms = tier, reason = %telemetry::redact(&reason), "retry scheduled");
            }
        }
        raw.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// Publishes a copy to the parking lot, keeping the original routing key in a header.
    async fn park(&self, body: &[u8], routing_key: &str, message_type: &str) -> anyhow::Result<()> {
        let mut headers = FieldTable::default();
        headers.insert(
            ROUTING_KEY_HEADER.into(),
            lapin::types::AMQPValue::LongString(routing_key.into()),
        );
        telemetry::inject(&mut amqp::Headers(&mut headers));
        let props = amqp::properties(message_type, headers);
        self.publisher
            .publish(DEAD_EXCHANGE, &self.target.config.id, body, props)
            .await?;
        Ok(())
    }

    /// Hands a held event to the status service (confirmed before the input is acked). Held is
    /// not terminal: the event gets its outcome when an operator releases or drops it.
    async fn publish_held(
        &self,
        delivery: &Delivery,
        routing_key: &str,
        reason: &str,
    ) -> anyhow::Result<()> {
        let t = &self.target.config;
        let held = HeldEvent {
            delivery: Some(delivery.clone()),
            routing_key: routing_key.to_owned(),
            reason: reason.to_owned(),
            held_at_ms: now_ms(),
            id: 0,
        };
        let key = amqp::outcome_routing_key(t.provider.as_str(), &t.id, "held");
        let mut headers = FieldTable::default();
        telemetry::inject(&mut amqp::Headers(&mut headers));
        let props = amqp::properties(scimrelay_proto::TYPE_HELD_EVENT, headers);
        self.publisher
            .publish(OUTCOMES_EXCHANGE, &key, &held.encode_to_vec(), props)
            .await?;
        let event_id = delivery.event.as_ref().map(|e| e.id.as_str()).unwrap_or("");
        tracing::warn!(target = %t.id, event_id, reason, "deprovisioning held by the mass-deprovisioning guard; release or drop it with `scimrelayctl held`");
        Ok(())
    }

    /// Publishes a terminal outcome carrying its trace id, the trace context in its headers.
    async fn publish_outcome(&self, outcome: &Outcome) -> anyhow::Result<()> {
        let result = OutcomeResult::try_from(outcome.result).unwrap_or(OutcomeResult::Unspecified);
        let key = amqp::outcome_routing_key(&outcome.provider, &outcome.target, result.name());
        let span = tracing::info_span!(
            "publish",
            "otel.name" = "publish scimrelay.outcomes",
            "otel.kind" = "producer",
            "messaging.system" = "rabbitmq",
            "messaging.destination.name" = OUTCOMES_EXCHANGE,
            "scimrelay.target" = %outcome.target,
            "scimrelay.result" = result.name(),
        );
        let mut headers = FieldTable::default();
        telemetry::inject_span(&span, &mut amqp::Headers(&mut headers));
        let mut outcome = outcome.clone();
        outcome.trace_id = telemetry::trace_id(&span);
        let props = amqp::properties(scimrelay_proto::TYPE_OUTCOME, headers);
        self.publisher
            .publish(OUTCOMES_EXCHANGE, &key, &outcome.encode_to_vec(), props)
            .instrument(span)
            .await?;
        metrics()
            .events
            .get_or_create(&metrics::target_and(
                &outcome.target,
                "result",
                result.name(),
            ))
            .inc();
        Ok(())
    }

    /// An undecodable message: park it and record a dead-lettered outcome so it is not silent.
    async fn park_poison(&self, raw: lapin::message::Delivery) -> anyhow::Result<()> {
        tracing::error!(target = %self.target.config.id, bytes = raw.data.len(), "undecodable message parked in the dead-letter queue");
        self.park(
            &raw.data,
            raw.routing_key.as_str(),
            "application/octet-stream",
        )
        .await?;
        let now = now_ms();
        // No event id can be read from it, so it gets one derived from where it came from and
        // what it holds: two different poison messages are two outcomes, a redelivered one is
        // the same one.
        let mut fingerprint = raw.routing_key.as_str().as_bytes().to_vec();
        fingerprint.extend_from_slice(&raw.data);
        let outcome = Outcome {
            event_id: format!("undecodable-{:016x}", amqp::fnv1a(&fingerprint)),
            target: self.target.config.id.clone(),
            provider: self.target.config.provider.as_str().to_owned(),
            result: OutcomeResult::DeadLettered as i32,
            detail: "undecodable message (not a scimrelay.v1.Delivery); parked in scimrelay.dead"
                .into(),
            attempt: 1,
            finished_at_ms: now,
            ..Default::default()
        };
        self.publish_outcome(&outcome).await?;
        raw.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// The subject's ledger entry: this process's own, else the status service's (a restart or
    /// a shard failover must still recognise stale versions).
    async fn ledger_entry(&self, subject: &str) -> Option<LedgerEntry> {
        let t = &self.target;
        let local = t.ledger.get(subject);
        if local.as_ref().is_some_and(|e| e.applied_version > 0) {
            return local;
        }
        match self.lookup.get(&t.config.id, subject).await {
            Some(remote) if remote.applied_version > 0 => {
                t.ledger.record(subject, remote.clone());
                Some(remote)
            }
            _ => local,
        }
    }

    /// Converges one delivery (one attempt), in a `converge` span.
    async fn process(&self, delivery: &Delivery, released: bool) -> Step {
        let span = tracing::info_span!(
            "converge",
            "scimrelay.target" = %self.target.config.id,
            "scimrelay.attempt" = delivery.attempt + 1,
            "scimrelay.decision" = tracing::field::Empty,
        );
        let step = self
            .process_in_span(delivery, released)
            .instrument(span.clone())
            .await;
        span.record(
            "scimrelay.decision",
            match &step {
                Step::Done(o) => OutcomeResult::try_from(o.result)
                    .unwrap_or(OutcomeResult::Unspecified)
                    .name(),
                Step::Hold { .. } => "held",
                Step::Retry { .. } => "retry",
            },
        );
        step
    }

    async fn process_in_span(&self, delivery: &Delivery, released: bool) -> Step {
        let t = &self.target;
        let event = delivery.event.clone().unwrap_or_default();
        let subject = event.subject_id().to_owned();
        let kind = event.kind();
        let attempt = delivery.attempt + 1;
        let mut outcome = Outcome {
            event_id: event.id.clone(),
            target: t.config.id.clone(),
            provider: t.config.provider.as_str().to_owned(),
            tenant: event.tenant.clone(),
            subject_kind: event.subject_kind() as i32,
            subject_id: subject.clone(),
            version: event.version,
            kind: event.kind,
            accepted_at_ms: delivery.accepted_at_ms,
            attempt,
            ..Default::default()
        };
        let plan = event.plan || t.config.mode == TargetMode::Plan;
        let entry = self.ledger_entry(&subject).await;
        let fingerprint = fingerprint(&event);
        if let Some(e) = entry.as_ref().filter(|_| !plan) {
            if e.applied_version >= event.version {
                outcome.result = OutcomeResult::Superseded as i32;
                outcome.remote_id = e.remote_id.clone();
                outcome.detail = format!(
                    "version {} already applied (event has {})",
                    e.applied_version, event.version
                );
                return Step::Done(Box::new(finish(outcome)));
            }
            if e.fingerprint == fingerprint && e.applied_version > 0 {
                t.ledger.record(
                    &subject,
                    LedgerEntry {
                        applied_version: event.version,
                        ..e.clone()
                    },
                );
                outcome.result = OutcomeResult::Succeeded as i32;
                outcome.operation = Operation::Noop as i32;
                outcome.remote_id = e.remote_id.clone();
                outcome.detail =
                    "desired state unchanged since the last applied version; nothing sent".into();
                return Step::Done(Box::new(finish(outcome)));
            }
        }
        let guard = &t.config.deprovision_guard;
        if guard.enabled && !plan && !released && deprovisions(&event, entry.as_ref()) {
            match self
                .guard
                .admit(&t.config.id, &subject, &event.id, guard)
                .await
            {
                Admission::Admitted => {}
                Admission::Held(reason) => return Step::Hold { reason },
                // Never unguarded: the deprovisioning waits until the guard can be asked. Not
                // the event's fault, so the attempt is not counted.
                Admission::Unavailable(why) => {
                    return Step::Retry {
                        wait: backoff(
                            t.config.retry.base_delay_ms,
                            t.config.retry.max_delay_ms,
                            attempt,
                            None,
                        ),
                        attempt: delivery.attempt,
                        reason: why,
                        class: "guard_unavailable",
                    };
                }
            }
        }
        let exec = Exec::new(t.io.clone(), self.provider.clone(), plan).with_target(&t.config.id);
        let result = self
            .provider
            .converge(ConvergeInput {
                target: &t.config,
                event: &event,
                entry: entry.as_ref(),
                ledger: &t.ledger,
                exec: &exec,
            })
            .await;
        outcome.http_status = u32::from(exec.last_status());
        match result {
            Ok(done) => {
                outcome.operation = done.operation as i32;
                outcome.remote_id = done.remote_id.clone();
                outcome.detail = done.detail;
                if plan {
                    outcome.result = OutcomeResult::Planned as i32;
                    outcome.planned = exec.planned();
                } else {
                    outcome.result = OutcomeResult::Succeeded as i32;
                    let active = kind == EventKind::UserUpserted
                        && event.user.as_ref().is_some_and(|u| u.active);
                    t.ledger.record(
                        &subject,
                        LedgerEntry {
                            remote_id: done.remote_id,
                            applied_version: event.version,
                            active,
                            fingerprint,
                        },
                    );
                }
                Step::Done(Box::new(finish(outcome)))
            }
            Err(err) => {
                apply_error(&mut outcome, &err);
                let retry = &t.config.retry;
                match err.class {
                    FailureClass::Permanent => {
                        outcome.result = OutcomeResult::Failed as i32;
                        Step::Done(Box::new(finish(outcome)))
                    }
                    FailureClass::Unsupported => {
                        outcome.result = OutcomeResult::Unsupported as i32;
                        Step::Done(Box::new(finish(outcome)))
                    }
                    // A quarantined target (revoked token, outage) is not the event's fault:
                    // the attempt is not counted, so waiting out a quarantine never
                    // dead-letters anything.
                    FailureClass::Retry if t.io.breaker.quarantined().is_some() => Step::Retry {
                        wait: backoff(
                            retry.base_delay_ms,
                            retry.max_delay_ms,
                            attempt,
                            err.retry_after_ms,
                        ),
                        attempt: delivery.attempt,
                        reason: format!("target quarantined: {}", err.detail),
                        class: "quarantined",
                    },
                    FailureClass::Retry if attempt >= retry.max_attempts => {
                        outcome.result = OutcomeResult::DeadLettered as i32;
                        outcome.detail =
                            format!("gave up after {attempt} attempts: {}", outcome.detail);
                        Step::Done(Box::new(finish(outcome)))
                    }
                    FailureClass::Retry => Step::Retry {
                        wait: backoff(
                            retry.base_delay_ms,
                            retry.max_delay_ms,
                            attempt,
                            err.retry_after_ms,
                        ),
                        attempt,
                        class: retry_class(outcome.http_status),
                        reason: err.detail,
                    },
                }
            }
        }
    }
}

/// Whether applying `event` takes access away from a user who has it, which the
/// mass-deprovisioning guard counts: a deactivation (unless the ledger says the user is already
/// inactive), a deletion, or an upsert with `active: false` of a user the ledger knows as active.
fn deprovisions(event: &IdentityEvent, entry: Option<&LedgerEntry>) -> bool {
    match event.kind() {
        EventKind::UserDeactivated => entry.is_none_or(|e| e.active),
        EventKind::UserDeleted => true,
        EventKind::UserUpserted => {
            event.user.as_ref().is_some_and(|u| !u.active) && entry.is_some_and(|e| e.active)
        }
        _ => false,
    }
}

/// What processing one message led to.
enum Step {
    /// A terminal outcome.
    Done(Box<Outcome>),
    /// Held by the mass-deprovisioning guard until an operator releases or drops it.
    Hold {
        /// Which limit it would exceed.
        reason: String,
    },
    /// A transient failure: send a copy to a delay tier.
    Retry {
        /// The backoff wanted.
        wait: Duration,
        /// Attempts made so far.
        attempt: u32,
        /// Why, for the log.
        reason: String,
        /// Why, as a metrics label and span attribute (no free text).
        class: &'static str,
    },
}

/// A retry's reason as a bounded label: `throttled`, `http_5xx`, `no_response`, `http_4xx`.
fn retry_class(http_status: u32) -> &'static str {
    match http_status {
        0 => "no_response",
        429 => "throttled",
        500..=599 => "http_5xx",
        _ => "http_4xx",
    }
}

fn finish(mut o: Outcome) -> Outcome {
    o.finished_at_ms = now_ms();
    o.latency_ms = u64::try_from(o.finished_at_ms - o.accepted_at_ms).unwrap_or(0);
    o
}

fn apply_error(outcome: &mut Outcome, err: &ConvergeError) {
    outcome.http_status = u32::from(err.http_status);
    outcome.scim_type = err.scim_type.clone();
    outcome.detail = err.detail.clone();
}

/// Full-jitter exponential backoff: uniform in [0, min(cap, base·2^(attempt-1))], but never
/// shorter than a wait the provider asked for.
pub(crate) fn backoff(
    base_ms: u64,
    cap_ms: u64,
    attempt: u32,
    retry_after_ms: Option<u64>,
) -> Duration {
    let exp = base_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(30))
        .min(cap_ms);
    let jittered = rand::rng().random_range(0..=exp);
    Duration::from_millis(jittered.max(retry_after_ms.unwrap_or(0)))
}

/// A stable fingerprint of an event's desired state (kind + subject state), for no-op skipping.
/// FNV-1a over the protobuf encoding (maps encode in key order), so it survives restarts.
fn fingerprint(event: &scimrelay_proto::v1::IdentityEvent) -> u64 {
    let mut bytes = event.kind.to_le_bytes().to_vec();
    if let Some(u) = &event.user {
        bytes.extend(u.encode_to_vec());
    }
    if let Some(g) = &event.group {
        bytes.extend(g.encode_to_vec());
    }
    amqp::fnv1a(&bytes)
}

/// Publishes each target's report every [`REPORT_INTERVAL`] until the session ends.
async fn report_loop(
    targets: Vec<Arc<TargetRuntime>>,
    publisher: Publisher,
    shutdown: CancellationToken,
    lost: CancellationToken,
) {
    let replica = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
        std::process::id()
    );
    loop {
        for t in &targets {
            crate::exec::observe_gauges(&t.config.id, &t.io);
            let (waits, wait_ms) = t.io.limits.waits();
            let reason = t.io.breaker.quarantined();
            let report = scimrelay_proto::v1::TargetReport {
                target: t.config.id.clone(),
                provider: t.config.provider.as_str().to_owned(),
                replica: replica.clone(),
                reported_at_ms: now_ms(),
                throttle_waits: waits,
                throttle_wait_ms: wait_ms,
                quarantined: reason.is_some(),
                quarantine_reason: reason.unwrap_or_default(),
                quarantined_since_ms: t.io.breaker.quarantined_since_ms().unwrap_or(0),
                concurrency_limit: t.io.limits.window() as u32,
                in_flight: t.io.limits.in_flight(),
                shards: u32::from(t.config.shards),
            };
            let props =
                amqp::properties(scimrelay_proto::TYPE_TARGET_REPORT, FieldTable::default());
            if let Err(e) = publisher
                .publish(
                    amqp::REPORTS_EXCHANGE,
                    &t.config.id,
                    &report.encode_to_vec(),
                    props,
                )
                .await
            {
                tracing::debug!(error = %e, "target report not published");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        for attempt in 1..20 {
            let d = backoff(100, 5_000, attempt, None);
            assert!(d <= Duration::from_millis(5_000));
        }
        assert!(backoff(100, 5_000, 1, Some(7_000)) >= Duration::from_millis(7_000));
        // Jitter: not always the same value.
        let samples: std::collections::HashSet<_> =
            (0..50).map(|_| backoff(100, 60_000, 8, None)).collect();
        assert!(samples.len() > 10);
    }

    #[test]
    fn the_guard_counts_only_what_takes_access_away() {
        use scimrelay_proto::v1::UserState;
        let event = |kind: EventKind, active: bool| IdentityEvent {
            kind: kind as i32,
            user: Some(UserState {
                id: "u1".into(),
                active,
                ..Default::default()
            }),
            ..Default::default()
        };
        let entry = |active: bool| LedgerEntry {
            remote_id: "r1".into(),
            applied_version: 1,
            active,
            fingerprint: 0,
        };
        let (on, off) = (entry(true), entry(false));
        let deactivated = event(EventKind::UserDeactivated, false);
        assert!(deprovisions(&deactivated, None), "unknown user: counted");
        assert!(deprovisions(&deactivated, Some(&on)));
        assert!(!deprovisions(&deactivated, Some(&off)), "already inactive");
        assert!(deprovisions(
            &event(EventKind::UserDeleted, false),
            Some(&off)
        ));
        let inactive_upsert = event(EventKind::UserUpserted, false);
        assert!(deprovisions(&inactive_upsert, Some(&on)));
        assert!(!deprovisions(&inactive_upsert, None), "created inactive");
        assert!(!deprovisions(
            &event(EventKind::UserUpserted, true),
            Some(&on)
        ));
        assert!(!deprovisions(
            &event(EventKind::GroupDeleted, false),
            Some(&on)
        ));
    }

    #[test]
    fn fingerprint_tracks_state_not_version() {
        use scimrelay_proto::v1::{IdentityEvent, UserState};
        let mut a = IdentityEvent {
            kind: EventKind::UserUpserted as i32,
            version: 1,
            user: Some(UserState {
                id: "u".into(),
                user_name: "a".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let f1 = fingerprint(&a);
        a.version = 2;
        a.id = "other".into();
        assert_eq!(fingerprint(&a), f1);
        if let Some(u) = a.user.as_mut() {
            u.title = "Boss".into();
        }
        assert_ne!(fingerprint(&a), f1);
    }
}
