//! The `Parameter` custom resource: a parameter in the manner of AWS SSM Parameter Store.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::common::{BASE64_PATTERN, Condition, KeyReference, SecretKeySelector, Time};

/// Longest parameter name, in characters.
pub const MAX_PARAMETER_NAME_LENGTH: usize = 1011;
/// Deepest parameter hierarchy, in levels (`/a/b/c` has three).
pub const MAX_PARAMETER_LEVELS: usize = 15;
/// Longest value of a Standard parameter, in characters.
pub const MAX_STANDARD_VALUE_LENGTH: usize = 4096;
/// Longest value of an Advanced parameter, in characters.
pub const MAX_ADVANCED_VALUE_LENGTH: usize = 8192;
/// Number of versions that status.history shows, the newest ones.
pub const PARAMETER_HISTORY_LIMIT: usize = 10;

/// Pattern of a parameter name: the allowed characters, a leading `/` whenever the name has
/// more than one level, no empty level, and at most 15 levels.
pub const PARAMETER_NAME_PATTERN: &str = r"^(/[a-zA-Z0-9_.-]+){1,15}$|^[a-zA-Z0-9_.-]+$";

/// The name of the Parameter resource the store makes for parameter `name` (one made through
/// the API): a path whose levels are all lowercase DNS labels with its `/` as `.`
/// (`/app/db/url` is `app.db.url`), else `p-` plus a readable part and a hash of the name. No
/// two parameter names share one: only names that begin with `/` and hold no `.` are dotted.
pub fn parameter_resource_name(name: &str) -> String {
    let dotted = match name.strip_prefix('/') {
        Some(path) if !path.contains('.') => path.replace('/', "."),
        _ => String::new(),
    };
    let plain = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if dotted.len() <= 253 && !dotted.starts_with("p-") && dotted.split('.').all(plain) {
        return dotted;
    }
    let mut readable = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            readable.push(c);
        } else if !readable.ends_with('-') {
            readable.push('-');
        }
        if readable.len() >= 40 {
            break;
        }
    }
    let readable = readable.trim_matches('-');
    let digest = sha2::Sha256::digest(name.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    if readable.is_empty() {
        format!("p-{hash}")
    } else {
        format!("p-{readable}-{hash}")
    }
}

/// Desired state of a Parameter: its name, type and value (or value source), tier and
/// policies.
// Clippy takes the repeated `type_ = "string"` of separate printer columns for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "Parameter",
    plural = "parameters",
    singular = "parameter",
    namespaced,
    status = "ParameterStatus",
    derive = "PartialEq",
    shortname = "cparam",
    category = "coffer",
    doc = "Parameter is a configuration value (String, StringList) or secret string (SecureString) kept by Coffer under a hierarchical name and served through an AWS SSM Parameter Store compatible API. A SecureString value never appears in the resource: its versions are kept encrypted in a companion core Secret.",
    printcolumn(
        name = "Name",
        type_ = "string",
        json_path = ".spec.name",
        description = "Parameter name"
    ),
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.type",
        description = "Parameter type"
    ),
    printcolumn(
        name = "Version",
        type_ = "integer",
        json_path = ".status.version",
        description = "Latest version"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.type == 'SecureString' || has(self.value)").message("String and StringList parameters need a value"))]
#[x_kube(validation = Rule::new("self.type != 'SecureString' || !has(self.value)").message("a SecureString parameter takes no plaintext value: give sealedValue or fromSecret"))]
#[x_kube(validation = Rule::new("self.type == 'SecureString' ? !(has(self.sealedValue) && has(self.fromSecret)) : !has(self.sealedValue) && !has(self.fromSecret)").message("a SecureString parameter takes at most one of sealedValue and fromSecret (with neither, its value comes through the API), and other types take neither"))]
#[x_kube(validation = Rule::new("self.type == 'SecureString' || !has(self.kmsKeyRef)").message("kmsKeyRef applies only to SecureString parameters"))]
#[x_kube(validation = Rule::new("!has(self.value) || self.tier != 'Standard' || self.value.size() <= 4096").message("the value of a Standard parameter is at most 4096 characters; use tier Advanced for up to 8192"))]
#[x_kube(validation = Rule::new("!has(self.policies) || self.policies.size() == 0 || self.tier != 'Standard'").message("parameter policies need tier Advanced or IntelligentTiering"))]
#[x_kube(validation = Rule::new("self.dataType == 'text' || self.type == 'String'").message("data types other than text need type String"))]
#[serde(rename_all = "camelCase")]
pub struct ParameterSpec {
    /// Name of the parameter, such as `/app/db/url`: at most 1011 characters of letters,
    /// digits, `_`, `.`, `-` and `/`, at most 15 levels, beginning with `/` if it has more
    /// than one level, and not beginning with `aws` or `ssm` in any case. Unique within the
    /// namespace. Immutable.
    #[schemars(length(min = 1, max = 1011), regex(pattern = PARAMETER_NAME_PATTERN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("name is immutable"))]
    #[x_kube(validation = Rule::new("!self.matches('^/?([aA][wW][sS]|[sS][sS][mM])')").message("parameter names may not begin with aws or ssm"))]
    pub name: String,

    /// Type of the parameter: String (the default), StringList (comma-separated values) or
    /// SecureString (encrypted, given as sealedValue or fromSecret).
    #[serde(default, rename = "type")]
    pub type_: ParameterType,

    /// Value of a String or StringList parameter, in plain text: configuration, not secrets.
    /// At most 4096 characters for tier Standard, 8192 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 8192))]
    pub value: Option<String>,

    /// Value source of a SecureString parameter: ciphertext in base64, made offline with
    /// `kubectl coffer seal` for this cluster, namespace and name; only Coffer can open it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32768), regex(pattern = BASE64_PATTERN))]
    pub sealed_value: Option<String>,

    /// Value source of a SecureString parameter: one key of a core Secret in the same
    /// namespace, imported again when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_secret: Option<SecretKeySelector>,

    /// KmsKey that encrypts a SecureString parameter. Defaults to the namespace's
    /// Coffer-managed key for parameters (AWS's `aws/ssm`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_ref: Option<KeyReference>,

    /// Tier of the parameter: Standard (the default; values up to 4096 characters, no
    /// policies), Advanced (up to 8192 characters, policies), or IntelligentTiering (Standard
    /// while the parameter fits it, Advanced otherwise).
    #[serde(default)]
    pub tier: ParameterTier,

    /// Regular expression that every value of the parameter must match, such as `^\d+$`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub allowed_pattern: Option<String>,

    /// Kind of data in a String parameter: text (the default), aws:ec2:image (an AMI id) or
    /// aws:ssm:integration.
    #[serde(default)]
    pub data_type: ParameterDataType,

    /// Free text about the parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,

    /// Parameter policies, at most one of each type. They need tier Advanced or
    /// IntelligentTiering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 3),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    #[x_kube(validation = Rule::new("!self.exists(p, p.type == 'ExpirationNotification') || self.exists(p, p.type == 'Expiration')").message("an ExpirationNotification policy needs an Expiration policy"))]
    pub policies: Vec<ParameterPolicy>,
    /// Opt-in copy of the current value into a core Secret, for consumers that read only core
    /// Secrets. The plaintext then sits in that core Secret (and etcd), so leave this out
    /// unless needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<super::secret::SyncSettings>,
}

/// Type of a parameter.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ParameterType {
    /// A plain string.
    #[default]
    String,
    /// A list of strings separated by commas.
    StringList,
    /// A string kept encrypted under a KmsKey.
    SecureString,
}

/// Tier of a parameter, which bounds its value size and decides whether it may have policies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ParameterTier {
    /// Values up to 4096 characters, no policies.
    #[default]
    Standard,
    /// Values up to 8192 characters, and policies.
    Advanced,
    /// Standard while the parameter fits it, Advanced otherwise.
    IntelligentTiering,
}

/// Kind of data in a parameter.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum ParameterDataType {
    /// Any text.
    #[default]
    #[serde(rename = "text")]
    Text,
    /// An Amazon Machine Image id, such as `ami-0123456789abcdef0`.
    #[serde(rename = "aws:ec2:image")]
    AwsEc2Image,
    /// An integration with a third-party service, in AWS's terms.
    #[serde(rename = "aws:ssm:integration")]
    AwsSsmIntegration,
}

/// A parameter policy, in the manner of SSM's: Expiration (delete the parameter at
/// timestamp), ExpirationNotification (an Event `before` units ahead of the expiration), or
/// NoChangeNotification (an Event when the parameter has not changed for `after` units).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("(self.type == 'Expiration') == has(self.timestamp)").message("timestamp is required in an Expiration policy, and allowed only there"))]
#[x_kube(validation = Rule::new("(self.type == 'ExpirationNotification') == has(self.before)").message("before is required in an ExpirationNotification policy, and allowed only there"))]
#[x_kube(validation = Rule::new("(self.type == 'NoChangeNotification') == has(self.after)").message("after is required in a NoChangeNotification policy, and allowed only there"))]
#[x_kube(validation = Rule::new("self.type != 'Expiration' || !has(self.unit)").message("unit applies only to notification policies"))]
#[serde(rename_all = "camelCase")]
pub struct ParameterPolicy {
    /// Type of the policy: Expiration, ExpirationNotification or NoChangeNotification.
    #[serde(rename = "type")]
    pub type_: ParameterPolicyType,
    /// When an Expiration policy deletes the parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Time>,
    /// How many units ahead of the expiration an ExpirationNotification policy notifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub before: Option<i32>,
    /// After how many units without a change a NoChangeNotification policy notifies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub after: Option<i32>,
    /// Unit of before or after: Days (the default) or Hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<PolicyTimeUnit>,
}

/// Type of a parameter policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum ParameterPolicyType {
    /// Delete the parameter at a given time.
    Expiration,
    /// Notify ahead of the expiration.
    ExpirationNotification,
    /// Notify when the parameter has not changed for a while.
    NoChangeNotification,
}

/// Unit of time of a notification policy: Days (the default) or Hours.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum PolicyTimeUnit {
    /// Days.
    #[default]
    Days,
    /// Hours.
    Hours,
}

/// Observed state of a Parameter. For a SecureString it carries metadata only, never a value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterStatus {
    /// Latest version number; the first version is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    /// Tier the parameter is in: Standard or Advanced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<ParameterTier>,
    /// When the latest version was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified_date: Option<Time>,
    /// The newest versions (at most 10), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub history: Vec<ParameterHistoryEntry>,
    /// Labels of the parameter's versions (LabelParameterVersion), each with the version it
    /// is attached to.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, i64>,
    /// Latest observations of the parameter's state, such as `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the core Secret the value is synced into (`spec.sync`), while there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_secret: Option<String>,
}

/// One version of a parameter.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ParameterHistoryEntry {
    /// Version number.
    pub version: i64,
    /// When the version was made.
    pub last_modified_date: Time,
    /// Labels attached to the version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// Why a parameter name breaks the rules of SSM Parameter Store.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParameterNameError {
    /// The name is empty.
    #[error("the name is empty")]
    Empty,
    /// The name is longer than 1011 characters.
    #[error("the name is {length} characters long, over the limit of 1011")]
    TooLong {
        /// Length of the name, in characters.
        length: usize,
    },
    /// The name holds a character outside `a-zA-Z0-9_.-/`.
    #[error(
        "the name holds {character:?}; only letters, digits, '_', '.', '-' and '/' are allowed"
    )]
    InvalidCharacter {
        /// The first character that is not allowed.
        character: char,
    },
    /// The name has more than one level but does not begin with `/`.
    #[error("a name with more than one level must begin with '/'")]
    MissingLeadingSlash,
    /// The name has an empty level: `//`, or a `/` at the end.
    #[error("the name has an empty level ('//' or a trailing '/')")]
    EmptyLevel,
    /// The name has more than 15 levels.
    #[error("the name has {levels} levels, over the limit of 15")]
    TooManyLevels {
        /// Number of levels in the name.
        levels: usize,
    },
    /// The name begins with `aws` or `ssm`, in any case, with or without a leading `/`.
    #[error("names may not begin with 'aws' or 'ssm' (in any case)")]
    ReservedPrefix,
}

/// Check a parameter name against the rules of SSM Parameter Store, the same rules that the
/// Parameter CRD's schema enforces on `spec.name`.
pub fn validate_parameter_name(name: &str) -> Result<(), super::ResourceError> {
    check_parameter_name(name).map_err(super::ResourceError::InvalidParameterName)
}

fn check_parameter_name(name: &str) -> Result<(), ParameterNameError> {
    if name.is_empty() {
        return Err(ParameterNameError::Empty);
    }
    let length = name.chars().count();
    if length > MAX_PARAMETER_NAME_LENGTH {
        return Err(ParameterNameError::TooLong { length });
    }
    if let Some(character) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '/')))
    {
        return Err(ParameterNameError::InvalidCharacter { character });
    }
    let path = if name.contains('/') {
        name.strip_prefix('/')
            .ok_or(ParameterNameError::MissingLeadingSlash)?
    } else {
        name
    };
    let levels: Vec<&str> = path.split('/').collect();
    if levels.iter().any(|level| level.is_empty()) {
        return Err(ParameterNameError::EmptyLevel);
    }
    if levels.len() > MAX_PARAMETER_LEVELS {
        return Err(ParameterNameError::TooManyLevels {
            levels: levels.len(),
        });
    }
    let prefix = path.get(..3).unwrap_or(path).to_ascii_lowercase();
    if prefix == "aws" || prefix == "ssm" {
        return Err(ParameterNameError::ReservedPrefix);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_parameter_name_has_one_resource_name() {
        assert_eq!(parameter_resource_name("/app/db/url"), "app.db.url");
        assert_eq!(parameter_resource_name("/plain"), "plain");
        assert_ne!(parameter_resource_name("plain"), "plain");
        assert_ne!(
            parameter_resource_name("a.b"),
            parameter_resource_name("/a/b")
        );
        let derived = parameter_resource_name("/App/DB_url");
        assert!(derived.starts_with("p-app-db-url-"), "{derived}");
        assert_ne!(derived, parameter_resource_name("/app/db_url"));
        assert!(parameter_resource_name(&"/level".repeat(15)).len() <= 253);
        assert!(parameter_resource_name("p-x").starts_with("p-p-x-"));
    }
    use crate::resources::ResourceError;

    fn reason(name: &str) -> Option<ParameterNameError> {
        match validate_parameter_name(name) {
            Ok(()) => None,
            Err(ResourceError::InvalidParameterName(reason)) => Some(reason),
            Err(other) => panic!("unexpected error {other}"),
        }
    }

    /// A name of `levels` levels, each `width` characters, with a leading `/`.
    fn path(levels: usize, width: usize) -> String {
        (0..levels)
            .map(|_| format!("/{}", "p".repeat(width)))
            .collect()
    }

    #[test]
    fn accepts_simple_and_hierarchical_names() {
        for name in [
            "a",
            "my-param",
            "my_param.v2",
            "/app",
            "/app/db/url",
            "/App-1/DB_2/url.v3",
            "/app/aws/key",
            "/app/ssm",
            "awkward",
            "/ss",
            "sm",
        ] {
            assert_eq!(reason(name), None, "{name}");
        }
    }

    #[test]
    fn length_limit_is_1011_characters() {
        let ok = "x".repeat(1011);
        assert_eq!(reason(&ok), None);
        let long = "x".repeat(1012);
        assert_eq!(
            reason(&long),
            Some(ParameterNameError::TooLong { length: 1012 })
        );
        // The same limits with a hierarchical name.
        let ok = format!("/{}", "y".repeat(1010));
        assert_eq!(reason(&ok), None);
        let long = format!("/{}", "y".repeat(1011));
        assert_eq!(
            reason(&long),
            Some(ParameterNameError::TooLong { length: 1012 })
        );
    }

    #[test]
    fn level_limit_is_15() {
        assert_eq!(reason(&path(15, 3)), None);
        assert_eq!(
            reason(&path(16, 3)),
            Some(ParameterNameError::TooManyLevels { levels: 16 })
        );
    }

    #[test]
    fn rejects_characters_outside_the_set() {
        for (name, character) in [
            ("my param", ' '),
            ("/app/db:url", ':'),
            ("/app/é", 'é'),
            ("a*b", '*'),
            ("/app/{x}", '{'),
            ("tab\there", '\t'),
        ] {
            assert_eq!(
                reason(name),
                Some(ParameterNameError::InvalidCharacter { character }),
                "{name}"
            );
        }
    }

    #[test]
    fn slash_rules() {
        assert_eq!(
            reason("app/db"),
            Some(ParameterNameError::MissingLeadingSlash)
        );
        assert_eq!(reason("/"), Some(ParameterNameError::EmptyLevel));
        assert_eq!(reason("/app/"), Some(ParameterNameError::EmptyLevel));
        assert_eq!(reason("//app"), Some(ParameterNameError::EmptyLevel));
        assert_eq!(reason("/app//db"), Some(ParameterNameError::EmptyLevel));
    }

    #[test]
    fn reserved_prefixes_in_any_case() {
        for name in [
            "aws", "AWS", "awsParam", "Aws-x", "ssm", "SSM-test", "/aws/x", "/AwS", "/ssm/a/b",
            "/sSmx",
        ] {
            assert_eq!(
                reason(name),
                Some(ParameterNameError::ReservedPrefix),
                "{name}"
            );
        }
    }

    #[test]
    fn empty_name() {
        assert_eq!(reason(""), Some(ParameterNameError::Empty));
    }

    #[test]
    fn error_names_the_rule() {
        let err = validate_parameter_name("a b").err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "invalid parameter name: the name holds ' '; only letters, digits, '_', '.', '-' and '/' are allowed"
            )
        );
    }
}

#[cfg(test)]
mod cel_tests {
    use serde_json::json;

    use super::*;
    use crate::resources::cel_check::{
        assert_invalid, assert_update_invalid, assert_valid, evaluate, object,
    };

    fn parameter(spec: serde_json::Value) -> serde_json::Value {
        object("Parameter", spec)
    }

    #[test]
    fn defaults() {
        let spec: ParameterSpec =
            serde_json::from_value(json!({"name": "/app/x", "value": "1"})).expect("parses");
        assert_eq!(spec.type_, ParameterType::String);
        assert_eq!(spec.tier, ParameterTier::Standard);
        assert_eq!(spec.data_type, ParameterDataType::Text);
        assert_eq!(
            serde_json::to_value(&spec).expect("serializes"),
            json!({
                "name": "/app/x",
                "type": "String",
                "value": "1",
                "tier": "Standard",
                "dataType": "text",
            })
        );
    }

    #[test]
    fn cel_accepts_valid_parameters() {
        assert_valid::<Parameter>(&parameter(
            json!({"name": "/app/db/url", "value": "postgres://db"}),
        ));
        assert_valid::<Parameter>(&parameter(json!({
            "name": "hosts",
            "type": "StringList",
            "value": "a,b,c",
            "allowedPattern": "^[a-z,]+$",
            "description": "hosts to call",
        })));
        assert_valid::<Parameter>(&parameter(json!({
            "name": "/app/token",
            "type": "SecureString",
            "sealedValue": "AAECAwQ=",
            "kmsKeyRef": {"name": "app-key"},
            "tier": "Advanced",
            "policies": [
                {"type": "Expiration", "timestamp": "2030-01-01T00:00:00Z"},
                {"type": "ExpirationNotification", "before": 5, "unit": "Days"},
                {"type": "NoChangeNotification", "after": 30},
            ],
        })));
        assert_valid::<Parameter>(&parameter(json!({
            "name": "/app/legacy",
            "type": "SecureString",
            "fromSecret": {"name": "legacy", "key": "password"},
        })));
        assert_valid::<Parameter>(&parameter(json!({
            "name": "/ami/latest",
            "value": "ami-0123456789abcdef0",
            "dataType": "aws:ec2:image",
        })));
        assert_valid::<Parameter>(&parameter(json!({
            "name": "/big",
            "value": "x".repeat(8192),
            "tier": "Advanced",
        })));
        let typed = Parameter::new(
            "typed",
            ParameterSpec {
                name: "/typed".into(),
                value: Some("v".into()),
                ..ParameterSpec::default()
            },
        );
        assert_valid::<Parameter>(&serde_json::to_value(typed).expect("serializes"));
    }

    #[test]
    fn cel_value_only_for_plain_types() {
        assert_invalid::<Parameter>(
            &parameter(json!({"name": "/a"})),
            "String and StringList parameters need a value",
        );
        assert_invalid::<Parameter>(
            &parameter(json!({"name": "/a", "value": "x", "sealedValue": "AAAA"})),
            "other types take neither",
        );
        assert_invalid::<Parameter>(
            &parameter(json!({"name": "/a", "value": "x", "kmsKeyRef": {"name": "k"}})),
            "kmsKeyRef applies only to SecureString parameters",
        );
    }

    #[test]
    fn cel_secure_string_takes_at_most_one_source() {
        assert_valid::<Parameter>(&parameter(json!({"name": "/s", "type": "SecureString"})));
        assert_invalid::<Parameter>(
            &parameter(json!({
                "name": "/s",
                "type": "SecureString",
                "sealedValue": "AAAA",
                "fromSecret": {"name": "a", "key": "b"},
            })),
            "takes at most one of sealedValue and fromSecret",
        );
        assert_invalid::<Parameter>(
            &parameter(json!({
                "name": "/s",
                "type": "SecureString",
                "value": "plain",
                "sealedValue": "AAAA",
            })),
            "a SecureString parameter takes no plaintext value",
        );
    }

    #[test]
    fn cel_tier_limits() {
        assert_invalid::<Parameter>(
            &parameter(json!({"name": "/big", "value": "x".repeat(4097)})),
            "the value of a Standard parameter is at most 4096 characters",
        );
        assert_invalid::<Parameter>(
            &parameter(json!({
                "name": "/p",
                "value": "x",
                "policies": [{"type": "NoChangeNotification", "after": 3}],
            })),
            "parameter policies need tier Advanced or IntelligentTiering",
        );
    }

    #[test]
    fn cel_policies() {
        let with = |policy: serde_json::Value| {
            parameter(json!({
                "name": "/p",
                "value": "x",
                "tier": "IntelligentTiering",
                "policies": [policy],
            }))
        };
        assert_valid::<Parameter>(&with(
            json!({"type": "Expiration", "timestamp": "2030-01-01T00:00:00Z"}),
        ));
        assert_invalid::<Parameter>(
            &with(json!({"type": "Expiration"})),
            "timestamp is required in an Expiration policy",
        );
        assert_invalid::<Parameter>(
            &with(
                json!({"type": "Expiration", "timestamp": "2030-01-01T00:00:00Z", "unit": "Days"}),
            ),
            "unit applies only to notification policies",
        );
        assert_invalid::<Parameter>(
            &with(json!({"type": "NoChangeNotification", "before": 1})),
            "after is required in a NoChangeNotification policy",
        );
        assert_invalid::<Parameter>(
            &with(json!({"type": "ExpirationNotification", "before": 1})),
            "an ExpirationNotification policy needs an Expiration policy",
        );
    }

    #[test]
    fn cel_data_type_needs_string() {
        assert_invalid::<Parameter>(
            &parameter(
                json!({"name": "/l", "type": "StringList", "value": "a", "dataType": "aws:ec2:image"}),
            ),
            "data types other than text need type String",
        );
    }

    #[test]
    fn cel_name_rules() {
        for name in ["awsParam", "/AWS/x", "SSM", "/ssm-config"] {
            assert_invalid::<Parameter>(
                &parameter(json!({"name": name, "value": "x"})),
                "parameter names may not begin with aws or ssm",
            );
            assert!(validate_parameter_name(name).is_err(), "{name}");
        }
        let old = parameter(json!({"name": "/app/a", "value": "1"}));
        assert_eq!(
            evaluate::<Parameter>(
                &parameter(json!({"name": "/app/a", "value": "2"})),
                Some(&old)
            ),
            Ok(())
        );
        assert_update_invalid::<Parameter>(
            &parameter(json!({"name": "/app/b", "value": "1"})),
            Some(&old),
            "name is immutable",
        );
    }
}
