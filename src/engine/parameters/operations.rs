//! Parameter Store's operations, as the engine does them.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::filters::{self, Listing, StringFilter};
use super::model::{ParameterRecord, ParameterType, ParameterVersion, Tier};
use super::policies::{self, StoredPolicy};
use super::{
    Located, MAX_ADVANCED_VALUE_LEN, MAX_STANDARD_PARAMETERS, MAX_STANDARD_VALUE_LEN, Parameters,
    ParametersError, reserved, validate_name,
};
use crate::crypto::SecretBytes;
use crate::engine::Caller;
use crate::engine::paging::{Page, PageLimits, paginate};
use crate::store::typed::{self, Typed, TypedChange};
use crate::store::{MAX_CONFLICT_RETRIES, RecordKind, StoreError};

/// The key a SecureString is sealed under when none is named.
pub(super) const DEFAULT_KEY_ALIAS: &str = "alias/aws/ssm";
const MAX_DESCRIPTION_LEN: usize = 1024;
const MAX_PATTERN_LEN: usize = 1024;
const MAX_KEY_ID_LEN: usize = 2048;
/// Memory a compiled AllowedPattern may take: patterns are the caller's, so bounded.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;
const MAX_TAGS: usize = 50;
/// Names GetParameters and DeleteParameters take at once.
const MAX_NAMES: usize = 10;
/// Labels one LabelParameterVersion or UnlabelParameterVersion call takes.
const MAX_LABELS_PER_CALL: usize = 10;
const BY_PATH_LIMITS: PageLimits = PageLimits {
    max: 10,
    default: 10,
};
const DESCRIBE_LIMITS: PageLimits = PageLimits {
    max: 50,
    default: 50,
};
const HISTORY_LIMITS: PageLimits = PageLimits {
    max: 50,
    default: 50,
};

/// PutParameter's request.
#[derive(Debug, Default)]
pub struct PutParameterRequest {
    pub name: String,
    pub value: SecretBytes,
    pub type_: Option<String>,
    pub key_id: Option<String>,
    pub overwrite: bool,
    pub allowed_pattern: Option<String>,
    pub tier: Option<String>,
    pub policies: Option<String>,
    pub data_type: Option<String>,
    pub description: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// PutParameter's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PutOutcome {
    pub arn: String,
    pub version: u64,
    pub tier: Tier,
}

/// A parameter's value as GetParameter, GetParameters and GetParametersByPath answer it: the
/// plaintext, or for a SecureString read without decryption, the base64 of its ciphertext.
#[derive(Debug)]
pub struct ParameterValue {
    pub name: String,
    pub type_: ParameterType,
    pub value: SecretBytes,
    pub version: u64,
    /// `:VERSION` or `:LABEL`, when the name carried one.
    pub selector: Option<String>,
    pub modified: i64,
    pub arn: String,
    pub data_type: String,
}

/// GetParameters' answer.
#[derive(Debug, Default)]
pub struct GetOutcome {
    pub parameters: Vec<ParameterValue>,
    /// Names that were not found (or whose selector was), as given.
    pub invalid: Vec<String>,
}

/// A policy as DescribeParameters and GetParameterHistory show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyView {
    pub text: String,
    pub type_: &'static str,
    pub status: &'static str,
}

/// DescribeParameters' entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterDescription {
    pub name: String,
    pub arn: String,
    pub type_: ParameterType,
    pub key_id: Option<String>,
    pub modified: i64,
    pub modified_by: String,
    pub description: Option<String>,
    pub allowed_pattern: Option<String>,
    pub version: u64,
    pub tier: Tier,
    pub policies: Vec<PolicyView>,
    pub data_type: String,
}

/// GetParameterHistory's entry.
#[derive(Debug)]
pub struct HistoryEntry {
    pub name: String,
    pub type_: ParameterType,
    pub key_id: Option<String>,
    pub modified: i64,
    pub modified_by: String,
    pub description: Option<String>,
    pub value: SecretBytes,
    pub allowed_pattern: Option<String>,
    pub version: u64,
    pub labels: Vec<String>,
    pub tier: Tier,
    pub policies: Vec<PolicyView>,
    pub data_type: String,
}

/// DeleteParameters' answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeleteOutcome {
    pub deleted: Vec<String>,
    pub invalid: Vec<String>,
}

/// The tier PutParameter asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TierRequest {
    Standard,
    Advanced,
    IntelligentTiering,
}

/// PutParameter's request, checked: what [`plan`] needs, free of I/O.
struct PutInputs<'a> {
    type_: Option<ParameterType>,
    key_id: Option<String>,
    allowed_pattern: Option<String>,
    tier: Option<TierRequest>,
    policies: Option<Vec<StoredPolicy>>,
    data_type: Option<String>,
    description: Option<String>,
    tags: Vec<(String, String)>,
    value: &'a SecretBytes,
    principal: String,
    now: i64,
    /// The account holds as many Standard parameters as it may.
    standard_full: bool,
}

/// A write that found the parameter changed since it was planned: planned again.
enum WriteError {
    Stale,
    Failed(ParametersError),
}

impl From<StoreError> for WriteError {
    fn from(err: StoreError) -> Self {
        WriteError::Failed(err.into())
    }
}

fn validation(message: impl Into<String>) -> ParametersError {
    ParametersError::Validation(message.into())
}

fn not_found(name: &str) -> ParametersError {
    ParametersError::NotFound(format!(
        "Parameter {} not found.",
        crate::engine::text::truncate(name)
    ))
}

fn compile_pattern(pattern: &str) -> Result<regex::Regex, ParametersError> {
    if pattern.is_empty() || pattern.chars().count() > MAX_PATTERN_LEN {
        return Err(ParametersError::InvalidAllowedPattern(format!(
            "AllowedPattern must be 1 to {MAX_PATTERN_LEN} characters."
        )));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|_| {
            ParametersError::InvalidAllowedPattern(
                "The request does not meet the regular expression requirement.".into(),
            )
        })
}

fn validate_tags(tags: &[(String, String)]) -> Result<(), ParametersError> {
    for (key, value) in tags {
        let allowed = |c: char| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c);
        if key.is_empty()
            || key.chars().count() > 128
            || value.chars().count() > 256
            || !key.chars().all(allowed)
            || !value.chars().all(allowed)
        {
            return Err(validation(
                "Tag keys must be 1 to 128 characters and values at most 256, of letters, digits, spaces and _.:/=+-@.",
            ));
        }
        if key.to_ascii_lowercase().starts_with("aws:") {
            return Err(validation("Tag keys beginning with aws: are reserved."));
        }
    }
    Ok(())
}

/// Whether an AMI id looks like one: `ami-` and 8 or 17 hexadecimal digits.
fn looks_like_ami(value: &str) -> bool {
    value.strip_prefix("ami-").is_some_and(|id| {
        (id.len() == 8 || id.len() == 17) && id.chars().all(|c| c.is_ascii_hexdigit())
    })
}

/// The parameter as a Put leaves it, from what it was (if anything): its record with the new
/// version added, the version's number and the version pruned to make room.
fn plan(
    existing: Option<&ParameterRecord>,
    name: &str,
    inputs: &PutInputs<'_>,
) -> Result<(ParameterRecord, u64, Option<u64>), ParametersError> {
    let type_ = inputs
        .type_
        .or(existing.map(|record| record.type_))
        .ok_or_else(|| validation("A parameter type is required when you create a parameter."))?;
    if inputs.key_id.is_some() && type_ != ParameterType::SecureString {
        return Err(validation(
            "KeyId is supported only for SecureString parameters.",
        ));
    }
    let key_id = match type_ {
        ParameterType::SecureString => Some(
            inputs
                .key_id
                .clone()
                .or_else(|| existing.and_then(|record| record.key_id.clone()))
                .unwrap_or_else(|| DEFAULT_KEY_ALIAS.to_owned()),
        ),
        _ => None,
    };
    let text = std::str::from_utf8(inputs.value.expose())
        .map_err(|_| validation("The parameter value must be text."))?;
    let allowed_pattern = inputs
        .allowed_pattern
        .clone()
        .or_else(|| existing.and_then(|record| record.allowed_pattern.clone()));
    if let Some(pattern) = &allowed_pattern
        && !compile_pattern(pattern)?.is_match(text)
    {
        return Err(ParametersError::PatternMismatch(format!(
            "Parameter value, cannot be validated against allowedPattern: {}",
            crate::engine::text::truncate(pattern)
        )));
    }
    let data_type = inputs
        .data_type
        .clone()
        .or_else(|| existing.map(|record| record.data_type.clone()))
        .unwrap_or_else(|| "text".to_owned());
    if data_type == "aws:ec2:image" {
        if type_ != ParameterType::String {
            return Err(validation(
                "The data type aws:ec2:image is supported only for String parameters.",
            ));
        }
        if !looks_like_ami(text) {
            return Err(validation(
                "The parameter value is not a valid Amazon Machine Image (AMI) id.",
            ));
        }
    }
    let policies = match &inputs.policies {
        Some(policies) => policies.clone(),
        None => existing
            .map(|record| record.policies.clone())
            .unwrap_or_default(),
    };
    let value_len = inputs.value.len();
    let existing_tier = existing.map(|record| record.tier);
    let tier = match inputs.tier {
        Some(TierRequest::Standard) if existing_tier == Some(Tier::Advanced) => {
            return Err(validation(
                "This parameter uses the advanced-parameter tier. You can't downgrade a parameter from the advanced-parameter tier to the standard-parameter tier. If necessary, you can delete the advanced parameter and recreate it as a standard parameter.",
            ));
        }
        Some(TierRequest::Standard) => Tier::Standard,
        Some(TierRequest::Advanced) => Tier::Advanced,
        Some(TierRequest::IntelligentTiering) => {
            if existing_tier == Some(Tier::Advanced)
                || value_len > MAX_STANDARD_VALUE_LEN
                || !policies.is_empty()
                || (existing.is_none() && inputs.standard_full)
            {
                Tier::Advanced
            } else {
                Tier::Standard
            }
        }
        None => existing_tier.unwrap_or(Tier::Standard),
    };
    if tier == Tier::Standard && value_len > MAX_STANDARD_VALUE_LEN {
        return Err(validation(format!(
            "Standard tier parameters support a maximum parameter value of {MAX_STANDARD_VALUE_LEN} characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier."
        )));
    }
    if tier == Tier::Standard && !policies.is_empty() {
        return Err(validation(
            "Parameter policies are supported only for the advanced-parameter tier.",
        ));
    }
    if existing.is_none() && tier == Tier::Standard && inputs.standard_full {
        return Err(ParametersError::LimitExceeded);
    }
    let description = inputs
        .description
        .clone()
        .or_else(|| existing.and_then(|record| record.description.clone()));
    let mut record = match existing {
        Some(record) => record.clone(),
        None => ParameterRecord {
            name: name.to_owned(),
            type_,
            key_id: None,
            tier,
            data_type: data_type.clone(),
            allowed_pattern: None,
            description: None,
            tags: inputs.tags.clone(),
            policies: Vec::new(),
            version: 0,
            versions: BTreeMap::new(),
        },
    };
    record.type_ = type_;
    record.key_id.clone_from(&key_id);
    record.tier = tier;
    record.data_type.clone_from(&data_type);
    record.allowed_pattern.clone_from(&allowed_pattern);
    record.description.clone_from(&description);
    record.policies = policies;
    let (number, pruned) = record.push_version(ParameterVersion {
        type_,
        key_id,
        labels: Default::default(),
        modified: inputs.now,
        modified_by: inputs.principal.clone(),
        tier,
        data_type,
        description,
        allowed_pattern,
    })?;
    Ok((record, number, pruned))
}

impl Parameters {
    /// The record `located` names. A one-level name reached by ARN may have been written with
    /// a leading slash, which the ARN does not show.
    async fn find(
        &self,
        located: &Located,
    ) -> Result<Option<Typed<ParameterRecord>>, ParametersError> {
        if let Some(found) =
            typed::get::<ParameterRecord, _>(self.store.as_ref(), &located.namespace, &located.name)
                .await?
        {
            return Ok(Some(found));
        }
        if located.from_arn && !located.name.starts_with('/') {
            return Ok(typed::get::<ParameterRecord, _>(
                self.store.as_ref(),
                &located.namespace,
                &format!("/{}", located.name),
            )
            .await?);
        }
        Ok(None)
    }

    /// The parameter a Name names, once `caller` may do `action` on it. Access is decided
    /// before existence, so that a refusal tells nothing of what exists.
    async fn authorized(
        &self,
        caller: &Caller,
        name: &str,
        action: &str,
        selector_allowed: bool,
    ) -> Result<(Located, Typed<ParameterRecord>), ParametersError> {
        let located = self.locate(caller, name)?;
        if !selector_allowed && located.selector.is_some() {
            return Err(validation(
                "A version or label selector is not allowed here.",
            ));
        }
        self.authorize(caller, action, &self.arn(&located.namespace, &located.name))
            .await?;
        let found = self
            .find(&located)
            .await?
            .ok_or_else(|| not_found(&located.name))?;
        Ok((located, found))
    }

    /// The version a selector picks: a number, a label, or (without one) the latest.
    fn select(record: &ParameterRecord, selector: Option<&str>) -> Result<u64, ParametersError> {
        let missing = |what: &str| {
            ParametersError::VersionNotFound(format!(
                "Systems Manager could not find version {} of {}. Verify the version and try again.",
                crate::engine::text::truncate(what),
                record.name
            ))
        };
        match selector {
            None => Ok(record.version),
            Some(text) if text.bytes().all(|b| b.is_ascii_digit()) => text
                .parse::<u64>()
                .ok()
                .filter(|number| record.versions.contains_key(number))
                .ok_or_else(|| missing(text)),
            Some(label) => record
                .version_with_label(label)
                .ok_or_else(|| missing(label)),
        }
    }

    /// Version `version`'s value: opened (SecureString with decryption), its ciphertext in
    /// base64 (SecureString without), or its plain bytes.
    pub(super) async fn value_of(
        &self,
        caller: &Caller,
        namespace: &str,
        stored: &Typed<ParameterRecord>,
        version: u64,
        with_decryption: bool,
    ) -> Result<SecretBytes, ParametersError> {
        let entry = stored
            .meta
            .versions
            .get(&version)
            .ok_or_else(|| ParametersError::fault_at("a selected version is missing"))?;
        let slot = ParameterRecord::slot_of(version, entry.type_);
        let blob = stored
            .sealed
            .get(&slot)
            .ok_or_else(|| ParametersError::fault_at("a version has no value"))?;
        match entry.type_ {
            ParameterType::SecureString if with_decryption => {
                let arn = self.arn(namespace, &stored.meta.name);
                let binding = Self::value_binding(namespace, &stored.meta.name, &arn, version);
                self.kms
                    .open_value(caller, &binding, blob)
                    .await
                    .map_err(ParametersError::kms)
            }
            ParameterType::SecureString => Ok(SecretBytes::new(STANDARD.encode(blob).into_bytes())),
            _ => Ok(SecretBytes::from_slice(blob)),
        }
    }

    async fn parameter_value(
        &self,
        caller: &Caller,
        namespace: &str,
        stored: &Typed<ParameterRecord>,
        version: u64,
        selector: Option<String>,
        with_decryption: bool,
    ) -> Result<ParameterValue, ParametersError> {
        let value = self
            .value_of(caller, namespace, stored, version, with_decryption)
            .await?;
        let entry = stored
            .meta
            .versions
            .get(&version)
            .ok_or_else(|| ParametersError::fault_at("a selected version is missing"))?;
        Ok(ParameterValue {
            name: stored.meta.name.clone(),
            type_: entry.type_,
            value,
            version,
            selector: selector.map(|selector| format!(":{selector}")),
            modified: entry.modified,
            arn: self.arn(namespace, &stored.meta.name),
            data_type: entry.data_type.clone(),
        })
    }

    /// Standard parameters in `namespace`, counted from the records' metadata as stored.
    pub(super) async fn standard_count(&self, namespace: &str) -> Result<usize, ParametersError> {
        Ok(self
            .store
            .list(RecordKind::Parameter, Some(namespace))
            .await?
            .iter()
            .filter(|(_, record)| {
                record
                    .value
                    .meta
                    .get("tier")
                    .and_then(serde_json::Value::as_str)
                    == Some(Tier::Standard.as_str())
            })
            .count())
    }

    pub async fn put_parameter(
        &self,
        caller: &Caller,
        request: PutParameterRequest,
    ) -> Result<PutOutcome, ParametersError> {
        let located = self.locate(caller, &request.name)?;
        if located.selector.is_some() {
            return Err(super::invalid_name());
        }
        if request.value.is_empty() {
            return Err(validation(
                "1 validation error detected: Value at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1.",
            ));
        }
        if request.value.len() > MAX_ADVANCED_VALUE_LEN {
            return Err(validation(format!(
                "1 validation error detected: Value at 'value' failed to satisfy constraint: Member must have length less than or equal to {MAX_ADVANCED_VALUE_LEN}."
            )));
        }
        if request.overwrite && !request.tags.is_empty() {
            return Err(validation(
                "Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.",
            ));
        }
        validate_tags(&request.tags)?;
        if request.tags.len() > MAX_TAGS {
            return Err(validation(format!(
                "A parameter can have at most {MAX_TAGS} tags."
            )));
        }
        if request
            .description
            .as_ref()
            .is_some_and(|description| description.chars().count() > MAX_DESCRIPTION_LEN)
        {
            return Err(validation(format!(
                "Description must be at most {MAX_DESCRIPTION_LEN} characters."
            )));
        }
        let type_ = request
            .type_
            .as_deref()
            .map(|text| {
                ParameterType::parse(text).ok_or_else(|| {
                    ParametersError::UnsupportedParameterType(format!(
                        "The parameter type {} is not supported. Use String, StringList or SecureString.",
                        crate::engine::text::truncate(text)
                    ))
                })
            })
            .transpose()?;
        let tier = request
            .tier
            .as_deref()
            .map(|text| match text {
                "Standard" => Ok(TierRequest::Standard),
                "Advanced" => Ok(TierRequest::Advanced),
                "Intelligent-Tiering" => Ok(TierRequest::IntelligentTiering),
                _ => Err(validation(
                    "1 validation error detected: Value at 'tier' failed to satisfy constraint: Member must satisfy enum value set: [Advanced, Intelligent-Tiering, Standard]",
                )),
            })
            .transpose()?;
        if let Some(data_type) = &request.data_type
            && !["text", "aws:ec2:image"].contains(&data_type.as_str())
        {
            return Err(validation(format!(
                "The following data type is not supported: {} (Data type names are all lowercase.)",
                crate::engine::text::truncate(data_type)
            )));
        }
        if let Some(pattern) = &request.allowed_pattern {
            compile_pattern(pattern)?;
        }
        if let Some(key_id) = &request.key_id
            && (key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN)
        {
            return Err(ParametersError::InvalidKeyId(format!(
                "KeyId must be 1 to {MAX_KEY_ID_LEN} characters."
            )));
        }
        let now = self.now();
        let policies = request
            .policies
            .as_deref()
            .map(|text| policies::parse(text, now))
            .transpose()?;
        let Located {
            namespace, name, ..
        } = located;
        let arn = self.arn(&namespace, &name);
        self.authorize(caller, "ssm:PutParameter", &arn).await?;

        let mut inputs = PutInputs {
            type_,
            key_id: request.key_id,
            allowed_pattern: request.allowed_pattern,
            tier,
            policies,
            data_type: request.data_type,
            description: request.description,
            tags: request.tags,
            value: &request.value,
            principal: caller.principal.arn.clone(),
            now,
            standard_full: false,
        };
        let key = typed::key::<ParameterRecord>(&namespace, &name);
        let _turn = self.write_turn(&namespace, &name).await;
        for _ in 0..MAX_CONFLICT_RETRIES {
            let existing =
                typed::get::<ParameterRecord, _>(self.store.as_ref(), &namespace, &name).await?;
            if existing.is_some() && !request.overwrite {
                return Err(ParametersError::AlreadyExists);
            }
            let existing_version = existing.as_ref().map(|found| found.meta.version);
            inputs.standard_full = existing.is_none()
                && inputs.tier != Some(TierRequest::Advanced)
                && self.standard_count(&namespace).await? >= MAX_STANDARD_PARAMETERS;
            let (planned, number, _) =
                plan(existing.as_ref().map(|found| &found.meta), &name, &inputs)?;
            let type_ = planned.type_;
            let bytes = match type_ {
                ParameterType::SecureString => {
                    let binding = Self::value_binding(&namespace, &name, &arn, number);
                    let key_ref = planned
                        .key_id
                        .as_deref()
                        .filter(|key_id| *key_id != DEFAULT_KEY_ALIAS);
                    self.kms
                        .seal_value(caller, key_ref, &binding, request.value.expose())
                        .await
                        .map_err(ParametersError::kms)?
                        .0
                }
                _ => request.value.expose().to_vec(),
            };
            let written = typed::modify::<ParameterRecord, _, _, WriteError>(
                self.store.as_ref(),
                &key,
                |current| {
                    if current.map(|current| current.meta.version) != existing_version {
                        return Err(WriteError::Stale);
                    }
                    let (meta, again, pruned) =
                        plan(current.map(|current| &current.meta), &name, &inputs)
                            .map_err(WriteError::Failed)?;
                    if again != number || meta.type_ != type_ {
                        return Err(WriteError::Stale);
                    }
                    let mut sealed = current
                        .map(|current| current.sealed.clone())
                        .unwrap_or_default();
                    if let Some(pruned) = pruned {
                        sealed.remove(&ParameterRecord::sealed_slot(pruned));
                        sealed.remove(&ParameterRecord::plain_slot(pruned));
                    }
                    sealed.insert(ParameterRecord::slot_of(number, type_), bytes.clone());
                    Ok(TypedChange::Put { meta, sealed })
                },
            )
            .await;
            match written {
                Ok(_) => {
                    if !planned.policies.is_empty() || existing.is_some() {
                        self.schedule_changed.notify_one();
                    }
                    return Ok(PutOutcome {
                        arn,
                        version: number,
                        tier: planned.tier,
                    });
                }
                Err(WriteError::Stale) => continue,
                Err(WriteError::Failed(err)) => return Err(err),
            }
        }
        Err(ParametersError::Busy(
            "Too many changes to this parameter at once; try again.".into(),
        ))
    }

    pub async fn get_parameter(
        &self,
        caller: &Caller,
        name: &str,
        with_decryption: bool,
    ) -> Result<ParameterValue, ParametersError> {
        let (located, found) = self
            .authorized(caller, name, "ssm:GetParameter", true)
            .await?;
        let version = Self::select(&found.meta, located.selector.as_deref())?;
        self.parameter_value(
            caller,
            &located.namespace,
            &found,
            version,
            located.selector,
            with_decryption,
        )
        .await
    }

    /// GetParameters: names that are not found (or whose version or label is not) are listed
    /// as invalid rather than failing the call; a name the caller may not read fails it.
    pub async fn get_parameters(
        &self,
        caller: &Caller,
        names: &[String],
        with_decryption: bool,
    ) -> Result<GetOutcome, ParametersError> {
        if names.is_empty() || names.len() > MAX_NAMES {
            return Err(validation(format!(
                "1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length between 1 and {MAX_NAMES}."
            )));
        }
        let mut unique: Vec<&String> = Vec::new();
        for name in names {
            if !unique.contains(&name) {
                unique.push(name);
            }
        }
        let mut located = Vec::with_capacity(unique.len());
        let mut outcome = GetOutcome::default();
        for name in unique {
            match self.locate(caller, name) {
                Ok(found) => {
                    self.authorize(
                        caller,
                        "ssm:GetParameters",
                        &self.arn(&found.namespace, &found.name),
                    )
                    .await?;
                    located.push((name, found));
                }
                Err(ParametersError::Validation(_) | ParametersError::NotFound(_)) => {
                    outcome.invalid.push(name.clone());
                }
                Err(other) => return Err(other),
            }
        }
        for (name, located) in located {
            let Some(found) = self.find(&located).await? else {
                outcome.invalid.push(name.clone());
                continue;
            };
            let version = match Self::select(&found.meta, located.selector.as_deref()) {
                Ok(version) => version,
                Err(ParametersError::VersionNotFound(_)) => {
                    outcome.invalid.push(name.clone());
                    continue;
                }
                Err(other) => return Err(other),
            };
            outcome.parameters.push(
                self.parameter_value(
                    caller,
                    &located.namespace,
                    &found,
                    version,
                    located.selector,
                    with_decryption,
                )
                .await?,
            );
        }
        Ok(outcome)
    }

    /// GetParametersByPath: the parameters under `path` that the caller may read, a page at a
    /// time. Those it may not are left out without a trace.
    #[allow(clippy::too_many_arguments)]
    pub async fn get_parameters_by_path(
        &self,
        caller: &Caller,
        path: &str,
        recursive: bool,
        parameter_filters: &[StringFilter],
        with_decryption: bool,
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Page<ParameterValue>, ParametersError> {
        let trimmed = path.trim_end_matches('/');
        if !path.starts_with('/')
            || path.len() > super::MAX_NAME_INPUT_LEN
            || (!trimmed.is_empty() && !reserved(trimmed) && validate_name(trimmed).is_err())
        {
            return Err(validation(
                "The parameter doesn't meet the parameter name requirements. The parameter name must begin with a forward slash \"/\". It can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). It must use only letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore). Special characters are not allowed. All sub-paths, if specified, must use the forward slash symbol \"/\". Valid example: /get/parameters2-/by1./path0_.",
            ));
        }
        let filters = filters::compile(parameter_filters, Listing::ByPath)?;
        let labels = filters::label_values(&filters);
        let namespace = caller.namespace.clone();
        // Read in name order from where the token says, and stop at a page and one more: the
        // cost of a page is that page, not every parameter the caller may read.
        let (limit, after) =
            crate::engine::paging::resume_after(max_results, next_token, BY_PATH_LIMITS)?;
        let mut candidates = Vec::new();
        if !reserved(trimmed) {
            let mut listed =
                typed::list::<ParameterRecord, _>(self.store.as_ref(), Some(&namespace)).await?;
            listed.sort_by(|(a, _), (b, _)| a.name.cmp(&b.name));
            for (_, stored) in listed {
                if candidates.len() > limit {
                    break;
                }
                if after
                    .as_deref()
                    .is_some_and(|after| stored.meta.name.as_str() <= after)
                    || !filters::under_path(&stored.meta.name, path, !recursive)
                    || !filters.iter().all(|filter| filter.matches(&stored.meta))
                {
                    continue;
                }
                let arn = self.arn(&namespace, &stored.meta.name);
                if !self.allowed(caller, "ssm:GetParametersByPath", &arn).await {
                    continue;
                }
                let version = match labels {
                    Some(labels) => labels
                        .iter()
                        .find_map(|label| stored.meta.version_with_label(label)),
                    None => Some(stored.meta.version),
                };
                if let Some(version) = version {
                    candidates.push((stored.meta.name.clone(), (stored, version)));
                }
            }
        }
        let page = paginate(candidates, max_results, next_token, BY_PATH_LIMITS)?;
        let mut items = Vec::with_capacity(page.items.len());
        for (stored, version) in page.items {
            items.push(
                self.parameter_value(caller, &namespace, &stored, version, None, with_decryption)
                    .await?,
            );
        }
        Ok(Page {
            items,
            next_token: page.next_token,
        })
    }

    /// Removes the parameter `located` names, only as it was read.
    async fn remove(&self, located: &Located) -> Result<(), ParametersError> {
        let name = match self.find(located).await? {
            Some(found) => found.meta.name,
            None => return Err(not_found(&located.name)),
        };
        let key = typed::key::<ParameterRecord>(&located.namespace, &name);
        let _turn = self.write_turn(&located.namespace, &name).await;
        let mut gone = false;
        typed::modify::<ParameterRecord, _, _, ParametersError>(
            self.store.as_ref(),
            &key,
            |current| {
                gone = current.is_none();
                Ok(match current {
                    Some(_) => TypedChange::Delete,
                    None => TypedChange::Keep,
                })
            },
        )
        .await?;
        if gone {
            return Err(not_found(&located.name));
        }
        self.schedule_changed.notify_one();
        Ok(())
    }

    pub async fn delete_parameter(
        &self,
        caller: &Caller,
        name: &str,
    ) -> Result<String, ParametersError> {
        let located = self.locate(caller, name)?;
        if located.selector.is_some() {
            return Err(validation(
                "A version or label selector is not allowed here.",
            ));
        }
        let arn = self.arn(&located.namespace, &located.name);
        self.authorize(caller, "ssm:DeleteParameter", &arn).await?;
        self.remove(&located).await?;
        Ok(arn)
    }

    /// DeleteParameters: names not found are listed as invalid; a name the caller may not
    /// delete fails the call before anything is deleted.
    pub async fn delete_parameters(
        &self,
        caller: &Caller,
        names: &[String],
    ) -> Result<DeleteOutcome, ParametersError> {
        if names.is_empty() || names.len() > MAX_NAMES {
            return Err(validation(format!(
                "1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length between 1 and {MAX_NAMES}."
            )));
        }
        let mut outcome = DeleteOutcome::default();
        let mut located = Vec::new();
        for name in names {
            if outcome.invalid.contains(name) || located.iter().any(|(seen, _)| *seen == name) {
                continue;
            }
            match self.locate(caller, name) {
                Ok(found) if found.selector.is_none() => {
                    self.authorize(
                        caller,
                        "ssm:DeleteParameters",
                        &self.arn(&found.namespace, &found.name),
                    )
                    .await?;
                    located.push((name, found));
                }
                Ok(_) | Err(ParametersError::Validation(_) | ParametersError::NotFound(_)) => {
                    outcome.invalid.push(name.clone());
                }
                Err(other) => return Err(other),
            }
        }
        for (name, found) in located {
            match self.remove(&found).await {
                Ok(()) => outcome.deleted.push(name.clone()),
                Err(ParametersError::NotFound(_)) => outcome.invalid.push(name.clone()),
                Err(other) => return Err(other),
            }
        }
        Ok(outcome)
    }

    fn policy_views(record: &ParameterRecord) -> Vec<PolicyView> {
        record
            .policies
            .iter()
            .map(|policy| PolicyView {
                text: policy.text.clone(),
                type_: policy.kind.aws_name(),
                status: record.policy_status(policy),
            })
            .collect()
    }

    fn describe(&self, namespace: &str, record: &ParameterRecord) -> ParameterDescription {
        let latest = record.latest();
        ParameterDescription {
            name: record.name.clone(),
            arn: self.arn(namespace, &record.name),
            type_: record.type_,
            key_id: record.key_id.clone(),
            modified: latest.map_or(0, |latest| latest.modified),
            modified_by: latest
                .map(|latest| latest.modified_by.clone())
                .unwrap_or_default(),
            description: record.description.clone(),
            allowed_pattern: record.allowed_pattern.clone(),
            version: record.version,
            tier: record.tier,
            policies: Self::policy_views(record),
            data_type: record.data_type.clone(),
        }
    }

    /// DescribeParameters: the parameters the filters match and the caller may describe.
    /// Filters (the older form) and ParameterFilters are not taken together.
    pub async fn describe_parameters(
        &self,
        caller: &Caller,
        legacy_filters: &[StringFilter],
        parameter_filters: &[StringFilter],
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<Page<ParameterDescription>, ParametersError> {
        if !legacy_filters.is_empty() && !parameter_filters.is_empty() {
            return Err(validation(
                "You can use either Filters or ParameterFilters in a single request, not both.",
            ));
        }
        let requested = if legacy_filters.is_empty() {
            parameter_filters.to_vec()
        } else {
            filters::from_legacy(legacy_filters)?
        };
        let filters = filters::compile(&requested, Listing::Describe)?;
        let namespace = caller.namespace.clone();
        let mut candidates = Vec::new();
        for (_, stored) in
            typed::list::<ParameterRecord, _>(self.store.as_ref(), Some(&namespace)).await?
        {
            if !filters.iter().all(|filter| filter.matches(&stored.meta)) {
                continue;
            }
            let arn = self.arn(&namespace, &stored.meta.name);
            if !self.allowed(caller, "ssm:DescribeParameters", &arn).await {
                continue;
            }
            candidates.push((
                stored.meta.name.clone(),
                self.describe(&namespace, &stored.meta),
            ));
        }
        Ok(paginate(
            candidates,
            max_results,
            next_token,
            DESCRIBE_LIMITS,
        )?)
    }

    /// GetParameterHistory: every kept version, oldest first, a page at a time.
    pub async fn get_parameter_history(
        &self,
        caller: &Caller,
        name: &str,
        with_decryption: bool,
        max_results: Option<i64>,
        next_token: Option<&str>,
    ) -> Result<(String, Page<HistoryEntry>), ParametersError> {
        let (located, found) = self
            .authorized(caller, name, "ssm:GetParameterHistory", false)
            .await?;
        let versions: Vec<(String, u64)> = found
            .meta
            .versions
            .keys()
            .map(|number| (format!("{number:020}"), *number))
            .collect();
        let page = paginate(versions, max_results, next_token, HISTORY_LIMITS)?;
        let policies = Self::policy_views(&found.meta);
        let mut items = Vec::with_capacity(page.items.len());
        for number in page.items {
            let value = self
                .value_of(caller, &located.namespace, &found, number, with_decryption)
                .await?;
            let Some(version) = found.meta.versions.get(&number) else {
                continue;
            };
            items.push(HistoryEntry {
                name: found.meta.name.clone(),
                type_: version.type_,
                key_id: version.key_id.clone(),
                modified: version.modified,
                modified_by: version.modified_by.clone(),
                description: version.description.clone(),
                value,
                allowed_pattern: version.allowed_pattern.clone(),
                version: number,
                labels: version.labels.iter().cloned().collect(),
                tier: version.tier,
                policies: if number == found.meta.version {
                    policies.clone()
                } else {
                    Vec::new()
                },
                data_type: version.data_type.clone(),
            });
        }
        Ok((
            self.arn(&located.namespace, &found.meta.name),
            Page {
                items,
                next_token: page.next_token,
            },
        ))
    }

    /// Reads, changes and writes back the metadata of the parameter `located` names.
    async fn change<T>(
        &self,
        located: &Located,
        name: &str,
        mut edit: impl FnMut(&mut ParameterRecord) -> Result<T, ParametersError>,
    ) -> Result<T, ParametersError> {
        let key = typed::key::<ParameterRecord>(&located.namespace, name);
        let _turn = self.write_turn(&located.namespace, name).await;
        let mut answer = None;
        typed::modify::<ParameterRecord, _, _, ParametersError>(
            self.store.as_ref(),
            &key,
            |current| {
                let Some(current) = current else {
                    return Err(not_found(&located.name));
                };
                let mut meta = current.meta.clone();
                answer = Some(edit(&mut meta)?);
                Ok(TypedChange::Put {
                    meta,
                    sealed: current.sealed.clone(),
                })
            },
        )
        .await?;
        answer.ok_or_else(|| ParametersError::fault_at("a change answered nothing"))
    }

    fn check_labels(labels: &[String]) -> Result<(), ParametersError> {
        if labels.is_empty() || labels.len() > MAX_LABELS_PER_CALL {
            return Err(validation(format!(
                "1 validation error detected: Value at 'labels' failed to satisfy constraint: Member must have length between 1 and {MAX_LABELS_PER_CALL}."
            )));
        }
        Ok(())
    }

    /// LabelParameterVersion: returns the labels refused as invalid and the version labelled
    /// (the latest when none is named).
    pub async fn label_parameter_version(
        &self,
        caller: &Caller,
        name: &str,
        version: Option<u64>,
        labels: &[String],
    ) -> Result<(Vec<String>, u64), ParametersError> {
        Self::check_labels(labels)?;
        let (located, found) = self
            .authorized(caller, name, "ssm:LabelParameterVersion", false)
            .await?;
        self.change(&located, &found.meta.name, |meta| {
            let version = version.unwrap_or(meta.version);
            let invalid = meta.label(version, labels)?;
            Ok((invalid, version))
        })
        .await
    }

    /// UnlabelParameterVersion: returns the labels removed and those that were not on it.
    pub async fn unlabel_parameter_version(
        &self,
        caller: &Caller,
        name: &str,
        version: u64,
        labels: &[String],
    ) -> Result<(Vec<String>, Vec<String>), ParametersError> {
        Self::check_labels(labels)?;
        let (located, found) = self
            .authorized(caller, name, "ssm:UnlabelParameterVersion", false)
            .await?;
        self.change(&located, &found.meta.name, |meta| {
            Ok(meta.unlabel(version, labels)?)
        })
        .await
    }

    /// The parameter a tagging call names: ResourceType `Parameter`, ResourceId its name.
    async fn tagged(
        &self,
        caller: &Caller,
        resource_type: &str,
        resource_id: &str,
        action: &str,
    ) -> Result<(Located, Typed<ParameterRecord>), ParametersError> {
        if resource_type != "Parameter" {
            return Err(ParametersError::InvalidResourceType);
        }
        match self.authorized(caller, resource_id, action, false).await {
            Err(
                ParametersError::NotFound(_)
                | ParametersError::Validation(_)
                | ParametersError::HierarchyLevelLimitExceeded(_),
            ) => Err(ParametersError::InvalidResourceId),
            other => other,
        }
    }

    pub async fn add_tags_to_resource(
        &self,
        caller: &Caller,
        resource_type: &str,
        resource_id: &str,
        tags: Vec<(String, String)>,
    ) -> Result<String, ParametersError> {
        validate_tags(&tags)?;
        let (located, found) = self
            .tagged(caller, resource_type, resource_id, "ssm:AddTagsToResource")
            .await?;
        self.change(&located, &found.meta.name, |meta| {
            for (key, value) in &tags {
                match meta.tags.iter_mut().find(|(existing, _)| existing == key) {
                    Some(existing) => existing.1.clone_from(value),
                    None => meta.tags.push((key.clone(), value.clone())),
                }
            }
            if meta.tags.len() > MAX_TAGS {
                return Err(ParametersError::TooManyTags(format!(
                    "A parameter can have at most {MAX_TAGS} tags."
                )));
            }
            Ok(())
        })
        .await?;
        Ok(self.arn(&located.namespace, &found.meta.name))
    }

    pub async fn remove_tags_from_resource(
        &self,
        caller: &Caller,
        resource_type: &str,
        resource_id: &str,
        keys: &[String],
    ) -> Result<String, ParametersError> {
        let (located, found) = self
            .tagged(
                caller,
                resource_type,
                resource_id,
                "ssm:RemoveTagsFromResource",
            )
            .await?;
        self.change(&located, &found.meta.name, |meta| {
            meta.tags.retain(|(key, _)| !keys.contains(key));
            Ok(())
        })
        .await?;
        Ok(self.arn(&located.namespace, &found.meta.name))
    }

    pub async fn list_tags_for_resource(
        &self,
        caller: &Caller,
        resource_type: &str,
        resource_id: &str,
    ) -> Result<(String, Vec<(String, String)>), ParametersError> {
        let (located, found) = self
            .tagged(
                caller,
                resource_type,
                resource_id,
                "ssm:ListTagsForResource",
            )
            .await?;
        Ok((
            self.arn(&located.namespace, &found.meta.name),
            found.meta.tags,
        ))
    }
}
