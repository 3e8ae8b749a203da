//! `scimrelayctl send` of a user CSV through the whole stack: every user provisioned once,
//! every event with one terminal outcome; then one login sent with `--priority interactive
//! --wait`, answered with its outcome.
//!
//! Size: `SCIMRELAY_CTL_USERS` users (default 2,000 for `make test`; `make chaos` sends 10,000).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use scimrelay_proto::v1::OutcomeResult;
use scimrelay_tests::{Stack, StackOptions, bin_path};

#[tokio::test]
async fn send_of_a_user_csv_works_end_to_end() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start(StackOptions {
        label: "ctl-csv".into(),
        sim_args: vec!["--tenant".into(), format!("acme:scim:bearer={token}")],
        targets_yaml: r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{sim}/acme/scim/v2"
    auth: { kind: bearer, token: { env: CTL_TOKEN } }
    shards: 8
    concurrency: { min: 1, max: 32 }
"#
        .into(),
        env: BTreeMap::from([("CTL_TOKEN".to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        dir: None,
        ..Default::default()
    })
    .await;
    let csv = stack.dir.join("users.csv");
    let mut f = std::fs::File::create(&csv).expect("csv");
    writeln!(
        f,
        "subject_id,tenant,version,userName,givenName,familyName,email,id"
    )
    .expect("write");
    let n: usize = std::env::var("SCIMRELAY_CTL_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    for i in 0..n {
        writeln!(
            f,
            "c{i:05},acme,1,c{i:05}@example.com,Given,C{i:05},c{i:05}@example.com,evt-c{i:05}"
        )
        .expect("write");
    }
    drop(f);
    let out = tokio::process::Command::new(bin_path("scimrelayctl"))
        .args(stack.ctl_args())
        .args(["send", csv.to_str().expect("utf-8 path"), "--json"])
        .output()
        .await
        .expect("scimrelayctl");
    assert!(
        out.status.success(),
        "scimrelayctl send failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: Vec<String> = (0..n).map(|i| format!("evt-c{i:05}")).collect();
    let outcomes = stack.wait_outcomes(&ids, 1, Duration::from_secs(600)).await;
    assert!(
        ids.iter().all(|id| outcomes[id].len() == 1
            && outcomes[id][0].result == OutcomeResult::Succeeded as i32)
    );
    assert_eq!(stack.sim_users("acme").await.len(), n);

    // A login: one event, interactive, waiting for its outcome.
    let login = stack.dir.join("login.json");
    std::fs::write(
        &login,
        r#"{"kind": "user.upserted", "tenant": "acme", "version": 1,
            "user": {"id": "login-1", "userName": "login-1@example.com"}}"#,
    )
    .expect("login file");
    let ctl = |args: &[&str]| {
        tokio::process::Command::new(bin_path("scimrelayctl"))
            .args(stack.ctl_args())
            .args(args)
            .output()
    };
    let login_path = login.to_str().expect("utf-8 path");
    let out = ctl(&[
        "send",
        login_path,
        "--priority",
        "interactive",
        "--wait",
        "5",
    ])
    .await
    .expect("scimrelayctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("app  succeeded  created  remote id "),
        "{stdout}"
    );
    // --wait is for one event.
    let out = ctl(&[
        "send",
        csv.to_str().expect("utf-8 path"),
        "--wait",
        "5",
        "--restart",
    ])
    .await
    .expect("scimrelayctl");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--wait: for a file of one event"),
        "{stderr}"
    );
}
