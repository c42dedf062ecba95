//! Reading secrets and parameters through Coffer's AWS JSON 1.1 API, as the pod: each request
//! carries the pod's ServiceAccount token (`Authorization: Bearer`), so the API decides what the
//! pod may read exactly as it would for the pod itself.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::volume::{Fetched, ParameterPin, PathParameter, SecretPin, Source};
use super::{ContentError, PodToken};
use crate::aws::wire::{SecretBlob, SecretText, wiped_request};
use crate::https_client::{CaFollowingClient, Schemes, TrustError};

/// How long one API call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// An answer is at most a 64 KiB secret in base64, or a page of ten 8 KiB parameters.
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// Pages of GetParametersByPath followed (ten parameters each) before giving up.
const MAX_PAGES: usize = 1000;
/// The part of an API error message kept (messages name objects, never values).
const MAX_MESSAGE_CHARS: usize = 200;

/// Why the API could not be used or did not give a value. Names objects, never values.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("API endpoint {0:?} must be https://HOST[:PORT], or http:// to a loopback address")]
    Endpoint(String),
    #[error(transparent)]
    Trust(#[from] TrustError),
    #[error("{object}: access denied")]
    AccessDenied { object: String },
    #[error("{object}: not found")]
    NotFound { object: String },
    #[error("{object}: {reason}")]
    Unavailable { object: String, reason: String },
    #[error("{object}: {code}: {message}")]
    Refused {
        object: String,
        code: String,
        message: String,
    },
}

impl From<ApiError> for ContentError {
    fn from(err: ApiError) -> Self {
        let message = err.to_string();
        match err {
            ApiError::AccessDenied { .. } => ContentError::PermissionDenied(message),
            ApiError::NotFound { .. } => ContentError::NotFound(message),
            ApiError::Refused { .. } => ContentError::InvalidArgument(message),
            _ => ContentError::Unavailable(message),
        }
    }
}

/// A client of one Coffer API endpoint.
#[derive(Clone)]
pub struct ApiClient {
    client: Arc<CaFollowingClient<Full<bytes::Bytes>>>,
    endpoint: Uri,
}

impl ApiClient {
    /// A client of `endpoint` (`https://HOST[:PORT]`, or `http://` to a loopback address for
    /// development), trusting only the certificates in `ca_file`, or the system's CAs without
    /// one.
    pub fn new(endpoint: &str, ca_file: Option<&Path>) -> Result<Self, ApiError> {
        let bad = || ApiError::Endpoint(endpoint.to_owned());
        let base: Uri = endpoint.parse().map_err(|_| bad())?;
        let host = base.host().ok_or_else(bad)?;
        match base.scheme_str() {
            Some("https") => {}
            Some("http") if is_loopback(host) => {}
            _ => return Err(bad()),
        }
        if base.path() != "/" && !base.path().is_empty() || base.query().is_some() {
            return Err(bad());
        }
        let endpoint = Uri::builder()
            .scheme(base.scheme_str().unwrap_or("https"))
            .authority(base.authority().ok_or_else(bad)?.clone())
            .path_and_query("/")
            .build()
            .map_err(|_| bad())?;

        Ok(Self {
            client: Arc::new(CaFollowingClient::new(ca_file, Schemes::HttpsOrHttp)?),
            endpoint,
        })
    }

    /// The value of `source`, read as the holder of `token`.
    pub async fn fetch(&self, source: &Source, token: &PodToken) -> Result<Fetched, ApiError> {
        let object = source.to_string();
        match source {
            Source::Secret { id, pin } => {
                let (version_stage, version_id) = match pin {
                    SecretPin::Stage(stage) => (Some(stage.as_str()), None),
                    SecretPin::VersionId(version) => (None, Some(version.as_str())),
                };
                let input = GetSecretValue {
                    secret_id: id,
                    version_stage,
                    version_id,
                };
                let answer: SecretAnswer = self
                    .call("secretsmanager.GetSecretValue", &input, token, &object)
                    .await?;
                let value = match (answer.secret_string, answer.secret_binary) {
                    (Some(SecretText(text)), _) => text,
                    (None, Some(SecretBlob(binary))) => binary,
                    (None, None) => {
                        return Err(bad_answer(&object, "no SecretString or SecretBinary"));
                    }
                };
                Ok(Fetched::Secret {
                    value,
                    version_id: answer.version_id,
                })
            }
            Source::Parameter { name, pin } => {
                let selector = match pin {
                    ParameterPin::Latest => name.clone(),
                    ParameterPin::Version(version) => format!("{name}:{version}"),
                    ParameterPin::Label(label) => format!("{name}:{label}"),
                };
                let input = GetParameter {
                    name: &selector,
                    with_decryption: true,
                };
                let answer: ParameterAnswer = self
                    .call("AmazonSSM.GetParameter", &input, token, &object)
                    .await?;
                Ok(Fetched::Parameter {
                    value: answer.parameter.value.0,
                    version: answer.parameter.version,
                })
            }
            Source::ParametersUnder { path, recursive } => {
                let prefix = if path.ends_with('/') {
                    path.clone()
                } else {
                    format!("{path}/")
                };
                let mut found = Vec::new();
                let mut next_token: Option<String> = None;
                for _ in 0..MAX_PAGES {
                    let input = GetParametersByPath {
                        path,
                        recursive: *recursive,
                        with_decryption: true,
                        next_token: next_token.as_deref(),
                    };
                    let page: PathAnswer = self
                        .call("AmazonSSM.GetParametersByPath", &input, token, &object)
                        .await?;
                    for parameter in page.parameters {
                        let relative_name = parameter
                            .name
                            .strip_prefix(&prefix)
                            .or_else(|| (prefix == "/").then_some(parameter.name.as_str()))
                            .ok_or_else(|| bad_answer(&object, "a parameter outside the path"))?
                            .to_owned();
                        found.push(PathParameter {
                            relative_name,
                            value: parameter.value.0,
                            version: parameter.version,
                        });
                    }
                    match page.next_token.filter(|next| !next.is_empty()) {
                        Some(next) => next_token = Some(next),
                        None => return Ok(Fetched::Parameters(found)),
                    }
                }
                Err(bad_answer(&object, "too many pages of parameters"))
            }
        }
    }

    /// One API call: `target` with `input`, answered by a `T` or mapped to an [`ApiError`].
    async fn call<T: for<'de> Deserialize<'de>>(
        &self,
        target: &str,
        input: &impl Serialize,
        token: &PodToken,
        object: &str,
    ) -> Result<T, ApiError> {
        let unavailable = |reason: &str| ApiError::Unavailable {
            object: object.to_owned(),
            reason: reason.to_owned(),
        };
        let bearer = Zeroizing::new(format!("Bearer {}", token.expose()));
        let mut authorization = HeaderValue::from_str(&bearer)
            .map_err(|_| unavailable("the pod's token is not a valid header value"))?;
        authorization.set_sensitive(true);
        let body =
            serde_json::to_vec(input).map_err(|_| unavailable("the request could not be built"))?;
        let request = Request::post(&self.endpoint)
            .header("x-amz-target", target)
            .header(CONTENT_TYPE, "application/x-amz-json-1.1")
            .header(AUTHORIZATION, authorization)
            .body(Full::new(bytes::Bytes::from(body)))
            .map_err(|_| unavailable("the request could not be built"))?;
        let response = tokio::time::timeout(CALL_TIMEOUT, self.client.get().request(request))
            .await
            .map_err(|_| unavailable("the API did not answer in time"))?
            .map_err(|_| unavailable("the API could not be reached"))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| unavailable("the API's answer could not be read, or is too large"))?
            .to_bytes();
        // Answers carry values: held so that they are wiped when dropped.
        let body = wiped_request(body);
        if status == StatusCode::OK {
            return serde_json::from_slice(body.expose())
                .map_err(|_| bad_answer(object, "an answer of an unexpected shape"));
        }
        let failure: Failure = serde_json::from_slice(body.expose()).unwrap_or_default();
        let code = failure
            .kind
            .as_deref()
            .map(|kind| kind.rsplit('#').next().unwrap_or(kind))
            .unwrap_or_default()
            .to_owned();
        Err(classify(status, code, failure.message, object))
    }
}

/// An AWS error answer as the failure it is for the volume.
fn classify(status: StatusCode, code: String, message: Option<String>, object: &str) -> ApiError {
    let object = object.to_owned();
    match code.as_str() {
        // A token the API does not accept (expired, another audience) denies like RBAC does.
        "AccessDeniedException"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "ExpiredTokenException" => ApiError::AccessDenied { object },
        "ResourceNotFoundException" | "ParameterNotFound" | "ParameterVersionNotFound" => {
            ApiError::NotFound { object }
        }
        "ThrottlingException"
        | "ServiceUnavailable"
        | "InternalServerError"
        | "InternalServiceError"
        | "InternalFailure" => ApiError::Unavailable {
            object,
            reason: format!("the API is busy or failing ({code})"),
        },
        _ if status.is_server_error() || code.is_empty() => ApiError::Unavailable {
            object,
            reason: format!("the API answered {status}"),
        },
        _ => ApiError::Refused {
            object,
            code,
            message: message
                .unwrap_or_default()
                .chars()
                .take(MAX_MESSAGE_CHARS)
                .collect(),
        },
    }
}

fn bad_answer(object: &str, what: &str) -> ApiError {
    ApiError::Unavailable {
        object: object.to_owned(),
        reason: format!("the API answered with {what}"),
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetSecretValue<'a> {
    secret_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_stage: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParameter<'a> {
    name: &'a str,
    with_decryption: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct GetParametersByPath<'a> {
    path: &'a str,
    recursive: bool,
    with_decryption: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_token: Option<&'a str>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SecretAnswer {
    version_id: String,
    secret_string: Option<SecretText>,
    secret_binary: Option<SecretBlob>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ParameterAnswer {
    parameter: ParameterShape,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ParameterShape {
    name: String,
    value: SecretText,
    version: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PathAnswer {
    #[serde(default)]
    parameters: Vec<ParameterShape>,
    next_token: Option<String>,
}

#[derive(Default, Deserialize)]
struct Failure {
    #[serde(rename = "__type")]
    kind: Option<String>,
    #[serde(alias = "Message")]
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_the_api_refuses_denies_and_names_only_the_object() {
        for code in [
            "AccessDeniedException",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "ExpiredTokenException",
        ] {
            let err = classify(
                StatusCode::BAD_REQUEST,
                code.into(),
                Some("detail".into()),
                "secret app/db",
            );
            let content = ContentError::from(err);
            assert!(
                matches!(&content, ContentError::PermissionDenied(m) if m == "secret app/db: access denied"),
                "{code}: {content:?}"
            );
        }
        let throttled = classify(
            StatusCode::BAD_REQUEST,
            "ThrottlingException".into(),
            None,
            "x",
        );
        assert!(matches!(
            ContentError::from(throttled),
            ContentError::Unavailable(_)
        ));
        let missing = classify(
            StatusCode::BAD_REQUEST,
            "ParameterNotFound".into(),
            None,
            "x",
        );
        assert!(matches!(
            ContentError::from(missing),
            ContentError::NotFound(_)
        ));
    }
}
