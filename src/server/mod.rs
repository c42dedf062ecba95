//! `coffer server`: the engine as one process on an embedded database.
//!
//! Start-up: prepare the data directory, load (or create) the root key file, open the embedded
//! store, make sure the admin access key and its credentials file exist, bind, serve until SIGINT
//! or SIGTERM.

pub mod admin;
pub mod bootstrap;
pub mod datadir;
pub mod webhook;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use tokio::net::TcpListener;

use crate::aws::audit::AuditSink;
use crate::aws::guard::{FrontDoor, RequestGuard};
use crate::aws::identity::AccessKeyDirectory;
use crate::aws::throttle::Throttle;
use crate::aws::{self, AwsApi};
use crate::crypto::{CryptoError, FileRootKeyProvider, RootKeyProvider as _};
use crate::engine::SystemClock;
use crate::engine::kms::Kms;
use crate::engine::parameters::Parameters;
use crate::engine::secrets::Secrets;
use crate::store::{EmbeddedStore, Store, StoreError};
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
    /// Calls per second allowed per principal; 0 turns throttling off.
    pub throttle_per_second: u32,
    /// Bucket size: calls a principal may make at once.
    pub throttle_burst: u32,
    /// `off`, `stderr`, or a file path; `None` is `DIR/audit.log`.
    pub audit_log: Option<String>,
    /// Where to serve Prometheus `/metrics`, if anywhere (never on the API's address).
    pub metrics_listen: Option<SocketAddr>,
    /// Timeouts and limits of the listeners and the API.
    pub front_door: FrontDoor,
    /// Where parameter policy notifications are POSTed, if anywhere.
    pub parameter_webhook: Option<String>,
    /// The file holding the secret that signs them.
    pub parameter_webhook_secret_file: Option<PathBuf>,
    /// How secret rotations run.
    pub rotation: crate::rotation::RotationSettings,
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
    #[error("cannot open the audit log {path}: {source}")]
    AuditLog {
        path: String,
        source: std::io::Error,
    },
    #[error("serving HTTP failed")]
    Serve(#[source] crate::serve::ServeError),
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
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

/// The HTTP routes: health, and the AWS APIs.
fn router(api: Arc<AwsApi>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(aws::router(api))
}

/// Runs the server until `shutdown` completes.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let parameter_webhook = match &config.parameter_webhook {
        Some(url) => {
            webhook::parse_url(url)?;
            let secret = config
                .parameter_webhook_secret_file
                .as_deref()
                .ok_or(webhook::WebhookError::NoSecret)?;
            Some(Arc::new(webhook::ParameterWebhook::new(
                url,
                webhook::read_secret(secret)?,
                &config.region,
            )?))
        }
        None => None,
    };
    let dir = DataDir::prepare(&config.data_dir)?;
    let keyring = Arc::new(FileRootKeyProvider::new(dir.root_key()).load().await?);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.database())?);
    let admin = bootstrap::ensure_admin_key(store.as_ref(), &keyring, &dir, &config.region).await?;
    let audit_setting = config
        .audit_log
        .clone()
        .unwrap_or_else(|| dir.path().join("audit.log").display().to_string());
    let audit = AuditSink::from_setting(&audit_setting, config.front_door.audit_rotation).map_err(
        |source| ServerError::AuditLog {
            path: audit_setting.clone(),
            source,
        },
    )?;
    let directory = Arc::new(AccessKeyDirectory::new(
        Arc::clone(&store),
        Arc::clone(&keyring),
        bootstrap::STANDALONE_ACCOUNT,
    ));
    let kms = Arc::new(Kms::new(
        Arc::clone(&store),
        Arc::clone(&keyring),
        directory.clone(),
        Arc::new(SystemClock),
        config.region.clone(),
    ));
    let secrets = Arc::new(
        Secrets::new(
            Arc::clone(&store),
            Arc::clone(&kms),
            directory.clone(),
            Arc::new(SystemClock),
        )
        .with_rotation(
            crate::rotation::standalone_registry(),
            config.rotation.max_concurrent,
            config.rotation.step_pause,
        ),
    );
    let parameters = Arc::new(Parameters::new(
        Arc::clone(&store),
        Arc::clone(&kms),
        directory.clone(),
        Arc::new(SystemClock),
    ));
    let metrics = aws::metrics::ApiMetrics::new();
    let api = Arc::new(AwsApi {
        services: crate::aws::ops::Services::new()
            .with(Arc::clone(&kms))
            .with(Arc::clone(&secrets))
            .with(Arc::clone(&parameters)),
        region: config.region.clone(),
        guard: RequestGuard::new(config.front_door.requests),
        authenticator: directory,
        throttle: Throttle::new(config.throttle_per_second, config.throttle_burst),
        audit: audit.clone(),
        metrics: metrics.clone(),
        bearer: None,
    });

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
    let metrics_listener = match config.metrics_listen {
        Some(address) => Some(
            TcpListener::bind(address)
                .await
                .map_err(|source| ServerError::Listen { address, source })?,
        ),
        None => None,
    };
    let metrics_address = match &metrics_listener {
        Some(listener) => listener
            .local_addr()
            .map(|bound| format!("http://{bound}/metrics"))
            .unwrap_or_default(),
        None => String::new(),
    };
    tracing::info!(
        address = %format!("http://{address}"),
        metrics = %metrics_address,
        credentials = %dir.credentials().display(),
        access_key_id = %admin.id,
        "coffer server listening"
    );
    drop(admin);
    audit.spawn_flusher();
    let scheduler = tokio::spawn(Arc::clone(&kms).run_scheduler());
    let secret_purge = tokio::spawn(Arc::clone(&secrets).run_scheduler());
    let secret_rotation = tokio::spawn(Arc::clone(&secrets).run_rotation_scheduler());
    // Subscribed before the policies first run, so that no notification is missed.
    let notifications = tokio::spawn(webhook::relay(
        parameters.notifications(),
        audit.clone(),
        parameter_webhook,
    ));
    let parameter_policies = tokio::spawn(Arc::clone(&parameters).run_scheduler());

    // One shutdown for both listeners.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopping = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let metrics_server = match metrics_listener {
        Some(listener) => Some(tokio::spawn(crate::serve::serve(
            listener,
            aws::metrics_router(metrics),
            None,
            config.front_door.connections,
            stopping(stopped.clone()),
        ))),
        None => None,
    };
    tokio::spawn(async move {
        shutdown.await;
        stop.send_replace(true);
    });
    let served = crate::serve::serve(
        listener,
        router(api),
        None,
        config.front_door.connections,
        stopping(stopped),
    )
    .await
    .map_err(ServerError::Serve);
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    scheduler.abort();
    secret_purge.abort();
    secret_rotation.abort();
    parameter_policies.abort();
    notifications.abort();
    audit.flush();
    served?;
    tracing::info!("coffer server stopped");
    Ok(())
}

/// Registers for SIGINT and SIGTERM now, and returns a future that completes on either.
/// Registering before start-up work means a signal that arrives while the server is starting
/// still stops it cleanly instead of killing it. Must be called within the runtime.
pub fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}
