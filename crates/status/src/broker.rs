//! Operator actions and gauges that live on the broker: queue depths (passive declares), the
//! parking lot (`scimrelay.dead`: list, replay) and releasing held events.
//!
//! Replay: every parked message is fetched with `basic.get` and kept unacked while it is looked
//! at, so the scan never sees a message twice; a selected, replayable one is republished to
//! `scimrelay.events` under its original routing key with a confirm and only then acked.
//! Everything else goes back to the queue when the scan's channel closes. The original routing
//! key is, in order: the header `x-scimrelay-routing-key` (set by connectors), the first
//! `x-death` routing key (set by the broker when a shard queue dead-letters), or recomputed from
//! the Delivery and the target's shard count.

use std::collections::{BTreeSet, HashMap};

use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection};
use prost::Message;

use scimrelay_core::amqp::{self, AmqpError, DEAD_QUEUE, EVENTS_EXCHANGE, Publisher};
use scimrelay_proto::v1::{DeadLetter, Delivery, HeldEvent};

use crate::store::{Record, Store, StoreError, held_key};
use crate::{HEADER_RELEASED, HEADER_ROUTING_KEY};

/// Most parked messages one list or replay call looks at.
pub const SCAN_MAX: u64 = 100_000;
/// How many empty `basic.get` answers end a scan, and the pause between them.
const EMPTY_LOOKS: u32 = 3;
const EMPTY_LOOK_PAUSE: std::time::Duration = std::time::Duration::from_millis(100);

/// A broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The broker is unreachable or refused.
    #[error(transparent)]
    Amqp(#[from] AmqpError),
    /// The store failed while recording the action.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<lapin::Error> for OpsError {
    fn from(e: lapin::Error) -> Self {
        OpsError::Amqp(AmqpError::Protocol(e))
    }
}

/// Broker access for the gRPC service: one lazily opened connection, reopened after a failure.
pub struct Ops {
    url: String,
    shards: HashMap<String, u16>,
    store: Store,
    conn: tokio::sync::Mutex<Option<Connection>>,
}

/// What a replay did.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Event ids (or target ids for undecodable messages) republished.
    pub event_ids: Vec<String>,
    /// Selected messages left in the parking lot.
    pub skipped: u32,
    /// Why, each reason once.
    pub reasons: BTreeSet<String>,
}

/// One parked message, decoded as far as possible.
struct Parked {
    target: String,
    delivery: Option<Delivery>,
    routing_key: Option<String>,
}

impl Ops {
    /// Broker operations against `url`; `shards` (from the targets file) helps recompute the
    /// routing key of old dead letters.
    pub fn new(url: String, shards: HashMap<String, u16>, store: Store) -> Self {
        Ops {
            url,
            shards,
            store,
            conn: tokio::sync::Mutex::new(None),
        }
    }

    async fn connection(&self) -> Result<tokio::sync::MappedMutexGuard<'_, Connection>, OpsError> {
        let mut guard = self.conn.lock().await;
        if guard.as_ref().is_none_or(|c| !c.status().connected()) {
            *guard = Some(amqp::connect(&self.url, "scimrelay-status-ops").await?);
        }
        tokio::sync::MutexGuard::try_map(guard, |c| c.as_mut()).map_err(|_| {
            OpsError::Amqp(AmqpError::Connect {
                url: scimrelay_core::config::redact_url(&self.url),
                reason: "no connection".into(),
            })
        })
    }

    async fn channel(&self) -> Result<Channel, OpsError> {
        Ok(self.connection().await?.create_channel().await?)
    }

    /// The shard count of a target: from the targets file, else from its latest report.
    pub async fn shards_of(&self, target: &str) -> Option<u16> {
        if let Some(n) = self.shards.get(target) {
            return Some(*n);
        }
        let reports = self.store.reports(target).await.ok()?;
        reports
            .iter()
            .map(|(r, _)| r.shards)
            .max()
            .filter(|n| *n > 0)
            .and_then(|n| u16::try_from(n).ok())
    }

    /// Messages ready in a target's shard queues and its interactive lane; `None` when unknown.
    pub async fn queue_depth(&self, target: &str) -> Option<u64> {
        let shards = self.shards_of(target).await?;
        let ch = self.channel().await.ok()?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let mut total = 0u64;
        for shard in 0..shards {
            let q = ch
                .queue_declare(
                    amqp::shard_queue(target, shard).as_str().into(),
                    passive,
                    FieldTable::default(),
                )
                .await
                .ok()?;
            total += u64::from(q.message_count());
        }
        // Last: a lane not declared yet (no connector of this release started) closes the
        // channel, and counts as empty.
        if let Ok(q) = ch
            .queue_declare(
                amqp::lane_queue(target).as_str().into(),
                passive,
                FieldTable::default(),
            )
            .await
        {
            total += u64::from(q.message_count());
            let _ = ch.close(200, "queue depth read".into()).await;
        }
        Some(total)
    }

    async fn dead_count(&self, ch: &Channel) -> Result<u64, OpsError> {
        let q = ch
            .queue_declare(
                DEAD_QUEUE.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok(u64::from(q.message_count()))
    }

    async fn parse(&self, d: &lapin::message::Delivery) -> Parked {
        let delivery = match amqp::header_str(&d.properties, scimrelay_proto::HEADER_MESSAGE_TYPE) {
            Some(t) if t != scimrelay_proto::TYPE_DELIVERY => None,
            _ => Delivery::decode(d.data.as_slice())
                .ok()
                .filter(|x| x.event.is_some() && !x.target.is_empty()),
        };
        let target = delivery
            .as_ref()
            .map(|x| x.target.clone())
            .unwrap_or_else(|| {
                // Connectors park with routing key = target id; the broker keeps the original key.
                let key = d.routing_key.as_str();
                key.split('.')
                    .nth(1)
                    .filter(|_| key.contains('.'))
                    .unwrap_or(key)
                    .to_owned()
            });
        let mut routing_key = amqp::header_str(&d.properties, HEADER_ROUTING_KEY)
            .map(str::to_owned)
            .or_else(|| x_death_key(&d.properties));
        if let (None, Some(x)) = (&routing_key, &delivery)
            && let (Some(shards), Some(e)) = (self.shards_of(&x.target).await, &x.event)
        {
            let shard = amqp::shard_of(&e.subject_ref(), shards);
            routing_key = Some(amqp::event_routing_key(&x.provider, &x.target, shard));
        }
        Parked {
            target,
            delivery,
            routing_key,
        }
    }

    /// Up to `limit` parked messages of `target` (empty for all), and the parking lot's size.
    pub async fn list_dead(
        &self,
        target: &str,
        limit: u32,
    ) -> Result<(Vec<DeadLetter>, u64), OpsError> {
        let ch = self.channel().await?;
        let total = self.dead_count(&ch).await?;
        let mut out = Vec::new();
        for _ in 0..SCAN_MAX {
            if out.len() >= limit as usize {
                break;
            }
            let Some(m) = next_parked(&ch).await? else {
                break;
            };
            let p = self.parse(&m.delivery).await;
            if !target.is_empty() && p.target != target {
                continue;
            }
            let e = p.delivery.as_ref().and_then(|x| x.event.as_ref());
            out.push(DeadLetter {
                replayable: p.delivery.is_some() && p.routing_key.is_some(),
                routing_key: p.routing_key.unwrap_or_default(),
                target: p.target,
                event_id: e.map(|e| e.id.clone()).unwrap_or_default(),
                subject_id: e.map(|e| e.subject_id().to_owned()).unwrap_or_default(),
                version: e.map(|e| e.version).unwrap_or_default(),
                kind: e.map(|e| e.kind).unwrap_or_default(),
                attempt: p.delivery.as_ref().map(|x| x.attempt).unwrap_or_default(),
                size_bytes: u32::try_from(m.delivery.data.len()).unwrap_or(u32::MAX),
            });
        }
        // Closing the channel returns every fetched message to the queue.
        let _ = ch.close(200, "dead letters listed".into()).await;
        // The count is of ready messages: ones another listing just gave back may still be on
        // their way back, so the total is at least what this scan saw.
        let scanned = u64::try_from(out.len()).unwrap_or(u64::MAX);
        Ok((out, total.max(scanned)))
    }

    /// Moves parked messages of `target` (empty for all), restricted to `event_ids` when not
    /// empty, at most `limit` (0 for all), back to `scimrelay.events`.
    pub async fn replay(
        &self,
        target: &str,
        event_ids: &[String],
        limit: u32,
    ) -> Result<Replayed, OpsError> {
        let ch = self.channel().await?;
        let publisher = Publisher::new(&*self.connection().await?).await?;
        let mut done = Replayed::default();
        for _ in 0..SCAN_MAX {
            if limit > 0 && done.event_ids.len() >= limit as usize {
                break;
            }
            let Some(m) = next_parked(&ch).await? else {
                break;
            };
            let p = self.parse(&m.delivery).await;
            let event_id = p
                .delivery
                .as_ref()
                .and_then(|x| x.event.as_ref())
                .map(|e| e.id.clone())
                .unwrap_or_default();
            if (!target.is_empty() && p.target != target)
                || (!event_ids.is_empty() && !event_ids.contains(&event_id))
            {
                continue;
            }
            let (Some(delivery), Some(key)) = (&p.delivery, &p.routing_key) else {
                done.skipped += 1;
                done.reasons.insert(if p.delivery.is_none() {
                    format!("{}: not a scimrelay.v1.Delivery (poison message); cannot be replayed", p.target)
                } else {
                    format!("{}: original routing key unknown (no {HEADER_ROUTING_KEY} header, no shard count)", p.target)
                });
                continue;
            };
            // Re-open first: the replayed copy's outcome may be recorded within milliseconds.
            self.store
                .write(&[Record::Reopen {
                    tenant: delivery
                        .event
                        .as_ref()
                        .map(|e| e.tenant.clone())
                        .unwrap_or_default(),
                    event_id: event_id.clone(),
                    target: delivery.target.clone(),
                }])
                .await?;
            let props = replay_properties(&m.delivery.properties);
            // A fresh attempt budget: the copy that gave up had spent its own.
            let fresh = Delivery {
                attempt: 0,
                waits: 0,
                ..delivery.clone()
            };
            match publisher
                .publish(EVENTS_EXCHANGE, key, &fresh.encode_to_vec(), props)
                .await
            {
                Ok(()) => {
                    m.delivery.acker.ack(BasicAckOptions::default()).await?;
                    done.event_ids.push(event_id);
                }
                Err(e) => {
                    done.skipped += 1;
                    done.reasons
                        .insert(format!("{}: republishing to {key} failed: {e}", p.target));
                }
            }
        }
        let _ = ch.close(200, "dead letters replayed".into()).await;
        publisher.close().await;
        if !done.event_ids.is_empty() {
            tracing::info!(
                replayed = done.event_ids.len(),
                skipped = done.skipped,
                "dead letters replayed"
            );
        }
        Ok(done)
    }

    /// Republishes held events with confirms (header `x-scimrelay-released`), then forgets them.
    /// Returns the event ids released; stops at the first failure (the rest stay held).
    pub async fn release(&self, held: &[HeldEvent]) -> Result<Vec<String>, OpsError> {
        let publisher = Publisher::new(&*self.connection().await?).await?;
        let mut released = Vec::new();
        for h in held {
            let Some(delivery) = &h.delivery else {
                continue;
            };
            let (tenant, event_id, target) = held_key(h);
            let mut headers = FieldTable::default();
            headers.insert(HEADER_RELEASED.into(), AMQPValue::Boolean(true));
            let props = amqp::properties(scimrelay_proto::TYPE_DELIVERY, headers);
            publisher
                .publish(
                    EVENTS_EXCHANGE,
                    &h.routing_key,
                    &delivery.encode_to_vec(),
                    props,
                )
                .await?;
            self.store
                .write(&[Record::Unhold {
                    tenant,
                    event_id: event_id.clone(),
                    target,
                }])
                .await?;
            released.push(event_id);
        }
        publisher.close().await;
        Ok(released)
    }
}

/// The next parked message not yet fetched on `ch`. Messages another scan just returned may take
/// a moment to be back in a quorum queue, so "empty" is believed only after a few looks.
async fn next_parked(ch: &Channel) -> Result<Option<lapin::message::BasicGetMessage>, OpsError> {
    for attempt in 0..EMPTY_LOOKS {
        if let Some(m) = ch
            .basic_get(DEAD_QUEUE.into(), BasicGetOptions::default())
            .await?
        {
            return Ok(Some(m));
        }
        if attempt + 1 < EMPTY_LOOKS {
            tokio::time::sleep(EMPTY_LOOK_PAUSE).await;
        }
    }
    Ok(None)
}

/// The properties of a replayed copy: the original ones (trace context, type) without the
/// broker's dead-lettering history.
fn replay_properties(original: &BasicProperties) -> BasicProperties {
    let mut headers = original.headers().clone().unwrap_or_default();
    let kept: Vec<_> = headers
        .inner()
        .iter()
        .filter(|(k, _)| {
            !k.as_str().starts_with("x-death")
                && !k.as_str().starts_with("x-first-death")
                && !k.as_str().starts_with("x-last-death")
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    headers = FieldTable::default();
    for (k, v) in kept {
        headers.insert(k, v);
    }
    headers.insert(
        scimrelay_proto::HEADER_REPLAYED.into(),
        lapin::types::AMQPValue::Boolean(true),
    );
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/x-protobuf".into())
        .with_type(scimrelay_proto::TYPE_DELIVERY.into())
        .with_headers(headers)
}

/// The first routing key of the broker's `x-death` header.
fn x_death_key(props: &BasicProperties) -> Option<String> {
    let headers = props.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let AMQPValue::FieldArray(keys) = first.inner().get("routing-keys")? else {
        return None;
    };
    match keys.as_slice().first()? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok().map(str::to_owned),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}
