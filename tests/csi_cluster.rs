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

#[path = "support/csi_cluster.rs"]
mod support;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use coffer::csi::proto::node_client::NodeClient;
use serde_json::{Value, json};
use support::*;
use tonic::Code;
use tonic::transport::Channel;

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

#[tokio::test]
async fn a_rotation_reaches_the_files_and_previous_keeps_the_old_value() {
    let cluster = cluster_or_skip!();
    let work = Work::new();
    let plugin = Plugin::start(&cluster, work.path(), "csi-rotation.log");
    let mut node = plugin.node().await;

    let name = unique("rotated");
    let first = cluster.plaintext("rotated-1");
    cluster.create_secret(&name, &first).await;
    let second = cluster.plaintext("rotated-2");
    cluster.put_secret(&name, &second).await;
    let objects = json!([
        {"kind": "secret", "name": name, "file": "current"},
        {"kind": "secret", "name": name, "stage": "AWSPREVIOUS", "file": "previous"},
    ])
    .to_string();
    let pod = cluster.pod_token("web-rotation", "csi-app").await;
    let target = work.target("web-rotation");
    node.node_publish_volume(publish_request(
        "csi-rotation",
        &target,
        pod.context(Some(&pod.token), &[("objects", &objects)]),
    ))
    .await
    .unwrap();
    assert_eq!(read(&target.join("current")), second);
    assert_eq!(read(&target.join("previous")), first);

    for rotation in 1..=2 {
        let before = read(&target.join("current"));
        let started = std::time::Instant::now();
        let token = cluster
            .call(
                "secretsmanager.RotateSecret",
                json!({"SecretId": name}),
                "csi-admin",
            )
            .await["VersionId"]
            .as_str()
            .unwrap()
            .to_owned();
        // The generated value is not known in advance: wait for the version to become current,
        // then for the file to hold it.
        let rotated = loop {
            let value = cluster
                .call(
                    "secretsmanager.GetSecretValue",
                    json!({"SecretId": name}),
                    "csi-admin",
                )
                .await;
            if value["VersionId"] == token.as_str() {
                break value["SecretString"].as_str().unwrap().to_owned();
            }
            assert!(
                started.elapsed() < std::time::Duration::from_secs(60),
                "rotation {rotation} did not finish"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let finished = started.elapsed();
        cluster.remember_plaintext(&rotated);
        let to_file = until_file_is(&target.join("current"), &rotated).await;
        // AWSPREVIOUS follows: it is the value that was current before this rotation.
        until_file_is(&target.join("previous"), &before).await;
        println!(
            "[figure] rotation {rotation}: RotateSecret to CURRENT moved {finished:?}; to the file {:?} more",
            to_file
        );
    }
    node.node_unpublish_volume(unpublish_request("csi-rotation", &target))
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
