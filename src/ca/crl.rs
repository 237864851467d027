//! Certificate revocation lists.
//!
//! Responsible for: one CRL per issuing intermediate that is neither expired nor revoked,
//! signed with that intermediate's key and listing its revoked, unexpired leaves; the
//! root's CRL (`root.crl`, revoked intermediates), which only operations holding the root
//! key (`init`, `rotate`) write; and the CRL number, one counter in `crl_number` shared by
//! all of them that increases with every CRL signed, so each issuer's numbers increase
//! too (RFC 5280 §5.2.3).
//!
//! [`SiteCa::crl_pem`] returns all of them concatenated in one PEM text: the current
//! intermediate's first, then older intermediates', then the root's. OpenSSL
//! (`-CRLfile`) and rustls (`CertificateRevocationListDer` per PEM block) both load
//! several CRLs from one file and pick each certificate's by issuer name, which is why
//! every intermediate has a distinct name.
//!
//! Not responsible for: distributing CRLs, or checking them at handshake time.

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use time::{Duration, OffsetDateTime};

use super::inventory::{self, issuer_of};
use super::rotate::{self, IntermediateFiles};
use super::{
    fsio, generate, now_seconds, parse_rfc3339, with_newline, CaError, CaSigner, CertKind,
    InventoryEntry, SiteCa, BACKDATE, CRL_NUMBER_FILE, ROOT_CRL_FILE,
};

/// Longest CRL validity `crl_pem` accepts.
pub const MAX_CRL_DAYS: u32 = 366;

impl SiteCa {
    /// Signs a fresh CRL for every issuing intermediate that is neither expired nor revoked
    /// (each listing that intermediate's revoked, unexpired leaves, valid from now − 5 min
    /// until now + `valid_days`) under one new CRL number, and returns them as one PEM text
    /// followed by the root's CRL of revoked intermediates. `valid_days` is 1 to 366.
    pub fn crl_pem(&self, valid_days: u32) -> Result<String, CaError> {
        if valid_days == 0 || valid_days > MAX_CRL_DAYS {
            return Err(CaError::InvalidValidity(valid_days));
        }
        let _lock = fsio::DirLock::acquire(&self.dir)?;
        let entries = inventory::read(&self.inventory_path())?;
        let now = now_seconds()?;
        let next_update = now + Duration::days(i64::from(valid_days));
        let number = next_crl_number(&self.dir)?;

        let mut out = String::new();
        for ca in rotate::intermediates(&self.dir)? {
            if ca.not_after <= now || is_revoked(&ca.serial, &entries) {
                continue;
            }
            let signer = signer_for(self, &ca)?;
            let revoked = revoked_entries(&entries, &signer.serial_hex, now)?;
            out.push_str(&sign(&signer, revoked, number, now, next_update)?);
        }
        let root_crl = self.dir.join(ROOT_CRL_FILE);
        if root_crl.symlink_metadata().is_ok() {
            let text = fsio::read_to_string(&root_crl)?;
            openssl::x509::X509Crl::from_pem(text.as_bytes()).map_err(|e| {
                CaError::BadCertificate {
                    path: root_crl.clone(),
                    reason: e.to_string(),
                }
            })?;
            out.push_str(&with_newline(text));
        }
        Ok(out)
    }
}

/// The signer of one intermediate: the loaded one for the current intermediate, else its
/// archived certificate and key.
fn signer_for(ca: &SiteCa, files: &IntermediateFiles) -> Result<CaSigner, CaError> {
    CaSigner::load(&files.cert_path, &files.key_path, ca.algorithm)
}

fn is_revoked(serial: &str, entries: &[InventoryEntry]) -> bool {
    entries.iter().any(|e| e.serial == serial && e.revoked)
}

/// CRL entries for the revoked, unexpired certificates `issuer` signed.
fn revoked_entries(
    entries: &[InventoryEntry],
    issuer: &str,
    now: OffsetDateTime,
) -> Result<Vec<RevokedCertParams>, CaError> {
    let mut revoked = Vec::new();
    for entry in entries {
        if !entry.revoked || issuer_of(entry, entries) != Some(issuer) {
            continue;
        }
        match parse_rfc3339(&entry.not_after) {
            // An expired certificate fails validation anyway; RFC 5280 §3.3 lets it go.
            Some(not_after) if not_after <= now => continue,
            _ => {}
        }
        let serial = hex_to_bytes(&entry.serial).ok_or_else(|| CaError::BadInventory {
            path: "inventory.jsonl".into(),
            line: 0,
            reason: format!("serial {:?} is not hexadecimal", entry.serial),
        })?;
        revoked.push(RevokedCertParams {
            serial_number: SerialNumber::from_slice(&serial),
            revocation_time: entry
                .revoked_at
                .as_deref()
                .and_then(parse_rfc3339)
                .unwrap_or(now),
            reason_code: entry.revocation_reason.map(|r| r.to_rcgen()),
            invalidity_date: None,
        });
    }
    Ok(revoked)
}

fn sign(
    signer: &CaSigner,
    revoked: Vec<RevokedCertParams>,
    number: u64,
    now: OffsetDateTime,
    next_update: OffsetDateTime,
) -> Result<String, CaError> {
    // The authority key identifier must be the issuer's subject key identifier, which
    // `CaSigner` carries as a pre-specified key id.
    let params = CertificateRevocationListParams {
        this_update: now - BACKDATE,
        next_update,
        crl_number: SerialNumber::from_slice(&number_bytes(number)),
        issuing_distribution_point: None,
        revoked_certs: revoked,
        key_identifier_method: signer.issuer.params().key_identifier_method.clone(),
    };
    debug_assert!(matches!(
        params.key_identifier_method,
        KeyIdMethod::PreSpecified(_)
    ));
    let crl = params
        .signed_by(&signer.issuer, &signer.key)
        .map_err(generate("CRL"))?;
    Ok(with_newline(crl.pem().map_err(generate("CRL PEM"))?))
}

/// Writes `root.crl`: the root's CRL of revoked, unexpired intermediates. Valid until the
/// last unexpired intermediate expires, since only another root operation (which rewrites
/// it) can change its contents. Caller holds the directory lock or is `init`.
pub(crate) fn write_root_crl(
    dir: &std::path::Path,
    root: &CaSigner,
    entries: &[InventoryEntry],
) -> Result<(), CaError> {
    let now = now_seconds()?;
    let revoked = revoked_entries(entries, &root.serial_hex, now)?;
    let last_expiry = entries
        .iter()
        .filter(|e| e.kind == CertKind::Intermediate)
        .filter_map(|e| parse_rfc3339(&e.not_after))
        .fold(now + Duration::days(1), OffsetDateTime::max);
    let next_update = last_expiry.min(root.not_after.max(now + Duration::days(1)));
    let number = next_crl_number(dir)?;
    let pem = sign(root, revoked, number, now, next_update)?;
    fsio::replace(&dir.join(ROOT_CRL_FILE), pem.as_bytes(), fsio::PUBLIC_MODE)
}

/// Reserves the next CRL number: reads `crl_number` (0 if absent), writes back one more,
/// durably, before any CRL carries it. A number lost to a crash is skipped, never reused.
pub(crate) fn next_crl_number(dir: &std::path::Path) -> Result<u64, CaError> {
    let path = dir.join(CRL_NUMBER_FILE);
    let bad = |reason: String| CaError::BadCrlNumber {
        path: path.clone(),
        reason,
    };
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse::<u64>()
            .map_err(|e| bad(format!("{e}")))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(fsio::io_err("read", &path)(e)),
    };
    let next = last
        .checked_add(1)
        .ok_or_else(|| bad("exhausted".to_string()))?;
    fsio::replace(&path, format!("{next}\n").as_bytes(), fsio::PUBLIC_MODE)?;
    Ok(next)
}

/// Minimal big-endian octets of a positive number (rcgen adds a 0x00 if the top bit is set).
fn number_bytes(n: u64) -> Vec<u8> {
    let bytes = n.to_be_bytes();
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len() - 1);
    bytes[first..].to_vec()
}

fn hex_to_bytes(hex: &str) -> Option<Vec<u8>> {
    let padded = if hex.len() % 2 == 1 {
        format!("0{hex}")
    } else {
        hex.to_string()
    };
    (0..padded.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(padded.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod unit {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn crl_numbers_and_serials_encode() {
        assert_eq!(number_bytes(1), [1]);
        assert_eq!(number_bytes(256), [1, 0]);
        assert_eq!(number_bytes(0), [0]);
        assert_eq!(hex_to_bytes("4A0F").unwrap(), [0x4a, 0x0f]);
        assert_eq!(hex_to_bytes("A0F").unwrap(), [0x0a, 0x0f]);
        assert!(hex_to_bytes("zz").is_none());
    }
}
