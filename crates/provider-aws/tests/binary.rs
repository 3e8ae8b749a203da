//! The `aws-connector` binary: its help says what it serves and documents the environment.

use scimrelay_provider_scim::testkit::{connector_help, connector_refuses};

#[test]
fn help_exits_zero_and_documents_the_environment() {
    let help = connector_help(
        env!("CARGO_BIN_EXE_aws-connector"),
        &["AWS IAM Identity Center", "provider: aws"],
    );
    assert!(!help.contains("provider: github"), "{help}");
}

#[test]
fn any_option_stops_the_connector_naming_the_key() {
    let (stderr, _) = connector_refuses(
        env!("CARGO_BIN_EXE_aws-connector"),
        "targets:
  - id: t
    provider: aws
    base_url: https://scim.eu-west-1.amazonaws.com/abc/scim/v2
    auth: {kind: none}
    options: {shortcode: acme}
",
        &[],
    );
    assert!(
        stderr.contains("targets[0].options.shortcode") && stderr.contains("takes no options"),
        "{stderr}"
    );
}
