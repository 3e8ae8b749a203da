//! `long_throttle`: a target that asks for a pause longer than the broker's consumer timeout.
//!
//! RabbitMQ closes the channel of a delivery left unacknowledged past its `consumer_timeout`
//! (node-wide in 3.10, 30 min by default), and with the channel every message of the shard goes
//! back to the queue. A connector that held a message for the whole of a throttling pause would
//! lose its channels over and over. The scenario runs against a node of its own started with a
//! short timeout (8 s, checked every 500 ms) and the connector's hold bound at 3 s: the paused
//! target's messages wait on delay tiers instead, no channel is closed, another target keeps
//! flowing meanwhile, and every event converges once the pause is over.
//!
//! Starting a node takes a while, so this runs in `make chaos` only (ignored in `make test`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::json;

use scimrelay_tests::{BrokerNode, NodeSettings, Stack, StackOptions, workload};

use super::{TOKEN_ENV, assert_invariant_of, scim_target, send_all, size};

/// The broker node's consumer timeout.
const CONSUMER_TIMEOUT: Duration = Duration::from_secs(8);
/// What the throttled target keeps asking for (`Retry-After`): longer than the timeout.
const PAUSE_SECS: u64 = 20;

#[tokio::test]
#[ignore = "starts a RabbitMQ node of its own; `make chaos` runs it"]
async fn long_throttle() {
    let node = BrokerNode::start(
        "long-throttle",
        NodeSettings {
            consumer_timeout: CONSUMER_TIMEOUT,
            channel_tick: Duration::from_millis(500),
        },
    );
    let token = format!("tok-{}", uuid::Uuid::new_v4().simple());
    let stack = Stack::start(StackOptions {
        label: "chaos-long-throttle".into(),
        sim_args: vec![
            "--tenant".into(),
            format!("acme:scim:bearer={token}"),
            "--tenant".into(),
            format!("beta:scim:bearer={token}"),
        ],
        targets_yaml: format!(
            "targets:\n{}{}",
            scim_target("slow", "acme", 2),
            scim_target("fine", "beta", 2)
        ),
        env: BTreeMap::from([
            (TOKEN_ENV.to_owned(), token),
            ("SCIMRELAY_MAX_HOLD_SECS".to_owned(), "3".to_owned()),
        ]),
        connectors: vec!["scim-connector".into()],
        broker: node.broker.clone(),
        ..Default::default()
    })
    .await;
    // One request per PAUSE_SECS: every refused one is told to come back in PAUSE_SECS.
    stack
        .set_faults(
            "acme",
            &json!({"rate_limit": {"per_sec": 1.0 / PAUSE_SECS as f64, "burst": 1}}),
        )
        .await;
    let slow = workload::mixed(61, size(), "acme", "lt");
    let fine = workload::mixed(62, size(), "beta", "lf");
    let began = Instant::now();
    let slow_ids = send_all(&stack, &slow.events).await;
    let fine_ids = send_all(&stack, &fine.events).await;

    // The other target flows while the slow one is paused.
    assert_invariant_of(
        &stack,
        "beta",
        &fine.events,
        &fine_ids,
        Duration::from_secs(600),
    )
    .await;
    let fine_took = began.elapsed();
    let throttled = stack.sim_stats("acme").await["by_status"]["429"]
        .as_u64()
        .unwrap_or(0);
    eprintln!(
        "the other target converged in {fine_took:?}; the slow one answered 429 {throttled} times"
    );
    assert!(throttled > 0, "the slow target was never throttled");

    // Paused past the consumer timeout at least twice over, then the pause ends.
    let paused_for = CONSUMER_TIMEOUT * 3;
    if let Some(rest) = paused_for.checked_sub(began.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    stack.set_faults("acme", &json!({})).await;
    assert_invariant_of(
        &stack,
        "acme",
        &slow.events,
        &slow_ids,
        Duration::from_secs(900),
    )
    .await;

    // No channel was closed by the broker for a delivery held too long.
    let broker_log = node.log();
    assert!(
        !broker_log.contains("timed out waiting for delivery acknowledgement"),
        "the broker closed a channel for a delivery held past its consumer timeout:\n{}",
        broker_log
            .lines()
            .filter(|l| l.contains("timed out"))
            .take(5)
            .collect::<Vec<_>>()
            .join("\n")
    );
    let connector_log = stack.connectors[0].log();
    assert!(
        !connector_log.contains("PRECONDITION_FAILED"),
        "a channel of the connector was closed by the broker"
    );
}
