//! What a secret is on record: its metadata, its versions and their staging labels. The rules
//! that move labels live here, free of I/O, so that a property test can hold them to their
//! invariants: once a secret has a value, exactly one version is AWSCURRENT; a label is on one
//! version at most; a labelled version is never pruned.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::rotation_rules::RotationRules;
use crate::engine::rotation::Step;
use crate::store::RecordKind;
use crate::store::typed::RecordMeta;

pub const CURRENT: &str = "AWSCURRENT";
pub const PREVIOUS: &str = "AWSPREVIOUS";
pub const PENDING: &str = "AWSPENDING";

/// Versions without a label that are kept; older ones are pruned, as AWS does.
pub const MAX_DEPRECATED_VERSIONS: usize = 100;

/// Labels one version may carry.
pub const MAX_STAGES_PER_VERSION: usize = 20;

/// A secret. Values are in the record's sealed half, one slot per version
/// ([`SecretRecord::value_slot`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRecord {
    pub name: String,
    pub arn: String,
    #[serde(default)]
    pub description: String,
    /// The KMS key as the caller named it; `None` is the account's `alias/aws/secretsmanager`.
    #[serde(default)]
    pub kms_key_id: Option<String>,
    pub created: i64,
    pub last_changed: i64,
    /// When deletion was asked for (AWS's DeletedDate).
    #[serde(default)]
    pub deleted: Option<i64>,
    /// When the secret is purged, for a secret whose deletion is scheduled.
    #[serde(default)]
    pub purge_after: Option<i64>,
    /// In the order they were added.
    #[serde(default)]
    pub tags: Vec<(String, String)>,
    #[serde(default)]
    pub versions: BTreeMap<String, SecretVersion>,
    /// The resource policy, verbatim.
    #[serde(default)]
    pub policy: Option<String>,
    /// Days between a deletion that names no window (a Secret resource deleted in Kubernetes)
    /// and the purge; `None` is AWS's default of 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_window_days: Option<i64>,
    /// Fingerprint of the declared source the current value came from (a digest of a sealed
    /// value's ciphertext, or the uid and resourceVersion of a core Secret), so that the same
    /// source is not imported twice. Never of plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared_source: Option<String>,
    /// How and when the secret rotates, and the rotation in progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation: Option<RotationRecord>,
}

/// A secret's rotation: its configuration, its schedule, and the rotation in progress. The
/// progress is written before each step runs, so a process that dies anywhere resumes the same
/// rotation, with the same token, at the step it was in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationRecord {
    /// Whether rotation is on (CancelRotateSecret turns it off, keeping the configuration).
    pub enabled: bool,
    /// Whether a declaration (a Secret's `spec.rotation`) set it, so that removing it from
    /// the declaration turns rotation off; RotateSecret's settings stay until changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub declared: bool,
    /// When to rotate; `None` rotates only on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<RotationRules>,
    /// The strategy's name (`generate`, `postgres`, `mysql`, `job`, `webhook`).
    pub strategy: String,
    /// The strategy's settings; never a value.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub settings: serde_json::Value,
    /// The RotationLambdaARN the caller named, echoed by DescribeSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_arn: Option<String>,
    /// When the last rotation finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotated: Option<i64>,
    /// When the next scheduled rotation starts (an instant picked in the schedule's window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_rotation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_progress: Option<RotationProgress>,
    /// Why the last attempt of a step failed, until a rotation finishes. Never a value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A rotation under way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RotationProgress {
    /// The ClientRequestToken: the id of the version the rotation makes.
    pub token: String,
    /// The step to run (again, if it was interrupted).
    pub step: Step,
    pub started: i64,
    /// Failed attempts of this step in a row.
    #[serde(default)]
    pub failures: u32,
    /// The step is not run again before this instant (backoff, or a step waiting on a Job).
    #[serde(default)]
    pub not_before: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretVersion {
    pub created: i64,
    /// Staging labels.
    #[serde(default)]
    pub stages: BTreeSet<String>,
    /// SecretBinary rather than SecretString.
    #[serde(default)]
    pub binary: bool,
    /// The KMS key the value is sealed under.
    pub kms_key_arn: String,
}

impl RecordMeta for SecretRecord {
    const KIND: RecordKind = RecordKind::Secret;
}

/// Why labels cannot move as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StageError {
    #[error("Version {0} does not exist for this secret.")]
    NoSuchVersion(String),
    #[error(
        "The parameter RemoveFromVersionId can't be empty. Staging label {stage} is currently attached to version {version}, so you must explicitly reference that version in RemoveFromVersionId."
    )]
    AttachedElsewhere { stage: String, version: String },
    #[error("Staging label {stage} is not attached to version {version}.")]
    NotAttached { stage: String, version: String },
    #[error("You can't remove the staging label AWSCURRENT without moving it to another version.")]
    CurrentMustMove,
    #[error("A version can carry at most {MAX_STAGES_PER_VERSION} staging labels.")]
    TooManyStages,
}

impl SecretRecord {
    /// A secret with no value, tags, policy or description yet.
    pub fn new(name: &str, arn: String, now: i64) -> Self {
        Self {
            name: name.to_owned(),
            arn,
            description: String::new(),
            kms_key_id: None,
            created: now,
            last_changed: now,
            deleted: None,
            purge_after: None,
            tags: Vec::new(),
            versions: BTreeMap::new(),
            policy: None,
            recovery_window_days: None,
            declared_source: None,
            rotation: None,
        }
    }

    /// The sealed slot of a version's value.
    pub fn value_slot(version_id: &str) -> String {
        format!("version/{version_id}")
    }

    /// The version a label is on.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, version)| version.stages.contains(stage))
            .map(|(id, _)| id.as_str())
    }

    /// Adds `version_id` with `stages` (AWSCURRENT when none are given). Each label leaves the
    /// version that had it; the version losing AWSCURRENT takes AWSPREVIOUS. Returns the ids
    /// of versions pruned for being deprecated beyond [`MAX_DEPRECATED_VERSIONS`].
    pub fn add_version(
        &mut self,
        version_id: &str,
        version: SecretVersion,
        stages: &[String],
    ) -> Result<Vec<String>, StageError> {
        let stages: BTreeSet<String> = if stages.is_empty() {
            BTreeSet::from([CURRENT.to_owned()])
        } else {
            stages.iter().cloned().collect()
        };
        if stages.len() > MAX_STAGES_PER_VERSION {
            return Err(StageError::TooManyStages);
        }
        self.versions.insert(
            version_id.to_owned(),
            SecretVersion {
                stages: BTreeSet::new(),
                ..version
            },
        );
        for stage in &stages {
            self.attach(stage, version_id);
        }
        Ok(self.prune())
    }

    /// UpdateSecretVersionStage: moves `stage` to `move_to`, from `remove_from`, or both.
    /// Returns pruned version ids.
    pub fn move_stage(
        &mut self,
        stage: &str,
        move_to: Option<&str>,
        remove_from: Option<&str>,
    ) -> Result<Vec<String>, StageError> {
        for id in move_to.into_iter().chain(remove_from) {
            if !self.versions.contains_key(id) {
                return Err(StageError::NoSuchVersion(id.to_owned()));
            }
        }
        let holder = self.version_with(stage).map(str::to_owned);
        if let Some(holder) = &holder
            && move_to != Some(holder.as_str())
            && remove_from != Some(holder.as_str())
        {
            return Err(StageError::AttachedElsewhere {
                stage: stage.to_owned(),
                version: holder.clone(),
            });
        }
        if let Some(remove_from) = remove_from
            && holder.as_deref() != Some(remove_from)
        {
            return Err(StageError::NotAttached {
                stage: stage.to_owned(),
                version: remove_from.to_owned(),
            });
        }
        match move_to {
            Some(target) => {
                let already = self
                    .versions
                    .get(target)
                    .is_some_and(|version| version.stages.contains(stage));
                let count = self
                    .versions
                    .get(target)
                    .map_or(0, |version| version.stages.len());
                if !already && count >= MAX_STAGES_PER_VERSION {
                    return Err(StageError::TooManyStages);
                }
                self.attach(stage, target);
            }
            None => {
                if stage == CURRENT {
                    return Err(StageError::CurrentMustMove);
                }
                for version in self.versions.values_mut() {
                    version.stages.remove(stage);
                }
            }
        }
        Ok(self.prune())
    }

    /// Puts `stage` on `version_id` alone; AWSCURRENT's previous holder takes AWSPREVIOUS.
    fn attach(&mut self, stage: &str, version_id: &str) {
        let previous = self.version_with(stage).map(str::to_owned);
        if previous.as_deref() == Some(version_id) {
            return;
        }
        for version in self.versions.values_mut() {
            version.stages.remove(stage);
        }
        if let Some(version) = self.versions.get_mut(version_id) {
            version.stages.insert(stage.to_owned());
        }
        if stage == CURRENT
            && let Some(previous) = previous
        {
            for version in self.versions.values_mut() {
                version.stages.remove(PREVIOUS);
            }
            if let Some(version) = self.versions.get_mut(&previous) {
                version.stages.insert(PREVIOUS.to_owned());
            }
        }
    }

    /// Drops the oldest versions without labels beyond [`MAX_DEPRECATED_VERSIONS`].
    fn prune(&mut self) -> Vec<String> {
        let mut deprecated: Vec<(i64, String)> = self
            .versions
            .iter()
            .filter(|(_, version)| version.stages.is_empty())
            .map(|(id, version)| (version.created, id.clone()))
            .collect();
        if deprecated.len() <= MAX_DEPRECATED_VERSIONS {
            return Vec::new();
        }
        deprecated.sort();
        let excess = deprecated.len() - MAX_DEPRECATED_VERSIONS;
        let pruned: Vec<String> = deprecated
            .into_iter()
            .take(excess)
            .map(|(_, id)| id)
            .collect();
        for id in &pruned {
            self.versions.remove(id);
        }
        pruned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secret() -> SecretRecord {
        SecretRecord::new(
            "app/db",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:app/db-AbCdEf".into(),
            0,
        )
    }

    fn version(created: i64) -> SecretVersion {
        SecretVersion {
            created,
            stages: BTreeSet::new(),
            binary: false,
            kms_key_arn: "arn:aws:kms:us-east-1:111122223333:key/k".into(),
        }
    }

    fn stages_of(record: &SecretRecord, id: &str) -> Vec<String> {
        record.versions[id].stages.iter().cloned().collect()
    }

    #[test]
    fn a_new_value_takes_current_and_the_old_current_becomes_previous() {
        let mut record = secret();
        record.add_version("v1", version(1), &[]).unwrap();
        assert_eq!(stages_of(&record, "v1"), [CURRENT]);
        record.add_version("v2", version(2), &[]).unwrap();
        assert_eq!(stages_of(&record, "v2"), [CURRENT]);
        assert_eq!(stages_of(&record, "v1"), [PREVIOUS]);
        record.add_version("v3", version(3), &[]).unwrap();
        assert_eq!(stages_of(&record, "v1"), Vec::<String>::new(), "deprecated");
        assert_eq!(stages_of(&record, "v2"), [PREVIOUS]);
        // A pending value leaves CURRENT where it is.
        record
            .add_version("v4", version(4), &[PENDING.to_owned()])
            .unwrap();
        assert_eq!(record.version_with(CURRENT), Some("v3"));
        assert_eq!(record.version_with(PENDING), Some("v4"));
    }

    #[test]
    fn moving_a_label_names_where_it_is() {
        let mut record = secret();
        record.add_version("v1", version(1), &[]).unwrap();
        record
            .add_version("v2", version(2), &[PENDING.to_owned()])
            .unwrap();
        assert_eq!(
            record.move_stage(CURRENT, Some("v2"), None),
            Err(StageError::AttachedElsewhere {
                stage: CURRENT.into(),
                version: "v1".into()
            })
        );
        record.move_stage(CURRENT, Some("v2"), Some("v1")).unwrap();
        assert_eq!(stages_of(&record, "v2"), [CURRENT, PENDING]);
        assert_eq!(stages_of(&record, "v1"), [PREVIOUS]);
        assert_eq!(
            record.move_stage(CURRENT, None, Some("v2")),
            Err(StageError::CurrentMustMove)
        );
        assert_eq!(
            record.move_stage("custom", Some("nope"), None),
            Err(StageError::NoSuchVersion("nope".into()))
        );
        record.move_stage(PENDING, None, Some("v2")).unwrap();
        assert_eq!(record.version_with(PENDING), None);
        // A label nobody has may be attached without RemoveFromVersionId.
        record.move_stage("blue", Some("v1"), None).unwrap();
        assert_eq!(record.version_with("blue"), Some("v1"));
    }

    #[test]
    fn deprecated_versions_beyond_the_limit_are_pruned_oldest_first() {
        let mut record = secret();
        let mut pruned = Vec::new();
        for i in 0..(MAX_DEPRECATED_VERSIONS as i64 + 5) {
            pruned.extend(
                record
                    .add_version(&format!("v{i:04}"), version(i), &[])
                    .unwrap(),
            );
        }
        // Two carry labels (CURRENT, PREVIOUS); 100 deprecated are kept.
        assert_eq!(record.versions.len(), MAX_DEPRECATED_VERSIONS + 2);
        assert_eq!(pruned, ["v0000", "v0001", "v0002"]);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Put {
            stages: Vec<&'static str>,
        },
        Move {
            stage: &'static str,
            to: usize,
            from: Option<usize>,
        },
        Remove {
            stage: &'static str,
            from: usize,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        let stage = prop::sample::select(vec![CURRENT, PREVIOUS, PENDING, "blue", "green"]);
        prop_oneof![
            prop::collection::vec(stage.clone(), 0..3).prop_map(|stages| Step::Put { stages }),
            (stage.clone(), 0..8usize, prop::option::of(0..8usize))
                .prop_map(|(stage, to, from)| Step::Move { stage, to, from }),
            (stage, 0..8usize).prop_map(|(stage, from)| Step::Remove { stage, from }),
        ]
    }

    proptest! {
        /// Whatever sequence of puts and moves, accepted or refused: exactly one AWSCURRENT once
        /// a value exists, no label on two versions, and no labelled version lost.
        #[test]
        fn labels_stay_consistent(steps in prop::collection::vec(step(), 1..60)) {
            let mut record = secret();
            record.add_version("v0", version(0), &[]).unwrap();
            let mut next = 1i64;
            for step in steps {
                let ids: Vec<String> = record.versions.keys().cloned().collect();
                let pick = |i: usize| ids[i % ids.len()].clone();
                let before = record.clone();
                let labelled_before: BTreeSet<String> = before
                    .versions
                    .iter()
                    .filter(|(_, v)| !v.stages.is_empty())
                    .map(|(id, _)| id.clone())
                    .collect();
                let result = match step {
                    Step::Put { stages } => {
                        let id = format!("v{next}");
                        next += 1;
                        let stages: Vec<String> = stages.into_iter().map(str::to_owned).collect();
                        record.add_version(&id, version(next), &stages)
                    }
                    Step::Move { stage, to, from } => {
                        let (to, from) = (pick(to), from.map(pick));
                        record.move_stage(stage, Some(&to), from.as_deref())
                    }
                    Step::Remove { stage, from } => {
                        let from = pick(from);
                        record.move_stage(stage, None, Some(&from))
                    }
                };
                if let Ok(pruned) = &result {
                    // Only versions without labels are pruned.
                    for id in pruned {
                        prop_assert!(!labelled_before.contains(id), "labelled version {} pruned", id);
                    }
                } else {
                    prop_assert_eq!(&record, &before, "a refused step changes nothing");
                }
                let holders = |stage: &str| record.versions.values().filter(|v| v.stages.contains(stage)).count();
                prop_assert_eq!(holders(CURRENT), 1);
                for stage in [PREVIOUS, PENDING, "blue", "green"] {
                    prop_assert!(holders(stage) <= 1, "{} on two versions", stage);
                }
                // Fewer steps than the deprecation limit: nothing labelled is ever lost.
                for id in &labelled_before {
                    prop_assert!(record.versions.contains_key(id), "version {} lost", id);
                }
            }
        }
    }
}
