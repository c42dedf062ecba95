//! The domain: keys, secrets, parameters, rotation and policy. The engine does not know which
//! store holds its records or which front end calls it.

pub mod account;
pub mod kms;
pub mod policy;

use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

pub use policy::Principal;

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

/// Who is calling, as established by a front end.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The namespace (account) the caller belongs to; names and aliases resolve here.
    pub namespace: String,
    pub principal: Principal,
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
