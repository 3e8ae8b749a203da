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

/// The demo flow with known secret values (every provider credential, the broker password)
/// and an OTLP receiver: no log line, span or error message of any service holds any of them.
#[tokio::test]
async fn the_demo_leaks_no_secret_into_logs_or_spans() {
    let receiver = scimrelay_tests::otlp::Receiver::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let events = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/samples/events.json");
    let nonce = uuid::Uuid::new_v4().simple().to_string();
    let secrets: Vec<(&str, String)> = [
        "DEMO_SCIM_TOKEN",
        "DEMO_GITHUB_TOKEN",
        "DEMO_AWS_TOKEN",
        "DEMO_SF_SECRET",
    ]
    .into_iter()
    .map(|var| (var, format!("s3cr3t-{}-{nonce}", var.to_lowercase())))
    .collect();
    let out = tokio::process::Command::new(bin_path("scimrelay-demo"))
        .args(["--events", events, "--dir"])
        .arg(dir.path().join("demo"))
        .envs(receiver.env())
        .envs(secrets.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .await
        .expect("scimrelay-demo");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");

    let mut forbidden: Vec<String> = secrets.into_iter().map(|(_, v)| v).collect();
    // The broker's password (guest) only ever appears masked in a URL.
    forbidden.push("guest:guest@".into());
    let mut texts = vec![
        ("demo stdout".to_owned(), stdout),
        ("demo stderr".to_owned(), stderr),
    ];
    for entry in std::fs::read_dir(dir.path().join("demo")).expect("logs") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "log") {
            let text = std::fs::read_to_string(&path).expect("log");
            texts.push((path.display().to_string(), text));
        }
    }
    assert!(texts.len() >= 8, "service logs missing: {}", texts.len());
    for (name, text) in &texts {
        for f in &forbidden {
            assert!(!text.contains(f.as_str()), "{name} holds a secret:\n{text}");
        }
    }
    // Spans of every service arrived, and none holds a secret.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut services = std::collections::BTreeSet::new();
    while std::time::Instant::now() < deadline {
        services = receiver.spans().iter().map(|s| s.service.clone()).collect();
        if services.len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(services.len() >= 6, "spans from {services:?}");
    for s in receiver.spans() {
        for (k, v) in s.attributes.iter().chain([(&"name".to_owned(), &s.name)]) {
            for f in &forbidden {
                assert!(
                    !v.contains(f.as_str()),
                    "span {} attribute {k} holds a secret",
                    s.name
                );
            }
        }
    }
}
