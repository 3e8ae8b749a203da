//! Table tests of the processing decision: one row per branch.

use super::*;
use scimrelay_proto::v1::{GroupState, UserState};

fn user_event(id: &str, version: u64, title: &str) -> IdentityEvent {
    IdentityEvent {
        id: id.into(),
        tenant: "acme".into(),
        version,
        kind: EventKind::UserUpserted as i32,
        user: Some(UserState {
            id: "u1".into(),
            user_name: "ada".into(),
            title: title.into(),
            active: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A record after taking an event: desired D by `desired_event`, applied A by `applied_event`
/// with the fingerprint of `applied_state` (0 when None).
fn record(
    d: u64,
    desired_event: &str,
    a: u64,
    applied_event: &str,
    applied_state: Option<&IdentityEvent>,
) -> SubjectRecord {
    SubjectRecord {
        found: true,
        desired_version: d,
        desired_event_id: desired_event.into(),
        applied_version: a,
        applied_event_id: applied_event.into(),
        fingerprint: applied_state.map(fingerprint).unwrap_or(0),
        remote_id: if a > 0 { "r1".into() } else { String::new() },
        ..Default::default()
    }
}

#[test]
fn every_decision_has_its_row() {
    let v1 = user_event("e1", 1, "Engineer");
    let v2 = user_event("e2", 2, "Manager");
    let v2_same_as_v1 = user_event("e2b", 2, "Engineer");
    let v2_replay = user_event("e2-replay", 2, "Manager");
    let converge = Decision::Converge;
    let rows: Vec<(&str, &IdentityEvent, SubjectRecord, bool, Decision)> = vec![
        (
            "never seen (the take just recorded it)",
            &v1,
            record(1, "e1", 0, "", None),
            false,
            converge.clone(),
        ),
        (
            "nothing recorded at all",
            &v1,
            SubjectRecord::default(),
            false,
            converge.clone(),
        ),
        (
            "a newer desired state was accepted",
            &v1,
            record(2, "e2", 0, "", None),
            false,
            Decision::Superseded("version 2 was accepted after this one (event has 1)".into()),
        ),
        (
            "a newer version was applied (a late retry copy)",
            &v1,
            record(2, "e2", 2, "e2", Some(&v2)),
            false,
            Decision::Superseded("version 2 was accepted after this one (event has 1)".into()),
        ),
        (
            "this event was applied, its outcome lost (redelivery)",
            &v2,
            record(2, "e2", 2, "e2", Some(&v2)),
            false,
            Decision::AlreadyApplied(
                "version 2 was applied by an earlier attempt of this event".into(),
            ),
        ),
        (
            "the same version was applied by another event (a replay)",
            &v2_replay,
            record(2, "e2", 2, "e2", Some(&v2)),
            false,
            Decision::Superseded("version 2 already applied (event has 2)".into()),
        ),
        (
            "unchanged since the last successful converge",
            &v2_same_as_v1,
            record(2, "e2b", 1, "e1", Some(&v1)),
            false,
            Decision::Unchanged,
        ),
        (
            "unchanged, but a failed attempt zeroed the fingerprint",
            &v2_same_as_v1,
            record(2, "e2b", 1, "e1", None),
            false,
            converge.clone(),
        ),
        (
            "changed",
            &v2,
            record(2, "e2", 1, "e1", Some(&v1)),
            false,
            converge.clone(),
        ),
        (
            "plan mode skips every check",
            &v1,
            record(2, "e2", 2, "e2", Some(&v2)),
            true,
            converge.clone(),
        ),
    ];
    for (name, event, rec, plan, want) in rows {
        assert_eq!(decide(event, &rec, plan), want, "{name}");
    }
}

#[test]
fn the_fingerprint_of_the_accepted_desired_state_decides_the_noop() {
    // Two events at version 2: the first accepted wins; the second converges (and is compared
    // as) the first one's state.
    let v1 = user_event("e1", 1, "Engineer");
    let first = user_event("e2", 2, "Engineer");
    let second = user_event("e2-other", 2, "Manager");
    let mut rec = record(2, "e2", 1, "e1", Some(&v1));
    rec.desired = Some(first);
    assert_eq!(decide(&second, &rec, false), Decision::Unchanged);
}

#[test]
fn fingerprint_tracks_state_not_version_and_is_never_zero() {
    let mut a = user_event("x", 1, "Boss");
    let f1 = fingerprint(&a);
    a.version = 2;
    a.id = "other".into();
    assert_eq!(fingerprint(&a), f1);
    if let Some(u) = a.user.as_mut() {
        u.title = "Chief".into();
    }
    assert_ne!(fingerprint(&a), f1);
    assert_ne!(fingerprint(&IdentityEvent::default()), 0);
}

#[test]
fn the_guard_counts_only_what_takes_access_away() {
    use Presence::*;
    let user = |kind: EventKind, active: bool| IdentityEvent {
        kind: kind as i32,
        user: Some(UserState {
            id: "u1".into(),
            active,
            ..Default::default()
        }),
        ..Default::default()
    };
    let deactivated = user(EventKind::UserDeactivated, false);
    let deleted = user(EventKind::UserDeleted, false);
    let inactive_upsert = user(EventKind::UserUpserted, false);
    let active_upsert = user(EventKind::UserUpserted, true);
    let group_deleted = IdentityEvent {
        kind: EventKind::GroupDeleted as i32,
        group: Some(GroupState::default()),
        ..Default::default()
    };
    let rows = [
        (&deactivated, PresentActive, true),
        (&deactivated, Unknown, true),
        (&deactivated, PresentInactive, false),
        (&deactivated, Absent, false),
        (&deleted, PresentActive, true),
        (&deleted, PresentInactive, true),
        (&deleted, Unknown, true),
        (&deleted, Absent, false),
        (&inactive_upsert, PresentActive, true),
        (&inactive_upsert, Unknown, false),
        (&inactive_upsert, PresentInactive, false),
        (&active_upsert, PresentActive, false),
        (&group_deleted, PresentActive, false),
    ];
    for (event, presence, want) in rows {
        assert_eq!(
            deprovisions(event, presence),
            want,
            "{:?} of a user {presence:?}",
            event.kind()
        );
    }
}

#[test]
fn presence_follows_the_converged_state() {
    let done = |remote: &str| Converged::new(Operation::Updated, remote);
    let active = user_event("e", 1, "");
    let mut inactive = active.clone();
    if let Some(u) = inactive.user.as_mut() {
        u.active = false;
    }
    let deactivated = IdentityEvent {
        kind: EventKind::UserDeactivated as i32,
        ..active.clone()
    };
    let group = IdentityEvent {
        kind: EventKind::GroupUpserted as i32,
        group: Some(GroupState::default()),
        ..Default::default()
    };
    assert_eq!(presence_after(&active, &done("r")), Presence::PresentActive);
    assert_eq!(
        presence_after(&inactive, &done("r")),
        Presence::PresentInactive
    );
    assert_eq!(
        presence_after(&deactivated, &done("r")),
        Presence::PresentInactive,
        "deactivated, or deleted by a deactivate policy"
    );
    assert_eq!(presence_after(&deactivated, &done("")), Presence::Absent);
    assert_eq!(presence_after(&group, &done("g")), Presence::PresentActive);
}

fn failed_outcome(attempt: u32, http_status: u32) -> Outcome {
    Outcome {
        attempt,
        http_status,
        detail: "HTTP 503".into(),
        ..Default::default()
    }
}

#[test]
fn failures_settle_by_class_attempt_and_quarantine() {
    let retry = RetryConfig {
        max_attempts: 3,
        base_delay_ms: 100,
        max_delay_ms: 1_000,
    };
    let err = |class| ConvergeError::new(class, "HTTP 503");
    let name = |s: &Step| s.name();
    let permanent = settle_failure(
        failed_outcome(1, 400),
        &err(FailureClass::Permanent),
        &retry,
        false,
        0,
    );
    assert_eq!(name(&permanent), "failed");
    let unsupported = settle_failure(
        failed_outcome(1, 501),
        &err(FailureClass::Unsupported),
        &retry,
        false,
        0,
    );
    assert_eq!(name(&unsupported), "unsupported");
    match settle_failure(
        failed_outcome(2, 503),
        &err(FailureClass::Retry),
        &retry,
        false,
        0,
    ) {
        Step::Retry { attempt, class, .. } => assert_eq!((attempt, class), (2, "http_5xx")),
        other => panic!("a counted retry: {other:?}"),
    }
    match settle_failure(
        failed_outcome(3, 503),
        &err(FailureClass::Retry),
        &retry,
        false,
        0,
    ) {
        Step::Done(o) => {
            assert_eq!(o.result, OutcomeResult::DeadLettered as i32);
            assert_eq!(o.detail, "gave up after 3 attempts: HTTP 503");
        }
        other => panic!("dead-lettered after the last attempt: {other:?}"),
    }
    match settle_failure(
        failed_outcome(3, 503),
        &err(FailureClass::Retry),
        &retry,
        true,
        4,
    ) {
        Step::Wait { attempt, class, .. } => {
            assert_eq!((attempt, class), (2, "quarantined"), "not counted")
        }
        other => panic!("a quarantine waits: {other:?}"),
    }
}

#[test]
fn backoff_is_bounded_and_honours_retry_after() {
    for attempt in 1..20 {
        assert!(backoff(100, 5_000, attempt, None) <= Duration::from_millis(5_000));
    }
    assert!(backoff(100, 5_000, 1, Some(7_000)) >= Duration::from_millis(7_000));
    let samples: std::collections::HashSet<_> =
        (0..50).map(|_| backoff(100, 60_000, 8, None)).collect();
    assert!(samples.len() > 10, "jittered");
    for waits in 0..10 {
        let w = wait_backoff(100, 2_000, waits);
        assert!(w >= Duration::from_millis(200) && w <= Duration::from_millis(2_000));
    }
}

#[test]
fn retry_classes_are_bounded_labels() {
    assert_eq!(retry_class(0), "no_response");
    assert_eq!(retry_class(429), "throttled");
    assert_eq!(retry_class(502), "http_5xx");
    assert_eq!(retry_class(409), "http_4xx");
}

/// Every outcome kind the proto defines, and every non-terminal step, comes out of one row of
/// the pure decision: a new kind without a row fails here.
#[test]
fn every_outcome_kind_and_step_has_its_row() {
    let retry = RetryConfig {
        max_attempts: 3,
        base_delay_ms: 100,
        max_delay_ms: 1_000,
    };
    let err = |class, retry_after_ms| ConvergeError {
        retry_after_ms,
        ..ConvergeError::new(class, "HTTP 503")
    };
    let v1 = user_event("e1", 1, "Engineer");
    let superseded = match decide(&v1, &record(2, "e2", 0, "", None), false) {
        Decision::Superseded(why) => done(
            Outcome::default(),
            OutcomeResult::Superseded,
            Operation::Noop,
            "",
            why,
        ),
        other => panic!("superseded: {other:?}"),
    };
    let converged = Converged::new(Operation::Created, "r1");
    let rows: Vec<(&str, Step)> = vec![
        (
            "succeeded",
            done(
                Outcome::default(),
                OutcomeResult::Succeeded,
                Operation::Created,
                "r1",
                String::new(),
            ),
        ),
        ("superseded", superseded),
        (
            "unsupported",
            settle_failure(
                failed_outcome(1, 501),
                &err(FailureClass::Unsupported, None),
                &retry,
                false,
                0,
            ),
        ),
        (
            "failed",
            settle_failure(
                failed_outcome(1, 400),
                &err(FailureClass::Permanent, None),
                &retry,
                false,
                0,
            ),
        ),
        (
            "dead-lettered",
            settle_failure(
                failed_outcome(3, 503),
                &err(FailureClass::Retry, None),
                &retry,
                false,
                0,
            ),
        ),
        (
            "planned",
            planned(
                Outcome::default(),
                converged.clone(),
                vec![PlannedRequest {
                    method: "POST".into(),
                    path: "/Users".into(),
                    ..Default::default()
                }],
            ),
        ),
        (
            "held",
            Step::Hold {
                reason: "would exceed the deprovisioning guard".into(),
            },
        ),
        (
            "retry",
            settle_failure(
                failed_outcome(1, 503),
                &err(FailureClass::Retry, None),
                &retry,
                false,
                0,
            ),
        ),
        (
            "wait",
            settle_failure(
                failed_outcome(1, 503),
                &err(FailureClass::Retry, None),
                &retry,
                true,
                0,
            ),
        ),
        (
            "wait",
            settle_failure(
                failed_outcome(1, 429),
                &err(FailureClass::Deferred, Some(30_000)),
                &retry,
                false,
                0,
            ),
        ),
    ];
    for (want, step) in &rows {
        assert_eq!(step.name(), *want, "{step:?}");
    }
    // The deferred wait takes the target's own wait and counts no attempt.
    match &rows[rows.len() - 1].1 {
        Step::Wait {
            wait,
            attempt,
            class,
            ..
        } => assert_eq!(
            (*wait, *attempt, *class),
            (Duration::from_secs(30), 0, "deferred")
        ),
        other => panic!("deferred: {other:?}"),
    }
    match &rows[5].1 {
        Step::Done(o) => assert_eq!(
            (o.operation, o.remote_id.as_str(), o.planned.len()),
            (Operation::Created as i32, "r1", 1)
        ),
        other => panic!("planned: {other:?}"),
    }
    // Every outcome kind of the proto has a row.
    let names: Vec<&str> = rows.iter().map(|(n, _)| *n).collect();
    for kind in (1..=i32::MAX).map_while(|n| OutcomeResult::try_from(n).ok()) {
        assert!(names.contains(&kind.name()), "no row for {}", kind.name());
    }
}
