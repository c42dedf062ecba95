//! The first access key of a standalone server, and the AWS shared credentials file that hands
//! it to the AWS CLI and SDKs.
//!
//! The store is the source of truth: the secret half is kept there wrapped by the root key, and
//! the credentials file is rewritten from it at every start, so a deleted file comes back and a
//! restart never changes the key.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::ServerError;
use super::datadir::{DataDir, write_private_file};
use crate::crypto::{RootKeyring, SecretBytes};
use crate::store::{RecordKey, RecordKind, RecordValue, Store};

/// The account (namespace) that standalone mode serves.
pub const STANDALONE_ACCOUNT: &str = "default";

/// The profile name written into the credentials and config files.
pub const PROFILE: &str = "coffer";

const ACCESS_KEY_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// An access key id and its secret, as held in memory.
pub struct AccessKey {
    pub id: String,
    pub secret: SecretBytes,
}

/// Associated data binding a wrapped access-key secret to its id, so a wrapped secret copied onto
/// another access key does not unwrap.
fn wrapping_context(id: &str) -> Vec<u8> {
    format!("coffer/accesskey/{id}").into_bytes()
}

/// A fresh access key in AWS's shapes: `AKIA` and 16 base32 characters, and a 40-character secret.
pub fn generate_access_key() -> AccessKey {
    let pick = |alphabet: &[u8], len: usize| -> Vec<u8> {
        (0..len)
            .map(|_| alphabet[rand::random_range(0..alphabet.len())])
            .collect()
    };
    let id = format!(
        "AKIA{}",
        String::from_utf8_lossy(&pick(ACCESS_KEY_ALPHABET, 16))
    );
    AccessKey {
        id,
        secret: SecretBytes::new(pick(SECRET_ALPHABET, 40)),
    }
}

/// Returns the bootstrap admin key, creating it on first start, and (re)writes the credentials
/// and config files from it.
pub async fn ensure_admin_key(
    store: &dyn Store,
    keyring: &RootKeyring,
    dir: &DataDir,
    region: &str,
) -> Result<AccessKey, ServerError> {
    let existing = store
        .list(RecordKind::AccessKey, Some(STANDALONE_ACCOUNT))
        .await?
        .into_iter()
        .find(|(_, record)| record.value.meta["bootstrap"] == json!(true));
    let key = match existing {
        Some((key, record)) => {
            let wrapped =
                record.value.sealed.get("secret").ok_or_else(|| {
                    ServerError::Bootstrap("stored admin key has no secret".into())
                })?;
            let secret = keyring.unwrap(&wrapping_context(&key.name), wrapped)?;
            AccessKey {
                id: key.name,
                secret,
            }
        }
        None => {
            let key = generate_access_key();
            let wrapped = keyring.wrap(&wrapping_context(&key.id), key.secret.expose())?;
            let created = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|elapsed| elapsed.as_secs())
                .unwrap_or(0);
            let value = RecordValue {
                meta: json!({
                    "accessKeyId": key.id,
                    "principal": "admin",
                    "admin": true,
                    "bootstrap": true,
                    "createdDate": created,
                }),
                sealed: [("secret".to_owned(), wrapped)].into_iter().collect(),
            };
            store
                .create(
                    &RecordKey::new(RecordKind::AccessKey, STANDALONE_ACCOUNT, &key.id),
                    value,
                )
                .await?;
            key
        }
    };
    write_credentials_files(dir, &key, region)?;
    Ok(key)
}

fn write_credentials_files(
    dir: &DataDir,
    key: &AccessKey,
    region: &str,
) -> Result<(), ServerError> {
    let secret = std::str::from_utf8(key.secret.expose())
        .map_err(|_| ServerError::Bootstrap("stored admin secret is not text".into()))?;
    let credentials = SecretBytes::new(
        format!(
            "# The admin access key of this coffer data directory. Keep it private.\n\
             [{PROFILE}]\naws_access_key_id = {}\naws_secret_access_key = {secret}\n",
            key.id
        )
        .into_bytes(),
    );
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
    use crate::store::EmbeddedStore;

    #[test]
    fn generated_keys_have_aws_shapes_and_differ() {
        let a = generate_access_key();
        let b = generate_access_key();
        assert_eq!(a.id.len(), 20);
        assert!(a.id.starts_with("AKIA"));
        assert!(a.id[4..].bytes().all(|c| ACCESS_KEY_ALPHABET.contains(&c)));
        assert_eq!(a.secret.len(), 40);
        assert_ne!(a.id, b.id);
        assert_ne!(a.secret.expose(), b.secret.expose());
    }

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
