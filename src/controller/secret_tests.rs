//! The Secret reconciler and the secrets' keeper against an in-memory API server, with the real
//! engines on top: one source of truth between the resource and the API, deletion through
//! either side, sources, and no plaintext in any object.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use base64::Engine as _;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::secret::{Context, reconcile, sweep_abandoned};
use crate::crypto::{RootKeyring, SecretBytes};
use crate::engine::account::account_id;
use crate::engine::kms::Kms;
use crate::engine::secrets::{NewSecret, SecretUpdate, SecretValue, Secrets, SecretsError};
use crate::engine::{Caller, Clock, Principal};
use crate::resources::secret::{SECRET_NAME_ANNOTATION, Secret, resource_name_for};
use crate::store::kubernetes::KubernetesStore;
use crate::store::kubernetes::secrets::{SecretRecords, record_name};
use crate::test_support::engine::{AllowAll, ManualClock};
use crate::test_support::fake_api::FakeApi;

const RESOURCES: &str = "/apis/coffer.dev/v1alpha1/namespaces/app/secrets";
const SYSTEM_NAMESPACE: &str = "coffer-system";
const SYSTEM_SECRETS: &str = "/api/v1/namespaces/coffer-system/secrets";
const DAY: i64 = 86_400;

struct Harness {
    fake: FakeApi,
    store: Arc<SecretRecords>,
    secrets: Arc<Secrets>,
    kms: Arc<Kms>,
    clock: Arc<ManualClock>,
    ctx: Arc<Context>,
}

fn harness() -> Harness {
    let (client, fake) = FakeApi::start();
    let kubernetes = Arc::new(KubernetesStore::new(client.clone(), SYSTEM_NAMESPACE));
    let store = Arc::clone(kubernetes.secrets());
    let clock = Arc::new(ManualClock(AtomicI64::new(1_800_000_000)));
    let kms = Arc::new(
        Kms::new(
            kubernetes.clone(),
            Arc::new(RootKeyring::generate()),
            Arc::new(AllowAll),
            clock.clone(),
            "us-east-1",
        )
        .with_key_directory(Arc::clone(kubernetes.kms_keys()) as _),
    );
    let secrets = Arc::new(
        Secrets::new(
            kubernetes,
            Arc::clone(&kms),
            Arc::new(AllowAll),
            clock.clone(),
        )
        .with_directory(Arc::clone(&store) as _)
        .with_rotation(
            crate::rotation::standalone_registry(),
            4,
            std::time::Duration::ZERO,
        ),
    );
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "coffer".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Arc::new(Context {
        secrets: Arc::clone(&secrets),
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
        secrets,
        kms,
        clock,
        ctx,
    }
}

fn caller_in(namespace: &str, name: &str) -> Caller {
    Caller {
        namespace: namespace.into(),
        principal: Principal {
            arn: format!(
                "arn:aws:iam::{}:role/serviceaccount/{name}",
                account_id(namespace)
            ),
            account_id: account_id(namespace),
        },
        access_key_id: None,
        secure_transport: true,
    }
}

fn caller() -> Caller {
    caller_in("app", "api")
}

fn text(value: &str) -> SecretValue {
    SecretValue {
        bytes: SecretBytes::from_slice(value.as_bytes()),
        binary: false,
    }
}

impl Harness {
    /// `kubectl apply` of a new Secret.
    fn apply(&self, name: &str, spec: Value) {
        self.apply_with(name, spec, json!({}));
    }

    fn apply_with(&self, name: &str, spec: Value, annotations: Value) {
        let object = self.fake.insert(
            RESOURCES,
            json!({
                "apiVersion": "coffer.dev/v1alpha1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": "app", "annotations": annotations},
                "spec": spec,
            }),
        );
        self.store.remember(serde_json::from_value(object).unwrap());
    }

    fn resource(&self, name: &str) -> Option<Secret> {
        self.fake
            .object(&format!("{RESOURCES}/{name}"))
            .map(|object| serde_json::from_value(object).unwrap())
    }

    /// `kubectl delete`: no finalizer holds the object, so it is gone at once.
    fn delete(&self, name: &str) {
        self.fake.remove(&format!("{RESOURCES}/{name}"));
        self.store.forget_resource("app", name);
    }

    async fn reconcile(&self, name: &str) {
        let resource = self.resource(name).expect("the resource exists");
        self.store.remember(resource.clone());
        reconcile(Arc::new(resource), Arc::clone(&self.ctx))
            .await
            .expect("reconciles");
    }

    async fn settle(&self, name: &str) -> Secret {
        for _ in 0..2 {
            self.reconcile(name).await;
        }
        self.resource(name).unwrap()
    }

    async fn value(&self, secret_id: &str) -> Result<String, SecretsError> {
        self.secrets
            .get_secret_value(&caller(), secret_id, None, None)
            .await
            .map(|value| String::from_utf8(value.value.bytes.expose().to_vec()).unwrap())
    }

    /// Every object the API server holds, as text, to look for plaintext in.
    fn everything(&self) -> String {
        self.fake
            .objects_under("/")
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn assert_nowhere(&self, plaintext: &str) {
        let everything = self.everything();
        assert!(!everything.contains(plaintext), "plaintext in an object");
        let encoded = base64::engine::general_purpose::STANDARD.encode(plaintext);
        assert!(
            !everything.contains(&encoded),
            "base64 plaintext in an object"
        );
    }

    fn value_objects(&self) -> Vec<Value> {
        self.fake
            .objects_under(SYSTEM_SECRETS)
            .into_iter()
            .filter(|object| object["type"] == "coffer.dev/secret-value")
            .collect()
    }
}

#[tokio::test]
async fn an_applied_secret_is_made_with_a_generated_value_shown_in_status_but_stored_sealed() {
    let h = harness();
    h.apply(
        "db",
        json!({"generate": {"length": 40}, "description": "orders"}),
    );
    let resource = h.settle("db").await;
    let status = resource.status.clone().expect("a status");
    let arn = status.arn.clone().expect("an ARN");
    assert!(arn.starts_with(&format!(
        "arn:aws:secretsmanager:us-east-1:{}:secret:db-",
        account_id("app")
    )));
    let current = status.current_version.clone().expect("a current version");
    assert_eq!(status.versions.len(), 1);
    assert_eq!(status.versions[0].version_id, current);
    assert_eq!(status.versions[0].stages, ["AWSCURRENT"]);
    assert_eq!(status.observed_generation, Some(1));
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Available")
    );
    assert!(
        resource.metadata.finalizers.is_none(),
        "nothing holds a deletion up"
    );

    // The API sees the same secret, by name and by ARN.
    let value = h.value("db").await.unwrap();
    assert_eq!(value.chars().count(), 40);
    assert_eq!(h.value(&arn).await.unwrap(), value);
    let described = h.secrets.describe_secret(&caller(), "db").await.unwrap();
    assert_eq!(described.arn, arn);
    assert_eq!(described.description, "orders");

    // Stored in the controller's namespace, sealed; nothing in the user's namespace.
    let record = h
        .fake
        .object(&format!("{SYSTEM_SECRETS}/{}", record_name("app", "db")))
        .expect("the record");
    assert_eq!(record["type"], "coffer.dev/secret");
    assert!(record.get("data").is_none_or(Value::is_null));
    assert_eq!(h.value_objects().len(), 1);
    assert_eq!(h.value_objects()[0]["immutable"], true);
    assert!(h.fake.objects_under("/api/v1/namespaces/app/").is_empty());
    h.assert_nowhere(&value);
    assert!(h.fake.event_reasons().contains(&"Created".to_owned()));

    // Reconciling again changes nothing: the status is deterministic and no value is added.
    let before = h.fake.requests().len();
    h.reconcile("db").await;
    let writes: Vec<String> = h.fake.requests()[before..]
        .iter()
        .filter(|request| !request.starts_with("GET"))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");
    assert_eq!(h.value("db").await.unwrap(), value);
}

#[tokio::test]
async fn a_secret_made_through_the_api_appears_as_a_resource_and_api_changes_reach_the_spec() {
    let h = harness();
    let created = h
        .secrets
        .create_secret(
            &caller(),
            NewSecret {
                name: "prod/api/Token".into(),
                description: Some("from the API".into()),
                kms_key_id: None,
                value: Some(text("e2e-plain-api-token")),
                client_request_token: None,
                tags: Vec::new(),
            },
        )
        .await
        .unwrap();
    let resource_name = resource_name_for("prod/api/Token");
    assert!(resource_name.starts_with("sm-prod-api-token-"));
    let resource = h
        .resource(&resource_name)
        .expect("a resource for the new secret");
    assert_eq!(
        resource.metadata.annotations.as_ref().unwrap()[SECRET_NAME_ANNOTATION],
        "prod/api/Token"
    );
    assert_eq!(resource.spec.description.as_deref(), Some("from the API"));
    assert!(resource.spec.generate.is_none() && resource.spec.from_secret.is_none());
    let resource = h.settle(&resource_name).await;
    let status = resource.status.unwrap();
    assert_eq!(status.arn.as_deref(), Some(created.arn.as_str()));
    assert_eq!(status.current_version, created.version_id);
    // Reconciling the made resource did not add a version or undo anything.
    assert_eq!(
        h.value("prod/api/Token").await.unwrap(),
        "e2e-plain-api-token"
    );

    // A new value through the API: the status follows; the old value is AWSPREVIOUS.
    let put = h
        .secrets
        .put_secret_value(
            &caller(),
            "prod/api/Token",
            None,
            text("e2e-plain-second"),
            Vec::new(),
        )
        .await
        .unwrap();
    let status = h.settle(&resource_name).await.status.unwrap();
    assert_eq!(status.current_version, put.version_id);
    let previous = status
        .versions
        .iter()
        .find(|version| version.stages == ["AWSPREVIOUS"])
        .expect("the old version is AWSPREVIOUS");
    assert_eq!(Some(&previous.version_id), created.version_id.as_ref());

    // Description, key and policy changed through the API are written into the spec, and the
    // reconciler keeps them.
    h.secrets
        .update_secret(
            &caller(),
            "prod/api/Token",
            SecretUpdate {
                description: Some("changed".into()),
                ..SecretUpdate::default()
            },
        )
        .await
        .unwrap();
    let policy = json!({"Version": "2012-10-17", "Statement": [{
        "Effect": "Deny", "Principal": "*", "Action": "secretsmanager:DeleteSecret", "Resource": "*"
    }]})
    .to_string();
    h.secrets
        .put_resource_policy(&caller(), "prod/api/Token", &policy, true)
        .await
        .unwrap();
    let resource = h.settle(&resource_name).await;
    assert_eq!(resource.spec.description.as_deref(), Some("changed"));
    assert_eq!(
        resource.spec.resource_policy_document.as_deref(),
        Some(policy.as_str())
    );
    let described = h
        .secrets
        .describe_secret(&caller(), "prod/api/Token")
        .await
        .unwrap();
    assert_eq!(described.description, "changed");
    h.assert_nowhere("e2e-plain-api-token");
    h.assert_nowhere("e2e-plain-second");
}

#[tokio::test]
async fn deleting_the_resource_schedules_the_deletion_and_reapplying_restores_it() {
    let h = harness();
    h.apply("db", json!({"generate": {}, "recoveryWindowDays": 7}));
    let status = h.settle("db").await.status.unwrap();
    let value = h.value("db").await.unwrap();

    h.delete("db");
    sweep_abandoned(&h.ctx).await.unwrap();
    let described = h.secrets.describe_secret(&caller(), "db").await.unwrap();
    assert_eq!(described.deleted, Some(h.clock.now()));
    let record = h
        .secrets
        .declared_record("app", "db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.purge_after, Some(h.clock.now() + 7 * DAY));
    assert!(matches!(
        h.value("db").await,
        Err(SecretsError::InvalidRequest(_))
    ));
    assert!(
        h.fake
            .event_reasons()
            .contains(&"DeletionScheduled".to_owned())
    );
    // Sweeping again changes nothing.
    sweep_abandoned(&h.ctx).await.unwrap();
    assert_eq!(
        h.secrets
            .declared_record("app", "db")
            .await
            .unwrap()
            .unwrap(),
        record
    );

    // Re-applied within the window: the same secret comes back, value and all.
    h.clock.0.fetch_add(3 * DAY, Ordering::SeqCst);
    h.apply("db", json!({"generate": {}, "recoveryWindowDays": 7}));
    let restored = h.settle("db").await.status.unwrap();
    assert_eq!(restored.arn, status.arn);
    assert_eq!(restored.current_version, status.current_version);
    assert_eq!(restored.deletion_date, None);
    assert_eq!(h.value("db").await.unwrap(), value);
    assert!(h.fake.event_reasons().contains(&"Restored".to_owned()));

    // Deleted again and left: the purge takes it after the window, not before.
    h.delete("db");
    sweep_abandoned(&h.ctx).await.unwrap();
    h.clock.0.fetch_add(7 * DAY - 1, Ordering::SeqCst);
    h.secrets.purge_due().await.unwrap();
    assert!(
        h.secrets
            .declared_record("app", "db")
            .await
            .unwrap()
            .is_some()
    );
    h.clock.0.fetch_add(1, Ordering::SeqCst);
    h.secrets.purge_due().await.unwrap();
    assert!(
        h.secrets
            .declared_record("app", "db")
            .await
            .unwrap()
            .is_none()
    );
    assert!(h.value_objects().is_empty(), "the purge takes every value");
}

#[tokio::test]
async fn deleting_through_the_api_deletes_the_resource_and_restoring_brings_it_back() {
    let h = harness();
    h.apply("db", json!({"generate": {}}));
    let arn = h.settle("db").await.status.unwrap().arn.unwrap();
    let value = h.value("db").await.unwrap();

    h.secrets
        .delete_secret(&caller(), "db", Some(7), false)
        .await
        .unwrap();
    assert!(
        h.resource("db").is_none(),
        "DeleteSecret deletes the resource"
    );
    // The resource's deletion, once seen, changes nothing more.
    h.store.forget_resource("app", "db");
    sweep_abandoned(&h.ctx).await.unwrap();
    let record = h
        .secrets
        .declared_record("app", "db")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.purge_after, Some(h.clock.now() + 7 * DAY));

    h.secrets.restore_secret(&caller(), "db").await.unwrap();
    let resource = h
        .resource("db")
        .expect("RestoreSecret makes the resource again");
    assert!(
        resource.spec.generate.is_none(),
        "the value stays with the API"
    );
    let status = h.settle("db").await.status.unwrap();
    assert_eq!(status.arn.as_deref(), Some(arn.as_str()));
    assert_eq!(h.value("db").await.unwrap(), value);

    // Forced deletion: resource, record and values go at once.
    h.secrets
        .delete_secret(&caller(), "db", None, true)
        .await
        .unwrap();
    assert!(h.resource("db").is_none());
    assert!(
        h.secrets
            .declared_record("app", "db")
            .await
            .unwrap()
            .is_none()
    );
    assert!(h.value_objects().is_empty());
}

#[tokio::test]
async fn a_core_secret_is_imported_and_imported_again_when_it_changes() {
    let h = harness();
    let core = |value: &str| {
        json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "legacy", "namespace": "app"},
            "data": {"token": base64::engine::general_purpose::STANDARD.encode(value)},
        })
    };
    h.apply(
        "imported",
        json!({"fromSecret": {"name": "legacy", "key": "token"}}),
    );
    h.reconcile("imported").await;
    let status = h.resource("imported").unwrap().status.unwrap();
    assert_eq!(status.conditions[0].reason, "SourceMissing");
    assert_eq!(status.conditions[0].status, "False");

    h.fake
        .insert("/api/v1/namespaces/app/secrets", core("e2e-plain-first"));
    let status = h.settle("imported").await.status.unwrap();
    assert_eq!(status.conditions[0].reason, "Available");
    assert_eq!(h.value("imported").await.unwrap(), "e2e-plain-first");
    let first = status.current_version.clone();

    // Unchanged: nothing new.
    h.reconcile("imported").await;
    assert_eq!(
        h.resource("imported")
            .unwrap()
            .status
            .unwrap()
            .current_version,
        first
    );
    // Changed: a new version.
    h.fake.insert_raw(
        "/api/v1/namespaces/app/secrets/legacy",
        core("e2e-plain-second"),
    );
    let status = h.settle("imported").await.status.unwrap();
    assert_ne!(status.current_version, first);
    assert_eq!(h.value("imported").await.unwrap(), "e2e-plain-second");
    // A value put through the API stays until the source changes again.
    h.secrets
        .put_secret_value(
            &caller(),
            "imported",
            None,
            text("e2e-plain-api"),
            Vec::new(),
        )
        .await
        .unwrap();
    h.settle("imported").await;
    assert_eq!(h.value("imported").await.unwrap(), "e2e-plain-api");
    h.fake.insert_raw(
        "/api/v1/namespaces/app/secrets/legacy",
        core("e2e-plain-third"),
    );
    h.settle("imported").await;
    assert_eq!(h.value("imported").await.unwrap(), "e2e-plain-third");
    // The source may go once imported.
    h.fake.remove("/api/v1/namespaces/app/secrets/legacy");
    let status = h.settle("imported").await.status.unwrap();
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(h.value("imported").await.unwrap(), "e2e-plain-third");
    // Nothing of the value in Coffer's own objects (the user's own core Secret is gone).
    h.assert_nowhere("e2e-plain-first");
    h.assert_nowhere("e2e-plain-second");
    h.assert_nowhere("e2e-plain-third");
}

#[tokio::test]
async fn many_large_versions_fit_because_each_value_has_an_object_of_its_own() {
    let h = harness();
    h.apply("big", json!({}));
    h.settle("big").await;
    // 103 values of 20 kB: twice what one object may hold.
    let big = |n: usize| format!("{n:05}{}", "x".repeat(20_000));
    for n in 0..103 {
        h.secrets
            .put_secret_value(&caller(), "big", None, text(&big(n)), Vec::new())
            .await
            .unwrap();
        h.clock.0.fetch_add(1, Ordering::SeqCst);
    }
    assert_eq!(h.value("big").await.unwrap(), big(102));
    let versions = h
        .secrets
        .declared_record("app", "big")
        .await
        .unwrap()
        .unwrap()
        .versions
        .len();
    // AWSCURRENT, AWSPREVIOUS and 100 deprecated versions are kept; older ones are pruned
    // along with their values.
    assert_eq!(versions, 102);
    assert_eq!(h.value_objects().len(), 102);
    let status = h.settle("big").await.status.unwrap();
    assert_eq!(status.versions.len(), 2);
}

#[tokio::test]
async fn values_left_by_a_lost_race_are_swept_and_named_ones_kept() {
    let h = harness();
    h.apply("db", json!({"generate": {}}));
    h.settle("db").await;
    // A write whose record loses the race leaves its new value object behind; the retry
    // makes its own.
    let path = format!("{SYSTEM_SECRETS}/{}", record_name("app", "db"));
    h.fake.conflict_next_write(&path);
    h.secrets
        .put_secret_value(&caller(), "db", None, text("e2e-plain-raced"), Vec::new())
        .await
        .unwrap();
    assert_eq!(h.value("db").await.unwrap(), "e2e-plain-raced");
    let objects = h.value_objects().len();
    assert!(objects >= 2);
    let swept = h.store.sweep_orphan_values(h.clock.now()).await.unwrap();
    assert_eq!(h.value_objects().len(), objects - swept);
    assert_eq!(h.value_objects().len(), 2, "the two named versions stay");
    assert_eq!(h.value("db").await.unwrap(), "e2e-plain-raced");
    let previous = h
        .secrets
        .get_secret_value(&caller(), "db", None, Some("AWSPREVIOUS"))
        .await
        .unwrap();
    assert!(!previous.value.bytes.is_empty());
}

#[tokio::test]
async fn another_namespace_reads_only_what_the_resource_policy_shares_and_never_by_its_own_rbac() {
    let h = harness();
    // A customer key whose policy lets the reading namespace decrypt.
    let key_policy = json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "own", "Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{}:root", account_id("app"))}, "Action": "kms:*", "Resource": "*"},
        {"Sid": "batch", "Effect": "Allow", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
         "Condition": {"StringEquals": {"kms:CallerAccount": account_id("batch")}}},
    ]})
    .to_string();
    let key = h
        .kms
        .create_key(
            &caller(),
            crate::engine::kms::CreateKeyRequest {
                policy: Some(key_policy),
                ..crate::engine::kms::CreateKeyRequest::default()
            },
        )
        .await
        .unwrap();
    let key_id = key.key_id.clone();
    h.apply(
        "shared",
        json!({"kmsKeyRef": {"name": key_id}, "generate": {}, "resourcePolicy": {"allowedNamespaces": ["batch"]}}),
    );
    h.apply(
        "private",
        json!({"kmsKeyRef": {"name": key_id}, "generate": {}}),
    );
    let shared = h.settle("shared").await.status.unwrap().arn.unwrap();
    let private = h.settle("private").await.status.unwrap().arn.unwrap();
    let reader = caller_in("batch", "job");
    let read = h
        .secrets
        .get_secret_value(&reader, &shared, None, None)
        .await
        .unwrap();
    assert_eq!(
        read.value.bytes.expose(),
        h.value("shared").await.unwrap().as_bytes()
    );
    // The reader's own account allows everything (AllowAll), yet that never reaches across.
    assert!(matches!(
        h.secrets
            .get_secret_value(&reader, &private, None, None)
            .await,
        Err(SecretsError::AccessDenied(_))
    ));
    // Shared for reading, not for writing.
    assert!(matches!(
        h.secrets
            .put_secret_value(
                &reader,
                &shared,
                None,
                text("e2e-plain-intruder"),
                Vec::new()
            )
            .await,
        Err(SecretsError::AccessDenied(_))
    ));
    // A bare name resolves in the reader's own namespace only.
    assert!(matches!(
        h.secrets
            .get_secret_value(&reader, "shared", None, None)
            .await,
        Err(SecretsError::NotFound(_))
    ));
}

#[tokio::test]
async fn a_spec_that_cannot_be_applied_says_why_and_keeps_the_secret() {
    let h = harness();
    h.apply("db", json!({"generate": {}}));
    h.settle("db").await;
    let value = h.value("db").await.unwrap();
    let mut object = h.fake.object(&format!("{RESOURCES}/db")).unwrap();
    object["spec"]["kmsKeyRef"] = json!({"name": "alias/missing"});
    object["metadata"]["generation"] = json!(2);
    h.fake.insert_raw(&format!("{RESOURCES}/db"), object);
    h.reconcile("db").await;
    let status = h.resource("db").unwrap().status.unwrap();
    assert_eq!(status.conditions[0].status, "False");
    assert_eq!(status.conditions[0].reason, "SpecRefused");
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(h.value("db").await.unwrap(), value);

    // A resource named sm-... without the annotation stands for nothing.
    h.apply("sm-stray", json!({}));
    h.reconcile("sm-stray").await;
    let status = h.resource("sm-stray").unwrap().status.unwrap();
    assert_eq!(status.conditions[0].reason, "InvalidName");
    assert!(
        h.secrets
            .declared_record("app", "sm-stray")
            .await
            .unwrap()
            .is_none()
    );
    // One named for another secret through the annotation is refused too.
    h.apply_with(
        "plain",
        json!({}),
        json!({SECRET_NAME_ANNOTATION: "prod/other"}),
    );
    h.reconcile("plain").await;
    let status = h.resource("plain").unwrap().status.unwrap();
    assert_eq!(status.conditions[0].reason, "InvalidName");
}

#[tokio::test]
async fn a_sealed_value_opens_only_for_its_namespace_and_name_and_a_new_blob_is_a_new_version() {
    use crate::crypto::{SealTarget, sealed};
    let h = harness();
    let key = h
        .kms
        .create_key(
            &caller(),
            crate::engine::kms::CreateKeyRequest {
                key_spec: Some("RSA_2048".into()),
                key_usage: Some("ENCRYPT_DECRYPT".into()),
                ..crate::engine::kms::CreateKeyRequest::default()
            },
        )
        .await
        .unwrap();
    let public = h.kms.get_public_key(&caller(), &key.key_id).await.unwrap();
    let spec = public.key_spec.asymmetric().unwrap();
    let seal_for = |name: &str, plaintext: &str| {
        let target = SealTarget {
            namespace: "app",
            resource_name: name,
        };
        let blob = sealed::seal(
            &public.public_key,
            spec,
            &key.key_id,
            &target,
            plaintext.as_bytes(),
        )
        .unwrap();
        base64::engine::general_purpose::STANDARD.encode(blob)
    };
    let first = seal_for("sealed", "e2e-plain-sealed-first");
    h.apply("sealed", json!({"sealedValue": first}));
    let status = h.settle("sealed").await.status.unwrap();
    assert_eq!(status.conditions[0].reason, "Available");
    assert_eq!(h.value("sealed").await.unwrap(), "e2e-plain-sealed-first");
    let version = status.current_version.clone();

    // The same blob under another name opens nowhere: no value, and the status says why.
    h.apply("elsewhere", json!({"sealedValue": first}));
    h.reconcile("elsewhere").await;
    let status = h.resource("elsewhere").unwrap().status.unwrap();
    assert_eq!(
        (
            status.conditions[0].status.as_str(),
            status.conditions[0].reason.as_str()
        ),
        ("False", "SealedValueRefused")
    );
    assert!(h.value("elsewhere").await.is_err());
    assert!(
        h.fake
            .event_reasons()
            .contains(&"SealedValueRefused".to_owned())
    );

    // Re-reconciling the same blob adds nothing; a new blob is a new version.
    h.reconcile("sealed").await;
    assert_eq!(
        h.resource("sealed")
            .unwrap()
            .status
            .unwrap()
            .current_version,
        version
    );
    let mut object = h.fake.object(&format!("{RESOURCES}/sealed")).unwrap();
    object["spec"]["sealedValue"] = json!(seal_for("sealed", "e2e-plain-sealed-second"));
    object["metadata"]["generation"] = json!(2);
    h.fake.insert_raw(&format!("{RESOURCES}/sealed"), object);
    let status = h.settle("sealed").await.status.unwrap();
    assert_ne!(status.current_version, version);
    assert_eq!(h.value("sealed").await.unwrap(), "e2e-plain-sealed-second");
    h.assert_nowhere("e2e-plain-sealed-first");
    h.assert_nowhere("e2e-plain-sealed-second");
}

#[tokio::test]
async fn a_resource_made_for_an_api_record_waits_for_it_and_then_stands_on_its_own() {
    use crate::store::kubernetes::versioned::MADE_FOR_RECORD_ANNOTATION;
    let h = harness();
    h.apply_with(
        "made",
        json!({}),
        json!({MADE_FOR_RECORD_ANNOTATION: "true"}),
    );
    let mut object = h.fake.object(&format!("{RESOURCES}/made")).unwrap();
    let now = k8s_openapi::jiff::Timestamp::from_second(h.clock.now()).unwrap();
    object["metadata"]["creationTimestamp"] = json!(now.to_string());
    h.fake.insert_raw(&format!("{RESOURCES}/made"), object);
    // The record the API is writing is not there yet: the reconciler makes no secret of its own.
    h.reconcile("made").await;
    assert!(
        h.secrets
            .declared_record("app", "made")
            .await
            .unwrap()
            .is_none()
    );
    assert!(h.resource("made").unwrap().status.is_none());
    // The API call failed in between: after a while the resource stands for itself.
    h.clock.0.fetch_add(61, Ordering::SeqCst);
    h.reconcile("made").await;
    assert!(
        h.secrets
            .declared_record("app", "made")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test]
async fn a_declared_rotation_is_scheduled_and_a_rotation_shows_in_status_and_events() {
    let h = harness();
    h.apply(
        "db",
        json!({"generate": {"length": 24}, "rotation": {"schedule": "rate(1 days)", "duration": "2h"}}),
    );
    let resource = h.settle("db").await;
    let status = resource.status.clone().unwrap();
    let rotation = status.rotation.clone().expect("rotation in status");
    assert_eq!(
        rotation.state,
        crate::resources::secret::RotationState::Idle
    );
    assert!(rotation.next_rotation_date.is_some());
    let condition = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Rotation")
        .expect("a Rotation condition");
    assert_eq!(
        (condition.status.as_str(), condition.reason.as_str()),
        ("True", "Scheduled")
    );
    let described = h.secrets.describe_secret(&caller(), "db").await.unwrap();
    assert!(described.rotation.enabled);
    assert_eq!(
        described
            .rotation
            .rules
            .and_then(|rules| rules.schedule_expression)
            .as_deref(),
        Some("rate(1 days)")
    );

    let before = h.value("db").await.unwrap();
    let token = h
        .secrets
        .rotate_secret(&caller(), "db", Default::default())
        .await
        .unwrap()
        .version_id
        .unwrap();
    h.secrets.rotate_due().await.unwrap();
    for _ in 0..500 {
        let described = h.secrets.describe_secret(&caller(), "db").await.unwrap();
        if described.rotation.in_progress.is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let resource = h.settle("db").await;
    let status = resource.status.clone().unwrap();
    assert_eq!(status.current_version.as_deref(), Some(token.as_str()));
    let rotation = status.rotation.unwrap();
    assert!(rotation.last_rotated_date.is_some());
    assert_eq!(rotation.pending_version_id, None);
    let after = h.value("db").await.unwrap();
    assert_ne!(after, before);
    assert_eq!(
        after.chars().count(),
        24,
        "the spec's generate settings rule the rotation"
    );
    assert!(h.fake.event_reasons().contains(&"Rotated".to_owned()));
    h.assert_nowhere(&after);
    h.assert_nowhere(&before);
}

fn decoded(object: &Value, key: &str) -> String {
    let text = object["data"][key].as_str().expect("a data key");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

const CORE_DB: &str = "/api/v1/namespaces/app/secrets/db";

#[tokio::test]
async fn a_synced_copy_follows_the_value_and_goes_when_sync_is_turned_off() {
    let h = harness();
    h.apply(
        "db",
        json!({
            "generate": {"template": "{\"username\":\"app\"}", "generateStringKey": "password"},
            "sync": {"type": "kubernetes.io/basic-auth", "labels": {"team": "shop"}},
        }),
    );
    let resource = h.settle("db").await;
    let status = resource.status.clone().unwrap();
    assert_eq!(status.synced_secret.as_deref(), Some("db"));
    let synced = status
        .conditions
        .iter()
        .find(|condition| condition.type_ == "Synced")
        .expect("a Synced condition");
    assert_eq!(synced.status, "True");
    let core = h.fake.object(CORE_DB).expect("the core Secret");
    assert_eq!(core["type"], "kubernetes.io/basic-auth");
    let value: Value = serde_json::from_str(&h.value("db").await.unwrap()).unwrap();
    assert_eq!(decoded(&core, "username"), "app");
    assert_eq!(
        decoded(&core, "password"),
        value["password"].as_str().unwrap()
    );
    assert_eq!(core["metadata"]["labels"]["team"], "shop");
    assert_eq!(core["metadata"]["labels"]["coffer.dev/synced-from"], "db");
    let owner = &core["metadata"]["ownerReferences"][0];
    assert_eq!(
        owner["uid"],
        resource.metadata.uid.clone().unwrap().as_str()
    );
    assert_eq!(owner["kind"], "Secret");
    assert!(h.fake.event_reasons().contains(&"Synced".to_owned()));

    // A new value through the API reaches the copy.
    h.secrets
        .put_secret_value(
            &caller(),
            "db",
            None,
            text(r#"{"username":"app","password":"second-password"}"#),
            vec![],
        )
        .await
        .unwrap();
    h.settle("db").await;
    let core = h.fake.object(CORE_DB).unwrap();
    assert_eq!(decoded(&core, "password"), "second-password");

    // Reconciling again writes nothing.
    let before = h.fake.requests().len();
    h.reconcile("db").await;
    let writes: Vec<String> = h.fake.requests()[before..]
        .iter()
        .filter(|request| !request.starts_with("GET"))
        .cloned()
        .collect();
    assert!(writes.is_empty(), "{writes:?}");

    // Turned off: the copy goes.
    let mut object = h.fake.object(&format!("{RESOURCES}/db")).unwrap();
    object["spec"]["sync"]["enabled"] = json!(false);
    object["metadata"]["generation"] = json!(2);
    h.fake.insert_raw(&format!("{RESOURCES}/db"), object);
    let resource = h.settle("db").await;
    assert!(h.fake.object(CORE_DB).is_none(), "the copy stays");
    assert_eq!(resource.status.unwrap().synced_secret, None);
}

#[tokio::test]
async fn sync_leaves_a_core_secret_it_did_not_make_alone() {
    let h = harness();
    h.fake.insert(
        "/api/v1/namespaces/app/secrets",
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "app"},
               "type": "Opaque", "data": {"mine": "bWluZQ=="}}),
    );
    h.apply("db", json!({"generate": {}, "sync": {}}));
    let resource = h.settle("db").await;
    let synced = resource
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|condition| condition.type_ == "Synced")
        .unwrap();
    assert_eq!(
        (synced.status.as_str(), synced.reason.as_str()),
        ("False", "SyncFailed")
    );
    assert!(synced.message.contains("left alone"), "{}", synced.message);
    let core = h.fake.object(CORE_DB).unwrap();
    assert_eq!(core["data"], json!({"mine": "bWluZQ=="}));
    assert!(h.fake.event_reasons().contains(&"SyncFailed".to_owned()));
}
