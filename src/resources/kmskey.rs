//! The `KmsKey` custom resource: a key in the manner of AWS KMS.

use std::collections::BTreeMap;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Condition, DNS_LABEL_PATTERN, Time, default_true};

/// Shortest key deletion waiting period, in days.
pub const MIN_DELETION_WINDOW_DAYS: i32 = 7;
/// Longest key deletion waiting period, in days, and the default.
pub const MAX_DELETION_WINDOW_DAYS: i32 = 30;
/// Shortest automatic rotation period, in days.
pub const MIN_ROTATION_PERIOD_DAYS: i32 = 90;
/// Longest automatic rotation period, in days.
pub const MAX_ROTATION_PERIOD_DAYS: i32 = 2560;
/// Automatic rotation period used when none is given, in days.
pub const DEFAULT_ROTATION_PERIOD_DAYS: i32 = 365;
/// The only key policy language version.
pub const POLICY_VERSION: &str = "2012-10-17";

/// Pattern of an alias name, written without its `alias/` prefix.
const ALIAS_PATTERN: &str = r"^[a-zA-Z0-9/_-]+$";

/// Pattern of a key policy principal.
const PRINCIPAL_PATTERN: &str = r"^(\*|system:serviceaccount:[a-z0-9]([-a-z0-9]*[a-z0-9])?:[a-z0-9]([-.a-z0-9]*[a-z0-9])?|system:serviceaccounts:[a-z0-9]([-a-z0-9]*[a-z0-9])?)$";

/// Pattern of a key policy action.
const ACTION_PATTERN: &str = r"^(\*|kms:[a-zA-Z*]+)$";

/// Desired state of a KmsKey: what kind of key it is, whether and how often it rotates, who may
/// use it, and the aliases it goes by.
// Clippy takes the repeated `type_ = "string"` of separate printer columns for duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "coffer.dev",
    version = "v1alpha1",
    kind = "KmsKey",
    plural = "kmskeys",
    singular = "kmskey",
    namespaced,
    status = "KmsKeyStatus",
    derive = "PartialEq",
    shortname = "kk",
    category = "coffer",
    doc = "KmsKey is a cryptographic key kept by Coffer and served through an AWS KMS compatible API. Its material never appears in the resource: each version is wrapped by the root key and kept, as ciphertext, in a companion core Secret.",
    printcolumn(
        name = "KeyId",
        type_ = "string",
        json_path = ".status.keyId",
        description = "Key id, as AWS KMS calls it"
    ),
    printcolumn(
        name = "State",
        type_ = "string",
        json_path = ".status.keyState",
        description = "Key state"
    ),
    printcolumn(
        name = "Spec",
        type_ = "string",
        json_path = ".spec.keySpec",
        description = "Key spec"
    ),
    printcolumn(
        name = "Usage",
        type_ = "string",
        json_path = ".spec.keyUsage",
        description = "Key usage"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("!self.keySpec.startsWith('ECC_') || self.keyUsage == 'SIGN_VERIFY'").message("ECC key specs support only keyUsage SIGN_VERIFY"))]
#[x_kube(validation = Rule::new("self.keySpec != 'SYMMETRIC_DEFAULT' || self.keyUsage == 'ENCRYPT_DECRYPT'").message("SYMMETRIC_DEFAULT keys support only keyUsage ENCRYPT_DECRYPT"))]
#[x_kube(validation = Rule::new("!has(self.rotation) || !self.rotation.enabled || (self.keySpec == 'SYMMETRIC_DEFAULT' && self.origin == 'COFFER')").message("automatic rotation is available only for SYMMETRIC_DEFAULT keys with origin COFFER"))]
#[x_kube(validation = Rule::new("!has(self.policy) || !has(self.policyDocument)").message("set at most one of policy and policyDocument"))]
#[serde(rename_all = "camelCase")]
pub struct KmsKeySpec {
    /// Free text about the key and what it protects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 8192))]
    pub description: Option<String>,

    /// Kind of key: SYMMETRIC_DEFAULT (AES-256, the default), RSA_2048, RSA_3072, RSA_4096,
    /// ECC_NIST_P256 or ECC_NIST_P384. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("keySpec is immutable"))]
    pub key_spec: KeySpec,

    /// What the key is for: ENCRYPT_DECRYPT (the default) or SIGN_VERIFY. SYMMETRIC_DEFAULT keys
    /// only encrypt, ECC keys only sign, RSA keys do either. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("keyUsage is immutable"))]
    pub key_usage: KeyUsage,

    /// Where the key material comes from: COFFER (the default) when Coffer generates it,
    /// EXTERNAL when it is imported. Immutable.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("origin is immutable"))]
    pub origin: KeyOrigin,

    /// Whether the key may be used. A disabled key refuses every cryptographic operation and
    /// keeps its material. Defaults to true.
    #[serde(default = "default_true")]
    pub enabled: bool,

    /// Automatic rotation: a new key version on a schedule. Old versions keep decrypting what
    /// they encrypted. Only for SYMMETRIC_DEFAULT keys with origin COFFER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<KeyRotation>,

    /// Days, 7 to 30, between deleting the resource and destroying the key material, during
    /// which the deletion can be cancelled. Defaults to 30. Once the material is destroyed,
    /// every value encrypted under the key is lost.
    #[serde(default = "default_deletion_window_days")]
    #[schemars(range(min = MIN_DELETION_WINDOW_DAYS, max = MAX_DELETION_WINDOW_DAYS))]
    pub deletion_window_days: i32,

    /// Key policy: who may do what with the key. Without one, access follows Kubernetes RBAC
    /// (verbs such as `encrypt` and `decrypt` on the `kmskeys` resource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<KeyPolicy>,

    /// Key policy as an AWS KMS JSON policy document, for policies `policy` cannot express.
    /// Coffer writes it here when the policy is changed through the API (PutKeyPolicy). At most
    /// one of `policy` and `policyDocument` may be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 32768))]
    pub policy_document: Option<String>,

    /// Alias names of the key, without the `alias/` prefix (so `app/db` is called `alias/app/db`
    /// in the AWS API). Each is unique within the namespace, at most 250 characters of letters,
    /// digits, `/`, `_` and `-`, and may not begin with `aws/`, which AWS reserves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 50),
        inner(length(min = 1, max = 250), regex(pattern = ALIAS_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(validation = Rule::new("self.all(a, !a.startsWith('aws/'))").message("alias names may not begin with aws/"))]
    #[x_kube(validation = Rule::new("self.all(a, !a.startsWith('alias/'))").message("write alias names without the alias/ prefix"))]
    pub aliases: Vec<String>,
}

/// Kind of key material.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeySpec {
    /// A 256-bit AES key, for encryption (AES-256-SIV inside Coffer).
    #[default]
    #[serde(rename = "SYMMETRIC_DEFAULT")]
    SymmetricDefault,
    /// A 2048-bit RSA key pair.
    #[serde(rename = "RSA_2048")]
    Rsa2048,
    /// A 3072-bit RSA key pair.
    #[serde(rename = "RSA_3072")]
    Rsa3072,
    /// A 4096-bit RSA key pair.
    #[serde(rename = "RSA_4096")]
    Rsa4096,
    /// An elliptic curve key pair on NIST P-256 (secp256r1).
    #[serde(rename = "ECC_NIST_P256")]
    EccNistP256,
    /// An elliptic curve key pair on NIST P-384 (secp384r1).
    #[serde(rename = "ECC_NIST_P384")]
    EccNistP384,
}

impl KeySpec {
    /// Whether the key is a public/private key pair.
    pub fn is_asymmetric(self) -> bool {
        !matches!(self, Self::SymmetricDefault)
    }
}

/// What a key is for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeyUsage {
    /// Encrypt and decrypt data, and generate data keys.
    #[default]
    #[serde(rename = "ENCRYPT_DECRYPT")]
    EncryptDecrypt,
    /// Sign messages and verify signatures.
    #[serde(rename = "SIGN_VERIFY")]
    SignVerify,
}

/// Where key material comes from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeyOrigin {
    /// Coffer generates the material.
    #[default]
    #[serde(rename = "COFFER")]
    Coffer,
    /// The material is imported (ImportKeyMaterial); the key waits in PendingImport until then.
    #[serde(rename = "EXTERNAL")]
    External,
}

/// Automatic rotation of a key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyRotation {
    /// Whether automatic rotation is on. Defaults to true, so that writing a rotation block
    /// turns it on; set false to pause it without losing the period.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Days between two rotations, 90 to 2560. Defaults to 365.
    #[serde(default = "default_rotation_period_days")]
    #[schemars(range(min = MIN_ROTATION_PERIOD_DAYS, max = MAX_ROTATION_PERIOD_DAYS))]
    pub period_days: i32,
}

impl Default for KeyRotation {
    fn default() -> Self {
        Self {
            enabled: true,
            period_days: DEFAULT_ROTATION_PERIOD_DAYS,
        }
    }
}

/// A key policy, in the manner of an AWS KMS key policy.
///
/// An explicit Deny always wins over an Allow. Coffer refuses a policy that would lock every
/// administrator out of the key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyPolicy {
    /// Policy language version; only 2012-10-17 exists.
    #[serde(default)]
    pub version: PolicyVersion,
    /// The statements of the policy, 1 to 100, each allowing or denying some actions to some
    /// principals.
    #[schemars(length(min = 1, max = 100))]
    pub statements: Vec<PolicyStatement>,
}

/// Version of the key policy language.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum PolicyVersion {
    /// The 2012-10-17 policy language, the one AWS uses.
    #[default]
    #[serde(rename = "2012-10-17")]
    V2012_10_17,
}

/// One statement of a key policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatement {
    /// Statement id, free text that names the statement in messages and audit records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub sid: Option<String>,
    /// Whether the statement allows or denies the actions.
    pub effect: Effect,
    /// Who the statement is about: `system:serviceaccount:NAMESPACE:NAME` for one
    /// ServiceAccount, `system:serviceaccounts:NAMESPACE` for every ServiceAccount of a
    /// namespace, or `*` for any caller.
    #[schemars(
        length(min = 1, max = 100),
        inner(length(max = 317), regex(pattern = PRINCIPAL_PATTERN))
    )]
    pub principals: Vec<String>,
    /// KMS actions the statement covers, such as `kms:Decrypt` or `kms:GenerateDataKey`; `*`
    /// within a name is a wildcard (`kms:*`, `kms:Describe*`), and `*` alone means every action.
    #[schemars(
        length(min = 1, max = 100),
        inner(length(max = 128), regex(pattern = ACTION_PATTERN))
    )]
    pub actions: Vec<String>,
    /// Conditions that must all hold for the statement to apply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<PolicyConditions>,
}

/// Whether a policy statement allows or denies.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Effect {
    /// The statement grants the actions.
    Allow,
    /// The statement refuses the actions, whatever any other statement allows.
    Deny,
}

/// Conditions of a policy statement. Every condition given must hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyConditions {
    /// Encryption context pairs that the request must carry with exactly these values
    /// (`kms:EncryptionContext:KEY` equality in AWS terms).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub encryption_context_equals: BTreeMap<String, String>,
    /// Namespaces the caller must belong to; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 100),
        inner(length(min = 1, max = 63), regex(pattern = DNS_LABEL_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub caller_namespace: Vec<String>,
}

/// Observed state of a KmsKey. It carries metadata only, never key material.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KmsKeyStatus {
    /// Key id, a UUID, as AWS KMS calls it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// ARN of the key, `arn:aws:kms:REGION:ACCOUNT:key/KEY_ID`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// State of the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_state: Option<KeyState>,
    /// Key spec the material was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_spec: Option<KeySpec>,
    /// Key usage the material was created with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_usage: Option<KeyUsage>,
    /// Versions of the key material, oldest first. Each keeps decrypting what it encrypted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<KeyVersion>,
    /// Id of the version that encrypts and signs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_version: Option<String>,
    /// When the next automatic rotation is due; absent when rotation is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<Time>,
    /// When the key material will be destroyed; present only in state PendingDeletion.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_date: Option<Time>,
    /// Public key of an asymmetric key, a DER-encoded X.509 SubjectPublicKeyInfo in base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    /// Latest observations of the key's state, such as `Ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// State of a key, as AWS KMS names them.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum KeyState {
    /// The material is being generated.
    Creating,
    /// The key is usable.
    Enabled,
    /// The key refuses every cryptographic operation until it is enabled again.
    Disabled,
    /// The resource was deleted; the material is destroyed at `deletionDate` unless the
    /// deletion is cancelled.
    PendingDeletion,
    /// An EXTERNAL key that waits for its material to be imported.
    PendingImport,
    /// The material cannot be reached, for instance because the root key is missing.
    Unavailable,
}

/// One version of a key's material.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    /// Version id, unique within the key.
    pub id: String,
    /// When the version was created.
    pub creation_time: Time,
}

fn default_deletion_window_days() -> i32 {
    MAX_DELETION_WINDOW_DAYS
}

fn default_rotation_period_days() -> i32 {
    DEFAULT_ROTATION_PERIOD_DAYS
}

impl Default for KmsKeySpec {
    fn default() -> Self {
        Self {
            description: None,
            key_spec: KeySpec::default(),
            key_usage: KeyUsage::default(),
            origin: KeyOrigin::default(),
            enabled: true,
            rotation: None,
            deletion_window_days: MAX_DELETION_WINDOW_DAYS,
            policy: None,
            policy_document: None,
            aliases: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::cel_check::{
        assert_invalid, assert_update_invalid, assert_valid, evaluate, object,
    };

    fn key(spec: serde_json::Value) -> serde_json::Value {
        object("KmsKey", spec)
    }

    #[test]
    fn empty_spec_takes_the_defaults() {
        let spec: KmsKeySpec = serde_json::from_value(json!({})).expect("an empty spec parses");
        assert_eq!(spec, KmsKeySpec::default());
        assert_eq!(spec.key_spec, KeySpec::SymmetricDefault);
        assert_eq!(spec.key_usage, KeyUsage::EncryptDecrypt);
        assert_eq!(spec.origin, KeyOrigin::Coffer);
        assert!(spec.enabled);
        assert_eq!(spec.deletion_window_days, 30);
        let rotation: KeyRotation = serde_json::from_value(json!({})).expect("parses");
        assert_eq!(rotation, KeyRotation::default());
        assert_eq!(rotation.period_days, 365);
    }

    #[test]
    fn serializes_camel_case_and_skips_absent_fields() {
        let spec = KmsKeySpec {
            key_spec: KeySpec::EccNistP256,
            key_usage: KeyUsage::SignVerify,
            ..KmsKeySpec::default()
        };
        let value = serde_json::to_value(&spec).expect("serializes");
        assert_eq!(
            value,
            json!({
                "keySpec": "ECC_NIST_P256",
                "keyUsage": "SIGN_VERIFY",
                "origin": "COFFER",
                "enabled": true,
                "deletionWindowDays": 30,
            })
        );
        let status = serde_json::to_value(KmsKeyStatus::default()).expect("serializes");
        assert_eq!(status, json!({}));
    }

    #[test]
    fn cel_accepts_valid_keys() {
        assert_valid::<KmsKey>(&key(json!({})));
        assert_valid::<KmsKey>(&key(json!({
            "description": "database column encryption",
            "rotation": {"periodDays": 90},
            "aliases": ["app/db", "payments_key-1"],
            "policy": {
                "statements": [{
                    "sid": "app",
                    "effect": "Allow",
                    "principals": ["system:serviceaccount:app:api"],
                    "actions": ["kms:Decrypt", "kms:GenerateDataKey*"],
                    "conditions": {
                        "encryptionContextEquals": {"table": "users"},
                        "callerNamespace": ["app"],
                    },
                }],
            },
        })));
        assert_valid::<KmsKey>(&key(
            json!({"keySpec": "RSA_3072", "keyUsage": "SIGN_VERIFY"}),
        ));
        assert_valid::<KmsKey>(&key(json!({"keySpec": "RSA_2048"})));
        assert_valid::<KmsKey>(&key(
            json!({"keySpec": "ECC_NIST_P384", "keyUsage": "SIGN_VERIFY"}),
        ));
        // A paused rotation block is allowed on any key.
        assert_valid::<KmsKey>(&key(json!({
            "keySpec": "RSA_4096",
            "rotation": {"enabled": false},
        })));
        // The typed value, as the controller would write it.
        let typed = KmsKey::new("typed", KmsKeySpec::default());
        assert_valid::<KmsKey>(&serde_json::to_value(typed).expect("serializes"));
    }

    #[test]
    fn cel_ecc_keys_only_sign() {
        assert_invalid::<KmsKey>(
            &key(json!({"keySpec": "ECC_NIST_P256"})),
            "ECC key specs support only keyUsage SIGN_VERIFY",
        );
    }

    #[test]
    fn cel_symmetric_keys_only_encrypt() {
        assert_invalid::<KmsKey>(
            &key(json!({"keyUsage": "SIGN_VERIFY"})),
            "SYMMETRIC_DEFAULT keys support only keyUsage ENCRYPT_DECRYPT",
        );
    }

    #[test]
    fn cel_rotation_only_for_symmetric_coffer_keys() {
        let message = "automatic rotation is available only for SYMMETRIC_DEFAULT keys";
        assert_invalid::<KmsKey>(
            &key(json!({"keySpec": "RSA_2048", "rotation": {}})),
            message,
        );
        assert_invalid::<KmsKey>(
            &key(json!({"origin": "EXTERNAL", "rotation": {"periodDays": 400}})),
            message,
        );
    }

    #[test]
    fn cel_alias_prefixes() {
        assert_invalid::<KmsKey>(
            &key(json!({"aliases": ["ok", "aws/secretsmanager"]})),
            "alias names may not begin with aws/",
        );
        assert_invalid::<KmsKey>(
            &key(json!({"aliases": ["alias/app"]})),
            "write alias names without the alias/ prefix",
        );
    }

    #[test]
    fn cel_key_spec_usage_and_origin_are_immutable() {
        let old = key(json!({"keySpec": "RSA_2048"}));
        assert_eq!(evaluate::<KmsKey>(&old, Some(&old)), Ok(()));
        let changed = key(json!({"keySpec": "RSA_2048", "description": "now described"}));
        assert_eq!(evaluate::<KmsKey>(&changed, Some(&old)), Ok(()));
        assert_update_invalid::<KmsKey>(
            &key(json!({"keySpec": "RSA_4096"})),
            Some(&old),
            "keySpec is immutable",
        );
        assert_update_invalid::<KmsKey>(
            &key(json!({"keySpec": "RSA_2048", "keyUsage": "SIGN_VERIFY"})),
            Some(&old),
            "keyUsage is immutable",
        );
        assert_update_invalid::<KmsKey>(
            &key(json!({"keySpec": "RSA_2048", "origin": "EXTERNAL"})),
            Some(&old),
            "origin is immutable",
        );
    }
}
