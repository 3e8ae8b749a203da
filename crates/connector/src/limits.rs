//! The per-target request pipeline, in Vector's fixed order: **static ceiling** (governor) →
//! **adaptive rate** (AIMD pacing) → **adaptive concurrency** (AIMD window) → request.
//!
//! Why both an adaptive rate and an adaptive concurrency: a provider's quota is a rate (GitHub:
//! points per minute; the simulator: requests per second). With fast responses, even one request
//! in flight exceeds a small rate, so concurrency alone cannot respect a quota; and with slow
//! responses a rate alone lets requests pile up. The rate learns the quota (additive increase
//! while answers are clean, ×0.9 on a throttling answer — at most once per cooldown so one burst
//! of 429s counts once); the window learns the backend's capacity (+1/limit per clean response
//! while the window is full, ×0.9 on timeouts, 5xx or latency far above the baseline).
//!
//! Like TCP, the rate starts in *slow start*: each clean answer to a request that had to wait
//! for the pacer adds 1 request/s (doubling per second), until the first throttling answer;
//! then it is congestion avoidance: back to the learned quota quickly, then a slow probe above
//! it (see "Back to a learned quota" below). The rate only grows when the pacer was actually the
//! bottleneck, so an idle target does not drift up.
//!
//! A throttling answer also **pauses the whole target** until its Retry-After / reset time (or a
//! backoff when it names none): every request of the target waits, not only the one refused.
//! Remaining-quota hints (`x-ratelimit-remaining` + reset, `Sforce-Limit-Info`) cap the rate so
//! the rest of the quota is spread over the time left, before the provider throttles.
//!
//! With a static ceiling configured the adaptive rate starts at the ceiling and never goes
//! above it; without one it starts at [`ADAPTIVE_START_PER_SEC`] and probes upwards.
//!
//! **Ceiling burst.** The pacer hands out slots on a fixed grid (a late request does not move
//! the next slot), but the governor's GCRA times each request from when it actually arrived.
//! With a burst of 1, every request that waited for the governor wakes a little late (timer
//! resolution) and that lateness is added to the timeline for good: at 200 requests/s and a few
//! hundred microseconds per wake-up, several percent of the ceiling are lost (measured: 92–96%
//! of the provider's rate with the ceiling at 99%). The governor therefore allows a burst of
//! [`CEILING_BURST_SECS`] worth of requests (at least 2): the pacer still spaces requests
//! evenly, and the governor only absorbs wake-up jitter while holding the long-run rate to the
//! ceiling. Over any one second at most `ceiling + burst` requests start.
//!
//! **Back to a learned quota.** After a throttling answer the rate drops to at most 95% of the
//! rate the provider accepted over the last second (`w_max`, the quota as far as we know);
//! it climbs back at 10% of `w_max` per second to 90%, then at 2% per second to 98%, then
//! probes slowly (+0.1 request/s per second) above it, so throttling answers stay rare.
//!
//! **Two lanes.** Every request is [`Lane::Interactive`] (a person is waiting) or
//! [`Lane::Bulk`]. Waiting requests queue per lane, and each due slot of the pacer is granted
//! to one of them: the oldest interactive request while interactive holds a priority token
//! (tokens fill at `interactive_share` × the rate, one second's worth at most), else the oldest
//! request of either lane. A bulk request takes a free window slot only when no interactive
//! request waits for one. So interactive work never waits behind queued bulk work within its
//! share; beyond it the two lanes are served first come, first served (a flood of interactive
//! requests slows bulk down but cannot stop it); either lane gets everything the other leaves
//! (docs/design.md, "Login-time provisioning"). The slots stay on a fixed grid: a grant wakes
//! the next request, and a wake-up that came late does not move the grid.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::Notify;
use tokio::time::Instant;

/// Starting rate of a target with no ceiling: low enough for any SaaS API; slow start doubles
/// it every second of paced traffic until the first throttling answer.
pub const ADAPTIVE_START_PER_SEC: f64 = 50.0;
/// Highest adaptive rate (no provider we serve allows more from one client).
pub const ADAPTIVE_MAX_PER_SEC: f64 = 20_000.0;
/// Multiplicative decrease on congestion.
pub const DECREASE: f64 = 0.9;
/// Minimum time between two rate decreases.
pub const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);
/// Pause after a throttling answer that names no wait.
pub const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(1);
/// Longest pause honoured from one answer (a provider asking for more gets re-asked later).
pub const MAX_PAUSE: Duration = Duration::from_secs(3600);
/// Seconds of requests at the ceiling the governor lets start together (see the module docs).
pub const CEILING_BURST_SECS: f64 = 0.02;
/// How far behind the clock the pacer's grid may be when a wake-up grants its slots: a little
/// over the timer's resolution (1 ms), so a late wake-up catches up, while an idle target
/// starts with a burst of at most this long's worth of requests.
const PACER_SLACK: Duration = Duration::from_millis(2);
/// Lowest adaptive rate, also the lowest cap a quota hint sets (one request per 100 s): the
/// rate never reaches zero, so a throttled target always gets its next request.
const MIN_RATE_PER_SEC: f64 = 0.01;
/// Starting concurrency window, within the configured bounds: a few requests in flight, so a
/// new target is neither served one request at a time nor flooded before the window learned
/// anything.
const INITIAL_WINDOW: f64 = 4.0;
/// A wait for the limits shorter than this is scheduling noise and is not counted in
/// [`Limits::waits`].
const COUNTED_WAIT: Duration = Duration::from_millis(1);
/// A clean answer is *slow* (the window shrinks) when its latency is more than this many times
/// the smoothed baseline: far enough above it that ordinary variation does not shrink the
/// window, close enough to catch a backend that queues our requests.
const SLOW_FACTOR: f64 = 4.0;
/// ...and longer than this many seconds: on a backend answering in a few milliseconds, a
/// fourfold slowdown is jitter, not congestion.
const SLOW_MIN_SECS: f64 = 0.05;
/// Weight of each clean answer in the latency baseline (an exponentially weighted average):
/// about the last 20 answers count, so the baseline follows a backend that gets slower for
/// good without jumping at one outlier.
const LATENCY_EWMA_WEIGHT: f64 = 0.05;
/// Clean answers within this span make the rate the provider accepted: one second, the unit
/// of the rates we learn.
const ACCEPTED_SPAN: Duration = Duration::from_secs(1);
/// Shortest span the accepted rate is computed over, in seconds, so that a burst of answers
/// right after an idle spell does not read as a huge rate.
const ACCEPTED_MIN_SPAN_SECS: f64 = 0.25;
/// The rate grows only while it is at most this many times the rate the provider accepted:
/// far above it, the window or the pipeline is the bottleneck, and growing would only store
/// up an overshoot.
const MAX_RATE_OVER_ACCEPTED: f64 = 2.0;
/// After a throttling answer the rate drops to at most this share of the learned quota, so
/// the next seconds run below the limit that was just hit.
const QUOTA_MARGIN: f64 = 0.95;
/// Back to a learned quota: below this share of it, the rate climbs fast...
const RECOVERY_FAST_BELOW: f64 = 0.9;
/// ...by this share of the quota per second of paced traffic (back within seconds);
const RECOVERY_FAST_STEP: f64 = 0.1;
/// below this share, it climbs more carefully...
const RECOVERY_SLOW_BELOW: f64 = 0.98;
/// ...by this share of the quota per second;
const RECOVERY_SLOW_STEP: f64 = 0.02;
/// above it, it probes by this many requests/s per second, so that throttling answers stay
/// rare while a raised quota is still found.
const PROBE_STEP_PER_SEC: f64 = 0.1;
/// Share of a remaining-quota hint spread until its reset: the 10% margin leaves room for
/// requests already in flight when the hint was read.
const HINT_SHARE: f64 = 0.9;
/// Shortest time until a reset a hint's remainder is spread over, in seconds: a reset due in
/// milliseconds would otherwise turn the remainder into a huge rate.
const HINT_MIN_SPAN_SECS: f64 = 1.0;

/// Which lane a request belongs to (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Lane {
    /// A person is waiting for it (a first login): served first, within its share.
    Interactive,
    /// Everything else: takes what interactive work leaves.
    #[default]
    Bulk,
}

impl Lane {
    fn index(self) -> usize {
        match self {
            Lane::Interactive => 0,
            Lane::Bulk => 1,
        }
    }

    /// The lane of a message's requests: its event's priority, as ingest resolved it (an
    /// event published before priorities existed is bulk).
    pub fn of(event: &scimrelay_proto::v1::IdentityEvent) -> Self {
        match event.priority() {
            scimrelay_proto::v1::Priority::Interactive => Lane::Interactive,
            _ => Lane::Bulk,
        }
    }

    /// The lane's name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Interactive => "interactive",
            Lane::Bulk => "bulk",
        }
    }
}

/// A request waiting for a slot of the pacer.
struct Ticket {
    id: u64,
    since: Instant,
    /// Set (under the state lock) when a slot was granted to it.
    granted: std::sync::atomic::AtomicBool,
    /// Woken when it is granted, or becomes the head of its lane (and so times the next slot).
    wake: Notify,
}

/// What the response to one request said about the target's capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Feedback {
    /// A normal answer (any status that is not congestion), with its latency.
    Ok(Duration),
    /// The provider throttled us; `pause` is its Retry-After or reset wait, if it gave one.
    Throttled(Option<Duration>),
    /// A timeout, connection failure or 5xx: the backend is struggling.
    Overloaded,
}

/// A remaining-quota hint parsed from response headers by the provider profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaHint {
    /// Requests left in the current quota window.
    pub remaining: u64,
    /// Time until the window resets.
    pub resets_in: Duration,
}

/// Settings of a target's pipeline.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Static ceiling in requests/s for this replica (already divided by the replica count).
    pub ceiling_per_sec: Option<f64>,
    /// Concurrency bounds.
    pub min_concurrency: u32,
    /// Concurrency bounds.
    pub max_concurrency: u32,
    /// The share of the rate reserved for interactive requests (0 to 1).
    pub interactive_share: f64,
}

struct State {
    /// Requests waiting for a slot of the pacer, per lane (see [`Lane::index`]), oldest first.
    queued: [std::collections::VecDeque<std::sync::Arc<Ticket>>; 2],
    next_ticket: u64,
    /// Interactive priority tokens, and when they were last filled.
    tokens: f64,
    tokens_at: Instant,
    /// Interactive requests waiting for a window slot: bulk leaves free slots to them.
    interactive_window_waiters: u32,
    /// Current adaptive rate (requests/s).
    rate: f64,
    /// Next free sending slot of the pacer.
    next_slot: Instant,
    /// The target is paused until then (throttling).
    paused_until: Option<Instant>,
    last_decrease: Option<Instant>,
    /// Current concurrency window.
    window: f64,
    in_flight: u32,
    /// Smoothed clean-response latency, the baseline for "slow".
    latency_ewma: Option<f64>,
    /// Requests and throttles seen, for metrics and tests.
    throttled: u64,
    /// Upper bound on the rate from a remaining-quota hint, and until when it holds.
    quota_cap: Option<(f64, Instant)>,
    /// Slow start: no throttling answer seen yet.
    slow_start: bool,
    /// Requests that had to wait (pause, ceiling, pacing or window), and for how long in all.
    waits: u64,
    wait_ms: u64,
    /// Times of the clean answers of the last second (the rate the provider accepted).
    accepted: std::collections::VecDeque<Instant>,
    /// The accepted rate when the provider last throttled: the quota, as far as we know.
    w_max: Option<f64>,
}

/// One target's limits, shared by every request to it.
pub struct Limits {
    ceiling: Option<DefaultDirectRateLimiter>,
    ceiling_per_sec: Option<f64>,
    interactive_share: f64,
    min_window: f64,
    max_window: f64,
    state: Mutex<State>,
    slot_freed: Notify,
}

/// A granted request slot; report how it went with [`Limits::release`].
#[derive(Debug)]
pub struct Permit {
    /// Time spent waiting for the ceiling, pacing, pauses and the window.
    pub waited: Duration,
    started: Instant,
    /// Whether the pacer made this request wait (the rate was the bottleneck).
    paced: bool,
}

impl Permit {
    /// When the request was allowed to start.
    pub fn started(&self) -> Instant {
        self.started
    }
}

/// A [`Permit`] that gives its window slot back when it is dropped unreported: the request
/// holding it was cancelled (its handler abandoned when the broker session ended). Without
/// this, every cancelled request would shrink the window by one for good, until the target
/// sent nothing at all.
pub struct Slot<'a> {
    limits: &'a Limits,
    permit: Option<Permit>,
}

impl Slot<'_> {
    /// The time spent waiting for the slot.
    pub fn waited(&self) -> Duration {
        self.permit.as_ref().map_or(Duration::ZERO, |p| p.waited)
    }

    /// Reports how the request went (see [`Limits::release`]).
    pub fn release(mut self, feedback: Feedback) {
        if let Some(p) = self.permit.take() {
            self.limits.release(p, feedback);
        }
    }

    /// Gives the slot back unused (see [`Limits::cancel`]).
    pub fn cancel(mut self) {
        if let Some(p) = self.permit.take() {
            self.limits.cancel(p);
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.limits.cancel(p);
        }
    }
}

/// A request queued at the pacer; dropped before its grant (the handler was cancelled), it
/// leaves the queue, and the next request of its lane takes over timing the next slot.
struct Queued<'a> {
    limits: &'a Limits,
    lane: Lane,
    ticket: &'a std::sync::Arc<Ticket>,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if self
            .ticket
            .granted
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return;
        }
        let mut s = self.limits.lock();
        let q = &mut s.queued[self.lane.index()];
        if let Some(i) = q.iter().position(|t| t.id == self.ticket.id) {
            q.remove(i);
            if let Some(next) = q.front() {
                next.wake.notify_one();
            }
        }
    }
}

/// An interactive request counted as waiting for a window slot; uncounted when dropped.
struct WindowWaiter<'a> {
    limits: &'a Limits,
    registered: bool,
}

impl Drop for WindowWaiter<'_> {
    fn drop(&mut self) {
        if self.registered {
            let mut s = self.limits.lock();
            s.interactive_window_waiters = s.interactive_window_waiters.saturating_sub(1);
            drop(s);
            // A bulk request may now take the slot this one left.
            self.limits.slot_freed.notify_waiters();
        }
    }
}

/// Fewest clean answers in the last second for their rate to count as a measurement.
const MIN_ACCEPTED_SAMPLES: usize = 10;

/// The rate of clean answers over the last [`ACCEPTED_SPAN`] (over at least
/// [`ACCEPTED_MIN_SPAN_SECS`]), when there were enough of them to tell.
fn accepted_rate(s: &State, now: Instant) -> Option<f64> {
    if s.accepted.len() < MIN_ACCEPTED_SAMPLES {
        return None;
    }
    let span = s
        .accepted
        .front()
        .map(|t| now.duration_since(*t).as_secs_f64())
        .unwrap_or(0.0)
        .clamp(ACCEPTED_MIN_SPAN_SECS, ACCEPTED_SPAN.as_secs_f64());
    Some(s.accepted.len() as f64 / span)
}

fn quota_of(rate: f64) -> Option<Quota> {
    if rate >= 2.0 {
        let per_sec = NonZeroU32::new(rate.floor() as u32)?;
        let burst = NonZeroU32::new(((rate * CEILING_BURST_SECS).floor() as u32).max(2))?;
        Some(Quota::per_second(per_sec).allow_burst(burst))
    } else if rate >= 1.0 {
        let per_sec = NonZeroU32::new(rate.floor() as u32)?;
        Some(Quota::per_second(per_sec).allow_burst(NonZeroU32::MIN))
    } else {
        let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
        Quota::with_period(period).map(|q| q.allow_burst(NonZeroU32::MIN))
    }
}

impl Limits {
    /// Builds the pipeline of one target.
    pub fn new(config: &LimitsConfig) -> Self {
        let ceiling = config
            .ceiling_per_sec
            .and_then(quota_of)
            .map(RateLimiter::direct);
        let rate = config.ceiling_per_sec.unwrap_or(ADAPTIVE_START_PER_SEC);
        let min_window = f64::from(config.min_concurrency.max(1));
        let max_window = f64::from(config.max_concurrency.max(config.min_concurrency.max(1)));
        Limits {
            ceiling,
            ceiling_per_sec: config.ceiling_per_sec,
            interactive_share: config.interactive_share.clamp(0.0, 1.0),
            min_window,
            max_window,
            state: Mutex::new(State {
                queued: Default::default(),
                next_ticket: 0,
                tokens: 0.0,
                tokens_at: Instant::now(),
                interactive_window_waiters: 0,
                rate,
                next_slot: Instant::now(),
                paused_until: None,
                last_decrease: None,
                window: min_window.max(max_window.min(INITIAL_WINDOW)),
                in_flight: 0,
                latency_ewma: None,
                throttled: 0,
                quota_cap: None,
                slow_start: true,
                waits: 0,
                wait_ms: 0,
                accepted: std::collections::VecDeque::new(),
                w_max: None,
            }),
            slot_freed: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way that
        // matters more than stopping the target, so recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for the right to send one request of `lane`: pause → pacing → ceiling → window.
    pub async fn acquire(&self, lane: Lane) -> Permit {
        let begin = Instant::now();
        let paced = self.paced_slot(lane).await;
        if let Some(c) = &self.ceiling {
            c.until_ready().await;
        }
        self.window_slot(lane).await;
        let waited = begin.elapsed();
        if waited >= COUNTED_WAIT {
            let mut s = self.lock();
            s.waits += 1;
            s.wait_ms += u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        }
        Permit {
            waited,
            started: Instant::now(),
            paced,
        }
    }

    /// Queues for a slot of the pacer and waits until one is granted; returns whether it had
    /// to wait (the rate was the bottleneck). The heads of both lanes time the next slot (or
    /// the end of a pause); whoever wakes grants every slot that is due, in lane order.
    async fn paced_slot(&self, lane: Lane) -> bool {
        let ticket = {
            let mut s = self.lock();
            s.next_ticket += 1;
            let t = std::sync::Arc::new(Ticket {
                id: s.next_ticket,
                since: Instant::now(),
                granted: std::sync::atomic::AtomicBool::new(false),
                wake: Notify::new(),
            });
            s.queued[lane.index()].push_back(t.clone());
            t
        };
        let queued = Queued {
            limits: self,
            lane,
            ticket: &ticket,
        };
        let mut first = true;
        loop {
            let wake_at = {
                let mut s = self.lock();
                self.grant_due(&mut s, Instant::now());
                if ticket.granted.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let head = s.queued[lane.index()]
                    .front()
                    .is_some_and(|t| t.id == ticket.id);
                head.then(|| match s.paused_until {
                    Some(until) if until > s.next_slot => until,
                    _ => s.next_slot,
                })
            };
            first = false;
            match wake_at {
                Some(at) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = ticket.wake.notified() => {}
                    }
                }
                None => ticket.wake.notified().await,
            }
        }
        drop(queued);
        !first
    }

    /// Grants every slot of the pacer that is due at `now` to the waiting requests, in lane
    /// order (see the module docs), and wakes them.
    fn grant_due(&self, s: &mut State, now: Instant) {
        loop {
            if s.queued.iter().all(std::collections::VecDeque::is_empty) {
                return;
            }
            match s.paused_until {
                Some(until) if until > now => return,
                Some(_) => s.paused_until = None,
                None => {}
            }
            if s.next_slot > now {
                return;
            }
            let mut rate = s.rate;
            if let Some((cap, until)) = s.quota_cap {
                if until > now {
                    rate = rate.min(cap)
                } else {
                    s.quota_cap = None
                }
            }
            let interval = Duration::from_secs_f64(1.0 / rate.max(1e-6));
            // Priority tokens: at most one second's worth of the reserved share.
            let share = self.interactive_share * rate;
            s.tokens = (s.tokens + now.duration_since(s.tokens_at).as_secs_f64() * share)
                .min(share.max(1.0));
            s.tokens_at = now;
            let [interactive, bulk] = &s.queued;
            let lane = match (interactive.front(), bulk.front()) {
                (Some(_), _) if s.tokens >= 1.0 => {
                    s.tokens -= 1.0;
                    Lane::Interactive
                }
                (Some(i), Some(b)) if b.since < i.since => Lane::Bulk,
                (Some(_), _) => Lane::Interactive,
                (None, _) => Lane::Bulk,
            };
            let Some(t) = s.queued[lane.index()].pop_front() else {
                return;
            };
            // On the grid: a wake-up that came late (the timer's resolution is a millisecond,
            // coarser than the slots of a fast target) grants every slot that came due
            // meanwhile, so the late grant does not move the grid; an idle pacer owes no
            // burst beyond `PACER_SLACK`.
            let base = s.next_slot.max(now.checked_sub(PACER_SLACK).unwrap_or(now));
            s.next_slot = base + interval;
            t.granted.store(true, std::sync::atomic::Ordering::Relaxed);
            t.wake.notify_one();
            if let Some(next) = s.queued[lane.index()].front() {
                next.wake.notify_one();
            }
        }
    }

    /// Waits for a slot of the concurrency window; a bulk request leaves a free slot to a
    /// waiting interactive one. The waiter is registered (`enable`) before the check, so a slot
    /// freed between the check and the await is not missed.
    async fn window_slot(&self, lane: Lane) {
        let mut waiting = WindowWaiter {
            limits: self,
            registered: false,
        };
        loop {
            let notified = self.slot_freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                let free = f64::from(s.in_flight) < s.window.floor().max(1.0);
                let first = lane == Lane::Interactive || s.interactive_window_waiters == 0;
                if free && first {
                    s.in_flight += 1;
                    if waiting.registered {
                        s.interactive_window_waiters -= 1;
                        waiting.registered = false;
                        // Bulk requests that deferred to this one while more slots were free
                        // may take them now.
                        if s.interactive_window_waiters == 0
                            && f64::from(s.in_flight) < s.window.floor().max(1.0)
                        {
                            self.slot_freed.notify_waiters();
                        }
                    }
                    break;
                }
                if lane == Lane::Interactive && !waiting.registered {
                    s.interactive_window_waiters += 1;
                    waiting.registered = true;
                }
            }
            notified.await;
        }
    }

    /// [`Limits::acquire`], as a [`Slot`] that is given back if dropped unreported.
    pub async fn acquire_slot(&self, lane: Lane) -> Slot<'_> {
        let permit = self.acquire(lane).await;
        Slot {
            limits: self,
            permit: Some(permit),
        }
    }

    /// Reports how a request went; frees its window slot and adapts.
    pub fn release(&self, permit: Permit, feedback: Feedback) {
        let now = Instant::now();
        {
            let mut s = self.lock();
            let window_full = f64::from(s.in_flight) >= s.window.floor();
            s.in_flight = s.in_flight.saturating_sub(1);
            let may_decrease = s
                .last_decrease
                .is_none_or(|t| now.duration_since(t) >= DECREASE_COOLDOWN);
            match feedback {
                Feedback::Ok(latency) => {
                    let l = latency.as_secs_f64();
                    let slow = s
                        .latency_ewma
                        .is_some_and(|base| l > base * SLOW_FACTOR && l > SLOW_MIN_SECS);
                    if slow && may_decrease {
                        s.window = (s.window * DECREASE).max(self.min_window);
                        s.last_decrease = Some(now);
                    } else {
                        s.latency_ewma = Some(s.latency_ewma.map_or(l, |b| {
                            b * (1.0 - LATENCY_EWMA_WEIGHT) + l * LATENCY_EWMA_WEIGHT
                        }));
                        if window_full {
                            s.window = (s.window + 1.0 / s.window).min(self.max_window);
                        }
                        s.accepted.push_back(now);
                        while s
                            .accepted
                            .front()
                            .is_some_and(|t| now.duration_since(*t) > ACCEPTED_SPAN)
                        {
                            s.accepted.pop_front();
                        }
                        // Grow only while the pacer is what limits us: a rate far above what
                        // the provider actually accepted (the window or the pipeline is the
                        // bottleneck) would only be an overshoot waiting to happen.
                        let validated = accepted_rate(&s, now)
                            .is_none_or(|a| s.rate <= MAX_RATE_OVER_ACCEPTED * a);
                        if permit.paced && validated {
                            // Requests/s gained per second of paced traffic: doubling in slow
                            // start; fast back to the known quota, then a slow probe above it
                            // (like CUBIC's plateau), so throttling answers stay rare.
                            let per_sec = match (s.slow_start, s.w_max) {
                                (true, _) | (false, None) => s.rate,
                                (false, Some(w)) if s.rate < RECOVERY_FAST_BELOW * w => {
                                    RECOVERY_FAST_STEP * w
                                }
                                (false, Some(w)) if s.rate < RECOVERY_SLOW_BELOW * w => {
                                    RECOVERY_SLOW_STEP * w
                                }
                                (false, Some(_)) => PROBE_STEP_PER_SEC,
                            };
                            let step = per_sec / s.rate.max(1.0);
                            let cap = self.ceiling_per_sec.unwrap_or(ADAPTIVE_MAX_PER_SEC);
                            s.rate = (s.rate + step).min(cap);
                        }
                    }
                }
                Feedback::Throttled(wait) => {
                    s.throttled += 1;
                    s.slow_start = false;
                    let pause = wait.unwrap_or(DEFAULT_THROTTLE_PAUSE).min(MAX_PAUSE);
                    let until = now + pause;
                    s.paused_until = Some(s.paused_until.map_or(until, |p| p.max(until)));
                    if may_decrease {
                        // What the provider accepted over the last second is the best estimate
                        // of its quota; with too few answers to tell, keep what was learned.
                        let w = accepted_rate(&s, now).or(s.w_max).unwrap_or(s.rate);
                        s.w_max = Some(w);
                        let before = s.rate;
                        s.rate = (s.rate * DECREASE)
                            .min(w * QUOTA_MARGIN)
                            .max(MIN_RATE_PER_SEC);
                        tracing::info!(
                            rate_before = before,
                            rate_after = s.rate,
                            learned_quota = w,
                            pause_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX),
                            "throttled by the provider: slowing down"
                        );
                        s.window = (s.window * DECREASE).max(self.min_window);
                        s.last_decrease = Some(now);
                    }
                }
                Feedback::Overloaded => {
                    if may_decrease {
                        s.window = (s.window * DECREASE).max(self.min_window);
                        s.last_decrease = Some(now);
                    }
                }
            }
        }
        self.slot_freed.notify_waiters();
    }

    /// Gives back a permit whose request was never sent (no feedback).
    pub fn cancel(&self, _permit: Permit) {
        {
            let mut s = self.lock();
            s.in_flight = s.in_flight.saturating_sub(1);
        }
        self.slot_freed.notify_waiters();
    }

    /// Applies a remaining-quota hint: the rate is capped at `remaining / resets_in` until the
    /// reset (with a 10% margin), so the quota lasts until it refills.
    pub fn hint(&self, hint: QuotaHint) {
        let secs = hint.resets_in.as_secs_f64().max(HINT_MIN_SPAN_SECS);
        let cap = (hint.remaining as f64 * HINT_SHARE / secs).max(MIN_RATE_PER_SEC);
        let mut s = self.lock();
        s.quota_cap = Some((cap, Instant::now() + hint.resets_in));
    }

    /// The current adaptive rate (requests/s).
    pub fn rate(&self) -> f64 {
        self.lock().rate
    }

    /// The current concurrency window.
    pub fn window(&self) -> f64 {
        self.lock().window
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> u32 {
        self.lock().in_flight
    }

    /// Requests that waited for the limits, and the total wait in milliseconds.
    pub fn waits(&self) -> (u64, u64) {
        let s = self.lock();
        (s.waits, s.wait_ms)
    }

    /// Throttling answers seen.
    pub fn throttled(&self) -> u64 {
        self.lock().throttled
    }

    /// Whether the target is paused, and until when.
    pub fn paused_until(&self) -> Option<Instant> {
        self.lock().paused_until.filter(|t| *t > Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(ceiling: Option<f64>, max: u32) -> Limits {
        Limits::new(&LimitsConfig {
            ceiling_per_sec: ceiling,
            min_concurrency: 1,
            max_concurrency: max,
            interactive_share: 0.2,
        })
    }

    /// Limits paced at `rate` by the pacer alone: the ceiling's governor keeps real time, which
    /// a test with paused time cannot advance (the pacer never goes above the ceiling anyway).
    fn paced(rate: f64, max: u32) -> Limits {
        let mut l = limits(Some(rate), max);
        l.ceiling = None;
        l
    }

    /// Requests of `lane` sent back to back by `clients` tasks until `until`, each answering
    /// after `latency`; returns how many were granted before `until`.
    fn flood(
        l: &std::sync::Arc<Limits>,
        lane: Lane,
        clients: usize,
        latency: Duration,
        until: Instant,
    ) -> tokio::task::JoinHandle<u64> {
        let l = l.clone();
        tokio::spawn(async move {
            let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
            let tasks: Vec<_> = (0..clients)
                .map(|_| {
                    let (l, sent) = (l.clone(), sent.clone());
                    tokio::spawn(async move {
                        while Instant::now() < until {
                            let p = l.acquire(lane).await;
                            if Instant::now() < until {
                                sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            tokio::time::sleep(latency).await;
                            l.release(p, Feedback::Ok(latency));
                        }
                    })
                })
                .collect();
            for t in tasks {
                let _ = t.await;
            }
            sent.load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_above_the_timer_resolution_is_kept() {
        // 5,000 requests/s is one slot per 200 µs, finer than the timer's millisecond: each
        // wake-up must grant every slot that came due meanwhile.
        let l = std::sync::Arc::new(paced(5000.0, 64));
        let until = Instant::now() + Duration::from_secs(2);
        let sent = flood(&l, Lane::Bulk, 64, Duration::from_micros(100), until)
            .await
            .unwrap_or_default();
        assert!(sent >= 9_500, "{sent} requests in 2 s at 5,000/s");
        assert!(sent <= 10_100, "{sent} requests in 2 s at 5,000/s");
    }

    #[tokio::test(start_paused = true)]
    async fn interactive_never_waits_behind_queued_bulk() {
        let l = std::sync::Arc::new(paced(10.0, 64));
        let until = Instant::now() + Duration::from_secs(20);
        // 50 bulk requests queued: 5 s of slots at 10/s.
        let bulk = flood(&l, Lane::Bulk, 50, Duration::from_millis(10), until);
        tokio::time::sleep(Duration::from_secs(2)).await;
        for _ in 0..5 {
            let begin = Instant::now();
            let p = l.acquire(Lane::Interactive).await;
            let waited = begin.elapsed();
            l.release(p, Feedback::Ok(Duration::from_millis(10)));
            assert!(
                waited <= Duration::from_millis(110),
                "an interactive request waited {waited:?} behind bulk ones"
            );
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
        let sent = bulk.await.unwrap_or_default();
        // Bulk kept the rest of the rate: 20 s at 10/s, less the 5 interactive requests.
        assert!(sent >= 185, "bulk sent {sent} requests in 20 s at 10/s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_interactive_keeps_its_share_and_leaves_bulk_a_part() {
        let l = std::sync::Arc::new(paced(100.0, 64));
        let until = Instant::now() + Duration::from_secs(10);
        let latency = Duration::from_millis(5);
        let interactive = flood(&l, Lane::Interactive, 20, latency, until);
        let bulk = flood(&l, Lane::Bulk, 20, latency, until);
        let (i, b) = (
            interactive.await.unwrap_or_default(),
            bulk.await.unwrap_or_default(),
        );
        let total = (i + b) as f64;
        assert!(
            (990.0..=1010.0).contains(&total),
            "{total} requests in 10 s at 100/s"
        );
        assert!(i as f64 >= 0.2 * total, "interactive got {i} of {total}");
        assert!(b as f64 >= 0.3 * total, "bulk got {b} of {total}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_pacer_queue() {
        let l = std::sync::Arc::new(paced(10.0, 64));
        let first = l.acquire(Lane::Bulk).await;
        l.release(first, Feedback::Ok(Duration::from_millis(1)));
        // The head of the queue is cancelled while it times the next slot: the one behind it
        // takes over and gets that slot.
        let head = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(Lane::Bulk).await })
        };
        tokio::task::yield_now().await;
        let behind = {
            let l = l.clone();
            tokio::spawn(async move {
                let begin = Instant::now();
                let p = l.acquire(Lane::Bulk).await;
                (begin.elapsed(), p)
            })
        };
        tokio::task::yield_now().await;
        head.abort();
        let (waited, p) = behind.await.expect("the second request is granted");
        assert!(waited <= Duration::from_millis(110), "waited {waited:?}");
        l.release(p, Feedback::Ok(Duration::from_millis(1)));
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn bulk_takes_the_slots_an_interactive_request_left_free() {
        let l = std::sync::Arc::new(limits(None, 3));
        let held = [
            l.acquire(Lane::Bulk).await,
            l.acquire(Lane::Bulk).await,
            l.acquire(Lane::Bulk).await,
        ];
        let bulk = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(Lane::Bulk).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let interactive = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(Lane::Interactive).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Two slots free at once: the bulk request, woken first, leaves them to the
        // interactive one, which takes one; the other must not stay idle.
        let [a, b, c] = held;
        l.release(a, Feedback::Ok(Duration::from_millis(1)));
        l.release(b, Feedback::Ok(Duration::from_millis(1)));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            interactive.is_finished(),
            "the interactive request got no slot"
        );
        assert!(
            bulk.is_finished(),
            "a free slot stayed idle while bulk waited"
        );
        for p in [c, interactive.await.expect("i"), bulk.await.expect("b")] {
            l.release(p, Feedback::Ok(Duration::from_millis(1)));
        }
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_window_slot_goes_to_interactive_first() {
        let l = std::sync::Arc::new(limits(None, 1));
        let held = l.acquire(Lane::Bulk).await;
        let bulk = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(Lane::Bulk).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let interactive = {
            let l = l.clone();
            tokio::spawn(async move { l.acquire(Lane::Interactive).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!bulk.is_finished() && !interactive.is_finished());
        l.release(held, Feedback::Ok(Duration::from_millis(1)));
        let p = interactive.await.expect("interactive gets the freed slot");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !bulk.is_finished(),
            "bulk took a slot an interactive request waited for"
        );
        l.release(p, Feedback::Ok(Duration::from_millis(1)));
        let p = bulk.await.expect("then bulk");
        l.release(p, Feedback::Ok(Duration::from_millis(1)));
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_holds_the_rate() {
        let l = limits(Some(10.0), 64);
        let start = Instant::now();
        for _ in 0..21 {
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Ok(Duration::from_millis(5)));
        }
        // 21 requests at 10/s: the first is free, 20 intervals of 100 ms.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1_900) && took <= Duration::from_millis(2_200),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_pauses_the_whole_target_and_slows_down() {
        let l = limits(None, 8);
        let before = l.rate();
        let p = l.acquire(Lane::Bulk).await;
        l.release(p, Feedback::Throttled(Some(Duration::from_secs(30))));
        assert!(l.rate() < before);
        assert!(l.paused_until().is_some());
        let start = Instant::now();
        let p = l.acquire(Lane::Bulk).await;
        assert!(
            start.elapsed() >= Duration::from_secs(29),
            "waited {:?}",
            start.elapsed()
        );
        assert!(p.waited >= Duration::from_secs(29));
        l.release(p, Feedback::Ok(Duration::from_millis(5)));
        assert_eq!(l.throttled(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_request_gives_its_slot_back() {
        let l = limits(None, 8);
        let slot = l.acquire_slot(Lane::Bulk).await;
        assert_eq!(l.in_flight(), 1);
        // The request holding the slot is abandoned mid-flight (its future dropped).
        let request = async move {
            let _slot = slot;
            std::future::pending::<()>().await;
        };
        let _ = tokio::time::timeout(Duration::from_millis(10), request).await;
        assert_eq!(l.in_flight(), 0, "the slot came back");
        let reported = l.acquire_slot(Lane::Bulk).await;
        reported.release(Feedback::Ok(Duration::from_millis(5)));
        assert_eq!(l.in_flight(), 0, "released once, not twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_throttles_decreases_once() {
        let l = limits(None, 8);
        let r0 = l.rate();
        for _ in 0..5 {
            let p = Permit {
                waited: Duration::ZERO,
                started: Instant::now(),
                paced: false,
            };
            l.lock().in_flight += 1;
            l.release(p, Feedback::Throttled(None));
        }
        assert!(
            (l.rate() - r0 * DECREASE).abs() < 1e-9,
            "{} vs {}",
            l.rate(),
            r0 * DECREASE
        );
    }

    #[tokio::test(start_paused = true)]
    async fn window_grows_when_full_and_bounds_in_flight() {
        let l = std::sync::Arc::new(limits(Some(10_000.0), 6));
        let w0 = l.window();
        let mut permits = Vec::new();
        for _ in 0..(w0 as usize) {
            permits.push(l.acquire(Lane::Bulk).await);
        }
        // The window is full: one more must wait.
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.acquire(Lane::Bulk).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        for p in permits {
            l.release(p, Feedback::Ok(Duration::from_millis(5)));
        }
        let p = waiter.await.expect("join");
        l.release(p, Feedback::Ok(Duration::from_millis(5)));
        assert!(l.window() > w0);
        assert!(l.window() <= 6.0);
    }

    #[tokio::test(start_paused = true)]
    async fn overload_shrinks_the_window_not_below_min() {
        let l = limits(None, 16);
        for _ in 0..100 {
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Overloaded);
            tokio::time::sleep(DECREASE_COOLDOWN).await;
        }
        assert!((l.window() - 1.0).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn quota_hint_spreads_the_rest() {
        let l = limits(Some(100.0), 8);
        l.hint(QuotaHint {
            remaining: 10,
            resets_in: Duration::from_secs(10),
        });
        let start = Instant::now();
        for _ in 0..5 {
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Ok(Duration::from_millis(1)));
        }
        // Capped at 0.9 requests/s: 4 intervals of ~1.1 s.
        assert!(
            start.elapsed() >= Duration::from_secs(4),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_up_then_avoidance_after_a_throttle() {
        let l = limits(None, 64);
        for _ in 0..200 {
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Ok(Duration::from_millis(1)));
        }
        let ramped = l.rate();
        assert!(
            ramped >= ADAPTIVE_START_PER_SEC + 150.0,
            "slow start: {ramped}"
        );
        let p = l.acquire(Lane::Bulk).await;
        l.release(p, Feedback::Throttled(Some(Duration::from_millis(10))));
        let after = l.rate();
        assert!(after <= ramped * DECREASE + 1e-9, "{after} vs {ramped}");
        // Back towards the learned quota within seconds, never above what was throttled...
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Ok(Duration::from_millis(1)));
        }
        let plateau = l.rate();
        assert!(
            plateau > after + 1.0 && plateau <= ramped,
            "{after} → {plateau} (throttled at {ramped})"
        );
        // ...then a slow probe above it.
        for _ in 0..100 {
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Ok(Duration::from_millis(1)));
        }
        assert!(
            l.rate() - plateau < 1.0,
            "congestion avoidance probes slowly: {} → {}",
            plateau,
            l.rate()
        );
    }

    /// Bursty demand (10 requests at once, then 90 ms of nothing: 100 requests/s accepted)
    /// gets most requests a pacer slot in the future, but a rate already twice what the
    /// provider accepts must not grow from it: that is an overshoot waiting to happen.
    #[tokio::test(start_paused = true)]
    async fn the_rate_does_not_grow_far_above_what_was_accepted() {
        let l = std::sync::Arc::new(limits(None, 64));
        l.lock().rate = 400.0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            let burst: Vec<_> = (0..10)
                .map(|_| {
                    let l = l.clone();
                    tokio::spawn(async move {
                        let p = l.acquire(Lane::Bulk).await;
                        l.release(p, Feedback::Ok(Duration::from_millis(1)));
                    })
                })
                .collect();
            for t in burst {
                t.await.expect("task");
            }
            tokio::time::sleep(Duration::from_millis(90)).await;
        }
        // Only the answers before there were enough to measure (the first burst) may add.
        assert!(l.rate() <= 410.0, "grew to {}", l.rate());
    }

    /// A throttling answer learns the rate the provider accepted (100/s here), however far the
    /// pacer's rate was above it.
    #[tokio::test(start_paused = true)]
    async fn a_throttle_learns_the_accepted_rate() {
        let l = limits(None, 64);
        l.lock().rate = 400.0;
        for _ in 0..150 {
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Ok(Duration::from_millis(1)));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let p = l.acquire(Lane::Bulk).await;
        l.release(p, Feedback::Throttled(None));
        let after = l.rate();
        assert!(
            after <= 100.0 * 0.95 + 1.0,
            "a throttle at 100/s accepted leaves the rate at {after}"
        );
    }

    /// The governor's burst absorbs wake-up jitter but never lets more than the ceiling plus
    /// the burst start within one second (real time: the governor has its own clock).
    #[tokio::test]
    async fn the_ceiling_holds_within_its_burst() {
        let l = std::sync::Arc::new(paced(100.0, 64));
        let start = Instant::now();
        let started = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (l, started) = (l.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let p = l.acquire(Lane::Bulk).await;
                    if p.started().duration_since(start) >= Duration::from_secs(1) {
                        l.cancel(p);
                        break;
                    }
                    started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    l.release(p, Feedback::Ok(Duration::from_millis(1)));
                }
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let n = started.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            n <= 100 + 2,
            "{n} requests started within one second at a ceiling of 100/s"
        );
        assert!(n >= 50, "{n}: the ceiling, not a stall, limits");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_target_does_not_drift_up() {
        let l = limits(None, 64);
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Ok(Duration::from_millis(1)));
        }
        assert!((l.rate() - ADAPTIVE_START_PER_SEC).abs() < 1e-9);
    }

    #[tokio::test(start_paused = true)]
    async fn adaptive_rate_never_exceeds_the_ceiling() {
        let l = limits(Some(50.0), 8);
        for _ in 0..500 {
            let p = l.acquire(Lane::Bulk).await;
            l.release(p, Feedback::Ok(Duration::from_millis(1)));
        }
        assert!(l.rate() <= 50.0);
    }
}
