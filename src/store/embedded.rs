//! The embedded store: every record in one redb file, for standalone mode.
//!
//! Revisions come from one counter kept in the same file and bumped in the same transaction as
//! the write, so a revision is never reused, even across restarts.

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::fault::Fault;

use super::{Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};

const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const REVISION_COUNTER: &str = "revision";

/// Separates the parts of a storage key. Record keys may not contain it.
const SEPARATOR: char = '\0';

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    revision: u64,
    value: RecordValue,
}

/// A [`Store`] on one redb file.
#[derive(Clone)]
pub struct EmbeddedStore {
    db: Arc<Database>,
}

impl EmbeddedStore {
    /// Opens the file, creating it when absent.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        let txn = db.begin_write().map_err(backend)?;
        {
            txn.open_table(RECORDS).map_err(backend)?;
            txn.open_table(COUNTERS).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs blocking database work off the async runtime's worker threads.
    async fn blocking<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || work(&db))
            .await
            .map_err(|join| StoreError::Backend(Fault::caused_by("storage task", join)))?
    }

    /// One write transaction that checks the current revision and applies `write`.
    async fn write(
        &self,
        key: &RecordKey,
        expected: Expected,
        value: Option<RecordValue>,
    ) -> Result<Option<Revision>, StoreError> {
        key.validate()?;
        let storage_key = storage_key(key);
        let display = key.to_string();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            let revision = {
                let mut records = txn.open_table(RECORDS).map_err(backend)?;
                let current = match records.get(storage_key.as_str()).map_err(backend)? {
                    Some(bytes) => Some(decode(bytes.value())?.revision),
                    None => None,
                };
                match (&expected, current) {
                    (Expected::Absent, Some(_)) => return Err(StoreError::AlreadyExists(display)),
                    (Expected::At(_), None) => return Err(StoreError::NotFound(display)),
                    (Expected::At(want), Some(have)) if *want != have.to_string() => {
                        return Err(StoreError::Conflict(display));
                    }
                    _ => {}
                }
                match value {
                    Some(value) => {
                        let mut counters = txn.open_table(COUNTERS).map_err(backend)?;
                        let next = counters
                            .get(REVISION_COUNTER)
                            .map_err(backend)?
                            .map(|guard| guard.value())
                            .unwrap_or(0)
                            + 1;
                        counters.insert(REVISION_COUNTER, next).map_err(backend)?;
                        let bytes = serde_json::to_vec(&StoredRecord {
                            revision: next,
                            value,
                        })
                        .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                        records
                            .insert(storage_key.as_str(), bytes.as_slice())
                            .map_err(backend)?;
                        Some(Revision::new(next.to_string()))
                    }
                    None => {
                        records.remove(storage_key.as_str()).map_err(backend)?;
                        None
                    }
                }
            };
            txn.commit().map_err(backend)?;
            Ok(revision)
        })
        .await
    }
}

impl EmbeddedStore {
    /// Creates many records in one transaction (one sync instead of one per record), for tests
    /// that need a store as full as a limit allows. Existing records are replaced.
    #[cfg(test)]
    pub(crate) async fn create_many(
        &self,
        records: Vec<(RecordKey, RecordValue)>,
    ) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(backend)?;
            {
                let mut table = txn.open_table(RECORDS).map_err(backend)?;
                let mut counters = txn.open_table(COUNTERS).map_err(backend)?;
                let mut next = counters
                    .get(REVISION_COUNTER)
                    .map_err(backend)?
                    .map(|guard| guard.value())
                    .unwrap_or(0);
                for (key, value) in records {
                    key.validate()?;
                    next += 1;
                    let bytes = serde_json::to_vec(&StoredRecord {
                        revision: next,
                        value,
                    })
                    .map_err(|err| StoreError::Corrupt(err.to_string()))?;
                    table
                        .insert(storage_key(&key).as_str(), bytes.as_slice())
                        .map_err(backend)?;
                }
                counters.insert(REVISION_COUNTER, next).map_err(backend)?;
            }
            txn.commit().map_err(backend)?;
            Ok(())
        })
        .await
    }
}

enum Expected {
    Absent,
    At(String),
}

#[async_trait]
impl Store for EmbeddedStore {
    /// Read on the calling task: one record from a read transaction (which never waits for a
    /// writer) takes microseconds, less than handing it to a blocking thread and back, which
    /// halved the throughput of reads on the hot path. Listings and writes (which sync to disk)
    /// still leave the runtime's threads.
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        key.validate()?;
        let storage_key = storage_key(key);
        let txn = self.db.begin_read().map_err(backend)?;
        let records = txn.open_table(RECORDS).map_err(backend)?;
        match records.get(storage_key.as_str()).map_err(backend)? {
            Some(bytes) => Ok(Some(decode(bytes.value())?.into_record())),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
        let prefix = match namespace {
            Some(namespace) => format!("{}{SEPARATOR}{namespace}{SEPARATOR}", kind.as_str()),
            None => format!("{}{SEPARATOR}", kind.as_str()),
        };
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(backend)?;
            let records = txn.open_table(RECORDS).map_err(backend)?;
            let mut found = Vec::new();
            for entry in records.range(prefix.as_str()..).map_err(backend)? {
                let (storage_key, bytes) = entry.map_err(backend)?;
                let storage_key = storage_key.value();
                if !storage_key.starts_with(prefix.as_str()) {
                    break;
                }
                let key = parse_storage_key(kind, storage_key)?;
                found.push((key, decode(bytes.value())?.into_record()));
            }
            Ok(found)
        })
        .await
    }

    async fn create(&self, key: &RecordKey, value: RecordValue) -> Result<Revision, StoreError> {
        self.write(key, Expected::Absent, Some(value))
            .await?
            .ok_or_else(|| StoreError::Backend(Fault::new("a write returned no revision")))
    }

    async fn update(
        &self,
        key: &RecordKey,
        expected: &Revision,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        self.write(key, Expected::At(expected.as_str().to_owned()), Some(value))
            .await?
            .ok_or_else(|| StoreError::Backend(Fault::new("a write returned no revision")))
    }

    async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        self.write(key, Expected::At(expected.as_str().to_owned()), None)
            .await
            .map(|_| ())
    }
}

impl StoredRecord {
    fn into_record(self) -> Record {
        Record {
            revision: Revision::new(self.revision.to_string()),
            value: self.value,
        }
    }
}

fn storage_key(key: &RecordKey) -> String {
    format!(
        "{}{SEPARATOR}{}{SEPARATOR}{}",
        key.kind.as_str(),
        key.namespace,
        key.name
    )
}

fn parse_storage_key(kind: RecordKind, storage_key: &str) -> Result<RecordKey, StoreError> {
    let mut parts = storage_key.splitn(3, SEPARATOR);
    match (parts.next(), parts.next(), parts.next()) {
        (Some(_), Some(namespace), Some(name)) => Ok(RecordKey::new(kind, namespace, name)),
        _ => Err(StoreError::Corrupt(
            "storage key without three parts".into(),
        )),
    }
}

fn decode(bytes: &[u8]) -> Result<StoredRecord, StoreError> {
    serde_json::from_slice(bytes).map_err(|err| StoreError::Corrupt(err.to_string()))
}

fn backend(err: impl Into<redb::Error>) -> StoreError {
    StoreError::Backend(Fault::caused_by("embedded database", err.into()))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use serde_json::json;

    use super::*;
    use crate::store::{Change, modify};

    fn value(n: u64) -> RecordValue {
        RecordValue {
            meta: json!({ "n": n }),
            sealed: BTreeMap::from([(
                "v1".to_owned(),
                vec![u8::try_from(n % 256).unwrap(), 0, 255],
            )]),
        }
    }

    fn open() -> (tempfile::TempDir, EmbeddedStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("coffer.redb")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn create_get_update_delete() {
        let (_dir, store) = open();
        let key = RecordKey::new(RecordKind::KmsKey, "default", "k1");
        assert!(store.get(&key).await.unwrap().is_none());

        let r1 = store.create(&key, value(1)).await.unwrap();
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(got.revision, r1);
        assert_eq!(got.value, value(1));

        let r2 = store.update(&key, &r1, value(2)).await.unwrap();
        assert_ne!(r1, r2);
        assert_eq!(store.get(&key).await.unwrap().unwrap().value, value(2));

        store.delete(&key, &r2).await.unwrap();
        assert!(store.get(&key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn stale_revisions_and_duplicates_are_refused() {
        let (_dir, store) = open();
        let key = RecordKey::new(RecordKind::Secret, "ns", "db");
        let r1 = store.create(&key, value(1)).await.unwrap();
        assert!(matches!(
            store.create(&key, value(9)).await,
            Err(StoreError::AlreadyExists(_))
        ));
        let _r2 = store.update(&key, &r1, value(2)).await.unwrap();
        assert!(matches!(
            store.update(&key, &r1, value(3)).await,
            Err(StoreError::Conflict(_))
        ));
        assert!(matches!(
            store.delete(&key, &r1).await,
            Err(StoreError::Conflict(_))
        ));
        // The refused writes left the record as the last good write made it.
        assert_eq!(store.get(&key).await.unwrap().unwrap().value, value(2));

        let missing = RecordKey::new(RecordKind::Secret, "ns", "missing");
        assert!(matches!(
            store.update(&missing, &r1, value(1)).await,
            Err(StoreError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn list_is_scoped_by_kind_and_namespace() {
        let (_dir, store) = open();
        for (kind, ns, name) in [
            (RecordKind::KmsKey, "a", "k2"),
            (RecordKind::KmsKey, "a", "k1"),
            (RecordKind::KmsKey, "ab", "k3"),
            (RecordKind::KmsKey, "b", "k4"),
            (RecordKind::Alias, "a", "alias1"),
        ] {
            store
                .create(&RecordKey::new(kind, ns, name), value(0))
                .await
                .unwrap();
        }
        let names = |list: Vec<(RecordKey, Record)>| {
            list.into_iter()
                .map(|(key, _)| format!("{}/{}", key.namespace, key.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(store.list(RecordKind::KmsKey, Some("a")).await.unwrap()),
            ["a/k1", "a/k2"]
        );
        assert_eq!(
            names(store.list(RecordKind::KmsKey, None).await.unwrap()),
            ["a/k1", "a/k2", "ab/k3", "b/k4"]
        );
        assert_eq!(
            names(store.list(RecordKind::Alias, None).await.unwrap()),
            ["a/alias1"]
        );
        assert!(
            store
                .list(RecordKind::Parameter, None)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn invalid_keys_are_refused() {
        let (_dir, store) = open();
        for key in [
            RecordKey::new(RecordKind::KmsKey, "", "x"),
            RecordKey::new(RecordKind::KmsKey, "ns", ""),
            RecordKey::new(RecordKind::KmsKey, "ns", "a\0b"),
        ] {
            assert!(matches!(
                store.create(&key, value(0)).await,
                Err(StoreError::InvalidKey)
            ));
            assert!(matches!(store.get(&key).await, Err(StoreError::InvalidKey)));
        }
    }

    #[tokio::test]
    async fn records_and_revisions_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coffer.redb");
        let key = RecordKey::new(RecordKind::Parameter, "ns", "/app/db/url");
        let first = {
            let store = EmbeddedStore::open(&path).unwrap();
            store.create(&key, value(7)).await.unwrap()
        };
        let store = EmbeddedStore::open(&path).unwrap();
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(got.value, value(7));
        assert_eq!(got.revision, first);
        // The counter continues, so an old revision can never match a new write.
        let next = store.update(&key, &first, value(8)).await.unwrap();
        assert!(next.as_str().parse::<u64>().unwrap() > first.as_str().parse::<u64>().unwrap());
    }

    #[tokio::test]
    async fn concurrent_modifies_lose_no_update() {
        let (_dir, store) = open();
        let key = RecordKey::new(RecordKind::KmsKey, "ns", "counter");
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    modify::<_, _, StoreError>(&store, &key, |current| {
                        let n = current
                            .and_then(|record| record.value.meta["n"].as_u64())
                            .unwrap_or(0);
                        Ok(Change::Put(value(n + 1)))
                    })
                    .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let got = store.get(&key).await.unwrap().unwrap();
        assert_eq!(got.value.meta["n"], 16);
    }

    #[tokio::test]
    async fn modify_retries_after_a_conflicting_writer() {
        let (_dir, store) = open();
        let key = RecordKey::new(RecordKind::Secret, "ns", "s");
        store.create(&key, value(1)).await.unwrap();
        let calls = AtomicUsize::new(0);
        let interferer = store.clone();
        let interfere_key = key.clone();
        modify::<_, _, StoreError>(&store, &key, |current| {
            let record = current.unwrap();
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                // Another writer gets in between this read and the write below.
                let record = record.clone();
                let interferer = interferer.clone();
                let interfere_key = interfere_key.clone();
                std::thread::spawn(move || {
                    tokio::runtime::Runtime::new().unwrap().block_on(async {
                        interferer
                            .update(&interfere_key, &record.revision, value(50))
                            .await
                            .unwrap()
                    })
                })
                .join()
                .unwrap();
            }
            let n = record.value.meta["n"].as_u64().unwrap();
            Ok(Change::Put(value(n + 1)))
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(store.get(&key).await.unwrap().unwrap().value.meta["n"], 51);
    }

    #[tokio::test]
    async fn modify_keep_and_delete() {
        let (_dir, store) = open();
        let key = RecordKey::new(RecordKind::Alias, "ns", "a");
        let none = modify::<_, _, StoreError>(&store, &key, |_| Ok(Change::Keep))
            .await
            .unwrap();
        assert!(none.is_none());
        store.create(&key, value(1)).await.unwrap();
        modify::<_, _, StoreError>(&store, &key, |_| Ok(Change::Delete))
            .await
            .unwrap();
        assert!(store.get(&key).await.unwrap().is_none());
    }
}
