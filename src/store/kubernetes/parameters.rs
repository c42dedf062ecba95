//! SSM parameters in Kubernetes: versioned records ([`super::versioned`]) declared by Parameter
//! resources.
//!
//! The record object is `parameter-NAMESPACE.HASH` (type `coffer.dev/parameter`), each
//! version's value a `parameter-NAMESPACE.HASH.DIGEST` (type `coffer.dev/parameter-value`:
//! ciphertext for a SecureString, the plain bytes of a String or StringList), both in the
//! controller's namespace. A Parameter declares the parameter its `spec.name` names; one made
//! for a parameter created through the API is named [`parameter_resource_name`].

use std::collections::BTreeMap;

use kube::ResourceExt as _;
use serde_json::Value;

use super::parameter_mapping;
use super::versioned::{VersionedKind, VersionedRecords};
use crate::engine::Caller;
use crate::engine::parameters::ParameterRecord;
use crate::resources::parameter::{Parameter, parameter_resource_name};
use crate::store::{RecordKind, StoreError};

pub use super::versioned::{Abandoned as AbandonedParameter, RecordChanged as ParameterChanged};

/// Parameters as versioned records.
pub struct ParameterKind;

/// The keeper of parameter records.
pub type ParameterRecords = VersionedRecords<ParameterKind>;

impl VersionedKind for ParameterKind {
    type Resource = Parameter;
    type Meta = ParameterRecord;

    const RECORD_KIND: RecordKind = RecordKind::Parameter;
    const PREFIX: &'static str = "parameter";
    const RECORD_TYPE: &'static str = "coffer.dev/parameter";
    const VALUE_TYPE: &'static str = "coffer.dev/parameter-value";
    const LABEL: &'static str = "coffer.dev/parameter";
    const RECORD_ANNOTATION: &'static str = "coffer.dev/parameter-record";
    const VALUES_ANNOTATION: &'static str = "coffer.dev/parameter-values";
    const RESOURCE_NAME_ANNOTATION: &'static str = "coffer.dev/parameter-resource-name";
    const RESOURCE_UID_ANNOTATION: &'static str = "coffer.dev/parameter-resource-uid";
    const RESOURCE_TYPE: &'static str = "parameter.coffer.dev";

    fn name(meta: &ParameterRecord) -> &str {
        &meta.name
    }

    /// A parameter's deletion is immediate, as in AWS: no record waits one out.
    fn is_deleted(_meta: &ParameterRecord) -> bool {
        false
    }

    fn declared_name(resource: &Parameter) -> Option<String> {
        (!resource.spec.name.is_empty()).then(|| resource.spec.name.clone())
    }

    fn resource_for_record(
        namespace: &str,
        meta: &ParameterRecord,
        slots: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Parameter, StoreError> {
        let mut resource = Parameter::new(
            &parameter_resource_name(&meta.name),
            parameter_mapping::spec_for_record(meta, slots),
        );
        resource.metadata.namespace = Some(namespace.to_owned());
        Ok(resource)
    }

    fn spec_mirror(
        meta: &ParameterRecord,
        slots: &BTreeMap<String, Vec<u8>>,
        resource: &Parameter,
    ) -> Result<Option<Value>, StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        let controller = Caller::account_of(&namespace).principal.arn;
        parameter_mapping::spec_mirror(meta, slots, resource, &controller)
    }
}
