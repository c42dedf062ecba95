//! The load harness `make bench` shares between its benches (`benches/kms.rs`,
//! `benches/secretsmanager.rs`, `benches/ssm.rs`): run settings, the machine's description, a
//! `coffer server` child process, SigV4 pre-signing, the wrk-style keep-alive HTTP/1.1 client,
//! the closed-loop phase runner with its latency histogram, CPU accounting from `/proc`, moto's
//! standalone server as the baseline, a bench's run of the same workloads on coffer and on moto
//! with the parts of its report they share, and the closing lines of every report.
//!
//! Each bench includes this file as its own module, so an item one of them does not use is not
//! dead code.
#![allow(dead_code)]

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead as _, BufReader};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    PayloadChecksumKind, SignableBody, SignableRequest, SigningSettings, sign,
};
use aws_sigv4::sign::v4;
use hdrhistogram::Histogram;
use http::header::CONTENT_LENGTH;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use rand::Rng as _;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Load before measuring, so connections, caches and allocators are warm.
pub const WARM_UP: Duration = Duration::from_secs(2);
/// Pre-signed requests expire 15 minutes after signing; stay well inside that.
pub const MAX_SECONDS: u64 = 240;

pub const REGION: &str = "us-east-1";
pub const JSON_CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The profile the server writes into its credentials file.
pub const PROFILE: &str = "coffer";
/// How long the server gets to start listening, and to exit after SIGTERM.
pub const SERVER_START_TIMEOUT: Duration = Duration::from_secs(30);
pub const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Cores used by other processes above which the HTTP figures are flagged as disturbed.
pub const OTHER_LOAD_WARNING: f64 = 0.2;

/// Run settings, from the environment.
#[derive(Clone, Copy)]
pub struct Config {
    pub connections: usize,
    pub seconds: u64,
}

impl Config {
    pub fn from_env() -> Self {
        let connections = env_number("BENCH_CONNECTIONS", 64);
        let seconds = env_number("BENCH_SECONDS", 10);
        assert!(connections > 0, "BENCH_CONNECTIONS must be at least 1");
        assert!(
            (1..=MAX_SECONDS).contains(&seconds),
            "BENCH_SECONDS must be 1 to {MAX_SECONDS}: the pre-signed requests expire after 15 minutes"
        );
        Self {
            connections: usize::try_from(connections).expect("BENCH_CONNECTIONS fits in usize"),
            seconds,
        }
    }
}

pub fn env_number(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a whole number, got {text:?}")),
        Err(_) => default,
    }
}

/// What the figures ran on. The load generator and the server share these cores, so the HTTP
/// figures include the client's own CPU cost.
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub aes_instructions: bool,
    pub load_at_start: String,
}

impl Machine {
    pub fn probe() -> Self {
        let nproc = Command::new("nproc")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or_else(|| thread::available_parallelism().map_or(1, |n| n.get()));
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_owned(),
                |(_, model)| model.trim().to_owned(),
            );
        let aes_instructions = cpuinfo
            .lines()
            .find(|line| line.starts_with("flags"))
            .is_some_and(|flags| flags.split_whitespace().any(|flag| flag == "aes"));
        Self {
            nproc,
            cpu_model,
            aes_instructions,
            load_at_start: read_loadavg(),
        }
    }
}

impl Machine {
    /// The "Machine" section of a report.
    pub fn print(&self, load_at_end: &str, client_threads: usize) {
        println!();
        println!("Machine");
        println!(
            "  nproc: {}   CPU: {}   AES instructions: {}",
            self.nproc,
            self.cpu_model,
            if self.aes_instructions { "yes" } else { "no" }
        );
        println!(
            "  load average (1/5/15 min): {} at start, {} at end",
            self.load_at_start, load_at_end
        );
        println!(
            "  The load generator ({} tokio threads) and the server share these {} cores, so the HTTP",
            client_threads, self.nproc
        );
        println!("  figures include the client's own CPU cost.");
    }

    /// The "machine" object of a report's JSON.
    pub fn to_json(&self, load_at_end: &str, client_threads: usize) -> Value {
        json!({
            "nproc": self.nproc,
            "cpu": self.cpu_model,
            "load_average_start": self.load_at_start,
            "load_average_end": load_at_end,
            "client_threads": client_threads,
            "client_and_server_share_cores": true,
        })
    }
}

/// The 1, 5 and 15 minute load averages: other work on the machine skews every figure here.
pub fn read_loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The client's tokio runtime and its thread count. One client thread drives the connections by
/// default: it needs well under a core, and a single thread spends nothing on waking its peers.
/// `BENCH_CLIENT_THREADS` overrides it.
pub fn client_runtime() -> (tokio::runtime::Runtime, usize) {
    let client_threads = std::env::var("BENCH_CLIENT_THREADS")
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .filter(|threads| *threads > 0)
        .unwrap_or(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(client_threads)
        .enable_all()
        .build()
        .expect("cannot start the client's tokio runtime");
    (runtime, client_threads)
}

/// The release binary `make bench` builds first (or `COFFER_BIN`, to measure another build in
/// the same run); this bench builds nothing itself.
pub fn server_binary() -> PathBuf {
    if let Some(binary) = std::env::var_os("COFFER_BIN") {
        return PathBuf::from(binary);
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("target"),
        PathBuf::from,
    );
    let binary = target_dir.join("release").join("coffer");
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --release --bin coffer` first (`make bench` does)",
        binary.display()
    );
    binary
}

/// A `coffer server` child process on a fresh data directory.
pub struct Server {
    /// `Some` until the server has been stopped.
    pub child: Option<Child>,
    /// `127.0.0.1:PORT`, as the `Host` header and the signature need it.
    pub authority: String,
    pub dir: tempfile::TempDir,
    pub log: Option<thread::JoinHandle<ServerLog>>,
}

/// What the server wrote on stderr besides the line we waited for.
#[derive(Default)]
pub struct ServerLog {
    pub error_lines: usize,
    pub first_error: Option<String>,
}

pub struct Stopped {
    /// The exit status after SIGTERM, or what went wrong.
    pub outcome: String,
    /// Exited by itself with status 0 after SIGTERM.
    pub clean: bool,
    pub error_lines: usize,
    pub first_error: Option<String>,
}

impl Stopped {
    /// How the server ended, and whether that was clean.
    pub fn exit(&self) -> String {
        format!("{}{}", self.outcome, clean_mark(self.clean))
    }
}

/// Follows how a server ended: whether it exited cleanly after SIGTERM.
pub fn clean_mark(clean: bool) -> &'static str {
    if clean { " (clean)" } else { " (NOT CLEAN)" }
}

impl Server {
    pub fn start(binary: &Path) -> Self {
        let dir = tempfile::tempdir().expect("cannot create the server's data directory");
        let audit = dir.path().join("audit.log");
        let mut child = Command::new(binary)
            .args(["--log-format", "json", "server", "--data-dir"])
            .arg(dir.path())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--throttle-rps",
                "0",
                "--audit-log",
            ])
            .arg(&audit)
            .env_remove("COFFER_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let stderr = child.stderr.take().expect("stderr was piped");

        // The reader keeps draining stderr after start-up, so the server never blocks on a full
        // pipe, and counts error lines for the report.
        let (address_tx, address_rx) = mpsc::channel::<String>();
        let log = thread::spawn(move || {
            let mut log = ServerLog::default();
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    // Not JSON: a clap or start-up error printed before logging began.
                    log.error_lines += 1;
                    log.first_error.get_or_insert(line);
                    continue;
                };
                if entry["fields"]["message"] == "coffer server listening"
                    && let Some(tx) = address_tx.take()
                {
                    let address = entry["fields"]["address"].as_str().unwrap_or_default();
                    let _ = tx.send(address.to_owned());
                }
                if entry["level"] == "ERROR" {
                    log.error_lines += 1;
                    log.first_error.get_or_insert(line);
                }
            }
            log
        });

        let mut server = Self {
            child: Some(child),
            authority: String::new(),
            dir,
            log: Some(log),
        };
        match address_rx.recv_timeout(SERVER_START_TIMEOUT) {
            Ok(address) => {
                server.authority = address
                    .strip_prefix("http://")
                    .unwrap_or(&address)
                    .to_owned();
            }
            Err(_) => {
                let stopped = server.stop();
                panic!(
                    "the server did not log `coffer server listening` (waited up to {} s); server: {}; stderr: {}",
                    SERVER_START_TIMEOUT.as_secs(),
                    stopped.outcome,
                    stopped.first_error.unwrap_or_default()
                );
            }
        }
        server
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The admin access key the server wrote into `DATA_DIR/credentials` at start-up.
    pub fn credentials(&self) -> Credentials {
        let path = self.dir.path().join("credentials");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
        let section = format!("[{PROFILE}]");
        let mut in_section = false;
        let mut fields = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_section = line == section;
            } else if in_section && let Some((name, value)) = line.split_once('=') {
                fields.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
        let field = |name: &str| {
            fields
                .get(name)
                .unwrap_or_else(|| panic!("{} has no {name} in {section}", path.display()))
                .clone()
        };
        Credentials::new(
            field("aws_access_key_id"),
            field("aws_secret_access_key"),
            None,
            None,
            "coffer-bench",
        )
    }

    /// Sends SIGTERM and waits for the exit, as a service manager would.
    pub fn stop(&mut self) -> Stopped {
        let (outcome, clean) = match self.child.take() {
            None => ("already stopped".to_owned(), false),
            Some(child) => terminate(child),
        };
        let log = self
            .log
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        Stopped {
            outcome,
            clean,
            error_lines: log.error_lines,
            first_error: log.first_error,
        }
    }
}

/// SIGTERM, then up to [`SERVER_STOP_TIMEOUT`] for a clean exit; SIGKILL as a last resort.
/// Returns what happened and whether it was a clean exit.
pub fn terminate(mut child: Child) -> (String, bool) {
    if let Ok(Some(status)) = child.try_wait() {
        return (
            format!("had already exited before SIGTERM: {status}"),
            false,
        );
    }
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let outcome = match sent {
        Ok(status) if status.success() => {
            let deadline = Instant::now() + SERVER_STOP_TIMEOUT;
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => return (status.to_string(), status.success()),
                    Ok(None) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(20));
                    }
                    Ok(None) => {
                        break format!(
                            "did not exit within {} s of SIGTERM; killed",
                            SERVER_STOP_TIMEOUT.as_secs()
                        );
                    }
                    Err(err) => break format!("cannot wait for it after SIGTERM: {err}; killed"),
                }
            }
        }
        Ok(status) => format!("`kill -TERM` failed ({status}); killed"),
        Err(err) => format!("cannot run `kill`: {err}; killed"),
    };
    let _ = child.kill();
    let _ = child.wait();
    (outcome, false)
}

impl Drop for Server {
    /// A panicking bench must not leave a server running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Signs AWS JSON 1.1 requests to one service of one server with one access key.
pub struct Signer {
    pub credentials: Credentials,
    pub authority: String,
    /// The SigV4 service name: `kms`, `secretsmanager`.
    pub service: &'static str,
}

/// A request signed ahead of time, serialised once into the exact bytes that go on the wire:
/// request line, headers (`Host` with port, the SigV4 headers, `Content-Length`) and body.
pub struct Presigned {
    pub wire: Box<[u8]>,
}

impl Presigned {
    /// Serialises a signed request as HTTP/1.1, adding the `Content-Length` of its body.
    pub fn from_request(request: &Request<Vec<u8>>) -> Self {
        assert_eq!(
            request.version(),
            Version::HTTP_11,
            "requests are sent as HTTP/1.1"
        );
        assert!(
            !request.headers().contains_key(CONTENT_LENGTH),
            "Content-Length is added from the body"
        );
        let body = request.body();
        let target = request
            .uri()
            .path_and_query()
            .map_or("/", |target| target.as_str());
        let mut wire = Vec::with_capacity(1024 + body.len());
        wire.extend_from_slice(format!("{} {target} HTTP/1.1\r\n", request.method()).as_bytes());
        for (name, value) in request.headers() {
            wire.extend_from_slice(name.as_str().as_bytes());
            wire.extend_from_slice(b": ");
            wire.extend_from_slice(value.as_bytes());
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(format!("{CONTENT_LENGTH}: {}\r\n\r\n", body.len()).as_bytes());
        wire.extend_from_slice(body);
        Self {
            wire: wire.into_boxed_slice(),
        }
    }
}

impl Signer {
    pub fn new(credentials: Credentials, authority: String, service: &'static str) -> Self {
        Self {
            credentials,
            authority,
            service,
        }
    }

    /// Signs `POST /` as the AWS SDKs do for AWS JSON 1.1, plus `x-amz-content-sha256`, so that
    /// host (with port), content-type, x-amz-target, x-amz-date and the body hash are all signed.
    pub fn sign(&self, target: &str, body: String) -> Presigned {
        let body = body.into_bytes();
        let unsigned = [
            ("host", self.authority.as_str()),
            ("content-type", JSON_CONTENT_TYPE),
            ("x-amz-target", target),
        ];
        let uri = format!("http://{}/", self.authority);
        let signable = SignableRequest::new(
            "POST",
            uri,
            unsigned.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .expect("the request can be signed");
        let mut settings = SigningSettings::default();
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let identity = self.credentials.clone().into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region(REGION)
            .name(self.service)
            .time(SystemTime::now())
            .settings(settings)
            .build()
            .expect("complete signing parameters")
            .into();
        let (instructions, _signature) = sign(signable, &params)
            .expect("SigV4 signing failed")
            .into_parts();
        let (signature_headers, _query) = instructions.into_parts();

        let mut request = Request::builder()
            .method(Method::POST)
            .uri("/")
            .version(Version::HTTP_11)
            .body(body)
            .expect("a POST / request is valid");
        let headers = request.headers_mut();
        let all = unsigned
            .iter()
            .map(|&(name, value)| (name, value.to_owned()))
            .chain(
                signature_headers
                    .iter()
                    .map(|header| (header.name(), header.value().to_owned())),
            );
        for (name, value) in all {
            headers.insert(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).expect("signed header values are ASCII"),
            );
        }
        let authorization = headers
            .get("authorization")
            .and_then(|value| value.to_str().ok())
            .expect("the signer added an Authorization header");
        assert!(
            authorization.contains(
                "SignedHeaders=content-type;host;x-amz-content-sha256;x-amz-date;x-amz-target,"
            ),
            "unexpected signed header list: {authorization}"
        );
        Presigned::from_request(&request)
    }
}

/// Initial size of a connection's receive buffer: every answer here fits, so it never grows.
pub const RECEIVE_BUFFER: usize = 64 * 1024;
/// Response headers parsed per answer; the server sends far fewer.
pub const MAX_RESPONSE_HEADERS: usize = 32;
/// Largest response head accepted before the answer is called malformed.
pub const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
pub const MAX_RESPONSE_BODY: usize = 16 * 1024 * 1024;

/// One keep-alive HTTP/1.1 connection, driven directly as wrk does: each request goes out as
/// one pre-serialised write, and of each answer only the head is parsed (status and
/// `Content-Length`) before exactly the body is read. One request is in flight at a time.
pub struct Connection {
    pub stream: TcpStream,
    /// Receives every answer on this connection; reused, grown only for an unusually large one.
    pub buffer: Vec<u8>,
}

/// A complete answer; the body borrows the connection's buffer until the next request.
pub struct Answer<'a> {
    pub status: u16,
    /// The server said it will close the connection after this answer.
    pub closing: bool,
    pub body: &'a [u8],
}

impl Answer<'_> {
    /// Whether the answer is a success on a connection that stays open.
    pub fn is_ok(&self) -> bool {
        self.status == 200 && !self.closing
    }

    /// Why the answer counts as an error, with its body.
    pub fn error(&self) -> String {
        let status = StatusCode::from_u16(self.status)
            .map_or_else(|_| self.status.to_string(), |status| status.to_string());
        let closing = if self.closing {
            " (Connection: close)"
        } else {
            ""
        };
        format!(
            "HTTP {status}{closing}: {}",
            String::from_utf8_lossy(self.body)
        )
    }
}

/// What the head of an answer says.
pub struct Head {
    pub status: u16,
    pub closing: bool,
    pub length: usize,
    pub content_length: usize,
}

impl Connection {
    pub async fn open(addr: &str) -> Result<Self, String> {
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|err| format!("connect to {addr}: {err}"))?;
        stream
            .set_nodelay(true)
            .map_err(|err| format!("set TCP_NODELAY: {err}"))?;
        Ok(Self {
            stream,
            buffer: vec![0; RECEIVE_BUFFER],
        })
    }

    /// Sends one pre-serialised request and reads its whole answer. An `Err` (a failed write, a
    /// short read, a malformed answer) leaves the connection unusable.
    pub async fn exchange(&mut self, request: &[u8]) -> Result<Answer<'_>, String> {
        self.stream
            .write_all(request)
            .await
            .map_err(|err| format!("sending the request: {err}"))?;
        let mut filled = 0;
        let head = loop {
            filled += self.read_more(filled).await?;
            if let Some(head) = parse_head(&self.buffer[..filled])? {
                break head;
            }
            if filled >= MAX_RESPONSE_HEAD {
                return Err(format!(
                    "no end of the response head in the first {filled} bytes"
                ));
            }
        };
        let end = head.length + head.content_length;
        if self.buffer.len() < end {
            self.buffer.resize(end, 0);
        }
        while filled < end {
            filled += self.read_more(filled).await?;
        }
        if filled > end {
            return Err(format!(
                "{} bytes after the {end}-byte answer, with no request outstanding",
                filled - end
            ));
        }
        Ok(Answer {
            status: head.status,
            closing: head.closing,
            body: &self.buffer[head.length..end],
        })
    }

    /// Reads what has arrived into the buffer after its first `filled` bytes, growing it if full.
    pub async fn read_more(&mut self, filled: usize) -> Result<usize, String> {
        if filled == self.buffer.len() {
            self.buffer.resize(filled * 2, 0);
        }
        match self.stream.read(&mut self.buffer[filled..]).await {
            Ok(0) => Err(format!(
                "short read: the server closed the connection after {filled} bytes of the answer"
            )),
            Ok(read) => Ok(read),
            Err(err) => Err(format!("reading the answer: {err}")),
        }
    }
}

/// Parses the response head at the start of `received`: `Ok(None)` until all of it has arrived.
pub fn parse_head(received: &[u8]) -> Result<Option<Head>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(received) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(err) => return Err(format!("malformed response head: {err}")),
    };
    let status = response.code.ok_or("response head without a status")?;
    // HTTP/1.0 closes after each answer unless told otherwise; the server speaks HTTP/1.1.
    let mut closing = response.version != Some(1);
    let mut content_length = None;
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    format!(
                        "bad Content-Length: {:?}",
                        String::from_utf8_lossy(header.value)
                    )
                })?;
            if content_length.is_some_and(|earlier| earlier != value) {
                return Err("conflicting Content-Length headers".to_owned());
            }
            content_length = Some(value);
        } else if header.name.eq_ignore_ascii_case("connection") {
            closing |= header
                .value
                .split(|&byte| byte == b',')
                .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"));
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "HTTP {status} with Transfer-Encoding {:?}: only Content-Length bodies are read",
                String::from_utf8_lossy(header.value)
            ));
        }
    }
    let content_length =
        content_length.ok_or_else(|| format!("HTTP {status} without a Content-Length"))?;
    if content_length > MAX_RESPONSE_BODY {
        return Err(format!(
            "HTTP {status} with a {content_length}-byte body, over the {MAX_RESPONSE_BODY}-byte limit"
        ));
    }
    Ok(Some(Head {
        status,
        closing,
        length,
        content_length,
    }))
}

/// Sends every request once over `connections` connections; returns the bodies in pool order.
/// Not timed: this prepares and checks the Decrypt pool.
pub async fn send_each_once(
    addr: &str,
    pool: &Arc<Vec<Presigned>>,
    connections: usize,
) -> Vec<Vec<u8>> {
    let next = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..connections.min(pool.len()))
        .map(|_| {
            let (addr, pool, next) = (addr.to_owned(), Arc::clone(pool), Arc::clone(&next));
            tokio::spawn(async move {
                let mut connection = Connection::open(&addr)
                    .await
                    .expect("cannot connect to the server");
                let mut answers = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(request) = pool.get(index) else {
                        break;
                    };
                    let answer = connection
                        .exchange(&request.wire)
                        .await
                        .expect("a preparation request failed");
                    assert!(
                        answer.is_ok(),
                        "a preparation request answered {}",
                        answer.error()
                    );
                    answers.push((index, answer.body.to_vec()));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(pool.len());
    for worker in workers {
        answers.extend(worker.await.expect("a preparation worker panicked"));
    }
    answers.sort_by_key(|(index, _)| *index);
    answers.into_iter().map(|(_, body)| body).collect()
}

pub fn json_field(body: &[u8], field: &str) -> String {
    let value: Value = serde_json::from_slice(body).expect("the server answered invalid JSON");
    value[field]
        .as_str()
        .unwrap_or_else(|| panic!("the answer has no string {field}"))
        .to_owned()
}

/// What a client does with a successful answer that says `Connection: close`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnClose {
    /// Count it as an error: a server that should keep connections open did not.
    Error,
    /// Count it as a success and open a new connection for the next request, as any HTTP client
    /// does (moto's development server closes after every answer).
    Reconnect,
}

/// The figures of one operation under load.
pub struct PhaseResult {
    pub operation: &'static str,
    /// Successful (200) answers to requests sent in the measured window.
    pub ok: u64,
    /// Non-200 answers and transport failures in the measured window.
    pub errors: u64,
    /// The same, during warm-up (reported apart so a slow start is visible).
    pub warm_up_errors: u64,
    pub first_error: Option<String>,
    pub connections_opened: u64,
    pub elapsed: Duration,
    /// Latency of the successful measured requests, in microseconds.
    pub latency_us: Histogram<u64>,
    pub cpu: Option<CpuUse>,
}

impl PhaseResult {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_us(&self, percentile: f64) -> u64 {
        self.latency_us.value_at_quantile(percentile / 100.0)
    }

    /// The phase's figures in a report's JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "operation": self.operation,
            "requests": self.ok,
            "seconds": self.elapsed.as_secs_f64(),
            "requests_per_second": self.per_second(),
            "p50_us": self.percentile_us(50.0),
            "p99_us": self.percentile_us(99.0),
            "max_us": self.latency_us.max(),
            "errors": self.errors,
            "warm_up_errors": self.warm_up_errors,
            "first_error": self.first_error,
            "connections_opened": self.connections_opened,
            "cpu_cores": self.cpu.map(|cpu| json!({
                "server": cpu.server,
                "client": cpu.client,
                "other": cpu.other,
            })),
        })
    }
}

/// What one client connection saw.
pub struct WorkerResult {
    pub ok: u64,
    pub errors: u64,
    pub warm_up_errors: u64,
    pub first_error: Option<String>,
    pub connections_opened: u64,
    pub finished: Instant,
    pub latency_us: Histogram<u64>,
}

pub fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at three significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Runs `connections` closed-loop clients replaying `pool` round-robin: warm-up, then the
/// measured window. A request counts in the window if it was sent inside it; the window closes
/// when the last answer to such a request has arrived.
pub async fn run_phase(
    operation: &'static str,
    addr: &str,
    pool: &Arc<Vec<Presigned>>,
    config: &Config,
    server_pid: u32,
    on_close: OnClose,
) -> PhaseResult {
    let next = Arc::new(AtomicUsize::new(0));
    let (result, _) = run_clients(operation, config, server_pid, |measure_from, stop_at| {
        let (addr, pool, next) = (addr.to_owned(), Arc::clone(pool), Arc::clone(&next));
        async move {
            let worker = client_loop(&addr, &pool, &next, measure_from, stop_at, on_close).await;
            (worker, ())
        }
    })
    .await;
    result
}

/// Runs `config.connections` closed-loop clients, each made by `client` from the start and the
/// end of the measured window, which opens after [`WARM_UP`], and samples the CPU over that
/// window. The window closes when the last client has finished. Each client returns what it saw
/// and anything of its own; the latter come back in client order.
pub async fn run_clients<Own, Client>(
    operation: &'static str,
    config: &Config,
    server_pid: u32,
    mut client: impl FnMut(Instant, Instant) -> Client,
) -> (PhaseResult, Vec<Own>)
where
    Client: Future<Output = (WorkerResult, Own)> + Send + 'static,
    Own: Send + 'static,
{
    let started = Instant::now();
    let measure_from = started + WARM_UP;
    let stop_at = measure_from + Duration::from_secs(config.seconds);
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(measure_from.into()).await;
        let before = CpuSample::take(server_pid);
        tokio::time::sleep_until(stop_at.into()).await;
        CpuUse::between(before?, CpuSample::take(server_pid)?)
    });
    let workers: Vec<_> = (0..config.connections)
        .map(|_| tokio::spawn(client(measure_from, stop_at)))
        .collect();

    let mut result = PhaseResult {
        operation,
        ok: 0,
        errors: 0,
        warm_up_errors: 0,
        first_error: None,
        connections_opened: 0,
        elapsed: Duration::ZERO,
        latency_us: new_histogram(),
        cpu: None,
    };
    let mut owns = Vec::with_capacity(workers.len());
    let mut last_finished = stop_at;
    for worker in workers {
        let (worker, own) = worker.await.expect("a client task panicked");
        result.ok += worker.ok;
        result.errors += worker.errors;
        result.warm_up_errors += worker.warm_up_errors;
        result.connections_opened += worker.connections_opened;
        if result.first_error.is_none() {
            result.first_error = worker.first_error;
        }
        result
            .latency_us
            .add(&worker.latency_us)
            .expect("histograms with the same bounds merge");
        last_finished = last_finished.max(worker.finished);
        owns.push(own);
    }
    result.elapsed = last_finished - measure_from;
    result.cpu = cpu.await.expect("the CPU sampler panicked");
    (result, owns)
}

/// Cumulative CPU seconds of the server, of this process (the load generator) and of the whole
/// machine, from `/proc`. Sampled around the measured window to show how the cores were shared
/// and whether anything else was running.
#[derive(Clone, Copy)]
pub struct CpuSample {
    pub at: Instant,
    pub server: f64,
    pub client: f64,
    pub machine_busy: f64,
}

/// Average cores in use during the measured window.
#[derive(Clone, Copy)]
pub struct CpuUse {
    pub server: f64,
    pub client: f64,
    /// Everything else on the machine: other processes, interrupts.
    pub other: f64,
}

impl CpuSample {
    /// `None` where `/proc` is not available (not Linux).
    pub fn take(server_pid: u32) -> Option<Self> {
        let ticks = clock_ticks_per_second();
        let process = |path: &str| -> Option<f64> {
            let text = std::fs::read_to_string(path).ok()?;
            // Fields after the parenthesised command name start at field 3; utime and stime are
            // fields 14 and 15, in clock ticks.
            let rest: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
            let utime: f64 = rest.get(11)?.parse().ok()?;
            let stime: f64 = rest.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks)
        };
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<f64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|field| field.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
        let busy = fields.iter().take(8).sum::<f64>() - fields.get(3)? - fields.get(4)?;
        Some(Self {
            at: Instant::now(),
            server: process(&format!("/proc/{server_pid}/stat"))?,
            client: process("/proc/self/stat")?,
            machine_busy: busy / ticks,
        })
    }
}

impl CpuUse {
    pub fn between(before: CpuSample, after: CpuSample) -> Option<Self> {
        let seconds = (after.at - before.at).as_secs_f64();
        if seconds <= 0.0 {
            return None;
        }
        let server = (after.server - before.server) / seconds;
        let client = (after.client - before.client) / seconds;
        let machine = (after.machine_busy - before.machine_busy) / seconds;
        Some(Self {
            server,
            client,
            other: (machine - server - client).max(0.0),
        })
    }
}

/// The unit of `/proc` CPU times (`getconf CLK_TCK`, nearly always 100).
pub fn clock_ticks_per_second() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

pub async fn client_loop(
    addr: &str,
    pool: &[Presigned],
    next: &AtomicUsize,
    measure_from: Instant,
    stop_at: Instant,
    on_close: OnClose,
) -> WorkerResult {
    let mut worker = WorkerResult::new(stop_at);
    let mut connection: Option<Connection> = None;
    loop {
        let sent_at = Instant::now();
        if sent_at >= stop_at {
            break;
        }
        let measured = sent_at >= measure_from;
        let Some(open) = worker.connection(addr, &mut connection, measured).await else {
            continue;
        };
        let request = &pool[next.fetch_add(1, Ordering::Relaxed) % pool.len()];
        let sent_at = Instant::now();
        let outcome = match open.exchange(&request.wire).await {
            Ok(answer) if answer.is_ok() => Ok(false),
            Ok(answer) if answer.status == 200 && on_close == OnClose::Reconnect => Ok(true),
            Ok(answer) => Err(answer.error()),
            Err(message) => Err(message),
        };
        match outcome {
            Ok(closing) => {
                if measured {
                    worker.record(sent_at.elapsed());
                }
                if closing {
                    // The server closes after this answer: the next request opens a new
                    // connection, and its latency is timed from its write, as for any other.
                    connection = None;
                }
            }
            Err(message) => {
                // An error answer, a closing server or a broken transfer: start afresh on a new
                // connection next time round.
                connection = None;
                worker.note_error(measured, message);
            }
        }
    }
    worker.finished = Instant::now();
    worker
}

impl WorkerResult {
    /// Nothing seen yet, by a client that stops sending at `stop_at`.
    pub fn new(stop_at: Instant) -> Self {
        Self {
            ok: 0,
            errors: 0,
            warm_up_errors: 0,
            first_error: None,
            connections_opened: 0,
            finished: stop_at,
            latency_us: new_histogram(),
        }
    }

    /// The connection to send the next request on: the open one, else a new one. `None` when
    /// none could be opened: the failure is counted, and the client has paused briefly before
    /// its next try.
    pub async fn connection<'c>(
        &mut self,
        addr: &str,
        connection: &'c mut Option<Connection>,
        measured: bool,
    ) -> Option<&'c mut Connection> {
        if connection.is_none() {
            match Connection::open(addr).await {
                Ok(open) => {
                    self.connections_opened += 1;
                    *connection = Some(open);
                }
                Err(message) => {
                    self.note_error(measured, message);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    return None;
                }
            }
        }
        connection.as_mut()
    }

    /// A successful answer in the measured window, `latency` after its request was written.
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_us.saturating_record(micros.max(1));
        self.ok += 1;
    }

    pub fn note_error(&mut self, measured: bool, message: String) {
        if measured {
            self.errors += 1;
        } else {
            self.warm_up_errors += 1;
        }
        self.first_error.get_or_insert(message);
    }
}

// ---------------------------------------------------------------------------------------------
// moto, the baseline of the Secrets Manager and SSM benches
// ---------------------------------------------------------------------------------------------

/// moto imports a great deal of Python before it listens.
pub const MOTO_START_TIMEOUT: Duration = Duration::from_secs(90);

/// Sends one request on a connection of its own; the body of a 200 answer, else why not.
pub async fn send_once(
    addr: &str,
    request: &Presigned,
    operation: &str,
) -> Result<Vec<u8>, String> {
    let mut connection = Connection::open(addr)
        .await
        .map_err(|err| format!("{operation}: {err}"))?;
    let answer = connection
        .exchange(&request.wire)
        .await
        .map_err(|err| format!("{operation}: {err}"))?;
    if answer.status != 200 {
        return Err(format!("{operation} answered {}", answer.error()));
    }
    Ok(answer.body.to_vec())
}

/// moto's standalone server, `python -m moto.server` from the end-to-end suites' virtualenv, on
/// a free loopback port.
pub struct Moto {
    /// `Some` until stopped.
    child: Option<Child>,
    pub authority: String,
    pub version: String,
    log: Option<thread::JoinHandle<MotoLog>>,
}

/// What moto wrote on stderr besides its banner and its request log.
#[derive(Default)]
pub struct MotoLog {
    pub error_lines: usize,
    pub first_error: Option<String>,
    /// The last lines, for a failure to start.
    pub tail: VecDeque<String>,
}

impl Moto {
    pub fn start() -> Result<Self, String> {
        let python = moto_python()?;
        let version = Command::new(&python)
            .args(["-c", "import moto; print(moto.__version__)"])
            .stdin(Stdio::null())
            .output()
            .map_err(|err| format!("cannot run {}: {err}", python.display()))?;
        if !version.status.success() {
            return Err(format!(
                "moto is not importable in {} ({}): {}",
                python.display(),
                version.status,
                String::from_utf8_lossy(&version.stderr).trim()
            ));
        }
        let version = String::from_utf8_lossy(&version.stdout).trim().to_owned();

        let mut child = Command::new(&python)
            .args(["-m", "moto.server", "-H", "127.0.0.1", "-p", "0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|err| format!("cannot start {} -m moto.server: {err}", python.display()))?;
        let stderr = child.stderr.take().ok_or("moto's stderr was not piped")?;
        // Drains stderr for the whole run (werkzeug logs every request there), so moto never
        // blocks on a full pipe.
        let (address_tx, address_rx) = mpsc::channel::<String>();
        let log = thread::spawn(move || {
            let mut log = MotoLog::default();
            let mut address_tx = Some(address_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(address) = line.split("Running on http://").nth(1)
                    && let Some(tx) = address_tx.take()
                {
                    let _ = tx.send(address.trim().to_owned());
                } else if !is_moto_routine_line(&line) {
                    log.error_lines += 1;
                    log.first_error.get_or_insert_with(|| line.clone());
                }
                if log.tail.len() == 20 {
                    log.tail.pop_front();
                }
                log.tail.push_back(line);
            }
            log
        });
        let mut moto = Self {
            child: Some(child),
            authority: String::new(),
            version,
            log: Some(log),
        };
        match address_rx.recv_timeout(MOTO_START_TIMEOUT) {
            Ok(address) => {
                moto.authority = address;
                Ok(moto)
            }
            Err(_) => {
                let (exit, log) = moto.stop();
                Err(format!(
                    "moto did not say `Running on http://...` within {} s; it {exit}; its stderr ended: {}",
                    MOTO_START_TIMEOUT.as_secs(),
                    Vec::from(log.tail).join(" | ")
                ))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM (Python's default is to exit at once), SIGKILL if it lingers.
    pub fn stop(&mut self) -> (String, MotoLog) {
        let exit = match self.child.take() {
            None => "was already stopped".to_owned(),
            Some(child) => format!("exit after SIGTERM: {}", terminate(child).0),
        };
        let log = self
            .log
            .take()
            .and_then(|handle| handle.join().ok())
            .unwrap_or_default();
        (exit, log)
    }
}

impl Drop for Moto {
    /// A failing run must not leave moto running.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// werkzeug's banner and its log line for a request answered below 500.
pub fn is_moto_routine_line(line: &str) -> bool {
    if line.starts_with("WARNING: This is a development server") || line == "Press CTRL+C to quit" {
        return true;
    }
    // 127.0.0.1 - - [01/Dec/2026 09:27:16] "POST / HTTP/1.1" 200 -
    line.rsplit_once("\" ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|status| status.parse::<u16>().ok())
        .is_some_and(|status| status < 500)
}

/// The virtualenv's python, made or refreshed from `e2e/requirements.txt` by `e2e/python.sh`.
pub fn moto_python() -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("e2e")
        .join("python.sh");
    let output = Command::new(&script)
        .arg("--venv")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|err| format!("cannot run {} --venv: {err}", script.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} --venv failed ({}): cannot make the virtualenv with moto[server]",
            script.display(),
            output.status
        ));
    }
    let venv = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let python = venv.join("bin").join("python");
    if python.is_file() {
        Ok(python)
    } else {
        Err(format!("{} is missing", python.display()))
    }
}

pub fn not_measured_line(why: &str) -> String {
    format!("=== moto baseline NOT MEASURED: {why} ===")
}

/// Runs `run`, turning an error or a panic into why a server was not measured; `panicked` says
/// why when the panic carries no message.
pub fn caught<T>(run: impl FnOnce() -> Result<T, String>, panicked: &str) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_else(|| panicked.to_owned())),
    }
}

pub fn coffer_not_measured_line(why: &str) -> String {
    format!("=== coffer NOT MEASURED: {why} ===")
}

/// `len` random characters from a 64-character alphabet that JSON carries unescaped.
pub fn random_text(len: usize) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = vec![0u8; len];
    rand::rng().fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte % 64)]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A bench beside moto: the same workloads on each server, one at a time
// ---------------------------------------------------------------------------------------------

/// What a bench measured on one server: its phases, in table order, and what else it reports.
pub trait Phases {
    fn phases(&self) -> Vec<&PhaseResult>;

    /// Lines about the server after its phases' errors, each printed after `  NAME: `.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }

    /// Adds the bench's own figures to the server's object in the report's JSON.
    fn add_json(&self, _server: &mut Value) {}
}

/// The figures of one server.
pub struct Target<M> {
    /// `coffer` or `moto`.
    pub name: &'static str,
    /// What exactly ran: the binary, or moto's version.
    pub what: String,
    pub measured: M,
    /// How the server ended when stopped.
    pub exit: String,
    /// Lines on the server's stderr that report a problem, and the first of them.
    pub error_lines: usize,
    pub first_error: Option<String>,
}

/// Runs `workloads` against the release binary on a fresh data directory (audit log on,
/// throttling off, as `benches/kms.rs` runs it), then stops it. The workloads are given the
/// server's address, a signer for it and its process id.
pub fn run_coffer<M>(
    service: &'static str,
    workloads: impl FnOnce(&str, &Arc<Signer>, u32) -> Result<M, String>,
) -> Result<Target<M>, String> {
    let binary = server_binary();
    let mut server = Server::start(&binary);
    let signer = Arc::new(Signer::new(
        server.credentials(),
        server.authority.clone(),
        service,
    ));
    let measured = workloads(&server.authority, &signer, server.pid());
    let stopped = server.stop();
    Ok(Target {
        name: "coffer",
        what: format!("{} (audit log on, throttling off)", binary.display()),
        measured: measured?,
        exit: stopped.exit(),
        error_lines: stopped.error_lines,
        first_error: stopped.first_error,
    })
}

/// Runs `workloads` against moto's standalone server, then stops it; as [`run_coffer`].
pub fn run_moto<M>(
    service: &'static str,
    workloads: impl FnOnce(&str, &Arc<Signer>, u32) -> Result<M, String>,
) -> Result<Target<M>, String> {
    let mut moto = Moto::start()?;
    // moto checks no signature; any access key signs, exactly as for coffer.
    let credentials = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "moto-bench",
    );
    let signer = Arc::new(Signer::new(credentials, moto.authority.clone(), service));
    let measured = workloads(&moto.authority, &signer, moto.pid());
    let (exit, log) = moto.stop();
    Ok(Target {
        name: "moto",
        what: format!(
            "moto {} (`python -m moto.server`, werkzeug, request log on stderr)",
            moto.version
        ),
        measured: measured?,
        exit,
        error_lines: log.error_lines,
        first_error: log.first_error,
    })
}

/// coffer against moto for one operation: req/s coffer/moto, and latency moto/coffer (both
/// above 1 when coffer is the faster).
pub struct Ratio {
    pub throughput: f64,
    pub p50: f64,
    pub p99: f64,
}

impl Ratio {
    pub fn of(coffer: &PhaseResult, moto: &PhaseResult) -> Option<Self> {
        if moto.ok == 0 || coffer.ok == 0 {
            return None;
        }
        Some(Self {
            throughput: coffer.per_second() / moto.per_second(),
            p50: moto.percentile_us(50.0) as f64 / coffer.percentile_us(50.0) as f64,
            p99: moto.percentile_us(99.0) as f64 / coffer.percentile_us(99.0) as f64,
        })
    }
}

/// Whether a target was met, as the report says it.
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "NOT MET" }
}

/// The run of a bench beside moto, for its report.
pub struct BesideMoto<M> {
    /// The operations, in table order: the phases of each server.
    pub operations: &'static [&'static str],
    pub config: Config,
    pub machine: Machine,
    pub load_at_end: String,
    pub client_threads: usize,
    /// `Err` says why a server was not measured.
    pub coffer: Result<Target<M>, String>,
    pub moto: Result<Target<M>, String>,
}

impl<M: Phases> BesideMoto<M> {
    /// The servers measured.
    pub fn targets(&self) -> Vec<&Target<M>> {
        [&self.coffer, &self.moto]
            .into_iter()
            .filter_map(|target| target.as_ref().ok())
            .collect()
    }

    /// coffer against moto for each operation, where both were measured.
    pub fn ratios(&self) -> Vec<Option<Ratio>> {
        let (Ok(coffer), Ok(moto)) = (&self.coffer, &self.moto) else {
            return self.operations.iter().map(|_| None).collect();
        };
        let (ours, theirs) = (coffer.measured.phases(), moto.measured.phases());
        ours.iter()
            .zip(theirs)
            .map(|(ours, theirs)| Ratio::of(ours, theirs))
            .collect()
    }

    /// The operation column: one wider than the longest operation.
    fn width(&self) -> usize {
        self.operations
            .iter()
            .map(|operation| operation.len())
            .max()
            .unwrap_or(0)
            + 1
    }

    /// What ran, then each operation's figures on each server.
    pub fn print_servers(&self) {
        let width = self.width();
        for target in self.targets() {
            println!("  {:<7} {}", target.name, target.what);
        }
        println!(
            "  {:<width$} {:<7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>12}",
            "operation",
            "server",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "conns opened"
        );
        for operation in 0..self.operations.len() {
            for target in self.targets() {
                let Some(phase) = target.measured.phases().get(operation).copied() else {
                    continue;
                };
                println!(
                    "  {:<width$} {:<7} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>12}",
                    phase.operation,
                    target.name,
                    phase.ok,
                    phase.per_second(),
                    phase.percentile_us(50.0) as f64 / 1000.0,
                    phase.percentile_us(99.0) as f64 / 1000.0,
                    phase.latency_us.max() as f64 / 1000.0,
                    phase.errors,
                    phase.connections_opened,
                );
            }
        }
    }

    /// The ratios of coffer's figures to moto's, and which server was not measured.
    pub fn print_ratios(&self) {
        let width = self.width();
        println!();
        println!("coffer against moto, measured in this run (above 1: coffer is faster)");
        println!(
            "  {:<width$} {:>18} {:>16} {:>16}",
            "operation", "req/s coffer/moto", "p50 moto/coffer", "p99 moto/coffer"
        );
        for (operation, ratio) in self.operations.iter().zip(self.ratios()) {
            match ratio {
                Some(ratio) => println!(
                    "  {:<width$} {:>17.1}× {:>15.1}× {:>15.1}×",
                    operation, ratio.throughput, ratio.p50, ratio.p99
                ),
                None => println!(
                    "  {:<width$} {:>18} {:>16} {:>16}",
                    operation, "n/a", "n/a", "n/a"
                ),
            }
        }
        if let Err(why) = &self.coffer {
            println!("  {}", coffer_not_measured_line(why));
        }
        if let Err(why) = &self.moto {
            println!("  {}", not_measured_line(why));
        }
    }

    /// The report's closing lines, between blank lines.
    pub fn print_closing(&self) {
        println!();
        print_closing_lines(
            &self.targets(),
            self.machine.nproc,
            "these figures are disturbed",
        );
        println!();
    }

    /// The report's JSON, to which the bench adds its own settings.
    pub fn to_json(&self, bench: &str) -> Value {
        let target_json = |target: &Result<Target<M>, String>| match target {
            Ok(target) => {
                let mut value = json!({
                    "what": target.what,
                    "phases": target.measured.phases().into_iter().map(PhaseResult::to_json).collect::<Vec<_>>(),
                    "exit": target.exit,
                    "error_lines": target.error_lines,
                });
                target.measured.add_json(&mut value);
                value
            }
            Err(why) => json!({"not_measured": why}),
        };
        let ratios: Vec<Value> = self
            .operations
            .iter()
            .zip(self.ratios())
            .map(|(operation, ratio)| {
                json!({
                    "operation": operation,
                    "requests_per_second_coffer_over_moto": ratio.as_ref().map(|r| r.throughput),
                    "p50_moto_over_coffer": ratio.as_ref().map(|r| r.p50),
                    "p99_moto_over_coffer": ratio.as_ref().map(|r| r.p99),
                })
            })
            .collect();
        json!({
            "bench": bench,
            "machine": self.machine.to_json(&self.load_at_end, self.client_threads),
            "connections": self.config.connections,
            "warm_up_seconds": WARM_UP.as_secs(),
            "measured_seconds": self.config.seconds,
            "coffer": target_json(&self.coffer),
            "moto": target_json(&self.moto),
            "ratios": ratios,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The closing lines of every report
// ---------------------------------------------------------------------------------------------

/// What the closing lines of a report say of one server.
pub trait Figures {
    /// Names the server in its own lines: `coffer`, `moto`, or `server` where there is one.
    fn name(&self) -> &str;
    fn phases(&self) -> Vec<&PhaseResult>;
    /// How the server ended when stopped.
    fn exit(&self) -> String;
    /// Lines on the server's stderr that report a problem, and the first of them.
    fn error_lines(&self) -> usize;
    fn first_error(&self) -> Option<&str>;

    /// How the lines about one phase begin: the server and the operation.
    fn label(&self, phase: &PhaseResult) -> String {
        format!("{} {}", self.name(), phase.operation)
    }

    /// A phase's first error as its line gives it: on one line, since moto's errors are HTML
    /// pages and one line of them is enough.
    fn error_text(&self, error: &str) -> String {
        error.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// Lines about the server after its phases' errors, each printed after `  NAME: `.
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
}

impl<M: Phases> Figures for Target<M> {
    fn name(&self) -> &str {
        self.name
    }

    fn phases(&self) -> Vec<&PhaseResult> {
        self.measured.phases()
    }

    fn exit(&self) -> String {
        self.exit.clone()
    }

    fn error_lines(&self) -> usize {
        self.error_lines
    }

    fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    fn notes(&self) -> Vec<String> {
        self.measured.notes()
    }
}

/// The CPU each phase used, a warning when other work used the CPU too (`disturbed` says what
/// follows for the figures), then for each server its phases' errors, its notes, how it ended and
/// the first error line it logged.
pub fn print_closing_lines<F: Figures>(servers: &[&F], nproc: usize, disturbed: &str) {
    for server in servers {
        for phase in server.phases() {
            let label = server.label(phase);
            match phase.cpu {
                Some(cpu) => println!(
                    "  {label}: CPU in use while measured, in cores of {nproc}: server {:.2}, load generator {:.2}, other {:.2}",
                    cpu.server, cpu.client, cpu.other
                ),
                None => println!("  {label}: CPU use not measured (no /proc)"),
            }
        }
    }
    if servers.iter().any(|server| {
        server
            .phases()
            .iter()
            .any(|phase| phase.cpu.is_some_and(|cpu| cpu.other > OTHER_LOAD_WARNING))
    }) {
        println!("  WARNING: other work used the CPU during the measurement; {disturbed}");
    }
    for server in servers {
        for phase in server.phases() {
            let label = server.label(phase);
            if phase.warm_up_errors > 0 {
                println!(
                    "  {label}: {} errors during warm-up (not in the table)",
                    phase.warm_up_errors
                );
            }
            if let Some(error) = &phase.first_error {
                println!("  {label}: first error: {}", server.error_text(error));
            }
        }
        let name = server.name();
        for note in server.notes() {
            println!("  {name}: {note}");
        }
        println!(
            "  {name}: {}; {} error lines on stderr",
            server.exit(),
            server.error_lines()
        );
        if let Some(line) = server.first_error() {
            println!("  {name}: first error line: {line}");
        }
    }
}
