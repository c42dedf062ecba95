//! The `coffer` command.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use coffer::aws::audit::Rotation;
use coffer::aws::guard::{FrontDoor, RequestLimits};
use coffer::controller::{self, ControllerConfig, RootKeySource};
use coffer::serve::{ConnectionLimits, TlsFiles};
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

        /// Serve Prometheus `/metrics` on this address (plain HTTP) [default: nowhere]. Never
        /// on the API's address, where any caller could read it.
        #[arg(long, env = "COFFER_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,

        /// POST parameter policy notifications (CloudEvents 1.0, JSON) to this URL: https://,
        /// or http:// to a loopback address only [default: the audit log alone].
        #[arg(long, env = "COFFER_PARAMETER_WEBHOOK")]
        parameter_webhook: Option<String>,

        /// File holding the secret that signs webhook bodies (`X-Coffer-Signature:
        /// sha256=HEX`, HMAC-SHA256 of the body); required with --parameter-webhook.
        #[arg(long, env = "COFFER_PARAMETER_WEBHOOK_SECRET_FILE")]
        parameter_webhook_secret_file: Option<PathBuf>,

        #[command(flatten)]
        front_door: FrontDoorArgs,

        #[command(flatten)]
        rotation: RotationArgs,
    },
    /// Run in Kubernetes mode: reconcile KmsKey resources and serve the AWS APIs and the
    /// container-credentials endpoint, with ServiceAccount identities and RBAC. Uses the current
    /// kubeconfig, or the in-cluster ServiceAccount. Every replica serves; the one holding the
    /// Lease reconciles.
    Controller(Box<ControllerArgs>),
    /// Serve the container-credentials endpoint on a pod's loopback, forwarding to the
    /// controller over HTTPS: run as a sidecar, so that AWS SDKs (which take credentials over
    /// plain HTTP only from loopback, and over HTTPS only with their own CA list) get
    /// credentials from a controller whose certificate comes from the cluster's CA.
    CredentialsProxy {
        /// Address and port to listen on; keep it on loopback.
        #[arg(long, env = "COFFER_PROXY_LISTEN", default_value = coffer::credentials_proxy::DEFAULT_LISTEN)]
        listen: SocketAddr,

        /// The controller's API, `https://HOST[:PORT]`.
        #[arg(
            long,
            env = "COFFER_UPSTREAM",
            default_value = "https://coffer.coffer-system.svc:8443"
        )]
        upstream: String,

        /// PEM file of the CA that signed the controller's certificate [default: the system's
        /// CAs].
        #[arg(long, env = "COFFER_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Run the CSI node plugin (driver csi.coffer.dev) for kubelet: mount pods' ephemeral
    /// inline volumes as tmpfs, write their files read with the pod's own ServiceAccount token,
    /// and keep them current as the Secrets and Parameters they come from change.
    Csi(CsiArgs),
    /// Serve the Secrets Store CSI Driver's provider API on a Unix socket: mounts read through
    /// the controller's API as the pod, so a SecretProviderClass switches from `provider: aws`
    /// to `provider: coffer`. Run on every node, beside the driver.
    CsiProvider {
        /// The Unix socket the driver dials (created with mode 0600; a stale one is replaced).
        #[arg(long, env = "COFFER_PROVIDER_SOCKET", default_value = coffer::csi_provider::DEFAULT_SOCKET)]
        socket: PathBuf,

        #[command(flatten)]
        api: ApiClientArgs,
    },
    /// Serve the Kubernetes KMS v2 plugin API on a Unix socket for kube-apiserver, sealing its
    /// data keys under a key in this plugin's own data directory (not the cluster's: it runs
    /// beside kube-apiserver and must not need it). SIGHUP rotates the key.
    KmsPlugin(KmsPluginArgs),
    /// Print the CustomResourceDefinitions as multi-document YAML.
    Crd,
    /// Administer a standalone data directory (while its server is stopped).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

/// How rotations run, in either mode.
#[derive(clap::Args, Debug, Clone)]
struct RotationArgs {
    /// Secret rotations under way at once; rotations that fall due beyond it wait for a slot,
    /// so that many secrets on one schedule do not rotate in one burst.
    #[arg(long, env = "COFFER_MAX_CONCURRENT_ROTATIONS", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=1024))]
    max_concurrent_rotations: u16,

    /// Offer the `job` rotation strategy (controller only): the controller then watches Jobs in
    /// every namespace and makes a Job, ServiceAccount, Role and RoleBinding for each rotation
    /// step that asks for one, which needs RBAC the chart grants only with `rotation.jobs`.
    #[arg(long, env = "COFFER_ROTATION_JOBS")]
    rotation_jobs: bool,

    /// Crash tests only: stretch every rotation step by this many milliseconds.
    #[arg(
        long,
        env = "COFFER_ROTATION_STEP_PAUSE_MS",
        default_value_t = 0,
        hide = true
    )]
    rotation_step_pause_ms: u64,
}

impl RotationArgs {
    fn settings(&self) -> coffer::rotation::RotationSettings {
        coffer::rotation::RotationSettings {
            max_concurrent: usize::from(self.max_concurrent_rotations),
            step_pause: std::time::Duration::from_millis(self.rotation_step_pause_ms),
            jobs: self.rotation_jobs,
        }
    }
}

#[derive(clap::Args)]
struct ControllerArgs {
    /// Address and port of the AWS APIs and of the credentials endpoint (`/v1/credentials`).
    #[arg(long, env = "COFFER_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,

    /// Address and port of `/healthz`, `/readyz` and Prometheus `/metrics` (plain HTTP).
    #[arg(long, env = "COFFER_PROBE_LISTEN", default_value = "0.0.0.0:8080")]
    probe_listen: SocketAddr,

    /// PEM certificate chain for HTTPS on --listen; re-read when the file changes.
    #[arg(
        long,
        env = "COFFER_TLS_CERT",
        requires = "tls_key",
        conflicts_with = "insecure_http"
    )]
    tls_cert: Option<PathBuf>,

    /// PEM private key for HTTPS on --listen; re-read when the file changes.
    #[arg(long, env = "COFFER_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Serve the API over plain HTTP, for development only: tokens and credentials then cross
    /// the network in the clear.
    #[arg(long, env = "COFFER_INSECURE_HTTP")]
    insecure_http: bool,

    /// The controller's own namespace: where the root key Secret and the Lease live.
    #[arg(long, env = "POD_NAMESPACE", default_value = "coffer-system")]
    namespace: String,

    /// Where the root key comes from: `kubernetes` (a Secret in --namespace, created on first
    /// start) or `file` (--root-key-file).
    #[arg(long, env = "COFFER_ROOT_KEY_PROVIDER", value_enum, default_value_t = RootKeyProvider::Kubernetes)]
    root_key_provider: RootKeyProvider,

    /// Name of the root key Secret, for the `kubernetes` provider.
    #[arg(
        long,
        env = "COFFER_ROOT_KEY_SECRET",
        default_value = "coffer-root-key"
    )]
    root_key_secret: String,

    /// Path of the root key file, for the `file` provider (created on first start if absent).
    #[arg(
        long,
        env = "COFFER_ROOT_KEY_FILE",
        required_if_eq("root_key_provider", "file")
    )]
    root_key_file: Option<PathBuf>,

    /// Region named in ARNs.
    #[arg(long, env = "COFFER_REGION", default_value = server::DEFAULT_REGION)]
    region: String,

    /// Name of the Lease (in --namespace) that elects the replica that reconciles.
    #[arg(long, env = "COFFER_LEASE_NAME", default_value = "coffer-controller")]
    lease_name: String,

    /// This replica's name in the Lease [default: the pod name, else the host name and a random
    /// suffix].
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Audience that ServiceAccount tokens must be issued for.
    #[arg(long, env = "COFFER_AUDIENCE", default_value = "coffer")]
    audience: String,

    /// Lifetime of the temporary credentials the credentials endpoint issues, in seconds (900 to
    /// 43200; never past the ServiceAccount token's own expiry).
    #[arg(long, env = "COFFER_CREDENTIALS_LIFETIME", default_value_t = 3600)]
    credentials_lifetime_seconds: u64,

    /// API calls per second allowed per principal (a token bucket); 0 turns throttling off.
    #[arg(long, env = "COFFER_THROTTLE_RPS", default_value_t = 50_000)]
    throttle_rps: u32,

    /// Calls a principal may make in one burst [default: the rate].
    #[arg(long, env = "COFFER_THROTTLE_BURST")]
    throttle_burst: Option<u32>,

    /// Audit trail: `off`, `stderr`, or a file path.
    #[arg(long, env = "COFFER_AUDIT_LOG", default_value = "stderr")]
    audit_log: String,

    /// POST parameter policy notifications (CloudEvents 1.0, JSON) to this URL: https://,
    /// or http:// to a loopback address only [default: Events and the audit log alone].
    #[arg(long, env = "COFFER_PARAMETER_WEBHOOK")]
    parameter_webhook: Option<String>,

    /// File holding the secret that signs webhook bodies (`X-Coffer-Signature:
    /// sha256=HEX`, HMAC-SHA256 of the body); required with --parameter-webhook.
    #[arg(long, env = "COFFER_PARAMETER_WEBHOOK_SECRET_FILE")]
    parameter_webhook_secret_file: Option<PathBuf>,

    #[command(flatten)]
    front_door: FrontDoorArgs,

    #[command(flatten)]
    rotation: RotationArgs,

    /// Seconds to gather changes before rolling a workload annotated
    /// `coffer.dev/restart-on-change`: a burst of changes within it makes one rollout.
    #[arg(long, env = "COFFER_RESTART_DEBOUNCE_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    restart_debounce_seconds: u64,

    /// Do not watch Deployments, StatefulSets and DaemonSets for `coffer.dev/restart-on-change`
    /// (the controller then needs no RBAC on them).
    #[arg(long, env = "COFFER_NO_RESTART_ON_CHANGE")]
    no_restart_on_change: bool,
}

#[derive(clap::Args)]
struct CsiArgs {
    /// The socket kubelet calls: `unix:///PATH` or `/PATH`.
    #[arg(long, env = "CSI_ENDPOINT", default_value = coffer::csi::DEFAULT_ENDPOINT)]
    endpoint: String,

    /// This node's name, as NodeGetInfo answers it.
    #[arg(long, env = "NODE_NAME")]
    node_id: String,

    /// Directory of one state file per volume (made 0700), read on start to take volumes back.
    #[arg(long, env = "COFFER_CSI_STATE_DIR", default_value = coffer::csi::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,

    /// Size limit of each volume's tmpfs, in MiB.
    #[arg(long, env = "COFFER_CSI_VOLUME_SIZE_MIB", default_value_t = coffer::csi::DEFAULT_VOLUME_SIZE_MIB, value_parser = clap::value_parser!(u64).range(1..=1024))]
    volume_size_mib: u64,

    /// Seconds between rewrites of every volume, besides those that changes trigger.
    #[arg(long, env = "COFFER_CSI_RESYNC_SECONDS", default_value_t = coffer::csi::DEFAULT_RESYNC_SECONDS, value_parser = clap::value_parser!(u64).range(10..))]
    resync_seconds: u64,

    #[command(flatten)]
    api: ApiClientArgs,
}

/// How a node-side front end reads through the controller's API as each pod.
#[derive(clap::Args)]
struct ApiClientArgs {
    /// The controller's API, `https://HOST[:PORT]`, read through as each pod.
    #[arg(
        long,
        env = "COFFER_API_ENDPOINT",
        default_value = "https://coffer.coffer-system.svc:8443"
    )]
    api_endpoint: String,

    /// PEM file of the CA that signed the controller's certificate [default: the system's
    /// CAs].
    #[arg(long, env = "COFFER_API_CA_FILE")]
    api_ca_file: Option<PathBuf>,

    /// Audience of the pods' ServiceAccount tokens (the CSIDriver's tokenRequests): the
    /// controller's --audience.
    #[arg(long, env = "COFFER_AUDIENCE", default_value = coffer::delivery::DEFAULT_AUDIENCE)]
    audience: String,
}

/// Timeouts and limits of every listener and of the API.
#[derive(clap::Args)]
struct FrontDoorArgs {
    /// Seconds a connection may take to send a request's headers, counted from when it starts
    /// waiting for a request: it also closes idle keep-alive connections.
    #[arg(long, env = "COFFER_HEADER_TIMEOUT", default_value_t = 10)]
    header_timeout_seconds: u64,

    /// Seconds a request's body may take to arrive.
    #[arg(long, env = "COFFER_BODY_TIMEOUT", default_value_t = 10)]
    body_timeout_seconds: u64,

    /// Seconds from a request's headers to its answer.
    #[arg(long, env = "COFFER_REQUEST_TIMEOUT", default_value_t = 30)]
    request_timeout_seconds: u64,

    /// Connections served at once per listener; more are closed as they arrive.
    #[arg(long, env = "COFFER_MAX_CONNECTIONS", default_value_t = 4096)]
    max_connections: usize,

    /// MiB of request bodies held at once for callers not yet authenticated; more requests
    /// are answered 503 until some finish.
    #[arg(
        long,
        env = "COFFER_MAX_UNAUTHENTICATED_BODY_MIB",
        default_value_t = 64
    )]
    max_unauthenticated_body_mib: usize,

    /// Requests per second that fail to authenticate, per source address, before its requests
    /// are refused and no longer audited; 0 turns the limit off.
    #[arg(long, env = "COFFER_FAILED_AUTH_RPS", default_value_t = 20)]
    failed_authentications_per_second: u32,

    /// MiB the audit file may grow to before it is rotated (to FILE.1, FILE.2, ...).
    #[arg(long, env = "COFFER_AUDIT_MAX_MIB", default_value_t = 100)]
    audit_max_mib: u64,

    /// Rotated audit files kept.
    #[arg(long, env = "COFFER_AUDIT_KEEP", default_value_t = 5)]
    audit_keep: u32,
}

impl FrontDoorArgs {
    fn front_door(&self) -> FrontDoor {
        let seconds = std::time::Duration::from_secs;
        FrontDoor {
            connections: ConnectionLimits {
                header_timeout: seconds(self.header_timeout_seconds),
                max_connections: self.max_connections,
            },
            requests: RequestLimits {
                body_timeout: seconds(self.body_timeout_seconds),
                request_timeout: seconds(self.request_timeout_seconds),
                max_unauthenticated_body_bytes: self
                    .max_unauthenticated_body_mib
                    .saturating_mul(1024 * 1024),
                failed_authentications_per_second: self.failed_authentications_per_second,
            },
            audit_rotation: Rotation {
                max_bytes: self.audit_max_mib.saturating_mul(1024 * 1024),
                keep: self.audit_keep,
            },
        }
    }
}

#[derive(clap::Args)]
struct KmsPluginArgs {
    /// The Unix socket kube-apiserver dials (unix:///PATH or /PATH; created 0600, a stale one
    /// replaced).
    #[arg(long, env = "COFFER_KMS_PLUGIN_SOCKET", default_value = coffer::kms_plugin::DEFAULT_SOCKET)]
    socket: String,

    #[command(flatten)]
    key: KmsPluginKeyArgs,

    /// Rotate the key automatically every this many days (90 to 2560) [default: only on
    /// demand].
    #[arg(long)]
    rotation_period_days: Option<u32>,

    #[command(subcommand)]
    command: Option<KmsPluginCommand>,
}

#[derive(clap::Args)]
struct KmsPluginKeyArgs {
    /// The plugin's data directory: its store and, by default, its root key.
    #[arg(
        long,
        env = "COFFER_KMS_PLUGIN_DATA_DIR",
        global = true,
        default_value = "/var/lib/coffer-kms-plugin"
    )]
    data_dir: PathBuf,

    /// The root key file [default: root-key.json in the data directory; created on first start].
    #[arg(long, env = "COFFER_KMS_PLUGIN_ROOT_KEY_FILE", global = true)]
    root_key_file: Option<PathBuf>,

    /// The key: alias/NAME (created on first start), key id or key ARN.
    #[arg(long, env = "COFFER_KMS_PLUGIN_KEY", global = true, default_value = coffer::kms_plugin::DEFAULT_KEY)]
    key: String,
}

#[derive(Subcommand)]
enum KmsPluginCommand {
    /// Add a key version while the plugin is stopped, and print the new key id (a running
    /// plugin rotates on SIGHUP instead: it holds the store's lock).
    RotateKey,
}

#[derive(Clone, Copy, ValueEnum)]
enum RootKeyProvider {
    /// A core Secret in the controller's namespace.
    Kubernetes,
    /// A mounted file.
    File,
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
        LogFormat::Text => builder.with_ansi(colour_on_stderr()).init(),
        LogFormat::Json => builder.json().with_ansi(false).init(),
    }
}

/// Colours only for a person at a terminal: never in a file or a pipe, and never under
/// `NO_COLOR` (no-color.org).
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
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
            metrics_listen,
            parameter_webhook,
            parameter_webhook_secret_file,
            front_door,
            rotation,
        } => run_server(ServerConfig {
            data_dir: data_dir.unwrap_or_else(server::default_data_dir),
            listen,
            region,
            throttle_per_second: throttle_rps,
            throttle_burst: throttle_burst.unwrap_or(throttle_rps),
            audit_log,
            metrics_listen,
            front_door: front_door.front_door(),
            parameter_webhook,
            parameter_webhook_secret_file,
            rotation: rotation.settings(),
        }),
        Command::Controller(args) => controller_config(*args).and_then(run_controller),
        Command::CredentialsProxy {
            listen,
            upstream,
            ca_file,
        } => run_credentials_proxy(listen, &upstream, ca_file.as_deref()),
        Command::Csi(args) => run_csi(args),
        Command::CsiProvider { socket, api } => run_csi_provider(&socket, api),
        Command::KmsPlugin(args) => run_kms_plugin(args),
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
                .map_err(|err| coffer::redact::chain(&err))
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
            .map_err(|err| coffer::redact::chain(&err))
    })
}

fn controller_config(args: ControllerArgs) -> Result<ControllerConfig, String> {
    let tls = match (args.tls_cert, args.tls_key, args.insecure_http) {
        (Some(cert), Some(key), false) => Some(TlsFiles::new(cert, key)),
        (None, None, true) => None,
        _ => {
            return Err(
                "give --tls-cert and --tls-key, or --insecure-http for plain HTTP in development"
                    .into(),
            );
        }
    };
    let root_key = match (args.root_key_provider, args.root_key_file) {
        (RootKeyProvider::Kubernetes, _) => RootKeySource::Kubernetes {
            secret: args.root_key_secret,
        },
        (RootKeyProvider::File, Some(path)) => RootKeySource::File { path },
        (RootKeyProvider::File, None) => {
            return Err("--root-key-provider file needs --root-key-file".into());
        }
    };
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "coffer".into());
        format!("{host}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
    });
    Ok(ControllerConfig {
        listen: args.listen,
        probe_listen: args.probe_listen,
        tls,
        namespace: args.namespace,
        root_key,
        region: args.region,
        lease_name: args.lease_name,
        identity,
        audience: args.audience,
        credentials_lifetime: std::time::Duration::from_secs(args.credentials_lifetime_seconds),
        throttle_per_second: args.throttle_rps,
        throttle_burst: args.throttle_burst.unwrap_or(args.throttle_rps),
        audit_log: args.audit_log,
        parameter_webhook: args.parameter_webhook,
        parameter_webhook_secret_file: args.parameter_webhook_secret_file,
        front_door: args.front_door.front_door(),
        rotation: args.rotation.settings(),
        restart_debounce: (!args.no_restart_on_change)
            .then(|| std::time::Duration::from_secs(args.restart_debounce_seconds)),
    })
}

fn run_controller(config: ControllerConfig) -> Result<(), String> {
    runtime()?.block_on(async {
        let shutdown = server::shutdown_signal()
            .map_err(|err| format!("cannot install signal handlers: {err}"))?;
        controller::run(config, shutdown)
            .await
            .map_err(|err| coffer::redact::chain(&err))
    })
}

fn run_credentials_proxy(
    listen: SocketAddr,
    upstream: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(), String> {
    runtime()?.block_on(async {
        let proxy = coffer::credentials_proxy::CredentialsProxy::new(upstream, ca_file)
            .map_err(|err| coffer::redact::chain(&err))?;
        let shutdown = server::shutdown_signal()
            .map_err(|err| format!("cannot install signal handlers: {err}"))?;
        coffer::credentials_proxy::run(listen, proxy, shutdown)
            .await
            .map_err(|err| coffer::redact::chain(&err))
    })
}

fn run_csi(args: CsiArgs) -> Result<(), String> {
    let config = coffer::csi::CsiConfig {
        endpoint: args.endpoint,
        node_id: args.node_id,
        state_dir: args.state_dir,
        volume_size_bytes: args.volume_size_mib.saturating_mul(1024 * 1024),
        resync: std::time::Duration::from_secs(args.resync_seconds),
        audience: args.api.audience,
    };
    runtime()?.block_on(async {
        let content = coffer::delivery::ApiContent::new(
            &args.api.api_endpoint,
            args.api.api_ca_file.as_deref(),
        )
        .map_err(|err| coffer::redact::chain(&err))?;
        let shutdown = server::shutdown_signal()
            .map_err(|err| format!("cannot install signal handlers: {err}"))?;
        coffer::csi::run(
            config,
            std::sync::Arc::new(content),
            coffer::csi::feed::kubernetes(),
            shutdown,
        )
        .await
        .map_err(|err| coffer::redact::chain(&err))
    })
}

fn run_csi_provider(socket: &std::path::Path, api: ApiClientArgs) -> Result<(), String> {
    let audience = api.audience;
    runtime()?.block_on(async {
        let content =
            coffer::delivery::ApiContent::new(&api.api_endpoint, api.api_ca_file.as_deref())
                .map_err(|err| coffer::redact::chain(&err))?;
        let shutdown = server::shutdown_signal()
            .map_err(|err| format!("cannot install signal handlers: {err}"))?;
        coffer::csi_provider::run(
            socket,
            coffer::csi_provider::Provider::new(content, audience),
            shutdown,
        )
        .await
        .map_err(|err| coffer::redact::chain(&err))
    })
}

fn run_kms_plugin(args: KmsPluginArgs) -> Result<(), String> {
    let settings = coffer::kms_plugin::PluginSettings {
        data_dir: args.key.data_dir,
        root_key_file: args.key.root_key_file,
        key: args.key.key,
        rotation_period_days: args.rotation_period_days,
    };
    let failed = |err: coffer::kms_plugin::KmsPluginError| coffer::redact::chain(&err);
    runtime()?.block_on(async {
        match args.command {
            Some(KmsPluginCommand::RotateKey) => {
                let key_id = coffer::kms_plugin::rotate_offline(&settings)
                    .await
                    .map_err(failed)?;
                println!("{key_id}");
                Ok(())
            }
            None => {
                let socket = coffer::csi::endpoint::socket_path(&args.socket)
                    .map_err(|err| coffer::redact::chain(&err))?;
                let shutdown = server::shutdown_signal()
                    .map_err(|err| format!("cannot install signal handlers: {err}"))?;
                coffer::kms_plugin::run(&settings, &socket, shutdown)
                    .await
                    .map_err(failed)
            }
        }
    })
}

fn print_crds() -> Result<(), String> {
    let yaml = coffer::resources::crds_yaml().map_err(|err| coffer::redact::chain(&err))?;
    print!("{yaml}");
    Ok(())
}
