//! The `github-connector` binary: its help documents the environment, and a targets file that
//! points a github target at the organization-level SCIM API stops it at start.

use scimrelay_testkit::{connector_help, connector_refuses, connector_refuses_options};

const BIN: &str = env!("CARGO_BIN_EXE_github-connector");

#[test]
fn help_exits_zero_and_documents_the_environment() {
    connector_help(
        BIN,
        &["provider: github", "delete_policy: delete", "shortcode"],
    );
}

#[test]
fn an_organization_level_base_url_stops_the_connector_at_start() {
    let (stderr, _) = connector_refuses(
        BIN,
        "targets:
  - id: plain
    provider: scim
    base_url: http://127.0.0.1:9/acme/scim/v2
    auth: {kind: none}
  - id: gh-org
    provider: github
    base_url: https://api.github.com/scim/v2/organizations/acme
    auth: {kind: none}
",
        &[],
    );
    assert!(
        stderr.contains("targets[1].base_url")
            && stderr.contains("organization-level")
            && stderr.contains("no Groups")
            && stderr.contains("/scim/v2/enterprises/"),
        "{stderr}"
    );
}

#[test]
fn an_option_typo_or_wrong_type_stops_the_connector_naming_the_key() {
    connector_refuses_options(
        BIN,
        "github",
        "https://api.github.com/scim/v2/enterprises/acme",
        &[
            (
                "{shortcod: acme}",
                "targets[0].options.shortcod",
                "shortcode",
            ),
            (
                "{max_login_len: forty}",
                "targets[0].options.max_login_len",
                "whole number",
            ),
            (
                "{max_login_len: 0}",
                "targets[0].options.max_login_len",
                "at least 1",
            ),
            (
                "{shortcode: acme, shortcod: ~}",
                "targets[0].options.shortcod",
                "is not an option",
            ),
            (
                "{user_creates_per_hour: 0}",
                "targets[0].options.user_creates_per_hour",
                "at least 1",
            ),
            (
                "{user_creates_per_hour: -5}",
                "targets[0].options.user_creates_per_hour",
                "whole number",
            ),
        ],
    );
}
