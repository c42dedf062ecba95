//! The HTTPS client of Coffer's own outgoing calls to its API (the credentials proxy, CSI
//! volumes' reads): certificates trusted from a CA bundle file, else the system's roots.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use hyper_rustls::{FixedServerNameResolver, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};

use crate::fsutil::FileStamp;

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("cannot read the CA file {path}: {source}")]
    ReadCa {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the CA file {0} holds no PEM certificate")]
    BadCa(PathBuf),
    #[error("the system's CA certificates could not be loaded")]
    NoSystemRoots,
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
}

/// The HTTPS (or HTTP) client of [`client`].
pub type HttpsClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// A client whose trusted CAs follow its CA file: a CA bundle mounted from a ConfigMap or a
/// Secret is replaced by kubelet when the CA rotates, and a long-running process (the CSI
/// plugin, the credentials proxy) must trust the new CA without a restart.
pub struct CaFollowingClient<B> {
    ca_file: Option<PathBuf>,
    schemes: Schemes,
    current: Mutex<(Option<FileStamp>, HttpsClient<B>)>,
}

impl<B> CaFollowingClient<B>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    pub fn new(ca_file: Option<&Path>, schemes: Schemes) -> Result<Self, TrustError> {
        let stamp = ca_file.and_then(FileStamp::of);
        Ok(Self {
            ca_file: ca_file.map(Path::to_path_buf),
            schemes,
            current: Mutex::new((stamp, client(ca_file, schemes)?)),
        })
    }

    /// The client for the CA file as it is now: rebuilt when the file changed. A file that
    /// changed but does not load (mid-rotation) keeps the last client, and is tried again at
    /// its next change.
    pub fn get(&self) -> HttpsClient<B>
    where
        B: Clone,
    {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(path) = &self.ca_file {
            let stamp = FileStamp::of(path);
            if stamp.is_some() && stamp != current.0 {
                current.0 = stamp;
                match client(Some(path), self.schemes) {
                    Ok(fresh) => {
                        tracing::info!(ca_file = %path.display(), "the CA file changed; trusting it now");
                        current.1 = fresh;
                    }
                    Err(err) => tracing::warn!(
                        error = %err,
                        "the CA file changed but does not load; keeping the CAs trusted before"
                    ),
                }
            }
        }
        current.1.clone()
    }
}

/// Whether plain `http://` may be used too (the caller checks where it may go).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Schemes {
    HttpsOnly,
    HttpsOrHttp,
}

/// An HTTP/1.1 client trusting only the certificates in `ca_file`, or the system's CAs
/// without one.
pub fn client<B>(
    ca_file: Option<&Path>,
    schemes: Schemes,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, TrustError>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    client_for_name(ca_file, schemes, None)
}

/// As [`client`], but with `server_name`, servers' certificates are verified for that name
/// instead of the URL's host: for a Service reached through a port-forward or a tunnel.
pub fn client_for_name<B>(
    ca_file: Option<&Path>,
    schemes: Schemes,
    server_name: Option<&str>,
) -> Result<Client<HttpsConnector<HttpConnector>, B>, TrustError>
where
    B: hyper::body::Body + Send,
    B::Data: Send,
{
    let server_name = server_name
        .map(|name| {
            ServerName::try_from(name.to_owned())
                .map_err(|_| TrustError::ServerName(name.to_owned()))
        })
        .transpose()?;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|source| TrustError::ReadCa {
                path: path.to_owned(),
                source,
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|_| TrustError::BadCa(path.to_owned()))?;
                roots.add(cert)?;
            }
            if roots.is_empty() {
                return Err(TrustError::BadCa(path.to_owned()));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TrustError::NoSystemRoots);
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
    let builder = match schemes {
        Schemes::HttpsOnly => builder.https_only(),
        Schemes::HttpsOrHttp => builder.https_or_http(),
    };
    let builder = match server_name {
        Some(name) => builder.with_server_name_resolver(FixedServerNameResolver::new(name)),
        None => builder,
    };
    Ok(Client::builder(TokioExecutor::new()).build(builder.enable_http1().build()))
}
