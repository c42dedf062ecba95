//! Unwrapped keys in memory. Unwrapping costs a root-key operation per version, and the hot path
//! (Encrypt, Decrypt) must not pay it, nor a store read, on every call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::model::{KeyRecord, Origin};
use super::{KeyLocation, KmsError, material_context, material_from_import};
use crate::crypto::{KeyMaterial, RootKeyring, SecretBytes};
use crate::engine::kms::policy::KeyPolicy;
use crate::store::typed::Typed;

/// How long an unwrapped key stays cached after it was loaded.
pub const CACHE_TTL: Duration = Duration::from_secs(300);

/// How many keys the cache holds at most; past it, expired then oldest entries go first.
const CACHE_CAPACITY: usize = 10_000;

/// A key with its material unwrapped and its policy parsed.
pub struct LoadedKey {
    pub location: KeyLocation,
    /// The key's ARN and its account id, computed once per load: the hot path names them on
    /// every call.
    pub arn: String,
    pub account_id: String,
    pub record: KeyRecord,
    pub policy: KeyPolicy,
    /// Symmetric material by version.
    pub symmetric: BTreeMap<u32, KeyMaterial>,
    /// PKCS#8 DER of an asymmetric key's private half.
    pub private_key: Option<SecretBytes>,
}

impl LoadedKey {
    pub fn unwrap(
        keyring: &RootKeyring,
        location: &KeyLocation,
        arn: String,
        stored: Typed<KeyRecord>,
    ) -> Result<Self, KmsError> {
        let Typed {
            meta: record,
            sealed,
            ..
        } = stored;
        let policy = KeyPolicy::parse_stored(&record.policy)
            .map_err(|err| KmsError::fault("stored key policy", err))?;
        let mut symmetric = BTreeMap::new();
        let mut private_key = None;
        for version in &record.versions {
            let wrapped = sealed
                .get(&KeyRecord::material_slot(version.id))
                .ok_or_else(|| KmsError::fault_at("a key version has no material"))?;
            let secret = keyring.unwrap(&material_context(location, version.id), wrapped)?;
            if record.key_spec.asymmetric().is_some() {
                private_key = Some(secret);
            } else if record.origin == Origin::External {
                symmetric.insert(version.id, material_from_import(secret.expose())?);
            } else {
                symmetric.insert(version.id, KeyMaterial::from_bytes(secret.expose())?);
            }
        }
        Ok(Self {
            location: location.clone(),
            arn,
            account_id: crate::engine::account::account_id(&location.namespace),
            record,
            policy,
            symmetric,
            private_key,
        })
    }
}

struct Entry {
    key: Arc<LoadedKey>,
    loaded: Instant,
}

pub struct KeyCache {
    ttl: Duration,
    entries: RwLock<HashMap<KeyLocation, Entry>>,
}

impl KeyCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    pub fn get(&self, location: &KeyLocation) -> Option<Arc<LoadedKey>> {
        let entries = self.entries.read().ok()?;
        let entry = entries.get(location)?;
        (entry.loaded.elapsed() < self.ttl).then(|| Arc::clone(&entry.key))
    }

    pub fn insert(&self, location: KeyLocation, key: Arc<LoadedKey>) {
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        if entries.len() >= CACHE_CAPACITY {
            let ttl = self.ttl;
            entries.retain(|_, entry| entry.loaded.elapsed() < ttl);
            if entries.len() >= CACHE_CAPACITY
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, entry)| entry.loaded)
                    .map(|(location, _)| location.clone())
            {
                entries.remove(&oldest);
            }
        }
        entries.insert(
            location,
            Entry {
                key,
                loaded: Instant::now(),
            },
        );
    }

    pub fn clear(&self) {
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    pub fn remove(&self, location: &KeyLocation) {
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(location);
        }
    }
}
