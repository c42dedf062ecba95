//! Asymmetric keys: the RSA and NIST-curve key pairs behind KMS `CreateKey` with
//! an asymmetric `KeySpec`, and the `Sign`, `Verify`, `Encrypt`, `Decrypt` and
//! `GetPublicKey` operations on them.
//!
//! Everything here follows what AWS KMS does on the wire:
//! - private keys are PKCS#8 DER, public keys SubjectPublicKeyInfo DER (what
//!   `GetPublicKey` returns);
//! - ECDSA signatures are ASN.1 DER (`SEQUENCE { r, s }`);
//! - RSASSA-PSS uses MGF1 with the message digest and a salt as long as the digest;
//! - RSAES-OAEP uses the same hash for OAEP and MGF1, with an empty label;
//! - `MessageType::Digest` means the message already is the digest, so it must be
//!   exactly the hash's length; `MessageType::Raw` messages are at most 4096 bytes.
//!
//! The cryptography itself is AWS-LC's for RSA (`aws-lc-rs`: constant-time private-key
//! operations) and the RustCrypto crates' for ECDSA (`p256`, `p384`) and hashing (`sha2`); this
//! module maps KMS names and rules onto them.
//!
//! Secrets (private keys, decrypted plaintext) come back in [`Zeroizing`] buffers,
//! and no [`AsymmetricError`] message ever carries key material or plaintext.

use std::fmt;
use std::str::FromStr;

use pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rand::rngs::SysRng;
use sha2::{Digest, Sha256, Sha384, Sha512};
use spki::{DecodePublicKey, EncodePublicKey};
use zeroize::Zeroizing;

/// The largest message, in bytes, that `Sign` and `Verify` accept with
/// [`MessageType::Raw`] (the AWS KMS limit).
pub const MAX_RAW_MESSAGE_LEN: usize = 4096;

/// Why an asymmetric operation was refused or failed.
///
/// No message includes key material, plaintext, messages or signatures: only
/// names, specs and lengths.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AsymmetricError {
    /// The name is not one of the supported KMS key specs.
    #[error("unsupported key spec {0:?}")]
    UnknownKeySpec(String),
    /// The name is not one of the supported KMS signing algorithms.
    #[error("unsupported signing algorithm {0:?}")]
    UnknownSigningAlgorithm(String),
    /// The name is not one of the supported KMS encryption algorithms.
    #[error("unsupported encryption algorithm {0:?}")]
    UnknownEncryptionAlgorithm(String),
    /// The name is not a KMS message type (`RAW` or `DIGEST`).
    #[error("unsupported message type {0:?}")]
    UnknownMessageType(String),
    /// The algorithm exists but cannot be used with keys of this spec
    /// (for example `ECDSA_SHA_384` on an `ECC_NIST_P256` key, or any
    /// encryption algorithm on an elliptic-curve key).
    #[error("algorithm {algorithm} is not supported for key spec {spec}")]
    UnsupportedAlgorithm {
        /// The key's spec.
        spec: KeySpec,
        /// The KMS name of the refused algorithm.
        algorithm: &'static str,
    },
    /// A `DIGEST` message whose length is not the algorithm's digest length.
    #[error("a digest for {algorithm} must be {expected} bytes long, not {actual}")]
    InvalidDigestLength {
        /// The KMS name of the signing algorithm.
        algorithm: &'static str,
        /// The digest length the algorithm's hash produces.
        expected: usize,
        /// The length that was given.
        actual: usize,
    },
    /// A `RAW` message longer than [`MAX_RAW_MESSAGE_LEN`].
    #[error("a RAW message may be at most {max} bytes long, not {actual}")]
    MessageTooLong {
        /// The limit.
        max: usize,
        /// The length that was given.
        actual: usize,
    },
    /// A plaintext longer than the OAEP limit for this key size and hash.
    #[error("{algorithm} with a {spec} key encrypts at most {max} bytes, not {actual}")]
    PlaintextTooLong {
        /// The key's spec.
        spec: KeySpec,
        /// The KMS name of the encryption algorithm.
        algorithm: &'static str,
        /// The limit.
        max: usize,
        /// The length that was given.
        actual: usize,
    },
    /// The private key is not PKCS#8 DER of a key of the expected spec.
    #[error("the private key is not a valid PKCS#8 {spec} key")]
    InvalidPrivateKey {
        /// The spec the key was expected to have.
        spec: KeySpec,
    },
    /// The public key is not SubjectPublicKeyInfo DER of a key of the expected spec.
    #[error("the public key is not a valid SubjectPublicKeyInfo {spec} key")]
    InvalidPublicKey {
        /// The spec the key was expected to have.
        spec: KeySpec,
    },
    /// Decryption failed. Deliberately says nothing about why (wrong key,
    /// altered ciphertext, wrong algorithm, bad padding are all the same).
    #[error("the ciphertext could not be decrypted")]
    DecryptionFailed,
    /// Key generation failed (for example the system random source failed).
    #[error("generating a {spec} key failed")]
    KeyGenerationFailed {
        /// The spec of the key being generated.
        spec: KeySpec,
    },
    /// The signing operation itself failed.
    #[error("signing failed")]
    SigningFailed,
    /// The encryption operation itself failed.
    #[error("encryption failed")]
    EncryptionFailed,
}

/// The asymmetric KMS key specs Coffer supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySpec {
    /// `RSA_2048`
    Rsa2048,
    /// `RSA_3072`
    Rsa3072,
    /// `RSA_4096`
    Rsa4096,
    /// `ECC_NIST_P256` (secp256r1)
    EccNistP256,
    /// `ECC_NIST_P384` (secp384r1)
    EccNistP384,
}

impl KeySpec {
    /// Every supported spec.
    pub const ALL: [KeySpec; 5] = [
        KeySpec::Rsa2048,
        KeySpec::Rsa3072,
        KeySpec::Rsa4096,
        KeySpec::EccNistP256,
        KeySpec::EccNistP384,
    ];

    /// The AWS name, e.g. `RSA_2048`.
    pub const fn as_str(self) -> &'static str {
        match self {
            KeySpec::Rsa2048 => "RSA_2048",
            KeySpec::Rsa3072 => "RSA_3072",
            KeySpec::Rsa4096 => "RSA_4096",
            KeySpec::EccNistP256 => "ECC_NIST_P256",
            KeySpec::EccNistP384 => "ECC_NIST_P384",
        }
    }

    /// Whether this is an RSA spec.
    pub const fn is_rsa(self) -> bool {
        self.rsa_bits().is_some()
    }

    /// The RSA modulus size in bits, or `None` for elliptic-curve specs.
    pub const fn rsa_bits(self) -> Option<usize> {
        match self {
            KeySpec::Rsa2048 => Some(2048),
            KeySpec::Rsa3072 => Some(3072),
            KeySpec::Rsa4096 => Some(4096),
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => None,
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeySpec {
    type Err = AsymmetricError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KeySpec::ALL
            .into_iter()
            .find(|spec| spec.as_str() == s)
            .ok_or_else(|| AsymmetricError::UnknownKeySpec(s.to_owned()))
    }
}

/// The KMS signing algorithms Coffer supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SigningAlgorithm {
    /// `RSASSA_PSS_SHA_256`
    RsassaPssSha256,
    /// `RSASSA_PSS_SHA_384`
    RsassaPssSha384,
    /// `RSASSA_PSS_SHA_512`
    RsassaPssSha512,
    /// `RSASSA_PKCS1_V1_5_SHA_256`
    RsassaPkcs1V15Sha256,
    /// `RSASSA_PKCS1_V1_5_SHA_384`
    RsassaPkcs1V15Sha384,
    /// `RSASSA_PKCS1_V1_5_SHA_512`
    RsassaPkcs1V15Sha512,
    /// `ECDSA_SHA_256` (P-256 keys only)
    EcdsaSha256,
    /// `ECDSA_SHA_384` (P-384 keys only)
    EcdsaSha384,
}

impl SigningAlgorithm {
    /// Every supported signing algorithm.
    pub const ALL: [SigningAlgorithm; 8] = [
        SigningAlgorithm::RsassaPssSha256,
        SigningAlgorithm::RsassaPssSha384,
        SigningAlgorithm::RsassaPssSha512,
        SigningAlgorithm::RsassaPkcs1V15Sha256,
        SigningAlgorithm::RsassaPkcs1V15Sha384,
        SigningAlgorithm::RsassaPkcs1V15Sha512,
        SigningAlgorithm::EcdsaSha256,
        SigningAlgorithm::EcdsaSha384,
    ];

    /// The AWS name, e.g. `RSASSA_PSS_SHA_256`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SigningAlgorithm::RsassaPssSha256 => "RSASSA_PSS_SHA_256",
            SigningAlgorithm::RsassaPssSha384 => "RSASSA_PSS_SHA_384",
            SigningAlgorithm::RsassaPssSha512 => "RSASSA_PSS_SHA_512",
            SigningAlgorithm::RsassaPkcs1V15Sha256 => "RSASSA_PKCS1_V1_5_SHA_256",
            SigningAlgorithm::RsassaPkcs1V15Sha384 => "RSASSA_PKCS1_V1_5_SHA_384",
            SigningAlgorithm::RsassaPkcs1V15Sha512 => "RSASSA_PKCS1_V1_5_SHA_512",
            SigningAlgorithm::EcdsaSha256 => "ECDSA_SHA_256",
            SigningAlgorithm::EcdsaSha384 => "ECDSA_SHA_384",
        }
    }

    /// The length in bytes of the algorithm's digest, which is what a
    /// [`MessageType::Digest`] message must be.
    pub const fn digest_len(self) -> usize {
        self.hash().len()
    }

    const fn hash(self) -> Hash {
        match self {
            SigningAlgorithm::RsassaPssSha256
            | SigningAlgorithm::RsassaPkcs1V15Sha256
            | SigningAlgorithm::EcdsaSha256 => Hash::Sha256,
            SigningAlgorithm::RsassaPssSha384
            | SigningAlgorithm::RsassaPkcs1V15Sha384
            | SigningAlgorithm::EcdsaSha384 => Hash::Sha384,
            SigningAlgorithm::RsassaPssSha512 | SigningAlgorithm::RsassaPkcs1V15Sha512 => {
                Hash::Sha512
            }
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningAlgorithm {
    type Err = AsymmetricError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SigningAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == s)
            .ok_or_else(|| AsymmetricError::UnknownSigningAlgorithm(s.to_owned()))
    }
}

/// The KMS asymmetric encryption algorithms Coffer supports (RSA keys only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EncryptionAlgorithm {
    /// `RSAES_OAEP_SHA_1`: OAEP with SHA-1 and MGF1-SHA-1.
    RsaesOaepSha1,
    /// `RSAES_OAEP_SHA_256`: OAEP with SHA-256 and MGF1-SHA-256.
    RsaesOaepSha256,
}

impl EncryptionAlgorithm {
    /// Every supported encryption algorithm.
    pub const ALL: [EncryptionAlgorithm; 2] = [
        EncryptionAlgorithm::RsaesOaepSha1,
        EncryptionAlgorithm::RsaesOaepSha256,
    ];

    /// The AWS name, e.g. `RSAES_OAEP_SHA_256`.
    pub const fn as_str(self) -> &'static str {
        match self {
            EncryptionAlgorithm::RsaesOaepSha1 => "RSAES_OAEP_SHA_1",
            EncryptionAlgorithm::RsaesOaepSha256 => "RSAES_OAEP_SHA_256",
        }
    }

    /// The OAEP hash's output length in bytes (`hLen`).
    const fn hash_len(self) -> usize {
        match self {
            EncryptionAlgorithm::RsaesOaepSha1 => 20,
            EncryptionAlgorithm::RsaesOaepSha256 => 32,
        }
    }
}

impl fmt::Display for EncryptionAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EncryptionAlgorithm {
    type Err = AsymmetricError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EncryptionAlgorithm::ALL
            .into_iter()
            .find(|algorithm| algorithm.as_str() == s)
            .ok_or_else(|| AsymmetricError::UnknownEncryptionAlgorithm(s.to_owned()))
    }
}

/// What the `Message` of a `Sign` or `Verify` request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MessageType {
    /// `RAW`: the message itself; it is hashed with the algorithm's hash.
    #[default]
    Raw,
    /// `DIGEST`: the message already is the digest and is signed as given.
    Digest,
}

impl MessageType {
    /// The AWS name, `RAW` or `DIGEST`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MessageType::Raw => "RAW",
            MessageType::Digest => "DIGEST",
        }
    }
}

impl fmt::Display for MessageType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageType {
    type Err = AsymmetricError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "RAW" => Ok(MessageType::Raw),
            "DIGEST" => Ok(MessageType::Digest),
            _ => Err(AsymmetricError::UnknownMessageType(s.to_owned())),
        }
    }
}

/// A freshly generated key pair.
#[derive(Clone)]
pub struct KeyPair {
    /// The private key as PKCS#8 DER.
    pub private_pkcs8_der: Zeroizing<Vec<u8>>,
    /// The public key as SubjectPublicKeyInfo DER.
    pub public_spki_der: Vec<u8>,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("private_pkcs8_der", &"<redacted>")
            .field("public_spki_der_len", &self.public_spki_der.len())
            .finish()
    }
}

/// Generates a new key pair of the given spec from the operating system's
/// random source. RSA keys use the public exponent 65537.
pub fn generate(spec: KeySpec) -> Result<KeyPair, AsymmetricError> {
    match spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => rsa_keys::generate(spec),
        KeySpec::EccNistP256 => p256_keys::generate(),
        KeySpec::EccNistP384 => p384_keys::generate(),
    }
}

/// Derives the SubjectPublicKeyInfo DER of a PKCS#8 private key, checking that
/// the key is of the given spec.
pub fn public_key_from_private(
    spec: KeySpec,
    private_pkcs8_der: &[u8],
) -> Result<Vec<u8>, AsymmetricError> {
    match spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            rsa_keys::public_from_private(spec, private_pkcs8_der)
        }
        KeySpec::EccNistP256 => p256_keys::public_from_private(private_pkcs8_der),
        KeySpec::EccNistP384 => p384_keys::public_from_private(private_pkcs8_der),
    }
}

const RSA_SIGNING_ALGORITHMS: [SigningAlgorithm; 6] = [
    SigningAlgorithm::RsassaPkcs1V15Sha256,
    SigningAlgorithm::RsassaPkcs1V15Sha384,
    SigningAlgorithm::RsassaPkcs1V15Sha512,
    SigningAlgorithm::RsassaPssSha256,
    SigningAlgorithm::RsassaPssSha384,
    SigningAlgorithm::RsassaPssSha512,
];
const P256_SIGNING_ALGORITHMS: [SigningAlgorithm; 1] = [SigningAlgorithm::EcdsaSha256];
const P384_SIGNING_ALGORITHMS: [SigningAlgorithm; 1] = [SigningAlgorithm::EcdsaSha384];
const RSA_ENCRYPTION_ALGORITHMS: [EncryptionAlgorithm; 2] = EncryptionAlgorithm::ALL;

/// The signing algorithms a key of this spec supports, in the order AWS lists
/// them in `KeyMetadata.SigningAlgorithms`.
pub fn signing_algorithms(spec: KeySpec) -> &'static [SigningAlgorithm] {
    match spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => &RSA_SIGNING_ALGORITHMS,
        KeySpec::EccNistP256 => &P256_SIGNING_ALGORITHMS,
        KeySpec::EccNistP384 => &P384_SIGNING_ALGORITHMS,
    }
}

/// The encryption algorithms a key of this spec supports, as AWS lists them in
/// `KeyMetadata.EncryptionAlgorithms`: both OAEP variants for RSA, none for
/// elliptic-curve keys.
pub fn encryption_algorithms(spec: KeySpec) -> &'static [EncryptionAlgorithm] {
    if spec.is_rsa() {
        &RSA_ENCRYPTION_ALGORITHMS
    } else {
        &[]
    }
}

/// The longest plaintext `encrypt` accepts for this spec and algorithm:
/// `k - 2*hLen - 2` bytes for OAEP with a `k`-byte modulus, or `None` when the
/// spec cannot encrypt.
pub fn max_plaintext_len(spec: KeySpec, algorithm: EncryptionAlgorithm) -> Option<usize> {
    let modulus_len = spec.rsa_bits()? / 8;
    modulus_len.checked_sub(2 * algorithm.hash_len() + 2)
}

/// Signs `message` with a PKCS#8 private key of the given spec.
///
/// With [`MessageType::Raw`] the message (at most [`MAX_RAW_MESSAGE_LEN`] bytes)
/// is hashed with the algorithm's hash; with [`MessageType::Digest`] it must
/// already be that hash's digest. RSA signatures are `k` bytes; ECDSA
/// signatures are DER `SEQUENCE { r, s }`.
pub fn sign(
    spec: KeySpec,
    private_pkcs8_der: &[u8],
    algorithm: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
) -> Result<Vec<u8>, AsymmetricError> {
    check_signing_algorithm(spec, algorithm)?;
    let digest = message_digest(algorithm, message_type, message)?;
    match spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            rsa_keys::sign(spec, private_pkcs8_der, algorithm, &digest)
        }
        KeySpec::EccNistP256 => p256_keys::sign(private_pkcs8_der, &digest),
        KeySpec::EccNistP384 => p384_keys::sign(private_pkcs8_der, &digest),
    }
}

/// Verifies `signature` over `message` with a SubjectPublicKeyInfo public key.
///
/// Returns `Ok(false)` when the request is well formed but the signature does
/// not verify, including a signature that is not even well-formed (wrong length,
/// bad DER). Errors are for requests KMS itself would refuse: an algorithm the
/// key spec does not support, a digest of the wrong length, a RAW message over
/// the limit, or a public key that does not parse as the given spec.
pub fn verify(
    spec: KeySpec,
    public_spki_der: &[u8],
    algorithm: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
    signature: &[u8],
) -> Result<bool, AsymmetricError> {
    check_signing_algorithm(spec, algorithm)?;
    let digest = message_digest(algorithm, message_type, message)?;
    match spec {
        KeySpec::Rsa2048 | KeySpec::Rsa3072 | KeySpec::Rsa4096 => {
            rsa_keys::verify(spec, public_spki_der, algorithm, &digest, signature)
        }
        KeySpec::EccNistP256 => p256_keys::verify(public_spki_der, &digest, signature),
        KeySpec::EccNistP384 => p384_keys::verify(public_spki_der, &digest, signature),
    }
}

/// Encrypts `plaintext` with RSAES-OAEP under a SubjectPublicKeyInfo RSA key.
///
/// The plaintext may be at most [`max_plaintext_len`] bytes.
pub fn encrypt(
    spec: KeySpec,
    public_spki_der: &[u8],
    algorithm: EncryptionAlgorithm,
    plaintext: &[u8],
) -> Result<Vec<u8>, AsymmetricError> {
    let max = max_plaintext_len(spec, algorithm).ok_or(AsymmetricError::UnsupportedAlgorithm {
        spec,
        algorithm: algorithm.as_str(),
    })?;
    if plaintext.len() > max {
        return Err(AsymmetricError::PlaintextTooLong {
            spec,
            algorithm: algorithm.as_str(),
            max,
            actual: plaintext.len(),
        });
    }
    rsa_keys::encrypt(spec, public_spki_der, algorithm, plaintext)
}

/// Decrypts an RSAES-OAEP `ciphertext` with a PKCS#8 RSA private key.
///
/// Every failure to open the ciphertext (wrong key, altered or truncated
/// ciphertext, other algorithm) is the one [`AsymmetricError::DecryptionFailed`].
pub fn decrypt(
    spec: KeySpec,
    private_pkcs8_der: &[u8],
    algorithm: EncryptionAlgorithm,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, AsymmetricError> {
    if !spec.is_rsa() {
        return Err(AsymmetricError::UnsupportedAlgorithm {
            spec,
            algorithm: algorithm.as_str(),
        });
    }
    rsa_keys::decrypt(spec, private_pkcs8_der, algorithm, ciphertext)
}

/// The hashes the signing algorithms use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    const fn len(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(message).to_vec(),
            Hash::Sha384 => Sha384::digest(message).to_vec(),
            Hash::Sha512 => Sha512::digest(message).to_vec(),
        }
    }
}

fn check_signing_algorithm(
    spec: KeySpec,
    algorithm: SigningAlgorithm,
) -> Result<(), AsymmetricError> {
    if signing_algorithms(spec).contains(&algorithm) {
        Ok(())
    } else {
        Err(AsymmetricError::UnsupportedAlgorithm {
            spec,
            algorithm: algorithm.as_str(),
        })
    }
}

/// The digest that is actually signed: the hash of a RAW message, or a DIGEST
/// message itself once its length is checked.
fn message_digest(
    algorithm: SigningAlgorithm,
    message_type: MessageType,
    message: &[u8],
) -> Result<Vec<u8>, AsymmetricError> {
    let hash = algorithm.hash();
    match message_type {
        MessageType::Raw => {
            if message.len() > MAX_RAW_MESSAGE_LEN {
                return Err(AsymmetricError::MessageTooLong {
                    max: MAX_RAW_MESSAGE_LEN,
                    actual: message.len(),
                });
            }
            Ok(hash.digest(message))
        }
        MessageType::Digest => {
            if message.len() != hash.len() {
                return Err(AsymmetricError::InvalidDigestLength {
                    algorithm: algorithm.as_str(),
                    expected: hash.len(),
                    actual: message.len(),
                });
            }
            Ok(message.to_vec())
        }
    }
}

/// RSA keys, PKCS#1 v1.5 and PSS signatures, OAEP encryption, on AWS-LC (`aws-lc-rs`), whose
/// private-key operations run in constant time: a caller timing Decrypt or Sign learns nothing
/// of the key (the Marvin attack, RUSTSEC-2023-0071, on the `rsa` crate).
mod rsa_keys {
    use aws_lc_rs::digest::{self as lc_digest, Digest};
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::rsa::{
        KeyPair as RsaKeyPair, KeySize, OAEP_SHA1_MGF1SHA1, OAEP_SHA256_MGF1SHA256, OaepAlgorithm,
        OaepPrivateDecryptingKey, OaepPublicEncryptingKey, PrivateDecryptingKey,
        PublicEncryptingKey,
    };
    use aws_lc_rs::signature::{self as lc_signature, KeyPair as _, RsaEncoding, RsaParameters};

    use super::*;

    fn key_size(spec: KeySpec) -> Option<KeySize> {
        match spec {
            KeySpec::Rsa2048 => Some(KeySize::Rsa2048),
            KeySpec::Rsa3072 => Some(KeySize::Rsa3072),
            KeySpec::Rsa4096 => Some(KeySize::Rsa4096),
            KeySpec::EccNistP256 | KeySpec::EccNistP384 => None,
        }
    }

    fn bits_match(spec: KeySpec, bits: usize) -> bool {
        spec.rsa_bits() == Some(bits)
    }

    fn private_key(spec: KeySpec, der: &[u8]) -> Result<RsaKeyPair, AsymmetricError> {
        let invalid = AsymmetricError::InvalidPrivateKey { spec };
        let key = RsaKeyPair::from_pkcs8(der).map_err(|_| invalid.clone())?;
        if bits_match(spec, key.public_modulus_len() * 8) {
            Ok(key)
        } else {
            Err(invalid)
        }
    }

    fn public_key(spec: KeySpec, der: &[u8]) -> Result<PublicEncryptingKey, AsymmetricError> {
        let invalid = AsymmetricError::InvalidPublicKey { spec };
        let key = PublicEncryptingKey::from_der(der).map_err(|_| invalid.clone())?;
        if bits_match(spec, key.key_size_bits()) {
            Ok(key)
        } else {
            Err(invalid)
        }
    }

    fn spki_der(spec: KeySpec, key: &RsaKeyPair) -> Result<Vec<u8>, AsymmetricError> {
        AsDer::<PublicKeyX509Der>::as_der(key.public_key())
            .map(|der| der.as_ref().to_vec())
            .map_err(|_| AsymmetricError::InvalidPublicKey { spec })
    }

    pub(super) fn generate(spec: KeySpec) -> Result<KeyPair, AsymmetricError> {
        let failed = AsymmetricError::KeyGenerationFailed { spec };
        let size = key_size(spec).ok_or_else(|| failed.clone())?;
        let key = RsaKeyPair::generate(size).map_err(|_| failed.clone())?;
        let private_pkcs8_der = AsDer::<Pkcs8V1Der>::as_der(&key)
            .map(|der| Zeroizing::new(der.as_ref().to_vec()))
            .map_err(|_| failed)?;
        Ok(KeyPair {
            private_pkcs8_der,
            public_spki_der: spki_der(spec, &key)?,
        })
    }

    pub(super) fn public_from_private(
        spec: KeySpec,
        der: &[u8],
    ) -> Result<Vec<u8>, AsymmetricError> {
        spki_der(spec, &private_key(spec, der)?)
    }

    /// The padding of a signing algorithm, its verification parameters and its digest.
    fn signing(
        spec: KeySpec,
        algorithm: SigningAlgorithm,
    ) -> Result<
        (
            &'static dyn RsaEncoding,
            &'static RsaParameters,
            &'static lc_digest::Algorithm,
        ),
        AsymmetricError,
    > {
        Ok(match algorithm {
            SigningAlgorithm::RsassaPssSha256 => (
                &lc_signature::RSA_PSS_SHA256,
                &lc_signature::RSA_PSS_2048_8192_SHA256,
                &lc_digest::SHA256,
            ),
            SigningAlgorithm::RsassaPssSha384 => (
                &lc_signature::RSA_PSS_SHA384,
                &lc_signature::RSA_PSS_2048_8192_SHA384,
                &lc_digest::SHA384,
            ),
            SigningAlgorithm::RsassaPssSha512 => (
                &lc_signature::RSA_PSS_SHA512,
                &lc_signature::RSA_PSS_2048_8192_SHA512,
                &lc_digest::SHA512,
            ),
            SigningAlgorithm::RsassaPkcs1V15Sha256 => (
                &lc_signature::RSA_PKCS1_SHA256,
                &lc_signature::RSA_PKCS1_2048_8192_SHA256,
                &lc_digest::SHA256,
            ),
            SigningAlgorithm::RsassaPkcs1V15Sha384 => (
                &lc_signature::RSA_PKCS1_SHA384,
                &lc_signature::RSA_PKCS1_2048_8192_SHA384,
                &lc_digest::SHA384,
            ),
            SigningAlgorithm::RsassaPkcs1V15Sha512 => (
                &lc_signature::RSA_PKCS1_SHA512,
                &lc_signature::RSA_PKCS1_2048_8192_SHA512,
                &lc_digest::SHA512,
            ),
            SigningAlgorithm::EcdsaSha256 | SigningAlgorithm::EcdsaSha384 => {
                return Err(AsymmetricError::UnsupportedAlgorithm {
                    spec,
                    algorithm: algorithm.as_str(),
                });
            }
        })
    }

    pub(super) fn sign(
        spec: KeySpec,
        der: &[u8],
        algorithm: SigningAlgorithm,
        digest: &[u8],
    ) -> Result<Vec<u8>, AsymmetricError> {
        let (padding, _, hash) = signing(spec, algorithm)?;
        let key = private_key(spec, der)?;
        // The digest was computed here from a RAW message, or checked for its length.
        let digest =
            Digest::import_less_safe(digest, hash).map_err(|_| AsymmetricError::SigningFailed)?;
        let mut signature = vec![0; key.public_modulus_len()];
        key.sign_digest(padding, &digest, &mut signature)
            .map_err(|_| AsymmetricError::SigningFailed)?;
        Ok(signature)
    }

    pub(super) fn verify(
        spec: KeySpec,
        der: &[u8],
        algorithm: SigningAlgorithm,
        digest: &[u8],
        signature: &[u8],
    ) -> Result<bool, AsymmetricError> {
        let (_, parameters, hash) = signing(spec, algorithm)?;
        // Parsed for its size; the verifier parses the same bytes again.
        public_key(spec, der)?;
        let Ok(digest) = Digest::import_less_safe(digest, hash) else {
            return Ok(false);
        };
        Ok(lc_signature::UnparsedPublicKey::new(parameters, der)
            .verify_digest(&digest, signature)
            .is_ok())
    }

    fn oaep(algorithm: EncryptionAlgorithm) -> &'static OaepAlgorithm {
        match algorithm {
            EncryptionAlgorithm::RsaesOaepSha1 => &OAEP_SHA1_MGF1SHA1,
            EncryptionAlgorithm::RsaesOaepSha256 => &OAEP_SHA256_MGF1SHA256,
        }
    }

    pub(super) fn encrypt(
        spec: KeySpec,
        der: &[u8],
        algorithm: EncryptionAlgorithm,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, AsymmetricError> {
        let key = OaepPublicEncryptingKey::new(public_key(spec, der)?)
            .map_err(|_| AsymmetricError::EncryptionFailed)?;
        let mut ciphertext = vec![0; key.ciphertext_size()];
        let written = key
            .encrypt(oaep(algorithm), plaintext, &mut ciphertext, None)
            .map_err(|_| AsymmetricError::EncryptionFailed)?
            .len();
        ciphertext.truncate(written);
        Ok(ciphertext)
    }

    pub(super) fn decrypt(
        spec: KeySpec,
        der: &[u8],
        algorithm: EncryptionAlgorithm,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, AsymmetricError> {
        let invalid = AsymmetricError::InvalidPrivateKey { spec };
        let key = PrivateDecryptingKey::from_pkcs8(der).map_err(|_| invalid.clone())?;
        if !bits_match(spec, key.key_size_bits()) {
            return Err(invalid);
        }
        let key =
            OaepPrivateDecryptingKey::new(key).map_err(|_| AsymmetricError::DecryptionFailed)?;
        let mut plaintext = Zeroizing::new(vec![0; key.min_output_size()]);
        let written = key
            .decrypt(oaep(algorithm), ciphertext, &mut plaintext, None)
            .map_err(|_| AsymmetricError::DecryptionFailed)?
            .len();
        plaintext.truncate(written);
        Ok(plaintext)
    }
}

/// ECDSA over one NIST curve. The two curves differ only in their crate and
/// spec, so one body serves both.
macro_rules! ecdsa_curve {
    ($module:ident, $curve:ident, $spec:expr) => {
        mod $module {
            use super::*;
            use $curve::ecdsa::signature::hazmat::{PrehashVerifier, RandomizedPrehashSigner};
            use $curve::ecdsa::{Signature, SigningKey, VerifyingKey};
            use $curve::elliptic_curve::Generate;

            const SPEC: KeySpec = $spec;

            fn signing_key(der: &[u8]) -> Result<SigningKey, AsymmetricError> {
                SigningKey::from_pkcs8_der(der)
                    .map_err(|_| AsymmetricError::InvalidPrivateKey { spec: SPEC })
            }

            fn spki_der(key: &VerifyingKey) -> Result<Vec<u8>, AsymmetricError> {
                key.to_public_key_der()
                    .map(|document| document.into_vec())
                    .map_err(|_| AsymmetricError::InvalidPublicKey { spec: SPEC })
            }

            pub(super) fn generate() -> Result<KeyPair, AsymmetricError> {
                let failed = AsymmetricError::KeyGenerationFailed { spec: SPEC };
                let key =
                    SigningKey::try_generate_from_rng(&mut SysRng).map_err(|_| failed.clone())?;
                let private_pkcs8_der = key.to_pkcs8_der().map_err(|_| failed.clone())?.to_bytes();
                let public_spki_der = key
                    .verifying_key()
                    .to_public_key_der()
                    .map_err(|_| failed)?
                    .into_vec();
                Ok(KeyPair {
                    private_pkcs8_der,
                    public_spki_der,
                })
            }

            pub(super) fn public_from_private(der: &[u8]) -> Result<Vec<u8>, AsymmetricError> {
                spki_der(signing_key(der)?.verifying_key())
            }

            /// Hedged ECDSA: RFC 6979 nonces with fresh randomness mixed in.
            pub(super) fn sign(der: &[u8], digest: &[u8]) -> Result<Vec<u8>, AsymmetricError> {
                let key = signing_key(der)?;
                let signature: Signature = key
                    .sign_prehash_with_rng(&mut SysRng, digest)
                    .map_err(|_| AsymmetricError::SigningFailed)?;
                Ok(signature.to_der().as_bytes().to_vec())
            }

            pub(super) fn verify(
                der: &[u8],
                digest: &[u8],
                signature: &[u8],
            ) -> Result<bool, AsymmetricError> {
                let key = VerifyingKey::from_public_key_der(der)
                    .map_err(|_| AsymmetricError::InvalidPublicKey { spec: SPEC })?;
                let Ok(signature) = Signature::from_der(signature) else {
                    return Ok(false);
                };
                Ok(key.verify_prehash(digest, &signature).is_ok())
            }
        }
    };
}

ecdsa_curve!(p256_keys, p256, KeySpec::EccNistP256);
ecdsa_curve!(p384_keys, p384, KeySpec::EccNistP384);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::OnceLock;

    /// Two key pairs per spec, generated once per test binary, on one thread
    /// per key (RSA-3072 and RSA-4096 generation is the slow part of this suite).
    fn keys(spec: KeySpec) -> &'static [KeyPair; 2] {
        static KEYS: OnceLock<HashMap<KeySpec, [KeyPair; 2]>> = OnceLock::new();
        let all = KEYS.get_or_init(|| {
            std::thread::scope(|scope| {
                let pending: Vec<_> = KeySpec::ALL
                    .into_iter()
                    .map(|spec| {
                        let first = scope.spawn(move || generate(spec));
                        let second = scope.spawn(move || generate(spec));
                        (spec, first, second)
                    })
                    .collect();
                pending
                    .into_iter()
                    .map(|(spec, first, second)| {
                        let join = |handle: std::thread::ScopedJoinHandle<
                            '_,
                            Result<KeyPair, AsymmetricError>,
                        >| {
                            handle
                                .join()
                                .expect("key generation thread")
                                .expect("generate key")
                        };
                        (spec, [join(first), join(second)])
                    })
                    .collect()
            })
        });
        &all[&spec]
    }

    fn key(spec: KeySpec) -> &'static KeyPair {
        &keys(spec)[0]
    }

    fn other_key(spec: KeySpec) -> &'static KeyPair {
        &keys(spec)[1]
    }

    const MESSAGE: &[u8] = b"the quick brown fox signs over the lazy dog";

    fn message_for(algorithm: SigningAlgorithm, message_type: MessageType) -> Vec<u8> {
        match message_type {
            MessageType::Raw => MESSAGE.to_vec(),
            MessageType::Digest => algorithm.hash().digest(MESSAGE),
        }
    }

    fn all_signing_cases() -> Vec<(KeySpec, SigningAlgorithm, MessageType)> {
        let mut cases = Vec::new();
        for spec in KeySpec::ALL {
            for &algorithm in signing_algorithms(spec) {
                for message_type in [MessageType::Raw, MessageType::Digest] {
                    cases.push((spec, algorithm, message_type));
                }
            }
        }
        cases
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for spec in KeySpec::ALL {
            assert_eq!(spec.as_str().parse::<KeySpec>(), Ok(spec));
            assert_eq!(spec.to_string(), spec.as_str());
        }
        for algorithm in SigningAlgorithm::ALL {
            assert_eq!(
                algorithm.as_str().parse::<SigningAlgorithm>(),
                Ok(algorithm)
            );
        }
        for algorithm in EncryptionAlgorithm::ALL {
            assert_eq!(
                algorithm.as_str().parse::<EncryptionAlgorithm>(),
                Ok(algorithm)
            );
        }
        for message_type in [MessageType::Raw, MessageType::Digest] {
            assert_eq!(
                message_type.as_str().parse::<MessageType>(),
                Ok(message_type)
            );
        }
        assert_eq!(
            "RSA_1024".parse::<KeySpec>(),
            Err(AsymmetricError::UnknownKeySpec("RSA_1024".into()))
        );
        assert!("rsa_2048".parse::<KeySpec>().is_err());
        assert!("ECDSA_SHA_512".parse::<SigningAlgorithm>().is_err());
        assert!("SYMMETRIC_DEFAULT".parse::<EncryptionAlgorithm>().is_err());
        assert!("raw".parse::<MessageType>().is_err());
    }

    #[test]
    fn aws_names_are_the_documented_ones() {
        let names: Vec<_> = KeySpec::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            names,
            [
                "RSA_2048",
                "RSA_3072",
                "RSA_4096",
                "ECC_NIST_P256",
                "ECC_NIST_P384"
            ]
        );
        let names: Vec<_> = SigningAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
        assert_eq!(
            names,
            [
                "RSASSA_PSS_SHA_256",
                "RSASSA_PSS_SHA_384",
                "RSASSA_PSS_SHA_512",
                "RSASSA_PKCS1_V1_5_SHA_256",
                "RSASSA_PKCS1_V1_5_SHA_384",
                "RSASSA_PKCS1_V1_5_SHA_512",
                "ECDSA_SHA_256",
                "ECDSA_SHA_384",
            ]
        );
        let names: Vec<_> = EncryptionAlgorithm::ALL
            .iter()
            .map(|a| a.as_str())
            .collect();
        assert_eq!(names, ["RSAES_OAEP_SHA_1", "RSAES_OAEP_SHA_256"]);
    }

    #[test]
    fn algorithm_lists_match_aws_key_metadata() {
        for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Rsa4096] {
            let names: Vec<_> = signing_algorithms(spec)
                .iter()
                .map(|a| a.as_str())
                .collect();
            assert_eq!(
                names,
                [
                    "RSASSA_PKCS1_V1_5_SHA_256",
                    "RSASSA_PKCS1_V1_5_SHA_384",
                    "RSASSA_PKCS1_V1_5_SHA_512",
                    "RSASSA_PSS_SHA_256",
                    "RSASSA_PSS_SHA_384",
                    "RSASSA_PSS_SHA_512",
                ]
            );
            assert_eq!(encryption_algorithms(spec), EncryptionAlgorithm::ALL);
        }
        assert_eq!(
            signing_algorithms(KeySpec::EccNistP256),
            [SigningAlgorithm::EcdsaSha256]
        );
        assert_eq!(
            signing_algorithms(KeySpec::EccNistP384),
            [SigningAlgorithm::EcdsaSha384]
        );
        assert!(encryption_algorithms(KeySpec::EccNistP256).is_empty());
        assert!(encryption_algorithms(KeySpec::EccNistP384).is_empty());
    }

    #[test]
    fn max_plaintext_lengths_match_aws() {
        use EncryptionAlgorithm::{RsaesOaepSha1, RsaesOaepSha256};
        let expected = [
            (KeySpec::Rsa2048, RsaesOaepSha1, 214),
            (KeySpec::Rsa2048, RsaesOaepSha256, 190),
            (KeySpec::Rsa3072, RsaesOaepSha1, 342),
            (KeySpec::Rsa3072, RsaesOaepSha256, 318),
            (KeySpec::Rsa4096, RsaesOaepSha1, 470),
            (KeySpec::Rsa4096, RsaesOaepSha256, 446),
        ];
        for (spec, algorithm, max) in expected {
            assert_eq!(
                max_plaintext_len(spec, algorithm),
                Some(max),
                "{spec} {algorithm}"
            );
        }
        for spec in [KeySpec::EccNistP256, KeySpec::EccNistP384] {
            for algorithm in EncryptionAlgorithm::ALL {
                assert_eq!(max_plaintext_len(spec, algorithm), None);
            }
        }
    }

    #[test]
    fn generated_keys_have_the_requested_spec_and_are_distinct() {
        for spec in KeySpec::ALL {
            let [first, second] = keys(spec);
            assert_ne!(first.public_spki_der, second.public_spki_der, "{spec}");
            assert_ne!(
                *first.private_pkcs8_der, *second.private_pkcs8_der,
                "{spec}"
            );
            for other in KeySpec::ALL.into_iter().filter(|&s| s != spec) {
                assert_eq!(
                    public_key_from_private(other, &first.private_pkcs8_der),
                    Err(AsymmetricError::InvalidPrivateKey { spec: other }),
                    "a {spec} key accepted as {other}"
                );
            }
        }
        for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Rsa4096] {
            // SubjectPublicKeyInfo ends with RSAPublicKey's exponent: INTEGER 65537.
            assert!(
                key(spec)
                    .public_spki_der
                    .ends_with(&[0x02, 0x03, 0x01, 0x00, 0x01]),
                "{spec}"
            );
        }
    }

    #[test]
    fn public_key_from_private_equals_generated_public_key() {
        for spec in KeySpec::ALL {
            for pair in keys(spec) {
                let derived =
                    public_key_from_private(spec, &pair.private_pkcs8_der).expect("derive");
                assert_eq!(derived, pair.public_spki_der, "{spec}");
            }
        }
    }

    #[test]
    fn malformed_keys_are_refused() {
        for spec in KeySpec::ALL {
            assert_eq!(
                public_key_from_private(spec, b"not a key"),
                Err(AsymmetricError::InvalidPrivateKey { spec })
            );
            let algorithm = signing_algorithms(spec)[0];
            assert_eq!(
                sign(spec, &[], algorithm, MessageType::Raw, MESSAGE),
                Err(AsymmetricError::InvalidPrivateKey { spec })
            );
            assert_eq!(
                verify(
                    spec,
                    b"\x30\x00",
                    algorithm,
                    MessageType::Raw,
                    MESSAGE,
                    b"x"
                ),
                Err(AsymmetricError::InvalidPublicKey { spec })
            );
            // A private key where a public key belongs is refused, not misread.
            assert_eq!(
                verify(
                    spec,
                    &key(spec).private_pkcs8_der,
                    algorithm,
                    MessageType::Raw,
                    MESSAGE,
                    b"x"
                ),
                Err(AsymmetricError::InvalidPublicKey { spec })
            );
        }
    }

    #[test]
    fn sign_verify_round_trip_for_every_combination() {
        for (spec, algorithm, message_type) in all_signing_cases() {
            let pair = key(spec);
            let message = message_for(algorithm, message_type);
            let signature = sign(
                spec,
                &pair.private_pkcs8_der,
                algorithm,
                message_type,
                &message,
            )
            .expect("sign");
            match spec.rsa_bits() {
                Some(bits) => assert_eq!(signature.len(), bits / 8, "{spec} {algorithm}"),
                // DER SEQUENCE { INTEGER r, INTEGER s }
                None => {
                    assert_eq!(signature[0], 0x30, "{spec} {algorithm}");
                    assert_eq!(usize::from(signature[1]) + 2, signature.len());
                }
            }
            let valid = verify(
                spec,
                &pair.public_spki_der,
                algorithm,
                message_type,
                &message,
                &signature,
            )
            .expect("verify");
            assert!(valid, "{spec} {algorithm} {message_type}");
        }
    }

    #[test]
    fn verify_is_false_for_a_changed_message_signature_or_key() {
        for (spec, algorithm, message_type) in all_signing_cases() {
            let pair = key(spec);
            let message = message_for(algorithm, message_type);
            let signature = sign(
                spec,
                &pair.private_pkcs8_der,
                algorithm,
                message_type,
                &message,
            )
            .expect("sign");
            let case = format!("{spec} {algorithm} {message_type}");

            let mut flipped_message = message.clone();
            flipped_message[0] ^= 0x01;
            let check = |public: &[u8], message: &[u8], signature: &[u8]| {
                verify(spec, public, algorithm, message_type, message, signature)
                    .expect("well-formed verify request")
            };
            assert!(
                !check(&pair.public_spki_der, &flipped_message, &signature),
                "flipped message: {case}"
            );

            for index in [0, signature.len() / 2, signature.len() - 1] {
                let mut flipped_signature = signature.clone();
                flipped_signature[index] ^= 0x01;
                assert!(
                    !check(&pair.public_spki_der, &message, &flipped_signature),
                    "flipped signature byte {index}: {case}"
                );
            }

            assert!(
                !check(&other_key(spec).public_spki_der, &message, &signature),
                "other key: {case}"
            );

            // Malformed signature blobs are a failed verification, not an error.
            for blob in [
                &[][..],
                &signature[..signature.len() - 1],
                &[0u8; 8][..],
                &[0x30, 0x02, 0x02, 0x00][..],
            ] {
                assert!(
                    !check(&pair.public_spki_der, &message, blob),
                    "malformed signature of {} bytes: {case}",
                    blob.len()
                );
            }
            let mut longer = signature.clone();
            longer.push(0);
            assert!(
                !check(&pair.public_spki_der, &message, &longer),
                "signature with a trailing byte: {case}"
            );
        }
    }

    #[test]
    fn raw_and_digest_signatures_are_interchangeable() {
        for spec in KeySpec::ALL {
            let pair = key(spec);
            for &algorithm in signing_algorithms(spec) {
                let digest = algorithm.hash().digest(MESSAGE);

                let raw_signature = sign(
                    spec,
                    &pair.private_pkcs8_der,
                    algorithm,
                    MessageType::Raw,
                    MESSAGE,
                )
                .expect("sign raw");
                assert_eq!(
                    verify(
                        spec,
                        &pair.public_spki_der,
                        algorithm,
                        MessageType::Digest,
                        &digest,
                        &raw_signature
                    ),
                    Ok(true),
                    "RAW signature checked as DIGEST: {spec} {algorithm}"
                );

                let digest_signature = sign(
                    spec,
                    &pair.private_pkcs8_der,
                    algorithm,
                    MessageType::Digest,
                    &digest,
                )
                .expect("sign digest");
                assert_eq!(
                    verify(
                        spec,
                        &pair.public_spki_der,
                        algorithm,
                        MessageType::Raw,
                        MESSAGE,
                        &digest_signature
                    ),
                    Ok(true),
                    "DIGEST signature checked as RAW: {spec} {algorithm}"
                );
            }
        }
    }

    #[test]
    fn pkcs1v15_signatures_are_deterministic_and_pss_ecdsa_are_randomised() {
        let pair = key(KeySpec::Rsa2048);
        let sign_twice = |spec: KeySpec, pair: &KeyPair, algorithm| {
            let once = |()| {
                sign(
                    spec,
                    &pair.private_pkcs8_der,
                    algorithm,
                    MessageType::Raw,
                    MESSAGE,
                )
                .expect("sign")
            };
            (once(()), once(()))
        };
        let (a, b) = sign_twice(
            KeySpec::Rsa2048,
            pair,
            SigningAlgorithm::RsassaPkcs1V15Sha256,
        );
        assert_eq!(a, b);
        let (a, b) = sign_twice(KeySpec::Rsa2048, pair, SigningAlgorithm::RsassaPssSha256);
        assert_ne!(a, b, "PSS uses a random salt");
        let (a, b) = sign_twice(
            KeySpec::EccNistP256,
            key(KeySpec::EccNistP256),
            SigningAlgorithm::EcdsaSha256,
        );
        assert_ne!(a, b, "ECDSA nonces are hedged with fresh randomness");
    }

    #[test]
    fn algorithms_outside_the_key_spec_are_refused() {
        for spec in KeySpec::ALL {
            let pair = key(spec);
            for algorithm in SigningAlgorithm::ALL {
                if signing_algorithms(spec).contains(&algorithm) {
                    continue;
                }
                let refused = Err(AsymmetricError::UnsupportedAlgorithm {
                    spec,
                    algorithm: algorithm.as_str(),
                });
                assert_eq!(
                    sign(
                        spec,
                        &pair.private_pkcs8_der,
                        algorithm,
                        MessageType::Raw,
                        MESSAGE
                    ),
                    refused.clone().map(|()| Vec::new()),
                    "sign {spec} {algorithm}"
                );
                assert_eq!(
                    verify(
                        spec,
                        &pair.public_spki_der,
                        algorithm,
                        MessageType::Raw,
                        MESSAGE,
                        &[0u8; 64]
                    ),
                    refused.map(|()| false),
                    "verify {spec} {algorithm}"
                );
            }
        }
        // The two ECDSA pairings the brief singles out, spelled out.
        assert!(matches!(
            sign(
                KeySpec::EccNistP256,
                &key(KeySpec::EccNistP256).private_pkcs8_der,
                SigningAlgorithm::EcdsaSha384,
                MessageType::Raw,
                MESSAGE
            ),
            Err(AsymmetricError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            sign(
                KeySpec::EccNistP384,
                &key(KeySpec::EccNistP384).private_pkcs8_der,
                SigningAlgorithm::EcdsaSha256,
                MessageType::Raw,
                MESSAGE
            ),
            Err(AsymmetricError::UnsupportedAlgorithm { .. })
        ));
    }

    #[test]
    fn digest_messages_must_have_the_hash_length() {
        for (spec, algorithm, _) in all_signing_cases() {
            let pair = key(spec);
            let expected = algorithm.digest_len();
            for actual in [0, 20, expected - 1, expected + 1, 64 + 1] {
                if actual == expected {
                    continue;
                }
                let error = Err(AsymmetricError::InvalidDigestLength {
                    algorithm: algorithm.as_str(),
                    expected,
                    actual,
                });
                let message = vec![7u8; actual];
                assert_eq!(
                    sign(
                        spec,
                        &pair.private_pkcs8_der,
                        algorithm,
                        MessageType::Digest,
                        &message
                    ),
                    error.clone().map(|()| Vec::new()),
                    "sign {spec} {algorithm} with a {actual}-byte digest"
                );
                assert_eq!(
                    verify(
                        spec,
                        &pair.public_spki_der,
                        algorithm,
                        MessageType::Digest,
                        &message,
                        &[0u8; 64]
                    ),
                    error.map(|()| false),
                    "verify {spec} {algorithm} with a {actual}-byte digest"
                );
            }
        }
    }

    #[test]
    fn raw_messages_are_limited_to_4096_bytes() {
        for spec in [KeySpec::Rsa2048, KeySpec::EccNistP256, KeySpec::EccNistP384] {
            let pair = key(spec);
            let algorithm = signing_algorithms(spec)[0];
            let largest = vec![0xa5; MAX_RAW_MESSAGE_LEN];
            let signature = sign(
                spec,
                &pair.private_pkcs8_der,
                algorithm,
                MessageType::Raw,
                &largest,
            )
            .expect("a 4096-byte message is signed");
            assert_eq!(
                verify(
                    spec,
                    &pair.public_spki_der,
                    algorithm,
                    MessageType::Raw,
                    &largest,
                    &signature
                ),
                Ok(true)
            );

            let too_long = vec![0xa5; MAX_RAW_MESSAGE_LEN + 1];
            let error = AsymmetricError::MessageTooLong {
                max: 4096,
                actual: 4097,
            };
            assert_eq!(
                sign(
                    spec,
                    &pair.private_pkcs8_der,
                    algorithm,
                    MessageType::Raw,
                    &too_long
                ),
                Err(error.clone())
            );
            assert_eq!(
                verify(
                    spec,
                    &pair.public_spki_der,
                    algorithm,
                    MessageType::Raw,
                    &too_long,
                    &signature
                ),
                Err(error)
            );
        }
    }

    #[test]
    fn oaep_round_trip_at_the_maximum_length_and_one_more_is_refused() {
        for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Rsa4096] {
            let pair = key(spec);
            for algorithm in EncryptionAlgorithm::ALL {
                let max = max_plaintext_len(spec, algorithm).expect("RSA can encrypt");
                let plaintext: Vec<u8> = (0..max).map(|i| u8::try_from(i % 251).unwrap()).collect();
                let ciphertext =
                    encrypt(spec, &pair.public_spki_der, algorithm, &plaintext).expect("encrypt");
                assert_eq!(ciphertext.len(), spec.rsa_bits().unwrap_or(0) / 8);
                let opened = decrypt(spec, &pair.private_pkcs8_der, algorithm, &ciphertext)
                    .expect("decrypt");
                assert_eq!(*opened, plaintext, "{spec} {algorithm}");

                let again =
                    encrypt(spec, &pair.public_spki_der, algorithm, &plaintext).expect("encrypt");
                assert_ne!(again, ciphertext, "OAEP is randomised");

                let too_long = vec![0u8; max + 1];
                assert_eq!(
                    encrypt(spec, &pair.public_spki_der, algorithm, &too_long),
                    Err(AsymmetricError::PlaintextTooLong {
                        spec,
                        algorithm: algorithm.as_str(),
                        max,
                        actual: max + 1,
                    })
                );
            }
        }
    }

    #[test]
    fn short_plaintexts_round_trip() {
        let spec = KeySpec::Rsa2048;
        let pair = key(spec);
        for algorithm in EncryptionAlgorithm::ALL {
            for plaintext in [&b""[..], b"x", b"a 32-byte data key goes here...."] {
                let ciphertext =
                    encrypt(spec, &pair.public_spki_der, algorithm, plaintext).expect("encrypt");
                let opened = decrypt(spec, &pair.private_pkcs8_der, algorithm, &ciphertext)
                    .expect("decrypt");
                assert_eq!(&opened[..], plaintext);
            }
        }
    }

    #[test]
    fn decrypt_failures_are_one_opaque_error() {
        for spec in [KeySpec::Rsa2048, KeySpec::Rsa3072, KeySpec::Rsa4096] {
            let pair = key(spec);
            let plaintext = b"a data key";
            for algorithm in EncryptionAlgorithm::ALL {
                let ciphertext =
                    encrypt(spec, &pair.public_spki_der, algorithm, plaintext).expect("encrypt");
                let opaque = Err(AsymmetricError::DecryptionFailed);

                for index in [0, ciphertext.len() / 2, ciphertext.len() - 1] {
                    let mut tampered = ciphertext.clone();
                    tampered[index] ^= 0x01;
                    assert_eq!(
                        decrypt(spec, &pair.private_pkcs8_der, algorithm, &tampered),
                        opaque,
                        "tampered byte {index}: {spec} {algorithm}"
                    );
                }
                assert_eq!(
                    decrypt(
                        spec,
                        &other_key(spec).private_pkcs8_der,
                        algorithm,
                        &ciphertext
                    ),
                    opaque,
                    "other key: {spec} {algorithm}"
                );
                let other_algorithm = match algorithm {
                    EncryptionAlgorithm::RsaesOaepSha1 => EncryptionAlgorithm::RsaesOaepSha256,
                    EncryptionAlgorithm::RsaesOaepSha256 => EncryptionAlgorithm::RsaesOaepSha1,
                };
                assert_eq!(
                    decrypt(spec, &pair.private_pkcs8_der, other_algorithm, &ciphertext),
                    opaque,
                    "other algorithm: {spec} {algorithm}"
                );
                for truncated in [&[][..], &ciphertext[1..], &ciphertext[..10]] {
                    assert_eq!(
                        decrypt(spec, &pair.private_pkcs8_der, algorithm, truncated),
                        opaque,
                        "{}-byte ciphertext: {spec} {algorithm}",
                        truncated.len()
                    );
                }
                let mut longer = ciphertext.clone();
                longer.push(0);
                assert_eq!(
                    decrypt(spec, &pair.private_pkcs8_der, algorithm, &longer),
                    opaque
                );
            }
        }
    }

    #[test]
    fn elliptic_curve_keys_do_not_encrypt() {
        for spec in [KeySpec::EccNistP256, KeySpec::EccNistP384] {
            let pair = key(spec);
            for algorithm in EncryptionAlgorithm::ALL {
                let refused = AsymmetricError::UnsupportedAlgorithm {
                    spec,
                    algorithm: algorithm.as_str(),
                };
                assert_eq!(
                    encrypt(spec, &pair.public_spki_der, algorithm, b"x"),
                    Err(refused.clone())
                );
                assert_eq!(
                    decrypt(spec, &pair.private_pkcs8_der, algorithm, &[0u8; 64]),
                    Err(refused)
                );
            }
        }
    }

    #[test]
    fn an_rsa_key_of_another_size_is_refused() {
        let small = key(KeySpec::Rsa2048);
        let algorithm = EncryptionAlgorithm::RsaesOaepSha256;
        assert_eq!(
            encrypt(KeySpec::Rsa3072, &small.public_spki_der, algorithm, b"x"),
            Err(AsymmetricError::InvalidPublicKey {
                spec: KeySpec::Rsa3072
            })
        );
        let ciphertext =
            encrypt(KeySpec::Rsa2048, &small.public_spki_der, algorithm, b"x").expect("encrypt");
        assert_eq!(
            decrypt(
                KeySpec::Rsa4096,
                &small.private_pkcs8_der,
                algorithm,
                &ciphertext
            ),
            Err(AsymmetricError::InvalidPrivateKey {
                spec: KeySpec::Rsa4096
            })
        );
        assert_eq!(
            sign(
                KeySpec::Rsa3072,
                &small.private_pkcs8_der,
                SigningAlgorithm::RsassaPssSha256,
                MessageType::Raw,
                MESSAGE
            ),
            Err(AsymmetricError::InvalidPrivateKey {
                spec: KeySpec::Rsa3072
            })
        );
    }

    #[test]
    fn errors_and_debug_output_carry_no_secrets() {
        let pair = key(KeySpec::EccNistP256);
        let debug = format!("{pair:?}");
        assert!(debug.contains("<redacted>"));
        assert!(!debug.contains(&format!("{:?}", &pair.private_pkcs8_der[..])));

        let secret = b"top secret plaintext that must not leak";
        let rsa = key(KeySpec::Rsa2048);
        let errors = [
            decrypt(
                KeySpec::Rsa2048,
                &rsa.private_pkcs8_der,
                EncryptionAlgorithm::RsaesOaepSha256,
                secret,
            )
            .map(|_| ()),
            encrypt(
                KeySpec::Rsa2048,
                &rsa.public_spki_der,
                EncryptionAlgorithm::RsaesOaepSha256,
                &[b'z'; 300],
            )
            .map(|_| ()),
            sign(
                KeySpec::Rsa3072,
                &rsa.private_pkcs8_der,
                SigningAlgorithm::RsassaPssSha256,
                MessageType::Raw,
                secret,
            )
            .map(|_| ()),
            sign(
                KeySpec::Rsa2048,
                &rsa.private_pkcs8_der,
                SigningAlgorithm::RsassaPssSha256,
                MessageType::Digest,
                secret,
            )
            .map(|_| ()),
        ];
        for error in errors {
            let error = error.expect_err("each request fails");
            for text in [error.to_string(), format!("{error:?}")] {
                assert!(!text.contains("top secret"), "{text}");
                assert!(!text.contains("zzz"), "{text}");
            }
        }
    }
}
