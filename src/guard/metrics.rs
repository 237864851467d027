//! The guard's Prometheus series (`guard_*`): decisions by reason, DPoP nonce misses and
//! replays at the resource, certificate mismatches, upstream latency, the keys held.

use crate::telemetry::metrics::{latency_histogram, ReasonLabel, MTLS_REASONS};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// `allowed` or `refused`.
    pub decision: &'static str,
    pub reason: &'static str,
}

pub struct GuardMetrics {
    pub requests: Family<DecisionLabels, Counter>,
    pub dpop_nonce_miss: Counter,
    pub dpop_replay: Counter,
    pub mtls_mismatch: Family<ReasonLabel, Counter>,
    pub upstream_seconds: Histogram,
    pub upstream_errors: Family<ReasonLabel, Counter>,
    pub keys: Gauge,
    pub store_errors: Counter,
    registry: Registry,
}

impl GuardMetrics {
    pub fn new() -> GuardMetrics {
        let mut registry = Registry::default();
        let metrics = GuardMetrics {
            requests: Family::default(),
            dpop_nonce_miss: Counter::default(),
            dpop_replay: Counter::default(),
            mtls_mismatch: Family::default(),
            upstream_seconds: latency_histogram(),
            upstream_errors: Family::default(),
            keys: Gauge::default(),
            store_errors: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "guard_requests",
            "Requests judged by the guard, by decision (allowed, refused) and reason",
            metrics.requests.clone(),
        );
        registry.register(
            "guard_dpop_nonce_miss",
            "Resource requests refused with use_dpop_nonce (no valid resource nonce)",
            metrics.dpop_nonce_miss.clone(),
        );
        registry.register(
            "guard_dpop_replay",
            "Resource requests refused because their DPoP proof was already used",
            metrics.dpop_replay.clone(),
        );
        registry.register(
            "guard_mtls_mismatch",
            "Certificate-bound tokens presented without their certificate, by reason",
            metrics.mtls_mismatch.clone(),
        );
        registry.register(
            "guard_upstream_duration_seconds",
            "Time the upstream took to answer a forwarded request",
            metrics.upstream_seconds.clone(),
        );
        registry.register(
            "guard_upstream_errors",
            "Forwarded requests that failed, by reason (unreachable: 502, timeout: 504)",
            metrics.upstream_errors.clone(),
        );
        registry.register(
            "guard_signing_keys",
            "Authority signing keys the guard holds (0: every token is refused)",
            metrics.keys.clone(),
        );
        registry.register(
            "guard_store_errors",
            "Store operations that failed (requests were refused, fail closed)",
            metrics.store_errors.clone(),
        );
        for reason in MTLS_REASONS {
            let _ = metrics.mtls_mismatch.get_or_create(&ReasonLabel { reason });
        }
        for reason in ["unreachable", "timeout"] {
            let _ = metrics
                .upstream_errors
                .get_or_create(&ReasonLabel { reason });
        }
        GuardMetrics {
            registry,
            ..metrics
        }
    }

    pub fn count(&self, decision: &'static str, reason: &'static str) {
        self.requests
            .get_or_create(&DecisionLabels { decision, reason })
            .inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4 * 1024);
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for GuardMetrics {
    fn default() -> Self {
        Self::new()
    }
}
