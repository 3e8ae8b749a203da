//! Every status RPC against SQLite AND PostgreSQL (each test body runs on both, see
//! `on_both!`), with the service in-process over a private RabbitMQ vhost and outcomes
//! published to the broker as connectors do; plus a restart mid-run that must lose nothing.
//! Then API keys (authentication, scopes, tenants, rates) and TLS with client certificates.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use prost::Message;

use common::{Broker, Keys, Running, TestDb, applied, eventually, outcome, present_users};
use scimrelay_proto::v1::{
    AdmitDeprovisionRequest, Converged, Delivery, EventKind, GetEventRequest, GetRecordsRequest,
    GetSubjectRequest, GetTargetRequest, HeldEvent, HeldSelection, IdentityEvent,
    ListDeadLettersRequest, ListEventsRequest, ListHeldRequest, ListOutcomesRequest,
    ListTargetsRequest, Outcome, OutcomeFilter, OutcomeResult, Presence, RecordConvergedRequest,
    ReplayDeadLettersRequest, SubjectKey, SubjectKind, TakeEvent, TakeEventsRequest, TargetReport,
    UserState, WatchOutcomesRequest,
};
use scimrelay_tests::TestVhost;

const WAIT: Duration = Duration::from_secs(20);

/// Waits until the store holds `n` outcomes (duplicates included).
async fn wait_stored(r: &Running, n: usize) {
    let mut client = r.client().await;
    eventually(&format!("{n} outcomes stored"), WAIT, || {
        let mut client = client.clone();
        async move {
            let mut count = 0;
            let mut token = String::new();
            loop {
                let page = client
                    .list_outcomes(ListOutcomesRequest {
                        page_size: 1000,
                        page_token: token,
                        filter: Some(OutcomeFilter {
                            include_duplicates: true,
                            ..Default::default()
                        }),
                        ..Default::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                count += page.outcomes.len();
                if page.next_page_token.is_empty() {
                    break;
                }
                token = page.next_page_token;
            }
            (count >= n).then_some(())
        }
    })
    .await;
    let _ = client
        .get_event(GetEventRequest {
            event_id: "-".into(),
            ..Default::default()
        })
        .await;
}

fn delivery(event: &str, target: &str, subject: &str, kind: EventKind) -> Delivery {
    Delivery {
        event: Some(IdentityEvent {
            id: event.into(),
            tenant: "acme".into(),
            version: 3,
            kind: kind as i32,
            user: Some(UserState {
                id: subject.into(),
                user_name: format!("{subject}-name"),
                ..Default::default()
            }),
            ..Default::default()
        }),
        target: target.into(),
        provider: "scim".into(),
        accepted_at_ms: 1_000,
        attempt: 0,
        waits: 0,
        reply_to: String::new(),
        retrigger: false,
    }
}

fn routing_key(target: &str, subject: &str) -> String {
    scimrelay_core::amqp::event_routing_key(
        "scim",
        target,
        scimrelay_core::amqp::shard_of(
            &scimrelay_proto::subject_ref("acme", SubjectKind::User, subject),
            2,
        ),
    )
}

/// Reads `n` messages from a target's shard queues (single active consumer: consume, not get).
async fn consume_shards(broker: &Broker, target: &str, n: usize) -> Vec<lapin::message::Delivery> {
    let ch = broker.conn.create_channel().await.expect("channel");
    let mut streams = Vec::new();
    for shard in 0..2 {
        let q = scimrelay_core::amqp::shard_queue(target, shard);
        streams.push(
            ch.basic_consume(
                q.as_str().into(),
                format!("test-{shard}").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume"),
        );
    }
    let mut merged = futures::stream::select_all(streams);
    let mut out = Vec::new();
    while out.len() < n {
        let d = tokio::time::timeout(WAIT, merged.next())
            .await
            .expect("message in a shard queue")
            .expect("stream")
            .expect("delivery");
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        out.push(d);
    }
    out
}

on_both!(
    get_event_flags_duplicates,
    list_outcomes_and_events_paginate_and_filter,
    the_state_of_record_decides_versions,
    watch_resumes_from_a_cursor_without_gaps_or_duplicates,
    targets_report_counts_latency_quarantine_and_queue_depth,
    dead_letters_are_listed_and_replayed,
    a_record_the_store_refuses_is_parked_and_the_rest_commit,
    held_events_are_listed_released_and_dropped,
    the_deprovision_guard_admits_then_refuses,
    a_restart_mid_run_loses_no_outcome,
);

async fn get_event_flags_duplicates(db: TestDb) {
    let vhost = TestVhost::create("status-get-event");
    let broker = Broker::connect(&vhost).await;
    let r = Running::start(&db.url, &vhost).await;
    let first = outcome("e1", "t1", "u1", OutcomeResult::Succeeded, 1_000);
    // The same message twice (status crashed before its ack) and a connector redelivery that
    // found the work done (a second terminal outcome).
    let redelivered = outcome("e1", "t1", "u1", OutcomeResult::Superseded, 2_000);
    broker
        .outcomes(&[
            first.clone(),
            first.clone(),
            redelivered,
            outcome("e1", "t2", "u1", OutcomeResult::Failed, 1_500),
        ])
        .await;
    wait_stored(&r, 3).await;
    let mut client = r.client().await;
    let ev = client
        .get_event(GetEventRequest {
            event_id: "e1".into(),
            ..Default::default()
        })
        .await
        .expect("GetEvent")
        .into_inner();
    assert_eq!(
        ev.history.len(),
        3,
        "identical redelivery stored once: {:?}",
        ev.history
    );
    assert_eq!(
        ev.outcomes.len(),
        2,
        "one terminal outcome per target: {:?}",
        ev.outcomes
    );
    let t1: Vec<_> = ev
        .history
        .iter()
        .filter(|h| h.outcome.as_ref().is_some_and(|o| o.target == "t1"))
        .collect();
    assert!(t1[0].terminal && !t1[0].duplicate);
    assert!(t1[1].duplicate && !t1[1].terminal);
    assert_eq!(
        t1[1].outcome.as_ref().map(|o| o.result),
        Some(OutcomeResult::Superseded as i32)
    );
    assert!(
        ev.history.windows(2).all(|w| w[0].seq < w[1].seq),
        "oldest first"
    );
    let err = client
        .get_event(GetEventRequest {
            event_id: String::new(),
            ..Default::default()
        })
        .await
        .expect_err("empty id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("event_id"), "{}", err.message());
    let none = client
        .get_event(GetEventRequest {
            event_id: "nope".into(),
            ..Default::default()
        })
        .await
        .expect("unknown")
        .into_inner();
    assert!(none.outcomes.is_empty() && none.history.is_empty());
    r.stop().await;
}

async fn list_outcomes_and_events_paginate_and_filter(db: TestDb) {
    let vhost = TestVhost::create("status-list");
    let broker = Broker::connect(&vhost).await;
    let r = Running::start(&db.url, &vhost).await;
    let mut batch = Vec::new();
    for i in 0..30i64 {
        let target = if i % 3 == 0 { "t2" } else { "t1" };
        let result = if i % 5 == 0 {
            OutcomeResult::Failed
        } else {
            OutcomeResult::Succeeded
        };
        batch.push(outcome(
            &format!("e{i}"),
            target,
            &format!("u{}", i % 4),
            result,
            10_000 + i * 100,
        ));
    }
    batch.push(outcome("e1", "t1", "u1", OutcomeResult::Superseded, 99_000)); // a duplicate
    broker.outcomes(&batch).await;
    wait_stored(&r, 31).await;
    let mut client = r.client().await;

    // ListOutcomes: target t1 in pages of 7, via the legacy `target` field.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = client
            .list_outcomes(ListOutcomesRequest {
                target: "t1".into(),
                page_size: 7,
                page_token: token,
                ..Default::default()
            })
            .await
            .expect("ListOutcomes")
            .into_inner();
        pages += 1;
        seen.extend(page.outcomes);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 20, "t1 without its duplicate");
    assert_eq!(pages, 3);
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(
        seen.iter()
            .all(|r| r.outcome.as_ref().is_some_and(|o| o.target == "t1"))
    );

    // Filters: result, subject, time range, duplicates.
    let failed = OutcomeFilter {
        result: OutcomeResult::Failed as i32,
        ..Default::default()
    };
    let page = client
        .list_outcomes(ListOutcomesRequest {
            filter: Some(failed.clone()),
            ..Default::default()
        })
        .await
        .expect("failed")
        .into_inner();
    assert_eq!(page.outcomes.len(), 6);
    let subject = OutcomeFilter {
        subject_id: "u1".into(),
        include_duplicates: true,
        ..Default::default()
    };
    let page = client
        .list_outcomes(ListOutcomesRequest {
            filter: Some(subject),
            ..Default::default()
        })
        .await
        .expect("u1")
        .into_inner();
    assert_eq!(page.outcomes.len(), 9, "8 + the duplicate");
    let range = OutcomeFilter {
        from_ms: 10_500,
        to_ms: 11_000,
        ..Default::default()
    };
    let page = client
        .list_outcomes(ListOutcomesRequest {
            filter: Some(range),
            ..Default::default()
        })
        .await
        .expect("range")
        .into_inner();
    let ids: Vec<_> = page
        .outcomes
        .iter()
        .filter_map(|r| r.outcome.as_ref().map(|o| o.event_id.clone()))
        .collect();
    assert_eq!(ids, ["e5", "e6", "e7", "e8", "e9"]);

    // ListEvents: terminal outcomes only, in pages.
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_events(ListEventsRequest {
                filter: Some(OutcomeFilter::default()),
                page_size: 8,
                page_token: token,
            })
            .await
            .expect("ListEvents")
            .into_inner();
        events.extend(page.outcomes);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(events.len(), 30);
    assert!(events.iter().all(|r| r.terminal && !r.duplicate));
    let failed_t2 = OutcomeFilter {
        target: "t2".into(),
        result: OutcomeResult::Failed as i32,
        ..Default::default()
    };
    let page = client
        .list_events(ListEventsRequest {
            filter: Some(failed_t2),
            page_size: 0,
            page_token: String::new(),
        })
        .await
        .expect("failed t2")
        .into_inner();
    assert_eq!(page.outcomes.len(), 2, "e0 and e15");

    // Bad input names the field.
    let err = client
        .list_outcomes(ListOutcomesRequest {
            page_token: "x".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad token");
    assert!(
        err.code() == tonic::Code::InvalidArgument && err.message().contains("page_token"),
        "{err}"
    );
    let err = client
        .list_outcomes(ListOutcomesRequest {
            page_size: 5000,
            ..Default::default()
        })
        .await
        .expect_err("size");
    assert!(err.message().contains("page_size"), "{err}");
    let err = client
        .list_events(ListEventsRequest {
            filter: Some(OutcomeFilter {
                from_ms: 5,
                to_ms: 1,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect_err("range");
    assert!(err.message().contains("from_ms"), "{err}");
    r.stop().await;
}

/// A user event of tenant `tenant` for `subject` at `version`.
fn user_event(id: &str, tenant: &str, subject: &str, version: u64, title: &str) -> IdentityEvent {
    IdentityEvent {
        id: id.into(),
        tenant: tenant.into(),
        version,
        kind: EventKind::UserUpserted as i32,
        user: Some(UserState {
            id: subject.into(),
            user_name: subject.into(),
            title: title.into(),
            active: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn take(target: &str, event: &IdentityEvent, invalidate: bool) -> TakeEvent {
    TakeEvent {
        key: Some(event.subject_key(target)),
        event: Some(event.clone()),
        invalidate,
        read_only: false,
        ..Default::default()
    }
}

/// The state of record over gRPC: desired versions only grow, applied versions never move
/// back, a failure invalidates the fingerprint and the member set, and tenants and kinds are
/// parts of the key.
async fn the_state_of_record_decides_versions(db: TestDb) {
    let vhost = TestVhost::create("status-record");
    let r = Running::start(&db.url, &vhost).await;
    let mut client = r.client().await;
    let v2 = user_event("e2", "acme", "u1", 2, "Manager");
    let v1 = user_event("e1", "acme", "u1", 1, "Engineer");
    let globex = user_event("g1", "globex", "u1", 9, "Globex");
    // v2 taken before v1 (a stale retry copy): the desired state stays v2.
    let records = client
        .take_events(TakeEventsRequest {
            items: vec![
                take("t1", &v2, false),
                take("t1", &v1, false),
                take("t1", &globex, false),
            ],
        })
        .await
        .expect("TakeEvents")
        .into_inner()
        .records;
    assert_eq!(records.len(), 3, "one record per item, in order");
    assert_eq!(records[0].desired_version, 2);
    assert!(
        records[0].desired.is_none(),
        "the taken event is the desired one"
    );
    assert_eq!(
        records[1].desired_version, 2,
        "a stale copy never replaces it"
    );
    assert_eq!(
        records[1].desired.as_ref().map(|e| e.id.as_str()),
        Some("e2"),
        "a stale copy gets the newer desired state"
    );
    assert_eq!(
        records[2].desired_version, 9,
        "globex's u1 is another subject"
    );

    // v2 applied, with a group-like member set; then a late success of v1 changes nothing.
    let mut done = applied(
        "t1",
        SubjectKind::User,
        "u1",
        2,
        "r-u1",
        Presence::PresentInactive,
    );
    done.event_id = "e2".into();
    done.fingerprint = 77;
    done.members_known = true;
    done.members = vec!["m1".into()];
    let older = applied(
        "t1",
        SubjectKind::User,
        "u1",
        1,
        "r-old",
        Presence::PresentActive,
    );
    let recorded = client
        .record_converged(RecordConvergedRequest {
            items: vec![done, older],
        })
        .await
        .expect("RecordConverged")
        .into_inner()
        .recorded;
    assert_eq!(
        recorded,
        [true, false],
        "the applied version never moves back"
    );
    let key = v2.subject_key("t1");
    let ghost = SubjectKey::new("t1", "acme", SubjectKind::User, "ghost");
    let group_u1 = SubjectKey::new("t1", "acme", SubjectKind::Group, "u1");
    let got = client
        .get_records(GetRecordsRequest {
            keys: vec![key.clone(), ghost, group_u1],
        })
        .await
        .expect("GetRecords")
        .into_inner()
        .records;
    assert_eq!(
        (
            got[0].applied_version,
            got[0].remote_id.as_str(),
            got[0].fingerprint
        ),
        (2, "r-u1", 77)
    );
    assert_eq!((got[0].members_known, got[0].members.len()), (true, 1));
    assert!(!got[1].found, "answers keep the request order");
    assert!(
        !got[2].found,
        "a group with the user's id is another subject"
    );

    // A failed attempt of v3 invalidates the fingerprint and the members, and says why.
    let v3 = user_event("e3", "acme", "u1", 3, "Director");
    client
        .take_events(TakeEventsRequest {
            items: vec![take("t1", &v3, false)],
        })
        .await
        .expect("take v3");
    client
        .record_converged(RecordConvergedRequest {
            items: vec![Converged {
                key: Some(key.clone()),
                succeeded: false,
                version: 3,
                event_id: "e3".into(),
                error: "retry: HTTP 503".into(),
                ..Default::default()
            }],
        })
        .await
        .expect("record failure");
    let after = client
        .take_events(TakeEventsRequest {
            items: vec![take("t1", &v3, true)],
        })
        .await
        .expect("take v3 again")
        .into_inner()
        .records;
    let after = &after[0];
    assert_eq!((after.fingerprint, after.members_known), (0, false));
    assert_eq!(after.last_error, "retry: HTTP 503");
    assert_eq!((after.desired_version, after.applied_version), (3, 2));
    assert_eq!(
        after.applied.as_ref().map(|e| e.version),
        None,
        "this test recorded no applied event"
    );

    // GetSubject: the record per tenant and kind, presence as a word.
    let s = client
        .get_subject(GetSubjectRequest {
            subject_id: "u1".into(),
            ..Default::default()
        })
        .await
        .expect("GetSubject")
        .into_inner();
    assert_eq!(s.targets.len(), 2, "acme's and globex's u1: {s:?}");
    let acme = &s.targets[0];
    assert_eq!(
        (
            acme.tenant.as_str(),
            acme.state.as_str(),
            acme.last_operation.as_str()
        ),
        ("acme", "present-inactive", "created")
    );
    assert_eq!((acme.applied_version, acme.desired_version), (2, 3));
    assert_eq!(acme.presence, Presence::PresentInactive as i32);
    let globex_only = client
        .get_subject(GetSubjectRequest {
            subject_id: "u1".into(),
            tenant: "globex".into(),
            ..Default::default()
        })
        .await
        .expect("globex")
        .into_inner();
    assert_eq!(globex_only.targets.len(), 1);
    assert_eq!(
        globex_only.targets[0].state, "unknown",
        "taken, never applied"
    );
    let err = client
        .get_subject(GetSubjectRequest {
            subject_id: "u1".into(),
            kind: SubjectKind::Group as i32,
            ..Default::default()
        })
        .await
        .expect_err("no group u1");
    assert_eq!(err.code(), tonic::Code::NotFound);

    // Bad requests name the field.
    let too_many = (0..1001)
        .map(|i| SubjectKey::new("t1", "acme", SubjectKind::User, &format!("u{i}")))
        .collect();
    let err = client
        .get_records(GetRecordsRequest { keys: too_many })
        .await
        .expect_err("too many");
    assert!(err.message().contains("at most 1000"), "{err}");
    for (key, field) in [
        (SubjectKey::default(), "keys[0].target"),
        (
            SubjectKey::new("t1", "", SubjectKind::User, "u1"),
            "keys[0].tenant",
        ),
        (
            SubjectKey::new("t1", "acme", SubjectKind::Unspecified, "u1"),
            "keys[0].kind",
        ),
    ] {
        let err = client
            .get_records(GetRecordsRequest { keys: vec![key] })
            .await
            .expect_err("incomplete key");
        assert!(err.message().starts_with(field), "{field}: {err}");
    }
    let err = client
        .take_events(TakeEventsRequest {
            items: vec![TakeEvent {
                key: Some(key),
                ..Default::default()
            }],
        })
        .await
        .expect_err("no event");
    assert!(err.message().starts_with("items[0].event"), "{err}");
    r.stop().await;
}

async fn watch_resumes_from_a_cursor_without_gaps_or_duplicates(db: TestDb) {
    let vhost = TestVhost::create("status-watch");
    let broker = Broker::connect(&vhost).await;
    let r = Running::start(&db.url, &vhost).await;
    let all: Vec<_> = (0..300)
        .map(|i| {
            outcome(
                &format!("w{i}"),
                if i % 2 == 0 { "t1" } else { "t2" },
                "u1",
                OutcomeResult::Succeeded,
                1_000 + i,
            )
        })
        .collect();
    broker.outcomes(&all[..100]).await;
    let mut client = r.client().await;

    // A first watcher reads 40, then goes away.
    let mut got = Vec::new();
    let mut stream = client
        .watch_outcomes(WatchOutcomesRequest::default())
        .await
        .expect("watch")
        .into_inner();
    while got.len() < 40 {
        let item = tokio::time::timeout(WAIT, stream.next())
            .await
            .expect("item in time")
            .expect("open")
            .expect("ok");
        got.push(item);
    }
    drop(stream);
    let cursor = got.last().map(|r| r.seq.to_string()).expect("cursor");

    // More outcomes while nobody watches, then resume while the rest is being published, and a
    // restart of the service in the middle.
    broker.outcomes(&all[100..200]).await;
    let mut stream = client
        .watch_outcomes(WatchOutcomesRequest {
            cursor,
            ..Default::default()
        })
        .await
        .expect("resume")
        .into_inner();
    while got.len() < 150 {
        got.push(
            tokio::time::timeout(WAIT, stream.next())
                .await
                .expect("item")
                .expect("open")
                .expect("ok"),
        );
    }
    drop(stream);
    let cursor = got.last().map(|r| r.seq.to_string()).expect("cursor");
    r.stop().await;
    let r = Running::start(&db.url, &vhost).await;
    let mut client = r.client().await;
    let publish = {
        let rest = all[200..].to_vec();
        async move { broker.outcomes(&rest).await }
    };
    let (_, _) = tokio::join!(publish, async {
        let mut stream = client
            .watch_outcomes(WatchOutcomesRequest {
                cursor,
                ..Default::default()
            })
            .await
            .expect("resume")
            .into_inner();
        while got.len() < 300 {
            got.push(
                tokio::time::timeout(WAIT, stream.next())
                    .await
                    .expect("item")
                    .expect("open")
                    .expect("ok"),
            );
        }
    });
    let ids: Vec<String> = got
        .iter()
        .filter_map(|r| r.outcome.as_ref().map(|o| o.event_id.clone()))
        .collect();
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 300, "no duplicates");
    let want: HashSet<String> = (0..300).map(|i| format!("w{i}")).collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<HashSet<_>>(),
        want,
        "no gaps"
    );
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "in seq order");

    // Filters apply to the stream; from_now skips history.
    let mut t2 = client
        .watch_outcomes(WatchOutcomesRequest {
            filter: Some(OutcomeFilter {
                target: "t2".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("filtered")
        .into_inner();
    for _ in 0..150 {
        let item = tokio::time::timeout(WAIT, t2.next())
            .await
            .expect("item")
            .expect("open")
            .expect("ok");
        assert_eq!(item.outcome.map(|o| o.target).as_deref(), Some("t2"));
    }
    let mut live = client
        .watch_outcomes(WatchOutcomesRequest {
            from_now: true,
            ..Default::default()
        })
        .await
        .expect("live")
        .into_inner();
    let broker = Broker::connect(&vhost).await;
    broker
        .outcomes(&[outcome("fresh", "t1", "u9", OutcomeResult::Succeeded, 5)])
        .await;
    let item = tokio::time::timeout(WAIT, live.next())
        .await
        .expect("live item")
        .expect("open")
        .expect("ok");
    assert_eq!(item.outcome.map(|o| o.event_id).as_deref(), Some("fresh"));
    let err = client
        .watch_outcomes(WatchOutcomesRequest {
            cursor: "abc".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad cursor");
    assert!(err.message().contains("cursor"), "{err}");
    r.stop().await;
}

async fn targets_report_counts_latency_quarantine_and_queue_depth(db: TestDb) {
    let vhost = TestVhost::create("status-targets");
    let broker = Broker::connect(&vhost).await;
    let r = Running::start(&db.url, &vhost).await;
    let mut batch = Vec::new();
    for i in 1..=100u64 {
        let mut o = outcome(
            &format!("l{i}"),
            "t1",
            &format!("u{i}"),
            if i <= 90 {
                OutcomeResult::Succeeded
            } else {
                OutcomeResult::Failed
            },
            i as i64,
        );
        o.latency_ms = i;
        batch.push(o);
    }
    let mut dup = outcome("l1", "t1", "u1", OutcomeResult::Succeeded, 10_000);
    dup.latency_ms = 1_000_000;
    batch.push(dup);
    broker.outcomes(&batch).await;
    let report = |replica: &str, quarantined: bool| TargetReport {
        target: "t1".into(),
        provider: "scim".into(),
        replica: replica.into(),
        reported_at_ms: 1,
        throttle_waits: 3,
        throttle_wait_ms: 1500,
        quarantined,
        quarantine_reason: if quarantined {
            "auth failure: 401".into()
        } else {
            String::new()
        },
        concurrency_limit: 4,
        in_flight: 1,
        shards: 2,
        ..Default::default()
    };
    broker.report(&report("a", true)).await;
    broker.report(&report("b", false)).await;
    // Three events waiting in t1's shard queues.
    for s in ["x", "y", "z"] {
        let d = delivery(&format!("q-{s}"), "t1", s, EventKind::UserUpserted);
        let props =
            scimrelay_core::amqp::properties(scimrelay_proto::TYPE_DELIVERY, FieldTable::default());
        broker
            .publisher
            .publish(
                scimrelay_core::amqp::EVENTS_EXCHANGE,
                &routing_key("t1", s),
                &d.encode_to_vec(),
                props,
            )
            .await
            .expect("event");
    }
    wait_stored(&r, 101).await;
    let mut client = r.client().await;
    let t = eventually("both reports", WAIT, || {
        let mut client = client.clone();
        async move {
            let t = client
                .get_target(GetTargetRequest {
                    target: "t1".into(),
                })
                .await
                .ok()?
                .into_inner();
            (t.throttle_waits == 6).then_some(t)
        }
    })
    .await;
    assert_eq!(t.provider, "scim");
    let counts: Vec<(i32, u64)> = t.counts.iter().map(|c| (c.result, c.count)).collect();
    assert_eq!(
        counts,
        [
            (OutcomeResult::Succeeded as i32, 90),
            (OutcomeResult::Failed as i32, 10)
        ],
        "the duplicate is not counted"
    );
    assert_eq!(
        (
            t.latency_p50_ms,
            t.latency_p95_ms,
            t.latency_p99_ms,
            t.latency_samples
        ),
        (50, 95, 99, 100)
    );
    assert_eq!(
        (t.throttle_wait_ms, t.concurrency_limit, t.in_flight),
        (3000, 8, 2)
    );
    assert!(t.quarantined);
    assert_eq!(t.quarantine_reason, "auth failure: 401");
    assert!(t.queue_depth_known);
    assert_eq!(t.queue_depth, 3);
    let all = client
        .list_targets(ListTargetsRequest {})
        .await
        .expect("ListTargets")
        .into_inner();
    assert_eq!(
        all.targets
            .iter()
            .map(|t| t.target.as_str())
            .collect::<Vec<_>>(),
        ["t1"]
    );
    let err = client
        .get_target(GetTargetRequest {
            target: "nope".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);
    r.stop().await;
}

async fn dead_letters_are_listed_and_replayed(db: TestDb) {
    let vhost = TestVhost::create("status-dlq");
    let broker = Broker::connect(&vhost).await;
    let r = Running::start(&db.url, &vhost).await;
    for (e, s) in [("d1", "a"), ("d2", "b"), ("d3", "c")] {
        // Dead-lettered after spending its attempts (and some uncounted waits).
        let d = Delivery {
            attempt: 7,
            waits: 4,
            ..delivery(e, "t1", s, EventKind::UserUpserted)
        };
        broker
            .park("t1", Some(&routing_key("t1", s)), &d.encode_to_vec())
            .await;
    }
    broker.park("t1", None, b"\x00poison").await;
    let d = delivery("d4", "t2", "d", EventKind::UserUpserted);
    broker
        .park("t2", Some(&routing_key("t2", "d")), &d.encode_to_vec())
        .await;
    broker
        .outcomes(&[outcome("d1", "t1", "a", OutcomeResult::DeadLettered, 1_000)])
        .await;
    wait_stored(&r, 1).await;
    let mut client = r.client().await;

    let list = client
        .list_dead_letters(ListDeadLettersRequest {
            target: "t1".into(),
            limit: 0,
        })
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.total, 5);
    assert_eq!(list.messages.len(), 4);
    assert_eq!(list.messages.iter().filter(|m| m.replayable).count(), 3);
    assert_eq!(list.messages[0].event_id, "d1");
    assert_eq!(list.messages[0].routing_key, routing_key("t1", "a"));
    // Listing leaves everything in place.
    let again = client
        .list_dead_letters(ListDeadLettersRequest {
            target: String::new(),
            limit: 10,
        })
        .await
        .expect("again")
        .into_inner();
    assert_eq!((again.total, again.messages.len()), (5, 5));

    let done = client
        .replay_dead_letters(ReplayDeadLettersRequest {
            target: "t1".into(),
            ..Default::default()
        })
        .await
        .expect("replay")
        .into_inner();
    assert_eq!(done.replayed, 3);
    assert_eq!(done.skipped, 1);
    assert!(
        done.skip_reasons.iter().any(|r| r.contains("poison")),
        "{:?}",
        done.skip_reasons
    );
    let replayed = consume_shards(&broker, "t1", 3).await;
    let ids: BTreeSet<String> = replayed
        .iter()
        .filter_map(|m| {
            Delivery::decode(m.data.as_slice())
                .ok()
                .and_then(|d| d.event)
                .map(|e| e.id)
        })
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from(["d1".to_owned(), "d2".to_owned(), "d3".to_owned()])
    );
    // Each copy starts a fresh attempt budget and is marked as replayed (its outcome says so).
    for m in &replayed {
        let d = Delivery::decode(m.data.as_slice()).expect("delivery");
        assert_eq!((d.attempt, d.waits), (0, 0), "{d:?}");
        assert!(scimrelay_core::amqp::header_bool(
            &m.properties,
            scimrelay_proto::HEADER_REPLAYED
        ));
    }
    let left = client
        .list_dead_letters(ListDeadLettersRequest::default())
        .await
        .expect("left")
        .into_inner();
    assert_eq!(left.total, 2, "the poison message and t2's stay");

    // The replayed copy's outcome becomes d1's terminal outcome, not a duplicate.
    broker
        .outcomes(&[outcome("d1", "t1", "a", OutcomeResult::Succeeded, 2_000)])
        .await;
    let ev = eventually("replayed outcome", WAIT, || {
        let mut client = client.clone();
        async move {
            let ev = client
                .get_event(GetEventRequest {
                    event_id: "d1".into(),
                    ..Default::default()
                })
                .await
                .ok()?
                .into_inner();
            (ev.history.len() == 2).then_some(ev)
        }
    })
    .await;
    assert_eq!(ev.outcomes.len(), 1);
    assert_eq!(ev.outcomes[0].result, OutcomeResult::Succeeded as i32);
    assert!(ev.history.iter().all(|h| !h.duplicate));

    // Selecting by event id.
    let done = client
        .replay_dead_letters(ReplayDeadLettersRequest {
            event_ids: vec!["d4".into()],
            ..Default::default()
        })
        .await
        .expect("by id")
        .into_inner();
    assert_eq!(done.event_ids, ["d4"]);
    r.stop().await;
}

async fn held_events_are_listed_released_and_dropped(db: TestDb) {
    let vhost = TestVhost::create("status-held");
    let broker = Broker::connect(&vhost).await;
    let r = Running::start(&db.url, &vhost).await;
    for (e, s) in [("h1", "a"), ("h2", "b"), ("h3", "c")] {
        broker
            .held(&HeldEvent {
                delivery: Some(delivery(e, "t1", s, EventKind::UserDeleted)),
                routing_key: routing_key("t1", s),
                reason: "3 of 4 users deleted within 10 min (limit 20%)".into(),
                held_at_ms: 5,
                id: 0,
            })
            .await;
    }
    let mut client = r.client().await;
    let first = eventually("3 held", WAIT, || {
        let mut client = client.clone();
        async move {
            let p = client
                .list_held(ListHeldRequest {
                    target: "t1".into(),
                    page_size: 2,
                    page_token: String::new(),
                })
                .await
                .ok()?
                .into_inner();
            (p.held.len() == 2).then_some(p)
        }
    })
    .await;
    assert!(!first.next_page_token.is_empty());
    let second = client
        .list_held(ListHeldRequest {
            target: "t1".into(),
            page_size: 2,
            page_token: first.next_page_token,
        })
        .await
        .expect("page 2")
        .into_inner();
    assert_eq!(second.held.len(), 1);
    assert!(second.next_page_token.is_empty());
    let ev = client
        .get_event(GetEventRequest {
            event_id: "h1".into(),
            ..Default::default()
        })
        .await
        .expect("h1")
        .into_inner();
    assert_eq!(ev.held.len(), 1, "GetEvent shows the held copy");
    assert!(ev.outcomes.is_empty(), "held is not terminal");

    let err = client
        .release_held(HeldSelection::default())
        .await
        .expect_err("empty selection");
    assert!(
        err.code() == tonic::Code::InvalidArgument && err.message().contains("event_ids"),
        "{err}"
    );

    let released = client
        .release_held(HeldSelection {
            event_ids: vec!["h1".into()],
            ..Default::default()
        })
        .await
        .expect("release")
        .into_inner();
    assert_eq!(released.event_ids, ["h1"]);
    let msgs = consume_shards(&broker, "t1", 1).await;
    let d = Delivery::decode(msgs[0].data.as_slice()).expect("delivery");
    assert_eq!(d.event.map(|e| e.id).as_deref(), Some("h1"));
    let flag = msgs[0]
        .properties
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(scimrelay_status::HEADER_RELEASED).cloned());
    assert_eq!(
        flag,
        Some(lapin::types::AMQPValue::Boolean(true)),
        "the guard can tell a released event"
    );

    let dropped = client
        .drop_held(HeldSelection {
            target: "t1".into(),
            ..Default::default()
        })
        .await
        .expect("drop")
        .into_inner();
    assert_eq!(dropped.affected, 2);
    let left = client
        .list_held(ListHeldRequest::default())
        .await
        .expect("left")
        .into_inner();
    assert!(left.held.is_empty());
    let ev = client
        .get_event(GetEventRequest {
            event_id: "h2".into(),
            ..Default::default()
        })
        .await
        .expect("h2")
        .into_inner();
    assert_eq!(ev.outcomes.len(), 1);
    assert_eq!(ev.outcomes[0].result, OutcomeResult::Failed as i32);
    assert_eq!(ev.outcomes[0].detail, "dropped by operator");
    assert_eq!(ev.outcomes[0].subject_id, "b");
    assert!(ev.held.is_empty());
    r.stop().await;
}

async fn the_deprovision_guard_admits_then_refuses(db: TestDb) {
    let vhost = TestVhost::create("status-guard");
    let r = Running::start(&db.url, &vhost).await;
    let mut client = r.client().await;
    present_users(&mut client, "t1", "u", 20).await;
    // Users that left or never arrived do not count (the guard counts the state of record).
    client
        .record_converged(RecordConvergedRequest {
            items: vec![applied(
                "t1",
                SubjectKind::User,
                "left-long-ago",
                1,
                "",
                Presence::Absent,
            )],
        })
        .await
        .expect("absent user");
    client
        .take_events(TakeEventsRequest {
            items: vec![take(
                "t1",
                &user_event("n1", "acme", "never-applied", 1, ""),
                false,
            )],
        })
        .await
        .expect("taken user");
    // t1's guard (the targets file): 10 % of the users within 600 s, from 10 users.
    let request = |target: &str, subject: &str| AdmitDeprovisionRequest {
        target: target.into(),
        tenant: "acme".into(),
        subject_id: subject.into(),
        event_id: format!("d-{subject}"),
    };
    for (req, field, code) in [
        (request("", "u0"), "target", tonic::Code::InvalidArgument),
        (
            request("t1", ""),
            "subject_id",
            tonic::Code::InvalidArgument,
        ),
        (
            request("not-in-the-file", "u0"),
            "target",
            tonic::Code::FailedPrecondition,
        ),
    ] {
        let err = client
            .admit_deprovision(req)
            .await
            .expect_err("invalid request");
        assert_eq!(err.code(), code, "{field}: {err}");
        assert!(
            err.message().starts_with(&format!("{field}:")),
            "{field}: {}",
            err.message()
        );
    }
    // One absent user within the window counts (it was present when the window began).
    for (subject, recent) in [("u0", 1), ("u1", 2), ("u0", 2)] {
        let a = client
            .admit_deprovision(request("t1", subject))
            .await
            .expect("AdmitDeprovision")
            .into_inner();
        assert!(a.admitted, "{subject}: {a:?}");
        assert_eq!((a.users, a.recent), (21, recent), "{subject}");
    }
    let held = client
        .admit_deprovision(request("t1", "u2"))
        .await
        .expect("AdmitDeprovision")
        .into_inner();
    assert!(!held.admitted);
    assert_eq!((held.users, held.recent), (21, 2));
    assert_eq!(
        held.reason,
        "2 of 21 users deprovisioned within 600 s (limit 10%)"
    );
    // t2's guard is off in the targets file: everything is admitted, nothing counted.
    present_users(&mut client, "t2", "u", 20).await;
    for i in 0..20 {
        let a = client
            .admit_deprovision(request("t2", &format!("u{i}")))
            .await
            .expect("AdmitDeprovision")
            .into_inner();
        assert!(a.admitted, "u{i}");
    }
    r.stop().await;
}

async fn a_restart_mid_run_loses_no_outcome(db: TestDb) {
    const N: usize = 3000;
    let vhost = TestVhost::create("status-restart");
    let broker = Broker::connect(&vhost).await;
    let all: Vec<_> = (0..N)
        .map(|i| {
            outcome(
                &format!("r{i}"),
                "t1",
                &format!("u{}", i % 50),
                OutcomeResult::Succeeded,
                i as i64,
            )
        })
        .collect();
    let publisher = tokio::spawn(async move {
        for chunk in all.chunks(100) {
            broker.outcomes(chunk).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    // Graceful stop, then a hard abort (no shutdown, unacked batches in flight), then a final run.
    let r = Running::start(&db.url, &vhost).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.stop().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let r = Running::start(&db.url, &vhost).await;
    tokio::time::sleep(Duration::from_millis(150)).await;
    r.crash().await;
    let r = Running::start(&db.url, &vhost).await;
    publisher.await.expect("publisher");
    wait_stored(&r, N).await;
    let mut client = r.client().await;
    let mut seen = HashSet::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_outcomes(ListOutcomesRequest {
                page_size: 1000,
                page_token: token,
                filter: Some(OutcomeFilter {
                    include_duplicates: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("list")
            .into_inner();
        for o in page.outcomes {
            let id = o.outcome.map(|o| o.event_id).unwrap_or_default();
            assert!(seen.insert(id.clone()), "{id} stored twice");
            assert!(o.terminal && !o.duplicate);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), N, "every outcome stored exactly once");
    let t = client
        .get_target(GetTargetRequest {
            target: "t1".into(),
        })
        .await
        .expect("t1")
        .into_inner();
    assert_eq!(t.counts.iter().map(|c| c.count).sum::<u64>(), N as u64);
    r.stop().await;
}

// ---------------------------------------------------------------------------------------------
// API keys and TLS.

on_both!(a_tenant_key_reads_only_its_tenants);

/// The service with the keys of [`Keys`]; its `client()` presents the admin key.
async fn start_with_keys(db: &TestDb, vhost: &TestVhost, keys: &Keys) -> Running {
    Running::start_secured(&db.url, vhost, keys.auth.clone(), None, Some(keys.admin)).await
}

/// The status of a refused call.
fn refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) -> tonic::Status {
    result.expect_err("refused")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_needs_a_valid_key_within_its_rate() {
    let db = TestDb::sqlite().await;
    let vhost = TestVhost::create("status-keys");
    let keys = Keys::new();
    let r = start_with_keys(&db, &vhost, &keys).await;
    let list = || ListOutcomesRequest::default();

    let err = refused(r.client_as(None).await.list_outcomes(list()).await);
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("Authorization: Bearer"), "{err}");
    let err = refused(
        r.client_as(Some("srk_wrong"))
            .await
            .list_targets(ListTargetsRequest {})
            .await,
    );
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(
        !err.message().contains("srk_wrong"),
        "never echo the key: {err}"
    );
    let err = refused(
        r.client_as(Some(keys.revoked))
            .await
            .get_event(GetEventRequest {
                event_id: "e1".into(),
                ..Default::default()
            })
            .await,
    );
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(
        err.message().contains("revoked") && err.message().contains("\"old\""),
        "{err}"
    );
    // A streaming call is refused before it opens.
    let err = refused(
        r.client_as(None)
            .await
            .watch_outcomes(WatchOutcomesRequest::default())
            .await,
    );
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    // A valid key reads; admin implies read.
    let mut reader = r.client_as(Some(keys.reader)).await;
    reader.list_outcomes(list()).await.expect("reader lists");
    reader
        .list_targets(ListTargetsRequest {})
        .await
        .expect("reader lists targets");
    r.client()
        .await
        .list_outcomes(list())
        .await
        .expect("admin reads");

    // Health and reflection need no key.
    let channel = tonic::transport::Channel::from_shared(r.grpc.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("channel");
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "scimrelay.v1.StatusService".into(),
        })
        .await
        .expect("health without a key")
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    // One request per second: a quick second one is refused with when to retry.
    let mut slow = r.client_as(Some(keys.slow)).await;
    let mut limited = None;
    for _ in 0..5 {
        if let Err(e) = slow.list_outcomes(list()).await {
            limited = Some(e);
            break;
        }
    }
    let err = limited.expect("over the rate within 5 quick calls");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    let retry_after: u64 = err
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(err.message().contains("\"slow\""), "{err}");
    reader
        .list_outcomes(list())
        .await
        .expect("each key has its own budget");
    r.stop().await;
}

fn held_event(event: &str, subject: &str) -> HeldEvent {
    HeldEvent {
        delivery: Some(delivery(event, "t1", subject, EventKind::UserDeleted)),
        routing_key: routing_key("t1", subject),
        reason: "3 of 4 users deleted within 10 min (limit 20%)".into(),
        held_at_ms: 5,
        id: 0,
    }
}

/// Writing the state of record needs the `connector` scope; the guard `connector` or `admin`:
/// a dashboard's `read` key can neither move versions nor fill a target's guard window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_of_record_and_the_guard_need_the_connector_scope() {
    let db = TestDb::sqlite().await;
    let vhost = TestVhost::create("status-connector-scope");
    let keys = Keys::new();
    let r = start_with_keys(&db, &vhost, &keys).await;
    let event = user_event("e1", "acme", "u1", 1, "x");
    let takes = || TakeEventsRequest {
        items: vec![take("t1", &event, false)],
    };
    let records = || RecordConvergedRequest {
        items: vec![applied(
            "t1",
            SubjectKind::User,
            "u1",
            1,
            "r1",
            Presence::PresentActive,
        )],
    };
    let admit = || AdmitDeprovisionRequest {
        target: "t1".into(),
        tenant: "acme".into(),
        subject_id: "u1".into(),
        event_id: "d1".into(),
    };
    let mut reader = r.client_as(Some(keys.reader)).await;
    let mut admin = r.client().await;
    for (who, err, scope) in [
        (
            "reader",
            refused(reader.take_events(takes()).await),
            "connector",
        ),
        (
            "reader",
            refused(reader.record_converged(records()).await),
            "connector",
        ),
        (
            "reader",
            refused(reader.admit_deprovision(admit()).await),
            "connector",
        ),
        (
            "ops",
            refused(admin.take_events(takes()).await),
            "connector",
        ),
        (
            "ops",
            refused(admin.record_converged(records()).await),
            "connector",
        ),
    ] {
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{who}: {err}");
        assert!(
            err.message().contains(&format!("`{scope}`")),
            "{who}: {err}"
        );
    }
    // Nothing was written by the refused calls.
    let nothing = reader
        .get_records(GetRecordsRequest {
            keys: vec![event.subject_key("t1")],
        })
        .await
        .expect("a reader reads records")
        .into_inner();
    assert!(!nothing.records[0].found, "{nothing:?}");
    admin
        .admit_deprovision(admit())
        .await
        .expect("an admin may ask the guard");
    let mut connector = r.client_as(Some(keys.connector)).await;
    connector
        .take_events(takes())
        .await
        .expect("connector takes");
    connector
        .record_converged(records())
        .await
        .expect("connector records");
    connector
        .admit_deprovision(admit())
        .await
        .expect("connector asks the guard");
    connector
        .list_targets(ListTargetsRequest {})
        .await
        .expect("connector implies read");
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_actions_need_the_admin_scope() {
    let db = TestDb::sqlite().await;
    let vhost = TestVhost::create("status-admin");
    let keys = Keys::new();
    let broker = Broker::connect(&vhost).await;
    let r = start_with_keys(&db, &vhost, &keys).await;
    broker.held(&held_event("h1", "a")).await;
    broker.held(&held_event("h2", "b")).await;
    let d = delivery("d1", "t1", "c", EventKind::UserUpserted);
    broker
        .park("t1", Some(&routing_key("t1", "c")), &d.encode_to_vec())
        .await;
    let mut reader = r.client_as(Some(keys.reader)).await;
    eventually("2 held", WAIT, || {
        let mut reader = reader.clone();
        async move {
            let held = reader.list_held(ListHeldRequest::default()).await.ok()?;
            (held.into_inner().held.len() == 2).then_some(())
        }
    })
    .await;

    let h1 = HeldSelection {
        event_ids: vec!["h1".into()],
        ..Default::default()
    };
    for (rpc, err) in [
        (
            "ReleaseHeld",
            refused(reader.release_held(h1.clone()).await),
        ),
        ("DropHeld", refused(reader.drop_held(h1.clone()).await)),
        (
            "ReplayDeadLetters",
            refused(
                reader
                    .replay_dead_letters(ReplayDeadLettersRequest {
                        target: "t1".into(),
                        ..Default::default()
                    })
                    .await,
            ),
        ),
    ] {
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{rpc}: {err}");
        assert!(
            err.message().contains("\"reader\"") && err.message().contains("`admin`"),
            "{rpc}: {err}"
        );
    }
    // Nothing changed: both still held, the dead letter still parked, no outcome recorded.
    let held = reader
        .list_held(ListHeldRequest::default())
        .await
        .expect("held")
        .into_inner();
    assert_eq!(held.held.len(), 2, "still held");
    let dead = reader
        .list_dead_letters(ListDeadLettersRequest {
            target: "t1".into(),
            limit: 0,
        })
        .await
        .expect("dead letters")
        .into_inner();
    assert_eq!(dead.total, 1, "still parked");
    let ev = reader
        .get_event(GetEventRequest {
            event_id: "h1".into(),
            ..Default::default()
        })
        .await
        .expect("h1")
        .into_inner();
    assert!(ev.outcomes.is_empty() && ev.held.len() == 1, "{ev:?}");

    // The admin key releases one and drops the other.
    let mut admin = r.client().await;
    let released = admin.release_held(h1).await.expect("release").into_inner();
    assert_eq!(released.event_ids, ["h1"]);
    let msgs = consume_shards(&broker, "t1", 1).await;
    let d = Delivery::decode(msgs[0].data.as_slice()).expect("delivery");
    assert_eq!(d.event.map(|e| e.id).as_deref(), Some("h1"));
    let dropped = admin
        .drop_held(HeldSelection {
            event_ids: vec!["h2".into()],
            ..Default::default()
        })
        .await
        .expect("drop")
        .into_inner();
    assert_eq!(dropped.event_ids, ["h2"]);
    let left = admin
        .list_held(ListHeldRequest::default())
        .await
        .expect("left")
        .into_inner();
    assert!(left.held.is_empty(), "{left:?}");
    r.stop().await;
}

/// An outcome of `tenant`.
fn of_tenant(event: &str, target: &str, subject: &str, tenant: &str) -> Outcome {
    Outcome {
        tenant: tenant.into(),
        ..outcome(event, target, subject, OutcomeResult::Succeeded, 1_000)
    }
}

fn event_ids(outcomes: &[scimrelay_proto::v1::RecordedOutcome]) -> Vec<String> {
    outcomes
        .iter()
        .filter_map(|r| r.outcome.as_ref().map(|o| o.event_id.clone()))
        .collect()
}

async fn a_tenant_key_reads_only_its_tenants(db: TestDb) {
    let vhost = TestVhost::create("status-tenants");
    let keys = Keys::new();
    let broker = Broker::connect(&vhost).await;
    let r = start_with_keys(&db, &vhost, &keys).await;
    broker
        .outcomes(&[
            of_tenant("a1", "t1", "ua", "acme"),
            of_tenant("b1", "t1", "ub", "beta"),
            of_tenant("a2", "t2", "ua", "acme"),
            of_tenant("b2", "t2", "ub", "beta"),
        ])
        .await;
    let mut held = held_event("hb", "ub2");
    if let Some(e) = held.delivery.as_mut().and_then(|d| d.event.as_mut()) {
        e.tenant = "beta".into();
    }
    broker.held(&held).await;
    wait_stored(&r, 4).await;
    let mut connector = r.client_as(Some(keys.connector)).await;
    let of = |target: &str, tenant: &str, subject: &str| Converged {
        key: Some(SubjectKey::new(target, tenant, SubjectKind::User, subject)),
        ..applied(
            target,
            SubjectKind::User,
            subject,
            1,
            "r",
            Presence::PresentActive,
        )
    };
    connector
        .record_converged(RecordConvergedRequest {
            items: vec![
                of("t1", "acme", "ua"),
                of("t2", "acme", "ua"),
                of("t1", "beta", "ub"),
                of("t2", "beta", "ub"),
            ],
        })
        .await
        .expect("state of record");
    let mut admin = r.client().await;
    eventually("held stored", WAIT, || {
        let mut admin = admin.clone();
        async move {
            let h = admin.list_held(ListHeldRequest::default()).await.ok()?;
            (!h.into_inner().held.is_empty()).then_some(())
        }
    })
    .await;
    let mut acme = r.client_as(Some(keys.acme)).await;

    // Listings: the key's one tenant by default; another tenant is refused by name.
    let page = acme
        .list_outcomes(ListOutcomesRequest::default())
        .await
        .expect("acme lists")
        .into_inner();
    assert_eq!(event_ids(&page.outcomes), ["a1", "a2"]);
    let page = acme
        .list_events(ListEventsRequest {
            filter: Some(OutcomeFilter {
                tenant: "acme".into(),
                target: "t2".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("acme lists events")
        .into_inner();
    assert_eq!(event_ids(&page.outcomes), ["a2"]);
    let beta = || {
        Some(OutcomeFilter {
            tenant: "beta".into(),
            ..Default::default()
        })
    };
    let err = refused(
        acme.list_outcomes(ListOutcomesRequest {
            filter: beta(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("\"beta\""), "{err}");
    let err = refused(
        acme.watch_outcomes(WatchOutcomesRequest {
            filter: beta(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    let mut watch = acme
        .watch_outcomes(WatchOutcomesRequest::default())
        .await
        .expect("acme watches")
        .into_inner();
    let mut watched = Vec::new();
    for _ in 0..2 {
        let o = tokio::time::timeout(WAIT, watch.next())
            .await
            .expect("an outcome")
            .expect("stream")
            .expect("outcome");
        watched.push(o);
    }
    assert_eq!(event_ids(&watched), ["a1", "a2"]);
    drop(watch);

    // A key with several tenants names the one it reads.
    let mut both = r.client_as(Some(keys.acme_beta)).await;
    let err = refused(both.list_outcomes(ListOutcomesRequest::default()).await);
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(
        err.message()
            .starts_with("filter.tenant: required for a key scoped to tenants"),
        "{err}"
    );
    let page = both
        .list_outcomes(ListOutcomesRequest {
            filter: beta(),
            ..Default::default()
        })
        .await
        .expect("acme-beta lists beta")
        .into_inner();
    assert_eq!(event_ids(&page.outcomes), ["b1", "b2"]);
    // A key for all tenants reads everything, or one tenant when it asks.
    let all = admin
        .list_outcomes(ListOutcomesRequest::default())
        .await
        .expect("admin lists")
        .into_inner();
    assert_eq!(all.outcomes.len(), 4);

    // Another tenant's event, subject or held copy is answered like an unknown one.
    let ev = acme
        .get_event(GetEventRequest {
            event_id: "a1".into(),
            ..Default::default()
        })
        .await
        .expect("own event")
        .into_inner();
    assert_eq!(ev.outcomes.len(), 1);
    let foreign = refused(
        acme.get_event(GetEventRequest {
            event_id: "b1".into(),
            ..Default::default()
        })
        .await,
    );
    let unknown = refused(
        acme.get_event(GetEventRequest {
            event_id: "nope".into(),
            ..Default::default()
        })
        .await,
    );
    let held_foreign = refused(
        acme.get_event(GetEventRequest {
            event_id: "hb".into(),
            ..Default::default()
        })
        .await,
    );
    for err in [&foreign, &unknown, &held_foreign] {
        assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    }
    assert_eq!(
        foreign.message().replace("\"b1\"", "\"nope\""),
        unknown.message(),
        "indistinguishable from an unknown id"
    );
    let seen_by_admin = admin
        .get_event(GetEventRequest {
            event_id: "hb".into(),
            ..Default::default()
        })
        .await
        .expect("admin sees the held copy")
        .into_inner();
    assert_eq!(seen_by_admin.held.len(), 1);
    let subject = acme
        .get_subject(GetSubjectRequest {
            subject_id: "ua".into(),
            target: String::new(),
            ..Default::default()
        })
        .await
        .expect("own subject")
        .into_inner();
    assert_eq!(subject.targets.len(), 2);
    let err = refused(
        acme.get_subject(GetSubjectRequest {
            subject_id: "ub".into(),
            target: String::new(),
            ..Default::default()
        })
        .await,
    );
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    // Operational RPCs act on what tenants share: a key for all tenants only.
    let for_all = |err: tonic::Status, rpc: &str| {
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{rpc}: {err}");
        assert_eq!(
            err.message(),
            format!(
                "API key \"acme-reader\" is scoped to tenants; {rpc} needs a key for all tenants"
            )
        );
    };
    for_all(
        refused(acme.list_targets(ListTargetsRequest {}).await),
        "ListTargets",
    );
    for_all(
        refused(
            acme.get_target(GetTargetRequest {
                target: "t1".into(),
            })
            .await,
        ),
        "GetTarget",
    );
    for_all(
        refused(
            acme.get_records(GetRecordsRequest {
                keys: vec![SubjectKey::new("t1", "acme", SubjectKind::User, "ua")],
            })
            .await,
        ),
        "GetRecords",
    );
    for_all(
        refused(
            acme.list_dead_letters(ListDeadLettersRequest::default())
                .await,
        ),
        "ListDeadLetters",
    );
    for_all(
        refused(acme.list_held(ListHeldRequest::default()).await),
        "ListHeld",
    );
    r.stop().await;
}

mod tls {
    //! TLS on the gRPC listener with certificates made here: under mutual TLS a client of the
    //! trusted CA is served; a client whose certificate another CA signed, or a client without
    //! one, is not.

    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    use scimrelay_core::tls::ServerTls;
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    /// A certificate and its private key, PEM.
    struct CertKey {
        cert: String,
        key: String,
    }

    /// A CA's certificate and its issuer.
    fn authority(name: &str) -> (String, Issuer<'static, KeyPair>) {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA").pem();
        (cert, Issuer::new(params, key))
    }

    fn signed(names: &[&str], usage: ExtendedKeyUsagePurpose, ca: &Issuer<'_, KeyPair>) -> CertKey {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .expect("params");
        params.distinguished_name.push(DnType::CommonName, names[0]);
        params.extended_key_usages = vec![usage];
        CertKey {
            cert: params.signed_by(&key, ca).expect("signed").pem(),
            key: key.serialize_pem(),
        }
    }

    /// A client certificate that is its own CA: unknown to the server.
    fn self_signed_client() -> CertKey {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(vec!["stranger".to_owned()]).expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, "stranger");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        CertKey {
            cert: params.self_signed(&key).expect("self-signed").pem(),
            key: key.serialize_pem(),
        }
    }

    /// Connects over TLS (trusting `ca`, presenting `identity`) and lists targets with the
    /// admin key; the error of whichever step failed.
    async fn call(
        r: &Running,
        ca: &str,
        identity: Option<&CertKey>,
        key: &str,
    ) -> Result<(), String> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost");
        if let Some(id) = identity {
            tls = tls.identity(Identity::from_pem(&id.cert, &id.key));
        }
        let attempt = async {
            let channel = Channel::from_shared(format!("https://{}", r.grpc_addr))
                .map_err(|e| e.to_string())?
                .tls_config(tls)
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| format!("connect: {e:?}"))?;
            let mut client =
                scimrelay_proto::v1::status_service_client::StatusServiceClient::with_interceptor(
                    channel,
                    common::Bearer::new(Some(key)),
                );
            client
                .list_targets(ListTargetsRequest {})
                .await
                .map(drop)
                .map_err(|e| format!("call: {:?}: {}", e.code(), e.message()))
        };
        tokio::time::timeout(Duration::from_secs(10), attempt)
            .await
            .map_err(|_| "timed out".to_owned())?
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mutual_tls_serves_only_clients_of_the_ca() {
        let (ca, issuer) = authority("scimrelay status test CA");
        let server = signed(
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
        );
        let client = signed(
            &["ops-console"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
        );
        let (_, other_issuer) = authority("another CA");
        let from_other_ca = signed(
            &["ops-console"],
            ExtendedKeyUsagePurpose::ClientAuth,
            &other_issuer,
        );
        let stranger = self_signed_client();
        let tls = ServerTls {
            cert_pem: server.cert.clone().into_bytes(),
            key_pem: server.key.clone().into_bytes(),
            client_ca_pem: Some(ca.clone().into_bytes()),
        };
        let db = TestDb::sqlite().await;
        let vhost = TestVhost::create("status-tls");
        let keys = Keys::new();
        let r = Running::start_secured(
            &db.url,
            &vhost,
            keys.auth.clone(),
            Some(tls),
            Some(keys.admin),
        )
        .await;

        call(&r, &ca, Some(&client), keys.admin)
            .await
            .expect("a client of the CA is served");
        let err = call(&r, &ca, Some(&client), "srk_wrong")
            .await
            .expect_err("TLS does not replace the key");
        assert!(err.contains("invalid API key"), "{err}");
        for (who, identity) in [
            ("a self-signed client certificate", Some(&stranger)),
            ("a certificate of another CA", Some(&from_other_ca)),
            ("no client certificate", None),
        ] {
            let err = call(&r, &ca, identity, keys.admin).await;
            let err = err.expect_err(who);
            // Refused by the handshake, never by the API: with TLS 1.3 the client learns it on
            // its first call, as a broken or closed connection.
            let transport = ["Unknown", "Cancelled", "Unavailable"]
                .iter()
                .any(|code| err.starts_with(&format!("call: {code}:")));
            assert!(err.starts_with("connect") || transport, "{who}: {err}");
        }
        // Plain gRPC on the TLS listener is not served either.
        let plain = tokio::time::timeout(Duration::from_secs(10), async {
            let channel = Channel::from_shared(r.grpc.clone())
                .map_err(|e| e.to_string())?
                .connect()
                .await
                .map_err(|e| e.to_string())?;
            scimrelay_proto::v1::status_service_client::StatusServiceClient::with_interceptor(
                channel,
                common::Bearer::new(Some(keys.admin)),
            )
            .list_targets(ListTargetsRequest {})
            .await
            .map_err(|e| e.to_string())
        })
        .await;
        assert!(!matches!(plain, Ok(Ok(_))), "plain gRPC must not be served");
        r.stop().await;
    }
}

/// One batch holding an outcome PostgreSQL refuses (NUL bytes in its text: `TEXT` rejects
/// them) and a message that is no outcome at all: the good outcomes commit, the bad ones are
/// parked in the dead-letter queue with their reason, the refused outcome still gets a
/// (sanitized) outcome, and outcomes published afterwards keep committing.
async fn a_record_the_store_refuses_is_parked_and_the_rest_commit(db: TestDb) {
    let postgres = db.url.starts_with("postgres");
    let vhost = TestVhost::create("status-park");
    let broker = Broker::connect(&vhost).await;
    let mut bad = outcome("bad\0id", "t1", "s\0x", OutcomeResult::Failed, 1_000);
    bad.detail = "the server answered an id holding \0".into();
    broker
        .outcomes(&[
            outcome("ok1", "t1", "a", OutcomeResult::Succeeded, 1_000),
            bad,
            outcome("ok2", "t1", "b", OutcomeResult::Succeeded, 1_000),
        ])
        .await;
    let props =
        scimrelay_core::amqp::properties(scimrelay_proto::TYPE_OUTCOME, FieldTable::default());
    broker
        .publisher
        .publish(
            scimrelay_core::amqp::OUTCOMES_EXCHANGE,
            "scim.t1.succeeded",
            b"\xff\xffnot protobuf",
            props,
        )
        .await
        .expect("publish");
    let r = Running::start(&db.url, &vhost).await;
    wait_stored(&r, 3).await;
    broker
        .outcomes(&[outcome("ok3", "t1", "c", OutcomeResult::Succeeded, 2_000)])
        .await;
    wait_stored(&r, 4).await;
    let mut client = r.client().await;
    if postgres {
        let ev = client
            .get_event(GetEventRequest {
                event_id: "bad\u{fffd}id".into(),
                ..Default::default()
            })
            .await
            .expect("the sanitized outcome")
            .into_inner();
        assert_eq!(ev.outcomes.len(), 1, "{ev:?}");
        let o = &ev.outcomes[0];
        assert_eq!(o.result, OutcomeResult::Failed as i32);
        assert!(o.detail.contains("control characters replaced"), "{o:?}");
        assert!(!o.detail.contains('\0'), "{o:?}");
    }
    let parked = eventually("parked messages", WAIT, || {
        let mut client = client.clone();
        async move {
            let list = client
                .list_dead_letters(ListDeadLettersRequest {
                    target: String::new(),
                    limit: 10,
                })
                .await
                .ok()?
                .into_inner();
            (list.total == if postgres { 2 } else { 1 }).then_some(list)
        }
    })
    .await;
    assert!(
        parked.messages.iter().all(|m| !m.replayable),
        "status messages are not replayed to a target: {parked:?}"
    );
    let text = reqwest::get(format!("{}/metrics", r.http))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    assert!(
        text.contains("reason=\"undecodable\"} 1"),
        "{}",
        text.lines()
            .filter(|l| l.contains("parked"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    if postgres {
        assert!(text.contains("reason=\"refused\"} 1"), "{text}");
    }
    r.stop().await;
}
