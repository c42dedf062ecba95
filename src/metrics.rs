//! One Prometheus registry for the whole process: the AWS API's metrics (`coffer_api_*`) and the
//! controller's (`coffer_controller_*`), so one `/metrics` endpoint serves both. Labels come from
//! fixed sets of `&'static str` only, never from request or resource content.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::aws::metrics::{ApiFamilies, ApiMetrics};

/// The `kind` label of KmsKey reconciles.
pub const KIND_KMS_KEY: &str = "kmskey";

/// The `error` label used in place of an error name that is not a plain identifier.
pub const OTHER_ERROR: &str = "other";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    kind: &'static str,
    /// `success` or `error`.
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: &'static str,
    error: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: &'static str,
    resource: &'static str,
}

/// The resources Coffer asks the API server about; any other is counted as `other`.
const KUBERNETES_RESOURCES: &[&str] = &[
    "kmskeys",
    "secrets",
    "parameters",
    "leases",
    "events",
    "tokenreviews",
    "subjectaccessreviews",
    "customresourcedefinitions",
];

/// The process's metrics: one registry, handing out the API's and the controller's handles.
pub struct Metrics {
    api: ApiMetrics,
    reconcile: ReconcileMetrics,
    kubernetes: KubernetesRequestMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let api = ApiFamilies::register(registry.sub_registry_with_prefix("coffer_api"));
        let reconcile =
            ReconcileMetrics::register(registry.sub_registry_with_prefix("coffer_controller"));
        let kubernetes = KubernetesRequestMetrics::register(
            registry.sub_registry_with_prefix("coffer_kubernetes"),
        );
        Self {
            api: ApiMetrics::with_registry(api, Arc::new(registry)),
            reconcile,
            kubernetes,
        }
    }

    /// Requests to the Kubernetes API server, by verb.
    pub fn kubernetes(&self) -> KubernetesRequestMetrics {
        self.kubernetes.clone()
    }

    /// The AWS API's metrics; its `render` shows this whole registry.
    pub fn api(&self) -> ApiMetrics {
        self.api.clone()
    }

    /// The controller's reconcile metrics.
    pub fn reconcile(&self) -> ReconcileMetrics {
        self.reconcile.clone()
    }

    /// Every metric, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        // The API handle renders the shared registry, not only its own families.
        self.api.render()
    }
}

/// Reconcile counts, errors by kind of error, and durations, per resource kind.
#[derive(Clone)]
pub struct ReconcileMetrics {
    reconciles: Family<OutcomeLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

impl ReconcileMetrics {
    fn register(registry: &mut Registry) -> Self {
        let reconciles = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles by resource kind and outcome (success or error)",
            reconciles.clone(),
        );
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles by resource kind and kind of error",
            errors.clone(),
        );
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            // 1 ms to about 33 s, doubling.
            Histogram::new((0..16).map(|step| 0.001 * f64::from(1u32 << step)))
        });
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by resource kind",
            duration.clone(),
        );
        Self {
            reconciles,
            errors,
            duration,
        }
    }

    /// Counts one reconcile of `kind` (such as [`KIND_KMS_KEY`]) that took `elapsed`, failed
    /// with the error kind name in `outcome`'s `Err` (a name from the controller's fixed set).
    pub fn record(&self, kind: &'static str, outcome: Result<(), &'static str>, elapsed: Duration) {
        let outcome_label = match outcome {
            Ok(()) => "success",
            Err(error) => {
                self.errors
                    .get_or_create(&ErrorLabels {
                        kind,
                        error: label_safe(error),
                    })
                    .inc();
                "error"
            }
        };
        self.reconciles
            .get_or_create(&OutcomeLabels {
                kind,
                outcome: outcome_label,
            })
            .inc();
        self.duration
            .get_or_create(&KindLabels { kind })
            .observe(elapsed.as_secs_f64());
    }

    /// A successful reconcile.
    pub fn success(&self, kind: &'static str, elapsed: Duration) {
        self.record(kind, Ok(()), elapsed);
    }

    /// A failed reconcile, with the name of its kind of error.
    pub fn error(&self, kind: &'static str, error: &'static str, elapsed: Duration) {
        self.record(kind, Err(error), elapsed);
    }
}

/// Requests the process makes to the Kubernetes API server, by verb: what a controller costs the
/// control plane, and whether a settled one stays quiet.
#[derive(Clone)]
pub struct KubernetesRequestMetrics {
    requests: Family<RequestLabels, Counter>,
}

impl KubernetesRequestMetrics {
    fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests to the Kubernetes API server by verb (get includes lists; watch counts each watch opened) and resource",
            requests.clone(),
        );
        Self { requests }
    }

    /// Counts one request about to be sent.
    pub fn count<B>(&self, request: &http::Request<B>) {
        self.requests
            .get_or_create(&RequestLabels {
                verb: request_verb(request),
                resource: request_resource(request.uri().path()),
            })
            .inc();
    }

    /// A client layer counting every request that passes through it.
    pub fn layer<B>(
        &self,
    ) -> tower::util::MapRequestLayer<impl Fn(http::Request<B>) -> http::Request<B> + Clone + use<B>>
    {
        let metrics = self.clone();
        tower::util::MapRequestLayer::new(move |request: http::Request<B>| {
            metrics.count(&request);
            request
        })
    }
}

/// The resource a request path names, from [`KUBERNETES_RESOURCES`]: the segment after
/// `namespaces/NS`, or after the group and version of a cluster-wide path.
fn request_resource(path: &str) -> &'static str {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] | ["apis", _, _version, rest @ ..] => rest,
        _ => return "other",
    };
    let resource = match rest {
        ["namespaces", _namespace, resource, ..] => resource,
        // A namespace itself, or a cluster-wide collection.
        [resource, ..] => resource,
        [] => return "other",
    };
    KUBERNETES_RESOURCES
        .iter()
        .find(|known| *known == resource)
        .copied()
        .unwrap_or("other")
}

/// The verb of a request, from its method and (for watches) its query.
fn request_verb<B>(request: &http::Request<B>) -> &'static str {
    let watch = request.uri().query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    match *request.method() {
        http::Method::GET if watch => "watch",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// `name` when it is a plain identifier, [`OTHER_ERROR`] otherwise: a guard against an error
/// name that would need escaping or that carries more than a name.
fn label_safe(name: &'static str) -> &'static str {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-');
    if plain { name } else { OTHER_ERROR }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::metrics::known_operation;

    #[test]
    fn reconciles_errors_and_durations_are_rendered() {
        let metrics = Metrics::new();
        let reconcile = metrics.reconcile();
        reconcile.success(KIND_KMS_KEY, Duration::from_millis(3));
        reconcile.success(KIND_KMS_KEY, Duration::from_millis(5));
        reconcile.error(KIND_KMS_KEY, "store_conflict", Duration::from_millis(7));
        reconcile.error(
            KIND_KMS_KEY,
            "bad\"} 1\nevil{x=\"",
            Duration::from_millis(1),
        );

        let text = metrics.render();
        for line in [
            "coffer_controller_reconciles_total{kind=\"kmskey\",outcome=\"success\"} 2",
            "coffer_controller_reconciles_total{kind=\"kmskey\",outcome=\"error\"} 2",
            "coffer_controller_reconcile_errors_total{kind=\"kmskey\",error=\"store_conflict\"} 1",
            "coffer_controller_reconcile_errors_total{kind=\"kmskey\",error=\"other\"} 1",
            "coffer_controller_reconcile_duration_seconds_count{kind=\"kmskey\"} 4",
        ] {
            assert!(text.contains(line), "missing {line:?} in {text}");
        }
        assert!(!text.contains("evil"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn api_and_controller_metrics_share_one_registry() {
        let metrics = Metrics::new();
        let api = metrics.api();
        api.record(
            known_operation("TrentService.Encrypt", &["TrentService.Encrypt"]),
            None,
            Duration::from_micros(200),
        );
        metrics
            .reconcile()
            .success(KIND_KMS_KEY, Duration::from_millis(2));

        let api_line =
            "coffer_api_calls_total{operation=\"TrentService.Encrypt\",error_code=\"\"} 1";
        let controller_line =
            "coffer_controller_reconciles_total{kind=\"kmskey\",outcome=\"success\"} 1";
        // Either handle renders the whole registry, once.
        for text in [metrics.render(), api.render()] {
            assert!(text.contains(api_line), "{text}");
            assert!(text.contains(controller_line), "{text}");
            assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        }
        // A standalone API registry knows nothing of the controller.
        let standalone = ApiMetrics::new().render();
        assert!(!standalone.contains("coffer_controller"), "{standalone}");
    }

    #[test]
    fn kubernetes_requests_are_counted_by_verb() {
        let metrics = Metrics::new();
        let kubernetes = metrics.kubernetes();
        let request = |method: &str, uri: &str| {
            http::Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .unwrap()
        };
        for (method, uri) in [
            (
                "GET",
                "/apis/coffer.dev/v1alpha1/kmskeys?watch=true&resourceVersion=5",
            ),
            ("GET", "/apis/coffer.dev/v1alpha1/kmskeys?limit=500"),
            ("GET", "/api/v1/namespaces/a/secrets/b"),
            ("POST", "/api/v1/namespaces/a/secrets"),
            (
                "PATCH",
                "/apis/coffer.dev/v1alpha1/namespaces/a/kmskeys/b/status",
            ),
            ("PATCH", "/apis/coffer.dev/v1alpha1/namespaces/a/kmskeys/b"),
            ("PUT", "/api/v1/namespaces/a/secrets/b"),
            ("DELETE", "/api/v1/namespaces/a/secrets/b"),
        ] {
            kubernetes.count(&request(method, uri));
        }
        kubernetes.count(&request(
            "PUT",
            "/apis/coordination.k8s.io/v1/namespaces/s/leases/l",
        ));
        kubernetes.count(&request(
            "POST",
            "/apis/authentication.k8s.io/v1/tokenreviews",
        ));
        kubernetes.count(&request("GET", "/api/v1/namespaces/kmskeys"));
        kubernetes.count(&request("GET", "/version"));
        let text = metrics.render();
        for line in [
            "coffer_kubernetes_requests_total{verb=\"watch\",resource=\"kmskeys\"} 1",
            "coffer_kubernetes_requests_total{verb=\"get\",resource=\"kmskeys\"} 1",
            "coffer_kubernetes_requests_total{verb=\"get\",resource=\"secrets\"} 1",
            "coffer_kubernetes_requests_total{verb=\"create\",resource=\"secrets\"} 1",
            "coffer_kubernetes_requests_total{verb=\"patch\",resource=\"kmskeys\"} 2",
            "coffer_kubernetes_requests_total{verb=\"update\",resource=\"secrets\"} 1",
            "coffer_kubernetes_requests_total{verb=\"delete\",resource=\"secrets\"} 1",
            "coffer_kubernetes_requests_total{verb=\"update\",resource=\"leases\"} 1",
            "coffer_kubernetes_requests_total{verb=\"create\",resource=\"tokenreviews\"} 1",
            // A namespace named like a resource is not that resource; unknown paths are `other`.
            "coffer_kubernetes_requests_total{verb=\"get\",resource=\"other\"} 2",
        ] {
            assert!(text.contains(line), "missing {line:?} in {text}");
        }
    }

    #[test]
    fn error_names_must_be_plain_identifiers() {
        assert_eq!(label_safe("Conflict"), "Conflict");
        assert_eq!(label_safe("api_unavailable"), "api_unavailable");
        for bad in ["", "has space", "quote\"", "line\nbreak", "x=y"] {
            assert_eq!(label_safe(bad), OTHER_ERROR, "{bad:?}");
        }
    }
}
