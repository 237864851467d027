//! Access tokens: JWTs per RFC 9068 (`typ: at+jwt`), signed with the authority's ES256 key,
//! and the JWKS that publishes that key.
//!
//! The signing key is generated on first start into the data directory (PKCS#8 PEM, mode
//! 0600, written atomically) and loaded on every later start. The token header is fixed per
//! key, so it is encoded once; minting a token is one JSON serialisation and one signature.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// The signing key's file in the data directory.
pub const KEY_FILE: &str = "signing-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write the signing key {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
    #[error("the signing key is unusable: {0}")]
    Key(String),
    #[error("signing failed: {0}")]
    Sign(String),
}

/// The `cnf` claim (RFC 7800): what the token is bound to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    /// RFC 9449: thumbprint of the DPoP proof key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jkt: Option<String>,
    /// RFC 8705: SHA-256 thumbprint of the client certificate.
    #[serde(rename = "x5t#S256", skip_serializing_if = "Option::is_none")]
    pub x5t_s256: Option<String>,
}

impl Confirmation {
    pub fn is_empty(&self) -> bool {
        self.jkt.is_none() && self.x5t_s256.is_none()
    }

    /// A token's `cnf` claim as its record keeps it (RFC 7800; RFC 9449 §6.2; RFC 8705 §3.2).
    pub fn of_record(record: &crate::store::TokenRecord) -> Confirmation {
        Confirmation {
            jkt: record.cnf_jkt.clone(),
            x5t_s256: record.sender_certificate.clone(),
        }
    }
}

/// The claims of an access token (RFC 9068 §2.2 plus `tenant`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Vec<String>,
    pub client_id: String,
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub scope: String,
    pub tenant: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

/// The authority's token signing key.
pub struct SigningKey {
    kid: String,
    /// The key prepared once for signing and verifying (`es256`: no per-call OpenSSL
    /// context); josekit only reads the PEM and writes the public JWK.
    signer: crate::es256::Es256PrivateKey,
    verifier: crate::es256::Es256PublicKey,
    public_jwk: Value,
    /// base64url of the fixed JOSE header, `{"alg":"ES256","typ":"at+jwt","kid":...}`.
    header_b64: String,
    /// Tokens whose signature verified, by SHA-256 of the token (see `verify_remembered`).
    verified: std::sync::RwLock<HashMap<[u8; 32], Arc<AccessTokenClaims>>>,
}

/// How many verified tokens are remembered; when full it starts again.
const VERIFIED_CAPACITY: usize = 16_384;

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads `DATA_DIR/signing-key.pem`, creating it on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<SigningKey, TokenError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| TokenError::KeyFile {
            path: path.display().to_string(),
            source,
        };
        let pem = match std::fs::read(&path) {
            Ok(pem) => pem,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let pair = josekit::jws::ES256
                    .generate_key_pair()
                    .map_err(|e| TokenError::Key(e.to_string()))?;
                let pem = pair.to_pem_private_key();
                write_private_file(&path, &pem).map_err(io)?;
                pem
            }
            Err(e) => return Err(io(e)),
        };
        Self::from_pem(&pem)
    }

    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, TokenError> {
        let key = |e: josekit::JoseError| TokenError::Key(e.to_string());
        let pair = josekit::jws::ES256.key_pair_from_pem(pem).map_err(key)?;
        let public = pair.to_jwk_public_key();
        let public_map = public.as_ref().clone();
        let kid = crate::dpop::jwk::thumbprint(&public_map)
            .ok_or_else(|| TokenError::Key("cannot compute the key thumbprint".into()))?;
        let mut public_jwk = Value::Object(public_map);
        public_jwk["kid"] = json!(kid);
        public_jwk["use"] = json!("sig");
        public_jwk["alg"] = json!("ES256");
        let header = json!({"alg": "ES256", "typ": "at+jwt", "kid": kid});
        let es256 = |e: crate::es256::Es256Error| TokenError::Key(e.to_string());
        let signer = crate::es256::Es256PrivateKey::from_pem(pem).map_err(es256)?;
        Ok(SigningKey {
            verifier: signer.public_key().map_err(es256)?,
            signer,
            header_b64: URL_SAFE_NO_PAD.encode(header.to_string()),
            verified: Default::default(),
            public_jwk,
            kid,
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Signs an access token with these claims.
    pub fn mint(&self, claims: &AccessTokenClaims) -> Result<String, TokenError> {
        let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Sign(e.to_string()))?;
        let mut token = String::with_capacity(self.header_b64.len() + payload.len() * 4 / 3 + 100);
        token.push_str(&self.header_b64);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self
            .signer
            .sign(token.as_bytes())
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature, &mut token);
        Ok(token)
    }

    /// The claims of a token this key signed (header, typ and signature checked), or
    /// `None` for anything else: foreign, tampered or malformed tokens.
    pub fn verify(&self, token: &str) -> Option<AccessTokenClaims> {
        let (signing_input, signature_b64) = token.rsplit_once('.')?;
        let (header_b64, payload_b64) = signing_input.split_once('.')?;
        if header_b64 != self.header_b64 {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature_b64).ok()?;
        if !self.verifier.verify(signing_input.as_bytes(), &signature) {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload_b64).ok()?).ok()
    }

    /// [`verify`](Self::verify), remembering the answer for a token that verified, by its
    /// SHA-256. A resource server introspects the same token on many calls; the
    /// first costs a signature verification, the next ones a lookup. Only the exact
    /// bytes that verified are found again (SHA-256), and a key verifies what it signed
    /// for as long as the process holds it, so remembering changes no answer.
    pub fn verify_remembered(&self, token: &str) -> Option<Arc<AccessTokenClaims>> {
        let digest = &crate::store::TokenId::of(token).0;
        if let Some(claims) = self.verified.read().ok()?.get(digest) {
            return Some(claims.clone());
        }
        let claims = Arc::new(self.verify(token)?);
        if let Ok(mut verified) = self.verified.write() {
            if verified.len() >= VERIFIED_CAPACITY {
                verified.clear();
            }
            verified.insert(*digest, claims.clone());
        }
        Some(claims)
    }

    /// The JWK Set published at `/jwks`.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.public_jwk] })
    }
}

/// Creates `path` with mode 0600 from the start, writes it fully, fsyncs, then renames it
/// into place, so a crash never leaves a half-written key.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let temp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    std::fs::rename(&temp, path)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AccessTokenClaims {
        AccessTokenClaims {
            iss: "https://a".into(),
            sub: "c".into(),
            aud: vec!["api".into()],
            client_id: "c".into(),
            scope: "read".into(),
            tenant: "t".into(),
            iat: 1,
            exp: 2,
            jti: "j".into(),
            cnf: Some(Confirmation {
                jkt: Some("k".into()),
                x5t_s256: None,
            }),
        }
    }

    #[test]
    fn key_is_created_0600_and_reloaded_identically() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sealkit-key-{}", crate::secret::generate()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = SigningKey::load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = SigningKey::load_or_create(&dir).unwrap();
        assert_eq!(first.kid(), second.kid());
        let token = first.mint(&claims()).unwrap();
        assert_eq!(second.verify(&token), Some(claims()));
        std::fs::remove_dir_all(dir).ok();
    }

    fn new_key() -> SigningKey {
        let pem = josekit::jws::ES256
            .generate_key_pair()
            .unwrap()
            .to_pem_private_key();
        SigningKey::from_pem(&pem).unwrap()
    }

    /// `token` with one character of its signature changed.
    fn tampered(token: &str) -> String {
        let mut bytes = token.as_bytes().to_vec();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn tampered_or_foreign_tokens_do_not_verify() {
        let key = new_key();
        let token = key.mint(&claims()).unwrap();
        assert!(key.verify(&token).is_some());
        assert!(key.verify(&tampered(&token)).is_none());
        assert!(new_key().verify(&token).is_none());
        assert!(key.verify("garbage").is_none());
    }

    /// A remembered token answers without a new verification; a tampered or foreign one
    /// is refused and not remembered.
    #[test]
    fn verified_tokens_are_remembered_and_only_those() {
        let key = new_key();
        let token = key.mint(&claims()).unwrap();
        let first = key.verify_remembered(&token).unwrap();
        let again = key.verify_remembered(&token).unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "the second answer is the remembered one"
        );
        assert_eq!(*first, claims());

        let tampered = tampered(&token);
        for _ in 0..2 {
            assert!(key.verify_remembered(&tampered).is_none());
        }
        // A token of another key is not taken from this key's memory.
        assert!(new_key().verify_remembered(&token).is_none());
        assert_eq!(key.verified.read().unwrap().len(), 1);
    }
}
