//! `kubectl coffer`: a kubectl plugin for Coffer (docs/kubectl-coffer.md).
//!
//! The binary (`src/bin/kubectl-coffer.rs`) only parses the command line and calls [`run`];
//! everything else lives here, one file per command:
//!
//! - [`seal`]: `seal` and `public-key`, sealed values for Secret and Parameter manifests, made
//!   with [`crate::crypto::sealed::seal`] from a KmsKey's public key or a saved key file.
//! - [`get`], [`rotate`]: `get`, `rotate` and `history` through the Coffer API ([`api`]), as the
//!   kubeconfig's user ([`credentials`]).
//! - [`status`]: the health of an install.
//!
//! No plaintext is ever written anywhere but where the user asked for it (the value `get`
//! prints); plaintexts are held in zeroizing buffers.

pub mod api;
pub mod cli;
pub mod credentials;
pub mod get;
pub mod kube_context;
pub mod rotate;
pub mod seal;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;

pub use cli::{Cli, Command};

use crate::crypto::sealed::SealedValueError;
use crate::https_client::TrustError;

/// Exit code of `status` when the install is unhealthy (1 is any error, 2 a usage error).
pub const UNHEALTHY_EXIT_CODE: u8 = 3;

/// Everything that can go wrong in `kubectl coffer`. No message carries a token or a plaintext.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The kubeconfig could not be read or has no usable context.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),

    /// A Kubernetes API call failed.
    #[error("{what}: {source}")]
    Kube {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: kube::Error,
    },

    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// Standard input or output failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },

    /// The value could not be sealed.
    #[error("sealing: {0}")]
    Sealing(#[from] SealedValueError),

    /// The KmsKey named by `--key` does not exist.
    #[error("KmsKey {namespace}/{name} not found")]
    KeyNotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },

    /// The KmsKey cannot seal values (not RSA, not ENCRYPT_DECRYPT, not ready yet).
    #[error("KmsKey {namespace}/{name} cannot seal values: {reason}")]
    KeyUnusable {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// Why.
        reason: String,
    },

    /// A saved public key file is malformed.
    #[error("public key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// A saved public key belongs to another namespace than the one sealed for.
    #[error(
        "the public key file holds a key of namespace {key_namespace}, but the value is sealed for namespace {target_namespace}: a sealed value opens only with a KmsKey of its own namespace"
    )]
    KeyNamespace {
        /// The key's namespace.
        key_namespace: String,
        /// The namespace sealed for.
        target_namespace: String,
    },

    /// The command line is inconsistent in a way clap cannot express.
    #[error("{0}")]
    Usage(String),

    /// The API endpoint is not acceptable.
    #[error("endpoint {endpoint}: {reason}")]
    Endpoint {
        /// The endpoint.
        endpoint: String,
        /// Why it is refused.
        reason: &'static str,
    },

    /// The Coffer Service was not found, and no `--endpoint` was given.
    #[error(
        "no Service {namespace}/{service}: give the Coffer API's address with --endpoint (or --coffer-namespace)"
    )]
    NoService {
        /// The namespace searched.
        namespace: String,
        /// The Service name.
        service: String,
    },

    /// TLS trust could not be set up.
    #[error("TLS: {0}")]
    Tls(#[from] TrustError),

    /// The API could not be reached.
    #[error("the Coffer API at {endpoint} could not be reached: {reason}")]
    Unreachable {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },

    /// The API answered with an AWS exception.
    #[error("{}", api::describe_exception(.code, .message))]
    Api {
        /// The exception name (`__type`).
        code: String,
        /// The server's message.
        message: String,
    },

    /// The API's answer does not parse.
    #[error("the Coffer API sent an answer that does not parse ({0})")]
    MalformedAnswer(&'static str),

    /// The kubeconfig's user has no bearer token to present.
    #[error(
        "the kubeconfig user {user:?} {reason}; the Coffer API takes ServiceAccount tokens for the audience \"coffer\" (see `kubectl coffer get --help`; or use --service-account NAME)"
    )]
    Credentials {
        /// The user's name in the kubeconfig (empty when unknown).
        user: String,
        /// What is missing.
        reason: String,
    },

    /// Something that cannot fail did (a bug, not bad input).
    #[error("internal error: {0}")]
    Internal(&'static str),

    /// A `--property` is absent, or the secret is not a JSON object.
    #[error("{0}")]
    Property(String),
}

impl PluginError {
    pub(crate) fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }

    pub(crate) fn file(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Self::File { path, source }
    }
}

/// Runs one `kubectl coffer` command; the exit code on success (non-zero when `status` finds
/// the install unhealthy).
pub async fn run(cli: Cli) -> Result<ExitCode, PluginError> {
    let Cli { kube, command } = cli;
    match command {
        Command::Seal(args) => seal::run_seal(&kube, args).await,
        Command::PublicKey(args) => seal::run_public_key(&kube, args).await,
        Command::Get(args) => get::run(&kube, args).await,
        Command::Rotate(args) => rotate::run_rotate(&kube, args).await,
        Command::History(args) => rotate::run_history(&kube, args).await,
        Command::Status(args) => status::run(&kube, args).await,
    }
}
