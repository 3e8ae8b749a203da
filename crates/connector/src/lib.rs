//! The connector runtime shared by every provider: consume a target's shard queues, converge
//! each event through the provider profile, publish its outcome, ack.
//!
//! # Ordering and concurrency
//! Each shard queue has single active consumer, so one process at a time owns a subject. Inside
//! a shard, messages of one subject are processed strictly in arrival order (a per-subject
//! queue); different subjects run concurrently, bounded by the target's concurrency. Versions
//! make the order of *arrival* irrelevant for correctness: an event whose version is not newer
//! than the applied one is `superseded`.
//!
//! # Acks
//! A message is acked only after its outcome was confirmed by the broker. A crash between the
//! SCIM call and the ack redelivers the message; convergence is idempotent (desired state,
//! lookup before create, 409 adopts), so a redelivery never creates a second object.
//!
//! # Shutdown
//! On cancel: stop consuming, give back (nack + requeue) what was prefetched but not started,
//! let in-flight work finish within the drain deadline, then close; anything still unacked is
//! requeued by the broker when the channel closes.

pub mod breaker;
pub mod exec;
pub mod ledger;
pub mod limits;
pub mod provider;
mod runtime;
pub mod status;

use std::time::Duration;

use scimrelay_core::config::{
    ConfigError, EnvConfig, ProviderKind, TargetConfig, env_or, env_parse,
};

pub use provider::{
    Assessment, ConvergeError, ConvergeInput, Converged, FailureClass, Provider, ProviderDefaults,
    classify, default_assess,
};
pub use runtime::run;

/// Default address of the health endpoints.
pub const DEFAULT_HTTP_ADDR: &str = "127.0.0.1:8081";
/// Default status service URL (ledger lookups).
pub const DEFAULT_STATUS_URL: &str = "http://127.0.0.1:50052";
/// Default drain deadline on shutdown.
pub const DEFAULT_DRAIN_SECS: u64 = 5;

/// Connector settings.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// The provider kind this service serves.
    pub provider: ProviderKind,
    /// The targets of that kind from the targets file.
    pub targets: Vec<TargetConfig>,
    /// `SCIMRELAY_AMQP_URL`.
    pub amqp_url: String,
    /// `SCIMRELAY_CONNECTOR_HTTP_ADDR`: health endpoints.
    pub http_addr: String,
    /// `SCIMRELAY_DRAIN_TIMEOUT_SECS`: how long in-flight work may take on shutdown.
    pub drain_timeout: Duration,
    /// `SCIMRELAY_STATUS_URL`: the status service's gRPC URL, for ledger lookups.
    pub status_url: String,
    /// `SCIMRELAY_CONNECTOR_REPLICAS`: replicas of this connector sharing each target's rate
    /// budget; every replica takes `ceiling / replicas` (design.md §5).
    pub replicas: u32,
}

impl ConnectorConfig {
    /// Reads the environment and the targets file for a provider kind.
    pub fn from_env(provider: ProviderKind) -> Result<Self, ConfigError> {
        let env = EnvConfig::from_env()?;
        let file = env.targets()?;
        let targets: Vec<_> = file.targets_of(provider).cloned().collect();
        Ok(ConnectorConfig {
            provider,
            targets,
            amqp_url: env.amqp_url,
            http_addr: env_or("SCIMRELAY_CONNECTOR_HTTP_ADDR", DEFAULT_HTTP_ADDR),
            drain_timeout: Duration::from_secs(env_parse(
                "SCIMRELAY_DRAIN_TIMEOUT_SECS",
                DEFAULT_DRAIN_SECS,
            )?),
            status_url: env_or("SCIMRELAY_STATUS_URL", DEFAULT_STATUS_URL),
            replicas: match env_parse("SCIMRELAY_CONNECTOR_REPLICAS", 1u32)? {
                0 => {
                    return Err(ConfigError::Invalid {
                        key: "SCIMRELAY_CONNECTOR_REPLICAS".into(),
                        message: "must be at least 1".into(),
                    });
                }
                n => n,
            },
        })
    }
}
