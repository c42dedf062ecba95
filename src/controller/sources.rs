//! Where declared values come from, for every reconciler that imports them: a key of a core
//! Secret of the resource's namespace, or a sealed value opened for that namespace and name.

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret as CoreSecret;
use kube::{Api, ResourceExt as _};
use sha2::{Digest as _, Sha256};

use super::conditions::Problem;
use crate::crypto::{SealTarget, SecretBytes};
use crate::engine::kms::{Kms, KmsError};

/// A value taken from a source, with a fingerprint of where it came from (never of the value).
pub struct Imported {
    pub bytes: SecretBytes,
    pub fingerprint: String,
}

/// One key of a core Secret of the namespace, read from the API server (core Secrets are not
/// cached: the controller holds no more plaintext than it must), with a fingerprint of the
/// object it came from (uid and resourceVersion). `None` when the Secret or the key is absent.
pub async fn from_secret(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Option<Imported>, Problem> {
    let found = Api::<CoreSecret>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|err| {
            tracing::warn!(error = %crate::redact::chain(&err), "could not read a fromSecret source");
            Problem {
                reason: "SourceUnreadable",
                message: format!("Secret {name} could not be read."),
            }
        })?;
    let Some(mut found) = found else {
        return Ok(None);
    };
    let fingerprint = format!(
        "secret:{}:{}:{key}",
        found.uid().unwrap_or_default(),
        found.resource_version().unwrap_or_default()
    );
    let value = found
        .data
        .as_mut()
        .and_then(|data| data.remove(key))
        .map(|bytes| SecretBytes::new(bytes.0));
    if let Some(data) = found.data.as_mut() {
        for bytes in data.values_mut() {
            crate::crypto::wipe(&mut bytes.0);
        }
    }
    Ok(value.map(|bytes| Imported { bytes, fingerprint }))
}

/// A digest of a sealed value's ciphertext (never of plaintext), to know it was imported.
pub fn sealed_fingerprint(sealed: &str) -> String {
    let digest = Sha256::digest(sealed.trim().as_bytes());
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("sha256:{hex}")
}

/// Opens a `sealedValue` (base64) for `namespace` and the resource `resource_name`.
pub async fn open_sealed(
    kms: &Kms,
    namespace: &str,
    resource_name: &str,
    sealed: &str,
) -> Result<Imported, Problem> {
    let refused = || {
        Problem {
        reason: "SealedValueRefused",
        message: "sealedValue does not open: it must be sealed to a KmsKey of this namespace, for this namespace and this resource's name.".to_owned(),
    }
    };
    let blob = base64::engine::general_purpose::STANDARD
        .decode(sealed.trim())
        .map_err(|_| refused())?;
    let target = SealTarget {
        namespace,
        resource_name,
    };
    match kms.open_sealed(namespace, &target, &blob).await {
        Ok(bytes) => Ok(Imported {
            bytes,
            fingerprint: sealed_fingerprint(sealed),
        }),
        Err(KmsError::Internal(fault)) => {
            tracing::warn!(error = %crate::redact::chain(&fault), "could not open a sealed value");
            Err(refused())
        }
        Err(_) => Err(refused()),
    }
}
