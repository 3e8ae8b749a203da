//! The tenant gate: middleware in front of every mode's routes. In this order it resolves the
//! tenant, records the arrival (and whether it carried `If-Match` or a `filter`), applies faults
//! (latency, hang, reset, rate limit, token revocation), lets the mode admit the request
//! (GitHub's User-Agent rule and hourly budget, Salesforce's rolling allocation), checks
//! credentials, injects errors, runs the handler, re-renders errors in the mode's dialect, adds
//! the mode's per-response headers and records the outcome. Faults come before auth so a
//! throttled or broken provider looks the same to any caller.
//! Every provider difference the gate needs comes from the mode's [`ModeHooks`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use rand::Rng;

use crate::config::{AuthConfig, Mode};
use crate::error::{ErrorStyle, RenderedError, ScimError};
use crate::faults::Hostile;
use crate::stats::Carried;
use crate::tenant::{App, Tenant};

/// What differs between providers at the gate. Every method has the plain-SCIM default.
pub trait ModeHooks: Send + Sync + 'static {
    /// The dialect of the mode's error bodies.
    fn style(&self) -> ErrorStyle {
        ErrorStyle::Rfc
    }

    /// The answer to a request naming a tenant this mode does not serve.
    fn unknown_tenant(&self, id: &str, mode: Mode) -> Response {
        ScimError::not_found(format!("no {} tenant {id:?}", mode.name()))
            .styled(self.style())
            .into_response()
    }

    /// Mode rules checked after faults and before credentials; `Some((response, throttled))`
    /// ends the request.
    fn admit(
        &self,
        _tenant: &Tenant,
        _method: &Method,
        _path: &str,
        _headers: &HeaderMap,
    ) -> Option<(Response, bool)> {
        None
    }

    /// Whether the request may skip the credential check (an OAuth token endpoint).
    fn public(&self, _path: &str) -> bool {
        false
    }

    /// Checks credentials; `Err(detail)` is answered by [`ModeHooks::unauthorized`].
    fn authorize(&self, tenant: &Tenant, headers: &HeaderMap) -> Result<(), String> {
        if authorized(&tenant.config.auth, headers) {
            Ok(())
        } else {
            Err("missing or invalid credentials".into())
        }
    }

    /// The 401 of this mode.
    fn unauthorized(&self, tenant: &Tenant, detail: &str) -> Response {
        ScimError::unauthorized(detail)
            .with_header(header::WWW_AUTHENTICATE, challenge(&tenant.config.auth))
            .styled(self.style())
            .into_response()
    }

    /// The answer when the `rate_limit` fault refuses a request; `wait_secs` until a retry
    /// would pass.
    fn throttled(&self, _tenant: &Tenant, per_sec: f64, wait_secs: u64) -> Response {
        ScimError::new(
            StatusCode::TOO_MANY_REQUESTS,
            None,
            format!("rate limit of {per_sec} requests/s exceeded"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(wait_secs))
        .styled(self.style())
        .into_response()
    }

    /// Headers every response of the mode carries (`x-ratelimit-*`, `Sforce-Limit-Info`, …).
    fn finish(&self, _tenant: &Tenant, _response: &mut Response) {}
}

/// The plain RFC 7644 gate behaviour.
#[derive(Debug)]
pub struct PlainHooks;

impl ModeHooks for PlainHooks {}

/// Status recorded in statistics for a connection reset (no HTTP response was sent).
pub const RESET_STATUS: u16 = 0;

/// What the gate needs to know about the mode whose routes it guards.
#[derive(Clone, Copy)]
pub struct GateSpec {
    /// Only tenants of this mode are served by these routes.
    pub mode: Mode,
    /// Route prefix stripped from the matched route to name the path class (`Users/{id}`).
    pub prefix: &'static str,
    /// The mode's differences at the gate.
    pub hooks: &'static dyn ModeHooks,
}

impl std::fmt::Debug for GateSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GateSpec")
            .field("mode", &self.mode)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Marks a response as throttling, for statistics (a mode may throttle with 403, like GitHub).
#[derive(Debug, Clone, Copy)]
pub struct Throttled;

/// Checks the request's credentials against the tenant's static ones.
pub fn authorized(auth: &AuthConfig, headers: &HeaderMap) -> bool {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (scheme, rest) = given.split_once(' ').unwrap_or((given, ""));
    match auth {
        AuthConfig::None => true,
        AuthConfig::Bearer { token } => {
            scheme.eq_ignore_ascii_case("bearer") && rest.trim() == token
        }
        AuthConfig::Basic { username, password } => {
            scheme.eq_ignore_ascii_case("basic")
                && base64::engine::general_purpose::STANDARD
                    .decode(rest.trim())
                    .ok()
                    .and_then(|raw| String::from_utf8(raw).ok())
                    .and_then(|s| {
                        s.split_once(':')
                            .map(|(u, p)| u == username && p == password)
                    })
                    .unwrap_or(false)
        }
    }
}

/// The `WWW-Authenticate` challenge for a tenant's scheme.
pub fn challenge(auth: &AuthConfig) -> HeaderValue {
    match auth {
        AuthConfig::Basic { .. } => HeaderValue::from_static("Basic realm=\"scimrelay-sim\""),
        _ => HeaderValue::from_static("Bearer realm=\"scimrelay-sim\""),
    }
}

/// A response whose body fails at once: hyper drops the connection without sending a complete
/// response, which the client sees as a reset / incomplete message.
fn reset_response() -> Response {
    let stream = futures::stream::once(async {
        Err::<axum::body::Bytes, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "injected reset",
        ))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.extensions_mut().insert(ResetMarker);
    r
}

/// The middleware; see the module doc for the order of steps.
pub async fn gate(
    State((app, spec)): State<(Arc<App>, GateSpec)>,
    Path(params): Path<HashMap<String, String>>,
    matched: MatchedPath,
    req: Request,
    next: Next,
) -> Response {
    let tenant_id = params.get("tenant").map(String::as_str).unwrap_or_default();
    let Some(tenant) = app
        .tenant(tenant_id)
        .filter(|t| t.config.mode == spec.mode)
        .cloned()
    else {
        return spec.hooks.unknown_tenant(tenant_id, spec.mode);
    };
    let class = matched
        .as_str()
        .strip_prefix(spec.prefix)
        .unwrap_or(matched.as_str())
        .to_string();
    let method = req.method().clone();
    {
        let mut stats = tenant.stats();
        stats.arrived(Instant::now());
        stats.carried(Carried::of(req.uri(), req.headers()));
    }
    let (req, subject) = match written_subject(&tenant, &class, &method, &params, req).await {
        Ok(split) => split,
        Err(refused) => return refused,
    };
    // A request is carried out to its end even when its client goes away (as a real server
    // does): the writes of a client that gave up may still land, and overlap a retry.
    let writing = subject.map(|s| WriteSpan::start(&tenant, s));
    let task = tokio::spawn(async move {
        let _writing = writing;
        serve(app, spec, tenant, class, method, req, next).await
    });
    task.await.unwrap_or_else(|_| {
        ScimError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            "the handler panicked",
        )
        .into_response()
    })
}

/// A write of one subject in progress at the server (see [`Stats::write_started`]).
struct WriteSpan {
    tenant: Arc<Tenant>,
    subject: String,
}

impl WriteSpan {
    fn start(tenant: &Arc<Tenant>, subject: String) -> Self {
        tenant.stats().write_started(&subject);
        Self {
            tenant: tenant.clone(),
            subject,
        }
    }
}

impl Drop for WriteSpan {
    fn drop(&mut self) {
        self.tenant.stats().write_ended(&self.subject);
    }
}

/// Largest create body read to name its subject.
const CREATE_BODY_LIMIT: usize = 8 << 20;

/// The subject a write names: a user by `userName`, a group by `displayName` (lower-cased),
/// read from a create's body or from the stored resource a path names; `None` for reads and
/// for other paths. The request is handed back (a create's body re-attached).
async fn written_subject(
    tenant: &Tenant,
    class: &str,
    method: &Method,
    params: &HashMap<String, String>,
    req: Request,
) -> Result<(Request, Option<String>), Response> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok((req, None));
    }
    let (kind, attribute) = match class.split('/').next() {
        Some("Users") => (crate::schema::Kind::User, "userName"),
        Some("Groups") => (crate::schema::Kind::Group, "displayName"),
        _ => return Ok((req, None)),
    };
    let name = |v: Option<&serde_json::Value>| {
        v.and_then(serde_json::Value::as_str).map(|n| {
            format!(
                "{}:{}",
                class.split('/').next().unwrap_or(""),
                n.to_lowercase()
            )
        })
    };
    if let Some(id) = params.get("id") {
        let store = tenant.read();
        let subject = store
            .collection(kind)
            .get(id)
            .and_then(|r| name(r.body.get(attribute)));
        return Ok((req, subject));
    }
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, CREATE_BODY_LIMIT).await else {
        return Err(ScimError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            "request body too large",
        )
        .into_response());
    };
    let subject = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| name(v.get(attribute)));
    Ok((Request::from_parts(parts, Body::from(bytes)), subject))
}

/// Everything after the arrival: faults, admission, credentials, the handler, the answer.
async fn serve(
    app: Arc<App>,
    spec: GateSpec,
    tenant: Arc<Tenant>,
    class: String,
    method: Method,
    mut req: Request,
    next: Next,
) -> Response {
    let path = req.uri().path();
    let public = spec.hooks.public(path);
    let (mut response, throttled) = match guarded(
        &app,
        &tenant,
        spec.hooks,
        &method,
        path,
        req.headers(),
        public,
    )
    .await
    {
        Some(early) => early,
        None => {
            let faults = tenant.faults();
            let write = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
            let hostile = faults.hostile_now();
            match hostile {
                Some(h) if h != Hostile::NulId => (hostile_answer(h, &app), false),
                _ => {
                    req.extensions_mut().insert(tenant.clone());
                    let applied = next.run(req).await;
                    if write
                        && faults.after_effect_rate > 0.0
                        && rand::random::<f64>() < faults.after_effect_rate
                    {
                        // The write took effect; its answer is lost behind an error.
                        (injected_error(&faults, spec.hooks), false)
                    } else if hostile == Some(Hostile::NulId) {
                        (with_nul_ids(applied).await, false)
                    } else {
                        (applied, false)
                    }
                }
            }
        }
    };
    let style = spec.hooks.style();
    if style != ErrorStyle::Rfc
        && let Some(RenderedError(err)) = response.extensions_mut().remove::<RenderedError>()
    {
        let throttled_marker = response.extensions().get::<Throttled>().copied();
        response = err.styled(style).into_response();
        if let Some(t) = throttled_marker {
            response.extensions_mut().insert(t);
        }
    }
    let throttled = throttled || response.extensions().get::<Throttled>().is_some();
    let status = if response.extensions().get::<ResetMarker>().is_some() {
        RESET_STATUS
    } else {
        spec.hooks.finish(&tenant, &mut response);
        response.status().as_u16()
    };
    tenant.stats().answered(&method, &class, status, throttled);
    response
}

/// Marks a reset response for statistics.
#[derive(Debug, Clone, Copy)]
struct ResetMarker;

/// Applies faults, mode admission and auth; `Some((response, throttled))` ends the request early.
async fn guarded(
    app: &App,
    tenant: &Tenant,
    hooks: &dyn ModeHooks,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    public: bool,
) -> Option<(Response, bool)> {
    let faults = tenant.faults();
    let write = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    for l in [faults.latency_ms, faults.write_latency_ms.filter(|_| write)]
        .into_iter()
        .flatten()
    {
        let ms = if l.max > l.min {
            rand::rng().random_range(l.min..=l.max)
        } else {
            l.min
        };
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }
    if faults.hang_rate > 0.0 && rand::random::<f64>() < faults.hang_rate {
        tokio::select! {
            () = tokio::time::sleep(faults.hang()) => {}
            () = app.shutdown.cancelled() => {}
        }
    }
    if faults.reset_rate > 0.0 && rand::random::<f64>() < faults.reset_rate {
        return Some((reset_response(), false));
    }
    if let Some(limit) = faults.rate_limit
        && let Err(wait) = tenant.bucket().take(limit, Instant::now())
    {
        let secs = wait.ceil().max(1.0) as u64;
        return Some((hooks.throttled(tenant, limit.per_sec, secs), true));
    }
    if let Some(early) = hooks.admit(tenant, method, path, headers) {
        return Some(early);
    }
    if !public {
        if faults.token_revoked {
            return Some((
                hooks.unauthorized(tenant, "the access token has been revoked"),
                false,
            ));
        }
        if let Err(detail) = hooks.authorize(tenant, headers) {
            return Some((hooks.unauthorized(tenant, &detail), false));
        }
    }
    if faults.error_rate > 0.0 && rand::random::<f64>() < faults.error_rate {
        return Some((injected_error(&faults, hooks), false));
    }
    None
}

/// A hostile answer in place of the server's (see [`Hostile`]).
fn hostile_answer(h: Hostile, app: &App) -> Response {
    match h {
        Hostile::Redirect => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, "/login?session=s3cr3t-session")
            .body(Body::empty()),
        Hostile::Html => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .body(Body::from(
                "<!doctype html><html><body><form>Sign in</form></body></html>",
            )),
        Hostile::HugeBody => {
            const CHUNK: usize = 64 << 10;
            let chunks = crate::faults::HUGE_BODY_BYTES / CHUNK as u64;
            let stream = futures::stream::iter((0..chunks).map(|i| {
                let mut chunk = vec![b' '; CHUNK];
                if i == 0 {
                    chunk[0] = b'[';
                }
                Ok::<_, std::io::Error>(chunk)
            }));
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/scim+json")
                .body(Body::from_stream(stream))
        }
        Hostile::EndlessBody => {
            use futures::StreamExt as _;
            // Endless, but for the simulator's own shutdown.
            let stream = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                Some((Ok::<_, std::io::Error>(vec![b' '; 1024]), ()))
            })
            .take_until(app.shutdown.clone().cancelled_owned());
            Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/scim+json")
                .body(Body::from_stream(stream))
        }
        // Answered by the handler, then poisoned (see `with_nul_ids`); `Mixed` is resolved by
        // `hostile_now` and never reaches here.
        Hostile::NulId | Hostile::Mixed => Response::builder()
            .status(StatusCode::INTERNAL_SERVER_ERROR)
            .body(Body::empty()),
    }
    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The handler's answer with a NUL byte added to every `id` in its JSON body.
async fn with_nul_ids(resp: Response) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 16 << 20).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    fn poison(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(id)) = m.get_mut("id") {
                    id.push('\0');
                }
                m.values_mut().for_each(poison);
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(poison),
            _ => {}
        }
    }
    poison(&mut v);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(v.to_string()))
}

/// An injected error: one of the tenant's `error_statuses`, in the mode's error style.
fn injected_error(faults: &crate::faults::FaultConfig, hooks: &dyn ModeHooks) -> Response {
    let statuses = faults.statuses();
    let code = statuses[rand::rng().random_range(0..statuses.len())];
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ScimError::new(status, None, format!("injected fault: {code}"))
        .styled(hooks.style())
        .into_response()
}
