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
    check_owner(&token, &pod)?;
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

/// What a ServiceAccount token says of whose it is.
#[derive(serde::Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(rename = "kubernetes.io", default)]
    kubernetes: Option<KubernetesClaims>,
}

#[derive(serde::Deserialize)]
struct KubernetesClaims {
    #[serde(default)]
    pod: Option<BoundPod>,
}

#[derive(serde::Deserialize)]
struct BoundPod {
    #[serde(default)]
    uid: Option<String>,
}

/// Refuses a token that is not the pod's own: another ServiceAccount's, or bound to another
/// pod. The claims are read without checking the signature: the API checks it on every read,
/// and this check only keeps a volume from being read with an identity that is not its pod's.
fn check_owner(token: &PodToken, pod: &PodInfo) -> Result<(), RequestError> {
    use base64::Engine as _;
    let denied = |why: &str| {
        Err(RequestError::PermissionDenied(format!(
            "the ServiceAccount token {why}"
        )))
    };
    let mut parts = token.expose().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return denied("is not a JSON Web Token");
    };
    let Ok(json) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('='))
    else {
        return denied("is not a JSON Web Token");
    };
    let Ok(claims) = serde_json::from_slice::<Claims>(&json) else {
        return denied("is not a JSON Web Token");
    };
    let expected = format!(
        "system:serviceaccount:{}:{}",
        pod.namespace, pod.service_account
    );
    if claims.sub.as_deref() != Some(expected.as_str()) {
        return denied(&format!(
            "is not one of {expected}, the pod's ServiceAccount"
        ));
    }
    let bound_uid = claims
        .kubernetes
        .and_then(|claims| claims.pod)
        .and_then(|bound| bound.uid);
    if bound_uid.is_some_and(|uid| uid != pod.uid) {
        return denied(&format!("is bound to a pod other than {}", pod.name));
    }
    Ok(())
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
            ("objects", "- secret: db"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .chain([(
            TOKENS.to_owned(),
            tokens(&jwt("web", Some("0b6f")), Some("2030-01-01T00:00:00Z")),
        )])
        .collect()
    }

    /// An unsigned token with the claims kubelet's tokens carry, for ServiceAccount `account`
    /// of namespace shop, bound to the pod of uid `pod_uid`.
    fn jwt(account: &str, pod_uid: Option<&str>) -> String {
        use base64::Engine as _;
        let encode = |value: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
        };
        let mut claims =
            serde_json::json!({"sub": format!("system:serviceaccount:shop:{account}")});
        if let Some(uid) = pod_uid {
            claims["kubernetes.io"] =
                serde_json::json!({"namespace": "shop", "pod": {"name": "web-0", "uid": uid}});
        }
        format!(
            "{}.{}.signature",
            encode(serde_json::json!({"alg": "RS256"})),
            encode(claims)
        )
    }

    fn tokens(token: &str, expires: Option<&str>) -> String {
        let mut entry = serde_json::json!({"token": token});
        if let Some(expires) = expires {
            entry["expirationTimestamp"] = expires.into();
        }
        serde_json::json!({ "coffer": entry }).to_string()
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
        assert_eq!(publish.token.expose(), jwt("web", Some("0b6f")));
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
            .insert(TOKENS.into(), tokens(&jwt("web", None), None));
        let publish = publish(req, "coffer").unwrap();
        assert_eq!(publish.token.expose(), jwt("web", None));
        assert_eq!(publish.token.expires, None);
    }

    #[test]
    fn a_token_that_is_not_the_pods_own_is_permission_denied() {
        for foreign in [
            jwt("admin", None),
            jwt("admin", Some("0b6f")),
            jwt("web", Some("another-pod")),
            "not-a-jwt-secret-value".to_owned(),
            "a.b!secret-value.c".to_owned(),
        ] {
            let mut ctx = context();
            ctx.insert(TOKENS.into(), tokens(&foreign, None));
            let err = publish(request(ctx), "coffer").unwrap_err();
            assert!(matches!(err, RequestError::PermissionDenied(_)), "{err}");
            assert!(!err.to_string().contains("secret-value"), "{err}");
        }
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
