//! Chaos scenarios of the state of record: shards that move back to a replica with old memory,
//! a status service that stops mid-run, and two tenants sharing one target with colliding ids.
//! Each asserts the full invariant (final state = highest accepted version, nothing twice, one
//! terminal outcome per event, nothing held without a reason). CI size by default; `make
//! chaos` runs 5,000 events (`SCIMRELAY_CHAOS_EVENTS`).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scimrelay_proto::v1::{HeldSelection, ListHeldRequest, OutcomeResult};
use scimrelay_tests::{Stack, StackOptions, expect, workload};

use super::{Setup, TOKEN_ENV, assert_invariant, send_all, size, stack};

/// Shards move A → B → A several times while retry copies of older versions are in flight:
/// the broker closes one replica's connection at a time (its shards go to the other replica;
/// it reconnects and waits as the standby), so each replica regains shards it owned before.
/// A replica that trusted its own memory of what it applied would apply a stale copy then.
#[tokio::test]
async fn failover_back() {
    let setup = Setup {
        label: "chaos-failover-back",
        replicas: 2,
        extra_target: "",
        timeout_secs: 5,
    };
    let stack = stack(&setup).await;
    // Errors keep retry copies (of older versions too) circulating through the delay tiers.
    stack
        .set_faults(
            "acme",
            &json!({"error_rate": 0.15, "error_statuses": [500, 503]}),
        )
        .await;
    let work = workload::mixed(21, size(), "acme", "fb");
    let half = work.events.len() / 2;
    let mut ids = send_all(&stack, &work.events[..half]).await;
    let pids: Vec<u32> = stack.connectors.iter().map(|c| c.pid()).collect();
    for round in 0..4 {
        if round == 1 {
            ids.extend(send_all(&stack, &work.events[half..]).await);
        }
        // The broker's connection list is refreshed every few seconds: a replica that just
        // reconnected shows up a moment later.
        let victim = format!("scim-connector-{}", pids[round % 2]);
        let start = Instant::now();
        while stack.vhost.close_connections(&victim) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{victim} never showed up in the broker's connections"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    stack.set_faults("acme", &json!({})).await;
    assert_invariant(&stack, &work.events, &ids, Duration::from_secs(240)).await;
}

/// A second target and tenant, `hr`, with the mass-deprovisioning guard on.
const HR_TARGET: &str = "  - id: hr
    provider: scim
    tenants: [hr]
    base_url: \"{sim}/hr/scim/v2\"
    auth: { kind: bearer, token: { env: CHAOS_SCIM_TOKEN } }
    shards: 2
    delete_policy: delete
    retry: { max_attempts: 30, base_delay_ms: 100, max_delay_ms: 2000 }
    deprovision_guard: { max_share: 0.2, window_secs: 3600, min_users: 10 }
";

fn hr_user(i: usize, version: u64, active: bool) -> Value {
    let id = format!("hr{i:04}");
    json!({"id": format!("evt-{id}-v{version}"), "kind": "user.upserted", "tenant": "hr",
           "version": version,
           "user": {"id": id, "userName": format!("{id}@hr.example"), "active": active,
                    "displayName": format!("HR {id}"), "name": {"givenName": "H", "familyName": id},
                    "title": "Staff"}})
}

/// The status service stops mid-run and comes back: meanwhile events keep arriving — the rest
/// of a mixed workload, stale versions (old events replayed with new ids) and a mass
/// deactivation sent as upserts at a guarded target. Nothing is applied while the state of
/// record cannot be asked; afterwards stale versions are superseded, and the guard holds the
/// deactivations beyond its share (each with its reason) until an operator releases them.
#[tokio::test]
async fn status_outage() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let mut stack = Stack::start(StackOptions {
        label: "chaos-status-outage".into(),
        sim_args: vec![
            "--tenant".into(),
            format!("acme:scim:bearer={token}"),
            "--tenant".into(),
            format!("hr:scim:bearer={token}"),
        ],
        targets_yaml: format!(
            r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 4
    delete_policy: delete
    concurrency: {{ min: 1, max: 16 }}
    retry: {{ max_attempts: 30, base_delay_ms: 100, max_delay_ms: 2000 }}
    deprovision_guard: {{ enabled: false }}
{HR_TARGET}"#
        ),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        dir: None,
        ..Default::default()
    })
    .await;
    let hr_users = (size() / 10).max(20);
    let hr: Vec<Value> = (0..hr_users).map(|i| hr_user(i, 1, true)).collect();
    let hr_ids = send_all(&stack, &hr).await;
    stack
        .wait_outcomes(&hr_ids, 1, Duration::from_secs(120))
        .await;
    let work = workload::mixed(22, size(), "acme", "so");
    let mut ids = send_all(&stack, &work.events).await;
    // Stale versions: versions already applied, sent again under new event ids.
    let stale: Vec<Value> = work
        .events
        .iter()
        .filter(|e| e["version"] == 1 && e["kind"] == "user.upserted")
        .take(20)
        .map(|e| {
            let mut e = e.clone();
            e["id"] = json!(format!("{}-replayed", e["id"].as_str().unwrap_or_default()));
            e
        })
        .collect();
    let originals: Vec<String> = stale
        .iter()
        .filter_map(|e| {
            e["id"]
                .as_str()?
                .strip_suffix("-replayed")
                .map(str::to_owned)
        })
        .collect();
    stack
        .wait_outcomes(&originals, 1, Duration::from_secs(120))
        .await;

    // Mid-run: the rest of the workload is still in flight.
    stack.stop_status();
    let down = Instant::now();
    let stale_ids = send_all(&stack, &stale).await;
    // Half of hr's users leave, sent as upserts with active: false.
    let leaving = hr_users / 2;
    let leavers: Vec<Value> = (0..leaving).map(|i| hr_user(i, 2, false)).collect();
    let leaver_ids = send_all(&stack, &leavers).await;
    let outage = if size() >= 5000 { 30 } else { 10 };
    tokio::time::sleep(Duration::from_secs(outage).saturating_sub(down.elapsed())).await;
    let active = |users: &[Value]| users.iter().filter(|u| u["active"] == true).count();
    assert_eq!(
        active(&stack.sim_users("hr").await),
        hr_users,
        "no deactivation while the status service is down"
    );
    stack.start_status().await;

    // The guard admits floor(20 % of the users) and holds the rest, each with its reason.
    let admitted = hr_users / 5;
    let held = wait_held(&stack, leaving - admitted).await;
    assert!(
        held.iter()
            .all(|h| h.reason.contains("deprovisioned within")),
        "{held:?}"
    );
    assert_eq!(
        active(&stack.sim_users("hr").await),
        hr_users - admitted,
        "only the admitted share was deactivated"
    );
    let stale_outcomes = stack
        .wait_outcomes(&stale_ids, 1, Duration::from_secs(120))
        .await;
    for (id, o) in &stale_outcomes {
        assert_eq!(o[0].result, OutcomeResult::Superseded as i32, "{id}: {o:?}");
    }
    // The operator releases them: every event reaches its one outcome.
    let released = stack
        .status_client()
        .await
        .release_held(HeldSelection {
            target: "hr".into(),
            ..Default::default()
        })
        .await
        .expect("ReleaseHeld")
        .into_inner();
    assert_eq!(released.affected as usize, leaving - admitted);
    let mut all_events = work.events.clone();
    all_events.extend(stale);
    ids.extend(stale_ids);
    assert_invariant(&stack, &all_events, &ids, Duration::from_secs(240)).await;
    let mut hr_events = hr;
    hr_events.extend(leavers);
    let mut all_hr_ids = hr_ids;
    all_hr_ids.extend(leaver_ids);
    stack
        .wait_outcomes(&all_hr_ids, 1, Duration::from_secs(120))
        .await;
    let problems = expect::check(&stack.sim_users("hr").await, &[], &hr_events, true);
    assert!(problems.is_empty(), "{problems:#?}");
}

/// Waits until exactly `n` events of `hr` are held (and stay so for a moment).
async fn wait_held(stack: &Stack, n: usize) -> Vec<scimrelay_proto::v1::HeldEvent> {
    let mut client = stack.status_client().await;
    let start = Instant::now();
    loop {
        let held = client
            .list_held(ListHeldRequest {
                target: "hr".into(),
                page_size: 1000,
                page_token: String::new(),
            })
            .await
            .expect("ListHeld")
            .into_inner()
            .held;
        if held.len() == n {
            tokio::time::sleep(Duration::from_millis(500)).await;
            return held;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{} held, want {n}",
            held.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The same workload shape for another tenant: its users' userNames and e-mails in its own
/// domain (a target's userNames are unique), ids and event ids exactly the first tenant's.
fn renamed(events: &[Value], domain: &str) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let text = e
                .to_string()
                .replace("@example.com", &format!("@{domain}"))
                .replace("\"Group ", &format!("\"{domain} group "));
            serde_json::from_str(&text).unwrap_or_else(|err| panic!("{err}"))
        })
        .collect()
}

/// Two tenants on one target with colliding subject ids and event ids, a user and a group with
/// the same id, and tenant acme sending with a key limited to acme: each tenant's subjects
/// converge to its own events, and nothing acme sends touches globex's objects.
#[tokio::test]
async fn tenants_share_a_target() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start(StackOptions {
        label: "chaos-tenants".into(),
        sim_args: vec!["--tenant".into(), format!("shared:scim:bearer={token}")],
        targets_yaml: format!(
            r#"targets:
  - id: app
    provider: scim
    tenants: [acme, globex]
    base_url: "{{sim}}/shared/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 4
    delete_policy: delete
    concurrency: {{ min: 1, max: 16 }}
    retry: {{ max_attempts: 30, base_delay_ms: 100, max_delay_ms: 2000 }}
    deprovision_guard: {{ enabled: false }}
"#
        ),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into(); 2],
        dir: None,
        ..Default::default()
    })
    .await;
    let acme_key = stack.add_key("acme-sender", &["acme"], &["send"]).await;
    let mut acme = workload::mixed(23, size() / 2, "acme", "t").events;
    let globex = renamed(
        &workload::mixed(23, size() / 2, "globex", "t").events,
        "globex.example",
    );
    // Groups of acme whose ids are those of acme users (a user and a group share an id), with
    // members that exist at the end.
    let finals = expect::final_events(&acme);
    let keepers: Vec<String> = finals
        .values()
        .filter(|e| e["kind"] == "user.upserted")
        .filter_map(|e| e["user"]["id"].as_str().map(str::to_owned))
        .collect();
    for (i, id) in keepers.iter().take(3).enumerate() {
        acme.push(
            json!({"id": format!("evt-{id}-group-v1"), "kind": "group.upserted",
                         "tenant": "acme", "version": 1,
                         "group": {"id": id, "displayName": format!("Same-id group {i}"),
                                   "members": [id]}}),
        );
    }
    // Interleaved: globex with the harness's key, acme with its own.
    let mut ids = Vec::new();
    for (a, g) in acme.chunks(100).zip(globex.chunks(100)) {
        let (status, answer) = stack
            .post_events_as(&acme_key, &Value::Array(a.to_vec()))
            .await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(Stack::accepted_ids(&answer));
        ids.extend(send_all(&stack, g).await);
    }
    let sent_acme: usize = acme
        .chunks(100)
        .zip(globex.chunks(100))
        .map(|(a, _)| a.len())
        .sum();
    for a in acme[sent_acme..].chunks(100) {
        let (status, answer) = stack
            .post_events_as(&acme_key, &Value::Array(a.to_vec()))
            .await;
        assert_eq!(status, 202, "{answer}");
        ids.extend(Stack::accepted_ids(&answer));
    }
    let sent_globex: usize = acme
        .chunks(100)
        .zip(globex.chunks(100))
        .map(|(_, g)| g.len())
        .sum();
    ids.extend(send_all(&stack, &globex[sent_globex..]).await);
    // Event ids collide across tenants: wait for an outcome per (tenant, event).
    let distinct: HashSet<String> = ids.iter().cloned().collect();
    let mut client = stack.status_client().await;
    let start = Instant::now();
    for id in &distinct {
        let tenants: Vec<&str> = ["acme", "globex"]
            .into_iter()
            .filter(|t| {
                let events = if *t == "acme" { &acme } else { &globex };
                events.iter().any(|e| e["id"].as_str() == Some(id.as_str()))
            })
            .collect();
        for tenant in tenants {
            loop {
                let ev = client
                    .get_event(scimrelay_proto::v1::GetEventRequest {
                        event_id: id.clone(),
                        tenant: tenant.into(),
                    })
                    .await
                    .map(|r| r.into_inner())
                    .unwrap_or_default();
                if let Some(o) = ev.outcomes.first() {
                    assert_eq!(ev.outcomes.len(), 1, "{tenant} {id}: {ev:?}");
                    assert!(
                        matches!(
                            OutcomeResult::try_from(o.result),
                            Ok(OutcomeResult::Succeeded | OutcomeResult::Superseded)
                        ),
                        "{tenant} {id}: {o:?}"
                    );
                    break;
                }
                assert!(
                    start.elapsed() < Duration::from_secs(240),
                    "{tenant} {id}: no outcome"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let both = |u: &[serde_json::Value], g: &[serde_json::Value]| {
        [("acme", &acme), ("globex", &globex)]
            .into_iter()
            .flat_map(|(tenant, events)| {
                expect::check(
                    &expect::of_tenant(u, tenant),
                    &expect::of_tenant(g, tenant),
                    events,
                    true,
                )
            })
            .collect()
    };
    let (users, groups, _) = stack.settled("shared", Duration::from_secs(60), both).await;
    assert!(
        users.iter().chain(&groups).all(|o| o["externalId"]
            .as_str()
            .is_some_and(|x| x.starts_with("acme:") || x.starts_with("globex:"))),
        "every object of the shared target names its tenant"
    );
    for (tenant, events) in [("acme", &acme), ("globex", &globex)] {
        let problems = expect::check(
            &expect::of_tenant(&users, tenant),
            &expect::of_tenant(&groups, tenant),
            events,
            true,
        );
        assert!(
            problems.is_empty(),
            "{tenant}: {} problems, e.g. {:#?}",
            problems.len(),
            &problems[..problems.len().min(10)]
        );
    }
    eprintln!(
        "tenants share a target: {} events, {} users, {} groups",
        distinct.len(),
        users.len(),
        groups.len()
    );
}
