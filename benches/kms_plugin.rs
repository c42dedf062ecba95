//! `make bench`, KMS plugin part: `Encrypt` and `Decrypt` calls per second that `coffer
//! kms-plugin` answers over its Unix socket, as kube-apiserver calls them.
//!
//! The release binary runs as `coffer kms-plugin` in its own process on a fresh data directory.
//! C clients (`BENCH_CONNECTIONS`, default 16), each on its own connection, send their next call
//! as soon as the previous answer arrives, for `BENCH_SECONDS` (default 10) per operation. The
//! plaintext is 32 bytes: the data key seed kube-apiserver seals. Decrypt opens blobs made before
//! the clock starts. Output: a table, then the figures as one JSON object on the last line.

// A load tool run by hand (`make bench`): a failure ends the run with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coffer::kms_plugin::proto::key_management_service_client::KeyManagementServiceClient;
use coffer::kms_plugin::proto::{DecryptRequest, EncryptRequest};
use common::{client_runtime, env_number, server_binary};
use serde_json::json;

#[path = "../tests/support/unix_channel.rs"]
mod unix_channel;

type Client = KeyManagementServiceClient<tonic::transport::Channel>;

/// The size of what kube-apiserver asks to seal: a 32-byte seed.
const PLAINTEXT_LEN: usize = 32;
const BLOBS: usize = 256;

async fn connect(socket: PathBuf) -> Client {
    KeyManagementServiceClient::new(unix_channel::connect(&socket).await)
}

#[derive(Clone, Copy)]
enum Operation {
    Encrypt,
    Decrypt,
}

/// Runs `clients` closed loops of `operation` for `seconds`; answers calls/s and the sorted
/// latencies.
async fn phase(
    socket: &Path,
    operation: Operation,
    clients: usize,
    seconds: u64,
    blobs: &[Vec<u8>],
) -> (f64, Vec<Duration>) {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for index in 0..clients {
        let mut client = connect(socket.to_path_buf()).await;
        let blobs = blobs.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut next = index;
            while Instant::now() < deadline {
                let call = Instant::now();
                match operation {
                    Operation::Encrypt => {
                        client
                            .encrypt(EncryptRequest {
                                plaintext: vec![7; PLAINTEXT_LEN],
                                uid: String::new(),
                            })
                            .await
                            .expect("Encrypt failed");
                    }
                    Operation::Decrypt => {
                        next = (next + 1) % blobs.len();
                        client
                            .decrypt(DecryptRequest {
                                ciphertext: blobs[next].clone(),
                                uid: String::new(),
                                key_id: String::new(),
                                annotations: Default::default(),
                            })
                            .await
                            .expect("Decrypt failed");
                    }
                }
                latencies.push(call.elapsed());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    (all.len() as f64 / elapsed, all)
}

fn percentile(sorted: &[Duration], fraction: f64) -> f64 {
    let index = ((sorted.len() as f64 * fraction) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(index).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn main() {
    let clients = env_number("BENCH_CONNECTIONS", 16) as usize;
    let seconds = env_number("BENCH_SECONDS", 10);
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("kms.sock");
    let mut plugin = Command::new(server_binary())
        .args(["kms-plugin", "--socket"])
        .arg(&socket)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start coffer kms-plugin");
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "kms-plugin did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (runtime, client_threads) = client_runtime();
    let figures = runtime.block_on(async {
        let mut client = connect(socket.clone()).await;
        let mut blobs = Vec::new();
        for index in 0..BLOBS {
            let sealed = client
                .encrypt(EncryptRequest {
                    plaintext: vec![index as u8; PLAINTEXT_LEN],
                    uid: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            blobs.push(sealed.ciphertext);
        }
        let mut figures = Vec::new();
        for (name, operation) in [
            ("Encrypt", Operation::Encrypt),
            ("Decrypt", Operation::Decrypt),
        ] {
            let (rate, latencies) = phase(&socket, operation, clients, seconds, &blobs).await;
            figures.push((
                name,
                rate,
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
            ));
        }
        figures
    });
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(plugin.id().to_string())
        .status();
    let _ = plugin.wait();

    println!(
        "coffer kms-plugin over a Unix socket: {clients} connections, {seconds} s per operation, \
         {PLAINTEXT_LEN}-byte plaintext, {client_threads} client thread(s)"
    );
    println!(
        "{:>8} {:>12} {:>9} {:>9}",
        "", "calls/s", "p50 ms", "p99 ms"
    );
    let mut report = serde_json::Map::new();
    for (name, rate, p50, p99) in &figures {
        println!("{name:>8} {rate:>12.0} {p50:>9.3} {p99:>9.3}");
        report.insert(
            (*name).to_owned(),
            json!({"calls_per_second": rate.round(), "p50_ms": p50, "p99_ms": p99}),
        );
    }
    println!(
        "{}",
        json!({"bench": "kms_plugin", "connections": clients, "seconds": seconds, "figures": report})
    );
}
