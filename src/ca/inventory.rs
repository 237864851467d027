//! The CA inventory: one JSON object per line (`inventory.jsonl` in the CA directory) for
//! every certificate the CA has issued, CA certificates included. Append-only here; a
//! later revocation step flips `revoked`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::fsio;
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
    /// Set by revocation (a later step); always `false` when issued.
    pub revoked: bool,
}

pub(crate) fn append(path: &Path, entry: &InventoryEntry) -> Result<(), CaError> {
    let mut line = serde_json::to_vec(entry).map_err(|e| CaError::BadInventory {
        path: path.to_path_buf(),
        line: 0,
        reason: e.to_string(),
    })?;
    line.push(b'\n');
    fsio::append(path, &line, fsio::PUBLIC_MODE)
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
