//! `ScimRequest` and `ScimResponse`: one SCIM HTTP exchange as plain data.
//!
//! A request is data (method, path relative to the target's base URL, query, JSON body,
//! `If-Match`) so the connector can plan it, mask it, record it or send it through
//! [`crate::ScimClient::execute`] unchanged. Their `Debug` shows the shape of the exchange but
//! not the body or query values, which hold e-mails and names.

use std::fmt;

use http::{HeaderMap, Method};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ScimError;

/// One SCIM request, relative to the target's base URL.
#[derive(Clone, PartialEq)]
pub struct ScimRequest {
    /// The HTTP method.
    pub method: Method,
    /// The path below the base URL, e.g. `/Users/abc` (a missing leading `/` is added).
    pub path: String,
    /// Query parameters, in order; values are percent-encoded when sent.
    pub query: Vec<(String, String)>,
    /// The JSON body, sent with the configured content type.
    pub body: Option<Value>,
    /// An ETag sent as `If-Match`, for servers that support optimistic concurrency.
    pub if_match: Option<String>,
}

impl ScimRequest {
    /// A request with any method and no body.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        ScimRequest {
            method,
            path: path.into(),
            query: Vec::new(),
            body: None,
            if_match: None,
        }
    }

    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Method::GET, path)
    }

    /// `POST path` with a JSON body.
    pub fn post(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::POST, path).with_body(body)
    }

    /// `PUT path` with a JSON body.
    pub fn put(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::PUT, path).with_body(body)
    }

    /// `PATCH path` with a JSON body (usually a [`crate::PatchBuilder`] result).
    pub fn patch(path: impl Into<String>, body: Value) -> Self {
        Self::new(Method::PATCH, path).with_body(body)
    }

    /// `DELETE path`.
    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Method::DELETE, path)
    }

    /// Adds a query parameter (an empty value is sent as a bare key, e.g. AWS's `?cursor`).
    pub fn with_query(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((key.into(), value.into()));
        self
    }

    /// Sets the JSON body.
    pub fn with_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    /// Sends `If-Match: etag` (only when the server supports ETags).
    pub fn with_if_match(mut self, etag: impl Into<String>) -> Self {
        self.if_match = Some(etag.into());
        self
    }

    /// Whether the request changes the target (anything but GET, HEAD and OPTIONS); plan
    /// mode records these instead of sending them.
    pub fn is_write(&self) -> bool {
        !matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }
}

impl fmt::Debug for ScimRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&str> = self.query.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ScimRequest")
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query_keys", &keys)
            .field("body", &self.body.as_ref().map(|_| "[json]"))
            .field("if_match", &self.if_match)
            .finish()
    }
}

/// A successful (status < 400) SCIM response.
#[derive(Clone, PartialEq)]
pub struct ScimResponse {
    /// The HTTP status.
    pub status: u16,
    /// The response headers (ETag, Location, rate-limit headers).
    pub headers: HeaderMap,
    /// The JSON body; `None` for 204 and for an empty body.
    pub body: Option<Value>,
}

impl ScimResponse {
    /// The resource version: the `ETag` header, else the body's `meta.version`.
    pub fn etag(&self) -> Option<String> {
        if let Some(v) = self
            .headers
            .get(http::header::ETAG)
            .and_then(|v| v.to_str().ok())
        {
            let v = v.trim();
            if !v.is_empty() {
                return Some(v.to_owned());
            }
        }
        self.body
            .as_ref()?
            .get("meta")?
            .get("version")?
            .as_str()
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
    }

    /// The `Location` header, if any.
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
    }

    /// Deserializes the body into `T`; a missing body or a mismatch is a `Decode` error.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ScimError> {
        let body = self.body.as_ref().ok_or_else(|| {
            ScimError::Decode(format!("HTTP {} response has no body", self.status))
        })?;
        T::deserialize(body).map_err(|e| ScimError::Decode(format!("unexpected body: {e}")))
    }
}

impl fmt::Debug for ScimResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScimResponse")
            .field("status", &self.status)
            .field("headers", &self.headers)
            .field("body", &self.body.as_ref().map(|_| "[json]"))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn constructors_set_method_body_and_query() {
        let r = ScimRequest::post("/Users", json!({"userName": "a"})).with_query("x", "1");
        assert_eq!(r.method, Method::POST);
        assert_eq!(r.path, "/Users");
        assert_eq!(r.body, Some(json!({"userName": "a"})));
        assert_eq!(r.query, vec![("x".to_string(), "1".to_string())]);
        assert!(r.is_write());
        assert!(!ScimRequest::get("/Users").is_write());
        assert!(ScimRequest::delete("/Users/1").is_write());
        assert!(ScimRequest::put("/Users/1", json!({})).is_write());
        assert!(ScimRequest::patch("/Users/1", json!({})).is_write());
        assert_eq!(
            ScimRequest::get("/x")
                .with_if_match("W/\"1\"")
                .if_match
                .as_deref(),
            Some("W/\"1\"")
        );
    }

    #[test]
    fn debug_hides_body_and_query_values() {
        let r = ScimRequest::post("/Users", json!({"emails": [{"value": "ann@example.com"}]}))
            .with_query("filter", "userName eq \"ann@example.com\"");
        let d = format!("{r:?}");
        assert!(!d.contains("ann@example.com"), "{d}");
        assert!(d.contains("filter") && d.contains("/Users"), "{d}");
        let resp = ScimResponse {
            status: 200,
            headers: HeaderMap::new(),
            body: Some(json!({"userName": "ann@example.com"})),
        };
        assert!(!format!("{resp:?}").contains("ann@"));
    }

    #[test]
    fn etag_from_header_then_meta_version() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::ETAG,
            http::HeaderValue::from_static("W/\"h\""),
        );
        let body = Some(json!({"meta": {"version": "W/\"m\""}}));
        let r = ScimResponse {
            status: 200,
            headers,
            body: body.clone(),
        };
        assert_eq!(r.etag().as_deref(), Some("W/\"h\""));
        let r = ScimResponse {
            status: 200,
            headers: HeaderMap::new(),
            body,
        };
        assert_eq!(r.etag().as_deref(), Some("W/\"m\""));
        let r = ScimResponse {
            status: 204,
            headers: HeaderMap::new(),
            body: None,
        };
        assert_eq!(r.etag(), None);
        assert!(matches!(r.json::<Value>(), Err(ScimError::Decode(_))));
    }
}
