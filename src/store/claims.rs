//! The sled store's jti claims, held in memory: a sharded hash table of `key → expiry`,
//! and the file that carries them across a clean restart. Owns the atomic
//! "claim if absent or expired" and the snapshot format; not when claims are swept (the
//! sled store's sweep queue says which keys are due) nor the restart fence (a crash loses
//! what is only here, and the fence covers exactly that: docs/crash-safety.md).
//!
//! # Why not sled
//! A claim lives for one replay window and is read only by the next claim of the same key.
//! In sled it was a compare-and-swap on the request path (6.6% of a DPoP token's server
//! CPU in session 7's profile) and a second one when swept; here it is a hash and a short
//! lock (10–14% less server CPU per DPoP token in three of four alternated rounds,
//! docs/performance.md "Session 8"). What sled gave besides, durability across a crash, was already
//! covered by the restart fence: after an unclean end every proof needs a nonce minted by
//! the new run until the replay window has passed, so a proof accepted before the crash is
//! refused whether or not its claim survived.
//!
//! # Snapshot
//! A clean end of a run writes the claims it holds to [`FILE_NAME`] (written to a temporary
//! file, `fdatasync`ed, renamed); the next start loads them (its sweep removes those that
//! have expired since) and removes the file once the new run is marked as running, so a
//! restart without a crash needs no fence and refuses every replay by its claim.
//! Format: `magic (8) | count u64 LE | count × (key 32 | expiry i64 LE) | crc32 u32 LE`
//! over everything before it. A file that is torn or fails its CRC is reported and
//! ignored (the caller raises the fence, as after a crash).

use super::journal::le_u64;
use super::{lock, Claim};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

/// The snapshot's file name in the store directory (sled leaves unknown files alone).
pub const FILE_NAME: &str = "sealkit-claims";
const MAGIC: &[u8; 8] = b"SKCLAIM1";
const ENTRY: usize = 40;
/// Shards of the table: requests on two cores rarely meet on one lock.
const SHARDS: usize = 16;

type Shard = HashMap<[u8; 32], i64>;

/// Live jti claims by key (the SHA-256 of the proof key and the jti, `super::jti_key`).
/// The maps use std's randomly keyed SipHash: the keys are hashes of values a client
/// chooses, and a client grinding jti values must not be able to pile them into one bucket.
pub struct ClaimTable {
    shards: Vec<Mutex<Shard>>,
}

impl Default for ClaimTable {
    fn default() -> ClaimTable {
        ClaimTable {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl ClaimTable {
    fn shard(&self, key: &[u8; 32]) -> MutexGuard<'_, Shard> {
        // The key is a SHA-256 output: its first byte spreads keys evenly over the shards.
        lock(&self.shards[usize::from(key[0]) % SHARDS])
    }

    /// Claims `key` until `expires_at` if it is unclaimed or its claim expired by `now`;
    /// one atomic step under the shard's lock, so two racing claims have one winner.
    pub fn claim(&self, key: [u8; 32], expires_at: i64, now: i64) -> Claim {
        let mut shard = self.shard(&key);
        match shard.get_mut(&key) {
            Some(exp) if *exp > now => Claim::Replayed,
            Some(exp) => {
                *exp = expires_at;
                Claim::Fresh
            }
            None => {
                shard.insert(key, expires_at);
                Claim::Fresh
            }
        }
    }

    /// Removes the claim of `key` if it has expired by `now` (a newer claim of the same
    /// key stays). Returns whether one was removed.
    pub fn remove_if_expired(&self, key: &[u8; 32], now: i64) -> bool {
        let mut shard = self.shard(key);
        match shard.get(key) {
            Some(&exp) if exp <= now => {
                shard.remove(key);
                true
            }
            _ => false,
        }
    }

    /// How many claims are held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|shard| lock(shard).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every claim held, sorted by expiry (what a snapshot writes; the next run's sweep
    /// removes those that have expired by then).
    pub fn all(&self) -> Vec<([u8; 32], i64)> {
        let mut all = Vec::new();
        for shard in &self.shards {
            let shard = lock(shard);
            all.extend(shard.iter().map(|(key, &exp)| (*key, exp)));
        }
        all.sort_unstable_by_key(|&(_, exp)| exp);
        all
    }

    /// Adds claims found on disk (a snapshot, a store written by an earlier version),
    /// keeping the later expiry where a key is already held.
    pub fn load(&self, claims: impl IntoIterator<Item = ([u8; 32], i64)>) {
        for (key, exp) in claims {
            let mut shard = self.shard(&key);
            let held = shard.entry(key).or_insert(exp);
            *held = (*held).max(exp);
        }
    }
}

/// Writes `claims` to the snapshot in `dir`, durably (temporary file, `fdatasync`,
/// rename, directory `fsync`).
pub fn write_snapshot(dir: &Path, claims: &[([u8; 32], i64)]) -> io::Result<()> {
    let mut bytes = Vec::with_capacity(16 + claims.len() * ENTRY + 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(claims.len() as u64).to_le_bytes());
    for (key, exp) in claims {
        bytes.extend_from_slice(key);
        bytes.extend_from_slice(&exp.to_le_bytes());
    }
    let crc = crc32fast::hash(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let temporary = dir.join(format!("{FILE_NAME}.tmp"));
    let mut file = File::create(&temporary)?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&temporary, dir.join(FILE_NAME))?;
    File::open(dir)?.sync_all()
}

/// What a start found in the snapshot.
#[derive(Debug, PartialEq, Eq)]
pub enum Snapshot {
    /// No snapshot: a first start, or the previous run did not end cleanly.
    Absent,
    Read(Vec<([u8; 32], i64)>),
    /// A file that is not a whole snapshot (torn, damaged): its claims are not trusted.
    Damaged(String),
}

/// Reads the snapshot in `dir`, leaving it in place: the caller removes it
/// ([`remove_snapshot`]) only once the new run is durably marked as running, so a crash
/// in between still finds either the snapshot or an unclean end, never a clean end
/// without its claims.
pub fn read_snapshot(dir: &Path) -> io::Result<Snapshot> {
    match std::fs::read(dir.join(FILE_NAME)) {
        Ok(bytes) => Ok(match decode(&bytes) {
            Ok(claims) => Snapshot::Read(claims),
            Err(why) => Snapshot::Damaged(why),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Snapshot::Absent),
        Err(e) => Err(e),
    }
}

/// Removes the snapshot in `dir` (durably), if there is one.
pub fn remove_snapshot(dir: &Path) -> io::Result<()> {
    match std::fs::remove_file(dir.join(FILE_NAME)) {
        Ok(()) => File::open(dir)?.sync_all(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn decode(bytes: &[u8]) -> Result<Vec<([u8; 32], i64)>, String> {
    if bytes.len() < 20 || &bytes[..8] != MAGIC {
        return Err("not a claims snapshot".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return Err("its checksum does not match".into());
    }
    let count = le_u64(body, 8);
    let entries = &body[16..];
    if entries.len() % ENTRY != 0 || (entries.len() / ENTRY) as u64 != count {
        return Err(format!(
            "it announces {count} claims and holds {} bytes of them",
            entries.len()
        ));
    }
    Ok(entries
        .chunks_exact(ENTRY)
        .map(|entry| {
            let mut key = [0u8; 32];
            key.copy_from_slice(&entry[..32]);
            (key, le_u64(entry, 32) as i64)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> [u8; 32] {
        [n; 32]
    }

    #[test]
    fn a_key_is_claimed_once_until_its_claim_expires() {
        let table = ClaimTable::default();
        assert_eq!(table.claim(key(1), 100, 0), Claim::Fresh);
        assert_eq!(table.claim(key(1), 150, 99), Claim::Replayed);
        assert_eq!(table.claim(key(2), 100, 99), Claim::Fresh);
        // Expired at 100: claimable again, and the new claim is not swept as the old one.
        assert_eq!(table.claim(key(1), 300, 100), Claim::Fresh);
        assert!(!table.remove_if_expired(&key(1), 200));
        assert_eq!(table.claim(key(1), 400, 200), Claim::Replayed);
        assert!(table.remove_if_expired(&key(1), 300));
        assert_eq!(table.len(), 1);
    }

    #[test]
    fn racing_claims_of_one_key_have_one_winner() {
        let table = std::sync::Arc::new(ClaimTable::default());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let table = table.clone();
                std::thread::spawn(move || table.claim(key(7), 100, 0))
            })
            .collect();
        let fresh = threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|c| *c == Claim::Fresh)
            .count();
        assert_eq!(fresh, 1);
    }

    #[test]
    fn a_snapshot_round_trips_once_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let claims = vec![(key(1), 10), (key(2), 20)];
        write_snapshot(dir.path(), &claims).unwrap();
        assert_eq!(read_snapshot(dir.path()).unwrap(), Snapshot::Read(claims));
        remove_snapshot(dir.path()).unwrap();
        assert_eq!(read_snapshot(dir.path()).unwrap(), Snapshot::Absent);
        remove_snapshot(dir.path()).unwrap();

        write_snapshot(dir.path(), &[(key(3), 30)]).unwrap();
        let path = dir.path().join(FILE_NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            read_snapshot(dir.path()).unwrap(),
            Snapshot::Damaged(why) if why.contains("checksum")
        ));
        std::fs::write(&path, &bytes[..30]).unwrap();
        assert!(matches!(
            read_snapshot(dir.path()).unwrap(),
            Snapshot::Damaged(_)
        ));
    }
}
