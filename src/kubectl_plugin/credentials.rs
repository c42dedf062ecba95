//! The bearer token `kubectl coffer` presents to the Coffer API.
//!
//! The Coffer API authenticates callers with ServiceAccount tokens for the audience `coffer`
//! (TokenReview; docs/authorization.md), so the kubeconfig user must present one:
//!
//! - a user whose kubeconfig entry holds such a token (`token`, `tokenFile`, or an `exec`
//!   credential plugin that prints one), e.g. made with `kubectl create token SA --audience
//!   coffer`; or
//! - any user allowed to request one (`create` on `serviceaccounts/token`), with
//!   `--service-account NAME`: a ten-minute token for that ServiceAccount of the namespace is
//!   requested with the kubeconfig's credentials, and the call is made as that ServiceAccount.
//!
//! Client-certificate, basic-auth and auth-provider users have no token for Coffer; a token
//! whose `aud` does not name `coffer` (an OIDC token, or a ServiceAccount token for the API
//! server) is refused before it is sent, with a message saying so.

use std::collections::HashMap;
use std::process::Stdio;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Api;
use kube::api::PostParams;
use kube::config::AuthInfo;
use secrecy::ExposeSecret as _;
use serde::Deserialize;
use zeroize::Zeroizing;

use super::PluginError;
use super::kube_context::KubeContext;
use crate::aws::kube_identity::DEFAULT_AUDIENCE;

/// How long a token requested with `--service-account` lives.
const REQUESTED_TOKEN_SECONDS: i64 = 600;

/// The token to present, for `--service-account` or else the kubeconfig user.
pub async fn bearer_token(
    context: &KubeContext,
    service_account: Option<&str>,
) -> Result<Zeroizing<String>, PluginError> {
    let token = match service_account {
        Some(name) => request_token(context, name).await?,
        None => kubeconfig_token(&context.config.auth_info, &context.user_name).await?,
    };
    check_audience(&token, &context.user_name)?;
    Ok(token)
}

async fn request_token(
    context: &KubeContext,
    name: &str,
) -> Result<Zeroizing<String>, PluginError> {
    let accounts: Api<ServiceAccount> = Api::namespaced(context.client.clone(), &context.namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![DEFAULT_AUDIENCE.to_owned()],
            expiration_seconds: Some(REQUESTED_TOKEN_SECONDS),
            bound_object_ref: None,
        },
        ..TokenRequest::default()
    };
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .map_err(PluginError::kube(format!(
            "requesting a token for ServiceAccount {}/{name}",
            context.namespace
        )))?;
    let token = Zeroizing::new(answer.status.map(|status| status.token).unwrap_or_default());
    if token.is_empty() {
        return Err(PluginError::Credentials {
            user: context.user_name.clone(),
            reason: format!(
                "got no token for ServiceAccount {name} (TokenRequest answered without one)"
            ),
        });
    }
    Ok(token)
}

/// The token of the kubeconfig user: `token`, `tokenFile`, or what an `exec` plugin prints.
pub async fn kubeconfig_token(
    auth: &AuthInfo,
    user: &str,
) -> Result<Zeroizing<String>, PluginError> {
    let refuse = |reason: &str| PluginError::Credentials {
        user: user.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(token) = &auth.token {
        return Ok(Zeroizing::new(token.expose_secret().trim().to_owned()));
    }
    if let Some(path) = &auth.token_file {
        let text = Zeroizing::new(
            tokio::fs::read_to_string(path)
                .await
                .map_err(PluginError::file(path))?,
        );
        return Ok(Zeroizing::new(text.trim().to_owned()));
    }
    if let Some(exec) = &auth.exec {
        return exec_token(exec, user).await;
    }
    if auth.client_certificate.is_some() || auth.client_certificate_data.is_some() {
        return Err(refuse(
            "authenticates with a client certificate, not a token",
        ));
    }
    if auth.username.is_some() {
        return Err(refuse("authenticates with a password, not a token"));
    }
    if auth.auth_provider.is_some() {
        return Err(refuse(
            "uses an auth-provider plugin, which is not supported",
        ));
    }
    Err(refuse("has no token"))
}

#[derive(Deserialize)]
struct ExecCredential {
    status: Option<ExecCredentialStatus>,
}

#[derive(Deserialize)]
struct ExecCredentialStatus {
    token: Option<String>,
}

impl Drop for ExecCredentialStatus {
    fn drop(&mut self) {
        if let Some(token) = self.token.as_mut() {
            zeroize::Zeroize::zeroize(token);
        }
    }
}

/// Runs a client-go credential plugin as kubectl does, non-interactively, and takes its token.
async fn exec_token(
    exec: &kube::config::ExecConfig,
    user: &str,
) -> Result<Zeroizing<String>, PluginError> {
    let refuse = |reason: String| PluginError::Credentials {
        user: user.to_owned(),
        reason,
    };
    let command = exec
        .command
        .as_deref()
        .ok_or_else(|| refuse("has an exec credential plugin without a command".to_owned()))?;
    let api_version = exec
        .api_version
        .clone()
        .unwrap_or_else(|| "client.authentication.k8s.io/v1".to_owned());
    let info = serde_json::json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "spec": {"interactive": false},
    });
    let mut process = tokio::process::Command::new(command);
    for name in exec.drop_env.iter().flatten() {
        process.env_remove(name);
    }
    process
        .args(exec.args.iter().flatten())
        .envs(
            exec.env
                .iter()
                .flatten()
                .filter_map(|pair: &HashMap<String, String>| {
                    Some((pair.get("name")?.clone(), pair.get("value")?.clone()))
                }),
        )
        .env("KUBERNETES_EXEC_INFO", info.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .stdout(Stdio::piped());
    let output = process.output().await.map_err(|err| {
        refuse(format!(
            "has an exec credential plugin {command:?} that could not run: {err}"
        ))
    })?;
    let stdout = Zeroizing::new(output.stdout);
    if !output.status.success() {
        return Err(refuse(format!(
            "has an exec credential plugin {command:?} that failed ({})",
            output.status
        )));
    }
    let credential: ExecCredential = serde_json::from_slice(&stdout).map_err(|_| {
        refuse(format!(
            "has an exec credential plugin {command:?} whose output is not an ExecCredential"
        ))
    })?;
    credential
        .status
        .as_ref()
        .and_then(|status| status.token.as_deref())
        .filter(|token| !token.is_empty())
        .map(|token| Zeroizing::new(token.to_owned()))
        .ok_or_else(|| {
            refuse(format!(
                "has an exec credential plugin {command:?} that gives no token (a client certificate, perhaps)"
            ))
        })
}

/// The `aud` claim of a JWT, read without checking the signature (the API server does that):
/// only to say early, and clearly, that a token is not meant for Coffer.
pub fn audiences(token: &str) -> Option<Vec<String>> {
    crate::aws::kube_identity::unverified_claims(token).map(|claims| claims.audiences)
}

/// Refuses, before sending it, a token that is not a JWT for the audience `coffer`.
pub fn check_audience(token: &str, user: &str) -> Result<(), PluginError> {
    match audiences(token) {
        None => Err(PluginError::Credentials {
            user: user.to_owned(),
            reason: "has a token that is not a ServiceAccount token (not a JWT)".to_owned(),
        }),
        Some(audiences) if audiences.iter().any(|aud| aud == DEFAULT_AUDIENCE) => Ok(()),
        Some(audiences) => Err(PluginError::Credentials {
            user: user.to_owned(),
            reason: format!(
                "has a token for the audience {audiences:?}, not {DEFAULT_AUDIENCE:?} (make one with `kubectl create token SA --audience {DEFAULT_AUDIENCE}`)"
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.c2ln",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn reads_the_audience_of_a_jwt() {
        assert_eq!(
            audiences(&jwt(serde_json::json!({"aud": ["coffer", "x"]}))),
            Some(vec!["coffer".to_owned(), "x".to_owned()])
        );
        assert_eq!(
            audiences(&jwt(serde_json::json!({"aud": "coffer"}))),
            Some(vec!["coffer".to_owned()])
        );
        assert_eq!(audiences(&jwt(serde_json::json!({}))), Some(vec![]));
        assert_eq!(audiences("opaque-token"), None);
        assert_eq!(audiences("a.b.c.d"), None);
    }

    #[test]
    fn only_tokens_for_coffer_are_sent() {
        check_audience(&jwt(serde_json::json!({"aud": ["coffer"]})), "u").unwrap();
        let err = check_audience(
            &jwt(serde_json::json!({"aud": ["https://kubernetes.default.svc"]})),
            "admin",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kubernetes.default.svc") && err.contains("--audience coffer"),
            "{err}"
        );
        let token = "secret-opaque-token";
        let err = check_audience(token, "admin").unwrap_err().to_string();
        assert!(!err.contains(token), "{err}");
    }

    #[tokio::test]
    async fn kubeconfig_users_without_a_token_are_refused_clearly() {
        let cert_user = AuthInfo {
            client_certificate_data: Some("Y2VydA==".to_owned()),
            ..AuthInfo::default()
        };
        let err = kubeconfig_token(&cert_user, "kind-admin")
            .await
            .unwrap_err();
        assert!(err.to_string().contains("client certificate"), "{err}");
        let token_user = AuthInfo {
            token: Some("abc.def.ghi".to_owned().into()),
            ..AuthInfo::default()
        };
        assert_eq!(
            kubeconfig_token(&token_user, "u").await.unwrap().as_str(),
            "abc.def.ghi"
        );
    }

    #[tokio::test]
    async fn exec_plugins_give_their_token() {
        let exec: kube::config::ExecConfig = serde_json::from_value(serde_json::json!({
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "sh",
            "args": ["-c", r#"printf '{"kind":"ExecCredential","status":{"token":"%s"}}' "$TOKEN""#],
            "env": [{"name": "TOKEN", "value": "x.y.z"}],
        }))
        .unwrap();
        let user = AuthInfo {
            exec: Some(exec),
            ..AuthInfo::default()
        };
        assert_eq!(
            kubeconfig_token(&user, "u").await.unwrap().as_str(),
            "x.y.z"
        );
    }
}
