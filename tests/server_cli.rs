//! `coffer server` as a user runs it: the real binary, a real data directory, real signals.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Child, ChildStderr, Command, Stdio};
use std::time::Duration;

struct Running {
    child: Child,
    address: String,
    /// `/metrics` URL, or empty when the server serves none.
    metrics: String,
    credentials: String,
    stderr: BufReader<ChildStderr>,
}

fn coffer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coffer"))
}

impl Drop for Running {
    /// A test that fails half-way must not leave a server behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the server on an ephemeral port and waits for its "listening" line.
// The child is reaped by `Running`'s Drop, or by the panic's process exit in a failing test.
#[allow(clippy::zombie_processes)]
fn start(data_dir: &Path) -> Running {
    start_with(data_dir, &[])
}

#[allow(clippy::zombie_processes)]
fn start_with(data_dir: &Path, server_args: &[&str]) -> Running {
    let mut child = spawn_server_with(&["--log-format", "json"], data_dir, server_args);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(
            stderr.read_line(&mut line).unwrap(),
            0,
            "server exited before listening"
        );
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["fields"]["message"] == "coffer server listening" {
            let address = event["fields"]["address"].as_str().unwrap().to_owned();
            let credentials = event["fields"]["credentials"].as_str().unwrap().to_owned();
            let metrics = event["fields"]["metrics"].as_str().unwrap_or("").to_owned();
            return Running {
                child,
                address,
                metrics,
                credentials,
                stderr,
            };
        }
    }
}

fn terminate(mut running: Running, signal: &str) -> String {
    let status = Command::new("kill")
        .args([signal, &running.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = running.child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut running.stderr, &mut rest).unwrap();
    assert!(
        exit.success(),
        "server exited with {exit:?} after {signal}: {rest}"
    );
    rest
}

async fn healthz(address: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .get(format!("{address}/healthz"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn first_start_writes_credentials_and_restart_reuses_them() {
    let tmp = tempfile::tempdir().unwrap();
    let data_dir = tmp.path().join("data");

    let first = start_with(&data_dir, &["--metrics-listen", "127.0.0.1:0"]);
    assert_eq!(
        first.credentials,
        data_dir.join("credentials").to_str().unwrap()
    );
    assert_eq!(healthz(&first.address).await, (200, "ok\n".to_owned()));
    // An unsigned call is refused, and counted.
    let refused = reqwest::Client::new()
        .post(format!("{}/", first.address))
        .header("x-amz-target", "TrentService.ListKeys")
        .header("content-type", "application/x-amz-json-1.1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 403);
    // Metrics are served on their own listener, never on the API port.
    let on_api_port = reqwest::Client::new()
        .get(format!("{}/metrics", first.address))
        .send()
        .await
        .unwrap();
    assert_eq!(on_api_port.status().as_u16(), 404);
    assert!(first.metrics.ends_with("/metrics"), "{}", first.metrics);
    assert_ne!(first.metrics, format!("{}/metrics", first.address));
    let metrics = reqwest::Client::new()
        .get(&first.metrics)
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    let metrics = metrics.text().await.unwrap();
    assert!(
        metrics.contains("# TYPE coffer_api_calls counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("# TYPE coffer_api_call_duration_seconds histogram"),
        "{metrics}"
    );

    let credentials = std::fs::read_to_string(data_dir.join("credentials")).unwrap();
    assert!(credentials.contains("[coffer]"));
    assert!(credentials.contains("aws_access_key_id = AKIA"));
    assert!(credentials.contains("aws_secret_access_key = "));
    for file in ["credentials", "root-key.json"] {
        let mode = std::fs::metadata(data_dir.join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file} must be private");
    }
    let root_key = std::fs::read(data_dir.join("root-key.json")).unwrap();
    let stopped = terminate(first, "-TERM");
    assert!(stopped.contains("coffer server stopped"));

    let second = start(&data_dir);
    assert_eq!(second.metrics, "", "no metrics listener unless asked for");
    assert_eq!(healthz(&second.address).await.0, 200);
    assert_eq!(
        std::fs::read_to_string(data_dir.join("credentials")).unwrap(),
        credentials
    );
    assert_eq!(
        std::fs::read(data_dir.join("root-key.json")).unwrap(),
        root_key
    );
    terminate(second, "-INT");
}

#[tokio::test]
async fn the_log_never_carries_the_secret_key() {
    let tmp = tempfile::tempdir().unwrap();
    let running = start(tmp.path());
    let credentials = std::fs::read_to_string(&running.credentials).unwrap();
    let secret = credentials
        .lines()
        .find_map(|line| line.strip_prefix("aws_secret_access_key = "))
        .unwrap()
        .to_owned();
    let root_key = std::fs::read_to_string(tmp.path().join("root-key.json")).unwrap();
    let log = terminate(running, "-TERM");
    assert!(!log.contains(&secret));
    let root: serde_json::Value = serde_json::from_str(&root_key).unwrap();
    for material in root["keys"].as_object().unwrap().values() {
        assert!(!log.contains(material.as_str().unwrap()));
    }
}

#[test]
fn a_busy_port_fails_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = coffer()
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    let errors: Vec<_> = stderr
        .lines()
        .filter(|line| line.contains("error"))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{stderr}"
    );
}

#[test]
fn an_unusable_data_dir_fails_with_one_clear_line() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let output = coffer()
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(file.join("data"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("coffer: error: cannot use data directory"),
        "{stderr}"
    );
}

#[test]
fn a_parameter_webhook_must_be_https_or_loopback_and_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let secret = tmp.path().join("secret");
    std::fs::write(&secret, b"shh\n").unwrap();
    let secret = secret.to_str().unwrap();
    for (args, expected) in [
        (
            vec!["--parameter-webhook", "http://example.com/hook"],
            "must be an https:// URL, or http:// to a loopback address",
        ),
        (
            vec!["--parameter-webhook", "https://example.com/hook"],
            "--parameter-webhook needs --parameter-webhook-secret-file",
        ),
        (
            vec![
                "--parameter-webhook",
                "http://127.0.0.1:1/hook",
                "--parameter-webhook-secret-file",
                "/nonexistent/secret",
            ],
            "cannot read the parameter webhook secret",
        ),
    ] {
        let output = coffer()
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data"))
            .args(&args)
            .output()
            .unwrap();
        assert!(!output.status.success());
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
    // With a loopback URL and a secret, the server starts.
    let running = start_with(
        &tmp.path().join("data"),
        &[
            "--parameter-webhook",
            "http://127.0.0.1:1/hook",
            "--parameter-webhook-secret-file",
            secret,
        ],
    );
    terminate(running, "-TERM");
}

#[test]
fn bad_flags_fail_with_usage() {
    let output = coffer()
        .args(["server", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("error: invalid value 'not-an-address'"),
        "{stderr}"
    );

    let output = coffer()
        .args(["server", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

/// `coffer GLOBAL_ARGS server` on an ephemeral port, stderr piped, logging settings of the
/// calling environment removed.
fn spawn_server(global_args: &[&str], data_dir: &Path) -> Child {
    spawn_server_with(global_args, data_dir, &[])
}

fn spawn_server_with(global_args: &[&str], data_dir: &Path, server_args: &[&str]) -> Child {
    coffer()
        .args(global_args)
        .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(server_args)
        .env_remove("COFFER_LOG")
        .env_remove("COFFER_LOG_FORMAT")
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Starts the server with `global_args`; returns its stderr after SIGTERM. The listening line
/// is waited for, so the log holds at least that and the stopping line.
fn log_of_a_short_run(global_args: &[&str], data_dir: &Path) -> String {
    let mut child = spawn_server(global_args, data_dir);
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    while !log.contains("coffer server listening") {
        assert_ne!(
            stderr.read_line(&mut log).unwrap(),
            0,
            "server exited: {log}"
        );
    }
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::io::Read::read_to_string(&mut stderr, &mut log).unwrap();
    assert!(child.wait().unwrap().success(), "{log}");
    log
}

#[test]
fn text_logs_to_a_pipe_carry_no_terminal_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_of_a_short_run(&[], tmp.path());
    assert!(log.lines().count() >= 2, "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape codes in a piped log: {log:?}"
    );
    assert!(log.contains("coffer server listening"), "{log}");
}

#[test]
fn json_logs_are_one_object_per_line_without_escapes() {
    let tmp = tempfile::tempdir().unwrap();
    let log = log_of_a_short_run(&["--log-format", "json"], tmp.path());
    assert!(!log.contains('\u{1b}'), "{log:?}");
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let event: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line:?}"));
        assert!(event.is_object(), "{line}");
        assert!(event["fields"]["message"].is_string(), "{line}");
    }
}
