//! The HTTP API: `POST /v1/events`, `/openapi.json`, `/healthz`, `/readyz`.
//!
//! Status codes: 202 accepted (every copy confirmed by the broker), 200 when the request asked
//! to wait (`Prefer: wait=N`, RFC 7240) and every (event, target) outcome came within N seconds
//! (the body holds them; `Preference-Applied: wait=N`), 400 invalid (the body names the field;
//! a wait above `SCIMRELAY_INGEST_MAX_WAIT_SECS` names `Prefer`), 401 no, unknown or revoked API
//! key, 403 the key lacks `send`, may not act for an event's tenant, or may send bulk events
//! only and an event is `interactive`, 413 body or batch too large, 415 not JSON, 429 the key is
//! over its rate (`Retry-After`), 503 broker unavailable. A wait that runs out answers 202 with
//! the ids and the outcomes that did arrive. Every error has the same JSON body,
//! `{"error": {"code", "field"?, "message"}}`, built in one place (`error`, and
//! `IntoResponse for IngestError`).
//!
//! `POST /v1/events` checks the API key before it reads the body (the body limit applies when
//! the body is read), so an unauthenticated caller gets 401 whatever it sends. The other routes
//! need no key.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest as _, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use scimrelay_core::auth::AuthError;
use serde_json::json;
use tracing::Instrument as _;

use crate::{Ingest, IngestError, model};

/// The OpenAPI document of this API (kept in the repository at `crates/ingest/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Builds the router.
pub fn router(ingest: Arc<Ingest>, max_body_bytes: usize) -> Router {
    let ready = {
        let ingest = ingest.clone();
        move || {
            let ready = ingest.broker().ready();
            async move {
                if ready {
                    (StatusCode::OK, "ready")
                } else {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "not ready: not connected to RabbitMQ",
                    )
                }
            }
        }
    };
    Router::new()
        .route("/v1/events", post(post_events))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                None,
                "no such endpoint; the API is described at /openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                None,
                "method not allowed on this endpoint; see /openapi.json",
            )
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(ingest)
}

fn error(status: StatusCode, code: &str, field: Option<&str>, message: &str) -> Response {
    let mut body = json!({"error": {"code": code, "message": message}});
    if let Some(f) = field {
        body["error"]["field"] = json!(f);
    }
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for IngestError {
    fn into_response(self) -> Response {
        match &self {
            IngestError::Invalid(e) => error(
                StatusCode::BAD_REQUEST,
                "invalid_argument",
                Some(&e.field),
                &self.to_string(),
            ),
            IngestError::TooManyEvents { .. } => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                Some("events"),
                &self.to_string(),
            ),
            IngestError::Unavailable(_) => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    None,
                    &self.to_string(),
                );
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                r
            }
            IngestError::TenantForbidden { field, .. } => error(
                StatusCode::FORBIDDEN,
                "tenant_forbidden",
                Some(field),
                &self.to_string(),
            ),
            IngestError::PriorityForbidden { field, .. } => error(
                StatusCode::FORBIDDEN,
                "priority_forbidden",
                Some(field),
                &self.to_string(),
            ),
            IngestError::Auth(e) => {
                let message = self.to_string();
                // RFC 6750 §3: a 401 names the scheme; an error code once a token was presented.
                let (status, code, field, challenge) = match e {
                    AuthError::Missing => (
                        StatusCode::UNAUTHORIZED,
                        "missing_api_key",
                        AUTHORIZATION,
                        Some(HeaderValue::from_static("Bearer")),
                    ),
                    AuthError::Invalid => (
                        StatusCode::UNAUTHORIZED,
                        "invalid_api_key",
                        AUTHORIZATION,
                        Some(HeaderValue::from_static(r#"Bearer error="invalid_token""#)),
                    ),
                    AuthError::Revoked(_) => (
                        StatusCode::UNAUTHORIZED,
                        "revoked_api_key",
                        AUTHORIZATION,
                        Some(HeaderValue::from_static(
                            r#"Bearer error="invalid_token", error_description="revoked""#,
                        )),
                    ),
                    AuthError::Scope { .. } => (
                        StatusCode::FORBIDDEN,
                        "insufficient_scope",
                        AUTHORIZATION,
                        Some(HeaderValue::from_static(
                            r#"Bearer error="insufficient_scope", scope="send""#,
                        )),
                    ),
                    AuthError::Tenant { .. } => {
                        (StatusCode::FORBIDDEN, "tenant_forbidden", "tenant", None)
                    }
                    AuthError::RateLimited { .. } => (
                        StatusCode::TOO_MANY_REQUESTS,
                        "rate_limited",
                        AUTHORIZATION,
                        None,
                    ),
                };
                let mut r = error(status, code, Some(field), &message);
                if let Some(c) = challenge {
                    r.headers_mut().insert(header::WWW_AUTHENTICATE, c);
                }
                if let AuthError::RateLimited {
                    retry_after_secs, ..
                } = e
                {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
                }
                r
            }
        }
    }
}

/// RFC 7240's request header.
const PREFER: &str = "prefer";

/// 202 with the ids; with a wait, the outcomes that came, and 200 when they all did.
fn answer(published: &crate::Published, wait: Option<std::time::Duration>) -> Response {
    let accepted: Vec<_> = published
        .accepted
        .iter()
        .map(|a| json!({"id": a.id, "targets": a.targets}))
        .collect();
    if !published.waited {
        return (
            StatusCode::ACCEPTED,
            axum::Json(json!({"accepted": accepted})),
        )
            .into_response();
    }
    let outcomes: Vec<_> = published
        .outcomes
        .iter()
        .map(scimrelay_core::json::outcome_json)
        .collect();
    let status = if published.complete {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    let mut r = (
        status,
        axum::Json(json!({
            "accepted": accepted,
            "outcomes": outcomes,
            "complete": published.complete,
        })),
    )
        .into_response();
    let secs = wait.unwrap_or_default().as_secs();
    if let Ok(v) = HeaderValue::try_from(format!("wait={secs}")) {
        r.headers_mut().insert("preference-applied", v);
    }
    r
}

/// The field named by errors about the API key: the header that carries it.
const AUTHORIZATION: &str = "Authorization";

async fn post_events(State(ingest): State<Arc<Ingest>>, request: Request) -> Response {
    let span = tracing::info_span!(
        "ingest request",
        "otel.name" = "POST /v1/events",
        "otel.kind" = "server",
        "http.request.method" = "POST",
        "http.route" = "/v1/events",
        "http.response.status_code" = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    // A caller's W3C trace context (`traceparent`) continues here.
    let carrier = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
    scimrelay_core::telemetry::set_parent(&span, &carrier);
    let started = std::time::Instant::now();
    let response = handle_post(ingest, request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    let m = scimrelay_core::metrics::metrics();
    m.ingest_requests
        .get_or_create(&vec![
            ("transport", "http".to_owned()),
            ("status", status.to_string()),
        ])
        .inc();
    m.ingest_duration
        .get_or_create(&vec![("transport", "http".to_owned())])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn handle_post(ingest: Arc<Ingest>, request: Request) -> Response {
    // The key first: nothing of the body is read for a caller that may not send.
    let principal = match ingest.authenticate(
        request
            .headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
        "http",
    ) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let headers: HeaderMap = request.headers().clone();
    let wait = match headers
        .get_all(PREFER)
        .iter()
        .map(|v| {
            let v = v.to_str().map_err(|_| crate::FieldError {
                field: "Prefer".into(),
                message: "must be ASCII".into(),
            })?;
            crate::wait::prefer_wait(v, ingest.max_wait())
        })
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(waits) => waits.into_iter().flatten().last(),
        Err(e) => return IngestError::Invalid(e).into_response(),
    };
    // Reading the body applies the `DefaultBodyLimit` of the router.
    let body = match Bytes::from_request(request, &()).await {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                Some("body"),
                "request body is larger than the configured limit (SCIMRELAY_INGEST_MAX_BODY_BYTES)",
            );
        }
        Err(rejection) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_body",
                Some("body"),
                &rejection.body_text(),
            );
        }
    };
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                Some("Content-Type"),
                "send application/json",
            );
        }
    }
    let value: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                Some("body"),
                &format!("body is not valid JSON: {e}"),
            );
        }
    };
    let events = match model::events_from_json(&value) {
        Ok(ev) => ev,
        Err(e) => return IngestError::Invalid(e).into_response(),
    };
    match ingest.publish(&principal, events, wait).await {
        Ok(published) => answer(&published, wait),
        Err(e) => {
            if matches!(e, IngestError::Unavailable(_)) {
                tracing::warn!(error = %e, "publish failed");
            }
            e.into_response()
        }
    }
}
