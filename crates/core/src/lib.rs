//! Shared plumbing of every scimrelay service: configuration, RabbitMQ, telemetry, shutdown,
//! and the health endpoints.
//!
//! Nothing provider-specific lives here; a provider's quirks live in its own crate.

pub mod amqp;
pub mod config;
pub mod health;
pub mod metrics;
pub mod shutdown;
pub mod telemetry;

pub use config::{ConfigError, EnvConfig, TargetConfig, TargetsFile};
