//! Keys declared as resources: what the KmsKey reconciler asks of the engine.
//!
//! There is no caller and no key policy check here. A declaration is authorized by whoever could
//! write the resource, which Kubernetes RBAC on the resource itself decides.

use std::collections::BTreeMap;

use super::lifecycle::{
    DELETION_WINDOW_DAYS, NewKey, check_policy_text, validate_description, validate_kind,
};
use super::model::{KeyRecord, KeySpec, KeyState, KeyUsage, Origin};
use super::{KeyLocation, Kms, KmsError, key_record_key};
use crate::engine::account::account_id;
use crate::engine::kms::policy::KeyPolicy;
use crate::store::StoreError;
use crate::store::typed::{self, TypedChange};

const SECONDS_PER_DAY: i64 = 86_400;

/// The state a resource declares for its key.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredKey {
    pub description: String,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub origin: Origin,
    pub enabled: bool,
    /// `None`: no rotation settings at all.
    pub rotation: Option<DeclaredRotation>,
    /// An AWS key policy document; `None` is the default policy, which delegates to the account.
    pub policy: Option<String>,
    /// The window that deleting the resource starts, in days (7 to 30).
    pub deletion_window_days: u32,
}

/// Automatic rotation as declared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeclaredRotation {
    pub enabled: bool,
    pub period_days: u32,
}

/// A change of state worth telling the resource's owner about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyEvent {
    Created,
    Enabled,
    Disabled,
    DeletionScheduled,
    DeletionCancelled,
}

impl KeyEvent {
    /// The Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            KeyEvent::Created => "Created",
            KeyEvent::Enabled => "Enabled",
            KeyEvent::Disabled => "Disabled",
            KeyEvent::DeletionScheduled => "DeletionScheduled",
            KeyEvent::DeletionCancelled => "DeletionCancelled",
        }
    }
}

impl Kms {
    /// The key's record, if it exists.
    pub async fn key_record(
        &self,
        namespace: &str,
        key_id: &str,
    ) -> Result<Option<KeyRecord>, KmsError> {
        Ok(
            typed::get::<KeyRecord, _>(self.store.as_ref(), namespace, key_id)
                .await?
                .map(|record| record.meta),
        )
    }

    /// The key's ARN.
    pub fn arn_of(&self, namespace: &str, key_id: &str) -> String {
        self.key_arn(&location(namespace, key_id))
    }

    /// Drops a cached key, after another replica changed it.
    pub fn forget(&self, namespace: &str, key_id: &str) {
        self.cache.remove(&location(namespace, key_id));
        self.schedule_changed.notify_one();
    }

    /// Drops every cached key (after changes may have been missed).
    pub fn forget_all(&self) {
        self.cache.clear();
        self.schedule_changed.notify_one();
    }

    /// Brings the key to its declaration: creates it when absent (material included), cancels a
    /// pending deletion (the resource is back), and sets state, description, rotation and policy.
    /// Writes nothing when the record already matches.
    pub async fn apply_declared(
        &self,
        namespace: &str,
        key_id: &str,
        declared: &DeclaredKey,
    ) -> Result<(KeyRecord, Vec<KeyEvent>), KmsError> {
        validate_kind(declared.key_spec, declared.key_usage, declared.origin)?;
        validate_description(&declared.description)?;
        if let Some(rotation) = declared.rotation
            && !super::lifecycle::ROTATION_DAYS.contains(&rotation.period_days)
        {
            return Err(KmsError::Validation(
                "Rotation period must be between 90 and 2560 days.".into(),
            ));
        }
        if !DELETION_WINDOW_DAYS.contains(&declared.deletion_window_days) {
            return Err(KmsError::Validation(
                "The deletion window must be between 7 and 30 days.".into(),
            ));
        }
        let location = location(namespace, key_id);
        let policy = match &declared.policy {
            Some(text) => {
                check_policy_text(text)?;
                text.clone()
            }
            None => KeyPolicy::default_document(&account_id(namespace)),
        };
        let now = self.now();

        if self.store.get(&key_record_key(&location)).await?.is_none() {
            let (mut record, sealed) = self
                .new_key(
                    &location,
                    NewKey {
                        description: declared.description.clone(),
                        key_spec: declared.key_spec,
                        key_usage: declared.key_usage,
                        origin: declared.origin,
                        policy: policy.clone(),
                        tags: BTreeMap::new(),
                    },
                )
                .await?;
            converge(&mut record, declared, &policy, now)?;
            match typed::create(
                self.store.as_ref(),
                &key_record_key(&location),
                &record,
                sealed,
            )
            .await
            {
                Ok(_) => {
                    self.schedule_changed.notify_one();
                    return Ok((record, vec![KeyEvent::Created]));
                }
                // Another replica created it first: converge what is there instead.
                Err(StoreError::AlreadyExists(_)) => {}
                Err(other) => return Err(other.into()),
            }
        }

        let mut outcome = None;
        let not_found =
            || KmsError::NotFound(format!("Key '{}' does not exist", self.key_arn(&location)));
        let key = key_record_key(&location);
        typed::modify::<KeyRecord, _, _, KmsError>(self.store.as_ref(), &key, |current| {
            let current = current.ok_or_else(not_found)?;
            let before = &current.meta;
            if (before.key_spec, before.key_usage, before.origin)
                != (declared.key_spec, declared.key_usage, declared.origin)
            {
                return Err(KmsError::Validation(
                    "keySpec, keyUsage and origin cannot change after creation.".into(),
                ));
            }
            let mut record = before.clone();
            let events = converge(&mut record, declared, &policy, now)?;
            let change = if record == *before {
                TypedChange::Keep
            } else {
                TypedChange::Put {
                    meta: record.clone(),
                    sealed: current.sealed.clone(),
                }
            };
            outcome = Some((record, events));
            Ok(change)
        })
        .await?;
        self.cache.remove(&location);
        self.schedule_changed.notify_one();
        outcome.ok_or_else(|| KmsError::fault_at("declared key update wrote nothing"))
    }

    /// Starts the deletion window of a key whose resource was deleted: the window its
    /// declaration gave, else the longest. Idempotent: a key already pending deletion keeps its
    /// date. `None` when there is no such key.
    pub async fn schedule_declared_deletion(
        &self,
        namespace: &str,
        key_id: &str,
    ) -> Result<Option<(KeyRecord, Option<KeyEvent>)>, KmsError> {
        let location = location(namespace, key_id);
        if Kms::is_service_managed(&location) {
            // A service's managed key outlives its resource: values depend on it.
            return Ok(None);
        }
        let now = self.now();
        let mut outcome = None;
        let key = key_record_key(&location);
        typed::modify::<KeyRecord, _, _, KmsError>(self.store.as_ref(), &key, |current| {
            outcome = None;
            let Some(current) = current else {
                return Ok(TypedChange::Keep);
            };
            let mut record = current.meta.clone();
            if record.state == KeyState::PendingDeletion {
                outcome = Some((record, None));
                return Ok(TypedChange::Keep);
            }
            let window_days = record
                .deletion_window_days
                .filter(|days| DELETION_WINDOW_DAYS.contains(days))
                .unwrap_or(*DELETION_WINDOW_DAYS.end());
            record.state = KeyState::PendingDeletion;
            record.deletion_date = Some(now + i64::from(window_days) * SECONDS_PER_DAY);
            record.pending_window_days = Some(window_days);
            outcome = Some((record.clone(), Some(KeyEvent::DeletionScheduled)));
            Ok(TypedChange::Put {
                meta: record,
                sealed: current.sealed.clone(),
            })
        })
        .await?;
        self.cache.remove(&location);
        self.schedule_changed.notify_one();
        Ok(outcome)
    }
}

fn location(namespace: &str, key_id: &str) -> KeyLocation {
    KeyLocation {
        namespace: namespace.to_owned(),
        key_id: key_id.to_owned(),
    }
}

/// Sets what the declaration decides on `record`; returns the state changes made.
fn converge(
    record: &mut KeyRecord,
    declared: &DeclaredKey,
    policy: &str,
    now: i64,
) -> Result<Vec<KeyEvent>, KmsError> {
    let mut events = Vec::new();
    if record.state == KeyState::PendingDeletion {
        record.state = if record.versions.is_empty() {
            KeyState::PendingImport
        } else {
            KeyState::Disabled
        };
        record.deletion_date = None;
        record.pending_window_days = None;
        events.push(KeyEvent::DeletionCancelled);
    }
    match (record.state, declared.enabled) {
        (KeyState::Disabled, true) => {
            record.state = KeyState::Enabled;
            events.push(KeyEvent::Enabled);
        }
        (KeyState::Enabled, false) => {
            record.state = KeyState::Disabled;
            events.push(KeyEvent::Disabled);
        }
        _ => {}
    }
    declared.description.clone_into(&mut record.description);
    record.deletion_window_days = Some(declared.deletion_window_days);
    policy.clone_into(&mut record.policy);
    let rotatable =
        record.key_spec == KeySpec::SymmetricDefault && record.origin == Origin::Generated;
    match declared.rotation {
        Some(rotation) if rotatable => {
            let changed = record.rotation_enabled != rotation.enabled
                || record.rotation_period_days != Some(rotation.period_days);
            if changed {
                record.rotation_enabled = rotation.enabled;
                record.rotation_period_days = Some(rotation.period_days);
                // The period counts from the newest version, as AWS counts it from the last
                // rotation; a shortened period may so fall due at once.
                let since = record
                    .versions
                    .last()
                    .map_or(record.created, |version| version.created);
                record.next_rotation = rotation
                    .enabled
                    .then(|| (since + i64::from(rotation.period_days) * SECONDS_PER_DAY).max(now));
            }
        }
        Some(_) => {
            return Err(KmsError::UnsupportedOperation(
                "Automatic rotation is available only for SYMMETRIC_DEFAULT keys whose material Coffer generates.".into(),
            ));
        }
        None => {
            record.rotation_enabled = false;
            record.rotation_period_days = None;
            record.next_rotation = None;
        }
    }
    Ok(events)
}
