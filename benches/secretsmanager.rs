//! `make bench`: throughput and latency of the Secrets Manager API, beside moto's.
//!
//! Two operations on one secret, `bench/4k`, whose SecretString is 4096 bytes:
//!
//! - `GetSecretValue` by name;
//! - `PutSecretValue` of a fresh 4 KiB value without a `ClientRequestToken`, so that every
//!   request makes a new version (2000 distinct values, replayed round-robin).
//!
//! Both run first against the release binary (`coffer server` on a fresh data directory, audit
//! log on, throttling off, as `benches/kms.rs` runs it), then against moto's Secrets Manager
//! (`python -m moto.server`, from `moto[server]` in the end-to-end suites' virtualenv,
//! `e2e/python.sh`), one server at a time, in the same run, with the same client, connections and
//! duration: SigV4-signed requests pre-signed before the clock starts, closed-loop clients on
//! keep-alive connections, wrk-style (see `benches/common/mod.rs`). moto's development server
//! closes the connection after every answer, so the client opens a new one for the next request
//! (the `conns opened` column); coffer keeps them open. The report gives req/s, p50, p99 and max
//! for each, and coffer against moto as ratios measured in this run. If moto cannot be started
//! the report says so loudly and still gives coffer's figures.
//!
//! Environment: `BENCH_CONNECTIONS` (default 64), `BENCH_SECONDS` (measured seconds per
//! operation and server, default 10), `BENCH_CLIENT_THREADS` (default 1), `COFFER_BIN`. The
//! server binary must already be built (`make bench` builds it). Output: a table on stdout, then
//! the same figures as one JSON object on the last line.

// A load tool run by hand (`make bench`): a failure ends the run with its message.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use aws_credential_types::Credentials;
use common::{
    Config, Machine, Moto, OTHER_LOAD_WARNING, OnClose, PhaseResult, Presigned, Server, Signer,
    WARM_UP, client_runtime, not_measured_line, read_loadavg, run_phase, send_once, server_binary,
};
use rand::Rng as _;
use serde_json::{Value, json};

/// The secret every request reads or writes.
const SECRET_NAME: &str = "bench/4k";
/// Length of its SecretString, and of every value PutSecretValue writes.
const SECRET_LEN: usize = 4096;
/// Distinct pre-signed requests per operation; replayed round-robin.
const POOL_SIZE: usize = 2000;
/// The SigV4 service name.
const SERVICE: &str = "secretsmanager";
/// The targets, on 2 cores: GetSecretValue per second, and times moto's rate.
const TARGET_GETS_PER_SECOND: f64 = 30_000.0;
const TARGET_TIMES_MOTO: f64 = 50.0;

fn main() {
    let config = Config::from_env();
    let machine = Machine::probe();
    println!(
        "Coffer Secrets Manager benchmark beside moto: {} connections, {} s warm-up + {} s measured per operation and server",
        config.connections,
        WARM_UP.as_secs(),
        config.seconds
    );
    println!("(setting up; the table follows when every measurement is done)");

    let (coffer, client_threads) = run_coffer(&config);
    let moto = match catch_unwind(AssertUnwindSafe(|| run_moto(&config))) {
        Ok(Ok(moto)) => Ok(moto),
        Ok(Err(why)) => Err(why),
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_else(|| "the moto run panicked".to_owned())),
    };
    if let Err(why) = &moto {
        println!("{}", not_measured_line(why));
    }
    let report = Report {
        config,
        machine,
        load_at_end: read_loadavg(),
        client_threads,
        coffer,
        moto,
    };
    report.print_table();
    println!("{}", report.to_json());
}

/// The figures of one server.
struct Target {
    /// `coffer` or `moto`.
    name: &'static str,
    /// What exactly ran: the binary, or moto's version.
    what: String,
    get: PhaseResult,
    put: PhaseResult,
    /// How the server ended when stopped.
    exit: String,
    /// Lines on the server's stderr that report a problem, and the first of them.
    error_lines: usize,
    first_error: Option<String>,
}

impl Target {
    fn phases(&self) -> [&PhaseResult; 2] {
        [&self.get, &self.put]
    }
}

// ---------------------------------------------------------------------------------------------
// The two servers
// ---------------------------------------------------------------------------------------------

fn run_coffer(config: &Config) -> (Target, usize) {
    let binary = server_binary();
    let mut server = Server::start(&binary);
    let signer = Signer::new(server.credentials(), server.authority.clone(), SERVICE);
    let (runtime, client_threads) = client_runtime();
    let (get, put) = run_workloads(&runtime, &server.authority, &signer, config, server.pid())
        .unwrap_or_else(|why| panic!("coffer: {why}"));
    drop(runtime);
    let stopped = server.stop();
    let exit = format!(
        "{}{}",
        stopped.outcome,
        if stopped.clean {
            " (clean)"
        } else {
            " (NOT CLEAN)"
        }
    );
    let target = Target {
        name: "coffer",
        what: format!("{} (audit log on, throttling off)", binary.display()),
        get,
        put,
        exit,
        error_lines: stopped.error_lines,
        first_error: stopped.first_error,
    };
    (target, client_threads)
}

fn run_moto(config: &Config) -> Result<Target, String> {
    let mut moto = Moto::start()?;
    // moto checks no signature; any access key signs, exactly as for coffer.
    let credentials = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "moto-bench",
    );
    let signer = Signer::new(credentials, moto.authority.clone(), SERVICE);
    let (runtime, _) = client_runtime();
    let measured = run_workloads(&runtime, &moto.authority, &signer, config, moto.pid());
    drop(runtime);
    let (exit, log) = moto.stop();
    let (get, put) = measured?;
    Ok(Target {
        name: "moto",
        what: format!(
            "moto {} (`python -m moto.server`, werkzeug, request log on stderr)",
            moto.version
        ),
        get,
        put,
        exit,
        error_lines: log.error_lines,
        first_error: log.first_error,
    })
}

/// Creates the secret, checks that it reads back, then measures GetSecretValue and
/// PutSecretValue, and checks that the writes landed.
fn run_workloads(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    signer: &Signer,
    config: &Config,
    server_pid: u32,
) -> Result<(PhaseResult, PhaseResult), String> {
    let initial = random_secret_string();
    let create = signer.sign(
        "secretsmanager.CreateSecret",
        json!({"Name": SECRET_NAME, "SecretString": initial}).to_string(),
    );
    runtime.block_on(send_once(addr, &create, "CreateSecret"))?;
    let read = signer.sign(
        "secretsmanager.GetSecretValue",
        json!({"SecretId": SECRET_NAME}).to_string(),
    );
    let current = secret_string(&runtime.block_on(send_once(addr, &read, "GetSecretValue"))?)?;
    if current != initial {
        return Err("GetSecretValue did not return the SecretString just created".to_owned());
    }

    // GetSecretValue by name: the same request, signed POOL_SIZE times before timing.
    let gets: Arc<Vec<Presigned>> = Arc::new(
        (0..POOL_SIZE)
            .map(|_| {
                signer.sign(
                    "secretsmanager.GetSecretValue",
                    json!({"SecretId": SECRET_NAME}).to_string(),
                )
            })
            .collect(),
    );
    let get = runtime.block_on(run_phase(
        "GetSecretValue",
        addr,
        &gets,
        config,
        server_pid,
        OnClose::Reconnect,
    ));

    // PutSecretValue: distinct values and no ClientRequestToken, so each request is a new
    // version (the server draws its id), even when the pool comes round again.
    let values: Vec<String> = (0..POOL_SIZE).map(|_| random_secret_string()).collect();
    let puts: Arc<Vec<Presigned>> = Arc::new(
        values
            .iter()
            .map(|value| {
                signer.sign(
                    "secretsmanager.PutSecretValue",
                    json!({"SecretId": SECRET_NAME, "SecretString": value}).to_string(),
                )
            })
            .collect(),
    );
    let first = runtime.block_on(send_once(addr, &puts[0], "PutSecretValue"))?;
    let version: Value = serde_json::from_slice(&first)
        .map_err(|err| format!("PutSecretValue answered invalid JSON: {err}"))?;
    if !version["VersionId"].is_string() {
        return Err(format!(
            "PutSecretValue answered no VersionId: {}",
            String::from_utf8_lossy(&first)
        ));
    }
    let put = runtime.block_on(run_phase(
        "PutSecretValue",
        addr,
        &puts,
        config,
        server_pid,
        OnClose::Reconnect,
    ));
    let current = secret_string(&runtime.block_on(send_once(addr, &read, "GetSecretValue"))?)?;
    if !values.contains(&current) {
        return Err(
            "after PutSecretValue, GetSecretValue returned a value that was never put".to_owned(),
        );
    }
    Ok((get, put))
}

/// 4096 random characters from a 64-character alphabet that JSON carries unescaped.
fn random_secret_string() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = vec![0u8; SECRET_LEN];
    rand::rng().fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte % 64)]))
        .collect()
}

fn secret_string(body: &[u8]) -> Result<String, String> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| format!("GetSecretValue answered invalid JSON: {err}"))?;
    value["SecretString"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "GetSecretValue answered no SecretString".to_owned())
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

struct Report {
    config: Config,
    machine: Machine,
    load_at_end: String,
    client_threads: usize,
    coffer: Target,
    /// `Err` says why moto was not measured.
    moto: Result<Target, String>,
}

/// coffer against moto for one operation: req/s coffer/moto, and latency moto/coffer (both
/// above 1 when coffer is the faster).
struct Ratio {
    throughput: f64,
    p50: f64,
    p99: f64,
}

impl Ratio {
    fn of(coffer: &PhaseResult, moto: &PhaseResult) -> Option<Self> {
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

impl Report {
    fn targets(&self) -> Vec<&Target> {
        let mut targets = vec![&self.coffer];
        if let Ok(moto) = &self.moto {
            targets.push(moto);
        }
        targets
    }

    fn ratios(&self) -> [Option<Ratio>; 2] {
        let moto = self.moto.as_ref().ok();
        [
            moto.and_then(|moto| Ratio::of(&self.coffer.get, &moto.get)),
            moto.and_then(|moto| Ratio::of(&self.coffer.put, &moto.put)),
        ]
    }

    fn print_table(&self) {
        self.machine.print(&self.load_at_end, self.client_threads);

        println!();
        println!(
            "Secrets Manager API over HTTP: SigV4 (pre-signed), {} connections, secret `{SECRET_NAME}` with a {} KiB SecretString;",
            self.config.connections,
            SECRET_LEN / 1024
        );
        println!(
            "GetSecretValue by name; PutSecretValue of {POOL_SIZE} distinct 4 KiB values round-robin, no ClientRequestToken"
        );
        println!(
            "(each one a new version). {} s warm-up then {} s measured per operation, one server at a time, same client:",
            WARM_UP.as_secs(),
            self.config.seconds
        );
        for target in self.targets() {
            println!("  {:<7} {}", target.name, target.what);
        }
        println!(
            "  {:<15} {:<7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>12}",
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
        for operation in 0..2 {
            for target in self.targets() {
                let phase = target.phases()[operation];
                println!(
                    "  {:<15} {:<7} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>12}",
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

        println!();
        println!("coffer against moto, measured in this run (above 1: coffer is faster)");
        println!(
            "  {:<15} {:>18} {:>16} {:>16}",
            "operation", "req/s coffer/moto", "p50 moto/coffer", "p99 moto/coffer"
        );
        for (phase, ratio) in self.coffer.phases().iter().zip(self.ratios()) {
            match ratio {
                Some(ratio) => println!(
                    "  {:<15} {:>17.1}× {:>15.1}× {:>15.1}×",
                    phase.operation, ratio.throughput, ratio.p50, ratio.p99
                ),
                None => println!(
                    "  {:<15} {:>18} {:>16} {:>16}",
                    phase.operation, "n/a", "n/a", "n/a"
                ),
            }
        }
        if let Err(why) = &self.moto {
            println!("  {}", not_measured_line(why));
        }

        let gets = self.coffer.get.per_second();
        let verdict = |met: bool| if met { "met" } else { "NOT MET" };
        println!(
            "  targets (set for 2 cores; this machine has {}): GetSecretValue >= {:.0}/s: {:.0}/s, {};",
            self.machine.nproc,
            TARGET_GETS_PER_SECOND,
            gets,
            verdict(gets >= TARGET_GETS_PER_SECOND)
        );
        match &self.ratios()[0] {
            Some(ratio) => println!(
                "    GetSecretValue >= {TARGET_TIMES_MOTO:.0}× moto: {:.1}×, {}",
                ratio.throughput,
                verdict(ratio.throughput >= TARGET_TIMES_MOTO)
            ),
            None => println!(
                "    GetSecretValue >= {TARGET_TIMES_MOTO:.0}× moto: NOT MEASURED (no moto baseline)"
            ),
        }

        println!();
        for target in self.targets() {
            for phase in target.phases() {
                match phase.cpu {
                    Some(cpu) => println!(
                        "  {} {}: CPU in use while measured, in cores of {}: server {:.2}, load generator {:.2}, other {:.2}",
                        target.name,
                        phase.operation,
                        self.machine.nproc,
                        cpu.server,
                        cpu.client,
                        cpu.other
                    ),
                    None => println!(
                        "  {} {}: CPU use not measured (no /proc)",
                        target.name, phase.operation
                    ),
                }
            }
        }
        if self.targets().iter().any(|target| {
            target
                .phases()
                .iter()
                .any(|phase| phase.cpu.is_some_and(|cpu| cpu.other > OTHER_LOAD_WARNING))
        }) {
            println!(
                "  WARNING: other work used the CPU during the measurement; these figures are disturbed"
            );
        }
        for target in self.targets() {
            for phase in target.phases() {
                if phase.warm_up_errors > 0 {
                    println!(
                        "  {} {}: {} errors during warm-up (not in the table)",
                        target.name, phase.operation, phase.warm_up_errors
                    );
                }
                if let Some(error) = &phase.first_error {
                    // moto's errors are HTML pages: one line of them is enough.
                    let error = error.split_whitespace().collect::<Vec<_>>().join(" ");
                    println!(
                        "  {} {}: first error: {error}",
                        target.name, phase.operation
                    );
                }
            }
            println!(
                "  {}: {}; {} error lines on stderr",
                target.name, target.exit, target.error_lines
            );
            if let Some(line) = &target.first_error {
                println!("  {}: first error line: {line}", target.name);
            }
        }
        println!();
    }

    fn to_json(&self) -> String {
        let phase_json = |phase: &PhaseResult| {
            json!({
                "operation": phase.operation,
                "requests": phase.ok,
                "seconds": phase.elapsed.as_secs_f64(),
                "requests_per_second": phase.per_second(),
                "p50_us": phase.percentile_us(50.0),
                "p99_us": phase.percentile_us(99.0),
                "max_us": phase.latency_us.max(),
                "errors": phase.errors,
                "warm_up_errors": phase.warm_up_errors,
                "first_error": phase.first_error,
                "connections_opened": phase.connections_opened,
                "cpu_cores": phase.cpu.map(|cpu| json!({
                    "server": cpu.server,
                    "client": cpu.client,
                    "other": cpu.other,
                })),
            })
        };
        let target_json = |target: &Target| {
            json!({
                "what": target.what,
                "phases": target.phases().map(phase_json),
                "exit": target.exit,
                "error_lines": target.error_lines,
            })
        };
        let ratios: Vec<Value> = self
            .coffer
            .phases()
            .iter()
            .zip(self.ratios())
            .map(|(phase, ratio)| {
                json!({
                    "operation": phase.operation,
                    "requests_per_second_coffer_over_moto": ratio.as_ref().map(|r| r.throughput),
                    "p50_moto_over_coffer": ratio.as_ref().map(|r| r.p50),
                    "p99_moto_over_coffer": ratio.as_ref().map(|r| r.p99),
                })
            })
            .collect();
        json!({
            "bench": "secretsmanager",
            "machine": {
                "nproc": self.machine.nproc,
                "cpu": self.machine.cpu_model,
                "load_average_start": self.machine.load_at_start,
                "load_average_end": self.load_at_end,
                "client_threads": self.client_threads,
                "client_and_server_share_cores": true,
            },
            "connections": self.config.connections,
            "warm_up_seconds": WARM_UP.as_secs(),
            "measured_seconds": self.config.seconds,
            "secret_string_bytes": SECRET_LEN,
            "presigned_pool": POOL_SIZE,
            "coffer": target_json(&self.coffer),
            "moto": match &self.moto {
                Ok(moto) => target_json(moto),
                Err(why) => json!({"not_measured": why}),
            },
            "ratios": ratios,
        })
        .to_string()
    }
}
