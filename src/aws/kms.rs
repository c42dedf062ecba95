//! KMS on the wire (`TrentService.*`): one input shape, one handler and one output shape per
//! operation, and the table that lists them ([`JsonService`] for [`Kms`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ops::{JsonService, Operation};
use super::wire::{self, Blob, Empty, SecretBlob};
use super::{AwsError, CallFacts};
use crate::aws_operation;
use crate::crypto::SecretBytes;
use crate::engine::Caller;
use crate::engine::kms::{
    CreateKeyRequest, DataKeySize, KeyListEntry, KeyMetadata, Kms, KmsError, RotationStatus,
};

impl From<KmsError> for AwsError {
    fn from(err: KmsError) -> Self {
        AwsError::from_service(&err)
    }
}

impl JsonService for Kms {
    const TARGET_PREFIX: &'static str = "TrentService";
    const SIGNING_NAME: &'static str = "kms";

    fn operations() -> &'static [Operation<Self>] {
        OPERATIONS
    }
}

/// Every KMS operation Coffer serves, sorted by target.
static OPERATIONS: &[Operation<Kms>] = &[
    aws_operation!("TrentService.CancelKeyDeletion", cancel_key_deletion),
    aws_operation!("TrentService.CreateAlias", create_alias),
    aws_operation!("TrentService.CreateKey", create_key),
    aws_operation!("TrentService.Decrypt", decrypt),
    aws_operation!("TrentService.DeleteAlias", delete_alias),
    aws_operation!(
        "TrentService.DeleteImportedKeyMaterial",
        delete_imported_key_material
    ),
    aws_operation!("TrentService.DescribeKey", describe_key),
    aws_operation!("TrentService.DisableKey", disable_key),
    aws_operation!("TrentService.DisableKeyRotation", disable_key_rotation),
    aws_operation!("TrentService.EnableKey", enable_key),
    aws_operation!("TrentService.EnableKeyRotation", enable_key_rotation),
    aws_operation!("TrentService.Encrypt", encrypt),
    aws_operation!("TrentService.GenerateDataKey", generate_data_key),
    aws_operation!("TrentService.GenerateDataKeyPair", generate_data_key_pair),
    aws_operation!(
        "TrentService.GenerateDataKeyPairWithoutPlaintext",
        generate_data_key_pair_without_plaintext
    ),
    aws_operation!(
        "TrentService.GenerateDataKeyWithoutPlaintext",
        generate_data_key_without_plaintext
    ),
    aws_operation!("TrentService.GenerateRandom", generate_random),
    aws_operation!("TrentService.GetKeyPolicy", get_key_policy),
    aws_operation!("TrentService.GetKeyRotationStatus", get_key_rotation_status),
    aws_operation!(
        "TrentService.GetParametersForImport",
        get_parameters_for_import
    ),
    aws_operation!("TrentService.GetPublicKey", get_public_key),
    aws_operation!("TrentService.ImportKeyMaterial", import_key_material),
    aws_operation!("TrentService.ListAliases", list_aliases),
    aws_operation!("TrentService.ListKeyPolicies", list_key_policies),
    aws_operation!("TrentService.ListKeyRotations", list_key_rotations),
    aws_operation!("TrentService.ListKeys", list_keys),
    aws_operation!("TrentService.ListResourceTags", list_resource_tags),
    aws_operation!("TrentService.PutKeyPolicy", put_key_policy),
    aws_operation!("TrentService.ReEncrypt", re_encrypt),
    aws_operation!("TrentService.RotateKeyOnDemand", rotate_key_on_demand),
    aws_operation!("TrentService.ScheduleKeyDeletion", schedule_key_deletion),
    aws_operation!("TrentService.Sign", sign),
    aws_operation!("TrentService.TagResource", tag_resource),
    aws_operation!("TrentService.UntagResource", untag_resource),
    aws_operation!("TrentService.UpdateAlias", update_alias),
    aws_operation!("TrentService.UpdateKeyDescription", update_key_description),
    aws_operation!("TrentService.Verify", verify),
];

type Context = BTreeMap<String, String>;

// ---------------------------------------------------------------------------------------------
// Shapes used by several operations
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdInput {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyPagingInput {
    key_id: String,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    tag_key: String,
    tag_value: String,
}

fn tag_pairs(tags: Vec<Tag>) -> Vec<(String, String)> {
    tags.into_iter()
        .map(|tag| (tag.tag_key, tag.tag_value))
        .collect()
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdOutput {
    key_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyMetadataOutput {
    key_metadata: KeyMetadata,
}

/// A listing's page: `Truncated`, and `NextMarker` when there is more.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Paged<T: Serialize> {
    #[serde(flatten)]
    items: T,
    truncated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

impl<T: Serialize> Paged<T> {
    fn new(items: T, next_marker: Option<String>) -> Self {
        Self {
            items,
            truncated: next_marker.is_some(),
            next_marker,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyInput {
    policy: Option<String>,
    description: Option<String>,
    key_usage: Option<String>,
    customer_master_key_spec: Option<String>,
    key_spec: Option<String>,
    origin: Option<String>,
    #[serde(default)]
    bypass_policy_lockout_safety_check: bool,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    multi_region: bool,
}

async fn create_key(
    kms: &Kms,
    caller: &Caller,
    input: CreateKeyInput,
    facts: &mut CallFacts,
) -> Result<KeyMetadataOutput, AwsError> {
    let metadata = kms
        .create_key(
            caller,
            CreateKeyRequest {
                description: input.description,
                key_spec: input.key_spec.or(input.customer_master_key_spec),
                key_usage: input.key_usage,
                origin: input.origin,
                policy: input.policy,
                bypass_policy_lockout_safety_check: input.bypass_policy_lockout_safety_check,
                tags: tag_pairs(input.tags),
                multi_region: input.multi_region,
            },
        )
        .await?;
    facts.done_with(&metadata.arn);
    Ok(KeyMetadataOutput {
        key_metadata: metadata,
    })
}

async fn describe_key(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<KeyMetadataOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let metadata = kms.describe_key(caller, &input.key_id).await?;
    facts.done_with(&metadata.arn);
    Ok(KeyMetadataOutput {
        key_metadata: metadata,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeysInput {
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Keys {
    keys: Vec<KeyListEntry>,
}

async fn list_keys(
    kms: &Kms,
    caller: &Caller,
    input: ListKeysInput,
    _facts: &mut CallFacts,
) -> Result<Paged<Keys>, AwsError> {
    let page = kms
        .list_keys(caller, input.limit, input.marker.as_deref())
        .await?;
    Ok(Paged::new(Keys { keys: page.items }, page.next_token))
}

async fn enable_key(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.enable_key(caller, &input.key_id).await?;
    Ok(Empty {})
}

async fn disable_key(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.disable_key(caller, &input.key_id).await?;
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateKeyDescriptionInput {
    key_id: String,
    description: String,
}

async fn update_key_description(
    kms: &Kms,
    caller: &Caller,
    input: UpdateKeyDescriptionInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.update_key_description(caller, &input.key_id, &input.description)
        .await?;
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResourceInput {
    key_id: String,
    tags: Vec<Tag>,
}

async fn tag_resource(
    kms: &Kms,
    caller: &Caller,
    input: TagResourceInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.tag_resource(caller, &input.key_id, tag_pairs(input.tags))
        .await?;
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UntagResourceInput {
    key_id: String,
    tag_keys: Vec<String>,
}

async fn untag_resource(
    kms: &Kms,
    caller: &Caller,
    input: UntagResourceInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.untag_resource(caller, &input.key_id, input.tag_keys)
        .await?;
    Ok(Empty {})
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct TagOutput {
    tag_key: String,
    tag_value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Tags {
    tags: Vec<TagOutput>,
}

async fn list_resource_tags(
    kms: &Kms,
    caller: &Caller,
    input: KeyPagingInput,
    facts: &mut CallFacts,
) -> Result<Paged<Tags>, AwsError> {
    facts.asked_for(&input.key_id);
    let page = kms
        .list_resource_tags(caller, &input.key_id, input.limit, input.marker.as_deref())
        .await?;
    let tags = page
        .items
        .into_iter()
        .map(|(tag_key, tag_value)| TagOutput { tag_key, tag_value })
        .collect();
    Ok(Paged::new(Tags { tags }, page.next_token))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleKeyDeletionInput {
    key_id: String,
    pending_window_in_days: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleKeyDeletionOutput {
    key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    deletion_date: Option<i64>,
    key_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending_window_in_days: Option<u32>,
}

async fn schedule_key_deletion(
    kms: &Kms,
    caller: &Caller,
    input: ScheduleKeyDeletionInput,
    facts: &mut CallFacts,
) -> Result<ScheduleKeyDeletionOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let metadata = kms
        .schedule_key_deletion(caller, &input.key_id, input.pending_window_in_days)
        .await?;
    facts.done_with(&metadata.arn);
    Ok(ScheduleKeyDeletionOutput {
        key_id: metadata.arn,
        deletion_date: metadata.deletion_date,
        key_state: metadata.key_state.as_str(),
        pending_window_in_days: metadata.pending_deletion_window_in_days,
    })
}

async fn cancel_key_deletion(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<KeyIdOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let key_id = kms.cancel_key_deletion(caller, &input.key_id).await?;
    facts.done_with(&key_id);
    Ok(KeyIdOutput { key_id })
}

// ---------------------------------------------------------------------------------------------
// Aliases
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasTargetInput {
    alias_name: String,
    target_key_id: String,
}

async fn create_alias(
    kms: &Kms,
    caller: &Caller,
    input: AliasTargetInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.alias_name);
    kms.create_alias(caller, &input.alias_name, &input.target_key_id)
        .await?;
    Ok(Empty {})
}

async fn update_alias(
    kms: &Kms,
    caller: &Caller,
    input: AliasTargetInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.alias_name);
    kms.update_alias(caller, &input.alias_name, &input.target_key_id)
        .await?;
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasNameInput {
    alias_name: String,
}

async fn delete_alias(
    kms: &Kms,
    caller: &Caller,
    input: AliasNameInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.alias_name);
    kms.delete_alias(caller, &input.alias_name).await?;
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAliasesInput {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Aliases {
    aliases: Vec<crate::engine::kms::AliasListEntry>,
}

async fn list_aliases(
    kms: &Kms,
    caller: &Caller,
    input: ListAliasesInput,
    facts: &mut CallFacts,
) -> Result<Paged<Aliases>, AwsError> {
    if let Some(key_id) = &input.key_id {
        facts.asked_for(key_id);
    }
    let page = kms
        .list_aliases(
            caller,
            input.key_id.as_deref(),
            input.limit,
            input.marker.as_deref(),
        )
        .await?;
    Ok(Paged::new(
        Aliases {
            aliases: page.items,
        },
        page.next_token,
    ))
}

// ---------------------------------------------------------------------------------------------
// Symmetric cryptography: the hot path
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptInput {
    key_id: String,
    plaintext: SecretBlob,
    #[serde(default)]
    encryption_context: Context,
    encryption_algorithm: Option<String>,
}

struct EncryptOutput {
    ciphertext_blob: Vec<u8>,
    key_id: String,
    encryption_algorithm: &'static str,
}

impl wire::WireOutput for EncryptOutput {
    fn to_body(&self) -> Result<Vec<u8>, AwsError> {
        wire::blob_body(
            "CiphertextBlob",
            &self.ciphertext_blob,
            &[
                ("KeyId", &self.key_id),
                ("EncryptionAlgorithm", self.encryption_algorithm),
            ],
        )
    }
}

async fn encrypt(
    kms: &Kms,
    caller: &Caller,
    input: EncryptInput,
    facts: &mut CallFacts,
) -> Result<EncryptOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let (ciphertext_blob, key_id, encryption_algorithm) = kms
        .encrypt(
            caller,
            &input.key_id,
            input.plaintext.0.expose(),
            &input.encryption_context,
            input.encryption_algorithm.as_deref(),
        )
        .await?;
    facts.done_with(&key_id);
    Ok(EncryptOutput {
        ciphertext_blob,
        key_id,
        encryption_algorithm,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    ciphertext_blob: Blob,
    #[serde(default)]
    encryption_context: Context,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
}

struct DecryptOutput {
    plaintext: SecretBytes,
    key_id: String,
    encryption_algorithm: &'static str,
}

impl wire::WireOutput for DecryptOutput {
    fn to_body(&self) -> Result<Vec<u8>, AwsError> {
        wire::blob_body(
            "Plaintext",
            self.plaintext.expose(),
            &[
                ("KeyId", &self.key_id),
                ("EncryptionAlgorithm", self.encryption_algorithm),
            ],
        )
    }
}

async fn decrypt(
    kms: &Kms,
    caller: &Caller,
    input: DecryptInput,
    facts: &mut CallFacts,
) -> Result<DecryptOutput, AwsError> {
    if let Some(key_id) = &input.key_id {
        facts.asked_for(key_id);
    }
    let (plaintext, key_id, encryption_algorithm) = kms
        .decrypt(
            caller,
            &input.ciphertext_blob.0,
            &input.encryption_context,
            input.key_id.as_deref(),
            input.encryption_algorithm.as_deref(),
        )
        .await?;
    facts.done_with(&key_id);
    Ok(DecryptOutput {
        plaintext,
        key_id,
        encryption_algorithm,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptInput {
    ciphertext_blob: Blob,
    #[serde(default)]
    source_encryption_context: Context,
    source_key_id: Option<String>,
    destination_key_id: String,
    #[serde(default)]
    destination_encryption_context: Context,
    source_encryption_algorithm: Option<String>,
    destination_encryption_algorithm: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptOutput {
    #[serde(serialize_with = "wire::base64")]
    ciphertext_blob: Vec<u8>,
    source_key_id: String,
    key_id: String,
    source_encryption_algorithm: &'static str,
    destination_encryption_algorithm: &'static str,
}

async fn re_encrypt(
    kms: &Kms,
    caller: &Caller,
    input: ReEncryptInput,
    facts: &mut CallFacts,
) -> Result<ReEncryptOutput, AwsError> {
    facts.asked_for(&input.destination_key_id);
    let done = kms
        .re_encrypt(
            caller,
            &input.ciphertext_blob.0,
            &input.source_encryption_context,
            input.source_key_id.as_deref(),
            input.source_encryption_algorithm.as_deref(),
            &input.destination_key_id,
            &input.destination_encryption_context,
            input.destination_encryption_algorithm.as_deref(),
        )
        .await?;
    facts.done_with(&done.key_arn);
    Ok(ReEncryptOutput {
        ciphertext_blob: done.ciphertext,
        source_key_id: done.source_key_arn,
        key_id: done.key_arn,
        source_encryption_algorithm: done.source_algorithm,
        destination_encryption_algorithm: done.destination_algorithm,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyInput {
    key_id: String,
    #[serde(default)]
    encryption_context: Context,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyOutput {
    #[serde(serialize_with = "wire::base64")]
    ciphertext_blob: Vec<u8>,
    #[serde(
        serialize_with = "wire::optional_secret_base64",
        skip_serializing_if = "Option::is_none"
    )]
    plaintext: Option<SecretBytes>,
    key_id: String,
}

async fn data_key(
    kms: &Kms,
    caller: &Caller,
    input: DataKeyInput,
    facts: &mut CallFacts,
    with_plaintext: bool,
) -> Result<DataKeyOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let size = DataKeySize::from_request(input.key_spec.as_deref(), input.number_of_bytes)?;
    let key = kms
        .generate_data_key(
            caller,
            &input.key_id,
            size,
            &input.encryption_context,
            with_plaintext,
        )
        .await?;
    facts.done_with(&key.key_arn);
    Ok(DataKeyOutput {
        ciphertext_blob: key.ciphertext,
        plaintext: with_plaintext.then_some(key.plaintext),
        key_id: key.key_arn,
    })
}

async fn generate_data_key(
    kms: &Kms,
    caller: &Caller,
    input: DataKeyInput,
    facts: &mut CallFacts,
) -> Result<DataKeyOutput, AwsError> {
    data_key(kms, caller, input, facts, true).await
}

async fn generate_data_key_without_plaintext(
    kms: &Kms,
    caller: &Caller,
    input: DataKeyInput,
    facts: &mut CallFacts,
) -> Result<DataKeyOutput, AwsError> {
    data_key(kms, caller, input, facts, false).await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyPairInput {
    key_id: String,
    #[serde(default)]
    encryption_context: Context,
    key_pair_spec: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyPairOutput {
    #[serde(serialize_with = "wire::base64")]
    private_key_ciphertext_blob: Vec<u8>,
    #[serde(
        serialize_with = "wire::optional_secret_base64",
        skip_serializing_if = "Option::is_none"
    )]
    private_key_plaintext: Option<SecretBytes>,
    #[serde(serialize_with = "wire::base64")]
    public_key: Vec<u8>,
    key_id: String,
    key_pair_spec: &'static str,
}

async fn data_key_pair(
    kms: &Kms,
    caller: &Caller,
    input: DataKeyPairInput,
    facts: &mut CallFacts,
    with_plaintext: bool,
) -> Result<DataKeyPairOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let pair = kms
        .generate_data_key_pair(
            caller,
            &input.key_id,
            &input.key_pair_spec,
            &input.encryption_context,
            with_plaintext,
        )
        .await?;
    facts.done_with(&pair.key_arn);
    Ok(DataKeyPairOutput {
        private_key_ciphertext_blob: pair.private_ciphertext,
        private_key_plaintext: with_plaintext.then_some(pair.private_plaintext),
        public_key: pair.public_key,
        key_id: pair.key_arn,
        key_pair_spec: pair.key_pair_spec,
    })
}

async fn generate_data_key_pair(
    kms: &Kms,
    caller: &Caller,
    input: DataKeyPairInput,
    facts: &mut CallFacts,
) -> Result<DataKeyPairOutput, AwsError> {
    data_key_pair(kms, caller, input, facts, true).await
}

async fn generate_data_key_pair_without_plaintext(
    kms: &Kms,
    caller: &Caller,
    input: DataKeyPairInput,
    facts: &mut CallFacts,
) -> Result<DataKeyPairOutput, AwsError> {
    data_key_pair(kms, caller, input, facts, false).await
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRandomInput {
    number_of_bytes: Option<i64>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GenerateRandomOutput {
    #[serde(serialize_with = "wire::secret_base64")]
    plaintext: SecretBytes,
}

async fn generate_random(
    kms: &Kms,
    caller: &Caller,
    input: GenerateRandomInput,
    _facts: &mut CallFacts,
) -> Result<GenerateRandomOutput, AwsError> {
    let plaintext = kms.generate_random(caller, input.number_of_bytes).await?;
    Ok(GenerateRandomOutput { plaintext })
}

// ---------------------------------------------------------------------------------------------
// Asymmetric keys
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetPublicKeyOutput {
    key_id: String,
    #[serde(serialize_with = "wire::base64")]
    public_key: Vec<u8>,
    key_spec: &'static str,
    customer_master_key_spec: &'static str,
    key_usage: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    encryption_algorithms: Vec<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    signing_algorithms: Vec<&'static str>,
}

async fn get_public_key(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<GetPublicKeyOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let info = kms.get_public_key(caller, &input.key_id).await?;
    facts.done_with(&info.key_id);
    Ok(GetPublicKeyOutput {
        key_id: info.key_id,
        public_key: info.public_key,
        key_spec: info.key_spec.as_str(),
        customer_master_key_spec: info.key_spec.as_str(),
        key_usage: info.key_usage.as_str(),
        encryption_algorithms: info.encryption_algorithms,
        signing_algorithms: info.signing_algorithms,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SignInput {
    key_id: String,
    message: Blob,
    message_type: Option<String>,
    signing_algorithm: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SignOutput {
    key_id: String,
    #[serde(serialize_with = "wire::base64")]
    signature: Vec<u8>,
    signing_algorithm: &'static str,
}

async fn sign(
    kms: &Kms,
    caller: &Caller,
    input: SignInput,
    facts: &mut CallFacts,
) -> Result<SignOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let (signature, key_id, signing_algorithm) = kms
        .sign(
            caller,
            &input.key_id,
            &input.message.0,
            input.message_type.as_deref(),
            &input.signing_algorithm,
        )
        .await?;
    facts.done_with(&key_id);
    Ok(SignOutput {
        key_id,
        signature,
        signing_algorithm,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyInput {
    key_id: String,
    message: Blob,
    message_type: Option<String>,
    signature: Blob,
    signing_algorithm: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VerifyOutput {
    key_id: String,
    signature_valid: bool,
    signing_algorithm: &'static str,
}

async fn verify(
    kms: &Kms,
    caller: &Caller,
    input: VerifyInput,
    facts: &mut CallFacts,
) -> Result<VerifyOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let (key_id, signing_algorithm) = kms
        .verify(
            caller,
            &input.key_id,
            &input.message.0,
            input.message_type.as_deref(),
            &input.signature.0,
            &input.signing_algorithm,
        )
        .await?;
    facts.done_with(&key_id);
    // An invalid signature is KMSInvalidSignatureException, never `false`, as in AWS.
    Ok(VerifyOutput {
        key_id,
        signature_valid: true,
        signing_algorithm,
    })
}

// ---------------------------------------------------------------------------------------------
// Rotation
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnableKeyRotationInput {
    key_id: String,
    rotation_period_in_days: Option<i64>,
}

async fn enable_key_rotation(
    kms: &Kms,
    caller: &Caller,
    input: EnableKeyRotationInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.enable_key_rotation(caller, &input.key_id, input.rotation_period_in_days)
        .await?;
    Ok(Empty {})
}

async fn disable_key_rotation(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.disable_key_rotation(caller, &input.key_id).await?;
    Ok(Empty {})
}

async fn get_key_rotation_status(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<RotationStatus, AwsError> {
    facts.asked_for(&input.key_id);
    Ok(kms.get_key_rotation_status(caller, &input.key_id).await?)
}

async fn rotate_key_on_demand(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<KeyIdOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let key_id = kms.rotate_key_on_demand(caller, &input.key_id).await?;
    facts.done_with(&key_id);
    Ok(KeyIdOutput { key_id })
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Rotations {
    rotations: Vec<crate::engine::kms::RotationEntry>,
}

async fn list_key_rotations(
    kms: &Kms,
    caller: &Caller,
    input: KeyPagingInput,
    facts: &mut CallFacts,
) -> Result<Paged<Rotations>, AwsError> {
    facts.asked_for(&input.key_id);
    let page = kms
        .list_key_rotations(caller, &input.key_id, input.limit, input.marker.as_deref())
        .await?;
    Ok(Paged::new(
        Rotations {
            rotations: page.items,
        },
        page.next_token,
    ))
}

// ---------------------------------------------------------------------------------------------
// Imported key material
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersForImportInput {
    key_id: String,
    wrapping_algorithm: String,
    wrapping_key_spec: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersForImportOutput {
    key_id: String,
    #[serde(serialize_with = "wire::base64")]
    import_token: Vec<u8>,
    #[serde(serialize_with = "wire::base64")]
    public_key: Vec<u8>,
    parameters_valid_to: i64,
}

async fn get_parameters_for_import(
    kms: &Kms,
    caller: &Caller,
    input: GetParametersForImportInput,
    facts: &mut CallFacts,
) -> Result<GetParametersForImportOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let parameters = kms
        .get_parameters_for_import(
            caller,
            &input.key_id,
            &input.wrapping_algorithm,
            &input.wrapping_key_spec,
        )
        .await?;
    facts.done_with(&parameters.key_arn);
    Ok(GetParametersForImportOutput {
        key_id: parameters.key_arn,
        import_token: parameters.import_token,
        public_key: parameters.public_key,
        parameters_valid_to: parameters.valid_to,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImportKeyMaterialInput {
    key_id: String,
    import_token: Blob,
    encrypted_key_material: Blob,
    valid_to: Option<f64>,
    expiration_model: Option<String>,
}

async fn import_key_material(
    kms: &Kms,
    caller: &Caller,
    input: ImportKeyMaterialInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    let valid_to = input
        .valid_to
        .map(|seconds| wire::timestamp(seconds, "ValidTo"))
        .transpose()?;
    kms.import_key_material(
        caller,
        &input.key_id,
        &input.import_token.0,
        &input.encrypted_key_material.0,
        valid_to,
        input.expiration_model.as_deref(),
    )
    .await?;
    Ok(Empty {})
}

async fn delete_imported_key_material(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.delete_imported_key_material(caller, &input.key_id)
        .await?;
    Ok(Empty {})
}

// ---------------------------------------------------------------------------------------------
// Key policies
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetKeyPolicyInput {
    key_id: String,
    policy_name: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetKeyPolicyOutput {
    policy: String,
    policy_name: &'static str,
}

async fn get_key_policy(
    kms: &Kms,
    caller: &Caller,
    input: GetKeyPolicyInput,
    facts: &mut CallFacts,
) -> Result<GetKeyPolicyOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let policy = kms
        .get_key_policy(caller, &input.key_id, input.policy_name.as_deref())
        .await?;
    Ok(GetKeyPolicyOutput {
        policy,
        policy_name: "default",
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutKeyPolicyInput {
    key_id: String,
    policy_name: Option<String>,
    policy: String,
    #[serde(default)]
    bypass_policy_lockout_safety_check: bool,
}

async fn put_key_policy(
    kms: &Kms,
    caller: &Caller,
    input: PutKeyPolicyInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.key_id);
    kms.put_key_policy(
        caller,
        &input.key_id,
        input.policy_name.as_deref(),
        &input.policy,
        input.bypass_policy_lockout_safety_check,
    )
    .await?;
    Ok(Empty {})
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListKeyPoliciesOutput {
    policy_names: Vec<String>,
    truncated: bool,
}

async fn list_key_policies(
    kms: &Kms,
    caller: &Caller,
    input: KeyIdInput,
    facts: &mut CallFacts,
) -> Result<ListKeyPoliciesOutput, AwsError> {
    facts.asked_for(&input.key_id);
    let policy_names = kms.list_key_policies(caller, &input.key_id).await?;
    Ok(ListKeyPoliciesOutput {
        policy_names,
        truncated: false,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::aws::identity::AccessKeyDirectory;
    use crate::aws::ops::Services;
    use crate::crypto::RootKeyring;
    use crate::engine::{Principal, SystemClock};
    use crate::store::{EmbeddedStore, Store};

    #[test]
    fn the_table_is_sorted_and_every_target_is_of_kms() {
        let targets: Vec<&str> = OPERATIONS
            .iter()
            .map(|operation| operation.target)
            .collect();
        let mut sorted = targets.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(targets, sorted, "sorted, once each: lookups binary-search");
        assert!(
            targets
                .iter()
                .all(|target| target.starts_with("TrentService."))
        );
        assert_eq!(targets.len(), 37);
    }

    #[tokio::test]
    async fn every_listed_operation_is_dispatched() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let keyring = Arc::new(RootKeyring::generate());
        let directory = Arc::new(AccessKeyDirectory::new(
            store.clone(),
            keyring.clone(),
            "default",
        ));
        let kms = Arc::new(Kms::new(
            store,
            keyring,
            directory,
            Arc::new(SystemClock),
            "us-east-1",
        ));
        let caller = Caller {
            namespace: "default".into(),
            principal: Principal {
                arn: "arn:aws:iam::000000000000:user/nobody".into(),
                account_id: "000000000000".into(),
            },
            access_key_id: None,
            secure_transport: false,
        };
        let services = Services::new().with(kms);
        let kms = services.for_target("TrentService.Encrypt").unwrap();
        for target in kms.targets() {
            let mut facts = CallFacts::default();
            let outcome = kms.call(target, &caller, b"{}", &mut facts).await;
            if let Err(error) = outcome {
                assert_ne!(
                    error.code, "UnknownOperationException",
                    "{target} is listed but not served"
                );
                // An empty body misses required members, or the caller may not: never a fault.
                assert!(!error.status.is_server_error(), "{target}: {error:?}");
            }
        }
        let mut facts = CallFacts::default();
        let Err(unknown) = kms
            .call("TrentService.CreateGrant", &caller, b"{}", &mut facts)
            .await
        else {
            panic!("an unlisted operation must be refused")
        };
        assert_eq!(unknown.code, "UnknownOperationException");
        assert!(services.for_target("AmazonSSM.GetParameter").is_none());
        assert_eq!(
            services.known_operation("TrentService.Decrypt"),
            Some("TrentService.Decrypt")
        );
        assert_eq!(services.known_operation("TrentService.Nope"), None);
    }
}
