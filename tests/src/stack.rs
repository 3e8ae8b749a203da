//! A whole scimrelay installation for one test (or the demo): simulator, status, connectors and
//! ingest as processes on ephemeral ports, on a private RabbitMQ vhost.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use scimrelay_proto::v1::status_service_client::StatusServiceClient;
use scimrelay_proto::v1::{GetEventRequest, ListOutcomesRequest, Outcome, RecordedOutcome};

use crate::broker::TestVhost;
use crate::procs::{Proc, free_port};

/// How long services may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// What to start.
pub struct StackOptions {
    /// Label for the vhost and log directory.
    pub label: String,
    /// Arguments of the simulator after `--listen` (e.g. `--tenant acme:scim:bearer=T`).
    pub sim_args: Vec<String>,
    /// The targets file; `{sim}` is replaced by the simulator's base URL (`http://127.0.0.1:PORT`).
    pub targets_yaml: String,
    /// Extra environment for every service (e.g. the variables holding target secrets).
    pub env: BTreeMap<String, String>,
    /// Connector binaries to start (e.g. `scim-connector`).
    pub connectors: Vec<String>,
    /// Where logs and the status database go; a temp dir when `None`.
    pub dir: Option<std::path::PathBuf>,
}

/// A running installation. Dropping it stops every process and deletes the vhost.
pub struct Stack {
    /// The simulator.
    pub sim: Proc,
    /// The simulator's base URL.
    pub sim_url: String,
    /// The status service.
    pub status: Proc,
    /// Status gRPC endpoint (`http://127.0.0.1:PORT`).
    pub status_grpc: String,
    /// Connector processes, in the order of [`StackOptions::connectors`].
    pub connectors: Vec<Proc>,
    /// Health address of each connector.
    pub connector_http: Vec<String>,
    /// Ingest.
    pub ingest: Proc,
    /// Ingest HTTP base URL.
    pub ingest_http: String,
    /// Ingest gRPC endpoint.
    pub ingest_grpc: String,
    /// Environment shared by the services (AMQP URL, config path, secrets).
    pub env: BTreeMap<String, String>,
    /// Log directory.
    pub dir: std::path::PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The private vhost (dropped last).
    pub vhost: TestVhost,
    http: reqwest::Client,
}

/// Waits until `url` answers 200.
pub async fn wait_ready(http: &reqwest::Client, url: &str, proc: &mut Proc) {
    let start = Instant::now();
    while start.elapsed() < READY_TIMEOUT {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        if let Some(status) = proc.try_wait() {
            panic!(
                "{} exited ({status}) before becoming ready:\n{}",
                proc.name,
                proc.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{} not ready at {url} within {READY_TIMEOUT:?}:\n{}",
        proc.name,
        proc.log()
    );
}

impl Stack {
    /// Starts everything and waits until each service is ready.
    pub async fn start(opts: StackOptions) -> Stack {
        let vhost = TestVhost::create(&opts.label);
        let (tmp, dir) = match &opts.dir {
            Some(d) => {
                std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
                (None, d.clone())
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix(&format!("scimrelay-{}-", opts.label))
                    .tempdir()
                    .unwrap_or_else(|e| panic!("tempdir: {e}"));
                let p = t.path().to_path_buf();
                if std::env::var_os("SCIMRELAY_TEST_KEEP_LOGS").is_some() {
                    eprintln!("logs kept in {}", p.display());
                    let _ = t.keep();
                    (None, p)
                } else {
                    (Some(t), p)
                }
            }
        };
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();

        let mut sim_args = vec!["--listen".to_owned(), "127.0.0.1:0".to_owned()];
        sim_args.extend(opts.sim_args.iter().cloned());
        let mut sim = Proc::start("sim", "scimrelay-sim", &BTreeMap::new(), &sim_args, &dir);
        let line = sim
            .wait_for_log("listening on http://", READY_TIMEOUT)
            .unwrap_or_else(|| panic!("simulator did not report its address:\n{}", sim.log()));
        let sim_url = line
            .split("listening on ")
            .nth(1)
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| panic!("bad simulator line {line:?}"));

        let targets_path = dir.join("targets.yaml");
        std::fs::write(&targets_path, opts.targets_yaml.replace("{sim}", &sim_url))
            .unwrap_or_else(|e| panic!("targets file: {e}"));
        let mut env = opts.env.clone();
        env.insert("SCIMRELAY_AMQP_URL".into(), vhost.amqp_url());
        env.insert(
            "SCIMRELAY_CONFIG".into(),
            targets_path.to_string_lossy().into_owned(),
        );

        let status_grpc_port = free_port();
        let status_http_port = free_port();
        let mut status_env = env.clone();
        status_env.insert(
            "SCIMRELAY_STATUS_GRPC_ADDR".into(),
            format!("127.0.0.1:{status_grpc_port}"),
        );
        status_env.insert(
            "SCIMRELAY_STATUS_HTTP_ADDR".into(),
            format!("127.0.0.1:{status_http_port}"),
        );
        status_env.insert(
            "SCIMRELAY_STATUS_DB".into(),
            format!("sqlite://{}", dir.join("status.db").display()),
        );
        let mut status = Proc::start("status", "scimrelay-status", &status_env, &[], &dir);
        // Connectors (also those a test starts later from `env`) read the ledger from status.
        env.insert(
            "SCIMRELAY_STATUS_URL".into(),
            format!("http://127.0.0.1:{status_grpc_port}"),
        );

        let mut connectors = Vec::new();
        let mut connector_http = Vec::new();
        for (i, bin) in opts.connectors.iter().enumerate() {
            let port = free_port();
            let mut e = env.clone();
            e.insert(
                "SCIMRELAY_CONNECTOR_HTTP_ADDR".into(),
                format!("127.0.0.1:{port}"),
            );
            connectors.push(Proc::start(&format!("{bin}-{i}"), bin, &e, &[], &dir));
            connector_http.push(format!("127.0.0.1:{port}"));
        }

        let ingest_http_port = free_port();
        let ingest_grpc_port = free_port();
        let mut ingest_env = env.clone();
        ingest_env.insert(
            "SCIMRELAY_INGEST_HTTP_ADDR".into(),
            format!("127.0.0.1:{ingest_http_port}"),
        );
        ingest_env.insert(
            "SCIMRELAY_INGEST_GRPC_ADDR".into(),
            format!("127.0.0.1:{ingest_grpc_port}"),
        );
        let mut ingest = Proc::start("ingest", "scimrelay-ingest", &ingest_env, &[], &dir);

        wait_ready(
            &http,
            &format!("http://127.0.0.1:{status_http_port}/readyz"),
            &mut status,
        )
        .await;
        for (proc, addr) in connectors.iter_mut().zip(&connector_http) {
            wait_ready(&http, &format!("http://{addr}/readyz"), proc).await;
        }
        wait_ready(
            &http,
            &format!("http://127.0.0.1:{ingest_http_port}/readyz"),
            &mut ingest,
        )
        .await;

        Stack {
            sim,
            sim_url,
            status,
            status_grpc: format!("http://127.0.0.1:{status_grpc_port}"),
            connectors,
            connector_http,
            ingest,
            ingest_http: format!("http://127.0.0.1:{ingest_http_port}"),
            ingest_grpc: format!("http://127.0.0.1:{ingest_grpc_port}"),
            env,
            dir,
            _tmp: tmp,
            vhost,
            http,
        }
    }

    /// POSTs a body to ingest's `/v1/events`; returns the status and the JSON answer.
    pub async fn post_events(&self, body: &Value) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/v1/events", self.ingest_http))
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/events: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Accepted event ids of a 202 answer.
    pub fn accepted_ids(answer: &Value) -> Vec<String> {
        answer["accepted"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A status gRPC client.
    pub async fn status_client(&self) -> StatusServiceClient<tonic::transport::Channel> {
        StatusServiceClient::connect(self.status_grpc.clone())
            .await
            .unwrap_or_else(|e| panic!("status gRPC at {}: {e}", self.status_grpc))
    }

    /// Waits until an event's recorded history (duplicates included) has `n` entries.
    pub async fn wait_history(&self, id: &str, n: usize, limit: Duration) -> Vec<RecordedOutcome> {
        let mut client = self.status_client().await;
        let start = Instant::now();
        loop {
            let r = client
                .get_event(GetEventRequest {
                    event_id: id.to_owned(),
                })
                .await
                .unwrap_or_else(|e| panic!("GetEvent {id}: {e}"))
                .into_inner();
            if r.history.len() >= n {
                return r.history;
            }
            assert!(
                start.elapsed() < limit,
                "{id}: {} of {n} outcomes after {limit:?}",
                r.history.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every event has `per_event` terminal outcomes recorded in the status service;
    /// returns them. Panics with what is missing at the deadline.
    pub async fn wait_outcomes(
        &self,
        ids: &[String],
        per_event: usize,
        limit: Duration,
    ) -> HashMap<String, Vec<Outcome>> {
        // Pages through ListOutcomes from the start (cheap, one call per 1,000 outcomes) and
        // keeps the counted terminal outcomes of the events asked about.
        let mut client = self.status_client().await;
        let start = Instant::now();
        let wanted: std::collections::HashSet<&str> = ids.iter().map(String::as_str).collect();
        let mut done: HashMap<String, Vec<Outcome>> = HashMap::new();
        let mut seen = std::collections::HashSet::new();
        let mut token = String::new();
        loop {
            let page = client
                .list_outcomes(ListOutcomesRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                    ..Default::default()
                })
                .await
                .unwrap_or_else(|e| panic!("ListOutcomes: {e}"))
                .into_inner();
            for r in page.outcomes {
                // The last page is read again on the next round: count each record once.
                if !r.terminal || !seen.insert(r.seq) {
                    continue;
                }
                if let Some(o) = r.outcome.filter(|o| wanted.contains(o.event_id.as_str())) {
                    done.entry(o.event_id.clone()).or_default().push(o);
                }
            }
            if !page.next_page_token.is_empty() {
                token = page.next_page_token;
                continue;
            }
            let missing: Vec<&String> = ids
                .iter()
                .filter(|id| done.get(*id).is_none_or(|o| o.len() < per_event))
                .collect();
            if missing.is_empty() {
                return done;
            }
            if start.elapsed() > limit {
                panic!(
                    "{} of {} events have no outcome after {limit:?}, e.g. {:?}",
                    missing.len(),
                    ids.len(),
                    &missing[..missing.len().min(5)]
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Replaces a simulator tenant's faults (admin API; `{}` turns them all off).
    pub async fn set_faults(&self, tenant: &str, faults: &Value) {
        let url = format!("{}/_admin/tenants/{tenant}/faults", self.sim_url);
        let r = self
            .http
            .put(&url)
            .json(faults)
            .send()
            .await
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"));
        assert!(r.status().is_success(), "PUT {url}: {}", r.status());
    }

    /// A simulator tenant's request statistics (admin API).
    pub async fn sim_stats(&self, tenant: &str) -> Value {
        let url = format!("{}/_admin/tenants/{tenant}/stats", self.sim_url);
        self.http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// The simulator's users of a tenant (admin API).
    pub async fn sim_users(&self, tenant: &str) -> Vec<Value> {
        self.sim_admin(tenant, "users").await
    }

    /// The simulator's groups of a tenant (admin API).
    pub async fn sim_groups(&self, tenant: &str) -> Vec<Value> {
        self.sim_admin(tenant, "groups").await
    }

    async fn sim_admin(&self, tenant: &str, what: &str) -> Vec<Value> {
        let url = format!("{}/_admin/tenants/{tenant}/{what}", self.sim_url);
        let v: Value = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        v.as_array().cloned().unwrap_or_default()
    }

    /// The plain HTTP client of the harness.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }
}
