//! Consumes `scimrelay.status` in batches: up to [`BATCH_MAX`] messages or [`BATCH_WINDOW`],
//! one transaction, then one multiple-ack. Reconnects with backoff when the broker goes away.
//!
//! The queue carries outcomes and the held events of the mass-deprovisioning guard (header
//! `x-scimrelay-type`, see status.proto); both go through the same batch, so a held event and a
//! later outcome of the same (event, target) are applied in the order they were published.
//!
//! Tracing of batched writes: each message gets its own `record outcome` span, a child of the
//! connector's outcome publish (so the event's trace ends with the status write), open from
//! the moment the message is taken until its batch is committed. The transaction itself is one
//! `write outcomes` span in a trace of its own, linked from every per-message span, so a slow
//! commit is visible from each event's trace and the batch's size and duration are one span.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use scimrelay_core::amqp::{self, STATUS_QUEUE};
use scimrelay_core::health::Readiness;
use scimrelay_core::metrics::{self, metrics};
use scimrelay_core::telemetry;
use scimrelay_proto::v1::{HeldEvent, Outcome};

use crate::store::{Record, Store};

/// Most outcomes written in one transaction.
pub const BATCH_MAX: usize = 500;
/// Longest an outcome waits for its batch to fill.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Unacked outcomes the broker may push ahead (two batches, so one fills while one is written).
const PREFETCH: u16 = 1000;

/// Runs until `shutdown`.
pub async fn run(url: String, store: Store, ready: Readiness, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match session(&url, &store, &ready, &shutdown).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "outcome consumer stopped")
            }
        }
        ready.set(false);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(
    url: &str,
    store: &Store,
    ready: &Readiness,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let conn = amqp::connect(url, "scimrelay-status").await?;
    amqp::declare_all(&conn, []).await?;
    let ch = conn.create_channel().await?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            STATUS_QUEUE.into(),
            "scimrelay-status".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    ready.set(true);
    tracing::info!("consuming outcomes");
    let result = loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            m = consumer.next() => m,
        };
        let mut batch = match first {
            Some(Ok(d)) => vec![d],
            Some(Err(e)) => break Err(anyhow::anyhow!("consumer: {e}")),
            None => break Err(anyhow::anyhow!("consumer cancelled by the broker")),
        };
        let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
        while batch.len() < BATCH_MAX {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(Ok(d))) => batch.push(d),
                _ => break,
            }
        }
        let batch_span = tracing::info_span!(
            parent: None,
            "write outcomes",
            "otel.kind" = "internal",
            "db.operation.name" = "write",
            "messaging.batch.message_count" = batch.len(),
            "scimrelay.inserted" = tracing::field::Empty,
            "scimrelay.duplicates" = tracing::field::Empty,
        );
        let batch_cx = {
            use opentelemetry::trace::TraceContextExt as _;
            batch_span.context().span().span_context().clone()
        };
        let mut records: Vec<Record> = Vec::with_capacity(batch.len());
        let mut spans = Vec::with_capacity(batch.len());
        for d in &batch {
            let Some(record) = decode(d) else { continue };
            let (kind, target, result) = match &record {
                Record::Outcome(o) => (
                    "outcome",
                    o.target.clone(),
                    scimrelay_proto::v1::OutcomeResult::try_from(o.result)
                        .unwrap_or(scimrelay_proto::v1::OutcomeResult::Unspecified)
                        .name(),
                ),
                Record::Held(h) => (
                    "held",
                    h.delivery
                        .as_ref()
                        .map(|d| d.target.clone())
                        .unwrap_or_default(),
                    "held",
                ),
                _ => ("record", String::new(), "other"),
            };
            let span = tracing::info_span!(
                parent: None,
                "record outcome",
                "otel.name" = format!("record {kind}"),
                "otel.kind" = "consumer",
                "messaging.system" = "rabbitmq",
                "messaging.destination.name" = STATUS_QUEUE,
                "scimrelay.target" = %target,
                "scimrelay.result" = result,
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
            );
            telemetry::set_parent(&span, &amqp::ReadHeaders::of(&d.properties));
            if batch_cx.is_valid() {
                span.add_link(batch_cx.clone());
            }
            spans.push(span);
            records.push(record);
        }
        // Not acked on failure: the channel closes and the broker redelivers the batch.
        let started = std::time::Instant::now();
        let written = store.write(&records).instrument(batch_span.clone()).await?;
        batch_span.record("scimrelay.inserted", written.inserted);
        batch_span.record("scimrelay.duplicates", written.duplicates);
        observe(&records, started.elapsed());
        drop(spans);
        drop(batch_span);
        if let Some(last) = batch.last() {
            last.acker.ack(BasicAckOptions { multiple: true }).await?;
        }
        tracing::debug!(
            messages = batch.len(),
            inserted = written.inserted,
            duplicates = written.duplicates,
            "recorded"
        );
    };
    amqp::close(&conn, "status consumer stopping").await;
    result
}

/// Outcome counts per target and result, end-to-end latency, write duration.
fn observe(records: &[Record], write: Duration) {
    let m = metrics();
    m.status_write_duration
        .get_or_create(&Vec::new())
        .observe(write.as_secs_f64());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default();
    for r in records {
        if let Record::Outcome(o) = r {
            let result = scimrelay_proto::v1::OutcomeResult::try_from(o.result)
                .unwrap_or(scimrelay_proto::v1::OutcomeResult::Unspecified)
                .name();
            m.outcomes_written
                .get_or_create(&metrics::target_and(&o.target, "result", result))
                .inc();
            if o.accepted_at_ms > 0 && now >= o.accepted_at_ms {
                m.end_to_end
                    .get_or_create(&metrics::target(&o.target))
                    .observe((now - o.accepted_at_ms) as f64 / 1000.0);
            }
        }
    }
}

/// Decodes one message by its type header (an outcome when the header is absent).
fn decode(d: &lapin::message::Delivery) -> Option<Record> {
    let kind = amqp::header_str(&d.properties, scimrelay_proto::HEADER_MESSAGE_TYPE)
        .unwrap_or(scimrelay_proto::TYPE_OUTCOME);
    let decoded = match kind {
        crate::TYPE_HELD_EVENT => {
            HeldEvent::decode(d.data.as_slice()).map(|h| Record::Held(Box::new(h)))
        }
        _ => Outcome::decode(d.data.as_slice()).map(Record::Outcome),
    };
    match decoded {
        Ok(Record::Held(h)) if h.delivery.is_none() => {
            tracing::error!("held event without its delivery dropped");
            None
        }
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, message_type = kind, "undecodable message dropped");
            None
        }
    }
}
