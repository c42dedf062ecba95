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
use std::sync::Arc;
use std::time::Instant;

use common::{
    BesideMoto, Config, Connection, Machine, OnClose, PhaseResult, Phases, Presigned, Signer,
    WARM_UP, WorkerResult, caught, client_runtime, coffer_not_measured_line, not_measured_line,
    random_text, read_loadavg, run_clients, run_coffer, run_moto, run_phase, send_once, verdict,
};
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
const OPERATIONS: &[&str] = &[
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
    let workloads =
        |addr: &str, signer: &Arc<Signer>, pid| run_workloads(&runtime, addr, signer, &config, pid);
    let coffer = caught(|| run_coffer(SERVICE, workloads), "the run panicked");
    if let Err(why) = &coffer {
        println!("{}", coffer_not_measured_line(why));
    }
    let moto = caught(|| run_moto(SERVICE, workloads), "the run panicked");
    if let Err(why) = &moto {
        println!("{}", not_measured_line(why));
    }
    drop(runtime);
    let report = BesideMoto {
        operations: OPERATIONS,
        config,
        machine,
        load_at_end: read_loadavg(),
        client_threads,
        coffer,
        moto,
    };
    print_table(&report);
    println!("{}", to_json(&report));
}

/// What run_workloads measured and saw.
struct Measured {
    get_string: PhaseResult,
    get_secure: PhaseResult,
    by_path: Walks,
    /// GetParameter without decryption answered the SecureString's plaintext.
    plaintext_shown: bool,
}

impl Phases for Measured {
    fn phases(&self) -> Vec<&PhaseResult> {
        vec![&self.get_string, &self.get_secure, &self.by_path.phase]
    }

    fn notes(&self) -> Vec<String> {
        if self.plaintext_shown {
            vec![
                "WARNING: GetParameter without decryption answered the SecureString's plaintext"
                    .to_owned(),
            ]
        } else {
            Vec::new()
        }
    }

    fn add_json(&self, server: &mut Value) {
        server["by_path"] = json!({
            "pages_per_second": self.by_path.phase.per_second(),
            "parameters": self.by_path.parameters,
            "parameters_per_second": self.by_path.parameters_per_second(),
            "walks": self.by_path.walks,
        });
        server["secure_string_plaintext_without_decryption"] = json!(self.plaintext_shown);
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
// The workloads, on either server
// ---------------------------------------------------------------------------------------------

/// Makes the parameters, checks that they read back as they should, then measures the three
/// workloads.
fn run_workloads(
    runtime: &tokio::runtime::Runtime,
    addr: &str,
    signer: &Arc<Signer>,
    config: &Config,
    server_pid: u32,
) -> Result<Measured, String> {
    let string_value = random_text(VALUE_LEN);
    let secure_value = random_text(VALUE_LEN);
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

/// What one walking connection saw besides its pages.
#[derive(Default)]
struct Walked {
    /// Parameters in the pages answered in the measured window.
    parameters: u64,
    /// Walks of the whole tree finished in the measured window.
    walks: u64,
}

/// Runs `config.connections` closed-loop walkers: warm-up, then the measured window, as
/// `run_phase` does for pre-signed requests.
async fn run_walks(addr: &str, signer: &Arc<Signer>, config: &Config, server_pid: u32) -> Walks {
    let (phase, walkers) = run_clients(
        OPERATIONS[2],
        config,
        server_pid,
        |measure_from, stop_at| {
            let (addr, signer) = (addr.to_owned(), Arc::clone(signer));
            async move { walk_loop(&addr, &signer, measure_from, stop_at).await }
        },
    )
    .await;
    Walks {
        phase,
        parameters: walkers.iter().map(|walked| walked.parameters).sum(),
        walks: walkers.iter().map(|walked| walked.walks).sum(),
    }
}

/// One connection walking the tree again and again. A page counts in the window if its request
/// was sent inside it; an error starts the walk over on a new connection.
async fn walk_loop(
    addr: &str,
    signer: &Signer,
    measure_from: Instant,
    stop_at: Instant,
) -> (WorkerResult, Walked) {
    let mut worker = WorkerResult::new(stop_at);
    let mut walked = Walked::default();
    let mut connection: Option<Connection> = None;
    let mut token: Option<String> = None;
    loop {
        let now = Instant::now();
        if now >= stop_at {
            break;
        }
        let measured = now >= measure_from;
        let Some(open) = worker.connection(addr, &mut connection, measured).await else {
            continue;
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
                    worker.record(latency);
                    walked.parameters += count as u64;
                    if next.is_none() {
                        walked.walks += 1;
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
                worker.note_error(measured, message);
            }
        }
    }
    worker.finished = Instant::now();
    (worker, walked)
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
        "SSM Parameter Store over HTTP: SigV4, {} connections; GetParameter of a String and of a SecureString",
        report.config.connections
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
        report.config.seconds
    );
    report.print_servers();
    for target in report.targets() {
        let by_path = &target.measured.by_path;
        println!(
            "  {} GetParametersByPath: {:.0} pages/s, {:.0} parameters/s, {} whole walks of the tree",
            target.name,
            by_path.phase.per_second(),
            by_path.parameters_per_second(),
            by_path.walks
        );
    }
    report.print_ratios();

    println!(
        "  targets (set for 2 cores; this machine has {}):",
        report.machine.nproc
    );
    let ratios = report.ratios();
    for operation in 0..2 {
        match &report.coffer {
            Ok(coffer) => {
                let rate = coffer.measured.phases()[operation].per_second();
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

    report.print_closing();
}

fn to_json(report: &BesideMoto<Measured>) -> String {
    let mut json = report.to_json("ssm");
    json["value_characters"] = json!(VALUE_LEN);
    json["presigned_pool"] = json!(POOL_SIZE);
    json["tree_parameters"] = json!(TREE_SIZE);
    json["page_size"] = json!(PAGE_SIZE);
    json["targets"] = json!({
        "get_parameter_per_second": TARGET_GETS_PER_SECOND,
        "times_moto": TARGET_TIMES_MOTO,
    });
    json.to_string()
}
