//! An HTTPS server on loopback for tests of clients: a fresh self-signed certificate, served
//! with the project's own serving code.

use std::path::{Path, PathBuf};

use axum::Router;

use crate::serve::{ConnectionLimits, TlsFiles, serve};

/// A server of `app` whose certificate is for `names`.
pub struct TestServer {
    pub port: u16,
    /// The certificate's PEM file (`dir/tls.crt`), which is also its CA.
    pub cert: PathBuf,
    pub cert_pem: String,
}

/// Serves `app` over HTTPS on a free loopback port until the test's runtime ends, with a
/// self-signed certificate for `names` written to `dir` (`tls.crt`, `tls.key`).
pub async fn serve_https(dir: &Path, names: &[&str], app: Router) -> TestServer {
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    let generated = rcgen::generate_simple_self_signed(names).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(serve(
        listener,
        app,
        Some(TlsFiles::new(&cert, &key)),
        ConnectionLimits::DEFAULT,
        std::future::pending(),
    ));
    TestServer {
        port,
        cert,
        cert_pem: generated.cert.pem(),
    }
}
