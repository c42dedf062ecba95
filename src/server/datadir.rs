//! The standalone server's data directory: its layout, its permissions, and the files in it that
//! must be written atomically and privately.

use std::fs;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use super::ServerError;

const DATABASE_FILE: &str = "coffer.redb";

/// Where the server keeps its state.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Creates the directory (mode 0700) when absent, tightens an existing one that others may
    /// read to 0700 (or refuses it when that is not allowed), checks that it is a writable
    /// directory, and makes the database file 0600.
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
        // Keys and the database live here: nobody but the owner may even list it. A directory
        // the server cannot tighten (someone else's) is refused.
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            fs::set_permissions(root, fs::Permissions::from_mode(0o700)).map_err(cannot)?;
            tracing::warn!(
                path = %root.display(),
                was = %format!("{mode:o}"),
                "the data directory was open to other users; it is now 0700"
            );
        }
        // The database is created private, or made so (redb itself creates files per umask).
        let database = root.join(DATABASE_FILE);
        fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&database)
            .map_err(cannot)?;
        fs::set_permissions(&database, fs::Permissions::from_mode(0o600)).map_err(cannot)?;
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
        self.root.join(DATABASE_FILE)
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
    fn prepare_tightens_a_directory_others_can_read_and_keeps_the_database_private() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("data");
        fs::create_dir(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        // A database left world-readable by an earlier version.
        let database = root.join("coffer.redb");
        fs::write(&database, b"").unwrap();
        fs::set_permissions(&database, fs::Permissions::from_mode(0o644)).unwrap();
        let dir = DataDir::prepare(&root).unwrap();
        let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&database), 0o600);
        // A new directory gets a private database before the store opens it.
        let fresh = parent.path().join("fresh");
        let fresh_dir = DataDir::prepare(&fresh).unwrap();
        assert_eq!(mode(&fresh_dir.database()), 0o600);
        crate::store::EmbeddedStore::open(&dir.database()).unwrap();
        crate::store::EmbeddedStore::open(&fresh_dir.database()).unwrap();
        assert_eq!(mode(&fresh_dir.database()), 0o600);
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
