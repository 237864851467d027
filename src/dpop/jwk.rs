//! The public key in a DPoP proof's `jwk` header: shape checks and the RFC 7638 thumbprint.
//!
//! A proof key must be a *public* asymmetric key of the type its `alg` names, on the right
//! curve and of the right size. The thumbprint is computed over the required members only,
//! in lexicographic order, without whitespace (RFC 7638 §3.2), so `kid`, `alg` or `use`
//! never change it.

use crate::dpop::ProofAlgorithm;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// Why a `jwk` header is not an acceptable proof key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("the jwk header contains private or symmetric key material (`{0}`)")]
    PrivateMaterial(&'static str),
    #[error("the jwk key type does not match alg {0}")]
    TypeMismatch(&'static str),
    #[error("the jwk member `{0}` is missing or not a string")]
    MissingMember(&'static str),
    #[error("the jwk member `{0}` is not canonical base64url")]
    Encoding(&'static str),
    #[error("the jwk curve or key size does not match alg {0}")]
    WrongSize(&'static str),
}

fn member<'a>(jwk: &'a Map<String, Value>, name: &'static str) -> Result<&'a str, KeyError> {
    jwk.get(name)
        .and_then(Value::as_str)
        .ok_or(KeyError::MissingMember(name))
}

fn decoded_len(jwk: &Map<String, Value>, name: &'static str) -> Result<Vec<u8>, KeyError> {
    URL_SAFE_NO_PAD
        .decode(member(jwk, name)?)
        .map_err(|_| KeyError::Encoding(name))
}

/// Checks that `jwk` is a public key usable with `alg` and returns the JSON its RFC 7638
/// thumbprint is computed over (also a stable cache key for the parsed key).
pub fn check_public_key(jwk: &Map<String, Value>, alg: ProofAlgorithm) -> Result<String, KeyError> {
    for name in PRIVATE_MEMBERS {
        if jwk.contains_key(name) {
            return Err(KeyError::PrivateMaterial(name));
        }
    }
    let kty = member(jwk, "kty")?;
    let name = alg.name();
    match alg {
        ProofAlgorithm::ES256 | ProofAlgorithm::ES384 => {
            let (curve, size) = if alg == ProofAlgorithm::ES256 {
                ("P-256", 32)
            } else {
                ("P-384", 48)
            };
            if kty != "EC" {
                return Err(KeyError::TypeMismatch(name));
            }
            if member(jwk, "crv")? != curve
                || decoded_len(jwk, "x")?.len() != size
                || decoded_len(jwk, "y")?.len() != size
            {
                return Err(KeyError::WrongSize(name));
            }
            Ok(format!(
                r#"{{"crv":"{curve}","kty":"EC","x":"{}","y":"{}"}}"#,
                member(jwk, "x")?,
                member(jwk, "y")?
            ))
        }
        ProofAlgorithm::EdDSA => {
            if kty != "OKP" {
                return Err(KeyError::TypeMismatch(name));
            }
            // Ed448 would be an OKP too, but only Ed25519 is accepted.
            if member(jwk, "crv")? != "Ed25519" || decoded_len(jwk, "x")?.len() != 32 {
                return Err(KeyError::WrongSize(name));
            }
            Ok(format!(
                r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
                member(jwk, "x")?
            ))
        }
        ProofAlgorithm::PS256 | ProofAlgorithm::RS256 => {
            if kty != "RSA" {
                return Err(KeyError::TypeMismatch(name));
            }
            let modulus = decoded_len(jwk, "n")?;
            let exponent = decoded_len(jwk, "e")?;
            // Leading zero octets are not allowed in JWK integers (RFC 7518 §6.3.1.1),
            // so the length is the key size; 2048 bits minimum, 8192 maximum.
            if modulus.first() == Some(&0)
                || !(256..=1024).contains(&modulus.len())
                || exponent.is_empty()
                || exponent.len() > 8
            {
                return Err(KeyError::WrongSize(name));
            }
            Ok(format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                member(jwk, "e")?,
                member(jwk, "n")?
            ))
        }
    }
}

/// RFC 7638 thumbprint (SHA-256, base64url) of the canonical JSON from [`check_public_key`].
pub fn thumbprint_of_canonical(canonical: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// RFC 7638 thumbprint of a JWK given as a JSON object, for any supported key type.
pub fn thumbprint(jwk: &Map<String, Value>) -> Option<String> {
    let alg = match (
        jwk.get("kty")?.as_str()?,
        jwk.get("crv").and_then(Value::as_str),
    ) {
        ("EC", Some("P-256")) => ProofAlgorithm::ES256,
        ("EC", Some("P-384")) => ProofAlgorithm::ES384,
        ("OKP", _) => ProofAlgorithm::EdDSA,
        ("RSA", _) => ProofAlgorithm::RS256,
        _ => return None,
    };
    // Thumbprints of private keys are computed over their public members only.
    let mut public = jwk.clone();
    for name in PRIVATE_MEMBERS {
        public.remove(name);
    }
    check_public_key(&public, alg)
        .ok()
        .map(|c| thumbprint_of_canonical(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    /// RFC 7638 §3.1, the verified vector from the facts sheet.
    #[test]
    fn rfc7638_section_3_1_vector() {
        let jwk = object(
            r#"{"kty":"RSA","e":"AQAB","alg":"RS256","kid":"2011-04-29","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}"#,
        );
        assert_eq!(
            thumbprint(&jwk).as_deref(),
            Some("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs")
        );
    }

    #[test]
    fn private_and_symmetric_keys_are_refused() {
        let with_d = object(r#"{"kty":"EC","crv":"P-256","x":"AA","y":"AA","d":"AA"}"#);
        assert_eq!(
            check_public_key(&with_d, ProofAlgorithm::ES256),
            Err(KeyError::PrivateMaterial("d"))
        );
        let oct = object(r#"{"kty":"oct","k":"c2VjcmV0"}"#);
        assert_eq!(
            check_public_key(&oct, ProofAlgorithm::ES256),
            Err(KeyError::PrivateMaterial("k"))
        );
    }

    #[test]
    fn key_must_match_algorithm_and_size() {
        let x = URL_SAFE_NO_PAD.encode([1u8; 32]);
        let ec = object(&format!(
            r#"{{"kty":"EC","crv":"P-256","x":"{x}","y":"{x}"}}"#
        ));
        assert!(check_public_key(&ec, ProofAlgorithm::ES256).is_ok());
        assert_eq!(
            check_public_key(&ec, ProofAlgorithm::RS256),
            Err(KeyError::TypeMismatch("RS256"))
        );
        assert_eq!(
            check_public_key(&ec, ProofAlgorithm::ES384),
            Err(KeyError::WrongSize("ES384"))
        );
        let short = object(r#"{"kty":"EC","crv":"P-256","x":"AQ","y":"AQ"}"#);
        assert_eq!(
            check_public_key(&short, ProofAlgorithm::ES256),
            Err(KeyError::WrongSize("ES256"))
        );
    }
}
