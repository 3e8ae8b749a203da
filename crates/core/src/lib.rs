//! Shared plumbing of every scimrelay service: configuration, RabbitMQ, telemetry, shutdown,
//! and the health endpoints.
//!
//! Nothing provider-specific lives here; a provider's quirks live in its own crate.

pub mod amqp;
pub mod auth;
pub mod config;
pub mod health;
pub mod json;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;
pub mod tls;

pub use config::{ConfigError, EnvConfig, TargetConfig, TargetsFile};

/// Milliseconds since the Unix epoch: the one clock outcomes, ledgers and reports are stamped
/// with, in every service.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}
