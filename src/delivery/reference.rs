//! The short form that annotations use to name a secret or parameter:
//! `KIND/NAME[#PROPERTY][?KEY=VALUE&...]`, for example `secret/app-db#password` or
//! `parameter//shop/web/url?label=prod`. docs/injection.md describes it for users.
//!
//! Neither secret names (`A-Za-z0-9/_+=.@-`) nor parameter names (`A-Za-z0-9_.-/`) hold `#`,
//! `?`, `&` or whitespace, so the parts split without escapes.

use std::fmt;

use serde_json::{Map, Value};

/// What a reference names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ReferenceKind {
    Secret,
    Parameter,
    /// Every parameter under a path (a directory of files).
    Parameters,
}

impl ReferenceKind {
    fn keyword(self) -> &'static str {
        match self {
            ReferenceKind::Secret => "secret",
            ReferenceKind::Parameter => "parameter",
            ReferenceKind::Parameters => "parameters",
        }
    }
}

/// A parsed reference. `options` are the query's pairs, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectReference {
    pub kind: ReferenceKind,
    pub name: String,
    pub property: Option<String>,
    pub options: Vec<(String, String)>,
}

/// Why a reference does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReferenceError {
    #[error("{0:?} does not begin with secret/, parameter/ or parameters/")]
    Kind(String),
    #[error("{0:?} names nothing after the kind")]
    NoName(String),
    #[error("{0:?} holds whitespace")]
    Whitespace(String),
    #[error("{reference:?}: {reason}")]
    Invalid { reference: String, reason: String },
}

/// Longest reference accepted: an annotation value is small, and a name at most 2048 bytes.
const MAX_LENGTH: usize = 4096;

impl ObjectReference {
    /// Parses `text` (surrounding whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, ReferenceError> {
        let text = text.trim();
        if text.len() > MAX_LENGTH {
            return Err(ReferenceError::Invalid {
                reference: text.chars().take(64).collect(),
                reason: format!("longer than {MAX_LENGTH} bytes"),
            });
        }
        if text.chars().any(char::is_whitespace) {
            return Err(ReferenceError::Whitespace(text.to_owned()));
        }
        let (kind, rest) = [
            ReferenceKind::Secret,
            ReferenceKind::Parameters,
            ReferenceKind::Parameter,
        ]
        .into_iter()
        .find_map(|kind| {
            text.strip_prefix(kind.keyword())
                .and_then(|rest| rest.strip_prefix('/'))
                .map(|rest| (kind, rest))
        })
        .ok_or_else(|| ReferenceError::Kind(text.to_owned()))?;
        let invalid = |reason: String| ReferenceError::Invalid {
            reference: text.to_owned(),
            reason,
        };
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (name, property) = match rest.split_once('#') {
            Some((name, property)) => (name, Some(property)),
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::NoName(text.to_owned()));
        }
        if kind == ReferenceKind::Parameters && property.is_some() {
            return Err(invalid(
                "parameters/ writes a directory and takes no #property".into(),
            ));
        }
        if property.is_some_and(|property| property.is_empty() || property.contains('#')) {
            return Err(invalid("#property must be one non-empty key".into()));
        }
        let mut options = Vec::new();
        for pair in query.into_iter().flat_map(|query| query.split('&')) {
            let Some((key, value)) = pair.split_once('=') else {
                return Err(invalid(format!("option {pair:?} is not KEY=VALUE")));
            };
            if value.is_empty() {
                return Err(invalid(format!("option {key:?} has no value")));
            }
            if options.iter().any(|(seen, _)| seen == key) {
                return Err(invalid(format!("option {key:?} is given twice")));
            }
            let allowed: &[&str] = match kind {
                ReferenceKind::Secret => &["stage", "version", "mode"],
                ReferenceKind::Parameter => &["version", "label", "mode"],
                ReferenceKind::Parameters => &["recursive", "mode"],
            };
            if !allowed.contains(&key) {
                return Err(invalid(format!(
                    "unknown option {key:?} for {} (known: {})",
                    kind.keyword(),
                    allowed.join(", ")
                )));
            }
            options.push((key.to_owned(), value.to_owned()));
        }
        Ok(ObjectReference {
            kind,
            name: name.to_owned(),
            property: property.map(str::to_owned),
            options,
        })
    }

    /// Whether the reference follows its object's changes: no version, label or stage other
    /// than AWSCURRENT pins it.
    pub fn follows_changes(&self) -> bool {
        self.options.iter().all(|(key, value)| match key.as_str() {
            "stage" => value == super::volume::CURRENT_STAGE,
            "version" | "label" => false,
            _ => true,
        })
    }

    /// The entry of a CSI volume's `objects` attribute that writes this reference to `file`
    /// (docs/csi-volumes.md); the volume's own parser checks it further.
    pub fn object_entry(&self, file: &str) -> Value {
        let mut entry = Map::new();
        let kind = match self.kind {
            ReferenceKind::Secret => "secret",
            ReferenceKind::Parameter => "parameter",
            ReferenceKind::Parameters => "parametersByPath",
        };
        entry.insert("kind".into(), Value::from(kind));
        let name_field = if self.kind == ReferenceKind::Parameters {
            "path"
        } else {
            "name"
        };
        entry.insert(name_field.into(), Value::from(self.name.as_str()));
        entry.insert("file".into(), Value::from(file));
        if let Some(property) = &self.property {
            entry.insert("property".into(), Value::from(property.as_str()));
        }
        for (key, value) in &self.options {
            let value = match key.as_str() {
                "recursive" => match value.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    // Left as text: the volume's parser refuses it with its own message.
                    other => Value::from(other),
                },
                _ => Value::from(value.as_str()),
            };
            entry.insert(key.clone(), value);
        }
        Value::Object(entry)
    }
}

impl fmt::Display for ObjectReference {
    /// The reference as written: names only, never a value.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.keyword(), self.name)?;
        if let Some(property) = &self.property {
            write!(f, "#{property}")?;
        }
        for (index, (key, value)) in self.options.iter().enumerate() {
            let separator = if index == 0 { '?' } else { '&' };
            write!(f, "{separator}{key}={value}")?;
        }
        Ok(())
    }
}

/// The references of a list separated by commas or whitespace (`restart-on-change`), as text:
/// each is parsed on its own, so that one bad entry can be named without losing the rest.
pub fn split_list(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|part| !part.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_kind_with_property_and_options() {
        let secret = ObjectReference::parse("secret/app-db#password").unwrap();
        assert_eq!(secret.kind, ReferenceKind::Secret);
        assert_eq!(secret.name, "app-db");
        assert_eq!(secret.property.as_deref(), Some("password"));
        assert!(secret.options.is_empty());
        assert!(secret.follows_changes());

        let prod =
            ObjectReference::parse(" parameter//shop/web/url?label=prod&mode=0400 ").unwrap();
        assert_eq!(prod.kind, ReferenceKind::Parameter);
        assert_eq!(prod.name, "/shop/web/url");
        assert_eq!(
            prod.options,
            vec![
                ("label".to_owned(), "prod".to_owned()),
                ("mode".to_owned(), "0400".to_owned())
            ]
        );
        assert!(!prod.follows_changes());
        assert_eq!(
            prod.to_string(),
            "parameter//shop/web/url?label=prod&mode=0400"
        );

        let tree = ObjectReference::parse("parameters//shop/web?recursive=false").unwrap();
        assert_eq!(tree.kind, ReferenceKind::Parameters);
        assert_eq!(tree.name, "/shop/web");

        // Secret names may hold '@', '=' and '+'.
        let odd = ObjectReference::parse("secret/team@a/k=v+1?stage=AWSCURRENT").unwrap();
        assert_eq!(odd.name, "team@a/k=v+1");
        assert!(odd.follows_changes());
        assert!(
            !ObjectReference::parse("secret/db?stage=AWSPREVIOUS")
                .unwrap()
                .follows_changes()
        );
        assert!(
            !ObjectReference::parse("secret/db?version=abc")
                .unwrap()
                .follows_changes()
        );
    }

    #[test]
    fn refuses_what_is_malformed() {
        for (text, fragment) in [
            ("db", "does not begin"),
            ("configmap/db", "does not begin"),
            ("secret/", "names nothing"),
            ("secret/#x", "names nothing"),
            ("secret/a b", "whitespace"),
            ("secret/db#", "#property"),
            ("secret/db#a#b", "#property"),
            ("secret/db?label=x", "unknown option \"label\""),
            ("parameter/p?stage=x", "unknown option \"stage\""),
            ("secret/db?stage", "KEY=VALUE"),
            ("secret/db?stage=", "no value"),
            ("secret/db?mode=0400&mode=0600", "twice"),
            ("parameters//a#b", "no #property"),
        ] {
            let err = ObjectReference::parse(text).unwrap_err().to_string();
            assert!(err.contains(fragment), "{text}: {err}");
        }
        let long = format!("secret/{}", "a".repeat(5000));
        assert!(ObjectReference::parse(&long).is_err());
    }

    #[test]
    fn object_entries_are_what_the_volume_parser_takes() {
        let entry = ObjectReference::parse("parameters//shop?recursive=false&mode=0440")
            .unwrap()
            .object_entry("config");
        assert_eq!(
            entry,
            serde_json::json!({"kind": "parametersByPath", "path": "/shop", "file": "config",
                "recursive": false, "mode": "0440"})
        );
        let entry = ObjectReference::parse("secret/db#password?stage=AWSPREVIOUS")
            .unwrap()
            .object_entry("db");
        assert_eq!(
            entry,
            serde_json::json!({"kind": "secret", "name": "db", "file": "db",
                "property": "password", "stage": "AWSPREVIOUS"})
        );
    }

    #[test]
    fn lists_split_on_commas_and_whitespace() {
        let list: Vec<&str> = split_list("secret/a, parameter//b\n secret/c,,").collect();
        assert_eq!(list, ["secret/a", "parameter//b", "secret/c"]);
        assert_eq!(split_list(" , ").count(), 0);
    }
}
