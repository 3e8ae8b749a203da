//! The provider seam, end to end: `strict-scim-connector`, a profile used only in tests whose
//! crate is written against `scimrelay-connector` alone, runs in the real stack (ingest,
//! RabbitMQ, the status service's state of record) next to nothing but its own name in
//! `SCIMRELAY_PROVIDERS`, and converges every event kind at a simulator that refuses PUT.

use std::collections::BTreeMap;

use serde_json::json;

use scimrelay_proto::v1::{Operation, OutcomeResult};

use crate::provider_support::{self as ps, assert_outcome, count};

#[tokio::test]
async fn a_fifth_profile_runs_through_the_stack_without_changes_elsewhere() {
    let sim = json!({"tenants": [{"id": "acme", "mode": "scim", "scim": {"put": false}}]});
    let targets = r#"targets:
  - id: strict
    provider: strict-scim
    tenants: [acme]
    base_url: "{sim}/acme/scim/v2"
    auth: { kind: none }
    shards: 2
    delete_policy: delete
    options: { member_chunk: 1 }
"#;
    let env = BTreeMap::from([(
        "SCIMRELAY_PROVIDERS".to_owned(),
        "scim,github,aws,salesforce,strict-scim".to_owned(),
    )]);
    let s = ps::start("strict", &sim, targets, env, "strict-scim-connector").await;
    let o = s
        .settle(&[ps::user("a", 1), ps::user("b", 1), ps::user("c", 1)])
        .await;
    o.iter()
        .for_each(|o| assert_outcome(o, OutcomeResult::Succeeded, Operation::Created));
    let o = s
        .settle(&[
            ps::user("a", 2),
            ps::user_event("b", "user.deactivated", 2),
            ps::user_event("c", "user.deleted", 2),
        ])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_outcome(&o[1], OutcomeResult::Succeeded, Operation::Deactivated);
    assert_outcome(&o[2], OutcomeResult::Succeeded, Operation::Deleted);
    let m = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = s.settle(&[ps::group("g", "G", &m(&["a", "b"]), 1)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    assert_eq!(
        ps::member_external_ids(&s, "acme", "g").await,
        m(&["a", "b"])
    );
    let o = s.settle(&[ps::group_deleted("g", 2)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Deleted);
    let stats = s.admin("acme", "stats").await;
    assert_eq!(
        count(&stats, "PUT", "Users/{id}") + count(&stats, "PUT", "Groups/{id}"),
        0,
        "never a PUT: {stats}"
    );
    assert_eq!(
        count(&stats, "PATCH", "Groups/{id}"),
        2,
        "two members, one change per PATCH (options.member_chunk: 1): {stats}"
    );
}
