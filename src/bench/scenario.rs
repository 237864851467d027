//! The scenarios `sealkit bench` measures: what each request is, what its floor is.

use super::*;

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// DPoP-bound tokens, sled store, no nonce.
    Dpop,
    /// DPoP-bound tokens for the nonce tenant (proofs carry a server nonce).
    DpopNonce,
    /// Bearer tokens for the unconstrained tenant (no proof).
    Bearer,
    /// `/introspect` on pre-issued tokens with the demo's resource client.
    Introspect,
    /// Certificate-bound tokens (needs an mTLS client in the demo site).
    Mtls,
    /// DPoP-bound tokens with the Redis store (needs `--redis-url`).
    Redis,
    /// Resource requests through `sealkit guard` (DPoP proof with `ath` per request, the
    /// token's signature remembered after its first use) to the echo upstream.
    Guard,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Dpop,
        Scenario::DpopNonce,
        Scenario::Bearer,
        Scenario::Introspect,
        Scenario::Mtls,
        Scenario::Redis,
        Scenario::Guard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Dpop => "dpop",
            Scenario::DpopNonce => "dpop-nonce",
            Scenario::Bearer => "bearer",
            Scenario::Introspect => "introspect",
            Scenario::Mtls => "mtls",
            Scenario::Redis => "redis",
            Scenario::Guard => "guard",
        }
    }

    pub fn parse(text: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == text)
    }

    /// The cryptography one request needs at the least, priced the three ways
    /// `bench::floor` measures.
    pub(super) fn floor_us(self, floor: &CryptoFloor) -> RequestFloor {
        let (kind, josekit_us, bare_us, openssl_us) = match self {
            Scenario::Dpop | Scenario::DpopNonce | Scenario::Redis => (
                "ES256 verify + sign",
                floor.dpop_token_us(),
                floor.bare_dpop_token_us(),
                floor.openssl_dpop_token_us(),
            ),
            Scenario::Bearer | Scenario::Mtls => (
                "ES256 sign",
                floor.es256_sign_us,
                floor.bare_sign_us,
                floor.openssl_sign_us,
            ),
            Scenario::Introspect | Scenario::Guard => (
                "ES256 verify",
                floor.es256_verify_us,
                floor.bare_verify_us,
                floor.openssl_verify_us,
            ),
        };
        RequestFloor {
            kind,
            josekit_us,
            bare_us,
            openssl_us,
        }
    }

    /// The `endpoint` label of the authority's `authority_request_duration_seconds` for
    /// this scenario's requests (the guard's requests are not timed by the authority).
    pub(super) fn endpoint_label(self) -> Option<&'static str> {
        match self {
            Scenario::Introspect => Some("introspect"),
            Scenario::Guard => None,
            _ => Some("token"),
        }
    }

    pub(super) fn unit(self) -> &'static str {
        match self {
            Scenario::Introspect => "introspections",
            Scenario::Guard => "requests",
            _ => "tokens",
        }
    }
}

/// One request's crypto floor: which operations, and their cost through josekit, bare
/// (the server's own ES256) and bare on OpenSSL.
pub(super) struct RequestFloor {
    pub kind: &'static str,
    pub josekit_us: f64,
    pub bare_us: f64,
    pub openssl_us: f64,
}
