//! The one chokepoint every SCIM request of a provider goes through: breaker → limits → HTTP →
//! assessment (the provider reads the answer for throttling, health and quota hints).
//!
//! A throttling answer is not a failure of the event: the target pauses (see [`crate::limits`])
//! and the same request is sent again after the pause, up to [`MAX_THROTTLE_RETRIES`] times.
//!
//! Every request sent is one `scim` span (method, path template, status, attempt within the
//! throttling loop, time waited for the limits, throttled) and feeds the per-target metrics
//! (requests, latency, rate-limit waits, throttling, concurrency window, in-flight, quarantine).
//!
//! In plan mode reads are sent (so the plan is computed against the real remote state) and
//! writes are recorded instead, answered with a synthetic success, so a provider's convergence
//! code runs unchanged in both modes.

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tracing::Instrument as _;

use scimrelay_proto::v1::{PendingReference, PlannedRequest, ReferenceKind};
use scimrelay_scim::{ScimClient, ScimError, ScimRequest, ScimResponse};

use crate::breaker::Breaker;
use crate::limits::{Lane, Limits};
use crate::provider::Provider;
use scimrelay_core::metrics::{self, metrics};

/// Placeholder id given to objects a plan would create.
pub const PLANNED_ID: &str = "planned";
/// Throttled re-sends of one request before the throttling becomes the request's error.
pub const MAX_THROTTLE_RETRIES: u32 = 20;
/// The delay tier a message waits on when no request slot came within the hold bound.
const SLOT_RETRY: Duration = Duration::from_secs(5);
/// The default of [`TargetIo::max_hold`] (`SCIMRELAY_MAX_HOLD_SECS`).
pub const MAX_HOLD: Duration = Duration::from_secs(60);

/// A target's outbound side, shared by every event of the target.
pub struct TargetIo {
    /// The SCIM client (base URL, auth, timeout).
    pub client: ScimClient,
    /// Ceiling, adaptive rate and concurrency.
    pub limits: Limits,
    /// Quarantine.
    pub breaker: Breaker,
    /// Replicas of this connector sharing the target's budgets (at least 1): a provider's own
    /// per-target budget (e.g. GitHub's user creations per hour) is divided by it, like the
    /// ceiling in [`TargetIo::limits`].
    pub replicas: u32,
    /// The longest a message is held by this consumer, counted from its delivery (waiting
    /// behind earlier messages of its subject included): a wait for the target (a quarantine,
    /// a throttling pause, a provider budget, a request slot) that would end past it is
    /// [`ScimError::Deferred`], and the message waits on a delay tier instead. Well below
    /// RabbitMQ's consumer timeout (30 min by default), which closes the channel of a message
    /// held longer — and with it every message of the shard — and short enough that a prefetch
    /// slot is not blocked for long. Only a request already sent runs past it (by at most the
    /// target's `timeout_secs`).
    pub max_hold: Duration,
}

impl TargetIo {
    /// A target's outbound side as one of `replicas` connector replicas runs it: its SCIM client
    /// (`user_agent` sent on every request), its limits with the ceiling — the target's
    /// `rate_limit_per_sec`, else the provider's published default — divided between the
    /// replicas, and a breaker of its own. The runtime and the test harness both build it
    /// here, so tests drive a target exactly as the service does.
    pub fn new(
        target: &scimrelay_core::config::TargetConfig,
        auth: scimrelay_scim::Auth,
        defaults: &crate::ProviderDefaults,
        replicas: u32,
        max_hold: Duration,
        user_agent: String,
    ) -> Result<Self, ScimError> {
        let replicas = replicas.max(1);
        let client = ScimClient::new(scimrelay_scim::ClientConfig {
            base_url: target.base_url.clone(),
            auth,
            timeout_secs: target.timeout_secs,
            user_agent,
            content_type: "application/scim+json".into(),
            ca_file: target.tls.ca_file.clone(),
            max_body_bytes: target.max_response_bytes,
        })?;
        let limits = Limits::new(&crate::limits::LimitsConfig {
            ceiling_per_sec: target
                .rate_limit_per_sec
                .or(defaults.rate_limit_per_sec)
                .map(|r| r / f64::from(replicas)),
            min_concurrency: target.concurrency.min,
            max_concurrency: target.concurrency.max,
            interactive_share: target.interactive_share,
        });
        Ok(TargetIo {
            client,
            limits,
            breaker: Breaker::default(),
            replicas,
            max_hold,
        })
    }
}

/// Sends (or plans) SCIM requests for one event at one target.
pub struct Exec {
    io: Arc<TargetIo>,
    provider: Arc<dyn Provider>,
    plan: Option<Mutex<Vec<PlannedRequest>>>,
    stats: Counters,
    target: String,
    /// When the message must be given back (see [`TargetIo::max_hold`]).
    deadline: tokio::time::Instant,
    /// The lane its requests wait in at the target's limits.
    lane: Lane,
    /// References to users not at the target yet found by this converge, when it resolved its
    /// references (see [`Exec::references_pending`]).
    pending: Mutex<Option<Vec<PendingReference>>>,
    /// A re-trigger's converge: references resolve from the state of record only.
    retrigger: bool,
}

/// The running counts behind [`ExecStats`], kept in atomics so that counting a request takes
/// no lock on the request path: only the outcome (unanswered writes) and the tests read them,
/// through [`Exec::stats`].
#[derive(Debug, Default)]
struct Counters {
    /// See [`ExecStats::last_status`].
    last_status: AtomicU16,
    /// See [`ExecStats::requests`].
    requests: AtomicU32,
    /// See [`ExecStats::throttled`].
    throttled: AtomicU32,
    /// [`ExecStats::waited`] in nanoseconds (a u64 holds centuries).
    waited_nanos: AtomicU64,
    /// See [`ExecStats::unanswered_writes`].
    unanswered_writes: AtomicU32,
}

impl Counters {
    /// Counts one answered (or unanswered) request.
    fn record(&self, status: u16, waited: Duration, throttled: bool, unanswered_write: bool) {
        // Relaxed: each counter stands alone; they are read after the convergence's
        // requests ended, never as a consistent set while requests are in flight.
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.waited_nanos.fetch_add(
            u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.throttled
            .fetch_add(u32::from(throttled), Ordering::Relaxed);
        self.last_status.store(status, Ordering::Relaxed);
        self.unanswered_writes
            .fetch_add(u32::from(unanswered_write), Ordering::Relaxed);
    }

    /// The counts so far.
    fn snapshot(&self) -> ExecStats {
        ExecStats {
            last_status: self.last_status.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
            waited: Duration::from_nanos(self.waited_nanos.load(Ordering::Relaxed)),
            unanswered_writes: self.unanswered_writes.load(Ordering::Relaxed),
        }
    }
}

/// What happened to the requests of one convergence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// The status of the last response received (0 if none).
    pub last_status: u16,
    /// Requests sent.
    pub requests: u32,
    /// Throttling answers received.
    pub throttled: u32,
    /// Time spent waiting for the ceiling, pauses and the window.
    pub waited: Duration,
    /// Writes sent that got no answer (timed out, connection lost): the server may still
    /// apply them.
    pub unanswered_writes: u32,
}

impl Exec {
    /// An executor for one convergence; `plan` records writes instead of sending them.
    pub fn new(io: Arc<TargetIo>, provider: Arc<dyn Provider>, plan: bool) -> Self {
        Exec {
            provider,
            plan: plan.then(|| Mutex::new(Vec::new())),
            stats: Counters::default(),
            target: String::new(),
            deadline: tokio::time::Instant::now() + io.max_hold,
            io,
            lane: Lane::Bulk,
            pending: Mutex::new(None),
            retrigger: false,
        }
    }

    /// Marks a re-trigger's converge (docs/design.md, "References"): the users it references
    /// resolve from the state of record only. It runs because the sweep saw some of them
    /// arrive there; the others were looked up at the target by the converge that left them
    /// pending, and looking them up again on every re-trigger would spend the quota on reads.
    pub fn for_retrigger(mut self, retrigger: bool) -> Self {
        self.retrigger = retrigger;
        self
    }

    /// Whether this is a re-trigger's converge (see [`Exec::for_retrigger`]).
    pub fn is_retrigger(&self) -> bool {
        self.retrigger
    }

    /// Notes that this converge resolved references of `kind` and that `users` (platform ids)
    /// are not at the target yet: the subject converges without them, and the state of record
    /// keeps them pending until they are (docs/design.md, "References"). Called with no users,
    /// it notes that every reference of the kind resolved.
    pub fn references_pending(&self, kind: ReferenceKind, users: &[String]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let list = pending.get_or_insert_with(Vec::new);
        list.retain(|p| p.kind != kind as i32 || !p.dropped.is_empty());
        list.extend(users.iter().map(|u| PendingReference {
            user_id: u.clone(),
            kind: kind as i32,
            ..Default::default()
        }));
    }

    /// Notes references of `kind` to `users` that will not be completed (`why`): recorded as
    /// dropped, and completed after all if such a user is at the target again.
    pub fn references_dropped(&self, kind: ReferenceKind, users: &[String], why: &str) {
        if users.is_empty() {
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let list = pending.get_or_insert_with(Vec::new);
        list.extend(users.iter().map(|u| PendingReference {
            user_id: u.clone(),
            kind: kind as i32,
            dropped: why.to_owned(),
            ..Default::default()
        }));
    }

    /// The references this converge left pending; `None` when it resolved none.
    pub fn pending_references(&self) -> Option<Vec<PendingReference>> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The lane its requests wait in.
    pub fn lane(&self) -> Lane {
        self.lane
    }

    /// Sends its requests in `lane` (an interactive message's are served first).
    pub fn in_lane(mut self, lane: Lane) -> Self {
        self.lane = lane;
        self
    }

    /// Counts the hold bound from `since`, when the message was delivered to this consumer.
    pub fn held_since(mut self, since: tokio::time::Instant) -> Self {
        self.deadline = since + self.io.max_hold;
        self
    }

    /// Names the target in metrics labels and span attributes.
    pub fn with_target(mut self, target: &str) -> Self {
        self.target = target.to_owned();
        self
    }

    /// This replica's share of a per-target budget of `per_target` (rounded up, at least 1).
    pub fn share(&self, per_target: u64) -> u64 {
        per_target
            .div_ceil(u64::from(self.io.replicas.max(1)))
            .max(1)
    }

    /// What is left of the message's hold bound (see [`TargetIo::max_hold`]): a provider's own
    /// wait (a budget) longer than this is a deferral.
    pub fn hold_left(&self) -> Duration {
        self.deadline
            .saturating_duration_since(tokio::time::Instant::now())
    }

    /// The profile's reading of a failed request ([`Provider::classify`]), so every shared
    /// operation of [`crate::kit`] fails the way the profile says its server means it.
    pub fn classify(&self, e: &ScimError) -> crate::ConvergeError {
        self.provider.classify(e)
    }

    /// Whether writes are only planned.
    pub fn is_plan(&self) -> bool {
        self.plan.is_some()
    }

    /// Sends a request (reads always; writes unless planning).
    pub async fn send(&self, req: ScimRequest) -> Result<ScimResponse, ScimError> {
        if let (Some(plan), true) = (&self.plan, req.is_write()) {
            return Ok(record_plan(plan, &req));
        }
        let mut throttles = 0;
        loop {
            self.hold_bound()?;
            // Both are given back if this wait ends first (see `limits::Slot`, `breaker::Ticket`).
            let admitted = tokio::time::timeout_at(self.deadline, async {
                let ticket = self.io.breaker.allow().await;
                let slot = self.io.limits.acquire_slot(self.lane).await;
                (ticket, slot)
            })
            .await;
            let Ok((ticket, slot)) = admitted else {
                return Err(ScimError::Deferred {
                    wait: SLOT_RETRY,
                    reason: format!(
                        "no request slot at the target within {}s of delivery (its rate ceiling and concurrency window are taken)",
                        self.io.max_hold.as_secs()
                    ),
                });
            };
            if !self.io.breaker.still_allowed(&ticket) {
                // The target was quarantined while this request waited for its slot.
                slot.cancel();
                continue;
            }
            let waited = slot.waited();
            let template = path_template(&req.path);
            let span = tracing::info_span!(
                "scim request",
                "otel.name" = format!("{} {}", req.method, template),
                "otel.kind" = "client",
                "otel.status_code" = tracing::field::Empty,
                "http.request.method" = %req.method,
                "url.template" = %template,
                "http.response.status_code" = tracing::field::Empty,
                "scimrelay.target" = %self.target,
                "scimrelay.send_attempt" = throttles + 1,
                "scimrelay.waited_ms" = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX),
                "scimrelay.throttled" = tracing::field::Empty,
                "error.type" = tracing::field::Empty,
            );
            let started = tokio::time::Instant::now();
            let result = self.io.client.execute(&req).instrument(span.clone()).await;
            let elapsed = started.elapsed();
            let assessment = self.provider.assess(result.as_ref(), elapsed);
            slot.release(assessment.feedback);
            let failure = match (&result, assessment.health) {
                (_, crate::breaker::Health::Fine) | (Ok(_), _) => None,
                (Err(e), _) => Some(e.to_string()),
            };
            self.io.breaker.record_answer(assessment.health, failure);
            if let Some(hint) = assessment.hint {
                self.io.limits.hint(hint);
            }
            let throttled = matches!(assessment.feedback, crate::limits::Feedback::Throttled(_));
            let status = match &result {
                Ok(r) => r.status,
                Err(e) => e.status().unwrap_or(0),
            };
            self.stats.record(
                status,
                waited,
                throttled,
                req.is_write()
                    && matches!(&result, Err(ScimError::Timeout | ScimError::Transport(_))),
            );
            span.record("scimrelay.throttled", throttled);
            if status != 0 {
                span.record("http.response.status_code", status);
            }
            if status == 0 || status >= 500 || throttled {
                span.record("otel.status_code", "ERROR");
                span.record(
                    "error.type",
                    if status == 0 {
                        "no_response".to_owned()
                    } else {
                        status.to_string()
                    },
                );
            }
            self.observe(&req, status, elapsed, waited, throttled);
            if throttled && throttles < MAX_THROTTLE_RETRIES {
                throttles += 1;
                continue;
            }
            return result;
        }
    }

    /// [`ScimError::Deferred`] when the target will not take requests before the hold bound
    /// ([`TargetIo::max_hold`] from delivery): quarantined, or paused by throttling, for longer.
    fn hold_bound(&self) -> Result<(), ScimError> {
        let left = self.hold_left();
        if let Some(wait) = self.io.breaker.open_remaining().filter(|w| *w > left) {
            return Err(ScimError::Deferred {
                wait,
                reason: format!(
                    "target quarantined: {}",
                    self.io.breaker.quarantined().unwrap_or_default()
                ),
            });
        }
        if let Some(until) = self.io.limits.paused_until() {
            let wait = until.saturating_duration_since(tokio::time::Instant::now());
            if wait > left {
                return Err(ScimError::Deferred {
                    wait,
                    reason: "the provider asked to pause the target (throttling)".into(),
                });
            }
        }
        Ok(())
    }

    fn observe(
        &self,
        req: &ScimRequest,
        status: u16,
        elapsed: Duration,
        waited: Duration,
        throttled: bool,
    ) {
        let m = metrics();
        let method = req.method.to_string();
        m.scim_requests
            .get_or_create(&vec![
                ("target", self.target.clone()),
                ("method", method.clone()),
                ("status", status.to_string()),
            ])
            .inc();
        m.scim_duration
            .get_or_create(&metrics::target_and(&self.target, "method", method))
            .observe(elapsed.as_secs_f64());
        m.rate_limit_wait
            .get_or_create(&metrics::target(&self.target))
            .observe(waited.as_secs_f64());
        if throttled {
            m.throttled
                .get_or_create(&metrics::target(&self.target))
                .inc();
        }
        observe_gauges(&self.target, &self.io);
    }

    /// The status of the last response received (0 if none).
    pub fn last_status(&self) -> u16 {
        self.stats.last_status.load(Ordering::Relaxed)
    }

    /// Statistics of this convergence's requests.
    pub fn stats(&self) -> ExecStats {
        self.stats.snapshot()
    }

    /// The writes a plan recorded.
    pub fn planned(&self) -> Vec<PlannedRequest> {
        self.plan
            .as_ref()
            .and_then(|p| p.lock().ok().map(|v| v.clone()))
            .unwrap_or_default()
    }
}

/// Creates a target's fault series at zero when the connector starts serving it: dead letters,
/// held deprovisionings and throttling answers. A series born at its first increment shows no
/// increase to `rate()` or `increase()`, so the first dead letter or hold would never reach a
/// dashboard panel or an alert (deploy/prometheus/alerts.yml).
pub fn init_fault_series(target: &str) {
    let m = metrics();
    // Creating the series is the point; the read guard each call returns is released at once.
    drop(
        m.events
            .get_or_create(&metrics::target_and(target, "result", "dead-lettered")),
    );
    drop(
        m.event_duration
            .get_or_create(&metrics::target_and(target, "result", "held")),
    );
    drop(m.throttled.get_or_create(&metrics::target(target)));
    drop(m.quarantined.get_or_create(&metrics::target(target)));
}

/// Sets a target's gauges: concurrency window, in-flight requests, quarantine.
pub fn observe_gauges(target: &str, io: &TargetIo) {
    let m = metrics();
    let labels = metrics::target(target);
    m.concurrency_limit
        .get_or_create(&labels)
        .set(io.limits.window() as i64);
    m.in_flight
        .get_or_create(&labels)
        .set(i64::from(io.limits.in_flight()));
    m.quarantined
        .get_or_create(&labels)
        .set(i64::from(io.breaker.quarantined().is_some()));
}

/// The path of a SCIM request with ids replaced by `{id}` and no query string, for span names
/// and attributes: `/Users/ada@example.com?x=y` → `/Users/{id}`. Only the SCIM resource-type and
/// endpoint names are kept verbatim.
pub fn path_template(path: &str) -> String {
    const KNOWN: &[&str] = &[
        "Users",
        "Groups",
        "ServiceProviderConfig",
        "ResourceTypes",
        "Schemas",
        "Bulk",
        "Me",
        ".search",
    ];
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let mut out = String::new();
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        if KNOWN.contains(&seg) {
            out.push_str(seg);
        } else {
            out.push_str("{id}");
        }
    }
    if out.is_empty() {
        out.push('/');
    }
    out
}

fn record_plan(plan: &Mutex<Vec<PlannedRequest>>, req: &ScimRequest) -> ScimResponse {
    let body = req
        .body
        .as_ref()
        .map(|b| mask(b).to_string())
        .unwrap_or_default();
    if let Ok(mut p) = plan.lock() {
        p.push(PlannedRequest {
            method: req.method.to_string(),
            path: req.path.clone(),
            body,
        });
    }
    let mut synthetic = req.body.clone().unwrap_or(Value::Null);
    if let Value::Object(m) = &mut synthetic {
        m.entry("id").or_insert_with(|| json!(PLANNED_ID));
    }
    ScimResponse {
        status: if req.method == http::Method::POST {
            201
        } else {
            200
        },
        headers: Default::default(),
        body: (!synthetic.is_null()).then_some(synthetic),
    }
}

/// Masks e-mails, phone numbers and passwords in a request body for a plan report.
pub fn mask(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, val)| {
                    let masked = match k.as_str() {
                        "password" => json!("***"),
                        "phoneNumbers" | "addresses" => json!("***"),
                        _ => mask(val),
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
        Value::String(s) if s.contains('@') => json!("***@***"),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Feedback, LimitsConfig};
    use scimrelay_scim::{Auth, ClientConfig};

    /// A target nobody answers (127.0.0.1:9, nothing listens): these tests end before a
    /// request is sent, or fail by sending one.
    fn io(max_hold: Duration, max_concurrency: u32) -> Arc<TargetIo> {
        let mut config = ClientConfig::new("http://127.0.0.1:9/scim/v2", Auth::None);
        config.timeout_secs = 1;
        Arc::new(TargetIo {
            client: ScimClient::new(config).expect("client"),
            limits: Limits::new(&LimitsConfig {
                ceiling_per_sec: None,
                min_concurrency: 1,
                max_concurrency,
                interactive_share: 0.2,
            }),
            breaker: Breaker::default(),
            replicas: 1,
            max_hold,
        })
    }

    struct Silent;
    impl Provider for Silent {
        fn kind(&self) -> scimrelay_core::config::ProviderKind {
            scimrelay_core::config::ProviderKind::SCIM
        }

        fn about(&self) -> &'static str {
            "A profile that sends nothing (tests)."
        }

        fn converge<'a>(
            &'a self,
            _input: crate::provider::ConvergeInput<'a>,
        ) -> futures::future::BoxFuture<
            'a,
            Result<crate::provider::Converged, crate::provider::ConvergeError>,
        > {
            unreachable!("not converged in these tests")
        }
    }

    fn deferred(result: Result<ScimResponse, ScimError>) -> (Duration, String) {
        match result {
            Err(ScimError::Deferred { wait, reason }) => (wait, reason),
            other => panic!("expected a deferral, got {other:?}"),
        }
    }

    /// A throttling pause longer than what is left of the message's hold bound — counted from
    /// its delivery, not from when its handler started — is a deferral, without a request.
    #[tokio::test]
    async fn a_pause_past_the_hold_bound_defers_counted_from_delivery() {
        let io = io(Duration::from_secs(10), 4);
        let permit = io.limits.acquire(Lane::Bulk).await;
        io.limits
            .release(permit, Feedback::Throttled(Some(Duration::from_secs(6))));
        // Delivered 5 s ago (it waited behind its subject's earlier message): 5 s are left.
        let exec = Exec::new(io.clone(), Arc::new(Silent), false)
            .held_since(tokio::time::Instant::now() - Duration::from_secs(5));
        assert!(exec.hold_left() <= Duration::from_secs(5));
        let (wait, reason) = deferred(exec.send(ScimRequest::get("/Users/u1")).await);
        assert!(wait > Duration::from_secs(5), "{wait:?}");
        assert!(reason.contains("throttling"), "{reason}");
        assert_eq!(exec.stats().requests, 0);
        // A message delivered now has the whole bound: the same pause is waited out here
        // (the request is then sent, and fails: nothing listens).
        let fresh = Exec::new(io, Arc::new(Silent), false);
        assert!(fresh.hold_left() > Duration::from_secs(9));
    }

    /// A message that cannot get a request slot before its hold bound (the window taken by
    /// requests in flight) gives its place back and waits on a delay tier; the slot it waited
    /// for is not lost.
    #[tokio::test]
    async fn no_slot_within_the_hold_bound_defers_and_leaks_nothing() {
        let io = io(Duration::from_millis(300), 1);
        let held = io.limits.acquire_slot(Lane::Bulk).await;
        let exec = Exec::new(io.clone(), Arc::new(Silent), false);
        let (wait, reason) = deferred(exec.send(ScimRequest::get("/Users/u1")).await);
        assert_eq!(wait, SLOT_RETRY);
        assert!(reason.contains("no request slot"), "{reason}");
        assert_eq!(io.limits.in_flight(), 1, "only the slot held here");
        held.cancel();
        assert_eq!(io.limits.in_flight(), 0);
    }

    #[test]
    fn fault_series_exist_at_zero_before_the_first_fault() {
        init_fault_series("t-faults");
        let text = metrics().render();
        for series in [
            "scimrelay_events_total{target=\"t-faults\",result=\"dead-lettered\"} 0",
            "scimrelay_event_duration_seconds_count{target=\"t-faults\",result=\"held\"} 0",
            "scimrelay_throttled_total{target=\"t-faults\"} 0",
            "scimrelay_quarantined{target=\"t-faults\"} 0",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn path_templates_hold_no_ids_or_queries() {
        assert_eq!(path_template("/Users/ada@example.com"), "/Users/{id}");
        assert_eq!(
            path_template("Users?filter=userName eq \"a@b.c\""),
            "/Users"
        );
        assert_eq!(path_template("/Groups/123/extra?x=1"), "/Groups/{id}/{id}");
        assert_eq!(
            path_template("/ServiceProviderConfig"),
            "/ServiceProviderConfig"
        );
        assert_eq!(path_template(""), "/");
    }

    #[test]
    fn masks_emails_phones_and_passwords() {
        let body = json!({"userName": "alice@example.com", "password": "hunter2",
                          "emails": [{"value": "alice@example.com", "primary": true}],
                          "phoneNumbers": [{"value": "+1 555 0100"}], "displayName": "Alice"});
        let m = mask(&body).to_string();
        assert!(
            !m.contains("alice@example.com") && !m.contains("hunter2") && !m.contains("555"),
            "{m}"
        );
        assert!(m.contains("Alice"));
    }
}
