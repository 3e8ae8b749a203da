//! The GitHub Enterprise Managed Users profile (docs/providers/github.md).
//!
//! Base URL: `https://api.github.com/scim/v2/enterprises/{enterprise}` (GHE.com: the
//! enterprise's API host; GHES: `https://HOST/api/v3/scim/v2`). Auth: a classic PAT of the setup
//! user with `scim:enterprise`, as a static bearer token.
//!
//! What this profile does differently from the generic one, and why:
//! - **Payload**: every attribute GitHub requires, core schema only ([`mapping`]); a user
//!   lacking one is a permanent failure naming it, not a 400 per retry.
//! - **Login normalisation**: the login GitHub derives from the userName is computed before any
//!   request (`options.shortcode`); an empty or too long login fails permanently naming the
//!   login. A 409 on create that no externalId/userName lookup explains is a normalisation clash
//!   with another user, also permanent.
//! - **Updates**: PATCH `replace` of whole attributes, never filtered paths (documented as
//!   ineffective). **Deactivate**: PATCH `{"op":"replace","value":{"active":false}}`.
//! - **Delete**: DELETE is a hard, irreversible deprovision at GitHub, so it is sent only with
//!   `delete_policy: delete`; otherwise user.deleted deactivates.
//! - **Groups**: members referenced by the GitHub SCIM user id (state of record, else an
//!   `externalId eq` lookup); membership changes are PATCH add/remove diffs, never PUT (a PUT without the full
//!   member list wipes the group).
//! - **Throttling**: 403 *or* 429 with `x-ratelimit-remaining: 0` or `retry-after` (or a
//!   rate-limit message) pauses the target — it is not an authentication failure — for
//!   retry-after, else until `x-ratelimit-reset`, else at least 60 s (docs/providers/github.md,
//!   "Rate limits").
//! - **Limits**: a ceiling of 5,000 requests/hour (≈1.39/s) by default, and a separate governor
//!   of 1,000 user creations per hour per target (GitHub's SCIM guidance, same section;
//!   `options.user_creates_per_hour`), divided between the connector's replicas
//!   (`SCIMRELAY_CONNECTOR_REPLICAS`) like the ceiling. The target's `interactive_share` of
//!   the creations is reserved for interactive events (a first login gets its account while a
//!   bulk load has spent the rest; `kit::budget`).
//! - **Organization-level SCIM** (`/scim/v2/organizations/{org}`) is a different API (no Groups,
//!   POST sends invitations, `active:false` deletes the SCIM identity): the profile's
//!   `Provider::check_target` refuses such a base_url when the connector starts, and converge
//!   refuses it too.
//!
//! Options (`targets[].options`): `shortcode` (the enterprise short code, enables the login
//! length check), `max_login_len` (default 39; 30 on GHE.com), `user_creates_per_hour`
//! (default 1000).

pub mod mapping;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use scimrelay_connector::breaker::Health;
use scimrelay_connector::kit::budget::LaneBudget;
use scimrelay_connector::kit::compare::replace_patch;
use scimrelay_connector::kit::{self, Deactivation, Dialect, Lookup, MemberChange, id_of};
use scimrelay_connector::limits::Feedback;
use scimrelay_connector::options::{self, TargetOptions};
use scimrelay_connector::{
    Assessment, ConvergeError, ConvergeInput, Converged, FailureClass, Provider, ProviderDefaults,
    classify, default_assess, provider::reset_wait,
};
use scimrelay_core::config::ProviderKind;
use scimrelay_core::config::{DeletePolicy, TargetConfig};
use scimrelay_proto::v1::{EventKind, Operation};
use scimrelay_scim::{
    PatchBuilder, ScimError, ScimRequest, ScimResponse, member_values, path_segment,
};

/// GitHub's primary REST budget for a PAT: 5,000 requests per hour.
pub const REQUESTS_PER_HOUR: f64 = 5_000.0;
/// GitHub's SCIM guidance: at most 1,000 users provisioned per hour.
pub const DEFAULT_USER_CREATES_PER_HOUR: u64 = 1_000;
/// Wait after a throttling answer that names no wait ("at least one minute":
/// docs/providers/github.md, "Rate limits").
pub const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);
/// Most member changes sent in one group PATCH (GitHub documents no maximum; 100 keeps each
/// request small and under the secondary limits).
pub const MEMBER_CHUNK: usize = 100;

/// GitHub's SCIM dialect for the shared operations: filtered lookups, a path-less `replace`
/// of `active` (GitHub suspends the account, which is reversible), no ETags.
pub const DIALECT: Dialect = Dialect {
    name: "GitHub",
    lookup: Lookup::Filter,
    deactivation: Deactivation::PatchValue,
    if_match: false,
};

/// The options a github target may set (`targets[i].options`), parsed at start.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GithubOptions {
    /// The enterprise's shortcode: GitHub appends `_<shortcode>` to every login, so with it
    /// the profile checks a login's length before creating the user.
    #[serde(default, deserialize_with = "options::text")]
    pub shortcode: Option<String>,
    /// The longest login GitHub accepts (at least 1; default
    /// [`mapping::DEFAULT_MAX_LOGIN_LEN`]).
    #[serde(default, deserialize_with = "options::at_least_one")]
    pub max_login_len: Option<u64>,
    /// User creations per hour the target may spend (at least 1; default
    /// [`DEFAULT_USER_CREATES_PER_HOUR`]), split across replicas.
    #[serde(default, deserialize_with = "options::at_least_one")]
    pub user_creates_per_hour: Option<u64>,
}

impl GithubOptions {
    /// [`GithubOptions::max_login_len`] or its default.
    pub fn max_login_len(&self) -> u64 {
        self.max_login_len
            .unwrap_or(mapping::DEFAULT_MAX_LOGIN_LEN as u64)
    }

    /// [`GithubOptions::user_creates_per_hour`] or its default.
    pub fn user_creates_per_hour(&self) -> u64 {
        self.user_creates_per_hour
            .unwrap_or(DEFAULT_USER_CREATES_PER_HOUR)
    }
}

/// The GitHub EMU profile.
#[derive(Default)]
pub struct Github {
    /// Each target's options.
    options: TargetOptions<GithubOptions>,
    /// The user-creation budget of each target (POST /Users only), with its interactive
    /// reserve.
    creates: Mutex<HashMap<String, Arc<LaneBudget>>>,
}

impl std::fmt::Debug for Github {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Github").finish_non_exhaustive()
    }
}

impl Github {
    /// A profile with no creation budget yet (one is made per target on its first creation).
    pub fn new() -> Self {
        Self::default()
    }

    fn creation_budget(&self, input: &ConvergeInput<'_>) -> Result<Arc<LaneBudget>, ConvergeError> {
        // At least 1 (the option is refused at 0 when the targets file is read; a replica's
        // share is never below 1).
        let per_hour = input
            .exec
            .share(self.options.get(input.target)?.user_creates_per_hour());
        let mut map = self
            .creates
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(map
            .entry(input.target.id.clone())
            .or_insert_with(|| {
                Arc::new(LaneBudget::per_hour(
                    per_hour,
                    input.target.interactive_share,
                    "GitHub's hourly budget of user creations",
                ))
            })
            .clone())
    }
}

/// Why a base URL cannot be served, when it is GitHub's organization-level SCIM API
/// (`…/scim/v2/organizations/{org}`), which this profile must not drive
/// (docs/providers/github.md, "Enable SCIM at GitHub"): it has no Groups, its POST sends
/// invitation e-mails and its `active:false` deletes the SCIM identity instead of suspending the
/// user.
pub fn org_level_scim(base_url: &str) -> Option<&'static str> {
    let rest = base_url.split_once("://").map_or(base_url, |(_, r)| r);
    let path = rest.split(['?', '#']).next().unwrap_or_default();
    let segments: Vec<&str> = path.split('/').skip(1).filter(|s| !s.is_empty()).collect();
    let org_level = segments.windows(3).any(|w| {
        w[0].eq_ignore_ascii_case("scim")
            && w[1].eq_ignore_ascii_case("v2")
            && w[2].eq_ignore_ascii_case("organizations")
    });
    org_level.then_some(
        "is GitHub's organization-level SCIM API (/scim/v2/organizations/{org}), which has no Groups, sends an invitation e-mail on every create and deletes the SCIM identity on active:false; github-connector serves only the Enterprise Managed Users API: use https://api.github.com/scim/v2/enterprises/{enterprise} (GHE.com: https://api.SUBDOMAIN.ghe.com/scim/v2/enterprises/{enterprise}; GHES: https://HOSTNAME/api/v3/scim/v2)",
    )
}

/// Whether an answer is GitHub throttling (primary or secondary rate limit, or the SCIM
/// user-creation budget) rather than a permission problem, and how long to wait.
pub fn throttle_wait(
    status: u16,
    headers: &http::HeaderMap,
    detail: Option<&str>,
) -> Option<Duration> {
    if !matches!(status, 403 | 429) {
        return None;
    }
    let retry_after =
        scimrelay_scim::error::retry_after_from_headers(headers, std::time::SystemTime::now());
    let exhausted = headers
        .get("x-ratelimit-remaining")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim() == "0");
    let says_rate_limit = detail.is_some_and(|d| d.to_ascii_lowercase().contains("rate limit"));
    if !(exhausted || retry_after.is_some() || says_rate_limit || status == 429) {
        return None;
    }
    Some(
        retry_after
            .or_else(|| exhausted.then(|| reset_wait(headers)).flatten())
            .unwrap_or(SECONDARY_LIMIT_WAIT),
    )
}

/// GitHub's classification: throttling (also as 403) is retried after its wait; the rest as
/// the default.
pub fn classify_github(e: &ScimError) -> ConvergeError {
    if let ScimError::Http {
        status,
        headers,
        detail,
        ..
    } = e
        && let Some(wait) = throttle_wait(*status, headers, detail.as_deref())
    {
        return ConvergeError {
            class: FailureClass::Retry,
            retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
            ..classify(e)
        };
    }
    classify(e)
}

/// The connector's `--help` paragraph ([`Provider::about`]).
pub const ABOUT: &str = "Delivers identity events to GitHub Enterprise Managed Users enterprises (EMU SCIM).\n\n\
Consumes the shard queues of every `provider: github` target in the targets file, \
converges each event at the enterprise's SCIM API (GitHub's required attributes, login \
normalisation, PATCH member diffs, 403/429 throttling, 5,000 requests and 1,000 user \
creations per hour) and publishes its outcome. GitHub's DELETE is permanent: it is sent \
only for targets with `delete_policy: delete`. Options: `shortcode`, `max_login_len`, \
`user_creates_per_hour` (docs/providers/github.md). A base_url of the organization-level \
SCIM API (`/scim/v2/organizations/{org}`) is refused at start: only the EMU enterprise \
API is served.";

impl Provider for Github {
    fn kind(&self) -> ProviderKind {
        ProviderKind::GITHUB
    }

    fn about(&self) -> &'static str {
        ABOUT
    }

    fn classify(&self, e: &ScimError) -> ConvergeError {
        classify_github(e)
    }

    fn check_options(&self, t: &TargetConfig) -> Option<(String, String)> {
        self.options.check(t).err()
    }

    /// An organization-level base_url is refused before any port is bound or queue consumed.
    fn check_target(&self, t: &TargetConfig) -> Option<(String, String)> {
        org_level_scim(&t.base_url).map(|why| {
            (
                "base_url".to_owned(),
                format!("{:?} (target {}) {why}", t.base_url, t.id),
            )
        })
    }

    fn defaults(&self) -> ProviderDefaults {
        ProviderDefaults {
            rate_limit_per_sec: Some(REQUESTS_PER_HOUR / 3600.0),
        }
    }

    fn assess(&self, result: Result<&ScimResponse, &ScimError>, latency: Duration) -> Assessment {
        if let Err(ScimError::Http {
            status,
            headers,
            detail,
            ..
        }) = result
            && let Some(wait) = throttle_wait(*status, headers, detail.as_deref())
        {
            return Assessment {
                feedback: Feedback::Throttled(Some(wait)),
                health: Health::Fine,
                hint: None,
            };
        }
        default_assess(result, latency)
    }

    fn converge<'a>(
        &'a self,
        input: ConvergeInput<'a>,
    ) -> BoxFuture<'a, Result<Converged, ConvergeError>> {
        Box::pin(async move {
            // The connector refuses such a target at start; this guards every other caller.
            if let Some(why) = org_level_scim(&input.target.base_url) {
                return Err(ConvergeError::new(
                    FailureClass::Permanent,
                    format!("targets file: target {} base_url {why}", input.target.id),
                ));
            }
            match input.event.kind() {
                EventKind::UserUpserted => self.upsert_user(&input).await,
                EventKind::UserDeactivated => DIALECT.deactivate_user(&input).await,
                EventKind::UserDeleted => match input.target.delete_policy {
                    DeletePolicy::Deactivate => DIALECT.deactivate_user(&input).await.map(|c| {
                        c.with_detail("delete_policy is deactivate: the user was suspended (active=false), not deleted; GitHub's DELETE is permanent and needs delete_policy: delete")
                    }),
                    DeletePolicy::Delete => DIALECT.delete(&input, "Users").await.map(|c| {
                        if c.operation == Operation::Deleted {
                            c.with_detail("permanently deprovisioned at GitHub (delete_policy: delete)")
                        } else {
                            c
                        }
                    }),
                },
                EventKind::GroupUpserted => upsert_group(&input).await,
                EventKind::GroupDeleted => DIALECT.delete(&input, "Groups").await,
                EventKind::Unspecified => Err(ConvergeError::new(
                    FailureClass::Permanent,
                    "event has no kind",
                )),
            }
        })
    }
}

/// One `replace` per differing top-level attribute, whole values (no filtered paths). Nothing is
/// ever removed: every attribute this profile sends is one GitHub requires (a cleared
/// displayName is sent as "givenName familyName"; a missing name or e-mail fails before any
/// request), and a dropped e-mail goes with the replaced `emails` value.
fn user_patch(desired: &Value, existing: &Value) -> PatchBuilder {
    replace_patch(desired, existing)
}

impl Github {
    async fn upsert_user(&self, input: &ConvergeInput<'_>) -> Result<Converged, ConvergeError> {
        let user = kit::user_of(input)?;
        let options = self.options.get(input.target)?;
        let (shortcode, max_len) = (options.shortcode.clone(), options.max_login_len());
        mapping::check_login(
            &user.id,
            &user.user_name,
            shortcode.as_deref(),
            usize::try_from(max_len).unwrap_or(usize::MAX),
        )?;
        let desired = kit::linked(input, mapping::user_resource(user, user.active)?);
        if let Some((existing, _)) = DIALECT.current(input, "Users").await? {
            return kit::patch_user(input, &existing, &desired, user_patch, Operation::Updated)
                .await;
        }
        if !input.exec.is_plan() {
            self.creation_budget(input)?
                .spend(
                    input.exec.lane(),
                    input.exec.hold_left(),
                    "options.user_creates_per_hour",
                )
                .await?;
        }
        match DIALECT
            .create_user(input, &desired, &user.user_name, user_patch)
            .await?
        {
            Ok(done) => Ok(done),
            Err(e) if kit::is_conflict(&e) => {
                let login = shortcode
                    .as_deref()
                    .map(|c| mapping::login(&user.user_name, c))
                    .unwrap_or_else(|| {
                        format!("{}_<shortcode>", mapping::normalize(&user.user_name))
                    });
                Err(ConvergeError {
                    class: FailureClass::Permanent,
                    detail: format!(
                        "user {}: GitHub refused the create as a duplicate, but no user has this externalId or userName: the userName normalises to the login {login:?}, which another user of the enterprise already has (GitHub username normalisation clash); give one of them a different userName",
                        user.id
                    ),
                    ..input.exec.classify(&e)
                })
            }
            Err(e) => Err(input.exec.classify(&e)),
        }
    }
}

/// One GitHub membership PATCH: `add` with the new members, `remove` with `path: members` and
/// the members as value (no filtered path).
pub fn member_patch(changes: &[MemberChange]) -> Value {
    let add: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            MemberChange::Add(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let remove: Vec<&str> = changes
        .iter()
        .filter_map(|c| match c {
            MemberChange::Remove(id) => Some(id.as_str()),
            _ => None,
        })
        .collect();
    let mut p = PatchBuilder::new();
    if !remove.is_empty() {
        p = p.remove("members", Some(member_values(remove)));
    }
    if !add.is_empty() {
        p = p.add(Some("members"), member_values(add));
    }
    p.build()
}

async fn upsert_group(input: &ConvergeInput<'_>) -> Result<Converged, ConvergeError> {
    let group = kit::group_of(input)?;
    let members = DIALECT.group_members(input).await?;
    let desired_set: BTreeSet<String> = members.iter().cloned().collect();
    let (existing, op) = match DIALECT.current(input, "Groups").await? {
        Some((g, _)) => (g, Operation::Updated),
        None => {
            let first: Vec<String> = members.iter().take(MEMBER_CHUNK).cloned().collect();
            let body = kit::linked(input, mapping::group_resource(group, &first));
            match input.exec.send(ScimRequest::post("/Groups", body)).await {
                Ok(resp) => {
                    let id = kit::created_id(&resp)?;
                    let rest: Vec<MemberChange> = members
                        .iter()
                        .skip(MEMBER_CHUNK)
                        .cloned()
                        .map(MemberChange::Add)
                        .collect();
                    kit::patch_members_chunked(
                        input.exec,
                        &format!("/Groups/{}", path_segment(&id)),
                        &rest,
                        MEMBER_CHUNK,
                        member_patch,
                        |_| {},
                    )
                    .await?;
                    return Ok(Converged::new(Operation::Created, id).with_members(members));
                }
                Err(e) if kit::is_conflict(&e) => {
                    let (g, _) = DIALECT
                        .adoptable(
                            input,
                            "Groups",
                            &[
                                ("externalId", &input.external_id()),
                                ("displayName", &group.display_name),
                            ],
                        )
                        .await?
                        .ok_or_else(|| ConvergeError {
                            detail:
                                "409 on group create but no group found by externalId or displayName"
                                    .into(),
                            ..input.exec.classify(&e)
                        })?;
                    (g, Operation::Adopted)
                }
                Err(e) => return Err(input.exec.classify(&e)),
            }
        }
    };
    let id = id_of(&existing)
        .ok_or_else(|| ConvergeError::new(FailureClass::Permanent, "remote group has no id"))?;
    let path = format!("/Groups/{}", path_segment(&id));
    // GitHub returns the members of a group; a list answer may omit them, so read the group.
    let existing = kit::with_members(input.exec, existing).await?;
    let mut sent = 0;
    let mut rename = PatchBuilder::new();
    if existing.get("displayName").and_then(Value::as_str) != Some(group.display_name.as_str()) {
        rename = rename.replace(Some("displayName"), json!(group.display_name));
    }
    let external_id = input.external_id();
    if existing.get("externalId").and_then(Value::as_str) != Some(external_id.as_str()) {
        rename = rename.replace(Some("externalId"), json!(external_id));
    }
    if !rename.is_empty() {
        kit::send(input.exec, ScimRequest::patch(&path, rename.build())).await?;
        sent += 1;
    }
    let changes = kit::member_diff(&kit::member_ids(&existing), &desired_set);
    sent += kit::patch_members_chunked(
        input.exec,
        &path,
        &changes,
        MEMBER_CHUNK,
        member_patch,
        |_| {},
    )
    .await?;
    let op = if sent == 0 && op == Operation::Updated {
        Operation::Noop
    } else {
        op
    };
    Ok(Converged::new(op, id).with_members(members))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn a_403_with_rate_limit_headers_is_throttling_not_auth() {
        let h = headers(&[("x-ratelimit-remaining", "0"), ("retry-after", "7")]);
        assert_eq!(throttle_wait(403, &h, None), Some(Duration::from_secs(7)));
        let reset = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() + 120)
            .unwrap_or_default();
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset.to_string()),
        ]);
        let w = throttle_wait(403, &h, None).expect("throttled");
        assert!(
            w > Duration::from_secs(100) && w <= Duration::from_secs(120),
            "{w:?}"
        );
        // A secondary limit names no wait: at least a minute.
        assert_eq!(
            throttle_wait(
                403,
                &HeaderMap::new(),
                Some("You have exceeded a secondary rate limit")
            ),
            Some(SECONDARY_LIMIT_WAIT)
        );
        assert_eq!(
            throttle_wait(429, &HeaderMap::new(), None),
            Some(SECONDARY_LIMIT_WAIT)
        );
        // A plain 403 is a permission problem.
        assert_eq!(
            throttle_wait(
                403,
                &headers(&[("x-ratelimit-remaining", "4999")]),
                Some("Forbidden")
            ),
            None
        );
    }

    #[test]
    fn assess_reads_403_throttling() {
        let gh = Github::new();
        let err = ScimError::Http {
            status: 403,
            scim_type: None,
            detail: Some("API rate limit exceeded".into()),
            error_code: None,
            retry_after: None,
            headers: Box::new(headers(&[("retry-after", "3")])),
        };
        let a = gh.assess(Err(&err), Duration::from_millis(5));
        assert_eq!(
            a.feedback,
            Feedback::Throttled(Some(Duration::from_secs(3)))
        );
        assert_eq!(a.health, Health::Fine);
        assert_eq!(classify_github(&err).class, FailureClass::Retry);
        let denied = ScimError::Http {
            status: 403,
            scim_type: None,
            detail: Some("Must have admin rights".into()),
            error_code: None,
            retry_after: None,
            headers: Box::new(HeaderMap::new()),
        };
        assert_eq!(
            gh.assess(Err(&denied), Duration::ZERO).health,
            Health::AuthFailed
        );
        assert_eq!(classify_github(&denied).class, FailureClass::Permanent);
    }

    #[test]
    fn only_the_organization_level_api_is_recognised_as_org_scim() {
        for url in [
            "https://api.github.com/scim/v2/organizations/acme",
            "https://api.github.com/scim/v2/organizations/acme/",
            "https://api.github.com/scim/v2/Organizations/acme?x=1",
            "http://127.0.0.1:9/scim/v2/organizations/acme",
        ] {
            assert!(org_level_scim(url).is_some(), "{url}");
        }
        for url in [
            "https://api.github.com/scim/v2/enterprises/acme",
            "https://api.acme.ghe.com/scim/v2/enterprises/acme",
            "https://ghes.example/api/v3/scim/v2",
            "https://ghes.example/api/v3/scim/v2/enterprises/organizations",
            "https://organizations.example/scim/v2/enterprises/acme",
        ] {
            assert!(org_level_scim(url).is_none(), "{url}");
        }
    }

    #[test]
    fn defaults_are_the_published_rest_budget() {
        let r = Github::new()
            .defaults()
            .rate_limit_per_sec
            .unwrap_or_default();
        assert!((r - 1.388).abs() < 0.01, "{r}");
    }

    #[test]
    fn member_patch_has_no_filtered_paths() {
        let body = member_patch(&[
            MemberChange::Remove("a".into()),
            MemberChange::Add("b".into()),
        ]);
        assert_eq!(
            body["Operations"],
            json!([
                {"op": "remove", "path": "members", "value": [{"value": "a"}]},
                {"op": "add", "path": "members", "value": [{"value": "b"}]}
            ])
        );
    }

    #[test]
    fn user_patch_replaces_whole_attributes() {
        let desired = json!({"schemas": [], "name": {"givenName": "A", "familyName": "B"}, "emails": [{"value": "x@y.z", "type": "work", "primary": true}]});
        let existing = json!({"id": "1", "name": {"givenName": "A", "familyName": "C"}, "emails": [{"value": "x@y.z", "type": "work", "primary": true}]});
        let ops = user_patch(&desired, &existing).build()["Operations"].clone();
        assert_eq!(
            ops,
            json!([{"op": "replace", "path": "name", "value": {"givenName": "A", "familyName": "B"}}])
        );
    }
}
