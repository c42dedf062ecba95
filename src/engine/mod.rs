//! The domain: keys, secrets, parameters, rotation and policy. The engine does not know which
//! store holds its records or which front end calls it.

pub mod account;

pub mod iam;
pub mod kms;
pub mod paging;
pub mod parameters;
pub mod rotation;
pub mod schedule;
pub mod secrets;
pub mod text;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub use iam::Principal;

/// The time source, so that tests can move time.
pub trait Clock: Send + Sync + 'static {
    /// Seconds since the Unix epoch.
    fn now(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Whole seconds from a count that may be fractional (AWS timestamps are JSON numbers): rounded
/// down; `None` when it is not finite or does not fit.
pub fn whole_seconds(seconds: f64) -> Option<i64> {
    const LIMIT: f64 = 9.2e18; // a little under i64::MAX, exactly representable in f64
    let floor = seconds.floor();
    if !floor.is_finite() || floor.abs() >= LIMIT {
        return None;
    }
    // In range and integral: the conversion is exact.
    #[allow(clippy::cast_possible_truncation)]
    Some(floor as i64)
}

/// An engine's error as AWS names it: every service's error enum implements this, so that the
/// front end maps them all in one place.
pub trait ServiceError: std::error::Error + Send + Sync + 'static {
    /// The AWS exception name, such as `NotFoundException`.
    fn aws_code(&self) -> &'static str;
    /// Whether it is Coffer's fault (HTTP 500) rather than the caller's (400).
    fn is_fault(&self) -> bool;
}

/// Who is calling, as established by a front end.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The namespace (account) the caller belongs to; names and aliases resolve here.
    pub namespace: String,
    pub principal: Principal,
    /// The access key the request was signed with, in standalone mode, where permissions
    /// attach to keys rather than to users.
    pub access_key_id: Option<String>,
    /// Whether the request arrived over TLS (`aws:SecureTransport`).
    pub secure_transport: bool,
}

impl Caller {
    /// The account root of `namespace`: whom the controller acts as when it applies a resource
    /// of that namespace. Names resolve in the namespace; nothing is authorized by it alone.
    pub fn account_of(namespace: &str) -> Self {
        let account = account::account_id(namespace);
        Self {
            namespace: namespace.to_owned(),
            principal: Principal {
                arn: format!("arn:aws:iam::{account}:root"),
                account_id: account,
            },
            access_key_id: None,
            secure_transport: true,
        }
    }
}

/// The namespace behind an account id, for calls that name another account's resource by ARN.
/// Only the cluster front end knows its namespaces; standalone mode reaches its own account only.
pub trait AccountDirectory: Send + Sync + 'static {
    fn namespace_of(&self, account_id: &str) -> Option<String>;
}

/// What the caller's account grants outside key policies: AWS's IAM, Coffer's access-key
/// permissions in standalone mode, Kubernetes RBAC in a cluster. A key policy statement naming the
/// account root delegates to this.
#[async_trait]
pub trait AccountAuthority: Send + Sync + 'static {
    /// Whether `caller` may perform `action` (e.g. `kms:Decrypt`) on `resource_arn` (`*` for
    /// account-level actions such as CreateKey).
    async fn allows(&self, caller: &Caller, action: &str, resource_arn: &str) -> bool;
}
