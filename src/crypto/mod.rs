//! Bytes and keys: envelope encryption of stored values, and the root keys above it.
//!
//! The hierarchy (docs/key-material.md): a root key wraps each KmsKey version's material, a KmsKey
//! version wraps a fresh data key per stored value, and the data key seals the value. Every layer
//! is AES-256-SIV, chosen because it stays safe if a nonce ever repeats.
//!
//! This module knows nothing of Kubernetes objects beyond where the root key is kept, and nothing
//! of HTTP.

pub mod asymmetric;
mod envelope;
mod root;
pub mod sealed;
mod secret;
mod wrap;

pub use envelope::{
    Binding, BlobHeader, FORMAT_VERSION, KeyRef, MAGIC, MAX_KEY_ID_LEN, MAX_PLAINTEXT_LEN,
    NONCE_LEN, ResourceIdentity, open, parse_header, seal,
};
pub use root::{
    FileRootKeyProvider, KubernetesRootKeyProvider, MAX_ROOT_KEY_CONFLICT_RETRIES, RootKeyProvider,
    RootKeyring,
};
pub use sealed::{SealTarget, SealedValue, SealedValueError};
pub use secret::{KEY_LEN, KeyMaterial, SecretBytes, wipe};
pub use wrap::{unwrap_key, wrap_key};

/// Everything that can go wrong in this module.
///
/// Messages name what failed and never carry key material or plaintext. Authentication
/// failures deliberately say nothing about which check failed, so they cannot be used as an
/// oracle.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// The blob is not something this code wrote: wrong magic, unknown version, bad lengths.
    #[error("malformed ciphertext blob: {0}")]
    Malformed(&'static str),

    /// Wrong key, wrong binding, or tampered bytes; which one is not said on purpose.
    #[error("ciphertext could not be authenticated")]
    Authentication,

    /// The plaintext exceeds [`MAX_PLAINTEXT_LEN`].
    #[error("plaintext is {len} bytes, more than the {max} allowed")]
    PlaintextTooLarge {
        /// Length of the rejected plaintext.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A key id that cannot be written into a blob header.
    #[error("key id must be 1 to {MAX_KEY_ID_LEN} bytes of UTF-8, got {0} bytes")]
    InvalidKeyId(usize),

    /// Key bytes of the wrong length.
    #[error("key material must be {expected} bytes, got {actual}")]
    InvalidKeyLength {
        /// Required length.
        expected: usize,
        /// Length that was given.
        actual: usize,
    },

    /// A wrapped secret names a root key version the keyring does not hold.
    #[error("root key version {0} is not in the keyring")]
    UnknownRootKeyVersion(u32),

    /// The root keyring cannot take another version number.
    #[error("root keyring has run out of version numbers")]
    RootKeyVersionsExhausted,

    /// A stored keyring (file or Secret) that does not parse or is inconsistent.
    #[error("invalid root keyring: {0}")]
    InvalidKeyring(String),

    /// A root key file that group or others may read.
    #[error(
        "root key file {path} has mode {mode:04o}, which lets group or others read it; \
         it must be 0600 or 0400 (chmod 600; for a mounted Secret, defaultMode: 0400 and no fsGroup)"
    )]
    InsecurePermissions {
        /// The file.
        path: String,
        /// Its permission bits.
        mode: u32,
    },

    /// Reading or writing the root key file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// The Kubernetes API refused or failed a root key request.
    #[error("root key Secret {namespace}/{name}: {action} failed: {detail}")]
    Kubernetes {
        /// What was being done.
        action: &'static str,
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// A summary that is safe to log (status code and reason, never the body).
        detail: String,
    },

    /// Rotation kept losing optimistic-concurrency races.
    #[error(
        "root key Secret {namespace}/{name} kept changing during rotation; gave up after {attempts} attempts"
    )]
    RotationConflict {
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
        /// Attempts made.
        attempts: usize,
    },

    /// A primitive failed in a way that should not be possible (a bug, not bad input).
    #[error("internal cryptographic error: {0}")]
    Internal(&'static str),
}
