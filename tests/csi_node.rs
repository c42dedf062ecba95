//! `coffer csi` as kubelet sees it: the gRPC services over a real Unix socket, real tmpfs
//! mounts in temporary directories (root only; skipped loudly otherwise), a content source
//! returning fixed files, and a change feed driven through a channel.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
#[path = "support/unix_channel.rs"]
mod unix_channel;

use coffer::crypto::SecretBytes;
use coffer::csi::proto::identity_client::IdentityClient;
use coffer::csi::proto::node_client::NodeClient;
use coffer::csi::proto::{self, node_service_capability, volume_capability};
use coffer::csi::{CsiConfig, CsiError, Notice};
use coffer::delivery::{ContentError, ContentSource, PodInfo, PodToken, VolumeFile, Watched};
use tokio::sync::{mpsc, oneshot};
use tonic::Code;
use tonic::transport::Channel;

const NAMESPACE: &str = "shop";

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

macro_rules! require_root {
    () => {
        if !is_root() {
            eprintln!("SKIPPED: this test mounts tmpfs and needs root; run the tests as root");
            return;
        }
    };
}

/// What the fixed source answers.
enum Answer {
    Files(Vec<(&'static str, u32, &'static [u8])>),
    Fails(ContentError),
}

/// A content source whose answer a test sets, and which remembers the tokens it was given.
struct FixedSource {
    answer: Mutex<Answer>,
    tokens: Mutex<Vec<String>>,
}

impl FixedSource {
    fn new(files: Vec<(&'static str, u32, &'static [u8])>) -> Arc<Self> {
        Arc::new(Self {
            answer: Mutex::new(Answer::Files(files)),
            tokens: Mutex::new(Vec::new()),
        })
    }

    fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap() = answer;
    }

    fn tokens(&self) -> Vec<String> {
        self.tokens.lock().unwrap().clone()
    }
}

#[async_trait]
impl ContentSource for FixedSource {
    fn watches(
        &self,
        attributes: &BTreeMap<String, String>,
        pod: &PodInfo,
    ) -> Result<Vec<Watched>, ContentError> {
        assert!(
            attributes
                .keys()
                .all(|key| !key.starts_with("csi.storage.k8s.io/")),
            "kubelet's entries reach the source: {attributes:?}"
        );
        let secret = attributes
            .get("secret")
            .ok_or_else(|| ContentError::InvalidArgument("the volume names no secret".into()))?;
        Ok(vec![Watched::Secret {
            namespace: pod.namespace.clone(),
            id: secret.clone(),
        }])
    }

    async fn files(
        &self,
        _: &BTreeMap<String, String>,
        _: &PodInfo,
        token: &PodToken,
    ) -> Result<Vec<VolumeFile>, ContentError> {
        self.tokens.lock().unwrap().push(label_of(token.expose()));
        match &*self.answer.lock().unwrap() {
            Answer::Files(files) => Ok(files
                .iter()
                .map(|(path, mode, contents)| VolumeFile {
                    path: (*path).into(),
                    mode: *mode,
                    contents: SecretBytes::from_slice(contents),
                })
                .collect()),
            Answer::Fails(ContentError::NotFound(m)) => Err(ContentError::NotFound(m.clone())),
            Answer::Fails(ContentError::PermissionDenied(m)) => {
                Err(ContentError::PermissionDenied(m.clone()))
            }
            Answer::Fails(ContentError::InvalidArgument(m)) => {
                Err(ContentError::InvalidArgument(m.clone()))
            }
            Answer::Fails(ContentError::Unavailable(m)) => {
                Err(ContentError::Unavailable(m.clone()))
            }
        }
    }
}

/// A running plugin, its clients, and the sender of its change feed.
struct Plugin {
    identity: IdentityClient<Channel>,
    node: NodeClient<Channel>,
    notices: mpsc::UnboundedSender<Notice>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), CsiError>>,
}

impl Plugin {
    async fn start(work: &Path, source: Arc<FixedSource>) -> Self {
        let socket = work.join("plugin/csi.sock");
        let config = CsiConfig {
            endpoint: format!("unix://{}", socket.display()),
            node_id: "node-a".into(),
            state_dir: work.join("state"),
            volume_size_bytes: 1024 * 1024,
            resync: Duration::from_secs(3600),
            audience: "coffer".into(),
        };
        let (notices, receiver) = mpsc::unbounded_channel();
        let feed = tokio_stream::wrappers::UnboundedReceiverStream::new(receiver);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(coffer::csi::run(config, source, Box::pin(feed), async {
            let _ = stopped.await;
        }));
        let channel = unix_channel::connect(&socket).await;
        Self {
            identity: IdentityClient::new(channel.clone()),
            node: NodeClient::new(channel),
            notices,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap().unwrap();
    }
}

/// A temporary directory whose mounts are taken down even when a test fails.
struct Work {
    dir: tempfile::TempDir,
}

impl Work {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A target path whose parent exists, as kubelet prepares it.
    fn target(&self, pod: &str) -> PathBuf {
        let parent = self.path().join("pods").join(pod).join("volumes");
        std::fs::create_dir_all(&parent).unwrap();
        parent.join("mount")
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        for (mount_point, _, _) in mounts() {
            if mount_point.starts_with(self.dir.path()) {
                let _ = rustix::mount::unmount(&mount_point, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

/// Every mount: its mount point, mount id and per-mount options.
fn mounts() -> Vec<(PathBuf, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            (
                PathBuf::from(fields[4].replace("\\040", " ")),
                fields[0].to_owned(),
                fields[5].to_owned(),
            )
        })
        .collect()
}

fn mounts_at(target: &Path) -> Vec<(String, String)> {
    mounts()
        .into_iter()
        .filter(|(point, _, _)| point == target)
        .map(|(_, id, options)| (id, options))
        .collect()
}

/// kubelet's token entry for the test pod, its token made by [`pod_jwt`] from `label`.
fn tokens_json(label: &str, expires: &str) -> String {
    serde_json::json!({"coffer": {"token": pod_jwt(label), "expirationTimestamp": expires}})
        .to_string()
}

/// An unsigned token with the claims of kubelet's token for the test pod (the plugin refuses
/// another's); `label` rides in a claim of its own so that tests can tell tokens apart.
fn pod_jwt(label: &str) -> String {
    use base64::Engine as _;
    let encode = |value: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
    };
    let claims = serde_json::json!({
        "sub": format!("system:serviceaccount:{NAMESPACE}:web"),
        "kubernetes.io": {"namespace": NAMESPACE, "pod": {"name": "web-0", "uid": "5f0c1d2e"}},
        "label": label,
    });
    format!(
        "{}.{}.unsigned",
        encode(serde_json::json!({"alg": "none"})),
        encode(claims)
    )
}

/// The label [`pod_jwt`] put into a token.
fn label_of(token: &str) -> String {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: serde_json::Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    claims["label"].as_str().unwrap().to_owned()
}

fn context(token: Option<&str>) -> HashMap<String, String> {
    let mut context: HashMap<String, String> = [
        ("csi.storage.k8s.io/pod.name", "web-0"),
        ("csi.storage.k8s.io/pod.namespace", NAMESPACE),
        ("csi.storage.k8s.io/pod.uid", "5f0c1d2e"),
        ("csi.storage.k8s.io/serviceAccount.name", "web"),
        ("csi.storage.k8s.io/ephemeral", "true"),
        ("secret", "prod/db"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Some(token) = token {
        context.insert(
            "csi.storage.k8s.io/serviceAccount.tokens".into(),
            tokens_json(token, "2999-01-01T00:00:00Z"),
        );
    }
    context
}

fn publish_request(
    volume_id: &str,
    target: &Path,
    context: HashMap<String, String>,
    group: &str,
) -> proto::NodePublishVolumeRequest {
    proto::NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(proto::VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(
                volume_capability::MountVolume {
                    fs_type: String::new(),
                    mount_flags: Vec::new(),
                    volume_mount_group: group.into(),
                },
            )),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter.into(),
            }),
        }),
        readonly: false,
        secrets: HashMap::new(),
        volume_context: context,
    }
}

fn unpublish_request(volume_id: &str, target: &Path) -> proto::NodeUnpublishVolumeRequest {
    proto::NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
    }
}

fn state_files(work: &Path) -> usize {
    std::fs::read_dir(work.join("state")).unwrap().count()
}

async fn eventually(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn identity_and_node_capabilities() {
    let work = Work::new();
    let mut plugin = Plugin::start(work.path(), FixedSource::new(Vec::new())).await;

    let info = plugin
        .identity
        .get_plugin_info(proto::GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "csi.coffer.dev");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));
    let capabilities = plugin
        .identity
        .get_plugin_capabilities(proto::GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(capabilities.capabilities.is_empty(), "a node plugin only");
    let probe = plugin
        .identity
        .probe(proto::ProbeRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(probe.ready, Some(true));

    let node = plugin
        .node
        .node_get_capabilities(proto::NodeGetCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<i32> = node
        .capabilities
        .iter()
        .map(|c| match c.r#type {
            Some(node_service_capability::Type::Rpc(ref rpc)) => rpc.r#type,
            None => -1,
        })
        .collect();
    assert_eq!(
        kinds,
        [node_service_capability::rpc::Type::VolumeMountGroup as i32]
    );
    let info = plugin
        .node
        .node_get_info(proto::NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-a");

    let socket_mode = std::fs::metadata(work.path().join("plugin/csi.sock"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(socket_mode & 0o777, 0o600);
    plugin.stop().await;
    assert!(!work.path().join("plugin/csi.sock").exists());
}

#[tokio::test]
async fn publish_writes_files_in_the_atomic_layout_and_is_idempotent() {
    require_root!();
    let work = Work::new();
    let source = FixedSource::new(vec![
        ("password", 0o440, b"hunter2"),
        ("config/url", 0o644, b"postgres://db"),
    ]);
    let mut plugin = Plugin::start(work.path(), source.clone()).await;
    let target = work.target("p1");

    let request = publish_request("csi-v1", &target, context(Some("jwt-one")), "3000");
    plugin
        .node
        .node_publish_volume(request.clone())
        .await
        .unwrap();

    assert_eq!(std::fs::read(target.join("password")).unwrap(), b"hunter2");
    assert_eq!(
        std::fs::read(target.join("config/url")).unwrap(),
        b"postgres://db"
    );
    let link = |name: &str| std::fs::read_link(target.join(name)).unwrap();
    assert_eq!(link("password"), Path::new("..data/password"));
    assert_eq!(link("config"), Path::new("..data/config"));
    assert!(link("..data").to_string_lossy().starts_with("..20"));
    let meta = |name: &str| std::fs::metadata(target.join(name)).unwrap();
    assert_eq!(meta("password").mode() & 0o777, 0o440);
    assert_eq!(meta("config/url").mode() & 0o777, 0o644);
    assert_eq!(meta("password").gid(), 3000);
    assert_eq!(meta("config").gid(), 3000);
    assert_eq!(meta(".").mode() & 0o777, 0o750);
    assert_eq!(meta(".").gid(), 3000);

    let mounted = mounts_at(&target);
    assert_eq!(mounted.len(), 1, "{mounted:?}");
    let (mount_id, options) = mounted[0].clone();
    for option in ["nosuid", "nodev", "noexec"] {
        assert!(options.split(',').any(|o| o == option), "{options}");
    }
    assert_eq!(state_files(work.path()), 1);
    let state_mode = std::fs::read_dir(work.path().join("state"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .metadata()
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(state_mode & 0o777, 0o600);

    // kubelet retries: nothing changes, no second mount.
    let data_before = link("..data");
    plugin.node.node_publish_volume(request).await.unwrap();
    assert_eq!(mounts_at(&target), [(mount_id.clone(), options.clone())]);
    assert_eq!(
        link("..data"),
        data_before,
        "an unchanged republish writes nothing"
    );

    // requiresRepublish: a fresh token, new contents, rewritten in place.
    source.set(Answer::Files(vec![("password", 0o440, b"correct horse")]));
    let republish = publish_request("csi-v1", &target, context(Some("jwt-two")), "3000");
    plugin.node.node_publish_volume(republish).await.unwrap();
    assert_eq!(mounts_at(&target), [(mount_id, options)]);
    assert_eq!(
        std::fs::read(target.join("password")).unwrap(),
        b"correct horse"
    );
    assert!(std::fs::symlink_metadata(target.join("config")).is_err());
    assert_eq!(source.tokens().last().map(String::as_str), Some("jwt-two"));
    let state = std::fs::read_dir(work.path().join("state"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    let state = std::fs::read_to_string(state.path()).unwrap();
    assert!(state.contains(&pod_jwt("jwt-two")) && !state.contains(&pod_jwt("jwt-one")));

    // Another volume on the same target is refused.
    let other = publish_request("csi-v2", &target, context(Some("jwt-two")), "3000");
    let err = plugin.node.node_publish_volume(other).await.unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    // Unpublish, twice, and of a target never published.
    plugin
        .node
        .node_unpublish_volume(unpublish_request("csi-v1", &target))
        .await
        .unwrap();
    assert!(mounts_at(&target).is_empty());
    assert!(!target.exists());
    assert_eq!(state_files(work.path()), 0);
    plugin
        .node
        .node_unpublish_volume(unpublish_request("csi-v1", &target))
        .await
        .unwrap();
    plugin
        .node
        .node_unpublish_volume(unpublish_request("csi-v9", &work.target("never")))
        .await
        .unwrap();
    plugin.stop().await;
}

#[tokio::test]
async fn unsafe_names_are_refused_and_leave_nothing_mounted() {
    require_root!();
    let work = Work::new();
    let source = FixedSource::new(vec![("ok", 0o644, b"fine"), ("../../escape", 0o644, b"x")]);
    let mut plugin = Plugin::start(work.path(), source.clone()).await;
    for bad in [
        "../../escape",
        "/etc/passwd",
        "..data/x",
        "a/./b",
        "a//b",
        "a\0b",
    ] {
        let target = work.target("p-names");
        let files: Vec<(&'static str, u32, &'static [u8])> = vec![
            ("ok", 0o644, b"fine"),
            (Box::leak(bad.to_owned().into_boxed_str()), 0o644, b"x"),
        ];
        source.set(Answer::Files(files));
        let request = publish_request("csi-n", &target, context(Some("jwt")), "");
        let err = plugin.node.node_publish_volume(request).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}: {err:?}");
        assert!(mounts_at(&target).is_empty(), "{bad:?} left a mount");
        assert!(!target.exists(), "{bad:?} left the target directory");
        assert_eq!(state_files(work.path()), 0);
    }
    assert!(!work.path().join("escape").exists());
    assert!(!work.path().join("pods/escape").exists());
    plugin.stop().await;
}

#[tokio::test]
async fn no_token_is_permission_denied() {
    require_root!();
    let work = Work::new();
    let source = FixedSource::new(vec![("a", 0o644, b"v")]);
    let mut plugin = Plugin::start(work.path(), source.clone()).await;
    let target = work.target("p-token");
    let err = plugin
        .node
        .node_publish_volume(publish_request("csi-t", &target, context(None), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(mounts_at(&target).is_empty());
    assert!(
        source.tokens().is_empty(),
        "the source was asked without a token"
    );

    // Kubernetes 1.35 hands the token over in secrets: accepted there.
    let mut request = publish_request("csi-t", &target, context(None), "");
    request.secrets.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        tokens_json("jwt-in-secrets", "2999-01-01T00:00:00Z"),
    );
    plugin.node.node_publish_volume(request).await.unwrap();
    assert_eq!(source.tokens(), ["jwt-in-secrets"]);
    plugin
        .node
        .node_unpublish_volume(unpublish_request("csi-t", &target))
        .await
        .unwrap();

    // A persistent (non-ephemeral) volume is refused.
    let mut request = publish_request("csi-t", &target, context(Some("jwt")), "");
    request
        .volume_context
        .remove("csi.storage.k8s.io/ephemeral");
    let err = plugin.node.node_publish_volume(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    plugin.stop().await;
}

#[tokio::test]
async fn a_failing_source_rolls_everything_back() {
    require_root!();
    let work = Work::new();
    let source = FixedSource::new(Vec::new());
    source.set(Answer::Fails(ContentError::NotFound(
        "secret prod/db does not exist".into(),
    )));
    let mut plugin = Plugin::start(work.path(), source.clone()).await;
    let target = work.target("p-fail");
    let err = plugin
        .node
        .node_publish_volume(publish_request(
            "csi-f",
            &target,
            context(Some("jwt-f")),
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains("prod/db"), "{err:?}");
    assert!(!err.message().contains("jwt-f"));
    assert!(mounts_at(&target).is_empty());
    assert!(!target.exists());
    assert_eq!(state_files(work.path()), 0);

    // A file too large for the tmpfs fails after the mount: rolled back too.
    static BIG: [u8; 2 * 1024 * 1024] = [7u8; 2 * 1024 * 1024];
    source.set(Answer::Files(vec![("big", 0o644, &BIG)]));
    let err = plugin
        .node
        .node_publish_volume(publish_request(
            "csi-f",
            &target,
            context(Some("jwt-f")),
            "",
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Internal, "{err:?}");
    assert!(mounts_at(&target).is_empty());
    assert!(!target.exists());
    assert_eq!(state_files(work.path()), 0);
    plugin.stop().await;
}

#[tokio::test]
async fn changes_on_the_feed_refresh_matching_volumes() {
    require_root!();
    let work = Work::new();
    let source = FixedSource::new(vec![("password", 0o600, b"old")]);
    let mut plugin = Plugin::start(work.path(), source.clone()).await;
    let target = work.target("p-feed");
    plugin
        .node
        .node_publish_volume(publish_request(
            "csi-r",
            &target,
            context(Some("jwt-r")),
            "",
        ))
        .await
        .unwrap();
    let (mount_id, _) = mounts_at(&target)[0].clone();
    source.set(Answer::Files(vec![("password", 0o600, b"new")]));

    // Another namespace's secret of the same name, and another secret: no refresh.
    for unrelated in [
        Notice::Secret {
            namespace: "other".into(),
            name: "prod/db".into(),
            arn: None,
        },
        Notice::Secret {
            namespace: NAMESPACE.into(),
            name: "prod/cache".into(),
            arn: None,
        },
    ] {
        plugin.notices.send(unrelated).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read(target.join("password")).unwrap(), b"old");
    assert_eq!(source.tokens(), ["jwt-r"]);

    plugin
        .notices
        .send(Notice::Secret {
            namespace: NAMESPACE.into(),
            name: "prod/db".into(),
            arn: Some("arn:aws:secretsmanager:us-east-1:000000000000:secret:prod/db-a1b2c3".into()),
        })
        .unwrap();
    let path = target.join("password");
    eventually("the refresh", || std::fs::read(&path).unwrap() == b"new").await;
    assert_eq!(
        source.tokens(),
        ["jwt-r", "jwt-r"],
        "refreshes use the stored token"
    );
    assert_eq!(mounts_at(&target)[0].0, mount_id);
    plugin.stop().await;
}

#[tokio::test]
async fn an_expired_token_waits_for_the_next_republish() {
    require_root!();
    let work = Work::new();
    let source = FixedSource::new(vec![("a", 0o644, b"old")]);
    let mut plugin = Plugin::start(work.path(), source.clone()).await;
    let target = work.target("p-expired");
    let mut ctx = context(None);
    ctx.insert(
        "csi.storage.k8s.io/serviceAccount.tokens".into(),
        tokens_json("jwt-old", "2020-01-01T00:00:00Z"),
    );
    plugin
        .node
        .node_publish_volume(publish_request("csi-e", &target, ctx, ""))
        .await
        .unwrap();
    source.set(Answer::Files(vec![("a", 0o644, b"new")]));
    plugin
        .notices
        .send(Notice::Secret {
            namespace: NAMESPACE.into(),
            name: "prod/db".into(),
            arn: None,
        })
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(std::fs::read(target.join("a")).unwrap(), b"old");
    assert_eq!(source.tokens(), ["jwt-old"], "an expired token was used");

    plugin
        .node
        .node_publish_volume(publish_request(
            "csi-e",
            &target,
            context(Some("jwt-new")),
            "",
        ))
        .await
        .unwrap();
    assert_eq!(std::fs::read(target.join("a")).unwrap(), b"new");
    plugin.stop().await;
}

#[tokio::test]
async fn a_restarted_plugin_takes_its_volumes_back() {
    require_root!();
    let work = Work::new();
    let source = FixedSource::new(vec![("a", 0o644, b"before")]);
    let mut plugin = Plugin::start(work.path(), source.clone()).await;
    let kept = work.target("p-kept");
    let lost = work.target("p-lost");
    for (id, target) in [("csi-k", &kept), ("csi-l", &lost)] {
        plugin
            .node
            .node_publish_volume(publish_request(id, target, context(Some("jwt-k")), ""))
            .await
            .unwrap();
    }
    plugin.stop().await;
    assert_eq!(state_files(work.path()), 2);

    // While the plugin is down, one volume goes away and the other's secret changes.
    rustix::mount::unmount(&lost, rustix::mount::UnmountFlags::empty()).unwrap();
    source.set(Answer::Files(vec![("a", 0o644, b"after")]));

    let mut plugin = Plugin::start(work.path(), source.clone()).await;
    let path = kept.join("a");
    eventually("the resync on start", || {
        std::fs::read(&path).unwrap() == b"after"
    })
    .await;
    assert_eq!(
        state_files(work.path()),
        1,
        "the unmounted volume is forgotten"
    );
    assert_eq!(mounts_at(&kept).len(), 1);

    // Pushed refreshes resume with the stored token.
    source.set(Answer::Files(vec![("a", 0o644, b"pushed")]));
    plugin
        .notices
        .send(Notice::Secret {
            namespace: NAMESPACE.into(),
            name: "prod/db".into(),
            arn: None,
        })
        .unwrap();
    eventually("the pushed refresh", || {
        std::fs::read(&path).unwrap() == b"pushed"
    })
    .await;
    assert!(source.tokens().iter().all(|t| t == "jwt-k"));

    // The taken-back volume is known: same id republishes in place, another id is refused.
    let err = plugin
        .node
        .node_publish_volume(publish_request("csi-x", &kept, context(Some("jwt-k")), ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    plugin
        .node
        .node_unpublish_volume(unpublish_request("csi-k", &kept))
        .await
        .unwrap();
    assert!(mounts_at(&kept).is_empty());
    assert_eq!(state_files(work.path()), 0);
    plugin.stop().await;
}
