//! Secret rotation as AWS runs it: four steps, each of which a strategy carries out.
//!
//! - `createSecret`: make the new value, stored as the AWSPENDING version under the rotation's
//!   token (the strategy returns it; the engine stores it);
//! - `setSecret`: make the new value work where it is used (a database password changed);
//! - `testSecret`: check that it does (log in with it);
//! - `finishSecret`: the engine moves AWSCURRENT to the pending version; a strategy may clean up.
//!
//! The engine persists which step comes next before running it, so a rotation interrupted at any
//! instant resumes with the same token, and only `finishSecret` moves AWSCURRENT. Strategies
//! (generate, PostgreSQL, MySQL, a Kubernetes Job, a webhook) implement [`RotationStrategy`]
//! where their I/O lives (`crate::rotation`); the engine knows them only through
//! [`StrategyRegistry`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crypto::SecretBytes;

/// ServiceAccounts whose names start so are rotation Jobs': the engine lets them read the
/// secret and write only its pending version (never moves a label, never deletes). The rule
/// only narrows what RBAC grants, so a user who names an account so gains nothing.
pub const JOB_SERVICE_ACCOUNT_PREFIX: &str = "coffer-rotation-";

/// One of the four steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Step {
    #[serde(rename = "createSecret")]
    CreateSecret,
    #[serde(rename = "setSecret")]
    SetSecret,
    #[serde(rename = "testSecret")]
    TestSecret,
    #[serde(rename = "finishSecret")]
    FinishSecret,
}

impl Step {
    /// The steps in the order they run.
    pub const ALL: [Step; 4] = [
        Step::CreateSecret,
        Step::SetSecret,
        Step::TestSecret,
        Step::FinishSecret,
    ];

    /// The name AWS gives the step (a Lambda's `Step` field).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::CreateSecret => "createSecret",
            Step::SetSecret => "setSecret",
            Step::TestSecret => "testSecret",
            Step::FinishSecret => "finishSecret",
        }
    }

    /// The step after this one, `None` after `finishSecret`.
    pub fn next(self) -> Option<Step> {
        match self {
            Step::CreateSecret => Some(Step::SetSecret),
            Step::SetSecret => Some(Step::TestSecret),
            Step::TestSecret => Some(Step::FinishSecret),
            Step::FinishSecret => None,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a strategy is given for one step.
pub struct StepRequest<'a> {
    pub step: Step,
    /// The secret's ARN.
    pub secret_id: &'a str,
    /// The namespace (the account) the secret lives in.
    pub namespace: &'a str,
    /// The secret's name.
    pub name: &'a str,
    /// The rotation's ClientRequestToken: the pending version's id.
    pub token: &'a str,
    /// The strategy's settings, as recorded with the secret's rotation (see
    /// [`RotationStrategy::check_settings`]).
    pub settings: &'a serde_json::Value,
    /// The AWSCURRENT value, when there is one.
    pub current: Option<&'a SecretBytes>,
    /// The AWSPENDING value, from `setSecret` on.
    pub pending: Option<&'a SecretBytes>,
    /// The AWSCURRENT value of the other secret that [`RotationStrategy::referenced_secret`]
    /// named (a database's master credentials, a webhook's signing key), read by the engine
    /// from the same namespace.
    pub referenced: Option<&'a SecretBytes>,
    /// How many times this step has failed before in this rotation (0 on the first run).
    pub attempt: u32,
}

/// What a step produced.
pub enum StepOutcome {
    /// The step is done.
    Done,
    /// `createSecret`'s new value, to be stored as the pending version.
    Pending(SecretBytes),
    /// The step was started elsewhere (a Job) and is not finished: run it again after this
    /// long, or sooner when the strategy wakes the engine ([`StrategyRegistry::waker`]).
    Waiting(Duration),
}

/// Why a step failed: shown in status, conditions, Events and DescribeSecret, so never a value.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {reason}")]
pub struct StepError {
    pub step: Step,
    pub reason: String,
    /// Whether trying again later may succeed (a database that is down) rather than not (a
    /// strategy that is misconfigured). Both are retried with backoff; a permanent failure
    /// waits longer.
    pub retryable: bool,
}

impl StepError {
    /// A failure that may pass (a server down, a timeout).
    pub fn transient(step: Step, reason: impl Into<String>) -> Self {
        Self {
            step,
            reason: reason.into(),
            retryable: true,
        }
    }

    /// A failure that will not pass by itself (bad settings, a value that is not JSON).
    pub fn permanent(step: Step, reason: impl Into<String>) -> Self {
        Self {
            step,
            reason: reason.into(),
            retryable: false,
        }
    }
}

/// Settings a strategy refuses, with why (never a value).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// A way of rotating a secret.
#[async_trait]
pub trait RotationStrategy: Send + Sync + 'static {
    /// Its name, as a Secret's `spec.rotation.strategy` gives it.
    fn name(&self) -> &'static str;

    /// Checks settings before they are recorded (RotateSecret, a Secret's `spec.rotation`).
    fn check_settings(&self, settings: &serde_json::Value) -> Result<(), SettingsError> {
        let _ = settings;
        Ok(())
    }

    /// The other secret of the same namespace whose current value each step needs, by name or
    /// ARN, read from the settings or from the current value (AWS's `masterarn`).
    fn referenced_secret(
        &self,
        settings: &serde_json::Value,
        current: Option<&SecretBytes>,
    ) -> Option<String> {
        let _ = (settings, current);
        None
    }

    /// Carries out one step. Must be idempotent: a resumed rotation may run a step again.
    async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError>;
}

/// The strategies a process offers, by name.
#[derive(Clone, Default)]
pub struct StrategyRegistry {
    strategies: BTreeMap<&'static str, Arc<dyn RotationStrategy>>,
    waker: Arc<tokio::sync::Notify>,
    step_wakes: Arc<std::sync::atomic::AtomicU64>,
}

/// What a strategy calls when a step it left [`StepOutcome::Waiting`] may be done: it counts
/// the wake (so the engine knows waiting steps may run before their delay is out) and wakes
/// the schedule.
#[derive(Clone)]
pub struct StepWaker {
    notify: Arc<tokio::sync::Notify>,
    wakes: Arc<std::sync::atomic::AtomicU64>,
}

impl StepWaker {
    pub fn wake(&self) {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.notify.notify_one();
    }
}

impl StrategyRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a strategy under its own name.
    pub fn with(mut self, strategy: Arc<dyn RotationStrategy>) -> Self {
        self.strategies.insert(strategy.name(), strategy);
        self
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn RotationStrategy>> {
        self.strategies.get(name)
    }

    /// Names of the strategies offered.
    pub fn names(&self) -> Vec<&'static str> {
        self.strategies.keys().copied().collect()
    }

    /// Notified whenever rotation work may have changed: the schedule's wake.
    pub fn waker(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.waker)
    }

    /// For a strategy whose steps wait on something else (a Job): see [`StepWaker`].
    pub fn step_waker(&self) -> StepWaker {
        StepWaker {
            notify: Arc::clone(&self.waker),
            wakes: Arc::clone(&self.step_wakes),
        }
    }

    /// How many times strategies have said a waiting step may be done.
    pub fn step_wakes(&self) -> u64 {
        self.step_wakes.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A strategy as a later one will be: it keeps what it was asked, and makes a value.
    struct Recording(Mutex<Vec<Step>>);

    #[async_trait]
    impl RotationStrategy for Recording {
        fn name(&self) -> &'static str {
            "recording"
        }

        async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError> {
            self.0.lock().unwrap().push(request.step);
            Ok(match request.step {
                Step::CreateSecret => StepOutcome::Pending(SecretBytes::new(b"new".to_vec())),
                _ => StepOutcome::Done,
            })
        }
    }

    #[tokio::test]
    async fn the_steps_run_in_order_through_any_strategy() {
        let strategy: Box<dyn RotationStrategy> = Box::new(Recording(Mutex::new(Vec::new())));
        let mut step = Some(Step::CreateSecret);
        let mut pending = None;
        while let Some(current) = step {
            let outcome = strategy
                .run(StepRequest {
                    step: current,
                    secret_id: "arn:aws:secretsmanager:r:1:secret:s-abcdef",
                    namespace: "default",
                    name: "s",
                    token: "token",
                    settings: &serde_json::Value::Null,
                    current: None,
                    pending: pending.as_ref(),
                    referenced: None,
                    attempt: 0,
                })
                .await
                .unwrap();
            if let StepOutcome::Pending(value) = outcome {
                pending = Some(value);
            }
            step = current.next();
        }
        assert_eq!(pending.unwrap().expose(), b"new");
        assert_eq!(
            Step::ALL.map(Step::as_str),
            ["createSecret", "setSecret", "testSecret", "finishSecret"]
        );
    }
}
