//! The status service: consumes every outcome into a store and serves it over gRPC.
//!
//! Outcomes are acked only after their batch was committed to the store, so a crash or a
//! restart loses nothing: unacked outcomes are redelivered and written once (the store ignores
//! duplicates). Besides outcomes it consumes held events (same queue) and connector reports
//! (`scimrelay.reports`), prunes history older than the retention age, performs the operator
//! actions on the broker (dead-letter replay, held-event release), and answers the connectors'
//! mass-deprovisioning guard (`AdmitDeprovision`, see [`grpc`]).
//!
//! # Authentication and TLS
//! With `SCIMRELAY_API_KEYS_FILE` (see [`scimrelay_core::auth`]) every `StatusService` call needs
//! `authorization: Bearer <key>` metadata from a key with the `read` scope (`admin` for
//! ReplayDeadLetters, ReleaseHeld and DropHeld); a key scoped to tenants reads only outcomes,
//! events and subjects of its tenants and cannot call the operational RPCs (see [`grpc`] for
//! every rule and status code). The gRPC health and reflection services stay open. The keys
//! file is re-read while running, so a revocation takes effect within seconds. Without a keys
//! file authentication is off, and [`run`] refuses a non-loopback `SCIMRELAY_STATUS_GRPC_ADDR`
//! unless `SCIMRELAY_ALLOW_UNAUTHENTICATED=true`.
//!
//! With `SCIMRELAY_TLS_CERT_FILE` and `SCIMRELAY_TLS_KEY_FILE` the gRPC listener speaks TLS
//! only; with `SCIMRELAY_TLS_CLIENT_CA_FILE` too, clients must present a certificate from that
//! CA (mutual TLS). The HTTP listener (`/healthz`, `/readyz`, `/metrics`) stays plain and open,
//! so probes need neither a key nor a certificate: keep it off untrusted networks.

pub mod broker;
pub mod consumer;
pub mod grpc;
pub mod reports;
pub mod store;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use scimrelay_core::auth::Authenticator;
use scimrelay_core::config::{ConfigError, EnvConfig, env_or, env_parse};
use scimrelay_core::tls::ServerTls;

/// Default gRPC address.
pub const DEFAULT_GRPC_ADDR: &str = "127.0.0.1:50052";
/// Default address of the health endpoints.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8082";
/// Default store: a SQLite file in the working directory.
pub const DEFAULT_DB: &str = "sqlite://scimrelay-status.db";
/// Default age after which outcome history is pruned.
pub const DEFAULT_RETENTION_DAYS: u32 = 30;
/// How often history is pruned (and once at start).
pub const PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// Topic exchange connectors publish [`scimrelay_proto::v1::TargetReport`]s to (routing key =
/// target id).
pub const REPORTS_EXCHANGE: &str = "scimrelay.reports";
/// The status service's queue of reports.
pub const REPORTS_QUEUE: &str = "scimrelay.status.reports";
/// Message type (header `x-scimrelay-type`) of a held event on `scimrelay.outcomes`, and the
/// header set on a released held event (the mass-deprovisioning guard lets it through).
pub use scimrelay_proto::{HEADER_RELEASED, TYPE_HELD_EVENT};
/// Message type of a target report.
pub const TYPE_TARGET_REPORT: &str = "scimrelay.v1.TargetReport";
/// Header a connector sets on a parked copy (the one definition is in `scimrelay-proto`).
pub use scimrelay_proto::HEADER_ROUTING_KEY;

/// Status settings.
#[derive(Clone)]
pub struct StatusConfig {
    /// `SCIMRELAY_STATUS_GRPC_ADDR`.
    pub grpc_addr: String,
    /// `SCIMRELAY_STATUS_HTTP_ADDR`: health endpoints.
    pub http_addr: String,
    /// `SCIMRELAY_STATUS_DB`: `postgres://…`, `sqlite://file`, a path, or `sqlite::memory:`.
    pub db_url: String,
    /// `SCIMRELAY_AMQP_URL`.
    pub amqp_url: String,
    /// `SCIMRELAY_STATUS_RETENTION_DAYS`: outcome history older than this is pruned; 0 keeps
    /// everything.
    pub retention_days: u32,
    /// Shard count per target, from the targets file when `SCIMRELAY_CONFIG` is set (optional:
    /// connector reports also carry it). Used for queue depths and replaying old dead letters.
    pub shards: HashMap<String, u16>,
    /// Each target's mass-deprovisioning guard, from the targets file (`SCIMRELAY_CONFIG`): the
    /// settings `AdmitDeprovision` enforces. Without a targets file every guard check is
    /// refused and the connectors' deprovisionings wait (logged at start).
    pub guards: grpc::Guards,
    /// Who may call the gRPC API: the keys file `SCIMRELAY_API_KEYS_FILE`; disabled (anyone,
    /// every tenant, every scope) without it.
    pub auth: Authenticator,
    /// `SCIMRELAY_TLS_CERT_FILE` / `_KEY_FILE` / `_CLIENT_CA_FILE`: TLS (mutual with a client CA)
    /// on the gRPC listener; plain gRPC when `None`. The HTTP listener is always plain.
    pub tls: Option<ServerTls>,
}

impl std::fmt::Debug for StatusConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusConfig")
            .field("grpc_addr", &self.grpc_addr)
            .field("http_addr", &self.http_addr)
            .field("db_url", &redact_db(&self.db_url))
            .field(
                "amqp_url",
                &scimrelay_core::config::redact_url(&self.amqp_url),
            )
            .field("retention_days", &self.retention_days)
            .field("shards", &self.shards)
            .field("guards", &self.guards.by_target.len())
            .field("auth", &self.auth.enabled())
            .field("tls", &self.tls)
            .finish()
    }
}

impl StatusConfig {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = EnvConfig::from_env()?;
        let db_url = env_or("SCIMRELAY_STATUS_DB", DEFAULT_DB);
        if db_url.contains("://")
            && !(db_url.starts_with("sqlite:")
                || db_url.starts_with("postgres://")
                || db_url.starts_with("postgresql://"))
        {
            return Err(ConfigError::Invalid {
                key: "SCIMRELAY_STATUS_DB".into(),
                message:
                    "unsupported URL: use postgres://USER@HOST/DB, sqlite://PATH or a file path"
                        .into(),
            });
        }
        let (shards, guards) = match &env.config_path {
            Some(_) => {
                let file = env.targets()?;
                (
                    file.targets
                        .iter()
                        .map(|t| (t.id.clone(), t.shards))
                        .collect(),
                    grpc::Guards::from_targets(&file),
                )
            }
            None => (HashMap::new(), grpc::Guards::default()),
        };
        Ok(StatusConfig {
            grpc_addr: env_or("SCIMRELAY_STATUS_GRPC_ADDR", DEFAULT_GRPC_ADDR),
            http_addr: env_or("SCIMRELAY_STATUS_HTTP_ADDR", DEFAULT_HTTP_ADDR),
            db_url,
            amqp_url: env.amqp_url,
            retention_days: env_parse("SCIMRELAY_STATUS_RETENTION_DAYS", DEFAULT_RETENTION_DAYS)?,
            shards,
            guards,
            auth: Authenticator::from_env()?,
            tls: ServerTls::from_env()?,
        })
    }
}

/// Prunes history older than `days` now and every [`PRUNE_INTERVAL`] until `shutdown`.
pub async fn prune_loop(store: store::Store, days: u32, shutdown: CancellationToken) {
    if days == 0 {
        return;
    }
    loop {
        let before = store::now_ms() - i64::from(days) * 86_400_000;
        match store.prune(before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                outcomes = n,
                retention_days = days,
                "pruned outcome history"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning outcome history failed; retrying later"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(PRUNE_INTERVAL) => {}
        }
    }
}

/// How often the queue-depth gauges are refreshed.
pub const DEPTH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// Refreshes `scimrelay_queue_depth{target}`, `scimrelay_pending_references{target}` and
/// `scimrelay_pending_reference_age_seconds{target}` for every target known to the store.
async fn depth_loop(store: store::Store, ops: Arc<broker::Ops>, shutdown: CancellationToken) {
    loop {
        if let Ok(ids) = store.target_ids().await {
            let m = scimrelay_core::metrics::metrics();
            for id in ids {
                let labels = scimrelay_core::metrics::target(&id);
                if let Some(depth) = ops.queue_depth(&id).await {
                    m.queue_depth
                        .get_or_create(&labels)
                        .set(i64::try_from(depth).unwrap_or(i64::MAX));
                }
                if let Ok((pending, oldest_ms)) = store.pending_summary(&id).await {
                    m.pending_references
                        .get_or_create(&labels)
                        .set(i64::try_from(pending).unwrap_or(i64::MAX));
                    let age = if pending == 0 {
                        0
                    } else {
                        (scimrelay_core::now_ms() - oldest_ms) / 1000
                    };
                    m.pending_reference_age
                        .get_or_create(&labels)
                        .set(age.max(0));
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(DEPTH_INTERVAL) => {}
        }
    }
}

/// Runs the service on already-bound listeners until `shutdown` is cancelled.
///
/// Serves TLS on the gRPC listener when `config.tls` is set, and re-reads the keys file while
/// running. Checking that the listener may run without keys is [`run`]'s job.
pub async fn serve(
    config: StatusConfig,
    grpc: tokio::net::TcpListener,
    http: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let store = store::Store::open(&config.db_url).await.map_err(|e| {
        anyhow::anyhow!(
            "SCIMRELAY_STATUS_DB: cannot open {}: {e}",
            redact_db(&config.db_url)
        )
    })?;
    tracing::info!(
        grpc = %grpc.local_addr()?,
        http = %http.local_addr()?,
        backend = ?store.backend(),
        tls = config.tls.is_some(),
        mutual_tls = config.tls.as_ref().is_some_and(|t| t.client_ca_pem.is_some()),
        authentication = config.auth.enabled(),
        "status listening"
    );
    config.auth.spawn_reload(shutdown.clone());
    let ready = scimrelay_core::health::Readiness::default();
    let health = tokio::spawn(scimrelay_core::health::serve(
        http,
        scimrelay_core::health::routes(ready.clone()),
        shutdown.clone(),
    ));
    let consume = tokio::spawn(consumer::run(
        config.amqp_url.clone(),
        store.clone(),
        ready,
        shutdown.clone(),
    ));
    let report = tokio::spawn(reports::run(
        config.amqp_url.clone(),
        store.clone(),
        shutdown.clone(),
    ));
    let prune = tokio::spawn(prune_loop(
        store.clone(),
        config.retention_days,
        shutdown.clone(),
    ));
    let ops = broker::Ops::new(
        config.amqp_url.clone(),
        config.shards.clone(),
        store.clone(),
    );
    let ops = Arc::new(ops);
    let depth = tokio::spawn(depth_loop(store.clone(), ops.clone(), shutdown.clone()));
    if config.guards.by_target.is_empty() {
        tracing::warn!(
            "no targets file (SCIMRELAY_CONFIG): the mass-deprovisioning guard knows no target, \
             so connectors hold every deactivation and deletion until it is set"
        );
    }
    let security = grpc::Security {
        auth: config.auth.clone(),
        tls: config.tls.clone(),
        guards: config.guards.clone(),
    };
    let serve = grpc::serve(store, ops, grpc, security, shutdown.clone()).await;
    shutdown.cancel();
    let _ = tokio::join!(consume, report, prune, health, depth);
    serve
}

/// Checks that the gRPC listener may run as configured (keys are required off loopback unless
/// `SCIMRELAY_ALLOW_UNAUTHENTICATED=true`), binds the configured addresses and serves until
/// `shutdown` is cancelled.
pub async fn run(config: StatusConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let grpc_addr: std::net::SocketAddr =
        config.grpc_addr.parse().map_err(|e| ConfigError::Invalid {
            key: "SCIMRELAY_STATUS_GRPC_ADDR".into(),
            message: format!("{:?} is not a socket address: {e}", config.grpc_addr),
        })?;
    scimrelay_core::auth::require_for_listener(
        &config.auth,
        "SCIMRELAY_STATUS_GRPC_ADDR",
        &grpc_addr,
    )?;
    let grpc =
        scimrelay_core::health::bind(&config.grpc_addr, "SCIMRELAY_STATUS_GRPC_ADDR").await?;
    let http =
        scimrelay_core::health::bind(&config.http_addr, "SCIMRELAY_STATUS_HTTP_ADDR").await?;
    serve(config, grpc, http, shutdown).await
}

/// A database URL without its password, for logs and errors.
pub fn redact_db(url: &str) -> String {
    scimrelay_core::config::redact_url(url)
}
