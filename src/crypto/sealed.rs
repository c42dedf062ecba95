//! Sealed values: a secret encrypted offline to the public key of an RSA key, bound to two
//! strings (a namespace and a resource name), so that only the holder of the private key opens
//! it, and only for that binding. The format is described for users in docs/sealed-values.md.
//!
//! # Blob layout (version 1)
//!
//! | field          | size      | notes                                                    |
//! |----------------|-----------|----------------------------------------------------------|
//! | magic          | 4         | `CSV1`                                                   |
//! | key id         | 1 + 1..64 | u8 length, then printable ASCII                          |
//! | wrapped key    | 2 + k     | u16 big-endian length (the RSA modulus size `k`), then   |
//! |                |           | RSAES-OAEP-SHA-256 of a fresh 64-byte AES-256-SIV key    |
//! | SIV ciphertext | rest      | AES-256-SIV (tag, then ciphertext) of the plaintext      |
//!
//! The SIV associated data is, in order: the binding
//! `"coffer.dev/sealed-value/v1" 0x00 namespace 0x00 resource_name`, then the header (every
//! byte before the SIV ciphertext). The binding is not stored: whoever opens presents it.
//!
//! Unlike the envelope format, no key commitment is needed: the SIV key is what the one RSA
//! private key decrypts from the blob, so a blob can open under one SIV key only.

use std::fmt;

use zeroize::Zeroizing;

use super::asymmetric::{self, AsymmetricError, EncryptionAlgorithm, KeySpec};
use super::secret::{KeyMaterial, SecretBytes};
use super::wrap::siv;

/// Marks a sealed value, version 1.
pub const MAGIC: [u8; 4] = *b"CSV1";
/// Longest key id a blob carries.
pub const MAX_KEY_ID_LEN: usize = 64;
/// Largest plaintext a blob carries: 64 KiB, Secrets Manager's limit for a secret value.
pub const MAX_PLAINTEXT_LEN: usize = 64 * 1024;
/// How the SIV key is wrapped under the RSA public key.
pub const KEY_WRAP_ALGORITHM: EncryptionAlgorithm = EncryptionAlgorithm::RsaesOaepSha256;

const BINDING_LABEL: &[u8] = b"coffer.dev/sealed-value/v1";
const SIV_TAG_LEN: usize = 16;

/// What a sealed value is bound to. Neither string may contain NUL, which separates them in the
/// associated data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealTarget<'a> {
    /// First binding string (the namespace the value belongs to).
    pub namespace: &'a str,
    /// Second binding string (the name of the resource the value belongs to).
    pub resource_name: &'a str,
}

impl SealTarget<'_> {
    /// The first SIV associated-data component, or `None` when a NUL would make it ambiguous.
    fn binding(&self) -> Option<Vec<u8>> {
        if self.namespace.contains('\0') || self.resource_name.contains('\0') {
            return None;
        }
        let mut binding = Vec::with_capacity(
            BINDING_LABEL.len() + 2 + self.namespace.len() + self.resource_name.len(),
        );
        binding.extend_from_slice(BINDING_LABEL);
        binding.push(0);
        binding.extend_from_slice(self.namespace.as_bytes());
        binding.push(0);
        binding.extend_from_slice(self.resource_name.as_bytes());
        Some(binding)
    }
}

/// Why a value could not be sealed or opened.
///
/// Opening has one error, [`SealedValueError::Unopenable`], whatever went wrong, so that a
/// submitted blob teaches nothing about which check failed. No message carries key material,
/// plaintext or bytes of a blob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealedValueError {
    /// The blob is malformed, was sealed to another key, or for another binding, or was altered.
    #[error("the sealed value is malformed, or was not sealed for this key, namespace and name")]
    Unopenable,

    /// A plaintext that is empty or longer than [`MAX_PLAINTEXT_LEN`].
    #[error("a sealed plaintext must be 1 to {MAX_PLAINTEXT_LEN} bytes, not {0}")]
    PlaintextLength(usize),

    /// A key id that is empty, too long, or not printable ASCII.
    #[error("a sealed value's key id must be 1 to {MAX_KEY_ID_LEN} printable ASCII characters")]
    InvalidKeyId,

    /// A namespace or resource name containing NUL.
    #[error("the namespace and resource name of a sealed value must not contain NUL")]
    InvalidTarget,

    /// Sealing needs an RSA key.
    #[error("sealed values need an RSA key, not {0}")]
    NotRsa(KeySpec),

    /// The public key does not parse as the given spec, or RSA encryption failed.
    #[error("wrapping the value key failed: {0}")]
    KeyWrap(#[source] AsymmetricError),

    /// A primitive failed in a way that should not be possible (a bug, not bad input).
    #[error("internal cryptographic error: {0}")]
    Internal(&'static str),
}

/// A blob split into its fields, borrowing the blob. Parsing checks structure only.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SealedValue<'a> {
    key_id: &'a str,
    wrapped_key: &'a [u8],
    header: &'a [u8],
    siv_ciphertext: &'a [u8],
}

/// Lengths only, so that no byte of a blob reaches a log line.
impl fmt::Debug for SealedValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedValue")
            .field("key_id", &self.key_id)
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("siv_ciphertext_len", &self.siv_ciphertext.len())
            .finish()
    }
}

impl<'a> SealedValue<'a> {
    /// Splits `blob` into its fields; any structural fault is [`SealedValueError::Unopenable`].
    pub fn parse(blob: &'a [u8]) -> Result<Self, SealedValueError> {
        let mut rest = blob;
        if take(&mut rest, MAGIC.len())? != MAGIC {
            return Err(SealedValueError::Unopenable);
        }
        let key_id_len = usize::from(take_byte(&mut rest)?);
        let key_id = take(&mut rest, key_id_len)?;
        if !valid_key_id(key_id) {
            return Err(SealedValueError::Unopenable);
        }
        let key_id = std::str::from_utf8(key_id).map_err(|_| SealedValueError::Unopenable)?;
        let [high, low] = take_array(&mut rest)?;
        let wrapped_len = usize::from(u16::from_be_bytes([high, low]));
        // Only the moduli of the supported RSA specs; the key's own size is checked on opening.
        if !KeySpec::ALL
            .into_iter()
            .any(|spec| modulus_len(spec) == Some(wrapped_len))
        {
            return Err(SealedValueError::Unopenable);
        }
        let wrapped_key = take(&mut rest, wrapped_len)?;
        let siv_ciphertext = rest;
        // At least one byte of plaintext, and no more than a sealer may write, so a hostile
        // blob cannot make the opener allocate much.
        if siv_ciphertext.len() <= SIV_TAG_LEN
            || siv_ciphertext.len() > SIV_TAG_LEN + MAX_PLAINTEXT_LEN
        {
            return Err(SealedValueError::Unopenable);
        }
        let header = blob
            .get(..blob.len() - siv_ciphertext.len())
            .ok_or(SealedValueError::Unopenable)?;
        Ok(Self {
            key_id,
            wrapped_key,
            header,
            siv_ciphertext,
        })
    }

    /// The id of the key the value was sealed to, so the opener can find its private key.
    pub fn key_id(&self) -> &'a str {
        self.key_id
    }

    /// Opens the value for `target` with a key of spec `key_spec`. `decrypt_wrapped_key` is
    /// given [`KEY_WRAP_ALGORITHM`] and the wrapped key, and decrypts it with the private key.
    ///
    /// Every failure, the decryptor's included, is [`SealedValueError::Unopenable`].
    pub fn open<F, E>(
        &self,
        key_spec: KeySpec,
        target: &SealTarget<'_>,
        decrypt_wrapped_key: F,
    ) -> Result<SecretBytes, SealedValueError>
    where
        F: FnOnce(EncryptionAlgorithm, &[u8]) -> Result<Zeroizing<Vec<u8>>, E>,
    {
        let binding = target.binding().ok_or(SealedValueError::Unopenable)?;
        if modulus_len(key_spec) != Some(self.wrapped_key.len()) {
            return Err(SealedValueError::Unopenable);
        }
        // A wrapped key that does not decrypt goes on under a random key: the SIV work is done
        // either way, so an RSA failure and a SIV failure take about the same time.
        let siv_key = decrypt_wrapped_key(KEY_WRAP_ALGORITHM, self.wrapped_key)
            .ok()
            .and_then(|key| KeyMaterial::from_bytes(&key).ok())
            .unwrap_or_else(KeyMaterial::generate);
        let plaintext = siv(&siv_key)
            .decrypt([&binding[..], self.header], self.siv_ciphertext)
            .map_err(|_| SealedValueError::Unopenable)?;
        Ok(SecretBytes::new(plaintext))
    }
}

/// Seals `plaintext` to the RSA public key `public_key_spki_der` (SubjectPublicKeyInfo DER) of
/// spec `key_spec`, naming the key `key_id`, for `target`.
pub fn seal(
    public_key_spki_der: &[u8],
    key_spec: KeySpec,
    key_id: &str,
    target: &SealTarget<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealedValueError> {
    if plaintext.is_empty() || plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(SealedValueError::PlaintextLength(plaintext.len()));
    }
    if !valid_key_id(key_id.as_bytes()) {
        return Err(SealedValueError::InvalidKeyId);
    }
    let key_id_len = u8::try_from(key_id.len()).map_err(|_| SealedValueError::InvalidKeyId)?;
    let binding = target.binding().ok_or(SealedValueError::InvalidTarget)?;
    let modulus_len = modulus_len(key_spec).ok_or(SealedValueError::NotRsa(key_spec))?;

    let siv_key = KeyMaterial::generate();
    let wrapped_key = asymmetric::encrypt(
        key_spec,
        public_key_spki_der,
        KEY_WRAP_ALGORITHM,
        siv_key.expose(),
    )
    .map_err(SealedValueError::KeyWrap)?;
    if wrapped_key.len() != modulus_len {
        return Err(SealedValueError::Internal(
            "RSA ciphertext is not the modulus size",
        ));
    }
    let wrapped_len = u16::try_from(wrapped_key.len())
        .map_err(|_| SealedValueError::Internal("RSA ciphertext does not fit its length field"))?;

    let mut blob = Vec::with_capacity(
        MAGIC.len() + 1 + key_id.len() + 2 + wrapped_key.len() + SIV_TAG_LEN + plaintext.len(),
    );
    blob.extend_from_slice(&MAGIC);
    blob.push(key_id_len);
    blob.extend_from_slice(key_id.as_bytes());
    blob.extend_from_slice(&wrapped_len.to_be_bytes());
    blob.extend_from_slice(&wrapped_key);
    let siv_ciphertext = siv(&siv_key)
        .encrypt([&binding[..], &blob[..]], plaintext)
        .map_err(|_| SealedValueError::Internal("AES-SIV refused to seal"))?;
    blob.extend_from_slice(&siv_ciphertext);
    Ok(blob)
}

/// The RSA modulus size in bytes, which is the length of an RSAES-OAEP ciphertext.
fn modulus_len(spec: KeySpec) -> Option<usize> {
    spec.rsa_bits().map(|bits| bits / 8)
}

/// 1 to [`MAX_KEY_ID_LEN`] bytes of printable ASCII: no spaces or control characters, which could
/// not name a key and might mislead in a log line.
fn valid_key_id(key_id: &[u8]) -> bool {
    (1..=MAX_KEY_ID_LEN).contains(&key_id.len()) && key_id.iter().all(u8::is_ascii_graphic)
}

/// The next `n` bytes of `rest`, or [`SealedValueError::Unopenable`] if there are fewer.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], SealedValueError> {
    let (head, tail) = rest
        .split_at_checked(n)
        .ok_or(SealedValueError::Unopenable)?;
    *rest = tail;
    Ok(head)
}

fn take_array<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], SealedValueError> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(rest, N)?);
    Ok(out)
}

fn take_byte(rest: &mut &[u8]) -> Result<u8, SealedValueError> {
    let [byte] = take_array(rest)?;
    Ok(byte)
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    use super::*;
    use crate::crypto::asymmetric::KeyPair;

    const KEY_ID: &str = "0b9f3c1e-6d2a-4f5b-8c7d-9e0a1b2c3d4e";
    const TARGET: SealTarget<'static> = SealTarget {
        namespace: "team-a",
        resource_name: "db-password",
    };
    const PLAINTEXT: &[u8] = b"hunter2-sealed-plaintext";

    fn key_pair(spec: KeySpec) -> KeyPair {
        asymmetric::generate(spec).unwrap()
    }

    fn open_with(
        pair: &KeyPair,
        spec: KeySpec,
        target: &SealTarget<'_>,
        blob: &[u8],
    ) -> Result<SecretBytes, SealedValueError> {
        open_with_private_key(&pair.private_pkcs8_der, spec, target, blob)
    }

    fn open_with_private_key(
        private_pkcs8_der: &[u8],
        spec: KeySpec,
        target: &SealTarget<'_>,
        blob: &[u8],
    ) -> Result<SecretBytes, SealedValueError> {
        SealedValue::parse(blob)?.open(spec, target, |algorithm, wrapped| {
            asymmetric::decrypt(spec, private_pkcs8_der, algorithm, wrapped)
        })
    }

    #[test]
    fn round_trips_for_every_rsa_size() {
        for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Rsa4096] {
            let pair = key_pair(spec);
            for plaintext in [&b"x"[..], PLAINTEXT, &vec![0u8; MAX_PLAINTEXT_LEN][..]] {
                let blob = seal(&pair.public_spki_der, spec, KEY_ID, &TARGET, plaintext).unwrap();
                let modulus = spec.rsa_bits().unwrap() / 8;
                assert_eq!(
                    blob.len(),
                    4 + 1 + KEY_ID.len() + 2 + modulus + SIV_TAG_LEN + plaintext.len()
                );
                let parsed = SealedValue::parse(&blob).unwrap();
                assert_eq!(parsed.key_id(), KEY_ID);
                let opened = open_with(&pair, spec, &TARGET, &blob).unwrap();
                assert_eq!(opened.expose(), plaintext, "{spec}");
            }
        }
    }

    #[test]
    fn seals_are_randomized() {
        let pair = key_pair(KeySpec::Rsa2048);
        let a = seal(
            &pair.public_spki_der,
            KeySpec::Rsa2048,
            KEY_ID,
            &TARGET,
            PLAINTEXT,
        )
        .unwrap();
        let b = seal(
            &pair.public_spki_der,
            KeySpec::Rsa2048,
            KEY_ID,
            &TARGET,
            PLAINTEXT,
        )
        .unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn opens_only_for_its_namespace_and_name() {
        let pair = key_pair(KeySpec::Rsa2048);
        let blob = seal(
            &pair.public_spki_der,
            KeySpec::Rsa2048,
            KEY_ID,
            &TARGET,
            PLAINTEXT,
        )
        .unwrap();
        let others = [
            SealTarget {
                namespace: "team-b",
                ..TARGET
            },
            SealTarget {
                resource_name: "db-password-2",
                ..TARGET
            },
            SealTarget {
                namespace: "db-password",
                resource_name: "team-a",
            },
            // The separator is not movable: "team-a\0db" + "password" is another binding.
            SealTarget {
                namespace: "team-a\0db",
                resource_name: "password",
            },
            SealTarget {
                namespace: "",
                resource_name: "",
            },
        ];
        for other in &others {
            assert_eq!(
                open_with(&pair, KeySpec::Rsa2048, other, &blob).unwrap_err(),
                SealedValueError::Unopenable,
                "{other:?}"
            );
        }
    }

    #[test]
    fn every_byte_flip_fails() {
        let pair = key_pair(KeySpec::Rsa2048);
        let blob = seal(
            &pair.public_spki_der,
            KeySpec::Rsa2048,
            KEY_ID,
            &TARGET,
            PLAINTEXT,
        )
        .unwrap();
        for index in 0..blob.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = blob.clone();
                bad[index] ^= mask;
                assert_eq!(
                    open_with(&pair, KeySpec::Rsa2048, &TARGET, &bad).unwrap_err(),
                    SealedValueError::Unopenable,
                    "byte {index} mask {mask:#04x}"
                );
            }
        }
    }

    #[test]
    fn truncations_and_extensions_fail() {
        let pair = key_pair(KeySpec::Rsa2048);
        let blob = seal(
            &pair.public_spki_der,
            KeySpec::Rsa2048,
            KEY_ID,
            &TARGET,
            PLAINTEXT,
        )
        .unwrap();
        for len in 0..blob.len() {
            assert!(
                open_with(&pair, KeySpec::Rsa2048, &TARGET, &blob[..len]).is_err(),
                "length {len}"
            );
            assert!(
                open_with(&pair, KeySpec::Rsa2048, &TARGET, &blob[blob.len() - len..]).is_err(),
                "suffix of length {len}"
            );
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(open_with(&pair, KeySpec::Rsa2048, &TARGET, &longer).is_err());
    }

    #[test]
    fn another_key_or_key_size_fails() {
        let pair = key_pair(KeySpec::Rsa2048);
        let other = key_pair(KeySpec::Rsa2048);
        let larger = key_pair(KeySpec::Rsa3072);
        let blob = seal(
            &pair.public_spki_der,
            KeySpec::Rsa2048,
            KEY_ID,
            &TARGET,
            PLAINTEXT,
        )
        .unwrap();
        assert_eq!(
            open_with(&other, KeySpec::Rsa2048, &TARGET, &blob).unwrap_err(),
            SealedValueError::Unopenable
        );
        assert_eq!(
            open_with(&larger, KeySpec::Rsa3072, &TARGET, &blob).unwrap_err(),
            SealedValueError::Unopenable
        );
        // A decryptor that fails, or hands back a key of the wrong length, is the same error.
        let parsed = SealedValue::parse(&blob).unwrap();
        let refused = parsed.open(KeySpec::Rsa2048, &TARGET, |_, _| {
            Err::<Zeroizing<Vec<u8>>, _>(AsymmetricError::DecryptionFailed)
        });
        assert_eq!(refused.unwrap_err(), SealedValueError::Unopenable);
        let short = parsed.open(KeySpec::Rsa2048, &TARGET, |_, _| {
            Ok::<_, AsymmetricError>(Zeroizing::new(vec![0u8; 32]))
        });
        assert_eq!(short.unwrap_err(), SealedValueError::Unopenable);
    }

    #[test]
    fn the_decryptor_is_asked_for_oaep_sha256() {
        let pair = key_pair(KeySpec::Rsa2048);
        let blob = seal(
            &pair.public_spki_der,
            KeySpec::Rsa2048,
            KEY_ID,
            &TARGET,
            PLAINTEXT,
        )
        .unwrap();
        let mut asked = None;
        SealedValue::parse(&blob)
            .unwrap()
            .open(KeySpec::Rsa2048, &TARGET, |algorithm, wrapped| {
                asked = Some(algorithm);
                asymmetric::decrypt(
                    KeySpec::Rsa2048,
                    &pair.private_pkcs8_der,
                    algorithm,
                    wrapped,
                )
            })
            .unwrap();
        assert_eq!(asked, Some(EncryptionAlgorithm::RsaesOaepSha256));
    }

    #[test]
    fn sealing_refuses_bad_input() {
        let pair = key_pair(KeySpec::Rsa2048);
        let der = &pair.public_spki_der;
        let spec = KeySpec::Rsa2048;
        for len in [0, MAX_PLAINTEXT_LEN + 1] {
            assert_eq!(
                seal(der, spec, KEY_ID, &TARGET, &vec![7u8; len]).unwrap_err(),
                SealedValueError::PlaintextLength(len)
            );
        }
        let too_long = "k".repeat(MAX_KEY_ID_LEN + 1);
        for key_id in ["", "has space", "tab\there", "caf\u{e9}", too_long.as_str()] {
            assert_eq!(
                seal(der, spec, key_id, &TARGET, PLAINTEXT).unwrap_err(),
                SealedValueError::InvalidKeyId,
                "{key_id:?}"
            );
        }
        assert!(seal(der, spec, &"k".repeat(MAX_KEY_ID_LEN), &TARGET, PLAINTEXT).is_ok());
        for target in [
            SealTarget {
                namespace: "a\0b",
                ..TARGET
            },
            SealTarget {
                resource_name: "\0",
                ..TARGET
            },
        ] {
            assert_eq!(
                seal(der, spec, KEY_ID, &target, PLAINTEXT).unwrap_err(),
                SealedValueError::InvalidTarget
            );
        }
        assert_eq!(
            seal(der, KeySpec::EccNistP256, KEY_ID, &TARGET, PLAINTEXT).unwrap_err(),
            SealedValueError::NotRsa(KeySpec::EccNistP256)
        );
        // A public key of another size than the spec says.
        assert!(matches!(
            seal(der, KeySpec::Rsa3072, KEY_ID, &TARGET, PLAINTEXT),
            Err(SealedValueError::KeyWrap(_))
        ));
        assert!(matches!(
            seal(b"not a key", spec, KEY_ID, &TARGET, PLAINTEXT),
            Err(SealedValueError::KeyWrap(_))
        ));
    }

    #[test]
    fn errors_carry_no_blob_or_plaintext_bytes() {
        let pair = key_pair(KeySpec::Rsa2048);
        let secret = b"TOPSECRET-PLAINTEXT-VALUE";
        let blob = seal(
            &pair.public_spki_der,
            KeySpec::Rsa2048,
            KEY_ID,
            &TARGET,
            secret,
        )
        .unwrap();
        let mut tampered = blob.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        let wrong_target = SealTarget {
            namespace: "team-b",
            ..TARGET
        };
        let errors = [
            open_with(&pair, KeySpec::Rsa2048, &TARGET, &tampered).unwrap_err(),
            open_with(&pair, KeySpec::Rsa2048, &wrong_target, &blob).unwrap_err(),
            open_with(&pair, KeySpec::Rsa2048, &TARGET, &blob[..40]).unwrap_err(),
            seal(
                &pair.public_spki_der,
                KeySpec::Rsa2048,
                KEY_ID,
                &TARGET,
                &[b'S'; MAX_PLAINTEXT_LEN + 1],
            )
            .unwrap_err(),
        ];
        let forbidden = [
            String::from_utf8_lossy(secret).into_owned(),
            hex::encode(secret),
            STANDARD.encode(secret),
            hex::encode(&blob[..8]),
            hex::encode(&blob[blob.len() - 8..]),
            STANDARD.encode(&blob[..12]),
            format!("{:?}", &blob[..8]),
            format!("{:?}", &secret[..8]),
            "SSSS".to_owned(),
        ];
        for err in &errors {
            for shown in [err.to_string(), format!("{err:?}"), format!("{err:#?}")] {
                for bytes in &forbidden {
                    assert!(!shown.contains(bytes.as_str()), "{shown:?} shows {bytes:?}");
                }
            }
        }
        // Every opening failure is the one error, whatever the cause.
        assert!(
            errors[..3]
                .iter()
                .all(|err| *err == SealedValueError::Unopenable)
        );
    }

    /// A blob made by e2e/cluster/sealing.py (Python's `cryptography`), with the throwaway key in
    /// testdata: Python and Rust agree on the format.
    #[test]
    fn opens_a_blob_sealed_by_the_python_sealer() {
        const BLOB: &str = "Q1NWMSQ2ZjFjMmE0ZS0zYjVkLTRlN2YtOGE5Yi0wYzFkMmUzZjRhNWIBAHP1yA16ucMnfjV3rWKG3IM6Ij2Kyta31dDdWgw8sVmAGs1AsanXErh7XH41jV0KnuMdCFQdWW0gGXvd+M5zSwLSoS0zQwyH6uWNAZhw3ZeY82wkFXgSVkruRYmItw11mec7iLaf1fN2GF+3HeDMJduobplJ0S0U+vUfLPYN0qoKMomQoeq/Ani5LUDt6E7MQOFYxBt5ULF4QupDx7VZeCc0L2L0WCT1MWJwnI/TKwePv/7fxejiZF88vioRA1Cr06Wa1diA0lnDzKydTowtl7V23wEWqg3PdMQADeJPEeKye9sh/saubjc95UnprZ/BfRrdkehfr2glXPFLZhNZaC3Dz1i3vtVFk59HFhGzPl6XsgYkRbOxt3bSUlM3ml0p+Fxmpg79DOqi8pf96EQrpwPyFf0=";
        let pem = include_str!("testdata/sealed-value-rsa2048.pem");
        let body: String = pem
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let private_key = STANDARD.decode(body).unwrap();
        let blob = STANDARD.decode(BLOB).unwrap();
        let target = SealTarget {
            namespace: "team-a",
            resource_name: "db-password",
        };

        let parsed = SealedValue::parse(&blob).unwrap();
        assert_eq!(parsed.key_id(), "6f1c2a4e-3b5d-4e7f-8a9b-0c1d2e3f4a5b");
        let opened = open_with_private_key(&private_key, KeySpec::Rsa2048, &target, &blob).unwrap();
        // "correct horse battery staple ✓\n" in UTF-8, then a NUL and 0xff.
        assert_eq!(
            opened.expose(),
            b"correct horse battery staple \xe2\x9c\x93\n\x00\xff"
        );
        let elsewhere = SealTarget {
            namespace: "team-b",
            ..target
        };
        assert_eq!(
            open_with_private_key(&private_key, KeySpec::Rsa2048, &elsewhere, &blob).unwrap_err(),
            SealedValueError::Unopenable
        );

        // And the other way: Rust seals to the same key; the blob has the same layout.
        let public_key =
            asymmetric::public_key_from_private(KeySpec::Rsa2048, &private_key).unwrap();
        let ours = seal(
            &public_key,
            KeySpec::Rsa2048,
            parsed.key_id(),
            &target,
            opened.expose(),
        )
        .unwrap();
        assert_eq!(ours.len(), blob.len());
        assert_eq!(ours[..4 + 1 + 36 + 2], blob[..4 + 1 + 36 + 2]);
    }
}
