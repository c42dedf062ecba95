//! The rotation strategies: where a rotation's I/O lives (databases, Jobs, webhooks). The
//! engine runs the four steps ([`crate::engine::rotation`]) and knows the strategies only by
//! the names [`registry`] gives them.
//!
//! Settings, as recorded with a secret's rotation (`settings` of [`StepRequest`]), by strategy:
//! - `generate`: a Secret's `generate` block in JSON (`length`, `excludeCharacters`,
//!   `excludeNumbers`, `excludePunctuation`, `excludeUppercase`, `excludeLowercase`,
//!   `includeSpace`, `requireEachIncludedType`, and `template` with `generateStringKey`, the
//!   property that takes the password); null for the defaults;
//! - `postgres` and `mysql`: `variant` (`singleUser` or `alternatingUsers`), `masterSecret` (a
//!   secret of the namespace, by name or ARN; else the value's `masterarn`), `tls` (`disable`,
//!   `require`, `verifyFull`), `caBundle` (base64 PEM), and the password options as `password`;
//! - `job`: `template` (a JobTemplateSpec);
//! - `webhook`: `url`, `caBundle` (base64 PEM), `signingSecret` (a secret of the namespace
//!   whose value is the HMAC key).
//!
//! [`StepRequest`]: crate::engine::rotation::StepRequest

pub mod database;
pub mod generate;
pub mod job;
pub mod mysql;
pub mod postgres;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::engine::rotation::StrategyRegistry;

/// How a process runs rotations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RotationSettings {
    /// Rotations under way at once; more that fall due wait for a slot.
    pub max_concurrent: usize,
    /// A pause stretching every step, for crash tests only (zero otherwise).
    pub step_pause: Duration,
    /// Offer the `job` strategy (the controller then watches Jobs, and makes Jobs,
    /// ServiceAccounts, Roles and RoleBindings: RBAC it needs only then).
    pub jobs: bool,
}

impl Default for RotationSettings {
    fn default() -> Self {
        Self {
            max_concurrent: crate::engine::secrets::DEFAULT_MAX_CONCURRENT_ROTATIONS,
            step_pause: Duration::ZERO,
            jobs: false,
        }
    }
}

/// The strategies every process offers: those that need no Kubernetes.
pub fn standalone_registry() -> StrategyRegistry {
    StrategyRegistry::new()
        .with(Arc::new(generate::GenerateStrategy))
        .with(Arc::new(postgres::PostgresStrategy::new()))
        .with(Arc::new(mysql::MysqlStrategy::new()))
}

/// The strategies of the controller: those and the two that only a Secret resource's
/// `spec.rotation` can configure, `webhook` and, when `jobs` is on, `job` (on `client`, its
/// watch of finished Jobs waking the registry's schedule). Call inside the Tokio runtime.
pub fn cluster_registry(client: &kube::Client, jobs: bool) -> StrategyRegistry {
    let registry = standalone_registry().with(Arc::new(webhook::WebhookStrategy::new()));
    if !jobs {
        return registry;
    }
    let waker = registry.step_waker();
    registry.with(Arc::new(job::JobStrategy::new(client.clone(), waker)))
}
