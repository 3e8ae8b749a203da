//! The state of record: per (target, tenant, kind, subject id) the latest accepted desired
//! state, what was applied, and the subject's presence at the target (table `subjects`).
//!
//! **Why here.** A connector used to decide versions from its own memory and fall back to "never
//! seen" when this service was slow; a replica that regained a shard with old memory, or a
//! restart during an outage, applied stale versions and brought deleted users back. Versions are
//! now decided in this table, which every replica reads and writes, and a connector that cannot
//! reach it applies nothing (its message waits).
//!
//! **Writes.** [`Store::take_events`] records a message's desired state when a connector takes
//! it: the row's desired version only grows (a stale copy never replaces a newer desired state).
//! [`Store::record_converged`] records what a converge applied — the version, the remote id, a
//! fingerprint of the state the provider holds, the presence and a group's applied member set —
//! and never moves the applied version backwards; a failed attempt instead invalidates the
//! fingerprint and the member set (a chunked change may have stopped half-way), unless a version
//! at least as new was applied since. Both are one transaction per batch, rows handled in key
//! order (two PostgreSQL transactions touching the same rows never wait on each other in a
//! cycle). On SQLite they share the process's write mutex with outcome batches; on PostgreSQL row
//! locks suffice (the global advisory lock orders outcome sequence numbers, which these writes
//! do not touch).
//!
//! **Claims and fences.** Taking a subject claims it for the taking connector session until
//! that session records what it did. A take that finds another session's claim knows that
//! session ended mid-converge (single active consumer gave its shard away): its last request
//! may still be in flight. The subject is then *fenced* for the target's request timeout —
//! every take answers `fenced_until_ms` and nothing is sent for it until then — so two sessions
//! never write one subject at once.
//!
//! **The guard** counts a target's users by presence: present (active or not), plus those
//! that left within the window.

use std::collections::BTreeMap;

use prost::Message;

use scimrelay_proto::v1::{
    Converged, IdentityEvent, PendingReference, Presence, SubjectKey, SubjectKind, SubjectRecord,
    SubjectState, TakeEvent,
};

use super::refs::{self, RefRow};
use super::{Backend, Pool, Store, StoreError, now_ms};

/// An error text with its control characters replaced: a connector's error may quote a broken
/// server, and PostgreSQL's `TEXT` refuses a NUL byte (which would fail the whole batch).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The holder of a subject's claim after a write that got no answer (`Converged.unanswered`):
/// no session, so the next take, whoever makes it, fences the subject.
pub const UNANSWERED_CLAIM: &str = "(unanswered write)";

/// Most items in one state-of-record call (TakeEvents, RecordConverged, GetRecords).
pub const KEY_LIMIT: usize = 1000;

/// A group's applied member ids, as stored (`subjects.members`): protobuf, so any id round-trips.
#[derive(Clone, PartialEq, prost::Message)]
struct Members {
    #[prost(string, repeated, tag = "1")]
    ids: Vec<String>,
}

/// The columns of a record as read back (see [`RecordRow`]).
macro_rules! record_columns {
    () => {
        "desired_version, desired_event_id, desired, applied_version, applied_event_id, applied, \
         remote_id, fingerprint, presence, members, last_error, updated_at_ms, fenced_until_ms"
    };
}

/// Reads one record.
const SELECT_RECORD: &str = concat!(
    "SELECT ",
    record_columns!(),
    " FROM subjects WHERE target = $1 AND tenant = $2 AND subject_kind = $3 AND subject_id = $4"
);

/// Records a taken event and answers the record after the write, in one statement (the status
/// service's busiest write: one per message a connector takes).
///
/// - The desired state is replaced only by a higher version (`$5`); a stale copy changes none
///   of the desired columns.
/// - `$9` (invalidate) drops the fingerprint and the member set unless a version at least as new
///   was applied.
/// - The claim and fence (`$10` is the taking session, `$11`/`$12` the end of a fence of one /
///   two fence lengths from now, `$8` now):
///   - an empty session (a caller that does not claim) changes neither;
///   - a new row, an unclaimed one, or one claimed by this session: this session claims it,
///     unfenced;
///   - claimed by another session, never fenced: that session ended mid-converge (or recorded
///     nothing): fenced for one fence length from now, the claim kept; claimed by
///     [`UNANSWERED_CLAIM`] (a write that got no answer, given up on after the request timeout,
///     which a slow server may still apply): fenced for two;
///   - claimed by another session and fenced until a time still to come: unchanged;
///   - claimed by another session whose fence has passed: this session claims it, unfenced.
///
/// Every right-hand side reads the row as it was before the statement (SQL evaluates SET
/// against the old row, in PostgreSQL and SQLite alike).
const TAKE_ONE: &str = concat!(
    "INSERT INTO subjects (target, tenant, subject_kind, subject_id, desired_version, \
     desired_event_id, desired, desired_at_ms, updated_at_ms, claim, fenced_until_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $10, 0) \
     ON CONFLICT (target, tenant, subject_kind, subject_id) DO UPDATE SET \
       desired_version = CASE WHEN $5 > subjects.desired_version THEN $5 \
         ELSE subjects.desired_version END, \
       desired_event_id = CASE WHEN $5 > subjects.desired_version THEN $6 \
         ELSE subjects.desired_event_id END, \
       desired = CASE WHEN $5 > subjects.desired_version THEN $7 ELSE subjects.desired END, \
       desired_at_ms = CASE WHEN $5 > subjects.desired_version THEN $8 \
         ELSE subjects.desired_at_ms END, \
       updated_at_ms = CASE WHEN $5 > subjects.desired_version THEN $8 \
         ELSE subjects.updated_at_ms END, \
       fingerprint = CASE WHEN $9 AND subjects.applied_version < $5 THEN 0 \
         ELSE subjects.fingerprint END, \
       members = CASE WHEN $9 AND subjects.applied_version < $5 THEN NULL \
         ELSE subjects.members END, \
       claim = CASE WHEN $10 = '' THEN subjects.claim \
         WHEN subjects.claim = '' OR subjects.claim = $10 THEN $10 \
         WHEN subjects.fenced_until_ms = 0 OR subjects.fenced_until_ms > $8 THEN subjects.claim \
         ELSE $10 END, \
       fenced_until_ms = CASE WHEN $10 = '' THEN subjects.fenced_until_ms \
         WHEN subjects.claim = '' OR subjects.claim = $10 THEN 0 \
         WHEN subjects.fenced_until_ms = 0 THEN \
           CASE WHEN subjects.claim = $13 THEN $12 ELSE $11 END \
         WHEN subjects.fenced_until_ms > $8 THEN subjects.fenced_until_ms \
         ELSE 0 END \
     RETURNING ",
    record_columns!()
);

/// desired version, desired event id, desired body, applied version, applied event id, applied
/// body, remote id, fingerprint, presence, members, last error, updated at, fenced until.
type RecordRow = (
    i64,
    String,
    Option<Vec<u8>>,
    i64,
    String,
    Option<Vec<u8>>,
    String,
    i64,
    i64,
    Option<Vec<u8>>,
    String,
    i64,
    i64,
);

/// A fingerprint as stored: the u64's bits in an i64 column.
fn fingerprint_to_db(f: u64) -> i64 {
    i64::from_ne_bytes(f.to_ne_bytes())
}

fn fingerprint_from_db(f: i64) -> u64 {
    u64::from_ne_bytes(f.to_ne_bytes())
}

fn version_to_db(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn event_from_db(what: &str, body: Option<Vec<u8>>) -> Result<Option<IdentityEvent>, StoreError> {
    body.map(|b| {
        IdentityEvent::decode(b.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("{what} event of a subject: {e}")))
    })
    .transpose()
}

/// What to include when a row becomes a [`SubjectRecord`].
#[derive(Clone, Copy)]
struct Bodies<'a> {
    /// The desired event, unless it is this event (the caller has it).
    desired_unless: Option<&'a str>,
    /// The applied event.
    applied: bool,
}

const NO_BODIES: Bodies<'static> = Bodies {
    desired_unless: None,
    applied: false,
};

fn to_record(
    key: &SubjectKey,
    row: Option<RecordRow>,
    bodies: Bodies<'_>,
) -> Result<SubjectRecord, StoreError> {
    let mut r = SubjectRecord {
        key: Some(key.clone()),
        ..Default::default()
    };
    let Some((
        desired_version,
        desired_event_id,
        desired,
        applied_version,
        applied_event_id,
        applied,
        remote_id,
        fingerprint,
        presence,
        members,
        last_error,
        updated_at_ms,
        fenced_until_ms,
    )) = row
    else {
        return Ok(r);
    };
    r.fenced_until_ms = fenced_until_ms;
    r.found = true;
    r.desired_version = u64::try_from(desired_version).unwrap_or_default();
    if bodies
        .desired_unless
        .is_some_and(|taken| taken != desired_event_id)
    {
        r.desired = event_from_db("desired", desired)?;
    }
    r.desired_event_id = desired_event_id;
    r.applied_version = u64::try_from(applied_version).unwrap_or_default();
    r.applied_event_id = applied_event_id;
    if bodies.applied {
        r.applied = event_from_db("applied", applied)?;
    }
    r.remote_id = remote_id;
    r.fingerprint = fingerprint_from_db(fingerprint);
    r.presence = i32::try_from(presence).unwrap_or_default();
    if let Some(m) = members {
        r.members_known = true;
        r.members = Members::decode(m.as_slice())
            .map_err(|e| StoreError::Corrupt(format!("members of a subject: {e}")))?
            .ids;
    }
    r.last_error = last_error;
    r.updated_at_ms = updated_at_ms;
    Ok(r)
}

/// The order in which a batch touches rows: by key, so concurrent batches lock rows in the same
/// order.
fn key_order<T>(items: &[T], key: impl Fn(&T) -> Option<&SubjectKey>) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| key(&items[i]).map(|k| (&k.target, &k.tenant, k.kind, &k.subject_id)));
    order
}

fn missing_key(i: usize) -> StoreError {
    StoreError::Invalid(format!("items[{i}].key: required"))
}

/// Reads one record inside `$conn` (`&mut *tx` or `&mut *conn`).
macro_rules! select_record {
    ($conn:expr, $key:expr) => {{
        let key: &SubjectKey = $key;
        let row: Option<RecordRow> = sqlx::query_as(SELECT_RECORD)
            .bind(&key.target)
            .bind(&key.tenant)
            .bind(i64::from(key.kind))
            .bind(&key.subject_id)
            .fetch_optional($conn)
            .await?;
        row
    }};
}

/// Records one taken event inside the transaction `$tx` (see [`Store::take_events`] and
/// [`TAKE_ONE`]).
macro_rules! take_one {
    ($tx:ident, $key:expr, $item:expr, $now:expr) => {{
        let key: &SubjectKey = $key;
        let item: &TakeEvent = $item;
        let row: Option<RecordRow> = match (item.read_only, item.event.as_ref()) {
            (false, Some(event)) => {
                let fence = i64::try_from(item.fence_ms).unwrap_or(i64::MAX);
                let unanswered = match item.unanswered_fence_ms {
                    0 => fence.saturating_mul(2),
                    ms => i64::try_from(ms).unwrap_or(i64::MAX),
                };
                Some(
                    sqlx::query_as(TAKE_ONE)
                        .bind(&key.target)
                        .bind(&key.tenant)
                        .bind(i64::from(key.kind))
                        .bind(&key.subject_id)
                        .bind(version_to_db(event.version))
                        .bind(&event.id)
                        .bind(event.encode_to_vec())
                        .bind($now)
                        .bind(item.invalidate)
                        .bind(&item.session)
                        .bind($now.saturating_add(fence))
                        .bind($now.saturating_add(unanswered))
                        .bind(UNANSWERED_CLAIM)
                        .fetch_one(&mut *$tx)
                        .await?,
                )
            }
            _ => select_record!(&mut *$tx, key),
        };
        to_record(
            key,
            row,
            Bodies {
                desired_unless: Some(item.event.as_ref().map_or("", |e| e.id.as_str())),
                applied: true,
            },
        )?
    }};
}

/// Records a successful converge in one statement, answering the applied version after it:
/// the applied columns change only when `$5` is at least the applied version (never
/// backwards); the claim held by `$14` (a session) is handed to `$15` whatever the version.
const RECORD_APPLIED: &str = "INSERT INTO subjects (target, tenant, subject_kind, subject_id, \
     desired_version, desired_event_id, desired, desired_at_ms, applied_version, applied_event_id, \
     applied, applied_at_ms, remote_id, fingerprint, presence, members, last_operation, last_error, \
     updated_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5, $6, $7, $8, $9, $10, $11, $12, $13, '', $8) \
     ON CONFLICT (target, tenant, subject_kind, subject_id) DO UPDATE SET \
       applied_version = CASE WHEN $5 >= subjects.applied_version THEN $5 \
         ELSE subjects.applied_version END, \
       applied_event_id = CASE WHEN $5 >= subjects.applied_version THEN $6 \
         ELSE subjects.applied_event_id END, \
       applied = CASE WHEN $5 >= subjects.applied_version THEN $7 ELSE subjects.applied END, \
       applied_at_ms = CASE WHEN $5 >= subjects.applied_version THEN $8 \
         ELSE subjects.applied_at_ms END, \
       remote_id = CASE WHEN $5 >= subjects.applied_version THEN $9 ELSE subjects.remote_id END, \
       fingerprint = CASE WHEN $5 >= subjects.applied_version THEN $10 \
         ELSE subjects.fingerprint END, \
       presence = CASE WHEN $5 >= subjects.applied_version THEN $11 ELSE subjects.presence END, \
       members = CASE WHEN $5 >= subjects.applied_version THEN $12 ELSE subjects.members END, \
       last_operation = CASE WHEN $5 >= subjects.applied_version THEN $13 \
         ELSE subjects.last_operation END, \
       last_error = CASE WHEN $5 >= subjects.applied_version THEN '' \
         ELSE subjects.last_error END, \
       updated_at_ms = CASE WHEN $5 >= subjects.applied_version THEN $8 \
         ELSE subjects.updated_at_ms END, \
       claim = CASE WHEN $14 <> '' AND subjects.claim = $14 THEN $15 ELSE subjects.claim END, \
       retrigger_until_ms = CASE WHEN $5 >= subjects.applied_version THEN 0 \
         ELSE subjects.retrigger_until_ms END \
     RETURNING applied_version";

/// Records a failed converge: the error, and the fingerprint and member set invalidated unless
/// a version at least as new (`$7`) was applied since; the claim held by `$8` (a session) is
/// handed to `$9`. A re-trigger's lease (see `refs`) is cut to 10 s from now: a failed
/// re-trigger is tried again by the sweep after that, not after the whole lease.
const RECORD_FAILED: &str = "UPDATE subjects SET last_error = $5, updated_at_ms = $6, \
       fingerprint = CASE WHEN applied_version < $7 THEN 0 ELSE fingerprint END, \
       members = CASE WHEN applied_version < $7 THEN NULL ELSE members END, \
       claim = CASE WHEN $8 <> '' AND claim = $8 THEN $9 ELSE claim END, \
       retrigger_until_ms = CASE WHEN retrigger_until_ms > $6 + 10000 THEN $6 + 10000 \
         ELSE retrigger_until_ms END \
     WHERE target = $1 AND tenant = $2 AND subject_kind = $3 AND subject_id = $4";

/// Releases the claim held by `$5` (a session), handing it to `$6`.
const RELEASE_CLAIM: &str = "UPDATE subjects SET claim = $6 WHERE target = $1 AND tenant = $2 \
     AND subject_kind = $3 AND subject_id = $4 AND claim = $5";

/// Replaces a subject's recorded references with `$pending` inside `$tx`: references still
/// pending keep their `since_ms`, new ones start at `$now`, the rest (completed, or dropped)
/// go.
macro_rules! replace_refs {
    ($tx:ident, $key:expr, $pending:expr, $now:expr) => {{
        let key: &SubjectKey = $key;
        let pending: &[PendingReference] = $pending;
        let before: Vec<RefRow> = sqlx::query_as(refs::SELECT_REFS_OF)
            .bind(&key.target)
            .bind(&key.tenant)
            .bind(i64::from(key.kind))
            .bind(&key.subject_id)
            .fetch_all(&mut *$tx)
            .await?;
        if !before.is_empty() {
            sqlx::query(refs::DELETE_REFS_OF)
                .bind(&key.target)
                .bind(&key.tenant)
                .bind(i64::from(key.kind))
                .bind(&key.subject_id)
                .execute(&mut *$tx)
                .await?;
        }
        for p in pending {
            let since = before
                .iter()
                .find(|(k, u, _, d)| {
                    *k == i64::from(p.kind)
                        && *u == p.user_id
                        && d.is_empty() == p.dropped.is_empty()
                })
                .map_or($now, |r| r.2);
            sqlx::query(refs::INSERT_REF)
                .bind(&key.target)
                .bind(&key.tenant)
                .bind(i64::from(key.kind))
                .bind(&key.subject_id)
                .bind(i64::from(p.kind))
                .bind(&p.user_id)
                .bind(since)
                .bind(printable(&p.dropped))
                .execute(&mut *$tx)
                .await?;
        }
    }};
}

/// Records one converge inside the transaction `$tx`, in one statement; evaluates to whether
/// it changed the row (see [`Store::record_converged`]).
macro_rules! record_one {
    ($tx:ident, $key:expr, $c:expr, $now:expr) => {{
        let key: &SubjectKey = $key;
        let c: &Converged = $c;
        // Who holds the claim after this record: nobody, or no session at all after a write
        // that got no answer (the next take fences the subject).
        let released = if c.unanswered { UNANSWERED_CLAIM } else { "" };
        if c.release_only {
            if !c.session.is_empty() {
                sqlx::query(RELEASE_CLAIM)
                    .bind(&key.target)
                    .bind(&key.tenant)
                    .bind(i64::from(key.kind))
                    .bind(&key.subject_id)
                    .bind(&c.session)
                    .bind(released)
                    .execute(&mut *$tx)
                    .await?;
            }
            false
        } else if c.succeeded {
            let members = c.members_known.then(|| {
                Members {
                    ids: c.members.clone(),
                }
                .encode_to_vec()
            });
            let applied = c.applied.as_ref().map(Message::encode_to_vec);
            let version = version_to_db(c.version);
            let (after,): (i64,) = sqlx::query_as(RECORD_APPLIED)
                .bind(&key.target)
                .bind(&key.tenant)
                .bind(i64::from(key.kind))
                .bind(&key.subject_id)
                .bind(version)
                .bind(&c.event_id)
                .bind(applied)
                .bind($now)
                .bind(&c.remote_id)
                .bind(fingerprint_to_db(c.fingerprint))
                .bind(i64::from(c.presence))
                .bind(members)
                .bind(&c.operation)
                .bind(&c.session)
                .bind(released)
                .fetch_one(&mut *$tx)
                .await?;
            // Applied iff the version now recorded is this one: an older one was replaced (or
            // the same one again); a newer one was kept.
            if after == version && c.references_known {
                replace_refs!($tx, key, &c.pending, $now);
            }
            after == version
        } else {
            sqlx::query(RECORD_FAILED)
                .bind(&key.target)
                .bind(&key.tenant)
                .bind(i64::from(key.kind))
                .bind(&key.subject_id)
                .bind(printable(&c.error))
                .bind($now)
                .bind(version_to_db(c.version))
                .bind(&c.session)
                .bind(released)
                .execute(&mut *$tx)
                .await?
                .rows_affected()
                == 1
        }
    }};
}

impl Store {
    /// Records the desired state of each taken event (kept when its version is the highest
    /// accepted for its subject; `invalidate` also drops the no-op fingerprint and the applied
    /// member set unless a version at least as new was applied since; `read_only` records
    /// nothing) and answers each subject's record, read after the write, in request order.
    /// A record carries the desired event when it is not the taken one, and the applied event.
    pub async fn take_events(&self, items: &[TakeEvent]) -> Result<Vec<SubjectRecord>, StoreError> {
        let keys = items
            .iter()
            .enumerate()
            .map(|(i, item)| item.key.as_ref().ok_or_else(|| missing_key(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let order = key_order(items, |item| item.key.as_ref());
        let writes = items.iter().any(|i| !i.read_only);
        let _writer = match (writes, self.backend()) {
            (true, Backend::Sqlite) => Some(self.write.lock().await),
            _ => None,
        };
        let now = now_ms();
        let mut out: Vec<Option<SubjectRecord>> = vec![None; items.len()];
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for &i in &order {
                out[i] = Some(take_one!(tx, keys[i], &items[i], now));
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        Ok(out.into_iter().flatten().collect())
    }

    /// Records what each converge did: a success sets the applied version, event, remote id,
    /// fingerprint, presence and member set (never moving the applied version backwards); a
    /// failure records the error and invalidates the fingerprint and the member set unless a
    /// version at least as new was applied since. Answers, per item, whether the row changed.
    pub async fn record_converged(&self, items: &[Converged]) -> Result<Vec<bool>, StoreError> {
        let keys = items
            .iter()
            .enumerate()
            .map(|(i, item)| item.key.as_ref().ok_or_else(|| missing_key(i)))
            .collect::<Result<Vec<_>, _>>()?;
        let order = key_order(items, |item| item.key.as_ref());
        let _writer = match self.backend() {
            Backend::Sqlite => Some(self.write.lock().await),
            Backend::Postgres => None,
        };
        let now = now_ms();
        let mut out = vec![false; items.len()];
        on_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            for &i in &order {
                out[i] = record_one!(tx, keys[i], &items[i], now);
            }
            tx.commit().await?;
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    }

    /// The records of `keys`, in order, without desired or applied events (`found = false`
    /// for a key nothing is recorded for).
    pub async fn records(&self, keys: &[SubjectKey]) -> Result<Vec<SubjectRecord>, StoreError> {
        let mut out = Vec::with_capacity(keys.len());
        on_pool!(self, |pool| {
            let mut conn = pool.acquire().await?;
            for key in keys {
                let row = select_record!(&mut *conn, key);
                out.push(to_record(key, row, NO_BODIES)?);
            }
            Ok::<_, StoreError>(())
        })?;
        Ok(out)
    }

    /// What every target (or one) records of a subject, limited to rows of `tenants` (`None`
    /// for every tenant), of one tenant and one kind when they are given.
    pub async fn subject(
        &self,
        subject_id: &str,
        target: &str,
        tenant: &str,
        kind: SubjectKind,
        tenants: Option<&[String]>,
    ) -> Result<Vec<SubjectState>, StoreError> {
        type Row = (
            String,
            String,
            i64,
            String,
            i64,
            i64,
            i64,
            String,
            String,
            i64,
        );
        let rows: Vec<Row> = on_pool!(self, |pool| {
            sqlx::query_as(
                "SELECT target, tenant, subject_kind, remote_id, applied_version, desired_version, \
                 presence, last_operation, last_error, updated_at_ms \
                 FROM subjects WHERE subject_id = $1 AND ($2 = '' OR target = $2) \
                 AND ($3 = '' OR tenant = $3) AND ($4 = 0 OR subject_kind = $4) \
                 ORDER BY target, tenant, subject_kind",
            )
            .bind(subject_id)
            .bind(target)
            .bind(tenant)
            .bind(i64::from(kind as i32))
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .filter(|row| tenants.is_none_or(|ts| ts.contains(&row.1)))
            .map(
                |(
                    target,
                    tenant,
                    kind,
                    remote_id,
                    applied,
                    desired,
                    presence,
                    last_operation,
                    last_error,
                    updated_at_ms,
                )| {
                    let presence = Presence::try_from(i32::try_from(presence).unwrap_or_default())
                        .unwrap_or(Presence::Unknown);
                    SubjectState {
                        target,
                        subject_id: subject_id.to_owned(),
                        subject_kind: i32::try_from(kind).unwrap_or_default(),
                        remote_id,
                        applied_version: u64::try_from(applied).unwrap_or_default(),
                        state: presence.name().to_owned(),
                        last_error,
                        updated_at_ms,
                        tenant,
                        presence: presence as i32,
                        last_operation,
                        desired_version: u64::try_from(desired).unwrap_or_default(),
                        // Filled by the gRPC layer, which knows when one is stale.
                        pending: Vec::new(),
                    }
                },
            )
            .collect())
    }

    /// Gives rows written before migration 4 (tenant `''`) the tenant of their latest outcome
    /// (ledger rows) or of their event (held events), which only the protobuf bodies hold. Runs
    /// at every open; rows it cannot place (no outcome left) keep `''` and stay visible to keys
    /// for all tenants only. Returns how many rows it placed.
    pub(super) async fn backfill_tenants(&self) -> Result<u64, StoreError> {
        let _writer = self.write.lock().await;
        on_pool!(self, |pool| {
            let mut placed = 0;
            let legacy: Vec<(String, i64, String)> = sqlx::query_as(
                "SELECT target, subject_kind, subject_id FROM subjects WHERE tenant = ''",
            )
            .fetch_all(pool)
            .await?;
            let mut tenants: BTreeMap<(String, String), String> = BTreeMap::new();
            for (target, _, subject) in &legacy {
                let body: Option<Vec<u8>> = sqlx::query_scalar(
                    "SELECT body FROM outcomes WHERE target = $1 AND subject_id = $2 \
                     ORDER BY seq DESC LIMIT 1",
                )
                .bind(target)
                .bind(subject)
                .fetch_optional(pool)
                .await?;
                let tenant = body
                    .and_then(|b| scimrelay_proto::v1::Outcome::decode(b.as_slice()).ok())
                    .map(|o| o.tenant)
                    .unwrap_or_default();
                if !tenant.is_empty() {
                    tenants.insert((target.clone(), subject.clone()), tenant);
                }
            }
            for (target, kind, subject) in &legacy {
                let Some(tenant) = tenants.get(&(target.clone(), subject.clone())) else {
                    continue;
                };
                placed += sqlx::query(
                    "UPDATE subjects SET tenant = $1 WHERE target = $2 AND tenant = '' \
                     AND subject_kind = $3 AND subject_id = $4",
                )
                .bind(tenant)
                .bind(target)
                .bind(kind)
                .bind(subject)
                .execute(pool)
                .await?
                .rows_affected();
            }
            let held: Vec<(i64, Vec<u8>)> =
                sqlx::query_as("SELECT id, body FROM held WHERE tenant = ''")
                    .fetch_all(pool)
                    .await?;
            for (id, body) in held {
                let tenant = scimrelay_proto::v1::HeldEvent::decode(body.as_slice())
                    .ok()
                    .and_then(|h| h.delivery)
                    .and_then(|d| d.event)
                    .map(|e| e.tenant)
                    .unwrap_or_default();
                if tenant.is_empty() {
                    continue;
                }
                placed += sqlx::query("UPDATE held SET tenant = $1 WHERE id = $2")
                    .bind(&tenant)
                    .bind(id)
                    .execute(pool)
                    .await?
                    .rows_affected();
            }
            Ok::<_, StoreError>(placed)
        })
    }
}
