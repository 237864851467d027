//! The kit builder's side: `pack` a source directory into a `.tar.zst` with its manifest,
//! and `sign` a packed bundle (the signature's trusted comment is derived from the
//! bundle's own manifest, after the whole bundle passed the same checks an import makes).

use super::archive::{walk, Sink};
use super::error::{io_err, BundleError};
use super::manifest::{
    check_path, check_site, format_mode, format_time, FileEntry, Manifest, Totals, CONFIG_NAME,
    FORMAT_VERSION, MANIFEST_NAME, TRUST_KEYS_DIR,
};
use super::signing::{secret_key_id, sign_data, TrustedComment};
use super::{Limits, Progress};
use crate::archive::HashingReader;
use minisign::SecretKey;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

/// What `pack` puts in the manifest.
#[derive(Debug, Clone)]
pub struct PackOptions {
    pub site: String,
    pub version: u64,
    /// Unix seconds.
    pub created: i64,
    pub expires: i64,
    /// zstd level (1–19); 19 by default.
    pub level: i32,
    /// zstd window (log2 bytes) used when compressing; must not exceed the importer's cap.
    pub window_log: u32,
}

impl PackOptions {
    pub fn new(site: &str, version: u64, created: i64, expires: i64) -> Self {
        PackOptions {
            site: site.to_string(),
            version,
            created,
            expires,
            level: 19,
            window_log: Limits::default().max_window_log,
        }
    }
}

#[derive(Debug, Clone)]
pub struct PackSummary {
    pub output: PathBuf,
    pub manifest: Manifest,
    pub manifest_sha256: String,
    pub compressed_bytes: u64,
}

/// Packs `source` into `output` (written to a temporary name, synced, then renamed).
/// Only regular files and directories are packed; a link or special file is an error.
pub fn pack(
    source: &Path,
    output: &Path,
    options: &PackOptions,
    progress: &dyn Progress,
) -> Result<PackSummary, BundleError> {
    check_site(&options.site).map_err(BundleError::Source)?;
    if options.version == 0 {
        return Err(BundleError::Source("--version must be at least 1".into()));
    }
    if options.expires <= options.created {
        return Err(BundleError::Source(
            "the expiry must be after the creation time".into(),
        ));
    }
    let mut files = Vec::new();
    collect(source, "", &mut files)?;
    files.sort();
    check_source(source, &files)?;

    // Pass 1: sizes and digests for the manifest.
    let total: u64 = files.iter().map(|(_, meta_size, _)| *meta_size).sum();
    progress.start("hashing", total);
    let mut entries = Vec::with_capacity(files.len());
    for (rel, _, mode) in &files {
        let (size, sha256) = hash_file(&source.join(rel), progress)?;
        entries.push(FileEntry {
            path: rel.clone(),
            size,
            sha256,
            mode: format_mode(*mode),
        });
    }
    progress.finish();
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        site: options.site.clone(),
        version: options.version,
        created: format_time(options.created),
        expires: format_time(options.expires),
        totals: Totals {
            files: entries.len() as u64,
            bytes: entries.iter().map(|e| e.size).sum(),
        },
        files: entries,
    };
    manifest
        .validate()
        .map_err(|e| BundleError::Source(format!("cannot make a valid manifest: {e}")))?;
    let manifest_bytes = manifest.to_json();

    // Pass 2: the archive, re-hashing every file to catch a change between the passes.
    let temp = output.with_extension(format!("tmp-{}", std::process::id()));
    let result = write_archive(source, &temp, &manifest, &manifest_bytes, options, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&temp);
        return Err(e);
    }
    std::fs::rename(&temp, output).map_err(io_err(format!(
        "cannot rename {} to {}",
        temp.display(),
        output.display()
    )))?;
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::archive::sync_dir(dir)?;
    }
    let compressed_bytes = std::fs::metadata(output)
        .map_err(io_err(format!("cannot inspect {}", output.display())))?
        .len();
    Ok(PackSummary {
        output: output.to_path_buf(),
        manifest_sha256: super::sha256_hex(&manifest_bytes),
        manifest,
        compressed_bytes,
    })
}

fn write_archive(
    source: &Path,
    temp: &Path,
    manifest: &Manifest,
    manifest_bytes: &[u8],
    options: &PackOptions,
    progress: &dyn Progress,
) -> Result<(), BundleError> {
    use std::os::unix::fs::OpenOptionsExt;
    let ctx = || format!("cannot write {}", temp.display());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(temp)
        .map_err(io_err(ctx()))?;
    let mut encoder = zstd::stream::write::Encoder::new(BufWriter::new(file), options.level)
        .map_err(io_err(ctx()))?;
    encoder.include_checksum(true).map_err(io_err(ctx()))?;
    encoder
        .window_log(options.window_log)
        .map_err(io_err(ctx()))?;
    let mut builder = tar::Builder::new(encoder);
    let mtime = u64::try_from(options.created).unwrap_or(0);
    let header = |size: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_uid(0);
        h.set_gid(0);
        h
    };
    builder
        .append_data(
            &mut header(manifest_bytes.len() as u64, 0o644),
            MANIFEST_NAME,
            manifest_bytes,
        )
        .map_err(io_err(ctx()))?;
    progress.start("packing", manifest.totals.bytes);
    for entry in &manifest.files {
        let path = source.join(&entry.path);
        let file = File::open(&path).map_err(io_err(format!("cannot read {}", path.display())))?;
        let mut reader = HashingReader::new(ProgressTee {
            inner: file.take(entry.size),
            progress,
        });
        let mode = super::manifest::parse_mode(&entry.mode).unwrap_or(0o644);
        builder
            .append_data(&mut header(entry.size, mode), &entry.path, &mut reader)
            .map_err(io_err(format!("cannot pack {}", path.display())))?;
        if reader.bytes != entry.size || reader.finish_hex() != entry.sha256 {
            return Err(BundleError::Source(format!(
                "{} changed while it was being packed; pack again",
                path.display()
            )));
        }
    }
    progress.finish();
    let encoder = builder.into_inner().map_err(io_err(ctx()))?;
    let writer = encoder.finish().map_err(io_err(ctx()))?;
    let file = writer
        .into_inner()
        .map_err(|e| io_err(ctx())(e.into_error()))?;
    file.sync_all().map_err(io_err(ctx()))
}

struct ProgressTee<'p, R> {
    inner: R,
    progress: &'p dyn Progress,
}

impl<R: Read> Read for ProgressTee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }
}

fn hash_file(path: &Path, progress: &dyn Progress) -> Result<(u64, String), BundleError> {
    let file = File::open(path).map_err(io_err(format!("cannot read {}", path.display())))?;
    let mut reader = HashingReader::new(ProgressTee {
        inner: file,
        progress,
    });
    std::io::copy(&mut reader, &mut std::io::sink())
        .map_err(io_err(format!("cannot read {}", path.display())))?;
    let size = reader.bytes;
    Ok((size, reader.finish_hex()))
}

/// Collects (relative path, size, normalised mode) of every regular file under `dir`.
fn collect(dir: &Path, rel: &str, out: &mut Vec<(String, u64, u32)>) -> Result<(), BundleError> {
    use std::os::unix::fs::PermissionsExt;
    let entries =
        std::fs::read_dir(dir).map_err(io_err(format!("cannot read {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(io_err(format!("cannot read {}", dir.display())))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            return Err(BundleError::Source(format!(
                "{} has a name that is not UTF-8",
                entry.path().display()
            )));
        };
        let child = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        check_path(&child).map_err(BundleError::Source)?;
        let meta = entry
            .path()
            .symlink_metadata()
            .map_err(io_err(format!("cannot inspect {}", entry.path().display())))?;
        if meta.is_dir() {
            collect(&entry.path(), &child, out)?;
        } else if meta.is_file() {
            let mode = if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            out.push((child, meta.len(), mode));
        } else {
            return Err(BundleError::Source(format!(
                "{} is not a regular file or directory (links and special files cannot be packed)",
                entry.path().display()
            )));
        }
    }
    Ok(())
}

/// What a source directory must hold: authority.yaml that parses, no reserved name, and
/// trust/keys/*.pub that are minisign public keys.
fn check_source(source: &Path, files: &[(String, u64, u32)]) -> Result<(), BundleError> {
    if files.iter().any(|(p, _, _)| p == MANIFEST_NAME) {
        return Err(BundleError::Source(format!(
            "{}/{MANIFEST_NAME} exists: that name is reserved for the manifest pack writes",
            source.display()
        )));
    }
    let config = source.join(CONFIG_NAME);
    if !files.iter().any(|(p, _, _)| p == CONFIG_NAME) {
        return Err(BundleError::Source(format!(
            "{} has no {CONFIG_NAME}",
            source.display()
        )));
    }
    let text = std::fs::read_to_string(&config)
        .map_err(io_err(format!("cannot read {}", config.display())))?;
    serde_yaml::from_str::<crate::config::AuthorityFile>(&text)
        .map_err(|e| BundleError::Source(format!("{}: {e}", config.display())))?;
    for (path, _, _) in files {
        if let Some(rest) = path.strip_prefix(&format!("{TRUST_KEYS_DIR}/")) {
            if !rest.ends_with(".pub") || rest.contains('/') {
                return Err(BundleError::Source(format!(
                    "{path}: {TRUST_KEYS_DIR}/ may hold only <name>.pub public keys"
                )));
            }
            let text = std::fs::read_to_string(source.join(path))
                .map_err(io_err(format!("cannot read {path}")))?;
            super::signing::parse_public_key(&text)
                .map_err(|e| BundleError::Source(format!("{path}: {e}")))?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct SignSummary {
    pub signature: PathBuf,
    pub key_id: String,
    pub comment: TrustedComment,
}

/// Signs a packed bundle: checks it the way an import would (manifest, every entry,
/// every digest), then writes `<bundle>.minisig` (or `output`) whose trusted comment is
/// derived from the manifest.
pub fn sign(
    bundle: &Path,
    secret_key: &SecretKey,
    output: Option<&Path>,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<SignSummary, BundleError> {
    let len = std::fs::metadata(bundle)
        .map_err(io_err(format!("cannot read {}", bundle.display())))?
        .len();
    if len > limits.max_bundle_bytes {
        return Err(super::error::refuse(
            super::Refusal::TooLarge,
            format!(
                "{} is {len} bytes; the import cap is {}",
                bundle.display(),
                limits.max_bundle_bytes
            ),
        ));
    }
    let open = || File::open(bundle).map_err(io_err(format!("cannot read {}", bundle.display())));
    progress.start("checking", len);
    let mut first = HashingReader::new(open()?);
    let walked = walk(&mut first, len, None, limits, Sink::Discard, progress)?;
    std::io::copy(&mut first, &mut std::io::sink())
        .map_err(io_err(format!("cannot read {}", bundle.display())))?;
    let checked_digest = first.finish_hex();
    let comment = TrustedComment {
        site: walked.manifest.site.clone(),
        version: walked.manifest.version,
        created: walked.manifest.created_unix(),
        expires: walked.manifest.expires_unix(),
        manifest_sha256: walked.manifest_sha256.clone(),
    };
    let key_id = secret_key_id(secret_key);
    let mut second = HashingReader::new(open()?);
    let text = sign_data(
        secret_key,
        &mut second,
        &comment.render(),
        &format!(
            "sealkit bundle {} v{} signed by {key_id}",
            comment.site, comment.version
        ),
    )?;
    if second.finish_hex() != checked_digest {
        return Err(BundleError::Source(format!(
            "{} changed while it was being signed; sign again",
            bundle.display()
        )));
    }
    let signature = output
        .map(Path::to_path_buf)
        .unwrap_or_else(|| default_signature_path(bundle));
    super::activate::write_atomic(&signature, text.as_bytes(), 0o644)?;
    Ok(SignSummary {
        signature,
        key_id,
        comment,
    })
}

/// `<bundle>.minisig`, minisign's convention.
pub fn default_signature_path(bundle: &Path) -> PathBuf {
    let mut name = bundle.as_os_str().to_owned();
    name.push(".minisig");
    PathBuf::from(name)
}
