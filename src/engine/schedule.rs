//! Work that falls due with time, for any service: key rotation and the end of deletion
//! windows today, secret rotation and parameter policies later. A service says what is due and
//! when next ([`Scheduled`]); [`run`] sleeps until then, or until a write may have moved a due
//! time, so nothing polls.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;

/// The longest sleep when nothing is due: keeps the loop alive should a notification be lost.
pub const MAX_SLEEP: Duration = Duration::from_secs(3600);

/// How long to wait after a failed pass.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// One service's timed work.
#[async_trait]
pub trait Scheduled: Send + Sync + 'static {
    type Error: std::error::Error + Send + Sync + 'static;

    /// What the work is called in logs.
    fn name(&self) -> &'static str;

    /// Does everything due now; returns when work next falls due (seconds since the epoch).
    async fn run_due(&self) -> Result<Option<i64>, Self::Error>;

    /// Notified by every write that may move a due time.
    fn changed(&self) -> Arc<Notify>;

    /// The service's clock, in seconds since the epoch.
    fn now(&self) -> i64;
}

/// How long to sleep before `next` (or the longest sleep when nothing is due).
pub fn sleep_until(next: Option<i64>, now: i64) -> Duration {
    match next {
        Some(at) => {
            let wait = at.saturating_sub(now).max(0);
            Duration::from_secs(u64::try_from(wait).unwrap_or(0)).min(MAX_SLEEP)
        }
        None => MAX_SLEEP,
    }
}

/// Runs `work` whenever something falls due or a write moves a due time, until dropped.
pub async fn run<W: Scheduled + ?Sized>(work: Arc<W>) {
    let changed = work.changed();
    loop {
        let sleep = match work.run_due().await {
            Ok(next) => sleep_until(next, work.now()),
            Err(err) => {
                tracing::error!(
                    work = work.name(),
                    error = %crate::redact::chain(&err),
                    "scheduled work failed; retrying in a minute"
                );
                RETRY_AFTER_FAILURE
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = changed.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    #[test]
    fn sleeps_until_the_next_due_time_within_bounds() {
        assert_eq!(sleep_until(Some(110), 100), Duration::from_secs(10));
        assert_eq!(sleep_until(Some(90), 100), Duration::ZERO);
        assert_eq!(sleep_until(Some(i64::MAX), 0), MAX_SLEEP);
        assert_eq!(sleep_until(None, 0), MAX_SLEEP);
    }

    /// Counts its passes; due again only when told of a change.
    struct Counting {
        passes: Mutex<u32>,
        changed: Arc<Notify>,
    }

    #[async_trait]
    impl Scheduled for Counting {
        type Error = std::io::Error;

        fn name(&self) -> &'static str {
            "counting"
        }

        async fn run_due(&self) -> Result<Option<i64>, Self::Error> {
            *self.passes.lock().unwrap() += 1;
            Ok(None)
        }

        fn changed(&self) -> Arc<Notify> {
            Arc::clone(&self.changed)
        }

        fn now(&self) -> i64 {
            0
        }
    }

    #[tokio::test]
    async fn a_write_wakes_the_scheduler_and_nothing_else_does() {
        let work = Arc::new(Counting {
            passes: Mutex::new(0),
            changed: Arc::new(Notify::new()),
        });
        let running = tokio::spawn(run(Arc::clone(&work)));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            *work.passes.lock().unwrap(),
            1,
            "one pass at start, then sleep"
        );
        work.changed.notify_one();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(*work.passes.lock().unwrap(), 2, "woken by the write");
        running.abort();
    }
}
