//! The AWS JSON 1.1 front end: `POST /` with the operation in `X-Amz-Target`, SigV4 on every
//! call (or, in Kubernetes mode, a ServiceAccount token as `Authorization: Bearer`), AWS
//! exception names in every error, a request id on every response, throttling per principal and
//! one audit line per call. Thin: it authenticates, decodes, calls the engine and encodes.

pub mod audit;
pub mod credentials_endpoint;
pub mod guard;
pub mod identity;
mod kms;
pub mod kube_identity;
pub mod metrics;
pub mod ops;
mod secretsmanager;
pub mod sigv4;
mod ssm;
pub mod throttle;
pub mod wire;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use tracing::Instrument as _;

use crate::engine::{Caller, ServiceError};
use audit::{AuditEvent, AuditSink};
use identity::{Authenticator, BearerAuthenticator};
use ops::Services;
use sigv4::SignedRequest;
use throttle::Throttle;

/// Request bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Everything the front end needs.
pub struct AwsApi {
    /// The services served, each with its table of operations.
    pub services: Services,
    /// The region requests must be signed for.
    pub region: String,
    /// Bounds on requests not yet authenticated.
    pub guard: guard::RequestGuard,
    pub authenticator: Arc<dyn Authenticator>,
    pub throttle: Throttle,
    pub audit: AuditSink,
    pub metrics: metrics::ApiMetrics,
    /// Accepts `Authorization: Bearer TOKEN` in place of SigV4 when set (Kubernetes mode).
    pub bearer: Option<Arc<dyn BearerAuthenticator>>,
}

/// An error as the AWS SDKs expect it.
#[derive(Debug)]
pub struct AwsError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AwsError {
    pub fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            code,
            message: message.into(),
        }
    }

    pub fn fault(code: &'static str) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code,
            message: "We encountered an internal error. Please try again.".into(),
        }
    }

    /// A dependency (such as the Kubernetes API) could not answer: 503, which the SDKs retry.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "ServiceUnavailableException",
            message: message.into(),
        }
    }

    /// An engine's error: its AWS name, and 500 with a fixed message when it is a fault (whose
    /// detail goes to the log, with the request's id, and never to the caller).
    pub fn from_service<E: ServiceError>(err: &E) -> Self {
        if err.is_fault() {
            tracing::error!(error = %crate::redact::chain(err), "engine fault");
            return AwsError::fault(err.aws_code());
        }
        AwsError::client(err.aws_code(), err.to_string())
    }
}

impl From<sigv4::SigV4Error> for AwsError {
    fn from(err: sigv4::SigV4Error) -> Self {
        AwsError {
            status: StatusCode::from_u16(err.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: err.aws_code(),
            message: err.to_string(),
        }
    }
}

/// What a handled call reports for the audit line.
#[derive(Default)]
pub struct CallFacts {
    /// The resource the call was about: what the caller named (cut short) until the engine
    /// names it by its ARN.
    pub resource: Option<String>,
}

impl CallFacts {
    /// What the caller named, cut short, until the engine names the resource by its ARN.
    fn asked_for(&mut self, resource: &str) {
        self.resource = Some(truncate_for_message(resource));
    }

    fn done_with(&mut self, arn: &str) {
        self.resource = Some(arn.to_owned());
    }
}

/// The routes of the AWS front end. `/metrics` is served elsewhere ([`metrics_router`]): on the
/// probe port in Kubernetes mode, on `--metrics-listen` standalone, never on the API's.
pub fn router(api: Arc<AwsApi>) -> Router {
    Router::new().route("/", post(handle)).with_state(api)
}

/// `GET /metrics`: the whole registry `metrics` belongs to, in the OpenMetrics text format.
pub fn metrics_router(metrics: metrics::ApiMetrics) -> Router {
    Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
                    .into_response()
            }
        }),
    )
}

async fn handle(State(api): State<Arc<AwsApi>>, request: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let (parts, body) = request.into_parts();
    let target = header_text(&parts.headers, "x-amz-target").unwrap_or_default();
    let operation = api.services.known_operation(&target);
    // Every line logged while serving names the request and (when known) the operation.
    let span = tracing::info_span!(
        "aws_call",
        request_id = %request_id,
        operation = operation.unwrap_or(metrics::UNKNOWN_OPERATION),
    );
    serve_call(&api, request_id, parts, body, target, operation)
        .instrument(span)
        .await
}

async fn serve_call(
    api: &AwsApi,
    request_id: String,
    parts: axum::http::request::Parts,
    body: Body,
    target: String,
    operation: Option<&'static str>,
) -> Response {
    let started = std::time::Instant::now();
    let limits = api.guard.limits();
    let connection = parts.extensions.get::<crate::serve::Connection>().copied();
    let mut facts = CallFacts::default();
    let mut principal = None;
    let call = async {
        let service = api
            .services
            .for_target(&target)
            .ok_or_else(|| ops::unknown_operation(&target))?;
        // The body is held in memory before the caller is known: within a shared budget, and
        // for a bounded time.
        let reservation = api.guard.reserve_body(&parts.headers)?;
        let body = tokio::time::timeout(limits.body_timeout, to_bytes(body, MAX_BODY_BYTES))
            .await
            .map_err(|_| guard::body_timed_out())?
            .map_err(|_| AwsError::client("ValidationException", "The request body is too large."))
            .map(wire::wiped_request)?;
        let mut caller = authenticate(api, &parts, body.expose(), service.signing_name()).await?;
        drop(reservation);
        caller.secure_transport = connection.is_some_and(|connection| connection.secure);
        principal = Some(caller.principal.arn.clone());
        api.throttle.check(&caller.principal.arn)?;
        service
            .call(&target, &caller, body.expose(), &mut facts)
            .await
    };
    let mut outcome = tokio::time::timeout(limits.request_timeout, call)
        .await
        .unwrap_or_else(|_| Err(guard::request_timed_out()));
    // Requests that never authenticated are rate-limited per address before they are audited,
    // so that garbage cannot fill the disk.
    let mut audited = true;
    if principal.is_none()
        && outcome.is_err()
        && !api
            .guard
            .note_failed_authentication(connection.map(|connection| connection.peer.ip()))
    {
        outcome = Err(guard::too_many_failures());
        audited = false;
    }

    let (status, body, error_code) = match outcome {
        Ok(body) => (StatusCode::OK, body, None),
        Err(error) => {
            if error.status.is_server_error() {
                tracing::error!(code = error.code, "request failed with a fault");
            }
            let body = serde_json::to_vec(&serde_json::json!({
                "__type": error.code,
                "message": error.message,
            }))
            .unwrap_or_default();
            (error.status, body, Some(error.code))
        }
    };
    api.metrics.record(
        operation.unwrap_or(metrics::UNKNOWN_OPERATION),
        error_code,
        started.elapsed(),
    );
    if audited {
        api.audit.record(AuditEvent {
            time: SystemTime::now(),
            request_id: request_id.clone(),
            // Only names Coffer knows, or the caller's text cut short.
            operation: operation.map_or_else(
                || crate::engine::text::truncate_to(&target, 64),
                str::to_owned,
            ),
            principal,
            resource: facts.resource,
            outcome: if error_code.is_none() {
                "success"
            } else {
                "error"
            },
            error_code,
            status: status.as_u16(),
            duration_micros: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
    }

    let mut response = (status, wire::wiped_body(body)).into_response();
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(JSON_CONTENT_TYPE));
    if let Ok(value) = HeaderValue::from_str(&request_id) {
        headers.insert("x-amzn-requestid", value);
    }
    if let Some(code) = error_code {
        headers.insert("x-amzn-errortype", HeaderValue::from_static(code));
    }
    response
}

async fn authenticate(
    api: &AwsApi,
    parts: &axum::http::request::Parts,
    body: &[u8],
    signing_name: &str,
) -> Result<Caller, AwsError> {
    if let Some(bearer) = &api.bearer
        && let Some(token) = bearer_token(&parts.headers)
    {
        // A token names no signing scope, so the service scope check does not apply.
        return bearer.authenticate(token).await;
    }
    let signed = SignedRequest::parse(parts)?;
    let (secret, caller) = api
        .authenticator
        .lookup(&signed.access_key_id, signed.session_token.as_deref())
        .await?
        .ok_or_else(|| {
            AwsError::client(
                "UnrecognizedClientException",
                "The security token included in the request is invalid.",
            )
        })?;
    signed.verify(parts, body, secret.expose(), SystemTime::now())?;
    signed.require_service(signing_name)?;
    signed.require_region(&api.region)?;
    // The operation is chosen by this header: a signature that does not cover it could be
    // replayed as another operation.
    signed.require_signed_header("x-amz-target")?;
    Ok(caller)
}

/// The token of a single `Authorization: Bearer TOKEN` header, or `None` for anything else
/// (which is then parsed as SigV4).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// Caller-supplied text echoed in an error message, cut short.
pub(crate) fn truncate_for_message(text: &str) -> String {
    crate::engine::text::truncate(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::kube_identity::{ServiceAccountIdentity, TokenReviewer};
    use crate::crypto::{RootKeyring, SecretBytes};
    use crate::engine::account::account_id;
    use crate::engine::kms::Kms;
    use crate::engine::{AccountAuthority, SystemClock};
    use crate::store::{EmbeddedStore, Store};
    use crate::test_support::mock_api::{ApiServer, client, expect, respond, status};
    use async_trait::async_trait;
    use http::Method;

    static TOKEN: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| crate::test_support::tokens::service_account_token("app"));
    fn token() -> &'static str {
        &TOKEN
    }
    const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

    fn service_account() -> ServiceAccountIdentity {
        ServiceAccountIdentity {
            namespace: "team-a".into(),
            name: "app".into(),
            uid: String::new(),
        }
    }

    const ACCESS_KEY_ID: &str = "AKIAFRONTDOORTEST001";
    const ACCESS_SECRET: &str = "c0ffer/Front+Door/Secret/0123456789abcdefg";

    fn key_user() -> String {
        identity::user_arn("default", "ops")
    }

    /// Only the `team-a/app` ServiceAccount and the `ops` user of [`OneAccessKey`] may do
    /// anything.
    struct OnlyTheServiceAccount;

    #[async_trait]
    impl AccountAuthority for OnlyTheServiceAccount {
        async fn allows(&self, caller: &Caller, _action: &str, _resource: &str) -> bool {
            caller.principal.arn == service_account().principal_arn()
                || caller.principal.arn == key_user()
        }
    }

    /// Knows one access key, [`ACCESS_KEY_ID`], of the user `ops`.
    struct OneAccessKey;

    #[async_trait]
    impl Authenticator for OneAccessKey {
        async fn lookup(
            &self,
            access_key_id: &str,
            _session_token: Option<&str>,
        ) -> Result<Option<(SecretBytes, Caller)>, AwsError> {
            Ok((access_key_id == ACCESS_KEY_ID).then(|| {
                (
                    SecretBytes::from_slice(ACCESS_SECRET.as_bytes()),
                    Caller {
                        namespace: "default".into(),
                        principal: crate::engine::Principal {
                            arn: key_user(),
                            account_id: account_id("default"),
                        },
                        access_key_id: Some(ACCESS_KEY_ID.into()),
                        secure_transport: false,
                    },
                )
            }))
        }
    }

    struct Served {
        url: String,
        api_server: ApiServer,
        api: Arc<AwsApi>,
        _dir: tempfile::TempDir,
    }

    /// The front end served on a loopback port through Coffer's own connection loop, with
    /// [`OneAccessKey`], bearer tokens reviewed by a mocked API server (or not accepted at all,
    /// with `bearer` false), and `audit` and `limits` as given.
    async fn serve_front_end(
        bearer: bool,
        audit: AuditSink,
        limits: guard::RequestLimits,
    ) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
        let kms = Arc::new(Kms::new(
            store,
            Arc::new(RootKeyring::generate()),
            Arc::new(OnlyTheServiceAccount),
            Arc::new(SystemClock),
            "us-east-1",
        ));
        let (kube, api_server) = client();
        let api = Arc::new(AwsApi {
            services: Services::new().with(kms),
            region: "us-east-1".into(),
            guard: guard::RequestGuard::new(limits),
            authenticator: Arc::new(OneAccessKey),
            throttle: Throttle::disabled(),
            audit,
            metrics: metrics::ApiMetrics::new(),
            bearer: bearer
                .then(|| Arc::new(TokenReviewer::new(kube)) as Arc<dyn BearerAuthenticator>),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(crate::serve::serve(
            listener,
            router(Arc::clone(&api)),
            None,
            crate::serve::ConnectionLimits::DEFAULT,
            std::future::pending(),
        ));
        Served {
            url: format!("http://{address}/"),
            api_server,
            api,
            _dir: dir,
        }
    }

    async fn serve_api(bearer: bool) -> (String, ApiServer, tempfile::TempDir) {
        let served = serve_front_end(bearer, AuditSink::off(), guard::RequestLimits::DEFAULT).await;
        (served.url, served.api_server, served._dir)
    }

    /// A KMS call signed with [`ACCESS_KEY_ID`] for `region`, `x-amz-target` signed or not.
    async fn signed_call(
        url: &str,
        target: &str,
        body: &str,
        region: &str,
        sign_target: bool,
    ) -> (u16, serde_json::Value) {
        let headers = crate::test_support::sigv4_client::signed_headers(
            &crate::test_support::sigv4_client::SdkCall {
                url,
                access_key_id: ACCESS_KEY_ID,
                secret: ACCESS_SECRET,
                region,
                service: "kms",
                target,
                body: body.as_bytes(),
                sign_target,
            },
        );
        let response = reqwest::Client::new()
            .post(url)
            .headers(headers)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap())
    }

    async fn call(
        url: &str,
        target: &str,
        authorization: Option<String>,
    ) -> (u16, Option<String>, serde_json::Value, String) {
        let mut request = reqwest::Client::new()
            .post(url)
            .header("x-amz-target", target)
            .header("content-type", JSON_CONTENT_TYPE)
            .body("{}");
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .map(|value| value.to_str().unwrap().to_owned());
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap();
        (status, error_type, body, text)
    }

    /// Answers the next TokenReview with `status`, after checking it asks about [`TOKEN`] for
    /// Coffer's audience.
    async fn answer_token_review(server: &mut ApiServer, status: serde_json::Value) {
        let (body, send) = expect(server, Method::POST, TOKEN_REVIEWS).await;
        let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(request["spec"]["token"], token());
        assert_eq!(request["spec"]["audiences"], serde_json::json!(["coffer"]));
        let answer = serde_json::json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "spec": request["spec"],
            "status": status,
        });
        respond(send, 201, serde_json::to_vec(&answer).unwrap());
    }

    /// Whether the mocked API server gets no request for a while (or its client is gone).
    async fn no_request_within_200ms(server: &mut ApiServer) -> bool {
        !matches!(
            tokio::time::timeout(std::time::Duration::from_millis(200), server.next_request())
                .await,
            Ok(Some(_))
        )
    }

    #[test]
    fn sigv4_errors_keep_their_status() {
        use sigv4::SigV4Error;
        let fault = AwsError::from(SigV4Error::Internal("HMAC"));
        assert_eq!(
            (fault.status, fault.code),
            (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure")
        );
        let missing = AwsError::from(SigV4Error::MissingAuthentication);
        assert_eq!(missing.status, StatusCode::FORBIDDEN);
        let bad = AwsError::from(SigV4Error::InvalidSignature);
        assert_eq!(
            (bad.status, bad.code),
            (StatusCode::BAD_REQUEST, "InvalidSignatureException")
        );
    }

    #[tokio::test]
    async fn a_reviewed_service_account_token_reaches_kms_as_that_service_account() {
        let (url, mut server, _dir) = serve_api(true).await;
        let api_server = tokio::spawn(async move {
            answer_token_review(
                &mut server,
                serde_json::json!({
                    "authenticated": true,
                    "audiences": ["coffer"],
                    "user": {"username": "system:serviceaccount:team-a:app", "uid": "u-1"},
                }),
            )
            .await;
            server
        });
        let (code, error_type, body, _) = call(
            &url,
            "TrentService.CreateKey",
            Some(format!("Bearer {}", token())),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(error_type, None);
        // The key was made in the ServiceAccount's namespace, its account.
        assert_eq!(body["KeyMetadata"]["AWSAccountId"], account_id("team-a"));
        let mut server = api_server.await.unwrap();

        // The review is cached: the same token lists the key without asking again.
        let (code, _, body, _) = call(
            &url,
            "TrentService.ListKeys",
            Some(format!("bearer {}", token())),
        )
        .await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["Keys"].as_array().unwrap().len(), 1, "{body}");
        assert!(
            no_request_within_200ms(&mut server).await,
            "no second TokenReview"
        );
    }

    #[tokio::test]
    async fn a_refused_token_is_unrecognized_and_never_echoed() {
        for refusal in [
            serde_json::json!({"authenticated": false, "error": "invalid bearer token"}),
            // Authenticated, but for another audience.
            serde_json::json!({
                "authenticated": true,
                "audiences": ["https://kubernetes.default.svc"],
                "user": {"username": "system:serviceaccount:team-a:app"},
            }),
            // Authenticated, but not a ServiceAccount.
            serde_json::json!({
                "authenticated": true,
                "audiences": ["coffer"],
                "user": {"username": "alice"},
            }),
        ] {
            let (url, mut server, _dir) = serve_api(true).await;
            let api_server = tokio::spawn(async move {
                answer_token_review(&mut server, refusal).await;
            });
            let (code, error_type, body, text) = call(
                &url,
                "TrentService.ListKeys",
                Some(format!("Bearer {}", token())),
            )
            .await;
            api_server.await.unwrap();
            assert_eq!(code, 400, "{body}");
            assert_eq!(body["__type"], "UnrecognizedClientException");
            assert_eq!(
                body["message"],
                "The security token included in the request is invalid."
            );
            assert_eq!(error_type.as_deref(), Some("UnrecognizedClientException"));
            assert!(!text.contains(token()), "{text}");
        }
    }

    #[tokio::test]
    async fn an_api_server_failure_is_a_retryable_503() {
        let (url, mut server, _dir) = serve_api(true).await;
        let api_server = tokio::spawn(async move {
            let (_, send) = expect(&mut server, Method::POST, TOKEN_REVIEWS).await;
            respond(
                send,
                500,
                status(500, "InternalError", "tokenreviews.authentication.k8s.io"),
            );
        });
        let (code, error_type, body, text) = call(
            &url,
            "TrentService.GenerateRandom",
            Some(format!("Bearer {}", token())),
        )
        .await;
        api_server.await.unwrap();
        assert_eq!(code, 503, "{body}");
        assert_eq!(body["__type"], "ServiceUnavailableException");
        assert_eq!(error_type.as_deref(), Some("ServiceUnavailableException"));
        assert!(!text.contains(token()), "{text}");
    }

    #[tokio::test]
    async fn without_a_bearer_authenticator_tokens_are_not_sigv4() {
        let (url, mut server, _dir) = serve_api(false).await;
        let (code, _, body, text) = call(
            &url,
            "TrentService.ListKeys",
            Some(format!("Bearer {}", token())),
        )
        .await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["__type"], "IncompleteSignatureException");
        assert!(!text.contains(token()), "{text}");
        assert!(
            no_request_within_200ms(&mut server).await,
            "no TokenReview without a bearer authenticator"
        );
    }

    #[tokio::test]
    async fn with_a_bearer_authenticator_other_requests_still_need_sigv4() {
        let (url, mut server, _dir) = serve_api(true).await;
        let (code, _, body, _) = call(&url, "TrentService.ListKeys", None).await;
        assert_eq!(code, 403, "{body}");
        assert_eq!(body["__type"], "MissingAuthenticationTokenException");
        // An empty bearer token is not a token.
        let (code, _, body, _) =
            call(&url, "TrentService.ListKeys", Some("Bearer ".to_owned())).await;
        assert_eq!(code, 400, "{body}");
        assert_eq!(body["__type"], "IncompleteSignatureException");
        // A SigV4 header goes to the access key authenticator, which knows no keys.
        let sigv4 = "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-east-1/kms/aws4_request, \
                     SignedHeaders=host;x-amz-date, Signature=00";
        let response = reqwest::Client::new()
            .post(&url)
            .header("x-amz-target", "TrentService.ListKeys")
            .header("content-type", JSON_CONTENT_TYPE)
            .header("x-amz-date", "20260101T000000Z")
            .header("authorization", sigv4)
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: serde_json::Value =
            serde_json::from_str(&response.text().await.unwrap()).unwrap();
        assert_eq!(body["__type"], "UnrecognizedClientException");
        assert!(
            no_request_within_200ms(&mut server).await,
            "no TokenReview for SigV4 or unauthenticated requests"
        );
    }

    #[tokio::test]
    async fn a_signature_covers_the_operation_and_the_region() {
        let served = serve_front_end(false, AuditSink::off(), guard::RequestLimits::DEFAULT).await;
        let url = &served.url;
        let (code, body) =
            signed_call(url, "TrentService.CreateKey", "{}", "us-east-1", true).await;
        assert_eq!(code, 200, "{body}");
        let key = format!(
            r#"{{"KeyId":"{}"}}"#,
            body["KeyMetadata"]["KeyId"].as_str().unwrap()
        );

        // Signed without x-amz-target, the request could be replayed as any operation.
        let (code, body) =
            signed_call(url, "TrentService.DisableKey", &key, "us-east-1", false).await;
        assert_eq!(
            (code, body["__type"].as_str()),
            (400, Some("InvalidSignatureException"))
        );
        assert_eq!(body["message"], "The X-Amz-Target header must be signed");
        // Signed for another region.
        let (code, body) =
            signed_call(url, "TrentService.DisableKey", &key, "xx-nowhere-9", true).await;
        assert_eq!(
            (code, body["__type"].as_str()),
            (400, Some("InvalidSignatureException"))
        );
        assert!(
            body["message"].as_str().unwrap().contains("xx-nowhere-9"),
            "{body}"
        );

        // Neither touched the key.
        let (code, body) =
            signed_call(url, "TrentService.DescribeKey", &key, "us-east-1", true).await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["KeyMetadata"]["KeyState"], "Enabled");
        // Signed properly, the same call goes through.
        let (code, body) =
            signed_call(url, "TrentService.DisableKey", &key, "us-east-1", true).await;
        assert_eq!(code, 200, "{body}");
    }

    #[tokio::test]
    async fn unauthenticated_requests_are_audited_by_known_names_and_limited_per_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let served = serve_front_end(
            false,
            AuditSink::file(&path, audit::Rotation::DEFAULT).unwrap(),
            guard::RequestLimits {
                failed_authentications_per_second: 2,
                ..guard::RequestLimits::DEFAULT
            },
        )
        .await;
        // A known operation is audited by its name.
        let (code, _, body, _) = call(&served.url, "TrentService.Encrypt", None).await;
        assert_eq!(code, 403, "{body}");
        // Unknown targets, 16 KiB each, from one address.
        let huge = format!("TrentService.{}", "X".repeat(16 * 1024));
        let mut codes = Vec::new();
        for _ in 0..50 {
            let (_, error_type, _, _) = call(&served.url, &huge, None).await;
            codes.push(error_type.unwrap());
        }
        served.api.audit.flush();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        // A burst of five seconds' worth (ten), and at most a refill or two while the test runs.
        assert!(
            (10..=13).contains(&lines.len()),
            "{} audit lines, {} bytes",
            lines.len(),
            text.len()
        );
        assert_eq!(lines[0]["operation"], "TrentService.Encrypt");
        for line in &lines[1..] {
            let operation = line["operation"].as_str().unwrap();
            let kept = operation.strip_suffix("...").unwrap();
            assert!(kept.len() <= 64 && huge.starts_with(kept), "{operation}");
        }
        assert!(text.len() < 13 * 512, "{} bytes", text.len());
        // Past the burst, the address is refused, unaudited.
        assert_eq!(codes[0], "MissingAuthenticationTokenException");
        assert_eq!(codes.last().unwrap(), "ThrottlingException");
        // Another address is not held back by this one (the limiter is per address).
        assert!(
            served
                .api
                .guard
                .note_failed_authentication(Some([10, 9, 8, 7].into()))
        );
    }
}
