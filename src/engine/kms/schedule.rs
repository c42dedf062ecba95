//! Work that falls due with time: scheduled rotation, the end of a deletion window, and the
//! expiry of imported material. The scheduler sleeps until the earliest due time (or until a
//! write may have moved it), so nothing polls.

use std::sync::Arc;

use tokio::sync::Notify;

use super::model::{KeyRecord, KeyState, RotationType};
use super::operations::remove_imported_material;
use super::{KeyLocation, Kms, KmsError, key_record_key};
use crate::engine::schedule::{self, Scheduled};
use crate::store::typed::{self, TypedChange};

/// What is due for one key at a given time.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Due {
    Rotate,
    Delete,
    ExpireMaterial,
}

/// What, if anything, is due for a key at `now`, and otherwise when it next will be.
pub(crate) fn due(record: &KeyRecord, now: i64) -> (Option<Due>, Option<i64>) {
    let deletion = (record.state == KeyState::PendingDeletion)
        .then_some(record.deletion_date)
        .flatten();
    let rotation = (record.state == KeyState::Enabled && record.rotation_enabled)
        .then_some(record.next_rotation)
        .flatten();
    let expiry = (!record.versions.is_empty())
        .then_some(record.valid_to)
        .flatten();
    if deletion.is_some_and(|at| at <= now) {
        return (Some(Due::Delete), None);
    }
    if expiry.is_some_and(|at| at <= now) {
        return (Some(Due::ExpireMaterial), None);
    }
    if rotation.is_some_and(|at| at <= now) {
        return (Some(Due::Rotate), None);
    }
    (
        None,
        [deletion, expiry, rotation].into_iter().flatten().min(),
    )
}

impl Kms {
    /// Does everything due now, across all namespaces. Returns the next due time, if any.
    pub async fn run_due(&self) -> Result<Option<i64>, KmsError> {
        let now = self.now();
        let mut next: Option<i64> = None;
        for (key, record) in typed::list::<KeyRecord, _>(self.store.as_ref(), None).await? {
            let location = KeyLocation {
                namespace: key.namespace.clone(),
                key_id: key.name.clone(),
            };
            let later = self.do_due(&location, &record.meta, now).await;
            if let Some(later) = later {
                next = Some(next.map_or(later, |at| at.min(later)));
            }
        }
        Ok(next)
    }

    /// Does what is due now for one key. Returns when its next work falls due.
    pub async fn run_due_key(
        &self,
        namespace: &str,
        key_id: &str,
    ) -> Result<Option<i64>, KmsError> {
        let location = KeyLocation {
            namespace: namespace.to_owned(),
            key_id: key_id.to_owned(),
        };
        let Some(record) =
            typed::get::<KeyRecord, _>(self.store.as_ref(), namespace, key_id).await?
        else {
            return Ok(None);
        };
        Ok(self.do_due(&location, &record.meta, self.now()).await)
    }

    /// Does the work due for one key; on failure, tries again in a minute.
    async fn do_due(&self, location: &KeyLocation, parsed: &KeyRecord, now: i64) -> Option<i64> {
        let (work, mut later) = due(parsed, now);
        let outcome = match work {
            None => Ok(None),
            Some(Due::Rotate) => self
                .add_version(location, RotationType::Automatic)
                .await
                .map(|record| {
                    tracing::info!(key = %self.key_arn(location), version = ?record.current_version(), "rotated key on schedule");
                    Some(record)
                }),
            Some(Due::Delete) => self.delete_key_now(location, now).await.map(|()| None),
            Some(Due::ExpireMaterial) => self
                .update_key(location, |record, sealed| {
                    if record.valid_to.is_some_and(|at| at <= now) {
                        remove_imported_material(record, sealed);
                    }
                    Ok(())
                })
                .await
                .map(|record| {
                    tracing::info!(key = %self.key_arn(location), "imported key material expired");
                    Some(record)
                }),
        };
        match outcome {
            // The work moved the key's next due time.
            Ok(Some(record)) => later = due(&record, now).1,
            Ok(None) => {}
            Err(err) => {
                tracing::error!(key = %self.key_arn(location), error = %err, "scheduled key work failed; retrying in a minute");
                later = Some(later.map_or(now + 60, |at| at.min(now + 60)));
            }
        }
        later
    }

    /// Destroys a key whose deletion window has passed: its record (with all wrapped material)
    /// and its aliases. Re-checks the state in the same write, so a cancellation that won the
    /// race keeps the key.
    async fn delete_key_now(&self, location: &KeyLocation, now: i64) -> Result<(), KmsError> {
        let mut deleted = false;
        let key = key_record_key(location);
        typed::modify::<KeyRecord, _, _, KmsError>(self.store.as_ref(), &key, |current| {
            deleted = false;
            let Some(current) = current else {
                return Ok(TypedChange::Keep);
            };
            let record = &current.meta;
            if record.state == KeyState::PendingDeletion
                && record.deletion_date.is_some_and(|at| at <= now)
            {
                deleted = true;
                Ok(TypedChange::Delete)
            } else {
                Ok(TypedChange::Keep)
            }
        })
        .await?;
        self.cache.remove(location);
        if deleted {
            self.delete_aliases_of(location).await?;
            tracing::info!(key = %self.key_arn(location), "deleted key and its material after the waiting period");
        }
        Ok(())
    }

    /// Runs the key scheduler ([`crate::engine::schedule::run`]) until the task is dropped.
    pub async fn run_scheduler(self: Arc<Self>) {
        schedule::run(self).await;
    }
}

#[async_trait::async_trait]
impl Scheduled for Kms {
    type Error = KmsError;

    fn name(&self) -> &'static str {
        "key scheduler"
    }

    async fn run_due(&self) -> Result<Option<i64>, KmsError> {
        Kms::run_due(self).await
    }

    fn changed(&self) -> Arc<Notify> {
        self.schedule_changed()
    }

    fn now(&self) -> i64 {
        Kms::now(self)
    }
}
