//! Records whose versions' values get objects of their own, declared by a custom resource:
//! Secrets Manager secrets (a Secret resource) and SSM parameters (a Parameter resource). One
//! keeper, [`VersionedRecords`], serves every such kind; what differs between kinds (names,
//! resource, how a record and a spec correspond) is its [`VersionedKind`].
//!
//! A record is:
//! - its **record object**, a core Secret `KIND-NAMESPACE.HASH` (type `coffer.dev/KIND`) in the
//!   **controller's own namespace**, `HASH` a digest of the record's name. Its annotations hold
//!   the metadata record (nothing secret), which object holds each sealed slot, and the
//!   resource the record belongs to (name and uid). Writes replace it under its
//!   resourceVersion, so two writers never interleave.
//! - one **value object** per slot, `KIND-NAMESPACE.HASH.DIGEST` (type `coffer.dev/KIND-value`,
//!   immutable), holding that slot's bytes, `DIGEST` a digest of them. Values get objects of
//!   their own because a record keeps up to 100 old versions, beyond what one object may hold.
//!   A write creates the new value objects first and replaces the record second, so a record
//!   never names a value that is not there; values the record no longer names are deleted
//!   after it, and those a crash or a lost race left behind are swept
//!   ([`VersionedRecords::sweep_orphan_values`]).
//! - its **resource** in the user's namespace. Its spec declares what the user wants; changes
//!   made through the API are written back into the spec ([`VersionedKind::spec_mirror`]), so
//!   there is one source of truth.
//!
//! The record and values live apart from the resource on purpose: deleting the resource (or its
//! namespace) deletes nothing of the record. The controller notices the resource is gone
//! ([`VersionedRecords::abandoned`]) and the kind's reconciler decides what follows (a secret's
//! recovery window).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use kube::api::{DeleteParams, ObjectMeta, Preconditions};
use kube::runtime::{reflector, watcher};
use kube::{Api, Client, Resource as _, ResourceExt};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::{Notify, broadcast};

use super::cache::{self, ObjectCache, ObjectKey, Observed, ReconcilerFeed};
use super::{FIELD_MANAGER, KindStore, api_error, post_params, writeback};
use crate::engine::AccountDirectory;
use crate::engine::account::account_id;
use crate::store::{Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};

/// Label naming the namespace (the account) a record or value belongs to.
pub const NAMESPACE_LABEL: &str = super::NAMESPACE_LABEL;
/// The data key of a value object.
const VALUE_KEY: &str = "value";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value objects no record names are deleted once this old: a younger one may belong to a
/// write still in flight.
const ORPHAN_GRACE_SECONDS: i64 = 600;

/// Annotation of a resource the store made for a record written through the API.
pub const MADE_FOR_RECORD_ANNOTATION: &str = "coffer.dev/made-for-api-record";
/// How long a resource made for an API record waits for that record before its reconciler
/// treats it as a declaration of its own (the API call that made it failed in between).
const RECORD_WAIT_SECONDS: i64 = 60;

/// Whether a resource the store made for an API record is still waiting for that record: the
/// store makes the resource first and writes the record just after, and a reconciler that
/// made a record of its own in between would make a second secret under the same name.
pub fn awaits_its_record<R: kube::Resource>(resource: &R, now: i64) -> bool {
    let meta = resource.meta();
    let made_for_record = meta
        .annotations
        .as_ref()
        .is_some_and(|annotations| annotations.contains_key(MADE_FOR_RECORD_ANNOTATION));
    let created = meta
        .creation_timestamp
        .as_ref()
        .map_or(now, |time| time.0.as_second());
    made_for_record && now.saturating_sub(created) < RECORD_WAIT_SECONDS
}

/// What differs between kinds of versioned records.
pub trait VersionedKind: Send + Sync + 'static {
    /// The custom resource that declares records of this kind.
    type Resource: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
        + Send
        + Sync
        + 'static;
    /// The record's metadata.
    type Meta: serde::de::DeserializeOwned + Send + Sync;

    const RECORD_KIND: RecordKind;
    /// First part of object names (`secret`, `parameter`).
    const PREFIX: &'static str;
    /// Type of record objects.
    const RECORD_TYPE: &'static str;
    /// Type of value objects.
    const VALUE_TYPE: &'static str;
    /// Label of record and value objects: the digest of the record's name.
    const LABEL: &'static str;
    /// Annotation of a record object holding the metadata record.
    const RECORD_ANNOTATION: &'static str;
    /// Annotation of a record object naming the value object of each sealed slot.
    const VALUES_ANNOTATION: &'static str;
    /// Annotation of a record object with the name of the resource it belongs to.
    const RESOURCE_NAME_ANNOTATION: &'static str;
    /// Annotation of a record object with the uid of that resource.
    const RESOURCE_UID_ANNOTATION: &'static str;
    /// How messages name the resource's type (`secret.coffer.dev`).
    const RESOURCE_TYPE: &'static str;

    /// The record's name.
    fn name(meta: &Self::Meta) -> &str;
    /// Whether the record waits out a deletion (and so has no resource).
    fn is_deleted(meta: &Self::Meta) -> bool;
    /// The name of the record a resource declares; `None` for a resource that declares none
    /// it may have.
    fn declared_name(resource: &Self::Resource) -> Option<String>;
    /// The resource made for a record that has none (made or restored through the API), given
    /// the record's metadata and slots.
    fn resource_for_record(
        namespace: &str,
        meta: &Self::Meta,
        slots: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self::Resource, StoreError>;
    /// The merge patch that brings a resource's spec to what the record holds, if they differ;
    /// [`StoreError::Refused`] for a change the spec cannot show.
    fn spec_mirror(
        meta: &Self::Meta,
        slots: &BTreeMap<String, Vec<u8>>,
        resource: &Self::Resource,
    ) -> Result<Option<Value>, StoreError>;
}

/// Digest of a record's name, as it appears in object names and labels.
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

/// The record object's name. Namespaces hold no dot, so no two records share one.
pub fn record_name<K: VersionedKind>(namespace: &str, name: &str) -> String {
    format!("{}-{namespace}.{}", K::PREFIX, name_digest(name))
}

/// The name of the object holding one slot's bytes.
fn value_name<K: VersionedKind>(namespace: &str, name: &str, blob: &[u8]) -> String {
    format!(
        "{}.{}",
        record_name::<K>(namespace, name),
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

fn is_record<K: VersionedKind>(object: &CoreSecret) -> bool {
    object.type_.as_deref() == Some(K::RECORD_TYPE) && object.labels().contains_key(K::LABEL)
}

/// Only objects of the value type, with the label, are ever deleted as values: never anything
/// else that shares the namespace (the root key, KMS keys, other kinds).
fn is_value<K: VersionedKind>(object: &CoreSecret) -> bool {
    object.type_.as_deref() == Some(K::VALUE_TYPE) && object.labels().contains_key(K::LABEL)
}

fn is_terminating<R: kube::Resource>(resource: &R) -> bool {
    resource.meta().deletion_timestamp.is_some()
}

/// The metadata record a record object holds, parsed.
fn stored_meta<K: VersionedKind>(object: &CoreSecret) -> Result<K::Meta, StoreError> {
    let name = object.name_any();
    let text = object
        .annotations()
        .get(K::RECORD_ANNOTATION)
        .ok_or_else(|| StoreError::Corrupt(format!("{name} has no record")))?;
    serde_json::from_str(text).map_err(|source| StoreError::Malformed {
        record: name,
        source,
    })
}

/// Which object holds each slot, by a record object.
fn value_names<K: VersionedKind>(
    object: &CoreSecret,
) -> Result<BTreeMap<String, String>, StoreError> {
    match object.annotations().get(K::VALUES_ANNOTATION) {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(text).map_err(|source| StoreError::Malformed {
            record: object.name_any(),
            source,
        }),
    }
}

/// What changed, for the reconciler.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordChanged {
    pub namespace: String,
    /// The record's name in the API.
    pub name: String,
}

/// A record whose resource is gone (or going) while the record does not wait out a deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Abandoned {
    pub namespace: String,
    pub name: String,
    pub resource_name: String,
    pub resource_uid: Option<String>,
}

/// The keeper of one kind of versioned records.
pub struct VersionedRecords<K: VersionedKind> {
    client: Client,
    system_namespace: String,
    /// Record and value objects.
    objects: Arc<ObjectCache<CoreSecret>>,
    /// Resources, indexed by the name of the record each declares.
    resources: Arc<ObjectCache<K::Resource>>,
    feed: Arc<ReconcilerFeed<K::Resource>>,
    changes: broadcast::Sender<RecordChanged>,
    resources_gone: Arc<Notify>,
    /// The resources of records deleted lately, for Events about them.
    departed: std::sync::Mutex<BTreeMap<(String, String), ResourceRef>>,
}

/// A resource by name and uid.
type ResourceRef = (String, Option<String>);

/// How many deleted records' resources are remembered.
const DEPARTED_CAPACITY: usize = 1024;

impl<K: VersionedKind> VersionedRecords<K> {
    /// The keeper of one kind, its records and values in `system_namespace`.
    pub fn new(client: Client, system_namespace: &str) -> Arc<Self> {
        Arc::new(Self {
            client,
            system_namespace: system_namespace.to_owned(),
            objects: Arc::new(ObjectCache::filed_by(object_key, None)),
            resources: Arc::new(ObjectCache::new(Some(K::declared_name))),
            feed: Arc::new(ReconcilerFeed::new()),
            changes: broadcast::Sender::new(1024),
            resources_gone: Arc::new(Notify::new()),
            departed: std::sync::Mutex::new(BTreeMap::new()),
        })
    }

    /// The (name, uid) of the resource a record deleted lately belonged to.
    pub fn departed_resource(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<(String, Option<String>)> {
        self.departed
            .lock()
            .ok()?
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// What the kind's reconciler runs on, from the keeper's own watch.
    pub fn reconciler_input(
        &self,
    ) -> (
        impl futures::Stream<Item = Result<K::Resource, watcher::Error>> + Send + 'static + use<K>,
        reflector::Store<K::Resource>,
    ) {
        self.feed.input()
    }

    /// Hears of every change of a record, here or by another replica.
    pub fn changes(&self) -> broadcast::Receiver<RecordChanged> {
        self.changes.subscribe()
    }

    /// Notified whenever a resource may have gone.
    pub fn resources_gone(&self) -> Arc<Notify> {
        Arc::clone(&self.resources_gone)
    }

    fn record_object(&self, namespace: &str, name: &str) -> Option<Arc<CoreSecret>> {
        self.objects
            .get(namespace, &record_name::<K>(namespace, name))
    }

    /// The resource declaring record `name`, from the cache: the one its record names while
    /// that one still declares it (a second resource declaring the same name takes nothing),
    /// else any that declares it.
    pub fn resource_for(&self, namespace: &str, name: &str) -> Option<Arc<K::Resource>> {
        self.recorded_resource(namespace, name)
            .and_then(|recorded| self.resources.get(namespace, &recorded))
            .filter(|resource| K::declared_name(resource).as_deref() == Some(name))
            .or_else(|| self.resources.find(namespace, name))
    }

    /// The name of the resource record `name` last belonged to, as its record object says.
    pub fn recorded_resource(&self, namespace: &str, name: &str) -> Option<String> {
        self.record_object(namespace, name)?
            .annotations()
            .get(K::RESOURCE_NAME_ANNOTATION)
            .cloned()
    }

    /// Takes a resource into the cache, as the watch would.
    pub fn remember(&self, resource: K::Resource) {
        self.resources.put(resource);
    }

    /// Forgets a deleted resource, as the watch would.
    #[cfg(test)]
    pub(crate) fn forget_resource(&self, namespace: &str, name: &str) {
        self.resources.forget(namespace, name);
        self.resources_gone.notify_one();
    }

    /// The newest copy of a resource known here.
    pub fn freshest(&self, resource: &K::Resource) -> K::Resource {
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
    pub async fn is_live(&self, resource: &K::Resource) -> Result<bool, StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        let current = Api::<K::Resource>::namespaced(self.client.clone(), &namespace)
            .get_opt(&resource.name_any())
            .await
            .map_err(|err| api_error(err, &self.label(&namespace, &resource.name_any())))?;
        Ok(current
            .is_some_and(|current| current.uid() == resource.uid() && !is_terminating(&current)))
    }

    /// Records not waiting out a deletion whose resource, by the caches, is gone or going.
    /// Check each with [`Self::confirm_abandoned`] before acting: the caches may lag behind.
    pub fn abandoned(&self) -> Vec<Abandoned> {
        self.objects
            .list(None)
            .iter()
            .filter(|object| is_record::<K>(object))
            .filter_map(|object| {
                let (namespace, _) = object_key(object);
                let meta = stored_meta::<K>(object).ok()?;
                if K::is_deleted(&meta) {
                    return None;
                }
                let name = K::name(&meta).to_owned();
                let live = self
                    .resource_for(&namespace, &name)
                    .is_some_and(|resource| !is_terminating(resource.as_ref()));
                let annotations = object.annotations();
                let resource_name = annotations.get(K::RESOURCE_NAME_ANNOTATION)?.clone();
                (!live).then(|| Abandoned {
                    namespace,
                    name,
                    resource_name,
                    resource_uid: annotations.get(K::RESOURCE_UID_ANNOTATION).cloned(),
                })
            })
            .collect()
    }

    /// Asks the API server whether an abandoned record's resource is really gone (or going, or
    /// now declaring something else).
    pub async fn confirm_abandoned(&self, abandoned: &Abandoned) -> Result<bool, StoreError> {
        let api = Api::<K::Resource>::namespaced(self.client.clone(), &abandoned.namespace);
        match api.get_opt(&abandoned.resource_name).await {
            Ok(None) => Ok(true),
            Ok(Some(resource)) => {
                let gone = is_terminating(&resource)
                    || K::declared_name(&resource).as_deref() != Some(abandoned.name.as_str());
                self.resources.put(resource);
                Ok(gone)
            }
            Err(err) => Err(api_error(
                err,
                &self.label(&abandoned.namespace, &abandoned.resource_name),
            )),
        }
    }

    /// Deletes value objects that no record names, older than a write in flight could be.
    /// Returns how many went.
    pub async fn sweep_orphan_values(&self, now: i64) -> Result<usize, StoreError> {
        let objects = self.objects.list(None);
        let mut named = std::collections::HashSet::new();
        for object in objects.iter().filter(|object| is_record::<K>(object)) {
            named.extend(value_names::<K>(object).unwrap_or_default().into_values());
        }
        let api = Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace);
        let mut swept = 0;
        for object in objects.iter().filter(|object| is_value::<K>(object)) {
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
            .get(K::RECORD_ANNOTATION)
            .ok_or_else(|| StoreError::Corrupt(format!("{} has no record", object.name_any())))?;
        let meta: Value = serde_json::from_str(meta).map_err(|source| StoreError::Malformed {
            record: object.name_any(),
            source,
        })?;
        let (namespace, _) = object_key(object);
        let mut sealed = BTreeMap::new();
        for (slot, value_object) in value_names::<K>(object)? {
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
    /// Returns the (name, uid) of the resource the record belongs to now, if any.
    async fn owner_for(
        &self,
        namespace: &str,
        meta: &K::Meta,
        slots: &BTreeMap<String, Vec<u8>>,
        before: Option<&CoreSecret>,
        mirror: &mut Option<String>,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let name = K::name(meta);
        let deleted = K::is_deleted(meta);
        let was_deleted = before
            .and_then(|object| stored_meta::<K>(object).ok())
            .map(|meta| K::is_deleted(&meta));
        let recorded_uid =
            before.and_then(|object| object.annotations().get(K::RESOURCE_UID_ANNOTATION));
        match self.resource_for(namespace, name) {
            Some(resource) if deleted => {
                // A deletion through the API deletes the resource too; but a resource applied
                // since (another uid) is new, and will take the record back instead.
                if was_deleted == Some(false)
                    && !is_terminating(resource.as_ref())
                    && recorded_uid.is_some()
                    && recorded_uid.map(String::as_str) == resource.uid().as_deref()
                {
                    self.delete_resource(&resource).await?;
                }
                Ok(None)
            }
            Some(resource) if is_terminating(resource.as_ref()) => {
                Ok(Some((resource.name_any(), resource.uid())))
            }
            Some(resource) => {
                // Checked now (a change the spec cannot show is refused before anything is
                // written), written back once the record is written: a reconciler woken by the
                // spec must find the record it mirrors, or it would write the old one back.
                if K::spec_mirror(meta, slots, &resource)?.is_some() {
                    *mirror = Some(resource.name_any());
                }
                Ok(Some((resource.name_any(), resource.uid())))
            }
            None if deleted => Ok(None),
            // A new record (made through the API), or one restored through it: it gets a
            // resource.
            None if was_deleted.is_none_or(|deleted| deleted) => {
                let created = self.create_resource(namespace, meta, slots).await?;
                Ok(Some((created.name_any(), created.uid())))
            }
            // Its resource was deleted a moment ago and the controller has yet to act on it:
            // writing now would bring back a resource the user just deleted.
            None => Err(StoreError::Refused(format!(
                "The {} of {name} was deleted; the controller is about to act on it.",
                K::RESOURCE_TYPE
            ))),
        }
    }

    async fn create_resource(
        &self,
        namespace: &str,
        meta: &K::Meta,
        slots: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Arc<K::Resource>, StoreError> {
        let mut resource = K::resource_for_record(namespace, meta, slots)?;
        resource.meta_mut().namespace = Some(namespace.to_owned());
        resource
            .meta_mut()
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(MADE_FOR_RECORD_ANNOTATION.to_owned(), "true".to_owned());
        let name = resource.name_any();
        let created = Api::<K::Resource>::namespaced(self.client.clone(), namespace)
            .create(&post_params(), &resource)
            .await
            .map_err(|err| match api_error(err, &self.label(namespace, &name)) {
                // A resource of that name that declares something else.
                StoreError::AlreadyExists(_) => StoreError::Refused(format!(
                    "A {} named {name} already exists in this namespace for something else.",
                    K::RESOURCE_TYPE
                )),
                other => other,
            })?;
        self.resources.put(created.clone());
        Ok(Arc::new(created))
    }

    async fn delete_resource(&self, resource: &K::Resource) -> Result<(), StoreError> {
        let namespace = resource.namespace().unwrap_or_default();
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: resource.uid(),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match Api::<K::Resource>::namespaced(self.client.clone(), &namespace)
            .delete(&resource.name_any(), &params)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.is_not_found() || status.is_conflict() => {
                Ok(())
            }
            Err(err) => Err(api_error(
                err,
                &self.label(&namespace, &resource.name_any()),
            )),
        }
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
            let name = value_name::<K>(&key.namespace, &key.name, blob);
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
            type_: Some(K::VALUE_TYPE.to_owned()),
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
            (K::LABEL.to_owned(), name_digest(&key.name)),
            (NAMESPACE_LABEL.to_owned(), key.namespace.clone()),
        ])
    }

    async fn write(
        &self,
        key: &RecordKey,
        expected: Option<&Revision>,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        let meta: K::Meta =
            serde_json::from_value(value.meta.clone()).map_err(|source| StoreError::Malformed {
                record: key.to_string(),
                source,
            })?;
        if K::name(&meta) != key.name {
            return Err(StoreError::Corrupt(
                "the record names another record".into(),
            ));
        }
        let previous = self.record_object(&key.namespace, &key.name);
        let previous_values = previous
            .as_deref()
            .map(value_names::<K>)
            .transpose()?
            .unwrap_or_default();
        let mut mirror = None;
        let owner = match self
            .owner_for(
                &key.namespace,
                &meta,
                &value.sealed,
                previous.as_deref(),
                &mut mirror,
            )
            .await?
        {
            Some((name, uid)) => (Some(name), uid),
            None => {
                let annotations = previous.as_deref().map(ResourceExt::annotations);
                (
                    annotations.and_then(|a| a.get(K::RESOURCE_NAME_ANNOTATION).cloned()),
                    annotations.and_then(|a| a.get(K::RESOURCE_UID_ANNOTATION).cloned()),
                )
            }
        };
        let values = self
            .write_values(key, &value.sealed, &previous_values)
            .await?;
        let object = self.record_of(key, &value, &values, owner, expected)?;
        let api = Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace);
        let name = record_name::<K>(&key.namespace, &key.name);
        let written = match expected {
            None => api.create(&post_params(), &object).await,
            Some(_) => api.replace(&name, &post_params(), &object).await,
        }
        .map_err(|err| api_error(err, &key.to_string()))?;
        let revision = Revision::new(written.resource_version().unwrap_or_default());
        self.objects.put(written);
        if let Some(resource_name) = mirror {
            let api = Api::<K::Resource>::namespaced(self.client.clone(), &key.namespace);
            let change = |resource: &K::Resource| K::spec_mirror(&meta, &value.sealed, resource);
            match writeback::write_back(&api, &resource_name, change).await {
                Ok(Some(written)) => {
                    self.resources.put(written);
                }
                Ok(None) => {}
                // Someone kept changing the spec meanwhile; their change is the newer declaration.
                Err(err) => {
                    tracing::warn!(error = %crate::redact::chain(&err), "could not write an API change back into its resource's spec");
                }
            }
        }
        let kept: std::collections::HashSet<&String> = values.values().collect();
        let dropped: Vec<String> = previous_values
            .into_values()
            .filter(|name| !kept.contains(name))
            .collect();
        self.delete_values(&key.namespace, dropped).await;
        let _ = self.changes.send(RecordChanged {
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
                    tracing::warn!(error = %crate::redact::chain(&err), "could not delete a value no record names; the sweep will");
                }
            }
        }
    }

    fn record_of(
        &self,
        key: &RecordKey,
        value: &RecordValue,
        values: &BTreeMap<String, String>,
        (resource_name, resource_uid): (Option<String>, Option<String>),
        expected: Option<&Revision>,
    ) -> Result<CoreSecret, StoreError> {
        let malformed = |source| StoreError::Malformed {
            record: key.to_string(),
            source,
        };
        let record = serde_json::to_string(&value.meta).map_err(malformed)?;
        let values = serde_json::to_string(values).map_err(malformed)?;
        let mut annotations = BTreeMap::from([
            (K::RECORD_ANNOTATION.to_owned(), record),
            (K::VALUES_ANNOTATION.to_owned(), values),
        ]);
        if let Some(name) = resource_name {
            annotations.insert(K::RESOURCE_NAME_ANNOTATION.to_owned(), name);
        }
        if let Some(uid) = resource_uid {
            annotations.insert(K::RESOURCE_UID_ANNOTATION.to_owned(), uid);
        }
        Ok(CoreSecret {
            metadata: ObjectMeta {
                name: Some(record_name::<K>(&key.namespace, &key.name)),
                namespace: Some(self.system_namespace.clone()),
                labels: Some(self.labels(key)),
                annotations: Some(annotations),
                resource_version: expected.map(|revision| revision.as_str().to_owned()),
                ..ObjectMeta::default()
            },
            type_: Some(K::RECORD_TYPE.to_owned()),
            ..CoreSecret::default()
        })
    }

    async fn delete_record(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        let Some(previous) = self.record_object(&key.namespace, &key.name) else {
            return Err(StoreError::NotFound(key.to_string()));
        };
        // A deletion through the API takes the resource with it (only the one the record names).
        if let Some(resource) = self.resource_for(&key.namespace, &key.name) {
            let recorded = previous.annotations().get(K::RESOURCE_UID_ANNOTATION);
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
        let name = record_name::<K>(&key.namespace, &key.name);
        Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace)
            .delete(&name, &params)
            .await
            .map_err(|err| api_error(err, &key.to_string()))?;
        self.objects.forget(&key.namespace, &name);
        if let (Ok(mut departed), Some(resource_name)) = (
            self.departed.lock(),
            previous.annotations().get(K::RESOURCE_NAME_ANNOTATION),
        ) {
            if departed.len() >= DEPARTED_CAPACITY {
                departed.pop_first();
            }
            departed.insert(
                (key.namespace.clone(), key.name.clone()),
                (
                    resource_name.clone(),
                    previous
                        .annotations()
                        .get(K::RESOURCE_UID_ANNOTATION)
                        .cloned(),
                ),
            );
        }
        let values = value_names::<K>(&previous)?.into_values().collect();
        self.delete_values(&key.namespace, values).await;
        let _ = self.changes.send(RecordChanged {
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
        if !is_record::<K>(object) {
            return;
        }
        if let Ok(meta) = stored_meta::<K>(object) {
            let (namespace, _) = object_key(object);
            let _ = self.changes.send(RecordChanged {
                namespace,
                name: K::name(&meta).to_owned(),
            });
        }
    }

    /// How errors name a resource.
    fn label(&self, namespace: &str, name: &str) -> String {
        format!("{} {namespace}/{name}", K::RESOURCE_TYPE)
    }
}

impl<K: VersionedKind> AccountDirectory for VersionedRecords<K> {
    /// The namespaces that hold records are the accounts another namespace may name.
    fn namespace_of(&self, account: &str) -> Option<String> {
        let mut namespaces: Vec<String> = self
            .objects
            .list(None)
            .iter()
            .filter(|object| is_record::<K>(object))
            .map(|object| object_key(object).0)
            .collect();
        namespaces.dedup();
        namespaces
            .into_iter()
            .find(|namespace| account_id(namespace) == account)
    }
}

#[async_trait]
impl<K: VersionedKind> KindStore for VersionedRecords<K> {
    fn kind(&self) -> RecordKind {
        K::RECORD_KIND
    }

    async fn watch(self: Arc<Self>) {
        let objects = {
            let keeper = Arc::clone(&self);
            cache::feed(
                Api::<CoreSecret>::namespaced(self.client.clone(), &self.system_namespace),
                watcher::Config::default().labels(&format!("{},{NAMESPACE_LABEL}", K::LABEL)),
                Arc::clone(&self.objects),
                None,
                move |observed| keeper.observed_object(observed),
            )
        };
        let resources = cache::feed_resources(
            Api::<K::Resource>::all(self.client.clone()),
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
impl<K: VersionedKind> Store for VersionedRecords<K> {
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        match self.record_object(&key.namespace, &key.name) {
            Some(object) => self.assemble(&object).await.map(Some),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
        let mut records = Vec::new();
        for object in self.objects.list(namespace) {
            if !is_record::<K>(&object) {
                continue;
            }
            let (namespace, _) = object_key(&object);
            let name = K::name(&stored_meta::<K>(&object)?).to_owned();
            let record = self.assemble(&object).await?;
            records.push((RecordKey::new(kind, namespace, name), record));
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
