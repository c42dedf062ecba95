//! Containers for secret bytes: zeroized on drop, never printed.

use std::fmt;

use rand::Rng;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::CryptoError;

/// Length of an AES-256-SIV key: two AES-256 keys, one for S2V (CMAC), one for CTR.
pub const KEY_LEN: usize = 64;

/// Zeroes a byte buffer, its spare capacity included, and empties it. In bulk: `Vec<u8>`'s own
/// `Zeroize` writes one byte at a time, which costs more than the rest of an API call on 4 KiB.
pub fn wipe(bytes: &mut Vec<u8>) {
    bytes.spare_capacity_mut().zeroize();
    bytes.as_mut_slice().zeroize();
    bytes.clear();
}

/// Secret bytes of any length: plaintexts, unwrapped keys.
///
/// The buffer, including spare capacity, is wiped on drop. Comparison is constant time so that
/// checking a secret against another leaks nothing through timing.
#[derive(Clone, Default)]
pub struct SecretBytes(Vec<u8>);

impl Zeroize for SecretBytes {
    fn zeroize(&mut self) {
        wipe(&mut self.0);
    }
}

impl Drop for SecretBytes {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for SecretBytes {}

impl SecretBytes {
    /// Takes ownership of `bytes`, so that no unwiped copy is left behind by the caller.
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }

    /// Copies `bytes`; the caller remains responsible for wiping its own copy.
    pub fn from_slice(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }

    /// `len` bytes from the thread-local CSPRNG (seeded from the OS).
    pub fn random(len: usize) -> Self {
        let mut bytes = vec![0u8; len];
        rand::rng().fill_bytes(&mut bytes);
        Self(bytes)
    }

    /// The secret itself; keep the borrow short and do not copy it into unwiped memory.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for SecretBytes {
    fn eq(&self, other: &Self) -> bool {
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for SecretBytes {}

/// A 64-byte AES-256-SIV key.
///
/// Boxed, so moving the value moves a pointer and leaves no stray copy of the key on the stack.
#[derive(Clone)]
pub struct KeyMaterial(Box<[u8; KEY_LEN]>);

impl KeyMaterial {
    /// A fresh random key from the thread-local CSPRNG (seeded from the OS).
    pub fn generate() -> Self {
        let mut key = Self::zeroed();
        rand::rng().fill_bytes(key.0.as_mut_slice());
        key
    }

    /// Copies exactly [`KEY_LEN`] bytes; any other length is refused rather than padded or cut.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        if bytes.len() != KEY_LEN {
            return Err(CryptoError::InvalidKeyLength {
                expected: KEY_LEN,
                actual: bytes.len(),
            });
        }
        let mut key = Self::zeroed();
        key.0.copy_from_slice(bytes);
        Ok(key)
    }

    /// The key bytes; keep the borrow short.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// An all-zero key to fill in place (HKDF output, decoding), so no temporary copy exists.
    pub(crate) fn zeroed() -> Self {
        Self(Box::new([0u8; KEY_LEN]))
    }

    /// Mutable access for filling a [`KeyMaterial::zeroed`] key in place.
    pub(crate) fn expose_mut(&mut self) -> &mut [u8; KEY_LEN] {
        &mut self.0
    }
}

impl Drop for KeyMaterial {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl ZeroizeOnDrop for KeyMaterial {}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl PartialEq for KeyMaterial {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_slice().ct_eq(other.0.as_slice()).into()
    }
}

impl Eq for KeyMaterial {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let secret = SecretBytes::from_slice(b"hunter2-hunter2");
        let shown = format!("{secret:?}");
        assert_eq!(shown, "[redacted]");
        assert!(!shown.contains("hunter2"));

        let key = KeyMaterial::from_bytes(&[0xab; KEY_LEN]).unwrap();
        assert_eq!(format!("{key:?}"), "[redacted]");
        assert_eq!(format!("{key:#?}"), "[redacted]");
    }

    #[test]
    fn secret_bytes_basics() {
        let empty = SecretBytes::new(Vec::new());
        assert!(empty.is_empty());
        assert_eq!(empty.len(), 0);

        let a = SecretBytes::from_slice(b"abc");
        let b = SecretBytes::new(b"abc".to_vec());
        let c = SecretBytes::from_slice(b"abd");
        let d = SecretBytes::from_slice(b"ab");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        assert_eq!(a.clone(), a);
        assert_eq!(a.expose(), b"abc");
    }

    #[test]
    fn random_bytes_have_the_asked_length_and_differ() {
        let a = SecretBytes::random(32);
        let b = SecretBytes::random(32);
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(SecretBytes::random(0).is_empty());
    }

    #[test]
    fn key_material_length_is_exact() {
        assert!(KeyMaterial::from_bytes(&[1; KEY_LEN]).is_ok());
        for len in [0, 1, 32, KEY_LEN - 1, KEY_LEN + 1, 128] {
            match KeyMaterial::from_bytes(&vec![1; len]) {
                Err(CryptoError::InvalidKeyLength { expected, actual }) => {
                    assert_eq!((expected, actual), (KEY_LEN, len));
                }
                other => panic!("length {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn generated_keys_differ() {
        let a = KeyMaterial::generate();
        let b = KeyMaterial::generate();
        assert_ne!(a, b);
        assert_eq!(a.clone(), a);
        assert_ne!(a.expose(), &[0u8; KEY_LEN]);
    }
}
