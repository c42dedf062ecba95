//! A small stand-in for Coffer's AWS JSON API, for tests: it checks the target header, the
//! content type, the body and the bearer token, and answers as the API does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{Value, json};

/// The token the stand-in accepts.
pub const TOKEN: &str = "header.payload.signature";

#[derive(Default)]
pub struct Api {
    /// (SecretId, VersionStage or VersionId) → (VersionId, SecretString or SecretBinary).
    pub secrets: BTreeMap<(String, String), (String, Value)>,
    /// Name selector (`name`, `name:3`, `name:label`) → (Name, Value, Version).
    pub parameters: BTreeMap<String, (String, String, u64)>,
    /// Targets called, in order.
    pub calls: Vec<String>,
    /// Calls being answered now, and the most there ever were at once.
    pub in_flight: usize,
    pub most_in_flight: usize,
}

fn failure(code: &str, status: StatusCode) -> (StatusCode, String) {
    (
        status,
        json!({"__type": code, "message": format!("{code} for this object")}).to_string(),
    )
}

async fn answer(
    State(api): State<Arc<Mutex<Api>>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    if header("content-type") != "application/x-amz-json-1.1" {
        return failure("SerializationException", StatusCode::BAD_REQUEST);
    }
    if header("authorization") != format!("Bearer {TOKEN}") {
        return failure("UnrecognizedClientException", StatusCode::BAD_REQUEST);
    }
    let Ok(input) = serde_json::from_slice::<Value>(&body) else {
        return failure("SerializationException", StatusCode::BAD_REQUEST);
    };
    let target = header("x-amz-target");
    {
        let mut api = api.lock().unwrap();
        api.in_flight += 1;
        api.most_in_flight = api.most_in_flight.max(api.in_flight);
    }
    // Long enough for concurrent calls to overlap.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let mut api = api.lock().unwrap();
    api.in_flight -= 1;
    api.calls.push(target.clone());
    let name = input["SecretId"]
        .as_str()
        .or(input["Name"].as_str())
        .unwrap_or_default();
    match name {
        "denied" | "/denied" => return failure("AccessDeniedException", StatusCode::BAD_REQUEST),
        "busy" => return failure("ThrottlingException", StatusCode::BAD_REQUEST),
        "broken" => return failure("InternalServerError", StatusCode::INTERNAL_SERVER_ERROR),
        "odd" => return failure("InvalidRequestException", StatusCode::BAD_REQUEST),
        "huge" => {
            let text = "x".repeat(2 * 1024 * 1024);
            return (
                StatusCode::OK,
                json!({"VersionId": "v", "SecretString": text}).to_string(),
            );
        }
        _ => {}
    }
    match target.as_str() {
        "secretsmanager.GetSecretValue" => {
            let pin = input["VersionId"]
                .as_str()
                .or(input["VersionStage"].as_str())
                .unwrap_or("missing");
            match api.secrets.get(&(name.to_owned(), pin.to_owned())) {
                Some((version, Value::String(text))) => (
                    StatusCode::OK,
                    json!({"Name": name, "VersionId": version, "SecretString": text}).to_string(),
                ),
                Some((version, binary)) => (
                    StatusCode::OK,
                    json!({"Name": name, "VersionId": version, "SecretBinary": binary["base64"]})
                        .to_string(),
                ),
                None => failure("ResourceNotFoundException", StatusCode::BAD_REQUEST),
            }
        }
        "AmazonSSM.GetParameter" => {
            if input["WithDecryption"] != json!(true) {
                return failure("ValidationException", StatusCode::BAD_REQUEST);
            }
            match api.parameters.get(name) {
                Some((name, value, version)) => (
                    StatusCode::OK,
                    json!({"Parameter": {"Name": name, "Type": "SecureString", "Value": value, "Version": version}})
                        .to_string(),
                ),
                None if name.contains(':') => {
                    failure("ParameterVersionNotFound", StatusCode::BAD_REQUEST)
                }
                None => failure("ParameterNotFound", StatusCode::BAD_REQUEST),
            }
        }
        "AmazonSSM.GetParametersByPath" => {
            if input["WithDecryption"] != json!(true) {
                return failure("ValidationException", StatusCode::BAD_REQUEST);
            }
            let path = input["Path"].as_str().unwrap_or_default();
            let prefix = format!("{}/", path.trim_end_matches('/'));
            let recursive = input["Recursive"] == json!(true);
            let under: Vec<_> = api
                .parameters
                .iter()
                .filter(|(selector, (name, _, _))| {
                    *selector == name
                        && name.starts_with(&prefix)
                        && (recursive || !name[prefix.len()..].contains('/'))
                })
                .map(|(_, (name, value, version))| {
                    json!({"Name": name, "Type": "String", "Value": value, "Version": version})
                })
                .collect();
            // One parameter a page, to exercise NextToken.
            let at: usize = input["NextToken"]
                .as_str()
                .map_or(0, |token| token.parse().unwrap());
            let mut page = json!({"Parameters": under.get(at..at + 1).unwrap_or_default()});
            if at + 1 < under.len() {
                page["NextToken"] = json!((at + 1).to_string());
            }
            (StatusCode::OK, page.to_string())
        }
        _ => failure("UnknownOperationException", StatusCode::BAD_REQUEST),
    }
}

/// The stand-in as a router.
pub fn router(api: Arc<Mutex<Api>>) -> Router {
    Router::new().route("/", post(answer)).with_state(api)
}

/// Serves `api` on a loopback port; answers its `http://` endpoint.
pub async fn serve(api: Arc<Mutex<Api>>) -> String {
    let app = router(api);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}")
}

/// A stand-in holding a few secrets and parameters.
pub fn sample() -> Arc<Mutex<Api>> {
    let mut api = Api::default();
    let db = json!({"username": "admin", "password": "pw-1", "port": 5432}).to_string();
    api.secrets.insert(
        ("app/db".into(), "AWSCURRENT".into()),
        ("v2".into(), Value::String(db.clone())),
    );
    api.secrets.insert(
        ("app/db".into(), "v2".into()),
        ("v2".into(), Value::String(db)),
    );
    api.secrets.insert(
        ("app/db".into(), "AWSPREVIOUS".into()),
        (
            "v1".into(),
            Value::String(json!({"password": "pw-0"}).to_string()),
        ),
    );
    api.secrets.insert(
        ("app/cert".into(), "AWSCURRENT".into()),
        ("c1".into(), json!({"base64": "AAEC/w=="})),
    );
    for (selector, name, value, version) in [
        ("/app/url", "/app/url", "https://db.local", 3),
        ("/app/url:2", "/app/url", "https://old.local", 2),
        ("/app/url:prod", "/app/url", "https://prod.local", 3),
        ("/app/conf/a", "/app/conf/a", "1", 1),
        ("/app/conf/b/c", "/app/conf/b/c", "2", 5),
        ("/app/conf/d", "/app/conf/d", "3", 7),
    ] {
        api.parameters
            .insert(selector.into(), (name.into(), value.into(), version));
    }
    Arc::new(Mutex::new(api))
}
