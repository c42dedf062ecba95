//! ServiceAccount tokens as an API server issues them, in shape: the reviewer's pre-check reads
//! their audience and expiry before asking the (mocked) API server about them.

use crate::engine::{Clock as _, SystemClock};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An unsigned JWT with these claims; its signature part is filler.
pub fn jwt(claims: &serde_json::Value) -> String {
    format!(
        "{}.{}.c2lnbmF0dXJl",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","kid":"test"}"#),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// The expiry of test tokens: the start of the day after tomorrow (UTC), so that the same label
/// gives the same token all through a test.
pub fn service_account_token_exp() -> i64 {
    (SystemClock.now() / 86_400 + 2) * 86_400
}

/// A plausible ServiceAccount token for Coffer's audience, told apart by `label`.
pub fn service_account_token(label: &str) -> String {
    jwt(&serde_json::json!({
        "aud": ["coffer"],
        "exp": service_account_token_exp(),
        "sub": "system:serviceaccount:team-a:app",
        "jti": label,
    }))
}
