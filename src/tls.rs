//! TLS material and configuration, shared by the server and the clients: PEM loading of
//! certificates and keys, and the rustls server configuration: the site's server certificate, TLS 1.2 and 1.3 with the
//! `ring` provider, session resumption, and (when a client CA is configured) optional
//! client certificates (RFC 8705).
//!
//! Client certificates are *requested* but never required at the TLS layer, and any
//! certificate whose handshake signature verifies is let through: RFC 8705's
//! `self_signed_tls_client_auth` needs certificates no CA issued. Whether the chain verified
//! against the client CA and CRLs is judged once per connection right after the handshake
//! (`mtls::PeerCertificate::inspect`) and decided per request by the client's policy.

use crate::config::Settings;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
    #[error("{path} holds no {what}")]
    Empty { path: String, what: &'static str },
    #[error("TLS configuration refused: {0}")]
    Config(String),
}

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub fn load_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read_err = |message: String| TlsError::Read {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| read_err(e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_err(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            path: path.display().to_string(),
            what: "PEM certificate",
        });
    }
    Ok(certs)
}

pub fn load_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = std::fs::read(path).map_err(|e| TlsError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    rustls_pemfile::private_key(&mut pem.as_slice())
        .map_err(|e| TlsError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?
        .ok_or(TlsError::Empty {
            path: path.display().to_string(),
            what: "PEM private key",
        })
}

/// The site's client-certificate verifier (client CA + CRLs), when client CAs are configured.
pub fn client_verifier(
    settings: &Settings,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    client_verifier_for(
        settings.tls_client_ca.as_deref(),
        settings.tls_client_crl.as_deref(),
    )
}

/// A client-certificate verifier for this CA file and optional CRL file.
pub fn client_verifier_for(
    client_ca: Option<&Path>,
    client_crl: Option<&Path>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, TlsError> {
    let Some(ca_path) = client_ca else {
        return Ok(None);
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certificates(ca_path)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::Config(e.to_string()))?;
    }
    let mut builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    if let Some(crl_path) = client_crl {
        let read_err = |message: String| TlsError::Read {
            path: crl_path.display().to_string(),
            message,
        };
        let pem = std::fs::read(crl_path).map_err(|e| read_err(e.to_string()))?;
        let crls = rustls_pemfile::crls(&mut pem.as_slice())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| read_err(e.to_string()))?;
        if crls.is_empty() {
            return Err(TlsError::Empty {
                path: crl_path.display().to_string(),
                what: "PEM CRL",
            });
        }
        builder = builder.with_crls(crls);
    }
    let verifier = builder
        .allow_unauthenticated()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    Ok(Some(verifier))
}

/// Requests client certificates and checks the handshake signature, leaving the chain
/// verdict to [`crate::mtls::PeerCertificate::inspect`] (see the module doc).
#[derive(Debug)]
struct RequestClientCertificate(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for RequestClientCertificate {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // Refuse only what cannot be a certificate at all; trust is judged after the handshake.
        if openssl::x509::X509::from_der(end_entity.as_ref()).is_err() {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::BadEncoding,
            ));
        }
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

pub fn server_config(
    settings: &Settings,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    server_config_for(
        &settings.tls_certificate,
        &settings.tls_private_key,
        client_verifier,
    )
}

/// The rustls server configuration for this certificate chain and key.
pub fn server_config_for(
    certificate: &Path,
    private_key: &Path,
    client_verifier: Option<Arc<dyn ClientCertVerifier>>,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let certs = load_certificates(certificate)?;
    let key = load_private_key(private_key)?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_verifier {
        Some(verifier) => {
            builder.with_client_cert_verifier(Arc::new(RequestClientCertificate(verifier)))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless resumption tickets (TLS 1.3) and a session cache (TLS 1.2) spare
    // reconnecting clients a full handshake.
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Ok(Arc::new(config))
}
