//! The AWS JSON 1.1 front end: `POST /` with the operation in `X-Amz-Target`, SigV4 on every
//! call, AWS exception names in every error, a request id on every response, throttling per
//! principal and one audit line per call. Thin: it authenticates, decodes, calls the engine and
//! encodes.

pub mod audit;
pub mod credentials_endpoint;
pub mod identity;
mod kms;
pub mod kube_identity;
pub mod metrics;
pub mod sigv4;
pub mod throttle;

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Serialize;

use crate::engine::Caller;
use crate::engine::kms::Kms;
use audit::{AuditEvent, AuditSink};
use identity::Authenticator;
use sigv4::SignedRequest;
use throttle::Throttle;

/// Request bodies larger than this are refused before parsing.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Everything the front end needs.
pub struct AwsApi {
    pub kms: Arc<Kms>,
    pub authenticator: Arc<dyn Authenticator>,
    pub throttle: Throttle,
    pub audit: AuditSink,
    pub metrics: metrics::ApiMetrics,
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

    fn serialization(message: impl Into<String>) -> Self {
        Self::client("SerializationException", message)
    }
}

/// The services a target prefix names, with the SigV4 scope each must be signed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Service {
    Kms,
    SecretsManager,
    Ssm,
}

impl Service {
    fn from_target(target: &str) -> Option<(Service, &str)> {
        let (prefix, operation) = target.split_once('.')?;
        let service = match prefix {
            "TrentService" => Service::Kms,
            "secretsmanager" => Service::SecretsManager,
            "AmazonSSM" => Service::Ssm,
            _ => return None,
        };
        (!operation.is_empty()).then_some((service, operation))
    }

    fn signing_name(self) -> &'static str {
        match self {
            Service::Kms => "kms",
            Service::SecretsManager => "secretsmanager",
            Service::Ssm => "ssm",
        }
    }
}

/// What a handled call reports for the audit line.
#[derive(Default)]
pub(crate) struct CallFacts {
    pub resource: Option<String>,
}

/// The routes of the AWS front end, and `/metrics` for Prometheus.
pub fn router(api: Arc<AwsApi>) -> Router {
    Router::new()
        .route("/", post(handle))
        .route("/metrics", axum::routing::get(render_metrics))
        .with_state(api)
}

async fn render_metrics(State(api): State<Arc<AwsApi>>) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        api.metrics.render(),
    )
        .into_response()
}

async fn handle(State(api): State<Arc<AwsApi>>, request: Request<Body>) -> Response {
    let request_id = uuid::Uuid::new_v4().to_string();
    let started = std::time::Instant::now();
    let (parts, body) = request.into_parts();
    let target = header_text(&parts.headers, "x-amz-target").unwrap_or_default();
    let mut facts = CallFacts::default();
    let mut principal = None;
    let outcome = async {
        let (service, operation) = Service::from_target(&target).ok_or_else(|| {
            AwsError::client(
                "UnknownOperationException",
                "The X-Amz-Target header names no known operation.",
            )
        })?;
        let body = to_bytes(body, MAX_BODY_BYTES).await.map_err(|_| {
            AwsError::client("ValidationException", "The request body is too large.")
        })?;
        let caller = authenticate(&api, &parts, &body, service).await?;
        principal = Some(caller.principal.arn.clone());
        api.throttle.check(&caller.principal.arn)?;
        match service {
            Service::Kms => kms::dispatch(&api.kms, &caller, operation, &body, &mut facts).await,
            Service::SecretsManager | Service::Ssm => Err(AwsError::client(
                "UnknownOperationException",
                format!("{} is not served yet.", service.signing_name()),
            )),
        }
    }
    .await;

    let (status, body, error_code) = match outcome {
        Ok(body) => (StatusCode::OK, body, None),
        Err(error) => {
            if error.status.is_server_error() {
                tracing::error!(request_id = %request_id, code = error.code, "request failed with a fault");
            }
            let body =
                serde_json::json!({"__type": error.code, "message": error.message}).to_string();
            (error.status, body, Some(error.code))
        }
    };
    api.metrics.record(
        metrics::known_operation(&target, kms::OPERATIONS),
        error_code,
        started.elapsed(),
    );
    api.audit.record(AuditEvent {
        time: SystemTime::now(),
        request_id: request_id.clone(),
        operation: target,
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

    let mut response = (status, body).into_response();
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
    service: Service,
) -> Result<Caller, AwsError> {
    let signed = SignedRequest::parse(parts).map_err(sigv4_error)?;
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
    signed
        .verify(parts, body, secret.expose(), SystemTime::now())
        .map_err(sigv4_error)?;
    if signed.service != service.signing_name() {
        return Err(AwsError::client(
            "InvalidSignatureException",
            format!(
                "Credential should be scoped to correct service: '{}'.",
                service.signing_name()
            ),
        ));
    }
    Ok(caller)
}

fn sigv4_error(err: sigv4::SigV4Error) -> AwsError {
    let code = err.aws_code();
    let status = if code == "MissingAuthenticationTokenException" {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::BAD_REQUEST
    };
    AwsError {
        status,
        code,
        message: err.to_string(),
    }
}

fn header_text(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
}

/// A request body as a JSON object (`{}` when empty).
pub(crate) fn json_object(body: &[u8]) -> Result<serde_json::Value, AwsError> {
    let input: serde_json::Value = if body.is_empty() {
        serde_json::Value::Object(Default::default())
    } else {
        serde_json::from_slice(body)
            .map_err(|_| AwsError::serialization("The request body is not valid JSON."))?
    };
    if !input.is_object() {
        return Err(AwsError::serialization(
            "The request body must be a JSON object.",
        ));
    }
    Ok(input)
}

/// Serializes an output shape.
pub(crate) fn to_output<T: Serialize>(value: &T) -> Result<serde_json::Value, AwsError> {
    serde_json::to_value(value).map_err(|_| AwsError::fault("InternalFailure"))
}

/// Caller-supplied text echoed in an error message, cut short.
pub(crate) fn truncate_for_message(text: &str) -> String {
    crate::engine::kms::truncate_text(text)
}
