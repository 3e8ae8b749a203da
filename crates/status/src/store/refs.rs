//! References of a subject to users not at its target yet (table `refs`): a group's members, a
//! user's manager (docs/design.md, "References").
//!
//! A successful converge that knows its references replaces the subject's rows (kept ones keep
//! their `since_ms`), pending ones and dropped ones (a member whose user is not at the target
//! and will not be, with the reason); [`Store::due_references`] is the connectors' sweep: it
//! drops the pending references to users whose record converged to absent since, and answers
//! the referring subjects with a reference — pending or dropped — to a user present there now
//! (a dropped member created again is completed too), each claimed for a lease
//! (`subjects.retrigger_until_ms`, reset by the subject's next successful record) so that one
//! replica re-triggers it.

use scimrelay_proto::v1::{PendingReference, SubjectKey};

use super::{Backend, Pool, Store, StoreError, now_ms};

/// Why a reference left the pending list: its user's record converged to absent.
pub const DROPPED_ABSENT: &str = "the user is not at the target and will not be: deleted at the platform, or never created there";

/// The subject's recorded references, pending and dropped.
pub(super) const SELECT_REFS_OF: &str = "SELECT ref_kind, user_id, since_ms, dropped FROM refs \
     WHERE target = $1 AND tenant = $2 AND referrer_kind = $3 AND referrer_id = $4 \
     ORDER BY ref_kind, user_id";

pub(super) const DELETE_REFS_OF: &str = "DELETE FROM refs WHERE target = $1 AND tenant = $2 \
     AND referrer_kind = $3 AND referrer_id = $4";

pub(super) const INSERT_REF: &str = "INSERT INTO refs (target, tenant, referrer_kind, \
     referrer_id, ref_kind, user_id, since_ms, dropped) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (target, tenant, referrer_kind, referrer_id, ref_kind, user_id) DO NOTHING";

const DROP_ABSENT: &str = "UPDATE refs SET dropped = $2 WHERE target = $1 AND dropped = '' \
     AND EXISTS (SELECT 1 FROM subjects u WHERE u.target = refs.target \
       AND u.tenant = refs.tenant AND u.subject_kind = 1 AND u.subject_id = refs.user_id \
       AND u.presence = 3)";

const DUE: &str = "SELECT DISTINCT r.tenant, r.referrer_kind, r.referrer_id FROM refs r \
     JOIN subjects u ON u.target = r.target AND u.tenant = r.tenant AND u.subject_kind = 1 \
       AND u.subject_id = r.user_id \
     JOIN subjects g ON g.target = r.target AND g.tenant = r.tenant \
       AND g.subject_kind = r.referrer_kind AND g.subject_id = r.referrer_id \
     WHERE r.target = $1 AND u.presence IN (1, 2) \
       AND g.retrigger_until_ms <= $2 AND g.applied_version = g.desired_version \
     ORDER BY r.tenant, r.referrer_kind, r.referrer_id LIMIT $3";

/// Leases one due subject, only if no other sweep leased it since it was read (the answer's
/// rows decide who re-triggers it).
const LEASE: &str = "UPDATE subjects SET retrigger_until_ms = $5 WHERE target = $1 \
     AND tenant = $2 AND subject_kind = $3 AND subject_id = $4 AND retrigger_until_ms <= $6";

const SUMMARY: &str = "SELECT COUNT(*), COALESCE(MIN(since_ms), 0) FROM refs \
     WHERE target = $1 AND dropped = ''";

/// A recorded reference row: kind, user, since, dropped reason.
pub(super) type RefRow = (i64, String, i64, String);

/// A row as the API shows it (`stale` is the caller's to decide).
pub fn to_reference((kind, user_id, since_ms, dropped): RefRow) -> PendingReference {
    PendingReference {
        user_id,
        kind: i32::try_from(kind).unwrap_or_default(),
        since_ms,
        stale: false,
        dropped,
    }
}

impl Store {
    /// The connectors' sweep of `target` (see the module docs): references to users that will
    /// never be there are dropped, and up to `limit` referring subjects whose references point
    /// at a user present there now are answered and leased for `lease_ms`.
    pub async fn due_references(
        &self,
        target: &str,
        lease_ms: u64,
        limit: u32,
    ) -> Result<Vec<SubjectKey>, StoreError> {
        let _writer = match self.backend() {
            Backend::Sqlite => Some(self.write.lock().await),
            Backend::Postgres => None,
        };
        let now = now_ms();
        let until = now.saturating_add(i64::try_from(lease_ms).unwrap_or(i64::MAX));
        let limit = i64::from(if limit == 0 { 1000 } else { limit.min(1000) });
        // Two transactions, each touching one table, so a sweep never holds a row of `refs`
        // while it waits for one of `subjects` (a converge record takes them the other way
        // round): no lock cycle on PostgreSQL.
        let rows: Vec<(String, i64, String)> = on_pool!(self, |pool| {
            sqlx::query(DROP_ABSENT)
                .bind(target)
                .bind(DROPPED_ABSENT)
                .execute(pool)
                .await?;
            let mut tx = pool.begin().await?;
            let due: Vec<(String, i64, String)> = sqlx::query_as(DUE)
                .bind(target)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?;
            let mut leased = Vec::with_capacity(due.len());
            for (tenant, kind, id) in due {
                let won = sqlx::query(LEASE)
                    .bind(target)
                    .bind(&tenant)
                    .bind(kind)
                    .bind(&id)
                    .bind(until)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if won {
                    leased.push((tenant, kind, id));
                }
            }
            tx.commit().await?;
            Ok::<_, StoreError>(leased)
        })?;
        Ok(rows
            .into_iter()
            .map(|(tenant, kind, subject_id)| SubjectKey {
                target: target.to_owned(),
                tenant,
                kind: i32::try_from(kind).unwrap_or_default(),
                subject_id,
            })
            .collect())
    }

    /// A subject's references, pending and dropped.
    pub async fn references_of(
        &self,
        key: &SubjectKey,
    ) -> Result<Vec<PendingReference>, StoreError> {
        let rows: Vec<RefRow> = on_pool!(self, |pool| {
            sqlx::query_as(SELECT_REFS_OF)
                .bind(&key.target)
                .bind(&key.tenant)
                .bind(i64::from(key.kind))
                .bind(&key.subject_id)
                .fetch_all(pool)
                .await?
        });
        Ok(rows.into_iter().map(to_reference).collect())
    }

    /// A target's pending references: how many, and since when the oldest (0: none).
    pub async fn pending_summary(&self, target: &str) -> Result<(u64, i64), StoreError> {
        let (n, oldest): (i64, i64) = on_pool!(self, |pool| {
            sqlx::query_as(SUMMARY).bind(target).fetch_one(pool).await?
        });
        Ok((u64::try_from(n).unwrap_or_default(), oldest))
    }
}
