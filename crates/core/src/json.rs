//! The JSON shape of the messages scimrelay shows outside protobuf: `scimrelayctl --json` and
//! ingest's answer with outcomes (`Prefer: wait`). Hand-written (stable field names in
//! camelCase, enums as their lower-case names) so scripts do not depend on protobuf field
//! numbers.

use serde_json::{Value, json};

use scimrelay_proto::v1::{EventKind, Operation, Outcome, OutcomeResult, SubjectKind};

/// A timestamp in ms since the epoch as RFC 3339 (UTC), or "-".
pub fn time(ms: i64) -> String {
    if ms <= 0 {
        return "-".into();
    }
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

/// The lower-case name of a result.
pub fn result_name(r: i32) -> &'static str {
    OutcomeResult::try_from(r)
        .map(|r| r.name())
        .unwrap_or("unknown")
}

pub fn operation_name(o: i32) -> &'static str {
    Operation::try_from(o).map(|o| o.name()).unwrap_or("-")
}

pub fn kind_name(k: i32) -> &'static str {
    EventKind::try_from(k)
        .map(|k| k.api_name())
        .unwrap_or("unknown")
}

pub fn subject_kind_name(k: i32) -> &'static str {
    SubjectKind::try_from(k).map(|k| k.name()).unwrap_or("-")
}

/// An outcome as JSON.
pub fn outcome_json(o: &Outcome) -> Value {
    json!({
        "eventId": o.event_id, "target": o.target, "provider": o.provider, "tenant": o.tenant,
        "subjectKind": subject_kind_name(o.subject_kind), "subjectId": o.subject_id, "version": o.version,
        "kind": kind_name(o.kind), "operation": operation_name(o.operation), "result": result_name(o.result),
        "attempt": o.attempt, "httpStatus": o.http_status, "scimType": o.scim_type, "detail": o.detail,
        "remoteId": o.remote_id, "latencyMs": o.latency_ms, "traceId": o.trace_id,
        "acceptedAt": time(o.accepted_at_ms), "finishedAt": time(o.finished_at_ms),
        "planned": o.planned.iter().map(|p| json!({"method": p.method, "path": p.path, "body": p.body})).collect::<Vec<_>>(),
    })
}
