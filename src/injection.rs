//! Injection by annotation: a mutating admission webhook that adds a `csi.coffer.dev` volume,
//! and its mounts, to pods labelled `coffer.dev/inject: "true"` whose `coffer.dev/inject-FILE`
//! annotations name what the volume holds. docs/injection.md describes the grammar.
//!
//! Planning is a pure function of the pod, checked by the same parser the CSI driver runs, so a
//! pod that would fail to mount is refused at admission instead, with the reason.

use std::collections::BTreeMap;

use axum::extract::rejection::JsonRejection;
use axum::routing::post;
use axum::{Json, Router};
use http::StatusCode;
use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use serde_json::{Value, json};

use crate::delivery::reference::{ObjectReference, ReferenceError};
use crate::delivery::{AttributeError, names, parse_volume_attributes};

/// The label that selects pods for the webhook (its `objectSelector`).
pub const INJECT_LABEL: &str = "coffer.dev/inject";
/// `coffer.dev/inject-FILE: REFERENCE`: the file FILE holds what REFERENCE names.
const FILE_PREFIX: &str = "coffer.dev/inject-";
/// `coffer.dev/inject-template-FILE: TEXT`: the file FILE is TEXT rendered.
const TEMPLATE_PREFIX: &str = "coffer.dev/inject-template-";
/// Where the volume is mounted in each container [default: [`DEFAULT_MOUNT_PATH`]].
const MOUNT_PATH_ANNOTATION: &str = "coffer.dev/injection-mount-path";
/// Which containers mount it, comma-separated [default: every container and init container].
const CONTAINERS_ANNOTATION: &str = "coffer.dev/injection-containers";
/// The injected volume's name.
pub const VOLUME_NAME: &str = "coffer-inject";
pub const DEFAULT_MOUNT_PATH: &str = "/run/coffer";
/// The path the webhook is served on, on the API's listener.
pub const WEBHOOK_PATH: &str = "/admission/inject";

/// Why a pod that asks for injection is refused.
#[derive(Debug, thiserror::Error)]
pub enum InjectionError {
    #[error("the pod is labelled {INJECT_LABEL}=true but has no {FILE_PREFIX}FILE annotation")]
    NothingNamed,
    #[error("label {INJECT_LABEL} must be \"true\" (or absent), not {0:?}")]
    Label(String),
    #[error("annotation {annotation}: {source}")]
    Reference {
        annotation: String,
        source: ReferenceError,
    },
    #[error("annotation {annotation}: {source}")]
    Volume {
        annotation: String,
        source: AttributeError,
    },
    #[error("the injected files: {0}")]
    Files(AttributeError),
    #[error("annotation {MOUNT_PATH_ANNOTATION}: {0}")]
    MountPath(String),
    #[error("annotation {CONTAINERS_ANNOTATION}: no container or init container named {0:?}")]
    UnknownContainer(String),
    #[error("the pod already has a volume named {VOLUME_NAME}")]
    VolumeExists,
    #[error("container {container:?} already mounts something at {path}")]
    MountTaken { container: String, path: String },
    #[error("could not render the injected volume: {0}")]
    Render(String),
}

/// The patch that injects what `pod` asks for, or `None` when it does not ask.
pub fn plan(pod: &Pod) -> Result<Option<Patch>, InjectionError> {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    match labels.get(INJECT_LABEL).map(String::as_str) {
        None => return Ok(None),
        Some("true") => {}
        Some(other) => return Err(InjectionError::Label(other.to_owned())),
    }
    let annotations = pod.metadata.annotations.clone().unwrap_or_default();
    let attributes = volume_attributes(&annotations)?;
    let mount_path = mount_path(&annotations)?;
    let spec = pod.spec.clone().unwrap_or_default();

    let chosen: Option<Vec<String>> = annotations.get(CONTAINERS_ANNOTATION).map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let init = spec.init_containers.clone().unwrap_or_default();
    if let Some(chosen) = &chosen
        && let Some(missing) = chosen.iter().find(|name| {
            !spec.containers.iter().any(|c| &c.name == *name)
                && !init.iter().any(|c| &c.name == *name)
        })
    {
        return Err(InjectionError::UnknownContainer(missing.clone()));
    }
    if spec
        .volumes
        .iter()
        .flatten()
        .any(|volume| volume.name == VOLUME_NAME)
    {
        return Err(InjectionError::VolumeExists);
    }

    let mut operations = Vec::new();
    let volume = json!({
        "name": VOLUME_NAME,
        "csi": {
            "driver": crate::csi::DRIVER_NAME,
            "readOnly": true,
            "volumeAttributes": attributes,
        }
    });
    operations.push(add_to_list(
        &["spec", "volumes"],
        spec.volumes.is_some(),
        volume,
    ));
    let mount = json!({"name": VOLUME_NAME, "mountPath": mount_path, "readOnly": true});
    for (list, containers) in [("containers", &spec.containers), ("initContainers", &init)] {
        for (index, container) in containers.iter().enumerate() {
            if chosen
                .as_ref()
                .is_some_and(|chosen| !chosen.contains(&container.name))
            {
                continue;
            }
            let mounts = container.volume_mounts.as_deref().unwrap_or_default();
            if mounts
                .iter()
                .any(|existing| existing.mount_path.trim_end_matches('/') == mount_path)
            {
                return Err(InjectionError::MountTaken {
                    container: container.name.clone(),
                    path: mount_path.clone(),
                });
            }
            operations.push(add_to_list(
                &["spec", list, &index.to_string(), "volumeMounts"],
                container.volume_mounts.is_some(),
                mount.clone(),
            ));
        }
    }
    Ok(Some(Patch(operations)))
}

/// The CSI volume attributes (`objects`, `templates`) the annotations ask for, checked as the
/// node plugin will check them.
fn volume_attributes(
    annotations: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, InjectionError> {
    let mut objects = Vec::new();
    let mut templates = Vec::new();
    for (key, value) in annotations {
        let (entry, attribute) = if let Some(file) = key.strip_prefix(TEMPLATE_PREFIX) {
            (json!({"file": file, "template": value}), TEMPLATES)
        } else if let Some(file) = key.strip_prefix(FILE_PREFIX) {
            let reference =
                ObjectReference::parse(value).map_err(|source| InjectionError::Reference {
                    annotation: key.clone(),
                    source,
                })?;
            (reference.object_entry(file), OBJECTS)
        } else {
            continue;
        };
        // Each entry alone first, so that a refusal names its annotation.
        let alone = BTreeMap::from([(attribute.to_owned(), render(std::slice::from_ref(&entry))?)]);
        parse_volume_attributes(&alone).map_err(|source| InjectionError::Volume {
            annotation: key.clone(),
            source,
        })?;
        if attribute == OBJECTS {
            objects.push(entry);
        } else {
            templates.push(entry);
        }
    }
    if objects.is_empty() && templates.is_empty() {
        return Err(InjectionError::NothingNamed);
    }
    let mut attributes = BTreeMap::new();
    if !objects.is_empty() {
        attributes.insert(OBJECTS.to_owned(), render(&objects)?);
    }
    if !templates.is_empty() {
        attributes.insert(TEMPLATES.to_owned(), render(&templates)?);
    }
    // Then together: two annotations must not write the same file, or a file and its directory.
    parse_volume_attributes(&attributes).map_err(InjectionError::Files)?;
    Ok(attributes)
}

const OBJECTS: &str = "objects";
const TEMPLATES: &str = "templates";

/// JSON is YAML, which the attributes are read as.
fn render(entries: &[Value]) -> Result<String, InjectionError> {
    serde_json::to_string(entries).map_err(|err| InjectionError::Render(err.to_string()))
}

fn mount_path(annotations: &BTreeMap<String, String>) -> Result<String, InjectionError> {
    let Some(path) = annotations.get(MOUNT_PATH_ANNOTATION) else {
        return Ok(DEFAULT_MOUNT_PATH.to_owned());
    };
    let Some(relative) = path.strip_prefix('/') else {
        return Err(InjectionError::MountPath(format!(
            "{path:?} is not an absolute path"
        )));
    };
    let relative = relative.trim_end_matches('/');
    names::check(relative).map_err(|err| InjectionError::MountPath(format!("{path:?}: {err}")))?;
    if relative.contains(':') {
        return Err(InjectionError::MountPath(format!("{path:?} holds ':'")));
    }
    Ok(format!("/{relative}"))
}

/// Adds `value` to the list at `list` (a JSON pointer's tokens), making the list when the pod
/// has none.
fn add_to_list(list: &[&str], exists: bool, value: Value) -> PatchOperation {
    let mut path = PointerBuf::from_tokens(list.iter().copied());
    let value = if exists {
        path.push_back("-");
        value
    } else {
        Value::Array(vec![value])
    };
    PatchOperation::Add(AddOperation { path, value })
}

/// The webhook's routes: `POST /admission/inject`, taking and answering an AdmissionReview.
pub fn router() -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(review))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_REVIEW_BYTES))
}

/// kube-apiserver sends at most 3 MiB objects; a pod is far smaller.
const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;

async fn review(
    body: Result<Json<AdmissionReview<DynamicObject>>, JsonRejection>,
) -> (StatusCode, Json<Value>) {
    let review = match body {
        Ok(Json(review)) => review,
        Err(rejection) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": format!("not an AdmissionReview: {}", rejection.body_text())}),
                ),
            );
        }
    };
    let request: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(request) => request,
        Err(err) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": format!("not an AdmissionReview request: {err}")})),
            );
        }
    };
    let response = respond(&request);
    match serde_json::to_value(response.into_review()) {
        Ok(review) => (StatusCode::OK, Json(review)),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": format!("could not write the review: {err}")})),
        ),
    }
}

/// The answer to one request: unchanged, patched, or denied with the reason.
fn respond(request: &AdmissionRequest<DynamicObject>) -> AdmissionResponse {
    let response = AdmissionResponse::from(request);
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let Some(object) = request.object.as_ref().filter(|_| is_pod) else {
        return response;
    };
    let pod: Pod = match serde_json::to_value(object).and_then(serde_json::from_value) {
        Ok(pod) => pod,
        Err(err) => return response.deny(format!("the object is not a Pod: {err}")),
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    match plan(&pod) {
        Ok(None) => response,
        Ok(Some(patch)) => {
            tracing::info!(
                namespace,
                pod = pod
                    .metadata
                    .name
                    .as_deref()
                    .or(pod.metadata.generate_name.as_deref()),
                "injecting the coffer volume"
            );
            match response.with_patch(patch) {
                Ok(patched) => patched,
                Err(err) => AdmissionResponse::from(request)
                    .deny(format!("could not write the patch: {err}")),
            }
        }
        Err(err) => {
            tracing::info!(namespace, error = %err, "refused a pod asking for injection");
            response.deny(format!("coffer injection: {err}"))
        }
    }
}

#[cfg(test)]
mod tests;
