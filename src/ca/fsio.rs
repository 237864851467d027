//! File-system helpers for the CA directory: files are created exclusively (never
//! overwritten, never through a pre-existing symlink) with their final mode passed to
//! `open(2)`, so a key file is 0600 from the moment it exists.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::CaError;

/// Mode of private-key files.
pub(crate) const KEY_MODE: u32 = 0o600;
/// Mode of certificates and other public files.
pub(crate) const PUBLIC_MODE: u32 = 0o644;
/// Mode of directories this module creates (they hold keys).
pub(crate) const DIR_MODE: u32 = 0o700;

pub(crate) fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CaError {
    let path = path.to_path_buf();
    move |source| CaError::Io {
        action,
        path,
        source,
    }
}

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is left as is.
pub(crate) fn create_dir(dir: &Path) -> Result<(), CaError> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
        .map_err(io_err("create directory", dir))
}

/// Writes `contents` to a file that must not exist yet, created with `mode`, and syncs it.
///
/// `O_CREAT|O_EXCL` also refuses to follow a symlink planted at `path`.
pub(crate) fn write_new(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|source| {
            if source.kind() == io::ErrorKind::AlreadyExists {
                CaError::FileExists {
                    path: path.to_path_buf(),
                }
            } else {
                io_err("create", path)(source)
            }
        })?;
    file.write_all(contents).map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("sync", path))
}

/// Appends one record (a single `write`, so concurrent appenders do not interleave lines).
pub(crate) fn append(path: &Path, record: &[u8], mode: u32) -> Result<(), CaError> {
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("open", path))?;
    file.write_all(record).map_err(io_err("append to", path))?;
    file.sync_data().map_err(io_err("sync", path))
}

pub(crate) fn read_to_string(path: &Path) -> Result<String, CaError> {
    std::fs::read_to_string(path).map_err(io_err("read", path))
}

/// Refuses a key file that group or others can access (the habit `ssh` enforces).
pub(crate) fn check_key_mode(path: &Path) -> Result<(), CaError> {
    let meta = std::fs::metadata(path).map_err(io_err("inspect", path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(CaError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Best-effort: makes the directory entries of freshly created files durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), CaError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Replaces `path` atomically: the new contents go to a fresh temporary file in the same
/// directory (created with `mode`, written and fsynced), which is then renamed over `path`,
/// and the directory is synced. A reader sees the old file or the new one, never a mix;
/// a crash leaves at most a stray `.<name>.<random>.tmp`.
pub(crate) fn replace(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut suffix = [0u8; 8];
    rand::RngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut suffix)
        .map_err(|e| CaError::Random(e.to_string()))?;
    let suffix: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
    let tmp = dir.join(format!(".{name}.{suffix}.tmp"));
    write_new(&tmp, contents, mode)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_err("replace", path)(e));
    }
    sync_dir(dir)
}

/// How long [`DirLock::acquire`] waits for another CA operation to finish.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
const LOCK_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// An exclusive lock on a CA directory: the file `ca.lock`, created with `O_EXCL` and
/// removed on drop (the `index.lock` habit of git). Every operation that changes the
/// inventory, the CRL number or the current intermediate holds it, so an issuance cannot
/// be lost to a concurrent inventory rewrite.
///
/// A process killed while holding it leaves the file behind; [`CaError::Locked`] then tells
/// the operator to remove it once no other `sealkit ca` command is running.
#[derive(Debug)]
pub(crate) struct DirLock {
    path: std::path::PathBuf,
}

pub(crate) const LOCK_FILE: &str = "ca.lock";

impl DirLock {
    /// Takes the lock, waiting up to 10 seconds for a concurrent holder (blocking).
    pub(crate) fn acquire(dir: &Path) -> Result<DirLock, CaError> {
        let path = dir.join(LOCK_FILE);
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(KEY_MODE)
                .open(&path)
            {
                Ok(mut file) => {
                    // Informational only: who holds it.
                    let _ = writeln!(file, "{}", std::process::id());
                    return Ok(DirLock { path });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if std::time::Instant::now() >= deadline {
                        return Err(CaError::Locked { path });
                    }
                    std::thread::sleep(LOCK_POLL);
                }
                Err(e) => return Err(io_err("create lock file", &path)(e)),
            }
        }
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
