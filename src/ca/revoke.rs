//! Revocation of leaves, and the status of every certificate in the inventory.
//!
//! Responsible for: marking a leaf revoked in the inventory (rewritten atomically under the
//! directory lock) with its time and reason, which [`super::crl`] then publishes, and for
//! telling an operator whether each certificate is valid, revoked or expired.
//!
//! Not responsible for: revoking CA certificates. An intermediate is revoked by the root,
//! which only [`SiteCa::rotate_and_revoke_old`] may use; the root itself cannot be revoked
//! (a new CA replaces it).

use serde::{Deserialize, Serialize};

use super::inventory::{self, issuer_of};
use super::{
    fsio, normalise_serial, now_seconds, parse_rfc3339, rfc3339, same_serial, CaError, CertKind,
    InventoryEntry, SiteCa,
};

/// Why a certificate was revoked: the CRL reasonCode (RFC 5280 §5.3.1). `certificateHold`
/// and `removeFromCRL` are left out: a revocation here is final.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// No reason given (omitted from the CRL entry, as RFC 5280 recommends).
    #[default]
    #[value(name = "unspecified")]
    Unspecified,
    /// The certificate's private key is known or suspected to be compromised.
    #[value(name = "keyCompromise")]
    KeyCompromise,
    /// A CA's private key is known or suspected to be compromised.
    #[value(name = "caCompromise")]
    CaCompromise,
    /// The subject's name or other information changed.
    #[value(name = "affiliationChanged")]
    AffiliationChanged,
    /// Replaced by a new certificate.
    #[value(name = "superseded")]
    Superseded,
    /// No longer needed (the workload or client was retired).
    #[value(name = "cessationOfOperation")]
    CessationOfOperation,
    /// The subject is no longer allowed what the certificate grants.
    #[value(name = "privilegeWithdrawn")]
    PrivilegeWithdrawn,
}

impl RevocationReason {
    /// The RFC 5280 name, as on the command line and in the inventory.
    pub fn as_str(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "caCompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
        }
    }

    pub(crate) fn to_rcgen(self) -> rcgen::RevocationReason {
        match self {
            RevocationReason::Unspecified => rcgen::RevocationReason::Unspecified,
            RevocationReason::KeyCompromise => rcgen::RevocationReason::KeyCompromise,
            RevocationReason::CaCompromise => rcgen::RevocationReason::CaCompromise,
            RevocationReason::AffiliationChanged => rcgen::RevocationReason::AffiliationChanged,
            RevocationReason::Superseded => rcgen::RevocationReason::Superseded,
            RevocationReason::CessationOfOperation => rcgen::RevocationReason::CessationOfOperation,
            RevocationReason::PrivilegeWithdrawn => rcgen::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

impl std::fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a certificate stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertStatus {
    /// Within its validity and not revoked.
    Valid,
    /// Revoked itself.
    Revoked,
    /// Past its not-after.
    Expired,
    /// Not revoked itself, but its issuing intermediate is: no chain to the root holds.
    IssuerRevoked,
}

impl CertStatus {
    /// `valid`, `revoked`, `expired` or `issuer-revoked`.
    pub fn as_str(self) -> &'static str {
        match self {
            CertStatus::Valid => "valid",
            CertStatus::Revoked => "revoked",
            CertStatus::Expired => "expired",
            CertStatus::IssuerRevoked => "issuer-revoked",
        }
    }
}

impl std::fmt::Display for CertStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An inventory entry with its status, as `ca list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCert {
    pub entry: InventoryEntry,
    pub status: CertStatus,
}

impl SiteCa {
    /// Marks the leaf with serial `serial_hex` (hex, case and `:` separators ignored)
    /// revoked in the inventory, with the current time and `reason`; the next
    /// [`SiteCa::crl_pem`] lists it. Refuses an unknown serial ([`CaError::UnknownSerial`]),
    /// one already revoked, and CA certificates ([`CaError::CannotRevokeCa`]).
    pub fn revoke(&self, serial_hex: &str, reason: RevocationReason) -> Result<(), CaError> {
        let wanted = normalise_serial(serial_hex)?;
        let _lock = fsio::DirLock::acquire(&self.dir)?;
        let path = self.inventory_path();
        let mut entries = inventory::read(&path)?;
        let entry = entries
            .iter_mut()
            .find(|e| same_serial(&e.serial, &wanted))
            .ok_or_else(|| CaError::UnknownSerial(wanted.clone()))?;
        match entry.kind {
            CertKind::Root => {
                return Err(CaError::CannotRevokeCa {
                    serial: entry.serial.clone(),
                    kind: entry.kind,
                    hint: "a root cannot be revoked; initialise a new CA and replace root.crt everywhere",
                })
            }
            CertKind::Intermediate => {
                return Err(CaError::CannotRevokeCa {
                    serial: entry.serial.clone(),
                    kind: entry.kind,
                    hint: "revoking an issuing CA needs the root key; run `sealkit ca rotate --revoke-old <reason>`, which makes a new intermediate and revokes all older ones",
                })
            }
            CertKind::Server | CertKind::Client => {}
        }
        if entry.revoked {
            return Err(CaError::AlreadyRevoked {
                serial: entry.serial.clone(),
                at: entry
                    .revoked_at
                    .clone()
                    .unwrap_or_else(|| "an unrecorded time".to_string()),
            });
        }
        entry.revoked = true;
        entry.revoked_at = Some(rfc3339(now_seconds()?));
        entry.revocation_reason = Some(reason);
        inventory::rewrite(&path, &entries)
    }

    /// Every certificate in the inventory with its status now, oldest first.
    pub fn list(&self) -> Result<Vec<ListedCert>, CaError> {
        let path = self.inventory_path();
        let entries = inventory::read(&path)?;
        let now = now_seconds()?;
        let mut listed = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let not_after =
                parse_rfc3339(&entry.not_after).ok_or_else(|| CaError::BadInventory {
                    path: path.clone(),
                    line: i + 1,
                    reason: format!("not_after {:?} is not RFC 3339 UTC", entry.not_after),
                })?;
            let issuer_revoked = issuer_of(entry, &entries)
                .and_then(|issuer| entries.iter().find(|e| e.serial == issuer))
                .is_some_and(|issuer| issuer.revoked);
            let status = if entry.revoked {
                CertStatus::Revoked
            } else if not_after <= now {
                CertStatus::Expired
            } else if issuer_revoked {
                CertStatus::IssuerRevoked
            } else {
                CertStatus::Valid
            };
            listed.push(ListedCert {
                entry: entry.clone(),
                status,
            });
        }
        Ok(listed)
    }
}
