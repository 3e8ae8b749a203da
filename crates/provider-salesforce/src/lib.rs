//! The Salesforce profile (docs/providers/salesforce.md).
//!
//! Base URL: `https://MyDomain.my.salesforce.com/services/scim/v2`. Auth: OAuth 2.0 only —
//! client credentials (an External Client App with a Run-As user) or JWT bearer (RS256,
//! pre-authorised app); neither issues a refresh token, so the SCIM client runs the grant again
//! when a 401 arrives (session timeout) and retries the request once.
//!
//! What this profile does differently from the generic one, and why:
//! - **Discovery** once per target at `/ServiceProviderConfigs` (plural; the singular is a 404
//!   that would make a generic client assume "no PATCH, no filter"). A 404 there means the base
//!   URL is wrong — a permanent failure saying so.
//! - **Profile entitlement**: exactly one profile id in `entitlements`, from the event's
//!   `user.attributes.salesforce_profile_id` or `options.profile_id`; a user without one fails
//!   permanently ("no Salesforce profile: set options.profile_id …"), never a 409 retry loop.
//!   When Salesforce refuses the id anyway (409 REQUIRED_FIELD_MISSING for a permission set,
//!   400 INVALID_CROSS_REFERENCE_KEY for an id the org does not have), the failure is permanent,
//!   names the id and the options to fix, and is never read as a duplicate (no adoption lookup).
//! - **Usernames** are unique across every Salesforce org: `options.username_suffix` is
//!   appended (`ann@corp.com` → `ann@corp.com.prod`). A DUPLICATE_USERNAME 409 for which no user
//!   of this org is found (the name belongs to another org) is a permanent failure that says so
//!   and suggests the suffix.
//! - **Updates** are PATCH `{"op":"replace","value":{…changed attributes…}}` (Salesforce style),
//!   plus `{"op":"remove","path":…}` for each optional attribute the platform cleared
//!   ([`CLEARABLE`]); the fields the User object requires (locale, timezone, language) keep
//!   their value, or the org's default.
//! - **DELETE only deactivates** at Salesforce: user.deleted deactivates (PATCH active=false)
//!   whatever the delete policy, and the outcome says so.
//! - **Groups**: only membership of existing public groups. The group is found by displayName;
//!   creating or deleting one is an `unsupported` outcome with the reason. Membership changes
//!   use Salesforce's shape `{"op":"add"|"remove","path":"members","value":{"members":[…]}}`.
//! - **Throttling** is 403 `REQUEST_LIMIT_EXCEEDED`, not 429: the target pauses (long for the
//!   daily allocation, short for concurrency limits). `Sforce-Limit-Info: api-usage=x/y` is a
//!   quota hint once half the allocation is used, spreading the rest (minus a reserve for the
//!   org's other integrations) over the rolling 24 h window — well before the limit.
//!
//! Options: `profile_id` (or `profile_name`, resolved once from `/Entitlements`),
//! `username_suffix`.

pub mod mapping;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use scimrelay_connector::breaker::Health;
use scimrelay_connector::kit::compare::{
    ENTERPRISE_DEPARTMENT, ENTERPRISE_EMPLOYEE_NUMBER, cleared, differs,
};
use scimrelay_connector::kit::{self, Deactivation, Dialect, Lookup, MemberChange, id_of};
use scimrelay_connector::limits::{Feedback, QuotaHint};
use scimrelay_connector::options::{self, TargetOptions};
use scimrelay_connector::{
    Assessment, ConvergeError, ConvergeInput, Converged, FailureClass, Provider, classify,
    default_assess,
};
use scimrelay_core::config::{ProviderKind, TargetConfig};
use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_scim::{PatchBuilder, ScimError, ScimRequest, ScimResponse, path_segment};

/// The discovery path (plural, Salesforce's spelling).
pub const DISCOVERY_PATH: &str = "/ServiceProviderConfigs";
/// The error code of Salesforce throttling.
pub const REQUEST_LIMIT_EXCEEDED: &str = "REQUEST_LIMIT_EXCEEDED";
/// Pause after the org's request allocation is exhausted: it refills over a rolling 24 h.
pub const ALLOCATION_PAUSE: Duration = Duration::from_secs(300);
/// Pause after a concurrency limit (ConcurrentPerOrgLongTxn …): seconds, not minutes.
pub const CONCURRENCY_PAUSE: Duration = Duration::from_secs(2);
/// Used fraction of the allocation from which the target slows down.
pub const SLOW_DOWN_FROM: f64 = 0.5;
/// Fraction of the allocation left to the org's other integrations.
pub const RESERVE: f64 = 0.1;
/// The allocation's window.
pub const ALLOCATION_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// Most member changes in one group PATCH.
pub const MEMBER_CHUNK: usize = 100;

/// Salesforce's SCIM dialect for the shared operations: filtered lookups (`or` included, so a
/// group's unknown members are looked up together: docs/providers/salesforce.md), a path-less
/// `replace` of `active`, no ETags.
pub const DIALECT: Dialect = Dialect {
    name: "Salesforce",
    lookup: Lookup::FilterOr,
    deactivation: Deactivation::PatchValue,
    if_match: false,
};

/// The options a salesforce target may set (`targets[i].options`), parsed at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceOptions {
    /// The profile id (`00e…`) of users whose event names none.
    #[serde(default, deserialize_with = "options::text")]
    pub profile_id: Option<String>,
    /// The name of that profile, looked up once in `/Entitlements` (when `profile_id` is unset).
    #[serde(default, deserialize_with = "options::text")]
    pub profile_name: Option<String>,
    /// Appended to every username (e.g. `.prod`): Salesforce usernames are unique across
    /// every org, sandboxes included.
    #[serde(default, deserialize_with = "options::text")]
    pub username_suffix: Option<String>,
}

/// The Salesforce profile.
#[derive(Debug, Default)]
pub struct Salesforce {
    /// Each target's options.
    options: TargetOptions<SalesforceOptions>,
    /// Targets whose discovery succeeded, with their `filter.maxResults` (an async lock, so
    /// concurrent first events wait for one discovery).
    discovered: tokio::sync::Mutex<HashMap<String, u64>>,
    /// Profile ids resolved from `options.profile_name`, per target.
    profiles: tokio::sync::Mutex<HashMap<String, String>>,
}

impl Salesforce {
    /// A profile with nothing discovered yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The target's default profile id: `options.profile_id`, else `options.profile_name`
    /// looked up once in `/Entitlements` (operators know profile names, not their `00e…` ids).
    async fn default_profile(
        &self,
        input: &ConvergeInput<'_>,
    ) -> Result<Option<String>, ConvergeError> {
        let options = self.options.get(input.target)?;
        if let Some(id) = &options.profile_id {
            return Ok(Some(id.clone()));
        }
        let Some(name) = options.profile_name.clone() else {
            return Ok(None);
        };
        let mut known = self.profiles.lock().await;
        if let Some(id) = known.get(&input.target.id) {
            return Ok(Some(id.clone()));
        }
        let resp = kit::send(input.exec, ScimRequest::get("/Entitlements")).await?;
        let found = kit::resources(&resp).into_iter().find(|e| {
            e.get("displayName").and_then(Value::as_str) == Some(name.as_str())
                && e.get("type")
                    .and_then(Value::as_str)
                    .is_none_or(|t| t.eq_ignore_ascii_case("profile"))
        });
        let id = found.as_ref().and_then(kit::id_of).ok_or_else(|| {
            ConvergeError::new(
                FailureClass::Permanent,
                format!(
                    "no Salesforce profile named {name:?} in /Entitlements: check options.profile_name on target {}",
                    input.target.id
                ),
            )
        })?;
        known.insert(input.target.id.clone(), id.clone());
        Ok(Some(id))
    }

    /// Reads `/ServiceProviderConfigs` once per target; returns `filter.maxResults`.
    async fn discover(&self, input: &ConvergeInput<'_>) -> Result<u64, ConvergeError> {
        let mut known = self.discovered.lock().await;
        if let Some(n) = known.get(&input.target.id) {
            return Ok(*n);
        }
        let resp = input.exec.send(ScimRequest::get(DISCOVERY_PATH)).await.map_err(|e| {
            if e.status() == Some(404) {
                ConvergeError {
                    class: FailureClass::Permanent,
                    detail: format!(
                        "{DISCOVERY_PATH} not found: targets file: target {} base_url must be https://MYDOMAIN.my.salesforce.com/services/scim/v2",
                        input.target.id
                    ),
                    ..input.exec.classify(&e)
                }
            } else {
                input.exec.classify(&e)
            }
        })?;
        let max = resp
            .body
            .as_ref()
            .and_then(|b| {
                serde_json::from_value::<scimrelay_scim::ServiceProviderConfig>(b.clone()).ok()
            })
            .and_then(|c| c.max_results())
            .unwrap_or(200);
        known.insert(input.target.id.clone(), max);
        Ok(max)
    }
}

/// Whether an error is Salesforce throttling, and how long to pause.
pub fn throttle_wait(e: &ScimError) -> Option<Duration> {
    let ScimError::Http {
        status: 403,
        error_code,
        detail,
        ..
    } = e
    else {
        return None;
    };
    let text = format!(
        "{} {}",
        error_code.as_deref().unwrap_or(""),
        detail.as_deref().unwrap_or("")
    );
    if !text.contains(REQUEST_LIMIT_EXCEEDED) {
        return None;
    }
    Some(if text.contains("Concurrent") {
        CONCURRENCY_PAUSE
    } else {
        ALLOCATION_PAUSE
    })
}

/// A quota hint from `Sforce-Limit-Info` once [`SLOW_DOWN_FROM`] of the allocation is used.
pub fn quota_hint(headers: &http::HeaderMap) -> Option<QuotaHint> {
    let (used, limit) = mapping::api_usage(headers.get("sforce-limit-info")?.to_str().ok()?)?;
    if limit == 0 || (used as f64) < SLOW_DOWN_FROM * limit as f64 {
        return None;
    }
    let usable = (limit as f64 * (1.0 - RESERVE)) as u64;
    Some(QuotaHint {
        remaining: usable.saturating_sub(used),
        resets_in: ALLOCATION_WINDOW,
    })
}

/// Salesforce's classification: REQUEST_LIMIT_EXCEEDED is retried after its pause.
pub fn classify_salesforce(e: &ScimError) -> ConvergeError {
    match throttle_wait(e) {
        Some(wait) => ConvergeError {
            class: FailureClass::Retry,
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            ..classify(e)
        },
        None => classify(e),
    }
}

/// The connector's `--help` paragraph ([`Provider::about`]).
pub const ABOUT: &str = "Delivers identity events to Salesforce orgs (SCIM, OAuth 2.0).\n\n\
Consumes the shard queues of every `provider: salesforce` target in the targets file, \
converges each event at the org's SCIM API (one profile entitlement per user, username \
suffix, DELETE that only deactivates, membership of existing public groups, 403 \
REQUEST_LIMIT_EXCEEDED throttling, Sforce-Limit-Info) and publishes its outcome. Auth is \
OAuth client credentials or JWT bearer. Options: `profile_id` (or `profile_name`), \
`username_suffix` (docs/providers/salesforce.md).";

impl Provider for Salesforce {
    fn kind(&self) -> ProviderKind {
        ProviderKind::SALESFORCE
    }

    fn about(&self) -> &'static str {
        ABOUT
    }

    fn classify(&self, e: &ScimError) -> ConvergeError {
        classify_salesforce(e)
    }

    fn check_options(&self, t: &TargetConfig) -> Option<(String, String)> {
        self.options.check(t).err()
    }

    fn assess(&self, result: Result<&ScimResponse, &ScimError>, latency: Duration) -> Assessment {
        if let Err(e) = result
            && let Some(wait) = throttle_wait(e)
        {
            return Assessment {
                feedback: Feedback::Throttled(Some(wait)),
                health: Health::Fine,
                hint: None,
            };
        }
        let headers = match result {
            Ok(r) => Some(&r.headers),
            Err(e) => e.headers(),
        };
        let mut a = default_assess(result, latency);
        if let Some(h) = headers.and_then(quota_hint) {
            a.hint = Some(h);
        }
        a
    }

    fn converge<'a>(
        &'a self,
        input: ConvergeInput<'a>,
    ) -> BoxFuture<'a, Result<Converged, ConvergeError>> {
        Box::pin(async move {
            match input.event.kind() {
                EventKind::GroupDeleted => Err(ConvergeError::unsupported(
                    "Salesforce cannot delete groups through SCIM (public groups are read and update only); delete the public group in Salesforce Setup if it should go",
                )),
                EventKind::Unspecified => Err(ConvergeError::new(
                    FailureClass::Permanent,
                    "event has no kind",
                )),
                EventKind::UserUpserted => {
                    self.discover(&input).await?;
                    let profile = self.default_profile(&input).await?;
                    let suffix = self.options.get(input.target)?.username_suffix.clone();
                    upsert_user(&input, profile.as_deref(), suffix).await
                }
                EventKind::UserDeactivated => {
                    self.discover(&input).await?;
                    DIALECT.deactivate_user(&input).await
                }
                EventKind::UserDeleted => {
                    self.discover(&input).await?;
                    let note = "Salesforce cannot delete users (its DELETE only deactivates): the user was deactivated";
                    DIALECT.deactivate_user(&input).await.map(|c| {
                        let detail = if c.detail.is_empty() {
                            note.to_owned()
                        } else {
                            format!("{note}; {}", c.detail)
                        };
                        c.with_detail(detail)
                    })
                }
                EventKind::GroupUpserted => {
                    self.discover(&input).await?;
                    upsert_group(&input).await
                }
            }
        })
    }
}

/// The user attributes this profile clears at Salesforce when the desired state leaves them out
/// (FirstName, Phone, Title, EmployeeNumber and Department are optional on the User object).
/// Never listed: locale, timezone and preferredLanguage, which the User object requires and
/// Salesforce fills with the org's defaults (clearing them would be refused, or undone, on every
/// update), and displayName, LastName and the e-mail, which it always holds.
pub const CLEARABLE: [&str; 5] = [
    "name.givenName",
    "phoneNumbers",
    "title",
    ENTERPRISE_EMPLOYEE_NUMBER,
    ENTERPRISE_DEPARTMENT,
];

/// One `remove` with a path per [`CLEARABLE`] attribute the desired state cleared, then the
/// changed attributes as one Salesforce-style path-less `replace` value object. An org that
/// refuses the removal (400) still gets the replace ([`kit::patch_user`]).
pub fn user_patch(desired: &Value, existing: &Value) -> PatchBuilder {
    let mut changed = serde_json::Map::new();
    if let Value::Object(d) = desired {
        for (k, v) in d {
            match k.as_str() {
                "schemas" => {}
                "entitlements" => {
                    let want: BTreeSet<String> = kit::member_ids(&json!({"members": v}));
                    let have: BTreeSet<String> = kit::member_ids(
                        &json!({"members": existing.get("entitlements").cloned().unwrap_or(Value::Null)}),
                    );
                    if !want.is_subset(&have) {
                        changed.insert(k.clone(), v.clone());
                    }
                }
                _ => {
                    if differs(&json!({ k.clone(): v.clone() }), existing) {
                        changed.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    // Removes first, so a replace of `name` cannot have dropped what they name.
    let mut patch = PatchBuilder::new();
    for path in cleared(desired, existing, &CLEARABLE) {
        patch = patch.remove(path, None);
    }
    if !changed.is_empty() {
        patch = patch.replace(None, Value::Object(changed));
    }
    patch
}

async fn upsert_user(
    input: &ConvergeInput<'_>,
    default_profile: Option<&str>,
    suffix: Option<String>,
) -> Result<Converged, ConvergeError> {
    let user = kit::user_of(input)?;
    let profile = mapping::profile_id(user, &input.target.id, default_profile)?;
    let desired = kit::linked(
        input,
        mapping::user_resource(user, user.active, &profile, suffix.as_deref())?,
    );
    let explain = |e: ConvergeError| explain_refusal(e, &user.id, &profile, &input.target.id);
    if let Some((existing, _)) = DIALECT.current(input, "Users").await? {
        return kit::patch_user(input, &existing, &desired, user_patch, Operation::Updated)
            .await
            .map_err(explain);
    }
    match input
        .exec
        .send(ScimRequest::post("/Users", desired.clone()))
        .await
    {
        Ok(resp) => Ok(Converged::new(Operation::Created, kit::created_id(&resp)?)),
        // Not a uniqueness conflict although it is a 409: no lookup, no adoption.
        Err(e) if kit::is_conflict(&e) && is_required_field_missing(&e) => {
            Err(explain(input.exec.classify(&e)))
        }
        Err(e) if kit::is_conflict(&e) => {
            let user_name = mapping::user_name(user, suffix.as_deref());
            let external_id = input.external_id();
            if let Some((existing, attr)) = DIALECT
                .adoptable(
                    input,
                    "Users",
                    &[
                        ("externalId", external_id.as_str()),
                        ("userName", user_name.as_str()),
                    ],
                )
                .await?
            {
                let done =
                    kit::patch_user(input, &existing, &desired, user_patch, Operation::Adopted)
                        .await
                        .map_err(explain)?;
                return Ok(
                    Converged::new(Operation::Adopted, done.remote_id).with_detail(format!(
                        "409 on create: adopted the existing user found by {attr}"
                    )),
                );
            }
            let target = &input.target.id;
            let detail = if is_duplicate_username(&e) {
                match &suffix {
                    None => format!(
                        "user {}: username clash (DUPLICATE_USERNAME): its username is taken in another Salesforce organization (usernames are unique across every org, sandboxes included) and no user of this org has its externalId or username; set options.username_suffix on target {target} (e.g. \".prod\") so this org's usernames are its own",
                        user.id
                    ),
                    Some(s) => format!(
                        "user {}: username clash (DUPLICATE_USERNAME): its username, with options.username_suffix {s:?}, is taken in another Salesforce organization (usernames are unique across every org) and no user of this org has its externalId or username; choose another options.username_suffix on target {target}",
                        user.id
                    ),
                }
            } else {
                format!(
                    "user {}: Salesforce refused the create as a conflict ({}) and no user of this org has its externalId or username",
                    user.id,
                    e.detail().unwrap_or("no detail")
                )
            };
            Err(ConvergeError {
                class: FailureClass::Permanent,
                detail,
                ..input.exec.classify(&e)
            })
        }
        Err(e) => Err(explain(input.exec.classify(&e))),
    }
}

/// Salesforce's refusals of a user write that a retry cannot fix, in words an operator can act
/// on (docs/providers/salesforce.md, "What Salesforce documents"): a 409 REQUIRED_FIELD_MISSING
/// is *not* a uniqueness conflict; about the profile it means the id is not one profile of this
/// org (a permission set `0PS…`), and a 400 INVALID_CROSS_REFERENCE_KEY means the org has no
/// such id at all (the only reference a user write carries is the profile). Other failures pass
/// unchanged.
fn explain_refusal(mut e: ConvergeError, user: &str, profile: &str, target: &str) -> ConvergeError {
    let missing = e.detail.contains("REQUIRED_FIELD_MISSING");
    let unknown_id = e.detail.contains("INVALID_CROSS_REFERENCE_KEY");
    if !(missing || unknown_id) {
        return e;
    }
    let answer = std::mem::take(&mut e.detail);
    e.class = FailureClass::Permanent;
    e.detail = if unknown_id || answer.contains("profileid") {
        format!(
            "user {user}: Salesforce refused the profile {profile:?} ({answer}): it is not a profile of this org; every user needs exactly one profile id (00e…, listed in /Entitlements with type Profile), a permission set (0PS…) or another org's id does not count; fix options.profile_id or options.profile_name on target {target}, or the user's attributes.{}. Not a duplicate: nothing was adopted, and retrying cannot help",
            mapping::PROFILE_ATTRIBUTE
        )
    } else {
        format!(
            "user {user}: Salesforce refused the user because a required field is missing ({answer}). Not a duplicate: set the field (last name, e-mail, username) at the identity platform; retrying cannot help"
        )
    };
    e
}

fn is_duplicate_username(e: &ScimError) -> bool {
    e.error_code() == Some("DUPLICATE_USERNAME")
        || e.detail().is_some_and(|d| d.contains("DUPLICATE_USERNAME"))
}

fn is_required_field_missing(e: &ScimError) -> bool {
    e.error_code() == Some("REQUIRED_FIELD_MISSING")
        || e.detail()
            .is_some_and(|d| d.contains("REQUIRED_FIELD_MISSING"))
}

/// One Salesforce membership PATCH: `{"op":…,"path":"members","value":{"members":[…]}}`.
pub fn member_patch(changes: &[MemberChange]) -> Value {
    let pick = |add: bool| -> Vec<Value> {
        changes
            .iter()
            .filter_map(|c| match (c, add) {
                (MemberChange::Add(id), true) | (MemberChange::Remove(id), false) => {
                    Some(json!({"value": id}))
                }
                _ => None,
            })
            .collect()
    };
    let (remove, add) = (pick(false), pick(true));
    let mut p = PatchBuilder::new();
    if !remove.is_empty() {
        p = p.remove("members", Some(json!({"members": remove})));
    }
    if !add.is_empty() {
        p = p.add(Some("members"), json!({"members": add}));
    }
    p.build()
}

async fn upsert_group(input: &ConvergeInput<'_>) -> Result<Converged, ConvergeError> {
    let group = kit::group_of(input)?;
    let mut existing = None;
    if let Some(id) = input.record.known_remote_id() {
        existing = kit::get_by_id(input.exec, "Groups", id)
            .await?
            .map(|(g, _)| g);
    }
    if existing.is_none() {
        existing = DIALECT
            .find(input.exec, "Groups", "displayName", &group.display_name)
            .await?;
    }
    let Some(existing) = existing else {
        return Err(ConvergeError::unsupported(format!(
            "Salesforce cannot create groups through SCIM: create the public group {:?} in Salesforce Setup; scimrelay then keeps its membership",
            group.display_name
        )));
    };
    let id = id_of(&existing)
        .ok_or_else(|| ConvergeError::new(FailureClass::Permanent, "remote group has no id"))?;
    let existing = kit::with_members(input.exec, existing).await?;
    let desired: BTreeSet<String> = DIALECT.group_members(input).await?.into_iter().collect();
    let changes = kit::member_diff(&kit::member_ids(&existing), &desired);
    let path = format!("/Groups/{}", path_segment(&id));
    let sent = kit::patch_members_chunked(
        input.exec,
        &path,
        &changes,
        MEMBER_CHUNK,
        member_patch,
        |_| {},
    )
    .await?;
    let mut done = Converged::new(
        if sent == 0 {
            Operation::Noop
        } else {
            Operation::Updated
        },
        id,
    )
    .with_members(desired);
    if existing.get("displayName").and_then(Value::as_str) != Some(group.display_name.as_str()) {
        done = done.with_detail("membership synced; the group's name differs and is managed in Salesforce (SCIM cannot rename public groups)");
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};
    use scimrelay_connector::kit::compare::ENTERPRISE_SCHEMA;

    fn err(status: u16, code: Option<&str>, detail: &str) -> ScimError {
        ScimError::Http {
            status,
            scim_type: None,
            detail: Some(detail.into()),
            error_code: code.map(str::to_owned),
            retry_after: None,
            headers: Box::new(HeaderMap::new()),
        }
    }

    #[test]
    fn request_limit_exceeded_is_throttling_not_auth() {
        let sf = Salesforce::new();
        let total = err(
            403,
            Some(REQUEST_LIMIT_EXCEEDED),
            "TotalRequests Limit exceeded.",
        );
        let a = sf.assess(Err(&total), Duration::ZERO);
        assert_eq!(a.feedback, Feedback::Throttled(Some(ALLOCATION_PAUSE)));
        assert_eq!(a.health, Health::Fine);
        assert_eq!(classify_salesforce(&total).class, FailureClass::Retry);
        let conc = err(
            403,
            Some(REQUEST_LIMIT_EXCEEDED),
            "ConcurrentPerOrgLongTxn Limit exceeded.",
        );
        assert_eq!(throttle_wait(&conc), Some(CONCURRENCY_PAUSE));
        let denied = err(403, Some("INSUFFICIENT_ACCESS"), "no");
        assert_eq!(
            sf.assess(Err(&denied), Duration::ZERO).health,
            Health::AuthFailed
        );
    }

    #[test]
    fn limit_info_slows_down_from_half_the_allocation() {
        let mut h = HeaderMap::new();
        h.insert(
            "sforce-limit-info",
            HeaderValue::from_static("api-usage=100/15000"),
        );
        assert_eq!(quota_hint(&h), None, "plenty left: no cap");
        h.insert(
            "sforce-limit-info",
            HeaderValue::from_static("api-usage=9000/15000"),
        );
        let hint = quota_hint(&h).expect("hint");
        assert_eq!(
            hint.remaining,
            13_500 - 9_000,
            "the reserve stays for other integrations"
        );
        assert_eq!(hint.resets_in, ALLOCATION_WINDOW);
        let ok = ScimResponse {
            status: 200,
            headers: h,
            body: None,
        };
        assert!(
            Salesforce::new()
                .assess(Ok(&ok), Duration::ZERO)
                .hint
                .is_some()
        );
    }

    #[test]
    fn member_patch_uses_the_salesforce_shape() {
        let body = member_patch(&[
            MemberChange::Remove("005a".into()),
            MemberChange::Add("005b".into()),
        ]);
        assert_eq!(
            body["Operations"],
            json!([
                {"op": "remove", "path": "members", "value": {"members": [{"value": "005a"}]}},
                {"op": "add", "path": "members", "value": {"members": [{"value": "005b"}]}}
            ])
        );
    }

    #[test]
    fn user_patch_is_a_pathless_value_object_of_changes() {
        let desired = json!({"schemas": [], "title": "Lead", "active": true, "entitlements": [{"value": "00e1"}]});
        let existing = json!({"id": "005", "title": "Dev", "active": true,
                              "entitlements": [{"value": "00e1", "type": "Profile", "display": "Std"}, {"value": "0PS1"}]});
        let ops = user_patch(&desired, &existing).build()["Operations"].clone();
        assert_eq!(ops, json!([{"op": "replace", "value": {"title": "Lead"}}]));
    }

    #[test]
    fn user_patch_removes_cleared_optional_attributes_only() {
        let desired = json!({"schemas": [], "name": {"familyName": "Lee"}, "active": true});
        let existing = json!({"id": "005", "name": {"givenName": "Ann", "familyName": "Lee"},
            "title": "Dev", "phoneNumbers": [{"value": "+1 555 0100"}], "active": true,
            "locale": "en_US", "timezone": "America/Los_Angeles", "preferredLanguage": "en_US",
            "displayName": "Ann Lee", "nickName": "ann",
            ENTERPRISE_SCHEMA: {"department": "Ops"}});
        let ops = user_patch(&desired, &existing).build()["Operations"].clone();
        assert_eq!(
            ops,
            json!([
                {"op": "remove", "path": "name.givenName"},
                {"op": "remove", "path": "phoneNumbers"},
                {"op": "remove", "path": "title"},
                {"op": "remove", "path": ENTERPRISE_DEPARTMENT}
            ])
        );
    }
}
