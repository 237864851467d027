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
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
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
    let certs = CertificateDer::pem_slice_iter(&pem)
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
    // The first PKCS #8, PKCS #1 or SEC1 key in the file.
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::Empty {
            path: path.display().to_string(),
            what: "PEM private key",
        },
        other => TlsError::Read {
            path: path.display().to_string(),
            message: other.to_string(),
        },
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
        let crls = CertificateRevocationListDer::pem_slice_iter(&pem)
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
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::Config(format!(
            "the private key {} does not match the certificate {}",
            private_key.display(),
            certificate.display()
        )),
        other => TlsError::Config(other.to_string()),
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Stateless resumption tickets (TLS 1.3) and a session cache (TLS 1.2) spare
    // reconnecting clients a full handshake.
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    //! PEM loading (rustls-pki-types' parser since rustls-pemfile was retired): every key
    //! form sealkit's CA and OpenSSL write, certificates among other sections, and the
    //! errors an operator sees for an empty or broken file.
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn certificates_and_each_key_form_load_from_pem() {
        let dir = tempfile::tempdir().unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["authority".to_string()]).unwrap();
        let cert_pem = issued.cert.pem();
        let pkcs8 = issued.key_pair.serialize_pem();

        // A chain file with a key in between: only the certificates are taken.
        let chain = write(
            dir.path(),
            "chain.pem",
            &format!("{cert_pem}{pkcs8}{cert_pem}"),
        );
        let certs = load_certificates(&chain).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), issued.cert.der().as_ref());

        let key = load_private_key(&write(dir.path(), "pkcs8.key", &pkcs8)).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs8(_)));
        let ec = openssl::ec::EcKey::generate(
            &openssl::ec::EcGroup::from_curve_name(openssl::nid::Nid::X9_62_PRIME256V1).unwrap(),
        )
        .unwrap();
        let sec1 = String::from_utf8(ec.private_key_to_pem().unwrap()).unwrap();
        assert!(sec1.starts_with("-----BEGIN EC PRIVATE KEY-----"), "{sec1}");
        let key = load_private_key(&write(dir.path(), "sec1.key", &sec1)).unwrap();
        assert!(matches!(key, PrivateKeyDer::Sec1(_)));
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let pkcs1 = String::from_utf8(rsa.private_key_to_pem().unwrap()).unwrap();
        assert!(
            pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"),
            "{pkcs1}"
        );
        let key = load_private_key(&write(dir.path(), "pkcs1.key", &pkcs1)).unwrap();
        assert!(matches!(key, PrivateKeyDer::Pkcs1(_)));
        // A certificate before the key, as in a combined file.
        let combined = write(dir.path(), "combined.pem", &format!("{cert_pem}{pkcs8}"));
        assert!(matches!(
            load_private_key(&combined).unwrap(),
            PrivateKeyDer::Pkcs8(_)
        ));
    }

    #[test]
    fn empty_broken_and_missing_files_say_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let issued = rcgen::generate_simple_self_signed(vec!["authority".to_string()]).unwrap();
        let cert_only = write(dir.path(), "server.crt", &issued.cert.pem());
        let key_only = write(dir.path(), "server.key", &issued.key_pair.serialize_pem());

        let err = load_private_key(&cert_only).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Empty {
                    what: "PEM private key",
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("server.crt holds no PEM private key"),
            "{err}"
        );
        let err = load_certificates(&key_only).unwrap_err();
        assert!(
            matches!(
                err,
                TlsError::Empty {
                    what: "PEM certificate",
                    ..
                }
            ),
            "{err}"
        );

        let broken = write(
            dir.path(),
            "broken.crt",
            "-----BEGIN CERTIFICATE-----\n!!!! not base64 !!!!\n-----END CERTIFICATE-----\n",
        );
        let err = load_certificates(&broken).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("broken.crt"), "{err}");

        let err = load_private_key(&dir.path().join("absent.key")).unwrap_err();
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
    }
}
