//! `aws-connector`: serves every `provider: aws` target of the targets file.

use std::sync::Arc;

use clap::Parser;
use scimrelay_core::config::ProviderKind;

/// Delivers identity events to AWS IAM Identity Center identity stores (SCIM).
///
/// Consumes the shard queues of every `provider: aws` target in the targets file, converges
/// each event at the identity store's SCIM endpoint (one primary email, single-attribute PATCH
/// paths, group membership diffed against the last applied member set in chunks of at most 100,
/// cursor paging, 409 adoption) and publishes its outcome (docs/providers/aws.md).
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
        "aws-connector",
        ProviderKind::Aws,
        Arc::new(scimrelay_provider_aws::Aws::new()),
    )
    .await
}
