//! Shared helpers of the status integration tests: a fresh database per test on either backend,
//! the service in-process on ephemeral ports over a private RabbitMQ vhost, and a confirmed
//! publisher that plays the connectors.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use prost::Message;
use tokio_util::sync::CancellationToken;

use scimrelay_core::amqp::{self, OUTCOMES_EXCHANGE, Publisher};
use scimrelay_core::auth::{Authenticator, hash_key};
use scimrelay_core::config::TargetsFile;
use scimrelay_core::tls::ServerTls;
use scimrelay_proto::v1::status_service_client::StatusServiceClient;
use scimrelay_proto::v1::{HeldEvent, Outcome, OutcomeResult, TargetReport};
use scimrelay_status::StatusConfig;
use scimrelay_tests::{TestPg, TestVhost};

/// Two targets, two shards each (queues `scimrelay.t1.0`, `scimrelay.t1.1`, …).
pub const TARGETS: &str = "targets:\n  - id: t1\n    provider: scim\n    tenants: [acme]\n    base_url: http://127.0.0.1:9/scim/v2\n    auth: { kind: none }\n    shards: 2\n    deprovision_guard: { max_share: 0.1, window_secs: 600, min_users: 10 }\n  - id: t2\n    provider: scim\n    tenants: [acme]\n    base_url: http://127.0.0.1:9/scim/v2\n    auth: { kind: none }\n    shards: 2\n    deprovision_guard: { enabled: false }\n";

/// A database that exists for one test: a temp SQLite file, or a fresh PostgreSQL database that
/// is dropped on drop.
pub struct TestDb {
    /// `SCIMRELAY_STATUS_DB` for the service.
    pub url: String,
    _pg: Option<TestPg>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// A SQLite file in a temp dir.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}", dir.path().join("status.db").display());
        TestDb {
            url,
            _pg: None,
            _dir: Some(dir),
        }
    }

    /// A new PostgreSQL database (see [`TestPg`]).
    pub async fn postgres() -> Self {
        let pg = TestPg::create().await;
        TestDb {
            url: pg.url.clone(),
            _pg: Some(pg),
            _dir: None,
        }
    }
}

/// Adds `authorization: Bearer <key>` to every call when it holds a key.
#[derive(Clone)]
pub struct Bearer(Option<tonic::metadata::AsciiMetadataValue>);

impl Bearer {
    /// Presents `key` (nothing for `None`).
    pub fn new(key: Option<&str>) -> Self {
        Bearer(key.map(|k| format!("Bearer {k}").parse().expect("an ASCII key")))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut r: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            r.metadata_mut().insert("authorization", v.clone());
        }
        Ok(r)
    }
}

/// A status client presenting a key, or none.
pub type Client = StatusServiceClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Bearer>,
>;

/// The API keys of the authentication tests, in a keys file that lives as long as this.
pub struct Keys {
    /// `read` for all tenants.
    pub reader: &'static str,
    /// `admin` for all tenants.
    pub admin: &'static str,
    /// `read` for tenant acme.
    pub acme: &'static str,
    /// `read` for tenants acme and beta.
    pub acme_beta: &'static str,
    /// A revoked `read` key.
    pub revoked: &'static str,
    /// `read` for all tenants, 1 request per second.
    pub slow: &'static str,
    /// `connector` for all tenants (the state of record, the guard).
    pub connector: &'static str,
    /// Checks them.
    pub auth: Authenticator,
    _dir: tempfile::TempDir,
}

impl Keys {
    /// Writes the keys file and loads it.
    pub fn new() -> Keys {
        let (reader, admin, acme, acme_beta, revoked, slow, connector) = (
            "srk_test-reader",
            "srk_test-admin",
            "srk_test-acme",
            "srk_test-acme-beta",
            "srk_test-revoked",
            "srk_test-slow",
            "srk_test-connector",
        );
        let entry = |id: &str, key: &str, rest: &str| {
            format!("  - id: {id}\n    sha256: {}\n{rest}", hash_key(key))
        };
        let text = [
            "keys:\n".to_owned(),
            entry(
                "reader",
                reader,
                "    tenants: [\"*\"]\n    scopes: [read]\n",
            ),
            entry("ops", admin, "    tenants: [\"*\"]\n    scopes: [admin]\n"),
            entry(
                "acme-reader",
                acme,
                "    tenants: [acme]\n    scopes: [read]\n",
            ),
            entry(
                "acme-beta-reader",
                acme_beta,
                "    tenants: [acme, beta]\n    scopes: [read]\n",
            ),
            entry(
                "old",
                revoked,
                "    tenants: [\"*\"]\n    scopes: [read]\n    revoked: true\n",
            ),
            entry(
                "slow",
                slow,
                "    tenants: [\"*\"]\n    scopes: [read]\n    rate_per_sec: 1\n",
            ),
            entry(
                "connectors",
                connector,
                "    tenants: [\"*\"]\n    scopes: [connector]\n",
            ),
        ]
        .concat();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys.yaml");
        std::fs::write(&path, text).expect("keys file");
        let auth = Authenticator::from_file(&path).expect("valid keys file");
        Keys {
            reader,
            admin,
            acme,
            acme_beta,
            revoked,
            slow,
            connector,
            auth,
            _dir: dir,
        }
    }
}

/// The status service running in-process, on its own runtime and thread so a test can crash it
/// (drop every task and connection at once, nothing acked) as well as stop it.
pub struct Running {
    /// gRPC endpoint (`http://…`; see [`Running::grpc_addr`] for TLS clients).
    pub grpc: String,
    /// gRPC address.
    pub grpc_addr: std::net::SocketAddr,
    /// The key [`Running::client`] presents.
    pub key: Option<String>,
    /// Health endpoint base.
    pub http: String,
    /// Cancels the service (graceful stop).
    pub shutdown: CancellationToken,
    crash: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Option<anyhow::Result<()>>>,
}

impl Running {
    /// Starts the service on `db` and `vhost` without authentication or TLS, and waits until it
    /// consumes.
    pub async fn start(db: &str, vhost: &TestVhost) -> Running {
        Self::start_secured(db, vhost, Authenticator::disabled(), None, None).await
    }

    /// Starts the service with `auth` and `tls`; [`Running::client`] presents `key`.
    pub async fn start_secured(
        db: &str,
        vhost: &TestVhost,
        auth: Authenticator,
        tls: Option<ServerTls>,
        key: Option<&str>,
    ) -> Running {
        let grpc = std::net::TcpListener::bind("127.0.0.1:0").expect("bind grpc");
        let http = std::net::TcpListener::bind("127.0.0.1:0").expect("bind http");
        let (g, h) = (
            grpc.local_addr().expect("addr"),
            http.local_addr().expect("addr"),
        );
        grpc.set_nonblocking(true).expect("nonblocking");
        http.set_nonblocking(true).expect("nonblocking");
        let targets = TargetsFile::parse(TARGETS).expect("targets");
        let config = StatusConfig {
            grpc_addr: g.to_string(),
            http_addr: h.to_string(),
            db_url: db.to_owned(),
            amqp_url: vhost.amqp_url(),
            retention_days: 30,
            shards: targets
                .targets
                .iter()
                .map(|t| (t.id.clone(), t.shards))
                .collect::<HashMap<_, _>>(),
            guards: scimrelay_status::grpc::Guards::from_targets(&targets),
            auth,
            tls,
        };
        let shutdown = CancellationToken::new();
        let (crash, crashed) = std::sync::mpsc::channel::<()>();
        let token = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let task = rt.spawn(async move {
                let grpc = tokio::net::TcpListener::from_std(grpc).expect("grpc listener");
                let http = tokio::net::TcpListener::from_std(http).expect("http listener");
                scimrelay_status::serve(config, grpc, http, token).await
            });
            loop {
                if crashed.try_recv().is_ok() {
                    rt.shutdown_background();
                    return None;
                }
                if task.is_finished() {
                    return Some(
                        rt.block_on(task)
                            .unwrap_or_else(|e| Err(anyhow::anyhow!("status task: {e}"))),
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        let r = Running {
            grpc: format!("http://{g}"),
            grpc_addr: g,
            key: key.map(str::to_owned),
            http: format!("http://{h}"),
            shutdown,
            crash,
            thread,
        };
        r.wait_ready().await;
        r
    }

    async fn wait_ready(&self) {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Ok(mut s)) = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(self.http.trim_start_matches("http://")),
            )
            .await
            {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let _ = s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await;
                let mut out = String::new();
                let _ = s.read_to_string(&mut out).await;
                if out.starts_with("HTTP/1.0 200") || out.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
            assert!(
                !self.thread.is_finished(),
                "status service exited before becoming ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("status service not ready within 30 s");
    }

    /// A gRPC client presenting the service's test key, if any.
    pub async fn client(&self) -> Client {
        self.client_as(self.key.as_deref()).await
    }

    /// A gRPC client presenting `key` (none for `None`).
    pub async fn client_as(&self, key: Option<&str>) -> Client {
        let channel = tonic::transport::Channel::from_shared(self.grpc.clone())
            .expect("endpoint")
            .connect()
            .await
            .expect("status gRPC");
        StatusServiceClient::with_interceptor(channel, Bearer::new(key))
    }

    /// Stops the service gracefully and waits for it.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let thread = self.thread;
        let result = tokio::task::spawn_blocking(move || thread.join())
            .await
            .expect("join")
            .expect("thread");
        result.expect("stopped, not crashed").expect("clean exit");
    }

    /// Kills the service like a crash: every task and connection dropped mid-work.
    pub async fn crash(self) {
        let _ = self.crash.send(());
        let thread = self.thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}

/// Plays the connectors: publishes with confirms on the test vhost.
pub struct Broker {
    /// The connection.
    pub conn: lapin::Connection,
    /// A confirmed publisher.
    pub publisher: Publisher,
}

impl Broker {
    /// Connects and declares the whole topology of [`TARGETS`] (so publishes are routed before
    /// the status service runs).
    pub async fn connect(vhost: &TestVhost) -> Broker {
        let conn = amqp::connect(&vhost.amqp_url(), "status-test")
            .await
            .expect("amqp");
        let targets = TargetsFile::parse(TARGETS).expect("targets");
        amqp::declare_all(&conn, targets.targets.iter())
            .await
            .expect("topology");
        let ch = conn.create_channel().await.expect("channel");
        scimrelay_status::reports::declare(&ch)
            .await
            .expect("reports topology");
        let publisher = Publisher::new(&conn).await.expect("publisher");
        Broker { conn, publisher }
    }

    /// Publishes outcomes as a connector does, pipelining confirms.
    pub async fn outcomes(&self, outcomes: &[Outcome]) {
        let mut pending = Vec::new();
        for o in outcomes {
            let result = OutcomeResult::try_from(o.result).unwrap_or(OutcomeResult::Unspecified);
            let key = amqp::outcome_routing_key(&o.provider, &o.target, result.name());
            let props = amqp::properties(scimrelay_proto::TYPE_OUTCOME, FieldTable::default());
            pending.push(
                self.publisher
                    .send(OUTCOMES_EXCHANGE, &key, &o.encode_to_vec(), props)
                    .await
                    .expect("send"),
            );
        }
        for p in pending {
            p.wait().await.expect("confirm");
        }
    }

    /// Publishes a held event as the mass-deprovisioning guard does.
    pub async fn held(&self, h: &HeldEvent) {
        let d = h.delivery.as_ref().expect("delivery");
        let key = format!("{}.{}.held", d.provider, d.target);
        let props = amqp::properties(scimrelay_status::TYPE_HELD_EVENT, FieldTable::default());
        self.publisher
            .publish(OUTCOMES_EXCHANGE, &key, &h.encode_to_vec(), props)
            .await
            .expect("held");
    }

    /// Publishes a connector report.
    pub async fn report(&self, r: &TargetReport) {
        let props = amqp::properties(scimrelay_status::TYPE_TARGET_REPORT, FieldTable::default());
        self.publisher
            .publish(
                scimrelay_status::REPORTS_EXCHANGE,
                &r.target,
                &r.encode_to_vec(),
                props,
            )
            .await
            .expect("report");
    }

    /// Parks a message as a connector does (routing key = target, original key in a header).
    pub async fn park(&self, target: &str, original_key: Option<&str>, body: &[u8]) {
        let mut headers = FieldTable::default();
        if let Some(k) = original_key {
            headers.insert(
                scimrelay_status::HEADER_ROUTING_KEY.into(),
                AMQPValue::LongString(k.into()),
            );
        }
        let props = amqp::properties(scimrelay_proto::TYPE_DELIVERY, headers);
        self.publisher
            .publish(amqp::DEAD_EXCHANGE, target, body, props)
            .await
            .expect("park");
    }
}

/// An outcome of `event` for `target` about `subject`.
pub fn outcome(
    event: &str,
    target: &str,
    subject: &str,
    result: OutcomeResult,
    finished_at_ms: i64,
) -> Outcome {
    Outcome {
        event_id: event.into(),
        target: target.into(),
        provider: "scim".into(),
        tenant: "acme".into(),
        subject_kind: scimrelay_proto::v1::SubjectKind::User as i32,
        subject_id: subject.into(),
        version: 1,
        kind: scimrelay_proto::v1::EventKind::UserUpserted as i32,
        operation: scimrelay_proto::v1::Operation::Created as i32,
        result: result as i32,
        attempt: 1,
        remote_id: format!("r-{subject}"),
        latency_ms: 10,
        accepted_at_ms: finished_at_ms - 10,
        finished_at_ms,
        ..Default::default()
    }
}

/// What a connector records after converging `subject` of tenant acme (`kind`) at `target` to
/// `version`: `remote_id` and `presence`.
pub fn applied(
    target: &str,
    kind: scimrelay_proto::v1::SubjectKind,
    subject: &str,
    version: u64,
    remote_id: &str,
    presence: scimrelay_proto::v1::Presence,
) -> scimrelay_proto::v1::Converged {
    scimrelay_proto::v1::Converged {
        key: Some(scimrelay_proto::v1::SubjectKey::new(
            target, "acme", kind, subject,
        )),
        succeeded: true,
        version,
        event_id: format!("{target}-{subject}-v{version}"),
        remote_id: remote_id.into(),
        presence: presence as i32,
        operation: "created".into(),
        ..Default::default()
    }
}

/// Users `{prefix}0`… present and active at `target`, recorded as a connector would.
pub async fn present_users(client: &mut Client, target: &str, prefix: &str, n: usize) {
    let items = (0..n)
        .map(|i| {
            applied(
                target,
                scimrelay_proto::v1::SubjectKind::User,
                &format!("{prefix}{i}"),
                1,
                &format!("r-{prefix}{i}"),
                scimrelay_proto::v1::Presence::PresentActive,
            )
        })
        .collect();
    client
        .record_converged(scimrelay_proto::v1::RecordConvergedRequest { items })
        .await
        .expect("RecordConverged");
}

/// Polls `f` until it returns `Some`, or panics naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs one async test body on SQLite and on PostgreSQL: `on_both!(name, …)` makes
/// `name::sqlite` and `name::postgres` from `async fn name(db: TestDb)`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => { $(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::common::TestDb::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::common::TestDb::postgres().await).await
            }
        }
    )* };
}
