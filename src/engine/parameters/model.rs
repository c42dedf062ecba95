//! What a parameter is on record: its current settings, its versions and their labels. The
//! rules for versions and labels live here, free of I/O, so that a property test can hold them
//! to their invariants: a label is on one version at most; a version carries at most
//! [`MAX_LABELS_PER_VERSION`] labels; at most [`MAX_VERSIONS`] versions are kept, and a labelled
//! version is never dropped to make room.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::policies::{PolicyKind, StoredPolicy};
use crate::store::RecordKind;
use crate::store::typed::RecordMeta;

/// Versions kept per parameter, as AWS keeps them.
pub const MAX_VERSIONS: usize = 100;
/// Labels one version may carry.
pub const MAX_LABELS_PER_VERSION: usize = 10;
/// The longest label.
pub const MAX_LABEL_LEN: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ParameterType {
    String,
    StringList,
    SecureString,
}

impl ParameterType {
    pub fn as_str(self) -> &'static str {
        match self {
            ParameterType::String => "String",
            ParameterType::StringList => "StringList",
            ParameterType::SecureString => "SecureString",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "String" => Some(ParameterType::String),
            "StringList" => Some(ParameterType::StringList),
            "SecureString" => Some(ParameterType::SecureString),
            _ => None,
        }
    }
}

/// The tier a parameter is in. Intelligent-Tiering is a request that resolves to one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Tier {
    Standard,
    Advanced,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Standard => "Standard",
            Tier::Advanced => "Advanced",
        }
    }
}

/// A parameter's metadata. No value is ever here: SecureString values are sealed in the
/// record's `sealed` half under `value/N`, and String and StringList values sit there as plain
/// bytes under `plain/N` (configuration, not secrets), one slot per version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterRecord {
    pub name: String,
    /// The type of the latest version.
    #[serde(rename = "type")]
    pub type_: ParameterType,
    /// The KMS key of the latest version, as the caller named it (`alias/aws/ssm` by default);
    /// `None` for String and StringList.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    pub tier: Tier,
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pattern: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// In the order they were added.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub policies: Vec<StoredPolicy>,
    /// The latest version's number; numbers are never reused, even once pruned.
    pub version: u64,
    #[serde(default)]
    pub versions: BTreeMap<u64, ParameterVersion>,
}

/// One version: what it was written as, when and by whom, and its labels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterVersion {
    #[serde(rename = "type")]
    pub type_: ParameterType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default)]
    pub labels: BTreeSet<String>,
    pub modified: i64,
    /// The principal ARN that wrote it.
    pub modified_by: String,
    pub tier: Tier,
    pub data_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_pattern: Option<String>,
}

impl RecordMeta for ParameterRecord {
    const KIND: RecordKind = RecordKind::Parameter;
}

/// Why versions or labels cannot change as asked.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error(
        "Systems Manager could not find version {version} of {name}. Verify the version and try again."
    )]
    NoSuchVersion { name: String, version: String },
    #[error(
        "You attempted to create a new version of {name} by calling the PutParameter API with the overwrite flag. Version {oldest}, the oldest version, can't be deleted because it has a label associated with it. Move the label to another version of the parameter, and try again."
    )]
    MaxVersions { name: String, oldest: u64 },
    #[error(
        "A parameter version can have maximum {MAX_LABELS_PER_VERSION} labels. Move one or more labels to another version and try again."
    )]
    TooManyLabels,
}

/// Whether `label` may be a label: 1 to 100 characters of letters, digits, `.`, `-` and `_`,
/// not beginning with a digit (so never all digits, which would read as a version), `aws` or
/// `ssm` in any case.
pub fn valid_label(label: &str) -> bool {
    let lower = label.to_ascii_lowercase();
    !label.is_empty()
        && label.len() <= MAX_LABEL_LEN
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !label.starts_with(|c: char| c.is_ascii_digit())
        && !lower.starts_with("aws")
        && !lower.starts_with("ssm")
}

impl ParameterRecord {
    /// The sealed slot of a SecureString version.
    pub fn sealed_slot(version: u64) -> String {
        format!("value/{version}")
    }

    /// The slot of a String or StringList version's plain bytes.
    pub fn plain_slot(version: u64) -> String {
        format!("plain/{version}")
    }

    /// The slot a version's value is in.
    pub fn slot_of(version: u64, type_: ParameterType) -> String {
        match type_ {
            ParameterType::SecureString => Self::sealed_slot(version),
            _ => Self::plain_slot(version),
        }
    }

    /// The latest version.
    pub fn latest(&self) -> Option<&ParameterVersion> {
        self.versions.get(&self.version)
    }

    /// The version a label is on.
    pub fn version_with_label(&self, label: &str) -> Option<u64> {
        self.versions
            .iter()
            .find(|(_, version)| version.labels.contains(label))
            .map(|(number, _)| *number)
    }

    fn no_such_version(&self, version: impl ToString) -> VersionError {
        VersionError::NoSuchVersion {
            name: self.name.clone(),
            version: version.to_string(),
        }
    }

    /// The version that must go to make room for a new one, if any: the oldest without a
    /// label. Refused when every kept version is labelled.
    pub fn make_room(&self) -> Result<Option<u64>, VersionError> {
        if self.versions.len() < MAX_VERSIONS {
            return Ok(None);
        }
        self.versions
            .iter()
            .find(|(_, version)| version.labels.is_empty())
            .map(|(number, _)| Some(*number))
            .ok_or_else(|| VersionError::MaxVersions {
                name: self.name.clone(),
                oldest: self.versions.keys().next().copied().unwrap_or_default(),
            })
    }

    /// Adds the next version (its labels are ignored: a new version has none). Returns its
    /// number and the version pruned to make room.
    pub fn push_version(
        &mut self,
        version: ParameterVersion,
    ) -> Result<(u64, Option<u64>), VersionError> {
        let pruned = self.make_room()?;
        if let Some(pruned) = pruned {
            self.versions.remove(&pruned);
        }
        let number = self.version.saturating_add(1);
        self.version = number;
        self.versions.insert(
            number,
            ParameterVersion {
                labels: BTreeSet::new(),
                ..version
            },
        );
        Ok((number, pruned))
    }

    /// LabelParameterVersion: puts the valid `labels` on `version` (moving them from any other
    /// version) and returns the invalid ones. Nothing changes when it fails.
    pub fn label(&mut self, version: u64, labels: &[String]) -> Result<Vec<String>, VersionError> {
        let current = self
            .versions
            .get(&version)
            .ok_or_else(|| self.no_such_version(version))?;
        let (valid, invalid): (Vec<&String>, Vec<&String>) =
            labels.iter().partition(|label| valid_label(label));
        let mut after = current.labels.clone();
        after.extend(valid.iter().map(|label| (*label).clone()));
        if after.len() > MAX_LABELS_PER_VERSION {
            return Err(VersionError::TooManyLabels);
        }
        for (number, other) in &mut self.versions {
            if *number == version {
                other.labels.clone_from(&after);
            } else {
                other.labels.retain(|label| !after.contains(label));
            }
        }
        Ok(invalid.into_iter().cloned().collect())
    }

    /// UnlabelParameterVersion: removes `labels` from `version`; returns those removed and
    /// those that were not on it.
    pub fn unlabel(
        &mut self,
        version: u64,
        labels: &[String],
    ) -> Result<(Vec<String>, Vec<String>), VersionError> {
        let no_such = self.no_such_version(version);
        let current = self.versions.get_mut(&version).ok_or(no_such)?;
        let mut removed = Vec::new();
        let mut invalid = Vec::new();
        for label in labels {
            if current.labels.remove(label) {
                removed.push(label.clone());
            } else if !removed.contains(label) && !invalid.contains(label) {
                invalid.push(label.clone());
            }
        }
        Ok((removed, invalid))
    }

    /// When the Expiration policy deletes the parameter, if it has one.
    pub fn expiration(&self) -> Option<i64> {
        self.policies.iter().find_map(|policy| match policy.kind {
            PolicyKind::Expiration { at } => Some(at),
            _ => None,
        })
    }

    /// When `policy` falls due: the expiration, the notification ahead of it, or the end of
    /// the quiet period after the latest change.
    pub fn policy_due(&self, policy: &StoredPolicy) -> Option<i64> {
        match policy.kind {
            PolicyKind::Expiration { at } => Some(at),
            PolicyKind::ExpirationNotification { before } => {
                self.expiration().map(|at| at.saturating_sub(before))
            }
            PolicyKind::NoChangeNotification { after } => self
                .latest()
                .map(|latest| latest.modified.saturating_add(after)),
        }
    }

    /// AWS's PolicyStatus: Finished once a notification fired for its current due time.
    pub fn policy_status(&self, policy: &StoredPolicy) -> &'static str {
        match policy.kind {
            PolicyKind::Expiration { .. } => "Pending",
            _ if policy.fired_for.is_some() && policy.fired_for == self.policy_due(policy) => {
                "Finished"
            }
            _ => "Pending",
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record() -> ParameterRecord {
        ParameterRecord {
            name: "/app/db".into(),
            type_: ParameterType::String,
            key_id: None,
            tier: Tier::Standard,
            data_type: "text".into(),
            allowed_pattern: None,
            description: None,
            tags: Vec::new(),
            policies: Vec::new(),
            version: 0,
            versions: BTreeMap::new(),
        }
    }

    pub(crate) fn version(modified: i64) -> ParameterVersion {
        ParameterVersion {
            type_: ParameterType::String,
            key_id: None,
            labels: BTreeSet::new(),
            modified,
            modified_by: "arn:aws:iam::111122223333:user/admin".into(),
            tier: Tier::Standard,
            data_type: "text".into(),
            description: None,
            allowed_pattern: None,
        }
    }

    fn labels(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn labels_are_checked_as_aws_checks_them() {
        for good in ["prod", "Blue-1", "a_b.c", &"x".repeat(100)] {
            assert!(valid_label(good), "{good}");
        }
        for bad in [
            "",
            "1abc",
            "123",
            "aws-x",
            "AWSx",
            "ssm1",
            "Ssm",
            "a b",
            "a/b",
            "a:b",
            &"x".repeat(101),
        ] {
            assert!(!valid_label(bad), "{bad}");
        }
    }

    #[test]
    fn a_label_moves_and_invalid_ones_are_returned() {
        let mut record = record();
        record.push_version(version(1)).unwrap();
        record.push_version(version(2)).unwrap();
        let invalid = record
            .label(1, &labels(&["prod", "aws-bad", "blue"]))
            .unwrap();
        assert_eq!(invalid, ["aws-bad"]);
        assert_eq!(record.version_with_label("prod"), Some(1));
        record.label(2, &labels(&["prod"])).unwrap();
        assert_eq!(record.version_with_label("prod"), Some(2));
        assert_eq!(record.version_with_label("blue"), Some(1));
        assert_eq!(
            record.label(3, &labels(&["x"])),
            Err(VersionError::NoSuchVersion {
                name: "/app/db".into(),
                version: "3".into()
            })
        );
        let (removed, invalid) = record.unlabel(2, &labels(&["prod", "blue"])).unwrap();
        assert_eq!((removed, invalid), (labels(&["prod"]), labels(&["blue"])));
    }

    #[test]
    fn a_version_carries_at_most_ten_labels() {
        let mut record = record();
        record.push_version(version(1)).unwrap();
        let ten: Vec<String> = (0..10).map(|n| format!("l{n}")).collect();
        record.label(1, &ten).unwrap();
        let before = record.clone();
        assert_eq!(
            record.label(1, &labels(&["eleven"])),
            Err(VersionError::TooManyLabels)
        );
        assert_eq!(record, before);
        // Labels it already has do not count twice.
        record.label(1, &labels(&["l0", "l9"])).unwrap();
    }

    #[test]
    fn the_oldest_unlabelled_version_makes_room_and_labelled_ones_stay() {
        let mut record = record();
        for n in 1..=100 {
            record.push_version(version(n)).unwrap();
        }
        record.label(1, &labels(&["keep"])).unwrap();
        let (number, pruned) = record.push_version(version(101)).unwrap();
        assert_eq!((number, pruned), (101, Some(2)));
        assert_eq!(record.versions.len(), 100);
        // Label every version: the next Put is refused, and names the oldest.
        let numbers: Vec<u64> = record.versions.keys().copied().collect();
        for (n, number) in numbers.iter().enumerate() {
            record.label(*number, &[format!("l{n}")]).unwrap();
        }
        assert_eq!(
            record.push_version(version(102)),
            Err(VersionError::MaxVersions {
                name: "/app/db".into(),
                oldest: 1
            })
        );
    }
}
