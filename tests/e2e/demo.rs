//! `make demo` keeps working: the demo driver runs against every service and the simulator and
//! exits 0 only when every sample event succeeded at every target and every state check passed.

use scimrelay_tests::bin_path;

#[tokio::test]
async fn the_demo_succeeds_at_every_target() {
    let dir = tempfile::tempdir().expect("tempdir");
    let events = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/samples/events.json");
    let out = tokio::process::Command::new(bin_path("scimrelay-demo"))
        .args(["--events", events, "--dir"])
        .arg(dir.path().join("demo"))
        .output()
        .await
        .expect("scimrelay-demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("demo: every event succeeded at every target"),
        "{stdout}"
    );
    for target in ["scim-demo", "github-demo", "aws-demo", "salesforce-demo"] {
        assert!(
            stdout.lines().any(|l| l.starts_with("simulator check")
                && l.contains(target)
                && l.contains("OK")),
            "{target} state check missing:\n{stdout}"
        );
    }
    // One row per sample event.
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("evt-")).count(),
        27,
        "{stdout}"
    );
}
