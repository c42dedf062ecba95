//! `kubectl-coffer`: the kubectl plugin (`kubectl coffer ...`). The logic is in
//! `coffer::kubectl_plugin`; docs/kubectl-coffer.md describes the commands.

use std::process::ExitCode;

use clap::Parser as _;

use coffer::kubectl_plugin::{self, Cli};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(kubectl_plugin::run(cli)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", coffer::redact::chain(&err));
            ExitCode::FAILURE
        }
    }
}
