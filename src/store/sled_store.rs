//! The embedded `sled` backend of the [`SenderStore`]: one database in the data directory,
//! a tree per kind of entry, each value starting with its expiry (8 bytes, big-endian) so
//! the sweeper can judge an entry without decoding it.
//!
//! sled writes go to an in-memory log flushed every `FLUSH_EVERY_MS`; revocations force a
//! flush before returning (see the crash-safety notes in `store`).
//!
//! Sweeping: jti claims and token records are also queued in memory, in insertion order,
//! with their expiry. They are written with `now + window`, so insertion order is expiry
//! order and a sweep reads only the front of the queue: the entries that have expired,
//! not the whole store (a full scan every few seconds cost more than the requests
//! themselves once the store held a replay window's worth of claims). The queue is only a
//! list of places to look: the sweeper still reads each entry's own expiry and removes it
//! with a compare-and-swap, so a stale, duplicated or missing queue entry can delay a
//! removal, never make one early. After a restart the queue is empty, so the first sweep
//! scans everything once and queues what it finds alive.

use super::{
    jti_key, Claim, PreviousShutdown, SenderStore, StoreError, StoreSize, TokenId, TokenRecord,
};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

const FLUSH_EVERY_MS: u64 = 200;
const RUNNING_MARKER: &[u8] = b"running";
/// Entries handled between two yields of a sweep, so a sweep never holds a runtime worker
/// for long (request latency): ~64 removals of ~10 µs each, under a millisecond.
const SWEEP_CHUNK: usize = 64;

/// Where to look when sweeping one tree: `(expires_at, key)` in insertion order.
#[derive(Default)]
struct SweepQueue(Mutex<VecDeque<(i64, [u8; 32])>>);

impl SweepQueue {
    fn push(&self, expires_at: i64, key: [u8; 32]) {
        let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
        queue.push_back((expires_at, key));
    }

    /// Takes up to `max` entries due at `now` from the front.
    fn take_due(&self, now: i64, max: usize) -> Vec<(i64, [u8; 32])> {
        let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut due = Vec::new();
        while due.len() < max {
            match queue.front() {
                Some(&(exp, _)) if exp <= now => {
                    if let Some(entry) = queue.pop_front() {
                        due.push(entry);
                    }
                }
                _ => break,
            }
        }
        due
    }

    /// Puts entries found by a full scan (sorted by expiry) in front of the queue: they
    /// were written by an earlier run, so they expire no later than anything queued since.
    fn prepend_sorted(&self, mut found: Vec<(i64, [u8; 32])>) {
        found.sort_unstable_by_key(|&(exp, _)| exp);
        let mut queue = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let queued = std::mem::take(&mut *queue);
        queue.extend(found);
        queue.extend(queued);
    }

    fn len(&self) -> usize {
        self.0.lock().map(|q| q.len()).unwrap_or(0)
    }
}

pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    nonces: sled::Tree,
    jtis: sled::Tree,
    tokens: sled::Tree,
    nonce_count: AtomicU64,
    jti_count: AtomicU64,
    token_count: AtomicU64,
    jti_queue: SweepQueue,
    token_queue: SweepQueue,
    /// The queues do not know entries written before this process opened the store.
    needs_full_scan: AtomicBool,
}

fn unavailable(e: sled::Error) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn expiry_of(value: &[u8]) -> Option<i64> {
    value
        .get(..8)
        .and_then(|b| b.try_into().ok())
        .map(i64::from_be_bytes)
}

/// `expires_at ‖ body`: how earlier versions stored a token record (JSON body).
#[cfg(test)]
fn with_expiry(expires_at: i64, body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + body.len());
    value.extend_from_slice(&expires_at.to_be_bytes());
    value.extend_from_slice(body);
    value
}

/// Token records are stored compactly: a format byte (`RECORD_V1`) and the fields in a
/// fixed order, strings length-prefixed. Records written as JSON by earlier versions (their
/// body starts with `{`) are still read. Smaller values make sled's writes cheaper (it
/// rewrites the leaf node that holds them) and introspection's reads faster.
const RECORD_V1: u8 = 1;

fn put_str(out: &mut Vec<u8>, s: &str) -> Result<(), StoreError> {
    let len = u16::try_from(s.len())
        .map_err(|_| StoreError::Corrupt("token record field longer than 64 KiB".into()))?;
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_opt(out: &mut Vec<u8>, s: Option<&str>) -> Result<(), StoreError> {
    match s {
        None => out.push(0),
        Some(s) => {
            out.push(1);
            put_str(out, s)?;
        }
    }
    Ok(())
}

/// `expires_at ‖ RECORD_V1 ‖ fields`: the value a token record is stored as.
fn encode_record(record: &TokenRecord) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(192);
    out.extend_from_slice(&record.exp.to_be_bytes());
    out.push(RECORD_V1);
    put_str(&mut out, &record.client_id)?;
    put_str(&mut out, &record.tenant)?;
    put_str(&mut out, &record.scope)?;
    let audiences = u16::try_from(record.audience.len())
        .map_err(|_| StoreError::Corrupt("too many audiences".into()))?;
    out.extend_from_slice(&audiences.to_be_bytes());
    for audience in &record.audience {
        put_str(&mut out, audience)?;
    }
    out.extend_from_slice(&record.iat.to_be_bytes());
    put_str(&mut out, &record.jti)?;
    put_str(&mut out, &record.token_type)?;
    put_opt(&mut out, record.cnf_jkt.as_deref())?;
    put_opt(&mut out, record.sender_certificate.as_deref())?;
    out.push(u8::from(record.revoked));
    Ok(out)
}

/// A cursor over an encoded record; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn byte(&mut self) -> Option<u8> {
        self.bytes(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<usize> {
        self.bytes(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn i64(&mut self) -> Option<i64> {
        self.bytes(8)
            .and_then(|b| b.try_into().ok())
            .map(i64::from_be_bytes)
    }
    fn string(&mut self) -> Option<String> {
        let len = self.u16()?;
        String::from_utf8(self.bytes(len)?.to_vec()).ok()
    }
    fn optional(&mut self) -> Option<Option<String>> {
        match self.byte()? {
            0 => Some(None),
            1 => self.string().map(Some),
            _ => None,
        }
    }
}

/// Reads what [`encode_record`] (or an earlier version's JSON) wrote.
fn decode_record(value: &[u8]) -> Result<TokenRecord, StoreError> {
    let corrupt = || StoreError::Corrupt("unreadable token record".into());
    let exp = expiry_of(value).ok_or_else(corrupt)?;
    let body = value.get(8..).ok_or_else(corrupt)?;
    match body.first() {
        Some(b'{') => {
            return serde_json::from_slice(body).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
        Some(&RECORD_V1) => {}
        _ => return Err(corrupt()),
    }
    let mut r = Reader(&body[1..]);
    let decoded = (|| {
        let client_id = r.string()?;
        let tenant = r.string()?;
        let scope = r.string()?;
        let audiences = r.u16()?;
        let mut audience = Vec::with_capacity(audiences);
        for _ in 0..audiences {
            audience.push(r.string()?);
        }
        let iat = r.i64()?;
        let jti = r.string()?;
        let token_type = r.string()?;
        let cnf_jkt = r.optional()?;
        let sender_certificate = r.optional()?;
        let revoked = match r.byte()? {
            0 => false,
            1 => true,
            _ => return None,
        };
        Some(TokenRecord {
            client_id,
            tenant,
            scope,
            audience,
            iat,
            exp,
            jti,
            token_type,
            cnf_jkt,
            sender_certificate,
            revoked,
        })
    })();
    decoded.ok_or_else(corrupt)
}

/// Removes `key` from `tree` if its stored expiry has passed (or is unreadable), and only
/// the value that was judged: a concurrent re-claim replaces the value and survives.
fn remove_if_expired(
    tree: &sled::Tree,
    counter: &AtomicU64,
    key: &[u8],
    now: i64,
) -> Result<bool, StoreError> {
    let Some(value) = tree.get(key).map_err(unavailable)? else {
        return Ok(false);
    };
    if expiry_of(&value).is_some_and(|exp| exp > now) {
        return Ok(false);
    }
    let removed = tree
        .compare_and_swap(key, Some(&value), None as Option<&[u8]>)
        .map_err(unavailable)?
        .is_ok();
    if removed {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
    Ok(removed)
}

impl SledStore {
    /// Opens (creating if needed) the store under `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .mode(sled::Mode::HighThroughput)
            .open()
            .map_err(unavailable)?;
        let open_tree = |name: &str| db.open_tree(name).map_err(unavailable);
        let store = SledStore {
            meta: open_tree("meta")?,
            nonces: open_tree("nonces")?,
            jtis: open_tree("jti")?,
            tokens: open_tree("tokens")?,
            db,
            nonce_count: AtomicU64::new(0),
            jti_count: AtomicU64::new(0),
            token_count: AtomicU64::new(0),
            jti_queue: SweepQueue::default(),
            token_queue: SweepQueue::default(),
            needs_full_scan: AtomicBool::new(true),
        };
        store
            .nonce_count
            .store(store.nonces.len() as u64, Ordering::Relaxed);
        store
            .jti_count
            .store(store.jtis.len() as u64, Ordering::Relaxed);
        store
            .token_count
            .store(store.tokens.len() as u64, Ordering::Relaxed);
        Ok(store)
    }

    /// Sweeps every entry of `tree` (chunk by chunk, yielding in between); queues the
    /// live ones with 32-byte keys on `queue` when given.
    async fn sweep_full(
        tree: &sled::Tree,
        counter: &AtomicU64,
        queue: Option<&SweepQueue>,
        now: i64,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        let mut live = Vec::new();
        let mut after: Option<sled::IVec> = None;
        loop {
            let mut chunk = Vec::with_capacity(SWEEP_CHUNK);
            let range = match &after {
                None => tree.range::<&[u8], _>(..),
                Some(last) => tree.range::<&[u8], _>((
                    std::ops::Bound::Excluded(last.as_ref()),
                    std::ops::Bound::Unbounded,
                )),
            };
            for entry in range.take(SWEEP_CHUNK) {
                chunk.push(entry.map_err(unavailable)?);
            }
            let done = chunk.len() < SWEEP_CHUNK;
            for (key, value) in &chunk {
                match expiry_of(value) {
                    Some(exp) if exp > now => {
                        if let (Some(_), Ok(key32)) = (queue, <[u8; 32]>::try_from(key.as_ref())) {
                            live.push((exp, key32));
                        }
                    }
                    _ => {
                        if remove_if_expired(tree, counter, key, now)? {
                            removed += 1;
                        }
                    }
                }
            }
            after = chunk.pop().map(|(key, _)| key);
            if done || after.is_none() {
                break;
            }
            tokio::task::yield_now().await;
        }
        if let Some(queue) = queue {
            queue.prepend_sorted(live);
        }
        Ok(removed)
    }

    /// Sweeps what the queue says is due. `bare_expiry`: the tree's values are the expiry
    /// alone (jti claims), so the queued expiry *is* the value written and one
    /// compare-and-swap against it removes exactly that claim and nothing newer.
    async fn sweep_queued(
        tree: &sled::Tree,
        counter: &AtomicU64,
        queue: &SweepQueue,
        now: i64,
        bare_expiry: bool,
    ) -> Result<u64, StoreError> {
        let mut removed = 0;
        loop {
            let due = queue.take_due(now, SWEEP_CHUNK);
            for (exp, key) in &due {
                let gone = if bare_expiry {
                    let written = exp.to_be_bytes();
                    let swapped = tree
                        .compare_and_swap(key, Some(&written[..]), None as Option<&[u8]>)
                        .map_err(unavailable)?
                        .is_ok();
                    if swapped {
                        counter.fetch_sub(1, Ordering::Relaxed);
                    }
                    swapped
                } else {
                    remove_if_expired(tree, counter, key, now)?
                };
                if gone {
                    removed += 1;
                }
            }
            if due.len() < SWEEP_CHUNK {
                return Ok(removed);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Writes everything to disk and waits until it is durable (fsync).
    ///
    /// sled 0.34's `flush_async` can deadlock when several callers await it at once
    /// (spacejam/sled#1308, fixed only in unreleased sled): concurrent revocations hung
    /// and took runtime workers with them. The blocking `flush` has no such problem; it
    /// runs on the blocking pool so a worker never waits for the disk.
    async fn flush(&self) -> Result<(), StoreError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || db.flush())
            .await
            .map_err(|e| StoreError::Unavailable(format!("flush task failed: {e}")))?
            .map_err(unavailable)?;
        Ok(())
    }

    /// Entries waiting in the sweep queues (for tests and diagnostics).
    pub fn queued(&self) -> usize {
        self.jti_queue.len() + self.token_queue.len()
    }
}

#[async_trait]
impl SenderStore for SledStore {
    async fn begin_run(&self) -> Result<PreviousShutdown, StoreError> {
        let previous = match self.meta.get("state").map_err(unavailable)? {
            None => PreviousShutdown::FirstStart,
            Some(v) if v.as_ref() == RUNNING_MARKER => PreviousShutdown::Unclean,
            Some(_) => PreviousShutdown::Clean,
        };
        if previous == PreviousShutdown::Unclean {
            self.nonces.clear().map_err(unavailable)?;
            self.nonce_count.store(0, Ordering::Relaxed);
        }
        self.meta
            .insert("state", RUNNING_MARKER)
            .map_err(unavailable)?;
        self.flush().await?;
        Ok(previous)
    }

    async fn end_run(&self) -> Result<(), StoreError> {
        self.flush().await?;
        self.meta
            .insert("state", &b"clean"[..])
            .map_err(unavailable)?;
        self.flush().await?;
        Ok(())
    }

    async fn put_nonce(&self, nonce: &str, expires_at: i64) -> Result<(), StoreError> {
        let previous = self
            .nonces
            .insert(nonce.as_bytes(), &expires_at.to_be_bytes()[..])
            .map_err(unavailable)?;
        if previous.is_none() {
            self.nonce_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn nonce_is_valid(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
        Ok(self
            .nonces
            .get(nonce.as_bytes())
            .map_err(unavailable)?
            .and_then(|v| expiry_of(&v))
            .is_some_and(|exp| exp > now))
    }

    async fn claim_jti(
        &self,
        jkt: &str,
        jti: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<Claim, StoreError> {
        let key = jti_key(jkt, jti);
        let value = expires_at.to_be_bytes();
        let mut expected: Option<sled::IVec> = None;
        // Insert-if-absent; an expired leftover the sweeper has not reached yet is replaced
        // with the same compare-and-swap, so two racing claims still yield one winner.
        loop {
            match self
                .jtis
                .compare_and_swap(key, expected.as_ref(), Some(&value[..]))
                .map_err(unavailable)?
            {
                Ok(()) => {
                    if expected.is_none() {
                        self.jti_count.fetch_add(1, Ordering::Relaxed);
                    }
                    self.jti_queue.push(expires_at, key);
                    return Ok(Claim::Fresh);
                }
                Err(conflict) => match conflict.current {
                    Some(current) if expiry_of(&current).is_some_and(|exp| exp > now) => {
                        return Ok(Claim::Replayed)
                    }
                    current => expected = current,
                },
            }
        }
    }

    async fn put_token(&self, id: TokenId, record: &TokenRecord) -> Result<(), StoreError> {
        let previous = self
            .tokens
            .insert(id.0, encode_record(record)?)
            .map_err(unavailable)?;
        if previous.is_none() {
            self.token_count.fetch_add(1, Ordering::Relaxed);
        }
        self.token_queue.push(record.exp, id.0);
        Ok(())
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        match self.tokens.get(id.0).map_err(unavailable)? {
            None => Ok(None),
            Some(value) => decode_record(&value).map(Some),
        }
    }

    async fn revoke_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let mut before = None;
        let mut failure = None;
        self.tokens
            .fetch_and_update(id.0, |old| {
                let old = old?;
                match decode_record(old) {
                    Ok(mut record) => {
                        before = Some(record.clone());
                        record.revoked = true;
                        match encode_record(&record) {
                            Ok(value) => Some(value),
                            Err(e) => {
                                failure = Some(e.to_string());
                                Some(old.to_vec())
                            }
                        }
                    }
                    Err(e) => {
                        failure = Some(e.to_string());
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(unavailable)?;
        if let Some(message) = failure {
            return Err(StoreError::Corrupt(message));
        }
        // Durable before the caller answers: a revoked token stays revoked after a crash.
        self.flush().await?;
        Ok(before)
    }

    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        // Nonces: one every few minutes, a full scan costs nothing.
        let mut removed = Self::sweep_full(&self.nonces, &self.nonce_count, None, now).await?;
        if self.needs_full_scan.swap(false, Ordering::AcqRel) {
            removed +=
                Self::sweep_full(&self.jtis, &self.jti_count, Some(&self.jti_queue), now).await?;
            removed += Self::sweep_full(
                &self.tokens,
                &self.token_count,
                Some(&self.token_queue),
                now,
            )
            .await?;
        }
        removed +=
            Self::sweep_queued(&self.jtis, &self.jti_count, &self.jti_queue, now, true).await?;
        removed += Self::sweep_queued(
            &self.tokens,
            &self.token_count,
            &self.token_queue,
            now,
            false,
        )
        .await?;
        Ok(removed)
    }

    fn size(&self) -> StoreSize {
        StoreSize {
            nonces: self.nonce_count.load(Ordering::Relaxed),
            jti_claims: self.jti_count.load(Ordering::Relaxed),
            tokens: self.token_count.load(Ordering::Relaxed),
        }
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let stamp = crate::clock::unix_now().to_be_bytes();
        self.meta.insert("probe", &stamp[..]).map_err(unavailable)?;
        match self.meta.get("probe").map_err(unavailable)? {
            Some(v) if v.as_ref() == stamp => Ok(()),
            _ => Err(StoreError::Unavailable(
                "probe read back a different value".into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (SledStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sealkit-sled-{}", crate::secret::generate()));
        (SledStore::open(&dir).unwrap(), dir)
    }

    #[tokio::test]
    async fn a_jti_is_claimed_once_until_it_expires() {
        let (store, dir) = temp_store();
        assert_eq!(
            store.claim_jti("k", "j", 100, 0).await.unwrap(),
            Claim::Fresh
        );
        assert_eq!(
            store.claim_jti("k", "j", 100, 50).await.unwrap(),
            Claim::Replayed
        );
        // Same jti under another key is a different claim.
        assert_eq!(
            store.claim_jti("k2", "j", 100, 50).await.unwrap(),
            Claim::Fresh
        );
        // After expiry (not yet swept) the claim can be made again.
        assert_eq!(
            store.claim_jti("k", "j", 300, 100).await.unwrap(),
            Claim::Fresh
        );
        assert_eq!(store.size().jti_claims, 2);
        assert_eq!(store.sweep(1000).await.unwrap(), 2);
        assert_eq!(store.size().jti_claims, 0);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn concurrent_claims_have_one_winner() {
        let (store, dir) = temp_store();
        let store = std::sync::Arc::new(store);
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.claim_jti("k", "same", 100, 0).await.unwrap()
            }));
        }
        let mut fresh = 0;
        for t in tasks {
            if t.await.unwrap() == Claim::Fresh {
                fresh += 1;
            }
        }
        assert_eq!(fresh, 1);
        std::fs::remove_dir_all(dir).ok();
    }

    #[tokio::test]
    async fn unclean_restart_is_detected_and_forgets_nonces() {
        let (store, dir) = temp_store();
        assert_eq!(
            store.begin_run().await.unwrap(),
            PreviousShutdown::FirstStart
        );
        store.put_nonce("n1", 100).await.unwrap();
        assert!(store.nonce_is_valid("n1", 10).await.unwrap());
        assert!(!store.nonce_is_valid("n1", 100).await.unwrap());
        assert!(!store.nonce_is_valid("unknown", 10).await.unwrap());
        store.db.flush().unwrap();
        drop(store); // no end_run: as if killed
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.begin_run().await.unwrap(), PreviousShutdown::Unclean);
        assert!(!store.nonce_is_valid("n1", 10).await.unwrap());
        store.end_run().await.unwrap();
        drop(store);
        let store = SledStore::open(&dir).unwrap();
        assert_eq!(store.begin_run().await.unwrap(), PreviousShutdown::Clean);
        std::fs::remove_dir_all(dir).ok();
    }

    fn record(exp: i64) -> TokenRecord {
        TokenRecord {
            client_id: "c".into(),
            tenant: "t".into(),
            scope: "s".into(),
            audience: vec!["a".into()],
            iat: 0,
            exp,
            jti: "j".into(),
            token_type: "DPoP".into(),
            cnf_jkt: Some("k".into()),
            sender_certificate: None,
            revoked: false,
        }
    }

    #[tokio::test]
    async fn revocation_sticks() {
        let (store, dir) = temp_store();
        let record = record(100);
        let id = TokenId::of("token");
        store.put_token(id, &record).await.unwrap();
        assert_eq!(store.get_token(id).await.unwrap(), Some(record.clone()));
        assert_eq!(store.revoke_token(id).await.unwrap(), Some(record));
        assert!(store.get_token(id).await.unwrap().unwrap().revoked);
        assert_eq!(
            store.revoke_token(TokenId::of("unknown")).await.unwrap(),
            None
        );
        std::fs::remove_dir_all(dir).ok();
    }

    /// The sweep removes what has expired and keeps what has not, including an entry claimed
    /// again after its first expiry (its old queue entry must not remove the new claim).
    #[tokio::test]
    async fn sweeping_removes_exactly_the_expired_entries() {
        let (store, dir) = temp_store();
        store.begin_run().await.unwrap();
        for i in 0..2000 {
            let exp = 100 + i64::from(i);
            assert_eq!(
                store
                    .claim_jti("k", &format!("j{i}"), exp, 0)
                    .await
                    .unwrap(),
                Claim::Fresh
            );
            store
                .put_token(TokenId::of(&format!("t{i}")), &record(exp))
                .await
                .unwrap();
        }
        // Expired at 1099: exp 100..=1099, i.e. the first 1000 of each kind.
        assert_eq!(store.sweep(1099).await.unwrap(), 2000);
        assert_eq!(store.size().jti_claims, 1000);
        assert_eq!(store.size().tokens, 1000);
        assert!(store
            .get_token(TokenId::of("t999"))
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get_token(TokenId::of("t1000"))
            .await
            .unwrap()
            .is_some());
        // A swept jti may be claimed again; a live one is still a replay.
        assert_eq!(
            store.claim_jti("k", "j999", 5000, 1099).await.unwrap(),
            Claim::Fresh
        );
        assert_eq!(
            store.claim_jti("k", "j1000", 5000, 1099).await.unwrap(),
            Claim::Replayed
        );
        // The re-claimed j999 (exp 5000) survives the sweep of its old queue entry.
        assert_eq!(store.sweep(2099).await.unwrap(), 2000);
        assert_eq!(store.size().jti_claims, 1);
        assert_eq!(
            store.claim_jti("k", "j999", 6000, 2100).await.unwrap(),
            Claim::Replayed
        );
        assert_eq!(store.sweep(5000).await.unwrap(), 1);
        assert_eq!(store.size().jti_claims, 0);
        assert_eq!(store.queued(), 0, "everything due has left the queue");
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn records_round_trip_in_the_compact_format() {
        let mut full = record(1234);
        full.audience = vec!["a".into(), "b".into(), String::new()];
        full.sender_certificate = Some("x5t".into());
        full.revoked = true;
        full.scope = String::new();
        let mut bare = record(-5);
        bare.cnf_jkt = None;
        bare.audience = Vec::new();
        for r in [full, bare, record(100)] {
            let encoded = encode_record(&r).unwrap();
            assert_eq!(expiry_of(&encoded), Some(r.exp));
            assert_eq!(encoded[8], RECORD_V1);
            assert_eq!(decode_record(&encoded).unwrap(), r);
            // Every truncation is refused, never misread.
            for cut in 0..encoded.len() {
                assert!(decode_record(&encoded[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn records_written_as_json_by_earlier_versions_are_still_read() {
        let r = record(100);
        let legacy = with_expiry(r.exp, &serde_json::to_vec(&r).unwrap());
        assert_eq!(decode_record(&legacy).unwrap(), r);
        assert!(decode_record(&with_expiry(100, b"\x07junk")).is_err());
    }

    #[tokio::test]
    async fn a_legacy_record_can_be_revoked() {
        let (store, dir) = temp_store();
        let r = record(100);
        let id = TokenId::of("legacy");
        store
            .tokens
            .insert(id.0, with_expiry(r.exp, &serde_json::to_vec(&r).unwrap()))
            .unwrap();
        assert_eq!(store.revoke_token(id).await.unwrap(), Some(r));
        assert!(store.get_token(id).await.unwrap().unwrap().revoked);
        std::fs::remove_dir_all(dir).ok();
    }

    /// sled 0.34's flush_async can deadlock when awaited concurrently (spacejam/sled#1308).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_revocations_finish() {
        let (store, dir) = temp_store();
        let store = std::sync::Arc::new(store);
        for i in 0..64 {
            store
                .put_token(TokenId::of(&format!("t{i}")), &record(100))
                .await
                .unwrap();
        }
        let mut tasks = Vec::new();
        for i in 0..64 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                s.revoke_token(TokenId::of(&format!("t{i}"))).await.unwrap()
            }));
        }
        let all = async {
            for t in tasks {
                assert!(t.await.unwrap().is_some());
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), all)
            .await
            .expect("concurrent revocations hung");
        std::fs::remove_dir_all(dir).ok();
    }

    /// Entries written by an earlier process are not in this one's queue: the first sweep
    /// after opening scans them, removes the expired ones and queues the rest.
    #[tokio::test]
    async fn entries_from_an_earlier_run_are_swept_too() {
        let (store, dir) = temp_store();
        store.begin_run().await.unwrap();
        store.claim_jti("k", "old", 100, 0).await.unwrap();
        store.claim_jti("k", "live", 500, 0).await.unwrap();
        store
            .put_token(TokenId::of("t-old"), &record(100))
            .await
            .unwrap();
        store.end_run().await.unwrap();
        drop(store);
        let store = SledStore::open(&dir).unwrap();
        store.begin_run().await.unwrap();
        assert_eq!(store.queued(), 0);
        assert_eq!(store.sweep(200).await.unwrap(), 2);
        assert_eq!(store.size().jti_claims, 1);
        assert_eq!(store.size().tokens, 0);
        assert_eq!(store.queued(), 1);
        assert_eq!(
            store.claim_jti("k", "live", 900, 200).await.unwrap(),
            Claim::Replayed
        );
        assert_eq!(store.sweep(500).await.unwrap(), 1);
        assert_eq!(store.size().jti_claims, 0);
        std::fs::remove_dir_all(dir).ok();
    }
}
