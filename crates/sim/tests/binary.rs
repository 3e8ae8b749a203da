//! The `scimrelay-sim` binary: prints its address, serves, exits 0 on SIGTERM; rejects bad flags.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_scimrelay-sim");

#[tokio::test]
async fn prints_address_serves_and_exits_on_sigterm() {
    let mut child = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tenant",
            "acme:scim:bearer=tok",
            "--tenant",
            "b:scim",
            "--tenant",
            "lean:scim:patch=false:discovery=false:bearer=tok",
            "--tenant",
            "gh:github:shortcode=gh:bearer=tok",
            "--tenant",
            "d-1:aws:bearer=tok",
            "--tenant",
            "org:salesforce:client=cid:secret=cs:groups=Sales",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn: {e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    })
    .await
    .unwrap_or_default();
    let origin = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("first line: {line:?}"))
        .to_string();
    assert!(
        origin.starts_with("http://127.0.0.1:") && !origin.ends_with(":0"),
        "{origin}"
    );
    let http = reqwest::Client::new();
    let status = |path: &str, auth: bool| {
        let mut req = http.get(format!("{origin}{path}"));
        if auth {
            req = req.bearer_auth("tok");
        }
        async move { req.send().await.map(|r| r.status().as_u16()).unwrap_or(0) }
    };
    assert_eq!(status("/acme/scim/v2/Users", true).await, 200);
    assert_eq!(status("/acme/scim/v2/Users", false).await, 401);
    assert_eq!(status("/b/scim/v2/Users", false).await, 200);
    // Capability switches from the shorthand: no discovery document, PATCH not implemented.
    assert_eq!(status("/lean/scim/v2/Users", true).await, 200);
    assert_eq!(
        status("/lean/scim/v2/ServiceProviderConfig", true).await,
        404
    );
    let patch = http
        .patch(format!("{origin}/lean/scim/v2/Users/x"))
        .bearer_auth("tok")
        .header("content-type", "application/scim+json")
        .body(r#"{"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],"Operations":[]}"#)
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(patch, 501);
    assert_eq!(status("/d-1/scim/v2/Users", true).await, 200);
    assert_eq!(
        status("/nope/scim/v2/Users", true).await,
        401,
        "AWS wrong tenant"
    );
    let gh = http
        .get(format!("{origin}/scim/v2/enterprises/gh/Users"))
        .bearer_auth("tok")
        .header("user-agent", "test")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0);
    assert_eq!(gh, 200);
    assert_eq!(
        status("/org/services/scim/v2/Groups", false).await,
        401,
        "salesforce needs an OAuth token"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    let mut code = None;
    for _ in 0..50 {
        if let Ok(Some(s)) = child.try_wait() {
            code = s.code();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if code.is_none() {
        let _ = child.kill();
    }
    assert_eq!(code, Some(0), "exit code after SIGTERM");
}

#[test]
fn bad_flags_exit_non_zero_with_one_line() {
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--tenant", "x:ldap"])
        .output();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ldap"));
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenants"));
    assert!(
        out.stdout.is_empty(),
        "nothing printed on stdout before a port is bound"
    );
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--listen") && help.contains("--tenant") && help.contains("--config"),
        "{help}"
    );
}

#[test]
fn config_file() {
    let dir = std::env::temp_dir().join(format!("scimrelay-sim-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("bad.yaml");
    let _ = std::fs::write(
        &path,
        "tenants: [{id: a, mode: scim, auth: {kind: bearer}}]",
    );
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .output();
    let out = out.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("bad.yaml"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn provider_mode_shorthands_and_help() {
    let out = Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    let help = String::from_utf8_lossy(&out.stdout);
    for word in [
        "github",
        "aws",
        "salesforce",
        "shortcode=",
        "client=",
        "/services/oauth2/token",
        "patch=false",
        "filter=false",
        "etag=false",
        "discovery=false",
        "max_results=N",
    ] {
        assert!(help.contains(word), "--help mentions {word}: {help}");
    }
    // A mode-specific mistake is one line naming the key, exit 2, before binding.
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--tenant", "d-1:aws:basic=u:p"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("auth") && err.lines().count() == 1, "{err}");
    let out = Command::new(BIN)
        .args([
            "--listen",
            "127.0.0.1:0",
            "--tenant",
            "g:github:throttle=500",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("throttle_status"));
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--tenant", "s:scim:etag=maybe"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("etag=maybe: expected true or false"),
        "names the option and what it takes: {err}"
    );
}
