//! Provider modes. Each mode is a module that owns its URL layout, validation quirks and error
//! shapes, and returns its routes already wrapped in the tenant gate; the server merges them.
//!
//! Plain SCIM and AWS share the URL shape `/{tenant}/scim/v2/...`, so their routers cannot be
//! merged: [`dispatch`] looks at the tenant segment and hands the request to the router of that
//! tenant's mode. A tenant id that names no tenant goes to the AWS router when the simulator has
//! AWS tenants (AWS answers a wrong tenant id with 401), else to the plain one (404).

use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use tower::Service;

use crate::config::{Mode, TenantConfig};
use crate::error::ScimError;
use crate::schema::Kind;
use crate::store::{Collection, Store, UniqueKey, uuid_id};
use crate::tenant::App;

pub mod aws;
pub mod github;
pub mod salesforce;
pub mod scim;

/// Routes of the modes with URL shapes of their own (GitHub, Salesforce).
pub fn routes(app: &Arc<App>) -> Router {
    Router::new()
        .merge(github::routes(app.clone()))
        .merge(salesforce::routes(app.clone()))
}

/// The routers behind [`dispatch`].
#[derive(Clone)]
pub struct Dispatch {
    app: Arc<App>,
    scim: Router,
    aws: Router,
    /// Whether any tenant is an AWS tenant (unknown tenant ids then get AWS's 401).
    any_aws: bool,
}

impl std::fmt::Debug for Dispatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatch")
            .field("any_aws", &self.any_aws)
            .finish_non_exhaustive()
    }
}

/// The service answering everything the mode routers and the admin API did not: `/{tenant}/scim/v2`
/// requests go to the plain or AWS router, the rest is a SCIM 404.
pub fn dispatcher(app: &Arc<App>) -> Router {
    let any_aws = app.tenants.values().any(|t| t.config.mode == Mode::Aws);
    let d = Dispatch {
        app: app.clone(),
        scim: scim::routes(app.clone()).fallback(not_found),
        aws: aws::routes(app.clone()).fallback(aws::unknown_route),
        any_aws,
    };
    Router::new().fallback(dispatch).with_state(Arc::new(d))
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ScimError::not_found(format!("no endpoint at {}", uri.path())).into_response()
}

/// Hands a request to the router of its tenant's mode.
pub async fn dispatch(State(d): State<Arc<Dispatch>>, req: Request) -> Response {
    let segment = req
        .uri()
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let mode = d.app.tenant(segment).map(|t| t.config.mode);
    let mut router = match mode {
        Some(Mode::Aws) => d.aws.clone(),
        None if d.any_aws => d.aws.clone(),
        _ => d.scim.clone(),
    };
    let result: Result<Response, Infallible> = router.call(req).await;
    match result {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

/// Users and groups of a new (or reset) tenant, with the mode's uniqueness rules, id formats
/// and seeded resources.
pub fn fresh_store(config: &TenantConfig) -> Store {
    match config.mode {
        Mode::Scim => Store::new(),
        Mode::Github => Store::with(
            Collection::with_rules(
                Kind::User,
                vec![
                    UniqueKey::USER_NAME,
                    UniqueKey::EXTERNAL_ID,
                    github::LOGIN_KEY,
                ],
                uuid_id,
            ),
            Collection::with_rules(
                Kind::Group,
                vec![UniqueKey::DISPLAY_NAME, UniqueKey::EXTERNAL_ID],
                uuid_id,
            ),
        ),
        Mode::Aws => Store::with(
            Collection::with_rules(
                Kind::User,
                vec![UniqueKey::USER_NAME, UniqueKey::EXTERNAL_ID, aws::EMAIL_KEY],
                uuid_id,
            ),
            Collection::with_rules(
                Kind::Group,
                vec![UniqueKey::DISPLAY_NAME, UniqueKey::EXTERNAL_ID],
                uuid_id,
            ),
        ),
        Mode::Salesforce => salesforce::fresh_store(config),
    }
}
