//! Cross-checks the SigV4 verifier against real botocore: botocore's `SigV4Auth` signs requests
//! the way the AWS CLI and boto3 do, and Coffer must accept them and reject altered copies.
//!
//! Needs `python3` with botocore first on PATH: `make test` puts e2e/python.sh's virtualenv
//! there. Without it these tests fail rather than pass silently.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::process::Command;
use std::time::SystemTime;

use coffer::aws::sigv4::{SigV4Error, SignedRequest};
use http::HeaderValue;
use http::request::Parts;

const AKID: &str = "AKIACOFFERBOTOCORE01";
const SECRET: &str = "bOtoCore/Cross+Check/Secret/0123456789AB";
const TOKEN: &str = "FwoGZXIvYXdzEKf//////////wEaDKcoffer+token/for/tests==";
const ENDPOINT: &str = "http://127.0.0.1:4566";

/// Signs the request described by its JSON argument with botocore and prints the headers
/// botocore set, as a JSON object.
const SIGN_SCRIPT: &str = r#"
import json, sys
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

spec = json.loads(sys.argv[1])
request = AWSRequest(
    method=spec["method"],
    url=spec["url"],
    data=spec["body"].encode("utf-8"),
    headers=spec["headers"],
)
credentials = Credentials(spec["access_key"], spec["secret_key"], spec["token"])
SigV4Auth(credentials, spec["service"], spec["region"]).add_auth(request)
print(json.dumps(dict(request.headers.items())))
"#;

fn require_botocore() {
    let available = Command::new("python3")
        .args(["-c", "import botocore"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    assert!(
        available,
        "python3 with botocore is required for the botocore cross-check: run the tests with `make test`, or with `e2e/python.sh --venv`'s bin first on PATH"
    );
}

struct BotocoreRequest<'a> {
    method: &'a str,
    /// Path and query, appended to [`ENDPOINT`].
    target: &'a str,
    headers: &'a [(&'a str, &'a str)],
    body: &'a str,
    service: &'a str,
    token: Option<&'a str>,
}

/// Has botocore sign `request` now, and returns the head the server would receive: the headers
/// botocore set plus the `Host` header the HTTP client adds.
fn botocore_sign(request: &BotocoreRequest<'_>) -> Parts {
    require_botocore();
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).into()))
        .collect();
    let spec = serde_json::json!({
        "method": request.method,
        "url": format!("{ENDPOINT}{}", request.target),
        "headers": headers,
        "body": request.body,
        "service": request.service,
        "region": "us-east-1",
        "access_key": AKID,
        "secret_key": SECRET,
        "token": request.token,
    });
    let output = Command::new("python3")
        .args(["-c", SIGN_SCRIPT, &spec.to_string()])
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "botocore signing failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let signed: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&output.stdout).expect("botocore printed JSON headers");

    let mut builder = http::Request::builder()
        .method(request.method)
        .uri(request.target)
        .header("host", "127.0.0.1:4566")
        .header("user-agent", "Boto3/1.34.41 md/Botocore#1.34.41");
    for (name, value) in &signed {
        let value = value.as_str().expect("header values are strings");
        builder = builder.header(name.as_str(), value);
    }
    builder.body(()).expect("request").into_parts().0
}

fn kms_list_keys(token: Option<&str>) -> BotocoreRequest<'_> {
    BotocoreRequest {
        method: "POST",
        target: "/",
        headers: &[
            ("X-Amz-Target", "TrentService.ListKeys"),
            ("Content-Type", "application/x-amz-json-1.1"),
        ],
        body: "{}",
        service: "kms",
        token,
    }
}

fn verify(parts: &Parts, body: &[u8], secret: &str) -> Result<SignedRequest, SigV4Error> {
    let signed = SignedRequest::parse(parts)?;
    signed.verify(parts, body, secret.as_bytes(), SystemTime::now())?;
    Ok(signed)
}

#[test]
fn botocore_kms_request_verifies() {
    let parts = botocore_sign(&kms_list_keys(None));
    let signed = verify(&parts, b"{}", SECRET).expect("botocore signature verifies");
    assert_eq!(signed.access_key_id, AKID);
    assert_eq!(signed.region, "us-east-1");
    assert_eq!(signed.service, "kms");
    assert_eq!(
        signed.signed_headers,
        ["content-type", "host", "x-amz-date", "x-amz-target"]
    );
    assert_eq!(signed.session_token, None);
    assert_eq!(signed.require_service("kms"), Ok(()));
}

#[test]
fn botocore_kms_request_with_session_token_verifies() {
    let parts = botocore_sign(&kms_list_keys(Some(TOKEN)));
    let signed = verify(&parts, b"{}", SECRET).expect("botocore signature verifies");
    assert_eq!(signed.session_token.as_deref(), Some(TOKEN));
    assert!(
        signed
            .signed_headers
            .iter()
            .any(|name| name == "x-amz-security-token")
    );
}

#[test]
fn botocore_signature_rejects_alterations() {
    let parts = botocore_sign(&kms_list_keys(Some(TOKEN)));
    assert_eq!(
        verify(&parts, br#"{"Limit":1}"#, SECRET).map(|_| ()),
        Err(SigV4Error::InvalidSignature)
    );
    assert_eq!(
        verify(&parts, b"{}", "bOtoCore/Cross+Check/Secret/0123456789AC").map(|_| ()),
        Err(SigV4Error::InvalidSignature)
    );
    let mut tampered = parts.clone();
    tampered.headers.insert(
        "x-amz-target",
        HeaderValue::from_static("TrentService.ScheduleKeyDeletion"),
    );
    assert_eq!(
        verify(&tampered, b"{}", SECRET).map(|_| ()),
        Err(SigV4Error::InvalidSignature)
    );
    let mut tampered = parts;
    tampered.headers.insert(
        "x-amz-security-token",
        HeaderValue::from_static("FwoGZXIvYXdzEKf//////////other=="),
    );
    assert_eq!(
        verify(&tampered, b"{}", SECRET).map(|_| ()),
        Err(SigV4Error::InvalidSignature)
    );
}

/// The general canonicalisation (path normalisation and re-encoding, query sorting, header
/// whitespace) agrees with botocore's on a request unlike the JSON APIs' `POST /`.
#[test]
fn botocore_path_query_and_header_canonicalisation_agree() {
    let parts = botocore_sign(&BotocoreRequest {
        method: "GET",
        target: "/a%3Ab/./c//d/../e/?b=2&a=x%20y&a=1&c",
        headers: &[("X-Custom", "  a   b\tc  "), ("X-Multi-Space", "x    y")],
        body: "",
        service: "ssm",
        token: None,
    });
    let signed = verify(&parts, b"", SECRET).expect("botocore signature verifies");
    assert_eq!(
        signed.signed_headers,
        ["host", "x-amz-date", "x-custom", "x-multi-space"]
    );
}
