//! Black-box tests of the envelope through the public API: the SIV primitive against RFC 5297,
//! and properties of seal/open over many inputs, including hostile ones.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;

use aes_siv::KeyInit;
use aes_siv::siv::Aes128Siv;
use coffer::crypto::{
    Binding, CryptoError, KeyMaterial, KeyRef, ResourceIdentity, open, parse_header, seal,
};
use proptest::prelude::*;

/// Hex as printed in RFC 5297: whitespace between groups is ignored.
fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| u8::try_from(c.to_digit(16).expect("hex digit")).unwrap())
        .collect();
    assert_eq!(digits.len() % 2, 0, "odd number of hex digits");
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

fn cipher(key: &[u8]) -> Aes128Siv {
    let key: [u8; 32] = key.try_into().expect("32-byte key");
    Aes128Siv::new(&key.into())
}

/// RFC 5297, Appendix A.1: deterministic authenticated encryption, one header.
#[test]
fn rfc5297_a1_deterministic() {
    let key = hex("fffefdfc fbfaf9f8 f7f6f5f4 f3f2f1f0
                   f0f1f2f3 f4f5f6f7 f8f9fafb fcfdfeff");
    let ad = hex("10111213 14151617 18191a1b 1c1d1e1f
                  20212223 24252627");
    let plaintext = hex("11223344 55667788 99aabbcc ddee");
    let expected = hex("85632d07 c6e8f37f 950acd32 0a2ecc93
                        40c02b96 90c4dc04 daef7f6a fe5c");

    let sealed = cipher(&key).encrypt([&ad], &plaintext).unwrap();
    assert_eq!(sealed, expected);
    assert_eq!(cipher(&key).decrypt([&ad], &expected).unwrap(), plaintext);

    let mut tampered = expected.clone();
    tampered[20] ^= 1;
    assert!(cipher(&key).decrypt([&ad], &tampered).is_err());
}

/// RFC 5297, Appendix A.2: nonce-based authenticated encryption, two headers and the nonce
/// last.
#[test]
fn rfc5297_a2_nonce_based() {
    let key = hex("7f7e7d7c 7b7a7978 77767574 73727170
                   40414243 44454647 48494a4b 4c4d4e4f");
    let ad1 = hex("00112233 44556677 8899aabb ccddeeff
                   deaddada deaddada ffeeddcc bbaa9988
                   77665544 33221100");
    let ad2 = hex("10203040 50607080 90a0");
    let nonce = hex("09f91102 9d74e35b d84156c5 635688c0");
    let plaintext = hex("74686973 20697320 736f6d65 20706c61
                         696e7465 78742074 6f20656e 63727970
                         74207573 696e6720 5349562d 414553");
    let expected = hex("7bdb6e3b 432667eb 06f4d14b ff2fbd0f
                        cb900f2f ddbe4043 26601965 c889bf17
                        dba77ceb 094fa663 b7a3f748 ba8af829
                        ea64ad54 4a272e9c 485b62a3 fd5c0d");
    assert_eq!(
        plaintext,
        b"this is some plaintext to encrypt using SIV-AES"
    );

    let headers = [&ad1, &ad2, &nonce];
    let sealed = cipher(&key).encrypt(headers, &plaintext).unwrap();
    assert_eq!(sealed, expected);
    assert_eq!(cipher(&key).decrypt(headers, &expected).unwrap(), plaintext);

    // Header order matters: it is a vector, not a set.
    assert!(
        cipher(&key)
            .decrypt([&ad2, &ad1, &nonce], &expected)
            .is_err()
    );
    assert!(cipher(&key).decrypt([&ad1, &ad2], &expected).is_err());
}

fn key_ref(material: &KeyMaterial) -> KeyRef<'_> {
    KeyRef {
        key_id: "alias/test",
        version: 7,
        material,
    }
}

fn identity() -> impl Strategy<Value = ResourceIdentity> {
    (
        "[A-Za-z]{0,12}",
        "[a-z0-9-]{0,20}",
        "[a-z0-9.-]{0,30}",
        "[a-f0-9-]{0,36}",
    )
        .prop_map(|(kind, namespace, name, version_id)| ResourceIdentity {
            kind,
            namespace,
            name,
            version_id,
        })
}

fn binding() -> impl Strategy<Value = Binding> {
    (
        proptest::option::of(identity()),
        proptest::collection::btree_map("\\PC{0,8}", "\\PC{0,8}", 0..4),
    )
        .prop_map(|(resource, context)| Binding { resource, context })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn seal_open_round_trips(
        plaintext in proptest::collection::vec(any::<u8>(), 0..=65536),
        binding in binding(),
    ) {
        let material = KeyMaterial::generate();
        let blob = seal(key_ref(&material), &binding, &plaintext).unwrap();
        let header = parse_header(&blob).unwrap();
        prop_assert_eq!(header.key_id.as_str(), "alias/test");
        prop_assert_eq!(header.key_version, 7);
        let opened = open(&material, &binding, &blob).unwrap();
        prop_assert_eq!(opened.expose(), &plaintext[..]);
    }

    #[test]
    fn a_changed_context_never_opens(
        plaintext in proptest::collection::vec(any::<u8>(), 0..64),
        binding in binding(),
        other in binding(),
    ) {
        prop_assume!(binding != other);
        let material = KeyMaterial::generate();
        let blob = seal(key_ref(&material), &binding, &plaintext).unwrap();
        prop_assert!(matches!(open(&material, &other, &blob), Err(CryptoError::Authentication)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let material = KeyMaterial::from_bytes(&[3; 64]).unwrap();
        let _ = parse_header(&bytes);
        prop_assert!(open(&material, &Binding::default(), &bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_after_a_valid_prefix_never_panic(
        cut in 0usize..200,
        tail in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        // Starts as a real blob so that parsing gets past the magic and into the length fields.
        let material = KeyMaterial::from_bytes(&[3; 64]).unwrap();
        let blob = seal(key_ref(&material), &Binding::default(), b"payload").unwrap();
        let mut bytes = blob[..cut.min(blob.len())].to_vec();
        bytes.extend_from_slice(&tail);
        let _ = parse_header(&bytes);
        let _ = open(&material, &Binding::default(), &bytes);
    }

    #[test]
    fn mutated_blobs_never_open(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
    ) {
        let material = KeyMaterial::from_bytes(&[3; 64]).unwrap();
        let binding = Binding::context(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
        let original = seal(key_ref(&material), &binding, b"payload").unwrap();
        let mut blob = original.clone();
        for (at, mask) in edits {
            let i = at.index(blob.len());
            blob[i] ^= mask;
        }
        // Two edits at one place may cancel out; only a blob that really changed must fail.
        prop_assume!(blob != original);
        prop_assert!(open(&material, &binding, &blob).is_err());
    }
}
