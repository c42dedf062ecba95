//! Templates: literal text with CloudFormation dynamic references.
//!
//! `{{resolve:secretsmanager:SECRET-ID:SecretString:JSON-KEY:VERSION-STAGE:VERSION-ID}}` (the
//! parts after SECRET-ID optional), `{{resolve:ssm:NAME}}`, `{{resolve:ssm:NAME:VERSION}}` and
//! the same with `ssm-secure`; everything else is literal text. As in CloudFormation, a
//! SECRET-ID or NAME may be a full ARN, whose colons belong to it: a Secrets Manager ARN is
//! seven colon-separated parts (`arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`), a
//! parameter ARN six (`arn:aws:ssm:REGION:ACCOUNT:parameter/NAME`). JSON-KEY and VERSION-STAGE
//! may be left empty to reach a later part (`...:SecretString::AWSPREVIOUS`), as CloudFormation
//! allows; any other empty part is refused.

use winnow::combinator::{alt, cut_err, preceded, repeat, separated, terminated};
use winnow::error::{StrContext, StrContextValue};
use winnow::prelude::*;
use winnow::stream::LocatingSlice;
use winnow::token::{rest, take_until, take_while};
use zeroize::Zeroizing;

use crate::crypto::SecretBytes;

const OPEN: &str = "{{resolve:";
const CLOSE: &str = "}}";
/// Colon-separated parts of a Secrets Manager ARN and of a parameter ARN.
const SECRET_ARN_PARTS: usize = 7;
const PARAMETER_ARN_PARTS: usize = 6;

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Text(String),
    Reference(Reference),
}

/// One dynamic reference.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reference {
    /// `secretsmanager`: the whole SecretString, or one key of it as JSON.
    Secret {
        id: String,
        json_key: Option<String>,
        stage: Option<String>,
        version_id: Option<String>,
    },
    /// `ssm` and `ssm-secure` (both read with decryption).
    Parameter { name: String, version: Option<u64> },
}

/// Why a template does not parse: where, and what is wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, column {column}: {reason}")]
pub struct TemplateError {
    pub line: usize,
    pub column: usize,
    pub reason: String,
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let pieces: Vec<Piece<'_>> = repeat(0.., alt((reference, literal.map(Piece::Text))))
            .parse(LocatingSlice::new(text))
            .map_err(|err| {
                let reason = err
                    .inner()
                    .context()
                    .find_map(|context| match context {
                        StrContext::Label(label) => Some((*label).to_owned()),
                        _ => None,
                    })
                    .unwrap_or_else(|| "unterminated reference".to_owned());
                position(text, err.offset(), reason)
            })?;
        let mut segments = Vec::new();
        for piece in pieces {
            segments.push(match piece {
                Piece::Text(literal) => Segment::Text(literal.to_owned()),
                Piece::Reference { at, parts } => Segment::Reference(
                    interpret(&parts).map_err(|reason| position(text, at, reason))?,
                ),
            });
        }
        Ok(Self { segments })
    }

    /// The references, in order of appearance (repeats included).
    pub fn references(&self) -> impl Iterator<Item = &Reference> {
        self.segments.iter().filter_map(|segment| match segment {
            Segment::Reference(reference) => Some(reference),
            Segment::Text(_) => None,
        })
    }

    /// The text with each reference replaced by what `value` gives for it.
    pub fn render<E>(
        &self,
        mut value: impl FnMut(&Reference) -> Result<SecretBytes, E>,
    ) -> Result<SecretBytes, E> {
        let mut out = Zeroizing::new(Vec::new());
        for segment in &self.segments {
            match segment {
                Segment::Text(text) => out.extend_from_slice(text.as_bytes()),
                Segment::Reference(reference) => {
                    out.extend_from_slice(value(reference)?.expose());
                }
            }
        }
        Ok(SecretBytes::new(std::mem::take(&mut *out)))
    }
}

type Input<'i> = LocatingSlice<&'i str>;

/// What the grammar sees: literal text, or a reference's parts (and where it starts), whose
/// meaning [`interpret`] gives.
enum Piece<'i> {
    Text(&'i str),
    Reference { at: usize, parts: Vec<&'i str> },
}

/// Text up to the next reference, or to the end.
fn literal<'i>(input: &mut Input<'i>) -> ModalResult<&'i str> {
    alt((
        take_until(1.., OPEN),
        rest.verify(|text: &str| !text.is_empty()),
    ))
    .parse_next(input)
}

/// `{{resolve:` parts separated by `:` `}}`; once `{{resolve:` is seen, nothing else will do.
fn reference<'i>(input: &mut Input<'i>) -> ModalResult<Piece<'i>> {
    preceded(
        OPEN,
        cut_err(terminated(separated(1.., part, ':'), CLOSE))
            .context(StrContext::Label(
                "unterminated reference (or a character not allowed in one: whitespace, '{', \
                 '}') where '}}' was expected",
            ))
            .context(StrContext::Expected(StrContextValue::StringLiteral(CLOSE))),
    )
    .with_span()
    .map(|(parts, span)| Piece::Reference {
        at: span.start,
        parts,
    })
    .parse_next(input)
}

fn part<'i>(input: &mut Input<'i>) -> ModalResult<&'i str> {
    take_while(0.., |c: char| {
        c != ':' && c != '{' && c != '}' && !c.is_whitespace()
    })
    .parse_next(input)
}

/// The meaning of a reference's parts: service, identifier, and what follows.
fn interpret(parts: &[&str]) -> Result<Reference, String> {
    let Some((service, rest)) = parts.split_first() else {
        return Err("empty reference".into());
    };
    match *service {
        "secretsmanager" => secret(rest),
        "ssm" | "ssm-secure" => parameter(service, rest),
        "" => Err("the reference names no service".into()),
        other => Err(format!(
            "unknown service {other:?} (secretsmanager, ssm or ssm-secure)"
        )),
    }
}

/// The identifier (a name, or an ARN of `arn_parts` parts) and the parts after it.
fn identifier<'p>(
    parts: &'p [&'p str],
    arn_parts: usize,
    what: &str,
) -> Result<(String, &'p [&'p str]), String> {
    let (id, after) = if parts.first() == Some(&"arn") {
        parts
            .split_at_checked(arn_parts)
            .map(|(arn, after)| (arn.join(":"), after))
            .ok_or_else(|| format!("the {what} ARN is cut short"))?
    } else {
        let (name, after) = parts
            .split_first()
            .ok_or_else(|| format!("the reference names no {what}"))?;
        ((*name).to_owned(), after)
    };
    if id.is_empty() || id.split(':').any(str::is_empty) {
        return Err(format!("the reference names no {what}"));
    }
    Ok((id, after))
}

/// An optional part: absent, or left empty to reach a later one.
fn optional(parts: &[&str], index: usize) -> Option<String> {
    parts
        .get(index)
        .filter(|part| !part.is_empty())
        .map(|part| (*part).to_owned())
}

fn secret(parts: &[&str]) -> Result<Reference, String> {
    let (id, after) = identifier(parts, SECRET_ARN_PARTS, "secret")?;
    if after.len() > 4 {
        return Err(format!(
            "secret {id}: too many parts (SecretString:JSON-KEY:VERSION-STAGE:VERSION-ID at most)"
        ));
    }
    if after.last().is_some_and(|part| part.is_empty()) {
        return Err(format!(
            "secret {id}: the reference ends with an empty part"
        ));
    }
    if let Some(kind) = after.first()
        && *kind != "SecretString"
    {
        return Err(format!(
            "secret {id}: {kind:?} where SecretString was expected (the only kind a reference reads)"
        ));
    }
    let stage = optional(after, 2);
    let version_id = optional(after, 3);
    if stage.is_some() && version_id.is_some() {
        return Err(format!(
            "secret {id}: give VERSION-STAGE or VERSION-ID, not both"
        ));
    }
    Ok(Reference::Secret {
        id,
        json_key: optional(after, 1),
        stage,
        version_id,
    })
}

fn parameter(service: &str, parts: &[&str]) -> Result<Reference, String> {
    let (name, after) = identifier(parts, PARAMETER_ARN_PARTS, "parameter")?;
    let version = match after {
        [] => None,
        [version] => Some(
            version
                .parse::<u64>()
                .ok()
                .filter(|number| *number > 0)
                .ok_or_else(|| {
                    format!(
                        "{service} parameter {name}: version {version:?} is not a positive number"
                    )
                })?,
        ),
        _ => {
            return Err(format!(
                "{service} parameter {name}: too many parts (NAME:VERSION at most)"
            ));
        }
    };
    Ok(Reference::Parameter { name, version })
}

/// A byte offset as a 1-based line and column (in characters).
fn position(text: &str, offset: usize, reason: String) -> TemplateError {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before.get(line_start..).map_or(0, |l| l.chars().count()) + 1;
    TemplateError {
        line,
        column,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(
        id: &str,
        key: Option<&str>,
        stage: Option<&str>,
        version: Option<&str>,
    ) -> Reference {
        Reference::Secret {
            id: id.into(),
            json_key: key.map(Into::into),
            stage: stage.map(Into::into),
            version_id: version.map(Into::into),
        }
    }

    fn refs(text: &str) -> Vec<Reference> {
        Template::parse(text)
            .unwrap()
            .references()
            .cloned()
            .collect()
    }

    #[test]
    fn parses_every_form_of_reference() {
        assert_eq!(
            refs("{{resolve:secretsmanager:app/db}}"),
            [secret("app/db", None, None, None)]
        );
        assert_eq!(
            refs("{{resolve:secretsmanager:app/db:SecretString:password}}"),
            [secret("app/db", Some("password"), None, None)]
        );
        assert_eq!(
            refs("{{resolve:secretsmanager:db:SecretString:password:AWSPREVIOUS}}"),
            [secret("db", Some("password"), Some("AWSPREVIOUS"), None)]
        );
        assert_eq!(
            refs("{{resolve:secretsmanager:db:SecretString::AWSPENDING}}"),
            [secret("db", None, Some("AWSPENDING"), None)]
        );
        assert_eq!(
            refs("{{resolve:secretsmanager:db:SecretString:user::0123-abcd}}"),
            [secret("db", Some("user"), None, Some("0123-abcd"))]
        );
        assert_eq!(
            refs("{{resolve:ssm:/app/url}}{{resolve:ssm:/app/url:3}}{{resolve:ssm-secure:pw}}"),
            [
                Reference::Parameter {
                    name: "/app/url".into(),
                    version: None
                },
                Reference::Parameter {
                    name: "/app/url".into(),
                    version: Some(3)
                },
                Reference::Parameter {
                    name: "pw".into(),
                    version: None
                },
            ]
        );
    }

    #[test]
    fn an_arn_keeps_its_colons() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:app/db-AbCdEf";
        assert_eq!(
            refs(&format!(
                "{{{{resolve:secretsmanager:{arn}:SecretString:password}}}}"
            )),
            [secret(arn, Some("password"), None, None)]
        );
        assert_eq!(
            refs(&format!("{{{{resolve:secretsmanager:{arn}}}}}")),
            [secret(arn, None, None, None)]
        );
        let parameter = "arn:aws:ssm:us-east-1:123456789012:parameter/app/url";
        assert_eq!(
            refs(&format!("{{{{resolve:ssm:{parameter}:7}}}}")),
            [Reference::Parameter {
                name: parameter.into(),
                version: Some(7)
            }]
        );
        let err = Template::parse("{{resolve:secretsmanager:arn:aws:secretsmanager:us-east-1}}")
            .unwrap_err();
        assert!(err.reason.contains("ARN is cut short"), "{err}");
    }

    #[test]
    fn renders_text_around_references() {
        let template = Template::parse("user=admin\npassword={{resolve:secretsmanager:db:SecretString:password}}\nurl={{resolve:ssm:/url}}{ not a reference }}").unwrap();
        let out = template
            .render(|reference| -> Result<SecretBytes, ()> {
                Ok(SecretBytes::from_slice(match reference {
                    Reference::Secret { .. } => b"s3cr3t",
                    Reference::Parameter { .. } => b"https://db",
                }))
            })
            .unwrap();
        assert_eq!(
            std::str::from_utf8(out.expose()).unwrap(),
            "user=admin\npassword=s3cr3t\nurl=https://db{ not a reference }}"
        );
        // No references: the text as it is; an empty template is an empty file.
        assert_eq!(
            Template::parse("{{ plain }}").unwrap().references().count(),
            0
        );
        assert!(
            Template::parse("")
                .unwrap()
                .render(|_| -> Result<SecretBytes, ()> { unreachable!() })
                .unwrap()
                .is_empty()
        );
        // A failing lookup fails the render.
        assert_eq!(template.render(|_| Err("nope")).unwrap_err(), "nope");
    }

    proptest::proptest! {
        /// Text without `{{resolve:` is literal, whatever it holds, and renders as it was.
        #[test]
        fn text_without_references_renders_as_it_is(text in "[a-z{}:\n ]{0,40}") {
            proptest::prop_assume!(!text.contains(OPEN));
            let template = Template::parse(&text).unwrap();
            proptest::prop_assert_eq!(template.references().count(), 0);
            let out = template.render(|_| -> Result<SecretBytes, ()> { Err(()) }).unwrap();
            proptest::prop_assert_eq!(out.expose(), text.as_bytes());
        }

        /// A reference between any two literal texts is found, and the texts kept around it.
        #[test]
        fn a_reference_is_found_between_any_texts(
            before in "[a-z{}: ]{0,12}",
            name in "/[a-z][a-z0-9/_.-]{0,12}",
            after in "[a-z{}: ]{0,12}",
        ) {
            proptest::prop_assume!(!before.contains(OPEN) && !after.contains(OPEN));
            let text = format!("{before}{{{{resolve:ssm:{name}}}}}{after}");
            let template = Template::parse(&text).unwrap();
            let found: Vec<_> = template.references().cloned().collect();
            proptest::prop_assert_eq!(found, vec![Reference::Parameter { name: name.clone(), version: None }]);
            let out = template
                .render(|_| -> Result<SecretBytes, ()> { Ok(SecretBytes::from_slice(b"V")) })
                .unwrap();
            let expected = format!("{before}V{after}");
            proptest::prop_assert_eq!(out.expose(), expected.as_bytes());
        }
    }

    #[test]
    fn errors_say_where_and_what() {
        let err = Template::parse("a\nbc {{resolve:ssm:/x").unwrap_err();
        assert_eq!((err.line, err.column), (2, 20), "{err}");
        assert!(err.reason.contains("unterminated"), "{err}");
        let err = Template::parse("{{resolve:ssm:/x y}}").unwrap_err();
        assert_eq!((err.line, err.column), (1, 17));

        let cases = [
            ("{{resolve:kms:key}}", "unknown service \"kms\""),
            ("{{resolve::x}}", "no service"),
            ("{{resolve:ssm:}}", "names no parameter"),
            ("{{resolve:ssm::1}}", "names no parameter"),
            ("{{resolve:secretsmanager:}}", "names no secret"),
            ("{{resolve:ssm:/x:latest}}", "not a positive number"),
            ("{{resolve:ssm:/x:0}}", "not a positive number"),
            ("{{resolve:ssm:/x:1:2}}", "too many parts"),
            (
                "{{resolve:secretsmanager:db:SecretBinary}}",
                "SecretString was expected",
            ),
            (
                "{{resolve:secretsmanager:db:SecretString:}}",
                "ends with an empty part",
            ),
            (
                "{{resolve:secretsmanager:db:SecretString:k:AWSCURRENT:v1}}",
                "not both",
            ),
            (
                "{{resolve:secretsmanager:db:SecretString:k:s::x}}",
                "too many parts",
            ),
        ];
        for (text, expected) in cases {
            let err = Template::parse(&format!("x {text}")).unwrap_err();
            assert!(err.reason.contains(expected), "{text}: {err}");
            assert_eq!((err.line, err.column), (1, 3), "{text}");
        }
    }
}
