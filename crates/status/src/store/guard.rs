//! The mass-deprovisioning guard: [`Store::admit_deprovision`] counts a target's users (users
//! the state of record holds present, plus those that left within the window) and the users
//! admitted within the window (table `deprovisions`, one row per (target, tenant, subject); rows
//! that left the window are deleted as it slides), and records an admission, in one transaction
//! serialized per target: a transaction advisory lock keyed by the target on PostgreSQL, so two
//! replicas never both admit the last slot; the write mutex and `BEGIN IMMEDIATE` on SQLite.

use scimrelay_proto::v1::{AdmitDeprovisionResponse, DeprovisionGuard, Presence, SubjectKind};

use super::{Backend, Pool, Store, StoreError};

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

impl Store {
    /// The mass-deprovisioning guard (see the module doc): admits deprovisioning
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allowance_is_the_floor_of_the_decimal_share() {
        assert_eq!(allowance(0.2, 20), 4);
        assert_eq!(allowance(0.29, 100), 29, "0.29 × 100 is 28.999… in binary");
        assert_eq!(allowance(0.1, 25), 2);
        assert_eq!(allowance(1.0, 7), 7);
        assert_eq!(allowance(0.5, 0), 0);
    }

    #[test]
    fn refusals_read_as_written() {
        let g = |max_share, window_ms| DeprovisionGuard {
            max_share,
            window_ms,
            min_users: 0,
        };
        assert_eq!(
            refusal(&g(0.1, 600_000), 200, 30),
            "30 of 200 users deprovisioned within 600 s (limit 10%)"
        );
        assert_eq!(
            refusal(&g(0.125, 1_500), 8, 1),
            "1 of 8 users deprovisioned within 1.5 s (limit 12.5%)"
        );
        assert_eq!(
            refusal(&g(0.29, 60_000), 100, 29),
            "29 of 100 users deprovisioned within 60 s (limit 29%)"
        );
    }

    #[test]
    fn the_lock_key_is_the_same_in_every_build() {
        // Replicas built by different compilers must lock the same key: never change it.
        assert_eq!(deprovision_lock_key("t1"), 262_878_236_659_564_239);
        assert_ne!(deprovision_lock_key("t1"), deprovision_lock_key("t2"));
    }
}
