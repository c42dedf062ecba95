//! `coffer csi` against a real controller and a real API server: the plugin binary on a socket
//! of its own, driven as kubelet drives it, real tmpfs mounts, and pod-bound ServiceAccount
//! tokens minted by the API server's TokenRequest.
//!
//! `e2e/cluster/test_csi.py` runs these tests inside the cluster suite, with
//! `COFFER_E2E_CSI_NAMESPACE` (a namespace whose `csi-admin` may do anything with secrets and
//! parameters, `csi-app` only `get`, `csi-nobody` nothing), `COFFER_E2E_API` (the controller's
//! endpoint), `COFFER_BIN`, `KUBECONFIG`, `COFFER_E2E_PLAINTEXTS` (every value used is appended,
//! for the suite's scans) and `COFFER_E2E_CSI_LOG_DIR` (the plugin's logs). Run by `cargo test`
//! alone, each test says SKIPPED and why.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer::csi::proto::node_client::NodeClient;
use coffer::csi::proto::{self, volume_capability};
use hyper_util::rt::TokioIo;
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// How long a change may take to reach a file before the test fails. The figure that matters
/// (p99 within 1 s) is measured by the benchmark, not asserted here.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

struct Cluster {
    namespace: String,
    api: String,
    binary: PathBuf,
    plaintexts: PathBuf,
    log_dir: PathBuf,
    client: kube::Client,
    http: reqwest::Client,
}

macro_rules! cluster_or_skip {
    () => {
        match Cluster::from_env().await {
            Some(cluster) => cluster,
            None => {
                eprintln!(
                    "SKIPPED: the CSI cluster tests run inside the cluster suite (e2e/run-cluster.sh, \
                     e2e/cluster/test_csi.py), which sets COFFER_E2E_CSI_NAMESPACE"
                );
                return;
            }
        }
    };
}

impl Cluster {
    async fn from_env() -> Option<Self> {
        let namespace = std::env::var("COFFER_E2E_CSI_NAMESPACE").ok()?;
        let var = |name: &str| std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"));
        assert!(
            rustix::process::geteuid().is_root(),
            "the CSI cluster tests mount tmpfs: run them as root"
        );
        Some(Self {
            namespace,
            api: var("COFFER_E2E_API"),
            binary: PathBuf::from(var("COFFER_BIN")),
            plaintexts: PathBuf::from(var("COFFER_E2E_PLAINTEXTS")),
            log_dir: PathBuf::from(var("COFFER_E2E_CSI_LOG_DIR")),
            client: kube::Client::try_default().await.unwrap(),
            http: reqwest::Client::new(),
        })
    }

    /// A fresh value, registered for the suite's scans.
    fn plaintext(&self, what: &str) -> String {
        let value = format!("e2e-plain-{what}-{}", uuid::Uuid::new_v4().simple());
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.plaintexts)
            .unwrap();
        writeln!(file, "{value}").unwrap();
        value
    }

    /// A pod of `service_account` (it never runs: there is no kubelet) and a token bound to
    /// it, as kubelet gets one for the CSIDriver's tokenRequests.
    async fn pod_token(&self, pod: &str, service_account: &str) -> PodIdentity {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let _ = pods.delete(pod, &DeleteParams::default()).await;
        for _ in 0..100 {
            if pods.get_opt(pod).await.unwrap().is_none() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let manifest: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod},
            "spec": {
                "serviceAccountName": service_account,
                "automountServiceAccountToken": false,
                "containers": [{"name": "app", "image": "registry.invalid/app:1"}],
            },
        }))
        .unwrap();
        let created = pods
            .create(&PostParams::default(), &manifest)
            .await
            .unwrap();
        let uid = created.metadata.uid.clone().unwrap();
        let token = self
            .token_for(service_account, Some((pod, uid.as_str())))
            .await;
        PodIdentity {
            namespace: self.namespace.clone(),
            name: pod.into(),
            uid,
            service_account: service_account.into(),
            token,
        }
    }

    async fn token_for(&self, service_account: &str, pod: Option<(&str, &str)>) -> String {
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), &self.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["coffer".into()],
                expiration_seconds: Some(3600),
                bound_object_ref: pod.map(|(name, uid)| BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.into()),
                    uid: Some(uid.into()),
                }),
            },
            ..TokenRequest::default()
        };
        accounts
            .create_token_request(service_account, &PostParams::default(), &request)
            .await
            .unwrap()
            .status
            .unwrap()
            .token
    }

    /// One call of the AWS JSON API as `service_account`, which must succeed.
    async fn call(&self, target: &str, body: Value, service_account: &str) -> Value {
        let token = self.token_for(service_account, None).await;
        let response = self
            .http
            .post(&self.api)
            .header("X-Amz-Target", target)
            .header("Content-Type", "application/x-amz-json-1.1")
            .header("Authorization", format!("Bearer {token}"))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        assert!(status.is_success(), "{target}: {status} {text}");
        serde_json::from_str(&text).unwrap()
    }

    async fn put_secret(&self, name: &str, value: &str) -> String {
        let out = self
            .call(
                "secretsmanager.PutSecretValue",
                json!({"SecretId": name, "SecretString": value}),
                "csi-admin",
            )
            .await;
        out["VersionId"].as_str().unwrap().to_owned()
    }

    async fn create_secret(&self, name: &str, value: &str) -> String {
        let out = self
            .call(
                "secretsmanager.CreateSecret",
                json!({"Name": name, "SecretString": value}),
                "csi-admin",
            )
            .await;
        out["VersionId"].as_str().unwrap().to_owned()
    }

    async fn put_parameter(&self, name: &str, value: &str, type_: &str) -> u64 {
        let out = self
            .call(
                "AmazonSSM.PutParameter",
                json!({"Name": name, "Value": value, "Type": type_, "Overwrite": true}),
                "csi-admin",
            )
            .await;
        out["Version"].as_u64().unwrap()
    }
}

struct PodIdentity {
    namespace: String,
    name: String,
    uid: String,
    service_account: String,
    token: String,
}

impl PodIdentity {
    /// kubelet's volume context for this pod, with the token unless `None` is given.
    fn context(&self, token: Option<&str>, attributes: &[(&str, &str)]) -> HashMap<String, String> {
        let mut context: HashMap<String, String> = [
            ("csi.storage.k8s.io/pod.name", self.name.as_str()),
            ("csi.storage.k8s.io/pod.namespace", self.namespace.as_str()),
            ("csi.storage.k8s.io/pod.uid", self.uid.as_str()),
            (
                "csi.storage.k8s.io/serviceAccount.name",
                self.service_account.as_str(),
            ),
            ("csi.storage.k8s.io/ephemeral", "true"),
        ]
        .into_iter()
        .chain(attributes.iter().copied())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        if let Some(token) = token {
            context.insert(
                "csi.storage.k8s.io/serviceAccount.tokens".into(),
                json!({"coffer": {"token": token, "expirationTimestamp": "2999-01-01T00:00:00Z"}})
                    .to_string(),
            );
        }
        context
    }
}

/// `coffer csi` as a process of its own, logging into the suite's log directory.
struct Plugin {
    child: Child,
    socket: PathBuf,
}

impl Plugin {
    fn start(cluster: &Cluster, work: &Path, log_name: &str) -> Self {
        let socket = work.join("plugin/csi.sock");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(cluster.log_dir.join(log_name))
            .unwrap();
        let child = Command::new(&cluster.binary)
            .args(["--log-format", "json", "csi"])
            .arg("--endpoint")
            .arg(format!("unix://{}", socket.display()))
            .args(["--node-id", "e2e-node"])
            .arg("--state-dir")
            .arg(work.join("state"))
            .arg("--api-endpoint")
            .arg(&cluster.api)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        Self { child, socket }
    }

    async fn node(&self) -> NodeClient<Channel> {
        for _ in 0..400 {
            if self.socket.exists() {
                let socket = self.socket.clone();
                let channel = Endpoint::try_from("http://[::]:50051")
                    .unwrap()
                    .connect_with_connector(tower::service_fn(move |_| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(socket).await?,
                            ))
                        }
                    }))
                    .await;
                if let Ok(channel) = channel {
                    return NodeClient::new(channel);
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("coffer csi never listened on {}", self.socket.display());
    }

    /// Stops the process at once, as a crash would.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A temporary directory whose mounts are taken down even when a test fails.
struct Work(tempfile::TempDir);

impl Work {
    fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    fn target(&self, pod: &str) -> PathBuf {
        let parent = self.path().join("pods").join(pod).join("volumes");
        std::fs::create_dir_all(&parent).unwrap();
        parent.join("mount")
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        for point in mount_points() {
            if point.starts_with(self.0.path()) {
                let _ = rustix::mount::unmount(&point, rustix::mount::UnmountFlags::DETACH);
            }
        }
    }
}

fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

fn is_mounted(target: &Path) -> bool {
    mount_points().iter().any(|point| point == target)
}

fn publish_request(
    volume_id: &str,
    target: &Path,
    context: HashMap<String, String>,
) -> proto::NodePublishVolumeRequest {
    proto::NodePublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
        volume_capability: Some(proto::VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(
                volume_capability::MountVolume {
                    fs_type: String::new(),
                    mount_flags: Vec::new(),
                    volume_mount_group: String::new(),
                },
            )),
            access_mode: Some(volume_capability::AccessMode {
                mode: volume_capability::access_mode::Mode::SingleNodeWriter.into(),
            }),
        }),
        readonly: true,
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

fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

/// Waits until `path` holds `expected`; returns how long that took.
async fn until_file_is(path: &Path, expected: &str) -> Duration {
    let start = Instant::now();
    loop {
        if std::fs::read(path).ok().as_deref() == Some(expected.as_bytes()) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < REFRESH_TIMEOUT,
            "{} did not change within {REFRESH_TIMEOUT:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

#[tokio::test]
async fn a_mixed_volume_is_served_as_the_pod_and_follows_changes_while_pins_stay() {
    let cluster = cluster_or_skip!();
    let work = Work::new();
    let plugin = Plugin::start(&cluster, work.path(), "csi-mixed.log");
    let mut node = plugin.node().await;

    let db = unique("db");
    let password = cluster.plaintext("db-password");
    let first_version = cluster
        .create_secret(
            &db,
            &json!({"username": "app", "password": password}).to_string(),
        )
        .await;
    let api_key = unique("api-key");
    let key_value = cluster.plaintext("api-key");
    cluster.create_secret(&api_key, &key_value).await;
    let path = format!("/{}", unique("app"));
    let url = format!("postgres://db-1.{}/shop", unique("host"));
    cluster
        .put_parameter(&format!("{path}/url"), &url, "String")
        .await;
    let token_value = cluster.plaintext("ssm-token");
    cluster
        .put_parameter(
            &format!("{path}/nested/token"),
            &token_value,
            "SecureString",
        )
        .await;

    let objects = json!([
        {"kind": "secret", "name": db, "property": "password", "file": "db/password", "mode": "0400"},
        {"kind": "secret", "name": db, "version": first_version, "file": "db/first.json"},
        {"kind": "secret", "name": api_key, "file": "api-key"},
        {"kind": "parametersByPath", "path": path, "file": "config"},
        {"kind": "parameter", "name": format!("{path}/url"), "version": 1, "file": "url-v1"},
    ])
    .to_string();
    let templates = json!([{
        "file": "app.env",
        "mode": "0440",
        "template": format!(
            "DATABASE_URL=postgres://{{{{resolve:secretsmanager:{db}:SecretString:username}}}}:{{{{resolve:secretsmanager:{db}:SecretString:password}}}}@db\nURL={{{{resolve:ssm:{path}/url}}}}\n"
        ),
    }])
    .to_string();
    let pod = cluster.pod_token("web-mixed", "csi-app").await;
    let target = work.target("web-mixed");
    let request = publish_request(
        "csi-mixed",
        &target,
        pod.context(
            Some(&pod.token),
            &[("objects", &objects), ("templates", &templates)],
        ),
    );
    node.node_publish_volume(request.clone()).await.unwrap();

    assert!(is_mounted(&target));
    assert_eq!(read(&target.join("db/password")), password);
    let mode = |name: &str| {
        std::fs::metadata(target.join(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("db/password"), 0o400);
    assert_eq!(mode("app.env"), 0o440);
    assert_eq!(mode("api-key"), 0o644);
    assert_eq!(read(&target.join("api-key")), key_value);
    assert_eq!(read(&target.join("config/url")), url);
    assert_eq!(read(&target.join("config/nested/token")), token_value);
    assert_eq!(read(&target.join("url-v1")), url);
    assert_eq!(
        read(&target.join("app.env")),
        format!("DATABASE_URL=postgres://app:{password}@db\nURL={url}\n")
    );
    let first: Value = serde_json::from_str(&read(&target.join("db/first.json"))).unwrap();
    assert_eq!(first["password"], password.as_str());
    let data = std::fs::read_link(target.join("..data")).unwrap();
    assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
    assert_eq!(
        std::fs::read_link(target.join("api-key")).unwrap(),
        Path::new("..data/api-key")
    );

    // Publishing again (kubelet retries, requiresRepublish) mounts nothing more.
    node.node_publish_volume(request.clone()).await.unwrap();
    let mounts = mount_points().iter().filter(|p| **p == target).count();
    assert_eq!(mounts, 1);

    // A new AWSCURRENT reaches the files; the pinned version stays.
    let new_password = cluster.plaintext("db-password-2");
    cluster
        .put_secret(
            &db,
            &json!({"username": "app", "password": new_password}).to_string(),
        )
        .await;
    until_file_is(&target.join("db/password"), &new_password).await;
    until_file_is(
        &target.join("app.env"),
        &format!("DATABASE_URL=postgres://app:{new_password}@db\nURL={url}\n"),
    )
    .await;
    let first: Value = serde_json::from_str(&read(&target.join("db/first.json"))).unwrap();
    assert_eq!(
        first["password"],
        password.as_str(),
        "a pinned version moved"
    );

    // A PutParameter too; version 1 stays pinned.
    let new_url = format!("postgres://db-2.{}/shop", unique("host"));
    cluster
        .put_parameter(&format!("{path}/url"), &new_url, "String")
        .await;
    until_file_is(&target.join("config/url"), &new_url).await;
    until_file_is(
        &target.join("app.env"),
        &format!("DATABASE_URL=postgres://app:{new_password}@db\nURL={new_url}\n"),
    )
    .await;
    assert_eq!(read(&target.join("url-v1")), url, "a pinned version moved");

    // Unpublish, twice: both succeed and nothing stays.
    node.node_unpublish_volume(unpublish_request("csi-mixed", &target))
        .await
        .unwrap();
    assert!(!is_mounted(&target));
    assert!(!target.exists());
    node.node_unpublish_volume(unpublish_request("csi-mixed", &target))
        .await
        .unwrap();
    plugin.kill();
}

/// Publishes a volume that must be refused; checks that nothing stays mounted.
async fn refused(
    node: &mut NodeClient<Channel>,
    work: &Work,
    volume: &str,
    context: HashMap<String, String>,
) -> tonic::Status {
    let target = work.target(volume);
    let status = node
        .node_publish_volume(publish_request(volume, &target, context))
        .await
        .unwrap_err();
    assert!(
        !is_mounted(&target),
        "{volume}: a refused volume stayed mounted"
    );
    assert!(
        !status.message().contains("e2e-plain-"),
        "an error named a value: {}",
        status.message()
    );
    status
}

#[tokio::test]
async fn refusals_leave_nothing_mounted_and_name_no_value() {
    let cluster = cluster_or_skip!();
    let work = Work::new();
    let plugin = Plugin::start(&cluster, work.path(), "csi-refusals.log");
    let mut node = plugin.node().await;
    let secret = unique("guarded");
    let value = cluster.plaintext("guarded");
    cluster.create_secret(&secret, &value).await;
    let app = cluster.pod_token("web-refused", "csi-app").await;
    let nobody = cluster.pod_token("nobody", "csi-nobody").await;
    let objects =
        |file: &str| json!([{"kind": "secret", "name": secret, "file": file}]).to_string();

    for bad in [
        "../escape",
        "/etc/passwd",
        "a/../../b",
        "..data/x",
        "a\u{0}b",
    ] {
        let status = refused(
            &mut node,
            &work,
            &unique("traversal"),
            app.context(Some(&app.token), &[("objects", &objects(bad))]),
        )
        .await;
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
    }
    let long = "x".repeat(300);
    let status = refused(
        &mut node,
        &work,
        &unique("long"),
        app.context(Some(&app.token), &[("objects", &objects(&long))]),
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument);

    // No token: refused, never read with the plugin's own identity.
    let status = refused(
        &mut node,
        &work,
        &unique("no-token"),
        app.context(None, &[("objects", &objects("value"))]),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // Foreign tokens, which the API itself would accept: another ServiceAccount's (one that
    // may read the secret), and the same ServiceAccount's bound to another pod.
    let admin = cluster.pod_token("admin-pod", "csi-admin").await;
    let sibling = cluster.pod_token("web-sibling", "csi-app").await;
    for foreign in [&admin.token, &sibling.token] {
        let status = refused(
            &mut node,
            &work,
            &unique("foreign"),
            app.context(Some(foreign), &[("objects", &objects("value"))]),
        )
        .await;
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }

    // A ServiceAccount without `get`: the API's own refusal, naming the secret.
    let status = refused(
        &mut node,
        &work,
        &unique("nobody"),
        nobody.context(Some(&nobody.token), &[("objects", &objects("value"))]),
    )
    .await;
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains(&secret), "{}", status.message());

    // One missing object fails the whole volume.
    let missing = json!([
        {"kind": "secret", "name": secret, "file": "value"},
        {"kind": "secret", "name": unique("missing"), "file": "missing"},
    ])
    .to_string();
    let status = refused(
        &mut node,
        &work,
        &unique("missing"),
        app.context(Some(&app.token), &[("objects", &missing)]),
    )
    .await;
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    assert!(!status.message().contains(&value));
    plugin.kill();
}

#[tokio::test]
async fn a_restarted_plugin_takes_its_volumes_back_and_keeps_them_current() {
    let cluster = cluster_or_skip!();
    let work = Work::new();
    let plugin = Plugin::start(&cluster, work.path(), "csi-restart.log");
    let mut node = plugin.node().await;
    let secret = unique("rotating");
    let value = cluster.plaintext("rotating-1");
    cluster.create_secret(&secret, &value).await;
    let pod = cluster.pod_token("web-restart", "csi-app").await;
    let objects = json!([{"kind": "secret", "name": secret, "file": "value"}]).to_string();
    let target = work.target("web-restart");
    node.node_publish_volume(publish_request(
        "csi-restart",
        &target,
        pod.context(Some(&pod.token), &[("objects", &objects)]),
    ))
    .await
    .unwrap();
    assert_eq!(read(&target.join("value")), value);

    plugin.kill();
    let plugin = Plugin::start(&cluster, work.path(), "csi-restart.log");
    let mut node = plugin.node().await;
    assert!(is_mounted(&target), "the volume went with the plugin");
    let next = cluster.plaintext("rotating-2");
    cluster.put_secret(&secret, &next).await;
    until_file_is(&target.join("value"), &next).await;

    node.node_unpublish_volume(unpublish_request("csi-restart", &target))
        .await
        .unwrap();
    assert!(!is_mounted(&target));
    plugin.kill();
}
