//! The `SenderStore`: everything the authority must remember between requests: server
//! nonces, DPoP `jti` replay claims, and issued-token records with their revocation flag.
//!
//! The trait is shaped for a networked backend: async, every call fallible, and the replay
//! check is one atomic "claim this jti if absent" operation, never read-then-write.
//! Everything stored has an expiry and is swept, so the size is bounded by rate × TTL and
//! never by an eviction count (an evicting replay cache would be a replay hole).
//!
//! Crash safety (see docs/crash-safety.md): a token record and a revocation are durable
//! before the call that writes them returns (the sled backend group-commits them: one
//! flush for every write that arrived meanwhile), so an answered token or revocation
//! survives a crash. jti claims are written through the backend's log and reach the disk
//! with the next commit or flush; a restart after an unclean shutdown, and any later
//! moment at which a backend finds it may have lost claims ([`StoreError::ClaimsLost`]),
//! raise a *fence*: every DPoP request must then carry a nonce minted after it, until the
//! replay window has passed. A proof accepted before a loss can therefore never be
//! accepted again.
//!
//! Whether the store can answer, why not and since when is [`SenderStore::health`]
//! (`health.rs`): what `/ready`, the metrics and the housekeeping task read.
//!
//! Two backends: `sled_store` (embedded, one node) and `redis_store` (shared by the nodes
//! of a multi-node site; its module doc says how it notices that Redis lost claims).
//! [`open_store`] picks the one the configuration names.

pub mod claims;
pub mod health;
pub mod journal;
pub mod redis_store;
pub mod sled_store;
pub mod sweep_queue;
pub mod token_batches;

pub use health::{StoreHealth, StoreState};

use crate::config::{Settings, StorageKind};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Why the store could not answer. Callers fail closed: no token without a replay check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("the store holds a record it cannot read: {0}")]
    Corrupt(String),
    /// The backend may have lost jti claims it had acknowledged (a Redis restart or
    /// failover that dropped writes, a `FLUSHALL`, a sled database reopened after an I/O
    /// error). Before returning this, the backend has made every nonce minted before the
    /// loss invalid; the caller raises the restart fence (every DPoP proof then needs a
    /// nonce minted after it, for one replay window) and answers `use_dpop_nonce`.
    /// A backend reports one loss once per node; later calls proceed normally.
    #[error("the store may have lost replay claims: {0}")]
    ClaimsLost(String),
}

/// The outcome of claiming a jti.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use: the request may proceed.
    Fresh,
    /// Seen before within the replay window.
    Replayed,
}

/// What the authority remembers about an issued access token (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub client_id: String,
    pub tenant: String,
    pub scope: String,
    pub audience: Vec<String>,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// `DPoP` or `Bearer`.
    pub token_type: String,
    /// `cnf.jkt`: the DPoP key the token is bound to.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub cnf_jkt: Option<String>,
    /// `cnf.x5t#S256`: the client certificate the token is bound to (`senderCertificate`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sender_certificate: Option<String>,
    #[serde(default)]
    pub revoked: bool,
    /// The user a user-grant token was issued for (its `sub`).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub subject: Option<String>,
    /// The refresh-token family of a user-grant token (`crate::grants::refresh`): when the
    /// family is revoked, so is the token.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub family: Option<String>,
}

/// The key a token record is filed under: SHA-256 of the token, so the store never holds
/// a usable token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId(pub [u8; 32]);

impl TokenId {
    pub fn of(token: &str) -> TokenId {
        TokenId(Sha256::digest(token.as_bytes()).into())
    }
}

/// How many live entries of each kind the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSize {
    pub nonces: u64,
    pub jti_claims: u64,
    pub tokens: u64,
}

/// What the store found about the previous run when the authority started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviousShutdown {
    Clean,
    /// The previous process died without closing the store (crash, `kill -9`, power loss).
    Unclean,
    FirstStart,
}

#[async_trait]
pub trait SenderStore: Send + Sync {
    /// Marks the store as in use by a running authority and reports how the previous run
    /// ended. After an unclean end, nonces minted before are forgotten.
    async fn begin_run(&self) -> Result<PreviousShutdown, StoreError>;
    /// Flushes everything and records a clean shutdown.
    async fn end_run(&self) -> Result<(), StoreError>;

    /// Remembers a server nonce until `expires_at` (Unix seconds).
    async fn put_nonce(&self, nonce: &str, expires_at: i64) -> Result<(), StoreError>;
    /// Whether `nonce` was minted by this site and has not expired.
    async fn nonce_is_valid(&self, nonce: &str, now: i64) -> Result<bool, StoreError>;

    /// Atomically claims `jti` for proof key `jkt` until `expires_at`.
    async fn claim_jti(
        &self,
        jkt: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Claim, StoreError>;

    /// Files the record of a newly issued token; it is durable (survives a crash of the
    /// process or the host) when this returns `Ok`.
    async fn put_token(&self, id: TokenId, record: &TokenRecord) -> Result<(), StoreError>;
    /// The record of a token, if it is known and not yet swept.
    async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;
    /// Marks a token revoked, durably, before returning. Returns the record as it was.
    async fn revoke_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError>;

    /// Every live (not expired at `now`) token record with its id: a full scan, for the
    /// operator's incident tools (revoke by `jti`, revoke a client's tokens), never for a
    /// request. The default, for test doubles, says the store cannot list.
    async fn live_tokens(&self, now: i64) -> Result<Vec<(TokenId, TokenRecord)>, StoreError> {
        let _ = now;
        Err(StoreError::Unavailable(
            "this store cannot list its token records".into(),
        ))
    }

    /// How many possible losses of jti claims this store has found since it was opened.
    /// A backend raises it *before* it serves any claim against its new state (a new
    /// Redis epoch, a reopened database), so a request that reads it before its claim and
    /// finds it changed after knows its claim may have raced the loss (the gate refuses
    /// such a claim; see `core::gate`). The default, for test doubles, never loses.
    fn losses(&self) -> u64 {
        0
    }

    /// Removes every expired entry; returns how many were removed.
    async fn sweep(&self, now: i64) -> Result<u64, StoreError>;
    /// Live entry counts (maintained incrementally; exact after a sweep).
    fn size(&self) -> StoreSize;
    /// A cheap write-and-read probe for `/ready`.
    async fn probe(&self) -> Result<(), StoreError>;
    /// Whether the store can answer; if not, why and since when (no I/O: a snapshot of
    /// what the backend's calls found). Both backends track it; the default (always
    /// available) is for test doubles.
    fn health(&self) -> StoreHealth {
        StoreHealth::available()
    }
    /// How long each durable commit took (`authority_store_commit_seconds`), shared with
    /// the metrics registry; `None` for a backend that makes no commits of its own (Redis:
    /// its persistence settings decide what is durable).
    fn commit_seconds(&self) -> Option<prometheus_client::metrics::histogram::Histogram> {
        None
    }
    /// The signing key set fingerprint every node of the site must have (multi-node
    /// sites, docs/multi-node.md): recorded by the first node that asks (`publish` false)
    /// or replaced by a rotation (`publish` true); returns the recorded one. A store no
    /// other node shares (sled) records nothing and returns `None`.
    async fn key_set(&self, mine: &str, publish: bool) -> Result<Option<String>, StoreError> {
        let _ = (mine, publish);
        Ok(None)
    }
}

/// Locks `mutex`, taking it over from a thread that panicked while holding it (every
/// structure the store keeps under a lock stays valid between its single-step updates).
fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The expiry a stored value starts with (8 bytes, big-endian: nonces, claims, token
/// records and batches of records alike), so the sweeper can judge a value unread.
pub(crate) fn expiry_of(value: &[u8]) -> Option<i64> {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
}

/// The key a jti claim is filed under: SHA-256 over the proof key and the jti, so one
/// client's jti values cannot collide with (or block) another's, and keys stay 32 bytes
/// whatever the client sends.
pub fn jti_key(jkt: &str, jti: &str) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(jkt.as_bytes());
    hash.update([0u8]);
    hash.update(jti.as_bytes());
    hash.finalize().into()
}

/// Opens the store `storage.kind` names: sled under `<dataDir>/store`, or the site's Redis
/// (connected and probed before this returns).
pub async fn open_store(settings: &Settings) -> Result<Arc<dyn SenderStore>, StoreError> {
    match settings.storage {
        StorageKind::Sled => Ok(Arc::new(sled_store::SledStore::open(
            &settings.data_dir.join("store"),
        )?)),
        StorageKind::Redis => {
            let redis = settings.storage_settings.redis.as_ref().ok_or_else(|| {
                StoreError::Unavailable("storage.kind is redis but no Redis is configured".into())
            })?;
            Ok(Arc::new(
                redis_store::RedisStore::open(redis, settings.dpop.replay_window).await?,
            ))
        }
    }
}

/// Opens a store for a process other than the authority (the guard): sled under
/// `<data_dir>/store`, or Redis with the settings given (their own key namespace).
pub async fn open_store_for(
    storage: &crate::config::StorageSettings,
    data_dir: &std::path::Path,
    replay_window: std::time::Duration,
) -> Result<Arc<dyn SenderStore>, StoreError> {
    match &storage.redis {
        None => Ok(Arc::new(sled_store::SledStore::open(
            &data_dir.join("store"),
        )?)),
        Some(redis) => Ok(Arc::new(
            redis_store::RedisStore::open(redis, replay_window).await?,
        )),
    }
}
