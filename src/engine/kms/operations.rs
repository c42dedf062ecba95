//! Cryptographic operations, on-demand rotation and key material import.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::cache::LoadedKey;
use super::lifecycle::{paginate, refuse_deleted, refuse_unrotatable};
use super::model::{
    ExpirationModel, IMPORT_WRAPPING_SLOT, KeyRecord, KeySpec, KeyState, KeyUsage, KeyVersion,
    Origin, PendingImport, RotationType,
};
use super::{KeyLocation, Kms, KmsError};
use crate::crypto::asymmetric::{self, EncryptionAlgorithm, MessageType, SigningAlgorithm};
use crate::crypto::{Binding, KeyMaterial, KeyRef, SecretBytes, open, parse_header, seal};
use crate::engine::Caller;
use crate::engine::paging::Page;

const MAX_PLAINTEXT: usize = 4096;
const MAX_CIPHERTEXT: usize = 6144;
const MAX_DATA_KEY_BYTES: i64 = 1024;
const MAX_RANDOM_BYTES: i64 = 1024;
const MAX_CONTEXT_ENTRIES: usize = 64;
const MAX_CONTEXT_BYTES: usize = 8192;
/// AWS allows ten on-demand rotations of a key.
const MAX_ON_DEMAND_ROTATIONS: usize = 10;
const IMPORT_PARAMETERS_LIFETIME: i64 = 24 * 3600;
const IMPORTED_MATERIAL_LEN: usize = 32;

/// The size of a data key: a spec or a byte count.
#[derive(Clone, Copy, Debug)]
pub enum DataKeySize {
    Aes256,
    Aes128,
    Bytes(i64),
}

impl DataKeySize {
    /// From GenerateDataKey's `KeySpec` and `NumberOfBytes`: exactly one must be given.
    pub fn from_request(
        key_spec: Option<&str>,
        number_of_bytes: Option<i64>,
    ) -> Result<Self, KmsError> {
        match (key_spec, number_of_bytes) {
            (Some("AES_256"), None) => Ok(DataKeySize::Aes256),
            (Some("AES_128"), None) => Ok(DataKeySize::Aes128),
            (Some(other), None) => Err(KmsError::Validation(format!(
                "KeySpec {} is not AES_256 or AES_128.",
                crate::engine::text::truncate(other)
            ))),
            (None, Some(bytes)) => Ok(DataKeySize::Bytes(bytes)),
            (Some(_), Some(_)) => Err(KmsError::Validation(
                "Specify either KeySpec or NumberOfBytes, not both.".into(),
            )),
            (None, None) => Err(KmsError::Validation(
                "Specify either KeySpec or NumberOfBytes.".into(),
            )),
        }
    }

    fn len(self) -> Result<usize, KmsError> {
        match self {
            DataKeySize::Aes256 => Ok(32),
            DataKeySize::Aes128 => Ok(16),
            DataKeySize::Bytes(bytes) if (1..=MAX_DATA_KEY_BYTES).contains(&bytes) => {
                usize::try_from(bytes).map_err(|_| KmsError::Validation("NumberOfBytes".into()))
            }
            DataKeySize::Bytes(_) => Err(KmsError::Validation(
                "NumberOfBytes must be between 1 and 1024.".into(),
            )),
        }
    }
}

/// A data key: its plaintext and its ciphertext under a KMS key.
pub struct DataKey {
    pub plaintext: SecretBytes,
    pub ciphertext: Vec<u8>,
    pub key_arn: String,
}

/// A data key pair: the private key in the clear (when asked for) and under a KMS key.
pub struct DataKeyPair {
    pub private_plaintext: SecretBytes,
    pub private_ciphertext: Vec<u8>,
    pub public_key: Vec<u8>,
    pub key_arn: String,
    pub key_pair_spec: &'static str,
}

/// GetParametersForImport's answer.
pub struct ImportParameters {
    pub key_arn: String,
    pub import_token: Vec<u8>,
    pub public_key: Vec<u8>,
    pub valid_to: i64,
}

/// GetKeyRotationStatus's answer.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationStatus {
    pub key_rotation_enabled: bool,
    pub key_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotation_period_in_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_rotation_date: Option<i64>,
}

/// One rotation in ListKeyRotations.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEntry {
    pub key_id: String,
    pub rotation_date: i64,
    pub rotation_type: RotationType,
}

fn validate_context(context: &BTreeMap<String, String>) -> Result<(), KmsError> {
    let bytes: usize = context.iter().map(|(k, v)| k.len() + v.len()).sum();
    if context.len() > MAX_CONTEXT_ENTRIES || bytes > MAX_CONTEXT_BYTES {
        return Err(KmsError::Validation(
            "EncryptionContext is too large.".into(),
        ));
    }
    if context.keys().any(String::is_empty) {
        return Err(KmsError::Validation(
            "EncryptionContext keys must not be empty.".into(),
        ));
    }
    Ok(())
}

/// Refuses cryptographic use of a key that is not Enabled, as AWS does.
pub(super) fn require_enabled(key: &LoadedKey, arn: &str) -> Result<(), KmsError> {
    match key.record.state {
        KeyState::Enabled => Ok(()),
        KeyState::Disabled => Err(KmsError::Disabled(arn.to_owned())),
        KeyState::PendingDeletion => Err(KmsError::InvalidState(format!(
            "{arn} is pending deletion."
        ))),
        KeyState::PendingImport => Err(KmsError::InvalidState(format!("{arn} is pending import."))),
    }
}

pub(super) fn require_usage(key: &LoadedKey, usage: KeyUsage, arn: &str) -> Result<(), KmsError> {
    if key.record.key_usage != usage {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{arn} key usage is {} which is not valid for this operation.",
            key.record.key_usage.as_str()
        )));
    }
    Ok(())
}

fn require_symmetric(key: &LoadedKey, arn: &str) -> Result<(), KmsError> {
    if key.record.key_spec != KeySpec::SymmetricDefault {
        return Err(KmsError::InvalidKeyUsage(format!(
            "{arn} is not a symmetric key; this operation needs one."
        )));
    }
    Ok(())
}

fn encryption_algorithm(
    text: Option<&str>,
    spec: KeySpec,
) -> Result<Option<EncryptionAlgorithm>, KmsError> {
    match (text, spec.asymmetric()) {
        (None | Some("SYMMETRIC_DEFAULT"), None) => Ok(None),
        (Some(text), Some(asym)) => {
            let algorithm = text.parse::<EncryptionAlgorithm>().ok().ok_or_else(|| {
                KmsError::InvalidKeyUsage(format!(
                    "EncryptionAlgorithm {} is not valid for this key.",
                    crate::engine::text::truncate(text)
                ))
            })?;
            if asymmetric::encryption_algorithms(asym).contains(&algorithm) {
                Ok(Some(algorithm))
            } else {
                Err(KmsError::InvalidKeyUsage(
                    "EncryptionAlgorithm is not valid for this key.".into(),
                ))
            }
        }
        (None, Some(_)) => Err(KmsError::Validation(
            "EncryptionAlgorithm is required for asymmetric keys.".into(),
        )),
        (Some(other), None) => Err(KmsError::InvalidKeyUsage(format!(
            "EncryptionAlgorithm {} is not valid for a symmetric key.",
            crate::engine::text::truncate(other)
        ))),
    }
}

impl Kms {
    /// Loads a key for a cryptographic operation: resolved, authorized, enabled, of the right usage.
    async fn key_for(
        &self,
        caller: &Caller,
        key_ref: &str,
        action: &str,
        usage: KeyUsage,
        context: &BTreeMap<String, String>,
    ) -> Result<(std::sync::Arc<LoadedKey>, String), KmsError> {
        let location = self.resolve(caller, key_ref).await?;
        let key = self.load(&location).await?;
        self.authorize(caller, &key, action, context).await?;
        let arn = key.arn.clone();
        require_enabled(&key, &arn)?;
        require_usage(&key, usage, &arn)?;
        Ok((key, arn))
    }

    /// Seals bytes under a symmetric key's newest version.
    fn seal_symmetric(
        &self,
        key: &LoadedKey,
        context: &BTreeMap<String, String>,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, KmsError> {
        let (version, material) = key
            .symmetric
            .last_key_value()
            .ok_or_else(|| KmsError::fault_at("enabled key has no material"))?;
        let blob_key_id = Kms::blob_key_id(&key.location);
        let binding = Binding {
            resource: None,
            context: context.clone(),
        };
        Ok(seal(
            KeyRef {
                key_id: &blob_key_id,
                version: *version,
                material,
            },
            &binding,
            plaintext,
        )?)
    }

    pub async fn encrypt(
        &self,
        caller: &Caller,
        key_ref: &str,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
        algorithm: Option<&str>,
    ) -> Result<(Vec<u8>, String, &'static str), KmsError> {
        if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT {
            return Err(KmsError::Validation(format!(
                "Plaintext must be between 1 and {MAX_PLAINTEXT} bytes."
            )));
        }
        validate_context(context)?;
        let (key, arn) = self
            .key_for(
                caller,
                key_ref,
                "kms:Encrypt",
                KeyUsage::EncryptDecrypt,
                context,
            )
            .await?;
        match encryption_algorithm(algorithm, key.record.key_spec)? {
            None => Ok((
                self.seal_symmetric(&key, context, plaintext)?,
                arn,
                "SYMMETRIC_DEFAULT",
            )),
            Some(algorithm) => {
                if !context.is_empty() {
                    return Err(KmsError::Validation(
                        "EncryptionContext is not supported with asymmetric keys.".into(),
                    ));
                }
                let (spec, public_key) = public_key_of(&key)?;
                if asymmetric::max_plaintext_len(spec, algorithm)
                    .is_some_and(|max| plaintext.len() > max)
                {
                    return Err(KmsError::Validation(
                        "Plaintext is too long for this key and algorithm.".into(),
                    ));
                }
                let ciphertext = asymmetric::encrypt(spec, &public_key, algorithm, plaintext)?;
                Ok((ciphertext, arn, algorithm.as_str()))
            }
        }
    }

    pub async fn decrypt(
        &self,
        caller: &Caller,
        ciphertext: &[u8],
        context: &BTreeMap<String, String>,
        key_ref: Option<&str>,
        algorithm: Option<&str>,
    ) -> Result<(SecretBytes, String, &'static str), KmsError> {
        if ciphertext.is_empty() || ciphertext.len() > MAX_CIPHERTEXT {
            return Err(KmsError::Validation(format!(
                "CiphertextBlob must be between 1 and {MAX_CIPHERTEXT} bytes."
            )));
        }
        validate_context(context)?;
        let named = match key_ref {
            Some(key_ref) => Some(self.resolve(caller, key_ref).await?),
            None => None,
        };
        let asymmetric_named = match &named {
            Some(location) => {
                let key = self.load(location).await?;
                key.record.key_spec.asymmetric().is_some().then_some(key)
            }
            None => None,
        };
        if let Some(key) = asymmetric_named {
            return self
                .decrypt_asymmetric(caller, &key, ciphertext, context, algorithm)
                .await;
        }
        if algorithm.is_some_and(|algorithm| algorithm != "SYMMETRIC_DEFAULT") {
            return Err(KmsError::Validation(
                "Decrypting with an asymmetric algorithm needs the KeyId of that key.".into(),
            ));
        }
        let header = parse_header(ciphertext).map_err(|_| KmsError::InvalidCiphertext)?;
        let location = Kms::parse_blob_key_id(&header.key_id).ok_or(KmsError::InvalidCiphertext)?;
        if let Some(named) = &named
            && *named != location
        {
            return Err(KmsError::IncorrectKey);
        }
        if location.namespace != caller.namespace && named.is_none() {
            // A ciphertext from another account is decrypted only when the caller names the key.
            return Err(KmsError::InvalidCiphertext);
        }
        let key = self.load(&location).await.map_err(|err| match err {
            KmsError::NotFound(_) => KmsError::InvalidCiphertext,
            other => other,
        })?;
        self.authorize(caller, &key, "kms:Decrypt", context).await?;
        let arn = key.arn.clone();
        require_enabled(&key, &arn)?;
        let material = key
            .symmetric
            .get(&header.key_version)
            .ok_or(KmsError::InvalidCiphertext)?;
        let binding = Binding {
            resource: None,
            context: context.clone(),
        };
        let plaintext =
            open(material, &binding, ciphertext).map_err(|_| KmsError::InvalidCiphertext)?;
        Ok((plaintext, arn, "SYMMETRIC_DEFAULT"))
    }

    async fn decrypt_asymmetric(
        &self,
        caller: &Caller,
        key: &LoadedKey,
        ciphertext: &[u8],
        context: &BTreeMap<String, String>,
        algorithm: Option<&str>,
    ) -> Result<(SecretBytes, String, &'static str), KmsError> {
        self.authorize(caller, key, "kms:Decrypt", context).await?;
        let arn = key.arn.clone();
        require_enabled(key, &arn)?;
        require_usage(key, KeyUsage::EncryptDecrypt, &arn)?;
        let algorithm = encryption_algorithm(algorithm, key.record.key_spec)?
            .ok_or_else(|| KmsError::Validation("EncryptionAlgorithm is required.".into()))?;
        let (spec, private_key) = private_key_of(key)?;
        let plaintext = asymmetric::decrypt(spec, private_key.expose(), algorithm, ciphertext)
            .map_err(|_| KmsError::InvalidCiphertext)?;
        Ok((SecretBytes::from_slice(&plaintext), arn, algorithm.as_str()))
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn re_encrypt(
        &self,
        caller: &Caller,
        ciphertext: &[u8],
        source_context: &BTreeMap<String, String>,
        source_key: Option<&str>,
        source_algorithm: Option<&str>,
        destination_key: &str,
        destination_context: &BTreeMap<String, String>,
        destination_algorithm: Option<&str>,
    ) -> Result<ReEncrypted, KmsError> {
        // ReEncrypt is authorized as ReEncryptFrom and ReEncryptTo; Decrypt/Encrypt permissions
        // are not needed, as in AWS. The plaintext never leaves this function.
        let (plaintext, source_arn, source_algorithm) = self
            .with_action_alias(caller, "kms:ReEncryptFrom", |caller| {
                self.decrypt(
                    caller,
                    ciphertext,
                    source_context,
                    source_key,
                    source_algorithm,
                )
            })
            .await?;
        let (ciphertext, key_arn, destination_algorithm) = self
            .with_action_alias(caller, "kms:ReEncryptTo", |caller| {
                self.encrypt(
                    caller,
                    destination_key,
                    plaintext.expose(),
                    destination_context,
                    destination_algorithm,
                )
            })
            .await?;
        Ok(ReEncrypted {
            ciphertext,
            source_key_arn: source_arn,
            key_arn,
            source_algorithm,
            destination_algorithm,
        })
    }

    /// Runs `work` with Encrypt/Decrypt checks standing for `action`.
    async fn with_action_alias<'a, T, F, Fut>(
        &'a self,
        caller: &'a Caller,
        action: &'static str,
        work: F,
    ) -> Result<T, KmsError>
    where
        F: FnOnce(&'a Caller) -> Fut,
        Fut: std::future::Future<Output = Result<T, KmsError>>,
    {
        ACTION_OVERRIDE.scope(action, work(caller)).await
    }

    pub async fn generate_data_key(
        &self,
        caller: &Caller,
        key_ref: &str,
        size: DataKeySize,
        context: &BTreeMap<String, String>,
        with_plaintext: bool,
    ) -> Result<DataKey, KmsError> {
        let len = size.len()?;
        validate_context(context)?;
        let action = if with_plaintext {
            "kms:GenerateDataKey"
        } else {
            "kms:GenerateDataKeyWithoutPlaintext"
        };
        let (key, arn) = self
            .key_for(caller, key_ref, action, KeyUsage::EncryptDecrypt, context)
            .await?;
        require_symmetric(&key, &arn)?;
        let plaintext = SecretBytes::random(len);
        let ciphertext = self.seal_symmetric(&key, context, plaintext.expose())?;
        Ok(DataKey {
            plaintext,
            ciphertext,
            key_arn: arn,
        })
    }

    pub async fn generate_data_key_pair(
        &self,
        caller: &Caller,
        key_ref: &str,
        key_pair_spec: &str,
        context: &BTreeMap<String, String>,
        with_plaintext: bool,
    ) -> Result<DataKeyPair, KmsError> {
        let spec = KeySpec::parse(key_pair_spec)
            .and_then(KeySpec::asymmetric)
            .ok_or_else(|| {
                KmsError::Validation(format!(
                    "KeyPairSpec {} is not supported.",
                    crate::engine::text::truncate(key_pair_spec)
                ))
            })?;
        validate_context(context)?;
        let action = if with_plaintext {
            "kms:GenerateDataKeyPair"
        } else {
            "kms:GenerateDataKeyPairWithoutPlaintext"
        };
        let (key, arn) = self
            .key_for(caller, key_ref, action, KeyUsage::EncryptDecrypt, context)
            .await?;
        require_symmetric(&key, &arn)?;
        let pair = tokio::task::spawn_blocking(move || asymmetric::generate(spec))
            .await
            .map_err(|err| KmsError::fault("key generation task", err))??;
        let private_ciphertext = self.seal_symmetric(&key, context, &pair.private_pkcs8_der)?;
        Ok(DataKeyPair {
            private_plaintext: SecretBytes::from_slice(&pair.private_pkcs8_der),
            private_ciphertext,
            public_key: pair.public_spki_der.clone(),
            key_arn: arn,
            key_pair_spec: spec.as_str(),
        })
    }

    pub async fn generate_random(
        &self,
        caller: &Caller,
        number_of_bytes: Option<i64>,
    ) -> Result<SecretBytes, KmsError> {
        self.authorize_account(caller, "kms:GenerateRandom").await?;
        let bytes = number_of_bytes
            .ok_or_else(|| KmsError::Validation("NumberOfBytes is required.".into()))?;
        if !(1..=MAX_RANDOM_BYTES).contains(&bytes) {
            return Err(KmsError::Validation(
                "NumberOfBytes must be between 1 and 1024.".into(),
            ));
        }
        let len =
            usize::try_from(bytes).map_err(|_| KmsError::Validation("NumberOfBytes".into()))?;
        Ok(SecretBytes::random(len))
    }

    pub async fn get_public_key(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<PublicKeyInfo, KmsError> {
        let (location, key) = self
            .authorized_key(caller, key_ref, "kms:GetPublicKey")
            .await?;
        let arn = self.key_arn(&location);
        require_enabled(&key, &arn)?;
        let (spec, public_key) = public_key_of(&key).map_err(|_| {
            KmsError::UnsupportedOperation(format!("{arn} is not an asymmetric key."))
        })?;
        let metadata = self.metadata(&location, &key.record);
        let _ = spec;
        Ok(PublicKeyInfo {
            key_id: arn,
            public_key,
            key_spec: key.record.key_spec,
            key_usage: key.record.key_usage,
            encryption_algorithms: metadata.encryption_algorithms,
            signing_algorithms: metadata.signing_algorithms,
        })
    }

    pub async fn sign(
        &self,
        caller: &Caller,
        key_ref: &str,
        message: &[u8],
        message_type: Option<&str>,
        algorithm: &str,
    ) -> Result<(Vec<u8>, String, &'static str), KmsError> {
        let message_type = parse_message_type(message_type)?;
        let (key, arn) = self
            .key_for(
                caller,
                key_ref,
                "kms:Sign",
                KeyUsage::SignVerify,
                &BTreeMap::new(),
            )
            .await?;
        let (spec, private_key) = private_key_of(&key)?;
        let algorithm = signing_algorithm(algorithm, spec)?;
        check_message(message, message_type, algorithm)?;
        let signature =
            asymmetric::sign(spec, private_key.expose(), algorithm, message_type, message)
                .map_err(|err| KmsError::Validation(err.to_string()))?;
        Ok((signature, arn, algorithm.as_str()))
    }

    pub async fn verify(
        &self,
        caller: &Caller,
        key_ref: &str,
        message: &[u8],
        message_type: Option<&str>,
        signature: &[u8],
        algorithm: &str,
    ) -> Result<(String, &'static str), KmsError> {
        let message_type = parse_message_type(message_type)?;
        if signature.is_empty() || signature.len() > 6144 {
            return Err(KmsError::Validation(
                "Signature must be between 1 and 6144 bytes.".into(),
            ));
        }
        let (key, arn) = self
            .key_for(
                caller,
                key_ref,
                "kms:Verify",
                KeyUsage::SignVerify,
                &BTreeMap::new(),
            )
            .await?;
        let (spec, public_key) = public_key_of(&key)?;
        let algorithm = signing_algorithm(algorithm, spec)?;
        check_message(message, message_type, algorithm)?;
        let valid = asymmetric::verify(
            spec,
            &public_key,
            algorithm,
            message_type,
            message,
            signature,
        )
        .map_err(|err| KmsError::Validation(err.to_string()))?;
        if !valid {
            return Err(KmsError::InvalidSignature);
        }
        Ok((arn, algorithm.as_str()))
    }

    pub async fn get_key_rotation_status(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<RotationStatus, KmsError> {
        let (location, key) = self
            .authorized_key(caller, key_ref, "kms:GetKeyRotationStatus")
            .await?;
        refuse_unrotatable(&key.record)?;
        Ok(RotationStatus {
            key_rotation_enabled: key.record.rotation_enabled,
            key_id: self.key_arn(&location),
            rotation_period_in_days: key.record.rotation_period_days,
            next_rotation_date: key.record.next_rotation,
        })
    }

    pub async fn rotate_key_on_demand(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<String, KmsError> {
        let (location, key) = self
            .authorized_key(caller, key_ref, "kms:RotateKeyOnDemand")
            .await?;
        let arn = self.key_arn(&location);
        refuse_unrotatable(&key.record)?;
        require_enabled(&key, &arn)?;
        let on_demand = key
            .record
            .versions
            .iter()
            .filter(|version| version.rotation == Some(RotationType::OnDemand))
            .count();
        if on_demand >= MAX_ON_DEMAND_ROTATIONS {
            return Err(KmsError::LimitExceeded(format!(
                "{arn} has reached the limit of {MAX_ON_DEMAND_ROTATIONS} on-demand rotations."
            )));
        }
        self.add_version(&location, RotationType::OnDemand).await?;
        Ok(arn)
    }

    /// Adds a key version with fresh material. Used by on-demand and scheduled rotation.
    pub(crate) async fn add_version(
        &self,
        location: &KeyLocation,
        rotation: RotationType,
    ) -> Result<KeyRecord, KmsError> {
        let now = self.now();
        self.update_key(location, |record, sealed| {
            refuse_unrotatable(record)?;
            if record.state != KeyState::Enabled {
                return Err(KmsError::InvalidState(format!(
                    "{} is {}.",
                    record.key_id,
                    record.state.as_str()
                )));
            }
            let id = record.current_version().unwrap_or(0) + 1;
            let material = KeyMaterial::generate();
            sealed.insert(
                KeyRecord::material_slot(id),
                self.wrap_material(location, id, material.expose())?,
            );
            record.versions.push(KeyVersion {
                id,
                created: now,
                rotation: Some(rotation),
            });
            if rotation == RotationType::Automatic
                && let Some(days) = record.rotation_period_days
            {
                record.next_rotation = Some(now + i64::from(days) * 86_400);
            }
            Ok(())
        })
        .await
    }

    pub async fn list_key_rotations(
        &self,
        caller: &Caller,
        key_ref: &str,
        limit: Option<i64>,
        marker: Option<&str>,
    ) -> Result<Page<RotationEntry>, KmsError> {
        let (location, key) = self
            .authorized_key(caller, key_ref, "kms:ListKeyRotations")
            .await?;
        refuse_unrotatable(&key.record)?;
        let arn = self.key_arn(&location);
        let rotations = key
            .record
            .versions
            .iter()
            .filter_map(|version| {
                version.rotation.map(|rotation_type| {
                    (
                        format!("{:010}", version.id),
                        RotationEntry {
                            key_id: arn.clone(),
                            rotation_date: version.created,
                            rotation_type,
                        },
                    )
                })
            })
            .collect();
        paginate(rotations, limit, marker, 1000, 100)
    }

    pub async fn get_parameters_for_import(
        &self,
        caller: &Caller,
        key_ref: &str,
        wrapping_algorithm: &str,
        wrapping_key_spec: &str,
    ) -> Result<ImportParameters, KmsError> {
        let algorithm = wrapping_algorithm.parse::<EncryptionAlgorithm>().ok().ok_or_else(|| {
            KmsError::Validation(format!(
                "WrappingAlgorithm {} is not supported; use RSAES_OAEP_SHA_1 or RSAES_OAEP_SHA_256.",
                crate::engine::text::truncate(wrapping_algorithm)
            ))
        })?;
        let spec = match KeySpec::parse(wrapping_key_spec) {
            Some(spec) if spec.is_rsa() => spec.asymmetric(),
            _ => None,
        }
        .ok_or_else(|| {
            KmsError::Validation(format!(
                "WrappingKeySpec {} is not supported.",
                crate::engine::text::truncate(wrapping_key_spec)
            ))
        })?;
        let (location, key) = self
            .authorized_key(caller, key_ref, "kms:GetParametersForImport")
            .await?;
        refuse_not_external(&key.record)?;
        refuse_deleted(&key.record)?;
        let pair = tokio::task::spawn_blocking(move || asymmetric::generate(spec))
            .await
            .map_err(|err| KmsError::fault("key generation task", err))??;
        let token = SecretBytes::random(64);
        let token_sha256 = hex_sha256(token.expose());
        let valid_to = self.now() + IMPORT_PARAMETERS_LIFETIME;
        let wrapped_private =
            self.wrap_slot(&location, IMPORT_WRAPPING_SLOT, &pair.private_pkcs8_der)?;
        self.update_key(&location, |record, sealed| {
            refuse_deleted(record)?;
            record.pending_import = Some(PendingImport {
                token_sha256: token_sha256.clone(),
                wrapping_algorithm: algorithm.as_str().to_owned(),
                wrapping_key_spec: spec.as_str().to_owned(),
                valid_to,
            });
            sealed.insert(IMPORT_WRAPPING_SLOT.to_owned(), wrapped_private.clone());
            Ok(())
        })
        .await?;
        Ok(ImportParameters {
            key_arn: self.key_arn(&location),
            import_token: token.expose().to_vec(),
            public_key: pair.public_spki_der.clone(),
            valid_to,
        })
    }

    pub async fn import_key_material(
        &self,
        caller: &Caller,
        key_ref: &str,
        import_token: &[u8],
        encrypted_key_material: &[u8],
        valid_to: Option<i64>,
        expiration_model: Option<&str>,
    ) -> Result<(), KmsError> {
        let expiration_model = match (expiration_model, valid_to) {
            (None, None) => ExpirationModel::KeyMaterialDoesNotExpire,
            (None, Some(_)) => ExpirationModel::KeyMaterialExpires,
            (Some(text), _) => ExpirationModel::parse(text).ok_or_else(|| {
                KmsError::Validation(format!(
                    "ExpirationModel {} is not valid.",
                    crate::engine::text::truncate(text)
                ))
            })?,
        };
        let now = self.now();
        match (expiration_model, valid_to) {
            (ExpirationModel::KeyMaterialExpires, None) => {
                return Err(KmsError::Validation(
                    "ValidTo is required when key material expires.".into(),
                ));
            }
            (ExpirationModel::KeyMaterialDoesNotExpire, Some(_)) => {
                return Err(KmsError::Validation(
                    "ValidTo must not be set when key material does not expire.".into(),
                ));
            }
            (_, Some(valid_to)) if valid_to <= now => {
                return Err(KmsError::Validation(
                    "ValidTo must be in the future.".into(),
                ));
            }
            _ => {}
        }
        let (location, key) = self
            .authorized_key(caller, key_ref, "kms:ImportKeyMaterial")
            .await?;
        refuse_not_external(&key.record)?;
        refuse_deleted(&key.record)?;
        let pending = key
            .record
            .pending_import
            .clone()
            .ok_or(KmsError::InvalidImportToken)?;
        let presented = hex_sha256(import_token);
        if !bool::from(presented.as_bytes().ct_eq(pending.token_sha256.as_bytes())) {
            return Err(KmsError::InvalidImportToken);
        }
        if pending.valid_to <= now {
            return Err(KmsError::ExpiredImportToken);
        }
        let record = self
            .store
            .get(&super::key_record_key(&location))
            .await?
            .ok_or_else(|| KmsError::NotFound("key vanished".into()))?;
        let wrapped_private = record
            .value
            .sealed
            .get(IMPORT_WRAPPING_SLOT)
            .ok_or(KmsError::InvalidImportToken)?;
        let private_key = self.unwrap_slot(&location, IMPORT_WRAPPING_SLOT, wrapped_private)?;
        let algorithm = pending
            .wrapping_algorithm
            .parse::<EncryptionAlgorithm>()
            .ok()
            .ok_or_else(|| KmsError::fault_at("stored wrapping algorithm"))?;
        let spec = KeySpec::parse(&pending.wrapping_key_spec)
            .and_then(KeySpec::asymmetric)
            .ok_or_else(|| KmsError::fault_at("stored wrapping key spec"))?;
        let material = asymmetric::decrypt(
            spec,
            private_key.expose(),
            algorithm,
            encrypted_key_material,
        )
        .map_err(|_| KmsError::InvalidCiphertext)?;
        if material.len() != IMPORTED_MATERIAL_LEN {
            return Err(KmsError::IncorrectKeyMaterial(
                "Imported key material must be 256 bits (32 bytes).".into(),
            ));
        }
        // Re-importing must bring back the same material, or old ciphertexts would be lost.
        if let Some(previous) = record.value.sealed.get(&KeyRecord::material_slot(1)) {
            let previous = self.unwrap_slot(&location, &KeyRecord::material_slot(1), previous)?;
            if !bool::from(previous.expose().ct_eq(material.as_slice())) {
                return Err(KmsError::IncorrectKeyMaterial(
                    "The key material is not the material previously imported into this key."
                        .into(),
                ));
            }
        }
        let wrapped_material = self.wrap_material(&location, 1, &material)?;
        let token_sha256 = pending.token_sha256.clone();
        self.update_key(&location, |record, sealed| {
            if record.pending_import.as_ref().map(|p| &p.token_sha256) != Some(&token_sha256) {
                return Err(KmsError::InvalidImportToken);
            }
            refuse_deleted(record)?;
            sealed.insert(KeyRecord::material_slot(1), wrapped_material.clone());
            sealed.remove(IMPORT_WRAPPING_SLOT);
            if record.versions.is_empty() {
                record.versions.push(KeyVersion {
                    id: 1,
                    created: now,
                    rotation: None,
                });
            }
            record.pending_import = None;
            record.expiration_model = Some(expiration_model);
            record.valid_to = valid_to;
            if record.state == KeyState::PendingImport {
                record.state = KeyState::Enabled;
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }

    pub async fn delete_imported_key_material(
        &self,
        caller: &Caller,
        key_ref: &str,
    ) -> Result<(), KmsError> {
        let location = self.resolve(caller, key_ref).await?;
        let key = self.load(&location).await?;
        self.authorize(
            caller,
            &key,
            "kms:DeleteImportedKeyMaterial",
            &BTreeMap::new(),
        )
        .await?;
        refuse_not_external(&key.record)?;
        refuse_deleted(&key.record)?;
        self.update_key(&location, |record, sealed| {
            refuse_deleted(record)?;
            remove_imported_material(record, sealed);
            Ok(())
        })
        .await
        .map(|_| ())
    }
}

/// Drops imported material: the key waits for an import again.
pub(crate) fn remove_imported_material(
    record: &mut KeyRecord,
    sealed: &mut BTreeMap<String, Vec<u8>>,
) {
    sealed.retain(|slot, _| slot == IMPORT_WRAPPING_SLOT);
    record.versions.clear();
    record.state = KeyState::PendingImport;
    record.valid_to = None;
    record.expiration_model = None;
}

/// ReEncrypt's answer.
pub struct ReEncrypted {
    pub ciphertext: Vec<u8>,
    pub source_key_arn: String,
    pub key_arn: String,
    pub source_algorithm: &'static str,
    pub destination_algorithm: &'static str,
}

/// GetPublicKey's answer.
pub struct PublicKeyInfo {
    pub key_id: String,
    pub public_key: Vec<u8>,
    pub key_spec: KeySpec,
    pub key_usage: KeyUsage,
    pub encryption_algorithms: Vec<&'static str>,
    pub signing_algorithms: Vec<&'static str>,
}

tokio::task_local! {
    /// Within ReEncrypt, the action its Decrypt and Encrypt steps are authorized as.
    pub(crate) static ACTION_OVERRIDE: &'static str;
}

/// The action to authorize: `action`, unless a ReEncrypt step stands in for it.
pub(crate) fn effective_action(action: &str) -> String {
    ACTION_OVERRIDE
        .try_with(|overridden| (*overridden).to_owned())
        .unwrap_or_else(|_| action.to_owned())
}

fn refuse_not_external(record: &KeyRecord) -> Result<(), KmsError> {
    if record.origin != Origin::External {
        return Err(KmsError::UnsupportedOperation(format!(
            "{} does not have imported key material (Origin is not EXTERNAL).",
            record.key_id
        )));
    }
    Ok(())
}

fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

fn public_key_of(key: &LoadedKey) -> Result<(asymmetric::KeySpec, Vec<u8>), KmsError> {
    let spec = key.record.key_spec.asymmetric().ok_or_else(|| {
        KmsError::InvalidKeyUsage("This operation needs an asymmetric key.".into())
    })?;
    let public_key = key
        .record
        .public_key
        .as_deref()
        .ok_or_else(|| KmsError::fault_at("asymmetric key without public key"))?;
    let der = STANDARD
        .decode(public_key)
        .map_err(|_| KmsError::fault_at("stored public key is not base64"))?;
    Ok((spec, der))
}

fn private_key_of(key: &LoadedKey) -> Result<(asymmetric::KeySpec, &SecretBytes), KmsError> {
    let spec = key.record.key_spec.asymmetric().ok_or_else(|| {
        KmsError::InvalidKeyUsage("This operation needs an asymmetric key.".into())
    })?;
    let private_key = key
        .private_key
        .as_ref()
        .ok_or_else(|| KmsError::fault_at("asymmetric key without private key"))?;
    Ok((spec, private_key))
}

fn parse_message_type(text: Option<&str>) -> Result<MessageType, KmsError> {
    match text {
        None | Some("RAW") => Ok(MessageType::Raw),
        Some("DIGEST") => Ok(MessageType::Digest),
        Some(other) => Err(KmsError::Validation(format!(
            "MessageType {} is not RAW or DIGEST.",
            crate::engine::text::truncate(other)
        ))),
    }
}

fn signing_algorithm(text: &str, spec: asymmetric::KeySpec) -> Result<SigningAlgorithm, KmsError> {
    let algorithm = text.parse::<SigningAlgorithm>().ok().ok_or_else(|| {
        KmsError::Validation(format!(
            "SigningAlgorithm {} is not valid.",
            crate::engine::text::truncate(text)
        ))
    })?;
    if !asymmetric::signing_algorithms(spec).contains(&algorithm) {
        return Err(KmsError::InvalidKeyUsage(format!(
            "SigningAlgorithm {} is not valid for this key.",
            algorithm.as_str()
        )));
    }
    Ok(algorithm)
}

fn check_message(
    message: &[u8],
    message_type: MessageType,
    _algorithm: SigningAlgorithm,
) -> Result<(), KmsError> {
    if message.is_empty() || (message_type == MessageType::Raw && message.len() > MAX_PLAINTEXT) {
        return Err(KmsError::Validation(
            "Message must be between 1 and 4096 bytes.".into(),
        ));
    }
    Ok(())
}
