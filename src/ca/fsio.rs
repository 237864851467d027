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
