//! The CA inventory: one JSON object per line (`inventory.jsonl` in the CA directory) for
//! every certificate the CA has issued, CA certificates included. Issuance appends a line;
//! revocation ([`super::revoke`]) flips `revoked` by rewriting the whole file atomically
//! (temporary file, fsync, rename). Both hold the directory lock ([`super::fsio::DirLock`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsio;
use super::revoke::RevocationReason;
use super::CaError;

/// What a certificate in the inventory is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertKind {
    /// Self-signed trust anchor.
    Root,
    /// Issuing CA (pathLen 0) signed by the root.
    Intermediate,
    /// TLS server leaf (EKU serverAuth).
    Server,
    /// TLS client leaf (EKU clientAuth).
    Client,
}

impl std::fmt::Display for CertKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CertKind::Root => "root",
            CertKind::Intermediate => "intermediate",
            CertKind::Server => "server",
            CertKind::Client => "client",
        })
    }
}

/// One line of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    /// Serial number, upper-case hex (as `openssl x509 -serial` prints it).
    pub serial: String,
    /// Certificate role.
    pub kind: CertKind,
    /// Subject DN in RFC 4514 form, e.g. `CN=svc-backup,O=ops`.
    pub subject: String,
    /// Subject alternative names as `DNS:…`, `IP:…`, `URI:…`.
    pub sans: Vec<String>,
    /// End of validity, RFC 3339 UTC.
    pub not_after: String,
    /// Time of issuance, RFC 3339 UTC.
    pub issued_at: String,
    /// SHA-256 of the certificate DER, lower-case hex: the value clients are bound by.
    pub sha256: String,
    /// Set by revocation; always `false` when issued.
    pub revoked: bool,
    /// Serial of the issuing CA certificate. Absent for the root, and in entries written
    /// before rotation existed (those were all issued by the first intermediate; see
    /// [`issuer_of`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Time of revocation, RFC 3339 UTC (the CRL entry's revocationDate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    /// Reason given at revocation (the CRL entry's reasonCode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_reason: Option<RevocationReason>,
}

/// The serial of the CA that issued `entry`: its `issuer` field, or for entries written
/// before that field existed, the first intermediate (leaves) or the root (intermediates).
pub(crate) fn issuer_of<'a>(
    entry: &'a InventoryEntry,
    all: &'a [InventoryEntry],
) -> Option<&'a str> {
    if let Some(issuer) = &entry.issuer {
        return Some(issuer);
    }
    let first = |kind: CertKind| {
        all.iter()
            .find(|e| e.kind == kind)
            .map(|e| e.serial.as_str())
    };
    match entry.kind {
        CertKind::Root => None,
        CertKind::Intermediate => first(CertKind::Root),
        CertKind::Server | CertKind::Client => first(CertKind::Intermediate),
    }
}

/// Rewrites the whole inventory atomically (caller holds the directory lock).
pub(crate) fn rewrite(path: &Path, entries: &[InventoryEntry]) -> Result<(), CaError> {
    let mut text = Vec::new();
    for entry in entries {
        text.extend(serialise(path, entry)?);
    }
    fsio::replace(path, &text, fsio::PUBLIC_MODE)
}

fn serialise(path: &Path, entry: &InventoryEntry) -> Result<Vec<u8>, CaError> {
    let mut line = serde_json::to_vec(entry).map_err(|e| CaError::BadInventory {
        path: path.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    Ok(line)
}

/// Appends one entry (caller holds the directory lock, so no rewrite can lose it).
pub(crate) fn append(path: &Path, entry: &InventoryEntry) -> Result<(), CaError> {
    fsio::append(path, &serialise(path, entry)?, fsio::PUBLIC_MODE)
}

pub(crate) fn read(path: &Path) -> Result<Vec<InventoryEntry>, CaError> {
    let text = fsio::read_to_string(path)?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| CaError::BadInventory {
                path: path.to_path_buf(),
                line: i + 1,
                reason: e.to_string(),
            })
        })
        .collect()
}
