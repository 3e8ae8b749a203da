//! The outcome store: migrations, batched writes, queries, retention. SQLite by default (one
//! file, no server), PostgreSQL by URL for production (several replicas on one database).
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
//! **One terminal outcome per (event, target)**: the first terminal outcome recorded for an
//! (event, target) is *the* terminal outcome (table `terminals`). A later one — a connector
//! redelivery after a crash producing `superseded` or a second `succeeded` — is kept in the
//! history with `duplicate = 1` and counts nowhere. Replaying a dead letter re-opens its
//! (event, target) ([`Record::Reopen`]) so the replayed copy's outcome becomes terminal.
//!
//! **Mass-deprovisioning guard**: [`Store::admit_deprovision`] counts a target's users (user
//! subjects of the ledger not deleted, plus those deleted within the window) and the users
//! admitted within the window (table `deprovisions`, one row per (target, subject); rows that
//! left the window are deleted as it slides), and records an admission, in one transaction
//! serialized per target: a transaction advisory lock keyed by the target on PostgreSQL, so two
//! replicas never both admit the last slot; the write mutex and `BEGIN IMMEDIATE` on SQLite.
//!
//! **Retention**: [`Store::prune`] deletes history older than the configured age; the ledger
//! (`subjects`), counters and held events are state, not history, and are kept.
//!
//! **Tenants**: every outcome row and ledger row carries the identity-platform tenant of the
//! outcome that wrote it (migration 4), so listings ([`OutcomeFilter::tenant`]) and subject
//! lookups can be limited to tenants; the gRPC layer uses that to keep a key scoped to tenants
//! to its own. Rows written before migration 4 have the tenant `''`: only keys for all tenants
//! see them.

use std::collections::{BTreeMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;

use prost::Message;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use scimrelay_proto::v1::{
    AdmitDeprovisionResponse, DeprovisionGuard, HeldEvent, LedgerEntry, LedgerKey, Operation,
    Outcome, OutcomeFilter, OutcomeResult, RecordedOutcome, ResultCount, SubjectKind, SubjectState,
    TargetReport, TargetSummary,
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
        /// The event.
        event_id: String,
        /// The target of the held copy.
        target: String,
    },
    /// A dead-lettered (event, target) is being replayed: its dead-lettered outcome stops being
    /// the terminal one, so the replayed copy's outcome counts.
    Reopen {
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

fn result_of(o: &Outcome) -> OutcomeResult {
    OutcomeResult::try_from(o.result).unwrap_or(OutcomeResult::Unspecified)
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

/// The (event id, target) of a held event.
pub fn held_key(h: &HeldEvent) -> (String, String) {
    let d = h.delivery.as_ref();
    (
        d.and_then(|d| d.event.as_ref())
            .map(|e| e.id.clone())
            .unwrap_or_default(),
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
                         ON CONFLICT (event_id, target, result, attempt, finished_at_ms) DO NOTHING RETURNING seq",
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
                    let first = sqlx::query("INSERT INTO terminals (event_id, target, seq) VALUES ($1, $2, $3) ON CONFLICT (event_id, target) DO NOTHING")
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
                    if o.subject_id.is_empty() {
                        continue;
                    }
                    match result_of(o) {
                        OutcomeResult::Succeeded => {
                            let state = Operation::try_from(o.operation).map(|op| op.name()).unwrap_or("-");
                            sqlx::query(
                                "INSERT INTO subjects (target, subject_id, subject_kind, remote_id, applied_version, state, last_error, updated_at_ms, tenant) \
                                 VALUES ($1, $2, $3, $4, $5, $6, '', $7, $8) \
                                 ON CONFLICT (target, subject_id) DO UPDATE SET \
                                   remote_id = excluded.remote_id, applied_version = excluded.applied_version, \
                                   state = excluded.state, last_error = '', updated_at_ms = excluded.updated_at_ms, \
                                   tenant = excluded.tenant \
                                 WHERE excluded.applied_version >= subjects.applied_version",
                            )
                            .bind(&o.target)
                            .bind(&o.subject_id)
                            .bind(i64::from(o.subject_kind))
                            .bind(&o.remote_id)
                            .bind(i64::try_from(o.version).unwrap_or(i64::MAX))
                            .bind(state)
                            .bind(now)
                            .bind(&o.tenant)
                            .execute(&mut *$tx)
                            .await?;
                        }
                        r @ (OutcomeResult::Failed | OutcomeResult::DeadLettered | OutcomeResult::Unsupported) => {
                            sqlx::query(
                                "INSERT INTO subjects (target, subject_id, subject_kind, remote_id, applied_version, state, last_error, updated_at_ms, tenant) \
                                 VALUES ($1, $2, $3, '', 0, 'error', $4, $5, $6) \
                                 ON CONFLICT (target, subject_id) DO UPDATE SET last_error = excluded.last_error, \
                                   updated_at_ms = excluded.updated_at_ms, tenant = excluded.tenant",
                            )
                            .bind(&o.target)
                            .bind(&o.subject_id)
                            .bind(i64::from(o.subject_kind))
                            .bind(format!("{}: {}", r.name(), o.detail))
                            .bind(now)
                            .bind(&o.tenant)
                            .execute(&mut *$tx)
                            .await?;
                        }
                        _ => {}
                    }
                }
                Record::Held(h) => {
                    let (event_id, target) = held_key(h);
                    let mut stored = h.clone();
                    stored.id = 0;
                    sqlx::query(
                        "INSERT INTO held (event_id, target, held_at_ms, body) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (event_id, target) DO UPDATE SET held_at_ms = excluded.held_at_ms, body = excluded.body",
                    )
                    .bind(&event_id)
                    .bind(&target)
                    .bind(h.held_at_ms)
                    .bind(stored.encode_to_vec())
                    .execute(&mut *$tx)
                    .await?;
                }
                Record::Unhold { event_id, target } => {
                    sqlx::query("DELETE FROM held WHERE event_id = $1 AND target = $2")
                        .bind(event_id)
                        .bind(target)
                        .execute(&mut *$tx)
                        .await?;
                }
                Record::Reopen { event_id, target } => {
                    sqlx::query(
                        "DELETE FROM terminals WHERE event_id = $1 AND target = $2 AND seq IN \
                         (SELECT seq FROM outcomes WHERE event_id = $1 AND target = $2 AND result = $3)",
                    )
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

impl Store {
    /// Opens the database at `url` and applies pending migrations: `postgres://…` (or
    /// `postgresql://…`) for PostgreSQL; `sqlite://path`, a plain path or `sqlite::memory:` for
    /// SQLite (the file is created when missing).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let store = Self::connect(url).await?;
        store.migrate().await?;
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

    /// What every target (or one) knows of a subject, limited to rows of `tenants` (`None` for
    /// every tenant; rows written before migration 4 have the tenant `''` and match only
    /// `None`). A subject has one row per target, so the tenants are matched here rather than
    /// with an `IN` list of variable length.
    pub async fn subject(
        &self,
        subject_id: &str,
        target: &str,
        tenants: Option<&[String]>,
    ) -> Result<Vec<SubjectState>, StoreError> {
        type Row = (
            String,
            String,
            i64,
            String,
            i64,
            String,
            String,
            i64,
            String,
        );
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT target, subject_id, subject_kind, remote_id, applied_version, state, last_error, updated_at_ms, tenant \
             FROM subjects WHERE subject_id = $1 AND ($2 = '' OR target = $2) ORDER BY target"
        )
        .bind(subject_id)
        .bind(target)
        .fetch_all(pool)
        .await?
        });
        Ok(rows
            .into_iter()
            .filter(|row| tenants.is_none_or(|ts| ts.contains(&row.8)))
            .map(
                |(
                    target,
                    subject_id,
                    kind,
                    remote_id,
                    version,
                    state,
                    last_error,
                    updated_at_ms,
                    _tenant,
                )| SubjectState {
                    target,
                    subject_id,
                    subject_kind: i32::try_from(kind).unwrap_or_default(),
                    remote_id,
                    applied_version: u64::try_from(version).unwrap_or_default(),
                    state,
                    last_error,
                    updated_at_ms,
                },
            )
            .collect())
    }

    /// Ledger lookups, one answer per key in order.
    pub async fn ledger(&self, keys: &[LedgerKey]) -> Result<Vec<LedgerEntry>, StoreError> {
        type Row = (String, i64, String);
        let mut out = Vec::with_capacity(keys.len());
        on_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            for k in keys {
                let row: Option<Row> = sqlx::query_as(
                    "SELECT remote_id, applied_version, state FROM subjects WHERE target = $1 AND subject_id = $2",
                )
                .bind(&k.target)
                .bind(&k.subject_id)
                .fetch_optional(&mut *conn)
                .await?;
                let mut e = LedgerEntry {
                    target: k.target.clone(),
                    subject_id: k.subject_id.clone(),
                    ..Default::default()
                };
                if let Some((remote_id, version, state)) = row {
                    e.found = true;
                    e.remote_id = remote_id;
                    e.applied_version = u64::try_from(version).unwrap_or_default();
                    e.state = state;
                }
                out.push(e);
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    }

    /// The mass-deprovisioning guard (see the module doc): admits deprovisioning `subject_id`
    /// at `target` and counts it in the target's window, or answers why it must be held.
    /// `now` is the wall clock in ms since the epoch ([`now_ms`]; tests move it). Atomic per
    /// target across replicas; the caller has validated `guard` (share in (0, 1], a window).
    pub async fn admit_deprovision(
        &self,
        target: &str,
        subject_id: &str,
        event_id: &str,
        guard: &DeprovisionGuard,
        now: i64,
    ) -> Result<AdmitDeprovisionResponse, StoreError> {
        let since = now.saturating_sub(i64::try_from(guard.window_ms).unwrap_or(i64::MAX));
        // SQLite has one writer anyway: waiting on the mutex beats its busy handler's polling.
        let _writer = match self.backend() {
            Backend::Sqlite => Some(self.write.lock().await),
            Backend::Postgres => None,
        };
        on_pool!(self, |pool| {
            let mut tx = match self.backend() {
                // IMMEDIATE: take the write lock before counting, so no other writer (reports
                // do not take the mutex) can make the upgrade from reading fail.
                Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
                Backend::Postgres => pool.begin().await?,
            };
            if self.backend() == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(deprovision_lock_key(target))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("DELETE FROM deprovisions WHERE target = $1 AND admitted_at_ms < $2")
                .bind(target)
                .bind(since)
                .execute(&mut *tx)
                .await?;
            let users: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM subjects WHERE target = $1 AND subject_kind = $2 \
                 AND (state <> $3 OR updated_at_ms >= $4)",
            )
            .bind(target)
            .bind(SubjectKind::User as i64)
            .bind(Operation::Deleted.name())
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
            let recent: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM deprovisions WHERE target = $1 AND admitted_at_ms >= $2",
            )
            .bind(target)
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
            let again: Option<i64> = sqlx::query_scalar(
                "SELECT admitted_at_ms FROM deprovisions WHERE target = $1 AND subject_id = $2",
            )
            .bind(target)
            .bind(subject_id)
            .fetch_optional(&mut *tx)
            .await?;
            let mut answer = AdmitDeprovisionResponse {
                admitted: true,
                reason: String::new(),
                users: u64::try_from(users).unwrap_or_default(),
                recent: u64::try_from(recent).unwrap_or_default(),
            };
            if again.is_none() {
                if admits(guard, answer.users, answer.recent) {
                    sqlx::query(
                        "INSERT INTO deprovisions (target, subject_id, event_id, admitted_at_ms) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (target, subject_id) DO UPDATE SET \
                         event_id = excluded.event_id, admitted_at_ms = excluded.admitted_at_ms",
                    )
                    .bind(target)
                    .bind(subject_id)
                    .bind(event_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    answer.recent += 1;
                } else {
                    answer.admitted = false;
                    answer.reason = refusal(guard, answer.users, answer.recent);
                }
            }
            tx.commit().await?;
            Ok(answer)
        })
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
    /// `event_ids` when not empty.
    pub async fn held_selected(
        &self,
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
            out.extend(
                page.into_iter()
                    .filter(|h| wanted.is_empty() || wanted.contains(held_key(h).0.as_str())),
            );
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
