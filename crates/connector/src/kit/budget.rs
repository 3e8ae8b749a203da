//! A provider's own budget of one operation per hour (GitHub's user creations), with a share
//! reserved for interactive work, the way the request pipeline reserves one of the rate
//! (docs/design.md, "Login-time provisioning").
//!
//! The budget is two GCRA governors: the **reserve**, `interactive_share` of the total (at
//! least one, and never all of it), which only interactive work spends, and the **shared**
//! rest, which both lanes spend. Interactive work takes from the reserve first, then from the
//! shared part; bulk only from the shared part. So a login gets its creation while a bulk load
//! has spent everything it may, and the total never exceeds the provider's budget. The price:
//! with no interactive traffic, bulk gets `1 - interactive_share` of the budget, because an
//! hourly budget cannot be lent and taken back the way a request slot can.
//!
//! A wait longer than the message's hold bound is a deferral (the message waits on a delay
//! tier, no attempt counted) rather than a message held until the budget refills.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::limits::Lane;
use crate::provider::{ConvergeError, FailureClass};

/// An hourly budget with an interactive reserve.
pub struct LaneBudget {
    reserve: Option<DefaultDirectRateLimiter>,
    shared: DefaultDirectRateLimiter,
    /// Names the budget in a deferral's reason (`GitHub's hourly budget of user creations`).
    what: &'static str,
}

fn per_hour(n: u64) -> Option<DefaultDirectRateLimiter> {
    let n = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX))?;
    Some(RateLimiter::direct(Quota::per_hour(n)))
}

impl LaneBudget {
    /// `total` operations per hour (at least 1), `share` of them (0 to 1) reserved for
    /// interactive work.
    pub fn per_hour(total: u64, share: f64, what: &'static str) -> Self {
        let total = total.max(1);
        let reserve = if share > 0.0 && total > 1 {
            ((total as f64 * share.min(1.0)).ceil() as u64).clamp(1, total - 1)
        } else {
            0
        };
        LaneBudget {
            reserve: per_hour(reserve),
            shared: per_hour(total - reserve)
                .unwrap_or_else(|| RateLimiter::direct(Quota::per_hour(NonZeroU32::MIN))),
            what,
        }
    }

    /// Spends one operation of `lane`, waiting for it when it comes back within `left`;
    /// a longer wait is a `Deferred` error naming the budget and `option` (the setting).
    pub async fn spend(
        &self,
        lane: Lane,
        left: Duration,
        option: &str,
    ) -> Result<(), ConvergeError> {
        let deadline = tokio::time::Instant::now() + left;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let now = DefaultClock::default().now();
            // Interactive work takes from its reserve first, so the shared part stays bulk's.
            let mut wait = Duration::MAX;
            if let (Lane::Interactive, Some(reserve)) = (lane, &self.reserve) {
                match reserve.check() {
                    Ok(()) => return Ok(()),
                    Err(not_until) => wait = not_until.wait_time_from(now),
                }
            }
            match self.shared.check() {
                Ok(()) => return Ok(()),
                Err(not_until) => wait = wait.min(not_until.wait_time_from(now)),
            }
            if wait > left {
                return Err(ConvergeError {
                    retry_after_ms: Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX)),
                    ..ConvergeError::new(
                        FailureClass::Deferred,
                        format!(
                            "{} is spent ({option}); the next one in {} s",
                            self.what,
                            wait.as_secs()
                        ),
                    )
                });
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEFT: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn interactive_work_keeps_its_reserve_after_bulk_spent_the_rest() {
        // 10 an hour, 20% reserved: bulk gets 8, interactive the 2 left, then nothing more.
        let b = LaneBudget::per_hour(10, 0.2, "the budget");
        let mut bulk = 0;
        while b.spend(Lane::Bulk, LEFT, "options.x").await.is_ok() {
            bulk += 1;
        }
        assert_eq!(bulk, 8);
        assert!(b.spend(Lane::Interactive, LEFT, "options.x").await.is_ok());
        assert!(b.spend(Lane::Interactive, LEFT, "options.x").await.is_ok());
        let e = b
            .spend(Lane::Interactive, LEFT, "options.x")
            .await
            .expect_err("the whole budget is spent");
        assert_eq!(e.class, FailureClass::Deferred);
        assert!(
            e.detail
                .starts_with("the budget is spent (options.x); the next one in"),
            "{}",
            e.detail
        );
    }

    #[tokio::test]
    async fn logins_take_the_reserve_first_and_leave_bulk_its_part() {
        let b = LaneBudget::per_hour(10, 0.2, "the budget");
        assert!(b.spend(Lane::Interactive, LEFT, "o").await.is_ok());
        assert!(b.spend(Lane::Interactive, LEFT, "o").await.is_ok());
        let mut bulk = 0;
        while b.spend(Lane::Bulk, LEFT, "o").await.is_ok() {
            bulk += 1;
        }
        assert_eq!(bulk, 8, "two logins took the reserve, not bulk's part");
    }

    #[tokio::test]
    async fn interactive_work_spends_the_shared_part_too_and_a_tiny_budget_keeps_bulk_going() {
        let b = LaneBudget::per_hour(10, 0.2, "the budget");
        let mut interactive = 0;
        while b.spend(Lane::Interactive, LEFT, "o").await.is_ok() {
            interactive += 1;
        }
        assert_eq!(interactive, 10, "interactive may use the whole budget");
        let one = LaneBudget::per_hour(1, 0.2, "the budget");
        assert!(
            one.spend(Lane::Bulk, LEFT, "o").await.is_ok(),
            "a budget of one is bulk's too"
        );
    }
}
