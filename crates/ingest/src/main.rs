//! `scimrelay-ingest`: reads its configuration from the environment and serves until SIGTERM.

use clap::Parser;

/// Accepts identity events over HTTP (POST /v1/events) and gRPC (scimrelay.v1.IngestService)
/// and publishes them to RabbitMQ with publisher confirms.
///
/// Environment: SCIMRELAY_CONFIG (targets file, required), SCIMRELAY_AMQP_URL,
/// SCIMRELAY_INGEST_HTTP_ADDR (default 127.0.0.1:8080), SCIMRELAY_INGEST_GRPC_ADDR
/// (default 127.0.0.1:50051), SCIMRELAY_INGEST_MAX_BODY_BYTES, SCIMRELAY_INGEST_MAX_BATCH,
/// RUST_LOG, SCIMRELAY_LOG_FORMAT=json, OTEL_EXPORTER_OTLP_ENDPOINT.
///
/// Authentication: SCIMRELAY_API_KEYS_FILE (API keys; clients send `Authorization: Bearer
/// <key>`; re-read when it changes). Without it every caller is accepted, and a listener on a
/// non-loopback address is refused unless SCIMRELAY_ALLOW_UNAUTHENTICATED=true.
///
/// TLS (both listeners): SCIMRELAY_TLS_CERT_FILE and SCIMRELAY_TLS_KEY_FILE (PEM), plus
/// SCIMRELAY_TLS_CLIENT_CA_FILE to require client certificates from that CA (mutual TLS; the
/// health endpoints are on the HTTP listener, so probes then need a certificate too).
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
    let config = match scimrelay_ingest::IngestConfig::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("scimrelay-ingest: configuration error: {e}");
            return std::process::ExitCode::from(scimrelay_core::config::CONFIG_ERROR_EXIT);
        }
    };
    let _telemetry = scimrelay_core::telemetry::init("scimrelay-ingest");
    let shutdown = scimrelay_core::shutdown::token_on_signal();
    match scimrelay_ingest::run(config, shutdown).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scimrelay-ingest: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
