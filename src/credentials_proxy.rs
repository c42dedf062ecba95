//! `coffer credentials-proxy`: the container-credentials endpoint on a pod's loopback.
//!
//! botocore fetches container credentials over plain HTTP only from loopback (and a few
//! link-local) addresses, and over HTTPS only against its own bundled CA list: it ignores
//! `AWS_CA_BUNDLE` there. A controller inside the cluster is neither, so a pod runs this proxy as
//! a sidecar on `127.0.0.1`. It passes `GET /v1/credentials`, with the pod's `Authorization`
//! header, to the controller over HTTPS checked against the cluster's CA, and hands the answer
//! back. It keeps nothing, and never logs a header or a body.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt as _, Empty, Limited};
use tokio::net::TcpListener;

use crate::https_client::{CaFollowingClient, Schemes, TrustError};

use crate::aws::credentials_endpoint::CREDENTIALS_PATH;

/// The default listen address: loopback, the only place botocore takes plain HTTP from.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8099";

/// How long the controller has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// Credentials answers are a few hundred bytes; anything much larger is not one.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream {0} must be an https:// URL with a host")]
    Upstream(String),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("cannot listen on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("serving failed")]
    Serve(#[source] crate::serve::ServeError),
}

/// Forwards credentials requests to one controller.
pub struct CredentialsProxy {
    client: CaFollowingClient<Empty<bytes::Bytes>>,
    target: Uri,
}

impl CredentialsProxy {
    /// A proxy to `upstream` (`https://HOST[:PORT]`), trusting only the certificates in
    /// `ca_file`, or the system's CAs without one.
    pub fn new(upstream: &str, ca_file: Option<&Path>) -> Result<Self, ProxyError> {
        let base: Uri = upstream
            .parse()
            .map_err(|_| ProxyError::Upstream(upstream.to_owned()))?;
        if base.scheme_str() != Some("https") || base.host().is_none() {
            return Err(ProxyError::Upstream(upstream.to_owned()));
        }
        let authority = base
            .authority()
            .ok_or_else(|| ProxyError::Upstream(upstream.to_owned()))?
            .clone();
        let target = Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(CREDENTIALS_PATH)
            .build()
            .map_err(|_| ProxyError::Upstream(upstream.to_owned()))?;

        Ok(Self {
            client: CaFollowingClient::new(ca_file, Schemes::HttpsOnly)?,
            target,
        })
    }

    /// `GET /v1/credentials` (forwarded) and `GET /healthz`.
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route(CREDENTIALS_PATH, get(forward))
            .route("/healthz", get(|| async { "ok\n" }))
            .with_state(self)
    }

    async fn fetch(&self, headers: &HeaderMap) -> Result<(StatusCode, bytes::Bytes), &'static str> {
        let mut request = Request::get(&self.target);
        if let Some(authorization) = headers.get(header::AUTHORIZATION) {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(Empty::new())
            .map_err(|_| "the request could not be built")?;
        let response = tokio::time::timeout(UPSTREAM_TIMEOUT, self.client.get().request(request))
            .await
            .map_err(|_| "the controller did not answer in time")?
            .map_err(|_| "the controller could not be reached")?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| "the controller's answer could not be read")?
            .to_bytes();
        Ok((status, body))
    }
}

async fn forward(State(proxy): State<Arc<CredentialsProxy>>, headers: HeaderMap) -> Response {
    match proxy.fetch(&headers).await {
        Ok((status, body)) => (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            Body::from(body),
        )
            .into_response(),
        Err(reason) => {
            tracing::warn!(reason, "credentials request not forwarded");
            let body = serde_json::json!({"code": "UpstreamUnavailable", "message": reason});
            (
                StatusCode::BAD_GATEWAY,
                [(header::CONTENT_TYPE, "application/json")],
                body.to_string(),
            )
                .into_response()
        }
    }
}

/// Serves the proxy on `listen` until `shutdown` completes.
pub async fn run(
    listen: SocketAddr,
    proxy: CredentialsProxy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProxyError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ProxyError::Listen {
            address: listen,
            source,
        })?;
    let address = listener.local_addr().map_err(|source| ProxyError::Listen {
        address: listen,
        source,
    })?;
    tracing::info!(
        address = %format!("http://{address}{CREDENTIALS_PATH}"),
        upstream = %proxy.target,
        "coffer credentials proxy listening"
    );
    crate::serve::serve(
        listener,
        Arc::new(proxy).router(),
        None,
        crate::serve::ConnectionLimits::DEFAULT,
        shutdown,
    )
    .await
    .map_err(ProxyError::Serve)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::{TlsFiles, serve};
    use std::path::PathBuf;

    /// A TLS upstream that answers with the Authorization header it received.
    async fn upstream(dir: &Path) -> (String, PathBuf) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert = dir.join("tls.crt");
        let key = dir.join("tls.key");
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        let app = Router::new().route(
            CREDENTIALS_PATH,
            get(|headers: HeaderMap| async move {
                let seen = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                if seen == "none" {
                    return (StatusCode::UNAUTHORIZED, "{}".to_owned());
                }
                (
                    StatusCode::OK,
                    serde_json::json!({"Token": seen}).to_string(),
                )
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(serve(
            listener,
            app,
            Some(TlsFiles::new(&cert, &key)),
            crate::serve::ConnectionLimits::DEFAULT,
            std::future::pending(),
        ));
        (format!("https://localhost:{port}"), cert)
    }

    async fn through(proxy: CredentialsProxy, authorization: Option<&str>) -> (u16, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, Arc::new(proxy).router())
                .await
                .unwrap();
        });
        let mut request = reqwest::Client::new().get(format!("http://{address}{CREDENTIALS_PATH}"));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    #[tokio::test]
    async fn forwards_the_token_over_tls_and_returns_the_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (url, ca) = upstream(dir.path()).await;
        let proxy = CredentialsProxy::new(&url, Some(&ca)).unwrap();
        let (status, body) = through(proxy, Some("the-token")).await;
        assert_eq!(status, 200);
        assert_eq!(body, r#"{"Token":"the-token"}"#);
        // The controller's refusal comes back as it was.
        let proxy = CredentialsProxy::new(&url, Some(&ca)).unwrap();
        assert_eq!(through(proxy, None).await.0, 401);
    }

    #[tokio::test]
    async fn an_upstream_it_cannot_trust_or_reach_is_a_bad_gateway() {
        let dir = tempfile::tempdir().unwrap();
        let (url, _) = upstream(dir.path()).await;
        // Another CA than the one that signed the upstream's certificate.
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let other_ca = dir.path().join("other.crt");
        std::fs::write(&other_ca, other.cert.pem()).unwrap();
        let proxy = CredentialsProxy::new(&url, Some(&other_ca)).unwrap();
        let (status, body) = through(proxy, Some("the-token")).await;
        assert_eq!(status, 502);
        assert!(!body.contains("the-token"));

        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let proxy =
            CredentialsProxy::new(&format!("https://localhost:{port}"), Some(&other_ca)).unwrap();
        assert_eq!(through(proxy, Some("t")).await.0, 502);
    }

    #[test]
    fn refuses_plain_http_upstreams_and_bad_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            CredentialsProxy::new("http://coffer.coffer-system.svc:8443", None),
            Err(ProxyError::Upstream(_))
        ));
        let not_pem = dir.path().join("ca.crt");
        std::fs::write(&not_pem, "hello").unwrap();
        assert!(matches!(
            CredentialsProxy::new("https://coffer:8443", Some(&not_pem)),
            Err(ProxyError::Trust(TrustError::BadCa(_)))
        ));
        assert!(matches!(
            CredentialsProxy::new("https://coffer:8443", Some(&dir.path().join("missing"))),
            Err(ProxyError::Trust(TrustError::ReadCa { .. }))
        ));
    }
}
