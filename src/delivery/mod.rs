//! Delivery into pods: what a volume holds, read with the pod's own identity.
//!
//! The CSI node plugin (`crate::csi`) mounts and writes; this module says which files a volume
//! holds and fetches their contents through the AWS API with the pod's ServiceAccount token, so
//! a pod gets exactly what its ServiceAccount may read. The plugin knows nothing of secrets or
//! parameters; this module knows nothing of mounts.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use zeroize::Zeroizing;

use crate::crypto::SecretBytes;

mod api;
mod attributes;
mod aws_provider;
mod content;
pub mod names;
pub mod reference;
pub mod template;
#[cfg(test)]
pub(crate) mod test_api;
#[cfg(test)]
mod through_controller;
pub mod volume;

pub use api::{ApiClient, ApiError};
pub use attributes::{AttributeError, parse as parse_volume_attributes};
pub use aws_provider::{DEFAULT_AUDIENCE, ProviderError, ProviderMount};
pub use content::ApiContent;

/// One file of a volume: a relative path inside the volume, its mode, its contents.
pub struct VolumeFile {
    /// Relative, `/`-separated; checked again by the writer before it touches the disk.
    pub path: String,
    /// Permission bits (`0o644` when the volume does not say).
    pub mode: u32,
    pub contents: SecretBytes,
}

impl fmt::Debug for VolumeFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VolumeFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("contents", &self.contents)
            .finish()
    }
}

/// The pod a volume is published for (kubelet's `podInfoOnMount` attributes).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PodInfo {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
}

/// The pod's ServiceAccount token for the audience `coffer`, as kubelet hands it over.
#[derive(Clone)]
pub struct PodToken {
    token: Zeroizing<String>,
    /// RFC 3339, as kubelet writes it.
    pub expires: Option<String>,
}

impl PodToken {
    pub fn new(token: String, expires: Option<String>) -> Self {
        Self {
            token: Zeroizing::new(token),
            expires,
        }
    }

    pub fn expose(&self) -> &str {
        &self.token
    }
}

impl fmt::Debug for PodToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PodToken")
            .field("token", &"[redacted]")
            .field("expires", &self.expires)
            .finish()
    }
}

/// Why a volume's contents could not be had. Messages name objects, never values.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    /// The volume's attributes are wrong (gRPC InvalidArgument).
    #[error("{0}")]
    InvalidArgument(String),
    /// The pod's ServiceAccount may not read an object (gRPC PermissionDenied).
    #[error("{0}")]
    PermissionDenied(String),
    /// An object does not exist (gRPC NotFound).
    #[error("{0}")]
    NotFound(String),
    /// The API could not be reached or failed; worth retrying (gRPC Unavailable).
    #[error("{0}")]
    Unavailable(String),
}

/// An object a volume reads, so that a change to it refreshes the volume.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Watched {
    /// A Secrets Manager secret, by the name or ARN the volume gives.
    Secret { namespace: String, id: String },
    /// A parameter, by name.
    Parameter { namespace: String, name: String },
    /// Every parameter under a path (`recursive`: at any depth).
    ParametersUnder {
        namespace: String,
        path: String,
        recursive: bool,
    },
}

/// Where a volume's files come from.
#[async_trait]
pub trait ContentSource: Send + Sync + 'static {
    /// What the volume reads, from its attributes alone (nothing fetched): an InvalidArgument
    /// for attributes that do not parse. `attributes` are the volume's own, without kubelet's
    /// `csi.storage.k8s.io/` entries.
    fn watches(
        &self,
        attributes: &BTreeMap<String, String>,
        pod: &PodInfo,
    ) -> Result<Vec<Watched>, ContentError>;

    /// Every file of the volume, read as the pod's ServiceAccount; all or nothing.
    async fn files(
        &self,
        attributes: &BTreeMap<String, String>,
        pod: &PodInfo,
        token: &PodToken,
    ) -> Result<Vec<VolumeFile>, ContentError>;
}
