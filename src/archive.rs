//! Safe reading of `.tar.zst` archives from untrusted media: the one reader behind signed
//! bundles and the offline kit.
//!
//! Responsible for: zstd decompression under caps (window, total output, optionally a
//! compression ratio), a tar walk that hands out regular files and directories only —
//! links, devices, FIFOs, sparse files, PAX global headers and every other type are
//! refused — with strict relative paths ([`check_path`]), permission bits only, no path
//! twice and no path both a file and a directory, an entry-count cap, the end-of-archive
//! marker (two zero blocks) followed by nothing but zero padding, and a zstd stream that
//! ends exactly there. Also the two chores every caller of the walk needs: hashing while
//! copying ([`Entry::copy_hashing`], [`HashingReader`]) and extraction into a fresh
//! directory that never follows or replaces anything ([`Extractor`]).
//!
//! Not responsible for: what an archive must contain (a bundle's manifest, a kit's
//! `SHA256SUMS`), signatures, or the refusal codes of the callers — they judge each
//! [`Entry`] in the visitor they pass to [`walk`] and map [`ArchiveError`] to their own.

use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// Longest accepted path inside an archive, in bytes.
pub const MAX_PATH_BYTES: usize = 255;
/// Longest accepted path component, in bytes.
pub const MAX_COMPONENT_BYTES: usize = 128;
/// The tar block size.
const BLOCK: u64 = 512;

/// Caps applied while an archive is decompressed; each is an [`ArchiveError::Limit`], never
/// a truncation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest zstd window (log2 bytes) a frame may ask for: bounds decoder memory.
    pub max_window_log: u32,
    /// Most decompressed bytes (the whole tar stream, headers and padding included).
    pub max_output_bytes: u64,
    /// Most decompressed bytes per compressed byte once past `ratio_floor_bytes`.
    pub max_ratio: Option<u64>,
    /// Output below this size is never judged by its ratio.
    pub ratio_floor_bytes: u64,
    /// Most entries (files and directories).
    pub max_entries: u64,
}

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Decompressing would exceed a cap (window, output, ratio, entries).
    #[error("{0}")]
    Limit(String),
    /// The zstd stream or the tar archive is malformed, truncated, lacks its end-of-archive
    /// marker, or has data after it.
    #[error("{0}")]
    Corrupt(String),
    /// An entry that is not a regular file or directory, or has an unsafe path or mode, or
    /// appears twice.
    #[error("{0}")]
    Unsafe(String),
    /// Writing an extracted file failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let context = context.into();
    move |source| ArchiveError::Io { context, source }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Directory,
}

/// One entry of a walked archive, as the visitor sees it.
pub struct Entry<'a> {
    /// The checked path (no trailing `/` for directories).
    pub path: &'a str,
    pub kind: Kind,
    /// Permission bits (never setuid, setgid or sticky).
    pub mode: u32,
    /// Bytes of data (0 for directories).
    pub size: u64,
    /// Position in the archive, 0 for the first entry.
    pub index: u64,
    data: &'a mut dyn Read,
    failure: &'a Failure,
}

impl Entry<'_> {
    /// Copies the data into `out`, hashing it; refuses data that is not exactly `size` bytes.
    /// Returns the lowercase hex SHA-256.
    pub fn copy_hashing(&mut self, out: &mut dyn Write) -> Result<String, ArchiveError> {
        let mut reader = HashingReader::new(&mut self.data);
        let copied = copy(&mut reader, out, self.failure, self.path)?;
        if copied != self.size {
            return Err(ArchiveError::Corrupt(format!(
                "{:?}: read {copied} bytes, expected {}",
                self.path, self.size
            )));
        }
        Ok(reader.finish_hex())
    }

    /// The whole data, refused past `cap` bytes.
    pub fn read_capped(&mut self, cap: u64) -> Result<Vec<u8>, ArchiveError> {
        if self.size > cap {
            return Err(ArchiveError::Limit(format!(
                "{:?} is {} bytes; at most {cap} are accepted",
                self.path, self.size
            )));
        }
        let mut bytes = Vec::new();
        self.copy_hashing(&mut bytes)?;
        Ok(bytes)
    }
}

/// Copies until the end of `reader`, turning read errors into archive errors.
fn copy(
    reader: &mut dyn Read,
    out: &mut dyn Write,
    failure: &Failure,
    what: &str,
) -> Result<u64, ArchiveError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(failure.classify(e, &format!("cannot read {what:?}"))),
        };
        let chunk = buf.get(..n).unwrap_or_default();
        out.write_all(chunk)
            .map_err(io_err(format!("cannot write {what:?}")))?;
        total += n as u64;
    }
}

/// What the walk established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Decompressed bytes (the whole tar stream, marker and padding included).
    pub output_bytes: u64,
    /// Entries handed to the visitor.
    pub entries: u64,
}

/// Which cap stopped the decompression, recorded because tar wraps the error it sees.
#[derive(Default)]
struct Failure(Cell<Option<String>>);

impl Failure {
    fn classify(&self, e: io::Error, what: &str) -> ArchiveError {
        if let Some(reason) = self.0.take() {
            return ArchiveError::Limit(reason);
        }
        let text = e.to_string();
        if text.contains("too much memory") || text.contains("window") {
            return ArchiveError::Limit(format!(
                "a zstd frame needs a larger window than allowed ({text})"
            ));
        }
        ArchiveError::Corrupt(format!("{what}: {text}"))
    }
}

/// Counts decompressed bytes and stops past the cap.
struct Capped<R> {
    inner: R,
    produced: Rc<Cell<u64>>,
    cap: u64,
    max_output: u64,
    failure: Rc<Failure>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let produced = self.produced.get() + n as u64;
        self.produced.set(produced);
        if produced > self.cap {
            let reason = if self.cap >= self.max_output {
                format!(
                    "decompressed data exceeds {} bytes (zstd bomb?)",
                    self.max_output
                )
            } else {
                format!(
                    "decompressed data exceeds {} bytes, the compression-ratio cap for this archive (zstd bomb?)",
                    self.cap
                )
            };
            self.failure.0.set(Some(reason.clone()));
            return Err(io::Error::other(reason));
        }
        Ok(n)
    }
}

/// Walks `compressed` (a `.tar.zst` of `compressed_len` bytes) and hands every entry to
/// `visit`, in archive order, after the reader's own checks. The visitor's error stops the
/// walk; so does any [`ArchiveError`], converted into `E`.
pub fn walk<R: Read, E: From<ArchiveError>>(
    compressed: R,
    compressed_len: u64,
    limits: &Limits,
    mut visit: impl FnMut(&mut Entry<'_>) -> Result<(), E>,
) -> Result<Summary, E> {
    let cap = match limits.max_ratio {
        Some(ratio) => limits.max_output_bytes.min(
            compressed_len
                .saturating_mul(ratio)
                .max(limits.ratio_floor_bytes),
        ),
        None => limits.max_output_bytes,
    };
    let failure = Rc::new(Failure::default());
    let produced = Rc::new(Cell::new(0u64));
    let zstd_err = |e: io::Error| ArchiveError::Corrupt(format!("zstd: {e}"));
    let mut decoder = zstd::stream::read::Decoder::new(compressed).map_err(zstd_err)?;
    decoder
        .window_log_max(limits.max_window_log)
        .map_err(zstd_err)?;
    let capped = Capped {
        inner: decoder,
        produced: produced.clone(),
        cap,
        max_output: limits.max_output_bytes,
        failure: failure.clone(),
    };
    let mut archive = tar::Archive::new(capped);
    let mut seen: HashSet<String> = HashSet::new();
    let mut files: HashSet<String> = HashSet::new();
    let mut directories: HashSet<String> = HashSet::new();
    let mut count = 0u64;
    // Where the last entry's data (padded to a block) ends: the marker starts there.
    let mut end_of_entries = 0u64;
    {
        let entries = archive
            .entries()
            .map_err(|e| failure.classify(e, "cannot read the archive"))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| failure.classify(e, "cannot read the archive"))?;
            count += 1;
            if count > limits.max_entries {
                return Err(ArchiveError::Limit(format!(
                    "more than {} entries",
                    limits.max_entries
                ))
                .into());
            }
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let kind = entry_kind(entry.header().entry_type(), &shown)?;
            let Ok(mut path) = String::from_utf8(raw) else {
                return Err(ArchiveError::Unsafe(format!("{shown:?} is not a UTF-8 path")).into());
            };
            if kind == Kind::Directory && path.ends_with('/') {
                path.pop();
            }
            check_path(&path).map_err(ArchiveError::Unsafe)?;
            if !seen.insert(path.clone()) {
                return Err(
                    ArchiveError::Unsafe(format!("{path:?} appears twice in the archive")).into(),
                );
            }
            // A path is a file or a directory, never both (`a` a file and `a/b` an entry).
            let clash = match kind {
                Kind::File => directories.contains(&path),
                Kind::Directory => files.contains(&path),
            } || ancestors_of(&path).any(|a| files.contains(a));
            if clash {
                return Err(ArchiveError::Unsafe(format!(
                    "{path:?} is both a file and a directory"
                ))
                .into());
            }
            for ancestor in ancestors_of(&path) {
                directories.insert(ancestor.to_string());
            }
            match kind {
                Kind::File => files.insert(path.clone()),
                Kind::Directory => directories.insert(path.clone()),
            };
            let mode = entry
                .header()
                .mode()
                .map_err(|e| failure.classify(e, "bad tar header"))?;
            if mode & !0o777 != 0 {
                return Err(ArchiveError::Unsafe(format!(
                    "{path:?} has mode {mode:o}: setuid, setgid and sticky bits are not allowed"
                ))
                .into());
            }
            let size = match kind {
                Kind::File => entry.size(),
                Kind::Directory => 0,
            };
            end_of_entries = entry
                .raw_file_position()
                .saturating_add(entry.size().div_ceil(BLOCK).saturating_mul(BLOCK));
            let mut visible = Entry {
                path: &path,
                kind,
                mode,
                size,
                index: count - 1,
                data: &mut entry,
                failure: &failure,
            };
            visit(&mut visible)?;
        }
    }

    // The end-of-archive marker (two zero blocks), then only zero padding; the zstd stream
    // must end exactly there. tar stops at the first zero block it reads, or at the end of
    // the stream when there is none.
    let mut rest = archive.into_inner();
    let consumed = produced.get().saturating_sub(end_of_entries);
    let mut zeros = consumed;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rest
            .read(&mut buf)
            .map_err(|e| failure.classify(e, "cannot read the end of the archive"))?;
        if n == 0 {
            break;
        }
        if buf.get(..n).unwrap_or_default().iter().any(|b| *b != 0) {
            return Err(
                ArchiveError::Corrupt("data follows the end of the tar archive".into()).into(),
            );
        }
        zeros += n as u64;
    }
    if zeros < 2 * BLOCK {
        return Err(ArchiveError::Corrupt(
            "the tar archive ends without its end-of-archive marker (two zero blocks): truncated"
                .into(),
        )
        .into());
    }
    Ok(Summary {
        output_bytes: produced.get(),
        entries: count,
    })
}

/// Regular files and directories only; every other type is named in the refusal.
fn entry_kind(kind: tar::EntryType, shown: &str) -> Result<Kind, ArchiveError> {
    use tar::EntryType as T;
    let what = match kind {
        T::Regular => return Ok(Kind::File),
        T::Directory => return Ok(Kind::Directory),
        T::Symlink => "a symbolic link".to_string(),
        T::Link => "a hard link".to_string(),
        T::Char | T::Block => "a device file".to_string(),
        T::Fifo => "a FIFO".to_string(),
        other => format!(
            "of tar entry type {:?} ({:?})",
            other,
            char::from(other.as_byte())
        ),
    };
    Err(ArchiveError::Unsafe(format!(
        "{shown:?} is {what}; only regular files and directories are allowed"
    )))
}

/// An archive path: relative, `/`-separated, no empty, `.` or `..` component, at most
/// [`MAX_PATH_BYTES`] bytes, components of `A-Z a-z 0-9 . _ - + @ = ,` only (at most
/// [`MAX_COMPONENT_BYTES`] each).
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.starts_with('/') {
        return Err(format!("{path:?} is an absolute path"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(format!("{path:?} is longer than {MAX_PATH_BYTES} bytes"));
    }
    for component in path.split('/') {
        match component {
            "" => return Err(format!("{path:?} has an empty component")),
            "." | ".." => return Err(format!("{path:?} has a `{component}` component")),
            _ => {}
        }
        if component.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "{path:?} has a component longer than {MAX_COMPONENT_BYTES} bytes"
            ));
        }
        if !component
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-+@=,".contains(&b))
        {
            return Err(format!(
                "{path:?} has characters outside A-Z a-z 0-9 . _ - + @ = ,"
            ));
        }
    }
    Ok(())
}

/// The ancestors of a relative `/`-separated path, shortest first (`a`, `a/b` for `a/b/c`).
pub fn ancestors_of(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Creates what a walk extracts under a directory that starts empty: every directory and
/// file is created here (`O_EXCL` for files), nothing is ever followed or replaced.
pub struct Extractor {
    base: PathBuf,
    /// Directories created so far (relative), synced by [`Extractor::finish`].
    created: BTreeSet<String>,
}

impl Extractor {
    pub fn new(base: &Path) -> Extractor {
        Extractor {
            base: base.to_path_buf(),
            created: BTreeSet::new(),
        }
    }

    /// Creates `path`'s missing ancestors (0755), and `path` itself with `include_self`.
    pub fn create_dirs(&mut self, path: &str, include_self: bool) -> Result<(), ArchiveError> {
        use std::os::unix::fs::DirBuilderExt;
        let mut targets: Vec<&str> = ancestors_of(path).collect();
        if include_self {
            targets.push(path);
        }
        for dir in targets {
            if self.created.contains(dir) {
                continue;
            }
            let full = self.base.join(dir);
            match std::fs::DirBuilder::new().mode(0o755).create(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let meta = full
                        .symlink_metadata()
                        .map_err(io_err(format!("cannot inspect {}", full.display())))?;
                    if !meta.is_dir() {
                        return Err(ArchiveError::Unsafe(format!(
                            "{dir:?} is both a file and a directory"
                        )));
                    }
                }
                Err(e) => return Err(io_err(format!("cannot create {}", full.display()))(e)),
            }
            self.created.insert(dir.to_string());
        }
        Ok(())
    }

    /// Creates the new file `path` with exactly `mode` (whatever the umask), its missing
    /// ancestors first.
    pub fn create_file(&mut self, path: &str, mode: u32) -> Result<std::fs::File, ArchiveError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        self.create_dirs(path, false)?;
        let full = self.base.join(path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&full)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    ArchiveError::Unsafe(format!("{path:?} appears twice in the archive"))
                } else {
                    io_err(format!("cannot create {}", full.display()))(e)
                }
            })?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("cannot chmod {}", full.display())))?;
        Ok(file)
    }

    /// Writes a whole new file and syncs it.
    pub fn write_file(&mut self, path: &str, mode: u32, bytes: &[u8]) -> Result<(), ArchiveError> {
        let mut file = self.create_file(path, mode)?;
        let context = || format!("cannot write {}", self.base.join(path).display());
        file.write_all(bytes).map_err(io_err(context()))?;
        file.sync_all().map_err(io_err(context()))
    }

    /// Syncs every created directory (children before parents) and the base.
    pub fn finish(&self) -> Result<(), ArchiveError> {
        for dir in self.created.iter().rev() {
            sync_dir(&self.base.join(dir))?;
        }
        sync_dir(&self.base)
    }
}

/// fsync of a directory (so that created or renamed entries in it are durable).
pub fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("cannot sync {}", dir.display())))
}

/// Hashes (SHA-256) and counts what is read through it. A seek starts the hash again
/// (minisign reads a file once, after seeking to its start).
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    /// Bytes read since the start (or the last seek).
    pub bytes: u64,
    /// Whether the inner reader failed (to tell I/O trouble from a bad signature).
    pub io_error: bool,
}

impl<R> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
            io_error: false,
        }
    }

    /// The lowercase hex SHA-256 of what was read.
    pub fn finish_hex(self) -> String {
        hex(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(n) => {
                self.hasher.update(buf.get(..n).unwrap_or_default());
                self.bytes += n as u64;
                Ok(n)
            }
            Err(e) => {
                self.io_error = true;
                Err(e)
            }
        }
    }
}

impl<R: Seek> Seek for HashingReader<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.hasher = Sha256::new();
        self.bytes = 0;
        self.inner.seek(pos)
    }
}

/// Reads `reader` to its end into `writer`, hashing; returns (bytes, lowercase hex SHA-256).
pub fn copy_hashing(reader: impl Read, writer: &mut dyn Write) -> io::Result<(u64, String)> {
    let mut hashing = HashingReader::new(reader);
    let bytes = io::copy(&mut hashing, writer)?;
    Ok((bytes, hashing.finish_hex()))
}

/// Lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
