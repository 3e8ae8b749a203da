//! The state of record through the running services: versions are decided by the status
//! service, never by a connector's memory; nothing is applied while it cannot be asked; a failed
//! attempt is never mistaken for an unchanged target; tenants sharing a target are kept apart.
//! Each test names the defect of the edge-triggered connector it guards against.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scimrelay_proto::v1::{GetEventRequest, GetSubjectRequest, Operation, OutcomeResult};
use scimrelay_tests::{Stack, StackOptions};

const TOKEN_ENV: &str = "E2E_SOR_TOKEN";
const WAIT: Duration = Duration::from_secs(60);

/// A generic target `app` at the simulator tenant `shared`, serving `tenants`.
async fn stack(label: &str, tenants: &[&str], guard: &str) -> Stack {
    stack_with(label, tenants, guard, "").await
}

/// [`stack`], with more lines (`extra`) in the target's entry.
async fn stack_with(label: &str, tenants: &[&str], guard: &str, extra: &str) -> Stack {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    Stack::start(StackOptions {
        label: label.into(),
        sim_args: vec!["--tenant".into(), format!("shared:scim:bearer={token}")],
        targets_yaml: format!(
            r#"targets:
  - id: app
    provider: scim
    tenants: [{}]
    base_url: "{{sim}}/shared/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 4
    delete_policy: delete
    concurrency: {{ min: 1, max: 8 }}
    retry: {{ max_attempts: 3, base_delay_ms: 100, max_delay_ms: 1000 }}
    deprovision_guard: {guard}
{extra}"#,
            tenants.join(", ")
        ),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        dir: None,
        ..Default::default()
    })
    .await
}

fn user(tenant: &str, id: &str, version: u64, title: &str, user_name: &str) -> Value {
    json!({"id": format!("{tenant}-{id}-v{version}"), "kind": "user.upserted", "tenant": tenant,
           "version": version,
           "user": {"id": id, "userName": user_name, "displayName": format!("User {id}"),
                    "title": title, "name": {"givenName": "G", "familyName": id}}})
}

/// Sends one event (as the harness, or with `key`) and waits for its terminal outcome.
async fn settle(stack: &Stack, event: &Value, key: Option<&str>) -> scimrelay_proto::v1::Outcome {
    let (status, answer) = match key {
        Some(k) => stack.post_events_as(k, event).await,
        None => stack.post_events(event).await,
    };
    assert_eq!(status, 202, "{answer}");
    let ids = Stack::accepted_ids(&answer);
    stack.wait_outcomes(&ids, 1, WAIT).await[&ids[0]][0].clone()
}

fn sim_user<'a>(users: &'a [Value], external_id: &str) -> Option<&'a Value> {
    users
        .iter()
        .find(|u| u["externalId"].as_str() == Some(external_id))
}

/// Defect: with the status service unreachable a connector answered "never seen" and applied
/// whatever came: after a restart during an outage, a replay of v2 (a new event id) re-created
/// a user deleted at v3. Now nothing is applied while the state of record cannot be asked; when
/// it is back the replay is superseded, and the user stays deleted.
#[tokio::test]
async fn a_replay_during_a_status_outage_never_recreates_a_deleted_user() {
    let mut stack = stack("sor-outage-replay", &["acme"], "{ enabled: false }").await;
    let a = |v, title| user("acme", "u-1", v, title, "u1@acme.example");
    assert_eq!(
        settle(&stack, &a(1, "Engineer"), None).await.operation,
        Operation::Created as i32
    );
    settle(&stack, &a(2, "Manager"), None).await;
    let delete = json!({"id": "acme-u-1-v3", "kind": "user.deleted", "tenant": "acme",
                        "version": 3, "user": {"id": "u-1"}});
    assert_eq!(
        settle(&stack, &delete, None).await.operation,
        Operation::Deleted as i32
    );
    assert!(stack.sim_users("shared").await.is_empty());

    stack.stop_status();
    stack.restart_connector(0, "scim-connector-restarted").await;
    let mut replay = a(2, "Manager");
    replay["id"] = json!("replay-of-v2");
    let (status, answer) = stack.post_events(&replay).await;
    assert_eq!(status, 202, "{answer}");
    // The connector takes it, cannot ask the state of record, and waits: nothing is applied.
    let addr = stack.connector_http[0].clone();
    let waits = "scimrelay_retries_total{target=\"app\",reason=\"state_unavailable\"}";
    let start = Instant::now();
    loop {
        assert!(
            stack.sim_users("shared").await.is_empty(),
            "the deleted user was brought back while the state of record could not be asked"
        );
        if stack.metrics(&addr).await.value(waits) >= 2.0 {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "the connector never waited for the state of record"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack.start_status().await;
    let o = &stack
        .wait_outcomes(&["replay-of-v2".to_owned()], 1, WAIT)
        .await["replay-of-v2"][0];
    assert_eq!(o.result, OutcomeResult::Superseded as i32, "{o:?}");
    assert_eq!(
        o.attempt, 1,
        "waiting for the state of record is not an attempt"
    );
    assert!(
        stack.sim_users("shared").await.is_empty(),
        "the deleted user was not brought back"
    );
}

/// Defect: the connector recorded a version in its own memory before its outcome was
/// confirmed; when the outcome could not be published the status service never learnt the
/// version, and the redelivered message read as "superseded". Now what was applied is recorded
/// in the state of record before the outcome is published, and the redelivery of the same event
/// is a succeeded no-op.
#[tokio::test]
async fn status_learns_an_applied_version_before_its_outcome_is_published() {
    let mut stack = stack("sor-unpublished", &["acme"], "{ enabled: false }").await;
    // Outcomes reach no queue: every outcome publish is returned unroutable (mandatory).
    let conn = scimrelay_core::amqp::connect(&stack.vhost.amqp_url(), "test")
        .await
        .expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    ch.queue_unbind(
        scimrelay_core::amqp::STATUS_QUEUE.into(),
        scimrelay_core::amqp::OUTCOMES_EXCHANGE.into(),
        "#".into(),
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("unbind");
    let (status, answer) = stack
        .post_events(&user("acme", "u-1", 1, "Engineer", "u1@acme.example"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let mut client = stack.status_client().await;
    let start = Instant::now();
    let applied = loop {
        let s = client
            .get_subject(GetSubjectRequest {
                subject_id: "u-1".into(),
                ..Default::default()
            })
            .await;
        if let Ok(s) = s
            && s.get_ref()
                .targets
                .first()
                .is_some_and(|t| t.applied_version == 1)
        {
            break s.into_inner().targets[0].clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "the applied version never reached the status service"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(applied.state, "present-active");
    assert_eq!(stack.sim_users("shared").await.len(), 1);
    let history = client
        .get_event(GetEventRequest {
            event_id: "acme-u-1-v1".into(),
            ..Default::default()
        })
        .await
        .expect("GetEvent")
        .into_inner()
        .history;
    assert!(
        history.is_empty(),
        "no outcome could be published: {history:?}"
    );

    // The outcomes flow again (a connector declares the binding when it starts); the message
    // the connector still holds comes back when it stops.
    scimrelay_core::amqp::close(&conn, "done").await;
    stack.restart_connector(0, "scim-connector-2").await;
    let o = &stack
        .wait_outcomes(&["acme-u-1-v1".to_owned()], 1, WAIT)
        .await["acme-u-1-v1"][0];
    assert_eq!(
        (o.result, o.operation),
        (OutcomeResult::Succeeded as i32, Operation::Noop as i32),
        "{o:?}"
    );
    assert!(o.detail.contains("earlier attempt of this event"), "{o:?}");
    assert_eq!(
        stack.sim_users("shared").await.len(),
        1,
        "nothing created twice"
    );
}

/// Defect: the no-op skip trusted the fingerprint of the last successful converge even after
/// a later attempt failed half-way: v2's change landed at the target although its answer was an
/// error, then v3 (equal to v1) was skipped as unchanged and the target kept v2. Now a failed
/// attempt invalidates the fingerprint, and v3 is sent.
#[tokio::test]
async fn a_failed_attempt_is_never_skipped_as_unchanged() {
    let stack = stack("sor-fingerprint", &["acme"], "{ enabled: false }").await;
    let a = |v, title| user("acme", "u-1", v, title, "u1@acme.example");
    settle(&stack, &a(1, "Engineer"), None).await;
    // Writes take effect and are then answered 400 (a gateway failing after the backend).
    stack
        .set_faults(
            "shared",
            &json!({"after_effect_rate": 1.0, "error_statuses": [400]}),
        )
        .await;
    let failed = settle(&stack, &a(2, "Manager"), None).await;
    assert_eq!(failed.result, OutcomeResult::Failed as i32, "{failed:?}");
    let users = stack.sim_users("shared").await;
    assert_eq!(users[0]["title"], "Manager", "the failed write landed");
    stack.set_faults("shared", &json!({})).await;
    let v3 = settle(&stack, &a(3, "Engineer"), None).await;
    assert_eq!(
        (v3.result, v3.operation),
        (OutcomeResult::Succeeded as i32, Operation::Updated as i32),
        "{v3:?}"
    );
    assert_eq!(stack.sim_users("shared").await[0]["title"], "Engineer");
}

/// Defect: a target serving two tenants keyed subjects by id only: a key for tenant acme sent
/// `user.deactivated` for `u-7` in tenant acme and globex's `u-7` was deactivated; acme could
/// also supersede every later globex event with version 2^63−1. Now tenant and kind are part
/// of every subject key, objects are linked by `<tenant>:<id>`, and a 409 never adopts another
/// tenant's object.
#[tokio::test]
async fn tenants_sharing_a_target_are_kept_apart() {
    let stack = stack(
        "sor-tenants",
        &["acme", "globex"],
        "{ max_share: 0.2, window_secs: 600, min_users: 10 }",
    )
    .await;
    let acme_key = stack.add_key("acme-sender", &["acme"], &["send"]).await;
    let globex_u7 = user("globex", "u-7", 1, "Globex", "u7@globex.example");
    assert_eq!(
        settle(&stack, &globex_u7, None).await.operation,
        Operation::Created as i32
    );
    // acme's key deactivates "u-7" of acme: acme has no such user yet; globex's stays active.
    let deactivate = json!({"id": "acme-u-7-v2", "kind": "user.deactivated", "tenant": "acme",
                            "version": 2, "user": {"id": "u-7"}});
    let o = settle(&stack, &deactivate, Some(&acme_key)).await;
    assert_eq!(
        (o.result, o.operation),
        (OutcomeResult::Succeeded as i32, Operation::Noop as i32),
        "{o:?}"
    );
    let users = stack.sim_users("shared").await;
    let g = sim_user(&users, "globex:u-7").expect("globex's u-7, linked by tenant");
    assert_eq!(g["active"], true, "globex's u-7 untouched");
    // acme's own u-7 at the highest version there is: it does not supersede globex's.
    let acme_u7 = user("acme", "u-7", 1 << 62, "Acme", "u7@acme.example");
    let o = settle(&stack, &acme_u7, Some(&acme_key)).await;
    assert_eq!(o.operation, Operation::Created as i32, "{o:?}");
    let o = settle(
        &stack,
        &user("globex", "u-7", 2, "Globex v2", "u7@globex.example"),
        None,
    )
    .await;
    assert_eq!(
        (o.result, o.operation),
        (OutcomeResult::Succeeded as i32, Operation::Updated as i32),
        "{o:?}"
    );
    // The same event id in both tenants: two events, each with its own outcome.
    let same_id = |tenant: &str, id: &str, user_name: &str| {
        let mut e = user(tenant, id, 1, "Same id", user_name);
        e["id"] = json!("evt-shared-id");
        e
    };
    settle(
        &stack,
        &same_id("acme", "u-8", "u8@acme.example"),
        Some(&acme_key),
    )
    .await;
    settle(&stack, &same_id("globex", "u-8", "u8@globex.example"), None).await;
    // A user and a group with the same id are two subjects.
    let group = json!({"id": "acme-g-7", "kind": "group.upserted", "tenant": "acme",
                       "version": 1, "group": {"id": "u-7", "displayName": "Acme u-7 group",
                                               "members": ["u-7", "u-8"]}});
    let o = settle(&stack, &group, Some(&acme_key)).await;
    assert_eq!(o.operation, Operation::Created as i32, "{o:?}");
    // acme takes globex's userName: the 409 finds globex's object, which acme never adopts.
    let o = settle(
        &stack,
        &user("acme", "u-9", 1, "Thief", "u7@globex.example"),
        Some(&acme_key),
    )
    .await;
    assert_eq!(o.result, OutcomeResult::Failed as i32, "{o:?}");
    assert!(o.detail.contains("not linked to tenant \"acme\""), "{o:?}");

    let users = stack.sim_users("shared").await;
    let g = sim_user(&users, "globex:u-7").expect("globex's u-7");
    assert_eq!(
        (g["title"].as_str(), g["active"].as_bool()),
        (Some("Globex v2"), Some(true))
    );
    let a = sim_user(&users, "acme:u-7").expect("acme's u-7");
    assert_eq!(a["title"], "Acme");
    assert!(sim_user(&users, "acme:u-8").is_some() && sim_user(&users, "globex:u-8").is_some());
    assert!(
        users.iter().all(|u| u["externalId"]
            .as_str()
            .is_some_and(|x| x.starts_with("acme:") || x.starts_with("globex:"))),
        "every object of the shared target names its tenant: {users:?}"
    );
    let groups = stack.sim_groups("shared").await;
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["externalId"], "acme:u-7");
    assert_eq!(
        groups[0]["members"].as_array().map(Vec::len),
        Some(2),
        "acme's own u-7 and u-8: {groups:?}"
    );
    // Each tenant's event with the shared id has its own outcome.
    let mut client = stack.status_client().await;
    for tenant in ["acme", "globex"] {
        let ev = client
            .get_event(GetEventRequest {
                event_id: "evt-shared-id".into(),
                tenant: tenant.into(),
            })
            .await
            .expect("GetEvent")
            .into_inner();
        assert_eq!(ev.outcomes.len(), 1, "{tenant}: {ev:?}");
        assert_eq!(ev.outcomes[0].tenant, tenant);
        assert_eq!(ev.outcomes[0].result, OutcomeResult::Succeeded as i32);
    }
    // The acme key cannot send for globex at all.
    let (status, answer) = stack
        .post_events_as(
            &acme_key,
            &user("globex", "u-7", 3, "x", "u7@globex.example"),
        )
        .await;
    assert_eq!(status, 403, "{answer}");
}

/// Defect: an upsert with `active: false` was guarded only when the connector's memory knew
/// the user active; a connector restarted during a status outage knew nothing, and a mass
/// deactivation sent as upserts went out unguarded. Now nothing is applied during the outage,
/// and afterwards the guard (counting by the state of record) holds what exceeds the share.
#[tokio::test]
async fn a_mass_deactivation_sent_as_upserts_during_a_status_outage_is_held() {
    let mut stack = stack(
        "sor-outage-guard",
        &["acme"],
        "{ max_share: 0.2, window_secs: 600, min_users: 10 }",
    )
    .await;
    let people: Vec<Value> = (0..20)
        .map(|i| {
            user(
                "acme",
                &format!("u{i:02}"),
                1,
                "Staff",
                &format!("u{i:02}@acme.example"),
            )
        })
        .collect();
    let (status, answer) = stack.post_events(&Value::Array(people.clone())).await;
    assert_eq!(status, 202, "{answer}");
    stack
        .wait_outcomes(&Stack::accepted_ids(&answer), 1, WAIT)
        .await;
    stack.stop_status();
    stack.restart_connector(0, "scim-connector-restarted").await;
    let leavers: Vec<Value> = people[..10]
        .iter()
        .map(|p| {
            let mut e = p.clone();
            e["version"] = json!(2);
            e["id"] = json!(format!(
                "{}-leaves",
                e["user"]["id"].as_str().unwrap_or_default()
            ));
            e["user"]["active"] = json!(false);
            e
        })
        .collect();
    let (status, answer) = stack.post_events(&Value::Array(leavers)).await;
    assert_eq!(status, 202, "{answer}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let active = |users: &[Value]| users.iter().filter(|u| u["active"] == true).count();
    assert_eq!(
        active(&stack.sim_users("shared").await),
        20,
        "nothing deactivated while the guard and the state of record cannot be asked"
    );
    stack.start_status().await;
    // 20 % of 20 users: 4 admitted, 6 held.
    let mut client = stack.status_client().await;
    let start = Instant::now();
    loop {
        let held = client
            .list_held(scimrelay_proto::v1::ListHeldRequest {
                target: "app".into(),
                page_size: 100,
                page_token: String::new(),
            })
            .await
            .expect("ListHeld")
            .into_inner()
            .held;
        if held.len() == 6 && active(&stack.sim_users("shared").await) == 16 {
            break;
        }
        assert!(
            start.elapsed() < WAIT,
            "{} held, {} active",
            held.len(),
            active(&stack.sim_users("shared").await)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Defect: a write that timed out was taken for one that never happened. A slow server applied
/// the create after the connector gave up on it — after the deletion that followed had found no
/// user and succeeded — and the deleted user was back for good. Now a write without an answer
/// fences the subject (twice the request timeout) before anything else is sent for it, so the
/// deletion finds the late user and deletes it.
#[tokio::test]
async fn a_create_that_lands_after_its_timeout_is_not_left_behind_by_a_deletion() {
    let stack = stack_with(
        "sor-late-write",
        &["acme"],
        "{ enabled: false }",
        "    timeout_secs: 1\n",
    )
    .await;
    // The create is answered only after 2.5 s (the connector gives up after 1 s); the server
    // applies it all the same.
    stack
        .set_faults(
            "shared",
            &json!({"write_latency_ms": {"min": 2500, "max": 2500}}),
        )
        .await;
    let (status, answer) = stack
        .post_events(&user("acme", "u-9", 1, "Engineer", "u9@acme.example"))
        .await;
    assert_eq!(status, 202, "{answer}");
    let created = Stack::accepted_ids(&answer);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Later writes are answered at once: only the create in flight is slow.
    stack.set_faults("shared", &json!({})).await;
    let deleted = settle(
        &stack,
        &json!({"id": "acme-u-9-v2", "kind": "user.deleted", "tenant": "acme", "version": 2,
                "user": {"id": "u-9"}}),
        None,
    )
    .await;
    assert_eq!(
        deleted.result,
        OutcomeResult::Succeeded as i32,
        "{deleted:?}"
    );
    stack.wait_outcomes(&created, 1, WAIT).await;
    // Whatever the order of the outcomes, the late create has landed by now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let users = stack.sim_users("shared").await;
    assert!(
        sim_user(&users, "u-9").is_none(),
        "the user deleted at v2 exists: {users:?}"
    );
}
