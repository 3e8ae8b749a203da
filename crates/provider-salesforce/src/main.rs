//! `salesforce-connector`: serves every `provider: salesforce` target of the targets file.

use std::sync::Arc;

use clap::Parser;
use scimrelay_core::config::ProviderKind;

/// Delivers identity events to Salesforce orgs (SCIM, OAuth 2.0).
///
/// Consumes the shard queues of every `provider: salesforce` target in the targets file,
/// converges each event at the org's SCIM API (one profile entitlement per user, username
/// suffix, DELETE that only deactivates, membership of existing public groups, 403
/// REQUEST_LIMIT_EXCEEDED throttling, Sforce-Limit-Info) and publishes its outcome. Auth is
/// OAuth client credentials or JWT bearer. Options: `profile_id` (or `profile_name`),
/// `username_suffix` (docs/providers/salesforce.md).
///
/// Environment: SCIMRELAY_CONFIG (targets file, required), SCIMRELAY_AMQP_URL,
/// SCIMRELAY_CONNECTOR_HTTP_ADDR (health, default 127.0.0.1:8081), SCIMRELAY_DRAIN_TIMEOUT_SECS
/// (default 5), SCIMRELAY_CONNECTOR_REPLICAS, RUST_LOG, SCIMRELAY_LOG_FORMAT=json,
/// OTEL_EXPORTER_OTLP_ENDPOINT. Secrets are read from the env vars or files each target names.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Args {}

/// mimalloc: the services allocate many small, short-lived buffers per event (protobuf,
/// JSON, HTTP); see BENCHMARKS.md for what it changed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let _ = Args::parse();
    scimrelay_connector::main(
        "salesforce-connector",
        ProviderKind::Salesforce,
        Arc::new(scimrelay_provider_salesforce::Salesforce::new()),
    )
    .await
}
