//! What can go wrong in the Parameter Store engine. The AWS exception names are given at the
//! edge (`aws::ssm`), not here.

use crate::engine::kms::KmsError;
use crate::engine::paging::PagingError;
use crate::fault::{BoxError, Fault};
use crate::store::StoreError;

use super::model::VersionError;
use super::policies::PolicyError;

#[derive(Debug, thiserror::Error)]
pub enum ParametersError {
    #[error("{0}")]
    NotFound(String),
    #[error(
        "The parameter already exists. To overwrite this value, set the overwrite option in the request to true."
    )]
    AlreadyExists,
    #[error(
        "You have exceeded the number of parameters for this AWS account. Delete unnecessary parameters and try again."
    )]
    LimitExceeded,
    #[error("{0}")]
    MaxVersionLimitExceeded(String),
    #[error("{0}")]
    VersionNotFound(String),
    #[error("{0}")]
    VersionLabelLimitExceeded(String),
    #[error("{0}")]
    HierarchyLevelLimitExceeded(String),
    #[error("{0}")]
    InvalidAllowedPattern(String),
    /// The value does not match AllowedPattern. The message names the pattern, never the value.
    #[error("{0}")]
    PatternMismatch(String),
    #[error("{0}")]
    InvalidKeyId(String),
    #[error("{0}")]
    InvalidFilterKey(String),
    #[error("{0}")]
    InvalidFilterOption(String),
    #[error("{0}")]
    InvalidFilterValue(String),
    #[error("The specified token isn't valid.")]
    InvalidNextToken,
    #[error("The resource ID isn't valid. Verify that you entered the correct ID and try again.")]
    InvalidResourceId,
    #[error(
        "The resource type isn't valid. For example, if you are attempting to tag an EC2 instance, the instance must be a registered managed node."
    )]
    InvalidResourceType,
    #[error("{0}")]
    UnsupportedParameterType(String),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    InvalidPolicyType(String),
    #[error("{0}")]
    InvalidPolicyAttribute(String),
    #[error("{0}")]
    IncompatiblePolicy(String),
    #[error("{0}")]
    PoliciesLimitExceeded(String),
    #[error("{0}")]
    TooManyTags(String),
    /// Too many writers on one parameter at once: retryable.
    #[error("{0}")]
    Busy(String),
    /// A fault on Coffer's side. The detail goes to the log, not to the caller.
    #[error("internal error")]
    Internal(#[source] Fault),
}

impl ParametersError {
    /// A fault while doing `context`, caused by `source`.
    pub fn fault(context: &'static str, source: impl Into<BoxError>) -> Self {
        ParametersError::Internal(Fault::caused_by(context, source))
    }

    /// A fault found while doing `context` (a broken invariant).
    pub fn fault_at(context: &'static str) -> Self {
        ParametersError::Internal(Fault::new(context))
    }

    /// A KMS failure while sealing or opening a SecureString value.
    pub(crate) fn kms(err: KmsError) -> Self {
        match err {
            KmsError::AccessDenied(message) => ParametersError::AccessDenied(message),
            KmsError::Internal(fault) => ParametersError::Internal(fault),
            KmsError::Busy(message) => ParametersError::Busy(message),
            other => ParametersError::InvalidKeyId(other.to_string()),
        }
    }
}

impl From<StoreError> for ParametersError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Refused(message) => ParametersError::Validation(message),
            StoreError::InvalidKey => {
                ParametersError::Validation("The parameter name is not valid.".into())
            }
            StoreError::TooManyConflicts(..) => ParametersError::Busy(
                "Too many changes to this parameter at once; try again.".into(),
            ),
            other => ParametersError::fault("store", other),
        }
    }
}

impl From<PagingError> for ParametersError {
    fn from(err: PagingError) -> Self {
        match err {
            PagingError::Limit { max } => ParametersError::Validation(format!(
                "1 validation error detected: Value at 'maxResults' failed to satisfy constraint: Member must have value between 1 and {max}"
            )),
            PagingError::Token => ParametersError::InvalidNextToken,
        }
    }
}

impl From<VersionError> for ParametersError {
    fn from(err: VersionError) -> Self {
        match err {
            VersionError::NoSuchVersion { .. } => ParametersError::VersionNotFound(err.to_string()),
            VersionError::MaxVersions { .. } => {
                ParametersError::MaxVersionLimitExceeded(err.to_string())
            }
            VersionError::TooManyLabels => {
                ParametersError::VersionLabelLimitExceeded(err.to_string())
            }
        }
    }
}

impl From<PolicyError> for ParametersError {
    fn from(err: PolicyError) -> Self {
        match err {
            PolicyError::Type(_) => ParametersError::InvalidPolicyType(err.to_string()),
            PolicyError::Attribute(_) => ParametersError::InvalidPolicyAttribute(err.to_string()),
            PolicyError::Incompatible(_) => ParametersError::IncompatiblePolicy(err.to_string()),
            PolicyError::TooMany => ParametersError::PoliciesLimitExceeded(err.to_string()),
        }
    }
}
