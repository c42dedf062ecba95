//! Feeds hostile documents to the key policy parser and evaluates what parses: byte 0 picks the
//! request (principal, action, resource, encryption context, transport), the rest is the
//! document.
//!
//! Nothing may panic; errors stay short (a document is never echoed); what `parse` accepts,
//! `parse_stored` accepts and decides alike, and it keeps the document verbatim; the account
//! delegate is asked at most once per evaluation, and only Allow statements depend on it.
#![no_main]

use std::cell::Cell;
use std::collections::BTreeMap;

use coffer::engine::iam::{AccessRequest, Decision, Principal};
use coffer::engine::kms::policy::KeyPolicy;
use libfuzzer_sys::fuzz_target;

const ACCOUNT: &str = "111122223333";
const KEY_ARN: &str = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
const ACTIONS: [&str; 4] = [
    "kms:Decrypt",
    "kms:PutKeyPolicy",
    "kms:GenerateDataKey",
    "kms:ListKeys",
];

fn principal(selector: u8) -> Principal {
    let (arn, account) = match selector % 4 {
        0 => ("arn:aws:iam::111122223333:user/alice", ACCOUNT),
        1 => ("arn:aws:iam::111122223333:root", ACCOUNT),
        2 => ("arn:aws:iam::444455556666:user/mallory", "444455556666"),
        _ => ("arn:aws:sts::111122223333:assumed-role/Admin/s", ACCOUNT),
    };
    Principal {
        arn: arn.to_owned(),
        account_id: account.to_owned(),
    }
}

/// The decision, having checked that the delegate was asked at most once.
fn decide(
    policy: &KeyPolicy,
    request: &AccessRequest<'_, BTreeMap<String, String>>,
    delegate: bool,
) -> Decision {
    let asked = Cell::new(0u32);
    let decision = policy.evaluate(request, &|_| {
        asked.set(asked.get() + 1);
        delegate
    });
    assert!(asked.get() <= 1, "delegate asked {} times", asked.get());
    decision
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, document)) = data.split_first() else {
        return;
    };
    let Ok(document) = std::str::from_utf8(document) else {
        return;
    };
    let parsed = KeyPolicy::parse(document);
    let stored = KeyPolicy::parse_stored(document);
    for err in [parsed.as_ref().err(), stored.as_ref().err()]
        .into_iter()
        .flatten()
    {
        let message = err.to_string();
        assert!(message.len() < 2048, "{} bytes", message.len());
    }
    if parsed.is_ok() {
        assert!(stored.is_ok(), "parse accepted what parse_stored refused");
    }
    let Ok(stored) = stored else {
        return;
    };
    assert_eq!(stored.to_json(), document);

    let who = principal(selector);
    let context: BTreeMap<String, String> = if selector & 0x04 == 0 {
        BTreeMap::new()
    } else {
        BTreeMap::from([
            ("purpose".to_owned(), "fuzz".to_owned()),
            ("Department".to_owned(), "X*".to_owned()),
        ])
    };
    let request = AccessRequest {
        principal: &who,
        action: ACTIONS[usize::from(selector >> 3) % ACTIONS.len()],
        resource_arn: if selector & 0x20 == 0 { KEY_ARN } else { "*" },
        context: &context,
        key_account_id: ACCOUNT,
        secure_transport: selector & 0x40 != 0,
    };
    let denied_by_account = decide(&stored, &request, false);
    let allowed_by_account = decide(&stored, &request, true);
    // The delegate only adds to Allow statements: it can turn an implicit deny into an allow,
    // never make or unmake an explicit deny, never take an allow away.
    assert_eq!(
        denied_by_account == Decision::ExplicitDeny,
        allowed_by_account == Decision::ExplicitDeny
    );
    if denied_by_account == Decision::Allow {
        assert_eq!(allowed_by_account, Decision::Allow);
    }
    if let Ok(parsed) = &parsed {
        assert_eq!(decide(parsed, &request, false), denied_by_account);
        assert_eq!(decide(parsed, &request, true), allowed_by_account);
    }
    let _ = stored.would_lock_out(&who, KEY_ARN, ACCOUNT, request.secure_transport, &|_| {
        selector & 0x80 != 0
    });
});
