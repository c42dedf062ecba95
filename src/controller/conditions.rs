//! What every reconciler reports the same way: the Ready condition, times in status, Events.

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Api, ResourceExt as _};
use serde::Serialize;

use crate::resources::common::CONDITION_READY;

/// Why a resource is not Ready: a condition reason and a message (never a value).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// A time in status, from seconds since the epoch.
pub fn time(seconds: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(seconds)
        .ok()
        .map(Time)
}

/// Whether the current generation of `resource`'s spec is applied already: the store wrote it
/// back from the API (the record is its source, and may have moved on since), or the status
/// (`conditions`, `observed_generation`) shows it applied and Ready. A refused spec is tried
/// again: what refused it (a key, a source) may be there now.
pub fn spec_applied<R: kube::Resource>(
    resource: &R,
    status: Option<(&[Condition], Option<i64>)>,
) -> bool {
    if crate::store::kubernetes::writeback::spec_written_back(resource) {
        return true;
    }
    let Some((conditions, observed_generation)) = status else {
        return false;
    };
    let generation = resource.meta().generation;
    generation.is_some()
        && observed_generation == generation
        && conditions
            .iter()
            .any(|condition| condition.type_ == CONDITION_READY && condition.status == "True")
}

/// The reason of the Ready condition among `conditions`.
pub fn ready_reason(conditions: &[Condition]) -> Option<&str> {
    conditions
        .iter()
        .find(|condition| condition.type_ == CONDITION_READY)
        .map(|condition| condition.reason.as_str())
}

/// The Ready condition for a resource at `generation` whose status shows `previous`, keeping
/// the previous transition time when its status is unchanged (so a settled status is stable).
pub fn ready_condition(
    previous: &[Condition],
    generation: Option<i64>,
    ready: bool,
    reason: &str,
    message: String,
    now: i64,
) -> Condition {
    let status = if ready { "True" } else { "False" };
    condition(
        previous,
        CONDITION_READY,
        generation,
        status,
        reason,
        message,
        now,
    )
}

/// A condition of `type_`, keeping the previous transition time when its status is unchanged.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    generation: Option<i64>,
    status: &str,
    reason: &str,
    message: String,
    now: i64,
) -> Condition {
    let previous = previous.iter().find(|condition| condition.type_ == type_);
    let last_transition_time = match previous {
        Some(previous) if previous.status == status => previous.last_transition_time.clone(),
        _ => time(now).unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
    };
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Publishes an Event about `reference`; a failure is a log line, not an error (a namespace
/// being deleted takes no new Events).
pub async fn publish(
    recorder: &Recorder,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note.to_owned()),
        action: reason.to_owned(),
        secondary: None,
    };
    if let Err(err) = recorder.publish(&event, reference).await {
        tracing::warn!(reason, error = %crate::redact::chain(&err), "could not publish an Event");
    }
}

/// A reference to a resource of kind `K` that may be gone, for an Event about it.
pub fn reference_to<K: kube::Resource<DynamicType = ()>>(
    namespace: &str,
    name: &str,
    uid: Option<String>,
) -> ObjectReference {
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        uid,
        ..ObjectReference::default()
    }
}

/// Writes a resource's status by server-side apply with the field manager `coffer`, and
/// returns the resource as written.
pub async fn apply_status<K, S>(
    client: &kube::Client,
    namespace: &str,
    resource: &K,
    status: &S,
) -> Result<K, kube::Error>
where
    K: kube::Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    Api::<K>::namespaced(client.clone(), namespace)
        .patch_status(
            &resource.name_any(),
            &PatchParams::apply(crate::store::kubernetes::FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
}
