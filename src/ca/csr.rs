//! Issuance from a PKCS#10 certificate signing request, for keys that must never leave a
//! workload host.
//!
//! Responsible for: verifying the CSR's self-signature (proof that the requester holds the
//! key), refusing a CSR that *asks* for more than the operator's profile grants (to be a
//! CA — basicConstraints `CA:TRUE`, keyUsage `keyCertSign`/`cRLSign` — or for extended key
//! usages other than the profile's), and signing a leaf that carries the CSR's public key
//! and nothing else from it.
//!
//! Not responsible for: honouring the CSR's subject, SANs or any other requested
//! extension. Leaves come from the operator's [`LeafProfile`], never from the CSR's
//! wishes; whatever else it asks for is ignored, and the issued certificate says only what
//! the profile says (the same subject, SANs, EKU, validity, serial and inventory entry as
//! [`SiteCa::issue_server`] / [`SiteCa::issue_client`]).

use std::net::IpAddr;

use openssl::bn::BigNumContext;
use openssl::ec::PointConversionForm;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Public};
use openssl::x509::{X509Req, X509};
use rcgen::{PublicKeyData, SignatureAlgorithm};

use super::IssuedLeaf;
use super::{client_template, ossl, CaError, LeafKey, SiteCa};

/// What a leaf signed from a CSR is for; everything it says comes from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeafProfile {
    /// TLS server: EKU serverAuth, SANs from `dns` and `ips` (at least one), subject
    /// CN = first SAN, O = site name.
    Server { dns: Vec<String>, ips: Vec<IpAddr> },
    /// TLS client: EKU clientAuth, SAN URI `urn:sealkit:client:<client_id>`, subject
    /// CN = `client_id`, O = `tenant` if given.
    Client {
        client_id: String,
        tenant: Option<String>,
    },
}

impl LeafProfile {
    fn name(&self) -> &'static str {
        match self {
            LeafProfile::Server { .. } => "server",
            LeafProfile::Client { .. } => "client",
        }
    }

    /// The one extended key usage the profile grants, as (DER OID body, name).
    fn granted_eku(&self) -> (&'static [u8], &'static str) {
        match self {
            LeafProfile::Server { .. } => (OID_SERVER_AUTH, "serverAuth"),
            LeafProfile::Client { .. } => (OID_CLIENT_AUTH, "clientAuth"),
        }
    }
}

impl SiteCa {
    /// Signs a leaf for the public key in `csr_pem` (PEM PKCS#10), as `profile` says.
    ///
    /// The CSR's self-signature must verify ([`CaError::CsrBadSignature`]); a CSR asking to
    /// be a CA is refused with [`CaError::CsrRequestsCa`], one asking for another EKU than
    /// the profile's with [`CaError::CsrRequestsEku`]. Accepted keys: P-256, P-384,
    /// Ed25519, RSA 2048–8192. The returned leaf has no `key_pem`: the key stays where the
    /// CSR was made. Recorded in the inventory like any other leaf.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        profile: LeafProfile,
        valid_days: u32,
    ) -> Result<IssuedLeaf, CaError> {
        // The operator's flags are checked first: a mistake there is theirs to fix whatever
        // the CSR holds.
        let template = match &profile {
            LeafProfile::Server { dns, ips } => self.server_template(dns, ips)?,
            LeafProfile::Client { client_id, tenant } => {
                client_template(client_id, tenant.as_deref())?
            }
        };
        let public = verify_csr(csr_pem, &profile)?;
        self.issue(template, valid_days, LeafKey::Csr(&public))
    }
}

/// Parses the CSR, verifies its self-signature, refuses what the profile does not grant,
/// and extracts the public key.
fn verify_csr(csr_pem: &str, profile: &LeafProfile) -> Result<CsrPublicKey, CaError> {
    let req = X509Req::from_pem(csr_pem.trim_start().as_bytes()).map_err(|_| {
        CaError::InvalidCsr(
            "not a PEM PKCS#10 request (expected -----BEGIN CERTIFICATE REQUEST-----)".to_string(),
        )
    })?;
    let key = req
        .public_key()
        .map_err(|_| CaError::UnsupportedCsrKey("its public key cannot be read".to_string()))?;
    // Proof of possession: only the holder of the private key could have signed it.
    if !matches!(req.verify(&key), Ok(true)) {
        return Err(CaError::CsrBadSignature);
    }

    let der = req.to_der().map_err(ossl("encode the CSR"))?;
    let asked = requested_extensions(&der)?;
    if let Some(first) = asked.ca.first() {
        return Err(CaError::CsrRequestsCa {
            asked: first.clone(),
        });
    }
    let (granted_oid, granted_name) = profile.granted_eku();
    let mut extra: Vec<String> = Vec::new();
    for oid in asked
        .ekus
        .iter()
        .filter(|oid| oid.as_slice() != granted_oid)
    {
        let name = eku_name(oid);
        if !extra.contains(&name) {
            extra.push(name);
        }
    }
    if !extra.is_empty() {
        return Err(CaError::CsrRequestsEku {
            asked: extra,
            profile: profile.name(),
            granted: granted_name,
        });
    }
    CsrPublicKey::from_pkey(key)
}

/// The CSR's public key, in the form rcgen writes into a certificate.
pub(crate) struct CsrPublicKey {
    alg: &'static SignatureAlgorithm,
    /// The subjectPublicKey BIT STRING contents.
    raw: Vec<u8>,
    pkey: PKey<Public>,
}

impl PublicKeyData for CsrPublicKey {
    fn der_bytes(&self) -> &[u8] {
        &self.raw
    }

    fn algorithm(&self) -> &SignatureAlgorithm {
        self.alg
    }
}

impl CsrPublicKey {
    fn from_pkey(pkey: PKey<Public>) -> Result<CsrPublicKey, CaError> {
        let unsupported = |what: String| CaError::UnsupportedCsrKey(what);
        let (alg, raw) = match pkey.id() {
            Id::EC => {
                let ec = pkey.ec_key().map_err(ossl("read the CSR's EC key"))?;
                let group = ec.group();
                let alg = match group.curve_name() {
                    Some(Nid::X9_62_PRIME256V1) => &rcgen::PKCS_ECDSA_P256_SHA256,
                    Some(Nid::SECP384R1) => &rcgen::PKCS_ECDSA_P384_SHA384,
                    other => {
                        return Err(unsupported(format!(
                            "EC curve {}",
                            other
                                .and_then(|n| n.short_name().ok())
                                .unwrap_or("(unnamed)")
                        )))
                    }
                };
                let mut ctx = BigNumContext::new().map_err(ossl("allocate a context"))?;
                let raw = ec
                    .public_key()
                    .to_bytes(group, PointConversionForm::UNCOMPRESSED, &mut ctx)
                    .map_err(ossl("encode the CSR's EC point"))?;
                (alg, raw)
            }
            Id::ED25519 => (
                &rcgen::PKCS_ED25519,
                pkey.raw_public_key()
                    .map_err(ossl("read the CSR's Ed25519 key"))?,
            ),
            Id::RSA => {
                let rsa = pkey.rsa().map_err(ossl("read the CSR's RSA key"))?;
                let bits = rsa.size() * 8;
                if !(2048..=8192).contains(&bits) {
                    return Err(unsupported(format!("RSA key of {bits} bits")));
                }
                (
                    &rcgen::PKCS_RSA_SHA256,
                    rsa.public_key_to_der_pkcs1()
                        .map_err(ossl("encode the CSR's RSA key"))?,
                )
            }
            other => {
                let name = Nid::from_raw(other.as_raw())
                    .short_name()
                    .unwrap_or("unknown")
                    .to_string();
                return Err(unsupported(format!("key type {name}")));
            }
        };
        Ok(CsrPublicKey { alg, raw, pkey })
    }

    /// Checks that the signed certificate carries exactly the CSR's key.
    pub(crate) fn check_certified(&self, cert_der: &[u8]) -> Result<(), CaError> {
        let certified = X509::from_der(cert_der)
            .and_then(|c| c.public_key())
            .map_err(ossl("read back the signed certificate"))?;
        if certified.public_eq(&self.pkey) {
            Ok(())
        } else {
            Err(CaError::InvalidCsr(
                "its public key could not be reproduced in the certificate".to_string(),
            ))
        }
    }
}

// DER tags and OID bodies used below.
const BOOLEAN: u8 = 0x01;
const INTEGER: u8 = 0x02;
const BIT_STRING: u8 = 0x03;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// `[0]` constructed: the attributes of a CertificationRequestInfo.
const ATTRIBUTES: u8 = 0xa0;
/// pkcs-9-at-extensionRequest, 1.2.840.113549.1.9.14 (RFC 2985).
const OID_EXTENSION_REQUEST: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
/// Microsoft's older extension request, 1.3.6.1.4.1.311.2.1.14; treated alike.
const OID_MS_EXTENSION_REQUEST: &[u8] =
    &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x01, 0x0e];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x0f];
const OID_EXT_KEY_USAGE: &[u8] = &[0x55, 0x1d, 0x25];
const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// Names of the extended key usages an operator is likely to see asked for.
const EKU_NAMES: [(&[u8], &str); 7] = [
    (OID_SERVER_AUTH, "serverAuth"),
    (OID_CLIENT_AUTH, "clientAuth"),
    (
        &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03],
        "codeSigning",
    ),
    (
        &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x04],
        "emailProtection",
    ),
    (
        &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x08],
        "timeStamping",
    ),
    (
        &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x09],
        "OCSPSigning",
    ),
    (&[0x55, 0x1d, 0x25, 0x00], "anyExtendedKeyUsage"),
];

fn eku_name(oid: &[u8]) -> String {
    EKU_NAMES
        .iter()
        .find(|(body, _)| *body == oid)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| oid_to_dotted(oid))
}

/// Dotted form of an OID body, for messages.
fn oid_to_dotted(body: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut value: u64 = 0;
    for &b in body {
        value = (value << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (value / 40).min(2);
                arcs.push(first);
                arcs.push(value - first * 40);
            } else {
                arcs.push(value);
            }
            value = 0;
        }
    }
    arcs.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// What the CSR's extension request asks for that matters to the refusal rules.
#[derive(Debug, Default)]
struct Requested {
    /// Descriptions of each way it asks to be a CA.
    ca: Vec<String>,
    /// OID bodies of the extended key usages asked for.
    ekus: Vec<Vec<u8>>,
}

fn malformed(what: &str) -> CaError {
    CaError::InvalidCsr(format!("malformed {what}"))
}

/// A minimal DER reader for the one structure read here. The input is OpenSSL's own
/// re-encoding of a request it has parsed, so only definite lengths and low tag numbers
/// occur; anything else is refused rather than skipped.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn next(&mut self) -> Result<(u8, &'a [u8]), CaError> {
        let bad = || malformed("DER encoding");
        let (&tag, rest) = self.0.split_first().ok_or_else(bad)?;
        if tag & 0x1f == 0x1f {
            return Err(bad());
        }
        let (&first, mut rest) = rest.split_first().ok_or_else(bad)?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return Err(bad());
            }
            let (len_bytes, after) = rest.split_at(n);
            rest = after;
            len_bytes
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        if rest.len() < len {
            return Err(bad());
        }
        let (content, after) = rest.split_at(len);
        self.0 = after;
        Ok((tag, content))
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<&'a [u8], CaError> {
        match self.next()? {
            (t, content) if t == tag => Ok(content),
            _ => Err(malformed(what)),
        }
    }
}

/// Walks CertificationRequest → CertificationRequestInfo → attributes → extensionRequest
/// (RFC 2986 §4, RFC 2985 §5.4.2) and collects the requests the refusal rules look at.
fn requested_extensions(csr_der: &[u8]) -> Result<Requested, CaError> {
    let mut out = Requested::default();
    let request = Der(csr_der).expect(SEQUENCE, "request")?;
    let mut info = Der(Der(request).expect(SEQUENCE, "request info")?);
    info.expect(INTEGER, "request version")?;
    info.expect(SEQUENCE, "subject")?;
    info.expect(SEQUENCE, "subject public key info")?;
    if info.is_empty() {
        return Ok(out);
    }
    let mut attributes = Der(info.expect(ATTRIBUTES, "attributes")?);
    while !attributes.is_empty() {
        let mut attribute = Der(attributes.expect(SEQUENCE, "attribute")?);
        let oid = attribute.expect(OID, "attribute type")?;
        let mut values = Der(attribute.expect(SET, "attribute values")?);
        if oid != OID_EXTENSION_REQUEST && oid != OID_MS_EXTENSION_REQUEST {
            continue;
        }
        while !values.is_empty() {
            let mut extensions = Der(values.expect(SEQUENCE, "extension request")?);
            while !extensions.is_empty() {
                let mut extension = Der(extensions.expect(SEQUENCE, "extension")?);
                let id = extension.expect(OID, "extension id")?;
                let (mut tag, mut value) = extension.next()?;
                if tag == BOOLEAN {
                    (tag, value) = extension.next()?;
                }
                if tag != OCTET_STRING || !extension.is_empty() {
                    return Err(malformed("extension"));
                }
                match id {
                    OID_BASIC_CONSTRAINTS => {
                        let mut bc = Der(Der(value).expect(SEQUENCE, "basicConstraints")?);
                        if !bc.is_empty() {
                            let (tag, ca) = bc.next()?;
                            if tag == BOOLEAN && ca.iter().any(|b| *b != 0) {
                                out.ca.push("basicConstraints CA:TRUE".to_string());
                            }
                        }
                    }
                    OID_KEY_USAGE => {
                        let bits = Der(value).expect(BIT_STRING, "keyUsage")?;
                        // bits[0] counts unused bits; keyCertSign is bit 5, cRLSign bit 6.
                        let first = bits.get(1).copied().unwrap_or(0);
                        if first & 0x04 != 0 {
                            out.ca.push("keyUsage keyCertSign".to_string());
                        }
                        if first & 0x02 != 0 {
                            out.ca.push("keyUsage cRLSign".to_string());
                        }
                    }
                    OID_EXT_KEY_USAGE => {
                        let mut ekus = Der(Der(value).expect(SEQUENCE, "extKeyUsage")?);
                        while !ekus.is_empty() {
                            out.ekus.push(ekus.expect(OID, "extKeyUsage")?.to_vec());
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(out)
}
