//! Serving a router over plain HTTP or HTTPS, with graceful shutdown, and the health routes.
//!
//! TLS uses rustls on the `ring` provider (the one kube already brings). The certificate and key
//! are files that cert-manager rotates in place, so they are watched: every [`RELOAD_INTERVAL`]
//! their metadata is compared, and changed files are loaded for the next handshakes. Files that
//! do not load (half written, or a key that does not match) keep the current certificate.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::get;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower::ServiceExt as _;
use zeroize::Zeroizing;

use crate::fsutil::FileStamp;

/// How often the certificate and key files are checked for changes.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);

/// A client that has not finished its TLS handshake by then is dropped, so slow clients cannot
/// hold connections open without a request.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections past their handshake that wait for the server to take them.
const ACCEPTED_BACKLOG: usize = 64;

/// Everything that can go wrong in this module. No message carries key material: the key file
/// is only ever named by its path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    #[error("cannot read the TLS certificate file {path}: {source}")]
    ReadCertificate {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read the TLS private key file {path}: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the TLS certificate file {path} holds no valid PEM certificate")]
    BadCertificate { path: PathBuf },
    #[error("the TLS private key file {path} holds no valid PEM private key")]
    BadKey { path: PathBuf },
    #[error("the TLS private key in {key} does not fit the certificate in {cert}: {reason}")]
    Unusable {
        cert: PathBuf,
        key: PathBuf,
        reason: rustls::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(rustls::Error),
    #[error("serving HTTP failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A PEM certificate chain (leaf first) and its PEM private key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        Self {
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// Reads both files and checks that they make a usable certificate, for start-up checks.
    pub fn load_check(&self) -> Result<(), ServeError> {
        self.load(&provider()).map(drop)
    }

    fn load(&self, provider: &CryptoProvider) -> Result<CertifiedKey, ServeError> {
        let cert_pem = std::fs::read(&self.cert).map_err(|source| ServeError::ReadCertificate {
            path: self.cert.clone(),
            source,
        })?;
        let chain = CertificateDer::pem_slice_iter(&cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .filter(|chain| !chain.is_empty())
            .ok_or_else(|| ServeError::BadCertificate {
                path: self.cert.clone(),
            })?;
        let key_pem =
            Zeroizing::new(
                std::fs::read(&self.key).map_err(|source| ServeError::ReadKey {
                    path: self.key.clone(),
                    source,
                })?,
            );
        // The PEM parser's errors may quote a line of the file, so they are dropped.
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| ServeError::BadKey {
            path: self.key.clone(),
        })?;
        CertifiedKey::from_der(chain, key, provider).map_err(|reason| ServeError::Unusable {
            cert: self.cert.clone(),
            key: self.key.clone(),
            reason,
        })
    }

    /// What identifies the files' current contents without reading them, or `None` if either
    /// cannot be looked at (mid-rotation, say).
    fn stamp(&self) -> Option<[FileStamp; 2]> {
        Some([FileStamp::of(&self.cert)?, FileStamp::of(&self.key)?])
    }
}

fn provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// Serves the certificate last loaded from [`TlsFiles`].
struct ReloadingCert {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
    seen: Mutex<Option<[FileStamp; 2]>>,
}

impl fmt::Debug for ReloadingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReloadingCert")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl ReloadingCert {
    fn load(files: TlsFiles, provider: Arc<CryptoProvider>) -> Result<Self, ServeError> {
        // Stamped before reading, so a change made while loading is picked up later.
        let seen = files.stamp();
        let current = files.load(&provider)?;
        Ok(Self {
            files,
            provider,
            current: RwLock::new(Arc::new(current)),
            seen: Mutex::new(seen),
        })
    }

    /// Loads the files if they changed since last looked at; true if a new certificate is now
    /// served. Files that fail to load are not retried until they change again.
    fn reload_if_changed(&self) -> bool {
        let Some(stamp) = self.files.stamp() else {
            return false;
        };
        {
            let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
            if *seen == Some(stamp) {
                return false;
            }
            *seen = Some(stamp);
        }
        match self.files.load(&self.provider) {
            Ok(loaded) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(loaded);
                tracing::info!(cert = %self.files.cert.display(), "loaded the changed TLS certificate");
                true
            }
            Err(error) => {
                tracing::warn!(%error, "the changed TLS files do not load; keeping the current certificate");
                false
            }
        }
    }

    fn current(&self) -> Arc<CertifiedKey> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

async fn watch_files(cert: Arc<ReloadingCert>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let cert = Arc::clone(&cert);
        // File reads stay off the async workers.
        let _ = tokio::task::spawn_blocking(move || cert.reload_if_changed()).await;
    }
}

/// TLS connections whose handshakes finished, for the serving loop. Handshakes run in their own
/// tasks, so a slow client does not hold up the others.
struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accept loop only ends when aborted, which happens after serving stops.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    accepted: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    // Dropping the set (when this task is aborted) aborts the handshakes in flight.
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.try_join_next().is_some() {}
        let (tcp, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(error) => {
                // Such as running out of file descriptors: wait rather than spin.
                tracing::warn!(%error, "accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let accepted = accepted.clone();
        handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = accepted.send((tls, peer)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// What every listener bounds, against clients that connect and then send slowly, or nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a connection may take to send a request's headers, counted from when it starts
    /// waiting for the request. The clock starts again after each response, so this also closes
    /// idle keep-alive connections: one setting bounds both.
    pub header_timeout: Duration,
    /// Connections served at once. One more is closed as soon as it is accepted, so a flood of
    /// idle connections cannot exhaust memory or file descriptors.
    pub max_connections: usize,
}

impl ConnectionLimits {
    /// 10 seconds for headers (and for an idle keep-alive connection), 4096 connections.
    pub const DEFAULT: ConnectionLimits = ConnectionLimits {
        header_timeout: Duration::from_secs(10),
        max_connections: 4096,
    };
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Facts about the connection a request arrived on, as request extensions for the handlers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Connection {
    pub peer: SocketAddr,
    /// Whether it is TLS (`aws:SecureTransport`).
    pub secure: bool,
}

/// How long open requests may take to finish after shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` completes, then lets open requests finish.
/// With `tls`, serves HTTPS with the certificate in those files, reloaded when they change;
/// fails at once if they cannot be loaded.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsFiles>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    serve_reloading_every(listener, app, tls, limits, shutdown, RELOAD_INTERVAL).await
}

async fn serve_reloading_every(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsFiles>,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    reload_every: Duration,
) -> Result<(), ServeError> {
    let Some(files) = tls else {
        serve_connections(listener, app, false, limits, shutdown).await;
        return Ok(());
    };
    let provider = Arc::new(provider());
    let cert = Arc::new(ReloadingCert::load(files, Arc::clone(&provider))?);
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServeError::Config)?
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
    // HTTP/1.1 only.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let local = listener.local_addr()?;
    let (sender, accepted) = mpsc::channel(ACCEPTED_BACKLOG);
    let tls_listener = TlsListener {
        accepted,
        local,
        tasks: vec![
            tokio::spawn(accept_tls(
                listener,
                TlsAcceptor::from(Arc::new(config)),
                sender,
            )),
            tokio::spawn(watch_files(cert, reload_every)),
        ],
    };
    serve_connections(tls_listener, app, true, limits, shutdown).await;
    Ok(())
}

/// The serving loop: each connection in a task of its own under `limits`, every request told
/// which connection it came on; on shutdown, no new connections, and open ones drain.
async fn serve_connections<L>(
    mut listener: L,
    app: Router,
    secure: bool,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) where
    L: axum::serve::Listener<Addr = SocketAddr>,
{
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refused = AtomicU64::new(0);
    tokio::pin!(shutdown);
    loop {
        let (io, peer) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            // Closing at once costs the client a retry, not the server its memory.
            if refused.fetch_add(1, Ordering::Relaxed).is_multiple_of(1000) {
                tracing::warn!(
                    max = limits.max_connections,
                    "connection limit reached; closing new connections"
                );
            }
            drop(io);
            continue;
        };
        let connection = Connection { peer, secure };
        let router = app.clone();
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(connection);
            router.clone().oneshot(request)
        });
        let serving = graceful.watch(http.serve_connection(TokioIo::new(io), service));
        tokio::spawn(async move {
            // An error here is a client's (it went away, or sent garbage, or too slowly).
            if let Err(error) = serving.await {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still open after the drain timeout; closing them");
    }
}

/// `GET /healthz`: 200 `ok` while the process serves. `GET /readyz`: 200 `ready` while `ready`
/// holds true, else 503 `not ready`.
pub fn health_router(ready: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(ready)
}

async fn readyz(State(ready): State<watch::Receiver<bool>>) -> (StatusCode, &'static str) {
    if *ready.borrow() {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::oneshot;

    /// A self-signed certificate for `localhost`: (certificate PEM, key PEM, certificate DER).
    fn self_signed() -> (String, String, CertificateDer<'static>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        (
            generated.cert.pem(),
            generated.signing_key.serialize_pem(),
            generated.cert.der().clone(),
        )
    }

    /// Writes a file the way Kubernetes' volume writer does: a new file renamed into place.
    fn replace(path: &Path, contents: &str) {
        let temporary = path.with_extension("tmp");
        std::fs::write(&temporary, contents).unwrap();
        std::fs::rename(&temporary, path).unwrap();
    }

    fn write_pair(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        let files = TlsFiles::new(dir.join("tls.crt"), dir.join("tls.key"));
        replace(&files.cert, cert);
        replace(&files.key, key);
        files
    }

    /// Answers `/hello`, saying in `x-transport` whether the connection was TLS, as handlers
    /// see it for `aws:SecureTransport`.
    fn app() -> Router {
        Router::new().route(
            "/hello",
            get(
                |axum::Extension(connection): axum::Extension<Connection>| async move {
                    let transport = if connection.secure { "tls" } else { "plain" };
                    ([("x-transport", transport)], "hello over the wire")
                },
            ),
        )
    }

    async fn bind() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        (listener, address)
    }

    /// Fetches `/hello` over TLS trusting only `trusted`; returns the response and the
    /// certificate the server presented.
    async fn get_tls(
        address: SocketAddr,
        trusted: &CertificateDer<'static>,
    ) -> std::io::Result<(String, CertificateDer<'static>)> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(trusted.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = TcpStream::connect(address).await?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await?;
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        tls.write_all(b"GET /hello HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = String::new();
        tls.read_to_string(&mut response).await?;
        Ok((response, presented))
    }

    #[tokio::test]
    async fn serves_tls_and_picks_up_a_rotated_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (first_cert, first_key, first_der) = self_signed();
        let files = write_pair(dir.path(), &first_cert, &first_key);
        let (listener, address) = bind().await;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve_reloading_every(
            listener,
            app(),
            Some(files.clone()),
            ConnectionLimits::DEFAULT,
            async {
                let _ = stopped.await;
            },
            Duration::from_millis(50),
        ));

        let (response, presented) = get_tls(address, &first_der).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("x-transport: tls\r\n"), "{response}");
        assert!(response.ends_with("hello over the wire"), "{response}");
        assert_eq!(presented, first_der);

        // cert-manager rotates both files in place.
        let (second_cert, second_key, second_der) = self_signed();
        replace(&files.cert, &second_cert);
        replace(&files.key, &second_key);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok((response, presented)) = get_tls(address, &second_der).await {
                assert_eq!(presented, second_der);
                assert!(response.ends_with("hello over the wire"), "{response}");
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the rotated certificate was never served"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A client that trusts only the old certificate is now refused.
        assert!(get_tls(address, &first_der).await.is_err());

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops on shutdown")
            .unwrap()
            .unwrap();
        assert!(
            TcpStream::connect(address).await.is_err(),
            "the port is closed"
        );
    }

    #[test]
    fn changed_files_that_do_not_load_keep_the_current_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = self_signed();
        let files = write_pair(dir.path(), &cert, &key);
        let reloading = ReloadingCert::load(files.clone(), Arc::new(provider())).unwrap();
        assert!(!reloading.reload_if_changed(), "nothing changed yet");

        // Half-way through a rotation: a new certificate next to the old key.
        let (next_cert, next_key, next_der) = self_signed();
        replace(&files.cert, &next_cert);
        assert!(!reloading.reload_if_changed());
        assert_eq!(reloading.current().cert[0], der);
        // Garbage is refused as well.
        replace(&files.key, "not a key");
        assert!(!reloading.reload_if_changed());
        assert_eq!(reloading.current().cert[0], der);
        // Once the pair is whole again, it is served.
        replace(&files.key, &next_key);
        assert!(reloading.reload_if_changed());
        assert_eq!(reloading.current().cert[0], next_der);
        assert!(!reloading.reload_if_changed(), "loaded once per change");
    }

    #[test]
    fn load_check_names_the_file_that_is_wrong_and_never_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = self_signed();
        let files = write_pair(dir.path(), &cert, &key);
        files.load_check().unwrap();

        let missing = TlsFiles::new(dir.path().join("absent.crt"), &files.key);
        assert!(matches!(
            missing.load_check(),
            Err(ServeError::ReadCertificate { .. })
        ));
        let missing_key = TlsFiles::new(&files.cert, dir.path().join("absent.key"));
        assert!(matches!(
            missing_key.load_check(),
            Err(ServeError::ReadKey { .. })
        ));

        let not_pem = dir.path().join("not-pem.crt");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = TlsFiles::new(&not_pem, &files.key)
            .load_check()
            .unwrap_err();
        assert!(matches!(err, ServeError::BadCertificate { .. }), "{err}");

        // A key file whose content would leak if an error quoted it.
        let leaky = dir.path().join("leaky.key");
        let secret_line =
            "-----BEGIN PRIVATE KEY-----\nTOPSECRETMATERIAL!!\n-----END PRIVATE KEY-----\n";
        std::fs::write(&leaky, secret_line).unwrap();
        let err = TlsFiles::new(&files.cert, &leaky).load_check().unwrap_err();
        assert!(matches!(err, ServeError::BadKey { .. }), "{err}");
        assert!(!format!("{err} {err:?}").contains("TOPSECRET"), "{err:?}");

        // A key from another pair does not fit the certificate.
        let (_, other_key, _) = self_signed();
        let other = dir.path().join("other.key");
        std::fs::write(&other, other_key).unwrap();
        let err = TlsFiles::new(&files.cert, &other).load_check().unwrap_err();
        assert!(matches!(err, ServeError::Unusable { .. }), "{err}");
        assert!(err.to_string().contains("other.key"), "{err}");
    }

    #[tokio::test]
    async fn tls_serving_refuses_to_start_without_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let (listener, _) = bind().await;
        let files = TlsFiles::new(dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let err = serve(
            listener,
            app(),
            Some(files),
            ConnectionLimits::DEFAULT,
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ServeError::ReadCertificate { .. }), "{err}");
        assert!(err.to_string().contains("tls.crt"), "{err}");
    }

    #[tokio::test]
    async fn serves_plain_http_until_shutdown() {
        let (listener, address) = bind().await;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            app(),
            None,
            ConnectionLimits::DEFAULT,
            async {
                let _ = stopped.await;
            },
        ));
        let response = reqwest::get(format!("http://{address}/hello"))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["x-transport"], "plain");
        assert_eq!(response.text().await.unwrap(), "hello over the wire");
        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server stops on shutdown")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn health_and_readiness_follow_the_watch() {
        let (ready, watched) = watch::channel(false);
        let (listener, address) = bind().await;
        tokio::spawn(serve(
            listener,
            health_router(watched),
            None,
            crate::serve::ConnectionLimits::DEFAULT,
            std::future::pending(),
        ));
        let get = |path: &'static str| async move {
            let response = reqwest::get(format!("http://{address}{path}"))
                .await
                .unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        };
        assert_eq!(get("/healthz").await, (200, "ok".to_owned()));
        assert_eq!(get("/readyz").await, (503, "not ready".to_owned()));
        ready.send(true).unwrap();
        assert_eq!(get("/readyz").await, (200, "ready".to_owned()));
        assert_eq!(get("/healthz").await, (200, "ok".to_owned()));
        ready.send(false).unwrap();
        assert_eq!(get("/readyz").await, (503, "not ready".to_owned()));
    }
}
