//! `get`: a secret's value (GetSecretValue) or a parameter's (GetParameter WithDecryption),
//! written to standard output as it is.

use std::process::ExitCode;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use zeroize::Zeroizing;

use super::PluginError;
use super::api::{CofferApi, WipedJson};
use super::cli::{GetArgs, KubeArgs};
use super::kube_context::KubeContext;
use super::seal::write_output;

/// What `get` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Secret(String),
    Parameter(String),
}

impl Target {
    /// `get NAME`, `get secret NAME` or `get parameter NAME`.
    pub fn from_args(first: &str, second: Option<&str>) -> Result<Self, PluginError> {
        match second {
            None => Ok(Self::Secret(first.to_owned())),
            Some(name) => match first {
                "secret" | "secrets" | "csec" => Ok(Self::Secret(name.to_owned())),
                "parameter" | "parameters" | "param" => Ok(Self::Parameter(name.to_owned())),
                other => Err(PluginError::Usage(format!(
                    "unknown kind {other:?}: use `get secret NAME` or `get parameter NAME`"
                ))),
            },
        }
    }
}

/// The request body of GetSecretValue.
pub fn get_secret_value_input(name: &str, stage: Option<&str>, version_id: Option<&str>) -> Value {
    let mut body = serde_json::Map::new();
    body.insert("SecretId".to_owned(), json!(name));
    if let Some(stage) = stage {
        body.insert("VersionStage".to_owned(), json!(stage));
    }
    if let Some(version_id) = version_id {
        body.insert("VersionId".to_owned(), json!(version_id));
    }
    Value::Object(body)
}

/// The bytes to print from GetSecretValue's answer: SecretString, else SecretBinary decoded;
/// with `property`, that member of the JSON object SecretString holds (a string as it is,
/// anything else as JSON).
pub fn secret_bytes(
    answer: &Value,
    property: Option<&str>,
) -> Result<Zeroizing<Vec<u8>>, PluginError> {
    if let Some(text) = answer.get("SecretString").and_then(Value::as_str) {
        let Some(property) = property else {
            return Ok(Zeroizing::new(text.as_bytes().to_vec()));
        };
        let object = WipedJson::parse(text.as_bytes()).map_err(|_| {
            PluginError::Property(
                "--property needs a secret whose value is a JSON object".to_owned(),
            )
        })?;
        let member = object
            .as_object()
            .ok_or_else(|| {
                PluginError::Property(
                    "--property needs a secret whose value is a JSON object".to_owned(),
                )
            })?
            .get(property)
            .ok_or_else(|| {
                PluginError::Property(format!("the secret has no property {property:?}"))
            })?;
        return Ok(Zeroizing::new(match member {
            Value::String(text) => text.as_bytes().to_vec(),
            other => other.to_string().into_bytes(),
        }));
    }
    if let Some(binary) = answer.get("SecretBinary").and_then(Value::as_str) {
        if property.is_some() {
            return Err(PluginError::Property(
                "--property needs a SecretString, and this secret holds SecretBinary".to_owned(),
            ));
        }
        return STANDARD
            .decode(binary)
            .map(Zeroizing::new)
            .map_err(|_| PluginError::MalformedAnswer("SecretBinary is not base64"));
    }
    Err(PluginError::MalformedAnswer(
        "neither SecretString nor SecretBinary",
    ))
}

/// `kubectl coffer get`.
pub async fn run(kube: &KubeArgs, args: GetArgs) -> Result<ExitCode, PluginError> {
    let target = Target::from_args(&args.first, args.second.as_deref())?;
    if matches!(target, Target::Parameter(_))
        && (args.stage.is_some() || args.version_id.is_some() || args.property.is_some())
    {
        return Err(PluginError::Usage(
            "--stage, --version-id and --property apply to secrets; select a parameter's version as NAME:VERSION or NAME:LABEL".to_owned(),
        ));
    }
    let context = KubeContext::load(kube).await?;
    let api = CofferApi::connect(&context, &args.api).await?;
    let bytes = match target {
        Target::Secret(name) => {
            let input =
                get_secret_value_input(&name, args.stage.as_deref(), args.version_id.as_deref());
            let answer = api.call_ok("secretsmanager.GetSecretValue", &input).await?;
            secret_bytes(&answer, args.property.as_deref())?
        }
        Target::Parameter(name) => {
            let answer = api
                .call_ok(
                    "AmazonSSM.GetParameter",
                    &json!({"Name": name, "WithDecryption": true}),
                )
                .await?;
            let value = answer
                .pointer("/Parameter/Value")
                .and_then(Value::as_str)
                .ok_or(PluginError::MalformedAnswer("no Parameter.Value"))?;
            Zeroizing::new(value.as_bytes().to_vec())
        }
    };
    write_output(None, &bytes)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            Target::from_args("db", None).unwrap(),
            Target::Secret("db".to_owned())
        );
        assert_eq!(
            Target::from_args("secret", Some("db")).unwrap(),
            Target::Secret("db".to_owned())
        );
        assert_eq!(
            Target::from_args("parameter", Some("/a/b")).unwrap(),
            Target::Parameter("/a/b".to_owned())
        );
        assert!(Target::from_args("configmap", Some("x")).is_err());
    }

    #[test]
    fn inputs_name_the_version_asked_for() {
        assert_eq!(
            get_secret_value_input("db", None, None),
            json!({"SecretId": "db"})
        );
        assert_eq!(
            get_secret_value_input("db", Some("AWSPREVIOUS"), None),
            json!({"SecretId": "db", "VersionStage": "AWSPREVIOUS"})
        );
        assert_eq!(
            get_secret_value_input("db", None, Some("v1")),
            json!({"SecretId": "db", "VersionId": "v1"})
        );
    }

    #[test]
    fn values_and_properties() {
        let string = json!({"SecretString": r#"{"user":"app","port":5432}"#});
        assert_eq!(
            secret_bytes(&string, None).unwrap().as_slice(),
            br#"{"user":"app","port":5432}"#
        );
        assert_eq!(
            secret_bytes(&string, Some("user")).unwrap().as_slice(),
            b"app"
        );
        assert_eq!(
            secret_bytes(&string, Some("port")).unwrap().as_slice(),
            b"5432"
        );
        let missing = secret_bytes(&string, Some("password"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("password"), "{missing}");
        // The message never repeats the value.
        let plain = json!({"SecretString": "hunter2"});
        let err = secret_bytes(&plain, Some("x")).unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");

        let binary = json!({"SecretBinary": STANDARD.encode(b"\x00\x01")});
        assert_eq!(secret_bytes(&binary, None).unwrap().as_slice(), b"\x00\x01");
        assert!(secret_bytes(&binary, Some("x")).is_err());
        assert!(secret_bytes(&json!({}), None).is_err());
    }
}
