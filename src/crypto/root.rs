//! Root keys (DESIGN decision 2): the top of the hierarchy, wrapping every KmsKey version's
//! material and other stored secrets.
//!
//! A [`RootKeyring`] holds every root key version; new wraps use the current one, and unwrap
//! accepts any version still held, so rotation never strands old data. A [`RootKeyProvider`]
//! loads the keyring from where it lives and persists rotations.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
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
                .encode_slice(material.expose(), &mut encoded[..])
                .map_err(|_| CryptoError::Internal("base64 buffer too small"))?;
            out.extend_from_slice(&encoded[..n]);
            out.push(b'"');
        }
        out.extend_from_slice(b"}}");
        Ok(SecretBytes::new(out))
    }

    /// Parses [`RootKeyring::to_json`] output. Keys are decoded straight into wiped buffers.
    pub fn from_json(json: &[u8]) -> Result<Self, CryptoError> {
        let doc: KeyringDocument = serde_json::from_slice(json).map_err(|e| {
            // serde_json messages can quote the offending value, so only its position is kept.
            CryptoError::InvalidKeyring(format!(
                "not a keyring document ({:?} error at line {}, column {})",
                e.classify(),
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
            let version = parse_version(&name)
                .ok_or_else(|| de::Error::custom("key names must be version numbers"))?;
            let B64Key(material) = map.next_value()?;
            if versions.insert(version, material).is_some() {
                return Err(de::Error::custom("duplicate version"));
            }
        }
        if versions.is_empty() {
            return Err(de::Error::custom("no keys"));
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
        let invalid = || E::custom("key is not base64 of 64 bytes");
        if text.len() != KEY_B64_LEN {
            return Err(invalid());
        }
        let mut decoded = Zeroizing::new([0u8; KEY_LEN + 3]);
        let n = BASE64
            .decode_slice(text, &mut decoded[..])
            .map_err(|_| invalid())?;
        let key = KeyMaterial::from_bytes(&decoded[..n]).map_err(|_| invalid())?;
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
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| CryptoError::InvalidKeyring(format!("{} names no file", path.display())))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        uuid::Uuid::new_v4().simple()
    ));

    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)
            .map_err(io_error("creating temporary root key file", &temp))?;
        // The mode given at creation is masked by the umask; set it explicitly too.
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_error("setting mode of temporary root key file", &temp))?;
        file.write_all(json.expose())
            .map_err(io_error("writing temporary root key file", &temp))?;
        file.sync_all()
            .map_err(io_error("syncing temporary root key file", &temp))?;
        std::fs::rename(&temp, path)
            .map_err(io_error("renaming temporary root key file onto", path))?;
        // Make the rename itself durable.
        std::fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("syncing directory of root key file", &dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
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

    fn secret_for(&self, ring: &RootKeyring) -> Secret {
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
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
        let secret = Scrubbed(self.secret_for(&ring));
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
