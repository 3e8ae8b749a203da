//! Shared helpers of the provider end-to-end tests: a stack with a simulator config file, events
//! sent and settled one wave at a time, the simulator's admin API and request statistics.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use scimrelay_proto::v1::{Operation, Outcome, OutcomeResult};
use scimrelay_tests::{Metrics, Stack, StackOptions};

/// A running stack plus the directory holding the simulator's config (kept alive with it).
pub struct ProviderStack {
    /// The services.
    pub stack: Stack,
    _dir: tempfile::TempDir,
}

/// Starts simulator (with `sim_config`, a JSON/YAML tenants document), status, `connector` and
/// ingest; `targets_yaml` uses `{sim}` for the simulator's URL and `{dir}` for a scratch dir.
pub async fn start(
    label: &str,
    sim_config: &Value,
    targets_yaml: &str,
    env: BTreeMap<String, String>,
    connector: &str,
) -> ProviderStack {
    let dir = tempfile::Builder::new()
        .prefix(&format!("scimrelay-{label}-cfg-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("tempdir: {e}"));
    let sim_path = dir.path().join("sim.json");
    std::fs::write(&sim_path, sim_config.to_string()).unwrap_or_else(|e| panic!("sim config: {e}"));
    let stack = Stack::start(StackOptions {
        label: label.into(),
        sim_args: vec!["--config".into(), sim_path.to_string_lossy().into_owned()],
        targets_yaml: targets_yaml.replace("{dir}", &dir.path().to_string_lossy()),
        env,
        connectors: vec![connector.into()],
        dir: None,
        ..Default::default()
    })
    .await;
    ProviderStack { stack, _dir: dir }
}

impl ProviderStack {
    /// Scrapes the connector's `/metrics` and checks that the per-target series of `target`
    /// exist; with `before`, also that they moved: at least `succeeded` more succeeded events,
    /// and more SCIM requests and rate-limit decisions.
    pub async fn connector_metrics(
        &self,
        target: &str,
        before: Option<&Metrics>,
        succeeded: f64,
    ) -> Metrics {
        let m = self.stack.metrics(&self.stack.connector_http[0]).await;
        let events = format!("scimrelay_events_total{{target=\"{target}\",result=\"succeeded\"}}");
        let requests = format!("scimrelay_scim_requests_total{{target=\"{target}\",");
        let waits = format!("scimrelay_rate_limit_wait_seconds_count{{target=\"{target}\"}}");
        for series in [
            events.clone(),
            requests.clone(),
            waits.clone(),
            format!("scimrelay_scim_request_duration_seconds_count{{target=\"{target}\","),
            format!("scimrelay_event_duration_seconds_count{{target=\"{target}\""),
            format!("scimrelay_in_flight{{target=\"{target}\"}}"),
            format!("scimrelay_quarantined{{target=\"{target}\"}}"),
        ] {
            assert!(m.has(&series), "connector lacks {series}: {:?}", m.0);
        }
        assert!(
            m.value(&format!(
                "scimrelay_concurrency_limit{{target=\"{target}\"}}"
            )) >= 1.0
        );
        if let Some(b) = before {
            assert!(
                m.value(&events) >= b.value(&events) + succeeded,
                "{events}: {} → {}",
                b.value(&events),
                m.value(&events)
            );
            assert!(
                m.sum(&requests) > b.sum(&requests),
                "{requests} did not move"
            );
            assert!(m.value(&waits) > b.value(&waits), "{waits} did not move");
        }
        m
    }

    /// Posts events (in one request), waits for one terminal outcome each; outcomes in order.
    pub async fn settle(&self, events: &[Value]) -> Vec<Outcome> {
        let (status, answer) = self.stack.post_events(&Value::Array(events.to_vec())).await;
        assert_eq!(status, 202, "{answer}");
        let ids = Stack::accepted_ids(&answer);
        assert_eq!(ids.len(), events.len(), "{answer}");
        let mut outcomes: HashMap<String, Vec<Outcome>> = self
            .stack
            .wait_outcomes(&ids, 1, Duration::from_secs(90))
            .await;
        ids.iter()
            .map(|id| {
                let mut o = outcomes.remove(id).unwrap_or_default();
                // The status service may list one recorded outcome more than once; identical
                // copies are one outcome, two different terminal outcomes are a failure.
                o.dedup_by(|a, b| a == b);
                assert_eq!(o.len(), 1, "{id}: exactly one terminal outcome: {o:?}");
                o.remove(0)
            })
            .collect()
    }

    /// The simulator's admin view (`users`, `groups`, `stats`) of a tenant.
    pub async fn admin(&self, tenant: &str, what: &str) -> Value {
        let url = format!("{}/_admin/tenants/{tenant}/{what}", self.stack.sim_url);
        self.stack
            .http()
            .get(&url)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }
}

/// Requests of the simulator's statistics whose path class ends with `path`.
pub fn count(stats: &Value, method: &str, path: &str) -> u64 {
    stats["requests"]
        .as_array()
        .map(|rows| {
            rows.iter()
                .filter(|r| {
                    r["method"] == method && r["path"].as_str().is_some_and(|p| p.ends_with(path))
                })
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
}

/// Asserts an outcome's result and operation, showing the outcome when it differs.
pub fn assert_outcome(o: &Outcome, result: OutcomeResult, op: Operation) {
    assert_eq!(o.result, result as i32, "{o:?}");
    if result == OutcomeResult::Succeeded {
        assert_eq!(o.operation, op as i32, "{o:?}");
    }
}

/// A complete `user.upserted` event.
pub fn user(id: &str, version: u64) -> Value {
    json!({"id": format!("evt-{id}-v{version}"), "kind": "user.upserted", "tenant": "acme", "version": version,
           "user": {"id": id, "userName": format!("{id}@example.com"), "displayName": format!("User {id} v{version}"),
                    "name": {"givenName": "Given", "familyName": format!("Family{id}")},
                    "emails": [{"value": format!("{id}@example.com"), "type": "work", "primary": true}],
                    "title": format!("Title v{version}")}})
}

/// A user event of another kind (`user.deactivated`, `user.deleted`).
pub fn user_event(id: &str, kind: &str, version: u64) -> Value {
    json!({"id": format!("evt-{id}-v{version}"), "kind": kind, "tenant": "acme", "version": version, "user": {"id": id}})
}

/// `group.upserted`.
pub fn group(id: &str, name: &str, members: &[String], version: u64) -> Value {
    json!({"id": format!("evt-{id}-v{version}"), "kind": "group.upserted", "tenant": "acme", "version": version,
           "group": {"id": id, "displayName": name, "members": members}})
}

/// `group.deleted`.
pub fn group_deleted(id: &str, version: u64) -> Value {
    json!({"id": format!("evt-{id}-v{version}"), "kind": "group.deleted", "tenant": "acme", "version": version,
           "group": {"id": id}})
}

/// The externalIds of a group's members, from the simulator's admin view.
pub async fn member_external_ids(
    s: &ProviderStack,
    tenant: &str,
    group_external_id: &str,
) -> Vec<String> {
    let groups = s.admin(tenant, "groups").await;
    let users = s.admin(tenant, "users").await;
    let by_id: HashMap<&str, &str> = users
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|u| Some((u["id"].as_str()?, u["externalId"].as_str()?)))
                .collect()
        })
        .unwrap_or_default();
    let mut out: Vec<String> = groups
        .as_array()
        .and_then(|g| {
            g.iter().find(|g| {
                g["externalId"] == group_external_id || g["displayName"] == group_external_id
            })
        })
        .and_then(|g| g["members"].as_array())
        .map(|m| {
            m.iter()
                .filter_map(|x| x["value"].as_str())
                .map(|id| by_id.get(id).copied().unwrap_or(id).to_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}
