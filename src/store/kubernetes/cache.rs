//! Watch-fed, in-memory copies of the objects the Kubernetes store reads on the hot path.
//!
//! The API's calls read here instead of asking the API server. The store's own writes go in at
//! once (read-your-writes), and a watch event never replaces a newer copy with an older one, so a
//! write's echo arriving after a later write changes nothing.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt as _;
use kube::runtime::{WatchStreamExt as _, reflector, watcher};
use kube::{Api, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

/// (namespace, name): where the cache files an object.
pub type ObjectKey = (String, String);

/// A value an object is also found by, within its namespace (such as a label).
pub type Indexer<K> = fn(&K) -> Option<String>;

/// Where an object is filed: its own namespace and name, or (for objects that stand for
/// something in another namespace) a namespace named by a label.
pub type Keyer<K> = fn(&K) -> ObjectKey;

/// One kind of object, by namespace and name, and optionally by one indexed value.
pub struct ObjectCache<K> {
    objects: RwLock<Objects<K>>,
    keyer: Keyer<K>,
    indexer: Option<Indexer<K>>,
    synced: watch::Sender<bool>,
}

struct Objects<K> {
    by_name: BTreeMap<ObjectKey, Arc<K>>,
    /// (namespace, indexed value) to name.
    by_index: HashMap<ObjectKey, String>,
}

impl<K: Resource + Clone> Default for ObjectCache<K> {
    fn default() -> Self {
        Self::new(None)
    }
}

impl<K> Objects<K> {
    fn unindex(&mut self, indexer: Option<Indexer<K>>, key: &ObjectKey) {
        if let (Some(indexer), Some(old)) = (indexer, self.by_name.get(key))
            && let Some(value) = indexer(old)
        {
            let entry = (key.0.clone(), value);
            if self.by_index.get(&entry) == Some(&key.1) {
                self.by_index.remove(&entry);
            }
        }
    }

    fn insert(&mut self, indexer: Option<Indexer<K>>, key: ObjectKey, object: Arc<K>) {
        self.unindex(indexer, &key);
        if let Some(value) = indexer.and_then(|indexer| indexer(&object)) {
            self.by_index.insert((key.0.clone(), value), key.1.clone());
        }
        self.by_name.insert(key, object);
    }

    fn remove(&mut self, indexer: Option<Indexer<K>>, key: &ObjectKey) {
        self.unindex(indexer, key);
        self.by_name.remove(key);
    }
}

/// A resourceVersion as a number, when it is one (etcd's always are); others never compare.
fn version_number<K: Resource>(object: &K) -> Option<u64> {
    object.meta().resource_version.as_deref()?.parse().ok()
}

/// Whether `held` is a later version than `other`.
pub fn newer<K: Resource>(held: &K, other: &K) -> bool {
    matches!(
        (version_number(held), version_number(other)),
        (Some(held), Some(other)) if held > other
    )
}

/// Drops what the cache never reads and that can be most of an object's size: the
/// server-side apply bookkeeping.
fn slim<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// An object's own namespace and name.
pub fn own_key<K: Resource>(object: &K) -> ObjectKey {
    (object.namespace().unwrap_or_default(), object.name_any())
}

impl<K: Resource + Clone> ObjectCache<K> {
    /// A cache filed by each object's own namespace, that also finds objects by `indexer`'s value.
    pub fn new(indexer: Option<Indexer<K>>) -> Self {
        Self::filed_by(own_key, indexer)
    }

    /// A cache filed by `keyer`, that also finds objects by `indexer`'s value.
    pub fn filed_by(keyer: Keyer<K>, indexer: Option<Indexer<K>>) -> Self {
        Self {
            objects: RwLock::new(Objects {
                by_name: BTreeMap::new(),
                by_index: HashMap::new(),
            }),
            keyer,
            indexer,
            synced: watch::Sender::new(false),
        }
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let objects = self.objects.read().ok()?;
        objects
            .by_name
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// The object of `namespace` whose indexed value is `value`.
    pub fn find(&self, namespace: &str, value: &str) -> Option<Arc<K>> {
        let objects = self.objects.read().ok()?;
        let name = objects
            .by_index
            .get(&(namespace.to_owned(), value.to_owned()))?;
        objects
            .by_name
            .get(&(namespace.to_owned(), name.clone()))
            .cloned()
    }

    /// The objects of one namespace, or of all, ordered by namespace and name.
    pub fn list(&self, namespace: Option<&str>) -> Vec<Arc<K>> {
        let Ok(objects) = self.objects.read() else {
            return Vec::new();
        };
        match namespace {
            None => objects.by_name.values().cloned().collect(),
            Some(namespace) => objects
                .by_name
                .range((namespace.to_owned(), String::new())..)
                .take_while(|((ns, _), _)| ns == namespace)
                .map(|(_, object)| Arc::clone(object))
                .collect(),
        }
    }

    /// Stores `object` unless the copy held is newer. Returns whether it was stored.
    pub fn put(&self, mut object: K) -> bool {
        slim(&mut object);
        let Ok(mut objects) = self.objects.write() else {
            return false;
        };
        let key = (self.keyer)(&object);
        if objects
            .by_name
            .get(&key)
            .is_some_and(|held| newer(held.as_ref(), &object))
        {
            return false;
        }
        objects.insert(self.indexer, key, Arc::new(object));
        true
    }

    /// Forgets an object, unless the copy held is newer than the deleted one.
    pub fn remove(&self, object: &K) {
        let Ok(mut objects) = self.objects.write() else {
            return;
        };
        let key = (self.keyer)(object);
        if objects
            .by_name
            .get(&key)
            .is_some_and(|held| newer(held.as_ref(), object))
        {
            return;
        }
        objects.remove(self.indexer, &key);
    }

    /// Forgets an object by name (after the store deleted it).
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut objects) = self.objects.write() {
            objects.remove(self.indexer, &(namespace.to_owned(), name.to_owned()));
        }
    }

    fn replace_all(&self, listed: Vec<K>) {
        if let Ok(mut objects) = self.objects.write() {
            objects.by_name.clear();
            objects.by_index.clear();
            for mut object in listed {
                slim(&mut object);
                objects.insert(self.indexer, (self.keyer)(&object), Arc::new(object));
            }
        }
        self.synced.send_replace(true);
    }

    /// Whether the first full list has arrived.
    pub fn synced(&self) -> watch::Receiver<bool> {
        self.synced.subscribe()
    }
}

/// What a watch reported, for whoever keeps derived state.
pub enum Observed<K> {
    Changed(Arc<K>),
    Deleted(K),
    Relisted,
}

/// Feeds `cache` from a watch on `api` until the task is dropped, with backoff on errors, and
/// `reflector` too when given (a reconciler's store, so that one watch serves both). `observe`
/// hears of every change after it is applied.
pub async fn feed<K, F>(
    api: Api<K>,
    config: watcher::Config,
    cache: Arc<ObjectCache<K>>,
    mut reflector: Option<reflector::store::Writer<K>>,
    observe: F,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: Fn(Observed<K>),
{
    let mut buffer = Vec::new();
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let event = event.map(|event| event.modify(slim));
        if let (Some(reflector), Ok(event)) = (reflector.as_mut(), &event) {
            reflector.apply_watcher_event(event);
        }
        match event {
            Ok(watcher::Event::Init) => buffer.clear(),
            Ok(watcher::Event::InitApply(object)) => buffer.push(object),
            Ok(watcher::Event::InitDone) => {
                cache.replace_all(std::mem::take(&mut buffer));
                observe(Observed::Relisted);
            }
            Ok(watcher::Event::Apply(object)) => {
                if cache.put(object.clone()) {
                    observe(Observed::Changed(Arc::new(object)));
                }
            }
            Ok(watcher::Event::Delete(object)) => {
                cache.remove(&object);
                observe(Observed::Deleted(object));
            }
            Err(err) => {
                tracing::warn!(kind = %K::kind(&Default::default()), error = %err, "watch failed; retrying with backoff");
            }
        }
    }
}

/// What a keeper's watch of resources hands their reconciler: the resources to look at (every
/// one known now, then each one the watch sees change) and the store it reads them from. One
/// watch so, not two, and the reconciler never sees a resource the keeper has not.
pub struct ReconcilerFeed<K: Resource + Clone + 'static>
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    reader: reflector::Store<K>,
    /// Taken by the one watch that feeds it.
    writer: std::sync::Mutex<Option<reflector::store::Writer<K>>>,
    triggers: tokio::sync::broadcast::Sender<Trigger<K>>,
}

/// What the watch tells the reconciler.
#[derive(Clone, Debug)]
enum Trigger<K> {
    /// This resource changed.
    Changed(Arc<K>),
    /// The watch listed everything again: changes may have been missed.
    Relisted,
}

impl<K> ReconcilerFeed<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    pub fn new() -> Self {
        let (reader, writer) = reflector::store();
        Self {
            reader,
            writer: std::sync::Mutex::new(Some(writer)),
            triggers: tokio::sync::broadcast::Sender::new(4096),
        }
    }

    /// The reflector writer, for the one watch that feeds the reconciler's store.
    pub fn take_writer(&self) -> Option<reflector::store::Writer<K>> {
        self.writer.lock().ok().and_then(|mut writer| writer.take())
    }

    /// Tells the reconciler a resource changed. Nobody listening (no reconciler while another
    /// replica leads) is fine.
    pub fn changed(&self, resource: Arc<K>) {
        let _ = self.triggers.send(Trigger::Changed(resource));
    }

    /// Tells the reconciler to look at everything again.
    pub fn relisted(&self) {
        let _ = self.triggers.send(Trigger::Relisted);
    }

    /// The reconciler's input: a stream of resources and the store they come from.
    pub fn input(
        &self,
    ) -> (
        impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static + use<K>,
        reflector::Store<K>,
    ) {
        let reader = self.reader.clone();
        let everything = |reader: &reflector::Store<K>| {
            reader
                .state()
                .into_iter()
                .map(|resource| Ok((*resource).clone()))
                .collect::<Vec<_>>()
        };
        let now = futures::stream::iter(everything(&reader));
        let later = futures::stream::unfold(
            (self.triggers.subscribe(), reader.clone()),
            move |(mut triggers, reader)| async move {
                use tokio::sync::broadcast::error::RecvError;
                let batch = match triggers.recv().await {
                    Ok(Trigger::Changed(resource)) => vec![Ok((*resource).clone())],
                    Ok(Trigger::Relisted) | Err(RecvError::Lagged(_)) => everything(&reader),
                    Err(RecvError::Closed) => return None,
                };
                Some((futures::stream::iter(batch), (triggers, reader)))
            },
        )
        .flatten();
        (now.chain(later), reader)
    }
}

/// Feeds a cache of custom resources and their reconciler from one watch, and wakes `gone`
/// whenever a resource may have gone (deleted, being deleted, or hidden by a relist), so that
/// the keeper looks for records whose resource is gone.
pub async fn feed_resources<K>(
    api: Api<K>,
    cache: Arc<ObjectCache<K>>,
    reconciler: Arc<ReconcilerFeed<K>>,
    gone: Arc<tokio::sync::Notify>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    let writer = reconciler.take_writer();
    feed(
        api,
        watcher::Config::default(),
        cache,
        writer,
        move |observed| {
            // Nobody listening (no reconciler while another replica leads) is fine.
            match observed {
                Observed::Relisted => {
                    gone.notify_one();
                    reconciler.relisted();
                }
                Observed::Deleted(_) => gone.notify_one(),
                Observed::Changed(resource) => {
                    if resource.meta().deletion_timestamp.is_some() {
                        gone.notify_one();
                    }
                    reconciler.changed(resource);
                }
            }
        },
    )
    .await;
}

impl<K> Default for ReconcilerFeed<K>
where
    K: Resource + Clone + Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn object(name: &str, version: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(version.into()),
                ..ObjectMeta::default()
            },
            data: Some([("v".to_owned(), value.to_owned())].into()),
            ..ConfigMap::default()
        }
    }

    fn value(cache: &ObjectCache<ConfigMap>, name: &str) -> Option<String> {
        cache
            .get("ns", name)
            .and_then(|map| map.data.as_ref()?.get("v").cloned())
    }

    #[test]
    fn an_older_copy_never_replaces_a_newer_one() {
        let cache = ObjectCache::default();
        assert!(cache.put(object("a", "10", "new")));
        assert!(!cache.put(object("a", "9", "old")));
        assert_eq!(value(&cache, "a").as_deref(), Some("new"));
        assert!(cache.put(object("a", "11", "newer")));
        assert_eq!(value(&cache, "a").as_deref(), Some("newer"));
        // A deletion seen for an older version leaves the newer copy.
        cache.remove(&object("a", "10", "new"));
        assert_eq!(value(&cache, "a").as_deref(), Some("newer"));
        cache.remove(&object("a", "12", "gone"));
        assert_eq!(value(&cache, "a"), None);
    }

    #[test]
    fn the_index_follows_changes_of_the_indexed_value() {
        let cache = ObjectCache::new(Some(|map: &ConfigMap| map.data.as_ref()?.get("v").cloned()));
        cache.put(object("a", "1", "x"));
        assert_eq!(
            cache.find("ns", "x").map(|m| m.name_any()).as_deref(),
            Some("a")
        );
        assert!(cache.find("nt", "x").is_none());
        cache.put(object("a", "2", "y"));
        assert!(cache.find("ns", "x").is_none());
        assert_eq!(
            cache.find("ns", "y").map(|m| m.name_any()).as_deref(),
            Some("a")
        );
        cache.forget("ns", "a");
        assert!(cache.find("ns", "y").is_none());
        cache.replace_all(vec![object("b", "3", "z")]);
        assert_eq!(
            cache.find("ns", "z").map(|m| m.name_any()).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn a_keyer_files_objects_under_another_namespace() {
        let cache = ObjectCache::filed_by(
            |map: &ConfigMap| {
                let owner = map.data.as_ref().and_then(|d| d.get("v")).cloned();
                (owner.unwrap_or_default(), map.name_any())
            },
            None,
        );
        cache.put(object("a", "1", "shop"));
        cache.put(object("b", "1", "bank"));
        assert!(cache.get("ns", "a").is_none());
        assert_eq!(
            cache.get("shop", "a").map(|m| m.name_any()).as_deref(),
            Some("a")
        );
        assert_eq!(cache.list(Some("bank")).len(), 1);
        cache.remove(&object("a", "2", "shop"));
        assert!(cache.get("shop", "a").is_none());
    }

    #[test]
    fn managed_fields_are_not_kept() {
        let cache = ObjectCache::default();
        let mut map = object("a", "1", "x");
        map.metadata.managed_fields = Some(vec![Default::default()]);
        cache.put(map);
        assert!(
            cache
                .get("ns", "a")
                .unwrap()
                .metadata
                .managed_fields
                .is_none()
        );
    }

    #[test]
    fn lists_one_namespace_in_name_order() {
        let cache = ObjectCache::default();
        cache.put(object("b", "1", "x"));
        cache.put(object("a", "1", "x"));
        let mut other = object("c", "1", "x");
        other.metadata.namespace = Some("nt".into());
        cache.put(other);
        let names: Vec<String> = cache
            .list(Some("ns"))
            .iter()
            .map(|m| m.name_any())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(cache.list(None).len(), 3);
        assert!(cache.list(Some("n")).is_empty());
    }
}
