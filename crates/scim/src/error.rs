//! The one error type of the SCIM client, and the parser for every error-body shape the
//! providers send.
//!
//! Providers disagree on error bodies (see `docs/providers/error-bodies.md`, with sources):
//! - RFC 7644: `{"schemas":[…Error], "status":"409", "scimType":"uniqueness", "detail":"…"}`;
//! - GitHub: `status` is an integer, and `message` / `documentation_url` come along;
//! - AWS: the key is `schema` (singular) and there is no `scimType`;
//! - Salesforce: `schemas` is a *string* holding a JSON array and `status` a number, with a
//!   detail such as `REQUIRED_FIELD_MISSING:…`; or the plain REST shapes
//!   `[{"errorCode":"…","message":"…"}]` and `{"errorCode":"…","message":"…"}`;
//! - proxies and gateways: plain text, HTML, or nothing at all.
//!
//! So the parser never trusts the envelope: it reads whatever of `scimType`, `detail`/`message`
//! and `errorCode` it can find, and the HTTP status (from the response line, not the body) stays
//! the primary signal. Nothing here ever sees the request, so an error cannot carry its body or a
//! credential.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use serde_json::{Map, Value};

/// Longest `detail` kept from an error body, in characters: enough for any real SCIM message,
/// short enough that an HTML error page does not flood an outcome record or a log line.
pub const MAX_DETAIL_CHARS: usize = 1000;

/// Longest detail kept from a body that is not JSON (plain text or HTML), in characters.
const MAX_TEXT_DETAIL_CHARS: usize = 200;

/// Every way a SCIM call can fail.
///
/// `Display` names what went wrong and what to do; it never contains a credential or the
/// request body (those never reach this type).
#[derive(thiserror::Error, Debug, Clone)]
pub enum ScimError {
    /// The server answered with a status ≥ 400.
    #[error("{}", http_message(*status, scim_type, detail, error_code))]
    Http {
        /// The HTTP status of the response (the primary signal; bodies are unreliable).
        status: u16,
        /// `scimType` from the body, when the server sent one (RFC 7644 §3.12).
        scim_type: Option<String>,
        /// A human-readable reason from the body (`detail`, `message`, or the text of a plain body).
        detail: Option<String>,
        /// A provider error code (`errorCode`, `error`, `__type`, or a Salesforce `CODE:` prefix).
        error_code: Option<String>,
        /// How long the server asked us to wait (`Retry-After`, seconds or HTTP date).
        retry_after: Option<Duration>,
        /// The response headers, for provider hooks (rate-limit headers, request ids). Boxed to
        /// keep `ScimError` small (clippy's `result_large_err`).
        headers: Box<HeaderMap>,
    },
    /// The request (or the token request) did not complete within the configured timeout.
    #[error("the request timed out; the server may be slow or overloaded, retry later")]
    Timeout,
    /// No connection could be made (DNS, TCP, TLS).
    #[error("could not connect to the server: {0}; check the base URL and the network")]
    Connect(String),
    /// The connection failed while the request or response was in flight.
    #[error("transport error: {0}")]
    Transport(String),
    /// A successful response could not be understood (not JSON, or not the expected resource).
    #[error("could not decode the server's response: {0}")]
    Decode(String),
    /// The client configuration is unusable (bad base URL, header value, key); fix the target config.
    #[error("invalid SCIM client configuration: {0}")]
    Config(String),
    /// The server answered with a redirect (3xx). A SCIM server never redirects; a login page
    /// behind an SSO gateway or a wrong base URL does. Redirects are never followed (they could
    /// carry the credential elsewhere).
    #[error(
        "the server answered HTTP {status}, a redirect to {location}: a SCIM server does not redirect (an SSO gateway in front of it, or a wrong base_url); redirects are not followed"
    )]
    Redirect {
        /// The 3xx status.
        status: u16,
        /// The `Location` header without its query string and fragment (which may carry
        /// tokens), or `(none)`.
        location: String,
    },
    /// A successful answer that is not what the request needs (an HTML page where a SCIM
    /// resource or list belongs, a create without an id): a gateway answering in the server's
    /// place, or a broken server. Worth retrying: gateways recover.
    #[error("{0}")]
    Unexpected(String),
    /// The request was not sent: the caller's limits for the target (a quarantine, a throttling
    /// pause, a provider budget) would hold it longer than a message may wait in a consumer. The
    /// caller parks the work and comes back after `wait`.
    #[error("not sent: {reason}; back in {} s", wait.as_secs())]
    Deferred {
        /// How long until the target can take it.
        wait: Duration,
        /// Why, in words an operator can act on.
        reason: String,
    },
    /// The response body is larger than the target allows; it was not read further.
    #[error(
        "the response body is larger than {limit} bytes (the target's max_response_bytes); it was not read"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The OAuth 2.0 token endpoint refused to issue a token.
    #[error("{}", token_message(*status, error_code, detail))]
    Token {
        /// The HTTP status of the token endpoint's response.
        status: u16,
        /// The OAuth `error` code (`invalid_client`, `invalid_grant`, …).
        error_code: Option<String>,
        /// The OAuth `error_description` or other detail.
        detail: Option<String>,
        /// `Retry-After` of the token endpoint, if any.
        retry_after: Option<Duration>,
    },
}

fn http_message(
    status: u16,
    scim_type: &Option<String>,
    detail: &Option<String>,
    error_code: &Option<String>,
) -> String {
    let mut s = format!("scim server answered HTTP {status}");
    let tags: Vec<String> = [("scimType", scim_type), ("errorCode", error_code)]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k} {v}")))
        .collect();
    if !tags.is_empty() {
        s.push_str(&format!(" ({})", tags.join(", ")));
    }
    if let Some(d) = detail {
        s.push_str(": ");
        s.push_str(d);
    }
    s
}

fn token_message(status: u16, error_code: &Option<String>, detail: &Option<String>) -> String {
    let mut s = format!("the OAuth token endpoint answered HTTP {status}");
    if let Some(c) = error_code {
        s.push_str(&format!(" ({c})"));
    }
    if let Some(d) = detail {
        s.push_str(": ");
        s.push_str(d);
    }
    if (400..500).contains(&status) && status != 429 {
        s.push_str("; check the token URL, client id, credentials or key of this target");
    }
    s
}

/// Whether a status is worth retrying: throttling, or a server error other than
/// 501 Not Implemented (which will not start working by itself).
fn status_is_transient(status: u16) -> bool {
    status == 429 || ((500..=599).contains(&status) && status != 501)
}

impl ScimError {
    /// The HTTP status the SCIM server answered with, when it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ScimError::Http { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Whether retrying the same request later may succeed: timeouts, connection and transport
    /// failures, 429, and 5xx except 501 (also when the token endpoint answered so).
    pub fn is_transient(&self) -> bool {
        match self {
            ScimError::Timeout
            | ScimError::Connect(_)
            | ScimError::Transport(_)
            | ScimError::Unexpected(_)
            // A gateway or a broken proxy answers so, for a while; a server whose real answers
            // are that large fails every attempt and ends dead-lettered, the limit named.
            | ScimError::TooLarge { .. }
            | ScimError::Deferred { .. } => true,
            ScimError::Http { status, .. } | ScimError::Token { status, .. } => {
                status_is_transient(*status)
            }
            ScimError::Decode(_)
            | ScimError::Config(_)
            | ScimError::Redirect { .. } => false,
        }
    }

    /// Whether the credentials were refused: a 401 from the SCIM server (after the one refresh
    /// the client tries for OAuth), or a 4xx other than 429 from the token endpoint. A circuit
    /// breaker quarantines a target on this.
    pub fn is_auth_failure(&self) -> bool {
        match self {
            ScimError::Http { status, .. } => *status == 401,
            // A login page behind an SSO gateway, in practice.
            ScimError::Redirect { .. } => true,
            ScimError::Token { status, .. } => (400..500).contains(status) && *status != 429,
            _ => false,
        }
    }

    /// How long the server asked the client to wait before retrying.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ScimError::Http { retry_after, .. } | ScimError::Token { retry_after, .. } => {
                *retry_after
            }
            _ => None,
        }
    }

    /// The `scimType` of an HTTP error.
    pub fn scim_type(&self) -> Option<&str> {
        match self {
            ScimError::Http { scim_type, .. } => scim_type.as_deref(),
            _ => None,
        }
    }

    /// The detail text of an HTTP or token error.
    pub fn detail(&self) -> Option<&str> {
        match self {
            ScimError::Http { detail, .. } | ScimError::Token { detail, .. } => detail.as_deref(),
            _ => None,
        }
    }

    /// The provider error code (`errorCode`, OAuth `error`, …) of an HTTP or token error.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            ScimError::Http { error_code, .. } | ScimError::Token { error_code, .. } => {
                error_code.as_deref()
            }
            _ => None,
        }
    }

    /// The response headers of an HTTP error (rate-limit headers live here).
    pub fn headers(&self) -> Option<&HeaderMap> {
        match self {
            ScimError::Http { headers, .. } => Some(headers),
            _ => None,
        }
    }

    /// Builds the HTTP error of a response with status ≥ 400 from its headers and body.
    pub fn from_response(status: u16, headers: HeaderMap, body: &[u8]) -> ScimError {
        let (scim_type, detail, error_code) = parse_error_body(status, body);
        let retry_after = retry_after_from_headers(&headers, SystemTime::now());
        ScimError::Http {
            status,
            scim_type,
            detail,
            error_code,
            retry_after,
            headers: Box::new(headers),
        }
    }

    /// Maps a reqwest failure, without the URL (a filter in the query can hold an e-mail).
    pub(crate) fn from_reqwest(err: reqwest::Error, what: &str) -> ScimError {
        if err.is_timeout() {
            return ScimError::Timeout;
        }
        let connect = err.is_connect();
        let decode = err.is_decode();
        let message = format!("{what}: {}", error_chain(&err.without_url()));
        if connect {
            ScimError::Connect(message)
        } else if decode {
            ScimError::Decode(message)
        } else {
            ScimError::Transport(message)
        }
    }
}

/// An error and its sources as one line, each distinct message once.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        let msg = e.to_string();
        if !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        cur = e.source();
    }
    parts.join(": ")
}

/// Reads `Retry-After` (delta-seconds or an HTTP date) from response headers.
pub fn retry_after_from_headers(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now)
}

/// Parses a `Retry-After` value: whole or fractional seconds, or an HTTP date (a date in the
/// past means "now", zero). Anything else is ignored (None).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).ok())
            .flatten();
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Extracts `(scimType, detail, errorCode)` from an error response body of any shape the
/// providers send (see the module doc). `status` is the response's status; the body's own
/// `status` member (string or number, often wrong) is ignored in its favour. Empty values are
/// `None`; the detail is trimmed and bounded to [`MAX_DETAIL_CHARS`].
pub fn parse_error_body(
    status: u16,
    body: &[u8],
) -> (Option<String>, Option<String>, Option<String>) {
    let _ = status; // the response line's status is authoritative; the body's is not read
    let text = String::from_utf8_lossy(body);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return (None, None, None);
    }
    match serde_json::from_str::<Value>(trimmed) {
        Ok(Value::Object(map)) => parse_object(&map),
        Ok(Value::Array(items)) => parse_array(&items),
        Ok(Value::String(s)) => (None, clean(&s, MAX_DETAIL_CHARS), None),
        Ok(_) => (None, clean(trimmed, MAX_TEXT_DETAIL_CHARS), None),
        Err(_) => (None, text_detail(trimmed), None),
    }
}

/// Fields that may hold a human-readable reason, in order of preference.
const DETAIL_KEYS: &[&str] = &[
    "detail",
    "message",
    "error_description",
    "errorMessage",
    "description",
    "Message",
];

/// Fields that may hold a machine-readable error code, in order of preference.
const CODE_KEYS: &[&str] = &[
    "errorCode",
    "error",
    "__type",
    "code",
    "exceptionType",
    "Code",
];

fn parse_object(map: &Map<String, Value>) -> (Option<String>, Option<String>, Option<String>) {
    let scim_type = str_field(map, "scimType").or_else(|| str_field(map, "scimtype"));
    let mut detail = DETAIL_KEYS.iter().find_map(|k| str_field(map, k));
    let mut error_code = CODE_KEYS.iter().find_map(|k| str_field(map, k)).map(|c| {
        // AWS JSON-protocol errors name the exception as `namespace#ThrottlingException`.
        c.rsplit('#').next().unwrap_or(&c).to_owned()
    });
    let mut scim_type = scim_type;
    // Nested shapes: SCIM 1.1 `Errors: [{description, code}]`, `errors: [{message}]`,
    // `error: {message, code}`.
    for key in ["Errors", "errors"] {
        if let Some(Value::Array(items)) = map.get(key) {
            let (t, d, c) = parse_array(items);
            scim_type = scim_type.or(t);
            detail = detail.or(d);
            error_code = error_code.or(c);
        }
    }
    if let Some(Value::Object(inner)) = map.get("error") {
        let (t, d, c) = parse_object(inner);
        scim_type = scim_type.or(t);
        detail = detail.or(d);
        error_code = error_code.or(c);
    }
    let detail = detail.and_then(|d| clean(&d, MAX_DETAIL_CHARS));
    if error_code.is_none() {
        error_code = detail.as_deref().and_then(code_prefix);
    }
    (scim_type, detail, error_code)
}

fn parse_array(items: &[Value]) -> (Option<String>, Option<String>, Option<String>) {
    let mut scim_type = None;
    let mut error_code = None;
    let mut details: Vec<String> = Vec::new();
    for item in items {
        let (t, d, c) = match item {
            Value::Object(map) => parse_object(map),
            Value::String(s) => (None, clean(s, MAX_DETAIL_CHARS), None),
            _ => continue,
        };
        scim_type = scim_type.or(t);
        error_code = error_code.or(c);
        if let Some(d) = d
            && !details.contains(&d)
        {
            details.push(d);
        }
    }
    let detail = (!details.is_empty()).then(|| details.join("; "));
    (
        scim_type,
        detail.and_then(|d| clean(&d, MAX_DETAIL_CHARS)),
        error_code,
    )
}

/// A non-empty string member (numbers are accepted as text for codes such as `"code": 42`).
fn str_field(map: &Map<String, Value>, key: &str) -> Option<String> {
    match map.get(key)? {
        Value::String(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A Salesforce-style code prefix: `REQUIRED_FIELD_MISSING:…` → `REQUIRED_FIELD_MISSING`.
fn code_prefix(detail: &str) -> Option<String> {
    let (head, _) = detail.split_once(':')?;
    let head = head.trim();
    let ok = head.len() >= 3
        && head.chars().next().is_some_and(|c| c.is_ascii_uppercase())
        && head
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    ok.then(|| head.to_owned())
}

/// The readable part of a non-JSON body: an HTML page's `<title>` (or its text without tags),
/// or the plain text, whitespace collapsed and bounded.
fn text_detail(text: &str) -> Option<String> {
    if text.starts_with('<') {
        let lower = text.to_ascii_lowercase();
        // ASCII lowercasing keeps byte offsets, so `lower`'s indices are valid in `text`.
        if let (Some(start), Some(end)) = (lower.find("<title>"), lower.find("</title>"))
            && let Some(title) = text.get(start + "<title>".len()..end)
            && let Some(t) = clean(title, MAX_TEXT_DETAIL_CHARS)
        {
            return Some(t);
        }
        return clean(&strip_tags(text), MAX_TEXT_DETAIL_CHARS);
    }
    clean(text, MAX_TEXT_DETAIL_CHARS)
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Collapses whitespace and bounds the length (on a character boundary); empty → None.
fn clean(s: &str, max_chars: usize) -> Option<String> {
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.is_empty() {
        return None;
    }
    if collapsed.chars().count() <= max_chars {
        return Some(collapsed);
    }
    let mut cut: String = collapsed.chars().take(max_chars).collect();
    cut.push('…');
    Some(cut)
}

/// Marks header values that can carry a session (cookies) as sensitive, so `Debug` of a
/// response or an error prints `Sensitive` instead of them.
pub(crate) fn protect_headers(mut headers: HeaderMap) -> HeaderMap {
    for name in [
        http::header::SET_COOKIE,
        http::header::AUTHORIZATION,
        http::header::COOKIE,
    ] {
        if let http::header::Entry::Occupied(mut e) = headers.entry(name) {
            for v in e.iter_mut() {
                v.set_sensitive(true);
            }
        }
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> (Option<String>, Option<String>, Option<String>) {
        parse_error_body(409, body.as_bytes())
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn rfc7644_body() {
        let body = r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],
            "scimType":"uniqueness","detail":"One or more of the attribute values are already in use.","status":"409"}"#;
        assert_eq!(
            parse(body),
            (
                s("uniqueness"),
                s("One or more of the attribute values are already in use."),
                None
            )
        );
    }

    #[test]
    fn github_body_with_integer_status_and_message() {
        let body = r#"{"message":"Duplicate record detected","documentation_url":"https://docs.github.com/rest","status":409,
            "schemas":["urn:ietf:params:scim:api:messages:2.0:Error"]}"#;
        assert_eq!(parse(body), (None, s("Duplicate record detected"), None));
        // When both are present, the SCIM `detail` wins over GitHub's `message`.
        let body = r#"{"message":"Bad","detail":"userName too long","status":400,"scimType":"invalidValue"}"#;
        assert_eq!(
            parse(body),
            (s("invalidValue"), s("userName too long"), None)
        );
    }

    #[test]
    fn aws_body_with_singular_schema_key() {
        let body = r#"{"schema":["urn:ietf:params:scim:api:messages:2.0:Error"],"detail":"Refused to create a new, duplicate resource.","status":"409","exceptionRequestId":"5e8a1b2c","timeStamp":"2021-09-21 10:12:59.999"}"#;
        assert_eq!(
            parse(body),
            (
                None,
                s("Refused to create a new, duplicate resource."),
                None
            )
        );
        // Later AWS bodies carry both keys.
        let body = r#"{"schema":["x"],"schemas":["urn:ietf:params:scim:api:messages:2.0:Error"],"detail":"Request is unparsable, syntactically incorrect, or violates schema.","status":"400"}"#;
        assert_eq!(
            parse_error_body(400, body.as_bytes()).1,
            s("Request is unparsable, syntactically incorrect, or violates schema.")
        );
        // AWS JSON-protocol throttling shape.
        let body = r#"{"__type":"com.amazonaws.identitystore#ThrottlingException","message":"Rate exceeded"}"#;
        assert_eq!(
            parse_error_body(429, body.as_bytes()),
            (None, s("Rate exceeded"), s("ThrottlingException"))
        );
    }

    #[test]
    fn salesforce_broken_envelope() {
        let body = r#"{"schemas":"[\"urn:ietf:params:scim:api:messages:2.0:Error\"]","detail":"REQUIRED_FIELD_MISSING:user_must_have_one_entitlement_which_must_be_a_profileid;","status":409}"#;
        assert_eq!(
            parse(body),
            (
                None,
                s(
                    "REQUIRED_FIELD_MISSING:user_must_have_one_entitlement_which_must_be_a_profileid;"
                ),
                s("REQUIRED_FIELD_MISSING")
            )
        );
    }

    #[test]
    fn salesforce_rest_list_and_object() {
        let body = r#"[{"errorCode":"NOT_FOUND","message":"Could not find a match for URL"}]"#;
        assert_eq!(
            parse_error_body(404, body.as_bytes()),
            (None, s("Could not find a match for URL"), s("NOT_FOUND"))
        );
        let body = r#"{"errorCode":"NOT_FOUND","message":"Could not find a match for URL"}"#;
        assert_eq!(
            parse_error_body(404, body.as_bytes()),
            (None, s("Could not find a match for URL"), s("NOT_FOUND"))
        );
        let body = r#"[{"message":"TotalRequests Limit exceeded.","errorCode":"REQUEST_LIMIT_EXCEEDED"},
                       {"message":"second","errorCode":"OTHER"}]"#;
        assert_eq!(
            parse_error_body(403, body.as_bytes()),
            (
                None,
                s("TotalRequests Limit exceeded.; second"),
                s("REQUEST_LIMIT_EXCEEDED")
            )
        );
    }

    #[test]
    fn oauth_error_body() {
        let body = r#"{"error":"invalid_client","error_description":"invalid client credentials"}"#;
        assert_eq!(
            parse_error_body(400, body.as_bytes()),
            (None, s("invalid client credentials"), s("invalid_client"))
        );
    }

    #[test]
    fn scim11_errors_array() {
        let body = r#"{"Errors":[{"description":"Resource 2819c223 not found","code":"404"}]}"#;
        assert_eq!(
            parse_error_body(404, body.as_bytes()),
            (None, s("Resource 2819c223 not found"), s("404"))
        );
    }

    #[test]
    fn plain_text_html_and_empty_bodies() {
        assert_eq!(
            parse_error_body(502, b"  Bad Gateway\n\n upstream   down "),
            (None, s("Bad Gateway upstream down"), None)
        );
        let html = "<!DOCTYPE html><html><head><title>503 Service Unavailable</title></head><body><h1>Down</h1></body></html>";
        assert_eq!(
            parse_error_body(503, html.as_bytes()),
            (None, s("503 Service Unavailable"), None)
        );
        let html = "<html><body><h1>Oops</h1><p>try   later</p></body></html>";
        assert_eq!(
            parse_error_body(503, html.as_bytes()),
            (None, s("Oops try later"), None)
        );
        assert_eq!(parse_error_body(500, b""), (None, None, None));
        assert_eq!(parse_error_body(500, b"   \n"), (None, None, None));
        assert_eq!(parse_error_body(500, b"{}"), (None, None, None));
        assert_eq!(
            parse_error_body(500, b"\"just a string\""),
            (None, s("just a string"), None)
        );
        // Not UTF-8: still no panic, readable rest kept.
        assert_eq!(
            parse_error_body(500, b"bad \xff byte").1,
            s("bad \u{fffd} byte")
        );
    }

    #[test]
    fn long_details_are_bounded() {
        let long = "x".repeat(5000);
        let body = format!(r#"{{"detail":"{long}"}}"#);
        let d = parse_error_body(400, body.as_bytes()).1.expect("detail");
        assert_eq!(d.chars().count(), MAX_DETAIL_CHARS + 1);
        assert!(d.ends_with('…'));
        let text = "é".repeat(500);
        let d = parse_error_body(400, text.as_bytes()).1.expect("detail");
        assert_eq!(d.chars().count(), MAX_TEXT_DETAIL_CHARS + 1);
    }

    #[test]
    fn code_prefix_only_for_upper_snake_codes() {
        assert_eq!(
            code_prefix("DUPLICATE_USERNAME: taken"),
            s("DUPLICATE_USERNAME")
        );
        assert_eq!(code_prefix("Error: something"), None);
        assert_eq!(code_prefix("no colon"), None);
        assert_eq!(code_prefix("urn:ietf:params"), None);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("1.5", now),
            Some(Duration::from_millis(1500))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
        assert_eq!(parse_retry_after("", now), None);
        let mut h = HeaderMap::new();
        h.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("7"),
        );
        assert_eq!(
            retry_after_from_headers(&h, now),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn transient_classification() {
        let http = |status| ScimError::from_response(status, HeaderMap::new(), b"");
        assert!(http(429).is_transient());
        assert!(http(500).is_transient());
        assert!(http(503).is_transient());
        assert!(!http(501).is_transient());
        assert!(!http(400).is_transient());
        assert!(!http(404).is_transient());
        assert!(!http(409).is_transient());
        assert!(ScimError::Timeout.is_transient());
        assert!(ScimError::Connect("x".into()).is_transient());
        assert!(ScimError::Transport("x".into()).is_transient());
        assert!(!ScimError::Decode("x".into()).is_transient());
        assert!(!ScimError::Config("x".into()).is_transient());
        assert_eq!(http(418).status(), Some(418));
        assert_eq!(ScimError::Timeout.status(), None);
        assert!(http(401).is_auth_failure());
        assert!(!http(403).is_auth_failure());
        let token = |status| ScimError::Token {
            status,
            error_code: None,
            detail: None,
            retry_after: None,
        };
        assert!(token(400).is_auth_failure());
        assert!(!token(503).is_auth_failure());
        assert!(token(503).is_transient());
    }

    #[test]
    fn display_names_status_type_code_and_detail() {
        let body = br#"{"schemas":"[\"urn:ietf:params:scim:api:messages:2.0:Error\"]","detail":"REQUIRED_FIELD_MISSING:x;","status":409}"#;
        let e = ScimError::from_response(409, HeaderMap::new(), body);
        assert_eq!(
            e.to_string(),
            "scim server answered HTTP 409 (errorCode REQUIRED_FIELD_MISSING): REQUIRED_FIELD_MISSING:x;"
        );
        let e = ScimError::from_response(404, HeaderMap::new(), b"");
        assert_eq!(e.to_string(), "scim server answered HTTP 404");
        assert_eq!(e.detail(), None);
    }

    #[test]
    fn cookies_in_kept_headers_are_hidden_from_debug() {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::SET_COOKIE,
            http::HeaderValue::from_static("sid=abcdef123"),
        );
        h.insert("x-ratelimit-remaining", http::HeaderValue::from_static("0"));
        let e = ScimError::from_response(429, protect_headers(h), b"");
        let dbg = format!("{e:?}");
        assert!(!dbg.contains("abcdef123"), "{dbg}");
        assert!(dbg.contains("x-ratelimit-remaining"), "{dbg}");
    }
}
