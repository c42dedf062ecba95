//! Feeds hostile request bodies to every Parameter Store operation the server's table knows: the
//! first byte picks the operation, the rest is its AWS JSON 1.1 body, decoded and run as the front
//! end does once a caller is authenticated (over an in-memory store holding a few parameters,
//! which refuses writes).
//!
//! Nothing may panic; no input may be an internal failure (HTTP 500); a success is a JSON object;
//! a body that is not a JSON object is a SerializationException; and no answer or error message
//! holds a value of the pre-created parameters (or secrets), but the reads' answers the values
//! the caller may read (see `coffer::fuzzing::leaked_value`).
#![no_main]

use std::sync::LazyLock;

use coffer::fuzzing::Front;
use libfuzzer_sys::fuzz_target;

static FRONT: LazyLock<(Front, Vec<&'static str>)> = LazyLock::new(|| {
    let front = Front::new().expect("the fuzzing front end must set up");
    let targets = front.ssm_targets();
    assert!(!targets.is_empty());
    (front, targets)
});

fuzz_target!(|data: &[u8]| {
    let (front, targets) = &*FRONT;
    if let Err(broken) = front.exercise(targets, data) {
        panic!("{broken}");
    }
});
