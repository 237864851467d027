//! The sled store's journal: the durable record of every token write between two
//! checkpoints, so that a token answered 200 (or a revocation) costs one small `pwrite` and
//! one `fdatasync` of a file that never changes size, instead of a flush of sled's whole
//! log. Owns the file format, the group-commit buffer and replay; not the decision of
//! what to journal (the sled store) nor sled's own durability (its flush, at checkpoints).
//!
//! # Why not sled's flush
//! Making a write durable through sled means `Db::flush` (sled seals its I/O buffer, a
//! sled thread writes it and `sync_file_range`s it) plus an `fdatasync` of sled's log,
//! which grows and so also commits file-system metadata. Profiled under load that was
//! about a quarter of a DPoP token's server CPU (docs/performance.md). The journal writes
//! the same facts, a few hundred bytes per token, into a file created at its full size
//! and filled with zeros once: overwriting allocated blocks needs no metadata, so each
//! commit is one write and one data flush. sled still gets every write first (it serves
//! the reads) and flushes on its own timer; the journal only has to cover what sled has
//! not made durable yet.
//!
//! # Format
//! A sequence of entries from offset 0, each
//! `len u32 LE | crc32 u32 LE | generation u64 LE | payload (len bytes)`, the CRC over the
//! generation and the payload. The payload is `tree u8 | key length u8 | key | value`: a
//! put of that key in that tree. Replay reads entries until the first that is zero, torn
//! (CRC), or of another generation than the first; every journal cycle (from one
//! checkpoint to the next) draws a fresh random generation, so entries of an earlier cycle
//! left further in the file are never taken for new ones.
//!
//! # Checkpoint
//! When the next batch would not fit, the store makes sled durable (its flush plus
//! `fdatasync`: everything written to sled so far is then on disk), zeroes the first
//! entry header, `fdatasync`s, and starts a new cycle at offset 0. The batch that did not
//! fit needs no journal write: its puts were in sled before the checkpoint began.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The journal's file name in the store directory (sled leaves unknown files alone).
pub const FILE_NAME: &str = "sealkit-journal";
/// The journal's size: written once with zeros at creation, never grown. About 30,000
/// DPoP tokens (their records, in batches; claims are not journaled) fit between two
/// checkpoints.
pub const CAPACITY: u64 = 8 << 20;
const HEADER: usize = 16;

/// The sled tree an entry puts into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    /// jti claims, journaled by versions before claims moved to memory (`super::claims`):
    /// still replayed from a journal such a version left.
    Jti = 1,
    /// Token records one at a time (versions before `super::token_batches`), and the
    /// revocations of such records.
    Tokens = 2,
    /// A batch of token records, whole (`super::token_batches`): a commit's new records,
    /// or a batch rewritten by a revocation.
    Batches = 3,
}

impl Tree {
    fn from_byte(byte: u8) -> Option<Tree> {
        match byte {
            1 => Some(Tree::Jti),
            2 => Some(Tree::Tokens),
            3 => Some(Tree::Batches),
            _ => None,
        }
    }
}

/// One replayed put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    pub tree: Tree,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

/// The journal file and the position of the current cycle.
pub struct Journal {
    file: File,
    generation: u64,
    offset: u64,
    /// How long the last [`Journal::write`]'s `pwrite` and `fdatasync` took (the store
    /// logs the parts of a slow commit).
    pub last_write: std::time::Duration,
    pub last_sync: std::time::Duration,
}

/// What [`Journal::write`] did with a batch.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// Written and flushed to stable storage.
    Durable,
    /// The batch does not fit: the caller must checkpoint (make sled durable, then
    /// [`Journal::restart`]); the batch's puts are already in sled.
    Full,
}

impl Journal {
    /// Opens the journal in `dir`, creating it (full size, zeros, flushed, directory
    /// entry flushed) if absent or short, and returns it with the puts of its last cycle,
    /// in order. The caller applies them to sled, makes sled durable and calls
    /// [`Journal::restart`] before the first new entry.
    pub fn open(dir: &Path) -> io::Result<(Journal, Vec<Put>)> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let length = file.metadata()?.len();
        let puts = if length >= CAPACITY {
            let mut bytes = vec![0u8; CAPACITY as usize];
            file.read_exact_at(&mut bytes, 0)?;
            replay(&bytes)
        } else {
            // New (or cut short by a crash during its creation, before any entry could be
            // acknowledged): fill it with zeros so later writes allocate nothing.
            let zeros = vec![0u8; 1 << 20];
            let mut at = 0;
            while at < CAPACITY {
                file.write_all_at(&zeros, at)?;
                at += zeros.len() as u64;
            }
            file.sync_all()?;
            File::open(dir)?.sync_all()?;
            Vec::new()
        };
        Ok((
            Journal {
                file,
                generation: rand::random(),
                offset: 0,
                last_write: std::time::Duration::ZERO,
                last_sync: std::time::Duration::ZERO,
            },
            puts,
        ))
    }

    /// Starts a new cycle at offset 0: zeroes the first header so no entry of the old
    /// cycle is replayed, and flushes that. Call only once sled is durable.
    pub fn restart(&mut self) -> io::Result<()> {
        self.file.write_all_at(&[0u8; HEADER], 0)?;
        self.file.sync_data()?;
        self.generation = rand::random();
        self.offset = 0;
        Ok(())
    }

    /// Appends one put to `batch` in the journal's format, generation and CRC left for
    /// [`Journal::write`] to stamp (no I/O; cheap on a request's path).
    pub fn encode(batch: &mut Vec<u8>, tree: Tree, key: &[u8], value: &[u8]) {
        debug_assert!(key.len() <= u8::MAX as usize);
        let payload_len = 2 + key.len() + value.len();
        batch.extend_from_slice(&(payload_len as u32).to_le_bytes());
        batch.extend_from_slice(&[0u8; 12]);
        batch.push(tree as u8);
        batch.push(key.len() as u8);
        batch.extend_from_slice(key);
        batch.extend_from_slice(value);
    }

    /// Stamps the cycle's generation and each entry's CRC into `batch` (entries made by
    /// [`Journal::encode`]), writes it at the end of the cycle and flushes it to stable
    /// storage. Stamping here, on the committing thread, keeps a batch encoded before a
    /// checkpoint from carrying the ended cycle's generation into the new one.
    pub fn write(&mut self, batch: &mut [u8]) -> io::Result<Written> {
        if batch.is_empty() {
            return Ok(Written::Durable);
        }
        if self.offset + batch.len() as u64 > CAPACITY {
            return Ok(Written::Full);
        }
        let mut at = 0;
        while at + HEADER <= batch.len() {
            let len = le_u32(batch, at) as usize;
            let end = at + HEADER + len;
            batch[at + 8..at + 16].copy_from_slice(&self.generation.to_le_bytes());
            let crc = crc32fast::hash(&batch[at + 8..end]);
            batch[at + 4..at + 8].copy_from_slice(&crc.to_le_bytes());
            at = end;
        }
        let started = std::time::Instant::now();
        self.file.write_all_at(batch, self.offset)?;
        self.last_write = started.elapsed();
        self.file.sync_data()?;
        self.last_sync = started.elapsed() - self.last_write;
        self.offset += batch.len() as u64;
        Ok(Written::Durable)
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

/// The little-endian u64 at `at` (also read by the claims snapshot).
pub(super) fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// The puts of the cycle starting at offset 0 of `bytes`, up to the first entry that is
/// empty, torn or of another generation.
fn replay(bytes: &[u8]) -> Vec<Put> {
    let mut puts = Vec::new();
    let mut at = 0usize;
    let mut generation = None;
    while at + HEADER <= bytes.len() {
        let len = le_u32(bytes, at) as usize;
        let crc = le_u32(bytes, at + 4);
        let entry_generation = le_u64(bytes, at + 8);
        let end = at + HEADER + len;
        if len < 2 || end > bytes.len() {
            break;
        }
        if *generation.get_or_insert(entry_generation) != entry_generation
            || crc32fast::hash(&bytes[at + 8..end]) != crc
        {
            break;
        }
        let payload = &bytes[at + HEADER..end];
        let key_len = payload[1] as usize;
        let (Some(tree), true) = (Tree::from_byte(payload[0]), 2 + key_len <= payload.len()) else {
            break;
        };
        puts.push(Put {
            tree,
            key: payload[2..2 + key_len].to_vec(),
            value: payload[2 + key_len..].to_vec(),
        });
        at = end;
    }
    puts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(tree: Tree, key: &[u8], value: &[u8]) -> Put {
        Put {
            tree,
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    /// What was written and flushed comes back in order after a reopen, and a restart
    /// (after a checkpoint) leaves nothing to replay.
    #[test]
    fn written_batches_are_replayed_in_order_until_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, puts) = Journal::open(dir.path()).unwrap();
        assert!(puts.is_empty());
        assert_eq!(
            std::fs::metadata(dir.path().join(FILE_NAME)).unwrap().len(),
            CAPACITY
        );
        journal.restart().unwrap();
        let mut batch = Vec::new();
        Journal::encode(&mut batch, Tree::Jti, &[1; 32], &7i64.to_be_bytes());
        Journal::encode(&mut batch, Tree::Tokens, &[2; 32], b"record");
        assert_eq!(journal.write(&mut batch).unwrap(), Written::Durable);
        let mut second = Vec::new();
        Journal::encode(&mut second, Tree::Tokens, &[2; 32], b"revoked record");
        assert_eq!(journal.write(&mut second).unwrap(), Written::Durable);
        drop(journal);

        let (mut journal, puts) = Journal::open(dir.path()).unwrap();
        assert_eq!(
            puts,
            vec![
                put(Tree::Jti, &[1; 32], &7i64.to_be_bytes()),
                put(Tree::Tokens, &[2; 32], b"record"),
                put(Tree::Tokens, &[2; 32], b"revoked record"),
            ]
        );
        journal.restart().unwrap();
        drop(journal);
        assert!(Journal::open(dir.path()).unwrap().1.is_empty());
    }

    /// A torn entry ends the replay (what follows it was never acknowledged), and entries
    /// of an earlier cycle further in the file are not taken for new ones.
    #[test]
    fn replay_stops_at_a_torn_entry_and_at_an_older_cycle() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.restart().unwrap();
        let mut old = Vec::new();
        for i in 0..4u8 {
            Journal::encode(&mut old, Tree::Tokens, &[i; 32], b"old cycle");
        }
        journal.write(&mut old).unwrap();
        journal.restart().unwrap();
        let mut new = Vec::new();
        Journal::encode(&mut new, Tree::Tokens, &[9; 32], b"new");
        journal.write(&mut new).unwrap();
        drop(journal);
        let puts = Journal::open(dir.path()).unwrap().1;
        assert_eq!(puts, vec![put(Tree::Tokens, &[9; 32], b"new")]);

        // Tear the entry: flip a byte of its value.
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[HEADER + 2 + 32] ^= 0xff;
        std::fs::write(&path, &bytes).unwrap();
        assert!(Journal::open(dir.path()).unwrap().1.is_empty());
    }

    /// A batch that does not fit is refused as `Full`, and nothing is written.
    #[test]
    fn a_batch_that_does_not_fit_asks_for_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(dir.path()).unwrap();
        journal.restart().unwrap();
        let mut batch = Vec::new();
        Journal::encode(&mut batch, Tree::Tokens, &[3; 32], &vec![0xab; 1 << 20]);
        let fitting = (CAPACITY >> 20) - 1;
        for _ in 0..fitting {
            assert_eq!(journal.write(&mut batch).unwrap(), Written::Durable);
        }
        assert_eq!(journal.write(&mut batch).unwrap(), Written::Full);
        drop(journal);
        assert_eq!(Journal::open(dir.path()).unwrap().1.len() as u64, fitting);
    }
}
