//! Restart on change: a Deployment, StatefulSet or DaemonSet annotated
//! `coffer.dev/restart-on-change: secret/db, parameter//app/url` is rolled when the CURRENT
//! version of a secret or the latest version of a parameter it names changes, by writing a
//! digest of those versions into its pod template. docs/restart-on-change.md is the user's view.
//!
//! The digest last acted on is kept on the workload itself (a metadata annotation, which rolls
//! nothing), so a new leader picks up where the last one stopped: a change made while no
//! controller ran rolls the workload once, and a workload seen for the first time is only
//! recorded. Changes are gathered for `debounce` after the first one, so a burst makes one
//! rollout.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{EventType, Recorder};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_objects};
use kube::{Api, Client, Resource};
use sha2::{Digest, Sha256};
use tokio::sync::broadcast;
use tokio::time::Instant;

use super::conditions::publish;
use crate::delivery::reference::{self, ObjectReference as ValueReference, ReferenceKind};
use crate::engine::parameters::Parameters;
use crate::engine::secrets::Secrets;
use crate::store::kubernetes::versioned::RecordChanged;

/// The annotation that names what a workload follows.
pub const RESTART_ANNOTATION: &str = "coffer.dev/restart-on-change";
/// The digest of the versions a workload was last rolled for (or first seen with): on the
/// workload's metadata, and (once rolled) on its pod template.
pub const VERSIONS_ANNOTATION: &str = "coffer.dev/restart-on-change-versions";
/// Field manager of the patches.
const MANAGER: &str = "coffer";

/// Why a workload could not be rolled.
#[derive(Debug, thiserror::Error)]
pub enum RestartError {
    #[error("reading {reference}: {message}")]
    Read { reference: String, message: String },
    #[error("patching {kind} {namespace}/{name}: {source}")]
    Patch {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The kinds of workload that roll.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

impl WorkloadKind {
    fn name(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

/// One workload.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadKey {
    pub kind: WorkloadKind,
    pub namespace: String,
    pub name: String,
}

/// What the watch says of a workload that carries the annotation.
#[derive(Clone, Debug)]
pub struct Seen {
    pub key: WorkloadKey,
    pub uid: Option<String>,
    /// The annotation's text.
    pub annotation: String,
    /// The digest recorded on the workload, if any.
    pub recorded: Option<String>,
}

/// What to do for a workload now.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Record `digest` on the workload's metadata without rolling it: first sight.
    Record(String),
    /// Roll the workload: write `digest` into its pod template (and metadata).
    Roll(String),
}

#[derive(Debug)]
struct Tracked {
    uid: Option<String>,
    annotation: String,
    /// The references that follow changes; pinned ones are left out (and warned about).
    references: Vec<ValueReference>,
    /// What the annotation got wrong, to warn about once per annotation text.
    problem: Option<String>,
    warned_for: Option<String>,
    recorded: Option<String>,
    /// When the first change not yet acted on was seen.
    changed_since: Option<Instant>,
}

/// The decisions, apart from any I/O: which workloads follow what, and when each rolls.
#[derive(Debug)]
pub struct Tracker {
    debounce: Duration,
    workloads: BTreeMap<WorkloadKey, Tracked>,
}

impl Tracker {
    pub fn new(debounce: Duration) -> Self {
        Tracker {
            debounce,
            workloads: BTreeMap::new(),
        }
    }

    /// Takes in what the watch saw of a workload.
    pub fn seen(&mut self, seen: Seen) {
        let (references, problem) = follows(&seen.annotation);
        let previous = self.workloads.remove(&seen.key);
        let warned_for = previous
            .as_ref()
            .and_then(|tracked| tracked.warned_for.clone())
            .filter(|warned| *warned == seen.annotation);
        let changed_since = previous.and_then(|tracked| tracked.changed_since);
        self.workloads.insert(
            seen.key,
            Tracked {
                uid: seen.uid,
                annotation: seen.annotation,
                references,
                problem,
                warned_for,
                recorded: seen.recorded,
                changed_since,
            },
        );
    }

    /// Forgets a workload (deleted, or its annotation removed).
    pub fn forget(&mut self, key: &WorkloadKey) {
        self.workloads.remove(key);
    }

    /// Forgets the workloads of `kind` not in `kept`: the watch listed anew.
    pub fn retain(&mut self, kind: WorkloadKind, kept: &[WorkloadKey]) {
        self.workloads
            .retain(|key, _| key.kind != kind || kept.contains(key));
    }

    /// The workloads that name `name` of `kind` in `namespace`.
    pub fn naming(&self, namespace: &str, kind: ReferenceKind, name: &str) -> Vec<WorkloadKey> {
        self.workloads
            .iter()
            .filter(|(key, tracked)| {
                key.namespace == namespace
                    && tracked
                        .references
                        .iter()
                        .any(|reference| reference.kind == kind && reference.name == name)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    pub fn references(&self, key: &WorkloadKey) -> Vec<ValueReference> {
        self.workloads
            .get(key)
            .map(|tracked| tracked.references.clone())
            .unwrap_or_default()
    }

    /// The warning to publish for `key`, once per annotation text.
    pub fn take_warning(&mut self, key: &WorkloadKey) -> Option<String> {
        let tracked = self.workloads.get_mut(key)?;
        let problem = tracked.problem.clone()?;
        if tracked.warned_for.as_deref() == Some(tracked.annotation.as_str()) {
            return None;
        }
        tracked.warned_for = Some(tracked.annotation.clone());
        Some(problem)
    }

    /// `current` is the digest of the versions `key` names now. A first sight records it; a
    /// change starts the debounce (or joins one under way).
    pub fn observe(&mut self, key: &WorkloadKey, current: &str, now: Instant) -> Action {
        let Some(tracked) = self.workloads.get_mut(key) else {
            return Action::Nothing;
        };
        match &tracked.recorded {
            None => {
                tracked.recorded = Some(current.to_owned());
                tracked.changed_since = None;
                Action::Record(current.to_owned())
            }
            Some(recorded) if recorded == current => {
                tracked.changed_since = None;
                Action::Nothing
            }
            Some(_) => {
                tracked.changed_since.get_or_insert(now);
                Action::Nothing
            }
        }
    }

    /// The workloads whose debounce is over at `now`.
    pub fn due(&self, now: Instant) -> Vec<WorkloadKey> {
        self.workloads
            .iter()
            .filter(|(_, tracked)| {
                tracked
                    .changed_since
                    .is_some_and(|since| since + self.debounce <= now)
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// When the next debounce ends.
    pub fn next_due(&self) -> Option<Instant> {
        self.workloads
            .values()
            .filter_map(|tracked| tracked.changed_since)
            .min()
            .map(|since| since + self.debounce)
    }

    /// Called for a due workload with the digest of its versions now.
    pub fn fire(&mut self, key: &WorkloadKey, current: &str) -> Action {
        let Some(tracked) = self.workloads.get_mut(key) else {
            return Action::Nothing;
        };
        tracked.changed_since = None;
        if tracked.recorded.as_deref() == Some(current) {
            return Action::Nothing;
        }
        tracked.recorded = Some(current.to_owned());
        Action::Roll(current.to_owned())
    }

    /// Puts back a change whose rollout failed, to try again after another debounce.
    pub fn retry(&mut self, key: &WorkloadKey, previous: Option<String>, now: Instant) {
        if let Some(tracked) = self.workloads.get_mut(key) {
            tracked.recorded = previous;
            tracked.changed_since = Some(now);
        }
    }

    fn uid(&self, key: &WorkloadKey) -> Option<String> {
        self.workloads
            .get(key)
            .and_then(|tracked| tracked.uid.clone())
    }

    fn recorded(&self, key: &WorkloadKey) -> Option<String> {
        self.workloads
            .get(key)
            .and_then(|tracked| tracked.recorded.clone())
    }
}

/// The references of an annotation that follow changes, and what is wrong with the rest.
fn follows(annotation: &str) -> (Vec<ValueReference>, Option<String>) {
    let mut problems = Vec::new();
    let mut references = Vec::new();
    for part in reference::split_list(annotation) {
        match ValueReference::parse(part) {
            Err(err) => problems.push(err.to_string()),
            Ok(found) if found.kind == ReferenceKind::Parameters => problems.push(format!(
                "{found}: name secrets and parameters one by one (secret/NAME, parameter/NAME)"
            )),
            Ok(found) if !found.follows_changes() => problems.push(format!(
                "{found} is pinned to a version, label or stage, which never changes: it never restarts anything"
            )),
            Ok(mut found) => {
                // A property or mode changes nothing about which version is current.
                found.property = None;
                found.options.clear();
                if !references.contains(&found) {
                    references.push(found);
                }
            }
        }
    }
    let problem =
        (!problems.is_empty()).then(|| format!("{RESTART_ANNOTATION}: {}", problems.join("; ")));
    (references, problem)
}

/// The digest of `versions` (each reference with the version it is at, `-` for none).
pub fn digest(versions: &[(String, String)]) -> String {
    let mut sorted: Vec<_> = versions.iter().collect();
    sorted.sort();
    let mut hasher = Sha256::new();
    for (reference, version) in sorted {
        hasher.update(reference.as_bytes());
        hasher.update([0]);
        hasher.update(version.as_bytes());
        hasher.update([0]);
    }
    let full = hasher.finalize();
    hex::encode(full.get(..16).unwrap_or_default())
}

/// What the leader's task needs.
pub struct Context {
    pub client: Client,
    pub secrets: Arc<Secrets>,
    pub parameters: Arc<Parameters>,
    pub recorder: Recorder,
    pub debounce: Duration,
}

/// A change that may concern some workloads.
enum Wake {
    Workload(WorkloadKind, Event<Seen>),
    Record {
        kind: ReferenceKind,
        namespace: String,
        name: String,
    },
    /// A record feed lagged: look at every workload again.
    Everything,
}

/// The records written, as wakes.
fn record_changes(
    changes: broadcast::Receiver<RecordChanged>,
    kind: ReferenceKind,
) -> impl Stream<Item = Wake> + Send + 'static {
    futures::stream::unfold(changes, move |mut changes| async move {
        let wake = match changes.recv().await {
            Ok(changed) => Wake::Record {
                kind,
                namespace: changed.namespace,
                name: changed.name,
            },
            Err(broadcast::error::RecvError::Lagged(_)) => Wake::Everything,
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((wake, changes))
    })
}

/// The leader's task: never returns while the watches run. `secret_changes` and
/// `parameter_changes` say which records were written (by the API, a rotation, another
/// replica).
pub async fn run(
    ctx: Arc<Context>,
    secret_changes: broadcast::Receiver<RecordChanged>,
    parameter_changes: broadcast::Receiver<RecordChanged>,
) {
    let wakes = futures::stream::select_all([
        watch::<Deployment>(&ctx.client, WorkloadKind::Deployment).boxed(),
        watch::<StatefulSet>(&ctx.client, WorkloadKind::StatefulSet).boxed(),
        watch::<DaemonSet>(&ctx.client, WorkloadKind::DaemonSet).boxed(),
        record_changes(secret_changes, ReferenceKind::Secret).boxed(),
        record_changes(parameter_changes, ReferenceKind::Parameter).boxed(),
    ]);
    tokio::pin!(wakes);
    let mut tracker = Tracker::new(ctx.debounce);
    let mut listing: HashMap<WorkloadKind, Vec<WorkloadKey>> = HashMap::new();
    loop {
        let next = tracker.next_due();
        let wake = tokio::select! {
            wake = wakes.next() => match wake {
                Some(wake) => Some(wake),
                None => return,
            },
            () = sleep_until(next) => None,
        };
        let touched = match wake {
            None => Vec::new(),
            Some(Wake::Workload(kind, event)) => take_in(&mut tracker, &mut listing, kind, event),
            Some(Wake::Record {
                kind,
                namespace,
                name,
            }) => tracker.naming(&namespace, kind, &name),
            Some(Wake::Everything) => tracker.workloads.keys().cloned().collect(),
        };
        for key in touched {
            if let Some(problem) = tracker.take_warning(&key) {
                let reference = workload_reference(&key, tracker.uid(&key));
                publish(
                    &ctx.recorder,
                    &reference,
                    EventType::Warning,
                    "RestartOnChangeIgnored",
                    &problem,
                )
                .await;
            }
            let current = match versions_digest(&ctx, &key, &tracker.references(&key)).await {
                Ok(current) => current,
                Err(err) => {
                    tracing::warn!(error = %err, "could not read what a workload follows");
                    continue;
                }
            };
            if let Action::Record(digest) = tracker.observe(&key, &current, Instant::now())
                && let Err(err) = record(&ctx.client, &key, &digest).await
            {
                tracing::warn!(error = %err, "could not record the versions a workload follows");
            }
        }
        for key in tracker.due(Instant::now()) {
            let previous = tracker.recorded(&key);
            let current = match versions_digest(&ctx, &key, &tracker.references(&key)).await {
                Ok(current) => current,
                Err(err) => {
                    tracing::warn!(error = %err, "could not read what a workload follows");
                    tracker.retry(&key, previous, Instant::now());
                    continue;
                }
            };
            if let Action::Roll(digest) = tracker.fire(&key, &current) {
                match roll(&ctx.client, &key, &digest).await {
                    Ok(()) => {
                        tracing::info!(
                            kind = key.kind.name(),
                            namespace = %key.namespace,
                            name = %key.name,
                            "rolled a workload for changed values"
                        );
                        let names: Vec<String> = tracker
                            .references(&key)
                            .iter()
                            .map(ToString::to_string)
                            .collect();
                        publish(
                            &ctx.recorder,
                            &workload_reference(&key, tracker.uid(&key)),
                            EventType::Normal,
                            "RestartedOnChange",
                            &format!("rolled for a new version of {}", names.join(", ")),
                        )
                        .await;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "could not roll a workload; trying again");
                        tracker.retry(&key, previous, Instant::now());
                    }
                }
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => futures::future::pending().await,
    }
}

/// Updates the tracker from one watch event; returns the workloads to look at.
fn take_in(
    tracker: &mut Tracker,
    listing: &mut HashMap<WorkloadKind, Vec<WorkloadKey>>,
    kind: WorkloadKind,
    event: Event<Seen>,
) -> Vec<WorkloadKey> {
    match event {
        Event::Init => {
            listing.insert(kind, Vec::new());
            Vec::new()
        }
        Event::InitApply(seen) => {
            listing.entry(kind).or_default().push(seen.key.clone());
            let key = seen.key.clone();
            tracker.seen(seen);
            vec![key]
        }
        Event::InitDone => {
            let kept = listing.remove(&kind).unwrap_or_default();
            tracker.retain(kind, &kept);
            Vec::new()
        }
        Event::Apply(seen) => {
            let key = seen.key.clone();
            tracker.seen(seen);
            vec![key]
        }
        Event::Delete(seen) => {
            tracker.forget(&seen.key);
            Vec::new()
        }
    }
}

/// The metadata watch of one kind, as [`Seen`]; a workload without the annotation arrives as a
/// deletion, so that removing the annotation stops following.
fn watch<K>(client: &Client, kind: WorkloadKind) -> impl Stream<Item = Wake> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
    K: Send + Sync + 'static,
{
    // Metadata alone: the annotations are all this needs, and pod templates are large.
    let api: Api<PartialObjectMeta<K>> = Api::all(client.clone());
    watch_objects(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| async move {
            match event {
                Ok(event) => Some(Wake::Workload(kind, annotated_only(kind, event))),
                Err(err) => {
                    tracing::warn!(kind = kind.name(), error = %err, "workload watch failed; retrying");
                    None
                }
            }
        })
}

fn seen<K>(kind: WorkloadKind, meta: &PartialObjectMeta<K>) -> Seen {
    let annotations = meta.metadata.annotations.clone().unwrap_or_default();
    Seen {
        key: WorkloadKey {
            kind,
            namespace: meta.metadata.namespace.clone().unwrap_or_default(),
            name: meta.metadata.name.clone().unwrap_or_default(),
        },
        uid: meta.metadata.uid.clone(),
        annotation: annotations
            .get(RESTART_ANNOTATION)
            .cloned()
            .unwrap_or_default(),
        recorded: annotations.get(VERSIONS_ANNOTATION).cloned(),
    }
}

/// The event as [`Seen`]s; a workload without the annotation is gone as far as restarts go
/// (and, left out of a listing, is forgotten at its end).
fn annotated_only<K>(kind: WorkloadKind, event: Event<PartialObjectMeta<K>>) -> Event<Seen> {
    // A workload without the annotation is a deletion.
    let annotated = |meta: PartialObjectMeta<K>, apply: fn(Seen) -> Event<Seen>| {
        let seen = seen(kind, &meta);
        if seen.annotation.trim().is_empty() {
            Event::Delete(seen)
        } else {
            apply(seen)
        }
    };
    match event {
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
        Event::Delete(meta) => Event::Delete(seen(kind, &meta)),
        Event::Apply(meta) => annotated(meta, Event::Apply),
        Event::InitApply(meta) => annotated(meta, Event::InitApply),
    }
}

/// The digest of the versions `references` are at now, in `key`'s namespace.
async fn versions_digest(
    ctx: &Context,
    key: &WorkloadKey,
    references: &[ValueReference],
) -> Result<String, RestartError> {
    let mut versions = Vec::with_capacity(references.len());
    for reference in references {
        let read_error = |message: String| RestartError::Read {
            reference: format!("{reference} in {}", key.namespace),
            message,
        };
        let version = match reference.kind {
            ReferenceKind::Secret => ctx
                .secrets
                .declared_record(&key.namespace, &reference.name)
                .await
                .map_err(|err| read_error(err.to_string()))?
                .and_then(|record| {
                    record
                        .version_with(crate::engine::secrets::CURRENT)
                        .map(str::to_owned)
                }),
            ReferenceKind::Parameter | ReferenceKind::Parameters => ctx
                .parameters
                .declared_record(&key.namespace, &reference.name)
                .await
                .map_err(|err| read_error(err.to_string()))?
                .map(|record| record.version.to_string()),
        };
        versions.push((
            reference.to_string(),
            version.unwrap_or_else(|| "-".to_owned()),
        ));
    }
    Ok(digest(&versions))
}

/// Records `digest` on the workload's metadata: rolls nothing.
async fn record(client: &Client, key: &WorkloadKey, digest: &str) -> Result<(), RestartError> {
    patch(
        client,
        key,
        serde_json::json!({"metadata": {"annotations": {VERSIONS_ANNOTATION: digest}}}),
    )
    .await
}

/// Writes `digest` into the pod template (which rolls the workload) and the metadata, in one
/// patch.
async fn roll(client: &Client, key: &WorkloadKey, digest: &str) -> Result<(), RestartError> {
    patch(
        client,
        key,
        serde_json::json!({
            "metadata": {"annotations": {VERSIONS_ANNOTATION: digest}},
            "spec": {"template": {"metadata": {"annotations": {VERSIONS_ANNOTATION: digest}}}},
        }),
    )
    .await
}

/// A merge patch rather than server-side apply: these objects belong to their users, and an
/// apply of two annotations would make Coffer an owner of fields it must never remove.
async fn patch(
    client: &Client,
    key: &WorkloadKey,
    body: serde_json::Value,
) -> Result<(), RestartError> {
    let params = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    let patch = Patch::Merge(&body);
    let outcome = match key.kind {
        WorkloadKind::Deployment => patch_one::<Deployment>(client, key, &params, &patch).await,
        WorkloadKind::StatefulSet => patch_one::<StatefulSet>(client, key, &params, &patch).await,
        WorkloadKind::DaemonSet => patch_one::<DaemonSet>(client, key, &params, &patch).await,
    };
    outcome.map_err(|source| RestartError::Patch {
        kind: key.kind.name(),
        namespace: key.namespace.clone(),
        name: key.name.clone(),
        source,
    })
}

async fn patch_one<K>(
    client: &Client,
    key: &WorkloadKey,
    params: &PatchParams,
    patch: &Patch<&serde_json::Value>,
) -> Result<(), kube::Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), &key.namespace)
        .patch(&key.name, params, patch)
        .await
        .map(drop)
}

fn workload_reference(key: &WorkloadKey, uid: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("apps/v1".to_owned()),
        kind: Some(key.kind.name().to_owned()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid,
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> WorkloadKey {
        WorkloadKey {
            kind: WorkloadKind::Deployment,
            namespace: "shop".into(),
            name: name.into(),
        }
    }

    fn seen(name: &str, annotation: &str, recorded: Option<&str>) -> Seen {
        Seen {
            key: key(name),
            uid: None,
            annotation: annotation.into(),
            recorded: recorded.map(str::to_owned),
        }
    }

    const DEBOUNCE: Duration = Duration::from_secs(5);

    #[test]
    fn first_sight_records_without_rolling() {
        let mut tracker = Tracker::new(DEBOUNCE);
        tracker.seen(seen("web", "secret/db", None));
        let now = Instant::now();
        assert_eq!(
            tracker.observe(&key("web"), "d1", now),
            Action::Record("d1".into())
        );
        assert_eq!(tracker.observe(&key("web"), "d1", now), Action::Nothing);
        assert!(tracker.next_due().is_none());
    }

    #[test]
    fn a_burst_of_changes_makes_one_rollout_after_the_debounce() {
        let mut tracker = Tracker::new(DEBOUNCE);
        tracker.seen(seen("web", "secret/db", Some("d0")));
        let start = Instant::now();
        for (step, digest) in ["d1", "d2", "d3", "d4", "d5"].into_iter().enumerate() {
            let at = start + Duration::from_millis(200 * step as u64);
            assert_eq!(tracker.observe(&key("web"), digest, at), Action::Nothing);
            assert!(
                tracker.due(at).is_empty(),
                "rolled before the debounce ended"
            );
        }
        assert_eq!(tracker.next_due(), Some(start + DEBOUNCE));
        let due = tracker.due(start + DEBOUNCE);
        assert_eq!(due, vec![key("web")]);
        assert_eq!(tracker.fire(&key("web"), "d5"), Action::Roll("d5".into()));
        assert!(tracker.due(start + DEBOUNCE * 3).is_empty());
        // The same versions again are no change.
        assert_eq!(
            tracker.observe(&key("web"), "d5", start + DEBOUNCE * 3),
            Action::Nothing
        );
    }

    #[test]
    fn a_change_undone_within_the_debounce_rolls_nothing() {
        let mut tracker = Tracker::new(DEBOUNCE);
        tracker.seen(seen("web", "secret/db", Some("d0")));
        let start = Instant::now();
        tracker.observe(&key("web"), "d1", start);
        assert_eq!(tracker.fire(&key("web"), "d0"), Action::Nothing);
    }

    #[test]
    fn a_new_leader_rolls_for_a_change_it_did_not_see() {
        // The digest on the workload is from before; the versions moved meanwhile.
        let mut tracker = Tracker::new(Duration::ZERO);
        tracker.seen(seen("web", "secret/db", Some("old")));
        let now = Instant::now();
        assert_eq!(tracker.observe(&key("web"), "new", now), Action::Nothing);
        assert_eq!(tracker.due(now), vec![key("web")]);
        assert_eq!(tracker.fire(&key("web"), "new"), Action::Roll("new".into()));
    }

    #[test]
    fn a_failed_rollout_is_tried_again() {
        let mut tracker = Tracker::new(DEBOUNCE);
        tracker.seen(seen("web", "secret/db", Some("d0")));
        let start = Instant::now();
        tracker.observe(&key("web"), "d1", start);
        assert_eq!(tracker.fire(&key("web"), "d1"), Action::Roll("d1".into()));
        tracker.retry(&key("web"), Some("d0".into()), start + DEBOUNCE);
        assert_eq!(tracker.due(start + DEBOUNCE * 2), vec![key("web")]);
        assert_eq!(tracker.fire(&key("web"), "d1"), Action::Roll("d1".into()));
    }

    #[test]
    fn pinned_and_malformed_references_are_warned_about_once() {
        let mut tracker = Tracker::new(DEBOUNCE);
        tracker.seen(seen(
            "web",
            "secret/db#password, secret/old?stage=AWSPREVIOUS parameter//p?version=3, bogus, parameters//all",
            None,
        ));
        let references = tracker.references(&key("web"));
        assert_eq!(references.len(), 1);
        assert_eq!(references[0].to_string(), "secret/db");
        let warning = tracker.take_warning(&key("web")).unwrap();
        for fragment in [
            "secret/old?stage=AWSPREVIOUS",
            "parameter//p?version=3",
            "\"bogus\"",
            "parameters//all",
        ] {
            assert!(warning.contains(fragment), "{warning}");
        }
        assert!(tracker.take_warning(&key("web")).is_none());
        // The same annotation seen again is not warned again; a new text is.
        tracker.seen(seen("web", "secret/db#password, secret/old?stage=AWSPREVIOUS parameter//p?version=3, bogus, parameters//all", None));
        assert!(tracker.take_warning(&key("web")).is_none());
        tracker.seen(seen("web", "secret/db?version=1", None));
        assert!(tracker.take_warning(&key("web")).is_some());
        assert!(tracker.references(&key("web")).is_empty());
    }

    #[test]
    fn workloads_are_found_by_what_they_name() {
        let mut tracker = Tracker::new(DEBOUNCE);
        tracker.seen(seen("web", "secret/db parameter//shop/url", None));
        tracker.seen(seen("api", "secret/db", None));
        let mut other = seen("web", "secret/db", None);
        other.key.namespace = "other".into();
        tracker.seen(other);
        assert_eq!(
            tracker.naming("shop", ReferenceKind::Secret, "db"),
            vec![key("api"), key("web")]
        );
        assert_eq!(
            tracker.naming("shop", ReferenceKind::Parameter, "/shop/url"),
            vec![key("web")]
        );
        assert!(
            tracker
                .naming("shop", ReferenceKind::Parameter, "db")
                .is_empty()
        );
        tracker.retain(WorkloadKind::Deployment, &[key("web")]);
        assert_eq!(
            tracker.naming("shop", ReferenceKind::Secret, "db"),
            vec![key("web")]
        );
        tracker.forget(&key("web"));
        assert!(
            tracker
                .naming("shop", ReferenceKind::Secret, "db")
                .is_empty()
        );
    }

    #[test]
    fn digests_depend_on_versions_not_on_order() {
        let a = digest(&[
            ("secret/a".into(), "v1".into()),
            ("parameter//b".into(), "3".into()),
        ]);
        let b = digest(&[
            ("parameter//b".into(), "3".into()),
            ("secret/a".into(), "v1".into()),
        ]);
        let c = digest(&[
            ("secret/a".into(), "v2".into()),
            ("parameter//b".into(), "3".into()),
        ]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.len(), 32);
    }
}
