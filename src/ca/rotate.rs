//! Rotation of the issuing intermediate, and the trust bundle.
//!
//! Responsible for: minting a new intermediate under the existing root — the only
//! operation after `init` that reads `root.key`, deliberately and nowhere else — while the
//! old intermediates stay in `intermediates/` (certificate and key, the key to keep signing
//! CRLs) so their leaves remain valid until they expire; optionally revoking every older
//! intermediate in the root's CRL (compromise); and `ca-bundle.crt`, the root followed by
//! every non-expired, non-revoked intermediate, which servers load as their client-CA
//! bundle.
//!
//! Not responsible for: re-issuing the leaves of a revoked intermediate (the runbook's
//! job), or replacing the root (a new `init`).
//!
//! # Crash safety
//!
//! The outgoing and the new intermediate are first written to `intermediates/` (`O_EXCL`,
//! fsynced), then recorded in the inventory, then `intermediate.key` and
//! `intermediate.crt` are replaced by rename, key first. A crash between those two renames
//! leaves a new key beside the old certificate; [`SiteCa::open`] recognises that state and
//! names the one-line fix ([`CaError::InterruptedRotation`]).

use std::path::{Path, PathBuf};

use openssl::x509::X509;
use time::{Duration, OffsetDateTime};

use super::inventory;
use super::{
    asn1_to_offset, crl, fsio, generate, generate_key, hex_upper, intermediate_cn,
    intermediate_params, load_cert, now_seconds, ossl, random_serial, read_meta, rfc3339,
    with_newline, CaError, CaSigner, CertKind, InventoryEntry, KeyAlgorithm, RevocationReason,
    SiteCa, INTERMEDIATES_DIR, INTERMEDIATE_CERT_FILE, INTERMEDIATE_KEY_FILE,
    INTERMEDIATE_VALIDITY, INVENTORY_FILE, ROOT_CERT_FILE, ROOT_KEY_FILE, TRUST_BUNDLE_FILE,
};
use sha2::{Digest, Sha256};

/// A new intermediate must be useful for at least this long before the root expires.
const MIN_INTERMEDIATE_LIFETIME: Duration = Duration::days(30);

impl SiteCa {
    /// Makes a new issuing intermediate (5 years, or until the root expires if sooner)
    /// signed with the root key, and makes it current. Older intermediates stay valid,
    /// with their certificate and key in `intermediates/`, so their leaves keep verifying
    /// against [`SiteCa::trust_bundle_path`] until they expire and keep appearing in CRLs.
    /// Rewrites the root CRL and the trust bundle. Returns the CA with the new intermediate.
    ///
    /// This and `init` are the only operations that read `root.key`.
    pub fn rotate(dir: &Path) -> Result<SiteCa, CaError> {
        rotate(dir, None)
    }

    /// As [`SiteCa::rotate`], and also revokes every older, unexpired intermediate in the
    /// root's CRL with `reason` and drops it from the trust bundle: its leaves stop
    /// verifying wherever the new CRLs and bundle are installed. For a compromised
    /// intermediate key.
    pub fn rotate_and_revoke_old(dir: &Path, reason: RevocationReason) -> Result<SiteCa, CaError> {
        rotate(dir, Some(reason))
    }

    /// The root followed by every non-expired, non-revoked intermediate (current first),
    /// PEM: the client-CA bundle for servers.
    pub fn trust_bundle_pem(&self) -> Result<String, CaError> {
        trust_bundle_pem(&self.dir)
    }

    /// `ca-bundle.crt` in the CA directory: [`SiteCa::trust_bundle_pem`] as of the last
    /// `init`, `rotate` or [`SiteCa::write_trust_bundle`].
    pub fn trust_bundle_path(&self) -> PathBuf {
        self.dir.join(TRUST_BUNDLE_FILE)
    }

    /// Rewrites `ca-bundle.crt` (atomically), e.g. to drop intermediates that have expired.
    pub fn write_trust_bundle(&self) -> Result<PathBuf, CaError> {
        let _lock = fsio::DirLock::acquire(&self.dir)?;
        write_trust_bundle(&self.dir)?;
        Ok(self.trust_bundle_path())
    }
}

fn rotate(dir: &Path, revoke_old: Option<RevocationReason>) -> Result<SiteCa, CaError> {
    let lock = fsio::DirLock::acquire(dir)?;
    // Refuses a damaged directory (or an interrupted rotation) before anything changes.
    let outgoing = SiteCa::open(dir)?;
    let meta = read_meta(dir)?;
    let alg = meta.algorithm;

    // The deliberate read of the root key, kept offline between rotations.
    let root_key = dir.join(ROOT_KEY_FILE);
    if !root_key.exists() {
        return Err(CaError::RootKeyOffline { path: root_key });
    }
    let root = CaSigner::load(&dir.join(ROOT_CERT_FILE), &dir.join(ROOT_KEY_FILE), alg)?;

    let now = now_seconds()?;
    let not_after = (now + INTERMEDIATE_VALIDITY).min(root.not_after);
    if not_after - now < MIN_INTERMEDIATE_LIFETIME {
        return Err(CaError::RootExpiring {
            not_after: rfc3339(root.not_after),
        });
    }
    let inventory_path = dir.join(INVENTORY_FILE);
    let mut entries = inventory::read(&inventory_path)?;
    let generation = entries
        .iter()
        .filter(|e| e.kind == CertKind::Intermediate)
        .count()
        + 1;
    let cn = intermediate_cn(&meta.name, generation)?;
    let key = generate_key(alg, "intermediate key")?;
    let serial = random_serial()?;
    let serial_hex = hex_upper(&serial);
    let cert = intermediate_params(&serial, &cn, &meta.name, now, not_after)
        .signed_by(&key, &root.issuer, &root.key)
        .map_err(generate("intermediate certificate"))?;
    let key_pem = key.serialize_pem();
    let cert_pem = with_newline(cert.pem());

    // 1. Archive the outgoing intermediate and place the new one beside it.
    let archive = dir.join(INTERMEDIATES_DIR);
    fsio::create_dir(&archive)?;
    let old = outgoing.intermediate_serial.clone();
    write_same(
        &archive.join(format!("{old}.key")),
        fsio::read_to_string(&dir.join(INTERMEDIATE_KEY_FILE))?.as_bytes(),
        fsio::KEY_MODE,
    )?;
    write_same(
        &archive.join(format!("{old}.crt")),
        outgoing.intermediate_pem.as_bytes(),
        fsio::PUBLIC_MODE,
    )?;
    fsio::write_new(
        &archive.join(format!("{serial_hex}.key")),
        key_pem.as_bytes(),
        fsio::KEY_MODE,
    )?;
    fsio::write_new(
        &archive.join(format!("{serial_hex}.crt")),
        cert_pem.as_bytes(),
        fsio::PUBLIC_MODE,
    )?;
    fsio::sync_dir(&archive)?;

    // 2. Record it (and the revocations) before it can issue anything.
    if let Some(reason) = revoke_old {
        let revoked_at = rfc3339(now);
        for entry in entries.iter_mut().filter(|e| {
            e.kind == CertKind::Intermediate
                && !e.revoked
                && super::parse_rfc3339(&e.not_after).is_some_and(|t| t > now)
        }) {
            entry.revoked = true;
            entry.revoked_at = Some(revoked_at.clone());
            entry.revocation_reason = Some(reason);
        }
    }
    entries.push(InventoryEntry {
        serial: serial_hex.clone(),
        kind: CertKind::Intermediate,
        subject: super::subject_string(&cn, Some(&meta.name)),
        sans: Vec::new(),
        not_after: rfc3339(not_after),
        issued_at: rfc3339(now),
        sha256: super::hex_lower(&Sha256::digest(cert.der())),
        revoked: false,
        issuer: Some(root.serial_hex.clone()),
        revoked_at: None,
        revocation_reason: None,
    });
    inventory::rewrite(&inventory_path, &entries)?;

    // 3. Switch, key first (see the module doc).
    fsio::replace(
        &dir.join(INTERMEDIATE_KEY_FILE),
        key_pem.as_bytes(),
        fsio::KEY_MODE,
    )?;
    fsio::replace(
        &dir.join(INTERMEDIATE_CERT_FILE),
        cert_pem.as_bytes(),
        fsio::PUBLIC_MODE,
    )?;

    // 4. What relying parties load.
    crl::write_root_crl(dir, &root, &entries)?;
    write_trust_bundle(dir)?;
    drop(root);
    drop(lock);
    SiteCa::open(dir)
}

/// `write_new`, except that an identical existing file (left by an interrupted earlier
/// rotation) is accepted.
fn write_same(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaError> {
    match fsio::write_new(path, contents, mode) {
        Err(CaError::FileExists { path }) => match std::fs::read(&path) {
            Ok(existing) if existing == contents => Ok(()),
            _ => Err(CaError::FileExists { path }),
        },
        other => other,
    }
}

/// An intermediate certificate in the CA directory and where its key is.
pub(crate) struct IntermediateFiles {
    pub(crate) serial: String,
    pub(crate) cert_path: PathBuf,
    pub(crate) key_path: PathBuf,
    pub(crate) cert: X509,
    pub(crate) not_after: OffsetDateTime,
}

/// The current intermediate, then every other one in `intermediates/` (newest expiry
/// first), each once.
pub(crate) fn intermediates(dir: &Path) -> Result<Vec<IntermediateFiles>, CaError> {
    let describe = |cert_path: PathBuf, key_path: Option<PathBuf>| {
        let cert = load_cert(&cert_path)?;
        let serial = hex_upper(
            &cert
                .serial_number()
                .to_bn()
                .map_err(ossl("read a serial number"))?
                .to_vec(),
        );
        let key_path =
            key_path.unwrap_or_else(|| dir.join(INTERMEDIATES_DIR).join(format!("{serial}.key")));
        let not_after = asn1_to_offset(cert.not_after())?;
        Ok::<_, CaError>(IntermediateFiles {
            serial,
            cert_path,
            key_path,
            cert,
            not_after,
        })
    };
    let current = describe(
        dir.join(INTERMEDIATE_CERT_FILE),
        Some(dir.join(INTERMEDIATE_KEY_FILE)),
    )?;
    let mut others = Vec::new();
    let archive = dir.join(INTERMEDIATES_DIR);
    match std::fs::read_dir(&archive) {
        Ok(listing) => {
            for item in listing {
                let item = item.map_err(fsio::io_err("list", &archive))?;
                let path = item.path();
                if path.extension().and_then(|e| e.to_str()) != Some("crt") {
                    continue;
                }
                let files = describe(path, None)?;
                if files.serial != current.serial
                    && !others
                        .iter()
                        .any(|o: &IntermediateFiles| o.serial == files.serial)
                {
                    others.push(files);
                }
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fsio::io_err("list", &archive)(e)),
    }
    others.sort_by_key(|f| std::cmp::Reverse(f.not_after));
    let mut all = vec![current];
    all.extend(others);
    Ok(all)
}

/// Root + every non-expired intermediate the inventory does not record as revoked.
pub(crate) fn trust_bundle_pem(dir: &Path) -> Result<String, CaError> {
    let entries = inventory::read(&dir.join(INVENTORY_FILE))?;
    let now = now_seconds()?;
    let mut pem = with_newline(fsio::read_to_string(&dir.join(ROOT_CERT_FILE))?);
    for ca in intermediates(dir)? {
        let revoked = entries.iter().any(|e| e.serial == ca.serial && e.revoked);
        if ca.not_after <= now || revoked {
            continue;
        }
        let text = ca.cert.to_pem().map_err(ossl("encode an intermediate"))?;
        pem.push_str(&String::from_utf8_lossy(&text));
    }
    Ok(pem)
}

/// Rewrites `ca-bundle.crt`; caller holds the lock or is `init`.
pub(crate) fn write_trust_bundle(dir: &Path) -> Result<(), CaError> {
    let pem = trust_bundle_pem(dir)?;
    fsio::replace(
        &dir.join(TRUST_BUNDLE_FILE),
        pem.as_bytes(),
        fsio::PUBLIC_MODE,
    )
}

/// If `intermediate.key` belongs to an archived intermediate other than the one in
/// `intermediate.crt`, a rotation stopped between its two renames: say how to finish it.
pub(crate) fn interrupted_rotation(dir: &Path, alg: KeyAlgorithm) -> Option<CaError> {
    let key_pem = fsio::read_to_string(&dir.join(INTERMEDIATE_KEY_FILE)).ok()?;
    let key =
        rcgen::KeyPair::from_pkcs8_pem_and_sign_algo(&key_pem, alg.signature_algorithm()).ok()?;
    let listing = std::fs::read_dir(dir.join(INTERMEDIATES_DIR)).ok()?;
    for item in listing.flatten() {
        let path = item.path();
        if path.extension().and_then(|e| e.to_str()) != Some("crt") {
            continue;
        }
        let Ok(cert) = load_cert(&path) else {
            continue;
        };
        let matches = cert
            .public_key()
            .and_then(|k| k.public_key_to_der())
            .is_ok_and(|der| der == key.public_key_der());
        if matches {
            let serial = path.file_stem()?.to_string_lossy().into_owned();
            return Some(CaError::InterruptedRotation {
                dir: dir.to_path_buf(),
                serial,
            });
        }
    }
    None
}
