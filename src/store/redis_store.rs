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
//! | `nonce:<hex SHA-256 of the nonce>` | expiry (Unix s) | `PXAT` the nonce's expiry |
//! | `jti:<hex of store::jti_key>` | `1` | `PX` the replay window (relative, so a clock difference between a node and Redis cannot shorten it) |
//! | `token:<hex of TokenId>` | the JSON [`TokenRecord`] | `PXAT` the token's `exp`; a revocation rewrites the value with `KEEPTTL` |
//! | `meta:state` | `v1 <epoch> <fenceUntil>` | none: the site marker (below) |
//! | `meta:count:<kind>` | hash: expiry bucket → entries | none; old buckets are pruned by `sweep` |
//! | `meta:probe:<instance>` | a random value | 60 s |
//!
//! A jti is claimed with one atomic `SET key 1 NX PX window` (inside a short Lua script
//! that also bumps the size counter and reads the site marker, so a claim is still one
//! round trip). A token request with a proof costs 2 round trips (claim + token record), 3
//! when the nonce is checked; see docs/multi-node.md.
//!
//! # The restart fence, with Redis
//! The sled fence exists because a node that dies may lose the last few hundred
//! milliseconds of claims it had acknowledged. Here a node acknowledges a proof only after
//! Redis acknowledged its claim, so a node crash loses nothing and needs no fence:
//! [`begin_run`](SenderStore::begin_run) does not report a node's own unclean end, and
//! nonces minted before it stay valid (other nodes are still handing them out).
//!
//! What can be lost is Redis's memory. A Redis *process* crash loses nothing it
//! acknowledged when AOF is on (the append reaches the kernel before the reply); a crash
//! of the Redis *host* loses up to ~1 s of claims with `appendfsync everysec` (2 s when the
//! disk stalls) and none with `appendfsync always`. sealkit cannot see such a partial loss:
//! that window is closed by Redis's configuration, not here. What sealkit can see is a
//! *total* loss (Redis restarted without persistence, flushed, or replaced by an empty
//! one): the site marker `meta:state` is gone or carries another epoch. Then:
//! - at start, `begin_run` reports [`PreviousShutdown::Unclean`], so the authority raises
//!   its nonce fence for one replay window (every nonce minted before the loss is gone);
//!   an empty Redis cannot be told from one that lost its data, so a site's very first
//!   start is fenced too;
//! - while running (seen on the next claim, or by `sweep` within 5 s), every node refuses
//!   jti claims with [`StoreError::Unavailable`] until one replay window after the loss was
//!   seen, so DPoP token requests get 503 (fail closed) and no proof used before the loss
//!   can be used again. The new marker records the end of that window, so a node started
//!   meanwhile raises its fence too.

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
/// How long opening the store may take (the first connection, with its retries).
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest pause between two reconnection attempts once Redis went away.
const MAX_RECONNECT_DELAY_MS: u64 = 1_000;
const MARKER_VERSION: &str = "v1";

/// `SET NX` the claim; bump the counter only for a fresh one; return the site marker.
/// KEYS: claim, counter hash, marker. ARGV: TTL (ms), counter bucket.
const CLAIM_SCRIPT: &str = r"
local marker = redis.call('GET', KEYS[3]) or ''
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
    /// The replay window of the configuration (seconds): how long a runtime fence lasts.
    fence_window: i64,
    claim_script: redis::Script,
    /// The site marker this node last saw, and the end of a fence raised while running.
    marker: Mutex<MarkerState>,
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

#[derive(Default)]
struct MarkerState {
    epoch: Option<String>,
    fence_until: i64,
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

impl RedisStore {
    /// Connects to the site's Redis (the password read from its file now) and checks that it
    /// answers. `replay_window` is how long a fence raised while running lasts.
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
            claim_script: redis::Script::new(CLAIM_SCRIPT),
            marker: Mutex::new(MarkerState::default()),
            nonce_count: AtomicU64::new(0),
            jti_count: AtomicU64::new(0),
            token_count: AtomicU64::new(0),
        };
        store.probe().await?;
        Ok(store)
    }

    /// Runs one exchange with Redis under the configured deadline.
    async fn call<T>(
        &self,
        what: &str,
        exchange: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result.map_err(|e| store_error(what, e)),
            Err(_) => Err(StoreError::Unavailable(format!(
                "Redis {what}: no answer within {:?}",
                self.timeout
            ))),
        }
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

    /// Writes a new site marker unless another node just did; returns the marker in force.
    async fn create_marker(&self, fence_until: i64) -> Result<Marker, StoreError> {
        let candidate = Marker {
            epoch: crate::secret::generate(),
            fence_until,
        };
        let mut conn = self.conn.clone();
        let key = self.keys.state();
        let value = candidate.encode();
        let written = self
            .call("marker write", async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg(value)
                    .arg("NX")
                    .query_async::<Option<String>>(&mut conn)
                    .await
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

    fn set_marker_state(&self, epoch: String, fence_until: i64) {
        if let Ok(mut state) = self.marker.lock() {
            state.epoch = Some(epoch);
            state.fence_until = state.fence_until.max(fence_until);
        }
    }

    /// The end of a fence raised while running, if one is up at `now`.
    fn fenced_until(&self, now: i64) -> Option<i64> {
        self.marker
            .lock()
            .ok()
            .map(|s| s.fence_until)
            .filter(|&until| until > now)
    }

    /// Compares the marker Redis holds with the one this node saw; on a difference Redis has
    /// lost (or been replaced with) another keyspace: raise the fence for one replay window.
    async fn check_marker(
        &self,
        seen: Option<&str>,
        now: i64,
        window: i64,
    ) -> Result<(), StoreError> {
        let known = match self.marker.lock() {
            Ok(state) => state.epoch.clone(),
            Err(_) => return Err(StoreError::Corrupt("marker state poisoned".into())),
        };
        let current = seen.and_then(Marker::parse);
        match (&known, &current) {
            // Not started (no begin_run): adopt what is there.
            (None, Some(marker)) => {
                self.set_marker_state(marker.epoch.clone(), 0);
                Ok(())
            }
            (Some(known), Some(marker)) if *known == marker.epoch => Ok(()),
            _ => {
                let fence_until = now.saturating_add(window.max(self.fence_window));
                let marker = match current {
                    Some(marker) => marker,
                    None => self.create_marker(fence_until).await?,
                };
                let fence_until = fence_until.max(marker.fence_until);
                self.set_marker_state(marker.epoch, fence_until);
                tracing::error!(
                    event = events::STORE_FENCE,
                    until = fence_until,
                    "Redis no longer holds this site's replay claims (restarted without persistence, flushed or replaced): DPoP proofs are refused until the replay window has passed"
                );
                Err(fence_error(fence_until))
            }
        }
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

fn fence_error(until: i64) -> StoreError {
    StoreError::Unavailable(format!(
        "Redis lost this site's replay claims; DPoP proofs are refused until {until} (one replay window)"
    ))
}

/// Milliseconds for a `PX`/`PXAT` argument, never zero or negative (Redis refuses those).
fn millis(seconds: i64) -> i64 {
    seconds.saturating_mul(1000).max(1)
}

#[async_trait]
impl SenderStore for RedisStore {
    /// Reports [`PreviousShutdown::Unclean`] only when the *site's* replay memory may have
    /// been lost (no marker, or a fence recorded in it still running); a node's own crash
    /// lost nothing (see the module doc).
    async fn begin_run(&self) -> Result<PreviousShutdown, StoreError> {
        let now = crate::clock::unix_now();
        let previous = match self.read_marker().await?.as_deref().map(Marker::parse) {
            Some(Some(marker)) => {
                let fenced = marker.fence_until > now;
                self.set_marker_state(marker.epoch, 0);
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
                // A new site, or a Redis that lost everything: the two look the same.
                let marker = self
                    .create_marker(now.saturating_add(self.fence_window))
                    .await?;
                self.set_marker_state(marker.epoch, 0);
                PreviousShutdown::Unclean
            }
        };
        self.refresh_sizes(now).await?;
        Ok(previous)
    }

    /// Nothing to flush: every write was acknowledged by Redis before its call returned,
    /// and how a node ends does not matter to the site (see the module doc).
    async fn end_run(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn put_nonce(&self, nonce: &str, expires_at: i64) -> Result<(), StoreError> {
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.nonce(nonce))
            .arg(expires_at)
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

    async fn nonce_is_valid(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.nonce(nonce);
        let stored = self
            .call("nonce read", async move {
                redis::cmd("GET")
                    .arg(key)
                    .query_async::<Option<i64>>(&mut conn)
                    .await
            })
            .await?;
        // Redis expires the key; the stored expiry also holds against this node's clock.
        Ok(stored.is_some_and(|exp| exp > now))
    }

    async fn claim_jti(
        &self,
        jkt: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Claim, StoreError> {
        if let Some(until) = self.fenced_until(now) {
            return Err(fence_error(until));
        }
        let window = expires_at.saturating_sub(now);
        let mut invocation = self.claim_script.prepare_invoke();
        invocation
            .key(self.keys.jti(jkt, jti))
            .key(self.keys.count(Kind::Jti))
            .key(self.keys.state())
            .arg(millis(window))
            .arg(Kind::Jti.bucket(expires_at));
        let mut conn = self.conn.clone();
        let (fresh, marker): (i64, String) = self
            .call("jti claim", async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        self.check_marker(Some(marker.as_str()).filter(|m| !m.is_empty()), now, window)
            .await?;
        Ok(if fresh == 1 {
            Claim::Fresh
        } else {
            Claim::Replayed
        })
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

    /// Redis expires every entry itself (each key carries its TTL), so there is nothing to
    /// remove and this returns 0. It does the periodic work instead: refreshes the size
    /// counters and checks the site marker, so a Redis that lost its data is noticed within
    /// one housekeeping tick even when no proof arrives.
    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        let marker = self.read_marker().await?;
        self.check_marker(marker.as_deref(), now, self.fence_window)
            .await?;
        self.refresh_sizes(now).await?;
        Ok(0)
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
    fn ttl_arguments_are_never_zero_or_negative() {
        assert_eq!(millis(3), 3_000);
        assert_eq!(millis(0), 1);
        assert_eq!(millis(-5), 1);
    }
}
