//! The `scim-connector` binary: its help says what it serves and documents the environment.

use scimrelay_provider_scim::testkit::connector_help;

#[test]
fn help_exits_zero_and_documents_the_environment() {
    connector_help(env!("CARGO_BIN_EXE_scim-connector"), &["provider: scim"]);
}
