//! Retention: [`Store::prune`] deletes outcome history older than the configured age, in chunks.
//! The state of record (`subjects`), counters and held events are state, not history, and are
//! kept.

use super::{Pool, Store, StoreError};

/// Rows deleted per statement when pruning, so a prune never holds the write lock for long.
const PRUNE_CHUNK: i64 = 5_000;

impl Store {
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
}
