//! KMS operations on the wire (`TrentService.*`): input shapes in, engine call, output shapes out.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{AwsError, CallFacts, to_output};
use crate::engine::Caller;
use crate::engine::kms::{CreateKeyRequest, DataKeySize, Kms, KmsError};

/// Every KMS operation Coffer serves, as `X-Amz-Target` names it.
pub(super) const OPERATIONS: &[&str] = &[
    "TrentService.CancelKeyDeletion",
    "TrentService.CreateAlias",
    "TrentService.CreateKey",
    "TrentService.Decrypt",
    "TrentService.DeleteAlias",
    "TrentService.DeleteImportedKeyMaterial",
    "TrentService.DescribeKey",
    "TrentService.DisableKey",
    "TrentService.DisableKeyRotation",
    "TrentService.EnableKey",
    "TrentService.EnableKeyRotation",
    "TrentService.Encrypt",
    "TrentService.GenerateDataKey",
    "TrentService.GenerateDataKeyPair",
    "TrentService.GenerateDataKeyPairWithoutPlaintext",
    "TrentService.GenerateDataKeyWithoutPlaintext",
    "TrentService.GenerateRandom",
    "TrentService.GetKeyPolicy",
    "TrentService.GetKeyRotationStatus",
    "TrentService.GetParametersForImport",
    "TrentService.GetPublicKey",
    "TrentService.ImportKeyMaterial",
    "TrentService.ListAliases",
    "TrentService.ListKeyPolicies",
    "TrentService.ListKeyRotations",
    "TrentService.ListKeys",
    "TrentService.ListResourceTags",
    "TrentService.PutKeyPolicy",
    "TrentService.ReEncrypt",
    "TrentService.RotateKeyOnDemand",
    "TrentService.ScheduleKeyDeletion",
    "TrentService.Sign",
    "TrentService.TagResource",
    "TrentService.UntagResource",
    "TrentService.UpdateAlias",
    "TrentService.UpdateKeyDescription",
    "TrentService.Verify",
];

impl From<KmsError> for AwsError {
    fn from(err: KmsError) -> Self {
        if let KmsError::Internal(detail) = &err {
            tracing::error!(detail = %detail, "KMS engine fault");
            return AwsError::fault(err.aws_code());
        }
        AwsError::client(err.aws_code(), err.to_string())
    }
}

/// A base64 blob field.
struct Blob(Vec<u8>);

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD
            .decode(text.as_bytes())
            .map(Blob)
            .map_err(|_| serde::de::Error::custom("blob is not valid base64"))
    }
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn input<T: DeserializeOwned>(value: Value) -> Result<T, AwsError> {
    serde_json::from_value(value).map_err(|err| input_error(&err))
}

/// The AWS error for an input that does not fit its shape.
fn input_error(err: &serde_json::Error) -> AwsError {
    // serde's message names the field and the expected type, never the value.
    let message = err.to_string();
    match missing_member(&message) {
        // AWS reports an absent required member as a validation error, not a parse error.
        Some(member) => AwsError::client(
            "ValidationException",
            format!(
                "1 validation error detected: Value null at '{member}' failed to satisfy constraint: Member must not be null"
            ),
        ),
        None => AwsError::client(
            "SerializationException",
            format!("Invalid request: {message}"),
        ),
    }
}

/// The member named by serde's "missing field `Name`" message, in AWS's camelCase.
fn missing_member(message: &str) -> Option<String> {
    let rest = message.strip_prefix("missing field `")?;
    let name = &rest[..rest.find('`')?];
    let mut chars = name.chars();
    let first = chars.next()?;
    Some(first.to_ascii_lowercase().to_string() + chars.as_str())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdInput {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PagingInput {
    limit: Option<i64>,
    marker: Option<String>,
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
struct TagInput {
    tag_key: String,
    tag_value: String,
}

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
    tags: Vec<TagInput>,
    #[serde(default)]
    multi_region: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptInput {
    key_id: String,
    plaintext: Blob,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
    encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptInput {
    ciphertext_blob: Blob,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptInput {
    ciphertext_blob: Blob,
    #[serde(default)]
    source_encryption_context: BTreeMap<String, String>,
    source_key_id: Option<String>,
    destination_key_id: String,
    #[serde(default)]
    destination_encryption_context: BTreeMap<String, String>,
    source_encryption_algorithm: Option<String>,
    destination_encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyInput {
    key_id: String,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
    number_of_bytes: Option<i64>,
    key_spec: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyPairInput {
    key_id: String,
    #[serde(default)]
    encryption_context: BTreeMap<String, String>,
    key_pair_spec: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SignInput {
    key_id: String,
    message: Blob,
    message_type: Option<String>,
    signing_algorithm: String,
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

/// Calls one KMS operation and returns the response body.
///
/// Encrypt and Decrypt, the hot path, parse straight into their input shapes and write their
/// output without a JSON tree: base64 needs no JSON escaping, and at 4 KiB the tree and the
/// escaping scan cost more than the rest of the encoding.
pub(super) async fn dispatch(
    kms: &Kms,
    caller: &Caller,
    operation: &str,
    body: &[u8],
    facts: &mut CallFacts,
) -> Result<String, AwsError> {
    match operation {
        "Encrypt" => {
            let input: EncryptInput = input_from_bytes(body)?;
            facts.resource = Some(super::truncate_for_message(&input.key_id));
            let (ciphertext, key_arn, algorithm) = kms
                .encrypt(
                    caller,
                    &input.key_id,
                    &input.plaintext.0,
                    &input.encryption_context,
                    input.encryption_algorithm.as_deref(),
                )
                .await?;
            let body = blob_response(
                "CiphertextBlob",
                &ciphertext,
                &[("KeyId", &key_arn), ("EncryptionAlgorithm", algorithm)],
            );
            facts.resource = Some(key_arn);
            body
        }
        "Decrypt" => {
            let input: DecryptInput = input_from_bytes(body)?;
            facts.resource = input.key_id.as_deref().map(super::truncate_for_message);
            let (plaintext, key_arn, algorithm) = kms
                .decrypt(
                    caller,
                    &input.ciphertext_blob.0,
                    &input.encryption_context,
                    input.key_id.as_deref(),
                    input.encryption_algorithm.as_deref(),
                )
                .await?;
            let body = blob_response(
                "Plaintext",
                plaintext.expose(),
                &[("KeyId", &key_arn), ("EncryptionAlgorithm", algorithm)],
            );
            facts.resource = Some(key_arn);
            body
        }
        _ => {
            let body = super::json_object(body)?;
            dispatch_json(kms, caller, operation, body, facts)
                .await
                .map(|value| value.to_string())
        }
    }
}

/// Parses a request body straight into an input shape.
fn input_from_bytes<T: DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    let body = if body.is_empty() {
        b"{}".as_slice()
    } else {
        body
    };
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
        return Err(AwsError::client(
            "SerializationException",
            "The request body must be a JSON object.",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let parsed = T::deserialize(&mut deserializer).map_err(|err| input_error(&err))?;
    deserializer.end().map_err(|_| {
        AwsError::client(
            "SerializationException",
            "The request body is not valid JSON.",
        )
    })?;
    Ok(parsed)
}

/// `{"<blob_field>":"<base64>", "<name>":<json string>, ...}` written directly. The base64
/// alphabet needs no escaping; the other values are escaped as JSON strings.
fn blob_response(
    blob_field: &str,
    blob: &[u8],
    fields: &[(&str, &str)],
) -> Result<String, AwsError> {
    let mut out = String::with_capacity(blob.len() * 4 / 3 + 256);
    out.push_str("{\"");
    out.push_str(blob_field);
    out.push_str("\":\"");
    STANDARD.encode_string(blob, &mut out);
    out.push('"');
    for (name, value) in fields {
        out.push_str(",\"");
        out.push_str(name);
        out.push_str("\":");
        out.push_str(
            &serde_json::to_string(value).map_err(|_| AwsError::fault("InternalFailure"))?,
        );
    }
    out.push('}');
    Ok(out)
}

/// Calls one KMS operation whose input is a parsed JSON object.
async fn dispatch_json(
    kms: &Kms,
    caller: &Caller,
    operation: &str,
    body: Value,
    facts: &mut CallFacts,
) -> Result<Value, AwsError> {
    // Until the engine names the key, the audit line carries what the caller asked for, cut short.
    facts.resource = body
        .get("KeyId")
        .and_then(Value::as_str)
        .map(super::truncate_for_message);
    match operation {
        "CreateKey" => {
            let input: CreateKeyInput = input(body)?;
            let metadata = kms
                .create_key(
                    caller,
                    CreateKeyRequest {
                        description: input.description,
                        key_spec: input.key_spec.or(input.customer_master_key_spec),
                        key_usage: input.key_usage,
                        origin: input.origin,
                        policy: input.policy,
                        bypass_policy_lockout_safety_check: input
                            .bypass_policy_lockout_safety_check,
                        tags: input
                            .tags
                            .into_iter()
                            .map(|tag| (tag.tag_key, tag.tag_value))
                            .collect(),
                        multi_region: input.multi_region,
                    },
                )
                .await?;
            facts.resource = Some(metadata.arn.clone());
            Ok(json!({ "KeyMetadata": to_output(&metadata)? }))
        }
        "DescribeKey" => {
            let input: KeyIdInput = input(body)?;
            let metadata = kms.describe_key(caller, &input.key_id).await?;
            facts.resource = Some(metadata.arn.clone());
            Ok(json!({ "KeyMetadata": to_output(&metadata)? }))
        }
        "ListKeys" => {
            let input: PagingInput = input(body)?;
            let page = kms
                .list_keys(caller, input.limit, input.marker.as_deref())
                .await?;
            Ok(paged("Keys", to_output(&page.items)?, page.next_marker))
        }
        "EnableKey" => {
            let input: KeyIdInput = input(body)?;
            kms.enable_key(caller, &input.key_id).await?;
            Ok(json!({}))
        }
        "DisableKey" => {
            let input: KeyIdInput = input(body)?;
            kms.disable_key(caller, &input.key_id).await?;
            Ok(json!({}))
        }
        "UpdateKeyDescription" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                description: String,
            }
            let input: Input = input(body)?;
            kms.update_key_description(caller, &input.key_id, &input.description)
                .await?;
            Ok(json!({}))
        }
        "TagResource" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                tags: Vec<TagInput>,
            }
            let input: Input = input(body)?;
            let tags = input
                .tags
                .into_iter()
                .map(|tag| (tag.tag_key, tag.tag_value))
                .collect();
            kms.tag_resource(caller, &input.key_id, tags).await?;
            Ok(json!({}))
        }
        "UntagResource" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                tag_keys: Vec<String>,
            }
            let input: Input = input(body)?;
            kms.untag_resource(caller, &input.key_id, input.tag_keys)
                .await?;
            Ok(json!({}))
        }
        "ListResourceTags" => {
            let input: KeyPagingInput = input(body)?;
            let page = kms
                .list_resource_tags(caller, &input.key_id, input.limit, input.marker.as_deref())
                .await?;
            let tags: Vec<Value> = page
                .items
                .iter()
                .map(|(key, value)| json!({"TagKey": key, "TagValue": value}))
                .collect();
            Ok(paged("Tags", Value::Array(tags), page.next_marker))
        }
        "CreateAlias" | "UpdateAlias" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                alias_name: String,
                target_key_id: String,
            }
            let input: Input = input(body)?;
            facts.resource = Some(super::truncate_for_message(&input.alias_name));
            if operation == "CreateAlias" {
                kms.create_alias(caller, &input.alias_name, &input.target_key_id)
                    .await?;
            } else {
                kms.update_alias(caller, &input.alias_name, &input.target_key_id)
                    .await?;
            }
            Ok(json!({}))
        }
        "DeleteAlias" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                alias_name: String,
            }
            let input: Input = input(body)?;
            facts.resource = Some(super::truncate_for_message(&input.alias_name));
            kms.delete_alias(caller, &input.alias_name).await?;
            Ok(json!({}))
        }
        "ListAliases" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: Option<String>,
                limit: Option<i64>,
                marker: Option<String>,
            }
            let input: Input = input(body)?;
            let page = kms
                .list_aliases(
                    caller,
                    input.key_id.as_deref(),
                    input.limit,
                    input.marker.as_deref(),
                )
                .await?;
            Ok(paged("Aliases", to_output(&page.items)?, page.next_marker))
        }
        "ReEncrypt" => {
            let input: ReEncryptInput = input(body)?;
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
            facts.resource = Some(done.key_arn.clone());
            Ok(json!({
                "CiphertextBlob": b64(&done.ciphertext),
                "SourceKeyId": done.source_key_arn,
                "KeyId": done.key_arn,
                "SourceEncryptionAlgorithm": done.source_algorithm,
                "DestinationEncryptionAlgorithm": done.destination_algorithm,
            }))
        }
        "GenerateDataKey" | "GenerateDataKeyWithoutPlaintext" => {
            let input: DataKeyInput = input(body)?;
            let size = DataKeySize::from_request(input.key_spec.as_deref(), input.number_of_bytes)?;
            let with_plaintext = operation == "GenerateDataKey";
            let key = kms
                .generate_data_key(
                    caller,
                    &input.key_id,
                    size,
                    &input.encryption_context,
                    with_plaintext,
                )
                .await?;
            facts.resource = Some(key.key_arn.clone());
            let mut output = json!({"CiphertextBlob": b64(&key.ciphertext), "KeyId": key.key_arn});
            if with_plaintext {
                output["Plaintext"] = Value::String(b64(key.plaintext.expose()));
            }
            Ok(output)
        }
        "GenerateDataKeyPair" | "GenerateDataKeyPairWithoutPlaintext" => {
            let input: DataKeyPairInput = input(body)?;
            let with_plaintext = operation == "GenerateDataKeyPair";
            let pair = kms
                .generate_data_key_pair(
                    caller,
                    &input.key_id,
                    &input.key_pair_spec,
                    &input.encryption_context,
                    with_plaintext,
                )
                .await?;
            facts.resource = Some(pair.key_arn.clone());
            let mut output = json!({
                "PrivateKeyCiphertextBlob": b64(&pair.private_ciphertext),
                "PublicKey": b64(&pair.public_key),
                "KeyId": pair.key_arn,
                "KeyPairSpec": pair.key_pair_spec,
            });
            if with_plaintext {
                output["PrivateKeyPlaintext"] = Value::String(b64(pair.private_plaintext.expose()));
            }
            Ok(output)
        }
        "GenerateRandom" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                number_of_bytes: Option<i64>,
            }
            let input: Input = input(body)?;
            let bytes = kms.generate_random(caller, input.number_of_bytes).await?;
            Ok(json!({"Plaintext": b64(bytes.expose())}))
        }
        "GetPublicKey" => {
            let input: KeyIdInput = input(body)?;
            let info = kms.get_public_key(caller, &input.key_id).await?;
            facts.resource = Some(info.key_id.clone());
            let mut output = json!({
                "KeyId": info.key_id,
                "PublicKey": b64(&info.public_key),
                "KeySpec": info.key_spec.as_str(),
                "CustomerMasterKeySpec": info.key_spec.as_str(),
                "KeyUsage": info.key_usage.as_str(),
            });
            if !info.encryption_algorithms.is_empty() {
                output["EncryptionAlgorithms"] = json!(info.encryption_algorithms);
            }
            if !info.signing_algorithms.is_empty() {
                output["SigningAlgorithms"] = json!(info.signing_algorithms);
            }
            Ok(output)
        }
        "Sign" => {
            let input: SignInput = input(body)?;
            let (signature, key_arn, algorithm) = kms
                .sign(
                    caller,
                    &input.key_id,
                    &input.message.0,
                    input.message_type.as_deref(),
                    &input.signing_algorithm,
                )
                .await?;
            facts.resource = Some(key_arn.clone());
            Ok(
                json!({"KeyId": key_arn, "Signature": b64(&signature), "SigningAlgorithm": algorithm}),
            )
        }
        "Verify" => {
            let input: VerifyInput = input(body)?;
            let (key_arn, algorithm) = kms
                .verify(
                    caller,
                    &input.key_id,
                    &input.message.0,
                    input.message_type.as_deref(),
                    &input.signature.0,
                    &input.signing_algorithm,
                )
                .await?;
            facts.resource = Some(key_arn.clone());
            Ok(json!({"KeyId": key_arn, "SignatureValid": true, "SigningAlgorithm": algorithm}))
        }
        "EnableKeyRotation" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                rotation_period_in_days: Option<i64>,
            }
            let input: Input = input(body)?;
            kms.enable_key_rotation(caller, &input.key_id, input.rotation_period_in_days)
                .await?;
            Ok(json!({}))
        }
        "DisableKeyRotation" => {
            let input: KeyIdInput = input(body)?;
            kms.disable_key_rotation(caller, &input.key_id).await?;
            Ok(json!({}))
        }
        "GetKeyRotationStatus" => {
            let input: KeyIdInput = input(body)?;
            let status = kms.get_key_rotation_status(caller, &input.key_id).await?;
            to_output(&status)
        }
        "RotateKeyOnDemand" => {
            let input: KeyIdInput = input(body)?;
            let key_arn = kms.rotate_key_on_demand(caller, &input.key_id).await?;
            Ok(json!({"KeyId": key_arn}))
        }
        "ListKeyRotations" => {
            let input: KeyPagingInput = input(body)?;
            let page = kms
                .list_key_rotations(caller, &input.key_id, input.limit, input.marker.as_deref())
                .await?;
            Ok(paged(
                "Rotations",
                to_output(&page.items)?,
                page.next_marker,
            ))
        }
        "ScheduleKeyDeletion" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                pending_window_in_days: Option<i64>,
            }
            let input: Input = input(body)?;
            let metadata = kms
                .schedule_key_deletion(caller, &input.key_id, input.pending_window_in_days)
                .await?;
            Ok(json!({
                "KeyId": metadata.arn,
                "DeletionDate": metadata.deletion_date,
                "KeyState": metadata.key_state.as_str(),
                "PendingWindowInDays": metadata.pending_deletion_window_in_days,
            }))
        }
        "CancelKeyDeletion" => {
            let input: KeyIdInput = input(body)?;
            let key_arn = kms.cancel_key_deletion(caller, &input.key_id).await?;
            Ok(json!({"KeyId": key_arn}))
        }
        "GetParametersForImport" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                wrapping_algorithm: String,
                wrapping_key_spec: String,
            }
            let input: Input = input(body)?;
            let parameters = kms
                .get_parameters_for_import(
                    caller,
                    &input.key_id,
                    &input.wrapping_algorithm,
                    &input.wrapping_key_spec,
                )
                .await?;
            Ok(json!({
                "KeyId": parameters.key_arn,
                "ImportToken": b64(&parameters.import_token),
                "PublicKey": b64(&parameters.public_key),
                "ParametersValidTo": parameters.valid_to,
            }))
        }
        "ImportKeyMaterial" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                import_token: Blob,
                encrypted_key_material: Blob,
                valid_to: Option<f64>,
                expiration_model: Option<String>,
            }
            let input: Input = input(body)?;
            // Timestamps arrive as epoch seconds, possibly fractional.
            let valid_to = input.valid_to.map(|seconds| seconds.floor() as i64);
            kms.import_key_material(
                caller,
                &input.key_id,
                &input.import_token.0,
                &input.encrypted_key_material.0,
                valid_to,
                input.expiration_model.as_deref(),
            )
            .await?;
            Ok(json!({}))
        }
        "DeleteImportedKeyMaterial" => {
            let input: KeyIdInput = input(body)?;
            kms.delete_imported_key_material(caller, &input.key_id)
                .await?;
            Ok(json!({}))
        }
        "GetKeyPolicy" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                policy_name: Option<String>,
            }
            let input: Input = input(body)?;
            let policy = kms
                .get_key_policy(caller, &input.key_id, input.policy_name.as_deref())
                .await?;
            Ok(json!({"Policy": policy, "PolicyName": "default"}))
        }
        "PutKeyPolicy" => {
            #[derive(Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Input {
                key_id: String,
                policy_name: Option<String>,
                policy: String,
                #[serde(default)]
                bypass_policy_lockout_safety_check: bool,
            }
            let input: Input = input(body)?;
            kms.put_key_policy(
                caller,
                &input.key_id,
                input.policy_name.as_deref(),
                &input.policy,
                input.bypass_policy_lockout_safety_check,
            )
            .await?;
            Ok(json!({}))
        }
        "ListKeyPolicies" => {
            let input: KeyIdInput = input(body)?;
            let names = kms.list_key_policies(caller, &input.key_id).await?;
            Ok(json!({"PolicyNames": names, "Truncated": false}))
        }
        _ => Err(AwsError::client(
            "UnknownOperationException",
            format!(
                "TrentService.{} is not a known KMS operation.",
                super::truncate_for_message(operation)
            ),
        )),
    }
}

/// A listing's output with `Truncated` and, when there is more, `NextMarker`.
fn paged(field: &str, items: Value, next_marker: Option<String>) -> Value {
    let mut output = json!({ field: items, "Truncated": next_marker.is_some() });
    if let Some(marker) = next_marker {
        output["NextMarker"] = Value::String(marker);
    }
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_responses_are_valid_json() {
        let body = blob_response(
            "CiphertextBlob",
            &[0u8, 255, 7, 250, 1],
            &[
                ("KeyId", "arn:aws:kms:r:1:key/\"x\\"),
                ("EncryptionAlgorithm", "SYMMETRIC_DEFAULT"),
            ],
        )
        .unwrap();
        let parsed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(parsed["CiphertextBlob"], b64(&[0u8, 255, 7, 250, 1]));
        assert_eq!(parsed["KeyId"], "arn:aws:kms:r:1:key/\"x\\");
        assert_eq!(parsed["EncryptionAlgorithm"], "SYMMETRIC_DEFAULT");
    }

    #[test]
    fn absent_members_are_validation_errors_and_bad_types_serialization_errors() {
        let Err(missing) = input::<KeyIdInput>(json!({})) else {
            panic!("an empty body must be refused")
        };
        assert_eq!(missing.code, "ValidationException");
        assert!(
            missing.message.contains("Value null at 'keyId'"),
            "{}",
            missing.message
        );
        let Err(wrong_type) = input::<KeyIdInput>(json!({"KeyId": 7})) else {
            panic!("a number KeyId must be refused")
        };
        assert_eq!(wrong_type.code, "SerializationException");
        let Err(bad_blob) = input::<EncryptInput>(json!({"KeyId": "k", "Plaintext": "@@"})) else {
            panic!("a bad blob must be refused")
        };
        assert_eq!(bad_blob.code, "SerializationException");
    }

    #[tokio::test]
    async fn every_listed_operation_is_dispatched() {
        use std::sync::Arc;

        use crate::aws::identity::AccessKeyDirectory;
        use crate::crypto::RootKeyring;
        use crate::engine::{Principal, SystemClock};
        use crate::store::{EmbeddedStore, Store};

        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let keyring = Arc::new(RootKeyring::generate());
        let directory = Arc::new(AccessKeyDirectory::new(
            store.clone(),
            keyring.clone(),
            "default",
        ));
        let kms = Kms::new(
            store,
            keyring,
            directory,
            Arc::new(SystemClock),
            "us-east-1",
        );
        let caller = Caller {
            namespace: "default".into(),
            principal: Principal {
                arn: "arn:aws:iam::000000000000:user/nobody".into(),
                account_id: "000000000000".into(),
            },
        };
        for target in OPERATIONS {
            let operation = target.strip_prefix("TrentService.").unwrap();
            let mut facts = CallFacts::default();
            let outcome = dispatch(&kms, &caller, operation, b"{}", &mut facts).await;
            if let Err(error) = outcome {
                assert_ne!(
                    error.code, "UnknownOperationException",
                    "{target} is listed but not served"
                );
            }
        }
        let mut facts = CallFacts::default();
        let Err(unknown) = dispatch(&kms, &caller, "CreateGrant", b"{}", &mut facts).await else {
            panic!("an unlisted operation must be refused")
        };
        assert_eq!(unknown.code, "UnknownOperationException");
    }
}
