//! The processing decision, as pure functions of the message, the subject's state of record and
//! the converge's answer — so every branch is a row of a table test, not an end-to-end run.
//!
//! For a taken message with version V, the state of record holds the latest accepted desired
//! version D (D ≥ V: taking the message recorded V when it was the highest) and the applied
//! version A:
//!
//! | condition                                   | decision                                   |
//! |---------------------------------------------|--------------------------------------------|
//! | plan mode                                   | converge (plan: compute, send no write)    |
//! | V < D                                       | `superseded`: a newer desired state exists |
//! | A ≥ V, applied by this very event           | `succeeded` noop: an earlier attempt of this message applied it and its outcome was lost |
//! | A ≥ V, applied by another event             | `superseded`: that version was applied     |
//! | fingerprint of the desired state = the one recorded after the last successful converge | `succeeded` noop, A := V recorded |
//! | otherwise                                   | converge the latest accepted desired state (this event, or the one accepted first at V) |
//!
//! A failed or dead-lettered attempt zeroes the recorded fingerprint, so the no-op row never
//! trusts a target an attempt may have left half-changed. After a converge, [`settle`] turns the
//! provider's answer into the step: a terminal outcome, a counted retry, or an uncounted wait
//! (a quarantined target is not the event's fault).

use std::time::Duration;

use prost::Message;
use rand::Rng;

use scimrelay_core::amqp;
use scimrelay_core::config::RetryConfig;
use scimrelay_proto::v1::{
    EventKind, IdentityEvent, Operation, Outcome, OutcomeResult, PlannedRequest, Presence,
    SubjectRecord,
};

use crate::provider::{ConvergeError, Converged, FailureClass};

/// What to do with a taken message (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// A `superseded` outcome, nothing sent; the detail says by what.
    Superseded(String),
    /// A `succeeded` noop outcome, nothing sent and nothing recorded: this event was applied.
    AlreadyApplied(String),
    /// A `succeeded` noop outcome, nothing sent: the target already holds this desired state
    /// (the applied version moves to the event's).
    Unchanged,
    /// Converge the latest accepted desired state.
    Converge,
}

/// The decision for `event` given its subject's `record`, read after the event was taken
/// (`plan`: nothing is recorded and every message is converged as a plan).
pub fn decide(event: &IdentityEvent, record: &SubjectRecord, plan: bool) -> Decision {
    if plan || !record.found {
        return Decision::Converge;
    }
    let (v, d, a) = (
        event.version,
        record.desired_version,
        record.applied_version,
    );
    if v < d {
        return Decision::Superseded(format!(
            "version {d} was accepted after this one (event has {v})"
        ));
    }
    if a >= v {
        return if record.applied_event_id == event.id {
            Decision::AlreadyApplied(format!(
                "version {v} was applied by an earlier attempt of this event"
            ))
        } else {
            Decision::Superseded(format!("version {a} already applied (event has {v})"))
        };
    }
    let desired = record.desired.as_ref().unwrap_or(event);
    if a > 0 && record.fingerprint != 0 && record.fingerprint == fingerprint(desired) {
        return Decision::Unchanged;
    }
    Decision::Converge
}

/// A stable fingerprint of a desired state (kind + subject state, not the version or event
/// id): FNV-1a over the protobuf encoding (maps encode in key order), so it survives restarts
/// and is the same in every replica. Never 0, which the state of record reserves for "unknown".
pub fn fingerprint(event: &IdentityEvent) -> u64 {
    let mut bytes = event.kind.to_le_bytes().to_vec();
    if let Some(u) = &event.user {
        bytes.extend(u.encode_to_vec());
    }
    if let Some(g) = &event.group {
        bytes.extend(g.encode_to_vec());
    }
    amqp::fnv1a(&bytes).max(1)
}

/// Whether applying `desired` takes access away from a user who has it, which the
/// mass-deprovisioning guard counts — decided by the state of record's presence: a deactivation
/// of a user present and active, or never converged here (it may exist at the target); a
/// deletion of a user not known to be gone; an upsert with `active: false` of a user present
/// and active (creating a user inactive takes nothing away).
pub fn deprovisions(desired: &IdentityEvent, presence: Presence) -> bool {
    match desired.kind() {
        EventKind::UserDeactivated => {
            matches!(presence, Presence::PresentActive | Presence::Unknown)
        }
        EventKind::UserDeleted => presence != Presence::Absent,
        EventKind::UserUpserted => {
            desired.user.as_ref().is_some_and(|u| !u.active) && presence == Presence::PresentActive
        }
        _ => false,
    }
}

/// Where the subject is after `desired` converged with `done`.
pub fn presence_after(desired: &IdentityEvent, done: &Converged) -> Presence {
    if done.remote_id.is_empty() {
        return Presence::Absent;
    }
    match desired.kind() {
        EventKind::UserUpserted if desired.user.as_ref().is_some_and(|u| u.active) => {
            Presence::PresentActive
        }
        EventKind::UserUpserted | EventKind::UserDeactivated | EventKind::UserDeleted => {
            Presence::PresentInactive
        }
        EventKind::GroupUpserted => Presence::PresentActive,
        EventKind::GroupDeleted | EventKind::Unspecified => Presence::Absent,
    }
}

/// What processing one message led to.
#[derive(Debug)]
pub enum Step {
    /// A terminal outcome.
    Done(Box<Outcome>),
    /// Held by the mass-deprovisioning guard until an operator releases or drops it.
    Hold {
        /// Which limit it would exceed.
        reason: String,
    },
    /// A transient failure of the event: a copy goes to a delay tier with `attempt` counted.
    Retry {
        /// The backoff wanted.
        wait: Duration,
        /// Attempts made so far (the copy's `attempt`).
        attempt: u32,
        /// Why, for the log.
        reason: String,
        /// Why, as a metrics label and span attribute (no free text).
        class: &'static str,
    },
    /// Not the event's fault (the state of record or the guard unreachable, the target
    /// quarantined): a copy waits on a delay tier, its `waits` grown, its attempts as given.
    Wait {
        /// The backoff wanted.
        wait: Duration,
        /// The copy's `attempt` (unchanged, or counted when an attempt ran but its failure
        /// could not be recorded).
        attempt: u32,
        /// Why, for the log and the target's status.
        reason: String,
        /// Why, as a metrics label.
        class: &'static str,
    },
    /// A re-trigger handled (or given up until the next sweep): acknowledged with no outcome,
    /// since it is not an accepted event (docs/design.md, "References").
    Quiet {
        /// What happened, for the log.
        note: String,
    },
}

impl Step {
    /// The step's name in metrics, spans and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Done(o) => OutcomeResult::try_from(o.result)
                .unwrap_or(OutcomeResult::Unspecified)
                .name(),
            Step::Hold { .. } => "held",
            Step::Retry { .. } => "retry",
            Step::Wait { .. } => "wait",
            Step::Quiet { .. } => "retriggered",
        }
    }
}

/// How a failed converge (attempt `attempt`, 1-based) ends: `failed` or `unsupported`
/// outcomes, an uncounted wait while the target is quarantined, a dead letter after the last
/// attempt, else a counted retry. `outcome` already carries the error's status and detail.
pub fn settle_failure(
    mut outcome: Outcome,
    err: &ConvergeError,
    retry: &RetryConfig,
    quarantined: bool,
    waits: u32,
) -> Step {
    let attempt = outcome.attempt;
    match err.class {
        FailureClass::Permanent => {
            outcome.result = OutcomeResult::Failed as i32;
            Step::Done(Box::new(outcome))
        }
        FailureClass::Unsupported => {
            outcome.result = OutcomeResult::Unsupported as i32;
            Step::Done(Box::new(outcome))
        }
        // The target cannot take it for a while: park it on a delay tier for that long.
        FailureClass::Deferred => Step::Wait {
            wait: Duration::from_millis(err.retry_after_ms.unwrap_or(retry.max_delay_ms)),
            attempt: attempt.saturating_sub(1),
            reason: err.detail.clone(),
            class: "deferred",
        },
        // A quarantined target (revoked token, outage) is not the event's fault: the attempt is
        // not counted, so waiting out a quarantine never dead-letters anything.
        FailureClass::Retry if quarantined => Step::Wait {
            wait: backoff(
                retry.base_delay_ms,
                retry.max_delay_ms,
                waits + 1,
                err.retry_after_ms,
            ),
            attempt: attempt.saturating_sub(1),
            reason: format!("target quarantined: {}", err.detail),
            class: "quarantined",
        },
        FailureClass::Retry if attempt >= retry.max_attempts => {
            outcome.result = OutcomeResult::DeadLettered as i32;
            outcome.detail = format!("gave up after {attempt} attempts: {}", outcome.detail);
            Step::Done(Box::new(outcome))
        }
        FailureClass::Retry => Step::Retry {
            wait: backoff(
                retry.base_delay_ms,
                retry.max_delay_ms,
                attempt,
                err.retry_after_ms,
            ),
            attempt,
            class: retry_class(outcome.http_status),
            reason: err.detail.clone(),
        },
    }
}

/// A retry's reason as a bounded label: `throttled`, `http_5xx`, `no_response`, `http_4xx`.
pub fn retry_class(http_status: u32) -> &'static str {
    match http_status {
        0 => "no_response",
        429 => "throttled",
        500..=599 => "http_5xx",
        _ => "http_4xx",
    }
}

/// Full-jitter exponential backoff: uniform in [0, min(cap, base·2^(n-1))], but never shorter
/// than a wait the provider asked for.
pub fn backoff(base_ms: u64, cap_ms: u64, n: u32, retry_after_ms: Option<u64>) -> Duration {
    let exp = base_ms
        .saturating_mul(1u64 << n.saturating_sub(1).min(30))
        .min(cap_ms);
    let jittered = rand::rng().random_range(0..=exp);
    Duration::from_millis(jittered.max(retry_after_ms.unwrap_or(0)))
}

/// A wait that grows with `waits` (the copy's uncounted waits so far) but is never shorter
/// than a tenth of the cap: the state of record or the guard is not asked again in a tight
/// loop while it is down.
pub fn wait_backoff(base_ms: u64, cap_ms: u64, waits: u32) -> Duration {
    let floor = Duration::from_millis((cap_ms / 10).max(base_ms));
    backoff(base_ms, cap_ms, waits + 1, None).max(floor)
}

/// Text from a provider made safe to store and show: control characters (a NUL byte in an
/// error body from a broken server, which PostgreSQL refuses) replaced by U+FFFD.
pub fn printable(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// A converge run in plan mode: a `planned` outcome with what the profile would have done and
/// the requests it would have sent (nothing recorded in the state of record).
pub fn planned(mut outcome: Outcome, done: Converged, requests: Vec<PlannedRequest>) -> Step {
    outcome.operation = done.operation as i32;
    outcome.remote_id = done.remote_id;
    outcome.detail = done.detail;
    outcome.result = OutcomeResult::Planned as i32;
    outcome.planned = requests;
    Step::Done(Box::new(outcome))
}

/// The outcome an operator sees when a step is terminal: `result`, `operation`, and the
/// remote id and detail given.
pub fn done(
    mut outcome: Outcome,
    result: OutcomeResult,
    operation: Operation,
    remote_id: &str,
    detail: String,
) -> Step {
    outcome.result = result as i32;
    outcome.operation = operation as i32;
    outcome.remote_id = remote_id.to_owned();
    outcome.detail = detail;
    Step::Done(Box::new(outcome))
}

#[cfg(test)]
mod tests;
