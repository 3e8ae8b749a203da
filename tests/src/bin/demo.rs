//! `scimrelay-demo` (run by `make demo`): starts every service — status, ingest and the four
//! connectors (generic SCIM, GitHub, AWS, Salesforce) — and the simulator with one tenant per
//! provider on a private vhost, sends `deploy/samples/events.json` through ingest to all four
//! targets, waits for every outcome, prints one row per event with its outcome at each target,
//! and checks the simulator holds every sample subject in its final state at each target. Then
//! login-time provisioning: with 1,000 bulk creations queued at the generic SCIM target (its
//! simulator tenant slowed down), a first login sent with `Prefer: wait=5` comes back with its
//! outcome (README, "Login-time provisioning").
//! Exits 0 only if every event succeeded everywhere, every state check passed and the login was
//! answered with its outcome.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::{Value, json};

use scimrelay_proto::v1::{Operation, OutcomeResult};
use scimrelay_tests::{Stack, StackOptions, expect};

/// Runs the scimrelay demo end to end against the simulator.
#[derive(Parser)]
#[command(about, long_about)]
struct Args {
    /// The sample events (a JSON array).
    #[arg(long, default_value = "deploy/samples/events.json")]
    events: PathBuf,
    /// Where logs and the status database go.
    #[arg(long, default_value = ".demo")]
    dir: PathBuf,
    /// Events per ingest request.
    #[arg(long, default_value_t = 10)]
    batch: usize,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// One demo target: its id, the simulator tenant behind it, and how to check its state.
struct DemoTarget {
    id: &'static str,
    tenant: &'static str,
    check: expect::CheckOptions,
}

fn demo_targets() -> Vec<DemoTarget> {
    vec![
        DemoTarget {
            id: "scim-demo",
            tenant: "acme",
            check: expect::CheckOptions::default(),
        },
        DemoTarget {
            id: "github-demo",
            tenant: "acme-gh",
            check: expect::CheckOptions {
                skip_title: true,
                ..Default::default()
            },
        },
        DemoTarget {
            id: "aws-demo",
            tenant: "acme-aws",
            check: expect::CheckOptions::default(),
        },
        DemoTarget {
            id: "salesforce-demo",
            tenant: "acme-sf",
            check: expect::CheckOptions {
                user_name_suffix: ".demo".into(),
                groups_by_display_name: true,
                ..Default::default()
            },
        },
    ]
}

fn cell(o: &scimrelay_proto::v1::Outcome) -> String {
    let result = OutcomeResult::try_from(o.result).unwrap_or(OutcomeResult::Unspecified);
    if result == OutcomeResult::Succeeded {
        Operation::try_from(o.operation)
            .unwrap_or(Operation::Unspecified)
            .name()
            .to_owned()
    } else {
        result.name().to_uppercase()
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.events)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.events.display()))?;
    let events: Vec<Value> = serde_json::from_str(&text)?;
    // Random per run; a test may fix them (the variables below) to look for them in every log
    // line and span afterwards.
    let secret = |name: &str, var: &str| {
        std::env::var(var)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| format!("demo-{name}-{}", uuid::Uuid::new_v4().simple()))
    };
    let (scim, github, aws, sf) = (
        secret("scim", "DEMO_SCIM_TOKEN"),
        secret("github", "DEMO_GITHUB_TOKEN"),
        secret("aws", "DEMO_AWS_TOKEN"),
        secret("sf", "DEMO_SF_SECRET"),
    );
    let _ = std::fs::remove_dir_all(&args.dir);
    println!(
        "starting a RabbitMQ vhost, the simulator (plain SCIM, GitHub, AWS and Salesforce tenants),"
    );
    println!(
        "status, the four connectors and ingest (logs in {}/)",
        args.dir.display()
    );
    let stack = Stack::start(StackOptions {
        label: "demo".into(),
        sim_args: vec![
            "--tenant".into(),
            format!("acme:scim:bearer={scim}"),
            "--tenant".into(),
            format!("acme-gh:github:shortcode=acme:requests_per_hour=1000000:bearer={github}"),
            "--tenant".into(),
            format!("acme-aws:aws:bearer={aws}"),
            "--tenant".into(),
            format!("acme-sf:salesforce:client=demo-client:secret={sf}:groups=Engineering,Sales"),
        ],
        targets_yaml: DEMO_TARGETS.into(),
        // OTEL_* settings of the demo's own environment reach every service, so
        // `OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 make demo` shows the run in Jaeger.
        env: BTreeMap::from([
            ("DEMO_SCIM_TOKEN".to_owned(), scim),
            ("DEMO_GITHUB_TOKEN".to_owned(), github),
            ("DEMO_AWS_TOKEN".to_owned(), aws),
            ("DEMO_SF_SECRET".to_owned(), sf),
        ])
        .into_iter()
        .chain(std::env::vars().filter(|(k, _)| k.starts_with("OTEL_")))
        .collect(),
        connectors: [
            "scim-connector",
            "github-connector",
            "aws-connector",
            "salesforce-connector",
        ]
        .map(String::from)
        .to_vec(),
        dir: Some(args.dir.clone()),
        ..Default::default()
    })
    .await;
    println!(
        "simulator at {}, ingest at {}, status at {}",
        stack.sim_url, stack.ingest_http, stack.status_grpc
    );

    let started = Instant::now();
    let mut ids = Vec::new();
    for chunk in events.chunks(args.batch.max(1)) {
        let (status, answer) = stack.post_events(&Value::Array(chunk.to_vec())).await;
        anyhow::ensure!(status == 202, "ingest answered {status}: {answer}");
        ids.extend(Stack::accepted_ids(&answer));
    }
    let targets = demo_targets();
    println!(
        "sent {} events in {} requests, each to {} targets; waiting for outcomes…\n",
        ids.len(),
        events.len().div_ceil(args.batch.max(1)),
        targets.len()
    );
    let outcomes = stack
        .wait_outcomes(&ids, targets.len(), Duration::from_secs(120))
        .await;
    let elapsed = started.elapsed();

    print!(
        "{:<14} {:<17} {:<7} {:>3}",
        "event", "kind", "subject", "ver"
    );
    for t in &targets {
        print!("  {:<15}", t.id);
    }
    println!();
    let mut all_ok = true;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut notes = Vec::new();
    let mut latencies: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (event, id) in events.iter().zip(&ids) {
        let subject = event["user"]["id"]
            .as_str()
            .or(event["group"]["id"].as_str())
            .unwrap_or_default();
        print!(
            "{:<14} {:<17} {:<7} {:>3}",
            id,
            event["kind"].as_str().unwrap_or_default(),
            subject,
            event["version"]
        );
        for t in &targets {
            let o = outcomes
                .get(id)
                .into_iter()
                .flatten()
                .find(|o| o.target == t.id);
            match o {
                Some(o) => {
                    let result =
                        OutcomeResult::try_from(o.result).unwrap_or(OutcomeResult::Unspecified);
                    all_ok &= result == OutcomeResult::Succeeded;
                    *counts.entry(result.name()).or_default() += 1;
                    latencies.entry(t.id).or_default().push(o.latency_ms);
                    if !o.detail.is_empty() {
                        notes.push(format!("{id} → {}: {}", t.id, o.detail));
                    }
                    print!("  {:<15}", cell(o));
                }
                None => {
                    all_ok = false;
                    print!("  {:<15}", "MISSING");
                }
            }
        }
        println!();
    }
    println!();
    for n in &notes {
        println!("  note: {n}");
    }
    println!(
        "\n{} events × {} targets, outcomes: {counts:?}, all recorded in {:.2}s",
        ids.len(),
        targets.len(),
        elapsed.as_secs_f64()
    );
    for (t, l) in &mut latencies {
        l.sort_unstable();
        let p = |q: f64| {
            l.get(((l.len() as f64 - 1.0) * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        println!(
            "  {t:<16} ingest→outcome latency p50 {} ms, max {} ms",
            p(0.5),
            p(1.0)
        );
    }

    println!();
    for t in &targets {
        let (users, groups, problems) = stack
            .settled(t.tenant, Duration::from_secs(20), |u, g| {
                expect::check_with(u, g, &events, &t.check)
            })
            .await;
        if problems.is_empty() {
            println!(
                "simulator check {:<16} OK — every sample subject in its final state ({} users, {} groups)",
                t.id,
                users.len(),
                groups
                    .iter()
                    .filter(|g| g["members"].as_array().is_some_and(|m| !m.is_empty()))
                    .count()
            );
        } else {
            all_ok = false;
            println!("simulator check {:<16} FAILED", t.id);
            for p in &problems {
                println!("  - {p}");
            }
        }
    }
    all_ok &= login_during_bulk(&stack).await?;
    println!(
        "{}",
        if all_ok {
            "demo: every event succeeded at every target"
        } else {
            "demo: FAILED (see above and the logs)"
        }
    );
    Ok(all_ok)
}

/// Bulk creations queued before the login.
const LOGIN_BULK: usize = 1000;

/// Login-time provisioning: a first login overtakes a queued bulk load at `scim-demo` and its
/// answer carries the outcome. Returns whether the login was answered with a `created`
/// outcome in time and the bulk converged afterwards.
async fn login_during_bulk(stack: &Stack) -> anyhow::Result<bool> {
    println!(
        "\nlogin-time provisioning: {LOGIN_BULK} bulk creations for scim-demo, its simulator tenant slowed to 100 ms a request…"
    );
    stack
        .set_faults("acme", &json!({"latency_ms": {"min": 100, "max": 100}}))
        .await;
    let user = |id: String| {
        json!({"kind": "user.upserted", "tenant": "acme", "version": 1, "targets": ["scim-demo"],
               "user": {"id": id, "userName": format!("{id}@example.com"), "displayName": format!("User {id}")}})
    };
    let posts = |s: &Value| s["by_method"]["POST"].as_u64().unwrap_or_default();
    let before = posts(&stack.sim_stats("acme").await);
    let bulk: Vec<Value> = (0..LOGIN_BULK)
        .map(|i| user(format!("bulk-{i:04}")))
        .collect();
    let mut ids = Vec::new();
    for chunk in bulk.chunks(500) {
        let (status, answer) = stack.post_events(&json!({ "events": chunk })).await;
        anyhow::ensure!(status == 202, "ingest answered {status}: {answer}");
        ids.extend(Stack::accepted_ids(&answer));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let created = posts(&stack.sim_stats("acme").await).saturating_sub(before);
    let began = Instant::now();
    let answer = stack
        .http()
        .post(format!("{}/v1/events", stack.ingest_http))
        .header("Prefer", "wait=5")
        .json(&user("first-login".into()))
        .send()
        .await?;
    let took = began.elapsed();
    let status = answer.status().as_u16();
    let answer: Value = answer.json().await?;
    let o = &answer["outcomes"][0];
    let ok = status == 200 && o["result"] == "succeeded" && o["operation"] == "created";
    println!(
        "  first login, sent with `Prefer: wait=5` while {} bulk creations were still queued:",
        LOGIN_BULK as u64 - created.min(LOGIN_BULK as u64)
    );
    println!(
        "  HTTP {status} in {} ms (two requests of 100 ms at the slowed tenant): {} {} at {}, remote id {}",
        took.as_millis(),
        o["result"].as_str().unwrap_or("-"),
        o["operation"].as_str().unwrap_or("-"),
        o["target"].as_str().unwrap_or("-"),
        o["remoteId"].as_str().unwrap_or("-"),
    );
    stack.set_faults("acme", &json!({})).await;
    let began = Instant::now();
    let outcomes = stack.wait_outcomes(&ids, 1, Duration::from_secs(120)).await;
    let succeeded = outcomes
        .values()
        .flatten()
        .filter(|o| o.result == OutcomeResult::Succeeded as i32)
        .count();
    println!(
        "  the bulk load then finished: {succeeded} of {LOGIN_BULK} succeeded {:.1} s later",
        began.elapsed().as_secs_f64()
    );
    Ok(ok && succeeded == LOGIN_BULK)
}

const DEMO_TARGETS: &str = r#"# The demo's targets file: one target per provider, each served by the simulator.
# Rate ceilings are raised for the simulator (its GitHub tenant also gets a larger hourly budget:
# with GitHub's real 5,000 requests/hour, scimrelay spreads the remaining quota over the hour,
# about 1.4 requests/s); real providers keep their published defaults.
targets:
  - id: scim-demo
    provider: scim
    tenants: [acme]
    base_url: "{sim}/acme/scim/v2"
    auth: { kind: bearer, token: { env: DEMO_SCIM_TOKEN } }
    shards: 4
    concurrency: { min: 1, max: 8 }
    retry: { max_attempts: 10, base_delay_ms: 100, max_delay_ms: 2000 }
  - id: github-demo
    provider: github
    tenants: [acme]
    base_url: "{sim}/scim/v2/enterprises/acme-gh"
    auth: { kind: bearer, token: { env: DEMO_GITHUB_TOKEN } }
    shards: 4
    rate_limit_per_sec: 100
    retry: { max_attempts: 10, base_delay_ms: 100, max_delay_ms: 2000 }
    options: { shortcode: acme, user_creates_per_hour: 100000 }
  - id: aws-demo
    provider: aws
    tenants: [acme]
    base_url: "{sim}/acme-aws/scim/v2"
    auth: { kind: bearer, token: { env: DEMO_AWS_TOKEN } }
    shards: 4
    rate_limit_per_sec: 100
    delete_policy: delete
    retry: { max_attempts: 10, base_delay_ms: 100, max_delay_ms: 2000 }
  - id: salesforce-demo
    provider: salesforce
    tenants: [acme]
    base_url: "{sim}/acme-sf/services/scim/v2"
    auth:
      kind: oauth_client_credentials
      token_url: "{sim}/acme-sf/services/oauth2/token"
      client_id: demo-client
      client_secret: { env: DEMO_SF_SECRET }
    shards: 4
    retry: { max_attempts: 10, base_delay_ms: 100, max_delay_ms: 2000 }
    options: { profile_name: "Standard User", username_suffix: ".demo" }
"#;
