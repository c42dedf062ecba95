//! The Parameter reconciler: a resource's spec becomes an SSM parameter, its status shows the
//! parameter's versions, labels and tier (never a SecureString value).
//!
//! - The parameter is the one `spec.name` names. Its value is `spec.value` for a String or
//!   StringList, and for a SecureString the opened `sealedValue`, a key of a core Secret
//!   (`fromSecret`, looked at every [`SOURCE_RECHECK`]), or, with neither, whatever the API put.
//! - A declaration that differs from the latest version makes a new version, as PutParameter
//!   with Overwrite does; one that agrees writes nothing. The API's changes are written back
//!   into the spec by the store.
//! - Deleting the resource deletes the parameter, as DeleteParameter does (SSM keeps no
//!   deleted parameters); [`delete_abandoned`] does it once the resource is gone, however it
//!   went.
//! - Policies' notifications become Events on the resource and conditions in its status.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::Action;
use kube::runtime::events::{EventType, Recorder};
use kube::{Resource as _, ResourceExt as _};

use super::conditions::{self, Problem, time};
use super::sources;
use super::sync;
use crate::crypto::SecretBytes;
use crate::engine::Clock;
use crate::engine::kms::Kms;
use crate::engine::parameters::{
    DeclaredParameter, NotificationKind, ParameterNotification, ParameterRecord, ParameterType,
    Parameters, ParametersError,
};
use crate::resources::parameter::{
    PARAMETER_HISTORY_LIMIT, Parameter, ParameterHistoryEntry, ParameterStatus,
};
use crate::store::StoreError;
use crate::store::kubernetes::parameter_mapping;
use crate::store::kubernetes::parameters::{AbandonedParameter, ParameterRecords};
use crate::store::kubernetes::versioned::awaits_its_record;

/// Longest wait before a resource is looked at again when nothing is due.
const RESYNC: Duration = Duration::from_secs(3600);
/// How often a `fromSecret` source is compared with the current value.
pub const SOURCE_RECHECK: Duration = Duration::from_secs(30);

/// What the reconciler works with.
pub struct Context {
    pub parameters: Arc<Parameters>,
    pub kms: Arc<Kms>,
    /// The keeper of parameter records, whose caches the reconciler reads.
    pub store: Arc<ParameterRecords>,
    pub client: kube::Client,
    pub recorder: Recorder,
    pub clock: Arc<dyn Clock>,
    pub metrics: Option<crate::metrics::ReconcileMetrics>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("Parameter Store engine: {0}")]
    Parameters(#[from] ParametersError),
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
            ReconcileError::Parameters(_) => "engine",
            ReconcileError::Store(_) => "store",
            ReconcileError::Api(_) => "api",
            ReconcileError::NoNamespace => "invalid",
        }
    }
}

/// Reconciles one Parameter.
pub async fn reconcile(
    resource: Arc<Parameter>,
    ctx: Arc<Context>,
) -> Result<Action, ReconcileError> {
    let namespace = resource.namespace().ok_or(ReconcileError::NoNamespace)?;
    if resource.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let resource = ctx.store.freshest(&resource);
    apply(&resource, &namespace, &ctx).await
}

/// How long to wait after a failure.
pub fn error_policy(
    _resource: Arc<Parameter>,
    error: &ReconcileError,
    _ctx: Arc<Context>,
) -> Action {
    tracing::warn!(error = %crate::redact::chain(error), "Parameter reconcile failed; retrying");
    Action::requeue(Duration::from_secs(15))
}

async fn apply(
    resource: &Parameter,
    namespace: &str,
    ctx: &Context,
) -> Result<Action, ReconcileError> {
    let name = resource.spec.name.clone();
    // Another Parameter of the namespace may declare the same name first.
    if let Some(holder) = ctx.store.resource_for(namespace, &name)
        && holder.uid() != resource.uid()
        && ctx.store.recorded_resource(namespace, &name).as_deref() != Some(&resource.name_any())
    {
        let problem = Problem {
            reason: "NameTaken",
            message: format!(
                "Parameter {} of this namespace already declares {name}.",
                holder.name_any()
            ),
        };
        refuse(ctx, resource, None, problem).await?;
        return Ok(Action::await_change());
    }
    let previous = ctx.parameters.declared_record(namespace, &name).await?;
    if previous.is_none() && awaits_its_record(resource, ctx.clock.now()) {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    let value = match declared_value(resource, namespace, previous.as_ref(), ctx).await {
        Ok(value) => value,
        Err(problem) => {
            refuse(ctx, resource, previous.as_ref(), problem).await?;
            return Ok(requeue_for(resource));
        }
    };
    let spec = &resource.spec;
    // A spec already applied (its generation observed) is not applied again: the record may have
    // moved on through the API, and the spec follows it a moment later, written by the store.
    // Only a source's value is looked at again.
    let declared = match &previous {
        Some(record) if spec_observed(resource) => {
            if value.is_none()
                || spec.type_ != crate::resources::parameter::ParameterType::SecureString
            {
                let status = parameter_status(resource, record, None, ctx.clock.now());
                let status = with_sync(ctx, resource, namespace, &name, status).await?;
                write_status(ctx, resource, status).await?;
                return Ok(requeue_for(resource));
            }
            as_recorded(record, value)
        }
        _ => DeclaredParameter {
            type_: parameter_mapping::engine_type(spec.type_),
            value,
            key_id: spec.kms_key_ref.as_ref().map(|key| key.name.clone()),
            tier: parameter_mapping::engine_tier(spec.tier).to_owned(),
            allowed_pattern: spec.allowed_pattern.clone(),
            data_type: parameter_mapping::data_type(spec.data_type).to_owned(),
            description: spec.description.clone(),
            policies: parameter_mapping::policies_text(&spec.policies),
        },
    };
    let (record, version) = match ctx
        .parameters
        .apply_declared(namespace, &name, &declared)
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
    if let Some(version) = version {
        let (reason, note) = if previous.is_none() {
            ("Created", format!("Parameter {name} was created."))
        } else {
            (
                "NewVersion",
                format!("Version {version} of {name} was made."),
            )
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
    let status = parameter_status(resource, &record, None, ctx.clock.now());
    let status = with_sync(ctx, resource, namespace, &name, status).await?;
    write_status(ctx, resource, status).await?;
    Ok(requeue_for(resource))
}

/// `status` with what `spec.sync` came to ([`sync::keep`]): the copy of the latest value in a
/// core Secret, or its removal.
async fn with_sync(
    ctx: &Context,
    resource: &Parameter,
    namespace: &str,
    name: &str,
    mut status: ParameterStatus,
) -> Result<ParameterStatus, ReconcileError> {
    let settings = resource
        .spec
        .sync
        .as_ref()
        .filter(|settings| settings.enabled);
    let current = match settings {
        Some(_) => ctx
            .parameters
            .declared_current_value(namespace, name)
            .await?
            .map(|(version, value)| (version.to_string(), value)),
        None => None,
    };
    let previous = resource.status.as_ref();
    let conditions = previous.map_or(&[][..], |status| &status.conditions[..]);
    let synced = sync::keep(
        &sync::Copy {
            client: &ctx.client,
            recorder: &ctx.recorder,
            resource,
            namespace,
            previous: previous.and_then(|status| status.synced_secret.as_deref()),
            conditions,
        },
        settings,
        current,
    )
    .await
    .map_err(ReconcileError::Api)?;
    status.synced_secret.clone_from(&synced.secret);
    status.conditions.extend(synced.condition(
        conditions,
        resource.metadata.generation,
        ctx.clock.now(),
    ));
    Ok(status)
}

/// Whether this generation of the spec is applied already ([`conditions::spec_applied`]).
fn spec_observed(resource: &Parameter) -> bool {
    let status = resource.status.as_ref();
    conditions::spec_applied(
        resource,
        status.map(|status| (status.conditions.as_slice(), status.observed_generation)),
    )
}

/// The record's own settings with a source's value: only the value can differ.
fn as_recorded(record: &ParameterRecord, value: Option<SecretBytes>) -> DeclaredParameter {
    let policies: Vec<&str> = record
        .policies
        .iter()
        .map(|policy| policy.text.as_str())
        .collect();
    DeclaredParameter {
        type_: record.type_,
        value,
        key_id: record.key_id.clone(),
        tier: record.tier.as_str().to_owned(),
        allowed_pattern: record.allowed_pattern.clone(),
        data_type: record.data_type.clone(),
        description: record.description.clone(),
        policies: (!policies.is_empty()).then(|| format!("[{}]", policies.join(","))),
    }
}

fn requeue_for(resource: &Parameter) -> Action {
    Action::requeue(if resource.spec.from_secret.is_some() {
        SOURCE_RECHECK
    } else {
        RESYNC
    })
}

/// The value the spec declares now; `None` for a SecureString left to the API.
async fn declared_value(
    resource: &Parameter,
    namespace: &str,
    record: Option<&ParameterRecord>,
    ctx: &Context,
) -> Result<Option<SecretBytes>, Problem> {
    let spec = &resource.spec;
    if spec.type_ != crate::resources::parameter::ParameterType::SecureString {
        return Ok(spec
            .value
            .as_ref()
            .map(|value| SecretBytes::from_slice(value.as_bytes())));
    }
    if let Some(selector) = &spec.from_secret {
        return match sources::from_secret(&ctx.client, namespace, &selector.name, &selector.key)
            .await?
        {
            Some(imported) => Ok(Some(imported.bytes)),
            // The source may go once imported: the value stays.
            None if record.is_some_and(|record| record.type_ == ParameterType::SecureString) => {
                Ok(None)
            }
            None => Err(Problem {
                reason: "SourceMissing",
                message: format!(
                    "Secret {} with key {} was not found in this namespace.",
                    selector.name, selector.key
                ),
            }),
        };
    }
    if let Some(sealed) = &spec.sealed_value {
        let opened =
            sources::open_sealed(&ctx.kms, namespace, &resource.name_any(), sealed).await?;
        return Ok(Some(opened.bytes));
    }
    Ok(None)
}

/// Deletes every parameter whose Parameter resource is gone, each time the store hears that one
/// may have gone, until the future is dropped (when leadership ends).
pub async fn delete_abandoned(ctx: Arc<Context>) {
    crate::store::kubernetes::KindStore::synced(ctx.store.as_ref()).await;
    let gone = ctx.store.resources_gone();
    loop {
        match sweep_abandoned(&ctx).await {
            Ok(()) => gone.notified().await,
            Err(err) => {
                tracing::warn!(error = %crate::redact::chain(&err), "could not delete a parameter whose resource is gone; retrying");
                tokio::time::sleep(Duration::from_secs(15)).await;
            }
        }
    }
}

pub(crate) async fn sweep_abandoned(ctx: &Context) -> Result<(), ReconcileError> {
    for abandoned in ctx.store.abandoned() {
        if !ctx.store.confirm_abandoned(&abandoned).await? {
            continue;
        }
        if ctx
            .parameters
            .delete_declared(&abandoned.namespace, &abandoned.name)
            .await?
        {
            tracing::info!(namespace = %abandoned.namespace, parameter = %abandoned.name, "Parameter resource gone: the parameter is deleted");
            publish(
                ctx,
                &gone_reference(&abandoned),
                EventType::Normal,
                "Deleted",
                &format!(
                    "Parameter {} was deleted with its resource.",
                    abandoned.name
                ),
            )
            .await;
        }
    }
    Ok(())
}

/// Publishes each policy notification as an Event on the Parameter that declares the
/// parameter, until the engine's feed closes.
pub async fn announce_notifications(ctx: Arc<Context>) {
    let mut notifications = ctx.parameters.notifications();
    loop {
        let notification = match notifications.recv().await {
            Ok(notification) => notification,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        // An expired parameter's resource is gone with it: the Event names what it was.
        let reference = match ctx
            .store
            .resource_for(&notification.namespace, &notification.name)
        {
            Some(resource) => resource.object_ref(&()),
            None => match ctx
                .store
                .departed_resource(&notification.namespace, &notification.name)
            {
                Some((name, uid)) => {
                    conditions::reference_to::<Parameter>(&notification.namespace, &name, uid)
                }
                None => {
                    tracing::debug!(parameter = %notification.name, "a notification found no Parameter to tell");
                    continue;
                }
            },
        };
        let (reason, note) = notification_note(&notification);
        publish(&ctx, &reference, EventType::Warning, reason, &note).await;
    }
}

fn notification_note(notification: &ParameterNotification) -> (&'static str, String) {
    match notification.kind {
        NotificationKind::ExpirationNotification => (
            "ExpiresSoon",
            format!("Parameter {} expires soon.", notification.name),
        ),
        NotificationKind::NoChangeNotification => (
            "Unchanged",
            format!(
                "Parameter {} has not changed for as long as its policy allows.",
                notification.name
            ),
        ),
        NotificationKind::Expired => (
            "Expired",
            format!("Parameter {} expired and was deleted.", notification.name),
        ),
    }
}

fn gone_reference(abandoned: &AbandonedParameter) -> ObjectReference {
    conditions::reference_to::<Parameter>(
        &abandoned.namespace,
        &abandoned.resource_name,
        abandoned.resource_uid.clone(),
    )
}

fn is_spec_error(err: &ParametersError) -> bool {
    !matches!(err, ParametersError::Internal(_) | ParametersError::Busy(_))
}

async fn refuse(
    ctx: &Context,
    resource: &Parameter,
    record: Option<&ParameterRecord>,
    problem: Problem,
) -> Result<(), ReconcileError> {
    let shown = resource
        .status
        .as_ref()
        .and_then(|status| conditions::ready_reason(&status.conditions));
    if shown != Some(problem.reason) {
        publish(
            ctx,
            &resource.object_ref(&()),
            EventType::Warning,
            problem.reason,
            &problem.message,
        )
        .await;
    }
    let now = ctx.clock.now();
    let status = match record {
        Some(record) => {
            let mut status = parameter_status(resource, record, Some(problem), now);
            status.synced_secret = resource
                .status
                .as_ref()
                .and_then(|status| status.synced_secret.clone());
            status
        }
        None => ParameterStatus {
            conditions: vec![ready_condition(
                resource,
                false,
                problem.reason,
                problem.message,
                now,
            )],
            observed_generation: resource.metadata.generation,
            ..ParameterStatus::default()
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

fn ready_condition(
    resource: &Parameter,
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

/// A condition other than Ready, true while the record says a notification fired.
fn notified_condition(
    resource: &Parameter,
    type_: &str,
    fired: Option<i64>,
    message: &str,
) -> Option<Condition> {
    let fired = fired?;
    let previous = resource
        .status
        .as_ref()
        .and_then(|status| status.conditions.iter().find(|c| c.type_ == type_));
    Some(Condition {
        type_: type_.to_owned(),
        status: "True".to_owned(),
        reason: type_.to_owned(),
        message: message.to_owned(),
        observed_generation: resource.metadata.generation,
        last_transition_time: previous
            .filter(|previous| previous.status == "True")
            .map(|previous| previous.last_transition_time.clone())
            .or_else(|| time(fired))
            .unwrap_or(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            )),
    })
}

/// The status a parameter record shows as. Deterministic: the same record gives the same
/// status.
pub fn parameter_status(
    resource: &Parameter,
    record: &ParameterRecord,
    problem: Option<Problem>,
    now: i64,
) -> ParameterStatus {
    let ready = match problem {
        Some(problem) => ready_condition(resource, false, problem.reason, problem.message, now),
        None => ready_condition(
            resource,
            true,
            "Available",
            format!("Version {} is the latest.", record.version),
            now,
        ),
    };
    let mut conditions = vec![ready];
    let fired = |kind: &str| {
        record
            .policies
            .iter()
            .filter(|policy| policy.kind.aws_name() == kind)
            .find_map(|policy| policy.fired_for)
    };
    conditions.extend(notified_condition(
        resource,
        "ExpiresSoon",
        fired("ExpirationNotification"),
        "The parameter's expiration is near.",
    ));
    conditions.extend(notified_condition(
        resource,
        "Unchanged",
        fired("NoChangeNotification"),
        "The parameter has not changed for as long as its policy allows.",
    ));
    let history: Vec<ParameterHistoryEntry> = record
        .versions
        .iter()
        .rev()
        .take(PARAMETER_HISTORY_LIMIT)
        .rev()
        .filter_map(|(number, version)| {
            Some(ParameterHistoryEntry {
                version: i64::try_from(*number).ok()?,
                last_modified_date: time(version.modified)?,
                labels: version.labels.iter().cloned().collect(),
            })
        })
        .collect();
    ParameterStatus {
        version: i64::try_from(record.version).ok(),
        tier: Some(parameter_mapping::resource_tier(record.tier)),
        last_modified_date: record
            .versions
            .get(&record.version)
            .and_then(|version| time(version.modified)),
        history,
        labels: record
            .versions
            .iter()
            .flat_map(|(number, version)| {
                version
                    .labels
                    .iter()
                    .filter_map(move |label| Some((label.clone(), i64::try_from(*number).ok()?)))
            })
            .collect(),
        conditions,
        observed_generation: resource.metadata.generation,
        synced_secret: None,
    }
}

async fn write_status(
    ctx: &Context,
    resource: &Parameter,
    status: ParameterStatus,
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
