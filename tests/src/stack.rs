//! A whole scimrelay installation for one test (or the demo): simulator, status, connectors and
//! ingest as processes on ephemeral ports, on a private RabbitMQ vhost.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use serde_json::Value;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use scimrelay_proto::v1::status_service_client::StatusServiceClient;
use scimrelay_proto::v1::{GetEventRequest, ListOutcomesRequest, Outcome, RecordedOutcome};

use crate::broker::{Broker, TestVhost};
use crate::pki::Pki;
use crate::procs::{Proc, free_port};

pub use scimrelay_proto::client::{BearerAuth, StatusClient};

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
    /// Extra environment for every service (e.g. the variables holding target secrets;
    /// `SCIMRELAY_STATUS_DB` puts the status service on that database instead of SQLite).
    pub env: BTreeMap<String, String>,
    /// Connector binaries to start (e.g. `scim-connector`).
    pub connectors: Vec<String>,
    /// Where logs and the status database go; a temp dir when `None`.
    pub dir: Option<std::path::PathBuf>,
    /// Serve ingest (HTTP and gRPC) and status over mutual TLS with a throwaway PKI; the
    /// harness, scimrelayctl and the connectors present client certificates of its CA.
    pub tls: bool,
    /// The RabbitMQ node (the machine's by default; a [`crate::node::BrokerNode`] of the
    /// test's own for node-wide settings).
    pub broker: Broker,
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            label: "stack".into(),
            sim_args: Vec::new(),
            targets_yaml: "targets: []\n".into(),
            env: BTreeMap::new(),
            connectors: Vec::new(),
            dir: None,
            tls: false,
            broker: Broker::default(),
        }
    }
}

/// A running installation. Dropping it stops every process and deletes the vhost.
pub struct Stack {
    /// The simulator.
    pub sim: Proc,
    /// The simulator's base URL.
    pub sim_url: String,
    /// The status service.
    pub status: Proc,
    /// The status service's environment, for [`Stack::restart_status`].
    status_env: BTreeMap<String, String>,
    /// The status service's admin HTTP address (`host:port`: health, `/metrics`).
    pub status_http: String,
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
    /// The harness's API key (scopes send + admin, every tenant). Ingest and status always run
    /// with a keys file: every end-to-end test goes through authentication.
    pub api_key: String,
    /// The PKI when the stack runs over TLS.
    pub pki: Option<Pki>,
    http: reqwest::Client,
}

/// The harness's HTTP client: the API key on every request, and the CA and client certificate
/// of the PKI when there is one.
fn harness_http(api_key: &str, pki: Option<&Pki>) -> reqwest::Client {
    let mut value = reqwest::header::HeaderValue::try_from(format!("Bearer {api_key}"))
        .unwrap_or_else(|e| panic!("key as header: {e}"));
    value.set_sensitive(true);
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .default_headers(headers);
    if let Some(p) = pki {
        let ca = reqwest::Certificate::from_pem_bundle(p.ca.cert.as_bytes())
            .unwrap_or_else(|e| panic!("CA: {e}"));
        let id = reqwest::Identity::from_pem(&p.client.bundle())
            .unwrap_or_else(|e| panic!("client identity: {e}"));
        builder = builder.tls_certs_merge(ca).identity(id);
    }
    builder
        .build()
        .unwrap_or_else(|e| panic!("harness HTTP client: {e}"))
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
        let vhost = TestVhost::create_on(&opts.label, &opts.broker);
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
        // Authentication is always on: one key for the harness (and scimrelayctl), one
        // connector key for the connectors' status calls (the state of record, the guard).
        let api_key = scimrelay_core::auth::new_key();
        let connector_key = scimrelay_core::auth::new_key();
        let keys_path = dir.join("keys.yaml");
        let entry = |id: &str, key: &str, scopes: &str| {
            format!(
                "  - id: {id}\n    sha256: {}\n    tenants: [\"*\"]\n    scopes: [{scopes}]\n    rate_per_sec: 1000000\n",
                scimrelay_core::auth::hash_key(key)
            )
        };
        std::fs::write(
            &keys_path,
            format!(
                "keys:\n{}{}",
                entry("harness", &api_key, "send, admin"),
                entry("connectors", &connector_key, "connector")
            ),
        )
        .unwrap_or_else(|e| panic!("keys file: {e}"));
        std::fs::write(dir.join("harness.key"), &api_key)
            .unwrap_or_else(|e| panic!("key file: {e}"));
        let pki = opts.tls.then(Pki::new);
        let file = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("{name}: {e}"));
            p.to_string_lossy().into_owned()
        };
        let mut server_env = BTreeMap::from([(
            "SCIMRELAY_API_KEYS_FILE".to_owned(),
            keys_path.to_string_lossy().into_owned(),
        )]);
        let mut client_env =
            BTreeMap::from([("SCIMRELAY_STATUS_API_KEY".to_owned(), connector_key.clone())]);
        if let Some(p) = &pki {
            let ca = file("ca.pem", &p.ca.cert);
            server_env.insert(
                "SCIMRELAY_TLS_CERT_FILE".into(),
                file("server.pem", &p.server.cert),
            );
            server_env.insert(
                "SCIMRELAY_TLS_KEY_FILE".into(),
                file("server.key", &p.server.key),
            );
            server_env.insert("SCIMRELAY_TLS_CLIENT_CA_FILE".into(), ca.clone());
            client_env.insert("SCIMRELAY_STATUS_CA_FILE".into(), ca);
            client_env.insert(
                "SCIMRELAY_STATUS_CLIENT_CERT_FILE".into(),
                file("client.pem", &p.client.cert),
            );
            client_env.insert(
                "SCIMRELAY_STATUS_CLIENT_KEY_FILE".into(),
                file("client.key", &p.client.key),
            );
        }
        let scheme = if pki.is_some() { "https" } else { "http" };
        let http = harness_http(&api_key, pki.as_ref());

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
        status_env.extend(server_env.clone());
        status_env.insert(
            "SCIMRELAY_STATUS_GRPC_ADDR".into(),
            format!("127.0.0.1:{status_grpc_port}"),
        );
        status_env.insert(
            "SCIMRELAY_STATUS_HTTP_ADDR".into(),
            format!("127.0.0.1:{status_http_port}"),
        );
        // SQLite in the stack's directory unless the test's environment names a database.
        status_env
            .entry("SCIMRELAY_STATUS_DB".into())
            .or_insert_with(|| format!("sqlite://{}", dir.join("status.db").display()));
        let mut status = Proc::start("status", "scimrelay-status", &status_env, &[], &dir);
        // Connectors (also those a test starts later from `env`) use the state of record at status.
        env.insert(
            "SCIMRELAY_STATUS_URL".into(),
            format!("{scheme}://127.0.0.1:{status_grpc_port}"),
        );
        env.extend(client_env);

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
        ingest_env.extend(server_env);
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
            &format!("{scheme}://127.0.0.1:{ingest_http_port}/readyz"),
            &mut ingest,
        )
        .await;

        Stack {
            sim,
            sim_url,
            status,
            status_env,
            status_http: format!("127.0.0.1:{status_http_port}"),
            status_grpc: format!("{scheme}://127.0.0.1:{status_grpc_port}"),
            connectors,
            connector_http,
            ingest,
            ingest_http: format!("{scheme}://127.0.0.1:{ingest_http_port}"),
            ingest_grpc: format!("{scheme}://127.0.0.1:{ingest_grpc_port}"),
            env,
            dir,
            _tmp: tmp,
            vhost,
            api_key,
            pki,
            http,
        }
    }

    /// Stops the status service (SIGTERM, then SIGKILL after 10 s) and starts it again with
    /// the same ports and database; returns once it is ready, with the moment it was started.
    /// `between` runs while it is down.
    pub async fn restart_status<F: std::future::Future<Output = ()>>(
        &mut self,
        between: F,
    ) -> Instant {
        self.status.terminate(Duration::from_secs(10));
        between.await;
        let started = Instant::now();
        self.status = Proc::start(
            "status",
            "scimrelay-status",
            &self.status_env,
            &[],
            &self.dir,
        );
        wait_ready(
            &self.http,
            &format!("http://{}/readyz", self.status_http),
            &mut self.status,
        )
        .await;
        started
    }

    /// Stops the status service (SIGTERM, then SIGKILL after 10 s); [`Stack::start_status`]
    /// brings it back on the same ports and database.
    pub fn stop_status(&mut self) {
        self.status.terminate(Duration::from_secs(10));
    }

    /// Starts the status service again after [`Stack::stop_status`] and waits until it is
    /// ready.
    pub async fn start_status(&mut self) {
        self.status = Proc::start(
            "status",
            "scimrelay-status",
            &self.status_env,
            &[],
            &self.dir,
        );
        wait_ready(
            &self.http,
            &format!("http://{}/readyz", self.status_http),
            &mut self.status,
        )
        .await;
    }

    /// Stops connector `i` (SIGTERM: it returns what it holds) and starts the same binary
    /// again on a new health port, as `label`; waits until it is ready unless the status
    /// service is down (its readiness is the broker's, so it is ready regardless).
    pub async fn restart_connector(&mut self, i: usize, label: &str) {
        let bin = self.connectors[i].bin.clone();
        self.connectors[i].terminate(Duration::from_secs(15));
        let port = free_port();
        let mut env = self.env.clone();
        env.insert(
            "SCIMRELAY_CONNECTOR_HTTP_ADDR".into(),
            format!("127.0.0.1:{port}"),
        );
        self.connectors[i] = Proc::start(label, &bin, &env, &[], &self.dir);
        self.connector_http[i] = format!("127.0.0.1:{port}");
        let addr = self.connector_http[i].clone();
        wait_ready(
            &self.http,
            &format!("http://{addr}/readyz"),
            &mut self.connectors[i],
        )
        .await;
    }

    /// Adds an API key to the keys file the services read (they pick it up within the keys
    /// file's reload interval, which this waits out); returns the key.
    pub async fn add_key(&self, id: &str, tenants: &[&str], scopes: &[&str]) -> String {
        let key = scimrelay_core::auth::new_key();
        let path = self.dir.join("keys.yaml");
        let mut text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("keys file: {e}"));
        text.push_str(&format!(
            "  - id: {id}\n    sha256: {}\n    tenants: [{}]\n    scopes: [{}]\n    rate_per_sec: 1000000\n",
            scimrelay_core::auth::hash_key(&key),
            tenants
                .iter()
                .map(|t| format!("{t:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            scopes.join(", ")
        ));
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("keys file: {e}"));
        tokio::time::sleep(scimrelay_core::auth::RELOAD_INTERVAL * 2).await;
        key
    }

    /// Posts events to ingest's HTTP API with `key` instead of the harness's; returns the
    /// status code and the JSON answer.
    pub async fn post_events_as(&self, key: &str, body: &Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!("{}/v1/events", self.ingest_http))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST /v1/events: {e}"));
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// `authorization` metadata for gRPC calls made outside [`Stack::status_client`].
    pub fn bearer(&self) -> BearerAuth {
        BearerAuth::new(Some(&self.api_key)).unwrap_or_else(|e| panic!("harness key: {e}"))
    }

    /// A gRPC channel to `url` (TLS with the client certificate when the stack runs TLS).
    pub async fn channel(&self, url: &str) -> Channel {
        let mut endpoint =
            Endpoint::from_shared(url.to_owned()).unwrap_or_else(|e| panic!("{url}: {e}"));
        if let Some(p) = &self.pki {
            endpoint = endpoint
                .tls_config(
                    ClientTlsConfig::new()
                        .ca_certificate(Certificate::from_pem(&p.ca.cert))
                        .identity(Identity::from_pem(&p.client.cert, &p.client.key)),
                )
                .unwrap_or_else(|e| panic!("TLS for {url}: {e}"));
        }
        endpoint
            .connect()
            .await
            .unwrap_or_else(|e| panic!("gRPC at {url}: {e}"))
    }

    /// Global arguments that point scimrelayctl at this stack with the harness's key (and the
    /// client certificate when the stack runs TLS).
    pub fn ctl_args(&self) -> Vec<String> {
        let mut args = vec![
            "--ingest".to_owned(),
            self.ingest_http.clone(),
            "--status".to_owned(),
            self.status_grpc.clone(),
            "--api-key-file".to_owned(),
            self.dir.join("harness.key").to_string_lossy().into_owned(),
        ];
        if self.pki.is_some() {
            for (flag, name) in [
                ("--ca-file", "ca.pem"),
                ("--client-cert", "client.pem"),
                ("--client-key", "client.key"),
            ] {
                args.push(flag.to_owned());
                args.push(self.dir.join(name).to_string_lossy().into_owned());
            }
        }
        args
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

    /// A status gRPC client with the harness's key.
    pub async fn status_client(&self) -> StatusClient {
        StatusServiceClient::with_interceptor(self.channel(&self.status_grpc).await, self.bearer())
    }

    /// Waits until an event's recorded history (duplicates included) has `n` entries.
    pub async fn wait_history(&self, id: &str, n: usize, limit: Duration) -> Vec<RecordedOutcome> {
        let mut client = self.status_client().await;
        let start = Instant::now();
        loop {
            let r = client
                .get_event(GetEventRequest {
                    event_id: id.to_owned(),
                    ..Default::default()
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

    /// Polls the simulator tenant's users and groups until `check` finds no problem or `limit`
    /// passes; returns them and the last problems. A group whose members arrived after it
    /// converged without them is completed by the reference sweep after its own outcome
    /// (docs/design.md, "References"): the target holds the final state within a few sweeps.
    pub async fn settled(
        &self,
        tenant: &str,
        limit: Duration,
        check: impl Fn(&[Value], &[Value]) -> Vec<String>,
    ) -> (Vec<Value>, Vec<Value>, Vec<String>) {
        let began = Instant::now();
        loop {
            let users = self.sim_users(tenant).await;
            let groups = self.sim_groups(tenant).await;
            let problems = check(&users, &groups);
            if problems.is_empty() || began.elapsed() > limit {
                return (users, groups, problems);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
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

    /// Scrapes a service's Prometheus `/metrics` at `addr` (`host:port`) into
    /// `series → value`, a series written as exposed (`name{labels}`).
    pub async fn metrics(&self, addr: &str) -> Metrics {
        let url = format!("http://{addr}/metrics");
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert!(r.status().is_success(), "GET {url}: {}", r.status());
        Metrics::parse(&r.text().await.unwrap_or_else(|e| panic!("GET {url}: {e}")))
    }
}

/// One scrape of a Prometheus text exposition.
#[derive(Debug, Clone, Default)]
pub struct Metrics(pub std::collections::BTreeMap<String, f64>);

impl Metrics {
    /// Parses the text format (comments and blank lines skipped).
    pub fn parse(text: &str) -> Metrics {
        Metrics(
            text.lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .filter_map(|l| {
                    let (k, v) = l.rsplit_once(' ')?;
                    Some((k.to_owned(), v.parse().ok()?))
                })
                .collect(),
        )
    }

    /// The value of one series, 0 when absent.
    pub fn value(&self, series: &str) -> f64 {
        self.0.get(series).copied().unwrap_or(0.0)
    }

    /// Whether a series starting with `prefix` exists.
    pub fn has(&self, prefix: &str) -> bool {
        self.0.keys().any(|k| k.starts_with(prefix))
    }

    /// The sum of every series starting with `prefix`.
    pub fn sum(&self, prefix: &str) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v)
            .sum()
    }
}
