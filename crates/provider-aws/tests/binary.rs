//! The `aws-connector` binary: its help says what it serves and documents the environment.

use std::process::Command;

#[test]
fn help_exits_zero_and_documents_the_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_aws-connector"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "AWS IAM Identity Center",
        "provider: aws",
        "SCIMRELAY_CONFIG",
        "SCIMRELAY_AMQP_URL",
        "SCIMRELAY_CONNECTOR_HTTP_ADDR",
        "SCIMRELAY_DRAIN_TIMEOUT_SECS",
        "SCIMRELAY_CONNECTOR_REPLICAS",
        "RUST_LOG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ] {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
    assert!(!help.contains("provider: github"), "{help}");
}
