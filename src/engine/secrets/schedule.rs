//! The end of recovery windows: secrets whose deletion was scheduled are purged once the window
//! has passed. The purge sleeps until the earliest window ends (or until a deletion or restore
//! may have moved it), so nothing polls.

use std::sync::Arc;

use tokio::sync::Notify;

use super::model::SecretRecord;
use super::{Secrets, SecretsError};
use crate::engine::schedule::{self, Scheduled};
use crate::store::typed::{self, TypedChange};

impl Secrets {
    /// Purges every secret whose recovery window has passed, in all namespaces. Returns when
    /// the next window ends, if any.
    pub async fn purge_due(&self) -> Result<Option<i64>, SecretsError> {
        let now = self.now();
        let mut next: Option<i64> = None;
        for (key, stored) in typed::list::<SecretRecord, _>(self.store.as_ref(), None).await? {
            let Some(at) = stored.meta.purge_after else {
                continue;
            };
            if at > now {
                next = Some(next.map_or(at, |next| next.min(at)));
                continue;
            }
            let arn = stored.meta.arn.clone();
            // Re-checked in the same write, so that a restore that won the race keeps it.
            typed::modify::<SecretRecord, _, _, SecretsError>(
                self.store.as_ref(),
                &key,
                |current| {
                    Ok(match current {
                        Some(current)
                            if current.meta.arn == arn
                                && current.meta.purge_after.is_some_and(|at| at <= now) =>
                        {
                            TypedChange::Delete
                        }
                        _ => TypedChange::Keep,
                    })
                },
            )
            .await?;
            tracing::info!(secret = %arn, "purged a secret after its recovery window");
        }
        Ok(next)
    }

    /// Runs the purge ([`crate::engine::schedule::run`]) until the task is dropped.
    pub async fn run_scheduler(self: Arc<Self>) {
        schedule::run(self).await;
    }
}

#[async_trait::async_trait]
impl Scheduled for Secrets {
    type Error = SecretsError;

    fn name(&self) -> &'static str {
        "secret purge"
    }

    async fn run_due(&self) -> Result<Option<i64>, SecretsError> {
        self.purge_due().await
    }

    fn changed(&self) -> Arc<Notify> {
        self.schedule_changed()
    }

    fn now(&self) -> i64 {
        Secrets::now(self)
    }
}
