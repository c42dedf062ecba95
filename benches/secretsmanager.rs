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

use std::sync::Arc;

use common::{
    BesideMoto, Config, Machine, OnClose, PhaseResult, Phases, Presigned, Signer, WARM_UP, caught,
    client_runtime, not_measured_line, random_text, read_loadavg, run_coffer, run_moto, run_phase,
    send_once, verdict,
};
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
/// The operations, in table order.
const OPERATIONS: &[&str] = &["GetSecretValue", "PutSecretValue"];

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

    // Each server gets a client runtime of its own, dropped before the server is stopped.
    let mut client_threads = 0;
    let coffer = run_coffer(SERVICE, |addr, signer, pid| {
        let (runtime, threads) = client_runtime();
        client_threads = threads;
        run_workloads(&runtime, addr, signer, &config, pid)
    })
    .unwrap_or_else(|why| panic!("coffer: {why}"));
    let moto = caught(
        || {
            run_moto(SERVICE, |addr, signer, pid| {
                let (runtime, _) = client_runtime();
                run_workloads(&runtime, addr, signer, &config, pid)
            })
        },
        "the moto run panicked",
    );
    if let Err(why) = &moto {
        println!("{}", not_measured_line(why));
    }
    let report = BesideMoto {
        operations: OPERATIONS,
        config,
        machine,
        load_at_end: read_loadavg(),
        client_threads,
        coffer: Ok(coffer),
        moto,
    };
    print_table(&report);
    println!("{}", to_json(&report));
}

/// What run_workloads measured.
struct Measured {
    get: PhaseResult,
    put: PhaseResult,
}

impl Phases for Measured {
    fn phases(&self) -> Vec<&PhaseResult> {
        vec![&self.get, &self.put]
    }
}

// ---------------------------------------------------------------------------------------------
// The workloads, on either server
// ---------------------------------------------------------------------------------------------

/// Creates the secret, checks that it reads back, then measures GetSecretValue and
/// PutSecretValue, and checks that the writes landed.
fn run_workloads(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    signer: &Signer,
    config: &Config,
    server_pid: u32,
) -> Result<Measured, String> {
    let initial = random_text(SECRET_LEN);
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
        OPERATIONS[0],
        addr,
        &gets,
        config,
        server_pid,
        OnClose::Reconnect,
    ));

    // PutSecretValue: distinct values and no ClientRequestToken, so each request is a new
    // version (the server draws its id), even when the pool comes round again.
    let values: Vec<String> = (0..POOL_SIZE).map(|_| random_text(SECRET_LEN)).collect();
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
        OPERATIONS[1],
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
    Ok(Measured { get, put })
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

fn print_table(report: &BesideMoto<Measured>) {
    report
        .machine
        .print(&report.load_at_end, report.client_threads);

    println!();
    println!(
        "Secrets Manager API over HTTP: SigV4 (pre-signed), {} connections, secret `{SECRET_NAME}` with a {} KiB SecretString;",
        report.config.connections,
        SECRET_LEN / 1024
    );
    println!(
        "GetSecretValue by name; PutSecretValue of {POOL_SIZE} distinct 4 KiB values round-robin, no ClientRequestToken"
    );
    println!(
        "(each one a new version). {} s warm-up then {} s measured per operation, one server at a time, same client:",
        WARM_UP.as_secs(),
        report.config.seconds
    );
    report.print_servers();
    report.print_ratios();

    // coffer was measured: the run ends before the report when it cannot be.
    if let Ok(coffer) = &report.coffer {
        let gets = coffer.measured.get.per_second();
        println!(
            "  targets (set for 2 cores; this machine has {}): GetSecretValue >= {:.0}/s: {:.0}/s, {};",
            report.machine.nproc,
            TARGET_GETS_PER_SECOND,
            gets,
            verdict(gets >= TARGET_GETS_PER_SECOND)
        );
    }
    match &report.ratios()[0] {
        Some(ratio) => println!(
            "    GetSecretValue >= {TARGET_TIMES_MOTO:.0}× moto: {:.1}×, {}",
            ratio.throughput,
            verdict(ratio.throughput >= TARGET_TIMES_MOTO)
        ),
        None => println!(
            "    GetSecretValue >= {TARGET_TIMES_MOTO:.0}× moto: NOT MEASURED (no moto baseline)"
        ),
    }

    report.print_closing();
}

fn to_json(report: &BesideMoto<Measured>) -> String {
    let mut json = report.to_json("secretsmanager");
    json["secret_string_bytes"] = json!(SECRET_LEN);
    json["presigned_pool"] = json!(POOL_SIZE);
    json.to_string()
}
