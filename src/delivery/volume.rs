//! A volume as Coffer understands it, whichever way it was asked for (CSI volume attributes or a
//! SecretProviderClass): the objects it reads, and how their values become files.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use zeroize::Zeroizing;

use super::names::{self, NameError};
use super::template::{Reference, Template};
use super::{VolumeFile, Watched};
use crate::crypto::SecretBytes;

/// Permission bits of a file when the volume does not say.
pub const DEFAULT_MODE: u32 = 0o644;
/// The Secrets Manager stage read when none is given.
pub const CURRENT_STAGE: &str = "AWSCURRENT";

/// An object read from the API, with the version it is pinned to.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    Secret { id: String, pin: SecretPin },
    Parameter { name: String, pin: ParameterPin },
    ParametersUnder { path: String, recursive: bool },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SecretPin {
    Stage(String),
    VersionId(String),
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ParameterPin {
    Latest,
    Version(u64),
    Label(String),
}

impl fmt::Display for Source {
    /// Names the object for messages: never a value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Secret { id, pin } => match pin {
                SecretPin::Stage(stage) if stage == CURRENT_STAGE => write!(f, "secret {id}"),
                SecretPin::Stage(stage) => write!(f, "secret {id} (stage {stage})"),
                SecretPin::VersionId(version) => write!(f, "secret {id} (version {version})"),
            },
            Source::Parameter { name, pin } => match pin {
                ParameterPin::Latest => write!(f, "parameter {name}"),
                ParameterPin::Version(version) => write!(f, "parameter {name} (version {version})"),
                ParameterPin::Label(label) => write!(f, "parameter {name} (label {label})"),
            },
            Source::ParametersUnder { path, .. } => write!(f, "parameters under {path}"),
        }
    }
}

/// What part of a value goes into a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selection {
    Whole,
    /// One top-level key of a JSON object: a string as it is, anything else as compact JSON.
    Property(String),
    /// A JMESPath expression (the AWS provider's `jmesPath`), which must select a string.
    JmesPath(String),
}

/// One thing a volume writes.
#[derive(Clone, Debug)]
pub enum Output {
    /// One secret or parameter (or a part of it) as one file.
    Object {
        source: Source,
        selection: Selection,
        file: String,
        mode: u32,
    },
    /// Every parameter under a path, as files under `directory` named after the parameters.
    Tree {
        path: String,
        recursive: bool,
        directory: String,
        mode: u32,
    },
    /// A template rendered with the values it references.
    Template {
        file: String,
        template: Template,
        mode: u32,
    },
}

/// A value read from the API, with its version.
pub enum Fetched {
    Secret {
        value: SecretBytes,
        version_id: String,
    },
    Parameter {
        value: SecretBytes,
        version: u64,
    },
    Parameters(Vec<PathParameter>),
}

/// One parameter found under a path, named relative to it.
pub struct PathParameter {
    pub relative_name: String,
    pub value: SecretBytes,
    pub version: u64,
}

/// One file of a volume and the version of what it holds, when it holds one object.
#[derive(Debug)]
pub struct Assembled {
    pub file: VolumeFile,
    pub version: Option<String>,
}

/// Why a volume's files cannot be made from the values read. Names objects, never values.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    Name(#[from] NameError),
    #[error("{source_name}: property {property:?}: the value is not a JSON object")]
    NotJsonObject {
        source_name: String,
        property: String,
    },
    #[error("{source_name}: property {property:?} is not in the value")]
    NoProperty {
        source_name: String,
        property: String,
    },
    #[error("{source_name}: jmesPath {expression:?}: {reason}")]
    JmesPath {
        source_name: String,
        expression: String,
        reason: String,
    },
    #[error("{0}: its value was not read")]
    NotFetched(String),
}

/// Where a template reference reads from, and what part of it.
pub fn reference_source(reference: &Reference) -> (Source, Selection) {
    match reference {
        Reference::Secret {
            id,
            json_key,
            stage,
            version_id,
        } => {
            let pin = match (version_id, stage) {
                (Some(version), _) => SecretPin::VersionId(version.clone()),
                (None, Some(stage)) => SecretPin::Stage(stage.clone()),
                (None, None) => SecretPin::Stage(CURRENT_STAGE.to_owned()),
            };
            let selection = json_key
                .clone()
                .map_or(Selection::Whole, Selection::Property);
            (
                Source::Secret {
                    id: id.clone(),
                    pin,
                },
                selection,
            )
        }
        Reference::Parameter { name, version } => {
            let pin = version.map_or(ParameterPin::Latest, ParameterPin::Version);
            (
                Source::Parameter {
                    name: name.clone(),
                    pin,
                },
                Selection::Whole,
            )
        }
    }
}

/// A volume: what it writes, in order.
#[derive(Clone, Debug)]
pub struct Volume {
    pub outputs: Vec<Output>,
}

impl Volume {
    /// Every object to read, once each.
    pub fn sources(&self) -> BTreeSet<Source> {
        let mut sources = BTreeSet::new();
        for output in &self.outputs {
            match output {
                Output::Object { source, .. } => {
                    sources.insert(source.clone());
                }
                Output::Tree {
                    path, recursive, ..
                } => {
                    sources.insert(Source::ParametersUnder {
                        path: path.clone(),
                        recursive: *recursive,
                    });
                }
                Output::Template { template, .. } => {
                    sources.extend(template.references().map(|r| reference_source(r).0));
                }
            }
        }
        sources
    }

    /// What to watch for changes, in `namespace`.
    pub fn watches(&self, namespace: &str) -> Vec<Watched> {
        let watched: BTreeSet<Watched> = self
            .sources()
            .into_iter()
            .map(|source| match source {
                Source::Secret { id, .. } => Watched::Secret {
                    namespace: namespace.to_owned(),
                    id,
                },
                Source::Parameter { name, .. } => Watched::Parameter {
                    namespace: namespace.to_owned(),
                    name,
                },
                Source::ParametersUnder { path, recursive } => Watched::ParametersUnder {
                    namespace: namespace.to_owned(),
                    path,
                    recursive,
                },
            })
            .collect();
        watched.into_iter().collect()
    }

    /// Checks the file names known before anything is read.
    pub fn check_names(&self) -> Result<(), NameError> {
        let mut files = Vec::new();
        for output in &self.outputs {
            match output {
                Output::Object { file, .. } | Output::Template { file, .. } => files.push(file),
                Output::Tree { directory, .. } => {
                    // A directory is checked as a name; its files are known once read.
                    if !directory.is_empty() {
                        names::check(directory)?;
                    }
                }
            }
        }
        names::check_all(files.iter().map(|file| file.as_str()))
    }

    /// The volume's files, from the values read for [`Volume::sources`].
    pub fn assemble(
        &self,
        fetched: &BTreeMap<Source, Fetched>,
    ) -> Result<Vec<Assembled>, VolumeError> {
        let lookup = |source: &Source| {
            fetched
                .get(source)
                .ok_or_else(|| VolumeError::NotFetched(source.to_string()))
        };
        let mut assembled = Vec::new();
        for output in &self.outputs {
            match output {
                Output::Object {
                    source,
                    selection,
                    file,
                    mode,
                } => {
                    let (value, version) = match lookup(source)? {
                        Fetched::Secret { value, version_id } => (value, version_id.clone()),
                        Fetched::Parameter { value, version } => (value, version.to_string()),
                        Fetched::Parameters(_) => {
                            return Err(VolumeError::NotFetched(source.to_string()));
                        }
                    };
                    assembled.push(Assembled {
                        file: VolumeFile {
                            path: file.clone(),
                            mode: *mode,
                            contents: select(source, value, selection)?,
                        },
                        version: Some(version),
                    });
                }
                Output::Tree {
                    path,
                    recursive,
                    directory,
                    mode,
                } => {
                    let source = Source::ParametersUnder {
                        path: path.clone(),
                        recursive: *recursive,
                    };
                    let Fetched::Parameters(parameters) = lookup(&source)? else {
                        return Err(VolumeError::NotFetched(source.to_string()));
                    };
                    for parameter in parameters {
                        names::check(&parameter.relative_name)?;
                        assembled.push(Assembled {
                            file: VolumeFile {
                                path: names::join(directory, &parameter.relative_name),
                                mode: *mode,
                                contents: parameter.value.clone(),
                            },
                            version: Some(parameter.version.to_string()),
                        });
                    }
                }
                Output::Template {
                    file,
                    template,
                    mode,
                } => {
                    let contents = template.render(|reference| {
                        let (source, selection) = reference_source(reference);
                        match lookup(&source)? {
                            Fetched::Secret { value, .. } | Fetched::Parameter { value, .. } => {
                                select(&source, value, &selection)
                            }
                            Fetched::Parameters(_) => {
                                Err(VolumeError::NotFetched(source.to_string()))
                            }
                        }
                    })?;
                    assembled.push(Assembled {
                        file: VolumeFile {
                            path: file.clone(),
                            mode: *mode,
                            contents,
                        },
                        version: None,
                    });
                }
            }
        }
        names::check_all(assembled.iter().map(|a| a.file.path.as_str()))?;
        Ok(assembled)
    }
}

/// The part of `value` that `selection` asks for. The parsed JSON is transient and not wiped:
/// serde_json and jmespath trees cannot be; the selected bytes are.
fn select(
    source: &Source,
    value: &SecretBytes,
    selection: &Selection,
) -> Result<SecretBytes, VolumeError> {
    match selection {
        Selection::Whole => Ok(value.clone()),
        Selection::Property(property) => {
            let not_object = || VolumeError::NotJsonObject {
                source_name: source.to_string(),
                property: property.clone(),
            };
            let object: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(value.expose()).map_err(|_| not_object())?;
            let found = object
                .get(property)
                .ok_or_else(|| VolumeError::NoProperty {
                    source_name: source.to_string(),
                    property: property.clone(),
                })?;
            Ok(match found {
                serde_json::Value::String(text) => SecretBytes::from_slice(text.as_bytes()),
                other => {
                    let compact =
                        Zeroizing::new(serde_json::to_vec(other).map_err(|_| not_object())?);
                    SecretBytes::from_slice(&compact)
                }
            })
        }
        Selection::JmesPath(expression) => {
            let failed = |reason: &str| VolumeError::JmesPath {
                source_name: source.to_string(),
                expression: expression.clone(),
                reason: reason.to_owned(),
            };
            let compiled =
                jmespath::compile(expression).map_err(|_| failed("not a valid expression"))?;
            let text =
                std::str::from_utf8(value.expose()).map_err(|_| failed("the value is not JSON"))?;
            let data =
                jmespath::Variable::from_json(text).map_err(|_| failed("the value is not JSON"))?;
            let found = compiled
                .search(data)
                .map_err(|_| failed("the search failed"))?;
            match found.as_string() {
                Some(text) => Ok(SecretBytes::from_slice(text.as_bytes())),
                None if found.is_null() => Err(failed("selects nothing")),
                None => Err(failed("selects something other than a string")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(id: &str) -> Source {
        Source::Secret {
            id: id.into(),
            pin: SecretPin::Stage(CURRENT_STAGE.into()),
        }
    }

    fn fetched_secret(value: &str) -> Fetched {
        Fetched::Secret {
            value: SecretBytes::from_slice(value.as_bytes()),
            version_id: "v1".into(),
        }
    }

    fn text(bytes: &SecretBytes) -> &str {
        std::str::from_utf8(bytes.expose()).unwrap()
    }

    #[test]
    fn selections_pick_the_part_asked_for() {
        let source = secret("db");
        let value = SecretBytes::from_slice(br#"{"password":"pw","port":5432,"tls":{"on":true}}"#);
        let pick = |selection: Selection| select(&source, &value, &selection);
        assert_eq!(
            text(&pick(Selection::Whole).unwrap()),
            r#"{"password":"pw","port":5432,"tls":{"on":true}}"#
        );
        assert_eq!(
            text(&pick(Selection::Property("password".into())).unwrap()),
            "pw"
        );
        assert_eq!(
            text(&pick(Selection::Property("port".into())).unwrap()),
            "5432"
        );
        assert_eq!(
            text(&pick(Selection::Property("tls".into())).unwrap()),
            r#"{"on":true}"#
        );
        let missing = pick(Selection::Property("user".into())).unwrap_err();
        assert_eq!(
            missing.to_string(),
            r#"secret db: property "user" is not in the value"#
        );
        assert_eq!(
            text(&pick(Selection::JmesPath("password".into())).unwrap()),
            "pw"
        );
        assert!(
            pick(Selection::JmesPath("port".into()))
                .unwrap_err()
                .to_string()
                .contains("other than a string")
        );
        assert!(
            pick(Selection::JmesPath("nothing".into()))
                .unwrap_err()
                .to_string()
                .contains("selects nothing")
        );
        assert!(pick(Selection::JmesPath("[[".into())).is_err());

        let plain = SecretBytes::from_slice(b"not json pw");
        let err = select(&source, &plain, &Selection::Property("password".into())).unwrap_err();
        assert!(!err.to_string().contains("pw"));
        assert!(matches!(err, VolumeError::NotJsonObject { .. }));
    }

    #[test]
    fn assembles_objects_trees_and_templates() {
        let tree = Source::ParametersUnder {
            path: "/app".into(),
            recursive: true,
        };
        let volume = Volume {
            outputs: vec![
                Output::Object { source: secret("db"), selection: Selection::Property("user".into()), file: "user".into(), mode: 0o400 },
                Output::Tree { path: "/app".into(), recursive: true, directory: "conf".into(), mode: DEFAULT_MODE },
                Output::Template {
                    file: "dsn".into(),
                    template: Template::parse("postgres://{{resolve:secretsmanager:db:SecretString:user}}@{{resolve:ssm:/app/host:2}}").unwrap(),
                    mode: 0o440,
                },
            ],
        };
        let host = Source::Parameter {
            name: "/app/host".into(),
            pin: ParameterPin::Version(2),
        };
        assert_eq!(
            volume.sources(),
            BTreeSet::from([secret("db"), tree.clone(), host.clone()])
        );
        let mut fetched = BTreeMap::new();
        fetched.insert(secret("db"), fetched_secret(r#"{"user":"admin"}"#));
        fetched.insert(
            host,
            Fetched::Parameter {
                value: SecretBytes::from_slice(b"db.local"),
                version: 2,
            },
        );
        fetched.insert(
            tree.clone(),
            Fetched::Parameters(vec![
                PathParameter {
                    relative_name: "a".into(),
                    value: SecretBytes::from_slice(b"1"),
                    version: 4,
                },
                PathParameter {
                    relative_name: "b/c".into(),
                    value: SecretBytes::from_slice(b"2"),
                    version: 9,
                },
            ]),
        );
        let files = volume.assemble(&fetched).unwrap();
        let summary: Vec<_> = files
            .iter()
            .map(|a| {
                (
                    a.file.path.as_str(),
                    a.file.mode,
                    text(&a.file.contents),
                    a.version.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("user", 0o400, "admin", Some("v1")),
                ("conf/a", 0o644, "1", Some("4")),
                ("conf/b/c", 0o644, "2", Some("9")),
                ("dsn", 0o440, "postgres://admin@db.local", None),
            ]
        );

        // A parameter name that climbs out of its directory is refused, whatever the API said.
        fetched.insert(
            tree,
            Fetched::Parameters(vec![PathParameter {
                relative_name: "../../etc/x".into(),
                value: SecretBytes::from_slice(b"1"),
                version: 1,
            }]),
        );
        assert!(matches!(
            volume.assemble(&fetched),
            Err(VolumeError::Name(_))
        ));
    }

    #[test]
    fn a_file_named_twice_is_refused_before_anything_is_read() {
        let volume = Volume {
            outputs: vec![
                Output::Object {
                    source: secret("a"),
                    selection: Selection::Whole,
                    file: "x".into(),
                    mode: DEFAULT_MODE,
                },
                Output::Template {
                    file: "x".into(),
                    template: Template::parse("t").unwrap(),
                    mode: DEFAULT_MODE,
                },
            ],
        };
        assert_eq!(volume.check_names(), Err(NameError::Duplicate("x".into())));
        let watched = volume.watches("team");
        assert_eq!(
            watched,
            [Watched::Secret {
                namespace: "team".into(),
                id: "a".into()
            }]
        );
    }
}
