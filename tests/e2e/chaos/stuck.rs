//! Chaos scenarios of "no message stuck, no answer misread": a target behind hostile answers
//! (with the status service on PostgreSQL), and broker sessions lost while requests are in
//! flight at a slow target — once within one connector process, once with the shards moving
//! between two replicas. Each asserts the full invariant; CI size by default, `make chaos`
//! runs 5,000 events (`SCIMRELAY_CHAOS_EVENTS`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use scimrelay_proto::v1::{GetTargetRequest, OutcomeResult, ReplayDeadLettersRequest};
use scimrelay_tests::{Stack, StackOptions, TestPg, workload};

use super::{
    Setup, TOKEN_ENV, assert_invariant, scim_target, scim_target_with, send_all, size, stack_of,
};

/// Most resident memory a connector may use while a target answers hostilely.
const RSS_LIMIT_BYTES: u64 = 150 << 20;

/// The resident set size of process `pid`, from `/proc/<pid>/status`.
fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Samples a process's RSS every 100 ms until stopped; answers the peak.
struct RssWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn({
            let (stop, peak) = (stop.clone(), peak.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rss) = rss_bytes(pid) {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
        Self { stop, peak, task }
    }

    async fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// The hostile answers that fail a message, and what the outcome of a message that met only
/// that answer must say. (A redirect to a login page quarantines the target instead, as a
/// revoked credential does: see [`hostile_server`].)
const HOSTILE: [(&str, &str); 4] = [
    ("html", "text/html"),
    ("huge_body", "larger than"),
    ("nul_id", "control character"),
    ("endless_body", "timed out"),
];

/// A second target whose messages give up after four attempts (one more than the
/// authentication failures that quarantine a target): each meets one kind of
/// hostile answer on every request and ends dead-lettered, its outcome naming the problem.
const EDGE_TARGET: &str = "  - id: edge
    provider: scim
    tenants: [edge]
    base_url: \"{sim}/edge/scim/v2\"
    auth: { kind: bearer, token: { env: CHAOS_SCIM_TOKEN } }
    shards: 1
    timeout_secs: 2
    retry: { max_attempts: 4, base_delay_ms: 100, max_delay_ms: 200 }
    deprovision_guard: { enabled: false }
";

fn edge_user(kind: &str) -> Value {
    let id = format!("edge-{kind}");
    json!({"id": format!("evt-{id}"), "kind": "user.upserted", "tenant": "edge", "version": 1,
           "user": {"id": id, "userName": format!("{id}@edge.example"), "active": true,
                    "displayName": id, "name": {"givenName": "E", "familyName": kind}}})
}

/// A target behind a gateway that answers a share of requests with redirects to a login page,
/// HTML pages served as 200, a 100 MiB body, ids holding a NUL byte and bodies that never end,
/// with the status service on PostgreSQL (whose `TEXT` refuses NUL). Every event still
/// converges (the hostile answers are retried, never taken for success), the connector's
/// memory stays bounded, and a message that meets only one kind of answer ends dead-lettered
/// with an outcome naming it — then, replayed, converges on a fresh attempt budget. A target
/// that answers everything with a redirect to a login page is quarantined (as with a revoked
/// credential: the messages wait, uncounted), its report naming the redirect, and converges
/// once the gateway lets requests through.
#[tokio::test]
async fn hostile_server() {
    let pg = TestPg::create().await;
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start(StackOptions {
        label: "chaos-hostile".into(),
        sim_args: vec![
            "--tenant".into(),
            format!("acme:scim:bearer={token}"),
            "--tenant".into(),
            format!("edge:scim:bearer={token}"),
        ],
        targets_yaml: format!("targets:\n{}{EDGE_TARGET}", scim_target("app", "acme", 3)),
        env: BTreeMap::from([
            (TOKEN_ENV.to_owned(), token),
            ("SCIMRELAY_STATUS_DB".to_owned(), pg.url.clone()),
        ]),
        connectors: vec!["scim-connector".into()],
        ..Default::default()
    })
    .await;
    let rss = RssWatch::start(stack.connectors[0].pid());
    stack
        .set_faults("acme", &json!({"hostile": "mixed", "hostile_rate": 0.1}))
        .await;
    let work = workload::mixed(41, size(), "acme", "hs");
    let ids = send_all(&stack, &work.events).await;

    // Meanwhile, one message per kind of hostile answer, answered only that way.
    let mut edge = Vec::new();
    for (kind, named) in HOSTILE {
        stack
            .set_faults("edge", &json!({"hostile": kind, "hostile_rate": 1.0}))
            .await;
        let id = send_all(&stack, &[edge_user(kind)]).await;
        let outcomes = stack.wait_outcomes(&id, 1, Duration::from_secs(120)).await;
        let o = &outcomes[&id[0]][0];
        assert_eq!(
            o.result,
            OutcomeResult::DeadLettered as i32,
            "{kind}: {o:?}"
        );
        assert!(o.detail.contains(named), "{kind}: {named:?} not in {o:?}");
        assert!(
            !o.detail.contains("s3cr3t") && !o.detail.contains('\0'),
            "{kind}: {o:?}"
        );
        eprintln!("{kind}: {}", o.detail);
        edge.push(id[0].clone());
    }

    // A gateway redirecting everything to its login page: the target is quarantined, the
    // message waits without spending attempts.
    stack
        .set_faults("edge", &json!({"hostile": "redirect", "hostile_rate": 1.0}))
        .await;
    let redirected = send_all(&stack, &[edge_user("redirect")]).await;
    let mut client = stack.status_client().await;
    let start = Instant::now();
    let reason = loop {
        let t = client
            .get_target(GetTargetRequest {
                target: "edge".into(),
            })
            .await
            .map(tonic::Response::into_inner)
            .ok();
        if let Some(t) = t.filter(|t| t.quarantined) {
            break t.quarantine_reason;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "edge was never quarantined"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(
        reason.contains("authentication failures")
            && reason.contains("a redirect to /login")
            && !reason.contains("s3cr3t"),
        "{reason}"
    );

    assert_invariant(&stack, &work.events, &ids, Duration::from_secs(300)).await;
    let stats = stack.sim_stats("acme").await;
    eprintln!("the target's answers: {}", stats["by_status"]);

    // The gateway is gone: the waiting message converges, and the dead-lettered ones,
    // replayed, converge on a fresh budget, and say so.
    stack.set_faults("edge", &json!({})).await;
    let outcomes = stack
        .wait_outcomes(&redirected, 1, Duration::from_secs(120))
        .await;
    let o = &outcomes[&redirected[0]][0];
    assert_eq!(o.result, OutcomeResult::Succeeded as i32, "{o:?}");
    let replayed = client
        .replay_dead_letters(ReplayDeadLettersRequest {
            target: "edge".into(),
            ..Default::default()
        })
        .await
        .expect("ReplayDeadLetters")
        .into_inner();
    assert_eq!(replayed.replayed as usize, HOSTILE.len(), "{replayed:?}");
    for id in &edge {
        // Dead-lettered, then converged after the replay.
        let history = stack.wait_history(id, 2, Duration::from_secs(60)).await;
        let o = history
            .iter()
            .filter_map(|r| r.outcome.as_ref())
            .find(|o| o.result == OutcomeResult::Succeeded as i32)
            .unwrap_or_else(|| panic!("{id} did not converge after its replay: {history:?}"));
        assert!(o.detail.contains("fresh attempt budget"), "{o:?}");
    }
    assert_eq!(stack.sim_users("edge").await.len(), HOSTILE.len() + 1);

    let peak = rss.peak().await;
    eprintln!(
        "connector peak RSS: {:.1} MiB (limit {} MiB)",
        peak as f64 / f64::from(1 << 20),
        RSS_LIMIT_BYTES >> 20
    );
    assert!(peak > 0, "RSS was never sampled");
    assert!(peak < RSS_LIMIT_BYTES, "peak RSS {peak} bytes");
}

/// Closes the broker connection of `replicas[round % len]` once per round while a slow target
/// has requests in flight; the workload arrives in parts between the rounds. No subject may be
/// written by two sessions at once: the simulator counts writes of one subject that overlap.
async fn lost_mid_request(label: &'static str, replicas: usize) {
    let setup = Setup {
        label,
        replicas,
        extra_target: "",
        timeout_secs: 5,
    };
    // Half the CI size: every round waits for slow writes and fences (5,000 in `make chaos`).
    let full = size() >= 5000;
    let events = if full { size() } else { size() / 2 };
    // At full size more requests in flight (writes take seconds each): more of them cut by
    // each lost session, and the run within the invariant's wait.
    let concurrency = if full {
        "{ min: 32, max: 64 }"
    } else {
        "{ min: 1, max: 16 }"
    };
    let target = scim_target_with("app", "acme", setup.timeout_secs, concurrency);
    let stack = stack_of(&setup, target).await;
    // Writes slow enough that one abandoned by an ended session is still in progress when the
    // next session has read the subject and would write it.
    stack
        .set_faults(
            "acme",
            &json!({"latency_ms": {"min": 5, "max": 50},
                    "write_latency_ms": {"min": 1000, "max": 2500}}),
        )
        .await;
    let work = workload::mixed(31, events, "acme", "lm");
    let rounds = 4;
    let part = work.events.len().div_ceil(rounds);
    let pids: Vec<u32> = stack.connectors.iter().map(|c| c.pid()).collect();
    let mut ids = Vec::new();
    for (round, events) in work.events.chunks(part).enumerate() {
        ids.extend(send_all(&stack, events).await);
        // Requests are in flight at the slow target now.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let victim = format!("scim-connector-{}", pids[round % pids.len()]);
        let start = Instant::now();
        while stack.vhost.close_connections(&victim) == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{victim} never showed up in the broker's connections"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    let wait = Duration::from_secs(if full { 900 } else { 300 });
    assert_invariant(&stack, &work.events, &ids, wait).await;
    let stats = stack.sim_stats("acme").await;
    eprintln!(
        "overlapping writes: {} ({} requests)",
        stats["overlapping_writes"], stats["total"]
    );
    assert_eq!(
        stats["overlapping_writes"], 0,
        "subjects written by two sessions at once: {}",
        stats["overlapped"]
    );
}

/// One connector process whose broker connection is closed while requests are in flight:
/// its handlers are cancelled, and the subjects they were writing wait out their fence
/// before its next session writes them again.
#[tokio::test]
async fn session_lost_mid_request() {
    lost_mid_request("chaos-lost-mid-request", 1).await;
}

/// Two replicas, the shards moving between them mid-request: the new owner never writes a
/// subject the old one may still be writing.
#[tokio::test]
async fn session_lost_mid_request_between_replicas() {
    lost_mid_request("chaos-lost-mid-request-2", 2).await;
}
