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

        /// API calls per second allowed per principal (a token bucket); 0 turns throttling off.
        #[arg(long, env = "COFFER_THROTTLE_RPS", default_value_t = 50_000)]
        throttle_rps: u32,

        /// Calls a principal may make in one burst [default: the rate].
        #[arg(long, env = "COFFER_THROTTLE_BURST")]
        throttle_burst: Option<u32>,

        /// Audit trail: `off`, `stderr`, or a file path [default: DATA_DIR/audit.log].
        #[arg(long, env = "COFFER_AUDIT_LOG")]
        audit_log: Option<String>,
    },
    /// Print the CustomResourceDefinitions as multi-document YAML.
    Crd,
    /// Administer a standalone data directory (while its server is stopped).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an access key for a user and print it as an AWS shared credentials profile.
    CreateAccessKey {
        /// Directory of the standalone server [default: as for `coffer server`].
        #[arg(long, env = "COFFER_DATA_DIR")]
        data_dir: Option<PathBuf>,

        /// The user the key belongs to; its principal is arn:aws:iam::ACCOUNT:user/USER.
        #[arg(long)]
        user: String,

        /// Give the key every permission of the account (otherwise only what key policies grant
        /// this user).
        #[arg(long)]
        admin: bool,

        /// Profile name in the printed credentials.
        #[arg(long, default_value = "coffer-user")]
        profile: String,
    },
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
            throttle_rps,
            throttle_burst,
            audit_log,
        } => run_server(ServerConfig {
            data_dir: data_dir.unwrap_or_else(server::default_data_dir),
            listen,
            region,
            throttle_per_second: throttle_rps,
            throttle_burst: throttle_burst.unwrap_or(throttle_rps),
            audit_log,
        }),
        Command::Crd => print_crds(),
        Command::Admin {
            command:
                AdminCommand::CreateAccessKey {
                    data_dir,
                    user,
                    admin,
                    profile,
                },
        } => runtime().and_then(|runtime| {
            runtime
                .block_on(server::admin::create_access_key(
                    &data_dir.unwrap_or_else(server::default_data_dir),
                    &user,
                    admin,
                    &profile,
                ))
                .map_err(|err| err.to_string())
                .map(|text| print!("{text}"))
        }),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("coffer: error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|err| format!("cannot start the async runtime: {err}"))
}

fn run_server(config: ServerConfig) -> Result<(), String> {
    runtime()?.block_on(async {
        let shutdown = server::shutdown_signal()
            .map_err(|err| format!("cannot install signal handlers: {err}"))?;
        server::run(config, shutdown)
            .await
            .map_err(|err| err.to_string())
    })
}

fn print_crds() -> Result<(), String> {
    let yaml = coffer::resources::crds_yaml().map_err(|err| err.to_string())?;
    print!("{yaml}");
    Ok(())
}
