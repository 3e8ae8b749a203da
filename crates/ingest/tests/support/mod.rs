//! Shared by the auth and TLS suites: ingest in-process on ephemeral ports against a private
//! RabbitMQ vhost, a keys file, and an exact count of what reached the shard queues.
// Each test binary uses a different part of this module.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use scimrelay_core::auth::{Authenticator, hash_key};
use scimrelay_core::config::TargetsFile;
use scimrelay_core::tls::ServerTls;
use scimrelay_ingest::IngestConfig;
use scimrelay_proto::v1::{EventKind, IdentityEvent, UserState};

/// Two targets: `t1` serves acme (two shards), `t2` serves beta.
pub const TARGETS: &str = "targets:
  - id: t1
    provider: scim
    tenants: [acme]
    base_url: http://127.0.0.1:9/scim/v2
    auth: { kind: none }
    shards: 2
  - id: t2
    provider: scim
    tenants: [beta]
    base_url: http://127.0.0.1:9/scim/v2
    auth: { kind: none }
    shards: 1
";

/// Every queue of [`TARGETS`]: the shards and the interactive lanes.
pub const QUEUES: [&str; 5] = [
    "scimrelay.t1.0",
    "scimrelay.t1.1",
    "scimrelay.t2.0",
    "scimrelay.t1.now",
    "scimrelay.t2.now",
];

/// A running ingest.
pub struct Running {
    /// `http://…` or `https://…`.
    pub http: String,
    /// `http://…` or `https://…`.
    pub grpc: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Stops ingest and checks it exits cleanly.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("ingest stops within 20 s")
            .expect("join")
            .expect("clean exit");
    }
}

/// Starts ingest with `auth` and `tls` against `amqp_url`.
pub async fn start(
    amqp_url: String,
    max_body_bytes: usize,
    auth: Authenticator,
    tls: Option<ServerTls>,
) -> Running {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind http");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind grpc");
    let (h, g) = (
        http.local_addr().expect("addr"),
        grpc.local_addr().expect("addr"),
    );
    let scheme = if tls.is_some() { "https" } else { "http" };
    let config = IngestConfig {
        http_addr: h.to_string(),
        grpc_addr: g.to_string(),
        amqp_url,
        max_body_bytes,
        max_batch: 100,
        max_wait: std::time::Duration::from_secs(scimrelay_ingest::wait::DEFAULT_MAX_WAIT_SECS),
        targets: TargetsFile::parse(TARGETS).expect("targets"),
        auth,
        tls,
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(scimrelay_ingest::serve(
        config,
        http,
        grpc,
        shutdown.clone(),
    ));
    Running {
        http: format!("{scheme}://{h}"),
        grpc: format!("{scheme}://{g}"),
        shutdown,
        task,
    }
}

/// Waits until `/readyz` answers 200 through `client` (which needs no API key).
pub async fn wait_ready(client: &reqwest::Client, r: &Running) {
    let mut last = String::new();
    for _ in 0..100 {
        match client.get(format!("{}/readyz", r.http)).send().await {
            Ok(x) if x.status().is_success() => return,
            Ok(x) => last = x.status().to_string(),
            Err(e) => last = format!("{e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ingest never became ready: {last}");
}

/// A keys file and the authenticator reading it; keep the file alive for the test.
pub struct Keys {
    pub file: tempfile::NamedTempFile,
    pub auth: Authenticator,
}

/// One key of a keys file: `(id, key, rest of the YAML entry)`.
pub fn keys(entries: &[(&str, &str, &str)]) -> Keys {
    let mut text = String::from("keys:\n");
    for (id, key, rest) in entries {
        text.push_str(&format!(
            "  - id: {id}\n    sha256: {}\n{rest}",
            hash_key(key)
        ));
    }
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    std::io::Write::write_all(&mut file, text.as_bytes()).expect("write keys");
    let auth = Authenticator::from_file(file.path()).expect("valid keys file");
    Keys { file, auth }
}

/// A valid user event for `tenant`.
pub fn event(tenant: &str, user: &str) -> Value {
    json!({"kind": "user.upserted", "tenant": tenant, "version": 1,
           "user": {"id": user, "userName": format!("{user}@example.com")}})
}

/// A valid gRPC user event for `tenant`.
pub fn grpc_event(tenant: &str, user: &str) -> IdentityEvent {
    IdentityEvent {
        tenant: tenant.into(),
        version: 1,
        kind: EventKind::UserUpserted as i32,
        user: Some(UserState {
            id: user.into(),
            user_name: format!("{user}@example.com"),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Messages in every queue of [`TARGETS`], counted by the broker itself (a passive declare), so the
/// count is exact at once, unlike the management API's periodic statistics.
pub async fn published(amqp_url: &str) -> u32 {
    depths(amqp_url, &QUEUES).await.iter().sum()
}

/// Messages in each of `queues`, counted by the broker itself (a passive declare).
pub async fn depths(amqp_url: &str, queues: &[&str]) -> Vec<u32> {
    let conn = scimrelay_core::amqp::connect(amqp_url, "ingest-test-count")
        .await
        .expect("connect to count");
    let ch = conn.create_channel().await.expect("channel");
    let mut depths = Vec::new();
    for q in queues {
        let queue = ch
            .queue_declare(
                (*q).into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .unwrap_or_else(|e| panic!("queue {q} exists: {e}"));
        depths.push(queue.message_count());
    }
    scimrelay_core::amqp::close(&conn, "counted").await;
    depths
}

/// Asserts that nothing reached any shard queue.
pub async fn assert_nothing_published(amqp_url: &str) {
    assert_eq!(
        published(amqp_url).await,
        0,
        "a refused request published nothing"
    );
}
