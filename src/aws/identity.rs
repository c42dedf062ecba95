//! Who signed a request. Standalone mode knows callers by access key: each key names a user of
//! the account, and admin keys hold every permission the account grants (the part IAM plays in
//! AWS). The secret half of each key is stored wrapped by the root key.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::AwsError;
use crate::crypto::{RootKeyring, SecretBytes};
use crate::engine::account::account_id;
use crate::engine::{AccountAuthority, Caller, Principal};
use crate::fault::Fault;
use crate::store::typed::{self, RecordMeta, Typed};
use crate::store::{RecordKind, Store, StoreError};

/// Resolves the access key of a signed request to its secret and its caller.
#[async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// The secret to verify the signature with and the caller it authenticates, or `None` for
    /// an unknown key.
    async fn lookup(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
    ) -> Result<Option<(SecretBytes, Caller)>, AwsError>;
}

/// Resolves a bearer token (`Authorization: Bearer TOKEN`) to its caller, for front ends that
/// accept tokens in place of SigV4 (Kubernetes mode's ServiceAccount tokens).
#[async_trait]
pub trait BearerAuthenticator: Send + Sync + 'static {
    /// The caller `token` authenticates. A refused token is `UnrecognizedClientException`; an
    /// error must never carry the token.
    async fn authenticate(&self, token: &str) -> Result<Caller, AwsError>;
}

/// An access key id and its secret, in memory.
pub struct AccessKey {
    pub id: String,
    pub secret: SecretBytes,
}

/// The public half of an access key record.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessKeyRecord {
    pub access_key_id: String,
    /// The user name: the principal is `arn:aws:iam::ACCOUNT:user/NAME`.
    pub user: String,
    pub admin: bool,
    #[serde(default)]
    pub bootstrap: bool,
    pub created_date: i64,
}

impl RecordMeta for AccessKeyRecord {
    const KIND: RecordKind = RecordKind::AccessKey;
}

const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const SECRET_SLOT: &str = "secret";

/// A fresh access key in AWS's shapes: `AKIA` and 16 base32 characters, and a 40-character secret.
pub fn generate_access_key() -> AccessKey {
    let pick = |alphabet: &[u8], len: usize| -> Vec<u8> {
        use rand::seq::IndexedRandom as _;
        let mut rng = rand::rng();
        (0..len)
            .filter_map(|_| alphabet.choose(&mut rng).copied())
            .collect()
    };
    AccessKey {
        id: format!(
            "AKIA{}",
            String::from_utf8_lossy(&pick(ACCESS_KEY_ALPHABET, 16))
        ),
        secret: SecretBytes::new(pick(SECRET_ALPHABET, 40)),
    }
}

/// Associated data binding a wrapped secret to its access key id.
fn wrapping_context(id: &str) -> Vec<u8> {
    format!("coffer/accesskey/{id}").into_bytes()
}

/// The principal ARN of a standalone user.
pub fn user_arn(namespace: &str, user: &str) -> String {
    format!("arn:aws:iam::{}:user/{user}", account_id(namespace))
}

/// User names follow IAM's rules.
pub fn validate_user_name(user: &str) -> Result<(), String> {
    let valid = !user.is_empty()
        && user.len() <= 64
        && user
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+=,.@_-".contains(&c));
    if valid {
        Ok(())
    } else {
        Err("user names are 1 to 64 characters of letters, digits and +=,.@_-".into())
    }
}

/// Creates and stores a new access key for `user` in `namespace`.
pub async fn create_access_key(
    store: &dyn Store,
    keyring: &RootKeyring,
    namespace: &str,
    user: &str,
    admin: bool,
    bootstrap: bool,
    now: i64,
) -> Result<AccessKey, StoreError> {
    let key = generate_access_key();
    let wrapped = keyring
        .wrap(&wrapping_context(&key.id), key.secret.expose())
        .map_err(|err| {
            StoreError::Backend(crate::fault::Fault::caused_by(
                "wrapping the access key",
                err,
            ))
        })?;
    let record = AccessKeyRecord {
        access_key_id: key.id.clone(),
        user: user.to_owned(),
        admin,
        bootstrap,
        created_date: now,
    };
    typed::create(
        store,
        &typed::key::<AccessKeyRecord>(namespace, &key.id),
        &record,
        [(SECRET_SLOT.to_owned(), wrapped)].into_iter().collect(),
    )
    .await?;
    Ok(key)
}

/// Reads and unwraps a stored access key.
fn unwrap_access_key(
    keyring: &RootKeyring,
    id: &str,
    record: Typed<AccessKeyRecord>,
) -> Result<(AccessKeyRecord, SecretBytes), Fault> {
    let wrapped = record
        .sealed
        .get(SECRET_SLOT)
        .ok_or_else(|| Fault::new("an access key record has no secret"))?;
    let secret = keyring
        .unwrap(&wrapping_context(id), wrapped)
        .map_err(|err| Fault::caused_by("unwrapping an access key", err))?;
    Ok((record.meta, secret))
}

/// The bootstrap admin key of a namespace, if one was created.
pub async fn find_bootstrap_key(
    store: &dyn Store,
    keyring: &RootKeyring,
    namespace: &str,
) -> Result<Option<AccessKey>, String> {
    let records = typed::list::<AccessKeyRecord, _>(store, Some(namespace))
        .await
        .map_err(|err| crate::redact::chain(&err))?;
    for (key, record) in records {
        if record.meta.bootstrap {
            let (_, secret) = unwrap_access_key(keyring, &key.name, record)
                .map_err(|err| crate::redact::chain(&err))?;
            return Ok(Some(AccessKey {
                id: key.name,
                secret,
            }));
        }
    }
    Ok(None)
}

struct KnownKey {
    secret: SecretBytes,
    caller: Caller,
    /// Admin is a property of the key, not of its user: one user may hold both kinds.
    admin: bool,
}

/// Standalone mode's access keys, read from the store and kept unwrapped in memory. A key not in
/// memory is looked up in the store, so keys added by `coffer admin` are found.
pub struct AccessKeyDirectory {
    store: Arc<dyn Store>,
    keyring: Arc<RootKeyring>,
    namespace: String,
    known: RwLock<HashMap<String, Arc<KnownKey>>>,
}

impl AccessKeyDirectory {
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<RootKeyring>,
        namespace: impl Into<String>,
    ) -> Self {
        Self {
            store,
            keyring,
            namespace: namespace.into(),
            known: RwLock::new(HashMap::new()),
        }
    }

    async fn load(&self, access_key_id: &str) -> Result<Option<Arc<KnownKey>>, AwsError> {
        if access_key_id.is_empty() || access_key_id.len() > 128 || access_key_id.contains('\0') {
            return Ok(None);
        }
        if let Some(hit) = self
            .known
            .read()
            .ok()
            .and_then(|known| known.get(access_key_id).cloned())
        {
            return Ok(Some(hit));
        }
        let record = typed::get::<AccessKeyRecord, _>(
            self.store.as_ref(),
            &self.namespace,
            access_key_id,
        )
        .await
        .map_err(|err| {
            tracing::error!(error = %crate::redact::chain(&err), "reading an access key failed");
            AwsError::fault("InternalFailure")
        })?;
        let Some(record) = record else {
            return Ok(None);
        };
        let (record, secret) =
            unwrap_access_key(&self.keyring, access_key_id, record).map_err(|err| {
                tracing::error!(error = %crate::redact::chain(&err), "unwrapping an access key failed");
                AwsError::fault("InternalFailure")
            })?;
        let known = Arc::new(KnownKey {
            secret,
            caller: Caller {
                namespace: self.namespace.clone(),
                principal: Principal {
                    arn: user_arn(&self.namespace, &record.user),
                    account_id: account_id(&self.namespace),
                },
                access_key_id: Some(access_key_id.to_owned()),
                secure_transport: false,
            },
            admin: record.admin,
        });
        if let Ok(mut cache) = self.known.write() {
            cache.insert(access_key_id.to_owned(), Arc::clone(&known));
        }
        Ok(Some(known))
    }
}

#[async_trait]
impl Authenticator for AccessKeyDirectory {
    async fn lookup(
        &self,
        access_key_id: &str,
        session_token: Option<&str>,
    ) -> Result<Option<(SecretBytes, Caller)>, AwsError> {
        // Standalone mode issues no temporary credentials, so no session token is valid.
        if session_token.is_some() {
            return Ok(None);
        }
        Ok(self
            .load(access_key_id)
            .await?
            .map(|known| (known.secret.clone(), known.caller.clone())))
    }
}

#[async_trait]
impl AccountAuthority for AccessKeyDirectory {
    /// Decided by the key that signed the request.
    async fn allows(&self, caller: &Caller, _action: &str, _resource_arn: &str) -> bool {
        let Some(access_key_id) = caller.access_key_id.as_deref() else {
            return false;
        };
        matches!(self.load(access_key_id).await, Ok(Some(known)) if known.admin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EmbeddedStore;

    #[test]
    fn generated_keys_have_aws_shapes_and_differ() {
        let a = generate_access_key();
        let b = generate_access_key();
        assert_eq!(a.id.len(), 20);
        assert!(a.id.starts_with("AKIA"));
        assert!(a.id[4..].bytes().all(|c| ACCESS_KEY_ALPHABET.contains(&c)));
        assert_eq!(a.secret.len(), 40);
        assert_ne!(a.id, b.id);
        assert_ne!(a.secret.expose(), b.secret.expose());
    }

    #[test]
    fn user_names_follow_iam_rules() {
        assert!(validate_user_name("ci-bot@team.example").is_ok());
        for bad in ["", "has space", "slash/no", &"x".repeat(65)] {
            assert!(validate_user_name(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn directory_finds_keys_and_knows_admins() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let keyring = Arc::new(RootKeyring::generate());
        let admin = create_access_key(store.as_ref(), &keyring, "default", "admin", true, true, 1)
            .await
            .unwrap();
        let directory =
            AccessKeyDirectory::new(Arc::clone(&store), Arc::clone(&keyring), "default");
        // Created after the directory: found through the store.
        let user = create_access_key(store.as_ref(), &keyring, "default", "app", false, false, 2)
            .await
            .unwrap();

        let (secret, admin_caller) = directory.lookup(&admin.id, None).await.unwrap().unwrap();
        assert_eq!(secret, admin.secret);
        assert_eq!(admin_caller.principal.arn, user_arn("default", "admin"));
        let (_, user_caller) = directory.lookup(&user.id, None).await.unwrap().unwrap();
        assert_eq!(user_caller.principal.arn, user_arn("default", "app"));

        assert!(directory.allows(&admin_caller, "kms:CreateKey", "*").await);
        assert!(!directory.allows(&user_caller, "kms:CreateKey", "*").await);
        assert!(
            directory
                .lookup("AKIAUNKNOWN", None)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            directory
                .lookup(&admin.id, Some("token"))
                .await
                .unwrap()
                .is_none()
        );

        // A caller that names no key is no admin, whatever its principal.
        let keyless = Caller {
            access_key_id: None,
            ..admin_caller.clone()
        };
        assert!(!directory.allows(&keyless, "kms:CreateKey", "*").await);

        let found = find_bootstrap_key(store.as_ref(), &keyring, "default")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(found.id, admin.id);
    }

    #[tokio::test]
    async fn admin_is_decided_by_the_key_not_the_user() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let keyring = Arc::new(RootKeyring::generate());
        // One user, two keys: one admin, one not.
        let admin_key =
            create_access_key(store.as_ref(), &keyring, "default", "ops", true, false, 1)
                .await
                .unwrap();
        let plain_key =
            create_access_key(store.as_ref(), &keyring, "default", "ops", false, false, 2)
                .await
                .unwrap();
        for order in [[&admin_key, &plain_key], [&plain_key, &admin_key]] {
            // Each order of first use, with a fresh directory, so neither key is cached.
            let directory =
                AccessKeyDirectory::new(Arc::clone(&store), Arc::clone(&keyring), "default");
            let mut callers = Vec::new();
            for key in order {
                let (_, caller) = directory.lookup(&key.id, None).await.unwrap().unwrap();
                callers.push((key.id.clone(), caller));
            }
            for (id, caller) in &callers {
                assert_eq!(caller.principal.arn, user_arn("default", "ops"));
                assert_eq!(
                    directory.allows(caller, "kms:CreateKey", "*").await,
                    *id == admin_key.id,
                    "key {id} after using both in order {:?}",
                    order.map(|key| &key.id)
                );
            }
        }
    }
}
