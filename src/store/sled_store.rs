//! The embedded `sled` backend of the [`SenderStore`]: one database in the data directory,
//! a tree per kind of entry, each value starting with its expiry (8 bytes, big-endian) so
//! the sweeper can judge an entry without decoding it.
//!
//! sled writes go to an in-memory log flushed every `FLUSH_EVERY_MS`; revocations force a
//! flush before returning (see the crash-safety notes in `store`).

use super::{
    jti_key, Claim, PreviousShutdown, SenderStore, StoreError, StoreSize, TokenId, TokenRecord,
};
use async_trait::async_trait;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const FLUSH_EVERY_MS: u64 = 200;
const RUNNING_MARKER: &[u8] = b"running";

pub struct SledStore {
    db: sled::Db,
    meta: sled::Tree,
    nonces: sled::Tree,
    jtis: sled::Tree,
    tokens: sled::Tree,
    // Shared with the sweeper, which runs on a blocking thread.
    nonce_count: Arc<AtomicU64>,
    jti_count: Arc<AtomicU64>,
    token_count: Arc<AtomicU64>,
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

fn with_expiry(expires_at: i64, body: &[u8]) -> Vec<u8> {
    let mut value = Vec::with_capacity(8 + body.len());
    value.extend_from_slice(&expires_at.to_be_bytes());
    value.extend_from_slice(body);
    value
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
            nonce_count: Arc::new(AtomicU64::new(0)),
            jti_count: Arc::new(AtomicU64::new(0)),
            token_count: Arc::new(AtomicU64::new(0)),
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

    fn sweep_tree(tree: &sled::Tree, counter: &AtomicU64, now: i64) -> Result<u64, StoreError> {
        let mut removed = 0;
        for entry in tree.iter() {
            let (key, value) = entry.map_err(unavailable)?;
            if expiry_of(&value).map_or(true, |exp| exp <= now) {
                // Only remove the entry we judged: a concurrent re-claim replaces the value.
                if tree
                    .compare_and_swap(&key, Some(&value), None as Option<&[u8]>)
                    .map_err(unavailable)?
                    .is_ok()
                {
                    removed += 1;
                    counter.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        Ok(removed)
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
        self.db.flush_async().await.map_err(unavailable)?;
        Ok(previous)
    }

    async fn end_run(&self) -> Result<(), StoreError> {
        self.db.flush_async().await.map_err(unavailable)?;
        self.meta
            .insert("state", &b"clean"[..])
            .map_err(unavailable)?;
        self.db.flush_async().await.map_err(unavailable)?;
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
        let body = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let previous = self
            .tokens
            .insert(id.0, with_expiry(record.exp, &body))
            .map_err(unavailable)?;
        if previous.is_none() {
            self.token_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        match self.tokens.get(id.0).map_err(unavailable)? {
            None => Ok(None),
            Some(value) => {
                let body = value
                    .get(8..)
                    .ok_or_else(|| StoreError::Corrupt("short token record".into()))?;
                serde_json::from_slice(body)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))
            }
        }
    }

    async fn revoke_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let mut before = None;
        let mut failure = None;
        self.tokens
            .fetch_and_update(id.0, |old| {
                let old = old?;
                let parsed = old.get(8..).map(serde_json::from_slice::<TokenRecord>);
                match parsed {
                    Some(Ok(mut record)) => {
                        before = Some(record.clone());
                        record.revoked = true;
                        match serde_json::to_vec(&record) {
                            Ok(body) => Some(with_expiry(record.exp, &body)),
                            Err(e) => {
                                failure = Some(e.to_string());
                                Some(old.to_vec())
                            }
                        }
                    }
                    _ => {
                        failure = Some("unreadable token record".into());
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(unavailable)?;
        if let Some(message) = failure {
            return Err(StoreError::Corrupt(message));
        }
        // Durable before the caller answers: a revoked token stays revoked after a crash.
        self.db.flush_async().await.map_err(unavailable)?;
        Ok(before)
    }

    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        // A full scan of hundreds of thousands of entries must not stall a runtime worker
        // that is serving requests: it runs on the blocking pool (trees are cheap handles).
        let work = [
            (self.nonces.clone(), self.nonce_count.clone()),
            (self.jtis.clone(), self.jti_count.clone()),
            (self.tokens.clone(), self.token_count.clone()),
        ];
        tokio::task::spawn_blocking(move || {
            work.iter().try_fold(0, |removed, (tree, counter)| {
                Ok(removed + Self::sweep_tree(tree, counter, now)?)
            })
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("the sweeper stopped: {e}")))?
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

    #[tokio::test]
    async fn revocation_sticks() {
        let (store, dir) = temp_store();
        let record = TokenRecord {
            client_id: "c".into(),
            tenant: "t".into(),
            scope: "s".into(),
            audience: vec!["a".into()],
            iat: 0,
            exp: 100,
            jti: "j".into(),
            token_type: "DPoP".into(),
            cnf_jkt: Some("k".into()),
            sender_certificate: None,
            revoked: false,
        };
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
}
