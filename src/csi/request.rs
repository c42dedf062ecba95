//! What kubelet's NodePublishVolume says: checked, and turned into the pod, its token, the
//! volume's own attributes and where to mount.

use std::collections::{BTreeMap, HashMap};
use std::path::{Component, Path, PathBuf};

use super::proto;
use crate::delivery::{PodInfo, PodToken};

/// Prefix of the entries kubelet adds to a volume's attributes.
pub const KUBELET_PREFIX: &str = "csi.storage.k8s.io/";
const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
const SERVICE_ACCOUNT: &str = "csi.storage.k8s.io/serviceAccount.name";
const EPHEMERAL: &str = "csi.storage.k8s.io/ephemeral";
const TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    PermissionDenied(String),
}

/// A publish request, checked.
#[derive(Debug)]
pub struct Publish {
    pub volume_id: String,
    pub target: PathBuf,
    /// The pod's fsGroup, to own the files.
    pub mount_group: Option<u32>,
    /// The volume's attributes without kubelet's entries.
    pub attributes: BTreeMap<String, String>,
    pub pod: PodInfo,
    pub token: PodToken,
}

/// Checks what every publish needs, in the order csi-sanity expects failures: volume id, target
/// path, capability; then that the volume is an ephemeral inline one with pod information and a
/// token for `audience`.
pub fn publish(
    request: proto::NodePublishVolumeRequest,
    audience: &str,
) -> Result<Publish, RequestError> {
    let invalid = |message: &str| Err(RequestError::InvalidArgument(message.to_owned()));
    if request.volume_id.is_empty() {
        return invalid("volume_id is missing");
    }
    let target = target_path(&request.target_path)?;
    let Some(capability) = request.volume_capability else {
        return invalid("volume_capability is missing");
    };
    let mount_group = match capability.access_type {
        Some(proto::volume_capability::AccessType::Mount(mount)) => {
            match mount.volume_mount_group.as_str() {
                "" => None,
                group => Some(group.parse::<u32>().map_err(|_| {
                    RequestError::InvalidArgument(format!(
                        "volume_mount_group {:?} is not a numeric group id",
                        group.chars().take(32).collect::<String>()
                    ))
                })?),
            }
        }
        Some(proto::volume_capability::AccessType::Block(_)) => {
            return invalid("block volumes are not served: Coffer volumes are filesystems");
        }
        None => return invalid("volume_capability names no access type"),
    };
    let context = request.volume_context;
    if context.get(EPHEMERAL).map(String::as_str) != Some("true") {
        return invalid(
            "only ephemeral inline volumes (csi: in a pod's volumes) are served; \
             the CSIDriver needs volumeLifecycleModes [Ephemeral]",
        );
    }
    let field = |key: &str| match context.get(key) {
        Some(value) if !value.is_empty() => Ok(value.clone()),
        _ => Err(RequestError::InvalidArgument(format!(
            "{key} is missing: the CSIDriver needs podInfoOnMount: true"
        ))),
    };
    let pod = PodInfo {
        namespace: field(POD_NAMESPACE)?,
        name: field(POD_NAME)?,
        uid: field(POD_UID)?,
        service_account: field(SERVICE_ACCOUNT)?,
    };
    let token = token(&request.secrets, &context, audience)?;
    let attributes = context
        .into_iter()
        .filter(|(key, _)| !key.starts_with(KUBELET_PREFIX))
        .collect();
    Ok(Publish {
        volume_id: request.volume_id,
        target,
        mount_group,
        attributes,
        pod,
        token,
    })
}

/// The target path of a publish or unpublish: absolute, with no `.` or `..`.
pub fn target_path(path: &str) -> Result<PathBuf, RequestError> {
    if path.is_empty() {
        return Err(RequestError::InvalidArgument(
            "target_path is missing".into(),
        ));
    }
    let target = Path::new(path);
    let normal = target.is_absolute()
        && !path.contains('\0')
        && target
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !normal {
        return Err(RequestError::InvalidArgument(
            "target_path must be an absolute path without . or .. components".into(),
        ));
    }
    Ok(target.to_owned())
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct TokenEntry {
    token: String,
    #[serde(default)]
    expiration_timestamp: Option<String>,
}

/// The pod's token for `audience`, from `secrets` (Kubernetes 1.35 and later may put it there)
/// or else from the volume context. Never the plugin's own identity: no token, no volume.
fn token(
    secrets: &HashMap<String, String>,
    context: &HashMap<String, String>,
    audience: &str,
) -> Result<PodToken, RequestError> {
    let denied = |message: String| Err(RequestError::PermissionDenied(message));
    let Some(raw) = secrets.get(TOKENS).or_else(|| context.get(TOKENS)) else {
        return denied(format!(
            "no ServiceAccount token for audience {audience:?}: the CSIDriver needs \
             tokenRequests [{{audience: {audience}}}]"
        ));
    };
    // serde's messages may quote the input, which holds tokens: keep none of it.
    let Ok(mut entries) = serde_json::from_str::<HashMap<String, TokenEntry>>(raw) else {
        return denied(format!("{TOKENS} does not parse"));
    };
    match entries.remove(audience) {
        Some(entry) if !entry.token.is_empty() => {
            Ok(PodToken::new(entry.token, entry.expiration_timestamp))
        }
        _ => denied(format!("no ServiceAccount token for audience {audience:?}")),
    }
}

/// Whether a token's expiry (RFC 3339) has passed; a token without a readable one is tried.
pub fn expired(token: &PodToken, now: time::OffsetDateTime) -> bool {
    token
        .expires
        .as_deref()
        .and_then(|at| {
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()
        })
        .is_some_and(|at| at <= now)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> HashMap<String, String> {
        [
            (POD_NAME, "web-0"),
            (POD_NAMESPACE, "shop"),
            (POD_UID, "0b6f"),
            (SERVICE_ACCOUNT, "web"),
            (EPHEMERAL, "true"),
            (
                TOKENS,
                r#"{"coffer":{"token":"jwt-1","expirationTimestamp":"2030-01-01T00:00:00Z"}}"#,
            ),
            ("objects", "- secret: db"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn request(context: HashMap<String, String>) -> proto::NodePublishVolumeRequest {
        proto::NodePublishVolumeRequest {
            volume_id: "csi-1".into(),
            target_path: "/var/lib/kubelet/pods/p/volumes/kubernetes.io~csi/v/mount".into(),
            volume_capability: Some(proto::VolumeCapability {
                access_type: Some(proto::volume_capability::AccessType::Mount(
                    proto::volume_capability::MountVolume {
                        volume_mount_group: "2000".into(),
                        ..Default::default()
                    },
                )),
                access_mode: None,
            }),
            readonly: false,
            secrets: HashMap::new(),
            volume_context: context,
        }
    }

    #[test]
    fn a_kubelet_request_gives_pod_token_and_own_attributes() {
        let publish = publish(request(context()), "coffer").unwrap();
        assert_eq!(publish.volume_id, "csi-1");
        assert_eq!(publish.mount_group, Some(2000));
        assert_eq!(publish.pod.namespace, "shop");
        assert_eq!(publish.pod.service_account, "web");
        assert_eq!(publish.token.expose(), "jwt-1");
        assert_eq!(
            publish.token.expires.as_deref(),
            Some("2030-01-01T00:00:00Z")
        );
        let keys: Vec<_> = publish.attributes.keys().cloned().collect();
        assert_eq!(keys, ["objects"]);
    }

    #[test]
    fn a_token_in_secrets_wins() {
        let mut req = request(context());
        req.secrets
            .insert(TOKENS.into(), r#"{"coffer":{"token":"jwt-2"}}"#.into());
        let publish = publish(req, "coffer").unwrap();
        assert_eq!(publish.token.expose(), "jwt-2");
        assert_eq!(publish.token.expires, None);
    }

    #[test]
    fn no_token_is_permission_denied_without_echoing_it() {
        let mut ctx = context();
        ctx.remove(TOKENS);
        assert!(matches!(
            publish(request(ctx), "coffer"),
            Err(RequestError::PermissionDenied(_))
        ));

        let mut ctx = context();
        ctx.insert(
            TOKENS.into(),
            r#"{"other":{"token":"jwt-secret-value"}}"#.into(),
        );
        let err = publish(request(ctx), "coffer").unwrap_err();
        assert!(matches!(err, RequestError::PermissionDenied(_)));
        assert!(!err.to_string().contains("jwt-secret-value"));

        let mut ctx = context();
        ctx.insert(TOKENS.into(), "{not json jwt-secret-value".into());
        let err = publish(request(ctx), "coffer").unwrap_err();
        assert!(!err.to_string().contains("jwt-secret-value"));
    }

    #[test]
    fn missing_fields_and_non_ephemeral_volumes_are_invalid() {
        let mut req = request(context());
        req.volume_id.clear();
        assert!(matches!(
            publish(req, "coffer"),
            Err(RequestError::InvalidArgument(_))
        ));

        let mut req = request(context());
        req.target_path = "relative/mount".into();
        assert!(matches!(
            publish(req, "coffer"),
            Err(RequestError::InvalidArgument(_))
        ));

        let mut req = request(context());
        req.target_path = "/var/lib/../etc".into();
        assert!(matches!(
            publish(req, "coffer"),
            Err(RequestError::InvalidArgument(_))
        ));

        let mut req = request(context());
        req.volume_capability = None;
        assert!(matches!(
            publish(req, "coffer"),
            Err(RequestError::InvalidArgument(_))
        ));

        let mut ctx = context();
        ctx.remove(EPHEMERAL);
        assert!(matches!(
            publish(request(ctx), "coffer"),
            Err(RequestError::InvalidArgument(_))
        ));

        let mut ctx = context();
        ctx.remove(POD_UID);
        assert!(matches!(
            publish(request(ctx), "coffer"),
            Err(RequestError::InvalidArgument(_))
        ));
    }

    #[test]
    fn expiry_is_read_from_rfc3339() {
        let now = time::OffsetDateTime::now_utc();
        let past = PodToken::new("t".into(), Some("2020-01-01T00:00:00Z".into()));
        let future = PodToken::new("t".into(), Some("2999-01-01T00:00:00Z".into()));
        let unknown = PodToken::new("t".into(), None);
        assert!(expired(&past, now));
        assert!(!expired(&future, now));
        assert!(!expired(&unknown, now));
    }
}
