//! Unit tests of the store on in-memory SQLite; the same behaviour on PostgreSQL is covered by
//! the crate's integration tests (`tests/store.rs`), which run every case on both backends.

use super::*;

fn outcome(
    event: &str,
    target: &str,
    version: u64,
    result: OutcomeResult,
    finished: i64,
) -> Outcome {
    Outcome {
        event_id: event.into(),
        target: target.into(),
        subject_id: "u1".into(),
        version,
        result: result as i32,
        attempt: 1,
        finished_at_ms: finished,
        ..Default::default()
    }
}

#[tokio::test]
async fn records_dedupes_and_pages() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    let a = outcome("e1", "t1", 1, OutcomeResult::Succeeded, 10);
    store.record(&[a.clone(), a.clone()]).await.expect("record");
    store
        .record(&[a.clone(), outcome("e2", "t2", 2, OutcomeResult::Failed, 11)])
        .await
        .expect("again");
    assert_eq!(
        store.event("e1").await.expect("e1").0.len(),
        1,
        "duplicates are written once"
    );
    for i in 0..5 {
        store
            .record(&[outcome(
                &format!("x{i}"),
                "t1",
                3 + i,
                OutcomeResult::Succeeded,
                20 + i as i64,
            )])
            .await
            .expect("x");
    }
    let t1 = OutcomeFilter {
        target: "t1".into(),
        ..Default::default()
    };
    let first = store.list(&t1, 0, 4, false).await.expect("page 1");
    assert_eq!(first.len(), 4);
    let second = store
        .list(&t1, first[3].seq, 4, false)
        .await
        .expect("page 2");
    assert_eq!(second.len(), 2);
    assert!(
        second
            .iter()
            .all(|r| r.outcome.as_ref().is_some_and(|o| o.target == "t1"))
    );
    assert_eq!(
        store
            .list(&OutcomeFilter::default(), 0, 100, false)
            .await
            .expect("all")
            .len(),
        7
    );
}

#[tokio::test]
async fn a_second_terminal_outcome_is_a_duplicate() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    let first = outcome("e1", "t1", 1, OutcomeResult::Succeeded, 10);
    let redelivered = outcome("e1", "t1", 1, OutcomeResult::Superseded, 20);
    let w = store.record(&[first]).await.expect("first");
    assert_eq!((w.inserted, w.duplicates), (1, 0));
    let w = store.record(&[redelivered]).await.expect("second");
    assert_eq!((w.inserted, w.duplicates), (1, 1));
    let (history, _) = store.event("e1").await.expect("event");
    assert_eq!(history.len(), 2, "both stay in the history");
    assert!(history[0].terminal && !history[0].duplicate);
    assert!(!history[1].terminal && history[1].duplicate);
    let counted = store
        .target_summary("t1")
        .await
        .expect("summary")
        .expect("known")
        .counts;
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!(
        (counted[0].result, counted[0].count),
        (OutcomeResult::Succeeded as i32, 1)
    );
    assert_eq!(
        store
            .list(&OutcomeFilter::default(), 0, 10, false)
            .await
            .expect("list")
            .len(),
        1,
        "duplicates hidden"
    );
    let all = OutcomeFilter {
        include_duplicates: true,
        ..Default::default()
    };
    assert_eq!(store.list(&all, 0, 10, false).await.expect("list").len(), 2);
}

#[tokio::test]
async fn reopen_lets_a_replayed_copy_count() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    store
        .record(&[outcome("e1", "t1", 1, OutcomeResult::DeadLettered, 10)])
        .await
        .expect("dead");
    store
        .write(&[Record::Reopen {
            event_id: "e1".into(),
            target: "t1".into(),
        }])
        .await
        .expect("reopen");
    store
        .record(&[outcome("e1", "t1", 1, OutcomeResult::Succeeded, 20)])
        .await
        .expect("replayed");
    let (history, _) = store.event("e1").await.expect("event");
    assert_eq!(history.iter().filter(|r| r.terminal).count(), 1);
    assert!(history[1].terminal && !history[1].duplicate, "{history:?}");
}

#[tokio::test]
async fn prune_deletes_old_history_only() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    store
        .record(&[outcome("old", "t1", 1, OutcomeResult::Succeeded, 10)])
        .await
        .expect("old");
    let cutoff = now_ms() + 1;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store
        .record(&[outcome("new", "t1", 2, OutcomeResult::Succeeded, 20)])
        .await
        .expect("new");
    assert_eq!(store.prune(cutoff).await.expect("prune"), 1);
    assert!(store.event("old").await.expect("old").0.is_empty());
    assert_eq!(store.event("new").await.expect("new").0.len(), 1);
    assert_eq!(
        store.subject("u1", "").await.expect("subject")[0].applied_version,
        2,
        "the ledger is kept"
    );
}

#[tokio::test]
async fn migrations_are_idempotent_on_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("status.db");
    let url = path.to_string_lossy().to_string();
    Store::open(&url).await.expect("first");
    let s = Store::open(&url)
        .await
        .expect("second open reuses the schema");
    assert!(s.ping().await);
}

#[tokio::test]
async fn unsupported_urls_are_named() {
    let err = Store::open("mysql://localhost/x")
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("SCIMRELAY_STATUS_DB"), "{err}");
}
