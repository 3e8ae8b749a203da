//! The `scim-connector` binary: its help says what it serves and documents the environment.

use scimrelay_testkit::{connector_help, connector_refuses, connector_refuses_options};

#[test]
fn help_exits_zero_and_documents_the_environment() {
    connector_help(env!("CARGO_BIN_EXE_scim-connector"), &["provider: scim"]);
}

/// A secret the targets file points at but the environment lacks stops the connector at start
/// (exit 2, before any broker connection), naming the file, the target by its index in the
/// whole file and the missing variable — never a secret, and not the index among this
/// connector's own targets (the github target before it is another connector's).
#[test]
fn a_missing_secret_stops_the_connector_at_start_naming_the_key() {
    let (stderr, path) = connector_refuses(
        env!("CARGO_BIN_EXE_scim-connector"),
        "targets:
  - id: gh
    provider: github
    base_url: https://api.github.com/scim/v2/enterprises/acme
    auth: {kind: bearer, token: {env: SCIMRELAY_TEST_GH_TOKEN}}
  - id: app
    provider: scim
    base_url: http://127.0.0.1:9/scim/v2
    auth: {kind: basic, username: relay, password: {env: SCIMRELAY_TEST_APP_PASSWORD}}
",
        &[("SCIMRELAY_AMQP_URL", "amqp://127.0.0.1:9/%2f")],
    );
    assert!(
        stderr.contains(&format!("{path}: targets[1].auth.password"))
            && stderr.contains("SCIMRELAY_TEST_APP_PASSWORD"),
        "{stderr}"
    );
}

/// A hold bound the broker's consumer timeout could not outlast (or zero) stops the connector
/// at start, naming `SCIMRELAY_MAX_HOLD_SECS`.
#[test]
fn an_unusable_hold_bound_stops_the_connector_at_start_naming_the_key() {
    for value in ["0", "1800", "a minute"] {
        let (stderr, _) = connector_refuses(
            env!("CARGO_BIN_EXE_scim-connector"),
            "targets:
  - id: app
    provider: scim
    base_url: http://127.0.0.1:9/scim/v2
    auth: {kind: none}
",
            &[
                ("SCIMRELAY_AMQP_URL", "amqp://127.0.0.1:9/%2f"),
                ("SCIMRELAY_MAX_HOLD_SECS", value),
            ],
        );
        assert!(
            stderr.contains("SCIMRELAY_MAX_HOLD_SECS"),
            "{value}: {stderr}"
        );
    }
}

#[test]
fn any_option_stops_the_connector_naming_the_key() {
    connector_refuses_options(
        env!("CARGO_BIN_EXE_scim-connector"),
        "scim",
        "http://127.0.0.1:9/scim/v2",
        &[(
            "{shortcode: acme}",
            "targets[0].options.shortcode",
            "takes no options",
        )],
    );
}
