//! A CSI volume's own attributes (`volumeAttributes`): `objects` and `templates`, each a YAML or
//! JSON list. docs/csi-volumes.md describes them for users.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use super::names::NameError;
use super::template::{Template, TemplateError};
use super::volume::{
    CURRENT_STAGE, DEFAULT_MODE, Output, ParameterPin, SecretPin, Selection, Source, Volume,
};

/// The attribute listing secrets and parameters.
pub const OBJECTS: &str = "objects";
/// The attribute listing templates.
pub const TEMPLATES: &str = "templates";
/// The prefix of the attributes kubelet adds (`podInfoOnMount`, tokens, `ephemeral`).
const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";

/// Why a volume's attributes are refused.
#[derive(Debug, thiserror::Error)]
pub enum AttributeError {
    #[error("unknown volume attribute {0:?} (known: objects, templates)")]
    Unknown(String),
    #[error("the volume names no objects and no templates")]
    Empty,
    #[error("attribute {attribute}: {reason}")]
    Syntax {
        attribute: &'static str,
        reason: String,
    },
    #[error("{attribute}[{index}]: {reason}")]
    Invalid {
        attribute: &'static str,
        index: usize,
        reason: String,
    },
    #[error("templates[{index}] (file {file:?}): {source}")]
    Template {
        index: usize,
        file: String,
        source: TemplateError,
    },
    #[error("{0}")]
    Name(#[from] NameError),
}

#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
enum ObjectSpec {
    Secret {
        name: String,
        version: Option<String>,
        stage: Option<String>,
        file: String,
        property: Option<String>,
        mode: Option<Mode>,
    },
    Parameter {
        name: String,
        version: Option<ParameterVersion>,
        label: Option<String>,
        file: String,
        property: Option<String>,
        mode: Option<Mode>,
    },
    ParametersByPath {
        path: String,
        recursive: Option<bool>,
        file: String,
        mode: Option<Mode>,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateSpec {
    file: String,
    template: String,
    mode: Option<Mode>,
}

/// Permission bits: an octal string (`"0400"`, `"400"`) or a number (decimal, as in a
/// Kubernetes `defaultMode`), at most 0777.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mode(pub u32);

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Mode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "permission bits: an octal string such as \"0400\", or a number up to 511",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, bits: u64) -> Result<Mode, E> {
                u32::try_from(bits)
                    .ok()
                    .filter(|bits| *bits <= 0o777)
                    .map(Mode)
                    .ok_or_else(|| E::custom(format!("mode {bits} is over 511 (0777)")))
            }
            fn visit_i64<E: serde::de::Error>(self, bits: i64) -> Result<Mode, E> {
                u64::try_from(bits)
                    .map_err(|_| E::custom("mode is negative"))
                    .and_then(|bits| self.visit_u64(bits))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Mode, E> {
                let digits = text.strip_prefix("0o").unwrap_or(text);
                if digits.is_empty()
                    || digits.len() > 4
                    || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
                {
                    return Err(E::custom(format!(
                        "mode {text:?} is not octal permission bits"
                    )));
                }
                u32::from_str_radix(digits, 8)
                    .ok()
                    .filter(|bits| *bits <= 0o777)
                    .map(Mode)
                    .ok_or_else(|| E::custom(format!("mode {text:?} is over 0777")))
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// A parameter version: a number, or a string of one.
struct ParameterVersion(u64);

impl<'de> Deserialize<'de> for ParameterVersion {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ParameterVersion;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a parameter version number (1 or more)")
            }
            fn visit_u64<E: serde::de::Error>(self, number: u64) -> Result<ParameterVersion, E> {
                if number == 0 {
                    return Err(E::custom("parameter versions start at 1"));
                }
                Ok(ParameterVersion(number))
            }
            fn visit_i64<E: serde::de::Error>(self, number: i64) -> Result<ParameterVersion, E> {
                u64::try_from(number)
                    .map_err(|_| E::custom("parameter versions start at 1"))
                    .and_then(|number| self.visit_u64(number))
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ParameterVersion, E> {
                let number = text.parse::<u64>().map_err(|_| {
                    E::custom(format!(
                        "parameter version {text:?} is not a number (use label for labels)"
                    ))
                })?;
                self.visit_u64(number)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// The volume that `attributes` describe; nothing is read.
pub fn parse(attributes: &BTreeMap<String, String>) -> Result<Volume, AttributeError> {
    // kubelet's own attributes are the plugin's business; tolerated should any reach here.
    if let Some(unknown) = attributes
        .keys()
        .find(|key| *key != OBJECTS && *key != TEMPLATES && !key.starts_with(KUBELET_PREFIX))
    {
        return Err(AttributeError::Unknown(unknown.clone()));
    }
    let mut outputs = Vec::new();
    if let Some(text) = attributes.get(OBJECTS) {
        let specs: Vec<ObjectSpec> = list(OBJECTS, text)?;
        for (index, spec) in specs.into_iter().enumerate() {
            outputs.push(object(spec).map_err(|reason| AttributeError::Invalid {
                attribute: OBJECTS,
                index,
                reason,
            })?);
        }
    }
    if let Some(text) = attributes.get(TEMPLATES) {
        let specs: Vec<TemplateSpec> = list(TEMPLATES, text)?;
        for (index, spec) in specs.into_iter().enumerate() {
            let template =
                Template::parse(&spec.template).map_err(|source| AttributeError::Template {
                    index,
                    file: spec.file.clone(),
                    source,
                })?;
            outputs.push(Output::Template {
                file: spec.file,
                template,
                mode: spec.mode.map_or(DEFAULT_MODE, |mode| mode.0),
            });
        }
    }
    if outputs.is_empty() {
        return Err(AttributeError::Empty);
    }
    let volume = Volume { outputs };
    volume.check_names()?;
    Ok(volume)
}

fn list<T: for<'de> Deserialize<'de>>(
    attribute: &'static str,
    text: &str,
) -> Result<Vec<T>, AttributeError> {
    serde_yaml::from_str(text).map_err(|err| AttributeError::Syntax {
        attribute,
        reason: err.to_string(),
    })
}

fn object(spec: ObjectSpec) -> Result<Output, String> {
    Ok(match spec {
        ObjectSpec::Secret {
            name,
            version,
            stage,
            file,
            property,
            mode,
        } => {
            non_empty("name", &name)?;
            let pin = match (version, stage) {
                (Some(_), Some(_)) => {
                    return Err(format!("secret {name}: give version or stage, not both"));
                }
                (Some(version), None) => SecretPin::VersionId(non_empty("version", &version)?),
                (None, Some(stage)) => SecretPin::Stage(non_empty("stage", &stage)?),
                (None, None) => SecretPin::Stage(CURRENT_STAGE.to_owned()),
            };
            Output::Object {
                source: Source::Secret { id: name, pin },
                selection: selection(property)?,
                file,
                mode: mode.map_or(DEFAULT_MODE, |mode| mode.0),
            }
        }
        ObjectSpec::Parameter {
            name,
            version,
            label,
            file,
            property,
            mode,
        } => {
            non_empty("name", &name)?;
            let pin = match (version, label) {
                (Some(_), Some(_)) => {
                    return Err(format!("parameter {name}: give version or label, not both"));
                }
                (Some(version), None) => ParameterPin::Version(version.0),
                (None, Some(label)) => ParameterPin::Label(non_empty("label", &label)?),
                (None, None) => ParameterPin::Latest,
            };
            Output::Object {
                source: Source::Parameter { name, pin },
                selection: selection(property)?,
                file,
                mode: mode.map_or(DEFAULT_MODE, |mode| mode.0),
            }
        }
        ObjectSpec::ParametersByPath {
            path,
            recursive,
            file,
            mode,
        } => {
            if !path.starts_with('/') {
                return Err(format!("path {path:?} must begin with '/'"));
            }
            Output::Tree {
                path,
                recursive: recursive.unwrap_or(true),
                directory: non_empty("file", &file)?,
                mode: mode.map_or(DEFAULT_MODE, |mode| mode.0),
            }
        }
    })
}

fn selection(property: Option<String>) -> Result<Selection, String> {
    match property {
        None => Ok(Selection::Whole),
        Some(property) => Ok(Selection::Property(non_empty("property", &property)?)),
    }
}

fn non_empty(field: &str, value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err(format!("{field} is empty"));
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Watched;

    fn attributes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        parse(&attributes(pairs)).unwrap_err().to_string()
    }

    #[test]
    fn parses_yaml_and_json_objects() {
        let yaml = r#"
- kind: secret
  name: app/db
  file: db/password
  property: password
  mode: "0400"
- kind: secret
  name: arn:aws:secretsmanager:us-east-1:123456789012:secret:app/api-AbCdEf
  stage: AWSPREVIOUS
  file: api-previous
- kind: parameter
  name: /app/url
  version: 3
  file: url
  mode: 292
- kind: parameter
  name: /app/flag
  label: prod
  file: flag
- kind: parametersByPath
  path: /app/conf
  recursive: false
  file: conf
"#;
        let volume = parse(&attributes(&[(OBJECTS, yaml)])).unwrap();
        let summary: Vec<String> = volume
            .outputs
            .iter()
            .map(|output| match output {
                Output::Object {
                    source,
                    selection,
                    file,
                    mode,
                } => format!("{source} {selection:?} {file} {mode:o}"),
                Output::Tree {
                    path,
                    recursive,
                    directory,
                    mode,
                } => format!("{path} {recursive} {directory} {mode:o}"),
                Output::Template { file, .. } => file.clone(),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "secret app/db Property(\"password\") db/password 400",
                "secret arn:aws:secretsmanager:us-east-1:123456789012:secret:app/api-AbCdEf (stage AWSPREVIOUS) Whole api-previous 644",
                "parameter /app/url (version 3) Whole url 444",
                "parameter /app/flag (label prod) Whole flag 644",
                "/app/conf false conf 644",
            ]
        );
        let json = r#"[{"kind":"parameter","name":"/x","version":"2","file":"x","mode":256}]"#;
        let volume = parse(&attributes(&[
            (OBJECTS, json),
            ("csi.storage.k8s.io/ephemeral", "true"),
        ]))
        .unwrap();
        assert!(matches!(
            &volume.outputs[0],
            Output::Object {
                source: Source::Parameter {
                    pin: ParameterPin::Version(2),
                    ..
                },
                mode: 0o400,
                ..
            }
        ));
        assert_eq!(
            volume.watches("team"),
            [Watched::Parameter {
                namespace: "team".into(),
                name: "/x".into()
            }]
        );
    }

    #[test]
    fn modes_read_as_people_write_them() {
        let mode = |text: &str| -> u32 {
            let objects = format!("- {{kind: secret, name: a, file: a, mode: {text}}}");
            match &parse(&attributes(&[(OBJECTS, &objects)])).unwrap().outputs[0] {
                Output::Object { mode, .. } => *mode,
                other => panic!("{other:?}"),
            }
        };
        // Unquoted 0400 is octal in YAML as Kubernetes reads it, and here too.
        assert_eq!(mode("0400"), 0o400);
        assert_eq!(mode("\"0440\""), 0o440);
        assert_eq!(mode("\"600\""), 0o600);
        assert_eq!(mode("0o640"), 0o640);
        // A plain number is decimal, as a Kubernetes defaultMode in JSON.
        assert_eq!(mode("292"), 0o444);
    }

    #[test]
    fn parses_templates_and_watches_their_references() {
        let templates = r#"
- file: app.env
  template: |
    DB_PASSWORD={{resolve:secretsmanager:app/db:SecretString:password}}
    URL={{resolve:ssm:/app/url:2}}
  mode: "0440"
"#;
        let volume = parse(&attributes(&[(TEMPLATES, templates)])).unwrap();
        assert_eq!(
            volume.watches("team"),
            [
                Watched::Secret {
                    namespace: "team".into(),
                    id: "app/db".into()
                },
                Watched::Parameter {
                    namespace: "team".into(),
                    name: "/app/url".into()
                },
            ]
        );
        let err = error(&[(TEMPLATES, "- file: a\n  template: \"x {{resolve:kms:k}}\"")]);
        assert_eq!(
            err,
            "templates[0] (file \"a\"): line 1, column 3: unknown service \"kms\" (secretsmanager, ssm or ssm-secure)"
        );
    }

    #[test]
    fn refuses_what_it_does_not_understand() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("secretProviderClass", "x")],
                "unknown volume attribute \"secretProviderClass\"",
            ),
            (&[], "names no objects and no templates"),
            (&[(OBJECTS, "[]")], "names no objects and no templates"),
            (
                &[(
                    OBJECTS,
                    "- kind: secret\n  name: a\n  file: a\n  colour: red",
                )],
                "unknown field `colour`",
            ),
            (
                &[(OBJECTS, "- kind: key\n  name: a\n  file: a")],
                "unknown variant `key`",
            ),
            (
                &[(OBJECTS, "- kind: secret\n  file: a")],
                "missing field `name`",
            ),
            (
                &[(
                    OBJECTS,
                    "- kind: secret\n  name: a\n  file: a\n  stage: S\n  version: v",
                )],
                "objects[0]: secret a: give version or stage, not both",
            ),
            (
                &[(
                    OBJECTS,
                    "- kind: parameter\n  name: a\n  file: a\n  label: l\n  version: 1",
                )],
                "give version or label, not both",
            ),
            (
                &[(
                    OBJECTS,
                    "- kind: parameter\n  name: a\n  file: a\n  version: latest",
                )],
                "not a number",
            ),
            (
                &[(
                    OBJECTS,
                    "- kind: parameter\n  name: a\n  file: a\n  version: 0",
                )],
                "start at 1",
            ),
            (
                &[(
                    OBJECTS,
                    "- kind: parameter\n  name: a\n  file: a\n  mode: \"0999\"",
                )],
                "not octal",
            ),
            (
                &[(
                    OBJECTS,
                    "- kind: parameter\n  name: a\n  file: a\n  mode: 4096",
                )],
                "over 511",
            ),
            (
                &[(OBJECTS, "- kind: parametersByPath\n  path: app\n  file: a")],
                "must begin with '/'",
            ),
            (
                &[(
                    OBJECTS,
                    "- kind: parametersByPath\n  path: /app\n  file: a\n  label: x",
                )],
                "unknown field `label`",
            ),
            (
                &[(
                    OBJECTS,
                    "- kind: secret\n  name: a\n  file: ../../etc/passwd",
                )],
                "starting with '..'",
            ),
            (
                &[(OBJECTS, "- kind: secret\n  name: a\n  file: /etc/passwd")],
                "must be relative",
            ),
            (
                &[(
                    OBJECTS,
                    "- {kind: secret, name: a, file: x}\n- {kind: secret, name: b, file: x/y}",
                )],
                "is also the directory of",
            ),
            (
                &[
                    (OBJECTS, "- {kind: secret, name: a, file: x}"),
                    (TEMPLATES, "- {file: x, template: t}"),
                ],
                "named twice",
            ),
            (
                &[(TEMPLATES, "- {file: x, template: t, extra: 1}")],
                "unknown field `extra`",
            ),
            (&[(OBJECTS, "{kind: secret}")], "attribute objects:"),
        ];
        for (pairs, expected) in cases {
            let err = error(pairs);
            assert!(err.contains(expected), "{pairs:?}: {err}");
        }
    }
}
