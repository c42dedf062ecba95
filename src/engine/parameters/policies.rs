//! Parameter policies, as PutParameter's `Policies` writes them: a JSON list of
//! `{"Type", "Version", "Attributes"}` objects, at most one of each type.
//!
//! - `Expiration` `{"Timestamp": RFC 3339}`: the parameter is deleted then;
//! - `ExpirationNotification` `{"Before": N, "Unit": "Days"|"Hours"}`: a notification N units
//!   before the expiration (so it needs an Expiration policy);
//! - `NoChangeNotification` `{"After": N, "Unit": "Days"|"Hours"}`: a notification when the
//!   parameter has not changed for N units.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The longest Policies text AWS accepts.
pub const MAX_POLICIES_LEN: usize = 4096;
/// Policies a parameter may carry (AWS's limit; one of each type leaves three in practice).
pub const MAX_POLICIES: usize = 10;
/// The longest notification lead or delay: ten years, in hours, well inside `i64` seconds.
const MAX_UNITS_HOURS: i64 = 10 * 366 * 24;

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    Type(String),
    #[error("{0}")]
    Attribute(String),
    #[error("{0}")]
    Incompatible(String),
    #[error("A parameter can have at most {MAX_POLICIES} policies.")]
    TooMany,
}

/// What a policy does, parsed once when it is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum PolicyKind {
    /// Delete the parameter at `at` (seconds since the epoch).
    Expiration { at: i64 },
    /// Notify `before` seconds ahead of the expiration.
    ExpirationNotification { before: i64 },
    /// Notify when the parameter has not changed for `after` seconds.
    NoChangeNotification { after: i64 },
}

impl PolicyKind {
    /// AWS's PolicyType.
    pub fn aws_name(&self) -> &'static str {
        match self {
            PolicyKind::Expiration { .. } => "Expiration",
            PolicyKind::ExpirationNotification { .. } => "ExpirationNotification",
            PolicyKind::NoChangeNotification { .. } => "NoChangeNotification",
        }
    }
}

/// A policy on record: its text as written, what it does, and the due time it last fired for
/// (a notification fires once per due time, across restarts).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredPolicy {
    pub text: String,
    pub kind: PolicyKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fired_for: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct PolicyShape {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    attributes: serde_json::Map<String, serde_json::Value>,
}

/// Parses the Policies text of PutParameter; `now` refuses expirations already past.
pub fn parse(text: &str, now: i64) -> Result<Vec<StoredPolicy>, PolicyError> {
    if text.len() > MAX_POLICIES_LEN {
        return Err(PolicyError::Attribute(format!(
            "Policies must be at most {MAX_POLICIES_LEN} characters."
        )));
    }
    let shapes: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|_| {
        PolicyError::Attribute("Policies must be a JSON list of policy objects.".into())
    })?;
    if shapes.len() > MAX_POLICIES {
        return Err(PolicyError::TooMany);
    }
    let mut parsed: Vec<StoredPolicy> = Vec::with_capacity(shapes.len());
    for value in shapes {
        let shape: PolicyShape = serde_json::from_value(value.clone()).map_err(|_| {
            PolicyError::Attribute("A policy is an object of Type, Version and Attributes.".into())
        })?;
        if shape
            .version
            .as_deref()
            .is_some_and(|version| version != "1.0")
        {
            return Err(PolicyError::Attribute(
                "The only policy Version is 1.0.".into(),
            ));
        }
        let kind = match shape.kind.as_str() {
            "Expiration" => {
                only_attributes(&shape.attributes, &["Timestamp"])?;
                let at = shape
                    .attributes
                    .get("Timestamp")
                    .and_then(serde_json::Value::as_str)
                    .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
                    .map(OffsetDateTime::unix_timestamp)
                    .ok_or_else(|| {
                        PolicyError::Attribute(
                            "An Expiration policy needs a Timestamp in ISO 8601 (RFC 3339) format."
                                .into(),
                        )
                    })?;
                if at <= now {
                    return Err(PolicyError::Attribute(
                        "The Timestamp of an Expiration policy must be in the future.".into(),
                    ));
                }
                PolicyKind::Expiration { at }
            }
            "ExpirationNotification" => {
                only_attributes(&shape.attributes, &["Before", "Unit"])?;
                PolicyKind::ExpirationNotification {
                    before: duration(&shape.attributes, "Before")?,
                }
            }
            "NoChangeNotification" => {
                only_attributes(&shape.attributes, &["After", "Unit"])?;
                PolicyKind::NoChangeNotification {
                    after: duration(&shape.attributes, "After")?,
                }
            }
            _ => {
                return Err(PolicyError::Type(
                    "The policy type is not supported. Parameter Store supports the following policy types: Expiration, ExpirationNotification, and NoChangeNotification.".into(),
                ));
            }
        };
        if parsed
            .iter()
            .any(|policy| policy.kind.aws_name() == kind.aws_name())
        {
            return Err(PolicyError::Incompatible(format!(
                "A parameter can have only one {} policy.",
                kind.aws_name()
            )));
        }
        parsed.push(StoredPolicy {
            text: value.to_string(),
            kind,
            fired_for: None,
        });
    }
    let expiration = parsed.iter().find_map(|policy| match policy.kind {
        PolicyKind::Expiration { at } => Some(at),
        _ => None,
    });
    for policy in &parsed {
        if let PolicyKind::ExpirationNotification { .. } = policy.kind
            && expiration.is_none()
        {
            return Err(PolicyError::Incompatible(
                "An ExpirationNotification policy needs an Expiration policy.".into(),
            ));
        }
    }
    Ok(parsed)
}

fn only_attributes(
    attributes: &serde_json::Map<String, serde_json::Value>,
    allowed: &[&str],
) -> Result<(), PolicyError> {
    if attributes.keys().all(|key| allowed.contains(&key.as_str())) {
        Ok(())
    } else {
        Err(PolicyError::Attribute(format!(
            "The policy's Attributes may only be {}.",
            allowed.join(", ")
        )))
    }
}

/// `Before` or `After` with its `Unit`, in seconds.
fn duration(
    attributes: &serde_json::Map<String, serde_json::Value>,
    member: &str,
) -> Result<i64, PolicyError> {
    let count = match attributes.get(member) {
        Some(serde_json::Value::String(text)) => text.parse::<i64>().ok(),
        Some(serde_json::Value::Number(number)) => number.as_i64(),
        _ => None,
    };
    let unit = match attributes.get("Unit").and_then(serde_json::Value::as_str) {
        Some("Days") => DAY,
        Some("Hours") => HOUR,
        _ => {
            return Err(PolicyError::Attribute(
                "The policy's Unit must be Days or Hours.".into(),
            ));
        }
    };
    let hours = count
        .filter(|count| *count >= 1)
        .and_then(|count| count.checked_mul(unit / HOUR))
        .filter(|hours| *hours <= MAX_UNITS_HOURS)
        .ok_or_else(|| {
            PolicyError::Attribute(format!(
                "{member} must be a whole number of units, at least 1 and at most ten years."
            ))
        })?;
    Ok(hours * HOUR)
}

/// What a policy's firing is called: in audit lines, and as the CloudEvents type
/// `dev.coffer.parameter.<kind>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NotificationKind {
    /// The parameter was deleted by its Expiration policy.
    Expired,
    ExpirationNotification,
    NoChangeNotification,
}

impl NotificationKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Expired => "expired",
            NotificationKind::ExpirationNotification => "expiration-notification",
            NotificationKind::NoChangeNotification => "no-change-notification",
        }
    }
}

/// A policy that fired: what the server writes to the audit log and sends to its webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParameterNotification {
    pub namespace: String,
    pub name: String,
    pub arn: String,
    pub kind: NotificationKind,
    /// When it was due, in seconds since the epoch.
    pub due: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn the_three_policy_types_parse_with_their_units() {
        let parsed = parse(
            r#"[{"Type":"Expiration","Version":"1.0","Attributes":{"Timestamp":"2030-01-01T00:00:00.000Z"}},
                {"Type":"ExpirationNotification","Version":"1.0","Attributes":{"Before":"2","Unit":"Days"}},
                {"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":3,"Unit":"Hours"}}]"#,
            NOW,
        )
        .unwrap();
        assert_eq!(parsed[0].kind, PolicyKind::Expiration { at: 1_893_456_000 });
        assert_eq!(
            parsed[1].kind,
            PolicyKind::ExpirationNotification { before: 2 * DAY }
        );
        assert_eq!(
            parsed[2].kind,
            PolicyKind::NoChangeNotification { after: 3 * HOUR }
        );
        assert!(parse("[]", NOW).unwrap().is_empty());
    }

    #[test]
    fn bad_policies_are_refused_by_kind() {
        let cases = [
            (r#"[{"Type":"Rotate","Attributes":{}}]"#, "type"),
            (
                r#"[{"Type":"Expiration","Attributes":{"Timestamp":"soon"}}]"#,
                "attr",
            ),
            (
                r#"[{"Type":"Expiration","Attributes":{"Timestamp":"2020-01-01T00:00:00Z"}}]"#,
                "attr",
            ),
            (
                r#"[{"Type":"NoChangeNotification","Attributes":{"After":"0","Unit":"Days"}}]"#,
                "attr",
            ),
            (
                r#"[{"Type":"NoChangeNotification","Attributes":{"After":"1","Unit":"Weeks"}}]"#,
                "attr",
            ),
            (
                r#"[{"Type":"NoChangeNotification","Attributes":{"After":"99999999","Unit":"Days"}}]"#,
                "attr",
            ),
            (
                r#"[{"Type":"ExpirationNotification","Attributes":{"Before":"1","Unit":"Days"}}]"#,
                "incompatible",
            ),
            (
                r#"[{"Type":"NoChangeNotification","Attributes":{"After":"1","Unit":"Days"}},
                    {"Type":"NoChangeNotification","Attributes":{"After":"2","Unit":"Days"}}]"#,
                "incompatible",
            ),
            ("{}", "attr"),
            ("not json", "attr"),
        ];
        for (text, kind) in cases {
            let err = parse(text, NOW).unwrap_err();
            let got = match err {
                PolicyError::Type(_) => "type",
                PolicyError::Attribute(_) => "attr",
                PolicyError::Incompatible(_) => "incompatible",
                PolicyError::TooMany => "many",
            };
            assert_eq!(got, kind, "{text}: {err}");
        }
    }
}
