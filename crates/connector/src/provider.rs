//! The contract between the runtime and a provider profile.
//!
//! The runtime owns everything that is the same for every provider: consuming, ordering per
//! subject, versions, retries, outcomes, acks, plan mode. A provider owns only how one event is
//! converged at its API (mapping, which requests, which answers mean what). If runtime code
//! needs to ask "which provider is this", a method is missing here.

use std::time::Duration;

use futures::future::BoxFuture;
use scimrelay_scim::{ScimError, ScimResponse};

use scimrelay_core::config::{ProviderKind, TargetConfig};
use scimrelay_proto::v1::{IdentityEvent, Operation};

use crate::breaker::Health;
use crate::exec::Exec;
use crate::limits::{Feedback, QuotaHint};
use crate::record::{Directory, Record};

/// What converging did, on success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Converged {
    /// What was done to the target.
    pub operation: Operation,
    /// The provider's id of the subject afterwards (empty when it no longer exists).
    pub remote_id: String,
    /// Human-readable note (e.g. "already inactive"); never a secret or e-mail.
    pub detail: String,
    /// A group's member ids at the provider after the converge, when the profile knows them:
    /// recorded in the state of record, so the next converge can diff against them without
    /// reading the members back (AWS cannot).
    pub members: Option<Vec<String>>,
}

impl Converged {
    /// A success with no note.
    pub fn new(operation: Operation, remote_id: impl Into<String>) -> Self {
        Converged {
            operation,
            remote_id: remote_id.into(),
            detail: String::new(),
            members: None,
        }
    }

    /// Adds a note.
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    /// Names the group's member ids at the provider after the converge.
    pub fn with_members(mut self, members: impl IntoIterator<Item = String>) -> Self {
        let mut ids: Vec<String> = members.into_iter().collect();
        ids.sort();
        ids.dedup();
        self.members = Some(ids);
        self
    }
}

/// How the runtime must treat a failure: the provider's classification hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Transient (timeouts, 5xx, throttling, a dependency not yet provisioned): try again later.
    Retry,
    /// The provider refused for good (validation, permission): a `failed` outcome.
    Permanent,
    /// The provider's API cannot do this: an `unsupported` outcome with the reason.
    Unsupported,
    /// Not the event's fault and not now: the target cannot take requests for a while (a
    /// quarantine, a long throttling pause, a provider budget spent). The message waits on a
    /// delay tier for `retry_after_ms` without counting an attempt.
    Deferred,
}

/// A failure to converge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{detail}")]
pub struct ConvergeError {
    /// What to do about it.
    pub class: FailureClass,
    /// The HTTP status of the failing response, 0 when none.
    pub http_status: u16,
    /// The SCIM error type, when the provider sent one.
    pub scim_type: String,
    /// Why, in words an operator can act on; never a secret or e-mail.
    pub detail: String,
    /// A wait the provider asked for (Retry-After), if any.
    pub retry_after_ms: Option<u64>,
}

impl ConvergeError {
    /// A failure of the given class.
    pub fn new(class: FailureClass, detail: impl Into<String>) -> Self {
        ConvergeError {
            class,
            http_status: 0,
            scim_type: String::new(),
            detail: detail.into(),
            retry_after_ms: None,
        }
    }

    /// An `unsupported` outcome with its reason.
    pub fn unsupported(detail: impl Into<String>) -> Self {
        Self::new(FailureClass::Unsupported, detail)
    }
}

/// Everything a provider needs to converge one subject at one target.
pub struct ConvergeInput<'a> {
    /// The target's configuration.
    pub target: &'a TargetConfig,
    /// The desired state to converge to: the latest the state of record accepted for the
    /// subject (the message's own event, or the event accepted first at the same version).
    pub event: &'a IdentityEvent,
    /// The subject's state of record at this target (remote id, applied version, presence, a
    /// group's applied members), as read when the message was taken.
    pub record: &'a Record,
    /// The other users of the tenant at the target (to resolve a group's members).
    pub directory: &'a dyn Directory,
    /// Sends SCIM requests (or records them in plan mode).
    pub exec: &'a Exec,
}

impl ConvergeInput<'_> {
    /// The externalId linking the converged subject to its object at the target (see
    /// [`ConvergeInput::external_id_of`]).
    pub fn external_id(&self) -> String {
        self.external_id_of(self.event.subject_id())
    }

    /// The externalId of the platform subject `id` of the event's tenant at this target: the
    /// bare id on a target that serves one tenant, `<tenant>:<id>` on a target shared by
    /// several, so lookups never match another tenant's object.
    pub fn external_id_of(&self, id: &str) -> String {
        self.target.external_id(&self.event.tenant, id)
    }

    /// Whether an object found at the target (by a lookup other than externalId, e.g. a 409's
    /// userName) may be adopted as this subject's: always on a target that serves one tenant;
    /// on a shared target only when its externalId is this subject's, so one tenant never takes
    /// over another tenant's object (or an unlinked one whose owner is unknown).
    pub fn may_adopt(&self, found: &serde_json::Value) -> bool {
        if !self.target.shared() {
            return true;
        }
        found.get("externalId").and_then(serde_json::Value::as_str)
            == Some(self.external_id().as_str())
    }
}

/// How one answer is read for the target's limits and breaker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessment {
    /// Capacity signal for the limits.
    pub feedback: Feedback,
    /// Health signal for the breaker.
    pub health: Health,
    /// A remaining-quota hint, when the answer carried one.
    pub hint: Option<QuotaHint>,
}

/// What a provider publishes about its limits, used when a target configures none.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProviderDefaults {
    /// Static request ceiling for the whole target (split across replicas), requests/s.
    pub rate_limit_per_sec: Option<f64>,
}

/// A provider profile: GitHub, AWS, Salesforce, generic SCIM, or any other crate's (the plug-in
/// seam; docs/design.md, "The provider seam").
pub trait Provider: Send + Sync + 'static {
    /// The provider name its targets give as `provider:` (and its connector's name,
    /// `<kind>-connector`).
    fn kind(&self) -> ProviderKind;

    /// What the connector does, for its `--help`: a first line, then a paragraph on what the
    /// profile converges and how (its quirks, its options, where its facts are written down).
    fn about(&self) -> &'static str;

    /// Parses a target's `options` into the profile's typed options at start (see
    /// [`crate::options`]): `Some(("options.<key>", why))` stops the connector naming
    /// `targets[i].options.<key>`. By default the profile takes no options and refuses any.
    fn check_options(&self, target: &TargetConfig) -> Option<(String, String)> {
        crate::options::parse::<crate::options::NoOptions>(target).err()
    }

    /// The profile's own check of one of its targets at start, beyond its options: a
    /// `Some((field, message))` stops the connector naming `targets[i].field`.
    fn check_target(&self, _target: &TargetConfig) -> Option<(String, String)> {
        None
    }

    /// Reads a failed request as a failure class (retry, permanent, throttled…) with its
    /// detail: the RFC 7644 reading by default ([`classify`]); a profile whose server says
    /// things its own way (GitHub's 403 throttling, Salesforce's error codes) overrides it.
    /// Every shared operation of [`crate::kit`] reads errors through it.
    fn classify(&self, e: &ScimError) -> ConvergeError {
        classify(e)
    }

    /// Published limits of the provider (defaults for targets that set none).
    fn defaults(&self) -> ProviderDefaults {
        ProviderDefaults::default()
    }

    /// Converges the target to the event's desired state.
    fn converge<'a>(
        &'a self,
        input: ConvergeInput<'a>,
    ) -> BoxFuture<'a, Result<Converged, ConvergeError>>;

    /// Reads one answer: was it throttling, a failure of the target, a quota hint? The default
    /// follows RFC 6585 / RFC 7644: 429 throttles (honouring Retry-After), 401 and 403 are
    /// authentication failures, 5xx and transport errors are overload; `x-ratelimit-remaining`
    /// with `x-ratelimit-reset` (epoch seconds) is a quota hint. Providers override it for their
    /// quirks (GitHub's 403 throttling, Salesforce's REQUEST_LIMIT_EXCEEDED).
    fn assess(&self, result: Result<&ScimResponse, &ScimError>, latency: Duration) -> Assessment {
        default_assess(result, latency)
    }
}

/// The RFC reading of an answer (see [`Provider::assess`]).
pub fn default_assess(result: Result<&ScimResponse, &ScimError>, latency: Duration) -> Assessment {
    match result {
        Ok(resp) => Assessment {
            feedback: Feedback::Ok(latency),
            health: Health::Fine,
            hint: ratelimit_hint(&resp.headers),
        },
        Err(ScimError::Http {
            status,
            retry_after,
            headers,
            ..
        }) => match *status {
            429 => Assessment {
                feedback: Feedback::Throttled(retry_after.or_else(|| reset_wait(headers))),
                health: Health::Fine,
                hint: None,
            },
            401 | 403 => Assessment {
                feedback: Feedback::Ok(latency),
                health: Health::AuthFailed,
                hint: None,
            },
            s if s >= 500 => Assessment {
                feedback: Feedback::Overloaded,
                health: Health::Failed,
                hint: None,
            },
            _ => Assessment {
                feedback: Feedback::Ok(latency),
                health: Health::Fine,
                hint: ratelimit_hint(headers),
            },
        },
        Err(e @ ScimError::Token { .. }) if !e.is_transient() => {
            // The token endpoint refused our credentials: quarantine, like a 401.
            Assessment {
                feedback: Feedback::Ok(latency),
                health: Health::AuthFailed,
                hint: None,
            }
        }
        // Not sent: says nothing about the target.
        Err(ScimError::Deferred { .. }) => Assessment {
            feedback: Feedback::Ok(latency),
            health: Health::Fine,
            hint: None,
        },
        // A redirect is a login page behind an SSO gateway (or a wrong base URL): quarantine
        // the target like an authentication failure, rather than fail every event.
        Err(ScimError::Redirect { .. }) => Assessment {
            feedback: Feedback::Ok(latency),
            health: Health::AuthFailed,
            hint: None,
        },
        // Something answers in the server's place: counts towards the breaker's failure ratio.
        Err(ScimError::Unexpected(_) | ScimError::TooLarge { .. }) => Assessment {
            feedback: Feedback::Ok(latency),
            health: Health::Failed,
            hint: None,
        },
        Err(ScimError::Decode(_)) | Err(ScimError::Config(_)) => Assessment {
            feedback: Feedback::Ok(latency),
            health: Health::Fine,
            hint: None,
        },
        Err(_) => Assessment {
            feedback: Feedback::Overloaded,
            health: Health::Failed,
            hint: None,
        },
    }
}

fn header_u64(headers: &http::HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// The wait until `x-ratelimit-reset` (UTC epoch seconds), when the answer carries it.
pub fn reset_wait(headers: &http::HeaderMap) -> Option<Duration> {
    let reset = header_u64(headers, "x-ratelimit-reset")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    Some(Duration::from_secs(reset.saturating_sub(now).max(1)))
}

/// A quota hint from `x-ratelimit-remaining` + `x-ratelimit-reset`.
pub fn ratelimit_hint(headers: &http::HeaderMap) -> Option<QuotaHint> {
    let remaining = header_u64(headers, "x-ratelimit-remaining")?;
    let resets_in = reset_wait(headers)?;
    Some(QuotaHint {
        remaining,
        resets_in,
    })
}

/// The default classification of a SCIM client error: transport failures, throttling and 5xx
/// are transient; 501 means the server cannot do it; anything else is permanent. Providers call
/// this for the cases their quirks do not cover.
pub fn classify(err: &scimrelay_scim::ScimError) -> ConvergeError {
    use scimrelay_scim::ScimError;
    match err {
        ScimError::Http {
            status,
            scim_type,
            detail,
            retry_after,
            ..
        } => {
            let class = match *status {
                501 => FailureClass::Unsupported,
                401 | 408 | 412 | 425 | 429 => FailureClass::Retry,
                s if s >= 500 => FailureClass::Retry,
                _ => FailureClass::Permanent,
            };
            ConvergeError {
                class,
                http_status: *status,
                scim_type: scim_type.clone().unwrap_or_default(),
                detail: format!(
                    "HTTP {status}{}",
                    detail
                        .as_deref()
                        .map(|d| format!(": {d}"))
                        .unwrap_or_default()
                ),
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            }
        }
        ScimError::Deferred { wait, .. } => ConvergeError {
            class: FailureClass::Deferred,
            http_status: 0,
            scim_type: String::new(),
            detail: err.to_string(),
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
        },
        ScimError::Redirect { status, .. } => ConvergeError {
            class: FailureClass::Retry,
            http_status: *status,
            scim_type: String::new(),
            detail: err.to_string(),
            retry_after_ms: None,
        },
        other => ConvergeError {
            // An oversized body is retried like other gateway trouble (see
            // `ScimError::is_transient`); an answer that never fits ends dead-lettered.
            class: if matches!(other, ScimError::Decode(_) | ScimError::Config(_)) {
                FailureClass::Permanent
            } else {
                FailureClass::Retry
            },
            http_status: 0,
            scim_type: String::new(),
            detail: other.to_string(),
            retry_after_ms: None,
        },
    }
}
