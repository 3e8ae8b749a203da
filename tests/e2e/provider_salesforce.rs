//! salesforce-connector against the simulator's salesforce mode, through ingest, RabbitMQ and
//! status: the Salesforce row of the capability matrix with its exact `unsupported` outcomes,
//! a user without a profile failing permanently, 409 adoption, both OAuth flows, and a token
//! expiring mid-run without any event failing.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use scimrelay_proto::v1::{Operation, OutcomeResult};

use crate::provider_support::{self as ps, ProviderStack, assert_outcome, count};

const SECRET_ENV: &str = "E2E_SF_CLIENT_SECRET";
const CLIENT_ID: &str = "3MVG9-e2e-consumer-key";
const JWT_USER: &str = "integration@acme.example";

fn fixture(name: &str) -> String {
    format!(
        "{}/../crates/sim/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

enum Flow {
    ClientCredentials,
    JwtBearer,
}

async fn stack(label: &str, flow: Flow, ttl_secs: u64, options: &str) -> (ProviderStack, String) {
    let secret = format!("sf-{}", uuid::Uuid::new_v4().simple());
    let public = std::fs::read_to_string(fixture("jwt_public.pem")).expect("public key fixture");
    let sim = json!({"tenants": [{"id": "acme", "mode": "salesforce", "salesforce": {
        "client_id": CLIENT_ID, "client_secret": secret, "jwt_public_key_pem": public,
        "jwt_usernames": [JWT_USER], "token_ttl_secs": ttl_secs, "groups": ["Sales", "Support"]}}]});
    let auth = match flow {
        Flow::ClientCredentials => format!(
            "{{ kind: oauth_client_credentials, token_url: \"{{sim}}/acme/services/oauth2/token\", client_id: \"{CLIENT_ID}\", client_secret: {{ env: {SECRET_ENV} }} }}"
        ),
        Flow::JwtBearer => format!(
            "{{ kind: oauth_jwt_bearer, token_url: \"{{sim}}/acme/services/oauth2/token\", client_id: \"{CLIENT_ID}\", subject: \"{JWT_USER}\", audience: \"https://login.salesforce.com\", private_key: {{ file: \"{}\" }} }}",
            fixture("jwt_private.pem")
        ),
    };
    let targets = format!(
        r#"targets:
  - id: sf-prod
    provider: salesforce
    tenants: [acme]
    base_url: "{{sim}}/acme/services/scim/v2"
    auth: {auth}
    shards: 2
    rate_limit_per_sec: 300
    concurrency: {{ min: 1, max: 8 }}
    retry: {{ max_attempts: 12, base_delay_ms: 100, max_delay_ms: 1000 }}
    options: {options}
"#
    );
    let s = ps::start(
        label,
        &sim,
        &targets,
        BTreeMap::from([(SECRET_ENV.to_owned(), secret.clone())]),
        "salesforce-connector",
    )
    .await;
    (s, secret)
}

/// The id of the simulator's "Standard User" profile, read through the API.
async fn profile_id(s: &ProviderStack, secret: &str) -> String {
    let http = s.stack.http();
    let token: Value = http
        .post(format!("{}/acme/services/oauth2/token", s.stack.sim_url))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={secret}"
        ))
        .send()
        .await
        .expect("token")
        .json()
        .await
        .expect("token json");
    let list: Value = http
        .get(format!(
            "{}/acme/services/scim/v2/Entitlements",
            s.stack.sim_url
        ))
        .bearer_auth(token["access_token"].as_str().unwrap_or_default())
        .send()
        .await
        .expect("entitlements")
        .json()
        .await
        .expect("entitlements json");
    list["Resources"]
        .as_array()
        .and_then(|r| r.iter().find(|e| e["displayName"] == "Standard User"))
        .and_then(|e| e["id"].as_str())
        .expect("a Standard User profile")
        .to_owned()
}

fn with_profile(mut e: Value, profile: &str) -> Value {
    e["user"]["attributes"] = json!({"salesforce_profile_id": profile});
    e
}

#[tokio::test]
async fn salesforce_matrix_with_exact_unsupported_outcomes() {
    // No options.profile_id: the profile comes from each event; one user has none.
    let (s, secret) = stack(
        "sf-cells",
        Flow::ClientCredentials,
        7200,
        "{ username_suffix: \".e2e\" }",
    )
    .await;
    let p = profile_id(&s, &secret).await;
    let o = s
        .settle(&[
            with_profile(ps::user("s1", 1), &p),
            with_profile(ps::user("s2", 1), &p),
            ps::user("noprofile", 1),
        ])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    assert_outcome(&o[1], OutcomeResult::Succeeded, Operation::Created);
    let metrics = s.connector_metrics("sf-prod", None, 0.0).await;
    assert_eq!(o[2].result, OutcomeResult::Failed as i32, "{:?}", o[2]);
    assert_eq!(o[2].attempt, 1, "a permanent failure, not a retry loop");
    assert!(
        o[2].detail
            .starts_with("no Salesforce profile: set options.profile_id"),
        "{:?}",
        o[2]
    );
    let o = s
        .settle(&[
            with_profile(ps::user("s1", 2), &p),
            ps::user_event("s2", "user.deleted", 2),
        ])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_outcome(&o[1], OutcomeResult::Succeeded, Operation::Deactivated);
    assert!(
        o[1].detail.contains("cannot delete users"),
        "the outcome says DELETE only deactivates: {:?}",
        o[1]
    );
    let o = s
        .settle(&[ps::user_event("s1", "user.deactivated", 3)])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Deactivated);
    let m = |ids: &[&str]| ids.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let o = s
        .settle(&[
            ps::group("sales", "Sales", &m(&["s1", "s2"]), 1),
            ps::group("new", "Not In Salesforce", &m(&["s1"]), 1),
        ])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_eq!(o[1].result, OutcomeResult::Unsupported as i32, "{:?}", o[1]);
    assert!(
        o[1].detail
            .starts_with("Salesforce cannot create groups through SCIM"),
        "{:?}",
        o[1]
    );
    let o = s
        .settle(&[ps::group("sales", "Sales", &m(&["s2"]), 2)])
        .await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Updated);
    assert_eq!(
        ps::member_external_ids(&s, "acme", "Sales").await,
        m(&["s2"])
    );
    let o = s.settle(&[ps::group_deleted("sales", 3)]).await;
    s.connector_metrics("sf-prod", Some(&metrics), 5.0).await;
    assert_eq!(o[0].result, OutcomeResult::Unsupported as i32, "{:?}", o[0]);
    assert!(
        o[0].detail
            .starts_with("Salesforce cannot delete groups through SCIM"),
        "{:?}",
        o[0]
    );
    let users = s.admin("acme", "users").await;
    let users = users.as_array().cloned().unwrap_or_default();
    assert_eq!(users.len(), 2, "{users:?}");
    assert!(
        users
            .iter()
            .all(|u| u["userName"].as_str().is_some_and(|n| n.ends_with(".e2e")))
    );
    assert!(users.iter().all(|u| u["active"] == false));
    let stats = s.admin("acme", "stats").await;
    assert_eq!(
        count(&stats, "GET", "ServiceProviderConfigs"),
        1,
        "discovered once: {stats}"
    );
    assert_eq!(
        count(&stats, "POST", "Groups") + count(&stats, "DELETE", "Groups/{id}"),
        0,
        "{stats}"
    );
}

#[tokio::test]
async fn salesforce_token_expiring_mid_run_fails_no_event() {
    let (s, secret) = stack("sf-expiry", Flow::ClientCredentials, 1, "{}").await;
    let p = profile_id(&s, &secret).await;
    for wave in 0..3 {
        let events: Vec<_> = (0..4)
            .map(|i| with_profile(ps::user(&format!("w{wave}u{i}"), 1), &p))
            .collect();
        for o in s.settle(&events).await {
            assert_outcome(&o, OutcomeResult::Succeeded, Operation::Created);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    let stats = s.admin("acme", "stats").await;
    assert!(
        stats["by_status"]["401"].as_u64().unwrap_or(0) >= 1,
        "tokens did expire: {stats}"
    );
    assert_eq!(
        s.admin("acme", "users").await.as_array().map(Vec::len),
        Some(12)
    );
    assert!(
        !s.stack.connectors[0].log().contains(&secret),
        "the client secret leaked into the connector log"
    );
}

#[tokio::test]
async fn salesforce_jwt_bearer_and_409_adoption() {
    let (s, secret) = stack("sf-jwt", Flow::JwtBearer, 7200, "{}").await;
    let p = profile_id(&s, &secret).await;
    let o = s.settle(&[with_profile(ps::user("j1", 1), &p)]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Created);
    // The same person under another platform id (say, re-hired): the username is taken, the
    // 409 adopts the existing user instead of failing or duplicating.
    let mut again = with_profile(ps::user("j1", 1), &p);
    again["id"] = json!("evt-j1-rehire");
    again["user"]["id"] = json!("j1-rehire");
    let o = s.settle(&[again]).await;
    assert_outcome(&o[0], OutcomeResult::Succeeded, Operation::Adopted);
    let users = s.admin("acme", "users").await;
    assert_eq!(users.as_array().map(Vec::len), Some(1), "{users}");
}
