//! How a secret record and a Secret resource correspond.
//!
//! The spec declares description, key, resource policy and recovery window; the record carries
//! the same facts. The reconciler turns a spec into a [`DeclaredSecret`]; when the API changes
//! one of those facts, the store writes it back into the spec ([`spec_mirror`]), so that the
//! reconciler does not undo the API's change. The two directions round-trip exactly.

use serde_json::{Map, Value, json};

use crate::engine::account::account_id;
use crate::engine::secrets::rotation_rules::RotationRules;
use crate::engine::secrets::{DeclaredRotation, DeclaredSecret, RotationDeclared, SecretRecord};
use crate::resources::common::KeyReference;
use crate::resources::secret::{
    DatabaseRotation, MAX_RECOVERY_WINDOW_DAYS, ResourcePolicy, RotationStrategy, SecretRotation,
    SecretSpec,
};

/// What a Secret resource may let other namespaces do: read the value and its metadata.
const SHARED_ACTIONS: [&str; 2] = [
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
];

/// What a Secret's spec declares.
pub fn declared_secret(spec: &SecretSpec) -> DeclaredSecret {
    DeclaredSecret {
        description: spec.description.clone().unwrap_or_default(),
        kms_key_id: spec.kms_key_ref.as_ref().map(|key| key.name.clone()),
        policy: declared_policy(spec),
        recovery_window_days: i64::from(spec.recovery_window_days),
        rotation: match &spec.rotation {
            Some(rotation) => RotationDeclared::Declared(declared_rotation(spec, rotation)),
            None => RotationDeclared::Absent,
        },
    }
}

/// A spec's rotation as the engine records it: the schedule as RotationRules, and the
/// strategy's settings in the shapes of `crate::rotation`.
pub fn declared_rotation(spec: &SecretSpec, rotation: &SecretRotation) -> DeclaredRotation {
    let generate = || {
        spec.generate
            .as_ref()
            .and_then(|generate| serde_json::to_value(generate).ok())
            .unwrap_or(Value::Null)
    };
    let database = |settings: &DatabaseRotation| {
        let mut object = Map::new();
        object.insert("variant".into(), json!(settings.variant));
        object.insert("tls".into(), json!(settings.tls));
        if let Some(master) = &settings.master_secret_ref {
            object.insert("masterSecret".into(), json!(master.name));
        }
        if let Some(bundle) = &settings.ca_bundle {
            object.insert("caBundle".into(), json!(bundle));
        }
        // The password follows the spec's generate rules; a template has no say here.
        if let Some(generate) = &spec.generate {
            object.insert(
                "password".into(),
                json!({
                    "passwordLength": generate.length,
                    "excludeCharacters": generate.exclude_characters,
                    "excludeNumbers": generate.exclude_numbers,
                    "excludePunctuation": generate.exclude_punctuation,
                    "excludeUppercase": generate.exclude_uppercase,
                    "excludeLowercase": generate.exclude_lowercase,
                    "includeSpace": generate.include_space,
                    "requireEachIncludedType": generate.require_each_included_type,
                }),
            );
        }
        Value::Object(object)
    };
    let settings = match rotation.strategy {
        RotationStrategy::Generate => generate(),
        RotationStrategy::Postgres => rotation.postgres.as_ref().map_or(Value::Null, database),
        RotationStrategy::Mysql => rotation.mysql.as_ref().map_or(Value::Null, database),
        RotationStrategy::Job => rotation
            .job
            .as_ref()
            .map_or(Value::Null, |job| json!({ "template": job.template })),
        RotationStrategy::Webhook => rotation.webhook.as_ref().map_or(Value::Null, |webhook| {
            let mut object = Map::new();
            object.insert("url".into(), json!(webhook.url));
            object.insert(
                "signingSecret".into(),
                json!(webhook.signing_secret_ref.name),
            );
            if let Some(bundle) = &webhook.ca_bundle {
                object.insert("caBundle".into(), json!(bundle));
            }
            Value::Object(object)
        }),
    };
    DeclaredRotation {
        rules: RotationRules {
            automatically_after_days: None,
            schedule_expression: Some(rotation.schedule.clone()),
            duration: rotation.duration.clone(),
        },
        strategy: rotation.strategy.name().to_owned(),
        settings,
    }
}

fn declared_policy(spec: &SecretSpec) -> Option<String> {
    if let Some(document) = &spec.resource_policy_document {
        return Some(document.clone());
    }
    spec.resource_policy
        .as_ref()
        .filter(|policy| {
            !policy.allowed_namespaces.is_empty() || !policy.allowed_service_accounts.is_empty()
        })
        .map(translate_policy)
}

/// Writes a structured resource policy as the AWS policy document the engine evaluates:
/// - `allowedNamespaces` lets any principal of those accounts read (`aws:PrincipalAccount`);
/// - `allowedServiceAccounts` (`NAMESPACE/NAME`) lets the principals
///   `arn:aws:iam::ACCOUNT(NAMESPACE):role/serviceaccount/NAME` read.
pub fn translate_policy(policy: &ResourcePolicy) -> String {
    let mut statements = Vec::new();
    if !policy.allowed_namespaces.is_empty() {
        let accounts: Vec<String> = policy
            .allowed_namespaces
            .iter()
            .map(|namespace| account_id(namespace))
            .collect();
        statements.push(json!({
            "Sid": "AllowedNamespaces",
            "Effect": "Allow",
            "Principal": "*",
            "Action": SHARED_ACTIONS,
            "Resource": "*",
            "Condition": {"StringEquals": {"aws:PrincipalAccount": accounts}},
        }));
    }
    let roles: Vec<String> = policy
        .allowed_service_accounts
        .iter()
        .filter_map(|account| {
            let (namespace, name) = account.split_once('/')?;
            Some(format!(
                "arn:aws:iam::{}:role/serviceaccount/{name}",
                account_id(namespace)
            ))
        })
        .collect();
    if !roles.is_empty() {
        statements.push(json!({
            "Sid": "AllowedServiceAccounts",
            "Effect": "Allow",
            "Principal": {"AWS": roles},
            "Action": SHARED_ACTIONS,
            "Resource": "*",
        }));
    }
    json!({"Version": "2012-10-17", "Statement": statements}).to_string()
}

/// The merge patch that brings `spec` to what `record` holds, or `None` when they agree.
pub fn spec_mirror(record: &SecretRecord, spec: &SecretSpec) -> Option<Value> {
    let mut patch = Map::new();
    let description = (!record.description.is_empty()).then(|| record.description.clone());
    if description != spec.description {
        patch.insert("description".into(), json!(description));
    }
    let key = spec.kms_key_ref.as_ref().map(|key| &key.name);
    if key != record.kms_key_id.as_ref() {
        patch.insert(
            "kmsKeyRef".into(),
            json!(
                record
                    .kms_key_id
                    .as_ref()
                    .map(|name| KeyReference { name: name.clone() })
            ),
        );
    }
    if declared_policy(spec) != record.policy {
        patch.insert("resourcePolicy".into(), Value::Null);
        patch.insert("resourcePolicyDocument".into(), json!(record.policy));
    }
    (!patch.is_empty()).then(|| json!({ "spec": patch }))
}

/// The spec of a resource made for a secret that has none (made through the API, or restored
/// through it). Its value stays with the API: no source is declared.
pub fn spec_for_record(record: &SecretRecord) -> SecretSpec {
    SecretSpec {
        description: (!record.description.is_empty()).then(|| record.description.clone()),
        kms_key_ref: record
            .kms_key_id
            .as_ref()
            .map(|name| KeyReference { name: name.clone() }),
        generate: None,
        sealed_value: None,
        from_secret: None,
        rotation: None,
        resource_policy: None,
        resource_policy_document: record.policy.clone(),
        sync: None,
        recovery_window_days: record
            .recovery_window_days
            .and_then(|days| i32::try_from(days).ok())
            .unwrap_or(MAX_RECOVERY_WINDOW_DAYS),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::engine::iam::Principal;
    use crate::engine::secrets::SecretPolicy;

    fn record() -> SecretRecord {
        SecretRecord::new(
            "db",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf".into(),
            0,
        )
    }

    fn as_declared(spec: &SecretSpec, record: &mut SecretRecord) {
        let declared = declared_secret(spec);
        record.description = declared.description;
        record.kms_key_id = declared.kms_key_id;
        record.policy = declared.policy;
        record.recovery_window_days = Some(declared.recovery_window_days);
    }

    fn spec(value: Value) -> SecretSpec {
        serde_json::from_value(value).expect("a spec")
    }

    #[test]
    fn a_declared_spec_needs_no_mirror_and_a_made_spec_declares_the_same() {
        for spec in [
            spec(json!({})),
            spec(
                json!({"description": "db", "kmsKeyRef": {"name": "shared"}, "recoveryWindowDays": 7}),
            ),
            spec(
                json!({"resourcePolicy": {"allowedNamespaces": ["b"], "allowedServiceAccounts": ["c/reader"]}}),
            ),
            spec(json!({"resourcePolicy": {}})),
            spec(
                json!({"resourcePolicyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[]}"}),
            ),
        ] {
            let mut secret = record();
            as_declared(&spec, &mut secret);
            assert_eq!(spec_mirror(&secret, &spec), None, "{spec:?}");
            let made = spec_for_record(&secret);
            let mut again = record();
            as_declared(&made, &mut again);
            assert_eq!(again, secret);
        }
    }

    #[test]
    fn api_changes_are_mirrored_into_the_spec() {
        let spec =
            spec(json!({"description": "old", "resourcePolicy": {"allowedNamespaces": ["b"]}}));
        let mut secret = record();
        as_declared(&spec, &mut secret);
        secret.description = "new".into();
        secret.kms_key_id = Some("alias/app".into());
        secret.policy = Some("{\"Version\":\"2012-10-17\",\"Statement\":[]}".into());
        let patch = spec_mirror(&secret, &spec).expect("a patch");
        assert_eq!(
            patch,
            json!({"spec": {
                "description": "new",
                "kmsKeyRef": {"name": "alias/app"},
                "resourcePolicy": null,
                "resourcePolicyDocument": "{\"Version\":\"2012-10-17\",\"Statement\":[]}",
            }})
        );
        secret.description.clear();
        secret.kms_key_id = None;
        secret.policy = None;
        assert_eq!(
            spec_mirror(&secret, &spec),
            Some(json!({"spec": {
                "description": null,
                "resourcePolicy": null,
                "resourcePolicyDocument": null,
            }}))
        );
    }

    #[test]
    fn the_translated_policy_lets_in_whom_it_names_and_nobody_else() {
        let policy = translate_policy(&ResourcePolicy {
            allowed_namespaces: vec!["batch".into()],
            allowed_service_accounts: vec!["web/frontend".into()],
        });
        let parsed = SecretPolicy::parse(&policy).expect("the translation parses strictly");
        let principal = |namespace: &str, name: &str| Principal {
            arn: format!(
                "arn:aws:iam::{}:role/serviceaccount/{name}",
                account_id(namespace)
            ),
            account_id: account_id(namespace),
        };
        let decide = |principal: &Principal, action: &str| {
            parsed.evaluate(
                &crate::engine::iam::AccessRequest {
                    principal,
                    action,
                    resource_arn: "arn:aws:secretsmanager:us-east-1:111122223333:secret:db-AbCdEf",
                    context: &(),
                    key_account_id: "111122223333",
                    secure_transport: true,
                },
                &|_| false,
            )
        };
        use crate::engine::iam::Decision;
        let get = "secretsmanager:GetSecretValue";
        assert_eq!(decide(&principal("batch", "any"), get), Decision::Allow);
        assert_eq!(decide(&principal("web", "frontend"), get), Decision::Allow);
        assert_eq!(
            decide(&principal("web", "backend"), get),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&principal("other", "any"), get),
            Decision::ImplicitDeny
        );
        assert_eq!(
            decide(&principal("batch", "any"), "secretsmanager:PutSecretValue"),
            Decision::ImplicitDeny
        );
    }
}
