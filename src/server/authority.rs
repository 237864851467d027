//! The authority's shared state: the current configuration snapshot (swapped atomically on
//! reload), signing key, store, metrics, server nonce, restart fence and bypass state.
//! Handlers borrow it.

use crate::clock::Clock;
use crate::config::{BypassWindow, Settings};
use crate::dpop::{EndpointUrl, KeyCache};
use crate::store::{PreviousShutdown, SenderStore, StoreError};
use crate::telemetry::events;
use crate::telemetry::metrics::Metrics;
use crate::token::SigningKey;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The server nonce handed out on responses. One nonce is current at a time and every
/// nonce stays valid for its full TTL, so concurrent clients never invalidate each other's;
/// a new one is minted when the current one has used half its TTL.
struct CurrentNonce {
    value: String,
    minted_at: i64,
}

/// Everything derived from one configuration file. A reload builds a new snapshot and
/// swaps it in; requests in flight finish on the snapshot they started with.
pub struct Snapshot {
    pub settings: Arc<Settings>,
    /// The token endpoint, normalised for comparing against DPoP `htu`.
    pub token_url: EndpointUrl,
    pub discovery: Bytes,
    pub tls: Arc<rustls::ServerConfig>,
    /// Judges client-certificate chains (client CA + CRLs), when client CAs are configured.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl Snapshot {
    pub fn build(settings: Settings) -> Result<Snapshot, super::ServerError> {
        let token_url =
            EndpointUrl::parse(&settings.token_endpoint).ok_or(super::ServerError::Issuer)?;
        let discovery = Bytes::from(
            serde_json::to_vec(&super::meta::discovery_document(&settings)).unwrap_or_default(),
        );
        let client_verifier = super::tls::client_verifier(&settings)?;
        let tls = super::tls::server_config(&settings, client_verifier.clone())?;
        Ok(Snapshot {
            settings: Arc::new(settings),
            token_url,
            discovery,
            tls,
            client_verifier,
        })
    }
}

/// Why a reload was refused (the running configuration stays as it was).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Build(#[from] super::ServerError),
    #[error("{0} changed; that needs a restart, not a reload")]
    NeedsRestart(&'static str),
}

pub struct Authority {
    config: ArcSwap<Snapshot>,
    /// The file the configuration was loaded from, re-read on reload.
    pub config_path: Option<std::path::PathBuf>,
    pub signing_key: SigningKey,
    pub store: Arc<dyn SenderStore>,
    pub metrics: Arc<Metrics>,
    pub keys: KeyCache,
    pub clock: Clock,
    nonce: Mutex<Option<CurrentNonce>>,
    /// After an unclean shutdown, until this instant (Unix seconds) every DPoP proof must
    /// carry a nonce minted by this run (see `store` on crash safety).
    fence_until: AtomicI64,
    bypass: RwLock<Option<BypassWindow>>,
    pub jwks: Bytes,
}

impl Authority {
    /// What a handler answers when the store cannot: counted, logged, and 503
    /// `temporarily_unavailable` (fail closed: no check is ever skipped instead).
    pub fn store_failure(&self, error: StoreError) -> super::error::OAuthError {
        self.metrics.store_errors.inc();
        if let StoreError::ClaimsLost(_) = &error {
            self.raise_fence();
        }
        tracing::error!(event = events::STORE_ERROR, error = %error, "refusing the request: the store cannot answer");
        super::error::OAuthError::TemporarilyUnavailable
    }

    /// Builds the state and opens a run in the store (detecting an unclean previous end).
    pub async fn start(
        snapshot: Snapshot,
        config_path: Option<std::path::PathBuf>,
        signing_key: SigningKey,
        store: Arc<dyn SenderStore>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Authority, super::ServerError> {
        let settings = snapshot.settings.clone();
        let previous = store.begin_run().await?;
        let now = clock.now();
        let fence_until = if previous == PreviousShutdown::Unclean {
            let until = now + settings.dpop.replay_window.as_secs() as i64;
            tracing::warn!(
                event = events::STORE_FENCE,
                until,
                "previous run ended uncleanly: DPoP proofs need a fresh server nonce until the replay window has passed"
            );
            until
        } else {
            0
        };
        let jwks = Bytes::from(serde_json::to_vec(&signing_key.jwks()).unwrap_or_default());
        let authority = Authority {
            bypass: RwLock::new(settings.dpop.bypass.clone()),
            config: ArcSwap::from_pointee(snapshot),
            config_path,
            signing_key,
            store,
            metrics,
            keys: KeyCache::default(),
            clock,
            nonce: Mutex::new(None),
            fence_until: AtomicI64::new(fence_until),
            jwks,
        };
        if let Some(window) = authority.active_bypass() {
            authority.metrics.bypass_active.set(1);
            tracing::warn!(event = events::BYPASS_STARTED, until = window.until, reason = %window.reason, source = "config");
        }
        Ok(authority)
    }

    /// The configuration snapshot requests should use now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.config.load_full()
    }

    /// Re-reads the configuration file and swaps it in, or changes nothing and says why.
    pub fn reload(&self) -> Result<Arc<Settings>, ReloadError> {
        let path = self
            .config_path
            .as_ref()
            .ok_or(ReloadError::NeedsRestart("the configuration source"))?;
        let settings = Settings::load(path)?;
        let running = self.current().settings.clone();
        if settings.listen != running.listen {
            return Err(ReloadError::NeedsRestart("listen"));
        }
        if settings.data_dir != running.data_dir {
            return Err(ReloadError::NeedsRestart("dataDir"));
        }
        if settings.storage != running.storage
            || settings.storage_settings != running.storage_settings
        {
            return Err(ReloadError::NeedsRestart("storage"));
        }
        if settings.metrics_listen != running.metrics_listen {
            return Err(ReloadError::NeedsRestart("metrics.listen"));
        }
        let snapshot = Snapshot::build(settings)?;
        let settings = snapshot.settings.clone();
        if settings.dpop.bypass != running.dpop.bypass {
            self.set_bypass(settings.dpop.bypass.clone(), "config");
        }
        self.config.store(Arc::new(snapshot));
        tracing::info!(
            event = events::CONFIG_RELOADED,
            clients = settings.clients.len(),
            tenants = settings.tenants.len(),
        );
        Ok(settings)
    }

    /// Whether the restart fence is up (nonces required for every proof).
    pub fn fence_active(&self) -> bool {
        self.clock.now() < self.fence_until.load(Ordering::Acquire)
    }

    /// Raises the restart fence for one replay window from now: the store may have lost
    /// claims, so every proof needs a nonce minted from now on. The nonce handed out so
    /// far is dropped (the store has forgotten it, or it predates the loss).
    pub fn raise_fence(&self) {
        let now = self.clock.now();
        let until = now + self.current().settings.dpop.replay_window.as_secs() as i64;
        self.fence_until.fetch_max(until, Ordering::AcqRel);
        if let Ok(mut nonce) = self.nonce.lock() {
            *nonce = None;
        }
        tracing::warn!(
            event = events::STORE_FENCE,
            until,
            "the store may have lost replay claims: DPoP proofs need a fresh server nonce until the replay window has passed"
        );
    }

    /// The nonce to hand out now, minting and storing a new one when due.
    pub async fn current_nonce(&self) -> Result<String, StoreError> {
        let now = self.clock.now();
        let ttl = self.current().settings.dpop.nonce_ttl.as_secs() as i64;
        if let Ok(guard) = self.nonce.lock() {
            if let Some(current) = guard.as_ref() {
                if now - current.minted_at < ttl / 2 {
                    return Ok(current.value.clone());
                }
            }
        }
        let value = crate::secret::generate();
        self.store.put_nonce(&value, now + ttl).await?;
        if let Ok(mut guard) = self.nonce.lock() {
            *guard = Some(CurrentNonce {
                value: value.clone(),
                minted_at: now,
            });
        }
        Ok(value)
    }

    /// The active bypass window, if one is on and not expired.
    pub fn active_bypass(&self) -> Option<BypassWindow> {
        let now = self.clock.now();
        self.bypass
            .read()
            .ok()
            .and_then(|b| b.clone())
            .filter(|w| w.until > now)
    }

    /// Turns a bypass on (until `until`) or off (`None`), with the audit event.
    pub fn set_bypass(&self, window: Option<BypassWindow>, source: &str) {
        if let Ok(mut guard) = self.bypass.write() {
            match &window {
                Some(w) => {
                    tracing::warn!(event = events::BYPASS_STARTED, until = w.until, reason = %w.reason, source);
                    self.metrics.bypass_active.set(1);
                }
                None if guard.is_some() => {
                    tracing::warn!(event = events::BYPASS_ENDED, cause = "ended early", source);
                    self.metrics.bypass_active.set(0);
                }
                None => {}
            }
            *guard = window;
        }
    }

    /// Ends an expired bypass (called by the housekeeping task), with the audit event.
    pub fn expire_bypass(&self) {
        let now = self.clock.now();
        if let Ok(mut guard) = self.bypass.write() {
            if guard.as_ref().is_some_and(|w| w.until <= now) {
                *guard = None;
                self.metrics.bypass_active.set(0);
                tracing::warn!(event = events::BYPASS_ENDED, cause = "expired");
            }
        }
    }
}
