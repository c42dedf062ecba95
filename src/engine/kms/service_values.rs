//! Values that other services keep (secret versions, later SecureString parameters), sealed
//! under a KMS key on a caller's behalf, as AWS's services call KMS for the caller.
//!
//! - With a key the caller names (a customer key), sealing needs `kms:GenerateDataKey` on it and
//!   opening needs `kms:Decrypt`, under the key's policy, as in AWS.
//! - Without one, the account's managed key for the service (`alias/aws/<service>`) is used,
//!   created on first use with a fixed key id, so that concurrent first uses agree. It serves
//!   only its own account's values: AWS refuses managed keys across accounts too.
//!
//! Every value is bound to the resource and version it belongs to (the envelope's associated
//! data) and to an encryption context naming them, which key policies can test.

use std::collections::BTreeMap;

use sha2::{Digest as _, Sha256};

use super::lifecycle::NewKey;
use super::{KeyLocation, Kms, KmsError, key_record_key};
use super::{KeySpec, KeyUsage, Origin};
use crate::crypto::{Binding, KeyRef, ResourceIdentity, SecretBytes, open, parse_header, seal};
use crate::engine::Caller;
use crate::engine::account::account_id;
use crate::engine::kms::policy::KeyPolicy;
use crate::store::StoreError;
use crate::store::typed;

/// How many times a first use that lost the race to make a managed key waits to see it.
const MANAGED_KEY_WAITS: u64 = 20;

/// The services that keep values under a managed key of their own.
pub(crate) const MANAGED_SERVICES: [&str; 2] = ["secretsmanager", "ssm"];

/// On whose behalf a value is sealed or opened.
#[derive(Clone, Copy)]
enum Actor<'a> {
    /// A caller of the API, whose access the key's policy decides.
    Caller(&'a Caller),
    /// The account the value belongs to, through the controller applying a resource.
    Account,
}

impl<'a> Actor<'a> {
    /// The controller acting for its account is the account; anyone else is a caller.
    fn of(caller: &'a Caller) -> Self {
        if caller.acts_for_account() {
            Actor::Account
        } else {
            Actor::Caller(caller)
        }
    }
}

/// What a service-held value belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceValue {
    /// The service, as in its managed key's alias: `secretsmanager`, `ssm`.
    pub service: &'static str,
    /// Bound into the envelope: kind, namespace, name and version of the value.
    pub resource: ResourceIdentity,
    /// The encryption context key policies see, such as `SecretARN` and `SecretVersionId`.
    pub context: BTreeMap<String, String>,
}

impl ServiceValue {
    fn binding(&self) -> Binding {
        Binding::resource(self.resource.clone()).with_context(self.context.clone())
    }
}

impl Kms {
    /// The alias of `service`'s managed key in every account.
    pub fn managed_alias(service: &str) -> String {
        format!("alias/aws/{service}")
    }

    /// Seals `plaintext` for `value` under `key_ref`, or under the caller account's managed key
    /// for the service when `key_ref` is `None`. Returns the blob and the key's ARN.
    pub async fn seal_value(
        &self,
        caller: &Caller,
        key_ref: Option<&str>,
        value: &ServiceValue,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, String), KmsError> {
        self.seal_value_as(Actor::of(caller), key_ref, value, plaintext)
            .await
    }

    /// Seals as [`Kms::seal_value`] does, for the account that `value` belongs to rather than
    /// for a caller: the controller applying a resource's spec. Only keys of that account are
    /// reached, and their policies are not asked: whoever may write the resource in that
    /// namespace chose the key, as the KmsKey reconciler applies a spec without a caller.
    pub async fn seal_value_for_account(
        &self,
        key_ref: Option<&str>,
        value: &ServiceValue,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, String), KmsError> {
        self.seal_value_as(Actor::Account, key_ref, value, plaintext)
            .await
    }

    async fn seal_value_as(
        &self,
        actor: Actor<'_>,
        key_ref: Option<&str>,
        value: &ServiceValue,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, String), KmsError> {
        let account = Caller::account_of(&value.resource.namespace);
        let resolver = match actor {
            Actor::Caller(caller) => caller,
            Actor::Account => &account,
        };
        let location = match key_ref {
            Some(key_ref) => self.resolve(resolver, key_ref).await?,
            None => {
                self.managed_key(&value.resource.namespace, value.service)
                    .await?
            }
        };
        if matches!(actor, Actor::Account) && location.namespace != value.resource.namespace {
            return Err(KmsError::AccessDenied(
                "A resource's value can be sealed only under a key of its own namespace.".into(),
            ));
        }
        let key = self.load(&location).await?;
        if let Actor::Caller(caller) = actor
            && !self.is_managed(&location, value.service)
        {
            self.authorize(caller, &key, "kms:GenerateDataKey", &value.context)
                .await?;
        }
        let arn = key.arn.clone();
        super::operations::require_enabled(&key, &arn)?;
        super::operations::require_usage(&key, KeyUsage::EncryptDecrypt, &arn)?;
        if key.record.key_spec != KeySpec::SymmetricDefault {
            return Err(KmsError::InvalidKeyUsage(format!(
                "{arn} is not a symmetric encryption key."
            )));
        }
        let (version, material) = key
            .symmetric
            .last_key_value()
            .ok_or_else(|| KmsError::fault_at("enabled key has no material"))?;
        let blob_key_id = Kms::blob_key_id(&location);
        let blob = seal(
            KeyRef {
                key_id: &blob_key_id,
                version: *version,
                material,
            },
            &value.binding(),
            plaintext,
        )?;
        Ok((blob, arn))
    }

    /// Opens a blob [`Kms::seal_value`] made for `value`.
    pub async fn open_value(
        &self,
        caller: &Caller,
        value: &ServiceValue,
        blob: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        self.open_value_as(Actor::of(caller), value, blob).await
    }

    /// Opens a blob for the account `value` belongs to, as [`Kms::seal_value_for_account`]
    /// seals: only under a key of that account, without asking its policy.
    pub async fn open_value_for_account(
        &self,
        value: &ServiceValue,
        blob: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        self.open_value_as(Actor::Account, value, blob).await
    }

    async fn open_value_as(
        &self,
        actor: Actor<'_>,
        value: &ServiceValue,
        blob: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        let header = parse_header(blob).map_err(|_| KmsError::InvalidCiphertext)?;
        let location = Kms::parse_blob_key_id(&header.key_id).ok_or(KmsError::InvalidCiphertext)?;
        let key = self.load(&location).await?;
        match actor {
            Actor::Account if location.namespace != value.resource.namespace => {
                return Err(KmsError::AccessDenied(
                    "A resource's value opens only under a key of its own namespace.".into(),
                ));
            }
            Actor::Account => {}
            Actor::Caller(caller) if self.is_managed(&location, value.service) => {
                if caller.namespace != location.namespace {
                    return Err(KmsError::AccessDenied(format!(
                        "{} cannot be used from another account; share values under a customer managed key.",
                        key.arn
                    )));
                }
            }
            Actor::Caller(caller) => {
                self.authorize(caller, &key, "kms:Decrypt", &value.context)
                    .await?;
            }
        }
        let arn = key.arn.clone();
        super::operations::require_enabled(&key, &arn)?;
        let material = key
            .symmetric
            .get(&header.key_version)
            .ok_or(KmsError::InvalidCiphertext)?;
        open(material, &value.binding(), blob).map_err(|_| KmsError::InvalidCiphertext)
    }

    /// The managed key an `alias/aws/SERVICE` names, for the services that have one.
    pub(crate) fn managed_alias_target(namespace: &str, alias_name: &str) -> Option<KeyLocation> {
        let service = alias_name.strip_prefix("alias/aws/")?;
        MANAGED_SERVICES
            .contains(&service)
            .then(|| Kms::managed_key_location(namespace, service))
    }

    /// Whether a key is a service's managed key, which no caller and no resource deletes.
    pub(crate) fn is_service_managed(location: &KeyLocation) -> bool {
        MANAGED_SERVICES
            .iter()
            .any(|service| *location == Kms::managed_key_location(&location.namespace, service))
    }

    /// The key id of `service`'s managed key in `namespace`: derived, not random, so that every
    /// replica and every concurrent first use name the same key.
    pub(crate) fn managed_key_location(namespace: &str, service: &str) -> KeyLocation {
        let digest = Sha256::digest(format!("coffer/managed-key/{namespace}/{service}"));
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(digest.get(..16).unwrap_or(&[0; 16]));
        KeyLocation {
            namespace: namespace.to_owned(),
            key_id: uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .to_string(),
        }
    }

    fn is_managed(&self, location: &KeyLocation, service: &str) -> bool {
        *location == Kms::managed_key_location(&location.namespace, service)
    }

    /// The managed key of `service` in `namespace`, created (with its alias) when absent.
    pub(crate) async fn managed_key(
        &self,
        namespace: &str,
        service: &'static str,
    ) -> Result<KeyLocation, KmsError> {
        let location = Kms::managed_key_location(namespace, service);
        match self.load(&location).await {
            Ok(_) => return Ok(location),
            Err(KmsError::NotFound(_)) => {}
            Err(other) => return Err(other),
        }
        let (record, sealed) = self
            .new_key(
                &location,
                NewKey {
                    description: format!(
                        "Default key that protects my {service} data when no other key is defined"
                    ),
                    key_spec: KeySpec::SymmetricDefault,
                    key_usage: KeyUsage::EncryptDecrypt,
                    origin: Origin::Generated,
                    policy: KeyPolicy::default_document(&account_id(namespace)),
                    tags: BTreeMap::new(),
                },
            )
            .await?;
        // Its alias `alias/aws/SERVICE` is derived, never stored: a KmsKey cannot hold an
        // `aws/` alias, and every replica must agree on it without a write.
        match typed::create(
            self.store.as_ref(),
            &key_record_key(&location),
            &record,
            sealed,
        )
        .await
        {
            Ok(_) => Ok(location),
            // A concurrent first use made it: wait until this replica's store shows it, or the
            // load that follows would find nothing.
            Err(StoreError::AlreadyExists(_)) => {
                for attempt in 0..MANAGED_KEY_WAITS {
                    match self.load(&location).await {
                        Ok(_) => return Ok(location),
                        Err(KmsError::NotFound(_)) => {
                            tokio::time::sleep(std::time::Duration::from_millis(
                                20 * (attempt + 1),
                            ))
                            .await;
                        }
                        Err(other) => return Err(other),
                    }
                }
                Ok(location)
            }
            Err(other) => Err(other.into()),
        }
    }
}
