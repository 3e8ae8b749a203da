//! Batched writes of outcomes and held events ([`Store::write`]).
//!
//! **Writes are batched**: the consumer hands over hundreds of outcomes at once and they are
//! written in one transaction. Writers are serialized (a process-wide mutex, plus a transaction
//! advisory lock on PostgreSQL so several replicas take turns), which makes `seq` grow in commit
//! order: a reader that has seen `seq = n` has seen every outcome below it. That is what lets
//! `WatchOutcomes` resume from a cursor with no gap.
//!
//! **Idempotent**: an outcome delivered twice (the service crashed after writing, before acking)
//! is written once: rows are unique on (tenant, event, target, result, attempt, finish time) and
//! a conflicting insert does nothing.
//!
//! **One terminal outcome per (tenant, event, target)** (event ids are unique per tenant): the
//! first terminal outcome recorded for an (event, target) is *the* terminal outcome (table
//! `terminals`). A later one — a connector redelivery after a crash producing `superseded` or a
//! second `succeeded` — is kept in the history with `duplicate = 1` and counts nowhere.
//! Replaying a dead letter re-opens its (event, target) ([`Record::Reopen`]) so the replayed
//! copy's outcome becomes terminal.
//!
//! The batch is written by macros rather than functions: the two backends' transactions are
//! different types, and each macro expands once per backend inside [`Store::write`].

use std::collections::BTreeMap;

use prost::Message;

use scimrelay_proto::v1::{HeldEvent, Outcome, OutcomeResult};

use super::{PG_WRITE_LOCK, Pool, Store, StoreError, held_key, is_terminal, now_ms};

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

/// What a batch has done so far, and the totals it writes at its end.
#[derive(Default)]
struct Tally {
    /// What the caller is told.
    written: Written,
    /// The highest seq written, for watchers.
    max_seq: i64,
    /// New terminal outcomes per (target, result), added to `target_counts` at the end.
    counts: BTreeMap<(String, i64), i64>,
    /// The provider of each target written to, for `targets` at the end.
    providers: BTreeMap<String, String>,
}

impl Tally {
    /// Counts an outcome newly stored under `seq`.
    fn inserted(&mut self, seq: i64, o: &Outcome) {
        self.written.inserted += 1;
        self.max_seq = self.max_seq.max(seq);
        self.providers.insert(o.target.clone(), o.provider.clone());
    }

    /// Counts the terminal outcome of an (event, target) in its target's totals.
    fn terminal(&mut self, o: &Outcome) {
        *self
            .counts
            .entry((o.target.clone(), i64::from(o.result)))
            .or_default() += 1;
    }
}

/// Writes outcome `$o` inside the open transaction `$tx`: the row (nothing when it is already
/// stored), and for a terminal outcome its place in `terminals` or its `duplicate` flag.
macro_rules! write_outcome {
    ($tx:ident, $o:expr, $now:expr, $tally:expr) => {{
        let o: &Outcome = $o;
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
        .bind($now)
        .bind(i64::try_from(o.latency_ms).unwrap_or(i64::MAX))
        .bind(o.encode_to_vec())
        .bind(&o.tenant)
        .fetch_optional(&mut *$tx)
        .await?;
        match seq {
            None => $tally.written.ignored += 1,
            Some(seq) => {
                $tally.inserted(seq, o);
                if is_terminal(o.result) {
                    // An outcome without an event id (an undecodable message) is its own event.
                    let key = if o.event_id.is_empty() {
                        format!("#{seq}")
                    } else {
                        o.event_id.clone()
                    };
                    let first = sqlx::query(
                        "INSERT INTO terminals (tenant, event_id, target, seq) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (tenant, event_id, target) DO NOTHING",
                    )
                    .bind(&o.tenant)
                    .bind(&key)
                    .bind(&o.target)
                    .bind(seq)
                    .execute(&mut *$tx)
                    .await?
                    .rows_affected()
                        == 1;
                    if first {
                        $tally.terminal(o);
                    } else {
                        $tally.written.duplicates += 1;
                        sqlx::query("UPDATE outcomes SET duplicate = 1 WHERE seq = $1")
                            .bind(seq)
                            .execute(&mut *$tx)
                            .await?;
                    }
                }
            }
        }
    }};
}

/// Applies a record other than an outcome (held, unheld, reopened) inside the open transaction
/// `$tx`.
macro_rules! write_other {
    ($tx:ident, $item:expr) => {{
        match $item {
            // Outcomes are written by `write_outcome!`.
            Record::Outcome(_) => {}
            Record::Held(h) => {
                let (tenant, event_id, target) = held_key(h);
                let mut stored: HeldEvent = (**h).clone();
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
            Record::Unhold {
                tenant,
                event_id,
                target,
            } => {
                sqlx::query("DELETE FROM held WHERE tenant = $1 AND event_id = $2 AND target = $3")
                    .bind(tenant)
                    .bind(event_id)
                    .bind(target)
                    .execute(&mut *$tx)
                    .await?;
            }
            Record::Reopen {
                tenant,
                event_id,
                target,
            } => {
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
    }};
}

/// Writes a batch's totals inside the open transaction `$tx`: its targets' counts of terminal
/// outcomes and their provider and last outcome time.
macro_rules! write_totals {
    ($tx:ident, $tally:expr, $now:expr) => {{
        for ((target, result), n) in &$tally.counts {
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
        for (target, provider) in &$tally.providers {
            sqlx::query(
                "INSERT INTO targets (target, provider, last_outcome_at_ms) VALUES ($1, $2, $3) \
                 ON CONFLICT (target) DO UPDATE SET provider = excluded.provider, last_outcome_at_ms = excluded.last_outcome_at_ms",
            )
            .bind(target)
            .bind(provider)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}

/// Writes a batch inside the open transaction `$tx`, in order, then its totals; evaluates to
/// `(Written, u64)` where the u64 is the highest seq written.
macro_rules! write_batch {
    ($tx:ident, $items:expr, $now:expr) => {{
        let now: i64 = $now;
        let mut tally = Tally::default();
        for item in $items {
            match item {
                Record::Outcome(o) => write_outcome!($tx, o, now, tally),
                other => write_other!($tx, other),
            }
        }
        write_totals!($tx, tally, now);
        (
            tally.written,
            u64::try_from(tally.max_seq).unwrap_or_default(),
        )
    }};
}

impl Store {
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
                let r = write_batch!(tx, items, now_ms());
                tx.commit().await?;
                r
            }
            Pool::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_WRITE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                let r = write_batch!(tx, items, now_ms());
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
}
