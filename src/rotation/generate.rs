//! The `generate` strategy: a new random value by the rules of GetRandomPassword. With a
//! template and a key, the value is a JSON object in which that key is generated; a rotation
//! keeps the other properties of the current value, so only the generated one changes.
//! `setSecret` and `testSecret` have nothing to do: the value is used nowhere Coffer must
//! change.

use async_trait::async_trait;
use serde_json::{Map, Value};
use zeroize::Zeroize as _;

use crate::crypto::SecretBytes;
use crate::engine::rotation::{
    RotationStrategy, SettingsError, Step, StepError, StepOutcome, StepRequest,
};
use crate::engine::secrets::{PasswordOptions, SecretsError, random_password};
use crate::resources::secret::GenerateSettings;

/// Why a value could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("the generate settings are not valid: {0}")]
    Settings(String),
    #[error("the template must be a JSON object")]
    Template,
    #[error(transparent)]
    Password(#[from] SecretsError),
}

/// A value made as `settings` say: a password alone, or put under the settings' key into
/// `base` (a JSON object: the current value when it is one, else the template).
pub fn generated_value(
    settings: &GenerateSettings,
    base: Option<&SecretBytes>,
) -> Result<SecretBytes, GenerateError> {
    let password = random_password(&PasswordOptions {
        length: Some(i64::from(settings.length)),
        exclude_characters: settings.exclude_characters.clone(),
        exclude_numbers: settings.exclude_numbers,
        exclude_punctuation: settings.exclude_punctuation,
        exclude_uppercase: settings.exclude_uppercase,
        exclude_lowercase: settings.exclude_lowercase,
        include_space: settings.include_space,
        require_each_included_type: Some(settings.require_each_included_type),
    })?;
    let (Some(template), Some(key)) = (&settings.template, &settings.generate_string_key) else {
        return Ok(password);
    };
    let from_base =
        base.and_then(|base| serde_json::from_slice::<Map<String, Value>>(base.expose()).ok());
    let mut object = match from_base {
        Some(object) => object,
        None => serde_json::from_str(template).map_err(|_| GenerateError::Template)?,
    };
    let text = String::from_utf8(password.expose().to_vec())
        .map_err(|_| GenerateError::Settings("the password is not text".into()))?;
    if let Some(Value::String(mut old)) = object.insert(key.clone(), Value::String(text)) {
        old.zeroize();
    }
    let bytes = serde_json::to_vec(&object).map(SecretBytes::new);
    // Every string of the object may be secret: wipe them before the map is dropped.
    for (_, value) in object.iter_mut() {
        if let Value::String(text) = value {
            text.zeroize();
        }
    }
    bytes.map_err(|_| GenerateError::Template)
}

/// The settings as recorded: [`GenerateSettings`] in JSON; null is the defaults.
fn settings_of(settings: &Value) -> Result<GenerateSettings, String> {
    if settings.is_null() {
        return Ok(GenerateSettings::default());
    }
    let parsed: GenerateSettings =
        serde_json::from_value(settings.clone()).map_err(|err| err.to_string())?;
    if parsed.template.is_some() != parsed.generate_string_key.is_some() {
        return Err("template and generateStringKey go together".into());
    }
    if let Some(template) = &parsed.template
        && serde_json::from_str::<Map<String, Value>>(template).is_err()
    {
        return Err("the template must be a JSON object".into());
    }
    Ok(parsed)
}

/// The `generate` strategy.
#[derive(Clone, Copy, Debug, Default)]
pub struct GenerateStrategy;

#[async_trait]
impl RotationStrategy for GenerateStrategy {
    fn name(&self) -> &'static str {
        "generate"
    }

    fn check_settings(&self, settings: &Value) -> Result<(), SettingsError> {
        settings_of(settings).map(|_| ()).map_err(SettingsError)
    }

    async fn run(&self, request: StepRequest<'_>) -> Result<StepOutcome, StepError> {
        if request.step != Step::CreateSecret {
            return Ok(StepOutcome::Done);
        }
        let settings =
            settings_of(request.settings).map_err(|err| StepError::permanent(request.step, err))?;
        generated_value(&settings, request.current)
            .map(StepOutcome::Pending)
            .map_err(|err| StepError::permanent(request.step, err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn request<'a>(
        step: Step,
        settings: &'a Value,
        current: Option<&'a SecretBytes>,
    ) -> StepRequest<'a> {
        StepRequest {
            step,
            secret_id: "arn:aws:secretsmanager:us-east-1:111122223333:secret:s-AbCdEf",
            namespace: "default",
            name: "s",
            token: "00000000-0000-4000-8000-000000000000",
            settings,
            current,
            pending: None,
            referenced: None,
            attempt: 0,
        }
    }

    #[tokio::test]
    async fn create_makes_a_password_by_the_settings_and_the_other_steps_do_nothing() {
        let settings = json!({"length": 20, "excludePunctuation": true});
        let StepOutcome::Pending(value) = GenerateStrategy
            .run(request(Step::CreateSecret, &settings, None))
            .await
            .unwrap()
        else {
            panic!("createSecret makes a value");
        };
        assert_eq!(value.len(), 20);
        assert!(value.expose().iter().all(u8::is_ascii_alphanumeric));
        for step in [Step::SetSecret, Step::TestSecret, Step::FinishSecret] {
            assert!(matches!(
                GenerateStrategy
                    .run(request(step, &settings, None))
                    .await
                    .unwrap(),
                StepOutcome::Done
            ));
        }
    }

    #[tokio::test]
    async fn a_json_value_keeps_its_other_properties_and_only_the_key_changes() {
        let settings =
            json!({"template": "{\"username\":\"app\"}", "generateStringKey": "password"});
        let current =
            SecretBytes::new(br#"{"username":"app","password":"old","host":"db"}"#.to_vec());
        let StepOutcome::Pending(value) = GenerateStrategy
            .run(request(Step::CreateSecret, &settings, Some(&current)))
            .await
            .unwrap()
        else {
            panic!("createSecret makes a value");
        };
        let object: Map<String, Value> = serde_json::from_slice(value.expose()).unwrap();
        assert_eq!(object["username"], "app");
        assert_eq!(object["host"], "db");
        assert_ne!(object["password"], "old");
        assert_eq!(object["password"].as_str().unwrap().len(), 32);
        // Without a JSON current value, the template is the base.
        let StepOutcome::Pending(value) = GenerateStrategy
            .run(request(Step::CreateSecret, &settings, None))
            .await
            .unwrap()
        else {
            panic!("createSecret makes a value");
        };
        let object: Map<String, Value> = serde_json::from_slice(value.expose()).unwrap();
        assert_eq!(object.len(), 2);
    }

    #[test]
    fn settings_are_checked() {
        let check = |settings: Value| GenerateStrategy.check_settings(&settings);
        assert!(check(Value::Null).is_ok());
        assert!(check(json!({"length": 12})).is_ok());
        assert!(check(json!({"template": "{}"})).is_err());
        assert!(check(json!({"template": "[1]", "generateStringKey": "k"})).is_err());
        assert!(check(json!({"length": "long"})).is_err());
    }
}
