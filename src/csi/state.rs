//! What the plugin remembers of each volume across restarts: one JSON file per volume, mode
//! 0600, in a 0700 directory.
//!
//! The file keeps the pod's latest token, so that refreshes resume after a restart without
//! waiting for kubelet's next republish. The directory is root's alone on the host, and the
//! token is short-lived and good only for the audience `coffer`.

use std::collections::BTreeMap;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use sha2::Digest as _;
use zeroize::Zeroizing;

use crate::delivery::{PodInfo, PodToken};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot prepare the state directory {path}: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot {action} the state file {path}: {source}")]
    File {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    // serde's message may quote the file, which holds a token: keep only the position.
    #[error("the state file {path} does not parse (line {line}, column {column})")]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
    },
}

/// A published volume as remembered.
#[derive(Debug, Clone)]
pub struct VolumeRecord {
    pub volume_id: String,
    pub target: PathBuf,
    pub mount_group: Option<u32>,
    pub attributes: BTreeMap<String, String>,
    pub pod: PodInfo,
    pub token: PodToken,
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored<T> {
    volume_id: String,
    target_path: PathBuf,
    #[serde(default)]
    mount_group: Option<u32>,
    attributes: BTreeMap<String, String>,
    pod: PodInfo,
    token: T,
    #[serde(default)]
    token_expires: Option<String>,
}

/// A state file's path, and its record or why it could not be read.
pub type StateFile = (PathBuf, Result<VolumeRecord, StateError>);

/// The directory of state files.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens `dir`, making it (mode 0700) when missing and taking its mode back to 0700.
    pub fn open(dir: &Path) -> Result<Self, StateError> {
        let failed = |source| StateError::Dir {
            path: dir.to_owned(),
            source,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// The file of the volume at `target`: named by a digest of the path, which kubelet makes
    /// unique per volume.
    pub fn file_for(&self, target: &Path) -> PathBuf {
        let digest = sha2::Sha256::digest(target.as_os_str().as_encoded_bytes());
        self.dir.join(format!("{}.json", hex::encode(digest)))
    }

    pub fn save(&self, record: &VolumeRecord) -> Result<(), StateError> {
        let path = self.file_for(&record.target);
        let stored = Stored {
            volume_id: record.volume_id.clone(),
            target_path: record.target.clone(),
            mount_group: record.mount_group,
            attributes: record.attributes.clone(),
            pod: record.pod.clone(),
            token: record.token.expose(),
            token_expires: record.token.expires.clone(),
        };
        let json =
            Zeroizing::new(
                serde_json::to_vec_pretty(&stored).map_err(|err| StateError::File {
                    action: "encode",
                    path: path.clone(),
                    source: err.into(),
                })?,
            );
        crate::fsutil::write_private_file(&path, &json).map_err(|source| StateError::File {
            action: "write",
            path,
            source,
        })
    }

    /// Forgets the volume at `target`; forgetting one not remembered is no error.
    pub fn remove(&self, target: &Path) -> Result<(), StateError> {
        let path = self.file_for(target);
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(StateError::File {
                action: "remove",
                path,
                source: err,
            }),
            _ => Ok(()),
        }
    }

    /// Every state file, each with its record or why it could not be read.
    pub fn load_all(&self) -> Result<Vec<StateFile>, StateError> {
        let listing = std::fs::read_dir(&self.dir).map_err(|source| StateError::Dir {
            path: self.dir.clone(),
            source,
        })?;
        let mut records = Vec::new();
        for entry in listing {
            let entry = entry.map_err(|source| StateError::Dir {
                path: self.dir.clone(),
                source,
            })?;
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                let record = load(&path);
                records.push((path, record));
            }
        }
        Ok(records)
    }

    /// Removes a state file by path (one that could not be read, or whose volume is gone).
    pub fn discard(&self, path: &Path) -> Result<(), StateError> {
        std::fs::remove_file(path).map_err(|source| StateError::File {
            action: "remove",
            path: path.to_owned(),
            source,
        })
    }
}

fn load(path: &Path) -> Result<VolumeRecord, StateError> {
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| StateError::File {
        action: "read",
        path: path.to_owned(),
        source,
    })?);
    let stored: Stored<String> =
        serde_json::from_slice(&bytes).map_err(|err| StateError::Parse {
            path: path.to_owned(),
            line: err.line(),
            column: err.column(),
        })?;
    Ok(VolumeRecord {
        volume_id: stored.volume_id,
        target: stored.target_path,
        mount_group: stored.mount_group,
        attributes: stored.attributes,
        pod: stored.pod,
        token: PodToken::new(stored.token, stored.token_expires),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_privately() {
        let dir = tempfile::tempdir().unwrap();
        let state_path = dir.path().join("volumes");
        let state = StateDir::open(&state_path).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state_path), 0o700);
        let record = VolumeRecord {
            volume_id: "csi-1".into(),
            target: "/pods/a/mount".into(),
            mount_group: Some(7),
            attributes: [("objects".to_string(), "x".to_string())].into(),
            pod: PodInfo {
                namespace: "ns".into(),
                name: "p".into(),
                uid: "u".into(),
                service_account: "sa".into(),
            },
            token: PodToken::new("jwt".into(), Some("2030-01-01T00:00:00Z".into())),
        };
        state.save(&record).unwrap();
        let file = state.file_for(&record.target);
        assert_eq!(mode(&file), 0o600);
        let loaded = state.load_all().unwrap();
        assert_eq!(loaded.len(), 1);
        let (path, back) = loaded.into_iter().next().unwrap();
        assert_eq!(path, file);
        let back = back.unwrap();
        assert_eq!(back.volume_id, "csi-1");
        assert_eq!(back.mount_group, Some(7));
        assert_eq!(back.pod, record.pod);
        assert_eq!(back.attributes, record.attributes);
        assert_eq!(back.token.expose(), "jwt");
        state.remove(&record.target).unwrap();
        state.remove(&record.target).unwrap();
        assert!(state.load_all().unwrap().is_empty());
    }

    #[test]
    fn a_broken_file_is_reported_without_its_contents() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::write(dir.path().join("x.json"), b"{\"token\": \"jwt-secret\"").unwrap();
        let loaded = state.load_all().unwrap();
        let err = loaded.into_iter().next().unwrap().1.unwrap_err();
        assert!(!err.to_string().contains("jwt-secret"));
    }
}
