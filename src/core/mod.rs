//! The issuance core: every decision that makes a token sender-constrained, with no HTTP
//! in it. The server parses a request, calls the core, and maps its answer; the guard
//! (resource side) calls the same [`gate::Gate`].
//!
//! - [`gate`]: admits a DPoP proof (RFC 9449 §4.3 → nonce and restart fence → atomic jti
//!   claim → replay audit).
//! - [`certificate`]: which client certificate a request carries and the RFC 8705 §3
//!   binding check.
//! - [`issue`]: `client_credentials` issuance for an authenticated client: scope, policy
//!   (DPoP / mTLS / both / bypass), `cnf`, minting, the token record.
//! - [`fresh_auth`]: re-proving possession of what a token is bound to.
//! - [`incident`]: the operator's revocations (one token by `jti`, all of a client's).
//!
//! Errors are domain errors ([`Denied`]); `server::error` turns them into OAuth answers in
//! one `From`. Time comes from the injectable [`Clock`].

pub mod certificate;
pub mod fresh_auth;
pub mod gate;
pub mod incident;
pub mod issue;

use crate::clock::Clock;
use crate::keyset::KeyRing;
use crate::policy::Bypass;
use crate::store::{PreviousShutdown, SenderStore, StoreError};
use crate::telemetry::events;
use crate::telemetry::metrics::Metrics;
use gate::{Gate, GateTelemetry};
use std::sync::Arc;

/// Why the core refused a request, in its own terms. Every variant is one OAuth error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// A requested scope is not registered for the client (RFC 6749 §5.2).
    InvalidScope(String),
    /// RFC 9449 §8 (token endpoint) / §9 (`with_access_token`: a token was presented):
    /// retry with a proof carrying `nonce`.
    UseDpopNonce {
        description: &'static str,
        nonce: String,
        with_access_token: bool,
        algs: String,
    },
    /// A proof failed a check (400 at the token endpoint) or was replayed or came with an
    /// access token (`unauthorized`: 401 + `WWW-Authenticate`).
    InvalidDpopProof {
        description: String,
        unauthorized: bool,
        algs: String,
    },
    /// The client's policy needs a client certificate it did not present (RFC 8705).
    CertificateRequired { description: String },
    /// The presented access token is not acceptable for this sender (RFC 6750 §3.1).
    InvalidToken {
        description: &'static str,
        scheme: &'static str,
    },
    /// The store cannot answer (already counted and logged): fail closed.
    Unavailable,
    /// Something that cannot happen with valid state did (already logged): 500.
    Internal,
}

/// The authority's core: its gate, signing key, bypass state, metrics and clock.
pub struct Core {
    pub gate: Gate,
    /// The token signing key set (current signs; current, previous and next verify).
    pub signing_key: KeyRing,
    pub bypass: Bypass,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
}

impl Core {
    /// Builds the core and opens a run in the store; after an unclean end of the previous
    /// run the restart fence goes up for one replay window.
    pub async fn start(
        settings: &crate::config::Settings,
        signing_key: KeyRing,
        store: Arc<dyn SenderStore>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Core, StoreError> {
        let previous = store.begin_run().await?;
        let gate = Gate::new(
            store,
            GateTelemetry {
                nonce_miss: metrics.dpop_nonce_miss.clone(),
                replay: metrics.dpop_replay.clone(),
                replay_event: events::DPOP_REPLAY,
                fence_event: events::STORE_FENCE,
            },
        );
        let now = clock.now();
        if previous == PreviousShutdown::Unclean {
            gate.raise_fence(
                now,
                settings.dpop.replay_window.as_secs() as i64,
                "the previous run ended uncleanly",
            );
        }
        let bypass = Bypass::new(settings.dpop.bypass_allowed, settings.dpop.bypass.clone());
        Ok(Core {
            gate,
            signing_key,
            bypass,
            metrics,
            clock,
        })
    }

    pub fn store(&self) -> &Arc<dyn SenderStore> {
        self.gate.store()
    }

    /// What a request gets when the store cannot answer: counted, logged, and
    /// [`Denied::Unavailable`] (fail closed: no check is ever skipped instead).
    pub fn unavailable(&self, error: StoreError) -> Denied {
        self.metrics.store_errors.inc();
        tracing::error!(event = events::STORE_ERROR, error = %error, "refusing the request: the store cannot answer");
        Denied::Unavailable
    }

    /// Whether the restart fence is up now.
    pub fn fence_active(&self) -> bool {
        self.gate.fence().is_up(self.clock.now())
    }
}
