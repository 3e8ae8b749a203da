//! The outcome store and the state of record ([`record`]): migrations, batched writes, queries,
//! retention. SQLite by default (one file, no server), PostgreSQL by URL for production (several
//! replicas on one database).
//!
//! Both backends run the same SQL (portable subset, `$N` parameters, every integer an `i64`);
//! only the schema migrations differ. The `on_pool!` macro expands each query once per backend.
//!
//! **Writes are batched**: the consumer hands over hundreds of outcomes at once and they are
//! written in one transaction. Writers are serialized (a process-wide mutex, plus a transaction
//! advisory lock on PostgreSQL so several replicas take turns), which makes `seq` grow in commit
//! order: a reader that has seen `seq = n` has seen every outcome below it. That is what lets
//! `WatchOutcomes` resume from a cursor with no gap.
//!
//! **Idempotent**: an outcome delivered twice (the service crashed after writing, before acking)
//! is written once: rows are unique on (event, target, result, attempt, finish time) and a
//! conflicting insert does nothing.
//!
//! **One terminal outcome per (tenant, event, target)** (event ids are unique per tenant): the
//! first terminal outcome recorded for an (event, target) is *the* terminal outcome (table
//! `terminals`). A later one — a connector
//! redelivery after a crash producing `superseded` or a second `succeeded` — is kept in the
//! history with `duplicate = 1` and counts nowhere. Replaying a dead letter re-opens its
//! (event, target) ([`Record::Reopen`]) so the replayed copy's outcome becomes terminal.
//!
//! **Mass-deprovisioning guard**: [`Store::admit_deprovision`] counts a target's users (users
//! the state of record holds present, plus those that left within the window) and the users
//! admitted within the window (table `deprovisions`, one row per (target, tenant, subject); rows
//! that left the window are deleted as it slides), and records an admission, in one transaction
//! serialized per target: a transaction advisory lock keyed by the target on PostgreSQL, so two
//! replicas never both admit the last slot; the write mutex and `BEGIN IMMEDIATE` on SQLite.
//!
//! **Retention**: [`Store::prune`] deletes history older than the configured age; the state of
//! record (`subjects`), counters and held events are state, not history, and are kept.
//!
//! **Tenants**: every outcome row carries the identity-platform tenant of its event (migration
//! 4), and the state of record, terminal outcomes, held events and the guard's admissions are
//! keyed by it (migration 5), so listings ([`OutcomeFilter::tenant`]) and subject lookups can be
//! limited to tenants; the gRPC layer uses that to keep a key scoped to tenants to its own.
//! Outcome rows written before migration 4 have the tenant `''`: only keys for all tenants see
//! them (state-of-record and held rows get theirs from their protobuf bodies at start).

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use prost::Message;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use scimrelay_proto::v1::{
    DeprovisionGuard, HeldEvent, Outcome, OutcomeFilter, OutcomeResult, RecordedOutcome,
    ResultCount, TargetReport, TargetSummary,
};

/// A store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed.
    #[error("status store: {0}")]
    Db(#[from] sqlx::Error),
    /// A stored row could not be decoded.
    #[error("status store: corrupt row: {0}")]
    Corrupt(String),
    /// The URL names no supported database.
    #[error("SCIMRELAY_STATUS_DB: {0}")]
    Url(String),
    /// A request the store cannot apply (names the field).
    #[error("{0}")]
    Invalid(String),
}

/// Which database holds the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (or memory).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Most latencies read for a target's percentiles (the most recent ones).
pub const LATENCY_SAMPLES: i64 = 10_000;
/// How old a connector's report may be for its `waiting_reason` to show in a target's summary
/// (reports come every 5 s; a replica that stopped must not leave a reason behind for long).
const WAITING_REPORT_MAX_AGE_MS: i64 = 30_000;
/// Rows deleted per statement when pruning, so a prune never holds the write lock for long.
const PRUNE_CHUNK: i64 = 5_000;
/// Key of the PostgreSQL advisory lock that serializes writers across replicas (any constant;
/// "scimrelay" in ASCII, truncated).
const PG_WRITE_LOCK: i64 = 0x7363_696d_7265_6c61;

/// SQLite schema migrations, applied in order once each; never edit a released one, append.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE outcomes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    result INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (event_id, target, result, attempt, finished_at_ms)
);
CREATE INDEX outcomes_event ON outcomes (event_id);
CREATE INDEX outcomes_target ON outcomes (target, seq);
CREATE INDEX outcomes_subject ON outcomes (subject_id, seq);
CREATE TABLE subjects (
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    subject_kind INTEGER NOT NULL,
    remote_id TEXT NOT NULL,
    applied_version INTEGER NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target, subject_id)
);
"#,
    ),
    (
        2,
        r#"
ALTER TABLE outcomes ADD COLUMN latency_ms INTEGER NOT NULL DEFAULT 0;
ALTER TABLE outcomes ADD COLUMN duplicate INTEGER NOT NULL DEFAULT 0;
CREATE INDEX outcomes_recorded ON outcomes (recorded_at_ms);
CREATE TABLE terminals (
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (event_id, target)
);
CREATE INDEX terminals_seq ON terminals (seq);
INSERT OR IGNORE INTO terminals (event_id, target, seq)
    SELECT event_id, target, MIN(seq) FROM outcomes WHERE event_id <> '' AND result <> 0 GROUP BY event_id, target;
UPDATE outcomes SET duplicate = 1
    WHERE result <> 0 AND event_id <> '' AND seq NOT IN (SELECT seq FROM terminals);
CREATE TABLE target_counts (
    target TEXT NOT NULL,
    result INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (target, result)
);
INSERT INTO target_counts (target, result, count)
    SELECT target, result, COUNT(*) FROM outcomes WHERE duplicate = 0 AND result <> 0 GROUP BY target, result;
CREATE TABLE targets (
    target TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    last_outcome_at_ms INTEGER NOT NULL
);
INSERT OR IGNORE INTO targets (target, provider, last_outcome_at_ms)
    SELECT target, '', MAX(recorded_at_ms) FROM outcomes GROUP BY target;
CREATE TABLE target_reports (
    target TEXT NOT NULL,
    replica TEXT NOT NULL,
    received_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (target, replica)
);
CREATE TABLE held (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    held_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (event_id, target)
);
CREATE INDEX held_target ON held (target, id);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE deprovisions (
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    admitted_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target, subject_id)
);
CREATE INDEX deprovisions_window ON deprovisions (target, admitted_at_ms);
"#,
    ),
    (4, MIGRATION_4),
    (5, SQLITE_MIGRATION_5),
    (6, SQLITE_MIGRATION_6),
];

/// PostgreSQL schema migrations (the same schema as SQLite's, in PostgreSQL types). Version 1
/// already holds everything of SQLite's 1 and 2; later versions keep SQLite's numbers.
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        r#"
CREATE TABLE outcomes (
    seq BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    result BIGINT NOT NULL,
    attempt BIGINT NOT NULL,
    finished_at_ms BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL DEFAULT 0,
    duplicate BIGINT NOT NULL DEFAULT 0,
    body BYTEA NOT NULL,
    UNIQUE (event_id, target, result, attempt, finished_at_ms)
);
CREATE INDEX outcomes_event ON outcomes (event_id);
CREATE INDEX outcomes_target ON outcomes (target, seq);
CREATE INDEX outcomes_subject ON outcomes (subject_id, seq);
CREATE INDEX outcomes_recorded ON outcomes (recorded_at_ms);
CREATE TABLE subjects (
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    subject_kind BIGINT NOT NULL,
    remote_id TEXT NOT NULL,
    applied_version BIGINT NOT NULL,
    state TEXT NOT NULL,
    last_error TEXT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (target, subject_id)
);
CREATE TABLE terminals (
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    seq BIGINT NOT NULL,
    PRIMARY KEY (event_id, target)
);
CREATE INDEX terminals_seq ON terminals (seq);
CREATE TABLE target_counts (
    target TEXT NOT NULL,
    result BIGINT NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (target, result)
);
CREATE TABLE targets (
    target TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    last_outcome_at_ms BIGINT NOT NULL
);
CREATE TABLE target_reports (
    target TEXT NOT NULL,
    replica TEXT NOT NULL,
    received_at_ms BIGINT NOT NULL,
    body BYTEA NOT NULL,
    PRIMARY KEY (target, replica)
);
CREATE TABLE held (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    held_at_ms BIGINT NOT NULL,
    body BYTEA NOT NULL,
    UNIQUE (event_id, target)
);
CREATE INDEX held_target ON held (target, id);
"#,
    ),
    (
        3,
        r#"
CREATE TABLE deprovisions (
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    admitted_at_ms BIGINT NOT NULL,
    PRIMARY KEY (target, subject_id)
);
CREATE INDEX deprovisions_window ON deprovisions (target, admitted_at_ms);
"#,
    ),
    (4, MIGRATION_4),
    (5, POSTGRES_MIGRATION_5),
    (6, POSTGRES_MIGRATION_6),
];

/// Migration 4, the same SQL on both backends: the identity-platform tenant of every outcome
/// and ledger row, so a key scoped to tenants reads only its own (see the status gRPC docs).
/// Rows written before it keep `''`, which no tenant-scoped key matches: they stay visible to
/// keys for all tenants only (the tenant is inside the outcome's protobuf body, which SQL cannot
/// read to backfill it). `outcomes_tenant` serves the filtered listings of one tenant in `seq`
/// order; `subjects_subject` serves `GetSubject` (by subject, then tenant), which until now
/// scanned the ledger when no target was named. On PostgreSQL `ADD COLUMN … DEFAULT ''` does
/// not rewrite the table, but the two `CREATE INDEX` block writes while they build.
const MIGRATION_4: &str = r#"
ALTER TABLE outcomes ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
CREATE INDEX outcomes_tenant ON outcomes (tenant, seq);
CREATE INDEX subjects_subject ON subjects (subject_id, tenant);
"#;

/// Migration 5 on SQLite: the state of record (see [`record`]). Subjects are keyed by (target,
/// tenant, kind, id) and keep the latest accepted desired state and what was applied; event
/// ids are unique per tenant, so outcomes, terminal outcomes, held events and the guard's
/// admissions carry the tenant in their keys. SQLite cannot change a key in place: each table
/// is rebuilt (copied) under its old name. Rows keep their values; a ledger row's `state` (the
/// name of its last operation) becomes a presence, conservatively: a user last seen
/// `deactivated` is present-inactive, one with no remote id or `deleted` is absent, one that
/// only ever failed is unknown, anything else (`created`, `updated`, `noop`, …) present-active.
/// Rows written before migration 4 (tenant `''`) get their tenant from their latest outcome
/// afterwards ([`Store::backfill_tenants`]).
const SQLITE_MIGRATION_5: &str = r#"
CREATE TABLE subjects_v5 (
    target TEXT NOT NULL,
    tenant TEXT NOT NULL,
    subject_kind INTEGER NOT NULL,
    subject_id TEXT NOT NULL,
    desired_version INTEGER NOT NULL DEFAULT 0,
    desired_event_id TEXT NOT NULL DEFAULT '',
    desired BLOB,
    desired_at_ms INTEGER NOT NULL DEFAULT 0,
    applied_version INTEGER NOT NULL DEFAULT 0,
    applied_event_id TEXT NOT NULL DEFAULT '',
    applied BLOB,
    applied_at_ms INTEGER NOT NULL DEFAULT 0,
    remote_id TEXT NOT NULL DEFAULT '',
    fingerprint INTEGER NOT NULL DEFAULT 0,
    presence INTEGER NOT NULL DEFAULT 0,
    members BLOB,
    last_operation TEXT NOT NULL DEFAULT '',
    last_error TEXT NOT NULL DEFAULT '',
    updated_at_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (target, tenant, subject_kind, subject_id)
);
INSERT INTO subjects_v5 (target, tenant, subject_kind, subject_id, desired_version, applied_version,
        applied_at_ms, remote_id, presence, last_operation, last_error, updated_at_ms)
    SELECT target, tenant, subject_kind, subject_id, applied_version, applied_version, updated_at_ms,
        remote_id,
        CASE WHEN state = 'error' THEN 0 WHEN remote_id = '' OR state = 'deleted' THEN 3
             WHEN state = 'deactivated' THEN 2 ELSE 1 END,
        CASE WHEN state = 'error' THEN '' ELSE state END,
        last_error, updated_at_ms
    FROM subjects;
DROP TABLE subjects;
ALTER TABLE subjects_v5 RENAME TO subjects;
CREATE INDEX subjects_subject ON subjects (subject_id, tenant);
CREATE INDEX subjects_presence ON subjects (target, subject_kind, presence);
CREATE TABLE outcomes_v5 (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL DEFAULT '',
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    result INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    finished_at_ms INTEGER NOT NULL,
    recorded_at_ms INTEGER NOT NULL,
    latency_ms INTEGER NOT NULL DEFAULT 0,
    duplicate INTEGER NOT NULL DEFAULT 0,
    body BLOB NOT NULL,
    UNIQUE (tenant, event_id, target, result, attempt, finished_at_ms)
);
INSERT INTO outcomes_v5 (seq, tenant, event_id, target, subject_id, result, attempt, finished_at_ms,
        recorded_at_ms, latency_ms, duplicate, body)
    SELECT seq, tenant, event_id, target, subject_id, result, attempt, finished_at_ms,
        recorded_at_ms, latency_ms, duplicate, body FROM outcomes;
DROP TABLE outcomes;
ALTER TABLE outcomes_v5 RENAME TO outcomes;
CREATE INDEX outcomes_event ON outcomes (event_id);
CREATE INDEX outcomes_target ON outcomes (target, seq);
CREATE INDEX outcomes_subject ON outcomes (subject_id, seq);
CREATE INDEX outcomes_recorded ON outcomes (recorded_at_ms);
CREATE INDEX outcomes_tenant ON outcomes (tenant, seq);
CREATE TABLE terminals_v5 (
    tenant TEXT NOT NULL DEFAULT '',
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    seq INTEGER NOT NULL,
    PRIMARY KEY (tenant, event_id, target)
);
INSERT INTO terminals_v5 (tenant, event_id, target, seq)
    SELECT COALESCE(o.tenant, ''), t.event_id, t.target, t.seq
    FROM terminals t LEFT JOIN outcomes o ON o.seq = t.seq;
DROP TABLE terminals;
ALTER TABLE terminals_v5 RENAME TO terminals;
CREATE INDEX terminals_seq ON terminals (seq);
CREATE TABLE held_v5 (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL DEFAULT '',
    event_id TEXT NOT NULL,
    target TEXT NOT NULL,
    held_at_ms INTEGER NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (tenant, event_id, target)
);
INSERT INTO held_v5 (id, event_id, target, held_at_ms, body)
    SELECT id, event_id, target, held_at_ms, body FROM held;
DROP TABLE held;
ALTER TABLE held_v5 RENAME TO held;
CREATE INDEX held_target ON held (target, id);
CREATE TABLE deprovisions_v5 (
    target TEXT NOT NULL,
    tenant TEXT NOT NULL DEFAULT '',
    subject_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    admitted_at_ms INTEGER NOT NULL,
    PRIMARY KEY (target, tenant, subject_id)
);
INSERT INTO deprovisions_v5 (target, subject_id, event_id, admitted_at_ms)
    SELECT target, subject_id, event_id, admitted_at_ms FROM deprovisions;
DROP TABLE deprovisions;
ALTER TABLE deprovisions_v5 RENAME TO deprovisions;
CREATE INDEX deprovisions_window ON deprovisions (target, admitted_at_ms)
"#;

/// Migration 5 on PostgreSQL: the same schema as [`SQLITE_MIGRATION_5`], changed in place
/// (columns added, keys swapped; the unique index that replaces a unique constraint is what the
/// writes' `ON CONFLICT` names). The constraint names are PostgreSQL's defaults of the tables
/// migration 1 created.
const POSTGRES_MIGRATION_5: &str = r#"
ALTER TABLE subjects ADD COLUMN desired_version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN desired_event_id TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN desired BYTEA;
ALTER TABLE subjects ADD COLUMN desired_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN applied_event_id TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN applied BYTEA;
ALTER TABLE subjects ADD COLUMN applied_at_ms BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN fingerprint BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN presence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subjects ADD COLUMN members BYTEA;
ALTER TABLE subjects ADD COLUMN last_operation TEXT NOT NULL DEFAULT '';
UPDATE subjects SET desired_version = applied_version, applied_at_ms = updated_at_ms,
    presence = CASE WHEN state = 'error' THEN 0 WHEN remote_id = '' OR state = 'deleted' THEN 3
                    WHEN state = 'deactivated' THEN 2 ELSE 1 END,
    last_operation = CASE WHEN state = 'error' THEN '' ELSE state END;
ALTER TABLE subjects DROP COLUMN state;
ALTER TABLE subjects ALTER COLUMN remote_id SET DEFAULT '';
ALTER TABLE subjects ALTER COLUMN applied_version SET DEFAULT 0;
ALTER TABLE subjects ALTER COLUMN last_error SET DEFAULT '';
ALTER TABLE subjects ALTER COLUMN updated_at_ms SET DEFAULT 0;
ALTER TABLE subjects DROP CONSTRAINT subjects_pkey;
ALTER TABLE subjects ADD PRIMARY KEY (target, tenant, subject_kind, subject_id);
CREATE INDEX subjects_presence ON subjects (target, subject_kind, presence);
ALTER TABLE outcomes DROP CONSTRAINT IF EXISTS outcomes_event_id_target_result_attempt_finished_at_ms_key;
CREATE UNIQUE INDEX outcomes_unique ON outcomes (tenant, event_id, target, result, attempt, finished_at_ms);
ALTER TABLE terminals ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
UPDATE terminals SET tenant = o.tenant FROM outcomes o WHERE o.seq = terminals.seq;
ALTER TABLE terminals DROP CONSTRAINT terminals_pkey;
ALTER TABLE terminals ADD PRIMARY KEY (tenant, event_id, target);
ALTER TABLE held ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE held DROP CONSTRAINT IF EXISTS held_event_id_target_key;
CREATE UNIQUE INDEX held_unique ON held (tenant, event_id, target);
ALTER TABLE deprovisions ADD COLUMN tenant TEXT NOT NULL DEFAULT '';
ALTER TABLE deprovisions DROP CONSTRAINT deprovisions_pkey;
ALTER TABLE deprovisions ADD PRIMARY KEY (target, tenant, subject_id)
"#;

/// Migration 6 on SQLite: a subject's claim by the connector session converging it, and the
/// fence a claim left by an ended session puts on it (see [`record`]).
const SQLITE_MIGRATION_6: &str = r#"
ALTER TABLE subjects ADD COLUMN claim TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN fenced_until_ms INTEGER NOT NULL DEFAULT 0
"#;

/// Migration 6 on PostgreSQL: the same columns.
const POSTGRES_MIGRATION_6: &str = r#"
ALTER TABLE subjects ADD COLUMN claim TEXT NOT NULL DEFAULT '';
ALTER TABLE subjects ADD COLUMN fenced_until_ms BIGINT NOT NULL DEFAULT 0
"#;

/// One write of a batch, applied in order in one transaction.
// Outcomes are most of the records and are moved, never copied: boxing them would cost an
// allocation per outcome for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Record {
    /// An outcome published by a connector (or made by the status service for an operator
    /// action).
    Outcome(Outcome),
    /// An event held by the mass-deprovisioning guard.
    Held(Box<HeldEvent>),
    /// Forget a held event (it was released or dropped).
    Unhold {
        /// The event's tenant (event ids are unique per tenant).
        tenant: String,
        /// The event.
        event_id: String,
        /// The target of the held copy.
        target: String,
    },
    /// A dead-lettered (event, target) is being replayed: its dead-lettered outcome stops being
    /// the terminal one, so the replayed copy's outcome counts.
    Reopen {
        /// The event's tenant.
        tenant: String,
        /// The event.
        event_id: String,
        /// The target.
        target: String,
    },
}

/// What a batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// Outcomes newly stored.
    pub inserted: usize,
    /// Of those, terminal outcomes of an (event, target) that already had one.
    pub duplicates: usize,
    /// Outcomes already stored before (a redelivered message), ignored.
    pub ignored: usize,
}

#[derive(Clone)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Expands `$body` once per backend with `$pool` bound to the backend's pool.
macro_rules! on_pool {
    ($store:expr, |$pool:ident| $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($pool) => $body,
            Pool::Postgres($pool) => $body,
        }
    };
}

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: Pool,
    /// Serializes writers in this process (see the module doc: seq grows in commit order).
    write: Arc<tokio::sync::Mutex<()>>,
    /// The highest seq committed by this process, for watchers to wake up without polling.
    last_seq: Arc<tokio::sync::watch::Sender<u64>>,
}

pub use scimrelay_core::now_ms;

/// Whether an outcome result ends its (event, target).
pub fn is_terminal(result: i32) -> bool {
    result != OutcomeResult::Unspecified as i32
}

/// Columns of an outcome row as read back: seq, recorded_at_ms, body, duplicate, terminal.
type OutcomeRow = (i64, i64, Vec<u8>, i64, i64);

const OUTCOME_COLUMNS: &str = "o.seq, o.recorded_at_ms, o.body, o.duplicate, CAST(CASE WHEN t.seq IS NULL THEN 0 ELSE 1 END AS BIGINT)";

/// The shared WHERE clause of filtered listings; parameters $1 … $7 and $9 ($8 is the limit).
const FILTER_SQL: &str = "o.seq > $1 AND ($2 = '' OR o.target = $2) AND ($3 = '' OR o.subject_id = $3) \
     AND ($4 = 0 OR o.result = $4) AND ($5 = 0 OR o.finished_at_ms >= $5) AND ($6 = 0 OR o.finished_at_ms < $6) \
     AND ($7 = 1 OR o.duplicate = 0) AND ($9 = '' OR o.tenant = $9)";

fn decode_outcome(row: OutcomeRow) -> Result<RecordedOutcome, StoreError> {
    let (seq, recorded_at_ms, body, duplicate, terminal) = row;
    let outcome = Outcome::decode(body.as_slice())
        .map_err(|e| StoreError::Corrupt(format!("outcome {seq}: {e}")))?;
    Ok(RecordedOutcome {
        seq: u64::try_from(seq).unwrap_or_default(),
        outcome: Some(outcome),
        recorded_at_ms,
        duplicate: duplicate != 0,
        terminal: terminal != 0,
    })
}

fn decode_held(id: i64, body: &[u8]) -> Result<HeldEvent, StoreError> {
    let mut h =
        HeldEvent::decode(body).map_err(|e| StoreError::Corrupt(format!("held {id}: {e}")))?;
    h.id = u64::try_from(id).unwrap_or_default();
    Ok(h)
}

/// Prefix of the target in the key of the guard's PostgreSQL advisory lock, so the key never
/// equals the key of another lock taken per target.
const DEPROVISION_LOCK_PREFIX: &str = "scimrelay.deprovision:";

/// The key of `target`'s guard lock on PostgreSQL: FNV-1a of the prefixed target, the same in
/// every replica and every build (the standard library's hasher promises neither).
fn deprovision_lock_key(target: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in DEPROVISION_LOCK_PREFIX.bytes().chain(target.bytes()) {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    i64::from_be_bytes(hash.to_be_bytes())
}

/// How many users may be deprovisioned within the window: floor(max_share × users).
fn allowance(max_share: f64, users: u64) -> u64 {
    // Shares are written as decimals, and a binary double can land a hair below the decimal's
    // product (0.29 × 100 = 28.999999999999996): a relative nudge far above the rounding error
    // and far below any real fraction gives the decimal's floor (29).
    let exact = max_share * users as f64;
    (exact + exact * 1e-12).floor() as u64
}

/// Whether the guard admits a user not yet admitted within the window, with `recent` others
/// admitted: small targets always; otherwise while recent + 1 <= floor(max_share × users).
fn admits(guard: &DeprovisionGuard, users: u64, recent: u64) -> bool {
    users < guard.min_users || recent < allowance(guard.max_share, users)
}

/// `x` as a person writes it: 10, 12.5 (six decimals at most, no trailing `.0`).
fn decimal(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Why the guard holds a deprovisioning, e.g. "30 of 200 users deprovisioned within 600 s
/// (limit 10%)".
fn refusal(guard: &DeprovisionGuard, users: u64, recent: u64) -> String {
    format!(
        "{recent} of {users} users deprovisioned within {} s (limit {}%)",
        decimal(guard.window_ms as f64 / 1000.0),
        decimal(guard.max_share * 100.0)
    )
}

/// The key of a held event: (tenant, event id, target).
pub fn held_key(h: &HeldEvent) -> (String, String, String) {
    let d = h.delivery.as_ref();
    let event = d.and_then(|d| d.event.as_ref());
    (
        event.map(|e| e.tenant.clone()).unwrap_or_default(),
        event.map(|e| e.id.clone()).unwrap_or_default(),
        d.map(|d| d.target.clone()).unwrap_or_default(),
    )
}

/// Writes a batch inside the open transaction `$tx`; evaluates to `Result<(Written, u64), StoreError>`
/// where the u64 is the highest seq written.
macro_rules! write_batch {
    ($tx:ident, $items:expr, $now:expr) => {{
        let now: i64 = $now;
        let mut written = Written::default();
        let mut max_seq: i64 = 0;
        let mut counts: BTreeMap<(String, i64), i64> = BTreeMap::new();
        let mut providers: BTreeMap<String, String> = BTreeMap::new();
        for item in $items {
            match item {
                Record::Outcome(o) => {
                    let seq: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO outcomes (event_id, target, subject_id, result, attempt, finished_at_ms, recorded_at_ms, latency_ms, duplicate, body, tenant) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10) \
                         ON CONFLICT (tenant, event_id, target, result, attempt, finished_at_ms) DO NOTHING RETURNING seq",
                    )
                    .bind(&o.event_id)
                    .bind(&o.target)
                    .bind(&o.subject_id)
                    .bind(i64::from(o.result))
                    .bind(i64::from(o.attempt))
                    .bind(o.finished_at_ms)
                    .bind(now)
                    .bind(i64::try_from(o.latency_ms).unwrap_or(i64::MAX))
                    .bind(o.encode_to_vec())
                    .bind(&o.tenant)
                    .fetch_optional(&mut *$tx)
                    .await?;
                    let Some(seq) = seq else {
                        written.ignored += 1;
                        continue;
                    };
                    written.inserted += 1;
                    max_seq = max_seq.max(seq);
                    providers.insert(o.target.clone(), o.provider.clone());
                    if !is_terminal(o.result) {
                        continue;
                    }
                    // An outcome without an event id (an undecodable message) is its own event.
                    let key = if o.event_id.is_empty() { format!("#{seq}") } else { o.event_id.clone() };
                    let first = sqlx::query("INSERT INTO terminals (tenant, event_id, target, seq) VALUES ($1, $2, $3, $4) ON CONFLICT (tenant, event_id, target) DO NOTHING")
                        .bind(&o.tenant)
                        .bind(&key)
                        .bind(&o.target)
                        .bind(seq)
                        .execute(&mut *$tx)
                        .await?
                        .rows_affected()
                        == 1;
                    if !first {
                        written.duplicates += 1;
                        sqlx::query("UPDATE outcomes SET duplicate = 1 WHERE seq = $1").bind(seq).execute(&mut *$tx).await?;
                        continue;
                    }
                    *counts.entry((o.target.clone(), i64::from(o.result))).or_default() += 1;
                }
                Record::Held(h) => {
                    let (tenant, event_id, target) = held_key(h);
                    let mut stored = h.clone();
                    stored.id = 0;
                    sqlx::query(
                        "INSERT INTO held (event_id, target, held_at_ms, body, tenant) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (tenant, event_id, target) DO UPDATE SET held_at_ms = excluded.held_at_ms, body = excluded.body",
                    )
                    .bind(&event_id)
                    .bind(&target)
                    .bind(h.held_at_ms)
                    .bind(stored.encode_to_vec())
                    .bind(&tenant)
                    .execute(&mut *$tx)
                    .await?;
                }
                Record::Unhold { tenant, event_id, target } => {
                    sqlx::query("DELETE FROM held WHERE tenant = $1 AND event_id = $2 AND target = $3")
                        .bind(tenant)
                        .bind(event_id)
                        .bind(target)
                        .execute(&mut *$tx)
                        .await?;
                }
                Record::Reopen { tenant, event_id, target } => {
                    sqlx::query(
                        "DELETE FROM terminals WHERE tenant = $1 AND event_id = $2 AND target = $3 AND seq IN \
                         (SELECT seq FROM outcomes WHERE tenant = $1 AND event_id = $2 AND target = $3 AND result = $4)",
                    )
                    .bind(tenant)
                    .bind(event_id)
                    .bind(target)
                    .bind(OutcomeResult::DeadLettered as i64)
                    .execute(&mut *$tx)
                    .await?;
                }
            }
        }
        for ((target, result), n) in &counts {
            sqlx::query(
                "INSERT INTO target_counts (target, result, count) VALUES ($1, $2, $3) \
                 ON CONFLICT (target, result) DO UPDATE SET count = target_counts.count + excluded.count",
            )
            .bind(target)
            .bind(*result)
            .bind(*n)
            .execute(&mut *$tx)
            .await?;
        }
        for (target, provider) in &providers {
            sqlx::query(
                "INSERT INTO targets (target, provider, last_outcome_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (target) DO UPDATE SET provider = excluded.provider, last_outcome_at_ms = excluded.last_outcome_at_ms",
            )
            .bind(target)
            .bind(provider)
            .bind(now)
            .execute(&mut *$tx)
            .await?;
        }
        Ok::<_, StoreError>((written, u64::try_from(max_seq).unwrap_or_default()))
    }};
}

mod record;
pub use record::KEY_LIMIT;

impl Store {
    /// Opens the database at `url` and applies pending migrations: `postgres://…` (or
    /// `postgresql://…`) for PostgreSQL; `sqlite://path`, a plain path or `sqlite::memory:` for
    /// SQLite (the file is created when missing).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
        let placed = store.backfill_tenants().await?;
        if placed > 0 {
            tracing::info!(
                rows = placed,
                "gave rows from before migration 4 their tenant"
            );
        }
        let max = store.max_seq().await?;
        store.last_seq.send_replace(max);
        Ok(store)
    }

    /// Connects to the database at `url` (see [`Store::open`]) without migrating it.
    async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(url)
                .await?;
            Pool::Postgres(pool)
        } else {
            if url.contains("://") && !url.starts_with("sqlite:") {
                return Err(StoreError::Url(
                    "unsupported database URL: use postgres://…, sqlite://PATH or a file path"
                        .into(),
                ));
            }
            let url = if url.starts_with("sqlite:") {
                url.to_owned()
            } else {
                format!("sqlite://{url}")
            };
            let opts = SqliteConnectOptions::from_str(&url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(std::time::Duration::from_secs(10));
            let max = if url.contains(":memory:") { 1 } else { 4 };
            Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(max)
                    .connect_with(opts)
                    .await?,
            )
        };
        let (tx, _) = tokio::sync::watch::channel(0);
        Ok(Store {
            pool,
            write: Arc::new(tokio::sync::Mutex::new(())),
            last_seq: Arc::new(tx),
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_up_to(i64::MAX).await
    }

    /// Applies the pending migrations up to `last` (tests stop early to write rows of an older
    /// schema).
    async fn migrate_up_to(&self, last: i64) -> Result<(), StoreError> {
        let _guard = self.write.lock().await;
        let migrations = match self.backend() {
            Backend::Sqlite => SQLITE_MIGRATIONS,
            Backend::Postgres => POSTGRES_MIGRATIONS,
        };
        on_pool!(self, |pool| {
            let created = sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)")
                .execute(pool)
                .await;
            // Two PostgreSQL replicas creating the table at once: the loser's error is harmless.
            if let Err(e) = created
                && self.backend() == Backend::Sqlite
            {
                return Err(e.into());
            }
            for &(version, sql) in migrations.iter().filter(|(v, _)| *v <= last) {
                let mut tx = pool.begin().await?;
                if self.backend() == Backend::Postgres {
                    sqlx::query("SELECT pg_advisory_xact_lock($1)")
                        .bind(PG_WRITE_LOCK)
                        .execute(&mut *tx)
                        .await?;
                }
                let done: Option<i64> =
                    sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                        .bind(version)
                        .fetch_optional(&mut *tx)
                        .await?;
                if done.is_some() {
                    continue;
                }
                // Statement by statement: `raw_sql` futures are not `Send` (a higher-ranked
                // lifetime), and migrations hold no `;` inside literals.
                for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                    sqlx::query(statement)
                        .persistent(false)
                        .execute(&mut *tx)
                        .await?;
                }
                sqlx::query(
                    "INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)",
                )
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                tracing::info!(version, backend = ?self.backend(), "applied status store migration");
            }
            Ok::<_, StoreError>(())
        })
    }

    /// Writes a batch of outcomes in one transaction and updates the subjects they touch.
    pub async fn record(&self, outcomes: &[Outcome]) -> Result<Written, StoreError> {
        let items: Vec<Record> = outcomes.iter().cloned().map(Record::Outcome).collect();
        self.write(&items).await
    }

    /// Applies a batch of writes in one transaction, in order.
    pub async fn write(&self, items: &[Record]) -> Result<Written, StoreError> {
        if items.is_empty() {
            return Ok(Written::default());
        }
        let _guard = self.write.lock().await;
        let (written, max_seq) = match &self.pool {
            Pool::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let r = write_batch!(tx, items, now_ms())?;
                tx.commit().await?;
                r
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let r = write_batch!(tx, items, now_ms())?;
                tx.commit().await?;
                r
            }
        };
        if max_seq > 0 {
            self.last_seq.send_if_modified(|s| {
                let newer = max_seq > *s;
                *s = (*s).max(max_seq);
                newer
            });
        }
        Ok(written)
    }

    /// Subscribes to "something was committed" (the highest seq written by this process).
    /// Other replicas' writes are not signalled: watchers also poll.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.last_seq.subscribe()
    }

    /// The highest seq stored (0 when empty).
    pub async fn max_seq(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(seq) FROM outcomes"
        )
        .fetch_one(pool)
        .await?);
        Ok(u64::try_from(max.unwrap_or_default()).unwrap_or_default())
    }

    /// Every outcome of one event, oldest first, and its held copies.
    pub async fn event(
        &self,
        event_id: &str,
    ) -> Result<(Vec<RecordedOutcome>, Vec<HeldEvent>), StoreError> {
        let sql = format!(
            "SELECT {OUTCOME_COLUMNS} FROM outcomes o LEFT JOIN terminals t ON t.seq = o.seq WHERE o.event_id = $1 ORDER BY o.seq"
        );
        let rows: Vec<OutcomeRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(event_id)
            .fetch_all(pool)
            .await?);
        let held: Vec<(i64, Vec<u8>)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, body FROM held WHERE event_id = $1 ORDER BY id"
        )
        .bind(event_id)
        .fetch_all(pool)
        .await?);
        let outcomes = rows
            .into_iter()
            .map(decode_outcome)
            .collect::<Result<_, _>>()?;
        let held = held
            .iter()
            .map(|(id, body)| decode_held(*id, body))
            .collect::<Result<_, _>>()?;
        Ok((outcomes, held))
    }

    /// A page of outcomes after `after_seq` matching `filter`, oldest first. With `terminal_only`,
    /// only the terminal outcome of each (event, target). `filter.tenant` matches the tenant
    /// stored with each outcome (empty for every tenant); the caller has already decided which
    /// tenant a key may read.
    pub async fn list(
        &self,
        filter: &OutcomeFilter,
        after_seq: u64,
        limit: u32,
        terminal_only: bool,
    ) -> Result<Vec<RecordedOutcome>, StoreError> {
        let join = if terminal_only { "JOIN" } else { "LEFT JOIN" };
        let sql = format!(
            "SELECT {OUTCOME_COLUMNS} FROM outcomes o {join} terminals t ON t.seq = o.seq WHERE {FILTER_SQL} ORDER BY o.seq LIMIT $8"
        );
        let rows: Vec<OutcomeRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(&filter.target)
            .bind(&filter.subject_id)
            .bind(i64::from(filter.result))
            .bind(filter.from_ms)
            .bind(filter.to_ms)
            .bind(i64::from(filter.include_duplicates))
            .bind(i64::from(limit))
            .bind(&filter.tenant)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(decode_outcome).collect()
    }

    /// Stores a connector's report (the latest per target and replica).
    pub async fn report(&self, r: &TargetReport) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO target_reports (target, replica, received_at_ms, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (target, replica) DO UPDATE SET received_at_ms = excluded.received_at_ms, body = excluded.body"
        )
        .bind(&r.target)
        .bind(&r.replica)
        .bind(now_ms())
        .bind(r.encode_to_vec())
        .execute(pool)
        .await
        .map(|_| ())?
        });
        Ok(())
    }

    /// Every target the store knows of (from outcomes, reports or held events), sorted.
    pub async fn target_ids(&self) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT target FROM targets UNION SELECT target FROM target_reports UNION SELECT DISTINCT target FROM held ORDER BY 1"
        )
        .fetch_all(pool)
        .await?
        });
        Ok(ids)
    }

    /// The latest report of each replica of a target.
    pub async fn reports(&self, target: &str) -> Result<Vec<(TargetReport, i64)>, StoreError> {
        let rows: Vec<(Vec<u8>, i64)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT body, received_at_ms FROM target_reports WHERE target = $1 ORDER BY replica"
        )
        .bind(target)
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(body, at)| {
                TargetReport::decode(body.as_slice())
                    .map(|r| (r, at))
                    .map_err(|e| StoreError::Corrupt(format!("report of {target}: {e}")))
            })
            .collect()
    }

    /// A target's summary from the store (counts, latency, reports, held); `None` when nothing
    /// is known of it. Queue depth is the broker's and is filled in by the caller.
    pub async fn target_summary(&self, target: &str) -> Result<Option<TargetSummary>, StoreError> {
        let known: Option<(String, i64)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT provider, last_outcome_at_ms FROM targets WHERE target = $1"
        )
        .bind(target)
        .fetch_optional(pool)
        .await?);
        let reports = self.reports(target).await?;
        let held: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM held WHERE target = $1"
        )
        .bind(target)
        .fetch_one(pool)
        .await?);
        if known.is_none() && reports.is_empty() && held == 0 {
            return Ok(None);
        }
        let mut s = TargetSummary {
            target: target.to_owned(),
            held: u64::try_from(held).unwrap_or_default(),
            ..Default::default()
        };
        if let Some((provider, last)) = known {
            s.provider = provider;
            s.last_outcome_at_ms = last;
        }
        let counts: Vec<(i64, i64)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT result, count FROM target_counts WHERE target = $1 ORDER BY result"
        )
        .bind(target)
        .fetch_all(pool)
        .await?);
        s.counts = counts
            .into_iter()
            .map(|(result, count)| ResultCount {
                result: i32::try_from(result).unwrap_or_default(),
                count: u64::try_from(count).unwrap_or_default(),
            })
            .collect();
        let mut latencies: Vec<i64> = on_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT o.latency_ms FROM outcomes o JOIN terminals t ON t.seq = o.seq WHERE o.target = $1 ORDER BY o.seq DESC LIMIT $2"
        )
        .bind(target)
        .bind(LATENCY_SAMPLES)
        .fetch_all(pool)
        .await?
        });
        latencies.sort_unstable();
        let pct = |p: usize| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            let i = (latencies.len() * p)
                .div_ceil(100)
                .saturating_sub(1)
                .min(latencies.len() - 1);
            u64::try_from(latencies[i]).unwrap_or_default()
        };
        s.latency_p50_ms = pct(50);
        s.latency_p95_ms = pct(95);
        s.latency_p99_ms = pct(99);
        s.latency_samples = u32::try_from(latencies.len()).unwrap_or(u32::MAX);
        let mut reasons = Vec::new();
        for (r, received_at) in &reports {
            if s.provider.is_empty() {
                s.provider = r.provider.clone();
            }
            s.throttle_waits += r.throttle_waits;
            s.throttle_wait_ms += r.throttle_wait_ms;
            s.concurrency_limit += r.concurrency_limit;
            s.in_flight += r.in_flight;
            s.last_report_at_ms = s.last_report_at_ms.max(*received_at);
            if r.quarantined {
                s.quarantined = true;
                if !r.quarantine_reason.is_empty() && !reasons.contains(&r.quarantine_reason) {
                    reasons.push(r.quarantine_reason.clone());
                }
            }
        }
        s.quarantine_reason = reasons.join("; ");
        // Why messages wait: from fresh reports only (a replica that stopped leaves its last
        // report behind).
        let fresh_since = now_ms() - WAITING_REPORT_MAX_AGE_MS;
        if let Some(r) = reports
            .iter()
            .filter(|(r, at)| *at >= fresh_since && !r.waiting_reason.is_empty())
            .map(|(r, _)| r)
            .min_by_key(|r| r.waiting_since_ms)
        {
            s.waiting_reason = r.waiting_reason.clone();
            s.waiting_since_ms = r.waiting_since_ms;
        }
        Ok(Some(s))
    }

    /// Held events of a target (or all) after the id `after`, oldest first.
    pub async fn held(
        &self,
        target: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<HeldEvent>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT id, body FROM held WHERE id > $1 AND ($2 = '' OR target = $2) ORDER BY id LIMIT $3"
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(target)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        });
        rows.iter()
            .map(|(id, body)| decode_held(*id, body))
            .collect()
    }

    /// Held events selected by an operator: of `target` (empty for any), restricted to
    /// `event_ids` when not empty, and to `tenant`'s events when it is not empty (event ids are
    /// unique per tenant).
    pub async fn held_selected(
        &self,
        tenant: &str,
        target: &str,
        event_ids: &[String],
    ) -> Result<Vec<HeldEvent>, StoreError> {
        let wanted: HashSet<&str> = event_ids.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.held(target, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            out.extend(page.into_iter().filter(|h| {
                let (t, id, _) = held_key(h);
                (wanted.is_empty() || wanted.contains(id.as_str()))
                    && (tenant.is_empty() || t == tenant)
            }));
        }
        Ok(out)
    }

    /// Deletes outcome history recorded before `before_ms`; returns how many outcomes went.
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let _guard = self.write.lock().await;
            let deleted = on_pool!(self, |pool| {
                let mut tx = pool.begin().await?;
                let max: Option<i64> = sqlx::query_scalar(
                    "SELECT MAX(seq) FROM (SELECT seq FROM outcomes WHERE recorded_at_ms < $1 ORDER BY seq LIMIT $2) AS old",
                )
                .bind(before_ms)
                .bind(PRUNE_CHUNK)
                .fetch_one(&mut *tx)
                .await?;
                let Some(max) = max else { return Ok(total) };
                let n = sqlx::query("DELETE FROM outcomes WHERE seq <= $1 AND recorded_at_ms < $2")
                    .bind(max)
                    .bind(before_ms)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("DELETE FROM terminals WHERE seq <= $1 AND seq NOT IN (SELECT seq FROM outcomes WHERE seq <= $1)")
                    .bind(max)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok::<_, StoreError>(n)
            })?;
            total += deleted;
            if deleted == 0 {
                return Ok(total);
            }
        }
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        on_pool!(self, |pool| sqlx::query("SELECT 1")
            .execute(pool)
            .await
            .is_ok())
    }
}

#[cfg(test)]
mod tests;
/// Compile-time check: the store's futures can be spawned (a higher-ranked lifetime in a query
/// binding makes them silently `!Send`, which only shows where a caller spawns them).
#[allow(dead_code)]
fn spawnable(s: Store) {
    tokio::spawn(async move { s.migrate().await });
    tokio::spawn(async move { Store::open("").await });
}
