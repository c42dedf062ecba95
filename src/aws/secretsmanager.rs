//! Secrets Manager on the wire (`secretsmanager.*`): one input shape, one handler and one output
//! shape per operation, and the table that lists them ([`JsonService`] for [`Secrets`]).

use serde::{Deserialize, Serialize, Serializer};

use super::ops::{JsonService, Operation};
use super::wire::{self, Empty, SecretBlob, SecretText};
use super::{AwsError, CallFacts};
use crate::aws_operation;
use crate::crypto::SecretBytes;
use crate::engine::Caller;
use crate::engine::secrets::rotation_rules::RotationRules;
use crate::engine::secrets::{
    BatchError, ListFilter, ListSecretsRequest, NewSecret, PasswordOptions, RotateOutcome,
    RotateRequest, SecretDescription, SecretUpdate, SecretValue, Secrets, SecretsError,
    VersionEntry, VersionValue, WriteOutcome, random_password,
};

impl From<SecretsError> for AwsError {
    fn from(err: SecretsError) -> Self {
        AwsError::from_service(&err)
    }
}

impl JsonService for Secrets {
    const TARGET_PREFIX: &'static str = "secretsmanager";
    const SIGNING_NAME: &'static str = "secretsmanager";

    fn operations() -> &'static [Operation<Self>] {
        OPERATIONS
    }
}

/// Every Secrets Manager operation Coffer serves, sorted by target.
static OPERATIONS: &[Operation<Secrets>] = &[
    aws_operation!("secretsmanager.BatchGetSecretValue", batch_get_secret_value),
    aws_operation!("secretsmanager.CancelRotateSecret", cancel_rotate_secret),
    aws_operation!("secretsmanager.CreateSecret", create_secret),
    aws_operation!(
        "secretsmanager.DeleteResourcePolicy",
        delete_resource_policy
    ),
    aws_operation!("secretsmanager.DeleteSecret", delete_secret),
    aws_operation!("secretsmanager.DescribeSecret", describe_secret),
    aws_operation!("secretsmanager.GetRandomPassword", get_random_password),
    aws_operation!("secretsmanager.GetResourcePolicy", get_resource_policy),
    aws_operation!("secretsmanager.GetSecretValue", get_secret_value),
    aws_operation!(
        "secretsmanager.ListSecretVersionIds",
        list_secret_version_ids
    ),
    aws_operation!("secretsmanager.ListSecrets", list_secrets),
    aws_operation!("secretsmanager.PutResourcePolicy", put_resource_policy),
    aws_operation!("secretsmanager.PutSecretValue", put_secret_value),
    aws_operation!("secretsmanager.RestoreSecret", restore_secret),
    aws_operation!("secretsmanager.RotateSecret", rotate_secret),
    aws_operation!("secretsmanager.TagResource", tag_resource),
    aws_operation!("secretsmanager.UntagResource", untag_resource),
    aws_operation!("secretsmanager.UpdateSecret", update_secret),
    aws_operation!(
        "secretsmanager.UpdateSecretVersionStage",
        update_secret_version_stage
    ),
    aws_operation!(
        "secretsmanager.ValidateResourcePolicy",
        validate_resource_policy
    ),
];

// ---------------------------------------------------------------------------------------------
// Shapes used by several operations
// ---------------------------------------------------------------------------------------------

/// The value of a write: SecretString or SecretBinary, not both.
fn value_of(
    string: Option<SecretText>,
    binary: Option<SecretBlob>,
) -> Result<Option<SecretValue>, AwsError> {
    match (string, binary) {
        (Some(_), Some(_)) => Err(AwsError::client(
            "InvalidParameterException",
            "You can't specify both a binary secret value and a string secret value in the same secret.",
        )),
        (Some(SecretText(bytes)), None) => Ok(Some(SecretValue {
            bytes,
            binary: false,
        })),
        (None, Some(SecretBlob(bytes))) => Ok(Some(SecretValue {
            bytes,
            binary: true,
        })),
        (None, None) => Ok(None),
    }
}

#[derive(Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Tag {
    key: String,
    value: String,
}

fn tag_pairs(tags: Vec<Tag>) -> Vec<(String, String)> {
    tags.into_iter().map(|tag| (tag.key, tag.value)).collect()
}

fn tag_shapes(tags: &[(String, String)]) -> Vec<Tag> {
    tags.iter()
        .map(|(key, value)| Tag {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Filter {
    key: String,
    #[serde(default)]
    values: Vec<String>,
}

fn filters(filters: Vec<Filter>) -> Vec<ListFilter> {
    filters
        .into_iter()
        .map(|filter| ListFilter {
            key: filter.key,
            values: filter.values,
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretIdInput {
    secret_id: String,
}

/// `{"ARN", "Name"}`, the answer of most writes.
#[derive(Serialize)]
struct ArnAndName {
    #[serde(rename = "ARN")]
    arn: String,
    #[serde(rename = "Name")]
    name: String,
}

impl From<WriteOutcome> for ArnAndName {
    fn from(outcome: WriteOutcome) -> Self {
        ArnAndName {
            arn: outcome.arn,
            name: outcome.name,
        }
    }
}

#[derive(Serialize)]
struct Written {
    #[serde(rename = "ARN")]
    arn: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "VersionId", skip_serializing_if = "Option::is_none")]
    version_id: Option<String>,
}

impl From<WriteOutcome> for Written {
    fn from(outcome: WriteOutcome) -> Self {
        Written {
            arn: outcome.arn,
            name: outcome.name,
            version_id: outcome.version_id,
        }
    }
}

fn seconds(value: i64) -> f64 {
    // Exact for any date in the next several million years.
    #[allow(clippy::cast_precision_loss)]
    let value = value as f64;
    value
}

fn secret_string<S: Serializer>(
    value: &Option<SecretBytes>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(bytes) => serializer.serialize_str(
            std::str::from_utf8(bytes.expose())
                .map_err(|_| serde::ser::Error::custom("a SecretString that is not UTF-8"))?,
        ),
        None => serializer.serialize_none(),
    }
}

/// GetSecretValue's output, and each entry of BatchGetSecretValue's.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SecretValueShape {
    #[serde(rename = "ARN")]
    arn: String,
    name: String,
    version_id: String,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "wire::optional_secret_base64"
    )]
    secret_binary: Option<SecretBytes>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "secret_string"
    )]
    secret_string: Option<SecretBytes>,
    version_stages: Vec<String>,
    created_date: f64,
}

impl From<VersionValue> for SecretValueShape {
    fn from(value: VersionValue) -> Self {
        let (secret_binary, secret_string) = if value.value.binary {
            (Some(value.value.bytes), None)
        } else {
            (None, Some(value.value.bytes))
        };
        SecretValueShape {
            arn: value.arn,
            name: value.name,
            version_id: value.version_id,
            secret_binary,
            secret_string,
            version_stages: value.stages,
            created_date: seconds(value.created),
        }
    }
}

/// DescribeSecret's output, and each entry of ListSecrets'.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SecretShape {
    #[serde(rename = "ARN")]
    arn: String,
    name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    kms_key_id: Option<String>,
    rotation_enabled: bool,
    #[serde(rename = "RotationLambdaARN", skip_serializing_if = "Option::is_none")]
    rotation_lambda_arn: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rotation_rules: Option<RotationRulesShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_rotated_date: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_rotation_date: Option<f64>,
    /// Not in AWS's shape (SDKs ignore it): the rotation under way and why its last attempt
    /// failed, which AWS shows only in its logs.
    #[serde(skip_serializing_if = "Option::is_none")]
    coffer_rotation_status: Option<RotationStatusShape>,
    created_date: f64,
    last_changed_date: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted_date: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<Tag>,
    /// `VersionIdsToStages` in DescribeSecret, `SecretVersionsToStages` in ListSecrets.
    #[serde(flatten)]
    versions: VersionsToStages,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RotationRulesShape {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    automatically_after_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    duration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule_expression: Option<String>,
}

impl From<RotationRules> for RotationRulesShape {
    fn from(rules: RotationRules) -> Self {
        Self {
            automatically_after_days: rules.automatically_after_days,
            duration: rules.duration,
            schedule_expression: rules.schedule_expression,
        }
    }
}

impl From<RotationRulesShape> for RotationRules {
    fn from(rules: RotationRulesShape) -> Self {
        Self {
            automatically_after_days: rules.automatically_after_days,
            duration: rules.duration,
            schedule_expression: rules.schedule_expression,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RotationStatusShape {
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<String>,
}

#[derive(Serialize)]
enum VersionsToStages {
    #[serde(rename = "VersionIdsToStages")]
    Described(std::collections::BTreeMap<String, Vec<String>>),
    #[serde(rename = "SecretVersionsToStages")]
    Listed(std::collections::BTreeMap<String, Vec<String>>),
}

fn secret_shape(description: SecretDescription, listed: bool) -> SecretShape {
    SecretShape {
        tags: tag_shapes(&description.tags),
        arn: description.arn,
        name: description.name,
        description: description.description,
        kms_key_id: description.kms_key_id,
        rotation_enabled: description.rotation.enabled,
        rotation_lambda_arn: description.rotation.function_arn.clone(),
        rotation_rules: description.rotation.rules.clone().map(Into::into),
        last_rotated_date: description.rotation.last_rotated.map(seconds),
        next_rotation_date: description.rotation.next_rotation.map(seconds),
        coffer_rotation_status: (description.rotation.in_progress.is_some()
            || description.rotation.last_error.is_some())
        .then(|| {
            let (step, version_id) = description
                .rotation
                .in_progress
                .clone()
                .map_or((None, None), |(step, token)| {
                    (Some(step.as_str()), Some(token))
                });
            RotationStatusShape {
                step,
                version_id,
                last_error: description.rotation.last_error.clone(),
            }
        }),
        created_date: seconds(description.created),
        last_changed_date: seconds(description.last_changed),
        deleted_date: description.deleted.map(seconds),
        versions: if listed {
            VersionsToStages::Listed(description.versions_to_stages)
        } else {
            VersionsToStages::Described(description.versions_to_stages)
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateSecretInput {
    name: String,
    client_request_token: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
    secret_binary: Option<SecretBlob>,
    secret_string: Option<SecretText>,
    #[serde(default)]
    tags: Vec<Tag>,
    #[serde(default)]
    add_replica_regions: Vec<serde_json::Value>,
    #[allow(dead_code)]
    force_overwrite_replica_secret: Option<bool>,
}

async fn create_secret(
    secrets: &Secrets,
    caller: &Caller,
    input: CreateSecretInput,
    facts: &mut CallFacts,
) -> Result<Written, AwsError> {
    facts.asked_for(&input.name);
    if !input.add_replica_regions.is_empty() {
        return Err(AwsError::client(
            "InvalidParameterException",
            "Replica regions are not supported.",
        ));
    }
    let outcome = secrets
        .create_secret(
            caller,
            NewSecret {
                name: input.name,
                client_request_token: input.client_request_token,
                description: input.description,
                kms_key_id: input.kms_key_id,
                value: value_of(input.secret_string, input.secret_binary)?,
                tags: tag_pairs(input.tags),
            },
        )
        .await?;
    facts.done_with(&outcome.arn);
    Ok(outcome.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutSecretValueInput {
    secret_id: String,
    client_request_token: Option<String>,
    secret_binary: Option<SecretBlob>,
    secret_string: Option<SecretText>,
    #[serde(default)]
    version_stages: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutSecretValueOutput {
    #[serde(rename = "ARN")]
    arn: String,
    name: String,
    version_id: Option<String>,
    version_stages: Vec<String>,
}

async fn put_secret_value(
    secrets: &Secrets,
    caller: &Caller,
    input: PutSecretValueInput,
    facts: &mut CallFacts,
) -> Result<PutSecretValueOutput, AwsError> {
    facts.asked_for(&input.secret_id);
    let value = value_of(input.secret_string, input.secret_binary)?.ok_or_else(|| {
        AwsError::client(
            "InvalidRequestException",
            "You must provide either SecretString or SecretBinary.",
        )
    })?;
    let outcome = secrets
        .put_secret_value(
            caller,
            &input.secret_id,
            input.client_request_token,
            value,
            input.version_stages,
        )
        .await?;
    facts.done_with(&outcome.arn);
    Ok(PutSecretValueOutput {
        arn: outcome.arn,
        name: outcome.name,
        version_id: outcome.version_id,
        version_stages: outcome.stages,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetSecretValueInput {
    secret_id: String,
    version_id: Option<String>,
    version_stage: Option<String>,
}

async fn get_secret_value(
    secrets: &Secrets,
    caller: &Caller,
    input: GetSecretValueInput,
    facts: &mut CallFacts,
) -> Result<SecretValueShape, AwsError> {
    facts.asked_for(&input.secret_id);
    let value = secrets
        .get_secret_value(
            caller,
            &input.secret_id,
            input.version_id.as_deref(),
            input.version_stage.as_deref(),
        )
        .await?;
    facts.done_with(&value.arn);
    Ok(value.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BatchGetSecretValueInput {
    #[serde(default)]
    secret_id_list: Vec<String>,
    #[serde(default)]
    filters: Vec<Filter>,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BatchErrorShape {
    secret_id: String,
    error_code: &'static str,
    message: String,
}

impl From<BatchError> for BatchErrorShape {
    fn from(error: BatchError) -> Self {
        BatchErrorShape {
            secret_id: super::truncate_for_message(&error.secret_id),
            error_code: error.error_code,
            message: error.message,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct BatchGetSecretValueOutput {
    secret_values: Vec<SecretValueShape>,
    errors: Vec<BatchErrorShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

async fn batch_get_secret_value(
    secrets: &Secrets,
    caller: &Caller,
    input: BatchGetSecretValueInput,
    _facts: &mut CallFacts,
) -> Result<BatchGetSecretValueOutput, AwsError> {
    let outcome = secrets
        .batch_get_secret_value(
            caller,
            input.secret_id_list,
            filters(input.filters),
            input.max_results,
            input.next_token,
        )
        .await?;
    Ok(BatchGetSecretValueOutput {
        secret_values: outcome.values.into_iter().map(Into::into).collect(),
        errors: outcome.errors.into_iter().map(Into::into).collect(),
        next_token: outcome.next_token,
    })
}

async fn describe_secret(
    secrets: &Secrets,
    caller: &Caller,
    input: SecretIdInput,
    facts: &mut CallFacts,
) -> Result<SecretShape, AwsError> {
    facts.asked_for(&input.secret_id);
    let description = secrets.describe_secret(caller, &input.secret_id).await?;
    facts.done_with(&description.arn);
    Ok(secret_shape(description, false))
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RotateSecretInput {
    secret_id: String,
    client_request_token: Option<String>,
    #[serde(rename = "RotationLambdaARN")]
    rotation_lambda_arn: Option<String>,
    rotation_rules: Option<RotationRulesShape>,
    rotate_immediately: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RotateSecretOutput {
    #[serde(rename = "ARN")]
    arn: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<String>,
}

impl From<RotateOutcome> for RotateSecretOutput {
    fn from(outcome: RotateOutcome) -> Self {
        Self {
            arn: outcome.arn,
            name: outcome.name,
            version_id: outcome.version_id,
        }
    }
}

async fn rotate_secret(
    secrets: &Secrets,
    caller: &Caller,
    input: RotateSecretInput,
    facts: &mut CallFacts,
) -> Result<RotateSecretOutput, AwsError> {
    facts.asked_for(&input.secret_id);
    let outcome = secrets
        .rotate_secret(
            caller,
            &input.secret_id,
            RotateRequest {
                client_request_token: input.client_request_token,
                function_arn: input.rotation_lambda_arn,
                rules: input.rotation_rules.map(Into::into),
                rotate_immediately: input.rotate_immediately,
            },
        )
        .await?;
    facts.done_with(&outcome.arn);
    Ok(outcome.into())
}

async fn cancel_rotate_secret(
    secrets: &Secrets,
    caller: &Caller,
    input: SecretIdInput,
    facts: &mut CallFacts,
) -> Result<RotateSecretOutput, AwsError> {
    facts.asked_for(&input.secret_id);
    let outcome = secrets
        .cancel_rotate_secret(caller, &input.secret_id)
        .await?;
    facts.done_with(&outcome.arn);
    Ok(outcome.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListSecretsInput {
    #[serde(default)]
    include_planned_deletion: bool,
    max_results: Option<i64>,
    next_token: Option<String>,
    #[serde(default)]
    filters: Vec<Filter>,
    sort_order: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListSecretsOutput {
    secret_list: Vec<SecretShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

async fn list_secrets(
    secrets: &Secrets,
    caller: &Caller,
    input: ListSecretsInput,
    _facts: &mut CallFacts,
) -> Result<ListSecretsOutput, AwsError> {
    let page = secrets
        .list_secrets(
            caller,
            ListSecretsRequest {
                filters: filters(input.filters),
                include_planned_deletion: input.include_planned_deletion,
                sort_order: input.sort_order,
                max_results: input.max_results,
                next_token: input.next_token,
            },
        )
        .await?;
    Ok(ListSecretsOutput {
        secret_list: page
            .items
            .into_iter()
            .map(|entry| secret_shape(entry, true))
            .collect(),
        next_token: page.next_token,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListSecretVersionIdsInput {
    secret_id: String,
    max_results: Option<i64>,
    next_token: Option<String>,
    #[serde(default)]
    include_deprecated: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct VersionShape {
    version_id: String,
    version_stages: Vec<String>,
    created_date: f64,
    kms_key_ids: Vec<String>,
}

impl From<VersionEntry> for VersionShape {
    fn from(entry: VersionEntry) -> Self {
        VersionShape {
            version_id: entry.version_id,
            version_stages: entry.stages,
            created_date: seconds(entry.created),
            kms_key_ids: vec![entry.kms_key_arn],
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListSecretVersionIdsOutput {
    versions: Vec<VersionShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
    #[serde(rename = "ARN")]
    arn: String,
    name: String,
}

async fn list_secret_version_ids(
    secrets: &Secrets,
    caller: &Caller,
    input: ListSecretVersionIdsInput,
    facts: &mut CallFacts,
) -> Result<ListSecretVersionIdsOutput, AwsError> {
    facts.asked_for(&input.secret_id);
    let (secret, page) = secrets
        .list_secret_version_ids(
            caller,
            &input.secret_id,
            input.include_deprecated,
            input.max_results,
            input.next_token.as_deref(),
        )
        .await?;
    facts.done_with(&secret.arn);
    Ok(ListSecretVersionIdsOutput {
        versions: page.items.into_iter().map(Into::into).collect(),
        next_token: page.next_token,
        arn: secret.arn,
        name: secret.name,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateSecretInput {
    secret_id: String,
    client_request_token: Option<String>,
    description: Option<String>,
    kms_key_id: Option<String>,
    secret_binary: Option<SecretBlob>,
    secret_string: Option<SecretText>,
}

async fn update_secret(
    secrets: &Secrets,
    caller: &Caller,
    input: UpdateSecretInput,
    facts: &mut CallFacts,
) -> Result<Written, AwsError> {
    facts.asked_for(&input.secret_id);
    let outcome = secrets
        .update_secret(
            caller,
            &input.secret_id,
            SecretUpdate {
                client_request_token: input.client_request_token,
                description: input.description,
                kms_key_id: input.kms_key_id,
                value: value_of(input.secret_string, input.secret_binary)?,
            },
        )
        .await?;
    facts.done_with(&outcome.arn);
    Ok(outcome.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateSecretVersionStageInput {
    secret_id: String,
    version_stage: String,
    remove_from_version_id: Option<String>,
    move_to_version_id: Option<String>,
}

async fn update_secret_version_stage(
    secrets: &Secrets,
    caller: &Caller,
    input: UpdateSecretVersionStageInput,
    facts: &mut CallFacts,
) -> Result<ArnAndName, AwsError> {
    facts.asked_for(&input.secret_id);
    let outcome = secrets
        .update_secret_version_stage(
            caller,
            &input.secret_id,
            &input.version_stage,
            input.move_to_version_id.as_deref(),
            input.remove_from_version_id.as_deref(),
        )
        .await?;
    facts.done_with(&outcome.arn);
    Ok(outcome.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteSecretInput {
    secret_id: String,
    recovery_window_in_days: Option<i64>,
    #[serde(default)]
    force_delete_without_recovery: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteSecretOutput {
    #[serde(rename = "ARN")]
    arn: String,
    name: String,
    deletion_date: f64,
}

async fn delete_secret(
    secrets: &Secrets,
    caller: &Caller,
    input: DeleteSecretInput,
    facts: &mut CallFacts,
) -> Result<DeleteSecretOutput, AwsError> {
    facts.asked_for(&input.secret_id);
    let (outcome, deletion_date) = secrets
        .delete_secret(
            caller,
            &input.secret_id,
            input.recovery_window_in_days,
            input.force_delete_without_recovery,
        )
        .await?;
    facts.done_with(&outcome.arn);
    Ok(DeleteSecretOutput {
        arn: outcome.arn,
        name: outcome.name,
        deletion_date: seconds(deletion_date),
    })
}

async fn restore_secret(
    secrets: &Secrets,
    caller: &Caller,
    input: SecretIdInput,
    facts: &mut CallFacts,
) -> Result<ArnAndName, AwsError> {
    facts.asked_for(&input.secret_id);
    let outcome = secrets.restore_secret(caller, &input.secret_id).await?;
    facts.done_with(&outcome.arn);
    Ok(outcome.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagResourceInput {
    secret_id: String,
    tags: Vec<Tag>,
}

async fn tag_resource(
    secrets: &Secrets,
    caller: &Caller,
    input: TagResourceInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.secret_id);
    secrets
        .tag_resource(caller, &input.secret_id, tag_pairs(input.tags))
        .await?;
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UntagResourceInput {
    secret_id: String,
    tag_keys: Vec<String>,
}

async fn untag_resource(
    secrets: &Secrets,
    caller: &Caller,
    input: UntagResourceInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.secret_id);
    secrets
        .untag_resource(caller, &input.secret_id, input.tag_keys)
        .await?;
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetRandomPasswordInput {
    password_length: Option<i64>,
    exclude_characters: Option<String>,
    #[serde(default)]
    exclude_numbers: bool,
    #[serde(default)]
    exclude_punctuation: bool,
    #[serde(default)]
    exclude_uppercase: bool,
    #[serde(default)]
    exclude_lowercase: bool,
    #[serde(default)]
    include_space: bool,
    require_each_included_type: Option<bool>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetRandomPasswordOutput {
    #[serde(serialize_with = "secret_string")]
    random_password: Option<SecretBytes>,
}

async fn get_random_password(
    _secrets: &Secrets,
    _caller: &Caller,
    input: GetRandomPasswordInput,
    _facts: &mut CallFacts,
) -> Result<GetRandomPasswordOutput, AwsError> {
    let password = random_password(&PasswordOptions {
        length: input.password_length,
        exclude_characters: input.exclude_characters,
        exclude_numbers: input.exclude_numbers,
        exclude_punctuation: input.exclude_punctuation,
        exclude_uppercase: input.exclude_uppercase,
        exclude_lowercase: input.exclude_lowercase,
        include_space: input.include_space,
        require_each_included_type: input.require_each_included_type,
    })?;
    Ok(GetRandomPasswordOutput {
        random_password: Some(password),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutResourcePolicyInput {
    secret_id: String,
    resource_policy: String,
    #[serde(default)]
    block_public_policy: bool,
}

async fn put_resource_policy(
    secrets: &Secrets,
    caller: &Caller,
    input: PutResourcePolicyInput,
    facts: &mut CallFacts,
) -> Result<ArnAndName, AwsError> {
    facts.asked_for(&input.secret_id);
    let outcome = secrets
        .put_resource_policy(
            caller,
            &input.secret_id,
            &input.resource_policy,
            input.block_public_policy,
        )
        .await?;
    facts.done_with(&outcome.arn);
    Ok(outcome.into())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetResourcePolicyOutput {
    #[serde(rename = "ARN")]
    arn: String,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    resource_policy: Option<String>,
}

async fn get_resource_policy(
    secrets: &Secrets,
    caller: &Caller,
    input: SecretIdInput,
    facts: &mut CallFacts,
) -> Result<GetResourcePolicyOutput, AwsError> {
    facts.asked_for(&input.secret_id);
    let (outcome, resource_policy) = secrets
        .get_resource_policy(caller, &input.secret_id)
        .await?;
    facts.done_with(&outcome.arn);
    Ok(GetResourcePolicyOutput {
        arn: outcome.arn,
        name: outcome.name,
        resource_policy,
    })
}

async fn delete_resource_policy(
    secrets: &Secrets,
    caller: &Caller,
    input: SecretIdInput,
    facts: &mut CallFacts,
) -> Result<ArnAndName, AwsError> {
    facts.asked_for(&input.secret_id);
    let outcome = secrets
        .delete_resource_policy(caller, &input.secret_id)
        .await?;
    facts.done_with(&outcome.arn);
    Ok(outcome.into())
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ValidateResourcePolicyInput {
    secret_id: Option<String>,
    resource_policy: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ValidationError {
    check_name: &'static str,
    error_message: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ValidateResourcePolicyOutput {
    policy_validation_passed: bool,
    validation_errors: Vec<ValidationError>,
}

async fn validate_resource_policy(
    secrets: &Secrets,
    caller: &Caller,
    input: ValidateResourcePolicyInput,
    _facts: &mut CallFacts,
) -> Result<ValidateResourcePolicyOutput, AwsError> {
    match secrets
        .validate_resource_policy(caller, input.secret_id.as_deref(), &input.resource_policy)
        .await
    {
        Ok(()) => Ok(ValidateResourcePolicyOutput {
            policy_validation_passed: true,
            validation_errors: Vec::new(),
        }),
        Err(SecretsError::PublicPolicy(message)) => Ok(ValidateResourcePolicyOutput {
            policy_validation_passed: false,
            validation_errors: vec![ValidationError {
                check_name: "BLOCK_PUBLIC_POLICY",
                error_message: message,
            }],
        }),
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_strings_are_read_as_secrets_and_never_quoted_back() {
        let input: CreateSecretInput =
            wire::decode(br#"{"Name": "n", "SecretString": "p\u00e4ss"}"#)
                .ok()
                .unwrap();
        assert_eq!(input.secret_string.unwrap().0.expose(), "päss".as_bytes());
        let err =
            wire::decode::<CreateSecretInput>(br#"{"Name": "n", "SecretString": 31415926535}"#)
                .err()
                .unwrap();
        assert_eq!(err.code, "SerializationException");
        assert!(!err.message.contains("31415926535"), "{}", err.message);
    }
}
