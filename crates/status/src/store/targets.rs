//! Connector reports and target summaries: what `GetTarget` and `ListTargets` show of a target
//! besides its queue (counts, latency percentiles, throttling, quarantine, why messages wait).

use prost::Message;

use scimrelay_proto::v1::{ResultCount, TargetReport, TargetSummary};

use super::{Pool, Store, StoreError, now_ms};

/// Most latencies read for a target's percentiles (the most recent ones).
pub const LATENCY_SAMPLES: i64 = 10_000;
/// How old a connector's report may be for its `waiting_reason` to show in a target's summary
/// (reports come every 5 s; a replica that stopped must not leave a reason behind for long).
const WAITING_REPORT_MAX_AGE_MS: i64 = 30_000;

impl Store {
    /// Stores a connector's report (the latest per target and replica).
    pub async fn report(&self, r: &TargetReport) -> Result<(), StoreError> {
        on_pool!(self, |pool| {
            sqlx::query(
            "INSERT INTO target_reports (target, replica, received_at_ms, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (target, replica) DO UPDATE SET received_at_ms = excluded.received_at_ms, body = excluded.body"
        )
        .bind(&r.target)
        .bind(&r.replica)
        .bind(now_ms())
        .bind(r.encode_to_vec())
        .execute(pool)
        .await
        .map(|_| ())?
        });
        Ok(())
    }

    /// Every target the store knows of (from outcomes, reports or held events), sorted.
    pub async fn target_ids(&self) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = on_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT target FROM targets UNION SELECT target FROM target_reports UNION SELECT DISTINCT target FROM held ORDER BY 1"
        )
        .fetch_all(pool)
        .await?
        });
        Ok(ids)
    }

    /// The latest report of each replica of a target.
    pub async fn reports(&self, target: &str) -> Result<Vec<(TargetReport, i64)>, StoreError> {
        let rows: Vec<(Vec<u8>, i64)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT body, received_at_ms FROM target_reports WHERE target = $1 ORDER BY replica"
        )
        .bind(target)
        .fetch_all(pool)
        .await?);
        rows.into_iter()
            .map(|(body, at)| {
                TargetReport::decode(body.as_slice())
                    .map(|r| (r, at))
                    .map_err(|e| StoreError::Corrupt(format!("report of {target}: {e}")))
            })
            .collect()
    }

    /// A target's summary from the store (counts, latency, reports, held); `None` when nothing
    /// is known of it. Queue depth is the broker's and is filled in by the caller.
    pub async fn target_summary(&self, target: &str) -> Result<Option<TargetSummary>, StoreError> {
        let known: Option<(String, i64)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT provider, last_outcome_at_ms FROM targets WHERE target = $1"
        )
        .bind(target)
        .fetch_optional(pool)
        .await?);
        let reports = self.reports(target).await?;
        let held: i64 = on_pool!(self, |pool| sqlx::query_scalar(
            "SELECT COUNT(*) FROM held WHERE target = $1"
        )
        .bind(target)
        .fetch_one(pool)
        .await?);
        if known.is_none() && reports.is_empty() && held == 0 {
            return Ok(None);
        }
        let mut s = TargetSummary {
            target: target.to_owned(),
            held: u64::try_from(held).unwrap_or_default(),
            ..Default::default()
        };
        if let Some((provider, last)) = known {
            s.provider = provider;
            s.last_outcome_at_ms = last;
        }
        let counts: Vec<(i64, i64)> = on_pool!(self, |pool| sqlx::query_as(
            "SELECT result, count FROM target_counts WHERE target = $1 ORDER BY result"
        )
        .bind(target)
        .fetch_all(pool)
        .await?);
        s.counts = counts
            .into_iter()
            .map(|(result, count)| ResultCount {
                result: i32::try_from(result).unwrap_or_default(),
                count: u64::try_from(count).unwrap_or_default(),
            })
            .collect();
        let mut latencies: Vec<i64> = on_pool!(self, |pool| {
            sqlx::query_scalar(
            "SELECT o.latency_ms FROM outcomes o JOIN terminals t ON t.seq = o.seq WHERE o.target = $1 ORDER BY o.seq DESC LIMIT $2"
        )
        .bind(target)
        .bind(LATENCY_SAMPLES)
        .fetch_all(pool)
        .await?
        });
        latencies.sort_unstable();
        let pct = |p: usize| -> u64 {
            if latencies.is_empty() {
                return 0;
            }
            let i = (latencies.len() * p)
                .div_ceil(100)
                .saturating_sub(1)
                .min(latencies.len() - 1);
            u64::try_from(latencies[i]).unwrap_or_default()
        };
        s.latency_p50_ms = pct(50);
        s.latency_p95_ms = pct(95);
        s.latency_p99_ms = pct(99);
        s.latency_samples = u32::try_from(latencies.len()).unwrap_or(u32::MAX);
        let mut reasons = Vec::new();
        for (r, received_at) in &reports {
            if s.provider.is_empty() {
                s.provider = r.provider.clone();
            }
            s.throttle_waits += r.throttle_waits;
            s.throttle_wait_ms += r.throttle_wait_ms;
            s.concurrency_limit += r.concurrency_limit;
            s.in_flight += r.in_flight;
            s.last_report_at_ms = s.last_report_at_ms.max(*received_at);
            if r.quarantined {
                s.quarantined = true;
                if !r.quarantine_reason.is_empty() && !reasons.contains(&r.quarantine_reason) {
                    reasons.push(r.quarantine_reason.clone());
                }
            }
        }
        s.quarantine_reason = reasons.join("; ");
        // Why messages wait: from fresh reports only (a replica that stopped leaves its last
        // report behind).
        let fresh_since = now_ms() - WAITING_REPORT_MAX_AGE_MS;
        if let Some(r) = reports
            .iter()
            .filter(|(r, at)| *at >= fresh_since && !r.waiting_reason.is_empty())
            .map(|(r, _)| r)
            .min_by_key(|r| r.waiting_since_ms)
        {
            s.waiting_reason = r.waiting_reason.clone();
            s.waiting_since_ms = r.waiting_since_ms;
        }
        Ok(Some(s))
    }
}
