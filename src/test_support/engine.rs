//! What engine tests share: a clock the test moves, an account authority that makes admins of
//! users named `admin...`, and callers of the `default` namespace.

use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;

use crate::engine::account::account_id;
use crate::engine::iam::Principal;
use crate::engine::{AccountAuthority, Caller, Clock};

/// A clock that stands still until the test moves it.
pub struct ManualClock(pub AtomicI64);

impl ManualClock {
    pub fn at(now: i64) -> Self {
        ManualClock(AtomicI64::new(now))
    }

    pub fn advance(&self, seconds: i64) {
        self.0.fetch_add(seconds, Ordering::SeqCst);
    }

    pub fn set(&self, now: i64) {
        self.0.store(now, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Admins are principals whose user name starts with `admin`.
pub struct NameAuthority;

#[async_trait]
impl AccountAuthority for NameAuthority {
    async fn allows(&self, caller: &Caller, _action: &str, _resource: &str) -> bool {
        caller.principal.arn.contains(":user/admin")
    }
}

/// Every principal may do anything its account holds: RBAC that says yes to all.
pub struct AllowAll;

#[async_trait]
impl AccountAuthority for AllowAll {
    async fn allows(&self, _caller: &Caller, _action: &str, _resource: &str) -> bool {
        true
    }
}

/// User `user` of the `default` namespace, over plain HTTP.
pub fn caller(user: &str) -> Caller {
    Caller {
        namespace: "default".into(),
        principal: Principal {
            arn: format!("arn:aws:iam::{}:user/{user}", account_id("default")),
            account_id: account_id("default"),
        },
        access_key_id: None,
        secure_transport: false,
    }
}
