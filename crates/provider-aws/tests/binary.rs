//! The `aws-connector` binary: its help says what it serves and documents the environment.

use scimrelay_testkit::{connector_help, connector_refuses_options};

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
    connector_refuses_options(
        env!("CARGO_BIN_EXE_aws-connector"),
        "aws",
        "https://scim.eu-west-1.amazonaws.com/abc/scim/v2",
        &[(
            "{shortcode: acme}",
            "targets[0].options.shortcode",
            "takes no options",
        )],
    );
}
