//! The schema: each backend's migrations, applied in order once each by [`Store::migrate`] and
//! recorded in `schema_migrations`. Never edit a released migration; append one.

use super::{Backend, PG_WRITE_LOCK, Pool, Store, StoreError, now_ms};

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

impl Store {
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_up_to(i64::MAX).await
    }

    /// Applies the pending migrations up to `last` (tests stop early to write rows of an older
    /// schema).
    pub(super) async fn migrate_up_to(&self, last: i64) -> Result<(), StoreError> {
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
}
