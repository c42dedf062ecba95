//! The Kubernetes store's own rules, against the in-memory API server: where key records live
//! and how they are told apart.

use serde_json::json;

use super::*;
use crate::fake_api::FakeApi;
use crate::store::StoreError;

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
    assert_eq!(store.rbac_name("shop", key_id), key_id);
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
