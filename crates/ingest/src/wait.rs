//! Waiting for outcomes: HTTP `Prefer: wait=N` (RFC 7240) and gRPC `wait_ms`.
//!
//! A waiting request registers the (tenant, event id) pairs it publishes **before** it
//! publishes them (an outcome can arrive before the broker's confirm), and every copy carries
//! the ingest connection's reply queue in `Delivery.reply_to`. The broker session's reply
//! consumer ([`crate::broker`]) hands each outcome that arrives there to [`Waiters::deliver`],
//! which forwards it to every request registered for its event. A request collects one outcome
//! per (event, target) until it has them all or its wait runs out (docs/design.md, "Login-time
//! provisioning").
//!
//! Waiting is bounded per API key (`max_waiting` in the keys file): a request over it is
//! answered without waiting, as RFC 7240 lets a server ignore a preference.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use scimrelay_core::metrics::metrics;
use scimrelay_proto::v1::Outcome;

use crate::FieldError;

/// Default of `SCIMRELAY_INGEST_MAX_WAIT_SECS`: the longest wait a request may ask for.
pub const DEFAULT_MAX_WAIT_SECS: u64 = 30;

/// An event a request waits for: (tenant, event id).
type EventKey = (String, String);
/// A waiting request: its registration id and where its outcomes go.
type Waiting = (u64, mpsc::UnboundedSender<Outcome>);

/// The requests waiting for outcomes in this ingest process.
#[derive(Default)]
pub struct Waiters {
    /// Per event, the requests waiting for it (registration id, channel).
    by_event: Mutex<HashMap<EventKey, Vec<Waiting>>>,
    next: AtomicU64,
    /// Open waits per API key id.
    per_key: Mutex<HashMap<String, u32>>,
}

/// A request's registration: its outcomes arrive on `rx`; dropped, it is unregistered.
pub struct Registration<'a> {
    waiters: &'a Waiters,
    id: u64,
    key_id: String,
    events: Vec<EventKey>,
    rx: mpsc::UnboundedReceiver<Outcome>,
}

/// What a wait collected.
#[derive(Debug, Default)]
pub struct Collected {
    /// One outcome per (event, target) that arrived in time, in arrival order.
    pub outcomes: Vec<Outcome>,
    /// Whether every expected (event, target) has its outcome.
    pub complete: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Waiters {
    /// Registers a request of key `key_id` waiting for `events` (tenant, event id); `None` when
    /// the key already has `max_waiting` open waits (the request is answered without waiting).
    pub fn register(
        &self,
        key_id: &str,
        max_waiting: u32,
        events: Vec<EventKey>,
    ) -> Option<Registration<'_>> {
        {
            let mut per_key = lock(&self.per_key);
            let open = per_key.entry(key_id.to_owned()).or_insert(0);
            if *open >= max_waiting {
                metrics()
                    .ingest_waits
                    .get_or_create(&vec![("result", "over_key_limit".to_owned())])
                    .inc();
                return None;
            }
            *open += 1;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut by_event = lock(&self.by_event);
            for e in &events {
                by_event
                    .entry(e.clone())
                    .or_default()
                    .push((id, tx.clone()));
            }
        }
        Some(Registration {
            waiters: self,
            id,
            key_id: key_id.to_owned(),
            events,
            rx,
        })
    }

    /// Hands an outcome from the reply queue to the requests waiting for its event; one that
    /// nobody waits for any more (the wait ran out) is dropped: the status service has it.
    pub fn deliver(&self, outcome: Outcome) {
        let key = (outcome.tenant.clone(), outcome.event_id.clone());
        let by_event = lock(&self.by_event);
        if let Some(waiting) = by_event.get(&key) {
            for (_, tx) in waiting {
                let _ = tx.send(outcome.clone());
            }
        }
    }

    /// Requests waiting now (for tests).
    pub fn waiting(&self) -> usize {
        lock(&self.per_key).values().map(|n| *n as usize).sum()
    }
}

impl Registration<'_> {
    /// Collects one outcome per `(event id, target)` of `expected` until all arrived or `wait`
    /// ran out.
    pub async fn collect(
        mut self,
        expected: &HashSet<(String, String)>,
        wait: Duration,
    ) -> Collected {
        let deadline = tokio::time::Instant::now() + wait;
        let mut seen = HashSet::new();
        let mut collected = Collected::default();
        while seen.len() < expected.len() {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(o)) => {
                    let k = (o.event_id.clone(), o.target.clone());
                    if expected.contains(&k) && seen.insert(k) {
                        collected.outcomes.push(o);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        collected.complete = seen.len() == expected.len();
        metrics()
            .ingest_waits
            .get_or_create(&vec![(
                "result",
                if collected.complete {
                    "complete"
                } else {
                    "timed_out"
                }
                .to_owned(),
            )])
            .inc();
        collected
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        {
            let mut by_event = lock(&self.waiters.by_event);
            for e in &self.events {
                if let Some(list) = by_event.get_mut(e) {
                    list.retain(|(id, _)| *id != self.id);
                    if list.is_empty() {
                        by_event.remove(e);
                    }
                }
            }
        }
        let mut per_key = lock(&self.waiters.per_key);
        if let Some(open) = per_key.get_mut(&self.key_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                per_key.remove(&self.key_id);
            }
        }
    }
}

/// The wait asked for by a `Prefer` header value (RFC 7240: comma-separated preferences,
/// `wait=<delta-seconds>`, the value possibly quoted); `None` when it asks for none. Errors
/// name the header, and a wait above `max` says the maximum.
pub fn prefer_wait(value: &str, max: Duration) -> Result<Option<Duration>, FieldError> {
    let mut wait = None;
    for pref in value.split(',') {
        let token = pref.split(';').next().unwrap_or_default().trim();
        let Some((name, v)) = token.split_once('=') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("wait") {
            continue;
        }
        let v = v.trim().trim_matches('"');
        let secs: u64 = v.parse().map_err(|_| FieldError {
            field: "Prefer".into(),
            message: format!("wait={v}: must be a whole number of seconds"),
        })?;
        wait = Some(check_wait(
            Duration::from_secs(secs),
            max,
            "Prefer",
            "wait",
        )?);
    }
    Ok(wait)
}

/// Refuses a wait above `max`, naming `field` (`Prefer` or `wait_ms`) and `what` the caller
/// wrote. A zero wait asks for none.
pub fn check_wait(
    wait: Duration,
    max: Duration,
    field: &str,
    what: &str,
) -> Result<Duration, FieldError> {
    if wait > max {
        return Err(FieldError {
            field: field.into(),
            message: format!(
                "{what} is {} ms; at most {} s (SCIMRELAY_INGEST_MAX_WAIT_SECS)",
                wait.as_millis(),
                max.as_secs()
            ),
        });
    }
    Ok(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn prefer_values_parse_and_bad_ones_name_the_header() {
        let w = |v: &str| prefer_wait(v, MAX);
        assert_eq!(w("wait=5"), Ok(Some(Duration::from_secs(5))));
        assert_eq!(
            w("respond-async, wait=10"),
            Ok(Some(Duration::from_secs(10)))
        );
        assert_eq!(w("Wait = \"3\""), Ok(Some(Duration::from_secs(3))));
        assert_eq!(w("return=minimal"), Ok(None));
        let e = w("wait=soon").expect_err("not a number");
        assert_eq!(e.field, "Prefer");
        assert!(e.message.contains("wait=soon"), "{e}");
        let e = w("wait=31").expect_err("over the maximum");
        assert_eq!(e.field, "Prefer");
        assert!(e.message.contains("wait is 31000 ms; at most 30 s"), "{e}");
    }

    fn outcome(tenant: &str, event: &str, target: &str) -> Outcome {
        Outcome {
            tenant: tenant.into(),
            event_id: event.into(),
            target: target.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_wait_collects_one_outcome_per_copy_and_only_its_own() {
        let w = Waiters::default();
        let r = w
            .register("k", 10, vec![("acme".into(), "e1".into())])
            .expect("registered");
        w.deliver(outcome("acme", "e1", "gh"));
        w.deliver(outcome("acme", "e1", "gh"));
        w.deliver(outcome("globex", "e1", "aws"));
        w.deliver(outcome("acme", "e1", "aws"));
        let expected = HashSet::from([
            ("e1".to_owned(), "gh".to_owned()),
            ("e1".to_owned(), "aws".to_owned()),
        ]);
        let c = r.collect(&expected, Duration::from_secs(1)).await;
        assert!(c.complete);
        assert_eq!(c.outcomes.len(), 2);
        assert_eq!(w.waiting(), 0);
        assert!(lock(&w.by_event).is_empty());
    }

    #[tokio::test]
    async fn a_wait_runs_out_with_what_arrived() {
        let w = Waiters::default();
        let r = w
            .register("k", 10, vec![("acme".into(), "e1".into())])
            .expect("registered");
        w.deliver(outcome("acme", "e1", "gh"));
        let expected = HashSet::from([
            ("e1".to_owned(), "gh".to_owned()),
            ("e1".to_owned(), "aws".to_owned()),
        ]);
        let c = r.collect(&expected, Duration::from_millis(200)).await;
        assert!(!c.complete);
        assert_eq!(c.outcomes.len(), 1);
    }

    #[test]
    fn waits_are_bounded_per_key() {
        let w = Waiters::default();
        let a = w.register("k", 2, vec![("acme".into(), "e1".into())]);
        let b = w.register("k", 2, vec![("acme".into(), "e2".into())]);
        assert!(a.is_some() && b.is_some());
        assert!(
            w.register("k", 2, vec![("acme".into(), "e3".into())])
                .is_none()
        );
        assert!(
            w.register("other", 2, vec![("acme".into(), "e3".into())])
                .is_some()
        );
        drop(a);
        assert!(
            w.register("k", 2, vec![("acme".into(), "e4".into())])
                .is_some()
        );
    }
}
