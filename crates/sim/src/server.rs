//! Assembles the HTTP server: every mode's routes, the admin API and the `/{tenant}/scim/v2`
//! dispatcher (plain or AWS, else a SCIM 404), served until the shutdown future completes.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::SimConfig;
use crate::tenant::App;
use crate::{admin, modes};

/// The complete router for an application state.
pub fn router(app: &Arc<App>) -> Router {
    Router::new()
        .merge(modes::routes(app))
        .merge(admin::routes(app.clone()))
        .fallback_service(modes::dispatcher(app))
}

/// Serves `config` on `listener` until `shutdown` completes, then drains in-flight requests
/// (hung requests are released at once).
pub async fn serve(
    config: SimConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    config.validate()?;
    let token = CancellationToken::new();
    let app = Arc::new(App::new(config, token.clone()));
    let router = router(&app);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, tenants = app.tenants.len(), "simulator serving");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            token.cancel();
        })
        .await?;
    tracing::info!("simulator stopped");
    Ok(())
}
