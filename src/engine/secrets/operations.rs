//! Secrets Manager's operations, as the engine does them.

use std::collections::BTreeMap;

use subtle::ConstantTimeEq as _;

use super::model::{CURRENT, SecretRecord, SecretVersion};
use super::{MAX_VALUE_LEN, SecretPolicy, SecretValue, Secrets, SecretsError, validate_name};
use crate::engine::Caller;
use crate::engine::paging::{Page, PageLimits, paginate};
use crate::store::StoreError;
use crate::store::typed::{self, Typed, TypedChange};

/// Recovery windows DeleteSecret accepts, in days.
pub(super) const MIN_RECOVERY_DAYS: i64 = 7;
pub(super) const MAX_RECOVERY_DAYS: i64 = 30;
pub(super) const DEFAULT_RECOVERY_DAYS: i64 = 30;
pub(super) const DAY: i64 = 24 * 60 * 60;
const MAX_TAGS: usize = 50;
const MAX_DESCRIPTION_LEN: usize = 2048;
const LIST_LIMITS: PageLimits = PageLimits {
    max: 100,
    default: 100,
};
const VERSION_LIST_LIMITS: PageLimits = PageLimits {
    max: 100,
    default: 100,
};
const BATCH_LIMITS: PageLimits = PageLimits {
    max: 20,
    default: 20,
};
const MAX_BATCH_IDS: usize = 20;

/// CreateSecret's request.
#[derive(Debug, Default)]
pub struct NewSecret {
    pub name: String,
    pub client_request_token: Option<String>,
    pub description: Option<String>,
    pub kms_key_id: Option<String>,
    pub value: Option<SecretValue>,
    pub tags: Vec<(String, String)>,
}

/// UpdateSecret's request.
#[derive(Debug, Default)]
pub struct SecretUpdate {
    pub client_request_token: Option<String>,
    pub description: Option<String>,
    pub kms_key_id: Option<String>,
    pub value: Option<SecretValue>,
}

/// What a write answers: the secret, and the version it made (if any) with its labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteOutcome {
    pub arn: String,
    pub name: String,
    pub version_id: Option<String>,
    pub stages: Vec<String>,
}

/// A version's value as GetSecretValue answers it.
#[derive(Debug)]
pub struct VersionValue {
    pub arn: String,
    pub name: String,
    pub version_id: String,
    pub value: SecretValue,
    pub stages: Vec<String>,
    pub created: i64,
}

/// DescribeSecret's answer, and a ListSecrets entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretDescription {
    pub arn: String,
    pub name: String,
    pub description: String,
    pub kms_key_id: Option<String>,
    pub created: i64,
    pub last_changed: i64,
    pub deleted: Option<i64>,
    pub tags: Vec<(String, String)>,
    pub versions_to_stages: BTreeMap<String, Vec<String>>,
    pub rotation: super::RotationView,
}

/// A ListSecretVersionIds entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionEntry {
    pub version_id: String,
    pub stages: Vec<String>,
    pub created: i64,
    pub kms_key_arn: String,
}

/// A ListSecrets / BatchGetSecretValue filter: a key and values, any of which may match (a
/// value starting with `!` matches when the rest does not).
#[derive(Clone, Debug)]
pub struct ListFilter {
    pub key: String,
    pub values: Vec<String>,
}

/// ListSecrets' request.
#[derive(Clone, Debug, Default)]
pub struct ListSecretsRequest {
    pub filters: Vec<ListFilter>,
    pub include_planned_deletion: bool,
    /// `asc` or `desc` by creation date (AWS's default is `desc`).
    pub sort_order: Option<String>,
    pub max_results: Option<i64>,
    pub next_token: Option<String>,
}

/// A secret BatchGetSecretValue could not read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchError {
    pub secret_id: String,
    pub error_code: &'static str,
    pub message: String,
}

/// BatchGetSecretValue's answer.
#[derive(Debug)]
pub struct BatchOutcome {
    pub values: Vec<VersionValue>,
    pub errors: Vec<BatchError>,
    pub next_token: Option<String>,
}

impl WriteOutcome {
    /// The secret, with no version.
    fn of(record: &SecretRecord) -> Self {
        WriteOutcome {
            arn: record.arn.clone(),
            name: record.name.clone(),
            version_id: None,
            stages: Vec::new(),
        }
    }
}

fn stages_of(version: &SecretVersion) -> Vec<String> {
    version.stages.iter().cloned().collect()
}

fn describe(record: &SecretRecord) -> SecretDescription {
    SecretDescription {
        arn: record.arn.clone(),
        name: record.name.clone(),
        description: record.description.clone(),
        kms_key_id: record.kms_key_id.clone(),
        created: record.created,
        last_changed: record.last_changed,
        deleted: record.deleted,
        tags: record.tags.clone(),
        versions_to_stages: record
            .versions
            .iter()
            .filter(|(_, version)| !version.stages.is_empty())
            .map(|(id, version)| (id.clone(), stages_of(version)))
            .collect(),
        rotation: super::RotationView::of(record),
    }
}

pub(super) fn validate_value(value: &SecretValue) -> Result<(), SecretsError> {
    if value.bytes.len() > MAX_VALUE_LEN {
        return Err(SecretsError::InvalidParameter(format!(
            "The secret value must be at most {MAX_VALUE_LEN} bytes."
        )));
    }
    Ok(())
}

pub(super) fn validate_token(token: &str) -> Result<(), SecretsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !(32..=64).contains(&token.len()) || !token.chars().all(allowed) {
        return Err(SecretsError::InvalidParameter(
            "ClientRequestToken must be 32 to 64 characters of A-Z, a-z, 0-9, - and _.".into(),
        ));
    }
    Ok(())
}

pub(super) fn validate_description(description: &str) -> Result<(), SecretsError> {
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(SecretsError::InvalidParameter(format!(
            "Description must be at most {MAX_DESCRIPTION_LEN} characters."
        )));
    }
    Ok(())
}

fn validate_tags(tags: &[(String, String)]) -> Result<(), SecretsError> {
    for (key, value) in tags {
        if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
            return Err(SecretsError::InvalidParameter(
                "Tag keys must be 1 to 128 characters and values at most 256.".into(),
            ));
        }
        if key.starts_with("aws:") {
            return Err(SecretsError::InvalidParameter(
                "Tag keys beginning with aws: are reserved.".into(),
            ));
        }
    }
    Ok(())
}

pub(super) fn refuse_planned_deletion(record: &SecretRecord) -> Result<(), SecretsError> {
    if record.deleted.is_some() {
        return Err(SecretsError::InvalidRequest(
            "You can't perform this operation on the secret because it was marked for deletion."
                .into(),
        ));
    }
    Ok(())
}

/// Whether `text` matches a filter value: a prefix, or with `!`, not a prefix.
fn matches_value(pattern: &str, text: &str) -> bool {
    match pattern.strip_prefix('!') {
        Some(negated) => !text.starts_with(negated),
        None => text.starts_with(pattern),
    }
}

fn matches_filters(record: &SecretRecord, filters: &[ListFilter]) -> Result<bool, SecretsError> {
    for filter in filters {
        let fields: Vec<&str> = match filter.key.as_str() {
            "name" => vec![record.name.as_str()],
            "description" => vec![record.description.as_str()],
            "tag-key" => record.tags.iter().map(|(key, _)| key.as_str()).collect(),
            "tag-value" => record
                .tags
                .iter()
                .map(|(_, value)| value.as_str())
                .collect(),
            "all" => std::iter::once(record.name.as_str())
                .chain(std::iter::once(record.description.as_str()))
                .chain(
                    record
                        .tags
                        .iter()
                        .flat_map(|(key, value)| [key.as_str(), value.as_str()]),
                )
                .collect(),
            "primary-region" | "owning-service" => Vec::new(),
            other => {
                return Err(SecretsError::InvalidParameter(format!(
                    "Filter key {} is not supported.",
                    crate::engine::text::truncate(other)
                )));
            }
        };
        let hit = filter.values.iter().any(|pattern| {
            if pattern.starts_with('!') {
                fields.iter().all(|field| matches_value(pattern, field))
            } else {
                fields.iter().any(|field| matches_value(pattern, field))
            }
        });
        if !hit {
            return Ok(false);
        }
    }
    Ok(true)
}

impl Secrets {
    /// The secret `secret_id` names, once `caller` may do `action` on it.
    pub(super) async fn authorized(
        &self,
        caller: &Caller,
        secret_id: &str,
        action: &str,
    ) -> Result<Typed<SecretRecord>, SecretsError> {
        let found = self.find(caller, secret_id).await?;
        self.authorize(caller, &found.meta, action).await?;
        Ok(found)
    }

    /// As [`Secrets::authorized`], for an operation a secret planned for deletion refuses.
    async fn live(
        &self,
        caller: &Caller,
        secret_id: &str,
        action: &str,
    ) -> Result<Typed<SecretRecord>, SecretsError> {
        let found = self.authorized(caller, secret_id, action).await?;
        refuse_planned_deletion(&found.meta)?;
        Ok(found)
    }

    /// Seals `value` as version `version_id` of `record`, under the secret's key.
    async fn seal(
        &self,
        caller: &Caller,
        namespace: &str,
        record: &SecretRecord,
        version_id: &str,
        value: &SecretValue,
    ) -> Result<(Vec<u8>, String), SecretsError> {
        let binding = Secrets::value_binding(namespace, record, version_id);
        self.kms
            .seal_value(
                caller,
                record.kms_key_id.as_deref(),
                &binding,
                value.bytes.expose(),
            )
            .await
            .map_err(SecretsError::sealing)
    }

    async fn open(
        &self,
        caller: &Caller,
        namespace: &str,
        stored: &Typed<SecretRecord>,
        version_id: &str,
    ) -> Result<SecretValue, SecretsError> {
        let version = stored.meta.versions.get(version_id).ok_or_else(|| {
            SecretsError::NotFound(format!(
                "Secrets Manager can't find the specified secret value for VersionId: {}",
                crate::engine::text::truncate(version_id)
            ))
        })?;
        let blob = stored
            .sealed
            .get(&SecretRecord::value_slot(version_id))
            .ok_or_else(|| SecretsError::fault("reading a version", "a version has no value"))?;
        let binding = Secrets::value_binding(namespace, &stored.meta, version_id);
        let bytes = self
            .kms
            .open_value(caller, &binding, blob)
            .await
            .map_err(SecretsError::opening)?;
        Ok(SecretValue {
            bytes,
            binary: version.binary,
        })
    }

    pub async fn create_secret(
        &self,
        caller: &Caller,
        request: NewSecret,
    ) -> Result<WriteOutcome, SecretsError> {
        validate_name(&request.name)?;
        let description = request.description.unwrap_or_default();
        validate_description(&description)?;
        validate_tags(&request.tags)?;
        if request.tags.len() > MAX_TAGS {
            return Err(SecretsError::InvalidParameter(format!(
                "A secret can have at most {MAX_TAGS} tags."
            )));
        }
        if let Some(value) = &request.value {
            validate_value(value)?;
        }
        if let Some(token) = &request.client_request_token {
            validate_token(token)?;
        }
        self.authorize_account(caller, "secretsmanager:CreateSecret")
            .await?;
        let namespace = caller.namespace.clone();
        if let Some(existing) =
            typed::get::<SecretRecord, _>(self.store.as_ref(), &namespace, &request.name).await?
        {
            // A retry of the same create is answered as the first one was.
            if let (Some(token), Some(value)) = (&request.client_request_token, &request.value)
                && existing.meta.versions.contains_key(token)
                && existing.meta.deleted.is_none()
            {
                let stored = self.open(caller, &namespace, &existing, token).await?;
                if bool::from(stored.bytes.expose().ct_eq(value.bytes.expose()))
                    && stored.binary == value.binary
                {
                    return Ok(WriteOutcome {
                        arn: existing.meta.arn.clone(),
                        name: existing.meta.name.clone(),
                        version_id: Some(token.clone()),
                        stages: existing
                            .meta
                            .versions
                            .get(token.as_str())
                            .map(stages_of)
                            .unwrap_or_default(),
                    });
                }
            }
            return Err(SecretsError::Exists(if existing.meta.deleted.is_some() {
                "You can't create this secret because a secret with this name is already scheduled for deletion.".into()
            } else {
                format!(
                    "The operation failed because the secret {} already exists.",
                    request.name
                )
            }));
        }
        let now = self.now();
        let mut record =
            SecretRecord::new(&request.name, self.new_arn(&namespace, &request.name), now);
        record.description = description;
        record.kms_key_id = request.kms_key_id.clone();
        record.tags = request.tags;
        let mut sealed = BTreeMap::new();
        let mut version_id = None;
        let mut stages = Vec::new();
        if let Some(value) = &request.value {
            let id = request
                .client_request_token
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            let (blob, key_arn) = self.seal(caller, &namespace, &record, &id, value).await?;
            record.add_version(
                &id,
                SecretVersion {
                    created: now,
                    stages: Default::default(),
                    binary: value.binary,
                    kms_key_arn: key_arn,
                },
                &[],
            )?;
            sealed.insert(SecretRecord::value_slot(&id), blob);
            stages = vec![CURRENT.to_owned()];
            version_id = Some(id);
        }
        match typed::create(
            self.store.as_ref(),
            &typed::key::<SecretRecord>(&namespace, &record.name),
            &record,
            sealed,
        )
        .await
        {
            Ok(_) => Ok(WriteOutcome {
                arn: record.arn,
                name: record.name,
                version_id,
                stages,
            }),
            Err(StoreError::AlreadyExists(_)) => Err(SecretsError::Exists(format!(
                "The operation failed because the secret {} already exists.",
                record.name
            ))),
            Err(other) => Err(other.into()),
        }
    }

    /// PutSecretValue, and the value half of UpdateSecret: a new version labelled `stages`
    /// (AWSCURRENT when empty). A retried token with the same value makes nothing new.
    pub async fn put_secret_value(
        &self,
        caller: &Caller,
        secret_id: &str,
        client_request_token: Option<String>,
        value: SecretValue,
        stages: Vec<String>,
    ) -> Result<WriteOutcome, SecretsError> {
        self.add_value(
            caller,
            secret_id,
            client_request_token,
            value,
            stages,
            "secretsmanager:PutSecretValue",
            None,
        )
        .await
    }

    #[allow(clippy::too_many_arguments)]
    async fn add_value(
        &self,
        caller: &Caller,
        secret_id: &str,
        client_request_token: Option<String>,
        value: SecretValue,
        stages: Vec<String>,
        action: &str,
        metadata: Option<(Option<String>, Option<String>)>,
    ) -> Result<WriteOutcome, SecretsError> {
        validate_value(&value)?;
        if let Some(token) = &client_request_token {
            validate_token(token)?;
        }
        for stage in &stages {
            if stage.is_empty() || stage.len() > 256 {
                return Err(SecretsError::InvalidParameter(
                    "Staging labels must be 1 to 256 characters.".into(),
                ));
            }
        }
        let found = self.live(caller, secret_id, action).await?;
        if super::rotation::is_rotation_job(caller) {
            super::rotation::check_rotation_job_write(
                &found.meta,
                client_request_token.as_deref(),
                &stages,
            )?;
        }
        let namespace = caller.namespace.clone();
        let version_id = client_request_token.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        if let Some(existing) = found.meta.versions.get(&version_id) {
            let stored = self.open(caller, &namespace, &found, &version_id).await?;
            if bool::from(stored.bytes.expose().ct_eq(value.bytes.expose()))
                && stored.binary == value.binary
            {
                return Ok(WriteOutcome {
                    arn: found.meta.arn.clone(),
                    name: found.meta.name.clone(),
                    version_id: Some(version_id),
                    stages: stages_of(existing),
                });
            }
            return Err(SecretsError::Exists(
                "You can't modify an existing version, you can only create a new version.".into(),
            ));
        }
        // The key named now (UpdateSecret may change it) seals the new version.
        let mut sealing_record = found.meta.clone();
        if let Some((_, Some(kms_key_id))) = &metadata {
            sealing_record.kms_key_id = Some(kms_key_id.clone());
        }
        let (blob, key_arn) = self
            .seal(caller, &namespace, &sealing_record, &version_id, &value)
            .await?;
        let now = self.now();
        let arn = found.meta.arn.clone();
        let key = typed::key::<SecretRecord>(&namespace, &found.meta.name);
        let mut outcome_stages = Vec::new();
        let _turn = self.write_turn(&namespace, &found.meta.name).await;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            let Some(current) = current else {
                return Err(SecretsError::NotFound(
                    "Secrets Manager can't find the specified secret.".into(),
                ));
            };
            if current.meta.arn != arn {
                return Err(SecretsError::NotFound(
                    "Secrets Manager can't find the specified secret.".into(),
                ));
            }
            refuse_planned_deletion(&current.meta)?;
            if current.meta.versions.contains_key(&version_id) {
                return Err(SecretsError::Exists(
                    "You can't modify an existing version, you can only create a new version."
                        .into(),
                ));
            }
            let mut meta = current.meta.clone();
            let mut sealed = current.sealed.clone();
            if let Some((description, kms_key_id)) = &metadata {
                if let Some(description) = description {
                    meta.description = description.clone();
                }
                if let Some(kms_key_id) = kms_key_id {
                    meta.kms_key_id = Some(kms_key_id.clone());
                }
            }
            let pruned = meta.add_version(
                &version_id,
                SecretVersion {
                    created: now,
                    stages: Default::default(),
                    binary: value.binary,
                    kms_key_arn: key_arn.clone(),
                },
                &stages,
            )?;
            for id in pruned {
                sealed.remove(&SecretRecord::value_slot(&id));
            }
            sealed.insert(SecretRecord::value_slot(&version_id), blob.clone());
            meta.last_changed = now;
            outcome_stages = meta
                .versions
                .get(&version_id)
                .map(stages_of)
                .unwrap_or_default();
            Ok(TypedChange::Put { meta, sealed })
        })
        .await?;
        Ok(WriteOutcome {
            arn,
            name: found.meta.name,
            version_id: Some(version_id),
            stages: outcome_stages,
        })
    }

    pub async fn get_secret_value(
        &self,
        caller: &Caller,
        secret_id: &str,
        version_id: Option<&str>,
        stage: Option<&str>,
    ) -> Result<VersionValue, SecretsError> {
        let found = self
            .live(caller, secret_id, "secretsmanager:GetSecretValue")
            .await?;
        let version_id = match (version_id, stage) {
            (Some(id), Some(stage)) => {
                let labelled = found
                    .meta
                    .versions
                    .get(id)
                    .is_some_and(|version| version.stages.contains(stage));
                if !labelled {
                    return Err(SecretsError::InvalidRequest(
                        "The VersionId and VersionStage you specified don't refer to the same version.".into(),
                    ));
                }
                id.to_owned()
            }
            (Some(id), None) => id.to_owned(),
            (None, stage) => {
                let stage = stage.unwrap_or(CURRENT);
                found
                    .meta
                    .version_with(stage)
                    .map(str::to_owned)
                    .ok_or_else(|| {
                        SecretsError::NotFound(format!(
                            "Secrets Manager can't find the specified secret value for staging label: {}",
                            crate::engine::text::truncate(stage)
                        ))
                    })?
            }
        };
        let namespace = self
            .home_namespace(caller, &found.meta)
            .unwrap_or_else(|| caller.namespace.clone());
        let value = self.open(caller, &namespace, &found, &version_id).await?;
        let version = found
            .meta
            .versions
            .get(&version_id)
            .ok_or_else(|| SecretsError::fault("reading a version", "the version vanished"))?;
        Ok(VersionValue {
            arn: found.meta.arn.clone(),
            name: found.meta.name.clone(),
            stages: stages_of(version),
            created: version.created,
            version_id,
            value,
        })
    }

    pub async fn describe_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<SecretDescription, SecretsError> {
        let found = self
            .authorized(caller, secret_id, "secretsmanager:DescribeSecret")
            .await?;
        Ok(describe(&found.meta))
    }

    pub async fn list_secrets(
        &self,
        caller: &Caller,
        request: ListSecretsRequest,
    ) -> Result<Page<SecretDescription>, SecretsError> {
        self.authorize_account(caller, "secretsmanager:ListSecrets")
            .await?;
        let descending = match request.sort_order.as_deref() {
            None | Some("desc") => true,
            Some("asc") => false,
            Some(_) => {
                return Err(SecretsError::InvalidParameter(
                    "SortOrder must be asc or desc.".into(),
                ));
            }
        };
        let mut entries = Vec::new();
        for (_, stored) in
            typed::list::<SecretRecord, _>(self.store.as_ref(), Some(&caller.namespace)).await?
        {
            let record = stored.meta;
            if record.deleted.is_some() && !request.include_planned_deletion {
                continue;
            }
            if !matches_filters(&record, &request.filters)? {
                continue;
            }
            // Sorted by creation date, then name; the page token is this sort key.
            let created = if descending {
                i64::MAX.saturating_sub(record.created)
            } else {
                record.created
            };
            entries.push((format!("{created:020}/{}", record.name), describe(&record)));
        }
        Ok(paginate(
            entries,
            request.max_results,
            request.next_token.as_deref(),
            LIST_LIMITS,
        )?)
    }

    pub async fn list_secret_version_ids(
        &self,
        caller: &Caller,
        secret_id: &str,
        include_deprecated: bool,
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<(SecretDescription, Page<VersionEntry>), SecretsError> {
        let found = self
            .authorized(caller, secret_id, "secretsmanager:ListSecretVersionIds")
            .await?;
        let versions = found
            .meta
            .versions
            .iter()
            .filter(|(_, version)| include_deprecated || !version.stages.is_empty())
            .map(|(id, version)| {
                (
                    id.clone(),
                    VersionEntry {
                        version_id: id.clone(),
                        stages: stages_of(version),
                        created: version.created,
                        kms_key_arn: version.kms_key_arn.clone(),
                    },
                )
            })
            .collect();
        let page = paginate(versions, max_results, next_token, VERSION_LIST_LIMITS)?;
        Ok((describe(&found.meta), page))
    }

    /// UpdateSecret: description and key change in place; a value makes a new AWSCURRENT
    /// version, sealed under the key named now.
    pub async fn update_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
        update: SecretUpdate,
    ) -> Result<WriteOutcome, SecretsError> {
        if let Some(description) = &update.description {
            validate_description(description)?;
        }
        if let Some(value) = update.value {
            return self
                .add_value(
                    caller,
                    secret_id,
                    update.client_request_token,
                    value,
                    Vec::new(),
                    "secretsmanager:UpdateSecret",
                    Some((update.description, update.kms_key_id)),
                )
                .await;
        }
        let found = self
            .live(caller, secret_id, "secretsmanager:UpdateSecret")
            .await?;
        if let Some(kms_key_id) = &update.kms_key_id {
            // The key must be usable now; existing versions stay under their key.
            let probe = SecretValue {
                bytes: crate::crypto::SecretBytes::from_slice(b"probe"),
                binary: false,
            };
            let mut probing = found.meta.clone();
            probing.kms_key_id = Some(kms_key_id.clone());
            self.seal(caller, &caller.namespace, &probing, "probe", &probe)
                .await?;
        }
        let now = self.now();
        self.change(caller, &found.meta, |meta| {
            if let Some(description) = &update.description {
                meta.description = description.clone();
            }
            if let Some(kms_key_id) = &update.kms_key_id {
                meta.kms_key_id = Some(kms_key_id.clone());
            }
            meta.last_changed = now;
            Ok(Vec::new())
        })
        .await?;
        Ok(WriteOutcome::of(&found.meta))
    }

    /// Reads, changes and writes back the metadata of the secret `record` was read from (not
    /// one re-created since under the same name); `edit` returns the versions it pruned.
    async fn change(
        &self,
        caller: &Caller,
        record: &SecretRecord,
        mut edit: impl FnMut(&mut SecretRecord) -> Result<Vec<String>, SecretsError>,
    ) -> Result<(), SecretsError> {
        let key = typed::key::<SecretRecord>(&caller.namespace, &record.name);
        let arn = record.arn.clone();
        let _turn = self.write_turn(&caller.namespace, &record.name).await;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            let Some(current) = current.filter(|current| current.meta.arn == arn) else {
                return Err(SecretsError::NotFound(
                    "Secrets Manager can't find the specified secret.".into(),
                ));
            };
            let mut meta = current.meta.clone();
            let mut sealed = current.sealed.clone();
            for pruned in edit(&mut meta)? {
                sealed.remove(&SecretRecord::value_slot(&pruned));
            }
            Ok(TypedChange::Put { meta, sealed })
        })
        .await?;
        Ok(())
    }

    pub async fn update_secret_version_stage(
        &self,
        caller: &Caller,
        secret_id: &str,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<WriteOutcome, SecretsError> {
        if stage.is_empty() || stage.len() > 256 {
            return Err(SecretsError::InvalidParameter(
                "VersionStage must be 1 to 256 characters.".into(),
            ));
        }
        let found = self
            .live(caller, secret_id, "secretsmanager:UpdateSecretVersionStage")
            .await?;
        let now = self.now();
        self.change(caller, &found.meta, |meta| {
            refuse_planned_deletion(meta)?;
            let pruned = meta.move_stage(stage, move_to, remove_from)?;
            meta.last_changed = now;
            Ok(pruned)
        })
        .await?;
        Ok(WriteOutcome::of(&found.meta))
    }

    /// DeleteSecret: schedules the purge after the recovery window (7 to 30 days, 30 by
    /// default), or purges at once with `force`. Returns the secret and its deletion date.
    pub async fn delete_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
        recovery_window_days: Option<i64>,
        force: bool,
    ) -> Result<(WriteOutcome, i64), SecretsError> {
        if force && recovery_window_days.is_some() {
            return Err(SecretsError::InvalidParameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."
                    .into(),
            ));
        }
        let days = recovery_window_days.unwrap_or(DEFAULT_RECOVERY_DAYS);
        if !(MIN_RECOVERY_DAYS..=MAX_RECOVERY_DAYS).contains(&days) {
            return Err(SecretsError::InvalidParameter(format!(
                "RecoveryWindowInDays must be between {MIN_RECOVERY_DAYS} and {MAX_RECOVERY_DAYS}."
            )));
        }
        let found = self
            .authorized(caller, secret_id, "secretsmanager:DeleteSecret")
            .await?;
        let outcome = WriteOutcome::of(&found.meta);
        let now = self.now();
        if force {
            self.purge(&caller.namespace, &found.meta.name, &found.meta.arn)
                .await?;
            return Ok((outcome, now));
        }
        if let Some(deleted) = found.meta.deleted {
            return Err(SecretsError::InvalidRequest(format!(
                "You can't delete secret {} because it's already scheduled for deletion (since {deleted}).",
                found.meta.name
            )));
        }
        let purge_after = now.saturating_add(days.saturating_mul(DAY));
        self.change(caller, &found.meta, |meta| {
            if meta.deleted.is_some() {
                return Err(SecretsError::InvalidRequest(
                    "The secret is already scheduled for deletion.".into(),
                ));
            }
            meta.deleted = Some(now);
            meta.purge_after = Some(purge_after);
            Ok(Vec::new())
        })
        .await?;
        self.schedule_changed.notify_one();
        Ok((outcome, purge_after))
    }

    /// Removes a secret, only the one with this ARN.
    async fn purge(&self, namespace: &str, name: &str, arn: &str) -> Result<(), SecretsError> {
        let key = typed::key::<SecretRecord>(namespace, name);
        let _turn = self.write_turn(namespace, name).await;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            Ok(match current {
                Some(current) if current.meta.arn == arn => TypedChange::Delete,
                _ => TypedChange::Keep,
            })
        })
        .await?;
        Ok(())
    }

    pub async fn restore_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<WriteOutcome, SecretsError> {
        let found = self
            .authorized(caller, secret_id, "secretsmanager:RestoreSecret")
            .await?;
        self.change(caller, &found.meta, |meta| {
            meta.deleted = None;
            meta.purge_after = None;
            Ok(Vec::new())
        })
        .await?;
        self.schedule_changed.notify_one();
        Ok(WriteOutcome::of(&found.meta))
    }

    pub async fn tag_resource(
        &self,
        caller: &Caller,
        secret_id: &str,
        tags: Vec<(String, String)>,
    ) -> Result<(), SecretsError> {
        validate_tags(&tags)?;
        let found = self
            .live(caller, secret_id, "secretsmanager:TagResource")
            .await?;
        self.change(caller, &found.meta, |meta| {
            for (key, value) in &tags {
                match meta.tags.iter_mut().find(|(existing, _)| existing == key) {
                    Some(existing) => existing.1 = value.clone(),
                    None => meta.tags.push((key.clone(), value.clone())),
                }
            }
            if meta.tags.len() > MAX_TAGS {
                return Err(SecretsError::LimitExceeded(format!(
                    "A secret can have at most {MAX_TAGS} tags."
                )));
            }
            Ok(Vec::new())
        })
        .await
    }

    pub async fn untag_resource(
        &self,
        caller: &Caller,
        secret_id: &str,
        keys: Vec<String>,
    ) -> Result<(), SecretsError> {
        let found = self
            .live(caller, secret_id, "secretsmanager:UntagResource")
            .await?;
        self.change(caller, &found.meta, |meta| {
            meta.tags.retain(|(key, _)| !keys.contains(key));
            Ok(Vec::new())
        })
        .await
    }

    pub async fn put_resource_policy(
        &self,
        caller: &Caller,
        secret_id: &str,
        policy: &str,
        block_public_policy: bool,
    ) -> Result<WriteOutcome, SecretsError> {
        let parsed = validate_policy(policy, block_public_policy)?;
        drop(parsed);
        let found = self
            .live(caller, secret_id, "secretsmanager:PutResourcePolicy")
            .await?;
        let text = policy.to_owned();
        self.change(caller, &found.meta, |meta| {
            meta.policy = Some(text.clone());
            Ok(Vec::new())
        })
        .await?;
        Ok(WriteOutcome::of(&found.meta))
    }

    pub async fn get_resource_policy(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<(WriteOutcome, Option<String>), SecretsError> {
        let found = self
            .authorized(caller, secret_id, "secretsmanager:GetResourcePolicy")
            .await?;
        Ok((WriteOutcome::of(&found.meta), found.meta.policy))
    }

    pub async fn delete_resource_policy(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<WriteOutcome, SecretsError> {
        let found = self
            .authorized(caller, secret_id, "secretsmanager:DeleteResourcePolicy")
            .await?;
        self.change(caller, &found.meta, |meta| {
            meta.policy = None;
            Ok(Vec::new())
        })
        .await?;
        Ok(WriteOutcome::of(&found.meta))
    }

    /// ValidateResourcePolicy: whether the policy parses (and, with `block_public_policy`,
    /// grants nobody outside the account). A malformed policy is an error, as in AWS.
    pub async fn validate_resource_policy(
        &self,
        caller: &Caller,
        secret_id: Option<&str>,
        policy: &str,
    ) -> Result<(), SecretsError> {
        match secret_id {
            Some(secret_id) => {
                self.authorized(caller, secret_id, "secretsmanager:ValidateResourcePolicy")
                    .await?;
            }
            None => {
                self.authorize_account(caller, "secretsmanager:ValidateResourcePolicy")
                    .await?;
            }
        }
        validate_policy(policy, true).map(|_| ())
    }

    /// BatchGetSecretValue: the current values of the secrets named, or of those the filters
    /// match; a secret that cannot be read is an entry in `errors`, not a failure of the call.
    pub async fn batch_get_secret_value(
        &self,
        caller: &Caller,
        secret_ids: Vec<String>,
        filters: Vec<ListFilter>,
        max_results: Option<i64>,
        next_token: Option<String>,
    ) -> Result<BatchOutcome, SecretsError> {
        let (ids, next_token) = match (secret_ids.is_empty(), filters.is_empty()) {
            (false, true) => {
                if secret_ids.len() > MAX_BATCH_IDS {
                    return Err(SecretsError::InvalidParameter(format!(
                        "SecretIdList can name at most {MAX_BATCH_IDS} secrets."
                    )));
                }
                if max_results.is_some() || next_token.is_some() {
                    return Err(SecretsError::InvalidParameter(
                        "MaxResults and NextToken go with Filters, not SecretIdList.".into(),
                    ));
                }
                (secret_ids, None)
            }
            (true, false) => {
                let page = self
                    .list_secrets(
                        caller,
                        ListSecretsRequest {
                            filters,
                            include_planned_deletion: false,
                            sort_order: Some("asc".into()),
                            max_results: Some(max_results.unwrap_or(BATCH_LIMITS.default)),
                            next_token,
                        },
                    )
                    .await?;
                if max_results.is_some_and(|max| !(1..=BATCH_LIMITS.max).contains(&max)) {
                    return Err(SecretsError::InvalidParameter(format!(
                        "MaxResults must be between 1 and {}.",
                        BATCH_LIMITS.max
                    )));
                }
                (
                    page.items.into_iter().map(|entry| entry.arn).collect(),
                    page.next_token,
                )
            }
            _ => {
                return Err(SecretsError::InvalidParameter(
                    "Name either SecretIdList or Filters, not both.".into(),
                ));
            }
        };
        let mut values = Vec::new();
        let mut errors = Vec::new();
        for secret_id in ids {
            match self.get_secret_value(caller, &secret_id, None, None).await {
                Ok(value) => values.push(value),
                Err(err @ SecretsError::Internal(_)) => return Err(err),
                Err(err) => errors.push(BatchError {
                    secret_id,
                    error_code: crate::engine::ServiceError::aws_code(&err),
                    message: err.to_string(),
                }),
            }
        }
        Ok(BatchOutcome {
            values,
            errors,
            next_token,
        })
    }
}

/// Parses a resource policy; with `block_public_policy`, refuses one that lets anyone in.
pub(super) fn validate_policy(
    policy: &str,
    block_public_policy: bool,
) -> Result<SecretPolicy, SecretsError> {
    if policy.is_empty() || policy.len() > 20_480 {
        return Err(SecretsError::InvalidParameter(
            "ResourcePolicy must be between 1 and 20480 characters.".into(),
        ));
    }
    let parsed = SecretPolicy::parse(policy)?;
    if block_public_policy && parsed.allows_anyone() {
        return Err(SecretsError::PublicPolicy(
            "This resource policy contains a statement that grants public access.".into(),
        ));
    }
    Ok(parsed)
}
