//! HTTP plumbing shared by every mode: SCIM JSON responses, request bodies and their content
//! types, ETag preconditions, the base URL used in `meta.location`.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use crate::error::{SCIM_CONTENT_TYPE, ScimError};

/// A JSON response with the SCIM media type.
pub fn scim_json(status: StatusCode, body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => scim_bytes(status, bytes),
        Err(e) => ScimError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
            format!("cannot encode response: {e}"),
        )
        .into_response(),
    }
}

/// Already-encoded SCIM JSON.
pub fn scim_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    let mut r = (status, Body::from(bytes)).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(SCIM_CONTENT_TYPE),
    );
    r
}

/// Parses a JSON request body: `application/scim+json` or `application/json` (a missing
/// Content-Type is tolerated; any other is 415).
pub fn parse_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Value, ScimError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        let mime = ct.split(';').next().unwrap_or_default().trim();
        if mime != "application/scim+json" && mime != "application/json" {
            return Err(ScimError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                None,
                format!(
                    "Content-Type {mime:?} is not supported; send application/scim+json or application/json"
                ),
            ));
        }
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ScimError::invalid_syntax(format!("request body is not valid JSON: {e}")))
}

/// Whether an `If-Match` / `If-None-Match` header value lists `etag` (weak comparison) or `*`.
pub fn etag_listed(header_value: &HeaderValue, etag: &str) -> bool {
    let Ok(v) = header_value.to_str() else {
        return false;
    };
    let bare = etag.trim_start_matches("W/");
    v.split(',')
        .map(str::trim)
        .any(|t| t == "*" || t.trim_start_matches("W/") == bare)
}

/// 412 unless `If-Match` is absent or lists the current ETag.
pub fn check_if_match(headers: &HeaderMap, etag: &str) -> Result<(), ScimError> {
    match headers.get(header::IF_MATCH) {
        Some(v) if !etag_listed(v, etag) => Err(ScimError::precondition_failed(format!(
            "If-Match {:?} does not match the current version {etag}",
            v.to_str().unwrap_or_default()
        ))),
        _ => Ok(()),
    }
}

/// `http://HOST` of the request (the Host header, as the client addressed us).
pub fn origin(headers: &HeaderMap) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_lists() {
        let e = "W/\"3\"";
        assert!(etag_listed(&HeaderValue::from_static("W/\"3\""), e));
        assert!(etag_listed(&HeaderValue::from_static("\"3\""), e));
        assert!(etag_listed(
            &HeaderValue::from_static("W/\"1\", W/\"3\""),
            e
        ));
        assert!(etag_listed(&HeaderValue::from_static("*"), e));
        assert!(!etag_listed(&HeaderValue::from_static("W/\"2\""), e));
    }
}
