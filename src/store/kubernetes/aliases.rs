//! KMS aliases in Kubernetes: the `spec.aliases` of KmsKey resources, read from the KMS keys'
//! keeper's caches. An alias record's revision is the resourceVersion of the resource holding it.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kube::ResourceExt as _;
use serde_json::json;

use super::KindStore;
use super::kmskeys::{KmsKeys, is_terminating, key_id_of};
use crate::engine::kms::model::AliasRecord;
use crate::resources::kmskey::KmsKey;
use crate::store::{Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};

/// The keeper of KMS alias records.
pub struct Aliases {
    keys: Arc<KmsKeys>,
}

impl Aliases {
    pub fn new(keys: Arc<KmsKeys>) -> Self {
        Self { keys }
    }

    fn alias_record(resource: &KmsKey) -> Result<Record, StoreError> {
        let created = resource
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or(0, |time| time.0.as_second());
        let alias = AliasRecord {
            target_key_id: key_id_of(resource).unwrap_or_default().to_owned(),
            created,
            updated: created,
        };
        Ok(Record {
            revision: Revision::new(resource.resource_version().unwrap_or_default()),
            value: RecordValue {
                meta: serde_json::to_value(alias)
                    .map_err(|err| StoreError::Corrupt(format!("alias: {err}")))?,
                sealed: BTreeMap::new(),
            },
        })
    }

    /// Writes a resource's alias list, guarded by the revision it was read at.
    async fn set_aliases(
        &self,
        resource: &KmsKey,
        aliases: Vec<String>,
        key: &RecordKey,
    ) -> Result<Revision, StoreError> {
        let patch = json!({
            "metadata": {"resourceVersion": resource.resource_version()},
            "spec": {"aliases": aliases},
        });
        let namespace = resource.namespace().unwrap_or_default();
        match self
            .keys
            .patch_resource(&namespace, &resource.name_any(), &patch)
            .await
        {
            Ok(patched) => Ok(Revision::new(
                patched.resource_version().unwrap_or_default(),
            )),
            // The precondition names the alias's revision: a conflict is the alias's.
            Err(StoreError::Conflict(_)) => Err(StoreError::Conflict(key.to_string())),
            Err(other) => Err(other),
        }
    }

    fn alias_target(
        &self,
        key: &RecordKey,
        value: &RecordValue,
    ) -> Result<Arc<KmsKey>, StoreError> {
        let alias: AliasRecord = serde_json::from_value(value.meta.clone())
            .map_err(|err| StoreError::Corrupt(format!("alias: {err}")))?;
        self.keys.resource_for_key(&key.namespace, &alias.target_key_id)
            .filter(|resource| !is_terminating(resource))
            .ok_or_else(|| {
                StoreError::Refused(format!(
                    "Key {} has no KmsKey resource (it is pending deletion); an alias cannot point at it.",
                    alias.target_key_id
                ))
            })
    }

    fn alias_holder_at(
        &self,
        key: &RecordKey,
        expected: &Revision,
    ) -> Result<Arc<KmsKey>, StoreError> {
        let holder = self
            .keys
            .alias_holder_of(&key.namespace, &key.name)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if holder.resource_version().as_deref() != Some(expected.as_str()) {
            return Err(StoreError::Conflict(key.to_string()));
        }
        Ok(holder)
    }
}

#[async_trait]
impl KindStore for Aliases {
    fn kind(&self) -> RecordKind {
        RecordKind::Alias
    }

    async fn watch(self: Arc<Self>) {
        // The KMS keys' keeper watches the resources.
        futures::future::pending::<()>().await;
    }

    async fn synced(&self) {
        self.keys.synced().await;
    }
}

#[async_trait]
impl Store for Aliases {
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.keys
            .alias_holder_of(&key.namespace, &key.name)
            .map(|resource| Self::alias_record(&resource))
            .transpose()
    }

    async fn list(
        &self,
        _kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
        let namespaces: Vec<String> = match namespace {
            Some(namespace) => vec![namespace.to_owned()],
            None => self.keys.namespaces(),
        };
        let mut records = Vec::new();
        for namespace in namespaces {
            for (alias, resource) in self.keys.aliases(&namespace) {
                records.push((
                    RecordKey::new(RecordKind::Alias, namespace.clone(), alias),
                    Self::alias_record(&resource)?,
                ));
            }
        }
        Ok(records)
    }

    async fn create(&self, key: &RecordKey, value: RecordValue) -> Result<Revision, StoreError> {
        let alias = alias_name(key)?;
        if self
            .keys
            .alias_holder_of(&key.namespace, &key.name)
            .is_some()
        {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let target = self.alias_target(key, &value)?;
        let mut aliases = target.spec.aliases.clone();
        aliases.push(alias.to_owned());
        self.set_aliases(&target, aliases, key).await
    }

    async fn update(
        &self,
        key: &RecordKey,
        expected: &Revision,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        let alias = alias_name(key)?;
        let holder = self.alias_holder_at(key, expected)?;
        let target = self.alias_target(key, &value)?;
        if target.uid() == holder.uid() {
            return Ok(expected.clone());
        }
        let kept = aliases_without(&holder, alias);
        self.set_aliases(&holder, kept, key).await?;
        let mut aliases = target.spec.aliases.clone();
        aliases.push(alias.to_owned());
        self.set_aliases(&target, aliases, key).await
    }

    async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        let alias = alias_name(key)?;
        let holder = self.alias_holder_at(key, expected)?;
        let kept = aliases_without(&holder, alias);
        self.set_aliases(&holder, kept, key).await.map(|_| ())
    }
}

/// A resource's aliases without `alias`.
fn aliases_without(resource: &KmsKey, alias: &str) -> Vec<String> {
    resource
        .spec
        .aliases
        .iter()
        .filter(|name| *name != alias)
        .cloned()
        .collect()
}

fn alias_name(key: &RecordKey) -> Result<&str, StoreError> {
    key.name
        .strip_prefix("alias/")
        .ok_or(StoreError::InvalidKey)
}
