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

/// The process's metrics: one registry, handing out the API's and the controller's handles.
pub struct Metrics {
    api: ApiMetrics,
    reconcile: ReconcileMetrics,
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
        Self {
            api: ApiMetrics::with_registry(api, Arc::new(registry)),
            reconcile,
        }
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
    fn error_names_must_be_plain_identifiers() {
        assert_eq!(label_safe("Conflict"), "Conflict");
        assert_eq!(label_safe("api_unavailable"), "api_unavailable");
        for bad in ["", "has space", "quote\"", "line\nbreak", "x=y"] {
            assert_eq!(label_safe(bad), OTHER_ERROR, "{bad:?}");
        }
    }
}
