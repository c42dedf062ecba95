//! SSM Parameter Store on the wire (`AmazonSSM.*`): one input shape, one handler and one output
//! shape per operation, the table that lists them ([`JsonService`] for [`Parameters`]), and the
//! AWS exception names of the engine's errors.

use serde::{Deserialize, Serialize, Serializer};

use super::ops::{JsonService, Operation};
use super::wire::{Empty, SecretText};
use super::{AwsError, CallFacts};
use crate::aws_operation;
use crate::crypto::SecretBytes;
use crate::engine::Caller;
use crate::engine::parameters::{
    HistoryEntry, ParameterDescription, ParameterValue, Parameters, ParametersError, PolicyView,
    PutParameterRequest, StringFilter,
};

impl crate::engine::ServiceError for ParametersError {
    fn aws_code(&self) -> &'static str {
        match self {
            ParametersError::NotFound(_) => "ParameterNotFound",
            ParametersError::AlreadyExists => "ParameterAlreadyExists",
            ParametersError::LimitExceeded => "ParameterLimitExceeded",
            ParametersError::MaxVersionLimitExceeded(_) => "ParameterMaxVersionLimitExceeded",
            ParametersError::VersionNotFound(_) => "ParameterVersionNotFound",
            ParametersError::VersionLabelLimitExceeded(_) => "ParameterVersionLabelLimitExceeded",
            ParametersError::HierarchyLevelLimitExceeded(_) => {
                "HierarchyLevelLimitExceededException"
            }
            ParametersError::InvalidAllowedPattern(_) => "InvalidAllowedPatternException",
            ParametersError::PatternMismatch(_) => "ParameterPatternMismatchException",
            ParametersError::InvalidKeyId(_) => "InvalidKeyId",
            ParametersError::InvalidFilterKey(_) => "InvalidFilterKey",
            ParametersError::InvalidFilterOption(_) => "InvalidFilterOption",
            ParametersError::InvalidFilterValue(_) => "InvalidFilterValue",
            ParametersError::InvalidNextToken => "InvalidNextToken",
            ParametersError::InvalidResourceId => "InvalidResourceId",
            ParametersError::InvalidResourceType => "InvalidResourceType",
            ParametersError::UnsupportedParameterType(_) => "UnsupportedParameterType",
            ParametersError::Validation(_) => "ValidationException",
            ParametersError::AccessDenied(_) => "AccessDeniedException",
            ParametersError::InvalidPolicyType(_) => "InvalidPolicyTypeException",
            ParametersError::InvalidPolicyAttribute(_) => "InvalidPolicyAttributeException",
            ParametersError::IncompatiblePolicy(_) => "IncompatiblePolicyException",
            ParametersError::PoliciesLimitExceeded(_) => "PoliciesLimitExceededException",
            ParametersError::TooManyTags(_) => "TooManyTagsError",
            ParametersError::Busy(_) => "ThrottlingException",
            ParametersError::Internal(_) => "InternalServerError",
        }
    }

    fn is_fault(&self) -> bool {
        matches!(self, ParametersError::Internal(_))
    }
}

impl From<ParametersError> for AwsError {
    fn from(err: ParametersError) -> Self {
        AwsError::from_service(&err)
    }
}

impl JsonService for Parameters {
    const TARGET_PREFIX: &'static str = "AmazonSSM";
    const SIGNING_NAME: &'static str = "ssm";

    fn operations() -> &'static [Operation<Self>] {
        OPERATIONS
    }
}

/// Every Parameter Store operation Coffer serves, sorted by target.
static OPERATIONS: &[Operation<Parameters>] = &[
    aws_operation!("AmazonSSM.AddTagsToResource", add_tags_to_resource),
    aws_operation!("AmazonSSM.DeleteParameter", delete_parameter),
    aws_operation!("AmazonSSM.DeleteParameters", delete_parameters),
    aws_operation!("AmazonSSM.DescribeParameters", describe_parameters),
    aws_operation!("AmazonSSM.GetParameter", get_parameter),
    aws_operation!("AmazonSSM.GetParameterHistory", get_parameter_history),
    aws_operation!("AmazonSSM.GetParameters", get_parameters),
    aws_operation!("AmazonSSM.GetParametersByPath", get_parameters_by_path),
    aws_operation!("AmazonSSM.LabelParameterVersion", label_parameter_version),
    aws_operation!("AmazonSSM.ListTagsForResource", list_tags_for_resource),
    aws_operation!("AmazonSSM.PutParameter", put_parameter),
    aws_operation!(
        "AmazonSSM.RemoveTagsFromResource",
        remove_tags_from_resource
    ),
    aws_operation!(
        "AmazonSSM.UnlabelParameterVersion",
        unlabel_parameter_version
    ),
];

// ---------------------------------------------------------------------------------------------
// Shapes used by several operations
// ---------------------------------------------------------------------------------------------

fn value_string<S: Serializer>(value: &SecretBytes, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(
        std::str::from_utf8(value.expose())
            .map_err(|_| serde::ser::Error::custom("a parameter value that is not UTF-8"))?,
    )
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

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct FilterShape {
    key: String,
    option: Option<String>,
    #[serde(default)]
    values: Vec<String>,
}

fn string_filters(filters: Vec<FilterShape>) -> Vec<StringFilter> {
    filters
        .into_iter()
        .map(|filter| StringFilter {
            key: filter.key,
            option: filter.option,
            values: filter.values,
        })
        .collect()
}

fn seconds(value: i64) -> f64 {
    // Exact for any date in the next several million years.
    #[allow(clippy::cast_precision_loss)]
    let value = value as f64;
    value
}

fn version_number(version: u64) -> i64 {
    i64::try_from(version).unwrap_or(i64::MAX)
}

/// A ParameterVersion as the caller sends it: 1 or more.
fn requested_version(version: i64) -> Result<u64, AwsError> {
    u64::try_from(version)
        .ok()
        .filter(|version| *version >= 1)
        .ok_or_else(|| {
            AwsError::client(
                "ValidationException",
                "1 validation error detected: Value at 'parameterVersion' failed to satisfy constraint: Member must have value greater than or equal to 1",
            )
        })
}

/// A Parameter, as GetParameter, GetParameters and GetParametersByPath answer it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ParameterShape {
    name: String,
    #[serde(rename = "Type")]
    type_: &'static str,
    #[serde(serialize_with = "value_string")]
    value: SecretBytes,
    version: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    selector: Option<String>,
    last_modified_date: f64,
    #[serde(rename = "ARN")]
    arn: String,
    data_type: String,
}

impl From<ParameterValue> for ParameterShape {
    fn from(value: ParameterValue) -> Self {
        ParameterShape {
            name: value.name,
            type_: value.type_.as_str(),
            value: value.value,
            version: version_number(value.version),
            selector: value.selector,
            last_modified_date: seconds(value.modified),
            arn: value.arn,
            data_type: value.data_type,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PolicyShape {
    policy_text: String,
    policy_type: &'static str,
    policy_status: &'static str,
}

fn policy_shapes(policies: Vec<PolicyView>) -> Vec<PolicyShape> {
    policies
        .into_iter()
        .map(|policy| PolicyShape {
            policy_text: policy.text,
            policy_type: policy.type_,
            policy_status: policy.status,
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NameInput {
    name: String,
}

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutParameterInput {
    name: String,
    description: Option<String>,
    value: SecretText,
    #[serde(rename = "Type")]
    type_: Option<String>,
    key_id: Option<String>,
    #[serde(default)]
    overwrite: bool,
    allowed_pattern: Option<String>,
    #[serde(default)]
    tags: Vec<Tag>,
    tier: Option<String>,
    policies: Option<String>,
    data_type: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PutParameterOutput {
    version: i64,
    tier: &'static str,
}

async fn put_parameter(
    parameters: &Parameters,
    caller: &Caller,
    input: PutParameterInput,
    facts: &mut CallFacts,
) -> Result<PutParameterOutput, AwsError> {
    facts.asked_for(&input.name);
    let outcome = parameters
        .put_parameter(
            caller,
            PutParameterRequest {
                name: input.name,
                value: input.value.0,
                type_: input.type_,
                key_id: input.key_id,
                overwrite: input.overwrite,
                allowed_pattern: input.allowed_pattern,
                tier: input.tier,
                policies: input.policies,
                data_type: input.data_type,
                description: input.description,
                tags: tag_pairs(input.tags),
            },
        )
        .await?;
    facts.done_with(&outcome.arn);
    Ok(PutParameterOutput {
        version: version_number(outcome.version),
        tier: outcome.tier.as_str(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParameterInput {
    name: String,
    #[serde(default)]
    with_decryption: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParameterOutput {
    parameter: ParameterShape,
}

async fn get_parameter(
    parameters: &Parameters,
    caller: &Caller,
    input: GetParameterInput,
    facts: &mut CallFacts,
) -> Result<GetParameterOutput, AwsError> {
    facts.asked_for(&input.name);
    let value = parameters
        .get_parameter(caller, &input.name, input.with_decryption)
        .await?;
    facts.done_with(&value.arn);
    Ok(GetParameterOutput {
        parameter: value.into(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersInput {
    names: Vec<String>,
    #[serde(default)]
    with_decryption: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersOutput {
    parameters: Vec<ParameterShape>,
    invalid_parameters: Vec<String>,
}

async fn get_parameters(
    parameters: &Parameters,
    caller: &Caller,
    input: GetParametersInput,
    _facts: &mut CallFacts,
) -> Result<GetParametersOutput, AwsError> {
    let outcome = parameters
        .get_parameters(caller, &input.names, input.with_decryption)
        .await?;
    Ok(GetParametersOutput {
        parameters: outcome.parameters.into_iter().map(Into::into).collect(),
        invalid_parameters: outcome
            .invalid
            .iter()
            .map(|name| super::truncate_for_message(name))
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersByPathInput {
    path: String,
    #[serde(default)]
    recursive: bool,
    #[serde(default)]
    parameter_filters: Vec<FilterShape>,
    #[serde(default)]
    with_decryption: bool,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersByPathOutput {
    parameters: Vec<ParameterShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

async fn get_parameters_by_path(
    parameters: &Parameters,
    caller: &Caller,
    input: GetParametersByPathInput,
    facts: &mut CallFacts,
) -> Result<GetParametersByPathOutput, AwsError> {
    facts.asked_for(&input.path);
    let page = parameters
        .get_parameters_by_path(
            caller,
            &input.path,
            input.recursive,
            &string_filters(input.parameter_filters),
            input.with_decryption,
            input.max_results,
            input.next_token.as_deref(),
        )
        .await?;
    Ok(GetParametersByPathOutput {
        parameters: page.items.into_iter().map(Into::into).collect(),
        next_token: page.next_token,
    })
}

async fn delete_parameter(
    parameters: &Parameters,
    caller: &Caller,
    input: NameInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.name);
    let arn = parameters.delete_parameter(caller, &input.name).await?;
    facts.done_with(&arn);
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteParametersInput {
    names: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteParametersOutput {
    deleted_parameters: Vec<String>,
    invalid_parameters: Vec<String>,
}

async fn delete_parameters(
    parameters: &Parameters,
    caller: &Caller,
    input: DeleteParametersInput,
    _facts: &mut CallFacts,
) -> Result<DeleteParametersOutput, AwsError> {
    let outcome = parameters.delete_parameters(caller, &input.names).await?;
    Ok(DeleteParametersOutput {
        deleted_parameters: outcome.deleted,
        invalid_parameters: outcome
            .invalid
            .iter()
            .map(|name| super::truncate_for_message(name))
            .collect(),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeParametersInput {
    #[serde(default)]
    filters: Vec<FilterShape>,
    #[serde(default)]
    parameter_filters: Vec<FilterShape>,
    max_results: Option<i64>,
    next_token: Option<String>,
    #[serde(default)]
    shared: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ParameterMetadataShape {
    name: String,
    #[serde(rename = "ARN")]
    arn: String,
    #[serde(rename = "Type")]
    type_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    last_modified_date: f64,
    last_modified_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_pattern: Option<String>,
    version: i64,
    tier: &'static str,
    policies: Vec<PolicyShape>,
    data_type: String,
}

impl From<ParameterDescription> for ParameterMetadataShape {
    fn from(description: ParameterDescription) -> Self {
        ParameterMetadataShape {
            name: description.name,
            arn: description.arn,
            type_: description.type_.as_str(),
            key_id: description.key_id,
            last_modified_date: seconds(description.modified),
            last_modified_user: description.modified_by,
            description: description.description,
            allowed_pattern: description.allowed_pattern,
            version: version_number(description.version),
            tier: description.tier.as_str(),
            policies: policy_shapes(description.policies),
            data_type: description.data_type,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeParametersOutput {
    parameters: Vec<ParameterMetadataShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

async fn describe_parameters(
    parameters: &Parameters,
    caller: &Caller,
    input: DescribeParametersInput,
    _facts: &mut CallFacts,
) -> Result<DescribeParametersOutput, AwsError> {
    // Parameters shared from other accounts: there are none to list.
    if input.shared {
        return Ok(DescribeParametersOutput {
            parameters: Vec::new(),
            next_token: None,
        });
    }
    let page = parameters
        .describe_parameters(
            caller,
            &string_filters(input.filters),
            &string_filters(input.parameter_filters),
            input.max_results,
            input.next_token.as_deref(),
        )
        .await?;
    Ok(DescribeParametersOutput {
        parameters: page.items.into_iter().map(Into::into).collect(),
        next_token: page.next_token,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct GetParameterHistoryInput {
    name: String,
    #[serde(default)]
    with_decryption: bool,
    max_results: Option<i64>,
    next_token: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ParameterHistoryShape {
    name: String,
    #[serde(rename = "Type")]
    type_: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_id: Option<String>,
    last_modified_date: f64,
    last_modified_user: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(serialize_with = "value_string")]
    value: SecretBytes,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_pattern: Option<String>,
    version: i64,
    labels: Vec<String>,
    tier: &'static str,
    policies: Vec<PolicyShape>,
    data_type: String,
}

impl From<HistoryEntry> for ParameterHistoryShape {
    fn from(entry: HistoryEntry) -> Self {
        ParameterHistoryShape {
            name: entry.name,
            type_: entry.type_.as_str(),
            key_id: entry.key_id,
            last_modified_date: seconds(entry.modified),
            last_modified_user: entry.modified_by,
            description: entry.description,
            value: entry.value,
            allowed_pattern: entry.allowed_pattern,
            version: version_number(entry.version),
            labels: entry.labels,
            tier: entry.tier.as_str(),
            policies: policy_shapes(entry.policies),
            data_type: entry.data_type,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParameterHistoryOutput {
    parameters: Vec<ParameterHistoryShape>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<String>,
}

async fn get_parameter_history(
    parameters: &Parameters,
    caller: &Caller,
    input: GetParameterHistoryInput,
    facts: &mut CallFacts,
) -> Result<GetParameterHistoryOutput, AwsError> {
    facts.asked_for(&input.name);
    let (arn, page) = parameters
        .get_parameter_history(
            caller,
            &input.name,
            input.with_decryption,
            input.max_results,
            input.next_token.as_deref(),
        )
        .await?;
    facts.done_with(&arn);
    Ok(GetParameterHistoryOutput {
        parameters: page.items.into_iter().map(Into::into).collect(),
        next_token: page.next_token,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LabelParameterVersionInput {
    name: String,
    parameter_version: Option<i64>,
    labels: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LabelParameterVersionOutput {
    invalid_labels: Vec<String>,
    parameter_version: i64,
}

async fn label_parameter_version(
    parameters: &Parameters,
    caller: &Caller,
    input: LabelParameterVersionInput,
    facts: &mut CallFacts,
) -> Result<LabelParameterVersionOutput, AwsError> {
    facts.asked_for(&input.name);
    let version = input.parameter_version.map(requested_version).transpose()?;
    let (invalid, version) = parameters
        .label_parameter_version(caller, &input.name, version, &input.labels)
        .await?;
    Ok(LabelParameterVersionOutput {
        invalid_labels: invalid,
        parameter_version: version_number(version),
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UnlabelParameterVersionInput {
    name: String,
    parameter_version: i64,
    labels: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct UnlabelParameterVersionOutput {
    removed_labels: Vec<String>,
    invalid_labels: Vec<String>,
}

async fn unlabel_parameter_version(
    parameters: &Parameters,
    caller: &Caller,
    input: UnlabelParameterVersionInput,
    facts: &mut CallFacts,
) -> Result<UnlabelParameterVersionOutput, AwsError> {
    facts.asked_for(&input.name);
    let version = requested_version(input.parameter_version)?;
    let (removed, invalid) = parameters
        .unlabel_parameter_version(caller, &input.name, version, &input.labels)
        .await?;
    Ok(UnlabelParameterVersionOutput {
        removed_labels: removed,
        invalid_labels: invalid,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AddTagsToResourceInput {
    resource_type: String,
    resource_id: String,
    tags: Vec<Tag>,
}

async fn add_tags_to_resource(
    parameters: &Parameters,
    caller: &Caller,
    input: AddTagsToResourceInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.resource_id);
    let arn = parameters
        .add_tags_to_resource(
            caller,
            &input.resource_type,
            &input.resource_id,
            tag_pairs(input.tags),
        )
        .await?;
    facts.done_with(&arn);
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RemoveTagsFromResourceInput {
    resource_type: String,
    resource_id: String,
    tag_keys: Vec<String>,
}

async fn remove_tags_from_resource(
    parameters: &Parameters,
    caller: &Caller,
    input: RemoveTagsFromResourceInput,
    facts: &mut CallFacts,
) -> Result<Empty, AwsError> {
    facts.asked_for(&input.resource_id);
    let arn = parameters
        .remove_tags_from_resource(
            caller,
            &input.resource_type,
            &input.resource_id,
            &input.tag_keys,
        )
        .await?;
    facts.done_with(&arn);
    Ok(Empty {})
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListTagsForResourceInput {
    resource_type: String,
    resource_id: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListTagsForResourceOutput {
    tag_list: Vec<Tag>,
}

async fn list_tags_for_resource(
    parameters: &Parameters,
    caller: &Caller,
    input: ListTagsForResourceInput,
    facts: &mut CallFacts,
) -> Result<ListTagsForResourceOutput, AwsError> {
    facts.asked_for(&input.resource_id);
    let (arn, tags) = parameters
        .list_tags_for_resource(caller, &input.resource_type, &input.resource_id)
        .await?;
    facts.done_with(&arn);
    Ok(ListTagsForResourceOutput {
        tag_list: tags
            .into_iter()
            .map(|(key, value)| Tag { key, value })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::{Value, json};

    use super::*;
    use crate::aws::ops::Served as _;
    use crate::crypto::RootKeyring;
    use crate::engine::ServiceError as _;
    use crate::engine::kms::Kms;
    use crate::store::{EmbeddedStore, Store};
    use crate::test_support::engine::{ManualClock, NameAuthority, caller};

    struct Api {
        _dir: tempfile::TempDir,
        service: Arc<Parameters>,
        admin: Caller,
    }

    fn api() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let clock = Arc::new(ManualClock::at(1_800_000_000));
        let kms = Arc::new(Kms::new(
            store.clone(),
            Arc::new(RootKeyring::generate()),
            Arc::new(NameAuthority),
            clock.clone(),
            "us-east-1",
        ));
        Api {
            _dir: dir,
            service: Arc::new(Parameters::new(store, kms, Arc::new(NameAuthority), clock)),
            admin: caller("admin"),
        }
    }

    impl Api {
        async fn call(&self, operation: &str, body: Value) -> Result<Value, AwsError> {
            let mut facts = CallFacts::default();
            let body = serde_json::to_vec(&body).unwrap();
            self.service
                .call(
                    &format!("AmazonSSM.{operation}"),
                    &self.admin,
                    &body,
                    &mut facts,
                )
                .await
                .map(|answer| serde_json::from_slice(&answer).unwrap())
        }
    }

    #[test]
    fn the_table_is_sorted_for_binary_search() {
        let targets: Vec<&str> = OPERATIONS.iter().map(|op| op.target).collect();
        let mut sorted = targets.clone();
        sorted.sort_unstable();
        assert_eq!(targets, sorted);
    }

    #[tokio::test]
    async fn parameters_have_aws_shapes() {
        let api = api();
        let put = api
            .call(
                "PutParameter",
                json!({"Name": "/app/url", "Value": "https://x", "Type": "String",
                       "Description": "where", "Tags": [{"Key": "team", "Value": "a"}]}),
            )
            .await
            .unwrap();
        assert_eq!(put, json!({"Version": 1, "Tier": "Standard"}));
        let got = api
            .call("GetParameter", json!({"Name": "/app/url:1"}))
            .await
            .unwrap();
        let parameter = &got["Parameter"];
        assert_eq!(parameter["Name"], "/app/url");
        assert_eq!(parameter["Type"], "String");
        assert_eq!(parameter["Value"], "https://x");
        assert_eq!(parameter["Version"], 1);
        assert_eq!(parameter["Selector"], ":1");
        assert_eq!(parameter["DataType"], "text");
        assert_eq!(parameter["LastModifiedDate"], 1_800_000_000.0);
        assert!(
            parameter["ARN"]
                .as_str()
                .unwrap()
                .starts_with("arn:aws:ssm:us-east-1:")
                && parameter["ARN"]
                    .as_str()
                    .unwrap()
                    .ends_with(":parameter/app/url"),
            "{parameter}"
        );
        let described = api.call("DescribeParameters", json!({})).await.unwrap();
        let entry = &described["Parameters"][0];
        assert_eq!(entry["LastModifiedUser"], api.admin.principal.arn);
        assert_eq!(entry["Description"], "where");
        assert_eq!(entry["Tier"], "Standard");
        assert_eq!(entry["Policies"], json!([]));
        assert!(described.get("NextToken").is_none());
        let many = api
            .call("GetParameters", json!({"Names": ["/app/url", "/nope"]}))
            .await
            .unwrap();
        assert_eq!(many["InvalidParameters"], json!(["/nope"]));
        assert_eq!(many["Parameters"].as_array().unwrap().len(), 1);
        let labelled = api
            .call(
                "LabelParameterVersion",
                json!({"Name": "/app/url", "Labels": ["live", "aws-no"]}),
            )
            .await
            .unwrap();
        assert_eq!(
            labelled,
            json!({"InvalidLabels": ["aws-no"], "ParameterVersion": 1})
        );
        let history = api
            .call("GetParameterHistory", json!({"Name": "/app/url"}))
            .await
            .unwrap();
        assert_eq!(history["Parameters"][0]["Labels"], json!(["live"]));
        let tags = api
            .call(
                "ListTagsForResource",
                json!({"ResourceType": "Parameter", "ResourceId": "/app/url"}),
            )
            .await
            .unwrap();
        assert_eq!(tags, json!({"TagList": [{"Key": "team", "Value": "a"}]}));
        let unlabelled = api
            .call(
                "UnlabelParameterVersion",
                json!({"Name": "/app/url", "ParameterVersion": 1, "Labels": ["live", "gone"]}),
            )
            .await
            .unwrap();
        assert_eq!(
            unlabelled,
            json!({"RemovedLabels": ["live"], "InvalidLabels": ["gone"]})
        );
        let deleted = api
            .call("DeleteParameters", json!({"Names": ["/app/url", "/nope"]}))
            .await
            .unwrap();
        assert_eq!(
            deleted,
            json!({"DeletedParameters": ["/app/url"], "InvalidParameters": ["/nope"]})
        );
    }

    #[tokio::test]
    async fn secure_strings_answer_ciphertext_unless_decrypted_and_errors_have_aws_names() {
        let api = api();
        api.call(
            "PutParameter",
            json!({"Name": "pw", "Value": "p4ssw0rd-zz", "Type": "SecureString"}),
        )
        .await
        .unwrap();
        let hidden = api
            .call("GetParameter", json!({"Name": "pw"}))
            .await
            .unwrap();
        assert_ne!(hidden["Parameter"]["Value"], "p4ssw0rd-zz");
        let shown = api
            .call(
                "GetParameter",
                json!({"Name": "pw", "WithDecryption": true}),
            )
            .await
            .unwrap();
        assert_eq!(shown["Parameter"]["Value"], "p4ssw0rd-zz");
        let described = api.call("DescribeParameters", json!({})).await.unwrap();
        assert_eq!(described["Parameters"][0]["KeyId"], "alias/aws/ssm");

        let code = |result: Result<Value, AwsError>| result.unwrap_err().code;
        assert_eq!(
            code(
                api.call(
                    "PutParameter",
                    json!({"Name": "pw", "Value": "x", "Type": "SecureString"})
                )
                .await
            ),
            "ParameterAlreadyExists"
        );
        assert_eq!(
            code(api.call("GetParameter", json!({"Name": "missing"})).await),
            "ParameterNotFound"
        );
        assert_eq!(
            code(api.call("GetParameter", json!({"Name": "pw:9"})).await),
            "ParameterVersionNotFound"
        );
        assert_eq!(
            code(
                api.call(
                    "ListTagsForResource",
                    json!({"ResourceType": "Document", "ResourceId": "pw"})
                )
                .await
            ),
            "InvalidResourceType"
        );
        assert_eq!(
            code(
                api.call(
                    "DescribeParameters",
                    json!({"ParameterFilters": [{"Key": "Nope", "Values": ["x"]}]})
                )
                .await
            ),
            "InvalidFilterKey"
        );
        assert_eq!(
            code(
                api.call("DescribeParameters", json!({"NextToken": "@@"}))
                    .await
            ),
            "InvalidNextToken"
        );
        assert_eq!(
            code(
                api.call(
                    "UnlabelParameterVersion",
                    json!({"Name": "pw", "ParameterVersion": 0, "Labels": ["a"]})
                )
                .await
            ),
            "ValidationException"
        );
        let missing = api
            .call("PutParameter", json!({"Value": "x"}))
            .await
            .unwrap_err();
        assert_eq!(missing.code, "ValidationException");
        assert!(missing.message.contains("'name'"), "{}", missing.message);
        // A value of the wrong type, or one that fails the pattern, is never quoted back.
        let typed = api
            .call(
                "PutParameter",
                json!({"Name": "n", "Value": 31415926535u64, "Type": "String"}),
            )
            .await
            .unwrap_err();
        assert_eq!(typed.code, "SerializationException");
        assert!(!typed.message.contains("31415926535"), "{}", typed.message);
        let mismatch = api
            .call(
                "PutParameter",
                json!({"Name": "n", "Value": "s3cr3tVALUE", "Type": "SecureString",
                       "AllowedPattern": "^[0-9]+$"}),
            )
            .await
            .unwrap_err();
        assert_eq!(mismatch.code, "ParameterPatternMismatchException");
        assert!(
            !mismatch.message.contains("s3cr3tVALUE"),
            "{}",
            mismatch.message
        );
    }

    #[test]
    fn only_internal_errors_are_faults() {
        let fault = ParametersError::fault_at("x");
        assert_eq!(fault.aws_code(), "InternalServerError");
        assert!(fault.is_fault());
        let busy = ParametersError::Busy("x".into());
        assert_eq!(busy.aws_code(), "ThrottlingException");
        assert!(!busy.is_fault());
        assert_eq!(
            AwsError::from(ParametersError::LimitExceeded).status,
            axum::http::StatusCode::BAD_REQUEST
        );
    }
}
