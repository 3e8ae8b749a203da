//! Request statistics of one tenant, read by tests through the admin API: counts by method, path
//! class and status, throttled responses, the peak number of requests that arrived within any
//! one-second window (a sliding window over arrival times, so a client that bursts at a second
//! boundary cannot hide it), and how many requests carried `If-Match` or a `filter` (what a
//! client sent, so a test can prove it sends preconditions, or never filters, without a proxy).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::Method;
use serde::Serialize;

/// The sliding window for the peak rate.
const PEAK_WINDOW: Duration = Duration::from_secs(1);

/// Counters of one tenant.
#[derive(Debug, Default)]
pub struct Stats {
    /// path class → (method, status) → count.
    counts: HashMap<String, HashMap<(Method, u16), u64>>,
    /// Requests answered.
    total: u64,
    /// Requests refused by a rate limit (429).
    throttled: u64,
    /// Arrival times within the last [`PEAK_WINDOW`].
    window: VecDeque<Instant>,
    /// Largest number of arrivals seen within one window.
    peak: u64,
    /// Requests that carried an `If-Match` header.
    if_match: u64,
    /// Requests whose query string carried a non-empty `filter` parameter.
    filtered: u64,
    /// Writes in progress by subject (see [`Stats::write_started`]).
    writing: HashMap<String, u32>,
    /// Writes that began while another write of the same subject was in progress.
    overlapping_writes: u64,
    /// The first subjects written by two requests at once.
    overlapped: Vec<String>,
}

/// How many overlapped subjects a snapshot names.
const OVERLAPPED_NAMED: usize = 20;

/// What a request carried that the statistics count, read at arrival.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    /// An `If-Match` header (whether or not the tenant honours ETags).
    pub if_match: bool,
    /// A non-empty `filter` query parameter (whether or not the tenant can filter).
    pub filter: bool,
}

impl Carried {
    /// Reads the request line and headers.
    pub fn of(uri: &axum::http::Uri, headers: &axum::http::HeaderMap) -> Self {
        Self {
            if_match: headers.contains_key(axum::http::header::IF_MATCH),
            filter: uri.query().is_some_and(|q| {
                q.split('&').any(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    k.eq_ignore_ascii_case("filter") && !v.is_empty()
                })
            }),
        }
    }
}

/// One row of the breakdown.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Row {
    /// Path class, e.g. `Users/{id}`.
    pub path: String,
    /// HTTP method.
    pub method: String,
    /// Response status.
    pub status: u16,
    /// Number of requests.
    pub count: u64,
}

/// The admin API's view of [`Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// Requests answered.
    pub total: u64,
    /// Requests refused with 429 by a rate limit.
    pub throttled: u64,
    /// Most requests arriving within any 1-second window.
    pub peak_per_sec: u64,
    /// Writes (creates included) that began while another write of the same subject (a user
    /// by `userName`, a group by `displayName`) was still in progress at this server.
    pub overlapping_writes: u64,
    /// The first subjects so written (kind and name).
    pub overlapped: Vec<String>,
    /// Requests that carried an `If-Match` header.
    pub if_match: u64,
    /// Requests that carried a non-empty `filter` query parameter.
    pub filtered: u64,
    /// Requests by method.
    pub by_method: BTreeMap<String, u64>,
    /// Requests by path class.
    pub by_path: BTreeMap<String, u64>,
    /// Requests by status (as a string key).
    pub by_status: BTreeMap<String, u64>,
    /// The full breakdown, sorted by path, method, status.
    pub requests: Vec<Row>,
}

impl Stats {
    /// Records what an arriving request carried.
    pub fn carried(&mut self, c: Carried) {
        self.if_match += u64::from(c.if_match);
        self.filtered += u64::from(c.filter);
    }

    /// Records an arrival (for the peak rate).
    pub fn arrived(&mut self, now: Instant) {
        while let Some(&front) = self.window.front() {
            if now.saturating_duration_since(front) >= PEAK_WINDOW {
                self.window.pop_front();
            } else {
                break;
            }
        }
        self.window.push_back(now);
        self.peak = self.peak.max(self.window.len() as u64);
    }

    /// A write of `subject` began: counted as overlapping when another is still in progress.
    pub fn write_started(&mut self, subject: &str) {
        let n = self.writing.entry(subject.to_owned()).or_default();
        *n += 1;
        if *n > 1 {
            self.overlapping_writes += 1;
            if self.overlapped.len() < OVERLAPPED_NAMED
                && !self.overlapped.iter().any(|s| s == subject)
            {
                self.overlapped.push(subject.to_owned());
            }
        }
    }

    /// A write of `subject` ended (answered, or abandoned by its client and finished anyway).
    pub fn write_ended(&mut self, subject: &str) {
        if let Some(n) = self.writing.get_mut(subject) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.writing.remove(subject);
            }
        }
    }

    /// Records an answered request.
    pub fn answered(&mut self, method: &Method, path_class: &str, status: u16, throttled: bool) {
        self.total += 1;
        if throttled {
            self.throttled += 1;
        }
        let by_path = match self.counts.get_mut(path_class) {
            Some(m) => m,
            None => self.counts.entry(path_class.to_string()).or_default(),
        };
        *by_path.entry((method.clone(), status)).or_default() += 1;
    }

    /// A serialisable copy.
    pub fn snapshot(&self) -> Snapshot {
        let mut requests = Vec::new();
        let mut by_method = BTreeMap::new();
        let mut by_path = BTreeMap::new();
        let mut by_status = BTreeMap::new();
        for (path, m) in &self.counts {
            for ((method, status), &count) in m {
                requests.push(Row {
                    path: path.clone(),
                    method: method.to_string(),
                    status: *status,
                    count,
                });
                *by_method.entry(method.to_string()).or_default() += count;
                *by_path.entry(path.clone()).or_default() += count;
                *by_status.entry(status.to_string()).or_default() += count;
            }
        }
        requests.sort();
        Snapshot {
            total: self.total,
            throttled: self.throttled,
            peak_per_sec: self.peak,
            overlapping_writes: self.overlapping_writes,
            overlapped: self.overlapped.clone(),
            if_match: self.if_match,
            filtered: self.filtered,
            by_method,
            by_path,
            by_status,
            requests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_is_a_sliding_window() {
        let mut s = Stats::default();
        let t0 = Instant::now();
        // 3 requests late in one second, 3 early in the next: 6 within 1 s.
        for ms in [900, 950, 990, 1010, 1050, 1100] {
            s.arrived(t0 + Duration::from_millis(ms));
        }
        s.arrived(t0 + Duration::from_millis(2500));
        assert_eq!(s.snapshot().peak_per_sec, 6);
    }

    #[test]
    fn counts_what_requests_carried() {
        let mut s = Stats::default();
        let mut h = axum::http::HeaderMap::new();
        let uri = |u: &str| u.parse::<axum::http::Uri>().unwrap_or_default();
        s.carried(Carried::of(
            &uri("/t/scim/v2/Users?filter=userName%20eq%20%22a%22"),
            &h,
        ));
        s.carried(Carried::of(&uri("/t/scim/v2/Users?Filter=x&count=1"), &h));
        s.carried(Carried::of(&uri("/t/scim/v2/Users?filter=&count=1"), &h));
        s.carried(Carried::of(&uri("/t/scim/v2/Users?filtered=1"), &h));
        h.insert(
            axum::http::header::IF_MATCH,
            axum::http::HeaderValue::from_static("W/\"1\""),
        );
        s.carried(Carried::of(&uri("/t/scim/v2/Users/1"), &h));
        let snap = s.snapshot();
        assert_eq!((snap.filtered, snap.if_match), (2, 1));
    }

    #[test]
    fn counts_by_dimension() {
        let mut s = Stats::default();
        s.answered(&Method::POST, "Users", 201, false);
        s.answered(&Method::POST, "Users", 201, false);
        s.answered(&Method::GET, "Users/{id}", 429, true);
        let snap = s.snapshot();
        assert_eq!(snap.total, 3);
        assert_eq!(snap.throttled, 1);
        assert_eq!(snap.by_method.get("POST"), Some(&2));
        assert_eq!(snap.by_path.get("Users/{id}"), Some(&1));
        assert_eq!(snap.by_status.get("201"), Some(&2));
        assert_eq!(
            snap.requests[0],
            Row {
                path: "Users".into(),
                method: "POST".into(),
                status: 201,
                count: 2
            }
        );
    }
}
