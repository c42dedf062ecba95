//! Throttling per principal: a token bucket each, refilled at a steady rate. Over the limit, a
//! call fails with ThrottlingException, which the AWS SDKs back off from and retry.

use std::num::NonZeroU32;

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AwsError;

/// A per-principal limiter, or none.
pub struct Throttle {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

impl Throttle {
    /// `per_second` calls per second per principal with bursts up to `burst`; 0 turns it off.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self { limiter }
    }

    pub fn disabled() -> Self {
        Self { limiter: None }
    }

    /// Takes one token for `principal`.
    pub fn check(&self, principal: &str) -> Result<(), AwsError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let key = principal.to_owned();
        limiter
            .check_key(&key)
            .map_err(|_| AwsError::client("ThrottlingException", "Rate exceeded"))?;
        // Forget principals whose buckets are full again, so the map stays small.
        if limiter.len() > 10_000 {
            limiter.retain_recent();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_calls_are_throttled_per_principal() {
        let throttle = Throttle::new(1, 3);
        for _ in 0..3 {
            throttle.check("alice").unwrap();
        }
        let refused = throttle.check("alice").unwrap_err();
        assert_eq!(refused.code, "ThrottlingException");
        assert_eq!(refused.status, axum::http::StatusCode::BAD_REQUEST);
        // Another principal has a bucket of its own.
        throttle.check("bob").unwrap();
    }

    #[test]
    fn zero_turns_throttling_off() {
        let throttle = Throttle::new(0, 0);
        for _ in 0..10_000 {
            throttle.check("alice").unwrap();
        }
    }
}
