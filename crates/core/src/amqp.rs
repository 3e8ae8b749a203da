//! RabbitMQ: connection, the idempotent topology below, and confirmed publishing.
//!
//! Topology (every name derives from the constants below, so ingest and connectors agree):
//! - `scimrelay.events` (topic): one message per (event, target), routing key
//!   `<provider>.<target>.<shard>`; shard = FNV-1a(subject id) mod the target's shard count.
//! - `scimrelay.<target>.<shard>`: durable **quorum** queues with **single active consumer**, so
//!   whatever the number of connector replicas, one consumer at a time owns a subject. A delivery
//!   limit dead-letters a message that keeps crashing consumers instead of looping forever.
//! - `scimrelay.<target>.now`: the target's **interactive lane** (routing key
//!   `<provider>.<target>.now`), a quorum queue with single active consumer like a shard, for
//!   events a person is waiting for (docs/design.md, "Login-time provisioning").
//! - `scimrelay.reply.<uuid>`: one exclusive, auto-deleted queue per ingest connection; a
//!   connector publishes the terminal outcome of a copy whose `reply_to` names it there, through
//!   the default exchange.
//! - `scimrelay.outcomes` (topic), routing key `<provider>.<target>.<result>`, consumed by the
//!   status service through `scimrelay.status`.
//! - `scimrelay.dead-letter` (fanout) → `scimrelay.dead`: the parking lot.
//! - Retry delay tiers: for each delay in [`RETRY_TIERS_MS`], a fanout exchange
//!   `scimrelay.retry.<ms>` in front of a queue of the same name whose message TTL is that delay
//!   and whose dead-letter exchange is `scimrelay.events`. A message republished there keeps
//!   its routing key `<provider>.<target>.<shard>`, waits out the TTL without holding any
//!   consumer, then dead-letters back into its own shard queue. A shard never blocks on a retry.
//!
//! Both ingest and the connectors declare the target queues at start. Declaring is idempotent,
//! and it means ingest never depends on a connector having started first: a publish is routed to
//! a durable queue or it is an error to the caller (publishes are `mandatory` and confirmed).

use std::time::Duration;

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use crate::config::{ConfigError, TargetConfig, redact_url};

/// Exchange receiving identity events, one message per (event, target).
pub const EVENTS_EXCHANGE: &str = "scimrelay.events";
/// Exchange receiving outcomes.
pub const OUTCOMES_EXCHANGE: &str = "scimrelay.outcomes";
/// Fanout exchange in front of the parking lot.
pub const DEAD_EXCHANGE: &str = "scimrelay.dead-letter";
/// The parking lot: messages that exhausted their attempts or could not be processed.
pub const DEAD_QUEUE: &str = "scimrelay.dead";
/// Topic exchange of connector reports (per target: throttling, quarantine, concurrency),
/// routing key = target id; the status service consumes them.
pub const REPORTS_EXCHANGE: &str = "scimrelay.reports";
/// The status service's queue of outcomes.
pub const STATUS_QUEUE: &str = "scimrelay.status";
/// Redeliveries of one message (consumer crashes, requeues) before the broker parks it.
pub const DELIVERY_LIMIT: i64 = 20;
/// Delays of the retry tiers. A backoff is rounded down to a tier, so the largest tier bounds
/// the longest single wait (an hour, the longest a provider asks us to back off).
pub const RETRY_TIERS_MS: &[u64] = &[
    100, 250, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000,
];
/// How long connecting may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker error, with the URL's password removed.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The broker could not be reached or refused the connection.
    #[error("cannot connect to RabbitMQ at {url}: {reason}")]
    Connect {
        /// The URL without its password.
        url: String,
        /// Why.
        reason: String,
    },
    /// The broker refused a publish (nack) or could not route it.
    #[error("RabbitMQ did not accept the message for {routing_key}: {reason}")]
    NotConfirmed {
        /// Where it was sent.
        routing_key: String,
        /// nack, or the return's reply text.
        reason: String,
    },
    /// Any other protocol or I/O error.
    #[error("RabbitMQ: {0}")]
    Protocol(#[from] lapin::Error),
}

/// Environment variable naming a PEM CA bundle trusted for `amqps://` in addition to the
/// system roots (a broker certificate from a private CA).
pub const AMQP_CA_ENV: &str = "SCIMRELAY_AMQP_CA_FILE";

/// Connects with a timeout; `name` shows up in the management UI.
///
/// `amqps://` URLs speak TLS (rustls): the broker's certificate must chain to a root of the
/// system store (`/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR`), or to a CA of the
/// bundle named by `SCIMRELAY_AMQP_CA_FILE`, and name the URL's host. The bundle is read on
/// every connect, so a rotated CA is picked up on the next reconnect.
pub async fn connect(url: &str, name: &str) -> Result<Connection, AmqpError> {
    connect_with_ca(url, name, ca_file_from_env().as_deref()).await
}

/// [`connect`] with an explicit CA bundle (a PEM file) instead of `SCIMRELAY_AMQP_CA_FILE`;
/// `None` trusts the system roots only. For tools and tests that do not configure through the
/// environment.
pub async fn connect_with_ca(
    url: &str,
    name: &str,
    ca_file: Option<&str>,
) -> Result<Connection, AmqpError> {
    let failed = |reason: String| AmqpError::Connect {
        url: redact_url(url),
        reason,
    };
    let tls = tls_config(url, ca_file).map_err(|e| failed(e.to_string()))?;
    let props =
        ConnectionProperties::default().with_connection_name(LongString::from(name.to_owned()));
    let runtime = lapin::runtime::default_runtime().map_err(|e| failed(e.to_string()))?;
    let connecting = Connection::connect_with_config(url, props, tls, runtime);
    match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(failed(e.to_string())),
        Err(_) => Err(failed("timed out".into())),
    }
}

/// Checks `SCIMRELAY_AMQP_CA_FILE` for `url` (readable, PEM certificates) without connecting.
/// A service calls it at start so that a bad bundle stops it there, naming the variable,
/// rather than failing every reconnect.
pub fn check_tls_env(url: &str) -> Result<(), ConfigError> {
    tls_config(url, ca_file_from_env().as_deref()).map(drop)
}

fn ca_file_from_env() -> Option<String> {
    std::env::var(AMQP_CA_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
}

/// The TLS settings for `url`: the CA bundle when the URL is `amqps://` and one is named.
fn tls_config(url: &str, ca_file: Option<&str>) -> Result<OwnedTLSConfig, ConfigError> {
    let Some(path) = ca_file.filter(|_| url.starts_with("amqps://")) else {
        return Ok(OwnedTLSConfig::default());
    };
    let path = path.trim();
    let bad = |reason: String| ConfigError::invalid(AMQP_CA_ENV, format!("{path}: {reason}"));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
    crate::tls::certs(AMQP_CA_ENV, &pem).map_err(|e| match e {
        ConfigError::Invalid { message, .. } => bad(message),
        other => other,
    })?;
    let pem = String::from_utf8(pem).map_err(|_| bad("not a PEM file".into()))?;
    Ok(OwnedTLSConfig {
        identity: None,
        cert_chain: Some(pem),
    })
}

/// How long a clean close may wait for the broker's close-ok before giving up on it.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);

/// Closes `conn`, waiting at most [`CLOSE_TIMEOUT`]. A shutdown must never hang on the broker:
/// a connection that failed mid-close (or a broker that stopped answering) is simply dropped,
/// and whatever was unacked goes back to its queue when the socket closes.
pub async fn close(conn: &Connection, reason: &str) {
    match tokio::time::timeout(CLOSE_TIMEOUT, conn.close(200, reason.to_owned().into())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, "RabbitMQ connection was already closing"),
        Err(_) => tracing::warn!(
            timeout_ms = CLOSE_TIMEOUT.as_millis() as u64,
            "RabbitMQ did not confirm the close in time; dropping the connection"
        ),
    }
}

/// Closes `ch`, waiting at most [`CLOSE_TIMEOUT`] (see [`close`]).
pub async fn close_channel(ch: &Channel, reason: &str) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, ch.close(200, reason.to_owned().into())).await;
}

/// FNV-1a 64: stable across processes and versions (unlike `DefaultHasher`), which matters
/// because the shard of a subject must not move when a service restarts.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The shard of a subject within a target, from its [`scimrelay_proto::subject_ref`] (tenant,
/// kind and id: all three are the subject's identity, so subjects of two tenants, or a user and
/// a group, that share an id spread over the shards like any others).
pub fn shard_of(subject_ref: &str, shards: u16) -> u16 {
    (fnv1a(subject_ref.as_bytes()) % u64::from(shards.max(1))) as u16
}

/// The retry tier for a wanted delay: the largest tier not above it (the smallest tier when
/// the wait is shorter than every tier).
pub fn retry_tier(delay_ms: u64) -> u64 {
    RETRY_TIERS_MS
        .iter()
        .copied()
        .filter(|t| *t <= delay_ms)
        .max()
        .unwrap_or(RETRY_TIERS_MS[0])
}

/// The exchange (and queue) of a retry tier.
pub fn retry_exchange(tier_ms: u64) -> String {
    format!("scimrelay.retry.{tier_ms}")
}

/// The queue of one shard of a target.
pub fn shard_queue(target: &str, shard: u16) -> String {
    format!("scimrelay.{target}.{shard}")
}

/// The routing key of an event copy for one target.
pub fn event_routing_key(provider: &str, target: &str, shard: u16) -> String {
    format!("{provider}.{target}.{shard}")
}

/// The last word of the interactive lane's queue name and routing key (target ids are
/// `[a-z0-9-]` and shards are numbers, so it names nothing else).
pub const LANE_WORD: &str = "now";

/// The interactive lane of a target.
pub fn lane_queue(target: &str) -> String {
    format!("scimrelay.{target}.{LANE_WORD}")
}

/// The routing key of an interactive copy for one target.
pub fn lane_routing_key(provider: &str, target: &str) -> String {
    format!("{provider}.{target}.{LANE_WORD}")
}

/// Whether a copy's routing key is an interactive lane's.
pub fn is_lane_key(routing_key: &str) -> bool {
    routing_key
        .rsplit_once('.')
        .is_some_and(|(_, last)| last == LANE_WORD)
}

/// The prefix of every reply queue; a connector publishes to no other name from `reply_to`.
pub const REPLY_PREFIX: &str = "scimrelay.reply.";

/// The routing key of an outcome.
pub fn outcome_routing_key(provider: &str, target: &str, result: &str) -> String {
    format!("{provider}.{target}.{result}")
}

fn quorum_args(extra: &[(&str, AMQPValue)]) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    for (k, v) in extra {
        args.insert(ShortString::from(*k), v.clone());
    }
    args
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares the exchanges, the parking lot and the status queue. Idempotent.
pub async fn declare_base(ch: &Channel) -> Result<(), AmqpError> {
    let opts = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    for (name, kind) in [
        (EVENTS_EXCHANGE, ExchangeKind::Topic),
        (OUTCOMES_EXCHANGE, ExchangeKind::Topic),
        (DEAD_EXCHANGE, ExchangeKind::Fanout),
        (REPORTS_EXCHANGE, ExchangeKind::Topic),
    ] {
        ch.exchange_declare(name.into(), kind, opts, FieldTable::default())
            .await?;
    }
    ch.queue_declare(DEAD_QUEUE.into(), durable(), quorum_args(&[]))
        .await?;
    ch.queue_bind(
        DEAD_QUEUE.into(),
        DEAD_EXCHANGE.into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    for tier in RETRY_TIERS_MS {
        let name = retry_exchange(*tier);
        ch.exchange_declare(
            name.as_str().into(),
            ExchangeKind::Fanout,
            opts,
            FieldTable::default(),
        )
        .await?;
        let args = quorum_args(&[
            (
                "x-message-ttl",
                AMQPValue::LongLongInt(i64::try_from(*tier).unwrap_or(i64::MAX)),
            ),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString(EVENTS_EXCHANGE.into()),
            ),
            (
                "x-dead-letter-strategy",
                AMQPValue::LongString("at-least-once".into()),
            ),
            ("x-overflow", AMQPValue::LongString("reject-publish".into())),
        ]);
        ch.queue_declare(name.as_str().into(), durable(), args)
            .await?;
        ch.queue_bind(
            name.as_str().into(),
            name.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    ch.queue_declare(STATUS_QUEUE.into(), durable(), quorum_args(&[]))
        .await?;
    ch.queue_bind(
        STATUS_QUEUE.into(),
        OUTCOMES_EXCHANGE.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Declares the shard queues and the interactive lane of one target and binds them. Idempotent.
pub async fn declare_target(ch: &Channel, target: &TargetConfig) -> Result<(), AmqpError> {
    let shards = (0..target.shards).map(|shard| {
        (
            shard_queue(&target.id, shard),
            event_routing_key(target.provider.as_str(), &target.id, shard),
        )
    });
    let lane = (
        lane_queue(&target.id),
        lane_routing_key(target.provider.as_str(), &target.id),
    );
    for (queue, key) in shards.chain(std::iter::once(lane)) {
        let args = quorum_args(&[
            ("x-single-active-consumer", AMQPValue::Boolean(true)),
            ("x-delivery-limit", AMQPValue::LongLongInt(DELIVERY_LIMIT)),
            (
                "x-dead-letter-exchange",
                AMQPValue::LongString(DEAD_EXCHANGE.into()),
            ),
        ]);
        ch.queue_declare(queue.as_str().into(), durable(), args)
            .await?;
        ch.queue_bind(
            queue.as_str().into(),
            EVENTS_EXCHANGE.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    Ok(())
}

/// Declares everything for a set of targets on a fresh channel.
pub async fn declare_all<'a>(
    conn: &Connection,
    targets: impl IntoIterator<Item = &'a TargetConfig>,
) -> Result<(), AmqpError> {
    let ch = conn.create_channel().await?;
    declare_base(&ch).await?;
    for t in targets {
        declare_target(&ch, t).await?;
    }
    let _ = ch.close(200, "topology declared".into()).await;
    Ok(())
}

/// Builds message properties: persistent, typed, with extra headers (trace context).
pub fn properties(message_type: &str, headers: FieldTable) -> BasicProperties {
    let mut headers = headers;
    headers.insert(
        scimrelay_proto::HEADER_MESSAGE_TYPE.into(),
        AMQPValue::LongString(message_type.into()),
    );
    headers.insert(
        scimrelay_proto::HEADER_SCHEMA_VERSION.into(),
        AMQPValue::LongLongInt(scimrelay_proto::SCHEMA_VERSION),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/x-protobuf".into())
        .with_type(message_type.into())
        .with_headers(headers)
}

/// A channel in confirm mode. Publishes are `mandatory`: an unroutable message is an error,
/// not a silent drop. Cheap to clone; many publishes may be in flight at once.
#[derive(Clone)]
pub struct Publisher {
    channel: Channel,
}

/// A publish sent but not yet confirmed; await [`PendingConfirm::wait`].
pub struct PendingConfirm {
    confirm: lapin::PublisherConfirm,
    routing_key: String,
}

impl PendingConfirm {
    /// Resolves when the broker confirmed; an error for a nack or a return.
    pub async fn wait(self) -> Result<(), AmqpError> {
        let routing_key = self.routing_key;
        match self.confirm.await? {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(ret)) | Confirmation::Nack(Some(ret)) => {
                Err(AmqpError::NotConfirmed {
                    routing_key,
                    reason: format!("returned: {} {}", ret.reply_code, ret.reply_text),
                })
            }
            Confirmation::Nack(None) => Err(AmqpError::NotConfirmed {
                routing_key,
                reason: "nack".into(),
            }),
            Confirmation::NotRequested => Err(AmqpError::NotConfirmed {
                routing_key,
                reason: "channel not in confirm mode".into(),
            }),
        }
    }
}

impl Publisher {
    /// Opens a channel on `conn` and puts it in confirm mode.
    pub async fn new(conn: &Connection) -> Result<Self, AmqpError> {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Publisher { channel })
    }

    /// Closes the channel. Call it before closing the connection: a publisher channel that is
    /// only dropped is closed by the client library in the background, and that close racing
    /// the connection close turns a clean shutdown into a connection error.
    pub async fn close(&self) {
        close_channel(&self.channel, "publisher stopping").await;
    }

    /// Whether the channel is still usable.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Sends a persistent, mandatory message; the returned handle resolves on the confirm.
    pub async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<PendingConfirm, AmqpError> {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?;
        Ok(PendingConfirm {
            confirm,
            routing_key: routing_key.to_owned(),
        })
    }

    /// Sends a transient message to the queue `queue` through the default exchange, not
    /// mandatory (a queue that is gone drops it), and waits for the confirm. For replies to a
    /// waiting request, which the status service has from the outcomes exchange anyway.
    pub async fn reply(
        &self,
        queue: &str,
        body: &[u8],
        message_type: &str,
    ) -> Result<(), AmqpError> {
        let props = properties(message_type, FieldTable::default()).with_delivery_mode(1);
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await?;
        PendingConfirm {
            confirm,
            routing_key: queue.to_owned(),
        }
        .wait()
        .await
    }

    /// Sends and waits for the confirm.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), AmqpError> {
        self.send(exchange, routing_key, body, properties)
            .await?
            .wait()
            .await
    }

    /// The underlying channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }
}

/// Reads a string header.
pub fn header_str<'a>(props: &'a BasicProperties, name: &str) -> Option<&'a str> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Reads a boolean header; absent or of another type is false.
pub fn header_bool(props: &BasicProperties, name: &str) -> bool {
    props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(name))
        .is_some_and(|v| matches!(v, AMQPValue::Boolean(true)))
}

/// How many times a quorum queue delivered a message before (its `x-delivery-count` header:
/// absent on the first delivery).
pub fn delivery_count(props: &BasicProperties) -> u64 {
    let Some(v) = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get("x-delivery-count"))
    else {
        return 0;
    };
    match v {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).unwrap_or(0),
        AMQPValue::LongInt(n) => u64::try_from(*n).unwrap_or(0),
        AMQPValue::ShortInt(n) => u64::try_from(*n).unwrap_or(0),
        AMQPValue::LongUInt(n) => u64::from(*n),
        AMQPValue::ShortUInt(n) => u64::from(*n),
        AMQPValue::Timestamp(n) => *n,
        _ => 0,
    }
}

/// AMQP headers as a trace-context carrier (W3C `traceparent` / `tracestate`).
pub struct Headers<'a>(pub &'a mut FieldTable);

impl scimrelay_proto::trace::Carrier for Headers<'_> {
    fn get_str(&self, key: &str) -> Option<String> {
        ReadHeaders(Some(&*self.0)).get_str(key)
    }

    fn set_str(&mut self, key: &str, value: String) {
        self.0
            .insert(key.into(), AMQPValue::LongString(value.into()));
    }
}

/// Read-only AMQP headers (of a received message) as a trace-context carrier.
pub struct ReadHeaders<'a>(pub Option<&'a FieldTable>);

impl<'a> ReadHeaders<'a> {
    /// The headers of a message's properties.
    pub fn of(props: &'a BasicProperties) -> Self {
        ReadHeaders(props.headers().as_ref())
    }
}

impl scimrelay_proto::trace::Carrier for ReadHeaders<'_> {
    fn get_str(&self, key: &str) -> Option<String> {
        match self.0?.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
            AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
            _ => None,
        }
    }

    fn set_str(&mut self, _key: &str, _value: String) {}
}

/// Headers holding the current span's trace context, for [`properties`].
pub fn trace_headers() -> FieldTable {
    let mut h = FieldTable::default();
    crate::telemetry::inject(&mut Headers(&mut h));
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_are_stable_and_spread() {
        // Fixed values: a change here moves subjects between queues across an upgrade.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0u32; 8];
        for i in 0..8000 {
            counts[usize::from(shard_of(&format!("user-{i}"), 8))] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn retry_tiers_round_down() {
        assert_eq!(retry_tier(0), 100);
        assert_eq!(retry_tier(99), 100);
        assert_eq!(retry_tier(100), 100);
        assert_eq!(retry_tier(4_999), 2_000);
        assert_eq!(retry_tier(10 * 3_600_000), 3_600_000);
        assert_eq!(retry_exchange(500), "scimrelay.retry.500");
    }

    #[tokio::test]
    async fn amqps_with_an_unreadable_ca_file_names_the_variable_not_the_password() {
        let url = "amqps://svc:hunter2-pw@127.0.0.1:1/%2f";
        let err = connect_with_ca(url, "test", Some("/nonexistent/scimrelay-amqp-ca.pem"))
            .await
            .expect_err("no such CA file")
            .to_string();
        assert!(err.contains(AMQP_CA_ENV), "{err}");
        assert!(err.contains("/nonexistent/scimrelay-amqp-ca.pem"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let not_pem =
            std::env::temp_dir().join(format!("scimrelay-amqp-ca-{}", std::process::id()));
        std::fs::write(&not_pem, "not a certificate").expect("write temp");
        let err = tls_config(url, not_pem.to_str())
            .expect_err("not PEM")
            .to_string();
        let _ = std::fs::remove_file(&not_pem);
        assert!(err.contains(AMQP_CA_ENV) && err.contains("PEM"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        // Plain amqp:// ignores the CA bundle.
        let plain = tls_config("amqp://127.0.0.1/", Some("/nonexistent")).expect("plain");
        assert!(plain.cert_chain.is_none());
    }

    #[test]
    fn names() {
        assert_eq!(shard_queue("gh", 3), "scimrelay.gh.3");
        assert_eq!(event_routing_key("github", "gh", 3), "github.gh.3");
        assert_eq!(
            outcome_routing_key("aws", "a1", "succeeded"),
            "aws.a1.succeeded"
        );
    }
}
