//! Root keys (docs/architecture.md, `crypto`): the top of the hierarchy, wrapping every KmsKey version's
//! material and other stored secrets.
//!
//! A [`RootKeyring`] holds every root key version; new wraps use the current one, and unwrap
//! accepts any version still held, so rotation never strands old data. A [`RootKeyProvider`]
//! loads the keyring from where it lives and persists rotations.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use zeroize::{Zeroize, Zeroizing};

use super::CryptoError;
use super::secret::{KEY_LEN, KeyMaterial, SecretBytes};
use super::wrap::{unwrap_key, wrap_key};

/// How many times rotation re-reads and retries after losing a resourceVersion race.
pub const MAX_ROOT_KEY_CONFLICT_RETRIES: usize = 5;

const ROOT_WRAP_LABEL: &[u8] = b"coffer/root/v1/wrap";
/// Length of base64 (padded) for one key.
const KEY_B64_LEN: usize = KEY_LEN.div_ceil(3) * 4;
/// No legitimate keyring file comes near this; a larger one is refused before it is read.
const MAX_KEYRING_FILE_LEN: u64 = 4 * 1024 * 1024;

/// All versions of the root key, and which one new wraps use.
#[derive(Clone)]
pub struct RootKeyring {
    versions: BTreeMap<u32, KeyMaterial>,
    current: u32,
}

impl RootKeyring {
    /// A new keyring holding one random version, version 1.
    pub fn generate() -> Self {
        Self {
            versions: BTreeMap::from([(1, KeyMaterial::generate())]),
            current: 1,
        }
    }

    /// The version new wraps use.
    pub fn current_version(&self) -> u32 {
        self.current
    }

    /// Every version held, in ascending order.
    pub fn versions(&self) -> impl Iterator<Item = u32> + '_ {
        self.versions.keys().copied()
    }

    /// Adds a random version above every existing one and makes it current. Old versions stay,
    /// so what they wrapped still unwraps.
    pub fn rotate(&mut self) -> Result<u32, CryptoError> {
        let highest = self.versions.keys().next_back().copied().unwrap_or(0);
        let next = highest
            .checked_add(1)
            .ok_or(CryptoError::RootKeyVersionsExhausted)?;
        self.versions.insert(next, KeyMaterial::generate());
        self.current = next;
        Ok(next)
    }

    /// Wraps `secret` under the current version, bound to `aad`. The output starts with that
    /// version (u32, big-endian) so [`RootKeyring::unwrap`] can pick the key.
    pub fn wrap(&self, aad: &[u8], secret: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let material = self
            .versions
            .get(&self.current)
            .ok_or(CryptoError::UnknownRootKeyVersion(self.current))?;
        let wrapped = wrap_key(material, &root_aad(self.current, aad), secret)?;
        let mut out = Vec::with_capacity(4 + wrapped.len());
        out.extend_from_slice(&self.current.to_be_bytes());
        out.extend_from_slice(&wrapped);
        Ok(out)
    }

    /// Unwraps what [`RootKeyring::wrap`] produced under any version still in the keyring.
    pub fn unwrap(&self, aad: &[u8], wrapped: &[u8]) -> Result<SecretBytes, CryptoError> {
        let (version, rest) = wrapped
            .split_first_chunk::<4>()
            .ok_or(CryptoError::Malformed("root-wrapped value is truncated"))?;
        let version = u32::from_be_bytes(*version);
        let material = self
            .versions
            .get(&version)
            .ok_or(CryptoError::UnknownRootKeyVersion(version))?;
        unwrap_key(material, &root_aad(version, aad), rest)
    }

    /// The keyring as `{"current":N,"keys":{"1":"<base64>",...}}`, in a buffer wiped on drop.
    pub fn to_json(&self) -> Result<SecretBytes, CryptoError> {
        // Sized up front so the buffer never reallocates and leaves an unwiped copy behind.
        let capacity = 40 + self.versions.len() * (KEY_B64_LEN + 20);
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(format!("{{\"current\":{},\"keys\":{{", self.current).as_bytes());
        let mut encoded = Zeroizing::new([0u8; KEY_B64_LEN]);
        for (i, (version, material)) in self.versions.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(format!("\"{version}\":\"").as_bytes());
            let n = BASE64
                .encode_slice(material.expose(), encoded.as_mut_slice())
                .map_err(|_| CryptoError::Internal("base64 buffer too small"))?;
            out.extend_from_slice(
                encoded
                    .get(..n)
                    .ok_or(CryptoError::Internal("base64 buffer too small"))?,
            );
            out.push(b'"');
        }
        out.extend_from_slice(b"}}");
        Ok(SecretBytes::new(out))
    }

    /// Parses [`RootKeyring::to_json`] output. Keys are decoded straight into wiped buffers.
    pub fn from_json(json: &[u8]) -> Result<Self, CryptoError> {
        let doc: KeyringDocument = serde_json::from_slice(json).map_err(|e| {
            // serde_json's own messages can quote the offending value, which may be key
            // material; only this module's fixed messages are passed on.
            let text = Zeroizing::new(e.to_string());
            let reason = OUR_MESSAGES
                .iter()
                .find(|m| text.starts_with(*m))
                .copied()
                .unwrap_or("not a keyring document");
            CryptoError::InvalidKeyring(format!(
                "{reason} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        Self::from_versions(doc.keys.0, doc.current)
    }

    fn from_versions(
        versions: BTreeMap<u32, KeyMaterial>,
        current: u32,
    ) -> Result<Self, CryptoError> {
        if !versions.contains_key(&current) {
            return Err(CryptoError::InvalidKeyring(format!(
                "current version {current} has no key"
            )));
        }
        Ok(Self { versions, current })
    }
}

impl fmt::Debug for RootKeyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootKeyring")
            .field("current", &self.current)
            .field("versions", &self.versions.keys().collect::<Vec<_>>())
            .field("material", &format_args!("[redacted]"))
            .finish()
    }
}

/// Binds a root wrap to its purpose and the root version, so the version prefix cannot be
/// swapped.
fn root_aad(version: u32, aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ROOT_WRAP_LABEL.len() + 4 + aad.len());
    out.extend_from_slice(ROOT_WRAP_LABEL);
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(aad);
    out
}

const MSG_VERSION_NAME: &str = "key names must be version numbers";
const MSG_DUPLICATE: &str = "duplicate version";
const MSG_NO_KEYS: &str = "no keys";
const MSG_BAD_KEY: &str = "key is not base64 of 64 bytes";
/// Errors raised by the visitors below; they quote nothing from the input.
const OUR_MESSAGES: [&str; 4] = [MSG_VERSION_NAME, MSG_DUPLICATE, MSG_NO_KEYS, MSG_BAD_KEY];

/// A decimal version number in canonical form (no sign, no leading zero), at least 1.
fn parse_version(text: &str) -> Option<u32> {
    let version: u32 = text.parse().ok()?;
    (version >= 1 && version.to_string() == text).then_some(version)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyringDocument {
    current: u32,
    keys: KeyMap,
}

/// The `keys` object; refuses duplicates, bad version names and keys of the wrong length.
struct KeyMap(BTreeMap<u32, KeyMaterial>);

impl<'de> Deserialize<'de> for KeyMap {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(KeyMapVisitor)
    }
}

struct KeyMapVisitor;

impl<'de> Visitor<'de> for KeyMapVisitor {
    type Value = KeyMap;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map from version number to base64 key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<KeyMap, A::Error> {
        let mut versions = BTreeMap::new();
        while let Some(name) = map.next_key::<String>()? {
            let version =
                parse_version(&name).ok_or_else(|| de::Error::custom(MSG_VERSION_NAME))?;
            let B64Key(material) = map.next_value()?;
            if versions.insert(version, material).is_some() {
                return Err(de::Error::custom(MSG_DUPLICATE));
            }
        }
        if versions.is_empty() {
            return Err(de::Error::custom(MSG_NO_KEYS));
        }
        Ok(KeyMap(versions))
    }
}

/// One base64 key, decoded without an intermediate owned string.
struct B64Key(KeyMaterial);

impl<'de> Deserialize<'de> for B64Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(B64KeyVisitor)
    }
}

struct B64KeyVisitor;

impl Visitor<'_> for B64KeyVisitor {
    type Value = B64Key;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a base64 string of a 64-byte key")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<B64Key, E> {
        // Deliberately generic errors: the text is key material.
        let invalid = || E::custom(MSG_BAD_KEY);
        if text.len() != KEY_B64_LEN {
            return Err(invalid());
        }
        let mut decoded = Zeroizing::new([0u8; KEY_LEN + 3]);
        let n = BASE64
            .decode_slice(text, decoded.as_mut_slice())
            .map_err(|_| invalid())?;
        let key = KeyMaterial::from_bytes(decoded.get(..n).ok_or_else(invalid)?)
            .map_err(|_| invalid())?;
        Ok(B64Key(key))
    }
}

/// Where the root keyring lives.
///
/// Implementations exist for a mounted file ([`FileRootKeyProvider`]) and a Kubernetes Secret
/// ([`KubernetesRootKeyProvider`]). The trait is kept small so that a `pkcs11` provider (an HSM
/// that wraps and unwraps without releasing the root key) can be added later; it is not
/// implemented yet.
#[async_trait]
pub trait RootKeyProvider: Send + Sync {
    /// The keyring, created with one version on first start when absent.
    async fn load(&self) -> Result<RootKeyring, CryptoError>;

    /// Adds a new current version, persists it, and returns the updated keyring.
    async fn rotate(&self) -> Result<RootKeyring, CryptoError>;
}

/// A keyring kept as a JSON file ([`RootKeyring::to_json`]) that only its owner may read.
///
/// Writes are atomic (temporary file with mode 0600 in the same directory, fsync, rename), so
/// a crash leaves the old or the new keyring, never half of one. Concurrent writers from
/// different processes are not coordinated: run one controller per file.
#[derive(Clone, Debug)]
pub struct FileRootKeyProvider {
    path: PathBuf,
}

impl FileRootKeyProvider {
    /// A provider for the keyring file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The keyring file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn blocking<T, F>(&self, f: F) -> Result<T, CryptoError>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T, CryptoError> + Send + 'static,
    {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || f(&path))
            .await
            .map_err(|_| CryptoError::Internal("root key file task did not finish"))?
    }
}

#[async_trait]
impl RootKeyProvider for FileRootKeyProvider {
    async fn load(&self) -> Result<RootKeyring, CryptoError> {
        self.blocking(load_or_create_file).await
    }

    async fn rotate(&self) -> Result<RootKeyring, CryptoError> {
        self.blocking(|path| {
            let mut ring = load_or_create_file(path)?;
            let version = ring.rotate()?;
            write_file_atomically(path, &ring)?;
            tracing::info!(path = %path.display(), version, "rotated root key");
            Ok(ring)
        })
        .await
    }
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CryptoError {
    let path = path.display().to_string();
    move |source| CryptoError::Io {
        action,
        path,
        source,
    }
}

fn load_or_create_file(path: &Path) -> Result<RootKeyring, CryptoError> {
    match std::fs::File::open(path) {
        Ok(file) => read_keyring_file(path, file),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let ring = RootKeyring::generate();
            write_file_atomically(path, &ring)?;
            tracing::info!(path = %path.display(), "created root keyring file");
            Ok(ring)
        }
        Err(e) => Err(io_error("opening root key file", path)(e)),
    }
}

fn read_keyring_file(path: &Path, mut file: std::fs::File) -> Result<RootKeyring, CryptoError> {
    // Checked on the open handle, so the file cannot be swapped between the check and the read.
    let meta = file
        .metadata()
        .map_err(io_error("reading metadata of root key file", path))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CryptoError::InsecurePermissions {
            path: path.display().to_string(),
            mode,
        });
    }
    if !meta.is_file() {
        return Err(CryptoError::InvalidKeyring(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > MAX_KEYRING_FILE_LEN {
        return Err(CryptoError::InvalidKeyring(format!(
            "{} is larger than {MAX_KEYRING_FILE_LEN} bytes",
            path.display()
        )));
    }
    // One byte more than the file, so reading to the end never reallocates (and so never leaves
    // an unwiped copy behind) unless the file grew meanwhile.
    let capacity = usize::try_from(meta.len()).unwrap_or(0).saturating_add(1);
    let mut json = Zeroizing::new(Vec::with_capacity(capacity));
    (&mut file)
        .take(MAX_KEYRING_FILE_LEN + 1)
        .read_to_end(&mut json)
        .map_err(io_error("reading root key file", path))?;
    if json.len() as u64 > MAX_KEYRING_FILE_LEN {
        return Err(CryptoError::InvalidKeyring(format!(
            "{} is larger than {MAX_KEYRING_FILE_LEN} bytes",
            path.display()
        )));
    }
    RootKeyring::from_json(&json)
}

fn write_file_atomically(path: &Path, ring: &RootKeyring) -> Result<(), CryptoError> {
    let json = ring.to_json()?;
    crate::fsutil::write_private_file(path, json.expose())
        .map_err(io_error("writing root key file", path))
}

/// A keyring kept in a core Secret: data keys `v1`, `v2`, ... hold raw 64-byte material and
/// `current` the decimal current version.
///
/// The first replica to start creates it with `create`, so racing replicas converge on the
/// winner's keys. Rotation uses `replace` with the resourceVersion read, re-reading on conflict.
/// Copies that kube and serde make while (de)serializing the Secret are outside this module's
/// reach; the copies this module holds are wiped.
#[derive(Clone)]
pub struct KubernetesRootKeyProvider {
    client: Client,
    namespace: String,
    name: String,
}

impl fmt::Debug for KubernetesRootKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesRootKeyProvider")
            .field("namespace", &self.namespace)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl KubernetesRootKeyProvider {
    /// A provider for Secret `name` in `namespace` (normally the controller's own).
    pub fn new(client: Client, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            client,
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn api(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    fn kube_error(&self, action: &'static str, err: &kube::Error) -> CryptoError {
        let detail = match err {
            kube::Error::Api(status) => {
                format!("API server answered {} {}", status.code, status.reason)
            }
            // Decoding errors may quote the body, which holds key material.
            kube::Error::SerdeError(_) => "could not decode the API server's answer".to_owned(),
            other => other.to_string(),
        };
        CryptoError::Kubernetes {
            action,
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            detail,
        }
    }

    fn invalid(&self, what: &str) -> CryptoError {
        CryptoError::InvalidKeyring(format!("Secret {}/{}: {what}", self.namespace, self.name))
    }

    fn keyring_from_secret(&self, secret: &Secret) -> Result<RootKeyring, CryptoError> {
        let data = secret
            .data
            .as_ref()
            .ok_or_else(|| self.invalid("has no data"))?;
        let current = data
            .get("current")
            .and_then(|v| std::str::from_utf8(&v.0).ok())
            .and_then(|v| parse_version(v.trim()))
            .ok_or_else(|| self.invalid("`current` is missing or not a version number"))?;
        let mut versions = BTreeMap::new();
        for (name, value) in data {
            let Some(number) = name.strip_prefix('v') else {
                continue;
            };
            let version = parse_version(number)
                .ok_or_else(|| self.invalid(&format!("data key {name:?} is not v<version>")))?;
            let material = KeyMaterial::from_bytes(&value.0)
                .map_err(|_| self.invalid(&format!("data key {name:?} is not {KEY_LEN} bytes")))?;
            versions.insert(version, material);
        }
        RootKeyring::from_versions(versions, current).map_err(|_| {
            self.invalid(&format!(
                "`current` is {current} but there is no v{current}"
            ))
        })
    }
}

/// A new root key Secret holding `ring`.
fn new_secret(namespace: &str, name: &str, ring: &RootKeyring) -> Secret {
    let mut secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "coffer".to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        ..Secret::default()
    };
    fill_secret_data(&mut secret, ring);
    secret
}

/// Replaces the keyring entries of `secret.data`, keeping any other keys.
fn fill_secret_data(secret: &mut Secret, ring: &RootKeyring) {
    let data = secret.data.get_or_insert_with(BTreeMap::new);
    for (version, material) in &ring.versions {
        data.insert(
            format!("v{version}"),
            ByteString(material.expose().to_vec()),
        );
    }
    data.insert(
        "current".to_owned(),
        ByteString(ring.current.to_string().into_bytes()),
    );
}

/// Wipes the key material held in a Secret object we are done with.
fn scrub(secret: &mut Secret) {
    if let Some(data) = secret.data.as_mut() {
        for value in data.values_mut() {
            value.0.zeroize();
        }
    }
}

/// A Secret that is wiped when dropped, on every return path.
struct Scrubbed(Secret);

impl Drop for Scrubbed {
    fn drop(&mut self) {
        scrub(&mut self.0);
    }
}

#[async_trait]
impl RootKeyProvider for KubernetesRootKeyProvider {
    async fn load(&self) -> Result<RootKeyring, CryptoError> {
        let api = self.api();
        let existing = api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.kube_error("get", &e))?;
        if let Some(secret) = existing {
            return self.keyring_from_secret(&Scrubbed(secret).0);
        }

        let ring = RootKeyring::generate();
        let secret = Scrubbed(new_secret(&self.namespace, &self.name, &ring));
        match api.create(&PostParams::default(), &secret.0).await {
            Ok(created) => {
                drop(Scrubbed(created));
                tracing::info!(namespace = %self.namespace, name = %self.name, "created root key Secret");
                Ok(ring)
            }
            Err(kube::Error::Api(status)) if status.is_already_exists() || status.code == 409 => {
                // Another replica won the race; its keys are the keys.
                tracing::info!(namespace = %self.namespace, name = %self.name, "root key Secret created concurrently; using it");
                let winner = api
                    .get(&self.name)
                    .await
                    .map_err(|e| self.kube_error("get", &e))?;
                self.keyring_from_secret(&Scrubbed(winner).0)
            }
            Err(e) => Err(self.kube_error("create", &e)),
        }
    }

    async fn rotate(&self) -> Result<RootKeyring, CryptoError> {
        let api = self.api();
        for _ in 0..MAX_ROOT_KEY_CONFLICT_RETRIES {
            let current = api
                .get_opt(&self.name)
                .await
                .map_err(|e| self.kube_error("get", &e))?;
            let Some(current) = current else {
                // Nothing to rotate yet: create it, then rotate what was created.
                self.load().await?;
                continue;
            };
            let mut secret = Scrubbed(current);
            let mut ring = self.keyring_from_secret(&secret.0)?;
            let version = ring.rotate()?;
            fill_secret_data(&mut secret.0, &ring);
            // `replace` sends the resourceVersion read above: a concurrent change makes it fail
            // with 409 instead of being overwritten.
            match api
                .replace(&self.name, &PostParams::default(), &secret.0)
                .await
            {
                Ok(written) => {
                    drop(Scrubbed(written));
                    tracing::info!(namespace = %self.namespace, name = %self.name, version, "rotated root key");
                    return Ok(ring);
                }
                Err(kube::Error::Api(status)) if status.is_conflict() => {
                    tracing::debug!(namespace = %self.namespace, name = %self.name, "root key Secret changed during rotation; retrying");
                }
                Err(e) => return Err(self.kube_error("replace", &e)),
            }
        }
        Err(CryptoError::RotationConflict {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            attempts: MAX_ROOT_KEY_CONFLICT_RETRIES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_keys(a: &RootKeyring, b: &RootKeyring) -> bool {
        a.current == b.current && a.versions == b.versions
    }

    #[test]
    fn wrap_unwrap_across_rotation() {
        let mut ring = RootKeyring::generate();
        assert_eq!(ring.current_version(), 1);
        let old = ring.wrap(b"kmskey/a/1", b"old secret").unwrap();
        assert_eq!(&old[..4], &1u32.to_be_bytes());

        assert_eq!(ring.rotate().unwrap(), 2);
        assert_eq!(ring.rotate().unwrap(), 3);
        assert_eq!(ring.current_version(), 3);
        assert_eq!(ring.versions().collect::<Vec<_>>(), [1, 2, 3]);
        let new = ring.wrap(b"kmskey/a/2", b"new secret").unwrap();
        assert_eq!(&new[..4], &3u32.to_be_bytes());

        assert_eq!(
            ring.unwrap(b"kmskey/a/1", &old).unwrap().expose(),
            b"old secret"
        );
        assert_eq!(
            ring.unwrap(b"kmskey/a/2", &new).unwrap().expose(),
            b"new secret"
        );
        assert!(matches!(
            ring.unwrap(b"kmskey/a/2", &old),
            Err(CryptoError::Authentication)
        ));
    }

    #[test]
    fn unwrap_checks_the_version_prefix() {
        let mut ring = RootKeyring::generate();
        ring.rotate().unwrap();
        let wrapped = ring.wrap(b"", b"secret").unwrap();

        let mut relabelled = wrapped.clone();
        relabelled[..4].copy_from_slice(&1u32.to_be_bytes());
        assert!(matches!(
            ring.unwrap(b"", &relabelled),
            Err(CryptoError::Authentication)
        ));

        let mut unknown = wrapped.clone();
        unknown[..4].copy_from_slice(&9u32.to_be_bytes());
        assert!(matches!(
            ring.unwrap(b"", &unknown),
            Err(CryptoError::UnknownRootKeyVersion(9))
        ));
        assert!(ring.unwrap(b"", &wrapped[..3]).is_err());
        assert!(RootKeyring::generate().unwrap(b"", &wrapped).is_err());
    }

    #[test]
    fn rotation_stops_at_the_last_version_number() {
        let mut ring = RootKeyring {
            versions: BTreeMap::from([(u32::MAX, KeyMaterial::generate())]),
            current: u32::MAX,
        };
        assert!(matches!(
            ring.rotate(),
            Err(CryptoError::RootKeyVersionsExhausted)
        ));
        assert_eq!(ring.versions().count(), 1);
    }

    #[test]
    fn json_round_trip() {
        let mut ring = RootKeyring::generate();
        ring.rotate().unwrap();
        ring.rotate().unwrap();
        let json = ring.to_json().unwrap();
        let value: serde_json::Value = serde_json::from_slice(json.expose()).unwrap();
        assert_eq!(value["current"], 3);
        assert_eq!(value["keys"].as_object().unwrap().len(), 3);
        let back = RootKeyring::from_json(json.expose()).unwrap();
        assert!(same_keys(&ring, &back));
        // The buffer was sized exactly enough not to reallocate.
        assert!(json.len() <= 40 + 3 * (KEY_B64_LEN + 20));
    }

    #[test]
    fn invalid_json_documents_are_refused_without_quoting_keys() {
        let key = BASE64.encode([7u8; KEY_LEN]);
        let short = BASE64.encode([7u8; KEY_LEN - 1]);
        let cases = [
            ("".to_owned(), "not a keyring document"),
            ("[]".to_owned(), "not a keyring document"),
            (
                format!(r#"{{"keys":{{"1":"{key}"}}}}"#),
                "not a keyring document",
            ),
            (
                format!(r#"{{"current":2,"keys":{{"1":"{key}"}}}}"#),
                "current version 2 has no key",
            ),
            (r#"{"current":1,"keys":{}}"#.to_owned(), MSG_NO_KEYS),
            (
                format!(r#"{{"current":1,"keys":{{"1":"{short}"}}}}"#),
                MSG_BAD_KEY,
            ),
            (
                format!(r#"{{"current":1,"keys":{{"1":"{key}="}}}}"#),
                MSG_BAD_KEY,
            ),
            (
                format!(r#"{{"current":1,"keys":{{"1":"!{}"}}}}"#, &key[1..]),
                MSG_BAD_KEY,
            ),
            (
                r#"{"current":1,"keys":{"1":1}}"#.to_owned(),
                "not a keyring document",
            ),
            (
                format!(r#"{{"current":1,"keys":{{"01":"{key}"}}}}"#),
                MSG_VERSION_NAME,
            ),
            (
                format!(r#"{{"current":1,"keys":{{"0":"{key}"}}}}"#),
                MSG_VERSION_NAME,
            ),
            (
                format!(r#"{{"current":1,"keys":{{"v1":"{key}"}}}}"#),
                MSG_VERSION_NAME,
            ),
            (
                format!(r#"{{"current":1,"keys":{{"1":"{key}","1":"{key}"}}}}"#),
                MSG_DUPLICATE,
            ),
            (
                format!(r#"{{"current":1,"keys":{{"1":"{key}"}},"extra":"{key}"}}"#),
                "not a keyring document",
            ),
        ];
        for (doc, reason) in cases {
            let err = RootKeyring::from_json(doc.as_bytes()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains(reason), "{doc}: {text}");
            assert!(
                !text.contains(&key[..20]) && !text.contains(&short[..20]),
                "{text}"
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let ring = RootKeyring::generate();
        let shown = format!("{ring:?}");
        assert!(shown.contains("[redacted]"), "{shown}");
        let b64 = BASE64.encode(ring.versions[&1].expose());
        assert!(!shown.contains(&b64[..12]));
        assert!(!shown.contains(&format!("{:?}", ring.versions[&1].expose()[0..4].to_vec())));
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[tokio::test]
    async fn file_provider_creates_0600_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root-keys.json");
        let provider = FileRootKeyProvider::new(&path);

        let created = provider.load().await.unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let reloaded = provider.load().await.unwrap();
        assert!(same_keys(&created, &reloaded));

        let wrapped = created.wrap(b"aad", b"kept across rotation").unwrap();
        let rotated = provider.rotate().await.unwrap();
        assert_eq!(rotated.current_version(), 2);
        assert_eq!(mode_of(&path), 0o600);
        let reloaded = FileRootKeyProvider::new(&path).load().await.unwrap();
        assert!(same_keys(&rotated, &reloaded));
        assert_eq!(reloaded.versions[&1], created.versions[&1]);
        assert_eq!(
            reloaded.unwrap(b"aad", &wrapped).unwrap().expose(),
            b"kept across rotation"
        );

        // Only the keyring is left: no temporary files.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from("root-keys.json")]);
    }

    #[tokio::test]
    async fn file_provider_refuses_a_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root-keys.json");
        let provider = FileRootKeyProvider::new(&path);
        provider.load().await.unwrap();

        for mode in [0o644, 0o640, 0o604, 0o660] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let err = provider.load().await.unwrap_err();
            assert!(
                matches!(err, CryptoError::InsecurePermissions { mode: m, .. } if m == mode),
                "{err:?}"
            );
            assert!(err.to_string().contains(&format!("{mode:04o}")), "{err}");
            assert!(provider.rotate().await.is_err());
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert!(provider.load().await.is_ok());
    }

    #[tokio::test]
    async fn file_provider_reports_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("root-keys.json");
        std::fs::write(&path, b"{\"current\":1,\"keys\":{\"1\":\"c2VjcmV0\"}}").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = FileRootKeyProvider::new(&path).load().await.unwrap_err();
        assert!(matches!(err, CryptoError::InvalidKeyring(_)), "{err:?}");
        assert!(!err.to_string().contains("c2VjcmV0"));
    }

    #[tokio::test]
    async fn file_provider_reports_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no-such-dir").join("root-keys.json");
        let err = FileRootKeyProvider::new(&path).load().await.unwrap_err();
        assert!(matches!(err, CryptoError::Io { .. }), "{err:?}");
    }

    /// A mocked API server, the way kube-rs tests controllers.
    mod kubernetes {
        use super::*;
        use http::Method;

        use crate::test_support::mock_api::{ApiServer, expect, respond};

        fn status(code: u16, reason: &str) -> Vec<u8> {
            crate::test_support::mock_api::status(code, reason, &format!("secrets \"{NAME}\""))
        }

        const NS: &str = "coffer-system";
        const NAME: &str = "coffer-root-key";
        const ITEM: &str = "/api/v1/namespaces/coffer-system/secrets/coffer-root-key";
        const COLLECTION: &str = "/api/v1/namespaces/coffer-system/secrets";

        fn provider() -> (KubernetesRootKeyProvider, ApiServer) {
            let (client, handle) = crate::test_support::mock_api::client();
            (KubernetesRootKeyProvider::new(client, NS, NAME), handle)
        }

        fn stored(ring: &RootKeyring, resource_version: &str) -> Vec<u8> {
            let mut secret = new_secret(NS, NAME, ring);
            secret.metadata.resource_version = Some(resource_version.to_owned());
            serde_json::to_vec(&secret).unwrap()
        }

        /// Echoes a written object back as the API server would, with a resourceVersion.
        fn echo(body: &[u8], resource_version: &str) -> Vec<u8> {
            let mut secret: Secret = serde_json::from_slice(body).unwrap();
            secret.metadata.resource_version = Some(resource_version.to_owned());
            serde_json::to_vec(&secret).unwrap()
        }

        fn ring_of(body: &[u8]) -> (Secret, RootKeyring) {
            let secret: Secret = serde_json::from_slice(body).unwrap();
            let (client_stub, _) = provider();
            let ring = client_stub.keyring_from_secret(&secret).unwrap();
            (secret, ring)
        }

        async fn run<T>(
            call: impl std::future::Future<Output = T>,
            server: impl std::future::Future<Output = ()> + Send + 'static,
        ) -> T {
            let server = tokio::spawn(server);
            let out = tokio::time::timeout(std::time::Duration::from_secs(10), call)
                .await
                .expect("provider call timed out");
            tokio::time::timeout(std::time::Duration::from_secs(10), server)
                .await
                .expect("mock API server timed out")
                .expect("mock API server failed");
            out
        }

        #[tokio::test]
        async fn absent_secret_is_created() {
            let (provider, mut server) = provider();
            let posted = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = posted.clone();
            let ring = run(provider.load(), async move {
                let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                respond(send, 404, status(404, "NotFound"));
                let (body, send) = expect(&mut server, Method::POST, COLLECTION).await;
                respond(send, 201, echo(&body, "1"));
                *seen.lock().unwrap() = body;
            })
            .await
            .unwrap();

            let (secret, written) = ring_of(&posted.lock().unwrap());
            assert_eq!(secret.metadata.name.as_deref(), Some(NAME));
            assert_eq!(secret.type_.as_deref(), Some("Opaque"));
            assert_eq!(
                secret.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
                "coffer"
            );
            let data = secret.data.unwrap();
            assert_eq!(data.keys().collect::<Vec<_>>(), ["current", "v1"]);
            assert_eq!(data["current"].0, b"1");
            assert_eq!(data["v1"].0.len(), KEY_LEN);
            assert_eq!(ring.current_version(), 1);
            assert!(same_keys(&ring, &written));
        }

        #[tokio::test]
        async fn losing_the_create_race_uses_the_winners_keys() {
            let (provider, mut server) = provider();
            let mut winner = RootKeyring::generate();
            winner.rotate().unwrap();
            let winner_json = stored(&winner, "7");
            let ring = run(provider.load(), async move {
                let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                respond(send, 404, status(404, "NotFound"));
                let (_, send) = expect(&mut server, Method::POST, COLLECTION).await;
                respond(send, 409, status(409, "AlreadyExists"));
                let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                respond(send, 200, winner_json);
            })
            .await
            .unwrap();
            assert!(same_keys(&ring, &winner));
            assert_eq!(ring.current_version(), 2);
        }

        #[tokio::test]
        async fn existing_secret_is_loaded() {
            let (provider, mut server) = provider();
            let mut existing = RootKeyring::generate();
            existing.rotate().unwrap();
            existing.rotate().unwrap();
            let json = stored(&existing, "3");
            let ring = run(provider.load(), async move {
                let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                respond(send, 200, json);
            })
            .await
            .unwrap();
            assert!(same_keys(&ring, &existing));
        }

        #[tokio::test]
        async fn rotate_retries_after_a_conflict() {
            let (provider, mut server) = provider();
            let first = RootKeyring::generate();
            // Meanwhile another replica rotated to version 2.
            let mut second = first.clone();
            second.rotate().unwrap();
            let (first_json, second_json) = (stored(&first, "10"), stored(&second, "11"));
            let put = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = put.clone();
            let ring = run(provider.rotate(), async move {
                let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                respond(send, 200, first_json);
                let (body, send) = expect(&mut server, Method::PUT, ITEM).await;
                let attempted: Secret = serde_json::from_slice(&body).unwrap();
                assert_eq!(attempted.metadata.resource_version.as_deref(), Some("10"));
                respond(send, 409, status(409, "Conflict"));
                let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                respond(send, 200, second_json);
                let (body, send) = expect(&mut server, Method::PUT, ITEM).await;
                respond(send, 200, echo(&body, "12"));
                *seen.lock().unwrap() = body;
            })
            .await
            .unwrap();

            let (secret, written) = ring_of(&put.lock().unwrap());
            assert_eq!(secret.metadata.resource_version.as_deref(), Some("11"));
            assert_eq!(
                secret.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
                "coffer"
            );
            assert_eq!(ring.current_version(), 3);
            assert_eq!(ring.versions().collect::<Vec<_>>(), [1, 2, 3]);
            assert_eq!(ring.versions[&1], first.versions[&1]);
            assert_eq!(ring.versions[&2], second.versions[&2]);
            assert!(same_keys(&ring, &written));
        }

        #[tokio::test]
        async fn rotate_gives_up_after_repeated_conflicts() {
            let (provider, mut server) = provider();
            let ring = RootKeyring::generate();
            let json = stored(&ring, "1");
            let err = run(provider.rotate(), async move {
                for _ in 0..MAX_ROOT_KEY_CONFLICT_RETRIES {
                    let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                    respond(send, 200, json.clone());
                    let (_, send) = expect(&mut server, Method::PUT, ITEM).await;
                    respond(send, 409, status(409, "Conflict"));
                }
            })
            .await
            .unwrap_err();
            assert!(
                matches!(err, CryptoError::RotationConflict { .. }),
                "{err:?}"
            );
        }

        #[tokio::test]
        async fn api_errors_are_reported_without_bodies() {
            let (provider, mut server) = provider();
            let err = run(provider.load(), async move {
                let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                respond(send, 403, status(403, "Forbidden"));
            })
            .await
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("403 Forbidden"), "{text}");
            assert!(text.contains("coffer-system/coffer-root-key"), "{text}");
        }

        #[tokio::test]
        async fn a_damaged_secret_is_refused() {
            let (provider, mut server) = provider();
            let ring = RootKeyring::generate();
            let mut secret = new_secret(NS, NAME, &ring);
            let data = secret.data.as_mut().unwrap();
            data.insert("v1".into(), ByteString(b"TOO-SHORT-KEY".to_vec()));
            let json = serde_json::to_vec(&secret).unwrap();
            let err = run(provider.load(), async move {
                let (_, send) = expect(&mut server, Method::GET, ITEM).await;
                respond(send, 200, json);
            })
            .await
            .unwrap_err();
            let text = err.to_string();
            assert!(text.contains("\"v1\" is not 64 bytes"), "{text}");
            assert!(!text.contains("TOO-SHORT-KEY"));
        }
    }
}
