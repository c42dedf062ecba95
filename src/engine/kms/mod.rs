//! The KMS engine: key lifecycle, cryptographic operations, aliases, rotation, deletion, import
//! and key policies, over any [`Store`].
//!
//! Keys are records of kind [`RecordKind::KmsKey`] named by key id in their namespace: metadata
//! ([`KeyRecord`]) in the public half, each version's material wrapped by the root key in the
//! sealed half. Unwrapped keys are cached in memory for [`CACHE_TTL`] after they are loaded, and
//! dropped (so zeroized) on expiry or on any write to the key.

mod cache;
mod declared;
mod error;
mod lifecycle;
pub mod model;
mod operations;
pub mod policy;
mod schedule;
mod sealed_values;
mod service_values;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::crypto::{KeyMaterial, RootKeyring, SecretBytes};
use crate::engine::account::{Arn, account_id};
use crate::engine::iam::Decision;
use crate::engine::kms::policy::KmsRequest as AccessRequest;
use crate::engine::{AccountAuthority, Caller, Clock};
use crate::store::typed::{self, TypedChange};
use crate::store::{RecordKey, RecordKind, Store};

pub use crate::engine::paging::Page;
pub use cache::CACHE_TTL;
pub use declared::{DeclaredKey, DeclaredRotation, KeyEvent};
pub use error::KmsError;
pub use lifecycle::{AliasListEntry, CreateKeyRequest, KeyListEntry, KeyMetadata};
pub use model::{
    AliasRecord, ExpirationModel, KeyRecord, KeySpec, KeyState, KeyUsage, KeyVersion, Origin,
    RotationType,
};
pub use operations::{
    DataKey, DataKeyPair, DataKeySize, ImportParameters, RotationEntry, RotationStatus,
};
pub use service_values::ServiceValue;

use cache::{KeyCache, LoadedKey};

/// Most KeyIds, aliases and ARNs are far shorter; AWS caps them at 2048.
const MAX_KEY_REFERENCE_LEN: usize = 2048;

/// The KMS engine.
pub struct Kms {
    store: Arc<dyn Store>,
    keyring: Arc<RootKeyring>,
    authority: Arc<dyn AccountAuthority>,
    clock: Arc<dyn Clock>,
    region: String,
    cache: KeyCache,
    /// Wakes the scheduler when a write may have moved a due time.
    schedule_changed: Arc<Notify>,
    /// Keys known by another name than their id (KmsKey resource names in a cluster).
    key_names: Option<Arc<dyn KeyDirectory>>,
}

/// Finds a key by a name of the front end's own, such as a KmsKey resource's name, where AWS
/// would take only ids, ARNs and aliases.
pub trait KeyDirectory: Send + Sync + 'static {
    /// The id of the key called `name` in `namespace`.
    fn key_id_named(&self, namespace: &str, name: &str) -> Option<String>;
}

/// A key as the caller named it, resolved to where it lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct KeyLocation {
    pub namespace: String,
    pub key_id: String,
}

impl Kms {
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<RootKeyring>,
        authority: Arc<dyn AccountAuthority>,
        clock: Arc<dyn Clock>,
        region: impl Into<String>,
    ) -> Self {
        Self {
            store,
            keyring,
            authority,
            clock,
            region: region.into(),
            cache: KeyCache::new(CACHE_TTL),
            schedule_changed: Arc::new(Notify::new()),
            key_names: None,
        }
    }

    /// Also resolves keys by the names `directory` knows.
    pub fn with_key_directory(mut self, directory: Arc<dyn KeyDirectory>) -> Self {
        self.key_names = Some(directory);
        self
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub(crate) fn now(&self) -> i64 {
        self.clock.now()
    }

    pub(crate) fn key_arn(&self, location: &KeyLocation) -> String {
        Arn {
            service: "kms".into(),
            region: self.region.clone(),
            account_id: account_id(&location.namespace),
            resource: format!("key/{}", location.key_id),
        }
        .to_string()
    }

    pub(crate) fn alias_arn(&self, namespace: &str, alias_name: &str) -> String {
        Arn {
            service: "kms".into(),
            region: self.region.clone(),
            account_id: account_id(namespace),
            resource: alias_name.to_owned(),
        }
        .to_string()
    }

    /// The key id written into ciphertext headers: namespace and key id, so that Decrypt finds
    /// the key without being told.
    pub(crate) fn blob_key_id(location: &KeyLocation) -> String {
        format!("{}/{}", location.namespace, location.key_id)
    }

    pub(crate) fn parse_blob_key_id(text: &str) -> Option<KeyLocation> {
        let (namespace, key_id) = text.split_once('/')?;
        if namespace.is_empty() || key_id.is_empty() || key_id.contains('/') {
            return None;
        }
        Some(KeyLocation {
            namespace: namespace.to_owned(),
            key_id: key_id.to_owned(),
        })
    }

    /// Resolves a KeyId as AWS accepts it: key id, key ARN, `alias/NAME`, or alias ARN.
    pub(crate) async fn resolve(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<KeyLocation, KmsError> {
        if key_ref.is_empty() || key_ref.len() > MAX_KEY_REFERENCE_LEN {
            return Err(KmsError::Validation(
                "KeyId must be between 1 and 2048 characters.".into(),
            ));
        }
        if let Some(rest) = key_ref.strip_prefix("arn:") {
            let arn = Arn::parse(key_ref)
                .filter(|arn| arn.service == "kms")
                .ok_or_else(|| {
                    KmsError::InvalidArn(format!(
                        "Invalid arn {}",
                        crate::engine::text::truncate(rest)
                    ))
                })?;
            let namespace = self.namespace_of_account(caller, &arn.account_id)?;
            if arn.region != self.region {
                return Err(KmsError::NotFound(format!(
                    "Invalid arn: region {} is not this region",
                    crate::engine::text::truncate(&arn.region)
                )));
            }
            if let Some(key_id) = arn.resource.strip_prefix("key/") {
                return self.existing_key(namespace, key_id).await;
            }
            if arn.resource.starts_with("alias/") {
                return self.alias_target(&namespace, &arn.resource).await;
            }
            return Err(KmsError::InvalidArn(format!(
                "Invalid arn resource {}",
                crate::engine::text::truncate(&arn.resource)
            )));
        }
        if key_ref.starts_with("alias/") {
            return self.alias_target(&caller.namespace, key_ref).await;
        }
        if !valid_key_id(key_ref)
            && let Some(key_id) = self
                .key_names
                .as_ref()
                .and_then(|names| names.key_id_named(&caller.namespace, key_ref))
        {
            return self.existing_key(caller.namespace.clone(), &key_id).await;
        }
        self.existing_key(caller.namespace.clone(), key_ref).await
    }

    /// The namespace behind an account id. A caller reaches its own account; other accounts are
    /// reachable only through the cluster front end, which knows its namespaces.
    fn namespace_of_account(&self, caller: &Caller, account: &str) -> Result<String, KmsError> {
        if account == account_id(&caller.namespace) {
            Ok(caller.namespace.clone())
        } else {
            Err(KmsError::NotFound(format!(
                "Account {} is not known here.",
                crate::engine::text::truncate(account)
            )))
        }
    }

    async fn existing_key(&self, namespace: String, key_id: &str) -> Result<KeyLocation, KmsError> {
        let location = KeyLocation {
            namespace,
            key_id: key_id.to_owned(),
        };
        if !valid_key_id(key_id) {
            return Err(KmsError::NotFound(format!(
                "Invalid keyId {}",
                crate::engine::text::truncate(key_id)
            )));
        }
        // Existence is checked by the load every operation does next.
        Ok(location)
    }

    async fn alias_target(
        &self,
        namespace: &str,
        alias_name: &str,
    ) -> Result<KeyLocation, KmsError> {
        // A service's managed key is found by its derived id: its alias is never stored.
        if let Some(location) = Kms::managed_alias_target(namespace, alias_name) {
            return Ok(location);
        }
        let alias = typed::get::<AliasRecord, _>(self.store.as_ref(), namespace, alias_name)
            .await?
            .ok_or_else(|| {
                KmsError::NotFound(format!(
                    "Alias {} is not found.",
                    self.alias_arn(namespace, &crate::engine::text::truncate(alias_name))
                ))
            })?;
        Ok(KeyLocation {
            namespace: namespace.to_owned(),
            key_id: alias.meta.target_key_id,
        })
    }

    /// The key with its unwrapped material, from the cache or the store.
    pub(crate) async fn load(&self, location: &KeyLocation) -> Result<Arc<LoadedKey>, KmsError> {
        if let Some(hit) = self.cache.get(location) {
            return Ok(hit);
        }
        let record =
            typed::get::<KeyRecord, _>(self.store.as_ref(), &location.namespace, &location.key_id)
                .await?
                .ok_or_else(|| {
                    KmsError::NotFound(format!("Key '{}' does not exist", self.key_arn(location)))
                })?;
        let loaded = Arc::new(LoadedKey::unwrap(
            &self.keyring,
            location,
            self.key_arn(location),
            record,
        )?);
        self.cache.insert(location.clone(), Arc::clone(&loaded));
        Ok(loaded)
    }

    /// Reads, changes and writes back a key's record, retrying on conflicting writes, then drops
    /// the cached copy. `change` may run more than once.
    pub(crate) async fn update_key<F>(
        &self,
        location: &KeyLocation,
        mut change: F,
    ) -> Result<KeyRecord, KmsError>
    where
        F: FnMut(&mut KeyRecord, &mut BTreeMap<String, Vec<u8>>) -> Result<(), KmsError>,
    {
        let mut written = None;
        let key = key_record_key(location);
        let not_found =
            || KmsError::NotFound(format!("Key '{}' does not exist", self.key_arn(location)));
        typed::modify::<KeyRecord, _, _, KmsError>(self.store.as_ref(), &key, |current| {
            let current = current.ok_or_else(not_found)?;
            let mut record = current.meta.clone();
            let mut sealed = current.sealed.clone();
            change(&mut record, &mut sealed)?;
            written = Some(record.clone());
            Ok(TypedChange::Put {
                meta: record,
                sealed,
            })
        })
        .await?;
        self.cache.remove(location);
        self.schedule_changed.notify_one();
        written.ok_or_else(|| KmsError::fault_at("key update wrote nothing"))
    }

    /// Checks the key policy (and, through its account statement, the account authority).
    pub(crate) async fn authorize(
        &self,
        caller: &Caller,
        key: &LoadedKey,
        action: &str,
        context: &BTreeMap<String, String>,
    ) -> Result<(), KmsError> {
        let action = operations::effective_action(action);
        let action = action.as_str();
        let arn = &key.arn;
        let delegated = self.authority.allows(caller, action, arn).await;
        let request = AccessRequest {
            principal: &caller.principal,
            action,
            resource_arn: arn,
            context,
            key_account_id: &key.account_id,
            secure_transport: caller.secure_transport,
        };
        match key.policy.evaluate(&request, &|_| delegated) {
            Decision::Allow => Ok(()),
            Decision::ExplicitDeny => Err(KmsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {arn} with an explicit deny in a resource-based policy",
                caller.principal.arn
            ))),
            Decision::ImplicitDeny => Err(KmsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: {arn} because no resource-based policy allows the {action} action",
                caller.principal.arn
            ))),
        }
    }

    /// Resolves, loads and authorizes a key for an action that carries no encryption context.
    pub(crate) async fn authorized_key(
        &self,
        caller: &Caller,
        key_ref: &str,
        action: &str,
    ) -> Result<(KeyLocation, Arc<LoadedKey>), KmsError> {
        let location = self.resolve(caller, key_ref).await?;
        let key = self.load(&location).await?;
        self.authorize(caller, &key, action, &BTreeMap::new())
            .await?;
        Ok((location, key))
    }

    /// Checks an action that names no key (CreateKey, ListKeys, ...) against the account authority.
    pub(crate) async fn authorize_account(
        &self,
        caller: &Caller,
        action: &str,
    ) -> Result<(), KmsError> {
        if self.authority.allows(caller, action, "*").await {
            Ok(())
        } else {
            Err(KmsError::AccessDenied(format!(
                "User: {} is not authorized to perform: {action} on resource: *",
                caller.principal.arn
            )))
        }
    }

    /// Wakes whatever waits for a change of due times.
    pub fn schedule_changed(&self) -> Arc<Notify> {
        Arc::clone(&self.schedule_changed)
    }

    pub(crate) fn wrap_material(
        &self,
        location: &KeyLocation,
        version: u32,
        material: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        Ok(self
            .keyring
            .wrap(&material_context(location, version), material)?)
    }

    pub(crate) fn unwrap_slot(
        &self,
        location: &KeyLocation,
        slot: &str,
        wrapped: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        Ok(self
            .keyring
            .unwrap(&slot_context(location, slot), wrapped)?)
    }

    pub(crate) fn wrap_slot(
        &self,
        location: &KeyLocation,
        slot: &str,
        secret: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        Ok(self.keyring.wrap(&slot_context(location, slot), secret)?)
    }
}

pub(crate) fn key_record_key(location: &KeyLocation) -> RecordKey {
    RecordKey::new(RecordKind::KmsKey, &location.namespace, &location.key_id)
}

/// Associated data for a version's wrapped material: a blob moved to another key or version
/// does not unwrap.
pub(crate) fn material_context(location: &KeyLocation, version: u32) -> Vec<u8> {
    slot_context(location, &KeyRecord::material_slot(version))
}

fn slot_context(location: &KeyLocation, slot: &str) -> Vec<u8> {
    format!(
        "coffer/kmskey/{}/{}/{slot}",
        location.namespace, location.key_id
    )
    .into_bytes()
}

/// Key ids are UUIDs; anything else cannot name a key.
fn valid_key_id(key_id: &str) -> bool {
    uuid::Uuid::try_parse(key_id).is_ok()
}

/// Derives the 64-byte AES-SIV key from imported 256-bit material.
pub(crate) fn material_from_import(raw: &[u8]) -> Result<KeyMaterial, KmsError> {
    let hkdf = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"coffer/imported-key-material/v1"), raw);
    let mut okm = zeroize::Zeroizing::new([0u8; 64]);
    hkdf.expand(b"aes-256-siv", okm.as_mut())
        .map_err(|_| KmsError::fault_at("HKDF expand failed"))?;
    Ok(KeyMaterial::from_bytes(okm.as_ref())?)
}
