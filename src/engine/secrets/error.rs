//! What can go wrong in the Secrets Manager engine, named as AWS names it.

use crate::engine::iam::PolicyError;
use crate::engine::kms::KmsError;
use crate::engine::paging::PagingError;
use crate::fault::{BoxError, Fault};
use crate::store::StoreError;

use super::model::StageError;

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Exists(String),
    #[error("{0}")]
    InvalidParameter(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    Validation(String),
    #[error("The NextToken is invalid.")]
    InvalidNextToken,
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    PublicPolicy(String),
    #[error("{0}")]
    AccessDenied(String),
    /// KMS refused to seal a value (the key is disabled, missing, or of the wrong kind).
    #[error("{0}")]
    EncryptionFailure(String),
    /// KMS refused to open a value.
    #[error("{0}")]
    DecryptionFailure(String),
    /// Too many writers on one record at once: retryable.
    #[error("{0}")]
    Busy(String),
    /// A fault on Coffer's side. The detail goes to the log, not to the caller.
    #[error("internal error")]
    Internal(#[source] Fault),
}

impl SecretsError {
    /// A fault while doing `context`, caused by `source`.
    pub fn fault(context: &'static str, source: impl Into<BoxError>) -> Self {
        SecretsError::Internal(Fault::caused_by(context, source))
    }

    /// A KMS failure while sealing a value.
    pub(crate) fn sealing(err: KmsError) -> Self {
        match err {
            KmsError::AccessDenied(message) => SecretsError::AccessDenied(message),
            KmsError::Internal(fault) => SecretsError::Internal(fault),
            other => SecretsError::EncryptionFailure(format!(
                "Secrets Manager can't encrypt the value with the KMS key: {other}"
            )),
        }
    }

    /// A KMS failure while opening a value.
    pub(crate) fn opening(err: KmsError) -> Self {
        match err {
            KmsError::AccessDenied(message) => SecretsError::AccessDenied(message),
            KmsError::Internal(fault) => SecretsError::Internal(fault),
            other => SecretsError::DecryptionFailure(format!(
                "Secrets Manager can't decrypt the value with the KMS key: {other}"
            )),
        }
    }
}

impl crate::engine::ServiceError for SecretsError {
    fn aws_code(&self) -> &'static str {
        match self {
            SecretsError::NotFound(_) => "ResourceNotFoundException",
            SecretsError::Exists(_) => "ResourceExistsException",
            SecretsError::InvalidParameter(_) => "InvalidParameterException",
            SecretsError::InvalidRequest(_) => "InvalidRequestException",
            SecretsError::Validation(_) => "ValidationException",
            SecretsError::InvalidNextToken => "InvalidNextTokenException",
            SecretsError::LimitExceeded(_) => "LimitExceededException",
            SecretsError::MalformedPolicyDocument(_) => "MalformedPolicyDocumentException",
            SecretsError::PublicPolicy(_) => "PublicPolicyException",
            SecretsError::AccessDenied(_) => "AccessDeniedException",
            SecretsError::EncryptionFailure(_) => "EncryptionFailure",
            SecretsError::DecryptionFailure(_) => "DecryptionFailure",
            SecretsError::Busy(_) => "ThrottlingException",
            SecretsError::Internal(_) => "InternalServiceError",
        }
    }

    fn is_fault(&self) -> bool {
        matches!(self, SecretsError::Internal(_))
    }
}

impl From<StoreError> for SecretsError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Refused(message) => SecretsError::InvalidRequest(message),
            StoreError::InvalidKey => {
                SecretsError::InvalidParameter("The secret name or id is not valid.".into())
            }
            StoreError::TooManyConflicts(..) => {
                SecretsError::Busy("Too many changes to this secret at once; try again.".into())
            }
            other => SecretsError::fault("store", other),
        }
    }
}

impl From<PagingError> for SecretsError {
    fn from(err: PagingError) -> Self {
        match err {
            PagingError::Limit { .. } => SecretsError::InvalidParameter(err.to_string()),
            PagingError::Token => SecretsError::InvalidNextToken,
        }
    }
}

impl From<PolicyError> for SecretsError {
    fn from(err: PolicyError) -> Self {
        SecretsError::MalformedPolicyDocument(err.to_string())
    }
}

impl From<StageError> for SecretsError {
    fn from(err: StageError) -> Self {
        match err {
            StageError::NoSuchVersion(_) => SecretsError::NotFound(err.to_string()),
            StageError::TooManyStages => SecretsError::LimitExceeded(err.to_string()),
            other => SecretsError::InvalidParameter(other.to_string()),
        }
    }
}
