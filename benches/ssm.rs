//! `make bench`: throughput and latency of SSM Parameter Store's reads, beside moto's.
//!
//! Three workloads:
//!
//! - `GetParameter` of a String, `/bench/string`, whose value is 1024 characters;
//! - `GetParameter` `WithDecryption` of a SecureString, `/bench/secure`, under the account's
//!   default key, 1024 characters too;
//! - `GetParametersByPath` over `/bench/tree`: 1,000 String parameters in ten groups of a hundred
//!   (`/bench/tree/group-G/param-NNN`), `Recursive`, `MaxResults` 10. Each connection walks the
//!   whole tree page by page, sending the `NextToken` of each answer with the next request, and
//!   starts again from the first page when an answer has no `NextToken`. Since each request
//!   carries a token from the answer before, these requests are signed as they are sent, not
//!   beforehand; the signing is the client's CPU, and is not inside the latency. Reported as
//!   pages per second (the req/s column) and parameters per second.
//!
//! Each runs first against the release binary (`coffer server` on a fresh data directory, audit
//! log on, throttling off, as `benches/kms.rs` runs it), then against moto's SSM
//! (`python -m moto.server`, from `moto[server]` in the end-to-end suites' virtualenv,
//! `e2e/python.sh`), one server at a time, in the same run, with the same client, connections
//! and duration: SigV4-signed closed-loop clients on keep-alive connections, wrk-style (see
//! `benches/common/mod.rs`); moto's development server closes the connection after every
//! answer, so the client opens a new one for the next request (the `conns opened` column). Before
//! measuring, each server is checked: the values read back, the SecureString is not its plaintext
//! without decryption, and one walk of the tree finds every one of the 1,000 parameters once. The
//! report gives req/s, p50, p99 and max for each, coffer against moto as ratios measured in this
//! run, and the targets (GetParameter: 30,000 per second on 2 cores, and 50 times moto) met or
//! not. If either server cannot be started or measured, the report says so loudly and still
//! gives the other's figures.
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

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_credential_types::Credentials;
use common::{
    Config, Connection, CpuSample, CpuUse, Machine, Moto, OTHER_LOAD_WARNING, OnClose, PhaseResult,
    Presigned, Server, Signer, WARM_UP, WorkerResult, client_runtime, new_histogram,
    not_measured_line, read_loadavg, run_phase, send_once, server_binary,
};
use rand::Rng as _;
use serde_json::{Value, json};

/// The String parameter GetParameter reads.
const STRING_NAME: &str = "/bench/string";
/// The SecureString parameter GetParameter reads with decryption.
const SECURE_NAME: &str = "/bench/secure";
/// Length of both values.
const VALUE_LEN: usize = 1024;
/// The hierarchy GetParametersByPath walks: TREE_GROUPS groups of TREE_PER_GROUP parameters.
const TREE_PATH: &str = "/bench/tree";
const TREE_GROUPS: usize = 10;
const TREE_PER_GROUP: usize = 100;
const TREE_SIZE: usize = TREE_GROUPS * TREE_PER_GROUP;
/// GetParametersByPath's largest page, and the one asked for.
const PAGE_SIZE: usize = 10;
/// Distinct pre-signed GetParameter requests per operation; replayed round-robin.
const POOL_SIZE: usize = 2000;
/// The SigV4 service name.
const SERVICE: &str = "ssm";
/// The targets, on 2 cores: GetParameter per second, and times moto's rate.
const TARGET_GETS_PER_SECOND: f64 = 30_000.0;
const TARGET_TIMES_MOTO: f64 = 50.0;
/// The operations, in table order.
const OPERATIONS: [&str; 3] = [
    "GetParameter String",
    "GetParameter SecureString",
    "GetParametersByPath",
];

fn main() {
    let config = Config::from_env();
    let machine = Machine::probe();
    println!(
        "Coffer SSM Parameter Store benchmark beside moto: {} connections, {} s warm-up + {} s measured per operation and server",
        config.connections,
        WARM_UP.as_secs(),
        config.seconds
    );
    println!("(setting up; the table follows when every measurement is done)");

    let (runtime, client_threads) = client_runtime();
    let coffer = caught(|| run_coffer(&runtime, &config));
    if let Err(why) = &coffer {
        println!("{}", coffer_not_measured_line(why));
    }
    let moto = caught(|| run_moto(&runtime, &config));
    if let Err(why) = &moto {
        println!("{}", not_measured_line(why));
    }
    drop(runtime);
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

/// Runs `run`, turning an error or a panic into why the server was not measured.
fn caught(run: impl FnOnce() -> Result<Target, String>) -> Result<Target, String> {
    match catch_unwind(AssertUnwindSafe(run)) {
        Ok(result) => result,
        Err(panic) => Err(panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|text| (*text).to_owned()))
            .unwrap_or_else(|| "the run panicked".to_owned())),
    }
}

fn coffer_not_measured_line(why: &str) -> String {
    format!("=== coffer NOT MEASURED: {why} ===")
}

/// The figures of one server.
struct Target {
    /// `coffer` or `moto`.
    name: &'static str,
    /// What exactly ran: the binary, or moto's version.
    what: String,
    measured: Measured,
    /// How the server ended when stopped.
    exit: String,
    /// Lines on the server's stderr that report a problem, and the first of them.
    error_lines: usize,
    first_error: Option<String>,
}

impl Target {
    fn phases(&self) -> [&PhaseResult; 3] {
        [
            &self.measured.get_string,
            &self.measured.get_secure,
            &self.measured.by_path.phase,
        ]
    }
}

/// The GetParametersByPath figures: pages are the phase's requests.
struct Walks {
    phase: PhaseResult,
    /// Parameters in the pages answered in the measured window.
    parameters: u64,
    /// Walks of the whole tree finished in the measured window.
    walks: u64,
}

impl Walks {
    fn parameters_per_second(&self) -> f64 {
        self.parameters as f64 / self.phase.elapsed.as_secs_f64()
    }
}

// ---------------------------------------------------------------------------------------------
// The two servers
// ---------------------------------------------------------------------------------------------

fn run_coffer(runtime: &tokio::runtime::Runtime, config: &Config) -> Result<Target, String> {
    let binary = server_binary();
    let mut server = Server::start(&binary);
    let signer = Arc::new(Signer::new(
        server.credentials(),
        server.authority.clone(),
        SERVICE,
    ));
    let measured = run_workloads(runtime, &server.authority, &signer, config, server.pid());
    let stopped = server.stop();
    let measured = measured?;
    let exit = format!(
        "{}{}",
        stopped.outcome,
        if stopped.clean {
            " (clean)"
        } else {
            " (NOT CLEAN)"
        }
    );
    Ok(Target {
        name: "coffer",
        what: format!("{} (audit log on, throttling off)", binary.display()),
        measured,
        exit,
        error_lines: stopped.error_lines,
        first_error: stopped.first_error,
    })
}

fn run_moto(runtime: &tokio::runtime::Runtime, config: &Config) -> Result<Target, String> {
    let mut moto = Moto::start()?;
    // moto checks no signature; any access key signs, exactly as for coffer.
    let credentials = Credentials::new(
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        None,
        None,
        "moto-bench",
    );
    let signer = Arc::new(Signer::new(credentials, moto.authority.clone(), SERVICE));
    let measured = run_workloads(runtime, &moto.authority, &signer, config, moto.pid());
    let (exit, log) = moto.stop();
    let measured = measured?;
    Ok(Target {
        name: "moto",
        what: format!(
            "moto {} (`python -m moto.server`, werkzeug, request log on stderr)",
            moto.version
        ),
        measured,
        exit,
        error_lines: log.error_lines,
        first_error: log.first_error,
    })
}

/// Makes the parameters, checks that they read back as they should, then measures the three
/// workloads.
fn run_workloads(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    signer: &Arc<Signer>,
    config: &Config,
    server_pid: u32,
) -> Result<Measured, String> {
    let string_value = random_value();
    let secure_value = random_value();
    for (name, kind, value) in [
        (STRING_NAME, "String", &string_value),
        (SECURE_NAME, "SecureString", &secure_value),
    ] {
        let put = signer.sign(
            "AmazonSSM.PutParameter",
            json!({"Name": name, "Value": value, "Type": kind}).to_string(),
        );
        runtime.block_on(send_once(addr, &put, "PutParameter"))?;
    }
    let get_string = get_request(signer, STRING_NAME, false);
    let get_secure = get_request(signer, SECURE_NAME, true);
    if value_of(&runtime.block_on(send_once(addr, &get_string, "GetParameter"))?)? != string_value {
        return Err("GetParameter did not return the String just put".to_owned());
    }
    if value_of(&runtime.block_on(send_once(addr, &get_secure, "GetParameter"))?)? != secure_value {
        return Err(
            "GetParameter WithDecryption did not return the SecureString just put".to_owned(),
        );
    }
    // Reported, not fatal: moto's "encryption" keeps the plaintext in the value.
    let hidden = get_request(signer, SECURE_NAME, false);
    let plaintext_shown = value_of(&runtime.block_on(send_once(addr, &hidden, "GetParameter"))?)?
        .contains(&secure_value);

    for index in 0..TREE_SIZE {
        let put = signer.sign(
            "AmazonSSM.PutParameter",
            json!({"Name": tree_name(index), "Value": format!("value {index}"), "Type": "String"})
                .to_string(),
        );
        runtime.block_on(send_once(addr, &put, "PutParameter (tree)"))?;
    }
    runtime.block_on(check_one_walk(addr, signer))?;

    let strings: Arc<Vec<Presigned>> = Arc::new(
        (0..POOL_SIZE)
            .map(|_| get_request(signer, STRING_NAME, false))
            .collect(),
    );
    let string_phase = runtime.block_on(run_phase(
        OPERATIONS[0],
        addr,
        &strings,
        config,
        server_pid,
        OnClose::Reconnect,
    ));
    let secures: Arc<Vec<Presigned>> = Arc::new(
        (0..POOL_SIZE)
            .map(|_| get_request(signer, SECURE_NAME, true))
            .collect(),
    );
    let secure_phase = runtime.block_on(run_phase(
        OPERATIONS[1],
        addr,
        &secures,
        config,
        server_pid,
        OnClose::Reconnect,
    ));
    let walks = runtime.block_on(run_walks(addr, signer, config, server_pid));
    Ok(Measured {
        get_string: string_phase,
        get_secure: secure_phase,
        by_path: walks,
        plaintext_shown,
    })
}

/// What run_workloads measured and saw.
struct Measured {
    get_string: PhaseResult,
    get_secure: PhaseResult,
    by_path: Walks,
    /// GetParameter without decryption answered the SecureString's plaintext.
    plaintext_shown: bool,
}

fn get_request(signer: &Signer, name: &str, decrypt: bool) -> Presigned {
    signer.sign(
        "AmazonSSM.GetParameter",
        json!({"Name": name, "WithDecryption": decrypt}).to_string(),
    )
}

fn tree_name(index: usize) -> String {
    format!(
        "{TREE_PATH}/group-{}/param-{:03}",
        index / TREE_PER_GROUP,
        index % TREE_PER_GROUP
    )
}

/// 1024 random characters from a 64-character alphabet that JSON carries unescaped.
fn random_value() -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = vec![0u8; VALUE_LEN];
    rand::rng().fill_bytes(&mut bytes);
    bytes
        .iter()
        .map(|byte| char::from(ALPHABET[usize::from(byte % 64)]))
        .collect()
}

fn value_of(body: &[u8]) -> Result<String, String> {
    let answer: Value = serde_json::from_slice(body)
        .map_err(|err| format!("GetParameter answered invalid JSON: {err}"))?;
    answer["Parameter"]["Value"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| "GetParameter answered no Parameter.Value".to_owned())
}

/// The request for one page of the tree: the first page without a token.
fn page_request(signer: &Signer, token: Option<&str>) -> Presigned {
    let mut body = json!({"Path": TREE_PATH, "Recursive": true, "MaxResults": PAGE_SIZE});
    if let Some(token) = token {
        body["NextToken"] = Value::from(token);
    }
    signer.sign("AmazonSSM.GetParametersByPath", body.to_string())
}

/// A page's parameter names and its NextToken.
fn parse_page(body: &[u8]) -> Result<(Vec<String>, Option<String>), String> {
    let page: Value = serde_json::from_slice(body)
        .map_err(|err| format!("GetParametersByPath answered invalid JSON: {err}"))?;
    let parameters = page["Parameters"]
        .as_array()
        .ok_or("GetParametersByPath answered no Parameters")?;
    let names = parameters
        .iter()
        .map(|parameter| {
            parameter["Name"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| "a parameter without a Name".to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let token = page["NextToken"]
        .as_str()
        .filter(|token| !token.is_empty())
        .map(str::to_owned);
    Ok((names, token))
}

/// Walks the tree once, untimed: every one of its parameters once, no page over PAGE_SIZE.
async fn check_one_walk(addr: &str, signer: &Signer) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    let mut token: Option<String> = None;
    for _ in 0..=TREE_SIZE {
        let request = page_request(signer, token.as_deref());
        let body = send_once(addr, &request, "GetParametersByPath").await?;
        let (names, next) = parse_page(&body)?;
        if names.len() > PAGE_SIZE {
            return Err(format!(
                "GetParametersByPath answered {} parameters for MaxResults {PAGE_SIZE}",
                names.len()
            ));
        }
        for name in names {
            if !seen.insert(name.clone()) {
                return Err(format!("the walk met {name} twice"));
            }
        }
        token = next;
        if token.is_none() {
            let expected: BTreeSet<String> = (0..TREE_SIZE).map(tree_name).collect();
            return if seen == expected {
                Ok(())
            } else {
                Err(format!(
                    "a walk of {TREE_PATH} found {} parameters, not the {TREE_SIZE} put there",
                    seen.len()
                ))
            };
        }
    }
    Err("GetParametersByPath kept handing out NextTokens".to_owned())
}

/// What one walking connection saw.
struct WalkWorker {
    worker: WorkerResult,
    parameters: u64,
    walks: u64,
}

/// Runs `config.connections` closed-loop walkers: warm-up, then the measured window, as
/// `run_phase` does for pre-signed requests.
async fn run_walks(addr: &str, signer: &Arc<Signer>, config: &Config, server_pid: u32) -> Walks {
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
        .map(|_| {
            let (addr, signer) = (addr.to_owned(), Arc::clone(signer));
            tokio::spawn(async move { walk_loop(&addr, &signer, measure_from, stop_at).await })
        })
        .collect();

    let mut walks = Walks {
        phase: PhaseResult {
            operation: OPERATIONS[2],
            ok: 0,
            errors: 0,
            warm_up_errors: 0,
            first_error: None,
            connections_opened: 0,
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
            cpu: None,
        },
        parameters: 0,
        walks: 0,
    };
    let mut last_finished = stop_at;
    for worker in workers {
        let walker = worker.await.expect("a walking task panicked");
        let phase = &mut walks.phase;
        phase.ok += walker.worker.ok;
        phase.errors += walker.worker.errors;
        phase.warm_up_errors += walker.worker.warm_up_errors;
        phase.connections_opened += walker.worker.connections_opened;
        if phase.first_error.is_none() {
            phase.first_error = walker.worker.first_error;
        }
        phase
            .latency_us
            .add(&walker.worker.latency_us)
            .expect("histograms with the same bounds merge");
        last_finished = last_finished.max(walker.worker.finished);
        walks.parameters += walker.parameters;
        walks.walks += walker.walks;
    }
    walks.phase.elapsed = last_finished - measure_from;
    walks.phase.cpu = cpu.await.expect("the CPU sampler panicked");
    walks
}

/// One connection walking the tree again and again. A page counts in the window if its request
/// was sent inside it; an error starts the walk over on a new connection.
async fn walk_loop(
    addr: &str,
    signer: &Signer,
    measure_from: Instant,
    stop_at: Instant,
) -> WalkWorker {
    let mut walker = WalkWorker {
        worker: WorkerResult {
            ok: 0,
            errors: 0,
            warm_up_errors: 0,
            first_error: None,
            connections_opened: 0,
            finished: stop_at,
            latency_us: new_histogram(),
        },
        parameters: 0,
        walks: 0,
    };
    let mut connection: Option<Connection> = None;
    let mut token: Option<String> = None;
    loop {
        let now = Instant::now();
        if now >= stop_at {
            break;
        }
        let measured = now >= measure_from;
        let open = match connection.as_mut() {
            Some(open) => open,
            None => match Connection::open(addr).await {
                Ok(open) => {
                    walker.worker.connections_opened += 1;
                    connection.insert(open)
                }
                Err(message) => {
                    walker.worker.note_error(measured, message);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let request = page_request(signer, token.as_deref());
        let sent_at = Instant::now();
        let outcome = match open.exchange(&request.wire).await {
            Ok(answer) if answer.status == 200 => {
                let latency = sent_at.elapsed();
                parse_page(answer.body)
                    .map(|(names, next)| (names.len(), next, answer.closing, latency))
            }
            Ok(answer) => Err(answer.error()),
            Err(message) => Err(message),
        };
        match outcome {
            Ok((count, next, closing, latency)) => {
                if measured {
                    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                    walker.worker.latency_us.saturating_record(micros.max(1));
                    walker.worker.ok += 1;
                    walker.parameters += count as u64;
                    if next.is_none() {
                        walker.walks += 1;
                    }
                }
                token = next;
                if closing {
                    // moto closes after every answer: the next page goes on a new connection.
                    connection = None;
                }
            }
            Err(message) => {
                connection = None;
                token = None;
                walker.worker.note_error(measured, message);
            }
        }
    }
    walker.worker.finished = Instant::now();
    walker
}

// ---------------------------------------------------------------------------------------------
// The report
// ---------------------------------------------------------------------------------------------

struct Report {
    config: Config,
    machine: Machine,
    load_at_end: String,
    client_threads: usize,
    /// `Err` says why a server was not measured.
    coffer: Result<Target, String>,
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
        [&self.coffer, &self.moto]
            .into_iter()
            .filter_map(|target| target.as_ref().ok())
            .collect()
    }

    fn ratios(&self) -> [Option<Ratio>; 3] {
        let (Ok(coffer), Ok(moto)) = (&self.coffer, &self.moto) else {
            return [None, None, None];
        };
        let (ours, theirs) = (coffer.phases(), moto.phases());
        [0, 1, 2].map(|operation| Ratio::of(ours[operation], theirs[operation]))
    }

    fn print_table(&self) {
        self.machine.print(&self.load_at_end, self.client_threads);

        println!();
        println!(
            "SSM Parameter Store over HTTP: SigV4, {} connections; GetParameter of a String and of a SecureString",
            self.config.connections
        );
        println!(
            "(WithDecryption), {VALUE_LEN} characters each, pre-signed ({POOL_SIZE} per operation, round-robin);"
        );
        println!(
            "GetParametersByPath walking {TREE_SIZE} parameters under {TREE_PATH} (Recursive) {PAGE_SIZE} per page with NextToken,"
        );
        println!(
            "each page signed as it is sent. {} s warm-up then {} s measured per operation, one server at a time, same client:",
            WARM_UP.as_secs(),
            self.config.seconds
        );
        for target in self.targets() {
            println!("  {:<7} {}", target.name, target.what);
        }
        println!(
            "  {:<26} {:<7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>7} {:>12}",
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
        for operation in 0..3 {
            for target in self.targets() {
                let phase = target.phases()[operation];
                println!(
                    "  {:<26} {:<7} {:>9} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>12}",
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
        for target in self.targets() {
            println!(
                "  {} GetParametersByPath: {:.0} pages/s, {:.0} parameters/s, {} whole walks of the tree",
                target.name,
                target.measured.by_path.phase.per_second(),
                target.measured.by_path.parameters_per_second(),
                target.measured.by_path.walks
            );
        }

        println!();
        println!("coffer against moto, measured in this run (above 1: coffer is faster)");
        println!(
            "  {:<26} {:>18} {:>16} {:>16}",
            "operation", "req/s coffer/moto", "p50 moto/coffer", "p99 moto/coffer"
        );
        for (operation, ratio) in OPERATIONS.iter().zip(self.ratios()) {
            match ratio {
                Some(ratio) => println!(
                    "  {:<26} {:>17.1}× {:>15.1}× {:>15.1}×",
                    operation, ratio.throughput, ratio.p50, ratio.p99
                ),
                None => println!(
                    "  {:<26} {:>18} {:>16} {:>16}",
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

        let verdict = |met: bool| if met { "met" } else { "NOT MET" };
        println!(
            "  targets (set for 2 cores; this machine has {}):",
            self.machine.nproc
        );
        let ratios = self.ratios();
        for operation in 0..2 {
            match &self.coffer {
                Ok(coffer) => {
                    let rate = coffer.phases()[operation].per_second();
                    println!(
                        "    {} >= {:.0}/s: {:.0}/s, {}",
                        OPERATIONS[operation],
                        TARGET_GETS_PER_SECOND,
                        rate,
                        verdict(rate >= TARGET_GETS_PER_SECOND)
                    );
                }
                Err(_) => println!(
                    "    {} >= {TARGET_GETS_PER_SECOND:.0}/s: NOT MET (coffer not measured)",
                    OPERATIONS[operation]
                ),
            }
            match &ratios[operation] {
                Some(ratio) => println!(
                    "    {} >= {TARGET_TIMES_MOTO:.0}× moto: {:.1}×, {}",
                    OPERATIONS[operation],
                    ratio.throughput,
                    verdict(ratio.throughput >= TARGET_TIMES_MOTO)
                ),
                None => println!(
                    "    {} >= {TARGET_TIMES_MOTO:.0}× moto: NOT MEASURED (no figures for one of the two)",
                    OPERATIONS[operation]
                ),
            }
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
            if target.measured.plaintext_shown {
                println!(
                    "  {}: WARNING: GetParameter without decryption answered the SecureString's plaintext",
                    target.name
                );
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
        let target_json = |target: &Result<Target, String>| match target {
            Ok(target) => json!({
                "what": target.what,
                "phases": target.phases().map(phase_json),
                "by_path": {
                    "pages_per_second": target.measured.by_path.phase.per_second(),
                    "parameters": target.measured.by_path.parameters,
                    "parameters_per_second": target.measured.by_path.parameters_per_second(),
                    "walks": target.measured.by_path.walks,
                },
                "secure_string_plaintext_without_decryption": target.measured.plaintext_shown,
                "exit": target.exit,
                "error_lines": target.error_lines,
            }),
            Err(why) => json!({"not_measured": why}),
        };
        let ratios: Vec<Value> = OPERATIONS
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
            "bench": "ssm",
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
            "value_characters": VALUE_LEN,
            "presigned_pool": POOL_SIZE,
            "tree_parameters": TREE_SIZE,
            "page_size": PAGE_SIZE,
            "coffer": target_json(&self.coffer),
            "moto": target_json(&self.moto),
            "ratios": ratios,
            "targets": {
                "get_parameter_per_second": TARGET_GETS_PER_SECOND,
                "times_moto": TARGET_TIMES_MOTO,
            },
        })
        .to_string()
    }
}
