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
    AdmitDeprovisionResponse, Converged, DeprovisionGuard, IdentityEvent, Presence, SubjectKey,
    SubjectKind, SubjectRecord, SubjectState, TakeEvent,
};

use super::{Backend, Pool, Store, StoreError, admits, deprovision_lock_key, now_ms, refusal};

/// An error text with its control characters replaced: a connector's error may quote a broken
/// server, and PostgreSQL's `TEXT` refuses a NUL byte (which would fail the whole batch).
fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { '\u{fffd}' } else { c })
        .collect()
}

/// The claim and fence a take by `session` leaves on a subject that `held` (its claim and
/// fence) before. An empty session (a caller that does not claim) changes nothing.
///
/// - unclaimed, or claimed by this session: this session claims it;
/// - claimed by another session, never fenced: that session ended mid-converge (or
///   recorded nothing): fenced for `fence_ms` from now, the claim kept; claimed by
///   [`UNANSWERED_CLAIM`] (a write that got no answer, given up on after the request timeout,
///   which a slow server may still apply): fenced for twice `fence_ms`;
/// - claimed by another session and fenced until a time still to come: unchanged;
/// - claimed by another session whose fence has passed: this session claims it.
fn next_claim(held: (String, i64), session: &str, fence_ms: u64, now: i64) -> (String, i64) {
    let (holder, fenced) = held;
    if session.is_empty() {
        return (holder, fenced);
    }
    if holder.is_empty() || holder == session {
        return (session.to_owned(), 0);
    }
    if fenced == 0 {
        let fence_ms = if holder == UNANSWERED_CLAIM {
            fence_ms.saturating_mul(2)
        } else {
            fence_ms
        };
        let until = now.saturating_add(i64::try_from(fence_ms).unwrap_or(i64::MAX));
        return (holder, until);
    }
    if fenced > now {
        return (holder, fenced);
    }
    (session.to_owned(), 0)
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

/// Columns of a record as read back (see [`RecordRow`]).
const SELECT_RECORD: &str = "SELECT desired_version, desired_event_id, desired, applied_version, \
     applied_event_id, applied, remote_id, fingerprint, presence, members, last_error, updated_at_ms, \
     fenced_until_ms \
     FROM subjects WHERE target = $1 AND tenant = $2 AND subject_kind = $3 AND subject_id = $4";

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

/// Records one taken event inside the transaction `$tx` (see [`Store::take_events`]).
macro_rules! take_one {
    ($tx:ident, $key:expr, $item:expr, $now:expr) => {{
        let key: &SubjectKey = $key;
        let item: &TakeEvent = $item;
        if let (false, Some(event)) = (item.read_only, item.event.as_ref()) {
            sqlx::query(
                "INSERT INTO subjects (target, tenant, subject_kind, subject_id, desired_version, \
                 desired_event_id, desired, desired_at_ms, updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
                 ON CONFLICT (target, tenant, subject_kind, subject_id) DO UPDATE SET \
                   desired_version = excluded.desired_version, desired_event_id = excluded.desired_event_id, \
                   desired = excluded.desired, desired_at_ms = excluded.desired_at_ms, \
                   updated_at_ms = excluded.updated_at_ms \
                 WHERE excluded.desired_version > subjects.desired_version",
            )
            .bind(&key.target)
            .bind(&key.tenant)
            .bind(i64::from(key.kind))
            .bind(&key.subject_id)
            .bind(version_to_db(event.version))
            .bind(&event.id)
            .bind(event.encode_to_vec())
            .bind($now)
            .execute(&mut *$tx)
            .await?;
            if item.invalidate {
                sqlx::query(
                    "UPDATE subjects SET fingerprint = 0, members = NULL WHERE target = $1 \
                     AND tenant = $2 AND subject_kind = $3 AND subject_id = $4 AND applied_version < $5",
                )
                .bind(&key.target)
                .bind(&key.tenant)
                .bind(i64::from(key.kind))
                .bind(&key.subject_id)
                .bind(version_to_db(event.version))
                .execute(&mut *$tx)
                .await?;
            }
            // Read after the upsert, which locks the row (PostgreSQL), so two sessions taking one
            // subject at once see each other's claim.
            let held: Option<(String, i64)> = sqlx::query_as(
                "SELECT claim, fenced_until_ms FROM subjects WHERE target = $1 AND tenant = $2 \
                 AND subject_kind = $3 AND subject_id = $4",
            )
            .bind(&key.target)
            .bind(&key.tenant)
            .bind(i64::from(key.kind))
            .bind(&key.subject_id)
            .fetch_optional(&mut *$tx)
            .await?;
            let held = held.unwrap_or_default();
            let next = next_claim(held.clone(), &item.session, item.fence_ms, $now);
            if next != held {
                let (claim, fenced) = next;
                sqlx::query(
                "UPDATE subjects SET claim = $5, fenced_until_ms = $6 WHERE target = $1 \
                 AND tenant = $2 AND subject_kind = $3 AND subject_id = $4",
            )
            .bind(&key.target)
            .bind(&key.tenant)
            .bind(i64::from(key.kind))
            .bind(&key.subject_id)
                .bind(claim)
                .bind(fenced)
                .execute(&mut *$tx)
                .await?;
            }
        }
        let row = select_record!(&mut *$tx, key);
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

/// Records one converge inside the transaction `$tx`; evaluates to whether it changed the row
/// (see [`Store::record_converged`]).
macro_rules! record_one {
    ($tx:ident, $key:expr, $c:expr, $now:expr) => {{
        let key: &SubjectKey = $key;
        let c: &Converged = $c;
        if !c.session.is_empty() {
            sqlx::query(
                "UPDATE subjects SET claim = $6 WHERE target = $1 AND tenant = $2 \
                 AND subject_kind = $3 AND subject_id = $4 AND claim = $5",
            )
            .bind(&key.target)
            .bind(&key.tenant)
            .bind(i64::from(key.kind))
            .bind(&key.subject_id)
            .bind(&c.session)
            .bind(if c.unanswered { UNANSWERED_CLAIM } else { "" })
            .execute(&mut *$tx)
            .await?;
        }
        let changed = if c.release_only {
            0
        } else if c.succeeded {
            let members = c.members_known.then(|| {
                Members {
                    ids: c.members.clone(),
                }
                .encode_to_vec()
            });
            let applied = c.applied.as_ref().map(Message::encode_to_vec);
            sqlx::query(
                "INSERT INTO subjects (target, tenant, subject_kind, subject_id, desired_version, \
                 desired_event_id, desired, desired_at_ms, applied_version, applied_event_id, applied, \
                 applied_at_ms, remote_id, fingerprint, presence, members, last_operation, last_error, \
                 updated_at_ms) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $5, $6, $7, $8, $9, $10, $11, $12, $13, '', $8) \
                 ON CONFLICT (target, tenant, subject_kind, subject_id) DO UPDATE SET \
                   applied_version = excluded.applied_version, applied_event_id = excluded.applied_event_id, \
                   applied = excluded.applied, applied_at_ms = excluded.applied_at_ms, \
                   remote_id = excluded.remote_id, fingerprint = excluded.fingerprint, \
                   presence = excluded.presence, members = excluded.members, \
                   last_operation = excluded.last_operation, last_error = '', \
                   updated_at_ms = excluded.updated_at_ms \
                 WHERE excluded.applied_version >= subjects.applied_version",
            )
            .bind(&key.target)
            .bind(&key.tenant)
            .bind(i64::from(key.kind))
            .bind(&key.subject_id)
            .bind(version_to_db(c.version))
            .bind(&c.event_id)
            .bind(applied)
            .bind($now)
            .bind(&c.remote_id)
            .bind(fingerprint_to_db(c.fingerprint))
            .bind(i64::from(c.presence))
            .bind(members)
            .bind(&c.operation)
            .execute(&mut *$tx)
            .await?
            .rows_affected()
        } else {
            sqlx::query(
                "UPDATE subjects SET last_error = $5, updated_at_ms = $6, \
                   fingerprint = CASE WHEN applied_version < $7 THEN 0 ELSE fingerprint END, \
                   members = CASE WHEN applied_version < $7 THEN NULL ELSE members END \
                 WHERE target = $1 AND tenant = $2 AND subject_kind = $3 AND subject_id = $4",
            )
            .bind(&key.target)
            .bind(&key.tenant)
            .bind(i64::from(key.kind))
            .bind(&key.subject_id)
            .bind(printable(&c.error))
            .bind($now)
            .bind(version_to_db(c.version))
            .execute(&mut *$tx)
            .await?
            .rows_affected()
        };
        changed == 1
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
                    }
                },
            )
            .collect())
    }

    /// The mass-deprovisioning guard (see the module doc of [`super`]): admits deprovisioning
    /// user `subject_id` of `tenant` at `target` and counts it in the target's window, or
    /// answers why it must be held. Users are counted by the state of record: present (active
    /// or not), plus those that left the target within the window. `now` is the wall clock in
    /// ms since the epoch ([`now_ms`]; tests move it). Atomic per target across replicas.
    pub async fn admit_deprovision(
        &self,
        target: &str,
        tenant: &str,
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
                 AND (presence IN ($3, $4) OR (presence = $5 AND applied_at_ms >= $6))",
            )
            .bind(target)
            .bind(SubjectKind::User as i64)
            .bind(Presence::PresentActive as i64)
            .bind(Presence::PresentInactive as i64)
            .bind(Presence::Absent as i64)
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
                "SELECT admitted_at_ms FROM deprovisions WHERE target = $1 AND tenant = $2 \
                 AND subject_id = $3",
            )
            .bind(target)
            .bind(tenant)
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
                        "INSERT INTO deprovisions (target, tenant, subject_id, event_id, admitted_at_ms) \
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target, tenant, subject_id) DO UPDATE SET \
                         event_id = excluded.event_id, admitted_at_ms = excluded.admitted_at_ms",
                    )
                    .bind(target)
                    .bind(tenant)
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

#[cfg(test)]
mod claim_tests {
    use super::next_claim;

    fn held(holder: &str, fenced: i64) -> (String, i64) {
        (holder.to_owned(), fenced)
    }

    #[test]
    fn a_free_or_own_subject_is_claimed_unfenced() {
        assert_eq!(next_claim(held("", 0), "b", 30_000, 1_000), held("b", 0));
        assert_eq!(next_claim(held("b", 0), "b", 30_000, 1_000), held("b", 0));
    }

    #[test]
    fn another_sessions_claim_fences_once_then_passes() {
        // First take after the other session ended: fenced for the request timeout.
        assert_eq!(
            next_claim(held("a", 0), "b", 30_000, 1_000),
            held("a", 31_000)
        );
        // Taken again within the fence: still fenced, not pushed further.
        assert_eq!(
            next_claim(held("a", 31_000), "b", 30_000, 20_000),
            held("a", 31_000)
        );
        // A third session inside the fence waits for the same end.
        assert_eq!(
            next_claim(held("a", 31_000), "c", 30_000, 20_000),
            held("a", 31_000)
        );
        // The fence has passed: claimed, unfenced.
        assert_eq!(
            next_claim(held("a", 31_000), "b", 30_000, 31_000),
            held("b", 0)
        );
    }

    #[test]
    fn a_caller_without_a_session_changes_nothing() {
        assert_eq!(next_claim(held("a", 0), "", 30_000, 1_000), held("a", 0));
        assert_eq!(
            next_claim(held("a", 9_000), "", 30_000, 1_000),
            held("a", 9_000)
        );
    }
}
