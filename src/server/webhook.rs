//! Parameter policy notifications, delivered: each one is written to the audit log and, with
//! `--parameter-webhook`, POSTed to a URL as a CloudEvents 1.0 event in the structured JSON
//! form (`type` `dev.coffer.parameter.<kind>`), signed with `X-Coffer-Signature:
//! sha256=HEX`, the HMAC-SHA256 of the body under the shared secret. Delivery is retried with
//! backoff on its own tasks, so a slow or absent receiver never holds up the engine.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{Request, Uri};
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Semaphore, broadcast};

use crate::aws::audit::AuditSink;
use crate::crypto::SecretBytes;
use crate::engine::parameters::ParameterNotification;

/// Attempts per notification before it is given up (and logged).
const ATTEMPTS: u32 = 8;
/// The first wait between attempts; doubled each time, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a receiver has to answer one attempt.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight at once; more wait their turn.
const IN_FLIGHT: usize = 64;
/// The header that carries the body's signature.
pub const SIGNATURE_HEADER: &str = "x-coffer-signature";

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("parameter webhook {0} must be an https:// URL, or http:// to a loopback address")]
    Url(String),
    #[error("--parameter-webhook needs --parameter-webhook-secret-file")]
    NoSecret,
    #[error("cannot read the parameter webhook secret {path}: {source}")]
    ReadSecret {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the parameter webhook secret file {0} is empty")]
    EmptySecret(PathBuf),
    #[error("the system's CA certificates could not be loaded")]
    NoSystemRoots,
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where notifications are POSTed, and the secret that signs them.
pub struct ParameterWebhook {
    url: Uri,
    secret: SecretBytes,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Named in each event's `source`.
    region: String,
}

/// Whether `url` is one a webhook may use: HTTPS anywhere, plain HTTP only to loopback.
fn acceptable(url: &Uri) -> bool {
    let Some(host) = url.host() else {
        return false;
    };
    match url.scheme_str() {
        Some("https") => true,
        Some("http") => {
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            host.eq_ignore_ascii_case("localhost")
                || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
        }
        _ => false,
    }
}

/// Reads the shared secret: the file's contents without a final newline.
pub fn read_secret(path: &Path) -> Result<SecretBytes, WebhookError> {
    let mut bytes = std::fs::read(path).map_err(|source| WebhookError::ReadSecret {
        path: path.to_owned(),
        source,
    })?;
    while bytes
        .last()
        .is_some_and(|byte| *byte == b'\n' || *byte == b'\r')
    {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(WebhookError::EmptySecret(path.to_owned()));
    }
    Ok(SecretBytes::new(bytes))
}

/// `sha256=HEX`: the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => String::new(),
    }
}

fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339).unwrap_or_default()
}

/// The CloudEvents type of a notification.
pub fn event_type(notification: &ParameterNotification) -> String {
    format!("dev.coffer.parameter.{}", notification.kind.as_str())
}

/// Parses a webhook URL, refusing what [`acceptable`] refuses.
pub fn parse_url(url: &str) -> Result<Uri, WebhookError> {
    url.parse::<Uri>()
        .ok()
        .filter(acceptable)
        .ok_or_else(|| WebhookError::Url(url.to_owned()))
}

impl ParameterWebhook {
    pub fn new(url: &str, secret: SecretBytes, region: &str) -> Result<Self, WebhookError> {
        let parsed = parse_url(url)?;
        let mut roots = rustls::RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(found.certs);
        if roots.is_empty() && parsed.scheme_str() == Some("https") {
            return Err(WebhookError::NoSystemRoots);
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            url: parsed,
            secret,
            client: Client::builder(TokioExecutor::new()).build(connector),
            region: region.to_owned(),
        })
    }

    /// The event's body: CloudEvents 1.0, structured mode.
    pub fn body(&self, notification: &ParameterNotification, id: &str, now: SystemTime) -> Vec<u8> {
        let due = OffsetDateTime::from_unix_timestamp(notification.due)
            .map(rfc3339)
            .unwrap_or_default();
        serde_json::to_vec(&serde_json::json!({
            "specversion": "1.0",
            "id": id,
            "source": format!("/coffer/ssm/{}", self.region),
            "type": event_type(notification),
            "subject": notification.arn,
            "time": rfc3339(OffsetDateTime::from(now)),
            "datacontenttype": "application/json",
            "data": {
                "namespace": notification.namespace,
                "name": notification.name,
                "arn": notification.arn,
                "kind": notification.kind.as_str(),
                "due": due,
            },
        }))
        .unwrap_or_default()
    }

    /// One attempt: a 2xx answer is delivered.
    async fn attempt(&self, body: &Bytes, signed: &str) -> Result<(), String> {
        let request = Request::post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/cloudevents+json")
            .header(SIGNATURE_HEADER, signed)
            .body(Full::new(body.clone()))
            .map_err(|_| "the request could not be built".to_owned())?;
        let response = tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| "no answer in time".to_owned())?
            .map_err(|_| "the receiver could not be reached".to_owned())?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", response.status().as_u16()))
        }
    }

    /// Delivers one notification, retrying with backoff.
    pub async fn deliver(&self, notification: &ParameterNotification) -> bool {
        let id = uuid::Uuid::new_v4().to_string();
        let body = Bytes::from(self.body(notification, &id, SystemTime::now()));
        let signed = signature(self.secret.expose(), &body);
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match self.attempt(&body, &signed).await {
                Ok(()) => return true,
                Err(reason) if attempt == ATTEMPTS => {
                    tracing::warn!(parameter = %notification.arn, event = %id, %reason, "parameter webhook given up");
                }
                Err(reason) => {
                    tracing::debug!(parameter = %notification.arn, event = %id, %reason, attempt, "parameter webhook to be retried");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(MAX_BACKOFF);
                }
            }
        }
        false
    }
}

/// Writes every notification to the audit log and hands it to the webhook, if any, until the
/// engine's channel closes. Deliveries run on their own tasks, at most [`IN_FLIGHT`] at once.
pub async fn relay(
    mut notifications: broadcast::Receiver<ParameterNotification>,
    audit: AuditSink,
    webhook: Option<Arc<ParameterWebhook>>,
) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        let notification = match notifications.recv().await {
            Ok(notification) => notification,
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(
                    missed,
                    "parameter notifications dropped: the relay fell behind"
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        audit.record_policy(
            SystemTime::now(),
            &event_type(&notification),
            &notification.arn,
            notification.due,
        );
        if let Some(webhook) = &webhook {
            let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                return;
            };
            let webhook = Arc::clone(webhook);
            tokio::spawn(async move {
                webhook.deliver(&notification).await;
                drop(slot);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::Router;
    use axum::body::Bytes as AxumBytes;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;

    use super::*;
    use crate::engine::parameters::NotificationKind;

    fn notification() -> ParameterNotification {
        ParameterNotification {
            namespace: "default".into(),
            name: "/app/db".into(),
            arn: "arn:aws:ssm:us-east-1:123456789012:parameter/app/db".into(),
            kind: NotificationKind::ExpirationNotification,
            due: 1_800_000_000,
        }
    }

    #[test]
    fn only_https_or_loopback_http_is_accepted() {
        let secret = || SecretBytes::from_slice(b"s");
        for good in [
            "https://hooks.example.com/x",
            "http://127.0.0.1:9000/hook",
            "http://localhost/hook",
            "http://[::1]:8080/",
        ] {
            assert!(
                ParameterWebhook::new(good, secret(), "us-east-1").is_ok(),
                "{good}"
            );
        }
        for bad in [
            "http://example.com/",
            "http://10.0.0.1/",
            "ftp://x/",
            "not a url",
            "/path",
        ] {
            assert!(
                ParameterWebhook::new(bad, secret(), "us-east-1").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_secret_file_loses_its_final_newline_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "shh\n").unwrap();
        assert_eq!(read_secret(&path).unwrap().expose(), b"shh");
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            read_secret(&path),
            Err(WebhookError::EmptySecret(_))
        ));
    }

    #[test]
    fn signatures_are_hmac_sha256_in_hex() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[tokio::test]
    async fn events_are_cloudevents_signed_and_retried_until_accepted() {
        let received: Arc<Mutex<Vec<(HeaderMap, AxumBytes)>>> = Arc::default();
        let seen = Arc::clone(&received);
        let app = Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: AxumBytes| {
                let seen = Arc::clone(&seen);
                async move {
                    let mut seen = seen.lock().unwrap();
                    seen.push((headers, body));
                    // The first attempt fails, so that delivery must retry.
                    if seen.len() == 1 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let webhook = ParameterWebhook::new(
            &format!("http://{address}/hook"),
            SecretBytes::from_slice(b"topsecret"),
            "us-east-1",
        )
        .unwrap();
        assert!(webhook.deliver(&notification()).await);
        let received = received.lock().unwrap();
        assert_eq!(received.len(), 2);
        let (headers, body) = &received[1];
        assert_eq!(headers["content-type"], "application/cloudevents+json");
        assert_eq!(
            headers[SIGNATURE_HEADER].to_str().unwrap(),
            signature(b"topsecret", body)
        );
        let event: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(
            event["type"],
            "dev.coffer.parameter.expiration-notification"
        );
        assert_eq!(event["subject"], notification().arn);
        assert_eq!(event["data"]["name"], "/app/db");
        assert_eq!(event["data"]["due"], "2027-01-15T08:00:00Z");
        // Both attempts carried the same event.
        assert_eq!(received[0].1, received[1].1);
    }
}
