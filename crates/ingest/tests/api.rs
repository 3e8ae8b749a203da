//! Ingest's HTTP and gRPC APIs in-process against the real RabbitMQ: every bad input names its
//! field on both transports, a good event is confirmed into the shard queue, and a closed
//! broker port means 503 / UNAVAILABLE, never 202.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use scimrelay_core::config::TargetsFile;
use scimrelay_ingest::IngestConfig;
use scimrelay_proto::v1::ingest_service_client::IngestServiceClient;
use scimrelay_proto::v1::{EventKind, IdentityEvent, PublishRequest, UserState};
use scimrelay_tests::TestVhost;

const TARGETS: &str = "targets:\n  - id: t1\n    provider: scim\n    tenants: [acme]\n    base_url: http://127.0.0.1:9/scim/v2\n    auth: { kind: none }\n    shards: 2\n";

struct Running {
    http: String,
    grpc: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn start(amqp_url: String, max_body_bytes: usize, max_batch: usize) -> Running {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind http");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind grpc");
    let (h, g) = (
        http.local_addr().expect("addr"),
        grpc.local_addr().expect("addr"),
    );
    let config = IngestConfig {
        http_addr: h.to_string(),
        grpc_addr: g.to_string(),
        amqp_url,
        max_body_bytes,
        max_batch,
        max_wait: std::time::Duration::from_secs(scimrelay_ingest::wait::DEFAULT_MAX_WAIT_SECS),
        targets: TargetsFile::parse(TARGETS).expect("targets"),
        auth: scimrelay_core::auth::Authenticator::disabled(),
        tls: None,
    };
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(scimrelay_ingest::serve(
        config,
        http,
        grpc,
        shutdown.clone(),
    ));
    Running {
        http: format!("http://{h}"),
        grpc: format!("http://{g}"),
        shutdown,
        task,
    }
}

async fn wait_ready(r: &Running, want: bool) {
    let client = reqwest::Client::new();
    for _ in 0..100 {
        let ok = client
            .get(format!("{}/readyz", r.http))
            .send()
            .await
            .map(|x| x.status().is_success())
            .unwrap_or(false);
        if ok == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("ingest readiness never became {want}");
}

fn good_event() -> Value {
    json!({"kind": "user.upserted", "tenant": "acme", "version": 1,
           "user": {"id": "u1", "userName": "alice@example.com", "name": {"givenName": "Alice", "familyName": "L"}}})
}

async fn post(r: &Running, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/events", r.http))
        .json(body)
        .send()
        .await
        .expect("post");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

fn grpc_user(
    user_name: &str,
    version: u64,
    kind: EventKind,
    targets: Vec<String>,
) -> IdentityEvent {
    IdentityEvent {
        tenant: "acme".into(),
        version,
        kind: kind as i32,
        targets,
        user: Some(UserState {
            id: "u1".into(),
            user_name: user_name.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn bad_inputs_name_their_field_over_http_and_grpc() {
    let vhost = TestVhost::create("ingest-bad");
    let r = start(vhost.amqp_url(), 64 * 1024, 5).await;
    wait_ready(&r, true).await;

    // HTTP: each invalid input → 400 naming the field.
    let mut no_user_name = good_event();
    no_user_name["user"]
        .as_object_mut()
        .expect("object")
        .remove("userName");
    let mut bad_version = good_event();
    bad_version["version"] = json!(0);
    let mut unknown_target = good_event();
    unknown_target["targets"] = json!(["nope"]);
    let mut unknown_kind = good_event();
    unknown_kind["kind"] = json!("user.renamed");
    for (body, field) in [
        (no_user_name, "user.userName"),
        (bad_version, "version"),
        (unknown_target, "targets[0]"),
        (unknown_kind, "kind"),
    ] {
        let (status, answer) = post(&r, &body).await;
        assert_eq!(status, 400, "{field}: {answer}");
        assert_eq!(answer["error"]["field"], field, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(field)),
            "{answer}"
        );
    }

    // 413: a body over the limit (one event, so the batch limit cannot be what answers), and
    // a batch over the limit.
    let mut huge = good_event();
    huge["user"]["displayName"] = json!("x".repeat(70 * 1024));
    let (status, answer) = post(&r, &huge).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["code"], "body_too_large", "{answer}");
    assert_eq!(answer["error"]["field"], "body", "{answer}");
    let six = json!((0..6).map(|_| good_event()).collect::<Vec<_>>());
    let (status, answer) = post(&r, &six).await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(answer["error"]["field"], "events");

    // gRPC: the same rules, INVALID_ARGUMENT naming the field.
    let mut client = IngestServiceClient::connect(r.grpc.clone())
        .await
        .expect("grpc");
    let cases = [
        (
            grpc_user("", 1, EventKind::UserUpserted, vec![]),
            "user.userName",
        ),
        (
            grpc_user("a@b.c", 0, EventKind::UserUpserted, vec![]),
            "version",
        ),
        (
            grpc_user("a@b.c", 1, EventKind::UserUpserted, vec!["nope".into()]),
            "targets[0]",
        ),
        (
            grpc_user("a@b.c", 1, EventKind::Unspecified, vec![]),
            "kind",
        ),
    ];
    for (event, field) in cases {
        let err = client
            .publish(PublishRequest {
                events: vec![event],
                ..Default::default()
            })
            .await
            .expect_err(field);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {err}");
        assert!(
            err.message().starts_with(field),
            "{field}: {}",
            err.message()
        );
    }
    let too_many = PublishRequest {
        events: (0..6)
            .map(|_| grpc_user("a@b.c", 1, EventKind::UserUpserted, vec![]))
            .collect(),
        ..Default::default()
    };
    let err = client.publish(too_many).await.expect_err("batch");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{err}");
    assert!(err.message().starts_with("events"), "{}", err.message());

    // And a good event over both transports is accepted.
    let (status, answer) = post(&r, &good_event()).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"][0]["targets"], json!(["t1"]));
    let ok = client
        .publish(PublishRequest {
            events: vec![grpc_user(
                "a@b.c",
                2,
                EventKind::UserUpserted,
                vec!["t1".into()],
            )],
            ..Default::default()
        })
        .await
        .expect("publish")
        .into_inner();
    assert_eq!(ok.accepted.len(), 1);
    assert!(!ok.accepted[0].id.is_empty(), "ingest assigns an id");

    r.shutdown.cancel();
    r.task.await.expect("join").expect("clean exit");
}

#[tokio::test]
async fn accepted_events_are_in_their_shard_queue() {
    let vhost = TestVhost::create("ingest-queue");
    let r = start(vhost.amqp_url(), 1 << 20, 100).await;
    wait_ready(&r, true).await;
    let batch: Vec<Value> = (0..10)
        .map(|i| {
            let mut e = good_event();
            e["user"]["id"] = json!(format!("u{i}"));
            e
        })
        .collect();
    let (status, answer) = post(&r, &json!({"events": batch})).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"].as_array().map(Vec::len), Some(10));
    // The management API refreshes queue stats every few seconds.
    let mut total = 0;
    for _ in 0..100 {
        total = (0..2)
            .filter_map(|s| vhost.queue_depth(&format!("scimrelay.t1.{s}")))
            .map(|(ready, _)| ready)
            .sum::<u64>();
        if total == 10 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(total, 10, "every accepted copy is durably queued");
    r.shutdown.cancel();
    r.task.await.expect("join").expect("clean exit");
}

#[tokio::test]
async fn closed_broker_port_means_503_and_unavailable() {
    // A port nothing listens on.
    let port = scimrelay_tests::free_port();
    let r = start(
        format!("amqp://guest:guest@127.0.0.1:{port}/%2f"),
        1 << 20,
        100,
    )
    .await;
    wait_ready(&r, false).await;
    let (status, answer) = post(&r, &good_event()).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable");
    let mut client = IngestServiceClient::connect(r.grpc.clone())
        .await
        .expect("grpc");
    let err = client
        .publish(PublishRequest {
            events: vec![grpc_user("a@b.c", 1, EventKind::UserUpserted, vec![])],
            ..Default::default()
        })
        .await
        .expect_err("no broker");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    r.shutdown.cancel();
    r.task.await.expect("join").expect("clean exit");
}

/// A TCP proxy to the machine's RabbitMQ that, once `frozen`, passes nothing on in either
/// direction (a broker that stopped answering without closing anything); returns its port.
async fn freezing_proxy(frozen: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(broker) = tokio::net::TcpStream::connect("127.0.0.1:5672").await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (br, bw) = broker.into_split();
            for (mut from, mut to) in [
                (
                    Box::new(cr) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
                    Box::new(bw) as Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
                ),
                (Box::new(br), Box::new(cw)),
            ] {
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        let n = match from.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        while frozen.load(std::sync::atomic::Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        if to.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        }
    });
    port
}

/// Defect: ingest waited for the broker's publisher confirms without a bound, so a broker that
/// stopped answering (without closing the connection) held every request for ever. Now the
/// answer is 503 naming the wait once `CONFIRM_TIMEOUT` has passed, and nothing is reported as
/// accepted.
#[tokio::test]
async fn unconfirmed_events_answer_503_within_the_confirm_bound() {
    let vhost = TestVhost::create("ingest-frozen");
    let frozen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let port = freezing_proxy(frozen.clone()).await;
    let url = vhost
        .amqp_url()
        .replace("127.0.0.1:5672", &format!("127.0.0.1:{port}"));
    let r = start(url, 1 << 20, 100).await;
    wait_ready(&r, true).await;
    let (status, answer) = post(&r, &good_event()).await;
    assert_eq!(status, 202, "{answer}");

    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    let started = std::time::Instant::now();
    let resp = reqwest::Client::builder()
        .timeout(scimrelay_ingest::CONFIRM_TIMEOUT * 3)
        .build()
        .expect("client")
        .post(format!("{}/v1/events", r.http))
        .json(&good_event())
        .send()
        .await
        .expect("an answer, not a request held for ever");
    let status = resp.status().as_u16();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable", "{answer}");
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("send them again"), "{answer}");
    assert!(
        started.elapsed() >= scimrelay_ingest::CONFIRM_TIMEOUT,
        "answered before the bound: {:?}",
        started.elapsed()
    );
    r.shutdown.cancel();
    // Closing a connection the broker no longer answers is bounded too; not awaited here.
    r.task.abort();
}

#[tokio::test]
async fn openapi_document_is_served_and_describes_the_api() {
    let vhost = TestVhost::create("ingest-openapi");
    let r = start(vhost.amqp_url(), 1 << 20, 100).await;
    let doc: Value = reqwest::get(format!("{}/openapi.json", r.http))
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(doc["openapi"], "3.0.3");
    let responses = &doc["paths"]["/v1/events"]["post"]["responses"];
    for code in ["202", "400", "401", "403", "413", "429", "503"] {
        assert!(responses.get(code).is_some(), "missing {code}");
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearerAuth"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["paths"]["/v1/events"]["post"]["security"],
        json!([{"bearerAuth": []}])
    );
    assert!(
        responses["429"]["headers"]["Retry-After"].is_object(),
        "429 documents Retry-After"
    );
    r.shutdown.cancel();
    r.task.await.expect("join").expect("clean exit");
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_with_a_json_error() {
    // Found by schemathesis: 404 and 405 used to come with an empty body.
    let vhost = TestVhost::create("ingest-404");
    let r = start(vhost.amqp_url(), 1 << 20, 100).await;
    let client = reqwest::Client::new();
    let nf = client
        .get(format!("{}/v2/nothing", r.http))
        .send()
        .await
        .expect("get");
    assert_eq!(nf.status().as_u16(), 404);
    let body: Value = nf.json().await.expect("json 404");
    assert_eq!(body["error"]["code"], "not_found");
    let na = client
        .delete(format!("{}/v1/events", r.http))
        .send()
        .await
        .expect("delete");
    assert_eq!(na.status().as_u16(), 405);
    let body: Value = na.json().await.expect("json 405");
    assert_eq!(body["error"]["code"], "method_not_allowed");
    r.shutdown.cancel();
    r.task.await.expect("join").expect("clean exit");
}
