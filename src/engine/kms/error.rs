//! What can go wrong in the KMS engine, named as AWS names it.

use crate::crypto::CryptoError;
use crate::crypto::asymmetric::AsymmetricError;
use crate::engine::iam::PolicyError;
use crate::engine::paging::PagingError;
use crate::fault::{BoxError, Fault};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum KmsError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0} is disabled.")]
    Disabled(String),
    #[error("{0}")]
    InvalidState(String),
    #[error("The key ID in the request does not identify the key used to encrypt the ciphertext.")]
    IncorrectKey,
    #[error("{0}")]
    InvalidKeyUsage(String),
    #[error("{0}")]
    InvalidArn(String),
    #[error("The ciphertext is invalid or was not made under this key and encryption context.")]
    InvalidCiphertext,
    #[error("The signature verification failed.")]
    InvalidSignature,
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    InvalidAliasName(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    AccessDenied(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    InvalidMarker(String),
    #[error("{0}")]
    UnsupportedOperation(String),
    #[error("The import token has expired.")]
    ExpiredImportToken,
    #[error("The import token is invalid for this key.")]
    InvalidImportToken,
    #[error("{0}")]
    IncorrectKeyMaterial(String),
    #[error("{0}")]
    Tag(String),
    /// Too many writers on one record at once: retryable.
    #[error("{0}")]
    Busy(String),
    /// A fault on Coffer's side. The detail goes to the log, not to the caller.
    #[error("internal error")]
    Internal(#[source] Fault),
}

impl KmsError {
    /// A fault while doing `context`, caused by `source`.
    pub fn fault(context: &'static str, source: impl Into<BoxError>) -> Self {
        KmsError::Internal(Fault::caused_by(context, source))
    }

    /// A fault found while doing `context` (a broken invariant, with no error behind it).
    pub fn fault_at(context: &'static str) -> Self {
        KmsError::Internal(Fault::new(context))
    }
}

impl crate::engine::ServiceError for KmsError {
    fn aws_code(&self) -> &'static str {
        KmsError::aws_code(self)
    }

    fn is_fault(&self) -> bool {
        KmsError::is_fault(self)
    }
}

impl KmsError {
    /// The AWS exception name.
    pub fn aws_code(&self) -> &'static str {
        match self {
            KmsError::NotFound(_) => "NotFoundException",
            KmsError::AlreadyExists(_) => "AlreadyExistsException",
            KmsError::Disabled(_) => "DisabledException",
            KmsError::InvalidState(_) => "KMSInvalidStateException",
            KmsError::IncorrectKey => "IncorrectKeyException",
            KmsError::InvalidKeyUsage(_) => "InvalidKeyUsageException",
            KmsError::InvalidArn(_) => "InvalidArnException",
            KmsError::InvalidCiphertext => "InvalidCiphertextException",
            KmsError::InvalidSignature => "KMSInvalidSignatureException",
            KmsError::Validation(_) => "ValidationException",
            KmsError::InvalidAliasName(_) => "InvalidAliasNameException",
            KmsError::MalformedPolicyDocument(_) => "MalformedPolicyDocumentException",
            KmsError::AccessDenied(_) => "AccessDeniedException",
            KmsError::LimitExceeded(_) => "LimitExceededException",
            KmsError::InvalidMarker(_) => "InvalidMarkerException",
            KmsError::UnsupportedOperation(_) => "UnsupportedOperationException",
            KmsError::ExpiredImportToken => "ExpiredImportTokenException",
            KmsError::InvalidImportToken => "InvalidImportTokenException",
            KmsError::IncorrectKeyMaterial(_) => "IncorrectKeyMaterialException",
            KmsError::Tag(_) => "TagException",
            KmsError::Busy(_) => "ThrottlingException",
            KmsError::Internal(_) => "KMSInternalException",
        }
    }

    /// Whether this is Coffer's fault (HTTP 500) rather than the caller's (400).
    pub fn is_fault(&self) -> bool {
        matches!(self, KmsError::Internal(_))
    }
}

impl From<StoreError> for KmsError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Refused(message) => KmsError::InvalidState(message),
            StoreError::TooManyConflicts(..) => {
                KmsError::Busy("Too many changes to this key at once; try again.".into())
            }
            other => KmsError::fault("store", other),
        }
    }
}

impl From<PagingError> for KmsError {
    fn from(err: PagingError) -> Self {
        match err {
            PagingError::Limit { .. } => KmsError::Validation(err.to_string()),
            PagingError::Token => KmsError::InvalidMarker("Marker is invalid.".into()),
        }
    }
}

impl From<PolicyError> for KmsError {
    fn from(err: PolicyError) -> Self {
        KmsError::MalformedPolicyDocument(err.to_string())
    }
}

impl From<CryptoError> for KmsError {
    fn from(err: CryptoError) -> Self {
        KmsError::fault("crypto", err)
    }
}

impl From<AsymmetricError> for KmsError {
    fn from(err: AsymmetricError) -> Self {
        KmsError::fault("asymmetric crypto", err)
    }
}
