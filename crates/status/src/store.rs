//! The outcome store and the state of record: SQLite by default (one file, no server),
//! PostgreSQL by URL for production (several replicas on one database).
//!
//! Both backends run the same SQL (portable subset, `$N` parameters, every integer an `i64`);
//! only the schema migrations differ. The `on_pool!` macro expands each query once per backend.
//! One module per concern, each explaining its invariants:
//!
//! - [`migrate`]: the schema, as `.sql` files per backend run by sqlx's migrator, and the bridge
//!   from databases made before that.
//! - [`write`]: batched, idempotent writes of outcomes and held events; `seq` grows in commit
//!   order; one terminal outcome per (tenant, event, target).
//! - [`query`]: the outcome history and held events; [`targets`]: reports and target summaries.
//! - [`record`]: the state of record (desired and applied state per subject, claims, fences);
//!   [`refs`]: references to users not at a target yet, and the sweep that completes them.
//! - [`guard`]: the mass-deprovisioning guard.
//! - [`retention`]: pruning history; state is kept.
//!
//! **Tenants**: every outcome row carries the identity-platform tenant of its event (migration
//! 4), and the state of record, terminal outcomes, held events and the guard's admissions are
//! keyed by it (migration 5), so listings ([`OutcomeFilter::tenant`]) and subject lookups can be
//! limited to tenants; the gRPC layer uses that to keep a key scoped to tenants to its own.
//! Outcome rows written before migration 4 have the tenant `''`: only keys for all tenants see
//! them (state-of-record and held rows get theirs from their protobuf bodies at start).
//!
//! [`OutcomeFilter::tenant`]: scimrelay_proto::v1::OutcomeFilter::tenant

use std::str::FromStr;
use std::sync::Arc;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use scimrelay_proto::v1::{HeldEvent, OutcomeResult};

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

/// Key of the PostgreSQL advisory lock that serializes writers across replicas (any constant;
/// "scimrelay" in ASCII, truncated).
const PG_WRITE_LOCK: i64 = 0x7363_696d_7265_6c61;

/// A pool of the backend's connections.
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

// The modules come after `on_pool!`: a `macro_rules!` macro is visible only below it.
mod guard;
mod migrate;
mod query;
mod record;
pub mod refs;
mod retention;
mod targets;
mod write;

pub use record::KEY_LIMIT;
pub use scimrelay_core::now_ms;
pub use targets::LATENCY_SAMPLES;
pub use write::{Record, Written};

/// The store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    /// The database.
    pool: Pool,
    /// Serializes writers in this process (see [`write`]: seq grows in commit order).
    write: Arc<tokio::sync::Mutex<()>>,
    /// The highest seq committed by this process, for watchers to wake up without polling.
    last_seq: Arc<tokio::sync::watch::Sender<u64>>,
}

/// Whether an outcome result ends its (event, target).
pub fn is_terminal(result: i32) -> bool {
    result != OutcomeResult::Unspecified as i32
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

impl Store {
    /// Opens the database at `url` and applies pending migrations: `postgres://…` (or
    /// `postgresql://…`) for PostgreSQL; `sqlite://path`, a plain path or `sqlite::memory:` for
    /// SQLite (the file is created when missing).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let mut store = Self::connect(url).await?;
        store.migrate().await?;
        if let Pool::Sqlite(pool) = &store.pool
            && !url.contains(":memory:")
        {
            // A SQLite connection keeps the schema it read: one that read it before a migration
            // rebuilt a table can refuse a later write against the rebuilt one ("ON CONFLICT
            // clause does not match any PRIMARY KEY or UNIQUE constraint"). The service works
            // on fresh connections opened after the migrations. (An in-memory database has one
            // connection, and closing it would drop the database.)
            pool.close().await;
            store = Self::connect(url).await?;
        }
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

    /// Subscribes to "something was committed" (the highest seq written by this process).
    /// Other replicas' writes are not signalled: watchers also poll.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.last_seq.subscribe()
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
