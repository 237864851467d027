//! `manifest.json`: what a bundle claims to contain, and the rules a path, a site id, a
//! mode and a time must follow. Pure functions of bytes and strings; no I/O.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};

/// The format this code writes and the only one it reads.
pub const FORMAT_VERSION: u32 = 1;
/// Name of the manifest: the archive's first entry, reserved at the top level.
pub const MANIFEST_NAME: &str = "manifest.json";
/// The configuration file every bundle carries at its top level.
pub const CONFIG_NAME: &str = "authority.yaml";
/// Directory of a bundle that carries a new trusted key set (`*.pub`, minisign format).
pub const TRUST_KEYS_DIR: &str = "trust/keys";
/// Longest accepted path (bytes) and path component: the archive reader's.
pub use crate::archive::{MAX_COMPONENT_BYTES, MAX_PATH_BYTES};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub site: String,
    /// Monotonic: an import must be strictly newer than the active bundle.
    pub version: u64,
    /// RFC 3339, UTC, whole seconds (`2026-11-05T12:00:00Z`).
    pub created: String,
    pub expires: String,
    /// Every file, sorted by path (byte order), the manifest itself excluded.
    pub files: Vec<FileEntry>,
    pub totals: Totals,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileEntry {
    /// Relative, `/`-separated, see [`check_path`].
    pub path: String,
    pub size: u64,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Octal permission bits as in the tar header, `0644` or `0755` when packed by sealkit.
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Totals {
    pub files: u64,
    pub bytes: u64,
}

impl Manifest {
    /// The canonical serialisation (pretty JSON and a final newline) that `pack` writes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    /// Parses and validates manifest bytes; the error is one line.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, String> {
        let manifest: Manifest =
            serde_json::from_slice(bytes).map_err(|e| format!("not a bundle manifest: {e}"))?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the internal consistency of a manifest.
    pub fn validate(&self) -> Result<(), String> {
        if self.format_version != FORMAT_VERSION {
            return Err(format!(
                "formatVersion {} is not supported (this sealkit reads {FORMAT_VERSION})",
                self.format_version
            ));
        }
        check_site(&self.site)?;
        if self.version == 0 {
            return Err("version must be at least 1".into());
        }
        let created = parse_time(&self.created).map_err(|e| format!("created: {e}"))?;
        let expires = parse_time(&self.expires).map_err(|e| format!("expires: {e}"))?;
        if expires <= created {
            return Err("expires must be after created".into());
        }
        let mut previous: Option<&str> = None;
        let mut bytes: u64 = 0;
        let mut ancestors = HashSet::new();
        for file in &self.files {
            check_path(&file.path).map_err(|e| format!("files: {e}"))?;
            if file.path == MANIFEST_NAME {
                return Err(format!("files: `{MANIFEST_NAME}` is reserved"));
            }
            if let Some(prev) = previous {
                if prev >= file.path.as_str() {
                    return Err(format!(
                        "files: not sorted by path or duplicated at {:?}",
                        file.path
                    ));
                }
            }
            previous = Some(&file.path);
            if !is_sha256_hex(&file.sha256) {
                return Err(format!(
                    "files: sha256 of {:?} is not 64 lowercase hex digits",
                    file.path
                ));
            }
            parse_mode(&file.mode).map_err(|e| format!("files: mode of {:?}: {e}", file.path))?;
            bytes = bytes
                .checked_add(file.size)
                .ok_or_else(|| "totals overflow".to_string())?;
            for ancestor in ancestors_of(&file.path) {
                ancestors.insert(ancestor);
            }
        }
        for file in &self.files {
            if ancestors.contains(file.path.as_str()) {
                return Err(format!(
                    "files: {:?} is both a file and a directory",
                    file.path
                ));
            }
            if let Some(name) = file.path.strip_prefix("trust/keys/") {
                if name.contains('/') || !name.ends_with(".pub") || name.len() <= 4 {
                    return Err(format!(
                        "files: {:?}: trust/keys/ holds only <name>.pub public keys",
                        file.path
                    ));
                }
            }
        }
        if !self.files.iter().any(|f| f.path == CONFIG_NAME) {
            return Err(format!("files: the bundle has no {CONFIG_NAME}"));
        }
        if self.totals.files != self.files.len() as u64 || self.totals.bytes != bytes {
            return Err(format!(
                "totals say {} file(s), {} byte(s); the list has {} file(s), {} byte(s)",
                self.totals.files,
                self.totals.bytes,
                self.files.len(),
                bytes
            ));
        }
        Ok(())
    }

    pub fn created_unix(&self) -> i64 {
        parse_time(&self.created).unwrap_or(i64::MAX)
    }

    pub fn expires_unix(&self) -> i64 {
        parse_time(&self.expires).unwrap_or(i64::MIN)
    }

    pub fn find(&self, path: &str) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .and_then(|i| self.files.get(i))
    }

    /// The directories implied by the file paths (every proper ancestor).
    pub fn directories(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .flat_map(|f| ancestors_of(&f.path))
            .map(str::to_string)
            .collect()
    }

    /// The `trust/keys/*.pub` files: a new trusted key set, when present.
    pub fn trust_keys(&self) -> Vec<&FileEntry> {
        self.files
            .iter()
            .filter(|f| f.path.starts_with("trust/keys/"))
            .collect()
    }
}

pub use crate::archive::ancestors_of;

pub use crate::archive::check_path;

/// A site id: 1–64 of `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_site(site: &str) -> Result<(), String> {
    let ok = !site.is_empty()
        && site.len() <= 64
        && site.as_bytes()[0].is_ascii_alphanumeric()
        && site
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "site {site:?} must be 1-64 of A-Z a-z 0-9 . _ - starting with a letter or digit"
        ))
    }
}

/// `0644` → 0o644. Exactly four octal digits, a leading 0, no setuid/setgid/sticky bits.
pub fn parse_mode(text: &str) -> Result<u32, String> {
    if text.len() != 4 || !text.starts_with('0') {
        return Err(format!("{text:?} is not four octal digits like 0644"));
    }
    u32::from_str_radix(text, 8).map_err(|_| format!("{text:?} is not octal"))
}

pub fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o777)
}

fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Unix seconds → `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` → unix seconds. Only that canonical form is accepted, so a
/// time has one spelling (the trusted comment and the manifest must agree byte for byte).
pub fn parse_time(text: &str) -> Result<i64, String> {
    let parsed = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_err(|_| format!("{text:?} is not an RFC 3339 time"))?;
    let unix = parsed.unix_timestamp();
    if format_time(unix) != text {
        return Err(format!(
            "{text:?} is not in the canonical form YYYY-MM-DDTHH:MM:SSZ"
        ));
    }
    Ok(unix)
}
