//! Key lifecycle: create, describe, list, enable and disable, description, tags, aliases, key
//! policies, deletion and the rotation schedule.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;

use crate::engine::paging::{self, Page};

use super::model::{AliasRecord, KeyRecord, KeySpec, KeyState, KeyUsage, KeyVersion, Origin};
use super::{KeyLocation, Kms, KmsError, key_record_key};
use crate::crypto::KeyMaterial;
use crate::crypto::asymmetric;
use crate::engine::Caller;
use crate::engine::account::account_id;
use crate::engine::kms::policy::{KeyPolicy, KmsRequest as AccessRequest};
use crate::store::RecordKind;
use crate::store::typed::{self, TypedChange};

const SECONDS_PER_DAY: i64 = 86_400;
const MAX_DESCRIPTION_LEN: usize = 8192;
const MAX_TAGS: usize = 50;
pub(crate) const DEFAULT_ROTATION_DAYS: u32 = 365;
pub(crate) const ROTATION_DAYS: std::ops::RangeInclusive<u32> = 90..=2560;
pub(crate) const DELETION_WINDOW_DAYS: std::ops::RangeInclusive<u32> = 7..=30;
pub(crate) const DEFAULT_DELETION_WINDOW_DAYS: u32 = 30;
const MAX_POLICY_LEN: usize = 32_768;

/// CreateKey's inputs.
#[derive(Clone, Debug, Default)]
pub struct CreateKeyRequest {
    pub description: Option<String>,
    pub key_spec: Option<String>,
    pub key_usage: Option<String>,
    pub origin: Option<String>,
    pub policy: Option<String>,
    pub bypass_policy_lockout_safety_check: bool,
    pub tags: Vec<(String, String)>,
    pub multi_region: bool,
}

/// AWS's KeyMetadata.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyMetadata {
    #[serde(rename = "AWSAccountId")]
    pub aws_account_id: String,
    pub key_id: String,
    pub arn: String,
    pub creation_date: i64,
    pub enabled: bool,
    pub description: String,
    pub key_usage: KeyUsage,
    pub key_state: KeyState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_deletion_window_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub valid_to: Option<i64>,
    pub origin: Origin,
    pub key_manager: &'static str,
    pub customer_master_key_spec: KeySpec,
    pub key_spec: KeySpec,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub encryption_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub signing_algorithms: Vec<&'static str>,
    pub multi_region: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_model: Option<&'static str>,
}

/// One key in ListKeys.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyListEntry {
    pub key_id: String,
    pub key_arn: String,
}

/// A listing cut into pages, with KMS's page sizes.
pub(crate) fn paginate<T>(
    items: Vec<(String, T)>,
    limit: Option<i64>,
    marker: Option<&str>,
    max: i64,
    default: i64,
) -> Result<Page<T>, KmsError> {
    Ok(paging::paginate(
        items,
        limit,
        marker,
        paging::PageLimits { max, default },
    )?)
}

pub(crate) fn validate_description(description: &str) -> Result<(), KmsError> {
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(KmsError::Validation(format!(
            "Description must be at most {MAX_DESCRIPTION_LEN} characters."
        )));
    }
    Ok(())
}

fn validate_tags(tags: &[(String, String)]) -> Result<(), KmsError> {
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 {
            return Err(KmsError::Tag("TagKey must be 1 to 128 characters.".into()));
        }
        if value.chars().count() > 256 {
            return Err(KmsError::Tag(
                "TagValue must be at most 256 characters.".into(),
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(KmsError::Tag(
                "Tags beginning with aws: are reserved.".into(),
            ));
        }
    }
    Ok(())
}

pub(crate) fn validate_alias_name(name: &str) -> Result<(), KmsError> {
    let Some(rest) = name.strip_prefix("alias/") else {
        return Err(KmsError::Validation(
            "Alias must start with the prefix \"alias/\".".into(),
        ));
    };
    if rest.is_empty()
        || name.len() > 256
        || !rest
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'-'))
    {
        return Err(KmsError::Validation(format!(
            "Alias {} must match ^alias/[a-zA-Z0-9/_-]+$ and be at most 256 characters.",
            crate::engine::text::truncate(name)
        )));
    }
    if rest.starts_with("aws/") {
        return Err(KmsError::InvalidAliasName(
            "Aliases beginning with alias/aws/ are reserved.".into(),
        ));
    }
    Ok(())
}

/// Refuses combinations of spec, usage and origin that no key can have.
pub(crate) fn validate_kind(
    key_spec: KeySpec,
    key_usage: KeyUsage,
    origin: Origin,
) -> Result<(), KmsError> {
    match (key_spec, key_usage) {
        (KeySpec::SymmetricDefault, KeyUsage::SignVerify) => {
            return Err(KmsError::Validation(
                "SYMMETRIC_DEFAULT keys support only ENCRYPT_DECRYPT.".into(),
            ));
        }
        (KeySpec::EccNistP256 | KeySpec::EccNistP384, KeyUsage::EncryptDecrypt) => {
            return Err(KmsError::Validation(
                "ECC keys support only SIGN_VERIFY.".into(),
            ));
        }
        _ => {}
    }
    if origin == Origin::External && key_spec != KeySpec::SymmetricDefault {
        return Err(KmsError::UnsupportedOperation(
            "Imported key material is supported for SYMMETRIC_DEFAULT keys only.".into(),
        ));
    }
    Ok(())
}

pub(crate) fn check_policy_text(policy: &str) -> Result<KeyPolicy, KmsError> {
    if policy.is_empty() || policy.len() > MAX_POLICY_LEN {
        return Err(KmsError::Validation(format!(
            "Policy must be between 1 and {MAX_POLICY_LEN} characters."
        )));
    }
    Ok(KeyPolicy::parse(policy)?)
}

/// Whether a key state allows enabling, disabling and other administration.
fn refuse_pending(record: &KeyRecord) -> Result<(), KmsError> {
    let key_id = &record.key_id;
    match record.state {
        KeyState::PendingDeletion => Err(KmsError::InvalidState(format!(
            "{key_id} is pending deletion."
        ))),
        KeyState::PendingImport => Err(KmsError::InvalidState(format!(
            "{key_id} is pending import."
        ))),
        KeyState::Enabled | KeyState::Disabled => Ok(()),
    }
}

/// What a new key is made of, once its inputs are validated.
pub(crate) struct NewKey {
    pub description: String,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub origin: Origin,
    pub policy: String,
    pub tags: BTreeMap<String, String>,
}

impl Kms {
    /// A new key's record and its first version's wrapped material (none for EXTERNAL keys,
    /// which wait in PendingImport).
    pub(crate) async fn new_key(
        &self,
        location: &KeyLocation,
        key: NewKey,
    ) -> Result<(KeyRecord, BTreeMap<String, Vec<u8>>), KmsError> {
        let NewKey {
            description,
            key_spec,
            key_usage,
            origin,
            policy,
            tags,
        } = key;
        let now = self.now();
        let mut sealed = BTreeMap::new();
        let mut versions = Vec::new();
        let mut public_key = None;
        let state = if origin == Origin::External {
            KeyState::PendingImport
        } else {
            match key_spec.asymmetric() {
                None => {
                    let material = KeyMaterial::generate();
                    sealed.insert(
                        KeyRecord::material_slot(1),
                        self.wrap_material(location, 1, material.expose())?,
                    );
                }
                Some(spec) => {
                    let pair = tokio::task::spawn_blocking(move || asymmetric::generate(spec))
                        .await
                        .map_err(|err| KmsError::fault("key generation task", err))??;
                    sealed.insert(
                        KeyRecord::material_slot(1),
                        self.wrap_material(location, 1, &pair.private_pkcs8_der)?,
                    );
                    public_key = Some(STANDARD.encode(&pair.public_spki_der));
                }
            }
            versions.push(KeyVersion {
                id: 1,
                created: now,
                rotation: None,
            });
            KeyState::Enabled
        };
        let record = KeyRecord {
            key_id: location.key_id.clone(),
            description,
            key_spec,
            key_usage,
            origin,
            state,
            created: now,
            versions,
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation: None,
            deletion_date: None,
            pending_window_days: None,
            deletion_window_days: None,
            tags,
            policy,
            public_key,
            pending_import: None,
            expiration_model: None,
            valid_to: None,
        };
        Ok((record, sealed))
    }
}

impl Kms {
    pub(crate) fn metadata(&self, location: &KeyLocation, record: &KeyRecord) -> KeyMetadata {
        let (encryption_algorithms, signing_algorithms) = match record.key_spec.asymmetric() {
            None => (vec!["SYMMETRIC_DEFAULT"], Vec::new()),
            Some(spec) => match record.key_usage {
                KeyUsage::EncryptDecrypt => (
                    asymmetric::encryption_algorithms(spec)
                        .iter()
                        .map(|algorithm| algorithm.as_str())
                        .collect(),
                    Vec::new(),
                ),
                KeyUsage::SignVerify => (
                    Vec::new(),
                    asymmetric::signing_algorithms(spec)
                        .iter()
                        .map(|algorithm| algorithm.as_str())
                        .collect(),
                ),
            },
        };
        KeyMetadata {
            aws_account_id: account_id(&location.namespace),
            key_id: record.key_id.clone(),
            arn: self.key_arn(location),
            creation_date: record.created,
            enabled: record.state == KeyState::Enabled,
            description: record.description.clone(),
            key_usage: record.key_usage,
            key_state: record.state,
            deletion_date: record.deletion_date,
            pending_deletion_window_in_days: record.pending_window_days,
            valid_to: record.valid_to,
            origin: record.origin,
            key_manager: "CUSTOMER",
            customer_master_key_spec: record.key_spec,
            key_spec: record.key_spec,
            encryption_algorithms,
            signing_algorithms,
            multi_region: false,
            expiration_model: (record.origin == Origin::External)
                .then(|| record.expiration_model.map(|model| model.as_str()))
                .flatten(),
        }
    }

    pub async fn create_key(
        &self,
        caller: &Caller,
        request: CreateKeyRequest,
    ) -> Result<KeyMetadata, KmsError> {
        self.authorize_account(caller, "kms:CreateKey").await?;
        if request.multi_region {
            return Err(KmsError::UnsupportedOperation(
                "Multi-Region keys are not supported.".into(),
            ));
        }
        let key_spec = match request.key_spec.as_deref() {
            None => KeySpec::SymmetricDefault,
            Some(text) => KeySpec::parse(text).ok_or_else(|| {
                KmsError::Validation(format!(
                    "KeySpec {} is not supported.",
                    crate::engine::text::truncate(text)
                ))
            })?,
        };
        let key_usage = match request.key_usage.as_deref() {
            None => KeyUsage::EncryptDecrypt,
            Some(text) => KeyUsage::parse(text).ok_or_else(|| {
                KmsError::Validation(format!(
                    "KeyUsage {} is not supported.",
                    crate::engine::text::truncate(text)
                ))
            })?,
        };
        let origin = match request.origin.as_deref() {
            None => Origin::Generated,
            Some(text) => Origin::parse(text).ok_or_else(|| {
                KmsError::UnsupportedOperation(format!(
                    "Origin {} is not supported.",
                    crate::engine::text::truncate(text)
                ))
            })?,
        };
        validate_kind(key_spec, key_usage, origin)?;
        let description = request.description.unwrap_or_default();
        validate_description(&description)?;
        validate_tags(&request.tags)?;
        if request.tags.len() > MAX_TAGS {
            return Err(KmsError::Tag(format!("At most {MAX_TAGS} tags.")));
        }

        let location = KeyLocation {
            namespace: caller.namespace.clone(),
            key_id: uuid::Uuid::new_v4().to_string(),
        };
        let arn = self.key_arn(&location);
        let key_account = account_id(&location.namespace);
        let policy_text = match request.policy {
            Some(text) => {
                let policy = check_policy_text(&text)?;
                if !request.bypass_policy_lockout_safety_check {
                    self.refuse_lockout(caller, &policy, &arn, &key_account)
                        .await?;
                }
                text
            }
            None => KeyPolicy::default_document(&key_account),
        };

        let (record, sealed) = self
            .new_key(
                &location,
                NewKey {
                    description,
                    key_spec,
                    key_usage,
                    origin,
                    policy: policy_text,
                    tags: request.tags.into_iter().collect(),
                },
            )
            .await?;
        typed::create(
            self.store.as_ref(),
            &key_record_key(&location),
            &record,
            sealed,
        )
        .await?;
        Ok(self.metadata(&location, &record))
    }

    /// Refuses a policy under which `caller` could no longer change the policy.
    async fn refuse_lockout(
        &self,
        caller: &Caller,
        policy: &KeyPolicy,
        arn: &str,
        key_account: &str,
    ) -> Result<(), KmsError> {
        let delegated = self.authority.allows(caller, "kms:PutKeyPolicy", arn).await;
        let delegate = |_: &AccessRequest<'_>| delegated;
        if policy.would_lock_out(
            &caller.principal,
            arn,
            key_account,
            caller.secure_transport,
            &delegate,
        ) {
            return Err(KmsError::MalformedPolicyDocument(
                "The new key policy will not allow you to update the key policy in the future."
                    .into(),
            ));
        }
        Ok(())
    }

    pub async fn describe_key(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<KeyMetadata, KmsError> {
        let (location, key) = self
            .authorized_key(caller, key_ref, "kms:DescribeKey")
            .await?;
        Ok(self.metadata(&location, &key.record))
    }

    pub async fn list_keys(
        &self,
        caller: &Caller,
        limit: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Page<KeyListEntry>, KmsError> {
        self.authorize_account(caller, "kms:ListKeys").await?;
        let keys = self
            .store
            .list(RecordKind::KmsKey, Some(&caller.namespace))
            .await?
            .into_iter()
            .map(|(key, _)| {
                let location = KeyLocation {
                    namespace: key.namespace,
                    key_id: key.name,
                };
                let entry = KeyListEntry {
                    key_id: location.key_id.clone(),
                    key_arn: self.key_arn(&location),
                };
                (location.key_id, entry)
            })
            .collect();
        paginate(keys, limit, marker, 1000, 1000)
    }

    /// Runs an administrative change on a key after authorizing `action`.
    async fn administer<F>(
        &self,
        caller: &Caller,
        key_ref: &str,
        action: &str,
        change: F,
    ) -> Result<(KeyLocation, KeyRecord), KmsError>
    where
        F: FnMut(&mut KeyRecord, &mut BTreeMap<String, Vec<u8>>) -> Result<(), KmsError>,
    {
        let (location, _) = self.authorized_key(caller, key_ref, action).await?;
        let record = self.update_key(&location, change).await?;
        Ok((location, record))
    }

    pub async fn enable_key(&self, caller: &Caller, key_ref: &str) -> Result<(), KmsError> {
        self.set_enabled(caller, key_ref, "kms:EnableKey", KeyState::Enabled)
            .await
    }

    pub async fn disable_key(&self, caller: &Caller, key_ref: &str) -> Result<(), KmsError> {
        self.set_enabled(caller, key_ref, "kms:DisableKey", KeyState::Disabled)
            .await
    }

    /// Enables or disables a key; keys pending deletion or import can be neither.
    async fn set_enabled(
        &self,
        caller: &Caller,
        key_ref: &str,
        action: &str,
        state: KeyState,
    ) -> Result<(), KmsError> {
        self.administer(caller, key_ref, action, |record, _| {
            refuse_pending(record)?;
            record.state = state;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn update_key_description(
        &self,
        caller: &Caller,
        key_ref: &str,
        description: &str,
    ) -> Result<(), KmsError> {
        validate_description(description)?;
        self.administer(caller, key_ref, "kms:UpdateKeyDescription", |record, _| {
            description.clone_into(&mut record.description);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn tag_resource(
        &self,
        caller: &Caller,
        key_ref: &str,
        tags: Vec<(String, String)>,
    ) -> Result<(), KmsError> {
        validate_tags(&tags)?;
        self.administer(caller, key_ref, "kms:TagResource", |record, _| {
            refuse_deleted(record)?;
            for (key, value) in &tags {
                record.tags.insert(key.clone(), value.clone());
            }
            if record.tags.len() > MAX_TAGS {
                return Err(KmsError::Tag(format!(
                    "A key may carry at most {MAX_TAGS} tags."
                )));
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn untag_resource(
        &self,
        caller: &Caller,
        key_ref: &str,
        tag_keys: Vec<String>,
    ) -> Result<(), KmsError> {
        self.administer(caller, key_ref, "kms:UntagResource", |record, _| {
            refuse_deleted(record)?;
            for key in &tag_keys {
                record.tags.remove(key);
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn list_resource_tags(
        &self,
        caller: &Caller,
        key_ref: &str,
        limit: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Page<(String, String)>, KmsError> {
        let (_, key) = self
            .authorized_key(caller, key_ref, "kms:ListResourceTags")
            .await?;
        let tags = key
            .record
            .tags
            .iter()
            .map(|(name, value)| (name.clone(), (name.clone(), value.clone())))
            .collect();
        paginate(tags, limit, marker, 50, 50)
    }

    pub async fn schedule_key_deletion(
        &self,
        caller: &Caller,
        key_ref: &str,
        pending_window_days: Option<i64>,
    ) -> Result<KeyMetadata, KmsError> {
        let days = pending_window_days.unwrap_or(i64::from(DEFAULT_DELETION_WINDOW_DAYS));
        let days = u32::try_from(days)
            .ok()
            .filter(|days| DELETION_WINDOW_DAYS.contains(days))
            .ok_or_else(|| {
                KmsError::Validation("PendingWindowInDays must be between 7 and 30.".into())
            })?;
        let now = self.now();
        if Kms::is_service_managed(&self.resolve(caller, key_ref).await?) {
            return Err(KmsError::UnsupportedOperation(
                "You cannot schedule the deletion of an AWS managed key.".into(),
            ));
        }
        let (location, record) = self
            .administer(caller, key_ref, "kms:ScheduleKeyDeletion", |record, _| {
                if record.state == KeyState::PendingDeletion {
                    return Err(KmsError::InvalidState(format!(
                        "{} is pending deletion.",
                        record.key_id
                    )));
                }
                record.state = KeyState::PendingDeletion;
                record.deletion_date = Some(now + i64::from(days) * SECONDS_PER_DAY);
                record.pending_window_days = Some(days);
                Ok(())
            })
            .await?;
        Ok(self.metadata(&location, &record))
    }

    pub async fn cancel_key_deletion(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<String, KmsError> {
        let (location, _) = self
            .administer(caller, key_ref, "kms:CancelKeyDeletion", |record, _| {
                if record.state != KeyState::PendingDeletion {
                    return Err(KmsError::InvalidState(format!(
                        "{} is not pending deletion.",
                        record.key_id
                    )));
                }
                // AWS returns a cancelled key disabled, so nothing uses it by surprise.
                record.state = if record.versions.is_empty() {
                    KeyState::PendingImport
                } else {
                    KeyState::Disabled
                };
                record.deletion_date = None;
                record.pending_window_days = None;
                Ok(())
            })
            .await?;
        Ok(self.key_arn(&location))
    }

    pub async fn enable_key_rotation(
        &self,
        caller: &Caller,
        key_ref: &str,
        period_days: Option<i64>,
    ) -> Result<(), KmsError> {
        let days = period_days.unwrap_or(i64::from(DEFAULT_ROTATION_DAYS));
        let days = u32::try_from(days)
            .ok()
            .filter(|days| ROTATION_DAYS.contains(days))
            .ok_or_else(|| {
                KmsError::Validation("RotationPeriodInDays must be between 90 and 2560.".into())
            })?;
        let now = self.now();
        self.administer(caller, key_ref, "kms:EnableKeyRotation", |record, _| {
            refuse_unrotatable(record)?;
            usable_for_rotation_settings(record)?;
            record.rotation_enabled = true;
            record.rotation_period_days = Some(days);
            record.next_rotation = Some(now + i64::from(days) * SECONDS_PER_DAY);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn disable_key_rotation(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<(), KmsError> {
        self.administer(caller, key_ref, "kms:DisableKeyRotation", |record, _| {
            refuse_unrotatable(record)?;
            usable_for_rotation_settings(record)?;
            record.rotation_enabled = false;
            record.next_rotation = None;
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn get_key_policy(
        &self,
        caller: &Caller,
        key_ref: &str,
        policy_name: Option<&str>,
    ) -> Result<String, KmsError> {
        check_policy_name(policy_name)?;
        let (_, key) = self
            .authorized_key(caller, key_ref, "kms:GetKeyPolicy")
            .await?;
        Ok(key.record.policy.clone())
    }

    pub async fn put_key_policy(
        &self,
        caller: &Caller,
        key_ref: &str,
        policy_name: Option<&str>,
        policy: &str,
        bypass_lockout_check: bool,
    ) -> Result<(), KmsError> {
        check_policy_name(policy_name)?;
        let parsed = check_policy_text(policy)?;
        let (location, _) = self
            .authorized_key(caller, key_ref, "kms:PutKeyPolicy")
            .await?;
        if !bypass_lockout_check {
            let arn = self.key_arn(&location);
            self.refuse_lockout(caller, &parsed, &arn, &account_id(&location.namespace))
                .await?;
        }
        self.update_key(&location, |record, _| {
            refuse_deleted(record)?;
            policy.clone_into(&mut record.policy);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn list_key_policies(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<Vec<String>, KmsError> {
        self.authorized_key(caller, key_ref, "kms:ListKeyPolicies")
            .await?;
        Ok(vec!["default".to_owned()])
    }

    pub async fn create_alias(
        &self,
        caller: &Caller,
        alias_name: &str,
        target: &str,
    ) -> Result<(), KmsError> {
        validate_alias_name(alias_name)?;
        let location = self.alias_target_key(caller, target).await?;
        let key = self.load(&location).await?;
        self.authorize(caller, &key, "kms:CreateAlias", &BTreeMap::new())
            .await?;
        refuse_deleted(&key.record)?;
        let now = self.now();
        let record = AliasRecord {
            target_key_id: location.key_id.clone(),
            created: now,
            updated: now,
        };
        match typed::create(
            self.store.as_ref(),
            &typed::key::<AliasRecord>(&caller.namespace, alias_name),
            &record,
            BTreeMap::new(),
        )
        .await
        {
            Err(crate::store::StoreError::AlreadyExists(_)) => {
                Err(KmsError::AlreadyExists(format!(
                    "An alias with the name {} already exists",
                    self.alias_arn(&caller.namespace, alias_name)
                )))
            }
            other => other.map(|_| ()).map_err(KmsError::from),
        }
    }

    /// An alias must point at a key, named by key id or key ARN, not at another alias.
    async fn alias_target_key(
        &self,
        caller: &Caller,
        target: &str,
    ) -> Result<KeyLocation, KmsError> {
        if target.starts_with("alias/") || target.contains(":alias/") {
            return Err(KmsError::Validation(
                "TargetKeyId must be a key id or key ARN, not an alias.".into(),
            ));
        }
        self.resolve(caller, target).await
    }

    pub async fn update_alias(
        &self,
        caller: &Caller,
        alias_name: &str,
        target: &str,
    ) -> Result<(), KmsError> {
        validate_alias_name(alias_name)?;
        let new_location = self.alias_target_key(caller, target).await?;
        let old_location = self.alias_target(&caller.namespace, alias_name).await?;
        let new_key = self.load(&new_location).await?;
        let old_key = self.load(&old_location).await?;
        self.authorize(caller, &new_key, "kms:UpdateAlias", &BTreeMap::new())
            .await?;
        self.authorize(caller, &old_key, "kms:UpdateAlias", &BTreeMap::new())
            .await?;
        if old_key.record.key_usage != new_key.record.key_usage
            || old_key.record.key_spec.asymmetric().is_some()
                != new_key.record.key_spec.asymmetric().is_some()
        {
            return Err(KmsError::Validation(
                "An alias can only move to a key of the same type and usage.".into(),
            ));
        }
        refuse_deleted(&new_key.record)?;
        let now = self.now();
        let key = typed::key::<AliasRecord>(&caller.namespace, alias_name);
        typed::modify::<AliasRecord, _, _, KmsError>(self.store.as_ref(), &key, |current| {
            let current =
                current.ok_or_else(|| KmsError::NotFound("Alias is not found.".into()))?;
            let mut record = current.meta.clone();
            new_location.key_id.clone_into(&mut record.target_key_id);
            record.updated = now;
            Ok(TypedChange::Put {
                meta: record,
                sealed: BTreeMap::new(),
            })
        })
        .await
        .map(|_| ())
    }

    pub async fn delete_alias(&self, caller: &Caller, alias_name: &str) -> Result<(), KmsError> {
        validate_alias_name(alias_name)?;
        let location = self.alias_target(&caller.namespace, alias_name).await?;
        let key = self.load(&location).await?;
        self.authorize(caller, &key, "kms:DeleteAlias", &BTreeMap::new())
            .await?;
        let key = typed::key::<AliasRecord>(&caller.namespace, alias_name);
        typed::modify::<AliasRecord, _, _, KmsError>(self.store.as_ref(), &key, |_| {
            Ok(TypedChange::Delete)
        })
        .await
        .map(|_| ())
    }

    pub async fn list_aliases(
        &self,
        caller: &Caller,
        key_ref: Option<&str>,
        limit: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Page<AliasListEntry>, KmsError> {
        let only = match key_ref {
            Some(key_ref) => {
                let (location, _) = self
                    .authorized_key(caller, key_ref, "kms:ListAliases")
                    .await?;
                Some(location.key_id)
            }
            None => {
                self.authorize_account(caller, "kms:ListAliases").await?;
                None
            }
        };
        let mut aliases = Vec::new();
        for (key, record) in
            typed::list::<AliasRecord, _>(self.store.as_ref(), Some(&caller.namespace)).await?
        {
            let alias = record.meta;
            if only
                .as_ref()
                .is_some_and(|only| *only != alias.target_key_id)
            {
                continue;
            }
            let entry = AliasListEntry {
                alias_arn: self.alias_arn(&key.namespace, &key.name),
                alias_name: key.name.clone(),
                target_key_id: alias.target_key_id,
                creation_date: alias.created,
                last_updated_date: alias.updated,
            };
            aliases.push((key.name, entry));
        }
        // Managed keys' aliases are derived, not stored: list those whose key exists.
        for service in super::service_values::MANAGED_SERVICES {
            let location = Kms::managed_key_location(&caller.namespace, service);
            if only.as_ref().is_some_and(|only| *only != location.key_id) {
                continue;
            }
            let Some(key) = typed::get::<KeyRecord, _>(
                self.store.as_ref(),
                &caller.namespace,
                &location.key_id,
            )
            .await?
            else {
                continue;
            };
            let name = Kms::managed_alias(service);
            let entry = AliasListEntry {
                alias_arn: self.alias_arn(&caller.namespace, &name),
                alias_name: name.clone(),
                target_key_id: location.key_id,
                creation_date: key.meta.created,
                last_updated_date: key.meta.created,
            };
            aliases.push((name, entry));
        }
        aliases.sort_by(|(a, _), (b, _)| a.cmp(b));
        paginate(aliases, limit, marker, 100, 50)
    }

    /// Deletes every alias that points at a key (when the key itself is deleted).
    pub(crate) async fn delete_aliases_of(&self, location: &KeyLocation) -> Result<(), KmsError> {
        for (key, record) in self
            .store
            .list(RecordKind::Alias, Some(&location.namespace))
            .await?
        {
            let points_here = record.value.meta.get("targetKeyId")
                == Some(&serde_json::Value::from(location.key_id.as_str()));
            if points_here {
                match self.store.delete(&key, &record.revision).await {
                    Ok(()) | Err(crate::store::StoreError::NotFound(_)) => {}
                    Err(crate::store::StoreError::Conflict(_)) => {}
                    Err(other) => return Err(other.into()),
                }
            }
        }
        Ok(())
    }
}

/// One alias in ListAliases.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasListEntry {
    pub alias_name: String,
    pub alias_arn: String,
    pub target_key_id: String,
    pub creation_date: i64,
    pub last_updated_date: i64,
}

fn check_policy_name(policy_name: Option<&str>) -> Result<(), KmsError> {
    match policy_name {
        None | Some("default") => Ok(()),
        Some(_) => Err(KmsError::NotFound(
            "The only key policy is named default.".into(),
        )),
    }
}

pub(crate) fn refuse_deleted(record: &KeyRecord) -> Result<(), KmsError> {
    if record.state == KeyState::PendingDeletion {
        return Err(KmsError::InvalidState(format!(
            "{} is pending deletion.",
            record.key_id
        )));
    }
    Ok(())
}

/// Only symmetric keys with Coffer-generated material rotate.
pub(crate) fn refuse_unrotatable(record: &KeyRecord) -> Result<(), KmsError> {
    if record.key_spec != KeySpec::SymmetricDefault || record.origin != Origin::Generated {
        return Err(KmsError::UnsupportedOperation(
            "Rotation is supported for symmetric keys with generated material only.".into(),
        ));
    }
    Ok(())
}

fn usable_for_rotation_settings(record: &KeyRecord) -> Result<(), KmsError> {
    match record.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(KmsError::Disabled(record.key_id.clone())),
        KeyState::PendingDeletion | KeyState::PendingImport => Err(KmsError::InvalidState(
            format!("{} is {}.", record.key_id, record.state.as_str()),
        )),
    }
}
