//! Client secrets: generation with full entropy, the stored hash format, and the
//! constant-time comparison.
//!
//! sealkit generates every secret itself (256 random bits), so a single SHA-256 is a
//! sufficient one-way function: there is nothing to brute-force that a slow hash would
//! protect, and `/token` pays ~1 µs instead of the tens of milliseconds a password hash
//! costs. Secrets a human typed must never be registered; `sealkit secret generate` is the
//! only supported source.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

/// The stored form of a client secret: `sha256:<base64url of the digest>`.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("expected `sha256:<43 base64url characters>` as printed by `sealkit secret generate`")]
    Format,
}

impl SecretHash {
    pub fn parse(text: &str) -> Result<Self, SecretError> {
        let encoded = text.strip_prefix("sha256:").ok_or(SecretError::Format)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SecretError::Format)?;
        let digest: [u8; 32] = bytes.try_into().map_err(|_| SecretError::Format)?;
        Ok(SecretHash(digest))
    }

    pub fn of(secret: &str) -> Self {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }

    /// Constant-time check of a presented secret against this hash.
    pub fn matches(&self, presented: &str) -> bool {
        let candidate: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(candidate.ct_eq(&self.0))
    }
}

impl fmt::Display for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(<redacted>)")
    }
}

/// A new client secret: 32 random bytes from the OS generator, base64url.
pub fn generate() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A new identifier for an access token (`jti`): 128 random bits, base64url, from the
/// thread-local generator (ChaCha12, seeded and periodically reseeded from the OS): as
/// unpredictable as the OS generator for this purpose, without a system call per token.
pub fn token_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_mismatch() {
        let secret = generate();
        assert_eq!(secret.len(), 43);
        let hash = SecretHash::parse(&SecretHash::of(&secret).to_string()).unwrap();
        assert!(hash.matches(&secret));
        assert!(!hash.matches(&generate()));
        assert!(!hash.matches(""));
    }

    #[test]
    fn refuses_other_formats() {
        for bad in ["", "sha256:", "plain-secret", "sha1:abcd", "sha256:!!!"] {
            assert!(SecretHash::parse(bad).is_err(), "{bad}");
        }
    }
}
