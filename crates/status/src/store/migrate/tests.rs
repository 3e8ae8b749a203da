//! Tests of the schema: the released files and their checksums, and databases made by the
//! runner before sqlx's migrator upgraded in place, on real SQLite and real PostgreSQL.

use super::super::tests::TestStore;
use super::*;

use sqlx::Connection as _;

use scimrelay_proto::v1::{HeldEvent, Outcome, OutcomeFilter, OutcomeResult};

use crate::store::{Record, now_ms};

/// The runner sqlx's migrator replaced, as it was released: `schema_migrations`, each migration
/// in a transaction of its own (under the writers' lock on PostgreSQL), its statements split on
/// `;` and run one by one. It runs the released files, which hold the SQL it ran then.
pub(in crate::store) async fn old_runner(store: &Store, last: i64) {
    let released = match store.backend() {
        Backend::Sqlite => SQLITE,
        Backend::Postgres => POSTGRES,
    };
    on_pool!(store, |pool| {
        let created = sqlx::query("CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)")
            .execute(pool)
            .await;
        if let Err(e) = created
            && store.backend() == Backend::Sqlite
        {
            panic!("schema_migrations: {e}");
        }
        for &(version, _, sql) in released.iter().filter(|(v, _, _)| *v <= last) {
            let mut tx = pool.begin().await.expect("begin");
            if store.backend() == Backend::Postgres {
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await
                    .expect("lock");
            }
            let done: Option<i64> =
                sqlx::query_scalar("SELECT version FROM schema_migrations WHERE version = $1")
                    .bind(version)
                    .fetch_optional(&mut *tx)
                    .await
                    .expect("done");
            if done.is_some() {
                continue;
            }
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                sqlx::query(statement)
                    .persistent(false)
                    .execute(&mut *tx)
                    .await
                    .unwrap_or_else(|e| panic!("migration {version}: {e}"));
            }
            sqlx::query("INSERT INTO schema_migrations (version, applied_at_ms) VALUES ($1, $2)")
                .bind(version)
                .bind(now_ms())
                .execute(&mut *tx)
                .await
                .expect("record");
            tx.commit().await.expect("commit");
        }
    });
}

/// A fresh database of `backend` made by the old runner up to version `last`, not yet opened
/// by [`Store::open`].
pub(in crate::store) async fn old_database(backend: Backend, last: i64) -> TestStore {
    let db = TestStore::unmigrated(backend).await;
    old_runner(&db.store, last).await;
    // The old release's process ends; what follows opens the database anew (SQLite
    // connections keep the schema they read, see `Store::open`).
    db.reconnected().await
}

/// What `_sqlx_migrations` holds: version, description, checksum, success, installed_on (as
/// text), execution_time.
type SqlxRow = (i64, String, Vec<u8>, bool, String, i64);

async fn sqlx_rows(store: &Store) -> Vec<SqlxRow> {
    on_pool!(store, |pool| {
        sqlx::query_as(
        "SELECT version, description, checksum, success, CAST(installed_on AS TEXT), execution_time \
         FROM _sqlx_migrations ORDER BY version"
    )
    .fetch_all(pool)
    .await
    .expect("_sqlx_migrations")
    })
}

async fn old_rows(store: &Store) -> Vec<(i64, i64)> {
    on_pool!(store, |pool| sqlx::query_as(
        "SELECT version, applied_at_ms FROM schema_migrations ORDER BY version"
    )
    .fetch_all(pool)
    .await
    .expect("schema_migrations"))
}

fn versions(backend: Backend) -> Vec<i64> {
    migrations(backend).iter().map(|m| m.version).collect()
}

/// The schema as text, one line per table, column, index and constraint, without the old
/// runner's `schema_migrations`.
async fn schema(store: &Store) -> Vec<String> {
    let rows: Vec<(String, String, String, String)> = match &store.pool {
        Pool::Sqlite(pool) => sqlx::query_as(
            "SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master \
             WHERE tbl_name <> 'schema_migrations' ORDER BY type, name",
        )
        .fetch_all(pool)
        .await
        .expect("sqlite_master"),
        Pool::Postgres(pool) => sqlx::query_as(
            "SELECT 'column', table_name || '.' || column_name, \
                    CAST(ordinal_position AS TEXT) || ' ' || data_type || ' ' || is_nullable, \
                    COALESCE(column_default, '') \
             FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name <> 'schema_migrations' \
             UNION ALL \
             SELECT 'index', indexname, tablename, indexdef FROM pg_indexes \
             WHERE schemaname = current_schema() AND tablename <> 'schema_migrations' \
             UNION ALL \
             SELECT 'constraint', conname, CAST(conrelid::regclass AS TEXT), pg_get_constraintdef(oid) \
             FROM pg_constraint WHERE connamespace = CAST(current_schema() AS regnamespace) \
               AND CAST(conrelid::regclass AS TEXT) <> 'schema_migrations' \
             ORDER BY 1, 2",
        )
        .fetch_all(pool)
        .await
        .expect("information_schema"),
    };
    let lines: Vec<String> = rows
        .into_iter()
        .map(|(a, b, c, d)| format!("{a} {b} {c} {d}"))
        .collect();
    assert!(
        lines.iter().any(|l| l.contains("subjects")) && lines.iter().any(|l| l.contains("_sqlx")),
        "the schema dump shows the tables: {lines:#?}"
    );
    lines
}

/// Released migrations as given (edited ones included), as a source for sqlx's migrator.
#[derive(Debug)]
struct Given(Vec<Migration>);

impl<'s> MigrationSource<'s> for Given {
    fn resolve(self) -> BoxFuture<'s, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { Ok(self.0) })
    }
}

/// Runs the released migrations of `store`'s backend with migration `version` edited (a
/// comment appended) and answers the migrator's error.
async fn run_edited(store: &Store, version: i64) -> Option<MigrateError> {
    let mut edited = migrations(store.backend());
    let m = edited
        .iter_mut()
        .find(|m| m.version == version)
        .expect("a released version");
    *m = Migration::new(
        version,
        m.description.clone(),
        MigrationType::Simple,
        Cow::Owned(format!("{}-- edited after release\n", m.sql)),
        false,
    );
    let migrator = Migrator::new(Given(edited)).await.expect("migrator");
    // On a connection of its own, closed after: a migrator that fails keeps its PostgreSQL
    // session lock, which would hold the next open of this database for ever.
    on_pool!(store, |pool| {
        let mut conn = pool.acquire().await.expect("connection").detach();
        let err = migrator.run(&mut conn).await.err();
        conn.close().await.expect("close");
        err
    })
}

#[test]
fn every_file_in_the_migration_directories_is_released_in_order() {
    for (backend, dir) in [(Backend::Sqlite, "sqlite"), (Backend::Postgres, "postgres")] {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let mut files: Vec<String> = std::fs::read_dir(&path)
            .expect("migrations directory")
            .map(|e| format!("{dir}/{}", e.expect("entry").file_name().to_string_lossy()))
            .collect();
        files.sort();
        let released = match backend {
            Backend::Sqlite => SQLITE,
            Backend::Postgres => POSTGRES,
        };
        let listed: Vec<String> = released.iter().map(|(_, f, _)| f.to_string()).collect();
        assert_eq!(
            files, listed,
            "{dir}: a file not released, or released twice"
        );
        for (version, file, _) in released {
            let prefix = file.split('/').nth(1).and_then(|n| n.split('_').next());
            assert_eq!(
                prefix.and_then(|p| p.parse::<i64>().ok()),
                Some(*version),
                "{file}: the file name starts with its version"
            );
        }
    }
    assert_eq!(versions(Backend::Sqlite), [1, 2, 3, 4, 5, 6, 7]);
    assert_eq!(versions(Backend::Postgres), [1, 3, 4, 5, 6, 7]);
    assert_eq!(
        description("sqlite/0005_state_of_record.sql"),
        "state of record"
    );
}

/// Each released file's SHA-384, as databases have recorded it. A mismatch means a released
/// migration was edited: revert the edit and add a new migration instead.
#[test]
fn released_migrations_are_never_edited() {
    let pinned = [
        (
            Backend::Sqlite,
            1,
            "cc8c1f9b220e897644d5b5261b6bf29ebccdc9400f98d34818152eda2b74e59a81ec69d26f4d178b7cac471a4edd7f1f",
        ),
        (
            Backend::Sqlite,
            2,
            "a546ce43101496a19a3f1a6fd23101d70d957446d1538b72d5b346965bec02e0dc8f4650b5f2261f52b8ff3314df6a57",
        ),
        (
            Backend::Sqlite,
            3,
            "ec6ccacb259b68837aaff34b0cd5e54af57b1cc7d04b47df42734f695a71c9e6b83d901b87e5c3beeadfc81a9e8e2110",
        ),
        (
            Backend::Sqlite,
            4,
            "3656dfd779ce38952430f0f8c488e3fb21b8dad3a9bccfa0906bf9a7abc6ccef0b83d4c61daa9cf4e416a7e885d6fee0",
        ),
        (
            Backend::Sqlite,
            5,
            "14455676e0a71b2734b60bf6df4cada2a4e9ef08ed32de18e0b3a258109cd90bc9c795f778c109d4ecbd14db242b84a5",
        ),
        (
            Backend::Sqlite,
            6,
            "b612521aad46565fa10dc2bb62ce70ac93a5d5fd6a862e159bc01838a99b6abf2db8b0ff19c2d5d556e70c731bebdada",
        ),
        (
            Backend::Postgres,
            1,
            "858633bfc8b6773ec8bde963a6e9c5727cb5e00af6473bfba4ac7d6c24a903fbc4b4977565d571e26b3cf0da0074b021",
        ),
        (
            Backend::Postgres,
            3,
            "7cb7c370ce58ad6b19df6f8c4e506c500a74b5b65f6151ecc24247d65ef6110b8c47876044c0cc888ec76a2c253bb29d",
        ),
        (
            Backend::Postgres,
            4,
            "3656dfd779ce38952430f0f8c488e3fb21b8dad3a9bccfa0906bf9a7abc6ccef0b83d4c61daa9cf4e416a7e885d6fee0",
        ),
        (
            Backend::Postgres,
            5,
            "d590e912e3721bd4af069ff22df9aadbb94fbab5c264dc8a9680564b3891c77c0c36e515dba924cb7e01b5f95744117d",
        ),
        (
            Backend::Postgres,
            6,
            "c29231d28b690f2eec3b94685d388842d1d1b0608ba6a0a4663fc4084adb0eb21e470c9a0309292e5f451e1dcdd1f258",
        ),
        (
            Backend::Sqlite,
            7,
            "315e076c5ca50a3ab1e3f5d9f202fabf6bbeee637e0a32a18c71aae893c5ebaba7975701ac951a18ae98ac4a70dfa82a",
        ),
        (
            Backend::Postgres,
            7,
            "df37621a32310cc11061de740e060ae69c6841fd7ebd0b3a636ffe5ce0630ed52f471df8f6bfe1b94c2b87904d1acfc3",
        ),
    ];
    for backend in [Backend::Sqlite, Backend::Postgres] {
        for m in migrations(backend) {
            let hex: String = m.checksum.iter().map(|b| format!("{b:02x}")).collect();
            let expected = pinned
                .iter()
                .find(|(b, v, _)| *b == backend && *v == m.version)
                .map(|(_, _, sum)| *sum);
            assert_eq!(
                Some(hex.as_str()),
                expected,
                "{backend:?} migration {} differs from the released one: revert it and add a new migration",
                m.version
            );
        }
    }
}

/// Runs `async fn name(backend: Backend)` on SQLite and on PostgreSQL, as `name::sqlite` and
/// `name::postgres`.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await
            }
        }
    )* };
}

on_both!(
    an_edited_migration_stops_the_migrator,
    a_database_of_the_old_runner_upgrades_in_place,
    the_old_runners_versions_are_bridged_and_the_rest_run,
    new_and_upgraded_databases_have_the_same_schema,
);

/// sqlx's checksum check at run time: a database refuses a released migration whose file
/// changed, on a new database as on one the old runner made (the bridge recorded the files'
/// checksums), and still opens with the files as released.
async fn an_edited_migration_stops_the_migrator(backend: Backend) {
    let db = match backend {
        Backend::Sqlite => TestStore::sqlite().await,
        Backend::Postgres => TestStore::postgres().await,
    };
    let err = run_edited(&db.store, 6).await;
    assert!(
        matches!(err, Some(MigrateError::VersionMismatch(6))),
        "{err:?}"
    );
    let old = old_database(backend, 6).await;
    Store::open(&old.url).await.expect("upgrade");
    let err = run_edited(&old.store, 1).await;
    assert!(
        matches!(err, Some(MigrateError::VersionMismatch(1))),
        "a bridged migration is checked too: {err:?}"
    );
    Store::open(&old.url)
        .await
        .expect("the released files still open it");
}

/// The last migration the old runner ran (the migrator replaced it with migration 6).
const OLD_RUNNER_LAST: i64 = 6;

/// A database made by the last release of the old runner, with rows in it: the open records its
/// migrations in `_sqlx_migrations` (none is run again), runs the newer ones, keeps its rows and
/// the old table, and a second open changes nothing.
async fn a_database_of_the_old_runner_upgrades_in_place(backend: Backend) {
    let db = old_database(backend, OLD_RUNNER_LAST).await;
    let outcome = |event: &str, result: OutcomeResult, finished_at_ms| Outcome {
        event_id: event.into(),
        target: "t1".into(),
        tenant: "acme".into(),
        subject_id: "u1".into(),
        result: result as i32,
        attempt: 1,
        finished_at_ms,
        ..Default::default()
    };
    let held = HeldEvent {
        delivery: Some(scimrelay_proto::v1::Delivery {
            target: "t1".into(),
            ..Default::default()
        }),
        held_at_ms: 5,
        ..Default::default()
    };
    db.store
        .write(&[
            Record::Outcome(outcome("e1", OutcomeResult::Succeeded, 10)),
            Record::Outcome(outcome("e1", OutcomeResult::Superseded, 11)),
            Record::Outcome(outcome("e2", OutcomeResult::Failed, 12)),
            Record::Held(Box::new(held)),
        ])
        .await
        .expect("rows of the old runner's database");
    let old = old_rows(&db.store).await;
    assert_eq!(
        old.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        versions(backend)
            .into_iter()
            .filter(|v| *v <= OLD_RUNNER_LAST)
            .collect::<Vec<_>>()
    );

    let store = Store::open(&db.url).await.expect("upgrade in place");
    let all = OutcomeFilter {
        include_duplicates: true,
        ..Default::default()
    };
    let rows = store.list(&all, 0, 100, false).await.expect("history");
    assert_eq!(rows.len(), 3, "every outcome kept");
    assert_eq!(rows.iter().filter(|r| r.duplicate).count(), 1);
    assert_eq!(store.held("t1", 0, 10).await.expect("held").len(), 1);
    let recorded = sqlx_rows(&store).await;
    let expected: Vec<(i64, String, Vec<u8>, bool, bool)> = migrations(backend)
        .into_iter()
        .map(|m| {
            let bridged = m.version <= OLD_RUNNER_LAST;
            (
                m.version,
                m.description.into(),
                m.checksum.into(),
                true,
                bridged,
            )
        })
        .collect();
    assert_eq!(
        recorded
            .iter()
            .map(|(v, d, c, s, _, t)| (*v, d.clone(), c.clone(), *s, *t == -1))
            .collect::<Vec<_>>(),
        expected,
        "every migration recorded as applied (execution time -1: the old runner's, bridged)"
    );
    assert_eq!(old_rows(&store).await, old, "schema_migrations is kept");

    let again = Store::open(&db.url).await.expect("second open");
    assert_eq!(
        sqlx_rows(&again).await,
        recorded,
        "the second open is a no-op"
    );
    assert_eq!(old_rows(&again).await, old);
    assert_eq!(
        again.list(&all, 0, 100, false).await.expect("again").len(),
        3
    );
}

/// A database the old runner left at version 3 (an older release): the open records 1–3 as the
/// old runner applied them and the migrator runs the rest.
async fn the_old_runners_versions_are_bridged_and_the_rest_run(backend: Backend) {
    let db = old_database(backend, 3).await;
    Store::open(&db.url).await.expect("upgrade");
    let recorded = sqlx_rows(&db.store).await;
    assert_eq!(
        recorded.iter().map(|r| r.0).collect::<Vec<_>>(),
        versions(backend)
    );
    for (version, _, _, success, _, execution_time) in &recorded {
        assert!(success);
        assert_eq!(
            *execution_time == -1,
            *version <= 3,
            "version {version}: bridged when the old runner applied it, run otherwise"
        );
    }
}

/// A new database and databases the old runner left at each of its versions, once opened, have
/// the same tables, columns, indexes and constraints.
async fn new_and_upgraded_databases_have_the_same_schema(backend: Backend) {
    let new = match backend {
        Backend::Sqlite => TestStore::sqlite().await,
        Backend::Postgres => TestStore::postgres().await,
    };
    let expected = schema(&new.store).await;
    for last in versions(backend)
        .into_iter()
        .filter(|v| *v <= OLD_RUNNER_LAST)
    {
        let old = old_database(backend, last).await;
        Store::open(&old.url).await.expect("upgrade");
        assert_eq!(
            schema(&old.store).await,
            expected,
            "a database the old runner left at version {last}"
        );
    }
}

/// Replicas opening one PostgreSQL database at once, new or made by the old runner: every open
/// succeeds and each migration is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_opening_at_once_bridge_and_migrate_in_turn() {
    for last in [0, 3, 6] {
        let db = match last {
            0 => TestStore::unmigrated(Backend::Postgres).await,
            _ => old_database(Backend::Postgres, last).await,
        };
        let opens = (0..4).map(|_| Store::open(&db.url));
        for opened in futures::future::join_all(opens).await {
            opened.unwrap_or_else(|e| panic!("a replica of a database at {last}: {e}"));
        }
        let recorded = sqlx_rows(&db.store).await;
        assert_eq!(
            recorded.iter().map(|r| r.0).collect::<Vec<_>>(),
            versions(Backend::Postgres),
            "a database the old runner left at version {last}"
        );
    }
}
