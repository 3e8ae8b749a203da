//! Every status RPC against SQLite AND PostgreSQL (each test body runs on both, see
//! `on_both!`), with the service in-process over a private RabbitMQ vhost and outcomes
//! published to the broker as connectors do; plus a restart mid-run that must lose nothing.

mod common;

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::FieldTable;
use prost::Message;

use common::{Broker, Running, TestDb, eventually, outcome};
use scimrelay_proto::v1::{
    Delivery, EventKind, GetEventRequest, GetLedgerRequest, GetSubjectRequest, GetTargetRequest,
    HeldEvent, HeldSelection, IdentityEvent, LedgerKey, ListDeadLettersRequest, ListEventsRequest,
    ListHeldRequest, ListOutcomesRequest, ListTargetsRequest, OutcomeFilter, OutcomeResult,
    ReplayDeadLettersRequest, TargetReport, UserState, WatchOutcomesRequest,
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
    }
}

fn routing_key(target: &str, subject: &str) -> String {
    scimrelay_core::amqp::event_routing_key(
        "scim",
        target,
        scimrelay_core::amqp::shard_of(subject, 2),
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
    subjects_and_ledger,
    watch_resumes_from_a_cursor_without_gaps_or_duplicates,
    targets_report_counts_latency_quarantine_and_queue_depth,
    dead_letters_are_listed_and_replayed,
    held_events_are_listed_released_and_dropped,
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
        })
        .await
        .expect_err("empty id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("event_id"), "{}", err.message());
    let none = client
        .get_event(GetEventRequest {
            event_id: "nope".into(),
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

async fn subjects_and_ledger(db: TestDb) {
    let vhost = TestVhost::create("status-subject");
    let broker = Broker::connect(&vhost).await;
    let r = Running::start(&db.url, &vhost).await;
    let mut v2 = outcome("e2", "t1", "u1", OutcomeResult::Succeeded, 2_000);
    v2.version = 2;
    v2.remote_id = "r-u1-v2".into();
    v2.operation = scimrelay_proto::v1::Operation::Deactivated as i32;
    let mut failed = outcome("e3", "t2", "u1", OutcomeResult::Failed, 3_000);
    failed.detail = "403 forbidden".into();
    failed.remote_id = String::new();
    // v2 arrives before v1: the ledger never moves backwards.
    broker
        .outcomes(&[
            v2,
            outcome("e1", "t1", "u1", OutcomeResult::Succeeded, 1_000),
            failed,
        ])
        .await;
    wait_stored(&r, 3).await;
    let mut client = r.client().await;
    let s = client
        .get_subject(GetSubjectRequest {
            subject_id: "u1".into(),
            target: String::new(),
        })
        .await
        .expect("GetSubject")
        .into_inner();
    assert_eq!(s.targets.len(), 2);
    let t1 = &s.targets[0];
    assert_eq!(
        (
            t1.target.as_str(),
            t1.remote_id.as_str(),
            t1.applied_version,
            t1.state.as_str()
        ),
        ("t1", "r-u1-v2", 2, "deactivated")
    );
    assert!(t1.last_error.is_empty());
    let t2 = &s.targets[1];
    assert_eq!((t2.applied_version, t2.state.as_str()), (0, "error"));
    assert_eq!(t2.last_error, "failed: 403 forbidden");
    let only = client
        .get_subject(GetSubjectRequest {
            subject_id: "u1".into(),
            target: "t2".into(),
        })
        .await
        .expect("t2")
        .into_inner();
    assert_eq!(only.targets.len(), 1);
    let err = client
        .get_subject(GetSubjectRequest {
            subject_id: "ghost".into(),
            target: String::new(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(err.code(), tonic::Code::NotFound);

    let keys = vec![
        LedgerKey {
            target: "t1".into(),
            subject_id: "u1".into(),
        },
        LedgerKey {
            target: "t1".into(),
            subject_id: "ghost".into(),
        },
        LedgerKey {
            target: "t2".into(),
            subject_id: "u1".into(),
        },
    ];
    let l = client
        .get_ledger(GetLedgerRequest { keys })
        .await
        .expect("GetLedger")
        .into_inner();
    assert_eq!(l.entries.len(), 3);
    assert!(
        l.entries[0].found
            && l.entries[0].remote_id == "r-u1-v2"
            && l.entries[0].applied_version == 2
    );
    assert!(
        !l.entries[1].found && l.entries[1].subject_id == "ghost",
        "answers keep the request order"
    );
    assert!(l.entries[2].found && l.entries[2].applied_version == 0);
    let too_many = (0..1001)
        .map(|i| LedgerKey {
            target: "t1".into(),
            subject_id: format!("u{i}"),
        })
        .collect();
    let err = client
        .get_ledger(GetLedgerRequest { keys: too_many })
        .await
        .expect_err("too many");
    assert!(err.message().contains("keys"), "{err}");
    let err = client
        .get_ledger(GetLedgerRequest {
            keys: vec![LedgerKey::default()],
        })
        .await
        .expect_err("empty key");
    assert!(err.message().contains("keys[0]"), "{err}");
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
        let d = delivery(e, "t1", s, EventKind::UserUpserted);
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
