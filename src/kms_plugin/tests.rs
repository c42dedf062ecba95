//! The plugin as kube-apiserver sees it: a tonic client over a real Unix socket.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tonic::Code;

use super::proto::key_management_service_client::KeyManagementServiceClient;
use super::proto::{DecryptRequest, EncryptRequest, StatusRequest};
use super::*;

type Client = KeyManagementServiceClient<tonic::transport::Channel>;

fn settings(dir: &Path) -> PluginSettings {
    PluginSettings {
        data_dir: dir.join("data"),
        root_key_file: None,
        key: DEFAULT_KEY.to_owned(),
        rotation_period_days: None,
    }
}

/// A running plugin: its client, its key, and how to stop it.
struct Running {
    client: Client,
    key: Arc<PluginKey>,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), KmsPluginError>>,
}

impl Running {
    async fn start(settings: &PluginSettings, socket: PathBuf) -> Self {
        let key = Arc::new(PluginKey::open(settings).await.unwrap());
        let listener = endpoint::bind(&socket).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(Arc::clone(&key), listener, async {
            stopped.await.unwrap_or(())
        }));
        let channel = crate::test_support::unix_channel::connect(&socket).await;
        Self {
            client: KeyManagementServiceClient::new(channel),
            key,
            stop,
            served,
        }
    }

    /// Stops serving and releases the store, so that the data directory can open again.
    async fn stop(self) {
        drop(self.client);
        let _ = self.stop.send(());
        self.served.await.unwrap().unwrap();
        assert_eq!(Arc::strong_count(&self.key), 1, "the engine is still held");
        drop(self.key);
        // A store read the aborted scheduler had started finishes on a blocking thread, which
        // holds the database until then.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

async fn encrypt(client: &mut Client, plaintext: &[u8]) -> super::proto::EncryptResponse {
    client
        .encrypt(EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
}

async fn decrypt(client: &mut Client, ciphertext: &[u8]) -> Result<Vec<u8>, tonic::Status> {
    client
        .decrypt(DecryptRequest {
            ciphertext: ciphertext.to_vec(),
            uid: "test".into(),
            key_id: String::new(),
            annotations: Default::default(),
        })
        .await
        .map(|response| response.into_inner().plaintext)
}

async fn status(client: &mut Client) -> super::proto::StatusResponse {
    client.status(StatusRequest {}).await.unwrap().into_inner()
}

#[tokio::test]
async fn status_encrypt_and_decrypt_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = Running::start(&settings(dir.path()), dir.path().join("kms.sock")).await;

    let health = status(&mut plugin.client).await;
    assert_eq!(health.version, "v2");
    assert_eq!(health.healthz, "ok");
    assert!(
        health.key_id.starts_with("arn:aws:kms:us-east-1:"),
        "{}",
        health.key_id
    );
    assert!(health.key_id.ends_with(":v1"), "{}", health.key_id);

    let data_key = [7u8; 32];
    let sealed = encrypt(&mut plugin.client, &data_key).await;
    assert_eq!(sealed.key_id, health.key_id);
    assert_eq!(sealed.annotations.get(VERSION_ANNOTATION).unwrap(), b"1");
    assert!(!sealed.ciphertext.windows(32).any(|w| w == data_key));
    // kube-apiserver stores at most 1 KiB of ciphertext.
    assert!(
        sealed.ciphertext.len() <= 1024,
        "{}",
        sealed.ciphertext.len()
    );
    assert_eq!(
        decrypt(&mut plugin.client, &sealed.ciphertext)
            .await
            .unwrap(),
        data_key
    );

    let socket_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("kms.sock"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(socket_mode & 0o777, 0o600);
    plugin.stop().await;
}

#[tokio::test]
async fn rotation_changes_the_key_id_and_old_ciphertexts_still_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = Running::start(&settings(dir.path()), dir.path().join("kms.sock")).await;
    let before = status(&mut plugin.client).await.key_id;
    let old = encrypt(&mut plugin.client, b"old data key").await;

    assert_eq!(plugin.key.rotate().await.unwrap(), 2);
    let after = status(&mut plugin.client).await;
    assert_eq!(after.healthz, "ok");
    assert_ne!(after.key_id, before);
    assert!(after.key_id.ends_with(":v2"));

    let new = encrypt(&mut plugin.client, b"new data key").await;
    assert_eq!(new.key_id, after.key_id);
    assert_eq!(new.annotations.get(VERSION_ANNOTATION).unwrap(), b"2");
    assert_eq!(
        decrypt(&mut plugin.client, &old.ciphertext).await.unwrap(),
        b"old data key"
    );
    assert_eq!(
        decrypt(&mut plugin.client, &new.ciphertext).await.unwrap(),
        b"new data key"
    );
    plugin.stop().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_invalid_argument() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = Running::start(&settings(dir.path()), dir.path().join("kms.sock")).await;
    let sealed = encrypt(&mut plugin.client, b"a data key").await.ciphertext;

    let empty = plugin
        .client
        .encrypt(EncryptRequest {
            plaintext: Vec::new(),
            uid: "empty".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);

    // Too long for the engine, yet within the request cap.
    let long = plugin
        .client
        .encrypt(EncryptRequest {
            plaintext: vec![1; 5000],
            uid: "long".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(long.code(), Code::InvalidArgument);

    // Past the request cap: refused before it reaches the engine.
    let oversized = plugin
        .client
        .encrypt(EncryptRequest {
            plaintext: vec![1; MAX_REQUEST_BYTES + 1],
            uid: "oversized".into(),
        })
        .await
        .unwrap_err();
    assert_ne!(oversized.code(), Code::Ok);

    let mut corrupted = sealed.clone();
    if let Some(last) = corrupted.last_mut() {
        *last ^= 1;
    }
    let truncated = sealed.get(..sealed.len() / 2).unwrap().to_vec();
    for (name, blob) in [
        ("empty", Vec::new()),
        ("garbage", b"not a ciphertext at all".to_vec()),
        ("corrupted", corrupted),
        ("truncated", truncated),
    ] {
        let err = decrypt(&mut plugin.client, &blob).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(!err.message().contains("a data key"), "{name}");
    }
    // The service still answers after all that.
    assert_eq!(status(&mut plugin.client).await.healthz, "ok");
    plugin.stop().await;
}

#[tokio::test]
async fn a_ciphertext_of_another_plugin_does_not_decrypt() {
    let dir = tempfile::tempdir().unwrap();
    let other_dir = tempfile::tempdir().unwrap();
    let mut other =
        Running::start(&settings(other_dir.path()), other_dir.path().join("k.sock")).await;
    let foreign = encrypt(&mut other.client, b"someone else's key")
        .await
        .ciphertext;
    other.stop().await;

    let mut plugin = Running::start(&settings(dir.path()), dir.path().join("kms.sock")).await;
    let err = decrypt(&mut plugin.client, &foreign).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // A second key in the same store (a blob under another key of this plugin's store).
    let second = PluginSettings {
        key: "alias/other".into(),
        ..settings(dir.path())
    };
    plugin.stop().await;
    let other_key = PluginKey::open(&second).await.unwrap();
    let (under_other, _) = other_key.encrypt(b"another key").await.unwrap();
    drop(other_key);
    let mut plugin = Running::start(&settings(dir.path()), dir.path().join("kms.sock")).await;
    let err = decrypt(&mut plugin.client, &under_other).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    plugin.stop().await;
}

#[tokio::test]
async fn a_restart_on_the_same_data_dir_keeps_every_version() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let mut plugin = Running::start(&settings(dir.path()), socket.clone()).await;
    let first = encrypt(&mut plugin.client, b"first").await;
    plugin.stop().await;

    // Rotation while the plugin is stopped, as `coffer kms-plugin rotate-key` does it.
    let rotated = rotate_offline(&settings(dir.path())).await.unwrap();
    assert!(rotated.ends_with(":v2"), "{rotated}");

    let mut plugin = Running::start(&settings(dir.path()), socket).await;
    assert_eq!(status(&mut plugin.client).await.key_id, rotated);
    let second = encrypt(&mut plugin.client, b"second").await;
    assert_eq!(second.key_id, rotated);
    assert_eq!(
        decrypt(&mut plugin.client, &first.ciphertext)
            .await
            .unwrap(),
        b"first"
    );
    assert_eq!(
        decrypt(&mut plugin.client, &second.ciphertext)
            .await
            .unwrap(),
        b"second"
    );
    plugin.stop().await;
}

#[tokio::test]
async fn a_running_plugin_holds_its_store() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = Running::start(&settings(dir.path()), dir.path().join("kms.sock")).await;
    assert!(matches!(
        rotate_offline(&settings(dir.path())).await,
        Err(KmsPluginError::Store(_))
    ));
    plugin.stop().await;
}

#[tokio::test]
async fn a_named_key_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = PluginSettings {
        key: "1234abcd-12ab-34cd-56ef-1234567890ab".into(),
        ..settings(dir.path())
    };
    assert!(matches!(
        PluginKey::open(&missing).await,
        Err(KmsPluginError::NoSuchKey { .. })
    ));
}

#[tokio::test]
async fn a_disabled_key_fails_status_and_encrypt() {
    let dir = tempfile::tempdir().unwrap();
    let mut plugin = Running::start(&settings(dir.path()), dir.path().join("kms.sock")).await;
    let sealed = encrypt(&mut plugin.client, b"sealed while enabled").await;
    plugin
        .key
        .kms
        .disable_key(&plugin.key.caller, &plugin.key.key_id)
        .await
        .unwrap();

    let health = status(&mut plugin.client).await;
    assert_eq!(health.version, "v2");
    assert_ne!(health.healthz, "ok");
    assert!(
        health.healthz.contains("DisabledException"),
        "{}",
        health.healthz
    );
    assert!(health.key_id.ends_with(":v1"), "{}", health.key_id);
    let refused = plugin
        .client
        .encrypt(EncryptRequest {
            plaintext: b"a data key".to_vec(),
            uid: "disabled".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    let refused = decrypt(&mut plugin.client, &sealed.ciphertext)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);

    plugin
        .key
        .kms
        .enable_key(&plugin.key.caller, &plugin.key.key_id)
        .await
        .unwrap();
    assert_eq!(status(&mut plugin.client).await.healthz, "ok");
    plugin.stop().await;
}

#[tokio::test]
async fn a_rotation_period_turns_on_scheduled_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let scheduled = PluginSettings {
        rotation_period_days: Some(90),
        ..settings(dir.path())
    };
    let key = PluginKey::open(&scheduled).await.unwrap();
    let record = key
        .kms
        .key_record(PLUGIN_ACCOUNT, &key.key_id)
        .await
        .unwrap()
        .unwrap();
    assert!(record.rotation_enabled);
    assert_eq!(record.rotation_period_days, Some(90));
    assert!(record.next_rotation.is_some());
    drop(key);

    let too_short = PluginSettings {
        rotation_period_days: Some(30),
        ..settings(dir.path())
    };
    assert!(matches!(
        PluginKey::open(&too_short).await,
        Err(KmsPluginError::Key { .. })
    ));
}
