//! `scimrelay-bench` (run by `make bench`, and `make bench-quick` from `make test`): a load
//! generator that drives the real stack — RabbitMQ with durable quorum queues and publisher
//! confirms, every service its own process, the simulator — and writes `BENCHMARKS.md` plus PNG
//! charts. Sections: (1) unthrottled throughput end to end with CPU seconds per event per
//! service, (2) latency percentiles at open-loop offered loads, (3) quota use against a
//! throttling provider, with a ceiling and adaptive only, (4) a backlog drained from cold with
//! resident memory over time, (5) a naive sequential SCIM client against the same simulator,
//! (6) the status service draining a backlog of outcomes into SQLite (its write rate), (7) a
//! first login's answer while a bulk load saturates the quota ([`login`]). With
//! `--baseline REV` the throughput and latency sections also run for revision REV (its own
//! release build and its own bench, in a git worktree under `target/baseline/`) in the same
//! session, and the report compares the two.
//!
//! Every figure is measured from the system's own records: ingest's `accepted_at_ms` and the
//! status service's `recorded_at_ms` (streamed with `WatchOutcomes`), the simulator's admin
//! stats, and `/proc` of each process. A run that misses its deadline reports what it got.
//!
//! The hand-written analysis between `<!-- notes -->` and `<!-- /notes -->` in an existing
//! report is kept when the report is regenerated.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use serde_json::{Value, json};

use scimrelay_proto::v1::WatchOutcomesRequest;
use scimrelay_tests::{Proc, Stack, StackOptions, free_port};

#[path = "bench/login.rs"]
mod login;

/// Measures scimrelay end to end and writes the benchmark report.
#[derive(Parser)]
#[command(about, long_about)]
struct Args {
    /// A tiny run of every section (under 2 minutes, debug build is fine): keeps the harness
    /// honest in `make test`. Writes to `target/bench-quick/` unless `--out` is given.
    #[arg(long)]
    quick: bool,
    /// The report to write (charts go to `<dir of report>/docs/bench/`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Where logs and status databases go.
    #[arg(long, default_value = "target/bench-run")]
    dir: PathBuf,
    /// Only these sections (comma-separated:
    /// throughput,latency,quota,scale,baseline,status,login).
    #[arg(long)]
    only: Option<String>,
    /// Also run the throughput and latency sections for this git revision (built in release
    /// in a worktree under `target/baseline/`, run with its own bench binary) and compare.
    #[arg(long, value_name = "REV")]
    baseline: Option<String>,
}

/// Sizes of one run; `make bench` and `--quick` differ only here.
#[derive(Clone)]
struct Sizes {
    /// Events of each unthrottled throughput run.
    throughput: Vec<usize>,
    /// (offered events/s, seconds) of each latency run.
    latency: Vec<(u32, u32)>,
    /// The simulator's quota R (requests/s) and the users created against it.
    quota_r: f64,
    quota_users: usize,
    /// Events of the backlog.
    backlog: usize,
    /// Users of the naive sequential client.
    baseline: usize,
    /// Outcomes of the status write backlog.
    status_outcomes: usize,
    /// Users of the naive client, and events of scimrelay, with a provider answering in
    /// `PROVIDER_LATENCY_MS`.
    slow_baseline: usize,
    slow_events: usize,
    /// Longest wait for one run's outcomes.
    deadline: Duration,
    /// Login during a bulk load: bulk events queued, seconds of logins, logins per second.
    login_bulk: usize,
    login_secs: u32,
    login_per_sec: f64,
}

impl Sizes {
    fn full() -> Self {
        Sizes {
            throughput: vec![10_000, 100_000],
            latency: vec![(100, 20), (1_000, 20), (3_000, 15)],
            quota_r: 200.0,
            quota_users: 3_000,
            backlog: 100_000,
            baseline: 10_000,
            status_outcomes: 50_000,
            slow_baseline: 300,
            slow_events: 5_000,
            deadline: Duration::from_secs(150),
            login_bulk: 100_000,
            login_secs: 60,
            login_per_sec: 2.0,
        }
    }
    fn quick() -> Self {
        Sizes {
            throughput: vec![300],
            latency: vec![(100, 2), (300, 2)],
            quota_r: 100.0,
            quota_users: 150,
            backlog: 400,
            baseline: 200,
            status_outcomes: 500,
            slow_baseline: 30,
            slow_events: 300,
            deadline: Duration::from_secs(30),
            login_bulk: 1_000,
            login_secs: 3,
            login_per_sec: 2.0,
        }
    }
}

const TOKEN_ENV: &str = "BENCH_SCIM_TOKEN";
/// Ingest batch size of the bulk sends (ingest accepts up to 1,000).
const BATCH: usize = 500;
/// Concurrent POSTs of the bulk sends.
const SENDERS: usize = 4;
/// Ceiling configured for the "unthrottled" runs: far above what the stack reaches, so it only
/// skips the adaptive slow start (which starts at 50 requests/s).
const UNTHROTTLED_CEILING: u32 = 20_000;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// /proc readings

/// utime + stime of a process in seconds (0 when it is gone).
fn cpu_secs(pid: u32, tck: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start at field 3 (state).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / tck
}

/// Resident memory in MiB (0 when gone).
fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kib| kib / 1024.0)
}

fn clock_ticks() -> f64 {
    cmd_out("getconf", &["CLK_TCK"])
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The RabbitMQ node's process (`beam.smp`), to count the broker's CPU too.
fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        let cmdline = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
        (comm.trim() == "beam.smp" && cmdline.contains("rabbit")).then_some(pid)
    })
}

fn cmd_out(cmd: &str, args: &[&str]) -> Option<String> {
    let o = std::process::Command::new(cmd).args(args).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_owned())
}

/// The processes of a run, by service name.
fn procs_of(stack: &Stack, extra: &[&Proc]) -> Vec<(String, u32)> {
    let mut v = vec![
        ("ingest".to_owned(), stack.ingest.pid()),
        ("status".to_owned(), stack.status.pid()),
        ("sim".to_owned(), stack.sim.pid()),
    ];
    for (i, c) in stack
        .connectors
        .iter()
        .chain(extra.iter().copied())
        .enumerate()
    {
        let name = if i == 0 {
            "scim-connector".to_owned()
        } else {
            format!("scim-connector-{i}")
        };
        v.push((name, c.pid()));
    }
    if let Some(b) = broker_pid() {
        v.push(("rabbitmq".to_owned(), b));
    }
    v.push(("load-generator".to_owned(), std::process::id()));
    v
}

/// CPU seconds of each process at one moment.
fn cpu_snapshot(procs: &[(String, u32)], tck: f64) -> BTreeMap<String, f64> {
    procs
        .iter()
        .map(|(n, p)| (n.clone(), cpu_secs(*p, tck)))
        .collect()
}

/// One RSS sample: seconds since sampling started, MiB per process.
type RssRow = (f64, Vec<(String, f64)>);

/// Samples each process's RSS every second until stopped.
struct RssSampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<RssRow>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    fn start(procs: Vec<(String, u32)>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s2, v2) = (stop.clone(), samples.clone());
        let task = tokio::spawn(async move {
            let t0 = Instant::now();
            while !s2.load(Ordering::Relaxed) {
                let row: Vec<(String, f64)> = procs
                    .iter()
                    .map(|(n, p)| (n.clone(), rss_mib(*p)))
                    .collect();
                lock(&v2).push((t0.elapsed().as_secs_f64(), row));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        RssSampler {
            stop,
            samples,
            task,
        }
    }
    async fn finish(self) -> Vec<RssRow> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        std::mem::take(&mut *lock(&self.samples))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic in a sampler task must not hide the figures gathered so far.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Highest RSS of each service over the samples.
fn peak_rss(samples: &[RssRow]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for (_, row) in samples {
        for (n, v) in row {
            let e = m.entry(n.clone()).or_insert(0.0f64);
            *e = e.max(*v);
        }
    }
    m
}

// ---------------------------------------------------------------------------------------------
// Outcomes, streamed from the status service

/// One counted terminal outcome.
#[derive(Clone)]
struct Rec {
    event_id: String,
    accepted_ms: i64,
    /// When the connector finished (its outcome's `finished_at_ms`).
    finished_ms: i64,
    recorded_ms: i64,
    result: i32,
}

/// Streams every terminal outcome recorded by the status service (`WatchOutcomes` from the
/// start, resumed after the last `seq` when the stream breaks).
struct Collector {
    recs: Arc<Mutex<Vec<Rec>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    fn start(client: scimrelay_tests::stack::StatusClient) -> Self {
        let recs = Arc::new(Mutex::new(Vec::new()));
        let r2 = recs.clone();
        let task = tokio::spawn(async move {
            let mut cursor = String::new();
            loop {
                let mut client = client.clone();
                let req = WatchOutcomesRequest {
                    cursor: cursor.clone(),
                    ..Default::default()
                };
                let Ok(resp) = client.watch_outcomes(req).await else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                };
                let mut stream = resp.into_inner();
                while let Ok(Some(r)) = stream.message().await {
                    cursor = r.seq.to_string();
                    if !r.terminal {
                        continue;
                    }
                    if let Some(o) = r.outcome {
                        lock(&r2).push(Rec {
                            event_id: o.event_id,
                            accepted_ms: o.accepted_at_ms,
                            finished_ms: o.finished_at_ms,
                            recorded_ms: r.recorded_at_ms,
                            result: o.result,
                        });
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        });
        Collector { recs, task }
    }

    fn count_prefix(&self, prefix: &str) -> usize {
        lock(&self.recs)
            .iter()
            .filter(|r| r.event_id.starts_with(prefix))
            .count()
    }

    /// Waits until `n` outcomes of events whose id starts with `prefix` are recorded, or the
    /// deadline; returns them.
    async fn wait(&self, prefix: &str, n: usize, deadline: Duration) -> Vec<Rec> {
        let start = Instant::now();
        while self.count_prefix(prefix) < n && start.elapsed() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        lock(&self.recs)
            .iter()
            .filter(|r| r.event_id.starts_with(prefix))
            .cloned()
            .collect()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Load

fn user_event(id_prefix: &str, i: usize) -> Value {
    let uid = format!("{id_prefix}u{i:07}");
    json!({"id": format!("{id_prefix}{i:07}"), "kind": "user.upserted", "tenant": "acme", "version": 1,
           "user": {"id": uid, "userName": format!("{uid}@example.com"),
                    "displayName": format!("User {i}"),
                    "name": {"givenName": "Bench", "familyName": format!("User{i}")},
                    "emails": [{"value": format!("{uid}@example.com"), "type": "work", "primary": true}]}})
}

/// POSTs pre-serialised batches with `SENDERS` in flight; returns the accepted count.
async fn send_bulk(http: &reqwest::Client, ingest: &str, prefix: &str, n: usize) -> usize {
    let bodies: Vec<Vec<u8>> = (0..n)
        .collect::<Vec<_>>()
        .chunks(BATCH)
        .map(|c| {
            let batch: Vec<Value> = c.iter().map(|i| user_event(prefix, *i)).collect();
            serde_json::to_vec(&batch).unwrap_or_default()
        })
        .collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(SENDERS));
    let mut set = tokio::task::JoinSet::new();
    for body in bodies {
        let permit = sem.clone().acquire_owned().await;
        let http = http.clone();
        let url = format!("{ingest}/v1/events");
        set.spawn(async move {
            let _permit = permit;
            post(&http, &url, body).await
        });
    }
    let mut accepted = 0;
    while let Some(r) = set.join_next().await {
        accepted += r.unwrap_or(0);
    }
    accepted
}

/// One POST, retried on 503 (broker back-pressure); returns the accepted count.
async fn post(http: &reqwest::Client, url: &str, body: Vec<u8>) -> usize {
    for _ in 0..20 {
        match http
            .post(url)
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
        {
            Ok(r) if r.status().as_u16() == 202 => {
                let v: Value = r.json().await.unwrap_or(Value::Null);
                return v["accepted"].as_array().map_or(0, Vec::len);
            }
            Ok(r) => {
                eprintln!("bench: ingest answered {}", r.status());
            }
            Err(e) => eprintln!("bench: POST {url}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    0
}

fn targets_yaml(ceiling: Option<f64>, concurrency: (u32, u32)) -> String {
    let ceiling = ceiling
        .map(|c| format!("    rate_limit_per_sec: {c}\n"))
        .unwrap_or_default();
    format!(
        r#"targets:
  - id: app
    provider: scim
    tenants: [acme]
    base_url: "{{sim}}/acme/scim/v2"
    auth: {{ kind: bearer, token: {{ env: {TOKEN_ENV} }} }}
    shards: 8
    timeout_secs: 10
    concurrency: {{ min: {}, max: {} }}
    retry: {{ max_attempts: 30, base_delay_ms: 100, max_delay_ms: 2000 }}
{ceiling}"#,
        concurrency.0, concurrency.1
    )
}

async fn start_stack(
    args: &Args,
    label: &str,
    targets: String,
    connectors: usize,
) -> (Stack, String) {
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let dir = args.dir.join(label);
    let _ = std::fs::remove_dir_all(&dir);
    let stack = Stack::start(StackOptions {
        label: format!("bench-{label}"),
        sim_args: vec![
            "--tenant".into(),
            format!("acme:scim:bearer={token}"),
            "--tenant".into(),
            format!("base:scim:bearer={token}"),
        ],
        targets_yaml: targets,
        env: BTreeMap::from([
            (TOKEN_ENV.to_owned(), token.clone()),
            ("SCIMRELAY_STATUS_RETENTION_DAYS".to_owned(), "0".to_owned()),
        ]),
        connectors: vec!["scim-connector".into(); connectors],
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    (stack, token)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn results_summary(recs: &[Rec]) -> String {
    let mut m: BTreeMap<&str, usize> = BTreeMap::new();
    for r in recs {
        let name = scimrelay_proto::v1::OutcomeResult::try_from(r.result)
            .map(|x| x.as_str_name())
            .unwrap_or("?");
        *m.entry(name).or_default() += 1;
    }
    m.iter()
        .map(|(k, v)| {
            format!(
                "{}: {v}",
                k.trim_start_matches("OUTCOME_RESULT_").to_lowercase()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------
// Sections

struct ThroughputRun {
    n: usize,
    done: usize,
    e2e_per_sec: f64,
    ingest_per_sec: f64,
    wall_secs: f64,
    cpu_per_event_ms: BTreeMap<String, f64>,
    peak_rss: BTreeMap<String, f64>,
    results: String,
    /// State-of-record calls the status service served in the run: (call, calls, items).
    record_calls: Vec<(String, f64, f64)>,
}

/// The state-of-record calls the status service served so far, from its `/metrics`:
/// (call, calls, items).
async fn record_calls(stack: &Stack) -> Vec<(String, f64, f64)> {
    let m = stack.metrics(&stack.status_http).await;
    ["TakeEvents", "RecordConverged", "GetRecords"]
        .iter()
        .map(|call| {
            let calls = m.value(&format!(
                "scimrelay_state_of_record_calls_total{{call=\"{call}\"}}"
            ));
            let items = m.value(&format!(
                "scimrelay_state_of_record_items_total{{call=\"{call}\"}}"
            ));
            ((*call).to_owned(), calls, items)
        })
        .filter(|(_, calls, _)| *calls > 0.0)
        .collect()
}

async fn throughput(
    args: &Args,
    sizes: &Sizes,
    n: usize,
    with_baseline: bool,
    report: &mut Report,
) -> ThroughputRun {
    eprintln!("bench: throughput, {n} events");
    let (stack, token) = start_stack(
        args,
        &format!("throughput-{n}"),
        targets_yaml(Some(f64::from(UNTHROTTLED_CEILING)), (8, 64)),
        1,
    )
    .await;
    let tck = clock_ticks();
    let procs = procs_of(&stack, &[]);
    let collector = Collector::start(stack.status_client().await);
    let rss = RssSampler::start(procs.clone());
    let before = cpu_snapshot(&procs, tck);
    let t0 = Instant::now();
    let accepted = send_bulk(stack.http(), &stack.ingest_http, "t", n).await;
    let send_secs = t0.elapsed().as_secs_f64();
    let recs = collector.wait("t", accepted, sizes.deadline).await;
    let after = cpu_snapshot(&procs, tck);
    let wall = t0.elapsed().as_secs_f64();
    let samples = rss.finish().await;
    let record_calls = record_calls(&stack).await;
    let first = recs.iter().map(|r| r.accepted_ms).min().unwrap_or(0);
    let last = recs.iter().map(|r| r.recorded_ms).max().unwrap_or(0);
    let span = ((last - first) as f64 / 1000.0).max(0.001);
    let done = recs.len();
    let cpu_per_event_ms = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)) * 1000.0 / done.max(1) as f64,
            )
        })
        .collect();
    if with_baseline {
        // The baseline shares this simulator (another tenant), so it runs here.
        report.baseline = Some(baseline(&stack, &token, sizes.baseline).await);
    }
    ThroughputRun {
        n,
        done,
        e2e_per_sec: done as f64 / span,
        ingest_per_sec: accepted as f64 / send_secs.max(0.001),
        wall_secs: wall,
        cpu_per_event_ms,
        peak_rss: peak_rss(&samples),
        results: results_summary(&recs),
        record_calls,
    }
}

struct LatencyRun {
    offered: u32,
    secs: u32,
    sent: usize,
    done: usize,
    achieved_offered: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    /// p50 / p99 of acceptance → the connector's finish (queue, ledger lookup, SCIM calls).
    connector_p50: f64,
    connector_p99: f64,
    /// p50 / p99 of the connector's finish → recorded (outcome publish, status batch + commit).
    status_p50: f64,
    status_p99: f64,
    /// (seconds since the run started, latency ms) of every event, for the chart.
    points: Vec<(f64, f64)>,
}

async fn latency(args: &Args, sizes: &Sizes) -> Vec<LatencyRun> {
    eprintln!("bench: latency");
    let (stack, _) = start_stack(
        args,
        "latency",
        targets_yaml(Some(f64::from(UNTHROTTLED_CEILING)), (8, 64)),
        1,
    )
    .await;
    let collector = Collector::start(stack.status_client().await);
    let url = format!("{}/v1/events", stack.ingest_http);
    // Warm up (connections, caches, the adaptive window) for a second at the lowest load.
    let _ = send_bulk(stack.http(), &stack.ingest_http, "warm", 200).await;
    let _ = collector.wait("warm", 200, sizes.deadline).await;
    let mut runs = Vec::new();
    for &(rate, secs) in &sizes.latency {
        eprintln!("bench: latency at {rate} events/s for {secs} s");
        let prefix = format!("l{rate}-");
        // Open loop: a tick every 10 ms sends the events due by then, without waiting for
        // earlier requests.
        let tick = Duration::from_millis(10);
        let ticks = u64::from(secs) * 100;
        let start = tokio::time::Instant::now();
        let mut set = tokio::task::JoinSet::new();
        let mut sent = 0usize;
        for k in 0..ticks {
            tokio::time::sleep_until(start + tick * k as u32).await;
            let due = ((k + 1) * u64::from(rate) / 100) as usize;
            if due <= sent {
                continue;
            }
            let batch: Vec<Value> = (sent..due).map(|i| user_event(&prefix, i)).collect();
            sent = due;
            let body = serde_json::to_vec(&batch).unwrap_or_default();
            let http = stack.http().clone();
            let url = url.clone();
            set.spawn(async move { post(&http, &url, body).await });
        }
        let send_secs = start.elapsed().as_secs_f64();
        let mut accepted = 0;
        while let Some(r) = set.join_next().await {
            accepted += r.unwrap_or(0);
        }
        let recs = collector.wait(&prefix, accepted, sizes.deadline).await;
        let t0 = recs.iter().map(|r| r.accepted_ms).min().unwrap_or(0);
        let mut lat: Vec<f64> = recs
            .iter()
            .map(|r| (r.recorded_ms - r.accepted_ms) as f64)
            .collect();
        let points = recs
            .iter()
            .map(|r| {
                (
                    (r.accepted_ms - t0) as f64 / 1000.0,
                    (r.recorded_ms - r.accepted_ms) as f64,
                )
            })
            .collect();
        lat.sort_by(f64::total_cmp);
        let mut conn: Vec<f64> = recs
            .iter()
            .map(|r| (r.finished_ms - r.accepted_ms) as f64)
            .collect();
        conn.sort_by(f64::total_cmp);
        let mut stat: Vec<f64> = recs
            .iter()
            .map(|r| (r.recorded_ms - r.finished_ms) as f64)
            .collect();
        stat.sort_by(f64::total_cmp);
        runs.push(LatencyRun {
            connector_p50: pct(&conn, 50.0),
            connector_p99: pct(&conn, 99.0),
            status_p50: pct(&stat, 50.0),
            status_p99: pct(&stat, 99.0),
            offered: rate,
            secs,
            sent,
            done: recs.len(),
            achieved_offered: accepted as f64 / send_secs.max(0.001),
            p50: pct(&lat, 50.0),
            p95: pct(&lat, 95.0),
            p99: pct(&lat, 99.0),
            max: lat.last().copied().unwrap_or(f64::NAN),
            points,
        });
    }
    runs
}

struct QuotaRun {
    mode: String,
    r: f64,
    users: usize,
    done: usize,
    total: f64,
    throttled: f64,
    elapsed: f64,
    achieved: f64,
    peak: f64,
}

async fn quota(args: &Args, sizes: &Sizes, ceiling: Option<f64>) -> QuotaRun {
    let mode = match ceiling {
        Some(c) => format!("ceiling {c}/s"),
        None => "adaptive only".to_owned(),
    };
    eprintln!("bench: quota, {mode}");
    let label = if ceiling.is_some() {
        "quota-ceiling"
    } else {
        "quota-adaptive"
    };
    let (stack, _) = start_stack(args, label, targets_yaml(ceiling, (1, 16)), 1).await;
    let r = sizes.quota_r;
    let faults = json!({"rate_limit": {"per_sec": r, "burst": (r / 10.0).ceil() as u32}});
    let _ = stack
        .http()
        .put(format!("{}/_admin/tenants/acme/faults", stack.sim_url))
        .json(&faults)
        .send()
        .await;
    let collector = Collector::start(stack.status_client().await);
    let accepted = send_bulk(stack.http(), &stack.ingest_http, "q", sizes.quota_users).await;
    let recs = collector
        .wait("q", accepted, sizes.deadline.max(Duration::from_secs(60)))
        .await;
    let first = recs.iter().map(|r| r.accepted_ms).min().unwrap_or(0);
    let last = recs.iter().map(|r| r.recorded_ms).max().unwrap_or(0);
    let elapsed = ((last - first) as f64 / 1000.0).max(0.001);
    let stats: Value = match stack
        .http()
        .get(format!("{}/_admin/tenants/acme/stats", stack.sim_url))
        .send()
        .await
    {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    };
    let total = stats["total"].as_f64().unwrap_or(0.0);
    let throttled = stats["throttled"].as_f64().unwrap_or(0.0);
    QuotaRun {
        mode,
        r,
        users: accepted,
        done: recs.len(),
        total,
        throttled,
        elapsed,
        achieved: (total - throttled) / elapsed,
        peak: stats["peak_per_sec"].as_f64().unwrap_or(0.0),
    }
}

struct ScaleRun {
    n: usize,
    done: usize,
    publish_secs: f64,
    drain_secs: f64,
    first_tenth: f64,
    last_tenth: f64,
    rss: Vec<RssRow>,
    per_sec: Vec<(f64, f64)>,
    cpu_per_event_ms: BTreeMap<String, f64>,
}

async fn scale(args: &Args, sizes: &Sizes) -> ScaleRun {
    let n = sizes.backlog;
    eprintln!("bench: scale, a backlog of {n} events");
    let (stack, _) = start_stack(
        args,
        "scale",
        targets_yaml(Some(f64::from(UNTHROTTLED_CEILING)), (8, 64)),
        0,
    )
    .await;
    let tck = clock_ticks();
    let collector = Collector::start(stack.status_client().await);
    let mut procs = procs_of(&stack, &[]);
    // The connector does not run yet; its RSS joins the samples once it does.
    let t0 = Instant::now();
    let accepted = send_bulk(stack.http(), &stack.ingest_http, "s", n).await;
    let publish_secs = t0.elapsed().as_secs_f64();
    let mut env = stack.env.clone();
    let port = free_port();
    env.insert(
        "SCIMRELAY_CONNECTOR_HTTP_ADDR".into(),
        format!("127.0.0.1:{port}"),
    );
    let connector = Proc::start("scim-connector-0", "scim-connector", &env, &[], &stack.dir);
    procs.push(("scim-connector".into(), connector.pid()));
    let rss = RssSampler::start(procs.clone());
    let before = cpu_snapshot(&procs, tck);
    let started_ms = now_ms();
    let t1 = Instant::now();
    let recs = collector
        .wait("s", accepted, sizes.deadline.max(Duration::from_secs(60)))
        .await;
    let drain_secs = t1.elapsed().as_secs_f64();
    let after = cpu_snapshot(&procs, tck);
    let samples = rss.finish().await;
    let mut rec_ms: Vec<i64> = recs.iter().map(|r| r.recorded_ms).collect();
    rec_ms.sort_unstable();
    let done = rec_ms.len();
    let tenth = (n / 10).max(1);
    let (first_tenth, last_tenth) = if done >= n && n >= 10 {
        let a = (rec_ms[tenth - 1] - started_ms) as f64 / 1000.0;
        let b = (rec_ms[n - 1] - rec_ms[n - tenth - 1]) as f64 / 1000.0;
        (tenth as f64 / a.max(0.001), tenth as f64 / b.max(0.001))
    } else {
        (f64::NAN, f64::NAN)
    };
    let mut per_sec: BTreeMap<i64, f64> = BTreeMap::new();
    for ms in &rec_ms {
        *per_sec.entry((ms - started_ms) / 1000).or_default() += 1.0;
    }
    let cpu_per_event_ms = after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                (v - before.get(k).copied().unwrap_or(0.0)) * 1000.0 / done.max(1) as f64,
            )
        })
        .collect();
    drop(connector);
    ScaleRun {
        n: accepted,
        done,
        publish_secs,
        drain_secs,
        first_tenth,
        last_tenth,
        rss: samples,
        per_sec: per_sec.into_iter().map(|(s, c)| (s as f64, c)).collect(),
        cpu_per_event_ms,
    }
}

struct StatusRun {
    n: usize,
    written: usize,
    publish_secs: f64,
    /// From the status process's start (migrations, broker connection included) to the last
    /// outcome written.
    total_secs: f64,
    /// Writes/s between the 10% and 90% marks (steady state).
    steady_per_sec: f64,
    cpu_ms_per_outcome: f64,
    peak_rss_mib: f64,
}

/// Outcomes as a connector publishes them, for the status backlog.
fn bench_outcomes(n: usize) -> Vec<scimrelay_proto::v1::Outcome> {
    use scimrelay_proto::v1::{EventKind, Operation, Outcome, OutcomeResult, SubjectKind};
    let now = now_ms();
    (0..n)
        .map(|i| Outcome {
            event_id: format!("st-{i:08}"),
            target: format!("target-{}", i % 4),
            provider: "scim".into(),
            tenant: "acme".into(),
            subject_kind: SubjectKind::User as i32,
            subject_id: format!("user-{}", i % 5000),
            version: i as u64 + 1,
            kind: EventKind::UserUpserted as i32,
            operation: Operation::Updated as i32,
            result: OutcomeResult::Succeeded as i32,
            attempt: 1,
            http_status: 200,
            remote_id: format!("remote-{}", i % 5000),
            latency_ms: (i % 300) as u64,
            accepted_at_ms: now,
            finished_at_ms: now,
            ..Default::default()
        })
        .collect()
}

/// Publishes outcomes to the outcomes exchange with confirms (1,000 in flight); seconds taken.
async fn publish_outcomes(amqp_url: &str, outcomes: &[scimrelay_proto::v1::Outcome]) -> f64 {
    use prost::Message;
    use scimrelay_core::amqp;
    let conn = amqp::connect(amqp_url, "bench-status")
        .await
        .unwrap_or_else(|e| panic!("bench: connect: {e}"));
    let publisher = amqp::Publisher::new(&conn)
        .await
        .unwrap_or_else(|e| panic!("bench: publisher: {e}"));
    let start = Instant::now();
    for chunk in outcomes.chunks(1_000) {
        let mut pending = Vec::with_capacity(chunk.len());
        for o in chunk {
            let key = amqp::outcome_routing_key(&o.provider, &o.target, "succeeded");
            let props = amqp::properties(scimrelay_proto::TYPE_OUTCOME, Default::default());
            pending.push(
                publisher
                    .send(amqp::OUTCOMES_EXCHANGE, &key, &o.encode_to_vec(), props)
                    .await
                    .unwrap_or_else(|e| panic!("bench: publish: {e}")),
            );
        }
        for p in pending {
            p.wait()
                .await
                .unwrap_or_else(|e| panic!("bench: confirm: {e}"));
        }
    }
    let secs = start.elapsed().as_secs_f64();
    publisher.close().await;
    amqp::close(&conn, "done").await;
    secs
}

/// The status service's write rate: `n` outcomes published while it is stopped, then it is
/// started and drains them into its SQLite file (the consumer's batches, one transaction each).
async fn status_writes(args: &Args, sizes: &Sizes) -> StatusRun {
    let n = sizes.status_outcomes;
    eprintln!("bench: status, a backlog of {n} outcomes");
    let (mut stack, _) = start_stack(
        args,
        "status",
        targets_yaml(Some(f64::from(UNTHROTTLED_CEILING)), (8, 64)),
        0,
    )
    .await;
    let outcomes = bench_outcomes(n);
    let url = stack.vhost.amqp_url();
    let mut publish_secs = 0.0;
    let started = stack
        .restart_status(async {
            publish_secs = publish_outcomes(&url, &outcomes).await;
        })
        .await;
    let pid = stack.status.pid();
    let rss = RssSampler::start(vec![("status".to_owned(), pid)]);
    let written_total = "scimrelay_status_outcomes_written_total";
    let mut samples: Vec<(f64, f64)> = Vec::new();
    let deadline = sizes.deadline.max(Duration::from_secs(60));
    loop {
        let w = stack.metrics(&stack.status_http).await.sum(written_total);
        samples.push((started.elapsed().as_secs_f64(), w));
        if w >= n as f64 || started.elapsed() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cpu_ms = cpu_secs(pid, clock_ticks()) * 1000.0;
    let peak_rss_mib = peak_rss(&rss.finish().await)
        .get("status")
        .copied()
        .unwrap_or(f64::NAN);
    let (total_secs, written) = samples.last().copied().unwrap_or((f64::NAN, 0.0));
    // Steady state: the first samples at or past 10% and 90% of the backlog.
    let mark_at = |share: f64| {
        samples
            .iter()
            .find(|(_, w)| *w >= share * n as f64)
            .copied()
    };
    let steady_per_sec = match (mark_at(0.1), mark_at(0.9)) {
        (Some((t1, w1)), Some((t2, w2))) if t2 > t1 => (w2 - w1) / (t2 - t1),
        _ => f64::NAN,
    };
    StatusRun {
        n,
        written: written as usize,
        publish_secs,
        total_secs,
        steady_per_sec,
        cpu_ms_per_outcome: cpu_ms / n.max(1) as f64,
        peak_rss_mib,
    }
}

struct BaselineRun {
    /// Answers that were not 2xx (or no answer): a fast loop of errors is no baseline.
    errors: usize,
    /// Users the simulator holds afterwards.
    created: usize,
    users: usize,
    secs: f64,
    per_sec: f64,
    requests: usize,
}

/// The naive engine: one request at a time, GET by filter then POST, like simple sync loops.
async fn baseline(stack: &Stack, token: &str, n: usize) -> BaselineRun {
    eprintln!("bench: baseline, {n} users by a sequential client");
    let http = reqwest::Client::new();
    let base = format!("{}/base/scim/v2/Users", stack.sim_url);
    let start = Instant::now();
    let mut requests = 0;
    let mut errors = 0;
    for i in 0..n {
        let user = format!("b{i:07}@example.com");
        let filter = format!("userName%20eq%20%22{}%22", user.replace('@', "%40"));
        let found = http
            .get(format!("{base}?filter={filter}"))
            .bearer_auth(token)
            .send()
            .await;
        requests += 1;
        let exists = match found {
            Ok(r) => {
                r.json::<Value>()
                    .await
                    .ok()
                    .and_then(|v| v["totalResults"].as_u64())
                    .unwrap_or(0)
                    > 0
            }
            Err(_) => false,
        };
        if !exists {
            let body = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "externalId": format!("bu{i:07}"), "userName": user, "active": true,
                "displayName": format!("User {i}"),
                "name": {"givenName": "Bench", "familyName": format!("User{i}")},
                "emails": [{"value": user, "type": "work", "primary": true}]});
            let posted = http
                .post(&base)
                .bearer_auth(token)
                .header("content-type", "application/scim+json")
                .body(body.to_string())
                .send()
                .await;
            if !posted.as_ref().is_ok_and(|r| r.status().is_success()) {
                errors += 1;
            }
            if let Ok(r) = posted {
                let _ = r.bytes().await;
            }
            requests += 1;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let created = stack.sim_users("base").await.len();
    BaselineRun {
        errors,
        created,
        users: n,
        secs,
        per_sec: n as f64 / secs.max(0.001),
        requests,
    }
}

// ---------------------------------------------------------------------------------------------
// Report

#[derive(Default)]
struct Report {
    /// The same sections of another revision, run in this session (`--baseline`).
    compared: Option<baseline_rev::Compared>,
    throughput: Vec<ThroughputRun>,
    latency: Vec<LatencyRun>,
    quota: Vec<QuotaRun>,
    scale: Option<ScaleRun>,
    baseline: Option<BaselineRun>,
    slow: Option<SlowRun>,
    status: Option<StatusRun>,
    login: Option<login::LoginRun>,
}

impl Args {
    fn section(&self, name: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|s| s.trim() == name))
    }
}

fn machine() -> Vec<(String, String)> {
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or("?".into(), |kib| {
            format!("{:.1} GiB", kib / 1024.0 / 1024.0)
        });
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let rabbit = cmd_out("rabbitmqctl", &["version"]).unwrap_or_else(|| "?".into());
    vec![
        (
            "date (UTC)".into(),
            cmd_out("date", &["-u", "+%Y-%m-%d %H:%M"]).unwrap_or_default(),
        ),
        (
            "commit".into(),
            cmd_out("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "?".into()),
        ),
        ("cores (nproc)".into(), cores.to_string()),
        ("cpu".into(), cpu),
        ("memory".into(), mem),
        ("load average at start".into(), load),
        (
            "rustc".into(),
            cmd_out("rustc", &["--version"]).unwrap_or_else(|| "?".into()),
        ),
        ("RabbitMQ".into(), rabbit),
        (
            "build".into(),
            if cfg!(debug_assertions) {
                "debug".into()
            } else {
                "release".into()
            },
        ),
    ]
}

fn f0(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.0}")
    }
}

fn mark(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

/// The comparison with `--baseline REV`: both builds' throughput, CPU per event per process
/// and latency, side by side.
fn render_compared(s: &mut String, report: &Report, c: &baseline_rev::Compared) {
    let w = |s: &mut String, t: &str| {
        s.push_str(t);
        s.push('\n');
    };
    w(
        s,
        &format!(
            "## Compared with {} ({}), run in the same session",
            c.rev, c.commit
        ),
    );
    w(s, "");
    w(
        s,
        &format!(
            "`make bench BASELINE={}` built that revision in release and ran its own throughput and latency sections \
             right before this build's, on this machine; ratios are this build ÷ {}.",
            c.rev, c.rev
        ),
    );
    w(s, "");
    w(
        s,
        "| events | end to end events/s (baseline → this) | ratio | CPU ms/event per process (baseline → this) | total ratio |\n|---|---|---|---|---|",
    );
    for t in &report.throughput {
        let Some(old) = c.throughput.iter().find(|o| o.0 == t.n) else {
            continue;
        };
        let per_process = old
            .2
            .iter()
            .filter(|(k, _)| k != "total")
            .map(|(k, v)| {
                let new = t.cpu_per_event_ms.get(k).copied().unwrap_or(f64::NAN);
                format!("{k} {v:.3} → {new:.3}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        let old_total = old
            .2
            .iter()
            .find(|(k, _)| k == "total")
            .map_or(f64::NAN, |(_, v)| *v);
        let new_total: f64 = t.cpu_per_event_ms.values().sum();
        w(
            s,
            &format!(
                "| {} | {} → {} | × {:.2} | {per_process}; total {old_total:.3} → {new_total:.3} | **× {:.2}** |",
                t.n,
                f0(old.1),
                f0(t.e2e_per_sec),
                t.e2e_per_sec / old.1,
                new_total / old_total
            ),
        );
    }
    w(s, "");
    w(
        s,
        "| offered events/s | p50 ms (baseline → this) | p99 ms (baseline → this) |\n|---|---|---|",
    );
    for l in &report.latency {
        let Some(old) = c.latency.iter().find(|o| o.0 == l.offered) else {
            continue;
        };
        w(
            s,
            &format!(
                "| {} | {} → {} | {} → {} |",
                l.offered,
                f0(old.1),
                f0(l.p50),
                f0(old.2),
                f0(l.p99)
            ),
        );
    }
    w(s, "");
}

fn render(
    report: &Report,
    sizes: &Sizes,
    args: &Args,
    info: &[(String, String)],
    notes: &str,
    charts: bool,
) -> String {
    let mut s = String::new();
    let w = |s: &mut String, t: &str| {
        s.push_str(t);
        s.push('\n');
    };
    w(&mut s, "# scimrelay benchmarks");
    w(&mut s, "");
    w(
        &mut s,
        &format!(
            "Generated by `{}` (`tests/src/bin/bench.rs`). Every figure below is measured on the machine named \
             here, with RabbitMQ (durable quorum queues, persistent messages, publisher confirms), every service \
             as its own process and the simulator in the same build, all sharing its cores with the load \
             generator. Regenerate with `make bench`; the notes section is kept.",
            if args.quick {
                "make bench-quick"
            } else {
                "make bench"
            }
        ),
    );
    w(&mut s, "");
    w(&mut s, "| | |\n|---|---|");
    for (k, v) in info {
        w(&mut s, &format!("| {k} | {v} |"));
    }
    w(&mut s, "");
    w(&mut s, "## Targets");
    w(&mut s, "");
    w(&mut s, "| target | measured | |\n|---|---|---|");
    if let Some(t) = report.throughput.iter().max_by_key(|t| t.n) {
        w(
            &mut s,
            &format!(
                "| ≥ 5,000 events/s end to end | {} events/s ({} events) | {} |",
                f0(t.e2e_per_sec),
                t.n,
                mark(t.e2e_per_sec >= 5000.0 && t.done == t.n)
            ),
        );
    }
    if let Some(l) = report.latency.iter().find(|l| l.offered == 1000) {
        w(
            &mut s,
            &format!(
                "| p99 ≤ 50 ms at 1,000 events/s | p99 {} ms | {} |",
                f0(l.p99),
                mark(l.p99 <= 50.0 && l.done == l.sent)
            ),
        );
    }
    for q in &report.quota {
        let ratio = q.achieved / q.r * 100.0;
        let thr = q.throttled / q.total.max(1.0) * 100.0;
        let (goal, ok) = if q.mode.starts_with("ceiling") {
            ("≥ 98% of R, ≤ 1% throttled", ratio >= 98.0 && thr <= 1.0)
        } else {
            ("≥ 90% of R, ≤ 1% throttled", ratio >= 90.0 && thr <= 1.0)
        };
        w(
            &mut s,
            &format!(
                "| quota {}: {goal} | {ratio:.1}% of R, {thr:.2}% throttled | {} |",
                q.mode,
                mark(ok)
            ),
        );
    }
    let mut peak = BTreeMap::new();
    for t in &report.throughput {
        for (k, v) in &t.peak_rss {
            let e = peak.entry(k.clone()).or_insert(0.0f64);
            *e = e.max(*v);
        }
    }
    if let Some(sc) = &report.scale {
        for (k, v) in peak_rss(&sc.rss) {
            let e = peak.entry(k).or_insert(0.0f64);
            *e = e.max(v);
        }
    }
    if !peak.is_empty() {
        let worst = peak
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "sim" | "rabbitmq" | "load-generator"))
            .map(|(_, v)| *v)
            .fold(0.0, f64::max);
        let list = peak
            .iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ");
        w(
            &mut s,
            &format!(
                "| RSS ≤ 100 MiB per service under load (sim, rabbitmq and the load generator not counted) | peak MiB: {list} | {} |",
                mark(worst <= 100.0)
            ),
        );
    }
    if let Some(st) = &report.status {
        w(
            &mut s,
            &format!(
                "| status ≥ 5,000 outcome writes/s on SQLite | {} writes/s steady, {} from its start | {} |",
                f0(st.steady_per_sec),
                f0(st.written as f64 / st.total_secs),
                mark(st.steady_per_sec >= 5000.0 && st.written >= st.n)
            ),
        );
    }
    if let Some(c) = &report.compared
        && let Some(t) = report.throughput.iter().max_by_key(|t| t.n)
        && let Some(old) = c.throughput.iter().find(|o| o.0 == t.n)
    {
        let new_total: f64 = t.cpu_per_event_ms.values().sum();
        let old_total = old
            .2
            .iter()
            .find(|(k, _)| k == "total")
            .map_or(f64::NAN, |(_, v)| *v);
        let ratio = new_total / old_total;
        w(
            &mut s,
            &format!(
                "| CPU ms per event ≤ 1.25 × {}'s ({} events) | {new_total:.3} vs {old_total:.3} ms: × {ratio:.2} | {} |",
                c.rev,
                t.n,
                mark(ratio <= 1.25)
            ),
        );
    }
    if let Some(l) = &report.login {
        w(&mut s, &login::target_row(l));
    }
    w(&mut s, "");
    if let Some(c) = &report.compared {
        render_compared(&mut s, report, c);
    }
    w(&mut s, "## Sizes of this run");
    w(&mut s, "");
    w(
        &mut s,
        &format!(
            "Throughput runs: {:?} events. Latency: {} (events/s × seconds, open loop, a tick every 10 ms). \
         Quota: R = {} requests/s, {} users (2 requests each: GET by filter + POST). Backlog: {} events. \
         Baseline: {} users (and {} users against scimrelay's {} events with a {PROVIDER_LATENCY_MS} ms provider). Longest wait per run: {} s. Target settings: `shards: 8`, `concurrency: {{min: 8, max: 64}}`, \
         `rate_limit_per_sec: {UNTHROTTLED_CEILING}` for the unthrottled runs (a ceiling far above what is reached, \
         so only the adaptive slow start is skipped); quota runs `concurrency: {{min: 1, max: 16}}`. Ingest gets \
         batches of {BATCH} events, {SENDERS} requests in flight (latency runs: one request per 10 ms tick). \
         Login during a bulk load: {} bulk events, then {} logins/s for {} s.",
            sizes.throughput,
            sizes
                .latency
                .iter()
                .map(|(r, s)| format!("{r}×{s}"))
                .collect::<Vec<_>>()
                .join(", "),
            sizes.quota_r,
            sizes.quota_users,
            sizes.backlog,
            sizes.baseline,
            sizes.slow_baseline,
            sizes.slow_events,
            sizes.deadline.as_secs(),
            sizes.login_bulk,
            sizes.login_per_sec,
            sizes.login_secs
        ),
    );
    w(&mut s, "");
    if !report.throughput.is_empty() {
        w(&mut s, "## 1. Throughput, unthrottled provider");
        w(&mut s, "");
        w(
            &mut s,
            "End to end = events ÷ (last outcome recorded − first event accepted by ingest). Ingest = events ÷ time to get every 202.",
        );
        w(&mut s, "");
        w(
            &mut s,
            "| events | outcomes recorded | end to end events/s | ingest accepts/s | wall s | outcomes |\n|---|---|---|---|---|---|",
        );
        for t in &report.throughput {
            w(
                &mut s,
                &format!(
                    "| {} | {} | **{}** | {} | {:.1} | {} |",
                    t.n,
                    t.done,
                    f0(t.e2e_per_sec),
                    f0(t.ingest_per_sec),
                    t.wall_secs,
                    t.results
                ),
            );
        }
        w(&mut s, "");
        w(
            &mut s,
            "CPU milliseconds per event, per process (utime + stime from `/proc/<pid>/stat`; rabbitmq is the broker node, shared with nothing else during the run):",
        );
        w(&mut s, "");
        let names: Vec<String> = report
            .throughput
            .iter()
            .flat_map(|t| t.cpu_per_event_ms.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        w(
            &mut s,
            &format!("| events | {} | total |", names.join(" | ")),
        );
        w(&mut s, &format!("|---|{}---|", "---|".repeat(names.len())));
        for t in &report.throughput {
            let cells: Vec<String> = names
                .iter()
                .map(|n| {
                    t.cpu_per_event_ms
                        .get(n)
                        .map_or("–".into(), |v| format!("{v:.3}"))
                })
                .collect();
            let total: f64 = t.cpu_per_event_ms.values().sum();
            w(
                &mut s,
                &format!("| {} | {} | {total:.3} |", t.n, cells.join(" | ")),
            );
        }
        w(&mut s, "");
        for t in &report.throughput {
            if t.record_calls.is_empty() {
                continue;
            }
            let calls = t
                .record_calls
                .iter()
                .map(|(call, calls, items)| {
                    format!(
                        "{call} {} calls for {} items ({:.1} per call)",
                        f0(*calls),
                        f0(*items),
                        items / calls.max(1.0)
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            w(
                &mut s,
                &format!(
                    "State of record, {} events (its writes and reads are in the status column above): {calls}.",
                    t.n
                ),
            );
        }
        w(&mut s, "");
        if charts {
            w(&mut s, "![throughput](docs/bench/throughput.png)");
            w(&mut s, "");
        }
    }
    if !report.latency.is_empty() {
        w(
            &mut s,
            "## 2. Latency, ingest acceptance → outcome recorded",
        );
        w(&mut s, "");
        w(
            &mut s,
            "`Outcome.accepted_at_ms` (ingest) to `RecordedOutcome.recorded_at_ms` (status), open-loop load.",
        );
        w(&mut s, "");
        w(
            &mut s,
            "| offered events/s | seconds | sent | recorded | achieved offered/s | p50 ms | p95 ms | p99 ms | max ms | accepted → connector done, p50 / p99 ms | connector done → recorded, p50 / p99 ms |\n|---|---|---|---|---|---|---|---|---|---|---|",
        );
        for l in &report.latency {
            w(
                &mut s,
                &format!(
                    "| {} | {} | {} | {} | {} | {} | {} | **{}** | {} | {} / {} | {} / {} |",
                    l.offered,
                    l.secs,
                    l.sent,
                    l.done,
                    f0(l.achieved_offered),
                    f0(l.p50),
                    f0(l.p95),
                    f0(l.p99),
                    f0(l.max),
                    f0(l.connector_p50),
                    f0(l.connector_p99),
                    f0(l.status_p50),
                    f0(l.status_p99)
                ),
            );
        }
        w(&mut s, "");
        if charts {
            w(&mut s, "![latency](docs/bench/latency.png)");
            w(&mut s, "");
        }
    }
    if !report.quota.is_empty() {
        w(
            &mut s,
            "## 3. Quota use, simulator throttling at R requests/s",
        );
        w(&mut s, "");
        w(
            &mut s,
            "Achieved = (requests − throttled answers) ÷ (last outcome recorded − first event accepted); the simulator's token bucket has burst R/10.",
        );
        w(&mut s, "");
        w(
            &mut s,
            "| mode | R/s | users | outcomes | requests | throttled | seconds | achieved/s | achieved ÷ R | throttled share | sim peak/s |\n|---|---|---|---|---|---|---|---|---|---|---|",
        );
        for q in &report.quota {
            w(
                &mut s,
                &format!(
                    "| {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | **{:.1}%** | {:.2}% | {} |",
                    q.mode,
                    q.r,
                    q.users,
                    q.done,
                    q.total,
                    q.throttled,
                    q.elapsed,
                    q.achieved,
                    q.achieved / q.r * 100.0,
                    q.throttled / q.total.max(1.0) * 100.0,
                    q.peak
                ),
            );
        }
        w(&mut s, "");
    }
    if let Some(sc) = &report.scale {
        w(&mut s, "## 4. Scale: a backlog drained from cold");
        w(&mut s, "");
        w(
            &mut s,
            &format!(
                "{} events published with no connector running ({:.1} s), then one connector started: {} outcomes in {:.1} s \
             ({} events/s). First tenth: **{} events/s**; last tenth: **{} events/s** (from the connector's start to the \
             {}th outcome, and between the last {} outcomes).",
                sc.n,
                sc.publish_secs,
                sc.done,
                sc.drain_secs,
                f0(sc.done as f64 / sc.drain_secs.max(0.001)),
                f0(sc.first_tenth),
                f0(sc.last_tenth),
                sc.n / 10,
                sc.n / 10
            ),
        );
        w(&mut s, "");
        w(
            &mut s,
            "Peak resident memory (VmRSS, sampled each second) and CPU ms per event while draining:",
        );
        w(&mut s, "");
        w(
            &mut s,
            "| process | peak RSS MiB | CPU ms/event |\n|---|---|---|",
        );
        let pk = peak_rss(&sc.rss);
        for (k, v) in &sc.cpu_per_event_ms {
            w(
                &mut s,
                &format!(
                    "| {k} | {} | {v:.3} |",
                    pk.get(k).map_or("–".into(), |m| format!("{m:.1}"))
                ),
            );
        }
        w(&mut s, "");
        if charts {
            w(
                &mut s,
                "![rss](docs/bench/rss.png)\n\n![backlog](docs/bench/backlog.png)",
            );
            w(&mut s, "");
        }
    }
    if let Some(b) = &report.baseline {
        w(&mut s, "## 5. Baseline: a naive sequential SCIM client");
        w(&mut s, "");
        w(
            &mut s,
            &format!(
                "{} users, one request at a time (GET `Users?filter=userName eq …`, then POST), reqwest with keep-alive, \
             against another tenant of the same simulator process: {} requests ({} not 2xx; the simulator then holds {} users) in {:.1} s = **{} users/s**.",
                b.users,
                b.requests,
                b.errors,
                b.created,
                b.secs,
                f0(b.per_sec)
            ),
        );
        if let Some(t) = report.throughput.first() {
            w(
                &mut s,
                &format!(
                    "\nscimrelay, {} events end to end (durable queues, confirms, outcomes recorded): {} events/s = **{:.2}×** the naive loop. \
                 The simulator answers in well under a millisecond on loopback, the best case for a sequential loop: against a \
                 provider with tens of milliseconds of round trip the loop slows in proportion while scimrelay keeps up to \
                 `concurrency.max` requests in flight per target.",
                    t.n,
                    f0(t.e2e_per_sec),
                    t.e2e_per_sec / b.per_sec.max(0.001)
                ),
            );
        }
        w(&mut s, "");
    }
    if let Some(sl) = &report.slow {
        w(
            &mut s,
            &format!(
                "With the provider answering every request after {PROVIDER_LATENCY_MS} ms (the simulator's latency fault on both \
             tenants): the naive loop provisions {} users in {:.1} s = **{:.1} users/s**; scimrelay (`concurrency: {{min: 64, max: 256}}`) \
             records {} of {} events at **{} events/s** end to end = **{:.0}×** the naive loop.",
                sl.baseline.users,
                sl.baseline.secs,
                sl.baseline.per_sec,
                sl.done,
                sl.events,
                f0(sl.per_sec),
                sl.per_sec / sl.baseline.per_sec.max(0.001)
            ),
        );
        w(&mut s, "");
    }
    if let Some(st) = &report.status {
        w(&mut s, "## 6. Status service: outcome writes into SQLite");
        w(&mut s, "");
        w(
            &mut s,
            &format!(
                "{} outcomes published to the outcomes exchange (confirmed, {:.1} s) while the status \
                 service was stopped; then it was started and drained them into its SQLite file \
                 (consumer batches, one transaction each), counted by its \
                 `scimrelay_status_outcomes_written_total` metric every 20 ms.",
                st.n, st.publish_secs
            ),
        );
        w(&mut s, "");
        w(
            &mut s,
            "| outcomes | written | from process start, s | writes/s from start | writes/s steady (10% → 90%) | status CPU ms/outcome | peak RSS MiB |\n|---|---|---|---|---|---|---|",
        );
        w(
            &mut s,
            &format!(
                "| {} | {} | {:.2} | {} | **{}** | {:.3} | {:.1} |",
                st.n,
                st.written,
                st.total_secs,
                f0(st.written as f64 / st.total_secs),
                f0(st.steady_per_sec),
                st.cpu_ms_per_outcome,
                st.peak_rss_mib
            ),
        );
        w(&mut s, "");
    }
    if let Some(l) = &report.login {
        login::render(&mut s, l, sizes, charts);
    }
    w(&mut s, "## Notes");
    w(&mut s, "");
    w(&mut s, "<!-- notes -->");
    w(&mut s, notes.trim());
    w(&mut s, "<!-- /notes -->");
    s
}

fn kept_notes(path: &Path) -> String {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    match (old.find("<!-- notes -->"), old.find("<!-- /notes -->")) {
        (Some(a), Some(b)) if b > a => old[a + "<!-- notes -->".len()..b].to_owned(),
        _ => "(no analysis yet)".to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Charts

mod charts {
    use plotters::prelude::*;
    use std::path::Path;

    type Res = Result<(), Box<dyn std::error::Error>>;

    /// Registers DejaVu Sans for the bitmap backend (Debian `fonts-dejavu-core`). Without it the
    /// charts are skipped and the report says so.
    pub fn font() -> bool {
        let Ok(bytes) = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf") else {
            return false;
        };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    }

    const COLORS: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];

    pub fn lines(
        path: &Path,
        title: &str,
        x: &str,
        y: &str,
        series: &[(String, Vec<(f64, f64)>)],
        points: bool,
    ) -> Res {
        let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let xmax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.0))
            .fold(1.0, f64::max);
        let ymax = series
            .iter()
            .flat_map(|s| s.1.iter().map(|p| p.1))
            .fold(1.0, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..xmax, 0.0..ymax)?;
        chart.configure_mesh().x_desc(x).y_desc(y).draw()?;
        for (i, (name, pts)) in series.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            if points {
                chart
                    .draw_series(pts.iter().map(|p| Circle::new(*p, 1, c.filled())))?
                    .label(name.as_str())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
            } else {
                chart
                    .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
        Ok(())
    }

    pub fn bars(path: &Path, title: &str, y: &str, bars: &[(String, f64)]) -> Res {
        let root = BitMapBackend::new(path, (900, 500)).into_drawing_area();
        root.fill(&WHITE)?;
        let ymax = bars.iter().map(|b| b.1).fold(1.0, f64::max) * 1.15;
        let n = bars.len();
        let names: Vec<String> = bars.iter().map(|b| b.0.clone()).collect();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n as f64, 0.0..ymax)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|v| {
                let i = (*v - 0.5).round();
                if (v - 0.5 - i).abs() < 0.01 && i >= 0.0 && (i as usize) < names.len() {
                    names[i as usize].clone()
                } else {
                    String::new()
                }
            })
            .y_desc(y)
            .draw()?;
        for (i, (_, v)) in bars.iter().enumerate() {
            let c = COLORS[i % COLORS.len()];
            chart.draw_series(std::iter::once(Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
                c.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{v:.0}"),
                (i as f64 + 0.4, *v + ymax * 0.02),
                ("sans-serif", 16),
            )))?;
        }
        root.present()?;
        Ok(())
    }
}

/// Both sides of the comparison against a provider with a realistic round trip.
struct SlowRun {
    baseline: BaselineRun,
    events: usize,
    done: usize,
    per_sec: f64,
}

/// Simulated provider latency for the second baseline comparison (each request answers after
/// this long, like a SaaS API over the internet; real ones are often slower).
const PROVIDER_LATENCY_MS: u32 = 20;

async fn slow_provider(args: &Args, sizes: &Sizes) -> SlowRun {
    eprintln!("bench: baseline with a {PROVIDER_LATENCY_MS} ms provider");
    let (stack, token) = start_stack(
        args,
        "slow-provider",
        targets_yaml(Some(f64::from(UNTHROTTLED_CEILING)), (64, 256)),
        1,
    )
    .await;
    let faults = json!({"latency_ms": {"min": PROVIDER_LATENCY_MS, "max": PROVIDER_LATENCY_MS}});
    for tenant in ["acme", "base"] {
        let _ = stack
            .http()
            .put(format!("{}/_admin/tenants/{tenant}/faults", stack.sim_url))
            .json(&faults)
            .send()
            .await;
    }
    let baseline = baseline(&stack, &token, sizes.slow_baseline).await;
    let collector = Collector::start(stack.status_client().await);
    let accepted = send_bulk(stack.http(), &stack.ingest_http, "w", sizes.slow_events).await;
    let recs = collector.wait("w", accepted, sizes.deadline).await;
    let first = recs.iter().map(|r| r.accepted_ms).min().unwrap_or(0);
    let last = recs.iter().map(|r| r.recorded_ms).max().unwrap_or(0);
    SlowRun {
        baseline,
        events: accepted,
        done: recs.len(),
        per_sec: recs.len() as f64 / ((last - first) as f64 / 1000.0).max(0.001),
    }
}

/// `300`, `10k`.
fn count(n: usize) -> String {
    if n >= 1000 && n.is_multiple_of(1000) {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

fn draw_charts(report: &Report, dir: &Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(dir)?;
    if !report.throughput.is_empty() {
        let mut bars: Vec<(String, f64)> = report
            .throughput
            .iter()
            .map(|t| (format!("scimrelay, {} events", count(t.n)), t.e2e_per_sec))
            .collect();
        if let Some(sc) = &report.scale {
            bars.push((
                format!("backlog drain, {}", count(sc.n)),
                sc.done as f64 / sc.drain_secs.max(0.001),
            ));
        }
        if let Some(b) = &report.baseline {
            bars.push((
                format!("naive sequential loop, {}", count(b.users)),
                b.per_sec,
            ));
        }
        if let Some(sl) = &report.slow {
            bars.push((
                format!("scimrelay, {PROVIDER_LATENCY_MS} ms provider"),
                sl.per_sec,
            ));
            bars.push((
                format!("naive loop, {PROVIDER_LATENCY_MS} ms provider"),
                sl.baseline.per_sec,
            ));
        }
        charts::bars(
            &dir.join("throughput.png"),
            "Users provisioned per second (end to end)",
            "events/s",
            &bars,
        )?;
    }
    if !report.latency.is_empty() {
        let series: Vec<(String, Vec<(f64, f64)>)> = report
            .latency
            .iter()
            .map(|l| (format!("{} events/s offered", l.offered), l.points.clone()))
            .collect();
        charts::lines(
            &dir.join("latency.png"),
            "Latency of each event (accepted → recorded)",
            "seconds into the run",
            "ms",
            &series,
            true,
        )?;
    }
    if let Some(sc) = &report.scale {
        let mut names: Vec<String> = Vec::new();
        for (_, row) in &sc.rss {
            for (n, _) in row {
                if !names.contains(n) {
                    names.push(n.clone());
                }
            }
        }
        let series: Vec<(String, Vec<(f64, f64)>)> = names
            .iter()
            .map(|n| {
                let pts = sc
                    .rss
                    .iter()
                    .filter_map(|(t, row)| row.iter().find(|(m, _)| m == n).map(|(_, v)| (*t, *v)))
                    .collect();
                (n.clone(), pts)
            })
            .collect();
        charts::lines(
            &dir.join("rss.png"),
            "Resident memory while draining the backlog",
            "seconds after the connector started",
            "MiB",
            &series,
            false,
        )?;
        charts::lines(
            &dir.join("backlog.png"),
            "Outcomes recorded per second, backlog drain",
            "seconds after the connector started",
            "outcomes/s",
            &[("outcomes/s".into(), sc.per_sec.clone())],
            false,
        )?;
    }
    if let Some(l) = &report.login {
        charts::lines(
            &dir.join("login.png"),
            "A first login's round trip while a bulk load saturates the quota",
            "seconds into the logins",
            "ms",
            &[(
                "round trip (POST → answer with the outcome)".into(),
                l.points.clone(),
            )],
            true,
        )?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let sizes = if args.quick {
        Sizes::quick()
    } else {
        Sizes::full()
    };
    let out = args.out.clone().unwrap_or_else(|| {
        if args.quick {
            PathBuf::from("target/bench-quick/BENCHMARKS.md")
        } else {
            PathBuf::from("BENCHMARKS.md")
        }
    });
    let root = out.parent().map(Path::to_path_buf).unwrap_or_default();
    let chart_dir = root.join("docs/bench");
    let info = machine();
    let started = Instant::now();
    let mut report = Report::default();
    if args.section("throughput") || args.section("baseline") {
        for (i, &n) in sizes.throughput.iter().enumerate() {
            if i > 0 && !args.section("throughput") {
                break;
            }
            let with_baseline = i == 0 && args.section("baseline");
            let run = throughput(&args, &sizes, n, with_baseline, &mut report).await;
            eprintln!(
                "bench: {} events: {:.0} events/s end to end",
                n, run.e2e_per_sec
            );
            if args.section("throughput") {
                report.throughput.push(run);
            }
        }
    }
    if args.section("baseline") {
        report.slow = Some(slow_provider(&args, &sizes).await);
    }
    if args.section("latency") {
        report.latency = latency(&args, &sizes).await;
    }
    if args.section("quota") {
        let r = sizes.quota_r;
        report
            .quota
            .push(quota(&args, &sizes, Some(r * 0.99)).await);
        report.quota.push(quota(&args, &sizes, None).await);
    }
    if args.section("scale") {
        report.scale = Some(scale(&args, &sizes).await);
    }
    if args.section("status") {
        report.status = Some(status_writes(&args, &sizes).await);
    }
    if args.section("login") {
        report.login = Some(login::login(&args, &sizes).await);
    }
    if let Some(rev) = &args.baseline {
        report.compared = match baseline_rev::run(rev, args.quick) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("bench: baseline {rev}: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
    }
    let charts = charts::font();
    let drawn = charts
        && draw_charts(&report, &chart_dir)
            .map_err(|e| eprintln!("bench: charts: {e}"))
            .is_ok();
    if !charts {
        eprintln!("bench: DejaVuSans.ttf not found (apt-get install fonts-dejavu-core): no charts");
    }
    let notes = kept_notes(&out);
    let mut text = render(&report, &sizes, &args, &info, &notes, drawn);
    text.push_str(&format!(
        "\n_The whole run took {:.0} s._\n",
        started.elapsed().as_secs_f64()
    ));
    if let Err(e) = std::fs::create_dir_all(&root).and_then(|()| std::fs::write(&out, text)) {
        eprintln!("bench: writing {}: {e}", out.display());
        return std::process::ExitCode::FAILURE;
    }
    eprintln!(
        "bench: wrote {} in {:.0} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    std::process::ExitCode::SUCCESS
}

/// `--baseline REV`: the throughput and latency sections of another revision, run in this
/// session on this machine so that the two builds are compared under the same conditions.
/// REV is checked out in a git worktree (`target/baseline/src-<rev>`), built in release with
/// its own target directory (`target/baseline/target`, reused by later runs), and its own
/// `scimrelay-bench` runs the two sections with its own binaries; its report is read back
/// (REV's bench must write the tables of this one, as every revision since the bench exists
/// does).
mod baseline_rev {
    use std::process::Command;

    /// One throughput run of REV: events, end-to-end events/s, CPU ms per event per process
    /// (and `total`).
    pub type Run = (usize, f64, Vec<(String, f64)>);

    /// What REV measured.
    pub struct Compared {
        /// The revision as given, and its commit.
        pub rev: String,
        pub commit: String,
        /// Per throughput run: events, end-to-end events/s, CPU ms per event per process.
        pub throughput: Vec<Run>,
        /// Per latency run: offered events/s, p50 ms, p99 ms.
        pub latency: Vec<(u32, f64, f64)>,
    }

    fn run_cmd(what: &str, cmd: &mut Command) -> Result<String, String> {
        eprintln!("bench: baseline: {what}");
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{what} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .join("\n")
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Builds and runs REV's bench (throughput and latency), then reads its report.
    pub fn run(rev: &str, quick: bool) -> Result<Compared, String> {
        let commit = run_cmd(
            "resolve the revision",
            Command::new("git").args(["rev-parse", "--verify", &format!("{rev}^{{commit}}")]),
        )?;
        let short = &commit[..commit.len().min(12)];
        let root = std::env::current_dir().map_err(|e| e.to_string())?;
        let base = root.join("target/baseline");
        let src = base.join(format!("src-{short}"));
        if !src.join("Cargo.toml").is_file() {
            let _ = std::fs::create_dir_all(&base);
            run_cmd(
                "check out the revision",
                Command::new("git").args([
                    "worktree",
                    "add",
                    "--detach",
                    &src.to_string_lossy(),
                    &commit,
                ]),
            )?;
        }
        let target_dir = base.join("target");
        let profile = if quick { "debug" } else { "release" };
        let mut build = Command::new("cargo");
        build
            .args(["build", "--workspace", "--bins"])
            .current_dir(&src)
            .env("CARGO_TARGET_DIR", &target_dir);
        if !quick {
            build.arg("--release");
        }
        run_cmd(&format!("build {short} ({profile})"), &mut build)?;
        let report = base.join(format!("{short}/BENCHMARKS.md"));
        let mut bench = Command::new(target_dir.join(profile).join("scimrelay-bench"));
        bench
            .args(["--only", "throughput,latency", "--out"])
            .arg(&report)
            .arg("--dir")
            .arg(base.join(format!("{short}/run")))
            .current_dir(&src);
        if quick {
            bench.arg("--quick");
        }
        run_cmd(&format!("run the bench of {short}"), &mut bench)?;
        let text = std::fs::read_to_string(&report).map_err(|e| format!("{report:?}: {e}"))?;
        let mut c = parse(&text)?;
        c.rev = rev.to_owned();
        c.commit = short.to_owned();
        Ok(c)
    }

    fn cells(line: &str) -> Vec<String> {
        line.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().trim_matches('*').to_owned())
            .collect()
    }

    /// The rows of the table whose header line starts with `header`.
    fn table<'a>(text: &'a str, header: &str) -> Vec<(Vec<String>, &'a str)> {
        let mut lines = text.lines().skip_while(|l| !l.starts_with(header));
        let Some(head) = lines.next() else {
            return Vec::new();
        };
        let names = cells(head);
        lines
            .skip(1)
            .take_while(|l| l.starts_with('|'))
            .map(|l| (names.clone(), l))
            .collect()
    }

    /// Reads the throughput, CPU and latency tables of a report.
    pub fn parse(text: &str) -> Result<Compared, String> {
        let num = |s: &str| s.parse::<f64>().unwrap_or(f64::NAN);
        let mut throughput = Vec::new();
        for (_, row) in table(text, "| events | outcomes recorded") {
            let c = cells(row);
            let n = c.first().and_then(|v| v.parse().ok()).unwrap_or(0);
            throughput.push((n, c.get(2).map_or(f64::NAN, |v| num(v)), Vec::new()));
        }
        for (names, row) in table(text, "| events | ingest") {
            let c = cells(row);
            let n: usize = c.first().and_then(|v| v.parse().ok()).unwrap_or(0);
            let cpu: Vec<(String, f64)> = names
                .iter()
                .zip(&c)
                .skip(1)
                .map(|(k, v)| (k.clone(), num(v)))
                .collect();
            if let Some(t) = throughput.iter_mut().find(|t| t.0 == n) {
                t.2 = cpu;
            }
        }
        let latency = table(text, "| offered events/s")
            .into_iter()
            .map(|(_, row)| {
                let c = cells(row);
                let get = |i: usize| c.get(i).map_or(f64::NAN, |v| num(v));
                (get(0) as u32, get(5), get(7))
            })
            .collect::<Vec<_>>();
        if throughput.is_empty() && latency.is_empty() {
            return Err("the report holds no throughput or latency table".into());
        }
        Ok(Compared {
            rev: String::new(),
            commit: String::new(),
            throughput,
            latency,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn reads_the_tables_of_a_report() {
            let text = "## 1.\n\n| events | outcomes recorded | end to end events/s | ingest accepts/s | wall s | outcomes |\n|---|---|---|---|---|---|\n| 10000 | 10000 | **2895** | 8325 | 3.5 | succeeded: 10000 |\n\nCPU\n\n| events | ingest | status | total |\n|---|---|---|---|\n| 10000 | 0.047 | 0.137 | 0.184 |\n\n| offered events/s | seconds | sent | recorded | achieved offered/s | p50 ms | p95 ms | p99 ms | max ms | a | b |\n|---|---|---|---|---|---|---|---|---|---|---|\n| 1000 | 20 | 20000 | 20000 | 1000 | 112 | 140 | **149** | 175 | 89 / 126 | 23 / 30 |\n";
            let c = parse(text).expect("parsed");
            assert_eq!(c.throughput.len(), 1);
            assert_eq!((c.throughput[0].0, c.throughput[0].1), (10000, 2895.0));
            assert_eq!(
                c.throughput[0].2,
                vec![
                    ("ingest".to_owned(), 0.047),
                    ("status".to_owned(), 0.137),
                    ("total".to_owned(), 0.184)
                ]
            );
            assert_eq!(c.latency, vec![(1000, 112.0, 149.0)]);
        }
    }
}
