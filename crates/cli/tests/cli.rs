//! `scimrelayctl` as a user runs it (the real binary, via assert_cmd): bad inputs name the file,
//! line and column and exit non-zero; against ingest and status running in-process on a private
//! RabbitMQ vhost (the test plays the connectors), every subcommand does its job — also with API
//! keys and (mutual) TLS switched on, where a refused key is named and the key itself is never
//! printed.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions};
use lapin::types::{AMQPValue, FieldTable};
use prost::Message;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use scimrelay_core::amqp::{self, OUTCOMES_EXCHANGE, Publisher};
use scimrelay_core::auth::{Authenticator, KeySet, Scope, hash_key};
use scimrelay_core::config::TargetsFile;
use scimrelay_core::tls::ServerTls;
use scimrelay_proto::v1::{
    Delivery, HeldEvent, Operation, Outcome, OutcomeResult, PlannedRequest, SubjectKind,
};
use scimrelay_tests::TestVhost;

const TARGETS: &str = "targets:\n  - id: t1\n    provider: scim\n    tenants: [acme]\n    base_url: http://127.0.0.1:9/scim/v2\n    auth: { kind: none }\n    shards: 2\n";
const WAIT: Duration = Duration::from_secs(20);

fn ctl() -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin!("scimrelayctl"));
    c.env_remove("SCIMRELAY_INGEST_URL")
        .env_remove("SCIMRELAY_STATUS_URL")
        .env_remove("SCIMRELAY_API_KEY")
        .env_remove("SCIMRELAY_API_KEY_FILE")
        .env_remove("SCIMRELAY_CA_FILE")
        .env_remove("SCIMRELAY_CLIENT_CERT_FILE")
        .env_remove("SCIMRELAY_CLIENT_KEY_FILE")
        .timeout(Duration::from_secs(60));
    c
}

/// Runs the CLI off the async runtime; returns (exit code, stdout, stderr).
async fn run(args: Vec<String>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let out = ctl().args(&args).output().expect("run scimrelayctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write input");
    p.display().to_string()
}

#[test]
fn help_lists_every_subcommand() {
    let out = ctl().arg("--help").output().expect("help");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for sub in ["send", "plan", "status", "watch", "dlq", "held", "keys"] {
        assert!(text.contains(sub), "{sub} missing from:\n{text}");
    }
}

#[test]
fn bad_inputs_name_file_line_and_column_and_exit_non_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let nd = write(
        dir.path(),
        "e.ndjson",
        "{\"kind\": \"user.upserted\", \"version\": 1}\n{\"kind\": oops}\n",
    );
    let csv = write(
        dir.path(),
        "u.csv",
        "subject_id,version,userName\nu1,1,a\nu2,-3,b\n",
    );
    let cols = write(dir.path(), "c.csv", "subject_id,version,shoeSize\n");
    let txt = write(dir.path(), "e.txt", "{}");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["send".into(), nd.clone()],
            format!("{nd}:2:10: invalid JSON"),
        ),
        (
            vec!["send".into(), csv.clone()],
            format!("{csv}:3:2: column version"),
        ),
        (
            vec!["send".into(), cols.clone()],
            format!("{cols}:1:3: unknown column \"shoeSize\""),
        ),
        (
            vec!["send".into(), txt.clone()],
            format!("{txt}: unknown format"),
        ),
        (
            vec!["plan".into(), nd.clone(), "--target".into(), "t1".into()],
            format!("{nd}:2:10"),
        ),
        (
            vec![
                "send".into(),
                dir.path().join("missing.csv").display().to_string(),
            ],
            "missing.csv:0: cannot read".into(),
        ),
        (
            vec!["watch".into(), "--result".into(), "great".into()],
            "--result \"great\"".into(),
        ),
        (vec!["held".into(), "drop".into()], "--event ID".into()),
        (vec!["held".into(), "release".into()], "--event ID".into()),
    ];
    for (args, want) in cases {
        let out = ctl().args(&args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(&want), "{args:?}: want {want:?} in {err}");
    }
    // A usage error is clap's (exit 2) and names the flag or argument.
    let usage: [(&[&str], &str); 6] = [
        (&["send", &csv, "--batch-size", "0"], "--batch-size"),
        (&["dlq", "list", "--limit", "0"], "--limit"),
        (&["dlq", "list", "--limit", "5000"], "--limit"),
        (&["dlq", "replay", "--limit", "lots"], "--limit"),
        (&["held", "list", "--target"], "--target"),
        (&["status", "targets", "t1", "t2"], "'t2'"),
    ];
    for (args, want) in usage {
        let out = ctl().args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
}

#[test]
fn an_unreachable_service_is_named() {
    for args in [
        vec!["status", "event", "e1"],
        vec!["status", "targets"],
        vec!["dlq", "list"],
        vec!["held", "list"],
        vec!["watch"],
    ] {
        let out = ctl()
            .args(["--status", "http://127.0.0.1:1"])
            .args(&args)
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            err.contains("cannot reach the status service at http://127.0.0.1:1"),
            "{args:?}: {err}"
        );
    }
}

/// Runs the CLI with extra environment variables, off the async runtime.
async fn run_env(args: Vec<String>, env: Vec<(&'static str, String)>) -> (i32, String, String) {
    tokio::task::spawn_blocking(move || {
        let mut c = ctl();
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.args(&args).output().expect("run scimrelayctl");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .expect("join")
}

/// A certificate (chain) and its key, PEM.
#[derive(Clone)]
struct Pem {
    cert: String,
    key: String,
}

/// The test's PKI: a CA, a server certificate for localhost and a client certificate of the CA.
struct Pki {
    ca: String,
    server: Pem,
    client: Pem,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().expect("key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca.distinguished_name
        .push(DnType::CommonName, "scimrelay test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
        let key = KeyPair::generate().expect("key");
        let mut p = CertificateParams::new(vec![name.to_owned()]).expect("params");
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages = vec![usage];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        Pem {
            cert: p.signed_by(&key, &issuer).expect("signed").pem(),
            key: key.serialize_pem(),
        }
    };
    Pki {
        server: leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf("operator", ExtendedKeyUsagePurpose::ClientAuth),
        ca: ca_pem,
    }
}

/// What the services of a [`Stack`] check besides the request itself.
#[derive(Default)]
struct Security<'a> {
    /// The keys file.
    keys: Option<&'a Path>,
    /// TLS on ingest (HTTP and gRPC) and status gRPC, with client certificates of the CA.
    mutual_tls: Option<&'a Pki>,
}

/// Ingest and status in-process on a private vhost.
struct Stack {
    vhost: TestVhost,
    ingest: String,
    status: String,
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    conn: lapin::Connection,
    publisher: Publisher,
    _dir: tempfile::TempDir,
}

impl Stack {
    async fn start(label: &str) -> Stack {
        Self::start_with(label, Security::default()).await
    }

    async fn start_with(label: &str, security: Security<'_>) -> Stack {
        let vhost = TestVhost::create(label);
        let dir = tempfile::tempdir().expect("tempdir");
        let targets = TargetsFile::parse(TARGETS).expect("targets");
        let conn = amqp::connect(&vhost.amqp_url(), "cli-test")
            .await
            .expect("amqp");
        amqp::declare_all(&conn, targets.targets.iter())
            .await
            .expect("topology");
        let publisher = Publisher::new(&conn).await.expect("publisher");
        let shutdown = CancellationToken::new();
        let bind = || async {
            tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind")
        };
        let (sg, sh, ih, ig) = (bind().await, bind().await, bind().await, bind().await);
        let auth = match security.keys {
            Some(path) => Authenticator::from_file(path).expect("keys file"),
            None => Authenticator::disabled(),
        };
        let tls = security.mutual_tls.map(|pki| ServerTls {
            cert_pem: pki.server.cert.clone().into_bytes(),
            key_pem: pki.server.key.clone().into_bytes(),
            client_ca_pem: Some(pki.ca.clone().into_bytes()),
        });
        // The certificate names localhost; the listeners are on 127.0.0.1.
        let (scheme, host) = match tls {
            Some(_) => ("https", "localhost"),
            None => ("http", "127.0.0.1"),
        };
        let port = |l: &tokio::net::TcpListener| l.local_addr().expect("addr").port();
        let status = format!("{scheme}://{host}:{}", port(&sg));
        // Status health stays plain; ingest's shares its (TLS) listener.
        let status_health = format!("http://127.0.0.1:{}", port(&sh));
        let ingest = format!("{scheme}://{host}:{}", port(&ih));
        let status_config = scimrelay_status::StatusConfig {
            grpc_addr: String::new(),
            http_addr: String::new(),
            db_url: format!("sqlite://{}", dir.path().join("status.db").display()),
            amqp_url: vhost.amqp_url(),
            retention_days: 30,
            shards: targets
                .targets
                .iter()
                .map(|t| (t.id.clone(), t.shards))
                .collect(),
            guards: scimrelay_status::grpc::Guards::from_targets(&targets),
            auth: auth.clone(),
            tls: tls.clone(),
        };
        let ingest_config = scimrelay_ingest::IngestConfig {
            http_addr: String::new(),
            grpc_addr: String::new(),
            amqp_url: vhost.amqp_url(),
            max_body_bytes: 4 << 20,
            max_batch: 1000,
            max_wait: std::time::Duration::from_secs(scimrelay_ingest::wait::DEFAULT_MAX_WAIT_SECS),
            targets,
            auth,
            tls,
        };
        let tasks = vec![
            tokio::spawn(scimrelay_status::serve(
                status_config,
                sg,
                sh,
                shutdown.clone(),
            )),
            tokio::spawn(scimrelay_ingest::serve(
                ingest_config,
                ih,
                ig,
                shutdown.clone(),
            )),
        ];
        let http = match security.mutual_tls {
            Some(pki) => reqwest::Client::builder()
                .tls_certs_only([reqwest::Certificate::from_pem(pki.ca.as_bytes()).expect("CA")])
                .identity(
                    reqwest::Identity::from_pem(
                        format!("{}{}", pki.client.cert, pki.client.key).as_bytes(),
                    )
                    .expect("identity"),
                )
                .build()
                .expect("client"),
            None => reqwest::Client::new(),
        };
        for url in [
            format!("{status_health}/readyz"),
            format!("{ingest}/readyz"),
        ] {
            let mut ok = false;
            for _ in 0..200 {
                if http
                    .get(&url)
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false)
                {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            assert!(ok, "{url} never ready");
        }
        Stack {
            vhost,
            ingest,
            status,
            shutdown,
            tasks,
            conn,
            publisher,
            _dir: dir,
        }
    }

    fn args(&self, rest: &[&str]) -> Vec<String> {
        let mut a = vec![
            "--ingest".to_owned(),
            self.ingest.clone(),
            "--status".to_owned(),
            self.status.clone(),
        ];
        a.extend(rest.iter().map(|s| (*s).to_owned()));
        a
    }

    async fn outcome(&self, o: &Outcome) {
        let key = amqp::outcome_routing_key(
            "scim",
            &o.target,
            OutcomeResult::try_from(o.result)
                .map(|r| r.name())
                .unwrap_or("x"),
        );
        let props = amqp::properties(scimrelay_proto::TYPE_OUTCOME, FieldTable::default());
        self.publisher
            .publish(OUTCOMES_EXCHANGE, &key, &o.encode_to_vec(), props)
            .await
            .expect("outcome");
    }

    /// Records in the state of record that `d` was applied, as its connector would.
    async fn applied(&self, d: &Delivery, remote_id: &str) {
        let e = d.event.clone().unwrap_or_default();
        let mut c = scimrelay_proto::v1::status_service_client::StatusServiceClient::connect(
            self.status.clone(),
        )
        .await
        .expect("status");
        c.record_converged(scimrelay_proto::v1::RecordConvergedRequest {
            items: vec![scimrelay_proto::v1::Converged {
                key: Some(e.subject_key(&d.target)),
                succeeded: true,
                version: e.version,
                event_id: e.id.clone(),
                remote_id: remote_id.to_owned(),
                presence: scimrelay_proto::v1::Presence::PresentActive as i32,
                operation: "created".into(),
                applied: Some(e),
                ..Default::default()
            }],
        })
        .await
        .expect("RecordConverged");
    }

    /// Takes `n` event copies from t1's shard queues and its interactive lane.
    async fn take(&self, n: usize) -> Vec<Delivery> {
        let ch = self.conn.create_channel().await.expect("channel");
        let mut streams = Vec::new();
        let queues = [
            amqp::shard_queue("t1", 0),
            amqp::shard_queue("t1", 1),
            amqp::lane_queue("t1"),
        ];
        for (i, q) in queues.iter().enumerate() {
            streams.push(
                ch.basic_consume(
                    q.as_str().into(),
                    format!("c{i}").as_str().into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .expect("consume"),
            );
        }
        let mut merged = futures::stream::select_all(streams);
        let mut out = Vec::new();
        while out.len() < n {
            let d = tokio::time::timeout(WAIT, merged.next())
                .await
                .expect("event in time")
                .expect("open")
                .expect("delivery");
            d.acker.ack(BasicAckOptions::default()).await.expect("ack");
            out.push(Delivery::decode(d.data.as_slice()).expect("delivery"));
        }
        let _ = ch.close(200, "done".into()).await;
        out
    }

    async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            t.await.expect("join").expect("clean exit");
        }
        drop(self.vhost);
    }
}

fn outcome_of(d: &Delivery, result: OutcomeResult) -> Outcome {
    let e = d.event.clone().unwrap_or_default();
    Outcome {
        event_id: e.id.clone(),
        target: d.target.clone(),
        provider: d.provider.clone(),
        tenant: e.tenant.clone(),
        subject_kind: SubjectKind::User as i32,
        subject_id: e.subject_id().to_owned(),
        version: e.version,
        kind: e.kind,
        operation: Operation::Created as i32,
        result: result as i32,
        attempt: 1,
        http_status: 201,
        remote_id: format!("remote-{}", e.subject_id()),
        latency_ms: 12,
        accepted_at_ms: d.accepted_at_ms,
        finished_at_ms: d.accepted_at_ms + 12,
        ..Default::default()
    }
}

fn users_csv(n: usize) -> String {
    let mut s = String::from("subject_id,userName,givenName,familyName,email,version\n");
    for i in 0..n {
        s.push_str(&format!(
            "u{i},user{i},Given{i},Family{i},user{i}@example.com,1\n"
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_posts_in_batches_resumes_and_names_rejected_lines() {
    let stack = Stack::start("cli-send").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write(dir.path(), "users.csv", &users_csv(50));
    // An earlier run was interrupted after 20 events.
    let state = format!("{csv}.scimrelayctl-state");
    std::fs::write(
        &state,
        format!("{{\"file\":\"{csv}\",\"acked\":20,\"last_line\":21}}"),
    )
    .expect("state");
    let (code, out, err) =
        run(stack.args(&["send", &csv, "--tenant", "acme", "--batch-size", "7"])).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("sent 30 of 50 events (20 sent by an earlier run)"),
        "{out}"
    );
    assert!(
        !Path::new(&state).exists(),
        "the state file goes when everything was sent"
    );
    let got = stack.take(30).await;
    let subjects: BTreeSet<String> = got
        .iter()
        .filter_map(|d| d.event.as_ref().map(|e| e.subject_id().to_owned()))
        .collect();
    assert_eq!(
        subjects,
        (20..50).map(|i| format!("u{i}")).collect::<BTreeSet<_>>(),
        "exactly the rest of the file"
    );

    // JSON output, and a row ingest refuses: named by its line, the batches before it are kept.
    let mut bad = users_csv(10);
    bad.push_str("u10,,,,,1\n");
    let csv = write(dir.path(), "bad.csv", &bad);
    let (code, out, err) = run(stack.args(&[
        "--json",
        "send",
        &csv,
        "--tenant",
        "acme",
        "--batch-size",
        "5",
    ]))
    .await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(err.contains(&format!("{csv}:12: user.userName:")), "{err}");
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{csv}.scimrelayctl-state")).expect("state kept"),
    )
    .expect("json");
    assert_eq!(state["acked"], 10);
    let _ = stack.take(10).await;
    let ndjson = write(
        dir.path(),
        "one.ndjson",
        "{\"kind\":\"user.upserted\",\"tenant\":\"acme\",\"version\":2,\"user\":{\"id\":\"z\",\"userName\":\"z\"}}\n",
    );
    let (code, out, err) = run(stack.args(&["--json", "send", &ndjson])).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json output");
    assert_eq!(
        (v["sent"].as_u64(), v["eventIds"].as_array().map(Vec::len)),
        (Some(1), Some(1))
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_watch_dlq_and_held_commands() {
    let stack = Stack::start("cli-status").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write(dir.path(), "users.csv", &users_csv(3));
    let (code, _, err) = run(stack.args(&["send", &csv, "--tenant", "acme"])).await;
    assert_eq!(code, 0, "{err}");
    let events = stack.take(3).await;
    let mut sorted = events.clone();
    sorted.sort_by_key(|d| d.event.as_ref().map(|e| e.subject_id().to_owned()));
    let id0 = sorted[0].event.as_ref().map(|e| e.id.clone()).expect("id");
    for d in &sorted {
        stack
            .outcome(&outcome_of(d, OutcomeResult::Succeeded))
            .await;
        let subject = d.event.as_ref().map(|e| e.subject_id()).unwrap_or_default();
        stack.applied(d, &format!("remote-{subject}")).await;
    }

    // watch: the three outcomes from the start, as JSON lines.
    let (code, out, err) =
        run(stack.args(&["--json", "watch", "--from-start", "--count", "3"])).await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(
        lines
            .iter()
            .all(|l| l["result"] == "succeeded" && l["terminal"] == true)
    );
    let (code, out, _) =
        run(stack.args(&["watch", "--from-start", "--count", "1", "--target", "t1"])).await;
    assert_eq!(code, 0);
    assert!(
        out.contains(" t1 succeeded user u0 v1 created 12ms"),
        "{out}"
    );

    // status event / subject / targets.
    let (code, out, err) = run(stack.args(&["status", "event", &id0])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("TARGET")
            && out.contains("succeeded")
            && out.contains("remote-u0")
            && out.contains("terminal"),
        "{out}"
    );
    let (code, out, _) = run(stack.args(&["--json", "status", "subject", "u0"])).await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v[0]["remoteId"], "remote-u0");
    assert_eq!(v[0]["state"], "present-active");
    assert_eq!(v[0]["lastOperation"], "created");
    assert_eq!(v[0]["tenant"], "acme");
    let (code, out, _) = run(stack.args(&["status", "targets"])).await;
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("t1") && l.contains("scim") && l.contains(" 3 ")),
        "{out}"
    );
    let (code, _, err) = run(stack.args(&["status", "event", "no-such-event"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("no-such-event"), "{err}");
    let (code, _, err) = run(stack.args(&["status", "subject", "ghost"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("ghost"), "{err}");
    let (code, _, err) = run(stack.args(&["status", "targets", "no-such-target"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("\"no-such-target\""), "{err}");

    // dlq: park one copy as a connector does, list it, replay it into its shard queue.
    let mut headers = FieldTable::default();
    let key = amqp::event_routing_key(
        "scim",
        "t1",
        amqp::shard_of(
            &scimrelay_proto::subject_ref("acme", scimrelay_proto::v1::SubjectKind::User, "u1"),
            2,
        ),
    );
    headers.insert(
        scimrelay_status::HEADER_ROUTING_KEY.into(),
        AMQPValue::LongString(key.as_str().into()),
    );
    let props = amqp::properties(scimrelay_proto::TYPE_DELIVERY, headers);
    stack
        .publisher
        .publish(amqp::DEAD_EXCHANGE, "t1", &sorted[1].encode_to_vec(), props)
        .await
        .expect("park");
    let (code, out, err) = run(stack.args(&["dlq", "list"])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&key) && out.contains("yes") && out.contains("1 parked in all"),
        "{out}"
    );
    let (code, out, err) = run(stack.args(&["--json", "dlq", "replay", "--target", "t1"])).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["replayed"], 1);
    let back = stack.take(1).await;
    assert_eq!(
        back[0]
            .event
            .as_ref()
            .map(|e| e.subject_id().to_owned())
            .as_deref(),
        Some("u1")
    );

    // held: two held deletions; release one, drop the other.
    let held_publisher = &stack.publisher;
    for d in [&sorted[1], &sorted[2]] {
        let h = HeldEvent {
            delivery: Some(d.clone()),
            routing_key: amqp::event_routing_key("scim", "t1", 0),
            reason: "mass deprovisioning".into(),
            held_at_ms: 1,
            id: 0,
        };
        let props = amqp::properties(scimrelay_status::TYPE_HELD_EVENT, FieldTable::default());
        held_publisher
            .publish(OUTCOMES_EXCHANGE, "scim.t1.held", &h.encode_to_vec(), props)
            .await
            .expect("held");
    }
    let id1 = sorted[1].event.as_ref().map(|e| e.id.clone()).expect("id");
    let id2 = sorted[2].event.as_ref().map(|e| e.id.clone()).expect("id");
    let mut listed = String::new();
    for _ in 0..100 {
        let (_, out, _) = run(stack.args(&["held", "list"])).await;
        listed = out;
        if listed.lines().count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        listed.contains(&id1) && listed.contains(&id2) && listed.contains("mass deprovisioning"),
        "{listed}"
    );
    let (code, out, err) = run(stack.args(&["held", "release", "--event", &id1])).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!("released 1 held event(s): {id1}")),
        "{out}"
    );
    let _ = stack.take(1).await;
    let (code, out, err) = run(stack.args(&["--json", "held", "drop", "--all"])).await;
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["dropped"], serde_json::json!([id2]));
    let (code, out, _) = run(stack.args(&["status", "event", &id2])).await;
    assert_eq!(code, 0);
    assert!(out.contains("dropped by operator"), "{out}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_prints_the_planned_requests() {
    let stack = Stack::start("cli-plan").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "plan.json",
        "[{\"kind\":\"user.upserted\",\"tenant\":\"acme\",\"version\":1,\"user\":{\"id\":\"p1\",\"userName\":\"p1\"}}]",
    );
    let cli = tokio::spawn(run(stack.args(&[
        "plan",
        &file,
        "--target",
        "t1",
        "--wait-secs",
        "20",
    ])));
    // Play the connector: the copy arrives in plan mode; answer with a plan.
    let d = stack.take(1).await.remove(0);
    assert!(
        d.event.as_ref().is_some_and(|e| e.plan),
        "sent in plan mode"
    );
    let mut o = outcome_of(&d, OutcomeResult::Planned);
    o.planned = vec![PlannedRequest {
        method: "POST".into(),
        path: "/Users".into(),
        body: "{\"userName\":\"p1\"}".into(),
    }];
    stack.outcome(&o).await;
    let (code, out, err) = cli.await.expect("join");
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("POST /Users") && out.contains("{\"userName\":\"p1\"}"),
        "{out}"
    );
    // Without a connector answering, plan gives up naming the target.
    let (code, _, err) =
        run(stack.args(&["plan", &file, "--target", "t1", "--wait-secs", "1"])).await;
    assert_eq!(code, 1);
    assert!(err.contains("from target t1"), "{err}");
    stack.stop().await;
}

/// `keys new` output: the key (first line) and the entry (the lines after the comment).
fn key_and_entry(out: &str) -> (String, String) {
    let mut lines = out.lines();
    let key = lines.next().expect("the key").to_owned();
    let entry: String = lines
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    (key, entry)
}

#[test]
fn keys_new_prints_the_key_once_with_its_entry() {
    let out = ctl()
        .args([
            "keys", "new", "--id", "hr-feed", "--tenant", "acme", "--tenant", "beta", "--scope",
            "send", "--scope", "read", "--rate", "50",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("store it now; only its hash is kept"),
        "{stderr}"
    );
    let (key, entry) = key_and_entry(&stdout);
    assert!(key.starts_with("srk_") && key.len() > 40, "{key}");
    assert_eq!(stdout.matches(&key).count(), 1, "printed once: {stdout}");
    assert!(!stderr.contains(&key));
    // The printed hash is the key's, and the entry is one the services accept.
    assert!(
        entry.contains(&format!("sha256: {}\n", hash_key(&key))),
        "{entry}"
    );
    let set = KeySet::parse(&format!("keys:\n{entry}"), Path::new("keys.yaml")).expect("parses");
    let k = &set.keys[0];
    assert_eq!(k.id, "hr-feed");
    assert_eq!(
        k.tenants.as_deref(),
        Some(&["acme".to_owned(), "beta".to_owned()][..])
    );
    assert_eq!(k.scopes, vec![Scope::Send, Scope::Read]);
    assert_eq!(k.rate_per_sec, 50.0);
    // ... and the key authenticates against a keys file made of it.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(dir.path(), "keys.yaml", &format!("keys:\n{entry}"));
    let auth = Authenticator::from_file(Path::new(&file)).expect("keys file");
    let who = auth
        .authenticate(Some(&format!("Bearer {key}")))
        .expect("the new key is accepted");
    assert_eq!(who.key_id, "hr-feed");

    // '*' and --json; two runs never make the same key.
    let out = ctl()
        .args([
            "--json", "keys", "new", "--id", "ops", "--tenant", "*", "--scope", "admin",
        ])
        .output()
        .expect("run");
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("json");
    let key2 = v["key"].as_str().expect("key");
    assert_ne!(key2, key);
    assert_eq!(v["sha256"].as_str(), Some(hash_key(key2).as_str()));
    let entry = v["entry"].as_str().expect("entry");
    let set = KeySet::parse(&format!("keys:\n{entry}"), Path::new("k")).expect("parses");
    assert_eq!(set.keys[0].tenants, None, "every tenant");

    // Bad values name the flag; a scope that does not exist is a usage error.
    for (args, code, want) in [
        (vec!["--rate", "0"], 1, "--rate"),
        (vec!["--tenant", ""], 1, "--tenant"),
        (vec!["--scope", "root"], 2, "--scope"),
    ] {
        let mut all = vec![
            "keys", "new", "--id", "x", "--tenant", "acme", "--scope", "send",
        ];
        all.extend(args.iter().copied());
        let out = ctl().args(&all).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{all:?}: {err}");
        assert!(err.contains(want), "{all:?}: {err}");
        assert!(out.stdout.is_empty(), "no key printed on error");
    }
}

#[test]
fn the_api_key_is_never_printed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let csv = write(dir.path(), "u.csv", &users_csv(1));
    let key_file = write(dir.path(), "key", "secret-xyz-from-file\n");
    let closed = [
        "--ingest",
        "http://127.0.0.1:1",
        "--status",
        "http://127.0.0.1:1",
    ];
    let commands: Vec<Vec<&str>> = vec![
        vec!["status", "targets"],
        vec!["dlq", "list"],
        vec!["held", "list"],
        vec!["watch"],
        vec!["send", &csv, "--tenant", "acme", "--restart"],
        vec!["plan", &csv, "--target", "t1"],
    ];
    for cmd in &commands {
        for key_args in [
            vec!["--api-key", "secret-xyz"],
            vec!["--api-key-file", &key_file],
        ] {
            let out = ctl()
                .args(closed)
                .args(&key_args)
                .args(cmd)
                .output()
                .expect("run");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(out.status.code(), Some(1), "{cmd:?}: {text}");
            assert!(text.contains("cannot reach"), "{cmd:?}: {text}");
            assert!(
                !text.contains("secret-xyz"),
                "{cmd:?} leaked the key: {text}"
            );
        }
    }
    // From the environment: not in errors, not in --help.
    let out = ctl()
        .env("SCIMRELAY_API_KEY", "secret-xyz")
        .args(closed)
        .args(["status", "targets"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&out.stderr).contains("secret-xyz"));
    let out = ctl()
        .env("SCIMRELAY_API_KEY", "secret-xyz")
        .arg("--help")
        .output()
        .expect("help");
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("--api-key") && help.contains("SCIMRELAY_API_KEY"),
        "{help}"
    );
    assert!(!help.contains("secret-xyz"), "{help}");
    // A malformed key, or two sources, is refused without echoing it.
    for args in [
        vec!["--api-key", "secret xyz"],
        vec!["--api-key", "secret-xyz", "--api-key-file", &key_file],
    ] {
        let out = ctl()
            .args(closed)
            .args(&args)
            .args(["status", "targets"])
            .output()
            .expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains("--api-key"), "{args:?}: {err}");
        assert!(!err.contains("secret"), "{args:?}: {err}");
    }
}

/// A keys file for the stack: a sender for acme (and a slow one, 1 request/s), a reader and an
/// operator for every tenant.
fn keys_file(dir: &Path) -> std::path::PathBuf {
    let entry = |id: &str, key: &str, tenants: &str, scopes: &str| {
        format!(
            "  - id: {id}\n    sha256: {}\n    tenants: {tenants}\n    scopes: {scopes}\n",
            hash_key(key)
        )
    };
    let text = format!(
        "keys:\n{}{}{}",
        entry("sender", "k-sender-111", "[acme]", "[send]"),
        entry("reader", "k-reader-222", "[\"*\"]", "[read]"),
        entry("ops", "k-ops-333", "[\"*\"]", "[admin]"),
    ) + &entry(
        "slow",
        "k-slow-444",
        "[acme]",
        "[send]\n    rate_per_sec: 1",
    );
    let path = dir.join("keys.yaml");
    std::fs::write(&path, text).expect("keys file");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_sent_and_refusals_are_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys_file(dir.path());
    let stack = Stack::start_with(
        "cli-keys",
        Security {
            keys: Some(&keys),
            mutual_tls: None,
        },
    )
    .await;
    let csv = write(dir.path(), "users.csv", &users_csv(2));
    let send = |key: Option<&str>| {
        let mut a = stack.args(&["send", &csv, "--tenant", "acme", "--restart"]);
        if let Some(k) = key {
            a.extend(["--api-key".to_owned(), k.to_owned()]);
        }
        a
    };
    let never_printed = [
        "k-sender-111",
        "k-reader-222",
        "k-ops-333",
        "k-slow-444",
        "k-wrong",
    ];
    let check =
        |what: &str, (code, out, err): (i32, String, String), want_code: i32, want: &str| {
            assert_eq!(code, want_code, "{what}: {out}{err}");
            assert!(err.contains(want), "{what}: want {want:?} in {err}");
            for k in never_printed {
                assert!(!out.contains(k) && !err.contains(k), "{what} printed {k}");
            }
        };

    // ingest: no key, a wrong key, a key without `send`; then the right one.
    check(
        "send without a key",
        run(send(None)).await,
        1,
        "ingest refused the API key (HTTP 401)",
    );
    check(
        "send with a wrong key",
        run(send(Some("k-wrong"))).await,
        1,
        "HTTP 401",
    );
    check(
        "send with a read key",
        run(send(Some("k-reader-222"))).await,
        1,
        "not allowed to send this (HTTP 403)",
    );
    check("send", run(send(Some("k-sender-111"))).await, 0, "");
    let _ = stack.take(2).await;
    // Over the key's rate (429): each batch waits out the Retry-After ingest sends.
    let started = std::time::Instant::now();
    let mut slow = send(Some("k-slow-444"));
    slow.extend(["--batch-size".into(), "1".into()]);
    check("send over the rate", run(slow).await, 0, "");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "the second batch waited: {:?}",
        started.elapsed()
    );
    let _ = stack.take(2).await;

    // status: the same, as gRPC codes; the key also comes from a file or the environment.
    let targets = stack.args(&["status", "targets"]);
    check(
        "status without a key",
        run(targets.clone()).await,
        1,
        "the status service refused the API key",
    );
    let mut with = targets.clone();
    with.extend(["--api-key".into(), "k-sender-111".into()]);
    check(
        "status with a send key",
        run(with).await,
        1,
        "PERMISSION_DENIED",
    );
    let key_file = write(dir.path(), "reader.key", "  k-reader-222\n");
    let mut with = targets.clone();
    with.extend(["--api-key-file".into(), key_file]);
    check("status with a key file", run(with).await, 0, "");
    check(
        "status with the key in the environment",
        run_env(targets, vec![("SCIMRELAY_API_KEY", "k-reader-222".into())]).await,
        0,
        "",
    );
    // An operator action needs `admin`.
    let replay = stack.args(&["dlq", "replay", "--api-key", "k-reader-222"]);
    check("replay with a read key", run(replay).await, 1, "`admin`");
    let replay = stack.args(&["dlq", "replay", "--api-key", "k-ops-333"]);
    check("replay with an admin key", run(replay).await, 0, "");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_and_mutual_tls_to_ingest_and_status() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = keys_file(dir.path());
    let pki = pki();
    let stack = Stack::start_with(
        "cli-tls",
        Security {
            keys: Some(&keys),
            mutual_tls: Some(&pki),
        },
    )
    .await;
    assert!(stack.ingest.starts_with("https://") && stack.status.starts_with("https://"));
    let ca = write(dir.path(), "ca.pem", &pki.ca);
    let cert = write(dir.path(), "client.pem", &pki.client.cert);
    let key = write(dir.path(), "client.key", &pki.client.key);
    let csv = write(dir.path(), "users.csv", &users_csv(2));
    let tls = [
        "--ca-file",
        &ca,
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ];

    let mut a = stack.args(&[
        "send",
        &csv,
        "--tenant",
        "acme",
        "--api-key",
        "k-sender-111",
    ]);
    a.extend(tls.iter().map(|s| (*s).to_owned()));
    let (code, out, err) = run(a).await;
    assert_eq!(code, 0, "send over mutual TLS: {out}{err}");
    let _ = stack.take(2).await;
    let mut a = stack.args(&["status", "targets", "--api-key", "k-reader-222"]);
    a.extend(tls.iter().map(|s| (*s).to_owned()));
    let (code, out, err) = run(a.clone()).await;
    assert_eq!(code, 0, "status over mutual TLS: {out}{err}");
    // The same options from the environment.
    let (code, _, err) = run_env(
        stack.args(&["status", "targets", "--api-key", "k-reader-222"]),
        vec![
            ("SCIMRELAY_CA_FILE", ca.clone()),
            ("SCIMRELAY_CLIENT_CERT_FILE", cert.clone()),
            ("SCIMRELAY_CLIENT_KEY_FILE", key.clone()),
        ],
    )
    .await;
    assert_eq!(code, 0, "{err}");

    // Without the CA the server is not trusted; without a client certificate the server
    // refuses the handshake. Either way the command fails naming the service.
    let (code, _, err) = run(stack.args(&[
        "status",
        "targets",
        "--client-cert",
        &cert,
        "--client-key",
        &key,
    ]))
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach the status service"), "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    let (code, _, err) =
        run(stack.args(&["send", &csv, "--tenant", "acme", "--ca-file", &ca])).await;
    assert_eq!(code, 1);
    assert!(err.contains("cannot reach ingest"), "{err}");
    // A certificate without its key is a usage mistake named before anything is sent.
    let (code, _, err) = run(stack.args(&["status", "targets", "--client-cert", &cert])).await;
    assert_eq!(code, 1);
    assert!(err.contains("--client-cert needs --client-key"), "{err}");
    stack.stop().await;
}
