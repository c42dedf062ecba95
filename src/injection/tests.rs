use serde_json::json;
use tower::ServiceExt;

use super::*;

fn pod(labels: Value, annotations: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "labels": labels, "annotations": annotations},
        "spec": {
            "initContainers": [{"name": "migrate", "image": "m"}],
            "containers": [
                {"name": "web", "image": "w",
                 "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
                {"name": "proxy", "image": "p"}
            ],
            "volumes": [{"name": "cache", "emptyDir": {}}]
        }
    }))
    .unwrap()
}

fn patched(pod: &Pod) -> Value {
    let patch = plan(pod).unwrap().expect("a patch");
    let mut object = serde_json::to_value(pod).unwrap();
    json_patch::patch(&mut object, &patch).unwrap();
    object
}

fn asking(annotations: Value) -> Pod {
    pod(json!({"coffer.dev/inject": "true"}), annotations)
}

#[test]
fn pods_that_do_not_ask_are_left_alone() {
    let plain = pod(
        json!({"app": "web"}),
        json!({"coffer.dev/inject-db": "secret/db"}),
    );
    assert!(plan(&plain).unwrap().is_none());
}

#[test]
fn adds_the_volume_and_mounts_it_in_every_container() {
    let object = patched(&asking(json!({
        "coffer.dev/inject-db": "secret/app-db#password",
        "coffer.dev/inject-url": "parameter//shop/web/url?label=prod&mode=0400",
        "coffer.dev/inject-template-app.env": "URL={{resolve:ssm:/shop/web/url}}\n",
        "unrelated": "x"
    })));
    let volumes = object["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 2);
    let volume = &volumes[1];
    assert_eq!(volume["name"], VOLUME_NAME);
    assert_eq!(volume["csi"]["driver"], "csi.coffer.dev");
    assert_eq!(volume["csi"]["readOnly"], true);
    let attributes: BTreeMap<String, String> =
        serde_json::from_value(volume["csi"]["volumeAttributes"].clone()).unwrap();
    // The CSI driver's own parser takes what was injected.
    let parsed = parse_volume_attributes(&attributes).unwrap();
    assert_eq!(parsed.outputs.len(), 3);
    let objects: Value = serde_json::from_str(&attributes["objects"]).unwrap();
    assert_eq!(
        objects,
        json!([
            {"kind": "secret", "name": "app-db", "file": "db", "property": "password"},
            {"kind": "parameter", "name": "/shop/web/url", "file": "url", "label": "prod",
             "mode": "0400"}
        ])
    );
    let templates: Value = serde_json::from_str(&attributes["templates"]).unwrap();
    assert_eq!(templates[0]["file"], "app.env");

    let mount = json!({"name": VOLUME_NAME, "mountPath": "/run/coffer", "readOnly": true});
    let web = &object["spec"]["containers"][0]["volumeMounts"];
    assert_eq!(web.as_array().unwrap().len(), 2);
    assert_eq!(web[1], mount);
    assert_eq!(
        object["spec"]["containers"][1]["volumeMounts"],
        json!([mount])
    );
    assert_eq!(
        object["spec"]["initContainers"][0]["volumeMounts"],
        json!([mount])
    );
}

#[test]
fn mount_path_and_containers_follow_their_annotations() {
    let object = patched(&asking(json!({
        "coffer.dev/inject-db": "secret/db",
        "coffer.dev/injection-mount-path": "/etc/app/secrets/",
        "coffer.dev/injection-containers": "proxy"
    })));
    assert_eq!(
        object["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        object["spec"]["containers"][1]["volumeMounts"][0]["mountPath"],
        "/etc/app/secrets"
    );
    assert!(
        object["spec"]["initContainers"][0]
            .get("volumeMounts")
            .is_none()
    );
}

#[test]
fn a_pod_without_volumes_gets_the_list_made() {
    let mut bare = asking(json!({"coffer.dev/inject-db": "secret/db"}));
    if let Some(spec) = bare.spec.as_mut() {
        spec.volumes = None;
    }
    let object = patched(&bare);
    assert_eq!(object["spec"]["volumes"].as_array().unwrap().len(), 1);
}

#[test]
fn refusals_say_why() {
    for (labels, annotations, fragment) in [
        (
            json!({"coffer.dev/inject": "true"}),
            json!({}),
            "has no coffer.dev/inject-FILE",
        ),
        (
            json!({"coffer.dev/inject": "yes"}),
            json!({"coffer.dev/inject-db": "secret/db"}),
            "must be \"true\"",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-db": "secret/db#"}),
            "annotation coffer.dev/inject-db",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-db": "vault/db"}),
            "does not begin",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-..db": "secret/db"}),
            "annotation coffer.dev/inject-..db",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-db": "secret/db?mode=0999"}),
            "annotation coffer.dev/inject-db",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-template-t": "{{resolve:kms:x}}"}),
            "annotation coffer.dev/inject-template-t",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-db": "secret/db", "coffer.dev/inject-template-db": "x"}),
            "injected files",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-db": "secret/db", "coffer.dev/injection-mount-path": "run/x"}),
            "not an absolute path",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-db": "secret/db", "coffer.dev/injection-mount-path": "/run/../etc"}),
            "mount-path",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-db": "secret/db", "coffer.dev/injection-containers": "web,ghost"}),
            "\"ghost\"",
        ),
        (
            json!({"coffer.dev/inject": "true"}),
            json!({"coffer.dev/inject-db": "secret/db", "coffer.dev/injection-mount-path": "/cache"}),
            "already mounts",
        ),
    ] {
        let err = plan(&pod(labels, annotations.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(fragment), "{annotations}: {err}");
    }
    let mut taken = asking(json!({"coffer.dev/inject-db": "secret/db"}));
    if let Some(spec) = taken.spec.as_mut() {
        spec.volumes = Some(vec![
            serde_json::from_value(json!({"name": VOLUME_NAME, "emptyDir": {}})).unwrap(),
        ]);
    }
    assert!(matches!(plan(&taken), Err(InjectionError::VolumeExists)));
}

async fn call(body: Value) -> (StatusCode, Value) {
    let request = http::Request::post(WEBHOOK_PATH)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_string()))
        .unwrap();
    let response = router().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn review_of(object: Value) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
            "dryRun": false
        }
    })
}

#[tokio::test]
async fn reviews_are_answered_with_a_patch_or_a_denial() {
    let asking =
        serde_json::to_value(asking(json!({"coffer.dev/inject-db": "secret/db"}))).unwrap();
    let (status, answer) = call(review_of(asking)).await;
    assert_eq!(status, StatusCode::OK);
    let response = &answer["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    // kube writes the patch's bytes as a JSON array, which kube-apiserver decodes as []byte.
    let bytes: Vec<u8> = serde_json::from_value(response["patch"].clone()).unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(patch.0.len(), 4, "the volume and three mounts");

    let plain = serde_json::to_value(pod(json!({}), json!({}))).unwrap();
    let (_, answer) = call(review_of(plain)).await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());

    let bad = serde_json::to_value(asking_bad()).unwrap();
    let (_, answer) = call(review_of(bad)).await;
    assert_eq!(answer["response"]["allowed"], false);
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("coffer.dev/inject-db"), "{message}");

    let (status, answer) = call(json!({"apiVersion": "v1", "kind": "Nonsense"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(answer["error"].as_str().is_some());
}

fn asking_bad() -> Pod {
    asking(json!({"coffer.dev/inject-db": "secret/"}))
}
