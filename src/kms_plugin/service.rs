//! The `v2.KeyManagementService` gRPC service over [`PluginKey`].

use std::collections::HashMap;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::PluginKey;
use crate::engine::kms::KmsError;

/// The generated messages and service of `proto/kms_v2.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("v2");
}

use proto::key_management_service_server::{KeyManagementService, KeyManagementServiceServer};
use proto::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};

/// The KMS plugin API version served; kube-apiserver refuses a plugin answering another.
const API_VERSION: &str = "v2";

/// The annotation carrying the key version that sealed a ciphertext, for people reading etcd:
/// decryption reads the version from the ciphertext itself.
pub const VERSION_ANNOTATION: &str = "version.coffer.dev";

/// The largest request accepted. kube-apiserver sends a 32-byte data key (or seed) to Encrypt
/// and a blob of a few hundred bytes to Decrypt; the engine takes at most 4 KiB of plaintext.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The service kube-apiserver calls.
pub struct KmsPluginService {
    key: Arc<PluginKey>,
}

impl KmsPluginService {
    /// The tonic service, with the request size capped.
    pub fn server(key: Arc<PluginKey>) -> KeyManagementServiceServer<Self> {
        KeyManagementServiceServer::new(Self { key }).max_decoding_message_size(MAX_REQUEST_BYTES)
    }
}

/// The gRPC status for an engine error: the caller's mistakes as InvalidArgument, with the
/// engine's message (which never holds a value); faults as Internal, their detail only logged.
fn status_of(err: &KmsError, operation: &'static str, uid: &str) -> Status {
    match err {
        KmsError::Validation(_) | KmsError::InvalidCiphertext | KmsError::IncorrectKey => {
            tracing::warn!(operation, uid, reason = %err, "refused");
            Status::invalid_argument(err.to_string())
        }
        KmsError::Disabled(_) | KmsError::InvalidState(_) | KmsError::NotFound(_) => {
            tracing::error!(operation, uid, reason = %err, "the key cannot be used");
            Status::failed_precondition(err.to_string())
        }
        KmsError::Busy(_) => Status::unavailable(err.to_string()),
        _ => {
            tracing::error!(operation, uid, reason = %crate::redact::chain(err), "failed");
            Status::internal("internal error")
        }
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsPluginService {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let (healthz, version) = match self.key.check().await {
            Ok(version) => ("ok".to_owned(), Some(version)),
            Err(err) => {
                tracing::error!(reason = %crate::redact::chain(&err), "health probe failed");
                (
                    format!("coffer kms-plugin cannot seal and open: {}", err.aws_code()),
                    self.key.current_version().await.ok(),
                )
            }
        };
        Ok(Response::new(StatusResponse {
            version: API_VERSION.to_owned(),
            healthz,
            key_id: version
                .map(|version| self.key.version_key_id(version))
                .unwrap_or_default(),
        }))
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let request = request.into_inner();
        // Wiped when dropped: the request's plaintext is a data key of kube-apiserver's.
        let plaintext = crate::crypto::SecretBytes::new(request.plaintext);
        if plaintext.expose().is_empty() {
            return Err(Status::invalid_argument("plaintext is empty"));
        }
        let (ciphertext, version) = self
            .key
            .encrypt(plaintext.expose())
            .await
            .map_err(|err| status_of(&err, "Encrypt", &request.uid))?;
        Ok(Response::new(EncryptResponse {
            ciphertext,
            key_id: self.key.version_key_id(version),
            annotations: HashMap::from([(
                VERSION_ANNOTATION.to_owned(),
                version.to_string().into_bytes(),
            )]),
        }))
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let request = request.into_inner();
        if request.ciphertext.is_empty() {
            return Err(Status::invalid_argument("ciphertext is empty"));
        }
        // The blob names its key and version; the request's key_id is only what Encrypt said.
        let plaintext = self
            .key
            .decrypt(&request.ciphertext)
            .await
            .map_err(|err| status_of(&err, "Decrypt", &request.uid))?;
        Ok(Response::new(DecryptResponse {
            plaintext: plaintext.expose().to_vec(),
        }))
    }
}
