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
//! where their I/O lives; the engine knows none of them by name.

use std::fmt;

use async_trait::async_trait;

use crate::crypto::SecretBytes;

/// One of the four steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    CreateSecret,
    SetSecret,
    TestSecret,
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
    /// The rotation's ClientRequestToken: the pending version's id.
    pub token: &'a str,
    /// The AWSCURRENT value, when there is one.
    pub current: Option<&'a SecretBytes>,
    /// The AWSPENDING value, from `setSecret` on.
    pub pending: Option<&'a SecretBytes>,
}

/// What a step produced.
pub enum StepOutcome {
    /// The step is done.
    Done,
    /// `createSecret`'s new value, to be stored as the pending version.
    Pending(SecretBytes),
}

/// Why a step failed: shown in status, conditions, Events and DescribeSecret, so never a value.
#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {reason}")]
pub struct StepError {
    pub step: Step,
    pub reason: String,
    /// Whether trying again later may succeed (a database that is down) rather than not (a
    /// strategy that is misconfigured).
    pub retryable: bool,
}

/// A way of rotating a secret.
#[async_trait]
pub trait RotationStrategy: Send + Sync + 'static {
    /// Its name, as a Secret's `spec.rotation.strategy` gives it.
    fn name(&self) -> &'static str;

    /// Carries out one step. Must be idempotent: a resumed rotation may run a step again.
    async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError>;
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
                    token: "token",
                    current: None,
                    pending: pending.as_ref(),
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
