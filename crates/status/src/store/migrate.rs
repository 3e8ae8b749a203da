//! The schema: the released migrations, `.sql` files under `crates/status/migrations/sqlite/` and
//! `crates/status/migrations/postgres/`, run by sqlx's migrator, which records each one in
//! `_sqlx_migrations` with the SHA-384 checksum of its file.
//!
//! **A released migration is never edited; a change is a new one.** A database keeps the
//! checksum of every migration it ran, and the migrator refuses to open a database whose
//! recorded checksum differs from the file's ("migration N was previously applied but has been
//! modified"): an edit would otherwise leave the databases made before and after it with
//! different schemas. The module's tests pin each file's checksum, so an edit fails before it
//! ships. The files are embedded in the binary (`include_str!`, nothing is read at run time)
//! and named as sqlx's tools expect (`<version>_<description>.sql`).
//!
//! Both backends number their migrations alike: PostgreSQL's 1 holds everything of SQLite's 1
//! and 2, so PostgreSQL has no 2; later versions keep the same numbers and meaning.
//!
//! **Concurrency.** Each migration runs in its own transaction. On PostgreSQL the migrator holds
//! an advisory lock of its own (keyed by the database's name) while it runs, so of several
//! replicas starting at once one migrates and the others wait, then find nothing to do. On
//! SQLite (one process per file) the store's write mutex serializes the migrator with writers.
//!
//! **Databases from before the migrator** recorded their migrations in a table of their own,
//! `schema_migrations (version, applied_at_ms)`, applied by a runner of this module with the
//! very SQL of today's files. At every open, before the migrator runs, [`Store::bridge`] copies
//! the versions that table holds and `_sqlx_migrations` does not into `_sqlx_migrations` — with
//! the checksum and description of today's file, the time the version was applied, and an
//! execution time of -1 (unknown) — in one transaction, so the migrator counts them as applied
//! and runs only the rest. On PostgreSQL that transaction first takes the writers' advisory lock
//! (`PG_WRITE_LOCK`), the one the old runner took for each migration: replicas starting at once
//! bridge in turn (the later ones find nothing left to copy), and a bridge never interleaves
//! with a replica of the previous release still running the old runner. On SQLite it begins
//! `IMMEDIATE` for the same reason. A version in the old table that this build does not know (a
//! database of a later build) stops the open. A database without `schema_migrations` is new, or
//! sqlx's already, and is left to the migrator.
//!
//! `schema_migrations` is kept as it is after the bridge, and nothing writes it any more: it is
//! the record of when each of those migrations ran, and with it the previous release still finds
//! its migrations applied, so rolling back to it does not try to create existing tables.

use std::borrow::Cow;

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

use super::{Backend, PG_WRITE_LOCK, Pool, Store, StoreError};

/// A released migration: its version, its file under `crates/status/migrations/`, its SQL.
type Released = (i64, &'static str, &'static str);

/// The released migration `$version` in `$file` (a path under `crates/status/migrations/`).
macro_rules! released {
    ($version:literal, $file:literal) => {
        (
            $version,
            $file,
            include_str!(concat!("../../migrations/", $file)),
        )
    };
}

/// SQLite's released migrations, in order.
const SQLITE: &[Released] = &[
    // The outcome history and the subject ledger.
    released!(1, "sqlite/0001_outcomes_and_subjects.sql"),
    // Terminal outcomes (duplicates flagged), per-target counts and providers, connector
    // reports, held events; filled from the history already stored.
    released!(2, "sqlite/0002_terminals_totals_reports_held.sql"),
    // The mass-deprovisioning guard's admissions.
    released!(3, "sqlite/0003_deprovisions.sql"),
    // Tenants; see the note on migration 4 below.
    released!(4, "sqlite/0004_tenants.sql"),
    // The state of record; see the note on migration 5 below. SQLite cannot change a key in
    // place: each table is rebuilt (copied) under its old name.
    released!(5, "sqlite/0005_state_of_record.sql"),
    // A subject's claim by the connector session converging it, and the fence a claim left by
    // an ended session puts on it (see `record`).
    released!(6, "sqlite/0006_claims_and_fences.sql"),
    // References of a subject to users not at the target yet, and the lease of a subject's
    // re-trigger (see `record`, "References").
    released!(7, "sqlite/0007_references.sql"),
];

/// PostgreSQL's released migrations, in order: the same schema as SQLite's, in PostgreSQL types.
const POSTGRES: &[Released] = &[
    // Everything of SQLite's 1 and 2 (there was no history to fill from).
    released!(1, "postgres/0001_initial_schema.sql"),
    released!(3, "postgres/0003_deprovisions.sql"),
    // The same SQL as SQLite's 4.
    released!(4, "postgres/0004_tenants.sql"),
    // Changed in place (columns added, keys swapped; the unique index that replaces a unique
    // constraint is what the writes' `ON CONFLICT` names). The constraint names are
    // PostgreSQL's defaults of the tables migration 1 created.
    released!(5, "postgres/0005_state_of_record.sql"),
    released!(6, "postgres/0006_claims_and_fences.sql"),
    released!(7, "postgres/0007_references.sql"),
];

// Migration 4: the identity-platform tenant of every outcome and ledger row, so a key scoped
// to tenants reads only its own (see the status gRPC docs). Rows written before it keep `''`,
// which no tenant-scoped key matches: they stay visible to keys for all tenants only (the
// tenant is inside the outcome's protobuf body, which SQL cannot read to backfill it).
// `outcomes_tenant` serves the filtered listings of one tenant in `seq` order;
// `subjects_subject` serves `GetSubject` (by subject, then tenant). On PostgreSQL `ADD COLUMN …
// DEFAULT ''` does not rewrite the table, but the two `CREATE INDEX` block writes while they
// build.
//
// Migration 5: the state of record (see `record`). Subjects are keyed by (target, tenant,
// kind, id) and keep the latest accepted desired state and what was applied; event ids are
// unique per tenant, so outcomes, terminal outcomes, held events and the guard's admissions
// carry the tenant in their keys. Rows keep their values; a ledger row's `state` (the name of
// its last operation) becomes a presence, conservatively: a user last seen `deactivated` is
// present-inactive, one with no remote id or `deleted` is absent, one that only ever failed is
// unknown, anything else (`created`, `updated`, `noop`, …) present-active. Rows written before
// migration 4 (tenant `''`) get their tenant from their latest outcome afterwards
// (`Store::backfill_tenants`).

/// The released migrations of `backend`, as sqlx's migrator runs them.
pub(super) fn migrations(backend: Backend) -> Vec<Migration> {
    let released = match backend {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    released
        .iter()
        .map(|&(version, file, sql)| {
            Migration::new(
                version,
                Cow::Owned(description(file)),
                MigrationType::Simple,
                Cow::Borrowed(sql),
                false,
            )
        })
        .collect()
}

/// The description sqlx's tools give the file `file`: its name without the version and the
/// `.sql`, underscores as spaces.
fn description(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    let name = name.strip_suffix(".sql").unwrap_or(name);
    name.split_once('_')
        .map_or(name, |(_, d)| d)
        .replace('_', " ")
}

/// The released migrations of a backend up to a version, as a source for sqlx's migrator.
#[derive(Debug)]
struct Embedded {
    /// Whose migrations.
    backend: Backend,
    /// The last version included.
    last: i64,
}

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move {
            let mut m = migrations(self.backend);
            m.retain(|m| m.version <= self.last);
            Ok(m)
        })
    }
}

/// sqlx's migrator holding the released migrations of `backend` up to `last`.
pub(super) async fn migrator(backend: Backend, last: i64) -> Result<Migrator, StoreError> {
    Migrator::new(Embedded { backend, last })
        .await
        .map_err(|e| StoreError::Db(e.into()))
}

/// Whether the old runner's `schema_migrations` exists, as 0 or 1.
const SQLITE_HAS_OLD_TABLE: &str =
    "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'";
const POSTGRES_HAS_OLD_TABLE: &str =
    "SELECT CAST(CASE WHEN to_regclass('schema_migrations') IS NULL THEN 0 ELSE 1 END AS BIGINT)";

/// sqlx's own table, exactly as its migrator creates it (so its `CREATE TABLE IF NOT EXISTS`
/// finds it as it would have made it).
const SQLITE_SQLX_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    success BOOLEAN NOT NULL,
    checksum BLOB NOT NULL,
    execution_time BIGINT NOT NULL
);
                "#;
const POSTGRES_SQLX_TABLE: &str = r#"
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
);
                "#;

/// The versions of `schema_migrations` that `_sqlx_migrations` does not hold, with when they
/// were applied.
const OLD_VERSIONS: &str = "SELECT version, applied_at_ms FROM schema_migrations \
     WHERE version NOT IN (SELECT version FROM _sqlx_migrations) ORDER BY version";

/// Records a migration applied by the old runner as sqlx's migrator records one it applied:
/// $1 version, $2 description, $3 checksum, $4 when it was applied (ms since the epoch).
const SQLITE_RECORD: &str = "INSERT INTO _sqlx_migrations \
     (version, description, installed_on, success, checksum, execution_time) \
     VALUES ($1, $2, datetime($4 / 1000, 'unixepoch'), TRUE, $3, -1)";
const POSTGRES_RECORD: &str = "INSERT INTO _sqlx_migrations \
     (version, description, installed_on, success, checksum, execution_time) \
     VALUES ($1, $2, to_timestamp(CAST($4 AS DOUBLE PRECISION) / 1000), TRUE, $3, -1)";

impl Store {
    /// Brings the schema up to date (see the module doc).
    pub(super) async fn migrate(&self) -> Result<(), StoreError> {
        self.migrate_up_to(i64::MAX).await
    }

    /// Brings the schema up to version `last` only (tests stop early to write rows of an older
    /// schema): bridges the old runner's record, then runs the released migrations up to `last`.
    pub(super) async fn migrate_up_to(&self, last: i64) -> Result<(), StoreError> {
        let _guard = self.write.lock().await;
        let bridged = self.bridge().await?;
        if bridged > 0 {
            tracing::info!(
                migrations = bridged,
                backend = ?self.backend(),
                "recorded the migrations of schema_migrations in _sqlx_migrations"
            );
        }
        let migrator = migrator(self.backend(), last).await?;
        on_pool!(self, |pool| migrator
            .run(pool)
            .await
            .map_err(sqlx::Error::from)?);
        let version: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(version) FROM _sqlx_migrations"
        )
        .fetch_one(pool)
        .await?);
        tracing::info!(version, backend = ?self.backend(), "status store schema up to date");
        Ok(())
    }

    /// Copies the versions the old runner recorded in `schema_migrations` into sqlx's
    /// `_sqlx_migrations`, in one transaction (see the module doc). Returns how many it copied.
    async fn bridge(&self) -> Result<usize, StoreError> {
        let known = migrations(self.backend());
        let (has_old, sqlx_table, record) = match self.backend() {
            Backend::Sqlite => (SQLITE_HAS_OLD_TABLE, SQLITE_SQLX_TABLE, SQLITE_RECORD),
            Backend::Postgres => (POSTGRES_HAS_OLD_TABLE, POSTGRES_SQLX_TABLE, POSTGRES_RECORD),
        };
        on_pool!(self, |pool| {
            // A database without the old table (new, or made by this release) never gets one:
            // no lock is taken for it, so a replica's start does not stall every writer.
            let old: i64 = sqlx::query_scalar(has_old).fetch_one(pool).await?;
            if old == 0 {
                return Ok(0);
            }
            let mut tx = match self.backend() {
                // IMMEDIATE: the write lock before reading, as the copy writes what it read.
                Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await?,
                Backend::Postgres => pool.begin().await?,
            };
            if self.backend() == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
            }
            let old: i64 = sqlx::query_scalar(has_old).fetch_one(&mut *tx).await?;
            if old == 0 {
                // Ended now, not when dropped: on PostgreSQL it holds the writers' lock.
                tx.commit().await?;
                return Ok(0);
            }
            sqlx::query(sqlx_table).execute(&mut *tx).await?;
            let pending: Vec<(i64, i64)> = sqlx::query_as(OLD_VERSIONS).fetch_all(&mut *tx).await?;
            for &(version, applied_at_ms) in &pending {
                let Some(m) = known.iter().find(|m| m.version == version) else {
                    return Err(sqlx::Error::from(MigrateError::VersionMissing(version)).into());
                };
                sqlx::query(record)
                    .bind(m.version)
                    .bind(&*m.description)
                    .bind(&*m.checksum)
                    .bind(applied_at_ms)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok(pending.len())
        })
    }
}

#[cfg(test)]
pub(super) mod tests;
