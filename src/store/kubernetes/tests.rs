//! The Kubernetes store's own rules, against the in-memory API server: where key records live
//! and how they are told apart.

use serde_json::json;

use super::*;
use crate::store::StoreError;
use crate::test_support::fake_api::FakeApi;

const SYSTEM: &str = "coffer-system";

fn key_record(key_id: &str) -> RecordValue {
    RecordValue {
        meta: json!({
            "keyId": key_id,
            "description": "",
            "keySpec": "SYMMETRIC_DEFAULT",
            "keyUsage": "ENCRYPT_DECRYPT",
            "origin": "AWS_KMS",
            "state": "Enabled",
            "created": 1_800_000_000,
            "versions": [{"id": 1, "created": 1_800_000_000}],
            "policy": "{}",
        }),
        sealed: BTreeMap::from([("v1".to_owned(), vec![7; 80])]),
    }
}

#[test]
fn key_ids_are_lowercase_hyphenated_uuids_only() {
    assert!(is_key_id("0b6cd1c2-52a4-4d0e-9d5e-0e2c5a0f3c11"));
    for bad in [
        "0B6CD1C2-52A4-4D0E-9D5E-0E2C5A0F3C11",
        "0b6cd1c252a44d0e9d5e0e2c5a0f3c11",
        "urn:uuid:0b6cd1c2-52a4-4d0e-9d5e-0e2c5a0f3c11",
        "../../etc",
        "",
    ] {
        assert!(!is_key_id(bad), "{bad}");
    }
    // A namespace cannot hold a dot, so (namespace, key id) pairs never share a name.
    assert_eq!(
        companion_name("shop", "0b6cd1c2-52a4-4d0e-9d5e-0e2c5a0f3c11"),
        "kmskey-shop.0b6cd1c2-52a4-4d0e-9d5e-0e2c5a0f3c11"
    );
}

#[tokio::test]
async fn records_live_in_the_system_namespace_filed_by_the_namespace_they_belong_to() {
    let (client, fake) = FakeApi::start();
    let store = KubernetesStore::new(client, SYSTEM);
    let key_id = "0b6cd1c2-52a4-4d0e-9d5e-0e2c5a0f3c11";
    // A key made through the API (no resource yet): the store makes the resource, then the
    // record.
    let shop = RecordKey::new(RecordKind::KmsKey, "shop", key_id);
    let revision = store.create(&shop, key_record(key_id)).await.unwrap();

    let path = format!("/api/v1/namespaces/{SYSTEM}/secrets/kmskey-shop.{key_id}");
    let secret = fake.object(&path).expect("the companion Secret");
    assert_eq!(secret["metadata"]["labels"][NAMESPACE_LABEL], "shop");
    assert_eq!(
        secret["metadata"]["annotations"][RESOURCE_NAME_ANNOTATION],
        key_id
    );
    let resource = fake
        .object(&format!(
            "/apis/coffer.dev/v1alpha1/namespaces/shop/kmskeys/{key_id}"
        ))
        .expect("a KmsKey named after the key id");
    assert_eq!(
        secret["metadata"]["annotations"][RESOURCE_UID_ANNOTATION],
        resource["metadata"]["uid"]
    );
    assert!(fake.objects_under("/api/v1/namespaces/shop/").is_empty());

    // Read back under its own namespace only, though every record sits in one namespace.
    let read = store.get(&shop).await.unwrap().unwrap();
    assert_eq!(read.revision, revision);
    assert_eq!(read.value.sealed["v1"], vec![7; 80]);
    let other = RecordKey::new(RecordKind::KmsKey, "other", key_id);
    assert!(store.get(&other).await.unwrap().is_none());
    assert!(
        store
            .list(RecordKind::KmsKey, Some("other"))
            .await
            .unwrap()
            .is_empty()
    );
    let listed = store.list(RecordKind::KmsKey, Some("shop")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, shop);
    assert_eq!(store.kms_keys().rbac_name("shop", key_id), key_id);
}

#[tokio::test]
async fn a_record_must_name_a_key_id_that_can_be_an_object_name() {
    let (client, _fake) = FakeApi::start();
    let store = KubernetesStore::new(client, SYSTEM);
    let key = RecordKey::new(RecordKind::KmsKey, "shop", "Not-A-Key");
    assert!(matches!(
        store.create(&key, key_record("Not-A-Key")).await,
        Err(StoreError::Corrupt(_))
    ));
}

/// A kind of record Coffer does not have, kept in ConfigMaps by a keeper written here and
/// nowhere else: adding a kind means writing its keeper (conversion, watch, cache) and
/// registering it, with no change to the KMS keepers or to the store's routing.
mod a_kind_added_without_touching_kms {
    use std::sync::Arc;

    use async_trait::async_trait;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
    use kube::runtime::watcher;
    use kube::{Api, Client, ResourceExt as _};

    use super::*;
    use crate::store::kubernetes::cache::{self, ObjectCache};
    use crate::store::kubernetes::{KindStore, api_error};

    const LABEL: &str = "coffer.dev/test-record";

    struct ConfigMapRecords {
        client: Client,
        maps: Arc<ObjectCache<ConfigMap>>,
    }

    fn record_of(map: &ConfigMap) -> Result<Record, StoreError> {
        let meta = map
            .data
            .as_ref()
            .and_then(|data| data.get("meta"))
            .ok_or_else(|| StoreError::Corrupt("no meta".into()))?;
        Ok(Record {
            revision: Revision::new(map.resource_version().unwrap_or_default()),
            value: RecordValue {
                meta: serde_json::from_str(meta)
                    .map_err(|_| StoreError::Corrupt("meta is not JSON".into()))?,
                sealed: BTreeMap::new(),
            },
        })
    }

    fn map_of(key: &RecordKey, value: &RecordValue, revision: Option<&Revision>) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(key.name.clone()),
                namespace: Some(key.namespace.clone()),
                labels: Some(BTreeMap::from([(LABEL.to_owned(), "true".to_owned())])),
                resource_version: revision.map(|revision| revision.as_str().to_owned()),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([(
                "meta".to_owned(),
                value.meta.to_string(),
            )])),
            ..ConfigMap::default()
        }
    }

    impl ConfigMapRecords {
        fn api(&self, namespace: &str) -> Api<ConfigMap> {
            Api::namespaced(self.client.clone(), namespace)
        }
    }

    #[async_trait]
    impl Store for ConfigMapRecords {
        async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
            self.maps
                .get(&key.namespace, &key.name)
                .map(|map| record_of(&map))
                .transpose()
        }

        async fn list(
            &self,
            kind: RecordKind,
            namespace: Option<&str>,
        ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
            self.maps
                .list(namespace)
                .iter()
                .map(|map| {
                    let key =
                        RecordKey::new(kind, map.namespace().unwrap_or_default(), map.name_any());
                    record_of(map).map(|record| (key, record))
                })
                .collect()
        }

        async fn create(
            &self,
            key: &RecordKey,
            value: RecordValue,
        ) -> Result<Revision, StoreError> {
            let made = self
                .api(&key.namespace)
                .create(&PostParams::default(), &map_of(key, &value, None))
                .await
                .map_err(|err| api_error(err, &key.to_string()))?;
            let revision = Revision::new(made.resource_version().unwrap_or_default());
            self.maps.put(made);
            Ok(revision)
        }

        async fn update(
            &self,
            key: &RecordKey,
            expected: &Revision,
            value: RecordValue,
        ) -> Result<Revision, StoreError> {
            let written = self
                .api(&key.namespace)
                .replace(
                    &key.name,
                    &PostParams::default(),
                    &map_of(key, &value, Some(expected)),
                )
                .await
                .map_err(|err| api_error(err, &key.to_string()))?;
            let revision = Revision::new(written.resource_version().unwrap_or_default());
            self.maps.put(written);
            Ok(revision)
        }

        async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    resource_version: Some(expected.as_str().to_owned()),
                    uid: None,
                }),
                ..DeleteParams::default()
            };
            self.api(&key.namespace)
                .delete(&key.name, &params)
                .await
                .map_err(|err| api_error(err, &key.to_string()))?;
            self.maps.forget(&key.namespace, &key.name);
            Ok(())
        }
    }

    #[async_trait]
    impl KindStore for ConfigMapRecords {
        fn kind(&self) -> RecordKind {
            RecordKind::Parameter
        }

        async fn watch(self: Arc<Self>) {
            cache::feed(
                Api::<ConfigMap>::all(self.client.clone()),
                watcher::Config::default().labels(LABEL),
                Arc::clone(&self.maps),
                None,
                |_| {},
            )
            .await;
        }

        async fn synced(&self) {
            let _ = self.maps.synced().wait_for(|synced| *synced).await;
        }
    }

    #[tokio::test]
    async fn records_of_the_new_kind_go_through_the_store() {
        let (client, fake) = FakeApi::start();
        let keeper = Arc::new(ConfigMapRecords {
            client: client.clone(),
            maps: Arc::new(ObjectCache::default()),
        });
        let store = Arc::new(KubernetesStore::new(client, SYSTEM).with_kind(keeper));
        tokio::spawn(Arc::clone(&store).run());
        store.synced().await;

        let key = RecordKey::new(RecordKind::Parameter, "team", "greeting");
        let value = |text: &str| RecordValue {
            meta: json!({ "value": text }),
            sealed: BTreeMap::new(),
        };
        let first = store.create(&key, value("hello")).await.unwrap();
        assert!(
            fake.object("/api/v1/namespaces/team/configmaps/greeting")
                .is_some()
        );
        let read = store.get(&key).await.unwrap().unwrap();
        assert_eq!(read.value.meta["value"], "hello");
        assert_eq!(read.revision, first);

        let second = store.update(&key, &first, value("bonjour")).await.unwrap();
        assert!(matches!(
            store.update(&key, &first, value("stale")).await,
            Err(StoreError::Conflict(_))
        ));
        let listed = store
            .list(RecordKind::Parameter, Some("team"))
            .await
            .unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.value.meta["value"], "bonjour");
        // The engine's retry loop works on it as on any kind.
        crate::store::modify::<_, _, StoreError>(store.as_ref(), &key, |current| {
            assert_eq!(current.unwrap().revision, second);
            Ok(crate::store::Change::Delete)
        })
        .await
        .unwrap();
        assert!(store.get(&key).await.unwrap().is_none());
        // KMS records are still the KMS keepers', alongside.
        assert!(
            store
                .list(RecordKind::KmsKey, None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            store
                .get(&RecordKey::new(RecordKind::AccessKey, "team", "x"))
                .await,
            Err(StoreError::Backend(_))
        ));
    }
}
