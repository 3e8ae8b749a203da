//! The `aws-connector` binary: its help says what it serves and documents the environment.

use scimrelay_provider_scim::testkit::connector_help;

#[test]
fn help_exits_zero_and_documents_the_environment() {
    let help = connector_help(
        env!("CARGO_BIN_EXE_aws-connector"),
        &["AWS IAM Identity Center", "provider: aws"],
    );
    assert!(!help.contains("provider: github"), "{help}");
}
