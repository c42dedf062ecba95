//! Shared by `tests/csi_cluster.rs` and `benches/csi.rs`: a real controller and API server named
//! by the environment, pod-bound tokens from TokenRequest, `coffer csi` as a process of its own,
//! and kubelet's requests.

#![allow(dead_code)]

#[path = "unix_channel.rs"]
mod unix_channel;

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffer::csi::proto::node_client::NodeClient;
use coffer::csi::proto::{self, volume_capability};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

use tonic::transport::Channel;

/// How long a change may take to reach a file before the test fails. The figure that matters
/// (p99 within 1 s) is measured by the benchmark, not asserted here.
pub const REFRESH_TIMEOUT: Duration = Duration::from_secs(15);

pub struct Cluster {
    pub namespace: String,
    pub api: String,
    pub binary: PathBuf,
    pub plaintexts: PathBuf,
    pub log_dir: PathBuf,
    pub client: kube::Client,
    pub http: reqwest::Client,
}

#[macro_export]
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
    pub async fn from_env() -> Option<Self> {
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
    pub fn plaintext(&self, what: &str) -> String {
        let value = format!("e2e-plain-{what}-{}", uuid::Uuid::new_v4().simple());
        self.remember_plaintext(&value);
        value
    }

    /// Registers a value made elsewhere (a rotation's) for the suite's scans.
    pub fn remember_plaintext(&self, value: &str) {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.plaintexts)
            .unwrap();
        writeln!(file, "{value}").unwrap();
    }

    /// A pod of `service_account` (it never runs: there is no kubelet) and a token bound to
    /// it, as kubelet gets one for the CSIDriver's tokenRequests.
    pub async fn pod_token(&self, pod: &str, service_account: &str) -> PodIdentity {
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

    pub async fn token_for(&self, service_account: &str, pod: Option<(&str, &str)>) -> String {
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
    pub async fn call(&self, target: &str, body: Value, service_account: &str) -> Value {
        let token = self.token_for(service_account, None).await;
        self.call_with(&token, target, body).await
    }

    /// One call of the AWS JSON API with `token`, which must succeed.
    pub async fn call_with(&self, token: &str, target: &str, body: Value) -> Value {
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

    pub async fn put_secret(&self, name: &str, value: &str) -> String {
        let out = self
            .call(
                "secretsmanager.PutSecretValue",
                json!({"SecretId": name, "SecretString": value}),
                "csi-admin",
            )
            .await;
        out["VersionId"].as_str().unwrap().to_owned()
    }

    pub async fn create_secret(&self, name: &str, value: &str) -> String {
        let out = self
            .call(
                "secretsmanager.CreateSecret",
                json!({"Name": name, "SecretString": value}),
                "csi-admin",
            )
            .await;
        out["VersionId"].as_str().unwrap().to_owned()
    }

    pub async fn put_parameter(&self, name: &str, value: &str, type_: &str) -> u64 {
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

pub struct PodIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub service_account: String,
    pub token: String,
}

impl PodIdentity {
    /// kubelet's volume context for this pod, with the token unless `None` is given.
    pub fn context(
        &self,
        token: Option<&str>,
        attributes: &[(&str, &str)],
    ) -> HashMap<String, String> {
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
pub struct Plugin {
    pub child: Child,
    pub socket: PathBuf,
}

impl Plugin {
    pub fn start(cluster: &Cluster, work: &Path, log_name: &str) -> Self {
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

    pub async fn node(&self) -> NodeClient<Channel> {
        NodeClient::new(unix_channel::connect(&self.socket).await)
    }

    /// Stops the process at once, as a crash would.
    pub fn kill(mut self) {
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
pub struct Work(tempfile::TempDir);

impl Work {
    pub fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn target(&self, pod: &str) -> PathBuf {
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

pub fn mount_points() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|line| line.split(' ').nth(4).map(PathBuf::from))
        .collect()
}

pub fn is_mounted(target: &Path) -> bool {
    mount_points().iter().any(|point| point == target)
}

pub fn publish_request(
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

pub fn unpublish_request(volume_id: &str, target: &Path) -> proto::NodeUnpublishVolumeRequest {
    proto::NodeUnpublishVolumeRequest {
        volume_id: volume_id.into(),
        target_path: target.display().to_string(),
    }
}

pub fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

/// Waits until `path` holds `expected`; returns how long that took.
pub async fn until_file_is(path: &Path, expected: &str) -> Duration {
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

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}
