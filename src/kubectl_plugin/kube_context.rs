//! The cluster, user and namespace of a command, from the kubeconfig as kubectl would pick them.

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::PluginError;
use super::cli::KubeArgs;

/// A connection to the cluster, with what the kubeconfig said about it.
pub struct KubeContext {
    /// The client, authenticated as the kubeconfig's user.
    pub client: Client,
    /// The configuration the client was made from (the user's credentials are in `auth_info`).
    pub config: Config,
    /// The name of the kubeconfig user (for messages), when known.
    pub user_name: String,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl KubeContext {
    /// Reads the kubeconfig (`--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`) for
    /// `--context` (else the current context).
    pub async fn load(args: &KubeArgs) -> Result<Self, PluginError> {
        let kubeconfig = match &args.kubeconfig {
            Some(path) => Kubeconfig::read_from(path),
            None => Kubeconfig::read(),
        }
        .map_err(|err| PluginError::Kubeconfig(err.to_string()))?;
        let context_name = args
            .context
            .clone()
            .or_else(|| kubeconfig.current_context.clone());
        let user_name = context_name
            .as_deref()
            .and_then(|name| {
                kubeconfig
                    .contexts
                    .iter()
                    .find(|context| context.name == name)
            })
            .and_then(|context| context.context.as_ref())
            .and_then(|context| context.user.clone())
            .unwrap_or_default();
        let options = KubeConfigOptions {
            context: args.context.clone(),
            cluster: None,
            user: None,
        };
        let config = Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|err| PluginError::Kubeconfig(err.to_string()))?;
        let namespace = args
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config.clone()).map_err(PluginError::kube("kube client"))?;
        Ok(Self {
            client,
            config,
            user_name,
            namespace,
        })
    }
}
