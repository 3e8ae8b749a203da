//! The circuit breaker of a target: quarantine instead of hammering a target that cannot work.
//!
//! It opens (quarantines the target) when
//! - [`AUTH_TRIP`] consecutive answers are authentication failures (a revoked or expired token:
//!   every further call would fail the same way and some providers lock out such callers), or
//! - at least [`RATIO_TRIP`] of the last [`WINDOW`] requests failed for transient reasons.
//!
//! While open no request is sent: the target's messages stay in their queues (unacked work waits
//! at the breaker), nothing is failed. After the open period one probe request goes through
//! (half-open); its success closes the breaker, its failure re-opens it for twice as long (up to
//! [`MAX_OPEN`]). The reason is kept for the status service.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Consecutive authentication failures that quarantine a target.
pub const AUTH_TRIP: u32 = 3;
/// Requests in the failure-ratio window.
pub const WINDOW: usize = 50;
/// Failure ratio over the window that quarantines a target.
pub const RATIO_TRIP: f64 = 0.8;
/// First quarantine period.
pub const FIRST_OPEN: Duration = Duration::from_secs(2);
/// Longest quarantine period between probes.
pub const MAX_OPEN: Duration = Duration::from_secs(60);

/// How one request ended, for the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Any answer that is not a failure of the target itself (2xx, and 4xx about the request).
    Fine,
    /// 401, or a 403 that is not throttling: the credentials do not work.
    AuthFailed,
    /// Timeout, connection failure, 5xx.
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Closed,
    Open { until: Instant, reason: String },
    HalfOpen { probing: bool, reason: String },
}

struct State {
    phase: Phase,
    /// What the last failed request met (see [`Breaker::record_answer`]).
    last_failure: Option<String>,
    auth_failures: u32,
    recent: VecDeque<bool>,
    open_for: Duration,
    trips: u64,
    since_ms: Option<i64>,
}

/// One target's breaker.
pub struct Breaker {
    state: Mutex<State>,
}

impl Default for Breaker {
    fn default() -> Self {
        Breaker {
            state: Mutex::new(State {
                phase: Phase::Closed,
                last_failure: None,
                auth_failures: 0,
                recent: VecDeque::with_capacity(WINDOW),
                open_for: FIRST_OPEN,
                trips: 0,
                since_ms: None,
            }),
        }
    }
}

/// Whether a request may go: a permit, or how long to wait before asking again.
enum Decision {
    Go { probe: bool },
    Wait(Duration),
}

/// The right to send one request, from [`Breaker::allow`]. A probe's ticket dropped before
/// its answer was recorded (the request cancelled with its handler when the broker session
/// ended) hands the probe to the next request; otherwise the target would wait for an answer
/// that never comes, quarantined for good.
pub struct Ticket<'a> {
    breaker: &'a Breaker,
    /// This request is the half-open probe.
    pub probe: bool,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if !self.probe {
            return;
        }
        let mut s = self.breaker.lock();
        // Still waiting for this probe's answer: let another request probe.
        if let Phase::HalfOpen {
            probing: true,
            reason,
        } = &s.phase
        {
            s.phase = Phase::HalfOpen {
                probing: false,
                reason: reason.clone(),
            };
        }
    }
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn decide(&self) -> Decision {
        let mut s = self.lock();
        let now = Instant::now();
        match s.phase.clone() {
            Phase::Closed => Decision::Go { probe: false },
            Phase::Open { until, reason } => {
                if now >= until {
                    s.phase = Phase::HalfOpen {
                        probing: true,
                        reason,
                    };
                    Decision::Go { probe: true }
                } else {
                    Decision::Wait(until - now)
                }
            }
            Phase::HalfOpen { probing: true, .. } => Decision::Wait(Duration::from_millis(100)),
            Phase::HalfOpen {
                probing: false,
                reason,
            } => {
                s.phase = Phase::HalfOpen {
                    probing: true,
                    reason,
                };
                Decision::Go { probe: true }
            }
        }
    }

    /// How long the target stays quarantined before the next probe (`None` while closed or
    /// half-open).
    pub fn open_remaining(&self) -> Option<Duration> {
        match &self.lock().phase {
            Phase::Open { until, .. } => Some(until.saturating_duration_since(Instant::now())),
            _ => None,
        }
    }

    /// Waits until a request may be sent (immediately while closed).
    pub async fn allow(&self) -> Ticket<'_> {
        loop {
            match self.decide() {
                Decision::Go { probe } => {
                    return Ticket {
                        breaker: self,
                        probe,
                    };
                }
                Decision::Wait(d) => tokio::time::sleep(d.min(Duration::from_millis(500))).await,
            }
        }
    }

    /// Whether a ticket still holds: requests that queued behind the limits while the breaker
    /// tripped must not go out anyway. The probe keeps its right while half-open.
    pub fn still_allowed(&self, ticket: &Ticket<'_>) -> bool {
        match &self.lock().phase {
            Phase::Closed => true,
            Phase::HalfOpen { .. } => ticket.probe,
            Phase::Open { .. } => false,
        }
    }

    /// Records how a request ended.
    pub fn record(&self, health: Health) {
        self.record_answer(health, None);
    }

    /// Records how a request ended and, for a failure, what it was: a quarantine's reason
    /// names the last failure, so an operator sees *what* answers (a revoked token's 401, a
    /// gateway's redirect to its login page) without reading logs.
    pub fn record_answer(&self, health: Health, failure: Option<String>) {
        let mut s = self.lock();
        if health != Health::Fine
            && let Some(f) = failure
        {
            s.last_failure = Some(f);
        }
        let now = Instant::now();
        if let Phase::HalfOpen { reason, .. } = s.phase.clone() {
            if health == Health::Fine {
                tracing::info!("target recovered; quarantine lifted");
                s.phase = Phase::Closed;
                s.open_for = FIRST_OPEN;
                s.auth_failures = 0;
                s.recent.clear();
            } else {
                s.open_for = (s.open_for * 2).min(MAX_OPEN);
                let until = now + s.open_for;
                s.phase = Phase::Open { until, reason };
            }
            return;
        }
        if s.recent.len() == WINDOW {
            s.recent.pop_front();
        }
        s.recent.push_back(health != Health::Fine);
        s.auth_failures = if health == Health::AuthFailed {
            s.auth_failures + 1
        } else {
            0
        };
        if !matches!(s.phase, Phase::Closed) {
            return;
        }
        let failed = s.recent.iter().filter(|f| **f).count();
        let reason = if s.auth_failures >= AUTH_TRIP {
            Some(format!(
                "{} consecutive authentication failures (token revoked or expired?)",
                s.auth_failures
            ))
        } else if s.recent.len() == WINDOW && failed as f64 >= RATIO_TRIP * WINDOW as f64 {
            Some(format!("{failed} of the last {WINDOW} requests failed"))
        } else {
            None
        };
        if let Some(mut reason) = reason {
            if let Some(last) = &s.last_failure {
                reason = format!("{reason}; the last: {last}");
            }
            tracing::warn!(reason = %reason, "target quarantined");
            s.trips += 1;
            s.since_ms = Some(scimrelay_core::now_ms());
            let until = now + s.open_for;
            s.phase = Phase::Open { until, reason };
        }
    }

    /// The quarantine reason while open or probing; `None` when closed.
    ///
    /// ```
    /// # use scimrelay_connector::breaker::{Breaker, Health, AUTH_TRIP};
    /// let b = Breaker::default();
    /// for _ in 0..AUTH_TRIP {
    ///     b.record_answer(Health::AuthFailed, Some("HTTP 302, a redirect to /login".into()));
    /// }
    /// let reason = b.quarantined().unwrap_or_default();
    /// assert!(reason.contains("authentication failures") && reason.ends_with("the last: HTTP 302, a redirect to /login"));
    /// ```
    pub fn quarantined(&self) -> Option<String> {
        match &self.lock().phase {
            Phase::Closed => None,
            Phase::Open { reason, .. } | Phase::HalfOpen { reason, .. } => Some(reason.clone()),
        }
    }

    /// When the current quarantine began (Unix ms), if quarantined.
    pub fn quarantined_since_ms(&self) -> Option<i64> {
        let s = self.lock();
        if matches!(s.phase, Phase::Closed) {
            return None;
        }
        s.since_ms
    }

    /// How many times the breaker opened.
    pub fn trips(&self) -> u64 {
        self.lock().trips
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_probe_abandoned_before_its_answer_hands_the_probe_on() {
        let b = Breaker::default();
        for _ in 0..AUTH_TRIP {
            let _t = b.allow().await;
            b.record(Health::AuthFailed);
        }
        let probe = b.allow().await; // waits out the open period
        assert!(probe.probe);
        // Its request is cancelled with its handler: no answer is ever recorded.
        drop(probe);
        let next = tokio::time::timeout(Duration::from_secs(1), b.allow())
            .await
            .expect("the next request may probe at once");
        assert!(next.probe);
        b.record(Health::Fine);
        assert!(b.quarantined().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn auth_failures_quarantine_then_a_probe_recovers() {
        let b = Breaker::default();
        for _ in 0..AUTH_TRIP {
            b.allow().await;
            b.record(Health::AuthFailed);
        }
        assert!(
            b.quarantined()
                .is_some_and(|r| r.contains("authentication"))
        );
        assert!(
            !b.quarantined().is_some_and(|r| r.contains("the last")),
            "no failure was described"
        );
        let start = Instant::now();
        b.allow().await; // waits out the open period, then probes
        assert!(start.elapsed() >= FIRST_OPEN);
        b.record(Health::AuthFailed);
        // Probe failed: open twice as long.
        let start = Instant::now();
        b.allow().await;
        assert!(start.elapsed() >= FIRST_OPEN * 2);
        b.record(Health::Fine);
        assert!(b.quarantined().is_none());
        assert_eq!(b.trips(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_high_failure_ratio_quarantines() {
        let b = Breaker::default();
        for i in 0..WINDOW {
            b.record(if i % 10 == 0 {
                Health::Fine
            } else {
                Health::Failed
            });
        }
        assert!(b.quarantined().is_some_and(|r| r.contains("of the last")));
    }

    #[tokio::test(start_paused = true)]
    async fn occasional_failures_do_not() {
        let b = Breaker::default();
        for i in 0..500 {
            b.record(if i % 3 == 0 {
                Health::Failed
            } else {
                Health::Fine
            });
            if i % 7 == 0 {
                b.record(Health::AuthFailed);
            }
        }
        assert!(b.quarantined().is_none());
    }
}
