//! `coffer admin`: changes to a standalone data directory made from the command line.

use std::path::Path;
use std::sync::Arc;

use super::ServerError;
use super::bootstrap::{STANDALONE_ACCOUNT, credentials_file_text};
use super::datadir::DataDir;
use crate::aws::identity::{create_access_key as create_key, validate_user_name};
use crate::crypto::{FileRootKeyProvider, RootKeyProvider as _};
use crate::engine::{Clock as _, SystemClock};
use crate::store::EmbeddedStore;

/// Creates an access key for `user` and returns it as a shared credentials file section.
pub async fn create_access_key(
    data_dir: &Path,
    user: &str,
    admin: bool,
    profile: &str,
) -> Result<String, ServerError> {
    validate_user_name(user).map_err(ServerError::Bootstrap)?;
    if !data_dir.join("root-key.json").exists() {
        return Err(ServerError::Bootstrap(format!(
            "{} is not a coffer data directory; start `coffer server` on it once first",
            data_dir.display()
        )));
    }
    let dir = DataDir::prepare(data_dir)?;
    let keyring = Arc::new(FileRootKeyProvider::new(dir.root_key()).load().await?);
    let store = EmbeddedStore::open(&dir.database()).map_err(|err| {
        ServerError::Bootstrap(format!(
            "cannot open the database ({err}); stop the server on this directory first"
        ))
    })?;
    let key = create_key(
        &store,
        &keyring,
        STANDALONE_ACCOUNT,
        user,
        admin,
        false,
        SystemClock.now(),
    )
    .await?;
    let text = credentials_file_text(profile, &key)?;
    String::from_utf8(text.expose().to_vec())
        .map_err(|_| ServerError::Bootstrap("credentials are not text".into()))
}
