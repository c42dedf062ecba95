//! Changes to the objects volumes read, pushed to the plugin: a stream of [`Notice`]s.
//!
//! In a cluster they come from watches on the coffer.dev `Secret` and `Parameter` resources of
//! every namespace. Tests drive the plugin with any stream instead (a channel).

use std::collections::HashMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::stream::{self, BoxStream, StreamExt as _};
use kube::api::Api;
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt as _};
use serde::de::DeserializeOwned;

use crate::delivery::Watched;
use crate::resources::{Parameter, Secret};

/// The change feed: notices of objects that changed.
pub type ChangeFeed = BoxStream<'static, Notice>;

/// An object that changed, as its watch saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A Secrets Manager secret: its name, and its ARN once the controller has given it one.
    Secret {
        namespace: String,
        name: String,
        arn: Option<String>,
    },
    /// A parameter, by its name (`/app/db/url`).
    Parameter { namespace: String, name: String },
    /// A watch has listed its objects for the first time. Changes made between the plugin's
    /// start (when it rewrote every volume) and this listing were seen by nobody: every volume
    /// is read again.
    Listed,
}

impl Notice {
    /// Whether a volume that reads `watched` reads this object.
    pub fn matches(&self, watched: &Watched) -> bool {
        match (self, watched) {
            (Notice::Listed, _) => true,
            (
                Notice::Secret {
                    namespace,
                    name,
                    arn,
                },
                Watched::Secret { namespace: ns, id },
            ) => namespace == ns && secret_matches(id, name, arn.as_deref()),
            (
                Notice::Parameter { namespace, name },
                Watched::Parameter {
                    namespace: ns,
                    name: wanted,
                },
            ) => namespace == ns && parameter_name(wanted) == *name,
            (
                Notice::Parameter { namespace, name },
                Watched::ParametersUnder {
                    namespace: ns,
                    path,
                    recursive,
                },
            ) => namespace == ns && under_path(name, path, *recursive),
            _ => false,
        }
    }
}

/// A secret is named by its name, its ARN, or a partial ARN (the ARN without the six random
/// characters AWS adds after the name).
fn secret_matches(id: &str, name: &str, arn: Option<&str>) -> bool {
    if id == name || arn == Some(id) {
        return true;
    }
    match id.split_once(":secret:") {
        Some((_, named)) if id.starts_with("arn:") => {
            named == name
                || arn
                    .and_then(|arn| arn.split_once(":secret:"))
                    .is_some_and(|(_, full)| full == named)
        }
        _ => false,
    }
}

/// A parameter may be named by its ARN (`arn:...:parameter/app/x` stands for `/app/x`).
fn parameter_name(wanted: &str) -> String {
    match wanted.split_once(":parameter") {
        Some((_, rest)) if wanted.starts_with("arn:") => {
            if rest.starts_with("//") {
                rest.trim_start_matches('/').to_owned()
            } else if rest.matches('/').count() > 1 {
                rest.to_owned()
            } else {
                rest.trim_start_matches('/').to_owned()
            }
        }
        _ => wanted.to_owned(),
    }
}

/// Whether parameter `name` is under `path`: directly, or at any depth when `recursive`.
fn under_path(name: &str, path: &str, recursive: bool) -> bool {
    let prefix = if path.ends_with('/') {
        path.to_owned()
    } else {
        format!("{path}/")
    };
    match name.strip_prefix(&prefix) {
        Some(rest) => !rest.is_empty() && (recursive || !rest.contains('/')),
        None => false,
    }
}

/// The feed of a cluster: watches on every namespace's coffer.dev Secrets and Parameters. The
/// client is made when the stream is first polled, and made again with backoff until it can
/// be, so that the plugin serves kubelet even while the API server is out of reach.
pub fn kubernetes() -> ChangeFeed {
    stream::once(connect())
        .flat_map(|client| {
            stream::select(
                watch(Api::<Secret>::all(client.clone()), secret_notice),
                watch(Api::<Parameter>::all(client), parameter_notice),
            )
        })
        .boxed()
}

async fn connect() -> Client {
    let mut delay = Duration::from_secs(1);
    loop {
        match Client::try_default().await {
            Ok(client) => return client,
            Err(err) => {
                tracing::warn!(error = %crate::redact::chain(&err), "no Kubernetes client yet; volumes refresh on resync only until there is one");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(60));
            }
        }
    }
}

fn secret_notice(secret: &Secret) -> Option<Notice> {
    let name = match secret.secret_name() {
        Ok(name) => name,
        Err(err) => {
            tracing::debug!(resource = %secret.name_any(), error = %err, "a Secret that names no secret");
            return None;
        }
    };
    Some(Notice::Secret {
        namespace: secret.namespace()?,
        name,
        arn: secret.status.as_ref().and_then(|status| status.arn.clone()),
    })
}

fn parameter_notice(parameter: &Parameter) -> Option<Notice> {
    Some(Notice::Parameter {
        namespace: parameter.namespace()?,
        name: parameter.spec.name.clone(),
    })
}

/// Notices of the objects of `api` that change. The first listing records what is there and
/// announces [`Notice::Listed`]; later relists announce what changed meanwhile.
fn watch<K>(api: Api<K>, notice: fn(&K) -> Option<Notice>) -> BoxStream<'static, Notice>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Default,
{
    let mut seen = Seen::default();
    watcher(api, watcher::Config::default())
        .default_backoff()
        .filter_map(move |event| {
            let out = match event {
                Ok(watcher::Event::Init) => Vec::new(),
                Ok(watcher::Event::InitApply(object)) => seen.applied(&object, notice),
                Ok(watcher::Event::InitDone) => {
                    tracing::debug!(kind = %K::kind(&Default::default()), objects = seen.versions.len(), "watch listed");
                    seen.listed()
                }
                Ok(watcher::Event::Apply(object)) => seen.applied(&object, notice),
                Ok(watcher::Event::Delete(object)) => {
                    seen.versions.remove(&object_key(&object));
                    notice(&object).into_iter().collect()
                }
                Err(err) => {
                    tracing::warn!(kind = %K::kind(&Default::default()), error = %err, "watch failed; retrying with backoff");
                    Vec::new()
                }
            };
            futures::future::ready(Some(stream::iter(out)))
        })
        .flatten()
        .boxed()
}

fn object_key<K: Resource>(object: &K) -> (String, String) {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// resourceVersions last seen, so that a relist announces only what changed.
#[derive(Default)]
struct Seen {
    versions: HashMap<(String, String), String>,
    /// Whether the first listing is done.
    primed: bool,
}

impl Seen {
    /// A listing is complete: the first announces [`Notice::Listed`].
    fn listed(&mut self) -> Vec<Notice> {
        let first = !self.primed;
        self.primed = true;
        if first {
            vec![Notice::Listed]
        } else {
            Vec::new()
        }
    }

    fn applied<K: Resource>(
        &mut self,
        object: &K,
        notice: fn(&K) -> Option<Notice>,
    ) -> Vec<Notice> {
        let version = object.resource_version().unwrap_or_default();
        let previous = self.versions.insert(object_key(object), version.clone());
        let announce = self.primed && previous.as_deref() != Some(version.as_str());
        if announce {
            notice(object).into_iter().collect()
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(namespace: &str, id: &str) -> Watched {
        Watched::Secret {
            namespace: namespace.into(),
            id: id.into(),
        }
    }

    #[test]
    fn secrets_match_by_name_arn_and_partial_arn() {
        let notice = Notice::Secret {
            namespace: "shop".into(),
            name: "prod/db".into(),
            arn: Some("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf".into()),
        };
        assert!(notice.matches(&secret("shop", "prod/db")));
        assert!(notice.matches(&secret(
            "shop",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbCdEf"
        )));
        assert!(notice.matches(&secret(
            "shop",
            "arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db"
        )));
        assert!(!notice.matches(&secret("other", "prod/db")));
        assert!(!notice.matches(&secret("shop", "prod/db2")));
        assert!(!notice.matches(&secret("shop", "db")));
    }

    #[test]
    fn parameters_match_by_name_and_path() {
        let notice = Notice::Parameter {
            namespace: "shop".into(),
            name: "/app/db/url".into(),
        };
        let param = |name: &str| Watched::Parameter {
            namespace: "shop".into(),
            name: name.into(),
        };
        let under = |path: &str, recursive| Watched::ParametersUnder {
            namespace: "shop".into(),
            path: path.into(),
            recursive,
        };
        assert!(notice.matches(&param("/app/db/url")));
        assert!(notice.matches(&param(
            "arn:aws:ssm:us-east-1:111122223333:parameter/app/db/url"
        )));
        assert!(!notice.matches(&param("/app/db")));
        assert!(notice.matches(&under("/app/db", false)));
        assert!(notice.matches(&under("/app/db/", false)));
        assert!(!notice.matches(&under("/app", false)));
        assert!(notice.matches(&under("/app", true)));
        assert!(notice.matches(&under("/", true)));
        assert!(!notice.matches(&under("/ap", true)));
        assert!(!notice.matches(&Watched::ParametersUnder {
            namespace: "other".into(),
            path: "/app".into(),
            recursive: true,
        }));
        assert!(!notice.matches(&secret("shop", "/app/db/url")));
    }

    #[test]
    fn a_secret_resource_is_announced_by_its_secret_name_and_arn() {
        let mut resource = Secret::new(
            &crate::resources::resource_name_for("prod/db"),
            serde_json::from_value(serde_json::json!({})).unwrap(),
        );
        resource.metadata.namespace = Some("shop".into());
        resource.metadata.annotations = Some(
            [(
                crate::resources::SECRET_NAME_ANNOTATION.to_string(),
                "prod/db".to_string(),
            )]
            .into(),
        );
        assert_eq!(
            secret_notice(&resource),
            Some(Notice::Secret {
                namespace: "shop".into(),
                name: "prod/db".into(),
                arn: None,
            })
        );
        resource.status = Some(crate::resources::SecretStatus {
            arn: Some("arn:aws:secretsmanager:r:1:secret:prod/db-AbCdEf".into()),
            ..Default::default()
        });
        let Some(Notice::Secret { arn, .. }) = secret_notice(&resource) else {
            panic!("no notice");
        };
        assert_eq!(
            arn.as_deref(),
            Some("arn:aws:secretsmanager:r:1:secret:prod/db-AbCdEf")
        );

        // A resource whose name does not stand for a secret name announces nothing.
        resource.metadata.name = Some("another".into());
        assert_eq!(secret_notice(&resource), None);
    }

    #[test]
    fn the_first_listing_is_recorded_and_later_changes_announced() {
        let mut seen = Seen::default();
        let mut parameter = Parameter::new("app.x", Default::default());
        parameter.metadata.namespace = Some("shop".into());
        parameter.metadata.resource_version = Some("1".into());
        parameter.spec.name = "/app/x".into();
        assert!(seen.applied(&parameter, parameter_notice).is_empty());
        // The first listing done: every volume is read again, once.
        assert_eq!(seen.listed(), [Notice::Listed]);
        assert!(Notice::Listed.matches(&Watched::Parameter {
            namespace: "other".into(),
            name: "/any".into()
        }));
        assert!(seen.applied(&parameter, parameter_notice).is_empty());
        assert!(seen.listed().is_empty(), "a relist announces only changes");
        parameter.metadata.resource_version = Some("2".into());
        assert_eq!(
            seen.applied(&parameter, parameter_notice),
            [Notice::Parameter {
                namespace: "shop".into(),
                name: "/app/x".into()
            }]
        );
    }
}
