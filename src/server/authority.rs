//! The authority's shared state as the server holds it: the current configuration snapshot
//! (swapped atomically on reload) and the [`Core`] that makes every decision (gate, signing
//! key, bypass, metrics, clock). Handlers borrow it.

use crate::clock::Clock;
use crate::config::Settings;
use crate::core::Core;
use crate::dpop::EndpointUrl;
use crate::keyset::KeyRing;
use crate::store::SenderStore;
use crate::telemetry::events;
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::Arc;

/// Everything derived from one configuration file. A reload builds a new snapshot and
/// swaps it in; requests in flight finish on the snapshot they started with.
pub struct Snapshot {
    pub settings: Arc<Settings>,
    /// The token endpoint, normalised for comparing against DPoP `htu`.
    pub token_url: EndpointUrl,
    /// The `/fresh-auth` endpoint, likewise.
    pub fresh_auth_url: EndpointUrl,
    pub discovery: Bytes,
    pub tls: Arc<rustls::ServerConfig>,
    /// Judges client-certificate chains (client CA + CRLs), when client CAs are configured.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
}

impl Snapshot {
    pub fn build(settings: Settings) -> Result<Snapshot, super::ServerError> {
        let token_url =
            EndpointUrl::parse(&settings.token_endpoint).ok_or(super::ServerError::Issuer)?;
        let fresh_auth_url = EndpointUrl::parse(&format!("{}/fresh-auth", settings.issuer))
            .ok_or(super::ServerError::Issuer)?;
        let discovery = Bytes::from(
            serde_json::to_vec(&super::meta::discovery_document(&settings)).unwrap_or_default(),
        );
        let client_verifier = crate::tls::client_verifier(&settings)?;
        let tls = crate::tls::server_config(&settings, client_verifier.clone())?;
        Ok(Snapshot {
            settings: Arc::new(settings),
            token_url,
            fresh_auth_url,
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
    pub core: Core,
    pub jwks: Bytes,
    /// Sign-ins, device codes and page sessions of the user grants.
    pub people: PeopleState,
}

/// The user grants' in-memory state (`crate::people`, `crate::grants`).
pub struct PeopleState {
    pub logins: crate::people::Logins,
    pub devices: crate::grants::device::DeviceCodes,
    pub sessions: crate::grants::sessions::Sessions,
    pub codes: crate::grants::codes::Codes,
}

impl Authority {
    /// Builds the state and opens a run in the store (detecting an unclean previous end).
    pub async fn start(
        snapshot: Snapshot,
        config_path: Option<std::path::PathBuf>,
        signing_key: KeyRing,
        store: Arc<dyn SenderStore>,
        metrics: Arc<Metrics>,
        clock: Clock,
    ) -> Result<Authority, super::ServerError> {
        let jwks = Bytes::from(serde_json::to_vec(&signing_key.jwks()).unwrap_or_default());
        let people = PeopleState {
            logins: crate::people::Logins::new(metrics.logins.clone()),
            devices: Default::default(),
            sessions: Default::default(),
            codes: Default::default(),
        };
        let core = Core::start(&snapshot.settings, signing_key, store, metrics, clock).await?;
        let authority = Authority {
            config: ArcSwap::from_pointee(snapshot),
            config_path,
            core,
            jwks,
            people,
        };
        authority.refresh_bypass_gauge();
        authority.refresh_expiry_gauges();
        Ok(authority)
    }

    /// The configuration snapshot requests should use now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.config.load_full()
    }

    pub fn store(&self) -> &Arc<dyn SenderStore> {
        self.core.store()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.core.metrics
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
        self.core.bypass.configure(
            settings.dpop.bypass_allowed,
            settings.dpop.bypass.clone(),
            self.core.clock.now(),
        );
        self.config.store(Arc::new(snapshot));
        self.refresh_bypass_gauge();
        self.refresh_expiry_gauges();
        tracing::info!(
            event = events::CONFIG_RELOADED,
            clients = settings.clients.len(),
            tenants = settings.tenants.len(),
        );
        Ok(settings)
    }

    /// Whether the restart fence is up (nonces required for every proof).
    pub fn fence_active(&self) -> bool {
        self.core.fence_active()
    }

    /// The active bypass window, if one is on and not expired.
    pub fn active_bypass(&self) -> Option<crate::config::BypassWindow> {
        self.core.bypass.active(self.core.clock.now())
    }

    /// Sets the `…_timestamp_seconds` gauges (certificate, CRL, bundle) from the files the
    /// running configuration names, and the signing key's from the key set in use.
    pub fn refresh_expiry_gauges(&self) {
        crate::monitoring::refresh_expiry(
            &self.core.metrics,
            &self.current().settings,
            self.config_path.as_deref(),
        );
        self.refresh_key_gauges();
    }

    /// The signing key's gauges (its age, the schedule's end) from the key set in use.
    pub fn refresh_key_gauges(&self) {
        let ring = &self.core.signing_key;
        let metrics = &self.core.metrics;
        metrics.signing_key_created.set(ring.current_since());
        metrics.signing_key_schedule_end.set(ring.schedule_end());
    }

    /// Every second (housekeeping): lets a scheduled key activate, and a previous key whose
    /// tokens have all expired leave `/jwks`, when no token request did it first; keeps
    /// the key gauges right either way.
    pub fn follow_key_schedule(&self) {
        self.core.signing_key.refresh(self.core.clock.now());
        self.refresh_key_gauges();
    }

    /// The longest a token signed now may stay valid: how long a key must stay published
    /// after it stopped signing.
    fn key_keep_for(&self) -> i64 {
        let settings = self.current().settings.clone();
        settings.token_lifetime.as_secs() as i64 + settings.dpop.clock_skew.as_secs() as i64
    }

    /// Plans signing keys ahead (see [`crate::keyset::KeyRing::schedule`]), or ends the
    /// schedule (`every` None). Audited (`authority.keys.scheduled` /
    /// `authority.keys.unscheduled`); the new fingerprint is published to the site.
    pub fn schedule_keys(
        &self,
        plan: Option<(i64, usize)>,
        operator: &crate::telemetry::audit::Operator,
    ) -> Result<crate::keyset::SetFile, crate::keyset::KeySetError> {
        let now = self.core.clock.now();
        let outcome = match plan {
            Some((every, ahead)) => {
                self.core
                    .signing_key
                    .schedule(now, every, ahead, self.key_keep_for())
            }
            None => self.core.signing_key.unschedule(now),
        };
        audit_schedule(&outcome, plan, operator, "socket");
        self.refresh_key_gauges();
        if outcome.is_ok() {
            self.publish_key_set(self.core.signing_key.fingerprint());
        }
        outcome
    }

    /// Rotates the signing keys at once (next → current → previous, a new next), keeping
    /// the old current key for the longest a token it signed can live. Audited
    /// (`authority.keys.rotated`).
    pub fn rotate_keys(
        &self,
        operator: &crate::telemetry::audit::Operator,
    ) -> Result<crate::keyset::SetFile, crate::keyset::KeySetError> {
        let keep_for = self.key_keep_for();
        let now = self.core.clock.now();
        let outcome = self.core.signing_key.rotate(now, keep_for);
        match &outcome {
            Ok(set) => tracing::warn!(
                event = "authority.keys.rotated",
                current = %set.current.kid,
                next = %set.next.kid,
                previous = %set.previous.last().map(|p| p.kid.as_str()).unwrap_or(""),
                retire_after = set.previous.last().and_then(|p| p.retire_after).unwrap_or(0),
                fingerprint = %set.fingerprint(),
                operator = %operator.label(),
                operator_uid = operator.uid,
            ),
            Err(e) => {
                tracing::warn!(event = "authority.keys.refused", action = "rotate", error = %e, operator = %operator.label(), operator_uid = operator.uid)
            }
        }
        self.refresh_expiry_gauges();
        if outcome.is_ok() {
            self.publish_key_set(self.core.signing_key.fingerprint());
        }
        outcome
    }

    /// Records a new key set as the site's in a shared store (multi-node sites), in the
    /// background: the other nodes report not ready until they hold it.
    fn publish_key_set(&self, fingerprint: String) {
        let store = self.core.store().clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(e) = store.key_set(&fingerprint, true).await {
                    tracing::warn!(event = "authority.keys.refused", action = "publish", error = %e);
                }
            });
        }
    }

    /// Removes a previous signing key (see [`crate::keyset::KeyRing::retire`]). Audited
    /// (`authority.keys.retired`).
    pub fn retire_key(
        &self,
        kid: &str,
        force: bool,
        operator: &crate::telemetry::audit::Operator,
    ) -> Result<crate::keyset::SetFile, crate::keyset::KeySetError> {
        let outcome = self
            .core
            .signing_key
            .retire(kid, self.core.clock.now(), force);
        if outcome.is_ok() {
            self.publish_key_set(self.core.signing_key.fingerprint());
        }
        self.refresh_key_gauges();
        match &outcome {
            Ok(set) => {
                tracing::warn!(event = "authority.keys.retired", kid = %kid, forced = force, fingerprint = %set.fingerprint(), operator = %operator.label(), operator_uid = operator.uid)
            }
            Err(e) => {
                tracing::warn!(event = "authority.keys.refused", action = "retire", kid = %kid, error = %e, operator = %operator.label(), operator_uid = operator.uid)
            }
        }
        outcome
    }

    /// Sets `authority_dpop_bypass_active` from the bypass state.
    pub fn refresh_bypass_gauge(&self) {
        self.core
            .metrics
            .bypass_active
            .set(i64::from(self.active_bypass().is_some()));
    }
}

/// The audit event of `keys schedule` (or its refusal), for the socket and the files path.
pub fn audit_schedule(
    outcome: &Result<crate::keyset::SetFile, crate::keyset::KeySetError>,
    plan: Option<(i64, usize)>,
    operator: &crate::telemetry::audit::Operator,
    via: &str,
) {
    let action = if plan.is_some() {
        "schedule"
    } else {
        "unschedule"
    };
    match outcome {
        Ok(set) => {
            let planned: Vec<String> = set
                .schedule
                .iter()
                .flat_map(|s| s.keys.iter().map(|k| format!("{}@{}", k.kid, k.activates)))
                .collect();
            tracing::warn!(
                event = if plan.is_some() { "authority.keys.scheduled" } else { "authority.keys.unscheduled" },
                every = plan.map_or(0, |p| p.0),
                ahead = plan.map_or(0, |p| p.1 as u64),
                current = %set.current.kid,
                next = %set.next.kid,
                planned = %planned.join(","),
                fingerprint = %set.fingerprint(),
                operator = %operator.label(),
                operator_uid = operator.uid,
                via,
            )
        }
        Err(e) => {
            tracing::warn!(event = "authority.keys.refused", action, error = %e, operator = %operator.label(), operator_uid = operator.uid, via)
        }
    }
}
