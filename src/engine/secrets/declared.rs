//! Secrets as a declaration states them (the Secret resource in a cluster), applied by the
//! controller for the namespace rather than for a caller: no caller is authorized here, and
//! values are sealed only under keys of the secret's own namespace
//! ([`Kms::seal_value_for_account`]).
//!
//! [`Kms::seal_value_for_account`]: crate::engine::kms::Kms::seal_value_for_account

use std::collections::BTreeMap;

use subtle::ConstantTimeEq as _;

use super::model::SecretRecord;
use super::operations::{DAY, DEFAULT_RECOVERY_DAYS, MAX_RECOVERY_DAYS, MIN_RECOVERY_DAYS};
use super::{SecretValue, Secrets, SecretsError, validate_name};
use crate::store::StoreError;
use crate::store::typed::{self, Typed};

/// What a declaration says of a secret, besides its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredSecret {
    pub description: String,
    /// The key as declared; `None` is the namespace's `alias/aws/secretsmanager`.
    pub kms_key_id: Option<String>,
    /// The resource policy document; `None` for none.
    pub policy: Option<String>,
    /// Days between the declaration's deletion and the purge.
    pub recovery_window_days: i64,
    pub rotation: RotationDeclared,
}

/// What a declaration says of rotation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotationDeclared {
    /// Nothing new: the rotation stays as it is (a spec already applied).
    Unchanged,
    /// No rotation: one the declaration made before is turned off; one the API made stays.
    Absent,
    Declared(super::DeclaredRotation),
}

/// A value a declaration brings, with the fingerprint of its source when it has one.
pub struct DeclaredValue {
    pub value: SecretValue,
    /// Remembered with the secret ([`SecretRecord::declared_source`]); a value whose source has
    /// this fingerprint already is not imported again.
    pub source: Option<String>,
}

/// What applying a declaration did, for Events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretEvent {
    /// The secret was made.
    Created,
    /// The secret's scheduled deletion was cancelled.
    Restored,
    /// A new version became AWSCURRENT.
    ValueChanged { version_id: String },
}

/// How many times a declaration is applied again after losing a race with another writer.
const APPLY_ATTEMPTS: usize = 8;

impl Secrets {
    /// The record of secret `name` of `namespace`, if any.
    pub async fn declared_record(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, SecretsError> {
        Ok(
            typed::get::<SecretRecord, _>(self.store.as_ref(), namespace, name)
                .await?
                .map(|found| found.meta),
        )
    }

    /// The current value of secret `name`, opened for its namespace.
    pub async fn declared_current_value(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretValue>, SecretsError> {
        let Some(found) =
            typed::get::<SecretRecord, _>(self.store.as_ref(), namespace, name).await?
        else {
            return Ok(None);
        };
        let Some(version_id) = found.meta.version_with(super::CURRENT).map(str::to_owned) else {
            return Ok(None);
        };
        self.open_for_account(namespace, &found, &version_id)
            .await
            .map(Some)
    }

    /// Whether `value` is the secret's current value.
    pub async fn is_declared_current(
        &self,
        namespace: &str,
        name: &str,
        value: &SecretValue,
    ) -> Result<bool, SecretsError> {
        Ok(self
            .declared_current_value(namespace, name)
            .await?
            .is_some_and(|current| {
                current.binary == value.binary
                    && bool::from(current.bytes.expose().ct_eq(value.bytes.expose()))
            }))
    }

    /// Brings secret `name` of `namespace` to `declared`: makes it when absent, cancels its
    /// scheduled deletion (the caller has made sure the declaration still stands), updates
    /// what differs, and adds `value` as the new AWSCURRENT version when given.
    pub async fn apply_declared(
        &self,
        namespace: &str,
        name: &str,
        declared: &DeclaredSecret,
        value: Option<DeclaredValue>,
    ) -> Result<(SecretRecord, Vec<SecretEvent>), SecretsError> {
        validate_name(name)?;
        super::operations::validate_description(&declared.description)?;
        if let Some(policy) = &declared.policy {
            super::operations::validate_policy(policy, false)?;
        }
        if !(MIN_RECOVERY_DAYS..=MAX_RECOVERY_DAYS).contains(&declared.recovery_window_days) {
            return Err(SecretsError::InvalidParameter(format!(
                "The recovery window must be between {MIN_RECOVERY_DAYS} and {MAX_RECOVERY_DAYS} days."
            )));
        }
        if let Some(value) = &value {
            super::operations::validate_value(&value.value)?;
        }
        if let RotationDeclared::Declared(rotation) = &declared.rotation {
            self.check_declared_rotation(rotation)?;
        }
        let _turn = self.write_turn(namespace, name).await;
        for _ in 0..APPLY_ATTEMPTS {
            let stored =
                typed::get::<SecretRecord, _>(self.store.as_ref(), namespace, name).await?;
            if let Some(applied) = self
                .apply_once(namespace, name, declared, value.as_ref(), stored)
                .await?
            {
                return Ok(applied);
            }
        }
        Err(
            StoreError::TooManyConflicts(format!("secret {namespace}/{name}"), APPLY_ATTEMPTS)
                .into(),
        )
    }

    /// One attempt of [`Secrets::apply_declared`]; `None` when another writer got in first.
    async fn apply_once(
        &self,
        namespace: &str,
        name: &str,
        declared: &DeclaredSecret,
        value: Option<&DeclaredValue>,
        stored: Option<Typed<SecretRecord>>,
    ) -> Result<Option<(SecretRecord, Vec<SecretEvent>)>, SecretsError> {
        let now = self.now();
        let mut events = Vec::new();
        let (mut record, mut sealed, revision) = match stored {
            Some(stored) => (stored.meta, stored.sealed, Some(stored.revision)),
            None => {
                events.push(SecretEvent::Created);
                let record = SecretRecord::new(name, self.new_arn(namespace, name), now);
                (record, BTreeMap::new(), None)
            }
        };
        let before = record.clone();
        if record.deleted.is_some() {
            record.deleted = None;
            record.purge_after = None;
            events.push(SecretEvent::Restored);
        }
        record.description.clone_from(&declared.description);
        record.kms_key_id.clone_from(&declared.kms_key_id);
        record.policy.clone_from(&declared.policy);
        record.recovery_window_days = Some(declared.recovery_window_days);
        Secrets::apply_declared_rotation(&mut record, &declared.rotation, now);
        if let Some(value) = value {
            let version_id = uuid::Uuid::new_v4().to_string();
            let binding = Secrets::value_binding(namespace, &record, &version_id);
            let (blob, key_arn) = self
                .kms
                .seal_value_for_account(
                    record.kms_key_id.as_deref(),
                    &binding,
                    value.value.bytes.expose(),
                )
                .await
                .map_err(SecretsError::sealing)?;
            let pruned = record.add_version(
                &version_id,
                super::SecretVersion {
                    created: now,
                    stages: Default::default(),
                    binary: value.value.binary,
                    kms_key_arn: key_arn,
                },
                &[],
            )?;
            for id in pruned {
                sealed.remove(&SecretRecord::value_slot(&id));
            }
            sealed.insert(SecretRecord::value_slot(&version_id), blob);
            record.declared_source.clone_from(&value.source);
            events.push(SecretEvent::ValueChanged { version_id });
        } else if record.kms_key_id != before.kms_key_id
            && let Some(key_ref) = &record.kms_key_id
        {
            // A key named now must be usable now, though existing versions stay under theirs.
            let binding = Secrets::value_binding(namespace, &record, "probe");
            self.kms
                .seal_value_for_account(Some(key_ref), &binding, b"probe")
                .await
                .map_err(SecretsError::sealing)?;
        }
        if revision.is_some() && record == before {
            return Ok(Some((record, events)));
        }
        record.last_changed = now;
        let key = typed::key::<SecretRecord>(namespace, name);
        let value = typed::value(&record, sealed)?;
        let written = match &revision {
            None => self.store.create(&key, value).await,
            Some(revision) => self.store.update(&key, revision, value).await,
        };
        match written {
            Ok(_) => {}
            Err(
                StoreError::Conflict(_) | StoreError::AlreadyExists(_) | StoreError::NotFound(_),
            ) => return Ok(None),
            Err(other) => return Err(other.into()),
        }
        if events.contains(&SecretEvent::Restored) {
            self.schedule_changed.notify_one();
        }
        if record.rotation != before.rotation {
            self.rotation_changed().notify_one();
        }
        Ok(Some((record, events)))
    }

    /// Schedules the deletion of secret `name`, whose declaration is gone, after the recovery
    /// window it declared. `None` when there is no such secret; a secret already scheduled is
    /// left as it is.
    pub async fn schedule_declared_deletion(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<SecretRecord>, SecretsError> {
        let key = typed::key::<SecretRecord>(namespace, name);
        let now = self.now();
        let mut scheduled = None;
        let _turn = self.write_turn(namespace, name).await;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            let Some(current) = current else {
                scheduled = None;
                return Ok(typed::TypedChange::Keep);
            };
            let mut meta = current.meta.clone();
            if meta.deleted.is_none() {
                let days = meta.recovery_window_days.unwrap_or(DEFAULT_RECOVERY_DAYS);
                meta.deleted = Some(now);
                meta.purge_after = Some(now.saturating_add(days.saturating_mul(DAY)));
            }
            let change = if meta == current.meta {
                typed::TypedChange::Keep
            } else {
                typed::TypedChange::Put {
                    meta: meta.clone(),
                    sealed: current.sealed.clone(),
                }
            };
            scheduled = Some(meta);
            Ok(change)
        })
        .await?;
        if scheduled.is_some() {
            self.schedule_changed.notify_one();
        }
        Ok(scheduled)
    }

    pub(super) async fn open_for_account(
        &self,
        namespace: &str,
        stored: &Typed<SecretRecord>,
        version_id: &str,
    ) -> Result<SecretValue, SecretsError> {
        let version =
            stored.meta.versions.get(version_id).ok_or_else(|| {
                SecretsError::fault("reading a version", "the version has no record")
            })?;
        let blob = stored
            .sealed
            .get(&SecretRecord::value_slot(version_id))
            .ok_or_else(|| SecretsError::fault("reading a version", "a version has no value"))?;
        let binding = Secrets::value_binding(namespace, &stored.meta, version_id);
        let bytes = self
            .kms
            .open_value_for_account(&binding, blob)
            .await
            .map_err(SecretsError::opening)?;
        Ok(SecretValue {
            bytes,
            binary: version.binary,
        })
    }
}
