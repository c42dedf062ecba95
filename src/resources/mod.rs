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
