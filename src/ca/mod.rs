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
//! | file               | mode | contents                                              |
//! |--------------------|------|-------------------------------------------------------|
//! | `ca.json`          | 0644 | name, key algorithm, format version (written last)   |
//! | `root.crt`         | 0644 | root certificate: the trust anchor handed to clients  |
//! | `root.key`         | 0600 | root key; only needed to mint a new intermediate      |
//! | `intermediate.crt` | 0644 | issuing CA certificate, appended to every leaf chain  |
//! | `intermediate.key` | 0600 | issuing key; `open` refuses it if group/other can read|
//! | `inventory.jsonl`  | 0644 | one [`InventoryEntry`] per issued certificate         |
//!
//! `init` creates a missing directory 0700. The files above, and the `<base>.crt` /
//! `<base>.key` pair written by [`IssuedLeaf::write`], are created with `O_EXCL` and their
//! final mode, so nothing is overwritten and no key is ever briefly readable.
//!
//! # Design note: what comes next and where it goes
//!
//! Issuance from a CSR belongs in `ca/csr.rs` as `SiteCa::sign_csr`, reusing the same
//! validity, serial and inventory path as the leaves here. Revocation belongs in
//! `ca/revoke.rs`: it flips `revoked` in the inventory (rewriting it atomically) and a
//! CRL builder in `ca/crl.rs` signs `rcgen::CertificateRevocationListParams` with the
//! intermediate key. Rotation belongs in `ca/rotate.rs` and is the only operation that
//! loads `root.key`: it mints a new intermediate under the existing root.

mod fsio;
mod inventory;
#[cfg(test)]
mod tests;

pub use inventory::{CertKind, InventoryEntry};

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
/// Any of these present means the directory already holds (part of) a CA.
const CA_FILES: [&str; 6] = [
    META_FILE,
    ROOT_CERT_FILE,
    ROOT_KEY_FILE,
    INTERMEDIATE_CERT_FILE,
    INTERMEDIATE_KEY_FILE,
    INVENTORY_FILE,
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

/// A loaded CA directory, able to issue leaves with its intermediate.
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
}

impl fmt::Debug for SiteCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SiteCa")
            .field("dir", &self.dir)
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("intermediate_not_after", &self.intermediate_not_after)
            .field("issuer_key", &"<redacted>")
            .finish()
    }
}

/// A freshly issued leaf certificate and its private key.
#[derive(Clone)]
pub struct IssuedLeaf {
    /// Serial number, upper-case hex.
    pub serial_hex: String,
    /// The leaf certificate alone, PEM.
    pub cert_pem: String,
    /// The leaf followed by the intermediate, PEM (what a TLS endpoint presents).
    pub chain_pem: String,
    /// The leaf private key, PKCS#8 PEM.
    pub key_pem: String,
    /// End of validity (whole seconds, as encoded in the certificate).
    pub not_after: OffsetDateTime,
}

impl fmt::Debug for IssuedLeaf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedLeaf")
            .field("serial_hex", &self.serial_hex)
            .field("not_after", &self.not_after)
            .field("key_pem", &"<redacted>")
            .finish_non_exhaustive()
    }
}

impl IssuedLeaf {
    /// The paths [`IssuedLeaf::write`] would create, `(<dir>/<base>.crt, <dir>/<base>.key)`,
    /// after checking that `base` is a plain file name and that neither file exists yet.
    /// Call it before issuing so a leaf is not recorded in the inventory and then not
    /// delivered.
    pub fn output_paths(dir: &Path, base: &str) -> Result<(PathBuf, PathBuf), CaError> {
        validate_file_base(base)?;
        let crt = dir.join(format!("{base}.crt"));
        let key = dir.join(format!("{base}.key"));
        for path in [&crt, &key] {
            if path.symlink_metadata().is_ok() {
                return Err(CaError::FileExists { path: path.clone() });
            }
        }
        Ok((crt, key))
    }

    /// Writes `<base>.crt` (the chain) and `<base>.key` (mode 0600) into `dir`, creating
    /// `dir` (0700) if needed. Refuses to overwrite either file. Returns (cert, key) paths.
    pub fn write(&self, dir: &Path, base: &str) -> Result<(PathBuf, PathBuf), CaError> {
        let (crt, key) = IssuedLeaf::output_paths(dir, base)?;
        fsio::create_dir(dir)?;
        fsio::write_new(&key, self.key_pem.as_bytes(), fsio::KEY_MODE)?;
        if let Err(e) = fsio::write_new(&crt, self.chain_pem.as_bytes(), fsio::PUBLIC_MODE) {
            // Do not leave a key without its certificate; the key was created by us above.
            let _ = std::fs::remove_file(&key);
            return Err(e);
        }
        Ok((crt, key))
    }

    /// `not_after` in RFC 3339 UTC, as the inventory records it.
    pub fn not_after_rfc3339(&self) -> String {
        rfc3339(self.not_after)
    }
}

impl SiteCa {
    /// Creates `dir` with a root CA (10 years, self-signed) and an issuing intermediate
    /// (pathLen 0, 5 years), keys 0600, and the inventory. Refuses with
    /// [`CaError::AlreadyInitialised`] if `dir` already holds any CA file.
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
        let mut int_params = CertificateParams::default();
        int_params.serial_number = Some(SerialNumber::from_slice(&int_serial));
        int_params.distinguished_name = dn(&format!("{name} Issuing CA"), Some(name));
        int_params.not_before = now - BACKDATE;
        int_params.not_after = now + INTERMEDIATE_VALIDITY;
        int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        int_params.key_usages = ca_key_usages();
        int_params.use_authority_key_identifier_extension = true;
        let int_not_after = int_params.not_after;
        let int = int_params
            .signed_by(&int_key, &root, &root_key)
            .map_err(generate("intermediate certificate"))?;

        // Keys first, then certificates, inventory, and `ca.json` last: `open` only accepts
        // a directory whose `ca.json` exists. A concurrent `init` loses at the first O_EXCL.
        let exclusive = |file: &str, contents: &str, mode: u32| {
            let path = dir.join(file);
            fsio::write_new(&path, contents.as_bytes(), mode).map_err(|e| match e {
                CaError::FileExists { path } => already(path),
                other => other,
            })
        };
        exclusive(ROOT_KEY_FILE, &root_key.serialize_pem(), fsio::KEY_MODE)?;
        exclusive(
            INTERMEDIATE_KEY_FILE,
            &int_key.serialize_pem(),
            fsio::KEY_MODE,
        )?;
        exclusive(ROOT_CERT_FILE, &root.pem(), fsio::PUBLIC_MODE)?;
        exclusive(INTERMEDIATE_CERT_FILE, &int.pem(), fsio::PUBLIC_MODE)?;
        exclusive(INVENTORY_FILE, "", fsio::PUBLIC_MODE)?;

        let inventory_path = dir.join(INVENTORY_FILE);
        let ca_entry = |serial: &[u8], kind, cn: String, der: &[u8], not_after| InventoryEntry {
            serial: hex_upper(serial),
            kind,
            subject: subject_string(&cn, Some(name)),
            sans: Vec::new(),
            not_after: rfc3339(not_after),
            issued_at: rfc3339(now),
            sha256: hex_lower(&Sha256::digest(der)),
            revoked: false,
        };
        inventory::append(
            &inventory_path,
            &ca_entry(
                &root_serial,
                CertKind::Root,
                format!("{name} Root CA"),
                root.der(),
                root_not_after,
            ),
        )?;
        inventory::append(
            &inventory_path,
            &ca_entry(
                &int_serial,
                CertKind::Intermediate,
                format!("{name} Issuing CA"),
                int.der(),
                int_not_after,
            ),
        )?;

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
        let meta_path = dir.join(META_FILE);
        if meta_path.symlink_metadata().is_err() {
            return Err(CaError::NotInitialised {
                dir: dir.to_path_buf(),
                missing: meta_path,
            });
        }
        let meta: CaMeta =
            serde_json::from_str(&fsio::read_to_string(&meta_path)?).map_err(|e| {
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

        let key_path = dir.join(INTERMEDIATE_KEY_FILE);
        fsio::check_key_mode(&key_path)?;
        let bad_key = |reason: String| CaError::BadKey {
            path: key_path.clone(),
            reason,
        };
        let issuer_key = KeyPair::from_pkcs8_pem_and_sign_algo(
            &fsio::read_to_string(&key_path)?,
            meta.algorithm.signature_algorithm(),
        )
        .map_err(|e| bad_key(format!("not a PKCS#8 {} key: {e}", meta.algorithm)))?;

        let int_path = dir.join(INTERMEDIATE_CERT_FILE);
        let root_path = dir.join(ROOT_CERT_FILE);
        let int_cert = load_cert(&int_path)?;
        let root_cert = load_cert(&root_path)?;
        let bad_int = |reason: &str| CaError::BadCertificate {
            path: int_path.clone(),
            reason: reason.to_string(),
        };

        let root_public = root_cert
            .public_key()
            .map_err(ossl("read the root public key"))?;
        if !int_cert
            .verify(&root_public)
            .map_err(ossl("verify the intermediate signature"))?
        {
            return Err(bad_int("not signed by the root certificate"));
        }
        let cert_spki = int_cert
            .public_key()
            .and_then(|k| k.public_key_to_der())
            .map_err(ossl("read the intermediate public key"))?;
        if cert_spki != issuer_key.public_key_der() {
            return Err(bad_key(format!(
                "does not belong to the certificate {}",
                int_path.display()
            )));
        }
        let ski = int_cert
            .subject_key_id()
            .ok_or_else(|| bad_int("has no subject key identifier"))?
            .as_slice()
            .to_vec();

        // rcgen 0.13 signs with a `Certificate`; without its x509-parser feature we rebuild
        // one from the intermediate's subject, key identifier and key usages (the only
        // parts used for signing), as rcgen's own `from_ca_cert_der` + `self_signed` does.
        // The rebuilt certificate never leaves memory.
        let mut params = CertificateParams::default();
        params.distinguished_name = dn_from_x509(int_cert.subject_name(), &int_path)?;
        params.key_identifier_method = KeyIdMethod::PreSpecified(ski);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = ca_key_usages();
        let issuer = params
            .self_signed(&issuer_key)
            .map_err(generate("issuer parameters"))?;
        let rebuilt = X509::from_der(issuer.der()).map_err(ossl("parse the rebuilt issuer"))?;
        let subject_der = |c: &X509| c.subject_name().to_der();
        if subject_der(&rebuilt).map_err(ossl("encode a subject"))?
            != subject_der(&int_cert).map_err(ossl("encode a subject"))?
        {
            return Err(bad_int("its subject name cannot be reproduced exactly"));
        }

        let intermediate_not_after = asn1_to_offset(int_cert.not_after())?;
        let intermediate_pem = String::from_utf8(
            int_cert
                .to_pem()
                .map_err(ossl("encode the intermediate certificate"))?,
        )
        .map_err(|_| bad_int("PEM encoding is not UTF-8"))?;

        Ok(SiteCa {
            dir: dir.to_path_buf(),
            name: meta.name,
            algorithm: meta.algorithm,
            issuer,
            issuer_key,
            intermediate_pem,
            intermediate_not_after,
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

    /// Path of the intermediate certificate PEM.
    pub fn intermediate_cert_path(&self) -> PathBuf {
        self.dir.join(INTERMEDIATE_CERT_FILE)
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
            format!("O={}", rfc4514_escape(&self.name))
        };
        self.issue(CertKind::Server, params, subject, sans_text, valid_days)
    }

    /// Issues a client leaf: EKU clientAuth, SAN URI `urn:sealkit:client:<client_id>`,
    /// subject CN = `client_id` and O = `tenant` if given.
    pub fn issue_client(
        &self,
        client_id: &str,
        tenant: Option<&str>,
        valid_days: u32,
    ) -> Result<IssuedLeaf, CaError> {
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
        let subject = subject_string(client_id, tenant);
        self.issue(
            CertKind::Client,
            params,
            subject,
            vec![format!("URI:{uri}")],
            valid_days,
        )
    }

    /// Common tail of leaf issuance: validity, serial, key, signature, inventory.
    fn issue(
        &self,
        kind: CertKind,
        mut params: CertificateParams,
        subject: String,
        sans: Vec<String>,
        valid_days: u32,
    ) -> Result<IssuedLeaf, CaError> {
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

        let key = generate_key(self.algorithm, "leaf key")?;
        let cert = params
            .signed_by(&key, &self.issuer, &self.issuer_key)
            .map_err(generate("leaf certificate"))?;
        let cert_pem = with_newline(cert.pem());
        let chain_pem = format!("{cert_pem}{}", with_newline(self.intermediate_pem.clone()));
        let serial_hex = hex_upper(&serial);

        // An issued certificate that is not in the inventory could never be revoked:
        // the leaf is only handed out once its record is durable.
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
            },
        )?;

        Ok(IssuedLeaf {
            serial_hex,
            cert_pem,
            chain_pem,
            key_pem: key.serialize_pem(),
            not_after,
        })
    }
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
        Some(o) => format!("CN={},O={}", rfc4514_escape(cn), rfc4514_escape(o)),
        None => format!("CN={}", rfc4514_escape(cn)),
    }
}

/// Escapes an attribute value as RFC 4514 §2.4 requires.
fn rfc4514_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
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
