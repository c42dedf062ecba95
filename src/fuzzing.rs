//! Entry points for the fuzz targets in fuzz/; not an API.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use http::request::Parts;

use crate::aws::ops::{JsonService, Services, unknown_operation};
use crate::aws::sigv4::{SigV4Error, SignedRequest};
use crate::aws::{AwsError, CallFacts, MAX_BODY_BYTES};
use crate::crypto::RootKeyring;
use crate::engine::account::account_id;
use crate::engine::kms::{CreateKeyRequest, Kms};
use crate::engine::{AccountAuthority, Caller, Clock, Principal};
use crate::fault::Fault;
use crate::store::{Record, RecordKey, RecordKind, RecordValue, Revision, Store, StoreError};

/// The region the fuzzed front ends serve.
pub const REGION: &str = "us-east-1";
/// The namespace (account) every fuzzed call is made in.
pub const NAMESPACE: &str = "fuzz";
/// The access key id of the one credential [`sigv4_authenticate`] knows.
pub const SIGV4_ACCESS_KEY_ID: &str = "AKIDFUZZEXAMPLE";
/// Its secret.
pub const SIGV4_SECRET_ACCESS_KEY: &str = "fuzzSecretKeyEXAMPLE/K7MDENG+bPxRfiCY";

/// 2026-01-01T00:00:00Z: a fixed clock, so that a saved input replays the same way.
const NOW: i64 = 1_767_225_600;

/// Actions refused to the fuzzed caller: each may generate an RSA key (up to seconds), which
/// would only show up as timeouts. Their inputs are still decoded, and checked up to the
/// authorization.
const SLOW_ACTIONS: [&str; 4] = [
    "kms:CreateKey",
    "kms:GenerateDataKeyPair",
    "kms:GenerateDataKeyPairWithoutPlaintext",
    "kms:GetParametersForImport",
];

/// Keys created before fuzzing starts, reachable by alias so that inputs replay across runs
/// (key ids are random): (alias, KeySpec, KeyUsage, Origin).
pub const KMS_KEYS: [(&str, &str, &str, &str); 3] = [
    (
        "alias/fuzz",
        "SYMMETRIC_DEFAULT",
        "ENCRYPT_DECRYPT",
        "AWS_KMS",
    ),
    ("alias/fuzz-sign", "ECC_NIST_P256", "SIGN_VERIFY", "AWS_KMS"),
    (
        "alias/fuzz-external",
        "SYMMETRIC_DEFAULT",
        "ENCRYPT_DECRYPT",
        "EXTERNAL",
    ),
];

/// The KMS operation table over an in-memory store that refuses writes once set up, so every
/// input sees the same keys and a crash replays.
pub struct KmsFront {
    runtime: tokio::runtime::Runtime,
    services: Services,
    caller: Caller,
}

impl KmsFront {
    /// The engine with the [`KMS_KEYS`], the store then frozen.
    pub fn new() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| err.to_string())?;
        let store = Arc::new(MemoryStore::default());
        let kms = Arc::new(Kms::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::new(RootKeyring::generate()),
            Arc::new(FuzzAuthority),
            Arc::new(FixedClock),
            REGION,
        ));
        let admin = caller("admin");
        runtime.block_on(async {
            for (alias, key_spec, key_usage, origin) in KMS_KEYS {
                let metadata = kms
                    .create_key(
                        &admin,
                        CreateKeyRequest {
                            description: Some(alias.to_owned()),
                            key_spec: Some(key_spec.to_owned()),
                            key_usage: Some(key_usage.to_owned()),
                            origin: Some(origin.to_owned()),
                            policy: None,
                            bypass_policy_lockout_safety_check: false,
                            tags: vec![("team".to_owned(), "fuzz".to_owned())],
                            multi_region: false,
                        },
                    )
                    .await
                    .map_err(|err| format!("creating {alias}: {err}"))?;
                kms.create_alias(&admin, alias, &metadata.key_id)
                    .await
                    .map_err(|err| format!("aliasing {alias}: {err}"))?;
            }
            Ok::<(), String>(())
        })?;
        store.frozen.store(true, Ordering::SeqCst);
        Ok(Self {
            runtime,
            services: Services::new().with(kms),
            caller: caller("fuzz"),
        })
    }

    /// Every operation's `X-Amz-Target`, in the table's order.
    pub fn targets(&self) -> Vec<&'static str> {
        Kms::operations()
            .iter()
            .map(|operation| operation.target)
            .collect()
    }

    /// One call as the front end makes it once the caller is authenticated: the service found
    /// by the target's prefix, the body decoded into the operation's input, the engine called.
    pub fn call(&self, target: &str, body: &[u8]) -> Result<Vec<u8>, AwsError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(AwsError::client(
                "ValidationException",
                "The request body is too large.",
            ));
        }
        let service = self
            .services
            .for_target(target)
            .ok_or_else(|| unknown_operation(target))?;
        let mut facts = CallFacts::default();
        self.runtime
            .block_on(service.call(target, &self.caller, body, &mut facts))
    }
}

fn caller(user: &str) -> Caller {
    let account_id = account_id(NAMESPACE);
    Caller {
        namespace: NAMESPACE.to_owned(),
        principal: Principal {
            arn: format!("arn:aws:iam::{account_id}:user/{user}"),
            account_id,
        },
        access_key_id: None,
        secure_transport: true,
    }
}

/// Allows the setup's admin everything, the fuzzed caller all but [`SLOW_ACTIONS`].
struct FuzzAuthority;

#[async_trait]
impl AccountAuthority for FuzzAuthority {
    async fn allows(&self, caller: &Caller, action: &str, _resource_arn: &str) -> bool {
        caller.principal.arn.ends_with(":user/admin") || !SLOW_ACTIONS.contains(&action)
    }
}

struct FixedClock;

impl Clock for FixedClock {
    fn now(&self) -> i64 {
        NOW
    }
}

/// Records in a map; once `frozen`, every write is refused (as the backend refusing a change,
/// which the engine reports as a client error), so fuzzing never changes what the next input sees.
#[derive(Default)]
struct MemoryStore {
    records: Mutex<BTreeMap<RecordKey, Record>>,
    revisions: AtomicU64,
    frozen: AtomicBool,
}

impl MemoryStore {
    fn records(&self) -> Result<MutexGuard<'_, BTreeMap<RecordKey, Record>>, StoreError> {
        self.records
            .lock()
            .map_err(|_| StoreError::Backend(Fault::new("memory store lock poisoned")))
    }

    /// Checks the key as the real backends do, and that writes are still allowed.
    fn writable(&self, key: &RecordKey) -> Result<(), StoreError> {
        key.validate()?;
        if self.frozen.load(Ordering::SeqCst) {
            return Err(StoreError::Refused(
                "The fuzzing store is read-only.".into(),
            ));
        }
        Ok(())
    }

    fn next_revision(&self) -> Revision {
        Revision::new((self.revisions.fetch_add(1, Ordering::SeqCst) + 1).to_string())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn get(&self, key: &RecordKey) -> Result<Option<Record>, StoreError> {
        key.validate()?;
        Ok(self.records()?.get(key).cloned())
    }

    async fn list(
        &self,
        kind: RecordKind,
        namespace: Option<&str>,
    ) -> Result<Vec<(RecordKey, Record)>, StoreError> {
        Ok(self
            .records()?
            .iter()
            .filter(|(key, _)| key.kind == kind && namespace.is_none_or(|ns| key.namespace == ns))
            .map(|(key, record)| (key.clone(), record.clone()))
            .collect())
    }

    async fn create(&self, key: &RecordKey, value: RecordValue) -> Result<Revision, StoreError> {
        self.writable(key)?;
        let mut records = self.records()?;
        if records.contains_key(key) {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let revision = self.next_revision();
        records.insert(
            key.clone(),
            Record {
                revision: revision.clone(),
                value,
            },
        );
        Ok(revision)
    }

    async fn update(
        &self,
        key: &RecordKey,
        expected: &Revision,
        value: RecordValue,
    ) -> Result<Revision, StoreError> {
        self.writable(key)?;
        let mut records = self.records()?;
        let current = records
            .get_mut(key)
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if current.revision != *expected {
            return Err(StoreError::Conflict(key.to_string()));
        }
        let revision = self.next_revision();
        *current = Record {
            revision: revision.clone(),
            value,
        };
        Ok(revision)
    }

    async fn delete(&self, key: &RecordKey, expected: &Revision) -> Result<(), StoreError> {
        self.writable(key)?;
        let mut records = self.records()?;
        match records.get(key) {
            None => Err(StoreError::NotFound(key.to_string())),
            Some(current) if current.revision != *expected => {
                Err(StoreError::Conflict(key.to_string()))
            }
            Some(_) => {
                records.remove(key);
                Ok(())
            }
        }
    }
}

/// SigV4 as the front end's `authenticate` checks it, with [`SIGV4_SECRET_ACCESS_KEY`] as the
/// secret whatever access key the request names (the server would stop at an unknown one;
/// going on runs the canonicalization on every request that parses), and the clock
/// `skew_seconds` away from the request's own `X-Amz-Date`, so that the clock check passes or
/// fails as the input chooses.
pub fn sigv4_authenticate(
    parts: &Parts,
    body: &[u8],
    skew_seconds: i64,
) -> Result<SignedRequest, SigV4Error> {
    let signed = SignedRequest::parse(parts)?;
    // `parse` accepted the date, so it must be a real one: anything else is a parser bug.
    let now = amz_date_seconds(signed.amz_date())
        .and_then(|seconds| seconds.checked_add(skew_seconds))
        .and_then(system_time)
        .ok_or(SigV4Error::Internal("an accepted X-Amz-Date is not a date"))?;
    signed.verify(parts, body, SIGV4_SECRET_ACCESS_KEY.as_bytes(), now)?;
    signed.require_service("kms")?;
    signed.require_region(REGION)?;
    signed.require_signed_header("x-amz-target")?;
    Ok(signed)
}

/// `YYYYMMDD'T'HHMMSS'Z'` in seconds since the epoch, by the `time` crate rather than the
/// verifier's own arithmetic, so the two are checked against each other.
fn amz_date_seconds(amz_date: &str) -> Option<i64> {
    let field = |from: usize, to: usize| amz_date.get(from..to)?.parse::<u16>().ok();
    let byte = |from: usize, to: usize| u8::try_from(field(from, to)?).ok();
    let month = time::Month::try_from(byte(4, 6)?).ok()?;
    let date = time::Date::from_calendar_date(i32::from(field(0, 4)?), month, byte(6, 8)?).ok()?;
    let at = date
        .with_hms(byte(9, 11)?, byte(11, 13)?, byte(13, 15)?)
        .ok()?;
    Some(at.assume_utc().unix_timestamp())
}

fn system_time(seconds: i64) -> Option<SystemTime> {
    let magnitude = Duration::from_secs(seconds.unsigned_abs());
    if seconds >= 0 {
        UNIX_EPOCH.checked_add(magnitude)
    } else {
        UNIX_EPOCH.checked_sub(magnitude)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kms_operation_answers_an_empty_body() {
        let front = KmsFront::new().unwrap();
        let targets = front.targets();
        assert!(targets.len() > 30, "{targets:?}");
        for target in targets {
            // Whatever the answer, it is the operation's, not an unknown operation.
            if let Err(err) = front.call(target, b"") {
                assert_ne!(err.code, "UnknownOperationException", "{target}");
            }
        }
        let encrypted = front
            .call(
                "TrentService.Encrypt",
                br#"{"KeyId":"alias/fuzz","Plaintext":"aGk="}"#,
            )
            .unwrap();
        assert!(
            String::from_utf8(encrypted)
                .unwrap()
                .contains("CiphertextBlob")
        );
        let refused = front
            .call("TrentService.DisableKey", br#"{"KeyId":"alias/fuzz"}"#)
            .unwrap_err();
        assert_eq!(refused.code, "KMSInvalidStateException");
    }

    #[test]
    fn amz_dates_convert_as_the_verifier_reads_them() {
        assert_eq!(amz_date_seconds("20260101T000000Z"), Some(NOW));
        assert_eq!(amz_date_seconds("00010101T000000Z"), Some(-62_135_596_800));
        assert_eq!(amz_date_seconds("20250229T000000Z"), None);
    }
}
