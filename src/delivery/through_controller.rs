//! Volumes read from a whole `coffer controller` (its API over a fake Kubernetes API server that
//! reviews tokens and access): the requests [`super::ApiContent`] sends are the ones Coffer's
//! own front end answers, and RBAC decides what a pod's volume may hold.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

use super::{ApiContent, ContentError, ContentSource, PodInfo, PodToken};
use crate::controller::{ControllerConfig, RootKeySource, run_with_client};
use crate::test_support::fake_api::FakeApi;
use crate::test_support::tokens::service_account_token;

fn free_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn config(listen: SocketAddr, probe_listen: SocketAddr) -> ControllerConfig {
    ControllerConfig {
        listen,
        probe_listen,
        tls: None,
        namespace: "coffer-system".into(),
        root_key: RootKeySource::Kubernetes {
            secret: "coffer-root-key".into(),
        },
        region: "us-east-1".into(),
        lease_name: "coffer-controller".into(),
        identity: "replica-1".into(),
        audience: "coffer".into(),
        credentials_lifetime: Duration::from_secs(3600),
        throttle_per_second: 0,
        throttle_burst: 0,
        audit_log: "off".into(),
        parameter_webhook: None,
        parameter_webhook_secret_file: None,
        rotation: Default::default(),
        restart_debounce: None,
        front_door: Default::default(),
    }
}

async fn call(api: SocketAddr, token: &str, target: &str, body: Value) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{api}/"))
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amz-target", target)
        .header("authorization", format!("Bearer {token}"))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(status, 200, "{target}: {answer}");
    answer
}

fn pod() -> PodInfo {
    PodInfo {
        namespace: "app".into(),
        name: "web-0".into(),
        uid: "uid".into(),
        service_account: "web".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_holds_what_the_pods_service_account_may_read() {
    let (client, fake) = FakeApi::start();
    let writer = service_account_token("writer");
    let web = service_account_token("web");
    let nobody = service_account_token("nobody");
    fake.accept_token(&writer, "app", "writer");
    fake.accept_token(&web, "app", "web");
    fake.accept_token(&nobody, "app", "nobody");
    for verb in ["get", "list", "create", "update", "patch"] {
        fake.grant("app", "writer", verb, "*");
    }
    fake.grant("app", "web", "get", "*");

    let (api, probes) = (free_port(), free_port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(run_with_client(config(api, probes), client, async move {
        let _ = stopped.await;
    }));
    let mut ready = false;
    for _ in 0..400 {
        let answer = reqwest::get(format!("http://{probes}/readyz")).await;
        if answer.is_ok_and(|response| response.status().as_u16() == 200) {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the controller never became ready");

    // Written by another ServiceAccount, as an application's deployment would.
    let first = json!({"username": "admin", "password": "pw-1"}).to_string();
    let second = json!({"username": "admin", "password": "pw-2"}).to_string();
    call(
        api,
        &writer,
        "secretsmanager.CreateSecret",
        json!({"Name": "app/db", "SecretString": first}),
    )
    .await;
    call(
        api,
        &writer,
        "secretsmanager.PutSecretValue",
        json!({"SecretId": "app/db", "SecretString": second}),
    )
    .await;
    for (name, value, kind) in [
        ("/web/url", "https://one", "String"),
        ("/web/url", "https://two", "String"),
        ("/web/conf/a", "1", "String"),
        ("/web/conf/b/c", "2", "SecureString"),
        ("/web/conf/d", "3", "String"),
    ] {
        call(
            api,
            &writer,
            "AmazonSSM.PutParameter",
            json!({"Name": name, "Value": value, "Type": kind, "Overwrite": true}),
        )
        .await;
    }

    let content = ApiContent::new(&format!("http://{api}"), None).unwrap();
    let objects = r#"
- {kind: secret, name: app/db, property: password, file: password}
- {kind: secret, name: app/db, stage: AWSPREVIOUS, property: password, file: previous}
- {kind: parameter, name: /web/url, file: url}
- {kind: parameter, name: /web/url, version: 1, file: url-1}
- {kind: parametersByPath, path: /web/conf, file: conf}
"#;
    let templates = "- {file: env, template: \"PW={{resolve:secretsmanager:app/db:SecretString:password}} URL={{resolve:ssm:/web/url:1}}\"}";
    let attributes: BTreeMap<String, String> = [("objects", objects), ("templates", templates)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let files = content
        .files(&attributes, &pod(), &PodToken::new(web.clone(), None))
        .await
        .unwrap();
    let files: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            (
                f.path.clone(),
                String::from_utf8(f.contents.expose().to_vec()).unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("password", "pw-2"),
        ("previous", "pw-1"),
        ("url", "https://two"),
        ("url-1", "https://one"),
        ("conf/a", "1"),
        ("conf/b/c", "2"),
        ("conf/d", "3"),
        ("env", "PW=pw-2 URL=https://one"),
    ]
    .into_iter()
    .map(|(p, c)| (p.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(files, expected);

    // A ServiceAccount without `get` gets nothing, and is told which object it may not read.
    let err = content
        .files(&attributes, &pod(), &PodToken::new(nobody, None))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ContentError::PermissionDenied(m) if m.ends_with("access denied")),
        "{err:?}"
    );

    stop.send(()).unwrap();
    running.await.unwrap().unwrap();
}
