//! The Parameter reconciler and the parameters' keeper against an in-memory API server, with the
//! real engines on top.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use base64::Engine as _;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};

use super::parameter::{Context, reconcile, sweep_abandoned};
use crate::crypto::{RootKeyring, SecretBytes};
use crate::engine::account::account_id;
use crate::engine::kms::Kms;
use crate::engine::parameters::{Parameters, ParametersError, PutParameterRequest};
use crate::engine::{Caller, Principal};
use crate::resources::parameter::Parameter;
use crate::store::kubernetes::KubernetesStore;
use crate::store::kubernetes::parameters::ParameterRecords;
use crate::test_support::engine::{AllowAll, ManualClock};
use crate::test_support::fake_api::FakeApi;

const RESOURCES: &str = "/apis/coffer.dev/v1alpha1/namespaces/app/parameters";
const SYSTEM_SECRETS: &str = "/api/v1/namespaces/coffer-system/secrets";

struct Harness {
    fake: FakeApi,
    store: Arc<ParameterRecords>,
    parameters: Arc<Parameters>,
    kms: Arc<Kms>,
    ctx: Arc<Context>,
}

fn harness() -> Harness {
    let (client, fake) = FakeApi::start();
    let kubernetes = Arc::new(KubernetesStore::new(client.clone(), "coffer-system"));
    let store = Arc::clone(kubernetes.parameters());
    let clock = Arc::new(ManualClock(AtomicI64::new(1_800_000_000)));
    let kms = Arc::new(Kms::new(
        kubernetes.clone(),
        Arc::new(RootKeyring::generate()),
        Arc::new(AllowAll),
        clock.clone(),
        "us-east-1",
    ));
    let parameters = Arc::new(Parameters::new(
        kubernetes,
        Arc::clone(&kms),
        Arc::new(AllowAll),
        clock.clone(),
    ));
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "coffer".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Arc::new(Context {
        parameters: Arc::clone(&parameters),
        kms: Arc::clone(&kms),
        store: Arc::clone(&store),
        client,
        recorder,
        clock,
        metrics: None,
    });
    Harness {
        fake,
        store,
        parameters,
        kms,
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
        secure_transport: true,
    }
}

impl Harness {
    fn apply(&self, name: &str, spec: Value) {
        let object = self.fake.insert(
            RESOURCES,
            json!({
                "apiVersion": "coffer.dev/v1alpha1",
                "kind": "Parameter",
                "metadata": {"name": name, "namespace": "app"},
                "spec": spec,
            }),
        );
        self.store.remember(serde_json::from_value(object).unwrap());
    }

    fn resource(&self, name: &str) -> Option<Parameter> {
        self.fake
            .object(&format!("{RESOURCES}/{name}"))
            .map(|object| serde_json::from_value(object).unwrap())
    }

    async fn settle(&self, name: &str) -> Parameter {
        for _ in 0..2 {
            let resource = self.resource(name).expect("the resource exists");
            self.store.remember(resource.clone());
            reconcile(Arc::new(resource), Arc::clone(&self.ctx))
                .await
                .expect("reconciles");
        }
        self.resource(name).unwrap()
    }

    async fn value(&self, name: &str) -> Result<String, ParametersError> {
        self.parameters
            .get_parameter(&caller(), name, true)
            .await
            .map(|value| String::from_utf8(value.value.expose().to_vec()).unwrap())
    }

    async fn put(&self, name: &str, value: &str, type_: &str) -> Result<u64, ParametersError> {
        self.parameters
            .put_parameter(
                &caller(),
                PutParameterRequest {
                    name: name.into(),
                    value: SecretBytes::from_slice(value.as_bytes()),
                    type_: Some(type_.into()),
                    overwrite: true,
                    ..PutParameterRequest::default()
                },
            )
            .await
            .map(|outcome| outcome.version)
    }

    fn everything(&self) -> String {
        self.fake
            .objects_under("/")
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[tokio::test]
async fn a_string_parameter_follows_its_spec_and_api_changes_reach_the_spec() {
    let h = harness();
    h.apply(
        "db-url",
        json!({"name": "/app/db/url", "value": "postgres://db", "description": "db"}),
    );
    let resource = h.settle("db-url").await;
    let status = resource.status.unwrap();
    assert_eq!(status.version, Some(1));
    assert_eq!(status.conditions[0].reason, "Available");
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(h.value("/app/db/url").await.unwrap(), "postgres://db");
    assert!(h.fake.event_reasons().contains(&"Created".to_owned()));
    // Reconciling again makes no version.
    assert_eq!(h.settle("db-url").await.status.unwrap().version, Some(1));

    // A value put through the API is written into the spec, and stays.
    assert_eq!(
        h.put("/app/db/url", "postgres://other", "String")
            .await
            .unwrap(),
        2
    );
    let resource = h.settle("db-url").await;
    assert_eq!(resource.spec.value.as_deref(), Some("postgres://other"));
    assert_eq!(resource.status.unwrap().version, Some(2));
    assert_eq!(h.value("/app/db/url").await.unwrap(), "postgres://other");

    // Deleting the resource deletes the parameter.
    h.fake.remove(&format!("{RESOURCES}/db-url"));
    h.store.forget_resource("app", "db-url");
    sweep_abandoned(&h.ctx).await.unwrap();
    assert!(matches!(
        h.value("/app/db/url").await,
        Err(ParametersError::NotFound(_))
    ));
    assert!(h.fake.event_reasons().contains(&"Deleted".to_owned()));
}

/// Quick API calls: the spec the store wrote back for one is stale by the time the reconciler
/// sees it. It is the store's own word, not a declaration: no version comes of it.
#[tokio::test]
async fn a_spec_written_back_from_the_api_makes_no_version_even_when_stale() {
    let h = harness();
    h.apply(
        "db-url",
        json!({"name": "/app/db/url", "value": "postgres://db-1"}),
    );
    h.settle("db-url").await;
    assert_eq!(
        h.put("/app/db/url", "postgres://db-2", "String")
            .await
            .unwrap(),
        2
    );
    let written_back = h.resource("db-url").unwrap();
    assert_eq!(written_back.spec.value.as_deref(), Some("postgres://db-2"));
    assert!(crate::store::kubernetes::writeback::spec_written_back(
        &written_back
    ));
    // Two more calls before the reconciler wakes for the first write-back.
    assert_eq!(
        h.put("/app/db/url", "postgres://db-3", "String")
            .await
            .unwrap(),
        3
    );
    assert_eq!(
        h.put("/app/db/url", "postgres://db-4", "String")
            .await
            .unwrap(),
        4
    );
    // The reconciler's copy is that first write-back (its cache has not seen the others yet).
    h.store.forget_resource("app", "db-url");
    h.store.remember(written_back.clone());
    reconcile(Arc::new(written_back), Arc::clone(&h.ctx))
        .await
        .unwrap();
    assert_eq!(h.value("/app/db/url").await.unwrap(), "postgres://db-4");
    let resource = h.settle("db-url").await;
    assert_eq!(resource.status.unwrap().version, Some(4));
    assert_eq!(resource.spec.value.as_deref(), Some("postgres://db-4"));

    // A user's change after the write-back is a declaration again.
    let mut spec = serde_json::to_value(&resource.spec).unwrap();
    spec["value"] = json!("postgres://db-5");
    let path = format!("{RESOURCES}/db-url");
    let mut object = h.fake.object(&path).unwrap();
    object["spec"] = spec;
    object["metadata"]["generation"] =
        json!(object["metadata"]["generation"].as_i64().unwrap() + 1);
    h.fake.insert_raw(&path, object);
    let resource = h.settle("db-url").await;
    assert_eq!(resource.status.unwrap().version, Some(5));
    assert_eq!(h.value("/app/db/url").await.unwrap(), "postgres://db-5");
}

#[tokio::test]
async fn a_parameter_made_through_the_api_appears_as_a_resource() {
    let h = harness();
    h.put("/app/feature/flag", "on", "String").await.unwrap();
    let resource = h
        .resource("app.feature.flag")
        .expect("a resource named after the path");
    assert_eq!(resource.spec.name, "/app/feature/flag");
    assert_eq!(resource.spec.value.as_deref(), Some("on"));
    h.put("/App/Secret_Token", "e2e-plain-param-api", "SecureString")
        .await
        .unwrap();
    let made = h
        .fake
        .objects_under(RESOURCES)
        .into_iter()
        .find(|object| object["spec"]["name"] == "/App/Secret_Token")
        .expect("a resource for the SecureString");
    assert!(
        made["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("p-app-secret-token-")
    );
    assert!(made["spec"].get("value").is_none_or(Value::is_null));
    let name = made["metadata"]["name"].as_str().unwrap().to_owned();
    let status = h.settle(&name).await.status.unwrap();
    assert_eq!(
        status.version,
        Some(1),
        "the resource keeps the API's value"
    );
    assert_eq!(
        h.value("/App/Secret_Token").await.unwrap(),
        "e2e-plain-param-api"
    );
    let everything = h.everything();
    assert!(!everything.contains("e2e-plain-param-api"));
    assert!(
        !everything
            .contains(&base64::engine::general_purpose::STANDARD.encode("e2e-plain-param-api"))
    );
}

#[tokio::test]
async fn a_sealed_secure_string_opens_here_only_and_refuses_api_values() {
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
    let blob = sealed::seal(
        &public.public_key,
        public.key_spec.asymmetric().unwrap(),
        &key.key_id,
        &SealTarget {
            namespace: "app",
            resource_name: "token",
        },
        b"e2e-plain-param-sealed",
    )
    .unwrap();
    h.apply(
        "token",
        json!({"name": "/app/token", "type": "SecureString",
               "sealedValue": base64::engine::general_purpose::STANDARD.encode(blob)}),
    );
    let status = h.settle("token").await.status.unwrap();
    assert_eq!(status.version, Some(1));
    assert_eq!(
        h.value("/app/token").await.unwrap(),
        "e2e-plain-param-sealed"
    );
    assert!(!h.everything().contains("e2e-plain-param-sealed"));
    // The API cannot put a value the spec's source would take back.
    assert!(matches!(
        h.put("/app/token", "e2e-plain-intruder", "SecureString")
            .await,
        Err(ParametersError::Validation(_))
    ));
    assert_eq!(
        h.value("/app/token").await.unwrap(),
        "e2e-plain-param-sealed"
    );
    // Its values live in the controller's namespace, sealed.
    let values: Vec<Value> = h
        .fake
        .objects_under(SYSTEM_SECRETS)
        .into_iter()
        .filter(|object| object["type"] == "coffer.dev/parameter-value")
        .collect();
    assert_eq!(values.len(), 1);
}

#[tokio::test]
async fn a_synced_parameter_copy_follows_put_parameter() {
    let h = harness();
    h.apply(
        "db-url",
        json!({"name": "/app/db/url", "value": "postgres://db-1", "sync": {"secretName": "db-env", "keys": [{"key": "DATABASE_URL"}]}}),
    );
    let resource = h.settle("db-url").await;
    assert_eq!(
        resource.status.unwrap().synced_secret.as_deref(),
        Some("db-env")
    );
    let core = |h: &Harness| {
        let object = h
            .fake
            .object("/api/v1/namespaces/app/secrets/db-env")
            .expect("the copy");
        let text = object["data"]["DATABASE_URL"].as_str().unwrap().to_owned();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(text)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(core(&h), "postgres://db-1");
    h.put("/app/db/url", "postgres://db-2", "String")
        .await
        .unwrap();
    h.settle("db-url").await;
    assert_eq!(core(&h), "postgres://db-2");
}
