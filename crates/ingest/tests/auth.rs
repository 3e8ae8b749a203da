//! API keys on both transports, in-process against the real RabbitMQ: every refusal has its
//! status, names what was wrong, and publishes nothing; a good key for its tenant goes through;
//! health, readiness, metrics and the OpenAPI document need no key.

mod support;

use serde_json::{Value, json};
use tonic::Request;

use scimrelay_proto::v1::PublishRequest;
use scimrelay_proto::v1::ingest_service_client::IngestServiceClient;
use scimrelay_tests::TestVhost;

use support::{Running, assert_nothing_published, event, grpc_event, published};

const GOOD: &str = "srk_good_acme_sender";
const READER: &str = "srk_read_only";
const REVOKED: &str = "srk_revoked_long_ago";
const SLOW_HTTP: &str = "srk_slow_http";
const SLOW_GRPC: &str = "srk_slow_grpc";

fn test_keys() -> support::Keys {
    support::keys(&[
        (
            "acme-sender",
            GOOD,
            "    tenants: [acme]\n    scopes: [send]\n    rate_per_sec: 1000\n",
        ),
        (
            "acme-reader",
            READER,
            "    tenants: [acme]\n    scopes: [read]\n",
        ),
        (
            "old-sender",
            REVOKED,
            "    tenants: [acme]\n    scopes: [send]\n    revoked: true\n",
        ),
        (
            "slow-http",
            SLOW_HTTP,
            "    tenants: [acme]\n    scopes: [send]\n    rate_per_sec: 1\n",
        ),
        (
            "slow-grpc",
            SLOW_GRPC,
            "    tenants: [acme]\n    scopes: [send]\n    rate_per_sec: 1\n",
        ),
    ])
}

struct Setup {
    vhost: TestVhost,
    r: Running,
    _keys: support::Keys,
    http: reqwest::Client,
}

async fn setup(label: &str, max_body_bytes: usize) -> Setup {
    let vhost = TestVhost::create(label);
    let keys = test_keys();
    let r = support::start(vhost.amqp_url(), max_body_bytes, keys.auth.clone(), None).await;
    let http = reqwest::Client::new();
    support::wait_ready(&http, &r).await;
    Setup {
        vhost,
        r,
        _keys: keys,
        http,
    }
}

/// Posts `body` with `key` (none when `None`): status, headers, JSON answer.
async fn post(
    s: &Setup,
    key: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = s.http.post(format!("{}/v1/events", s.r.http)).json(body);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// Publishes `events` over gRPC with `key` (none when `None`).
async fn grpc_publish(
    s: &Setup,
    key: Option<&str>,
    events: Vec<scimrelay_proto::v1::IdentityEvent>,
) -> Result<tonic::Response<scimrelay_proto::v1::PublishResponse>, tonic::Status> {
    let mut client = IngestServiceClient::connect(s.r.grpc.clone())
        .await
        .expect("grpc connect");
    let mut req = Request::new(PublishRequest {
        events,
        ..Default::default()
    });
    if let Some(k) = key {
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {k}").parse().expect("ascii"),
        );
    }
    client.publish(req).await
}

fn assert_error(answer: &Value, code: &str, field: &str, says: &str) {
    assert_eq!(answer["error"]["code"], code, "{answer}");
    assert_eq!(answer["error"]["field"], field, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(says), "{says:?} not in {answer}");
}

fn assert_never_echoes(answer: &str, key: &str) {
    assert!(
        !answer.contains(key),
        "the presented key is echoed: {answer}"
    );
}

#[tokio::test]
async fn missing_key_is_401_with_a_bearer_challenge_and_unauthenticated() {
    let s = setup("auth-missing", 1 << 20).await;
    let (status, headers, answer) = post(&s, None, &event("acme", "u1")).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_error(
        &answer,
        "missing_api_key",
        "Authorization",
        "Authorization: Bearer",
    );

    let err = grpc_publish(&s, None, vec![grpc_event("acme", "u1")])
        .await
        .expect_err("no key");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("missing API key"), "{err}");

    assert_nothing_published(&s.vhost.amqp_url()).await;
    s.r.stop().await;
}

#[tokio::test]
async fn wrong_key_is_401_and_unauthenticated_without_echoing_it() {
    let s = setup("auth-wrong", 1 << 20).await;
    let wrong = "srk_this_is_not_a_key_of_ours";
    let (status, headers, answer) = post(&s, Some(wrong), &event("acme", "u1")).await;
    assert_eq!(status, 401, "{answer}");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer error="invalid_token""#
    );
    assert_error(
        &answer,
        "invalid_api_key",
        "Authorization",
        "invalid API key",
    );
    assert_never_echoes(&answer.to_string(), wrong);
    // Without the scheme the value is not a bearer key at all.
    let resp = s
        .http
        .post(format!("{}/v1/events", s.r.http))
        .header("authorization", GOOD)
        .json(&event("acme", "u1"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 401);

    let err = grpc_publish(&s, Some(wrong), vec![grpc_event("acme", "u1")])
        .await
        .expect_err("wrong key");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(err.message().contains("invalid API key"), "{err}");
    assert_never_echoes(err.message(), wrong);

    assert_nothing_published(&s.vhost.amqp_url()).await;
    s.r.stop().await;
}

#[tokio::test]
async fn revoked_key_is_401_saying_it_was_revoked() {
    let s = setup("auth-revoked", 1 << 20).await;
    let (status, headers, answer) = post(&s, Some(REVOKED), &event("acme", "u1")).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        headers["www-authenticate"]
            .to_str()
            .is_ok_and(|v| v.starts_with("Bearer error=\"invalid_token\"")),
        "{headers:?}"
    );
    assert_error(
        &answer,
        "revoked_api_key",
        "Authorization",
        "\"old-sender\" has been revoked",
    );
    assert_never_echoes(&answer.to_string(), REVOKED);

    let err = grpc_publish(&s, Some(REVOKED), vec![grpc_event("acme", "u1")])
        .await
        .expect_err("revoked");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");
    assert!(
        err.message().contains("\"old-sender\" has been revoked"),
        "{err}"
    );

    assert_nothing_published(&s.vhost.amqp_url()).await;
    s.r.stop().await;
}

#[tokio::test]
async fn read_only_key_is_403_and_permission_denied() {
    let s = setup("auth-scope", 1 << 20).await;
    let (status, headers, answer) = post(&s, Some(READER), &event("acme", "u1")).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(
        headers["www-authenticate"],
        r#"Bearer error="insufficient_scope", scope="send""#
    );
    assert_error(
        &answer,
        "insufficient_scope",
        "Authorization",
        "lacks the `send` scope",
    );

    let err = grpc_publish(&s, Some(READER), vec![grpc_event("acme", "u1")])
        .await
        .expect_err("read-only");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(
        err.message()
            .contains("\"acme-reader\" lacks the `send` scope"),
        "{err}"
    );

    assert_nothing_published(&s.vhost.amqp_url()).await;
    s.r.stop().await;
}

#[tokio::test]
async fn foreign_tenant_in_a_batch_is_403_naming_the_field_and_publishes_nothing() {
    let s = setup("auth-tenant", 1 << 20).await;
    // Four good acme events and one for beta, which the key may not act for: the whole batch
    // is refused, including the acme events before it.
    let mut batch: Vec<Value> = (0..4).map(|i| event("acme", &format!("u{i}"))).collect();
    batch.insert(3, event("beta", "b1"));
    let (status, _, answer) = post(&s, Some(GOOD), &json!({ "events": batch })).await;
    assert_eq!(status, 403, "{answer}");
    assert_error(
        &answer,
        "tenant_forbidden",
        "events[3].tenant",
        "may not act for tenant \"beta\"",
    );
    // A single event names the bare field.
    let (status, _, answer) = post(&s, Some(GOOD), &event("beta", "b1")).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["field"], "tenant", "{answer}");

    let events = vec![
        grpc_event("acme", "u1"),
        grpc_event("acme", "u2"),
        grpc_event("beta", "b1"),
    ];
    let err = grpc_publish(&s, Some(GOOD), events)
        .await
        .expect_err("foreign tenant");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(
        err.message().starts_with("events[2].tenant: ") && err.message().contains("\"beta\""),
        "{err}"
    );

    assert_nothing_published(&s.vhost.amqp_url()).await;
    s.r.stop().await;
}

#[tokio::test]
async fn key_over_its_rate_is_429_with_retry_after() {
    let s = setup("auth-rate", 1 << 20).await;
    // One request per second: the first (an invalid event, so it publishes nothing) takes the
    // second's budget; the next, a good event, is refused before it is read.
    let mut invalid = event("acme", "u1");
    invalid["version"] = json!(0);
    let (status, _, answer) = post(&s, Some(SLOW_HTTP), &invalid).await;
    assert_eq!(status, 400, "{answer}");
    let (status, headers, answer) = post(&s, Some(SLOW_HTTP), &event("acme", "u1")).await;
    assert_eq!(status, 429, "{answer}");
    let retry_after: u64 = headers["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    assert_error(
        &answer,
        "rate_limited",
        "Authorization",
        "\"slow-http\" is over its rate",
    );

    let mut bad = grpc_event("acme", "u1");
    bad.version = 0;
    let err = grpc_publish(&s, Some(SLOW_GRPC), vec![bad])
        .await
        .expect_err("invalid");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let err = grpc_publish(&s, Some(SLOW_GRPC), vec![grpc_event("acme", "u1")])
        .await
        .expect_err("over the rate");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(
        err.message().contains("\"slow-grpc\" is over its rate"),
        "{err}"
    );
    let retry_after: u64 = err
        .metadata()
        .get("retry-after")
        .expect("retry-after metadata")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(retry_after >= 1, "retry-after {retry_after}");

    // Each key has its own budget.
    let (status, _, answer) = post(&s, Some(GOOD), &event("acme", "u1")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        published(&s.vhost.amqp_url()).await,
        1,
        "only the good key's event"
    );
    s.r.stop().await;
}

#[tokio::test]
async fn oversized_body_is_413_naming_body_but_only_after_the_key_check() {
    let s = setup("auth-size", 4 * 1024).await;
    let big =
        json!({"events": (0..100).map(|i| event("acme", &format!("u{i}"))).collect::<Vec<_>>()});
    assert!(big.to_string().len() > 4 * 1024);
    let (status, _, answer) = post(&s, Some(GOOD), &big).await;
    assert_eq!(status, 413, "{answer}");
    assert_error(
        &answer,
        "body_too_large",
        "body",
        "SCIMRELAY_INGEST_MAX_BODY_BYTES",
    );
    // Without a key the size is never looked at.
    let (status, _, answer) = post(&s, None, &big).await;
    assert_eq!(status, 401, "{answer}");

    // gRPC: a message over the decoder's limit, refused by tonic's decoder with the key, and
    // refused before decoding without one.
    let mut huge = grpc_event("acme", "u1");
    if let Some(u) = huge.user.as_mut() {
        u.display_name = "x".repeat(scimrelay_ingest::grpc::MAX_GRPC_MESSAGE_BYTES + 1);
    }
    let err = grpc_publish(&s, Some(GOOD), vec![huge.clone()])
        .await
        .expect_err("too large");
    assert_eq!(err.code(), tonic::Code::OutOfRange, "{err}");
    assert!(err.message().contains("message length too large"), "{err}");
    let err = grpc_publish(&s, None, vec![huge])
        .await
        .expect_err("no key");
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err}");

    assert_nothing_published(&s.vhost.amqp_url()).await;
    s.r.stop().await;
}

#[tokio::test]
async fn good_key_for_acme_is_accepted_over_http_and_grpc() {
    let s = setup("auth-good", 1 << 20).await;
    let (status, _, answer) = post(&s, Some(GOOD), &event("acme", "u1")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"][0]["targets"], json!(["t1"]));
    // The scheme is case-insensitive.
    let resp = s
        .http
        .post(format!("{}/v1/events", s.r.http))
        .header("authorization", format!("bearer {GOOD}"))
        .json(&event("acme", "u2"))
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status().as_u16(), 202);

    let ok = grpc_publish(&s, Some(GOOD), vec![grpc_event("acme", "u3")])
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(ok.accepted.len(), 1);
    assert_eq!(ok.accepted[0].targets, vec!["t1".to_owned()]);

    assert_eq!(published(&s.vhost.amqp_url()).await, 3);
    s.r.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_openapi_need_no_key() {
    let s = setup("auth-open", 1 << 20).await;
    for path in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let resp = s
            .http
            .get(format!("{}{path}", s.r.http))
            .send()
            .await
            .expect("get");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
    }
    s.r.stop().await;
}

#[tokio::test]
async fn without_a_keys_file_every_caller_is_accepted() {
    let vhost = TestVhost::create("auth-off");
    let r = support::start(
        vhost.amqp_url(),
        1 << 20,
        scimrelay_core::auth::Authenticator::disabled(),
        None,
    )
    .await;
    let http = reqwest::Client::new();
    support::wait_ready(&http, &r).await;
    for key in [None, Some("anything at all")] {
        let mut req = http
            .post(format!("{}/v1/events", r.http))
            .json(&event("beta", "b1"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.expect("post");
        assert_eq!(resp.status().as_u16(), 202, "{key:?}");
    }
    let mut client = IngestServiceClient::connect(r.grpc.clone())
        .await
        .expect("grpc connect");
    client
        .publish(PublishRequest {
            events: vec![grpc_event("acme", "u1")],
            ..Default::default()
        })
        .await
        .expect("no key needed");
    assert_eq!(published(&vhost.amqp_url()).await, 3);
    r.stop().await;
}
