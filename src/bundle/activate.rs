//! The bundle root on a sealed host, and every change to it: the lock, the generations,
//! the atomic `current` switch, `state.json` (with its intent journal), pruning, recovery
//! after an interruption, rollback, and the pinned trusted keys.
//!
//! Layout (`docs/bundle-format.md`, "On the host"):
//!
//! ```text
//! <root>/                      default /var/lib/sealkit/bundles, env SEALKIT_BUNDLE_ROOT
//!   trusted-keys/<KEYID>.pub   pinned minisign public keys
//!   generations/<v>-<sha12>/   extracted bundles, read-only
//!   current -> generations/…   symlink, replaced by renaming current.tmp over it
//!   state.json                 active, previous and rolled-back generations; pending intent
//!   staging/                   scratch of a running import; emptied at the next start
//!   lock                       pid of the process changing the root
//! ```
//!
//! The commit point of an import or rollback is the `rename(current.tmp, current)`. Before
//! it, `state.json` records the intent (`pending`); after it, the intent is completed
//! (trusted keys rotated, state rewritten). [`recover`] finishes or drops an intent left by
//! an interrupted process, so every crash leaves either the old or the new generation
//! active, never a mixture.

use super::error::{io_err, refuse, BundleError, Refusal};
use super::manifest::{format_time, parse_mode, parse_time, Manifest, MANIFEST_NAME};
use super::signing::{parse_public_key, public_key_id, public_key_text, TrustedKeys};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where bundles live unless `--root` or `SEALKIT_BUNDLE_ROOT` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/sealkit/bundles";
/// Environment variable naming the bundle root.
pub const ROOT_ENV: &str = "SEALKIT_BUNDLE_ROOT";
/// How many previous generations an import keeps by default.
pub const DEFAULT_KEEP: usize = 3;
const STATE_FORMAT: u32 = 1;

/// A bundle root directory (nothing is read or created until a method is called).
#[derive(Debug, Clone)]
pub struct BundleRoot {
    path: PathBuf,
}

/// One extracted bundle as recorded in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GenerationRecord {
    /// Directory name under `generations/`: `<version>-<first 12 hex of sha256>`.
    pub generation: String,
    pub site: String,
    pub version: u64,
    /// Lowercase hex SHA-256 of the `.tar.zst` (what the signature covers).
    pub sha256: String,
    pub manifest_sha256: String,
    pub created: String,
    pub expires: String,
    /// minisign key id of the key that signed it.
    pub key_id: String,
    /// When it became active (last time, for a rollback target).
    pub activated_at: String,
    pub files: u64,
    pub bytes: u64,
    /// Key ids of the trusted key set the bundle carries (empty: no rotation).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trust_keys: Vec<String>,
    /// Why it was rolled back from (set on records in `rolledBack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_because: Option<String>,
}

impl GenerationRecord {
    /// `created` as Unix seconds. A damaged value fails closed, as in
    /// [`Manifest::created_unix`]: `i64::MAX`, so nothing counts as created after it.
    /// (Import refuses such a state outright, see [`GenerationRecord::created_checked`].)
    pub fn created_unix(&self) -> i64 {
        parse_time(&self.created).unwrap_or(i64::MAX)
    }
    /// `created` as Unix seconds, or why `state.json` is damaged.
    pub fn created_checked(&self) -> Result<i64, BundleError> {
        parse_time(&self.created).map_err(|e| {
            BundleError::State(format!(
                "state.json is damaged: generation {} has created {e}",
                self.generation
            ))
        })
    }
    /// `expires` as Unix seconds; a damaged value fails closed (`i64::MIN`: expired).
    pub fn expires_unix(&self) -> i64 {
        parse_time(&self.expires).unwrap_or(i64::MIN)
    }
    /// `activatedAt` as Unix seconds (display only; 0 when damaged).
    pub fn activated_unix(&self) -> i64 {
        parse_time(&self.activated_at).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum PendingOp {
    Import,
    Rollback,
}

/// An activation that was started: written before the switch, cleared after it completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pending {
    pub op: PendingOp,
    pub record: GenerationRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    pub format_version: u32,
    /// The site this host belongs to (fixed by the first import).
    pub site: String,
    pub active: Option<GenerationRecord>,
    /// Previously active generations, most recent first: rollback targets.
    #[serde(default)]
    pub previous: Vec<GenerationRecord>,
    /// Generations that were rolled back from, most recent first (removed at the next import).
    #[serde(default)]
    pub rolled_back: Vec<GenerationRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
}

impl State {
    pub fn new(site: &str) -> State {
        State {
            format_version: STATE_FORMAT,
            site: site.to_string(),
            active: None,
            previous: Vec::new(),
            rolled_back: Vec::new(),
            pending: None,
        }
    }

    fn referenced(&self) -> BTreeSet<String> {
        self.active
            .iter()
            .chain(&self.previous)
            .chain(&self.rolled_back)
            .chain(self.pending.as_ref().map(|p| &p.record))
            .map(|r| r.generation.clone())
            .collect()
    }
}

/// What a key-set rotation changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyRotation {
    pub added: Vec<String>,
    pub retired: Vec<String>,
    pub trusted: Vec<String>,
}

impl BundleRoot {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        BundleRoot { path: path.into() }
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// Whether `dir` has a bundle root's layout (`generations/` and `trusted-keys/`):
    /// how the configuration loader recognises paths that lead into a bundle root.
    pub fn has_layout(dir: &Path) -> bool {
        dir.join("generations").is_dir() && dir.join("trusted-keys").is_dir()
    }
    pub fn trusted_keys_dir(&self) -> PathBuf {
        self.path.join("trusted-keys")
    }
    pub fn generations_dir(&self) -> PathBuf {
        self.path.join("generations")
    }
    pub fn generation_dir(&self, generation: &str) -> PathBuf {
        self.generations_dir().join(generation)
    }
    pub fn current_link(&self) -> PathBuf {
        self.path.join("current")
    }
    /// The file the server is started with: `<root>/current/authority.yaml`.
    pub fn config_path(&self) -> PathBuf {
        self.current_link().join(super::manifest::CONFIG_NAME)
    }
    pub fn state_path(&self) -> PathBuf {
        self.path.join("state.json")
    }
    pub fn staging_dir(&self) -> PathBuf {
        self.path.join("staging")
    }
    fn lock_path(&self) -> PathBuf {
        self.path.join("lock")
    }

    /// Creates the layout's directories that are missing (an existing root is untouched).
    pub fn init(&self) -> Result<(), BundleError> {
        for (dir, mode) in [
            (self.path.clone(), 0o755),
            (self.trusted_keys_dir(), 0o755),
            (self.generations_dir(), 0o755),
            (self.staging_dir(), 0o700),
        ] {
            if !dir.is_dir() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .create(&dir)
                    .map_err(io_err(format!("cannot create {}", dir.display())))?;
                std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                    .map_err(io_err(format!("cannot chmod {}", dir.display())))?;
            }
        }
        Ok(())
    }

    /// The pinned keys.
    pub fn trusted_keys(&self) -> Result<TrustedKeys, BundleError> {
        let dir = self.trusted_keys_dir();
        if !dir.is_dir() {
            return Ok(TrustedKeys::default());
        }
        TrustedKeys::load_dir(&dir)
    }

    pub fn read_state(&self) -> Result<Option<State>, BundleError> {
        let path = self.state_path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(format!("cannot read {}", path.display()))(e)),
        };
        let state: State = serde_json::from_slice(&text)
            .map_err(|e| BundleError::State(format!("{} is damaged: {e}", path.display())))?;
        if state.format_version != STATE_FORMAT {
            return Err(BundleError::State(format!(
                "{} has formatVersion {}; this sealkit reads {STATE_FORMAT}",
                path.display(),
                state.format_version
            )));
        }
        Ok(Some(state))
    }

    pub(crate) fn write_state(&self, state: &State) -> Result<(), BundleError> {
        let mut bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| BundleError::State(format!("cannot encode state: {e}")))?;
        bytes.push(b'\n');
        write_atomic(&self.state_path(), &bytes, 0o644)
    }

    /// The generation `current` points at, if any.
    pub fn current_generation(&self) -> Result<Option<String>, BundleError> {
        let link = self.current_link();
        match std::fs::read_link(&link) {
            Ok(target) => {
                let name = target
                    .strip_prefix("generations")
                    .ok()
                    .and_then(|rest| rest.to_str())
                    .filter(|rest| !rest.is_empty() && !rest.contains('/'))
                    .map(str::to_string);
                name.map(Some).ok_or_else(|| {
                    BundleError::State(format!(
                        "{} points at {}, not at generations/<name>",
                        link.display(),
                        target.display()
                    ))
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("cannot read {}", link.display()))(e)),
        }
    }

    /// Takes the root's lock (a pid file; a lock whose process is gone is taken over).
    pub(crate) fn lock(&self) -> Result<RootLock, BundleError> {
        let path = self.lock_path();
        let pid = std::process::id();
        for _ in 0..3 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
            {
                Ok(mut file) => {
                    file.write_all(format!("{pid}\n").as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(io_err(format!("cannot write {}", path.display())))?;
                    return Ok(RootLock { path, pid });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let holder = std::fs::read_to_string(&path)
                        .ok()
                        .and_then(|t| t.trim().parse::<u32>().ok());
                    match holder {
                        Some(other) if Path::new(&format!("/proc/{other}")).exists() => {
                            return Err(BundleError::Busy { path, pid: other })
                        }
                        _ => {
                            tracing::warn!(
                                event = "authority.bundle.staleLock",
                                lock = %path.display(),
                                "taking over the lock of a process that is gone"
                            );
                            match std::fs::remove_file(&path) {
                                Ok(()) => {}
                                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                                Err(e) => {
                                    return Err(io_err(format!(
                                        "cannot remove stale lock {}",
                                        path.display()
                                    ))(e))
                                }
                            }
                        }
                    }
                }
                Err(e) => return Err(io_err(format!("cannot create {}", path.display()))(e)),
            }
        }
        Err(BundleError::State(format!(
            "cannot take the lock {}",
            path.display()
        )))
    }

    /// Pins a public key (`trusted-keys/<KEYID>.pub`). Returns its id and whether it is new.
    pub fn trust_add(&self, key_file: &Path) -> Result<(String, bool), BundleError> {
        self.init()?;
        let _lock = self.lock()?;
        let text = std::fs::read_to_string(key_file)
            .map_err(io_err(format!("cannot read {}", key_file.display())))?;
        let key = parse_public_key(&text)
            .map_err(|e| BundleError::Key(format!("{}: {e}", key_file.display())))?;
        let id = public_key_id(&key);
        let target = self.trusted_keys_dir().join(format!("{id}.pub"));
        if target.exists() {
            return Ok((id, false));
        }
        write_atomic(&target, public_key_text(&key).as_bytes(), 0o644)?;
        tracing::info!(event = "authority.bundle.keyTrusted", key_id = %id, source = %key_file.display());
        Ok((id, true))
    }

    /// Unpins a key; the last key cannot be removed (nothing could be imported any more).
    pub fn trust_remove(&self, id: &str) -> Result<(), BundleError> {
        let _lock = self.lock()?;
        let keys = self.trusted_keys()?;
        let Some(key) = keys.keys().iter().find(|k| k.id.eq_ignore_ascii_case(id)) else {
            return Err(BundleError::Usage(format!("key {id} is not trusted")));
        };
        if keys.keys().len() == 1 {
            return Err(BundleError::Usage(format!(
                "{id} is the only trusted key; pin its successor first"
            )));
        }
        std::fs::remove_file(&key.source)
            .map_err(io_err(format!("cannot remove {}", key.source.display())))?;
        super::archive::sync_dir(&self.trusted_keys_dir())?;
        tracing::info!(event = "authority.bundle.keyRetired", key_id = %key.id, via = "trust remove");
        Ok(())
    }
}

/// The root's lock; released (the pid file removed) when dropped.
pub(crate) struct RootLock {
    path: PathBuf,
    pid: u32,
}

impl Drop for RootLock {
    fn drop(&mut self) {
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            == Some(self.pid);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (created
/// with `mode`), fsync, rename over `path`, fsync of the directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BundleError> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_file(&temp);
    let ctx = || format!("cannot write {}", path.display());
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(io_err(ctx()))?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    drop(file);
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(io_err(ctx())(e));
    }
    super::archive::sync_dir(dir)
}

/// Points `current` at `generations/<generation>` with one rename.
pub(crate) fn switch_current(root: &BundleRoot, generation: &str) -> Result<(), BundleError> {
    let temp = root.path().join("current.tmp");
    let _ = std::fs::remove_file(&temp);
    std::os::unix::fs::symlink(Path::new("generations").join(generation), &temp)
        .map_err(io_err(format!("cannot create {}", temp.display())))?;
    std::fs::rename(&temp, root.current_link()).map_err(io_err(format!(
        "cannot switch {}",
        root.current_link().display()
    )))?;
    super::archive::sync_dir(root.path())
}

/// Makes an extracted generation read-only: files 0444 (0555 when the manifest says
/// executable), directories 0555.
pub(crate) fn make_read_only(dir: &Path, manifest: &Manifest) -> Result<(), BundleError> {
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(io_err(format!("cannot chmod {}", path.display())))
    };
    chmod(&dir.join(MANIFEST_NAME), 0o444)?;
    for file in &manifest.files {
        let mode = parse_mode(&file.mode).unwrap_or(0o644) & 0o555;
        chmod(&dir.join(&file.path), mode | 0o444)?;
    }
    for sub in manifest.directories().iter().rev() {
        chmod(&dir.join(sub), 0o555)?;
    }
    chmod(dir, 0o555)
}

/// Removes a directory tree this module created (making it writable first).
pub(crate) fn remove_tree(path: &Path) -> Result<(), BundleError> {
    let meta = match path.symlink_metadata() {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(format!("cannot inspect {}", path.display()))(e)),
    };
    if meta.is_dir() {
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700));
        let entries =
            std::fs::read_dir(path).map_err(io_err(format!("cannot read {}", path.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("cannot read {}", path.display())))?;
            remove_tree(&entry.path())?;
        }
        std::fs::remove_dir(path).map_err(io_err(format!("cannot remove {}", path.display())))
    } else {
        std::fs::remove_file(path).map_err(io_err(format!("cannot remove {}", path.display())))
    }
}

/// Installs the trusted key set a generation carries (`trust/keys/*.pub`): new keys are
/// written first, then every key not in the set is retired. Idempotent.
pub(crate) fn apply_trust(
    root: &BundleRoot,
    generation_dir: &Path,
) -> Result<KeyRotation, BundleError> {
    let source = generation_dir.join(super::manifest::TRUST_KEYS_DIR);
    let new_set = TrustedKeys::load_dir(&source)?;
    if new_set.is_empty() {
        return Err(refuse(
            Refusal::KeyRotation,
            "the bundle's trusted key set is empty",
        ));
    }
    let dir = root.trusted_keys_dir();
    // Every pinned key file, parsed when possible (an unreadable one is replaced too).
    let mut before: Vec<(PathBuf, Option<String>)> = Vec::new();
    let entries =
        std::fs::read_dir(&dir).map_err(io_err(format!("cannot read {}", dir.display())))?;
    for entry in entries {
        let path = entry
            .map_err(io_err(format!("cannot read {}", dir.display())))?
            .path();
        if path.extension().is_some_and(|e| e == "pub") {
            let id = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| parse_public_key(&t).ok())
                .map(|k| public_key_id(&k));
            before.push((path, id));
        }
    }
    let before_ids: BTreeSet<String> = before.iter().filter_map(|(_, id)| id.clone()).collect();
    let new_ids: BTreeSet<String> = new_set.ids().into_iter().collect();
    let mut rotation = KeyRotation {
        trusted: new_set.ids(),
        retired: before_ids.difference(&new_ids).cloned().collect(),
        ..KeyRotation::default()
    };
    for key in new_set.keys() {
        let target = dir.join(format!("{}.pub", key.id));
        let present = before
            .iter()
            .any(|(path, id)| *path == target && id.as_deref() == Some(key.id.as_str()));
        if !present {
            write_atomic(&target, public_key_text(&key.key).as_bytes(), 0o644)?;
        }
        if !before_ids.contains(&key.id) {
            rotation.added.push(key.id.clone());
        }
    }
    for (path, id) in &before {
        let canonical = id
            .as_ref()
            .is_some_and(|id| new_ids.contains(id) && *path == dir.join(format!("{id}.pub")));
        if !canonical {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(format!("cannot remove {}", path.display()))(e)),
            }
        }
    }
    super::archive::sync_dir(&dir)?;
    Ok(rotation)
}

/// Completes `state.pending` (the switch has happened): rotates keys for an import that
/// carries a key set, moves records, clears the intent, writes the state.
pub(crate) fn complete_pending(
    root: &BundleRoot,
    state: &mut State,
) -> Result<Option<KeyRotation>, BundleError> {
    let Some(pending) = state.pending.clone() else {
        return Ok(None);
    };
    let mut rotation = None;
    match pending.op {
        PendingOp::Import => {
            if !pending.record.trust_keys.is_empty() {
                rotation = Some(apply_trust(
                    root,
                    &root.generation_dir(&pending.record.generation),
                )?);
            }
            state
                .rolled_back
                .retain(|r| r.generation != pending.record.generation);
            state
                .previous
                .retain(|r| r.generation != pending.record.generation);
            if let Some(old) = state.active.take() {
                state.previous.insert(0, old);
            }
        }
        PendingOp::Rollback => {
            state
                .previous
                .retain(|r| r.generation != pending.record.generation);
            if let Some(mut old) = state.active.take() {
                old.rolled_back_because = pending.reason.clone();
                state.rolled_back.insert(0, old);
            }
        }
    }
    state.active = Some(pending.record);
    state.pending = None;
    root.write_state(state)?;
    Ok(rotation)
}

/// Keeps the active generation and `keep` previous ones; removes the rest, the rolled-back
/// ones, and any directory under `generations/` that nothing references.
pub(crate) fn prune(
    root: &BundleRoot,
    state: &mut State,
    keep: usize,
) -> Result<Vec<String>, BundleError> {
    let mut dropped: Vec<GenerationRecord> = Vec::new();
    if state.previous.len() > keep {
        dropped.extend(state.previous.split_off(keep));
    }
    dropped.append(&mut state.rolled_back);
    if !dropped.is_empty() {
        root.write_state(state)?;
    }
    remove_orphans(root, state)
}

fn remove_orphans(root: &BundleRoot, state: &State) -> Result<Vec<String>, BundleError> {
    let mut keep = state.referenced();
    if let Some(current) = root.current_generation()? {
        keep.insert(current);
    }
    let dir = root.generations_dir();
    let mut removed = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
        Err(e) => return Err(io_err(format!("cannot read {}", dir.display()))(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io_err(format!("cannot read {}", dir.display())))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            remove_tree(&entry.path())?;
            removed.push(name);
        }
    }
    if !removed.is_empty() {
        super::archive::sync_dir(&dir)?;
    }
    Ok(removed)
}

/// What [`recover`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Leftovers removed from `staging/` (and a stray `current.tmp`).
    pub cleaned: Vec<String>,
    /// An interrupted activation that had switched `current`, now completed.
    pub completed: Option<String>,
    /// An interrupted activation that had not switched `current`, now dropped.
    pub abandoned: Option<String>,
    /// Generation directories nothing referenced, removed.
    pub orphans: Vec<String>,
}

impl Recovery {
    pub fn is_empty(&self) -> bool {
        self == &Recovery::default()
    }
}

/// Brings a root back to a consistent state after an interrupted import or rollback.
/// Called by every command that changes the root, and meant for the server's start too.
pub fn recover(root: &BundleRoot) -> Result<Recovery, BundleError> {
    if !root.path().is_dir() {
        return Ok(Recovery::default());
    }
    let _lock = root.lock()?;
    recover_locked(root)
}

pub(crate) fn recover_locked(root: &BundleRoot) -> Result<Recovery, BundleError> {
    let mut recovery = Recovery::default();
    let staging = root.staging_dir();
    if staging.is_dir() {
        let entries = std::fs::read_dir(&staging)
            .map_err(io_err(format!("cannot read {}", staging.display())))?;
        for entry in entries {
            let entry = entry.map_err(io_err(format!("cannot read {}", staging.display())))?;
            remove_tree(&entry.path())?;
            recovery
                .cleaned
                .push(format!("staging/{}", entry.file_name().to_string_lossy()));
        }
    }
    let stray = root.path().join("current.tmp");
    if stray.symlink_metadata().is_ok() {
        remove_tree(&stray)?;
        recovery.cleaned.push("current.tmp".into());
    }
    for dir in [root.path().to_path_buf(), root.trusted_keys_dir()] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') && name.contains(".tmp-") {
                remove_tree(&entry.path())?;
                recovery.cleaned.push(name);
            }
        }
    }
    let Some(mut state) = root.read_state()? else {
        return Ok(recovery);
    };
    if let Some(pending) = state.pending.clone() {
        let generation = pending.record.generation.clone();
        if root.current_generation()?.as_deref() == Some(generation.as_str()) {
            complete_pending(root, &mut state)?;
            tracing::info!(
                event = "authority.bundle.activated",
                site = %pending.record.site,
                version = pending.record.version,
                generation = %generation,
                recovered = true,
                "completed an activation interrupted after the switch"
            );
            recovery.completed = Some(generation);
        } else {
            state.pending = None;
            root.write_state(&state)?;
            tracing::warn!(
                event = "authority.bundle.abandoned",
                generation = %generation,
                "dropped an activation interrupted before the switch"
            );
            recovery.abandoned = Some(generation);
        }
    }
    recovery.orphans = remove_orphans(root, &state)?;
    if !recovery.is_empty() {
        tracing::info!(
            event = "authority.bundle.recovered",
            cleaned = recovery.cleaned.len(),
            orphans = recovery.orphans.len(),
            "cleaned up after an interrupted bundle operation"
        );
    }
    Ok(recovery)
}

/// Options of [`rollback`].
#[derive(Debug, Clone)]
pub struct RollbackOptions {
    /// Why: required, recorded in the audit event and `state.json`.
    pub reason: String,
    /// Who (e.g. `$SUDO_USER`), for the audit event.
    pub operator: Option<String>,
    /// Unix seconds.
    pub now: i64,
}

#[derive(Debug, Clone)]
pub struct RollbackOutcome {
    pub from: GenerationRecord,
    pub to: GenerationRecord,
    /// The generation rolled back to has passed its `expires`.
    pub expired: bool,
}

/// Re-activates the most recent previous generation, after re-checking its files against
/// its manifest and its configuration as `config check` would. Trusted keys are not
/// changed (a retired key stays retired).
pub fn rollback(
    root: &BundleRoot,
    options: &RollbackOptions,
) -> Result<RollbackOutcome, BundleError> {
    if options.reason.trim().is_empty() {
        return Err(BundleError::Usage(
            "a rollback needs a reason (--reason)".into(),
        ));
    }
    let _lock = root.lock()?;
    recover_locked(root)?;
    let mut state = root
        .read_state()?
        .ok_or_else(|| BundleError::Usage("no bundle has been imported here".into()))?;
    let Some(from) = state.active.clone() else {
        return Err(BundleError::Usage("no bundle is active".into()));
    };
    let Some(target) = state.previous.first().cloned() else {
        return Err(BundleError::NothingToDo(format!(
            "there is no previous generation to roll back to (active: {})",
            from.generation
        )));
    };
    let dir = root.generation_dir(&target.generation);
    super::archive::check_tree(&dir)?;
    super::import::validate_config(&dir)?;
    let mut record = target.clone();
    record.activated_at = format_time(options.now);
    state.pending = Some(Pending {
        op: PendingOp::Rollback,
        record: record.clone(),
        reason: Some(super::error::one_line(&options.reason)),
    });
    root.write_state(&state)?;
    switch_current(root, &record.generation)?;
    complete_pending(root, &mut state)?;
    tracing::info!(
        event = "authority.bundle.rolledBack",
        site = %record.site,
        from_version = from.version,
        from_generation = %from.generation,
        to_version = record.version,
        to_generation = %record.generation,
        reason = %super::error::one_line(&options.reason),
        operator = %options.operator.as_deref().unwrap_or("unknown"),
    );
    Ok(RollbackOutcome {
        expired: record.expires_unix() <= options.now,
        from,
        to: record,
    })
}

/// A read-only view of a root, for `bundle status`.
#[derive(Debug, Clone)]
pub struct Status {
    pub root: PathBuf,
    pub state: Option<State>,
    /// What `current` points at (should be `state.active`).
    pub current: Option<String>,
    pub trusted_keys: Vec<String>,
    /// Entries in `staging/` (an interrupted import, cleaned at the next command).
    pub staging_leftovers: usize,
}

impl Status {
    /// `current` and `state.json` agree and no intent is pending.
    pub fn consistent(&self) -> bool {
        let active = self
            .state
            .as_ref()
            .and_then(|s| s.active.as_ref())
            .map(|a| a.generation.clone());
        active == self.current
            && self
                .state
                .as_ref()
                .and_then(|s| s.pending.as_ref())
                .is_none()
    }
}

/// Reads a root without changing anything.
pub fn status(root: &BundleRoot) -> Result<Status, BundleError> {
    let staging_leftovers = std::fs::read_dir(root.staging_dir())
        .map(|e| e.count())
        .unwrap_or(0);
    Ok(Status {
        root: root.path().to_path_buf(),
        state: root.read_state()?,
        current: root.current_generation()?,
        trusted_keys: root.trusted_keys()?.ids(),
        staging_leftovers,
    })
}

/// Tells the running authority to reload its configuration (it re-reads
/// `<root>/current/authority.yaml` and keeps its connections), through its local control
/// socket (`crate::control`). The authority validates the new configuration again and
/// keeps the old one if it refuses it; that refusal comes back as the error.
pub fn notify_reload(socket: &Path) -> Result<(), BundleError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BundleError::State(format!("cannot start the reload client: {e}")))?;
    runtime
        .block_on(crate::control::send(
            socket,
            &crate::control::ControlRequest::Reload,
        ))
        .map(|_| ())
        .map_err(|e| BundleError::State(e.to_string()))
}
