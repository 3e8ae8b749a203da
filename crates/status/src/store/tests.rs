//! Unit tests of the store. Most run on in-memory SQLite (the crate's integration tests,
//! `tests/rpc.rs`, run every RPC on both backends); the mass-deprovisioning guard's run on a
//! fresh database of each backend (see `on_both!` below), since its atomicity is per backend.

use super::*;
use prost::Message;
use scimrelay_proto::v1::{
    AdmitDeprovisionResponse, Converged, DeprovisionGuard, EventKind, IdentityEvent, Operation,
    Outcome, OutcomeFilter, OutcomeResult, Presence, RecordedOutcome, SubjectKey, SubjectKind,
    TakeEvent, UserState,
};

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
            tenant: String::new(),
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

/// Event ids are unique per tenant: globex's held event and acme's held event with the same id
/// are two held events, and releasing one by tenant leaves the other held.
#[tokio::test]
async fn held_events_of_two_tenants_may_share_an_event_id() {
    let store = Store::open("sqlite::memory:").await.expect("open");
    let held = |tenant: &str| HeldEvent {
        delivery: Some(scimrelay_proto::v1::Delivery {
            event: Some(IdentityEvent {
                tenant: tenant.into(),
                kind: EventKind::UserDeleted as i32,
                ..user_event("same-id", 2, "u-7")
            }),
            target: "t1".into(),
            ..Default::default()
        }),
        reason: format!("held for {tenant}"),
        ..Default::default()
    };
    store
        .write(&[
            Record::Held(Box::new(held("globex"))),
            Record::Held(Box::new(held("acme"))),
        ])
        .await
        .expect("held");
    let all = store.held("", 0, 10).await.expect("held");
    assert_eq!(all.len(), 2, "acme's did not replace globex's: {all:?}");
    let acme = store
        .held_selected("acme", "t1", &["same-id".to_owned()])
        .await
        .expect("selected");
    assert_eq!(acme.len(), 1);
    assert_eq!(acme[0].reason, "held for acme");
    store
        .write(&[Record::Unhold {
            tenant: "acme".into(),
            event_id: "same-id".into(),
            target: "t1".into(),
        }])
        .await
        .expect("unhold");
    let left = store.held("", 0, 10).await.expect("held");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason, "held for globex");
    // Two tenants' terminal outcomes with one event id: both are terminal.
    let of = |tenant: &str| Outcome {
        tenant: tenant.into(),
        ..outcome("same-id", "t1", 1, OutcomeResult::Succeeded, 10)
    };
    let w = store
        .record(&[of("acme"), of("globex")])
        .await
        .expect("record");
    assert_eq!((w.inserted, w.duplicates), (2, 0), "{w:?}");
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
    store
        .record_converged(&[applied("t1", "u1", 2, "r-u1", Presence::PresentActive)])
        .await
        .expect("state of record");
    assert_eq!(store.prune(cutoff).await.expect("prune"), 1);
    assert!(store.event("old").await.expect("old").0.is_empty());
    assert_eq!(store.event("new").await.expect("new").0.len(), 1);
    assert_eq!(
        store
            .subject("u1", "", "", SubjectKind::Unspecified, None)
            .await
            .expect("subject")[0]
            .applied_version,
        2,
        "the state of record is kept"
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

/// A store on a fresh database that is gone after the test: a SQLite file in a temp dir, or a
/// new PostgreSQL database on the server of `SCIMRELAY_TEST_PG_URL` (default
/// `postgres://postgres@127.0.0.1:5432/postgres`, as in the integration tests), dropped on
/// drop. `url` lets a test open a second store on it: another replica.
pub(super) struct TestStore {
    pub(super) url: String,
    pub(super) store: Store,
    _pg: Option<scimrelay_tests::TestPg>,
    _dir: Option<tempfile::TempDir>,
}

impl TestStore {
    /// The same database on a new connection pool (as a new process would open it).
    pub(super) async fn reconnected(self) -> Self {
        if let Pool::Sqlite(pool) = &self.store.pool {
            pool.close().await;
        }
        TestStore {
            store: Store::connect(&self.url).await.expect("connect"),
            ..self
        }
    }

    /// A store on a fresh database of `backend`, connected but not migrated (the old runner's
    /// tests make its schema themselves).
    pub(super) async fn unmigrated(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite_at(0).await,
            Backend::Postgres => Self::postgres_at(0).await,
        }
    }

    pub(super) async fn sqlite() -> Self {
        Self::sqlite_at(i64::MAX).await
    }

    /// A store migrated up to `version` only (an older release's schema).
    async fn sqlite_at(version: i64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("status.db").display());
        let store = migrated(&url, version).await;
        TestStore {
            url,
            store,
            _pg: None,
            _dir: Some(dir),
        }
    }

    pub(super) async fn postgres() -> Self {
        Self::postgres_at(i64::MAX).await
    }

    /// Panics with instructions when PostgreSQL is not running: the test fails, never skips.
    async fn postgres_at(version: i64) -> Self {
        let pg = scimrelay_tests::TestPg::create().await;
        let url = pg.url.clone();
        let store = migrated(&url, version).await;
        TestStore {
            url,
            store,
            _pg: Some(pg),
            _dir: None,
        }
    }
}

/// The store at `url`, migrated up to `version` (all of them for `i64::MAX`, as `open` does;
/// none for 0).
async fn migrated(url: &str, version: i64) -> Store {
    if version == i64::MAX {
        return Store::open(url).await.expect("open");
    }
    let store = Store::connect(url).await.expect("connect");
    if version > 0 {
        store.migrate_up_to(version).await.expect("migrate");
    }
    store
}

/// Runs `async fn name(db: &TestStore)` on SQLite and on PostgreSQL, as `name::sqlite` and
/// `name::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(&super::TestStore::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(&super::TestStore::postgres().await).await
            }
        }
    )* };
}

on_both!(
    the_guard_admits_a_share_of_the_users_per_window,
    small_targets_are_not_guarded,
    users_deleted_before_the_window_do_not_count,
    replicas_never_both_admit_the_last_slot,
    tenants_limit_listings_and_subjects,
    desired_versions_only_grow_and_applied_never_moves_back,
    a_failure_invalidates_the_fingerprint_and_the_members,
    tenants_and_kinds_are_separate_subjects,
    a_claim_left_by_an_ended_session_fences_the_subject,
    a_write_without_an_answer_fences_the_subject_even_for_its_own_session,
    pending_references_are_swept_once_per_lease_and_dropped_for_absent_users,
);

const WINDOW_MS: u64 = 600_000;

/// max_share 20 %, a 600 s window, guarded from 10 users.
fn guard() -> DeprovisionGuard {
    DeprovisionGuard {
        max_share: 0.2,
        window_ms: WINDOW_MS,
        min_users: 10,
    }
}

/// A succeeded outcome of `op` on user `subject` at `target`, as a connector reports it.
fn user_outcome(target: &str, subject: &str, op: Operation) -> Outcome {
    Outcome {
        event_id: format!("{target}-{subject}-{}", op.name()),
        target: target.into(),
        provider: "scim".into(),
        tenant: "acme".into(),
        subject_kind: SubjectKind::User as i32,
        subject_id: subject.into(),
        version: 1,
        operation: op as i32,
        result: OutcomeResult::Succeeded as i32,
        attempt: 1,
        remote_id: format!("r-{subject}"),
        finished_at_ms: 1_000,
        ..Default::default()
    }
}

/// What a connector records after converging user `subject` of acme at `target`.
fn applied(target: &str, subject: &str, version: u64, remote: &str, p: Presence) -> Converged {
    Converged {
        key: Some(SubjectKey::new(target, "acme", SubjectKind::User, subject)),
        succeeded: true,
        version,
        event_id: format!("{subject}-v{version}"),
        remote_id: remote.into(),
        presence: p as i32,
        fingerprint: version,
        operation: "updated".into(),
        ..Default::default()
    }
}

/// Users `{prefix}0` … present and active at `target`, as connectors record them.
async fn create_users(store: &Store, target: &str, prefix: &str, n: usize) {
    let items: Vec<Converged> = (0..n)
        .map(|i| {
            let id = format!("{prefix}{i}");
            applied(target, &id, 1, &format!("r-{id}"), Presence::PresentActive)
        })
        .collect();
    store.record_converged(&items).await.expect("create users");
}

async fn admit(store: &Store, target: &str, subject: &str, now: i64) -> AdmitDeprovisionResponse {
    store
        .admit_deprovision(
            target,
            "acme",
            subject,
            &format!("ev-{subject}"),
            &guard(),
            now,
        )
        .await
        .expect("admit")
}

async fn the_guard_admits_a_share_of_the_users_per_window(db: &TestStore) {
    let store = &db.store;
    create_users(store, "t1", "u", 20).await;
    let now = now_ms();
    for i in 0..4 {
        let a = admit(store, "t1", &format!("u{i}"), now).await;
        assert!(a.admitted, "u{i}: {a:?}");
        assert_eq!((a.users, a.recent), (20, i + 1), "u{i}");
        assert!(a.reason.is_empty());
    }
    let refused = admit(store, "t1", "u4", now + 1_000).await;
    assert!(!refused.admitted);
    assert_eq!((refused.users, refused.recent), (20, 4));
    assert_eq!(
        refused.reason,
        "4 of 20 users deprovisioned within 600 s (limit 20%)"
    );
    let again = admit(store, "t1", "u1", now + 2_000).await;
    assert!(again.admitted, "a retry is not a second deprovisioning");
    assert_eq!(again.recent, 4);
    assert!(
        !admit(store, "t1", "u4", now + 3_000).await.admitted,
        "re-admitting u1 freed no slot"
    );
    assert!(
        admit(store, "t2", "u4", now + 3_000).await.admitted,
        "another target has its own window (and no users: below min_users)"
    );
    assert!(
        !admit(store, "t1", "u4", now + WINDOW_MS as i64)
            .await
            .admitted,
        "admissions at exactly now - window are still in the window"
    );
    let later = admit(store, "t1", "u4", now + WINDOW_MS as i64 + 1).await;
    assert!(later.admitted, "the window slid past: {later:?}");
    assert_eq!(later.recent, 1);
    let u0 = admit(store, "t1", "u0", now + WINDOW_MS as i64 + 2).await;
    assert_eq!(
        (u0.admitted, u0.recent),
        (true, 2),
        "an admission that left the window counts anew"
    );
}

async fn small_targets_are_not_guarded(db: &TestStore) {
    let store = &db.store;
    create_users(store, "small", "u", 9).await;
    let now = now_ms();
    for i in 0..9 {
        let a = admit(store, "small", &format!("u{i}"), now).await;
        assert!(a.admitted, "u{i}: {a:?}");
        assert_eq!((a.users, a.recent), (9, i + 1));
    }
}

async fn users_deleted_before_the_window_do_not_count(db: &TestStore) {
    let store = &db.store;
    create_users(store, "t3", "u", 10).await;
    let group = Converged {
        key: Some(SubjectKey::new("t3", "acme", SubjectKind::Group, "g1")),
        ..applied("t3", "g1", 1, "r-g1", Presence::PresentActive)
    };
    store
        .record_converged(&[
            applied("t3", "gone-long-ago", 1, "", Presence::Absent),
            applied("t3", "gone-just-now", 1, "", Presence::Absent),
            applied("t3", "off", 1, "r-off", Presence::PresentInactive),
            group,
        ])
        .await
        .expect("record");
    // Taken but never applied: not at the target as far as anyone knows.
    store
        .take_events(&[TakeEvent {
            key: Some(SubjectKey::new("t3", "acme", SubjectKind::User, "pending")),
            event: Some(user_event("p1", 1, "pending")),
            invalidate: false,
            read_only: false,
            ..Default::default()
        }])
        .await
        .expect("take");
    let now = now_ms();
    // The write path stamps rows with the wall clock: move one departure out of the window.
    let backdated = on_pool!(store, |pool| sqlx::query(
        "UPDATE subjects SET applied_at_ms = $1 WHERE subject_id = 'gone-long-ago'"
    )
    .bind(now - 2 * WINDOW_MS as i64)
    .execute(pool)
    .await
    .map(|done| done.rows_affected())
    .expect("backdate"));
    assert_eq!(backdated, 1);
    let a = admit(store, "t3", "u0", now).await;
    assert_eq!(
        a.users, 12,
        "10 users, one inactive, one gone within the window; not the old departure, not the \
         group, not the user never applied"
    );
    assert!(a.admitted);
    assert!(admit(store, "t3", "u1", now).await.admitted);
    let refused = admit(store, "t3", "u2", now).await;
    assert_eq!(
        refused.reason,
        "2 of 12 users deprovisioned within 600 s (limit 20%)"
    );
}

/// A user event of acme for `subject` at `version`.
fn user_event(id: &str, version: u64, subject: &str) -> IdentityEvent {
    IdentityEvent {
        id: id.into(),
        tenant: "acme".into(),
        version,
        kind: EventKind::UserUpserted as i32,
        user: Some(UserState {
            id: subject.into(),
            user_name: subject.into(),
            active: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn taking(target: &str, event: &IdentityEvent, invalidate: bool) -> TakeEvent {
    TakeEvent {
        key: Some(event.subject_key(target)),
        event: Some(event.clone()),
        invalidate,
        read_only: false,
        ..Default::default()
    }
}

async fn desired_versions_only_grow_and_applied_never_moves_back(db: &TestStore) {
    let store = &db.store;
    let v5 = user_event("e5", 5, "u1");
    let v3 = user_event("e3", 3, "u1");
    let r = store
        .take_events(&[taking("t1", &v5, false), taking("t1", &v3, false)])
        .await
        .expect("take");
    assert_eq!((r[0].desired_version, r[1].desired_version), (5, 5));
    assert!(r[0].desired.is_none() && r[1].desired.is_some());
    let read_only = TakeEvent {
        read_only: true,
        ..taking("t1", &user_event("e9", 9, "u1"), false)
    };
    let r = store.take_events(&[read_only]).await.expect("plan");
    assert_eq!(r[0].desired_version, 5, "a plan records nothing");
    let recorded = store
        .record_converged(&[
            applied("t1", "u1", 5, "r5", Presence::PresentActive),
            applied("t1", "u1", 3, "r3", Presence::PresentInactive),
        ])
        .await
        .expect("record");
    assert_eq!(recorded, [true, false]);
    let again = store
        .record_converged(&[applied("t1", "u1", 5, "r5", Presence::PresentActive)])
        .await
        .expect("same version again");
    assert_eq!(
        again,
        [true],
        "re-recording the applied version is harmless"
    );
    let got = store
        .records(&[v5.subject_key("t1")])
        .await
        .expect("records");
    assert_eq!(
        (
            got[0].applied_version,
            got[0].remote_id.as_str(),
            got[0].presence
        ),
        (5, "r5", Presence::PresentActive as i32)
    );
}

async fn a_failure_invalidates_the_fingerprint_and_the_members(db: &TestStore) {
    let store = &db.store;
    let key = SubjectKey::new("t1", "acme", SubjectKind::Group, "g1");
    let ok = Converged {
        key: Some(key.clone()),
        members_known: true,
        members: vec!["a".into(), "b".into()],
        ..applied("t1", "g1", 2, "rg", Presence::PresentActive)
    };
    store.record_converged(&[ok]).await.expect("applied");
    let fail = |version| Converged {
        key: Some(key.clone()),
        succeeded: false,
        version,
        error: "retry: HTTP 503".into(),
        ..Default::default()
    };
    // A failure of a version already applied (a late one) invalidates nothing.
    store
        .record_converged(&[fail(2)])
        .await
        .expect("late failure");
    let r = store
        .records(std::slice::from_ref(&key))
        .await
        .expect("records");
    assert_eq!((r[0].fingerprint, r[0].members.len()), (2, 2));
    assert_eq!(r[0].last_error, "retry: HTTP 503");
    store.record_converged(&[fail(3)]).await.expect("failure");
    let r = store
        .records(std::slice::from_ref(&key))
        .await
        .expect("records");
    assert_eq!(r[0].fingerprint, 0, "the no-op check cannot trust it");
    assert!(!r[0].members_known, "nor the applied members");
    assert_eq!(r[0].applied_version, 2, "what was applied stays");
    // A retry copy's take invalidates too (the failure may not have been recorded).
    let ok = Converged {
        key: Some(key.clone()),
        members_known: true,
        ..applied("t1", "g1", 3, "rg", Presence::PresentActive)
    };
    store.record_converged(&[ok]).await.expect("v3 applied");
    let v4 = IdentityEvent {
        kind: EventKind::GroupUpserted as i32,
        user: None,
        group: Some(scimrelay_proto::v1::GroupState {
            id: "g1".into(),
            display_name: "G".into(),
            ..Default::default()
        }),
        ..user_event("g4", 4, "g1")
    };
    let r = store
        .take_events(&[taking("t1", &v4, true)])
        .await
        .expect("retry copy");
    assert_eq!((r[0].fingerprint, r[0].members_known), (0, false));
}

async fn tenants_and_kinds_are_separate_subjects(db: &TestStore) {
    let store = &db.store;
    let acme = user_event("x", 7, "u-7");
    let globex = IdentityEvent {
        tenant: "globex".into(),
        ..acme.clone()
    };
    let group = IdentityEvent {
        kind: EventKind::GroupUpserted as i32,
        user: None,
        group: Some(scimrelay_proto::v1::GroupState {
            id: "u-7".into(),
            display_name: "G".into(),
            ..Default::default()
        }),
        ..acme.clone()
    };
    // The same event id and version in three subjects: three records, none superseding another.
    let r = store
        .take_events(&[
            taking("t1", &acme, false),
            taking("t1", &globex, false),
            taking("t1", &group, false),
        ])
        .await
        .expect("take");
    assert!(
        r.iter()
            .all(|r| r.desired_version == 7 && r.desired.is_none())
    );
    store
        .record_converged(&[applied("t1", "u-7", 9, "acme-r", Presence::PresentInactive)])
        .await
        .expect("acme applied");
    let got = store
        .records(&[
            acme.subject_key("t1"),
            globex.subject_key("t1"),
            group.subject_key("t1"),
        ])
        .await
        .expect("records");
    assert_eq!(got[0].applied_version, 9);
    assert_eq!((got[1].applied_version, got[2].applied_version), (0, 0));
    let all = store
        .subject("u-7", "", "", SubjectKind::Unspecified, None)
        .await
        .expect("subject");
    assert_eq!(all.len(), 3, "{all:?}");
    let globex_only = ["globex".to_owned()];
    let seen = store
        .subject("u-7", "", "", SubjectKind::Unspecified, Some(&globex_only))
        .await
        .expect("globex");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].state, "unknown");
}

async fn replicas_never_both_admit_the_last_slot(db: &TestStore) {
    create_users(&db.store, "t1", "u", 20).await;
    let other = Store::open(&db.url).await.expect("a second replica");
    let now = now_ms();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let store = if i % 2 == 0 {
                db.store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move { admit(&store, "t1", &format!("u{i}"), now).await })
        })
        .collect();
    let mut admitted = 0;
    for t in tasks {
        if t.await.expect("task").admitted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 4, "floor(20 % of 20 users)");
    assert_eq!(admit(&other, "t1", "u0", now).await.recent, 4);
}

/// A created user of `tenant` for (event, target, subject).
fn tenant_outcome(event: &str, target: &str, subject: &str, tenant: &str) -> Outcome {
    Outcome {
        event_id: event.into(),
        tenant: tenant.into(),
        ..user_outcome(target, subject, Operation::Created)
    }
}

fn events_of(page: &[RecordedOutcome]) -> Vec<&str> {
    page.iter()
        .filter_map(|r| r.outcome.as_ref().map(|o| o.event_id.as_str()))
        .collect()
}

async fn tenants_limit_listings_and_subjects(db: &TestStore) {
    let store = &db.store;
    let mut failed = tenant_outcome("b2", "t2", "u2", "beta");
    failed.result = OutcomeResult::Failed as i32;
    store
        .record(&[
            tenant_outcome("a1", "t1", "u1", "acme"),
            tenant_outcome("b1", "t1", "u2", "beta"),
            tenant_outcome("a2", "t2", "u1", "acme"),
            failed,
        ])
        .await
        .expect("record");
    let of = |tenant: &str| OutcomeFilter {
        tenant: tenant.into(),
        ..Default::default()
    };
    let acme = store.list(&of("acme"), 0, 100, false).await.expect("acme");
    assert_eq!(events_of(&acme), ["a1", "a2"]);
    let beta = store.list(&of("beta"), 0, 100, true).await.expect("beta");
    assert_eq!(events_of(&beta), ["b1", "b2"], "terminal listing too");
    let beta_t1 = OutcomeFilter {
        target: "t1".into(),
        ..of("beta")
    };
    assert_eq!(
        events_of(&store.list(&beta_t1, 0, 100, false).await.expect("beta t1")),
        ["b1"],
        "the tenant combines with the other filters"
    );
    let after = store.list(&of("acme"), acme[0].seq, 100, false).await;
    assert_eq!(events_of(&after.expect("page 2")), ["a2"], "cursor pages");
    assert_eq!(
        store.list(&of(""), 0, 100, false).await.expect("all").len(),
        4
    );
    assert!(
        store
            .list(&of("gamma"), 0, 100, false)
            .await
            .expect("none")
            .is_empty()
    );

    let of = |target: &str, tenant: &str, subject: &str| Converged {
        key: Some(SubjectKey::new(target, tenant, SubjectKind::User, subject)),
        ..applied(target, subject, 1, "r", Presence::PresentActive)
    };
    store
        .record_converged(&[
            of("t1", "acme", "u1"),
            of("t2", "acme", "u1"),
            of("t1", "beta", "u2"),
            of("t2", "beta", "u2"),
        ])
        .await
        .expect("state of record");
    let acme_only = ["acme".to_owned()];
    let any = SubjectKind::Unspecified;
    let u1 = store
        .subject("u1", "", "", any, Some(&acme_only))
        .await
        .expect("u1");
    assert_eq!(u1.len(), 2, "u1 of acme at both targets: {u1:?}");
    let u2 = store
        .subject("u2", "", "", any, Some(&acme_only))
        .await
        .expect("u2");
    assert!(u2.is_empty(), "u2 is beta's: {u2:?}");
    let u2 = store.subject("u2", "", "", any, None).await.expect("u2");
    assert_eq!(u2.len(), 2);
    let u2_beta = store
        .subject("u2", "t2", "", any, Some(&["beta".to_owned()]))
        .await
        .expect("u2 of beta");
    assert_eq!(u2_beta.len(), 1);
}

/// A database written by a release before migration 4 (no tenant columns): after the upgrade
/// its outcome rows have the tenant `''`, which only keys for all tenants read, and its ledger
/// rows get the tenant of their latest outcome (the protobuf body holds it).
async fn rows_from_before_the_tenant_column_are_for_all_tenants(db: &TestStore) {
    let old = Outcome {
        tenant: "acme".into(),
        ..user_outcome("t1", "u-old", Operation::Created)
    };
    on_pool!(db.store, |pool| {
        sqlx::query(
            "INSERT INTO outcomes (event_id, target, subject_id, result, attempt, finished_at_ms, recorded_at_ms, body) \
             VALUES ($1, 't1', 'u-old', $2, 1, 1000, 1000, $3)",
        )
        .bind(&old.event_id)
        .bind(OutcomeResult::Succeeded as i64)
        .bind(old.encode_to_vec())
        .execute(pool)
        .await
        .expect("old outcome");
        sqlx::query(
            "INSERT INTO subjects (target, subject_id, subject_kind, remote_id, applied_version, state, last_error, updated_at_ms) \
             VALUES ('t1', 'u-old', 1, 'r-u-old', 1, 'created', '', 1000)",
        )
        .execute(pool)
        .await
        .expect("old subject");
    });
    let store = Store::open(&db.url)
        .await
        .expect("upgrade to the latest schema");
    store
        .record(&[tenant_outcome("new", "t1", "u-new", "acme")])
        .await
        .expect("new");
    let acme = OutcomeFilter {
        tenant: "acme".into(),
        ..Default::default()
    };
    assert_eq!(
        events_of(&store.list(&acme, 0, 100, false).await.expect("acme")),
        ["new"],
        "the old outcome row's tenant is unknown to SQL"
    );
    assert_eq!(
        store
            .list(&OutcomeFilter::default(), 0, 100, false)
            .await
            .expect("all")
            .len(),
        2,
        "keys for all tenants see both"
    );
    let acme_only = ["acme".to_owned()];
    let placed = store
        .subject("u-old", "", "", SubjectKind::Unspecified, Some(&acme_only))
        .await
        .expect("old subject");
    assert_eq!(
        placed.len(),
        1,
        "its tenant came from its outcome: {placed:?}"
    );
    assert_eq!(
        (placed[0].applied_version, placed[0].state.as_str()),
        (1, "present-active")
    );
}

mod rows_from_before_the_tenant_column_are_for_all_tenants {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::rows_from_before_the_tenant_column_are_for_all_tenants(
            &super::TestStore::sqlite_at(3).await,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::rows_from_before_the_tenant_column_are_for_all_tenants(
            &super::TestStore::postgres_at(3).await,
        )
        .await
    }
}

/// A database made by the schema before the state of record (migration 4), with outcomes, a
/// duplicate, ledger rows in every old state, a held event and a guard admission, upgrades in
/// place: history, flags and sequence numbers are kept, the ledger becomes the state of record
/// (versions kept, states become presences), and old versions stay superseded.
async fn a_database_of_the_previous_schema_upgrades_in_place(db: &TestStore) {
    let held = HeldEvent {
        delivery: Some(scimrelay_proto::v1::Delivery {
            event: Some(IdentityEvent {
                kind: EventKind::UserDeleted as i32,
                ..user_event("h1", 3, "u-held")
            }),
            target: "t1".into(),
            ..Default::default()
        }),
        routing_key: "scim.t1.0".into(),
        reason: "held".into(),
        held_at_ms: 5,
        id: 0,
    };
    let rows = [
        // (subject, remote id, applied version, state)
        ("u-created", "r1", 4, "created"),
        ("u-off", "r2", 2, "deactivated"),
        ("u-gone", "", 3, "deleted"),
        ("u-noop-absent", "", 1, "noop"),
        ("u-failed", "", 0, "error"),
    ];
    on_pool!(db.store, |pool| {
        for (i, (subject, remote, version, state)) in rows.iter().enumerate() {
            let o = Outcome {
                version: *version as u64,
                ..user_outcome("t1", subject, Operation::Created)
            };
            for dup in 0..2 {
                let seq: i64 = sqlx::query_scalar(
                    "INSERT INTO outcomes (event_id, target, subject_id, result, attempt, finished_at_ms, recorded_at_ms, body, tenant, duplicate) \
                     VALUES ($1, 't1', $2, $3, 1, $4, 1000, $5, 'acme', $6) RETURNING seq",
                )
                .bind(&o.event_id)
                .bind(subject)
                .bind(OutcomeResult::Succeeded as i64)
                .bind(1_000 + i as i64 * 10 + dup)
                .bind(o.encode_to_vec())
                .bind(dup)
                .fetch_one(pool)
                .await
                .expect("old outcome");
                if dup == 0 {
                    sqlx::query(
                        "INSERT INTO terminals (event_id, target, seq) VALUES ($1, 't1', $2)",
                    )
                    .bind(&o.event_id)
                    .bind(seq)
                    .execute(pool)
                    .await
                    .expect("terminal");
                }
            }
            sqlx::query(
                "INSERT INTO subjects (target, subject_id, subject_kind, remote_id, applied_version, state, last_error, updated_at_ms, tenant) \
                 VALUES ('t1', $1, 1, $2, $3, $4, '', 1000, 'acme')",
            )
            .bind(subject)
            .bind(remote)
            .bind(*version)
            .bind(state)
            .execute(pool)
            .await
            .expect("old subject");
        }
        let mut stored = held.clone();
        stored.id = 0;
        sqlx::query(
            "INSERT INTO held (event_id, target, held_at_ms, body) VALUES ('h1', 't1', 5, $1)",
        )
        .bind(stored.encode_to_vec())
        .execute(pool)
        .await
        .expect("old held");
        sqlx::query("INSERT INTO deprovisions (target, subject_id, event_id, admitted_at_ms) VALUES ('t1', 'u-off', 'x', $1)")
            .bind(now_ms())
            .execute(pool)
            .await
            .expect("old admission");
    });
    let before = db.store.max_seq().await.expect("max seq");
    let store = Store::open(&db.url).await.expect("upgrade in place");
    // History: every outcome kept, the duplicates still duplicates, the sequence continuing.
    let all = store
        .list(
            &OutcomeFilter {
                include_duplicates: true,
                ..Default::default()
            },
            0,
            100,
            false,
        )
        .await
        .expect("history");
    assert_eq!(all.len(), 10);
    assert_eq!(all.iter().filter(|r| r.duplicate).count(), 5);
    assert_eq!(all.iter().filter(|r| r.terminal).count(), 5);
    store
        .record(&[tenant_outcome("after", "t1", "u-new", "acme")])
        .await
        .expect("a new outcome");
    assert!(
        store.max_seq().await.expect("max") > before,
        "seq continues"
    );
    let dup = Outcome {
        version: 4,
        finished_at_ms: 9_999,
        result: OutcomeResult::Superseded as i32,
        ..user_outcome("t1", "u-created", Operation::Created)
    };
    let w = store.record(&[dup]).await.expect("redelivered");
    assert_eq!(
        w.duplicates, 1,
        "the old terminal outcome still counts as the first"
    );
    // The ledger is the state of record: versions and remote ids kept, states as presences.
    for (subject, state, version) in [
        ("u-created", "present-active", 4),
        ("u-off", "present-inactive", 2),
        ("u-gone", "absent", 3),
        ("u-noop-absent", "absent", 1),
        ("u-failed", "unknown", 0),
    ] {
        let s = store
            .subject(subject, "t1", "acme", SubjectKind::User, None)
            .await
            .expect("subject")[0]
            .clone();
        assert_eq!(
            (s.state.as_str(), s.applied_version, s.desired_version),
            (state, version, version),
            "{subject}"
        );
    }
    let stale = user_event("stale", 3, "u-created");
    let r = store
        .take_events(&[taking("t1", &stale, false)])
        .await
        .expect("take");
    assert_eq!(
        (r[0].desired_version, r[0].applied_version),
        (4, 4),
        "a version older than the one applied before the upgrade stays stale"
    );
    // The held event kept its place, with its tenant; the guard's window is still counted.
    let selected = store
        .held_selected("acme", "t1", &["h1".to_owned()])
        .await
        .expect("held");
    assert_eq!(selected.len(), 1, "the held event found by its tenant");
    let g = store
        .admit_deprovision("t1", "acme", "u-created", "d", &guard(), now_ms())
        .await
        .expect("guard");
    assert_eq!(g.recent, 2, "the old admission still counts: {g:?}");
}

mod a_database_of_the_previous_schema_upgrades_in_place {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_database_of_the_previous_schema_upgrades_in_place(
            &super::TestStore::sqlite_at(4).await,
        )
        .await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_database_of_the_previous_schema_upgrades_in_place(
            &super::TestStore::postgres_at(4).await,
        )
        .await
    }
    // The same database made by the runner before sqlx's migrator (as that release left it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_of_the_old_runner() {
        let db = super::migrate::tests::old_database(super::Backend::Sqlite, 4).await;
        super::a_database_of_the_previous_schema_upgrades_in_place(&db).await
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_of_the_old_runner() {
        let db = super::migrate::tests::old_database(super::Backend::Postgres, 4).await;
        super::a_database_of_the_previous_schema_upgrades_in_place(&db).await
    }
}

fn claimed(target: &str, event: &IdentityEvent, session: &str) -> TakeEvent {
    TakeEvent {
        session: session.into(),
        fence_ms: 60_000,
        ..taking(target, event, false)
    }
}

/// A failure recorded with a write that got no answer (it may still land at the server) hands
/// the claim to no session: the next take — by the very session that recorded it, as a retry
/// would — is fenced; an answered failure is not.
async fn a_write_without_an_answer_fences_the_subject_even_for_its_own_session(db: &TestStore) {
    let store = &db.store;
    let failed = |event: &IdentityEvent, unanswered: bool| Converged {
        key: Some(event.subject_key("t1")),
        session: "a".into(),
        succeeded: false,
        version: event.version,
        event_id: event.id.clone(),
        error: "the request timed out".into(),
        unanswered,
        ..Default::default()
    };
    let v1 = user_event("n1", 1, "u1");
    store
        .take_events(&[claimed("t1", &v1, "a")])
        .await
        .expect("take");
    store
        .record_converged(&[failed(&v1, true)])
        .await
        .expect("record");
    let before = now_ms();
    let r = store
        .take_events(&[claimed("t1", &v1, "a")])
        .await
        .expect("take");
    assert!(
        r[0].fenced_until_ms >= before + 120_000,
        "fenced for twice the 60 s asked: until {} (asked from {before})",
        r[0].fenced_until_ms
    );

    let w1 = user_event("m1", 1, "u2");
    store
        .take_events(&[claimed("t1", &w1, "a")])
        .await
        .expect("take");
    store
        .record_converged(&[failed(&w1, false)])
        .await
        .expect("record");
    let r = store
        .take_events(&[claimed("t1", &w1, "a")])
        .await
        .expect("take");
    assert_eq!(
        r[0].fenced_until_ms, 0,
        "an answered failure does not fence"
    );
}

/// A subject taken by one consumer session and never recorded (the session ended mid-converge)
/// is fenced for the next session; one that recorded, or released, is not; and the claim of
/// the recording session only is released.
async fn a_claim_left_by_an_ended_session_fences_the_subject(db: &TestStore) {
    let store = &db.store;
    let v1 = user_event("c1", 1, "u1");
    let v2 = user_event("c2", 2, "u1");
    let r = store
        .take_events(&[claimed("t1", &v1, "a")])
        .await
        .expect("take");
    assert_eq!(r[0].fenced_until_ms, 0, "a free subject is not fenced");
    // Session a ended without recording: b is fenced for the fence it asked for.
    let before = now_ms();
    let r = store
        .take_events(&[claimed("t1", &v2, "b")])
        .await
        .expect("take");
    assert!(
        r[0].fenced_until_ms >= before + 60_000,
        "fenced until {} (asked from {before})",
        r[0].fenced_until_ms
    );
    let fence = r[0].fenced_until_ms;
    // Taken again inside the fence: the same fence, not a longer one.
    let r = store
        .take_events(&[claimed("t1", &v2, "b")])
        .await
        .expect("take");
    assert_eq!(r[0].fenced_until_ms, fence);
    // A caller without a session (read paths) neither claims nor clears anything.
    let r = store
        .take_events(&[taking("t1", &v2, false)])
        .await
        .expect("take");
    assert_eq!(r[0].fenced_until_ms, fence);

    // A fence that has passed: the waiting session claims the subject, unfenced, and its claim
    // in turn fences a third session.
    let short = |event: &IdentityEvent, session: &str| TakeEvent {
        fence_ms: 1,
        ..claimed("t1", event, session)
    };
    let v1 = user_event("f1", 1, "u5");
    let v2 = user_event("f2", 2, "u5");
    store.take_events(&[short(&v1, "a")]).await.expect("take");
    let r = store.take_events(&[short(&v2, "b")]).await.expect("take");
    assert!(r[0].fenced_until_ms > 0, "a's claim fences b");
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let r = store.take_events(&[short(&v2, "b")]).await.expect("take");
    assert_eq!(r[0].fenced_until_ms, 0, "the fence has passed: b claims it");
    assert_eq!(r[0].desired_version, 2, "b's version is the desired one");
    let r = store
        .take_events(&[short(&user_event("f3", 3, "u5"), "c")])
        .await
        .expect("take");
    assert!(r[0].fenced_until_ms > 0, "b's claim fences c");
    assert_eq!(
        r[0].desired_version, 3,
        "a fenced take still records its version"
    );

    // Another subject: recorded by its session, then taken by another one: not fenced.
    let w1 = user_event("w1", 1, "u2");
    store
        .take_events(&[claimed("t1", &w1, "a")])
        .await
        .expect("take");
    // A record by a session that does not hold the claim leaves the claim alone.
    let mut other = applied("t1", "u2", 1, "r-u2", Presence::PresentActive);
    other.session = "z".into();
    store.record_converged(&[other]).await.expect("record");
    let r = store
        .take_events(&[claimed("t1", &user_event("w2", 2, "u2"), "b")])
        .await
        .expect("take");
    assert!(r[0].fenced_until_ms > 0, "z's record did not end a's claim");

    // Released without a converge (a duplicate, a held deprovisioning): not fenced either.
    let x1 = user_event("x1", 1, "u3");
    store
        .take_events(&[claimed("t1", &x1, "a")])
        .await
        .expect("take");
    store
        .record_converged(&[Converged {
            key: Some(x1.subject_key("t1")),
            session: "a".into(),
            release_only: true,
            ..Default::default()
        }])
        .await
        .expect("release");
    let r = store
        .take_events(&[claimed("t1", &user_event("x2", 2, "u3"), "b")])
        .await
        .expect("take");
    assert_eq!(r[0].fenced_until_ms, 0, "a released claim does not fence");
    assert_eq!(r[0].applied_version, 0, "a release records nothing");

    let y1 = user_event("y1", 1, "u4");
    store
        .take_events(&[claimed("t1", &y1, "a")])
        .await
        .expect("take");
    let mut done = applied("t1", "u4", 1, "r-u4", Presence::PresentActive);
    done.session = "a".into();
    store.record_converged(&[done]).await.expect("record");
    let r = store
        .take_events(&[claimed("t1", &user_event("y2", 2, "u4"), "b")])
        .await
        .expect("take");
    assert_eq!(
        r[0].fenced_until_ms, 0,
        "a recorded converge does not fence"
    );
}

/// A group of acme at `target` recorded with `pending` members (platform user ids).
fn group_with_pending(target: &str, group: &str, version: u64, pending: &[&str]) -> Converged {
    Converged {
        key: Some(SubjectKey::new(target, "acme", SubjectKind::Group, group)),
        succeeded: true,
        version,
        event_id: format!("{group}-v{version}"),
        remote_id: format!("r-{group}"),
        presence: Presence::PresentActive as i32,
        fingerprint: version,
        operation: "created".into(),
        references_known: true,
        pending: pending
            .iter()
            .map(|u| scimrelay_proto::v1::PendingReference {
                user_id: (*u).into(),
                kind: scimrelay_proto::v1::ReferenceKind::Member as i32,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn pending_references_are_swept_once_per_lease_and_dropped_for_absent_users(db: &TestStore) {
    let store = &db.store;
    let g1 = SubjectKey::new("t1", "acme", SubjectKind::Group, "g1");
    store
        .record_converged(&[
            group_with_pending("t1", "g1", 1, &["u1", "u2", "u3"]),
            group_with_pending("t2", "g1", 1, &["u1"]),
        ])
        .await
        .expect("groups");
    let since = store.references_of(&g1).await.expect("refs")[0].since_ms;
    assert_eq!(
        store.pending_summary("t1").await.expect("summary"),
        (3, since)
    );
    // Nothing arrived yet: nothing is due.
    assert!(
        store
            .due_references("t1", 30_000, 0)
            .await
            .expect("sweep")
            .is_empty()
    );
    // u1 arrives at t1 only; u3 converges to absent (deleted before it was ever created).
    store
        .record_converged(&[
            applied("t1", "u1", 1, "r-u1", Presence::PresentActive),
            applied("t1", "u3", 2, "", Presence::Absent),
        ])
        .await
        .expect("users");
    // Two replicas sweep at once: one of them gets it.
    let (a, b) = tokio::join!(
        store.due_references("t1", 30_000, 0),
        store.due_references("t1", 30_000, 0)
    );
    let due: Vec<_> = a
        .expect("sweep a")
        .into_iter()
        .chain(b.expect("sweep b"))
        .collect();
    assert_eq!(due.len(), 1, "g1 is due at t1, once: {due:?}");
    assert_eq!(due[0], g1);
    assert!(
        store
            .due_references("t1", 30_000, 0)
            .await
            .expect("again")
            .is_empty(),
        "leased: the next sweep does not answer it again"
    );
    assert!(
        store
            .due_references("t2", 30_000, 0)
            .await
            .expect("t2")
            .is_empty()
    );
    let refs = store.references_of(&g1).await.expect("refs");
    let dropped: Vec<_> = refs.iter().filter(|r| !r.dropped.is_empty()).collect();
    assert_eq!(dropped.len(), 1);
    assert_eq!(dropped[0].user_id, "u3");
    assert_eq!(dropped[0].dropped, super::refs::DROPPED_ABSENT);
    // The re-trigger converges g1 with u1: u2 stays pending since it was first recorded, and
    // the lease ends with the record.
    store
        .record_converged(&[group_with_pending("t1", "g1", 1, &["u2"])])
        .await
        .expect("re-converged");
    let refs = store.references_of(&g1).await.expect("refs");
    assert_eq!(refs.len(), 1);
    assert_eq!((refs[0].user_id.as_str(), refs[0].since_ms), ("u2", since));
    store
        .record_converged(&[applied("t1", "u2", 1, "r-u2", Presence::PresentActive)])
        .await
        .expect("u2");
    assert_eq!(
        store.due_references("t1", 30_000, 0).await.expect("sweep"),
        vec![g1.clone()],
        "the record ended the lease"
    );
    store
        .record_converged(&[group_with_pending("t1", "g1", 1, &[])])
        .await
        .expect("complete");
    assert!(store.references_of(&g1).await.expect("refs").is_empty());
    assert_eq!(store.pending_summary("t1").await.expect("summary"), (0, 0));
}
