//! `strict-scim-connector`: serves every `provider: strict-scim` target of the targets file
//! (a profile used only in tests; see the crate docs).

/// mimalloc, as in every connector.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    scimrelay_connector::main(std::sync::Arc::new(
        scimrelay_provider_strict_scim::StrictScim::default(),
    ))
    .await
}
