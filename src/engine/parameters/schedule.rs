//! Parameter policies falling due: an Expiration deletes its parameter; ExpirationNotification
//! and NoChangeNotification fire once per due time. Each firing is marked in the record before
//! it is announced ([`Parameters::notifications`]), so a restart does not repeat it (a crash in
//! between loses it instead). The scheduler sleeps until the earliest due time, or until a write
//! may have moved one; nothing polls.

use std::sync::Arc;

use tokio::sync::Notify;

use super::model::ParameterRecord;
use super::policies::{NotificationKind, ParameterNotification, PolicyKind};
use super::{Parameters, ParametersError};
use crate::engine::schedule::{self, Scheduled};
use crate::store::typed::{self, TypedChange};

impl Parameters {
    /// Applies every policy due now, in all namespaces. Returns when the next one falls due.
    pub async fn run_due_policies(&self) -> Result<Option<i64>, ParametersError> {
        let now = self.now();
        let mut next: Option<i64> = None;
        let mut soonest = |at: i64| next = Some(next.map_or(at, |next: i64| next.min(at)));
        for (key, stored) in typed::list::<ParameterRecord, _>(self.store.as_ref(), None).await? {
            let record = &stored.meta;
            if record.policies.is_empty() {
                continue;
            }
            let arn = self.arn(&key.namespace, &record.name);
            let notify = |kind, due| ParameterNotification {
                namespace: key.namespace.clone(),
                name: record.name.clone(),
                arn: arn.clone(),
                kind,
                due,
            };
            if let Some(at) = record.expiration() {
                if at <= now {
                    let version = record.version;
                    let mut deleted = false;
                    // Re-checked in the same write: a Put that replaced the policy keeps it.
                    typed::modify::<ParameterRecord, _, _, ParametersError>(
                        self.store.as_ref(),
                        &key,
                        |current| {
                            deleted = current.is_some_and(|current| {
                                current.meta.version == version
                                    && current.meta.expiration().is_some_and(|at| at <= now)
                            });
                            Ok(if deleted {
                                TypedChange::Delete
                            } else {
                                TypedChange::Keep
                            })
                        },
                    )
                    .await?;
                    if deleted {
                        tracing::info!(parameter = %arn, "deleted a parameter at its expiration");
                        let _ = self
                            .notifications
                            .send(notify(NotificationKind::Expired, at));
                    } else {
                        // Changed meanwhile: look again on the next pass.
                        soonest(now);
                    }
                    continue;
                }
                soonest(at);
            }
            let mut fired = Vec::new();
            for (index, policy) in record.policies.iter().enumerate() {
                let kind = match policy.kind {
                    PolicyKind::Expiration { .. } => continue,
                    PolicyKind::ExpirationNotification { .. } => {
                        NotificationKind::ExpirationNotification
                    }
                    PolicyKind::NoChangeNotification { .. } => {
                        NotificationKind::NoChangeNotification
                    }
                };
                let Some(due) = record.policy_due(policy) else {
                    continue;
                };
                if policy.fired_for == Some(due) {
                    continue;
                }
                if due > now {
                    soonest(due);
                    continue;
                }
                fired.push((index, kind, due));
            }
            if fired.is_empty() {
                continue;
            }
            let mut marked = Vec::new();
            typed::modify::<ParameterRecord, _, _, ParametersError>(
                self.store.as_ref(),
                &key,
                |current| {
                    marked.clear();
                    let Some(current) = current else {
                        return Ok(TypedChange::Keep);
                    };
                    let mut meta = current.meta.clone();
                    for (index, kind, due) in &fired {
                        // Only if the policy still falls due then (no Put moved it).
                        let still_due = meta.policies.get(*index).is_some_and(|policy| {
                            meta.policy_due(policy) == Some(*due) && policy.fired_for != Some(*due)
                        });
                        if still_due && let Some(policy) = meta.policies.get_mut(*index) {
                            policy.fired_for = Some(*due);
                            marked.push((*kind, *due));
                        }
                    }
                    if marked.is_empty() {
                        return Ok(TypedChange::Keep);
                    }
                    Ok(TypedChange::Put {
                        meta,
                        sealed: current.sealed.clone(),
                    })
                },
            )
            .await?;
            for (kind, due) in &marked {
                tracing::info!(parameter = %arn, policy = kind.as_str(), "a parameter policy fell due");
                let _ = self.notifications.send(notify(*kind, *due));
            }
            if marked.len() < fired.len() {
                soonest(now);
            }
        }
        Ok(next)
    }

    /// Runs the policies ([`crate::engine::schedule::run`]) until the task is dropped.
    pub async fn run_scheduler(self: Arc<Self>) {
        schedule::run(self).await;
    }
}

#[async_trait::async_trait]
impl Scheduled for Parameters {
    type Error = ParametersError;

    fn name(&self) -> &'static str {
        "parameter policies"
    }

    async fn run_due(&self) -> Result<Option<i64>, ParametersError> {
        self.run_due_policies().await
    }

    fn changed(&self) -> Arc<Notify> {
        self.schedule_changed()
    }

    fn now(&self) -> i64 {
        Parameters::now(self)
    }
}
