//! A harness for provider tests: converges events at a target exactly as the connector runtime
//! does (same `Exec` chokepoint, limits, breaker and plan mode; a state of record kept in
//! memory: each subject's record, the users' links, a failure invalidating a group's applied
//! members), without RabbitMQ or the status service. Provider crates use it with an in-process
//! simulator to prove each quirk quickly; the end-to-end tests under `tests/` prove the same
//! through the real services.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use scimrelay_connector::decide::presence_after;
use scimrelay_connector::exec::{Exec, ExecStats, TargetIo};
use scimrelay_connector::record::{Linked, MemoryDirectory, Record};
use scimrelay_connector::{ConvergeError, ConvergeInput, Converged, Provider};
use scimrelay_core::config::{ProviderKind, TargetConfig, TargetMode, TargetsFile};
use scimrelay_proto::v1::{IdentityEvent, PlannedRequest};
use scimrelay_scim::Auth;

/// One target driven directly by a test.
pub struct Harness {
    /// The target's configuration.
    pub target: TargetConfig,
    /// Each subject's record (by `subject_ref`), as the state of record would hold it; shared
    /// by [`Harness::replica`]s, as the status service is by connector replicas.
    records: Arc<Mutex<HashMap<String, Record>>>,
    /// The users' links, for group members.
    pub directory: Arc<MemoryDirectory>,
    /// The credentials the target's client sends (a replica builds its own client with them).
    auth: Auth,
    io: Arc<TargetIo>,
    provider: Arc<dyn Provider>,
}

/// The target's outbound side as the connector builds it ([`TargetIo::new`]).
fn target_io(
    target: &TargetConfig,
    auth: &Auth,
    provider: &dyn Provider,
    replicas: u32,
) -> TargetIo {
    TargetIo::new(
        target,
        auth.clone(),
        &provider.defaults(),
        replicas,
        scimrelay_connector::exec::MAX_HOLD,
        "scimrelay-test".into(),
    )
    .unwrap_or_else(|e| panic!("client: {e}"))
}

/// What one convergence did.
#[derive(Debug)]
pub struct Run {
    /// The provider's answer.
    pub result: Result<Converged, ConvergeError>,
    /// The requests' statistics.
    pub stats: ExecStats,
    /// The writes a plan recorded (plan mode only).
    pub planned: Vec<PlannedRequest>,
    /// The references the converge left pending (`None`: it resolved none).
    pub pending: Option<Vec<scimrelay_proto::v1::PendingReference>>,
}

impl Harness {
    /// A harness for the first target of `targets_yaml`, authenticating with `auth`; the
    /// targets may name the provider's own kind besides the shipped ones, and its options are
    /// parsed as the connector does at start (a refusal panics).
    pub fn new(provider: Arc<dyn Provider>, targets_yaml: &str, auth: Auth) -> Self {
        let mut deployed = ProviderKind::SHIPPED.to_vec();
        deployed.push(provider.kind());
        let file = TargetsFile::parse_for(targets_yaml, &deployed)
            .unwrap_or_else(|e| panic!("targets: {e}"));
        let target = file.targets[0].clone();
        // The connector's start-up check of the options (its target checks stay with the
        // binary tests, so a test may still drive a target the connector would refuse).
        if let Some((key, why)) = provider.check_options(&target) {
            panic!("targets[0].{key} {why}");
        }
        Harness {
            io: Arc::new(target_io(&target, &auth, provider.as_ref(), 1)),
            target,
            auth,
            records: Arc::default(),
            directory: Arc::default(),
            provider,
        }
    }

    /// Converges one event; records the result (not planned) like the runtime.
    pub async fn run(&self, event: &IdentityEvent) -> Run {
        self.converge(event).await
    }

    /// Another replica of the connector on the same target: its own `provider` instance (so
    /// its own memory, if the profile kept any) and its own limits, the same state of record.
    pub fn replica(&self, provider: Arc<dyn Provider>) -> Harness {
        Harness {
            io: Arc::new(target_io(
                &self.target,
                &self.auth,
                provider.as_ref(),
                self.io.replicas,
            )),
            target: self.target.clone(),
            auth: self.auth.clone(),
            records: self.records.clone(),
            directory: self.directory.clone(),
            provider,
        }
    }

    /// The harness as one of `n` replicas of the connector (the ceiling and the provider's own
    /// budgets divided by `n`, as the service divides them).
    pub fn with_replicas(mut self, n: u32) -> Self {
        self.io = Arc::new(target_io(
            &self.target,
            &self.auth,
            self.provider.as_ref(),
            n,
        ));
        self
    }

    /// The record of `event`'s subject, as the harness holds it.
    pub fn record(&self, event: &IdentityEvent) -> Record {
        self.records
            .lock()
            .ok()
            .and_then(|r| r.get(&event.subject_ref()).cloned())
            .unwrap_or_default()
    }

    async fn converge(&self, event: &IdentityEvent) -> Run {
        let plan = event.plan || self.target.mode == TargetMode::Plan;
        let record = self.record(event);
        let exec = Exec::new(self.io.clone(), self.provider.clone(), plan)
            .in_lane(scimrelay_connector::limits::Lane::of(event));
        let result = self
            .provider
            .converge(ConvergeInput {
                target: &self.target,
                event,
                record: &record,
                directory: self.directory.as_ref(),
                exec: &exec,
            })
            .await;
        if !plan {
            self.remember(event, record, &result);
        }
        Run {
            result,
            stats: exec.stats(),
            planned: exec.planned(),
            pending: exec.pending_references(),
        }
    }

    /// What the runtime records after a converge: what was applied, or (after a failure) that
    /// the applied member set is no longer known.
    fn remember(
        &self,
        event: &IdentityEvent,
        mut record: Record,
        result: &Result<Converged, ConvergeError>,
    ) {
        match result {
            Ok(done) => {
                record = Record {
                    remote_id: done.remote_id.clone(),
                    applied_version: event.version,
                    presence: presence_after(event, done),
                    members: done.members.as_ref().map(|m| m.iter().cloned().collect()),
                    applied: Some(event.clone()),
                };
                if event.kind().is_user() {
                    let linked = if done.remote_id.is_empty() {
                        Linked::Gone
                    } else {
                        Linked::At(done.remote_id.clone())
                    };
                    self.directory.set(event.subject_id(), linked);
                }
            }
            Err(_) => record.members = None,
        }
        if let Ok(mut r) = self.records.lock() {
            r.insert(event.subject_ref(), record);
        }
    }

    /// Converges and panics unless it succeeded.
    pub async fn ok(&self, event: &IdentityEvent) -> Converged {
        let run = self.run(event).await;
        run.result
            .unwrap_or_else(|e| panic!("{} failed: {e:?}", event.id))
    }
}

/// Runs a connector binary with `--help`, checks it exits 0 and its help names every one of
/// `needles` plus the environment every connector reads; returns the help text.
pub fn connector_help(bin: &str, needles: &[&str]) -> String {
    let out = std::process::Command::new(bin)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{bin} --help: {e}"));
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let common = [
        "SCIMRELAY_CONFIG",
        "SCIMRELAY_AMQP_URL",
        "SCIMRELAY_CONNECTOR_HTTP_ADDR",
        "SCIMRELAY_DRAIN_TIMEOUT_SECS",
        "SCIMRELAY_CONNECTOR_REPLICAS",
        "RUST_LOG",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ];
    for needle in common.iter().chain(needles) {
        assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
    }
    help
}

/// Runs a connector binary with only `targets` (YAML, written to a temp file) and `env`, expects
/// it to stop at start with exit 2 and one line on stderr; returns that line and the path the
/// targets file had (errors name it).
pub fn connector_refuses(bin: &str, targets: &str, env: &[(&str, &str)]) -> (String, String) {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let path = std::env::temp_dir().join(format!(
        "scimrelay-refused-targets-{}-{}.yaml",
        std::process::id(),
        SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&path, targets).expect("write targets");
    let out = std::process::Command::new(bin)
        .env_clear()
        .env("SCIMRELAY_CONFIG", &path)
        .envs(env.iter().copied())
        .output();
    let _ = std::fs::remove_file(&path);
    let out = out.unwrap_or_else(|e| panic!("{bin}: {e}"));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    (stderr, path.display().to_string())
}

/// Runs a connector binary once per case with a single target of `provider` at `base_url`
/// whose `options:` is the case's YAML; each must stop it at start naming the case's key (in
/// full, `targets[0].options.<key>`) and containing the case's word of the reason.
pub fn connector_refuses_options(
    bin: &str,
    provider: &str,
    base_url: &str,
    cases: &[(&str, &str, &str)],
) {
    for &(options, key, word) in cases {
        let targets = format!(
            "targets:\n  - id: t\n    provider: {provider}\n    base_url: {base_url}\n    \
             auth: {{kind: none}}\n    options: {options}\n"
        );
        let (stderr, _) = connector_refuses(bin, &targets, &[]);
        assert!(
            stderr.contains(key) && stderr.contains(word),
            "{options}: {stderr}"
        );
    }
}

/// The in-process simulator, for provider tests.
pub mod sim {
    use serde_json::Value;

    /// Starts the simulator with the YAML configuration `yaml` on an ephemeral port; returns
    /// its origin (`http://127.0.0.1:PORT`). It serves until the test's runtime ends.
    pub async fn start(yaml: &str) -> String {
        let config = scimrelay_sim::SimConfig::from_yaml_str(yaml)
            .unwrap_or_else(|e| panic!("simulator configuration: {e}"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("address: {e}"));
        tokio::spawn(scimrelay_sim::serve(
            config,
            listener,
            std::future::pending(),
        ));
        format!("http://{addr}")
    }

    /// `GET /_admin/tenants/{tenant}/{what}` (`users`, `groups`, `stats`…) as JSON.
    pub async fn admin(origin: &str, tenant: &str, what: &str) -> Value {
        reqwest::get(format!("{origin}/_admin/tenants/{tenant}/{what}"))
            .await
            .unwrap_or_else(|e| panic!("admin {what}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("admin {what} JSON: {e}"))
    }

    /// Requests of `stats` (an admin `stats` answer) with `method` whose path template ends
    /// with `path` (`""` for every path).
    pub fn requests(stats: &Value, method: &str, path: &str) -> u64 {
        stats["requests"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|r| {
                        r["method"] == method
                            && r["path"].as_str().is_some_and(|p| p.ends_with(path))
                    })
                    .map(|r| r["count"].as_u64().unwrap_or(0))
                    .sum()
            })
            .unwrap_or(0)
    }
}

/// Event builders for tests.
pub mod events {
    use scimrelay_proto::v1::{Email, EventKind, GroupState, IdentityEvent, UserState};

    /// A complete user state.
    pub fn user(id: &str) -> UserState {
        UserState {
            id: id.into(),
            user_name: format!("{id}@example.com"),
            display_name: format!("User {id}"),
            given_name: "Given".into(),
            family_name: format!("Family{id}"),
            emails: vec![Email {
                value: format!("{id}@example.com"),
                r#type: "work".into(),
                primary: true,
            }],
            active: true,
            ..Default::default()
        }
    }

    /// `user.upserted`.
    pub fn upsert(u: UserState, version: u64) -> IdentityEvent {
        IdentityEvent {
            id: format!("evt-{}-v{version}", u.id),
            kind: EventKind::UserUpserted as i32,
            version,
            user: Some(u),
            ..Default::default()
        }
    }

    /// A user event of another kind (deactivated, deleted).
    pub fn user_event(id: &str, kind: EventKind, version: u64) -> IdentityEvent {
        IdentityEvent {
            id: format!("evt-{id}-v{version}"),
            kind: kind as i32,
            version,
            user: Some(UserState {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// `group.upserted`.
    pub fn group(id: &str, name: &str, members: &[String], version: u64) -> IdentityEvent {
        IdentityEvent {
            id: format!("evt-{id}-v{version}"),
            kind: EventKind::GroupUpserted as i32,
            version,
            group: Some(GroupState {
                id: id.into(),
                display_name: name.into(),
                member_ids: members.to_vec(),
            }),
            ..Default::default()
        }
    }

    /// `group.deleted`.
    pub fn group_deleted(id: &str, version: u64) -> IdentityEvent {
        IdentityEvent {
            id: format!("evt-{id}-v{version}"),
            kind: EventKind::GroupDeleted as i32,
            version,
            group: Some(GroupState {
                id: id.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }
}
