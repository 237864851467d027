//! A bundle's `.tar.zst`, read through the one safe archive reader ([`crate::archive`]:
//! caps, entry types, strict paths, modes, duplicates, end-of-archive marker) and judged
//! against its manifest: `manifest.json` first and the one the signed comment names, then
//! every entry listed with its size, mode and SHA-256, every listed file present.
//!
//! The walk either extracts into a fresh directory (import) or only checks (verify, sign).

use super::error::{io_err, refuse, BundleError, Refusal};
use super::manifest::{format_mode, parse_mode, FileEntry, Manifest, CONFIG_NAME, MANIFEST_NAME};
use super::signing::TrustedComment;
use super::{Limits, Progress};
use crate::archive::{ArchiveError, Entry, Extractor, Kind};
use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read};
use std::path::Path;

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

impl From<ArchiveError> for BundleError {
    fn from(error: ArchiveError) -> Self {
        match error {
            ArchiveError::Limit(reason) => refuse(Refusal::DecompressionLimit, reason),
            ArchiveError::Corrupt(reason) => refuse(Refusal::CorruptArchive, reason),
            ArchiveError::Unsafe(reason) => refuse(Refusal::UnsafeEntry, reason),
            ArchiveError::Io { context, source } => BundleError::Io { context, source },
        }
    }
}

impl Limits {
    /// The caps of the safe archive reader for a bundle.
    pub fn archive(&self) -> crate::archive::Limits {
        crate::archive::Limits {
            max_window_log: self.max_window_log,
            max_output_bytes: self.max_output_bytes,
            max_ratio: Some(self.max_ratio),
            ratio_floor_bytes: self.ratio_floor_bytes,
            max_entries: self.max_entries,
        }
    }
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
    let counted = ProgressReader {
        inner: compressed,
        progress,
    };
    let mut extractor = match sink {
        Sink::Extract(base) => Some(Extractor::new(base)),
        Sink::Discard => None,
    };
    let mut manifest: Option<(Manifest, String, BTreeSet<String>)> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let summary =
        crate::archive::walk(
            counted,
            compressed_len,
            &limits.archive(),
            |entry| match &manifest {
                None => {
                    manifest = Some(read_manifest(entry, expected, limits, extractor.as_mut())?);
                    Ok(())
                }
                Some((manifest, _, directories)) => {
                    seen.insert(entry.path.to_string());
                    check_listed(entry, manifest, directories, extractor.as_mut())
                }
            },
        )?;
    let Some((manifest, manifest_sha256, _)) = manifest else {
        return Err(refuse(
            Refusal::ManifestMismatch,
            "the archive is empty (no manifest.json)",
        ));
    };
    if let Some(missing) = manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!(
                "{:?} is in the manifest but not in the archive",
                missing.path
            ),
        ));
    }
    if let Some(extractor) = &extractor {
        extractor.finish()?;
    }
    progress.finish();
    Ok(Walked {
        manifest,
        manifest_sha256,
        output_bytes: summary.output_bytes,
    })
}

/// The first entry: `manifest.json`, bounded, the one the comment names, agreeing with it.
fn read_manifest(
    entry: &mut Entry<'_>,
    expected: Option<&TrustedComment>,
    limits: &Limits,
    extractor: Option<&mut Extractor>,
) -> Result<(Manifest, String, BTreeSet<String>), BundleError> {
    if entry.path != MANIFEST_NAME || entry.kind != Kind::File {
        return Err(refuse(
            Refusal::ManifestMismatch,
            format!(
                "the first entry is {:?}, not a regular file {MANIFEST_NAME}",
                entry.path
            ),
        ));
    }
    if entry.size > limits.max_manifest_bytes {
        return Err(refuse(
            Refusal::ManifestMismatch,
            format!(
                "manifest.json is {} bytes; at most {} are accepted",
                entry.size, limits.max_manifest_bytes
            ),
        ));
    }
    let bytes = entry.read_capped(limits.max_manifest_bytes)?;
    let manifest_sha256 = super::sha256_hex(&bytes);
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
    let manifest = Manifest::parse(&bytes)
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
    if let Some(extractor) = extractor {
        extractor.write_file(MANIFEST_NAME, 0o600, &bytes)?;
    }
    let directories = manifest.directories();
    Ok((manifest, manifest_sha256, directories))
}

/// Every later entry: a directory holding listed files, or a listed file with its size,
/// mode and digest.
fn check_listed(
    entry: &mut Entry<'_>,
    manifest: &Manifest,
    directories: &BTreeSet<String>,
    extractor: Option<&mut Extractor>,
) -> Result<(), BundleError> {
    let path = entry.path;
    if entry.kind == Kind::Directory {
        if !directories.contains(path) {
            return Err(refuse(
                Refusal::ContentMismatch,
                format!("directory {path:?} holds no file of the manifest"),
            ));
        }
        if let Some(extractor) = extractor {
            extractor.create_dirs(path, true)?;
        }
        return Ok(());
    }
    let Some(listed) = manifest.find(path) else {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!("{path:?} is in the archive but not in the manifest"),
        ));
    };
    check_entry(listed, entry.size, entry.mode)?;
    let digest = match extractor {
        Some(extractor) => {
            let mut file = extractor.create_file(path, 0o600)?;
            let digest = entry.copy_hashing(&mut file)?;
            file.sync_all()
                .map_err(io_err(format!("cannot sync {path:?}")))?;
            digest
        }
        None => entry.copy_hashing(&mut io::sink())?,
    };
    if digest != listed.sha256 {
        return Err(refuse(
            Refusal::ContentMismatch,
            format!(
                "{:?} has sha256 {digest}, the manifest says {}",
                listed.path, listed.sha256
            ),
        ));
    }
    Ok(())
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

pub(crate) fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    Ok(crate::archive::sync_dir(dir)?)
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
