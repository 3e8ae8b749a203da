//! The one chokepoint every SCIM request of a provider goes through: breaker → limits → HTTP →
//! assessment (the provider reads the answer for throttling, health and quota hints).
//!
//! A throttling answer is not a failure of the event: the target pauses (see [`crate::limits`])
//! and the same request is sent again after the pause, up to [`MAX_THROTTLE_RETRIES`] times.
//!
//! In plan mode reads are sent (so the plan is computed against the real remote state) and
//! writes are recorded instead, answered with a synthetic success, so a provider's convergence
//! code runs unchanged in both modes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use scimrelay_proto::v1::PlannedRequest;
use scimrelay_scim::{ScimClient, ScimError, ScimRequest, ScimResponse};

use crate::breaker::Breaker;
use crate::limits::Limits;
use crate::provider::Provider;

/// Placeholder id given to objects a plan would create.
pub const PLANNED_ID: &str = "planned";
/// Throttled re-sends of one request before the throttling becomes the request's error.
pub const MAX_THROTTLE_RETRIES: u32 = 20;

/// A target's outbound side, shared by every event of the target.
pub struct TargetIo {
    /// The SCIM client (base URL, auth, timeout).
    pub client: ScimClient,
    /// Ceiling, adaptive rate and concurrency.
    pub limits: Limits,
    /// Quarantine.
    pub breaker: Breaker,
}

/// Sends (or plans) SCIM requests for one event at one target.
pub struct Exec {
    io: Arc<TargetIo>,
    provider: Arc<dyn Provider>,
    plan: Option<Mutex<Vec<PlannedRequest>>>,
    stats: Mutex<ExecStats>,
}

/// What happened to the requests of one convergence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecStats {
    /// The status of the last response received (0 if none).
    pub last_status: u16,
    /// Requests sent.
    pub requests: u32,
    /// Throttling answers received.
    pub throttled: u32,
    /// Time spent waiting for the ceiling, pauses and the window.
    pub waited: Duration,
}

impl Exec {
    /// An executor for one convergence; `plan` records writes instead of sending them.
    pub fn new(io: Arc<TargetIo>, provider: Arc<dyn Provider>, plan: bool) -> Self {
        Exec {
            io,
            provider,
            plan: plan.then(|| Mutex::new(Vec::new())),
            stats: Mutex::new(ExecStats::default()),
        }
    }

    /// Whether writes are only planned.
    pub fn is_plan(&self) -> bool {
        self.plan.is_some()
    }

    /// Sends a request (reads always; writes unless planning).
    pub async fn send(&self, req: ScimRequest) -> Result<ScimResponse, ScimError> {
        if let (Some(plan), true) = (&self.plan, req.is_write()) {
            return Ok(record_plan(plan, &req));
        }
        let mut throttles = 0;
        loop {
            let ticket = self.io.breaker.allow().await;
            let permit = self.io.limits.acquire().await;
            if !self.io.breaker.still_allowed(ticket) {
                // The target was quarantined while this request waited for its slot.
                self.io.limits.cancel(permit);
                continue;
            }
            let waited = permit.waited;
            let started = tokio::time::Instant::now();
            let result = self.io.client.execute(&req).await;
            let assessment = self.provider.assess(result.as_ref(), started.elapsed());
            self.io.limits.release(permit, assessment.feedback);
            self.io.breaker.record(assessment.health);
            if let Some(hint) = assessment.hint {
                self.io.limits.hint(hint);
            }
            let throttled = matches!(assessment.feedback, crate::limits::Feedback::Throttled(_));
            if let Ok(mut s) = self.stats.lock() {
                s.requests += 1;
                s.waited += waited;
                s.throttled += u32::from(throttled);
                s.last_status = match &result {
                    Ok(r) => r.status,
                    Err(e) => e.status().unwrap_or(0),
                };
            }
            if throttled && throttles < MAX_THROTTLE_RETRIES {
                throttles += 1;
                continue;
            }
            return result;
        }
    }

    /// The status of the last response received (0 if none).
    pub fn last_status(&self) -> u16 {
        self.stats().last_status
    }

    /// Statistics of this convergence's requests.
    pub fn stats(&self) -> ExecStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The writes a plan recorded.
    pub fn planned(&self) -> Vec<PlannedRequest> {
        self.plan
            .as_ref()
            .and_then(|p| p.lock().ok().map(|v| v.clone()))
            .unwrap_or_default()
    }
}

fn record_plan(plan: &Mutex<Vec<PlannedRequest>>, req: &ScimRequest) -> ScimResponse {
    let body = req
        .body
        .as_ref()
        .map(|b| mask(b).to_string())
        .unwrap_or_default();
    if let Ok(mut p) = plan.lock() {
        p.push(PlannedRequest {
            method: req.method.to_string(),
            path: req.path.clone(),
            body,
        });
    }
    let mut synthetic = req.body.clone().unwrap_or(Value::Null);
    if let Value::Object(m) = &mut synthetic {
        m.entry("id").or_insert_with(|| json!(PLANNED_ID));
    }
    ScimResponse {
        status: if req.method == http::Method::POST {
            201
        } else {
            200
        },
        headers: Default::default(),
        body: (!synthetic.is_null()).then_some(synthetic),
    }
}

/// Masks e-mails, phone numbers and passwords in a request body for a plan report.
pub fn mask(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, val)| {
                    let masked = match k.as_str() {
                        "password" => json!("***"),
                        "phoneNumbers" | "addresses" => json!("***"),
                        _ => mask(val),
                    };
                    (k.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(mask).collect()),
        Value::String(s) if s.contains('@') => json!("***@***"),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_emails_phones_and_passwords() {
        let body = json!({"userName": "alice@example.com", "password": "hunter2",
                          "emails": [{"value": "alice@example.com", "primary": true}],
                          "phoneNumbers": [{"value": "+1 555 0100"}], "displayName": "Alice"});
        let m = mask(&body).to_string();
        assert!(
            !m.contains("alice@example.com") && !m.contains("hunter2") && !m.contains("555"),
            "{m}"
        );
        assert!(m.contains("Alice"));
    }
}
