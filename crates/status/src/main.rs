//! `scimrelay-status`: reads its configuration from the environment and serves until SIGTERM.

use clap::Parser;

/// Records every outcome and serves them over gRPC (scimrelay.v1.StatusService, with health and
/// reflection).
///
/// Environment: SCIMRELAY_AMQP_URL, SCIMRELAY_STATUS_DB (default sqlite://scimrelay-status.db;
/// postgres://USER@HOST/DB for PostgreSQL), SCIMRELAY_STATUS_RETENTION_DAYS (default 30; 0 keeps
/// everything), SCIMRELAY_CONFIG (optional targets file: shard counts),
/// SCIMRELAY_STATUS_GRPC_ADDR (default 127.0.0.1:50052), SCIMRELAY_STATUS_HTTP_ADDR (health and
/// metrics, plain HTTP, default 127.0.0.1:8082), SCIMRELAY_API_KEYS_FILE (API keys; without it
/// authentication is off), SCIMRELAY_ALLOW_UNAUTHENTICATED=true (no keys on a non-loopback gRPC
/// address), SCIMRELAY_TLS_CERT_FILE + SCIMRELAY_TLS_KEY_FILE (TLS on the gRPC listener),
/// SCIMRELAY_TLS_CLIENT_CA_FILE (mutual TLS), RUST_LOG, SCIMRELAY_LOG_FORMAT=json,
/// OTEL_EXPORTER_OTLP_ENDPOINT.
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
    let config = match scimrelay_status::StatusConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scimrelay-status: configuration error: {e}");
            return std::process::ExitCode::from(scimrelay_core::config::CONFIG_ERROR_EXIT);
        }
    };
    let _telemetry = scimrelay_core::telemetry::init("scimrelay-status");
    let shutdown = scimrelay_core::shutdown::token_on_signal();
    match scimrelay_status::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scimrelay-status: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
