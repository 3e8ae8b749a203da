//! Injectable faults of one tenant: latency, error rates, hangs, connection resets, token
//! revocation and a token-bucket rate limit. Set at start-up from config and live through
//! `PUT /_admin/tenants/{tenant}/faults`; applied by the tenant gate before the mode's handler.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Statuses used by `error_rate` when `error_statuses` is empty.
pub const DEFAULT_ERROR_STATUSES: [u16; 3] = [500, 502, 503];

/// How long a hang lasts when `hang_ms` is 0: longer than any sane client timeout.
pub const DEFAULT_HANG_MS: u64 = 120_000;

/// Fault settings of a tenant. Every field defaults to "off".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultConfig {
    /// Fraction (0..=1) of requests answered with one of `error_statuses` before any effect.
    pub error_rate: f64,
    /// Fraction (0..=1) of writes (POST, PUT, PATCH, DELETE) that take effect and are then
    /// answered with one of `error_statuses` instead of their real answer: a gateway that
    /// times out or fails after the application applied the change, so the client believes the
    /// write failed although it landed.
    pub after_effect_rate: f64,
    /// Statuses drawn uniformly for injected errors (default 500, 502, 503).
    pub error_statuses: Vec<u16>,
    /// Added latency, uniform in `[min, max]` milliseconds.
    pub latency_ms: Option<LatencyMs>,
    /// Further latency of writes (POST, PUT, PATCH, DELETE) only: a backend that does real
    /// work on each change.
    pub write_latency_ms: Option<LatencyMs>,
    /// Fraction (0..=1) of requests that stall for `hang_ms` before being handled.
    pub hang_rate: f64,
    /// Length of a hang in milliseconds (0 = [`DEFAULT_HANG_MS`]).
    pub hang_ms: u64,
    /// Fraction (0..=1) of requests whose connection is dropped without a response.
    pub reset_rate: f64,
    /// When true every request is answered 401, as after the provider revoked the token.
    pub token_revoked: bool,
    /// Requests per second with burst; excess requests get 429 with `Retry-After`.
    pub rate_limit: Option<RateLimit>,
    /// What a hostile answer is, for `hostile_rate` of the requests (see [`Hostile`]).
    pub hostile: Option<Hostile>,
    /// Fraction (0..=1) of requests answered with `hostile` (1 when `hostile` is set and this
    /// is 0).
    pub hostile_rate: f64,
}

/// A hostile or broken answer, as met behind SSO gateways and proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hostile {
    /// `302 Found`, `Location: /login?session=…` (an SSO gateway's login page).
    Redirect,
    /// `200 OK` with an HTML page (a gateway's sign-in form, served with success).
    Html,
    /// `200 OK` whose JSON body is [`HUGE_BODY_BYTES`] long, streamed.
    HugeBody,
    /// The real answer, with a NUL byte added to every `id` it holds (the write takes effect).
    NulId,
    /// `200 OK` whose body never ends (a chunk every 100 ms).
    EndlessBody,
    /// Each hostile answer one of the five above, at random.
    Mixed,
}

/// What [`Hostile::Mixed`] picks from.
const MIXED: [Hostile; 5] = [
    Hostile::Redirect,
    Hostile::Html,
    Hostile::HugeBody,
    Hostile::NulId,
    Hostile::EndlessBody,
];

/// Length of a [`Hostile::HugeBody`] answer.
pub const HUGE_BODY_BYTES: u64 = 100 << 20;

impl FaultConfig {
    /// The hostile answer to give this request, if any.
    pub fn hostile_now(&self) -> Option<Hostile> {
        let h = self.hostile?;
        let rate = if self.hostile_rate == 0.0 {
            1.0
        } else {
            self.hostile_rate
        };
        if rate < 1.0 && rand::random::<f64>() >= rate {
            return None;
        }
        Some(if h == Hostile::Mixed {
            MIXED[rand::random_range(0..MIXED.len())]
        } else {
            h
        })
    }
}

/// A latency range.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyMs {
    /// Lower bound, milliseconds.
    pub min: u64,
    /// Upper bound, milliseconds.
    pub max: u64,
}

/// A token-bucket rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_sec: f64,
    /// Bucket size: requests allowed at once after idling (at least 1).
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

impl FaultConfig {
    /// Checks ranges; the error names the field.
    pub fn validate(&self) -> Result<(), (String, String)> {
        for (name, rate) in [
            ("error_rate", self.error_rate),
            ("after_effect_rate", self.after_effect_rate),
            ("hostile_rate", self.hostile_rate),
            ("hang_rate", self.hang_rate),
            ("reset_rate", self.reset_rate),
        ] {
            if !(0.0..=1.0).contains(&rate) {
                return Err((name.into(), format!("{rate} must be between 0 and 1")));
            }
        }
        if let Some(s) = self
            .error_statuses
            .iter()
            .find(|s| !(400..=599).contains(*s))
        {
            return Err((
                "error_statuses".into(),
                format!("{s} is not an HTTP error status (400-599)"),
            ));
        }
        for (key, latency) in [
            ("latency_ms", self.latency_ms),
            ("write_latency_ms", self.write_latency_ms),
        ] {
            if let Some(l) = latency
                && l.min > l.max
            {
                return Err((
                    key.into(),
                    format!("min {} is greater than max {}", l.min, l.max),
                ));
            }
        }
        if let Some(r) = self.rate_limit {
            if !(r.per_sec > 0.0 && r.per_sec.is_finite()) {
                return Err((
                    "rate_limit.per_sec".into(),
                    "must be a positive number".into(),
                ));
            }
            if r.burst == 0 {
                return Err(("rate_limit.burst".into(), "must be at least 1".into()));
            }
        }
        Ok(())
    }

    /// The statuses injected errors draw from.
    pub fn statuses(&self) -> &[u16] {
        if self.error_statuses.is_empty() {
            &DEFAULT_ERROR_STATUSES
        } else {
            &self.error_statuses
        }
    }

    /// The hang duration.
    pub fn hang(&self) -> Duration {
        Duration::from_millis(if self.hang_ms == 0 {
            DEFAULT_HANG_MS
        } else {
            self.hang_ms
        })
    }
}

/// Token-bucket state of a tenant's rate limit.
#[derive(Debug)]
pub struct Bucket {
    /// Tokens available now.
    tokens: f64,
    /// When `tokens` was last refilled.
    last: Instant,
}

impl Default for Bucket {
    fn default() -> Self {
        Self {
            tokens: f64::NAN,
            last: Instant::now(),
        }
    }
}

impl Bucket {
    /// Takes one token at `now`; on refusal returns the seconds until one is available.
    pub fn take(&mut self, limit: RateLimit, now: Instant) -> Result<(), f64> {
        let burst = f64::from(limit.burst.max(1));
        if self.tokens.is_nan() {
            self.tokens = burst;
        }
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limit.per_sec).min(burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - self.tokens) / limit.per_sec)
        }
    }

    /// Forgets the state (after the limit changed).
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_allows_burst_then_rate() {
        let limit = RateLimit {
            per_sec: 10.0,
            burst: 3,
        };
        let mut b = Bucket::default();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(b.take(limit, t0).is_ok());
        }
        let wait = b.take(limit, t0).err().unwrap_or_default();
        assert!((wait - 0.1).abs() < 1e-9, "{wait}");
        assert!(b.take(limit, t0 + Duration::from_millis(100)).is_ok());
        assert!(b.take(limit, t0 + Duration::from_millis(100)).is_err());
    }

    #[test]
    fn validates_ranges() {
        let f = FaultConfig {
            hang_rate: -0.1,
            ..FaultConfig::default()
        };
        assert_eq!(
            f.validate().err().map(|e| e.0),
            Some("hang_rate".to_string())
        );
        let f = FaultConfig {
            error_statuses: vec![200],
            ..FaultConfig::default()
        };
        assert!(f.validate().is_err());
        let f = FaultConfig {
            latency_ms: Some(LatencyMs { min: 5, max: 1 }),
            ..FaultConfig::default()
        };
        assert!(f.validate().is_err());
        let f = FaultConfig {
            write_latency_ms: Some(LatencyMs { min: 5, max: 1 }),
            ..FaultConfig::default()
        };
        assert_eq!(
            f.validate().err().map(|e| e.0),
            Some("write_latency_ms".to_string())
        );
        assert!(FaultConfig::default().validate().is_ok());
    }
}
