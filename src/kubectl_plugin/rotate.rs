//! `rotate` (RotateSecret) and `history` (ListSecretVersionIds).

use std::fmt::Write as _;
use std::process::ExitCode;

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::PluginError;
use super::api::CofferApi;
use super::cli::{HistoryArgs, KubeArgs, OutputFormat, RotateArgs};
use super::kube_context::KubeContext;
use super::seal::write_output;

/// The most pages `history` follows (100 versions each): a loop guard, far beyond what a
/// secret keeps.
const MAX_PAGES: usize = 100;

/// `kubectl coffer rotate`.
pub async fn run_rotate(kube: &KubeArgs, args: RotateArgs) -> Result<ExitCode, PluginError> {
    let context = KubeContext::load(kube).await?;
    let api = CofferApi::connect(&context, &args.api).await?;
    let answer = api
        .call_ok(
            "secretsmanager.RotateSecret",
            &json!({"SecretId": args.secret, "RotateImmediately": args.immediately}),
        )
        .await?;
    let field = |name: &str| answer.get(name).and_then(Value::as_str).unwrap_or("-");
    let mut text = format!(
        "rotation started for {} ({})\n",
        field("Name"),
        field("ARN")
    );
    if let Some(version) = answer.get("VersionId").and_then(Value::as_str) {
        let _ = writeln!(
            text,
            "new version: {version} (AWSPENDING until the rotation finishes)"
        );
    } else if !args.immediately {
        text.push_str("rotation set up; it runs on the secret's schedule\n");
    }
    write_output(None, text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// One version of a secret, as `history` shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub version_id: String,
    pub version_stages: Vec<String>,
    /// Epoch seconds, as the API gives them.
    pub created_date: Option<f64>,
    pub last_accessed_date: Option<f64>,
}

impl Version {
    fn from_entry(entry: &Value) -> Option<Self> {
        Some(Self {
            version_id: entry.get("VersionId")?.as_str()?.to_owned(),
            version_stages: entry
                .get("VersionStages")
                .and_then(Value::as_array)
                .map(|stages| {
                    stages
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            created_date: entry.get("CreatedDate").and_then(Value::as_f64),
            last_accessed_date: entry.get("LastAccessedDate").and_then(Value::as_f64),
        })
    }
}

/// `kubectl coffer history`.
pub async fn run_history(kube: &KubeArgs, args: HistoryArgs) -> Result<ExitCode, PluginError> {
    let context = KubeContext::load(kube).await?;
    let api = CofferApi::connect(&context, &args.api).await?;
    let mut versions = Vec::new();
    let mut next_token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut input = serde_json::Map::new();
        input.insert("SecretId".to_owned(), json!(args.secret));
        input.insert(
            "IncludeDeprecated".to_owned(),
            json!(args.include_deprecated),
        );
        input.insert("MaxResults".to_owned(), json!(100));
        if let Some(token) = &next_token {
            input.insert("NextToken".to_owned(), json!(token));
        }
        let input = Value::Object(input);
        let answer = api
            .call_ok("secretsmanager.ListSecretVersionIds", &input)
            .await?;
        for entry in answer
            .get("Versions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            versions.push(
                Version::from_entry(entry).ok_or(PluginError::MalformedAnswer(
                    "a version without a VersionId",
                ))?,
            );
        }
        next_token = answer
            .get("NextToken")
            .and_then(Value::as_str)
            .map(str::to_owned);
        if next_token.is_none() {
            break;
        }
    }
    sort_newest_first(&mut versions);
    let text = match args.output {
        OutputFormat::Json => {
            let mut text = serde_json::to_string_pretty(&versions)
                .map_err(|_| PluginError::Internal("versions could not be rendered"))?;
            text.push('\n');
            text
        }
        OutputFormat::Table => render_table(&versions),
    };
    write_output(None, text.as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

/// Newest first; versions made in the same second by their labels: AWSPENDING, AWSCURRENT,
/// AWSPREVIOUS, other labels, none.
pub fn sort_newest_first(versions: &mut [Version]) {
    fn rank(version: &Version) -> u8 {
        let has = |label: &str| version.version_stages.iter().any(|stage| stage == label);
        if has("AWSPENDING") {
            0
        } else if has("AWSCURRENT") {
            1
        } else if has("AWSPREVIOUS") {
            2
        } else if version.version_stages.is_empty() {
            4
        } else {
            3
        }
    }
    versions.sort_by(|a, b| {
        b.created_date
            .unwrap_or(0.0)
            .total_cmp(&a.created_date.unwrap_or(0.0))
            .then_with(|| rank(a).cmp(&rank(b)))
    });
}

/// The table `history` prints.
pub fn render_table(versions: &[Version]) -> String {
    let rows: Vec<[String; 3]> = versions
        .iter()
        .map(|version| {
            [
                version.version_id.clone(),
                if version.version_stages.is_empty() {
                    "-".to_owned()
                } else {
                    version.version_stages.join(",")
                },
                version
                    .created_date
                    .map_or_else(|| "-".to_owned(), format_time),
            ]
        })
        .collect();
    table(&["VERSION ID", "STAGES", "CREATED"], &rows)
}

/// Columns padded to their widest cell, separated by three spaces, as kubectl prints.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == N {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<width$}   ");
            }
        }
        text.push_str(out.trim_end());
        text.push('\n');
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
    text
}

/// Epoch seconds as RFC 3339 (UTC), or the number when out of range.
pub fn format_time(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation)]
    let whole = seconds.floor() as i64;
    OffsetDateTime::from_unix_timestamp(whole)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| seconds.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_and_by_label_within_a_second() {
        let version = |id: &str, stages: &[&str], created: f64| Version {
            version_id: id.to_owned(),
            version_stages: stages.iter().map(|s| (*s).to_owned()).collect(),
            created_date: Some(created),
            last_accessed_date: None,
        };
        let mut versions = vec![
            version("old", &[], 10.0),
            version("previous", &["AWSPREVIOUS"], 20.0),
            version("current", &["AWSCURRENT"], 20.0),
            version("pending", &["AWSPENDING"], 20.0),
            version("labelled", &["blue"], 20.0),
            version("newest", &[], 30.0),
        ];
        sort_newest_first(&mut versions);
        let order: Vec<&str> = versions.iter().map(|v| v.version_id.as_str()).collect();
        assert_eq!(
            order,
            [
                "newest", "pending", "current", "previous", "labelled", "old"
            ]
        );
    }

    #[test]
    fn versions_render_as_a_table() {
        let versions = vec![
            Version::from_entry(&json!({
                "VersionId": "b2", "VersionStages": ["AWSCURRENT"], "CreatedDate": 1_764_600_000.5
            }))
            .unwrap(),
            Version::from_entry(&json!({"VersionId": "a1-longer-id", "VersionStages": []}))
                .unwrap(),
        ];
        assert_eq!(
            render_table(&versions),
            "VERSION ID     STAGES       CREATED\n\
             b2             AWSCURRENT   2025-12-01T14:40:00Z\n\
             a1-longer-id   -            -\n"
        );
        assert!(Version::from_entry(&json!({"VersionStages": []})).is_none());
        let rendered = serde_json::to_value(&versions).unwrap();
        assert_eq!(rendered[0]["VersionId"], "b2");
        assert_eq!(rendered[0]["VersionStages"], json!(["AWSCURRENT"]));
    }
}
