//! Which client certificate a request is made with, and whether it is the one a token is
//! bound to (RFC 8705 §3): the one certificate-binding check of the gate.
//!
//! A request's certificate is the connection's own (judged once at the handshake), or —
//! only from a configured trusted proxy — the one its RFC 9440 `Client-Cert` header
//! carries. The caller reads the header values; nothing here knows HTTP.

use crate::mtls::PeerCertificate;
use rustls::pki_types::CertificateDer;
use rustls::server::danger::ClientCertVerifier;
use std::sync::Arc;

/// The client certificate a request is made with.
#[derive(Debug, Clone)]
pub enum RequestCertificate {
    Present(Arc<PeerCertificate>),
    Absent,
    /// The request came through a trusted proxy that forwarded no (usable) `Client-Cert`:
    /// the certificate context was lost on the way (metric reason `context-missing`).
    ContextMissing,
}

impl RequestCertificate {
    pub fn certificate(&self) -> Option<&PeerCertificate> {
        match self {
            Self::Present(c) => Some(c),
            _ => None,
        }
    }
}

/// What a request carries that may name a client certificate.
pub struct CertificateSources<'a> {
    /// The certificate of the TLS connection, judged at the handshake.
    pub connection: Option<&'a Arc<PeerCertificate>>,
    /// The peer is one of the configured trusted proxies.
    pub from_trusted_proxy: bool,
    /// The raw `Client-Cert` and `Client-Cert-Chain` header values (RFC 9440).
    pub client_cert_header: Option<&'a [u8]>,
    pub client_cert_chain_header: Option<&'a [u8]>,
    /// Judges forwarded chains against the site's client CA and CRLs.
    pub verifier: Option<&'a dyn ClientCertVerifier>,
}

/// Decides which certificate the request carries. A `Client-Cert` header from a peer that
/// is not a trusted proxy is ignored (the caller logs that).
pub fn request_certificate(sources: &CertificateSources<'_>) -> RequestCertificate {
    if !sources.from_trusted_proxy {
        return match sources.connection {
            Some(c) => RequestCertificate::Present(c.clone()),
            None => RequestCertificate::Absent,
        };
    }
    let (Some(value), Some(verifier)) = (sources.client_cert_header, sources.verifier) else {
        return RequestCertificate::ContextMissing;
    };
    let Some(leaf) = crate::mtls::parse_client_cert_header(value) else {
        return RequestCertificate::ContextMissing;
    };
    let mut chain = vec![CertificateDer::from(leaf)];
    if let Some(extra) = sources
        .client_cert_chain_header
        .and_then(crate::mtls::parse_client_cert_chain_header)
    {
        chain.extend(extra.into_iter().map(CertificateDer::from));
    }
    match PeerCertificate::inspect(&chain, verifier) {
        Some(c) => RequestCertificate::Present(Arc::new(c)),
        None => RequestCertificate::ContextMissing,
    }
}

/// Why a presented certificate does not match a token's binding; the value is the
/// `reason` label of the mismatch metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindingMismatch {
    ThumbprintMismatch,
    MissingCertificate,
    ContextMissing,
}

impl BindingMismatch {
    pub fn reason(self) -> &'static str {
        match self {
            Self::ThumbprintMismatch => "thumbprint-mismatch",
            Self::MissingCertificate => "missing-certificate",
            Self::ContextMissing => "context-missing",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::ThumbprintMismatch => "the token is bound to another client certificate",
            Self::MissingCertificate => "the token is bound to a client certificate; present it",
            Self::ContextMissing => "the client certificate was lost before reaching the server",
        }
    }
}

/// RFC 8705 §3: the request's certificate is the one whose `x5t#S256` the token carries.
pub fn check_binding(
    bound_x5t_s256: &str,
    presented: &RequestCertificate,
) -> Result<(), BindingMismatch> {
    match presented {
        // Thumbprints are public values; equality needs no constant time.
        RequestCertificate::Present(c) if c.thumbprint == bound_x5t_s256 => Ok(()),
        RequestCertificate::Present(_) => Err(BindingMismatch::ThumbprintMismatch),
        RequestCertificate::Absent => Err(BindingMismatch::MissingCertificate),
        RequestCertificate::ContextMissing => Err(BindingMismatch::ContextMissing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(thumbprint: &str) -> RequestCertificate {
        RequestCertificate::Present(Arc::new(PeerCertificate {
            thumbprint: thumbprint.into(),
            chain: Ok(()),
            san_uris: vec![],
            subject: Default::default(),
        }))
    }

    #[test]
    fn only_the_bound_certificate_passes() {
        assert_eq!(check_binding("A", &cert("A")), Ok(()));
        assert_eq!(
            check_binding("A", &cert("B")),
            Err(BindingMismatch::ThumbprintMismatch)
        );
        assert_eq!(
            check_binding("A", &RequestCertificate::Absent),
            Err(BindingMismatch::MissingCertificate)
        );
        assert_eq!(
            check_binding("A", &RequestCertificate::ContextMissing),
            Err(BindingMismatch::ContextMissing)
        );
    }

    #[test]
    fn a_forwarded_header_counts_only_from_a_trusted_proxy() {
        let own = Arc::new(PeerCertificate {
            thumbprint: "own".into(),
            chain: Ok(()),
            san_uris: vec![],
            subject: Default::default(),
        });
        let untrusted = CertificateSources {
            connection: Some(&own),
            from_trusted_proxy: false,
            client_cert_header: Some(b":AAAA:"),
            client_cert_chain_header: None,
            verifier: None,
        };
        assert!(
            matches!(request_certificate(&untrusted), RequestCertificate::Present(c) if c.thumbprint == "own")
        );
        let proxy_without_header = CertificateSources {
            connection: None,
            from_trusted_proxy: true,
            client_cert_header: None,
            client_cert_chain_header: None,
            verifier: None,
        };
        assert!(matches!(
            request_certificate(&proxy_without_header),
            RequestCertificate::ContextMissing
        ));
    }
}
