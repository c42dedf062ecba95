//! KMS key policies: the IAM grammar ([`crate::engine::iam`]) with KMS's condition keys, the
//! default policy, and the lockout safety check.
//!
//! The encryption context key after `kms:EncryptionContext:` is compared case-sensitively,
//! because the context itself is (it is bound into the ciphertext byte for byte).

use std::collections::BTreeMap;

use crate::engine::iam::{self, AccessRequest, Decision, Policy, Principal, ServiceKeys};

pub use crate::engine::iam::PolicyError;

/// A key policy.
pub type KeyPolicy = Policy<KmsConditionKey>;

/// What KMS's condition keys read in a request: its encryption context.
pub type EncryptionContext = BTreeMap<String, String>;

/// A KMS request to decide.
pub type KmsRequest<'a> = AccessRequest<'a, EncryptionContext>;

/// The action the lockout check asks about.
const PUT_KEY_POLICY: &str = "kms:PutKeyPolicy";

/// KMS's own condition keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KmsConditionKey {
    /// `kms:EncryptionContext:<key>`, holding the case-sensitive context key.
    EncryptionContext(String),
    EncryptionContextKeys,
    CallerAccount,
    /// Coffer has no integrated services, so this key is never present.
    ViaService,
}

impl ServiceKeys for KmsConditionKey {
    type Context = EncryptionContext;

    fn parse(name: &str) -> Result<Option<Self>, String> {
        const CONTEXT_PREFIX: &str = "kms:EncryptionContext:";
        if let Some((prefix, context_key)) = name.split_at_checked(CONTEXT_PREFIX.len())
            && prefix.eq_ignore_ascii_case(CONTEXT_PREFIX)
        {
            if context_key.is_empty() {
                return Err(format!(
                    "condition key {} names no encryption context key",
                    iam::clip(name)
                ));
            }
            return Ok(Some(KmsConditionKey::EncryptionContext(
                context_key.to_owned(),
            )));
        }
        let known = [
            (
                "kms:EncryptionContextKeys",
                KmsConditionKey::EncryptionContextKeys,
            ),
            ("kms:CallerAccount", KmsConditionKey::CallerAccount),
            ("kms:ViaService", KmsConditionKey::ViaService),
        ];
        Ok(known
            .into_iter()
            .find(|(known_name, _)| known_name.eq_ignore_ascii_case(name))
            .map(|(_, key)| key))
    }

    fn values_in<'r>(&self, request: &KmsRequest<'r>) -> Option<Vec<&'r str>> {
        match self {
            KmsConditionKey::EncryptionContext(key) => {
                request.context.get(key).map(|value| vec![value.as_str()])
            }
            // An empty context counts as absent, so `Null: false` can require a context.
            KmsConditionKey::EncryptionContextKeys if request.context.is_empty() => None,
            KmsConditionKey::EncryptionContextKeys => {
                Some(request.context.keys().map(String::as_str).collect())
            }
            KmsConditionKey::CallerAccount => Some(vec![request.principal.account_id.as_str()]),
            KmsConditionKey::ViaService => None,
        }
    }
}

impl Policy<KmsConditionKey> {
    /// AWS's default key policy: the account may use the key as far as its own permissions
    /// (IAM in AWS, the delegate here) allow.
    pub fn default_document(account_id: &str) -> String {
        // Written out rather than built with `json!`, so the fields keep AWS's order.
        let principal = serde_json::Value::String(format!("arn:aws:iam::{account_id}:root"));
        format!(
            r#"{{
  "Version": "2012-10-17",
  "Id": "key-default-1",
  "Statement": [
    {{
      "Sid": "Enable IAM User Permissions",
      "Effect": "Allow",
      "Principal": {{
        "AWS": {principal}
      }},
      "Action": "kms:*",
      "Resource": "*"
    }}
  ]
}}"#
        )
    }

    /// True when, under this policy, `caller` could no longer call `kms:PutKeyPolicy` on the
    /// key: AWS's lockout safety check, which refuses such a policy unless the caller bypasses
    /// it, because a key nobody can administer cannot be repaired.
    pub fn would_lock_out(
        &self,
        caller: &Principal,
        key_arn: &str,
        key_account_id: &str,
        secure_transport: bool,
        account_delegate: &dyn Fn(&KmsRequest<'_>) -> bool,
    ) -> bool {
        let no_context = BTreeMap::new();
        let request = AccessRequest {
            principal: caller,
            action: PUT_KEY_POLICY,
            resource_arn: key_arn,
            context: &no_context,
            key_account_id,
            secure_transport,
        };
        self.evaluate(&request, account_delegate) != Decision::Allow
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    use crate::engine::iam::{MAX_POLICY_BYTES, wildcard_match};
    use proptest::prelude::*;
    use serde_json::json;

    const ACCOUNT: &str = "111122223333";
    const OTHER_ACCOUNT: &str = "444455556666";
    const KEY_ARN: &str =
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

    fn user(account: &str, name: &str) -> Principal {
        Principal {
            arn: format!("arn:aws:iam::{account}:user/{name}"),
            account_id: account.to_owned(),
        }
    }

    fn alice() -> Principal {
        user(ACCOUNT, "alice")
    }

    fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn policy(document: serde_json::Value) -> KeyPolicy {
        match KeyPolicy::parse(&document.to_string()) {
            Ok(policy) => policy,
            Err(e) => panic!("policy should parse: {e}"),
        }
    }

    /// A one-statement policy with the given effect, principal, action and condition.
    fn single(
        effect: &str,
        principal: serde_json::Value,
        action: serde_json::Value,
        condition: serde_json::Value,
    ) -> KeyPolicy {
        policy(json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Sid": "Only",
                "Effect": effect,
                "Principal": principal,
                "Action": action,
                "Resource": "*",
                "Condition": condition,
            }]
        }))
    }

    fn decide_on(
        policy: &KeyPolicy,
        who: &Principal,
        action: &str,
        resource: &str,
        ctx: &[(&str, &str)],
        delegate: bool,
    ) -> Decision {
        let ctx = context(ctx);
        let request = AccessRequest {
            principal: who,
            action,
            resource_arn: resource,
            context: &ctx,
            key_account_id: ACCOUNT,
            secure_transport: false,
        };
        policy.evaluate(&request, &|_| delegate)
    }

    fn decide(
        policy: &KeyPolicy,
        who: &Principal,
        action: &str,
        ctx: &[(&str, &str)],
        delegate: bool,
    ) -> Decision {
        decide_on(policy, who, action, KEY_ARN, ctx, delegate)
    }

    fn parse_err(document: &str) -> PolicyError {
        match KeyPolicy::parse(document) {
            Ok(_) => panic!("document should be refused"),
            Err(e) => e,
        }
    }

    fn statement_err(statement: serde_json::Value) -> PolicyError {
        parse_err(&json!({"Version": "2012-10-17", "Statement": [statement]}).to_string())
    }

    fn allow_decrypt_with(condition: serde_json::Value) -> KeyPolicy {
        single("Allow", json!("*"), json!("kms:Decrypt"), condition)
    }

    // --- default policy and delegation ---------------------------------------------------

    #[test]
    fn default_policy_allows_account_principals_only_when_the_delegate_agrees() {
        let policy = policy_from(&KeyPolicy::default_document(ACCOUNT));
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], true),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
        let outsider = user(OTHER_ACCOUNT, "mallory");
        assert_eq!(
            decide(&policy, &outsider, "kms:Decrypt", &[], true),
            Decision::ImplicitDeny
        );
    }

    fn policy_from(text: &str) -> KeyPolicy {
        match KeyPolicy::parse(text) {
            Ok(policy) => policy,
            Err(e) => panic!("policy should parse: {e}"),
        }
    }

    #[test]
    fn account_root_itself_is_allowed_without_delegation() {
        let policy = policy_from(&KeyPolicy::default_document(ACCOUNT));
        let root = Principal {
            arn: format!("arn:aws:iam::{ACCOUNT}:root"),
            account_id: ACCOUNT.to_owned(),
        };
        assert_eq!(
            decide(&policy, &root, "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn bare_account_id_principal_delegates_like_the_root_arn() {
        let policy = single("Allow", json!({"AWS": ACCOUNT}), json!("kms:*"), json!({}));
        assert_eq!(
            decide(&policy, &alice(), "kms:Encrypt", &[], true),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Encrypt", &[], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn delegate_sees_the_request_and_is_asked_at_most_once_and_only_when_needed() {
        let policy = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": ACCOUNT}, "Action": "kms:Decrypt", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{ACCOUNT}:root")},
             "Action": "kms:Decrypt", "Resource": "*"},
        ]}));
        let calls = Cell::new(0);
        let seen = std::cell::RefCell::new(String::new());
        let delegate = |request: &KmsRequest<'_>| {
            calls.set(calls.get() + 1);
            *seen.borrow_mut() = format!("{} {}", request.action, request.resource_arn);
            false
        };
        let who = alice();
        let ctx = BTreeMap::new();
        let mut request = AccessRequest {
            principal: &who,
            action: "kms:Decrypt",
            resource_arn: KEY_ARN,
            context: &ctx,
            key_account_id: ACCOUNT,
            secure_transport: false,
        };
        assert_eq!(policy.evaluate(&request, &delegate), Decision::ImplicitDeny);
        assert_eq!(calls.get(), 1);
        assert_eq!(*seen.borrow(), format!("kms:Decrypt {KEY_ARN}"));

        request.action = "kms:Encrypt";
        assert_eq!(policy.evaluate(&request, &delegate), Decision::ImplicitDeny);
        assert_eq!(
            calls.get(),
            1,
            "no statement covers Encrypt, so nothing to delegate"
        );
    }

    #[test]
    fn default_document_is_pretty_json_in_aws_shape_and_round_trips() {
        let text = KeyPolicy::default_document(ACCOUNT);
        assert!(text.contains('\n'), "pretty-printed");
        let value: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => panic!("default document is JSON: {e}"),
        };
        assert_eq!(value["Version"], "2012-10-17");
        let statement = &value["Statement"][0];
        assert_eq!(statement["Sid"], "Enable IAM User Permissions");
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(
            statement["Principal"]["AWS"],
            "arn:aws:iam::111122223333:root"
        );
        assert_eq!(statement["Action"], "kms:*");
        assert_eq!(statement["Resource"], "*");
        assert_eq!(policy_from(&text).to_json(), text);
    }

    #[test]
    fn to_json_returns_the_document_verbatim() {
        let text = "{ \"Statement\" : {\"Effect\":\"Allow\",\n\"Principal\":\"*\",\"Action\":\"kms:Decrypt\",\"Resource\":\"*\"}  }";
        assert_eq!(policy_from(text).to_json(), text);
    }

    // --- deny and allow ----------------------------------------------------------------------

    #[test]
    fn explicit_deny_beats_allow_in_either_order() {
        let allow =
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
        let deny = json!({"Effect": "Deny", "Principal": {"AWS": alice().arn},
                          "Action": "kms:Decrypt", "Resource": "*"});
        for statements in [json!([allow, deny]), json!([deny, allow])] {
            let policy = policy(json!({"Statement": statements}));
            assert_eq!(
                decide(&policy, &alice(), "kms:Decrypt", &[], true),
                Decision::ExplicitDeny
            );
            assert_eq!(
                decide(&policy, &alice(), "kms:Encrypt", &[], true),
                Decision::Allow
            );
            let bob = user(ACCOUNT, "bob");
            assert_eq!(
                decide(&policy, &bob, "kms:Decrypt", &[], true),
                Decision::Allow
            );
        }
    }

    #[test]
    fn deny_naming_an_account_applies_to_its_principals_without_delegation() {
        let policy = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": OTHER_ACCOUNT}, "Action": "kms:*", "Resource": "*"},
        ]}));
        let outsider = user(OTHER_ACCOUNT, "mallory");
        assert_eq!(
            decide(&policy, &outsider, "kms:Decrypt", &[], false),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn nothing_matching_is_an_implicit_deny() {
        let policy = single(
            "Allow",
            json!({"AWS": alice().arn}),
            json!("kms:Encrypt"),
            json!({}),
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], true),
            Decision::ImplicitDeny
        );
    }

    // --- actions -----------------------------------------------------------------------------

    #[test]
    fn action_wildcards_and_case() {
        let all = single("Allow", json!("*"), json!("kms:*"), json!({}));
        assert_eq!(
            decide(&all, &alice(), "kms:ScheduleKeyDeletion", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&all, &alice(), "secretsmanager:GetSecretValue", &[], false),
            Decision::ImplicitDeny
        );

        let generate = single("Allow", json!("*"), json!("kms:Gen*"), json!({}));
        for action in [
            "kms:GenerateDataKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:GenerateRandom",
        ] {
            assert_eq!(
                decide(&generate, &alice(), action, &[], false),
                Decision::Allow,
                "{action}"
            );
        }
        assert_eq!(
            decide(&generate, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );

        let shouty = single("Allow", json!("*"), json!("KMS:decrypt"), json!({}));
        assert_eq!(
            decide(&shouty, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&shouty, &alice(), "KMS:DECRYPT", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&shouty, &alice(), "kms:Decrypts", &[], false),
            Decision::ImplicitDeny
        );

        let one_char = single("Allow", json!("*"), json!("kms:?ncrypt"), json!({}));
        assert_eq!(
            decide(&one_char, &alice(), "kms:Encrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&one_char, &alice(), "kms:ReEncrypt", &[], false),
            Decision::ImplicitDeny
        );

        let everything = single("Allow", json!("*"), json!("*"), json!({}));
        assert_eq!(
            decide(&everything, &alice(), "kms:Sign", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn action_list_matches_any_entry() {
        let policy = single(
            "Allow",
            json!("*"),
            json!(["kms:Encrypt", "kms:Decrypt"]),
            json!({}),
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Encrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Sign", &[], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn not_action_covers_every_other_action() {
        let allow = policy(json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "NotAction": ["kms:ScheduleKeyDeletion", "kms:Disable*"], "Resource": "*"}}));
        assert_eq!(
            decide(&allow, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&allow, &alice(), "kms:ScheduleKeyDeletion", &[], false),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&allow, &alice(), "kms:disablekey", &[], false),
            Decision::ImplicitDeny
        );

        let deny_all_but_decrypt = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "NotAction": "kms:Decrypt", "Resource": "*"},
        ]}));
        assert_eq!(
            decide(&deny_all_but_decrypt, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&deny_all_but_decrypt, &alice(), "kms:Encrypt", &[], false),
            Decision::ExplicitDeny
        );
    }

    // --- principals and resources ------------------------------------------------------------

    #[test]
    fn principal_arn_list_matches_exactly_the_listed_principals() {
        let bob = user(ACCOUNT, "bob");
        let carol = user(ACCOUNT, "carol");
        let policy = single(
            "Allow",
            json!({"AWS": [alice().arn, bob.arn]}),
            json!("kms:Decrypt"),
            json!({}),
        );
        // Named principals need no delegation.
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &bob, "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &carol, "kms:Decrypt", &[], true),
            Decision::ImplicitDeny
        );
        let alice_elsewhere = Principal {
            arn: format!("{}-2", alice().arn),
            account_id: ACCOUNT.to_owned(),
        };
        assert_eq!(
            decide(&policy, &alice_elsewhere, "kms:Decrypt", &[], true),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn star_principals_match_anyone() {
        let outsider = user(OTHER_ACCOUNT, "mallory");
        for principal in [
            json!("*"),
            json!({"AWS": "*"}),
            json!({"AWS": [alice().arn, "*"]}),
        ] {
            let policy = single("Allow", principal, json!("kms:Decrypt"), json!({}));
            assert_eq!(
                decide(&policy, &outsider, "kms:Decrypt", &[], false),
                Decision::Allow
            );
        }
    }

    #[test]
    fn resource_must_be_star_or_match_the_key_arn() {
        let exact = policy(json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "Action": "kms:*", "Resource": KEY_ARN}}));
        let other_key =
            "arn:aws:kms:us-east-1:111122223333:key/ffffffff-0000-0000-0000-000000000000";
        assert_eq!(
            decide(&exact, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide_on(&exact, &alice(), "kms:Decrypt", other_key, &[], false),
            Decision::ImplicitDeny
        );

        let pattern = policy(json!({"Statement": {"Effect": "Allow", "Principal": "*",
            "Action": "kms:*", "Resource": ["arn:aws:kms:*:111122223333:key/*"]}}));
        assert_eq!(
            decide_on(&pattern, &alice(), "kms:Decrypt", other_key, &[], false),
            Decision::Allow
        );
        let foreign = "arn:aws:kms:us-east-1:444455556666:key/ffffffff-0000-0000-0000-000000000000";
        assert_eq!(
            decide_on(&pattern, &alice(), "kms:Decrypt", foreign, &[], false),
            Decision::ImplicitDeny
        );
    }

    // --- conditions --------------------------------------------------------------------------

    #[test]
    fn string_equals_on_encryption_context() {
        let policy = allow_decrypt_with(
            json!({"StringEquals": {"kms:EncryptionContext:Purpose": "backup"}}),
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "backup")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "Backup")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Other", "backup")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn condition_key_name_is_case_insensitive_but_context_key_is_not() {
        let policy = allow_decrypt_with(
            json!({"StringEquals": {"KMS:encryptioncontext:Purpose": "backup"}}),
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "backup")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("purpose", "backup")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn multiple_values_are_or_and_multiple_keys_and_operators_are_and() {
        let policy = allow_decrypt_with(json!({
            "StringEquals": {"kms:EncryptionContext:Team": ["red", "blue"],
                             "kms:EncryptionContext:Stage": "prod"},
            "StringLike": {"kms:EncryptionContext:App": "web-*"},
        }));
        let ok = [("Team", "blue"), ("Stage", "prod"), ("App", "web-1")];
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &ok, false),
            Decision::Allow
        );
        let wrong_team = [("Team", "green"), ("Stage", "prod"), ("App", "web-1")];
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &wrong_team, false),
            Decision::ImplicitDeny
        );
        let wrong_app = [("Team", "red"), ("Stage", "prod"), ("App", "db")];
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &wrong_app, false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn string_like_and_not_like_wildcards() {
        let like = allow_decrypt_with(
            json!({"StringLike": {"kms:EncryptionContext:Path": "/apps/*/db?"}}),
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("Path", "/apps/web/db1")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("Path", "/apps/a/b/dbX")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("Path", "/apps/web/db")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("Path", "/APPS/web/db1")],
                false
            ),
            Decision::ImplicitDeny
        );

        let not_like = allow_decrypt_with(
            json!({"StringNotLike": {"kms:EncryptionContext:Env": ["prod*", "stag*"]}}),
        );
        assert_eq!(
            decide(&not_like, &alice(), "kms:Decrypt", &[("Env", "dev")], false),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &not_like,
                &alice(),
                "kms:Decrypt",
                &[("Env", "production")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &not_like,
                &alice(),
                "kms:Decrypt",
                &[("Env", "staging")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn ignore_case_operators() {
        let equals = allow_decrypt_with(
            json!({"StringEqualsIgnoreCase": {"kms:EncryptionContext:Team": "Red"}}),
        );
        assert_eq!(
            decide(&equals, &alice(), "kms:Decrypt", &[("Team", "RED")], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&equals, &alice(), "kms:Decrypt", &[("Team", "blue")], false),
            Decision::ImplicitDeny
        );

        let not_equals = allow_decrypt_with(
            json!({"StringNotEqualsIgnoreCase": {"kms:EncryptionContext:Team": "Red"}}),
        );
        assert_eq!(
            decide(
                &not_equals,
                &alice(),
                "kms:Decrypt",
                &[("Team", "rEd")],
                false
            ),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(
                &not_equals,
                &alice(),
                "kms:Decrypt",
                &[("Team", "blue")],
                false
            ),
            Decision::Allow
        );
    }

    #[test]
    fn negated_operator_on_a_missing_key_holds_as_in_iam() {
        // IAM: "If the policy condition requires that the key is not matched ... and the key
        // is not present, the condition is true." So this Deny catches context-less calls too.
        let policy = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": "*", "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringNotEquals": {"kms:EncryptionContext:Tenant": "acme"}}},
        ]}));
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Tenant", "acme")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Tenant", "evil")],
                false
            ),
            Decision::ExplicitDeny
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ExplicitDeny
        );
    }

    #[test]
    fn for_all_values_on_encryption_context_keys() {
        let policy = allow_decrypt_with(json!({"ForAllValues:StringEquals":
            {"kms:EncryptionContextKeys": ["Purpose", "Team"]}}));
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[("Purpose", "x")], false),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "x"), ("Team", "y")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "x"), ("Extra", "z")],
                false
            ),
            Decision::ImplicitDeny
        );
        // The empty set satisfies ForAllValues.
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn for_any_value_on_encryption_context_keys() {
        let policy = allow_decrypt_with(json!({"ForAnyValue:StringEquals":
            {"kms:EncryptionContextKeys": "Purpose"}}));
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "x"), ("Other", "y")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[("Other", "y")], false),
            Decision::ImplicitDeny
        );
        // The empty set never satisfies ForAnyValue.
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );

        let like = allow_decrypt_with(
            json!({"ForAnyValue:StringLike": {"kms:EncryptionContextKeys": "aws:*"}}),
        );
        assert_eq!(
            decide(
                &like,
                &alice(),
                "kms:Decrypt",
                &[("aws:pipe", "1"), ("b", "2")],
                false
            ),
            Decision::Allow
        );
    }

    #[test]
    fn for_all_values_with_a_negated_operator_forbids_listed_keys() {
        let policy = allow_decrypt_with(json!({"ForAllValues:StringNotEquals":
            {"kms:EncryptionContextKeys": "Secret"}}));
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("A", "1"), ("B", "2")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("A", "1"), ("Secret", "2")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn if_exists_passes_a_missing_key_but_still_checks_a_present_one() {
        let policy = allow_decrypt_with(
            json!({"StringEqualsIfExists": {"kms:EncryptionContext:Purpose": "backup"}}),
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[("Other", "1")], false),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "backup")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &policy,
                &alice(),
                "kms:Decrypt",
                &[("Purpose", "other")],
                false
            ),
            Decision::ImplicitDeny
        );

        let any = allow_decrypt_with(
            json!({"ForAnyValue:StringEqualsIfExists": {"kms:EncryptionContextKeys": "Purpose"}}),
        );
        assert_eq!(
            decide(&any, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&any, &alice(), "kms:Decrypt", &[("Other", "1")], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn null_tests_presence() {
        let requires_context =
            allow_decrypt_with(json!({"Null": {"kms:EncryptionContextKeys": "false"}}));
        assert_eq!(
            decide(
                &requires_context,
                &alice(),
                "kms:Decrypt",
                &[("A", "1")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(&requires_context, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );

        let requires_absence =
            allow_decrypt_with(json!({"Null": {"kms:EncryptionContext:Debug": true}}));
        assert_eq!(
            decide(
                &requires_absence,
                &alice(),
                "kms:Decrypt",
                &[("A", "1")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &requires_absence,
                &alice(),
                "kms:Decrypt",
                &[("Debug", "1")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn caller_account_condition() {
        let policy = allow_decrypt_with(json!({"StringEquals": {"kms:CallerAccount": ACCOUNT}}));
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        let outsider = user(OTHER_ACCOUNT, "mallory");
        assert_eq!(
            decide(&policy, &outsider, "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );

        // A bare JSON number is compared as its decimal text.
        let numeric =
            allow_decrypt_with(json!({"StringEquals": {"kms:calleraccount": 111_122_223_333_u64}}));
        assert_eq!(
            decide(&numeric, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn principal_arn_condition() {
        let policy = allow_decrypt_with(
            json!({"StringLike": {"aws:PrincipalArn": "arn:aws:iam::111122223333:role/admin-*"}}),
        );
        let admin = Principal {
            arn: "arn:aws:iam::111122223333:role/admin-ops".to_owned(),
            account_id: ACCOUNT.to_owned(),
        };
        assert_eq!(
            decide(&policy, &admin, "kms:Decrypt", &[], false),
            Decision::Allow
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
    }

    #[test]
    fn via_service_is_never_present() {
        let via = allow_decrypt_with(
            json!({"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}}),
        );
        assert_eq!(
            decide(&via, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
    }

    fn single_document(effect: &str, condition: serde_json::Value) -> String {
        json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": effect, "Principal": "*", "Action": "kms:*", "Resource": "*",
                "Condition": condition,
            }]
        })
        .to_string()
    }

    #[test]
    fn unknown_condition_keys_are_refused_where_a_policy_is_written() {
        for condition in [
            json!({"StringEquals": {"aws:SourceVpc": "vpc-1"}}),
            json!({"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1"}}),
            // Misspelt: inside ForAllValues a key never present would always hold.
            json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKey": ["a"]}}),
            json!({"Bool": {"aws:SecureTransprot": "false"}}),
        ] {
            for effect in ["Allow", "Deny"] {
                let err = parse_err(&single_document(effect, condition.clone()));
                assert!(
                    err.to_string().contains("is not supported"),
                    "{condition}: {err}"
                );
            }
        }
    }

    #[test]
    fn unknown_keys_in_a_stored_policy_fail_closed() {
        let allow = "{\"Effect\": \"Allow\", \"Principal\": \"*\", \"Action\": \"kms:*\", \"Resource\": \"*\"}";
        let stored = |condition: serde_json::Value, with_allow: bool| {
            let deny = json!({
                "Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
                "Condition": condition,
            });
            let statements = if with_allow {
                format!("[{allow}, {deny}]")
            } else {
                format!(
                    "[{}]",
                    json!({
                        "Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*",
                        "Condition": condition,
                    })
                )
            };
            let text = format!("{{\"Version\": \"2012-10-17\", \"Statement\": {statements}}}");
            assert!(
                KeyPolicy::parse(&text).is_err(),
                "strict parsing refuses it"
            );
            match KeyPolicy::parse_stored(&text) {
                Ok(policy) => policy,
                Err(e) => panic!("a stored policy loads: {e}"),
            }
        };
        for condition in [
            json!({"StringEquals": {"aws:SourceVpc": "vpc-1"}}),
            json!({"StringNotEquals": {"aws:SourceVpc": "vpc-1"}}),
            json!({"StringEqualsIfExists": {"aws:SourceVpc": "vpc-1"}}),
            json!({"ForAllValues:StringEquals": {"kms:EncryptionContextKey": ["a"]}}),
            json!({"Null": {"aws:SourceVpc": "true"}}),
        ] {
            // A Deny on an unknown key applies...
            let denying = stored(condition.clone(), true);
            assert_eq!(
                decide(&denying, &alice(), "kms:Decrypt", &[], true),
                Decision::ExplicitDeny,
                "{condition}"
            );
            // ...and an Allow on one does not.
            let allowing = stored(condition.clone(), false);
            assert_eq!(
                decide(&allowing, &alice(), "kms:Decrypt", &[], true),
                Decision::ImplicitDeny,
                "{condition}"
            );
        }
    }

    #[test]
    fn secure_transport_is_what_the_request_arrived_over() {
        let decide_over = |policy: &KeyPolicy, tls: bool| {
            let ctx = BTreeMap::new();
            policy.evaluate(
                &AccessRequest {
                    principal: &alice(),
                    action: "kms:Decrypt",
                    resource_arn: KEY_ARN,
                    context: &ctx,
                    key_account_id: ACCOUNT,
                    secure_transport: tls,
                },
                &|_| true,
            )
        };
        let deny_plain_http = policy(json!({
            "Version": "2012-10-17",
            "Statement": [
                {"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"},
                {"Effect": "Deny", "Principal": "*", "Action": "kms:*", "Resource": "*",
                 "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            ]
        }));
        assert_eq!(decide_over(&deny_plain_http, false), Decision::ExplicitDeny);
        assert_eq!(decide_over(&deny_plain_http, true), Decision::Allow);
        let allow_tls_only = allow_decrypt_with(json!({"Bool": {"aws:SecureTransport": true}}));
        assert_eq!(decide_over(&allow_tls_only, false), Decision::ImplicitDeny);
        assert_eq!(decide_over(&allow_tls_only, true), Decision::Allow);
        let same_account =
            allow_decrypt_with(json!({"StringEquals": {"aws:PrincipalAccount": ACCOUNT}}));
        assert_eq!(decide_over(&same_account, false), Decision::Allow);
    }

    #[test]
    fn bool_operator() {
        let missing = allow_decrypt_with(json!({"Bool": {"kms:ViaService": "true"}}));
        assert_eq!(
            decide(&missing, &alice(), "kms:Decrypt", &[], false),
            Decision::ImplicitDeny
        );
        let if_exists = allow_decrypt_with(json!({"BoolIfExists": {"kms:ViaService": true}}));
        assert_eq!(
            decide(&if_exists, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
        let on_context =
            allow_decrypt_with(json!({"Bool": {"kms:EncryptionContext:Audited": "TRUE"}}));
        assert_eq!(
            decide(
                &on_context,
                &alice(),
                "kms:Decrypt",
                &[("Audited", "true")],
                false
            ),
            Decision::Allow
        );
        assert_eq!(
            decide(
                &on_context,
                &alice(),
                "kms:Decrypt",
                &[("Audited", "false")],
                false
            ),
            Decision::ImplicitDeny
        );
    }

    // --- parsing -----------------------------------------------------------------------------

    #[test]
    fn single_object_statement_is_accepted() {
        let policy = policy_from(
            r#"{"Version":"2012-10-17","Statement":
            {"Effect":"Allow","Principal":{"AWS":"arn:aws:iam::111122223333:user/alice"},
             "Action":"kms:Decrypt","Resource":"*"}}"#,
        );
        assert_eq!(
            decide(&policy, &alice(), "kms:Decrypt", &[], false),
            Decision::Allow
        );
    }

    #[test]
    fn bad_effect_is_refused_naming_the_statement() {
        let e = statement_err(json!({"Sid": "Oops", "Effect": "allow", "Principal": "*",
            "Action": "kms:*", "Resource": "*"}));
        assert!(
            matches!(&e, PolicyError::Statement { at, reason }
            if at == "Statement[0] (Sid \"Oops\")" && reason.contains("Effect")),
            "{e}"
        );
    }

    #[test]
    fn unknown_statement_field_is_refused() {
        let e = statement_err(
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
            "Resource": "*", "Conditions": {}}),
        );
        assert_eq!(e.to_string(), "Statement[0]: unknown field \"Conditions\"");
    }

    #[test]
    fn error_names_the_failing_statement_index() {
        let good = json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
        let bad = json!({"Sid": "Second", "Effect": "Allow", "Principal": "*", "Resource": "*"});
        let e = parse_err(&json!({"Statement": [good, bad]}).to_string());
        assert_eq!(
            e.to_string(),
            "Statement[1] (Sid \"Second\"): missing Action (or NotAction)"
        );
    }

    #[test]
    fn unknown_top_level_field_is_refused() {
        let e = parse_err(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"},"Extra":1}"#,
        );
        assert_eq!(
            e.to_string(),
            "policy document: unknown top-level field \"Extra\""
        );
        let e = parse_err(r#"{"Version":"2012-10-17","Extra":1,"Statement":[]}"#);
        assert_eq!(
            e.to_string(),
            "policy document: unknown top-level field \"Extra\""
        );
    }

    #[test]
    fn unknown_condition_operator_is_refused() {
        let e = statement_err(
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
            "Resource": "*", "Condition": {"StringEqualz": {"kms:CallerAccount": ACCOUNT}}}),
        );
        assert!(
            e.to_string()
                .contains("unknown condition operator \"StringEqualz\""),
            "{e}"
        );
        for bad in [
            "NumericEquals",
            "ForSomeValues:StringEquals",
            "NullIfExists",
            "ForAnyValue:Null",
        ] {
            let e = statement_err(
                json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
                "Resource": "*", "Condition": {bad: {"kms:CallerAccount": "true"}}}),
            );
            assert!(matches!(e, PolicyError::Statement { .. }), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_condition_shapes_are_refused() {
        for condition in [
            json!({"Bool": {"kms:ViaService": "yes"}}),
            json!({"StringEquals": {"kms:CallerAccount": []}}),
            json!({"StringEquals": {"kms:CallerAccount": {"a": 1}}}),
            json!({"StringEquals": {}}),
            json!({"StringEquals": {"CallerAccount": "1"}}),
            json!({"StringEquals": {"kms:EncryptionContext:": "1"}}),
            json!(["StringEquals"]),
        ] {
            let e = statement_err(
                json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
                "Resource": "*", "Condition": condition}),
            );
            assert!(
                matches!(e, PolicyError::Statement { .. }),
                "{condition}: {e}"
            );
        }
    }

    #[test]
    fn not_principal_and_not_resource_are_unsupported() {
        let e = statement_err(
            json!({"Effect": "Deny", "NotPrincipal": {"AWS": alice().arn},
            "Action": "kms:*", "Resource": "*"}),
        );
        assert!(
            matches!(
                e,
                PolicyError::Unsupported {
                    element: "NotPrincipal",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            e.to_string().contains("NotPrincipal is not supported"),
            "{e}"
        );
        let e = statement_err(
            json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*",
            "NotResource": "arn:aws:kms:*"}),
        );
        assert!(
            matches!(
                e,
                PolicyError::Unsupported {
                    element: "NotResource",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn malformed_statements_are_refused() {
        let base = json!({"Effect": "Allow", "Principal": "*", "Action": "kms:*", "Resource": "*"});
        let variants: [(&str, serde_json::Value); 9] = [
            ("Principal", json!({"Service": "logs.amazonaws.com"})),
            ("Principal", json!({"AWS": "alice"})),
            (
                "Principal",
                json!({"AWS": "arn:aws:iam::111122223333:user/*"}),
            ),
            ("Principal", json!({})),
            ("Action", json!("Decrypt")),
            ("Action", json!([])),
            ("Resource", json!("key/1")),
            ("Effect", json!(true)),
            ("Sid", json!(7)),
        ];
        for (field, value) in variants {
            let mut statement = base.clone();
            statement[field] = value.clone();
            let e = statement_err(statement);
            assert!(
                matches!(e, PolicyError::Statement { .. }),
                "{field}={value}: {e}"
            );
        }
        let mut both = base.clone();
        both["NotAction"] = json!("kms:Decrypt");
        assert!(statement_err(both).to_string().contains("not both"));
        for missing in ["Effect", "Principal", "Action", "Resource"] {
            let mut statement = base.clone();
            if let Some(fields) = statement.as_object_mut() {
                fields.remove(missing);
            }
            let e = statement_err(statement);
            assert!(e.to_string().contains(&format!("missing {missing}")), "{e}");
        }
    }

    #[test]
    fn malformed_documents_are_refused() {
        for document in [
            "[]",
            "\"policy\"",
            r#"{"Version":"2012-10-17"}"#,
            r#"{"Statement":[]}"#,
            r#"{"Statement":"Allow"}"#,
            r#"{"Version":"2020-01-01","Statement":[]}"#,
            r#"{"Id":5,"Statement":[]}"#,
        ] {
            assert!(
                matches!(parse_err(document), PolicyError::Document(_)),
                "{document}"
            );
        }
        let e = parse_err(r#"{"Statement":[1]}"#);
        assert!(e.to_string().contains("must be an object"), "{e}");
    }

    #[test]
    fn not_json_is_refused() {
        for document in ["", "{", "not json", r#"{"Statement":[]} trailing"#] {
            assert!(
                matches!(parse_err(document), PolicyError::NotJson(_)),
                "{document:?}"
            );
        }
    }

    #[test]
    fn duplicate_field_names_are_refused() {
        let e = parse_err(
            r#"{"Statement":{"Effect":"Deny","Effect":"Allow","Principal":"*","Action":"kms:*","Resource":"*"}}"#,
        );
        assert!(
            matches!(&e, PolicyError::NotJson(m) if m.contains("duplicate field \"Effect\"")),
            "{e}"
        );
    }

    #[test]
    fn size_limit_is_32_kib() {
        let document = KeyPolicy::default_document(ACCOUNT);
        let at_limit = format!("{document:<width$}", width = MAX_POLICY_BYTES);
        assert_eq!(at_limit.len(), MAX_POLICY_BYTES);
        assert!(KeyPolicy::parse(&at_limit).is_ok());
        let over = format!("{at_limit} ");
        assert_eq!(
            parse_err(&over),
            PolicyError::TooLarge {
                size: MAX_POLICY_BYTES + 1,
                limit: MAX_POLICY_BYTES
            }
        );
    }

    #[test]
    fn errors_never_echo_huge_input() {
        let huge = "X".repeat(20_000);
        let e = statement_err(json!({"Sid": huge, "Effect": "Allow", "Principal": "*",
            "Action": "kms:*", "Resource": "*", huge.clone(): 1}));
        assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
        let e = parse_err(&format!(r#"{{"{huge}":1,"{huge}":2}}"#));
        assert!(e.to_string().len() < 300, "{} bytes", e.to_string().len());
    }

    // --- lockout -----------------------------------------------------------------------------

    #[test]
    fn policy_allowing_only_decrypt_locks_the_admin_out() {
        let admin = user(ACCOUNT, "admin");
        let policy = single(
            "Allow",
            json!({"AWS": admin.arn}),
            json!("kms:Decrypt"),
            json!({}),
        );
        assert!(policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, false, &|_| true));
    }

    #[test]
    fn default_policy_does_not_lock_out_when_the_account_grants_access() {
        let admin = user(ACCOUNT, "admin");
        let policy = policy_from(&KeyPolicy::default_document(ACCOUNT));
        assert!(!policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, false, &|_| true));
        // If the account's own permissions do not let the caller in, it is locked out.
        assert!(policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, false, &|_| false));
    }

    #[test]
    fn deny_on_put_key_policy_for_the_caller_locks_out() {
        let admin = user(ACCOUNT, "admin");
        let policy = policy(json!({"Statement": [
            {"Effect": "Allow", "Principal": {"AWS": admin.arn}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Deny", "Principal": {"AWS": admin.arn}, "Action": "kms:PutKeyPolicy", "Resource": "*"},
        ]}));
        assert!(policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, false, &|_| true));
        let other = user(ACCOUNT, "other-admin");
        let others_view = single(
            "Allow",
            json!({"AWS": other.arn}),
            json!("kms:*"),
            json!({}),
        );
        assert!(!others_view.would_lock_out(&other, KEY_ARN, ACCOUNT, false, &|_| false));
    }

    #[test]
    fn lockout_check_asks_about_put_key_policy_on_this_key() {
        let admin = user(ACCOUNT, "admin");
        let policy = policy_from(&KeyPolicy::default_document(ACCOUNT));
        let asked = std::cell::RefCell::new(Vec::new());
        let delegate = |request: &KmsRequest<'_>| {
            asked.borrow_mut().push((
                request.action.to_owned(),
                request.resource_arn.to_owned(),
                request.key_account_id.to_owned(),
                request.context.len(),
            ));
            true
        };
        assert!(!policy.would_lock_out(&admin, KEY_ARN, ACCOUNT, false, &delegate));
        assert_eq!(
            *asked.borrow(),
            vec![(
                "kms:PutKeyPolicy".to_owned(),
                KEY_ARN.to_owned(),
                ACCOUNT.to_owned(),
                0
            )]
        );
    }

    // --- wildcard matching -------------------------------------------------------------------

    #[test]
    fn wildcard_match_cases() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "a", false),
            ("a", "", false),
            ("?", "", false),
            ("?", "é", true),
            ("a*b", "ab", true),
            ("a*b", "axxb", true),
            ("a*b", "axxbc", false),
            ("a*b*c", "abxbxc", true),
            ("*a*a*", "banana", true),
            ("a**", "a", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("ABC", "abc", false),
            ("*x", "xxxxxxy", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                wildcard_match(pattern, text),
                expected,
                "{pattern:?} vs {text:?}"
            );
        }
    }

    /// A slow, obviously-correct matcher to check the fast one against.
    fn reference_match(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('*', rest)) => (0..=text.len()).any(|skip| reference_match(rest, &text[skip..])),
            Some((&want, rest)) => match text.split_first() {
                Some((&got, tail)) => (want == '?' || want == got) && reference_match(rest, tail),
                None => false,
            },
        }
    }

    // --- properties --------------------------------------------------------------------------

    fn arb_principal() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            Just(json!("*")),
            Just(json!({"AWS": "*"})),
            Just(json!({"AWS": ACCOUNT})),
            Just(json!({"AWS": format!("arn:aws:iam::{OTHER_ACCOUNT}:root")})),
            Just(json!({"AWS": [alice().arn, user(ACCOUNT, "bob").arn]})),
        ]
    }

    fn arb_action_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            Just("kms:*".to_owned()),
            Just("kms:Decrypt".to_owned()),
            Just("KMS:gen*".to_owned()),
            Just("kms:?ncrypt".to_owned()),
        ]
    }

    fn arb_condition() -> impl Strategy<Value = serde_json::Value> {
        let operator = prop_oneof![
            Just("StringEquals"),
            Just("StringNotEquals"),
            Just("StringLike"),
            Just("ForAnyValue:StringLike"),
            Just("ForAllValues:StringEquals"),
            Just("StringEqualsIfExists"),
        ];
        let key = prop_oneof![
            Just("kms:EncryptionContext:Team"),
            Just("kms:EncryptionContextKeys"),
            Just("kms:CallerAccount"),
            Just("kms:ViaService"),
        ];
        prop_oneof![
            Just(json!({})),
            (operator, key, "[a-c*]{1,3}").prop_map(|(op, key, value)| json!({op: {key: value}})),
            Just(json!({"Null": {"kms:EncryptionContextKeys": "true"}})),
        ]
    }

    fn arb_statement() -> impl Strategy<Value = serde_json::Value> {
        (
            prop_oneof![Just("Allow"), Just("Deny")],
            arb_principal(),
            proptest::collection::vec(arb_action_pattern(), 1..3),
            any::<bool>(),
            prop_oneof![
                Just(json!("*")),
                Just(json!(KEY_ARN)),
                Just(json!("arn:aws:kms:*:*:key/other"))
            ],
            arb_condition(),
        )
            .prop_map(
                |(effect, principal, actions, not_action, resource, condition)| {
                    let action_field = if not_action { "NotAction" } else { "Action" };
                    json!({"Effect": effect, "Principal": principal, action_field: actions,
                       "Resource": resource, "Condition": condition})
                },
            )
    }

    fn arb_request() -> impl Strategy<Value = (Principal, String, BTreeMap<String, String>, bool)> {
        (
            prop_oneof![
                Just(alice()),
                Just(user(ACCOUNT, "bob")),
                Just(user(OTHER_ACCOUNT, "mallory"))
            ],
            prop_oneof![
                Just("kms:Decrypt".to_owned()),
                Just("kms:Encrypt".to_owned()),
                Just("kms:GenerateDataKey".to_owned()),
                Just("kms:PutKeyPolicy".to_owned())
            ],
            proptest::collection::btree_map("Team|Stage|[a-c]", "[a-c]{0,2}", 0..3),
            any::<bool>(),
        )
    }

    proptest! {
        #[test]
        fn wildcard_match_agrees_with_reference(pattern in "[ab*?]{0,8}", text in "[ab]{0,10}") {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            prop_assert_eq!(wildcard_match(&pattern, &text), reference_match(&p, &t));
        }

        #[test]
        fn explicit_deny_star_always_wins(
            statements in proptest::collection::vec(arb_statement(), 0..5),
            position in any::<prop::sample::Index>(),
            (who, action, ctx, delegate) in arb_request(),
        ) {
            let mut statements = statements;
            let at = position.index(statements.len() + 1);
            statements.insert(at, json!({"Effect": "Deny", "Principal": "*", "Action": "*", "Resource": "*"}));
            let document = json!({"Version": "2012-10-17", "Statement": statements}).to_string();
            let policy = KeyPolicy::parse(&document);
            prop_assert!(policy.is_ok(), "{:?}", policy.err());
            if let Ok(policy) = policy {
                let request = AccessRequest {
                    principal: &who,
                    action: &action,
                    resource_arn: KEY_ARN,
                    context: &ctx,
                    key_account_id: ACCOUNT,
                    secure_transport: false,
                };
                prop_assert_eq!(policy.evaluate(&request, &|_| delegate), Decision::ExplicitDeny);
                prop_assert!(policy.would_lock_out(&who, KEY_ARN, ACCOUNT, false, &|_| delegate));
            }
        }

        #[test]
        fn without_deny_statements_nothing_is_explicitly_denied(
            statements in proptest::collection::vec(arb_statement(), 1..5),
            (who, action, ctx, delegate) in arb_request(),
        ) {
            let allows: Vec<_> = statements.into_iter()
                .filter(|s| s["Effect"] == "Allow")
                .collect();
            prop_assume!(!allows.is_empty());
            let document = json!({"Statement": allows}).to_string();
            let policy = KeyPolicy::parse(&document);
            prop_assert!(policy.is_ok(), "{:?}", policy.err());
            if let Ok(policy) = policy {
                let request = AccessRequest {
                    principal: &who,
                    action: &action,
                    resource_arn: KEY_ARN,
                    context: &ctx,
                    key_account_id: ACCOUNT,
                    secure_transport: false,
                };
                prop_assert_ne!(policy.evaluate(&request, &|_| delegate), Decision::ExplicitDeny);
            }
        }

        #[test]
        fn parse_never_panics(input in "\\PC{0,200}") {
            let _ = KeyPolicy::parse(&input);
        }
    }
}
