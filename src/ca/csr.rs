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

use rcgen::{PublicKeyData, SignatureAlgorithm};
use x509_parser::asn1_rs::{oid, FromDer, Oid};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::cri_attributes::{ExtensionRequest, ParsedCriAttribute};
use x509_parser::extensions::{ParsedExtension, X509Extension};
use x509_parser::oid_registry::{
    OID_EC_P256, OID_KEY_TYPE_EC_PUBLIC_KEY, OID_NIST_EC_P384, OID_PKCS1_RSAENCRYPTION,
    OID_SIG_ED25519, OID_X509_EXT_BASIC_CONSTRAINTS, OID_X509_EXT_EXTENDED_KEY_USAGE,
    OID_X509_EXT_KEY_USAGE,
};
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

use super::IssuedLeaf;
use super::{client_template, CaError, LeafKey, SiteCa};

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

    /// The one extended key usage the profile grants.
    fn granted_eku(&self) -> &'static str {
        match self {
            LeafProfile::Server { .. } => "serverAuth",
            LeafProfile::Client { .. } => "clientAuth",
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
    let request = inspect_csr(csr_pem)?;
    if let Some(first) = request.asks_ca.first() {
        return Err(CaError::CsrRequestsCa {
            asked: first.clone(),
        });
    }
    let granted_name = profile.granted_eku();
    let mut extra: Vec<String> = Vec::new();
    for name in request.ekus.iter().filter(|name| *name != granted_name) {
        if !extra.contains(name) {
            extra.push(name.clone());
        }
    }
    if !extra.is_empty() {
        return Err(CaError::CsrRequestsEku {
            asked: extra,
            profile: profile.name(),
            granted: granted_name,
        });
    }
    Ok(request.public_key)
}

/// What a PKCS#10 request holds that issuance looks at, parsed by `x509-parser` (a
/// maintained X.509 parser) from untrusted input: the public key (self-signature checked)
/// and what its extension request asks for.
pub struct CsrRequest {
    pub public_key: CsrPublicKey,
    /// Each way the request asks to be a CA (`basicConstraints CA:TRUE`, `keyUsage
    /// keyCertSign`, `keyUsage cRLSign`).
    pub asks_ca: Vec<String>,
    /// The extended key usages asked for (names such as `serverAuth`, or dotted OIDs).
    pub ekus: Vec<String>,
}

/// Parses and checks a PEM PKCS#10 request: one `CERTIFICATE REQUEST` block, a DER
/// request with nothing after it, a supported key, a self-signature that verifies (proof
/// of possession), well-formed requested extensions. The public entry point of CSR
/// parsing (and its fuzz target).
pub fn inspect_csr(csr_pem: &str) -> Result<CsrRequest, CaError> {
    let not_pem = || {
        CaError::InvalidCsr(
            "not a PEM PKCS#10 request (expected -----BEGIN CERTIFICATE REQUEST-----)".to_string(),
        )
    };
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(csr_pem.trim_start().as_bytes()).map_err(|_| not_pem())?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(not_pem());
    }
    let request = match X509CertificationRequest::from_der(&pem.contents) {
        Ok(([], request)) => request,
        Ok(_) => {
            return Err(CaError::InvalidCsr(
                "trailing bytes after the request".into(),
            ))
        }
        Err(e) => return Err(CaError::InvalidCsr(format!("malformed request: {e}"))),
    };
    let info = &request.certification_request_info;
    let public_key = CsrPublicKey::from_spki(&info.subject_pki)?;
    // Proof of possession: only the holder of the private key could have signed it.
    request
        .verify_signature()
        .map_err(|_| CaError::CsrBadSignature)?;

    let mut out = CsrRequest {
        public_key,
        asks_ca: Vec::new(),
        ekus: Vec::new(),
    };
    for attribute in info.iter_attributes() {
        match attribute.parsed_attribute() {
            ParsedCriAttribute::ExtensionRequest(request) => {
                requested(&request.extensions, &mut out)?;
            }
            // Microsoft's older extension request is treated alike.
            _ if attribute.oid == OID_MS_EXTENSION_REQUEST => {
                let set = x509_parser::asn1_rs::Set::from_der(attribute.value)
                    .map(|(_, set)| set)
                    .map_err(|_| malformed("extension request"))?;
                match ExtensionRequest::from_der(&set.content) {
                    Ok(([], request)) => requested(&request.extensions, &mut out)?,
                    _ => return Err(malformed("extension request")),
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Records what `extensions` ask for that the refusal rules look at.
fn requested(extensions: &[X509Extension<'_>], out: &mut CsrRequest) -> Result<(), CaError> {
    for extension in extensions {
        match extension.parsed_extension() {
            ParsedExtension::BasicConstraints(bc) if bc.ca => {
                out.asks_ca.push("basicConstraints CA:TRUE".to_string());
            }
            ParsedExtension::KeyUsage(usage) => {
                if usage.key_cert_sign() {
                    out.asks_ca.push("keyUsage keyCertSign".to_string());
                }
                if usage.crl_sign() {
                    out.asks_ca.push("keyUsage cRLSign".to_string());
                }
            }
            ParsedExtension::ExtendedKeyUsage(eku) => {
                for (asked, name) in [
                    (eku.server_auth, "serverAuth"),
                    (eku.client_auth, "clientAuth"),
                    (eku.code_signing, "codeSigning"),
                    (eku.email_protection, "emailProtection"),
                    (eku.time_stamping, "timeStamping"),
                    (eku.ocsp_signing, "OCSPSigning"),
                    (eku.any, "anyExtendedKeyUsage"),
                ] {
                    if asked {
                        out.ekus.push(name.to_string());
                    }
                }
                out.ekus
                    .extend(eku.other.iter().map(|oid| oid.to_id_string()));
            }
            ParsedExtension::ParseError { .. } => {
                // A malformed extension the rules look at must not be skipped.
                let oid = &extension.oid;
                if *oid == OID_X509_EXT_BASIC_CONSTRAINTS
                    || *oid == OID_X509_EXT_KEY_USAGE
                    || *oid == OID_X509_EXT_EXTENDED_KEY_USAGE
                {
                    return Err(malformed("extension"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The CSR's public key, in the form rcgen writes into a certificate.
pub struct CsrPublicKey {
    alg: &'static SignatureAlgorithm,
    /// The subjectPublicKey BIT STRING contents.
    raw: Vec<u8>,
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
    /// Accepted keys: P-256, P-384 (uncompressed points), Ed25519, RSA 2048–8192 bits.
    fn from_spki(spki: &SubjectPublicKeyInfo<'_>) -> Result<CsrPublicKey, CaError> {
        let unsupported = |what: String| CaError::UnsupportedCsrKey(what);
        let algorithm = &spki.algorithm.algorithm;
        let raw = spki.subject_public_key.data.to_vec();
        let alg = if *algorithm == OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| unsupported("EC key without a named curve".to_string()))?;
            let alg = if curve == OID_EC_P256 {
                &rcgen::PKCS_ECDSA_P256_SHA256
            } else if curve == OID_NIST_EC_P384 {
                &rcgen::PKCS_ECDSA_P384_SHA384
            } else {
                return Err(unsupported(format!("EC curve {}", curve.to_id_string())));
            };
            if raw.first() != Some(&0x04) {
                return Err(unsupported("EC point not in uncompressed form".to_string()));
            }
            alg
        } else if *algorithm == OID_SIG_ED25519 {
            if raw.len() != 32 {
                return Err(CaError::InvalidCsr("malformed Ed25519 key".to_string()));
            }
            &rcgen::PKCS_ED25519
        } else if *algorithm == OID_PKCS1_RSAENCRYPTION {
            let Ok(PublicKey::RSA(rsa)) = spki.parsed() else {
                return Err(CaError::InvalidCsr("malformed RSA key".to_string()));
            };
            let bits = modulus_bits(rsa.modulus);
            if !(2048..=8192).contains(&bits) {
                return Err(unsupported(format!("RSA key of {bits} bits")));
            }
            &rcgen::PKCS_RSA_SHA256
        } else {
            return Err(unsupported(format!(
                "key type {}",
                algorithm.to_id_string()
            )));
        };
        Ok(CsrPublicKey { alg, raw })
    }

    /// Checks that the signed certificate carries exactly the CSR's key.
    pub(crate) fn check_certified(&self, cert_der: &[u8]) -> Result<(), CaError> {
        let certified = x509_parser::parse_x509_certificate(cert_der)
            .map(|(_, cert)| cert.public_key().subject_public_key.data.to_vec())
            .map_err(|e| {
                CaError::InvalidCsr(format!("the signed certificate is unreadable: {e}"))
            })?;
        if certified == self.raw {
            Ok(())
        } else {
            Err(CaError::InvalidCsr(
                "its public key could not be reproduced in the certificate".to_string(),
            ))
        }
    }
}

/// Bits of a big-endian modulus (leading zero bytes and bits ignored).
fn modulus_bits(modulus: &[u8]) -> usize {
    let significant = match modulus.iter().position(|b| *b != 0) {
        Some(first) => &modulus[first..],
        None => return 0,
    };
    significant.len() * 8 - significant[0].leading_zeros() as usize
}

/// Microsoft's older extension request, 1.3.6.1.4.1.311.2.1.14.
const OID_MS_EXTENSION_REQUEST: Oid<'static> = oid!(1.3.6 .1 .4 .1 .311 .2 .1 .14);

fn malformed(what: &str) -> CaError {
    CaError::InvalidCsr(format!("malformed {what}"))
}
