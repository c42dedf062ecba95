//! The command line of `kubectl coffer`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Where the Coffer controller is installed, by default (the Helm chart's release `coffer`).
pub const DEFAULT_COFFER_NAMESPACE: &str = "coffer-system";
/// The Service, Deployment and chart release name of a default install.
pub const DEFAULT_COFFER_NAME: &str = "coffer";
/// The controller's leader Lease.
pub const DEFAULT_LEASE: &str = "coffer-controller";

/// How the commands that call the Coffer API authenticate, shown after their `--help`.
pub const AUTH_HELP: &str = "\
Authentication: the Coffer API takes ServiceAccount tokens for the audience \"coffer\", and \
authorizes that ServiceAccount with RBAC on secrets.coffer.dev and parameters.coffer.dev.
  - With --service-account NAME, a short-lived token for that ServiceAccount of the namespace is \
requested with the kubeconfig's credentials (needs create on serviceaccounts/token).
  - Otherwise the kubeconfig user's own token is sent (token, tokenFile, or an exec plugin's \
token); it must be a ServiceAccount token for the audience coffer, e.g. from \
`kubectl create token SA --audience coffer`. Client-certificate and other users are refused.";

/// Seal values for Coffer's Secret and Parameter resources, and read, rotate and inspect
/// secrets through the Coffer API.
#[derive(Debug, Parser)]
#[command(name = "kubectl coffer", bin_name = "kubectl coffer", version)]
pub struct Cli {
    #[command(flatten)]
    pub kube: KubeArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Which cluster, user and namespace: the kubeconfig's, as kubectl chooses them.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// Path to the kubeconfig file [default: $KUBECONFIG, else ~/.kube/config].
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,

    /// The kubeconfig context to use [default: its current context].
    #[arg(long, global = true)]
    pub context: Option<String>,

    /// The namespace [default: the context's namespace, else `default`].
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Seal a value (read from standard input or --from-file) into a Secret or Parameter
    /// manifest, bound to its namespace and name. Needs no access to the Coffer API.
    Seal(SealArgs),
    /// Save a KmsKey's public key to a file, for sealing offline with --public-key-file.
    PublicKey(PublicKeyArgs),
    /// Read a secret's value (GetSecretValue) or a parameter's (GetParameter) through the
    /// Coffer API: `get SECRET`, `get secret SECRET`, `get parameter NAME`.
    #[command(after_help = AUTH_HELP)]
    Get(GetArgs),
    /// Start a rotation of a secret (RotateSecret).
    #[command(after_help = AUTH_HELP)]
    Rotate(RotateArgs),
    /// List a secret's versions and their staging labels (ListSecretVersionIds).
    #[command(after_help = AUTH_HELP)]
    History(HistoryArgs),
    /// Check the install: CRDs, the controller's Deployment and leader Lease, the API.
    /// Exits with 3 when something is unhealthy.
    Status(StatusArgs),
}

/// The kind of resource a sealed value is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SealKind {
    /// A Secret (secrets.coffer.dev): `spec.sealedValue`.
    #[default]
    Secret,
    /// A SecureString Parameter (parameters.coffer.dev): `spec.sealedValue`.
    Parameter,
}

#[derive(Debug, Args)]
pub struct SealArgs {
    /// The name of the Secret or Parameter resource (`metadata.name`); the value opens only
    /// under this name and namespace.
    pub name: String,

    /// The kind of resource to write.
    #[arg(long, value_enum, default_value_t = SealKind::Secret)]
    pub kind: SealKind,

    /// The KmsKey (RSA, ENCRYPT_DECRYPT) of the namespace whose public key seals the value.
    #[arg(
        long,
        value_name = "KMSKEY",
        required_unless_present = "public_key_file",
        conflicts_with = "public_key_file"
    )]
    pub key: Option<String>,

    /// A public key saved with `kubectl coffer public-key`, to seal without the cluster.
    #[arg(long, value_name = "FILE")]
    pub public_key_file: Option<PathBuf>,

    /// Read the value from this file instead of standard input (bytes as they are, a final
    /// newline included).
    #[arg(long, value_name = "FILE")]
    pub from_file: Option<PathBuf>,

    /// For a Parameter: the parameter's name (`spec.name`, e.g. `/app/db/password`)
    /// [default: the resource name].
    #[arg(long, value_name = "NAME")]
    pub parameter_name: Option<String>,

    /// Write the manifest here instead of standard output.
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PublicKeyArgs {
    /// The KmsKey (RSA, ENCRYPT_DECRYPT) of the namespace.
    pub key: String,

    /// Write the key file here instead of standard output.
    #[arg(short = 'o', long = "output-file", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Where the Coffer API is, and whose token to present.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// The Coffer API's URL: https://, or http:// to a loopback address only
    /// [default: the Service `coffer` of --coffer-namespace].
    #[arg(long, env = "COFFER_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// The namespace Coffer is installed in.
    #[arg(long, default_value = DEFAULT_COFFER_NAMESPACE)]
    pub coffer_namespace: String,

    /// The Coffer Service (and Deployment) name.
    #[arg(long, default_value = DEFAULT_COFFER_NAME)]
    pub coffer_service: String,

    /// Trust only the CA certificates in this PEM file for the API's certificate
    /// [default: the system's CAs]. Certificates are always verified.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// Verify the API's certificate for this name instead of the endpoint's host, e.g.
    /// `coffer.coffer-system.svc` through `kubectl port-forward` to https://127.0.0.1:8443.
    #[arg(long, value_name = "NAME")]
    pub tls_server_name: Option<String>,

    /// Instead of the kubeconfig user's own token, present a token for this ServiceAccount of
    /// the namespace, requested with the kubeconfig's credentials (TokenRequest: needs `create`
    /// on `serviceaccounts/token`).
    #[arg(long, value_name = "NAME")]
    pub service_account: Option<String>,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// `secret` or `parameter` followed by a name, or a secret's name alone.
    #[arg(value_name = "KIND_OR_NAME")]
    pub first: String,

    /// The name, when the first argument is a kind.
    #[arg(value_name = "NAME")]
    pub second: Option<String>,

    /// A secret's version by staging label (e.g. AWSPREVIOUS) [default: AWSCURRENT].
    #[arg(long, conflicts_with = "version_id")]
    pub stage: Option<String>,

    /// A secret's version by id.
    #[arg(long)]
    pub version_id: Option<String>,

    /// Print one property of a secret whose value is a JSON object.
    #[arg(long)]
    pub property: Option<String>,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct RotateArgs {
    /// The secret's name or ARN.
    pub secret: String,

    /// Rotate now (true) or only set the rotation up for its schedule (false).
    #[arg(long, default_value_t = true, action = ArgAction::Set, value_name = "BOOL")]
    pub immediately: bool,

    #[command(flatten)]
    pub api: ApiArgs,
}

/// How `history` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum OutputFormat {
    /// A table.
    #[default]
    Table,
    /// The versions as a JSON array.
    Json,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The secret's name or ARN.
    pub secret: String,

    /// Include versions without a staging label.
    #[arg(long)]
    pub include_deprecated: bool,

    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The controller's leader Lease (in --coffer-namespace).
    #[arg(long, default_value = DEFAULT_LEASE)]
    pub lease: String,

    #[command(flatten)]
    pub api: ApiArgs,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kubectl-coffer").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn seal_takes_a_key_or_a_key_file_and_kubectl_flags_anywhere() {
        let cli = parse(&[
            "seal",
            "db",
            "--key",
            "sealing",
            "-n",
            "shop",
            "--context",
            "prod",
        ])
        .unwrap();
        assert_eq!(cli.kube.namespace.as_deref(), Some("shop"));
        assert_eq!(cli.kube.context.as_deref(), Some("prod"));
        let Command::Seal(seal) = cli.command else {
            panic!("not seal")
        };
        assert_eq!(seal.name, "db");
        assert_eq!(seal.kind, SealKind::Secret);
        assert_eq!(seal.key.as_deref(), Some("sealing"));

        let cli = parse(&[
            "--kubeconfig",
            "/k",
            "seal",
            "p",
            "--kind",
            "parameter",
            "--public-key-file",
            "key.json",
            "--parameter-name",
            "/app/p",
            "-o",
            "out.yaml",
        ])
        .unwrap();
        assert_eq!(cli.kube.kubeconfig, Some(PathBuf::from("/k")));
        let Command::Seal(seal) = cli.command else {
            panic!("not seal")
        };
        assert_eq!(seal.kind, SealKind::Parameter);
        assert_eq!(seal.output, Some(PathBuf::from("out.yaml")));

        // Neither, or both, of --key and --public-key-file.
        assert!(parse(&["seal", "db"]).is_err());
        assert!(parse(&["seal", "db", "--key", "k", "--public-key-file", "f"]).is_err());
        assert!(parse(&["seal", "db", "--key", "k", "--kind", "configmap"]).is_err());
    }

    #[test]
    fn get_rotate_history_and_status_options() {
        let cli = parse(&["get", "secret", "db", "--stage", "AWSPREVIOUS"]).unwrap();
        let Command::Get(get) = cli.command else {
            panic!("not get")
        };
        assert_eq!(
            (get.first.as_str(), get.second.as_deref()),
            ("secret", Some("db"))
        );
        assert_eq!(get.api.coffer_namespace, DEFAULT_COFFER_NAMESPACE);
        assert!(parse(&["get", "db", "--stage", "A", "--version-id", "v"]).is_err());

        let cli = parse(&["rotate", "db"]).unwrap();
        let Command::Rotate(rotate) = cli.command else {
            panic!("not rotate")
        };
        assert!(rotate.immediately);
        let cli = parse(&["rotate", "db", "--immediately=false"]).unwrap();
        let Command::Rotate(rotate) = cli.command else {
            panic!("not rotate")
        };
        assert!(!rotate.immediately);

        let cli = parse(&[
            "history",
            "db",
            "-o",
            "json",
            "--endpoint",
            "http://127.0.0.1:1",
        ])
        .unwrap();
        let Command::History(history) = cli.command else {
            panic!("not history")
        };
        assert_eq!(history.output, OutputFormat::Json);
        assert_eq!(history.api.endpoint.as_deref(), Some("http://127.0.0.1:1"));

        let cli = parse(&["status", "--coffer-namespace", "sys"]).unwrap();
        let Command::Status(status) = cli.command else {
            panic!("not status")
        };
        assert_eq!(status.lease, DEFAULT_LEASE);
        assert_eq!(status.api.coffer_namespace, "sys");
    }
}
