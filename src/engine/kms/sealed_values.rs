//! Opening sealed values (a Secret resource's `spec.sealedValue`): blobs a user sealed offline to
//! the public key of an RSA KmsKey of the resource's namespace (src/crypto/sealed.rs,
//! docs/sealed-values.md). The private key never leaves the engine; the controller hands in the
//! blob and gets the plaintext.

use super::model::KeyUsage;
use super::operations::{require_enabled, require_usage};
use super::{KeyLocation, Kms, KmsError};
use crate::crypto::asymmetric;
use crate::crypto::{SealTarget, SealedValue, SecretBytes};

impl Kms {
    /// Opens `blob`, sealed for `target`, with the private key of the KmsKey it names, which is
    /// looked up in `namespace` only: the resource's own namespace, the same as
    /// `target.namespace` (a blob is refused otherwise).
    ///
    /// No caller is authorized here: the controller acts for the resource's namespace. The sealer
    /// chose a key of that namespace, and only someone who may write the Secret resource in that
    /// namespace gets to submit a blob, which opens only for that namespace and resource name.
    ///
    /// A malformed or tampered blob, one sealed to another key, or one sealed for another
    /// namespace or name is [`KmsError::InvalidCiphertext`], with no detail; an unknown key is
    /// [`KmsError::NotFound`]; a key that is not enabled, or not an RSA `ENCRYPT_DECRYPT` key,
    /// is refused as KMS Decrypt refuses it.
    pub async fn open_sealed(
        &self,
        namespace: &str,
        target: &SealTarget<'_>,
        blob: &[u8],
    ) -> Result<SecretBytes, KmsError> {
        if namespace != target.namespace {
            return Err(KmsError::InvalidCiphertext);
        }
        let sealed = SealedValue::parse(blob).map_err(|_| KmsError::InvalidCiphertext)?;
        // Coffer's key ids are lowercase hyphenated UUIDs; a blob naming anything else was not
        // sealed to a Coffer key.
        let key_id = sealed.key_id();
        if !is_canonical_key_id(key_id) {
            return Err(KmsError::InvalidCiphertext);
        }
        let location = KeyLocation {
            namespace: namespace.to_owned(),
            key_id: key_id.to_owned(),
        };
        let key = self.load(&location).await?;
        let arn = key.arn.clone();
        require_enabled(&key, &arn)?;
        require_usage(&key, KeyUsage::EncryptDecrypt, &arn)?;
        let spec = key
            .record
            .key_spec
            .asymmetric()
            .filter(|spec| spec.is_rsa())
            .ok_or_else(|| {
                KmsError::InvalidKeyUsage(format!(
                    "{arn} is not an RSA key; sealed values need one."
                ))
            })?;
        let private_key = key
            .private_key
            .as_ref()
            .ok_or_else(|| KmsError::fault_at("asymmetric key without private key"))?;
        sealed
            .open(spec, target, |algorithm, wrapped| {
                asymmetric::decrypt(spec, private_key.expose(), algorithm, wrapped)
            })
            .map_err(|_| KmsError::InvalidCiphertext)
    }
}

/// Whether `key_id` is a UUID in the form Coffer writes key ids.
fn is_canonical_key_id(key_id: &str) -> bool {
    uuid::Uuid::try_parse(key_id).is_ok_and(|uuid| uuid.hyphenated().to_string() == key_id)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::crypto::RootKeyring;
    use crate::crypto::sealed::seal;
    use crate::engine::Caller;
    use crate::engine::account::account_id;
    use crate::engine::iam::Principal;
    use crate::engine::kms::CreateKeyRequest;
    use crate::store::{EmbeddedStore, Store};
    use crate::test_support::engine::{ManualClock, NameAuthority, caller};

    const TARGET: SealTarget<'static> = SealTarget {
        namespace: "default",
        resource_name: "db-password",
    };

    struct Fixture {
        _dir: tempfile::TempDir,
        kms: Kms,
        admin: Caller,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let kms = Kms::new(
            store,
            Arc::new(RootKeyring::generate()),
            Arc::new(NameAuthority),
            Arc::new(ManualClock::at(1_800_000_000)),
            "us-east-1",
        );
        Fixture {
            _dir: dir,
            kms,
            admin: caller("admin"),
        }
    }

    /// An administrator of another namespace.
    fn admin_of(namespace: &str) -> Caller {
        Caller {
            namespace: namespace.into(),
            principal: Principal {
                arn: format!("arn:aws:iam::{}:user/admin", account_id(namespace)),
                account_id: account_id(namespace),
            },
            access_key_id: None,
            secure_transport: false,
        }
    }

    async fn key(f: &Fixture, caller: &Caller, spec: &str, usage: &str) -> String {
        f.kms
            .create_key(
                caller,
                CreateKeyRequest {
                    key_spec: Some(spec.into()),
                    key_usage: Some(usage.into()),
                    ..CreateKeyRequest::default()
                },
            )
            .await
            .unwrap()
            .key_id
    }

    /// Seals as a user would: GetPublicKey, then seal offline.
    async fn sealed_to(
        f: &Fixture,
        caller: &Caller,
        key_id: &str,
        target: &SealTarget<'_>,
        plaintext: &[u8],
    ) -> Vec<u8> {
        let public = f.kms.get_public_key(caller, key_id).await.unwrap();
        let spec = public.key_spec.asymmetric().unwrap();
        seal(&public.public_key, spec, key_id, target, plaintext).unwrap()
    }

    #[tokio::test]
    async fn opens_what_was_sealed_to_each_rsa_size() {
        let f = fixture();
        for spec in ["RSA_2048", "RSA_3072", "RSA_4096"] {
            let key_id = key(&f, &f.admin, spec, "ENCRYPT_DECRYPT").await;
            let blob = sealed_to(&f, &f.admin, &key_id, &TARGET, b"s3cret").await;
            let opened = f.kms.open_sealed("default", &TARGET, &blob).await.unwrap();
            assert_eq!(opened.expose(), b"s3cret", "{spec}");
        }
    }

    #[tokio::test]
    async fn another_namespace_or_name_is_invalid_ciphertext() {
        let f = fixture();
        let key_id = key(&f, &f.admin, "RSA_2048", "ENCRYPT_DECRYPT").await;
        let blob = sealed_to(&f, &f.admin, &key_id, &TARGET, b"s3cret").await;
        let renamed = SealTarget {
            resource_name: "other",
            ..TARGET
        };
        let moved = SealTarget {
            namespace: "other",
            ..TARGET
        };
        assert!(matches!(
            f.kms.open_sealed("default", &renamed, &blob).await,
            Err(KmsError::InvalidCiphertext)
        ));
        // The key is looked up in the resource's namespace only, where it is not.
        assert!(matches!(
            f.kms.open_sealed("other", &moved, &blob).await,
            Err(KmsError::NotFound(_))
        ));
        // A key namespace other than the target's is refused outright.
        assert!(matches!(
            f.kms.open_sealed("default", &moved, &blob).await,
            Err(KmsError::InvalidCiphertext)
        ));
    }

    #[tokio::test]
    async fn a_key_of_another_namespace_is_not_found() {
        let f = fixture();
        let stranger = admin_of("other");
        let key_id = key(&f, &stranger, "RSA_2048", "ENCRYPT_DECRYPT").await;
        let blob = sealed_to(&f, &stranger, &key_id, &TARGET, b"s3cret").await;
        assert!(matches!(
            f.kms.open_sealed("default", &TARGET, &blob).await,
            Err(KmsError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn tampered_truncated_or_misaddressed_blobs_are_invalid_ciphertext() {
        let f = fixture();
        let key_id = key(&f, &f.admin, "RSA_2048", "ENCRYPT_DECRYPT").await;
        let other_id = key(&f, &f.admin, "RSA_2048", "ENCRYPT_DECRYPT").await;
        let blob = sealed_to(&f, &f.admin, &key_id, &TARGET, b"s3cret").await;
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        // Sealed to one key's public key, but naming another key.
        let public = f.kms.get_public_key(&f.admin, &key_id).await.unwrap();
        let misaddressed = seal(
            &public.public_key,
            asymmetric::KeySpec::Rsa2048,
            &other_id,
            &TARGET,
            b"s3cret",
        )
        .unwrap();
        let upper = seal(
            &public.public_key,
            asymmetric::KeySpec::Rsa2048,
            &key_id.to_uppercase(),
            &TARGET,
            b"s3cret",
        )
        .unwrap();
        for bad in [
            &b""[..],
            b"CSV1",
            &blob[..blob.len() / 2],
            &blob[..blob.len() - 1],
            &tampered,
            &misaddressed,
            &upper,
        ] {
            assert!(matches!(
                f.kms.open_sealed("default", &TARGET, bad).await,
                Err(KmsError::InvalidCiphertext)
            ));
        }
    }

    #[tokio::test]
    async fn an_unknown_key_is_not_found() {
        let f = fixture();
        let key_id = key(&f, &f.admin, "RSA_2048", "ENCRYPT_DECRYPT").await;
        let public = f.kms.get_public_key(&f.admin, &key_id).await.unwrap();
        let unknown = uuid::Uuid::new_v4().to_string();
        let blob = seal(
            &public.public_key,
            asymmetric::KeySpec::Rsa2048,
            &unknown,
            &TARGET,
            b"s3cret",
        )
        .unwrap();
        assert!(matches!(
            f.kms.open_sealed("default", &TARGET, &blob).await,
            Err(KmsError::NotFound(_))
        ));
    }

    #[tokio::test]
    async fn a_disabled_key_is_refused_until_enabled() {
        let f = fixture();
        let key_id = key(&f, &f.admin, "RSA_2048", "ENCRYPT_DECRYPT").await;
        let blob = sealed_to(&f, &f.admin, &key_id, &TARGET, b"s3cret").await;
        f.kms.disable_key(&f.admin, &key_id).await.unwrap();
        assert!(matches!(
            f.kms.open_sealed("default", &TARGET, &blob).await,
            Err(KmsError::Disabled(_))
        ));
        f.kms.enable_key(&f.admin, &key_id).await.unwrap();
        let opened = f.kms.open_sealed("default", &TARGET, &blob).await.unwrap();
        assert_eq!(opened.expose(), b"s3cret");
    }

    #[tokio::test]
    async fn signing_and_symmetric_keys_are_refused() {
        let f = fixture();
        let signing = key(&f, &f.admin, "RSA_2048", "SIGN_VERIFY").await;
        let blob = sealed_to(&f, &f.admin, &signing, &TARGET, b"s3cret").await;
        assert!(matches!(
            f.kms.open_sealed("default", &TARGET, &blob).await,
            Err(KmsError::InvalidKeyUsage(_))
        ));

        let symmetric = f
            .kms
            .create_key(&f.admin, CreateKeyRequest::default())
            .await
            .unwrap()
            .key_id;
        let rsa = key(&f, &f.admin, "RSA_2048", "ENCRYPT_DECRYPT").await;
        let public = f.kms.get_public_key(&f.admin, &rsa).await.unwrap();
        let blob = seal(
            &public.public_key,
            asymmetric::KeySpec::Rsa2048,
            &symmetric,
            &TARGET,
            b"s3cret",
        )
        .unwrap();
        assert!(matches!(
            f.kms.open_sealed("default", &TARGET, &blob).await,
            Err(KmsError::InvalidKeyUsage(_))
        ));
    }

    #[test]
    fn only_lowercase_hyphenated_uuids_are_key_ids() {
        assert!(is_canonical_key_id("0b9f3c1e-6d2a-4f5b-8c7d-9e0a1b2c3d4e"));
        for other in [
            "0B9F3C1E-6D2A-4F5B-8C7D-9E0A1B2C3D4E",
            "0b9f3c1e6d2a4f5b8c7d9e0a1b2c3d4e",
            "{0b9f3c1e-6d2a-4f5b-8c7d-9e0a1b2c3d4e}",
            "urn:uuid:0b9f3c1e-6d2a-4f5b-8c7d-9e0a1b2c3d4e",
            "alias/mine",
            "",
        ] {
            assert!(!is_canonical_key_id(other), "{other}");
        }
    }
}
