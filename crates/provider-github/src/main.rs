//! `github-connector`: serves every `provider: github` target of the targets file.

use std::sync::Arc;

use clap::Parser;
use scimrelay_core::config::ProviderKind;

/// Delivers identity events to GitHub Enterprise Managed Users enterprises (EMU SCIM).
///
/// Consumes the shard queues of every `provider: github` target in the targets file, converges
/// each event at the enterprise's SCIM API (GitHub's required attributes, login normalisation,
/// PATCH member diffs, 403/429 throttling, 5,000 requests and 1,000 user creations per hour)
/// and publishes its outcome. GitHub's DELETE is permanent: it is sent only for targets with
/// `delete_policy: delete`. Options: `shortcode`, `max_login_len`, `user_creates_per_hour`
/// (docs/providers/github.md). A base_url of the organization-level SCIM API
/// (`/scim/v2/organizations/{org}`) is refused at start: only the EMU enterprise API is served.
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
        "github-connector",
        ProviderKind::Github,
        Arc::new(scimrelay_provider_github::Github::new()),
    )
    .await
}
