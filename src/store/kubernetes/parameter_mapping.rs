//! How a parameter record and a Parameter resource correspond.
//!
//! The spec declares the type, the value of a String or StringList (configuration, so it may
//! sit in the spec) or the source of a SecureString, the key, tier, pattern, data type,
//! description and policies. A change made through the API is written back into the spec
//! ([`spec_mirror`]) so that the reconciler does not undo it; a new SecureString value put
//! through the API on a Parameter that declares a source is refused, since the spec cannot
//! show it and the source would win back.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::engine::parameters::{ParameterRecord, ParameterType as EngineType, Tier};
use crate::resources::common::{KeyReference, Time};
use crate::resources::parameter::{
    Parameter, ParameterDataType, ParameterPolicy, ParameterPolicyType, ParameterSpec,
    ParameterTier, ParameterType, PolicyTimeUnit,
};
use crate::store::StoreError;

pub fn engine_type(type_: ParameterType) -> EngineType {
    match type_ {
        ParameterType::String => EngineType::String,
        ParameterType::StringList => EngineType::StringList,
        ParameterType::SecureString => EngineType::SecureString,
    }
}

fn resource_type(type_: EngineType) -> ParameterType {
    match type_ {
        EngineType::String => ParameterType::String,
        EngineType::StringList => ParameterType::StringList,
        EngineType::SecureString => ParameterType::SecureString,
    }
}

/// The tier as PutParameter takes it.
pub fn engine_tier(tier: ParameterTier) -> &'static str {
    match tier {
        ParameterTier::Standard => "Standard",
        ParameterTier::Advanced => "Advanced",
        ParameterTier::IntelligentTiering => "Intelligent-Tiering",
    }
}

pub fn resource_tier(tier: Tier) -> ParameterTier {
    match tier {
        Tier::Standard => ParameterTier::Standard,
        Tier::Advanced => ParameterTier::Advanced,
    }
}

pub fn data_type(data_type: ParameterDataType) -> &'static str {
    match data_type {
        ParameterDataType::Text => "text",
        ParameterDataType::AwsEc2Image => "aws:ec2:image",
        ParameterDataType::AwsSsmIntegration => "aws:ssm:integration",
    }
}

fn resource_data_type(text: &str) -> ParameterDataType {
    match text {
        "aws:ec2:image" => ParameterDataType::AwsEc2Image,
        "aws:ssm:integration" => ParameterDataType::AwsSsmIntegration,
        _ => ParameterDataType::Text,
    }
}

fn unit(unit: Option<PolicyTimeUnit>) -> &'static str {
    match unit.unwrap_or_default() {
        PolicyTimeUnit::Days => "Days",
        PolicyTimeUnit::Hours => "Hours",
    }
}

/// The spec's policies as PutParameter takes them (a JSON list), `None` for none.
pub fn policies_text(policies: &[ParameterPolicy]) -> Option<String> {
    if policies.is_empty() {
        return None;
    }
    let list: Vec<Value> = policies
        .iter()
        .map(|policy| match policy.type_ {
            ParameterPolicyType::Expiration => json!({
                "Type": "Expiration",
                "Version": "1.0",
                "Attributes": {"Timestamp": policy.timestamp.as_ref().map(|time| time.0.to_string())},
            }),
            ParameterPolicyType::ExpirationNotification => json!({
                "Type": "ExpirationNotification",
                "Version": "1.0",
                "Attributes": {
                    "Before": policy.before.unwrap_or_default().to_string(),
                    "Unit": unit(policy.unit),
                },
            }),
            ParameterPolicyType::NoChangeNotification => json!({
                "Type": "NoChangeNotification",
                "Version": "1.0",
                "Attributes": {
                    "After": policy.after.unwrap_or_default().to_string(),
                    "Unit": unit(policy.unit),
                },
            }),
        })
        .collect();
    Some(Value::Array(list).to_string())
}

/// A stored policy (one JSON object of PutParameter's list) as the spec shows it.
fn spec_policy(text: &str) -> Option<ParameterPolicy> {
    let value: Value = serde_json::from_str(text).ok()?;
    let attributes = value.get("Attributes")?;
    let number = |name: &str| {
        attributes.get(name).and_then(|value| match value {
            Value::String(text) => text.parse().ok(),
            Value::Number(number) => number.as_i64().and_then(|n| i32::try_from(n).ok()),
            _ => None,
        })
    };
    let time_unit = match attributes.get("Unit").and_then(Value::as_str) {
        Some("Hours") => Some(PolicyTimeUnit::Hours),
        _ => Some(PolicyTimeUnit::Days),
    };
    let empty = ParameterPolicy {
        type_: ParameterPolicyType::Expiration,
        timestamp: None,
        before: None,
        after: None,
        unit: None,
    };
    Some(match value.get("Type")?.as_str()? {
        "Expiration" => ParameterPolicy {
            timestamp: attributes
                .get("Timestamp")
                .and_then(Value::as_str)
                .and_then(|text| text.parse().ok())
                .map(Time),
            ..empty
        },
        "ExpirationNotification" => ParameterPolicy {
            type_: ParameterPolicyType::ExpirationNotification,
            before: number("Before"),
            unit: time_unit,
            ..empty
        },
        "NoChangeNotification" => ParameterPolicy {
            type_: ParameterPolicyType::NoChangeNotification,
            after: number("After"),
            unit: time_unit,
            ..empty
        },
        _ => return None,
    })
}

/// The plain value of the latest version of a String or StringList record.
fn latest_plain(record: &ParameterRecord, slots: &BTreeMap<String, Vec<u8>>) -> Option<String> {
    (record.type_ != EngineType::SecureString)
        .then(|| slots.get(&ParameterRecord::plain_slot(record.version)))
        .flatten()
        .and_then(|bytes| String::from_utf8(bytes.clone()).ok())
}

fn has_source(spec: &ParameterSpec) -> bool {
    spec.sealed_value.is_some() || spec.from_secret.is_some()
}

/// The spec of a resource made for a parameter that has none (made through the API).
pub fn spec_for_record(
    record: &ParameterRecord,
    slots: &BTreeMap<String, Vec<u8>>,
) -> ParameterSpec {
    ParameterSpec {
        name: record.name.clone(),
        type_: resource_type(record.type_),
        value: latest_plain(record, slots),
        sealed_value: None,
        from_secret: None,
        kms_key_ref: key_ref(record),
        tier: resource_tier(record.tier),
        allowed_pattern: record.allowed_pattern.clone(),
        data_type: resource_data_type(&record.data_type),
        description: record.description.clone(),
        policies: record
            .policies
            .iter()
            .filter_map(|policy| spec_policy(&policy.text))
            .collect(),
        sync: None,
    }
}

/// A SecureString's key as the spec names it: none for the managed key.
fn key_ref(record: &ParameterRecord) -> Option<KeyReference> {
    record
        .key_id
        .as_ref()
        .filter(|key| record.type_ == EngineType::SecureString && *key != "alias/aws/ssm")
        .map(|key| KeyReference { name: key.clone() })
}

/// The merge patch that brings a resource's spec to what the record holds, or `None` when
/// they agree. A SecureString version written by someone else than the controller on a
/// Parameter that declares a source is refused.
pub fn spec_mirror(
    record: &ParameterRecord,
    slots: &BTreeMap<String, Vec<u8>>,
    resource: &Parameter,
    controller: &str,
) -> Result<Option<Value>, StoreError> {
    let spec = &resource.spec;
    let written_by_controller = record
        .versions
        .get(&record.version)
        .is_some_and(|version| version.modified_by == controller);
    if record.type_ == EngineType::SecureString && has_source(spec) && !written_by_controller {
        return Err(StoreError::Refused(format!(
            "Parameter {} takes its value from the {} of its Parameter resource; change it there.",
            record.name,
            if spec.sealed_value.is_some() {
                "sealedValue"
            } else {
                "fromSecret"
            }
        )));
    }
    let made = spec_for_record(record, slots);
    let mut patch = Map::new();
    if made.type_ != spec.type_ {
        patch.insert("type".into(), json!(made.type_));
    }
    if made.type_ != ParameterType::SecureString && made.value != spec.value {
        patch.insert("value".into(), json!(made.value));
    }
    if made.type_ == ParameterType::SecureString && spec.value.is_some() {
        patch.insert("value".into(), Value::Null);
    }
    if made.type_ != ParameterType::SecureString && has_source(spec) {
        patch.insert("sealedValue".into(), Value::Null);
        patch.insert("fromSecret".into(), Value::Null);
    }
    if made.kms_key_ref != spec.kms_key_ref {
        patch.insert("kmsKeyRef".into(), json!(made.kms_key_ref));
    }
    let tier_agrees = spec.tier == made.tier
        || (spec.tier == ParameterTier::IntelligentTiering && made.tier == ParameterTier::Standard)
        || (spec.tier == ParameterTier::IntelligentTiering && made.tier == ParameterTier::Advanced);
    if !tier_agrees {
        patch.insert("tier".into(), json!(made.tier));
    }
    if made.allowed_pattern != spec.allowed_pattern {
        patch.insert("allowedPattern".into(), json!(made.allowed_pattern));
    }
    if made.data_type != spec.data_type {
        patch.insert("dataType".into(), json!(made.data_type));
    }
    if made.description != spec.description {
        patch.insert("description".into(), json!(made.description));
    }
    if policies_text(&made.policies) != policies_text(&spec.policies) {
        patch.insert("policies".into(), json!(made.policies));
    }
    Ok((!patch.is_empty()).then(|| json!({ "spec": patch })))
}
