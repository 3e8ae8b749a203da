//! Measures the store's outcome write rate the way the consumer writes (batches of
//! `consumer::BATCH_MAX` in one transaction each) on a SQLite file, and on PostgreSQL when
//! `SCIMRELAY_BENCH_PG_URL` names a database. Prints outcome writes per second.
//!
//! `cargo run --release -p scimrelay-status --example bench_writes [-- COUNT]`

use std::time::Instant;

use scimrelay_proto::v1::{EventKind, Operation, Outcome, OutcomeResult, SubjectKind};
use scimrelay_status::consumer::BATCH_MAX;
use scimrelay_status::store::Store;

fn outcomes(n: usize) -> Vec<Outcome> {
    (0..n)
        .map(|i| Outcome {
            event_id: format!("bench-{i:08}"),
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
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            accepted_at_ms: 1_700_000_000_000 + i as i64,
            finished_at_ms: 1_700_000_000_100 + i as i64,
            ..Default::default()
        })
        .collect()
}

async fn bench(label: &str, url: &str, all: &[Outcome]) -> anyhow::Result<f64> {
    let store = Store::open(url).await?;
    let start = Instant::now();
    for batch in all.chunks(BATCH_MAX) {
        store.record(batch).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let rate = all.len() as f64 / secs;
    println!(
        "{label}: {} outcomes in {secs:.2} s = {rate:.0} outcome writes/s (batches of {BATCH_MAX})",
        all.len()
    );
    Ok(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(50_000);
    let all = outcomes(n);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bench.db");
    bench("sqlite", &format!("sqlite://{}", path.display()), &all).await?;
    if let Ok(url) = std::env::var("SCIMRELAY_BENCH_PG_URL") {
        bench("postgres", &url, &all).await?;
    }
    Ok(())
}
