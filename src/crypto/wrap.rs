//! Key wrapping: AES-256-SIV with a random nonce, for data keys, key versions and root-held
//! secrets.
//!
//! Wrapped form: `version (u8 = 1) || nonce (16) || SIV tag (16) || ciphertext`.
//!
//! The caller's associated data and the nonce go in as separate SIV headers, nonce last
//! (RFC 5297, section 3). SIV alone would already be safe for wrapping uniformly random keys
//! deterministically; the nonce makes two wraps of the same secret under the same key and
//! associated data unlinkable.

use aes_siv::KeyInit;
use aes_siv::aead::array::Array;
use aes_siv::siv::Aes256Siv;
use rand::Rng;

use super::CryptoError;
use super::secret::{KeyMaterial, SecretBytes};

/// First byte of every wrapped value, so the format can change later.
const WRAP_VERSION: u8 = 1;
/// Length of the random nonce header.
const WRAP_NONCE_LEN: usize = 16;
/// Length of the SIV tag that prefixes the ciphertext.
const SIV_TAG_LEN: usize = 16;
/// Bytes a wrapped value adds to the secret.
pub(crate) const WRAP_OVERHEAD: usize = 1 + WRAP_NONCE_LEN + SIV_TAG_LEN;

/// A SIV cipher keyed from `key`, borrowing the key bytes rather than copying them.
pub(crate) fn siv(key: &KeyMaterial) -> Aes256Siv {
    let bytes: &Array<u8, _> = key.expose().into();
    Aes256Siv::new(bytes)
}

/// Wraps `secret` under `wrapping`, bound to `aad`; the same `aad` must be given to unwrap.
pub fn wrap_key(wrapping: &KeyMaterial, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let mut nonce = [0u8; WRAP_NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let sealed = siv(wrapping)
        .encrypt([aad, &nonce[..]], secret)
        .map_err(|_| CryptoError::Internal("AES-SIV refused to wrap"))?;
    let mut out = Vec::with_capacity(1 + WRAP_NONCE_LEN + sealed.len());
    out.push(WRAP_VERSION);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Unwraps a value from [`wrap_key`]; fails with [`CryptoError::Authentication`] on a wrong key,
/// wrong `aad` or any altered byte.
pub fn unwrap_key(
    wrapping: &KeyMaterial,
    aad: &[u8],
    wrapped: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let (&version, rest) = wrapped
        .split_first()
        .ok_or(CryptoError::Malformed("wrapped key is empty"))?;
    if version != WRAP_VERSION {
        return Err(CryptoError::Malformed(
            "wrapped key has an unknown format version",
        ));
    }
    let (nonce, sealed) = rest
        .split_at_checked(WRAP_NONCE_LEN)
        .ok_or(CryptoError::Malformed("wrapped key is truncated"))?;
    if sealed.len() < SIV_TAG_LEN {
        return Err(CryptoError::Malformed("wrapped key is truncated"));
    }
    let plain = siv(wrapping)
        .decrypt([aad, nonce], sealed)
        .map_err(|_| CryptoError::Authentication)?;
    Ok(SecretBytes::new(plain))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let kek = KeyMaterial::generate();
        for secret in [&b""[..], b"k", &[7u8; 64][..], &[9u8; 1000][..]] {
            let wrapped = wrap_key(&kek, b"aad", secret).unwrap();
            assert_eq!(wrapped.len(), secret.len() + WRAP_OVERHEAD);
            let back = unwrap_key(&kek, b"aad", &wrapped).unwrap();
            assert_eq!(back.expose(), secret);
        }
    }

    #[test]
    fn wraps_are_randomized() {
        let kek = KeyMaterial::generate();
        let a = wrap_key(&kek, b"", b"same").unwrap();
        let b = wrap_key(&kek, b"", b"same").unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn wrong_key_or_aad_fails() {
        let kek = KeyMaterial::generate();
        let wrapped = wrap_key(&kek, b"aad", b"secret").unwrap();
        assert!(matches!(
            unwrap_key(&KeyMaterial::generate(), b"aad", &wrapped),
            Err(CryptoError::Authentication)
        ));
        assert!(matches!(
            unwrap_key(&kek, b"aad2", &wrapped),
            Err(CryptoError::Authentication)
        ));
        assert!(matches!(
            unwrap_key(&kek, b"", &wrapped),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn every_flip_and_truncation_fails() {
        let kek = KeyMaterial::generate();
        let wrapped = wrap_key(&kek, b"aad", &[5u8; 64]).unwrap();
        for i in 0..wrapped.len() {
            for bit in 0..8 {
                let mut bad = wrapped.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    unwrap_key(&kek, b"aad", &bad).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
        for len in 0..wrapped.len() {
            assert!(
                unwrap_key(&kek, b"aad", &wrapped[..len]).is_err(),
                "length {len}"
            );
        }
    }
}
