//! Rotation of secrets: RotateSecret and CancelRotateSecret, the runner that carries one
//! rotation through its four steps ([`crate::engine::rotation`]), and the schedule that starts
//! rotations when they fall due.
//!
//! The rotation in progress lives in the secret's record ([`RotationProgress`]): its token and
//! the step to run. The runner writes the next step before running it, so a process killed at
//! any instant resumes the same rotation, with the same token, at the step it was in; strategies
//! make every step safe to run twice. Only `finishSecret` moves AWSCURRENT, in one write with
//! the end of the rotation. A failed step records why (never a value), leaves AWSCURRENT alone,
//! and is tried again with backoff.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::declared::RotationDeclared;
use super::model::{RotationProgress, RotationRecord, SecretRecord, SecretVersion};
use super::rotation_rules::{RotationRules, Schedule};
use super::{CURRENT, PENDING, SERVICE, SecretValue, Secrets, SecretsError};
use crate::crypto::SecretBytes;
use crate::engine::Caller;
use crate::engine::account::{Arn, account_id};
use crate::engine::rotation::{
    JOB_SERVICE_ACCOUNT_PREFIX, Step, StepError, StepOutcome, StepRequest, StrategyRegistry,
};
use crate::engine::schedule::{self, Scheduled};
use crate::store::typed::{self, Typed, TypedChange};

/// Rotations run at once by one process when no setting says otherwise.
pub const DEFAULT_MAX_CONCURRENT_ROTATIONS: usize = 8;

/// The strategy of a rotation that names none.
pub const DEFAULT_STRATEGY: &str = "generate";

/// First wait after a failure that may pass, and after one that will not by itself.
const TRANSIENT_BACKOFF: i64 = 30;
const PERMANENT_BACKOFF: i64 = 300;
/// The longest wait between attempts.
const MAX_BACKOFF: i64 = 3600;

/// Longest `last_error` kept: it reaches status, Events and DescribeSecret.
const MAX_ERROR_LEN: usize = 1024;

/// Rotation functions, named as RotationLambdaARN names them: the built-in strategies.
const FUNCTION_PREFIX: &str = "coffer-";

/// What RotateSecret asks.
#[derive(Clone, Debug, Default)]
pub struct RotateRequest {
    pub client_request_token: Option<String>,
    /// RotationLambdaARN: a built-in strategy (`...:function:coffer-generate`,
    /// `coffer-postgres-single-user`, ...). Without it the secret's strategy stays, or is
    /// `generate` for a secret that never rotated.
    pub function_arn: Option<String>,
    pub rules: Option<RotationRules>,
    /// Default true.
    pub rotate_immediately: Option<bool>,
}

/// What RotateSecret and CancelRotateSecret answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RotateOutcome {
    pub arn: String,
    pub name: String,
    /// The version the rotation makes, when one was started (or is still under way).
    pub version_id: Option<String>,
}

/// A rotation as a declaration (a Secret's `spec.rotation`) states it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeclaredRotation {
    pub rules: RotationRules,
    pub strategy: String,
    pub settings: Value,
}

/// What a rotation's view of the secret says, for DescribeSecret, ListSecrets and status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationView {
    pub enabled: bool,
    pub function_arn: Option<String>,
    pub rules: Option<RotationRules>,
    pub last_rotated: Option<i64>,
    pub next_rotation: Option<i64>,
    /// The step under way, with the version it makes.
    pub in_progress: Option<(Step, String)>,
    pub last_error: Option<String>,
}

impl RotationView {
    pub fn of(record: &SecretRecord) -> Self {
        let Some(rotation) = &record.rotation else {
            return Self::default();
        };
        Self {
            enabled: rotation.enabled,
            function_arn: rotation.function_arn.clone(),
            rules: rotation.rules.clone(),
            last_rotated: rotation.last_rotated,
            next_rotation: rotation.next_rotation.filter(|_| rotation.enabled),
            in_progress: rotation
                .in_progress
                .as_ref()
                .map(|progress| (progress.step, progress.token.clone())),
            last_error: rotation.last_error.clone(),
        }
    }
}

/// How rotations run in this process.
pub(super) struct Rotations {
    pub strategies: StrategyRegistry,
    /// Caps the rotations under way at once.
    pub slots: Arc<Semaphore>,
    /// Secrets (namespace, name) whose rotation a task of this process is carrying.
    pub running: std::sync::Mutex<HashSet<(String, String)>>,
    /// The tasks carrying them: aborted when the schedule stops (leadership lost), so that a
    /// replica that no longer leads runs no step.
    pub tasks: std::sync::Mutex<tokio::task::JoinSet<()>>,
    /// A pause inside each step, for crash tests: half before the strategy runs, half after it
    /// and before its outcome is written.
    pub step_pause: Duration,
    /// Secrets whose step this process left waiting (on a Job), with the count of strategy
    /// wakes when it ran: a later wake lets the step run before its delay is out.
    pub waiting: std::sync::Mutex<HashMap<(String, String), u64>>,
    /// Secrets whose waiting step was woken: run once before `not_before`.
    pub woken: std::sync::Mutex<HashSet<(String, String)>>,
}

impl Rotations {
    /// Whether a strategy has woken the engine since `namespace`/`name`'s step was left
    /// waiting; if so, the step may run now (once).
    fn take_waiting_if_woken(&self, namespace: &str, name: &str) -> bool {
        let key = (namespace.to_owned(), name.to_owned());
        let wakes = self.strategies.step_wakes();
        let woken = self
            .waiting
            .lock()
            .is_ok_and(|mut waiting| match waiting.get(&key) {
                Some(left_at) if *left_at < wakes => waiting.remove(&key).is_some(),
                _ => false,
            });
        if woken && let Ok(mut early) = self.woken.lock() {
            early.insert(key);
        }
        woken
    }

    /// Whether `namespace`/`name` may run its step before `not_before` (woken), once.
    fn take_woken(&self, namespace: &str, name: &str) -> bool {
        self.woken
            .lock()
            .is_ok_and(|mut early| early.remove(&(namespace.to_owned(), name.to_owned())))
    }

    fn left_waiting(&self, namespace: &str, name: &str, wakes: u64) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.insert((namespace.to_owned(), name.to_owned()), wakes);
        }
    }
}

impl Default for Rotations {
    fn default() -> Self {
        Self {
            strategies: StrategyRegistry::new(),
            slots: Arc::new(Semaphore::new(DEFAULT_MAX_CONCURRENT_ROTATIONS)),
            running: std::sync::Mutex::new(HashSet::new()),
            tasks: std::sync::Mutex::new(tokio::task::JoinSet::new()),
            step_pause: Duration::ZERO,
            waiting: std::sync::Mutex::new(HashMap::new()),
            woken: std::sync::Mutex::new(HashSet::new()),
        }
    }
}

/// What one run of a step came to.
enum StepRun {
    /// The next step may run now.
    Advanced,
    /// Nothing more to do now: finished, waiting, failed, or nothing under way.
    Stopped,
}

/// The strategy and settings a RotationLambdaARN names.
fn strategy_of_function(function_arn: &str) -> Result<(String, Value), SecretsError> {
    let name = match function_arn.strip_prefix("arn:") {
        Some(_) => Arn::parse(function_arn)
            .filter(|arn| arn.service == "lambda")
            .and_then(|arn| {
                arn.resource
                    .strip_prefix("function:")
                    .map(|rest| rest.split(':').next().unwrap_or(rest).to_owned())
            }),
        None => Some(function_arn.to_owned()),
    };
    let unknown = || {
        SecretsError::InvalidParameter(format!(
            "RotationLambdaARN must name one of Coffer's rotation functions: {FUNCTION_PREFIX}generate, {FUNCTION_PREFIX}postgres-single-user, {FUNCTION_PREFIX}postgres-alternating-users, {FUNCTION_PREFIX}mysql-single-user, {FUNCTION_PREFIX}mysql-alternating-users."
        ))
    };
    let name = name.ok_or_else(unknown)?;
    let rest = name.strip_prefix(FUNCTION_PREFIX).ok_or_else(unknown)?;
    if rest == "generate" {
        return Ok(("generate".into(), Value::Null));
    }
    for engine in ["postgres", "mysql"] {
        for (suffix, variant) in [
            ("single-user", "singleUser"),
            ("alternating-users", "alternatingUsers"),
        ] {
            if rest == format!("{engine}-{suffix}") {
                return Ok((engine.into(), json!({ "variant": variant })));
            }
        }
    }
    Err(unknown())
}

/// Whether `caller` is a rotation Job's ServiceAccount, which may read a secret and write only
/// the pending version of the rotation under way.
pub(super) fn is_rotation_job(caller: &Caller) -> bool {
    caller
        .principal
        .arn
        .split_once(":role/serviceaccount/")
        .is_some_and(|(_, name)| name.starts_with(JOB_SERVICE_ACCOUNT_PREFIX))
}

/// What a rotation Job may do at all; PutSecretValue only for the pending version.
pub(super) const ROTATION_JOB_ACTIONS: [&str; 4] = [
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:ListSecretVersionIds",
    "secretsmanager:PutSecretValue",
];

/// A rotation Job's PutSecretValue: only the pending version of the rotation under way, under
/// its token, labelled AWSPENDING alone.
pub(super) fn check_rotation_job_write(
    record: &SecretRecord,
    token: Option<&str>,
    stages: &[String],
) -> Result<(), SecretsError> {
    let under_way = record
        .rotation
        .as_ref()
        .and_then(|rotation| rotation.in_progress.as_ref())
        .map(|progress| progress.token.as_str());
    let pending_only = stages.len() == 1 && stages.iter().all(|stage| stage == PENDING);
    if under_way.is_some() && token == under_way && pending_only {
        return Ok(());
    }
    Err(SecretsError::AccessDenied(format!(
        "A rotation Job may only put the pending version of the rotation under way of {}, with its ClientRequestToken and the staging label {PENDING}.",
        record.arn
    )))
}

/// The wait before attempt `failures + 1` of a step.
fn backoff(failures: u32, retryable: bool) -> i64 {
    let base = if retryable {
        TRANSIENT_BACKOFF
    } else {
        PERMANENT_BACKOFF
    };
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1i64 << doublings).min(MAX_BACKOFF)
}

/// When the next scheduled rotation starts: an instant in the next window, so that secrets on
/// one schedule spread over it.
fn next_rotation(rules: &RotationRules, now: i64, last_rotated: Option<i64>) -> Option<i64> {
    let window = Schedule::parse(rules)
        .ok()?
        .next_window(now, last_rotated)?;
    Some(window.pick(&mut rand::rng()))
}

fn truncated_error(message: &str) -> String {
    let mut end = message.len().min(MAX_ERROR_LEN);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message[..end].to_owned()
}

impl Secrets {
    /// Runs rotations with `strategies`, at most `max_concurrent` at once. `step_pause` (zero
    /// outside crash tests) stretches every step.
    pub fn with_rotation(
        mut self,
        strategies: StrategyRegistry,
        max_concurrent: usize,
        step_pause: Duration,
    ) -> Self {
        self.rotations = Arc::new(Rotations {
            strategies,
            slots: Arc::new(Semaphore::new(max_concurrent.max(1))),
            running: std::sync::Mutex::new(HashSet::new()),
            tasks: std::sync::Mutex::new(tokio::task::JoinSet::new()),
            step_pause,
            waiting: std::sync::Mutex::new(HashMap::new()),
            woken: std::sync::Mutex::new(HashSet::new()),
        });
        self
    }

    /// Wakes the rotation schedule: a rotation was asked for, changed, or a step may be done.
    pub fn rotation_changed(&self) -> Arc<Notify> {
        self.rotations.strategies.waker()
    }

    /// Checks a strategy and its settings before they are recorded.
    fn check_strategy(&self, strategy: &str, settings: &Value) -> Result<(), SecretsError> {
        let Some(found) = self.rotations.strategies.get(strategy) else {
            let offered = self.rotations.strategies.names().join(", ");
            return Err(SecretsError::InvalidParameter(format!(
                "The rotation strategy {strategy} is not offered here (offered: {offered})."
            )));
        };
        found
            .check_settings(settings)
            .map_err(|err| SecretsError::InvalidParameter(format!("Rotation settings: {err}")))
    }

    /// RotateSecret: sets how and when the secret rotates, and starts a rotation unless
    /// RotateImmediately is false. One rotation at a time.
    pub async fn rotate_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
        request: RotateRequest,
    ) -> Result<RotateOutcome, SecretsError> {
        if let Some(token) = &request.client_request_token {
            super::operations::validate_token(token)?;
        }
        if let Some(rules) = &request.rules {
            Schedule::parse(rules)
                .map_err(|err| SecretsError::InvalidParameter(err.to_string()))?;
        }
        let found = self
            .authorized(caller, secret_id, "secretsmanager:RotateSecret")
            .await?;
        super::operations::refuse_planned_deletion(&found.meta)?;
        let previous = found.meta.rotation.clone();
        let (strategy, settings) = match (&request.function_arn, &previous) {
            (Some(function), _) => strategy_of_function(function)?,
            (None, Some(previous)) => (previous.strategy.clone(), previous.settings.clone()),
            (None, None) => (DEFAULT_STRATEGY.to_owned(), Value::Null),
        };
        self.check_strategy(&strategy, &settings)?;
        let immediately = request.rotate_immediately.unwrap_or(true);
        let token = request
            .client_request_token
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let now = self.now();
        let namespace = self
            .home_namespace(caller, &found.meta)
            .unwrap_or_else(|| caller.namespace.clone());
        let key = typed::key::<SecretRecord>(&namespace, &found.meta.name);
        let arn = found.meta.arn.clone();
        let _turn = self.write_turn(&namespace, &found.meta.name).await;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            let current = current
                .filter(|current| current.meta.arn == arn)
                .ok_or_else(not_found)?;
            super::operations::refuse_planned_deletion(&current.meta)?;
            let mut meta = current.meta.clone();
            let previous = meta.rotation.take();
            if previous
                .as_ref()
                .is_some_and(|previous| previous.in_progress.is_some())
            {
                return Err(SecretsError::InvalidRequest(
                    "A previous rotation isn't complete. That rotation will be reattempted.".into(),
                ));
            }
            if immediately && meta.versions.contains_key(&token) {
                return Err(SecretsError::InvalidRequest(
                    "A version with this ClientRequestToken already exists.".into(),
                ));
            }
            let rules = request.rules.clone().or_else(|| {
                previous
                    .as_ref()
                    .and_then(|previous| previous.rules.clone())
            });
            let last_rotated = previous.as_ref().and_then(|previous| previous.last_rotated);
            // A rotation asked for without new settings leaves a declared rotation declared.
            let declared = previous.as_ref().is_some_and(|previous| previous.declared)
                && request.rules.is_none()
                && request.function_arn.is_none();
            meta.rotation = Some(RotationRecord {
                enabled: true,
                declared,
                next_rotation: match (&rules, immediately) {
                    (Some(rules), false) => next_rotation(rules, now, last_rotated),
                    _ => None,
                },
                rules,
                strategy: strategy.to_owned(),
                settings: settings.clone(),
                function_arn: request.function_arn.clone().or_else(|| {
                    previous
                        .as_ref()
                        .and_then(|previous| previous.function_arn.clone())
                }),
                last_rotated,
                in_progress: immediately.then(|| RotationProgress {
                    token: token.clone(),
                    step: Step::CreateSecret,
                    started: now,
                    failures: 0,
                    not_before: now,
                }),
                last_error: None,
            });
            meta.last_changed = now;
            Ok(TypedChange::Put {
                meta,
                sealed: current.sealed.clone(),
            })
        })
        .await?;
        self.rotation_changed().notify_one();
        Ok(RotateOutcome {
            arn,
            name: found.meta.name.clone(),
            version_id: immediately.then_some(token),
        })
    }

    /// CancelRotateSecret: turns rotation off. A rotation under way stops if nothing outside
    /// Coffer can have changed yet (before `setSecret`, or any step of `generate`); past that
    /// the value in use may already be the pending one, so it goes on to `finishSecret`.
    pub async fn cancel_rotate_secret(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<RotateOutcome, SecretsError> {
        let found = self
            .authorized(caller, secret_id, "secretsmanager:CancelRotateSecret")
            .await?;
        let namespace = self
            .home_namespace(caller, &found.meta)
            .unwrap_or_else(|| caller.namespace.clone());
        let key = typed::key::<SecretRecord>(&namespace, &found.meta.name);
        let arn = found.meta.arn.clone();
        let now = self.now();
        let mut version_id = None;
        let _turn = self.write_turn(&namespace, &found.meta.name).await;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            let current = current
                .filter(|current| current.meta.arn == arn)
                .ok_or_else(not_found)?;
            let mut meta = current.meta.clone();
            let Some(rotation) = meta.rotation.as_mut() else {
                return Ok(TypedChange::Keep);
            };
            rotation.enabled = false;
            rotation.next_rotation = None;
            version_id = None;
            if let Some(progress) = &rotation.in_progress {
                let harmless = progress.step == Step::CreateSecret
                    || (rotation.strategy == DEFAULT_STRATEGY
                        && progress.step != Step::FinishSecret);
                if harmless {
                    let token = progress.token.clone();
                    rotation.in_progress = None;
                    rotation.last_error = None;
                    if meta.version_with(PENDING) == Some(token.as_str()) {
                        meta.move_stage(PENDING, None, Some(&token))
                            .map_err(|err| SecretsError::InvalidRequest(err.to_string()))?;
                    }
                } else {
                    version_id = Some(progress.token.clone());
                }
            }
            meta.last_changed = now;
            Ok(TypedChange::Put {
                meta,
                sealed: current.sealed.clone(),
            })
        })
        .await?;
        self.rotation_changed().notify_one();
        Ok(RotateOutcome {
            arn,
            name: found.meta.name.clone(),
            version_id,
        })
    }

    /// Starts rotations that are due and runs steps whose time has come, in all namespaces, up
    /// to the cap; returns when work next falls due. Rotations left out by the cap start when
    /// a running one ends (it wakes the schedule).
    pub async fn rotate_due(self: &Arc<Self>) -> Result<Option<i64>, SecretsError> {
        let now = self.now();
        let mut next: Option<i64> = None;
        let mut earliest = |at: i64| next = Some(next.map_or(at, |next: i64| next.min(at)));
        for (key, stored) in typed::list::<SecretRecord, _>(self.store.as_ref(), None).await? {
            let record = &stored.meta;
            let Some(rotation) = &record.rotation else {
                continue;
            };
            if record.deleted.is_some() || self.is_rotating(&key.namespace, &record.name) {
                continue;
            }
            let due = match (
                &rotation.in_progress,
                rotation.enabled,
                rotation.next_rotation,
            ) {
                (Some(progress), _, _)
                    if progress.not_before > now
                        && self
                            .rotations
                            .take_waiting_if_woken(&key.namespace, &record.name) =>
                {
                    now
                }
                (Some(progress), _, _) => progress.not_before,
                (None, true, Some(at)) => at,
                (None, true, None) => {
                    if let Some(at) = self
                        .plan_next_rotation(&key.namespace, &record.name, now)
                        .await?
                    {
                        earliest(at);
                    }
                    continue;
                }
                (None, false, _) => continue,
            };
            if due > now {
                earliest(due);
                continue;
            }
            let Ok(permit) = Arc::clone(&self.rotations.slots).try_acquire_owned() else {
                continue;
            };
            if rotation.in_progress.is_none()
                && !self
                    .start_scheduled(&key.namespace, &record.name, now)
                    .await?
            {
                continue;
            }
            self.spawn_rotation(key.namespace.clone(), record.name.clone(), permit);
        }
        Ok(next)
    }

    fn is_rotating(&self, namespace: &str, name: &str) -> bool {
        self.rotations
            .running
            .lock()
            .is_ok_and(|running| running.contains(&(namespace.to_owned(), name.to_owned())))
    }

    /// Records when the next rotation of a secret that has rules but no date starts (rotation
    /// declared by a resource, or turned back on).
    async fn plan_next_rotation(
        &self,
        namespace: &str,
        name: &str,
        now: i64,
    ) -> Result<Option<i64>, SecretsError> {
        let key = typed::key::<SecretRecord>(namespace, name);
        let mut planned = None;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            planned = None;
            let Some(current) = current else {
                return Ok(TypedChange::Keep);
            };
            let mut meta = current.meta.clone();
            let Some(rotation) = meta.rotation.as_mut() else {
                return Ok(TypedChange::Keep);
            };
            if !rotation.enabled || rotation.next_rotation.is_some() {
                return Ok(TypedChange::Keep);
            }
            let Some(rules) = &rotation.rules else {
                return Ok(TypedChange::Keep);
            };
            planned = next_rotation(rules, now, rotation.last_rotated);
            if planned.is_none() {
                return Ok(TypedChange::Keep);
            }
            rotation.next_rotation = planned;
            Ok(TypedChange::Put {
                meta,
                sealed: current.sealed.clone(),
            })
        })
        .await?;
        Ok(planned)
    }

    /// Starts the scheduled rotation of a secret, with a fresh token, unless another writer
    /// started one or moved the date. Returns whether there is a rotation to run.
    async fn start_scheduled(
        &self,
        namespace: &str,
        name: &str,
        now: i64,
    ) -> Result<bool, SecretsError> {
        let key = typed::key::<SecretRecord>(namespace, name);
        let token = uuid::Uuid::new_v4().to_string();
        let mut started = false;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            started = false;
            let Some(current) = current else {
                return Ok(TypedChange::Keep);
            };
            let mut meta = current.meta.clone();
            let Some(rotation) = meta.rotation.as_mut() else {
                return Ok(TypedChange::Keep);
            };
            if rotation.in_progress.is_some() {
                started = true;
                return Ok(TypedChange::Keep);
            }
            if !rotation.enabled || rotation.next_rotation.is_none_or(|at| at > now) {
                return Ok(TypedChange::Keep);
            }
            rotation.next_rotation = None;
            rotation.in_progress = Some(RotationProgress {
                token: token.clone(),
                step: Step::CreateSecret,
                started: now,
                failures: 0,
                not_before: now,
            });
            started = true;
            Ok(TypedChange::Put {
                meta,
                sealed: current.sealed.clone(),
            })
        })
        .await?;
        Ok(started)
    }

    fn spawn_rotation(
        self: &Arc<Self>,
        namespace: String,
        name: String,
        permit: OwnedSemaphorePermit,
    ) {
        if let Ok(mut running) = self.rotations.running.lock() {
            running.insert((namespace.clone(), name.clone()));
        }
        let secrets = Arc::clone(self);
        let rotation = async move {
            loop {
                match secrets.run_step(&namespace, &name).await {
                    Ok(StepRun::Advanced) => continue,
                    Ok(StepRun::Stopped) => break,
                    Err(err) => {
                        tracing::error!(
                            namespace = %namespace,
                            secret = %name,
                            error = %crate::redact::chain(&err),
                            "a rotation step could not be run or recorded; trying again later"
                        );
                        // Not at once: what broke (the store, KMS) is unlikely to mend at once.
                        tokio::time::sleep(Duration::from_secs(TRANSIENT_BACKOFF as u64)).await;
                        break;
                    }
                }
            }
            drop(permit);
            if let Ok(mut running) = secrets.rotations.running.lock() {
                running.remove(&(namespace, name));
            }
            secrets.rotation_changed().notify_one();
        };
        if let Ok(mut tasks) = self.rotations.tasks.lock() {
            // Reap the finished ones, so the set holds only rotations under way.
            while tasks.try_join_next().is_some() {}
            tasks.spawn(rotation);
        }
    }

    /// Stops every rotation task of this process (the schedule stopped): what they were doing
    /// is in the records, and whoever runs the schedule next resumes it.
    fn abort_rotations(&self) {
        if let Ok(mut tasks) = self.rotations.tasks.lock() {
            tasks.abort_all();
        }
        if let Ok(mut running) = self.rotations.running.lock() {
            running.clear();
        }
    }

    /// Runs the step under way of secret `name`, if its time has come, and records its outcome.
    async fn run_step(&self, namespace: &str, name: &str) -> Result<StepRun, SecretsError> {
        let Some(stored) =
            typed::get::<SecretRecord, _>(self.store.as_ref(), namespace, name).await?
        else {
            return Ok(StepRun::Stopped);
        };
        let Some(rotation) = stored.meta.rotation.clone() else {
            return Ok(StepRun::Stopped);
        };
        let Some(progress) = rotation.in_progress.clone() else {
            return Ok(StepRun::Stopped);
        };
        if stored.meta.deleted.is_some()
            || (progress.not_before > self.now() && !self.rotations.take_woken(namespace, name))
        {
            return Ok(StepRun::Stopped);
        }
        // Counted before the step runs, so that a wake while it runs is not lost.
        let wakes = self.rotations.strategies.step_wakes();
        let step = progress.step;
        let outcome = match self.rotations.strategies.get(&rotation.strategy) {
            None => Err(StepError::permanent(
                step,
                format!("the strategy {} is not offered here", rotation.strategy),
            )),
            Some(strategy) => {
                let strategy = Arc::clone(strategy);
                let current = match stored.meta.version_with(CURRENT) {
                    Some(id) => Some(self.open_for_account(namespace, &stored, id).await?),
                    None => None,
                };
                let pending = match stored.meta.versions.contains_key(&progress.token) {
                    true => Some(
                        self.open_for_account(namespace, &stored, &progress.token)
                            .await?,
                    ),
                    false => None,
                };
                let current_bytes = current.as_ref().map(|value| &value.bytes);
                let referenced = match strategy.referenced_secret(&rotation.settings, current_bytes)
                {
                    Some(reference) => self.referenced_value(namespace, &reference, step).await?,
                    None => Ok(None),
                };
                match referenced {
                    Err(err) => Err(err),
                    Ok(referenced) => {
                        self.pause_in_step().await;
                        let outcome = strategy
                            .run(StepRequest {
                                step,
                                secret_id: &stored.meta.arn,
                                namespace,
                                name,
                                token: &progress.token,
                                settings: &rotation.settings,
                                current: current_bytes,
                                pending: pending.as_ref().map(|value| &value.bytes),
                                referenced: referenced.as_ref().map(|value| &value.bytes),
                                attempt: progress.failures,
                            })
                            .await;
                        self.pause_in_step().await;
                        outcome
                    }
                }
            }
        };
        match outcome {
            Ok(StepOutcome::Pending(value)) if step == Step::CreateSecret => {
                self.store_pending(namespace, &stored, &progress, value)
                    .await?;
                self.advance(namespace, name, &progress).await
            }
            Ok(StepOutcome::Pending(_)) => {
                self.fail(
                    namespace,
                    name,
                    &progress,
                    StepError::permanent(step, "the strategy made a value outside createSecret"),
                )
                .await
            }
            Ok(StepOutcome::Done) if step == Step::FinishSecret => {
                self.finish(namespace, name, &progress).await
            }
            Ok(StepOutcome::Done) => {
                if step == Step::CreateSecret
                    && !self.has_version(namespace, name, &progress.token).await?
                {
                    return self
                        .fail(
                            namespace,
                            name,
                            &progress,
                            StepError::permanent(
                                step,
                                "createSecret finished without a pending version under the rotation's token",
                            ),
                        )
                        .await;
                }
                self.advance(namespace, name, &progress).await
            }
            Ok(StepOutcome::Waiting(after)) => {
                self.rotations.left_waiting(namespace, name, wakes);
                let at = self
                    .now()
                    .saturating_add(i64::try_from(after.as_secs()).unwrap_or(MAX_BACKOFF).max(1));
                self.record_progress(namespace, name, &progress, |rotation, progress| {
                    progress.not_before = at;
                    let _ = rotation;
                })
                .await?;
                Ok(StepRun::Stopped)
            }
            Err(err) => self.fail(namespace, name, &progress, err).await,
        }
    }

    async fn pause_in_step(&self) {
        if !self.rotations.step_pause.is_zero() {
            tokio::time::sleep(self.rotations.step_pause / 2).await;
        }
    }

    /// The current value of the secret `reference` (a name or an ARN) of `namespace`, for a
    /// step; a reference that reaches nothing fails the step.
    async fn referenced_value(
        &self,
        namespace: &str,
        reference: &str,
        step: Step,
    ) -> Result<Result<Option<SecretValue>, StepError>, SecretsError> {
        let name = match reference.strip_prefix("arn:") {
            None => reference.to_owned(),
            Some(_) => {
                let arn = Arn::parse(reference).filter(|arn| {
                    arn.service == SERVICE && arn.account_id == account_id(namespace)
                });
                let Some(name) = arn
                    .as_ref()
                    .and_then(|arn| arn.resource.strip_prefix("secret:"))
                    .map(|rest| match rest.rsplit_once('-') {
                        Some((base, suffix)) if suffix.len() == super::ARN_SUFFIX_LEN => {
                            base.to_owned()
                        }
                        _ => rest.to_owned(),
                    })
                else {
                    return Ok(Err(StepError::permanent(
                        step,
                        "the referenced secret must be a secret of the same namespace",
                    )));
                };
                name
            }
        };
        let Some(found) =
            typed::get::<SecretRecord, _>(self.store.as_ref(), namespace, &name).await?
        else {
            return Ok(Err(StepError::permanent(
                step,
                format!(
                    "the referenced secret {} does not exist",
                    crate::engine::text::truncate(&name)
                ),
            )));
        };
        let Some(version) = found.meta.version_with(CURRENT).map(str::to_owned) else {
            return Ok(Err(StepError::permanent(
                step,
                format!("the referenced secret {name} has no current value"),
            )));
        };
        Ok(Ok(Some(
            self.open_for_account(namespace, &found, &version).await?,
        )))
    }

    async fn has_version(
        &self,
        namespace: &str,
        name: &str,
        version_id: &str,
    ) -> Result<bool, SecretsError> {
        Ok(
            typed::get::<SecretRecord, _>(self.store.as_ref(), namespace, name)
                .await?
                .is_some_and(|found| found.meta.versions.contains_key(version_id)),
        )
    }

    /// Stores createSecret's value as the AWSPENDING version under the token; a version
    /// already there (a createSecret run again after a crash) is kept as it is.
    pub(super) async fn store_pending(
        &self,
        namespace: &str,
        stored: &Typed<SecretRecord>,
        progress: &RotationProgress,
        value: SecretBytes,
    ) -> Result<(), SecretsError> {
        if stored.meta.versions.contains_key(&progress.token) {
            return Ok(());
        }
        let binary = stored
            .meta
            .version_with(CURRENT)
            .and_then(|id| stored.meta.versions.get(id))
            .is_some_and(|version| version.binary);
        let value = SecretValue {
            bytes: value,
            binary,
        };
        super::operations::validate_value(&value)?;
        let binding = Secrets::value_binding(namespace, &stored.meta, &progress.token);
        let (blob, key_arn) = self
            .kms
            .seal_value_for_account(
                stored.meta.kms_key_id.as_deref(),
                &binding,
                value.bytes.expose(),
            )
            .await
            .map_err(SecretsError::sealing)?;
        let now = self.now();
        let key = typed::key::<SecretRecord>(namespace, &stored.meta.name);
        let arn = stored.meta.arn.clone();
        let _turn = self.write_turn(namespace, &stored.meta.name).await;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            let Some(current) = current.filter(|current| current.meta.arn == arn) else {
                return Err(not_found());
            };
            let still_ours = current
                .meta
                .rotation
                .as_ref()
                .and_then(|rotation| rotation.in_progress.as_ref())
                .is_some_and(|now_under_way| now_under_way.token == progress.token);
            if !still_ours || current.meta.versions.contains_key(&progress.token) {
                return Ok(TypedChange::Keep);
            }
            let mut meta = current.meta.clone();
            let mut sealed = current.sealed.clone();
            let pruned = meta
                .add_version(
                    &progress.token,
                    SecretVersion {
                        created: now,
                        stages: Default::default(),
                        binary,
                        kms_key_arn: key_arn.clone(),
                    },
                    &[PENDING.to_owned()],
                )
                .map_err(|err| SecretsError::InvalidRequest(err.to_string()))?;
            for id in pruned {
                sealed.remove(&SecretRecord::value_slot(&id));
            }
            sealed.insert(SecretRecord::value_slot(&progress.token), blob.clone());
            meta.last_changed = now;
            Ok(TypedChange::Put { meta, sealed })
        })
        .await?;
        Ok(())
    }

    /// Changes the rotation under way, if it is still the one `progress` describes (the same
    /// token at the same step): a cancel or another replica may have moved it on.
    async fn record_progress(
        &self,
        namespace: &str,
        name: &str,
        progress: &RotationProgress,
        mut change: impl FnMut(&mut RotationRecord, &mut RotationProgress),
    ) -> Result<bool, SecretsError> {
        let key = typed::key::<SecretRecord>(namespace, name);
        let mut changed = false;
        let _turn = self.write_turn(namespace, name).await;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            changed = false;
            let Some(current) = current else {
                return Ok(TypedChange::Keep);
            };
            let mut meta = current.meta.clone();
            let Some(rotation) = meta.rotation.as_mut() else {
                return Ok(TypedChange::Keep);
            };
            let Some(mut under_way) = rotation.in_progress.clone() else {
                return Ok(TypedChange::Keep);
            };
            if under_way.token != progress.token || under_way.step != progress.step {
                return Ok(TypedChange::Keep);
            }
            change(rotation, &mut under_way);
            rotation.in_progress = Some(under_way);
            changed = true;
            Ok(TypedChange::Put {
                meta,
                sealed: current.sealed.clone(),
            })
        })
        .await?;
        Ok(changed)
    }

    /// Writes the next step as the one to run.
    async fn advance(
        &self,
        namespace: &str,
        name: &str,
        progress: &RotationProgress,
    ) -> Result<StepRun, SecretsError> {
        let Some(next) = progress.step.next() else {
            return Ok(StepRun::Stopped);
        };
        let now = self.now();
        let advanced = self
            .record_progress(namespace, name, progress, |_, under_way| {
                under_way.step = next;
                under_way.failures = 0;
                under_way.not_before = now;
            })
            .await?;
        Ok(if advanced {
            StepRun::Advanced
        } else {
            StepRun::Stopped
        })
    }

    /// Records a failed step: why, and when to try again. AWSCURRENT is not touched.
    async fn fail(
        &self,
        namespace: &str,
        name: &str,
        progress: &RotationProgress,
        err: StepError,
    ) -> Result<StepRun, SecretsError> {
        let now = self.now();
        let message = truncated_error(&err.to_string());
        tracing::warn!(
            namespace = %namespace,
            secret = %name,
            step = %err.step,
            retryable = err.retryable,
            error = %message,
            "a rotation step failed; AWSCURRENT is unchanged and the step will be retried"
        );
        self.record_progress(namespace, name, progress, |rotation, under_way| {
            under_way.failures = under_way.failures.saturating_add(1);
            under_way.not_before = now.saturating_add(backoff(under_way.failures, err.retryable));
            rotation.last_error = Some(message.clone());
        })
        .await?;
        Ok(StepRun::Stopped)
    }

    /// finishSecret's own part: AWSCURRENT moves to the pending version, AWSPREVIOUS to the
    /// version that had it, AWSPENDING goes, and the rotation ends; all in one write.
    async fn finish(
        &self,
        namespace: &str,
        name: &str,
        progress: &RotationProgress,
    ) -> Result<StepRun, SecretsError> {
        let now = self.now();
        let key = typed::key::<SecretRecord>(namespace, name);
        let _turn = self.write_turn(namespace, name).await;
        let mut missing = false;
        typed::modify::<SecretRecord, _, _, SecretsError>(self.store.as_ref(), &key, |current| {
            missing = false;
            let Some(current) = current else {
                return Ok(TypedChange::Keep);
            };
            let mut meta = current.meta.clone();
            let Some(rotation) = meta.rotation.clone() else {
                return Ok(TypedChange::Keep);
            };
            let ours = rotation.in_progress.as_ref().is_some_and(|under_way| {
                under_way.token == progress.token && under_way.step == Step::FinishSecret
            });
            if !ours {
                return Ok(TypedChange::Keep);
            }
            if !meta.versions.contains_key(&progress.token) {
                missing = true;
                return Ok(TypedChange::Keep);
            }
            let holder = meta.version_with(CURRENT).map(str::to_owned);
            if holder.as_deref() != Some(progress.token.as_str()) {
                meta.move_stage(CURRENT, Some(&progress.token), holder.as_deref())
                    .map_err(|err| SecretsError::InvalidRequest(err.to_string()))?;
            }
            if meta.version_with(PENDING) == Some(progress.token.as_str()) {
                meta.move_stage(PENDING, None, Some(&progress.token))
                    .map_err(|err| SecretsError::InvalidRequest(err.to_string()))?;
            }
            let mut finished = rotation;
            finished.in_progress = None;
            finished.last_error = None;
            finished.last_rotated = Some(now);
            finished.next_rotation = match (&finished.rules, finished.enabled) {
                (Some(rules), true) => next_rotation(rules, now, Some(now)),
                _ => None,
            };
            meta.rotation = Some(finished);
            meta.last_changed = now;
            Ok(TypedChange::Put {
                meta,
                sealed: current.sealed.clone(),
            })
        })
        .await?;
        if missing {
            return self
                .fail(
                    namespace,
                    name,
                    progress,
                    StepError::permanent(Step::FinishSecret, "the pending version is gone"),
                )
                .await;
        }
        tracing::info!(namespace = %namespace, secret = %name, version = %progress.token, "rotated a secret");
        Ok(StepRun::Stopped)
    }

    /// Brings the rotation of a declared secret to `declared`. Progress is kept: a rotation
    /// under way finishes whatever the declaration now says.
    pub(super) fn apply_declared_rotation(
        meta: &mut SecretRecord,
        declared: &RotationDeclared,
        now: i64,
    ) {
        let declared = match declared {
            RotationDeclared::Unchanged => return,
            RotationDeclared::Absent => {
                if let Some(rotation) = meta.rotation.as_mut()
                    && rotation.declared
                {
                    rotation.enabled = false;
                    rotation.declared = false;
                    rotation.next_rotation = None;
                }
                return;
            }
            RotationDeclared::Declared(declared) => declared,
        };
        let previous = meta.rotation.take();
        let same = previous.as_ref().is_some_and(|previous| {
            previous.enabled
                && previous.rules.as_ref() == Some(&declared.rules)
                && previous.strategy == declared.strategy
                && previous.settings == declared.settings
        });
        meta.rotation = Some(match previous {
            Some(mut previous) if same => {
                previous.declared = true;
                previous
            }
            previous => {
                let last_rotated = previous.as_ref().and_then(|previous| previous.last_rotated);
                RotationRecord {
                    enabled: true,
                    declared: true,
                    next_rotation: next_rotation(&declared.rules, now, last_rotated),
                    rules: Some(declared.rules.clone()),
                    strategy: declared.strategy.clone(),
                    settings: declared.settings.clone(),
                    function_arn: None,
                    last_rotated,
                    in_progress: previous
                        .as_ref()
                        .and_then(|previous| previous.in_progress.clone()),
                    last_error: previous.and_then(|previous| previous.last_error),
                }
            }
        });
    }

    /// Checks a declared rotation before it is applied.
    pub fn check_declared_rotation(&self, declared: &DeclaredRotation) -> Result<(), SecretsError> {
        Schedule::parse(&declared.rules)
            .map_err(|err| SecretsError::InvalidParameter(err.to_string()))?;
        self.check_strategy(&declared.strategy, &declared.settings)
    }

    /// Runs the rotation schedule ([`crate::engine::schedule::run`]) until the task is dropped.
    pub async fn run_rotation_scheduler(self: Arc<Self>) {
        /// Aborts the rotation tasks when the schedule's future is dropped.
        struct StopRotations(Arc<Secrets>);
        impl Drop for StopRotations {
            fn drop(&mut self) {
                self.0.abort_rotations();
            }
        }
        let _stop = StopRotations(Arc::clone(&self));
        schedule::run(Arc::new(RotationSchedule(self))).await;
    }
}

fn not_found() -> SecretsError {
    SecretsError::NotFound("Secrets Manager can't find the specified secret.".into())
}

/// The rotation schedule as a [`Scheduled`] duty.
struct RotationSchedule(Arc<Secrets>);

#[async_trait::async_trait]
impl Scheduled for RotationSchedule {
    type Error = SecretsError;

    fn name(&self) -> &'static str {
        "secret rotation"
    }

    async fn run_due(&self) -> Result<Option<i64>, SecretsError> {
        self.0.rotate_due().await
    }

    fn changed(&self) -> Arc<Notify> {
        self.0.rotation_changed()
    }

    fn now(&self) -> i64 {
        self.0.now()
    }
}
