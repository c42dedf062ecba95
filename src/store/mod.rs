//! Where records live.
//!
//! A record has two halves, shaped after how Kubernetes mode keeps them:
//! - `meta`: what may be shown (a custom resource's spec and status): ids, names, states, dates;
//! - `sealed`: named ciphertext blobs (a companion core Secret's `data`), never plaintext.
//!
//! Every record carries a [`Revision`]. Writes name the revision they were computed from, and a
//! stale one fails with [`StoreError::Conflict`], so that two writers never silently overwrite
//! each other. [`modify`] is the read, change, write-back loop that callers use to retry.
//!
//! Backends: [`embedded`] (one redb file, standalone mode) and [`kubernetes`] (a custom resource
//! plus its companion Secret).

pub mod embedded;
pub mod kubernetes;
pub mod typed;

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedStore;
pub use kubernetes::KubernetesStore;

/// What kind of thing a record describes. The Kubernetes backend maps each to a resource type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RecordKind {
    /// A KMS key: metadata in `meta`, wrapped key versions in `sealed`.
    KmsKey,
    /// A KMS alias pointing at a key.
    Alias,
    /// A Secrets Manager secret.
    Secret,
    /// An SSM parameter.
    Parameter,
    /// An access key for SigV4 callers (standalone mode).
    AccessKey,
}

impl RecordKind {
    /// Every kind, in a fixed order.
    pub const ALL: [RecordKind; 5] = [
        RecordKind::KmsKey,
        RecordKind::Alias,
        RecordKind::Secret,
        RecordKind::Parameter,
        RecordKind::AccessKey,
    ];

    /// The stable name used in storage keys.
    pub fn as_str(self) -> &'static str {
        match self {
            RecordKind::KmsKey => "kmskey",
            RecordKind::Alias => "alias",
            RecordKind::Secret => "secret",
            RecordKind::Parameter => "parameter",
            RecordKind::AccessKey => "accesskey",
        }
    }
}

impl fmt::Display for RecordKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a record: kind, namespace (the account) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    pub kind: RecordKind,
    pub namespace: String,
    pub name: String,
}

impl RecordKey {
    pub fn new(kind: RecordKind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            kind,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    /// Names and namespaces become storage keys, so they must not carry the separator or be empty.
    pub(crate) fn validate(&self) -> Result<(), StoreError> {
        for part in [&self.namespace, &self.name] {
            if part.is_empty() || part.len() > 2048 || part.contains('\0') {
                return Err(StoreError::InvalidKey);
            }
        }
        Ok(())
    }
}

impl fmt::Display for RecordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.kind, self.namespace, self.name)
    }
}

/// An opaque token naming one version of a record. The embedded store counts; Kubernetes uses
/// resourceVersions.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Revision(String);

impl Revision {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The content of a record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RecordValue {
    /// Public metadata: no secret may go here.
    pub meta: serde_json::Value,
    /// Named ciphertext blobs.
    #[serde(default, with = "sealed_base64")]
    pub sealed: BTreeMap<String, Vec<u8>>,
}

/// A record as read, with the revision a later write must name.
#[derive(Clone, Debug, PartialEq)]
pub struct Record {
    pub revision: Revision,
    pub value: RecordValue,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("record {0} already exists")]
    AlreadyExists(String),
    #[error("record {0} does not exist")]
    NotFound(String),
    #[error("record {0} was changed by another writer")]
    Conflict(String),
    #[error("record name or namespace is empty, too long or contains NUL")]
    InvalidKey,
    #[error("gave up on {0} after {1} conflicting writes")]
    TooManyConflicts(String, usize),
    #[error("stored record is malformed: {0}")]
    Corrupt(String),
    /// A record whose metadata is not of its kind's shape.
    #[error("record {record} is malformed")]
    Malformed {
        record: String,
        #[source]
        source: serde_json::Error,
    },
    /// The backend cannot hold this change (for instance an alias on a key that has no
    /// resource); the message is safe to show the caller.
    #[error("{0}")]
    Refused(String),
    #[error("storage backend failed")]
    Backend(#[source] crate::fault::Fault),
}

/// The storage interface the engine writes through.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The record, or `None` when absent.
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError>;

    /// Records of one kind, in one namespace or all, ordered by (namespace, name).
    async fn list(
        &self,
        kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError>;

    /// Creates a record; fails with `AlreadyExists` when one is there.
    async fn create(&self, key: &RecordKey, value: RecordValue) -> Result<Revision, StoreError>;

    /// Replaces a record, only if it is still at `expected`.
    async fn update(
        &self,
        key: &RecordKey,
        expected: &Revision,
        value: RecordValue,
    ) -> Result<Revision, StoreError>;

    /// Deletes a record, only if it is still at `expected`.
    async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError>;
}

/// What a [`modify`] step decides to do with a record.
pub enum Change {
    /// Write this value (create when absent, update otherwise).
    Put(RecordValue),
    /// Delete the record.
    Delete,
    /// Leave it as it is.
    Keep,
}

/// How many conflicting writes [`modify`] absorbs before giving up.
pub const MAX_CONFLICT_RETRIES: usize = 16;

/// Read, change and write back a record, retrying from a fresh read when another writer got in
/// first. `change` may run several times, so it must be free of side effects. Returns the new
/// revision (`None` after a delete or when nothing changed on an absent record).
pub async fn modify<S, F, E>(
    store: &S,
    key: &RecordKey,
    mut change: F,
) -> Result<Option<Revision>, E>
where
    S: Store + ?Sized,
    F: FnMut(Option<&Record>) -> Result<Change, E>,
    E: From<StoreError>,
{
    for _ in 0..MAX_CONFLICT_RETRIES {
        let current = store.get(key).await?;
        let outcome = match (change(current.as_ref())?, current) {
            (Change::Keep, current) => return Ok(current.map(|record| record.revision)),
            (Change::Put(value), None) => store.create(key, value).await.map(Some),
            (Change::Put(value), Some(record)) => {
                store.update(key, &record.revision, value).await.map(Some)
            }
            (Change::Delete, None) => return Ok(None),
            (Change::Delete, Some(record)) => {
                store.delete(key, &record.revision).await.map(|()| None)
            }
        };
        match outcome {
            Ok(revision) => return Ok(revision),
            Err(
                StoreError::Conflict(_) | StoreError::AlreadyExists(_) | StoreError::NotFound(_),
            ) => {
                continue;
            }
            Err(other) => return Err(other.into()),
        }
    }
    Err(StoreError::TooManyConflicts(key.to_string(), MAX_CONFLICT_RETRIES).into())
}

mod sealed_base64 {
    use std::collections::BTreeMap;

    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Vec<u8>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let encoded: BTreeMap<&str, String> = map
            .iter()
            .map(|(name, bytes)| (name.as_str(), STANDARD.encode(bytes)))
            .collect();
        encoded.serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<String, Vec<u8>>, D::Error> {
        let encoded = BTreeMap::<String, String>::deserialize(deserializer)?;
        encoded
            .into_iter()
            .map(|(name, text)| {
                STANDARD
                    .decode(text.as_bytes())
                    .map(|bytes| (name, bytes))
                    .map_err(serde::de::Error::custom)
            })
            .collect()
    }
}
