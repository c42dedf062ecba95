//! The KmsKey reconciler against an in-memory API server (tower-test), with the real engine and
//! the real Kubernetes store on top.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kube::ResourceExt as _;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::kmskey::{Context, reconcile, sweep_abandoned};
use crate::crypto::RootKeyring;
use crate::engine::account::account_id;
use crate::engine::kms::{CreateKeyRequest, KeyState, Kms, KmsError};
use crate::engine::{Caller, Clock, Principal};
use crate::resources::kmskey::KmsKey;
use crate::store::kubernetes::{
    KEY_ID_LABEL, KmsKeys, KubernetesStore, NAMESPACE_LABEL, RESOURCE_NAME_ANNOTATION,
    RESOURCE_UID_ANNOTATION, StoreChange,
};
use crate::test_support::engine::{AllowAll, ManualClock};
use crate::test_support::fake_api::FakeApi;

const KEYS: &str = "/apis/coffer.dev/v1alpha1/namespaces/app/kmskeys";
/// Key material lives in the controller's namespace, not the user's.
const SYSTEM_NAMESPACE: &str = "coffer-system";
const SECRETS: &str = "/api/v1/namespaces/coffer-system/secrets";
const DAY: i64 = 86_400;

struct Harness {
    fake: FakeApi,
    /// The keeper of KMS keys inside the store the engine writes through.
    store: Arc<KmsKeys>,
    kms: Arc<Kms>,
    clock: Arc<ManualClock>,
    ctx: Arc<Context>,
}

fn harness() -> Harness {
    let (client, fake) = FakeApi::start();
    let kubernetes = Arc::new(KubernetesStore::new(client.clone(), SYSTEM_NAMESPACE));
    let store = Arc::clone(kubernetes.kms_keys());
    let clock = Arc::new(ManualClock(AtomicI64::new(1_800_000_000)));
    let kms = Arc::new(Kms::new(
        kubernetes,
        Arc::new(RootKeyring::generate()),
        Arc::new(AllowAll),
        clock.clone(),
        "us-east-1",
    ));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "coffer".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Arc::new(Context {
        kms: Arc::clone(&kms),
        store: Arc::clone(&store),
        client,
        recorder,
        clock: clock.clone(),
        metrics: None,
    });
    Harness {
        fake,
        store,
        kms,
        clock,
        ctx,
    }
}

fn caller() -> Caller {
    Caller {
        namespace: "app".into(),
        principal: Principal {
            arn: format!("arn:aws:iam::{}:role/serviceaccount/api", account_id("app")),
            account_id: account_id("app"),
        },
        access_key_id: None,
        secure_transport: false,
    }
}

impl Harness {
    /// `kubectl apply` of a new KmsKey.
    fn apply(&self, name: &str, spec: Value) {
        let object = self.fake.insert(
            KEYS,
            json!({
                "apiVersion": "coffer.dev/v1alpha1",
                "kind": "KmsKey",
                "metadata": {"name": name, "namespace": "app"},
                "spec": spec,
            }),
        );
        self.store.remember(serde_json::from_value(object).unwrap());
    }

    fn resource(&self, name: &str) -> Option<KmsKey> {
        self.fake
            .object(&format!("{KEYS}/{name}"))
            .map(|object| serde_json::from_value(object).unwrap())
    }

    /// `kubectl patch --type merge` of the spec: the generation moves.
    fn edit_spec(&self, name: &str, spec: Value) {
        let mut object = self.fake.object(&format!("{KEYS}/{name}")).unwrap();
        json_patch::merge(&mut object["spec"], &spec);
        let generation = object["metadata"]["generation"].as_i64().unwrap();
        object["metadata"]["generation"] = json!(generation + 1);
        self.fake
            .insert_raw(&format!("{KEYS}/{name}"), object.clone());
        self.store.remember(serde_json::from_value(object).unwrap());
    }

    /// `kubectl delete` (or the namespace's deletion, or garbage collection): no finalizer
    /// holds the object, so it is gone at once, and the watch tells the store.
    fn delete(&self, name: &str) {
        self.fake.remove(&format!("{KEYS}/{name}"));
        self.store.forget_resource("app", name);
    }

    /// What the leader does when the store hears a KmsKey went.
    async fn sweep(&self) {
        sweep_abandoned(&self.ctx).await.expect("sweeps");
    }

    /// One reconcile of the resource as the API server has it now.
    async fn reconcile(&self, name: &str) -> Result<Action, super::kmskey::ReconcileError> {
        let resource = self.resource(name).expect("the resource exists");
        self.store.remember(resource.clone());
        reconcile(Arc::new(resource), Arc::clone(&self.ctx)).await
    }

    /// Reconciles until the resource carries its key.
    async fn settle(&self, name: &str) -> KmsKey {
        for _ in 0..3 {
            self.reconcile(name).await.expect("reconciles");
        }
        self.resource(name).unwrap()
    }

    fn secret(&self, key_id: &str) -> Option<Value> {
        self.fake.object(&format!("{SECRETS}/kmskey-app.{key_id}"))
    }

    /// The requests other than reads sent since the `before`th.
    fn writes_since(&self, before: usize) -> Vec<String> {
        self.fake.requests()[before..]
            .iter()
            .filter(|r| !r.starts_with("GET"))
            .cloned()
            .collect()
    }

    fn advance(&self, seconds: i64) {
        self.clock.0.fetch_add(seconds, Ordering::SeqCst);
    }
}

fn key_id(resource: &KmsKey) -> String {
    resource.status.as_ref().unwrap().key_id.clone().unwrap()
}

async fn encrypt(kms: &Kms, key: &str, plaintext: &[u8]) -> Result<Vec<u8>, KmsError> {
    kms.encrypt(&caller(), key, plaintext, &BTreeMap::new(), None)
        .await
        .map(|(blob, _, _)| blob)
}

async fn decrypt(kms: &Kms, blob: &[u8]) -> Result<Vec<u8>, KmsError> {
    kms.decrypt(&caller(), blob, &BTreeMap::new(), None, None)
        .await
        .map(|(plain, _, _)| plain.expose().to_vec())
}

#[tokio::test]
async fn a_new_kmskey_gets_material_status_and_events() {
    let h = harness();
    h.apply(
        "app",
        json!({"aliases": ["app/db"], "description": "orders"}),
    );
    let resource = h.settle("app").await;

    let uid = resource.metadata.uid.clone().unwrap();
    assert!(
        resource.metadata.finalizers.is_none(),
        "nothing holds a deletion up"
    );
    assert_eq!(resource.labels().get(KEY_ID_LABEL), Some(&uid));
    let status = resource.status.clone().unwrap();
    assert_eq!(status.key_id.as_deref(), Some(uid.as_str()));
    assert_eq!(
        status.arn.as_deref(),
        Some(format!("arn:aws:kms:us-east-1:{}:key/{uid}", account_id("app")).as_str())
    );
    assert_eq!(
        serde_json::to_value(status.key_state).unwrap(),
        json!("Enabled")
    );
    assert_eq!(status.versions.len(), 1);
    assert_eq!(status.current_version.as_deref(), Some("1"));
    assert_eq!(status.observed_generation, Some(1));
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "True")
    );
    assert_eq!(ready.observed_generation, Some(1));

    // The companion Secret: in the controller's namespace, naming its resource without an
    // owner reference (so no deletion of the resource or its namespace can reach it), wrapped
    // material only.
    let secret = h.secret(&uid).expect("a companion Secret");
    assert_eq!(secret["type"], "coffer.dev/kmskey");
    assert_eq!(secret["metadata"]["namespace"], SYSTEM_NAMESPACE);
    assert!(secret["metadata"].get("ownerReferences").is_none());
    assert_eq!(secret["metadata"]["labels"][NAMESPACE_LABEL], "app");
    assert_eq!(secret["metadata"]["labels"][KEY_ID_LABEL], json!(uid));
    let annotations = &secret["metadata"]["annotations"];
    assert_eq!(annotations[RESOURCE_NAME_ANNOTATION], "app");
    assert_eq!(annotations[RESOURCE_UID_ANNOTATION], json!(uid));
    assert!(
        h.fake.objects_under("/api/v1/namespaces/app/").is_empty(),
        "nothing of the key in the user's namespace"
    );
    let data = secret["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["v1"]);
    use base64::Engine as _;
    let wrapped = base64::engine::general_purpose::STANDARD
        .decode(data["v1"].as_str().unwrap())
        .unwrap();
    assert!(wrapped.len() > 64, "material is wrapped, not raw");
    assert!(h.fake.event_reasons().contains(&"Created".to_owned()));

    // The key works through its alias, and what it encrypts is nowhere in the objects.
    let blob = encrypt(&h.kms, "alias/app/db", b"card 4111").await.unwrap();
    assert_eq!(decrypt(&h.kms, &blob).await.unwrap(), b"card 4111");
    let everything = serde_json::to_string(&h.fake.objects_under("/")).unwrap();
    assert!(!everything.contains("card 4111"));

    // Status is deterministic: another pass writes nothing.
    let before = h.fake.requests().len();
    h.reconcile("app").await.unwrap();
    let writes = h.writes_since(before);
    assert!(writes.is_empty(), "a settled key is left alone: {writes:?}");
}

#[tokio::test]
async fn a_reconcile_handed_a_stale_copy_repeats_no_write_and_no_event() {
    let h = harness();
    h.apply("app", json!({}));
    // The copy the controller's own watch hands over may predate the claim and the status
    // that the first pass wrote.
    let stale: KmsKey =
        serde_json::from_value(h.fake.object(&format!("{KEYS}/app")).unwrap()).unwrap();
    h.reconcile("app").await.unwrap();
    assert_eq!(h.fake.event_reasons(), ["Created"]);

    let before = h.fake.requests().len();
    reconcile(Arc::new(stale), Arc::clone(&h.ctx))
        .await
        .unwrap();
    let writes = h.writes_since(before);
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(h.fake.event_reasons(), ["Created"], "told once");
}

#[tokio::test]
async fn rotation_happens_at_the_due_time_and_is_requeued_for_it() {
    let h = harness();
    h.apply("app", json!({"rotation": {"periodDays": 90}}));
    let resource = h.settle("app").await;
    let id = key_id(&resource);
    let blob = encrypt(&h.kms, &id, b"before").await.unwrap();
    let next = resource.status.unwrap().next_rotation.unwrap();
    assert_eq!(next.0.as_second(), h.clock.now() + 90 * DAY);

    // Ten seconds before it is due, the reconciler asks to be woken just after.
    h.advance(90 * DAY - 10);
    let action = h.reconcile("app").await.unwrap();
    assert_eq!(action, Action::requeue(Duration::from_secs(11)));
    assert_eq!(h.resource("app").unwrap().status.unwrap().versions.len(), 1);

    h.advance(11);
    h.reconcile("app").await.unwrap();
    let status = h.resource("app").unwrap().status.unwrap();
    assert_eq!(status.versions.len(), 2);
    assert_eq!(status.current_version.as_deref(), Some("2"));
    assert_eq!(
        status.next_rotation.unwrap().0.as_second(),
        h.clock.now() + 90 * DAY
    );
    assert!(h.fake.event_reasons().contains(&"Rotated".to_owned()));
    assert_eq!(decrypt(&h.kms, &blob).await.unwrap(), b"before");
    let secret = h.secret(&id).unwrap();
    assert!(secret["data"].get("v2").is_some());
}

#[tokio::test]
async fn disabling_in_the_spec_disables_the_key() {
    let h = harness();
    h.apply("app", json!({}));
    let id = key_id(&h.settle("app").await);

    h.edit_spec("app", json!({"enabled": false}));
    h.reconcile("app").await.unwrap();
    let status = h.resource("app").unwrap().status.unwrap();
    assert_eq!(
        serde_json::to_value(status.key_state).unwrap(),
        json!("Disabled")
    );
    assert_eq!(status.observed_generation, Some(2));
    assert!(h.fake.event_reasons().contains(&"Disabled".to_owned()));
    assert!(matches!(
        encrypt(&h.kms, &id, b"x").await,
        Err(KmsError::Disabled(_))
    ));

    h.edit_spec("app", json!({"enabled": true}));
    h.reconcile("app").await.unwrap();
    assert!(encrypt(&h.kms, &id, b"x").await.is_ok());
}

#[tokio::test]
async fn deletion_keeps_the_material_for_the_window_and_reapplying_cancels_it() {
    let h = harness();
    h.apply("app", json!({"deletionWindowDays": 7}));
    let id = key_id(&h.settle("app").await);
    let blob = encrypt(&h.kms, &id, b"keep me").await.unwrap();

    h.delete("app");
    assert!(h.resource("app").is_none(), "the resource is gone at once");
    h.sweep().await;
    let secret = h.secret(&id).expect("the material outlives the resource");
    assert_eq!(
        secret["metadata"]["annotations"][RESOURCE_NAME_ANNOTATION],
        "app"
    );
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(record.state, KeyState::PendingDeletion);
    assert_eq!(record.deletion_date, Some(h.clock.now() + 7 * DAY));
    assert!(
        h.fake
            .event_reasons()
            .contains(&"DeletionScheduled".to_owned())
    );
    assert!(matches!(
        decrypt(&h.kms, &blob).await,
        Err(KmsError::InvalidState(_))
    ));
    // Sweeping again changes nothing and tells nothing.
    let events = h.fake.event_reasons().len();
    h.sweep().await;
    assert_eq!(h.fake.event_reasons().len(), events);

    // Re-applying the same manifest takes the key back.
    h.apply("app", json!({"deletionWindowDays": 7}));
    let again = h.settle("app").await;
    assert_eq!(key_id(&again), id);
    assert_ne!(
        again.metadata.uid.clone().unwrap(),
        id,
        "a new object, the old key"
    );
    assert_eq!(again.labels().get(KEY_ID_LABEL), Some(&id));
    assert_eq!(decrypt(&h.kms, &blob).await.unwrap(), b"keep me");
    assert!(
        h.fake
            .event_reasons()
            .contains(&"DeletionCancelled".to_owned())
    );
    let secret = h.secret(&id).unwrap();
    assert_eq!(
        secret["metadata"]["annotations"][RESOURCE_UID_ANNOTATION],
        json!(again.metadata.uid),
        "the record now names the new resource"
    );

    // Deleted for good: the material lasts until the window ends, then goes.
    let mut changes = h.store.changes();
    h.delete("app");
    h.sweep().await;
    h.advance(7 * DAY - 1);
    h.kms.run_due().await.unwrap();
    assert!(h.secret(&id).is_some());
    h.advance(1);
    h.kms.run_due().await.unwrap();
    assert!(h.secret(&id).is_none(), "the material is destroyed");
    let mut destroyed = false;
    while let Ok(change) = changes.try_recv() {
        destroyed |= change
            == StoreChange::KeyDestroyed {
                namespace: "app".into(),
                key_id: id.clone(),
                resource_name: Some("app".into()),
            };
    }
    assert!(destroyed);
}

#[tokio::test]
async fn a_resource_reapplied_before_the_sweep_keeps_its_key_without_a_deletion() {
    let h = harness();
    h.apply("app", json!({}));
    let id = key_id(&h.settle("app").await);
    let blob = encrypt(&h.kms, &id, b"never pending").await.unwrap();

    // Deleted and applied again before the leader looked.
    h.delete("app");
    h.apply("app", json!({}));
    h.sweep().await;
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(
        record.state,
        KeyState::Enabled,
        "the new resource adopts the key"
    );
    let again = h.settle("app").await;
    assert_eq!(key_id(&again), id);
    assert_eq!(decrypt(&h.kms, &blob).await.unwrap(), b"never pending");
    assert!(
        !h.fake
            .event_reasons()
            .contains(&"DeletionScheduled".to_owned())
    );
}

#[tokio::test]
async fn a_reconcile_queued_before_a_deletion_does_not_take_the_key_back() {
    let h = harness();
    h.apply("app", json!({}));
    let settled = h.settle("app").await;
    let id = key_id(&settled);
    h.delete("app");
    h.sweep().await;
    // The controller's own watch has not seen the deletion yet and hands over its last copy.
    reconcile(Arc::new(settled), Arc::clone(&h.ctx))
        .await
        .unwrap();
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(record.state, KeyState::PendingDeletion);
    assert!(
        !h.fake
            .event_reasons()
            .contains(&"DeletionCancelled".to_owned())
    );
}

#[tokio::test]
async fn an_api_write_racing_a_deletion_never_brings_the_resource_back() {
    let h = harness();
    h.apply("app", json!({}));
    let id = key_id(&h.settle("app").await);
    h.delete("app");
    // Before the sweep: the API must not re-create what the user just deleted.
    assert!(h.kms.disable_key(&caller(), &id).await.is_err());
    assert!(h.resource("app").is_none());
    h.sweep().await;
    assert!(h.resource("app").is_none());
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(record.state, KeyState::PendingDeletion);
}

#[tokio::test]
async fn a_copied_key_id_label_claims_nothing() {
    let h = harness();
    h.apply("app", json!({"description": "the real one"}));
    let id = key_id(&h.settle("app").await);

    // `kubectl get kk app -o yaml`, renamed and applied: the label comes along.
    let object = h.fake.insert(
        KEYS,
        json!({
            "apiVersion": "coffer.dev/v1alpha1",
            "kind": "KmsKey",
            "metadata": {"name": "copy", "namespace": "app", "labels": {KEY_ID_LABEL: id}},
            "spec": {"enabled": false, "description": "an impostor"},
        }),
    );
    h.store.remember(serde_json::from_value(object).unwrap());
    h.reconcile("copy").await.unwrap();
    let copy = h.resource("copy").unwrap();
    let ready = &copy.status.as_ref().unwrap().conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "KeyClaimedElsewhere")
    );
    assert!(copy.status.as_ref().unwrap().key_id.is_none());
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(
        (record.state, record.description.as_str()),
        (KeyState::Enabled, "the real one"),
        "the copy changed nothing of the key"
    );
    assert_eq!(h.store.rbac_name("app", &id), "app");
    assert_eq!(
        h.store.resource_for_key("app", &id).map(|r| r.name_any()),
        Some("app".to_owned())
    );
}

#[tokio::test]
async fn cancel_key_deletion_through_the_api_brings_the_resource_back() {
    let h = harness();
    h.apply("app", json!({}));
    let id = key_id(&h.settle("app").await);
    h.delete("app");
    h.sweep().await;
    assert!(h.resource("app").is_none());

    h.kms.cancel_key_deletion(&caller(), &id).await.unwrap();
    let back = h
        .resource("app")
        .expect("the resource is re-created under its name");
    assert_eq!(back.labels().get(KEY_ID_LABEL), Some(&id));
    assert!(
        !back.spec.enabled,
        "a cancelled key comes back disabled, as in AWS"
    );
    let secret = h.secret(&id).unwrap();
    assert_eq!(
        secret["metadata"]["annotations"][RESOURCE_UID_ANNOTATION],
        json!(back.metadata.uid)
    );

    // Its first reconcile tells why it is back.
    let before = h.fake.event_reasons().len();
    let back = h.settle("app").await;
    assert_eq!(key_id(&back), id);
    assert_eq!(h.fake.event_reasons()[before..], ["DeletionCancelled"]);
}

#[tokio::test]
async fn schedule_key_deletion_through_the_api_deletes_the_resource() {
    let h = harness();
    h.apply("app", json!({}));
    let id = key_id(&h.settle("app").await);
    h.kms
        .schedule_key_deletion(&caller(), &id, Some(7))
        .await
        .unwrap();
    assert!(h.resource("app").is_none(), "the resource goes with it");
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(record.state, KeyState::PendingDeletion);
    assert_eq!(record.deletion_date, Some(h.clock.now() + 7 * DAY));
    assert!(h.secret(&id).is_some());
}

#[tokio::test]
async fn a_conflicting_write_is_retried() {
    let h = harness();
    h.apply("app", json!({}));
    let id = key_id(&h.settle("app").await);

    // Another writer gets in first: the record write is retried from a fresh read.
    h.fake
        .conflict_next_write(&format!("{SECRETS}/kmskey-app.{id}"));
    h.edit_spec("app", json!({"description": "after a conflict"}));
    h.reconcile("app").await.unwrap();
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(record.description, "after a conflict");

    // A failed status write fails the pass, and the next one succeeds.
    h.fake.conflict_next_write(&format!("{KEYS}/app"));
    h.edit_spec("app", json!({"description": "again"}));
    assert!(h.reconcile("app").await.is_err());
    h.reconcile("app").await.unwrap();
    assert_eq!(
        h.resource("app")
            .unwrap()
            .status
            .unwrap()
            .observed_generation,
        Some(3)
    );
}

#[tokio::test]
async fn keys_made_through_the_api_appear_as_resources_and_api_changes_reach_the_spec() {
    let h = harness();
    let created = h
        .kms
        .create_key(
            &caller(),
            CreateKeyRequest {
                description: Some("made by the API".into()),
                ..CreateKeyRequest::default()
            },
        )
        .await
        .unwrap();
    let resource = h
        .resource(&created.key_id)
        .expect("a KmsKey named after the key id");
    assert_eq!(resource.labels().get(KEY_ID_LABEL), Some(&created.key_id));
    assert_eq!(
        resource.spec.description.as_deref(),
        Some("made by the API")
    );
    let resource = h.settle(&created.key_id).await;
    assert_eq!(key_id(&resource), created.key_id);
    assert_eq!(h.fake.event_reasons(), ["Created"]);

    // A kubectl key is listed by the API too; disabling it there writes the spec.
    h.apply("app", json!({}));
    let id = key_id(&h.settle("app").await);
    let listed = h.kms.list_keys(&caller(), None, None).await.unwrap();
    let ids: Vec<&str> = listed.items.iter().map(|k| k.key_id.as_str()).collect();
    assert!(ids.contains(&id.as_str()) && ids.contains(&created.key_id.as_str()));
    h.kms.disable_key(&caller(), &id).await.unwrap();
    let resource = h.resource("app").unwrap();
    assert!(!resource.spec.enabled);
    // The reconciler agrees with the API rather than undoing it.
    h.reconcile("app").await.unwrap();
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(record.state, KeyState::Disabled);
}

/// Quick API calls: the spec the store wrote back for the first is stale by the time the
/// reconciler sees it, and must not undo the second.
#[tokio::test]
async fn a_stale_spec_written_back_from_the_api_does_not_undo_a_later_api_change() {
    let h = harness();
    h.apply("app", json!({"description": "d0"}));
    let id = key_id(&h.settle("app").await);
    h.kms
        .update_key_description(&caller(), &id, "d1")
        .await
        .unwrap();
    let written_back = h.resource("app").unwrap();
    assert_eq!(written_back.spec.description.as_deref(), Some("d1"));
    h.kms
        .update_key_description(&caller(), &id, "d2")
        .await
        .unwrap();
    // The reconciler's copy is the first write-back (its cache has not seen the second yet).
    h.store.forget_resource("app", "app");
    h.store.remember(written_back.clone());
    reconcile(Arc::new(written_back), Arc::clone(&h.ctx))
        .await
        .unwrap();
    let record = h.kms.key_record("app", &id).await.unwrap().unwrap();
    assert_eq!(record.description, "d2");
    let resource = h.settle("app").await;
    assert_eq!(resource.spec.description.as_deref(), Some("d2"));
    assert_eq!(
        h.kms
            .key_record("app", &id)
            .await
            .unwrap()
            .unwrap()
            .description,
        "d2"
    );

    // A user's change after the write-back is a declaration again.
    h.edit_spec("app", json!({"description": "d3"}));
    h.settle("app").await;
    assert_eq!(
        h.kms
            .key_record("app", &id)
            .await
            .unwrap()
            .unwrap()
            .description,
        "d3"
    );
}

#[tokio::test]
async fn an_alias_two_keys_declare_stays_with_the_older_and_the_newer_says_so() {
    let h = harness();
    h.apply("first", json!({"aliases": ["shared"]}));
    let first = key_id(&h.settle("first").await);
    h.apply("second", json!({"aliases": ["shared", "own"]}));
    let second = h.settle("second").await;

    let ready = &second.status.as_ref().unwrap().conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "AliasConflict")
    );
    assert!(
        ready.message.contains("shared (held by first)"),
        "{}",
        ready.message
    );
    assert!(!ready.message.contains("own"));
    let warnings: Vec<Value> = h
        .fake
        .events()
        .into_iter()
        .filter(|event| event["reason"] == "AliasConflict")
        .collect();
    assert_eq!(warnings.len(), 1, "one Warning, not one per pass");
    assert_eq!(warnings[0]["type"], "Warning");
    let first_ready = &h.resource("first").unwrap().status.unwrap().conditions[0];
    assert_eq!(first_ready.status, "True");

    // The alias names the older key; the other alias names the newer.
    let blob = encrypt(&h.kms, "alias/shared", b"x").await.unwrap();
    let (_, used_key, _) = h
        .kms
        .decrypt(&caller(), &blob, &BTreeMap::new(), None, None)
        .await
        .unwrap();
    assert!(used_key.ends_with(&first));
    assert!(encrypt(&h.kms, "alias/own", b"x").await.is_ok());

    // Dropping the alias from the newer clears the condition.
    h.edit_spec("second", json!({"aliases": ["own"]}));
    h.reconcile("second").await.unwrap();
    let ready = &h.resource("second").unwrap().status.unwrap().conditions[0];
    assert_eq!(ready.status, "True");
}

#[tokio::test]
async fn a_rotation_made_elsewhere_reaches_status_and_events() {
    let h = harness();
    h.apply("app", json!({}));
    let id = key_id(&h.settle("app").await);
    assert!(!h.fake.event_reasons().contains(&"Rotated".to_owned()));

    // Through the API, as the Secret's watch then wakes the reconciler.
    h.kms.rotate_key_on_demand(&caller(), &id).await.unwrap();
    h.reconcile("app").await.unwrap();
    let status = h.resource("app").unwrap().status.unwrap();
    assert_eq!(status.versions.len(), 2);
    assert_eq!(
        h.fake
            .event_reasons()
            .iter()
            .filter(|reason| *reason == "Rotated")
            .count(),
        1
    );
    // Seen once, told once.
    h.reconcile("app").await.unwrap();
    assert_eq!(
        h.fake
            .event_reasons()
            .iter()
            .filter(|reason| *reason == "Rotated")
            .count(),
        1
    );
}

/// `coffer controller` whole, in process, against the in-memory API server: store watches,
/// leader election, the reconciler, the API with ServiceAccount tokens and RBAC, probes and
/// metrics, and a clean shutdown that gives the Lease up.
mod whole {
    use std::net::SocketAddr;

    use super::*;
    use crate::controller::{ControllerConfig, RootKeySource, run_with_client};

    const LEASE: &str =
        "/apis/coordination.k8s.io/v1/namespaces/coffer-system/leases/coffer-controller";

    fn free_port() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }

    fn config(listen: SocketAddr, probe_listen: SocketAddr) -> ControllerConfig {
        ControllerConfig {
            listen,
            probe_listen,
            tls: None,
            namespace: "coffer-system".into(),
            root_key: RootKeySource::Kubernetes {
                secret: "coffer-root-key".into(),
            },
            region: "us-east-1".into(),
            lease_name: "coffer-controller".into(),
            identity: "replica-1".into(),
            audience: "coffer".into(),
            credentials_lifetime: Duration::from_secs(3600),
            throttle_per_second: 0,
            throttle_burst: 0,
            audit_log: "off".into(),
            parameter_webhook: None,
            parameter_webhook_secret_file: None,
            rotation: Default::default(),
            restart_debounce: None,
            front_door: Default::default(),
        }
    }

    /// Polls `check` every 50 ms for up to 20 s.
    async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        for _ in 0..400 {
            if let Some(found) = check() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("timed out waiting until {what}");
    }

    async fn get(url: String) -> Option<(u16, String)> {
        let response = reqwest::Client::new().get(url).send().await.ok()?;
        Some((response.status().as_u16(), response.text().await.ok()?))
    }

    async fn call(api: SocketAddr, token: &str, operation: &str, body: Value) -> (u16, Value) {
        let response = reqwest::Client::new()
            .post(format!("http://{api}/"))
            .header("content-type", "application/x-amz-json-1.1")
            .header("x-amz-target", format!("TrentService.{operation}"))
            .header("authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (
            status,
            serde_json::from_str(&response.text().await.unwrap()).unwrap(),
        )
    }

    fn kmskey(name: &str, spec: Value) -> Value {
        json!({
            "apiVersion": "coffer.dev/v1alpha1",
            "kind": "KmsKey",
            "metadata": {"name": name, "namespace": "app"},
            "spec": spec,
        })
    }

    fn ready(fake: &FakeApi, name: &str) -> Option<Value> {
        let object = fake.object(&format!("{KEYS}/{name}"))?;
        let ready = object["status"]["conditions"]
            .as_array()?
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        ready.then_some(object)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_controller_reconciles_serves_and_lets_go() {
        // Shown only when the test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter("info,coffer=debug")
            .with_test_writer()
            .try_init();
        let (client, fake) = FakeApi::start();
        // A key that exists before the controller starts, and a CRD the check finds.
        fake.insert(KEYS, kmskey("before", json!({"aliases": ["app/before"]})));
        let api_token = crate::test_support::tokens::service_account_token("api");
        let nobody_token = crate::test_support::tokens::service_account_token("nobody");
        fake.accept_token(&api_token, "app", "api");
        fake.accept_token(&nobody_token, "app", "nobody");
        fake.grant("app", "api", "encrypt", "before");
        fake.grant("app", "api", "decrypt", "before");

        let (api, probes) = (free_port(), free_port());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(run_with_client(config(api, probes), client, async move {
            let _ = stopped.await;
        }));

        let mut waited = 0;
        while get(format!("http://{probes}/readyz"))
            .await
            .map(|(status, _)| status)
            != Some(200)
        {
            waited += 1;
            assert!(waited < 400, "the controller never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            fake.object("/api/v1/namespaces/coffer-system/secrets/coffer-root-key")
                .is_some(),
            "the root key Secret is created on first start"
        );
        let lease = eventually("the lease is held", || {
            fake.object(LEASE)
                .filter(|lease| lease["spec"]["holderIdentity"] == "replica-1")
        })
        .await;
        assert_eq!(lease["spec"]["holderIdentity"], "replica-1");

        // The existing key, and one applied after start (seen through the watch).
        let before = eventually("the first key is Ready", || ready(&fake, "before")).await;
        fake.insert(KEYS, kmskey("after", json!({})));
        let after = eventually("the second key is Ready", || ready(&fake, "after")).await;
        let before_id = before["status"]["keyId"].as_str().unwrap().to_owned();
        assert_ne!(before_id, after["status"]["keyId"].as_str().unwrap());
        assert!(
            fake.object(&format!("{SECRETS}/kmskey-app.{before_id}"))
                .is_some()
        );

        // A ServiceAccount token on the API; RBAC asked by the KmsKey's name.
        let (status, out) = call(
            api,
            &api_token,
            "Encrypt",
            json!({"KeyId": "alias/app/before", "Plaintext": "aGVsbG8="}),
        )
        .await;
        assert_eq!(status, 200, "{out}");
        let (status, plain) = call(
            api,
            &api_token,
            "Decrypt",
            json!({"CiphertextBlob": out["CiphertextBlob"]}),
        )
        .await;
        assert_eq!((status, &plain["Plaintext"]), (200, &json!("aGVsbG8=")));
        let (status, denied) = call(
            api,
            &nobody_token,
            "Encrypt",
            json!({"KeyId": "alias/app/before", "Plaintext": "aGVsbG8="}),
        )
        .await;
        assert_eq!(
            (status, &denied["__type"]),
            (400, &json!("AccessDeniedException"))
        );
        let forged = crate::test_support::tokens::service_account_token("forged");
        let (status, refused) = call(api, &forged, "ListKeys", json!({})).await;
        assert_eq!(
            (status, &refused["__type"]),
            (400, &json!("UnrecognizedClientException"))
        );

        // Temporary credentials for the same ServiceAccount.
        let response = reqwest::Client::new()
            .get(format!("http://{api}/v1/credentials"))
            .header("authorization", api_token.as_str())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let credentials: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert!(
            credentials["AccessKeyId"]
                .as_str()
                .unwrap()
                .starts_with("ASIA")
        );

        // A disable through kubectl, seen through the watch, reaches the API at once.
        let mut object = fake.object(&format!("{KEYS}/before")).unwrap();
        object["spec"]["enabled"] = json!(false);
        object["metadata"]["generation"] =
            json!(object["metadata"]["generation"].as_i64().unwrap() + 1);
        fake.insert_raw(&format!("{KEYS}/before"), object);
        eventually("the key shows Disabled", || {
            fake.object(&format!("{KEYS}/before"))
                .filter(|o| o["status"]["keyState"] == "Disabled")
        })
        .await;
        let (status, disabled) = call(
            api,
            &api_token,
            "Encrypt",
            json!({"KeyId": "alias/app/before", "Plaintext": "aGVsbG8="}),
        )
        .await;
        assert_eq!(
            (status, &disabled["__type"]),
            (400, &json!("DisabledException"))
        );

        // Metrics on the probe port count both sides.
        let (_, metrics) = get(format!("http://{probes}/metrics")).await.unwrap();
        assert!(
            metrics.contains(
                "coffer_controller_reconciles_total{kind=\"kmskey\",outcome=\"success\"}"
            ),
            "{metrics}"
        );
        assert!(
            metrics.contains("coffer_api_calls_total{operation=\"TrentService.Encrypt\""),
            "{metrics}"
        );
        assert!(fake.event_reasons().contains(&"Created".to_owned()));

        // kubectl delete: gone at once; the leader, told by the watch, starts the window.
        let after_id = after["status"]["keyId"].as_str().unwrap().to_owned();
        fake.remove(&format!("{KEYS}/after"));
        eventually("the deletion is scheduled", || {
            fake.event_reasons()
                .contains(&"DeletionScheduled".to_owned())
                .then_some(())
        })
        .await;
        let secret = fake
            .object(&format!("{SECRETS}/kmskey-app.{after_id}"))
            .unwrap();
        let record: Value = serde_json::from_str(
            secret["metadata"]["annotations"]["coffer.dev/key-record"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(record["state"], "PendingDeletion", "{record}");

        // Shutdown gives the Lease up for the next replica.
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(20), running)
            .await
            .expect("stops in time")
            .unwrap()
            .unwrap();
        let lease = fake.object(LEASE).unwrap();
        assert!(
            lease["spec"]["holderIdentity"]
                .as_str()
                .unwrap_or_default()
                .is_empty(),
            "{lease}"
        );
    }
}
