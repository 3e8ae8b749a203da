//! The periodic target reports (limits, quarantine, waiting reason) for the status service.

use std::sync::Arc;

use lapin::types::FieldTable;
use prost::Message;
use tokio_util::sync::CancellationToken;

use scimrelay_core::amqp::{self, Publisher};
use scimrelay_core::now_ms;

use super::TargetRuntime;
use crate::status::REPORT_INTERVAL;

/// Publishes each target's report every [`REPORT_INTERVAL`] until the session ends.
pub(super) async fn report_loop(
    targets: Vec<Arc<TargetRuntime>>,
    publisher: Publisher,
    shutdown: CancellationToken,
    lost: CancellationToken,
) {
    let replica = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "local".into()),
        std::process::id()
    );
    loop {
        for t in &targets {
            crate::exec::observe_gauges(&t.config.id, &t.io);
            let (waits, wait_ms) = t.io.limits.waits();
            let reason = t.io.breaker.quarantined();
            let (waiting_reason, waiting_since_ms) = t.waiting.reason().unwrap_or_default();
            let report = scimrelay_proto::v1::TargetReport {
                target: t.config.id.clone(),
                provider: t.config.provider.as_str().to_owned(),
                replica: replica.clone(),
                reported_at_ms: now_ms(),
                throttle_waits: waits,
                throttle_wait_ms: wait_ms,
                quarantined: reason.is_some(),
                quarantine_reason: reason.unwrap_or_default(),
                quarantined_since_ms: t.io.breaker.quarantined_since_ms().unwrap_or(0),
                concurrency_limit: t.io.limits.window() as u32,
                in_flight: t.io.limits.in_flight(),
                shards: u32::from(t.config.shards),
                waiting_reason,
                waiting_since_ms,
            };
            let props =
                amqp::properties(scimrelay_proto::TYPE_TARGET_REPORT, FieldTable::default());
            if let Err(e) = publisher
                .publish(
                    amqp::REPORTS_EXCHANGE,
                    &t.config.id,
                    &report.encode_to_vec(),
                    props,
                )
                .await
            {
                tracing::debug!(error = %e, "target report not published");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = lost.cancelled() => return,
            _ = tokio::time::sleep(REPORT_INTERVAL) => {}
        }
    }
}
