//! The plugin's Unix socket: where it is, and binding it so that only root can connect.

use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("endpoint {0:?} is not a Unix socket path (unix:///PATH or /PATH)")]
    NotUnix(String),
    #[error("socket path {0} is longer than {MAX_SOCKET_PATH_BYTES} bytes")]
    TooLong(PathBuf),
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot prepare the socket {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Longest socket path this plugin binds: `sun_path` holds 108 bytes with the closing NUL, and
/// the socket is first bound in a directory beside its place, 11 bytes longer (`.sXXXXXXXX/s`).
pub const MAX_SOCKET_PATH_BYTES: usize = 96;

/// The socket path of a CSI endpoint: `unix:///path`, `unix:/path` or a plain absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, EndpointError> {
    let path = endpoint
        .strip_prefix("unix://")
        .or_else(|| endpoint.strip_prefix("unix:"))
        .unwrap_or(endpoint);
    if !path.starts_with('/') || path.len() < 2 {
        return Err(EndpointError::NotUnix(endpoint.to_owned()));
    }
    if path.len() > MAX_SOCKET_PATH_BYTES {
        return Err(EndpointError::TooLong(PathBuf::from(path)));
    }
    Ok(PathBuf::from(path))
}

/// Listens on `path` with the socket at mode 0600 from the moment it can be reached: it is
/// bound inside a fresh 0700 directory beside `path`, made 0600 there, then renamed into place.
/// A stale socket from an earlier run is removed first; anything else at `path` is left alone.
pub fn bind(path: &Path) -> Result<UnixListener, EndpointError> {
    let io = |source| EndpointError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path).map_err(io)?,
        Ok(_) => {
            return Err(EndpointError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(io(err)),
    }
    let parent = path
        .parent()
        .ok_or_else(|| EndpointError::NotUnix(path.display().to_string()))?;
    std::fs::create_dir_all(parent).map_err(io)?;
    let random = uuid::Uuid::new_v4().simple().to_string();
    let private = parent.join(format!(".s{}", random.get(..8).unwrap_or(&random)));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(io)?;
    let staged = private.join("s");
    let result = (|| {
        let listener = UnixListener::bind(&staged)?;
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    result.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_name_socket_paths() {
        assert_eq!(
            socket_path("unix:///var/lib/kubelet/plugins/csi.coffer.dev/csi.sock").unwrap(),
            PathBuf::from("/var/lib/kubelet/plugins/csi.coffer.dev/csi.sock")
        );
        assert_eq!(
            socket_path("unix:/run/csi.sock").unwrap(),
            PathBuf::from("/run/csi.sock")
        );
        assert_eq!(
            socket_path("/run/csi.sock").unwrap(),
            PathBuf::from("/run/csi.sock")
        );
        for bad in [
            "tcp://127.0.0.1:10000",
            "unix://relative",
            "csi.sock",
            "",
            "unix://",
        ] {
            assert!(socket_path(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_longest_socket_path_binds() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().display().to_string();
        let name = "x".repeat(MAX_SOCKET_PATH_BYTES - base.len() - 1);
        let path = socket_path(&format!("{base}/{name}")).unwrap();
        let _listener = bind(&path).unwrap();
        assert!(tokio::net::UnixStream::connect(&path).await.is_ok());
    }

    #[tokio::test]
    async fn the_socket_is_private_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        let first = bind(&path).unwrap();
        drop(first);
        let listener = bind(&path).unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert!(tokio::net::UnixStream::connect(&path).await.is_ok());
        drop(listener);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["csi.sock"]);
    }

    #[test]
    fn a_regular_file_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        std::fs::write(&path, b"keep").unwrap();
        assert!(matches!(bind(&path), Err(EndpointError::NotASocket { .. })));
        assert_eq!(std::fs::read(&path).unwrap(), b"keep");
    }
}
