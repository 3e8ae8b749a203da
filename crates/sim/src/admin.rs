//! The admin / inspection API under `/_admin` (no auth): what tests assert through. Lists
//! resources, request statistics, tenant reset and live faults.
//!
//! - `GET  /_admin/tenants` → `[{"id","mode","users","groups"}]`
//! - `GET  /_admin/tenants/{tenant}/users` and `/groups` → every resource, as stored
//! - `GET  /_admin/tenants/{tenant}/stats` → [`crate::stats::Snapshot`]
//! - `POST /_admin/tenants/{tenant}/reset` → 204; resources, stats and faults back to start-up
//! - `GET|PUT /_admin/tenants/{tenant}/faults` → [`FaultConfig`]; PUT replaces all faults
//! - `GET  /_admin/tenants/{tenant}/deleted` → GitHub hard deletes
//!   `[{"id","userName","externalId","deletedAt"}]` (empty for other modes)
//! - `GET  /_admin/tenants/{tenant}/accounts` → GitHub accounts behind the SCIM users
//!   `[{"id","userName","login","email","suspended"}]` (empty for other modes)

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::faults::FaultConfig;
use crate::schema::Kind;
use crate::tenant::{App, ModeState, Tenant};

/// Admin routes.
pub fn routes(app: Arc<App>) -> Router {
    Router::new()
        .route("/_admin/tenants", get(tenants))
        .route("/_admin/tenants/{tenant}/users", get(users))
        .route("/_admin/tenants/{tenant}/groups", get(groups))
        .route("/_admin/tenants/{tenant}/stats", get(stats))
        .route("/_admin/tenants/{tenant}/reset", post(reset))
        .route(
            "/_admin/tenants/{tenant}/faults",
            get(get_faults).put(put_faults),
        )
        .route("/_admin/tenants/{tenant}/deleted", get(deleted))
        .route("/_admin/tenants/{tenant}/accounts", get(accounts))
        .with_state(app)
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn tenant(app: &App, id: &str) -> Result<Arc<Tenant>, Box<Response>> {
    app.tenant(id)
        .cloned()
        .ok_or_else(|| Box::new(error(StatusCode::NOT_FOUND, format!("no tenant {id:?}"))))
}

async fn tenants(State(app): State<Arc<App>>) -> Json<Value> {
    let list: Vec<Value> = app
        .order
        .iter()
        .filter_map(|id| app.tenant(id))
        .map(|t| {
            let store = t.read();
            json!({
                "id": t.id(),
                "mode": t.config.mode.name(),
                "users": store.users.len(),
                "groups": store.groups.len(),
            })
        })
        .collect();
    Json(Value::Array(list))
}

async fn resources(app: &App, id: &str, kind: Kind) -> Response {
    match tenant(app, id) {
        Ok(t) => Json(Value::Array(t.read().collection(kind).all())).into_response(),
        Err(r) => *r,
    }
}

async fn users(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    resources(&app, &id, Kind::User).await
}

async fn groups(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    resources(&app, &id, Kind::Group).await
}

async fn stats(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match tenant(&app, &id) {
        Ok(t) => {
            let snapshot = t.stats().snapshot();
            Json(snapshot).into_response()
        }
        Err(r) => *r,
    }
}

async fn reset(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match tenant(&app, &id) {
        Ok(t) => {
            t.reset();
            tracing::info!(tenant = %id, "tenant reset");
            StatusCode::NO_CONTENT.into_response()
        }
        Err(r) => *r,
    }
}

async fn get_faults(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match tenant(&app, &id) {
        Ok(t) => Json(t.faults()).into_response(),
        Err(r) => *r,
    }
}

async fn put_faults(State(app): State<Arc<App>>, Path(id): Path<String>, body: Bytes) -> Response {
    let t = match tenant(&app, &id) {
        Ok(t) => t,
        Err(r) => return *r,
    };
    let faults: FaultConfig = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("invalid faults: {e}")),
    };
    if let Err((field, message)) = faults.validate() {
        return error(StatusCode::BAD_REQUEST, format!("{field}: {message}"));
    }
    tracing::info!(tenant = %id, "faults updated");
    t.set_faults(faults.clone());
    Json(faults).into_response()
}

async fn deleted(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match tenant(&app, &id) {
        Ok(t) => match &t.ext {
            ModeState::Github(g) => Json(Value::Array(g.deleted())).into_response(),
            _ => Json(json!([])).into_response(),
        },
        Err(r) => *r,
    }
}

async fn accounts(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    match tenant(&app, &id) {
        Ok(t) => match &t.ext {
            ModeState::Github(g) => {
                let list = g.accounts(&t.read());
                Json(Value::Array(list)).into_response()
            }
            _ => Json(json!([])).into_response(),
        },
        Err(r) => *r,
    }
}
