//! Site certificate authority for a sealed site.
//!
//! Responsible for: creating a CA directory (a self-signed root valid 10 years and an
//! issuing intermediate with pathLen 0 valid 5 years), reopening it, issuing TLS server
//! leaves (EKU serverAuth, DNS/IP SANs) and client leaves (EKU clientAuth, SAN URI
//! `urn:sealkit:client:<client_id>`), and recording every certificate it issues in an
//! append-only inventory.
//!
//! Not responsible for: serving TLS, deciding whether a presented client certificate is
//! acceptable (clients are bound by certificate hash elsewhere; the inventory's `sha256`
//! is that hash), or revocation checking at handshake time.
//!
//! # Directory layout
//!
//! | file                     | mode | contents                                           |
//! |--------------------------|------|----------------------------------------------------|
//! | `ca.json`                | 0644 | name, key algorithm, format version (written last) |
//! | `root.crt`               | 0644 | root certificate: the trust anchor handed to clients |
//! | `root.key`               | 0600 | root key; read only by `init` and [`SiteCa::rotate`] |
//! | `intermediate.crt`       | 0644 | current issuing CA, appended to every leaf chain    |
//! | `intermediate.key`       | 0600 | its key; `open` refuses it if group/other can read  |
//! | `intermediates/<S>.crt`  | 0644 | every intermediate ever made current, by serial `S` |
//! | `intermediates/<S>.key`  | 0600 | its key, kept to sign CRLs for its remaining leaves |
//! | `ca-bundle.crt`          | 0644 | root + every non-expired, non-revoked intermediate  |
//! | `root.crl`               | 0644 | root-signed CRL of revoked intermediates            |
//! | `crl_number`             | 0644 | last CRL number used (decimal), shared by all CRLs  |
//! | `inventory.jsonl`        | 0644 | one [`InventoryEntry`] per issued certificate       |
//! | `ca.lock`                | 0600 | present while an operation holds the directory lock |
//!
//! `init` creates a missing directory 0700. The files above, and the `<base>.crt` /
//! `<base>.key` pair written by [`IssuedLeaf::write`], are created with `O_EXCL` and their
//! final mode, so nothing is overwritten and no key is ever briefly readable. Files that
//! change later (`inventory.jsonl` on revocation, `intermediate.*`, `ca-bundle.crt`,
//! `root.crl`, `crl_number`) are replaced atomically: temporary file, fsync, rename.
//!
//! # Where the pieces are
//!
//! - here: `init`, `open`, issuance of leaves whose key the CA generates;
//! - `csr.rs`: [`SiteCa::sign_csr`], issuance for a key that never leaves its host — only
//!   the CSR's public key is used, subject/SANs/EKU come from a [`LeafProfile`];
//! - `revoke.rs`: [`SiteCa::revoke`] and the status of each inventory entry;
//! - `crl.rs`: [`SiteCa::crl_pem`], one CRL per issuing intermediate plus the root's;
//! - `rotate.rs`: [`SiteCa::rotate`], the only operation after `init` that loads
//!   `root.key`; it mints a new intermediate (with a distinct name, so that CRLs, which
//!   verifiers match to issuers by name, never collide) and keeps the old ones for their
//!   leaves' lifetime.

mod crl;
mod csr;
pub(crate) mod fsio;
mod inventory;
mod revoke;
mod rotate;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_lifecycle;

pub use csr::{inspect_csr, CsrPublicKey, CsrRequest, LeafProfile};
pub use inventory::{CertKind, InventoryEntry};
pub use revoke::{CertStatus, ListedCert, RevocationReason};

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use openssl::asn1::{Asn1Time, Asn1TimeRef};
use openssl::nid::Nid;
use openssl::pkey::PKey;
use openssl::x509::{X509NameRef, X509};
use rand::RngCore;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
    SignatureAlgorithm,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime, UtcOffset};

const META_FILE: &str = "ca.json";
const ROOT_CERT_FILE: &str = "root.crt";
const ROOT_KEY_FILE: &str = "root.key";
const INTERMEDIATE_CERT_FILE: &str = "intermediate.crt";
const INTERMEDIATE_KEY_FILE: &str = "intermediate.key";
const INVENTORY_FILE: &str = "inventory.jsonl";
const INTERMEDIATES_DIR: &str = "intermediates";
const TRUST_BUNDLE_FILE: &str = "ca-bundle.crt";
const ROOT_CRL_FILE: &str = "root.crl";
const CRL_NUMBER_FILE: &str = "crl_number";
/// Any of these present means the directory already holds (part of) a CA.
const CA_FILES: [&str; 10] = [
    META_FILE,
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    INTERMEDIATE_CERT_FILE,
    INTERMEDIATE_KEY_FILE,
    INVENTORY_FILE,
    INTERMEDIATES_DIR,
    TRUST_BUNDLE_FILE,
    ROOT_CRL_FILE,
    CRL_NUMBER_FILE,
];

const META_FORMAT: u32 = 1;
/// 10 years.
const ROOT_VALIDITY: Duration = Duration::days(3652);
/// 5 years.
const INTERMEDIATE_VALIDITY: Duration = Duration::days(1826);
/// Certificates start 5 minutes in the past to absorb clock skew between hosts.
const BACKDATE: Duration = Duration::minutes(5);
/// 20 octets (the RFC 5280 maximum); 158 of the 160 bits are random.
const SERIAL_LEN: usize = 20;
/// X.520 upper bound for CN and O.
const MAX_DN_VALUE: usize = 64;
/// Leaves room for the " Issuing CA" suffix within [`MAX_DN_VALUE`].
const MAX_CA_NAME: usize = 48;
/// Namespace of the URI SAN in client certificates.
pub const CLIENT_URI_PREFIX: &str = "urn:sealkit:client:";

/// Key algorithm for every key of a CA: root, intermediate and leaves.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
pub enum KeyAlgorithm {
    /// ECDSA on P-256 with SHA-256.
    #[default]
    #[serde(rename = "p256")]
    #[value(name = "p256")]
    EcdsaP256,
    /// ECDSA on P-384 with SHA-384.
    #[serde(rename = "p384")]
    #[value(name = "p384")]
    EcdsaP384,
    /// Ed25519.
    #[serde(rename = "ed25519")]
    #[value(name = "ed25519")]
    Ed25519,
}

impl KeyAlgorithm {
    /// The name used on the command line and in `ca.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "p256",
            KeyAlgorithm::EcdsaP384 => "p384",
            KeyAlgorithm::Ed25519 => "ed25519",
        }
    }

    fn signature_algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyAlgorithm::EcdsaP256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            KeyAlgorithm::EcdsaP384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            KeyAlgorithm::Ed25519 => &rcgen::PKCS_ED25519,
        }
    }
}

impl fmt::Display for KeyAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What went wrong in the CA, in the operator's terms.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// `init` on a directory that already holds CA files.
    #[error("{dir} already holds a CA ({found} exists); refusing to overwrite it")]
    AlreadyInitialised { dir: PathBuf, found: PathBuf },
    /// `open` on a directory without `ca.json`.
    #[error("{dir} is not a sealkit CA directory ({missing} is missing); run `ca init` first")]
    NotInitialised { dir: PathBuf, missing: PathBuf },
    /// `rotate` without `root.key` in the CA directory (it is kept on the offline medium).
    #[error("{} is not here: the root key is kept offline; bring root.key from the offline medium into the CA directory (mode 0600) for this operation, then take it away again (docs/runbooks/ca.md)", .path.display())]
    RootKeyOffline { path: PathBuf },
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} already exists; refusing to overwrite it")]
    FileExists { path: PathBuf },
    #[error("key file {path} has mode {mode:04o}; it must not be accessible to group or others (chmod 600)")]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("CA metadata {path} is invalid: {reason}")]
    BadMetadata { path: PathBuf, reason: String },
    #[error("CA certificate {path} is unusable: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("CA key {path} is unusable: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("inventory {path} line {line} is invalid: {reason}")]
    BadInventory {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("invalid CA name {0:?}: must be 1 to 48 characters without control characters or surrounding spaces")]
    InvalidCaName(String),
    #[error("invalid DNS name {name:?}: {reason}")]
    InvalidDnsName { name: String, reason: &'static str },
    #[error("invalid client id {0:?}: must be 1 to 64 characters from A-Z a-z 0-9 . _ ~ -")]
    InvalidClientId(String),
    #[error("invalid tenant {0:?}: must be 1 to 64 characters without control characters or surrounding spaces")]
    InvalidTenant(String),
    #[error("a server certificate needs at least one DNS name or IP address")]
    NoSubjectAltNames,
    #[error("invalid validity of {0} days")]
    InvalidValidity(u32),
    #[error("a certificate valid until {not_after} would outlive the issuing CA (valid until {issuer_not_after})")]
    OutlivesIssuer {
        not_after: String,
        issuer_not_after: String,
    },
    #[error("invalid output file name {0:?}: use letters, digits, '.', '_' or '-', not starting with '.'")]
    InvalidFileBase(String),
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot {what}: {source}")]
    Openssl {
        what: &'static str,
        #[source]
        source: openssl::error::ErrorStack,
    },
    #[error("system random generator failed: {0}")]
    Random(String),
    #[error("time out of range: {0}")]
    Time(#[from] time::error::ComponentRange),
    /// Another operation holds the CA directory lock.
    #[error("the CA directory is locked by another operation ({path} exists); if no other `sealkit ca` command is running, a previous one was killed: remove {path}")]
    Locked { path: PathBuf },
    /// A crash between the two renames of `ca rotate` left the new key beside the old
    /// certificate.
    #[error("`ca rotate` was interrupted in {dir}: intermediate.key belongs to intermediates/{serial}.crt; finish it with `cp {dir}/intermediates/{serial}.crt {dir}/intermediate.crt`")]
    InterruptedRotation { dir: PathBuf, serial: String },
    /// The CSR is not a PEM PKCS#10 request, or its contents are malformed.
    #[error("invalid certificate signing request: {0}")]
    InvalidCsr(String),
    /// The CSR's signature does not verify with the public key it carries.
    #[error("the certificate signing request's self-signature does not verify with the key it carries (corrupted or altered); refusing to sign it")]
    CsrBadSignature,
    /// The CSR asks to become a CA (basicConstraints CA:TRUE, or keyCertSign/cRLSign).
    #[error("the certificate signing request asks for {asked}; leaves are never CAs: refusing to sign it")]
    CsrRequestsCa { asked: String },
    /// The CSR asks for extended key usages the profile does not grant.
    #[error("the certificate signing request asks for extended key usage {}, which the {profile} profile does not grant (it grants {granted} only): refusing to sign it", asked.join(", "))]
    CsrRequestsEku {
        asked: Vec<String>,
        profile: &'static str,
        granted: &'static str,
    },
    /// The CSR's key type or size is not one a leaf may have.
    #[error("the certificate signing request's public key is not accepted: {0} (use P-256, P-384, Ed25519, or RSA of 2048 to 8192 bits)")]
    UnsupportedCsrKey(String),
    #[error(
        "invalid serial number {0:?}: expected hexadecimal digits (optionally separated by ':')"
    )]
    InvalidSerial(String),
    #[error("no certificate with serial {0} in the inventory")]
    UnknownSerial(String),
    #[error("certificate {serial} was already revoked at {at}")]
    AlreadyRevoked { serial: String, at: String },
    /// `revoke` on a CA certificate: that needs the root key (or a new root).
    #[error("{serial} is the {kind} certificate: {hint}")]
    CannotRevokeCa {
        serial: String,
        kind: CertKind,
        hint: &'static str,
    },
    /// The root expires too soon for a new intermediate to be of use.
    #[error("the root certificate expires at {not_after}; a new intermediate would expire with it: initialise a new CA instead")]
    RootExpiring { not_after: String },
    #[error("CRL number file {path} is invalid: {reason}")]
    BadCrlNumber { path: PathBuf, reason: String },
}

fn generate(what: &'static str) -> impl FnOnce(rcgen::Error) -> CaError {
    move |source| CaError::Generate { what, source }
}

fn ossl(what: &'static str) -> impl FnOnce(openssl::error::ErrorStack) -> CaError {
    move |source| CaError::Openssl { what, source }
}

/// Contents of `ca.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaMeta {
    format: u32,
    name: String,
    algorithm: KeyAlgorithm,
    created_at: String,
}

/// A loaded CA directory, able to issue leaves with its current intermediate.
///
/// Holds the intermediate private key; `Debug` does not print it.
pub struct SiteCa {
    dir: PathBuf,
    name: String,
    algorithm: KeyAlgorithm,
    /// The intermediate's DN, key identifier and key usages, in the form rcgen signs with.
    issuer: Certificate,
    issuer_key: KeyPair,
    intermediate_pem: String,
    intermediate_not_after: OffsetDateTime,
    /// Upper-case hex, as in the inventory.
    intermediate_serial: String,
}

impl fmt::Debug for SiteCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteCa")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("intermediate_serial", &self.intermediate_serial)
            .field("intermediate_not_after", &self.intermediate_not_after)
            .field("issuer_key", &"<redacted>")
            .finish()
    }
}

/// A CA certificate with its key, loaded from the CA directory and checked to belong
/// together, in the form rcgen signs certificates and CRLs with.
pub(crate) struct CaSigner {
    pub(crate) cert: X509,
    /// Rebuilt from the certificate's subject, key identifier and key usages.
    pub(crate) issuer: Certificate,
    pub(crate) key: KeyPair,
    pub(crate) serial_hex: String,
    pub(crate) not_after: OffsetDateTime,
    pub(crate) pem: String,
}

impl CaSigner {
    /// Loads `cert_path` and `key_path` (which must not be readable by group or others).
    pub(crate) fn load(
        cert_path: &Path,
        key_path: &Path,
        alg: KeyAlgorithm,
    ) -> Result<CaSigner, CaError> {
        fsio::check_key_mode(key_path)?;
        let key = KeyPair::from_pkcs8_pem_and_sign_algo(
            &fsio::read_to_string(key_path)?,
            alg.signature_algorithm(),
        )
        .map_err(|e| CaError::BadKey {
            path: key_path.to_path_buf(),
            reason: format!("not a PKCS#8 {alg} key: {e}"),
        })?;
        CaSigner::from_parts(load_cert(cert_path)?, cert_path, key, key_path)
    }

    /// Checks that `key` belongs to `cert` and rebuilds the rcgen issuer.
    pub(crate) fn from_parts(
        cert: X509,
        cert_path: &Path,
        key: KeyPair,
        key_path: &Path,
    ) -> Result<CaSigner, CaError> {
        let bad_cert = |reason: &str| CaError::BadCertificate {
            path: cert_path.to_path_buf(),
            reason: reason.to_string(),
        };
        let cert_spki = cert
            .public_key()
            .and_then(|k| k.public_key_to_der())
            .map_err(ossl("read a CA public key"))?;
        if cert_spki != key.public_key_der() {
            return Err(CaError::BadKey {
                path: key_path.to_path_buf(),
                reason: format!("does not belong to the certificate {}", cert_path.display()),
            });
        }
        let ski = cert
            .subject_key_id()
            .ok_or_else(|| bad_cert("has no subject key identifier"))?
            .as_slice()
            .to_vec();

        // rcgen 0.13 signs with a `Certificate`; without its x509-parser feature we rebuild
        // one from the CA's subject, key identifier and key usages (the only parts used for
        // signing), as rcgen's own `from_ca_cert_der` + `self_signed` does. The rebuilt
        // certificate never leaves memory.
        let mut params = CertificateParams::default();
        params.distinguished_name = dn_from_x509(cert.subject_name(), cert_path)?;
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = ca_key_usages();
        let issuer = params
            .self_signed(&key)
            .map_err(generate("issuer parameters"))?;
        let rebuilt = X509::from_der(issuer.der()).map_err(ossl("parse the rebuilt issuer"))?;
        let subject_der = |c: &X509| c.subject_name().to_der();
        if subject_der(&rebuilt).map_err(ossl("encode a subject"))?
            != subject_der(&cert).map_err(ossl("encode a subject"))?
        {
            return Err(bad_cert("its subject name cannot be reproduced exactly"));
        }

        let serial_hex = hex_upper(
            &cert
                .serial_number()
                .to_bn()
                .map_err(ossl("read a serial number"))?
                .to_vec(),
        );
        let not_after = asn1_to_offset(cert.not_after())?;
        let pem = String::from_utf8(cert.to_pem().map_err(ossl("encode a CA certificate"))?)
            .map_err(|_| bad_cert("PEM encoding is not UTF-8"))?;
        Ok(CaSigner {
            cert,
            issuer,
            key,
            serial_hex,
            not_after,
            pem,
        })
    }
}

/// A freshly issued leaf certificate and, if the CA generated it, its private key.
#[derive(Clone)]
pub struct IssuedLeaf {
    /// Serial number, upper-case hex.
    pub serial_hex: String,
    /// The leaf certificate alone, PEM.
    pub cert_pem: String,
    /// The leaf followed by the intermediate, PEM (what a TLS endpoint presents).
    pub chain_pem: String,
    /// The leaf private key, PKCS#8 PEM; `None` for a leaf signed from a CSR
    /// ([`SiteCa::sign_csr`]), whose key never left its host.
    pub key_pem: Option<String>,
    /// End of validity (whole seconds, as encoded in the certificate).
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLeaf")
            .field("serial_hex", &self.serial_hex)
            .field("not_after", &self.not_after)
            .field("key_pem", &self.key_pem.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl IssuedLeaf {
    /// The paths [`IssuedLeaf::write`] would create for a leaf with a key,
    /// `(<dir>/<base>.crt, <dir>/<base>.key)`, after checking that `base` is a plain file
    /// name and that neither file exists yet. Call it before issuing so a leaf is not
    /// recorded in the inventory and then not delivered.
    pub fn output_paths(dir: &Path, base: &str) -> Result<(PathBuf, PathBuf), CaError> {
        let crt = IssuedLeaf::cert_output_path(dir, base)?;
        let key = dir.join(format!("{base}.key"));
        if key.symlink_metadata().is_ok() {
            return Err(CaError::FileExists { path: key });
        }
        Ok((crt, key))
    }

    /// The certificate path alone, `<dir>/<base>.crt`, checked as [`IssuedLeaf::output_paths`]
    /// does: what to check before signing a CSR (there is no key to write).
    pub fn cert_output_path(dir: &Path, base: &str) -> Result<PathBuf, CaError> {
        validate_file_base(base)?;
        let crt = dir.join(format!("{base}.crt"));
        if crt.symlink_metadata().is_ok() {
            return Err(CaError::FileExists { path: crt });
        }
        Ok(crt)
    }

    /// Writes `<base>.crt` (the chain) and, if the CA generated the key, `<base>.key`
    /// (mode 0600) into `dir`, creating `dir` (0700) if needed. Refuses to overwrite
    /// either file. Returns the certificate path and the key path, if any.
    pub fn write(&self, dir: &Path, base: &str) -> Result<(PathBuf, Option<PathBuf>), CaError> {
        let Some(key_pem) = &self.key_pem else {
            let crt = IssuedLeaf::cert_output_path(dir, base)?;
            fsio::create_dir(dir)?;
            fsio::write_new(&crt, self.chain_pem.as_bytes(), fsio::PUBLIC_MODE)?;
            return Ok((crt, None));
        };
        let (crt, key) = IssuedLeaf::output_paths(dir, base)?;
        fsio::create_dir(dir)?;
        fsio::write_new(&key, key_pem.as_bytes(), fsio::KEY_MODE)?;
        if let Err(e) = fsio::write_new(&crt, self.chain_pem.as_bytes(), fsio::PUBLIC_MODE) {
            // Do not leave a key without its certificate; the key was created by us above.
            let _ = std::fs::remove_file(&key);
            return Err(e);
        }
        Ok((crt, Some(key)))
    }

    /// `not_after` in RFC 3339 UTC, as the inventory records it.
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }
}

/// Where a leaf's key comes from.
enum LeafKey<'a> {
    /// Generated here; its PEM is returned with the certificate.
    Generate,
    /// The public key of a verified CSR; the private key is never seen.
    Csr(&'a csr::CsrPublicKey),
}

/// What a leaf will say, before the key, serial and validity are added.
struct LeafTemplate {
    kind: CertKind,
    params: CertificateParams,
    /// RFC 4514, for the inventory.
    subject: String,
    /// `DNS:…`, `IP:…`, `URI:…`, for the inventory.
    sans: Vec<String>,
}

impl SiteCa {
    /// Creates `dir` with a root CA (10 years, self-signed) and an issuing intermediate
    /// (pathLen 0, 5 years), keys 0600, the inventory, an empty root CRL and the trust
    /// bundle. Refuses with [`CaError::AlreadyInitialised`] if `dir` already holds any CA
    /// file.
    pub fn init(dir: &Path, name: &str, alg: KeyAlgorithm) -> Result<SiteCa, CaError> {
        validate_ca_name(name)?;
        let already = |found: PathBuf| CaError::AlreadyInitialised {
            dir: dir.to_path_buf(),
            found,
        };
        if let Some(found) = CA_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.symlink_metadata().is_ok())
        {
            return Err(already(found));
        }
        fsio::create_dir(dir)?;

        let now = now_seconds()?;

        let root_key = generate_key(alg, "root key")?;
        let root_serial = random_serial()?;
        let mut root_params = CertificateParams::default();
        root_params.serial_number = Some(SerialNumber::from_slice(&root_serial));
        root_params.distinguished_name = dn(&format!("{name} Root CA"), Some(name));
        root_params.not_before = now - BACKDATE;
        root_params.not_after = now + ROOT_VALIDITY;
        root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
        root_params.key_usages = ca_key_usages();
        let root_not_after = root_params.not_after;
        let root = root_params
            .self_signed(&root_key)
            .map_err(generate("root certificate"))?;

        let int_key = generate_key(alg, "intermediate key")?;
        let int_serial = random_serial()?;
        let int_params = intermediate_params(
            &int_serial,
            &intermediate_cn(name, 1)?,
            name,
            now,
            now + INTERMEDIATE_VALIDITY,
        );
        let int_not_after = int_params.not_after;
        let int = int_params
            .signed_by(&int_key, &root, &root_key)
            .map_err(generate("intermediate certificate"))?;

        // Keys first, then certificates, inventory, CRL, bundle, and `ca.json` last: `open`
        // only accepts a directory whose `ca.json` exists. A concurrent `init` loses at the
        // first O_EXCL.
        let exclusive = |file: &str, contents: &str, mode: u32| {
            let path = dir.join(file);
            fsio::write_new(&path, contents.as_bytes(), mode).map_err(|e| match e {
                CaError::FileExists { path } => already(path),
                other => other,
            })
        };
        let root_key_pem = root_key.serialize_pem();
        exclusive(ROOT_KEY_FILE, &root_key_pem, fsio::KEY_MODE)?;
        exclusive(
            INTERMEDIATE_KEY_FILE,
            &int_key.serialize_pem(),
            fsio::KEY_MODE,
        )?;
        exclusive(ROOT_CERT_FILE, &root.pem(), fsio::PUBLIC_MODE)?;
        exclusive(INTERMEDIATE_CERT_FILE, &int.pem(), fsio::PUBLIC_MODE)?;
        exclusive(INVENTORY_FILE, "", fsio::PUBLIC_MODE)?;

        let inventory_path = dir.join(INVENTORY_FILE);
        let ca_entry =
            |serial: &[u8], kind, cn: String, der: &[u8], not_after, issuer| InventoryEntry {
                serial: hex_upper(serial),
                kind,
                subject: subject_string(&cn, Some(name)),
                sans: Vec::new(),
                not_after: rfc3339(not_after),
                issued_at: rfc3339(now),
                sha256: hex_lower(&Sha256::digest(der)),
                revoked: false,
                issuer,
                revoked_at: None,
                revocation_reason: None,
            };
        let root_entry = ca_entry(
            &root_serial,
            CertKind::Root,
            format!("{name} Root CA"),
            root.der(),
            root_not_after,
            None,
        );
        let int_entry = ca_entry(
            &int_serial,
            CertKind::Intermediate,
            intermediate_cn(name, 1)?,
            int.der(),
            int_not_after,
            Some(hex_upper(&root_serial)),
        );
        inventory::append(&inventory_path, &root_entry)?;
        inventory::append(&inventory_path, &int_entry)?;

        // The root CRL exists from the start, so a verifier that checks revocation along
        // the whole chain always finds one for the intermediate.
        let root_signer = CaSigner::from_parts(
            X509::from_der(root.der()).map_err(ossl("parse the root certificate"))?,
            &dir.join(ROOT_CERT_FILE),
            KeyPair::from_pkcs8_pem_and_sign_algo(&root_key_pem, alg.signature_algorithm())
                .map_err(generate("root key"))?,
            &dir.join(ROOT_KEY_FILE),
        )?;
        crl::write_root_crl(dir, &root_signer, &[root_entry, int_entry])?;
        rotate::write_trust_bundle(dir)?;

        let meta = CaMeta {
            format: META_FORMAT,
            name: name.to_string(),
            algorithm: alg,
            created_at: rfc3339(now),
        };
        let mut meta_json =
            serde_json::to_string_pretty(&meta).map_err(|e| CaError::BadMetadata {
                path: dir.join(META_FILE),
                reason: e.to_string(),
            })?;
        meta_json.push('\n');
        exclusive(META_FILE, &meta_json, fsio::PUBLIC_MODE)?;
        fsio::sync_dir(dir)?;

        SiteCa::open(dir)
    }

    /// Loads a CA directory created by [`SiteCa::init`]. Checks that the intermediate key
    /// is private (no group/other access), matches the intermediate certificate, and that
    /// the intermediate is signed by the root. Does not read `root.key`.
    pub fn open(dir: &Path) -> Result<SiteCa, CaError> {
        let meta = read_meta(dir)?;
        let key_path = dir.join(INTERMEDIATE_KEY_FILE);
        let int_path = dir.join(INTERMEDIATE_CERT_FILE);
        let root_path = dir.join(ROOT_CERT_FILE);
        let int = match CaSigner::load(&int_path, &key_path, meta.algorithm) {
            Err(CaError::BadKey { path, reason }) => {
                return Err(rotate::interrupted_rotation(dir, meta.algorithm)
                    .unwrap_or(CaError::BadKey { path, reason }))
            }
            other => other?,
        };
        let root_cert = load_cert(&root_path)?;
        let root_public = root_cert
            .public_key()
            .map_err(ossl("read the root public key"))?;
        if !int
            .cert
            .verify(&root_public)
            .map_err(ossl("verify the intermediate signature"))?
        {
            return Err(CaError::BadCertificate {
                path: int_path,
                reason: "not signed by the root certificate".to_string(),
            });
        }
        Ok(SiteCa {
            dir: dir.to_path_buf(),
            name: meta.name,
            algorithm: meta.algorithm,
            issuer: int.issuer,
            issuer_key: int.key,
            intermediate_pem: int.pem,
            intermediate_not_after: int.not_after,
            intermediate_serial: int.serial_hex,
        })
    }

    /// The CA directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The site name given at `init`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key algorithm of every key this CA holds and issues.
    pub fn algorithm(&self) -> KeyAlgorithm {
        self.algorithm
    }

    /// Path of the root certificate PEM: the trust anchor to give clients
    /// (e.g. `curl --cacert`).
    pub fn root_cert_path(&self) -> PathBuf {
        self.dir.join(ROOT_CERT_FILE)
    }

    /// Path of the current intermediate certificate PEM.
    pub fn intermediate_cert_path(&self) -> PathBuf {
        self.dir.join(INTERMEDIATE_CERT_FILE)
    }

    /// Serial of the current intermediate, upper-case hex.
    pub fn intermediate_serial(&self) -> &str {
        &self.intermediate_serial
    }

    /// Path of the inventory (JSON lines).
    pub fn inventory_path(&self) -> PathBuf {
        self.dir.join(INVENTORY_FILE)
    }

    /// End of the intermediate's validity; no leaf may outlive it.
    pub fn intermediate_not_after(&self) -> OffsetDateTime {
        self.intermediate_not_after
    }

    /// Every certificate issued by this CA, oldest first.
    pub fn inventory(&self) -> Result<Vec<InventoryEntry>, CaError> {
        inventory::read(&self.inventory_path())
    }

    /// Issues a server leaf: EKU serverAuth, SANs from `dns` and `ips` (at least one),
    /// subject CN = first SAN, O = site name. Valid from now − 5 min for `valid_days`.
    /// The chain PEM is the leaf followed by the intermediate.
    pub fn issue_server(
        &self,
        dns: &[String],
        ips: &[IpAddr],
        valid_days: u32,
    ) -> Result<IssuedLeaf, CaError> {
        let template = self.server_template(dns, ips)?;
        self.issue(template, valid_days, LeafKey::Generate)
    }

    /// Issues a client leaf: EKU clientAuth, SAN URI `urn:sealkit:client:<client_id>`,
    /// subject CN = `client_id` and O = `tenant` if given.
    pub fn issue_client(
        &self,
        client_id: &str,
        tenant: Option<&str>,
        valid_days: u32,
    ) -> Result<IssuedLeaf, CaError> {
        let template = client_template(client_id, tenant)?;
        self.issue(template, valid_days, LeafKey::Generate)
    }

    /// Subject, SANs and EKU of a server leaf.
    fn server_template(&self, dns: &[String], ips: &[IpAddr]) -> Result<LeafTemplate, CaError> {
        let mut sans = Vec::new();
        let mut sans_text: Vec<String> = Vec::new();
        for raw in dns {
            let name = normalise_dns_name(raw)?;
            let text = format!("DNS:{name}");
            if sans_text.contains(&text) {
                continue;
            }
            let ia5 = name
                .clone()
                .try_into()
                .map_err(|_| CaError::InvalidDnsName {
                    name: raw.clone(),
                    reason: "not ASCII",
                })?;
            sans.push(SanType::DnsName(ia5));
            sans_text.push(text);
        }
        for ip in ips {
            let text = format!("IP:{ip}");
            if sans_text.contains(&text) {
                continue;
            }
            sans.push(SanType::IpAddress(*ip));
            sans_text.push(text);
        }
        let cn = dns
            .first()
            .and_then(|d| normalise_dns_name(d).ok())
            .or_else(|| ips.first().map(|ip| ip.to_string()))
            .ok_or(CaError::NoSubjectAltNames)?;

        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let subject = if cn.len() <= MAX_DN_VALUE {
            params.distinguished_name = dn(&cn, Some(&self.name));
            subject_string(&cn, Some(&self.name))
        } else {
            // A DNS name longer than CN allows: the SAN carries it, the subject names the site.
            let mut dn = DistinguishedName::new();
            dn.push(DnType::OrganizationName, self.name.as_str());
            params.distinguished_name = dn;
            format!("O={}", crate::dn::escape_value(&self.name))
        };
        Ok(LeafTemplate {
            kind: CertKind::Server,
            params,
            subject,
            sans: sans_text,
        })
    }

    /// Common tail of leaf issuance: validity, serial, key, signature, inventory.
    fn issue(
        &self,
        template: LeafTemplate,
        valid_days: u32,
        key: LeafKey<'_>,
    ) -> Result<IssuedLeaf, CaError> {
        let LeafTemplate {
            kind,
            mut params,
            subject,
            sans,
        } = template;
        if valid_days == 0 {
            return Err(CaError::InvalidValidity(valid_days));
        }
        let now = now_seconds()?;
        let not_after = now
            .checked_add(Duration::days(i64::from(valid_days)))
            .ok_or(CaError::InvalidValidity(valid_days))?;
        if not_after > self.intermediate_not_after {
            return Err(CaError::OutlivesIssuer {
                not_after: rfc3339(not_after),
                issuer_not_after: rfc3339(self.intermediate_not_after),
            });
        }
        let serial = random_serial()?;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.not_before = now - BACKDATE;
        params.not_after = not_after;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;

        let (cert, key_pem) = match key {
            LeafKey::Generate => {
                let key = generate_key(self.algorithm, "leaf key")?;
                let cert = params
                    .signed_by(&key, &self.issuer, &self.issuer_key)
                    .map_err(generate("leaf certificate"))?;
                (cert, Some(key.serialize_pem()))
            }
            LeafKey::Csr(public) => {
                let cert = params
                    .signed_by(public, &self.issuer, &self.issuer_key)
                    .map_err(generate("leaf certificate"))?;
                public.check_certified(cert.der())?;
                (cert, None)
            }
        };
        let cert_pem = with_newline(cert.pem());
        let chain_pem = format!("{cert_pem}{}", with_newline(self.intermediate_pem.clone()));
        let serial_hex = hex_upper(&serial);

        // An issued certificate that is not in the inventory could never be revoked:
        // the leaf is only handed out once its record is durable. The lock keeps a
        // concurrent revocation's rewrite from dropping the line.
        let _lock = fsio::DirLock::acquire(&self.dir)?;
        inventory::append(
            &self.inventory_path(),
            &InventoryEntry {
                serial: serial_hex.clone(),
                kind,
                subject,
                sans,
                not_after: rfc3339(not_after),
                issued_at: rfc3339(now),
                sha256: hex_lower(&Sha256::digest(cert.der())),
                revoked: false,
                issuer: Some(self.intermediate_serial.clone()),
                revoked_at: None,
                revocation_reason: None,
            },
        )?;

        Ok(IssuedLeaf {
            serial_hex,
            cert_pem,
            chain_pem,
            key_pem,
            not_after,
        })
    }
}

/// Subject, SAN and EKU of a client leaf.
fn client_template(client_id: &str, tenant: Option<&str>) -> Result<LeafTemplate, CaError> {
    validate_client_id(client_id)?;
    if let Some(t) = tenant {
        validate_tenant(t)?;
    }
    let uri = format!("{CLIENT_URI_PREFIX}{client_id}");
    let ia5 = uri
        .clone()
        .try_into()
        .map_err(|_| CaError::InvalidClientId(client_id.to_string()))?;
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::URI(ia5)];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.distinguished_name = dn(client_id, tenant);
    Ok(LeafTemplate {
        kind: CertKind::Client,
        params,
        subject: subject_string(client_id, tenant),
        sans: vec![format!("URI:{uri}")],
    })
}

/// CN of the `generation`-th intermediate: "<name> Issuing CA", then "… Issuing CA 2", …
/// Names differ so that CRLs, which verifiers match to their issuer by name (RFC 5280
/// §6.3.3; rustls-webpki takes the first CRL whose issuer name matches), never collide.
fn intermediate_cn(name: &str, generation: usize) -> Result<String, CaError> {
    let cn = if generation <= 1 {
        format!("{name} Issuing CA")
    } else {
        format!("{name} Issuing CA {generation}")
    };
    if cn.chars().count() > MAX_DN_VALUE {
        return Err(CaError::InvalidCaName(name.to_string()));
    }
    Ok(cn)
}

/// Parameters of an intermediate: pathLen 0, keyCertSign + cRLSign, AKI of the root.
fn intermediate_params(
    serial: &[u8],
    cn: &str,
    name: &str,
    now: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.serial_number = Some(SerialNumber::from_slice(serial));
    params.distinguished_name = dn(cn, Some(name));
    params.not_before = now - BACKDATE;
    params.not_after = not_after;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = ca_key_usages();
    params.use_authority_key_identifier_extension = true;
    params
}

fn read_meta(dir: &Path) -> Result<CaMeta, CaError> {
    let meta_path = dir.join(META_FILE);
    if meta_path.symlink_metadata().is_err() {
        return Err(CaError::NotInitialised {
            dir: dir.to_path_buf(),
            missing: meta_path,
        });
    }
    let meta: CaMeta = serde_json::from_str(&fsio::read_to_string(&meta_path)?).map_err(|e| {
        CaError::BadMetadata {
            path: meta_path.clone(),
            reason: e.to_string(),
        }
    })?;
    if meta.format != META_FORMAT {
        return Err(CaError::BadMetadata {
            path: meta_path,
            reason: format!(
                "format {} is not supported (expected {META_FORMAT})",
                meta.format
            ),
        });
    }
    Ok(meta)
}

/// Generates a key whose PKCS#8 PEM both rcgen (ring) and OpenSSL read.
///
/// ring writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the public key), which
/// OpenSSL 3.0 rejects; so Ed25519 keys come from OpenSSL as PKCS#8 v1 (RFC 8410), which
/// ring also accepts. ECDSA keys from ring are PKCS#8 v1 already.
fn generate_key(alg: KeyAlgorithm, what: &'static str) -> Result<KeyPair, CaError> {
    match alg {
        KeyAlgorithm::EcdsaP256 | KeyAlgorithm::EcdsaP384 => {
            KeyPair::generate_for(alg.signature_algorithm()).map_err(generate(what))
        }
        KeyAlgorithm::Ed25519 => {
            let pem = PKey::generate_ed25519()
                .and_then(|k| k.private_key_to_pem_pkcs8())
                .map_err(ossl("generate an Ed25519 key"))?;
            let pem = String::from_utf8(pem).map_err(|_| CaError::Generate {
                what,
                source: rcgen::Error::CouldNotParseKeyPair,
            })?;
            KeyPair::from_pkcs8_pem_and_sign_algo(&pem, alg.signature_algorithm())
                .map_err(generate(what))
        }
    }
}

fn ca_key_usages() -> Vec<KeyUsagePurpose> {
    vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign]
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    if let Some(o) = org {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

fn subject_string(cn: &str, org: Option<&str>) -> String {
    match org {
        Some(o) => format!(
            "CN={},O={}",
            crate::dn::escape_value(cn),
            crate::dn::escape_value(o)
        ),
        None => format!("CN={}", crate::dn::escape_value(cn)),
    }
}

/// Rebuilds an rcgen name from a certificate subject (only the attributes `init` writes
/// and their common neighbours).
fn dn_from_x509(name: &X509NameRef, path: &Path) -> Result<DistinguishedName, CaError> {
    let bad = |reason: String| CaError::BadCertificate {
        path: path.to_path_buf(),
        reason,
    };
    let mut dn = DistinguishedName::new();
    for entry in name.entries() {
        let nid = entry.object().nid();
        let ty = match nid {
            Nid::COMMONNAME => DnType::CommonName,
            Nid::ORGANIZATIONNAME => DnType::OrganizationName,
            Nid::ORGANIZATIONALUNITNAME => DnType::OrganizationalUnitName,
            Nid::LOCALITYNAME => DnType::LocalityName,
            Nid::STATEORPROVINCENAME => DnType::StateOrProvinceName,
            Nid::COUNTRYNAME => DnType::CountryName,
            other => {
                return Err(bad(format!(
                    "unsupported subject attribute {}",
                    other.short_name().unwrap_or("?")
                )))
            }
        };
        let value = entry
            .data()
            .to_string()
            .map_err(|_| bad("subject attribute is not valid text".to_string()))?;
        dn.push(ty, value);
    }
    Ok(dn)
}

fn load_cert(path: &Path) -> Result<X509, CaError> {
    X509::from_pem(fsio::read_to_string(path)?.as_bytes()).map_err(|e| CaError::BadCertificate {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

fn asn1_to_offset(t: &Asn1TimeRef) -> Result<OffsetDateTime, CaError> {
    let epoch = Asn1Time::from_unix(0).map_err(ossl("build the epoch"))?;
    let diff = epoch.diff(t).map_err(ossl("read a certificate time"))?;
    Ok(OffsetDateTime::from_unix_timestamp(
        i64::from(diff.days) * 86_400 + i64::from(diff.secs),
    )?)
}

/// Now, truncated to whole seconds (the resolution of certificate times).
fn now_seconds() -> Result<OffsetDateTime, CaError> {
    Ok(OffsetDateTime::from_unix_timestamp(
        OffsetDateTime::now_utc().unix_timestamp(),
    )?)
}

/// A positive serial of exactly 20 octets with 158 random bits (RFC 5280 §4.1.2.2;
/// CA/B Forum asks for at least 64, the brief for at least 128).
fn random_serial() -> Result<[u8; SERIAL_LEN], CaError> {
    let mut bytes = [0u8; SERIAL_LEN];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|e| CaError::Random(e.to_string()))?;
    // 0b01xx_xxxx: sign bit clear (positive) and the first octet non-zero (no DER trimming).
    bytes[0] = (bytes[0] & 0x3f) | 0x40;
    Ok(bytes)
}

fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn with_newline(mut s: String) -> String {
    if !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

fn has_bad_chars(s: &str) -> bool {
    s.chars().any(char::is_control) || s.trim() != s
}

fn validate_ca_name(name: &str) -> Result<(), CaError> {
    let len = name.chars().count();
    if len == 0 || len > MAX_CA_NAME || has_bad_chars(name) {
        return Err(CaError::InvalidCaName(name.to_string()));
    }
    Ok(())
}

fn validate_tenant(tenant: &str) -> Result<(), CaError> {
    let len = tenant.chars().count();
    if len == 0 || len > MAX_DN_VALUE || has_bad_chars(tenant) {
        return Err(CaError::InvalidTenant(tenant.to_string()));
    }
    Ok(())
}

/// Client ids become a CN and the tail of a URN, so they are kept to RFC 3986 unreserved
/// characters.
fn validate_client_id(id: &str) -> Result<(), CaError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_DN_VALUE
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CaError::InvalidClientId(id.to_string()))
    }
}

/// Lower-cases a host name, drops one trailing dot and checks RFC 1123 syntax; a leading
/// `*.` wildcard label is allowed.
fn normalise_dns_name(raw: &str) -> Result<String, CaError> {
    let bad = |reason: &'static str| CaError::InvalidDnsName {
        name: raw.to_string(),
        reason,
    };
    let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 {
        return Err(bad("must be 1 to 253 characters"));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(bad("is an IP address; pass it as an IP SAN"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for (i, label) in labels.iter().enumerate() {
        if i == 0 && *label == "*" {
            if labels.len() < 3 {
                return Err(bad("a wildcard needs at least two labels after it"));
            }
            continue;
        }
        if label.is_empty() || label.len() > 63 {
            return Err(bad("each label must be 1 to 63 characters"));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad("labels may contain only letters, digits and '-'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(bad("a label may not start or end with '-'"));
        }
    }
    Ok(name)
}

fn validate_file_base(base: &str) -> Result<(), CaError> {
    let ok = !base.is_empty()
        && base.len() <= 200
        && !base.starts_with('.')
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(CaError::InvalidFileBase(base.to_string()))
    }
}

/// Parses the one RFC 3339 form this module writes (`YYYY-MM-DDTHH:MM:SSZ`).
fn parse_rfc3339(s: &str) -> Option<OffsetDateTime> {
    let b = s.as_bytes();
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        let part = s.get(range)?;
        if !part.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        part.parse().ok()
    };
    let year = i32::try_from(num(0..4)?).ok()?;
    let month = time::Month::try_from(u8::try_from(num(5..7)?).ok()?).ok()?;
    let date = time::Date::from_calendar_date(year, month, u8::try_from(num(8..10)?).ok()?).ok()?;
    let time = time::Time::from_hms(
        u8::try_from(num(11..13)?).ok()?,
        u8::try_from(num(14..16)?).ok()?,
        u8::try_from(num(17..19)?).ok()?,
    )
    .ok()?;
    Some(time::PrimitiveDateTime::new(date, time).assume_utc())
}

/// A serial as typed by an operator (`4a:1f:…`, `4A1F…`, `0x4a1f…`) in the inventory's form:
/// upper-case hex without separators or leading zeros.
fn normalise_serial(raw: &str) -> Result<String, CaError> {
    let trimmed = raw.trim();
    let body = trimmed
        .strip_prefix("0x")
        .or_else(|| trimmed.strip_prefix("0X"))
        .unwrap_or(trimmed);
    let hex: String = body.chars().filter(|c| *c != ':').collect();
    if hex.is_empty()
        || hex.len() > 2 * SERIAL_LEN + 2
        || !hex.chars().all(|c| c.is_ascii_hexdigit())
    {
        return Err(CaError::InvalidSerial(raw.to_string()));
    }
    let hex = hex.trim_start_matches('0').to_ascii_uppercase();
    Ok(if hex.is_empty() { "0".to_string() } else { hex })
}

/// Whether the inventory serial `stored` is the normalised serial `wanted`.
fn same_serial(stored: &str, wanted: &str) -> bool {
    let stored = stored.trim_start_matches('0');
    stored.eq_ignore_ascii_case(wanted) || (stored.is_empty() && wanted == "0")
}
