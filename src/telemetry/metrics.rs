//! The Prometheus registry: every metric the authority exports, registered once with its
//! help text, and the text exposition for `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IssuedLabels {
    pub tenant: String,
    pub token_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabel {
    pub endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Reasons of `authority_mtls_mismatch_total` (the plan's three).
pub const MTLS_REASONS: [&str; 3] = [
    "context-missing",
    "missing-certificate",
    "thumbprint-mismatch",
];

pub fn latency_histogram() -> Histogram {
    // 50 µs .. ~1.6 s
    Histogram::new(exponential_buckets(0.00005, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub dpop_nonce_miss: Counter,
    pub dpop_requests: Family<ResultLabel, Counter>,
    pub dpop_replay: Counter,
    pub mtls_mismatch: Family<ReasonLabel, Counter>,
    pub tokens_issued: Family<IssuedLabels, Counter>,
    pub request_seconds: Family<EndpointLabel, Histogram, fn() -> Histogram>,
    pub store_entries: Family<KindLabel, Gauge>,
    pub store_errors: Counter,
    pub bypass_active: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let metrics = Metrics {
            dpop_nonce_miss: Counter::default(),
            dpop_requests: Family::default(),
            dpop_replay: Counter::default(),
            mtls_mismatch: Family::default(),
            tokens_issued: Family::default(),
            request_seconds: Family::new_with_constructor(latency_histogram),
            store_entries: Family::default(),
            store_errors: Counter::default(),
            bypass_active: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "authority_dpop_nonce_miss",
            "DPoP proofs refused with use_dpop_nonce because they carried no valid server nonce (missing, unknown or expired)",
            metrics.dpop_nonce_miss.clone(),
        );
        registry.register(
            "authority_dpop_requests",
            "Token requests judged by the DPoP policy, by result (accepted, rejected, bypass)",
            metrics.dpop_requests.clone(),
        );
        registry.register(
            "authority_dpop_replay",
            "DPoP proofs refused because their jti was already used",
            metrics.dpop_replay.clone(),
        );
        registry.register(
            "authority_mtls_mismatch",
            "Certificate-bound token checks that failed, by reason",
            metrics.mtls_mismatch.clone(),
        );
        registry.register(
            "authority_tokens_issued",
            "Access tokens issued, by tenant and token type",
            metrics.tokens_issued.clone(),
        );
        registry.register(
            "authority_request_duration_seconds",
            "Request handling time by endpoint",
            metrics.request_seconds.clone(),
        );
        registry.register(
            "authority_store_entries",
            "Live entries in the sender store, by kind",
            metrics.store_entries.clone(),
        );
        registry.register(
            "authority_store_errors",
            "Store operations that failed (requests were refused, fail closed)",
            metrics.store_errors.clone(),
        );
        registry.register(
            "authority_dpop_bypass_active",
            "1 while a DPoP bypass drill is active",
            metrics.bypass_active.clone(),
        );
        // Make the mismatch and result series visible at zero before the first event, so
        // alert expressions and rate() see them from the start.
        for reason in MTLS_REASONS {
            let _ = metrics.mtls_mismatch.get_or_create(&ReasonLabel { reason });
        }
        for result in ["accepted", "rejected", "bypass"] {
            let _ = metrics.dpop_requests.get_or_create(&ResultLabel { result });
        }
        Metrics {
            registry,
            ..metrics
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
