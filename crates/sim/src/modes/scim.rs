//! Plain RFC 7643/7644 mode: `/{tenant}/scim/v2/{Users,Groups,ServiceProviderConfig,Schemas,
//! ResourceTypes}` with filters, paging, PATCH, ETags and uniqueness as the RFCs describe them.
//!
//! A tenant's `scim` switches ([`ScimCaps`](crate::config::ScimCaps)) turn it into a less
//! capable server, announced in ServiceProviderConfig and enforced: without PATCH every PATCH is
//! 501 Not Implemented (RFC 7644 §3.12 names exactly this case; 405 would claim the resource
//! refuses the method, not the server); without filtering a non-empty filter is 400
//! `invalidFilter` (RFC 7644 §3.4.2.2: decline, never ignore — an ignored filter returns every
//! resource as if it matched); without ETags no `ETag` header or `meta.version` is sent and
//! preconditions are ignored; without discovery the RFC 7644 §4 endpoints are 404.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::Request;
use axum::extract::{Extension, Path, Query};
use axum::http::Method;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};

use crate::config::{AuthConfig, Mode};
use crate::error::ScimError;
use crate::filter;
use crate::gate::{GateSpec, PlainHooks, gate};
use crate::http::{check_if_match, etag_listed, origin, parse_body, scim_bytes, scim_json};
use crate::patch;
use crate::schema::{self, Kind, LIST_RESPONSE_SCHEMA};
use crate::store::Resource;
use crate::tenant::{App, Tenant};

/// The route prefix (path class = the rest of the route).
pub const PREFIX: &str = "/{tenant}/scim/v2/";

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

/// The routes of scim-mode tenants, behind the tenant gate.
pub fn routes(app: Arc<App>) -> Router {
    let spec = GateSpec {
        mode: Mode::Scim,
        prefix: PREFIX,
        hooks: &PlainHooks,
    };
    Router::new()
        .route(
            "/{tenant}/scim/v2/Users",
            get(list::<Users>).post(create::<Users>),
        )
        .route(
            "/{tenant}/scim/v2/Users/{id}",
            get(read::<Users>)
                .put(replace::<Users>)
                .patch(modify::<Users>)
                .delete(remove::<Users>),
        )
        .route(
            "/{tenant}/scim/v2/Groups",
            get(list::<Groups>).post(create::<Groups>),
        )
        .route(
            "/{tenant}/scim/v2/Groups/{id}",
            get(read::<Groups>)
                .put(replace::<Groups>)
                .patch(modify::<Groups>)
                .delete(remove::<Groups>),
        )
        .route("/{tenant}/scim/v2/.search", post(post_search))
        .route("/{tenant}/scim/v2/Users/.search", post(post_search))
        .route("/{tenant}/scim/v2/Groups/.search", post(post_search))
        .route(
            "/{tenant}/scim/v2/ServiceProviderConfig",
            get(service_provider_config),
        )
        .route("/{tenant}/scim/v2/Schemas", get(schemas))
        .route("/{tenant}/scim/v2/Schemas/{id}", get(schema_by_id))
        .route("/{tenant}/scim/v2/ResourceTypes", get(resource_types))
        .route(
            "/{tenant}/scim/v2/ResourceTypes/{id}",
            get(resource_type_by_id),
        )
        .route_layer(middleware::from_fn(capabilities))
        .route_layer(middleware::from_fn_with_state((app, spec), gate))
}

/// Enforces the tenant's [`ScimCaps`](crate::config::ScimCaps) around every request (inside
/// the gate, so refusals are counted in the statistics like any answer). Filtering and the page
/// size are enforced in [`search`], which knows whether a filter is really there.
async fn capabilities(mut req: Request, next: Next) -> Response {
    let Some(tenant) = req.extensions().get::<Arc<Tenant>>().cloned() else {
        return next.run(req).await;
    };
    let caps = tenant.config.scim();
    let path = req.uri().path();
    if !caps.discovery && is_discovery(path) {
        return ScimError::not_found(
            "this service provider publishes no ServiceProviderConfig, Schemas or ResourceTypes",
        )
        .into_response();
    }
    if !caps.patch && req.method() == Method::PATCH {
        return ScimError::new(
            StatusCode::NOT_IMPLEMENTED,
            None,
            "PATCH is not supported by this service provider; replace the resource with PUT",
        )
        .into_response();
    }
    if !caps.put && req.method() == Method::PUT {
        return ScimError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            None,
            "PUT is not allowed by this service provider; change the resource with PATCH",
        )
        .into_response();
    }
    if caps.etag {
        return next.run(req).await;
    }
    req.headers_mut().remove(header::IF_MATCH);
    req.headers_mut().remove(header::IF_NONE_MATCH);
    without_versions(next.run(req).await).await
}

/// Whether a path is one of the discovery endpoints (RFC 7644 §4).
fn is_discovery(path: &str) -> bool {
    let Some((_, rest)) = path.split_once("/scim/v2/") else {
        return false;
    };
    let first = rest.split('/').next().unwrap_or_default();
    matches!(first, "ServiceProviderConfig" | "Schemas" | "ResourceTypes")
}

/// A response of a tenant without ETags: no `ETag` header and no `meta.version` in the resource
/// or in a list's `Resources` (RFC 7643 §3.1: the version *is* the ETag).
async fn without_versions(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(header::ETAG);
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(b) => b,
        Err(e) => {
            return ScimError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                format!("cannot read the response body: {e}"),
            )
            .into_response();
        }
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let strip = |v: &mut Value| {
        if let Some(meta) = v.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("version");
        }
    };
    strip(&mut value);
    if let Some(items) = value.get_mut("Resources").and_then(Value::as_array_mut) {
        items.iter_mut().for_each(strip);
    }
    let out = serde_json::to_vec(&value).map_or(bytes, axum::body::Bytes::from);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}

fn base(headers: &HeaderMap, tenant: &Tenant) -> String {
    format!("{}/{}/scim/v2", origin(headers), tenant.id())
}

fn not_found(kind: Kind, id: &str) -> ScimError {
    ScimError::not_found(format!("{} {id} not found", kind.resource_type()))
}

/// `attributes` / `excludedAttributes` of a request.
#[derive(Debug, Default)]
pub(crate) struct Projection {
    attributes: Vec<filter::AttrPath>,
    excluded: Vec<filter::AttrPath>,
}

impl Projection {
    pub(crate) fn parse(
        attributes: Option<&str>,
        excluded: Option<&str>,
    ) -> Result<Self, ScimError> {
        let list = |s: Option<&str>, name: &str| -> Result<Vec<filter::AttrPath>, ScimError> {
            s.map(|s| {
                s.split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| {
                        filter::parse_patch_path(p.trim())
                            .map(|pp| pp.path)
                            .map_err(|e| ScimError::invalid_value(format!("{name} {p:?}: {e}")))
                    })
                    .collect()
            })
            .unwrap_or(Ok(Vec::new()))
        };
        Ok(Self {
            attributes: list(attributes, "attributes")?,
            excluded: list(excluded, "excludedAttributes")?,
        })
    }

    pub(crate) fn is_identity(&self) -> bool {
        self.attributes.is_empty() && self.excluded.is_empty()
    }

    pub(crate) fn apply(&self, body: &Map<String, Value>) -> Value {
        const ALWAYS: [&str; 3] = ["id", "schemas", "meta"];
        let mut out = Map::new();
        if !self.attributes.is_empty() {
            for (k, v) in body {
                if ALWAYS.contains(&k.as_str()) {
                    out.insert(k.clone(), v.clone());
                    continue;
                }
                let wanted: Vec<&filter::AttrPath> = self
                    .attributes
                    .iter()
                    .filter(|p| match &p.schema {
                        None => p.attr.eq_ignore_ascii_case(k),
                        Some(urn) => urn.eq_ignore_ascii_case(k),
                    })
                    .collect();
                if wanted.is_empty() {
                    continue;
                }
                out.insert(k.clone(), v.clone());
            }
        } else {
            out = body.clone();
        }
        for p in &self.excluded {
            let key = p.schema.clone().unwrap_or_else(|| p.attr.clone());
            if ALWAYS.iter().any(|a| a.eq_ignore_ascii_case(&key)) {
                continue;
            }
            if let Some(k) = out.keys().find(|k| k.eq_ignore_ascii_case(&key)).cloned() {
                if p.schema.is_some() {
                    if let Some(Value::Object(ext)) = out.get_mut(&k)
                        && let Some(ak) = ext
                            .keys()
                            .find(|x| x.eq_ignore_ascii_case(&p.attr))
                            .cloned()
                    {
                        ext.remove(&ak);
                    }
                } else if let Some(sub) = &p.sub {
                    if let Some(Value::Object(o)) = out.get_mut(&k)
                        && let Some(sk) = o.keys().find(|x| x.eq_ignore_ascii_case(sub)).cloned()
                    {
                        o.remove(&sk);
                    }
                } else {
                    out.remove(&k);
                }
            }
        }
        Value::Object(out)
    }
}

pub(crate) fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

pub(crate) fn int_param(q: &[(String, String)], name: &str) -> Result<Option<i64>, ScimError> {
    param(q, name)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| ScimError::invalid_value(format!("{name} {v:?} is not an integer")))
        })
        .transpose()
}

pub(crate) fn resource_response(status: StatusCode, r: &Resource, with_location: bool) -> Response {
    let mut response = match serde_json::to_vec(&r.body) {
        Ok(bytes) => scim_bytes(status, bytes),
        Err(e) => {
            return ScimError::new(StatusCode::INTERNAL_SERVER_ERROR, None, e.to_string())
                .into_response();
        }
    };
    if let Ok(v) = HeaderValue::from_str(&r.etag()) {
        response.headers_mut().insert(header::ETAG, v);
    }
    if with_location
        && let Some(loc) = r
            .body
            .get("meta")
            .and_then(|m| m.get("location"))
            .and_then(Value::as_str)
        && let Ok(v) = HeaderValue::from_str(loc)
    {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

/// Turns a request body into a storable resource body: object, right `schemas`, canonical names,
/// server-managed and write-only attributes dropped, required attributes and types checked.
fn prepare(kind: Kind, value: Value) -> Result<Map<String, Value>, ScimError> {
    let Value::Object(mut obj) = value else {
        return Err(ScimError::invalid_syntax(
            "the request body must be a JSON object",
        ));
    };
    let has_core = filter::get_ci(&obj, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter()
                .any(|s| s.as_str().is_some_and(|s| schema::is_core(kind, s)))
        });
    if !has_core {
        return Err(ScimError::invalid_value(format!(
            "attribute 'schemas' must contain \"{}\"",
            kind.core_schema()
        )));
    }
    finish(kind, &mut obj)?;
    Ok(obj)
}

fn finish(kind: Kind, obj: &mut Map<String, Value>) -> Result<(), ScimError> {
    schema::canonicalize(kind, obj);
    obj.remove("id");
    obj.remove("meta");
    obj.remove("password");
    if kind == Kind::User {
        obj.remove("groups");
    }
    schema::validate(kind, obj)
}

async fn list<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Query(q): Query<Vec<(String, String)>>,
) -> Result<Response, ScimError> {
    let projection = Projection::parse(param(&q, "attributes"), param(&q, "excludedAttributes"))?;
    search(
        &tenant,
        &[K::KIND],
        param(&q, "filter"),
        int_param(&q, "startIndex")?,
        int_param(&q, "count")?,
        &projection,
    )
}

/// The SearchRequest message URN (RFC 7644 §3.4.3).
pub const SEARCH_REQUEST_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:SearchRequest";

/// Runs a query over one or more resource types (users before groups) and pages the matches.
fn search(
    tenant: &Tenant,
    kinds: &[Kind],
    filter: Option<&str>,
    start_index: Option<i64>,
    count: Option<i64>,
    projection: &Projection,
) -> Result<Response, ScimError> {
    let caps = tenant.config.scim();
    let filter = match filter {
        Some(f) if !f.trim().is_empty() && !caps.filter => {
            return Err(ScimError::invalid_filter(format!(
                "filter {f:?}: filtering is not supported by this service provider \
                 (filter.supported is false); list with startIndex and count instead"
            )));
        }
        Some(f) if !f.trim().is_empty() => Some(
            filter::parse_filter(f)
                .map_err(|e| ScimError::invalid_filter(format!("filter {f:?}: {e}")))?,
        ),
        _ => None,
    };
    let start = start_index.unwrap_or(1).max(1) as usize;
    let max = caps.max_results;
    let count = count.map_or(max, |c| c.clamp(0, max as i64) as usize);
    let store = tenant.read();
    let mut total = 0;
    let mut page = Vec::new();
    for kind in kinds {
        // Skip what earlier kinds already consumed of `startIndex`.
        let local_start = start.saturating_sub(total).max(1);
        let want = count - page.len();
        let (n, mut items) = store
            .collection(*kind)
            .query(filter.as_ref(), local_start, want);
        if start > total + n {
            items.clear();
        }
        total += n;
        page.extend(items);
    }
    drop(store);
    let page: Vec<Value> = if projection.is_identity() {
        page
    } else {
        page.iter()
            .filter_map(Value::as_object)
            .map(|o| projection.apply(o))
            .collect()
    };
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

/// `POST /.search`, `/Users/.search`, `/Groups/.search` (RFC 7644 §3.4.3).
async fn post_search(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Bytes,
) -> Result<Response, ScimError> {
    let Value::Object(req) = parse_body(&headers, &body)? else {
        return Err(ScimError::invalid_syntax(
            "a SearchRequest must be a JSON object",
        ));
    };
    let schemas_ok = filter::get_ci(&req, "schemas")
        .and_then(Value::as_array)
        .is_some_and(|a| {
            a.iter().any(|s| {
                s.as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(SEARCH_REQUEST_SCHEMA))
            })
        });
    if !schemas_ok {
        return Err(ScimError::invalid_syntax(format!(
            "'schemas' must contain \"{SEARCH_REQUEST_SCHEMA}\""
        )));
    }
    let list = |key: &str| -> Result<Option<String>, ScimError> {
        match filter::get_ci(&req, key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Array(a)) => Ok(Some(
                a.iter()
                    .map(|v| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            ScimError::invalid_value(format!("'{key}' must list strings"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
            )),
            Some(_) => Err(ScimError::invalid_value(format!(
                "'{key}' must be an array of strings"
            ))),
        }
    };
    let projection = Projection::parse(
        list("attributes")?.as_deref(),
        list("excludedAttributes")?.as_deref(),
    )?;
    let int = |key: &str| -> Result<Option<i64>, ScimError> {
        match filter::get_ci(&req, key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| ScimError::invalid_value(format!("'{key}' must be an integer"))),
        }
    };
    let filter = match filter::get_ci(&req, "filter") {
        None | Some(Value::Null) => None,
        Some(Value::String(f)) => Some(f.as_str()),
        Some(_) => return Err(ScimError::invalid_filter("'filter' must be a string")),
    };
    let path = uri.path();
    let kinds: &[Kind] = if path.ends_with("/Users/.search") {
        &[Kind::User]
    } else if path.ends_with("/Groups/.search") {
        &[Kind::Group]
    } else {
        &[Kind::User, Kind::Group]
    };
    search(
        &tenant,
        kinds,
        filter,
        int("startIndex")?,
        int("count")?,
        &projection,
    )
}

async fn create<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    let obj = prepare(kind, parse_body(&headers, &body)?)?;
    let base = base(&headers, &tenant);
    let mut store = tenant.write();
    if kind == Kind::Group {
        store.check_members(&obj)?;
    }
    let r = store.collection_mut(kind).insert(obj, &base)?;
    Ok(resource_response(StatusCode::CREATED, r, true))
}

async fn read<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    Query(q): Query<Vec<(String, String)>>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let projection = Projection::parse(param(&q, "attributes"), param(&q, "excludedAttributes"))?;
    let store = tenant.read();
    let r = store
        .collection(K::KIND)
        .get(&id)
        .ok_or_else(|| not_found(K::KIND, &id))?;
    if let Some(v) = headers.get(header::IF_NONE_MATCH)
        && etag_listed(v, &r.etag())
    {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&r.etag()) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return Ok(resp);
    }
    if projection.is_identity() {
        return Ok(resource_response(StatusCode::OK, r, false));
    }
    let mut resp = scim_json(StatusCode::OK, &projection.apply(&r.body));
    if let Ok(v) = HeaderValue::from_str(&r.etag()) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn replace<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    let obj = prepare(kind, parse_body(&headers, &body)?)?;
    let mut store = tenant.write();
    let current = store
        .collection(kind)
        .get(&id)
        .ok_or_else(|| not_found(kind, &id))?;
    check_if_match(&headers, &current.etag())?;
    if kind == Kind::Group {
        store.check_members(&obj)?;
    }
    let r = store.collection_mut(kind).replace(&id, obj)?;
    Ok(resource_response(StatusCode::OK, r, false))
}

async fn modify<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    let ops = patch::parse_request(&parse_body(&headers, &body)?)?;
    let mut store = tenant.write();
    let current = store
        .collection(kind)
        .get(&id)
        .ok_or_else(|| not_found(kind, &id))?;
    check_if_match(&headers, &current.etag())?;
    let mut obj = current.body.clone();
    patch::apply(kind, &mut obj, &ops)?;
    finish(kind, &mut obj)?;
    if kind == Kind::Group {
        store.check_members(&obj)?;
    }
    let r = store.collection_mut(kind).replace(&id, obj)?;
    Ok(resource_response(StatusCode::OK, r, false))
}

async fn remove<K: KindOf>(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    let kind = K::KIND;
    let mut store = tenant.write();
    let current = store
        .collection(kind)
        .get(&id)
        .ok_or_else(|| not_found(kind, &id))?;
    check_if_match(&headers, &current.etag())?;
    store.collection_mut(kind).remove(&id);
    store.forget_member(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn service_provider_config(
    Extension(tenant): Extension<Arc<Tenant>>,
    headers: HeaderMap,
) -> Response {
    let base = base(&headers, &tenant);
    let caps = tenant.config.scim();
    let scheme = match tenant.config.auth {
        AuthConfig::Basic { .. } => json!({
            "type": "httpbasic",
            "name": "HTTP Basic",
            "description": "Authentication scheme using the HTTP Basic Standard",
            "specUri": "https://www.rfc-editor.org/info/rfc7617",
            "primary": true,
        }),
        _ => json!({
            "type": "oauthbearertoken",
            "name": "OAuth Bearer Token",
            "description": "Authentication scheme using the OAuth Bearer Token Standard",
            "specUri": "https://www.rfc-editor.org/info/rfc6750",
            "primary": true,
        }),
    };
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:ServiceProviderConfig"],
            "documentationUri": "https://www.rfc-editor.org/info/rfc7644",
            "patch": { "supported": caps.patch },
            "bulk": { "supported": false, "maxOperations": 0, "maxPayloadSize": 0 },
            "filter": { "supported": caps.filter, "maxResults": caps.max_results },
            "changePassword": { "supported": false },
            "sort": { "supported": false },
            "etag": { "supported": caps.etag },
            "authenticationSchemes": [scheme],
            "meta": {
                "resourceType": "ServiceProviderConfig",
                "location": format!("{base}/ServiceProviderConfig"),
            },
        }),
    )
}

pub(crate) fn list_response(items: Vec<Value>) -> Response {
    scim_json(
        StatusCode::OK,
        &json!({
            "schemas": [LIST_RESPONSE_SCHEMA],
            "totalResults": items.len(),
            "itemsPerPage": items.len(),
            "startIndex": 1,
            "Resources": items,
        }),
    )
}

fn by_id(items: Vec<Value>, id: &str, what: &str) -> Result<Response, ScimError> {
    items
        .into_iter()
        .find(|s| {
            s.get("id")
                .and_then(Value::as_str)
                .is_some_and(|i| i.eq_ignore_ascii_case(id))
        })
        .map(|s| scim_json(StatusCode::OK, &s))
        .ok_or_else(|| ScimError::not_found(format!("{what} {id} not found")))
}

async fn schemas(Extension(tenant): Extension<Arc<Tenant>>, headers: HeaderMap) -> Response {
    list_response(schema::schemas_json(&base(&headers, &tenant)))
}

async fn schema_by_id(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    by_id(
        schema::schemas_json(&base(&headers, &tenant)),
        &id,
        "schema",
    )
}

async fn resource_types(Extension(tenant): Extension<Arc<Tenant>>, headers: HeaderMap) -> Response {
    list_response(schema::resource_types_json(&base(&headers, &tenant)))
}

async fn resource_type_by_id(
    Extension(tenant): Extension<Arc<Tenant>>,
    Path((_, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ScimError> {
    by_id(
        schema::resource_types_json(&base(&headers, &tenant)),
        &id,
        "resource type",
    )
}
