//! GitHub Enterprise Managed Users mode (docs/providers/github.md):
//! `/scim/v2/enterprises/{tenant}/Users` and `/Groups` with GitHub's required attributes, login
//! normalisation, suspension on `active:false`, permanent DELETE, `eq`-only filters, its
//! scim-error body, the `x-ratelimit-*` headers, a primary hourly request budget and the hourly
//! user-creation budget.
//!
//! Choices where GitHub's documentation is silent or contradicts itself:
//! - A request without `User-Agent` gets 403 with GitHub's REST text ("Request forbidden by
//!   administrative rules…"), which is what api.github.com answers.
//! - Filtered PATCH paths (`emails[type eq "work"].value`, `members[value eq "…"]`) are documented
//!   as ineffective; the simulator refuses them with 400 `invalidPath` so a client notices.
//! - The largest page is 100 (`count` above is clamped); the default is 30.
//! - Group PATCH answers 200 with the group, or 204 for a configurable fraction of requests.
//! - Over the user-creation budget the answer is always 403 (GitHub's "rate limit" failure);
//!   over the primary budget or the `rate_limit` fault it is the tenant's `throttle_status`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use crate::config::{GithubConfig, Mode, TenantConfig};
use crate::error::{ErrorStyle, ScimError};
use crate::filter::{self, CompareOp, Filter};
use crate::gate::{GateSpec, ModeHooks, Throttled, gate};
use crate::http::{origin, parse_body, scim_json};
use crate::modes::scim::{int_param, param, resource_response};
use crate::patch;
use crate::schema::{self, Kind, LIST_RESPONSE_SCHEMA};
use crate::store::{Store, UniqueKey, now_rfc3339};
use crate::tenant::{App, ModeState, Tenant};

/// The route prefix (path class = the rest of the route).
pub const PREFIX: &str = "/scim/v2/enterprises/{tenant}/";

/// Default and largest page sizes of list requests.
pub const DEFAULT_COUNT: usize = 30;
/// Largest page GitHub is assumed to return (undocumented; 100 is GitHub's REST maximum).
pub const MAX_COUNT: usize = 100;

/// The rate-limit window of GitHub's primary and SCIM budgets.
const HOUR: Duration = Duration::from_secs(3600);

/// Where GitHub's REST rate-limit errors point.
const RATE_LIMIT_DOCS: &str =
    "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api";

/// Uniqueness of the normalised login (lower-cased: GitHub logins are case-insensitive).
pub const LOGIN_KEY: UniqueKey = UniqueKey {
    name: "login",
    extract: login_key,
    filter_attr: None,
};

fn login_key(body: &Map<String, Value>) -> Option<String> {
    body.get("userName")
        .and_then(Value::as_str)
        .map(|u| normalize(u).to_lowercase())
}

/// GitHub's login normalisation without the `_SHORTCODE` suffix: drop everything from `@`,
/// drop everything up to a `\`, turn every character other than letters and digits into `-`,
/// collapse `--` and trim `-` at both ends. Case is kept.
///
/// Written here again on purpose, not taken from the github profile: the simulator is the
/// profile's test oracle, and sharing the function would let one mistake pass both sides.
pub fn normalize(user_name: &str) -> String {
    let name = user_name.rsplit('\\').next().unwrap_or_default();
    let name = name.split('@').next().unwrap_or_default();
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

/// The login a user name becomes in an enterprise with `shortcode`.
pub fn login(user_name: &str, shortcode: &str) -> String {
    format!("{}_{shortcode}", normalize(user_name))
}

/// A short stable hash (FNV-1a) for suspended logins and obfuscated emails.
fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fixed one-hour window counting uses, restarting when it has run out.
#[derive(Debug)]
struct HourWindow {
    /// When the window began.
    start: Instant,
    /// The window's end as UTC epoch seconds (`x-ratelimit-reset`).
    reset_epoch: u64,
    /// Uses within the window.
    used: u64,
}

impl HourWindow {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            reset_epoch: epoch_secs() + HOUR.as_secs(),
            used: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        if now.saturating_duration_since(self.start) >= HOUR {
            *self = Self::new();
        }
    }

    fn secs_to_reset(&self) -> u64 {
        self.reset_epoch.saturating_sub(epoch_secs()).max(1)
    }
}

/// GitHub-specific state of a tenant.
#[derive(Debug)]
pub struct State {
    /// The tenant's knobs.
    cfg: GithubConfig,
    /// Appended to every login.
    shortcode: String,
    /// Primary REST budget (requests per hour).
    requests: Mutex<HourWindow>,
    /// SCIM user-creation budget (users per hour).
    creates: Mutex<HourWindow>,
    /// Hard-deleted users (id, userName, externalId, deletedAt), for the admin API.
    deleted: Mutex<Vec<Value>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl State {
    /// Fresh state for a tenant.
    pub fn new(config: &TenantConfig) -> Self {
        let cfg = config.github();
        let shortcode = cfg.shortcode.clone().unwrap_or_else(|| {
            let s: String = config
                .id
                .chars()
                .filter(char::is_ascii_alphanumeric)
                .collect::<String>()
                .to_lowercase();
            if s.is_empty() { "sim".into() } else { s }
        });
        Self {
            cfg,
            shortcode,
            requests: Mutex::new(HourWindow::new()),
            creates: Mutex::new(HourWindow::new()),
            deleted: Mutex::new(Vec::new()),
        }
    }

    /// Forgets windows and deleted users.
    pub fn reset(&self) {
        *lock(&self.requests) = HourWindow::new();
        *lock(&self.creates) = HourWindow::new();
        lock(&self.deleted).clear();
    }

    /// The enterprise short code.
    pub fn shortcode(&self) -> &str {
        &self.shortcode
    }

    /// Hard-deleted users, oldest first.
    pub fn deleted(&self) -> Vec<Value> {
        lock(&self.deleted).clone()
    }

    /// The GitHub accounts behind the SCIM users: login, email and whether suspended. A
    /// suspended account's login is a hash plus `_SHORTCODE` and its email is obfuscated;
    /// reactivation restores both (they are derived from the SCIM identity).
    pub fn accounts(&self, store: &Store) -> Vec<Value> {
        store
            .users
            .iter()
            .map(|r| {
                let user_name = r.body.get("userName").and_then(Value::as_str).unwrap_or("");
                let suspended = r.body.get("active") == Some(&Value::Bool(false));
                let email = r
                    .body
                    .get("emails")
                    .and_then(Value::as_array)
                    .and_then(|e| {
                        e.iter()
                            .find(|m| m.get("primary") == Some(&Value::Bool(true)))
                            .or_else(|| e.first())
                    })
                    .and_then(|m| m.get("value"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let hash = short_hash(&r.id);
                let (login, email) = if suspended {
                    (
                        format!("{}_{}", &hash[..12], self.shortcode),
                        format!("{hash}+{}@users.noreply.github.com", self.shortcode),
                    )
                } else {
                    (login(user_name, &self.shortcode), email.to_string())
                };
                json!({
                    "id": r.id,
                    "userName": user_name,
                    "login": login,
                    "email": email,
                    "suspended": suspended,
                })
            })
            .collect()
    }

    fn throttle_status(&self) -> StatusCode {
        StatusCode::from_u16(self.cfg.throttle_status).unwrap_or(StatusCode::TOO_MANY_REQUESTS)
    }

    /// Takes one unit of the user-creation budget; `Err(secs to reset)` when it is spent.
    fn take_create(&self) -> Result<(), u64> {
        if self.cfg.user_creates_per_hour == 0 {
            return Ok(());
        }
        let mut w = lock(&self.creates);
        w.roll(Instant::now());
        if w.used >= self.cfg.user_creates_per_hour {
            return Err(w.secs_to_reset());
        }
        w.used += 1;
        Ok(())
    }

    /// Gives back a creation unit after a create that failed.
    fn refund_create(&self) {
        let mut w = lock(&self.creates);
        w.used = w.used.saturating_sub(1);
    }
}

fn state(tenant: &Tenant) -> Result<&State, ScimError> {
    match &tenant.ext {
        ModeState::Github(s) => Ok(s),
        _ => Err(ScimError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "tenant has no GitHub state",
        )),
    }
}

/// A throttling answer in GitHub's shape, marked for statistics.
fn throttle_response(status: StatusCode, message: String, retry_after: u64) -> Response {
    let e = ScimError::new(status, None, message).styled(ErrorStyle::Github);
    let mut body = e.body();
    if let Some(o) = body.as_object_mut() {
        o.insert("documentation_url".into(), RATE_LIMIT_DOCS.into());
    }
    let mut r = e
        .with_raw(body)
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after))
        .into_response();
    r.extensions_mut().insert(Throttled);
    r
}

/// GitHub's gate behaviour.
#[derive(Debug)]
pub struct GithubHooks;

impl ModeHooks for GithubHooks {
    fn style(&self) -> ErrorStyle {
        ErrorStyle::Github
    }

    fn admit(
        &self,
        tenant: &Tenant,
        _method: &Method,
        _path: &str,
        headers: &HeaderMap,
    ) -> Option<(Response, bool)> {
        if headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v.trim().is_empty())
        {
            let r = ScimError::new(
                StatusCode::FORBIDDEN,
                None,
                "Request forbidden by administrative rules. Please make sure your request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). Check https://developer.github.com for other possible causes.",
            )
            .styled(ErrorStyle::Github)
            .into_response();
            return Some((r, false));
        }
        let s = state(tenant).ok()?;
        if s.cfg.requests_per_hour == 0 {
            return None;
        }
        let mut w = lock(&s.requests);
        w.roll(Instant::now());
        if w.used >= s.cfg.requests_per_hour {
            let wait = w.secs_to_reset();
            drop(w);
            let r = throttle_response(
                s.throttle_status(),
                "API rate limit exceeded for user. (But here's the good news: Authenticated requests get a higher rate limit. Check out the documentation for more details.)".into(),
                wait,
            );
            return Some((r, true));
        }
        w.used += 1;
        None
    }

    fn unauthorized(&self, _tenant: &Tenant, _detail: &str) -> Response {
        ScimError::unauthorized("Bad credentials")
            .styled(ErrorStyle::Github)
            .into_response()
    }

    fn throttled(&self, tenant: &Tenant, _per_sec: f64, wait_secs: u64) -> Response {
        let status = state(tenant)
            .map(State::throttle_status)
            .unwrap_or(StatusCode::TOO_MANY_REQUESTS);
        throttle_response(
            status,
            "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.".into(),
            wait_secs,
        )
    }

    fn finish(&self, tenant: &Tenant, response: &mut Response) {
        let Ok(s) = state(tenant) else { return };
        let (limit, used, reset) = {
            let w = lock(&s.requests);
            let limit = if s.cfg.requests_per_hour == 0 {
                u64::from(u32::MAX)
            } else {
                s.cfg.requests_per_hour
            };
            (limit, w.used, w.reset_epoch)
        };
        let h = response.headers_mut();
        let mut put = |name: &'static str, v: u64| {
            h.insert(HeaderName::from_static(name), HeaderValue::from(v));
        };
        put("x-ratelimit-limit", limit);
        put("x-ratelimit-remaining", limit.saturating_sub(used));
        put("x-ratelimit-used", used);
        put("x-ratelimit-reset", reset);
        h.insert(
            HeaderName::from_static("x-ratelimit-resource"),
            HeaderValue::from_static("core"),
        );
    }
}

/// Selects users or groups for a generic handler.
trait KindOf: Send + Sync + 'static {
    const KIND: Kind;
}
struct Users;
struct Groups;
impl KindOf for Users {
    const KIND: Kind = Kind::User;
}
impl KindOf for Groups {
    const KIND: Kind = Kind::Group;
}

/// The routes of github-mode tenants, behind the tenant gate.
pub fn routes(app: Arc<App>) -> Router {
    let spec = GateSpec {
        mode: Mode::Github,
        prefix: PREFIX,
        hooks: &GithubHooks,
    };
    Router::new()
        .route(
            "/scim/v2/enterprises/{tenant}/Users",
            get(list::<Users>).post(create::<Users>),
        )
        .route(
            "/scim/v2/enterprises/{tenant}/Users/{id}",
            get(read::<Users>)
                .put(replace::<Users>)
                .patch(modify::<Users>)
                .delete(remove::<Users>),
        )
        .route(
            "/scim/v2/enterprises/{tenant}/Groups",
            get(list::<Groups>).post(create::<Groups>),
        )
        .route(
            "/scim/v2/enterprises/{tenant}/Groups/{id}",
            get(read::<Groups>)
                .put(replace::<Groups>)
                .patch(modify::<Groups>)
                .delete(remove::<Groups>),
        )
        .route_layer(middleware::from_fn_with_state((app, spec), gate))
}

fn base(headers: &HeaderMap, tenant: &Tenant) -> String {
    format!("{}/scim/v2/enterprises/{}", origin(headers), tenant.id())
}

fn not_found(kind: Kind, id: &str) -> ScimError {
    ScimError::not_found(format!("Resource {} {id} not found", kind.resource_type()))
}

fn required(detail: String) -> ScimError {
    ScimError::invalid_value(detail)
}

fn non_empty_str(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty())
}

/// The request body's `schemas` must name only the core schema of `kind`, and no attribute may
/// be keyed by an extension URN (GitHub has no enterprise extension).
fn check_schemas(kind: Kind, obj: &Map<String, Value>) -> Result<(), ScimError> {
    let Some(Value::Array(schemas)) = filter::get_ci(obj, "schemas") else {
        return Err(required(format!(
            "attribute 'schemas' is required and must be [\"{}\"]",
            kind.core_schema()
        )));
    };
    if schemas.is_empty()
        || schemas
            .iter()
            .any(|s| !s.as_str().is_some_and(|s| schema::is_core(kind, s)))
    {
        return Err(required(format!(
            "only the core schema \"{}\" is supported; extension schemas are not",
            kind.core_schema()
        )));
    }
    if let Some(k) = obj
        .keys()
        .find(|k| k.to_ascii_lowercase().starts_with("urn:"))
    {
        return Err(required(format!(
            "extension attributes are not supported: {k:?}"
        )));
    }
    Ok(())
}

/// GitHub's required user attributes (docs/providers/github.md, "What GitHub documents").
fn check_user(obj: &Map<String, Value>) -> Result<(), ScimError> {
    for key in ["externalId", "userName", "displayName"] {
        if !non_empty_str(obj, key) {
            return Err(required(format!("attribute '{key}' is required")));
        }
    }
    if !obj.get("active").is_some_and(Value::is_boolean) {
        return Err(required(
            "attribute 'active' is required and must be a boolean".into(),
        ));
    }
    let name = obj.get("name").and_then(Value::as_object);
    for sub in ["givenName", "familyName"] {
        if !name.is_some_and(|n| non_empty_str(n, sub)) {
            return Err(required(format!("attribute 'name.{sub}' is required")));
        }
    }
    let Some(emails) = obj
        .get("emails")
        .and_then(Value::as_array)
        .filter(|e| !e.is_empty())
    else {
        return Err(required("attribute 'emails' is required".into()));
    };
    for (i, e) in emails.iter().enumerate() {
        let Some(e) = e.as_object() else {
            return Err(required(format!(
                "attribute 'emails[{i}]' must be an object"
            )));
        };
        if !non_empty_str(e, "value") || !non_empty_str(e, "type") {
            return Err(required(format!(
                "attributes 'emails[{i}].value' and 'emails[{i}].type' are required"
            )));
        }
        if !e.get("primary").is_some_and(Value::is_boolean) {
            return Err(required(format!(
                "attribute 'emails[{i}].primary' is required"
            )));
        }
    }
    Ok(())
}

fn check_group(obj: &Map<String, Value>) -> Result<(), ScimError> {
    for key in ["externalId", "displayName"] {
        if !non_empty_str(obj, key) {
            return Err(required(format!("attribute '{key}' is required")));
        }
    }
    Ok(())
}

/// Canonicalises and validates a stored representation.
fn finish_body(kind: Kind, obj: &mut Map<String, Value>) -> Result<(), ScimError> {
    schema::canonicalize(kind, obj);
    obj.remove("id");
    obj.remove("meta");
    obj.remove("password");
    if kind == Kind::User {
        obj.remove("groups");
    }
    schema::validate(kind, obj)?;
    match kind {
        Kind::User => check_user(obj),
        Kind::Group => check_group(obj),
    }
}

/// 400 when the user name normalises to nothing or to a login over the limit.
fn check_login(s: &State, obj: &Map<String, Value>) -> Result<(), ScimError> {
    let user_name = obj.get("userName").and_then(Value::as_str).unwrap_or("");
    if normalize(user_name).is_empty() {
        return Err(ScimError::invalid_value(format!(
            "userName {user_name:?} normalises to an empty login"
        )));
    }
    let l = login(user_name, &s.shortcode);
    if l.chars().count() > s.cfg.max_login_len {
        return Err(ScimError::invalid_value(format!(
            "userName {user_name:?} normalises to the login {l:?}, longer than {} characters",
            s.cfg.max_login_len
        )));
    }
    Ok(())
}

/// Group members must be GitHub SCIM user ids.
fn check_members(store: &Store, obj: &Map<String, Value>) -> Result<(), ScimError> {
    let Some(Value::Array(members)) = obj.get("members") else {
        return Ok(());
    };
    for (i, m) in members.iter().enumerate() {
        let Some(v) = m.get("value").and_then(Value::as_str) else {
            return Err(required(format!(
                "attribute 'members[{i}].value' is required"
            )));
        };
        if !store.users.contains(v) {
            return Err(ScimError::invalid_value(format!(
                "members[{i}].value {v:?} is not the id of a SCIM user of this enterprise; \
                 members are referenced by the GitHub SCIM user id (not externalId or email)"
            )));
        }
    }
    Ok(())
}

fn conflict(e: ScimError) -> ScimError {
    if e.status == StatusCode::CONFLICT {
        ScimError::uniqueness(format!("Duplicate record detected: {}", e.detail))
    } else {
        e
    }
}

/// Only `attr eq "value"` on the attributes GitHub documents.
fn parse_list_filter(kind: Kind, raw: &str) -> Result<Filter, ScimError> {
    let allowed: &[&str] = match kind {
        Kind::User => &["userName", "externalId", "id", "displayName"],
        Kind::Group => &["externalId", "id", "displayName"],
    };
    let f = filter::parse_filter(raw)
        .map_err(|e| ScimError::invalid_filter(format!("filter {raw:?}: {e}")))?;
    match &f {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: Value::String(_),
        } if path.schema.is_none()
            && path.sub.is_none()
            && allowed.iter().any(|a| a.eq_ignore_ascii_case(&path.attr)) =>
        {
            Ok(f)
        }
        _ => Err(ScimError::invalid_filter(format!(
            "unsupported filter {raw:?}: only `ATTR eq \"value\"` on {} is supported (no compound filters)",
            allowed.join(", ")
        ))),
    }
}

fn excludes_members(q: &[(String, String)]) -> bool {
    param(q, "excludedAttributes").is_some_and(|v| {
        v.split(',')
            .any(|a| a.trim().eq_ignore_ascii_case("members"))
    })
}

async fn list<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    let filter = match param(&q, "filter") {
        Some(f) if !f.trim().is_empty() => Some(parse_list_filter(K::KIND, f)?),
        _ => None,
    };
    let start = int_param(&q, "startIndex")?.unwrap_or(1).max(1) as usize;
    let count =
        int_param(&q, "count")?.map_or(DEFAULT_COUNT, |c| c.clamp(0, MAX_COUNT as i64) as usize);
    let (total, mut page) = tenant
        .read()
        .collection(K::KIND)
        .query(filter.as_ref(), start, count);
    if K::KIND == Kind::Group && excludes_members(&q) {
        for g in &mut page {
            if let Some(o) = g.as_object_mut() {
                o.remove("members");
            }
        }
    }
    Ok(scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_RESPONSE_SCHEMA],
            "totalResults": total,
            "itemsPerPage": page.len(),
            "startIndex": start,
            "Resources": page,
        }),
    ))
}

fn prepare(kind: Kind, value: Value) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(mut obj) = value else {
        return Err(ScimError::invalid_syntax(
            "the request body must be a JSON object",
        ));
    };
    check_schemas(kind, &obj)?;
    finish_body(kind, &mut obj)?;
    Ok(obj)
}

async fn create<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    let s = state(&tenant)?;
    let obj = prepare(kind, parse_body(&headers, &body)?)?;
    let base = base(&headers, &tenant);
    if kind == Kind::User {
        check_login(s, &obj)?;
        if let Err(wait) = s.take_create() {
            return Ok(throttle_response(
                StatusCode::FORBIDDEN,
                format!(
                    "rate limit exceeded: at most {} users may be provisioned per hour; retry after the reset",
                    s.cfg.user_creates_per_hour
                ),
                wait,
            ));
        }
    }
    let mut store = tenant.write();
    if kind == Kind::Group {
        check_members(&store, &obj)?;
    }
    match store.collection_mut(kind).insert(obj, &base) {
        Ok(r) => Ok(resource_response(StatusCode::CREATED, r, true)),
        Err(e) => {
            if kind == Kind::User {
                s.refund_create();
            }
            Err(conflict(e))
        }
    }
}

async fn read<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    let store = tenant.read();
    let r = store
        .collection(K::KIND)
        .get(&id)
        .ok_or_else(|| not_found(K::KIND, &id))?;
    if K::KIND == Kind::Group && excludes_members(&q) {
        let mut body = r.body.clone();
        body.remove("members");
        return Ok(scim_json(StatusCode::OK, &body));
    }
    Ok(resource_response(StatusCode::OK, r, false))
}

async fn replace<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    let s = state(&tenant)?;
    let obj = prepare(kind, parse_body(&headers, &body)?)?;
    if kind == Kind::User {
        check_login(s, &obj)?;
    }
    let mut store = tenant.write();
    if !store.collection(kind).contains(&id) {
        return Err(not_found(kind, &id));
    }
    if kind == Kind::Group {
        check_members(&store, &obj)?;
    }
    let r = store
        .collection_mut(kind)
        .replace(&id, obj)
        .map_err(conflict)?;
    Ok(resource_response(StatusCode::OK, r, false))
}

/// Refuses filtered paths and extension paths before the generic PATCH engine runs.
fn check_ops(ops: &[patch::Operation]) -> Result<(), ScimError> {
    for (i, op) in ops.iter().enumerate() {
        if let Some(p) = &op.path {
            if p.filter.is_some() {
                return Err(ScimError::invalid_path(format!(
                    "Operations[{i}]: filtered paths are not supported by GitHub (documented as ineffective); send the whole attribute"
                )));
            }
            if p.path.schema.is_some() {
                return Err(ScimError::invalid_path(format!(
                    "Operations[{i}]: extension attributes are not supported"
                )));
            }
        } else if let Some(Value::Object(v)) = &op.value
            && let Some(k) = v
                .keys()
                .find(|k| k.to_ascii_lowercase().starts_with("urn:"))
        {
            return Err(ScimError::invalid_path(format!(
                "Operations[{i}]: extension attributes are not supported: {k:?}"
            )));
        }
    }
    Ok(())
}

async fn modify<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    let s = state(&tenant)?;
    let ops = patch::parse_request(&parse_body(&headers, &body)?)?;
    check_ops(&ops)?;
    let mut store = tenant.write();
    let current = store
        .collection(kind)
        .get(&id)
        .ok_or_else(|| not_found(kind, &id))?;
    let mut obj = current.body.clone();
    patch::apply(kind, &mut obj, &ops)?;
    finish_body(kind, &mut obj)?;
    if kind == Kind::User {
        check_login(s, &obj)?;
    } else {
        check_members(&store, &obj)?;
    }
    let r = store
        .collection_mut(kind)
        .replace(&id, obj)
        .map_err(conflict)?;
    if kind == Kind::Group
        && s.cfg.group_patch_204_rate > 0.0
        && rand::random::<f64>() < s.cfg.group_patch_204_rate
    {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    Ok(resource_response(StatusCode::OK, r, false))
}

async fn remove<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    let s = state(&tenant)?;
    let mut store = tenant.write();
    let Some(gone) = store.collection_mut(kind).remove(&id) else {
        return Err(not_found(kind, &id));
    };
    store.forget_member(&id);
    drop(store);
    if kind == Kind::User {
        lock(&s.deleted).push(json!({
            "id": gone.id,
            "userName": gone.body.get("userName"),
            "externalId": gone.body.get("externalId"),
            "deletedAt": now_rfc3339(),
        }));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_follows_githubs_rules() {
        assert_eq!(normalize("bob@contoso.com"), "bob");
        assert_eq!(normalize("bob@fabrikam.com"), "bob");
        assert_eq!(normalize("CONTOSO\\Jane.Doe"), "Jane-Doe");
        assert_eq!(normalize("john.smith@a.com"), "john-smith");
        assert_eq!(normalize("a..b"), "a-b");
        assert_eq!(normalize(".x."), "x");
        assert_eq!(normalize("@x"), "");
        assert_eq!(login("Mona.Lisa@octo.com", "acme"), "Mona-Lisa_acme");
    }
}
