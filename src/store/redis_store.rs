//! The Redis backend of the [`SenderStore`], for multi-node sites: every node of a site
//! talks to the same Redis, so a nonce minted by node A is valid on node B, a proof used on
//! A is refused on B, and a token revoked on A is inactive on B. Not responsible for
//! running Redis, its persistence or its replication (see docs/multi-node.md).
//!
//! # Keys
//! Everything lives under `sealkit:<site>:` so that one ACL pattern grants exactly this
//! site's keys, and every entry carries a server-side TTL: Redis expires it by itself, so
//! [`SenderStore::sweep`] removes nothing.
//!
//! | key | value | expiry |
//! |---|---|---|
//! | `nonce:<hex SHA-256 of the nonce>` | `<expiry (Unix s)> <epoch>` | `PXAT` the nonce's expiry |
//! | `jti:<hex of store::jti_key>` | `1` | `PX` the replay window (relative, so a clock difference between a node and Redis cannot shorten it) |
//! | `token:<hex of TokenId>` | the JSON [`TokenRecord`] | `PXAT` the token's `exp`; a revocation rewrites the value with `KEEPTTL` |
//! | `meta:state` | `v1 <epoch> <fenceUntil>` | none: the site marker (below) |
//! | `meta:count:<kind>` | hash: expiry bucket → entries | none; old buckets are pruned by `sweep` |
//! | `meta:probe:<instance>` | a random value | 60 s |
//!
//! A jti is claimed with one atomic `SET key 1 NX PX window` inside a short Lua script
//! that also bumps the size counter and compares the site marker (so a claim is still one
//! round trip). A token request with a proof costs 2 round trips (claim + token record), 3
//! when the nonce is checked; see docs/multi-node.md.
//!
//! # Noticing that Redis lost claims
//! A node acknowledges a proof only after Redis acknowledged its claim, so a *node* crash
//! loses nothing: [`begin_run`](SenderStore::begin_run) does not report a node's own
//! unclean end. What can be lost is Redis's memory, and not only through a missing `fsync`:
//! a restart without persistence, a restart from an RDB snapshot or an `everysec` AOF that
//! missed the last writes, a failover to a replica that had not received them, a
//! `FLUSHALL`, or Redis 7.0 dropping every `MULTI/EXEC` of its AOF on reload when the
//! `default` user is off (redis/redis#14541: the claim script is written to the AOF as a
//! `MULTI/EXEC`, while the marker, a plain `SET`, survives). None of these can be seen in
//! the keys alone, so the backend watches two things:
//!
//! - **the Redis process**, through its script cache. Since Redis 7.0 a script loaded with
//!   `SCRIPT LOAD` is neither persisted (AOF or RDB) nor replicated, so it lives exactly as
//!   long as the process that loaded it. Every claim runs as `EVALSHA`; `NOSCRIPT` then
//!   means Redis is not the process sealkit loaded its scripts into: it restarted, failed
//!   over or was told `SCRIPT FLUSH`. A constant *witness* script tells that apart from a
//!   claim script merely new to this Redis (another sealkit version). This costs no round
//!   trip and no ACL right beyond `EVALSHA` and `SCRIPT LOAD`; [`RedisStore::open`]
//!   refuses a Redis older than 7.0, where scripts were persisted.
//! - **the site marker** `meta:state` and its *epoch*, compared inside the claim script on
//!   every claim (a claim is not made against another epoch) and read with every nonce.
//!   It catches `FLUSHALL` (the marker is gone) and tells every node that another node
//!   found a loss (the epoch changed).
//!
//! The node that finds a lost process first writes a new epoch (with the end of one
//! replay window in it, for nodes that start meanwhile) and only then loads the scripts
//! again, so any other node either meets `NOSCRIPT` itself or sees the new epoch; it never
//! claims against the old state. Nonces are stored with the epoch they were minted in and
//! are valid only in the current one, so a new epoch invalidates every nonce minted before
//! the loss, on every node, at once. Each node then reports [`StoreError::ClaimsLost`]
//! once (from `claim_jti`, `nonce_is_valid`, or the next of them after `sweep` noticed it
//! within 5 s), and the authority raises its restart fence for one replay window. This is
//! conservative: a restart with `appendfsync always` and a working AOF loses nothing and is
//! fenced all the same, because sealkit cannot tell it from one that lost claims.
//!
//! A Redis that answers with an empty marker and no witness at `begin_run` (a new site, or
//! a site whose Redis restarted while no node ran) gives [`PreviousShutdown::Unclean`], as
//! does a marker whose fence has not ended.

use super::health::{Cause, HealthTracker, LossReport, StoreHealth};
use super::{
    jti_key, Claim, PreviousShutdown, SenderStore, StoreError, StoreSize, TokenId, TokenRecord,
};
use crate::config::RedisSettings;
use crate::telemetry::events;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError, RedisResult};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Width of the expiry buckets the size counters are kept in, per kind (seconds). A count
/// is at most one bucket late in forgetting expired entries.
const JTI_BUCKET: i64 = 10;
const NONCE_BUCKET: i64 = 10;
const TOKEN_BUCKET: i64 = 60;
/// How long opening the store may take (the first connection, with its retries). A TLS
/// connection to a busy Redis host (a node starting while its neighbours are loaded) has
/// taken over 5 s in tests; a start that waits 15 s is still one a supervisor sees.
const OPEN_TIMEOUT: Duration = Duration::from_secs(15);
/// The longest pause between two reconnection attempts once Redis went away.
const MAX_RECONNECT_DELAY_MS: u64 = 1_000;
const MARKER_VERSION: &str = "v1";
/// The oldest Redis whose script cache dies with its process (7.0.0 as `REDIS_VERSION_NUM`).
const MIN_REDIS_VERSION: i64 = 0x07_00_00;

/// Present in a Redis process's script cache once some sealkit node has seen that process
/// (and, if it was new, written a new epoch first). Constant across sealkit versions.
const WITNESS_SCRIPT: &str =
    "-- sealkit: this Redis process is known to the site (witness v1)\nreturn 1";

/// Claims a jti unless the site marker differs from the one the node knows.
/// KEYS: claim, counter hash, marker. ARGV: TTL (ms), counter bucket, the marker the node
/// knows. Returns {1, marker} fresh, {0, marker} replayed, {2, marker} marker changed (no
/// claim made).
const CLAIM_SCRIPT: &str = r"-- sealkit jti claim v2
local marker = redis.call('GET', KEYS[3]) or ''
if marker ~= ARGV[3] then
  return {2, marker}
end
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  return {1, marker}
end
return {0, marker}
";

pub struct RedisStore {
    conn: ConnectionManager,
    keys: Keys,
    timeout: Duration,
    /// The replay window of the configuration (seconds): how long a new epoch's fence
    /// lasts for nodes that start during it.
    fence_window: i64,
    claim_sha: String,
    witness_sha: String,
    /// The site marker this node works in (`None` before `begin_run`).
    known: Mutex<Option<Marker>>,
    loss: LossReport,
    /// Losses found at run time ([`SenderStore::losses`]): raised before a new epoch is
    /// written or adopted.
    losses: AtomicU64,
    health: HealthTracker,
    nonce_count: AtomicU64,
    jti_count: AtomicU64,
    token_count: AtomicU64,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The connection holds the password: never print it.
        f.debug_struct("RedisStore")
            .field("prefix", &self.keys.prefix)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The parsed value of `meta:state`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Marker {
    epoch: String,
    fence_until: i64,
}

impl Marker {
    fn parse(text: &str) -> Option<Marker> {
        let mut parts = text.split(' ');
        if parts.next()? != MARKER_VERSION {
            return None;
        }
        let epoch = parts.next()?.to_string();
        let fence_until = parts.next()?.parse().ok()?;
        Some(Marker { epoch, fence_until })
    }
    fn encode(&self) -> String {
        format!("{MARKER_VERSION} {} {}", self.epoch, self.fence_until)
    }
}

/// Key names, all under `sealkit:<site>:`.
struct Keys {
    prefix: String,
    instance: String,
}

impl Keys {
    fn nonce(&self, nonce: &str) -> String {
        format!(
            "{}nonce:{}",
            self.prefix,
            hex(&Sha256::digest(nonce.as_bytes()))
        )
    }
    fn jti(&self, jkt: &str, jti: &str) -> String {
        format!("{}jti:{}", self.prefix, hex(&jti_key(jkt, jti)))
    }
    fn token(&self, id: TokenId) -> String {
        format!("{}token:{}", self.prefix, hex(&id.0))
    }
    fn state(&self) -> String {
        format!("{}meta:state", self.prefix)
    }
    fn count(&self, kind: Kind) -> String {
        format!("{}meta:count:{}", self.prefix, kind.name())
    }
    fn probe(&self) -> String {
        format!("{}meta:probe:{}", self.prefix, self.instance)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Nonce,
    Jti,
    Token,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Nonce => "nonce",
            Kind::Jti => "jti",
            Kind::Token => "token",
        }
    }
    /// The counter field of an entry expiring at `expires_at`: the end of its bucket.
    fn bucket(self, expires_at: i64) -> i64 {
        let width = match self {
            Kind::Nonce => NONCE_BUCKET,
            Kind::Jti => JTI_BUCKET,
            Kind::Token => TOKEN_BUCKET,
        };
        expires_at.div_euclid(width) * width + width
    }
}

/// The 32 bytes a 64-digit lowercase hex string (as [`hex`] writes) stands for.
fn unhex32(text: &str) -> Option<[u8; 32]> {
    let digits = text.as_bytes();
    if digits.len() != 64 {
        return None;
    }
    let value = |d: u8| char::from(d).to_digit(16).map(|v| v as u8);
    let mut out = [0u8; 32];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn store_error(what: &str, e: RedisError) -> StoreError {
    match e.kind() {
        ErrorKind::TypeError => StoreError::Corrupt(format!("Redis {what}: {e}")),
        _ => StoreError::Unavailable(format!("Redis {what}: {e}")),
    }
}

/// Why opening failed, in the operator's terms.
fn open_error(settings: &RedisSettings, message: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("cannot open Redis at {}: {message}", settings.url))
}

/// What a call to Redis came to, before it is judged.
enum CallError {
    Redis(RedisError),
    Timeout,
}

/// What a claim script invocation answered.
enum ClaimReply {
    Fresh,
    Replayed,
    /// The marker differs from the node's (another node found a loss, or a flush).
    MarkerChanged(String),
}

impl RedisStore {
    /// Connects to the site's Redis (the password read from its file now), checks that it
    /// answers and that it is Redis 7.0 or later (see the module doc).
    /// `replay_window` is how long the fence of a new epoch lasts.
    pub async fn open(
        settings: &RedisSettings,
        replay_window: Duration,
    ) -> Result<RedisStore, StoreError> {
        let mut info = redis::IntoConnectionInfo::into_connection_info(settings.url.as_str())
            .map_err(|e| open_error(settings, e))?;
        info.redis.username = settings.username.clone();
        if let Some(path) = &settings.password_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                open_error(settings, format!("cannot read {}: {e}", path.display()))
            })?;
            let password = text.trim_end_matches(['\r', '\n']).to_string();
            if password.is_empty() {
                return Err(open_error(settings, format!("{} is empty", path.display())));
            }
            info.redis.password = Some(password);
        }
        let client = match (&settings.ca_file, &info.addr) {
            (Some(ca_file), redis::ConnectionAddr::TcpTls { .. }) => {
                let root_cert = std::fs::read(ca_file).map_err(|e| {
                    open_error(settings, format!("cannot read {}: {e}", ca_file.display()))
                })?;
                // rustls's process-wide provider: ring, as everywhere in sealkit. Installing
                // it explicitly keeps the redis crate's `ClientConfig::builder()` from
                // panicking should another dependency ever enable a second provider.
                let _ = rustls::crypto::ring::default_provider().install_default();
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(root_cert),
                    },
                )
            }
            _ => redis::Client::open(info),
        }
        .map_err(|e| open_error(settings, e))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(settings.timeout)
            .set_response_timeout(settings.timeout)
            .set_max_delay(MAX_RECONNECT_DELAY_MS);
        let conn = tokio::time::timeout(
            OPEN_TIMEOUT,
            ConnectionManager::new_with_config(client, config),
        )
        .await
        .map_err(|_| open_error(settings, format!("no connection within {OPEN_TIMEOUT:?}")))?
        .map_err(|e| open_error(settings, e))?;
        let store = RedisStore {
            conn,
            keys: Keys {
                prefix: format!("sealkit:{}:", settings.site),
                instance: crate::secret::generate(),
            },
            timeout: settings.timeout,
            fence_window: i64::try_from(replay_window.as_secs()).unwrap_or(i64::MAX),
            claim_sha: redis::Script::new(CLAIM_SCRIPT).get_hash().to_string(),
            witness_sha: redis::Script::new(WITNESS_SCRIPT).get_hash().to_string(),
            known: Mutex::new(None),
            loss: LossReport::default(),
            losses: AtomicU64::new(0),
            health: HealthTracker::default(),
            nonce_count: AtomicU64::new(0),
            jti_count: AtomicU64::new(0),
            token_count: AtomicU64::new(0),
        };
        store.probe().await?;
        let mut conn = store.conn.clone();
        let version: Option<i64> = store
            .call("version check", async move {
                redis::cmd("EVAL")
                    .arg("return redis.REDIS_VERSION_NUM")
                    .arg(0)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        if version.unwrap_or(0) < MIN_REDIS_VERSION {
            return Err(open_error(
                settings,
                "Redis 7.0 or later is needed (an older Redis keeps scripts across restarts, so sealkit could not notice that it lost replay claims)",
            ));
        }
        Ok(store)
    }

    /// Runs one exchange with Redis under the configured deadline, without judging it.
    async fn call_raw<T>(
        &self,
        exchange: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(value)) => {
                self.health.ok();
                Ok(value)
            }
            Ok(Err(e)) => Err(CallError::Redis(e)),
            Err(_) => Err(CallError::Timeout),
        }
    }

    /// Turns a failed call into the caller's error, and records the outage.
    fn judge(&self, what: &str, error: CallError) -> StoreError {
        let (cause, error) = match error {
            CallError::Redis(e) => {
                let unreachable = e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout();
                let cause = if unreachable {
                    Cause::Unreachable
                } else {
                    Cause::Other
                };
                (cause, store_error(what, e))
            }
            CallError::Timeout => (
                Cause::Unreachable,
                StoreError::Unavailable(format!(
                    "Redis {what}: no answer within {:?}",
                    self.timeout
                )),
            ),
        };
        self.health.failed(cause, error.to_string());
        error
    }

    /// Runs one exchange with Redis under the configured deadline.
    async fn call<T>(
        &self,
        what: &str,
        exchange: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        self.call_raw(exchange)
            .await
            .map_err(|e| self.judge(what, e))
    }

    async fn read_marker(&self) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.state();
        self.call("marker read", async move {
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut conn)
                .await
        })
        .await
    }

    /// `SCRIPT LOAD`s `text` (the witness or the claim script).
    async fn load_script(&self, what: &str, text: &'static str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.call(what, async move {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(text)
                .query_async::<String>(&mut conn)
                .await
        })
        .await
        .map(drop)
    }

    /// Whether this Redis process has been seen by a sealkit node (its witness script is
    /// in the script cache).
    async fn witness_present(&self) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let sha = self.witness_sha.clone();
        match self
            .call_raw(async move {
                redis::cmd("EVALSHA")
                    .arg(sha)
                    .arg(0)
                    .query_async::<i64>(&mut conn)
                    .await
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(CallError::Redis(e)) if e.kind() == ErrorKind::NoScriptError => Ok(false),
            Err(e) => Err(self.judge("witness check", e)),
        }
    }

    /// Writes a site marker with a new epoch and one replay window of fence in it.
    /// `replace`: overwrite whatever is there (this node found a lost Redis process);
    /// otherwise only create it when absent (a flush, or a new site: another node may
    /// have just done it). Returns the marker in force.
    async fn new_epoch(&self, replace: bool) -> Result<Marker, StoreError> {
        let candidate = Marker {
            epoch: crate::secret::generate(),
            fence_until: crate::clock::unix_now().saturating_add(self.fence_window),
        };
        let mut conn = self.conn.clone();
        let key = self.keys.state();
        let value = candidate.encode();
        let written = self
            .call("marker write", async move {
                let mut cmd = redis::cmd("SET");
                cmd.arg(key).arg(value);
                if !replace {
                    cmd.arg("NX");
                }
                cmd.query_async::<Option<String>>(&mut conn).await
            })
            .await?;
        if written.is_some() {
            return Ok(candidate);
        }
        match self.read_marker().await?.as_deref().map(Marker::parse) {
            Some(Some(marker)) => Ok(marker),
            _ => Err(StoreError::Corrupt(
                "the site marker meta:state is unreadable".into(),
            )),
        }
    }

    fn known(&self) -> Option<Marker> {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn adopt(&self, marker: Marker) {
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = Some(marker);
    }

    /// Records a loss found at run time (counted and logged); the caller reports it once.
    fn found_loss(&self, reason: &str) {
        self.health.claims_lost();
        tracing::error!(
            event = events::STORE_CLAIMS_LOST,
            reason,
            "Redis may have lost replay claims: the restart fence goes up (DPoP proofs need a nonce minted from now on, for one replay window)"
        );
    }

    /// A restart found while serving: counted as a loss ([`SenderStore::losses`]) before
    /// the new epoch, then recorded; the caller reports it once.
    async fn restart_found_at_run_time(&self) -> Result<(), StoreError> {
        self.losses.fetch_add(1, Ordering::AcqRel);
        self.restart_found().await?;
        self.found_loss(RESTARTED);
        Ok(())
    }

    /// This Redis process was never seen by sealkit: a new epoch first (so no node claims
    /// against the old state once the scripts are back), then the scripts.
    async fn restart_found(&self) -> Result<(), StoreError> {
        let marker = self.new_epoch(true).await?;
        self.load_script("witness load", WITNESS_SCRIPT).await?;
        self.load_script("claim script load", CLAIM_SCRIPT).await?;
        self.adopt(marker);
        Ok(())
    }

    /// The marker Redis holds is not the node's: adopt it, creating one after a flush.
    /// Run time only: counts a loss ([`SenderStore::losses`]) before anything changes.
    async fn marker_changed(&self, seen: Option<&str>) -> Result<(), StoreError> {
        self.losses.fetch_add(1, Ordering::AcqRel);
        let marker = match seen.filter(|m| !m.is_empty()) {
            None => self.new_epoch(false).await?,
            Some(text) => Marker::parse(text).ok_or_else(|| {
                StoreError::Corrupt("the site marker meta:state is unreadable".into())
            })?,
        };
        self.adopt(marker);
        Ok(())
    }

    /// One `EVALSHA` of the claim script.
    async fn invoke_claim(
        &self,
        jkt: &str,
        jti: &str,
        window: i64,
        bucket: i64,
        known: &str,
    ) -> Result<ClaimReply, CallError> {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(&self.claim_sha)
            .arg(3)
            .arg(self.keys.jti(jkt, jti))
            .arg(self.keys.count(Kind::Jti))
            .arg(self.keys.state())
            .arg(millis(window))
            .arg(bucket)
            .arg(known);
        let mut conn = self.conn.clone();
        let (code, marker): (i64, String) = self
            .call_raw(async move { cmd.query_async(&mut conn).await })
            .await?;
        Ok(match code {
            1 => ClaimReply::Fresh,
            0 => ClaimReply::Replayed,
            _ => ClaimReply::MarkerChanged(marker),
        })
    }

    /// Re-reads the size counters and prunes their expired buckets.
    async fn refresh_sizes(&self, now: i64) -> Result<(), StoreError> {
        let kinds = [Kind::Nonce, Kind::Jti, Kind::Token];
        let mut pipe = redis::pipe();
        for kind in kinds {
            pipe.cmd("HGETALL").arg(self.keys.count(kind));
        }
        let mut conn = self.conn.clone();
        let hashes: Vec<HashMap<i64, i64>> = self
            .call(
                "size read",
                async move { pipe.query_async(&mut conn).await },
            )
            .await?;
        let mut prune = redis::pipe();
        let mut pruning = false;
        for (kind, buckets) in kinds.iter().zip(&hashes) {
            let (live, expired): (Vec<_>, Vec<_>) =
                buckets.iter().partition(|(bucket, _)| **bucket > now);
            let total = live
                .iter()
                .map(|(_, n)| u64::try_from(**n).unwrap_or(0))
                .sum();
            match kind {
                Kind::Nonce => self.nonce_count.store(total, Ordering::Relaxed),
                Kind::Jti => self.jti_count.store(total, Ordering::Relaxed),
                Kind::Token => self.token_count.store(total, Ordering::Relaxed),
            }
            if !expired.is_empty() {
                pruning = true;
                prune.cmd("HDEL").arg(self.keys.count(*kind));
                for (bucket, _) in expired {
                    prune.arg(*bucket);
                }
                prune.ignore();
            }
        }
        if pruning {
            let mut conn = self.conn.clone();
            self.call("size prune", async move {
                prune.query_async::<()>(&mut conn).await
            })
            .await?;
        }
        Ok(())
    }
}

/// Milliseconds for a `PX`/`PXAT` argument, never zero or negative (Redis refuses those).
fn millis(seconds: i64) -> i64 {
    seconds.saturating_mul(1000).max(1)
}

/// `<expiry> <epoch>`: a nonce as stored.
fn nonce_value(expires_at: i64, epoch: &str) -> String {
    format!("{expires_at} {epoch}")
}

/// Whether a stored nonce value is live at `now` in `epoch`.
fn nonce_holds(stored: &str, epoch: &str, now: i64) -> bool {
    match stored.split_once(' ') {
        Some((exp, minted_in)) => minted_in == epoch && exp.parse::<i64>().is_ok_and(|e| e > now),
        None => false,
    }
}

const RESTARTED: &str = "Redis no longer holds sealkit's scripts: it restarted, failed over or its script cache was flushed, and may have lost acknowledged jti claims";
const MARKER_MOVED: &str = "the site marker changed: another node found that Redis may have lost jti claims, or Redis was flushed";

#[async_trait]
impl SenderStore for RedisStore {
    /// Reports [`PreviousShutdown::Unclean`] only when the *site's* replay memory may have
    /// been lost (a Redis process no node has seen, no marker, or a fence recorded in it
    /// still running); a node's own crash lost nothing (see the module doc).
    async fn begin_run(&self) -> Result<PreviousShutdown, StoreError> {
        let now = crate::clock::unix_now();
        let seen = self.witness_present().await?;
        let previous = if !seen {
            // A new site, or a Redis that restarted or failed over while no node ran: the
            // two look the same.
            tracing::warn!(
                event = events::STORE_FENCE,
                "this Redis process is new to the site (first start, restart or failover): a new epoch, and the restart fence"
            );
            self.restart_found().await?;
            PreviousShutdown::Unclean
        } else {
            match self.read_marker().await?.as_deref().map(Marker::parse) {
                Some(Some(marker)) => {
                    let fenced = marker.fence_until > now;
                    self.adopt(marker);
                    if fenced {
                        PreviousShutdown::Unclean
                    } else {
                        PreviousShutdown::Clean
                    }
                }
                Some(None) => {
                    return Err(StoreError::Corrupt(
                        "the site marker meta:state is unreadable".into(),
                    ))
                }
                None => {
                    // Flushed while the process lived on.
                    let marker = self.new_epoch(false).await?;
                    self.adopt(marker);
                    PreviousShutdown::Unclean
                }
            }
        };
        self.load_script("claim script load", CLAIM_SCRIPT).await?;
        self.refresh_sizes(now).await?;
        Ok(previous)
    }

    /// Nothing to flush: every write was acknowledged by Redis before its call returned,
    /// and how a node ends does not matter to the site (see the module doc).
    async fn end_run(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_nonce(&self, nonce: &str, expires_at: i64) -> Result<(), StoreError> {
        let epoch = self.known().map(|m| m.epoch).unwrap_or_default();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.nonce(nonce))
            .arg(nonce_value(expires_at, &epoch))
            .arg("PXAT")
            .arg(millis(expires_at))
            .ignore()
            .cmd("HINCRBY")
            .arg(self.keys.count(Kind::Nonce))
            .arg(Kind::Nonce.bucket(expires_at))
            .arg(1)
            .ignore();
        let mut conn = self.conn.clone();
        self.call("nonce write", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Valid when minted in the current epoch and not expired; a marker other than the
    /// node's is a loss found by another node (or a flush), reported here once.
    async fn nonce_is_valid(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
        self.loss.take()?;
        let mut pipe = redis::pipe();
        pipe.cmd("GET")
            .arg(self.keys.nonce(nonce))
            .cmd("GET")
            .arg(self.keys.state());
        let mut conn = self.conn.clone();
        let (stored, marker): (Option<String>, Option<String>) = self
            .call(
                "nonce read",
                async move { pipe.query_async(&mut conn).await },
            )
            .await?;
        let known = self.known();
        if marker.as_deref() != known.as_ref().map(Marker::encode).as_deref() {
            self.marker_changed(marker.as_deref()).await?;
            self.found_loss(MARKER_MOVED);
            return Err(StoreError::ClaimsLost(MARKER_MOVED.into()));
        }
        let epoch = known.map(|m| m.epoch).unwrap_or_default();
        // Redis expires the key; the stored expiry also holds against this node's clock.
        Ok(stored.is_some_and(|s| nonce_holds(&s, &epoch, now)))
    }

    async fn claim_jti(
        &self,
        jkt: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Claim, StoreError> {
        self.loss.take()?;
        let window = expires_at.saturating_sub(now);
        let bucket = Kind::Jti.bucket(expires_at);
        let known = self.known().map(|m| m.encode()).unwrap_or_default();
        let mut retried = false;
        loop {
            match self.invoke_claim(jkt, jti, window, bucket, &known).await {
                Ok(ClaimReply::Fresh) => return Ok(Claim::Fresh),
                Ok(ClaimReply::Replayed) => return Ok(Claim::Replayed),
                Ok(ClaimReply::MarkerChanged(seen)) => {
                    self.marker_changed(Some(&seen)).await?;
                    self.found_loss(MARKER_MOVED);
                    return Err(StoreError::ClaimsLost(MARKER_MOVED.into()));
                }
                Err(CallError::Redis(e)) if e.kind() == ErrorKind::NoScriptError && !retried => {
                    if self.witness_present().await? {
                        // The process is known; only this version's claim script is new to
                        // it (a node of another version loaded the witness).
                        self.load_script("claim script load", CLAIM_SCRIPT).await?;
                        retried = true;
                        continue;
                    }
                    self.restart_found_at_run_time().await?;
                    return Err(StoreError::ClaimsLost(RESTARTED.into()));
                }
                Err(e) => return Err(self.judge("jti claim", e)),
            }
        }
    }

    async fn put_token(&self, id: TokenId, record: &TokenRecord) -> Result<(), StoreError> {
        let body = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.token(id))
            .arg(body)
            .arg("PXAT")
            .arg(millis(record.exp))
            .ignore()
            .cmd("HINCRBY")
            .arg(self.keys.count(Kind::Token))
            .arg(Kind::Token.bucket(record.exp))
            .arg(1)
            .ignore();
        let mut conn = self.conn.clone();
        self.call("token write", async move {
            pipe.query_async::<()>(&mut conn).await
        })
        .await
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.token(id);
        let body = self
            .call("token read", async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<Vec<u8>>>(&mut conn)
                    .await
            })
            .await?;
        body.map(|b| serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()
    }

    /// Read, then rewrite with `XX KEEPTTL`: the record keeps its expiry at `exp`, and a
    /// record that expired in between is not brought back. Nothing else ever rewrites a
    /// token record, so two racing revocations write the same value. Durable as far as
    /// Redis's `appendfsync` makes it (docs/multi-node.md).
    async fn revoke_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let Some(before) = self.get_token(id).await? else {
            return Ok(None);
        };
        let mut revoked = before.clone();
        revoked.revoked = true;
        let body = serde_json::to_vec(&revoked).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut conn = self.conn.clone();
        let key = self.keys.token(id);
        self.call("revocation", async move {
            redis::cmd("SET")
                .arg(key)
                .arg(body)
                .arg("XX")
                .arg("KEEPTTL")
                .query_async::<Option<String>>(&mut conn)
                .await
        })
        .await?;
        Ok(Some(before))
    }

    /// `SCAN` over this site's token keys, then one `GET` per key (an operator act on a
    /// site's live tokens: thousands, not millions).
    async fn live_tokens(&self, now: i64) -> Result<Vec<(TokenId, TokenRecord)>, StoreError> {
        let pattern = format!("{}token:*", self.keys.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let mut conn = self.conn.clone();
            let pattern = pattern.clone();
            let (next, batch): (u64, Vec<String>) = self
                .call("token scan", async move {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await
                })
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let mut live = Vec::new();
        for key in keys {
            let Some(id) = key.rsplit(':').next().and_then(unhex32).map(TokenId) else {
                continue;
            };
            if let Some(record) = self.get_token(id).await? {
                if record.exp > now {
                    live.push((id, record));
                }
            }
        }
        Ok(live)
    }

    /// Redis expires every entry itself (each key carries its TTL), so there is nothing to
    /// remove and this returns 0. It does the periodic work instead: checks the witness
    /// and the site marker, so a Redis that restarted or lost its data is noticed within
    /// one housekeeping tick even when no proof arrives (the loss is then reported by the
    /// next claim or nonce check), and refreshes the size counters.
    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        if self.known().is_some() {
            if !self.witness_present().await? {
                self.restart_found_at_run_time().await?;
                self.loss.set(RESTARTED);
            } else {
                let marker = self.read_marker().await?;
                let known = self.known().map(|m| m.encode());
                if marker != known {
                    self.marker_changed(marker.as_deref()).await?;
                    self.found_loss(MARKER_MOVED);
                    self.loss.set(MARKER_MOVED);
                }
            }
        }
        self.refresh_sizes(now).await?;
        Ok(0)
    }

    fn losses(&self) -> u64 {
        self.losses.load(Ordering::Acquire)
    }

    /// Live entries per kind as of the last `sweep` (at most one expiry bucket late).
    fn size(&self) -> StoreSize {
        StoreSize {
            nonces: self.nonce_count.load(Ordering::Relaxed),
            jti_claims: self.jti_count.load(Ordering::Relaxed),
            tokens: self.token_count.load(Ordering::Relaxed),
        }
    }

    /// PING, then a write and a read-back of this process's own probe key, in one round trip.
    async fn probe(&self) -> Result<(), StoreError> {
        let stamp = crate::secret::generate();
        let key = self.keys.probe();
        let mut pipe = redis::pipe();
        pipe.cmd("PING")
            .cmd("SET")
            .arg(&key)
            .arg(&stamp)
            .arg("PX")
            .arg(60_000)
            .ignore()
            .cmd("GET")
            .arg(&key);
        let mut conn = self.conn.clone();
        let (pong, read): (String, Option<String>) = self
            .call("probe", async move { pipe.query_async(&mut conn).await })
            .await?;
        if pong == "PONG" && read.as_deref() == Some(stamp.as_str()) {
            Ok(())
        } else {
            Err(StoreError::Unavailable(
                "Redis probe read back a different value".into(),
            ))
        }
    }

    fn health(&self) -> StoreHealth {
        self.health.snapshot()
    }

    async fn key_set(&self, mine: &str, publish: bool) -> Result<Option<String>, StoreError> {
        let key = format!("{}meta:keyset", self.keys.prefix);
        let mut pipe = redis::pipe();
        pipe.cmd("SET").arg(&key).arg(mine);
        if !publish {
            pipe.arg("NX");
        }
        pipe.ignore().cmd("GET").arg(&key);
        let mut conn = self.conn.clone();
        let (recorded,): (Option<String>,) = self
            .call("key-set", async move { pipe.query_async(&mut conn).await })
            .await?;
        Ok(recorded)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_marker_round_trips_and_refuses_other_versions() {
        let marker = Marker {
            epoch: "abc_-1".into(),
            fence_until: 1_700_000_000,
        };
        assert_eq!(marker.encode(), "v1 abc_-1 1700000000");
        assert_eq!(Marker::parse(&marker.encode()), Some(marker));
        assert_eq!(Marker::parse("v2 abc 0"), None);
        assert_eq!(Marker::parse("v1 abc"), None);
        assert_eq!(Marker::parse("v1 abc soon"), None);
    }

    #[test]
    fn an_entry_is_counted_until_the_end_of_its_bucket() {
        // Entries expiring within [100, 110) are counted in the bucket that ends at 110.
        assert_eq!(Kind::Jti.bucket(100), 110);
        assert_eq!(Kind::Jti.bucket(109), 110);
        assert_eq!(Kind::Jti.bucket(110), 120);
        assert_eq!(Kind::Token.bucket(59), 60);
        // Never earlier than the entry's own expiry.
        for t in [0, 1, 59, 60, 61, 1_700_000_001] {
            assert!(Kind::Token.bucket(t) > t);
            assert!(Kind::Nonce.bucket(t) > t);
        }
    }

    #[test]
    fn keys_are_namespaced_and_hold_no_client_text() {
        let keys = Keys {
            prefix: "sealkit:plant-7:".into(),
            instance: "i".into(),
        };
        let jti = keys.jti("jkt", "some jti * with: odd text");
        assert!(jti.starts_with("sealkit:plant-7:jti:"));
        assert_eq!(jti.len(), "sealkit:plant-7:jti:".len() + 64);
        assert_eq!(
            jti,
            format!(
                "sealkit:plant-7:jti:{}",
                hex(&jti_key("jkt", "some jti * with: odd text"))
            )
        );
        let nonce = keys.nonce("a*b:c");
        assert!(nonce.starts_with("sealkit:plant-7:nonce:") && !nonce.contains('*'));
        assert_eq!(
            keys.token(TokenId([0xab; 32])),
            format!("sealkit:plant-7:token:{}", "ab".repeat(32))
        );
        assert_eq!(keys.state(), "sealkit:plant-7:meta:state");
        assert_eq!(hex(&[0x00, 0x0f, 0xf0, 0xff]), "000ff0ff");
    }

    #[test]
    fn a_nonce_holds_only_in_the_epoch_it_was_minted_in() {
        let stored = nonce_value(100, "epoch-a");
        assert_eq!(stored, "100 epoch-a");
        assert!(nonce_holds(&stored, "epoch-a", 99));
        assert!(!nonce_holds(&stored, "epoch-a", 100), "expired");
        assert!(
            !nonce_holds(&stored, "epoch-b", 99),
            "minted before a new epoch"
        );
        // A nonce stored by an earlier version (the expiry alone) is not valid.
        assert!(!nonce_holds("100", "", 99));
        assert!(!nonce_holds("soon epoch-a", "epoch-a", 99));
    }

    #[test]
    fn the_witness_and_the_claim_script_have_distinct_constant_digests() {
        let witness = redis::Script::new(WITNESS_SCRIPT).get_hash().to_string();
        let claim = redis::Script::new(CLAIM_SCRIPT).get_hash().to_string();
        assert_ne!(witness, claim);
        assert_eq!(witness.len(), 40);
        // The witness must never change: nodes of different versions share it.
        assert_eq!(
            witness,
            redis::Script::new(
                "-- sealkit: this Redis process is known to the site (witness v1)\nreturn 1"
            )
            .get_hash()
        );
    }

    #[test]
    fn ttl_arguments_are_never_zero_or_negative() {
        assert_eq!(millis(3), 3_000);
        assert_eq!(millis(0), 1);
        assert_eq!(millis(-5), 1);
    }
}
