//! `make bench`: throughput and latency of the KMS API, and of the envelope cipher beneath it.
//!
//! One run measures three things, so that every figure comes from the same machine in the same
//! state and can be compared with the others:
//!
//! 1. `Encrypt` and `Decrypt` of 4 KiB through the HTTP API of the release binary, started in its
//!    own process as a user would run it (audit log on, throttling off). Requests are SigV4-signed
//!    before the clock starts and replayed round-robin, because signing is client work and not
//!    what is being measured. Each of C clients owns one keep-alive connection and sends its next
//!    request as soon as the previous answer is read (a closed loop). As in wrk, each request
//!    is written to the socket as bytes serialised before the run, and of each answer only the
//!    head is parsed before the body is read, so the load generator takes as little as it can of
//!    the cores it shares with the server.
//! 2. `crypto::seal` and `crypto::open` in process on one thread, in MB/s.
//! 3. `openssl speed` for AES-256-CBC and AES-256-CTR as a hardware reference. AES-SIV makes one
//!    CMAC pass (serial, like CBC) and one CTR pass over the data, so those two bound it.
//!
//! Environment: `BENCH_CONNECTIONS` (default 64), `BENCH_SECONDS` (measured seconds per
//! operation, default 10). The server binary must already be built (`make bench` builds it).
//! Output: a table on stdout, then the same figures as one JSON object on the last line.

// A load tool run by hand (`make bench`): a failure ends the run with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use coffer::crypto::{Binding, KeyMaterial, KeyRef, open, seal};
use common::{
    Config, Connection, Figures, Machine, OnClose, PhaseResult, Presigned, Server, Signer, WARM_UP,
    clean_mark, client_runtime, json_field, print_closing_lines, read_loadavg, run_phase,
    send_each_once, server_binary,
};
use rand::Rng as _;
use serde_json::{Value, json};

/// Plaintext size of the API calls: the largest a KMS `Encrypt` accepts.
const API_PLAINTEXT_LEN: usize = 4096;
/// Distinct pre-signed requests per operation; replayed round-robin.
const POOL_SIZE: usize = 2000;
/// Minimum time per in-process envelope measurement.
const ENVELOPE_MIN_TIME: Duration = Duration::from_secs(2);
/// Envelope plaintext sizes: one KMS-sized value, one Secrets Manager-sized value.
const ENVELOPE_SIZES: [usize; 2] = [4 * 1024, 64 * 1024];
/// The block size `openssl speed` is run with.
const OPENSSL_BLOCK: usize = 16384;
const OPENSSL_CIPHERS: [&str; 2] = ["aes-256-cbc", "aes-256-ctr"];
/// The SigV4 service name.
const SERVICE: &str = "kms";

fn main() {
    let config = Config::from_env();
    let machine = Machine::probe();
    println!(
        "Coffer KMS benchmark: {} connections, {} s warm-up + {} s measured per operation",
        config.connections,
        WARM_UP.as_secs(),
        config.seconds
    );
    println!("(setting up; the table follows when every measurement is done)");

    let http = run_http_bench(&config);
    let envelope: Vec<EnvelopeResult> = ENVELOPE_SIZES.iter().map(|&n| bench_envelope(n)).collect();
    let openssl: Vec<OpensslResult> = OPENSSL_CIPHERS.iter().map(|c| openssl_speed(c)).collect();
    let load_at_end = read_loadavg();

    let report = Report {
        config,
        machine,
        load_at_end,
        http,
        envelope,
        openssl,
    };
    report.print_table();
    println!("{}", report.to_json());
}

// ---------------------------------------------------------------------------------------------
// 1. The HTTP API
// ---------------------------------------------------------------------------------------------

/// Everything measured against the running server.
struct HttpResults {
    phases: Vec<PhaseResult>,
    server_exit: String,
    server_exit_ok: bool,
    server_error_lines: usize,
    first_server_error: Option<String>,
    audit_lines: usize,
    audit_bytes: u64,
    client_threads: usize,
}

/// The one server of this bench, in the report's closing lines.
impl Figures for HttpResults {
    fn name(&self) -> &str {
        "server"
    }

    fn phases(&self) -> Vec<&PhaseResult> {
        self.phases.iter().collect()
    }

    fn exit(&self) -> String {
        format!(
            "exit after SIGTERM: {}{}",
            self.server_exit,
            clean_mark(self.server_exit_ok)
        )
    }

    fn error_lines(&self) -> usize {
        self.server_error_lines
    }

    fn first_error(&self) -> Option<&str> {
        self.first_server_error.as_deref()
    }

    /// The operation alone: there is one server.
    fn label(&self, phase: &PhaseResult) -> String {
        phase.operation.to_owned()
    }

    /// As it came.
    fn error_text(&self, error: &str) -> String {
        error.to_owned()
    }
}

fn run_http_bench(config: &Config) -> HttpResults {
    let mut server = Server::start(&server_binary());
    let signer = Signer::new(server.credentials(), server.authority.clone(), SERVICE);
    let (runtime, client_threads) = client_runtime();
    let addr = server.authority.clone();

    let key_id = runtime.block_on(create_key(&addr, &signer));

    // Encrypt pool: distinct random plaintexts, signed now, before any timing.
    let plaintexts: Vec<Vec<u8>> = (0..POOL_SIZE)
        .map(|_| {
            let mut bytes = vec![0u8; API_PLAINTEXT_LEN];
            rand::rng().fill_bytes(&mut bytes);
            bytes
        })
        .collect();
    let encrypts: Arc<Vec<Presigned>> = Arc::new(
        plaintexts
            .iter()
            .map(|plaintext| {
                let body = json!({"KeyId": key_id, "Plaintext": BASE64.encode(plaintext)});
                signer.sign("TrentService.Encrypt", body.to_string())
            })
            .collect(),
    );
    let pid = server.pid();
    let encrypt = runtime.block_on(run_phase(
        "Encrypt",
        &addr,
        &encrypts,
        config,
        pid,
        OnClose::Error,
    ));

    // Decrypt pool: encrypt each plaintext once, sign a Decrypt of each result, and check that
    // every one of them decrypts to its plaintext before timing anything.
    let ciphertexts = runtime.block_on(send_each_once(&addr, &encrypts, config.connections));
    let decrypts: Arc<Vec<Presigned>> = Arc::new(
        ciphertexts
            .iter()
            .map(|response| {
                let blob = json_field(response, "CiphertextBlob");
                let body = json!({"CiphertextBlob": blob});
                signer.sign("TrentService.Decrypt", body.to_string())
            })
            .collect(),
    );
    let decrypted = runtime.block_on(send_each_once(&addr, &decrypts, config.connections));
    for (index, (response, plaintext)) in decrypted.iter().zip(&plaintexts).enumerate() {
        let answer = BASE64
            .decode(json_field(response, "Plaintext"))
            .expect("Decrypt returned Plaintext that is not base64");
        assert!(
            answer == *plaintext,
            "Decrypt of ciphertext {index} did not return its plaintext"
        );
    }
    let decrypt = runtime.block_on(run_phase(
        "Decrypt",
        &addr,
        &decrypts,
        config,
        pid,
        OnClose::Error,
    ));
    drop(runtime);

    let stopped = server.stop();
    let audit_path = server.dir.path().join("audit.log");
    let audit = std::fs::read(&audit_path).unwrap_or_default();
    HttpResults {
        phases: vec![encrypt, decrypt],
        server_exit_ok: stopped.clean,
        server_exit: stopped.outcome,
        server_error_lines: stopped.error_lines,
        first_server_error: stopped.first_error,
        audit_lines: audit.iter().filter(|&&byte| byte == b'\n').count(),
        audit_bytes: audit.len() as u64,
        client_threads,
    }
}

/// Creates the symmetric key every request of the run uses.
async fn create_key(addr: &str, signer: &Signer) -> String {
    let mut connection = Connection::open(addr)
        .await
        .expect("cannot connect to the server");
    let request = signer.sign("TrentService.CreateKey", "{}".to_owned());
    let answer = connection
        .exchange(&request.wire)
        .await
        .expect("CreateKey failed");
    assert!(answer.is_ok(), "CreateKey answered {}", answer.error());
    let answer: Value =
        serde_json::from_slice(answer.body).expect("CreateKey answered invalid JSON");
    answer["KeyMetadata"]["KeyId"]
        .as_str()
        .expect("CreateKey answered no KeyMetadata.KeyId")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// 2. The envelope cipher in process
// ---------------------------------------------------------------------------------------------

struct EnvelopeResult {
    size: usize,
    seal: Throughput,
    open: Throughput,
}

struct Throughput {
    operations: u64,
    elapsed: Duration,
    bytes_per_operation: usize,
}

impl Throughput {
    /// Plaintext megabytes (10^6 bytes) per second, the unit `openssl speed` uses too.
    fn mb_per_second(&self) -> f64 {
        (self.operations as f64 * self.bytes_per_operation as f64)
            / self.elapsed.as_secs_f64()
            / 1e6
    }

    fn micros_per_operation(&self) -> f64 {
        self.elapsed.as_secs_f64() * 1e6 / self.operations as f64
    }
}

/// Seals and opens `size` bytes under one key, single thread, each for at least
/// [`ENVELOPE_MIN_TIME`]. Each seal draws a fresh data key, as in the server.
fn bench_envelope(size: usize) -> EnvelopeResult {
    let material = KeyMaterial::generate();
    let key = KeyRef {
        key_id: "bench-key",
        version: 1,
        material: &material,
    };
    let binding = Binding::default();
    let mut plaintext = vec![0u8; size];
    rand::rng().fill_bytes(&mut plaintext);

    let blob = seal(key, &binding, &plaintext).expect("seal failed");
    let opened = open(&material, &binding, &blob).expect("open of a fresh blob failed");
    assert!(
        opened.expose() == plaintext.as_slice(),
        "open did not return the sealed plaintext"
    );

    let seal = time_repeatedly(size, || {
        black_box(seal(black_box(key), black_box(&binding), black_box(&plaintext)).expect("seal"));
    });
    let open = time_repeatedly(size, || {
        black_box(open(black_box(&material), black_box(&binding), black_box(&blob)).expect("open"));
    });
    EnvelopeResult { size, seal, open }
}

/// Calls `operation` in batches until [`ENVELOPE_MIN_TIME`] has passed, after a short warm-up.
fn time_repeatedly(bytes_per_operation: usize, mut operation: impl FnMut()) -> Throughput {
    let warm_until = Instant::now() + Duration::from_millis(200);
    while Instant::now() < warm_until {
        operation();
    }
    const BATCH: u64 = 16;
    let started = Instant::now();
    let mut operations = 0;
    loop {
        for _ in 0..BATCH {
            operation();
        }
        operations += BATCH;
        let elapsed = started.elapsed();
        if elapsed >= ENVELOPE_MIN_TIME {
            return Throughput {
                operations,
                elapsed,
                bytes_per_operation,
            };
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. The hardware reference
// ---------------------------------------------------------------------------------------------

struct OpensslResult {
    cipher: &'static str,
    /// `Err` says why there is no figure; no number is made up.
    mb_per_second: Result<f64, String>,
}

/// `openssl speed -evp CIPHER -seconds 2 -bytes 16384`: one thread, as the envelope figures.
fn openssl_speed(cipher: &'static str) -> OpensslResult {
    let block = OPENSSL_BLOCK.to_string();
    let output = Command::new("openssl")
        .args(["speed", "-evp", cipher, "-seconds", "2", "-bytes", &block])
        .stdin(Stdio::null())
        .output();
    let mb_per_second = match output {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Err("openssl is missing; not measured".to_owned())
        }
        Err(err) => Err(format!("cannot run openssl: {err}; not measured")),
        Ok(output) if !output.status.success() => Err(format!(
            "openssl speed failed ({}): {}; not measured",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Ok(output) => parse_openssl_speed(&String::from_utf8_lossy(&output.stdout), cipher)
            .ok_or_else(|| "no result line in the openssl output; not measured".to_owned()),
    };
    OpensslResult {
        cipher,
        mb_per_second,
    }
}

/// Reads the final result line, e.g. `AES-256-CBC    1025870.09k`: thousands of bytes per
/// second for the one block size asked for. Returns MB/s (10^6 bytes).
fn parse_openssl_speed(stdout: &str, cipher: &str) -> Option<f64> {
    stdout.lines().rev().find_map(|line| {
        let mut words = line.split_whitespace();
        let name = words.next()?;
        let figure = words.next_back()?;
        if !name.eq_ignore_ascii_case(cipher) {
            return None;
        }
        let thousands: f64 = figure.strip_suffix('k')?.parse().ok()?;
        Some(thousands / 1000.0)
    })
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

struct Report {
    config: Config,
    machine: Machine,
    load_at_end: String,
    http: HttpResults,
    envelope: Vec<EnvelopeResult>,
    openssl: Vec<OpensslResult>,
}

impl Report {
    fn openssl_figure(&self, cipher: &str) -> Option<f64> {
        self.openssl
            .iter()
            .find(|result| result.cipher == cipher)
            .and_then(|result| result.mb_per_second.as_ref().ok().copied())
    }

    /// AES-SIV's ceiling on this machine: one CBC-like CMAC pass plus one CTR pass per byte.
    fn siv_bound(&self) -> Option<f64> {
        let cbc = self.openssl_figure("aes-256-cbc")?;
        let ctr = self.openssl_figure("aes-256-ctr")?;
        Some(1.0 / (1.0 / cbc + 1.0 / ctr))
    }

    fn print_table(&self) {
        let machine = &self.machine;
        let http = &self.http;
        machine.print(&self.load_at_end, http.client_threads);

        println!();
        println!(
            "KMS API over HTTP: release binary, SigV4, keep-alive, {} connections, {} KiB plaintext,",
            self.config.connections,
            API_PLAINTEXT_LEN / 1024
        );
        println!(
            "audit log on, throttling off, {} pre-signed requests per operation replayed round-robin,",
            POOL_SIZE
        );
        println!(
            "{} s warm-up then {} s measured",
            WARM_UP.as_secs(),
            self.config.seconds
        );
        println!(
            "  {:<10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8} {:>12}",
            "operation",
            "requests",
            "req/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "errors",
            "conns opened"
        );
        for phase in &http.phases {
            println!(
                "  {:<10} {:>10} {:>10.0} {:>9.2} {:>9.2} {:>9.2} {:>8} {:>12}",
                phase.operation,
                phase.ok,
                phase.per_second(),
                phase.percentile_us(50.0) as f64 / 1000.0,
                phase.percentile_us(99.0) as f64 / 1000.0,
                phase.latency_us.max() as f64 / 1000.0,
                phase.errors,
                phase.connections_opened,
            );
        }
        print_closing_lines(&[http], machine.nproc, "these figures understate Coffer");
        println!(
            "  audit log: {} lines, {:.1} MB",
            http.audit_lines,
            http.audit_bytes as f64 / 1e6
        );

        let cbc = self.openssl_figure("aes-256-cbc");
        let ctr = self.openssl_figure("aes-256-ctr");
        let bound = self.siv_bound();
        let ratio = |value: f64, reference: Option<f64>| {
            reference.map_or_else(
                || "n/a".to_owned(),
                |reference| format!("{:.2}", value / reference),
            )
        };
        println!();
        println!(
            "Envelope seal/open in process (AES-256-SIV, fresh data key per seal), one thread,"
        );
        println!(
            "at least {} s each; MB = 10^6 bytes of plaintext",
            ENVELOPE_MIN_TIME.as_secs()
        );
        println!(
            "  {:<10} {:>7} {:>10} {:>9} {:>8} {:>8} {:>10}",
            "operation", "size", "MB/s", "µs/op", "vs CBC", "vs CTR", "vs SIV max"
        );
        for result in &self.envelope {
            for (name, figures) in [("seal", &result.seal), ("open", &result.open)] {
                let mbps = figures.mb_per_second();
                println!(
                    "  {:<10} {:>7} {:>10.1} {:>9.2} {:>8} {:>8} {:>10}",
                    name,
                    format!("{} KiB", result.size / 1024),
                    mbps,
                    figures.micros_per_operation(),
                    ratio(mbps, cbc),
                    ratio(mbps, ctr),
                    ratio(mbps, bound),
                );
            }
        }

        println!();
        println!(
            "Hardware reference: openssl speed -evp CIPHER -seconds 2 -bytes {OPENSSL_BLOCK}, one thread"
        );
        println!("  {:<12} {:>10}", "cipher", "MB/s");
        for result in &self.openssl {
            match &result.mb_per_second {
                Ok(mbps) => println!("  {:<12} {:>10.1}", result.cipher.to_uppercase(), mbps),
                Err(why) => println!("  {:<12} {:>10}  {why}", result.cipher.to_uppercase(), "-"),
            }
        }
        match bound {
            Some(bound) => println!(
                "  {:<12} {:>10.1}  1/(1/CBC + 1/CTR): one CMAC pass plus one CTR pass, the most AES-SIV can do",
                "SIV max", bound
            ),
            None => println!("  {:<12} {:>10}  not measured", "SIV max", "-"),
        }
        println!();
    }

    fn to_json(&self) -> String {
        let phases: Vec<Value> = self.http.phases.iter().map(PhaseResult::to_json).collect();
        let envelope: Vec<Value> = self
            .envelope
            .iter()
            .flat_map(|result| {
                [("seal", &result.seal), ("open", &result.open)].map(|(name, figures)| {
                    json!({
                        "operation": name,
                        "bytes": result.size,
                        "mb_per_second": figures.mb_per_second(),
                        "us_per_operation": figures.micros_per_operation(),
                        "operations": figures.operations,
                    })
                })
            })
            .collect();
        let openssl: Vec<Value> = self
            .openssl
            .iter()
            .map(|result| match &result.mb_per_second {
                Ok(mbps) => json!({"cipher": result.cipher, "block_bytes": OPENSSL_BLOCK, "mb_per_second": mbps}),
                Err(why) => json!({"cipher": result.cipher, "block_bytes": OPENSSL_BLOCK, "mb_per_second": null, "not_measured": why}),
            })
            .collect();
        let mut machine = self
            .machine
            .to_json(&self.load_at_end, self.http.client_threads);
        machine["aes_instructions"] = json!(self.machine.aes_instructions);
        json!({
            "bench": "kms",
            "machine": machine,
            "http": {
                "connections": self.config.connections,
                "warm_up_seconds": WARM_UP.as_secs(),
                "measured_seconds": self.config.seconds,
                "plaintext_bytes": API_PLAINTEXT_LEN,
                "presigned_pool": POOL_SIZE,
                "phases": phases,
                "server_exit": self.http.server_exit,
                "server_exit_clean": self.http.server_exit_ok,
                "server_error_lines": self.http.server_error_lines,
                "audit_lines": self.http.audit_lines,
                "audit_bytes": self.http.audit_bytes,
            },
            "envelope": envelope,
            "openssl": openssl,
            "siv_max_mb_per_second": self.siv_bound(),
        })
        .to_string()
    }
}
