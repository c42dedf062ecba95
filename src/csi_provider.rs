//! `coffer csi-provider`: a provider of the Secrets Store CSI Driver.
//!
//! The driver calls `v1alpha1.CSIDriverProvider/Mount` on a Unix socket with a
//! SecretProviderClass's parameters and the pod's ServiceAccount token; Coffer reads the objects
//! through its own API as that pod ([`crate::delivery::ApiContent`], the same path as Coffer's
//! own CSI volumes) and answers the files for the driver to write. A class written for the AWS
//! provider works by changing `provider: aws` to `provider: coffer`.

use std::future::Future;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use crate::delivery::{ApiContent, ContentError, ProviderMount};

/// The generated messages and service of `proto/provider.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("v1alpha1");
}

use proto::csi_driver_provider_server::{CsiDriverProvider, CsiDriverProviderServer};
use proto::{MountRequest, MountResponse, ObjectVersion, VersionRequest, VersionResponse};

/// Where the driver looks for providers' sockets, named after the provider.
pub const DEFAULT_SOCKET: &str = "/etc/kubernetes/secrets-store-csi-providers/coffer.sock";

/// The provider API version served.
const API_VERSION: &str = "v1alpha1";

#[derive(Debug, thiserror::Error)]
pub enum ProviderServeError {
    #[error("{path} exists and is not a socket; not removing it")]
    NotASocket { path: PathBuf },
    #[error("cannot prepare the socket {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("serving gRPC failed")]
    Serve(#[source] tonic::transport::Error),
}

/// The provider service: mount requests answered from the API.
pub struct Provider {
    content: ApiContent,
    /// The audience of the pod tokens the API accepts.
    audience: String,
}

impl Provider {
    pub fn new(content: ApiContent, audience: String) -> Self {
        Self { content, audience }
    }

    async fn answer(&self, request: &MountRequest) -> Result<MountResponse, ContentError> {
        let mount = ProviderMount::parse(&request.attributes, &request.permission, &self.audience)?;
        let assembled = self.content.assemble(&mount.volume, &mount.token).await?;
        let mut object_version = Vec::new();
        let mut files = Vec::new();
        for item in assembled {
            object_version.push(ObjectVersion {
                id: item.file.path.clone(),
                version: item.version.unwrap_or_default(),
            });
            files.push(proto::File {
                path: item.file.path.clone(),
                // At most 0o777, checked where modes are read.
                mode: i32::try_from(item.file.mode).unwrap_or(0o600),
                contents: item.file.contents.expose().to_vec(),
            });
        }
        tracing::info!(
            namespace = %mount.pod.namespace,
            pod = %mount.pod.name,
            files = files.len(),
            "mounted"
        );
        Ok(MountResponse {
            object_version,
            error: None,
            files,
        })
    }
}

/// The code a failure is reported under in `MountResponse.error.code` (the driver's metrics
/// label): stable words, never a value.
pub fn error_code(err: &ContentError) -> &'static str {
    match err {
        ContentError::InvalidArgument(_) => "InvalidArgument",
        ContentError::PermissionDenied(_) => "PermissionDenied",
        ContentError::NotFound(_) => "NotFound",
        ContentError::Unavailable(_) => "Unavailable",
    }
}

#[tonic::async_trait]
impl CsiDriverProvider for Provider {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: "coffer".to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        match self.answer(request.get_ref()).await {
            Ok(response) => Ok(Response::new(response)),
            Err(err) => {
                // The driver keeps only the code; the reason (objects named, never values) is
                // here, in the provider's log.
                let code = error_code(&err);
                tracing::warn!(code, reason = %err, "mount refused");
                Ok(Response::new(MountResponse {
                    object_version: Vec::new(),
                    error: Some(proto::Error {
                        code: code.to_owned(),
                    }),
                    files: Vec::new(),
                }))
            }
        }
    }
}

/// Binds `socket` with mode 0600, replacing a stale socket: bound in a private directory
/// beside it and renamed into place, so it is never reachable with looser permissions.
pub fn bind(socket: &Path) -> Result<UnixListener, ProviderServeError> {
    let failed = |source| ProviderServeError::Socket {
        path: socket.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(socket).map_err(failed)?,
        Ok(_) => {
            return Err(ProviderServeError::NotASocket {
                path: socket.to_owned(),
            });
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(failed(err)),
    }
    let parent = socket
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(failed)?;
    let private = parent.join(format!(".coffer-provider-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(failed)?;
    let staged = private.join("provider.sock");
    let listener = UnixListener::bind(&staged)
        .and_then(|listener| {
            std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
            std::fs::rename(&staged, socket)?;
            Ok(listener)
        })
        .map_err(failed);
    let _ = std::fs::remove_dir_all(&private);
    listener
}

/// Serves the provider on `socket` until `shutdown` completes, then removes the socket.
pub async fn run(
    socket: &Path,
    provider: Provider,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ProviderServeError> {
    let listener = bind(socket)?;
    tracing::info!(socket = %socket.display(), "coffer csi-provider listening");
    let served = tonic::transport::Server::builder()
        .add_service(CsiDriverProviderServer::new(provider))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(ProviderServeError::Serve);
    let _ = std::fs::remove_file(socket);
    served
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::test_api::{self, TOKEN};
    use proto::csi_driver_provider_client::CsiDriverProviderClient;
    use std::collections::BTreeMap;

    async fn client(socket: PathBuf) -> CsiDriverProviderClient<tonic::transport::Channel> {
        CsiDriverProviderClient::new(crate::test_support::unix_channel::connect(&socket).await)
    }

    fn attributes(objects: &str, token: &str) -> String {
        serde_json::json!({
            "objects": objects,
            "region": "us-east-1",
            "usePodIdentity": "false",
            "csi.storage.k8s.io/pod.namespace": "team",
            "csi.storage.k8s.io/pod.name": "web-0",
            "csi.storage.k8s.io/pod.uid": "uid",
            "csi.storage.k8s.io/serviceAccount.name": "web",
            "csi.storage.k8s.io/ephemeral": "true",
            "csi.storage.k8s.io/serviceAccount.tokens":
                serde_json::json!({"coffer": {"token": token, "expirationTimestamp": "2026-12-01T16:00:00Z"}}).to_string(),
        })
        .to_string()
    }

    fn mount(attributes: String) -> MountRequest {
        MountRequest {
            attributes,
            secrets: "{}".into(),
            target_path: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/secrets/mount".into(),
            permission: "420".into(),
            current_object_version: Vec::new(),
        }
    }

    #[tokio::test]
    async fn serves_version_and_mount_over_a_private_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("providers/coffer.sock");
        // A stale socket from an earlier run is replaced.
        std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        let endpoint = test_api::serve(test_api::sample()).await;
        let provider = Provider::new(
            ApiContent::new(&endpoint, None).unwrap(),
            crate::delivery::DEFAULT_AUDIENCE.to_owned(),
        );
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn({
            let socket = socket.clone();
            async move { run(&socket, provider, async { stopped.await.unwrap_or(()) }).await }
        });
        for _ in 0..100 {
            if std::fs::symlink_metadata(&socket)
                .is_ok_and(|m| m.file_type().is_socket() && m.permissions().mode() & 0o777 == 0o600)
            {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert_eq!(
            std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let mut client = client(socket.clone()).await;

        let version = client
            .version(VersionRequest {
                version: "v1alpha1".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(version.version, "v1alpha1");
        assert_eq!(version.runtime_name, "coffer");
        assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));

        let objects = r#"
- objectName: app/db
  objectType: secretsmanager
  jmesPath:
    - {path: username, objectAlias: db-user}
- objectName: /app/url
  objectType: ssmparameter
  objectVersion: "2"
  filePermission: "0400"
"#;
        let response = client
            .mount(mount(attributes(objects, TOKEN)))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.error, None);
        let files: Vec<(String, i32, Vec<u8>)> = response
            .files
            .iter()
            .map(|f| (f.path.clone(), f.mode, f.contents.clone()))
            .collect();
        let db =
            serde_json::json!({"username": "admin", "password": "pw-1", "port": 5432}).to_string();
        assert_eq!(
            files,
            vec![
                ("app_db".to_owned(), 0o644, db.into_bytes()),
                ("db-user".to_owned(), 0o644, b"admin".to_vec()),
                ("_app_url".to_owned(), 0o400, b"https://old.local".to_vec()),
            ]
        );
        let versions: BTreeMap<String, String> = response
            .object_version
            .into_iter()
            .map(|v| (v.id, v.version))
            .collect();
        assert_eq!(
            versions,
            BTreeMap::from([
                ("app_db".to_owned(), "v2".to_owned()),
                ("db-user".to_owned(), "v2".to_owned()),
                ("_app_url".to_owned(), "2".to_owned()),
            ])
        );

        // Failures are codes: the driver counts them; nothing of a value or token in them.
        let cases = [
            (
                "- {objectName: denied, objectType: secretsmanager}",
                TOKEN,
                "PermissionDenied",
            ),
            (
                "- {objectName: missing, objectType: secretsmanager}",
                TOKEN,
                "NotFound",
            ),
            (
                "- {objectName: busy, objectType: secretsmanager}",
                TOKEN,
                "Unavailable",
            ),
            ("- {objectName: app/db}", TOKEN, "InvalidArgument"),
            (
                "- {objectName: app/db, objectType: secretsmanager}",
                "wrong.token.here",
                "PermissionDenied",
            ),
        ];
        for (objects, token, code) in cases {
            let response = client
                .mount(mount(attributes(objects, token)))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                response.error,
                Some(proto::Error { code: code.into() }),
                "{objects}"
            );
            assert!(response.files.is_empty() && response.object_version.is_empty());
        }

        stop.send(()).unwrap();
        served.await.unwrap().unwrap();
        assert!(!socket.exists(), "the socket is removed on shutdown");
    }

    #[test]
    fn will_not_remove_a_file_that_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("coffer.sock");
        std::fs::write(&path, "keep me").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let err = runtime
            .block_on(async { bind(&path).map(|_| ()) })
            .unwrap_err();
        assert!(matches!(err, ProviderServeError::NotASocket { .. }));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
    }
}
