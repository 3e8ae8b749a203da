//! Section 7, login during a bulk load: a first login's answer while a bulk load saturates the
//! target's quota (README, "Login-time provisioning").
//!
//! The simulator throttles at R requests/s and the target's ceiling is 99% of R; a bulk load of
//! `login_bulk` creations is queued through ingest in batches (bulk), then a login — one
//! `user.upserted` of a new user, `interactive`, sent with `Prefer: wait=10` — arrives every
//! `1 / login_per_sec` seconds for `login_secs`, open loop. Measured: each login's round trip
//! (the platform's POST until ingest's answer carrying the outcome), its ingest → outcome time
//! (the outcome's `latency_ms`), and what bulk got of the quota meanwhile (the simulator's
//! served requests). The bulk load is not drained: the run ends with it still queued.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Args, Sizes, pct, send_bulk, start_stack, targets_yaml};

/// What one run measured.
pub struct LoginRun {
    /// The simulator's quota (requests/s) and the share reserved for interactive work.
    pub r: f64,
    pub share: f64,
    /// Bulk events accepted before the logins.
    pub bulk: usize,
    /// Logins sent, and answered 200 with a succeeded `created` outcome.
    pub logins: usize,
    pub created: usize,
    /// Round trips (ms), sorted.
    pub round_trip: Vec<f64>,
    /// Ingest acceptance → outcome (ms), sorted.
    pub to_outcome: Vec<f64>,
    /// Requests/s the simulator served (not throttled) while the logins ran, and the share of
    /// all requests it throttled.
    pub served_per_sec: f64,
    pub throttled_share: f64,
    /// The simulator's answer time to a lone request (ms, median of 20).
    pub sim_ms: f64,
    /// (seconds into the logins, round trip ms) for the chart.
    pub points: Vec<(f64, f64)>,
}

/// The share of the rate the target reserves for interactive work in this run.
const SHARE: f64 = 0.2;

async fn sim_stats(stack: &scimrelay_tests::Stack) -> Value {
    stack.sim_stats("acme").await
}

/// The simulator's median answer time to a lone GET (before it throttles anything).
async fn sim_answer_ms(stack: &scimrelay_tests::Stack, token: &str) -> f64 {
    let url = format!("{}/acme/scim/v2/Users?count=1", stack.sim_url);
    let mut ms = Vec::new();
    for _ in 0..20 {
        let began = Instant::now();
        if stack
            .http()
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .is_ok()
        {
            ms.push(began.elapsed().as_secs_f64() * 1000.0);
        }
    }
    ms.sort_by(f64::total_cmp);
    pct(&ms, 50.0)
}

pub async fn login(args: &Args, sizes: &Sizes) -> LoginRun {
    eprintln!(
        "bench: login during a bulk load of {} events",
        sizes.login_bulk
    );
    let r = sizes.quota_r;
    let yaml = format!(
        "{}    interactive_share: {SHARE}\n",
        targets_yaml(Some(r * 0.99), (1, 16))
    );
    let (stack, token) = start_stack(args, "login", yaml, 1).await;
    let sim_ms = sim_answer_ms(&stack, &token).await;
    stack
        .set_faults(
            "acme",
            &json!({"rate_limit": {"per_sec": r, "burst": (r / 10.0).ceil() as u32}}),
        )
        .await;
    let bulk = send_bulk(stack.http(), &stack.ingest_http, "lb", sizes.login_bulk).await;
    let before = sim_stats(&stack).await;
    let began = Instant::now();
    let every = Duration::from_secs_f64(1.0 / sizes.login_per_sec);
    let n = (sizes.login_secs as f64 * sizes.login_per_sec) as usize;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        tokio::time::sleep_until((began + every * i as u32).into()).await;
        let http = stack.http().clone();
        let url = format!("{}/v1/events", stack.ingest_http);
        let uid = format!("login-{i:05}");
        let event = json!({"kind": "user.upserted", "tenant": "acme", "version": 1,
                           "priority": "interactive",
                           "user": {"id": uid, "userName": format!("{uid}@example.com")}});
        set.spawn(async move {
            let sent = Instant::now();
            let answer = http
                .post(url)
                .header("Prefer", "wait=10")
                .json(&event)
                .send()
                .await;
            let rtt = sent.elapsed().as_secs_f64() * 1000.0;
            let (status, body) = match answer {
                Ok(a) => (
                    a.status().as_u16(),
                    a.json::<Value>().await.unwrap_or(Value::Null),
                ),
                Err(_) => (0, Value::Null),
            };
            (sent, rtt, status, body)
        });
    }
    let mut run = LoginRun {
        r,
        share: SHARE,
        bulk,
        logins: n,
        created: 0,
        round_trip: Vec::new(),
        to_outcome: Vec::new(),
        served_per_sec: 0.0,
        throttled_share: 0.0,
        sim_ms,
        points: Vec::new(),
    };
    while let Some(Ok((sent, rtt, status, body))) = set.join_next().await {
        let o = &body["outcomes"][0];
        if status == 200 && o["result"] == "succeeded" && o["operation"] == "created" {
            run.created += 1;
        }
        run.round_trip.push(rtt);
        if let Some(ms) = o["latencyMs"].as_f64() {
            run.to_outcome.push(ms);
        }
        run.points
            .push((sent.duration_since(began).as_secs_f64(), rtt));
    }
    let elapsed = began.elapsed().as_secs_f64();
    let after = sim_stats(&stack).await;
    let delta = |k: &str| after[k].as_f64().unwrap_or(0.0) - before[k].as_f64().unwrap_or(0.0);
    run.served_per_sec = (delta("total") - delta("throttled")) / elapsed;
    run.throttled_share = delta("throttled") / delta("total").max(1.0);
    run.round_trip.sort_by(f64::total_cmp);
    run.to_outcome.sort_by(f64::total_cmp);
    run.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    eprintln!(
        "bench: login: p50 {:.0} ms, p99 {:.0} ms; bulk at {:.1} requests/s of {r}",
        pct(&run.round_trip, 50.0),
        pct(&run.round_trip, 99.0),
        run.served_per_sec
    );
    run
}

/// The goal: p99 of the round trip within 500 ms plus the simulator's answer time for the
/// login's two requests.
pub fn goal_ms(run: &LoginRun) -> f64 {
    500.0 + 2.0 * run.sim_ms
}

/// The row of the targets table.
pub fn target_row(run: &LoginRun) -> String {
    let p99 = pct(&run.round_trip, 99.0);
    format!(
        "| login during a bulk load at R = {}/s: round trip p99 ≤ 500 ms + the simulator's answer time ({:.0} ms) | p99 {:.0} ms, {} of {} created | {} |",
        run.r,
        goal_ms(run),
        p99,
        run.created,
        run.logins,
        super::mark(p99 <= goal_ms(run) && run.created == run.logins)
    )
}

/// The section.
pub fn render(s: &mut String, run: &LoginRun, sizes: &Sizes, charts: bool) {
    let mut w = |t: &str| {
        s.push_str(t);
        s.push('\n');
    };
    w("## 7. Login during a bulk load");
    w("");
    w(&format!(
        "{} bulk creations are queued through ingest (batches of {}, so bulk) at a target whose simulator \
         throttles at R = {} requests/s (ceiling 99% of R, `interactive_share: {}`); then a login — one \
         `user.upserted` of a new user, `interactive`, with `Prefer: wait=10` — arrives every {:.1} s for {} s, \
         open loop. Round trip = the platform's POST until ingest's answer with the outcome; ingest → outcome = \
         the outcome's `latency_ms`. The simulator answers a lone request in {:.1} ms. The bulk load is still \
         queued when the run ends.",
        run.bulk,
        super::BATCH,
        run.r,
        run.share,
        1.0 / sizes.login_per_sec,
        sizes.login_secs,
        run.sim_ms
    ));
    w("");
    w(
        "| logins | answered `created` | round trip p50 ms | p90 | p99 | max | ingest → outcome p50 ms | p99 | bulk requests/s meanwhile | of R | throttled |\n|---|---|---|---|---|---|---|---|---|---|---|",
    );
    w(&format!(
        "| {} | {} | {:.0} | {:.0} | **{:.0}** | {:.0} | {:.0} | {:.0} | {:.1} | {:.1}% | {:.2}% |",
        run.logins,
        run.created,
        pct(&run.round_trip, 50.0),
        pct(&run.round_trip, 90.0),
        pct(&run.round_trip, 99.0),
        pct(&run.round_trip, 100.0),
        pct(&run.to_outcome, 50.0),
        pct(&run.to_outcome, 99.0),
        run.served_per_sec,
        run.served_per_sec / run.r * 100.0,
        run.throttled_share * 100.0
    ));
    w("");
    if charts {
        w("![login round trip](docs/bench/login.png)");
        w("");
    }
}
