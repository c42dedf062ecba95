//! The Kubernetes backend: records kept in the API server, so that etcd is the shared database
//! and every replica sees the same records.
//!
//! Each kind of record has its own keeper ([`KindStore`]): how its records map onto Kubernetes
//! objects (its conversion), which objects it watches, and its caches. [`KubernetesStore`] only
//! routes each call to the keeper of the record's kind, so adding a kind is adding a keeper:
//!
//! - [`kmskeys::KmsKeys`]: KMS keys, a KmsKey resource plus a companion Secret holding the
//!   wrapped material in the controller's own namespace (see its module for why there);
//! - [`aliases::Aliases`]: KMS aliases, the `spec.aliases` of KmsKey resources;
//! - [`secrets::SecretRecords`]: Secrets Manager secrets, a Secret resource plus a record and
//!   one object per version's ciphertext in the controller's namespace;
//! - [`parameters::ParameterRecords`]: SSM parameters, the same way with Parameter resources.
//!
//! Reads come from watch-fed caches ([`cache`]); writes go to the API server with a
//! resourceVersion precondition (or as merge patches of fields only Coffer computes) and enter
//! the cache at once. One watch per kind of object feeds both its keeper's cache and, where a
//! reconciler needs them, the reconciler.

pub mod aliases;
pub mod cache;
pub mod kmskeys;
pub mod mapping;
pub mod parameter_mapping;
pub mod parameters;
pub mod secret_mapping;
pub mod secrets;
pub mod versioned;
pub mod writeback;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use kube::Client;
use kube::api::{PatchParams, PostParams};

use super::{Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};
use crate::fault::Fault;

pub use kmskeys::{
    AbandonedKey, COMPANION_TYPE, ClaimedElsewhere, KEY_ID_LABEL, KmsKeys, NAMESPACE_LABEL,
    RECORD_ANNOTATION, RECREATED_ANNOTATION, RESOURCE_NAME_ANNOTATION, RESOURCE_UID_ANNOTATION,
    StoreChange, companion_name, is_key_id, key_id_of, recreated_by_cancellation,
};

/// Field manager of every write.
pub const FIELD_MANAGER: &str = "coffer";

/// The keeper of one kind of record: the [`Store`] interface for records of that kind, and the
/// watches that feed its caches.
#[async_trait]
pub trait KindStore: Store {
    /// The kind of record it keeps.
    fn kind(&self) -> RecordKind;

    /// Feeds its caches from its watches, until the future is dropped. A keeper that reads
    /// another keeper's caches watches nothing itself.
    async fn watch(self: Arc<Self>);

    /// Waits until its caches hold a full list.
    async fn synced(&self);
}

/// The Kubernetes store: the keepers of every kind it holds.
pub struct KubernetesStore {
    kinds: BTreeMap<RecordKind, Arc<dyn KindStore>>,
    kms_keys: Arc<KmsKeys>,
    secrets: Arc<secrets::SecretRecords>,
    parameters: Arc<parameters::ParameterRecords>,
}

impl KubernetesStore {
    /// A store keeping key material in `system_namespace`, the controller's own.
    pub fn new(client: Client, system_namespace: &str) -> Self {
        let kms_keys = KmsKeys::new(client.clone(), system_namespace);
        let aliases = Arc::new(aliases::Aliases::new(Arc::clone(&kms_keys)));
        let secrets = secrets::SecretRecords::new(client.clone(), system_namespace);
        let parameters = parameters::ParameterRecords::new(client, system_namespace);
        let store = Self {
            kinds: BTreeMap::new(),
            kms_keys: Arc::clone(&kms_keys),
            secrets: Arc::clone(&secrets),
            parameters: Arc::clone(&parameters),
        };
        store
            .with_kind(kms_keys)
            .with_kind(aliases)
            .with_kind(secrets)
            .with_kind(parameters)
    }

    /// The keeper of parameters, for what the Parameter reconciler asks of it.
    pub fn parameters(&self) -> &Arc<parameters::ParameterRecords> {
        &self.parameters
    }

    /// The keeper of secrets, for what the Secret reconciler asks of it.
    pub fn secrets(&self) -> &Arc<secrets::SecretRecords> {
        &self.secrets
    }

    /// Adds (or replaces) the keeper of a kind.
    pub fn with_kind(mut self, keeper: Arc<dyn KindStore>) -> Self {
        self.kinds.insert(keeper.kind(), keeper);
        self
    }

    /// The keeper of KMS keys, for what the KmsKey reconciler asks of it.
    pub fn kms_keys(&self) -> &Arc<KmsKeys> {
        &self.kms_keys
    }

    /// Feeds every keeper's caches until dropped.
    pub async fn run(self: Arc<Self>) {
        let watches = self.kinds.values().map(|keeper| Arc::clone(keeper).watch());
        futures::future::join_all(watches).await;
    }

    /// Waits until every keeper's caches hold a full list.
    pub async fn synced(&self) {
        for keeper in self.kinds.values() {
            keeper.synced().await;
        }
    }

    fn keeper(&self, kind: RecordKind) -> Result<&Arc<dyn KindStore>, StoreError> {
        self.kinds.get(&kind).ok_or_else(|| {
            StoreError::Backend(
                Fault::new("no such kind of record is kept in Kubernetes mode")
                    .about(kind.as_str()),
            )
        })
    }
}

#[async_trait]
impl Store for KubernetesStore {
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        key.validate()?;
        self.keeper(key.kind)?.get(key).await
    }

    async fn list(
        &self,
        kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
        self.keeper(kind)?.list(kind, namespace).await
    }

    async fn create(&self, key: &RecordKey, value: RecordValue) -> Result<Revision, StoreError> {
        key.validate()?;
        self.keeper(key.kind)?.create(key, value).await
    }

    async fn update(
        &self,
        key: &RecordKey,
        expected: &Revision,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        key.validate()?;
        self.keeper(key.kind)?.update(key, expected, value).await
    }

    async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        key.validate()?;
        self.keeper(key.kind)?.delete(key, expected).await
    }
}

pub(crate) fn post_params() -> PostParams {
    PostParams {
        dry_run: false,
        field_manager: Some(FIELD_MANAGER.to_owned()),
    }
}

pub(crate) fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..PatchParams::default()
    }
}

/// An API failure as a store error about `object`. Conflicts and absence become the store's own
/// outcomes; a refused change keeps the API server's message, which names fields; anything else
/// keeps the error as its source (told without its message where it is logged).
pub(crate) fn api_error(err: kube::Error, object: &str) -> StoreError {
    match err {
        kube::Error::Api(status) if status.is_already_exists() => {
            StoreError::AlreadyExists(object.to_owned())
        }
        kube::Error::Api(status) if status.is_conflict() => StoreError::Conflict(object.to_owned()),
        kube::Error::Api(status) if status.is_not_found() => {
            StoreError::NotFound(object.to_owned())
        }
        kube::Error::Api(status) if status.is_invalid() => StoreError::Refused(format!(
            "The change to {object} was refused: {}",
            status.message
        )),
        other => {
            StoreError::Backend(Fault::caused_by("Kubernetes API request", other).about(object))
        }
    }
}

#[cfg(test)]
mod tests;
