//! `coffer controller` as a process: it refuses to start without its CRDs, and says why.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{Read as _, Write as _};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

/// An API server that knows no Coffer resource: every request gets 404 NotFound.
fn api_server_without_crds() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut request = [0u8; 8192];
            let _ = stream.read(&mut request);
            let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"the server could not find the requested resource","reason":"NotFound","code":404}"#;
            let _ = write!(
                stream,
                "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{address}")
}

#[test]
fn exits_with_a_clear_message_when_the_crds_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: test\n",
            api_server_without_crds()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "controller",
            "--insecure-http",
            "--listen",
            "127.0.0.1:0",
            "--probe-listen",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the Coffer CRDs are not installed (kmskeys.coffer.dev not found)"),
        "{stderr}"
    );
}

#[test]
fn refuses_to_serve_without_tls_unless_told_to() {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["controller"])
        .env_remove("COFFER_INSECURE_HTTP")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--insecure-http"));
}

#[test]
fn help_documents_every_flag() {
    let output = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args(["controller", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--listen",
        "--probe-listen",
        "--tls-cert",
        "--tls-key",
        "--insecure-http",
        "--namespace",
        "--root-key-provider",
        "--root-key-secret",
        "--root-key-file",
        "--region",
        "--lease-name",
        "--identity",
        "--audience",
        "--credentials-lifetime-seconds",
        "--throttle-rps",
        "--throttle-burst",
        "--audit-log",
    ] {
        assert!(help.contains(flag), "{flag} is documented");
    }
}
