//! The Secrets Manager engine: secrets, their versions and staging labels, resource policies,
//! scheduled deletion and restore, over any [`Store`].
//!
//! A secret is a record of kind [`RecordKind::Secret`] named by the secret's name in its
//! namespace: metadata ([`SecretRecord`]) in the public half, each version's value in the sealed
//! half, sealed by KMS ([`Kms::seal_value`]) under the secret's key (the account's
//! `alias/aws/secretsmanager` unless another is named), bound to the secret and the version, with
//! the encryption context `{"SecretARN", "SecretVersionId"}` that AWS uses too.
//!
//! [`RecordKind::Secret`]: crate::store::RecordKind::Secret

mod declared;
mod error;
pub mod model;
mod operations;
pub mod password;
mod rotation;
pub mod rotation_rules;
#[cfg(test)]
mod rotation_tests;
mod schedule;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::seq::IndexedRandom as _;
use tokio::sync::Notify;

use crate::crypto::{ResourceIdentity, SecretBytes};
use crate::engine::account::{Arn, account_id};
use crate::engine::iam::{AccessRequest, Decision, Policy, ServiceKeys};
use crate::engine::kms::{Kms, ServiceValue};
use crate::engine::{AccountAuthority, AccountDirectory, Caller, Clock};
use crate::store::Store;
use crate::store::typed::{self, Typed};

pub use declared::{DeclaredSecret, DeclaredValue, RotationDeclared, SecretEvent};
pub use error::SecretsError;
pub use model::{CURRENT, PENDING, PREVIOUS, SecretRecord, SecretVersion};
pub use operations::{
    BatchError, BatchOutcome, ListFilter, ListSecretsRequest, NewSecret, SecretDescription,
    SecretUpdate, VersionEntry, VersionValue, WriteOutcome,
};
pub use password::{PasswordOptions, random_password};
pub use rotation::{
    DEFAULT_MAX_CONCURRENT_ROTATIONS, DEFAULT_STRATEGY, DeclaredRotation, RotateOutcome,
    RotateRequest, RotationView,
};

/// The service's name in ARNs, SigV4 scopes and its managed key's alias.
pub const SERVICE: &str = "secretsmanager";

/// Secret names: 1 to 512 characters of this set.
const MAX_NAME_LEN: usize = 512;
/// Values: at most 64 KiB.
pub const MAX_VALUE_LEN: usize = 65_536;
/// Secret ids (names or ARNs) as callers send them.
const MAX_SECRET_ID_LEN: usize = 2048;
/// Characters of the random suffix AWS puts on secret ARNs.
const ARN_SUFFIX_LEN: usize = 6;

/// Resource policies of secrets: the IAM grammar with no condition keys of the service's own.
pub type SecretPolicy = Policy<NoServiceKeys>;

/// Secrets Manager's own condition keys: none are evaluated yet, so any `secretsmanager:` key is
/// refused where a policy is written.
#[derive(Clone, Debug)]
pub enum NoServiceKeys {}

impl ServiceKeys for NoServiceKeys {
    type Context = ();

    fn parse(_name: &str) -> Result<Option<Self>, String> {
        Ok(None)
    }

    fn values_in<'r>(&self, _request: &AccessRequest<'r, ()>) -> Option<Vec<&'r str>> {
        match *self {}
    }
}

/// A value, with whether it is SecretBinary rather than SecretString.
pub struct SecretValue {
    pub bytes: SecretBytes,
    pub binary: bool,
}

impl std::fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretValue")
            .field("bytes", &self.bytes)
            .field("binary", &self.binary)
            .finish()
    }
}

/// The Secrets Manager engine.
pub struct Secrets {
    store: Arc<dyn Store>,
    kms: Arc<Kms>,
    authority: Arc<dyn AccountAuthority>,
    clock: Arc<dyn Clock>,
    /// Wakes the purge when a deletion is scheduled or cancelled.
    schedule_changed: Arc<Notify>,
    /// Writers of one secret in this process take turns, so that they do not spend the store's
    /// conflict retries on each other (other replicas still race through the store).
    write_turns: Vec<tokio::sync::Mutex<()>>,
    /// Finds the namespace of another account's secret named by ARN; without it only the
    /// caller's own account is reached.
    directory: Option<Arc<dyn AccountDirectory>>,
    /// Strategies, the cap and the rotations this process is carrying.
    rotations: Arc<rotation::Rotations>,
}

/// Operations a caller may do on another namespace's secret, when its resource policy allows.
const CROSS_ACCOUNT_ACTIONS: [&str; 4] = [
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:ListSecretVersionIds",
    "secretsmanager:GetResourcePolicy",
];

/// Stripes of [`Secrets::write_turns`]: secrets whose names hash alike share a turn.
const WRITE_STRIPES: usize = 64;

impl Secrets {
    pub fn new(
        store: Arc<dyn Store>,
        kms: Arc<Kms>,
        authority: Arc<dyn AccountAuthority>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            kms,
            authority,
            clock,
            schedule_changed: Arc::new(Notify::new()),
            write_turns: (0..WRITE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            directory: None,
            rotations: Arc::new(rotation::Rotations::default()),
        }
    }

    /// Lets callers name other namespaces' secrets by ARN (their resource policies decide).
    pub fn with_directory(mut self, directory: Arc<dyn AccountDirectory>) -> Self {
        self.directory = Some(directory);
        self
    }

    /// The namespace a secret of `record` lives in, seen from `caller`.
    fn home_namespace(&self, caller: &Caller, record: &SecretRecord) -> Option<String> {
        let account = Arn::parse(&record.arn)?.account_id;
        if account == account_id(&caller.namespace) {
            return Some(caller.namespace.clone());
        }
        self.directory.as_ref()?.namespace_of(&account)
    }

    /// Waits for this process's turn to write secret `name` of `namespace`.
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

    pub fn region(&self) -> &str {
        self.kms.region()
    }

    fn now(&self) -> i64 {
        self.clock.now()
    }

    /// `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-XXXXXX`, with a fresh random suffix.
    fn new_arn(&self, namespace: &str, name: &str) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        let mut rng = rand::rng();
        let suffix: String = (0..ARN_SUFFIX_LEN)
            .filter_map(|_| ALPHABET.choose(&mut rng).map(|c| char::from(*c)))
            .collect();
        Arn {
            service: SERVICE.into(),
            region: self.region().to_owned(),
            account_id: account_id(namespace),
            resource: format!("secret:{name}-{suffix}"),
        }
        .to_string()
    }

    /// Where a SecretId (a name, a full ARN, or an ARN without its random suffix) points:
    /// the namespace and the secret's name. Whether it exists is for the read that follows.
    fn locate(&self, caller: &Caller, secret_id: &str) -> Result<(String, String), SecretsError> {
        if secret_id.is_empty()
            || secret_id.len() > MAX_SECRET_ID_LEN
            || secret_id.chars().any(char::is_control)
        {
            return Err(SecretsError::InvalidParameter(format!(
                "SecretId must be 1 to {MAX_SECRET_ID_LEN} characters, none of them control characters."
            )));
        }
        let Some(rest) = secret_id.strip_prefix("arn:") else {
            return Ok((caller.namespace.clone(), secret_id.to_owned()));
        };
        let invalid = || {
            SecretsError::InvalidParameter(format!(
                "Invalid secret ARN {}",
                crate::engine::text::truncate(rest)
            ))
        };
        let arn = Arn::parse(secret_id)
            .filter(|arn| arn.service == SERVICE)
            .ok_or_else(invalid)?;
        let name = arn.resource.strip_prefix("secret:").ok_or_else(invalid)?;
        let not_found =
            || SecretsError::NotFound("Secrets Manager can't find the specified secret.".into());
        if arn.region != self.region() {
            return Err(not_found());
        }
        if arn.account_id == account_id(&caller.namespace) {
            return Ok((caller.namespace.clone(), name.to_owned()));
        }
        let namespace = self
            .directory
            .as_ref()
            .and_then(|directory| directory.namespace_of(&arn.account_id))
            .ok_or_else(not_found)?;
        Ok((namespace, name.to_owned()))
    }

    /// The secret a SecretId names. A full ARN must match the secret's ARN (so a secret deleted
    /// and re-created under the same name is not reached through the old ARN); a partial ARN is
    /// the name.
    async fn find(
        &self,
        caller: &Caller,
        secret_id: &str,
    ) -> Result<Typed<SecretRecord>, SecretsError> {
        let not_found =
            || SecretsError::NotFound("Secrets Manager can't find the specified secret.".into());
        let (namespace, name) = self.locate(caller, secret_id)?;
        if let Some(found) =
            typed::get::<SecretRecord, _>(self.store.as_ref(), &namespace, &name).await?
        {
            let partial_arn = found
                .meta
                .arn
                .strip_prefix(secret_id)
                .and_then(|rest| rest.strip_prefix('-'))
                .is_some_and(|suffix| suffix.len() == ARN_SUFFIX_LEN);
            if !secret_id.starts_with("arn:") || found.meta.arn == secret_id || partial_arn {
                return Ok(found);
            }
        }
        // A full ARN: its name is everything before the last `-XXXXXX`.
        if secret_id.starts_with("arn:")
            && let Some((base, suffix)) = name.rsplit_once('-')
            && suffix.len() == ARN_SUFFIX_LEN
            && let Some(found) =
                typed::get::<SecretRecord, _>(self.store.as_ref(), &namespace, base).await?
            && found.meta.arn == secret_id
        {
            return Ok(found);
        }
        Err(not_found())
    }

    /// Whether `caller` may do `action` on `record`: an explicit Deny in its resource policy
    /// refuses; otherwise the account's own permissions, or an Allow in the policy, grant.
    /// Another account's secret is reached only through an Allow of its resource policy, and
    /// only to be read: the caller's own permissions never count there.
    async fn authorize(
        &self,
        caller: &Caller,
        record: &SecretRecord,
        action: &str,
    ) -> Result<(), SecretsError> {
        if rotation::is_rotation_job(caller) && !rotation::ROTATION_JOB_ACTIONS.contains(&action) {
            return Err(SecretsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {}: a rotation Job may only read the secret and write its pending version",
                caller.principal.arn, record.arn
            )));
        }
        let foreign = Arn::parse(&record.arn)
            .is_none_or(|arn| arn.account_id != account_id(&caller.namespace));
        if foreign && !CROSS_ACCOUNT_ACTIONS.contains(&action) {
            return Err(SecretsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {}: a secret of another account can only be read",
                caller.principal.arn, record.arn
            )));
        }
        let delegated = !foreign && self.authority.allows(caller, action, &record.arn).await;
        let decision = match &record.policy {
            None => Decision::ImplicitDeny,
            Some(text) => {
                let policy = SecretPolicy::parse_stored(text)
                    .map_err(|err| SecretsError::fault("stored resource policy", err))?;
                policy.evaluate(
                    &AccessRequest {
                        principal: &caller.principal,
                        action,
                        resource_arn: &record.arn,
                        context: &(),
                        key_account_id: &account_id(&caller.namespace),
                        secure_transport: caller.secure_transport,
                    },
                    &|_| delegated,
                )
            }
        };
        match decision {
            Decision::ExplicitDeny => Err(SecretsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {} with an explicit deny in a resource-based policy",
                caller.principal.arn, record.arn
            ))),
            Decision::Allow => Ok(()),
            Decision::ImplicitDeny if delegated => Ok(()),
            Decision::ImplicitDeny => Err(SecretsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {}",
                caller.principal.arn, record.arn
            ))),
        }
    }

    /// Whether `caller` may do an account-level `action` (CreateSecret, ListSecrets, ...).
    async fn authorize_account(&self, caller: &Caller, action: &str) -> Result<(), SecretsError> {
        if self.authority.allows(caller, action, "*").await {
            Ok(())
        } else {
            Err(SecretsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: *",
                caller.principal.arn
            )))
        }
    }

    /// What a version's value is bound to.
    fn value_binding(namespace: &str, record: &SecretRecord, version_id: &str) -> ServiceValue {
        ServiceValue {
            service: SERVICE,
            resource: ResourceIdentity {
                kind: "Secret".into(),
                namespace: namespace.to_owned(),
                name: record.name.clone(),
                version_id: version_id.to_owned(),
            },
            context: BTreeMap::from([
                ("SecretARN".to_owned(), record.arn.clone()),
                ("SecretVersionId".to_owned(), version_id.to_owned()),
            ]),
        }
    }

    /// Wakes the purge: a deletion was scheduled or cancelled.
    pub fn schedule_changed(&self) -> Arc<Notify> {
        Arc::clone(&self.schedule_changed)
    }
}

/// Secret names: 1 to 512 characters of `A-Za-z0-9/_+=.@-`.
fn validate_name(name: &str) -> Result<(), SecretsError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/_+=.@-".contains(c);
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(allowed) {
        return Err(SecretsError::Validation(format!(
            "Name must be 1 to {MAX_NAME_LEN} characters of A-Z, a-z, 0-9 and /_+=.@-"
        )));
    }
    Ok(())
}
