//! Reads of the outcome history and of held events: one event's outcomes, filtered pages in
//! `seq` order (what `ListOutcomes` and `WatchOutcomes` serve), held events by target.

use std::collections::HashSet;

use prost::Message;

use scimrelay_proto::v1::{HeldEvent, Outcome, OutcomeFilter, RecordedOutcome};

use super::{Pool, Store, StoreError, held_key};

/// Columns of an outcome row as read back: seq, recorded_at_ms, body, duplicate, terminal.
type OutcomeRow = (i64, i64, Vec<u8>, i64, i64);

const OUTCOME_COLUMNS: &str = "o.seq, o.recorded_at_ms, o.body, o.duplicate, CAST(CASE WHEN t.seq IS NULL THEN 0 ELSE 1 END AS BIGINT)";

/// The shared WHERE clause of filtered listings; parameters $1 … $7 and $9 ($8 is the limit).
const FILTER_SQL: &str = "o.seq > $1 AND ($2 = '' OR o.target = $2) AND ($3 = '' OR o.subject_id = $3) \
     AND ($4 = 0 OR o.result = $4) AND ($5 = 0 OR o.finished_at_ms >= $5) AND ($6 = 0 OR o.finished_at_ms < $6) \
     AND ($7 = 1 OR o.duplicate = 0) AND ($9 = '' OR o.tenant = $9)";

fn decode_outcome(row: OutcomeRow) -> Result<RecordedOutcome, StoreError> {
    let (seq, recorded_at_ms, body, duplicate, terminal) = row;
    let outcome = Outcome::decode(body.as_slice())
        .map_err(|e| StoreError::Corrupt(format!("outcome {seq}: {e}")))?;
    Ok(RecordedOutcome {
        seq: u64::try_from(seq).unwrap_or_default(),
        outcome: Some(outcome),
        recorded_at_ms,
        duplicate: duplicate != 0,
        terminal: terminal != 0,
    })
}

fn decode_held(id: i64, body: &[u8]) -> Result<HeldEvent, StoreError> {
    let mut h =
        HeldEvent::decode(body).map_err(|e| StoreError::Corrupt(format!("held {id}: {e}")))?;
    h.id = u64::try_from(id).unwrap_or_default();
    Ok(h)
}

impl Store {
    /// The highest seq stored (0 when empty).
    pub async fn max_seq(&self) -> Result<u64, StoreError> {
        let max: Option<i64> = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT MAX(seq) FROM outcomes"
        )
        .fetch_one(pool)
        .await?);
        Ok(u64::try_from(max.unwrap_or_default()).unwrap_or_default())
    }

    /// Every outcome of one event, oldest first, and its held copies.
    pub async fn event(
        &self,
        event_id: &str,
    ) -> Result<(Vec<RecordedOutcome>, Vec<HeldEvent>), StoreError> {
        let sql = format!(
            "SELECT {OUTCOME_COLUMNS} FROM outcomes o LEFT JOIN terminals t ON t.seq = o.seq WHERE o.event_id = $1 ORDER BY o.seq"
        );
        let rows: Vec<OutcomeRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(event_id)
            .fetch_all(pool)
            .await?);
        let held: Vec<(i64, Vec<u8>)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT id, body FROM held WHERE event_id = $1 ORDER BY id"
        )
        .bind(event_id)
        .fetch_all(pool)
        .await?);
        let outcomes = rows
            .into_iter()
            .map(decode_outcome)
            .collect::<Result<_, _>>()?;
        let held = held
            .iter()
            .map(|(id, body)| decode_held(*id, body))
            .collect::<Result<_, _>>()?;
        Ok((outcomes, held))
    }

    /// A page of outcomes after `after_seq` matching `filter`, oldest first. With `terminal_only`,
    /// only the terminal outcome of each (event, target). `filter.tenant` matches the tenant
    /// stored with each outcome (empty for every tenant); the caller has already decided which
    /// tenant a key may read.
    pub async fn list(
        &self,
        filter: &OutcomeFilter,
        after_seq: u64,
        limit: u32,
        terminal_only: bool,
    ) -> Result<Vec<RecordedOutcome>, StoreError> {
        let join = if terminal_only { "JOIN" } else { "LEFT JOIN" };
        let sql = format!(
            "SELECT {OUTCOME_COLUMNS} FROM outcomes o {join} terminals t ON t.seq = o.seq WHERE {FILTER_SQL} ORDER BY o.seq LIMIT $8"
        );
        let rows: Vec<OutcomeRow> = on_pool!(self, |pool| sqlx::query_as(&sql)
            .bind(i64::try_from(after_seq).unwrap_or(i64::MAX))
            .bind(&filter.target)
            .bind(&filter.subject_id)
            .bind(i64::from(filter.result))
            .bind(filter.from_ms)
            .bind(filter.to_ms)
            .bind(i64::from(filter.include_duplicates))
            .bind(i64::from(limit))
            .bind(&filter.tenant)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(decode_outcome).collect()
    }

    /// Held events of a target (or all) after the id `after`, oldest first.
    pub async fn held(
        &self,
        target: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<HeldEvent>, StoreError> {
        let rows: Vec<(i64, Vec<u8>)> = on_pool!(self, |pool| {
            sqlx::query_as(
            "SELECT id, body FROM held WHERE id > $1 AND ($2 = '' OR target = $2) ORDER BY id LIMIT $3"
        )
        .bind(i64::try_from(after).unwrap_or(i64::MAX))
        .bind(target)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?
        });
        rows.iter()
            .map(|(id, body)| decode_held(*id, body))
            .collect()
    }

    /// Held events selected by an operator: of `target` (empty for any), restricted to
    /// `event_ids` when not empty, and to `tenant`'s events when it is not empty (event ids are
    /// unique per tenant).
    pub async fn held_selected(
        &self,
        tenant: &str,
        target: &str,
        event_ids: &[String],
    ) -> Result<Vec<HeldEvent>, StoreError> {
        let wanted: HashSet<&str> = event_ids.iter().map(String::as_str).collect();
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.held(target, after, 1000).await?;
            let Some(last) = page.last() else { break };
            after = last.id;
            out.extend(page.into_iter().filter(|h| {
                let (t, id, _) = held_key(h);
                (wanted.is_empty() || wanted.contains(id.as_str()))
                    && (tenant.is_empty() || t == tenant)
            }));
        }
        Ok(out)
    }
}
