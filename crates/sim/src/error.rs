//! SCIM error responses: the one place where a simulator failure becomes an HTTP status and an
//! RFC 7644 §3.12 error body.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// The `schemas` URN of an RFC 7644 error body.
pub const ERROR_SCHEMA: &str = "urn:ietf:params:scim:api:messages:2.0:Error";

/// The media type every SCIM response carries.
pub const SCIM_CONTENT_TYPE: &str = "application/scim+json";

/// A SCIM protocol error: status, optional `scimType` keyword and a human detail.
///
/// Handlers return it; [`IntoResponse`] renders the standard body so clients can test their
/// error parsing against exactly what an RFC 7644 server sends.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {detail}")]
pub struct ScimError {
    /// HTTP status of the response.
    pub status: StatusCode,
    /// RFC 7644 Table 9 keyword (`uniqueness`, `invalidFilter`, …), absent when none applies.
    pub scim_type: Option<&'static str>,
    /// What was wrong, naming the attribute or parameter.
    pub detail: String,
    /// Extra headers a fault or limit adds (e.g. `Retry-After`).
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// Which provider's error body to render (the tenant gate sets the mode's style).
    pub style: ErrorStyle,
    /// An exact body that replaces the styled one (a provider's literal error text).
    pub raw: Option<serde_json::Value>,
}

/// The error-body dialects of the simulated providers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ErrorStyle {
    /// RFC 7644 §3.12: `schemas`, `status` as a string, `scimType`, `detail`.
    #[default]
    Rfc,
    /// GitHub's `scim-error`: adds `message` and `documentation_url`; `status` is an integer.
    Github,
    /// AWS IAM Identity Center: `schema` (singular) next to `schemas`, `exceptionRequestId`,
    /// `timeStamp`; a 409 carries only `schema` and a fixed detail, never `scimType`. The
    /// exception name travels in the `x-amzn-ErrorType` header ([`aws_exception`]).
    Aws,
    /// Salesforce's broken envelope: `schemas` is a string holding a JSON array, `status` is a
    /// number, no `scimType`.
    Salesforce,
}

/// Where GitHub's SCIM error bodies point (`documentation_url`).
pub const GITHUB_SCIM_DOCS: &str =
    "https://docs.github.com/enterprise-cloud@latest/rest/enterprise-admin/scim";

/// The fixed detail of AWS IAM Identity Center's 409 ConflictException.
pub const AWS_CONFLICT_DETAIL: &str = "Refused to create a new, duplicate resource.";

/// The header naming an AWS error's exception, as AWS REST APIs send it.
pub const AWS_ERROR_TYPE: &str = "x-amzn-errortype";

/// The exception AWS IAM Identity Center names for a status (docs/providers/aws.md, "What AWS
/// documents"). Statuses the list there leaves out: another 4xx is a ValidationException (AWS
/// maps unsupported or malformed requests to it), another 5xx an InternalServerException.
pub fn aws_exception(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "UnauthorizedException",
        403 => "AccessDeniedException",
        404 => "ResourceNotFoundException",
        409 => "ConflictException",
        429 => "ThrottlingException",
        500..=599 => "InternalServerException",
        _ => "ValidationException",
    }
}

impl ScimError {
    /// An error with a status, keyword and detail.
    pub fn new(
        status: StatusCode,
        scim_type: Option<&'static str>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            scim_type,
            detail: detail.into(),
            headers: Vec::new(),
            style: ErrorStyle::Rfc,
            raw: None,
        }
    }

    /// The same error rendered in a provider's dialect.
    #[must_use]
    pub fn styled(mut self, style: ErrorStyle) -> Self {
        self.style = style;
        self
    }

    /// The same status and headers with an exact body.
    #[must_use]
    pub fn with_raw(mut self, body: serde_json::Value) -> Self {
        self.raw = Some(body);
        self
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 404: no resource with that id (or no such endpoint).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, None, detail)
    }

    /// 400 `invalidValue`: a required attribute is missing or a value has the wrong type.
    pub fn invalid_value(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidValue"), detail)
    }

    /// 400 `invalidSyntax`: the body is not parseable or misses mandatory protocol fields.
    pub fn invalid_syntax(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidSyntax"), detail)
    }

    /// 400 `invalidFilter`: a `filter` query parameter could not be parsed or evaluated.
    pub fn invalid_filter(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidFilter"), detail)
    }

    /// 400 `invalidPath`: a PATCH `path` could not be parsed.
    pub fn invalid_path(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("invalidPath"), detail)
    }

    /// 400 `noTarget`: a PATCH path selected nothing where something was required.
    pub fn no_target(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("noTarget"), detail)
    }

    /// 400 `mutability`: an attempt to change a read-only or immutable attribute.
    pub fn mutability(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, Some("mutability"), detail)
    }

    /// 409 `uniqueness`: a unique attribute value is already taken.
    pub fn uniqueness(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, Some("uniqueness"), detail)
    }

    /// 412: `If-Match` did not match the current version.
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PRECONDITION_FAILED, None, detail)
    }

    /// 401: credentials missing, wrong or revoked.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, None, detail)
    }

    /// The JSON body of this error, in its style.
    pub fn body(&self) -> serde_json::Value {
        if let Some(raw) = &self.raw {
            return raw.clone();
        }
        match self.style {
            ErrorStyle::Rfc => self.rfc_body(),
            ErrorStyle::Github => {
                let mut body = json!({
                    "schemas": [ERROR_SCHEMA],
                    "message": self.detail,
                    "documentation_url": GITHUB_SCIM_DOCS,
                    "detail": self.detail,
                    "status": self.status.as_u16(),
                });
                if let (Some(kind), Some(obj)) = (self.scim_type, body.as_object_mut()) {
                    obj.insert("scimType".into(), kind.into());
                }
                body
            }
            ErrorStyle::Aws => {
                let request_id = uuid::Uuid::new_v4().to_string();
                let stamp = crate::store::now_rfc3339();
                if self.status == StatusCode::CONFLICT {
                    json!({
                        "schema": [ERROR_SCHEMA],
                        "detail": AWS_CONFLICT_DETAIL,
                        "status": "409",
                        "exceptionRequestId": request_id,
                        "timeStamp": stamp,
                    })
                } else {
                    json!({
                        "schema": [ERROR_SCHEMA],
                        "schemas": [ERROR_SCHEMA],
                        "detail": self.detail,
                        "status": self.status.as_u16().to_string(),
                        "exceptionRequestId": request_id,
                        "timeStamp": stamp,
                    })
                }
            }
            ErrorStyle::Salesforce => json!({
                "schemas": format!("[\"{ERROR_SCHEMA}\"]"),
                "detail": self.detail,
                "status": self.status.as_u16(),
            }),
        }
    }

    fn rfc_body(&self) -> serde_json::Value {
        let mut body = json!({
            "schemas": [ERROR_SCHEMA],
            "status": self.status.as_u16().to_string(),
            "detail": self.detail,
        });
        if let (Some(kind), Some(obj)) = (self.scim_type, body.as_object_mut()) {
            obj.insert("scimType".into(), kind.into());
        }
        body
    }
}

/// Attached to a response rendered from a [`ScimError`] in the RFC style, so the tenant gate can
/// re-render it in the mode's dialect.
#[derive(Debug, Clone)]
pub struct RenderedError(pub Box<ScimError>);

impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let body = self.body().to_string();
        let mut response = (self.status, body).into_response();
        if self.style == ErrorStyle::Rfc && self.raw.is_none() {
            // Lets the tenant gate re-render the error in its mode's dialect.
            response
                .extensions_mut()
                .insert(RenderedError(Box::new(self.clone())));
        }
        let headers = response.headers_mut();
        let content_type = if self.raw.is_some() {
            // Exact provider bodies are plain REST errors, not SCIM messages.
            "application/json"
        } else {
            SCIM_CONTENT_TYPE
        };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if self.style == ErrorStyle::Aws {
            headers.insert(
                header::HeaderName::from_static(AWS_ERROR_TYPE),
                HeaderValue::from_static(aws_exception(self.status)),
            );
        }
        for (name, value) in self.headers {
            headers.insert(name, value);
        }
        response
    }
}
