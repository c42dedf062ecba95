//! Requests signed the way the AWS SDKs sign them (with the SDK's own signer), for front-end
//! tests that need a caller with an access key.

use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;

/// One AWS JSON call to sign.
pub struct SdkCall<'a> {
    pub url: &'a str,
    pub access_key_id: &'a str,
    pub secret: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub target: &'a str,
    pub body: &'a [u8],
    /// Whether `x-amz-target` is among the signed headers (every SDK signs it).
    pub sign_target: bool,
}

/// The headers of the signed call, `x-amz-target` included (signed or not).
pub fn signed_headers(call: &SdkCall<'_>) -> http::HeaderMap {
    let host = call
        .url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut headers: Vec<(&str, &str)> = vec![
        ("host", &host),
        ("content-type", "application/x-amz-json-1.1"),
    ];
    if call.sign_target {
        headers.push(("x-amz-target", call.target));
    }
    let signable = SignableRequest::new(
        "POST",
        call.url,
        headers.iter().copied(),
        SignableBody::Bytes(call.body),
    )
    .expect("signable request");
    let identity = Credentials::new(call.access_key_id, call.secret, None, None, "tests").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(call.region)
        .name(call.service)
        .time(SystemTime::now())
        .settings(SigningSettings::default())
        .build()
        .expect("signing params")
        .into();
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let mut request = http::Request::builder()
        .method("POST")
        .uri(call.url)
        .body(())
        .expect("request");
    for (name, value) in &headers {
        request.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    instructions.apply_to_request_http1x(&mut request);
    let mut headers = request.into_parts().0.headers;
    headers.insert(
        "x-amz-target",
        http::HeaderValue::from_str(call.target).expect("target"),
    );
    headers
}
