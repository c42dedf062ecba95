//! `spec.sync`: a copy of a value into a core Secret of the same namespace, for consumers that
//! read only core Secrets (environment variables, other controllers). It is the one path by
//! which plaintext reaches a Kubernetes object, and only when a resource asks for it.
//!
//! The core Secret is owned by the Coffer resource (so it goes when the resource goes), made by
//! server-side apply, and rewritten only when the current version or the sync settings change:
//! it carries the version it holds and a digest of the settings in annotations. A core Secret
//! of that name that is not this resource's copy is never touched.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, OwnerReference};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, Preconditions};
use kube::runtime::events::{EventType, Recorder};
use kube::{Api, Resource};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroize as _;

use crate::crypto::SecretBytes;
use crate::resources::secret::SyncSettings;
use crate::store::kubernetes::FIELD_MANAGER;

/// Label naming the Coffer resource a core Secret is the copy of.
pub const SYNCED_FROM_LABEL: &str = "coffer.dev/synced-from";
/// Annotation naming the version a core Secret holds.
pub const SYNCED_VERSION_ANNOTATION: &str = "coffer.dev/synced-version";
/// Annotation holding a digest of the sync settings the core Secret was made with.
pub const SYNC_SETTINGS_ANNOTATION: &str = "coffer.dev/sync-settings";
/// The key a value that is not a JSON object goes under when no keys are given.
const WHOLE_VALUE_KEY: &str = "value";
/// Longest key of a core Secret's data.
const MAX_KEY_LEN: usize = 253;

/// Why a value cannot be synced as asked: shown in a condition and an Event, so never a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncProblem {
    #[error("the secret has no current value yet")]
    NoValue,
    #[error("the value is not a JSON object, so sync.keys cannot select its property {0}")]
    NotJsonObject(String),
    #[error("the value has no property {0}")]
    NoProperty(String),
    #[error(
        "the value's property {0} cannot be a key of a core Secret (1 to 253 of A-Z a-z 0-9 . _ -): name the keys in sync.keys"
    )]
    BadKey(String),
    #[error("a {type_} Secret needs {needs}")]
    TypeNeeds { type_: String, needs: &'static str },
    #[error("a core Secret named {0} exists and is not this resource's copy: it is left alone")]
    Taken(String),
}

/// What a sync did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// The core Secret was written (made, or brought to a new version or new settings).
    Written,
    /// It already held this version, made with these settings.
    Unchanged,
}

/// The data of the core Secret: `value` mapped by the settings' keys.
pub fn data_of(
    settings: &SyncSettings,
    value: &SecretBytes,
) -> Result<BTreeMap<String, ByteString>, SyncProblem> {
    let mut object: Option<Map<String, Value>> =
        serde_json::from_slice::<Map<String, Value>>(value.expose()).ok();
    let result = map_keys(settings, value, object.as_ref());
    // The parsed object holds the value's strings: wipe them.
    if let Some(object) = object.as_mut() {
        for (_, field) in object.iter_mut() {
            if let Value::String(text) = field {
                text.zeroize();
            }
        }
    }
    let data = result?;
    check_type(settings, &data)?;
    Ok(data)
}

fn map_keys(
    settings: &SyncSettings,
    value: &SecretBytes,
    object: Option<&Map<String, Value>>,
) -> Result<BTreeMap<String, ByteString>, SyncProblem> {
    let property_bytes = |field: &Value| match field {
        Value::String(text) => text.as_bytes().to_vec(),
        other => serde_json::to_vec(other).unwrap_or_default(),
    };
    let mut data = BTreeMap::new();
    if settings.keys.is_empty() {
        match object {
            Some(object) => {
                for (key, field) in object {
                    if !valid_key(key) {
                        return Err(SyncProblem::BadKey(crate::engine::text::truncate(key)));
                    }
                    data.insert(key.clone(), ByteString(property_bytes(field)));
                }
            }
            None => {
                data.insert(
                    WHOLE_VALUE_KEY.to_owned(),
                    ByteString(value.expose().to_vec()),
                );
            }
        }
        return Ok(data);
    }
    for key in &settings.keys {
        let bytes = match &key.property {
            None => value.expose().to_vec(),
            Some(property) => {
                let object = object.ok_or_else(|| SyncProblem::NotJsonObject(property.clone()))?;
                let field = object
                    .get(property)
                    .ok_or_else(|| SyncProblem::NoProperty(property.clone()))?;
                property_bytes(field)
            }
        };
        data.insert(key.key.clone(), ByteString(bytes));
    }
    Ok(data)
}

fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The keys each type of core Secret must have, as the API server checks them.
fn check_type(
    settings: &SyncSettings,
    data: &BTreeMap<String, ByteString>,
) -> Result<(), SyncProblem> {
    let needs = |needs: &'static str| SyncProblem::TypeNeeds {
        type_: settings.type_.clone(),
        needs,
    };
    match settings.type_.as_str() {
        "kubernetes.io/tls" if !(data.contains_key("tls.crt") && data.contains_key("tls.key")) => {
            Err(needs("the keys tls.crt and tls.key"))
        }
        "kubernetes.io/dockerconfigjson" => match data.get(".dockerconfigjson") {
            Some(config) if serde_json::from_slice::<Map<String, Value>>(&config.0).is_ok() => {
                Ok(())
            }
            _ => Err(needs("the key .dockerconfigjson holding a JSON object")),
        },
        "kubernetes.io/basic-auth"
            if !(data.contains_key("username") || data.contains_key("password")) =>
        {
            Err(needs("the key username or password"))
        }
        _ => Ok(()),
    }
}

/// A digest of the settings, so that a change of them is written even for the same version.
fn settings_digest(settings: &SyncSettings) -> String {
    let text = serde_json::to_vec(settings).unwrap_or_default();
    let digest = Sha256::digest(&text);
    hex::encode(digest.get(..12).unwrap_or_default())
}

/// The name of the core Secret.
pub fn target_name<'a>(settings: &'a SyncSettings, resource_name: &'a str) -> &'a str {
    settings.secret_name.as_deref().unwrap_or(resource_name)
}

fn owned_by(secret: &CoreSecret, owner: &OwnerReference) -> bool {
    secret
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|owners| owners.iter().any(|reference| reference.uid == owner.uid))
}

/// Brings the core Secret to `version` of the value, as `settings` map it. `Ok(Err(..))` is a
/// problem of the spec or the value, which nothing is written for.
pub async fn sync(
    client: &kube::Client,
    namespace: &str,
    owner: &OwnerReference,
    settings: &SyncSettings,
    version: &str,
    value: &SecretBytes,
) -> Result<Result<Synced, SyncProblem>, kube::Error> {
    let api: Api<CoreSecret> = Api::namespaced(client.clone(), namespace);
    let name = target_name(settings, &owner.name).to_owned();
    let digest = settings_digest(settings);
    if let Some(existing) = api.get_opt(&name).await? {
        if !owned_by(&existing, owner) {
            return Ok(Err(SyncProblem::Taken(name)));
        }
        let annotation = |key: &str| {
            existing
                .metadata
                .annotations
                .as_ref()
                .and_then(|annotations| annotations.get(key))
                .map(String::as_str)
        };
        if annotation(SYNCED_VERSION_ANNOTATION) == Some(version)
            && annotation(SYNC_SETTINGS_ANNOTATION) == Some(digest.as_str())
        {
            return Ok(Ok(Synced::Unchanged));
        }
        // The type of a core Secret cannot change: a new type is a new object.
        if existing.type_.as_deref() != Some(settings.type_.as_str()) {
            delete_owned(&api, &existing).await?;
        }
    }
    let data = match data_of(settings, value) {
        Ok(data) => data,
        Err(problem) => return Ok(Err(problem)),
    };
    let mut labels = settings.labels.clone();
    labels.insert("app.kubernetes.io/managed-by".into(), "coffer".into());
    labels.insert(SYNCED_FROM_LABEL.into(), owner.name.clone());
    let mut annotations = settings.annotations.clone();
    annotations.insert(SYNCED_VERSION_ANNOTATION.into(), version.to_owned());
    annotations.insert(SYNC_SETTINGS_ANNOTATION.into(), digest);
    let secret = CoreSecret {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![owner.clone()]),
            ..ObjectMeta::default()
        },
        type_: Some(settings.type_.clone()),
        data: Some(data),
        ..CoreSecret::default()
    };
    let written = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await;
    // The request body held the value: wipe the copy this function made.
    if let Some(data) = secret.data {
        for (_, mut bytes) in data {
            bytes.0.zeroize();
        }
    }
    written?;
    Ok(Ok(Synced::Written))
}

/// Deletes the core Secret `name` if it is the copy `owner` made; any other is left alone.
pub async fn unsync(
    client: &kube::Client,
    namespace: &str,
    owner: &OwnerReference,
    name: &str,
) -> Result<(), kube::Error> {
    let api: Api<CoreSecret> = Api::namespaced(client.clone(), namespace);
    match api.get_opt(name).await? {
        Some(existing) if owned_by(&existing, owner) => delete_owned(&api, &existing).await,
        _ => Ok(()),
    }
}

async fn delete_owned(api: &Api<CoreSecret>, existing: &CoreSecret) -> Result<(), kube::Error> {
    let Some(name) = existing.metadata.name.as_deref() else {
        return Ok(());
    };
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(response)) if response.code == 404 => Ok(()),
        Err(other) => Err(other),
    }
}

/// Type of the condition that tells how the copy goes.
const CONDITION_SYNCED: &str = "Synced";

/// What `spec.sync` came to in one reconcile.
pub struct SyncState {
    /// The core Secret holding the copy, if any.
    pub secret: Option<String>,
    /// `None` when no copy is asked for.
    pub outcome: Option<Result<(), SyncProblem>>,
}

impl SyncState {
    /// The Synced condition, when a copy is asked for.
    pub fn condition(
        &self,
        previous: &[Condition],
        generation: Option<i64>,
        now: i64,
    ) -> Option<Condition> {
        let outcome = self.outcome.as_ref()?;
        let (state, reason, message) = match outcome {
            Ok(()) => (
                "True",
                "Synced",
                format!(
                    "The current value is copied into the core Secret {}.",
                    self.secret.as_deref().unwrap_or_default()
                ),
            ),
            Err(SyncProblem::NoValue) => ("False", "NoValue", SyncProblem::NoValue.to_string()),
            Err(problem) => ("False", "SyncFailed", problem.to_string()),
        };
        Some(super::conditions::condition(
            previous,
            CONDITION_SYNCED,
            generation,
            state,
            reason,
            message,
            now,
        ))
    }
}

/// The resource a copy belongs to, and what its status says of the copy so far.
pub struct Copy<'a, R> {
    pub client: &'a kube::Client,
    pub recorder: &'a Recorder,
    pub resource: &'a R,
    pub namespace: &'a str,
    /// The core Secret the status names as the copy.
    pub previous: Option<&'a str>,
    pub conditions: &'a [Condition],
}

/// Keeps the copy `settings` ask for holding `current` (version, value), or removes the copy
/// when sync is off or its name changed; says what came of it, with Events for a write and
/// for a new problem.
pub async fn keep<R>(
    copy: &Copy<'_, R>,
    settings: Option<&SyncSettings>,
    current: Option<(String, SecretBytes)>,
) -> Result<SyncState, kube::Error>
where
    R: Resource<DynamicType = ()>,
{
    let none = SyncState {
        secret: None,
        outcome: None,
    };
    let Some(owner) = copy.resource.controller_owner_ref(&()).map(|mut owner| {
        // Deleting the resource must not wait on its copy.
        owner.block_owner_deletion = Some(false);
        owner
    }) else {
        return Ok(none);
    };
    let wanted = settings.map(|settings| target_name(settings, &owner.name).to_owned());
    if let Some(previous) = copy.previous
        && wanted.as_deref() != Some(previous)
    {
        unsync(copy.client, copy.namespace, &owner, previous).await?;
    }
    let Some(settings) = settings else {
        return Ok(none);
    };
    let Some((version, value)) = current else {
        return Ok(SyncState {
            secret: None,
            outcome: Some(Err(SyncProblem::NoValue)),
        });
    };
    let outcome = sync(
        copy.client,
        copy.namespace,
        &owner,
        settings,
        &version,
        &value,
    )
    .await?;
    let reference = copy.resource.object_ref(&());
    match &outcome {
        Ok(Synced::Written) => {
            let note = format!(
                "Version {version} is copied into the core Secret {}.",
                target_name(settings, &owner.name)
            );
            super::conditions::publish(
                copy.recorder,
                &reference,
                EventType::Normal,
                "Synced",
                &note,
            )
            .await;
        }
        Ok(Synced::Unchanged) => {}
        Err(problem) => {
            let shown = copy
                .conditions
                .iter()
                .find(|condition| condition.type_ == CONDITION_SYNCED);
            if shown.is_none_or(|condition| condition.message != problem.to_string()) {
                super::conditions::publish(
                    copy.recorder,
                    &reference,
                    EventType::Warning,
                    "SyncFailed",
                    &problem.to_string(),
                )
                .await;
            }
        }
    }
    Ok(SyncState {
        // After a problem, a copy made before stays named, so that turning sync off removes it.
        secret: match &outcome {
            Ok(_) => wanted,
            Err(_) => copy
                .previous
                .filter(|previous| wanted.as_deref() == Some(*previous))
                .map(str::to_owned),
        },
        outcome: Some(outcome.map(|_| ())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::secret::SyncKey;

    fn settings(type_: &str, keys: &[(&str, Option<&str>)]) -> SyncSettings {
        SyncSettings {
            enabled: true,
            secret_name: None,
            type_: type_.into(),
            keys: keys
                .iter()
                .map(|(key, property)| SyncKey {
                    key: (*key).into(),
                    property: property.map(str::to_owned),
                })
                .collect(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
        }
    }

    fn text(data: &BTreeMap<String, ByteString>, key: &str) -> String {
        String::from_utf8(data[key].0.clone()).unwrap()
    }

    #[test]
    fn a_json_object_gives_a_key_per_property_and_anything_else_one_key() {
        let value = SecretBytes::from_slice(br#"{"username":"app","port":5432}"#);
        let data = data_of(&settings("Opaque", &[]), &value).unwrap();
        assert_eq!(text(&data, "username"), "app");
        assert_eq!(text(&data, "port"), "5432");
        let data = data_of(
            &settings("Opaque", &[]),
            &SecretBytes::from_slice(b"s3cret"),
        )
        .unwrap();
        assert_eq!(text(&data, "value"), "s3cret");
        let bad = SecretBytes::from_slice(br#"{"a b":"x"}"#);
        assert!(matches!(
            data_of(&settings("Opaque", &[]), &bad),
            Err(SyncProblem::BadKey(_))
        ));
    }

    #[test]
    fn keys_select_properties_or_the_whole_value() {
        let value = SecretBytes::from_slice(br#"{"crt":"C","key":"K","other":"x"}"#);
        let tls = settings(
            "kubernetes.io/tls",
            &[("tls.crt", Some("crt")), ("tls.key", Some("key"))],
        );
        let data = data_of(&tls, &value).unwrap();
        assert_eq!(data.len(), 2);
        assert_eq!(text(&data, "tls.crt"), "C");
        assert_eq!(text(&data, "tls.key"), "K");
        let whole = settings("Opaque", &[("all.json", None)]);
        assert_eq!(
            text(&data_of(&whole, &value).unwrap(), "all.json"),
            r#"{"crt":"C","key":"K","other":"x"}"#
        );
        let missing = settings("Opaque", &[("k", Some("nope"))]);
        assert_eq!(
            data_of(&missing, &value),
            Err(SyncProblem::NoProperty("nope".into()))
        );
        let not_json = SecretBytes::from_slice(b"plain");
        assert!(matches!(
            data_of(&missing, &not_json),
            Err(SyncProblem::NotJsonObject(_))
        ));
    }

    #[test]
    fn each_type_gets_the_keys_it_needs() {
        let value = SecretBytes::from_slice(br#"{"username":"u","password":"p"}"#);
        assert!(data_of(&settings("kubernetes.io/basic-auth", &[]), &value).is_ok());
        assert!(matches!(
            data_of(&settings("kubernetes.io/tls", &[]), &value),
            Err(SyncProblem::TypeNeeds { .. })
        ));
        let docker = SecretBytes::from_slice(br#"{"auths":{"r.example":{"auth":"eA=="}}}"#);
        let config = settings(
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", None)],
        );
        assert!(data_of(&config, &docker).is_ok());
        assert!(matches!(
            data_of(&config, &SecretBytes::from_slice(b"not json")),
            Err(SyncProblem::TypeNeeds { .. })
        ));
        let secret = SecretBytes::from_slice(br#"{"username":"user-zq7","password":"pw-zq7"}"#);
        let problem = data_of(&settings("kubernetes.io/tls", &[]), &secret).unwrap_err();
        assert!(!problem.to_string().contains("zq7"), "{problem}");
    }
}
