//! The Secrets Manager engine on the embedded store, with a clock the tests move.

use super::*;
use crate::crypto::RootKeyring;
use crate::engine::kms::CreateKeyRequest;
use crate::engine::paging::Page;
use crate::store::EmbeddedStore;
use crate::test_support::engine::{ManualClock, NameAuthority, caller};

struct Fixture {
    _dir: tempfile::TempDir,
    secrets: Secrets,
    kms: Arc<Kms>,
    clock: Arc<ManualClock>,
    admin: Caller,
    user: Caller,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
    let clock = Arc::new(ManualClock::at(1_800_000_000));
    let kms = Arc::new(Kms::new(
        store.clone(),
        Arc::new(RootKeyring::generate()),
        Arc::new(NameAuthority),
        clock.clone(),
        "us-east-1",
    ));
    let secrets = Secrets::new(store, kms.clone(), Arc::new(NameAuthority), clock.clone());
    Fixture {
        _dir: dir,
        secrets,
        kms,
        clock,
        admin: caller("admin"),
        user: caller("app"),
    }
}

fn text(value: &str) -> SecretValue {
    SecretValue {
        bytes: SecretBytes::from_slice(value.as_bytes()),
        binary: false,
    }
}

async fn create(f: &Fixture, name: &str, value: &str) -> WriteOutcome {
    f.secrets
        .create_secret(
            &f.admin,
            NewSecret {
                name: name.into(),
                value: Some(text(value)),
                ..NewSecret::default()
            },
        )
        .await
        .unwrap()
}

async fn current(f: &Fixture, id: &str) -> String {
    let value = f
        .secrets
        .get_secret_value(&f.admin, id, None, None)
        .await
        .unwrap();
    String::from_utf8(value.value.bytes.expose().to_vec()).unwrap()
}

#[tokio::test]
async fn values_round_trip_under_the_managed_key_by_name_and_arns() {
    let f = fixture();
    let created = create(&f, "app/db", "s3cret").await;
    let suffix = created.arn.rsplit_once('-').unwrap().1;
    assert_eq!(suffix.len(), 6);
    assert!(created.arn.contains(":secret:app/db-"));
    assert_eq!(current(&f, "app/db").await, "s3cret");
    assert_eq!(current(&f, &created.arn).await, "s3cret");
    let partial = created.arn.trim_end_matches(suffix).trim_end_matches('-');
    assert_eq!(current(&f, partial).await, "s3cret");
    // The managed key exists now, under its alias.
    let key = f
        .kms
        .describe_key(&f.admin, "alias/aws/secretsmanager")
        .await
        .unwrap();
    let versions = f
        .secrets
        .list_secret_version_ids(&f.admin, "app/db", false, None, None)
        .await
        .unwrap()
        .1;
    assert_eq!(versions.items[0].kms_key_arn, key.arn);
}

#[tokio::test]
async fn put_moves_current_and_previous_and_tokens_are_idempotent() {
    let f = fixture();
    create(&f, "s", "one").await;
    let token = "0123456789abcdef0123456789abcdef".to_owned();
    let put = f
        .secrets
        .put_secret_value(&f.admin, "s", Some(token.clone()), text("two"), Vec::new())
        .await
        .unwrap();
    assert_eq!(put.version_id.as_deref(), Some(token.as_str()));
    assert_eq!(put.stages, [CURRENT]);
    // The same token and value: nothing new.
    let again = f
        .secrets
        .put_secret_value(&f.admin, "s", Some(token.clone()), text("two"), Vec::new())
        .await
        .unwrap();
    assert_eq!(again.version_id, put.version_id);
    let described = f.secrets.describe_secret(&f.admin, "s").await.unwrap();
    assert_eq!(described.versions_to_stages.len(), 2);
    // The same token with another value is refused.
    let err = f
        .secrets
        .put_secret_value(&f.admin, "s", Some(token), text("three"), Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(err, SecretsError::Exists(_)), "{err:?}");
    assert_eq!(current(&f, "s").await, "two");
    let previous = f
        .secrets
        .get_secret_value(&f.admin, "s", None, Some(PREVIOUS))
        .await
        .unwrap();
    assert_eq!(previous.value.bytes.expose(), b"one");
}

#[tokio::test]
async fn a_value_copied_onto_another_secret_does_not_open() {
    let f = fixture();
    create(&f, "a", "for a").await;
    create(&f, "b", "for b").await;
    let store = &f.secrets.store;
    let a = typed::get::<SecretRecord, _>(store.as_ref(), "default", "a")
        .await
        .unwrap()
        .unwrap();
    let b = typed::get::<SecretRecord, _>(store.as_ref(), "default", "b")
        .await
        .unwrap()
        .unwrap();
    let (a_version, _) = a.meta.versions.iter().next().unwrap();
    let (b_version, _) = b.meta.versions.iter().next().unwrap();
    let mut forged = b.sealed.clone();
    forged.insert(
        SecretRecord::value_slot(b_version),
        a.sealed[&SecretRecord::value_slot(a_version)].clone(),
    );
    store
        .update(
            &typed::key::<SecretRecord>("default", "b"),
            &b.revision,
            typed::value(&b.meta, forged).unwrap(),
        )
        .await
        .unwrap();
    let err = f
        .secrets
        .get_secret_value(&f.admin, "b", None, None)
        .await
        .unwrap_err();
    assert!(matches!(err, SecretsError::DecryptionFailure(_)), "{err:?}");
}

#[tokio::test]
async fn deletion_waits_for_its_window_and_restore_brings_the_secret_back() {
    let f = fixture();
    create(&f, "s", "kept").await;
    for days in [6, 31] {
        assert!(matches!(
            f.secrets
                .delete_secret(&f.admin, "s", Some(days), false)
                .await,
            Err(SecretsError::InvalidParameter(_))
        ));
    }
    let (_, purge_at) = f
        .secrets
        .delete_secret(&f.admin, "s", Some(7), false)
        .await
        .unwrap();
    assert_eq!(purge_at, f.clock.now() + 7 * 86_400);
    let refused = f
        .secrets
        .get_secret_value(&f.admin, "s", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, SecretsError::InvalidRequest(_)),
        "{refused:?}"
    );
    let listed = f
        .secrets
        .list_secrets(&f.admin, ListSecretsRequest::default())
        .await
        .unwrap();
    assert!(listed.items.is_empty());
    let planned = f
        .secrets
        .list_secrets(
            &f.admin,
            ListSecretsRequest {
                include_planned_deletion: true,
                ..ListSecretsRequest::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(planned.items.len(), 1);
    assert!(planned.items[0].deleted.is_some());
    f.secrets.restore_secret(&f.admin, "s").await.unwrap();
    assert_eq!(current(&f, "s").await, "kept");
    // Deleted again, the window runs out, and the purge removes it.
    let (_, purge_at) = f
        .secrets
        .delete_secret(&f.admin, "s", Some(7), false)
        .await
        .unwrap();
    assert_eq!(f.secrets.purge_due().await.unwrap(), Some(purge_at));
    f.clock.set(purge_at - 1);
    f.secrets.purge_due().await.unwrap();
    assert!(
        f.secrets.describe_secret(&f.admin, "s").await.is_ok(),
        "not before the window ends"
    );
    f.clock.set(purge_at);
    assert_eq!(f.secrets.purge_due().await.unwrap(), None);
    assert!(matches!(
        f.secrets.describe_secret(&f.admin, "s").await,
        Err(SecretsError::NotFound(_))
    ));
    create(&f, "s", "kept").await;
    // Forced deletion is at once, and the name is free again.
    f.secrets
        .delete_secret(&f.admin, "s", None, true)
        .await
        .unwrap();
    assert!(matches!(
        f.secrets.describe_secret(&f.admin, "s").await,
        Err(SecretsError::NotFound(_))
    ));
    create(&f, "s", "again").await;
}

#[tokio::test]
async fn resource_policies_grant_other_principals_and_a_deny_wins() {
    let f = fixture();
    let created = create(&f, "shared", "v").await;
    assert!(matches!(
        f.secrets
            .get_secret_value(&f.user, "shared", None, None)
            .await,
        Err(SecretsError::AccessDenied(_))
    ));
    let allow_app = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": f.user.principal.arn},
                       "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]
    })
    .to_string();
    f.secrets
        .put_resource_policy(&f.admin, &created.arn, &allow_app, true)
        .await
        .unwrap();
    assert_eq!(
        f.secrets
            .get_secret_value(&f.user, "shared", None, None)
            .await
            .unwrap()
            .value
            .bytes
            .expose(),
        b"v"
    );
    // Still nothing else for the app.
    assert!(matches!(
        f.secrets.describe_secret(&f.user, "shared").await,
        Err(SecretsError::AccessDenied(_))
    ));
    let deny_admin = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Deny", "Principal": {"AWS": f.admin.principal.arn},
                       "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]
    })
    .to_string();
    f.secrets
        .put_resource_policy(&f.admin, "shared", &deny_admin, true)
        .await
        .unwrap();
    assert!(matches!(
        f.secrets
            .get_secret_value(&f.admin, "shared", None, None)
            .await,
        Err(SecretsError::AccessDenied(_))
    ));
    let public = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": "*",
                       "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]
    })
    .to_string();
    assert!(matches!(
        f.secrets
            .put_resource_policy(&f.admin, "shared", &public, true)
            .await,
        Err(SecretsError::PublicPolicy(_))
    ));
}

#[tokio::test]
async fn a_customer_key_is_used_and_its_policy_applies() {
    let f = fixture();
    let key = f
        .kms
        .create_key(&f.admin, CreateKeyRequest::default())
        .await
        .unwrap();
    let created = f
        .secrets
        .create_secret(
            &f.admin,
            NewSecret {
                name: "under-cmk".into(),
                kms_key_id: Some(key.key_id.clone()),
                value: Some(text("x")),
                ..NewSecret::default()
            },
        )
        .await
        .unwrap();
    let versions = f
        .secrets
        .list_secret_version_ids(&f.admin, &created.arn, true, None, None)
        .await
        .unwrap()
        .1;
    assert_eq!(versions.items[0].kms_key_arn, key.arn);
    f.kms.disable_key(&f.admin, &key.key_id).await.unwrap();
    assert!(matches!(
        f.secrets
            .get_secret_value(&f.admin, "under-cmk", None, None)
            .await,
        Err(SecretsError::DecryptionFailure(_))
    ));
    assert!(matches!(
        f.secrets
            .put_secret_value(&f.admin, "under-cmk", None, text("y"), Vec::new())
            .await,
        Err(SecretsError::EncryptionFailure(_))
    ));
}

#[tokio::test]
async fn list_filters_and_batch_reads() {
    let f = fixture();
    for name in ["team/a", "team/b", "other"] {
        create(&f, name, name).await;
        f.clock.advance(1);
    }
    f.secrets
        .tag_resource(&f.admin, "other", vec![("env".into(), "prod".into())])
        .await
        .unwrap();
    let names = |page: Page<SecretDescription>| -> Vec<String> {
        page.items.into_iter().map(|entry| entry.name).collect()
    };
    let filtered = |key: &str, value: &str| ListSecretsRequest {
        filters: vec![ListFilter {
            key: key.into(),
            values: vec![value.into()],
        }],
        sort_order: Some("asc".into()),
        ..ListSecretsRequest::default()
    };
    let list = |request| f.secrets.list_secrets(&f.admin, request);
    assert_eq!(
        names(list(filtered("name", "team/")).await.unwrap()),
        ["team/a", "team/b"]
    );
    assert_eq!(
        names(list(filtered("name", "!team/")).await.unwrap()),
        ["other"]
    );
    assert_eq!(
        names(list(filtered("tag-value", "prod")).await.unwrap()),
        ["other"]
    );
    assert_eq!(
        names(list(filtered("all", "env")).await.unwrap()),
        ["other"]
    );
    // Newest first by default, a page at a time.
    let first = list(ListSecretsRequest {
        max_results: Some(2),
        ..ListSecretsRequest::default()
    })
    .await
    .unwrap();
    let token = first.next_token.clone();
    assert_eq!(names(first), ["other", "team/b"]);
    let second = list(ListSecretsRequest {
        max_results: Some(2),
        next_token: token,
        ..ListSecretsRequest::default()
    })
    .await
    .unwrap();
    assert_eq!(names(second), ["team/a"]);

    let batch = f
        .secrets
        .batch_get_secret_value(
            &f.admin,
            vec!["team/a".into(), "missing".into()],
            Vec::new(),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(batch.values.len(), 1);
    assert_eq!(batch.values[0].value.bytes.expose(), b"team/a");
    assert_eq!(batch.errors.len(), 1);
    assert_eq!(batch.errors[0].error_code, "ResourceNotFoundException");
}

#[tokio::test]
async fn stage_moves_are_checked_as_aws_checks_them() {
    let f = fixture();
    let first = create(&f, "s", "one").await;
    let pending = f
        .secrets
        .put_secret_value(&f.admin, "s", None, text("two"), vec![PENDING.into()])
        .await
        .unwrap();
    assert_eq!(current(&f, "s").await, "one");
    let pending_id = pending.version_id.unwrap();
    assert!(matches!(
        f.secrets
            .update_secret_version_stage(&f.admin, "s", CURRENT, Some(&pending_id), None)
            .await,
        Err(SecretsError::InvalidParameter(_))
    ));
    f.secrets
        .update_secret_version_stage(
            &f.admin,
            "s",
            CURRENT,
            Some(&pending_id),
            first.version_id.as_deref(),
        )
        .await
        .unwrap();
    assert_eq!(current(&f, "s").await, "two");
    let described = f.secrets.describe_secret(&f.admin, "s").await.unwrap();
    assert_eq!(
        described.versions_to_stages[first.version_id.as_deref().unwrap()],
        [PREVIOUS]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_of_one_secret_all_succeed() {
    let f = fixture();
    create(&f, "busy", "v0").await;
    let Fixture {
        secrets,
        admin,
        _dir,
        ..
    } = f;
    let secrets = Arc::new(secrets);
    let puts: Vec<_> = (1..=48)
        .map(|i| {
            let (secrets, admin) = (secrets.clone(), admin.clone());
            tokio::spawn(async move {
                secrets
                    .put_secret_value(&admin, "busy", None, text(&format!("v{i}")), Vec::new())
                    .await
            })
        })
        .collect();
    for put in puts {
        put.await.unwrap().unwrap();
    }
    let versions = secrets
        .list_secret_version_ids(&admin, "busy", true, None, None)
        .await
        .unwrap()
        .1;
    assert_eq!(versions.items.len(), 49, "no write was lost");
    let described = secrets.describe_secret(&admin, "busy").await.unwrap();
    assert_eq!(described.versions_to_stages.len(), 2);
}

#[test]
fn running_out_of_conflict_retries_is_throttling_not_a_fault() {
    use crate::engine::ServiceError as _;
    let err = SecretsError::from(crate::store::StoreError::TooManyConflicts("x".into(), 16));
    assert_eq!(err.aws_code(), "ThrottlingException");
    assert!(!err.is_fault());
}

#[tokio::test]
async fn secret_ids_with_control_characters_are_invalid_parameters() {
    let f = fixture();
    create(&f, "a", "v").await;
    for id in [
        "\0",
        "a\0",
        "a\n",
        "arn:aws:secretsmanager:us-east-1:000000000000:secret:a\0",
    ] {
        for err in [
            f.secrets
                .get_secret_value(&f.admin, id, None, None)
                .await
                .unwrap_err(),
            f.secrets.describe_secret(&f.admin, id).await.unwrap_err(),
        ] {
            assert!(
                matches!(err, SecretsError::InvalidParameter(_)),
                "{id:?}: {err:?}"
            );
        }
    }
    // The store's own refusal is an invalid parameter too, never a fault.
    let err = SecretsError::from(crate::store::StoreError::InvalidKey);
    assert!(matches!(err, SecretsError::InvalidParameter(_)));
}

/// Random sequences of Put, UpdateSecretVersionStage, Delete and Restore through the engine and
/// its store, against a model of which value each version holds: never zero or two AWSCURRENT
/// versions, never a staged version lost, and every read answers what the model says.
mod against_a_model {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Put {
            stages: Vec<&'static str>,
        },
        Move {
            stage: &'static str,
            to: usize,
            from: Option<usize>,
        },
        Delete,
        Restore,
    }

    fn op() -> impl Strategy<Value = Op> {
        let stage = prop::sample::select(vec![CURRENT, PREVIOUS, PENDING, "blue"]);
        prop_oneof![
            4 => prop::collection::vec(stage.clone(), 0..3).prop_map(|stages| Op::Put { stages }),
            3 => (stage, any::<usize>(), prop::option::of(any::<usize>()))
                .prop_map(|(stage, to, from)| Op::Move { stage, to, from }),
            1 => Just(Op::Delete),
            1 => Just(Op::Restore),
        ]
    }

    async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
        let f = fixture();
        let first = create(&f, "s", "value-0").await;
        // Version id to the value it holds, as the model knows it.
        let mut model: BTreeMap<String, String> =
            BTreeMap::from([(first.version_id.clone().unwrap(), "value-0".to_owned())]);
        let mut deleted = false;
        for (n, op) in ops.into_iter().enumerate() {
            let before = f
                .secrets
                .declared_record(&f.admin.namespace, "s")
                .await
                .unwrap()
                .unwrap();
            let staged_before: Vec<String> = before
                .versions
                .iter()
                .filter(|(_, version)| !version.stages.is_empty())
                .map(|(id, _)| id.clone())
                .collect();
            let ids: Vec<String> = before.versions.keys().cloned().collect();
            let outcome = match &op {
                Op::Put { stages } => {
                    let value = format!("value-{}", n + 1);
                    let put = f
                        .secrets
                        .put_secret_value(
                            &f.admin,
                            "s",
                            None,
                            text(&value),
                            stages.iter().map(|stage| (*stage).to_owned()).collect(),
                        )
                        .await;
                    if let Ok(put) = &put {
                        model.insert(put.version_id.clone().unwrap(), value);
                    }
                    put.map(|_| ())
                }
                Op::Move { stage, to, from } => {
                    let to = &ids[to % ids.len()];
                    let from = from.map(|from| ids[from % ids.len()].clone());
                    f.secrets
                        .update_secret_version_stage(
                            &f.admin,
                            "s",
                            stage,
                            Some(to),
                            from.as_deref(),
                        )
                        .await
                        .map(|_| ())
                }
                Op::Delete => f
                    .secrets
                    .delete_secret(&f.admin, "s", Some(7), false)
                    .await
                    .map(|_| ()),
                Op::Restore => f.secrets.restore_secret(&f.admin, "s").await.map(|_| ()),
            };
            match (&op, &outcome) {
                (Op::Delete, Ok(())) => deleted = true,
                (Op::Restore, Ok(())) => deleted = false,
                // A secret planned for deletion refuses writes, and only that way.
                (Op::Put { .. } | Op::Move { .. }, Err(SecretsError::InvalidRequest(_))) => {
                    prop_assert!(deleted, "{op:?} refused on a live secret");
                }
                _ => {}
            }
            let after = f
                .secrets
                .declared_record(&f.admin.namespace, "s")
                .await
                .unwrap()
                .unwrap();
            let holders = |stage: &str| {
                after
                    .versions
                    .values()
                    .filter(|version| version.stages.contains(stage))
                    .count()
            };
            prop_assert_eq!(holders(CURRENT), 1, "after {:?}", op);
            for stage in [PREVIOUS, PENDING, "blue"] {
                prop_assert!(
                    holders(stage) <= 1,
                    "{} on two versions after {:?}",
                    stage,
                    op
                );
            }
            for id in &staged_before {
                prop_assert!(
                    after.versions.contains_key(id),
                    "staged version {} lost by {:?}",
                    id,
                    op
                );
            }
            prop_assert_eq!(after.deleted.is_some(), deleted);
            let read = f.secrets.get_secret_value(&f.admin, "s", None, None).await;
            if deleted {
                prop_assert!(matches!(read, Err(SecretsError::InvalidRequest(_))));
            } else {
                let read = read.unwrap();
                let expected = &model[&read.version_id];
                prop_assert_eq!(read.value.bytes.expose(), expected.as_bytes());
                prop_assert_eq!(Some(read.version_id.as_str()), after.version_with(CURRENT));
                // Every staged version still opens to the value it was given.
                for (id, version) in &after.versions {
                    if version.stages.is_empty() {
                        continue;
                    }
                    let value = f
                        .secrets
                        .get_secret_value(&f.admin, "s", Some(id), None)
                        .await
                        .unwrap();
                    prop_assert_eq!(value.value.bytes.expose(), model[id].as_bytes());
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]
        #[test]
        fn stages_and_values_survive_any_sequence(ops in prop::collection::vec(op(), 1..25)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(run(ops))?;
        }
    }
}
