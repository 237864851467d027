//! Token records filed a group commit at a time: the sled store writes the records of one
//! commit as **one sled value** (a *batch*) instead of one value per token, and keeps an
//! in-memory index from token id to batch. Owns the batch format, how a commit's records
//! are split into batches, the index and the order in which the sweeper visits batches;
//! not when a batch is written or made durable (the sled store's commit and its
//! [journal](super::journal)).
//!
//! # Why
//! A sled insert costs 10–20 µs whatever the value's size (it rewrites the leaf that holds
//! the key, and `apply_batch` costs the same per key), which was the largest item of a
//! DPoP token's server CPU after the cryptography (docs/performance.md, "Session 10").
//! The records of one commit reach the journal together anyway; filing them as one value
//! costs one insert per commit, 2–4 µs per record at the commit sizes seen under load,
//! and the sweeper drops a whole batch with one removal once its last record has expired.
//!
//! # Format
//! A batch's key is its sequence number, `u64` big-endian, so batches sort in the order
//! they were committed. Its value is
//! `max_exp i64 BE | BATCH_V1 | count u32 BE | count × (id [32] | len u32 BE | record)`,
//! each record in the sled store's record format (which starts with that record's own
//! expiry); `max_exp` first, so the generic expiry check of the sweeper reads a batch as
//! it reads any other value. A revocation rewrites the batch with that one record changed.
//!
//! # The index
//! Built when the database is opened, by reading every batch in key order (a later
//! batch's record of the same id wins, as it would have in sled), so it costs ~50–100
//! bytes of memory per live token and one pass over the batches at start-up. Token ids are
//! SHA-256 digests of tokens this authority issued, so a lookup by an unknown id (a
//! made-up token) answers from memory without touching sled.

use super::sweep_queue::SweepQueue;
use super::StoreError;
use crate::telemetry::events;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;

/// The sled tree the batches are kept in.
pub const TREE: &str = "token_batches";
/// The most records one batch holds: a commit that carries more writes several batches,
/// so that a revocation never rewrites more than ~30 KB.
pub const MAX_RECORDS: usize = 128;
/// How far apart (seconds) the expiries of one batch's records may be. A batch is removed
/// only once its longest-lived record has expired, so a refresh-token family that lives
/// for days must not share a batch with access tokens that live for minutes: a commit's
/// records are grouped by expiry first, and a record is kept at most this long past its
/// own expiry.
pub const EXPIRY_SPREAD: i64 = 60;
const BATCH_V1: u8 = 1;
const HEAD: usize = 8 + 1 + 4;

/// One token record waiting for the next commit: its id and its encoded record.
pub type Pending = ([u8; 32], Vec<u8>);
/// One record as read in a batch: its id and its encoded record.
pub type Entry<'a> = ([u8; 32], &'a [u8]);

/// A batch's sled key.
pub fn key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

fn seq_of(key: &[u8]) -> Option<u64> {
    key.try_into().ok().map(u64::from_be_bytes)
}

fn shard_of(id: &[u8; 32]) -> usize {
    usize::from(id[0]) % SHARDS
}

/// A record's (or a batch's) expiry; one too short to have any is kept, never dropped.
fn record_expiry(record: &[u8]) -> i64 {
    super::expiry_of(record).unwrap_or(i64::MAX)
}

/// Splits a commit's records into batches: sorted by expiry, a new batch whenever a
/// record expires more than [`EXPIRY_SPREAD`] after the first of the current one, or
/// that one is full ([`MAX_RECORDS`]). Records of equal expiry keep their order.
pub fn split(records: &mut [Pending]) -> Vec<&[Pending]> {
    records.sort_by_key(|(_, record)| record_expiry(record));
    let mut batches = Vec::new();
    let mut rest: &[Pending] = records;
    while let Some((_, first)) = rest.first() {
        let limit = record_expiry(first).saturating_add(EXPIRY_SPREAD);
        let len = rest
            .iter()
            .take(MAX_RECORDS)
            .take_while(|(_, record)| record_expiry(record) <= limit)
            .count();
        let (batch, tail) = rest.split_at(len);
        batches.push(batch);
        rest = tail;
    }
    batches
}

/// Encodes `records` as one batch value (the store gives it at most [`MAX_RECORDS`]).
pub fn encode(records: &[Pending]) -> Vec<u8> {
    let size = HEAD + records.iter().map(|(_, r)| 36 + r.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    let max_exp = records
        .iter()
        .map(|(_, r)| record_expiry(r))
        .max()
        .unwrap_or(0);
    out.extend_from_slice(&max_exp.to_be_bytes());
    out.push(BATCH_V1);
    out.extend_from_slice(&(records.len() as u32).to_be_bytes());
    for (id, record) in records {
        out.extend_from_slice(id);
        out.extend_from_slice(&(record.len() as u32).to_be_bytes());
        out.extend_from_slice(record);
    }
    out
}

/// The `(id, record)` entries of a batch value, in order; an error if it is not one.
pub fn entries(batch: &[u8]) -> Result<Vec<Entry<'_>>, StoreError> {
    let corrupt = || StoreError::Corrupt("unreadable token batch".into());
    if batch.len() < HEAD || batch[8] != BATCH_V1 {
        return Err(corrupt());
    }
    let count = u32::from_be_bytes(batch[9..13].try_into().map_err(|_| corrupt())?) as usize;
    let mut out = Vec::with_capacity(count.min(MAX_RECORDS));
    let mut rest = &batch[HEAD..];
    for _ in 0..count {
        if rest.len() < 36 {
            return Err(corrupt());
        }
        let (id, tail) = rest.split_at(32);
        let len = u32::from_be_bytes(tail[..4].try_into().map_err(|_| corrupt())?) as usize;
        let tail = &tail[4..];
        if tail.len() < len {
            return Err(corrupt());
        }
        let (record, tail) = tail.split_at(len);
        out.push((id.try_into().map_err(|_| corrupt())?, record));
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(corrupt());
    }
    Ok(out)
}

/// The record of `id` in a batch value (the last, should one id appear twice).
pub fn find<'a>(batch: &'a [u8], id: &[u8; 32]) -> Result<Option<&'a [u8]>, StoreError> {
    Ok(entries(batch)?
        .into_iter()
        .rev()
        .find(|(entry, _)| entry == id)
        .map(|(_, record)| record))
}

/// The batch value with the record of `id` replaced by `record`; `None` if `id` is not in
/// it.
pub fn replace(batch: &[u8], id: &[u8; 32], record: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    let entries = entries(batch)?;
    let Some(at) = entries.iter().rposition(|(entry, _)| entry == id) else {
        return Ok(None);
    };
    let records: Vec<Pending> = entries
        .iter()
        .enumerate()
        .map(|(i, (entry, old))| (*entry, if i == at { record } else { old }.to_vec()))
        .collect();
    Ok(Some(encode(&records)))
}

/// How many maps the index is split into (by the id's first byte): a map that grows
/// rehashes under its write lock, and a sixty-fourth of millions of entries is rehashed
/// in well under a millisecond, while the other shards keep answering.
const SHARDS: usize = 64;

type Shard = RwLock<HashMap<[u8; 32], u64>>;

/// Which batch holds each live token, the next sequence number, and the batches in the
/// order the sweeper looks at them.
pub struct BatchIndex {
    by_id: Box<[Shard]>,
    next_seq: AtomicU64,
    /// `(max_exp, seq)`, earliest first.
    sweep: SweepQueue<u64>,
}

impl BatchIndex {
    /// Reads every batch of `tree` (after the journal's replay) into a new index. A batch
    /// that cannot be read (which sled's own checksums make a bug, not a disk fault) is
    /// logged and left out: its tokens are unknown, so they are refused (inactive), never
    /// taken for live; the sweeper still drops it once its expiry has passed.
    pub fn load(tree: &sled::Tree) -> Result<BatchIndex, sled::Error> {
        let mut by_id: Vec<HashMap<[u8; 32], u64>> = vec![HashMap::new(); SHARDS];
        let mut sweep = Vec::new();
        let mut next_seq = 1;
        for entry in tree.iter() {
            let (key, value) = entry?;
            let Some(seq) = seq_of(&key) else {
                tracing::error!(event = events::STORE_ERROR, key = ?key.as_ref(), "a token batch has a key that is not a sequence number; left alone");
                continue;
            };
            next_seq = seq + 1;
            sweep.push((record_expiry(&value), seq));
            match entries(&value) {
                Ok(records) => {
                    for (id, _) in records {
                        by_id[shard_of(&id)].insert(id, seq);
                    }
                }
                Err(_) => tracing::error!(
                    event = events::STORE_ERROR,
                    batch = seq,
                    "a token batch is unreadable: its tokens are treated as unknown (inactive)"
                ),
            }
        }
        let index = BatchIndex {
            by_id: by_id.into_iter().map(RwLock::new).collect(),
            next_seq: AtomicU64::new(next_seq),
            sweep: SweepQueue::default(),
        };
        index.sweep.extend(sweep);
        Ok(index)
    }

    /// A sequence number no batch has used.
    pub fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// The batch holding `id`, if any.
    pub fn batch_of(&self, id: &[u8; 32]) -> Option<u64> {
        self.shard(id)
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .copied()
    }

    /// Records that batch `seq`, expiring at `max_exp`, now holds `ids` (once durable).
    pub fn filed(&self, seq: u64, max_exp: i64, ids: impl Iterator<Item = [u8; 32]>) {
        for id in ids {
            self.shard(&id)
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, seq);
        }
        self.sweep.push(max_exp, seq);
    }

    /// Forgets batch `seq` (removed by the sweeper) for the `ids` it held; an id since
    /// filed again in a later batch keeps pointing there.
    pub fn dropped(&self, seq: u64, ids: impl Iterator<Item = [u8; 32]>) {
        for id in ids {
            let mut shard = self.shard(&id).write().unwrap_or_else(|e| e.into_inner());
            if shard.get(&id) == Some(&seq) {
                shard.remove(&id);
            }
        }
    }

    fn shard(&self, id: &[u8; 32]) -> &Shard {
        &self.by_id[shard_of(id)]
    }

    /// Takes up to `max` batches (`(max_exp, seq)`) whose `max_exp` has passed at `now`.
    pub fn take_due(&self, now: i64, max: usize) -> Vec<(i64, u64)> {
        self.sweep.take_due(now, max)
    }

    /// Puts back a batch the sweeper found still alive.
    pub fn requeue(&self, max_exp: i64, seq: u64) {
        self.sweep.push(max_exp, seq);
    }

    /// How many tokens the index knows (`StoreSize::tokens`).
    pub fn tokens(&self) -> usize {
        self.by_id
            .iter()
            .map(|shard| shard.read().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// How many batches wait in the sweep queue.
    pub fn queued(&self) -> usize {
        self.sweep.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(exp: i64, body: &[u8]) -> Vec<u8> {
        let mut r = exp.to_be_bytes().to_vec();
        r.extend_from_slice(body);
        r
    }

    #[test]
    fn a_batch_round_trips_and_leads_with_its_latest_expiry() {
        let records = vec![
            ([1; 32], record(100, b"first")),
            ([2; 32], record(300, b"second, longer lived")),
            ([3; 32], record(200, b"")),
        ];
        let batch = encode(&records);
        assert_eq!(record_expiry(&batch), 300);
        let read = entries(&batch).unwrap();
        assert_eq!(read.len(), 3);
        for ((id, r), (read_id, read_r)) in records.iter().zip(read) {
            assert_eq!((id, r.as_slice()), (&read_id, read_r));
        }
        assert_eq!(find(&batch, &[2; 32]).unwrap(), Some(&records[1].1[..]));
        assert_eq!(find(&batch, &[9; 32]).unwrap(), None);
    }

    #[test]
    fn a_commit_is_split_by_expiry_and_size() {
        let mut records: Vec<Pending> = vec![
            ([1; 32], record(100_000, b"family, days")),
            ([2; 32], record(300, b"")),
            ([3; 32], record(310, b"")),
            ([4; 32], record(360, b"at the spread's edge")),
            ([5; 32], record(361, b"just past it")),
        ];
        let ids = |batch: &[Pending]| batch.iter().map(|(id, _)| id[0]).collect::<Vec<_>>();
        let batches = split(&mut records);
        assert_eq!(
            batches.iter().map(|b| ids(b)).collect::<Vec<_>>(),
            vec![vec![2, 3, 4], vec![5], vec![1]]
        );
        let mut many: Vec<Pending> = (0..300).map(|i| ([i as u8; 32], record(50, b""))).collect();
        let sizes: Vec<usize> = split(&mut many).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, vec![MAX_RECORDS, MAX_RECORDS, 300 - 2 * MAX_RECORDS]);
        assert!(split(&mut []).is_empty());
    }

    #[test]
    fn replacing_one_record_keeps_the_others() {
        let records = vec![([1; 32], record(100, b"a")), ([2; 32], record(100, b"b"))];
        let batch = encode(&records);
        let changed = replace(&batch, &[2; 32], &record(100, b"b, revoked"))
            .unwrap()
            .unwrap();
        assert_eq!(find(&changed, &[1; 32]).unwrap(), Some(&records[0].1[..]));
        assert_eq!(
            find(&changed, &[2; 32]).unwrap(),
            Some(&record(100, b"b, revoked")[..])
        );
        assert_eq!(replace(&batch, &[7; 32], b"x").unwrap(), None);
    }

    #[test]
    fn damaged_batches_are_refused_not_misread() {
        let batch = encode(&[([1; 32], record(100, b"abc"))]);
        for cut in 0..batch.len() {
            assert!(entries(&batch[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = batch.clone();
        longer.push(0);
        assert!(entries(&longer).is_err());
        let mut other_format = batch.clone();
        other_format[8] = 2;
        assert!(entries(&other_format).is_err());
        let mut huge_count = batch;
        huge_count[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(entries(&huge_count).is_err());
    }

    #[test]
    fn the_index_forgets_a_dropped_batch_but_not_a_later_filing() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        let index = BatchIndex::load(&tree).unwrap();
        let (a, b) = (index.next_seq(), index.next_seq());
        index.filed(a, 100, [[1; 32], [2; 32]].into_iter());
        index.filed(b, 200, [[2; 32]].into_iter());
        assert_eq!(index.batch_of(&[2; 32]), Some(b));
        assert_eq!(index.take_due(150, 10), vec![(100, a)]);
        index.dropped(a, [[1; 32], [2; 32]].into_iter());
        assert_eq!(index.batch_of(&[1; 32]), None);
        assert_eq!(index.batch_of(&[2; 32]), Some(b));
        assert!(index.take_due(150, 10).is_empty());
    }

    #[test]
    fn loading_reads_every_batch_and_continues_the_sequence() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree(TREE).unwrap();
        tree.insert(key(4), encode(&[([1; 32], record(500, b"x"))]))
            .unwrap();
        tree.insert(
            key(9),
            encode(&[([1; 32], record(700, b"y")), ([2; 32], record(50, b"z"))]),
        )
        .unwrap();
        let index = BatchIndex::load(&tree).unwrap();
        assert_eq!(index.batch_of(&[1; 32]), Some(9));
        assert_eq!(index.batch_of(&[2; 32]), Some(9));
        assert_eq!(index.tokens(), 2);
        assert_eq!(index.next_seq(), 10);
        assert_eq!(index.take_due(600, 10), vec![(500, 4)]);
        // A damaged batch is left out (its tokens unknown), not fatal, and still swept.
        tree.insert(key(10), [0u8; 8].to_vec()).unwrap();
        let index = BatchIndex::load(&tree).unwrap();
        assert_eq!(index.tokens(), 2);
        assert_eq!(index.next_seq(), 11);
        assert_eq!(index.take_due(600, 10), vec![(0, 10), (500, 4)]);
    }
}
