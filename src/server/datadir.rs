//! The standalone server's data directory: its layout, its permissions, and the files in it that
//! must be written atomically and privately.

use std::fs;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use super::ServerError;

/// Where the server keeps its state.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the directory (mode 0700) when absent, and checks that it is a writable directory.
    pub fn prepare(root: &Path) -> Result<Self, ServerError> {
        let cannot = |source: std::io::Error| ServerError::DataDir {
            path: root.to_path_buf(),
            source,
        };
        if !root.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(cannot)?;
        }
        let metadata = fs::metadata(root).map_err(cannot)?;
        if !metadata.is_dir() {
            return Err(cannot(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a directory",
            )));
        }
        // Probe writability for real: permission bits do not tell the whole story (read-only
        // mounts, root, ACLs).
        let probe = root.join(".coffer-write-probe");
        fs::write(&probe, b"").map_err(cannot)?;
        fs::remove_file(&probe).map_err(cannot)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The root key file (file provider).
    pub fn root_key(&self) -> PathBuf {
        self.root.join("root-key.json")
    }

    /// The embedded database.
    pub fn database(&self) -> PathBuf {
        self.root.join("coffer.redb")
    }

    /// The AWS shared credentials file holding the bootstrap admin key.
    pub fn credentials(&self) -> PathBuf {
        self.root.join("credentials")
    }

    /// The AWS config file naming the region for the `coffer` profile.
    pub fn aws_config(&self) -> PathBuf {
        self.root.join("config")
    }
}

pub use crate::fsutil::write_private_file;

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn prepare_creates_a_private_directory() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("a/b/data");
        let dir = DataDir::prepare(&root).unwrap();
        assert_eq!(dir.path(), root);
        let mode = fs::metadata(&root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn prepare_refuses_a_file_and_a_path_under_a_file() {
        let parent = tempfile::tempdir().unwrap();
        let file = parent.path().join("plain");
        fs::write(&file, b"x").unwrap();
        assert!(matches!(
            DataDir::prepare(&file),
            Err(ServerError::DataDir { .. })
        ));
        assert!(matches!(
            DataDir::prepare(&file.join("below")),
            Err(ServerError::DataDir { .. })
        ));
    }
}
