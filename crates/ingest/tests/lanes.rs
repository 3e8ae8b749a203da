//! Priorities and waiting for outcomes, in-process against the real RabbitMQ: which queue an
//! event goes to (the target's interactive lane or the subject's shard), the refusals of a
//! bulk-only key, and `Prefer: wait` / `wait_ms` answered from the reply queue — by a stand-in
//! connector that consumes the lane and publishes each copy's outcome to its `reply_to`, the
//! way the real connector does.

mod support;

use std::time::{Duration, Instant};

use futures::StreamExt as _;
use prost::Message as _;
use serde_json::{Value, json};
use tonic::Request;

use scimrelay_proto::v1::ingest_service_client::IngestServiceClient;
use scimrelay_proto::v1::{Delivery, Operation, Outcome, OutcomeResult, Priority, PublishRequest};
use scimrelay_tests::TestVhost;

use support::{Running, depths, event, grpc_event};

const SENDER: &str = "srk_login_hook";
const FEED: &str = "srk_nightly_feed";
const TIGHT: &str = "srk_one_wait_only";

struct Setup {
    vhost: TestVhost,
    r: Running,
    _keys: support::Keys,
    http: reqwest::Client,
}

async fn setup(label: &str) -> Setup {
    let vhost = TestVhost::create(label);
    let keys = support::keys(&[
        (
            "login-hook",
            SENDER,
            "    tenants: [acme, beta]\n    scopes: [send]\n    rate_per_sec: 1000\n",
        ),
        (
            "nightly-feed",
            FEED,
            "    tenants: [acme]\n    scopes: [send]\n    rate_per_sec: 1000\n    bulk_only: true\n",
        ),
        (
            "tight",
            TIGHT,
            "    tenants: [beta]\n    scopes: [send]\n    rate_per_sec: 1000\n    max_waiting: 1\n",
        ),
    ]);
    let r = support::start(vhost.amqp_url(), 1 << 20, keys.auth.clone(), None).await;
    let http = reqwest::Client::new();
    support::wait_ready(&http, &r).await;
    Setup {
        vhost,
        r,
        _keys: keys,
        http,
    }
}

/// Posts `body` with `key` and an optional `Prefer` header: status, headers, JSON answer.
async fn post(
    s: &Setup,
    key: &str,
    prefer: Option<&str>,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = s
        .http
        .post(format!("{}/v1/events", s.r.http))
        .bearer_auth(key)
        .json(body);
    if let Some(p) = prefer {
        req = req.header("Prefer", p);
    }
    let resp = req.send().await.expect("post");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

/// Messages in t1's lane and in its two shards.
async fn t1(s: &Setup) -> (u32, u32) {
    let d = depths(
        &s.vhost.amqp_url(),
        &["scimrelay.t1.now", "scimrelay.t1.0", "scimrelay.t1.1"],
    )
    .await;
    (d[0], d[1] + d[2])
}

fn with_priority(mut e: Value, priority: &str) -> Value {
    e["priority"] = json!(priority);
    e
}

#[tokio::test]
async fn priorities_choose_the_lane_or_the_shard_and_bulk_only_keys_stay_bulk() {
    let s = setup("ingest-lanes").await;
    // One event: interactive unless it says otherwise.
    let (status, _, answer) = post(&s, SENDER, None, &event("acme", "u1")).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(t1(&s).await, (1, 0));
    let bulk = with_priority(event("acme", "u2"), "bulk");
    assert_eq!(post(&s, SENDER, None, &bulk).await.0, 202);
    assert_eq!(t1(&s).await, (1, 1));
    // A batch: bulk unless an event says otherwise.
    let batch =
        json!({"events": [event("acme", "u3"), with_priority(event("acme", "u4"), "interactive")]});
    assert_eq!(post(&s, SENDER, None, &batch).await.0, 202);
    assert_eq!(t1(&s).await, (2, 2));

    // A bulk-only key: its single events are bulk; `interactive` is refused, naming the field,
    // and nothing of the request is published.
    assert_eq!(post(&s, FEED, None, &event("acme", "u5")).await.0, 202);
    assert_eq!(t1(&s).await, (2, 3));
    let (status, _, answer) = post(
        &s,
        FEED,
        None,
        &with_priority(event("acme", "u6"), "interactive"),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["code"], "priority_forbidden", "{answer}");
    assert_eq!(answer["error"]["field"], "priority", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("nightly-feed"),
        "{answer}"
    );
    let batch =
        json!({"events": [event("acme", "u7"), with_priority(event("acme", "u8"), "interactive")]});
    let (status, _, answer) = post(&s, FEED, None, &batch).await;
    assert_eq!(status, 403, "{answer}");
    assert_eq!(answer["error"]["field"], "events[1].priority", "{answer}");
    assert_eq!(t1(&s).await, (2, 3), "a refused request publishes nothing");
    let mut interactive = grpc_event("acme", "u9");
    interactive.priority = Priority::Interactive as i32;
    let mut client = IngestServiceClient::connect(s.r.grpc.clone())
        .await
        .expect("grpc");
    let mut req = Request::new(PublishRequest {
        events: vec![interactive],
        ..Default::default()
    });
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {FEED}").parse().expect("ascii"),
    );
    let err = client.publish(req).await.expect_err("bulk-only key");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().starts_with("priority:"), "{}", err.message());

    // A priority that is neither is a 400 naming it.
    let (status, _, answer) = post(
        &s,
        SENDER,
        None,
        &with_priority(event("acme", "u10"), "urgent"),
    )
    .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "priority", "{answer}");
    s.r.stop().await;
}

/// Stands in for t1's connector on its interactive lane: every copy gets a `created` outcome
/// on its reply queue (when it has one), as a connector publishes it.
fn answer_the_lane(amqp_url: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let conn = scimrelay_core::amqp::connect(&amqp_url, "stand-in-connector")
            .await
            .expect("connect");
        let publisher = scimrelay_core::amqp::Publisher::new(&conn)
            .await
            .expect("publisher");
        let ch = conn.create_channel().await.expect("channel");
        let mut consumer = ch
            .basic_consume(
                "scimrelay.t1.now".into(),
                "stand-in".into(),
                lapin::options::BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await
            .expect("consume the lane");
        while let Some(Ok(m)) = consumer.next().await {
            let d = Delivery::decode(m.data.as_slice()).expect("a delivery");
            let e = d.event.unwrap_or_default();
            let outcome = Outcome {
                event_id: e.id,
                tenant: e.tenant,
                target: d.target,
                provider: d.provider,
                subject_id: e.user.map(|u| u.id).unwrap_or_default(),
                result: OutcomeResult::Succeeded as i32,
                operation: Operation::Created as i32,
                remote_id: "remote-1".into(),
                http_status: 201,
                ..Default::default()
            };
            publisher
                .reply(
                    &d.reply_to,
                    &outcome.encode_to_vec(),
                    scimrelay_proto::TYPE_OUTCOME,
                )
                .await
                .expect("reply");
        }
    })
}

#[tokio::test]
async fn a_waiting_request_gets_its_outcomes_or_202_when_the_wait_runs_out() {
    let s = setup("ingest-wait").await;
    let stand_in = answer_the_lane(s.vhost.amqp_url());

    // Answered in time: 200 with the outcome, and the preference applied.
    let (status, headers, answer) = post(&s, SENDER, Some("wait=5"), &event("acme", "w1")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        headers
            .get("preference-applied")
            .map(|v| v.to_str().unwrap_or_default()),
        Some("wait=5")
    );
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(answer["outcomes"][0]["operation"], "created", "{answer}");
    assert_eq!(answer["outcomes"][0]["result"], "succeeded", "{answer}");
    assert_eq!(answer["outcomes"][0]["remoteId"], "remote-1", "{answer}");
    assert_eq!(
        answer["outcomes"][0]["eventId"], answer["accepted"][0]["id"],
        "{answer}"
    );

    // Nobody answers t2 (beta's target): 202 with the ids once the wait runs out.
    let began = Instant::now();
    let (status, headers, answer) = post(
        &s,
        SENDER,
        Some("respond-async, wait=1"),
        &event("beta", "w2"),
    )
    .await;
    let took = began.elapsed();
    assert_eq!(status, 202, "{answer}");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(headers.get("preference-applied").is_some());
    assert_eq!(answer["complete"], false, "{answer}");
    assert_eq!(answer["accepted"][0]["targets"], json!(["t2"]), "{answer}");
    assert_eq!(answer["outcomes"], json!([]), "{answer}");

    // Over the maximum: a 400 naming the header; nothing is published.
    let before = support::published(&s.vhost.amqp_url()).await;
    let (status, _, answer) = post(&s, SENDER, Some("wait=31"), &event("acme", "w3")).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["error"]["field"], "Prefer", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("at most 30 s"),
        "{answer}"
    );
    assert_eq!(support::published(&s.vhost.amqp_url()).await, before);

    // The same over gRPC.
    let mut client = IngestServiceClient::connect(s.r.grpc.clone())
        .await
        .expect("grpc");
    let call = |wait_ms: u32, user: &str| {
        let mut req = Request::new(PublishRequest {
            events: vec![grpc_event("acme", user)],
            wait_ms,
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {SENDER}").parse().expect("ascii"),
        );
        req
    };
    let ok = client
        .publish(call(5_000, "w4"))
        .await
        .expect("waited")
        .into_inner();
    assert!(ok.complete);
    assert_eq!(ok.outcomes.len(), 1);
    assert_eq!(ok.outcomes[0].remote_id, "remote-1");
    let err = client
        .publish(call(31_000, "w5"))
        .await
        .expect_err("over the maximum");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    assert!(err.message().starts_with("wait_ms:"), "{}", err.message());

    // A key's waits are bounded: with its one wait open, the next request is answered at once
    // without waiting (202, no preference applied).
    let first = {
        let (http, url) = (s.http.clone(), format!("{}/v1/events", s.r.http));
        tokio::spawn(async move {
            http.post(url)
                .bearer_auth(TIGHT)
                .header("Prefer", "wait=3")
                .json(&event("beta", "w6"))
                .send()
                .await
                .map(|r| r.status().as_u16())
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let began = Instant::now();
    let (status, headers, answer) = post(&s, TIGHT, Some("wait=3"), &event("beta", "w7")).await;
    assert_eq!(status, 202, "{answer}");
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(headers.get("preference-applied").is_none());
    assert_eq!(answer.get("complete"), None, "{answer}");
    assert_eq!(first.await.expect("join").expect("first"), 202);

    stand_in.abort();
    s.r.stop().await;
}
