//! Human output (aligned tables, one-line outcomes) and `--json` output of the status API's
//! messages. The JSON shape is hand-written (stable field names in camelCase, enums as their
//! lower-case names) so scripts do not depend on protobuf field numbers.

use serde_json::{Value, json};

use scimrelay_proto::v1::{
    DeadLetter, HeldEvent, OutcomeResult, RecordedOutcome, ReferenceKind, SubjectState,
    TargetSummary,
};

/// Prints rows under a header, each column as wide as its widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        s.trim_end().to_owned()
    };
    let mut out = line(header.to_vec());
    out.push('\n');
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

use scimrelay_core::json::{kind_name, operation_name, subject_kind_name};
pub use scimrelay_core::json::{outcome_json, result_name, time};

/// A recorded outcome as JSON (the outcome's fields plus seq and flags).
pub fn recorded_json(r: &RecordedOutcome) -> Value {
    let mut v = r
        .outcome
        .as_ref()
        .map(outcome_json)
        .unwrap_or_else(|| json!({}));
    if let Some(m) = v.as_object_mut() {
        m.insert("seq".into(), json!(r.seq));
        m.insert("recordedAt".into(), json!(time(r.recorded_at_ms)));
        m.insert("terminal".into(), json!(r.terminal));
        m.insert("duplicate".into(), json!(r.duplicate));
    }
    v
}

/// One line per outcome, for `watch`.
pub fn outcome_line(r: &RecordedOutcome) -> String {
    let Some(o) = &r.outcome else {
        return format!("#{} (empty)", r.seq);
    };
    let mut s = format!(
        "#{} {} {} {} {} {} v{} {} {}ms event={}",
        r.seq,
        time(o.finished_at_ms),
        o.target,
        result_name(o.result),
        subject_kind_name(o.subject_kind),
        o.subject_id,
        o.version,
        operation_name(o.operation),
        o.latency_ms,
        o.event_id
    );
    if !o.detail.is_empty() {
        s.push_str(&format!(" detail={:?}", o.detail));
    }
    if r.duplicate {
        s.push_str(" (duplicate)");
    }
    s
}

/// The history table of one event.
pub fn history_table(history: &[RecordedOutcome]) -> String {
    let rows: Vec<Vec<String>> = history
        .iter()
        .filter_map(|r| r.outcome.as_ref().map(|o| (r, o)))
        .map(|(r, o)| {
            let flag = if r.terminal {
                "terminal"
            } else if r.duplicate {
                "duplicate"
            } else {
                "-"
            };
            vec![
                o.target.clone(),
                result_name(o.result).into(),
                operation_name(o.operation).into(),
                o.attempt.to_string(),
                if o.http_status == 0 {
                    "-".into()
                } else {
                    o.http_status.to_string()
                },
                if o.remote_id.is_empty() {
                    "-".into()
                } else {
                    o.remote_id.clone()
                },
                format!("{}ms", o.latency_ms),
                flag.into(),
                time(o.finished_at_ms),
                o.detail.clone(),
            ]
        })
        .collect();
    table(
        &[
            "TARGET",
            "RESULT",
            "OPERATION",
            "ATTEMPT",
            "HTTP",
            "REMOTE ID",
            "LATENCY",
            "COUNTS",
            "FINISHED",
            "DETAIL",
        ],
        &rows,
    )
}

/// A subject's state as JSON.
pub fn subject_json(s: &SubjectState) -> Value {
    json!({
        "target": s.target, "tenant": s.tenant, "subjectId": s.subject_id,
        "subjectKind": subject_kind_name(s.subject_kind), "remoteId": s.remote_id,
        "desiredVersion": s.desired_version, "appliedVersion": s.applied_version,
        "state": s.state, "lastOperation": s.last_operation,
        "lastError": s.last_error, "updatedAt": time(s.updated_at_ms),
        "pending": s.pending.iter().map(|p| json!({
            "userId": p.user_id, "kind": reference_kind_name(p.kind), "since": time(p.since_ms),
            "stale": p.stale, "dropped": p.dropped,
        })).collect::<Vec<_>>(),
    })
}

fn reference_kind_name(k: i32) -> &'static str {
    match ReferenceKind::try_from(k) {
        Ok(ReferenceKind::Member) => "member",
        Ok(ReferenceKind::Manager) => "manager",
        _ => "-",
    }
}

/// A subject's references to users not at a target yet, one line each under its table.
fn pending_lines(states: &[SubjectState]) -> String {
    let mut out = String::new();
    for s in states {
        for p in &s.pending {
            let state = if !p.dropped.is_empty() {
                format!("dropped: {}", p.dropped)
            } else if p.stale {
                format!(
                    "pending since {} (stale: the user event may never come)",
                    time(p.since_ms)
                )
            } else {
                format!("pending since {}", time(p.since_ms))
            };
            out.push_str(&format!(
                "{}: {} {} {state}\n",
                s.target,
                reference_kind_name(p.kind),
                p.user_id
            ));
        }
    }
    out
}

/// A subject's state per target.
pub fn subject_table(states: &[SubjectState]) -> String {
    let rows: Vec<Vec<String>> = states
        .iter()
        .map(|s| {
            vec![
                s.target.clone(),
                s.tenant.clone(),
                subject_kind_name(s.subject_kind).into(),
                if s.remote_id.is_empty() {
                    "-".into()
                } else {
                    s.remote_id.clone()
                },
                if s.desired_version > s.applied_version {
                    format!("{} (accepted {})", s.applied_version, s.desired_version)
                } else {
                    s.applied_version.to_string()
                },
                s.state.clone(),
                if s.last_error.is_empty() {
                    "-".into()
                } else {
                    s.last_error.clone()
                },
            ]
        })
        .collect();
    table(
        &[
            "TARGET",
            "TENANT",
            "KIND",
            "REMOTE ID",
            "VERSION",
            "STATE",
            "LAST ERROR",
        ],
        &rows,
    ) + &pending_lines(states)
}

fn count_of(t: &TargetSummary, r: OutcomeResult) -> u64 {
    t.counts
        .iter()
        .filter(|c| c.result == r as i32)
        .map(|c| c.count)
        .sum()
}

/// A target summary as JSON.
pub fn target_json(t: &TargetSummary) -> Value {
    let counts: serde_json::Map<String, Value> = t
        .counts
        .iter()
        .map(|c| (result_name(c.result).to_owned(), json!(c.count)))
        .collect();
    json!({
        "target": t.target, "provider": t.provider, "counts": counts,
        "latencyMs": {"p50": t.latency_p50_ms, "p95": t.latency_p95_ms, "p99": t.latency_p99_ms, "samples": t.latency_samples},
        "throttleWaits": t.throttle_waits, "throttleWaitMs": t.throttle_wait_ms,
        "quarantined": t.quarantined, "quarantineReason": t.quarantine_reason,
        "waitingReason": t.waiting_reason, "waitingSince": time(t.waiting_since_ms),
        "queueDepth": if t.queue_depth_known { json!(t.queue_depth) } else { Value::Null },
        "held": t.held, "concurrencyLimit": t.concurrency_limit, "inFlight": t.in_flight,
        "pendingReferences": t.pending_references, "oldestPendingSince": time(t.oldest_pending_since_ms),
        "lastOutcomeAt": time(t.last_outcome_at_ms), "lastReportAt": time(t.last_report_at_ms),
    })
}

/// Target summaries, one row each.
pub fn targets_table(targets: &[TargetSummary]) -> String {
    let rows: Vec<Vec<String>> = targets
        .iter()
        .map(|t| {
            vec![
                t.target.clone(),
                if t.provider.is_empty() {
                    "-".into()
                } else {
                    t.provider.clone()
                },
                count_of(t, OutcomeResult::Succeeded).to_string(),
                count_of(t, OutcomeResult::Superseded).to_string(),
                (count_of(t, OutcomeResult::Failed) + count_of(t, OutcomeResult::Unsupported))
                    .to_string(),
                count_of(t, OutcomeResult::DeadLettered).to_string(),
                format!(
                    "{}/{}/{}ms",
                    t.latency_p50_ms, t.latency_p95_ms, t.latency_p99_ms
                ),
                if t.queue_depth_known {
                    t.queue_depth.to_string()
                } else {
                    "?".into()
                },
                t.held.to_string(),
                if t.pending_references == 0 {
                    "0".into()
                } else {
                    format!(
                        "{} (oldest {})",
                        t.pending_references,
                        time(t.oldest_pending_since_ms)
                    )
                },
                format!("{} ({}ms)", t.throttle_waits, t.throttle_wait_ms),
                if t.quarantined {
                    format!("QUARANTINED: {}", t.quarantine_reason)
                } else if !t.waiting_reason.is_empty() {
                    format!("WAITING: {}", t.waiting_reason)
                } else {
                    "ok".into()
                },
            ]
        })
        .collect();
    table(
        &[
            "TARGET",
            "PROVIDER",
            "SUCCEEDED",
            "SUPERSEDED",
            "FAILED",
            "DEAD",
            "P50/P95/P99",
            "QUEUE",
            "HELD",
            "PENDING",
            "THROTTLED",
            "STATE",
        ],
        &rows,
    )
}

/// A parked message as JSON.
pub fn dead_json(d: &DeadLetter) -> Value {
    json!({
        "target": d.target, "eventId": d.event_id, "subjectId": d.subject_id, "version": d.version,
        "kind": kind_name(d.kind), "attempt": d.attempt, "routingKey": d.routing_key,
        "replayable": d.replayable, "sizeBytes": d.size_bytes,
    })
}

/// Parked messages, one row each.
pub fn dead_table(messages: &[DeadLetter]) -> String {
    let rows: Vec<Vec<String>> = messages
        .iter()
        .map(|d| {
            vec![
                d.target.clone(),
                if d.event_id.is_empty() {
                    "-".into()
                } else {
                    d.event_id.clone()
                },
                if d.subject_id.is_empty() {
                    "-".into()
                } else {
                    d.subject_id.clone()
                },
                d.version.to_string(),
                kind_name(d.kind).into(),
                d.attempt.to_string(),
                if d.routing_key.is_empty() {
                    "-".into()
                } else {
                    d.routing_key.clone()
                },
                if d.replayable {
                    "yes".into()
                } else {
                    "no".into()
                },
            ]
        })
        .collect();
    table(
        &[
            "TARGET",
            "EVENT",
            "SUBJECT",
            "VERSION",
            "KIND",
            "ATTEMPT",
            "ROUTING KEY",
            "REPLAYABLE",
        ],
        &rows,
    )
}

/// A held event as JSON.
pub fn held_json(h: &HeldEvent) -> Value {
    let d = h.delivery.clone().unwrap_or_default();
    let e = d.event.clone().unwrap_or_default();
    json!({
        "id": h.id, "eventId": e.id, "target": d.target, "subjectId": e.subject_id(), "kind": kind_name(e.kind),
        "version": e.version, "reason": h.reason, "heldAt": time(h.held_at_ms), "routingKey": h.routing_key,
    })
}

/// Held events, one row each.
pub fn held_table(held: &[HeldEvent]) -> String {
    let rows: Vec<Vec<String>> = held
        .iter()
        .map(|h| {
            let d = h.delivery.clone().unwrap_or_default();
            let e = d.event.clone().unwrap_or_default();
            vec![
                e.id.clone(),
                d.target,
                e.subject_id().to_owned(),
                kind_name(e.kind).into(),
                e.version.to_string(),
                time(h.held_at_ms),
                h.reason.clone(),
            ]
        })
        .collect();
    table(
        &[
            "EVENT",
            "TARGET",
            "SUBJECT",
            "KIND",
            "VERSION",
            "HELD SINCE",
            "REASON",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["wide cell".into(), "x".into()],
                vec!["y".into(), "z".into()],
            ],
        );
        assert_eq!(t, "A          LONGER\nwide cell  x\ny          z\n");
    }

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(time(0), "-");
        assert_eq!(time(1_700_000_000_000), "2023-11-14T22:13:20Z");
    }
}
