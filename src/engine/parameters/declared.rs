//! Parameters as a declaration states them (the Parameter resource in a cluster), applied by
//! the controller for the namespace ([`Caller::account_of`]): a new version when the
//! declaration differs from the latest one, and nothing otherwise.

use subtle::ConstantTimeEq as _;

use super::model::{ParameterRecord, ParameterType, Tier};
use super::operations::{DEFAULT_KEY_ALIAS, PutParameterRequest};
use super::{Parameters, ParametersError};
use crate::crypto::SecretBytes;
use crate::engine::Caller;
use crate::store::typed;

/// What a declaration says of a parameter.
#[derive(Debug)]
pub struct DeclaredParameter {
    pub type_: ParameterType,
    /// `None` for a SecureString whose value comes through the API: the current one is kept.
    pub value: Option<SecretBytes>,
    /// The key of a SecureString as declared; `None` is `alias/aws/ssm`.
    pub key_id: Option<String>,
    /// `Standard`, `Advanced` or `Intelligent-Tiering`.
    pub tier: String,
    pub allowed_pattern: Option<String>,
    pub data_type: String,
    pub description: Option<String>,
    /// Policies as PutParameter takes them (a JSON list); `None` for none.
    pub policies: Option<String>,
}

impl Parameters {
    /// The record of parameter `name` of `namespace`, if any.
    pub async fn declared_record(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ParameterRecord>, ParametersError> {
        Ok(
            typed::get::<ParameterRecord, _>(self.store.as_ref(), namespace, name)
                .await?
                .map(|found| found.meta),
        )
    }

    /// The latest version of parameter `name` of `namespace` and its value (a SecureString
    /// opened for the namespace), if there is one.
    pub async fn declared_current_value(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<(u64, SecretBytes)>, ParametersError> {
        let Some(found) =
            typed::get::<ParameterRecord, _>(self.store.as_ref(), namespace, name).await?
        else {
            return Ok(None);
        };
        let account = Caller::account_of(namespace);
        let version = found.meta.version;
        let value = self
            .value_of(&account, namespace, &found, version, true)
            .await?;
        Ok(Some((version, value)))
    }

    /// Brings parameter `name` of `namespace` to `declared`: a new version (made as
    /// PutParameter with Overwrite makes one) when anything differs from the latest version.
    /// Returns the record and the new version's number, if one was made.
    pub async fn apply_declared(
        &self,
        namespace: &str,
        name: &str,
        declared: &DeclaredParameter,
    ) -> Result<(ParameterRecord, Option<u64>), ParametersError> {
        let account = Caller::account_of(namespace);
        let found = typed::get::<ParameterRecord, _>(self.store.as_ref(), namespace, name).await?;
        if let Some(found) = &found
            && self
                .is_declared(&account, namespace, found, declared)
                .await?
        {
            return Ok((found.meta.clone(), None));
        }
        let value = match (&declared.value, &found) {
            (Some(value), _) => value.clone(),
            (None, Some(found)) if found.meta.type_ == declared.type_ => {
                self.value_of(&account, namespace, found, found.meta.version, true)
                    .await?
            }
            (None, _) => {
                return Err(ParametersError::Validation(
                    "The parameter has no value yet: put one through the API.".into(),
                ));
            }
        };
        let outcome = self
            .put_parameter(
                &account,
                PutParameterRequest {
                    name: name.to_owned(),
                    value,
                    type_: Some(declared.type_.as_str().to_owned()),
                    key_id: declared.key_id.clone(),
                    overwrite: true,
                    allowed_pattern: declared.allowed_pattern.clone(),
                    tier: Some(declared.tier.clone()),
                    policies: declared.policies.clone(),
                    data_type: Some(declared.data_type.clone()),
                    description: declared.description.clone(),
                    tags: Vec::new(),
                },
            )
            .await?;
        let record = self
            .declared_record(namespace, name)
            .await?
            .ok_or_else(|| ParametersError::fault_at("a parameter just written is missing"))?;
        Ok((record, Some(outcome.version)))
    }

    /// Whether the latest version is what `declared` says.
    async fn is_declared(
        &self,
        account: &Caller,
        namespace: &str,
        found: &typed::Typed<ParameterRecord>,
        declared: &DeclaredParameter,
    ) -> Result<bool, ParametersError> {
        let record = &found.meta;
        let key_id = match declared.type_ {
            ParameterType::SecureString => Some(
                declared
                    .key_id
                    .clone()
                    .unwrap_or_else(|| DEFAULT_KEY_ALIAS.to_owned()),
            ),
            _ => None,
        };
        let tier_matches = match declared.tier.as_str() {
            "Advanced" => record.tier == Tier::Advanced,
            "Standard" => record.tier == Tier::Standard,
            _ => true,
        };
        let policies: Vec<String> = match &declared.policies {
            Some(text) => super::policies::parse(text, self.now())?
                .into_iter()
                .map(|policy| policy.text)
                .collect(),
            None => Vec::new(),
        };
        let stored_policies: Vec<String> = record
            .policies
            .iter()
            .map(|policy| policy.text.clone())
            .collect();
        if record.type_ != declared.type_
            || record.key_id != key_id
            || !tier_matches
            || record.allowed_pattern != declared.allowed_pattern
            || record.data_type != declared.data_type
            || record.description != declared.description
            || stored_policies != policies
        {
            return Ok(false);
        }
        let Some(value) = &declared.value else {
            return Ok(true);
        };
        let current = self
            .value_of(account, namespace, found, record.version, true)
            .await?;
        Ok(bool::from(current.expose().ct_eq(value.expose())))
    }

    /// Deletes parameter `name`, whose declaration is gone. `false` when there was none.
    pub async fn delete_declared(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<bool, ParametersError> {
        match self
            .delete_parameter(&Caller::account_of(namespace), name)
            .await
        {
            Ok(_) => Ok(true),
            Err(ParametersError::NotFound(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }
}
