//! The KmsKey reconciler: a resource's spec becomes a key, its status shows the key.
//!
//! - A new resource claims a key id (its uid, or the id of the key that a deleted resource of
//!   the same name left), then the engine creates the material.
//! - The spec's description, `enabled`, rotation and policy are applied to the key; work that
//!   falls due (rotation) is done when the resource is requeued at its due time.
//! - Deleting the resource holds nothing up: no finalizer. The key's material lives in the
//!   controller's namespace, out of reach of the deletion, and [`schedule_abandoned`] starts the
//!   key's deletion window (`deletionWindowDays`) once the resource is gone, however it went
//!   (kubectl, its namespace, garbage collection of an owner). Re-applying a resource of the
//!   same name within the window takes the key back; so does `CancelKeyDeletion`, which
//!   re-creates the resource.
//! - Status is computed from the key record alone, and written only when it differs, so the
//!   controller never wakes itself.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource as _, ResourceExt as _};

use super::conditions::{self, time};
use crate::engine::Clock;
use crate::engine::kms::model::{KeyRecord, KeyState as EngineState};
use crate::engine::kms::{KeyEvent, Kms, KmsError};
use crate::resources::kmskey::{KeyState, KeyVersion, KmsKey, KmsKeyStatus};
use crate::store::StoreError;
use crate::store::kubernetes::versioned::awaits_its_record;
use crate::store::kubernetes::writeback::spec_written_back;
use crate::store::kubernetes::{self, AbandonedKey, ClaimedElsewhere, KmsKeys, mapping};

/// Longest wait before a resource is looked at again when nothing is due.
const RESYNC: Duration = Duration::from_secs(3600);

/// What the reconciler works with.
pub struct Context {
    pub kms: Arc<Kms>,
    /// The keeper of KMS key records, whose caches the reconciler reads.
    pub store: Arc<KmsKeys>,
    pub client: kube::Client,
    pub recorder: Recorder,
    pub clock: Arc<dyn Clock>,
    pub metrics: Option<crate::metrics::ReconcileMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("KMS engine: {0}")]
    Kms(#[from] KmsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("Kubernetes API request failed")]
    Api(#[source] kube::Error),
    #[error("resource has no namespace")]
    NoNamespace,
    #[error("resource has no uid")]
    NoUid,
}

impl ReconcileError {
    /// A fixed name per kind of failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Kms(_) => "engine",
            ReconcileError::Store(_) => "store",
            ReconcileError::Api(_) => "api",
            ReconcileError::NoNamespace | ReconcileError::NoUid => "invalid",
        }
    }
}

/// Reconciles one KmsKey.
pub async fn reconcile(resource: Arc<KmsKey>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = resource.namespace().ok_or(ReconcileError::NoNamespace)?;
    tracing::debug!(namespace = %namespace, name = %resource.name_any(), generation = ?resource.metadata.generation, "reconciling KmsKey");
    if resource.metadata.deletion_timestamp.is_some() {
        // Going: its key's deletion window is started by `schedule_abandoned`.
        return Ok(Action::await_change());
    }
    // The copy handed in may predate this replica's own last writes (a claim, a status): work
    // from the newest, or the same status and Events would be written twice.
    let resource = ctx.store.freshest(&resource);
    apply(&resource, &namespace, &ctx).await
}

/// How long to wait after a failure.
pub fn error_policy(_resource: Arc<KmsKey>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %crate::redact::chain(error), "KmsKey reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

/// The key id the resource's `coffer.dev/key-id` label claims, if any.
fn claimed_key(resource: &KmsKey) -> Option<Arc<KmsKey>> {
    kubernetes::key_id_of(resource).map(|_| Arc::new(resource.clone()))
}

/// The key a resource stands for: the one whose record names it (its own, or the key a deleted
/// resource of the same name left), else the one its label claimed before the key was made,
/// else its own uid. A label naming a key whose record names another resource claims nothing.
fn key_id_for(
    resource: &KmsKey,
    claimed: Option<&KmsKey>,
    store: &KmsKeys,
) -> Result<String, Claim> {
    if let Some(key_id) = store.key_of_resource(resource) {
        return Ok(key_id);
    }
    if let Some(key_id) = claimed.and_then(kubernetes::key_id_of) {
        store
            .check_claim(resource, key_id)
            .map_err(Claim::Elsewhere)?;
        return Ok(key_id.to_owned());
    }
    resource.uid().ok_or(Claim::NoUid)
}

enum Claim {
    Elsewhere(ClaimedElsewhere),
    NoUid,
}

async fn apply(
    resource: &KmsKey,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let claimed = claimed_key(resource);
    let key_id = match key_id_for(resource, claimed.as_deref(), &ctx.store) {
        Ok(key_id) => key_id,
        Err(Claim::NoUid) => return Err(ReconcileError::NoUid),
        Err(Claim::Elsewhere(ClaimedElsewhere { owner })) => {
            let problem = Problem {
                reason: "KeyClaimedElsewhere",
                message: format!(
                    "The label {} names the key of KmsKey {owner}; remove the label to get a key of its own.",
                    kubernetes::KEY_ID_LABEL
                ),
            };
            if ready_reason(resource) != Some(problem.reason) {
                publish_as(
                    ctx,
                    resource,
                    EventType::Warning,
                    problem.reason,
                    &problem.message,
                )
                .await;
            }
            let status = refused_status(
                resource,
                None,
                &ctx.kms,
                namespace,
                problem,
                ctx.clock.now(),
            );
            write_status(ctx, resource, status).await?;
            return Ok(Action::await_change());
        }
    };
    let resource = match claimed {
        Some(claimed) if kubernetes::key_id_of(&claimed) == Some(key_id.as_str()) => claimed,
        _ => ctx.store.claim(resource, &key_id).await?,
    };
    let declared = mapping::declared_key(namespace, &resource.spec);
    let previous = ctx.kms.key_record(namespace, &key_id).await?;
    // A KmsKey the store made for CreateKey: the record follows at once; making one here first
    // would fail the API's call.
    if previous.is_none() && awaits_its_record(resource.as_ref(), ctx.clock.now()) {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    // Taking a key back from its deletion window on the word of a cached copy would let a
    // reconcile queued before a deletion undo it: ask the API server that this object still is.
    if previous
        .as_ref()
        .is_some_and(|record| record.state == EngineState::PendingDeletion)
        && !ctx.store.is_live(&resource).await?
    {
        return Ok(Action::await_change());
    }
    // A spec the store wrote back from the API is no declaration: the record is its source, and
    // may have moved on since through further calls.
    let written_back = match previous.clone() {
        Some(record) if spec_written_back(resource.as_ref()) => Some(record),
        _ => None,
    };
    let applied = match written_back {
        Some(record) => Ok((record, Vec::new())),
        None => ctx.kms.apply_declared(namespace, &key_id, &declared).await,
    };
    let (record, events) = match applied {
        Ok(applied) => applied,
        Err(err) if is_spec_error(&err) => {
            // The spec cannot be applied as written: say so and wait for it to change.
            let problem = Problem {
                reason: "SpecRefused",
                message: err.to_string(),
            };
            let status = refused_status(
                &resource,
                previous.as_ref(),
                &ctx.kms,
                namespace,
                problem,
                ctx.clock.now(),
            );
            write_status(ctx, &resource, status).await?;
            return Ok(Action::await_change());
        }
        Err(err) => return Err(err.into()),
    };
    for event in &events {
        publish(ctx, &resource, event.reason(), note(*event)).await;
    }
    // A resource the store made for an existing key: say how the key came to be.
    if resource.status.is_none() && previous.is_some() {
        let event = if kubernetes::recreated_by_cancellation(&resource) {
            KeyEvent::DeletionCancelled
        } else {
            KeyEvent::Created
        };
        if !events.contains(&event) {
            publish(ctx, &resource, event.reason(), note(event)).await;
        }
    }
    // Work that fell due while nobody looked (the scheduler usually did it already).
    let next_due = ctx.kms.run_due_key(namespace, &key_id).await?;
    let record = ctx
        .kms
        .key_record(namespace, &key_id)
        .await?
        .unwrap_or(record);
    // Versions added since the status last showed them: by the scheduler, by the API, or here.
    let rotated_from = resource
        .status
        .as_ref()
        .map(|status| status.versions.len())
        .filter(|count| *count > 0);
    if let Some(before) = rotated_from
        && record.versions.len() > before
    {
        publish(
            ctx,
            &resource,
            "Rotated",
            "A new key version now encrypts; older versions keep decrypting.",
        )
        .await;
    }
    let problem = alias_conflict(&resource, namespace, &ctx.store);
    if let Some(problem) = &problem
        && ready_reason(&resource) != Some(problem.reason)
    {
        publish_as(
            ctx,
            &resource,
            EventType::Warning,
            problem.reason,
            &problem.message,
        )
        .await;
    }
    let status = key_status(
        &resource,
        &record,
        &ctx.kms,
        namespace,
        ctx.clock.now(),
        problem,
    );
    write_status(ctx, &resource, status).await?;
    let wait = next_due
        .map(|at| {
            Duration::from_secs(u64::try_from(at.saturating_sub(ctx.clock.now())).unwrap_or(0) + 1)
        })
        .map_or(RESYNC, |wait| wait.min(RESYNC));
    Ok(Action::requeue(wait))
}

/// Starts the deletion window of every key whose KmsKey is gone, each time the store hears that
/// one may have gone, until the future is dropped (when leadership ends). The API server is
/// asked before each key is touched, since the caches may lag behind a resource just made.
pub async fn schedule_abandoned(ctx: Arc<Context>) {
    crate::store::kubernetes::KindStore::synced(ctx.store.as_ref()).await;
    let gone = ctx.store.resources_gone();
    loop {
        match sweep_abandoned(&ctx).await {
            Ok(()) => gone.notified().await,
            Err(err) => {
                tracing::warn!(error = %crate::redact::chain(&err), "could not start the deletion window of a key whose KmsKey is gone; retrying");
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        }
    }
}

pub(crate) async fn sweep_abandoned(ctx: &Context) -> Result<(), ReconcileError> {
    for key in ctx.store.abandoned_keys() {
        if !ctx.store.confirm_abandoned(&key).await? {
            continue;
        }
        let Some((record, event)) = ctx
            .kms
            .schedule_declared_deletion(&key.namespace, &key.key_id)
            .await?
        else {
            continue;
        };
        if event.is_none() {
            continue;
        }
        tracing::info!(namespace = %key.namespace, kmskey = %key.resource_name, key_id = %key.key_id, "KmsKey gone: the key is pending deletion");
        let note = match record
            .deletion_date
            .and_then(|at| k8s_openapi::jiff::Timestamp::from_second(at).ok())
        {
            Some(at) => format!(
                "The key material will be destroyed at {at}. Re-apply this KmsKey, or call CancelKeyDeletion, to keep it."
            ),
            None => "The key is pending deletion.".to_owned(),
        };
        publish_to(
            ctx,
            &gone_reference(&key),
            EventType::Normal,
            "DeletionScheduled",
            &note,
        )
        .await;
    }
    Ok(())
}

/// The deleted resource an Event tells of.
fn gone_reference(key: &AbandonedKey) -> ObjectReference {
    conditions::reference_to::<KmsKey>(&key.namespace, &key.resource_name, key.resource_uid.clone())
}

fn is_spec_error(err: &KmsError) -> bool {
    matches!(
        err,
        KmsError::Validation(_)
            | KmsError::MalformedPolicyDocument(_)
            | KmsError::UnsupportedOperation(_)
    )
}

fn note(event: KeyEvent) -> &'static str {
    match event {
        KeyEvent::Created => "Key material was created.",
        KeyEvent::Enabled => "The key is enabled.",
        KeyEvent::Disabled => "The key is disabled; it refuses every cryptographic operation.",
        KeyEvent::DeletionScheduled => "The key is pending deletion.",
        KeyEvent::DeletionCancelled => "The deletion was cancelled; the key is back.",
    }
}

/// The aliases of the spec that an older KmsKey of the namespace holds.
fn alias_conflict(resource: &KmsKey, namespace: &str, store: &KmsKeys) -> Option<Problem> {
    let taken: Vec<String> = resource
        .spec
        .aliases
        .iter()
        .filter_map(|alias| {
            let holder = store.alias_holder(namespace, alias)?;
            (holder.uid() != resource.uid())
                .then(|| format!("{alias} (held by {})", holder.name_any()))
        })
        .collect();
    (!taken.is_empty()).then(|| Problem {
        reason: "AliasConflict",
        message: format!(
            "Another KmsKey of this namespace already has these aliases: {}.",
            taken.join(", ")
        ),
    })
}

/// The reason of the Ready condition the resource shows now.
fn ready_reason(resource: &KmsKey) -> Option<&str> {
    conditions::ready_reason(&resource.status.as_ref()?.conditions)
}

async fn publish(ctx: &Context, resource: &KmsKey, reason: &str, note: &str) {
    publish_as(ctx, resource, EventType::Normal, reason, note).await;
}

async fn publish_as(ctx: &Context, resource: &KmsKey, type_: EventType, reason: &str, note: &str) {
    publish_to(ctx, &resource.object_ref(&()), type_, reason, note).await;
}

async fn publish_to(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    conditions::publish(&ctx.recorder, reference, type_, reason, note).await;
}

fn resource_state(state: EngineState) -> KeyState {
    match state {
        EngineState::Enabled => KeyState::Enabled,
        EngineState::Disabled => KeyState::Disabled,
        EngineState::PendingDeletion => KeyState::PendingDeletion,
        EngineState::PendingImport => KeyState::PendingImport,
    }
}

/// The Ready condition, keeping the previous transition time when its status is unchanged.
fn ready_condition(
    resource: &KmsKey,
    ready: bool,
    reason: &str,
    message: String,
    now: i64,
) -> Condition {
    let previous = resource
        .status
        .as_ref()
        .map_or(&[][..], |status| &status.conditions[..]);
    conditions::ready_condition(
        previous,
        resource.metadata.generation,
        ready,
        reason,
        message,
        now,
    )
}

pub use super::conditions::Problem;

/// The status a key record shows as. Deterministic: the same record gives the same status.
pub fn key_status(
    resource: &KmsKey,
    record: &KeyRecord,
    kms: &Kms,
    namespace: &str,
    now: i64,
    problem: Option<Problem>,
) -> KmsKeyStatus {
    let state = resource_state(record.state);
    let ready = match problem {
        Some(problem) => ready_condition(resource, false, problem.reason, problem.message, now),
        None => ready_condition(
            resource,
            true,
            record.state.as_str(),
            format!("The key is {}.", record.state.as_str()),
            now,
        ),
    };
    KmsKeyStatus {
        key_id: Some(record.key_id.clone()),
        arn: Some(kms.arn_of(namespace, &record.key_id)),
        key_state: Some(state),
        key_spec: Some(mapping::resource_spec(record.key_spec)),
        key_usage: Some(mapping::resource_usage(record.key_usage)),
        versions: record
            .versions
            .iter()
            .filter_map(|version| {
                Some(KeyVersion {
                    id: version.id.to_string(),
                    creation_time: time(version.created)?,
                })
            })
            .collect(),
        current_version: record.current_version().map(|id| id.to_string()),
        next_rotation: record
            .rotation_enabled
            .then_some(record.next_rotation)
            .flatten()
            .and_then(time),
        deletion_date: record.deletion_date.and_then(time),
        public_key: record.public_key.clone(),
        conditions: vec![ready],
        observed_generation: resource.metadata.generation,
    }
}

fn refused_status(
    resource: &KmsKey,
    record: Option<&KeyRecord>,
    kms: &Kms,
    namespace: &str,
    problem: Problem,
    now: i64,
) -> KmsKeyStatus {
    match record {
        Some(record) => key_status(resource, record, kms, namespace, now, Some(problem)),
        None => KmsKeyStatus {
            conditions: vec![ready_condition(
                resource,
                false,
                problem.reason,
                problem.message,
                now,
            )],
            observed_generation: resource.metadata.generation,
            ..KmsKeyStatus::default()
        },
    }
}

async fn write_status(
    ctx: &Context,
    resource: &KmsKey,
    status: KmsKeyStatus,
) -> Result<(), ReconcileError> {
    if resource.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let namespace = resource.namespace().ok_or(ReconcileError::NoNamespace)?;
    let written = conditions::apply_status(&ctx.client, &namespace, resource, &status)
        .await
        .map_err(ReconcileError::Api)?;
    ctx.store.remember(written);
    Ok(())
}
