//! Secrets Manager secrets in Kubernetes: versioned records ([`super::versioned`]) declared by
//! Secret resources.
//!
//! The record object is `secret-NAMESPACE.HASH` (type `coffer.dev/secret`), each version's
//! ciphertext a `secret-NAMESPACE.HASH.DIGEST` (type `coffer.dev/secret-value`), both in the
//! controller's namespace. The resource is named after the secret ([`resource_name_for`]).
//! Deleting the resource schedules the secret's deletion after its recovery window; re-applying
//! it within the window restores the secret.

use std::collections::BTreeMap;

use serde_json::Value;

use super::secret_mapping;
use super::versioned::{VersionedKind, VersionedRecords};
use crate::engine::secrets::SecretRecord;
use crate::resources::secret::{SECRET_NAME_ANNOTATION, Secret, resource_name_for};
use crate::store::{RecordKind, StoreError};

pub use super::versioned::{Abandoned as AbandonedSecret, RecordChanged as SecretChanged};

/// Secrets as versioned records.
pub struct SecretKind;

/// The keeper of secret records.
pub type SecretRecords = VersionedRecords<SecretKind>;

/// The record object's name of secret `name` of `namespace`.
pub fn record_name(namespace: &str, name: &str) -> String {
    super::versioned::record_name::<SecretKind>(namespace, name)
}

impl VersionedKind for SecretKind {
    type Resource = Secret;
    type Meta = SecretRecord;

    const RECORD_KIND: RecordKind = RecordKind::Secret;
    const PREFIX: &'static str = "secret";
    const RECORD_TYPE: &'static str = "coffer.dev/secret";
    const VALUE_TYPE: &'static str = "coffer.dev/secret-value";
    const LABEL: &'static str = "coffer.dev/secret";
    const RECORD_ANNOTATION: &'static str = "coffer.dev/secret-record";
    const VALUES_ANNOTATION: &'static str = "coffer.dev/secret-values";
    const RESOURCE_NAME_ANNOTATION: &'static str = "coffer.dev/secret-resource-name";
    const RESOURCE_UID_ANNOTATION: &'static str = "coffer.dev/secret-resource-uid";
    const RESOURCE_TYPE: &'static str = "secret.coffer.dev";

    fn name(meta: &SecretRecord) -> &str {
        &meta.name
    }

    fn is_deleted(meta: &SecretRecord) -> bool {
        meta.deleted.is_some()
    }

    /// A Secret declares the secret its name (and annotation) stand for.
    fn declared_name(resource: &Secret) -> Option<String> {
        resource.secret_name().ok()
    }

    fn resource_for_record(
        namespace: &str,
        meta: &SecretRecord,
        _values: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Secret, StoreError> {
        let name = resource_name_for(&meta.name);
        let mut resource = Secret::new(&name, secret_mapping::spec_for_record(meta));
        resource.metadata.namespace = Some(namespace.to_owned());
        if name != meta.name {
            resource.metadata.annotations = Some(
                [(SECRET_NAME_ANNOTATION.to_owned(), meta.name.clone())]
                    .into_iter()
                    .collect(),
            );
        }
        Ok(resource)
    }

    fn spec_mirror(
        meta: &SecretRecord,
        _values: &BTreeMap<String, Vec<u8>>,
        resource: &Secret,
    ) -> Result<Option<Value>, StoreError> {
        Ok(secret_mapping::spec_mirror(meta, &resource.spec))
    }
}
