//! The import pipeline (and its side-effect-free twin, `verify`).
//!
//! Order, each step a refusal of its own kind: size cap → signature against the pinned
//! keys (nothing is decompressed or parsed before) → trusted comment → site → version
//! (same version and digest: no-op) → expiry, creation time → capped decompression →
//! manifest equals the signed digest and agrees with the comment → every entry (type,
//! path, duplicates, manifest membership, size, sha256, mode) → trusted key set → the
//! configuration, validated as `config check` would → atomic switch → state → reload.

use super::activate::{
    complete_pending, make_read_only, prune, recover_locked, remove_tree, switch_current,
    BundleRoot, GenerationRecord, KeyRotation, Pending, PendingOp, Recovery, State, DEFAULT_KEEP,
};
use super::archive::{sync_dir, walk, Sink};
use super::error::{io_err, one_line, refuse, BundleError, Refusal};
use super::manifest::{check_site, format_time, Manifest, CONFIG_NAME};
use super::pack::default_signature_path;
use super::signing::{
    parse_public_key, public_key_id, verify_signature, TrustedComment, TrustedKeys,
};
use super::{Limits, Progress};
use crate::archive::HashingReader;
use crate::config::Settings;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Options of [`import`].
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The `.minisig`; default `<bundle>.minisig`.
    pub signature: Option<PathBuf>,
    /// This host's site. Required for the first import; afterwards it must match the
    /// site in `state.json` when given.
    pub site: Option<String>,
    pub limits: Limits,
    /// Previous generations to keep for rollback.
    pub keep: usize,
    /// Unix seconds ("now" for expiry and the activation time).
    pub now: i64,
    /// Tell the running authority to reload through this control socket.
    pub reload_socket: Option<PathBuf>,
}

impl ImportOptions {
    pub fn new(now: i64) -> Self {
        ImportOptions {
            signature: None,
            site: None,
            limits: Limits::default(),
            keep: DEFAULT_KEEP,
            now,
            reload_socket: None,
        }
    }
}

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportOutcome {
    /// The generation now active.
    pub record: GenerationRecord,
    /// True when the bundle was already active (same version, same digest): nothing changed.
    pub already_active: bool,
    /// The generation that was active before.
    pub replaced: Option<GenerationRecord>,
    /// The trusted key set the bundle installed, if it carried one.
    pub rotation: Option<KeyRotation>,
    /// Generations removed by pruning.
    pub pruned: Vec<String>,
    /// What recovery cleaned up before the import started.
    pub recovery: Recovery,
}

/// Imports a signed bundle into `root` and activates it. On any refusal nothing in the
/// root changes (leftovers of an earlier interrupted import may have been cleaned).
pub fn import(
    root: &BundleRoot,
    bundle: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportOutcome, BundleError> {
    let result = import_locked(root, bundle, options, progress);
    match &result {
        Err(BundleError::Refused { kind, reason }) => tracing::warn!(
            event = "authority.bundle.refused",
            bundle = %bundle.display(),
            code = kind.code(),
            exit_code = kind.exit_code(),
            reason = %reason,
        ),
        Err(BundleError::Reload { .. }) | Ok(_) => {}
        Err(other) => tracing::error!(
            event = "authority.bundle.failed",
            bundle = %bundle.display(),
            error = %one_line(&other.to_string()),
        ),
    }
    result
}

fn import_locked(
    root: &BundleRoot,
    bundle: &Path,
    options: &ImportOptions,
    progress: &dyn Progress,
) -> Result<ImportOutcome, BundleError> {
    let limits = &options.limits;
    root.init()?;
    let _lock = root.lock()?;
    let recovery = recover_locked(root)?;
    let keys = root.trusted_keys()?;
    if keys.is_empty() {
        return Err(BundleError::State(format!(
            "no trusted key is pinned in {}; pin one with `sealkit bundle trust add KEY.pub`",
            root.trusted_keys_dir().display()
        )));
    }
    let state = root.read_state()?;
    let site = match (&state, &options.site) {
        (Some(state), Some(given)) if &state.site != given => {
            return Err(BundleError::Usage(format!(
                "--site {given} disagrees with this host's site {}",
                state.site
            )))
        }
        (Some(state), _) => state.site.clone(),
        (None, Some(given)) => {
            check_site(given).map_err(BundleError::Usage)?;
            given.clone()
        }
        (None, None) => {
            return Err(BundleError::Usage(
                "this host has no site yet: pass --site for the first import".into(),
            ))
        }
    };
    let active = state.as_ref().and_then(|s| s.active.clone());

    // 1. Size cap, before reading anything.
    let meta =
        std::fs::metadata(bundle).map_err(io_err(format!("cannot read {}", bundle.display())))?;
    if !meta.is_file() {
        return Err(BundleError::Usage(format!(
            "{} is not a file",
            bundle.display()
        )));
    }
    check_size(bundle, meta.len(), limits)?;
    let signature_path = options
        .signature
        .clone()
        .unwrap_or_else(|| default_signature_path(bundle));
    let signature_text = read_signature(&signature_path, limits)?;

    // The bundle is copied into a private staging directory first, so the bytes that are
    // verified are the bytes that are extracted.
    let staging = StagingDir::create(root)?;
    let staged = staging.path.join("bundle.tar.zst");
    let len = copy_capped(bundle, &staged, limits, progress)?;

    // 2. Signature, against the pinned keys only.
    let verified = verify_signature(open(&staged)?, &signature_text, &keys)?;
    // 3. The trusted comment (signed, so its fields can be judged before decompressing).
    let comment = TrustedComment::parse(&verified.trusted_comment)
        .map_err(|e| refuse(Refusal::BadComment, e))?;
    // 4. Site.
    if comment.site != site {
        return Err(refuse(
            Refusal::WrongSite,
            format!(
                "the bundle is for site {}; this host is site {site}",
                comment.site
            ),
        ));
    }
    // 5. Version: strictly newer, or the very same bundle (no-op).
    if let Some(active) = &active {
        if comment.version == active.version && verified.sha256 == active.sha256 {
            return Ok(ImportOutcome {
                record: active.clone(),
                already_active: true,
                replaced: None,
                rotation: None,
                pruned: Vec::new(),
                recovery,
            });
        }
        if comment.version <= active.version {
            return Err(refuse(
                Refusal::NotNewer,
                format!(
                    "version {} is not newer than the active version {} (rollbacks are refused; use `sealkit bundle rollback`)",
                    comment.version, active.version
                ),
            ));
        }
    }
    // 6. Expiry and creation time.
    check_times(&comment, options.now, limits)?;
    if let Some(active) = &active {
        // A damaged record refuses the import (fail closed) rather than let any bundle
        // count as newer than the active one.
        if comment.created < active.created_checked()? {
            return Err(refuse(
                Refusal::OlderThanActive,
                format!(
                    "the bundle was created at {}, before the active bundle ({})",
                    format_time(comment.created),
                    active.created
                ),
            ));
        }
    }

    // 7–9. Decompression under caps, manifest against the comment, every entry checked
    //      and written into a fresh tree.
    let tree = staging.path.join("tree");
    std::fs::create_dir(&tree).map_err(io_err(format!("cannot create {}", tree.display())))?;
    progress.start("importing", len);
    let walked = walk(
        open(&staged)?,
        len,
        Some(&comment),
        limits,
        Sink::Extract(&tree),
        progress,
    )?;
    // 10. A carried trusted key set must be usable.
    let trust_keys = check_trust_keys(&tree, &walked.manifest)?;
    // 11. The configuration, as the server will read it.
    validate_config(&tree)?;

    let generation = format!("{}-{}", comment.version, &verified.sha256[..12]);
    let record = GenerationRecord {
        generation: generation.clone(),
        site: site.clone(),
        version: comment.version,
        sha256: verified.sha256.clone(),
        manifest_sha256: walked.manifest_sha256.clone(),
        created: walked.manifest.created.clone(),
        expires: walked.manifest.expires.clone(),
        key_id: verified.key_id.clone(),
        activated_at: format_time(options.now),
        files: walked.manifest.totals.files,
        bytes: walked.manifest.totals.bytes,
        trust_keys,
        rolled_back_because: None,
    };
    tracing::info!(
        event = "authority.bundle.imported",
        site = %site,
        version = record.version,
        generation = %generation,
        sha256 = %record.sha256,
        key_id = %record.key_id,
        files = record.files,
        expires = %record.expires,
    );

    // 12. Commit: intent, generation in place, one rename, completion.
    let mut state = state.unwrap_or_else(|| State::new(&site));
    state.pending = Some(Pending {
        op: PendingOp::Import,
        record: record.clone(),
        reason: None,
    });
    root.write_state(&state)?;
    let target = root.generation_dir(&generation);
    let placed = remove_tree(&target)
        .and_then(|()| {
            std::fs::rename(&tree, &target).map_err(io_err(format!(
                "cannot move the staged tree to {}",
                target.display()
            )))
        })
        .and_then(|()| make_read_only(&target, &walked.manifest))
        .and_then(|()| sync_dir(&root.generations_dir()))
        .and_then(|()| switch_current(root, &generation));
    if let Err(e) = placed {
        // Not switched: drop the intent now rather than at the next start.
        if root.current_generation().ok().flatten().as_deref() != Some(generation.as_str()) {
            state.pending = None;
            let _ = root.write_state(&state);
            let _ = remove_tree(&target);
        }
        return Err(e);
    }
    let rotation = complete_pending(root, &mut state)?;
    tracing::info!(
        event = "authority.bundle.activated",
        site = %site,
        version = record.version,
        generation = %generation,
        previous_version = active.as_ref().map(|a| a.version),
        config = %root.config_path().display(),
    );
    if let Some(rotation) = &rotation {
        tracing::info!(
            event = "authority.bundle.keysRotated",
            version = record.version,
            added = %rotation.added.join(","),
            retired = %rotation.retired.join(","),
            trusted = %rotation.trusted.join(","),
        );
    }
    let pruned = prune(root, &mut state, options.keep)?;
    drop(staging);

    // 13. Reload.
    if let Some(socket) = &options.reload_socket {
        super::activate::notify_reload(socket).map_err(|e| BundleError::Reload {
            generation: generation.clone(),
            reason: one_line(&e.to_string()),
        })?;
    }
    Ok(ImportOutcome {
        record,
        already_active: false,
        replaced: active,
        rotation,
        pruned,
        recovery,
    })
}

/// Options of [`verify`].
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub signature: Option<PathBuf>,
    /// Also require this site.
    pub site: Option<String>,
    pub limits: Limits,
    /// Unix seconds, to judge expiry.
    pub now: i64,
}

impl VerifyOptions {
    pub fn new(now: i64) -> Self {
        VerifyOptions {
            signature: None,
            site: None,
            limits: Limits::default(),
            now,
        }
    }
}

/// What [`verify`] established.
#[derive(Debug, Clone)]
pub struct Verified {
    pub key_id: String,
    pub comment: TrustedComment,
    pub manifest: Manifest,
    pub sha256: String,
    pub compressed_bytes: u64,
    pub output_bytes: u64,
}

/// Checks a bundle the way an import does (size, signature, comment, expiry, optional site,
/// manifest, every entry and digest) without writing anything anywhere. What it cannot
/// judge without a host: the version against the active one, and the configuration.
pub fn verify(
    bundle: &Path,
    keys: &TrustedKeys,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<Verified, BundleError> {
    let limits = &options.limits;
    let meta =
        std::fs::metadata(bundle).map_err(io_err(format!("cannot read {}", bundle.display())))?;
    check_size(bundle, meta.len(), limits)?;
    let signature_path = options
        .signature
        .clone()
        .unwrap_or_else(|| default_signature_path(bundle));
    let signature_text = read_signature(&signature_path, limits)?;
    let signed = verify_signature(open(bundle)?, &signature_text, keys)?;
    let comment = TrustedComment::parse(&signed.trusted_comment)
        .map_err(|e| refuse(Refusal::BadComment, e))?;
    if let Some(site) = &options.site {
        if &comment.site != site {
            return Err(refuse(
                Refusal::WrongSite,
                format!("the bundle is for site {}, not {site}", comment.site),
            ));
        }
    }
    check_times(&comment, options.now, limits)?;
    progress.start("verifying", meta.len());
    let mut reader = HashingReader::new(open(bundle)?);
    let walked = walk(
        &mut reader,
        meta.len(),
        Some(&comment),
        limits,
        Sink::Discard,
        progress,
    )?;
    std::io::copy(&mut reader, &mut std::io::sink())
        .map_err(io_err(format!("cannot read {}", bundle.display())))?;
    let compressed_bytes = reader.bytes;
    if reader.finish_hex() != signed.sha256 {
        return Err(refuse(
            Refusal::CorruptArchive,
            "the file changed while it was being verified",
        ));
    }
    Ok(Verified {
        key_id: signed.key_id,
        comment,
        manifest: walked.manifest,
        sha256: signed.sha256,
        compressed_bytes,
        output_bytes: walked.output_bytes,
    })
}

/// Validates an extracted tree's `authority.yaml` with the one configuration loader, in
/// place: relative paths resolve inside the tree (which moves intact into `generations/`),
/// every referenced file is read as `serve` reads it, and the bundle-root rules apply
/// because the tree lies inside the root (`config::paths`: no data or log directory, no
/// private key, no password file inside the root; no path into another generation).
pub(crate) fn validate_config(tree: &Path) -> Result<Settings, BundleError> {
    let path = tree.join(CONFIG_NAME);
    let real_tree = crate::config::paths::resolve(tree);
    let tidy = |text: &str| {
        one_line(
            &text
                .replace(&real_tree.display().to_string(), "<bundle>")
                .replace(&tree.display().to_string(), "<bundle>"),
        )
    };
    let settings =
        Settings::load(&path).map_err(|e| refuse(Refusal::InvalidConfig, tidy(&e.to_string())))?;
    // The guard's configuration travels beside it and is refused by the same rules.
    let guard = tree.join(crate::guard::config::GUARD_FILE);
    if guard.exists() {
        crate::guard::config::GuardSettings::load(&guard)
            .map_err(|e| refuse(Refusal::InvalidConfig, tidy(&e.to_string())))?;
    }
    Ok(settings)
}

/// The key ids of a carried key set (`trust/keys/*.pub`), each key checked.
fn check_trust_keys(tree: &Path, manifest: &Manifest) -> Result<Vec<String>, BundleError> {
    let mut ids = Vec::new();
    for file in manifest.trust_keys() {
        let text = std::fs::read_to_string(tree.join(&file.path)).map_err(|_| {
            refuse(
                Refusal::KeyRotation,
                format!("{} is not a text public key", file.path),
            )
        })?;
        let key = parse_public_key(&text)
            .map_err(|e| refuse(Refusal::KeyRotation, format!("{}: {e}", file.path)))?;
        let id = public_key_id(&key);
        if ids.contains(&id) {
            return Err(refuse(
                Refusal::KeyRotation,
                format!("key {id} appears twice in trust/keys/"),
            ));
        }
        ids.push(id);
    }
    ids.sort();
    Ok(ids)
}

/// The signed times against this host's clock: not expired, not created further ahead
/// than the documented skew.
fn check_times(comment: &TrustedComment, now: i64, limits: &Limits) -> Result<(), BundleError> {
    if comment.expires <= now {
        return Err(refuse(
            Refusal::Expired,
            format!("the bundle expired at {}", format_time(comment.expires)),
        ));
    }
    let ahead = i64::try_from(limits.max_created_ahead).unwrap_or(i64::MAX);
    if comment.created > now.saturating_add(ahead) {
        return Err(refuse(
            Refusal::CreatedInFuture,
            format!(
                "the bundle claims to be created at {}, more than {}s ahead of this host's clock ({}); check both clocks",
                format_time(comment.created),
                limits.max_created_ahead,
                format_time(now)
            ),
        ));
    }
    Ok(())
}

fn check_size(bundle: &Path, len: u64, limits: &Limits) -> Result<(), BundleError> {
    if len > limits.max_bundle_bytes {
        return Err(refuse(
            Refusal::TooLarge,
            format!(
                "{} is {len} bytes; at most {} are accepted",
                bundle.display(),
                limits.max_bundle_bytes
            ),
        ));
    }
    Ok(())
}

fn read_signature(path: &Path, limits: &Limits) -> Result<String, BundleError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(refuse(
                Refusal::BadSignature,
                format!("no signature: {} does not exist", path.display()),
            ))
        }
        Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
    };
    let mut bytes = Vec::new();
    file.take(limits.max_signature_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err(format!("cannot read {}", path.display())))?;
    if bytes.len() as u64 > limits.max_signature_bytes {
        return Err(refuse(
            Refusal::BadSignature,
            format!("{} is too large to be a signature", path.display()),
        ));
    }
    String::from_utf8(bytes).map_err(|_| {
        refuse(
            Refusal::BadSignature,
            format!("{} is not a minisign signature (not text)", path.display()),
        )
    })
}

fn open(path: &Path) -> Result<File, BundleError> {
    File::open(path).map_err(io_err(format!("cannot read {}", path.display())))
}

/// Copies `source` into the staging file, refusing past the size cap (the file may grow
/// after it was measured).
fn copy_capped(
    source: &Path,
    target: &Path,
    limits: &Limits,
    progress: &dyn Progress,
) -> Result<u64, BundleError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut input = open(source)?.take(limits.max_bundle_bytes + 1);
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(target)
        .map_err(io_err(format!("cannot create {}", target.display())))?;
    let total = std::fs::metadata(source).map(|m| m.len()).unwrap_or(0);
    progress.start("copying", total);
    let mut buf = vec![0u8; 256 * 1024];
    let mut copied: u64 = 0;
    loop {
        let n = input
            .read(&mut buf)
            .map_err(io_err(format!("cannot read {}", source.display())))?;
        if n == 0 {
            break;
        }
        copied += n as u64;
        output
            .write_all(&buf[..n])
            .map_err(io_err(format!("cannot write {}", target.display())))?;
        progress.advance(n as u64);
    }
    progress.finish();
    check_size(source, copied, limits)?;
    Ok(copied)
}

/// `staging/import-<pid>-<random>`, removed when dropped (and by recovery after a crash).
struct StagingDir {
    path: PathBuf,
}

impl StagingDir {
    fn create(root: &BundleRoot) -> Result<StagingDir, BundleError> {
        use std::os::unix::fs::DirBuilderExt;
        let path = root.staging_dir().join(format!(
            "import-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err(format!("cannot create {}", path.display())))?;
        Ok(StagingDir { path })
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        let _ = remove_tree(&self.path);
    }
}
