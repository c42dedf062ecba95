//! The `Secret` custom resource (`secrets.coffer.dev`): a secret in the manner of AWS Secrets
//! Manager, with versions, staging labels and rotation.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use super::common::{
    BASE64_PATTERN, CofferSecretReference, Condition, DNS_LABEL_PATTERN, DNS_SUBDOMAIN_PATTERN,
    KeyReference, SECRET_DATA_KEY_PATTERN, SecretKeySelector, Time, default_true,
};

/// Shortest recovery window of a deleted Secret, in days.
pub const MIN_RECOVERY_WINDOW_DAYS: i32 = 7;
/// Longest recovery window of a deleted Secret, in days, and the default.
pub const MAX_RECOVERY_WINDOW_DAYS: i32 = 30;
/// Shortest generated value, in characters.
pub const MIN_GENERATED_LENGTH: i32 = 1;
/// Longest generated value, in characters.
pub const MAX_GENERATED_LENGTH: i32 = 4096;
/// Length of a generated value when none is given, in characters.
pub const DEFAULT_GENERATED_LENGTH: i32 = 32;

/// Staging label of the version that callers get by default.
pub const STAGE_CURRENT: &str = "AWSCURRENT";
/// Staging label of the version that a rotation in progress creates.
pub const STAGE_PENDING: &str = "AWSPENDING";
/// Staging label of the version that was current before the last rotation.
pub const STAGE_PREVIOUS: &str = "AWSPREVIOUS";

/// Pattern of a rotation schedule: `rate(N days)`, `rate(N hours)` or a six-field `cron(...)`.
pub const SCHEDULE_PATTERN: &str =
    r"^(rate\([1-9][0-9]{0,3} (hour|hours|day|days)\)|cron\([^ ()]+( [^ ()]+){5}\))$";

/// Annotation of a Secret resource naming the secret in the Secrets Manager API, for names
/// that cannot be resource names (`prod/db/password`); see [`resource_name_for`].
pub const SECRET_NAME_ANNOTATION: &str = "coffer.dev/secret-name";

/// Prefix of resource names derived from secret names that are not resource names.
const DERIVED_NAME_PREFIX: &str = "sm-";

/// The name of the Secret resource that stands for secret `secret_name` of the API: the name
/// itself when it is a plain resource name, else `sm-` plus a readable part and a hash of the
/// name, so that every secret name has exactly one resource name.
pub fn resource_name_for(secret_name: &str) -> String {
    if is_plain_resource_name(secret_name) {
        return secret_name.to_owned();
    }
    let mut readable = String::new();
    for c in secret_name.chars() {
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
    let digest = sha2::Sha256::digest(secret_name.as_bytes());
    let hash: String = digest.iter().take(5).map(|b| format!("{b:02x}")).collect();
    if readable.is_empty() {
        format!("{DERIVED_NAME_PREFIX}{hash}")
    } else {
        format!("{DERIVED_NAME_PREFIX}{readable}-{hash}")
    }
}

/// Whether a secret name serves as its resource's name unchanged.
fn is_plain_resource_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    name.len() <= 253 && !name.starts_with(DERIVED_NAME_PREFIX) && name.split('.').all(label_ok)
}

/// Why a resource cannot stand for the secret it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretNameError {
    #[error(
        "the annotation {SECRET_NAME_ANNOTATION} names secret {secret_name:?}, whose resource name is {expected}, not this one"
    )]
    Mismatch {
        secret_name: String,
        expected: String,
    },
    #[error("a resource named sm-... needs the annotation {SECRET_NAME_ANNOTATION}")]
    MissingAnnotation,
}

impl Secret {
    /// The secret's name in the API: the annotation when given, else the resource name. The
    /// two must correspond through [`resource_name_for`], so one secret has one resource.
    pub fn secret_name(&self) -> Result<String, SecretNameError> {
        let resource_name = self.metadata.name.clone().unwrap_or_default();
        let annotated = self
            .metadata
            .annotations
            .as_ref()
            .and_then(|annotations| annotations.get(SECRET_NAME_ANNOTATION));
        let secret_name = match annotated {
            Some(name) => name.clone(),
            None if resource_name.starts_with(DERIVED_NAME_PREFIX) => {
                return Err(SecretNameError::MissingAnnotation);
            }
            None => resource_name.clone(),
        };
        let expected = resource_name_for(&secret_name);
        if expected != resource_name {
            return Err(SecretNameError::Mismatch {
                secret_name: crate::engine::text::truncate(&secret_name),
                expected,
            });
        }
        Ok(secret_name)
    }
}

/// Pattern of a ServiceAccount written as `NAMESPACE/NAME`.
const NAMESPACED_SERVICE_ACCOUNT_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-.a-z0-9]*[a-z0-9])?$";

/// Desired state of a Secret: where its value comes from, which key encrypts it, how it rotates,
/// who else may read it, and whether a copy goes into a core Secret.
// Clippy takes the repeated `type_ = "string"` of separate printer columns for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "Secret",
    plural = "secrets",
    singular = "secret",
    namespaced,
    status = "SecretStatus",
    derive = "PartialEq",
    shortname = "csec",
    category = "coffer",
    doc = "Secret (secrets.coffer.dev) is a secret value kept by Coffer and served through an AWS Secrets Manager compatible API, with versions, staging labels and scheduled rotation. The value never appears in the resource: its versions are kept encrypted in a companion core Secret.",
    printcolumn(
        name = "Current",
        type_ = "string",
        json_path = ".status.currentVersion",
        description = "Id of the version labelled AWSCURRENT"
    ),
    printcolumn(
        name = "Rotation",
        type_ = "string",
        json_path = ".status.rotation.state",
        description = "Step of the rotation in progress, or Idle"
    ),
    printcolumn(
        name = "Next",
        type_ = "string",
        json_path = ".status.rotation.nextRotationDate",
        description = "When the next scheduled rotation is due"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("(has(self.generate) ? 1 : 0) + (has(self.sealedValue) ? 1 : 0) + (has(self.fromSecret) ? 1 : 0) <= 1").message("give at most one of generate, sealedValue and fromSecret"))]
#[x_kube(validation = Rule::new("!(has(self.resourcePolicy) && has(self.resourcePolicyDocument))").message("give resourcePolicy or resourcePolicyDocument, not both"))]
#[serde(rename_all = "camelCase")]
pub struct SecretSpec {
    /// Free text about the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub description: Option<String>,

    /// KmsKey that encrypts the secret's versions. Defaults to the namespace's Coffer-managed
    /// key for secrets (AWS's `aws/secretsmanager`). Changing it applies to versions made after
    /// the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_ref: Option<KeyReference>,

    /// Value source: Coffer generates a random value (a password, or a JSON document holding
    /// one) when the secret is made. Give at most one of generate, sealedValue and fromSecret;
    /// with none, values come through the API (PutSecretValue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<GenerateSettings>,

    /// Value source: ciphertext in base64, made offline with `kubectl coffer seal` for this
    /// cluster, namespace and name; only Coffer can open it. A new sealedValue becomes a new
    /// version. Give at most one of generate, sealedValue and fromSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 262144), regex(pattern = BASE64_PATTERN))]
    pub sealed_value: Option<String>,

    /// Value source: one key of a core Secret in the same namespace, imported as the secret's
    /// value and imported again when it changes; the core Secret may go once imported. Give at
    /// most one of generate, sealedValue and fromSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_secret: Option<SecretKeySelector>,

    /// Scheduled rotation. Without it the secret rotates only on demand (RotateSecret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<SecretRotation>,

    /// Resource policy: who outside the namespace may read the secret. Within the namespace,
    /// access follows Kubernetes RBAC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_policy: Option<ResourcePolicy>,

    /// Resource policy as an AWS policy document (JSON), for what resourcePolicy cannot say.
    /// PutResourcePolicy through the API writes it here. Give resourcePolicy or this, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 20480))]
    pub resource_policy_document: Option<String>,

    /// Opt-in copy of the current value into a core Secret, for consumers that read only core
    /// Secrets. The plaintext then sits in that core Secret, so leave this out unless needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync: Option<SyncSettings>,

    /// Days, 7 to 30, between deleting the resource and destroying the secret's versions,
    /// during which the deletion can be cancelled (RestoreSecret). Defaults to 30.
    #[serde(default = "default_recovery_window_days")]
    #[schemars(range(min = MIN_RECOVERY_WINDOW_DAYS, max = MAX_RECOVERY_WINDOW_DAYS))]
    pub recovery_window_days: i32,
}

/// How Coffer generates a random value, in the manner of GetRandomPassword.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("has(self.template) == has(self.generateStringKey)").message("template and generateStringKey go together"))]
#[x_kube(validation = Rule::new("!(self.excludeLowercase && self.excludeUppercase && self.excludeNumbers && self.excludePunctuation && !self.includeSpace)").message("every kind of character is excluded"))]
#[serde(rename_all = "camelCase")]
pub struct GenerateSettings {
    /// Number of characters to generate, 1 to 4096. Defaults to 32.
    #[serde(default = "default_generated_length")]
    #[schemars(range(min = MIN_GENERATED_LENGTH, max = MAX_GENERATED_LENGTH))]
    pub length: i32,
    /// Characters that must not appear in the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub exclude_characters: Option<String>,
    /// Leave out lowercase letters.
    #[serde(default)]
    pub exclude_lowercase: bool,
    /// Leave out uppercase letters.
    #[serde(default)]
    pub exclude_uppercase: bool,
    /// Leave out digits.
    #[serde(default)]
    pub exclude_numbers: bool,
    /// Leave out punctuation, the characters ``!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~``.
    #[serde(default)]
    pub exclude_punctuation: bool,
    /// Allow the space character.
    #[serde(default)]
    pub include_space: bool,
    /// Include at least one character of each kind that is not excluded. Defaults to true.
    #[serde(default = "default_true")]
    pub require_each_included_type: bool,
    /// A JSON object, as a string, that the generated value is added to under
    /// generateStringKey, such as `{"username": "app"}`. Without it the value is the generated
    /// string alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 2, max = 65536))]
    pub template: Option<String>,
    /// Key under which the generated string goes into template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub generate_string_key: Option<String>,
}

impl Default for GenerateSettings {
    fn default() -> Self {
        Self {
            length: DEFAULT_GENERATED_LENGTH,
            exclude_characters: None,
            exclude_lowercase: false,
            exclude_uppercase: false,
            exclude_numbers: false,
            exclude_punctuation: false,
            include_space: false,
            require_each_included_type: true,
            template: None,
            generate_string_key: None,
        }
    }
}

/// Scheduled rotation of a Secret, through the four steps create, set, test and finish. The
/// version labelled AWSCURRENT changes only when a rotation finishes; a failed rotation leaves
/// it alone and is retried with backoff. Removing this block turns scheduled rotation off.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[x_kube(validation = Rule::new("(self.strategy == 'postgres') == has(self.postgres)").message("postgres settings are required with strategy postgres, and allowed only with it"))]
#[x_kube(validation = Rule::new("(self.strategy == 'mysql') == has(self.mysql)").message("mysql settings are required with strategy mysql, and allowed only with it"))]
#[x_kube(validation = Rule::new("(self.strategy == 'job') == has(self.job)").message("job settings are required with strategy job, and allowed only with it"))]
#[x_kube(validation = Rule::new("(self.strategy == 'webhook') == has(self.webhook)").message("webhook settings are required with strategy webhook, and allowed only with it"))]
#[serde(rename_all = "camelCase")]
pub struct SecretRotation {
    /// When to rotate: `rate(N days)`, `rate(N hours)`, or `cron(MINUTES HOURS DAY MONTH
    /// WEEKDAY YEAR)` in the six-field syntax of AWS schedules (with `?`, `L`, `W` and `#`),
    /// in UTC.
    #[schemars(length(max = 256), regex(pattern = SCHEDULE_PATTERN))]
    pub schedule: String,
    /// Length of the rotation window, `Nh` (1 to 24 hours): each rotation starts at a random
    /// instant in it, so that secrets on one schedule spread out. Defaults to the rest of the
    /// UTC day (one hour for `rate(N hours)`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([1-9]|1[0-9]|2[0-4])h$"))]
    pub duration: Option<String>,
    /// How a new value is made and put in place: generate (the default), postgres, mysql, job
    /// or webhook. Each strategy but generate needs its settings block of the same name. The
    /// generate strategy (and the password the database strategies set) follows the `generate`
    /// block of the spec, or its defaults.
    #[serde(default)]
    pub strategy: RotationStrategy,
    /// Settings of the postgres strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<DatabaseRotation>,
    /// Settings of the mysql strategy (MySQL and MariaDB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mysql: Option<DatabaseRotation>,
    /// Settings of the job strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRotation>,
    /// Settings of the webhook strategy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookRotation>,
}

/// How a Secret is rotated.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RotationStrategy {
    /// Coffer generates a new value with the secret's generate settings (or the defaults).
    #[default]
    Generate,
    /// Coffer sets a new password for a PostgreSQL role.
    Postgres,
    /// Coffer sets a new password for a MySQL or MariaDB user.
    Mysql,
    /// A Kubernetes Job runs each rotation step, as an AWS rotation Lambda would.
    Job,
    /// An HTTPS endpoint is called for each rotation step.
    Webhook,
}

impl RotationStrategy {
    /// The strategy's name, as the engine knows it.
    pub fn name(self) -> &'static str {
        match self {
            RotationStrategy::Generate => "generate",
            RotationStrategy::Postgres => "postgres",
            RotationStrategy::Mysql => "mysql",
            RotationStrategy::Job => "job",
            RotationStrategy::Webhook => "webhook",
        }
    }
}

/// Rotation of a database user's password. The secret's value is a JSON object as AWS's
/// rotation functions read it: `engine`, `host`, `port`, `username`, `password`, `dbname`
/// (and `masterarn` for alternating users).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRotation {
    /// singleUser: the user changes its own password, logging in with the current one.
    /// alternatingUsers: the master secret's credentials set the password of the inactive one
    /// of two users (`NAME` and `NAME_clone`), so that one of them always works.
    #[serde(default)]
    pub variant: DatabaseRotationVariant,
    /// A Coffer Secret in the same namespace holding the master (administrator) credentials,
    /// for alternatingUsers; without it the value's `masterarn` names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_secret_ref: Option<CofferSecretReference>,
    /// TLS to the database: disable, require (encrypt without verifying), or verifyFull
    /// (verify the certificate and the host name against caBundle or the system's roots).
    #[serde(default)]
    pub tls: DatabaseTls,
    /// PEM certificates, in base64, that the database's certificate must chain to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536), regex(pattern = BASE64_PATTERN))]
    pub ca_bundle: Option<String>,
}

/// The two ways AWS rotates database credentials.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DatabaseRotationVariant {
    #[default]
    SingleUser,
    AlternatingUsers,
}

/// TLS to a database.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum DatabaseTls {
    Disable,
    #[default]
    Require,
    VerifyFull,
}

/// Rotation by a Kubernetes Job.
///
/// Coffer runs one Job per rotation step, giving it the secret's ARN, the step and the pending
/// version id in the environment variables `COFFER_SECRET_ID`, `COFFER_ROTATION_STEP` and
/// `COFFER_CLIENT_REQUEST_TOKEN`, under a ServiceAccount that may read the secret and put its
/// pending version only. In createSecret the Job puts the pending value itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRotation {
    /// Template of the Job, shaped as a Kubernetes JobTemplateSpec (`metadata` and `spec`).
    #[schemars(schema_with = "super::common::preserve_unknown_object")]
    pub template: serde_json::Value,
}

/// Rotation by an HTTPS endpoint.
///
/// Coffer POSTs each rotation step as JSON (`SecretId`, `ClientRequestToken`, `Step`), as
/// AWS passes them to a rotation Lambda, signed with HMAC-SHA256, and takes a 2xx answer as
/// success. In createSecret the endpoint puts the pending value itself.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookRotation {
    /// HTTPS URL of the endpoint.
    #[schemars(length(min = 9, max = 2048), regex(pattern = r"^https://[^\s]+$"))]
    pub url: String,
    /// PEM certificates, in base64, that the endpoint's certificate must chain to. Defaults to
    /// the system's trust roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536), regex(pattern = BASE64_PATTERN))]
    pub ca_bundle: Option<String>,
    /// A Coffer Secret in the same namespace whose value is the key that signs each request.
    pub signing_secret_ref: CofferSecretReference,
}

/// Who outside the Secret's namespace may read it (GetSecretValue and DescribeSecret).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourcePolicy {
    /// Namespaces every ServiceAccount of which may read the secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub allowed_namespaces: Vec<String>,
    /// ServiceAccounts, written `NAMESPACE/NAME`, that may read the secret.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(length(min = 3, max = 317), regex(pattern = NAMESPACED_SERVICE_ACCOUNT_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub allowed_service_accounts: Vec<String>,
}

/// Copy of a Secret's current value into a core Secret in the same namespace, owned by the
/// Coffer Secret and rewritten when the value changes. This is the only way a plaintext value
/// reaches a Kubernetes object (and etcd): leave it out unless a consumer reads only core
/// Secrets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[x_kube(validation = Rule::new("self.type != 'kubernetes.io/tls' || self.keys.size() == 0 || (self.keys.exists(k, k.key == 'tls.crt') && self.keys.exists(k, k.key == 'tls.key'))").message("a kubernetes.io/tls Secret needs the keys tls.crt and tls.key"))]
#[x_kube(validation = Rule::new("self.type != 'kubernetes.io/dockerconfigjson' || self.keys.size() == 0 || self.keys.exists(k, k.key == '.dockerconfigjson')").message("a kubernetes.io/dockerconfigjson Secret needs the key .dockerconfigjson"))]
#[serde(rename_all = "camelCase")]
pub struct SyncSettings {
    /// Whether the copy is kept. Defaults to true; set false to remove the core Secret while
    /// keeping these settings.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Name of the core Secret. Defaults to the name of the Coffer Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub secret_name: Option<String>,
    /// Type of the core Secret: `Opaque` (the default), `kubernetes.io/tls`,
    /// `kubernetes.io/dockerconfigjson` or `kubernetes.io/basic-auth`.
    #[serde(default = "default_secret_type", rename = "type")]
    #[schemars(regex(
        pattern = r"^(Opaque|kubernetes\.io/tls|kubernetes\.io/dockerconfigjson|kubernetes\.io/basic-auth)$"
    ))]
    pub type_: String,
    /// Which parts of the value go under which keys of the core Secret. When empty, a value
    /// that is a JSON object gives one key per top-level property, and any other value goes
    /// under the key `value`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["key"])
    )]
    pub keys: Vec<SyncKey>,
    /// Labels of the core Secret, besides those Coffer sets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the core Secret, besides those Coffer sets.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub annotations: BTreeMap<String, String>,
}

/// One key of a synced core Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncKey {
    /// Key in the core Secret's data.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_DATA_KEY_PATTERN))]
    pub key: String,
    /// Top-level property of the JSON object value whose value goes under key. Without it the
    /// whole value goes under key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub property: Option<String>,
}

/// Observed state of a Secret. It carries metadata only, never a value.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStatus {
    /// ARN of the secret, `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-SUFFIX`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Versions that carry at least one staging label, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<SecretVersion>,
    /// Id of the version labelled AWSCURRENT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// Progress of rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationStatus>,
    /// When the versions will be destroyed; present only while a deletion waits out its
    /// recovery window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<Time>,
    /// Latest observations of the secret's state, such as `Ready`.
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

/// One version of a Secret's value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    /// Version id (a UUID, the ClientRequestToken that made it).
    pub version_id: String,
    /// Staging labels of the version: AWSCURRENT, AWSPENDING, AWSPREVIOUS, or labels of the
    /// user's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<String>,
    /// When the version was created.
    pub created_date: Time,
}

/// Progress of a Secret's rotation. It lives in status so that a controller that stops in the
/// middle of a rotation resumes it at the right step.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStatus {
    /// Step of the rotation in progress, or Idle.
    #[serde(default)]
    pub state: RotationState,
    /// Id of the version that the rotation in progress is making (labelled AWSPENDING).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_version_id: Option<String>,
    /// When the last rotation finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated_date: Option<Time>,
    /// When the next scheduled rotation is due.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<Time>,
    /// Why the last rotation failed, without any secret value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub last_error: Option<String>,
}

/// Step of a Secret's rotation, named after the steps of an AWS rotation function.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum RotationState {
    /// No rotation is in progress.
    #[default]
    Idle,
    /// Making the new value and storing it as the AWSPENDING version.
    CreatingSecret,
    /// Putting the new value in place where it is used (the database, for instance).
    SettingSecret,
    /// Checking that the new value works.
    TestingSecret,
    /// Moving AWSCURRENT to the new version, and AWSPREVIOUS to the old one.
    FinishingSecret,
    /// The last rotation failed; AWSCURRENT was not touched.
    Failed,
}

fn default_recovery_window_days() -> i32 {
    MAX_RECOVERY_WINDOW_DAYS
}

fn default_generated_length() -> i32 {
    DEFAULT_GENERATED_LENGTH
}

fn default_secret_type() -> String {
    "Opaque".to_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::cel_check::{assert_invalid, assert_valid, object};

    fn secret(spec: serde_json::Value) -> serde_json::Value {
        object("Secret", spec)
    }

    #[test]
    fn defaults() {
        let spec: SecretSpec =
            serde_json::from_value(json!({"generate": {}})).expect("a spec parses");
        assert_eq!(spec.generate, Some(GenerateSettings::default()));
        assert_eq!(spec.recovery_window_days, 30);
        let generate = GenerateSettings::default();
        assert_eq!(generate.length, 32);
        assert!(generate.require_each_included_type);
        let sync: SyncSettings = serde_json::from_value(json!({})).expect("parses");
        assert!(sync.enabled);
        assert_eq!(sync.type_, "Opaque");
        let rotation: SecretRotation =
            serde_json::from_value(json!({"schedule": "rate(30 days)"})).expect("parses");
        assert_eq!(rotation.strategy, RotationStrategy::Generate);
        let status: RotationStatus = serde_json::from_value(json!({})).expect("parses");
        assert_eq!(status.state, RotationState::Idle);
    }

    #[test]
    fn cel_accepts_valid_secrets() {
        assert_valid::<Secret>(&secret(json!({"generate": {}})));
        assert_valid::<Secret>(&secret(json!({
            "description": "API database credentials",
            "kmsKeyRef": {"name": "alias/app"},
            "generate": {
                "length": 40,
                "excludePunctuation": true,
                "template": "{\"username\": \"api\"}",
                "generateStringKey": "password",
            },
            "rotation": {
                "schedule": "rate(30 days)",
                "strategy": "postgres",
                "postgres": {"masterSecretRef": {"name": "db-admin"}, "username": "api"},
            },
            "resourcePolicy": {
                "allowedNamespaces": ["batch"],
                "allowedServiceAccounts": ["web/frontend"],
            },
            "sync": {"secretName": "api-db", "keys": [{"key": "password", "property": "password"}]},
            "recoveryWindowDays": 7,
        })));
        assert_valid::<Secret>(&secret(json!({"sealedValue": "AAECAwQ="})));
        assert_valid::<Secret>(&secret(json!({
            "fromSecret": {"name": "legacy", "key": "token"},
            "rotation": {
                "schedule": "cron(0 4 1 * ? *)",
                "strategy": "webhook",
                "webhook": {"url": "https://rotator.example.svc/rotate"},
            },
        })));
        assert_valid::<Secret>(&secret(json!({
            "generate": {},
            "rotation": {
                "schedule": "rate(12 hours)",
                "strategy": "job",
                "job": {"template": {"spec": {"template": {"spec": {"containers": []}}}}},
            },
        })));
        let typed = Secret::new(
            "typed",
            SecretSpec {
                description: None,
                kms_key_ref: None,
                generate: Some(GenerateSettings::default()),
                sealed_value: None,
                from_secret: None,
                rotation: None,
                resource_policy: None,
                resource_policy_document: None,
                sync: None,
                recovery_window_days: 30,
            },
        );
        assert_valid::<Secret>(&serde_json::to_value(typed).expect("serializes"));
    }

    #[test]
    fn cel_exactly_one_value_source() {
        let message = "give at most one of generate, sealedValue and fromSecret";
        assert_valid::<Secret>(&secret(json!({})));
        assert_invalid::<Secret>(
            &secret(json!({"generate": {}, "sealedValue": "AAAA"})),
            message,
        );
        assert_invalid::<Secret>(
            &secret(json!({
                "sealedValue": "AAAA",
                "fromSecret": {"name": "a", "key": "b"},
            })),
            message,
        );
    }

    #[test]
    fn every_secret_name_has_one_resource_name() {
        assert_eq!(resource_name_for("db-password"), "db-password");
        assert_eq!(resource_name_for("app.db"), "app.db");
        let derived = resource_name_for("prod/db/Password");
        assert!(derived.starts_with("sm-prod-db-password-"), "{derived}");
        assert_ne!(derived, resource_name_for("prod/db/password"));
        assert_ne!(resource_name_for("sm-x"), "sm-x");
        let long = "a/".repeat(256);
        assert!(resource_name_for(&long).len() <= 63);
        assert_eq!(resource_name_for("///").len(), "sm-".len() + 10);
        for name in ["db-password", "prod/db/Password", "x@y", "sm-x", "A"] {
            let resource = resource_name_for(name);
            assert!(
                is_plain_resource_name(resource.trim_start_matches("sm-")),
                "{resource}"
            );
            let mut object =
                Secret::new(&resource, serde_json::from_value(json!({})).expect("spec"));
            if resource != name {
                object.metadata.annotations =
                    Some([(SECRET_NAME_ANNOTATION.to_owned(), name.to_owned())].into());
            }
            assert_eq!(object.secret_name().as_deref(), Ok(name));
        }
        let mut stray = Secret::new("other", serde_json::from_value(json!({})).expect("spec"));
        stray.metadata.annotations =
            Some([(SECRET_NAME_ANNOTATION.to_owned(), "prod/db".to_owned())].into());
        assert!(matches!(
            stray.secret_name(),
            Err(SecretNameError::Mismatch { .. })
        ));
        let bare = Secret::new("sm-abc", serde_json::from_value(json!({})).expect("spec"));
        assert_eq!(bare.secret_name(), Err(SecretNameError::MissingAnnotation));
    }

    #[test]
    fn cel_strategy_settings_match_the_strategy() {
        assert_invalid::<Secret>(
            &secret(json!({
                "generate": {},
                "rotation": {"schedule": "rate(1 day)", "strategy": "mysql"},
            })),
            "mysql settings are required with strategy mysql",
        );
        assert_invalid::<Secret>(
            &secret(json!({
                "generate": {},
                "rotation": {
                    "schedule": "rate(1 day)",
                    "webhook": {"url": "https://example.com/"},
                },
            })),
            "webhook settings are required with strategy webhook, and allowed only with it",
        );
        assert_invalid::<Secret>(
            &secret(json!({
                "generate": {},
                "rotation": {
                    "schedule": "rate(1 day)",
                    "strategy": "job",
                    "postgres": {"masterSecretRef": {"name": "db"}, "username": "u"},
                },
            })),
            "postgres settings are required with strategy postgres",
        );
    }

    #[test]
    fn cel_generate_settings() {
        assert_invalid::<Secret>(
            &secret(json!({"generate": {"template": "{}"}})),
            "template and generateStringKey go together",
        );
        assert_invalid::<Secret>(
            &secret(json!({"generate": {
                "excludeLowercase": true,
                "excludeUppercase": true,
                "excludeNumbers": true,
                "excludePunctuation": true,
            }})),
            "every kind of character is excluded",
        );
    }
}
