//! What a handled message leaves on the broker, each publish confirmed before the input is
//! acked: its outcome, its copy on a delay tier, a held event, a parked copy (dead-lettered,
//! undeliverable or poison).

use std::time::Duration;

use lapin::options::BasicAckOptions;
use lapin::types::FieldTable;
use prost::Message;
use tracing::Instrument as _;

use scimrelay_core::amqp::{self, DEAD_EXCHANGE, OUTCOMES_EXCHANGE};
use scimrelay_core::metrics::{self, metrics};
use scimrelay_core::now_ms;
use scimrelay_core::telemetry;
use scimrelay_proto::HEADER_ROUTING_KEY;
use scimrelay_proto::v1::{Delivery, HeldEvent, Outcome, OutcomeResult};

use super::{CopyMarks, ShardCtx};

impl ShardCtx {
    /// Publishes `copy` to the delay tier of `wait` (confirmed before the input is acked); it
    /// dead-letters back to the events exchange under the same routing key, still marked as
    /// the input was (released by an operator, replayed from the dead-letter queue).
    pub(super) async fn delay(
        &self,
        raw: &lapin::message::Delivery,
        copy: Delivery,
        wait: Duration,
        reason: &str,
        class: &'static str,
        marks: CopyMarks,
    ) -> anyhow::Result<()> {
        let target = self.target.config.id.as_str();
        let attempt = copy.attempt;
        let tier = amqp::retry_tier(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
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
        for (set, header) in [
            (marks.released, scimrelay_proto::HEADER_RELEASED),
            (marks.replayed, scimrelay_proto::HEADER_REPLAYED),
        ] {
            if set {
                headers.insert(header.into(), lapin::types::AMQPValue::Boolean(true));
            }
        }
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
        tracing::info!(target = %self.target.config.id, attempt, tier_ms = tier, reason = %telemetry::redact(reason), "retry scheduled");
        Ok(())
    }

    /// Publishes a copy to the parking lot, keeping the original routing key in a header.
    pub(super) async fn park(
        &self,
        body: &[u8],
        routing_key: &str,
        message_type: &str,
    ) -> anyhow::Result<()> {
        let mut headers = FieldTable::default();
        headers.insert(
            HEADER_ROUTING_KEY.into(),
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
    pub(super) async fn publish_held(
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
    /// Publishes a terminal outcome (confirmed); when an ingest request waits for it
    /// (`reply_to`, see docs/design.md "Login-time provisioning") also to that request's reply
    /// queue, at the same time. A reply that cannot be sent is only logged: the request answers
    /// 202 when its wait runs out, and the outcome is at the status service as always.
    pub(super) async fn publish_outcome(
        &self,
        outcome: &Outcome,
        reply_to: &str,
    ) -> anyhow::Result<()> {
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
        let body = outcome.encode_to_vec();
        let reply = async {
            if !reply_to.starts_with(amqp::REPLY_PREFIX) {
                return;
            }
            let sent = tokio::time::timeout(
                amqp::CLOSE_TIMEOUT,
                self.publisher
                    .reply(reply_to, &body, scimrelay_proto::TYPE_OUTCOME),
            )
            .await;
            if !matches!(sent, Ok(Ok(()))) {
                tracing::debug!(target = %outcome.target, "the reply to a waiting request was not confirmed");
            }
        };
        let (published, ()) = tokio::join!(
            self.publisher
                .publish(OUTCOMES_EXCHANGE, &key, &body, props)
                .instrument(span),
            reply
        );
        published?;
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

    /// A message delivered so many times without ending (each delivery failed to publish its
    /// outcome, or stopped the process handling it) that the broker would park it silently:
    /// parked here with a dead-lettered outcome.
    pub(super) async fn park_undeliverable(
        &self,
        raw: &lapin::message::Delivery,
        delivery: &Delivery,
        deliveries: u64,
    ) -> anyhow::Result<()> {
        tracing::error!(target = %self.target.config.id, deliveries, "message delivered too often without an outcome; parked in the dead-letter queue");
        self.park(
            &raw.data,
            raw.routing_key.as_str(),
            scimrelay_proto::TYPE_DELIVERY,
        )
        .await?;
        let event = delivery.event.clone().unwrap_or_default();
        let outcome = Outcome {
            event_id: event.id.clone(),
            target: self.target.config.id.clone(),
            provider: self.target.config.provider.as_str().to_owned(),
            tenant: event.tenant.clone(),
            subject_kind: event.subject_kind() as i32,
            subject_id: event.subject_id().to_owned(),
            version: event.version,
            kind: event.kind,
            result: OutcomeResult::DeadLettered as i32,
            attempt: delivery.attempt + 1,
            detail: format!(
                "delivered {} times without reaching an outcome (each delivery failed before it could be acknowledged); parked in scimrelay.dead",
                deliveries + 1
            ),
            accepted_at_ms: delivery.accepted_at_ms,
            finished_at_ms: now_ms(),
            ..Default::default()
        };
        self.publish_outcome(&outcome, &delivery.reply_to).await?;
        raw.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    /// An undecodable message: park it and record a dead-lettered outcome so it is not silent.
    pub(super) async fn park_poison(&self, raw: &lapin::message::Delivery) -> anyhow::Result<()> {
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
        self.publish_outcome(&outcome, "").await?;
        raw.acker.ack(BasicAckOptions::default()).await?;
        Ok(())
    }
}

/// Publishes a re-trigger of the subject `key` (docs/design.md, "References") onto its shard,
/// confirmed: a `Delivery` marked `retrigger` whose event names only the subject.
pub(super) async fn retrigger(
    publisher: &amqp::Publisher,
    target: &scimrelay_core::config::TargetConfig,
    key: &scimrelay_proto::v1::SubjectKey,
) -> anyhow::Result<()> {
    use scimrelay_proto::v1::{EventKind, GroupState, IdentityEvent, SubjectKind, UserState};
    let group = key.kind == SubjectKind::Group as i32;
    let event = IdentityEvent {
        id: format!("retrigger-{}", uuid::Uuid::now_v7()),
        tenant: key.tenant.clone(),
        kind: if group {
            EventKind::GroupUpserted
        } else {
            EventKind::UserUpserted
        } as i32,
        group: group.then(|| GroupState {
            id: key.subject_id.clone(),
            ..Default::default()
        }),
        user: (!group).then(|| UserState {
            id: key.subject_id.clone(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let shard = amqp::shard_of(&event.subject_ref(), target.shards);
    let routing_key = amqp::event_routing_key(target.provider.as_str(), &target.id, shard);
    let delivery = Delivery {
        event: Some(event),
        target: target.id.clone(),
        provider: target.provider.as_str().to_owned(),
        accepted_at_ms: now_ms(),
        retrigger: true,
        ..Default::default()
    };
    let props = amqp::properties(scimrelay_proto::TYPE_DELIVERY, FieldTable::default());
    publisher
        .publish(
            amqp::EVENTS_EXCHANGE,
            &routing_key,
            &delivery.encode_to_vec(),
            props,
        )
        .await?;
    metrics()
        .retriggers
        .get_or_create(&metrics::target(&target.id))
        .inc();
    Ok(())
}
