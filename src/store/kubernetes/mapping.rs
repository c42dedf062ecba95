//! How a KMS key record and a KmsKey resource correspond.
//!
//! The resource's spec declares description, enabled, rotation and policy; the engine's record
//! carries the same facts. The reconciler turns a spec into a [`DeclaredKey`]; when the API changes
//! one of those facts, the store writes it back into the spec ([`spec_mirror`]), so spec and
//! record never disagree for long and the reconciler does not undo the API's change. The two
//! directions must round-trip exactly, or the reconciler and the store would take turns.

use serde_json::{Map, Value, json};

use crate::engine::account::account_id;
use crate::engine::kms::model::{
    KeyRecord, KeySpec as EngineSpec, KeyState, KeyUsage as EngineUsage, Origin,
};
use crate::engine::kms::policy::KeyPolicy as PolicyDocument;
use crate::engine::kms::{DeclaredKey, DeclaredRotation};
use crate::resources::kmskey::{
    DEFAULT_ROTATION_PERIOD_DAYS, Effect, KeyOrigin, KeyPolicy, KeyRotation, KeySpec, KeyUsage,
    KmsKeySpec, MAX_DELETION_WINDOW_DAYS,
};

pub fn engine_spec(spec: KeySpec) -> EngineSpec {
    match spec {
        KeySpec::SymmetricDefault => EngineSpec::SymmetricDefault,
        KeySpec::Rsa2048 => EngineSpec::Rsa2048,
        KeySpec::Rsa3072 => EngineSpec::Rsa3072,
        KeySpec::Rsa4096 => EngineSpec::Rsa4096,
        KeySpec::EccNistP256 => EngineSpec::EccNistP256,
        KeySpec::EccNistP384 => EngineSpec::EccNistP384,
    }
}

pub fn resource_spec(spec: EngineSpec) -> KeySpec {
    match spec {
        EngineSpec::SymmetricDefault => KeySpec::SymmetricDefault,
        EngineSpec::Rsa2048 => KeySpec::Rsa2048,
        EngineSpec::Rsa3072 => KeySpec::Rsa3072,
        EngineSpec::Rsa4096 => KeySpec::Rsa4096,
        EngineSpec::EccNistP256 => KeySpec::EccNistP256,
        EngineSpec::EccNistP384 => KeySpec::EccNistP384,
    }
}

pub fn engine_usage(usage: KeyUsage) -> EngineUsage {
    match usage {
        KeyUsage::EncryptDecrypt => EngineUsage::EncryptDecrypt,
        KeyUsage::SignVerify => EngineUsage::SignVerify,
    }
}

pub fn resource_usage(usage: EngineUsage) -> KeyUsage {
    match usage {
        EngineUsage::EncryptDecrypt => KeyUsage::EncryptDecrypt,
        EngineUsage::SignVerify => KeyUsage::SignVerify,
    }
}

pub fn engine_origin(origin: KeyOrigin) -> Origin {
    match origin {
        KeyOrigin::Coffer => Origin::Generated,
        KeyOrigin::External => Origin::External,
    }
}

pub fn resource_origin(origin: Origin) -> KeyOrigin {
    match origin {
        Origin::Generated => KeyOrigin::Coffer,
        Origin::External => KeyOrigin::External,
    }
}

/// What a KmsKey in `namespace` declares.
pub fn declared_key(namespace: &str, spec: &KmsKeySpec) -> DeclaredKey {
    DeclaredKey {
        description: spec.description.clone().unwrap_or_default(),
        key_spec: engine_spec(spec.key_spec),
        key_usage: engine_usage(spec.key_usage),
        origin: engine_origin(spec.origin),
        enabled: spec.enabled,
        rotation: spec.rotation.as_ref().map(|rotation| DeclaredRotation {
            enabled: rotation.enabled,
            period_days: u32::try_from(rotation.period_days).unwrap_or(0),
        }),
        policy: declared_policy(namespace, spec),
        // The CRD's schema keeps it within 7 to 30; the engine checks again.
        deletion_window_days: u32::try_from(spec.deletion_window_days).unwrap_or(0),
    }
}

/// The AWS policy document a spec declares; `None` for the default policy.
fn declared_policy(namespace: &str, spec: &KmsKeySpec) -> Option<String> {
    if let Some(document) = &spec.policy_document {
        return Some(document.clone());
    }
    spec.policy
        .as_ref()
        .map(|policy| translate_policy(namespace, policy))
}

/// Writes a structured key policy as the AWS policy document the engine evaluates.
///
/// - `system:serviceaccount:NS:NAME` is the principal `arn:aws:iam::ACCOUNT(NS):role/serviceaccount/NAME`;
/// - `system:serviceaccounts:NS` is any principal of account `ACCOUNT(NS)`
///   (`kms:CallerAccount`), in a statement of its own;
/// - `*` is any principal.
///
/// `callerNamespace` becomes a `kms:CallerAccount` condition, and `encryptionContextEquals`
/// `kms:EncryptionContext:KEY` conditions.
pub fn translate_policy(_namespace: &str, policy: &KeyPolicy) -> String {
    let mut statements = Vec::new();
    for (index, statement) in policy.statements.iter().enumerate() {
        let sid = statement
            .sid
            .clone()
            .unwrap_or_else(|| format!("statement-{}", index + 1));
        let effect = match statement.effect {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        };
        let callers: Vec<String> = statement
            .conditions
            .iter()
            .flat_map(|conditions| conditions.caller_namespace.iter())
            .map(|namespace| account_id(namespace))
            .collect();
        let mut base_conditions = Map::new();
        if let Some(conditions) = &statement.conditions {
            for (key, value) in &conditions.encryption_context_equals {
                base_conditions.insert(format!("kms:EncryptionContext:{key}"), json!(value));
            }
        }
        let build = |principal: Value, account: Option<&str>| {
            let mut equals = base_conditions.clone();
            match account {
                Some(account) => {
                    equals.insert("kms:CallerAccount".into(), json!(account));
                }
                None if !callers.is_empty() => {
                    equals.insert("kms:CallerAccount".into(), json!(callers));
                }
                None => {}
            }
            let mut statement = json!({
                "Effect": effect,
                "Principal": principal,
                "Action": statement.actions,
                "Resource": "*",
            });
            if !equals.is_empty()
                && let Some(object) = statement.as_object_mut()
            {
                object.insert("Condition".into(), json!({ "StringEquals": equals }));
            }
            statement
        };
        let mut roles = Vec::new();
        let mut parts = Vec::new();
        for principal in &statement.principals {
            if principal == "*" {
                parts.push(build(json!("*"), None));
            } else if let Some(namespace) = principal.strip_prefix("system:serviceaccounts:") {
                let account = account_id(namespace);
                // A namespace outside callerNamespace can never match: leave it out.
                if callers.is_empty() || callers.contains(&account) {
                    parts.push(build(json!("*"), Some(&account)));
                }
            } else if let Some(rest) = principal.strip_prefix("system:serviceaccount:")
                && let Some((namespace, name)) = rest.split_once(':')
            {
                roles.push(format!(
                    "arn:aws:iam::{}:role/serviceaccount/{name}",
                    account_id(namespace)
                ));
            }
        }
        if !roles.is_empty() {
            parts.insert(0, build(json!({ "AWS": roles }), None));
        }
        let single = parts.len() == 1;
        for (part_index, mut part) in parts.into_iter().enumerate() {
            let part_sid = if single {
                sid.clone()
            } else {
                format!("{sid}-{}", part_index + 1)
            };
            if let Some(object) = part.as_object_mut() {
                object.insert("Sid".into(), json!(part_sid));
            }
            statements.push(part);
        }
    }
    json!({ "Version": "2012-10-17", "Statement": statements }).to_string()
}

/// The rotation a record's settings show as in a spec.
fn record_rotation(record: &KeyRecord) -> Option<KeyRotation> {
    (record.rotation_enabled || record.rotation_period_days.is_some()).then(|| KeyRotation {
        enabled: record.rotation_enabled,
        period_days: record
            .rotation_period_days
            .and_then(|days| i32::try_from(days).ok())
            .unwrap_or(DEFAULT_ROTATION_PERIOD_DAYS),
    })
}

/// The merge patch that brings `spec` to what `record` holds, or `None` when they agree.
pub fn spec_mirror(namespace: &str, record: &KeyRecord, spec: &KmsKeySpec) -> Option<Value> {
    let mut patch = Map::new();
    let enabled = match record.state {
        KeyState::Enabled => true,
        KeyState::Disabled => false,
        KeyState::PendingDeletion | KeyState::PendingImport => spec.enabled,
    };
    if enabled != spec.enabled {
        patch.insert("enabled".into(), json!(enabled));
    }
    let description = (!record.description.is_empty()).then(|| record.description.clone());
    if description != spec.description {
        patch.insert("description".into(), json!(description));
    }
    let rotation = record_rotation(record);
    if rotation != spec.rotation {
        patch.insert("rotation".into(), json!(rotation));
    }
    let declared = declared_policy(namespace, spec)
        .unwrap_or_else(|| PolicyDocument::default_document(&account_id(namespace)));
    if declared != record.policy {
        patch.insert("policy".into(), Value::Null);
        let is_default = record.policy == PolicyDocument::default_document(&account_id(namespace));
        patch.insert(
            "policyDocument".into(),
            if is_default {
                Value::Null
            } else {
                json!(record.policy)
            },
        );
    }
    (!patch.is_empty()).then(|| json!({ "spec": patch }))
}

/// The spec of a resource made for a key that has none (created through the API, or brought
/// back by CancelKeyDeletion).
pub fn spec_for_record(namespace: &str, record: &KeyRecord) -> KmsKeySpec {
    let is_default = record.policy == PolicyDocument::default_document(&account_id(namespace));
    KmsKeySpec {
        description: (!record.description.is_empty()).then(|| record.description.clone()),
        key_spec: resource_spec(record.key_spec),
        key_usage: resource_usage(record.key_usage),
        origin: resource_origin(record.origin),
        enabled: record.state != KeyState::Disabled,
        rotation: record_rotation(record),
        deletion_window_days: record
            .deletion_window_days
            .or(record.pending_window_days)
            .and_then(|days| i32::try_from(days).ok())
            .unwrap_or(MAX_DELETION_WINDOW_DAYS),
        policy: None,
        policy_document: (!is_default).then(|| record.policy.clone()),
        aliases: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::engine::account::account_id;
    use crate::engine::iam::{Decision, Principal};
    use crate::engine::kms::policy::KmsRequest as AccessRequest;
    use crate::resources::kmskey::{PolicyConditions, PolicyStatement};

    fn record(namespace: &str) -> KeyRecord {
        KeyRecord {
            key_id: "0b0e7c5e-8f7a-4c1e-9a59-3f1f4f7d9a10".into(),
            description: String::new(),
            key_spec: EngineSpec::SymmetricDefault,
            key_usage: EngineUsage::EncryptDecrypt,
            origin: Origin::Generated,
            state: KeyState::Enabled,
            created: 1_700_000_000,
            versions: Vec::new(),
            rotation_enabled: false,
            rotation_period_days: None,
            next_rotation: None,
            deletion_date: None,
            pending_window_days: None,
            deletion_window_days: None,
            tags: BTreeMap::new(),
            policy: PolicyDocument::default_document(&account_id(namespace)),
            public_key: None,
            pending_import: None,
            expiration_model: None,
            valid_to: None,
        }
    }

    /// Applies what the reconciler would write for `spec` to a record.
    fn as_declared(namespace: &str, spec: &KmsKeySpec, record: &mut KeyRecord) {
        let declared = declared_key(namespace, spec);
        record.description = declared.description;
        record.state = if declared.enabled {
            KeyState::Enabled
        } else {
            KeyState::Disabled
        };
        match declared.rotation {
            Some(rotation) => {
                record.rotation_enabled = rotation.enabled;
                record.rotation_period_days = Some(rotation.period_days);
            }
            None => {
                record.rotation_enabled = false;
                record.rotation_period_days = None;
            }
        }
        record.policy = declared
            .policy
            .unwrap_or_else(|| PolicyDocument::default_document(&account_id(namespace)));
    }

    fn sample_policy() -> KeyPolicy {
        KeyPolicy {
            version: Default::default(),
            statements: vec![PolicyStatement {
                sid: Some("app".into()),
                effect: Effect::Allow,
                principals: vec![
                    "system:serviceaccount:app:api".into(),
                    "system:serviceaccounts:jobs".into(),
                ],
                actions: vec!["kms:Decrypt".into()],
                conditions: Some(PolicyConditions {
                    encryption_context_equals: [("table".to_owned(), "users".to_owned())].into(),
                    caller_namespace: Vec::new(),
                }),
            }],
        }
    }

    #[test]
    fn a_declared_spec_needs_no_mirror() {
        let specs = [
            KmsKeySpec::default(),
            KmsKeySpec {
                description: Some("db".into()),
                enabled: false,
                rotation: Some(KeyRotation {
                    enabled: false,
                    period_days: 400,
                }),
                policy: Some(sample_policy()),
                ..KmsKeySpec::default()
            },
            KmsKeySpec {
                rotation: Some(KeyRotation::default()),
                policy_document: Some(PolicyDocument::default_document("111122223333")),
                ..KmsKeySpec::default()
            },
        ];
        for spec in specs {
            let mut key = record("app");
            as_declared("app", &spec, &mut key);
            assert_eq!(spec_mirror("app", &key, &spec), None, "{spec:?}");
            // A resource made from the record declares the same again.
            let made = spec_for_record("app", &key);
            let mut again = record("app");
            as_declared("app", &made, &mut again);
            assert_eq!(again, key);
        }
    }

    #[test]
    fn api_changes_are_mirrored_into_the_spec() {
        let spec = KmsKeySpec {
            policy: Some(sample_policy()),
            ..KmsKeySpec::default()
        };
        let mut key = record("app");
        as_declared("app", &spec, &mut key);
        key.state = KeyState::Disabled;
        key.description = "changed".into();
        key.rotation_enabled = true;
        key.rotation_period_days = Some(90);
        key.policy = r#"{"Version":"2012-10-17","Statement":[]}"#.into();
        let patch = spec_mirror("app", &key, &spec).expect("a patch");
        assert_eq!(
            patch,
            json!({"spec": {
                "enabled": false,
                "description": "changed",
                "rotation": {"enabled": true, "periodDays": 90},
                "policy": null,
                "policyDocument": key.policy,
            }})
        );
        // A pending deletion does not flip `enabled`.
        key.state = KeyState::PendingDeletion;
        let patch = spec_mirror("app", &key, &spec).expect("a patch");
        assert!(patch["spec"].get("enabled").is_none());
    }

    #[test]
    fn translated_policies_parse_and_decide_as_written() {
        let document = translate_policy("app", &sample_policy());
        let policy = PolicyDocument::parse(&document).expect("the translation parses");
        let decide = |namespace: &str, arn: &str, table: &str| {
            let principal = Principal {
                arn: arn.to_owned(),
                account_id: account_id(namespace),
            };
            let context = [("table".to_owned(), table.to_owned())].into();
            let request = AccessRequest {
                principal: &principal,
                action: "kms:Decrypt",
                resource_arn: "arn:aws:kms:us-east-1:111122223333:key/x",
                context: &context,
                key_account_id: &account_id("app"),
                secure_transport: false,
            };
            policy.evaluate(&request, &|_| false)
        };
        let api = format!("arn:aws:iam::{}:role/serviceaccount/api", account_id("app"));
        let other = format!("arn:aws:iam::{}:role/serviceaccount/web", account_id("app"));
        let job = format!("arn:aws:iam::{}:role/serviceaccount/x", account_id("jobs"));
        assert_eq!(decide("app", &api, "users"), Decision::Allow);
        assert_eq!(decide("app", &api, "orders"), Decision::ImplicitDeny);
        assert_eq!(decide("app", &other, "users"), Decision::ImplicitDeny);
        assert_eq!(decide("jobs", &job, "users"), Decision::Allow);
    }
}
