//! The `salesforce-connector` binary: its help says what it serves and documents the
//! environment and options.

use scimrelay_provider_scim::testkit::connector_help;

#[test]
fn help_exits_zero_and_documents_the_environment() {
    connector_help(
        env!("CARGO_BIN_EXE_salesforce-connector"),
        &[
            "Salesforce",
            "provider: salesforce",
            "OAuth client credentials or JWT bearer",
            "profile_id",
            "username_suffix",
        ],
    );
}
