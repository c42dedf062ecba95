//! The first access key of a standalone server, and the AWS shared credentials file that hands
//! it to the AWS CLI and SDKs.
//!
//! The store is the source of truth: the secret half is kept there wrapped by the root key, and
//! the credentials file is rewritten from it at every start, so a deleted file comes back and a
//! restart never changes the key.

use super::ServerError;
use super::datadir::{DataDir, write_private_file};
use crate::aws::identity::{AccessKey, create_access_key, find_bootstrap_key};
use crate::crypto::{RootKeyring, SecretBytes};
use crate::engine::{Clock as _, SystemClock};
use crate::store::Store;

/// The account (namespace) that standalone mode serves.
pub const STANDALONE_ACCOUNT: &str = "default";

/// The profile name written into the credentials and config files.
pub const PROFILE: &str = "coffer";

/// The user name of the bootstrap admin key.
pub const ADMIN_USER: &str = "admin";

/// Returns the bootstrap admin key, creating it on first start, and (re)writes the credentials
/// and config files from it.
pub async fn ensure_admin_key(
    store: &dyn Store,
    keyring: &RootKeyring,
    dir: &DataDir,
    region: &str,
) -> Result<AccessKey, ServerError> {
    let key = match find_bootstrap_key(store, keyring, STANDALONE_ACCOUNT)
        .await
        .map_err(ServerError::Bootstrap)?
    {
        Some(key) => key,
        None => {
            create_access_key(
                store,
                keyring,
                STANDALONE_ACCOUNT,
                ADMIN_USER,
                true,
                true,
                SystemClock.now(),
            )
            .await?
        }
    };
    write_credentials_files(dir, &key, region)?;
    Ok(key)
}

/// The text of a shared credentials file naming one key under `profile`.
pub fn credentials_file_text(profile: &str, key: &AccessKey) -> Result<SecretBytes, ServerError> {
    let secret = std::str::from_utf8(key.secret.expose())
        .map_err(|_| ServerError::Bootstrap("stored secret is not text".into()))?;
    Ok(SecretBytes::new(
        format!(
            "# A coffer access key. Keep this file private.\n\
             [{profile}]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
            key.id
        )
        .into_bytes(),
    ))
}

fn write_credentials_files(
    dir: &DataDir,
    key: &AccessKey,
    region: &str,
) -> Result<(), ServerError> {
    let credentials = credentials_file_text(PROFILE, key)?;
    let io = |path: std::path::PathBuf| {
        move |source| ServerError::WriteFile {
            path: path.clone(),
            source,
        }
    };
    write_private_file(&dir.credentials(), credentials.expose()).map_err(io(dir.credentials()))?;
    let config = format!("[profile {PROFILE}]\nregion = {region}\noutput = json\n");
    write_private_file(&dir.aws_config(), config.as_bytes()).map_err(io(dir.aws_config()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EmbeddedStore, RecordKey, RecordKind};

    #[tokio::test]
    async fn admin_key_is_created_once_and_files_are_rewritten_from_the_store() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::prepare(tmp.path()).unwrap();
        let store = EmbeddedStore::open(&dir.database()).unwrap();
        let keyring = RootKeyring::generate();

        let first = ensure_admin_key(&store, &keyring, &dir, "us-east-1")
            .await
            .unwrap();
        let written = std::fs::read_to_string(dir.credentials()).unwrap();
        assert!(written.contains(&format!("aws_access_key_id = {}", first.id)));
        let secret = std::str::from_utf8(first.secret.expose()).unwrap();
        assert!(written.contains(&format!("aws_secret_access_key = {secret}")));

        // The stored record holds the secret wrapped, never in the clear.
        let record = store
            .get(&RecordKey::new(
                RecordKind::AccessKey,
                STANDALONE_ACCOUNT,
                &first.id,
            ))
            .await
            .unwrap()
            .unwrap();
        let serialized = serde_json::to_string(&record.value).unwrap();
        assert!(!serialized.contains(secret));

        std::fs::remove_file(dir.credentials()).unwrap();
        let second = ensure_admin_key(&store, &keyring, &dir, "us-east-1")
            .await
            .unwrap();
        assert_eq!(first.id, second.id);
        assert_eq!(first.secret, second.secret);
        assert_eq!(std::fs::read_to_string(dir.credentials()).unwrap(), written);
        let config = std::fs::read_to_string(dir.aws_config()).unwrap();
        assert!(config.contains("[profile coffer]\nregion = us-east-1"));
    }

    #[tokio::test]
    async fn another_root_key_cannot_unwrap_the_admin_secret() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::prepare(tmp.path()).unwrap();
        let store = EmbeddedStore::open(&dir.database()).unwrap();
        ensure_admin_key(&store, &RootKeyring::generate(), &dir, "us-east-1")
            .await
            .unwrap();
        let other = RootKeyring::generate();
        assert!(
            ensure_admin_key(&store, &other, &dir, "us-east-1")
                .await
                .is_err()
        );
    }
}
