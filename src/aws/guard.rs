//! What the front door bounds before it knows who is calling: how long a request may take, how
//! much memory the bodies of unauthenticated requests may hold at once, and how often one source
//! address may fail to authenticate (each failure would otherwise cost an audit line).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{AwsError, MAX_BODY_BYTES};

/// The bounds, all configurable (`coffer server --help`, `coffer controller --help`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Time to receive a request's body once its headers are in.
    pub body_timeout: Duration,
    /// Time from a request's headers to its answer.
    pub request_timeout: Duration,
    /// Bytes of request bodies held at once for callers not yet authenticated.
    pub max_unauthenticated_body_bytes: usize,
    /// Failed authentications one source address may make per second (with a burst of five
    /// seconds' worth) before its requests are refused unaudited; 0 turns the limit off.
    pub failed_authentications_per_second: u32,
}

impl RequestLimits {
    /// 10 s for a body, 30 s for a request, 64 MiB of unauthenticated bodies, 20 failed
    /// authentications a second per address.
    pub const DEFAULT: RequestLimits = RequestLimits {
        body_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(30),
        max_unauthenticated_body_bytes: 64 * 1024 * 1024,
        failed_authentications_per_second: 20,
    };
}

impl Default for RequestLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// What the front door bounds, every listener and the API together.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrontDoor {
    pub connections: crate::serve::ConnectionLimits,
    pub requests: RequestLimits,
    pub audit_rotation: super::audit::Rotation,
}

/// The budget is counted in KiB, so that a semaphore's permits can hold 64 MiB and more.
const UNIT: usize = 1024;

/// The state behind the bounds.
pub struct RequestGuard {
    limits: RequestLimits,
    bodies: Arc<Semaphore>,
    failures: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

/// A share of the body budget, held until the caller is authenticated.
pub struct BodyReservation(#[allow(dead_code)] OwnedSemaphorePermit);

impl RequestGuard {
    pub fn new(limits: RequestLimits) -> Self {
        let failures = NonZeroU32::new(limits.failed_authentications_per_second).map(|rate| {
            let burst = rate.saturating_mul(NonZeroU32::MIN.saturating_add(4));
            RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Self {
            limits,
            bodies: Arc::new(Semaphore::new(
                limits.max_unauthenticated_body_bytes.div_ceil(UNIT),
            )),
            failures,
        }
    }

    pub fn limits(&self) -> RequestLimits {
        self.limits
    }

    /// Reserves room for a request's body, by its Content-Length (the most a body may be when
    /// it has none). Too large a body is refused outright; a full budget answers 503, which SDKs
    /// retry.
    pub fn reserve_body(&self, headers: &HeaderMap) -> Result<BodyReservation, AwsError> {
        let declared = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok());
        let bytes = match declared {
            Some(bytes) if bytes > MAX_BODY_BYTES => {
                return Err(AwsError::client(
                    "ValidationException",
                    "The request body is too large.",
                ));
            }
            Some(bytes) => bytes,
            None => MAX_BODY_BYTES,
        };
        let units = u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX);
        Arc::clone(&self.bodies)
            .try_acquire_many_owned(units)
            .map(BodyReservation)
            .map_err(|_| AwsError::unavailable("Too many requests are being received; try again."))
    }

    /// Counts a request from `peer` that did not authenticate; `false` once the address is over
    /// its rate, and its requests should then be refused and not audited.
    pub fn note_failed_authentication(&self, peer: Option<IpAddr>) -> bool {
        let (Some(failures), Some(peer)) = (&self.failures, peer) else {
            return true;
        };
        let allowed = failures.check_key(&peer).is_ok();
        // Forget addresses whose buckets are full again, so the map stays small.
        if failures.len() > 10_000 {
            failures.retain_recent();
        }
        allowed
    }
}

/// The answer for an address that keeps failing to authenticate.
pub fn too_many_failures() -> AwsError {
    AwsError {
        status: StatusCode::BAD_REQUEST,
        code: "ThrottlingException",
        message: "Too many requests failed to authenticate from this address.".into(),
    }
}

/// A body that took too long to arrive.
pub fn body_timed_out() -> AwsError {
    AwsError {
        status: StatusCode::REQUEST_TIMEOUT,
        code: "RequestTimeoutException",
        message: "The request body was not received in time.".into(),
    }
}

/// A request that took too long to answer.
pub fn request_timed_out() -> AwsError {
    AwsError::unavailable("The request took too long; try again.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_length(bytes: usize) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::CONTENT_LENGTH, bytes.into());
        headers
    }

    #[test]
    fn the_body_budget_is_shared_and_given_back() {
        let guard = RequestGuard::new(RequestLimits {
            max_unauthenticated_body_bytes: 3 * 1024 * 1024,
            ..RequestLimits::DEFAULT
        });
        let first = guard.reserve_body(&with_length(1024 * 1024)).unwrap();
        let _second = guard.reserve_body(&with_length(1024 * 1024)).unwrap();
        // No Content-Length: charged as the largest body.
        let _third = guard.reserve_body(&HeaderMap::new()).unwrap();
        let full = guard.reserve_body(&with_length(10)).err().unwrap();
        assert_eq!(
            (full.status, full.code),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException"
            )
        );
        drop(first);
        assert!(guard.reserve_body(&with_length(1024 * 1024)).is_ok());
        let large = guard
            .reserve_body(&with_length(MAX_BODY_BYTES + 1))
            .err()
            .unwrap();
        assert_eq!(large.code, "ValidationException");
    }

    #[test]
    fn failed_authentications_are_limited_per_address() {
        let guard = RequestGuard::new(RequestLimits {
            failed_authentications_per_second: 1,
            ..RequestLimits::DEFAULT
        });
        let noisy: IpAddr = [10, 0, 0, 1].into();
        let allowed = (0..20)
            .filter(|_| guard.note_failed_authentication(Some(noisy)))
            .count();
        assert_eq!(allowed, 5, "a burst of five seconds' worth");
        assert!(guard.note_failed_authentication(Some([10, 0, 0, 2].into())));
    }
}
