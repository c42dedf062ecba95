//! KMS keys in Kubernetes.
//!
//! A KMS key is two objects:
//! - its **companion Secret** `kmskey-NAMESPACE.KEY_ID` (type `coffer.dev/kmskey`) in the
//!   **controller's own namespace**, whose data holds each version's material wrapped by the root
//!   key (`v1`, `v2`, ...), and whose annotation `coffer.dev/key-record` holds the key's metadata
//!   record (ids, state, dates, policy: nothing secret). One object, so that a write is atomic
//!   and guarded by its resourceVersion: two replicas never interleave half a rotation. Labels
//!   name the key id and the namespace (the account) the key belongs to; annotations name the
//!   KmsKey resource it belongs to, by name and uid.
//! - its **KmsKey resource** in the user's namespace, with the label `coffer.dev/key-id`. Its
//!   spec declares what the user wants; changes made through the API are written back into the
//!   spec (see [`super::mapping`]), so there is one source of truth.
//!
//! The material lives apart from the resource on purpose: deleting the resource, its namespace
//! or an owner of it deletes nothing of the key. No owner reference and no finalizer tie them.
//! The controller notices a resource is gone ([`KmsKeys::abandoned_keys`]) and starts the key's
//! deletion window; the material goes only when the window has passed. Re-applying a resource of
//! the same name in the same namespace within the window takes the key back, even after the
//! namespace itself was deleted and made again; so does CancelKeyDeletion
//! (docs/key-material.md).
//!
//! A key belongs to the resource its record names: a `coffer.dev/key-id` label copied onto
//! another resource claims nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ObjectMeta, Patch, Preconditions};
use kube::runtime::{reflector, watcher};
use kube::{Api, Client, ResourceExt as _};
use serde_json::{Value, json};
use tokio::sync::{Notify, broadcast};

use super::cache::{self, ObjectCache, ObjectKey, Observed, ReconcilerFeed};
use super::{FIELD_MANAGER, KindStore, api_error, mapping, patch_params, post_params, writeback};
use crate::engine::kms::model::{KeyRecord, KeyState};
use crate::resources::kmskey::KmsKey;
use crate::store::{Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};

/// Label naming the key id, on a KmsKey and on its companion Secret.
pub const KEY_ID_LABEL: &str = "coffer.dev/key-id";
/// Label of a companion Secret naming the namespace (the account) its key belongs to.
pub const NAMESPACE_LABEL: &str = "coffer.dev/namespace";
/// Annotation of the companion Secret holding the key's metadata record.
pub const RECORD_ANNOTATION: &str = "coffer.dev/key-record";
/// Annotation of the companion Secret naming the KmsKey resource the key belongs to; kept after
/// the resource is deleted, so that a resource of that name can take the key back.
pub const RESOURCE_NAME_ANNOTATION: &str = "coffer.dev/kmskey-name";
/// Annotation of the companion Secret with that resource's uid: a resource of the same name
/// with another uid is a new one.
pub const RESOURCE_UID_ANNOTATION: &str = "coffer.dev/kmskey-uid";
/// Annotation of a KmsKey re-created because its key's deletion was cancelled through the API.
pub const RECREATED_ANNOTATION: &str = "coffer.dev/recreated-by";
/// Type of the companion Secrets.
pub const COMPANION_TYPE: &str = "coffer.dev/kmskey";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// The companion Secret's name. Namespaces cannot hold a dot, so no two keys share one.
pub fn companion_name(namespace: &str, key_id: &str) -> String {
    format!("kmskey-{namespace}.{key_id}")
}

/// The key id a KmsKey resource has claimed, if any: a lowercase hyphenated UUID, since the
/// label can be set by anyone who can write the resource and it becomes part of an object name.
pub fn key_id_of(resource: &KmsKey) -> Option<&str> {
    resource
        .labels()
        .get(KEY_ID_LABEL)
        .map(String::as_str)
        .filter(|key_id| is_key_id(key_id))
}

/// Whether `text` is a key id as Coffer makes them.
pub fn is_key_id(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|id| id.hyphenated().to_string() == text)
}

/// Whether the store made this resource again after CancelKeyDeletion.
pub fn recreated_by_cancellation(resource: &KmsKey) -> bool {
    resource
        .annotations()
        .get(RECREATED_ANNOTATION)
        .map(String::as_str)
        == Some("CancelKeyDeletion")
}

pub(super) fn is_terminating(resource: &KmsKey) -> bool {
    resource.metadata.deletion_timestamp.is_some()
}

/// Companion Secrets are filed under the namespace they stand for, not the one they are in.
fn companion_key(secret: &Secret) -> ObjectKey {
    (
        secret
            .labels()
            .get(NAMESPACE_LABEL)
            .cloned()
            .unwrap_or_default(),
        secret.name_any(),
    )
}

/// The resource a companion Secret records as its key's owner, by name.
fn recorded_resource_name(secret: &Secret) -> Option<String> {
    secret.annotations().get(RESOURCE_NAME_ANNOTATION).cloned()
}

/// The uid of that resource, when recorded.
fn recorded_uid(secret: &Secret) -> Option<&str> {
    secret
        .annotations()
        .get(RESOURCE_UID_ANNOTATION)
        .map(String::as_str)
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

/// A key whose KmsKey resource is gone while the key is not pending deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AbandonedKey {
    pub namespace: String,
    pub key_id: String,
    pub resource_name: String,
    pub resource_uid: Option<String>,
}

/// Why a resource cannot have the key its label names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedElsewhere {
    /// The KmsKey the key belongs to.
    pub owner: String,
}

/// The keeper of KMS key records.
pub struct KmsKeys {
    client: Client,
    /// The controller's namespace, where companion Secrets live.
    system_namespace: String,
    secrets: Arc<ObjectCache<Secret>>,
    keys: Arc<ObjectCache<KmsKey>>,
    changes: broadcast::Sender<StoreChange>,
    resources_gone: Arc<Notify>,
    /// The reconciler's copy of the KmsKey resources, fed by the same watch as `keys`.
    feed: Arc<ReconcilerFeed<KmsKey>>,
}

impl KmsKeys {
    /// The keeper of KMS keys, their material in `system_namespace`, the controller's own.
    pub fn new(client: Client, system_namespace: &str) -> Arc<Self> {
        Arc::new(Self {
            client,
            system_namespace: system_namespace.to_owned(),
            feed: Arc::new(ReconcilerFeed::new()),
            secrets: Arc::new(ObjectCache::filed_by(
                companion_key,
                Some(|secret: &Secret| recorded_resource_name(secret)),
            )),
            keys: Arc::new(ObjectCache::new(Some(|resource: &KmsKey| {
                key_id_of(resource).map(str::to_owned)
            }))),
            changes: broadcast::Sender::new(1024),
            resources_gone: Arc::new(Notify::new()),
        })
    }

    /// The namespace holding the companion Secrets.
    pub fn system_namespace(&self) -> &str {
        &self.system_namespace
    }

    /// What the KmsKey reconciler runs on, from the keeper's own watch ([`ReconcilerFeed`]).
    pub fn reconciler_input(
        &self,
    ) -> (
        impl futures::Stream<Item = Result<KmsKey, watcher::Error>> + Send + 'static + use<>,
        reflector::Store<KmsKey>,
    ) {
        self.feed.input()
    }

    /// Hears of every change of a record.
    pub fn changes(&self) -> broadcast::Receiver<StoreChange> {
        self.changes.subscribe()
    }

    /// Notified whenever a KmsKey may have gone: time to look for [`Self::abandoned_keys`].
    pub fn resources_gone(&self) -> Arc<Notify> {
        Arc::clone(&self.resources_gone)
    }

    fn observed_secret(&self, observed: Observed<Secret>) {
        let secret = match &observed {
            Observed::Changed(secret) => secret.as_ref(),
            Observed::Deleted(secret) => secret,
            Observed::Relisted => return,
        };
        let (namespace, _) = companion_key(secret);
        if let Some(key_id) = secret.labels().get(KEY_ID_LABEL) {
            // Nobody listening is fine.
            let _ = self.changes.send(StoreChange::KeyChanged {
                namespace,
                key_id: key_id.clone(),
            });
        }
    }

    /// The companion Secret of a key, from the cache.
    pub(super) fn companion(&self, namespace: &str, key_id: &str) -> Option<Arc<Secret>> {
        self.secrets
            .get(namespace, &companion_name(namespace, key_id))
    }

    /// The name of the resource a key's record says it belongs to.
    pub fn recorded_resource(&self, namespace: &str, key_id: &str) -> Option<String> {
        self.companion(namespace, key_id)
            .and_then(|secret| recorded_resource_name(&secret))
    }

    /// The live resource a key belongs to. With a record, only the resource it names (a label
    /// copied elsewhere claims nothing); before the record exists, the resource whose label
    /// claimed the id.
    pub fn resource_for_key(&self, namespace: &str, key_id: &str) -> Option<Arc<KmsKey>> {
        match self.companion(namespace, key_id) {
            Some(secret) => {
                let name = recorded_resource_name(&secret)?;
                let resource = self.keys.get(namespace, &name)?;
                let claims = match key_id_of(&resource) {
                    Some(claimed) => claimed == key_id,
                    // Not claimed yet: the recorded resource itself, or a new one of its name
                    // that has yet to take the key back.
                    None => recorded_uid(&secret)
                        .is_none_or(|uid| resource.uid().as_deref() == Some(uid)),
                };
                claims.then_some(resource)
            }
            None => self.keys.find(namespace, key_id),
        }
    }

    /// Takes a resource into the cache, as the watch would: a write's answer, so that the next
    /// read sees it before its echo arrives.
    pub fn remember(&self, resource: KmsKey) {
        self.keys.put(resource);
    }

    /// The newest copy of a resource known here: the one handed in, or the cache's when it is
    /// the same object at a later version (the cache takes this replica's writes at once).
    pub fn freshest(&self, resource: &KmsKey) -> KmsKey {
        let namespace = resource.namespace().unwrap_or_default();
        match self.keys.get(&namespace, &resource.name_any()) {
            Some(cached)
                if cached.uid() == resource.uid() && cache::newer(cached.as_ref(), resource) =>
            {
                (*cached).clone()
            }
            _ => resource.clone(),
        }
    }

    /// Forgets a deleted resource, as the watch would.
    #[cfg(test)]
    pub(crate) fn forget_resource(&self, namespace: &str, name: &str) {
        self.keys.forget(namespace, name);
        self.resources_gone.notify_one();
    }

    /// The namespaces that have KmsKey resources.
    pub(super) fn namespaces(&self) -> Vec<String> {
        let mut namespaces: Vec<String> = self
            .keys
            .list(None)
            .iter()
            .filter_map(|resource| resource.namespace())
            .collect();
        namespaces.dedup();
        namespaces
    }

    /// The KmsKey resource named `name`, from the cache.
    pub fn resource(&self, namespace: &str, name: &str) -> Option<Arc<KmsKey>> {
        self.keys.get(namespace, name)
    }

    /// The name RBAC knows a key by: the resource its record names, or its id when it has none.
    pub fn rbac_name(&self, namespace: &str, key_id: &str) -> String {
        self.recorded_resource(namespace, key_id)
            .unwrap_or_else(|| key_id.to_owned())
    }

    /// The key a resource stands for, as far as the records know: the one whose record names
    /// it, whether it is its own or one that a deleted resource of the same name left (names
    /// are unique in a namespace, so a record naming it with another uid names a resource that
    /// is gone). `None` before its key has a record.
    pub fn key_of_resource(&self, resource: &KmsKey) -> Option<String> {
        let namespace = resource.namespace()?;
        let secret = self.secrets.find(&namespace, &resource.name_any())?;
        secret.labels().get(KEY_ID_LABEL).cloned()
    }

    /// Whether a resource's claim on `key_id` stands: `Err` when the key's record names another
    /// resource.
    pub fn check_claim(&self, resource: &KmsKey, key_id: &str) -> Result<(), ClaimedElsewhere> {
        let namespace = resource.namespace().unwrap_or_default();
        match self.recorded_resource(&namespace, key_id) {
            Some(owner) if owner != resource.name_any() => Err(ClaimedElsewhere { owner }),
            _ => Ok(()),
        }
    }

    /// Keys that are not pending deletion but whose resource, by the caches, is gone or going
    /// (or was replaced by a resource of the same name that claims another key). Check each with
    /// [`Self::confirm_abandoned`] before acting: the caches may lag behind.
    pub fn abandoned_keys(&self) -> Vec<AbandonedKey> {
        self.secrets
            .list(None)
            .iter()
            .filter_map(|secret| {
                let (namespace, _) = companion_key(secret);
                let key_id = secret.labels().get(KEY_ID_LABEL)?.clone();
                let resource_name = recorded_resource_name(secret)?;
                if was_pending_deletion(secret) {
                    return None;
                }
                let resource = self.keys.get(&namespace, &resource_name);
                if resource.is_some_and(|resource| still_owns(&resource, &key_id)) {
                    return None;
                }
                Some(AbandonedKey {
                    namespace,
                    key_id,
                    resource_name,
                    resource_uid: recorded_uid(secret).map(str::to_owned),
                })
            })
            .collect()
    }

    /// Asks the API server itself whether this very object (same uid) still exists and is not
    /// being deleted.
    pub async fn is_live(&self, resource: &KmsKey) -> Result<bool, StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        let current = Api::<KmsKey>::namespaced(self.client.clone(), &namespace)
            .get_opt(&resource.name_any())
            .await
            .map_err(|err| api_error(err, &resource_label(resource)))?;
        Ok(current
            .is_some_and(|current| current.uid() == resource.uid() && !is_terminating(&current)))
    }

    /// Asks the API server itself whether an abandoned key's resource is really gone.
    pub async fn confirm_abandoned(&self, key: &AbandonedKey) -> Result<bool, StoreError> {
        let api = Api::<KmsKey>::namespaced(self.client.clone(), &key.namespace);
        match api.get_opt(&key.resource_name).await {
            Ok(None) => Ok(true),
            Ok(Some(resource)) => {
                let owns = still_owns(&resource, &key.key_id);
                self.keys.put(resource);
                Ok(!owns)
            }
            Err(err) => Err(api_error(
                err,
                &format!("kmskey {}/{}", key.namespace, key.resource_name),
            )),
        }
    }

    /// Labels a resource with the key id it stands for, before the key is created, so that a
    /// crash in between leaves a resource that knows its key.
    pub async fn claim(&self, resource: &KmsKey, key_id: &str) -> Result<Arc<KmsKey>, StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        let patch = json!({"metadata": {
            "labels": { KEY_ID_LABEL: key_id },
            "resourceVersion": resource.resource_version(),
        }});
        self.patch_resource(&namespace, &resource.name_any(), &patch)
            .await
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

    pub(super) async fn patch_resource(
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
            } else {
                // Its record is written just after: the reconciler waits for it.
                resource.metadata.annotations = Some(BTreeMap::from([(
                    super::versioned::MADE_FOR_RECORD_ANNOTATION.to_owned(),
                    "true".to_owned(),
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
        Err(last_error.unwrap_or_else(|| {
            StoreError::Backend(crate::fault::Fault::new("no name for the resource"))
        }))
    }

    /// Finds or makes the resource a key record belongs to, and brings its spec up to date.
    /// `None` when the key stays without one (pending deletion, its resource gone or going).
    /// `before` is the record as stored, `None` for a new key.
    async fn owner_for(
        &self,
        namespace: &str,
        record: &KeyRecord,
        before: Option<&Secret>,
    ) -> Result<Option<Arc<KmsKey>>, StoreError> {
        let previous_name = before.and_then(recorded_resource_name);
        match self.resource_for_key(namespace, &record.key_id) {
            Some(resource) if is_terminating(&resource) => {
                // Until the deletion is scheduled, the resource still owns the key.
                Ok((record.state != KeyState::PendingDeletion).then_some(resource))
            }
            Some(resource) if record.state == KeyState::PendingDeletion => {
                // A deletion scheduled through the API deletes the resource too; but a resource
                // of the same name made since is new, and takes the key back instead.
                let recorded = before.and_then(recorded_uid);
                if recorded.is_some() && recorded == resource.uid().as_deref() {
                    self.delete_resource(&resource).await?;
                }
                Ok(None)
            }
            // Its spec is brought up to date once the record is written ([`Self::write_back`]):
            // a reconciler woken by the spec must find the record it mirrors.
            Some(resource) => Ok(Some(resource)),
            None if record.state == KeyState::PendingDeletion => Ok(None),
            // A new key (CreateKey), or one whose deletion is cancelled: it gets a resource.
            None if before.is_none_or(was_pending_deletion) => Ok(Some(
                self.create_resource(namespace, record, previous_name.as_deref())
                    .await?,
            )),
            // Its resource was deleted a moment ago and the deletion is not scheduled yet:
            // writing now would bring back a resource the user just deleted.
            None => Err(StoreError::Refused(format!(
                "The KmsKey of key {} was deleted; the key is about to be pending deletion.",
                record.key_id
            ))),
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
        if record.key_id != key.name || !is_key_id(&key.name) {
            return Err(StoreError::Corrupt("key record names another key".into()));
        }
        let previous = self.companion(&key.namespace, &key.name);
        let owner = self
            .owner_for(&key.namespace, &record, previous.as_deref())
            .await?;
        let resource = match &owner {
            Some(owner) => (Some(owner.name_any()), owner.uid()),
            None => (
                previous.as_deref().and_then(recorded_resource_name),
                previous
                    .as_deref()
                    .and_then(recorded_uid)
                    .map(str::to_owned),
            ),
        };
        let secret = self.companion_secret(key, &value, resource, expected)?;
        let api = Api::<Secret>::namespaced(self.client.clone(), &self.system_namespace);
        let name = companion_name(&key.namespace, &key.name);
        let written = match expected {
            None => api.create(&post_params(), &secret).await,
            Some(_) => api.replace(&name, &post_params(), &secret).await,
        }
        .map_err(|err| api_error(err, &key.to_string()))?;
        let revision = Revision::new(written.resource_version().unwrap_or_default());
        self.secrets.put(written);
        if let Some(owner) = owner.filter(|owner| !is_terminating(owner))
            && mapping::spec_mirror(&key.namespace, &record, &owner.spec).is_some()
        {
            self.write_back(&key.namespace, &owner.name_any(), &record)
                .await;
        }
        let _ = self.changes.send(StoreChange::KeyChanged {
            namespace: key.namespace.clone(),
            key_id: key.name.clone(),
        });
        Ok(revision)
    }

    /// Writes what the API changed into the spec of the key's resource, marking the generation
    /// as the store's own ([`writeback`]). A failure is logged, not returned: the record is
    /// written, and a user who kept changing the spec meanwhile made the newer declaration.
    async fn write_back(&self, namespace: &str, resource: &str, record: &KeyRecord) {
        let api = Api::<KmsKey>::namespaced(self.client.clone(), namespace);
        let change = |current: &KmsKey| Ok(mapping::spec_mirror(namespace, record, &current.spec));
        match writeback::write_back(&api, resource, change).await {
            Ok(Some(written)) => {
                self.keys.put(written);
            }
            Ok(None) => {}
            Err(err) => {
                tracing::warn!(error = %crate::redact::chain(&err), "could not write an API change back into its KmsKey's spec");
            }
        }
    }

    async fn delete_key(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        let name = companion_name(&key.namespace, &key.name);
        let resource_name = self.recorded_resource(&key.namespace, &key.name);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                resource_version: Some(expected.as_str().to_owned()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(err) = Api::<Secret>::namespaced(self.client.clone(), &self.system_namespace)
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

    /// The companion Secret holding `value`; `resource` is the (name, uid) of the KmsKey the key
    /// belongs to.
    fn companion_secret(
        &self,
        key: &RecordKey,
        value: &RecordValue,
        resource: (Option<String>, Option<String>),
        expected: Option<&Revision>,
    ) -> Result<Secret, StoreError> {
        let record = serde_json::to_string(&value.meta)
            .map_err(|err| StoreError::Corrupt(format!("key record: {err}")))?;
        let mut annotations = BTreeMap::from([(RECORD_ANNOTATION.to_owned(), record)]);
        let (resource_name, resource_uid) = resource;
        if let Some(name) = resource_name {
            annotations.insert(RESOURCE_NAME_ANNOTATION.to_owned(), name);
        }
        if let Some(uid) = resource_uid {
            annotations.insert(RESOURCE_UID_ANNOTATION.to_owned(), uid);
        }
        Ok(Secret {
            metadata: ObjectMeta {
                name: Some(companion_name(&key.namespace, &key.name)),
                namespace: Some(self.system_namespace.clone()),
                labels: Some(BTreeMap::from([
                    (MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned()),
                    (KEY_ID_LABEL.to_owned(), key.name.clone()),
                    (NAMESPACE_LABEL.to_owned(), key.namespace.clone()),
                ])),
                annotations: Some(annotations),
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

    /// Aliases of a namespace with the resource holding each; the oldest resource wins a name
    /// two of them declare.
    pub(super) fn aliases(&self, namespace: &str) -> BTreeMap<String, Arc<KmsKey>> {
        let mut resources = self
            .alias_holders(namespace)
            .filter(|resource| self.owns_its_key(resource))
            .collect::<Vec<_>>();
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
    pub(super) fn alias_holder_of(&self, namespace: &str, alias: &str) -> Option<Arc<KmsKey>> {
        let name = alias.strip_prefix("alias/")?;
        self.alias_holders(namespace)
            .filter(|resource| resource.spec.aliases.iter().any(|held| held == name))
            .filter(|resource| self.owns_its_key(resource))
            .min_by_key(|resource| claim_order(resource))
    }

    /// Whether the key a resource's label claims is its own: no other resource's record names it.
    pub fn owns_its_key(&self, resource: &KmsKey) -> bool {
        key_id_of(resource).is_some_and(|key_id| self.check_claim(resource, key_id).is_ok())
    }

    /// Resources whose aliases count: live, with a key.
    pub(super) fn alias_holders(&self, namespace: &str) -> impl Iterator<Item = Arc<KmsKey>> {
        self.keys
            .list(Some(namespace))
            .into_iter()
            .filter(|resource| !is_terminating(resource) && key_id_of(resource).is_some())
    }
}

#[async_trait]
impl KindStore for KmsKeys {
    fn kind(&self) -> RecordKind {
        RecordKind::KmsKey
    }

    async fn watch(self: Arc<Self>) {
        let secrets = {
            let keeper = Arc::clone(&self);
            cache::feed(
                Api::<Secret>::namespaced(self.client.clone(), &self.system_namespace),
                watcher::Config::default().labels(&format!("{KEY_ID_LABEL},{NAMESPACE_LABEL}")),
                Arc::clone(&self.secrets),
                None,
                move |observed| keeper.observed_secret(observed),
            )
        };
        let keys = cache::feed_resources(
            Api::<KmsKey>::all(self.client.clone()),
            Arc::clone(&self.keys),
            Arc::clone(&self.feed),
            Arc::clone(&self.resources_gone),
        );
        futures::future::join(secrets, keys).await;
    }

    async fn synced(&self) {
        let mut secrets = self.secrets.synced();
        let mut keys = self.keys.synced();
        // An error means the keeper is gone, and then nothing waits on it.
        let _ = secrets.wait_for(|synced| *synced).await;
        let _ = keys.wait_for(|synced| *synced).await;
    }
}

#[async_trait]
impl Store for KmsKeys {
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        self.companion(&key.namespace, &key.name)
            .map(|secret| secret_record(&secret))
            .transpose()
    }

    async fn list(
        &self,
        _kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
        self.secrets
            .list(namespace)
            .iter()
            .filter_map(|secret| {
                let key_id = secret.labels().get(KEY_ID_LABEL)?;
                let (namespace, name) = companion_key(secret);
                (name == companion_name(&namespace, key_id)).then(|| {
                    secret_record(secret).map(|record| {
                        let key = RecordKey::new(RecordKind::KmsKey, namespace, key_id.clone());
                        (key, record)
                    })
                })
            })
            .collect()
    }

    async fn create(&self, key: &RecordKey, value: RecordValue) -> Result<Revision, StoreError> {
        self.write_key(key, None, value).await
    }

    async fn update(
        &self,
        key: &RecordKey,
        expected: &Revision,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        self.write_key(key, Some(expected), value).await
    }

    async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        self.delete_key(key, expected).await
    }
}

/// Whether a live resource of the name a key's record gives keeps the key: it is not being
/// deleted, and claims that key or none yet (a new resource of that name adopts the key).
fn still_owns(resource: &KmsKey, key_id: &str) -> bool {
    !is_terminating(resource) && key_id_of(resource).is_none_or(|claimed| claimed == key_id)
}

/// Whether a stored key record is pending deletion.
fn was_pending_deletion(secret: &Secret) -> bool {
    secret_record(secret)
        .ok()
        .and_then(|record| record.value.meta.get("state").cloned())
        .and_then(|state| serde_json::from_value::<KeyState>(state).ok())
        == Some(KeyState::PendingDeletion)
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

/// How errors name a resource.
fn resource_label(resource: &KmsKey) -> String {
    format!(
        "kmskey {}/{}",
        resource.namespace().unwrap_or_default(),
        resource.name_any()
    )
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
