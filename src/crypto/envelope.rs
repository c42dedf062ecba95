//! Envelope encryption of stored values into self-describing blobs.
//!
//! Each call to [`seal`] draws a fresh 64-byte data key (DEK), wraps it under the KmsKey
//! version's material, and seals the plaintext under a key derived from the DEK. Decrypt
//! therefore needs no key id from the caller ([`parse_header`] names the key), as in AWS.
//!
//! # Blob layout (format version 1)
//!
//! All integers are big-endian.
//!
//! | field        | size            | notes                                              |
//! |--------------|-----------------|----------------------------------------------------|
//! | magic        | 4               | `CFR1`                                             |
//! | version      | 1               | `1`                                                |
//! | key id       | 1 + 1..=255     | u8 length, then UTF-8; zero length is refused      |
//! | key version  | 4               | u32                                                |
//! | wrapped DEK  | 2 + 97          | u16 length, then the [`wrap_key`] output of the DEK |
//! | nonce        | 16              | random                                             |
//! | commitment   | 32              | HKDF-SHA256 of the DEK, label `commit`             |
//! | body         | rest, >= 16     | SIV tag (16) then ciphertext                       |
//!
//! Everything before the body is the *header*.
//!
//! # What is authenticated
//!
//! - The DEK is wrapped with associated data binding a purpose label, the key id and the key
//!   version, so a wrapped DEK cannot be moved to another key or version.
//! - The body is sealed with AES-256-SIV under `HKDF-SHA256(DEK, label "body")`, with four
//!   headers: the header bytes, the canonical resource identity, the canonical encryption
//!   context, and the nonce last (RFC 5297, section 3). The binding is not stored: whoever opens
//!   must present it again, so a blob copied onto another resource fails.
//! - The commitment is checked in constant time before decrypting. SIV is not key-committing;
//!   the commitment pins the one DEK a blob can open under, so no blob opens to two plaintexts
//!   under two keys.
//!
//! [`wrap_key`]: super::wrap_key

use std::collections::BTreeMap;

use hkdf::Hkdf;
use rand::Rng;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::CryptoError;
use super::secret::{KEY_LEN, KeyMaterial, SecretBytes};
use super::wrap::{WRAP_OVERHEAD, siv, unwrap_key, wrap_key};

/// Marks a Coffer envelope blob.
pub const MAGIC: [u8; 4] = *b"CFR1";
/// The only blob format this code reads and writes.
pub const FORMAT_VERSION: u8 = 1;
/// Longest key id that fits the header's u8 length field.
pub const MAX_KEY_ID_LEN: usize = 255;
/// Length of the body nonce.
pub const NONCE_LEN: usize = 16;
/// Largest plaintext [`seal`] accepts: 256 KiB, four times AWS Secrets Manager's 64 KiB, and
/// small enough that opening a hostile blob cannot make us allocate much.
pub const MAX_PLAINTEXT_LEN: usize = 256 * 1024;

const COMMITMENT_LEN: usize = 32;
const SIV_TAG_LEN: usize = 16;
/// A wrapped DEK is always this long, so any other length field is malformed.
const WRAPPED_DEK_LEN: usize = KEY_LEN + WRAP_OVERHEAD;

const DEK_WRAP_LABEL: &[u8] = b"coffer/envelope/v1/dek";
const BODY_KEY_LABEL: &[u8] = b"coffer/envelope/v1/body";
const COMMIT_LABEL: &[u8] = b"coffer/envelope/v1/commit";

/// Which stored value a ciphertext belongs to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct ResourceIdentity {
    /// Resource kind, e.g. `Secret` or `Parameter`.
    pub kind: String,
    /// Namespace (the "account").
    pub namespace: String,
    /// Resource name.
    pub name: String,
    /// Version of the value within the resource.
    pub version_id: String,
}

/// What a blob is bound to besides its key. Not stored in the blob; must be presented to open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Binding {
    /// The resource the value belongs to, if any (raw KMS Encrypt has none).
    pub resource: Option<ResourceIdentity>,
    /// The caller's encryption context, as in AWS KMS.
    pub context: BTreeMap<String, String>,
}

impl Binding {
    /// A binding to an encryption context only.
    pub fn context(context: BTreeMap<String, String>) -> Self {
        Self {
            resource: None,
            context,
        }
    }

    /// A binding to a resource only.
    pub fn resource(resource: ResourceIdentity) -> Self {
        Self {
            resource: Some(resource),
            context: BTreeMap::new(),
        }
    }

    /// Adds an encryption context to this binding.
    pub fn with_context(mut self, context: BTreeMap<String, String>) -> Self {
        self.context = context;
        self
    }
}

/// The KmsKey version to seal under.
#[derive(Clone, Copy, Debug)]
pub struct KeyRef<'a> {
    /// KmsKey id, written into the header so decrypt can find the key.
    pub key_id: &'a str,
    /// Version of that key.
    pub version: u32,
    /// That version's material.
    pub material: &'a KeyMaterial,
}

/// The parsed header of a blob: enough to find the key, without decrypting anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// KmsKey id that sealed the blob.
    pub key_id: String,
    /// Version of that key.
    pub key_version: u32,
    wrapped_dek: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    commitment: [u8; COMMITMENT_LEN],
    /// Length of the header, i.e. the offset of the body.
    header_len: usize,
}

/// Seals `plaintext` under `key`, bound to `binding`.
pub fn seal(key: KeyRef<'_>, binding: &Binding, plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if plaintext.len() > MAX_PLAINTEXT_LEN {
        return Err(CryptoError::PlaintextTooLarge {
            len: plaintext.len(),
            max: MAX_PLAINTEXT_LEN,
        });
    }
    let key_id_len = u8::try_from(key.key_id.len())
        .ok()
        .filter(|len| *len > 0)
        .ok_or(CryptoError::InvalidKeyId(key.key_id.len()))?;

    let dek = KeyMaterial::generate();
    let wrapped_dek = wrap_key(
        key.material,
        &dek_wrap_aad(key.key_id, key.version),
        dek.expose(),
    )?;
    let wrapped_len = u16::try_from(wrapped_dek.len())
        .map_err(|_| CryptoError::Internal("wrapped data key does not fit its length field"))?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let derived = derive(&dek)?;

    let mut blob = Vec::with_capacity(
        MAGIC.len()
            + 1
            + 1
            + key.key_id.len()
            + 4
            + 2
            + wrapped_dek.len()
            + NONCE_LEN
            + COMMITMENT_LEN
            + SIV_TAG_LEN
            + plaintext.len(),
    );
    blob.extend_from_slice(&MAGIC);
    blob.push(FORMAT_VERSION);
    blob.push(key_id_len);
    blob.extend_from_slice(key.key_id.as_bytes());
    blob.extend_from_slice(&key.version.to_be_bytes());
    blob.extend_from_slice(&wrapped_len.to_be_bytes());
    blob.extend_from_slice(&wrapped_dek);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&derived.commitment[..]);

    let body = siv(&derived.body_key)
        .encrypt(body_headers(&blob, binding, &nonce), plaintext)
        .map_err(|_| CryptoError::Internal("AES-SIV refused to seal"))?;
    blob.extend_from_slice(&body);
    Ok(blob)
}

/// Reads a blob's header, so the caller can load the key it names. Checks structure only.
pub fn parse_header(blob: &[u8]) -> Result<BlobHeader, CryptoError> {
    let mut r = Reader(blob);
    if r.take(MAGIC.len())? != MAGIC {
        return Err(CryptoError::Malformed(
            "not a Coffer ciphertext (bad magic)",
        ));
    }
    if r.byte()? != FORMAT_VERSION {
        return Err(CryptoError::Malformed("unsupported format version"));
    }
    let key_id_len = usize::from(r.byte()?);
    if key_id_len == 0 {
        return Err(CryptoError::Malformed("empty key id"));
    }
    let key_id = std::str::from_utf8(r.take(key_id_len)?)
        .map_err(|_| CryptoError::Malformed("key id is not UTF-8"))?
        .to_owned();
    let key_version = u32::from_be_bytes(r.array()?);
    let wrapped_len = usize::from(u16::from_be_bytes(r.array()?));
    if wrapped_len != WRAPPED_DEK_LEN {
        return Err(CryptoError::Malformed(
            "wrapped data key has the wrong length",
        ));
    }
    let wrapped_dek = r.take(wrapped_len)?.to_vec();
    let nonce = r.array()?;
    let commitment = r.array()?;
    let header_len = blob.len() - r.0.len();
    Ok(BlobHeader {
        key_id,
        key_version,
        wrapped_dek,
        nonce,
        commitment,
        header_len,
    })
}

/// Opens a blob with the material of the key version its header names, and the same binding
/// it was sealed with.
pub fn open(
    material: &KeyMaterial,
    binding: &Binding,
    blob: &[u8],
) -> Result<SecretBytes, CryptoError> {
    let header = parse_header(blob)?;
    let (header_bytes, body) = blob
        .split_at_checked(header.header_len)
        .ok_or(CryptoError::Malformed("truncated"))?;
    if body.len() < SIV_TAG_LEN {
        return Err(CryptoError::Malformed("truncated"));
    }
    if body.len() > SIV_TAG_LEN + MAX_PLAINTEXT_LEN {
        return Err(CryptoError::Malformed(
            "body is larger than any sealed plaintext",
        ));
    }

    let dek = unwrap_key(
        material,
        &dek_wrap_aad(&header.key_id, header.key_version),
        &header.wrapped_dek,
    )?;
    let dek = KeyMaterial::from_bytes(dek.expose()).map_err(|_| CryptoError::Authentication)?;
    let derived = derive(&dek)?;
    if !bool::from(derived.commitment[..].ct_eq(&header.commitment)) {
        return Err(CryptoError::Authentication);
    }
    let plaintext = siv(&derived.body_key)
        .decrypt(body_headers(header_bytes, binding, &header.nonce), body)
        .map_err(|_| CryptoError::Authentication)?;
    Ok(SecretBytes::new(plaintext))
}

/// Associated data for wrapping a DEK: purpose, key id (length-prefixed) and key version.
fn dek_wrap_aad(key_id: &str, version: u32) -> Vec<u8> {
    let mut aad = Vec::with_capacity(DEK_WRAP_LABEL.len() + 4 + key_id.len() + 4);
    aad.extend_from_slice(DEK_WRAP_LABEL);
    put_bytes(&mut aad, key_id.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

/// The SIV headers of the body, in order; the nonce is last as RFC 5297 asks.
fn body_headers(header: &[u8], binding: &Binding, nonce: &[u8; NONCE_LEN]) -> [Vec<u8>; 4] {
    [
        header.to_vec(),
        canonical_resource(binding.resource.as_ref()),
        canonical_context(&binding.context),
        nonce.to_vec(),
    ]
}

/// `0x00` for no resource; `0x01` then four length-prefixed fields otherwise.
fn canonical_resource(resource: Option<&ResourceIdentity>) -> Vec<u8> {
    match resource {
        None => vec![0],
        Some(id) => {
            let mut out = vec![1];
            for field in [&id.kind, &id.namespace, &id.name, &id.version_id] {
                put_bytes(&mut out, field.as_bytes());
            }
            out
        }
    }
}

/// Pair count, then each key and value length-prefixed, in byte order of keys (a
/// `BTreeMap<String, _>` iterates that way). Every distinct map has a distinct encoding.
fn canonical_context(context: &BTreeMap<String, String>) -> Vec<u8> {
    let mut out = Vec::new();
    put_len(&mut out, context.len());
    for (k, v) in context {
        put_bytes(&mut out, k.as_bytes());
        put_bytes(&mut out, v.as_bytes());
    }
    out
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_len(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// u64 so that no length can be truncated, whatever its size.
fn put_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&(len as u64).to_be_bytes());
}

/// Keys derived from a DEK.
struct Derived {
    body_key: KeyMaterial,
    commitment: Zeroizing<[u8; COMMITMENT_LEN]>,
}

fn derive(dek: &KeyMaterial) -> Result<Derived, CryptoError> {
    let hkdf = Hkdf::<Sha256>::new(None, dek.expose());
    let mut body_key = KeyMaterial::zeroed();
    let mut commitment = Zeroizing::new([0u8; COMMITMENT_LEN]);
    hkdf.expand(BODY_KEY_LABEL, body_key.expose_mut())
        .and_then(|()| hkdf.expand(COMMIT_LABEL, &mut commitment[..]))
        .map_err(|_| CryptoError::Internal("HKDF output length"))?;
    Ok(Derived {
        body_key,
        commitment,
    })
}

/// A cursor over hostile bytes: every read is bounds-checked and reports truncation.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CryptoError> {
        let (head, rest) = self
            .0
            .split_at_checked(n)
            .ok_or(CryptoError::Malformed("truncated"))?;
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CryptoError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, CryptoError> {
        Ok(self.array::<1>()?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> ResourceIdentity {
        ResourceIdentity {
            kind: "Secret".into(),
            namespace: "team-a".into(),
            name: "db-password".into(),
            version_id: "v-1".into(),
        }
    }

    fn context() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("purpose".to_owned(), "test".to_owned()),
            ("app".to_owned(), "shop".to_owned()),
        ])
    }

    fn full_binding() -> Binding {
        Binding::resource(identity()).with_context(context())
    }

    fn sealed(material: &KeyMaterial, binding: &Binding, plaintext: &[u8]) -> Vec<u8> {
        let key = KeyRef {
            key_id: "key-1",
            version: 3,
            material,
        };
        seal(key, binding, plaintext).unwrap()
    }

    #[test]
    fn round_trips_with_and_without_binding() {
        let material = KeyMaterial::generate();
        let bindings = [
            Binding::default(),
            Binding::context(context()),
            Binding::resource(identity()),
            full_binding(),
        ];
        for binding in &bindings {
            for plaintext in [&b""[..], b"x", b"sixteen bytes!!!", &[0xaa; 1000][..]] {
                let blob = sealed(&material, binding, plaintext);
                let opened = open(&material, binding, &blob).unwrap();
                assert_eq!(opened.expose(), plaintext);
            }
        }
    }

    #[test]
    fn header_names_the_key() {
        let material = KeyMaterial::generate();
        let blob = sealed(&material, &Binding::default(), b"hello");
        let header = parse_header(&blob).unwrap();
        assert_eq!(header.key_id, "key-1");
        assert_eq!(header.key_version, 3);
        assert_eq!(
            header.header_len,
            4 + 1 + 1 + 5 + 4 + 2 + WRAPPED_DEK_LEN + 16 + 32
        );
        assert_eq!(blob.len(), header.header_len + SIV_TAG_LEN + 5);
        assert_eq!(&blob[..4], b"CFR1");
        assert_eq!(blob[4], 1);
    }

    #[test]
    fn seals_are_randomized() {
        let material = KeyMaterial::generate();
        let a = sealed(&material, &Binding::default(), b"same");
        let b = sealed(&material, &Binding::default(), b"same");
        assert_ne!(a, b);
    }

    #[test]
    fn plaintext_size_limit() {
        let material = KeyMaterial::generate();
        let at_limit = vec![1u8; MAX_PLAINTEXT_LEN];
        let blob = sealed(&material, &Binding::default(), &at_limit);
        assert_eq!(
            open(&material, &Binding::default(), &blob).unwrap().len(),
            MAX_PLAINTEXT_LEN
        );

        let key = KeyRef {
            key_id: "k",
            version: 1,
            material: &material,
        };
        let err = seal(key, &Binding::default(), &vec![1u8; MAX_PLAINTEXT_LEN + 1]).unwrap_err();
        assert!(
            matches!(err, CryptoError::PlaintextTooLarge { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn key_id_length_is_checked() {
        let material = KeyMaterial::generate();
        for id in [String::new(), "k".repeat(256)] {
            let key = KeyRef {
                key_id: &id,
                version: 1,
                material: &material,
            };
            let err = seal(key, &Binding::default(), b"x").unwrap_err();
            assert!(
                matches!(err, CryptoError::InvalidKeyId(n) if n == id.len()),
                "{err:?}"
            );
        }
        let id = "k".repeat(255);
        let key = KeyRef {
            key_id: &id,
            version: 1,
            material: &material,
        };
        let blob = seal(key, &Binding::default(), b"x").unwrap();
        assert_eq!(parse_header(&blob).unwrap().key_id, id);
        assert_eq!(
            open(&material, &Binding::default(), &blob)
                .unwrap()
                .expose(),
            b"x"
        );
    }

    #[test]
    fn every_byte_flip_fails() {
        let material = KeyMaterial::generate();
        let binding = full_binding();
        let blob = sealed(&material, &binding, b"a secret worth keeping");
        for i in 0..blob.len() {
            for mask in [0x01, 0x80, 0xff] {
                let mut bad = blob.clone();
                bad[i] ^= mask;
                match open(&material, &binding, &bad) {
                    Err(CryptoError::Malformed(_) | CryptoError::Authentication) => {}
                    other => panic!("byte {i} mask {mask:#x}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn every_truncation_fails() {
        let material = KeyMaterial::generate();
        let blob = sealed(&material, &Binding::default(), b"a secret worth keeping");
        for len in 0..blob.len() {
            match open(&material, &Binding::default(), &blob[..len]) {
                Err(CryptoError::Malformed(_) | CryptoError::Authentication) => {}
                other => panic!("length {len}: {other:?}"),
            }
        }
        let mut longer = blob.clone();
        longer.push(0);
        assert!(matches!(
            open(&material, &Binding::default(), &longer),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn header_errors_are_malformed() {
        let material = KeyMaterial::generate();
        let blob = sealed(&material, &Binding::default(), b"x");
        let cases: [(usize, u8, &str); 5] = [
            (0, b'X', "bad magic"),
            (4, 2, "unsupported format version"),
            (5, 0, "empty key id"),
            (6, 0xff, "key id is not UTF-8"),
            (16, 0xff, "wrapped data key has the wrong length"),
        ];
        for (at, value, reason) in cases {
            let mut bad = blob.clone();
            bad[at] = value;
            let err = parse_header(&bad).unwrap_err();
            assert!(err.to_string().contains(reason), "{at}: {err}");
            assert!(err.to_string().starts_with("malformed ciphertext blob"));
        }
        assert!(matches!(
            parse_header(&[]),
            Err(CryptoError::Malformed("truncated"))
        ));
    }

    #[test]
    fn wrong_binding_fails() {
        let material = KeyMaterial::generate();
        let binding = full_binding();
        let blob = sealed(&material, &binding, b"value");

        let mut wrong = Vec::new();
        wrong.push(Binding::default());
        wrong.push(Binding::resource(identity()));
        wrong.push(Binding::context(context()));
        let mut ctx = context();
        ctx.insert("purpose".into(), "other".into());
        wrong.push(Binding::resource(identity()).with_context(ctx));
        let mut ctx = context();
        ctx.insert("extra".into(), String::new());
        wrong.push(Binding::resource(identity()).with_context(ctx));
        let mut ctx = context();
        ctx.remove("app");
        wrong.push(Binding::resource(identity()).with_context(ctx));
        for field in 0..4 {
            let mut id = identity();
            match field {
                0 => id.kind = "Parameter".into(),
                1 => id.namespace = "team-b".into(),
                2 => id.name = "db-password2".into(),
                _ => id.version_id = "v-2".into(),
            }
            wrong.push(Binding::resource(id).with_context(context()));
        }
        wrong.push(Binding::resource(ResourceIdentity::default()).with_context(context()));

        for binding in &wrong {
            let err = open(&material, binding, &blob).unwrap_err();
            assert!(
                matches!(err, CryptoError::Authentication),
                "{binding:?}: {err:?}"
            );
            assert_eq!(err.to_string(), "ciphertext could not be authenticated");
        }
    }

    #[test]
    fn canonical_encodings_are_unambiguous() {
        // Moving bytes between adjacent fields must change the encoding.
        let a = ResourceIdentity {
            kind: "ab".into(),
            namespace: "c".into(),
            ..ResourceIdentity::default()
        };
        let b = ResourceIdentity {
            kind: "a".into(),
            namespace: "bc".into(),
            ..ResourceIdentity::default()
        };
        assert_ne!(canonical_resource(Some(&a)), canonical_resource(Some(&b)));
        assert_ne!(
            canonical_resource(None),
            canonical_resource(Some(&ResourceIdentity::default()))
        );

        let a = BTreeMap::from([("ab".to_owned(), "c".to_owned())]);
        let b = BTreeMap::from([("a".to_owned(), "bc".to_owned())]);
        assert_ne!(canonical_context(&a), canonical_context(&b));
        // Insertion order does not matter.
        let mut x = BTreeMap::new();
        x.insert("z".to_owned(), "1".to_owned());
        x.insert("a".to_owned(), "2".to_owned());
        let mut y = BTreeMap::new();
        y.insert("a".to_owned(), "2".to_owned());
        y.insert("z".to_owned(), "1".to_owned());
        assert_eq!(canonical_context(&x), canonical_context(&y));
    }

    #[test]
    fn wrong_key_fails() {
        let material = KeyMaterial::generate();
        let blob = sealed(&material, &Binding::default(), b"value");
        let err = open(&KeyMaterial::generate(), &Binding::default(), &blob).unwrap_err();
        assert!(matches!(err, CryptoError::Authentication));
    }

    #[test]
    fn wrong_key_id_or_version_in_header_fails() {
        let material = KeyMaterial::generate();
        let blob = sealed(&material, &Binding::default(), b"value");
        // "key-1" -> "key-2": same length, still valid UTF-8.
        let mut other_id = blob.clone();
        other_id[6 + 4] = b'2';
        assert_eq!(parse_header(&other_id).unwrap().key_id, "key-2");
        assert!(matches!(
            open(&material, &Binding::default(), &other_id),
            Err(CryptoError::Authentication)
        ));

        let mut other_version = blob.clone();
        other_version[6 + 5 + 3] = 4;
        assert_eq!(parse_header(&other_version).unwrap().key_version, 4);
        assert!(matches!(
            open(&material, &Binding::default(), &other_version),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn wrapped_dek_cannot_move_between_blobs() {
        // Swap the body of one blob onto another's header: the commitment or SIV must catch it.
        let material = KeyMaterial::generate();
        let a = sealed(&material, &Binding::default(), b"value a");
        let b = sealed(&material, &Binding::default(), b"value b");
        let split = parse_header(&a).unwrap().header_len;
        let mut mixed = a[..split].to_vec();
        mixed.extend_from_slice(&b[split..]);
        assert!(matches!(
            open(&material, &Binding::default(), &mixed),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn commitment_is_checked() {
        // A commitment that does not match the DEK is refused even when all else is intact.
        let material = KeyMaterial::generate();
        let blob = sealed(&material, &Binding::default(), b"value");
        let header = parse_header(&blob).unwrap();
        let at = header.header_len - COMMITMENT_LEN;
        let mut bad = blob.clone();
        bad[at] ^= 1;
        assert!(matches!(
            open(&material, &Binding::default(), &bad),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn error_messages_hold_no_secret() {
        let material = KeyMaterial::generate();
        let blob = sealed(&material, &Binding::default(), b"TOPSECRETVALUE");
        let mut bad = blob.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        let err = open(&material, &Binding::default(), &bad).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains("TOPSECRETVALUE"));
    }
}
