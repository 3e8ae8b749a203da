//! Prometheus metrics of every service, served as `GET /metrics` (OpenMetrics text) beside
//! `/healthz` by [`crate::health::serve`].
//!
//! One process-wide registry ([`metrics()`]) holds every family of every service; a service
//! only fills the families it owns; a family with no series yet is left out of the output.
//! Labels are target ids, provider names, results, reasons, HTTP methods and status codes:
//! never a subject id, e-mail or anything else a user typed.

use std::sync::{LazyLock, Mutex};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set: `(name, value)` pairs.
pub type Labels = Vec<(&'static str, String)>;

type Hist = Family<Labels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 1 ms … ~33 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// Every metric family of scimrelay.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Ingest: HTTP/gRPC publish requests by transport and status (`202`, `400`, `OK`, …).
    pub ingest_requests: Family<Labels, Counter>,
    /// Ingest: messages published (confirmed) per target.
    pub ingest_published: Family<Labels, Counter>,
    /// Ingest: requests that asked to wait for their outcomes, by result (`complete`,
    /// `timed_out`, `over_key_limit`).
    pub ingest_waits: Family<Labels, Counter>,
    /// Ingest: request latency by transport.
    pub ingest_duration: Hist,
    /// Connector: terminal outcomes (and retries scheduled) per target and result.
    pub events: Family<Labels, Counter>,
    /// Connector: processing time of one delivery (one attempt) per target and result.
    pub event_duration: Hist,
    /// Connector: SCIM requests per target, method and status (`0` = no answer).
    pub scim_requests: Family<Labels, Counter>,
    /// Connector: SCIM request latency per target and method.
    pub scim_duration: Hist,
    /// Connector: time a request waited for the ceiling, pacing, pauses and window.
    pub rate_limit_wait: Hist,
    /// Connector: throttling answers per target.
    pub throttled: Family<Labels, Counter>,
    /// Connector: the adaptive concurrency window per target.
    pub concurrency_limit: Family<Labels, Gauge>,
    /// Connector: requests in flight per target.
    pub in_flight: Family<Labels, Gauge>,
    /// Connector: retries scheduled through the delay tiers per target and reason.
    pub retries: Family<Labels, Counter>,
    /// Connector: re-triggers published per target, to complete pending references.
    pub retriggers: Family<Labels, Counter>,
    /// Connector: 1 while the target is quarantined.
    pub quarantined: Family<Labels, Gauge>,
    /// Status: outcomes written per target and result.
    pub outcomes_written: Family<Labels, Counter>,
    /// Status: duration of one batched outcome write.
    pub status_write_duration: Hist,
    /// Status: time from ingest acceptance to the recorded outcome, per target.
    pub end_to_end: Hist,
    /// Status: messages waiting in a target's shard queues.
    pub queue_depth: Family<Labels, Gauge>,
    /// Status: references to users not at the target yet, per target.
    pub pending_references: Family<Labels, Gauge>,
    /// Status: how long the oldest of them has been pending, seconds, per target.
    pub pending_reference_age: Family<Labels, Gauge>,
    /// Status: state-of-record calls (`TakeEvents`, `RecordConverged`, `GetRecords`) by call.
    pub record_calls: Family<Labels, Counter>,
    /// Status: items of those calls by call (items ÷ calls is the batching connectors achieve).
    pub record_items: Family<Labels, Counter>,
    /// Status: duration of one state-of-record call by call.
    pub record_duration: Hist,
    /// Status: messages it could not store and parked in `scimrelay.dead`, by reason.
    pub status_parked: Family<Labels, Counter>,
}

fn hist() -> Hist {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

impl Metrics {
    fn new() -> Self {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("scimrelay")),
            ingest_requests: Family::default(),
            ingest_published: Family::default(),
            ingest_waits: Family::default(),
            ingest_duration: hist(),
            events: Family::default(),
            event_duration: hist(),
            scim_requests: Family::default(),
            scim_duration: hist(),
            rate_limit_wait: hist(),
            throttled: Family::default(),
            concurrency_limit: Family::default(),
            in_flight: Family::default(),
            retries: Family::default(),
            retriggers: Family::default(),
            quarantined: Family::default(),
            outcomes_written: Family::default(),
            status_write_duration: hist(),
            end_to_end: hist(),
            queue_depth: Family::default(),
            pending_references: Family::default(),
            pending_reference_age: Family::default(),
            record_calls: Family::default(),
            record_items: Family::default(),
            record_duration: hist(),
            status_parked: Family::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            m.register_ingest(&mut r);
            m.register_connector(&mut r);
            m.register_status(&mut r);
        }
        m
    }

    /// Registers the families ingest fills.
    fn register_ingest(&self, r: &mut Registry) {
        r.register(
            "ingest_requests",
            "Publish requests by transport and status",
            self.ingest_requests.clone(),
        );
        r.register(
            "ingest_published",
            "Messages published and confirmed, by target",
            self.ingest_published.clone(),
        );
        r.register(
            "ingest_waits",
            "Requests that waited for their outcomes, by result",
            self.ingest_waits.clone(),
        );
        r.register(
            "ingest_request_duration_seconds",
            "Publish request latency by transport",
            self.ingest_duration.clone(),
        );
    }

    /// Registers the families connectors fill.
    fn register_connector(&self, r: &mut Registry) {
        r.register(
            "events",
            "Deliveries processed by target and result (retry = retry scheduled)",
            self.events.clone(),
        );
        r.register(
            "event_duration_seconds",
            "Processing time of one delivery attempt by target and result",
            self.event_duration.clone(),
        );
        r.register(
            "scim_requests",
            "SCIM requests by target, method and status (0: no answer)",
            self.scim_requests.clone(),
        );
        r.register(
            "scim_request_duration_seconds",
            "SCIM request latency by target and method",
            self.scim_duration.clone(),
        );
        r.register(
            "rate_limit_wait_seconds",
            "Time a SCIM request waited for the ceiling, pacing, pauses and concurrency window",
            self.rate_limit_wait.clone(),
        );
        r.register(
            "throttled",
            "Throttling answers by target",
            self.throttled.clone(),
        );
        r.register(
            "concurrency_limit",
            "Adaptive concurrency window by target",
            self.concurrency_limit.clone(),
        );
        r.register(
            "in_flight",
            "SCIM requests in flight by target",
            self.in_flight.clone(),
        );
        r.register(
            "retries",
            "Retries scheduled through the delay tiers by target and reason",
            self.retries.clone(),
        );
        r.register(
            "retriggers",
            "Re-triggers published by target, to complete references to users that arrived",
            self.retriggers.clone(),
        );
        r.register(
            "quarantined",
            "1 while the target is quarantined by its circuit breaker",
            self.quarantined.clone(),
        );
    }

    /// Registers the families the status service fills.
    fn register_status(&self, r: &mut Registry) {
        r.register(
            "status_outcomes_written",
            "Outcomes committed by the status service by target and result",
            self.outcomes_written.clone(),
        );
        r.register(
            "status_write_duration_seconds",
            "Duration of one batched outcome write",
            self.status_write_duration.clone(),
        );
        r.register(
            "end_to_end_seconds",
            "Time from ingest acceptance to the recorded outcome, by target",
            self.end_to_end.clone(),
        );
        r.register(
            "queue_depth",
            "Messages waiting in a target's shard queues and its interactive lane",
            self.queue_depth.clone(),
        );
        r.register(
            "pending_references",
            "References (group members) to users not at the target yet, by target",
            self.pending_references.clone(),
        );
        r.register(
            "pending_reference_age_seconds",
            "How long the oldest pending reference has been pending, by target (0: none)",
            self.pending_reference_age.clone(),
        );
        r.register(
            "state_of_record_calls",
            "State-of-record calls served by the status service, by call",
            self.record_calls.clone(),
        );
        r.register(
            "state_of_record_items",
            "Items of the state-of-record calls (one per subject), by call",
            self.record_items.clone(),
        );
        r.register(
            "status_parked",
            "Messages the status service could not store, parked in scimrelay.dead, by reason",
            self.status_parked.clone(),
        );
        r.register(
            "state_of_record_duration_seconds",
            "Duration of one state-of-record call, by call",
            self.record_duration.clone(),
        );
    }

    /// The registry in the Prometheus / OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = encode(&mut out, &r);
        }
        out
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// A label set with one `target` label.
pub fn target(target: &str) -> Labels {
    vec![("target", target.to_owned())]
}

/// A label set with `target` and one more label.
pub fn target_and(target: &str, key: &'static str, value: impl Into<String>) -> Labels {
    vec![("target", target.to_owned()), (key, value.into())]
}

/// The `/metrics` route, to merge into a service's HTTP router.
pub fn routes() -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )],
                metrics().render(),
            )
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_families_and_series() {
        let m = metrics();
        m.events
            .get_or_create(&target_and("t-1", "result", "succeeded"))
            .inc();
        m.scim_duration
            .get_or_create(&target_and("t-1", "method", "GET"))
            .observe(0.01);
        let text = m.render();
        assert!(
            text.contains("scimrelay_events_total{target=\"t-1\",result=\"succeeded\"} 1"),
            "{text}"
        );
        assert!(text.contains("scimrelay_scim_request_duration_seconds_bucket"));
        assert!(text.contains("# TYPE scimrelay_events counter"), "{text}");
    }

    #[test]
    fn the_grafana_dashboard_names_only_registered_families() {
        let dashboard = include_str!("../../../deploy/grafana/scimrelay-dashboard.json");
        let source = include_str!("metrics.rs");
        let mut checked = 0;
        for (i, _) in dashboard.match_indices("scimrelay_") {
            let name: String = dashboard[i + "scimrelay_".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            let base = ["_total", "_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(
                source.contains(&format!("\"{base}\",")),
                "dashboard uses scimrelay_{name}, not registered here"
            );
            checked += 1;
        }
        assert!(checked > 15, "{checked}");
    }
}
