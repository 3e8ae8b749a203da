//! AWS IAM Identity Center mode (docs/providers/aws.md): `/{tenant}/scim/v2/...` with one value
//! per multi-valued attribute, the single-attribute rule for PATCH without `path`, at most 100
//! member changes per request, no replace-all / remove-all of members, no group PUT, groups that
//! never show their members, `eq`(+`and`) filters on the documented attributes only, cursor
//! pagination with short pages, 409 bodies with the singular `schema` key, 429 without
//! `Retry-After`, 401 for an unknown tenant id, `x-amzn-RequestId` on every answer and the
//! exception name (`ValidationException`, `ThrottlingException`, …) in `x-amzn-ErrorType` on
//! every error, as AWS REST APIs send it (the body shapes stay those
//! docs/providers/error-bodies.md shows).
//!
//! Choices where AWS documents nothing: PUT /Groups/{id} is answered 400 ValidationException
//! (AWS maps "unsupported operation" to 400); PATCH /Groups answers 204 and PATCH /Users 200
//! with the user; a list without `cursor` is the legacy form (at most 50 results, no
//! `nextCursor`); `count` is clamped to 1..=100; a member value that is not a user id is 400.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Map, Value, json};

use crate::config::Mode;
use crate::error::{ErrorStyle, ScimError};
use crate::filter::{self, AttrPath, CompareOp, Filter};
use crate::gate::{GateSpec, ModeHooks, gate};
use crate::http::{origin, parse_body, scim_json};
use crate::modes::scim::{int_param, list_response, param, resource_response};
use crate::patch::{self, Op};
use crate::schema::{self, ENTERPRISE_USER_SCHEMA, Kind, LIST_RESPONSE_SCHEMA};
use crate::store::{Resource, Store, UniqueKey};
use crate::tenant::{App, Tenant};

/// The route prefix (path class = the rest of the route).
pub const PREFIX: &str = "/{tenant}/scim/v2/";

/// Most membership changes (and members in a create) AWS accepts in one request.
pub const MAX_MEMBER_CHANGES: usize = 100;
/// Largest cursor page (`count` 1..=100, default 100).
pub const MAX_COUNT: usize = 100;
/// Results of a list without `cursor` (the legacy, non-paginated form).
pub const LEGACY_CAP: usize = 50;

/// AWS's generic 400 text (also for more than 100 member changes).
pub const UNPARSABLE: &str = "Request is unparsable, syntactically incorrect, or violates schema.";
/// AWS's 400 text for a PATCH without `path` touching several attributes.
pub const SINGLE_ATTRIBUTE: &str = "Current PATCH support allows omitting \"path\" attribute only for Add and Replace operations modifying a single attribute";

/// The email of a user is unique (case-insensitive).
pub const EMAIL_KEY: UniqueKey = UniqueKey {
    name: "emails.value",
    extract: email_key,
    filter_attr: None,
};

fn email_key(body: &Map<String, Value>) -> Option<String> {
    body.get("emails")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
        .and_then(|e| e.get("value"))
        .and_then(Value::as_str)
        .map(str::to_lowercase)
}

fn bad(detail: impl Into<String>) -> ScimError {
    ScimError::invalid_value(detail)
}

/// AWS's gate behaviour.
#[derive(Debug)]
pub struct AwsHooks;

impl ModeHooks for AwsHooks {
    fn style(&self) -> ErrorStyle {
        ErrorStyle::Aws
    }

    fn unknown_tenant(&self, _id: &str, _mode: Mode) -> Response {
        let mut r =
            ScimError::unauthorized("The security token included in the request is invalid.")
                .styled(ErrorStyle::Aws)
                .into_response();
        request_id(&mut r);
        r
    }

    fn throttled(&self, _tenant: &Tenant, _per_sec: f64, _wait_secs: u64) -> Response {
        // ThrottlingException: no Retry-After (none is documented or observed).
        ScimError::new(StatusCode::TOO_MANY_REQUESTS, None, "Rate exceeded")
            .styled(ErrorStyle::Aws)
            .into_response()
    }

    fn finish(&self, _tenant: &Tenant, response: &mut Response) {
        request_id(response);
    }
}

/// An unknown URL under an AWS tenant (`/Bulk`, `/Me`, …): 404 ResourceNotFoundException in
/// AWS's shape, with a request id like every AWS answer.
pub async fn unknown_route(uri: axum::http::Uri) -> Response {
    let mut r = ScimError::not_found(format!("no endpoint at {}", uri.path()))
        .styled(ErrorStyle::Aws)
        .into_response();
    request_id(&mut r);
    r
}

fn request_id(response: &mut Response) {
    if let Ok(v) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-amzn-requestid"), v);
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

/// The routes of aws-mode tenants, behind the tenant gate.
pub fn routes(app: Arc<App>) -> Router {
    let spec = GateSpec {
        mode: Mode::Aws,
        prefix: PREFIX,
        hooks: &AwsHooks,
    };
    Router::new()
        .route(
            "/{tenant}/scim/v2/Users",
            get(list::<Users>).post(create_user),
        )
        .route(
            "/{tenant}/scim/v2/Users/{id}",
            get(read::<Users>)
                .put(replace_user)
                .patch(patch_user)
                .delete(remove::<Users>),
        )
        .route(
            "/{tenant}/scim/v2/Groups",
            get(list::<Groups>).post(create_group),
        )
        .route(
            "/{tenant}/scim/v2/Groups/{id}",
            get(read::<Groups>)
                .put(replace_group)
                .patch(patch_group)
                .delete(remove::<Groups>),
        )
        .route(
            "/{tenant}/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/{tenant}/scim/v2/Schemas", get(schemas))
        .route("/{tenant}/scim/v2/ResourceTypes", get(resource_types))
        .route_layer(middleware::from_fn_with_state((app, spec), gate))
}

fn base(headers: &HeaderMap, tenant: &Tenant) -> String {
    format!("{}/{}/scim/v2", origin(headers), tenant.id())
}

fn not_found(kind: Kind, id: &str) -> ScimError {
    ScimError::not_found(format!("{} {id} not found", kind.resource_type()))
}

/// A group as AWS shows it: never with its members.
fn hide_members(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert("members".into(), Value::Array(Vec::new()));
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Users

/// Attributes AWS refuses on a user.
const UNSUPPORTED_USER_ATTRS: &[&str] = &[
    "password",
    "ims",
    "photos",
    "x509Certificates",
    "entitlements",
    "groups",
];

/// Attributes a user PATCH may touch.
const PATCHABLE_USER_ATTRS: &[&str] = &[
    "userName",
    "active",
    "externalId",
    "displayName",
    "nickName",
    "profileUrl",
    "title",
    "userType",
    "preferredLanguage",
    "locale",
    "timezone",
    "name",
    "emails",
    "addresses",
    "phoneNumbers",
    "roles",
    "enterprise",
    ENTERPRISE_USER_SCHEMA,
];

fn non_empty_str(obj: &Map<String, Value>, key: &str) -> bool {
    obj.get(key)
        .and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty())
}

/// AWS's user rules on a canonicalised body.
fn check_user(obj: &Map<String, Value>) -> Result<(), ScimError> {
    for key in ["userName", "displayName"] {
        if !non_empty_str(obj, key) {
            return Err(bad(format!("attribute '{key}' is required")));
        }
    }
    let name = obj.get("name").and_then(Value::as_object);
    for sub in ["givenName", "familyName"] {
        if !name.is_some_and(|n| non_empty_str(n, sub)) {
            return Err(bad(format!("attribute 'name.{sub}' is required")));
        }
    }
    for key in UNSUPPORTED_USER_ATTRS {
        if obj.contains_key(*key) {
            return Err(bad(format!("attribute '{key}' is not supported")));
        }
    }
    if obj
        .get(ENTERPRISE_USER_SCHEMA)
        .and_then(|e| e.get("manager"))
        .and_then(|m| m.get("displayName"))
        .is_some()
    {
        return Err(bad("attribute 'manager.displayName' is not supported"));
    }
    for key in ["emails", "phoneNumbers", "addresses", "roles"] {
        let Some(v) = obj.get(key) else { continue };
        let Some(items) = v.as_array() else {
            return Err(bad(format!("attribute '{key}' must be an array")));
        };
        if items.len() > 1 {
            return Err(bad(format!(
                "attribute '{key}' accepts only one value, got {}",
                items.len()
            )));
        }
        for item in items {
            let Some(item) = item.as_object() else {
                return Err(bad(format!("attribute '{key}' values must be objects")));
            };
            if item.contains_key("display") {
                return Err(bad(format!(
                    "sub-attribute '{key}.display' is not supported"
                )));
            }
            if key == "roles"
                && let Some(k) = item
                    .keys()
                    .find(|k| !["value", "type", "primary"].contains(&k.as_str()))
            {
                return Err(bad(format!("sub-attribute 'roles.{k}' is not supported")));
            }
            if key == "emails" && item.get("primary") != Some(&Value::Bool(true)) {
                return Err(bad("the email must be marked primary: true"));
            }
        }
    }
    Ok(())
}

fn prepare_user(value: Value) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(mut obj) = value else {
        return Err(bad(UNPARSABLE));
    };
    if !filter::get_ci(&obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|s| s.as_str().is_some_and(|s| schema::is_core(Kind::User, s)))
        })
    {
        return Err(bad(format!(
            "attribute 'schemas' must contain \"{}\"",
            Kind::User.core_schema()
        )));
    }
    finish_user(&mut obj)?;
    Ok(obj)
}

fn finish_user(obj: &mut Map<String, Value>) -> Result<(), ScimError> {
    schema::canonicalize(Kind::User, obj);
    obj.remove("id");
    obj.remove("meta");
    check_user(obj)?;
    schema::validate(Kind::User, obj)
}

async fn create_user(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let obj = prepare_user(parse_body(&headers, &body)?)?;
    let base = base(&headers, &tenant);
    let mut store = tenant.write();
    let r = store.users.insert(obj, &base)?;
    Ok(resource_response(StatusCode::CREATED, r, true))
}

async fn replace_user(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let obj = prepare_user(parse_body(&headers, &body)?)?;
    let mut store = tenant.write();
    if !store.users.contains(&id) {
        return Err(not_found(Kind::User, &id));
    }
    let r = store.users.replace(&id, obj)?;
    Ok(resource_response(StatusCode::OK, r, false))
}

/// Path filters may only use `eq` (joined by `and`).
fn eq_only(f: &Filter) -> bool {
    match f {
        Filter::Compare {
            op: CompareOp::Eq, ..
        } => true,
        Filter::And(a, b) => eq_only(a) && eq_only(b),
        _ => false,
    }
}

/// The top-level attribute names an operation touches.
fn targets(op: &patch::Operation) -> Vec<String> {
    match (&op.path, &op.value) {
        (Some(p), _) => vec![p.path.schema.clone().unwrap_or_else(|| p.path.attr.clone())],
        (None, Some(Value::Object(v))) => v.keys().cloned().collect(),
        _ => Vec::new(),
    }
}

fn check_user_ops(ops: &[patch::Operation]) -> Result<(), ScimError> {
    let (mut user_names, mut actives) = (0, 0);
    for op in ops {
        if op.path.is_none()
            && let Some(Value::Object(v)) = &op.value
            && v.len() != 1
        {
            return Err(bad(SINGLE_ATTRIBUTE));
        }
        if let Some(f) = op.path.as_ref().and_then(|p| p.filter.as_ref())
            && !eq_only(f)
        {
            return Err(ScimError::invalid_path(
                "path filters may only use the eq operator",
            ));
        }
        for t in targets(op) {
            let Some(canonical) = PATCHABLE_USER_ATTRS
                .iter()
                .find(|a| a.eq_ignore_ascii_case(&t))
            else {
                return Err(bad(format!("attribute '{t}' cannot be modified")));
            };
            match *canonical {
                "userName" => user_names += 1,
                "active" => actives += 1,
                _ => continue,
            }
            if op.op == Op::Remove {
                return Err(bad(format!("remove is not supported on '{canonical}'")));
            }
        }
    }
    if user_names > 1 || actives > 1 {
        return Err(bad(
            "several operations on userName or active in one request are not supported",
        ));
    }
    Ok(())
}

/// Rewrites the `enterprise` shorthand AWS accepts into the extension URN.
fn expand_enterprise(ops: &mut [patch::Operation]) {
    for op in ops {
        if let Some(p) = &mut op.path
            && p.path.schema.is_none()
            && p.path.attr.eq_ignore_ascii_case("enterprise")
        {
            p.path.schema = Some(ENTERPRISE_USER_SCHEMA.into());
            if let Some(sub) = p.path.sub.take() {
                p.path.attr = sub;
            }
        }
        if op.path.is_none()
            && let Some(Value::Object(v)) = &mut op.value
            && let Some(k) = v
                .keys()
                .find(|k| k.eq_ignore_ascii_case("enterprise"))
                .cloned()
            && let Some(ext) = v.remove(&k)
        {
            v.insert(ENTERPRISE_USER_SCHEMA.into(), ext);
        }
    }
}

async fn patch_user(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let mut ops = patch::parse_request(&parse_body(&headers, &body)?)?;
    check_user_ops(&ops)?;
    expand_enterprise(&mut ops);
    let mut store = tenant.write();
    let current = store
        .users
        .get(&id)
        .ok_or_else(|| not_found(Kind::User, &id))?;
    let mut obj = current.body.clone();
    patch::apply(Kind::User, &mut obj, &ops)?;
    finish_user(&mut obj)?;
    let r = store.users.replace(&id, obj)?;
    Ok(resource_response(StatusCode::OK, r, false))
}

// ---------------------------------------------------------------------------------------------
// Groups

fn check_member_values(store: &Store, members: &[Value]) -> Result<(), ScimError> {
    for (i, m) in members.iter().enumerate() {
        let Some(v) = m.get("value").and_then(Value::as_str) else {
            return Err(bad(format!("attribute 'members[{i}].value' is required")));
        };
        if !store.users.contains(v) {
            return Err(bad(format!("members[{i}].value {v:?} is not a user id")));
        }
    }
    Ok(())
}

async fn create_group(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let Value::Object(mut obj) = parse_body(&headers, &body)? else {
        return Err(bad(UNPARSABLE));
    };
    schema::canonicalize(Kind::Group, &mut obj);
    obj.remove("id");
    obj.remove("meta");
    schema::validate(Kind::Group, &obj)?;
    let members = obj
        .get("members")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if members.len() > MAX_MEMBER_CHANGES {
        return Err(bad(UNPARSABLE));
    }
    let base = base(&headers, &tenant);
    let mut store = tenant.write();
    check_member_values(&store, &members)?;
    let r = store.groups.insert(obj, &base)?;
    let mut resp = scim_json(StatusCode::CREATED, &hide_members(r.to_json()));
    if let Some(loc) = r
        .body
        .get("meta")
        .and_then(|m| m.get("location"))
        .and_then(Value::as_str)
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        resp.headers_mut().insert(axum::http::header::LOCATION, loc);
    }
    Ok(resp)
}

async fn replace_group() -> ScimError {
    bad("PUT is not supported on Groups; use PATCH")
}

fn is_members(p: &AttrPath) -> bool {
    p.schema.is_none() && p.attr.eq_ignore_ascii_case("members")
}

fn count_values(v: Option<&Value>) -> usize {
    match v {
        Some(Value::Array(a)) => a.len(),
        Some(Value::Null) | None => 0,
        Some(_) => 1,
    }
}

async fn patch_group(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let ops = patch::parse_request(&parse_body(&headers, &body)?)?;
    let mut changes = 0usize;
    let mut added = Vec::new();
    for op in &ops {
        for t in targets(op) {
            if !["displayName", "members", "externalId"]
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&t))
            {
                return Err(bad(format!(
                    "attribute '{t}' cannot be modified on a group"
                )));
            }
        }
        let (members_path, value) = match (&op.path, &op.value) {
            (Some(p), v) if is_members(&p.path) => (Some(p), v.as_ref()),
            (None, Some(Value::Object(v))) => match filter::get_ci(v, "members") {
                Some(m) => (None, Some(m)),
                None => continue,
            },
            _ => continue,
        };
        if let Some(f) = members_path.and_then(|p| p.filter.as_ref())
            && !eq_only(f)
        {
            return Err(ScimError::invalid_path(
                "path filters may only use the eq operator",
            ));
        }
        let filtered = members_path.is_some_and(|p| p.filter.is_some());
        match op.op {
            Op::Replace => {
                return Err(bad(
                    "replacing members is not supported; use add and remove",
                ));
            }
            Op::Remove if !filtered && count_values(value) == 0 => {
                return Err(bad(
                    "removing all members is not supported; name the members",
                ));
            }
            Op::Remove if filtered => changes += 1,
            Op::Remove => changes += count_values(value),
            Op::Add => {
                changes += count_values(value);
                if let Some(Value::Array(a)) = value {
                    added.extend(a.iter().cloned());
                } else if let Some(v) = value {
                    added.push(v.clone());
                }
            }
        }
    }
    if changes > MAX_MEMBER_CHANGES {
        return Err(bad(UNPARSABLE));
    }
    let mut store = tenant.write();
    let current = store
        .groups
        .get(&id)
        .ok_or_else(|| not_found(Kind::Group, &id))?;
    check_member_values(&store, &added)?;
    let mut obj = current.body.clone();
    patch::apply(Kind::Group, &mut obj, &ops)?;
    schema::canonicalize(Kind::Group, &mut obj);
    obj.remove("id");
    obj.remove("meta");
    schema::validate(Kind::Group, &obj)?;
    store.groups.replace(&id, obj)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// ---------------------------------------------------------------------------------------------
// Shared

async fn read<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    reject_unsupported_params(&q, &["attributes", "excludedAttributes"])?;
    let store = tenant.read();
    let r = store
        .collection(K::KIND)
        .get(&id)
        .ok_or_else(|| not_found(K::KIND, &id))?;
    if K::KIND == Kind::Group {
        return Ok(scim_json(StatusCode::OK, &hide_members(r.to_json())));
    }
    Ok(resource_response(StatusCode::OK, r, false))
}

async fn remove<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, ScimError> {
    let mut store = tenant.write();
    if store.collection_mut(K::KIND).remove(&id).is_none() {
        return Err(not_found(K::KIND, &id));
    }
    store.forget_member(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn reject_unsupported_params(q: &[(String, String)], names: &[&str]) -> Result<(), ScimError> {
    for name in names {
        if param(q, name).is_some() {
            return Err(bad(format!("the '{name}' parameter is not supported")));
        }
    }
    Ok(())
}

/// A list filter AWS supports, resolved to what it selects.
enum Selection {
    /// Everything.
    All,
    /// A plain `attr eq "v"` evaluated by the filter engine.
    Attr(Filter),
    /// Exactly these ids (from membership lookups).
    Ids(Vec<String>),
}

fn eq_clause(f: &Filter) -> Option<(&AttrPath, &str)> {
    match f {
        Filter::Compare {
            path,
            op: CompareOp::Eq,
            value: Value::String(v),
        } if path.schema.is_none() => Some((path, v.as_str())),
        _ => None,
    }
}

fn named(p: &AttrPath, attr: &str, sub: Option<&str>) -> bool {
    p.attr.eq_ignore_ascii_case(attr)
        && match (sub, &p.sub) {
            (None, None) => true,
            (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
            _ => false,
        }
}

fn group_members(g: &Resource) -> Vec<String> {
    g.body
        .get("members")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|m| m.get("value").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn manager_of(u: &Resource) -> Option<&str> {
    u.body
        .get(ENTERPRISE_USER_SCHEMA)?
        .get("manager")?
        .get("value")?
        .as_str()
}

fn select(kind: Kind, store: &Store, raw: &str) -> Result<Selection, ScimError> {
    let f = filter::parse_filter(raw)
        .map_err(|e| ScimError::invalid_filter(format!("filter {raw:?}: {e}")))?;
    let unsupported = || {
        ScimError::invalid_filter(format!(
            "unsupported filter {raw:?}; supported: {}",
            match kind {
                Kind::User =>
                    "userName eq, externalId eq, groups.value eq, id eq … and manager eq …",
                Kind::Group =>
                    "displayName eq, externalId eq, members.value eq, id eq … and members eq …",
            }
        ))
    };
    if let Some((p, v)) = eq_clause(&f) {
        return match kind {
            Kind::User if named(p, "userName", None) || named(p, "externalId", None) => {
                Ok(Selection::Attr(f.clone()))
            }
            Kind::User if named(p, "groups", Some("value")) => Ok(Selection::Ids(
                store.groups.get(v).map(group_members).unwrap_or_default(),
            )),
            Kind::Group if named(p, "displayName", None) || named(p, "externalId", None) => {
                Ok(Selection::Attr(f.clone()))
            }
            Kind::Group if named(p, "members", Some("value")) => Ok(Selection::Ids(
                store
                    .groups
                    .iter()
                    .filter(|g| group_members(g).iter().any(|m| m == v))
                    .map(|g| g.id.clone())
                    .collect(),
            )),
            _ => Err(unsupported()),
        };
    }
    let Filter::And(a, b) = &f else {
        return Err(unsupported());
    };
    let (Some((pa, va)), Some((pb, vb))) = (eq_clause(a), eq_clause(b)) else {
        return Err(unsupported());
    };
    let (id, other, other_path) = if named(pa, "id", None) {
        (va, vb, pb)
    } else if named(pb, "id", None) {
        (vb, va, pa)
    } else {
        return Err(unsupported());
    };
    match kind {
        Kind::User if named(other_path, "manager", None) => Ok(Selection::Ids(
            store
                .users
                .get(id)
                .filter(|u| manager_of(u) == Some(other))
                .map(|u| vec![u.id.clone()])
                .unwrap_or_default(),
        )),
        Kind::Group if named(other_path, "members", None) || named(other_path, "member", None) => {
            if !store.users.contains(other) {
                return Err(ScimError::not_found(format!("member {other} not found")));
            }
            Ok(Selection::Ids(
                store
                    .groups
                    .get(id)
                    .filter(|g| group_members(g).iter().any(|m| m == other))
                    .map(|g| vec![g.id.clone()])
                    .unwrap_or_default(),
            ))
        }
        _ => Err(unsupported()),
    }
}

fn encode_cursor(seq: u64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("sim:{seq}"))
}

fn decode_cursor(c: &str) -> Result<Option<u64>, ScimError> {
    if c.is_empty() {
        return Ok(None);
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .ok()
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|s| s.strip_prefix("sim:").and_then(|n| n.parse().ok()))
        .map(Some)
        .ok_or_else(|| bad(format!("invalid cursor {c:?}")))
}

async fn list<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    reject_unsupported_params(&q, &["startIndex", "attributes", "excludedAttributes"])?;
    let cursor = param(&q, "cursor");
    let after = cursor.map(decode_cursor).transpose()?.flatten();
    let requested = int_param(&q, "count")?;
    let store = tenant.read();
    let selection = match param(&q, "filter") {
        Some(f) if !f.trim().is_empty() => select(kind, &store, f)?,
        _ => Selection::All,
    };
    let coll = store.collection(kind);
    let pred = |r: &Resource| match &selection {
        Selection::All => true,
        Selection::Attr(f) => coll.matches(r, f),
        Selection::Ids(ids) => ids.contains(&r.id),
    };
    let total = coll.iter().filter(|r| pred(r)).count();
    let (limit, paginated) = match cursor {
        None => (
            requested.map_or(LEGACY_CAP, |c| c.clamp(1, LEGACY_CAP as i64) as usize),
            false,
        ),
        Some(_) => {
            let mut limit = requested.map_or(MAX_COUNT, |c| c.clamp(1, MAX_COUNT as i64) as usize);
            let rate = tenant.config.aws().short_page_rate;
            if limit > 1 && rate > 0.0 && rand::random::<f64>() < rate {
                limit = rand::random_range(1..limit);
            }
            (limit, true)
        }
    };
    let (mut page, last, more) = coll.page_after(pred, after, limit);
    if kind == Kind::Group {
        page = page.into_iter().map(hide_members).collect();
    }
    let mut body = json!({
        "schemas": [LIST_RESPONSE_SCHEMA],
        "totalResults": total,
        "itemsPerPage": page.len(),
        "startIndex": 1,
        "Resources": page,
    });
    if paginated
        && more
        && let (Some(last), Some(o)) = (last, body.as_object_mut())
    {
        o.insert("nextCursor".into(), encode_cursor(last).into());
    }
    Ok(scim_json(StatusCode::OK, &body))
}

async fn service_provider_config(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
) -> Response {
    let base = base(&headers, &tenant);
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://docs.aws.amazon.com/singlesignon/latest/developerguide/what-is-scim.html",
            "patch": { "supported": true },
            "bulk": { "supported": false, "maxOperations": 1, "maxPayloadSize": 1_048_576 },
            "filter": { "supported": true, "maxResults": MAX_COUNT },
            "changePassword": { "supported": false },
            "sort": { "supported": false },
            "etag": { "supported": false },
            "authenticationSchemes": [{
                "type": "oauthbearertoken",
                "name": "OAuth Bearer Token",
                "description": "Authentication scheme using the OAuth Bearer Token Standard",
                "specUri": "https://www.rfc-editor.org/info/rfc6750",
                "primary": true,
            }],
            "meta": { "resourceType": "ServiceProviderConfig", "location": format!("{base}/ServiceProviderConfig") },
        }),
    )
}

async fn schemas(Extension(tenant): Extension<Arc<Tenant>>, headers: HeaderMap) -> Response {
    list_response(schema::schemas_json(&base(&headers, &tenant)))
}

async fn resource_types(Extension(tenant): Extension<Arc<Tenant>>, headers: HeaderMap) -> Response {
    list_response(schema::resource_types_json(&base(&headers, &tenant)))
}
