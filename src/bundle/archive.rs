//! Reading a bundle's `.tar.zst` safely: zstd decompression under caps (window, total
//! output, entry count, ratio) and a tar walk that admits regular files and directories
//! only, with strict relative paths, each file checked against the manifest.
//!
//! The walk either extracts into a fresh directory (import) or only checks (verify, sign).
//! Extraction never follows or creates a link: every directory and file is created by this
//! code (`O_EXCL` for files) inside a directory that starts empty.

use super::error::{io_err, refuse, BundleError, Refusal};
use super::manifest::{
    check_path, format_mode, parse_mode, FileEntry, Manifest, CONFIG_NAME, MANIFEST_NAME,
};
use super::signing::TrustedComment;
use super::{Limits, Progress};
use sha2::{Digest, Sha256};
use std::cell::Cell;
use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

/// What to do with the files of a walked archive.
pub enum Sink<'a> {
    /// Check only; write nothing.
    Discard,
    /// Create every file and directory under this (existing, empty) directory.
    Extract(&'a Path),
}

/// The result of a walk.
#[derive(Debug, Clone)]
pub struct Walked {
    pub manifest: Manifest,
    /// Lowercase hex SHA-256 of the `manifest.json` bytes.
    pub manifest_sha256: String,
    /// Decompressed bytes read (the whole tar stream).
    pub output_bytes: u64,
}

/// Walks `compressed` (a `.tar.zst` of `compressed_len` bytes): manifest first, then every
/// entry, each checked; with `expected`, the manifest must be the one the trusted comment
/// names. Every problem is a refusal of its own kind.
pub fn walk(
    compressed: impl Read,
    compressed_len: u64,
    expected: Option<&TrustedComment>,
    limits: &Limits,
    sink: Sink<'_>,
    progress: &dyn Progress,
) -> Result<Walked, BundleError> {
    let output_cap = limits.max_output_bytes.min(
        compressed_len
            .saturating_mul(limits.max_ratio)
            .max(limits.ratio_floor_bytes),
    );
    let hit: Rc<Cell<Option<String>>> = Rc::new(Cell::new(None));
    let counted = ProgressReader {
        inner: compressed,
        progress,
    };
    let mut decoder = zstd::stream::read::Decoder::new(counted)
        .map_err(|e| refuse(Refusal::CorruptArchive, format!("zstd: {e}")))?;
    decoder
        .window_log_max(limits.max_window_log)
        .map_err(|e| refuse(Refusal::CorruptArchive, format!("zstd: {e}")))?;
    let capped = Capped {
        inner: decoder,
        produced: 0,
        cap: output_cap,
        max_output: limits.max_output_bytes,
        hit: hit.clone(),
    };
    let classify = {
        let hit = hit.clone();
        move |e: io::Error, what: &str| -> BundleError {
            if let Some(reason) = hit.take() {
                return refuse(Refusal::DecompressionLimit, reason);
            }
            let text = e.to_string();
            if text.contains("too much memory") || text.contains("window") {
                return refuse(
                    Refusal::DecompressionLimit,
                    format!(
                        "a zstd frame needs a window larger than 2^{} bytes ({text})",
                        limits.max_window_log
                    ),
                );
            }
            refuse(Refusal::CorruptArchive, format!("{what}: {text}"))
        }
    };

    let mut archive = tar::Archive::new(capped);
    let mut state = WalkState {
        sink,
        created_dirs: BTreeSet::new(),
        seen: HashSet::new(),
    };
    let (manifest, manifest_sha256) = {
        let mut entries = archive
            .entries()
            .map_err(|e| classify(e, "cannot read the archive"))?;

        // 1. The manifest: first entry, a regular file, bounded.
        let first = match entries.next() {
            None => {
                return Err(refuse(
                    Refusal::ManifestMismatch,
                    "the archive is empty (no manifest.json)",
                ))
            }
            Some(entry) => entry.map_err(|e| classify(e, "cannot read the archive"))?,
        };
        let first_path = String::from_utf8_lossy(&first.path_bytes()).into_owned();
        if first_path != MANIFEST_NAME || !first.header().entry_type().is_file() {
            return Err(refuse(
                Refusal::ManifestMismatch,
                format!("the first entry is {first_path:?}, not a regular file {MANIFEST_NAME}"),
            ));
        }
        if first.size() > limits.max_manifest_bytes {
            return Err(refuse(
                Refusal::ManifestMismatch,
                format!(
                    "manifest.json is {} bytes; at most {} are accepted",
                    first.size(),
                    limits.max_manifest_bytes
                ),
            ));
        }
        let mut manifest_bytes = Vec::new();
        first
            .take(limits.max_manifest_bytes + 1)
            .read_to_end(&mut manifest_bytes)
            .map_err(|e| classify(e, "cannot read manifest.json"))?;
        let manifest_sha256 = super::sha256_hex(&manifest_bytes);
        if let Some(comment) = expected {
            if comment.manifest_sha256 != manifest_sha256 {
                return Err(refuse(
                    Refusal::ManifestMismatch,
                    format!(
                        "manifest.json has sha256 {manifest_sha256}, the signed comment names {}",
                        comment.manifest_sha256
                    ),
                ));
            }
        }
        let manifest = Manifest::parse(&manifest_bytes)
            .map_err(|e| refuse(Refusal::ManifestMismatch, format!("manifest.json: {e}")))?;
        if let Some(comment) = expected {
            agree(&manifest, comment)?;
        }
        if manifest.files.len() as u64 + 1 > limits.max_entries {
            return Err(refuse(
                Refusal::DecompressionLimit,
                format!(
                    "the manifest lists {} files; at most {} entries are accepted",
                    manifest.files.len(),
                    limits.max_entries
                ),
            ));
        }
        state.write_file(MANIFEST_NAME, 0o644, &manifest_bytes)?;

        // 2. Every other entry.
        let directories = manifest.directories();
        let mut count: u64 = 1;
        for entry in entries {
            let mut entry = entry.map_err(|e| classify(e, "cannot read the archive"))?;
            count += 1;
            if count > limits.max_entries {
                return Err(refuse(
                    Refusal::DecompressionLimit,
                    format!("more than {} entries", limits.max_entries),
                ));
            }
            let raw = entry.path_bytes().into_owned();
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let kind = entry.header().entry_type();
            use tar::EntryType as T;
            let is_dir = match kind {
                T::Regular => false,
                T::Directory => true,
                T::Symlink => {
                    return Err(refuse(
                        Refusal::UnsafeEntry,
                        format!("{shown:?} is a symbolic link; only regular files and directories are allowed"),
                    ))
                }
                T::Link => {
                    return Err(refuse(
                        Refusal::UnsafeEntry,
                        format!("{shown:?} is a hard link; only regular files and directories are allowed"),
                    ))
                }
                T::Char | T::Block => {
                    return Err(refuse(
                        Refusal::UnsafeEntry,
                        format!("{shown:?} is a device file; only regular files and directories are allowed"),
                    ))
                }
                T::Fifo => {
                    return Err(refuse(
                        Refusal::UnsafeEntry,
                        format!("{shown:?} is a FIFO; only regular files and directories are allowed"),
                    ))
                }
                other => {
                    return Err(refuse(
                        Refusal::UnsafeEntry,
                        format!(
                            "{shown:?} has tar entry type {:?} ({:?}); only regular files and directories are allowed",
                            other,
                            char::from(other.as_byte())
                        ),
                    ))
                }
            };
            let Ok(mut path) = String::from_utf8(raw) else {
                return Err(refuse(
                    Refusal::UnsafeEntry,
                    format!("{shown:?} is not a UTF-8 path"),
                ));
            };
            if is_dir && path.ends_with('/') {
                path.pop();
            }
            check_path(&path).map_err(|e| refuse(Refusal::UnsafeEntry, e))?;
            if path == MANIFEST_NAME || !state.seen.insert(path.clone()) {
                return Err(refuse(
                    Refusal::UnsafeEntry,
                    format!("{path:?} appears twice in the archive"),
                ));
            }
            let mode = entry
                .header()
                .mode()
                .map_err(|e| classify(e, "bad tar header"))?;
            if mode & !0o777 != 0 {
                return Err(refuse(
                    Refusal::UnsafeEntry,
                    format!("{path:?} has mode {mode:o}: setuid, setgid and sticky bits are not allowed"),
                ));
            }
            if is_dir {
                if !directories.contains(&path) {
                    return Err(refuse(
                        Refusal::ContentMismatch,
                        format!("directory {path:?} holds no file of the manifest"),
                    ));
                }
                state.make_dirs(&path, true)?;
                continue;
            }
            let Some(listed) = manifest.find(&path) else {
                return Err(refuse(
                    Refusal::ContentMismatch,
                    format!("{path:?} is in the archive but not in the manifest"),
                ));
            };
            check_entry(listed, entry.size(), mode)?;
            state.copy_file(listed, &mut entry, &classify)?;
        }
        (manifest, manifest_sha256)
    };

    if let Some(missing) = manifest
        .files
        .iter()
        .find(|f| !state.seen.contains(&f.path))
    {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!(
                "{:?} is in the manifest but not in the archive",
                missing.path
            ),
        ));
    }

    // 3. After the end-of-archive marker only zero padding may follow, and the zstd stream
    //    must end cleanly (a truncated or trailing-garbage stream is refused here).
    let mut rest = archive.into_inner();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = rest
            .read(&mut buf)
            .map_err(|e| classify(e, "cannot read the end of the archive"))?;
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            return Err(refuse(
                Refusal::CorruptArchive,
                "data follows the end of the tar archive",
            ));
        }
    }
    state.finish()?;
    progress.finish();
    Ok(Walked {
        manifest,
        manifest_sha256,
        output_bytes: rest.produced,
    })
}

/// The manifest must say what the signed comment says.
fn agree(manifest: &Manifest, comment: &TrustedComment) -> Result<(), BundleError> {
    let mismatch = |field: &str, manifest_value: String, comment_value: String| {
        refuse(
            Refusal::ManifestMismatch,
            format!(
                "manifest {field} is {manifest_value}, the signed comment says {comment_value}"
            ),
        )
    };
    if manifest.site != comment.site {
        return Err(mismatch(
            "site",
            manifest.site.clone(),
            comment.site.clone(),
        ));
    }
    if manifest.version != comment.version {
        return Err(mismatch(
            "version",
            manifest.version.to_string(),
            comment.version.to_string(),
        ));
    }
    if manifest.created_unix() != comment.created {
        return Err(mismatch(
            "created",
            manifest.created.clone(),
            super::manifest::format_time(comment.created),
        ));
    }
    if manifest.expires_unix() != comment.expires {
        return Err(mismatch(
            "expires",
            manifest.expires.clone(),
            super::manifest::format_time(comment.expires),
        ));
    }
    Ok(())
}

fn check_entry(listed: &FileEntry, size: u64, mode: u32) -> Result<(), BundleError> {
    if size != listed.size {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!(
                "{:?} is {size} bytes in the archive, {} in the manifest",
                listed.path, listed.size
            ),
        ));
    }
    let listed_mode = parse_mode(&listed.mode).unwrap_or(u32::MAX);
    if mode != listed_mode {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!(
                "{:?} has mode {} in the archive, {} in the manifest",
                listed.path,
                format_mode(mode),
                listed.mode
            ),
        ));
    }
    Ok(())
}

struct WalkState<'a> {
    sink: Sink<'a>,
    /// Directories created so far (relative), to fsync at the end.
    created_dirs: BTreeSet<String>,
    /// Paths of entries seen (files and directories).
    seen: HashSet<String>,
}

impl WalkState<'_> {
    /// Creates `path`'s ancestors (and `path` itself when `include_self`), never following
    /// anything: the tree starts empty and only ever holds what this walk created.
    fn make_dirs(&mut self, path: &str, include_self: bool) -> Result<(), BundleError> {
        let Sink::Extract(base) = self.sink else {
            return Ok(());
        };
        let mut targets: Vec<&str> = super::manifest::ancestors_of(path).collect();
        if include_self {
            targets.push(path);
        }
        for dir in targets {
            if self.created_dirs.contains(dir) {
                continue;
            }
            let full = base.join(dir);
            match std::fs::create_dir(&full) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    let meta = full
                        .symlink_metadata()
                        .map_err(io_err(format!("cannot inspect {}", full.display())))?;
                    if !meta.is_dir() {
                        return Err(refuse(
                            Refusal::UnsafeEntry,
                            format!("{dir:?} is both a file and a directory"),
                        ));
                    }
                }
                Err(e) => return Err(io_err(format!("cannot create {}", full.display()))(e)),
            }
            self.created_dirs.insert(dir.to_string());
        }
        Ok(())
    }

    fn open(&mut self, path: &str) -> Result<Option<(std::fs::File, PathBuf)>, BundleError> {
        use std::os::unix::fs::OpenOptionsExt;
        self.make_dirs(path, false)?;
        let Sink::Extract(base) = self.sink else {
            return Ok(None);
        };
        let full = base.join(path);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .map_err(|e| {
                if e.kind() == io::ErrorKind::AlreadyExists {
                    refuse(
                        Refusal::UnsafeEntry,
                        format!("{path:?} appears twice in the archive"),
                    )
                } else {
                    io_err(format!("cannot create {}", full.display()))(e)
                }
            })?;
        Ok(Some((file, full)))
    }

    fn write_file(&mut self, path: &str, _mode: u32, bytes: &[u8]) -> Result<(), BundleError> {
        if let Some((mut file, full)) = self.open(path)? {
            let context = || format!("cannot write {}", full.display());
            file.write_all(bytes).map_err(io_err(context()))?;
            file.sync_all().map_err(io_err(context()))?;
        }
        Ok(())
    }

    fn copy_file(
        &mut self,
        listed: &FileEntry,
        data: &mut dyn Read,
        classify: &dyn Fn(io::Error, &str) -> BundleError,
    ) -> Result<(), BundleError> {
        let mut target = self.open(&listed.path)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total: u64 = 0;
        loop {
            let n = data
                .read(&mut buf)
                .map_err(|e| classify(e, &format!("cannot read {:?}", listed.path)))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            if total > listed.size {
                break;
            }
            hasher.update(&buf[..n]);
            if let Some((file, full)) = target.as_mut() {
                file.write_all(&buf[..n])
                    .map_err(io_err(format!("cannot write {}", full.display())))?;
            }
        }
        if total != listed.size {
            return Err(refuse(
                Refusal::CorruptArchive,
                format!(
                    "{:?}: read {total} bytes, expected {}",
                    listed.path, listed.size
                ),
            ));
        }
        let digest = super::hex(&hasher.finalize());
        if digest != listed.sha256 {
            return Err(refuse(
                Refusal::ContentMismatch,
                format!(
                    "{:?} has sha256 {digest}, the manifest says {}",
                    listed.path, listed.sha256
                ),
            ));
        }
        if let Some((file, full)) = target {
            file.sync_all()
                .map_err(io_err(format!("cannot sync {}", full.display())))?;
        }
        Ok(())
    }

    /// Syncs every created directory (children before parents) and the base.
    fn finish(&self) -> Result<(), BundleError> {
        let Sink::Extract(base) = self.sink else {
            return Ok(());
        };
        for dir in self.created_dirs.iter().rev() {
            sync_dir(&base.join(dir))?;
        }
        sync_dir(base)
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(format!("cannot sync {}", dir.display())))
}

/// Counts decompressed bytes and stops past the cap. Which cap was hit is recorded in
/// `hit`, because tar may wrap the error it sees.
struct Capped<R> {
    inner: R,
    produced: u64,
    /// min(max_output, max(ratio × compressed, floor)).
    cap: u64,
    max_output: u64,
    hit: Rc<Cell<Option<String>>>,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.produced += n as u64;
        if self.produced > self.cap {
            let reason = if self.cap >= self.max_output {
                format!(
                    "decompressed data exceeds {} bytes (zstd bomb?)",
                    self.max_output
                )
            } else {
                format!(
                    "decompressed data exceeds {} bytes, the compression-ratio cap for this bundle (zstd bomb?)",
                    self.cap
                )
            };
            self.hit.set(Some(reason.clone()));
            return Err(io::Error::other(reason));
        }
        Ok(n)
    }
}

struct ProgressReader<'p, R> {
    inner: R,
    progress: &'p dyn Progress,
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

/// Re-checks an extracted tree against its manifest: every listed file present with its
/// size and sha256, nothing else but directories and `manifest.json`, no links. Used before
/// a rollback re-activates an older generation.
pub fn check_tree(dir: &Path) -> Result<Manifest, BundleError> {
    let damaged = |why: String| {
        BundleError::State(format!(
            "generation {} does not match its manifest: {why}",
            dir.display()
        ))
    };
    let bytes = std::fs::read(dir.join(MANIFEST_NAME)).map_err(io_err(format!(
        "cannot read {}/{MANIFEST_NAME}",
        dir.display()
    )))?;
    let manifest = Manifest::parse(&bytes).map_err(damaged)?;
    let mut found = BTreeSet::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = stack.pop() {
        let entries =
            std::fs::read_dir(&path).map_err(io_err(format!("cannot read {}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("cannot read {}", path.display())))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let meta = entry
                .path()
                .symlink_metadata()
                .map_err(io_err(format!("cannot inspect {child_rel}")))?;
            if meta.is_dir() {
                stack.push((entry.path(), child_rel));
            } else if meta.is_file() {
                found.insert(child_rel);
            } else {
                return Err(damaged(format!("{child_rel:?} is not a regular file")));
            }
        }
    }
    found.remove(MANIFEST_NAME);
    for file in &manifest.files {
        if !found.remove(&file.path) {
            return Err(damaged(format!("{:?} is missing", file.path)));
        }
        let content = std::fs::read(dir.join(&file.path))
            .map_err(io_err(format!("cannot read {}", file.path)))?;
        if content.len() as u64 != file.size || super::sha256_hex(&content) != file.sha256 {
            return Err(damaged(format!("{:?} was modified", file.path)));
        }
    }
    if let Some(extra) = found.into_iter().next() {
        return Err(damaged(format!("{extra:?} is not in the manifest")));
    }
    if !dir.join(CONFIG_NAME).is_file() {
        return Err(damaged(format!("no {CONFIG_NAME}")));
    }
    Ok(manifest)
}
