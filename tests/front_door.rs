//! The front door under clients that connect and then send slowly, or nothing: the real
//! `coffer server`, real sockets. Connections that stall in their headers or their body are
//! closed by the deadlines, memory stays bounded, and connections past the cap are closed at once.

// Test code: a failed assumption is a failed test.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    address: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `coffer server` on an ephemeral port with `args`, once it says it listens.
#[allow(clippy::zombie_processes)]
fn start(data_dir: &Path, args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffer"))
        .args([
            "--log-format",
            "json",
            "server",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .args(["--audit-log", "off"])
        .args(args)
        .env_remove("COFFER_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert_ne!(stderr.read_line(&mut line).unwrap(), 0, "server exited");
        let event: serde_json::Value = serde_json::from_str(&line).unwrap();
        if event["fields"]["message"] == "coffer server listening" {
            let address = event["fields"]["address"]
                .as_str()
                .unwrap()
                .trim_start_matches("http://")
                .to_owned();
            // Keep draining the log so the server never blocks on a full pipe.
            std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
            return Server { child, address };
        }
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap()
}

/// Whether the server has closed the connection: reads (answers included) until end of file,
/// within `patience`.
fn closed_by_server(stream: &mut TcpStream, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Whether the server has closed this non-blocking connection (reading and dropping any answer).
fn closed_now(stream: &mut TcpStream) -> bool {
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) if error.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

#[test]
fn stalled_headers_and_bodies_are_closed_at_the_deadline_with_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &[
            "--header-timeout-seconds",
            "2",
            "--body-timeout-seconds",
            "2",
            "--max-unauthenticated-body-mib",
            "8",
        ],
    );
    let pid = server.child.id();
    let before = rss_kib(pid);
    let started = Instant::now();

    // 200 connections that never finish their headers.
    let mut slow_headers: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.address).unwrap();
            stream
                .write_all(
                    b"POST / HTTP/1.1\r\nHost: coffer\r\nX-Amz-Target: TrentService.Encrypt\r\n",
                )
                .unwrap();
            stream
        })
        .collect();
    // 300 that promise a 1 MiB body and send a kilobyte of it.
    let mut slow_bodies: Vec<TcpStream> = (0..300)
        .map(|_| {
            let mut stream = TcpStream::connect(&server.address).unwrap();
            stream
                .write_all(
                    b"POST / HTTP/1.1\r\nHost: coffer\r\nX-Amz-Target: TrentService.Encrypt\r\n\
                      Content-Type: application/x-amz-json-1.1\r\nContent-Length: 1048576\r\n\r\n",
                )
                .unwrap();
            stream.write_all(&[b' '; 1024]).unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let during = rss_kib(pid);

    // Every one is closed by the server within the deadline (2 s) and a margin; polled
    // together so each closing time is seen when it happens.
    let mut open: Vec<(&str, usize, TcpStream)> = slow_headers
        .drain(..)
        .enumerate()
        .map(|(index, stream)| ("headers", index, stream))
        .chain(
            slow_bodies
                .drain(..)
                .enumerate()
                .map(|(index, stream)| ("bodies", index, stream)),
        )
        .collect();
    for (_, _, stream) in &open {
        stream.set_nonblocking(true).unwrap();
    }
    let mut first_closed = None;
    while !open.is_empty() && started.elapsed() < Duration::from_secs(8) {
        open.retain_mut(|(_, _, stream)| !closed_now(stream));
        if first_closed.is_none() && open.len() < 500 {
            first_closed = Some(started.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let closed_after = started.elapsed();
    if let Some((kind, index, _)) = open.first() {
        panic!(
            "{} stalled connections still open after {closed_after:?}, the first a stalled {kind} \
             connection ({index})",
            open.len()
        );
    }
    let after = rss_kib(pid);
    // The bound: 500 stalled connections and their bodies cost the server under 64 MiB.
    assert!(
        during.saturating_sub(before) < 64 * 1024 && after.saturating_sub(before) < 64 * 1024,
        "RSS grew from {before} KiB to {during} KiB while stalled, {after} KiB after"
    );
    eprintln!(
        "500 stalled connections: first closed after {first_closed:?}, all after {closed_after:?}; RSS {before} KiB before, \
         {during} KiB while stalled, {after} KiB after"
    );

    // And the server still answers.
    let mut healthy = TcpStream::connect(&server.address).unwrap();
    healthy
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: coffer\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    healthy.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn connections_past_the_cap_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(
        dir.path(),
        &["--max-connections", "20", "--header-timeout-seconds", "30"],
    );
    let mut held: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(&server.address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut refused = TcpStream::connect(&server.address).unwrap();
    assert!(
        closed_by_server(&mut refused, Duration::from_secs(2)),
        "the 21st connection was kept"
    );
    // The first twenty are still being served: a request on one is answered.
    held[0]
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: coffer\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    held[0].read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Its slot is free again once it closes.
    drop(held.remove(0));
    std::thread::sleep(Duration::from_millis(300));
    let mut next = TcpStream::connect(&server.address).unwrap();
    next.write_all(b"GET /healthz HTTP/1.1\r\nHost: coffer\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    next.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
