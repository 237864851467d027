//! The embedded `sled` backend of the [`SenderStore`]: one database in the data directory,
//! a tree per kind of entry, each value starting with its expiry (8 bytes, big-endian) so
//! the sweeper can judge an entry without decoding it. Not responsible for what a request
//! gets when the store fails (callers fail closed) nor for the restart fence itself (the
//! authority raises it when this store says claims may be lost).
//!
//! # Durability (docs/crash-safety.md)
//! - **Token records and revocations are group-committed to the [journal]**: `put_token`
//!   queues its record for the next commit, which files every record it carries as one
//!   sled value ([token_batches]: one sled insert per commit instead of one per token)
//!   and journals that value; `revoke_token` rewrites the batch holding the record (or,
//!   for a record an earlier version filed on its own, that record) in sled and journals
//!   it. Both return once the commit holding their write has been written to the journal
//!   file *and* `fdatasync`ed. One commit serves every write that arrived while the
//!   previous one ran, so concurrent requests share it instead of paying one each. The
//!   journal covers what sled has not made durable; when it is full, and at the start and
//!   the clean end of a run, a *checkpoint* makes sled itself durable (`Db::flush`, which
//!   only calls `sync_file_range`, plus an `fdatasync` of sled's log file, opened a second
//!   time for that) and starts the journal over. Opening the store replays the journal
//!   into sled first, so what a crash or a power loss took from sled comes back.
//! - **jti claims** are held in memory ([claims]), not in sled: a crash loses them, and
//!   the restart fence covers exactly that (`begin_run` reports `Unclean`); a clean end
//!   writes them to a snapshot file that the next start loads, so a clean restart keeps
//!   refusing every replay by its claim. **Nonces** are only in sled (forgotten at an
//!   unclean restart anyway).
//!
//! # Recovery from I/O errors
//! When sled meets an I/O error (disk full, file system turned read-only) it keeps
//! failing every later call until the database is opened again. So on the first failed
//! call this backend *retires* the open database: every call then fails closed with
//! `Unavailable` (naming the cause and since when), and [`SenderStore::health`] reports it.
//! At most once per `RETRY_EVERY` (triggered by calls and by the housekeeping sweep) it
//! tries, on the blocking pool: wait for the calls still using the old database to
//! finish, drop it (which releases sled's file lock), open the directory again, forget
//! every nonce and prove a durable write. Once that works it serves again and reports
//! [`StoreError::ClaimsLost`] once, as a precaution (the claims are in memory and kept;
//! the nonces were forgotten and the reopened database is judged from scratch). If the
//! database cannot be reopened in this process at all (sled reports corruption or a bug,
//! or the old database is still held after `RELEASE_GIVE_UP`), the health turns
//! [`StoreState::Fatal`](super::health::StoreState::Fatal) and the server exits with
//! [`EXIT_STORE_FAILED`](super::health::EXIT_STORE_FAILED) for its supervisor to start a
//! fresh process.
//!
//! # Sweeping
//! Token batches are queued by [token_batches]'s index, each with the expiry of its
//! longest-lived record, and removed whole once that has passed. jti claims and token
//! records filed one by one are queued in memory with their expiry ([sweep_queue], in
//! expiry order), so a sweep reads only what has expired, not the whole store (a full
//! scan every few seconds cost more than the requests themselves once the store held a
//! replay window's worth of claims). The queue is only a list of places to look: the
//! sweeper still reads each entry's own expiry and removes it with a compare-and-swap,
//! so a stale, duplicated or missing queue entry can delay a removal, never make one
//! early. After a restart (or a reopen) the token queue knows nothing of
//! what is on disk, so the first sweep scans the records once and queues what it finds
//! alive; claims loaded at the start of a run are queued as they are loaded.

use super::claims::{self, ClaimTable, Snapshot};
use super::health::{Cause, HealthTracker, LossReport, StoreHealth};
use super::journal::{self, Journal, Written};
use super::sweep_queue::SweepQueue;
use super::token_batches::{self, BatchIndex};
use super::{
    expiry_of, jti_key, lock, Claim, PreviousShutdown, SenderStore, StoreError, StoreSize, TokenId,
    TokenRecord,
};
use crate::telemetry::events;
use async_trait::async_trait;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const FLUSH_EVERY_MS: u64 = 200;
const RUNNING_MARKER: &[u8] = b"running";
/// Entries handled between two yields of a sweep, so a sweep never holds a runtime worker
/// for long (request latency): ~64 removals of ~10 µs each, under a millisecond.
const SWEEP_CHUNK: usize = 64;
/// The same for claims, which are removed from memory: ~1,000 removals of well under a
/// microsecond each.
const CLAIM_SWEEP_CHUNK: usize = 1024;
/// How often a failed store tries to reopen itself.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How long one recovery attempt waits for the calls still using the failed database.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
/// After this long the failed database is assumed never to be released in this process
/// (something holds it): only a new process can open the store again.
const RELEASE_GIVE_UP: Duration = Duration::from_secs(60);
/// Below this much free space a failing file system is reported as full: sled grows its
/// log by segments of 512 KiB.
const FULL_BELOW_BYTES: u64 = 1 << 20;
/// How long a commit may wait for more writers to join it, counted from its first
/// writer's arrival, while writers arrive faster than commits complete. Each commit is an
/// `fdatasync`, which on a virtual disk costs some 90 µs of CPU (the device notification
/// traps to the host) whether it carries one token record or twenty; at a few thousand
/// tokens a second, gathering for a millisecond shares it among several writers
/// (docs/performance.md, "Session 7"). At low rates, where each commit carries one writer,
/// nobody is held back (only the first commit after a busy spell may wait, once).
const COMMIT_GATHER: Duration = Duration::from_millis(1);

/// One opened database. Calls hold an `Arc` of it for their duration; recovery waits for
/// those to end before dropping it (sled keeps an exclusive lock on its file until then).
struct Open {
    db: sled::Db,
    meta: sled::Tree,
    nonces: sled::Tree,
    /// jti claims written by versions before claims moved to memory ([claims]); read
    /// once at the start of a run and emptied.
    legacy_jtis: sled::Tree,
    /// Token records filed one by one: by versions before [token_batches], and their
    /// revocations. Read until it empties (its records expire like any other).
    tokens: sled::Tree,
    /// Token records filed a commit at a time ([token_batches]).
    batches: sled::Tree,
    /// Which batch holds each token, and the batches in sweeping order.
    index: BatchIndex,
    /// Held while a batch is rewritten (a revocation) or removed (the sweeper), so that
    /// the journal receives a batch's versions in the order sled did.
    batch_writes: Mutex<()>,
    /// sled's log file, opened a second time for `fdatasync`.
    log_file: std::fs::File,
    /// Held by whoever writes the journal or checkpoints (one at a time).
    journal: Mutex<Journal>,
    commit: Mutex<CommitQueue>,
}

/// The journal entries not yet written, the writers waiting for the next commit, and
/// whether a commit task is running.
#[derive(Default)]
struct CommitQueue {
    /// Journal entries already encoded (revocations).
    pending: Vec<u8>,
    /// New token records, filed as batches by the commit.
    records: Vec<token_batches::Pending>,
    waiting: Vec<oneshot::Sender<Result<(), sled::Error>>>,
    /// When the first of `waiting` joined.
    first_joined: Option<Instant>,
    /// How many writers the previous commit answered.
    last_batch: usize,
    flushing: bool,
}

impl CommitQueue {
    /// Until when the next commit waits for more writers: only while writers arrive
    /// faster than commits complete (the previous commit carried more than one), and
    /// never past [`COMMIT_GATHER`] after its first writer joined.
    fn gather_until(&self) -> Option<Instant> {
        match self.first_joined {
            Some(first) if self.last_batch > 1 => Some(first + COMMIT_GATHER),
            _ => None,
        }
    }

    /// Takes the writers, the journal entries and the new records of the next commit.
    fn take_batch(&mut self) -> Taken {
        self.first_joined = None;
        self.last_batch = self.waiting.len();
        Taken {
            waiters: std::mem::take(&mut self.waiting),
            journal: std::mem::take(&mut self.pending),
            records: std::mem::take(&mut self.records),
        }
    }
}

/// What one commit writes and whom it answers.
struct Taken {
    waiters: Vec<oneshot::Sender<Result<(), sled::Error>>>,
    journal: Vec<u8>,
    records: Vec<token_batches::Pending>,
}

/// One entry for the next commit.
enum Entry<'a> {
    /// A put already made in sled, to journal.
    Put(journal::Tree, &'a [u8], &'a [u8]),
    /// A new token record: the commit files it in a batch (sled and journal).
    Record([u8; 32], Vec<u8>),
}

impl Open {
    fn at(dir: &Path) -> Result<Open, sled::Error> {
        let db = sled::Config::new()
            .path(dir)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .mode(sled::Mode::HighThroughput)
            .open()?;
        let log_file = std::fs::File::open(dir.join("db"))?;
        // A database created just now must keep its directory entries across power loss.
        std::fs::File::open(dir)?.sync_all()?;
        let (journal, puts) = Journal::open(dir)?;
        let (legacy_jtis, tokens, batches) = (
            db.open_tree("jti")?,
            db.open_tree("tokens")?,
            db.open_tree(token_batches::TREE)?,
        );
        // What the last run journaled goes back into sled (a put sled kept already is
        // written again, unchanged), then a checkpoint makes it durable there.
        for put in &puts {
            let tree = match put.tree {
                journal::Tree::Jti => &legacy_jtis,
                journal::Tree::Tokens => &tokens,
                journal::Tree::Batches => &batches,
            };
            tree.insert(&put.key[..], &put.value[..])?;
        }
        if !puts.is_empty() {
            tracing::info!(
                event = events::STORE_JOURNAL_REPLAYED,
                entries = puts.len(),
                "the store replayed its journal"
            );
        }
        let open = Open {
            meta: db.open_tree("meta")?,
            nonces: db.open_tree("nonces")?,
            legacy_jtis,
            tokens,
            index: BatchIndex::load(&batches)?,
            batches,
            batch_writes: Mutex::default(),
            db,
            log_file,
            journal: Mutex::new(journal),
            commit: Mutex::default(),
        };
        open.checkpoint()?;
        Ok(open)
    }

    /// Makes sled durable and starts the journal over (see the module doc of [journal]).
    /// Holds the journal for the whole of it, so no batch is written into a cycle that
    /// the checkpoint then discards without sled covering it.
    fn checkpoint(&self) -> Result<(), sled::Error> {
        let mut journal = lock(&self.journal);
        self.flush_durably()?;
        journal.restart()?;
        Ok(())
    }

    /// Files `records` as batches in sled, then writes them and the other entries of
    /// `journal` to the journal (or checkpoints when they do not fit); once that is
    /// durable, the index learns where the records are. Returns how long each part took.
    fn commit_batch(
        &self,
        mut journal: Vec<u8>,
        mut records: Vec<token_batches::Pending>,
    ) -> Result<CommitTimes, sled::Error> {
        let started = Instant::now();
        let mut filed = Vec::new();
        for chunk in token_batches::split(&mut records) {
            let seq = self.index.next_seq();
            let key = token_batches::key(seq);
            let batch = token_batches::encode(chunk);
            Journal::encode(&mut journal, journal::Tree::Batches, &key, &batch);
            filed.push((seq, expiry_of(&batch).unwrap_or(i64::MAX), chunk));
            self.batches.insert(key, batch)?;
        }
        let filing = started.elapsed();
        let (written, journal_write, journal_sync) = {
            let mut file = lock(&self.journal);
            let written = file.write(&mut journal)?;
            (written, file.last_write, file.last_sync)
        };
        let journaled = started.elapsed();
        let mut checkpoint = None;
        if written == Written::Full {
            // Every put of the commit went into sled before it was journaled.
            self.checkpoint()?;
            checkpoint = Some(started.elapsed() - journaled);
        }
        for (seq, max_exp, chunk) in filed {
            self.index
                .filed(seq, max_exp, chunk.iter().map(|(id, _)| *id));
        }
        Ok(CommitTimes {
            total: started.elapsed(),
            filing,
            journal: journaled - filing,
            journal_write,
            journal_sync,
            checkpoint,
        })
    }

    /// Removes batch `seq` if its last record has expired at `now`; returns how many
    /// records went with it.
    fn drop_batch_if_expired(&self, seq: u64, now: i64) -> Result<u64, sled::Error> {
        let _serial = lock(&self.batch_writes);
        let key = token_batches::key(seq);
        let Some(batch) = self.batches.get(key)? else {
            return Ok(0);
        };
        match expiry_of(&batch) {
            Some(max_exp) if max_exp > now => {
                self.index.requeue(max_exp, seq);
                return Ok(0);
            }
            _ => {}
        }
        let ids: Vec<[u8; 32]> = token_batches::entries(&batch)
            .map(|entries| entries.into_iter().map(|(id, _)| id).collect())
            .unwrap_or_default();
        self.batches.remove(key)?;
        self.index.dropped(seq, ids.iter().copied());
        Ok(ids.len() as u64)
    }

    /// Writes sled's log and `fdatasync`s it: every write made before this call is on
    /// stable storage when it returns `Ok`.
    fn flush_durably(&self) -> Result<(), sled::Error> {
        self.db.flush()?;
        self.log_file.sync_data()?;
        Ok(())
    }
}

/// A commit that takes this long is logged with its parts (`authority.store.slowCommit`).
const SLOW_COMMIT: Duration = Duration::from_millis(20);

/// How long a commit's parts took: which one a slow disk or sled holds up.
#[derive(Debug, Clone, Copy)]
struct CommitTimes {
    total: Duration,
    /// Filing the records as batches in sled (`Tree::insert`).
    filing: Duration,
    /// Writing the journal and its `fdatasync`, of which the `pwrite` and the
    /// `fdatasync` themselves (the rest is waiting for the journal's lock).
    journal: Duration,
    journal_write: Duration,
    journal_sync: Duration,
    /// Making sled durable because the journal was full (`Db::flush` and `fdatasync`).
    checkpoint: Option<Duration>,
}

impl CommitTimes {
    fn log_if_slow(&self) {
        if self.total < SLOW_COMMIT {
            return;
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        tracing::info!(
            event = crate::telemetry::events::STORE_SLOW_COMMIT,
            ms = ms(self.total),
            filing_ms = ms(self.filing),
            journal_ms = ms(self.journal),
            journal_write_ms = ms(self.journal_write),
            journal_sync_ms = ms(self.journal_sync),
            checkpoint_ms = self.checkpoint.map(ms),
            "a durable commit took {:.1} ms; every token answer in it waited as long",
            ms(self.total)
        );
    }
}

/// The flushing role of one database, run on the blocking pool. It holds the database
/// weakly between batches: every waiter holds it strongly, so it is there while needed,
/// and once the last batch is answered nothing here keeps sled's file lock.
struct CommitLeader {
    open: Weak<Open>,
    /// The store, to count the commits (`authority_store_commits_total`).
    store: Weak<Inner>,
    done: bool,
}

impl CommitLeader {
    /// Commits until no writer waits; each commit answers the writers queued before it.
    fn run(&mut self) {
        loop {
            let Some(open) = self.open.upgrade() else {
                self.done = true;
                return;
            };
            let gather_until = lock(&open.commit).gather_until();
            if let Some(until) = gather_until {
                // Writers keep joining the queue meanwhile; they wait for this commit.
                std::thread::sleep(until.saturating_duration_since(Instant::now()));
            }
            let Taken {
                waiters,
                journal,
                records,
            } = {
                let mut queue = lock(&open.commit);
                if queue.waiting.is_empty() {
                    queue.flushing = false;
                    self.done = true;
                    return;
                }
                queue.take_batch()
            };
            let result = open.commit_batch(journal, records);
            drop(open);
            if let (Ok(times), Some(store)) = (&result, self.store.upgrade()) {
                store.health.committed(times.total);
                times.log_if_slow();
            }
            let result = result.map(|_| ());
            for waiter in waiters {
                let _ = waiter.send(result.clone());
            }
        }
    }
}

impl Drop for CommitLeader {
    /// If the task never ran (the runtime is shutting down) or panicked, hand the role
    /// back and fail the waiters rather than leave them waiting for ever.
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Some(open) = self.open.upgrade() {
            let mut queue = lock(&open.commit);
            queue.flushing = false;
            queue.first_joined = None;
            for waiter in queue.waiting.drain(..) {
                let _ = waiter.send(Err(sled::Error::ReportableBug(
                    "the store's commit task ended before flushing".into(),
                )));
            }
        }
    }
}

/// Drops a failed database on this (blocking) thread. sled's `Drop` may flush and
/// `unwrap` an fsync; a panic there must not take a recovery attempt with it.
fn drop_quietly(open: Open) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(open)));
}

/// Waits up to `wait` for every other holder of `old` to let go, then drops it.
fn release(old: Arc<Open>, wait: Duration) -> Result<(), Arc<Open>> {
    let deadline = Instant::now() + wait;
    let mut old = old;
    loop {
        match Arc::try_unwrap(old) {
            Ok(open) => {
                drop_quietly(open);
                return Ok(());
            }
            Err(still) if Instant::now() < deadline => {
                old = still;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(still) => return Err(still),
        }
    }
}

/// Recovery bookkeeping of a failed store.
#[derive(Default)]
struct Recovery {
    /// The failed database, until it could be dropped.
    retired: Option<Arc<Open>>,
    /// When it was retired (to give up on releasing it).
    failed_at: Option<Instant>,
    running: bool,
    last_attempt: Option<Instant>,
}

pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    dir: PathBuf,
    /// The open database; `None` while failed (every call then fails closed).
    current: RwLock<Option<Arc<Open>>>,
    recovery: Mutex<Recovery>,
    /// A loss of claims to report once (set when the database was reopened).
    loss: LossReport,
    /// Reopenings ([`SenderStore::losses`]), counted before the reopened database serves.
    losses: AtomicU64,
    health: HealthTracker,
    nonce_count: AtomicU64,
    token_count: AtomicU64,
    /// The jti claims; they outlive a reopened database (they are not in it).
    claims: ClaimTable,
    jti_queue: SweepQueue<[u8; 32]>,
    token_queue: SweepQueue<[u8; 32]>,
    /// The token queue does not know records written before this process opened the store.
    needs_full_scan: AtomicBool,
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
#[doc(hidden)] // public for the fuzz seeds (fuzz/src/seeds.rs), not an API
pub fn encode_record(record: &TokenRecord) -> Result<Vec<u8>, StoreError> {
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
    // Optional tail (user-grant tokens): absent in records of client_credentials tokens,
    // so their encoding is unchanged.
    if record.subject.is_some() || record.family.is_some() {
        put_opt(&mut out, record.subject.as_deref())?;
        put_opt(&mut out, record.family.as_deref())?;
    }
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
        let (subject, family) = if r.0.is_empty() {
            (None, None)
        } else {
            (r.optional()?, r.optional()?)
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
            subject,
            family,
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
) -> Result<bool, sled::Error> {
    let Some(value) = tree.get(key)? else {
        return Ok(false);
    };
    if expiry_of(&value).is_some_and(|exp| exp > now) {
        return Ok(false);
    }
    let removed = tree
        .compare_and_swap(key, Some(&value), None as Option<&[u8]>)?
        .is_ok();
    if removed {
        counter.fetch_sub(1, Ordering::Relaxed);
    }
    Ok(removed)
}

/// Sweeps every entry of `tree` (chunk by chunk, yielding in between); queues the live
/// ones with 32-byte keys on `queue` when given.
async fn sweep_full(
    tree: &sled::Tree,
    counter: &AtomicU64,
    queue: Option<&SweepQueue<[u8; 32]>>,
    now: i64,
) -> Result<u64, sled::Error> {
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
            chunk.push(entry?);
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
        queue.extend(live);
    }
    Ok(removed)
}

/// Sweeps the token records the queue says are due.
async fn sweep_queued(
    tree: &sled::Tree,
    counter: &AtomicU64,
    queue: &SweepQueue<[u8; 32]>,
    now: i64,
) -> Result<u64, sled::Error> {
    let mut removed = 0;
    loop {
        let due = queue.take_due(now, SWEEP_CHUNK);
        for (_, key) in &due {
            if remove_if_expired(tree, counter, key, now)? {
                removed += 1;
            }
        }
        if due.len() < SWEEP_CHUNK {
            return Ok(removed);
        }
        tokio::task::yield_now().await;
    }
}

/// Removes the batches the index says are due (whole: every record of one has expired).
async fn sweep_batches(open: &Open, now: i64) -> Result<u64, sled::Error> {
    let mut removed = 0;
    loop {
        let due = open.index.take_due(now, SWEEP_CHUNK);
        for (_, seq) in &due {
            removed += open.drop_batch_if_expired(*seq, now)?;
        }
        if due.len() < SWEEP_CHUNK {
            return Ok(removed);
        }
        tokio::task::yield_now().await;
    }
}

impl Inner {
    /// Revokes a record kept in batch `seq`: the batch is rewritten with the record
    /// revoked, in sled and in the journal, durably before this returns.
    async fn revoke_in_batch(
        self: &Arc<Self>,
        open: &Arc<Open>,
        seq: u64,
        id: TokenId,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let fail = |e| self.fail(open, e);
        let (before, queued) = {
            // Sled and the journal must see this batch's versions in the same order.
            let _serial = lock(&open.batch_writes);
            let key = token_batches::key(seq);
            let Some(batch) = open.batches.get(key).map_err(fail)? else {
                return Ok(None); // swept meanwhile: it had expired
            };
            let Some(old) = token_batches::find(&batch, &id.0)? else {
                return Ok(None);
            };
            let mut record = decode_record(old)?;
            let before = record.clone();
            record.revoked = true;
            let Some(rewritten) = token_batches::replace(&batch, &id.0, &encode_record(&record)?)?
            else {
                return Ok(None);
            };
            open.batches.insert(key, &rewritten[..]).map_err(fail)?;
            let queued = self.enqueue(open, Entry::Put(journal::Tree::Batches, &key, &rewritten));
            (before, queued)
        };
        // Durable before the caller answers: a revoked token stays revoked after a crash.
        self.durable(open, queued).await?;
        Ok(Some(before))
    }

    /// The open database, or `Unavailable` (naming the cause and since when) while failed;
    /// a failed store also tries to reopen itself from here when an attempt is due.
    fn current(self: &Arc<Self>) -> Result<Arc<Open>, StoreError> {
        if let Some(open) = self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
        {
            return Ok(open.clone());
        }
        self.kick_recovery();
        Err(StoreError::Unavailable(
            self.health
                .describe()
                .unwrap_or_else(|| "the store is being reopened".into()),
        ))
    }

    /// A call on `open` failed. An I/O error leaves sled failing until the database is
    /// reopened, so the database is retired (if it is still the current one) and recovery
    /// is started; the caller gets `Unavailable`.
    fn fail(self: &Arc<Self>, open: &Arc<Open>, error: sled::Error) -> StoreError {
        if let sled::Error::CollectionNotFound(_) = error {
            return StoreError::Unavailable(error.to_string());
        }
        let cause = self.classify(&error);
        let retired = {
            let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|c| Arc::ptr_eq(c, open)) {
                current.take()
            } else {
                None
            }
        };
        if let Some(old) = retired {
            self.health.failed(cause, error.to_string());
            tracing::error!(
                event = events::STORE_FAILED,
                cause = cause.label(),
                error = %error,
                "the store failed: every request that needs it is refused until it can be reopened"
            );
            let mut recovery = lock(&self.recovery);
            recovery.retired = Some(old);
            recovery.failed_at = Some(Instant::now());
        }
        self.kick_recovery();
        StoreError::Unavailable(format!("{}: {error}", cause.label()))
    }

    /// What the failure is, in the operator's terms: from the errno when sled kept it,
    /// else from the state of the file system the store lives on.
    fn classify(&self, error: &sled::Error) -> Cause {
        let sled::Error::Io(io) = error else {
            return Cause::Other;
        };
        match Cause::of_io(io) {
            Cause::Io => {}
            known => return known,
        }
        // sled hands out copies of its first error, which keep the kind and the text but
        // not the errno: look at the file system itself.
        match rustix::fs::statvfs(&self.dir) {
            Ok(fs) if fs.f_flag.contains(rustix::fs::StatVfsMountFlags::RDONLY) => Cause::ReadOnly,
            Ok(fs) if fs.f_bavail.saturating_mul(fs.f_frsize) < FULL_BELOW_BYTES => {
                Cause::StorageFull
            }
            _ => Cause::Io,
        }
    }

    /// Starts a recovery attempt on the blocking pool when one is due.
    fn kick_recovery(self: &Arc<Self>) {
        {
            let mut recovery = lock(&self.recovery);
            if recovery.running
                || recovery
                    .last_attempt
                    .is_some_and(|t| t.elapsed() < RETRY_EVERY)
            {
                return;
            }
            recovery.running = true;
            recovery.last_attempt = Some(Instant::now());
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            lock(&self.recovery).running = false;
            return;
        };
        let inner = self.clone();
        runtime.spawn_blocking(move || {
            let attempt =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| inner.recover()));
            if attempt.is_err() {
                inner
                    .health
                    .fatal(Cause::Other, "reopening the store panicked");
            }
            lock(&inner.recovery).running = false;
        });
    }

    /// One recovery attempt (blocking): release the failed database, open the directory
    /// again, forget every nonce, prove a durable write, then serve again and report the
    /// possible loss of claims once.
    fn recover(&self) {
        if self
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
        {
            return;
        }
        let retired = lock(&self.recovery).retired.take();
        if let Some(old) = retired {
            if let Err(old) = release(old, RELEASE_WAIT) {
                let mut recovery = lock(&self.recovery);
                recovery.retired = Some(old);
                if recovery
                    .failed_at
                    .is_some_and(|t| t.elapsed() >= RELEASE_GIVE_UP)
                {
                    self.health.fatal(
                        Cause::Other,
                        "the failed database is still held after 60 s; only a new process can reopen it",
                    );
                }
                return;
            }
        }
        let open = match Open::at(&self.dir) {
            Ok(open) => open,
            Err(e @ sled::Error::Io(_)) => {
                // Still full, still read-only, or the old lock not yet gone: retry later.
                self.health
                    .failed(self.classify(&e), format!("reopening: {e}"));
                return;
            }
            Err(e) => {
                self.health
                    .fatal(Cause::Other, format!("the store cannot be reopened: {e}"));
                tracing::error!(event = events::STORE_FAILED, error = %e, "the store cannot be reopened in this process");
                return;
            }
        };
        // Nonces minted before the failure go (the fence needs nonces minted after it);
        // then a durable write proves the cause is gone.
        let proven = (|| {
            open.nonces.clear()?;
            open.meta
                .insert("probe", &crate::clock::unix_now().to_be_bytes()[..])?;
            open.flush_durably()
        })();
        if let Err(e) = proven {
            self.health
                .failed(self.classify(&e), format!("reopened, but: {e}"));
            drop_quietly(open);
            return;
        }
        self.nonce_count.store(0, Ordering::Relaxed);
        self.token_count
            .store(open.tokens.len() as u64, Ordering::Relaxed);
        self.needs_full_scan.store(true, Ordering::Release);
        let since = self.health.describe().unwrap_or_default();
        self.loss.set(format!(
            "the store was reopened after an I/O error ({since}); the fence goes up as a precaution (claims are in memory and kept, nonces were forgotten)"
        ));
        self.losses.fetch_add(1, Ordering::AcqRel);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(open));
        lock(&self.recovery).failed_at = None;
        self.health.claims_lost();
        self.health.reopened();
        self.health.ok();
        tracing::warn!(
            event = events::STORE_REOPENED,
            "the store was reopened and serves again; it reports possibly lost replay claims once (restart fence)"
        );
    }

    /// Loads the claims an earlier run left: the snapshot of its clean end, and any
    /// claims an earlier version kept in sled (that tree is emptied: from now on the
    /// snapshot carries them). Returns `false` when a snapshot was there but unreadable.
    async fn load_claims(self: &Arc<Self>, open: &Arc<Open>) -> Result<bool, StoreError> {
        let dir = self.dir.clone();
        let snapshot = self
            .blocking("reading the jti claims snapshot", move || {
                claims::read_snapshot(&dir)
            })
            .await?;
        let (mut found, readable) = match snapshot {
            Snapshot::Absent => (Vec::new(), true),
            Snapshot::Read(claims) => (claims, true),
            Snapshot::Damaged(why) => {
                tracing::warn!(
                    event = events::STORE_CLAIMS_SNAPSHOT_DAMAGED,
                    reason = %why,
                    "the jti claims snapshot of the last clean shutdown is damaged; the restart fence covers the claims it held"
                );
                (Vec::new(), false)
            }
        };
        for entry in open.legacy_jtis.iter() {
            let (key, value) = entry.map_err(|e| self.fail(open, e))?;
            if let (Ok(key), Some(exp)) = (<[u8; 32]>::try_from(key.as_ref()), expiry_of(&value)) {
                found.push((key, exp));
            }
        }
        open.legacy_jtis.clear().map_err(|e| self.fail(open, e))?;
        self.jti_queue
            .extend(found.iter().map(|&(key, exp)| (exp, key)));
        self.claims.load(found);
        Ok(readable)
    }

    /// Runs file work of the claims snapshot on the blocking pool; `what` names it in the
    /// error.
    async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        match tokio::task::spawn_blocking(work).await {
            Ok(Ok(done)) => Ok(done),
            Ok(Err(e)) => Err(StoreError::Unavailable(format!("{what}: {e}"))),
            Err(_) => Err(StoreError::Unavailable(format!("{what}: the task ended"))),
        }
    }

    /// Removes the claims the queue says are due (and only those still expired: a key
    /// claimed again after its first expiry keeps its new claim).
    async fn sweep_claims(&self, now: i64) -> u64 {
        let mut removed = 0;
        loop {
            let due = self.jti_queue.take_due(now, CLAIM_SWEEP_CHUNK);
            for (_, key) in &due {
                if self.claims.remove_if_expired(key, now) {
                    removed += 1;
                }
            }
            if due.len() < CLAIM_SWEEP_CHUNK {
                return removed;
            }
            tokio::task::yield_now().await;
        }
    }

    /// Journals an entry and waits until the commit holding it (and every entry queued
    /// before it) is durable (group commit: one write and `fdatasync` for all writers that
    /// queued while the previous commit ran).
    async fn commit(
        self: &Arc<Self>,
        open: &Arc<Open>,
        entry: Entry<'_>,
    ) -> Result<(), StoreError> {
        let queued = self.enqueue(open, entry);
        self.durable(open, queued).await
    }

    /// Queues an entry for the next commit (starting a commit task if none runs); the
    /// receiver answers once it is durable. Never waits: callable under a lock.
    fn enqueue(
        self: &Arc<Self>,
        open: &Arc<Open>,
        entry: Entry<'_>,
    ) -> oneshot::Receiver<Result<(), sled::Error>> {
        let (tx, rx) = oneshot::channel();
        let lead = {
            let mut queue = lock(&open.commit);
            match entry {
                Entry::Put(tree, key, value) => {
                    Journal::encode(&mut queue.pending, tree, key, value)
                }
                Entry::Record(id, record) => queue.records.push((id, record)),
            }
            queue.first_joined.get_or_insert_with(Instant::now);
            queue.waiting.push(tx);
            !std::mem::replace(&mut queue.flushing, true)
        };
        if lead {
            let mut leader = CommitLeader {
                open: Arc::downgrade(open),
                store: Arc::downgrade(self),
                done: false,
            };
            tokio::task::spawn_blocking(move || leader.run());
        }
        rx
    }

    /// Waits for the commit that carries an [`Inner::enqueue`]d entry.
    async fn durable(
        self: &Arc<Self>,
        open: &Arc<Open>,
        queued: oneshot::Receiver<Result<(), sled::Error>>,
    ) -> Result<(), StoreError> {
        match queued.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(open, e)),
            Err(_) => Err(StoreError::Unavailable(
                "the store's commit task ended".into(),
            )),
        }
    }

    /// A checkpoint on the blocking pool: everything written to sled so far is durable
    /// when it returns `Ok` (the start and the clean end of a run).
    async fn checkpoint(self: &Arc<Self>, open: &Arc<Open>) -> Result<(), StoreError> {
        let target = open.clone();
        match tokio::task::spawn_blocking(move || target.checkpoint()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail(open, e)),
            Err(_) => Err(StoreError::Unavailable(
                "the store's checkpoint task ended".into(),
            )),
        }
    }
}

impl SledStore {
    /// Opens (creating if needed) the store under `dir`.
    pub fn open(dir: &Path) -> Result<SledStore, StoreError> {
        let open = Open::at(dir).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let inner = Inner {
            dir: dir.to_path_buf(),
            nonce_count: AtomicU64::new(open.nonces.len() as u64),
            token_count: AtomicU64::new(open.tokens.len() as u64),
            current: RwLock::new(Some(Arc::new(open))),
            recovery: Mutex::default(),
            loss: LossReport::default(),
            losses: AtomicU64::new(0),
            health: HealthTracker::default(),
            claims: ClaimTable::default(),
            jti_queue: SweepQueue::default(),
            token_queue: SweepQueue::default(),
            needs_full_scan: AtomicBool::new(true),
        };
        Ok(SledStore {
            inner: Arc::new(inner),
        })
    }

    /// Entries waiting in the sweep queues (for tests and diagnostics): claims, records
    /// filed one by one, and batches.
    pub fn queued(&self) -> usize {
        self.inner.jti_queue.len()
            + self.inner.token_queue.len()
            + self.open_now().map_or(0, |open| open.index.queued())
    }

    /// The open database, if the store is not failed (no recovery attempt from here).
    fn open_now(&self) -> Option<Arc<Open>> {
        self.inner
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    #[cfg(test)]
    fn open_db(&self) -> Arc<Open> {
        self.inner
            .current
            .read()
            .unwrap()
            .clone()
            .expect("the store is open")
    }
}

#[async_trait]
impl SenderStore for SledStore {
    async fn begin_run(&self) -> Result<PreviousShutdown, StoreError> {
        let inner = &self.inner;
        let open = inner.current()?;
        let fail = |e| inner.fail(&open, e);
        let mut previous = match open.meta.get("state").map_err(fail)? {
            None => PreviousShutdown::FirstStart,
            Some(v) if v.as_ref() == RUNNING_MARKER => PreviousShutdown::Unclean,
            Some(_) => PreviousShutdown::Clean,
        };
        if !inner.load_claims(&open).await? {
            // A clean end whose claims cannot be read is, for replay protection, a crash.
            previous = PreviousShutdown::Unclean;
        }
        if previous == PreviousShutdown::Unclean {
            open.nonces.clear().map_err(fail)?;
            inner.nonce_count.store(0, Ordering::Relaxed);
        }
        open.meta.insert("state", RUNNING_MARKER).map_err(fail)?;
        inner.checkpoint(&open).await?;
        // Only now: until the marker is durable, a crash must still find the snapshot.
        let dir = inner.dir.clone();
        inner
            .blocking("removing the jti claims snapshot", move || {
                claims::remove_snapshot(&dir)
            })
            .await?;
        Ok(previous)
    }

    async fn end_run(&self) -> Result<(), StoreError> {
        let inner = &self.inner;
        let open = inner.current()?;
        // Everything first, then the marker: a crash between the two is an unclean end.
        inner.checkpoint(&open).await?;
        let (dir, held) = (inner.dir.clone(), inner.claims.all());
        inner
            .blocking("writing the jti claims snapshot", move || {
                claims::write_snapshot(&dir, &held)
            })
            .await?;
        open.meta
            .insert("state", &b"clean"[..])
            .map_err(|e| inner.fail(&open, e))?;
        inner.checkpoint(&open).await
    }

    async fn put_nonce(&self, nonce: &str, expires_at: i64) -> Result<(), StoreError> {
        let open = self.inner.current()?;
        let previous = open
            .nonces
            .insert(nonce.as_bytes(), &expires_at.to_be_bytes()[..])
            .map_err(|e| self.inner.fail(&open, e))?;
        if previous.is_none() {
            self.inner.nonce_count.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    async fn nonce_is_valid(&self, nonce: &str, now: i64) -> Result<bool, StoreError> {
        self.inner.loss.take()?;
        let open = self.inner.current()?;
        Ok(open
            .nonces
            .get(nonce.as_bytes())
            .map_err(|e| self.inner.fail(&open, e))?
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
        let inner = &self.inner;
        inner.loss.take()?;
        // The claims are in memory, but a failed store still refuses: no token could be
        // filed for the request anyway, and the caller fails closed the same way.
        inner.current()?;
        let key = jti_key(jkt, jti);
        let claim = inner.claims.claim(key, expires_at, now);
        if claim == Claim::Fresh {
            inner.jti_queue.push(expires_at, key);
        }
        Ok(claim)
    }

    /// Durable before it returns (group commit), so a token answered 200 survives a crash.
    async fn put_token(&self, id: TokenId, record: &TokenRecord) -> Result<(), StoreError> {
        let inner = &self.inner;
        let open = inner.current()?;
        let value = encode_record(record)?;
        // The commit files it in sled, in a batch with the records of the same commit.
        inner.commit(&open, Entry::Record(id.0, value)).await
    }

    async fn get_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let open = self.inner.current()?;
        if let Some(seq) = open.index.batch_of(&id.0) {
            let batch = open
                .batches
                .get(token_batches::key(seq))
                .map_err(|e| self.inner.fail(&open, e))?;
            if let Some(record) = batch
                .as_deref()
                .map(|batch| token_batches::find(batch, &id.0))
                .transpose()?
                .flatten()
            {
                return decode_record(record).map(Some);
            }
        }
        match open
            .tokens
            .get(id.0)
            .map_err(|e| self.inner.fail(&open, e))?
        {
            None => Ok(None),
            Some(value) => decode_record(&value).map(Some),
        }
    }

    async fn revoke_token(&self, id: TokenId) -> Result<Option<TokenRecord>, StoreError> {
        let inner = &self.inner;
        let open = inner.current()?;
        if let Some(seq) = open.index.batch_of(&id.0) {
            return inner.revoke_in_batch(&open, seq, id).await;
        }
        // A record filed one by one (by an earlier version).
        let mut before = None;
        let mut after = None;
        let mut failure = None;
        open.tokens
            .fetch_and_update(id.0, |old| {
                let old = old?;
                match decode_record(old) {
                    Ok(mut record) => {
                        before = Some(record.clone());
                        record.revoked = true;
                        match encode_record(&record) {
                            Ok(value) => {
                                after = Some(value.clone());
                                Some(value)
                            }
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
            .map_err(|e| inner.fail(&open, e))?;
        if let Some(message) = failure {
            return Err(StoreError::Corrupt(message));
        }
        // Durable before the caller answers: a revoked token stays revoked after a crash.
        if let Some(value) = after {
            inner
                .commit(&open, Entry::Put(journal::Tree::Tokens, &id.0, &value))
                .await?;
        }
        Ok(before)
    }

    async fn live_tokens(&self, now: i64) -> Result<Vec<(TokenId, TokenRecord)>, StoreError> {
        let open = self.inner.current()?;
        let mut live = Vec::new();
        for entry in open.batches.iter() {
            let (key, batch) = entry.map_err(|e| self.inner.fail(&open, e))?;
            let seq = key.as_ref().try_into().ok().map(u64::from_be_bytes);
            let Ok(records) = token_batches::entries(&batch) else {
                continue; // logged when the index was loaded; its tokens are unknown
            };
            for (id, record) in records {
                // The batch the index names is the one that counts for an id.
                if seq.is_none() || open.index.batch_of(&id) != seq {
                    continue;
                }
                let record = decode_record(record)?;
                if record.exp > now {
                    live.push((TokenId(id), record));
                }
            }
        }
        for entry in open.tokens.iter() {
            let (key, value) = entry.map_err(|e| self.inner.fail(&open, e))?;
            let Ok(id) = <[u8; 32]>::try_from(key.as_ref()) else {
                continue;
            };
            let record = decode_record(&value)?;
            if record.exp > now {
                live.push((TokenId(id), record));
            }
        }
        Ok(live)
    }

    async fn sweep(&self, now: i64) -> Result<u64, StoreError> {
        let inner = &self.inner;
        // While failed, this is also what retries the reopening when no request arrives.
        let open = inner.current()?;
        let fail = |e| inner.fail(&open, e);
        // Nonces: one every few minutes, a full scan costs nothing.
        let mut removed = sweep_full(&open.nonces, &inner.nonce_count, None, now)
            .await
            .map_err(fail)?;
        if inner.needs_full_scan.swap(false, Ordering::AcqRel) {
            removed += sweep_full(
                &open.tokens,
                &inner.token_count,
                Some(&inner.token_queue),
                now,
            )
            .await
            .map_err(fail)?;
        }
        removed += inner.sweep_claims(now).await;
        removed += sweep_queued(&open.tokens, &inner.token_count, &inner.token_queue, now)
            .await
            .map_err(fail)?;
        removed += sweep_batches(&open, now).await.map_err(fail)?;
        Ok(removed)
    }

    fn losses(&self) -> u64 {
        self.inner.losses.load(Ordering::Acquire)
    }

    fn size(&self) -> StoreSize {
        StoreSize {
            nonces: self.inner.nonce_count.load(Ordering::Relaxed),
            jti_claims: self.inner.claims.len() as u64,
            tokens: self.inner.token_count.load(Ordering::Relaxed)
                + self.open_now().map_or(0, |open| open.index.tokens() as u64),
        }
    }

    async fn probe(&self) -> Result<(), StoreError> {
        let open = self.inner.current()?;
        let fail = |e| self.inner.fail(&open, e);
        let stamp = crate::clock::unix_now().to_be_bytes();
        open.meta.insert("probe", &stamp[..]).map_err(fail)?;
        match open.meta.get("probe").map_err(fail)? {
            Some(v) if v.as_ref() == stamp => Ok(()),
            _ => Err(StoreError::Unavailable(
                "probe read back a different value".into(),
            )),
        }
    }

    fn health(&self) -> StoreHealth {
        self.inner.health.snapshot()
    }

    fn commit_seconds(&self) -> Option<prometheus_client::metrics::histogram::Histogram> {
        Some(self.inner.health.commit_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store() -> (SledStore, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("sealkit-sled-{}", crate::secret::generate()));
        (SledStore::open(&dir).unwrap(), dir)
    }

    /// Opens a store this test dropped a moment ago. sled releases its file lock when
    /// the last handle of the dropped database goes, which under a loaded test run was
    /// seen to lag the `drop` ("could not acquire lock", 2 runs in ~15); a restarted
    /// process never meets this, so the test waits for the lock as a supervisor's
    /// restart would, up to 10 s.
    fn reopen(dir: &Path) -> SledStore {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match SledStore::open(dir) {
                Ok(store) => return store,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => panic!("reopening {}: {e}", dir.display()),
            }
        }
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
        store.open_db().db.flush().unwrap();
        drop(store); // no end_run: as if killed
        let store = reopen(&dir);
        assert_eq!(store.begin_run().await.unwrap(), PreviousShutdown::Unclean);
        assert!(!store.nonce_is_valid("n1", 10).await.unwrap());
        store.end_run().await.unwrap();
        drop(store);
        let store = reopen(&dir);
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
            subject: None,
            family: None,
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

    /// Tokens issued concurrently share batches; revoking some of them, concurrently,
    /// leaves the others as they were, and after a power loss (sled's writes since the
    /// last checkpoint gone, the journal kept) every revocation is still there: the
    /// journal got each batch's versions in the order sled did.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn revocations_in_shared_batches_survive_a_power_loss() {
        let (store, dir) = temp_store();
        let store = Arc::new(store);
        store.begin_run().await.unwrap();
        let ids: Vec<TokenId> = (0..64).map(|i| TokenId::of(&format!("t{i}"))).collect();
        let puts: Vec<_> = ids
            .iter()
            .map(|&id| {
                let s = store.clone();
                tokio::spawn(async move { s.put_token(id, &record(100)).await })
            })
            .collect();
        for put in puts {
            put.await.unwrap().unwrap();
        }
        let db = store.open_db();
        assert!(
            db.batches.len() < ids.len(),
            "concurrent writers share batches ({} batches for {} records)",
            db.batches.len(),
            ids.len()
        );
        drop(db);
        store.end_run().await.unwrap();
        let after_power_loss = dir.with_extension("after-power-loss");
        copy_dir(&dir, &after_power_loss);

        // Every other token revoked, all at once.
        let revocations: Vec<_> = ids
            .iter()
            .step_by(2)
            .map(|&id| {
                let s = store.clone();
                tokio::spawn(async move { s.revoke_token(id).await })
            })
            .collect();
        for revocation in revocations {
            assert_eq!(revocation.await.unwrap().unwrap(), Some(record(100)));
        }
        drop(store);
        std::fs::copy(
            dir.join(journal::FILE_NAME),
            after_power_loss.join(journal::FILE_NAME),
        )
        .unwrap();

        for opened in [&dir, &after_power_loss] {
            let store = reopen(opened);
            for (i, id) in ids.iter().enumerate() {
                let got = store.get_token(*id).await.unwrap().expect("still known");
                assert_eq!(got.revoked, i % 2 == 0, "token {i} in {}", opened.display());
            }
            assert_eq!(store.size().tokens, ids.len() as u64);
            assert_eq!(store.live_tokens(0).await.unwrap().len(), ids.len());
        }
        std::fs::remove_dir_all(dir).ok();
        std::fs::remove_dir_all(after_power_loss).ok();
    }

    /// A long-lived record (a refresh-token family) issued in the same commit as short-lived
    /// tokens does not keep them: the commit files them in separate batches by expiry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn short_lived_records_are_not_kept_by_a_long_lived_one() {
        let (store, dir) = temp_store();
        let store = Arc::new(store);
        let puts: Vec<_> = (0..40)
            .map(|i| {
                let s = store.clone();
                let exp = if i % 10 == 0 { 1_000_000 } else { 100 };
                tokio::spawn(async move {
                    s.put_token(TokenId::of(&format!("t{i}")), &record(exp))
                        .await
                })
            })
            .collect();
        for put in puts {
            put.await.unwrap().unwrap();
        }
        assert_eq!(store.size().tokens, 40);
        assert_eq!(
            store
                .sweep(100 + token_batches::EXPIRY_SPREAD)
                .await
                .unwrap(),
            36
        );
        assert_eq!(store.size().tokens, 4);
        assert!(store.get_token(TokenId::of("t10")).await.unwrap().is_some());
        assert!(store.get_token(TokenId::of("t11")).await.unwrap().is_none());
        std::fs::remove_dir_all(dir).ok();
    }

    /// A batch goes when its last record has expired, not before: a short-lived record
    /// that shares it with a longer-lived one is still readable (callers judge `exp`).
    #[tokio::test]
    async fn a_batch_is_swept_when_its_last_record_has_expired() {
        let (store, dir) = temp_store();
        let db = store.open_db();
        let seq = db.index.next_seq();
        let short = (TokenId::of("short").0, encode_record(&record(100)).unwrap());
        let long = (TokenId::of("long").0, encode_record(&record(300)).unwrap());
        db.batches
            .insert(
                token_batches::key(seq),
                token_batches::encode(&[short.clone(), long.clone()]),
            )
            .unwrap();
        db.index.filed(seq, 300, [short.0, long.0].into_iter());
        drop(db);
        assert_eq!(store.sweep(200).await.unwrap(), 0);
        assert_eq!(
            store.get_token(TokenId(short.0)).await.unwrap(),
            Some(record(100))
        );
        assert_eq!(store.sweep(300).await.unwrap(), 2);
        assert!(store.get_token(TokenId(long.0)).await.unwrap().is_none());
        assert_eq!(store.size().tokens, 0);
        assert_eq!(store.open_db().batches.len(), 0);
        std::fs::remove_dir_all(dir).ok();
    }

    fn copy_dir(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            let target = to.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                copy_dir(&entry.path(), &target);
            } else {
                std::fs::copy(entry.path(), target).unwrap();
            }
        }
    }

    /// A power loss leaves sled's files as of its last checkpoint and the journal as its
    /// last commit flushed it: opening the store puts back every answered token and
    /// revocation made since the checkpoint (claims are not in sled: see `claims`).
    #[tokio::test]
    async fn the_journal_restores_what_sled_had_not_made_durable() {
        let (store, dir) = temp_store();
        store.begin_run().await.unwrap();
        let early = TokenId::of("early");
        store.put_token(early, &record(100)).await.unwrap();
        store.end_run().await.unwrap();
        drop(store);
        // The disk as sled left it at that checkpoint.
        let after_power_loss = dir.with_extension("after-power-loss");
        copy_dir(&dir, &after_power_loss);

        let store = reopen(&dir);
        store.begin_run().await.unwrap();
        let late = TokenId::of("late");
        store.put_token(late, &record(100)).await.unwrap();
        assert!(store.revoke_token(early).await.unwrap().is_some());
        drop(store);
        // sled's writes since the checkpoint are lost; the journal's commits are not.
        std::fs::copy(
            dir.join(journal::FILE_NAME),
            after_power_loss.join(journal::FILE_NAME),
        )
        .unwrap();

        let store = reopen(&after_power_loss);
        assert_eq!(store.get_token(late).await.unwrap(), Some(record(100)));
        assert!(store.get_token(early).await.unwrap().unwrap().revoked);
        assert_eq!(store.size().tokens, 2);
        drop(store);
        // Replayed once: the checkpoint after the replay emptied the journal.
        let (_, puts) = Journal::open(&after_power_loss).unwrap();
        assert!(puts.is_empty());
        std::fs::remove_dir_all(dir).ok();
        std::fs::remove_dir_all(after_power_loss).ok();
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
            .open_db()
            .tokens
            .insert(id.0, with_expiry(r.exp, &serde_json::to_vec(&r).unwrap()))
            .unwrap();
        assert_eq!(store.revoke_token(id).await.unwrap(), Some(r));
        assert!(store.get_token(id).await.unwrap().unwrap().revoked);
        std::fs::remove_dir_all(dir).ok();
    }

    /// sled 0.34's flush_async can deadlock when awaited concurrently (spacejam/sled#1308).
    #[test]
    fn a_commit_waits_for_more_writers_only_while_they_come_faster_than_commits() {
        let first = Instant::now();
        let mut queue = CommitQueue {
            first_joined: Some(first),
            last_batch: 1,
            ..CommitQueue::default()
        };
        assert_eq!(
            queue.gather_until(),
            None,
            "a writer alone is not held back"
        );
        queue.last_batch = 3;
        assert_eq!(queue.gather_until(), Some(first + COMMIT_GATHER));
        queue.waiting = (0..5).map(|_| oneshot::channel().0).collect();
        let waiters = queue.take_batch().waiters;
        assert_eq!((waiters.len(), queue.last_batch), (5, 5));
        assert_eq!(
            queue.gather_until(),
            None,
            "nobody waits: nothing to gather"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_share_commits_and_a_lone_writer_commits_alone() {
        let (store, dir) = temp_store();
        let store = std::sync::Arc::new(store);
        for i in 0..8 {
            store
                .put_token(TokenId::of(&format!("alone{i}")), &record(100))
                .await
                .unwrap();
        }
        assert_eq!(store.health().commits, 8, "one commit per lone writer");
        // Each commit is timed, and `/metrics` renders the durations.
        let metrics =
            crate::telemetry::metrics::Metrics::with_store_commits(store.commit_seconds());
        let rendered = metrics.render();
        assert!(
            rendered.contains("authority_store_commit_seconds_count 8"),
            "{rendered}"
        );
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let s = store.clone();
                tokio::spawn(async move {
                    s.put_token(TokenId::of(&format!("t{i}")), &record(100))
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let shared = store.health().commits - 8;
        assert!(
            (1..=8).contains(&shared),
            "64 concurrent writers took {shared} commits"
        );
        std::fs::remove_dir_all(dir).ok();
    }

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

    /// What an earlier process left is swept too: batches are queued as the index is
    /// loaded; records filed one by one (by an earlier version) are not in any queue, so
    /// the first sweep after opening scans them, removes the expired ones and queues the
    /// rest. Claims come back from the clean end's snapshot, queued as they are loaded.
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
        for (token, exp) in [("legacy-old", 100), ("legacy-live", 500)] {
            store
                .open_db()
                .tokens
                .insert(TokenId::of(token).0, encode_record(&record(exp)).unwrap())
                .unwrap();
        }
        store.end_run().await.unwrap();
        drop(store);
        let store = reopen(&dir);
        assert_eq!(store.begin_run().await.unwrap(), PreviousShutdown::Clean);
        // Removed once the run is marked running: a crash from now on is an unclean end.
        assert!(!dir.join(claims::FILE_NAME).exists());
        // The claims came back from the snapshot, queued, and the batch with the index;
        // the records filed one by one wait for the first sweep's scan.
        assert_eq!(store.size().jti_claims, 2);
        assert_eq!(store.size().tokens, 3);
        assert_eq!(store.queued(), 3);
        assert_eq!(store.sweep(200).await.unwrap(), 3);
        assert_eq!(store.size().jti_claims, 1);
        assert_eq!(store.size().tokens, 1);
        assert!(store
            .get_token(TokenId::of("t-old"))
            .await
            .unwrap()
            .is_none());
        assert!(store
            .get_token(TokenId::of("legacy-live"))
            .await
            .unwrap()
            .is_some());
        assert_eq!(store.queued(), 2);
        assert_eq!(
            store.claim_jti("k", "live", 900, 200).await.unwrap(),
            Claim::Replayed
        );
        assert_eq!(store.sweep(500).await.unwrap(), 2);
        assert_eq!(store.size().jti_claims, 0);
        assert_eq!(store.size().tokens, 0);
        std::fs::remove_dir_all(dir).ok();
    }

    /// A clean end whose claims snapshot is damaged counts as an unclean one (the fence
    /// covers the claims it held), and nonces go as after a crash.
    #[tokio::test]
    async fn a_damaged_claims_snapshot_raises_the_fence() {
        let (store, dir) = temp_store();
        store.begin_run().await.unwrap();
        store.claim_jti("k", "j", i64::MAX, 0).await.unwrap();
        store.put_nonce("n", i64::MAX).await.unwrap();
        store.end_run().await.unwrap();
        drop(store);
        let snapshot = dir.join(claims::FILE_NAME);
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&snapshot, bytes).unwrap();

        let store = reopen(&dir);
        assert_eq!(store.begin_run().await.unwrap(), PreviousShutdown::Unclean);
        assert!(!store.nonce_is_valid("n", 10).await.unwrap());
        assert_eq!(store.size().jti_claims, 0);
        std::fs::remove_dir_all(dir).ok();
    }

    /// Claims an earlier version kept in sled are loaded into memory at the start of a run
    /// and leave sled; the clean end after it carries them in the snapshot.
    #[tokio::test]
    async fn claims_kept_in_sled_by_an_earlier_version_are_carried_over() {
        let (store, dir) = temp_store();
        let key = jti_key("k", "old-version");
        store
            .open_db()
            .legacy_jtis
            .insert(key, &500i64.to_be_bytes()[..])
            .unwrap();
        store.begin_run().await.unwrap();
        assert!(store.open_db().legacy_jtis.is_empty());
        assert_eq!(
            store.claim_jti("k", "old-version", 900, 100).await.unwrap(),
            Claim::Replayed
        );
        store.end_run().await.unwrap();
        drop(store);
        let store = reopen(&dir);
        assert_eq!(store.begin_run().await.unwrap(), PreviousShutdown::Clean);
        assert_eq!(
            store.claim_jti("k", "old-version", 900, 200).await.unwrap(),
            Claim::Replayed
        );
        std::fs::remove_dir_all(dir).ok();
    }
}

/// The sled value codec, for the fuzz target only (`cargo fuzz` builds with
/// `--cfg fuzzing`): decodes `value` as a stored record and, when it decodes, encodes it
/// again and decodes that — both results are returned so the target can assert the round
/// trip is the identity.
#[cfg(fuzzing)]
#[doc(hidden)]
pub fn fuzz_codec(value: &[u8]) -> Option<(TokenRecord, Result<TokenRecord, StoreError>)> {
    let record = decode_record(value).ok()?;
    let again = encode_record(&record).and_then(|bytes| decode_record(&bytes));
    Some((record, again))
}
