//! References that arrive in any order (docs/design.md, "References"): groups sent before
//! their members converge with the members there, keep the rest pending in the state of
//! record, and are completed as the members arrive — no retry spent, no dead letter, no
//! `failed` outcome.
//!
//! Size: 50 groups of 10 members, the members arriving over `SCIMRELAY_REFS_SECS` seconds
//! (default 20 for `make test`; `make chaos` runs 120) in random order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use serde_json::{Value, json};

use scimrelay_proto::v1::{GetSubjectRequest, OutcomeResult, SubjectKind};
use scimrelay_tests::{Stack, StackOptions, workload};

const TOKEN_ENV: &str = "REFS_SCIM_TOKEN";
const GROUPS: usize = 50;
const MEMBERS: usize = 10;

fn arrival_secs() -> u64 {
    std::env::var("SCIMRELAY_REFS_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

fn target(id: &str, tenant: &str) -> String {
    format!(
        r#"  - id: {id}
    provider: scim
    tenants: [{tenant}]
    base_url: "{{sim}}/{tenant}/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 4
    concurrency: {{ min: 1, max: 16 }}
"#
    )
}

fn group(tenant: &str, g: usize) -> Value {
    let members: Vec<String> = (0..MEMBERS).map(|m| member(g, m)).collect();
    json!({"id": format!("evt-{tenant}-g{g:02}"), "kind": "group.upserted", "tenant": tenant,
           "version": 1, "group": {"id": format!("g{g:02}"), "displayName": format!("Group {g:02}"),
           "members": members}})
}

fn member(g: usize, m: usize) -> String {
    format!("u{g:02}{m}")
}

/// Every member's user event, in a random order of its own per seed.
fn users(tenant: &str, seed: u64) -> Vec<Value> {
    let mut all: Vec<Value> = (0..GROUPS)
        .flat_map(|g| (0..MEMBERS).map(move |m| (g, m)))
        .map(|(g, m)| workload::user_event(&member(g, m), 1, "user.upserted", tenant))
        .collect();
    all.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    all
}

async fn send(stack: &Stack, events: &[Value]) -> Vec<String> {
    let (status, answer) = stack.post_events(&json!({ "events": events })).await;
    assert_eq!(status, 202, "{answer}");
    Stack::accepted_ids(&answer)
}

/// Polls until every group of `tenant` at the simulator holds exactly its members.
async fn wait_for_members(stack: &Stack, tenant: &str, limit: Duration) {
    let began = Instant::now();
    loop {
        let groups = stack.sim_groups(tenant).await;
        let users = external_ids(stack, tenant).await;
        let wrong: Vec<String> = (0..GROUPS)
            .filter_map(|g| {
                let want: BTreeSet<String> = (0..MEMBERS).map(|m| member(g, m)).collect();
                let name = format!("Group {g:02}");
                let have = members_of(&groups, &users, &name);
                (have != want).then(|| format!("{name}: {} of {MEMBERS}", have.len()))
            })
            .collect();
        if wrong.is_empty() && groups.len() == GROUPS {
            return;
        }
        assert!(
            began.elapsed() < limit,
            "after {limit:?}, {} groups (of {}) without exactly their members, e.g. {:?}",
            wrong.len(),
            groups.len(),
            &wrong[..wrong.len().min(5)]
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The externalId of each of `tenant`'s users at the simulator, by its id there.
async fn external_ids(stack: &Stack, tenant: &str) -> HashMap<String, String> {
    stack
        .sim_users(tenant)
        .await
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap_or_default().to_owned(),
                u["externalId"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// The members of the group named `name` among `groups`, as externalIds.
fn members_of(groups: &[Value], users: &HashMap<String, String>, name: &str) -> BTreeSet<String> {
    groups
        .iter()
        .find(|g| g["displayName"] == name)
        .and_then(|g| g["members"].as_array())
        .into_iter()
        .flatten()
        .filter_map(|m| users.get(m["value"].as_str().unwrap_or_default()).cloned())
        .collect()
}

/// No outcome of `ids` other than succeeded.
async fn assert_all_succeeded(stack: &Stack, ids: &[String]) {
    let outcomes = stack.wait_outcomes(ids, 1, Duration::from_secs(120)).await;
    let mut by_result: BTreeMap<&str, usize> = BTreeMap::new();
    for o in outcomes.values().flatten() {
        let r = OutcomeResult::try_from(o.result).unwrap_or(OutcomeResult::Unspecified);
        *by_result.entry(r.name()).or_default() += 1;
    }
    assert_eq!(
        by_result.keys().copied().collect::<Vec<_>>(),
        ["succeeded"],
        "{by_result:?}"
    );
}

/// A target's pending references and since when the oldest is pending, as `ListTargets` (and
/// `scimrelayctl status targets`) shows them.
async fn pending_at(stack: &Stack, target: &str) -> (u64, i64) {
    let mut status = stack.status_client().await;
    let t = status
        .get_target(scimrelay_proto::v1::GetTargetRequest {
            target: target.into(),
        })
        .await
        .expect("GetTarget")
        .into_inner();
    (t.pending_references, t.oldest_pending_since_ms)
}

/// Requests the simulator answered for `tenant`.
async fn requests(stack: &Stack, tenant: &str) -> u64 {
    stack.sim_stats(tenant).await["total"]
        .as_u64()
        .unwrap_or_default()
}

#[tokio::test]
async fn groups_sent_before_their_members_are_completed_as_members_arrive() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start(StackOptions {
        label: "refs".into(),
        sim_args: vec![
            "--tenant".into(),
            format!("acme:scim:bearer={token}"),
            "--tenant".into(),
            format!("beta:scim:bearer={token}"),
        ],
        targets_yaml: format!(
            "targets:\n{}{}",
            target("app", "acme"),
            target("ref", "beta")
        ),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        ..Default::default()
    })
    .await;
    let secs = arrival_secs();

    // acme: every group first. Each exists from its first event on, its members pending.
    let groups: Vec<Value> = (0..GROUPS).map(|g| group("acme", g)).collect();
    let mut ids = send(&stack, &groups).await;
    assert_all_succeeded(&stack, &ids).await;
    assert_eq!(stack.sim_groups("acme").await.len(), GROUPS);
    let g00 = references_of(&stack, "g00").await;
    assert_eq!(g00.len(), MEMBERS, "{g00:?}");
    let app = pending_at(&stack, "app").await;
    assert_eq!(
        app.0,
        (GROUPS * MEMBERS) as u64,
        "every member pending at app"
    );
    assert!(app.1 > 0, "since when the oldest is pending");

    // The members arrive over `secs` seconds, in random order, one batch a second.
    let users_acme = users("acme", 19);
    let began = Instant::now();
    let per_batch = users_acme.len().div_ceil(secs as usize);
    for (i, batch) in users_acme.chunks(per_batch).enumerate() {
        tokio::time::sleep_until((began + Duration::from_secs(i as u64)).into()).await;
        ids.extend(send(&stack, batch).await);
    }
    wait_for_members(&stack, "acme", Duration::from_secs(60)).await;
    assert_all_succeeded(&stack, &ids).await;
    let g00 = references_of(&stack, "g00").await;
    assert!(g00.is_empty(), "{g00:?}");
    let mut status = stack.status_client().await;
    assert_eq!(pending_at(&stack, "app").await, (0, 0));
    let dead = status
        .list_dead_letters(scimrelay_proto::v1::ListDeadLettersRequest::default())
        .await
        .expect("dead letters")
        .into_inner();
    assert_eq!(dead.total, 0, "nothing dead-lettered");

    // beta: the same workload, users first, for the request count.
    let mut beta_ids = send(&stack, &users("beta", 19)).await;
    assert_all_succeeded(&stack, &beta_ids).await;
    beta_ids.extend(
        send(
            &stack,
            &(0..GROUPS).map(|g| group("beta", g)).collect::<Vec<_>>(),
        )
        .await,
    );
    assert_all_succeeded(&stack, &beta_ids).await;
    wait_for_members(&stack, "beta", Duration::from_secs(30)).await;

    let (groups_first, users_first) = (
        requests(&stack, "acme").await,
        requests(&stack, "beta").await,
    );
    // A re-converge costs the group's read and one membership PATCH (the read goes with the
    // one-request-per-change work); it happens at most once per group per sweep window in
    // which some of its members arrived.
    let windows = secs.div_ceil(2) + 2;
    let bound = 2 * GROUPS as u64 * windows.min(MEMBERS as u64);
    let extra = groups_first.saturating_sub(users_first);
    eprintln!(
        "requests: groups first {groups_first}, users first {users_first}: {extra} extra for \
         {GROUPS} groups whose members arrived over {secs} s (sweep window 2 s; bound {bound})"
    );
    assert!(extra <= bound, "{extra} extra requests, over {bound}");
}

/// The references of `subject` (a group of acme) at the first target that has it.
async fn references_of(stack: &Stack, subject: &str) -> Vec<scimrelay_proto::v1::PendingReference> {
    let mut status = stack.status_client().await;
    status
        .get_subject(GetSubjectRequest {
            subject_id: subject.into(),
            kind: SubjectKind::Group as i32,
            ..Default::default()
        })
        .await
        .expect("GetSubject")
        .into_inner()
        .targets
        .remove(0)
        .pending
}

/// Polls until `check` holds for the group's references.
async fn wait_references(
    stack: &Stack,
    subject: &str,
    what: &str,
    check: impl Fn(&[scimrelay_proto::v1::PendingReference]) -> bool,
) {
    let began = Instant::now();
    loop {
        let refs = references_of(stack, subject).await;
        if check(&refs) {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{subject}: {what}; references {refs:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Members of the group named `name` at the simulator, as externalIds.
async fn members_at(stack: &Stack, tenant: &str, name: &str) -> BTreeSet<String> {
    let users = external_ids(stack, tenant).await;
    members_of(&stack.sim_groups(tenant).await, &users, name)
}

/// Polls until the group holds exactly `want`.
async fn wait_members(stack: &Stack, name: &str, want: &[&str]) {
    let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
    let began = Instant::now();
    loop {
        let have = members_at(stack, "acme", name).await;
        if have == want {
            return;
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{name}: members {have:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn user_event(id: &str, version: u64, kind: &str) -> Value {
    workload::user_event(id, version, kind, "acme")
}

fn team(version: u64, members: &[&str]) -> Value {
    json!({"id": format!("evt-team-v{version}"), "kind": "group.upserted", "tenant": "acme",
           "version": version, "group": {"id": "team", "displayName": "Team",
           "members": members}})
}

#[tokio::test]
async fn a_deleted_member_leaves_the_pending_list_with_its_reason_and_returns_when_created_again() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let mut stack = Stack::start(StackOptions {
        label: "refs-deleted".into(),
        sim_args: vec!["--tenant".into(), format!("acme:scim:bearer={token}")],
        targets_yaml: format!(
            "targets:\n{}    delete_policy: delete\n    deprovision_guard: {{ enabled: false }}\n",
            target("app", "acme")
        ),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        ..Default::default()
    })
    .await;
    let mut ids = send(&stack, &[user_event("a", 1, "user.upserted")]).await;
    assert_all_succeeded(&stack, &ids).await;
    ids.extend(send(&stack, &[team(1, &["a", "b", "c"])]).await);
    assert_all_succeeded(&stack, &ids).await;
    wait_members(&stack, "Team", &["a"]).await;
    // b is deleted at the platform before it ever reached the target: it will never come.
    ids.extend(send(&stack, &[user_event("b", 1, "user.deleted")]).await);
    wait_references(
        &stack,
        "team",
        "b dropped with its reason, c pending",
        |r| {
            r.iter()
                .any(|p| p.user_id == "b" && p.dropped.contains("not at the target"))
                && r.iter().any(|p| p.user_id == "c" && p.dropped.is_empty())
        },
    )
    .await;
    // c arrives; the group is completed. A connector killed meanwhile loses nothing: the
    // pending reference lives in the state of record.
    stack.connectors[0].signal(libc::SIGKILL);
    ids.extend(send(&stack, &[user_event("c", 1, "user.upserted")]).await);
    stack.restart_connector(0, "scim-connector-restarted").await;
    wait_members(&stack, "Team", &["a", "c"]).await;
    // a is deleted at the platform, and the group changes without it; then the group gets a
    // back before a is created again (with a newer version): the group converges each time,
    // and a returns to it when it is at the target again.
    ids.extend(send(&stack, &[user_event("a", 2, "user.deleted")]).await);
    ids.extend(send(&stack, &[team(2, &["b", "c"])]).await);
    assert_all_succeeded(&stack, &ids).await;
    wait_members(&stack, "Team", &["c"]).await;
    ids.extend(send(&stack, &[team(3, &["a", "b", "c"])]).await);
    assert_all_succeeded(&stack, &ids).await;
    wait_references(
        &stack,
        "team",
        "a dropped while it is not at the target",
        |r| r.iter().any(|p| p.user_id == "a" && !p.dropped.is_empty()),
    )
    .await;
    ids.extend(send(&stack, &[user_event("a", 3, "user.upserted")]).await);
    wait_members(&stack, "Team", &["a", "c"]).await;
    assert_all_succeeded(&stack, &ids).await;
    wait_references(&stack, "team", "only b left, dropped", |r| {
        r.len() == 1 && r[0].user_id == "b" && !r[0].dropped.is_empty()
    })
    .await;
}
