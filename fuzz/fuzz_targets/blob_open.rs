//! Feeds hostile bytes to the blob parser and to `open` under a fixed key.
//!
//! Neither may panic or allocate beyond the input's size, and nothing but a blob sealed under
//! the fixed key may open.
#![no_main]

use std::collections::BTreeMap;

use coffer::crypto::{Binding, KeyMaterial, open, parse_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(material) = KeyMaterial::from_bytes(&[0x42; 64]) else {
        return;
    };
    if let Ok(header) = parse_header(data) {
        // Whatever parses must be what a blob header can hold.
        assert!(!header.key_id.is_empty() && header.key_id.len() <= 255);
    }
    let _ = open(&material, &Binding::default(), data);
    let binding = Binding::context(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
    let _ = open(&material, &binding, data);
});
