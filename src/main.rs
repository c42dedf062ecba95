//! The `coffer` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use coffer::server::{self, ServerConfig};

#[derive(Parser)]
#[command(
    name = "coffer",
    version,
    about = "Keys, secrets and configuration for Kubernetes, speaking the AWS KMS, Secrets Manager and SSM APIs"
)]
struct Cli {
    /// Log line format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "COFFER_LOG_FORMAT")]
    log_format: LogFormat,

    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the engine standalone on an embedded database, serving the AWS APIs over HTTP.
    Server {
        /// Directory for the database, the root key file and the credentials file
        /// [default: $XDG_DATA_HOME/coffer, else ~/.local/share/coffer].
        #[arg(long, env = "COFFER_DATA_DIR")]
        data_dir: Option<PathBuf>,

        /// Address and port to listen on.
        #[arg(long, env = "COFFER_LISTEN", default_value = server::DEFAULT_LISTEN)]
        listen: SocketAddr,

        /// Region named in ARNs and in the written AWS config file.
        #[arg(long, env = "COFFER_REGION", default_value = server::DEFAULT_REGION)]
        region: String,
    },
    /// Print the CustomResourceDefinitions as multi-document YAML.
    Crd,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COFFER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let outcome = match cli.command {
        Command::Server {
            data_dir,
            listen,
            region,
        } => run_server(ServerConfig {
            data_dir: data_dir.unwrap_or_else(server::default_data_dir),
            listen,
            region,
        }),
        Command::Crd => print_crds(),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("coffer: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_server(config: ServerConfig) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))?;
    runtime
        .block_on(server::run(config, server::shutdown_signal()))
        .map_err(|err| err.to_string())
}

fn print_crds() -> Result<(), String> {
    let yaml = coffer::resources::crds_yaml().map_err(|err| err.to_string())?;
    print!("{yaml}");
    Ok(())
}
