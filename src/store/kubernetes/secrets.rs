//! Secrets Manager secrets in Kubernetes.
//!
//! A secret is:
//! - its **record**, a core Secret `secret-NAMESPACE.HASH` (type `coffer.dev/secret`) in the
//!   **controller's own namespace**, `HASH` a digest of the secret's name. Its annotations hold
//!   the secret's metadata record (names, versions, stages, dates, policy: nothing secret) and
//!   which object holds each version's value. Writes replace it under its resourceVersion, so
//!   two writers never interleave.
//! - one **value object** per version, `secret-NAMESPACE.HASH.DIGEST` (type
//!   `coffer.dev/secret-value`, immutable), holding that version's ciphertext, `DIGEST` a digest
//!   of the ciphertext. Values get objects of their own because a secret keeps up to 100
//!   deprecated versions of up to 64 KiB, beyond what one object may hold. A write creates the
//!   new value objects first and replaces the record second, so a record never names a value
//!   that is not there; values the record no longer names are deleted after it, and those a
//!   crash or a lost race left behind are swept ([`SecretRecords::sweep_orphan_values`]).
//! - its **Secret resource** in the user's namespace, named after the secret
//!   ([`resource_name_for`]). Its spec declares what the user wants; changes made through the
//!   API are written back into the spec ([`super::secret_mapping`]), so there is one source of
//!   truth.
//!
//! As with KMS keys, the record and values live apart from the resource on purpose: deleting
//! the resource (or its namespace) deletes nothing of the secret. The controller notices the
//! resource is gone ([`SecretRecords::abandoned_secrets`]) and schedules the deletion after the
//! recovery window; re-applying the resource within the window restores the secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use kube::api::{DeleteParams, ObjectMeta, Patch, Preconditions};
use kube::runtime::{reflector, watcher};
use kube::{Api, Client, ResourceExt as _};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, broadcast};

use super::cache::{self, ObjectCache, ObjectKey, Observed, ReconcilerFeed};
use super::{FIELD_MANAGER, KindStore, api_error, patch_params, post_params, secret_mapping};
use crate::engine::AccountDirectory;
use crate::engine::account::account_id;
use crate::engine::secrets::SecretRecord;
use crate::resources::secret::{SECRET_NAME_ANNOTATION, Secret, resource_name_for};
use crate::store::{Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};

/// Label of records and value objects: the digest of the secret's name.
pub const SECRET_LABEL: &str = "coffer.dev/secret";
/// Label naming the namespace (the account) a record or value belongs to.
pub const NAMESPACE_LABEL: &str = super::NAMESPACE_LABEL;
/// Annotation of a record holding the secret's metadata record.
pub const RECORD_ANNOTATION: &str = "coffer.dev/secret-record";
/// Annotation of a record naming the value object of each sealed slot.
pub const VALUES_ANNOTATION: &str = "coffer.dev/secret-values";
/// Annotation of a record with the uid of the Secret resource it last belonged to.
pub const RESOURCE_UID_ANNOTATION: &str = "coffer.dev/secret-resource-uid";
/// Type of records.
pub const RECORD_TYPE: &str = "coffer.dev/secret";
/// Type of value objects.
pub const VALUE_TYPE: &str = "coffer.dev/secret-value";
/// The data key of a value object.
const VALUE_KEY: &str = "value";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value objects no record names are deleted once this old: a younger one may belong to a
/// write still in flight.
const ORPHAN_GRACE_SECONDS: i64 = 600;

/// Digest of a secret's name, as it appears in object names and labels.
fn name_digest(name: &str) -> String {
    hex_prefix(&Sha256::digest(name.as_bytes()), 20)
}

fn hex_prefix(bytes: &[u8], chars: usize) -> String {
    bytes
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect::<String>()
        .chars()
        .take(chars)
        .collect()
}

/// The record object's name. Namespaces hold no dot, so no two secrets share one.
pub fn record_name(namespace: &str, name: &str) -> String {
    format!("secret-{namespace}.{}", name_digest(name))
}

/// The name of the object holding one ciphertext of a secret.
fn value_name(namespace: &str, name: &str, blob: &[u8]) -> String {
    format!(
        "{}.{}",
        record_name(namespace, name),
        hex_prefix(&Sha256::digest(blob), 24)
    )
}

/// Records and value objects are filed under the namespace they stand for.
fn object_key(object: &CoreSecret) -> ObjectKey {
    (
        object
            .labels()
            .get(NAMESPACE_LABEL)
            .cloned()
            .unwrap_or_default(),
        object.name_any(),
    )
}

fn is_record(object: &CoreSecret) -> bool {
    object.type_.as_deref() == Some(RECORD_TYPE) && object.labels().contains_key(SECRET_LABEL)
}

/// Only objects of the value type, with the label, are ever deleted as values: never anything
/// else that shares the namespace (the root key, KMS keys).
fn is_value(object: &CoreSecret) -> bool {
    object.type_.as_deref() == Some(VALUE_TYPE) && object.labels().contains_key(SECRET_LABEL)
}

fn is_terminating(resource: &Secret) -> bool {
    resource.metadata.deletion_timestamp.is_some()
}

/// The secret record a record object holds, parsed.
fn stored_meta(object: &CoreSecret) -> Result<SecretRecord, StoreError> {
    let name = object.name_any();
    let text = object
        .annotations()
        .get(RECORD_ANNOTATION)
        .ok_or_else(|| StoreError::Corrupt(format!("secret {name} has no secret record")))?;
    serde_json::from_str(text).map_err(|source| StoreError::Malformed {
        record: name,
        source,
    })
}

/// Which object holds each slot, by a record object.
fn value_names(object: &CoreSecret) -> Result<BTreeMap<String, String>, StoreError> {
    match object.annotations().get(VALUES_ANNOTATION) {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(text).map_err(|source| StoreError::Malformed {
            record: object.name_any(),
            source,
        }),
    }
}

/// What changed, for the reconciler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretChanged {
    pub namespace: String,
    /// The secret's name in the API.
    pub name: String,
}

/// A secret whose resource is gone while the secret is not scheduled for deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbandonedSecret {
    pub namespace: String,
    pub name: String,
    pub resource_name: String,
    pub resource_uid: Option<String>,
}

/// The keeper of secret records.
pub struct SecretRecords {
    client: Client,
    system_namespace: String,
    /// Records and value objects.
    objects: Arc<ObjectCache<CoreSecret>>,
    resources: Arc<ObjectCache<Secret>>,
    feed: Arc<ReconcilerFeed<Secret>>,
    changes: broadcast::Sender<SecretChanged>,
    resources_gone: Arc<Notify>,
}

impl SecretRecords {
    /// The keeper of secrets, their records and values in `system_namespace`.
    pub fn new(client: Client, system_namespace: &str) -> Arc<Self> {
        Arc::new(Self {
            client,
            system_namespace: system_namespace.to_owned(),
            objects: Arc::new(ObjectCache::filed_by(object_key, None)),
            resources: Arc::new(ObjectCache::new(None)),
            feed: Arc::new(ReconcilerFeed::new()),
            changes: broadcast::Sender::new(1024),
            resources_gone: Arc::new(Notify::new()),
        })
    }

    /// What the Secret reconciler runs on, from the keeper's own watch.
    pub fn reconciler_input(
        &self,
    ) -> (
        impl futures::Stream<Item = Result<Secret, watcher::Error>> + Send + 'static + use<>,
        reflector::Store<Secret>,
    ) {
        self.feed.input()
    }

    /// Hears of every change of a record, here or by another replica.
    pub fn changes(&self) -> broadcast::Receiver<SecretChanged> {
        self.changes.subscribe()
    }

    /// Notified whenever a Secret resource may have gone.
    pub fn resources_gone(&self) -> Arc<Notify> {
        Arc::clone(&self.resources_gone)
    }

    fn record_object(&self, namespace: &str, name: &str) -> Option<Arc<CoreSecret>> {
        self.objects.get(namespace, &record_name(namespace, name))
    }

    /// The live resource standing for secret `name`: the resource of its name, when that
    /// resource names this secret.
    pub fn resource_for(&self, namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.resources
            .get(namespace, &resource_name_for(name))
            .filter(|resource| resource.secret_name().as_deref() == Ok(name))
    }

    /// Takes a resource into the cache, as the watch would.
    pub fn remember(&self, resource: Secret) {
        self.resources.put(resource);
    }

    /// Forgets a deleted resource, as the watch would.
    #[cfg(test)]
    pub(crate) fn forget_resource(&self, namespace: &str, name: &str) {
        self.resources.forget(namespace, name);
        self.resources_gone.notify_one();
    }

    /// The newest copy of a resource known here.
    pub fn freshest(&self, resource: &Secret) -> Secret {
        let namespace = resource.namespace().unwrap_or_default();
        match self.resources.get(&namespace, &resource.name_any()) {
            Some(cached)
                if cached.uid() == resource.uid() && cache::newer(cached.as_ref(), resource) =>
            {
                (*cached).clone()
            }
            _ => resource.clone(),
        }
    }

    /// Asks the API server itself whether this very object (same uid) still exists and is not
    /// being deleted.
    pub async fn is_live(&self, resource: &Secret) -> Result<bool, StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        let current = Api::<Secret>::namespaced(self.client.clone(), &namespace)
            .get_opt(&resource.name_any())
            .await
            .map_err(|err| api_error(err, &resource_label(&namespace, &resource.name_any())))?;
        Ok(current
            .is_some_and(|current| current.uid() == resource.uid() && !is_terminating(&current)))
    }

    /// Secrets not scheduled for deletion whose resource, by the caches, is gone or going.
    /// Check each with [`Self::confirm_abandoned`] before acting: the caches may lag behind.
    pub fn abandoned_secrets(&self) -> Vec<AbandonedSecret> {
        self.objects
            .list(None)
            .iter()
            .filter(|object| is_record(object))
            .filter_map(|object| {
                let (namespace, _) = object_key(object);
                let record = stored_meta(object).ok()?;
                if record.deleted.is_some() {
                    return None;
                }
                let resource_name = resource_name_for(&record.name);
                let live = self
                    .resources
                    .get(&namespace, &resource_name)
                    .is_some_and(|resource| !is_terminating(&resource));
                (!live).then(|| AbandonedSecret {
                    namespace,
                    name: record.name,
                    resource_name,
                    resource_uid: object.annotations().get(RESOURCE_UID_ANNOTATION).cloned(),
                })
            })
            .collect()
    }

    /// Asks the API server whether an abandoned secret's resource is really gone (or going).
    pub async fn confirm_abandoned(&self, secret: &AbandonedSecret) -> Result<bool, StoreError> {
        let api = Api::<Secret>::namespaced(self.client.clone(), &secret.namespace);
        match api.get_opt(&secret.resource_name).await {
            Ok(None) => Ok(true),
            Ok(Some(resource)) => {
                let gone = is_terminating(&resource);
                self.resources.put(resource);
                Ok(gone)
            }
            Err(err) => Err(api_error(
                err,
                &resource_label(&secret.namespace, &secret.resource_name),
            )),
        }
    }

    /// Deletes value objects that no record names, older than a write in flight could be.
    /// Returns how many went.
    pub async fn sweep_orphan_values(&self, now: i64) -> Result<usize, StoreError> {
        let objects = self.objects.list(None);
        let mut named = std::collections::HashSet::new();
        for object in objects.iter().filter(|object| is_record(object)) {
            named.extend(value_names(object).unwrap_or_default().into_values());
        }
        let api = Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace);
        let mut swept = 0;
        for object in objects.iter().filter(|object| is_value(object)) {
            let name = object.name_any();
            let created = object
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(now, |time| time.0.as_second());
            if named.contains(&name) || now.saturating_sub(created) < ORPHAN_GRACE_SECONDS {
                continue;
            }
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if status.is_not_found() => {}
                Err(err) => return Err(api_error(err, &name)),
            }
            let (namespace, _) = object_key(object);
            self.objects.forget(&namespace, &name);
            swept += 1;
        }
        Ok(swept)
    }

    /// A record's full value: its metadata and every value it names, from the cache or, for a
    /// value the watch has not brought yet, from the API server.
    async fn assemble(&self, object: &CoreSecret) -> Result<Record, StoreError> {
        let meta = object
            .annotations()
            .get(RECORD_ANNOTATION)
            .ok_or_else(|| StoreError::Corrupt(format!("{} has no record", object.name_any())))?;
        let meta: Value = serde_json::from_str(meta).map_err(|source| StoreError::Malformed {
            record: object.name_any(),
            source,
        })?;
        let (namespace, _) = object_key(object);
        let mut sealed = BTreeMap::new();
        for (slot, value_object) in value_names(object)? {
            let held = match self.objects.get(&namespace, &value_object) {
                Some(held) => held,
                None => Arc::new(self.fetch_value(&value_object).await?),
            };
            let bytes = held
                .data
                .as_ref()
                .and_then(|data| data.get(VALUE_KEY))
                .ok_or_else(|| StoreError::Corrupt(format!("{value_object} holds no value")))?;
            sealed.insert(slot, bytes.0.clone());
        }
        Ok(Record {
            revision: Revision::new(object.resource_version().unwrap_or_default()),
            value: RecordValue { meta, sealed },
        })
    }

    async fn fetch_value(&self, name: &str) -> Result<CoreSecret, StoreError> {
        let fetched = Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace)
            .get_opt(name)
            .await
            .map_err(|err| api_error(err, name))?
            .ok_or_else(|| StoreError::Corrupt(format!("value object {name} is missing")))?;
        self.objects.put(fetched.clone());
        Ok(fetched)
    }

    /// Finds or makes the resource a record belongs to, and brings its spec up to date.
    /// Returns the uid of the resource the secret belongs to now, if any.
    async fn owner_for(
        &self,
        namespace: &str,
        record: &SecretRecord,
        before: Option<&CoreSecret>,
    ) -> Result<Option<String>, StoreError> {
        let was_deleted = before
            .and_then(|object| stored_meta(object).ok())
            .map(|record| record.deleted.is_some());
        let recorded_uid =
            before.and_then(|object| object.annotations().get(RESOURCE_UID_ANNOTATION));
        match self.resource_for(namespace, &record.name) {
            Some(resource) if record.deleted.is_some() => {
                // A deletion through the API deletes the resource too; but a resource applied
                // since (another uid) is new, and will restore the secret instead.
                if was_deleted == Some(false)
                    && !is_terminating(&resource)
                    && recorded_uid.is_some()
                    && recorded_uid.map(String::as_str) == resource.uid().as_deref()
                {
                    self.delete_resource(&resource).await?;
                }
                Ok(None)
            }
            Some(resource) if is_terminating(&resource) => Ok(resource.uid()),
            Some(resource) => {
                if let Some(patch) = secret_mapping::spec_mirror(record, &resource.spec) {
                    let mut patch = patch;
                    if let Some(object) = patch.as_object_mut() {
                        object.insert(
                            "metadata".into(),
                            serde_json::json!({"resourceVersion": resource.resource_version()}),
                        );
                    }
                    self.patch_resource(namespace, &resource.name_any(), &patch)
                        .await?;
                }
                Ok(resource.uid())
            }
            None if record.deleted.is_some() => Ok(None),
            // A new secret (CreateSecret), or one restored through the API: it gets a resource.
            None if was_deleted.is_none_or(|deleted| deleted) => {
                let created = self.create_resource(namespace, record).await?;
                Ok(created.uid())
            }
            // Its resource was deleted a moment ago and the deletion is not scheduled yet:
            // writing now would bring back a resource the user just deleted.
            None => Err(StoreError::Refused(format!(
                "The Secret resource of secret {} was deleted; the secret is about to be scheduled for deletion.",
                record.name
            ))),
        }
    }

    async fn create_resource(
        &self,
        namespace: &str,
        record: &SecretRecord,
    ) -> Result<Arc<Secret>, StoreError> {
        let name = resource_name_for(&record.name);
        let mut resource = Secret::new(&name, secret_mapping::spec_for_record(record));
        resource.metadata.namespace = Some(namespace.to_owned());
        if name != record.name {
            resource.metadata.annotations = Some(BTreeMap::from([(
                SECRET_NAME_ANNOTATION.to_owned(),
                record.name.clone(),
            )]));
        }
        let created = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .create(&post_params(), &resource)
            .await
            .map_err(|err| match api_error(err, &resource_label(namespace, &name)) {
                // A resource of that name that stands for another secret (its annotation says so).
                StoreError::AlreadyExists(_) => StoreError::Refused(format!(
                    "A Secret resource named {name} already exists in this namespace for another secret."
                )),
                other => other,
            })?;
        self.resources.put(created.clone());
        Ok(Arc::new(created))
    }

    async fn delete_resource(&self, resource: &Secret) -> Result<(), StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: resource.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match Api::<Secret>::namespaced(self.client.clone(), &namespace)
            .delete(&resource.name_any(), &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => {
                Ok(())
            }
            Err(err) => Err(api_error(
                err,
                &resource_label(&namespace, &resource.name_any()),
            )),
        }
    }

    async fn patch_resource(
        &self,
        namespace: &str,
        name: &str,
        patch: &Value,
    ) -> Result<Arc<Secret>, StoreError> {
        let patched = Api::<Secret>::namespaced(self.client.clone(), namespace)
            .patch(name, &patch_params(), &Patch::Merge(patch))
            .await
            .map_err(|err| api_error(err, &resource_label(namespace, name)))?;
        self.resources.put(patched.clone());
        Ok(Arc::new(patched))
    }

    /// Creates the value objects `sealed` needs that the previous record did not have; returns
    /// the slot-to-object map of the new record.
    async fn write_values(
        &self,
        key: &RecordKey,
        sealed: &BTreeMap<String, Vec<u8>>,
        previous: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, StoreError> {
        let api = Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace);
        let mut names = BTreeMap::new();
        for (slot, blob) in sealed {
            let name = value_name(&key.namespace, &key.name, blob);
            if previous.get(slot) != Some(&name)
                && self.objects.get(&key.namespace, &name).is_none()
            {
                let object = self.value_object(key, &name, blob);
                match api.create(&post_params(), &object).await {
                    Ok(created) => {
                        self.objects.put(created);
                    }
                    // Named after its content: one already there holds these very bytes.
                    Err(kube::Error::Api(status)) if status.is_already_exists() => {}
                    Err(err) => return Err(api_error(err, &key.to_string())),
                }
            }
            names.insert(slot.clone(), name);
        }
        Ok(names)
    }

    fn value_object(&self, key: &RecordKey, name: &str, blob: &[u8]) -> CoreSecret {
        CoreSecret {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.system_namespace.clone()),
                labels: Some(self.labels(key)),
                ..ObjectMeta::default()
            },
            type_: Some(VALUE_TYPE.to_owned()),
            immutable: Some(true),
            data: Some(BTreeMap::from([(
                VALUE_KEY.to_owned(),
                ByteString(blob.to_vec()),
            )])),
            ..CoreSecret::default()
        }
    }

    fn labels(&self, key: &RecordKey) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
            (SECRET_LABEL.to_owned(), name_digest(&key.name)),
            (NAMESPACE_LABEL.to_owned(), key.namespace.clone()),
        ])
    }

    async fn write(
        &self,
        key: &RecordKey,
        expected: Option<&Revision>,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        let record: SecretRecord =
            serde_json::from_value(value.meta.clone()).map_err(|source| StoreError::Malformed {
                record: key.to_string(),
                source,
            })?;
        if record.name != key.name {
            return Err(StoreError::Corrupt(
                "secret record names another secret".into(),
            ));
        }
        let previous = self.record_object(&key.namespace, &key.name);
        let previous_values = previous
            .as_deref()
            .map(value_names)
            .transpose()?
            .unwrap_or_default();
        let owner_uid = self
            .owner_for(&key.namespace, &record, previous.as_deref())
            .await?
            .or_else(|| {
                previous
                    .as_deref()
                    .and_then(|object| object.annotations().get(RESOURCE_UID_ANNOTATION).cloned())
            });
        let values = self
            .write_values(key, &value.sealed, &previous_values)
            .await?;
        let object = self.record_of(key, &value, &values, owner_uid, expected)?;
        let api = Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace);
        let name = record_name(&key.namespace, &key.name);
        let written = match expected {
            None => api.create(&post_params(), &object).await,
            Some(_) => api.replace(&name, &post_params(), &object).await,
        }
        .map_err(|err| api_error(err, &key.to_string()))?;
        let revision = Revision::new(written.resource_version().unwrap_or_default());
        self.objects.put(written);
        let kept: std::collections::HashSet<&String> = values.values().collect();
        let dropped: Vec<String> = previous_values
            .into_values()
            .filter(|name| !kept.contains(name))
            .collect();
        self.delete_values(&key.namespace, dropped).await;
        let _ = self.changes.send(SecretChanged {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        });
        Ok(revision)
    }

    /// Deletes value objects no record names any more. A failure leaves an orphan for
    /// [`Self::sweep_orphan_values`], not an error: the record is already written.
    async fn delete_values(&self, namespace: &str, names: Vec<String>) {
        let api = Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace);
        for name in names {
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => self.objects.forget(namespace, &name),
                Err(kube::Error::Api(status)) if status.is_not_found() => {
                    self.objects.forget(namespace, &name);
                }
                Err(err) => {
                    tracing::warn!(error = %crate::redact::chain(&err), "could not delete a value no secret names; the sweep will");
                }
            }
        }
    }

    fn record_of(
        &self,
        key: &RecordKey,
        value: &RecordValue,
        values: &BTreeMap<String, String>,
        owner_uid: Option<String>,
        expected: Option<&Revision>,
    ) -> Result<CoreSecret, StoreError> {
        let record =
            serde_json::to_string(&value.meta).map_err(|source| StoreError::Malformed {
                record: key.to_string(),
                source,
            })?;
        let values = serde_json::to_string(values).map_err(|source| StoreError::Malformed {
            record: key.to_string(),
            source,
        })?;
        let mut annotations = BTreeMap::from([
            (RECORD_ANNOTATION.to_owned(), record),
            (VALUES_ANNOTATION.to_owned(), values),
        ]);
        if let Some(uid) = owner_uid {
            annotations.insert(RESOURCE_UID_ANNOTATION.to_owned(), uid);
        }
        Ok(CoreSecret {
            metadata: ObjectMeta {
                name: Some(record_name(&key.namespace, &key.name)),
                namespace: Some(self.system_namespace.clone()),
                labels: Some(self.labels(key)),
                annotations: Some(annotations),
                resource_version: expected.map(|revision| revision.as_str().to_owned()),
                ..ObjectMeta::default()
            },
            type_: Some(RECORD_TYPE.to_owned()),
            ..CoreSecret::default()
        })
    }

    async fn delete_record(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        let Some(previous) = self.record_object(&key.namespace, &key.name) else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        // A forced deletion through the API takes the resource with it.
        if let Some(resource) = self.resource_for(&key.namespace, &key.name) {
            let recorded = previous.annotations().get(RESOURCE_UID_ANNOTATION);
            if recorded.is_some() && recorded.map(String::as_str) == resource.uid().as_deref() {
                self.delete_resource(&resource).await?;
            }
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(expected.as_str().to_owned()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        let name = record_name(&key.namespace, &key.name);
        Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace)
            .delete(&name, &params)
            .await
            .map_err(|err| api_error(err, &key.to_string()))?;
        self.objects.forget(&key.namespace, &name);
        let values = value_names(&previous)?.into_values().collect();
        self.delete_values(&key.namespace, values).await;
        let _ = self.changes.send(SecretChanged {
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        });
        Ok(())
    }

    fn observed_object(&self, observed: Observed<CoreSecret>) {
        let object = match &observed {
            Observed::Changed(object) => object.as_ref(),
            Observed::Deleted(object) => object,
            Observed::Relisted => return,
        };
        if !is_record(object) {
            return;
        }
        if let Ok(record) = stored_meta(object) {
            let (namespace, _) = object_key(object);
            let _ = self.changes.send(SecretChanged {
                namespace,
                name: record.name,
            });
        }
    }
}

impl AccountDirectory for SecretRecords {
    /// The namespaces that hold secrets are the accounts another namespace may name.
    fn namespace_of(&self, account: &str) -> Option<String> {
        let mut namespaces: Vec<String> = self
            .objects
            .list(None)
            .iter()
            .filter(|object| is_record(object))
            .map(|object| object_key(object).0)
            .collect();
        namespaces.dedup();
        namespaces
            .into_iter()
            .find(|namespace| account_id(namespace) == account)
    }
}

/// How errors name a resource.
fn resource_label(namespace: &str, name: &str) -> String {
    format!("secret.coffer.dev {namespace}/{name}")
}

#[async_trait]
impl KindStore for SecretRecords {
    fn kind(&self) -> RecordKind {
        RecordKind::Secret
    }

    async fn watch(self: Arc<Self>) {
        let objects = {
            let keeper = Arc::clone(&self);
            cache::feed(
                Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace),
                watcher::Config::default().labels(&format!("{SECRET_LABEL},{NAMESPACE_LABEL}")),
                Arc::clone(&self.objects),
                None,
                move |observed| keeper.observed_object(observed),
            )
        };
        let resources = cache::feed_resources(
            Api::<Secret>::all(self.client.clone()),
            Arc::clone(&self.resources),
            Arc::clone(&self.feed),
            Arc::clone(&self.resources_gone),
        );
        futures::future::join(objects, resources).await;
    }

    async fn synced(&self) {
        let mut objects = self.objects.synced();
        let mut resources = self.resources.synced();
        let _ = objects.wait_for(|synced| *synced).await;
        let _ = resources.wait_for(|synced| *synced).await;
    }
}

#[async_trait]
impl Store for SecretRecords {
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        match self.record_object(&key.namespace, &key.name) {
            Some(object) => self.assemble(&object).await.map(Some),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        _kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
        let mut records = Vec::new();
        for object in self.objects.list(namespace) {
            if !is_record(&object) {
                continue;
            }
            let (namespace, _) = object_key(&object);
            let name = stored_meta(&object)?.name;
            let record = self.assemble(&object).await?;
            records.push((RecordKey::new(RecordKind::Secret, namespace, name), record));
        }
        records.sort_by(|(a, _), (b, _)| a.cmp(b));
        Ok(records)
    }

    async fn create(&self, key: &RecordKey, value: RecordValue) -> Result<Revision, StoreError> {
        self.write(key, None, value).await
    }

    async fn update(
        &self,
        key: &RecordKey,
        expected: &Revision,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        self.write(key, Some(expected), value).await
    }

    async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        self.delete_record(key, expected).await
    }
}
