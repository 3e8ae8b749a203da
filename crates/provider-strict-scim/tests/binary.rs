//! The `strict-scim-connector` binary: its help, and a targets file it refuses at start — an
//! option typo, a target of a provider the deployment does not run, and a deployment that
//! does not run this connector's own provider.

use scimrelay_testkit::{connector_help, connector_refuses};

const BIN: &str = env!("CARGO_BIN_EXE_strict-scim-connector");

#[test]
fn help_exits_zero_and_documents_the_environment() {
    connector_help(BIN, &["provider: strict-scim", "member_chunk"]);
}

#[test]
fn an_option_typo_or_wrong_type_stops_the_connector_naming_the_key() {
    let env = [("SCIMRELAY_PROVIDERS", "scim,strict-scim")];
    for (options, key, word) in [
        (
            "{member_chunks: 5}",
            "targets[0].options.member_chunks",
            "member_chunk",
        ),
        (
            "{member_chunk: many}",
            "targets[0].options.member_chunk",
            "whole number",
        ),
        (
            "{member_chunk: 0}",
            "targets[0].options.member_chunk",
            "at least 1",
        ),
        ("{note: [a]}", "targets[0].options.note", "a string"),
    ] {
        let targets = format!(
            "targets:\n  - id: t\n    provider: strict-scim\n    base_url: http://127.0.0.1:9/scim/v2\n    \
             auth: {{kind: none}}\n    options: {options}\n"
        );
        let (stderr, _) = connector_refuses(BIN, &targets, &env);
        assert!(
            stderr.contains(key) && stderr.contains(word),
            "{options}: {stderr}"
        );
    }
}

#[test]
fn a_target_of_a_provider_the_deployment_does_not_run_stops_it_at_start() {
    let (stderr, _) = connector_refuses(
        BIN,
        "targets:\n  - id: plain\n    provider: scim\n    base_url: http://127.0.0.1:9/scim/v2\n    auth: {kind: none}\n",
        &[("SCIMRELAY_PROVIDERS", "strict-scim")],
    );
    assert!(
        stderr.contains("targets[0].provider")
            && stderr.contains("not a provider this deployment runs"),
        "{stderr}"
    );
}

#[test]
fn a_connector_whose_provider_the_deployment_does_not_run_stops_at_start() {
    let (stderr, _) = connector_refuses(
        BIN,
        "targets:\n  - id: plain\n    provider: scim\n    base_url: http://127.0.0.1:9/scim/v2\n    auth: {kind: none}\n",
        &[],
    );
    assert!(
        stderr.contains("SCIMRELAY_PROVIDERS") && stderr.contains("strict-scim"),
        "{stderr}"
    );
}
