//! Processing one message: take it into the state of record, decide ([`crate::decide`]), ask
//! the mass-deprovisioning guard, converge through the provider, record what was applied (or
//! that the attempt failed) — and only then hand the runtime a step to publish and ack.
//!
//! Nothing is applied unless the state of record answered: a message whose take, or whose
//! record after a converge, cannot reach the status service waits on a delay tier without
//! counting an attempt (`state_unavailable`), and the target's report says why. A converge that
//! succeeded but could not be recorded is converged again next time (idempotent: the target
//! already matches); a failure that could not be recorded keeps the subject marked in memory,
//! so its next take invalidates the no-op fingerprint even before the retry copy returns.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use tracing::Instrument as _;

use scimrelay_core::config::TargetMode;
use scimrelay_core::now_ms;
use scimrelay_proto::v1::{
    Converged as ConvergedRecord, Delivery, EventKind, IdentityEvent, Operation, Outcome,
    OutcomeResult, PendingReference, ReferenceKind, SubjectKey, SubjectKind, SubjectRecord,
    TakeEvent,
};

use crate::decide::{self, Decision, Step};
use crate::exec::Exec;
use crate::limits::Lane;
use crate::provider::{ConvergeError, ConvergeInput, Converged, FailureClass, Provider};
use crate::record::{Directory, Linked, Record};
use crate::runtime::TargetRuntime;
use crate::status::{Admission, GuardClient, StateOfRecord};

/// Why messages of a target wait instead of converging, and since when (ms): reported to the
/// status service (`TargetReport.waiting_reason`).
#[derive(Default)]
pub struct Waiting {
    reason: Mutex<Option<(String, i64)>>,
    /// Subjects (by `subject_ref`) whose failed attempt could not be recorded: their next take
    /// invalidates the no-op fingerprint.
    dirty: Mutex<HashSet<String>>,
}

impl Waiting {
    /// The current reason and since when, if messages wait.
    pub fn reason(&self) -> Option<(String, i64)> {
        self.reason.lock().ok().and_then(|r| r.clone())
    }

    fn set(&self, why: &str) {
        if let Ok(mut r) = self.reason.lock() {
            let since = r.as_ref().map_or_else(now_ms, |(_, since)| *since);
            *r = Some((why.to_owned(), since));
        }
    }

    fn clear(&self) {
        if let Ok(mut r) = self.reason.lock()
            && r.is_some()
        {
            *r = None;
        }
    }

    fn is_dirty(&self, subject: &str) -> bool {
        self.dirty.lock().is_ok_and(|d| d.contains(subject))
    }

    fn set_dirty(&self, subject: &str, dirty: bool) {
        if let Ok(mut d) = self.dirty.lock() {
            if dirty {
                d.insert(subject.to_owned());
            } else {
                d.remove(subject);
            }
        }
    }
}

/// Processes the messages of one target (shared by its shard consumers).
pub struct Processor {
    /// The target.
    pub target: Arc<TargetRuntime>,
    /// Its provider profile.
    pub provider: Arc<dyn Provider>,
    /// The state of record.
    pub sor: StateOfRecord,
    /// The mass-deprovisioning guard.
    pub guard: GuardClient,
    /// The consumer session subjects are claimed in (see `TakeEvent.session`).
    pub session: String,
}

/// One message in process: what it is and what the outcome will say.
struct Taken<'a> {
    delivery: &'a Delivery,
    event: IdentityEvent,
    key: SubjectKey,
    plan: bool,
    outcome: Outcome,
    /// When the message was delivered (its hold bound counts from here).
    received: tokio::time::Instant,
}

impl Processor {
    /// Converges one delivery (one attempt), in a `converge` span; `received` is when the
    /// broker handed it to this consumer (see [`crate::exec::TargetIo::max_hold`]).
    pub async fn process(
        &self,
        delivery: &Delivery,
        released: bool,
        received: tokio::time::Instant,
    ) -> Step {
        let span = tracing::info_span!(
            "converge",
            "scimrelay.target" = %self.target.config.id,
            "scimrelay.attempt" = delivery.attempt + 1,
            "scimrelay.decision" = tracing::field::Empty,
        );
        let step = self
            .process_in_span(delivery, released, received)
            .instrument(span.clone())
            .await;
        span.record("scimrelay.decision", step.name());
        step
    }

    async fn process_in_span(
        &self,
        delivery: &Delivery,
        released: bool,
        received: tokio::time::Instant,
    ) -> Step {
        if delivery.retrigger {
            return self.retrigger(delivery, received).await;
        }
        let t = &self.target;
        let event = delivery.event.clone().unwrap_or_default();
        let key = event.subject_key(&t.config.id);
        let subject_ref = key.subject_ref();
        let plan = event.plan || t.config.mode == TargetMode::Plan;
        let outcome = base_outcome(t, &event, delivery);
        let invalidate = !plan && (delivery.attempt > 0 || t.waiting.is_dirty(&subject_ref));
        let taken = self
            .sor
            .take(TakeEvent {
                key: Some(key.clone()),
                event: Some(event.clone()),
                invalidate,
                read_only: plan,
                session: self.session.clone(),
                fence_ms: fence_ms(t.config.timeout_secs, t.io.max_hold),
                unanswered_fence_ms: t.config.timeout_secs.saturating_mul(2_000),
            })
            .await;
        let record = match taken {
            Ok(r) => r,
            Err(why) => {
                return self.wait(delivery, delivery.attempt, &why);
            }
        };
        t.waiting.clear();
        // The store decided at its own clock: a fence in the answer means the take did not
        // claim the subject (comparing with this clock instead would let a take that was
        // refused a few milliseconds before the fence ended go ahead unclaimed).
        if !plan && record.fenced_until_ms > 0 {
            return fenced(delivery, record.fenced_until_ms);
        }
        if invalidate {
            t.waiting.set_dirty(&subject_ref, false);
        }
        let m = Taken {
            delivery,
            event,
            key,
            plan,
            outcome,
            received,
        };
        match decide::decide(&m.event, &record, plan) {
            Decision::Superseded(detail) => {
                self.release(&m).await;
                return decide::done(
                    m.outcome,
                    OutcomeResult::Superseded,
                    Operation::Unspecified,
                    &record.remote_id,
                    detail,
                );
            }
            Decision::AlreadyApplied(detail) => {
                self.release(&m).await;
                return decide::done(
                    m.outcome,
                    OutcomeResult::Succeeded,
                    Operation::Noop,
                    &record.remote_id,
                    detail,
                );
            }
            Decision::Unchanged => return self.unchanged(m, &record).await,
            Decision::Converge => {}
        }
        let desired = latest_desired(&m, &record);
        if let Some(step) = self.guarded(&m, &desired, &record, released).await {
            self.release(&m).await;
            return step;
        }
        self.converge(m, desired, &record).await
    }

    /// A re-trigger (docs/design.md, "References"): converges the subject again to the desired
    /// state it last applied, so that its references to users who arrived since are completed.
    /// It records no desired state and has no outcome. Fenced, or while the state of record
    /// cannot be asked, it waits on a delay tier like any message; when the subject is not
    /// settled (its latest event is on its way) it does nothing; a converge that fails is
    /// recorded, and the sweep tries again.
    async fn retrigger(&self, delivery: &Delivery, received: tokio::time::Instant) -> Step {
        let t = &self.target;
        let event = delivery.event.clone().unwrap_or_default();
        let key = event.subject_key(&t.config.id);
        let quiet = |note: String| Step::Quiet { note };
        if t.config.mode == TargetMode::Plan {
            return quiet("plan mode: nothing to complete".into());
        }
        let record = match self
            .sor
            .take(TakeEvent {
                key: Some(key.clone()),
                event: Some(event.clone()),
                invalidate: false,
                read_only: false,
                session: self.session.clone(),
                fence_ms: fence_ms(t.config.timeout_secs, t.io.max_hold),
                unanswered_fence_ms: t.config.timeout_secs.saturating_mul(2_000),
            })
            .await
        {
            Ok(r) => r,
            // Not the re-trigger's fault: it waits on a delay tier like any message.
            Err(why) => return self.wait(delivery, delivery.attempt, &why),
        };
        if record.fenced_until_ms > 0 {
            return fenced(delivery, record.fenced_until_ms);
        }
        let m = Taken {
            delivery,
            outcome: base_outcome(t, &event, delivery),
            event,
            key,
            plan: false,
            received,
        };
        let settled =
            record.applied_version > 0 && record.applied_version == record.desired_version;
        let Some(applied) = record.applied.clone().filter(|_| settled) else {
            self.release(&m).await;
            return quiet("not settled: the subject's next event completes its references".into());
        };
        match self.converge(m, applied, &record).await {
            Step::Done(o) => quiet(format!(
                "re-converged: {} {}{}",
                OutcomeResult::try_from(o.result)
                    .unwrap_or(OutcomeResult::Unspecified)
                    .name(),
                Operation::try_from(o.operation)
                    .unwrap_or(Operation::Unspecified)
                    .name(),
                if o.detail.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", o.detail)
                }
            )),
            // Recorded, or not even that: the copy waits like any message.
            wait @ Step::Wait { .. } => wait,
            // The failure is recorded, which cuts the lease: the sweep tries again in 10 s.
            other => quiet(format!(
                "not completed ({}); the sweep tries again in 10 s",
                other.name()
            )),
        }
    }

    /// The guard's verdict when `desired` deprovisions a user (`None`: go ahead).
    async fn guarded(
        &self,
        m: &Taken<'_>,
        desired: &IdentityEvent,
        record: &SubjectRecord,
        released: bool,
    ) -> Option<Step> {
        let t = &self.target.config;
        if !t.deprovision_guard.enabled
            || m.plan
            || released
            || !decide::deprovisions(desired, record.presence())
        {
            return None;
        }
        match self
            .guard
            .admit(&t.id, &m.event.tenant, &m.key.subject_id, &m.event.id)
            .await
        {
            Admission::Admitted => None,
            Admission::Held(reason) => Some(Step::Hold { reason }),
            // Never unguarded: the deprovisioning waits until the guard can be asked.
            Admission::Unavailable(why) => Some(Step::Wait {
                wait: decide::wait_backoff(
                    t.retry.base_delay_ms,
                    t.retry.max_delay_ms,
                    m.delivery.waits,
                ),
                attempt: m.delivery.attempt,
                reason: why,
                class: "guard_unavailable",
            }),
        }
    }

    /// The desired state equals what the target holds: record the version as applied, send
    /// nothing.
    async fn unchanged(&self, m: Taken<'_>, record: &SubjectRecord) -> Step {
        let desired = latest_desired(&m, record);
        let item = ConvergedRecord {
            key: Some(m.key.clone()),
            succeeded: true,
            version: desired.version,
            event_id: desired.id.clone(),
            fingerprint: decide::fingerprint(&desired),
            applied: Some(desired),
            remote_id: record.remote_id.clone(),
            presence: record.presence,
            members_known: record.members_known,
            members: record.members.clone(),
            operation: Operation::Noop.name().to_owned(),
            session: self.session.clone(),
            // Nothing was sent: the recorded references stay as they are.
            ..Default::default()
        };
        if let Err(why) = self.sor.record(item).await {
            return self.wait(m.delivery, m.delivery.attempt, &why);
        }
        decide::done(
            m.outcome,
            OutcomeResult::Succeeded,
            Operation::Noop,
            &record.remote_id,
            "desired state unchanged since the last applied version; nothing sent".into(),
        )
    }

    /// Converges `desired` through the provider and records the result.
    async fn converge(
        &self,
        mut m: Taken<'_>,
        desired: IdentityEvent,
        record: &SubjectRecord,
    ) -> Step {
        let t = &self.target;
        let exec = Exec::new(t.io.clone(), self.provider.clone(), m.plan)
            .with_target(&t.config.id)
            .held_since(m.received)
            .in_lane(Lane::of(&m.event))
            .for_retrigger(m.delivery.retrigger);
        let directory = StoreDirectory {
            sor: &self.sor,
            target: &t.config.id,
            tenant: &m.event.tenant,
        };
        let result = self
            .provider
            .converge(ConvergeInput {
                target: &t.config,
                event: &desired,
                record: &Record::from_proto(record),
                directory: &directory,
                exec: &exec,
            })
            .await;
        m.outcome.http_status = u32::from(exec.last_status());
        // A write that got no answer may still land: the subject is fenced before the next
        // write (see `Converged.unanswered`).
        let unanswered = exec.stats().unanswered_writes > 0;
        match result {
            Ok(done) if m.plan => decide::planned(m.outcome, done, exec.planned()),
            Ok(done) => {
                let pending = exec.pending_references();
                self.succeeded(m, desired, done, pending, unanswered).await
            }
            Err(err) => self.failed(m, &desired, &err, unanswered).await,
        }
    }

    async fn succeeded(
        &self,
        m: Taken<'_>,
        desired: IdentityEvent,
        done: Converged,
        pending: Option<Vec<PendingReference>>,
        unanswered: bool,
    ) -> Step {
        // A subject that no longer exists references nothing.
        let pending = match desired.kind() {
            EventKind::UserDeleted | EventKind::GroupDeleted => Some(Vec::new()),
            _ => pending,
        };
        let detail = with_pending_note(done.detail.clone(), pending.as_deref());
        let item = ConvergedRecord {
            key: Some(m.key.clone()),
            succeeded: true,
            version: desired.version,
            event_id: desired.id.clone(),
            fingerprint: decide::fingerprint(&desired),
            presence: decide::presence_after(&desired, &done) as i32,
            applied: Some(desired),
            remote_id: done.remote_id.clone(),
            members_known: done.members.is_some(),
            members: done.members.clone().unwrap_or_default(),
            operation: done.operation.name().to_owned(),
            error: String::new(),
            session: self.session.clone(),
            release_only: false,
            unanswered,
            references_known: pending.is_some(),
            pending: pending.unwrap_or_default(),
        };
        if let Err(why) = self.sor.record(item).await {
            // Applied at the target, not recorded: the next attempt converges again (the target
            // already matches, so it changes nothing) and records it.
            return self.wait(m.delivery, m.delivery.attempt, &why);
        }
        decide::done(
            m.outcome,
            OutcomeResult::Succeeded,
            done.operation,
            &done.remote_id,
            detail,
        )
    }

    async fn failed(
        &self,
        m: Taken<'_>,
        desired: &IdentityEvent,
        err: &ConvergeError,
        unanswered: bool,
    ) -> Step {
        let t = &self.target;
        let mut outcome = m.outcome;
        outcome.http_status = u32::from(err.http_status);
        outcome.scim_type = decide::printable(&err.scim_type);
        outcome.detail = decide::printable(&err.detail);
        let step = decide::settle_failure(
            outcome,
            err,
            &t.config.retry,
            t.io.breaker.quarantined().is_some(),
            m.delivery.waits,
        );
        if m.plan {
            return step;
        }
        let item = ConvergedRecord {
            key: Some(m.key.clone()),
            succeeded: false,
            version: desired.version,
            event_id: desired.id.clone(),
            error: format!("{}: {}", step.name(), decide::printable(&err.detail)),
            session: self.session.clone(),
            unanswered,
            ..Default::default()
        };
        if let Err(why) = self.sor.record(item).await {
            // The target may be half-changed and the fingerprint still says otherwise: keep the
            // subject marked here and let the copy (attempt counted) invalidate it when taken.
            t.waiting.set_dirty(&m.key.subject_ref(), true);
            return self.wait(m.delivery, m.delivery.attempt + 1, &why);
        }
        step
    }

    /// Ends this session's claim on a subject taken and left without a converge (nothing
    /// sent, nothing to record). Awaited, so it lands before this subject's next message is
    /// taken (a release landing later would end *that* take's claim while its request is in
    /// flight). A release that fails only costs the next session one fence.
    async fn release(&self, m: &Taken<'_>) {
        if m.plan {
            return;
        }
        let item = ConvergedRecord {
            key: Some(m.key.clone()),
            session: self.session.clone(),
            release_only: true,
            ..Default::default()
        };
        if let Err(why) = self.sor.record(item).await {
            tracing::debug!(error = %why, "claim not released; the next session will wait out its fence");
        }
    }

    /// The message waits for the state of record (`attempt` on the copy), and the target's
    /// report says why.
    fn wait(&self, delivery: &Delivery, attempt: u32, why: &str) -> Step {
        let t = &self.target;
        let reason = format!("state of record unavailable: {why}");
        t.waiting.set(&reason);
        Step::Wait {
            wait: decide::wait_backoff(
                t.config.retry.base_delay_ms,
                t.config.retry.max_delay_ms,
                delivery.waits,
            ),
            attempt,
            reason,
            class: "state_unavailable",
        }
    }
}

/// A subject fenced until `until_ms` (another session's request may still be in flight): the
/// message waits, uncounted, until then.
/// How long a subject is fenced after a session ended while it may have had a write in flight:
/// the target's request timeout, the longest that write can have been in flight (the store
/// doubles it after a write that got no answer, see `Converged.unanswered`).
/// How long a take that finds another session's claim fences the subject: the longest that
/// session's converge can still run — its hold bound, counted from the delivery, plus one
/// request's timeout. A claimant may be alive: a subject's shard and its target's interactive
/// lane can be owned by two replicas (docs/design.md, "Login-time provisioning").
fn fence_ms(timeout_secs: u64, max_hold: std::time::Duration) -> u64 {
    timeout_secs
        .saturating_mul(1_000)
        .saturating_add(u64::try_from(max_hold.as_millis()).unwrap_or(u64::MAX))
}

fn fenced(delivery: &Delivery, until_ms: i64) -> Step {
    let ms = u64::try_from(until_ms.saturating_sub(now_ms())).unwrap_or(0);
    Step::Wait {
        wait: std::time::Duration::from_millis(ms.max(1)),
        attempt: delivery.attempt,
        reason: format!(
            "a write to this subject may still be in flight (a connector session ended while \
             converging it, or a write got no answer); nothing is sent for it for {ms} ms"
        ),
        class: "fenced",
    }
}

/// The desired state to converge: the one the state of record accepted first at the message's
/// version (the same state, unless the platform sent two different events with one version),
/// else the message's own — always its own in plan mode, which records nothing and so may be
/// ahead of the state of record.
fn latest_desired(m: &Taken<'_>, record: &SubjectRecord) -> IdentityEvent {
    record
        .desired
        .clone()
        .filter(|d| !m.plan && d.version == m.event.version)
        .unwrap_or_else(|| m.event.clone())
}

/// The outcome of a message before it is decided: who, what, which attempt.
fn base_outcome(t: &TargetRuntime, event: &IdentityEvent, delivery: &Delivery) -> Outcome {
    Outcome {
        event_id: event.id.clone(),
        target: t.config.id.clone(),
        provider: t.config.provider.as_str().to_owned(),
        tenant: event.tenant.clone(),
        subject_kind: event.subject_kind() as i32,
        subject_id: event.subject_id().to_owned(),
        version: event.version,
        kind: event.kind,
        accepted_at_ms: delivery.accepted_at_ms,
        attempt: delivery.attempt + 1,
        ..Default::default()
    }
}

/// The users of one tenant at one target, as the state of record holds them: each lookup is
/// one item of the batched `GetRecords`.
struct StoreDirectory<'a> {
    sor: &'a StateOfRecord,
    target: &'a str,
    tenant: &'a str,
}

impl Directory for StoreDirectory<'_> {
    fn users<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<Vec<Linked>, ConvergeError>> {
        Box::pin(async move {
            let lookups = ids.iter().map(|id| {
                self.sor.get(SubjectKey::new(
                    self.target,
                    self.tenant,
                    SubjectKind::User,
                    id,
                ))
            });
            futures::future::join_all(lookups)
                .await
                .into_iter()
                .map(|r| {
                    r.map(|r| Linked::of(&r)).map_err(|why| {
                        ConvergeError::new(
                            FailureClass::Retry,
                            format!("state of record unavailable for the members: {why}"),
                        )
                    })
                })
                .collect()
        })
    }
}

/// An outcome's detail with the references left pending said first ("2 member(s) pending: not
/// provisioned at the target yet").
fn with_pending_note(detail: String, pending: Option<&[PendingReference]>) -> String {
    let count = |kind: ReferenceKind| {
        pending
            .unwrap_or_default()
            .iter()
            .filter(|p| p.kind == kind as i32 && p.dropped.is_empty())
            .count()
    };
    let mut notes = Vec::new();
    let members = count(ReferenceKind::Member);
    if members > 0 {
        notes.push(format!(
            "{members} member(s) pending: not provisioned at the target yet"
        ));
    }
    if count(ReferenceKind::Manager) > 0 {
        notes.push("manager pending: not provisioned at the target yet".to_owned());
    }
    if !detail.is_empty() {
        notes.push(detail);
    }
    notes.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fence_outlasts_any_converge_of_a_live_claimant() {
        // 60 s from delivery to the last request's start, and that request's 30 s.
        assert_eq!(fence_ms(30, std::time::Duration::from_secs(60)), 90_000);
    }

    #[test]
    fn the_note_counts_pending_references_not_dropped_ones() {
        let r = |user: &str, dropped: &str| PendingReference {
            user_id: user.into(),
            kind: ReferenceKind::Member as i32,
            dropped: dropped.into(),
            ..Default::default()
        };
        let pending = [r("a", ""), r("b", "deleted"), r("c", "")];
        assert_eq!(
            with_pending_note("x".into(), Some(&pending)),
            "2 member(s) pending: not provisioned at the target yet; x"
        );
        assert_eq!(
            with_pending_note(String::new(), Some(&[r("b", "gone")])),
            ""
        );
    }
}
