//! ParameterFilters of DescribeParameters and GetParametersByPath (and DescribeParameters' older
//! Filters), checked as AWS checks them and matched against records.
//!
//! Keys: `Name` (BeginsWith, Equals, Contains), `Path` (OneLevel, Recursive), `Type`, `KeyId`,
//! `Tier`, `DataType`, `tag:KEY` (Equals, BeginsWith; a tag filter without values asks for the
//! key alone), and `Label` (Equals). As in AWS, GetParametersByPath takes only Type, KeyId and
//! Label, and DescribeParameters takes every key but Label.

use super::model::{ParameterRecord, valid_label};
use super::{ParametersError, validate_name};

/// A filter as the caller sends it.
#[derive(Clone, Debug, Default)]
pub struct StringFilter {
    pub key: String,
    pub option: Option<String>,
    pub values: Vec<String>,
}

/// Which listing the filters are for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listing {
    ByPath,
    Describe,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum FilterKey {
    Name,
    Path,
    Type,
    KeyId,
    Tier,
    DataType,
    Label,
    Tag(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    Equals,
    BeginsWith,
    Contains,
    OneLevel,
    Recursive,
}

/// A filter checked and ready to match.
#[derive(Clone, Debug)]
pub(crate) struct Filter {
    key: FilterKey,
    option: Match,
    values: Vec<String>,
}

const MAX_VALUES: usize = 50;
const MAX_VALUE_LEN: usize = 1024;
const MAX_KEY_LEN: usize = 132;

fn invalid_key(key: &str, listing: Listing) -> ParametersError {
    let valid = match listing {
        Listing::ByPath => "[Type, KeyId, Label, tag:key]",
        Listing::Describe => "[Path, Name, Type, KeyId, Tier, DataType, tag:key]",
    };
    ParametersError::InvalidFilterKey(format!(
        "The following filter key is not valid: {}. Valid filter keys include: {valid}.",
        crate::engine::text::truncate(key)
    ))
}

fn invalid_option(option: &str, valid: &str) -> ParametersError {
    ParametersError::InvalidFilterOption(format!(
        "The following filter option is not valid: {}. Valid options include: {valid}.",
        crate::engine::text::truncate(option)
    ))
}

/// Checks `filters` for `listing`.
pub(crate) fn compile(
    filters: &[StringFilter],
    listing: Listing,
) -> Result<Vec<Filter>, ParametersError> {
    let mut compiled: Vec<Filter> = Vec::with_capacity(filters.len());
    for filter in filters {
        if filter.key.is_empty() || filter.key.len() > MAX_KEY_LEN {
            return Err(invalid_key(&filter.key, listing));
        }
        let key = match filter.key.as_str() {
            "Name" => FilterKey::Name,
            "Path" => FilterKey::Path,
            "Type" => FilterKey::Type,
            "KeyId" => FilterKey::KeyId,
            "Tier" => FilterKey::Tier,
            "DataType" => FilterKey::DataType,
            "Label" => FilterKey::Label,
            other => match other.strip_prefix("tag:") {
                Some(tag) if !tag.is_empty() => FilterKey::Tag(tag.to_owned()),
                _ => return Err(invalid_key(other, listing)),
            },
        };
        let allowed_here = match listing {
            Listing::ByPath => matches!(
                key,
                FilterKey::Type | FilterKey::KeyId | FilterKey::Label | FilterKey::Tag(_)
            ),
            Listing::Describe => key != FilterKey::Label,
        };
        if !allowed_here {
            return Err(invalid_key(&filter.key, listing));
        }
        if compiled.iter().any(|seen| seen.key == key) {
            return Err(ParametersError::InvalidFilterKey(format!(
                "The following filter is duplicated in the request: {}. A request can contain only one occurrence of a specific filter.",
                crate::engine::text::truncate(&filter.key)
            )));
        }
        let option = match (&key, filter.option.as_deref()) {
            (FilterKey::Path, None | Some("OneLevel")) => Match::OneLevel,
            (FilterKey::Path, Some("Recursive")) => Match::Recursive,
            (FilterKey::Path, Some(other)) => {
                return Err(invalid_option(other, "[Recursive, OneLevel]"));
            }
            (FilterKey::Label, None | Some("Equals")) => Match::Equals,
            (FilterKey::Label, Some(other)) => return Err(invalid_option(other, "[Equals]")),
            (_, None | Some("Equals")) => Match::Equals,
            (_, Some("BeginsWith")) => Match::BeginsWith,
            (FilterKey::Name, Some("Contains")) => Match::Contains,
            (FilterKey::Name, Some(other)) => {
                return Err(invalid_option(other, "[BeginsWith, Equals, Contains]"));
            }
            (_, Some(other)) => return Err(invalid_option(other, "[BeginsWith, Equals]")),
        };
        if filter.values.len() > MAX_VALUES
            || filter
                .values
                .iter()
                .any(|value| value.is_empty() || value.len() > MAX_VALUE_LEN)
        {
            return Err(ParametersError::InvalidFilterValue(format!(
                "A filter has at most {MAX_VALUES} values of 1 to {MAX_VALUE_LEN} characters."
            )));
        }
        if filter.values.is_empty() && !matches!(key, FilterKey::Tag(_)) {
            return Err(ParametersError::InvalidFilterValue(format!(
                "The following filter values are missing : null for filter key {}.",
                crate::engine::text::truncate(&filter.key)
            )));
        }
        check_values(&key, &filter.values)?;
        compiled.push(Filter {
            key,
            option,
            values: filter.values.clone(),
        });
    }
    Ok(compiled)
}

fn invalid_value(value: &str, valid: &str) -> ParametersError {
    ParametersError::InvalidFilterValue(format!(
        "The following filter value is not valid: {}. Valid values include: {valid}.",
        crate::engine::text::truncate(value)
    ))
}

fn check_values(key: &FilterKey, values: &[String]) -> Result<(), ParametersError> {
    for value in values {
        match key {
            FilterKey::Type
                if !["String", "StringList", "SecureString"].contains(&value.as_str()) =>
            {
                return Err(invalid_value(value, "[String, StringList, SecureString]"));
            }
            FilterKey::Tier
                if !["Standard", "Advanced", "Intelligent-Tiering"].contains(&value.as_str()) =>
            {
                return Err(invalid_value(
                    value,
                    "[Standard, Advanced, Intelligent-Tiering]",
                ));
            }
            FilterKey::Path => {
                let path = value.trim_end_matches('/');
                if !value.starts_with('/') || (!path.is_empty() && validate_name(path).is_err()) {
                    return Err(invalid_value(value, "paths beginning with /"));
                }
            }
            FilterKey::Label if !valid_label(value) => {
                return Err(invalid_value(value, "labels"));
            }
            _ => {}
        }
    }
    Ok(())
}

/// DescribeParameters' older `Filters` (`Name`, `Type`, `KeyId`), as ParameterFilters.
pub(crate) fn from_legacy(filters: &[StringFilter]) -> Result<Vec<StringFilter>, ParametersError> {
    filters
        .iter()
        .map(|filter| {
            let option = match filter.key.as_str() {
                "Name" => "BeginsWith",
                "Type" | "KeyId" => "Equals",
                other => return Err(invalid_key(other, Listing::Describe)),
            };
            if filter.option.is_some() {
                return Err(ParametersError::Validation(
                    "Filters take no Option; use ParameterFilters.".into(),
                ));
            }
            Ok(StringFilter {
                key: filter.key.clone(),
                option: Some(option.to_owned()),
                values: filter.values.clone(),
            })
        })
        .collect()
}

/// A name with a leading slash, as Name and Path filters compare names.
fn rooted(name: &str) -> String {
    format!("/{}", name.trim_start_matches('/'))
}

/// Whether `name` lies under `path` (with its own trailing slash or not): directly with
/// `one_level`, at any depth otherwise.
pub(crate) fn under_path(name: &str, path: &str, one_level: bool) -> bool {
    let name = rooted(name);
    let prefix = format!("{}/", path.trim_end_matches('/'));
    match name.strip_prefix(&prefix) {
        Some(rest) => !rest.is_empty() && (!one_level || !rest.contains('/')),
        None => false,
    }
}

impl Filter {
    fn text_matches(&self, text: &str) -> bool {
        self.values.iter().any(|value| match self.option {
            Match::Equals => text == value,
            Match::BeginsWith => text.starts_with(value.as_str()),
            Match::Contains => text.contains(value.as_str()),
            Match::OneLevel | Match::Recursive => false,
        })
    }

    /// Whether `record` passes this filter. Label filters are applied by the caller, which
    /// answers the labelled version ([`label_values`]).
    pub(crate) fn matches(&self, record: &ParameterRecord) -> bool {
        match &self.key {
            FilterKey::Name => {
                if self.option == Match::Contains {
                    self.text_matches(&record.name)
                } else {
                    let name = rooted(&record.name);
                    self.values.iter().any(|value| {
                        let value = rooted(value);
                        match self.option {
                            Match::Equals => name == value,
                            _ => name.starts_with(&value),
                        }
                    })
                }
            }
            FilterKey::Path => self
                .values
                .iter()
                .any(|path| under_path(&record.name, path, self.option == Match::OneLevel)),
            FilterKey::Type => self.text_matches(record.type_.as_str()),
            FilterKey::KeyId => record
                .key_id
                .as_deref()
                .is_some_and(|key_id| self.text_matches(key_id)),
            FilterKey::Tier => self.text_matches(record.tier.as_str()),
            FilterKey::DataType => self.text_matches(&record.data_type),
            FilterKey::Label => self
                .values
                .iter()
                .any(|label| record.version_with_label(label).is_some()),
            FilterKey::Tag(tag) => record.tags.iter().any(|(key, value)| {
                key == tag && (self.values.is_empty() || self.text_matches(value))
            }),
        }
    }
}

/// The labels a Label filter asks for, if there is one.
pub(crate) fn label_values(filters: &[Filter]) -> Option<&[String]> {
    filters
        .iter()
        .find(|filter| filter.key == FilterKey::Label)
        .map(|filter| filter.values.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(key: &str, option: Option<&str>, values: &[&str]) -> StringFilter {
        StringFilter {
            key: key.into(),
            option: option.map(str::to_owned),
            values: values.iter().map(|value| (*value).to_owned()).collect(),
        }
    }

    #[test]
    fn keys_options_and_values_are_checked_per_listing() {
        let code = |filters: &[StringFilter], listing| match compile(filters, listing) {
            Ok(_) => "ok",
            Err(ParametersError::InvalidFilterKey(_)) => "key",
            Err(ParametersError::InvalidFilterOption(_)) => "option",
            Err(ParametersError::InvalidFilterValue(_)) => "value",
            Err(_) => "other",
        };
        use Listing::{ByPath, Describe};
        assert_eq!(code(&[filter("Label", None, &["a"])], Describe), "key");
        assert_eq!(code(&[filter("Label", None, &["a"])], ByPath), "ok");
        assert_eq!(code(&[filter("Name", None, &["a"])], ByPath), "key");
        assert_eq!(
            code(&[filter("Path", Some("Deep"), &["/a"])], Describe),
            "option"
        );
        assert_eq!(
            code(&[filter("Type", Some("Contains"), &["String"])], Describe),
            "option"
        );
        assert_eq!(
            code(&[filter("Name", Some("Contains"), &["a"])], Describe),
            "ok"
        );
        assert_eq!(code(&[filter("Type", None, &["Blob"])], Describe), "value");
        assert_eq!(code(&[filter("Type", None, &[])], Describe), "value");
        assert_eq!(code(&[filter("tag:env", None, &[])], Describe), "ok");
        assert_eq!(code(&[filter("tag:", None, &["x"])], Describe), "key");
        assert_eq!(code(&[filter("Bogus", None, &["x"])], Describe), "key");
        assert_eq!(
            code(
                &[
                    filter("Type", None, &["String"]),
                    filter("Type", None, &["String"])
                ],
                Describe
            ),
            "key"
        );
        assert_eq!(
            code(&[filter("Path", None, &["relative"])], Describe),
            "value"
        );
    }

    #[test]
    fn paths_are_one_level_or_recursive() {
        assert!(under_path("/a/b", "/a", true));
        assert!(under_path("/a/b", "/a/", true));
        assert!(!under_path("/a/b/c", "/a", true));
        assert!(under_path("/a/b/c", "/a", false));
        assert!(!under_path("/ab", "/a", false));
        assert!(under_path("/a", "/", true));
        assert!(under_path("plain", "/", true));
        assert!(!under_path("/a", "/a", false));
    }
}
