//! Keeps ingest connected to RabbitMQ: connect, declare the topology, hand out the confirm
//! channel and the connection's reply queue; on loss, mark not ready (requests get 503) and
//! reconnect with capped backoff.
//!
//! The reply queue (`scimrelay.reply.<uuid>`, exclusive and auto-deleted, so it lives exactly
//! as long as the connection) receives the outcomes of copies published by waiting requests;
//! its consumer hands them to [`Waiters::deliver`] (see [`crate::wait`]).

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt as _;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use prost::Message as _;
use tokio_util::sync::CancellationToken;

use scimrelay_core::amqp::{self, Publisher};
use scimrelay_core::config::{TargetsFile, redact_url};
use scimrelay_proto::v1::Outcome;

use crate::wait::Waiters;

/// How often a live connection is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The current broker session: its confirm channel and, when it could be set up, its reply
/// queue.
#[derive(Clone)]
pub struct Session {
    /// The confirm channel.
    pub publisher: Publisher,
    /// The reply queue's name (`None`: a request asking to wait is answered at once, 202).
    pub reply_queue: Option<String>,
}

/// A handle to the current broker session, if any.
#[derive(Clone)]
pub struct Broker {
    session: Arc<RwLock<Option<Session>>>,
}

impl Broker {
    /// Starts the connection supervisor in the background; outcomes arriving on the reply
    /// queue go to `waiters`.
    pub fn start(
        url: String,
        targets: TargetsFile,
        waiters: Arc<Waiters>,
        shutdown: CancellationToken,
    ) -> Self {
        let session = Arc::new(RwLock::new(None));
        let broker = Broker {
            session: session.clone(),
        };
        tokio::spawn(supervise(url, targets, waiters, session, shutdown));
        broker
    }

    /// The current session, when connected.
    pub fn session(&self) -> Option<Session> {
        let guard = self.session.read().ok()?;
        guard.as_ref().filter(|s| s.publisher.is_open()).cloned()
    }

    /// The confirm channel, when connected.
    pub fn publisher(&self) -> Option<Publisher> {
        self.session().map(|s| s.publisher)
    }

    /// Whether ingest can accept events.
    pub fn ready(&self) -> bool {
        self.publisher().is_some()
    }
}

async fn supervise(
    url: String,
    targets: TargetsFile,
    waiters: Arc<Waiters>,
    slot: Arc<RwLock<Option<Session>>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match session(&url, &targets).await {
            Ok((conn, publisher)) => {
                tracing::info!(url = %redact_url(&url), "connected to RabbitMQ");
                backoff = Duration::from_millis(100);
                let reply_queue = match replies(&conn, waiters.clone()).await {
                    Ok(q) => Some(q),
                    Err(e) => {
                        tracing::warn!(error = %e, "no reply queue: requests that ask to wait for outcomes are answered at once (202)");
                        None
                    }
                };
                if let Ok(mut s) = slot.write() {
                    *s = Some(Session {
                        publisher: publisher.clone(),
                        reply_queue,
                    });
                }
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(WATCH_INTERVAL) => {}
                    }
                    if !conn.status().connected() || !publisher.is_open() {
                        tracing::warn!("lost the RabbitMQ connection; reconnecting");
                        break;
                    }
                }
                if let Ok(mut s) = slot.write() {
                    *s = None;
                }
                publisher.close().await;
                if shutdown.is_cancelled() {
                    amqp::close(&conn, "ingest shutting down").await;
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "RabbitMQ unavailable");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn session(
    url: &str,
    targets: &TargetsFile,
) -> Result<(lapin::Connection, Publisher), amqp::AmqpError> {
    let conn = amqp::connect(url, "scimrelay-ingest").await?;
    amqp::declare_all(&conn, &targets.targets).await?;
    let publisher = Publisher::new(&conn).await?;
    Ok((conn, publisher))
}

/// Declares this connection's reply queue and consumes it (no acks: a reply is worth nothing
/// once its request stopped waiting), handing every outcome to `waiters`; returns its name.
async fn replies(
    conn: &lapin::Connection,
    waiters: Arc<Waiters>,
) -> Result<String, amqp::AmqpError> {
    let ch = conn.create_channel().await?;
    let name = format!("{}{}", amqp::REPLY_PREFIX, uuid::Uuid::new_v4().simple());
    ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..QueueDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    let mut consumer = ch
        .basic_consume(
            name.as_str().into(),
            "ingest-replies".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    tokio::spawn(async move {
        // Ends with the channel (the connection was lost or closed).
        while let Some(Ok(d)) = consumer.next().await {
            match Outcome::decode(d.data.as_slice()) {
                Ok(o) => waiters.deliver(o),
                Err(e) => tracing::warn!(error = %e, "an undecodable reply was dropped"),
            }
        }
        drop(ch);
    });
    Ok(name)
}
