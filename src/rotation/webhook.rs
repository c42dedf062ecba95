//! The `webhook` strategy: each rotation step is an HTTPS POST to an endpoint of the user's, as
//! AWS invokes a rotation Lambda. The body carries the Lambda event's fields (`Step`,
//! `SecretId`, `ClientRequestToken`); the endpoint does the work, and for `createSecret` it
//! stores the new value itself (PutSecretValue with the token and `AWSPENDING`). A 2xx answer
//! means the step is done.
//!
//! Requests are signed so the endpoint can tell them from anyone else's:
//! `X-Coffer-Timestamp: <unix seconds>` and `X-Coffer-Signature: v1=<hex>`, the HMAC-SHA256 of
//! `"<timestamp>.<body>"` under the current value of the secret that `signingSecret` names.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject as _;
use serde::Deserialize;
use sha2::Sha256;

use crate::crypto::SecretBytes;
use crate::engine::rotation::{
    RotationStrategy, SettingsError, Step, StepError, StepOutcome, StepRequest,
};

/// The strategy's name in a Secret's `spec.rotation.strategy`.
pub const NAME: &str = "webhook";
/// The header carrying the time of signing, in unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-coffer-timestamp";
/// The header carrying `v1=<hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-coffer-signature";
/// How long an endpoint has to answer one step.
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("the webhook settings do not parse: {0}")]
    Settings(String),
    #[error("the webhook url must be an https:// URL with a host")]
    Url,
    #[error("caBundle is not base64")]
    CaBase64,
    #[error("caBundle holds no PEM certificate")]
    CaPem,
    #[error("the system's CA certificates could not be loaded")]
    NoSystemRoots,
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// The recorded settings: `url`, `caBundle`, `signingSecret`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Settings {
    url: String,
    #[serde(default)]
    ca_bundle: Option<String>,
    signing_secret: String,
}

/// The HTTPS client of one endpoint.
type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// The settings checked: a parsed HTTPS URL and the certificates to trust.
struct Endpoint {
    url: Uri,
    roots: rustls::RootCertStore,
}

impl Settings {
    fn parse(settings: &serde_json::Value) -> Result<Self, WebhookError> {
        // serde's message names the field, never its value.
        let parsed =
            Self::deserialize(settings).map_err(|e| WebhookError::Settings(e.to_string()))?;
        if parsed.signing_secret.is_empty() {
            return Err(WebhookError::Settings("signingSecret is empty".into()));
        }
        Ok(parsed)
    }

    fn endpoint(&self) -> Result<Endpoint, WebhookError> {
        let url: Uri = self.url.parse().map_err(|_| WebhookError::Url)?;
        if url.scheme_str() != Some("https") || url.host().is_none_or(str::is_empty) {
            return Err(WebhookError::Url);
        }
        let mut roots = rustls::RootCertStore::empty();
        match &self.ca_bundle {
            Some(bundle) => {
                let pem = STANDARD
                    .decode(bundle.trim())
                    .map_err(|_| WebhookError::CaBase64)?;
                for cert in CertificateDer::pem_slice_iter(&pem) {
                    roots.add(cert.map_err(|_| WebhookError::CaPem)?)?;
                }
                if roots.is_empty() {
                    return Err(WebhookError::CaPem);
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(WebhookError::NoSystemRoots);
                }
            }
        }
        Ok(Endpoint { url, roots })
    }
}

impl Endpoint {
    /// An HTTPS-only HTTP/1.1 client trusting only `roots`. It follows no redirects (hyper's
    /// client never does), so a step cannot be sent on to another host.
    fn client(self) -> Result<(Uri, HttpsClient), WebhookError> {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(self.roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        Ok((
            self.url,
            Client::builder(TokioExecutor::new()).build(connector),
        ))
    }
}

/// `v1=<hex>`: the HMAC-SHA256 under `key` of `"<timestamp>.<body>"`. The timestamp is signed
/// so a captured request cannot be replayed later than the receiver's tolerance.
pub fn signature(key: &[u8], timestamp: u64, body: &[u8]) -> String {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => String::new(),
    }
}

/// The JSON body of one step, with the field names of AWS's rotation Lambda event.
pub fn body(step: Step, secret_id: &str, token: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "Step": step.as_str(),
        "SecretId": secret_id,
        "ClientRequestToken": token,
    }))
    .unwrap_or_default()
}

/// Rotation by an HTTPS endpoint. Holds nothing: every step reads its settings afresh.
#[derive(Debug, Default)]
pub struct WebhookStrategy;

impl WebhookStrategy {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl RotationStrategy for WebhookStrategy {
    fn name(&self) -> &'static str {
        NAME
    }

    fn check_settings(&self, settings: &serde_json::Value) -> Result<(), SettingsError> {
        Settings::parse(settings)
            .and_then(|parsed| parsed.endpoint())
            .map(|_| ())
            .map_err(|e| SettingsError(e.to_string()))
    }

    fn referenced_secret(
        &self,
        settings: &serde_json::Value,
        _current: Option<&SecretBytes>,
    ) -> Option<String> {
        Settings::parse(settings).ok().map(|s| s.signing_secret)
    }

    async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError> {
        let step = request.step;
        let permanent = |reason: String| StepError::permanent(step, reason);
        let settings = Settings::parse(request.settings).map_err(|e| permanent(e.to_string()))?;
        let key = request
            .referenced
            .filter(|key| !key.expose().is_empty())
            .ok_or_else(|| {
                permanent(format!(
                    "the signing secret {} has no current value",
                    settings.signing_secret
                ))
            })?;
        let (url, client) = settings
            .endpoint()
            .and_then(Endpoint::client)
            .map_err(|e| permanent(e.to_string()))?;
        let host = url.host().unwrap_or_default().to_owned();

        let body = body(step, request.secret_id, request.token);
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or_default();
        let signed = signature(key.expose(), timestamp, &body);
        let http_request = Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(TIMESTAMP_HEADER, timestamp.to_string())
            .header(SIGNATURE_HEADER, signed)
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| permanent(format!("the request to {host} could not be built")))?;
        let response = match tokio::time::timeout(TIMEOUT, client.request(http_request)).await {
            Err(_) => {
                return Err(StepError::transient(
                    step,
                    format!(
                        "the webhook at {host} did not answer within {}s",
                        TIMEOUT.as_secs()
                    ),
                ));
            }
            Ok(Err(e)) if certificate_refused(&e) => {
                // The settings must change (caBundle) or the endpoint's certificate must.
                return Err(permanent(format!(
                    "the webhook at {host} presented a certificate that is not trusted"
                )));
            }
            Ok(Err(_)) => {
                return Err(StepError::transient(
                    step,
                    format!("the webhook at {host} could not be reached"),
                ));
            }
            Ok(Ok(response)) => response,
        };
        outcome(step, &host, response.status())
    }
}

/// Whether a request failed because the endpoint's certificate was refused, rather than on
/// the network. rustls's error sits inside nested `io::Error`s, whose `source` skips it.
fn certificate_refused(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        next = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => current.source(),
        };
    }
    false
}

/// What an answer means: 2xx done; 429 and 5xx may pass; anything else will not. The reason
/// names the status and the host, never the body (which may echo a value).
fn outcome(step: Step, host: &str, status: StatusCode) -> Result<StepOutcome, StepError> {
    let code = status.as_u16();
    if status.is_success() {
        Ok(StepOutcome::Done)
    } else if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        Err(StepError::transient(
            step,
            format!("the webhook at {host} answered {code}"),
        ))
    } else if status.is_redirection() {
        Err(StepError::permanent(
            step,
            format!("the webhook at {host} answered {code}; redirects are not followed"),
        ))
    } else {
        Err(StepError::permanent(
            step,
            format!("the webhook at {host} answered {code}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU16, Ordering};

    use axum::Router;
    use axum::extract::State;
    use axum::http::HeaderMap;
    use axum::routing::post;
    use serde_json::{Value, json};
    use subtle::ConstantTimeEq as _;
    use tokio::net::TcpListener;

    use super::*;

    const KEY: &[u8] = b"the-signing-key-of-the-receiver";
    const ARN: &str = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-db-AbCdEf";
    const TOKEN: &str = "9f1c2b0e-5d4a-4c3b-8a7e-6f5d4c3b2a19";

    /// A receiver as a user would write one: it checks the timestamp and the signature, keeps
    /// the bodies it accepted, and answers `status`.
    struct Receiver {
        calls: Mutex<Vec<Value>>,
        status: AtomicU16,
    }

    async fn receive(
        State(receiver): State<Arc<Receiver>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let Ok(timestamp) = header(TIMESTAMP_HEADER).parse::<u64>() else {
            return StatusCode::BAD_REQUEST;
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        if now.abs_diff(timestamp) > 300 {
            return StatusCode::UNAUTHORIZED;
        }
        let expected = signature(KEY, timestamp, &body);
        if !bool::from(
            expected
                .as_bytes()
                .ct_eq(header(SIGNATURE_HEADER).as_bytes()),
        ) {
            return StatusCode::UNAUTHORIZED;
        }
        receiver
            .calls
            .lock()
            .unwrap()
            .push(serde_json::from_slice(&body).unwrap());
        StatusCode::from_u16(receiver.status.load(Ordering::SeqCst)).unwrap()
    }

    /// Serves a receiver over HTTPS on loopback; returns it, its URL and its certificate as
    /// a caBundle. The directory holds the certificate files while it serves.
    async fn receiver(dir: &std::path::Path) -> (Arc<Receiver>, String, String) {
        let receiver = Arc::new(Receiver {
            calls: Mutex::new(Vec::new()),
            status: AtomicU16::new(200),
        });
        let app = Router::new()
            .route("/rotate", post(receive))
            .with_state(Arc::clone(&receiver));
        let server = crate::test_support::https::serve_https(dir, &["localhost"], app).await;
        (
            receiver,
            format!("https://localhost:{}/rotate", server.port),
            STANDARD.encode(server.cert_pem),
        )
    }

    fn settings(url: &str, ca_bundle: &str) -> Value {
        json!({"url": url, "caBundle": ca_bundle, "signingSecret": "webhook-key"})
    }

    async fn run(
        settings: &Value,
        step: Step,
        key: &SecretBytes,
    ) -> Result<StepOutcome, StepError> {
        WebhookStrategy::new()
            .run(StepRequest {
                step,
                secret_id: ARN,
                namespace: "shop",
                name: "app-db",
                token: TOKEN,
                settings,
                current: None,
                pending: None,
                referenced: Some(key),
                attempt: 0,
            })
            .await
    }

    #[tokio::test]
    async fn each_step_is_posted_signed_with_the_fields_of_a_rotation_lambda_event() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, url, ca) = receiver(dir.path()).await;
        let settings = settings(&url, &ca);
        WebhookStrategy::new().check_settings(&settings).unwrap();
        let key = SecretBytes::new(KEY.to_vec());
        for step in Step::ALL {
            let outcome = run(&settings, step, &key).await.unwrap();
            // createSecret too: the endpoint stores the pending value itself.
            assert!(matches!(outcome, StepOutcome::Done), "{step}");
        }
        let calls = receiver.calls.lock().unwrap().clone();
        let expected: Vec<Value> = Step::ALL
            .iter()
            .map(
                |step| json!({"Step": step.as_str(), "SecretId": ARN, "ClientRequestToken": TOKEN}),
            )
            .collect();
        assert_eq!(calls, expected);
    }

    #[tokio::test]
    async fn a_request_signed_with_another_key_is_refused_and_the_step_fails_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, url, ca) = receiver(dir.path()).await;
        let wrong = SecretBytes::new(b"not-the-receivers-key".to_vec());
        let error = run(&settings(&url, &ca), Step::SetSecret, &wrong)
            .await
            .err()
            .unwrap();
        assert!(!error.retryable);
        assert_eq!(error.step, Step::SetSecret);
        assert_eq!(error.reason, "the webhook at localhost answered 401");
        assert!(receiver.calls.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_503_or_a_429_is_transient_and_a_404_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, url, ca) = receiver(dir.path()).await;
        let settings = settings(&url, &ca);
        let key = SecretBytes::new(KEY.to_vec());
        for (status, retryable) in [(503, true), (429, true), (404, false), (302, false)] {
            receiver.status.store(status, Ordering::SeqCst);
            let error = run(&settings, Step::TestSecret, &key).await.err().unwrap();
            assert_eq!(error.retryable, retryable, "{status}");
            assert!(
                error.reason.contains(&status.to_string()),
                "{}",
                error.reason
            );
            assert!(error.reason.contains("localhost"), "{}", error.reason);
        }
        // An endpoint that is not there may come back.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let gone = json!({"url": format!("https://localhost:{port}/"), "caBundle": ca, "signingSecret": "k"});
        assert!(
            run(&gone, Step::TestSecret, &key)
                .await
                .err()
                .unwrap()
                .retryable
        );
    }

    #[tokio::test]
    async fn a_certificate_outside_the_ca_bundle_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, url, _) = receiver(dir.path()).await;
        let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let settings = settings(&url, &STANDARD.encode(other.cert.pem()));
        let key = SecretBytes::new(KEY.to_vec());
        let error = run(&settings, Step::CreateSecret, &key)
            .await
            .err()
            .unwrap();
        assert!(!error.retryable);
        assert!(error.reason.contains("not trusted"), "{}", error.reason);
        assert!(receiver.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn settings_need_an_https_url_a_signing_secret_and_a_pem_bundle() {
        let strategy = WebhookStrategy::new();
        let ca = STANDARD.encode(
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
                .unwrap()
                .cert
                .pem(),
        );
        strategy
            .check_settings(&settings("https://rotate.example/step", &ca))
            .unwrap();
        for refused in [
            settings("http://rotate.example/step", &ca),
            settings("https:///step", &ca),
            settings("rotate.example", &ca),
            settings("https://rotate.example/", "not base64!"),
            settings("https://rotate.example/", &STANDARD.encode("no PEM here")),
            json!({"url": "https://rotate.example/", "caBundle": ca}),
            json!({"url": "https://rotate.example/", "signingSecret": ""}),
            json!({"url": "https://rotate.example/", "signingSecret": "k", "extra": 1}),
        ] {
            assert!(strategy.check_settings(&refused).is_err(), "{refused}");
        }
        assert_eq!(
            strategy
                .referenced_secret(&settings("https://rotate.example/", &ca), None)
                .as_deref(),
            Some("webhook-key")
        );
    }

    #[tokio::test]
    async fn without_a_signing_key_nothing_is_sent() {
        let dir = tempfile::tempdir().unwrap();
        let (receiver, url, ca) = receiver(dir.path()).await;
        let settings = settings(&url, &ca);
        let error = WebhookStrategy::new()
            .run(StepRequest {
                step: Step::SetSecret,
                secret_id: ARN,
                namespace: "shop",
                name: "app-db",
                token: TOKEN,
                settings: &settings,
                current: None,
                pending: None,
                referenced: None,
                attempt: 0,
            })
            .await
            .err()
            .unwrap();
        assert!(!error.retryable);
        assert!(error.reason.contains("webhook-key"), "{}", error.reason);
        assert!(receiver.calls.lock().unwrap().is_empty());
    }

    #[test]
    fn the_signature_is_the_hmac_of_timestamp_dot_body() {
        // Computed independently (Python's hmac module).
        let body = br#"{"ClientRequestToken":"t","SecretId":"s","Step":"setSecret"}"#;
        assert_eq!(
            signature(b"signing-key", 1_700_000_000, body),
            "v1=b5811519bcdb77be158683c1037d398dceea8de4df157027bcf26ce0aa0fb48e"
        );
        assert_eq!(
            body_of(Step::SetSecret),
            body.to_vec(),
            "the body's bytes are what is signed"
        );
    }

    fn body_of(step: Step) -> Vec<u8> {
        super::body(step, "s", "t")
    }
}
