//! The `job` strategy: each rotation step runs as a Kubernetes Job made from the user's
//! template, as AWS invokes a rotation Lambda. The Job gets the secret's ARN, the step and the
//! token in its environment, runs as a ServiceAccount of its own that may read the secret and
//! write its pending version, and for `createSecret` stores the new value itself
//! (PutSecretValue with the token and `AWSPENDING`). A Job that completes is a step done.
//!
//! Every object is named from the secret, the token and the step, and made by server-side
//! apply, so a step run again finds the Job it started instead of starting another.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt as _;
use k8s_openapi::api::batch::v1::{Job, JobTemplateSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource as _};
use serde_json::{Map, Value, json};
use sha2::Digest as _;

use crate::engine::rotation::{
    JOB_SERVICE_ACCOUNT_PREFIX, RotationStrategy, SettingsError, Step, StepError, StepOutcome,
    StepRequest, StepWaker,
};
use crate::resources::secret::{Secret, resource_name_for};
use crate::store::kubernetes::FIELD_MANAGER;

/// The strategy's name in a Secret's `spec.rotation.strategy`.
pub const NAME: &str = "job";
/// Label of every object made for a rotation: the Secret resource's name (hashed when long).
pub const SECRET_LABEL: &str = "coffer.dev/secret";
/// Label of a rotation Job: its step (`createSecret`, ...). The watcher selects on it.
pub const STEP_LABEL: &str = "coffer.dev/rotation-step";
/// Label of a rotation Job: the rotation's token (hashed when it is no label value).
pub const TOKEN_LABEL: &str = "coffer.dev/rotation-token";
/// The environment a Job's containers get.
pub const ENV_SECRET_ID: &str = "COFFER_SECRET_ID";
pub const ENV_STEP: &str = "COFFER_ROTATION_STEP";
pub const ENV_TOKEN: &str = "COFFER_CLIENT_REQUEST_TOKEN";
/// How long the engine waits before looking at an unfinished Job again, unless the watcher
/// wakes it first.
pub const POLL: Duration = Duration::from_secs(30);
/// What the Job's ServiceAccount may do with its one Secret resource: `get` (GetSecretValue,
/// DescribeSecret) and `update` (PutSecretValue). The engine narrows `update` to the pending
/// version for accounts named with [`JOB_SERVICE_ACCOUNT_PREFIX`].
pub const JOB_VERBS: [&str; 2] = ["get", "update"];
/// Longest Kubernetes name or label value made here.
const MAX_NAME: usize = 63;
/// Hex digits of a hash in a name.
const HASH_DIGITS: usize = 10;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("the job settings need a template object")]
    NoTemplate,
    #[error("the job template is not a JobTemplateSpec: {0}")]
    Template(String),
    #[error("the job template needs spec.template.spec.containers")]
    NoContainers,
}

/// The template of the settings, checked: as given (so fields this build does not know are
/// kept), after parsing as a JobTemplateSpec.
fn template(settings: &Value) -> Result<&Map<String, Value>, JobError> {
    let template = settings
        .get("template")
        .and_then(Value::as_object)
        .ok_or(JobError::NoTemplate)?;
    serde_json::from_value::<JobTemplateSpec>(Value::Object(template.clone()))
        .map_err(|e| JobError::Template(e.to_string()))?;
    let containers = template
        .get("spec")
        .and_then(|spec| spec.pointer("/template/spec/containers"))
        .and_then(Value::as_array);
    if containers.is_none_or(Vec::is_empty) {
        return Err(JobError::NoContainers);
    }
    Ok(template)
}

/// The first [`HASH_DIGITS`] hex digits of the SHA-256 of `parts`, each ended by a newline.
fn hash(parts: &[&str]) -> String {
    let mut digest = sha2::Sha256::new();
    for part in parts {
        digest.update(part.as_bytes());
        digest.update(b"\n");
    }
    hex::encode(digest.finalize())
        .chars()
        .take(HASH_DIGITS)
        .collect()
}

/// At most `max` bytes of a resource name (ASCII), without a trailing `-` or `.`.
fn readable(name: &str, max: usize) -> &str {
    name.get(..max.min(name.len()))
        .unwrap_or_default()
        .trim_end_matches(['-', '.'])
}

/// Whether `value` may be a label value as it is.
fn is_label_value(value: &str) -> bool {
    value.len() <= MAX_NAME
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// `value` as a label value: itself when it is one, else a readable part and a hash.
fn label_value(value: &str) -> String {
    if is_label_value(value) {
        return value.to_owned();
    }
    let cleaned: String = value
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let part = readable(cleaned.trim_start_matches('-'), 40);
    if part.is_empty() {
        format!("h{}", hash(&[value]))
    } else {
        format!("{part}-{}", hash(&[value]))
    }
}

fn step_word(step: Step) -> &'static str {
    match step {
        Step::CreateSecret => "create",
        Step::SetSecret => "set",
        Step::TestSecret => "test",
        Step::FinishSecret => "finish",
    }
}

/// The names of what one step of one secret's rotation makes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The Secret resource that stands for the secret (whether or not it exists).
    pub resource: String,
    /// The Job: `<resource>-<step>-<hash of secret, token, step>`, at most 63 characters.
    pub job: String,
    /// The ServiceAccount, and its Role and RoleBinding: the prefix, a readable part of the
    /// resource name and its hash, so every secret has its own.
    pub service_account: String,
    pub secret_label: String,
    pub token_label: String,
    /// The step, as its label gives it.
    pub step: String,
}

impl Names {
    /// The names for `step` of the rotation of secret `secret_name` under `token`.
    pub fn new(secret_name: &str, token: &str, step: Step) -> Self {
        let resource = resource_name_for(secret_name);
        let word = step_word(step);
        let job_room = MAX_NAME - word.len() - HASH_DIGITS - 2;
        let job = format!(
            "{}-{word}-{}",
            readable(&resource, job_room),
            hash(&[secret_name, token, step.as_str()])
        );
        let account_room = MAX_NAME - JOB_SERVICE_ACCOUNT_PREFIX.len() - HASH_DIGITS - 1;
        let service_account = format!(
            "{JOB_SERVICE_ACCOUNT_PREFIX}{}-{}",
            readable(&resource, account_room),
            hash(&[&resource])
        );
        Self {
            secret_label: label_value(&resource),
            token_label: label_value(token),
            step: step.as_str().to_owned(),
            resource,
            job,
            service_account,
        }
    }

    fn labels(&self) -> Value {
        json!({ SECRET_LABEL: self.secret_label })
    }

    /// Whether `job` carries the labels of this step's Job.
    fn labels_match(&self, job: &Job) -> bool {
        let labels = job.metadata.labels.as_ref();
        let has = |key: &str, value: &str| {
            labels
                .and_then(|labels| labels.get(key))
                .is_some_and(|found| found == value)
        };
        has(SECRET_LABEL, &self.secret_label)
            && has(STEP_LABEL, &self.step)
            && has(TOKEN_LABEL, &self.token_label)
    }
}

/// The owner of what a rotation makes: the Secret resource, so they go when it goes. Not a
/// blocking owner, which would need `update` on its finalizers.
fn owner_reference(secret: &Secret) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: Secret::api_version(&()).into_owned(),
        kind: Secret::kind(&()).into_owned(),
        name: secret.metadata.name.clone()?,
        uid: secret.metadata.uid.clone()?,
        controller: Some(true),
        block_owner_deletion: None,
    })
}

fn metadata(name: &str, namespace: &str, labels: Value, owner: Option<&OwnerReference>) -> Value {
    let mut metadata = json!({"name": name, "namespace": namespace, "labels": labels});
    if let (Some(owner), Some(object)) = (owner, metadata.as_object_mut()) {
        object.insert("ownerReferences".into(), json!([owner]));
    }
    metadata
}

/// The ServiceAccount, Role and RoleBinding of a secret's rotation Jobs.
pub fn access_objects(
    names: &Names,
    namespace: &str,
    owner: Option<&OwnerReference>,
) -> (Value, Value, Value) {
    let name = names.service_account.as_str();
    let account = json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name, namespace, names.labels(), owner),
        // See `job_object`: no token for the API server in the Job's pods.
        "automountServiceAccountToken": false,
    });
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(name, namespace, names.labels(), owner),
        "rules": [{
            "apiGroups": ["coffer.dev"],
            "resources": ["secrets"],
            "resourceNames": [names.resource],
            "verbs": JOB_VERBS,
        }],
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(name, namespace, names.labels(), owner),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": namespace}],
    });
    (account, role, binding)
}

/// A copy of the object at `object[key]`, empty when there is none.
fn object_in(object: &Map<String, Value>, key: &str) -> Map<String, Value> {
    object
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default()
}

/// The Job of one step: the template's metadata and spec, with Coffer's labels, owner,
/// ServiceAccount and environment; `backoffLimit` 0 and `restartPolicy` Never unless the
/// template says otherwise.
pub fn job_object(
    template: &Map<String, Value>,
    names: &Names,
    request: &StepRequest<'_>,
    owner: Option<&OwnerReference>,
) -> Value {
    let mut labels = template
        .get("metadata")
        .and_then(|metadata| metadata.get("labels"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    labels.insert(SECRET_LABEL.into(), names.secret_label.clone().into());
    labels.insert(STEP_LABEL.into(), request.step.as_str().into());
    labels.insert(TOKEN_LABEL.into(), names.token_label.clone().into());
    let mut metadata = metadata(
        &names.job,
        request.namespace,
        Value::Object(labels.clone()),
        owner,
    );
    if let (Some(annotations), Some(object)) = (
        template
            .get("metadata")
            .and_then(|metadata| metadata.get("annotations")),
        metadata.as_object_mut(),
    ) {
        object.insert("annotations".into(), annotations.clone());
    }

    let mut spec = template
        .get("spec")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    spec.entry("backoffLimit").or_insert(json!(0));
    let mut pod = object_in(&spec, "template");
    let mut pod_metadata = object_in(&pod, "metadata");
    let mut pod_labels = object_in(&pod_metadata, "labels");
    for (key, value) in &labels {
        if key.starts_with("coffer.dev/") {
            pod_labels.insert(key.clone(), value.clone());
        }
    }
    pod_metadata.insert("labels".into(), Value::Object(pod_labels));
    pod.insert("metadata".into(), Value::Object(pod_metadata));
    let mut pod_spec = object_in(&pod, "spec");
    pod_spec.insert(
        "serviceAccountName".into(),
        names.service_account.clone().into(),
    );
    // The deprecated alias could name another account.
    pod_spec.remove("serviceAccount");
    // The account's RBAC names the Secret resource, so a token the API server accepts would
    // let the Job edit the resource itself; the Job gets only tokens it mounts for `coffer`.
    pod_spec.insert("automountServiceAccountToken".into(), json!(false));
    pod_spec.entry("restartPolicy").or_insert(json!("Never"));
    let env = [
        (ENV_SECRET_ID, request.secret_id),
        (ENV_STEP, request.step.as_str()),
        (ENV_TOKEN, request.token),
    ];
    for list in ["initContainers", "containers"] {
        let Some(containers) = pod_spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            let mut vars: Vec<Value> = container
                .get("env")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            // Coffer's values win over the template's.
            vars.retain(|var| {
                var.get("name")
                    .and_then(Value::as_str)
                    .is_none_or(|name| env.iter().all(|(ours, _)| *ours != name))
            });
            vars.extend(
                env.iter()
                    .map(|(name, value)| json!({"name": name, "value": value})),
            );
            container.insert("env".into(), Value::Array(vars));
        }
    }
    pod.insert("spec".into(), Value::Object(pod_spec));
    spec.insert("template".into(), Value::Object(pod));
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": spec,
    })
}

/// Whether a Job has finished, and how: `Some(Ok(()))` complete, `Some(Err(reason))` failed.
fn finished(job: &Job) -> Option<Result<(), String>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |kind: &str| {
        conditions
            .iter()
            .find(|condition| condition.type_ == kind && condition.status == "True")
    };
    if holds("Complete").is_some() {
        return Some(Ok(()));
    }
    holds("Failed").map(|condition| Err(condition.reason.clone().unwrap_or_default()))
}

/// A failed API call as a step's failure: refusals by the API server that will not pass are
/// permanent; the rest (unreachable, overloaded, conflicts) may pass.
fn api_failure(step: Step, what: &str, error: kube::Error) -> StepError {
    match error {
        kube::Error::Api(status) => {
            let code = status.code;
            let reason = if code == 422 {
                // Names the fields of the template that are wrong.
                format!(
                    "{what}: refused ({code}): {}",
                    crate::engine::text::truncate(&status.message)
                )
            } else {
                format!("{what}: {} ({code})", status.reason)
            };
            if code == 409 || code == 429 || code >= 500 {
                StepError::transient(step, reason)
            } else {
                StepError::permanent(step, reason)
            }
        }
        _ => StepError::transient(step, format!("{what}: the API server could not be reached")),
    }
}

/// Rotation by a Kubernetes Job per step.
pub struct JobStrategy {
    client: Client,
    /// Stops the watcher when the strategy goes.
    _watcher: Option<WatcherGuard>,
}

struct WatcherGuard(tokio::task::AbortHandle);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl JobStrategy {
    /// The strategy, with a watcher on rotation Jobs that wakes `waker` (the registry's,
    /// [`crate::engine::rotation::StrategyRegistry::step_waker`]) when one finishes. The watcher
    /// runs on the current Tokio runtime until the strategy is dropped; outside a runtime
    /// there is none, and the engine looks again every [`POLL`].
    pub fn new(client: Client, waker: StepWaker) -> Self {
        let watcher = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let task = runtime.spawn(watch_finished_jobs(client.clone(), waker));
            WatcherGuard(task.abort_handle())
        });
        Self {
            client,
            _watcher: watcher,
        }
    }

    /// The strategy without a watcher: the engine looks at unfinished Jobs every [`POLL`].
    pub fn unwatched(client: Client) -> Self {
        Self {
            client,
            _watcher: None,
        }
    }

    /// The Secret resource standing for the secret, to own what the rotation makes; none when
    /// the secret has none.
    async fn owner(
        &self,
        request: &StepRequest<'_>,
        names: &Names,
    ) -> Result<Option<OwnerReference>, StepError> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), request.namespace);
        let found = secrets.get_opt(&names.resource).await.map_err(|e| {
            api_failure(
                request.step,
                &format!("reading Secret {}", names.resource),
                e,
            )
        })?;
        Ok(found
            .filter(|secret| secret.secret_name().is_ok_and(|name| name == request.name))
            .and_then(|secret| owner_reference(&secret)))
    }

    async fn apply<K>(&self, step: Step, namespace: &str, object: &Value) -> Result<K, StepError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let what = format!("applying {} {name}", K::kind(&Default::default()));
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await
        .map_err(|e| api_failure(step, &what, e))
    }
}

fn outcome_of(step: Step, job: &Job) -> Result<StepOutcome, StepError> {
    let name = job.metadata.name.as_deref().unwrap_or_default();
    match finished(job) {
        Some(Ok(())) => Ok(StepOutcome::Done),
        Some(Err(reason)) => Err(StepError::permanent(
            step,
            format!("Job {name} failed ({reason})"),
        )),
        None => Ok(StepOutcome::Waiting(POLL)),
    }
}

#[async_trait]
impl RotationStrategy for JobStrategy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check_settings(&self, settings: &Value) -> Result<(), SettingsError> {
        template(settings)
            .map(|_| ())
            .map_err(|e| SettingsError(e.to_string()))
    }

    async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError> {
        let step = request.step;
        let template =
            template(request.settings).map_err(|e| StepError::permanent(step, e.to_string()))?;
        let names = Names::new(request.name, request.token, step);
        let jobs: Api<Job> = Api::namespaced(self.client.clone(), request.namespace);
        // A Job already started is only looked at: its spec cannot change, and one that has
        // finished must not run again.
        let existing = jobs
            .get_opt(&names.job)
            .await
            .map_err(|e| api_failure(step, &format!("reading Job {}", names.job), e))?;
        if let Some(job) = existing {
            if !names.labels_match(&job) {
                // Someone else's Job of that name: its status says nothing about this step.
                return Err(StepError::permanent(
                    step,
                    format!("Job {} exists but is not this rotation step's", names.job),
                ));
            }
            return outcome_of(step, &job);
        }
        let owner = self.owner(&request, &names).await?;
        let (account, role, binding) = access_objects(&names, request.namespace, owner.as_ref());
        self.apply::<ServiceAccount>(step, request.namespace, &account)
            .await?;
        self.apply::<Role>(step, request.namespace, &role).await?;
        self.apply::<RoleBinding>(step, request.namespace, &binding)
            .await?;
        let job = job_object(template, &names, &request, owner.as_ref());
        let job: Job = self.apply(step, request.namespace, &job).await?;
        tracing::info!(namespace = request.namespace, job = %names.job, step = %step, "rotation Job started");
        outcome_of(step, &job)
    }
}

/// Watches rotation Jobs in every namespace and notifies `waker` when one is seen finished
/// for the first time, so the engine need not wait out [`POLL`]. Runs until dropped.
pub async fn watch_finished_jobs(client: Client, waker: StepWaker) {
    let jobs: Api<Job> = Api::all(client);
    let mut seen: HashSet<String> = HashSet::new();
    let mut listing: HashSet<String> = HashSet::new();
    let mut events = watcher(jobs, watcher::Config::default().labels(STEP_LABEL))
        .default_backoff()
        .boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => listing.clear(),
            Ok(watcher::Event::InitApply(job)) => {
                if let Some(uid) = finished_uid(&job) {
                    if !seen.contains(&uid) {
                        waker.wake();
                    }
                    listing.insert(uid);
                }
            }
            // Forgets the Jobs that are gone, so the set stays as large as what exists.
            Ok(watcher::Event::InitDone) => seen = std::mem::take(&mut listing),
            Ok(watcher::Event::Apply(job)) => {
                if let Some(uid) = finished_uid(&job)
                    && seen.insert(uid)
                {
                    waker.wake();
                }
            }
            Ok(watcher::Event::Delete(job)) => {
                if let Some(uid) = job.metadata.uid.as_ref() {
                    seen.remove(uid);
                }
            }
            Err(err) => {
                tracing::warn!(error = %err, "watching rotation Jobs failed; retrying with backoff");
            }
        }
    }
}

fn finished_uid(job: &Job) -> Option<String> {
    finished(job).and(job.metadata.uid.clone())
}

#[cfg(test)]
mod tests {
    use http::Method;

    use super::*;
    use crate::test_support::mock_api::{ApiServer, client, expect, respond, status};

    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-db-AbCdEf";
    const TOKEN: &str = "9f1c2b0e-5d4a-4c3b-8a7e-6f5d4c3b2a19";
    const UID: &str = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";

    fn settings() -> Value {
        json!({"template": {
            "metadata": {"labels": {"team": "db"}, "annotations": {"note": "rotates app-db"}},
            "spec": {
                "ttlSecondsAfterFinished": 600,
                "template": {"spec": {
                    "serviceAccountName": "someone-else",
                    "serviceAccount": "someone-else",
                    "automountServiceAccountToken": true,
                    "containers": [{
                        "name": "rotate",
                        "image": "registry.example/rotate:1",
                        "env": [
                            {"name": "LOG_LEVEL", "value": "debug"},
                            {"name": "COFFER_ROTATION_STEP", "value": "forged"},
                        ],
                    }],
                    "initContainers": [{"name": "wait", "image": "registry.example/wait:1"}],
                }},
            },
        }})
    }

    /// Runs one step of secret `app-db` in namespace `shop` on its own task, so the test can
    /// answer the API requests it makes.
    fn start(
        strategy: JobStrategy,
        step: Step,
        settings: Value,
    ) -> tokio::task::JoinHandle<Result<StepOutcome, StepError>> {
        tokio::spawn(async move {
            strategy
                .run(StepRequest {
                    step,
                    secret_id: ARN,
                    namespace: "shop",
                    name: "app-db",
                    token: TOKEN,
                    settings: &settings,
                    current: None,
                    pending: None,
                    referenced: None,
                    attempt: 0,
                })
                .await
        })
    }

    /// Answers a server-side apply as the API server does: the object back.
    async fn applied(server: &mut ApiServer, path: &str) -> Value {
        let (body, send) = expect(server, Method::PATCH, path).await;
        respond(send, 200, body.clone());
        serde_json::from_slice(&body).unwrap()
    }

    fn env_of(container: &Value) -> Vec<(String, String)> {
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|var| {
                (
                    var["name"].as_str().unwrap().to_owned(),
                    var["value"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_step_applies_a_job_made_from_the_template_with_its_own_account_and_owner() {
        let (client, mut server) = client();
        let task = start(
            JobStrategy::unwatched(client),
            Step::CreateSecret,
            settings(),
        );
        let names = Names::new("app-db", TOKEN, Step::CreateSecret);
        let job_path = format!("/apis/batch/v1/namespaces/shop/jobs/{}", names.job);

        let (_, send) = expect(&mut server, Method::GET, &job_path).await;
        respond(send, 404, status(404, "NotFound", "jobs"));
        let (_, send) = expect(
            &mut server,
            Method::GET,
            "/apis/coffer.dev/v1alpha1/namespaces/shop/secrets/app-db",
        )
        .await;
        let resource = json!({
            "apiVersion": "coffer.dev/v1alpha1", "kind": "Secret",
            "metadata": {"name": "app-db", "namespace": "shop", "uid": UID}, "spec": {},
        });
        respond(send, 200, serde_json::to_vec(&resource).unwrap());

        let account = &names.service_account;
        let owner = json!([{
            "apiVersion": "coffer.dev/v1alpha1", "kind": "Secret", "name": "app-db", "uid": UID,
            "controller": true,
        }]);
        let sa = applied(
            &mut server,
            &format!("/api/v1/namespaces/shop/serviceaccounts/{account}"),
        )
        .await;
        assert_eq!(sa["metadata"]["ownerReferences"], owner);
        assert_eq!(sa["automountServiceAccountToken"], json!(false));
        let role = applied(
            &mut server,
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/{account}"),
        )
        .await;
        assert_eq!(
            role["rules"],
            json!([{"apiGroups": ["coffer.dev"], "resources": ["secrets"],
                    "resourceNames": ["app-db"], "verbs": ["get", "update"]}])
        );
        assert_eq!(role["metadata"]["ownerReferences"], owner);
        let binding = applied(
            &mut server,
            &format!("/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/{account}"),
        )
        .await;
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": account, "namespace": "shop"}])
        );
        assert_eq!(binding["roleRef"]["name"], json!(account));
        assert_eq!(binding["metadata"]["ownerReferences"], owner);

        let job = applied(&mut server, &job_path).await;
        let outcome = task.await.unwrap().unwrap();
        assert!(matches!(outcome, StepOutcome::Waiting(delay) if delay == POLL));

        assert_eq!(job["metadata"]["name"], json!(names.job));
        assert_eq!(job["metadata"]["ownerReferences"], owner);
        assert_eq!(
            job["metadata"]["labels"],
            json!({"team": "db", SECRET_LABEL: "app-db", STEP_LABEL: "createSecret", TOKEN_LABEL: TOKEN})
        );
        assert_eq!(
            job["metadata"]["annotations"],
            json!({"note": "rotates app-db"})
        );
        assert_eq!(job["spec"]["backoffLimit"], json!(0));
        assert_eq!(job["spec"]["ttlSecondsAfterFinished"], json!(600));
        let pod = &job["spec"]["template"];
        assert_eq!(pod["metadata"]["labels"][STEP_LABEL], json!("createSecret"));
        assert_eq!(pod["spec"]["serviceAccountName"], json!(account));
        assert_eq!(pod["spec"]["restartPolicy"], json!("Never"));
        assert!(pod["spec"].get("serviceAccount").is_none());
        assert_eq!(pod["spec"]["automountServiceAccountToken"], json!(false));
        let ours = [
            (ENV_SECRET_ID.to_owned(), ARN.to_owned()),
            (ENV_STEP.to_owned(), "createSecret".to_owned()),
            (ENV_TOKEN.to_owned(), TOKEN.to_owned()),
        ];
        let mut expected = vec![("LOG_LEVEL".to_owned(), "debug".to_owned())];
        expected.extend(ours.clone());
        assert_eq!(env_of(&pod["spec"]["containers"][0]), expected);
        assert_eq!(env_of(&pod["spec"]["initContainers"][0]), ours.to_vec());
        // What the API server receives parses as a Job.
        serde_json::from_value::<Job>(job).unwrap();
    }

    #[tokio::test]
    async fn a_secret_without_a_resource_gets_objects_without_an_owner() {
        let (client, mut server) = client();
        let task = start(JobStrategy::unwatched(client), Step::TestSecret, settings());
        let names = Names::new("app-db", TOKEN, Step::TestSecret);
        let job_path = format!("/apis/batch/v1/namespaces/shop/jobs/{}", names.job);
        let (_, send) = expect(&mut server, Method::GET, &job_path).await;
        respond(send, 404, status(404, "NotFound", "jobs"));
        let (_, send) = expect(
            &mut server,
            Method::GET,
            "/apis/coffer.dev/v1alpha1/namespaces/shop/secrets/app-db",
        )
        .await;
        respond(send, 404, status(404, "NotFound", "secrets.coffer.dev"));
        let account = &names.service_account;
        for path in [
            format!("/api/v1/namespaces/shop/serviceaccounts/{account}"),
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/{account}"),
            format!("/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/{account}"),
            job_path,
        ] {
            let object = applied(&mut server, &path).await;
            assert!(
                object["metadata"].get("ownerReferences").is_none(),
                "{path}"
            );
        }
        assert!(matches!(
            task.await.unwrap().unwrap(),
            StepOutcome::Waiting(_)
        ));
    }

    fn job_with(names: &Names, conditions: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": names.job, "namespace": "shop", "uid": UID, "labels": {
                SECRET_LABEL: names.secret_label, STEP_LABEL: names.step,
                TOKEN_LABEL: names.token_label,
            }},
            "spec": {"template": {"spec": {"containers": []}}},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_job_already_there_is_only_read_complete_done_failed_permanent() {
        let names = Names::new("app-db", TOKEN, Step::SetSecret);
        let job_path = format!("/apis/batch/v1/namespaces/shop/jobs/{}", names.job);
        let cases = [
            (json!([{"type": "Complete", "status": "True"}]), Some(true)),
            (
                json!([{"type": "FailureTarget", "status": "True"},
                       {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]),
                Some(false),
            ),
            (json!([{"type": "Complete", "status": "False"}]), None),
            (json!(null), None),
        ];
        for (conditions, done) in cases {
            let (client, mut server) = client();
            let task = start(JobStrategy::unwatched(client), Step::SetSecret, settings());
            let (_, send) = expect(&mut server, Method::GET, &job_path).await;
            respond(send, 200, job_with(&names, conditions.clone()));
            // Nothing is applied: a further request would go unanswered and time out.
            let outcome = tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .expect("no request after reading the Job")
                .unwrap();
            match done {
                Some(true) => assert!(matches!(outcome, Ok(StepOutcome::Done)), "{conditions}"),
                Some(false) => {
                    let error = outcome.err().unwrap();
                    assert!(!error.retryable);
                    assert_eq!(
                        error.reason,
                        format!("Job {} failed (BackoffLimitExceeded)", names.job)
                    );
                }
                None => assert!(
                    matches!(outcome, Ok(StepOutcome::Waiting(delay)) if delay == POLL),
                    "{conditions}"
                ),
            }
        }
    }

    #[tokio::test]
    async fn a_job_of_that_name_that_is_another_steps_is_not_taken_for_it() {
        let names = Names::new("app-db", TOKEN, Step::TestSecret);
        let other = Names::new("app-db", TOKEN, Step::SetSecret);
        let (client, mut server) = client();
        let task = start(JobStrategy::unwatched(client), Step::TestSecret, settings());
        let (_, send) = expect(
            &mut server,
            Method::GET,
            &format!("/apis/batch/v1/namespaces/shop/jobs/{}", names.job),
        )
        .await;
        let forged = Names {
            job: names.job.clone(),
            ..other
        };
        respond(
            send,
            200,
            job_with(&forged, json!([{"type": "Complete", "status": "True"}])),
        );
        let error = task.await.unwrap().err().unwrap();
        assert!(!error.retryable);
        assert!(
            error.reason.contains("is not this rotation step's"),
            "{}",
            error.reason
        );
    }

    #[tokio::test]
    async fn api_failures_are_transient_unless_the_api_server_refuses_the_job() {
        let names = Names::new("app-db", TOKEN, Step::SetSecret);
        let job_path = format!("/apis/batch/v1/namespaces/shop/jobs/{}", names.job);
        for (code, reason, retryable) in
            [(503, "ServiceUnavailable", true), (403, "Forbidden", false)]
        {
            let (client, mut server) = client();
            let task = start(JobStrategy::unwatched(client), Step::SetSecret, settings());
            let (_, send) = expect(&mut server, Method::GET, &job_path).await;
            respond(send, code, status(code, reason, "jobs"));
            let error = task.await.unwrap().err().unwrap();
            assert_eq!(error.retryable, retryable, "{code}");
            assert!(error.reason.contains(&names.job), "{}", error.reason);
        }
    }

    #[test]
    fn names_are_bounded_stable_and_distinct_per_secret_token_and_step() {
        let long = "prod/".repeat(100) + "db";
        let names = Names::new(&long, TOKEN, Step::FinishSecret);
        for name in [&names.job, &names.service_account, &names.secret_label] {
            assert!(name.len() <= MAX_NAME, "{name}");
            assert!(is_label_value(name), "{name}");
        }
        assert!(
            names
                .service_account
                .starts_with(JOB_SERVICE_ACCOUNT_PREFIX)
        );
        assert_eq!(names, Names::new(&long, TOKEN, Step::FinishSecret));
        let short = Names::new("app-db", TOKEN, Step::CreateSecret);
        assert!(short.job.starts_with("app-db-create-"), "{}", short.job);
        assert_eq!(short.secret_label, "app-db");
        assert_eq!(short.token_label, TOKEN);
        assert_ne!(short.job, Names::new("app-db", TOKEN, Step::SetSecret).job);
        assert_ne!(
            short.job,
            Names::new(
                "app-db",
                "another-token-0123456789abcdef01234",
                Step::CreateSecret
            )
            .job
        );
        assert_ne!(
            short.job,
            Names::new("app-dc", TOKEN, Step::CreateSecret).job
        );
        assert_eq!(
            short.service_account,
            Names::new(
                "app-db",
                "another-token-0123456789abcdef01234",
                Step::SetSecret
            )
            .service_account
        );
        assert_ne!(
            short.service_account,
            Names::new("app-dc", TOKEN, Step::CreateSecret).service_account
        );
        // A token that is no label value is labelled by a hash.
        let odd = Names::new(
            "app-db",
            "tok/en+with=odd@chars-0123456789abcdef",
            Step::SetSecret,
        );
        assert!(is_label_value(&odd.token_label), "{}", odd.token_label);
    }

    #[tokio::test]
    async fn settings_need_a_job_template_with_containers() {
        let strategy = JobStrategy::unwatched(client().0);
        strategy.check_settings(&settings()).unwrap();
        for refused in [
            json!({}),
            json!({"template": "a job"}),
            json!({"template": {"spec": {"template": {"spec": {"containers": []}}}}}),
            json!({"template": {"spec": {"backoffLimit": "many", "template": {"spec": {"containers": [{"name": "a"}]}}}}}),
        ] {
            assert!(strategy.check_settings(&refused).is_err(), "{refused}");
        }
    }
}
