//! scimrelay-sim: a simulator of SCIM 2.0 service providers that the demo, end-to-end tests and
//! benchmarks talk to. Many tenants at once, each in a provider mode (plain RFC 7644 `scim`,
//! `github`, `aws`, `salesforce`), with request statistics and injectable faults exposed through
//! an admin API.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let config = scimrelay_sim::SimConfig::from_yaml_str("tenants: [{id: acme, mode: scim}]")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! scimrelay_sim::serve(config, listener, async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

pub mod admin;
pub mod config;
pub mod error;
pub mod faults;
pub mod filter;
pub mod gate;
pub mod http;
pub mod modes;
pub mod patch;
pub mod schema;
pub mod server;
pub mod stats;
pub mod store;
pub mod tenant;

pub use config::{AuthConfig, ConfigError, Mode, SimConfig, TenantConfig};
pub use error::ScimError;
pub use faults::{FaultConfig, LatencyMs, RateLimit};
pub use server::serve;
