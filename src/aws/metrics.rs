//! Prometheus metrics for the API: calls by operation and outcome, and latency. Labels come from
//! fixed sets only (known operation names, AWS exception names), never from request content, so
//! a caller cannot grow the label space and no value can reach a label.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The label of an operation that is not a known one.
pub const UNKNOWN_OPERATION: &str = "unknown";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    operation: &'static str,
    /// The AWS exception name, or empty on success.
    error_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

/// The API's metrics, shared by every request.
#[derive(Clone)]
pub struct ApiMetrics {
    registry: Arc<Registry>,
    calls: Family<CallLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The API's metric families, registered but not yet tied to the registry that renders them.
pub(crate) struct ApiFamilies {
    calls: Family<CallLabels, Counter>,
    latency: Family<OperationLabels, Histogram>,
}

impl ApiFamilies {
    /// Registers the families in `registry`, which should carry the `coffer_api` prefix.
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "API calls by operation and error code (empty on success)",
            calls.clone(),
        );
        let latency = Family::<OperationLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 3.3 s, doubling.
            Histogram::new((0..16).map(|step| 0.0001 * f64::from(1u32 << step)))
        });
        registry.register(
            "call_duration_seconds",
            "API call latency by operation, from request to response",
            latency.clone(),
        );
        Self { calls, latency }
    }
}

impl ApiMetrics {
    /// The API's metrics in a registry of their own.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("coffer_api");
        let families = ApiFamilies::register(&mut registry);
        Self::with_registry(families, Arc::new(registry))
    }

    /// The API's metrics rendered from `registry`, which holds `families` and perhaps others.
    pub(crate) fn with_registry(families: ApiFamilies, registry: Arc<Registry>) -> Self {
        Self {
            registry,
            calls: families.calls,
            latency: families.latency,
        }
    }

    /// Counts one call. `operation` must come from a fixed set (see [`known_operation`]).
    pub fn record(
        &self,
        operation: &'static str,
        error_code: Option<&'static str>,
        elapsed: Duration,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                operation,
                error_code: error_code.unwrap_or(""),
            })
            .inc();
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(elapsed.as_secs_f64());
    }

    /// Every metric of the registry these belong to, in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut text = String::new();
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// The static label for an `X-Amz-Target` value: the target itself when it names an operation
/// Coffer knows, [`UNKNOWN_OPERATION`] otherwise.
pub fn known_operation(target: &str, known: &[&'static str]) -> &'static str {
    known
        .iter()
        .find(|name| **name == target)
        .copied()
        .unwrap_or(UNKNOWN_OPERATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_latency_are_rendered_with_fixed_labels() {
        let metrics = ApiMetrics::new();
        let known = ["TrentService.Encrypt", "TrentService.Decrypt"];
        let encrypt = known_operation("TrentService.Encrypt", &known);
        metrics.record(encrypt, None, Duration::from_micros(250));
        metrics.record(encrypt, None, Duration::from_micros(300));
        metrics.record(
            known_operation("TrentService.Decrypt", &known),
            Some("InvalidCiphertextException"),
            Duration::from_millis(2),
        );
        let hostile = known_operation("TrentService.Encrypt\"} 1\nevil{x=\"", &known);
        assert_eq!(hostile, UNKNOWN_OPERATION);
        metrics.record(
            hostile,
            Some("UnknownOperationException"),
            Duration::from_micros(10),
        );

        let text = metrics.render();
        assert!(
            text.contains(
                "coffer_api_calls_total{operation=\"TrentService.Encrypt\",error_code=\"\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "coffer_api_calls_total{operation=\"TrentService.Decrypt\",error_code=\"InvalidCiphertextException\"} 1"
        ), "{text}");
        assert!(text.contains("operation=\"unknown\""), "{text}");
        assert!(!text.contains("evil"), "{text}");
        assert!(
            text.contains(
                "coffer_api_call_duration_seconds_count{operation=\"TrentService.Encrypt\"} 2"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
