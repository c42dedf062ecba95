//! A SecretProviderClass written for the Secrets Store CSI Driver's AWS provider, read as a
//! [`Volume`]: the same `objects` YAML (`objectName`, `objectType`, `objectAlias`,
//! `objectVersion`, `objectVersionLabel`, `jmesPath`), the same file names (`pathTranslation`),
//! so that a class switches from `provider: aws` to `provider: coffer` unchanged.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::attributes::Mode;
use super::names::{self, NameError};
use super::volume::{CURRENT_STAGE, Output, ParameterPin, SecretPin, Selection, Source, Volume};
use super::{ContentError, PodInfo, PodToken};

/// The audience of the ServiceAccount token Coffer's API accepts by default.
pub const DEFAULT_AUDIENCE: &str = "coffer";

const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
/// Parameters of the AWS provider that mean nothing here (Coffer is one endpoint and one
/// region, and always reads as the pod's ServiceAccount), and the pod's volume attribute naming
/// the class, which the driver passes on with the rest.
const IGNORED: [&str; 5] = [
    "region",
    "failoverRegion",
    "usePodIdentity",
    "preferredAddressType",
    "secretProviderClass",
];

/// Why a mount request is refused. Names objects, never values or tokens.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("the mount attributes are not a JSON object of strings")]
    Attributes,
    #[error("the mount permission {0:?} is not a file mode")]
    Permission(String),
    #[error("the driver passed no {0}")]
    Missing(&'static str),
    #[error(
        "the driver passed no token for audience {0:?}: list it under tokenRequests in the \
         CSIDriver secrets-store.csi.k8s.io"
    )]
    NoToken(String),
    #[error("unknown SecretProviderClass parameter {0:?}")]
    UnknownParameter(String),
    #[error("pathTranslation must be \"False\" or a single character")]
    PathTranslation,
    #[error("objects: {0}")]
    Objects(String),
    #[error("objects[{index}] ({name}): {reason}")]
    Object {
        index: usize,
        name: String,
        reason: String,
    },
    #[error("{0}")]
    Name(#[from] NameError),
}

impl From<ProviderError> for ContentError {
    fn from(err: ProviderError) -> Self {
        ContentError::InvalidArgument(err.to_string())
    }
}

/// One `objects` entry of the AWS provider.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Descriptor {
    object_name: String,
    #[serde(default)]
    object_alias: String,
    #[serde(default)]
    object_version: String,
    #[serde(default)]
    object_version_label: String,
    #[serde(default)]
    object_type: String,
    #[serde(default)]
    jmes_path: Vec<JmesEntry>,
    /// For another region of AWS; Coffer has one, so the primary object is read.
    #[serde(default, rename = "failoverObject")]
    _failover_object: Option<serde::de::IgnoredAny>,
    file_permission: Option<Mode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct JmesEntry {
    path: String,
    object_alias: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ServiceAccountToken {
    token: String,
    expiration_timestamp: Option<String>,
}

/// A mount request understood: the volume, and who it is for.
#[derive(Debug)]
pub struct ProviderMount {
    pub volume: Volume,
    pub pod: PodInfo,
    pub token: PodToken,
}

impl ProviderMount {
    /// Reads the driver's `attributes` (JSON: the class's parameters and the pod's attributes)
    /// and `permission` (JSON: the default file mode, a decimal number), taking the pod's token
    /// for `audience`.
    pub fn parse(
        attributes: &str,
        permission: &str,
        audience: &str,
    ) -> Result<Self, ProviderError> {
        let attributes: BTreeMap<String, String> =
            serde_json::from_str(attributes).map_err(|_| ProviderError::Attributes)?;
        let mode = if permission.trim().is_empty() {
            super::volume::DEFAULT_MODE
        } else {
            serde_json::from_str::<u32>(permission)
                .ok()
                .filter(|mode| *mode <= 0o777)
                .ok_or_else(|| ProviderError::Permission(permission.to_owned()))?
        };
        for key in attributes.keys() {
            let known = key == "objects"
                || key == "pathTranslation"
                || IGNORED.contains(&key.as_str())
                || key.starts_with("csi.storage.k8s.io/")
                || key.starts_with("secrets-store.csi.k8s.io/");
            if !known {
                return Err(ProviderError::UnknownParameter(key.clone()));
            }
        }
        let get = |key: &'static str| {
            attributes
                .get(key)
                .filter(|value| !value.is_empty())
                .cloned()
                .ok_or(ProviderError::Missing(key))
        };
        let pod = PodInfo {
            namespace: get(POD_NAMESPACE)?,
            name: get(POD_NAME)?,
            uid: attributes.get(POD_UID).cloned().unwrap_or_default(),
            service_account: get(SERVICE_ACCOUNT)?,
        };
        let tokens: BTreeMap<String, ServiceAccountToken> = attributes
            .get(TOKENS)
            .map(|text| serde_json::from_str(text))
            .transpose()
            .map_err(|_| ProviderError::NoToken(audience.to_owned()))?
            .unwrap_or_default();
        let token = tokens
            .into_iter()
            .find(|(given, _)| given == audience)
            .map(|(_, token)| PodToken::new(token.token, token.expiration_timestamp))
            .ok_or_else(|| ProviderError::NoToken(audience.to_owned()))?;
        let translation = match attributes.get("pathTranslation").map(String::as_str) {
            None | Some("") => Some('_'),
            Some(off) if off.eq_ignore_ascii_case("false") => None,
            Some(other) => {
                let mut chars = other.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => Some(c),
                    _ => return Err(ProviderError::PathTranslation),
                }
            }
        };
        let objects = attributes
            .get("objects")
            .ok_or(ProviderError::Missing("objects parameter"))?;
        let descriptors: Vec<Descriptor> =
            serde_yaml::from_str(objects).map_err(|err| ProviderError::Objects(err.to_string()))?;
        if descriptors.is_empty() {
            return Err(ProviderError::Objects("the list is empty".into()));
        }
        let mut outputs = Vec::new();
        for (index, descriptor) in descriptors.into_iter().enumerate() {
            let name = descriptor.object_name.clone();
            outputs.extend(translate(descriptor, translation, mode).map_err(|reason| {
                ProviderError::Object {
                    index,
                    name,
                    reason,
                }
            })?);
        }
        let volume = Volume { outputs };
        volume.check_names()?;
        Ok(Self { volume, pod, token })
    }
}

/// The AWS provider's file name for an object: its alias, else its name, with `/` turned into
/// the translation character (or, with translation off, only a leading `/` dropped).
fn file_name(name: &str, translation: Option<char>) -> Result<String, String> {
    let file = match translation {
        Some(c) => name.replace('/', c.encode_utf8(&mut [0; 4])),
        None => name.trim_start_matches('/').to_owned(),
    };
    names::check(&file).map_err(|err| err.to_string())?;
    Ok(file)
}

fn translate(
    descriptor: Descriptor,
    translation: Option<char>,
    default_mode: u32,
) -> Result<Vec<Output>, String> {
    let name = descriptor.object_name;
    if name.is_empty() {
        return Err("objectName is empty".into());
    }
    let arn_service = name
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(1));
    let kind = match (descriptor.object_type.as_str(), arn_service) {
        ("", Some("secretsmanager")) | ("secretsmanager", None | Some("secretsmanager")) => {
            "secretsmanager"
        }
        ("", Some("ssm")) | ("ssmparameter", None | Some("ssm")) => "ssmparameter",
        ("", None) => return Err("objectType is needed unless objectName is an ARN".into()),
        ("", Some(service)) => return Err(format!("ARN of unknown service {service:?}")),
        (given, Some(_)) if given == "secretsmanager" || given == "ssmparameter" => {
            return Err(format!("objectType {given} does not match the ARN"));
        }
        (given, _) => {
            return Err(format!(
                "unknown objectType {given:?} (secretsmanager or ssmparameter)"
            ));
        }
    };
    let version = (!descriptor.object_version.is_empty()).then_some(descriptor.object_version);
    let label =
        (!descriptor.object_version_label.is_empty()).then_some(descriptor.object_version_label);
    let source = if kind == "secretsmanager" {
        let pin = match (version, label) {
            (Some(_), Some(_)) => {
                return Err("give objectVersion or objectVersionLabel, not both".into());
            }
            (Some(version), None) => SecretPin::VersionId(version),
            (None, Some(stage)) => SecretPin::Stage(stage),
            (None, None) => SecretPin::Stage(CURRENT_STAGE.to_owned()),
        };
        Source::Secret {
            id: name.clone(),
            pin,
        }
    } else {
        let pin = match (version, label) {
            (Some(_), Some(_)) => {
                return Err("give objectVersion or objectVersionLabel, not both".into());
            }
            (Some(version), None) => ParameterPin::Version(
                version
                    .parse::<u64>()
                    .ok()
                    .filter(|number| *number > 0)
                    .ok_or_else(|| {
                        format!("objectVersion {version:?} is not a parameter version")
                    })?,
            ),
            (None, Some(label)) => ParameterPin::Label(label),
            (None, None) => ParameterPin::Latest,
        };
        Source::Parameter {
            name: name.clone(),
            pin,
        }
    };
    let mode = descriptor
        .file_permission
        .map_or(default_mode, |mode| mode.0);
    let alias = if descriptor.object_alias.is_empty() {
        &name
    } else {
        &descriptor.object_alias
    };
    let mut outputs = vec![Output::Object {
        source: source.clone(),
        selection: Selection::Whole,
        file: file_name(alias, translation)?,
        mode,
    }];
    for entry in descriptor.jmes_path {
        if entry.path.is_empty() || entry.object_alias.is_empty() {
            return Err("each jmesPath entry needs a path and an objectAlias".into());
        }
        jmespath::compile(&entry.path)
            .map_err(|_| format!("jmesPath {:?} is not a valid expression", entry.path))?;
        outputs.push(Output::Object {
            source: source.clone(),
            selection: Selection::JmesPath(entry.path),
            file: file_name(&entry.object_alias, translation)?,
            mode,
        });
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attributes(objects: &str, extra: &[(&str, &str)]) -> String {
        let mut map = serde_json::json!({
            "objects": objects,
            POD_NAMESPACE: "team",
            POD_NAME: "web-0",
            POD_UID: "uid-1",
            SERVICE_ACCOUNT: "web",
            TOKENS: r#"{"coffer":{"token":"tok.en.sig","expirationTimestamp":"2026-12-01T15:00:00Z"},"other":{"token":"x"}}"#,
        });
        for (key, value) in extra {
            map[*key] = (*value).into();
        }
        map.to_string()
    }

    fn files(mount: &ProviderMount) -> Vec<(String, String, u32)> {
        mount
            .volume
            .outputs
            .iter()
            .map(|output| match output {
                Output::Object {
                    source, file, mode, ..
                } => (file.clone(), source.to_string(), *mode),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn reads_the_aws_providers_objects_and_names_files_as_it_does() {
        let objects = r#"
- objectName: app/db
  objectType: secretsmanager
  jmesPath:
    - path: password
      objectAlias: db-password
- objectName: /app/url
  objectType: ssmparameter
  objectVersion: "3"
- objectName: arn:aws:secretsmanager:us-east-1:123456789012:secret:api-AbCdEf
  objectAlias: api
  objectVersionLabel: AWSPREVIOUS
  filePermission: "0400"
- objectName: /app/flag
  objectType: ssmparameter
  objectVersionLabel: prod
  failoverObject: {objectName: /app/flag-west}
"#;
        let extra = [
            ("region", "us-east-1"),
            ("secretProviderClass", "web"),
            ("usePodIdentity", "true"),
        ];
        let mount =
            ProviderMount::parse(&attributes(objects, &extra), "420", DEFAULT_AUDIENCE).unwrap();
        assert_eq!(
            mount.pod,
            PodInfo {
                namespace: "team".into(),
                name: "web-0".into(),
                uid: "uid-1".into(),
                service_account: "web".into()
            }
        );
        assert_eq!(mount.token.expose(), "tok.en.sig");
        assert_eq!(files(&mount), [
            ("app_db".into(), "secret app/db".into(), 0o644),
            ("db-password".into(), "secret app/db".into(), 0o644),
            ("_app_url".into(), "parameter /app/url (version 3)".into(), 0o644),
            ("api".into(), "secret arn:aws:secretsmanager:us-east-1:123456789012:secret:api-AbCdEf (stage AWSPREVIOUS)".into(), 0o400),
            ("_app_flag".into(), "parameter /app/flag (label prod)".into(), 0o644),
        ]);

        // Translation off: only the leading slash goes; another character replaces slashes.
        let objects = "- {objectName: /app/url, objectType: ssmparameter}";
        let off = ProviderMount::parse(
            &attributes(objects, &[("pathTranslation", "False")]),
            "256",
            DEFAULT_AUDIENCE,
        )
        .unwrap();
        assert_eq!(
            files(&off),
            [("app/url".into(), "parameter /app/url".into(), 0o400)]
        );
        let dash = ProviderMount::parse(
            &attributes(objects, &[("pathTranslation", "-")]),
            "",
            DEFAULT_AUDIENCE,
        )
        .unwrap();
        assert_eq!(files(&dash)[0].0, "-app-url");
    }

    #[test]
    fn refuses_what_it_cannot_serve() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case<'_>] = &[
            ("- {objectName: a}", &[], "420", "objectType is needed"),
            (
                "- {objectName: a, objectType: ssm}",
                &[],
                "420",
                "unknown objectType \"ssm\"",
            ),
            (
                "- {objectName: 'arn:aws:kms:us-east-1:1:key/x'}",
                &[],
                "420",
                "unknown service \"kms\"",
            ),
            (
                "- {objectName: 'arn:aws:ssm:us-east-1:1:parameter/x', objectType: secretsmanager}",
                &[],
                "420",
                "does not match the ARN",
            ),
            (
                "- {objectName: a, objectType: ssmparameter, objectVersion: x}",
                &[],
                "420",
                "not a parameter version",
            ),
            (
                "- {objectName: a, objectType: ssmparameter, objectVersion: '1', objectVersionLabel: l}",
                &[],
                "420",
                "not both",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, objectTemplate: x}",
                &[],
                "420",
                "unknown field `objectTemplate`",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, jmesPath: [{path: x}]}",
                &[],
                "420",
                "missing field `objectAlias`",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, jmesPath: [{path: '[[', objectAlias: b}]}",
                &[],
                "420",
                "not a valid expression",
            ),
            (
                "- {objectName: ../../etc/passwd, objectType: secretsmanager}",
                &[("pathTranslation", "False")],
                "420",
                "starting with '..'",
            ),
            (
                "- {objectName: a, objectType: secretsmanager, objectAlias: ..data}",
                &[],
                "420",
                "starting with '..'",
            ),
            (
                "- {objectName: a, objectType: secretsmanager}\n- {objectName: b, objectType: secretsmanager, objectAlias: a}",
                &[],
                "420",
                "named twice",
            ),
            (
                "- {objectName: a, objectType: secretsmanager}",
                &[("pathTranslation", "ab")],
                "420",
                "pathTranslation",
            ),
            (
                "- {objectName: a, objectType: secretsmanager}",
                &[("objectz", "x")],
                "420",
                "unknown SecretProviderClass parameter \"objectz\"",
            ),
            (
                "- {objectName: a, objectType: secretsmanager}",
                &[],
                "\"rw\"",
                "permission",
            ),
            (
                "- {objectName: a, objectType: secretsmanager}",
                &[(TOKENS, r#"{"sts.amazonaws.com":{"token":"t"}}"#)],
                "420",
                "tokenRequests",
            ),
            (
                "- {objectName: a, objectType: secretsmanager}",
                &[(POD_NAMESPACE, "")],
                "420",
                "pod.namespace",
            ),
            ("[]", &[], "420", "empty"),
        ];
        for (objects, extra, permission, expected) in cases {
            let err =
                ProviderMount::parse(&attributes(objects, extra), permission, DEFAULT_AUDIENCE)
                    .unwrap_err()
                    .to_string();
            assert!(err.contains(expected), "{objects} {extra:?}: {err}");
            assert!(!err.contains("tok.en.sig"));
        }
        assert!(matches!(
            ProviderMount::parse("[1]", "420", DEFAULT_AUDIENCE),
            Err(ProviderError::Attributes)
        ));
    }
}
