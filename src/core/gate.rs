//! The gate: the one place a DPoP proof is admitted, for every endpoint that accepts one
//! (`/token`, `/fresh-auth`, and the guard in front of resource services).
//!
//! Admission is, in this order: every stateless check of RFC 9449 §4.3
//! ([`dpop::validate_proof`]) → the server nonce when the caller's policy requires one,
//! when the **restart fence** is up, or when the proof carries one → the atomic claim of
//! the `jti` in the store → the audit entry of a replay. A proof refused earlier never
//! burns its jti. A store that reports lost claims raises the fence here, and the request
//! is answered with a fresh nonce.
//!
//! The fence: after an unclean shutdown, or when the store may have lost claims it had
//! acknowledged, every proof must carry a nonce minted after that moment, for one replay
//! window (docs/crash-safety.md). A proof used before the loss carries no nonce or an old
//! one, so it cannot be used again; after the window its `iat` is too old.
//!
//! A loss found by one request must reach every other request on the node at once, not
//! only the one that found it: the store serves claims against its new state (a new Redis
//! epoch, a reopened sled) as soon as it has found the loss, and a request that skipped the
//! nonce because the fence was not yet up would have its claim of a used proof accepted
//! (seen: one replay of 303 accepted after a Redis `kill -9`, the claim racing the request
//! that found the loss). So the gate compares the store's loss count
//! ([`SenderStore::losses`]), which the store raises before it serves the new state, with
//! the count it has acknowledged: before the fence is checked (a loss found meanwhile
//! raises the fence for this request too) and after a fresh claim (a loss found while this
//! claim ran refuses it as the finder's own request is refused).

use crate::config::DpopSettings;
use crate::dpop::nonce::NonceSource;
use crate::dpop::{validate_proof, EndpointUrl, KeyCache, ProofError, ValidatedProof};
use crate::store::{Claim, SenderStore, StoreError};
use prometheus_client::metrics::counter::Counter;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

/// Until when (Unix seconds) every proof needs a nonce minted after the fence went up.
#[derive(Debug, Default)]
pub struct Fence {
    until: AtomicI64,
}

impl Fence {
    pub fn is_up(&self, now: i64) -> bool {
        now < self.until.load(Ordering::Acquire)
    }

    pub fn until(&self) -> i64 {
        self.until.load(Ordering::Acquire)
    }

    /// Raises the fence until `until`; an earlier raise that lasts longer is kept.
    fn raise(&self, until: i64) {
        self.until.fetch_max(until, Ordering::AcqRel);
    }
}

/// The counters and event names of one gate: the authority's and the guard's are distinct
/// series, so a resource replay is not mistaken for a token-endpoint one.
pub struct GateTelemetry {
    pub nonce_miss: Counter,
    pub replay: Counter,
    /// The `event` of the replay audit entry, e.g. `authority.dpop.replay`.
    pub replay_event: &'static str,
    /// The `event` logged when the fence goes up.
    pub fence_event: &'static str,
}

/// Who a proof was presented by, for the audit entry of a replay.
pub struct Presenter<'a> {
    pub tenant: &'a str,
    pub client: &'a str,
    pub peer: std::net::SocketAddr,
    pub endpoint: &'static str,
}

/// What a request carries and must match.
pub struct ProofCheck<'a> {
    /// Every `DPoP` header value of the request (exactly one is allowed, §4.3 (1)).
    pub proof_headers: &'a [&'a [u8]],
    pub method: &'a str,
    pub target: &'a EndpointUrl,
    /// The access token presented with the proof (resource requests, `/fresh-auth`).
    pub access_token: Option<&'a str>,
    /// The token's `cnf.jkt`, when a token is presented: the proof must be signed by it.
    pub bound_jkt: Option<&'a str>,
    /// The policy or route requires a server nonce.
    pub nonce_required: bool,
    pub now: i64,
}

/// How the nonce was judged, for the `authority.dpop.request` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceStatus {
    NotRequired,
    Valid,
    Missing,
    Invalid,
    /// The store reported lost claims during this request: the fence went up.
    FenceRaised,
}

impl NonceStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotRequired => "not-required",
            Self::Valid => "valid",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::FenceRaised => "fence-raised",
        }
    }
}

/// Why the gate refused a proof.
#[derive(Debug)]
pub enum GateError {
    /// A check of RFC 9449 §4.3 failed.
    Invalid(ProofError),
    /// §4.3 (12)(b): the proof key is not the one the presented token is bound to.
    KeyMismatch,
    /// The request must be retried with a proof carrying this nonce.
    UseNonce { nonce: String, status: NonceStatus },
    /// The jti was used before within the replay window (audited).
    Replayed,
    /// The store cannot answer: fail closed.
    Store(StoreError),
}

/// A proof the gate admitted: valid, fresh, and its jti now claimed.
#[derive(Debug)]
pub struct Admitted {
    pub proof: ValidatedProof,
    pub nonce: NonceStatus,
}

/// The gate of one process (the authority, or a guard), over its store.
pub struct Gate {
    store: Arc<dyn SenderStore>,
    keys: KeyCache,
    nonces: NonceSource,
    fence: Fence,
    /// The store's loss count as of the last time this gate raised the fence for it.
    acknowledged_losses: AtomicU64,
    telemetry: GateTelemetry,
}

impl Gate {
    pub fn new(store: Arc<dyn SenderStore>, telemetry: GateTelemetry) -> Gate {
        Gate {
            acknowledged_losses: AtomicU64::new(store.losses()),
            store,
            keys: KeyCache::default(),
            nonces: NonceSource::default(),
            fence: Fence::default(),
            telemetry,
        }
    }

    pub fn store(&self) -> &Arc<dyn SenderStore> {
        &self.store
    }

    pub fn fence(&self) -> &Fence {
        &self.fence
    }

    /// The proof-key cache (exposed for its usage figures).
    pub fn keys(&self) -> &KeyCache {
        &self.keys
    }

    /// Raises the restart fence for one replay window from `now` and stops handing out
    /// the current nonce (it predates the loss).
    pub fn raise_fence(&self, now: i64, replay_window: i64, cause: &str) {
        let until = now + replay_window;
        self.fence.raise(until);
        self.nonces.forget();
        tracing::warn!(
            event = self.telemetry.fence_event,
            until,
            cause,
            "DPoP proofs need a fresh server nonce until the replay window has passed"
        );
    }

    /// The nonce to hand out now (`DPoP-Nonce`).
    pub async fn current_nonce(
        &self,
        settings: &DpopSettings,
        now: i64,
    ) -> Result<String, StoreError> {
        let ttl = settings.nonce_ttl.as_secs() as i64;
        match self.nonces.current(self.store.as_ref(), now, ttl).await {
            Err(StoreError::ClaimsLost(cause)) => {
                self.raise_fence(now, settings.replay_window.as_secs() as i64, &cause);
                self.nonces.current(self.store.as_ref(), now, ttl).await
            }
            other => other,
        }
    }

    /// Admits the proof of one request, or says why not (see the module doc for the order).
    pub async fn admit(
        &self,
        settings: &DpopSettings,
        check: &ProofCheck<'_>,
        presenter: &Presenter<'_>,
    ) -> Result<Admitted, GateError> {
        let now = check.now;
        let facts = crate::dpop::RequestFacts {
            method: check.method,
            target: check.target,
            now,
            access_token: check.access_token,
        };
        // §4.3 (1)–(9), (11), (12)(a): every stateless check.
        let proof = validate_proof(check.proof_headers, &facts, settings, &self.keys)
            .map_err(GateError::Invalid)?;
        // §4.3 (12)(b): with an access token, the proof is signed by the key it is bound to
        // (checked before the nonce and the claim: another key's proof burns nothing).
        if check.bound_jkt.is_some_and(|bound| bound != proof.jkt) {
            return Err(GateError::KeyMismatch);
        }

        // A loss the store found since this gate last looked raises the fence now, whoever
        // found it; the count is read again after the claim.
        let losses = self.acknowledge_losses(settings, now);

        // §4.3 (10): the nonce, when required (policy, route or fence) or when one is sent.
        let required = check.nonce_required || self.fence.is_up(now);
        let mut status = NonceStatus::NotRequired;
        if required || proof.nonce.is_some() {
            let valid = match &proof.nonce {
                Some(n) => match self.nonces.is_valid(self.store.as_ref(), n, now).await {
                    Ok(valid) => valid,
                    Err(StoreError::ClaimsLost(cause)) => {
                        return Err(self.claims_lost(settings, now, &cause).await)
                    }
                    Err(e) => return Err(GateError::Store(e)),
                },
                None => false,
            };
            if !valid {
                self.telemetry.nonce_miss.inc();
                let status = if proof.nonce.is_some() {
                    NonceStatus::Invalid
                } else {
                    NonceStatus::Missing
                };
                let nonce = self
                    .current_nonce(settings, now)
                    .await
                    .map_err(GateError::Store)?;
                return Err(GateError::UseNonce { nonce, status });
            }
            status = NonceStatus::Valid;
        }

        // §4.3 (12): the jti has not been seen within the window; claimed atomically.
        let expires_at = now + settings.replay_window.as_secs() as i64;
        match self
            .store
            .claim_jti(&proof.jkt, &proof.jti, expires_at, now)
            .await
        {
            // A loss found while this claim ran: the claim may have been made against the
            // store's new state for a proof used before the loss. Refused as the finder's own
            // request is: the fence is up, and the client gets a fresh nonce.
            Ok(Claim::Fresh) if self.store.losses() != losses => {
                self.acknowledge_losses(settings, now);
                Err(self.fence_raised(settings, now).await)
            }
            Ok(Claim::Fresh) => Ok(Admitted {
                proof,
                nonce: status,
            }),
            Ok(Claim::Replayed) => {
                self.telemetry.replay.inc();
                // The audit entry: who replayed, with which key; the jti is hashed so the
                // log does not carry a reusable proof identifier.
                tracing::warn!(
                    event = self.telemetry.replay_event,
                    endpoint = presenter.endpoint,
                    tenant = %presenter.tenant,
                    client = %presenter.client,
                    cnf_jkt = %proof.jkt,
                    jti_sha256 = %crate::dpop::access_token_hash(&proof.jti),
                    iat = proof.iat,
                    peer = %presenter.peer,
                    "DPoP proof replayed within the replay window"
                );
                Err(GateError::Replayed)
            }
            Err(StoreError::ClaimsLost(cause)) => {
                Err(self.claims_lost(settings, now, &cause).await)
            }
            Err(e) => Err(GateError::Store(e)),
        }
    }

    /// Raises the fence if the store has found a loss this gate has not raised it for;
    /// returns the store's loss count as read.
    fn acknowledge_losses(&self, settings: &DpopSettings, now: i64) -> u64 {
        let losses = self.store.losses();
        if self.acknowledged_losses.fetch_max(losses, Ordering::AcqRel) < losses {
            self.raise_fence(
                now,
                settings.replay_window.as_secs() as i64,
                "the store found that it may have lost jti claims",
            );
        }
        losses
    }

    /// The store may have lost claims: raise the fence and ask for a nonce minted now.
    async fn claims_lost(&self, settings: &DpopSettings, now: i64, cause: &str) -> GateError {
        self.raise_fence(now, settings.replay_window.as_secs() as i64, cause);
        self.fence_raised(settings, now).await
    }

    /// The answer to a request refused because the fence went up: a nonce minted now.
    async fn fence_raised(&self, settings: &DpopSettings, now: i64) -> GateError {
        match self.current_nonce(settings, now).await {
            Ok(nonce) => GateError::UseNonce {
                nonce,
                status: NonceStatus::FenceRaised,
            },
            Err(e) => GateError::Store(e),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The gate with a real sled store on disk and a fixed `now`, no HTTP.
    use super::*;
    use crate::client::ProofKey;
    use crate::store::sled_store::SledStore;
    use crate::store::{StoreSize, TokenId, TokenRecord};
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000;
    const URL: &str = "https://auth.example/token";

    fn settings() -> DpopSettings {
        DpopSettings {
            enabled: true,
            allowed_algorithms: vec![crate::dpop::ProofAlgorithm::ES256],
            algs_header: "ES256".into(),
            proof_lifetime: Duration::from_secs(60),
            clock_skew: Duration::from_secs(5),
            replay_window: Duration::from_secs(120),
            nonce_required: false,
            nonce_ttl: Duration::from_secs(300),
            bypass_allowed: false,
            bypass: None,
        }
    }

    fn gate(store: Arc<dyn SenderStore>) -> Gate {
        Gate::new(
            store,
            GateTelemetry {
                nonce_miss: Counter::default(),
                replay: Counter::default(),
                replay_event: "test.dpop.replay",
                fence_event: "test.fence",
            },
        )
    }

    fn sled(dir: &tempfile::TempDir) -> Arc<dyn SenderStore> {
        Arc::new(SledStore::open(&dir.path().join("store")).unwrap())
    }

    fn presenter() -> Presenter<'static> {
        Presenter {
            tenant: "t",
            client: "c",
            peer: "127.0.0.1:1".parse().unwrap(),
            endpoint: "token",
        }
    }

    async fn admit(
        gate: &Gate,
        proof: &str,
        nonce_required: bool,
        bound_jkt: Option<&str>,
    ) -> Result<Admitted, GateError> {
        let target = EndpointUrl::parse(URL).unwrap();
        let headers = [proof.as_bytes()];
        let check = ProofCheck {
            proof_headers: &headers,
            method: "POST",
            target: &target,
            access_token: None,
            bound_jkt,
            nonce_required,
            now: NOW,
        };
        gate.admit(&settings(), &check, &presenter()).await
    }

    fn proof(key: &ProofKey, nonce: Option<&str>) -> String {
        key.proof_at("POST", URL, nonce, None, NOW).unwrap()
    }

    /// A proof without a nonce is refused with `use_dpop_nonce` for `status` (else
    /// panics with `why`) and the fence is up for the replay window; the nonce handed out.
    async fn refused_for_a_nonce(
        gate: &Gate,
        key: &ProofKey,
        status: NonceStatus,
        why: &str,
    ) -> String {
        let Err(GateError::UseNonce { nonce, status: got }) =
            admit(gate, &proof(key, None), false, None).await
        else {
            panic!("{why}")
        };
        assert_eq!(got, status);
        assert!(gate.fence().is_up(NOW + 119));
        nonce
    }

    #[tokio::test]
    async fn a_proof_is_admitted_once_and_its_replay_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(sled(&dir));
        let key = ProofKey::es256().unwrap();
        let p = proof(&key, None);
        let admitted = admit(&gate, &p, false, None).await.unwrap();
        assert_eq!(admitted.proof.jkt, key.thumbprint());
        assert_eq!(admitted.nonce, NonceStatus::NotRequired);
        assert!(matches!(
            admit(&gate, &p, false, None).await,
            Err(GateError::Replayed)
        ));
        assert_eq!(gate.telemetry.replay.get(), 1);
    }

    #[tokio::test]
    async fn a_required_nonce_must_be_one_the_store_minted() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(sled(&dir));
        let key = ProofKey::es256().unwrap();
        let Err(GateError::UseNonce { nonce, status }) =
            admit(&gate, &proof(&key, None), true, None).await
        else {
            panic!("no nonce asked for")
        };
        assert_eq!(status, NonceStatus::Missing);
        let Err(GateError::UseNonce { status, .. }) =
            admit(&gate, &proof(&key, Some("made-up")), true, None).await
        else {
            panic!("a made-up nonce was accepted")
        };
        assert_eq!(status, NonceStatus::Invalid);
        assert_eq!(gate.telemetry.nonce_miss.get(), 2);
        let admitted = admit(&gate, &proof(&key, Some(&nonce)), true, None)
            .await
            .unwrap();
        assert_eq!(admitted.nonce, NonceStatus::Valid);
    }

    /// A proof refused before the claim (another key than the token's) burns nothing: the
    /// same proof is then admitted where it belongs.
    #[tokio::test]
    async fn a_proof_by_another_key_is_refused_before_its_jti_is_claimed() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(sled(&dir));
        let key = ProofKey::es256().unwrap();
        let p = proof(&key, None);
        assert!(matches!(
            admit(&gate, &p, false, Some("another-thumbprint")).await,
            Err(GateError::KeyMismatch)
        ));
        let thumbprint = key.thumbprint();
        assert!(admit(&gate, &p, false, Some(&thumbprint)).await.is_ok());
    }

    /// The fence: while it is up every proof needs a nonce minted after it went up; the
    /// nonce handed out before is no longer handed out.
    #[tokio::test]
    async fn while_the_fence_is_up_every_proof_needs_a_new_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let gate = gate(sled(&dir));
        let before = gate.current_nonce(&settings(), NOW).await.unwrap();
        gate.raise_fence(NOW, 120, "test");
        assert!(gate.fence().is_up(NOW) && !gate.fence().is_up(NOW + 120));
        let key = ProofKey::es256().unwrap();
        let Err(GateError::UseNonce { nonce, .. }) =
            admit(&gate, &proof(&key, None), false, None).await
        else {
            panic!("a proof without a nonce passed the fence")
        };
        assert_ne!(nonce, before, "the pre-fence nonce is still handed out");
        assert!(admit(&gate, &proof(&key, Some(&nonce)), false, None)
            .await
            .is_ok());
    }

    #[tokio::test]
    async fn lost_claims_raise_the_fence_and_ask_for_a_nonce() {
        let dir = tempfile::tempdir().unwrap();
        let store = lossy(&dir);
        store.report_once.store(true, Ordering::SeqCst);
        let gate = gate(store);
        let key = ProofKey::es256().unwrap();
        let nonce = refused_for_a_nonce(
            &gate,
            &key,
            NonceStatus::FenceRaised,
            "lost claims did not stop the request",
        )
        .await;
        assert!(matches!(
            admit(&gate, &proof(&key, None), false, None).await,
            Err(GateError::UseNonce { .. })
        ));
        assert!(admit(&gate, &proof(&key, Some(&nonce)), false, None)
            .await
            .is_ok());
    }

    /// A sled store that loses claims on demand, as a restarted Redis does: it reports the
    /// loss to the next claim (`report_once`), or another request finds one while this
    /// request's claim runs (`during_claim`) or before this request (raise `losses`).
    struct Lossy {
        inner: Arc<dyn SenderStore>,
        report_once: AtomicBool,
        losses: AtomicU64,
        during_claim: AtomicBool,
    }

    #[async_trait::async_trait]
    impl SenderStore for Lossy {
        async fn begin_run(&self) -> Result<crate::store::PreviousShutdown, StoreError> {
            self.inner.begin_run().await
        }
        async fn end_run(&self) -> Result<(), StoreError> {
            self.inner.end_run().await
        }
        async fn put_nonce(&self, nonce: &str, expires_at: i64) -> Result<(), StoreError> {
            self.inner.put_nonce(nonce, expires_at).await
        }
        async fn nonce_is_valid(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
            self.inner.nonce_is_valid(nonce, now).await
        }
        async fn claim_jti(
            &self,
            jkt: &str,
            jti: &str,
            expires_at: i64,
            now: i64,
        ) -> Result<Claim, StoreError> {
            if self.report_once.swap(false, Ordering::SeqCst) {
                return Err(StoreError::ClaimsLost("test".into()));
            }
            // The claim itself succeeds: the store already serves its new state.
            if self.during_claim.swap(false, Ordering::SeqCst) {
                self.losses.fetch_add(1, Ordering::SeqCst);
            }
            self.inner.claim_jti(jkt, jti, expires_at, now).await
        }
        async fn put_token(&self, id: TokenId, record: &TokenRecord) -> Result<(), StoreError> {
            self.inner.put_token(id, record).await
        }
        async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
            self.inner.get_token(id).await
        }
        async fn revoke_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
            self.inner.revoke_token(id).await
        }
        fn losses(&self) -> u64 {
            self.losses.load(Ordering::SeqCst)
        }
        async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
            self.inner.sweep(now).await
        }
        fn size(&self) -> StoreSize {
            self.inner.size()
        }
        async fn probe(&self) -> Result<(), StoreError> {
            self.inner.probe().await
        }
    }

    fn lossy(dir: &tempfile::TempDir) -> Arc<Lossy> {
        Arc::new(Lossy {
            inner: sled(dir),
            report_once: AtomicBool::new(false),
            losses: AtomicU64::new(0),
            during_claim: AtomicBool::new(false),
        })
    }

    /// The race a Redis `kill -9` showed: another request found the loss and the store
    /// serves its new state, but the fence is not up yet when this request's claim of a
    /// used proof (no nonce) succeeds. The claim is refused with a fresh nonce.
    #[tokio::test]
    async fn a_loss_found_while_a_claim_runs_refuses_that_claim() {
        let dir = tempfile::tempdir().unwrap();
        let store = lossy(&dir);
        let gate = gate(store.clone());
        let key = ProofKey::es256().unwrap();
        store.during_claim.store(true, Ordering::SeqCst);
        let nonce = refused_for_a_nonce(
            &gate,
            &key,
            NonceStatus::FenceRaised,
            "a claim that raced a loss was admitted",
        )
        .await;
        assert!(admit(&gate, &proof(&key, Some(&nonce)), false, None)
            .await
            .is_ok());
    }

    /// A loss another request found (and has not yet raised the fence for) raises it for
    /// this request before its nonce is judged: a proof without a nonce is refused.
    #[tokio::test]
    async fn a_loss_found_by_another_request_raises_the_fence_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = lossy(&dir);
        let gate = gate(store.clone());
        let key = ProofKey::es256().unwrap();
        assert!(admit(&gate, &proof(&key, None), false, None).await.is_ok());
        store.losses.fetch_add(1, Ordering::SeqCst);
        let nonce = refused_for_a_nonce(
            &gate,
            &key,
            NonceStatus::Missing,
            "a proof without a nonce was admitted after a loss",
        )
        .await;
        // Acknowledged once: the next proof with the new nonce is admitted.
        assert!(admit(&gate, &proof(&key, Some(&nonce)), false, None)
            .await
            .is_ok());
    }
}
