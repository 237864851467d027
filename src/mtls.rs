//! Client certificates (RFC 8705): what a peer certificate says (its `x5t#S256`, SAN URIs,
//! subject DN, whether its chain verified against the site's client CA and CRLs), the
//! matching rules of `tls_client_auth` and `self_signed_tls_client_auth`, and the RFC 9440
//! `Client-Cert` header a trusted TLS-terminating proxy forwards.
//!
//! Clients are bound to certificates by hash or by an exact SAN URI / subject DN, never by
//! a substring. This module does not know HTTP or the server; it judges certificates.

use crate::dn::DistinguishedName;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::ClientCertVerifier;
use sha2::{Digest, Sha256};

/// A client certificate seen on a connection (or forwarded by a trusted proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCertificate {
    /// base64url(SHA-256(DER of the leaf)): what a bound token carries as `cnf.x5t#S256`.
    pub thumbprint: String,
    /// `Ok` when the chain verified against the client CA (with CRLs, validity, clientAuth
    /// EKU); otherwise why not. Self-signed certificates never verify; they are accepted
    /// only for clients registered with their thumbprint.
    pub chain: Result<(), String>,
    pub san_uris: Vec<String>,
    /// The subject, parsed into attribute type/value pairs (displayed in RFC 4514 form).
    pub subject: DistinguishedName,
}

/// `x5t#S256` of a DER certificate.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

impl PeerCertificate {
    /// Reads the leaf of `chain` and verifies the chain with `verifier` (the site's client
    /// CA and CRLs). `None` when there is no certificate.
    pub fn inspect(
        chain: &[CertificateDer<'_>],
        verifier: &dyn ClientCertVerifier,
    ) -> Option<PeerCertificate> {
        let (leaf, intermediates) = chain.split_first()?;
        let verdict = verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string());
        let (san_uris, subject) = names(leaf.as_ref());
        Some(PeerCertificate {
            thumbprint: thumbprint(leaf.as_ref()),
            chain: verdict,
            san_uris,
            subject,
        })
    }

    pub fn chain_verified(&self) -> bool {
        self.chain.is_ok()
    }
}

/// SAN URIs and the subject of a DER certificate (empty when unparsable).
pub fn names(der: &[u8]) -> (Vec<String>, DistinguishedName) {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return (Vec::new(), DistinguishedName::default());
    };
    let uris = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_string()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    (uris, DistinguishedName::from_x509(cert.subject()))
}

/// RFC 9440 §2.2: `Client-Cert: :<base64 DER>:` (a structured-field byte sequence).
pub fn parse_client_cert_header(value: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let inner = text.strip_prefix(':')?.strip_suffix(':')?;
    STANDARD.decode(inner).ok().filter(|der| !der.is_empty())
}

/// RFC 9440 §2.3: `Client-Cert-Chain`: a comma-separated list of byte sequences.
pub fn parse_client_cert_chain_header(value: &[u8]) -> Option<Vec<Vec<u8>>> {
    let text = std::str::from_utf8(value).ok()?;
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| parse_client_cert_header(part.as_bytes()))
        .collect()
}

/// How a client proves who it is with its certificate (RFC 8705 §2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateIdentity {
    /// `tls_client_auth`: the chain verified and the registered SAN URI or subject DN
    /// matches exactly.
    Pki {
        san_uri: Option<String>,
        /// Compared structurally with the certificate's subject (never as text).
        subject_dn: Option<DistinguishedName>,
    },
    /// `self_signed_tls_client_auth`: the certificate's thumbprint is registered.
    SelfSigned { thumbprints: Vec<String> },
}

impl CertificateIdentity {
    /// Whether `certificate` authenticates a client registered with this identity.
    pub fn matches(&self, certificate: &PeerCertificate) -> bool {
        match self {
            Self::Pki {
                san_uri,
                subject_dn,
            } => {
                certificate.chain_verified()
                    && (san_uri
                        .as_ref()
                        .is_some_and(|u| certificate.san_uris.iter().any(|s| s == u))
                        || subject_dn
                            .as_ref()
                            .is_some_and(|d| *d == certificate.subject))
            }
            Self::SelfSigned { thumbprints } => thumbprints.contains(&certificate.thumbprint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(chain: Result<(), String>) -> PeerCertificate {
        PeerCertificate {
            thumbprint: "t1".into(),
            chain,
            san_uris: vec!["urn:sealkit:client:a".into()],
            subject: DistinguishedName::parse("CN=a,O=t").unwrap(),
        }
    }

    #[test]
    fn pki_identity_needs_a_verified_chain_and_an_exact_name() {
        let by_uri = CertificateIdentity::Pki {
            san_uri: Some("urn:sealkit:client:a".into()),
            subject_dn: None,
        };
        assert!(by_uri.matches(&cert(Ok(()))));
        assert!(!by_uri.matches(&cert(Err("revoked".into()))));
        let prefix = CertificateIdentity::Pki {
            san_uri: Some("urn:sealkit:client:".into()),
            subject_dn: None,
        };
        assert!(
            !prefix.matches(&cert(Ok(()))),
            "a substring must never match"
        );
        let by_dn = CertificateIdentity::Pki {
            san_uri: None,
            subject_dn: Some(DistinguishedName::parse("CN=a, O=t").unwrap()),
        };
        assert!(by_dn.matches(&cert(Ok(()))));
        let other_dn = CertificateIdentity::Pki {
            san_uri: None,
            subject_dn: Some(DistinguishedName::parse("CN=a").unwrap()),
        };
        assert!(!other_dn.matches(&cert(Ok(()))));
    }

    #[test]
    fn self_signed_identity_is_the_thumbprint() {
        let id = CertificateIdentity::SelfSigned {
            thumbprints: vec!["t1".into()],
        };
        assert!(id.matches(&cert(Err("self-signed".into()))));
        let other = CertificateIdentity::SelfSigned {
            thumbprints: vec!["t2".into()],
        };
        assert!(!other.matches(&cert(Ok(()))));
    }

    #[test]
    fn client_cert_header_is_a_byte_sequence() {
        assert_eq!(parse_client_cert_header(b":AQID:"), Some(vec![1, 2, 3]));
        assert_eq!(parse_client_cert_header(b"AQID"), None);
        assert_eq!(parse_client_cert_header(b"::"), None);
        assert_eq!(parse_client_cert_header(b":!!:"), None);
        assert_eq!(
            parse_client_cert_chain_header(b":AQ==:, :Ag==:"),
            Some(vec![vec![1], vec![2]])
        );
    }

    /// A subject with `=`, `,` and non-ASCII characters, registered as the operator copies it
    /// from `openssl x509 -subject -nameopt RFC2253`, matches the certificate structurally.
    #[test]
    fn subject_dns_match_what_openssl_prints() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "a=b, Inc");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "café");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("c.pem");
        std::fs::write(&pem, cert.pem()).unwrap();
        let out = std::process::Command::new("openssl")
            .args(["x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in"])
            .arg(&pem)
            .output()
            .expect("openssl CLI");
        let printed = String::from_utf8(out.stdout).unwrap();
        let printed = printed.trim().trim_start_matches("subject=").trim();
        assert!(printed.contains("\\C3\\A9"), "{printed}");
        let (_, subject) = names(cert.der());
        let registered = DistinguishedName::parse(printed).unwrap();
        assert_eq!(registered, subject, "{printed} vs {subject}");
        let certificate = PeerCertificate {
            thumbprint: thumbprint(cert.der()),
            chain: Ok(()),
            san_uris: Vec::new(),
            subject,
        };
        let identity = CertificateIdentity::Pki {
            san_uri: None,
            subject_dn: Some(registered),
        };
        assert!(identity.matches(&certificate));
        // Another value does not match.
        let other = CertificateIdentity::Pki {
            san_uri: None,
            subject_dn: Some(DistinguishedName::parse("CN=cafe,O=a=b\\, Inc").unwrap()),
        };
        assert!(!other.matches(&certificate));
        assert_eq!(certificate.subject.to_string(), "CN=café,O=a=b\\, Inc");
    }
}
