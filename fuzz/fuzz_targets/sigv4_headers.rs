//! Feeds hostile request heads to SigV4: `SignedRequest::parse`, then verification against one
//! known credential (so the canonical request is built), then the scope checks the front end
//! makes.
//!
//! Input: byte 0 sets the server clock's distance from `X-Amz-Date` ((b - 128) * 8 seconds);
//! byte 1 says which fixed headers are present (bit 0 Authorization, 1 X-Amz-Date,
//! 2 X-Amz-Security-Token, 3 X-Amz-Content-SHA256, 4 Host, 5 X-Amz-Target, 6 Content-Type;
//! bit 7 makes the method GET). The rest is lines: the request target, one value per fixed
//! header, then `name:value` headers up to an empty line, then the body.
//!
//! Nothing may panic; no error may be internal; whatever parses keeps the documented
//! `SignedHeaders` rules; the clock check fails exactly when the skew exceeds 15 minutes (a
//! cross-check of the verifier's date arithmetic); no error quotes the secret.
#![no_main]

use coffer::aws::sigv4::{MAX_CLOCK_SKEW, MAX_SIGNED_HEADERS, SigV4Error, SignedRequest};
use coffer::fuzzing::{SIGV4_SECRET_ACCESS_KEY, sigv4_authenticate};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use libfuzzer_sys::fuzz_target;

const FIXED_HEADERS: [&str; 7] = [
    "authorization",
    "x-amz-date",
    "x-amz-security-token",
    "x-amz-content-sha256",
    "host",
    "x-amz-target",
    "content-type",
];

/// Newline-separated lines; what is left after the last one taken is the body.
struct Lines<'a>(&'a [u8]);

impl<'a> Lines<'a> {
    fn take(&mut self) -> Option<&'a [u8]> {
        if self.0.is_empty() {
            return None;
        }
        let (line, rest) = match self.0.iter().position(|&byte| byte == b'\n') {
            Some(newline) => (&self.0[..newline], &self.0[newline + 1..]),
            None => (self.0, &b""[..]),
        };
        self.0 = rest;
        Some(line)
    }
}

fuzz_target!(|data: &[u8]| {
    let [skew, flags, rest @ ..] = data else {
        return;
    };
    let skew = (i64::from(*skew) - 128) * 8;
    let mut input = Lines(rest);
    let uri = input
        .take()
        .and_then(|line| Uri::try_from(line).ok())
        .unwrap_or_else(|| Uri::from_static("/"));
    let method = if flags & 0x80 == 0 {
        Method::POST
    } else {
        Method::GET
    };
    let mut request = Request::builder().method(method).uri(uri);
    for (bit, name) in FIXED_HEADERS.iter().enumerate() {
        let value = input.take().unwrap_or_default();
        // Values http refuses (control characters) cannot reach the server either.
        if flags & (1 << bit) != 0
            && let Ok(value) = HeaderValue::from_bytes(value)
        {
            request = request.header(*name, value);
        }
    }
    while let Some(line) = input.take() {
        if line.is_empty() {
            break;
        }
        let (name, value) = match line.iter().position(|&byte| byte == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &b""[..]),
        };
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            request = request.header(name, value);
        }
    }
    let body = input.0;
    let Ok(request) = request.body(()) else {
        return;
    };
    let (parts, ()) = request.into_parts();

    let parsed = SignedRequest::parse(&parts);
    if let Ok(signed) = &parsed {
        let names = &signed.signed_headers;
        assert!(!names.is_empty() && names.len() <= MAX_SIGNED_HEADERS);
        assert!(names.windows(2).all(|pair| pair[0] < pair[1]), "{names:?}");
        assert!(names.iter().all(|name| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| !b.is_ascii_uppercase() && b.is_ascii_graphic())
        }));
        for required in ["host", "x-amz-date"] {
            assert!(names.iter().any(|name| name == required), "{names:?}");
        }
        assert!(signed.date.len() == 8 && signed.date.bytes().all(|b| b.is_ascii_digit()));
        assert!(signed.amz_date().starts_with(&signed.date));
        if signed.session_token.is_some() {
            assert!(names.iter().any(|name| name == "x-amz-security-token"));
        }
    }

    let outcome = sigv4_authenticate(&parts, body, skew);
    if let Err(err) = &outcome {
        assert!(!matches!(err, SigV4Error::Internal(_)), "{err}");
        if !data
            .windows(SIGV4_SECRET_ACCESS_KEY.len())
            .any(|window| window == SIGV4_SECRET_ACCESS_KEY.as_bytes())
        {
            assert!(!err.to_string().contains(SIGV4_SECRET_ACCESS_KEY));
        }
    }
    if parsed.is_ok() {
        let expired = matches!(outcome, Err(SigV4Error::SignatureExpired));
        assert_eq!(
            expired,
            skew.unsigned_abs() > MAX_CLOCK_SKEW.as_secs(),
            "skew {skew}: {outcome:?}"
        );
    }
});
