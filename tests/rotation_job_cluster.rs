//! The `job` rotation strategy against a real API server: the Job, its ServiceAccount, Role
//! and RoleBinding as the API server stores them, owned by the Secret resource, and the
//! outcome of each step as the Job's status says. There is no kubelet, so the tests play the
//! Job: they write its status as the Job controller would. The Jobs name a `managedBy` of
//! their own, so kube-controller-manager's Job controller leaves them to the tests.
//!
//! `e2e/cluster/test_rotation_job.py` runs these tests inside the cluster suite, with
//! `COFFER_E2E_ROTATION_JOB_NAMESPACE` (a fresh namespace, the CRDs installed) and
//! `KUBECONFIG`. Run by `cargo test` alone, each test says SKIPPED and why.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use coffer::engine::rotation::{
    JOB_SERVICE_ACCOUNT_PREFIX, RotationStrategy, Step, StepError, StepOutcome, StepRequest,
    StrategyRegistry,
};
use coffer::resources::secret::Secret;
use coffer::rotation::job::{
    ENV_SECRET_ID, ENV_STEP, ENV_TOKEN, JobStrategy, Names, POLL, SECRET_LABEL, STEP_LABEL,
    TOKEN_LABEL,
};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::Notify;

/// The `managedBy` of the tests' Jobs: not the built-in Job controller's.
const MANAGED_BY: &str = "coffer.dev/e2e-test";

struct Cluster {
    namespace: String,
    client: Client,
}

macro_rules! cluster_or_skip {
    () => {
        match std::env::var("COFFER_E2E_ROTATION_JOB_NAMESPACE") {
            Ok(namespace) => Cluster {
                namespace,
                client: Client::try_default().await.unwrap(),
            },
            Err(_) => {
                eprintln!(
                    "SKIPPED: the rotation Job cluster tests run inside the cluster suite \
                     (e2e/run-cluster.sh, e2e/cluster/test_rotation_job.py), which sets \
                     COFFER_E2E_ROTATION_JOB_NAMESPACE"
                );
                return;
            }
        }
    };
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

fn token() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn arn(name: &str) -> String {
    format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf")
}

fn settings() -> Value {
    json!({"template": {
        "metadata": {"labels": {"team": "e2e"}},
        "spec": {
            "managedBy": MANAGED_BY,
            "ttlSecondsAfterFinished": 3600,
            "template": {"spec": {"containers": [{
                "name": "rotate",
                "image": "registry.invalid/rotate:1",
                "env": [{"name": "MODE", "value": "e2e"}],
            }]}},
        },
    }})
}

impl Cluster {
    /// A Secret resource named `name`, as `kubectl apply` makes one; returns its uid.
    async fn secret_resource(&self, name: &str) -> String {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let manifest = json!({
            "apiVersion": "coffer.dev/v1alpha1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": self.namespace},
            "spec": {"generate": {}},
        });
        let applied = secrets
            .patch(
                name,
                &PatchParams::apply("e2e-test"),
                &Patch::Apply(&manifest),
            )
            .await
            .unwrap();
        applied.metadata.uid.unwrap()
    }

    async fn run(
        &self,
        strategy: &JobStrategy,
        name: &str,
        token: &str,
        step: Step,
    ) -> Result<StepOutcome, StepError> {
        let settings = settings();
        let secret_id = arn(name);
        strategy
            .run(StepRequest {
                step,
                secret_id: &secret_id,
                namespace: &self.namespace,
                name,
                token,
                settings: &settings,
                current: None,
                pending: None,
                referenced: None,
                attempt: 0,
            })
            .await
    }

    fn jobs(&self) -> Api<Job> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Writes the Job's status as the Job controller does when its pod succeeded (or failed),
    /// with the conditions and times the API server requires of a finished Job.
    async fn finish(&self, job: &str, succeeded: bool) {
        let rfc3339 = |at: time::OffsetDateTime| {
            at.replace_nanosecond(0)
                .unwrap()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let now_at = time::OffsetDateTime::now_utc();
        let now = rfc3339(now_at);
        let start = rfc3339(now_at - time::Duration::seconds(5));
        let condition = |kind: &str, reason: &str| {
            json!({"type": kind, "status": "True", "reason": reason, "message": "e2e",
                   "lastProbeTime": now, "lastTransitionTime": now})
        };
        let status = if succeeded {
            json!({
                "startTime": start, "completionTime": now, "succeeded": 1, "active": 0,
                "ready": 0, "terminating": 0,
                "conditions": [condition("SuccessCriteriaMet", "CompletionsReached"),
                               condition("Complete", "CompletionsReached")],
            })
        } else {
            json!({
                "startTime": start, "failed": 1, "active": 0, "ready": 0, "terminating": 0,
                "conditions": [condition("FailureTarget", "BackoffLimitExceeded"),
                               condition("Failed", "BackoffLimitExceeded")],
            })
        };
        self.jobs()
            .patch_status(
                job,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap_or_else(|e| panic!("the status of Job {job} was refused: {e}"));
    }

    /// Whether the API server's authorizer lets `service_account` do `verb` on the Secret
    /// resource `name`.
    async fn can(&self, service_account: &str, verb: &str, name: &str) -> bool {
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!(
                    "system:serviceaccount:{}:{service_account}",
                    self.namespace
                )),
                groups: Some(vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{}", self.namespace),
                    "system:authenticated".into(),
                ]),
                resource_attributes: Some(ResourceAttributes {
                    group: Some("coffer.dev".into()),
                    resource: Some("secrets".into()),
                    namespace: Some(self.namespace.clone()),
                    name: Some(name.into()),
                    verb: Some(verb.into()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .unwrap();
        answer.status.is_some_and(|status| status.allowed)
    }
}

/// Waits for the strategy's watcher to wake the engine.
async fn woken(waker: &Notify) -> bool {
    tokio::time::timeout(Duration::from_secs(20), waker.notified())
        .await
        .is_ok()
}

/// Waits until the watcher has had nothing to say for a second, dropping what it said.
async fn quiet(waker: &Notify) {
    while tokio::time::timeout(Duration::from_secs(1), waker.notified())
        .await
        .is_ok()
    {}
}

fn env(job: &Job) -> Vec<(String, String)> {
    let spec = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    spec.containers[0]
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|var| (var.name.clone(), var.value.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn each_step_is_a_job_of_the_secret_done_when_it_completes_failed_when_it_fails() {
    let cluster = cluster_or_skip!();
    let name = unique("rotated");
    let uid = cluster.secret_resource(&name).await;
    let registry = StrategyRegistry::new();
    let waker = registry.waker();
    let strategy = JobStrategy::new(cluster.client.clone(), registry.step_waker());
    let token = token();

    // createSecret starts a Job and waits for it.
    let outcome = cluster
        .run(&strategy, &name, &token, Step::CreateSecret)
        .await
        .unwrap();
    assert!(matches!(outcome, StepOutcome::Waiting(delay) if delay == POLL));

    let names = Names::new(&name, &token, Step::CreateSecret);
    let job = cluster.jobs().get(&names.job).await.unwrap();
    let owners = job.metadata.owner_references.clone().unwrap();
    assert_eq!(owners.len(), 1);
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str()
        ),
        ("Secret", name.as_str(), uid.as_str())
    );
    assert_eq!(owners[0].api_version, "coffer.dev/v1alpha1");
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels[SECRET_LABEL], name);
    assert_eq!(labels[STEP_LABEL], "createSecret");
    assert_eq!(labels[TOKEN_LABEL], token);
    assert_eq!(labels["team"], "e2e");
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.managed_by.as_deref(), Some(MANAGED_BY));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(
        pod.service_account_name.as_deref(),
        Some(names.service_account.as_str())
    );
    assert!(
        names
            .service_account
            .starts_with(JOB_SERVICE_ACCOUNT_PREFIX)
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        env(&job),
        vec![
            ("MODE".to_owned(), "e2e".to_owned()),
            (ENV_SECRET_ID.to_owned(), arn(&name)),
            (ENV_STEP.to_owned(), "createSecret".to_owned()),
            (ENV_TOKEN.to_owned(), token.clone()),
        ]
    );

    // The Job's account, its Role on exactly this Secret resource, and the binding.
    let account: ServiceAccount = Api::namespaced(cluster.client.clone(), &cluster.namespace)
        .get(&names.service_account)
        .await
        .unwrap();
    assert_eq!(
        account.metadata.owner_references.unwrap()[0].uid,
        uid.as_str()
    );
    assert_eq!(account.automount_service_account_token, Some(false));
    let role: Role = Api::namespaced(cluster.client.clone(), &cluster.namespace)
        .get(&names.service_account)
        .await
        .unwrap();
    let rules = role.rules.unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].api_groups, Some(vec!["coffer.dev".to_owned()]));
    assert_eq!(rules[0].resources, Some(vec!["secrets".to_owned()]));
    assert_eq!(rules[0].resource_names, Some(vec![name.clone()]));
    assert_eq!(rules[0].verbs, vec!["get".to_owned(), "update".to_owned()]);
    assert_eq!(role.metadata.owner_references.unwrap()[0].uid, uid.as_str());
    let binding: RoleBinding = Api::namespaced(cluster.client.clone(), &cluster.namespace)
        .get(&names.service_account)
        .await
        .unwrap();
    assert_eq!(binding.role_ref.name, names.service_account);
    let subjects = binding.subjects.unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].name, names.service_account);
    assert_eq!(
        binding.metadata.owner_references.unwrap()[0].uid,
        uid.as_str()
    );
    // What the API server's authorizer makes of them (RoleBindings reach it through an
    // informer, so this may take a moment).
    let mut allowed = false;
    for _ in 0..50 {
        allowed = cluster.can(&names.service_account, "get", &name).await
            && cluster.can(&names.service_account, "update", &name).await;
        if allowed {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(allowed, "the Job's account may read and update its secret");
    assert!(!cluster.can(&names.service_account, "delete", &name).await);
    assert!(
        !cluster
            .can(&names.service_account, "get", "another-secret")
            .await
    );

    // Unfinished, the step waits; run again, it starts nothing new.
    assert!(matches!(
        cluster
            .run(&strategy, &name, &token, Step::CreateSecret)
            .await
            .unwrap(),
        StepOutcome::Waiting(_)
    ));
    // Drop wake-ups for Jobs that finished before (other tests' Jobs, seen by the watcher's
    // first listing).
    quiet(&waker).await;

    // The Job completes: the watcher wakes the engine, and the step is done.
    let wakes = registry.step_wakes();
    cluster.finish(&names.job, true).await;
    assert!(woken(&waker).await, "the watcher did not wake the engine");
    assert!(
        registry.step_wakes() > wakes,
        "the wake was not counted as a step's"
    );
    assert!(matches!(
        cluster
            .run(&strategy, &name, &token, Step::CreateSecret)
            .await
            .unwrap(),
        StepOutcome::Done
    ));
    // Run again (a resumed rotation): the finished Job is read, not made again.
    assert!(matches!(
        cluster
            .run(&strategy, &name, &token, Step::CreateSecret)
            .await
            .unwrap(),
        StepOutcome::Done
    ));
    let again = cluster.jobs().get(&names.job).await.unwrap();
    assert_eq!(again.metadata.uid, job.metadata.uid);
    assert_eq!(
        again.metadata.resource_version,
        cluster
            .jobs()
            .get(&names.job)
            .await
            .unwrap()
            .metadata
            .resource_version
    );

    // setSecret's Job fails: the step fails for good, naming the Job and the reason.
    let set = Names::new(&name, &token, Step::SetSecret);
    assert!(matches!(
        cluster
            .run(&strategy, &name, &token, Step::SetSecret)
            .await
            .unwrap(),
        StepOutcome::Waiting(_)
    ));
    let set_job = cluster.jobs().get(&set.job).await.unwrap();
    quiet(&waker).await;
    assert_eq!(
        env(&set_job)[2],
        (ENV_STEP.to_owned(), "setSecret".to_owned())
    );
    cluster.finish(&set.job, false).await;
    assert!(woken(&waker).await, "the watcher did not wake the engine");
    let error = cluster
        .run(&strategy, &name, &token, Step::SetSecret)
        .await
        .err()
        .unwrap();
    assert!(!error.retryable);
    assert_eq!(error.step, Step::SetSecret);
    assert_eq!(
        error.reason,
        format!("Job {} failed (BackoffLimitExceeded)", set.job)
    );
    // Both steps' Jobs share the one account.
    assert_eq!(set.service_account, names.service_account);
}

#[tokio::test]
async fn a_secret_without_a_resource_gets_a_job_that_nothing_owns() {
    let cluster = cluster_or_skip!();
    let name = format!("api/{}", unique("made"));
    let token = token();
    let strategy = JobStrategy::unwatched(cluster.client.clone());
    assert!(matches!(
        cluster
            .run(&strategy, &name, &token, Step::TestSecret)
            .await
            .unwrap(),
        StepOutcome::Waiting(_)
    ));
    let names = Names::new(&name, &token, Step::TestSecret);
    assert!(
        names.resource.starts_with("sm-api-made-"),
        "{}",
        names.resource
    );
    let job = cluster.jobs().get(&names.job).await.unwrap();
    assert!(
        job.metadata
            .owner_references
            .is_none_or(|owners| owners.is_empty())
    );
    let role: Role = Api::namespaced(cluster.client.clone(), &cluster.namespace)
        .get(&names.service_account)
        .await
        .unwrap();
    assert_eq!(
        role.rules.unwrap()[0].resource_names,
        Some(vec![names.resource.clone()])
    );
    cluster.finish(&names.job, true).await;
    assert!(matches!(
        cluster
            .run(&strategy, &name, &token, Step::TestSecret)
            .await
            .unwrap(),
        StepOutcome::Done
    ));
}
