//! Consumes `scimrelay.status` in batches: up to [`BATCH_MAX`] messages or [`BATCH_WINDOW`],
//! one transaction, then one multiple-ack. Reconnects with backoff when the broker goes away.
//!
//! The queue carries outcomes and the held events of the mass-deprovisioning guard (header
//! `x-scimrelay-type`, see status.proto); both go through the same batch, so a held event and a
//! later outcome of the same (event, target) are applied in the order they were published.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use prost::Message;
use tokio_util::sync::CancellationToken;

use scimrelay_core::amqp::{self, STATUS_QUEUE};
use scimrelay_core::health::Readiness;
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
        let records: Vec<Record> = batch.iter().filter_map(decode).collect();
        // Not acked on failure: the channel closes and the broker redelivers the batch.
        let written = store.write(&records).await?;
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
    let _ = conn.close(200, "status consumer stopping".into()).await;
    result
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
