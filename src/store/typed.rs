//! Records with their public half as a Rust type: the engine reads and writes [`Typed`] records
//! and never decodes JSON metadata by hand. Each kind of record names its type once
//! ([`RecordMeta`]); a record whose metadata does not parse is [`StoreError::Malformed`].

use std::collections::BTreeMap;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Change, Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};

/// The type of a kind of record's metadata.
pub trait RecordMeta: Serialize + DeserializeOwned + Send + Sync + 'static {
    const KIND: RecordKind;
}

/// A record as read, its metadata parsed.
#[derive(Clone, Debug)]
pub struct Typed<M> {
    pub revision: Revision,
    pub meta: M,
    /// Named ciphertext blobs, never plaintext.
    pub sealed: BTreeMap<String, Vec<u8>>,
}

impl<M: RecordMeta> Typed<M> {
    /// Parses a stored record of `key`.
    pub fn parse(key: &RecordKey, record: Record) -> Result<Self, StoreError> {
        let meta =
            serde_json::from_value(record.value.meta).map_err(|source| StoreError::Malformed {
                record: key.to_string(),
                source,
            })?;
        Ok(Self {
            revision: record.revision,
            meta,
            sealed: record.value.sealed,
        })
    }
}

/// A record's value from its typed halves.
pub fn value<M: RecordMeta>(
    meta: &M,
    sealed: BTreeMap<String, Vec<u8>>,
) -> Result<RecordValue, StoreError> {
    Ok(RecordValue {
        meta: serde_json::to_value(meta).map_err(|source| StoreError::Malformed {
            record: M::KIND.to_string(),
            source,
        })?,
        sealed,
    })
}

/// The key of record `name` of `M`'s kind in `namespace`.
pub fn key<M: RecordMeta>(namespace: &str, name: &str) -> RecordKey {
    RecordKey::new(M::KIND, namespace, name)
}

/// Reads one record.
pub async fn get<M: RecordMeta, S: Store + ?Sized>(
    store: &S,
    namespace: &str,
    name: &str,
) -> Result<Option<Typed<M>>, StoreError> {
    let key = key::<M>(namespace, name);
    store
        .get(&key)
        .await?
        .map(|record| Typed::parse(&key, record))
        .transpose()
}

/// Reads every record of `M`'s kind (in one namespace, or all). A record that does not parse
/// is logged and left out, so that one bad record does not hide the others.
pub async fn list<M: RecordMeta, S: Store + ?Sized>(
    store: &S,
    namespace: Option<&str>,
) -> Result<Vec<(RecordKey, Typed<M>)>, StoreError> {
    Ok(store
        .list(M::KIND, namespace)
        .await?
        .into_iter()
        .filter_map(|(key, record)| match Typed::parse(&key, record) {
            Ok(typed) => Some((key, typed)),
            Err(err) => {
                tracing::error!(error = %crate::redact::chain(&err), "skipping an unreadable record");
                None
            }
        })
        .collect())
}

/// Creates a record.
pub async fn create<M: RecordMeta, S: Store + ?Sized>(
    store: &S,
    key: &RecordKey,
    meta: &M,
    sealed: BTreeMap<String, Vec<u8>>,
) -> Result<Revision, StoreError> {
    store.create(key, value(meta, sealed)?).await
}

/// What a [`modify`] step decides.
pub enum TypedChange<M> {
    /// Write this record (create when absent, update otherwise).
    Put {
        meta: M,
        sealed: BTreeMap<String, Vec<u8>>,
    },
    Delete,
    Keep,
}

/// [`super::modify`] on typed records: read, change and write back, retrying from a fresh read
/// when another writer got in first. `change` may run several times.
pub async fn modify<M, S, F, E>(
    store: &S,
    key: &RecordKey,
    mut change: F,
) -> Result<Option<Revision>, E>
where
    M: RecordMeta,
    S: Store + ?Sized,
    F: FnMut(Option<&Typed<M>>) -> Result<TypedChange<M>, E>,
    E: From<StoreError>,
{
    super::modify::<_, _, E>(store, key, |current| {
        let typed = current
            .cloned()
            .map(|record| Typed::parse(key, record))
            .transpose()?;
        Ok(match change(typed.as_ref())? {
            TypedChange::Put { meta, sealed } => Change::Put(value(&meta, sealed)?),
            TypedChange::Delete => Change::Delete,
            TypedChange::Keep => Change::Keep,
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::store::EmbeddedStore;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Note {
        text: String,
    }

    impl RecordMeta for Note {
        const KIND: RecordKind = RecordKind::Parameter;
    }

    #[tokio::test]
    async fn typed_records_round_trip_and_malformed_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
        let key = key::<Note>("ns", "a");
        let note = Note { text: "hi".into() };
        create(
            &store,
            &key,
            &note,
            BTreeMap::from([("v1".into(), vec![1])]),
        )
        .await
        .unwrap();
        let read = get::<Note, _>(&store, "ns", "a").await.unwrap().unwrap();
        assert_eq!(read.meta, note);
        assert_eq!(read.sealed["v1"], [1]);

        modify::<Note, _, _, StoreError>(&store, &key, |current| {
            let mut meta = current.unwrap().meta.clone();
            meta.text.push('!');
            Ok(TypedChange::Put {
                meta,
                sealed: BTreeMap::new(),
            })
        })
        .await
        .unwrap();
        assert_eq!(
            get::<Note, _>(&store, "ns", "a")
                .await
                .unwrap()
                .unwrap()
                .meta
                .text,
            "hi!"
        );

        // A record that is not a Note: named, not hidden, and skipped by list.
        store
            .create(
                &super::key::<Note>("ns", "b"),
                RecordValue {
                    meta: serde_json::json!({"other": 1}),
                    sealed: BTreeMap::new(),
                },
            )
            .await
            .unwrap();
        let Err(StoreError::Malformed { record, .. }) = get::<Note, _>(&store, "ns", "b").await
        else {
            panic!("a malformed record must be refused")
        };
        assert!(record.ends_with("ns/b"), "{record}");
        let listed = list::<Note, _>(&store, Some("ns")).await.unwrap();
        assert_eq!(listed.len(), 1);
    }
}
