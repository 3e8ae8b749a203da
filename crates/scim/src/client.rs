//! `ScimClient`: sends one [`ScimRequest`] to one target and maps the answer.
//!
//! One client per target, cheap to clone (an `Arc` around a reqwest client, the base URL and
//! the authorizer). [`ScimClient::execute`] is the single place a SCIM request leaves the
//! process: it joins the path to the base URL, encodes the query, adds the auth header, and
//! maps the answer. With OAuth, a 401 renews the token once and the request is retried once.
//! Retries for anything else, rate limits and concurrency belong to the connector runtime,
//! which wraps this call.
//!
//! # Reading answers strictly
//! A provisioning system that believes a wrong answer records a user as created when nothing
//! was (and later drops them from groups). So:
//! - status ≥ 400 → [`ScimError::Http`], parsed from the body;
//! - 3xx → [`ScimError::Redirect`] naming the status and the `Location` without its query
//!   (redirects are never followed: a SCIM server has no reason to redirect — an SSO gateway's
//!   login page does — and following one could carry the credential elsewhere);
//! - 2xx with a body that is not JSON (an HTML page from a gateway) → [`ScimError::Unexpected`]
//!   naming the content type; a `POST`/`PUT`/`GET` answered without a JSON object, or a list
//!   request answered without `Resources` or `totalResults`, likewise;
//! - a body longer than [`ClientConfig::max_body_bytes`] (the target's `max_response_bytes`) is
//!   not read further → [`ScimError::TooLarge`]; the request timeout bounds a body that never
//!   ends.
//!
//! HTTPS (to the base URL and the OAuth token URL alike) trusts the system roots — the OS store,
//! or `SSL_CERT_FILE` / `SSL_CERT_DIR` — plus the CA bundle of [`ClientConfig::ca_file`], the
//! target's `tls.ca_file`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde_json::Value;
use tokio::time::Instant;

use crate::auth::{Auth, Authorizer};
use crate::encoding::query_string;
use crate::error::{ScimError, protect_headers};
use crate::request::{ScimRequest, ScimResponse};

/// The content type of SCIM request bodies (RFC 7644 §3.1).
pub const DEFAULT_CONTENT_TYPE: &str = "application/scim+json";

/// The request timeout when the config gives none.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;

/// The largest response body read when the config gives no limit: far above any SCIM resource
/// or page of 100 resources, far below what would strain a connector's memory.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 4 << 20;

/// The longest the TCP/TLS connect phase may take, whatever the request timeout: a target
/// that cannot be reached should fail fast and count as a connect error.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What `Accept` asks for: SCIM JSON, or plain JSON from servers that only know that.
const ACCEPT: &str = "application/scim+json, application/json;q=0.9";

/// Everything a [`ScimClient`] needs for one target. `Debug` prints no secret.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// The SCIM base URL, e.g. `https://api.github.com/scim/v2/enterprises/acme` (a trailing
    /// `/` is ignored).
    pub base_url: String,
    /// How to authenticate.
    pub auth: Auth,
    /// Per-request timeout, whole request including the body (0 = [`DEFAULT_TIMEOUT_SECS`]).
    pub timeout_secs: u64,
    /// The `User-Agent` header (GitHub rejects requests without one; empty = `scimrelay/<version>`).
    pub user_agent: String,
    /// The content type of request bodies (empty = [`DEFAULT_CONTENT_TYPE`]); some servers
    /// only accept `application/json`.
    pub content_type: String,
    /// A PEM bundle of CA certificates trusted for HTTPS in addition to the system roots (a
    /// SCIM server or token endpoint with a certificate from a private CA); `None` = system
    /// roots only.
    pub ca_file: Option<PathBuf>,
    /// The largest response body read, from the SCIM server and the OAuth token endpoint alike
    /// (0 = [`DEFAULT_MAX_BODY_BYTES`]); a longer one is [`ScimError::TooLarge`].
    pub max_body_bytes: u64,
}

impl ClientConfig {
    /// A config with the default timeout, user agent and content type.
    pub fn new(base_url: impl Into<String>, auth: Auth) -> Self {
        ClientConfig {
            base_url: base_url.into(),
            auth,
            ..Default::default()
        }
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            base_url: String::new(),
            auth: Auth::None,
            timeout_secs: DEFAULT_TIMEOUT_SECS,
            user_agent: default_user_agent(),
            content_type: DEFAULT_CONTENT_TYPE.to_owned(),
            ca_file: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// The certificates of a PEM CA bundle; errors name the file and say what is wrong with it.
fn extra_roots(path: &Path) -> Result<Vec<reqwest::Certificate>, ScimError> {
    let bad = |why: String| ScimError::Config(format!("tls.ca_file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| bad(format!("not a PEM certificate bundle ({e})")))?;
    if certs.is_empty() {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(certs)
}

fn default_user_agent() -> String {
    format!("scimrelay/{}", env!("CARGO_PKG_VERSION"))
}

/// A SCIM client for one target. Clones share the connection pool and the token cache.
#[derive(Clone)]
pub struct ScimClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    auth: Authorizer,
    content_type: HeaderValue,
    max_body_bytes: u64,
}

impl fmt::Debug for ScimClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimClient")
            .field("base_url", &self.inner.base_url)
            .finish_non_exhaustive()
    }
}

/// A raw answer before status mapping.
struct RawResponse {
    status: u16,
    headers: http::HeaderMap,
    body: Vec<u8>,
}

impl ScimClient {
    /// Builds a client; a bad base URL, header value or key is a [`ScimError::Config`] naming
    /// the field.
    pub fn new(config: ClientConfig) -> Result<Self, ScimError> {
        let base = config.base_url.trim();
        let parsed = reqwest::Url::parse(base)
            .map_err(|e| ScimError::Config(format!("base_url {base:?} is not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ScimError::Config(format!(
                "base_url {base:?} must be http(s)"
            )));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(ScimError::Config(format!(
                "base_url {base:?} must not have a query or fragment"
            )));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(ScimError::Config(
                "base_url must not embed credentials; use the auth settings".into(),
            ));
        }
        let user_agent = match config.user_agent.trim() {
            "" => default_user_agent(),
            ua => ua.to_owned(),
        };
        let content_type = match config.content_type.trim() {
            "" => DEFAULT_CONTENT_TYPE,
            ct => ct,
        };
        let content_type = HeaderValue::from_str(content_type).map_err(|_| {
            ScimError::Config(format!(
                "content_type {content_type:?} is not a valid header value"
            ))
        })?;
        let timeout = Duration::from_secs(match config.timeout_secs {
            0 => DEFAULT_TIMEOUT_SECS,
            t => t,
        });
        let mut builder = reqwest::Client::builder();
        if let Some(path) = &config.ca_file {
            builder = builder.tls_certs_merge(extra_roots(path)?);
        }
        let http = builder
            .timeout(timeout)
            .connect_timeout(timeout.min(MAX_CONNECT_TIMEOUT))
            .user_agent(HeaderValue::from_str(&user_agent).map_err(|_| {
                ScimError::Config(format!(
                    "user_agent {user_agent:?} is not a valid header value"
                ))
            })?)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| ScimError::Config(format!("could not build the HTTP client ({e})")))?;
        let max_body_bytes = match config.max_body_bytes {
            0 => DEFAULT_MAX_BODY_BYTES,
            n => n,
        };
        let auth = Authorizer::new(&config.auth, max_body_bytes)?;
        Ok(ScimClient {
            inner: Arc::new(Inner {
                http,
                base_url: base.trim_end_matches('/').to_owned(),
                auth,
                content_type,
                max_body_bytes,
            }),
        })
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    /// How many OAuth token requests this client (and its clones) made; 0 without OAuth.
    pub fn token_requests(&self) -> u64 {
        self.inner.auth.token_requests()
    }

    /// The full URL of a request: base URL + path + percent-encoded query.
    fn url_for(&self, req: &ScimRequest) -> Result<reqwest::Url, ScimError> {
        let mut url = self.inner.base_url.clone();
        if !req.path.is_empty() && !req.path.starts_with('/') {
            url.push('/');
        }
        url.push_str(&req.path);
        if !req.query.is_empty() {
            url.push(if req.path.contains('?') { '&' } else { '?' });
            url.push_str(&query_string(&req.query));
        }
        reqwest::Url::parse(&url).map_err(|e| {
            ScimError::Config(format!(
                "request path {:?} does not form a URL ({e})",
                req.path
            ))
        })
    }

    /// Sends one request and reads the answer strictly (see the module docs): `Ok` only for a
    /// 2xx whose body is what the request needs (`body: None` for 204 or an empty body where
    /// that is fine). With OAuth, a 401 renews the token and retries once.
    pub async fn execute(&self, req: &ScimRequest) -> Result<ScimResponse, ScimError> {
        let url = self.url_for(req)?;
        let started = Instant::now();
        let cred = self.inner.auth.credential(&self.inner.http).await?;
        let mut raw = self.send(req, url.clone(), cred.header).await?;
        if raw.status == 401
            && let Some(fresh) = self
                .inner
                .auth
                .after_unauthorized(&self.inner.http, cred.generation)
                .await
        {
            tracing::debug!(method = %req.method, path = %req.path, "401 with an oauth token; renewing it and retrying once");
            let fresh = fresh?;
            raw = self.send(req, url, fresh.header).await?;
        }
        tracing::debug!(
            method = %req.method,
            path = %req.path,
            status = raw.status,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "scim request"
        );
        finish(req, raw)
    }

    /// One HTTP attempt.
    async fn send(
        &self,
        req: &ScimRequest,
        url: reqwest::Url,
        auth: Option<HeaderValue>,
    ) -> Result<RawResponse, ScimError> {
        let mut builder = self
            .inner
            .http
            .request(req.method.clone(), url)
            .header(http::header::ACCEPT, ACCEPT);
        if let Some(auth) = auth {
            builder = builder.header(http::header::AUTHORIZATION, auth);
        }
        if let Some(etag) = &req.if_match {
            let v = HeaderValue::from_str(etag).map_err(|_| {
                ScimError::Config("the If-Match ETag is not a valid header value".into())
            })?;
            builder = builder.header(http::header::IF_MATCH, v);
        }
        if let Some(body) = &req.body {
            let bytes = serde_json::to_vec(body).map_err(|e| {
                ScimError::Decode(format!("could not serialize the request body ({e})"))
            })?;
            builder = builder
                .header(http::header::CONTENT_TYPE, self.inner.content_type.clone())
                .body(bytes);
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| ScimError::from_reqwest(e, "scim request"))?;
        let status = resp.status().as_u16();
        let headers = protect_headers(resp.headers().clone());
        let body =
            read_limited(resp, self.inner.max_body_bytes, "reading the scim response").await?;
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }
}

/// Reads a response body, at most `limit` bytes: a `Content-Length` above it is refused before
/// reading, a body that grows past it is abandoned.
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    limit: u64,
    what: &str,
) -> Result<Vec<u8>, ScimError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(ScimError::TooLarge { limit });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| ScimError::from_reqwest(e, what))?
    {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(ScimError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The `Location` of a redirect without its query and fragment (they may carry tokens).
fn location(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(|l| l.split(['?', '#']).next().unwrap_or_default().to_owned())
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "(none)".to_owned())
}

/// What a successful answer to `req` must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    /// A list: a JSON object with `Resources` or `totalResults` (a GET of `/Users`, `/Groups`).
    List,
    /// A resource: a JSON object (a GET of one object, a POST, a PUT).
    Resource,
    /// A resource or no body (a PATCH answers 204, or 200 with the resource).
    ResourceIfAny,
    /// Nothing: a DELETE's body is not read as anything (but an HTML page is a gateway's).
    Nothing,
}

fn needs(req: &ScimRequest) -> Needs {
    let path = req.path.split(['?', '#']).next().unwrap_or_default();
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    match req.method {
        http::Method::GET if matches!(last, "Users" | "Groups") => Needs::List,
        http::Method::GET | http::Method::POST | http::Method::PUT => Needs::Resource,
        http::Method::PATCH => Needs::ResourceIfAny,
        _ => Needs::Nothing,
    }
}

/// Maps a raw answer to `req`: errors parsed, redirects refused, bodies decoded and checked
/// against what the request needs (see the module docs).
fn finish(req: &ScimRequest, raw: RawResponse) -> Result<ScimResponse, ScimError> {
    let RawResponse {
        status,
        headers,
        body,
    } = raw;
    if status >= 400 {
        return Err(ScimError::from_response(status, headers, &body));
    }
    if (300..400).contains(&status) {
        return Err(ScimError::Redirect {
            status,
            location: location(&headers),
        });
    }
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("no content type")
        .to_owned();
    let what = |problem: &str| {
        ScimError::Unexpected(format!(
            "HTTP {status} to {} {}: {problem} ({content_type}); a gateway may be answering in the SCIM server's place",
            req.method,
            req.path.split(['?', '#']).next().unwrap_or_default()
        ))
    };
    let needs = needs(req);
    let is_blank = body.iter().all(u8::is_ascii_whitespace);
    // A DELETE's body is not read, but an HTML page is a gateway's (a login page, an error
    // page served as 200), never a SCIM server's acknowledgement: the object was not deleted.
    if needs == Needs::Nothing && !is_blank && content_type.to_ascii_lowercase().contains("html") {
        return Err(what("an HTML page where a SCIM server answers"));
    }
    let value = if status == 204 || status == 205 || is_blank {
        None
    } else if needs == Needs::Nothing {
        serde_json::from_slice::<Value>(&body).ok()
    } else {
        Some(serde_json::from_slice::<Value>(&body).map_err(|_| what("the body is not JSON"))?)
    };
    match (needs, &value) {
        (Needs::Nothing, _) | (Needs::ResourceIfAny, None) => {}
        (_, None) => return Err(what("no body where a SCIM resource or list belongs")),
        (_, Some(v)) if !v.is_object() => {
            return Err(what("the body is JSON but not an object"));
        }
        (Needs::List, Some(v))
            if v.get("Resources").is_none() && v.get("totalResults").is_none() =>
        {
            return Err(what(
                "the body is not a SCIM list (no Resources, no totalResults)",
            ));
        }
        _ => {}
    }
    if let Some(v) = &value
        && needs != Needs::Nothing
        && let Some(bad) = unusable_id(v, needs)
    {
        return Err(what(&format!("a resource's id {bad}")));
    }
    Ok(ScimResponse {
        status,
        headers,
        body: value,
    })
}

/// What is wrong with an `id` the answer carries (the resource's own, or each listed one's), if
/// anything: an id is a string of printable characters. One that is not would be sent back in
/// paths and stored as the subject's remote id.
fn unusable_id(v: &Value, needs: Needs) -> Option<&'static str> {
    let problem = |r: &Value| match r.get("id") {
        None => None,
        Some(Value::String(id)) if id.chars().any(char::is_control) => {
            Some("holds a control character")
        }
        Some(Value::String(_)) => None,
        Some(_) => Some("is not a string"),
    };
    if needs == Needs::List {
        v.get("Resources")
            .and_then(Value::as_array)
            .and_then(|list| list.iter().find_map(problem))
    } else {
        problem(v)
    }
}

#[cfg(test)]
mod tests;
