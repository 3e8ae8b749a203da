//! Consumes `scimrelay.status` in batches: up to [`BATCH_MAX`] messages or [`BATCH_WINDOW`],
//! one transaction, then one multiple-ack. Reconnects with backoff when the broker goes away.
//!
//! **A record the database refuses** (a NUL byte in a text field from a hostile server, which
//! PostgreSQL's `TEXT` rejects; a value over a limit) must not hold the batch forever: when a
//! batch fails with a database error, its records are written one at a time; each one the
//! database refuses on its own is **parked** — the message is published to
//! `scimrelay.dead-letter` with the reason in `x-scimrelay-parked-reason`, counted in
//! `scimrelay_status_parked_total` — and an outcome is still recorded for its event, with its
//! text fields' control characters replaced and a note saying so, so no event loses its one
//! terminal outcome. A message that is not a scimrelay message at all is parked the same way.
//! When every record of a batch fails alone, the database itself is failing: nothing is acked
//! and the batch is delivered again.
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

use crate::store::{Record, Store, StoreError};

/// Most outcomes written in one transaction.
pub const BATCH_MAX: usize = 500;
/// Longest an outcome waits for its batch to fill.
pub const BATCH_WINDOW: Duration = Duration::from_millis(20);
/// Unacked outcomes the broker may push ahead (two batches, so one fills while one is written).
const PREFETCH: u16 = 1000;
/// Deliveries of one message after which it is parked rather than tried again: a message that
/// keeps stopping the service would otherwise come back forever (the status queue has no
/// delivery limit of its own).
pub const MAX_DELIVERIES: u64 = 10;

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
    let publisher = amqp::Publisher::new(&conn).await?;
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
        let batch = match next_batch(&mut consumer, shutdown).await {
            None => break Ok(()),
            Some(Err(e)) => break Err(e),
            Some(Ok(batch)) => batch,
        };
        let batch_span = tracing::info_span!(
            parent: None,
            "write outcomes",
            "otel.kind" = "internal",
            "db.operation.name" = "write",
            "messaging.batch.message_count" = batch.len(),
            "scimrelay.inserted" = tracing::field::Empty,
            "scimrelay.duplicates" = tracing::field::Empty,
        );
        let Taken {
            records,
            origin,
            spans,
        } = take(&publisher, &batch, &batch_span).await?;
        // Not acked on failure: the channel closes and the broker redelivers the batch.
        let started = std::time::Instant::now();
        let written = match store.write(&records).instrument(batch_span.clone()).await {
            Ok(w) => w,
            Err(e) if refused(&e) => {
                tracing::warn!(error = %e, records = records.len(), "the store refused a batch; writing its records one at a time");
                one_by_one(store, &publisher, &batch, &origin, &records)
                    .instrument(batch_span.clone())
                    .await?
            }
            Err(e) => return Err(e.into()),
        };
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

/// The next batch: the first message, waited for until `shutdown` (then `None`), and those that
/// arrive within [`BATCH_WINDOW`] after it, up to [`BATCH_MAX`]. An error when the consumer
/// fails or the broker cancels it.
async fn next_batch(
    consumer: &mut lapin::Consumer,
    shutdown: &CancellationToken,
) -> Option<anyhow::Result<Vec<lapin::message::Delivery>>> {
    let first = tokio::select! {
        _ = shutdown.cancelled() => return None,
        m = consumer.next() => m,
    };
    let mut batch = match first {
        Some(Ok(d)) => vec![d],
        Some(Err(e)) => return Some(Err(anyhow::anyhow!("consumer: {e}"))),
        None => return Some(Err(anyhow::anyhow!("consumer cancelled by the broker"))),
    };
    let deadline = tokio::time::Instant::now() + BATCH_WINDOW;
    while batch.len() < BATCH_MAX {
        match tokio::time::timeout_at(deadline, consumer.next()).await {
            Ok(Some(Ok(d))) => batch.push(d),
            _ => break,
        }
    }
    Some(Ok(batch))
}

/// The records of a batch that can be stored, each with its message and its span.
struct Taken {
    /// The records to write, in message order.
    records: Vec<Record>,
    /// For each record, the index of its message in the batch (parked messages have none).
    origin: Vec<usize>,
    /// For each record, its `record outcome` span, open until the batch is committed.
    spans: Vec<tracing::Span>,
}

/// Decodes a batch: parks the messages that were delivered too often or are not scimrelay
/// messages, and opens a span per record, linked from `batch_span` (see the module docs).
async fn take(
    publisher: &amqp::Publisher,
    batch: &[lapin::message::Delivery],
    batch_span: &tracing::Span,
) -> anyhow::Result<Taken> {
    let batch_cx = {
        use opentelemetry::trace::TraceContextExt as _;
        batch_span.context().span().span_context().clone()
    };
    let mut taken = Taken {
        records: Vec::with_capacity(batch.len()),
        origin: Vec::with_capacity(batch.len()),
        spans: Vec::with_capacity(batch.len()),
    };
    for (i, d) in batch.iter().enumerate() {
        let deliveries = amqp::delivery_count(&d.properties);
        if deliveries >= MAX_DELIVERIES {
            let reason = format!(
                "delivered {deliveries} times without being stored (it may stop the status service)"
            );
            park(publisher, d, &reason).await?;
            continue;
        }
        let Some(record) = decode(d) else {
            park(publisher, d, "not a scimrelay outcome or held event").await?;
            continue;
        };
        taken.origin.push(i);
        let span = record_span(d, &record);
        if batch_cx.is_valid() {
            span.add_link(batch_cx.clone());
        }
        taken.spans.push(span);
        taken.records.push(record);
    }
    Ok(taken)
}

/// The `record outcome` span of one message: a child of the connector's publish.
fn record_span(d: &lapin::message::Delivery, record: &Record) -> tracing::Span {
    let (kind, target, result) = match record {
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
    span
}

/// Whether the database refused what it was given (rather than failing): a database error, as
/// opposed to a lost connection or an exhausted pool.
fn refused(e: &StoreError) -> bool {
    matches!(e, StoreError::Db(sqlx::Error::Database(_)))
}

/// Writes each record alone; parks those the database refuses (see the module docs). Errors
/// when every record failed (the database is failing, not one record).
async fn one_by_one(
    store: &Store,
    publisher: &amqp::Publisher,
    batch: &[lapin::message::Delivery],
    origin: &[usize],
    records: &[Record],
) -> anyhow::Result<crate::store::Written> {
    let mut written = crate::store::Written::default();
    let mut refusals = Vec::new();
    for (i, record) in records.iter().enumerate() {
        match store.write(std::slice::from_ref(record)).await {
            Ok(w) => {
                written.inserted += w.inserted;
                written.duplicates += w.duplicates;
                written.ignored += w.ignored;
            }
            Err(e) if refused(&e) => refusals.push((i, e)),
            Err(e) => return Err(e.into()),
        }
    }
    if !records.is_empty() && refusals.len() == records.len() {
        anyhow::bail!(
            "the store refused every record of the batch: {}",
            refusals[0].1
        );
    }
    for (i, e) in refusals {
        let reason = format!("the status store refused it: {e}");
        park(publisher, &batch[origin[i]], &reason).await?;
        if let Record::Outcome(o) = &records[i] {
            let clean = Record::Outcome(sanitized(o));
            if let Err(e) = store.write(std::slice::from_ref(&clean)).await {
                tracing::error!(error = %e, event_id = %printable(&o.event_id), "even the sanitized outcome was refused; only the parked message remains");
            }
        }
    }
    Ok(written)
}

/// Control characters (a NUL byte above all) replaced, for a store that refuses them.
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The outcome with its text fields made printable and a note that it was.
fn sanitized(o: &Outcome) -> Outcome {
    let mut c = o.clone();
    for f in [
        &mut c.event_id,
        &mut c.target,
        &mut c.provider,
        &mut c.tenant,
        &mut c.subject_id,
        &mut c.scim_type,
        &mut c.remote_id,
        &mut c.trace_id,
    ] {
        *f = printable(f);
    }
    c.detail = format!(
        "{}{}[stored with control characters replaced: the status store refused the outcome as published; the original is parked in scimrelay.dead]",
        printable(&o.detail),
        if o.detail.is_empty() { "" } else { " " }
    );
    c.planned.clear();
    c
}

/// Publishes a message the status service cannot store to the parking lot, with the reason.
async fn park(
    publisher: &amqp::Publisher,
    d: &lapin::message::Delivery,
    reason: &str,
) -> anyhow::Result<()> {
    let mut headers = d.properties.headers().clone().unwrap_or_default();
    headers.insert(
        PARKED_REASON_HEADER.into(),
        lapin::types::AMQPValue::LongString(printable(reason).into()),
    );
    let message_type = amqp::header_str(&d.properties, scimrelay_proto::HEADER_MESSAGE_TYPE)
        .unwrap_or("application/octet-stream")
        .to_owned();
    let props = amqp::properties(&message_type, headers);
    publisher
        .publish(amqp::DEAD_EXCHANGE, "status", &d.data, props)
        .await?;
    metrics()
        .status_parked
        .get_or_create(&vec![("reason", parked_label(reason).to_owned())])
        .inc();
    tracing::error!(bytes = d.data.len(), reason = %printable(reason), "a message the status store cannot keep was parked in scimrelay.dead");
    Ok(())
}

/// The reason of a parked message as a bounded metrics label.
fn parked_label(reason: &str) -> &'static str {
    if reason.starts_with("the status store refused") {
        "refused"
    } else if reason.starts_with("delivered") {
        "redelivered"
    } else {
        "undecodable"
    }
}

/// The header carrying why the status service parked a message.
pub const PARKED_REASON_HEADER: &str = "x-scimrelay-parked-reason";

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
            tracing::error!("held event without its delivery");
            None
        }
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(error = %e, message_type = kind, "undecodable message");
            None
        }
    }
}
