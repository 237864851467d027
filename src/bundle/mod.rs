//! Signed configuration bundles: the only way configuration crosses the air gap.
//!
//! A bundle is a `.tar.zst` whose first entry is a `manifest.json` (site, monotonic
//! version, creation and expiry time, every file's path, size, sha256 and mode), followed
//! by the configuration files, plus a detached minisign signature (`.minisig`) over the
//! compressed bytes whose trusted comment repeats site, version, times and the manifest's
//! digest. `docs/bundle-format.md` is the specification; `docs/runbooks/bundle-import.md`
//! the operator's view.
//!
//! This module owns: the format ([`manifest`]), minisign keys, signatures and trusted
//! comments ([`signing`]), packing ([`pack()`]), safe decompression and extraction
//! ([`archive`]), the bundle root on a sealed host (generations, the atomic `current`
//! switch, `state.json`, recovery, rollback, pinned keys: [`activate`]) and the import
//! pipeline ([`import()`]). It is **not** responsible for printing (the `cli` does that,
//! through [`Progress`] and the returned values), nor for reloading the server (it only
//! notifies it: [`activate::notify_reload`]), nor for what the configuration means
//! (`config::Settings::load` judges it).
//!
//! Every refusal is a [`BundleError::Refused`] with a [`Refusal`] kind (one exit code per
//! kind) and a one-line reason, and leaves the bundle root exactly as it was.

pub mod activate;
pub mod archive;
pub mod manifest;
pub mod signing;

mod error;
mod import;
mod pack;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_hostile;
#[cfg(test)]
pub(crate) mod testutil;

pub use activate::{
    recover, rollback, status, BundleRoot, GenerationRecord, Recovery, RollbackOptions,
    RollbackOutcome, State, Status, DEFAULT_ROOT,
};
pub use error::{
    BundleError, Refusal, EXIT_FAILURE as EXIT_COULD_NOT_RUN, EXIT_NOTHING_TO_DO,
    EXIT_RELOAD_FAILED,
};

pub use import::{import, verify, ImportOptions, ImportOutcome, Verified, VerifyOptions};
pub use manifest::{FileEntry, Manifest, Totals};
pub use pack::{pack, sign, PackOptions, PackSummary, SignSummary};
pub use signing::{keygen, load_secret_key, GeneratedKey, Passphrase, TrustedComment, TrustedKeys};

/// Caps applied to a bundle before and while it is decompressed. The defaults suit
/// configuration bundles with room to spare; every cap is a refusal, never a truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `.tar.zst` file (compressed bytes).
    pub max_bundle_bytes: u64,
    /// Largest accepted `.minisig` file.
    pub max_signature_bytes: u64,
    /// Largest accepted `manifest.json`.
    pub max_manifest_bytes: u64,
    /// Largest zstd window (log2 bytes) a frame may ask for: bounds decoder memory.
    pub max_window_log: u32,
    /// Most decompressed bytes (the whole tar stream, headers and padding included).
    pub max_output_bytes: u64,
    /// Most tar entries (files and directories).
    pub max_entries: u64,
    /// Most decompressed bytes per compressed byte, once past `ratio_floor_bytes`.
    pub max_ratio: u64,
    /// Output below this size is never judged by its ratio (small bundles compress well).
    pub ratio_floor_bytes: u64,
    /// How far (seconds) a bundle's `created` may lie ahead of this host's clock: the
    /// signing side's clock may run a little ahead, but a bundle dated far in the future
    /// would refuse every later bundle as `older-than-active` until then.
    pub max_created_ahead: u64,
}

/// The default of [`Limits::max_created_ahead`]: one hour.
pub const MAX_CREATED_AHEAD: u64 = 3600;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bundle_bytes: 64 * 1024 * 1024,
            max_signature_bytes: 64 * 1024,
            max_manifest_bytes: 4 * 1024 * 1024,
            max_window_log: 23,
            max_output_bytes: 256 * 1024 * 1024,
            max_entries: 10_000,
            max_ratio: 200,
            ratio_floor_bytes: 16 * 1024 * 1024,
            max_created_ahead: MAX_CREATED_AHEAD,
        }
    }
}

/// Progress of a long byte-oriented step (packing, copying, decompressing). The library
/// never draws anything itself; the command line implements this with a progress bar.
pub trait Progress {
    /// A step starts; `total` is its length in bytes (0 when unknown).
    fn start(&self, _label: &str, _total: u64) {}
    /// `bytes` more bytes of the current step are done.
    fn advance(&self, _bytes: u64) {}
    /// The current step is over.
    fn finish(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// Lowercase hex SHA-256 of some bytes (manifests, comments and state write it so).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex(&Sha256::digest(bytes))
}

pub(crate) use crate::archive::hex;
