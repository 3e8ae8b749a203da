//! `scimrelay-demo` (run by `make demo`): starts every service and the simulator on a private
//! vhost, sends `deploy/samples/events.json` through ingest, waits for every outcome, prints one
//! row per event and checks the simulator holds every sample subject in its final state.
//! Exits 0 only if every event succeeded and the state check passed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use serde_json::Value;

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

async fn run(args: Args) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&args.events)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.events.display()))?;
    let events: Vec<Value> = serde_json::from_str(&text)?;
    let token = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let _ = std::fs::remove_dir_all(&args.dir);
    println!(
        "starting RabbitMQ vhost, simulator, status, scim-connector and ingest (logs in {}/)",
        args.dir.display()
    );
    let stack = Stack::start(StackOptions {
        label: "demo".into(),
        sim_args: vec!["--tenant".into(), format!("acme:scim:bearer={token}")],
        targets_yaml: DEMO_TARGETS.into(),
        env: BTreeMap::from([("DEMO_SCIM_TOKEN".to_owned(), token)]),
        connectors: vec!["scim-connector".into()],
        dir: Some(args.dir.clone()),
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
    println!(
        "sent {} events in {} requests; waiting for outcomes…\n",
        ids.len(),
        events.len().div_ceil(args.batch.max(1))
    );
    let outcomes = stack.wait_outcomes(&ids, 1, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();

    println!(
        "{:<16} {:<17} {:<8} {:>3}  {:<10} {:<10} {:<11} {:>8}  detail",
        "event", "kind", "subject", "ver", "target", "result", "operation", "latency"
    );
    let mut all_ok = true;
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (event, id) in events.iter().zip(&ids) {
        for o in outcomes.get(id).into_iter().flatten() {
            let result = OutcomeResult::try_from(o.result).unwrap_or(OutcomeResult::Unspecified);
            let op = Operation::try_from(o.operation).unwrap_or(Operation::Unspecified);
            all_ok &= result == OutcomeResult::Succeeded;
            *counts.entry(result.name()).or_default() += 1;
            println!(
                "{:<16} {:<17} {:<8} {:>3}  {:<10} {:<10} {:<11} {:>6}ms  {}",
                id,
                event["kind"].as_str().unwrap_or_default(),
                o.subject_id,
                o.version,
                o.target,
                result.name(),
                op.name(),
                o.latency_ms,
                o.detail
            );
        }
    }
    println!(
        "\n{} events, outcomes: {counts:?}, all recorded in {:.2}s",
        ids.len(),
        elapsed.as_secs_f64()
    );

    let users = stack.sim_users("acme").await;
    let groups = stack.sim_groups("acme").await;
    let problems = expect::check(&users, &groups, &events, false);
    if problems.is_empty() {
        let finals = expect::final_events(&events);
        println!(
            "simulator check: OK — it holds every sample subject in its final state ({} users, {} groups; {} subjects checked)",
            users.len(),
            groups.len(),
            finals.len()
        );
    } else {
        all_ok = false;
        println!("simulator check: FAILED");
        for p in &problems {
            println!("  - {p}");
        }
    }
    println!(
        "{}",
        if all_ok {
            "demo: every event succeeded"
        } else {
            "demo: FAILED (see above and the logs)"
        }
    );
    Ok(all_ok)
}

const DEMO_TARGETS: &str = r#"# The demo's targets file: one generic SCIM application, served by the simulator.
targets:
  - id: scim-demo
    provider: scim
    tenants: [acme]
    base_url: "{sim}/acme/scim/v2"
    auth:
      kind: bearer
      token: { env: DEMO_SCIM_TOKEN }
    shards: 4
    concurrency: { min: 1, max: 8 }
    retry: { max_attempts: 10, base_delay_ms: 100, max_delay_ms: 2000 }
"#;
