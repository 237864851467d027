//! The files a configuration names, read and judged the way `serve` reads them — the one
//! loader behind `sealkit config check`, bundle import (step 11), rollback, reload and
//! `serve`, so that a configuration the authority cannot load never validates.
//!
//! What it establishes, each failure a [`ConfigProblem`] under the key that names the file:
//!
//! - `tls.certificate`: PEM certificates, each a well-formed X.509 certificate, in chain
//!   order (leaf first, each one issued and signed by the next);
//! - `tls.privateKey`: a PEM private key rustls can sign with, whose public key is the
//!   leaf certificate's;
//! - `tls.clientCa`: PEM certificates rustls accepts as trust anchors;
//! - `tls.clientCrl`: PEM CRLs that rustls's client-certificate verifier accepts with
//!   those CAs; at least one signed by a client CA, and every CRL that names a client CA
//!   as its issuer signed by it (CRLs of intermediates, which clients present in their
//!   chains, are checked against them at each handshake);
//! - `storage.caFile` (Redis over TLS): PEM certificates usable as trust anchors.
//!
//! Not responsible for: where the files are (that is [`super::paths`]), or building the
//! rustls server configuration (the server does that from [`TlsMaterial`]).

use super::{ConfigProblem, Problems, Settings};
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the files are, as resolved by validation (`None`: not configured).
#[derive(Debug, Clone, Default)]
pub struct FilePaths {
    pub certificate: Option<PathBuf>,
    pub private_key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub client_crl: Option<PathBuf>,
    pub redis_ca: Option<PathBuf>,
}

impl FilePaths {
    /// The files a validated configuration names.
    pub fn of(settings: &Settings) -> FilePaths {
        FilePaths {
            certificate: Some(settings.tls_certificate.clone()),
            private_key: Some(settings.tls_private_key.clone()),
            client_ca: settings.tls_client_ca.clone(),
            client_crl: settings.tls_client_crl.clone(),
            redis_ca: settings
                .storage_settings
                .redis
                .as_ref()
                .and_then(|r| r.ca_file.clone()),
        }
    }
}

/// Everything the TLS listeners (and the Redis client) need, read and checked once.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The server's chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The server's private key; matches `chain[0]`.
    pub key: Arc<PrivateKeyDer<'static>>,
    /// Trust anchors for client certificates (empty: no client certificates).
    pub client_roots: Vec<CertificateDer<'static>>,
    /// CRLs checked for every client certificate, each signed by a client CA.
    pub client_crls: Vec<CertificateRevocationListDer<'static>>,
    /// The CA certificates that signed the Redis server's certificate (`rediss://`).
    pub redis_roots: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("chain", &self.chain.len())
            .field("key", &"<redacted>")
            .field("client_roots", &self.client_roots.len())
            .field("client_crls", &self.client_crls.len())
            .field("redis_roots", &self.redis_roots.len())
            .finish()
    }
}

/// Reads and checks every file `settings` names; every problem comes back, each with its
/// key path. This is what `serve` loads its TLS configuration from.
pub fn load(settings: &Settings) -> Result<TlsMaterial, Vec<ConfigProblem>> {
    let mut problems = Problems(Vec::new());
    let material = check(&FilePaths::of(settings), &mut problems);
    match material {
        Some(material) if problems.0.is_empty() => Ok(material),
        _ => Err(problems.0),
    }
}

/// The loader itself: records a problem for everything wrong and returns the material when
/// nothing was.
pub(super) fn check(paths: &FilePaths, problems: &mut Problems) -> Option<TlsMaterial> {
    let before = problems.0.len();
    let chain = paths
        .certificate
        .as_deref()
        .and_then(|p| record(problems, "tls.certificate", server_chain(p)));
    let key = match (&paths.private_key, &chain) {
        (Some(path), chain) => record(
            problems,
            "tls.privateKey",
            private_key(path, chain.as_deref(), paths.certificate.as_deref()),
        ),
        (None, _) => None,
    };
    let client_roots = match &paths.client_ca {
        Some(path) => record(problems, "tls.clientCa", trust_anchors(path)),
        None => Some(Vec::new()),
    };
    let client_crls = match (&paths.client_crl, &client_roots, &paths.client_ca) {
        (Some(path), Some(roots), Some(ca_path)) if !roots.is_empty() => record(
            problems,
            "tls.clientCrl",
            crls_signed_by(path, roots, ca_path),
        ),
        // Without a usable CA the CRL cannot be judged; the CA's problem is reported.
        (Some(path), _, _) => {
            record(problems, "tls.clientCrl", read_crls(path).map(|_| ()));
            None
        }
        (None, _, _) => Some(Vec::new()),
    };
    let redis_roots = match &paths.redis_ca {
        Some(path) => record(problems, "storage.caFile", trust_anchors(path)),
        None => Some(Vec::new()),
    };
    if problems.0.len() != before {
        return None;
    }
    Some(TlsMaterial {
        chain: chain?,
        key: Arc::new(key?),
        client_roots: client_roots?,
        client_crls: client_crls?,
        redis_roots: redis_roots?,
    })
}

fn record<T>(problems: &mut Problems, key: &str, result: Result<T, String>) -> Option<T> {
    match result {
        Ok(value) => Some(value),
        Err(message) => {
            problems.add(key, message);
            None
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) | Err(_) => return Err(format!("{} is not a readable file", path.display())),
    }
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// PEM certificates, each parsed as X.509 to its last byte.
fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    for (i, der) in certs.iter().enumerate() {
        parse_certificate(der).map_err(|e| {
            format!(
                "certificate #{} in {} is not an X.509 certificate: {e}",
                i + 1,
                path.display()
            )
        })?;
    }
    Ok(certs)
}

fn parse_certificate(der: &[u8]) -> Result<x509_parser::certificate::X509Certificate<'_>, String> {
    match x509_parser::parse_x509_certificate(der) {
        Ok(([], cert)) => Ok(cert),
        Ok(_) => Err("trailing bytes after the certificate".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// The server chain: leaf first, each certificate issued and signed by the next.
fn server_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = certificates(path)?;
    let parsed = certs
        .iter()
        .map(|der| parse_certificate(der))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, pair) in parsed.windows(2).enumerate() {
        let [child, parent] = pair else { continue };
        let issued = child.issuer().as_raw() == parent.subject().as_raw()
            && child.verify_signature(Some(parent.public_key())).is_ok();
        if !issued {
            return Err(format!(
                "certificate #{} in {} is not issued by certificate #{}: the chain must be in order, leaf first, each certificate followed by its issuer",
                i + 1,
                path.display(),
                i + 2
            ));
        }
    }
    Ok(certs)
}

/// The private key, which must be the leaf certificate's.
fn private_key(
    path: &Path,
    chain: Option<&[CertificateDer<'static>]>,
    chain_path: Option<&Path>,
) -> Result<PrivateKeyDer<'static>, String> {
    let pem = read(path)?;
    // The first PKCS #8, PKCS #1 or SEC1 key in the file.
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{} holds no PEM private key (-----BEGIN PRIVATE KEY-----)",
            path.display()
        ),
        other => format!("{} is not valid PEM: {other}", path.display()),
    })?;
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| format!("{} is not a usable private key: {e}", path.display()))?;
    if let Some(chain) = chain {
        let certified = rustls::sign::CertifiedKey::new(chain.to_vec(), signing_key);
        if let Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) =
            certified.keys_match()
        {
            return Err(format!(
                "{} does not match the certificate in {} (its public key is another)",
                path.display(),
                chain_path
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            ));
        }
    }
    Ok(key)
}

/// Certificates rustls accepts as trust anchors.
fn trust_anchors(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = certificates(path)?;
    let mut store = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        store.add(cert.clone()).map_err(|e| {
            format!(
                "certificate #{} in {} cannot be a trust anchor: {e}",
                i + 1,
                path.display()
            )
        })?;
    }
    Ok(certs)
}

fn read_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let pem = read(path)?;
    let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{} is not valid PEM: {e}", path.display()))?;
    if crls.is_empty() {
        return Err(format!(
            "{} holds no PEM CRL (-----BEGIN X509 CRL-----)",
            path.display()
        ));
    }
    for (i, der) in crls.iter().enumerate() {
        match x509_parser::parse_x509_crl(der) {
            Ok(([], _)) => {}
            Ok(_) => {
                return Err(format!(
                    "CRL #{} in {} has trailing bytes",
                    i + 1,
                    path.display()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "CRL #{} in {} is not an X.509 CRL: {e}",
                    i + 1,
                    path.display()
                ))
            }
        }
    }
    Ok(crls)
}

/// CRLs each signed by one of `roots`, accepted by the verifier `serve` builds.
fn crls_signed_by(
    path: &Path,
    roots: &[CertificateDer<'static>],
    ca_path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let crls = read_crls(path)?;
    let cas = roots
        .iter()
        .filter_map(|der| parse_certificate(der).ok())
        .collect::<Vec<_>>();
    // A CRL issued by a client CA must verify with it; the CRLs of intermediates (which
    // clients present in their chains, and rustls checks against them) cannot be judged
    // here, but at least one CRL must be the client CA's own: a file with none is not
    // this CA's.
    let mut own = 0;
    for (i, der) in crls.iter().enumerate() {
        let Ok((_, crl)) = x509_parser::parse_x509_crl(der) else {
            continue;
        };
        let issuers: Vec<_> = cas
            .iter()
            .filter(|ca| ca.subject().as_raw() == crl.issuer().as_raw())
            .collect();
        if issuers.is_empty() {
            continue;
        }
        if !issuers
            .iter()
            .any(|ca| crl.verify_signature(ca.public_key()).is_ok())
        {
            return Err(format!(
                "CRL #{} in {} names a certificate of tls.clientCa ({}) as its issuer, but is not signed by it",
                i + 1,
                path.display(),
                ca_path.display()
            ));
        }
        own += 1;
    }
    if own == 0 {
        return Err(format!(
            "no CRL in {} is signed by a certificate of tls.clientCa ({}): not this CA's CRLs",
            path.display(),
            ca_path.display()
        ));
    }
    let mut store = rustls::RootCertStore::empty();
    for cert in roots {
        store.add(cert.clone()).map_err(|e| e.to_string())?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(store),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .with_crls(crls.iter().cloned())
    .allow_unauthenticated()
    .build()
    .map_err(|e| format!("{}: rustls refuses it: {e}", path.display()))?;
    Ok(crls)
}
