//! The `scim-connector` binary: its help says what it serves and documents the environment.

use scimrelay_provider_scim::testkit::connector_help;

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
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("scim-secret-targets-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
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
    )
    .expect("write targets");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_scim-connector"))
        .env_clear()
        .env("SCIMRELAY_CONFIG", &path)
        .env("SCIMRELAY_AMQP_URL", "amqp://127.0.0.1:9/%2f")
        .output()
        .expect("run");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(
        stderr.contains(&format!("{}: targets[1].auth.password", path.display()))
            && stderr.contains("SCIMRELAY_TEST_APP_PASSWORD"),
        "{stderr}"
    );
}
