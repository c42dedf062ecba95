//! The node plugin's volumes with the real content source, `delivery::ApiContent`, reading
//! from a stand-in of the AWS API over HTTP: what a pod's volume shows follows its objects.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::feed::Notice;
use super::request::Publish;
use super::state::StateDir;
use super::volumes::{VolumeSettings, Volumes};
use crate::delivery::test_api;
use crate::delivery::{ApiContent, PodInfo, PodToken};

/// Takes the tmpfs down even when the test fails.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

#[tokio::test]
async fn a_volume_read_through_the_api_follows_its_objects() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("SKIPPED: this test mounts tmpfs and needs root; run the tests as root");
        return;
    }
    let api = test_api::sample();
    let endpoint = test_api::serve(api.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let volumes = Volumes::new(
        Arc::new(ApiContent::new(&endpoint, None).unwrap()),
        StateDir::open(&dir.path().join("state")).unwrap(),
        VolumeSettings {
            size_bytes: 1024 * 1024,
            audience: "coffer".into(),
        },
    );
    let target = dir.path().join("mount");
    let _unmount = Unmount(target.clone());
    let objects = "\
- {kind: secret, name: app/db, file: db/password, property: password, mode: \"0400\"}
- {kind: parameter, name: /app/url, file: url}
";
    let publish = || Publish {
        volume_id: "csi-api".into(),
        target: target.clone(),
        mount_group: None,
        attributes: BTreeMap::from([("objects".to_string(), objects.to_string())]),
        pod: PodInfo {
            namespace: "team".into(),
            name: "web-0".into(),
            uid: "uid".into(),
            service_account: "web".into(),
        },
        token: PodToken::new(test_api::TOKEN.into(), None),
    };
    volumes.publish(publish()).await.unwrap();
    assert_eq!(read(&target.join("db/password")), "pw-1");
    let mode = std::fs::metadata(target.join("db/password"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o400);
    assert_eq!(read(&target.join("url")), "https://db.local");

    // The parameter changes; a notice from another namespace refreshes nothing.
    api.lock().unwrap().parameters.insert(
        "/app/url".into(),
        ("/app/url".into(), "https://new.local".into(), 4),
    );
    volumes
        .refresh_matching(&Notice::Parameter {
            namespace: "other".into(),
            name: "/app/url".into(),
        })
        .await;
    assert_eq!(read(&target.join("url")), "https://db.local");
    volumes
        .refresh_matching(&Notice::Parameter {
            namespace: "team".into(),
            name: "/app/url".into(),
        })
        .await;
    assert_eq!(read(&target.join("url")), "https://new.local");

    // The secret rotates: its notice, by name, brings the new value.
    let rotated = serde_json::json!({"password": "pw-2"}).to_string();
    api.lock().unwrap().secrets.insert(
        ("app/db".into(), "AWSCURRENT".into()),
        ("v3".into(), serde_json::Value::String(rotated)),
    );
    volumes
        .refresh_matching(&Notice::Secret {
            namespace: "team".into(),
            name: "app/db".into(),
            arn: None,
        })
        .await;
    assert_eq!(read(&target.join("db/password")), "pw-2");

    // A token the API refuses fails the republish and leaves the files alone.
    let mut refused = publish();
    refused.token = PodToken::new("not-the-token".into(), None);
    let err = volumes.publish(refused).await.unwrap_err().to_string();
    assert!(err.contains("/app/url") || err.contains("app/db"), "{err}");
    assert!(
        !err.contains("not-the-token") && !err.contains("pw-2"),
        "{err}"
    );
    assert_eq!(read(&target.join("db/password")), "pw-2");

    volumes.unpublish("csi-api", &target).await.unwrap();
    assert!(!target.exists());
}
