//! Consumes connector reports (`scimrelay.reports` → `scimrelay.status.reports`): the gauges a
//! store cannot derive from outcomes (throttle waits, quarantine, concurrency). Reports are
//! gauges, so the queue is bounded and drops its oldest messages rather than growing.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};
use prost::Message;
use tokio_util::sync::CancellationToken;

use scimrelay_core::amqp;
use scimrelay_proto::v1::TargetReport;

use crate::store::Store;
use crate::{REPORTS_EXCHANGE, REPORTS_QUEUE};

/// Reports kept waiting at most (a few minutes of reports from hundreds of targets).
const QUEUE_MAX_LENGTH: i64 = 10_000;

/// Declares the reports exchange and the status service's queue. Idempotent; connectors may
/// call it too before publishing.
pub async fn declare(ch: &Channel) -> Result<(), lapin::Error> {
    ch.exchange_declare(
        REPORTS_EXCHANGE.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-max-length".into(),
        AMQPValue::LongLongInt(QUEUE_MAX_LENGTH),
    );
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("drop-head".into()),
    );
    ch.queue_declare(
        REPORTS_QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        },
        args,
    )
    .await?;
    ch.queue_bind(
        REPORTS_QUEUE.into(),
        REPORTS_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Runs until `shutdown`, reconnecting with backoff.
pub async fn run(url: String, store: Store, shutdown: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match session(&url, &store, &shutdown).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "report consumer stopped")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn session(url: &str, store: &Store, shutdown: &CancellationToken) -> anyhow::Result<()> {
    let conn = amqp::connect(url, "scimrelay-status-reports").await?;
    let ch = conn.create_channel().await?;
    declare(&ch).await?;
    ch.basic_qos(100, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            REPORTS_QUEUE.into(),
            "scimrelay-status-reports".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let result = loop {
        let next = tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            m = consumer.next() => m,
        };
        let d = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => break Err(anyhow::anyhow!("consumer: {e}")),
            None => break Err(anyhow::anyhow!("consumer cancelled by the broker")),
        };
        match TargetReport::decode(d.data.as_slice()) {
            Ok(r) if !r.target.is_empty() => store.report(&r).await?,
            Ok(_) => tracing::warn!("report without a target dropped"),
            Err(e) => tracing::warn!(error = %e, "undecodable report dropped"),
        }
        d.acker.ack(BasicAckOptions::default()).await?;
    };
    amqp::close(&conn, "status report consumer stopping").await;
    result
}
