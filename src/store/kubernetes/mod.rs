//! The Kubernetes backend: records kept in the API server, so that etcd is the shared database
//! and every replica sees the same keys.
//!
//! A KMS key is two objects:
//! - its **companion Secret** `kmskey-KEY_ID` (type `coffer.dev/kmskey`), whose data holds each
//!   version's material wrapped by the root key (`v1`, `v2`, ...), and whose annotation
//!   `coffer.dev/key-record` holds the key's metadata record (ids, state, dates, policy: nothing
//!   secret). One object, so that a write is atomic and guarded by its resourceVersion: two
//!   replicas never interleave half a rotation.
//! - its **KmsKey resource**, which owns the Secret and carries the label `coffer.dev/key-id`.
//!   Its spec declares what the user wants; changes made through the API are written back into
//!   the spec (see [`mapping`]), so there is one source of truth.
//!
//! A key whose resource was deleted is pending deletion: its Secret loses its owner (so garbage
//! collection leaves it) and keeps the resource's name in `coffer.dev/kmskey-name`, until the
//! window ends or the deletion is cancelled. Cancelling through the API brings the resource back;
//! re-applying the resource adopts the key again.
//!
//! Aliases are the `spec.aliases` of KmsKey resources.
//!
//! Reads come from watch-fed caches ([`cache`]); writes go to the API server with a
//! resourceVersion precondition (or as merge patches of fields only Coffer computes) and enter
//! the cache at once.

pub mod cache;
pub mod mapping;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::watcher;
use kube::{Api, Client, Resource as _, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::{Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};
use crate::engine::kms::model::{AliasRecord, KeyRecord, KeyState};
use crate::resources::kmskey::KmsKey;
use cache::{ObjectCache, Observed};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "coffer";
/// Label naming the key id, on a KmsKey and on its companion Secret.
pub const KEY_ID_LABEL: &str = "coffer.dev/key-id";
/// Annotation of the companion Secret holding the key's metadata record.
pub const RECORD_ANNOTATION: &str = "coffer.dev/key-record";
/// Annotation of the companion Secret naming its KmsKey resource, kept while the key is
/// pending deletion so that the resource can be re-created under its name.
pub const RESOURCE_NAME_ANNOTATION: &str = "coffer.dev/kmskey-name";
/// Annotation of a KmsKey re-created because its key's deletion was cancelled through the API.
pub const RECREATED_ANNOTATION: &str = "coffer.dev/recreated-by";
/// Type of the companion Secrets.
pub const COMPANION_TYPE: &str = "coffer.dev/kmskey";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The companion Secret's name.
pub fn companion_name(key_id: &str) -> String {
    format!("kmskey-{key_id}")
}

/// The key id a KmsKey resource has claimed, if any.
pub fn key_id_of(resource: &KmsKey) -> Option<&str> {
    resource.labels().get(KEY_ID_LABEL).map(String::as_str)
}

/// Whether the store made this resource again after CancelKeyDeletion.
pub fn recreated_by_cancellation(resource: &KmsKey) -> bool {
    resource
        .annotations()
        .get(RECREATED_ANNOTATION)
        .map(String::as_str)
        == Some("CancelKeyDeletion")
}

fn is_terminating(resource: &KmsKey) -> bool {
    resource.metadata.deletion_timestamp.is_some()
}

/// What changed, for caches and Events elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChange {
    /// A key's record was written, here or by another replica.
    KeyChanged { namespace: String, key_id: String },
    /// A key and all its material were destroyed.
    KeyDestroyed {
        namespace: String,
        key_id: String,
        resource_name: Option<String>,
    },
}

/// The Kubernetes store.
pub struct KubernetesStore {
    client: Client,
    secrets: Arc<ObjectCache<Secret>>,
    keys: Arc<ObjectCache<KmsKey>>,
    changes: broadcast::Sender<StoreChange>,
}

impl KubernetesStore {
    pub fn new(client: Client) -> Arc<Self> {
        Arc::new(Self {
            client,
            secrets: Arc::new(ObjectCache::default()),
            keys: Arc::new(ObjectCache::new(Some(|resource: &KmsKey| {
                key_id_of(resource).map(str::to_owned)
            }))),
            changes: broadcast::Sender::new(1024),
        })
    }

    /// Feeds the caches from watches until dropped.
    pub async fn run(self: Arc<Self>) {
        let secrets = {
            let store = Arc::clone(&self);
            cache::feed(
                Api::<Secret>::all(self.client.clone()),
                watcher::Config::default().labels(KEY_ID_LABEL),
                Arc::clone(&self.secrets),
                move |observed| store.observed_secret(observed),
            )
        };
        let keys = cache::feed(
            Api::<KmsKey>::all(self.client.clone()),
            watcher::Config::default(),
            Arc::clone(&self.keys),
            |_| {},
        );
        futures::future::join(secrets, keys).await;
    }

    /// Waits until both caches hold a full list.
    pub async fn synced(&self) {
        let mut secrets = self.secrets.synced();
        let mut keys = self.keys.synced();
        // An error means the store is gone, and then nothing waits on it.
        let _ = secrets.wait_for(|synced| *synced).await;
        let _ = keys.wait_for(|synced| *synced).await;
    }

    /// Hears of every change of a record.
    pub fn changes(&self) -> broadcast::Receiver<StoreChange> {
        self.changes.subscribe()
    }

    fn observed_secret(&self, observed: Observed<Secret>) {
        let secret = match &observed {
            Observed::Changed(secret) => secret.as_ref(),
            Observed::Deleted(secret) => secret,
            Observed::Relisted => return,
        };
        let change = secret
            .labels()
            .get(KEY_ID_LABEL)
            .map(|key_id| StoreChange::KeyChanged {
                namespace: secret.namespace().unwrap_or_default(),
                key_id: key_id.clone(),
            });
        if let Some(change) = change {
            // Nobody listening is fine.
            let _ = self.changes.send(change);
        }
    }

    /// The KmsKey resource that claims `key_id`, terminating or not.
    pub fn resource_for_key(&self, namespace: &str, key_id: &str) -> Option<Arc<KmsKey>> {
        self.keys.find(namespace, key_id)
    }

    /// Takes a resource into the cache, as the watch would.
    #[cfg(test)]
    pub(crate) fn remember(&self, resource: KmsKey) {
        self.keys.put(resource);
    }

    /// Forgets a deleted resource, as the watch would.
    #[cfg(test)]
    pub(crate) fn forget_resource(&self, namespace: &str, name: &str) {
        self.keys.forget(namespace, name);
    }

    /// The KmsKey resource named `name`, from the cache.
    pub fn resource(&self, namespace: &str, name: &str) -> Option<Arc<KmsKey>> {
        self.keys.get(namespace, name)
    }

    /// The name RBAC knows a key by: its resource's name, or its id when it has none.
    pub fn rbac_name(&self, namespace: &str, key_id: &str) -> String {
        self.resource_for_key(namespace, key_id)
            .map(|resource| resource.name_any())
            .unwrap_or_else(|| key_id.to_owned())
    }

    /// The key pending deletion whose resource was named `name`: the one a re-applied resource
    /// of that name takes back.
    pub fn orphan_named(&self, namespace: &str, name: &str) -> Option<String> {
        self.secrets
            .list(Some(namespace))
            .into_iter()
            .filter(|secret| secret.owner_references().is_empty())
            .filter(|secret| {
                secret
                    .annotations()
                    .get(RESOURCE_NAME_ANNOTATION)
                    .map(String::as_str)
                    == Some(name)
            })
            .find_map(|secret| {
                let record = secret_record(&secret).ok()?;
                let key: KeyRecord = serde_json::from_value(record.value.meta).ok()?;
                (key.state == KeyState::PendingDeletion).then_some(key.key_id)
            })
    }

    /// Labels a resource with the key id it stands for, before the key is created, so that a
    /// crash in between leaves a resource that knows its key.
    pub async fn claim(&self, resource: &KmsKey, key_id: &str) -> Result<Arc<KmsKey>, StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        let patch = json!({"metadata": {
            "labels": { KEY_ID_LABEL: key_id },
            "resourceVersion": resource.resource_version(),
        }});
        let patched = Api::<KmsKey>::namespaced(self.client.clone(), &namespace)
            .patch(&resource.name_any(), &patch_params(), &Patch::Merge(&patch))
            .await
            .map_err(|err| api_error(err, &resource_label(resource)))?;
        self.keys.put(patched.clone());
        Ok(Arc::new(patched))
    }

    /// Removes a finalizer from a terminating resource, if it is there.
    pub async fn release(&self, resource: &KmsKey, finalizer: &str) -> Result<(), StoreError> {
        let Some(index) = resource.finalizers().iter().position(|f| f == finalizer) else {
            return Ok(());
        };
        let namespace = resource.namespace().unwrap_or_default();
        let patch = json!([
            {"op": "test", "path": format!("/metadata/finalizers/{index}"), "value": finalizer},
            {"op": "remove", "path": format!("/metadata/finalizers/{index}")},
        ]);
        let patch: json_patch::Patch = serde_json::from_value(patch)
            .map_err(|err| StoreError::Backend(format!("finalizer patch: {err}")))?;
        match Api::<KmsKey>::namespaced(self.client.clone(), &namespace)
            .patch(
                &resource.name_any(),
                &patch_params(),
                &Patch::<()>::Json(patch),
            )
            .await
        {
            Ok(patched) => {
                self.keys.put(patched);
                Ok(())
            }
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(err) => Err(api_error(err, &resource_label(resource))),
        }
    }

    async fn delete_resource(&self, resource: &KmsKey) -> Result<(), StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        match Api::<KmsKey>::namespaced(self.client.clone(), &namespace)
            .delete(&resource.name_any(), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() => Ok(()),
            Err(err) => Err(api_error(err, &resource_label(resource))),
        }
    }

    /// Makes sure a key pending deletion no longer belongs to its resource, so that garbage
    /// collection keeps its Secret once the resource is gone. Returns whether it still belongs
    /// to one (a write was needed but lost a race; try again).
    pub async fn ensure_orphaned(&self, namespace: &str, key_id: &str) -> Result<bool, StoreError> {
        let Some(secret) = self.secrets.get(namespace, &companion_name(key_id)) else {
            return Ok(false);
        };
        if secret.owner_references().is_empty() {
            return Ok(false);
        }
        let record = secret_record(&secret)?;
        let key = RecordKey::new(RecordKind::KmsKey, namespace, key_id);
        match self
            .write_key(&key, Some(&record.revision), record.value)
            .await
        {
            Ok(_) => Ok(self
                .secrets
                .get(namespace, &companion_name(key_id))
                .is_some_and(|secret| !secret.owner_references().is_empty())),
            Err(StoreError::Conflict(_)) => Ok(true),
            Err(other) => Err(other),
        }
    }

    async fn patch_resource(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Arc<KmsKey>, StoreError> {
        let patched = Api::<KmsKey>::namespaced(self.client.clone(), namespace)
            .patch(name, &patch_params(), &Patch::Merge(patch))
            .await
            .map_err(|err| api_error(err, &format!("kmskey {namespace}/{name}")))?;
        self.keys.put(patched.clone());
        Ok(Arc::new(patched))
    }

    /// Makes a KmsKey resource for a key that has none: named as its last resource was when
    /// that name is free, else after the key id.
    async fn create_resource(
        &self,
        namespace: &str,
        record: &KeyRecord,
        preferred_name: Option<&str>,
    ) -> Result<Arc<KmsKey>, StoreError> {
        let api = Api::<KmsKey>::namespaced(self.client.clone(), namespace);
        let mut names = Vec::new();
        if let Some(name) = preferred_name {
            names.push(name.to_owned());
        }
        names.push(record.key_id.clone());
        let mut last_error = None;
        for name in names {
            let mut resource = KmsKey::new(&name, mapping::spec_for_record(namespace, record));
            resource.metadata.namespace = Some(namespace.to_owned());
            resource.metadata.labels = Some(BTreeMap::from([(
                KEY_ID_LABEL.to_owned(),
                record.key_id.clone(),
            )]));
            if preferred_name.is_some() {
                // Only a key that outlived its resource has a name to go back to.
                resource.metadata.annotations = Some(BTreeMap::from([(
                    RECREATED_ANNOTATION.to_owned(),
                    "CancelKeyDeletion".to_owned(),
                )]));
            }
            match api.create(&post_params(), &resource).await {
                Ok(created) => {
                    self.keys.put(created.clone());
                    return Ok(Arc::new(created));
                }
                Err(kube::Error::Api(status)) if status.is_already_exists() => {
                    last_error = Some(StoreError::AlreadyExists(format!(
                        "kmskey {namespace}/{name}"
                    )));
                }
                Err(err) => return Err(api_error(err, &format!("kmskey {namespace}/{name}"))),
            }
        }
        Err(last_error.unwrap_or_else(|| StoreError::Backend("no name for the resource".into())))
    }

    /// Finds or makes the resource a key record belongs to, and brings its spec up to date.
    /// `None` when the key stays without one (pending deletion, its resource gone or going).
    async fn owner_for(
        &self,
        namespace: &str,
        record: &KeyRecord,
        previous_name: Option<&str>,
    ) -> Result<Option<Arc<KmsKey>>, StoreError> {
        match self.resource_for_key(namespace, &record.key_id) {
            Some(resource) if is_terminating(&resource) => {
                // The reconciler is about to schedule the deletion; until then the resource
                // still owns the key.
                Ok((record.state != KeyState::PendingDeletion).then_some(resource))
            }
            Some(resource) if record.state == KeyState::PendingDeletion => {
                // A deletion scheduled through the API deletes the resource too; its finalizer
                // then finds the key pending and lets it go.
                self.delete_resource(&resource).await?;
                Ok(None)
            }
            Some(resource) => match mapping::spec_mirror(namespace, record, &resource.spec) {
                Some(patch) => Ok(Some(
                    self.patch_resource(namespace, &resource.name_any(), &patch)
                        .await?,
                )),
                None => Ok(Some(resource)),
            },
            None if record.state == KeyState::PendingDeletion => Ok(None),
            None => Ok(Some(
                self.create_resource(namespace, record, previous_name)
                    .await?,
            )),
        }
    }

    async fn write_key(
        &self,
        key: &RecordKey,
        expected: Option<&Revision>,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        let record: KeyRecord = serde_json::from_value(value.meta.clone())
            .map_err(|err| StoreError::Corrupt(format!("key record: {err}")))?;
        if record.key_id != key.name {
            return Err(StoreError::Corrupt("key record names another key".into()));
        }
        let name = companion_name(&key.name);
        let previous = self.secrets.get(&key.namespace, &name);
        let previous_name = previous
            .as_ref()
            .and_then(|secret| secret.annotations().get(RESOURCE_NAME_ANNOTATION).cloned());
        let owner = self
            .owner_for(&key.namespace, &record, previous_name.as_deref())
            .await?;
        let resource_name = owner
            .as_ref()
            .map(|owner| owner.name_any())
            .or(previous_name);
        let secret = companion_secret(
            key,
            &value,
            owner.as_deref(),
            resource_name.as_deref(),
            expected,
        )?;
        let api = Api::<Secret>::namespaced(self.client.clone(), &key.namespace);
        let written = match expected {
            None => api.create(&post_params(), &secret).await,
            Some(_) => api.replace(&name, &post_params(), &secret).await,
        }
        .map_err(|err| api_error(err, &key.to_string()))?;
        let revision = Revision::new(written.resource_version().unwrap_or_default());
        self.secrets.put(written);
        let _ = self.changes.send(StoreChange::KeyChanged {
            namespace: key.namespace.clone(),
            key_id: key.name.clone(),
        });
        Ok(revision)
    }

    async fn delete_key(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        let name = companion_name(&key.name);
        let resource_name = self
            .secrets
            .get(&key.namespace, &name)
            .and_then(|secret| secret.annotations().get(RESOURCE_NAME_ANNOTATION).cloned());
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(expected.as_str().to_owned()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(err) = Api::<Secret>::namespaced(self.client.clone(), &key.namespace)
            .delete(&name, &params)
            .await
        {
            return Err(api_error(err, &key.to_string()));
        }
        self.secrets.forget(&key.namespace, &name);
        let _ = self.changes.send(StoreChange::KeyDestroyed {
            namespace: key.namespace.clone(),
            key_id: key.name.clone(),
            resource_name,
        });
        Ok(())
    }

    /// Aliases of a namespace with the resource holding each; the oldest resource wins a name
    /// two of them declare.
    fn aliases(&self, namespace: &str) -> BTreeMap<String, Arc<KmsKey>> {
        let mut resources = self.alias_holders(namespace).collect::<Vec<_>>();
        resources.sort_by_key(|resource| claim_order(resource));
        let mut aliases = BTreeMap::new();
        for resource in resources {
            for alias in &resource.spec.aliases {
                aliases
                    .entry(format!("alias/{alias}"))
                    .or_insert_with(|| Arc::clone(&resource));
            }
        }
        aliases
    }

    /// The resource that holds alias `name` (written without `alias/`), when one does.
    pub fn alias_holder(&self, namespace: &str, name: &str) -> Option<Arc<KmsKey>> {
        self.alias_holder_of(namespace, &format!("alias/{name}"))
    }

    /// The resource that holds one alias (`alias/NAME`): one pass over the namespace, as the
    /// API resolves aliases on its hot path.
    fn alias_holder_of(&self, namespace: &str, alias: &str) -> Option<Arc<KmsKey>> {
        let name = alias.strip_prefix("alias/")?;
        self.alias_holders(namespace)
            .filter(|resource| resource.spec.aliases.iter().any(|held| held == name))
            .min_by_key(|resource| claim_order(resource))
    }

    /// Resources whose aliases count: live, with a key.
    fn alias_holders(&self, namespace: &str) -> impl Iterator<Item = Arc<KmsKey>> {
        self.keys
            .list(Some(namespace))
            .into_iter()
            .filter(|resource| !is_terminating(resource) && key_id_of(resource).is_some())
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
        self.resource_for_key(&key.namespace, &alias.target_key_id)
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
            .alias_holder_of(&key.namespace, &key.name)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if holder.resource_version().as_deref() != Some(expected.as_str()) {
            return Err(StoreError::Conflict(key.to_string()));
        }
        Ok(holder)
    }
}

/// Which of two resources declaring one alias holds it: the older, then the first by name.
fn claim_order(resource: &KmsKey) -> (Option<k8s_openapi::jiff::Timestamp>, String) {
    (
        resource
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|time| time.0),
        resource.name_any(),
    )
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

/// How errors name a resource.
fn resource_label(resource: &KmsKey) -> String {
    format!(
        "kmskey {}/{}",
        resource.namespace().unwrap_or_default(),
        resource.name_any()
    )
}

fn alias_name(key: &RecordKey) -> Result<&str, StoreError> {
    key.name
        .strip_prefix("alias/")
        .ok_or(StoreError::InvalidKey)
}

fn unsupported(kind: RecordKind) -> StoreError {
    StoreError::Backend(format!("{kind} records are not kept in Kubernetes mode"))
}

#[async_trait]
impl Store for KubernetesStore {
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        key.validate()?;
        match key.kind {
            RecordKind::KmsKey => self
                .secrets
                .get(&key.namespace, &companion_name(&key.name))
                .map(|secret| secret_record(&secret))
                .transpose(),
            RecordKind::Alias => self
                .alias_holder_of(&key.namespace, &key.name)
                .map(|resource| Self::alias_record(&resource))
                .transpose(),
            other => Err(unsupported(other)),
        }
    }

    async fn list(
        &self,
        kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
        match kind {
            RecordKind::KmsKey => self
                .secrets
                .list(namespace)
                .iter()
                .filter_map(|secret| {
                    let key_id = secret.labels().get(KEY_ID_LABEL)?;
                    (secret.name_any() == companion_name(key_id)).then(|| {
                        secret_record(secret).map(|record| {
                            let key = RecordKey::new(
                                RecordKind::KmsKey,
                                secret.namespace().unwrap_or_default(),
                                key_id.clone(),
                            );
                            (key, record)
                        })
                    })
                })
                .collect(),
            RecordKind::Alias => {
                let namespaces: Vec<String> = match namespace {
                    Some(namespace) => vec![namespace.to_owned()],
                    None => {
                        let mut all: Vec<String> = self
                            .keys
                            .list(None)
                            .iter()
                            .filter_map(|resource| resource.namespace())
                            .collect();
                        all.dedup();
                        all
                    }
                };
                let mut records = Vec::new();
                for namespace in namespaces {
                    for (alias, resource) in self.aliases(&namespace) {
                        records.push((
                            RecordKey::new(RecordKind::Alias, namespace.clone(), alias),
                            Self::alias_record(&resource)?,
                        ));
                    }
                }
                Ok(records)
            }
            other => Err(unsupported(other)),
        }
    }

    async fn create(&self, key: &RecordKey, value: RecordValue) -> Result<Revision, StoreError> {
        key.validate()?;
        match key.kind {
            RecordKind::KmsKey => self.write_key(key, None, value).await,
            RecordKind::Alias => {
                let alias = alias_name(key)?;
                if self.alias_holder_of(&key.namespace, &key.name).is_some() {
                    return Err(StoreError::AlreadyExists(key.to_string()));
                }
                let target = self.alias_target(key, &value)?;
                let mut aliases = target.spec.aliases.clone();
                aliases.push(alias.to_owned());
                self.set_aliases(&target, aliases, key).await
            }
            other => Err(unsupported(other)),
        }
    }

    async fn update(
        &self,
        key: &RecordKey,
        expected: &Revision,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        key.validate()?;
        match key.kind {
            RecordKind::KmsKey => self.write_key(key, Some(expected), value).await,
            RecordKind::Alias => {
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
            other => Err(unsupported(other)),
        }
    }

    async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        key.validate()?;
        match key.kind {
            RecordKind::KmsKey => self.delete_key(key, expected).await,
            RecordKind::Alias => {
                let alias = alias_name(key)?;
                let holder = self.alias_holder_at(key, expected)?;
                let kept = aliases_without(&holder, alias);
                self.set_aliases(&holder, kept, key).await.map(|_| ())
            }
            other => Err(unsupported(other)),
        }
    }
}

fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// An API failure as a store error about `object`: status code and reason only, since a
/// message may quote what was sent (except for validation failures, whose messages name fields).
fn api_error(err: kube::Error, object: &str) -> StoreError {
    match err {
        kube::Error::Api(status) if status.is_already_exists() => {
            StoreError::AlreadyExists(object.to_owned())
        }
        kube::Error::Api(status) if status.is_conflict() => StoreError::Conflict(object.to_owned()),
        kube::Error::Api(status) if status.is_not_found() => {
            StoreError::NotFound(object.to_owned())
        }
        kube::Error::Api(status) if status.is_invalid() => StoreError::Refused(format!(
            "The change to {object} was refused: {}",
            status.message
        )),
        kube::Error::Api(status) => StoreError::Backend(format!(
            "{object}: API server answered {} {}",
            status.code, status.reason
        )),
        other => StoreError::Backend(format!("{object}: {}", other_kind(&other))),
    }
}

fn other_kind(err: &kube::Error) -> &'static str {
    match err {
        kube::Error::HyperError(_) | kube::Error::Service(_) => "API server unreachable",
        kube::Error::SerdeError(_) => "unreadable answer",
        _ => "request failed",
    }
}

/// The record a companion Secret holds.
fn secret_record(secret: &Secret) -> Result<Record, StoreError> {
    let name = secret.name_any();
    let meta = secret
        .annotations()
        .get(RECORD_ANNOTATION)
        .ok_or_else(|| StoreError::Corrupt(format!("secret {name} has no key record")))?;
    let meta: Value = serde_json::from_str(meta)
        .map_err(|err| StoreError::Corrupt(format!("secret {name}: key record: {err}")))?;
    let sealed = secret
        .data
        .iter()
        .flatten()
        .map(|(slot, bytes)| (slot.clone(), bytes.0.clone()))
        .collect();
    Ok(Record {
        revision: Revision::new(secret.resource_version().unwrap_or_default()),
        value: RecordValue { meta, sealed },
    })
}

fn companion_secret(
    key: &RecordKey,
    value: &RecordValue,
    owner: Option<&KmsKey>,
    resource_name: Option<&str>,
    expected: Option<&Revision>,
) -> Result<Secret, StoreError> {
    let record = serde_json::to_string(&value.meta)
        .map_err(|err| StoreError::Corrupt(format!("key record: {err}")))?;
    let mut annotations = BTreeMap::from([(RECORD_ANNOTATION.to_owned(), record)]);
    if let Some(name) = resource_name {
        annotations.insert(RESOURCE_NAME_ANNOTATION.to_owned(), name.to_owned());
    }
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(companion_name(&key.name)),
            namespace: Some(key.namespace.clone()),
            labels: Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
                (KEY_ID_LABEL.to_owned(), key.name.clone()),
            ])),
            annotations: Some(annotations),
            owner_references: owner
                .and_then(|owner| owner.controller_owner_ref(&()))
                .map(|reference| vec![reference]),
            resource_version: expected.map(|revision| revision.as_str().to_owned()),
            ..ObjectMeta::default()
        },
        type_: Some(COMPANION_TYPE.to_owned()),
        data: Some(
            value
                .sealed
                .iter()
                .map(|(slot, bytes)| (slot.clone(), ByteString(bytes.clone())))
                .collect(),
        ),
        ..Secret::default()
    })
}

#[cfg(test)]
mod tests;
