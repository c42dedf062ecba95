//! The Secret reconciler: a resource's spec becomes a Secrets Manager secret, its status shows
//! the secret (never a value).
//!
//! - A new resource makes its secret, with a first value from its source when it declares one:
//!   `generate` (a random value, made only when the secret has none), `fromSecret` (a key of a
//!   core Secret, imported again whenever it differs from the current value, looked at every
//!   [`SOURCE_RECHECK`]) or `sealedValue` (opened for this namespace and name only; a new blob
//!   is a new version).
//! - Description, key, resource policy and recovery window are applied to the secret; the API's
//!   changes to them are written back into the spec by the store, so neither undoes the other.
//! - Deleting the resource holds nothing up: no finalizer. The secret's record lives in the
//!   controller's namespace, and [`schedule_abandoned`] schedules its deletion after
//!   `recoveryWindowDays` once the resource is gone, however it went. Re-applying the resource
//!   within the window restores the secret; so does RestoreSecret, which re-creates the
//!   resource.
//! - Status is computed from the record alone and written only when it differs.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource as _, ResourceExt as _};

use super::conditions::{self, time};
use super::sources;
use super::sync::{self, SyncState};
use crate::engine::Clock;
use crate::engine::kms::Kms;
use crate::engine::rotation::Step;
use crate::engine::secrets::{
    CURRENT, DeclaredSecret, DeclaredValue, RotationDeclared, SecretEvent, SecretRecord,
    SecretValue, Secrets, SecretsError,
};
use crate::resources::secret::{
    MAX_RECOVERY_WINDOW_DAYS, RotationState, RotationStatus, Secret, SecretStatus,
    SecretVersion as StatusVersion,
};
use crate::store::StoreError;
use crate::store::kubernetes::secret_mapping;
use crate::store::kubernetes::secrets::{AbandonedSecret, SecretRecords};
use crate::store::kubernetes::versioned::awaits_its_record;

/// Longest wait before a resource is looked at again when nothing is due.
const RESYNC: Duration = Duration::from_secs(3600);
/// How often a `fromSecret` source is compared with the current value.
pub const SOURCE_RECHECK: Duration = Duration::from_secs(30);

/// What the reconciler works with.
pub struct Context {
    pub secrets: Arc<Secrets>,
    pub kms: Arc<Kms>,
    /// The keeper of secret records, whose caches the reconciler reads.
    pub store: Arc<SecretRecords>,
    pub client: kube::Client,
    pub recorder: Recorder,
    pub clock: Arc<dyn Clock>,
    pub metrics: Option<crate::metrics::ReconcileMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Secrets Manager engine: {0}")]
    Secrets(#[from] SecretsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("Kubernetes API request failed")]
    Api(#[source] kube::Error),
    #[error("resource has no namespace")]
    NoNamespace,
}

impl ReconcileError {
    /// A fixed name per kind of failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ReconcileError::Secrets(_) => "engine",
            ReconcileError::Store(_) => "store",
            ReconcileError::Api(_) => "api",
            ReconcileError::NoNamespace => "invalid",
        }
    }
}

pub use super::conditions::Problem;

/// Reconciles one Secret.
pub async fn reconcile(resource: Arc<Secret>, ctx: Arc<Context>) -> Result<Action, ReconcileError> {
    let namespace = resource.namespace().ok_or(ReconcileError::NoNamespace)?;
    if resource.metadata.deletion_timestamp.is_some() {
        // Going: its deletion is scheduled by `schedule_abandoned`.
        return Ok(Action::await_change());
    }
    let resource = ctx.store.freshest(&resource);
    apply(&resource, &namespace, &ctx).await
}

/// How long to wait after a failure.
pub fn error_policy(_resource: Arc<Secret>, error: &ReconcileError, _ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %crate::redact::chain(error), "Secret reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

async fn apply(
    resource: &Secret,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = match resource.secret_name() {
        Ok(name) => name,
        Err(err) => {
            let problem = Problem {
                reason: "InvalidName",
                message: err.to_string(),
            };
            refuse(ctx, resource, None, problem).await?;
            return Ok(Action::await_change());
        }
    };
    let previous = ctx.secrets.declared_record(namespace, &name).await?;
    if previous.is_none() && awaits_its_record(resource, ctx.clock.now()) {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    // Taking a secret back from its deletion on the word of a cached copy would let a reconcile
    // queued before a deletion undo it: ask the API server that this object still is.
    if previous
        .as_ref()
        .is_some_and(|record| record.deleted.is_some())
        && !ctx.store.is_live(resource).await?
    {
        return Ok(Action::await_change());
    }
    // A spec already applied (its generation observed) is not applied again: the record may have
    // moved on through the API, and the spec follows it a moment later, written by the store.
    let declared = match &previous {
        Some(record) if spec_observed(resource) => DeclaredSecret {
            description: record.description.clone(),
            kms_key_id: record.kms_key_id.clone(),
            policy: record.policy.clone(),
            recovery_window_days: record
                .recovery_window_days
                .unwrap_or(i64::from(MAX_RECOVERY_WINDOW_DAYS)),
            rotation: RotationDeclared::Unchanged,
        },
        _ => secret_mapping::declared_secret(&resource.spec),
    };
    let (value, source_problem) =
        match declared_value(resource, namespace, previous.as_ref(), ctx).await {
            Ok(value) => (value, None),
            Err(problem) => (None, Some(problem)),
        };
    let (record, events) = match ctx
        .secrets
        .apply_declared(namespace, &name, &declared, value)
        .await
    {
        Ok(applied) => applied,
        Err(err) if is_spec_error(&err) => {
            let problem = Problem {
                reason: "SpecRefused",
                message: err.to_string(),
            };
            refuse(ctx, resource, previous.as_ref(), problem).await?;
            return Ok(Action::await_change());
        }
        Err(err) => return Err(err.into()),
    };
    for event in &events {
        let (reason, note) = match event {
            SecretEvent::Created => ("Created", "The secret was created.".to_owned()),
            SecretEvent::Restored => (
                "Restored",
                "The secret's scheduled deletion was cancelled.".to_owned(),
            ),
            SecretEvent::ValueChanged { version_id } => (
                "NewVersion",
                format!("Version {version_id} is now AWSCURRENT."),
            ),
        };
        publish(
            ctx,
            &resource.object_ref(&()),
            EventType::Normal,
            reason,
            &note,
        )
        .await;
    }
    if let Some(problem) = &source_problem {
        warn_once(ctx, resource, problem).await;
    }
    announce_rotation(ctx, resource, &record).await;
    let synced = sync_value(ctx, resource, namespace, &name, &record).await?;
    let mut status = secret_status(resource, &record, source_problem, ctx.clock.now());
    status.synced_secret.clone_from(&synced.secret);
    let previous = resource
        .status
        .as_ref()
        .map_or(&[][..], |status| &status.conditions[..]);
    status.conditions.extend(synced.condition(
        previous,
        resource.metadata.generation,
        ctx.clock.now(),
    ));
    write_status(ctx, resource, status).await?;
    Ok(Action::requeue(if resource.spec.from_secret.is_some() {
        SOURCE_RECHECK
    } else {
        RESYNC
    }))
}

/// Whether this generation of the spec is applied already ([`conditions::spec_applied`]).
fn spec_observed(resource: &Secret) -> bool {
    let status = resource.status.as_ref();
    conditions::spec_applied(
        resource,
        status.map(|status| (status.conditions.as_slice(), status.observed_generation)),
    )
}

/// The value the spec's source brings now, if any; a problem when the source cannot be read.
async fn declared_value(
    resource: &Secret,
    namespace: &str,
    record: Option<&SecretRecord>,
    ctx: &Context,
) -> Result<Option<DeclaredValue>, Problem> {
    let has_value = record.is_some_and(|record| record.version_with(CURRENT).is_some());
    if let Some(settings) = &resource.spec.generate {
        if has_value {
            return Ok(None);
        }
        let bytes =
            crate::rotation::generate::generated_value(settings, None).map_err(|err| Problem {
                reason: "SpecRefused",
                message: err.to_string(),
            })?;
        return Ok(Some(DeclaredValue {
            value: SecretValue {
                bytes,
                binary: false,
            },
            source: None,
        }));
    }
    if let Some(selector) = &resource.spec.from_secret {
        let Some(sources::Imported { bytes, fingerprint }) =
            sources::from_secret(&ctx.client, namespace, &selector.name, &selector.key).await?
        else {
            if has_value {
                // The source may go once imported.
                return Ok(None);
            }
            return Err(Problem {
                reason: "SourceMissing",
                message: format!(
                    "Secret {} with key {} was not found in this namespace.",
                    selector.name, selector.key
                ),
            });
        };
        let binary = std::str::from_utf8(bytes.expose()).is_err();
        let value = SecretValue { bytes, binary };
        // Imported once per change of the source object: a value put through the API since
        // stays until the source changes again.
        if record.is_some_and(|record| record.declared_source.as_deref() == Some(&fingerprint)) {
            return Ok(None);
        }
        let current = match record {
            Some(record) => ctx
                .secrets
                .is_declared_current(namespace, &record.name, &value)
                .await
                .map_err(|err| Problem {
                    reason: "SourceUnreadable",
                    message: err.to_string(),
                })?,
            None => false,
        };
        return Ok((!current).then_some(DeclaredValue {
            value,
            source: Some(fingerprint),
        }));
    }
    if let Some(sealed) = &resource.spec.sealed_value {
        if record.is_some_and(|record| {
            record.declared_source.as_deref() == Some(&sources::sealed_fingerprint(sealed))
        }) {
            return Ok(None);
        }
        let opened =
            sources::open_sealed(&ctx.kms, namespace, &resource.name_any(), sealed).await?;
        let binary = std::str::from_utf8(opened.bytes.expose()).is_err();
        return Ok(Some(DeclaredValue {
            value: SecretValue {
                bytes: opened.bytes,
                binary,
            },
            source: Some(opened.fingerprint),
        }));
    }
    Ok(None)
}

/// Schedules the deletion of every secret whose Secret resource is gone, each time the store
/// hears that one may have gone, and sweeps values no record names, until the future is dropped
/// (when leadership ends).
pub async fn schedule_abandoned(ctx: Arc<Context>) {
    crate::store::kubernetes::KindStore::synced(ctx.store.as_ref()).await;
    let gone = ctx.store.resources_gone();
    let mut sweep = tokio::time::interval(Duration::from_secs(3600));
    loop {
        match sweep_abandoned(&ctx).await {
            Ok(()) => {
                tokio::select! {
                    _ = gone.notified() => {}
                    _ = sweep.tick() => {
                        match ctx.store.sweep_orphan_values(ctx.clock.now()).await {
                            Ok(0) => {}
                            Ok(swept) => tracing::info!(swept, "deleted values no secret names"),
                            Err(err) => tracing::warn!(error = %crate::redact::chain(&err), "could not sweep values no secret names"),
                        }
                    }
                }
            }
            Err(err) => {
                tracing::warn!(error = %crate::redact::chain(&err), "could not schedule the deletion of a secret whose resource is gone; retrying");
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        }
    }
}

pub(crate) async fn sweep_abandoned(ctx: &Context) -> Result<(), ReconcileError> {
    for secret in ctx.store.abandoned() {
        if !ctx.store.confirm_abandoned(&secret).await? {
            continue;
        }
        let Some(record) = ctx
            .secrets
            .schedule_declared_deletion(&secret.namespace, &secret.name)
            .await?
        else {
            continue;
        };
        tracing::info!(namespace = %secret.namespace, secret = %record.arn, "Secret resource gone: the secret is scheduled for deletion");
        let note = match record
            .purge_after
            .and_then(|at| k8s_openapi::jiff::Timestamp::from_second(at).ok())
        {
            Some(at) => format!(
                "The secret will be deleted at {at}. Re-apply this Secret, or call RestoreSecret, to keep it."
            ),
            None => "The secret is scheduled for deletion.".to_owned(),
        };
        publish(
            ctx,
            &gone_reference(&secret),
            EventType::Normal,
            "DeletionScheduled",
            &note,
        )
        .await;
    }
    Ok(())
}

fn gone_reference(secret: &AbandonedSecret) -> ObjectReference {
    conditions::reference_to::<Secret>(
        &secret.namespace,
        &secret.resource_name,
        secret.resource_uid.clone(),
    )
}

fn is_spec_error(err: &SecretsError) -> bool {
    matches!(
        err,
        SecretsError::InvalidParameter(_)
            | SecretsError::Validation(_)
            | SecretsError::MalformedPolicyDocument(_)
            | SecretsError::PublicPolicy(_)
            | SecretsError::EncryptionFailure(_)
            | SecretsError::AccessDenied(_)
            | SecretsError::InvalidRequest(_)
            | SecretsError::LimitExceeded(_)
    )
}

/// The reason of the Ready condition the resource shows now.
fn ready_reason(resource: &Secret) -> Option<&str> {
    conditions::ready_reason(&resource.status.as_ref()?.conditions)
}

/// A Warning Event for `problem`, unless the status already shows it (one Event per problem,
/// not one per reconcile).
async fn warn_once(ctx: &Context, resource: &Secret, problem: &Problem) {
    if ready_reason(resource) != Some(problem.reason) {
        publish(
            ctx,
            &resource.object_ref(&()),
            EventType::Warning,
            problem.reason,
            &problem.message,
        )
        .await;
    }
}

async fn refuse(
    ctx: &Context,
    resource: &Secret,
    record: Option<&SecretRecord>,
    problem: Problem,
) -> Result<(), ReconcileError> {
    warn_once(ctx, resource, &problem).await;
    let now = ctx.clock.now();
    let status = match record {
        Some(record) => {
            let mut status = secret_status(resource, record, Some(problem), now);
            status.synced_secret = resource
                .status
                .as_ref()
                .and_then(|status| status.synced_secret.clone());
            status
        }
        None => SecretStatus {
            conditions: vec![ready_condition(
                resource,
                false,
                problem.reason,
                problem.message,
                now,
            )],
            observed_generation: resource.metadata.generation,
            ..SecretStatus::default()
        },
    };
    write_status(ctx, resource, status).await
}

async fn publish(
    ctx: &Context,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    conditions::publish(&ctx.recorder, reference, type_, reason, note).await;
}

/// The Ready condition, keeping the previous transition time when its status is unchanged.
fn ready_condition(
    resource: &Secret,
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

/// The status a secret record shows as. Deterministic: the same record gives the same status.
pub fn secret_status(
    resource: &Secret,
    record: &SecretRecord,
    problem: Option<Problem>,
    now: i64,
) -> SecretStatus {
    let ready = match problem {
        Some(problem) => ready_condition(resource, false, problem.reason, problem.message, now),
        None if record.version_with(CURRENT).is_some() => ready_condition(
            resource,
            true,
            "Available",
            "The secret has a current version.".to_owned(),
            now,
        ),
        None => ready_condition(
            resource,
            true,
            "NoValue",
            "The secret has no value yet: put one through the API, or declare generate, fromSecret or sealedValue.".to_owned(),
            now,
        ),
    };
    let mut versions: Vec<(&String, &crate::engine::secrets::SecretVersion)> = record
        .versions
        .iter()
        .filter(|(_, version)| !version.stages.is_empty())
        .collect();
    versions.sort_by_key(|(id, version)| (version.created, (*id).clone()));
    SecretStatus {
        arn: Some(record.arn.clone()),
        versions: versions
            .into_iter()
            .filter_map(|(id, version)| {
                Some(StatusVersion {
                    version_id: id.clone(),
                    stages: version.stages.iter().cloned().collect(),
                    created_date: time(version.created)?,
                })
            })
            .collect(),
        current_version: record.version_with(CURRENT).map(str::to_owned),
        rotation: rotation_status(record),
        deletion_date: record.deleted.and(record.purge_after).and_then(time),
        conditions: std::iter::once(ready)
            .chain(rotation_condition(resource, record, now))
            .collect(),
        observed_generation: resource.metadata.generation,
        synced_secret: None,
    }
}

/// Keeps the core Secret of `spec.sync` holding the current value ([`sync::keep`]).
async fn sync_value(
    ctx: &Context,
    resource: &Secret,
    namespace: &str,
    name: &str,
    record: &SecretRecord,
) -> Result<SyncState, ReconcileError> {
    let settings = resource
        .spec
        .sync
        .as_ref()
        .filter(|settings| settings.enabled);
    let current = match (settings, record.version_with(CURRENT)) {
        (Some(_), Some(version)) => ctx
            .secrets
            .declared_current_value(namespace, name)
            .await?
            .map(|value| (version.to_owned(), value.bytes)),
        _ => None,
    };
    let status = resource.status.as_ref();
    sync::keep(
        &sync::Copy {
            client: &ctx.client,
            recorder: &ctx.recorder,
            resource,
            namespace,
            previous: status.and_then(|status| status.synced_secret.as_deref()),
            conditions: status.map_or(&[][..], |status| &status.conditions[..]),
        },
        settings,
        current,
    )
    .await
    .map_err(ReconcileError::Api)
}

/// Type of the condition that tells how rotation goes, for a secret that rotates.
const CONDITION_ROTATION: &str = "Rotation";

/// The rotation's part of status, from the record.
fn rotation_status(record: &SecretRecord) -> Option<RotationStatus> {
    let rotation = record.rotation.as_ref()?;
    let state = match &rotation.in_progress {
        None => RotationState::Idle,
        Some(progress) if progress.failures > 0 => RotationState::Failed,
        Some(progress) => match progress.step {
            Step::CreateSecret => RotationState::CreatingSecret,
            Step::SetSecret => RotationState::SettingSecret,
            Step::TestSecret => RotationState::TestingSecret,
            Step::FinishSecret => RotationState::FinishingSecret,
        },
    };
    Some(RotationStatus {
        state,
        pending_version_id: rotation
            .in_progress
            .as_ref()
            .map(|progress| progress.token.clone()),
        last_rotated_date: rotation.last_rotated.and_then(time),
        next_rotation_date: rotation
            .next_rotation
            .filter(|_| rotation.enabled)
            .and_then(time),
        last_error: rotation.last_error.clone(),
    })
}

/// The Rotation condition: False while a step fails (and is retried), True otherwise.
fn rotation_condition(resource: &Secret, record: &SecretRecord, now: i64) -> Option<Condition> {
    let rotation = record.rotation.as_ref()?;
    let (status, reason, message) = match (&rotation.in_progress, &rotation.last_error) {
        (Some(progress), Some(error)) if progress.failures > 0 => (
            "False",
            "RotationFailed",
            format!(
                "{error}. AWSCURRENT is unchanged; the step is retried with backoff (attempt {}).",
                progress.failures
            ),
        ),
        (Some(progress), _) => (
            "True",
            "Rotating",
            format!(
                "Rotation to version {} is at {}.",
                progress.token, progress.step
            ),
        ),
        (None, _) if !rotation.enabled => (
            "True",
            "RotationOff",
            "Scheduled rotation is off.".to_owned(),
        ),
        (None, _) => (
            "True",
            "Scheduled",
            "The last rotation, if any, finished; the next is scheduled.".to_owned(),
        ),
    };
    let previous = resource
        .status
        .as_ref()
        .map_or(&[][..], |status| &status.conditions[..]);
    Some(conditions::condition(
        previous,
        CONDITION_ROTATION,
        resource.metadata.generation,
        status,
        reason,
        message,
        now,
    ))
}

/// Events for what rotation did since the status was written: a finished rotation, a failed
/// step (once per distinct error).
async fn announce_rotation(ctx: &Context, resource: &Secret, record: &SecretRecord) {
    let Some(now) = rotation_status(record) else {
        return;
    };
    let before = resource
        .status
        .as_ref()
        .and_then(|status| status.rotation.clone())
        .unwrap_or_default();
    if now.last_rotated_date.is_some() && now.last_rotated_date != before.last_rotated_date {
        let note = match record.version_with(CURRENT) {
            Some(version) => format!("Rotation finished: version {version} is now AWSCURRENT."),
            None => "Rotation finished.".to_owned(),
        };
        publish(
            ctx,
            &resource.object_ref(&()),
            EventType::Normal,
            "Rotated",
            &note,
        )
        .await;
    }
    if let Some(error) = &now.last_error
        && before.last_error.as_ref() != Some(error)
    {
        let note = format!("{error}. AWSCURRENT is unchanged; the step will be retried.");
        publish(
            ctx,
            &resource.object_ref(&()),
            EventType::Warning,
            "RotationFailed",
            &note,
        )
        .await;
    }
}

async fn write_status(
    ctx: &Context,
    resource: &Secret,
    status: SecretStatus,
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
