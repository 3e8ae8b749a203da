//! The whole system over mutual TLS with a PKI generated in the test: ingest (HTTP and gRPC)
//! and status serve TLS and demand client certificates of the CA; the connectors read the
//! ledger and ask the deprovisioning guard over TLS; scimrelayctl works with the client
//! certificate; a client with a certificate from another CA, or with none, is refused.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use scimrelay_proto::v1::status_service_client::StatusServiceClient;
use scimrelay_proto::v1::{ListTargetsRequest, OutcomeResult};
use scimrelay_tests::{Stack, StackOptions, bin_path};

const TOKEN_ENV: &str = "E2E_SCIM_TOKEN";

#[tokio::test]
async fn mutual_tls_end_to_end_and_strangers_refused() {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start(StackOptions {
        label: "tls".into(),
        sim_args: vec!["--tenant".into(), format!("acme:scim:bearer={token}")],
        targets_yaml: format!(
            r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 2
    deprovision_guard: {{ max_share: 0.5, window_secs: 600, min_users: 2 }}
"#
        ),
        env: BTreeMap::from([(TOKEN_ENV.to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        tls: true,
        ..Default::default()
    })
    .await;
    assert!(stack.ingest_http.starts_with("https://"));
    assert!(stack.status_grpc.starts_with("https://"));

    // Events over HTTPS; a deactivation goes through the guard (status over TLS).
    let user = |id: &str, v: u64, kind: &str| {
        json!({"kind": kind, "tenant": "acme", "version": v,
               "user": {"id": id, "userName": format!("{id}@example.com"), "displayName": id,
                        "name": {"givenName": "T", "familyName": id}}})
    };
    let mut events: Vec<Value> = (0..4)
        .map(|i| user(&format!("t{i}"), 1, "user.upserted"))
        .collect();
    let (status, answer) = stack.post_events(&Value::Array(events.clone())).await;
    assert_eq!(status, 202, "{answer}");
    let mut ids = Stack::accepted_ids(&answer);
    stack.wait_outcomes(&ids, 1, Duration::from_secs(60)).await;
    events = vec![user("t0", 2, "user.deactivated")];
    let (status, answer) = stack.post_events(&Value::Array(events)).await;
    assert_eq!(status, 202, "{answer}");
    ids.extend(Stack::accepted_ids(&answer));
    let outcomes = stack.wait_outcomes(&ids, 1, Duration::from_secs(60)).await;
    for id in &ids {
        assert_eq!(
            outcomes[id][0].result,
            OutcomeResult::Succeeded as i32,
            "{id}: {:?}",
            outcomes[id]
        );
    }
    let users = stack.sim_users("acme").await;
    assert_eq!(
        users.iter().filter(|u| u["active"] == json!(false)).count(),
        1
    );

    // scimrelayctl over TLS with the client certificate.
    let out = tokio::process::Command::new(bin_path("scimrelayctl"))
        .args(stack.ctl_args())
        .args(["status", "targets", "--json"])
        .output()
        .await
        .expect("scimrelayctl");
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("\"app\""),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let pki = stack.pki.as_ref().expect("pki");
    let ca = reqwest::Certificate::from_pem_bundle(pki.ca.cert.as_bytes()).expect("ca");
    let post = |client: reqwest::Client| {
        let url = format!("{}/v1/events", stack.ingest_http);
        let key = stack.api_key.clone();
        async move {
            client
                .post(url)
                .bearer_auth(key)
                .json(&user("x1", 1, "user.upserted"))
                .send()
                .await
        }
    };
    // A stranger's certificate (another CA) and no certificate: refused at the handshake,
    // even with a valid API key.
    let stranger = reqwest::Client::builder()
        .tls_certs_merge(ca.clone())
        .identity(reqwest::Identity::from_pem(&pki.stranger.bundle()).expect("identity"))
        .build()
        .expect("client");
    assert!(
        post(stranger).await.is_err(),
        "a stranger's certificate was accepted"
    );
    let anonymous = reqwest::Client::builder()
        .tls_certs_merge(ca)
        .build()
        .expect("client");
    assert!(
        post(anonymous).await.is_err(),
        "a client without a certificate was accepted"
    );
    // Plain HTTP to the TLS port gets nowhere either.
    let plain = stack.ingest_http.replace("https://", "http://");
    let r = reqwest::Client::new()
        .post(format!("{plain}/v1/events"))
        .json(&user("x2", 1, "user.upserted"))
        .send()
        .await;
    assert!(r.map(|r| !r.status().is_success()).unwrap_or(true));

    // The same for the status service's gRPC.
    let stranger = Endpoint::from_shared(stack.status_grpc.clone())
        .expect("url")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca.cert))
                .identity(Identity::from_pem(&pki.stranger.cert, &pki.stranger.key)),
        )
        .expect("tls");
    let refused = match stranger.connect().await {
        Err(_) => true,
        Ok(ch) => StatusServiceClient::with_interceptor(ch, stack.bearer())
            .list_targets(ListTargetsRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "status served a stranger's certificate");
    let mut good = stack.status_client().await;
    assert!(
        good.list_targets(ListTargetsRequest::default())
            .await
            .is_ok()
    );

    // Nothing of the refused requests arrived.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let users = stack.sim_users("acme").await;
    assert!(
        users
            .iter()
            .all(|u| u["userName"] != json!("x1@example.com")
                && u["userName"] != json!("x2@example.com"))
    );
}
