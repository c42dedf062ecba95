//! Feeds hostile request bodies to every Secrets Manager operation the server's table knows: the
//! first byte picks the operation, the rest is its AWS JSON 1.1 body, decoded and run as the front
//! end does once a caller is authenticated (over an in-memory store holding a few secrets, which
//! refuses writes).
//!
//! Nothing may panic; no input may be an internal failure (HTTP 500), since every fault here is
//! the caller's; a success is a JSON object; a body that is not a JSON object is a
//! SerializationException, whatever the operation; and no answer or error message holds a value
//! of the pre-created secrets, but GetSecretValue's and BatchGetSecretValue's answers the values
//! the caller may read (see `coffer::fuzzing::leaked_value`).
#![no_main]

use std::sync::LazyLock;

use coffer::fuzzing::{Front, leaked_value};
use libfuzzer_sys::fuzz_target;

static FRONT: LazyLock<(Front, Vec<&'static str>)> = LazyLock::new(|| {
    let front = Front::new().expect("the fuzzing front end must set up");
    let targets = front.secrets_targets();
    assert!(!targets.is_empty());
    (front, targets)
});

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let (front, targets) = &*FRONT;
    let target = targets[usize::from(selector) % targets.len()];
    match front.call(target, body) {
        Ok(response) => {
            let parsed: serde_json::Value =
                serde_json::from_slice(&response).expect("a response body must be JSON");
            assert!(parsed.is_object(), "{target}: {parsed}");
            if let Some(value) = leaked_value(target, body, &response) {
                panic!("{target} answered the secret value {value:?}: {parsed}");
            }
        }
        Err(err) => {
            assert!(
                !err.status.is_server_error(),
                "{target}: {} {}",
                err.code,
                err.message
            );
            let is_object = body.is_empty()
                || body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'{');
            if !is_object {
                assert_eq!(err.code, "SerializationException", "{target}");
            }
            for text in [err.code, err.message.as_str()] {
                if let Some(value) = leaked_value(target, body, text.as_bytes()) {
                    panic!("{target} told the secret value {value:?} in an error: {text}");
                }
            }
        }
    }
});
