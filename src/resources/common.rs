//! Types shared by more than one Coffer custom resource.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A status condition, as every Kubernetes API uses them.
///
/// Coffer sets at least `Ready`; see each kind for the others.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// A point in time, serialized as an RFC 3339 string in UTC with second precision.
pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// API group of every Coffer custom resource.
pub const GROUP: &str = "coffer.dev";

/// API version of every Coffer custom resource.
pub const VERSION: &str = "v1alpha1";

/// Category that `kubectl get coffer` lists.
pub const CATEGORY: &str = "coffer";

/// Condition type that says whether the controller has brought the resource to its spec.
pub const CONDITION_READY: &str = "Ready";

/// Pattern of a Kubernetes object name that is a DNS subdomain (RFC 1123).
pub(crate) const DNS_SUBDOMAIN_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Pattern of a Kubernetes namespace name, a DNS label (RFC 1123).
pub(crate) const DNS_LABEL_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Pattern of a key in the data of a core Secret.
pub(crate) const SECRET_DATA_KEY_PATTERN: &str = r"^[-._a-zA-Z0-9]+$";

/// Pattern of a base64 string (standard alphabet, padded).
pub(crate) const BASE64_PATTERN: &str = r"^[A-Za-z0-9+/]*={0,2}$";

/// A reference to a KmsKey that protects a value.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyReference {
    /// The key: the name of a KmsKey in the same namespace, one of its aliases written as
    /// `alias/NAME`, its key id, or its ARN.
    #[schemars(length(min = 1, max = 2048))]
    pub name: String,
}

/// A reference to one key of a core Kubernetes Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeySelector {
    /// Name of the core Secret, in the same namespace as the resource that refers to it.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
    /// Key within the core Secret's data whose value is taken.
    #[schemars(length(min = 1, max = 253), regex(pattern = SECRET_DATA_KEY_PATTERN))]
    pub key: String,
}

/// A reference to a Coffer Secret in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CofferSecretReference {
    /// Name of the Coffer Secret (kind `Secret` in group `coffer.dev`), in the same namespace.
    #[schemars(length(min = 1, max = 253), regex(pattern = DNS_SUBDOMAIN_PATTERN))]
    pub name: String,
}

/// Serde default for booleans that are on unless switched off.
pub(crate) fn default_true() -> bool {
    true
}

/// Schema of an arbitrary JSON object that the API server keeps as written.
pub(crate) fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}
