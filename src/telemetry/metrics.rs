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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabel {
    pub cause: &'static str,
}

/// Reasons of `authority_mtls_mismatch_total` (the plan's three).
pub const MTLS_REASONS: [&str; 3] = [
    "context-missing",
    "missing-certificate",
    "thumbprint-mismatch",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: &'static str,
}

/// Reasons of `authority_client_auth_failures_total` (a fixed set: the presented client id
/// is never a label, so unknown ids cannot grow the series).
pub const CLIENT_AUTH_REASONS: [&str; 11] = [
    "malformed-header",
    "no-client-id",
    "no-secret",
    "no-credentials",
    "wrong-secret",
    "unknown-client",
    "client-authenticates-with-certificate",
    "client-authenticates-with-secret",
    "certificate-does-not-authenticate-client",
    "missing-certificate",
    "context-missing",
];

/// Errors of `authority_token_requests_refused_total`.
pub const REFUSED_ERRORS: [&str; 2] = ["unsupported_grant_type", "invalid_scope"];

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
    pub store_up: Gauge,
    pub store_down_since: Gauge,
    pub store_down: Family<CauseLabel, Gauge>,
    pub store_claims_lost: Counter,
    pub store_reopened: Counter,
    pub store_commits: Counter,
    pub bypass_active: Gauge,
    pub client_auth_failures: Family<ReasonLabel, Counter>,
    pub token_requests_refused: Family<ErrorLabel, Counter>,
    pub tls_certificate_not_after: Gauge,
    pub client_crl_next_update: Gauge,
    pub bundle_expires: Gauge,
    pub signing_key_created: Gauge,
    /// When the last planned key of a signing-key schedule activates (0: no schedule).
    pub signing_key_schedule_end: Gauge,
    /// Sign-in attempts by result (success, failure, locked, rate-limited).
    pub logins: Family<ResultLabel, Counter>,
    /// Refresh tokens used a second time (each revoked its family).
    pub refresh_reuse: Counter,
    /// Tokens issued by the user grants, by grant.
    pub user_grants: Family<GrantLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GrantLabel {
    pub grant: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics::with_store_commits(None)
    }

    /// The registry, with the store's histogram of commit durations
    /// (`SenderStore::commit_seconds`) when the store makes commits of its own.
    pub fn with_store_commits(commit_seconds: Option<Histogram>) -> Metrics {
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
            store_up: Gauge::default(),
            store_down_since: Gauge::default(),
            store_down: Family::default(),
            store_claims_lost: Counter::default(),
            store_reopened: Counter::default(),
            store_commits: Counter::default(),
            bypass_active: Gauge::default(),
            logins: Family::default(),
            refresh_reuse: Counter::default(),
            user_grants: Family::default(),
            client_auth_failures: Family::default(),
            token_requests_refused: Family::default(),
            tls_certificate_not_after: Gauge::default(),
            client_crl_next_update: Gauge::default(),
            bundle_expires: Gauge::default(),
            signing_key_created: Gauge::default(),
            signing_key_schedule_end: Gauge::default(),
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
            "authority_store_up",
            "1 while the sender store answers, 0 while it is unavailable (requests that need it are refused)",
            metrics.store_up.clone(),
        );
        registry.register(
            "authority_store_down_since_seconds",
            "Unix time at which the current store outage began; 0 while the store is up",
            metrics.store_down_since.clone(),
        );
        registry.register(
            "authority_store_down",
            "1 for the cause of the current store outage (storage-full, read-only, io-error, unreachable, other)",
            metrics.store_down.clone(),
        );
        registry.register(
            "authority_store_claims_lost",
            "Times the store found it may have lost acknowledged DPoP jti claims (Redis restarted or flushed, sled reopened after an I/O error); each raised the restart fence",
            metrics.store_claims_lost.clone(),
        );
        registry.register(
            "authority_store_reopened",
            "Times the embedded store reopened itself after an I/O error",
            metrics.store_reopened.clone(),
        );
        registry.register(
            "authority_store_commits",
            "Durable commits of the embedded store (one fdatasync each, shared by every token record and revocation that joined it): tokens issued over commits is the writers per commit",
            metrics.store_commits.clone(),
        );
        if let Some(commit_seconds) = commit_seconds {
            registry.register(
                "authority_store_commit_seconds",
                "Time of each durable commit of the embedded store (journal write and fdatasync): every token answered waited for one, so this is the disk's share of /token latency",
                commit_seconds,
            );
        }
        registry.register(
            "authority_dpop_bypass_active",
            "1 while a DPoP bypass drill is active",
            metrics.bypass_active.clone(),
        );
        registry.register(
            "authority_logins",
            "Sign-in attempts by result (success, failure, locked, rate-limited)",
            metrics.logins.clone(),
        );
        registry.register(
            "authority_refresh_reuse",
            "Refresh tokens presented a second time; each revoked its whole family",
            metrics.refresh_reuse.clone(),
        );
        registry.register(
            "authority_user_grant_tokens",
            "Tokens issued to people, by grant (device_code, authorization_code, refresh_token)",
            metrics.user_grants.clone(),
        );
        for result in ["success", "failure", "locked", "rate-limited"] {
            let _ = metrics.logins.get_or_create(&ResultLabel { result });
        }
        registry.register(
            "authority_client_auth_failures",
            "Failed client authentications at the token, introspection and revocation endpoints, by reason (wrong-secret, unknown-client, certificate-does-not-authenticate-client, ...)",
            metrics.client_auth_failures.clone(),
        );
        registry.register(
            "authority_token_requests_refused",
            "Token requests refused as unsupported_grant_type or invalid_scope, by error",
            metrics.token_requests_refused.clone(),
        );
        registry.register(
            "authority_tls_certificate_not_after_timestamp_seconds",
            "When the server certificate chain (its earliest notAfter) expires, in Unix seconds; 0 if unreadable",
            metrics.tls_certificate_not_after.clone(),
        );
        registry.register(
            "authority_client_crl_next_update_timestamp_seconds",
            "The earliest nextUpdate of the client CRLs (tls.clientCrl), in Unix seconds; 0 when no CRL is configured. After it every client certificate is refused",
            metrics.client_crl_next_update.clone(),
        );
        registry.register(
            "authority_bundle_expires_timestamp_seconds",
            "When the active configuration bundle expires, in Unix seconds; 0 when the configuration is not from a bundle",
            metrics.bundle_expires.clone(),
        );
        registry.register(
            "authority_signing_key_created_timestamp_seconds",
            "When the token signing key in use was created (a scheduled key: when it activated), in Unix seconds",
            metrics.signing_key_created.clone(),
        );
        registry.register(
            "authority_signing_key_schedule_end_timestamp_seconds",
            "When the last planned key of the signing-key schedule activates, in Unix seconds; 0 when the key set has no schedule. After it no key rotates until the schedule is extended",
            metrics.signing_key_schedule_end.clone(),
        );
        for reason in CLIENT_AUTH_REASONS {
            let _ = metrics
                .client_auth_failures
                .get_or_create(&ReasonLabel { reason });
        }
        for error in REFUSED_ERRORS {
            let _ = metrics
                .token_requests_refused
                .get_or_create(&ErrorLabel { error });
        }
        // Make the mismatch and result series visible at zero before the first event, so
        // alert expressions and rate() see them from the start.
        for reason in MTLS_REASONS {
            let _ = metrics.mtls_mismatch.get_or_create(&ReasonLabel { reason });
        }
        metrics.store_up.set(1);
        for cause in crate::store::health::Cause::ALL {
            let _ = metrics.store_down.get_or_create(&CauseLabel {
                cause: cause.label(),
            });
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
