//! Calls to the Coffer API (AWS JSON 1.1 over HTTPS, docs/wire.md) with a bearer token.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Request, Uri};
use http_body_util::{BodyExt as _, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use serde_json::Value;
use zeroize::Zeroizing;

use super::PluginError;
use super::cli::ApiArgs;
use super::credentials;
use super::kube_context::KubeContext;
use crate::https_client::{self, Schemes};

/// The largest answer read (a secret value is at most 64 KiB, in base64 in JSON).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

/// A client of one Coffer API endpoint.
pub struct CofferApi {
    endpoint: Uri,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    token: Option<Zeroizing<String>>,
}

/// An answer of the API: success with its JSON, or an AWS exception. The body is wiped when
/// dropped (it may carry a secret value).
pub enum Answer {
    Ok(Zeroizing<Vec<u8>>),
    Exception { code: String, message: String },
}

impl CofferApi {
    /// The endpoint of `args` (or the Service's), with the token of `context`'s user.
    pub async fn connect(context: &KubeContext, args: &ApiArgs) -> Result<Self, PluginError> {
        let endpoint = endpoint(context, args).await?;
        let token = credentials::bearer_token(context, args.service_account.as_deref()).await?;
        Self::new(&endpoint, args, Some(token))
    }

    /// A client for `endpoint`, checked by [`check_endpoint`].
    pub fn new(
        endpoint: &str,
        args: &ApiArgs,
        token: Option<Zeroizing<String>>,
    ) -> Result<Self, PluginError> {
        let (endpoint, schemes) = check_endpoint(endpoint)?;
        let client = https_client::client_for_name(
            args.ca_file.as_deref(),
            schemes,
            args.tls_server_name.as_deref(),
        )?;
        Ok(Self {
            endpoint,
            client,
            token,
        })
    }

    /// The endpoint, for messages.
    pub fn endpoint(&self) -> String {
        self.endpoint.to_string()
    }

    /// Calls `target` (`secretsmanager.GetSecretValue`, ...) with `body`.
    pub async fn call(&self, target: &str, body: &Value) -> Result<Answer, PluginError> {
        let mut request = Request::post(self.endpoint.clone())
            .header("x-amz-target", target)
            .header(CONTENT_TYPE, "application/x-amz-json-1.1");
        if let Some(token) = &self.token {
            let value = Zeroizing::new(format!("Bearer {}", token.as_str()));
            let mut header =
                http::HeaderValue::from_str(&value).map_err(|_| PluginError::Credentials {
                    user: String::new(),
                    reason: "has a token that is not a valid header value".to_owned(),
                })?;
            header.set_sensitive(true);
            request = request.header(AUTHORIZATION, header);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|_| PluginError::Internal("the request could not be built"))?;
        let unreachable = |reason: String| PluginError::Unreachable {
            endpoint: self.endpoint(),
            reason,
        };
        let response = self
            .client
            .request(request)
            .await
            .map_err(|err| unreachable(crate::redact::chain(&err)))?;
        let status = response.status();
        let exception_header = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|value| value.to_str().ok())
            .map(|value| value.split(':').next().unwrap_or(value).to_owned());
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|err| unreachable(format!("reading the answer: {err}")))?
            .to_bytes();
        // Into a Vec without a copy where the buffer is not shared, so that it is wiped.
        let body = Zeroizing::new(Vec::from(body));
        if status.is_success() {
            return Ok(Answer::Ok(body));
        }
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|value| value.get(name))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let code = field("__type")
            .map(|code| code.rsplit('#').next().unwrap_or_default().to_owned())
            .or(exception_header);
        match code {
            Some(code) => Ok(Answer::Exception {
                code,
                message: field("message")
                    .or_else(|| field("Message"))
                    .unwrap_or_default(),
            }),
            None => Err(unreachable(format!(
                "HTTP {status} without an AWS error (is this the Coffer API?)"
            ))),
        }
    }

    /// [`CofferApi::call`], with an exception turned into [`PluginError::Api`] and the answer
    /// parsed.
    pub async fn call_ok(&self, target: &str, body: &Value) -> Result<WipedJson, PluginError> {
        match self.call(target, body).await? {
            Answer::Ok(bytes) => WipedJson::parse(&bytes),
            Answer::Exception { code, message } => Err(PluginError::Api { code, message }),
        }
    }
}

/// Parsed JSON whose strings are wiped when dropped (an answer may carry a secret value).
pub struct WipedJson(Value);

impl WipedJson {
    /// Parses `bytes` as JSON.
    pub fn parse(bytes: &[u8]) -> Result<Self, PluginError> {
        serde_json::from_slice(bytes)
            .map(Self)
            .map_err(|_| PluginError::MalformedAnswer("not JSON"))
    }
}

impl std::ops::Deref for WipedJson {
    type Target = Value;

    fn deref(&self) -> &Value {
        &self.0
    }
}

impl Drop for WipedJson {
    fn drop(&mut self) {
        wipe(&mut self.0);
    }
}

fn wipe(value: &mut Value) {
    match value {
        Value::String(text) => zeroize::Zeroize::zeroize(text),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(members) => members.values_mut().for_each(wipe),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// The API endpoint: `--endpoint`, else the Service `--coffer-service` of `--coffer-namespace`
/// (its load balancer's address when it has one, else its cluster DNS name).
pub async fn endpoint(context: &KubeContext, args: &ApiArgs) -> Result<String, PluginError> {
    if let Some(endpoint) = &args.endpoint {
        return Ok(endpoint.clone());
    }
    let services: Api<Service> = Api::namespaced(context.client.clone(), &args.coffer_namespace);
    let service = services
        .get_opt(&args.coffer_service)
        .await
        .map_err(PluginError::kube(format!(
            "reading Service {}/{}",
            args.coffer_namespace, args.coffer_service
        )))?
        .ok_or_else(|| PluginError::NoService {
            namespace: args.coffer_namespace.clone(),
            service: args.coffer_service.clone(),
        })?;
    Ok(service_endpoint(
        &service,
        &args.coffer_namespace,
        &args.coffer_service,
    ))
}

/// `https://HOST:PORT` for a Service: its port named `https` (else 8443), at its load
/// balancer's hostname or IP, else at `NAME.NAMESPACE.svc` (reachable from inside the cluster).
pub fn service_endpoint(service: &Service, namespace: &str, name: &str) -> String {
    let port = service
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .and_then(|ports| {
            ports
                .iter()
                .find(|port| port.name.as_deref() == Some("https"))
        })
        .map_or(8443, |port| port.port);
    let ingress = service
        .status
        .as_ref()
        .and_then(|status| status.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .and_then(|ingress| ingress.first())
        .and_then(|ingress| ingress.hostname.clone().or_else(|| ingress.ip.clone()));
    let host = match ingress {
        Some(host) if host.contains(':') => format!("[{host}]"),
        Some(host) => host,
        None => format!("{name}.{namespace}.svc"),
    };
    format!("https://{host}:{port}")
}

/// Parses an endpoint: `https://` anywhere, `http://` only to a loopback address (the token
/// and the values would cross the network in the clear otherwise).
pub fn check_endpoint(endpoint: &str) -> Result<(Uri, Schemes), PluginError> {
    let refuse = |reason| PluginError::Endpoint {
        endpoint: endpoint.to_owned(),
        reason,
    };
    let uri: Uri = endpoint.parse().map_err(|_| refuse("not a URL"))?;
    let host = uri.host().ok_or_else(|| refuse("no host"))?;
    if uri
        .path_and_query()
        .is_some_and(|path| path.as_str() != "/")
    {
        return Err(refuse("the API is served at /, without a path or query"));
    }
    let schemes = match uri.scheme_str() {
        Some("https") => Schemes::HttpsOnly,
        Some("http") if is_loopback(host) => Schemes::HttpsOrHttp,
        Some("http") => {
            return Err(refuse(
                "plain http:// is allowed only to a loopback address (127.0.0.1, ::1, localhost)",
            ));
        }
        _ => {
            return Err(refuse(
                "the scheme must be https:// (or http:// to loopback)",
            ));
        }
    };
    Ok((uri, schemes))
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A message for an AWS exception of the API, in words a kubectl user acts on.
pub fn describe_exception(code: &str, message: &str) -> String {
    let meaning = match code {
        "AccessDeniedException" => {
            "access denied: the caller's RBAC does not allow this (kubectl auth can-i VERB secrets.coffer.dev/NAME --as system:serviceaccount:NS:SA)"
        }
        "UnrecognizedClientException" | "MissingAuthenticationTokenException" => {
            "the Coffer API did not accept the token: it takes a valid ServiceAccount token for the audience \"coffer\""
        }
        "ResourceNotFoundException" => "not found",
        "ParameterNotFound" => "parameter not found",
        "ParameterVersionNotFound" => "parameter version not found",
        "InvalidRequestException" => "the request is not valid for the secret's current state",
        "InvalidParameterException" | "ValidationException" => "invalid request",
        "DecryptionFailure" | "InvalidCiphertextException" => {
            "the value could not be decrypted (is its KmsKey enabled?)"
        }
        "KMSInvalidStateException" | "DisabledException" => "the KMS key is not usable",
        "ThrottlingException" => "throttled: too many requests, try again",
        "InternalServiceError" | "InternalServerError" | "InternalFailure" => {
            "the Coffer API failed (see the controller's log)"
        }
        _ => "",
    };
    match (meaning.is_empty(), message.is_empty()) {
        (true, true) => code.to_owned(),
        (true, false) => format!("{code}: {message}"),
        (false, true) => format!("{meaning} ({code})"),
        (false, false) => format!("{meaning} ({code}: {message})"),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use serde_json::json;

    use super::*;

    #[test]
    fn plain_http_only_to_loopback() {
        for ok in [
            "https://coffer.coffer-system.svc:8443",
            "https://10.0.0.1:8443/",
            "http://127.0.0.1:8443",
            "http://localhost:1",
            "http://[::1]:8443",
        ] {
            check_endpoint(ok).unwrap_or_else(|err| panic!("{ok}: {err}"));
        }
        for bad in [
            "http://10.0.0.1:8443",
            "http://coffer.example:80",
            "ftp://127.0.0.1",
            "127.0.0.1:8443",
            "https://host/path",
            "not a url",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_endpoint("http://127.0.0.1:9").unwrap().1,
            Schemes::HttpsOrHttp
        );
        assert_eq!(check_endpoint("https://a:9").unwrap().1, Schemes::HttpsOnly);
    }

    #[test]
    fn a_service_is_reached_at_its_load_balancer_or_its_dns_name() {
        let mut service = Service {
            spec: Some(ServiceSpec {
                ports: Some(vec![
                    ServicePort {
                        name: Some("metrics".to_owned()),
                        port: 8080,
                        ..ServicePort::default()
                    },
                    ServicePort {
                        name: Some("https".to_owned()),
                        port: 443,
                        ..ServicePort::default()
                    },
                ]),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        assert_eq!(
            service_endpoint(&service, "coffer-system", "coffer"),
            "https://coffer.coffer-system.svc:443"
        );
        service.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![LoadBalancerIngress {
                    ip: Some("203.0.113.7".to_owned()),
                    ..LoadBalancerIngress::default()
                }]),
            }),
            ..ServiceStatus::default()
        });
        assert_eq!(
            service_endpoint(&service, "coffer-system", "coffer"),
            "https://203.0.113.7:443"
        );
    }

    /// A stand-in for the Coffer API on loopback: it answers GetSecretValue for the token
    /// `good.token.x` and AccessDenied otherwise, and records what it was sent.
    async fn fake_api() -> (
        String,
        std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
    ) {
        use axum::http::{HeaderMap, StatusCode};
        use axum::response::IntoResponse as _;

        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorded = seen.clone();
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let recorded = recorded.clone();
                async move {
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_owned()
                    };
                    recorded
                        .lock()
                        .unwrap()
                        .push((header("authorization"), header("x-amz-target")));
                    assert_eq!(header("content-type"), "application/x-amz-json-1.1");
                    let input: Value = serde_json::from_str(&body).unwrap();
                    if header("authorization") == "Bearer good.token.x" {
                        let answer = json!({"Name": input["SecretId"], "SecretString": "v"});
                        (StatusCode::OK, answer.to_string()).into_response()
                    } else {
                        let error = json!({
                            "__type": "AccessDeniedException",
                            "message": "not allowed",
                        });
                        (
                            StatusCode::BAD_REQUEST,
                            [("x-amzn-ErrorType", "AccessDeniedException")],
                            error.to_string(),
                        )
                            .into_response()
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{address}"), seen)
    }

    fn api_args() -> ApiArgs {
        ApiArgs {
            endpoint: None,
            coffer_namespace: "coffer-system".to_owned(),
            coffer_service: "coffer".to_owned(),
            ca_file: None,
            tls_server_name: None,
            service_account: None,
        }
    }

    #[tokio::test]
    async fn calls_carry_the_token_and_exceptions_come_back_by_name() {
        let (endpoint, seen) = fake_api().await;
        let good = CofferApi::new(
            &endpoint,
            &api_args(),
            Some(Zeroizing::new("good.token.x".to_owned())),
        )
        .unwrap();
        let answer = good
            .call_ok("secretsmanager.GetSecretValue", &json!({"SecretId": "db"}))
            .await
            .unwrap();
        assert_eq!(answer.get("SecretString"), Some(&json!("v")));

        let other = CofferApi::new(
            &endpoint,
            &api_args(),
            Some(Zeroizing::new("other.token.x".to_owned())),
        )
        .unwrap();
        let err = other
            .call_ok("secretsmanager.GetSecretValue", &json!({"SecretId": "db"}))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(&err, PluginError::Api { code, message } if code == "AccessDeniedException" && message == "not allowed"),
            "{err:?}"
        );
        // The token is in no message.
        assert!(!err.to_string().contains("other.token"), "{err}");

        let anonymous = CofferApi::new(&endpoint, &api_args(), None).unwrap();
        assert!(matches!(
            anonymous
                .call("secretsmanager.ListSecrets", &json!({}))
                .await
                .unwrap(),
            Answer::Exception { .. }
        ));
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                (
                    "Bearer good.token.x".to_owned(),
                    "secretsmanager.GetSecretValue".to_owned()
                ),
                (
                    "Bearer other.token.x".to_owned(),
                    "secretsmanager.GetSecretValue".to_owned()
                ),
                (String::new(), "secretsmanager.ListSecrets".to_owned()),
            ]
        );
    }

    #[tokio::test]
    async fn an_unreachable_or_foreign_endpoint_is_reported() {
        let closed = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap()
        };
        let api = CofferApi::new(&format!("http://{closed}"), &api_args(), None).unwrap();
        assert!(matches!(
            api.call("secretsmanager.ListSecrets", &json!({})).await,
            Err(PluginError::Unreachable { .. })
        ));

        // Something else on the port: a 404 without an AWS error.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, axum::Router::new()).await });
        let api = CofferApi::new(&format!("http://{address}"), &api_args(), None).unwrap();
        let err = api
            .call("secretsmanager.ListSecrets", &json!({}))
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("is this the Coffer API"), "{err}");
    }

    /// The API over TLS with a certificate for `coffer.coffer-system.svc` only, signed by a
    /// CA written to `dir/ca.crt`.
    async fn tls_api(dir: &std::path::Path) -> (String, std::path::PathBuf) {
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(|| async { (axum::http::StatusCode::OK, "{}") }),
        );
        let server =
            crate::test_support::https::serve_https(dir, &["coffer.coffer-system.svc"], app).await;
        // The certificate is its own CA.
        let ca = dir.join("ca.crt");
        std::fs::copy(&server.cert, &ca).unwrap();
        (format!("https://127.0.0.1:{}", server.port), ca)
    }

    #[tokio::test]
    async fn certificates_are_verified_for_the_endpoint_or_the_given_server_name() {
        let dir = tempfile::tempdir().unwrap();
        let (endpoint, ca) = tls_api(dir.path()).await;
        let trusted = ApiArgs {
            ca_file: Some(ca),
            ..api_args()
        };
        // The certificate does not name 127.0.0.1: refused.
        let api = CofferApi::new(&endpoint, &trusted, None).unwrap();
        assert!(matches!(
            api.call("secretsmanager.ListSecrets", &json!({})).await,
            Err(PluginError::Unreachable { .. })
        ));
        // Verified for the Service's name, as through a port-forward.
        let forwarded = ApiArgs {
            tls_server_name: Some("coffer.coffer-system.svc".to_owned()),
            ..trusted.clone()
        };
        let api = CofferApi::new(&endpoint, &forwarded, None).unwrap();
        assert!(matches!(
            api.call("secretsmanager.ListSecrets", &json!({})).await,
            Ok(Answer::Ok(_))
        ));
        // The right name, but not the CA that signed it (the system's CAs): refused.
        let untrusted = ApiArgs {
            ca_file: None,
            ..forwarded
        };
        let api = CofferApi::new(&endpoint, &untrusted, None).unwrap();
        assert!(matches!(
            api.call("secretsmanager.ListSecrets", &json!({})).await,
            Err(PluginError::Unreachable { .. })
        ));
        let bad_name = ApiArgs {
            tls_server_name: Some("not a name".to_owned()),
            ..trusted
        };
        assert!(matches!(
            CofferApi::new(&endpoint, &bad_name, None),
            Err(PluginError::Tls(_))
        ));
    }

    #[test]
    fn exceptions_read_as_advice() {
        let text = describe_exception("AccessDeniedException", "no");
        assert!(
            text.contains("RBAC") && text.contains("AccessDeniedException"),
            "{text}"
        );
        assert_eq!(describe_exception("OddException", ""), "OddException");
        assert_eq!(describe_exception("OddException", "m"), "OddException: m");
    }
}
