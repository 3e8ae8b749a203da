//! `/healthz` (the process is alive) and `/readyz` (it can do its job, e.g. the broker is
//! connected), served by every service on its admin address, beside `/metrics`
//! ([`crate::metrics`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// A readiness flag shared between a service's workers and its `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The health routes, to merge into a service's HTTP router.
pub fn routes(ready: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.clone();
                async move {
                    if ready.get() {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        )
}

/// Serves a router, plus `/metrics`, on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router.merge(crate::metrics::routes()))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// Binds an address, naming the variable in the error.
pub async fn bind(addr: &str, key: &str) -> Result<tokio::net::TcpListener, crate::ConfigError> {
    let parsed: SocketAddr = addr.parse().map_err(|e| crate::ConfigError::Invalid {
        key: key.to_owned(),
        message: format!("{addr:?} is not a socket address: {e}"),
    })?;
    tokio::net::TcpListener::bind(parsed)
        .await
        .map_err(|e| crate::ConfigError::Invalid {
            key: key.to_owned(),
            message: format!("cannot listen on {addr}: {e}"),
        })
}
