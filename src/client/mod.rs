//! The client side, for sealkit's own clients (the drill runner, the benchmark and the
//! tests, `sealkit token`): DPoP proof keys and proofs (RFC 9449 §4.2) here, HTTPS
//! connections in `https`, the token / introspect / revoke / resource-call acts in `oauth`.
//!
//! This is deliberately independent of the validating code in `dpop`: it builds JSON and
//! signs with josekit, as any external client would.

pub mod device;
pub mod https;
pub mod oauth;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jwk::Jwk;
use josekit::jws::JwsSigner;
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("key generation or signing failed: {0}")]
    Crypto(String),
}

fn crypto(e: impl std::fmt::Display) -> ClientError {
    ClientError::Crypto(e.to_string())
}

/// A DPoP proof key and its signer.
pub struct ProofKey {
    alg: &'static str,
    signer: Box<dyn JwsSigner>,
    public: Value,
    private: Value,
}

impl ProofKey {
    pub fn es256() -> Result<ProofKey, ClientError> {
        let pair = josekit::jws::ES256.generate_key_pair().map_err(crypto)?;
        Self::from_private_jwk("ES256", pair.to_jwk_key_pair())
    }

    pub fn ed25519() -> Result<ProofKey, ClientError> {
        let pair = josekit::jws::EdDSA
            .generate_key_pair(josekit::jwk::alg::ed::EdCurve::Ed25519)
            .map_err(crypto)?;
        Self::from_private_jwk("EdDSA", pair.to_jwk_key_pair())
    }

    fn from_private_jwk(alg: &'static str, private: Jwk) -> Result<ProofKey, ClientError> {
        let signer: Box<dyn JwsSigner> = match alg {
            "ES256" => Box::new(
                josekit::jws::ES256
                    .signer_from_jwk(&private)
                    .map_err(crypto)?,
            ),
            _ => Box::new(
                josekit::jws::EdDSA
                    .signer_from_jwk(&private)
                    .map_err(crypto)?,
            ),
        };
        let private_json = Value::Object(private.as_ref().clone());
        let mut public = private.as_ref().clone();
        public.remove("d");
        Ok(ProofKey {
            alg,
            signer,
            public: Value::Object(public),
            private: private_json,
        })
    }

    pub fn public_jwk(&self) -> Value {
        self.public.clone()
    }

    /// The private JWK, for negative tests that put it where it must never be.
    pub fn private_jwk(&self) -> Value {
        self.private.clone()
    }

    /// RFC 7638 thumbprint: what a token bound to this key carries as `cnf.jkt`.
    pub fn thumbprint(&self) -> String {
        self.public
            .as_object()
            .and_then(crate::dpop::jwk::thumbprint)
            .unwrap_or_default()
    }

    /// Signs `claims` under the standard DPoP header.
    pub fn sign(&self, claims: &Value) -> Result<String, ClientError> {
        self.sign_with_header(claims, |_| {})
    }

    /// Signs `claims` under the standard header after `edit` changed it (negative tests).
    pub fn sign_with_header(
        &self,
        claims: &Value,
        edit: impl FnOnce(&mut Value),
    ) -> Result<String, ClientError> {
        let mut header = json!({"typ": "dpop+jwt", "alg": self.alg, "jwk": self.public});
        edit(&mut header);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.signer.sign(input.as_bytes()).map_err(crypto)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// A fresh proof for `method url` now, with a random jti, the server nonce if one was
    /// given, and `ath` when it accompanies an access token.
    pub fn proof(
        &self,
        method: &str,
        url: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<String, ClientError> {
        self.proof_at(method, url, nonce, access_token, crate::clock::unix_now())
    }

    /// As [`ProofKey::proof`], dated `iat` (Unix seconds).
    pub fn proof_at(
        &self,
        method: &str,
        url: &str,
        nonce: Option<&str>,
        access_token: Option<&str>,
        iat: i64,
    ) -> Result<String, ClientError> {
        let mut claims = json!({
            "jti": crate::secret::generate(),
            "htm": method,
            "htu": url,
            "iat": iat,
        });
        if let Some(nonce) = nonce {
            claims["nonce"] = json!(nonce);
        }
        if let Some(token) = access_token {
            claims["ath"] = json!(crate::dpop::access_token_hash(token));
        }
        self.sign(&claims)
    }
}
