//! `aws-connector`: serves every `provider: aws` target of the targets file.

/// mimalloc: the services allocate many small, short-lived buffers per event (protobuf,
/// JSON, HTTP); see BENCHMARKS.md for what it changed.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    scimrelay_connector::main(std::sync::Arc::new(scimrelay_provider_aws::Aws::new())).await
}
