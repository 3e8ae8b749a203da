//! Keeps ingest connected to RabbitMQ: connect, declare the topology, hand out the confirm
//! channel; on loss, mark not ready (requests get 503) and reconnect with capped backoff.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use scimrelay_core::amqp::{self, Publisher};
use scimrelay_core::config::{TargetsFile, redact_url};

/// How often a live connection is checked.
const WATCH_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A handle to the current broker session, if any.
#[derive(Clone)]
pub struct Broker {
    publisher: Arc<RwLock<Option<Publisher>>>,
}

impl Broker {
    /// Starts the connection supervisor in the background.
    pub fn start(url: String, targets: TargetsFile, shutdown: CancellationToken) -> Self {
        let publisher = Arc::new(RwLock::new(None));
        let broker = Broker {
            publisher: publisher.clone(),
        };
        tokio::spawn(supervise(url, targets, publisher, shutdown));
        broker
    }

    /// The confirm channel, when connected.
    pub fn publisher(&self) -> Option<Publisher> {
        let guard = self.publisher.read().ok()?;
        guard.as_ref().filter(|p| p.is_open()).cloned()
    }

    /// Whether ingest can accept events.
    pub fn ready(&self) -> bool {
        self.publisher().is_some()
    }
}

async fn supervise(
    url: String,
    targets: TargetsFile,
    slot: Arc<RwLock<Option<Publisher>>>,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(100);
    while !shutdown.is_cancelled() {
        match session(&url, &targets).await {
            Ok((conn, publisher)) => {
                tracing::info!(url = %redact_url(&url), "connected to RabbitMQ");
                backoff = Duration::from_millis(100);
                if let Ok(mut s) = slot.write() {
                    *s = Some(publisher.clone());
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
