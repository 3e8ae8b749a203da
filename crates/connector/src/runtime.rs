//! The consume → converge → outcome → ack loop, its broker sessions and its shutdown.
//!
//! By responsibility: this module holds the broker session (connect, a consumer per shard,
//! reconnect, shutdown) and per-subject ordering inside a shard; [`publish`] what a handled
//! message leaves on the broker (its outcome, a delay-tier copy, a held event, a parked copy);
//! [`report`] the periodic target reports. The processing decision is [`crate::process`] and
//! [`crate::decide`].

mod publish;
mod report;

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
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::decide::Step;
use crate::exec::TargetIo;
use crate::process::{Processor, Waiting};
use crate::provider::ProviderDefaults;
use crate::status::StatusClients;
use scimrelay_core::amqp::{self, Publisher};
use scimrelay_core::config::{ConfigError, TargetConfig};
use scimrelay_core::metrics::{self, metrics};
use scimrelay_core::telemetry;
use scimrelay_proto::v1::{Delivery, OutcomeResult};

use crate::ConnectorConfig;
use crate::provider::Provider;
use scimrelay_core::now_ms;

/// Longest wait between broker reconnection attempts.
const MAX_RECONNECT_BACKOFF: Duration = Duration::from_secs(5);
/// How long a message whose handling failed waits before it goes back to its queue.
const NACK_DELAY: Duration = Duration::from_secs(1);

/// One target's runtime state.
pub struct TargetRuntime {
    /// Its entry in the targets file.
    pub config: TargetConfig,
    /// Its outbound side (client, limits, breaker).
    pub io: Arc<TargetIo>,
    /// Why its messages wait, if they do (reported), and subjects whose failure was not
    /// recorded.
    pub waiting: Waiting,
    /// One lock per subject in process, shared by the target's shard consumers and its
    /// interactive lane.
    pub subjects: SubjectLocks,
}

/// Per-subject locks of one target in this process. A subject's messages can come from two
/// queues (its shard and the target's interactive lane, see docs/design.md "Login-time
/// provisioning"); each message holds its subject's lock from before its take until it is
/// acked, so this replica never converges one subject twice at once and a take never finds a
/// claim of this replica's own still open. Entries live while someone holds or waits for them.
#[derive(Default)]
pub struct SubjectLocks(std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

/// A held subject lock (see [`SubjectLocks`]); released when dropped.
pub struct SubjectGuard<'a> {
    locks: &'a SubjectLocks,
    subject: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    held: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl SubjectLocks {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<tokio::sync::Mutex<()>>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for the subject's lock.
    pub async fn lock(&self, subject: &str) -> SubjectGuard<'_> {
        let lock = {
            let mut map = self.map();
            // Entries nobody holds or waits for any more: a waiter cancelled while it waited
            // leaves its entry behind (its guard did not exist yet).
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(subject.to_owned()).or_default().clone()
        };
        let held = lock.clone().lock_owned().await;
        SubjectGuard {
            locks: self,
            subject: subject.to_owned(),
            lock,
            held: Some(held),
        }
    }

    /// Whether no subject is locked or waited for.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

impl Drop for SubjectGuard<'_> {
    fn drop(&mut self) {
        drop(self.held.take());
        let mut map = self.locks.map();
        // The map's reference and ours: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            map.remove(&self.subject);
        }
    }
}

/// A queue a target's messages come from.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// A shard queue (bulk work, by subject hash).
    Shard(u16),
    /// The target's interactive lane.
    Lane,
}

impl Feed {
    fn queue(self, target: &str) -> String {
        match self {
            Feed::Shard(shard) => amqp::shard_queue(target, shard),
            Feed::Lane => amqp::lane_queue(target),
        }
    }

    /// The consumer tag's last word.
    fn label(self) -> String {
        match self {
            Feed::Shard(shard) => shard.to_string(),
            Feed::Lane => amqp::LANE_WORD.to_owned(),
        }
    }
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
            let io = TargetIo::new(
                t,
                served.auth.clone(),
                defaults,
                config.replicas,
                config.max_hold,
                format!("scimrelay/{}", env!("CARGO_PKG_VERSION")),
            )
            .map_err(|e| ConfigError::Invalid {
                key: served.key.clone(),
                message: e.to_string(),
            })?;
            Ok(Arc::new(TargetRuntime {
                config: t.clone(),
                io: Arc::new(io),
                waiting: Waiting::default(),
                subjects: SubjectLocks::default(),
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

    let status = StatusClients::start(&config);
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
        // The process id in the connection name tells replicas apart in the broker's
        // connection list (and lets an operator close one replica's connection).
        match amqp::connect(
            &config.amqp_url,
            &format!(
                "{}-connector-{}",
                config.provider.as_str(),
                std::process::id()
            ),
        )
        .await
        {
            Ok(conn) => {
                backoff = Duration::from_millis(100);
                let conn = Arc::new(conn);
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
    conn: &Arc<Connection>,
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
    let parts = Arc::new(SessionParts {
        conn: conn.clone(),
        publisher: publisher.clone(),
        status: status.clone(),
        provider,
        provider_name: config.provider.to_string(),
        drain: config.drain_timeout,
        shutdown: shutdown.clone(),
        lost: lost.clone(),
    });
    for target in targets {
        let feeds = (0..target.config.shards).map(Feed::Shard);
        for feed in feeds.chain(std::iter::once(Feed::Lane)) {
            tracker.spawn(shard_loop(parts.clone(), target.clone(), feed));
        }
        tracker.spawn(sweep_references(parts.clone(), target.clone()));
    }
    ready.set(true);
    let reporter = tokio::spawn(report::report_loop(
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

/// What every shard consumer of one broker session shares.
struct SessionParts {
    conn: Arc<Connection>,
    publisher: Publisher,
    status: StatusClients,
    provider: Arc<dyn Provider>,
    provider_name: String,
    drain: Duration,
    shutdown: CancellationToken,
    lost: CancellationToken,
}

/// How often each replica asks which of a target's subjects have references to complete
/// (docs/design.md, "References"): also the window within which arrivals are merged into one
/// re-converge of their referrer.
pub const REFERENCE_SWEEP: Duration = Duration::from_secs(2);
/// How long a re-triggered subject is not answered again by the sweep (its next successful
/// record ends the lease): time for its re-trigger to travel its shard, behind whatever backlog
/// is queued there, and converge; past it, one that was lost (or could not complete) is sent
/// again. Short leases would pile duplicate re-triggers behind a bulk backlog.
pub const REFERENCE_LEASE: Duration = Duration::from_secs(300);

/// Every [`REFERENCE_SWEEP`] for the session's life: the target's subjects whose pending
/// references now point at users present there are re-triggered, each through RabbitMQ onto
/// its own shard (so it converges in order with its other messages, by its shard's owner).
async fn sweep_references(parts: Arc<SessionParts>, target: Arc<TargetRuntime>) {
    let t = &target.config;
    loop {
        tokio::select! {
            _ = parts.shutdown.cancelled() => return,
            _ = parts.lost.cancelled() => return,
            _ = tokio::time::sleep(REFERENCE_SWEEP) => {}
        }
        let due = match parts
            .status
            .record
            .due_references(&t.id, REFERENCE_LEASE)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::debug!(target = %t.id, error = %e, "reference sweep skipped");
                continue;
            }
        };
        for key in due {
            if let Err(e) = publish::retrigger(&parts.publisher, t, &key).await {
                // The lease runs out and a later sweep sends it again.
                tracing::warn!(target = %t.id, error = %e, "re-trigger not published");
                break;
            }
        }
    }
}

/// One shard queue's (or the interactive lane's) consumer for the session's life. A consumer
/// (or its channel) that stops while the connection is up is opened again after a backoff,
/// alone: the other shards and targets keep flowing. Only a lost connection ends the session.
async fn shard_loop(parts: Arc<SessionParts>, target: Arc<TargetRuntime>, feed: Feed) {
    let queue = feed.queue(&target.config.id);
    let mut backoff = Duration::from_millis(100);
    loop {
        let stopped = match open_shard(&parts, &target, feed).await {
            Ok((ctx, consumer)) => {
                ctx.run(consumer, parts.shutdown.clone(), parts.lost.clone())
                    .await
            }
            Err(e) => Err(e),
        };
        let Err(e) = stopped else { return };
        if parts.shutdown.is_cancelled() || parts.lost.is_cancelled() {
            return;
        }
        if !parts.conn.status().connected() {
            tracing::warn!(error = %e, queue = %queue, "shard consumer stopped with its connection");
            parts.lost.cancel();
            return;
        }
        tracing::warn!(error = %e, queue = %queue, retry_in_ms = backoff.as_millis() as u64, "shard consumer stopped; opening it again (other shards keep flowing)");
        tokio::select! {
            _ = parts.shutdown.cancelled() => return,
            _ = parts.lost.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_RECONNECT_BACKOFF);
    }
}

/// A channel consuming one shard queue (or the lane), with the context its messages are
/// processed in.
async fn open_shard(
    parts: &SessionParts,
    target: &Arc<TargetRuntime>,
    feed: Feed,
) -> anyhow::Result<(ShardCtx, lapin::Consumer)> {
    let channel = parts.conn.create_channel().await?;
    let prefetch = u16::try_from(target.config.concurrency.max).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let queue = feed.queue(&target.config.id);
    let tag = format!(
        "{}-{}-{}-{}",
        parts.provider_name,
        std::process::id(),
        target.config.id,
        feed.label()
    );
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let ctx = ShardCtx {
        processor: Processor {
            target: target.clone(),
            provider: parts.provider.clone(),
            sor: parts.status.record.clone(),
            guard: parts.status.guard.clone(),
            session: consumer_session(&tag),
        },
        target: target.clone(),
        publisher: parts.publisher.clone(),
        fence: CancellationToken::new(),
        lost: parts.lost.clone(),
        channel,
        tag,
        drain: parts.drain,
    };
    Ok((ctx, consumer))
}

/// A name for one shard consumer's life, unique across replicas and restarts: the subjects
/// it takes are claimed in its name (see `TakeEvent.session`), and a later consumer that finds
/// such a claim fences the subject while this one's last request may still be in flight.
fn consumer_session(tag: &str) -> String {
    static STARTED_MS: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let started = *STARTED_MS.get_or_init(scimrelay_core::now_ms);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let mut session = format!("{tag}@{host}/{started}/{n}");
    session.truncate(200);
    session
}

/// What a retry or wait copy carries over from its input besides the delivery.
#[derive(Debug, Clone, Copy)]
struct CopyMarks {
    /// Released by an operator past the mass-deprovisioning guard.
    released: bool,
    /// Replayed from the dead-letter queue (a fresh attempt budget, said in the outcome).
    replayed: bool,
}

struct ShardCtx {
    target: Arc<TargetRuntime>,
    processor: Processor,
    publisher: Publisher,
    /// Cancelled when the session ends other than by a graceful shutdown (connection or channel
    /// lost): in-flight handlers stop at their next step, so this replica sends no further
    /// request for a subject whose messages the broker is already redelivering to another
    /// consumer (their unacked messages return to the queue with the channel).
    fence: CancellationToken,
    /// Cancelled to end the whole broker session (a closed publisher channel).
    lost: CancellationToken,
    channel: Channel,
    tag: String,
    drain: Duration,
}

/// A received message with its decoded body (None: undecodable).
struct Incoming {
    raw: lapin::message::Delivery,
    decoded: Option<Delivery>,
    /// When the broker handed it to this consumer: its hold bound counts from here.
    received: tokio::time::Instant,
}

impl ShardCtx {
    async fn run(
        self,
        mut consumer: lapin::Consumer,
        shutdown: CancellationToken,
        lost: CancellationToken,
    ) -> anyhow::Result<()> {
        let me = Arc::new(self);
        // Per-subject queues of messages waiting behind one in flight, by subject ref (tenant,
        // kind and id: subjects of two tenants, or a user and a group, that share an id are
        // different subjects and run concurrently).
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
                            .map(|e| e.subject_ref())
                            .unwrap_or_default();
                        let incoming = Incoming { raw, decoded, received: tokio::time::Instant::now() };
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
        if !shutdown.is_cancelled() {
            // The shard is being handed to another consumer: stop writing for it now.
            me.fence.cancel();
        }
        // Stop deliveries, give back what never started, let in-flight work finish. On a
        // channel that is gone there is nothing to tell the broker (it has taken every unacked
        // message back), and a call on it may never answer: each call is bounded too.
        let open = me.channel.status().connected();
        if open {
            let _ = tokio::time::timeout(
                amqp::CLOSE_TIMEOUT,
                me.channel
                    .basic_cancel(me.tag.as_str().into(), BasicCancelOptions::default()),
            )
            .await;
        }
        for waiting in busy.values_mut() {
            for incoming in waiting.drain(..) {
                if !open {
                    continue;
                }
                let _ = tokio::time::timeout(
                    amqp::CLOSE_TIMEOUT,
                    incoming.raw.acker.nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    }),
                )
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
        if me.channel.status().connected() {
            amqp::close_channel(&me.channel, "shard consumer stopping").await;
        }
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
            tokio::select! {
                biased;
                () = me.fence.cancelled() => {
                    tracing::info!(target = %me.target.config.id, "session lost: in-flight message abandoned; the broker redelivers it");
                }
                handled = async {
                    let _subject = me.target.subjects.lock(&subject).await;
                    me.handle(&incoming).await
                } => {
                    if let Err(e) = handled {
                        me.failed(&incoming, &e).await;
                    }
                }
            }
            let _ = done.send(subject);
        });
    }

    /// A message whose handling failed (its outcome or copy could not be published, or the ack
    /// failed): it goes back to its queue now (nack, requeue), rather than sit unacked in a
    /// prefetch slot until the channel closes. A closed publisher channel cannot publish
    /// anything any more: the session is ended, and a new one opens a new channel.
    async fn failed(&self, incoming: &Incoming, e: &anyhow::Error) {
        tracing::warn!(error = %e, target = %self.target.config.id, "message returned to its queue; it will be delivered again");
        // Not at once: whatever failed (the broker refusing publishes, a full queue) is not
        // over in a millisecond, and a message returned at once is taken again at once.
        tokio::select! {
            () = self.fence.cancelled() => return,
            () = tokio::time::sleep(NACK_DELAY) => {}
        }
        let nack = incoming.raw.acker.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        });
        let _ = tokio::time::timeout(amqp::CLOSE_TIMEOUT, nack).await;
        if !self.publisher.is_open() {
            tracing::warn!("the publisher channel is closed; restarting the broker session");
            self.lost.cancel();
        }
    }

    /// One `consume` span per message, child of the publish that sent it (ingest's, or the
    /// retry publish of the previous attempt), so every attempt of an event is in one trace.
    async fn handle(&self, incoming: &Incoming) -> anyhow::Result<()> {
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
    async fn handle_in_span(&self, incoming: &Incoming) -> anyhow::Result<()> {
        let raw = &incoming.raw;
        let Some(delivery) = incoming.decoded.clone() else {
            return self.park_poison(raw).await;
        };
        let deliveries = amqp::delivery_count(&raw.properties);
        if deliveries + 1 >= u64::try_from(amqp::DELIVERY_LIMIT).unwrap_or(u64::MAX) {
            // The broker would drop it into the parking lot at its next return, with no
            // outcome: park it here, with one.
            return self.park_undeliverable(raw, &delivery, deliveries).await;
        }
        let started = std::time::Instant::now();
        let released = amqp::header_bool(&raw.properties, scimrelay_proto::HEADER_RELEASED);
        let replayed = amqp::header_bool(&raw.properties, scimrelay_proto::HEADER_REPLAYED);
        let mut step = self
            .processor
            .process(&delivery, released, incoming.received)
            .await;
        if let (true, Step::Done(o)) = (replayed, &mut step) {
            o.detail = format!(
                "{}{}replayed from the dead-letter queue with a fresh attempt budget",
                o.detail,
                if o.detail.is_empty() { "" } else { "; " }
            );
        }
        let marks = CopyMarks { released, replayed };
        let target = self.target.config.id.as_str();
        let result_name = step.name();
        tracing::Span::current().record("scimrelay.result", result_name);
        metrics()
            .event_duration
            .get_or_create(&metrics::target_and(target, "result", result_name))
            .observe(started.elapsed().as_secs_f64());
        match step {
            Step::Done(mut outcome) => {
                outcome.finished_at_ms = now_ms();
                outcome.latency_ms =
                    u64::try_from(outcome.finished_at_ms - outcome.accepted_at_ms).unwrap_or(0);
                if outcome.result == OutcomeResult::DeadLettered as i32 {
                    self.park(
                        &raw.data,
                        raw.routing_key.as_str(),
                        scimrelay_proto::TYPE_DELIVERY,
                    )
                    .await?;
                }
                self.publish_outcome(&outcome, &delivery.reply_to).await?;
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
                let copy = Delivery {
                    attempt,
                    ..delivery
                };
                self.delay(raw, copy, wait, &reason, class, marks).await?;
            }
            Step::Wait {
                wait,
                attempt,
                reason,
                class,
            } => {
                let copy = Delivery {
                    attempt,
                    waits: delivery.waits.saturating_add(1),
                    ..delivery
                };
                self.delay(raw, copy, wait, &reason, class, marks).await?;
            }
            Step::Quiet { note } => {
                // No subject id (a platform id may be an e-mail); the note may quote a server.
                tracing::info!(target = %target, note = %telemetry::redact(&note), "re-trigger");
            }
        }
        raw.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_subject_lock_orders_two_feeds_and_leaves_nothing_behind() {
        let locks = Arc::new(SubjectLocks::default());
        let first = locks.lock("acme/user/u-1").await;
        let other = locks.lock("acme/user/u-2").await;
        let second = {
            let locks = locks.clone();
            tokio::spawn(async move {
                let _held = locks.lock("acme/user/u-1").await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "a second message of the subject ran alongside the first"
        );
        drop(other);
        drop(first);
        second
            .await
            .expect("the second message runs once the first is done");
        assert!(locks.is_empty(), "subject locks left behind");
    }
}
