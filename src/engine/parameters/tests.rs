//! The Parameter Store engine on the embedded store, with a clock the tests move.

use async_trait::async_trait;

use super::*;
use crate::crypto::{RootKeyring, SecretBytes};
use crate::engine::kms::CreateKeyRequest;
use crate::engine::paging::Page;
use crate::store::typed;
use crate::store::{EmbeddedStore, RecordKey, RecordKind, RecordValue};
use crate::test_support::engine::{ManualClock, caller};

/// Admins may do anything; `app` may do anything in SSM under `/app/`; `reader` anything in
/// SSM but nothing in KMS.
struct Authority;

#[async_trait]
impl AccountAuthority for Authority {
    async fn allows(&self, caller: &Caller, action: &str, resource: &str) -> bool {
        let user = caller.principal.arn.rsplit('/').next().unwrap_or_default();
        match user {
            admin if admin.starts_with("admin") => true,
            "app" => action.starts_with("ssm:") && resource.contains(":parameter/app/"),
            "reader" => action.starts_with("ssm:"),
            _ => false,
        }
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Arc<EmbeddedStore>,
    keyring: Arc<RootKeyring>,
    parameters: Parameters,
    kms: Arc<Kms>,
    clock: Arc<ManualClock>,
    admin: Caller,
}

const START: i64 = 1_800_000_000;

fn engines(
    store: &Arc<EmbeddedStore>,
    keyring: &Arc<RootKeyring>,
    clock: &Arc<ManualClock>,
) -> (Parameters, Arc<Kms>) {
    let kms = Arc::new(Kms::new(
        store.clone(),
        keyring.clone(),
        Arc::new(Authority),
        clock.clone(),
        "us-east-1",
    ));
    let parameters = Parameters::new(
        store.clone(),
        kms.clone(),
        Arc::new(Authority),
        clock.clone(),
    );
    (parameters, kms)
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("db")).unwrap());
    let keyring = Arc::new(RootKeyring::generate());
    let clock = Arc::new(ManualClock::at(START));
    let (parameters, kms) = engines(&store, &keyring, &clock);
    Fixture {
        dir,
        store,
        keyring,
        parameters,
        kms,
        clock,
        admin: caller("admin"),
    }
}

fn request(name: &str, value: &str, type_: &str) -> PutParameterRequest {
    PutParameterRequest {
        name: name.into(),
        value: SecretBytes::from_slice(value.as_bytes()),
        type_: Some(type_.into()),
        ..PutParameterRequest::default()
    }
}

impl Fixture {
    async fn put(&self, name: &str, value: &str) -> PutOutcome {
        self.parameters
            .put_parameter(
                &self.admin,
                PutParameterRequest {
                    overwrite: true,
                    ..request(name, value, "String")
                },
            )
            .await
            .unwrap()
    }

    async fn try_put(&self, request: PutParameterRequest) -> Result<PutOutcome, ParametersError> {
        self.parameters.put_parameter(&self.admin, request).await
    }

    async fn get(&self, name: &str) -> String {
        let value = self
            .parameters
            .get_parameter(&self.admin, name, true)
            .await
            .unwrap();
        String::from_utf8(value.value.expose().to_vec()).unwrap()
    }

    async fn record(&self, name: &str) -> Option<ParameterRecord> {
        typed::get::<ParameterRecord, _>(self.store.as_ref(), "default", name)
            .await
            .unwrap()
            .map(|found| found.meta)
    }
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn filter(key: &str, option: Option<&str>, values: &[&str]) -> StringFilter {
    StringFilter {
        key: key.into(),
        option: option.map(str::to_owned),
        values: strings(values),
    }
}

macro_rules! assert_err {
    ($result:expr, $pattern:pat) => {
        match $result {
            Err($pattern) => {}
            other => panic!("expected {}, got {other:?}", stringify!($pattern)),
        }
    };
}

#[test]
fn limits_agree_with_the_parameter_resource() {
    use crate::resources::parameter as resource;
    assert_eq!(MAX_NAME_LEN, resource::MAX_PARAMETER_NAME_LENGTH);
    assert_eq!(MAX_LEVELS, resource::MAX_PARAMETER_LEVELS);
    assert_eq!(MAX_STANDARD_VALUE_LEN, resource::MAX_STANDARD_VALUE_LENGTH);
    assert_eq!(MAX_ADVANCED_VALUE_LEN, resource::MAX_ADVANCED_VALUE_LENGTH);
    let pattern = regex::Regex::new(resource::PARAMETER_NAME_PATTERN).unwrap();
    for name in [
        "/a/b",
        "a",
        "/a",
        "/a.b-c_d/e",
        "a/b",
        "/a//b",
        "/a/",
        "a b",
        "/",
    ] {
        assert_eq!(
            pattern.is_match(name),
            validate_name(name).is_ok(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn values_round_trip_by_name_arn_version_and_label() {
    let f = fixture();
    let first = f.put("/app/db/url", "one").await;
    assert_eq!((first.version, first.tier), (1, Tier::Standard));
    assert_eq!(
        first.arn,
        format!(
            "arn:aws:ssm:us-east-1:{}:parameter/app/db/url",
            crate::engine::account::account_id("default")
        )
    );
    assert_eq!(f.put("/app/db/url", "two").await.version, 2);
    assert_eq!(f.get("/app/db/url").await, "two");
    assert_eq!(f.get(&first.arn).await, "two");
    assert_eq!(f.get("/app/db/url:1").await, "one");
    assert_eq!(f.get(&format!("{}:1", first.arn)).await, "one");
    f.parameters
        .label_parameter_version(&f.admin, "/app/db/url", Some(1), &strings(&["stable"]))
        .await
        .unwrap();
    let labelled = f
        .parameters
        .get_parameter(&f.admin, "/app/db/url:stable", false)
        .await
        .unwrap();
    assert_eq!(labelled.value.expose(), b"one");
    assert_eq!(labelled.selector.as_deref(), Some(":stable"));
    assert_eq!(labelled.version, 1);
    assert_eq!(labelled.name, "/app/db/url");
    assert_err!(
        f.parameters
            .get_parameter(&f.admin, "/app/db/url:7", false)
            .await,
        ParametersError::VersionNotFound(_)
    );
    assert_err!(
        f.parameters
            .get_parameter(&f.admin, "/app/db/url:nolabel", false)
            .await,
        ParametersError::VersionNotFound(_)
    );
    assert_err!(
        f.parameters
            .get_parameter(&f.admin, "/app/none", false)
            .await,
        ParametersError::NotFound(_)
    );
    // A plain name's ARN, and a one-level path reached through its ARN.
    let plain = f.put("plain", "p").await;
    assert!(plain.arn.ends_with(":parameter/plain"), "{}", plain.arn);
    let rooted = f.put("/rooted", "r").await;
    assert!(rooted.arn.ends_with(":parameter/rooted"), "{}", rooted.arn);
    assert_eq!(f.get(&rooted.arn).await, "r");
    // Another account's ARN is not found.
    let foreign = "arn:aws:ssm:us-east-1:999999999999:parameter/app/db/url";
    assert_err!(
        f.parameters.get_parameter(&f.admin, foreign, false).await,
        ParametersError::NotFound(_)
    );
}

#[tokio::test]
async fn names_are_checked_as_aws_checks_them() {
    let f = fixture();
    for bad in [
        "aws",
        "/aws/x",
        "AWSsecret",
        "ssm",
        "/SSM/a",
        "a/b",
        "/a//b",
        "/a/",
        "a b",
        "a$",
        "",
    ] {
        assert_err!(
            f.try_put(request(bad, "v", "String")).await,
            ParametersError::Validation(_)
        );
    }
    let deep = "/l".repeat(16);
    assert_err!(
        f.try_put(request(&deep, "v", "String")).await,
        ParametersError::HierarchyLevelLimitExceeded(_)
    );
    f.try_put(request(&"/l".repeat(15), "v", "String"))
        .await
        .unwrap();
    let long = format!("/{}", "n".repeat(MAX_NAME_LEN));
    assert_err!(
        f.try_put(request(&long, "v", "String")).await,
        ParametersError::Validation(_)
    );
    f.try_put(request(&long[..MAX_NAME_LEN], "v", "String"))
        .await
        .unwrap();
    // Reading a reserved name is refused the same way, before anything is looked up.
    assert_err!(
        f.parameters
            .get_parameter(&f.admin, "/aws/service/x", false)
            .await,
        ParametersError::Validation(_)
    );
}

#[tokio::test]
async fn puts_are_checked_as_aws_checks_them() {
    let f = fixture();
    f.try_put(request("/p", "v", "String")).await.unwrap();
    assert_err!(
        f.try_put(request("/p", "v2", "String")).await,
        ParametersError::AlreadyExists
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            overwrite: true,
            tags: vec![("a".into(), "b".into())],
            ..request("/p", "v", "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            type_: None,
            ..request("/new", "v", "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    // Overwriting takes the type it had.
    let outcome = f
        .try_put(PutParameterRequest {
            type_: None,
            overwrite: true,
            ..request("/p", "v2", "String")
        })
        .await
        .unwrap();
    assert_eq!(outcome.version, 2);
    assert_err!(
        f.try_put(request("/q", "v", "Blob")).await,
        ParametersError::UnsupportedParameterType(_)
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            key_id: Some("alias/k".into()),
            ..request("/q", "v", "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    assert_err!(
        f.try_put(request("/q", "", "String")).await,
        ParametersError::Validation(_)
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            data_type: Some("aws:ssm:integration".into()),
            ..request("/q", "v", "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            data_type: Some("aws:ec2:image".into()),
            ..request("/q", "not-an-ami", "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    f.try_put(PutParameterRequest {
        data_type: Some("aws:ec2:image".into()),
        ..request("/ami", "ami-0123456789abcdef0", "String")
    })
    .await
    .unwrap();
    f.try_put(request("/list", "a,b,c", "StringList"))
        .await
        .unwrap();
    let list = f
        .parameters
        .get_parameter(&f.admin, "/list", false)
        .await
        .unwrap();
    assert_eq!(
        (list.type_, list.value.expose()),
        (ParameterType::StringList, &b"a,b,c"[..])
    );
}

#[tokio::test]
async fn allowed_patterns_hold_for_every_version_and_never_quote_the_value() {
    let f = fixture();
    assert_err!(
        f.try_put(PutParameterRequest {
            allowed_pattern: Some("(unclosed".into()),
            ..request("/n", "1", "String")
        })
        .await,
        ParametersError::InvalidAllowedPattern(_)
    );
    // A pattern whose automaton would be huge is refused, not compiled.
    assert_err!(
        f.try_put(PutParameterRequest {
            allowed_pattern: Some("\\w{1000}{1000}".into()),
            ..request("/n", "1", "String")
        })
        .await,
        ParametersError::InvalidAllowedPattern(_)
    );
    f.try_put(PutParameterRequest {
        allowed_pattern: Some(r"^\d+$".into()),
        ..request("/n", "42", "SecureString")
    })
    .await
    .unwrap();
    let Err(ParametersError::PatternMismatch(message)) = f
        .try_put(PutParameterRequest {
            overwrite: true,
            ..request("/n", "s3cretWORD", "SecureString")
        })
        .await
    else {
        panic!("the pattern must still apply")
    };
    assert!(!message.contains("s3cretWORD"), "{message}");
    assert!(message.contains(r"^\d+$"), "{message}");
}

#[tokio::test]
async fn tiers_go_up_on_request_and_never_down() {
    let f = fixture();
    let big = "x".repeat(MAX_STANDARD_VALUE_LEN + 1);
    assert_err!(
        f.try_put(request("/big", &big, "String")).await,
        ParametersError::Validation(_)
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            tier: Some("Advanced".into()),
            ..request("/big", &"x".repeat(MAX_ADVANCED_VALUE_LEN + 1), "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    let intelligent = f
        .try_put(PutParameterRequest {
            tier: Some("Intelligent-Tiering".into()),
            ..request("/big", &big, "String")
        })
        .await
        .unwrap();
    assert_eq!(intelligent.tier, Tier::Advanced);
    let small = f
        .try_put(PutParameterRequest {
            tier: Some("Intelligent-Tiering".into()),
            ..request("/small", "x", "String")
        })
        .await
        .unwrap();
    assert_eq!(small.tier, Tier::Standard);
    // Upgrade on request; no tier keeps Advanced; asking for Standard again is refused.
    let upgraded = f
        .try_put(PutParameterRequest {
            tier: Some("Advanced".into()),
            overwrite: true,
            ..request("/small", "y", "String")
        })
        .await
        .unwrap();
    assert_eq!(upgraded.tier, Tier::Advanced);
    let kept = f
        .try_put(PutParameterRequest {
            overwrite: true,
            ..request("/small", "z", "String")
        })
        .await
        .unwrap();
    assert_eq!(kept.tier, Tier::Advanced);
    assert_err!(
        f.try_put(PutParameterRequest {
            tier: Some("Standard".into()),
            overwrite: true,
            ..request("/small", "z", "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            tier: Some("Premium".into()),
            ..request("/t", "z", "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    // Policies need Advanced; Intelligent-Tiering picks it for them.
    let policies = r#"[{"Type":"NoChangeNotification","Version":"1.0","Attributes":{"After":"1","Unit":"Days"}}]"#;
    assert_err!(
        f.try_put(PutParameterRequest {
            policies: Some(policies.into()),
            ..request("/pol", "v", "String")
        })
        .await,
        ParametersError::Validation(_)
    );
    let with_policies = f
        .try_put(PutParameterRequest {
            policies: Some(policies.into()),
            tier: Some("Intelligent-Tiering".into()),
            ..request("/pol", "v", "String")
        })
        .await
        .unwrap();
    assert_eq!(with_policies.tier, Tier::Advanced);
}

#[tokio::test]
async fn an_account_holds_at_most_ten_thousand_standard_parameters() {
    let f = fixture();
    // Filled through the store directly, in one transaction: the engine counts what is stored.
    let filler: Vec<(RecordKey, RecordValue)> = (0..MAX_STANDARD_PARAMETERS - 1)
        .map(|n| {
            let name = format!("/fill/p{n:05}");
            let mut record = model::tests::record();
            record.name.clone_from(&name);
            record.push_version(model::tests::version(START)).unwrap();
            (
                typed::key::<ParameterRecord>("default", &name),
                typed::value(&record, BTreeMap::new()).unwrap(),
            )
        })
        .collect();
    f.store.create_many(filler).await.unwrap();
    // Advanced parameters do not count.
    f.try_put(PutParameterRequest {
        tier: Some("Advanced".into()),
        ..request("/adv/a", "v", "String")
    })
    .await
    .unwrap();
    assert_eq!(
        f.parameters.standard_count("default").await.unwrap(),
        MAX_STANDARD_PARAMETERS - 1
    );
    f.try_put(request("/last", "v", "String")).await.unwrap();
    assert_err!(
        f.try_put(request("/one-too-many", "v", "String")).await,
        ParametersError::LimitExceeded
    );
    // Intelligent-Tiering goes Advanced instead; existing Standard parameters still take
    // new versions; another account is not affected.
    let intelligent = f
        .try_put(PutParameterRequest {
            tier: Some("Intelligent-Tiering".into()),
            ..request("/one-too-many", "v", "String")
        })
        .await
        .unwrap();
    assert_eq!(intelligent.tier, Tier::Advanced);
    assert_eq!(f.put("/last", "v2").await.tier, Tier::Standard);
    let mut other = caller("admin");
    other.namespace = "other".into();
    f.parameters
        .put_parameter(&other, request("/elsewhere", "v", "String"))
        .await
        .unwrap();
    // Deleting one makes room.
    f.parameters
        .delete_parameter(&f.admin, "/fill/p00000")
        .await
        .unwrap();
    f.try_put(request("/room", "v", "String")).await.unwrap();
}

#[tokio::test]
async fn the_hundredth_version_pushes_out_the_oldest_unlabelled_one() {
    let f = fixture();
    for n in 1..=100 {
        f.put("/v", &format!("value-{n}")).await;
    }
    f.parameters
        .label_parameter_version(&f.admin, "/v", Some(1), &strings(&["first"]))
        .await
        .unwrap();
    assert_eq!(f.put("/v", "value-101").await.version, 101);
    let record = f.record("/v").await.unwrap();
    assert_eq!(record.versions.len(), 100);
    assert!(record.versions.contains_key(&1), "labelled, kept");
    assert!(
        !record.versions.contains_key(&2),
        "oldest unlabelled, pruned"
    );
    let stored = typed::get::<ParameterRecord, _>(f.store.as_ref(), "default", "/v")
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.sealed.contains_key(&ParameterRecord::plain_slot(2)));
    assert_eq!(stored.sealed.len(), 100);
    assert_eq!(f.get("/v:first").await, "value-1");
    // Every kept version labelled: the next Put is refused and nothing changes.
    let numbers: Vec<u64> = record.versions.keys().copied().collect();
    for number in numbers {
        f.parameters
            .label_parameter_version(&f.admin, "/v", Some(number), &[format!("l{number}")])
            .await
            .unwrap();
    }
    assert_err!(
        f.try_put(PutParameterRequest {
            overwrite: true,
            ..request("/v", "value-102", "String")
        })
        .await,
        ParametersError::MaxVersionLimitExceeded(_)
    );
    assert_eq!(f.get("/v").await, "value-101");
}

#[tokio::test]
async fn labels_move_between_versions_and_bad_ones_are_returned() {
    let f = fixture();
    for n in 1..=3 {
        f.put("/l", &format!("v{n}")).await;
    }
    let (invalid, version) = f
        .parameters
        .label_parameter_version(
            &f.admin,
            "/l",
            Some(1),
            &strings(&["blue", "aws-x", "123", "bad/char", &"x".repeat(101)]),
        )
        .await
        .unwrap();
    assert_eq!(version, 1);
    assert_eq!(invalid.len(), 4, "{invalid:?}");
    // Without a version, the latest is labelled; the label leaves version 1.
    let (_, version) = f
        .parameters
        .label_parameter_version(&f.admin, "/l", None, &strings(&["blue"]))
        .await
        .unwrap();
    assert_eq!(version, 3);
    assert_eq!(
        f.record("/l").await.unwrap().version_with_label("blue"),
        Some(3)
    );
    let ten: Vec<String> = (0..10).map(|n| format!("t{n}")).collect();
    assert_err!(
        f.parameters
            .label_parameter_version(
                &f.admin,
                "/l",
                Some(2),
                &[ten.clone(), strings(&["x"])].concat()
            )
            .await,
        ParametersError::Validation(_)
    );
    f.parameters
        .label_parameter_version(&f.admin, "/l", Some(2), &ten)
        .await
        .unwrap();
    assert_err!(
        f.parameters
            .label_parameter_version(&f.admin, "/l", Some(2), &strings(&["eleventh"]))
            .await,
        ParametersError::VersionLabelLimitExceeded(_)
    );
    assert_err!(
        f.parameters
            .label_parameter_version(&f.admin, "/l", Some(9), &strings(&["x"]))
            .await,
        ParametersError::VersionNotFound(_)
    );
    let (removed, invalid) = f
        .parameters
        .unlabel_parameter_version(&f.admin, "/l", 2, &strings(&["t0", "blue"]))
        .await
        .unwrap();
    assert_eq!((removed, invalid), (strings(&["t0"]), strings(&["blue"])));
    assert_err!(
        f.parameters
            .unlabel_parameter_version(&f.admin, "/l", 9, &strings(&["t1"]))
            .await,
        ParametersError::VersionNotFound(_)
    );
}

#[tokio::test]
async fn get_parameters_lists_what_it_cannot_find() {
    let f = fixture();
    f.put("/a", "1").await;
    f.put("/b", "2").await;
    let outcome = f
        .parameters
        .get_parameters(
            &f.admin,
            &strings(&["/a", "/b:1", "/missing", "/a:5", "/a", "a//b"]),
            false,
        )
        .await
        .unwrap();
    let names: Vec<&str> = outcome.parameters.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["/a", "/b"]);
    assert_eq!(outcome.invalid, ["a//b", "/missing", "/a:5"]);
    let eleven: Vec<String> = (0..11).map(|n| format!("/p{n}")).collect();
    assert_err!(
        f.parameters.get_parameters(&f.admin, &eleven, false).await,
        ParametersError::Validation(_)
    );
    // A name the caller may not read fails the call.
    assert_err!(
        f.parameters
            .get_parameters(&caller("app"), &strings(&["/app/x", "/a"]), false)
            .await,
        ParametersError::AccessDenied(_)
    );
}

#[tokio::test]
async fn by_path_pages_filters_and_leaves_out_what_the_caller_may_not_read() {
    let f = fixture();
    for name in [
        "/app/a",
        "/app/b",
        "/app/sub/c",
        "/app/sub/deep/d",
        "/other/x",
        "/apple",
    ] {
        f.put(name, name).await;
    }
    f.try_put(request("/app/secret", "hidden", "SecureString"))
        .await
        .unwrap();
    let names = |page: &Page<ParameterValue>| -> Vec<String> {
        page.items.iter().map(|p| p.name.clone()).collect()
    };
    let by_path = |path: &'static str, recursive: bool, filters: Vec<StringFilter>| {
        let parameters = &f.parameters;
        let admin = f.admin.clone();
        async move {
            parameters
                .get_parameters_by_path(&admin, path, recursive, &filters, false, None, None)
                .await
        }
    };
    let page = by_path("/app", false, Vec::new()).await.unwrap();
    assert_eq!(names(&page), ["/app/a", "/app/b", "/app/secret"]);
    let page = by_path("/app/", true, Vec::new()).await.unwrap();
    assert_eq!(
        names(&page),
        [
            "/app/a",
            "/app/b",
            "/app/secret",
            "/app/sub/c",
            "/app/sub/deep/d"
        ]
    );
    let page = by_path("/app", true, vec![filter("Type", None, &["SecureString"])])
        .await
        .unwrap();
    assert_eq!(names(&page), ["/app/secret"]);
    // Without decryption, a SecureString answers its ciphertext.
    assert_ne!(page.items[0].value.expose(), b"hidden");
    let page = by_path(
        "/app",
        true,
        vec![filter("KeyId", None, &["alias/aws/ssm"])],
    )
    .await
    .unwrap();
    assert_eq!(names(&page), ["/app/secret"]);
    f.put("/app/a", "second").await;
    f.parameters
        .label_parameter_version(&f.admin, "/app/a", Some(1), &strings(&["old"]))
        .await
        .unwrap();
    let page = by_path("/app", true, vec![filter("Label", None, &["old"])])
        .await
        .unwrap();
    assert_eq!(names(&page), ["/app/a"]);
    assert_eq!(page.items[0].version, 1);
    assert_eq!(page.items[0].value.expose(), b"/app/a");
    assert_err!(
        by_path("/app", true, vec![filter("Name", None, &["/app"])]).await,
        ParametersError::InvalidFilterKey(_)
    );
    assert_err!(
        by_path("app", true, Vec::new()).await,
        ParametersError::Validation(_)
    );
    // Paging.
    let first = f
        .parameters
        .get_parameters_by_path(&f.admin, "/", true, &[], false, Some(4), None)
        .await
        .unwrap();
    assert_eq!(first.items.len(), 4);
    let second = f
        .parameters
        .get_parameters_by_path(
            &f.admin,
            "/",
            true,
            &[],
            false,
            Some(4),
            first.next_token.as_deref(),
        )
        .await
        .unwrap();
    assert_eq!(second.items.len(), 3);
    assert!(second.next_token.is_none());
    assert!(
        names(&first)
            .iter()
            .all(|name| !names(&second).contains(name))
    );
    for bad in [0, 11] {
        assert_err!(
            f.parameters
                .get_parameters_by_path(&f.admin, "/", true, &[], false, Some(bad), None)
                .await,
            ParametersError::Validation(_)
        );
    }
    assert_err!(
        f.parameters
            .get_parameters_by_path(&f.admin, "/", true, &[], false, None, Some("@@"))
            .await,
        ParametersError::InvalidNextToken
    );
    // `app` sees only what it may read, with no error for the rest.
    let page = f
        .parameters
        .get_parameters_by_path(&caller("app"), "/", true, &[], false, None, None)
        .await
        .unwrap();
    assert!(
        names(&page).iter().all(|name| name.starts_with("/app/")),
        "{:?}",
        names(&page)
    );
    assert_eq!(page.items.len(), 5);
    let page = f
        .parameters
        .get_parameters_by_path(&caller("nobody"), "/", true, &[], false, None, None)
        .await
        .unwrap();
    assert!(page.items.is_empty());
}

#[tokio::test]
async fn describe_filters_pages_and_hides_what_the_caller_may_not_describe() {
    let f = fixture();
    for name in ["/app/a", "/app/b/c", "/other/x", "plain"] {
        f.put(name, "v").await;
    }
    f.try_put(PutParameterRequest {
        tier: Some("Advanced".into()),
        tags: vec![("env".into(), "prod".into())],
        description: Some("the secret".into()),
        ..request("/app/secret", "v", "SecureString")
    })
    .await
    .unwrap();
    let describe = |filters: Vec<StringFilter>| {
        let parameters = &f.parameters;
        let admin = f.admin.clone();
        async move {
            parameters
                .describe_parameters(&admin, &[], &filters, None, None)
                .await
                .map(|page| page.items.into_iter().map(|p| p.name).collect::<Vec<_>>())
        }
    };
    assert_eq!(describe(Vec::new()).await.unwrap().len(), 5);
    assert_eq!(
        describe(vec![filter("Name", Some("BeginsWith"), &["/app"])])
            .await
            .unwrap(),
        ["/app/a", "/app/b/c", "/app/secret"]
    );
    assert_eq!(
        describe(vec![filter("Name", None, &["app/a"])])
            .await
            .unwrap(),
        ["/app/a"]
    );
    assert_eq!(
        describe(vec![filter("Name", Some("Contains"), &["ecr"])])
            .await
            .unwrap(),
        ["/app/secret"]
    );
    assert_eq!(
        describe(vec![filter("Path", None, &["/app"])])
            .await
            .unwrap(),
        ["/app/a", "/app/secret"]
    );
    assert_eq!(
        describe(vec![filter("Path", Some("Recursive"), &["/app"])])
            .await
            .unwrap(),
        ["/app/a", "/app/b/c", "/app/secret"]
    );
    assert_eq!(
        describe(vec![filter("Type", None, &["SecureString"])])
            .await
            .unwrap(),
        ["/app/secret"]
    );
    assert_eq!(
        describe(vec![filter("Tier", None, &["Advanced"])])
            .await
            .unwrap(),
        ["/app/secret"]
    );
    assert_eq!(
        describe(vec![filter("DataType", None, &["text"])])
            .await
            .unwrap()
            .len(),
        5
    );
    assert_eq!(
        describe(vec![filter("tag:env", None, &[])]).await.unwrap(),
        ["/app/secret"]
    );
    assert!(
        describe(vec![filter("tag:env", None, &["dev"])])
            .await
            .unwrap()
            .is_empty()
    );
    assert_err!(
        describe(vec![filter("Label", None, &["x"])]).await,
        ParametersError::InvalidFilterKey(_)
    );
    let legacy = f
        .parameters
        .describe_parameters(
            &f.admin,
            &[filter("Name", None, &["/other"])],
            &[],
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(legacy.items.len(), 1);
    assert_err!(
        f.parameters
            .describe_parameters(
                &f.admin,
                &[filter("Name", None, &["/other"])],
                &[filter("Type", None, &["String"])],
                None,
                None
            )
            .await,
        ParametersError::Validation(_)
    );
    let secret = f
        .parameters
        .describe_parameters(
            &f.admin,
            &[],
            &[filter("Type", None, &["SecureString"])],
            None,
            None,
        )
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(secret.key_id.as_deref(), Some("alias/aws/ssm"));
    assert_eq!(secret.description.as_deref(), Some("the secret"));
    assert_eq!(secret.modified_by, f.admin.principal.arn);
    assert_eq!(secret.modified, START);
    // Paging: 2 + 2 + 1.
    let mut token = None;
    let mut seen = Vec::new();
    loop {
        let page = f
            .parameters
            .describe_parameters(&f.admin, &[], &[], Some(2), token.as_deref())
            .await
            .unwrap();
        seen.extend(page.items.into_iter().map(|p| p.name));
        token = page.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 5);
    assert_err!(
        f.parameters
            .describe_parameters(&f.admin, &[], &[], Some(51), None)
            .await,
        ParametersError::Validation(_)
    );
    // `app` describes only its own, without an error for the rest.
    let own = f
        .parameters
        .describe_parameters(&caller("app"), &[], &[], None, None)
        .await
        .unwrap();
    let own: Vec<String> = own.items.into_iter().map(|p| p.name).collect();
    assert_eq!(own, ["/app/a", "/app/b/c", "/app/secret"]);
}

#[tokio::test]
async fn history_shows_every_version_with_its_labels_a_page_at_a_time() {
    let f = fixture();
    f.try_put(PutParameterRequest {
        description: Some("first".into()),
        ..request("/h", "one", "SecureString")
    })
    .await
    .unwrap();
    f.try_put(PutParameterRequest {
        overwrite: true,
        ..request("/h", "two", "String")
    })
    .await
    .unwrap();
    f.parameters
        .label_parameter_version(&f.admin, "/h", Some(1), &strings(&["a", "b"]))
        .await
        .unwrap();
    let (arn, page) = f
        .parameters
        .get_parameter_history(&f.admin, "/h", true, None, None)
        .await
        .unwrap();
    assert!(arn.ends_with(":parameter/h"));
    let versions: Vec<u64> = page.items.iter().map(|entry| entry.version).collect();
    assert_eq!(versions, [1, 2]);
    assert_eq!(page.items[0].labels, ["a", "b"]);
    assert_eq!(page.items[0].type_, ParameterType::SecureString);
    assert_eq!(page.items[0].value.expose(), b"one");
    assert_eq!(page.items[0].description.as_deref(), Some("first"));
    assert_eq!(page.items[1].type_, ParameterType::String);
    assert_eq!(page.items[1].key_id, None);
    let (_, first) = f
        .parameters
        .get_parameter_history(&f.admin, "/h", false, Some(1), None)
        .await
        .unwrap();
    assert_ne!(
        first.items[0].value.expose(),
        b"one",
        "ciphertext without decryption"
    );
    let (_, second) = f
        .parameters
        .get_parameter_history(&f.admin, "/h", false, Some(1), first.next_token.as_deref())
        .await
        .unwrap();
    assert_eq!(second.items[0].version, 2);
    assert!(second.next_token.is_none());
}

#[tokio::test]
async fn deletes_report_what_was_not_there() {
    let f = fixture();
    f.put("/d1", "v").await;
    f.put("/d2", "v").await;
    f.parameters
        .delete_parameter(&f.admin, "/d1")
        .await
        .unwrap();
    assert_err!(
        f.parameters.delete_parameter(&f.admin, "/d1").await,
        ParametersError::NotFound(_)
    );
    let outcome = f
        .parameters
        .delete_parameters(&f.admin, &strings(&["/d2", "/d1", "/d2", "bad//"]))
        .await
        .unwrap();
    assert_eq!(outcome.deleted, ["/d2"]);
    assert_eq!(outcome.invalid, ["bad//", "/d1"]);
    assert!(f.record("/d2").await.is_none());
    // Created again, it starts over at version 1.
    assert_eq!(f.put("/d1", "again").await.version, 1);
}

#[tokio::test]
async fn tags_are_kept_per_parameter() {
    let f = fixture();
    f.try_put(PutParameterRequest {
        tags: vec![("team".into(), "a".into())],
        ..request("/t", "v", "String")
    })
    .await
    .unwrap();
    f.parameters
        .add_tags_to_resource(
            &f.admin,
            "Parameter",
            "/t",
            vec![("team".into(), "b".into()), ("env".into(), "prod".into())],
        )
        .await
        .unwrap();
    let (_, tags) = f
        .parameters
        .list_tags_for_resource(&f.admin, "Parameter", "/t")
        .await
        .unwrap();
    assert_eq!(
        tags,
        [("team".into(), "b".into()), ("env".into(), "prod".into())]
    );
    f.parameters
        .remove_tags_from_resource(&f.admin, "Parameter", "/t", &strings(&["team"]))
        .await
        .unwrap();
    let (_, tags) = f
        .parameters
        .list_tags_for_resource(&f.admin, "Parameter", "/t")
        .await
        .unwrap();
    assert_eq!(tags, [("env".into(), "prod".into())]);
    assert_err!(
        f.parameters
            .list_tags_for_resource(&f.admin, "Document", "/t")
            .await,
        ParametersError::InvalidResourceType
    );
    assert_err!(
        f.parameters
            .list_tags_for_resource(&f.admin, "Parameter", "/missing")
            .await,
        ParametersError::InvalidResourceId
    );
    let many: Vec<(String, String)> = (0..50).map(|n| (format!("k{n}"), "v".into())).collect();
    assert_err!(
        f.parameters
            .add_tags_to_resource(&f.admin, "Parameter", "/t", many)
            .await,
        ParametersError::TooManyTags(_)
    );
    assert_err!(
        f.parameters
            .add_tags_to_resource(
                &f.admin,
                "Parameter",
                "/t",
                vec![("aws:x".into(), "v".into())]
            )
            .await,
        ParametersError::Validation(_)
    );
}

#[tokio::test]
async fn secure_strings_are_sealed_and_never_stored_in_plaintext() {
    let f = fixture();
    let plaintext = "hunter2-VERY-secret-0451";
    let outcome = f
        .try_put(request("/app/password", plaintext, "SecureString"))
        .await
        .unwrap();
    let described = f.kms.describe_key(&f.admin, "alias/aws/ssm").await.unwrap();
    assert!(described.arn.contains(":key/"));
    // Nowhere in any record of any kind, meta or sealed, raw or in base64.
    for kind in RecordKind::ALL {
        for (_, record) in f.store.list(kind, None).await.unwrap() {
            let meta = record.value.meta.to_string();
            assert!(!meta.contains(plaintext), "{kind} meta");
            for blob in record.value.sealed.values() {
                assert!(
                    !blob
                        .windows(plaintext.len())
                        .any(|window| window == plaintext.as_bytes()),
                    "{kind} sealed"
                );
            }
        }
    }
    let stored = typed::get::<ParameterRecord, _>(f.store.as_ref(), "default", "/app/password")
        .await
        .unwrap()
        .unwrap();
    let blob = &stored.sealed[&ParameterRecord::sealed_slot(1)];
    let ciphertext = f
        .parameters
        .get_parameter(&f.admin, "/app/password", false)
        .await
        .unwrap();
    use base64::Engine as _;
    assert_eq!(
        ciphertext.value.expose(),
        base64::engine::general_purpose::STANDARD
            .encode(blob)
            .as_bytes()
    );
    assert_eq!(f.get("/app/password").await, plaintext);
    // The blob is bound to its parameter and version: moved to another, it does not open.
    f.try_put(request("/app/other", "other", "SecureString"))
        .await
        .unwrap();
    let other = typed::get::<ParameterRecord, _>(f.store.as_ref(), "default", "/app/other")
        .await
        .unwrap()
        .unwrap();
    let mut forged = other.sealed.clone();
    forged.insert(ParameterRecord::sealed_slot(1), blob.clone());
    f.store
        .update(
            &typed::key::<ParameterRecord>("default", "/app/other"),
            &other.revision,
            typed::value(&other.meta, forged).unwrap(),
        )
        .await
        .unwrap();
    assert_err!(
        f.parameters
            .get_parameter(&f.admin, "/app/other", true)
            .await,
        ParametersError::InvalidKeyId(_)
    );
    assert!(outcome.arn.ends_with(":parameter/app/password"));
}

#[tokio::test]
async fn decrypting_under_a_customer_key_needs_kms_decrypt() {
    let f = fixture();
    let key = f
        .kms
        .create_key(&f.admin, CreateKeyRequest::default())
        .await
        .unwrap();
    f.try_put(PutParameterRequest {
        key_id: Some(key.key_id.clone()),
        ..request("/cmk", "under-cmk", "SecureString")
    })
    .await
    .unwrap();
    f.try_put(request("/managed", "under-managed", "SecureString"))
        .await
        .unwrap();
    let reader = caller("reader");
    assert_err!(
        f.parameters.get_parameter(&reader, "/cmk", true).await,
        ParametersError::AccessDenied(_)
    );
    // The ciphertext needs no KMS permission; the managed key serves its own account.
    f.parameters
        .get_parameter(&reader, "/cmk", false)
        .await
        .unwrap();
    let managed = f
        .parameters
        .get_parameter(&reader, "/managed", true)
        .await
        .unwrap();
    assert_eq!(managed.value.expose(), b"under-managed");
    assert_eq!(f.get("/cmk").await, "under-cmk");
    // The KeyId is kept as named, and over an overwrite.
    let record = f.record("/cmk").await.unwrap();
    assert_eq!(record.key_id.as_deref(), Some(key.key_id.as_str()));
    f.try_put(PutParameterRequest {
        overwrite: true,
        ..request("/cmk", "again", "SecureString")
    })
    .await
    .unwrap();
    assert_eq!(
        f.record("/cmk").await.unwrap().versions[&2]
            .key_id
            .as_deref(),
        Some(key.key_id.as_str())
    );
    // A disabled key neither seals nor opens; an unknown key is an invalid KeyId.
    f.kms.disable_key(&f.admin, &key.key_id).await.unwrap();
    assert_err!(
        f.parameters.get_parameter(&f.admin, "/cmk", true).await,
        ParametersError::InvalidKeyId(_)
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            overwrite: true,
            ..request("/cmk", "x", "SecureString")
        })
        .await,
        ParametersError::InvalidKeyId(_)
    );
    assert_err!(
        f.try_put(PutParameterRequest {
            key_id: Some("alias/nope".into()),
            ..request("/nokey", "x", "SecureString")
        })
        .await,
        ParametersError::InvalidKeyId(_)
    );
}

#[tokio::test]
async fn access_is_decided_before_existence() {
    let f = fixture();
    let app = caller("app");
    for name in ["/other/missing", "/other/x"] {
        assert_err!(
            f.parameters.get_parameter(&app, name, false).await,
            ParametersError::AccessDenied(_)
        );
    }
    assert_err!(
        f.parameters
            .put_parameter(&app, request("/other/x", "v", "String"))
            .await,
        ParametersError::AccessDenied(_)
    );
    f.parameters
        .put_parameter(&app, request("/app/x", "v", "String"))
        .await
        .unwrap();
    assert_err!(
        f.parameters.delete_parameter(&app, "/other/x").await,
        ParametersError::AccessDenied(_)
    );
}

const DAY: i64 = 86_400;

fn policy_request(name: &str, policies: &str) -> PutParameterRequest {
    PutParameterRequest {
        tier: Some("Advanced".into()),
        policies: Some(policies.into()),
        overwrite: true,
        ..request(name, "v", "String")
    }
}

fn rfc3339(at: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(at)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn policies_fire_at_their_due_time_once_even_across_a_restart() {
    let f = fixture();
    let expires = START + 10 * DAY;
    let policies = format!(
        r#"[{{"Type":"Expiration","Version":"1.0","Attributes":{{"Timestamp":"{}"}}}},
            {{"Type":"ExpirationNotification","Version":"1.0","Attributes":{{"Before":"2","Unit":"Days"}}}},
            {{"Type":"NoChangeNotification","Version":"1.0","Attributes":{{"After":"3","Unit":"Days"}}}}]"#,
        rfc3339(expires)
    );
    f.try_put(policy_request("/p", &policies)).await.unwrap();
    let mut notifications = f.parameters.notifications();
    assert_eq!(
        f.parameters.run_due_policies().await.unwrap(),
        Some(START + 3 * DAY)
    );
    assert!(notifications.try_recv().is_err(), "nothing due yet");
    f.clock.set(START + 3 * DAY);
    assert_eq!(
        f.parameters.run_due_policies().await.unwrap(),
        Some(START + 8 * DAY)
    );
    let fired = notifications.try_recv().unwrap();
    assert_eq!(
        (fired.kind, fired.due, fired.name.as_str()),
        (
            NotificationKind::NoChangeNotification,
            START + 3 * DAY,
            "/p"
        )
    );
    assert!(fired.arn.ends_with(":parameter/p"));
    let described = f
        .parameters
        .describe_parameters(&f.admin, &[], &[], None, None)
        .await
        .unwrap()
        .items
        .remove(0);
    let statuses: Vec<(&str, &str)> = described
        .policies
        .iter()
        .map(|policy| (policy.type_, policy.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("Expiration", "Pending"),
            ("ExpirationNotification", "Pending"),
            ("NoChangeNotification", "Finished")
        ]
    );
    // Not again on the next pass, nor after a restart on the same store.
    f.parameters.run_due_policies().await.unwrap();
    assert!(notifications.try_recv().is_err());
    let (restarted, _) = engines(&f.store, &f.keyring, &f.clock);
    let mut after_restart = restarted.notifications();
    restarted.run_due_policies().await.unwrap();
    assert!(
        after_restart.try_recv().is_err(),
        "no repeat after a restart"
    );
    // The expiration notice, then the expiration itself, which deletes the parameter.
    f.clock.set(START + 8 * DAY);
    assert_eq!(restarted.run_due_policies().await.unwrap(), Some(expires));
    assert_eq!(
        after_restart.try_recv().unwrap().kind,
        NotificationKind::ExpirationNotification
    );
    f.clock.set(expires);
    assert_eq!(restarted.run_due_policies().await.unwrap(), None);
    let expired = after_restart.try_recv().unwrap();
    assert_eq!(
        (expired.kind, expired.due),
        (NotificationKind::Expired, expires)
    );
    assert!(f.record("/p").await.is_none());
    drop(f.dir);
}

#[tokio::test]
async fn a_change_rearms_the_no_change_notification() {
    let f = fixture();
    let policies = r#"[{"Type":"NoChangeNotification","Attributes":{"After":"5","Unit":"Hours"}}]"#;
    f.try_put(policy_request("/quiet", policies)).await.unwrap();
    let mut notifications = f.parameters.notifications();
    f.clock.advance(5 * 3600);
    f.parameters.run_due_policies().await.unwrap();
    assert_eq!(notifications.try_recv().unwrap().due, START + 5 * 3600);
    // A new version, without Policies: they are kept, and the quiet period starts over.
    f.clock.advance(3600);
    f.try_put(PutParameterRequest {
        overwrite: true,
        ..request("/quiet", "v2", "String")
    })
    .await
    .unwrap();
    assert_eq!(
        f.parameters.run_due_policies().await.unwrap(),
        Some(START + 11 * 3600)
    );
    f.clock.set(START + 11 * 3600);
    f.parameters.run_due_policies().await.unwrap();
    assert_eq!(notifications.try_recv().unwrap().due, START + 11 * 3600);
    // Replacing the policies with none stops them.
    f.try_put(policy_request("/quiet", "[]")).await.unwrap();
    assert_eq!(f.parameters.run_due_policies().await.unwrap(), None);
}

#[tokio::test]
async fn a_put_that_replaces_an_expiration_keeps_the_parameter() {
    let f = fixture();
    let soon = format!(
        r#"[{{"Type":"Expiration","Attributes":{{"Timestamp":"{}"}}}}]"#,
        rfc3339(START + DAY)
    );
    f.try_put(policy_request("/e", &soon)).await.unwrap();
    let later = format!(
        r#"[{{"Type":"Expiration","Attributes":{{"Timestamp":"{}"}}}}]"#,
        rfc3339(START + 5 * DAY)
    );
    f.try_put(policy_request("/e", &later)).await.unwrap();
    f.clock.set(START + 2 * DAY);
    assert_eq!(
        f.parameters.run_due_policies().await.unwrap(),
        Some(START + 5 * DAY)
    );
    assert!(f.record("/e").await.is_some());
    assert_err!(
        f.try_put(policy_request(
            "/e",
            r#"[{"Type":"Expiration","Attributes":{"Timestamp":"2001-01-01T00:00:00Z"}}]"#
        ))
        .await,
        ParametersError::InvalidPolicyAttribute(_)
    );
    assert_err!(
        f.try_put(policy_request(
            "/e",
            r#"[{"Type":"Rotation","Attributes":{}}]"#
        ))
        .await,
        ParametersError::InvalidPolicyType(_)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_of_one_parameter_all_get_their_own_version() {
    let f = fixture();
    let Fixture {
        parameters,
        admin,
        dir,
        ..
    } = f;
    let parameters = Arc::new(parameters);
    let puts: Vec<_> = (0..24)
        .map(|n| {
            let (parameters, admin) = (parameters.clone(), admin.clone());
            tokio::spawn(async move {
                parameters
                    .put_parameter(
                        &admin,
                        PutParameterRequest {
                            overwrite: true,
                            ..request("/busy", &format!("v{n}"), "SecureString")
                        },
                    )
                    .await
                    .map(|outcome| outcome.version)
            })
        })
        .collect();
    let mut versions = Vec::new();
    for put in puts {
        versions.push(put.await.unwrap().unwrap());
    }
    versions.sort_unstable();
    assert_eq!(versions, (1..=24).collect::<Vec<u64>>());
    let (_, history) = parameters
        .get_parameter_history(&admin, "/busy", true, None, None)
        .await
        .unwrap();
    assert_eq!(history.items.len(), 24);
    drop(dir);
}

#[test]
fn conflicts_are_throttling_and_store_refusals_validation() {
    let err = ParametersError::from(crate::store::StoreError::TooManyConflicts("x".into(), 16));
    assert!(matches!(err, ParametersError::Busy(_)));
    let err = ParametersError::from(crate::store::StoreError::InvalidKey);
    assert!(matches!(err, ParametersError::Validation(_)));
}

/// Random Put, LabelParameterVersion, UnlabelParameterVersion and DeleteParameter sequences
/// through the engine and its store, against a model of versions and labels: after every step
/// the engine's versions and labels are the model's; no label is on two versions; no version
/// carries more than ten labels; never more than 100 versions; a Put is refused only when
/// every kept version is labelled.
mod against_a_model {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Put,
        /// Labels the `pick`-th version with labels from a small pool (so that labels move).
        Label {
            pick: usize,
            labels: Vec<&'static str>,
        },
        /// Labels the `pick`-th unlabelled version with a fresh label, so that every version
        /// can end up labelled.
        LabelFresh {
            pick: usize,
        },
        Unlabel {
            pick: usize,
            labels: Vec<&'static str>,
        },
        Delete,
    }

    fn op() -> impl Strategy<Value = Op> {
        let label = prop::sample::select(vec!["blue", "green", "prod", "aws-bad", "l1", "x.y"]);
        prop_oneof![
            5 => Just(Op::Put),
            2 => (any::<usize>(), prop::collection::vec(label.clone(), 1..4))
                .prop_map(|(pick, labels)| Op::Label { pick, labels }),
            5 => any::<usize>().prop_map(|pick| Op::LabelFresh { pick }),
            1 => (any::<usize>(), prop::collection::vec(label, 1..3))
                .prop_map(|(pick, labels)| Op::Unlabel { pick, labels }),
            1 => Just(Op::Delete),
        ]
    }

    /// Version number to labels; and the next version's number.
    #[derive(Default)]
    struct Model {
        versions: BTreeMap<u64, BTreeSet<String>>,
        latest: u64,
    }

    async fn run(prefix: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
        let f = fixture();
        let mut model = Model::default();
        let mut fresh = 0usize;
        let all_ops = std::iter::repeat_n(Op::Put, prefix).chain(ops);
        for op in all_ops {
            let numbers: Vec<u64> = model.versions.keys().copied().collect();
            let pick = |n: usize| numbers.get(n % numbers.len().max(1)).copied();
            match &op {
                Op::Put => {
                    let outcome = f
                        .try_put(PutParameterRequest {
                            overwrite: true,
                            ..request("/m", "v", "String")
                        })
                        .await;
                    let full = model.versions.len() >= model::MAX_VERSIONS;
                    let room = model
                        .versions
                        .iter()
                        .find(|(_, labels)| labels.is_empty())
                        .map(|(number, _)| *number);
                    match (full, room, outcome) {
                        (true, None, Err(ParametersError::MaxVersionLimitExceeded(_))) => {}
                        (_, _, Ok(outcome)) => {
                            prop_assert!(!full || room.is_some(), "a Put with no room succeeded");
                            if full && let Some(room) = room {
                                model.versions.remove(&room);
                            }
                            model.latest += 1;
                            prop_assert_eq!(outcome.version, model.latest);
                            model.versions.insert(model.latest, BTreeSet::new());
                        }
                        (_, _, Err(err)) => {
                            return Err(TestCaseError::fail(format!("Put refused: {err:?}")));
                        }
                    }
                }
                Op::Label { pick: n, labels } => {
                    let Some(number) = pick(*n) else { continue };
                    let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
                    let outcome = f
                        .parameters
                        .label_parameter_version(&f.admin, "/m", Some(number), &labels)
                        .await;
                    apply_label(&mut model, number, &labels, outcome)?;
                }
                Op::LabelFresh { pick: n } => {
                    let unlabelled: Vec<u64> = model
                        .versions
                        .iter()
                        .filter(|(_, labels)| labels.is_empty())
                        .map(|(number, _)| *number)
                        .collect();
                    let Some(number) = unlabelled.get(n % unlabelled.len().max(1)).copied() else {
                        continue;
                    };
                    fresh += 1;
                    let labels = vec![format!("fresh{fresh}")];
                    let outcome = f
                        .parameters
                        .label_parameter_version(&f.admin, "/m", Some(number), &labels)
                        .await;
                    apply_label(&mut model, number, &labels, outcome)?;
                }
                Op::Unlabel { pick: n, labels } => {
                    let Some(number) = pick(*n) else { continue };
                    let labels: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
                    let (removed, _) = f
                        .parameters
                        .unlabel_parameter_version(&f.admin, "/m", number, &labels)
                        .await
                        .map_err(|err| TestCaseError::fail(format!("{err:?}")))?;
                    let held = model.versions.entry(number).or_default();
                    for label in &removed {
                        prop_assert!(held.remove(label), "removed {} it did not hold", label);
                    }
                    for label in &labels {
                        prop_assert!(!held.contains(label));
                    }
                }
                Op::Delete => {
                    let outcome = f.parameters.delete_parameter(&f.admin, "/m").await;
                    prop_assert_eq!(outcome.is_ok(), !model.versions.is_empty());
                    model = Model::default();
                }
            }
            // The engine agrees with the model, and the invariants hold.
            let record = f.record("/m").await;
            let engine: BTreeMap<u64, BTreeSet<String>> = record
                .as_ref()
                .map(|record| {
                    record
                        .versions
                        .iter()
                        .map(|(number, version)| (*number, version.labels.clone()))
                        .collect()
                })
                .unwrap_or_default();
            prop_assert_eq!(&engine, &model.versions, "after {:?}", op);
            prop_assert!(engine.len() <= model::MAX_VERSIONS);
            let mut seen = BTreeSet::new();
            for labels in engine.values() {
                prop_assert!(labels.len() <= model::MAX_LABELS_PER_VERSION);
                for label in labels {
                    prop_assert!(seen.insert(label.clone()), "{} on two versions", label);
                }
            }
        }
        Ok(())
    }

    fn apply_label(
        model: &mut Model,
        number: u64,
        labels: &[String],
        outcome: Result<(Vec<String>, u64), ParametersError>,
    ) -> Result<(), TestCaseError> {
        let valid: BTreeSet<String> = labels
            .iter()
            .filter(|label| model::valid_label(label))
            .cloned()
            .collect();
        let mut after = model.versions.get(&number).cloned().unwrap_or_default();
        after.extend(valid.iter().cloned());
        match outcome {
            Ok((invalid, version)) => {
                prop_assert_eq!(version, number);
                prop_assert!(after.len() <= model::MAX_LABELS_PER_VERSION);
                let expected: Vec<String> = labels
                    .iter()
                    .filter(|label| !model::valid_label(label))
                    .cloned()
                    .collect();
                prop_assert_eq!(invalid, expected);
                for (other, held) in &mut model.versions {
                    if *other != number {
                        held.retain(|label| !valid.contains(label));
                    }
                }
                model.versions.insert(number, after);
            }
            Err(ParametersError::VersionLabelLimitExceeded(_)) => {
                prop_assert!(after.len() > model::MAX_LABELS_PER_VERSION);
            }
            Err(err) => return Err(TestCaseError::fail(format!("Label refused: {err:?}"))),
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
        #[test]
        fn versions_and_labels_follow_the_model(
            prefix in 90usize..100,
            ops in prop::collection::vec(op(), 1..160),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(run(prefix, ops))?;
        }
    }
}
