//! `coffer kms-plugin`: a Kubernetes KMS v2 provider, so that kube-apiserver seals what it writes
//! to etcd (core Secrets above all) under a key of Coffer's.
//!
//! kube-apiserver encrypts each resource with a data key of its own and calls Encrypt to seal
//! that data key (or, with its key derivation, a seed of it) under the plugin's KMS key; the
//! sealed form is stored beside the resource. The plugin runs beside kube-apiserver, so it
//! depends on nothing the API server serves: its own embedded store and root key file in a data
//! directory, like `coffer server`, and one symmetric key it creates on first start.

mod service;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_stream::wrappers::UnixListenerStream;

use crate::crypto::{CryptoError, FileRootKeyProvider, RootKeyProvider as _, SecretBytes};
use crate::csi::endpoint::{self, EndpointError};
use crate::engine::account::account_id;
use crate::engine::kms::{CreateKeyRequest, Kms, KmsError};
use crate::engine::{AccountAuthority, Caller, SystemClock};
use crate::server::{DataDir, ServerError};
use crate::store::{EmbeddedStore, Store, StoreError};

pub use service::{KmsPluginService, MAX_REQUEST_BYTES, VERSION_ANNOTATION, proto};

/// Where kube-apiserver's EncryptionConfiguration usually points.
pub const DEFAULT_SOCKET: &str = "/var/run/coffer/kms-plugin.sock";

/// The key the plugin creates on first start when `--key` names no other.
pub const DEFAULT_KEY: &str = "alias/kube-apiserver";

/// The account (namespace) of the plugin's own store: it has no other.
const PLUGIN_ACCOUNT: &str = "default";

/// The region named in the key's ARN.
const PLUGIN_REGION: &str = "us-east-1";

/// Bound into every ciphertext, so that a blob the same key made for anything else (and a blob
/// of this plugin offered anywhere else) does not open.
const CONTEXT_KEY: &str = "coffer.dev/purpose";
const CONTEXT_VALUE: &str = "kube-apiserver-kms-v2";

#[derive(Debug, thiserror::Error)]
pub enum KmsPluginError {
    #[error(transparent)]
    DataDir(#[from] ServerError),
    #[error("root key: {0}")]
    RootKey(#[from] CryptoError),
    #[error("store (is another kms-plugin running on this data directory?): {0}")]
    Store(#[from] StoreError),
    #[error("key {key}: {source}")]
    Key { key: String, source: KmsError },
    #[error("{key} names no key, and only an alias/ name is created on first start")]
    NoSuchKey { key: String },
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    #[error("cannot install the SIGHUP handler: {0}")]
    Signal(#[source] std::io::Error),
    #[error("serving gRPC failed")]
    Serve(#[source] tonic::transport::Error),
}

/// What the plugin needs to start.
#[derive(Clone, Debug)]
pub struct PluginSettings {
    pub data_dir: PathBuf,
    /// The root key file [default: `root-key.json` in the data directory].
    pub root_key_file: Option<PathBuf>,
    /// An `alias/NAME`, key id or key ARN.
    pub key: String,
    /// Rotate the key automatically this often (90 to 2560 days), or not at all.
    pub rotation_period_days: Option<u32>,
}

/// Lets the plugin's own caller do anything in the plugin's account: no other caller exists.
struct PluginAuthority;

#[async_trait::async_trait]
impl AccountAuthority for PluginAuthority {
    async fn allows(&self, caller: &Caller, _action: &str, _resource_arn: &str) -> bool {
        caller.namespace == PLUGIN_ACCOUNT
            && caller.principal.account_id == account_id(PLUGIN_ACCOUNT)
    }
}

/// The plugin's key, sealing and opening through the KMS engine on the plugin's own store.
pub struct PluginKey {
    kms: Arc<Kms>,
    caller: Caller,
    /// The key's id (a UUID), resolved once from the name given.
    key_id: String,
    arn: String,
    context: BTreeMap<String, String>,
}

impl PluginKey {
    /// Opens the data directory and the store, creating the root key and the key on first start.
    pub async fn open(settings: &PluginSettings) -> Result<Self, KmsPluginError> {
        let dir = DataDir::prepare(&settings.data_dir)?;
        let root_key = settings
            .root_key_file
            .clone()
            .unwrap_or_else(|| dir.root_key());
        let keyring = Arc::new(FileRootKeyProvider::new(root_key).load().await?);
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.database())?);
        let kms = Arc::new(Kms::new(
            store,
            keyring,
            Arc::new(PluginAuthority),
            Arc::new(SystemClock),
            PLUGIN_REGION,
        ));
        let caller = Caller::account_of(PLUGIN_ACCOUNT);
        let key_error = |source| KmsPluginError::Key {
            key: settings.key.clone(),
            source,
        };
        let metadata = match kms.describe_key(&caller, &settings.key).await {
            Ok(metadata) => metadata,
            Err(KmsError::NotFound(_)) if settings.key.starts_with("alias/") => {
                let created = kms
                    .create_key(
                        &caller,
                        CreateKeyRequest {
                            description: Some(
                                "Seals kube-apiserver's data keys (coffer kms-plugin)".into(),
                            ),
                            ..CreateKeyRequest::default()
                        },
                    )
                    .await
                    .map_err(key_error)?;
                kms.create_alias(&caller, &settings.key, &created.key_id)
                    .await
                    .map_err(key_error)?;
                tracing::info!(key = %settings.key, arn = %created.arn, "created the plugin's key");
                created
            }
            Err(KmsError::NotFound(_)) => {
                return Err(KmsPluginError::NoSuchKey {
                    key: settings.key.clone(),
                });
            }
            Err(err) => return Err(key_error(err)),
        };
        if let Some(days) = settings.rotation_period_days {
            kms.enable_key_rotation(&caller, &metadata.key_id, Some(i64::from(days)))
                .await
                .map_err(key_error)?;
        }
        let context = BTreeMap::from([(CONTEXT_KEY.to_owned(), CONTEXT_VALUE.to_owned())]);
        Ok(Self {
            kms,
            caller,
            key_id: metadata.key_id,
            arn: metadata.arn,
            context,
        })
    }

    /// The key's ARN.
    pub fn arn(&self) -> &str {
        &self.arn
    }

    /// The name kube-apiserver knows a key version by: the ARN and the version, so that it
    /// changes when the key rotates.
    pub fn version_key_id(&self, version: u32) -> String {
        format!("{}:v{version}", self.arn)
    }

    /// The version new encryptions use.
    pub async fn current_version(&self) -> Result<u32, KmsError> {
        self.kms
            .key_record(PLUGIN_ACCOUNT, &self.key_id)
            .await?
            .and_then(|record| record.current_version())
            .ok_or_else(|| KmsError::NotFound(format!("{} has no version", self.arn)))
    }

    /// Seals `plaintext`; answers the blob and the key version that sealed it.
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<(Vec<u8>, u32), KmsError> {
        let (blob, _, _) = self
            .kms
            .encrypt(&self.caller, &self.key_id, plaintext, &self.context, None)
            .await?;
        let version = crate::crypto::parse_header(&blob)
            .map_err(|err| KmsError::fault("reading the blob just sealed", err))?
            .key_version;
        Ok((blob, version))
    }

    /// Opens a blob of this key, under whichever version sealed it.
    pub async fn decrypt(&self, ciphertext: &[u8]) -> Result<SecretBytes, KmsError> {
        let (plaintext, _, _) = self
            .kms
            .decrypt(
                &self.caller,
                ciphertext,
                &self.context,
                Some(&self.key_id),
                None,
            )
            .await?;
        Ok(plaintext)
    }

    /// A real round trip through the current version: what Status reports as health.
    pub async fn check(&self) -> Result<u32, KmsError> {
        let probe = b"coffer kms-plugin health probe";
        let (blob, version) = self.encrypt(probe).await?;
        let opened = self.decrypt(&blob).await?;
        if opened.expose() != probe {
            return Err(KmsError::fault_at("the health probe did not round-trip"));
        }
        Ok(version)
    }

    /// Adds a key version; new encryptions use it, older versions still decrypt.
    pub async fn rotate(&self) -> Result<u32, KmsError> {
        self.kms
            .rotate_key_on_demand(&self.caller, &self.key_id)
            .await?;
        self.current_version().await
    }
}

/// Serves the plugin on `listener` until `shutdown` completes. SIGHUP is not handled here (see
/// [`run`]); tests drive rotation through [`PluginKey::rotate`].
pub async fn serve(
    key: Arc<PluginKey>,
    listener: tokio::net::UnixListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), KmsPluginError> {
    let scheduler = tokio::spawn(Arc::clone(&key.kms).run_scheduler());
    let served = tonic::transport::Server::builder()
        .add_service(KmsPluginService::server(Arc::clone(&key)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(KmsPluginError::Serve);
    scheduler.abort();
    // The scheduler's hold on the engine (so on the store's file lock) ends with it.
    let _ = scheduler.await;
    served
}

/// `coffer kms-plugin`: opens the key, binds `socket` (mode 0600, a stale socket replaced),
/// rotates the key on SIGHUP, and serves until `shutdown` completes.
pub async fn run(
    settings: &PluginSettings,
    socket: &Path,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), KmsPluginError> {
    let key = Arc::new(PluginKey::open(settings).await?);
    let version = key
        .current_version()
        .await
        .map_err(|source| KmsPluginError::Key {
            key: settings.key.clone(),
            source,
        })?;
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(KmsPluginError::Signal)?;
    let rotator = tokio::spawn({
        let key = Arc::clone(&key);
        async move {
            while hangups.recv().await.is_some() {
                match key.rotate().await {
                    Ok(version) => tracing::info!(
                        key_id = %key.version_key_id(version),
                        "rotated the key on SIGHUP"
                    ),
                    Err(err) => tracing::error!(
                        reason = %crate::redact::chain(&err),
                        "key rotation on SIGHUP failed"
                    ),
                }
            }
        }
    });
    let listener = endpoint::bind(socket)?;
    tracing::info!(
        socket = %socket.display(),
        key_id = %key.version_key_id(version),
        "coffer kms-plugin listening"
    );
    let served = serve(Arc::clone(&key), listener, shutdown).await;
    rotator.abort();
    let _ = std::fs::remove_file(socket);
    served?;
    tracing::info!("coffer kms-plugin stopped");
    Ok(())
}

/// `coffer kms-plugin rotate-key`, while the plugin is stopped (the store is locked while it
/// runs; a running plugin rotates on SIGHUP). Answers the new key id.
pub async fn rotate_offline(settings: &PluginSettings) -> Result<String, KmsPluginError> {
    let key = PluginKey::open(settings).await?;
    let version = key.rotate().await.map_err(|source| KmsPluginError::Key {
        key: settings.key.clone(),
        source,
    })?;
    Ok(key.version_key_id(version))
}
