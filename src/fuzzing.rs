//! Entry points for the fuzz targets in fuzz/; not an API.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::request::Parts;

use crate::aws::ops::{JsonService, Services, unknown_operation};
use crate::aws::sigv4::{SigV4Error, SignedRequest};
use crate::aws::{AwsError, CallFacts, MAX_BODY_BYTES};
use crate::crypto::RootKeyring;
use crate::crypto::SecretBytes;
use crate::engine::account::account_id;
use crate::engine::kms::{CreateKeyRequest, Kms};
use crate::engine::parameters::{Parameters, PutParameterRequest};
use crate::engine::secrets::{NewSecret, SecretValue, Secrets};
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

/// A secret created before fuzzing starts, so that reads find something.
pub struct FuzzSecret {
    pub name: &'static str,
    /// SecretBinary rather than SecretString.
    pub binary: bool,
    /// Encrypted under this KMS alias rather than the account's default key.
    pub kms_key_id: Option<&'static str>,
    /// A resource policy denying the fuzzed caller GetSecretValue: its values may never be
    /// answered, whatever the operation.
    pub deny_reads: bool,
    /// The values put, oldest first (the last one is AWSCURRENT).
    pub values: &'static [&'static [u8]],
}

/// The [`FuzzSecret`]s. Their values are not in the dictionary, and look like nothing the
/// engine compares them with, so the fuzzer only learns them from a leak.
pub const SECRETS: [FuzzSecret; 4] = [
    FuzzSecret {
        name: "fuzz/string",
        binary: false,
        kms_key_id: None,
        deny_reads: false,
        values: &[b"plainOLDstringQx7Kd2Vw", b"plainSTRINGvalueZq81Lm"],
    },
    FuzzSecret {
        name: "fuzz/binary",
        binary: true,
        kms_key_id: None,
        deny_reads: false,
        values: &[b"\x00\xf3plainBINARYvalueJk40\xfe\x81"],
    },
    FuzzSecret {
        name: "fuzz/customer-key",
        binary: false,
        kms_key_id: Some("alias/fuzz"),
        deny_reads: false,
        values: &[b"plainCUSTOMERkeyValueR5"],
    },
    FuzzSecret {
        name: "fuzz/policy",
        binary: false,
        kms_key_id: None,
        deny_reads: true,
        values: &[b"plainDENIEDpolicyValueW3"],
    },
];

/// A parameter created before fuzzing starts, so that reads find something.
pub struct FuzzParameter {
    pub name: &'static str,
    pub type_: &'static str,
    /// Sealed under this KMS alias rather than the account's `alias/aws/ssm`.
    pub key_id: Option<&'static str>,
    /// The fuzzed caller may do nothing with it: its values may never be answered.
    pub denied: bool,
    /// The values put, oldest first.
    pub values: &'static [&'static str],
}

/// The [`FuzzParameter`]s. Their values, like the secrets', are learnt only from a leak.
pub const PARAMETERS: [FuzzParameter; 4] = [
    FuzzParameter {
        name: "/fuzz/plain",
        type_: "String",
        key_id: None,
        denied: false,
        values: &["paramOLDplainVk29Qz", "paramPLAINvalueTy64Wd"],
    },
    FuzzParameter {
        name: "/fuzz/secure",
        type_: "SecureString",
        key_id: None,
        denied: false,
        values: &["paramSECUREvalueMn35Xc"],
    },
    FuzzParameter {
        name: "/fuzz/customer-key",
        type_: "SecureString",
        key_id: Some("alias/fuzz"),
        denied: false,
        values: &["paramCUSTOMERkeyRb72Hs"],
    },
    FuzzParameter {
        name: "/fuzz/denied/secret",
        type_: "SecureString",
        key_id: None,
        denied: true,
        values: &["paramDENIEDvalueJw18Pe"],
    },
];

/// The KMS and Secrets Manager operation tables over an in-memory store that refuses writes once
/// set up, so every input sees the same keys and secrets and a crash replays.
pub struct Front {
    runtime: tokio::runtime::Runtime,
    services: Services,
    caller: Caller,
}

impl Front {
    /// The engines with the [`KMS_KEYS`] and the [`SECRETS`], the store then frozen.
    pub fn new() -> Result<Self, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|err| err.to_string())?;
        let store = Arc::new(MemoryStore::default());
        let authority: Arc<dyn AccountAuthority> = Arc::new(FuzzAuthority);
        let clock: Arc<dyn Clock> = Arc::new(FixedClock);
        let kms = Arc::new(Kms::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::new(RootKeyring::generate()),
            Arc::clone(&authority),
            Arc::clone(&clock),
            REGION,
        ));
        let secrets = Arc::new(Secrets::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::clone(&kms),
            Arc::clone(&authority),
            Arc::clone(&clock),
        ));
        let parameters = Arc::new(Parameters::new(
            Arc::clone(&store) as Arc<dyn Store>,
            Arc::clone(&kms),
            authority,
            clock,
        ));
        let admin = caller("admin");
        let fuzzer = caller("fuzz");
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
            for secret in &SECRETS {
                create_secret(&secrets, &admin, &fuzzer, secret).await?;
            }
            for parameter in &PARAMETERS {
                create_parameter(&parameters, &admin, parameter).await?;
            }
            Ok::<(), String>(())
        })?;
        store.frozen.store(true, Ordering::SeqCst);
        Ok(Self {
            runtime,
            services: Services::new().with(kms).with(secrets).with(parameters),
            caller: fuzzer,
        })
    }

    /// Every KMS operation's `X-Amz-Target`, in the table's order.
    pub fn kms_targets(&self) -> Vec<&'static str> {
        targets::<Kms>()
    }

    /// Every Secrets Manager operation's `X-Amz-Target`, in the table's order.
    pub fn secrets_targets(&self) -> Vec<&'static str> {
        targets::<Secrets>()
    }

    /// Every Parameter Store operation's `X-Amz-Target`, in the table's order.
    pub fn ssm_targets(&self) -> Vec<&'static str> {
        targets::<Parameters>()
    }

    /// Runs one fuzz input against `targets` and checks what must hold for any input: the first
    /// byte picks the operation, the rest is its body. No internal failure (the caller is at
    /// fault for anything hostile); a success is a JSON object; a body that is not a JSON object
    /// is a SerializationException; no answer or error tells a secret value it may not
    /// ([`leaked_value`]). A broken rule is the `Err`, for the target to fail on.
    pub fn exercise(&self, targets: &[&'static str], data: &[u8]) -> Result<(), String> {
        let (Some((&selector, body)), Some(count)) =
            (data.split_first(), NonZeroUsize::new(targets.len()))
        else {
            return Ok(());
        };
        let Some(&target) = targets.get(usize::from(selector) % count) else {
            return Ok(());
        };
        match self.call(target, body) {
            Ok(response) => {
                let parsed: serde_json::Value = serde_json::from_slice(&response)
                    .map_err(|_| format!("{target}: the response body is not JSON"))?;
                if !parsed.is_object() {
                    return Err(format!("{target}: {parsed}"));
                }
                if let Some(value) = leaked_value(target, body, &response) {
                    return Err(format!(
                        "{target} answered the secret value {value:?}: {parsed}"
                    ));
                }
            }
            Err(err) => {
                if err.status.is_server_error() {
                    return Err(format!("{target}: {} {}", err.code, err.message));
                }
                let is_object = body.is_empty()
                    || body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{');
                if !is_object && err.code != "SerializationException" {
                    return Err(format!(
                        "{target}: {} for a body that is not an object",
                        err.code
                    ));
                }
                for text in [err.code, err.message.as_str()] {
                    if let Some(value) = leaked_value(target, body, text.as_bytes()) {
                        return Err(format!(
                            "{target} told the secret value {value:?} in an error: {text}"
                        ));
                    }
                }
            }
        }
        Ok(())
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

fn targets<S: JsonService>() -> Vec<&'static str> {
    S::operations()
        .iter()
        .map(|operation| operation.target)
        .collect()
}

async fn create_secret(
    secrets: &Secrets,
    admin: &Caller,
    fuzzer: &Caller,
    secret: &FuzzSecret,
) -> Result<(), String> {
    let name = secret.name;
    // Fixed version ids, so that inputs naming them replay across runs.
    let token = |index: usize| format!("{}-version-{index:022}", name.replace('/', "-"));
    let value = |bytes: &[u8]| SecretValue {
        bytes: SecretBytes::from_slice(bytes),
        binary: secret.binary,
    };
    let (first, later) = secret
        .values
        .split_first()
        .ok_or_else(|| format!("{name} has no value"))?;
    let created = secrets
        .create_secret(
            admin,
            NewSecret {
                name: name.to_owned(),
                client_request_token: Some(token(0)),
                description: Some(format!("the fuzzing secret {name}")),
                kms_key_id: secret.kms_key_id.map(str::to_owned),
                value: Some(value(first)),
                tags: vec![("team".to_owned(), "fuzz".to_owned())],
            },
        )
        .await
        .map_err(|err| format!("creating {name}: {err}"))?;
    for (index, bytes) in later.iter().enumerate() {
        secrets
            .put_secret_value(
                admin,
                name,
                Some(token(index + 1)),
                value(bytes),
                Vec::new(),
            )
            .await
            .map_err(|err| format!("putting a value in {name}: {err}"))?;
    }
    if secret.deny_reads {
        let policy = serde_json::json!({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Deny", "Principal": {"AWS": fuzzer.principal.arn},
                           "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]
        })
        .to_string();
        secrets
            .put_resource_policy(admin, &created.arn, &policy, true)
            .await
            .map_err(|err| format!("putting the policy of {name}: {err}"))?;
    }
    Ok(())
}

async fn create_parameter(
    parameters: &Parameters,
    admin: &Caller,
    parameter: &FuzzParameter,
) -> Result<(), String> {
    let name = parameter.name;
    for (index, value) in parameter.values.iter().enumerate() {
        parameters
            .put_parameter(
                admin,
                PutParameterRequest {
                    name: name.to_owned(),
                    value: SecretBytes::from_slice(value.as_bytes()),
                    type_: Some(parameter.type_.to_owned()),
                    key_id: parameter.key_id.map(str::to_owned),
                    overwrite: index > 0,
                    description: Some(format!("the fuzzing parameter {name}")),
                    tags: if index == 0 {
                        vec![("team".to_owned(), "fuzz".to_owned())]
                    } else {
                        Vec::new()
                    },
                    ..PutParameterRequest::default()
                },
            )
            .await
            .map_err(|err| format!("putting {name}: {err}"))?;
    }
    parameters
        .label_parameter_version(admin, name, Some(1), &["first".to_owned()])
        .await
        .map_err(|err| format!("labelling {name}: {err}"))?;
    Ok(())
}

/// The values `target` may answer: a secret's from GetSecretValue and BatchGetSecretValue,
/// a parameter's from the reads of Parameter Store; never one the caller is denied.
fn protected_values(target: &str) -> Vec<&'static [u8]> {
    let reads_secrets = matches!(
        target,
        "secretsmanager.GetSecretValue" | "secretsmanager.BatchGetSecretValue"
    );
    let reads_parameters = matches!(
        target,
        "AmazonSSM.GetParameter"
            | "AmazonSSM.GetParameters"
            | "AmazonSSM.GetParametersByPath"
            | "AmazonSSM.GetParameterHistory"
    );
    SECRETS
        .iter()
        .filter(|secret| secret.deny_reads || !reads_secrets)
        .flat_map(|secret| secret.values.iter().copied())
        .chain(
            PARAMETERS
                .iter()
                .filter(|parameter| parameter.denied || !reads_parameters)
                .flat_map(|parameter| parameter.values.iter().map(|value| value.as_bytes())),
        )
        .collect()
}

/// The first [`SECRETS`] or [`PARAMETERS`] value that `output` (an answer or an error message to `body` sent to
/// `target`) holds although the caller may not read it: a value of a secret the caller is
/// denied, or any value at all but from GetSecretValue and BatchGetSecretValue. A value counts
/// raw, in base64 and as lossy UTF-8; one that `body` itself names (raw or as a JSON string's content) is not
/// a leak, since echoing the input back tells nothing.
pub fn leaked_value(target: &str, body: &[u8], output: &[u8]) -> Option<&'static [u8]> {
    let decoded = serde_json::from_slice::<serde_json::Value>(body).ok();
    protected_values(target).into_iter().find(|value| {
        [
            value.to_vec(),
            STANDARD.encode(value).into_bytes(),
            String::from_utf8_lossy(value).into_owned().into_bytes(),
        ]
        .iter()
        .any(|form| {
            contains(output, form)
                && !contains(body, form)
                && !decoded
                    .as_ref()
                    .is_some_and(|decoded| json_mentions(decoded, form))
        })
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|window| window == needle)
}

fn json_mentions(value: &serde_json::Value, needle: &[u8]) -> bool {
    match value {
        serde_json::Value::String(text) => contains(text.as_bytes(), needle),
        serde_json::Value::Array(items) => items.iter().any(|item| json_mentions(item, needle)),
        serde_json::Value::Object(members) => members
            .iter()
            .any(|(key, item)| contains(key.as_bytes(), needle) || json_mentions(item, needle)),
        _ => false,
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

/// Allows the setup's admin everything, the fuzzed caller all but [`SLOW_ACTIONS`] and the
/// [`PARAMETERS`] marked denied.
struct FuzzAuthority;

#[async_trait]
impl AccountAuthority for FuzzAuthority {
    async fn allows(&self, caller: &Caller, action: &str, resource_arn: &str) -> bool {
        caller.principal.arn.ends_with(":user/admin")
            || (!SLOW_ACTIONS.contains(&action) && !resource_arn.contains(":parameter/fuzz/denied"))
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
        let front = Front::new().unwrap();
        let targets = front.kms_targets();
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
    fn every_secrets_operation_answers_and_the_secrets_are_there() {
        let front = Front::new().unwrap();
        let targets = front.secrets_targets();
        assert!(targets.len() > 15, "{targets:?}");
        for target in &targets {
            if let Err(err) = front.call(target, b"") {
                assert_ne!(err.code, "UnknownOperationException", "{target}");
                assert!(!err.status.is_server_error(), "{target}: {}", err.message);
            }
        }
        let get = "secretsmanager.GetSecretValue";
        for (name, expected) in [
            ("fuzz/string", "plainSTRINGvalueZq81Lm"),
            ("fuzz/customer-key", "plainCUSTOMERkeyValueR5"),
            ("fuzz/binary", "APNwbGFpbkJJTkFSWXZhbHVlSms0MP6B"),
        ] {
            let body = format!(r#"{{"SecretId":"{name}"}}"#);
            let answer = String::from_utf8(front.call(get, body.as_bytes()).unwrap()).unwrap();
            assert!(answer.contains(expected), "{answer}");
            assert_eq!(leaked_value(get, body.as_bytes(), answer.as_bytes()), None);
            assert!(
                leaked_value("secretsmanager.DescribeSecret", b"{}", answer.as_bytes()).is_some()
            );
        }
        let previous = front
            .call(
                get,
                br#"{"SecretId":"fuzz/string","VersionStage":"AWSPREVIOUS"}"#,
            )
            .unwrap();
        assert!(
            String::from_utf8(previous)
                .unwrap()
                .contains("plainOLDstringQx7Kd2Vw")
        );
        let denied = front
            .call(get, br#"{"SecretId":"fuzz/policy"}"#)
            .unwrap_err();
        assert_eq!(denied.code, "AccessDeniedException");
        let refused = front
            .call(
                "secretsmanager.DeleteSecret",
                br#"{"SecretId":"fuzz/string"}"#,
            )
            .unwrap_err();
        assert!(!refused.status.is_server_error(), "{}", refused.message);
        // Echoing the input back is no leak.
        let echoed = br#"{"SecretId":"plainDENIEDpolicyValueW3"}"#;
        assert_eq!(leaked_value(get, echoed, echoed), None);
        assert_eq!(
            leaked_value(get, b"{}", b"plainDENIEDpolicyValueW3"),
            Some(&b"plainDENIEDpolicyValueW3"[..])
        );
    }

    #[test]
    fn every_ssm_operation_answers_and_the_parameters_are_there() {
        let front = Front::new().unwrap();
        let targets = front.ssm_targets();
        assert!(targets.len() > 10, "{targets:?}");
        for target in &targets {
            if let Err(err) = front.call(target, b"") {
                assert_ne!(err.code, "UnknownOperationException", "{target}");
                assert!(!err.status.is_server_error(), "{target}: {}", err.message);
            }
        }
        let get = "AmazonSSM.GetParameter";
        for (body, expected) in [
            (r#"{"Name":"/fuzz/plain"}"#, "paramPLAINvalueTy64Wd"),
            (r#"{"Name":"/fuzz/plain:first"}"#, "paramOLDplainVk29Qz"),
            (
                r#"{"Name":"/fuzz/customer-key","WithDecryption":true}"#,
                "paramCUSTOMERkeyRb72Hs",
            ),
        ] {
            let answer = String::from_utf8(front.call(get, body.as_bytes()).unwrap()).unwrap();
            assert!(answer.contains(expected), "{answer}");
            assert_eq!(leaked_value(get, body.as_bytes(), answer.as_bytes()), None);
            assert!(
                leaked_value("AmazonSSM.DescribeParameters", b"{}", answer.as_bytes()).is_some()
            );
        }
        let denied = front
            .call(
                get,
                br#"{"Name":"/fuzz/denied/secret","WithDecryption":true}"#,
            )
            .unwrap_err();
        assert_eq!(denied.code, "AccessDeniedException");
        let listed = front
            .call(
                "AmazonSSM.GetParametersByPath",
                br#"{"Path":"/fuzz","Recursive":true,"WithDecryption":true}"#,
            )
            .unwrap();
        let listed = String::from_utf8(listed).unwrap();
        assert!(listed.contains("paramSECUREvalueMn35Xc"), "{listed}");
        assert!(!listed.contains("denied"), "{listed}");
        let refused = front
            .call(
                "AmazonSSM.PutParameter",
                br#"{"Name":"/fuzz/new","Value":"v","Type":"String"}"#,
            )
            .unwrap_err();
        assert!(!refused.status.is_server_error(), "{}", refused.message);
        assert_eq!(
            leaked_value("AmazonSSM.GetParameter", b"{}", b"paramDENIEDvalueJw18Pe"),
            Some(&b"paramDENIEDvalueJw18Pe"[..])
        );
    }

    #[test]
    fn amz_dates_convert_as_the_verifier_reads_them() {
        assert_eq!(amz_date_seconds("20260101T000000Z"), Some(NOW));
        assert_eq!(amz_date_seconds("00010101T000000Z"), Some(-62_135_596_800));
        assert_eq!(amz_date_seconds("20250229T000000Z"), None);
    }
}
