//! `coffer server`: the engine as one process on an embedded database.
//!
//! Start-up: prepare the data directory, load (or create) the root key file, open the embedded
//! store, make sure the admin access key and its credentials file exist, bind, serve until SIGINT
//! or SIGTERM.

pub mod bootstrap;
pub mod datadir;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::crypto::{CryptoError, FileRootKeyProvider, RootKeyProvider as _};
use crate::store::{EmbeddedStore, StoreError};
pub use datadir::DataDir;

/// The default listen address: loopback only, so a newcomer's server is not exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8900";

/// The default region named in ARNs and written into the AWS config file.
pub const DEFAULT_REGION: &str = "us-east-1";

/// What `coffer server` needs to start.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    pub region: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    WriteFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("root key: {0}")]
    RootKey(#[from] CryptoError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("first start: {0}")]
    Bootstrap(String),
    #[error("serving HTTP failed: {0}")]
    Serve(std::io::Error),
}

/// The default data directory: `$XDG_DATA_HOME/coffer`, else `$HOME/.local/share/coffer`, else
/// `./coffer-data`.
pub fn default_data_dir() -> PathBuf {
    let from_env = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty());
    if let Some(xdg) = from_env("XDG_DATA_HOME") {
        return PathBuf::from(xdg).join("coffer");
    }
    if let Some(home) = from_env("HOME") {
        return PathBuf::from(home).join(".local/share/coffer");
    }
    PathBuf::from("coffer-data")
}

/// The HTTP routes every deployment serves.
fn router() -> Router {
    Router::new().route("/healthz", get(|| async { "ok\n" }))
}

/// Runs the server until `shutdown` completes.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let dir = DataDir::prepare(&config.data_dir)?;
    let keyring = FileRootKeyProvider::new(dir.root_key()).load().await?;
    let store = EmbeddedStore::open(&dir.database())?;
    let admin = bootstrap::ensure_admin_key(&store, &keyring, &dir, &config.region).await?;

    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| ServerError::Listen {
                address: config.listen,
                source,
            })?;
    let address = listener
        .local_addr()
        .map_err(|source| ServerError::Listen {
            address: config.listen,
            source,
        })?;
    tracing::info!(
        address = %format!("http://{address}"),
        credentials = %dir.credentials().display(),
        access_key_id = %admin.id,
        "coffer server listening"
    );
    drop(admin);

    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)?;
    tracing::info!("coffer server stopped");
    Ok(())
}

/// Completes on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(_) => {
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
