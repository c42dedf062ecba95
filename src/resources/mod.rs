//! The custom resource types of Coffer and their CustomResourceDefinitions.
//!
//! Three kinds, all namespaced (a namespace plays the part of an AWS account), in the group
//! `coffer.dev`, version `v1alpha1`:
//! - [`KmsKey`] (`kmskeys`, short name `kk`): a key, as in AWS KMS;
//! - [`Secret`] (`secrets.coffer.dev`, short name `csec`): a secret, as in AWS Secrets Manager;
//! - [`Parameter`] (`parameters`, short name `cparam`): a parameter, as in SSM Parameter Store.
//!
//! The CRDs are generated from these types by [`crds`] and [`crds_yaml`]; the copies committed
//! under `crds/` and `charts/coffer/crds/` are checked against them by `tests/crds.rs`.

pub mod common;
pub mod kmskey;
pub mod parameter;
pub mod secret;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub use common::*;
pub use kmskey::*;
pub use parameter::*;
pub use secret::*;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A CRD could not be written as YAML.
    #[error("could not write a CustomResourceDefinition as YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    /// A parameter name breaks the rules of SSM Parameter Store.
    #[error("invalid parameter name: {0}")]
    InvalidParameterName(#[source] ParameterNameError),
}

/// The CustomResourceDefinitions of Coffer: KmsKey, Secret and Parameter, in that order.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![KmsKey::crd(), Secret::crd(), Parameter::crd()]
}

/// One CRD as a YAML document that starts with `---\n`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, ResourceError> {
    Ok(format!("---\n{}", serde_yaml::to_string(crd)?))
}

/// All CRDs of [`crds`] as one multi-document YAML stream, each document starting with
/// `---\n`. The output is the same on every call.
pub fn crds_yaml() -> Result<String, ResourceError> {
    crds()
        .iter()
        .map(crd_yaml)
        .collect::<Result<Vec<_>, _>>()
        .map(|documents| documents.concat())
}

/// Client-side evaluation of the CEL rules of a CRD, for the unit tests of each kind.
#[cfg(test)]
pub(crate) mod cel_check {
    use kube::CustomResourceExt;
    use serde_json::Value;

    /// The openAPIV3Schema of `K`'s CRD, as JSON.
    pub(crate) fn schema<K: CustomResourceExt>() -> Value {
        let crd = K::crd();
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|version| version.schema.as_ref())
            .and_then(|validation| validation.open_api_v3_schema.as_ref())
            .expect("the CRD has a schema");
        serde_json::to_value(schema).expect("a schema serializes to JSON")
    }

    /// Evaluate the CEL rules of `K`'s CRD on `object` (a whole custom resource, as JSON), as
    /// an update of `old` when given, after applying the schema's defaults as the API server
    /// does. Returns the messages of the rules that failed.
    pub(crate) fn evaluate<K: CustomResourceExt>(
        object: &Value,
        old: Option<&Value>,
    ) -> Result<(), Vec<String>> {
        kube::core::cel::Validator::new()
            .validate(&schema::<K>(), object, old)
            .map_err(|errors| errors.iter().map(|e| e.message.clone()).collect())
    }

    /// Assert that `object` passes every rule.
    pub(crate) fn assert_valid<K: CustomResourceExt>(object: &Value) {
        if let Err(messages) = evaluate::<K>(object, None) {
            panic!("expected {object} to pass, got {messages:?}");
        }
    }

    /// Assert that `object` fails, with a message containing `expected` among the failures.
    pub(crate) fn assert_invalid<K: CustomResourceExt>(object: &Value, expected: &str) {
        assert_update_invalid::<K>(object, None, expected);
    }

    /// Assert that updating `old` to `object` fails with a message containing `expected`.
    pub(crate) fn assert_update_invalid<K: CustomResourceExt>(
        object: &Value,
        old: Option<&Value>,
        expected: &str,
    ) {
        match evaluate::<K>(object, old) {
            Ok(()) => panic!("expected {object} to fail with {expected:?}, but it passed"),
            Err(messages) => assert!(
                messages.iter().any(|m| m.contains(expected)),
                "expected a failure containing {expected:?}, got {messages:?}"
            ),
        }
    }

    /// A whole custom resource of `kind` with the given spec.
    pub(crate) fn object(kind: &str, spec: Value) -> Value {
        serde_json::json!({
            "apiVersion": "coffer.dev/v1alpha1",
            "kind": kind,
            "metadata": {"name": "example", "namespace": "default"},
            "spec": spec,
        })
    }
}
