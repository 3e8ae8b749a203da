//! The `salesforce-connector` binary: its help says what it serves and documents the
//! environment and options.

use scimrelay_testkit::{connector_help, connector_refuses_options};

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

#[test]
fn an_option_typo_or_wrong_type_stops_the_connector_naming_the_key() {
    connector_refuses_options(
        env!("CARGO_BIN_EXE_salesforce-connector"),
        "salesforce",
        "https://example.my.salesforce.com/services/scim/v2",
        &[
            (
                "{profile: Standard}",
                "targets[0].options.profile",
                "profile_name",
            ),
            (
                "{profile_name: [a, b]}",
                "targets[0].options.profile_name",
                "a string",
            ),
            (
                "{username_suffix: true}",
                "targets[0].options.username_suffix",
                "a string",
            ),
        ],
    );
}
