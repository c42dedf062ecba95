//! The KMS engine's behaviour on the embedded store, with a clock the tests move.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::*;
use crate::store::EmbeddedStore;
use crate::test_support::engine::{ManualClock, NameAuthority, caller};

const DAY: i64 = 86_400;

struct Fixture {
    _dir: tempfile::TempDir,
    kms: Kms,
    clock: Arc<ManualClock>,
    admin: Caller,
    user: Caller,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let kms = Kms::new(
        store,
        Arc::new(RootKeyring::generate()),
        Arc::new(NameAuthority),
        clock.clone(),
        "us-east-1",
    );
    Fixture {
        _dir: dir,
        kms,
        clock,
        admin: caller("admin"),
        user: caller("app"),
    }
}

fn context(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn symmetric_key(f: &Fixture) -> String {
    f.kms
        .create_key(&f.admin, CreateKeyRequest::default())
        .await
        .unwrap()
        .key_id
}

#[tokio::test]
async fn encrypt_decrypt_round_trip_binds_the_context() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    let ctx = context(&[("app", "billing")]);
    let (blob, arn, algorithm) = f
        .kms
        .encrypt(&f.admin, &key, b"card number", &ctx, None)
        .await
        .unwrap();
    assert!(arn.ends_with(&format!("key/{key}")));
    assert_eq!(algorithm, "SYMMETRIC_DEFAULT");

    let (plain, _, _) = f
        .kms
        .decrypt(&f.admin, &blob, &ctx, None, None)
        .await
        .unwrap();
    assert_eq!(plain.expose(), b"card number");

    let wrong = context(&[("app", "payroll")]);
    assert!(matches!(
        f.kms.decrypt(&f.admin, &blob, &wrong, None, None).await,
        Err(KmsError::InvalidCiphertext)
    ));
    assert!(matches!(
        f.kms
            .decrypt(&f.admin, &blob, &BTreeMap::new(), None, None)
            .await,
        Err(KmsError::InvalidCiphertext)
    ));
}

#[tokio::test]
async fn decrypt_with_another_key_id_is_incorrect_key() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    let other = symmetric_key(&f).await;
    let (blob, _, _) = f
        .kms
        .encrypt(&f.admin, &key, b"x", &BTreeMap::new(), None)
        .await
        .unwrap();
    assert!(matches!(
        f.kms
            .decrypt(&f.admin, &blob, &BTreeMap::new(), Some(&other), None)
            .await,
        Err(KmsError::IncorrectKey)
    ));
    f.kms
        .decrypt(&f.admin, &blob, &BTreeMap::new(), Some(&key), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn tampered_ciphertexts_are_invalid() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    let (blob, _, _) = f
        .kms
        .encrypt(&f.admin, &key, b"secret", &BTreeMap::new(), None)
        .await
        .unwrap();
    for index in [0, 5, blob.len() / 2, blob.len() - 1] {
        let mut tampered = blob.clone();
        tampered[index] ^= 0x01;
        let outcome = f
            .kms
            .decrypt(&f.admin, &tampered, &BTreeMap::new(), None, None)
            .await;
        assert!(
            matches!(
                outcome,
                Err(KmsError::InvalidCiphertext | KmsError::NotFound(_))
            ),
            "flip at {index}"
        );
    }
}

#[tokio::test]
async fn a_key_rotated_twice_decrypts_under_every_version() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    let none = BTreeMap::new();
    let mut blobs = Vec::new();
    for round in 0..3 {
        let plaintext = format!("made under version {}", round + 1);
        let (blob, _, _) = f
            .kms
            .encrypt(&f.admin, &key, plaintext.as_bytes(), &none, None)
            .await
            .unwrap();
        assert_eq!(
            crate::crypto::parse_header(&blob).unwrap().key_version,
            round + 1
        );
        blobs.push((blob, plaintext));
        if round < 2 {
            f.kms.rotate_key_on_demand(&f.admin, &key).await.unwrap();
        }
    }
    for (blob, plaintext) in &blobs {
        let (plain, _, _) = f
            .kms
            .decrypt(&f.admin, blob, &none, None, None)
            .await
            .unwrap();
        assert_eq!(plain.expose(), plaintext.as_bytes());
    }
    let rotations = f
        .kms
        .list_key_rotations(&f.admin, &key, None, None)
        .await
        .unwrap();
    assert_eq!(rotations.items.len(), 2);
    assert!(
        rotations
            .items
            .iter()
            .all(|r| r.rotation_type == RotationType::OnDemand)
    );
}

#[tokio::test]
async fn scheduled_rotation_fires_at_its_due_time() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    f.kms
        .enable_key_rotation(&f.admin, &key, Some(90))
        .await
        .unwrap();
    let status = f.kms.get_key_rotation_status(&f.admin, &key).await.unwrap();
    let due = status.next_rotation_date.unwrap();
    assert_eq!(due, f.clock.now() + 90 * DAY);

    // Not yet due: nothing happens, and the scheduler is told when to wake.
    assert_eq!(f.kms.run_due().await.unwrap(), Some(due));
    f.clock.advance(90 * DAY - 1);
    f.kms.run_due().await.unwrap();
    assert!(
        f.kms
            .list_key_rotations(&f.admin, &key, None, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );

    f.clock.advance(1);
    let next = f.kms.run_due().await.unwrap();
    let rotations = f
        .kms
        .list_key_rotations(&f.admin, &key, None, None)
        .await
        .unwrap();
    assert_eq!(rotations.items.len(), 1);
    assert_eq!(rotations.items[0].rotation_type, RotationType::Automatic);
    assert_eq!(next, Some(f.clock.now() + 90 * DAY));
}

#[tokio::test]
async fn pending_deletion_refuses_use_until_cancelled() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    let none = BTreeMap::new();
    let (blob, _, _) = f
        .kms
        .encrypt(&f.admin, &key, b"keep me", &none, None)
        .await
        .unwrap();

    let scheduled = f
        .kms
        .schedule_key_deletion(&f.admin, &key, Some(7))
        .await
        .unwrap();
    assert_eq!(scheduled.key_state, KeyState::PendingDeletion);
    assert_eq!(scheduled.deletion_date, Some(f.clock.now() + 7 * DAY));
    assert!(matches!(
        f.kms.encrypt(&f.admin, &key, b"x", &none, None).await,
        Err(KmsError::InvalidState(_))
    ));
    assert!(matches!(
        f.kms.decrypt(&f.admin, &blob, &none, None, None).await,
        Err(KmsError::InvalidState(_))
    ));
    assert!(matches!(
        f.kms.enable_key(&f.admin, &key).await,
        Err(KmsError::InvalidState(_))
    ));

    f.kms.cancel_key_deletion(&f.admin, &key).await.unwrap();
    let described = f.kms.describe_key(&f.admin, &key).await.unwrap();
    assert_eq!(described.key_state, KeyState::Disabled);
    assert!(matches!(
        f.kms.decrypt(&f.admin, &blob, &none, None, None).await,
        Err(KmsError::Disabled(_))
    ));
    f.kms.enable_key(&f.admin, &key).await.unwrap();
    let (plain, _, _) = f
        .kms
        .decrypt(&f.admin, &blob, &none, None, None)
        .await
        .unwrap();
    assert_eq!(plain.expose(), b"keep me");
}

#[tokio::test]
async fn material_is_destroyed_only_after_the_window() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    f.kms
        .create_alias(&f.admin, "alias/doomed", &key)
        .await
        .unwrap();
    f.kms
        .schedule_key_deletion(&f.admin, &key, Some(7))
        .await
        .unwrap();
    f.clock.advance(7 * DAY - 1);
    f.kms.run_due().await.unwrap();
    assert_eq!(
        f.kms.describe_key(&f.admin, &key).await.unwrap().key_state,
        KeyState::PendingDeletion
    );
    f.clock.advance(1);
    f.kms.run_due().await.unwrap();
    assert!(matches!(
        f.kms.describe_key(&f.admin, &key).await,
        Err(KmsError::NotFound(_))
    ));
    assert!(matches!(
        f.kms.describe_key(&f.admin, "alias/doomed").await,
        Err(KmsError::NotFound(_))
    ));
}

#[tokio::test]
async fn disabled_keys_refuse_cryptography() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    f.kms.disable_key(&f.admin, &key).await.unwrap();
    assert!(matches!(
        f.kms
            .encrypt(&f.admin, &key, b"x", &BTreeMap::new(), None)
            .await,
        Err(KmsError::Disabled(_))
    ));
    assert!(matches!(
        f.kms
            .generate_data_key(&f.admin, &key, DataKeySize::Aes256, &BTreeMap::new(), true)
            .await,
        Err(KmsError::Disabled(_))
    ));
}

#[tokio::test]
async fn key_references_resolve_by_id_arn_alias_and_alias_arn() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    f.kms
        .create_alias(&f.admin, "alias/app", &key)
        .await
        .unwrap();
    let account = account_id("default");
    for reference in [
        key.clone(),
        format!("arn:aws:kms:us-east-1:{account}:key/{key}"),
        "alias/app".to_owned(),
        format!("arn:aws:kms:us-east-1:{account}:alias/app"),
    ] {
        let metadata = f.kms.describe_key(&f.admin, &reference).await.unwrap();
        assert_eq!(metadata.key_id, key, "{reference}");
    }
    assert!(matches!(
        f.kms.create_alias(&f.admin, "alias/app", &key).await,
        Err(KmsError::AlreadyExists(_))
    ));
    assert!(matches!(
        f.kms.create_alias(&f.admin, "alias/aws/x", &key).await,
        Err(KmsError::InvalidAliasName(_))
    ));
    assert!(matches!(
        f.kms.describe_key(&f.admin, "alias/missing").await,
        Err(KmsError::NotFound(_))
    ));
    assert!(matches!(
        f.kms
            .describe_key(&f.admin, "arn:aws:kms:us-east-1:999999999999:key/x")
            .await,
        Err(KmsError::NotFound(_))
    ));
}

#[tokio::test]
async fn policies_decide_for_non_admins_and_deny_wins() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    let none = BTreeMap::new();
    assert!(matches!(
        f.kms.encrypt(&f.user, &key, b"x", &none, None).await,
        Err(KmsError::AccessDenied(_))
    ));
    let account = account_id("default");
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": format!("arn:aws:iam::{account}:root")}, "Action": "kms:*", "Resource": "*"},
            {"Effect": "Allow", "Principal": {"AWS": f.user.principal.arn}, "Action": ["kms:Encrypt", "kms:Decrypt"], "Resource": "*",
             "Condition": {"StringEquals": {"kms:EncryptionContext:team": "blue"}}},
            {"Effect": "Deny", "Principal": {"AWS": f.admin.principal.arn}, "Action": "kms:Decrypt", "Resource": "*"}
        ]
    })
    .to_string();
    f.kms
        .put_key_policy(&f.admin, &key, None, &policy, false)
        .await
        .unwrap();
    let blue = context(&[("team", "blue")]);
    let (blob, _, _) = f
        .kms
        .encrypt(&f.user, &key, b"x", &blue, None)
        .await
        .unwrap();
    f.kms
        .decrypt(&f.user, &blob, &blue, None, None)
        .await
        .unwrap();
    assert!(matches!(
        f.kms
            .encrypt(&f.user, &key, b"x", &context(&[("team", "red")]), None)
            .await,
        Err(KmsError::AccessDenied(_))
    ));
    assert!(matches!(
        f.kms.decrypt(&f.admin, &blob, &blue, None, None).await,
        Err(KmsError::AccessDenied(_))
    ));

    let lockout = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f.user.principal.arn}, "Action": "kms:*", "Resource": "*"}]
    })
    .to_string();
    assert!(matches!(
        f.kms
            .put_key_policy(&f.admin, &key, None, &lockout, false)
            .await,
        Err(KmsError::MalformedPolicyDocument(_))
    ));
    f.kms
        .put_key_policy(&f.admin, &key, None, &lockout, true)
        .await
        .unwrap();
}

#[tokio::test]
async fn re_encrypt_moves_a_ciphertext_to_another_key_and_context() {
    let f = fixture();
    let source = symmetric_key(&f).await;
    let destination = symmetric_key(&f).await;
    let old = context(&[("v", "1")]);
    let new = context(&[("v", "2")]);
    let (blob, _, _) = f
        .kms
        .encrypt(&f.admin, &source, b"moving", &old, None)
        .await
        .unwrap();
    let moved = f
        .kms
        .re_encrypt(&f.admin, &blob, &old, None, None, &destination, &new, None)
        .await
        .unwrap();
    assert!(moved.key_arn.ends_with(&destination));
    assert!(moved.source_key_arn.ends_with(&source));
    let (plain, arn, _) = f
        .kms
        .decrypt(&f.admin, &moved.ciphertext, &new, None, None)
        .await
        .unwrap();
    assert_eq!(plain.expose(), b"moving");
    assert!(arn.ends_with(&destination));
}

#[tokio::test]
async fn data_keys_have_the_asked_size_and_decrypt() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    let none = BTreeMap::new();
    for (size, len) in [
        (DataKeySize::Aes256, 32),
        (DataKeySize::Aes128, 16),
        (DataKeySize::Bytes(1), 1),
        (DataKeySize::Bytes(1024), 1024),
    ] {
        let data_key = f
            .kms
            .generate_data_key(&f.admin, &key, size, &none, true)
            .await
            .unwrap();
        assert_eq!(data_key.plaintext.len(), len);
        let (plain, _, _) = f
            .kms
            .decrypt(&f.admin, &data_key.ciphertext, &none, None, None)
            .await
            .unwrap();
        assert_eq!(plain, data_key.plaintext);
    }
    assert!(matches!(
        f.kms
            .generate_data_key(&f.admin, &key, DataKeySize::Bytes(1025), &none, true)
            .await,
        Err(KmsError::Validation(_))
    ));
    assert!(DataKeySize::from_request(None, None).is_err());
    assert!(DataKeySize::from_request(Some("AES_256"), Some(3)).is_err());
}

#[tokio::test]
async fn plaintext_limits_are_enforced() {
    let f = fixture();
    let key = symmetric_key(&f).await;
    let none = BTreeMap::new();
    f.kms
        .encrypt(&f.admin, &key, &[7u8; 4096], &none, None)
        .await
        .unwrap();
    for bad in [Vec::new(), vec![7u8; 4097]] {
        assert!(matches!(
            f.kms.encrypt(&f.admin, &key, &bad, &none, None).await,
            Err(KmsError::Validation(_))
        ));
    }
}

#[tokio::test]
async fn listing_keys_pages_with_markers() {
    let f = fixture();
    let mut created = Vec::new();
    for _ in 0..5 {
        created.push(symmetric_key(&f).await);
    }
    created.sort();
    let mut seen = Vec::new();
    let mut marker = None;
    loop {
        let page = f
            .kms
            .list_keys(&f.admin, Some(2), marker.as_deref())
            .await
            .unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.into_iter().map(|entry| entry.key_id));
        match page.next_token {
            Some(next) => marker = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, created);
    assert!(matches!(
        f.kms
            .list_keys(&f.admin, Some(2), Some("not base64!"))
            .await,
        Err(KmsError::InvalidMarker(_))
    ));
    assert!(matches!(
        f.kms.list_keys(&f.user, None, None).await,
        Err(KmsError::AccessDenied(_))
    ));
}

/// What a key's state should be after a sequence of lifecycle calls, by AWS's rules.
#[derive(Clone, Copy, Debug)]
enum LifecycleCall {
    Enable,
    Disable,
    ScheduleDeletion,
    CancelDeletion,
    RotateOnDemand,
    EncryptAndDecryptAll,
}

fn lifecycle_call() -> impl proptest::strategy::Strategy<Value = LifecycleCall> {
    proptest::prop_oneof![
        proptest::strategy::Just(LifecycleCall::Enable),
        proptest::strategy::Just(LifecycleCall::Disable),
        proptest::strategy::Just(LifecycleCall::ScheduleDeletion),
        proptest::strategy::Just(LifecycleCall::CancelDeletion),
        proptest::strategy::Just(LifecycleCall::RotateOnDemand),
        proptest::strategy::Just(LifecycleCall::EncryptAndDecryptAll),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 24, ..Default::default() })]

    /// Any sequence of lifecycle calls leaves the key in the state the model predicts, refuses
    /// exactly the calls AWS refuses, and never loses a ciphertext: whenever the key is Enabled,
    /// everything ever encrypted under it still decrypts.
    #[test]
    fn key_state_machine_matches_the_model(calls in proptest::collection::vec(lifecycle_call(), 1..14)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let f = fixture();
            let key = symmetric_key(&f).await;
            let none = BTreeMap::new();
            let mut model = KeyState::Enabled;
            let mut rotations = 0;
            let mut blobs: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
            for call in calls {
                let outcome = match call {
                    LifecycleCall::Enable => f.kms.enable_key(&f.admin, &key).await,
                    LifecycleCall::Disable => f.kms.disable_key(&f.admin, &key).await,
                    LifecycleCall::ScheduleDeletion => f.kms.schedule_key_deletion(&f.admin, &key, Some(7)).await.map(|_| ()),
                    LifecycleCall::CancelDeletion => f.kms.cancel_key_deletion(&f.admin, &key).await.map(|_| ()),
                    LifecycleCall::RotateOnDemand => f.kms.rotate_key_on_demand(&f.admin, &key).await.map(|_| ()),
                    LifecycleCall::EncryptAndDecryptAll => {
                        let plaintext = format!("value {}", blobs.len()).into_bytes();
                        match f.kms.encrypt(&f.admin, &key, &plaintext, &none, None).await {
                            Ok((blob, _, _)) => {
                                blobs.push((blob, plaintext));
                                for (blob, plaintext) in &blobs {
                                    let (plain, _, _) = f.kms.decrypt(&f.admin, blob, &none, None, None).await.unwrap();
                                    assert_eq!(plain.expose(), plaintext.as_slice());
                                }
                                Ok(())
                            }
                            Err(err) => Err(err),
                        }
                    }
                };
                let expected_ok = match (call, model) {
                    (LifecycleCall::Enable | LifecycleCall::Disable, KeyState::PendingDeletion) => false,
                    (LifecycleCall::Enable, _) => { model = KeyState::Enabled; true }
                    (LifecycleCall::Disable, _) => { model = KeyState::Disabled; true }
                    (LifecycleCall::ScheduleDeletion, KeyState::PendingDeletion) => false,
                    (LifecycleCall::ScheduleDeletion, _) => { model = KeyState::PendingDeletion; true }
                    (LifecycleCall::CancelDeletion, KeyState::PendingDeletion) => { model = KeyState::Disabled; true }
                    (LifecycleCall::CancelDeletion, _) => false,
                    (LifecycleCall::RotateOnDemand, KeyState::Enabled) if rotations < 10 => { rotations += 1; true }
                    (LifecycleCall::RotateOnDemand, _) => false,
                    (LifecycleCall::EncryptAndDecryptAll, state) => state == KeyState::Enabled,
                };
                assert_eq!(outcome.is_ok(), expected_ok, "{call:?} in {model:?}: {outcome:?}");
                let described = f.kms.describe_key(&f.admin, &key).await.unwrap();
                assert_eq!(described.key_state, model);
            }
        });
    }
}
