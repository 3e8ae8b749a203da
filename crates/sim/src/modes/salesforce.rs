//! Salesforce mode (docs/providers/salesforce.md): `/{tenant}/services/scim/v2/...` (the tenant
//! segment stands for the org's My Domain host) with discovery at `/ServiceProviderConfigs`
//! (plural), `/Entitlements` and `/Roles`; one profile per user or 409 REQUIRED_FIELD_MISSING in
//! the broken envelope; usernames unique across every salesforce tenant of the simulator; DELETE
//! that only deactivates; seeded public groups that cannot be created or deleted, with
//! Salesforce's `{"members":[...]}` membership PATCH; an OAuth 2.0 token endpoint (client
//! credentials and RS256 JWT bearer) whose tokens expire into 401 INVALID_SESSION_ID; a rolling
//! request allocation answered 403 REQUEST_LIMIT_EXCEEDED; `Sforce-Limit-Info` on every response.
//!
//! Three error-body shapes, as Salesforce sends them (docs/providers/error-bodies.md): SCIM
//! errors in the broken envelope (`"schemas"` a string, `"status"` a number); unknown URLs as the
//! object `{"errorCode":"NOT_FOUND","message":"Could not find a match for URL"}`; session and
//! limit errors as the REST array `[{"errorCode":…,"message":…}]`.
//!
//! Choices where Salesforce documents nothing: POST /Groups, PUT and DELETE /Groups/{id} get
//! the REST 405 `METHOD_NOT_ALLOWED` array; PUT /Users is a full replace with the create rules;
//! a missing last name or email is 409 REQUIRED_FIELD_MISSING like the missing profile; a
//! userName that is not an email address is 400; membership PATCH accepts only the documented
//! object shape (a bare RFC array is 400). Filters use RFC precedence (Salesforce evaluates AND
//! and OR left to right; not emulated).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Form, Path, Query};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use rand::Rng;
use serde_json::{Map, Value, json};

use crate::config::{AuthConfig, Mode, SalesforceConfig, TenantConfig};
use crate::error::{ErrorStyle, ScimError};
use crate::filter;
use crate::gate::{GateSpec, ModeHooks, Throttled, authorized, gate};
use crate::http::{origin, parse_body, scim_json};
use crate::modes::scim::{int_param, list_response, param, resource_response};
use crate::patch;
use crate::schema::{self, ENTERPRISE_USER_SCHEMA, Kind, LIST_RESPONSE_SCHEMA};
use crate::store::{Collection, Store, UniqueKey};
use crate::tenant::{App, ModeState, Tenant};

/// The route prefix (path class = the rest of the route).
pub const PREFIX: &str = "/{tenant}/services/scim/v2/";

/// `filter.maxResults` of Salesforce, also the largest page.
pub const MAX_RESULTS: usize = 200;

/// The detail of the missing-profile 409 (exact Salesforce text).
pub const NO_PROFILE: &str =
    "REQUIRED_FIELD_MISSING:user_must_have_one_entitlement_which_must_be_a_profileid;";

/// JWT bearer grant type.
pub const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

const ENTITLEMENT_SCHEMA: &str = "urn:salesforce:schemas:extension:2.0:Entitlement";
const ROLE_SCHEMA: &str = "urn:salesforce:schemas:extension:2.0:Role";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A random Salesforce-style 18-character id with a key prefix (`005`, `00G`).
fn random_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..15)
        .map(|_| char::from(ALNUM[rng.random_range(0..ALNUM.len())]))
        .collect();
    format!("{prefix}{tail}")
}

/// A stable 18-character id for seeded records (same after a reset).
fn stable_id(prefix: &str, tenant: &str, name: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in tenant.bytes().chain([0]).chain(name.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let mut tail = String::with_capacity(15);
    let mut x = h;
    for i in 0..15 {
        if i == 10 {
            x = h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15;
        }
        tail.push(char::from(ALNUM[(x % ALNUM.len() as u64) as usize]));
        x /= ALNUM.len() as u64;
    }
    format!("{prefix}{tail}")
}

fn user_id() -> String {
    random_id("005")
}

fn group_id() -> String {
    random_id("00G")
}

/// An org-level record users point at (profile, permission set, role).
#[derive(Debug, Clone)]
struct Record {
    id: String,
    name: String,
    /// `Profile` or `PermissionSet` (empty for roles).
    kind: &'static str,
}

/// A rolling window of request counts in one-second buckets.
#[derive(Debug, Default)]
struct Allocation {
    /// (epoch second, requests in it), oldest first.
    buckets: VecDeque<(u64, u64)>,
    /// Sum of the buckets.
    used: u64,
}

impl Allocation {
    fn prune(&mut self, now: u64, window: u64) {
        while let Some(&(sec, n)) = self.buckets.front() {
            if sec + window <= now {
                self.buckets.pop_front();
                self.used -= n;
            } else {
                break;
            }
        }
    }

    fn add(&mut self, now: u64) {
        match self.buckets.back_mut() {
            Some((sec, n)) if *sec == now => *n += 1,
            _ => self.buckets.push_back((now, 1)),
        }
        self.used += 1;
    }
}

/// Salesforce-specific state of a tenant.
pub struct State {
    /// The tenant's knobs.
    cfg: SalesforceConfig,
    /// The org id (`00D…`), used in token answers.
    org_id: String,
    /// Verifies JWT bearer assertions.
    jwt_key: Option<jsonwebtoken::DecodingKey>,
    /// Issued access tokens → expiry.
    tokens: Mutex<HashMap<String, Instant>>,
    /// The rolling request allocation.
    allocation: Mutex<Allocation>,
    /// Profiles and permission sets (`/Entitlements`).
    entitlements: Vec<Record>,
    /// Roles (`/Roles`).
    roles: Vec<Record>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("org_id", &self.org_id)
            .finish_non_exhaustive()
    }
}

impl State {
    /// Fresh state for a tenant (the config was validated, so the key parses).
    pub fn new(config: &TenantConfig) -> Self {
        let cfg = config.salesforce();
        let jwt_key = cfg
            .jwt_public_key_pem
            .as_deref()
            .and_then(|pem| jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).ok());
        let mut entitlements: Vec<Record> = cfg
            .profiles
            .iter()
            .map(|n| Record {
                id: stable_id("00e", &config.id, n),
                name: n.clone(),
                kind: "Profile",
            })
            .collect();
        entitlements.extend(cfg.permission_sets.iter().map(|n| Record {
            id: stable_id("0PS", &config.id, n),
            name: n.clone(),
            kind: "PermissionSet",
        }));
        let roles = cfg
            .roles
            .iter()
            .map(|n| Record {
                id: stable_id("00E", &config.id, n),
                name: n.clone(),
                kind: "",
            })
            .collect();
        Self {
            org_id: stable_id("00D", &config.id, "org"),
            cfg,
            jwt_key,
            tokens: Mutex::new(HashMap::new()),
            allocation: Mutex::new(Allocation::default()),
            entitlements,
            roles,
        }
    }

    /// Forgets issued tokens and the allocation.
    pub fn reset(&self) {
        lock(&self.tokens).clear();
        *lock(&self.allocation) = Allocation::default();
    }

    /// Invalidates every issued token (the token revocation switch).
    pub fn revoke_all(&self) {
        lock(&self.tokens).clear();
    }

    /// Requests counted in the rolling window now.
    pub fn api_usage(&self) -> u64 {
        let mut a = lock(&self.allocation);
        a.prune(epoch_secs(), self.cfg.request_window_secs);
        a.used
    }

    fn issue(&self) -> String {
        let token = format!(
            "{}!{}{}",
            self.org_id,
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let now = Instant::now();
        let mut tokens = lock(&self.tokens);
        if tokens.len() > 10_000 {
            tokens.retain(|_, exp| *exp > now);
        }
        tokens.insert(
            token.clone(),
            now + Duration::from_secs(self.cfg.token_ttl_secs),
        );
        token
    }

    fn profile(&self, id: &str) -> Option<&Record> {
        self.entitlements
            .iter()
            .find(|r| r.kind == "Profile" && r.id == id)
    }

    fn entitlement(&self, id: &str) -> Option<&Record> {
        self.entitlements.iter().find(|r| r.id == id)
    }
}

fn state(tenant: &Tenant) -> Result<&State, ScimError> {
    match &tenant.ext {
        ModeState::Salesforce(s) => Ok(s),
        _ => Err(ScimError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "tenant has no Salesforce state",
        )),
    }
}

/// A plain Salesforce REST error: `[{"errorCode","message"}]`.
fn rest_error(status: StatusCode, code: &str, message: &str) -> ScimError {
    ScimError::new(status, None, message)
        .with_raw(json!([{ "errorCode": code, "message": message }]))
}

/// The 404 for an unknown URL (object form, docs/providers/error-bodies.md).
fn url_not_found() -> ScimError {
    ScimError::not_found("Could not find a match for URL").with_raw(json!({
        "errorCode": "NOT_FOUND",
        "message": "Could not find a match for URL",
    }))
}

fn method_not_allowed(method: &Method, allowed: &'static str) -> Response {
    rest_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        &format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
    )
    .with_header(header::ALLOW, HeaderValue::from_static(allowed))
    .into_response()
}

/// Salesforce's gate behaviour.
#[derive(Debug)]
pub struct SalesforceHooks;

impl ModeHooks for SalesforceHooks {
    fn style(&self) -> ErrorStyle {
        ErrorStyle::Salesforce
    }

    fn unknown_tenant(&self, _id: &str, _mode: Mode) -> Response {
        url_not_found().into_response()
    }

    fn public(&self, path: &str) -> bool {
        path.ends_with("/services/oauth2/token")
    }

    fn admit(
        &self,
        tenant: &Tenant,
        _method: &Method,
        path: &str,
        _headers: &HeaderMap,
    ) -> Option<(Response, bool)> {
        if self.public(path) {
            // OAuth requests do not count against the API allocation.
            return None;
        }
        let s = state(tenant).ok()?;
        let now = epoch_secs();
        let mut a = lock(&s.allocation);
        a.prune(now, s.cfg.request_window_secs);
        if s.cfg.request_limit > 0 && a.used >= s.cfg.request_limit {
            drop(a);
            let r = rest_error(
                StatusCode::FORBIDDEN,
                "REQUEST_LIMIT_EXCEEDED",
                "TotalRequests Limit exceeded.",
            )
            .into_response();
            return Some((r, true));
        }
        a.add(now);
        None
    }

    fn authorize(&self, tenant: &Tenant, headers: &HeaderMap) -> Result<(), String> {
        let s = state(tenant).map_err(|e| e.detail)?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let token = match given.split_once(' ') {
            Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
            _ => "",
        };
        if matches!(tenant.config.auth, AuthConfig::Bearer { .. })
            && authorized(&tenant.config.auth, headers)
        {
            return Ok(());
        }
        if matches!(tenant.config.auth, AuthConfig::None) && s.cfg.client_id.is_none() {
            return Ok(());
        }
        let mut tokens = lock(&s.tokens);
        match tokens.get(token) {
            Some(exp) if *exp > Instant::now() => Ok(()),
            Some(_) => {
                tokens.remove(token);
                Err("session expired".into())
            }
            None => Err("invalid session".into()),
        }
    }

    fn unauthorized(&self, _tenant: &Tenant, _detail: &str) -> Response {
        rest_error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SESSION_ID",
            "Session expired or invalid",
        )
        .into_response()
    }

    fn throttled(&self, _tenant: &Tenant, _per_sec: f64, _wait_secs: u64) -> Response {
        let mut r = rest_error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "ConcurrentPerOrgLongTxn Limit exceeded.",
        )
        .into_response();
        r.extensions_mut().insert(Throttled);
        r
    }

    fn finish(&self, tenant: &Tenant, response: &mut Response) {
        let Ok(s) = state(tenant) else { return };
        let used = lock(&s.allocation).used;
        if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{}", s.cfg.request_limit)) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("sforce-limit-info"), v);
        }
    }
}

/// Users and groups of a fresh salesforce tenant: `005…`/`00G…` ids and the seeded public
/// groups (stable ids, so a reset gives the same ids back).
pub fn fresh_store(config: &TenantConfig) -> Store {
    let mut groups = Collection::with_rules(Kind::Group, vec![UniqueKey::DISPLAY_NAME], group_id);
    let base = format!("http://localhost/{}/services/scim/v2", config.id);
    for name in &config.salesforce().groups {
        let mut body = Map::new();
        body.insert("schemas".into(), json!([schema::GROUP_SCHEMA]));
        body.insert("displayName".into(), name.clone().into());
        body.insert("type".into(), "Regular".into());
        body.insert("members".into(), json!([]));
        // Seeding cannot collide: names are deduplicated by the unique index (a repeat is skipped).
        let _ = groups.insert_with_id(body, &base, stable_id("00G", &config.id, name));
    }
    Store::with(
        Collection::with_rules(Kind::User, vec![UniqueKey::USER_NAME], user_id),
        groups,
    )
}

/// The routes of salesforce-mode tenants, behind the tenant gate.
pub fn routes(app: Arc<App>) -> Router {
    let spec = GateSpec {
        mode: Mode::Salesforce,
        prefix: PREFIX,
        hooks: &SalesforceHooks,
    };
    Router::new()
        .route("/{tenant}/services/oauth2/token", post(token))
        .route(
            "/{tenant}/services/scim/v2/Users",
            get(list_users).post(create_user),
        )
        .route(
            "/{tenant}/services/scim/v2/Users/{id}",
            get(read_user)
                .put(replace_user)
                .patch(patch_user)
                .delete(deactivate_user),
        )
        .route(
            "/{tenant}/services/scim/v2/Groups",
            get(list_groups).post(|| async { method_not_allowed(&Method::POST, "GET") }),
        )
        .route(
            "/{tenant}/services/scim/v2/Groups/{id}",
            get(read_group)
                .patch(patch_group)
                .put(|| async { method_not_allowed(&Method::PUT, "GET,PATCH") })
                .delete(|| async { method_not_allowed(&Method::DELETE, "GET,PATCH") }),
        )
        .route(
            "/{tenant}/services/scim/v2/ServiceProviderConfigs",
            get(service_provider_configs),
        )
        .route("/{tenant}/services/scim/v2/Schemas", get(schemas))
        .route(
            "/{tenant}/services/scim/v2/ResourceTypes",
            get(resource_types),
        )
        .route("/{tenant}/services/scim/v2/Entitlements", get(entitlements))
        .route(
            "/{tenant}/services/scim/v2/Entitlements/{id}",
            get(entitlement),
        )
        .route("/{tenant}/services/scim/v2/Roles", get(roles))
        .route("/{tenant}/services/scim/v2/Roles/{id}", get(role))
        .route(
            "/{tenant}/services/{*rest}",
            any(|| async { url_not_found() }),
        )
        .route_layer(middleware::from_fn_with_state((app, spec), gate))
}

fn base(headers: &HeaderMap, tenant: &Tenant) -> String {
    format!("{}/{}/services/scim/v2", origin(headers), tenant.id())
}

fn not_found(kind: Kind, id: &str) -> ScimError {
    ScimError::not_found(format!(
        "NOT_FOUND:{} {id} was not found;",
        kind.resource_type()
    ))
}

// ---------------------------------------------------------------------------------------------
// OAuth

fn oauth_error(code: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({ "error": code, "error_description": description })),
    )
        .into_response()
}

/// Claims of a JWT bearer assertion.
#[derive(Debug, serde::Deserialize)]
struct Claims {
    sub: String,
    exp: u64,
}

/// `POST /{tenant}/services/oauth2/token`: client credentials or JWT bearer.
async fn token(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(s) = state(&tenant) else {
        return oauth_error("invalid_request", "not a salesforce tenant");
    };
    let Ok(Form(form)) = form else {
        return oauth_error(
            "invalid_request",
            "send application/x-www-form-urlencoded parameters",
        );
    };
    let Some(client_id) = &s.cfg.client_id else {
        return oauth_error("invalid_client_id", "client identifier invalid");
    };
    let grant = form.get("grant_type").map(String::as_str).unwrap_or("");
    let user = match grant {
        "client_credentials" => {
            if form.get("client_id") != Some(client_id) {
                return oauth_error("invalid_client_id", "client identifier invalid");
            }
            let Some(secret) = &s.cfg.client_secret else {
                return oauth_error("invalid_grant", "no client credentials user enabled");
            };
            if form.get("client_secret") != Some(secret) {
                return oauth_error("invalid_client", "invalid client credentials");
            }
            "integration".to_string()
        }
        JWT_GRANT => {
            let Some(key) = &s.jwt_key else {
                return oauth_error("invalid_grant", "invalid assertion");
            };
            let Some(assertion) = form.get("assertion") else {
                return oauth_error("invalid_request", "assertion is required");
            };
            match verify_assertion(&s.cfg, client_id, key, assertion) {
                Ok(sub) => sub,
                Err(description) => return oauth_error("invalid_grant", description),
            }
        }
        _ => return oauth_error("unsupported_grant_type", "grant type not supported"),
    };
    let token = s.issue();
    let instance = format!("{}/{}", origin(&headers), tenant.id());
    let issued_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    // Like Salesforce: no expires_in and no refresh_token.
    axum::Json(json!({
        "access_token": token,
        "signature": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            uuid::Uuid::new_v4().as_bytes(),
        ),
        "scope": "api",
        "instance_url": instance,
        "id": format!("{instance}/id/{}/{user}", s.org_id),
        "token_type": "Bearer",
        "issued_at": issued_ms.to_string(),
    }))
    .into_response()
}

/// Checks an RS256 assertion: signature, `iss` = client id, `aud`, `sub` a pre-approved user,
/// `exp` not past and at most `jwt_max_ahead_secs` ahead. Returns the subject.
fn verify_assertion(
    cfg: &SalesforceConfig,
    client_id: &str,
    key: &jsonwebtoken::DecodingKey,
    assertion: &str,
) -> Result<String, &'static str> {
    use jsonwebtoken::errors::ErrorKind;
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    v.leeway = 0;
    v.set_audience(&cfg.jwt_audiences);
    v.set_issuer(&[client_id]);
    v.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Claims>(assertion, key, &v).map_err(|e| match e.kind() {
        ErrorKind::ExpiredSignature => "expired authorization code",
        ErrorKind::InvalidAudience => "audience is invalid",
        ErrorKind::InvalidIssuer => "invalid client credentials",
        ErrorKind::InvalidSignature => "invalid assertion",
        _ => "invalid assertion",
    })?;
    if data.claims.exp > epoch_secs() + cfg.jwt_max_ahead_secs {
        return Err("invalid assertion: exp is too far in the future");
    }
    if !cfg
        .jwt_usernames
        .iter()
        .any(|u| u.eq_ignore_ascii_case(&data.claims.sub))
    {
        return Err("user hasn't approved this consumer");
    }
    Ok(data.claims.sub)
}

// ---------------------------------------------------------------------------------------------
// Users

fn conflict(detail: &str) -> ScimError {
    ScimError::new(StatusCode::CONFLICT, None, detail)
}

fn duplicate_username() -> ScimError {
    conflict(
        "DUPLICATE_USERNAME:Duplicate Username.The username already exists in this or another Salesforce organization. Usernames must be unique across all Salesforce organizations.;",
    )
}

/// The org defaults of the User fields Salesforce requires, filled in when a request leaves
/// them out (or removes them).
pub const ORG_DEFAULTS: [(&str, &str); 3] = [
    ("locale", "en_US"),
    ("timezone", "America/Los_Angeles"),
    ("preferredLanguage", "en_US"),
];

/// Salesforce's user rules; fills the defaults Salesforce adds (nickName, userType, locale, timezone,
/// preferredLanguage, the entitlement details, both schemas).
fn check_user(s: &State, obj: &mut Map<String, Value>) -> Result<(), ScimError> {
    let user_name = obj
        .get("userName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if user_name.trim().is_empty() {
        return Err(conflict(
            "REQUIRED_FIELD_MISSING:Required fields are missing: [Username];",
        ));
    }
    let email_like = user_name
        .split_once('@')
        .is_some_and(|(a, d)| !a.is_empty() && d.contains('.') && !d.ends_with('.'));
    if !email_like {
        return Err(ScimError::invalid_value(format!(
            "INVALID_NEW_VALUE:Username {user_name:?} must be in the form of an email address (for example, john@acme.com);"
        )));
    }
    if obj
        .get("name")
        .and_then(|n| n.get("familyName"))
        .and_then(Value::as_str)
        .is_none_or(|f| f.trim().is_empty())
    {
        return Err(conflict(
            "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName];",
        ));
    }
    if !obj
        .get("emails")
        .and_then(Value::as_array)
        .is_some_and(|e| {
            e.iter()
                .any(|e| e.get("value").is_some_and(Value::is_string))
        })
    {
        return Err(conflict(
            "REQUIRED_FIELD_MISSING:Required fields are missing: [Email];",
        ));
    }
    if obj
        .get("phoneNumbers")
        .and_then(Value::as_array)
        .is_some_and(|p| p.len() > 1)
    {
        return Err(ScimError::invalid_value(
            "INVALID_FIELD:Only one phone number is allowed per user;",
        ));
    }
    let mut profiles = 0;
    let mut enriched = Vec::new();
    for e in obj
        .get("entitlements")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let id = e.get("value").and_then(Value::as_str).unwrap_or("");
        let Some(rec) = s.entitlement(id) else {
            return Err(ScimError::invalid_value(format!(
                "INVALID_CROSS_REFERENCE_KEY:invalid cross reference id {id:?};"
            )));
        };
        if s.profile(id).is_some() {
            profiles += 1;
        }
        enriched.push(json!({
            "value": rec.id,
            "display": rec.name,
            "type": rec.kind,
            "primary": rec.kind == "Profile",
        }));
    }
    if profiles != 1 {
        return Err(conflict(NO_PROFILE));
    }
    obj.insert("entitlements".into(), Value::Array(enriched));
    obj.entry("nickName")
        .or_insert_with(|| Value::String(user_name.clone()));
    obj.entry("userType")
        .or_insert_with(|| Value::String("Standard".into()));
    // LocaleSidKey, TimeZoneSidKey and LanguageLocaleKey are required User fields: a user
    // created (or updated) without them gets the org's defaults, so they cannot be cleared.
    for (attr, default) in ORG_DEFAULTS {
        match obj.get(attr) {
            Some(Value::String(s)) if !s.trim().is_empty() => {}
            _ => {
                obj.insert(attr.into(), Value::String(default.into()));
            }
        }
    }
    obj.entry("active").or_insert(Value::Bool(true));
    if let Some(Value::Array(schemas)) = obj.get_mut("schemas")
        && !schemas.iter().any(|v| v == ENTERPRISE_USER_SCHEMA)
    {
        schemas.push(ENTERPRISE_USER_SCHEMA.into());
    }
    Ok(())
}

fn finish_user(s: &State, obj: &mut Map<String, Value>) -> Result<(), ScimError> {
    schema::canonicalize(Kind::User, obj);
    obj.remove("id");
    obj.remove("meta");
    obj.remove("password");
    obj.remove("groups");
    schema::validate(Kind::User, obj)?;
    check_user(s, obj)
}

fn prepare_user(s: &State, value: Value) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(mut obj) = value else {
        return Err(ScimError::invalid_syntax(
            "the request body must be a JSON object",
        ));
    };
    finish_user(s, &mut obj)?;
    Ok(obj)
}

fn lower_user_name(obj: &Map<String, Value>) -> String {
    obj.get("userName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_lowercase()
}

/// Writes a user (create when `id` is `None`) while holding the global username registry, so
/// two orgs cannot claim one name.
fn write_user(
    tenant: &Tenant,
    id: Option<&str>,
    obj: Map<String, Value>,
    base: &str,
) -> Result<Response, ScimError> {
    let name = lower_user_name(&obj);
    let mut registry = tenant.shared.salesforce_usernames();
    if let Some((t, owner)) = registry.get(&name)
        && (t != tenant.id() || Some(owner.as_str()) != id)
    {
        return Err(duplicate_username());
    }
    let mut store = tenant.write();
    let (status, r) = match id {
        None => (
            StatusCode::CREATED,
            store.users.insert(obj, base).map_err(|e| {
                if e.status == StatusCode::CONFLICT {
                    duplicate_username()
                } else {
                    e
                }
            })?,
        ),
        Some(id) => {
            let old = store
                .users
                .get(id)
                .map(|r| lower_user_name(&r.body))
                .ok_or_else(|| not_found(Kind::User, id))?;
            let r = store.users.replace(id, obj).map_err(|e| {
                if e.status == StatusCode::CONFLICT {
                    duplicate_username()
                } else {
                    e
                }
            })?;
            if old != name {
                registry.remove(&old);
            }
            (StatusCode::OK, r)
        }
    };
    registry.insert(name, (tenant.id().to_string(), r.id.clone()));
    Ok(resource_response(status, r, status == StatusCode::CREATED))
}

async fn create_user(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let s = state(&tenant)?;
    let obj = prepare_user(s, parse_body(&headers, &body)?)?;
    write_user(&tenant, None, obj, &base(&headers, &tenant))
}

async fn replace_user(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let s = state(&tenant)?;
    let obj = prepare_user(s, parse_body(&headers, &body)?)?;
    write_user(&tenant, Some(&id), obj, &base(&headers, &tenant))
}

async fn patch_user(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let s = state(&tenant)?;
    let ops = patch::parse_request(&parse_body(&headers, &body)?)?;
    let mut obj = tenant
        .read()
        .users
        .get(&id)
        .map(|r| r.body.clone())
        .ok_or_else(|| not_found(Kind::User, &id))?;
    patch::apply(Kind::User, &mut obj, &ops)?;
    finish_user(s, &mut obj)?;
    write_user(&tenant, Some(&id), obj, &base(&headers, &tenant))
}

async fn read_user(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    let store = tenant.read();
    let r = store
        .users
        .get(&id)
        .ok_or_else(|| not_found(Kind::User, &id))?;
    Ok(resource_response(StatusCode::OK, r, false))
}

/// DELETE only deactivates: the user stays readable with `active:false`.
async fn deactivate_user(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    let mut store = tenant.write();
    let mut body = store
        .users
        .get(&id)
        .map(|r| r.body.clone())
        .ok_or_else(|| not_found(Kind::User, &id))?;
    body.insert("active".into(), Value::Bool(false));
    store.users.replace(&id, body)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn list_filter(q: &[(String, String)]) -> Result<Option<filter::Filter>, ScimError> {
    match param(q, "filter") {
        Some(f) if !f.trim().is_empty() => filter::parse_filter(f)
            .map(Some)
            .map_err(|e| ScimError::invalid_filter(format!("filter {f:?}: {e}"))),
        _ => Ok(None),
    }
}

fn list_kind(tenant: &Tenant, kind: Kind, q: &[(String, String)]) -> Result<Response, ScimError> {
    let f = list_filter(q)?;
    let start = int_param(q, "startIndex")?.unwrap_or(1).max(1) as usize;
    let count =
        int_param(q, "count")?.map_or(MAX_RESULTS, |c| c.clamp(0, MAX_RESULTS as i64) as usize);
    let (total, page) = tenant
        .read()
        .collection(kind)
        .query(f.as_ref(), start, count);
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

async fn list_users(
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    list_kind(&tenant, Kind::User, &q)
}

// ---------------------------------------------------------------------------------------------
// Groups

async fn list_groups(
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    list_kind(&tenant, Kind::Group, &q)
}

async fn read_group(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    let store = tenant.read();
    let r = store
        .groups
        .get(&id)
        .ok_or_else(|| not_found(Kind::Group, &id))?;
    Ok(resource_response(StatusCode::OK, r, false))
}

/// Membership PATCH in Salesforce's shape only:
/// `{"op":"add"|"remove","path":"members","value":{"members":[{"value":"005…"}]}}`.
async fn patch_group(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let ops = patch::parse_request(&parse_body(&headers, &body)?)?;
    let mut store = tenant.write();
    let mut obj = store
        .groups
        .get(&id)
        .map(|r| r.body.clone())
        .ok_or_else(|| not_found(Kind::Group, &id))?;
    let mut members: Vec<Value> = obj
        .get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, op) in ops.iter().enumerate() {
        let shape_error = || {
            ScimError::invalid_value(format!(
                "Operations[{i}]: only {{\"op\":\"add\"|\"remove\",\"path\":\"members\",\"value\":{{\"members\":[{{\"value\":\"005…\"}}]}}}} is supported on groups"
            ))
        };
        let path_ok = op.path.as_ref().is_some_and(|p| {
            p.filter.is_none()
                && p.path.schema.is_none()
                && p.path.sub.is_none()
                && p.path.attr.eq_ignore_ascii_case("members")
        });
        let Some(list) = op
            .value
            .as_ref()
            .and_then(Value::as_object)
            .and_then(|v| filter::get_ci(v, "members"))
            .and_then(Value::as_array)
        else {
            return Err(shape_error());
        };
        if !path_ok || op.op == patch::Op::Replace {
            return Err(shape_error());
        }
        for (j, m) in list.iter().enumerate() {
            let Some(v) = m.get("value").and_then(Value::as_str) else {
                return Err(ScimError::invalid_value(format!(
                    "Operations[{i}].value.members[{j}].value is required"
                )));
            };
            if !store.users.contains(v) {
                return Err(ScimError::invalid_value(format!(
                    "INVALID_CROSS_REFERENCE_KEY:no user with id {v:?};"
                )));
            }
            let present = members
                .iter()
                .any(|x| x.get("value").and_then(Value::as_str) == Some(v));
            match op.op {
                patch::Op::Add if !present => members.push(json!({ "value": v })),
                patch::Op::Remove => {
                    members.retain(|x| x.get("value").and_then(Value::as_str) != Some(v));
                }
                _ => {}
            }
        }
    }
    obj.insert("members".into(), Value::Array(members));
    let r = store.groups.replace(&id, obj)?;
    Ok(resource_response(StatusCode::OK, r, false))
}

// ---------------------------------------------------------------------------------------------
// Discovery and org records

async fn service_provider_configs(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
) -> Response {
    let base = base(&headers, &tenant);
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://help.salesforce.com/s/articleView?id=xcloud.identity_scim_rest_api.htm",
            "patch": { "supported": true },
            "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
            "filter": { "supported": true, "maxResults": MAX_RESULTS },
            "changePassword": { "supported": true },
            "sort": { "supported": false },
            "etag": { "supported": false },
            "authenticationSchemes": [{
                "type": "oauth2",
                "name": "OAuth 2.0",
                "description": "OAuth 2.0 bearer token from /services/oauth2/token",
                "specUri": "https://www.rfc-editor.org/info/rfc6749",
                "primary": true,
            }],
            "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfigs") },
        }),
    )
}

async fn schemas(Extension(tenant): Extension<Arc<Tenant>>, headers: HeaderMap) -> Response {
    list_response(schema::schemas_json(&base(&headers, &tenant)))
}

async fn resource_types(Extension(tenant): Extension<Arc<Tenant>>, headers: HeaderMap) -> Response {
    list_response(schema::resource_types_json(&base(&headers, &tenant)))
}

fn record_json(r: &Record, base: &str, what: &str, schema_urn: &str) -> Value {
    let mut v = json!({
        "schemas": [schema_urn],
        "id": r.id,
        "displayName": r.name,
        "meta": { "resourceType": what, "location": format!("{base}/{what}s/{}", r.id) },
    });
    if !r.kind.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.insert("type".into(), r.kind.into());
    }
    v
}

async fn entitlements(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let s = state(&tenant)?;
    let base = base(&headers, &tenant);
    Ok(list_response(
        s.entitlements
            .iter()
            .take(MAX_RESULTS)
            .map(|r| record_json(r, &base, "Entitlement", ENTITLEMENT_SCHEMA))
            .collect(),
    ))
}

async fn entitlement(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let s = state(&tenant)?;
    let r = s.entitlement(&id).ok_or_else(|| {
        ScimError::not_found(format!("NOT_FOUND:Entitlement {id} was not found;"))
    })?;
    Ok(scim_json(
        StatusCode::OK,
        &record_json(
            r,
            &base(&headers, &tenant),
            "Entitlement",
            ENTITLEMENT_SCHEMA,
        ),
    ))
}

async fn roles(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let s = state(&tenant)?;
    let base = base(&headers, &tenant);
    Ok(list_response(
        s.roles
            .iter()
            .map(|r| record_json(r, &base, "Role", ROLE_SCHEMA))
            .collect(),
    ))
}

async fn role(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let s = state(&tenant)?;
    let r = s
        .roles
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ScimError::not_found(format!("NOT_FOUND:Role {id} was not found;")))?;
    Ok(scim_json(
        StatusCode::OK,
        &record_json(r, &base(&headers, &tenant), "Role", ROLE_SCHEMA),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_salesforce_prefixes_and_length() {
        let u = user_id();
        assert!(u.starts_with("005") && u.len() == 18, "{u}");
        let g = stable_id("00G", "acme", "Sales");
        assert_eq!(g, stable_id("00G", "acme", "Sales"));
        assert_ne!(g, stable_id("00G", "acme", "Support"));
        assert_eq!(g.len(), 18);
    }

    #[test]
    fn allocation_rolls() {
        let mut a = Allocation::default();
        a.add(100);
        a.add(100);
        a.add(101);
        a.prune(105, 10);
        assert_eq!(a.used, 3);
        a.prune(110, 10);
        assert_eq!(a.used, 1);
        a.prune(111, 10);
        assert_eq!(a.used, 0);
    }
}
