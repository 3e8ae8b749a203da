//! Observability, end to end: the services export their spans to an OTLP/gRPC receiver running
//! in this test process, log JSON, and serve `/metrics`.
//!
//! - one event that is retried through a delay tier is ONE trace holding ingest's request and
//!   publish spans, the connector's consume / converge / per-SCIM-request spans of both attempts,
//!   the outcome publish and status' write, every parent present in the trace;
//! - none of the secrets or personal values the test used appears in any span attribute or in
//!   any service's log, and the JSON logs carry the trace id;
//! - every service's `/metrics` has the per-target series, and they move when events flow.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde_json::{Value, json};

use scimrelay_proto::v1::OutcomeResult;
use scimrelay_tests::otlp::{Receiver, Span, describe};
use scimrelay_tests::{Metrics, Stack, StackOptions};

const TOKEN_ENV: &str = "OBS_SCIM_TOKEN";
const PASSWORD_ENV: &str = "OBS_SCIM_PASSWORD";

struct Secrets {
    token: String,
    password: String,
}

async fn stack(label: &str, extra_env: BTreeMap<String, String>) -> (Stack, Secrets) {
    let secrets = Secrets {
        token: format!("tok-{}", uuid::Uuid::new_v4().simple()),
        password: format!("pw-{}", uuid::Uuid::new_v4().simple()),
    };
    let mut env = BTreeMap::from([
        (TOKEN_ENV.to_owned(), secrets.token.clone()),
        (PASSWORD_ENV.to_owned(), secrets.password.clone()),
        ("SCIMRELAY_LOG_FORMAT".to_owned(), "json".to_owned()),
    ]);
    env.extend(extra_env);
    let stack = Stack::start(StackOptions {
        label: label.into(),
        sim_args: vec![
            "--tenant".into(),
            format!("acme:scim:bearer={}", secrets.token),
            "--tenant".into(),
            format!("beta:scim:basic=svc:{}", secrets.password),
        ],
        targets_yaml: format!(
            r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 2
    retry: {{ max_attempts: 12, base_delay_ms: 100, max_delay_ms: 500 }}
  - id: app-basic
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/beta/scim/v2"
    auth: {{ kind: basic, username: svc, password: {{ env: {PASSWORD_ENV} }} }}
    shards: 2
    retry: {{ max_attempts: 12, base_delay_ms: 100, max_delay_ms: 500 }}
"#
        ),
        env,
        connectors: vec!["scim-connector".into()],
        dir: None,
        ..Default::default()
    })
    .await;
    (stack, secrets)
}

fn user(id: &str, email: &str, version: u64) -> Value {
    json!({"kind": "user.upserted", "tenant": "acme", "version": version,
           "user": {"id": id, "userName": email, "displayName": "Grace Brewster Hopper",
                    "name": {"givenName": "Grace", "familyName": "Hopper"},
                    "emails": [{"value": email, "type": "work", "primary": true}]}})
}

fn is_scim_request(s: &Span) -> bool {
    s.service == "scim-connector" && s.attributes.contains_key("http.request.method")
}

#[tokio::test]
async fn observability_one_trace_per_event_across_services_without_secrets() {
    let receiver = Receiver::start().await;
    let (stack, secrets) = stack("obs-trace", receiver.env()).await;
    let email = format!("grace.{}@example.com", uuid::Uuid::new_v4().simple());

    // Every request to target `app` fails with 503 until the first failure was seen.
    stack
        .set_faults("acme", &json!({"error_rate": 1.0, "error_statuses": [503]}))
        .await;
    let (status, answer) = stack.post_events(&user("u-obs-1", &email, 1)).await;
    assert_eq!(status, 202, "{answer}");
    let ids = Stack::accepted_ids(&answer);
    let start = std::time::Instant::now();
    while !receiver
        .spans()
        .iter()
        .any(|s| is_scim_request(s) && s.attr("http.response.status_code") == Some("503"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no failed SCIM attempt seen:\n{}",
            describe(&receiver.spans())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stack.set_faults("acme", &json!({"error_rate": 0.0})).await;

    let outcomes = stack.wait_outcomes(&ids, 2, Duration::from_secs(60)).await;
    let app = outcomes[&ids[0]]
        .iter()
        .find(|o| o.target == "app")
        .cloned()
        .expect("an outcome for app");
    assert_eq!(app.result, OutcomeResult::Succeeded as i32, "{app:?}");
    assert!(app.attempt >= 2, "the event was not retried: {app:?}");
    let trace_id = app.trace_id.clone();
    assert_eq!(trace_id.len(), 32, "Outcome.trace_id: {trace_id:?}");
    let basic = outcomes[&ids[0]]
        .iter()
        .find(|o| o.target == "app-basic")
        .expect("an outcome for app-basic");
    assert_eq!(
        basic.trace_id, trace_id,
        "one event is one trace, across its targets"
    );

    // Every request `app` sent went to simulator tenant `acme`: its answers by status are the
    // attempts the trace must hold, one span each.
    let stats = stack.sim_stats("acme").await;
    let answered = |code: &str| stats["by_status"][code].as_u64().unwrap_or(0) as usize;
    let (failed, created) = (answered("503"), answered("201"));
    assert!(failed >= 1 && created == 1, "{stats}");
    let app_attempts = |spans: &[Span], code: &str| {
        spans
            .iter()
            .filter(|s| {
                is_scim_request(s)
                    && s.attr("scimrelay.target") == Some("app")
                    && s.attr("http.response.status_code") == Some(code)
            })
            .count()
    };
    // Wait until the status service's spans and every attempt's span arrived.
    let spans = receiver
        .wait_trace(&trace_id, Duration::from_secs(30), |spans| {
            spans.iter().any(|s| {
                s.service == "scimrelay-status" && s.attr("scimrelay.target") == Some("app")
            }) && spans.iter().any(|s| {
                s.service == "scimrelay-status" && s.attr("scimrelay.target") == Some("app-basic")
            }) && app_attempts(spans, "503") >= failed
                && app_attempts(spans, "201") >= created
        })
        .await;
    assert_eq!(
        (app_attempts(&spans, "503"), app_attempts(&spans, "201")),
        (failed, created),
        "one span per SCIM attempt (503s, 201s): {stats}\n{}",
        describe(&spans)
    );
    let tree = describe(&spans);

    // Services, by resource attribute.
    let services: HashSet<&str> = spans.iter().map(|s| s.service.as_str()).collect();
    for svc in ["scimrelay-ingest", "scim-connector", "scimrelay-status"] {
        assert!(services.contains(svc), "no span from {svc}:\n{tree}");
    }
    // Correctly parented: one root (ingest's request span), every other parent in the trace.
    let ids_in_trace: HashSet<&str> = spans.iter().map(|s| s.span_id.as_str()).collect();
    let roots: Vec<&Span> = spans
        .iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "roots {roots:?}:\n{tree}");
    assert_eq!(roots[0].service, "scimrelay-ingest", "{tree}");
    for s in &spans {
        assert!(
            s.parent_span_id.is_empty() || ids_in_trace.contains(s.parent_span_id.as_str()),
            "{} has a parent outside the trace:\n{tree}",
            s.name
        );
    }
    let parent_of = |s: &Span| -> Option<Span> {
        spans
            .iter()
            .find(|p| p.span_id == s.parent_span_id)
            .cloned()
    };
    // The connector consumed `app` at least twice: attempt 1 (parent: ingest's publish) and a
    // retry (parent: the connector's own retry publish).
    let consumes: Vec<&Span> = spans
        .iter()
        .filter(|s| {
            s.service == "scim-connector"
                && s.attr("messaging.system") == Some("rabbitmq")
                && s.attr("scimrelay.target") == Some("app")
                && s.attr("scimrelay.attempt").is_some()
        })
        .collect();
    assert!(consumes.len() >= 2, "consumes {}:\n{tree}", consumes.len());
    for c in &consumes {
        let p = parent_of(c).unwrap_or_else(|| panic!("consume without parent:\n{tree}"));
        assert!(
            p.name.starts_with("publish"),
            "consume's parent is {}:\n{tree}",
            p.name
        );
        let expected = if c.attr("scimrelay.attempt") == Some("1") {
            "scimrelay-ingest"
        } else {
            "scim-connector"
        };
        assert_eq!(p.service, expected, "{tree}");
    }
    // One span per SCIM attempt, under converge under consume; ≥ 2 attempts at `app`, a 503
    // then a success.
    let attempts: Vec<&Span> = spans
        .iter()
        .filter(|s| is_scim_request(s) && s.attr("scimrelay.target") == Some("app"))
        .collect();
    assert!(
        attempts.len() >= 2,
        "SCIM attempts {}:\n{tree}",
        attempts.len()
    );
    assert!(
        attempts
            .iter()
            .any(|s| s.attr("http.response.status_code") == Some("503")),
        "{tree}"
    );
    assert!(
        attempts.iter().any(|s| s
            .attr("http.response.status_code")
            .is_some_and(|c| c.starts_with('2'))),
        "{tree}"
    );
    for a in &attempts {
        let converge = parent_of(a).unwrap_or_else(|| panic!("orphan attempt:\n{tree}"));
        assert_eq!(converge.name, "converge", "{tree}");
        let consume = parent_of(&converge).unwrap_or_else(|| panic!("orphan converge:\n{tree}"));
        assert!(
            consumes.iter().any(|c| c.span_id == consume.span_id),
            "{tree}"
        );
        for key in [
            "http.request.method",
            "url.template",
            "scimrelay.send_attempt",
            "scimrelay.waited_ms",
            "scimrelay.throttled",
        ] {
            assert!(a.attributes.contains_key(key), "{key} missing on {a:?}");
        }
        let template = a.attr("url.template").unwrap_or_default();
        assert!(
            template.starts_with('/') && !template.contains('?') && !template.contains("u-obs"),
            "path template {template:?}"
        );
    }
    // The status write continues the outcome publish.
    for s in spans.iter().filter(|s| s.service == "scimrelay-status") {
        let p = parent_of(s).unwrap_or_else(|| panic!("orphan status span:\n{tree}"));
        assert_eq!(p.name, "publish scimrelay.outcomes", "{tree}");
        assert_eq!(p.service, "scim-connector", "{tree}");
        assert!(
            !s.links.is_empty(),
            "status span links its batch write: {s:?}"
        );
    }

    // (2) No secret or personal value in any span of the run, nor in any log.
    let forbidden = [
        secrets.token.as_str(),
        secrets.password.as_str(),
        email.as_str(),
        "Grace Brewster Hopper",
    ];
    for s in receiver.spans() {
        for (k, v) in s.attributes.iter().chain([(&"name".to_owned(), &s.name)]) {
            for f in forbidden {
                assert!(!v.contains(f), "span {} attribute {k} holds {f:?}", s.name);
            }
        }
    }
    let mut logs = vec![stack.ingest.log(), stack.status.log()];
    logs.extend(stack.connectors.iter().map(|c| c.log()));
    for log in &logs {
        for f in forbidden {
            assert!(!log.contains(f), "a log holds {f:?}:\n{log}");
        }
    }
    // JSON logs carry the trace id: the connector's retry line names this trace.
    let connector_log = stack.connectors[0].log();
    let retry_line = connector_log
        .lines()
        .find(|l| l.contains("retry scheduled") && l.contains(&trace_id))
        .unwrap_or_else(|| panic!("no retry log line with trace {trace_id}:\n{connector_log}"));
    let v: Value = serde_json::from_str(retry_line).expect("a JSON log line");
    assert!(
        v["spans"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["trace_id"] == trace_id.as_str()
                && s["span_id"].as_str().is_some_and(|id| id.len() == 16))),
        "{retry_line}"
    );
}

#[tokio::test]
async fn observability_metrics_per_target_exist_and_move() {
    let (stack, _secrets) = stack("obs-metrics", BTreeMap::new()).await;
    let ingest = stack.ingest_http.trim_start_matches("http://").to_owned();
    let connector = stack.connector_http[0].clone();
    let status = stack.status_http.clone();

    let send = |n: usize, round: usize| {
        let events: Vec<Value> = (0..n)
            .map(|i| {
                user(
                    &format!("m{round}-{i}"),
                    &format!("m{round}.{i}@example.com"),
                    1,
                )
            })
            .collect();
        Value::Array(events)
    };
    let (code, answer) = stack.post_events(&send(3, 1)).await;
    assert_eq!(code, 202, "{answer}");
    stack
        .wait_outcomes(&Stack::accepted_ids(&answer), 2, Duration::from_secs(60))
        .await;
    // Gauges refresh on the report / depth intervals.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = (
        stack.metrics(&ingest).await,
        stack.metrics(&connector).await,
        stack.metrics(&status).await,
    );

    // Existence of every per-target family.
    let (i, c, s) = &before;
    assert!(
        i.has("scimrelay_ingest_requests_total{transport=\"http\",status=\"202\"}"),
        "{i:?}"
    );
    assert!(
        i.has("scimrelay_ingest_published_total{target=\"app\"}"),
        "{i:?}"
    );
    assert!(
        i.has("scimrelay_ingest_request_duration_seconds_bucket"),
        "{i:?}"
    );
    for prefix in [
        "scimrelay_events_total{target=\"app\",result=\"succeeded\"}",
        "scimrelay_events_total{target=\"app-basic\",result=\"succeeded\"}",
        "scimrelay_event_duration_seconds_count{target=\"app\"",
        "scimrelay_scim_requests_total{target=\"app\"",
        "scimrelay_scim_request_duration_seconds_count{target=\"app\"",
        "scimrelay_rate_limit_wait_seconds_count{target=\"app\"",
        "scimrelay_concurrency_limit{target=\"app\"}",
        "scimrelay_in_flight{target=\"app\"}",
        "scimrelay_quarantined{target=\"app\"}",
    ] {
        assert!(c.has(prefix), "connector lacks {prefix}: {c:?}");
    }
    for prefix in [
        "scimrelay_status_outcomes_written_total{target=\"app\",result=\"succeeded\"}",
        "scimrelay_end_to_end_seconds_count{target=\"app\"",
        "scimrelay_status_write_duration_seconds_bucket",
        "scimrelay_queue_depth{target=\"app\"}",
    ] {
        assert!(s.has(prefix), "status lacks {prefix}: {s:?}");
    }
    assert!(c.value("scimrelay_concurrency_limit{target=\"app\"}") >= 1.0);
    assert_eq!(c.value("scimrelay_quarantined{target=\"app\"}"), 0.0);

    // They move: more events, a retried one among them.
    stack
        .set_faults("acme", &json!({"error_rate": 1.0, "error_statuses": [503]}))
        .await;
    let (code, answer) = stack.post_events(&send(2, 2)).await;
    assert_eq!(code, 202, "{answer}");
    let start = std::time::Instant::now();
    loop {
        let c = stack.metrics(&connector).await;
        if c.value("scimrelay_retries_total{target=\"app\",reason=\"http_5xx\"}") >= 1.0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no retry counted: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stack.set_faults("acme", &json!({"error_rate": 0.0})).await;
    stack
        .wait_outcomes(&Stack::accepted_ids(&answer), 2, Duration::from_secs(60))
        .await;
    let (i2, c2, s2) = (
        stack.metrics(&ingest).await,
        stack.metrics(&connector).await,
        stack.metrics(&status).await,
    );
    let moved = |a: &Metrics, b: &Metrics, k: &str, by: f64| {
        assert!(
            b.value(k) >= a.value(k) + by,
            "{k}: {} → {}",
            a.value(k),
            b.value(k)
        );
    };
    moved(
        i,
        &i2,
        "scimrelay_ingest_requests_total{transport=\"http\",status=\"202\"}",
        1.0,
    );
    moved(
        i,
        &i2,
        "scimrelay_ingest_published_total{target=\"app\"}",
        2.0,
    );
    moved(
        c,
        &c2,
        "scimrelay_events_total{target=\"app\",result=\"succeeded\"}",
        2.0,
    );
    moved(
        c,
        &c2,
        "scimrelay_events_total{target=\"app-basic\",result=\"succeeded\"}",
        2.0,
    );
    moved(
        c,
        &c2,
        "scimrelay_scim_requests_total{target=\"app\",method=\"GET\",status=\"503\"}",
        1.0,
    );
    moved(
        c,
        &c2,
        "scimrelay_scim_request_duration_seconds_count{target=\"app\",method=\"GET\"}",
        1.0,
    );
    moved(
        c,
        &c2,
        "scimrelay_rate_limit_wait_seconds_count{target=\"app\"}",
        2.0,
    );
    moved(
        s,
        &s2,
        "scimrelay_status_outcomes_written_total{target=\"app\",result=\"succeeded\"}",
        2.0,
    );
    moved(
        s,
        &s2,
        "scimrelay_end_to_end_seconds_count{target=\"app\"}",
        2.0,
    );
}
