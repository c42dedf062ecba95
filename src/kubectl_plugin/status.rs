//! `status`: whether an install is healthy. Each check is a line of a table; any failed check
//! makes the exit code [`super::UNHEALTHY_EXIT_CODE`].
//!
//! - the CRDs `kmskeys`, `secrets` and `parameters` of `coffer.dev`: present and Established;
//! - the controller's Deployment (`--coffer-service`, in `--coffer-namespace`): at least one
//!   ready replica, when it exists (a controller run outside the cluster has none: a warning);
//! - the leader Lease (`--lease`): held, and renewed within its duration;
//! - the API: answers an unauthenticated request as the Coffer API does; and, when the
//!   kubeconfig user has a token for Coffer, accepts it (ListSecrets: AccessDenied still
//!   proves the token was accepted). The second is informational.

use std::process::ExitCode;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use serde_json::json;

use super::api::{Answer, CofferApi, endpoint};
use super::cli::{KubeArgs, StatusArgs};
use super::kube_context::KubeContext;
use super::rotate::table;
use super::seal::write_output;
use super::{PluginError, UNHEALTHY_EXIT_CODE, credentials};

/// The CRDs of an install.
pub const CRDS: [&str; 3] = [
    "kmskeys.coffer.dev",
    "secrets.coffer.dev",
    "parameters.coffer.dev",
];

/// Slack on top of a Lease's duration before its holder counts as gone (clock skew, a slow
/// renewal).
const LEASE_SLACK_SECONDS: i64 = 5;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    /// Worth knowing, not unhealthy.
    Warning,
    Failed,
}

impl Health {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Failed => "FAILED",
        }
    }
}

/// One line of `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: String,
    pub health: Health,
    pub detail: String,
}

impl Check {
    fn new(name: impl Into<String>, health: Health, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            health,
            detail: detail.into(),
        }
    }
}

/// A CRD: present and Established.
pub fn crd_check(name: &str, crd: Option<&CustomResourceDefinition>) -> Check {
    let label = format!("crd {name}");
    let Some(crd) = crd else {
        return Check::new(label, Health::Failed, "not installed");
    };
    let established = crd
        .status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .find(|condition| condition.type_ == "Established");
    match established {
        Some(condition) if condition.status == "True" => {
            let versions: Vec<&str> = crd
                .spec
                .versions
                .iter()
                .filter(|version| version.served)
                .map(|version| version.name.as_str())
                .collect();
            Check::new(
                label,
                Health::Ok,
                format!("Established ({})", versions.join(",")),
            )
        }
        Some(condition) => Check::new(
            label,
            Health::Failed,
            format!(
                "not Established: {}",
                condition.message.as_deref().unwrap_or(&condition.status)
            ),
        ),
        None => Check::new(label, Health::Failed, "not Established yet"),
    }
}

/// The controller's Deployment: at least one ready replica.
pub fn deployment_check(namespace: &str, name: &str, deployment: Option<&Deployment>) -> Check {
    let label = format!("deployment {namespace}/{name}");
    let Some(deployment) = deployment else {
        return Check::new(
            label,
            Health::Warning,
            "not found (fine when the controller runs outside the cluster)",
        );
    };
    let desired = deployment
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let ready = deployment
        .status
        .as_ref()
        .and_then(|status| status.ready_replicas)
        .unwrap_or(0);
    let detail = format!("{ready}/{desired} replicas ready");
    if ready >= 1 {
        Check::new(
            label,
            if ready >= desired {
                Health::Ok
            } else {
                Health::Warning
            },
            detail,
        )
    } else {
        Check::new(label, Health::Failed, detail)
    }
}

/// The leader Lease: held, and renewed within its duration (plus a little slack) of `now`.
pub fn lease_check(namespace: &str, name: &str, lease: Option<&Lease>, now: Timestamp) -> Check {
    let label = format!("lease {namespace}/{name}");
    let Some(spec) = lease.and_then(|lease| lease.spec.as_ref()) else {
        return Check::new(label, Health::Failed, "no leader: the Lease does not exist");
    };
    let Some(holder) = spec
        .holder_identity
        .as_deref()
        .filter(|holder| !holder.is_empty())
    else {
        return Check::new(label, Health::Failed, "no leader: the Lease is not held");
    };
    let Some(renewed) = spec.renew_time.as_ref() else {
        return Check::new(
            label,
            Health::Failed,
            format!("held by {holder}, never renewed"),
        );
    };
    let age = now.duration_since(renewed.0).as_secs();
    let duration = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let detail = format!("held by {holder}, renewed {age}s ago (duration {duration}s)");
    if age > duration + LEASE_SLACK_SECONDS {
        Check::new(label, Health::Failed, format!("{detail}: expired"))
    } else {
        Check::new(label, Health::Ok, detail)
    }
}

/// `kubectl coffer status`.
pub async fn run(kube: &KubeArgs, args: StatusArgs) -> Result<ExitCode, PluginError> {
    let context = KubeContext::load(kube).await?;
    let mut checks = Vec::new();

    let crds: Api<CustomResourceDefinition> = Api::all(context.client.clone());
    for name in CRDS {
        checks.push(match crds.get_opt(name).await {
            Ok(crd) => crd_check(name, crd.as_ref()),
            Err(err) => Check::new(format!("crd {name}"), Health::Failed, err.to_string()),
        });
    }

    let namespace = &args.api.coffer_namespace;
    let deployments: Api<Deployment> = Api::namespaced(context.client.clone(), namespace);
    checks.push(match deployments.get_opt(&args.api.coffer_service).await {
        Ok(found) => deployment_check(namespace, &args.api.coffer_service, found.as_ref()),
        Err(err) => Check::new(
            format!("deployment {namespace}/{}", args.api.coffer_service),
            Health::Failed,
            err.to_string(),
        ),
    });

    let leases: Api<Lease> = Api::namespaced(context.client.clone(), namespace);
    checks.push(match leases.get_opt(&args.lease).await {
        Ok(found) => lease_check(namespace, &args.lease, found.as_ref(), Timestamp::now()),
        Err(err) => Check::new(
            format!("lease {namespace}/{}", args.lease),
            Health::Failed,
            err.to_string(),
        ),
    });

    checks.extend(api_checks(&context, &args).await);

    let rows: Vec<[String; 3]> = checks
        .iter()
        .map(|check| {
            [
                check.name.clone(),
                check.health.as_str().to_owned(),
                check.detail.clone(),
            ]
        })
        .collect();
    write_output(
        None,
        table(&["CHECK", "STATUS", "DETAIL"], &rows).as_bytes(),
    )?;
    if checks.iter().any(|check| check.health == Health::Failed) {
        Ok(ExitCode::from(UNHEALTHY_EXIT_CODE))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

async fn api_checks(context: &KubeContext, args: &StatusArgs) -> Vec<Check> {
    let endpoint = match endpoint(context, &args.api).await {
        Ok(endpoint) => endpoint,
        Err(err) => return vec![Check::new("api", Health::Failed, err.to_string())],
    };
    let label = format!("api {endpoint}");
    let anonymous = match CofferApi::new(&endpoint, &args.api, None) {
        Ok(api) => api,
        Err(err) => return vec![Check::new(label, Health::Failed, err.to_string())],
    };
    let probe = json!({"MaxResults": 1});
    let mut checks = vec![
        match anonymous.call("secretsmanager.ListSecrets", &probe).await {
            Ok(Answer::Exception { code, .. })
                if code == "MissingAuthenticationTokenException"
                    || code == "UnrecognizedClientException" =>
            {
                Check::new(label, Health::Ok, "answers (refuses unauthenticated calls)")
            }
            Ok(Answer::Exception { code, .. }) => {
                Check::new(label, Health::Warning, format!("answers, with {code}"))
            }
            Ok(Answer::Ok(_)) => Check::new(
                label,
                Health::Failed,
                "answered an unauthenticated call with success",
            ),
            Err(err) => Check::new(label, Health::Failed, err.to_string()),
        },
    ];
    let token = match credentials::bearer_token(context, args.api.service_account.as_deref()).await
    {
        Ok(token) => token,
        Err(err) => {
            checks.push(Check::new(
                "api token",
                Health::Warning,
                format!("not checked: {err}"),
            ));
            return checks;
        }
    };
    let authenticated = match CofferApi::new(&endpoint, &args.api, Some(token)) {
        Ok(api) => api,
        Err(err) => {
            checks.push(Check::new("api token", Health::Warning, err.to_string()));
            return checks;
        }
    };
    checks.push(
        match authenticated
            .call("secretsmanager.ListSecrets", &probe)
            .await
        {
            Ok(Answer::Ok(_)) => Check::new("api token", Health::Ok, "accepted"),
            Ok(Answer::Exception { code, .. }) if code == "AccessDeniedException" => Check::new(
                "api token",
                Health::Ok,
                "accepted (not allowed to list secrets)",
            ),
            Ok(Answer::Exception { code, message }) => Check::new(
                "api token",
                Health::Warning,
                super::api::describe_exception(&code, &message),
            ),
            Err(err) => Check::new("api token", Health::Warning, err.to_string()),
        },
    );
    checks
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::apps::v1::{DeploymentSpec, DeploymentStatus};
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    use k8s_openapi::jiff::SignedDuration;

    use super::*;

    fn lease(holder: Option<&str>, renewed_ago: Option<i64>, now: Timestamp) -> Lease {
        Lease {
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_owned),
                renew_time: renewed_ago
                    .map(|ago| MicroTime(now.checked_sub(SignedDuration::from_secs(ago)).unwrap())),
                lease_duration_seconds: Some(15),
                ..LeaseSpec::default()
            }),
            ..Lease::default()
        }
    }

    #[test]
    fn a_lease_is_healthy_while_renewed() {
        let now = Timestamp::now();
        let fresh = lease_check(
            "sys",
            "coffer-controller",
            Some(&lease(Some("pod-a"), Some(3), now)),
            now,
        );
        assert_eq!(fresh.health, Health::Ok);
        assert!(
            fresh.detail.contains("pod-a") && fresh.detail.contains("3s ago"),
            "{fresh:?}"
        );
        for (stale, why) in [
            (Some(lease(Some("pod-a"), Some(60), now)), "expired"),
            (Some(lease(None, Some(1), now)), "not held"),
            (Some(lease(Some("pod-a"), None, now)), "never renewed"),
            (None, "does not exist"),
        ] {
            let check = lease_check("sys", "coffer-controller", stale.as_ref(), now);
            assert_eq!(check.health, Health::Failed, "{check:?}");
            assert!(check.detail.contains(why), "{check:?}");
        }
    }

    #[test]
    fn a_deployment_needs_a_ready_replica() {
        let deployment = |desired, ready| Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(desired),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                ready_replicas: Some(ready),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        };
        assert_eq!(
            deployment_check("s", "coffer", Some(&deployment(2, 2))).health,
            Health::Ok
        );
        assert_eq!(
            deployment_check("s", "coffer", Some(&deployment(2, 1))).health,
            Health::Warning
        );
        assert_eq!(
            deployment_check("s", "coffer", Some(&deployment(1, 0))).health,
            Health::Failed
        );
        assert_eq!(
            deployment_check("s", "coffer", None).health,
            Health::Warning
        );
    }

    #[test]
    fn a_crd_must_be_established() {
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "metadata": {"name": "secrets.coffer.dev"},
            "spec": {"group": "coffer.dev", "scope": "Namespaced",
                     "names": {"plural": "secrets", "kind": "Secret"},
                     "versions": [{"name": "v1alpha1", "served": true, "storage": true}]},
            "status": {"conditions": [{"type": "Established", "status": "True"}]},
        }))
        .unwrap();
        let check = crd_check("secrets.coffer.dev", Some(&crd));
        assert_eq!(check.health, Health::Ok);
        assert_eq!(check.detail, "Established (v1alpha1)");
        assert_eq!(crd_check("secrets.coffer.dev", None).health, Health::Failed);
        let mut pending = crd;
        pending.status = None;
        assert_eq!(
            crd_check("secrets.coffer.dev", Some(&pending)).health,
            Health::Failed
        );
    }
}
