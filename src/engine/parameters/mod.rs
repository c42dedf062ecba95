//! The SSM Parameter Store engine: parameters, their versions and labels, tiers, policies and
//! tags, over any [`Store`].
//!
//! A parameter is a record of kind [`RecordKind::Parameter`] named by the parameter's full name
//! in its namespace (the account): metadata ([`ParameterRecord`]) in the public half, and one
//! slot per version in the sealed half. A SecureString version is sealed by KMS
//! ([`Kms::seal_value`]) under the parameter's key (the account's `alias/aws/ssm` unless another
//! is named), bound to the parameter and the version, with the encryption context
//! `{"PARAMETER_ARN": ARN}` that AWS uses too. String and StringList versions are
//! configuration, not secrets: their bytes are kept as they are.
//!
//! [`RecordKind::Parameter`]: crate::store::RecordKind::Parameter

mod error;
mod filters;
pub mod model;
mod operations;
pub mod policies;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::crypto::ResourceIdentity;
use crate::engine::account::{Arn, account_id};
use crate::engine::kms::{Kms, ServiceValue};
use crate::engine::{AccountAuthority, Caller, Clock};
use crate::store::Store;

pub use error::ParametersError;
pub use filters::StringFilter;
pub use model::{ParameterRecord, ParameterType, ParameterVersion, Tier};
pub use operations::{
    DeleteOutcome, GetOutcome, HistoryEntry, ParameterDescription, ParameterValue, PolicyView,
    PutOutcome, PutParameterRequest,
};
pub use policies::{NotificationKind, ParameterNotification};

/// The service's name in ARNs, SigV4 scopes and its managed key's alias.
pub const SERVICE: &str = "ssm";

/// The longest parameter name (AWS counts 2048 with the ARN prefix; 1011 is the name's share).
pub const MAX_NAME_LEN: usize = 1011;
/// The longest Name as callers send it: a name, a name with a selector, or an ARN.
pub const MAX_NAME_INPUT_LEN: usize = 2048;
/// The deepest hierarchy: `/a/b/c` has three levels.
pub const MAX_LEVELS: usize = 15;
/// Values of Standard parameters: at most 4 KB.
pub const MAX_STANDARD_VALUE_LEN: usize = 4096;
/// Values of Advanced parameters: at most 8 KB.
pub const MAX_ADVANCED_VALUE_LEN: usize = 8192;
/// Standard parameters one account (namespace) may hold.
pub const MAX_STANDARD_PARAMETERS: usize = 10_000;

/// Notifications waiting for a slow subscriber before the oldest are dropped (they are marked
/// fired in their records already, so none repeats; a lagging subscriber misses some).
const NOTIFICATION_BUFFER: usize = 1024;
/// Stripes of [`Parameters::write_turns`].
const WRITE_STRIPES: usize = 64;

/// The Parameter Store engine.
pub struct Parameters {
    store: Arc<dyn Store>,
    kms: Arc<Kms>,
    authority: Arc<dyn AccountAuthority>,
    clock: Arc<dyn Clock>,
    /// Wakes the policy scheduler when a write may have moved a due time.
    schedule_changed: Arc<Notify>,
    /// Writers of one parameter in this process take turns: version numbers are sequential and
    /// bound into sealed values, so racing writers would only spend retries on each other.
    write_turns: Vec<tokio::sync::Mutex<()>>,
    notifications: broadcast::Sender<ParameterNotification>,
}

/// Where a Name points: the namespace, the parameter's name, and the selector (`:VERSION` or
/// `:LABEL`) if one was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Located {
    pub namespace: String,
    pub name: String,
    pub selector: Option<String>,
    /// Named by ARN, which does not tell `a` from `/a`.
    pub from_arn: bool,
}

impl Parameters {
    pub fn new(
        store: Arc<dyn Store>,
        kms: Arc<Kms>,
        authority: Arc<dyn AccountAuthority>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let (notifications, _) = broadcast::channel(NOTIFICATION_BUFFER);
        Self {
            store,
            kms,
            authority,
            clock,
            schedule_changed: Arc::new(Notify::new()),
            write_turns: (0..WRITE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            notifications,
        }
    }

    pub fn region(&self) -> &str {
        self.kms.region()
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Policies that fired, as they fire. Each fires once (the record remembers it).
    pub fn notifications(&self) -> broadcast::Receiver<ParameterNotification> {
        self.notifications.subscribe()
    }

    /// Wakes the policy scheduler: a write may have moved a due time.
    pub fn schedule_changed(&self) -> Arc<Notify> {
        Arc::clone(&self.schedule_changed)
    }

    /// `arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`, without a doubled slash for `/`-paths.
    pub fn arn(&self, namespace: &str, name: &str) -> String {
        Arn {
            service: SERVICE.into(),
            region: self.region().to_owned(),
            account_id: account_id(namespace),
            resource: format!("parameter/{}", name.strip_prefix('/').unwrap_or(name)),
        }
        .to_string()
    }

    /// Waits for this process's turn to write parameter `name` of `namespace`.
    async fn write_turn(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (namespace, name).hash(&mut hasher);
        let stripe = usize::try_from(hasher.finish() % WRITE_STRIPES as u64).unwrap_or(0);
        match self.write_turns.get(stripe) {
            Some(turn) => Some(turn.lock().await),
            None => None,
        }
    }

    /// Where a Name (a name, or an ARN, each possibly with `:SELECTOR`) points. Names in the
    /// caller's account only: another account's ARN is not found.
    pub(crate) fn locate(&self, caller: &Caller, input: &str) -> Result<Located, ParametersError> {
        if input.is_empty() || input.len() > MAX_NAME_INPUT_LEN {
            return Err(ParametersError::Validation(format!(
                "1 validation error detected: Value at 'name' failed to satisfy constraint: Member must have length between 1 and {MAX_NAME_INPUT_LEN}"
            )));
        }
        let (name, selector) = if input.starts_with("arn:") {
            let arn = Arn::parse(input)
                .filter(|arn| arn.service == SERVICE)
                .ok_or_else(invalid_name)?;
            let rest = arn
                .resource
                .strip_prefix("parameter/")
                .ok_or_else(invalid_name)?;
            if arn.region != self.region() || arn.account_id != account_id(&caller.namespace) {
                return Err(ParametersError::NotFound(format!(
                    "Parameter {} not found.",
                    crate::engine::text::truncate(input)
                )));
            }
            let (name, selector) = split_selector(rest);
            // The ARN drops a path's leading slash; a name of one level keeps its own form.
            let name = if name.contains('/') {
                format!("/{name}")
            } else {
                name.to_owned()
            };
            (name, selector)
        } else {
            let (name, selector) = split_selector(input);
            (name.to_owned(), selector)
        };
        if let Some(selector) = &selector
            && (selector.is_empty() || selector.len() > model::MAX_LABEL_LEN)
        {
            return Err(invalid_name());
        }
        validate_name(&name)?;
        Ok(Located {
            namespace: caller.namespace.clone(),
            name,
            selector,
            from_arn: input.starts_with("arn:"),
        })
    }

    /// Whether `caller` may do `action` on the parameter whose ARN is `arn`.
    async fn allowed(&self, caller: &Caller, action: &str, arn: &str) -> bool {
        self.authority.allows(caller, action, arn).await
    }

    /// As [`Parameters::allowed`], refusing with AccessDenied.
    async fn authorize(
        &self,
        caller: &Caller,
        action: &str,
        arn: &str,
    ) -> Result<(), ParametersError> {
        if self.allowed(caller, action, arn).await {
            Ok(())
        } else {
            Err(ParametersError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {arn}",
                caller.principal.arn
            )))
        }
    }

    /// What a SecureString version is bound to.
    fn value_binding(namespace: &str, name: &str, arn: &str, version: u64) -> ServiceValue {
        ServiceValue {
            service: SERVICE,
            resource: ResourceIdentity {
                kind: "Parameter".into(),
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                version_id: version.to_string(),
            },
            context: BTreeMap::from([("PARAMETER_ARN".to_owned(), arn.to_owned())]),
        }
    }
}

/// `NAME:SELECTOR` split at the first colon (names have none).
fn split_selector(text: &str) -> (&str, Option<String>) {
    match text.split_once(':') {
        Some((name, selector)) => (name, Some(selector.to_owned())),
        None => (text, None),
    }
}

fn invalid_name() -> ParametersError {
    ParametersError::Validation(
        "Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_".into(),
    )
}

/// Whether `name` begins with `aws` or `ssm` in any case, with or without a leading slash.
fn reserved(name: &str) -> bool {
    let bare = name.strip_prefix('/').unwrap_or(name);
    bare.get(..3)
        .is_some_and(|head| head.eq_ignore_ascii_case("aws") || head.eq_ignore_ascii_case("ssm"))
}

/// Parameter names: at most [`MAX_NAME_LEN`] characters of `a-zA-Z0-9_.-/`; a name with more
/// than one level begins with `/` and has no empty level; at most [`MAX_LEVELS`] levels; not
/// beginning with `aws` or `ssm`.
pub(crate) fn validate_name(name: &str) -> Result<(), ParametersError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(invalid_name());
    }
    let levels = match name.strip_prefix('/') {
        Some(path) => {
            if path.split('/').any(str::is_empty) {
                return Err(invalid_name());
            }
            path.split('/').count()
        }
        None if name.contains('/') => return Err(invalid_name()),
        None => 1,
    };
    if reserved(name) {
        return Err(invalid_name());
    }
    if levels > MAX_LEVELS {
        return Err(ParametersError::HierarchyLevelLimitExceeded(format!(
            "A hierarchy can have a maximum of {MAX_LEVELS} levels."
        )));
    }
    Ok(())
}
