//! ES256 (ECDSA on P-256 with SHA-256, RFC 7518 §3.4) on the hot path, with each key
//! parsed once: the verification of every DPoP proof (`dpop`), and the bare crypto floor
//! the benchmark compares the server against (`bench`).
//!
//! Why not josekit here: its verifier builds an OpenSSL `EVP_PKEY_CTX` for every call,
//! which in OpenSSL 3 means fetching the algorithm implementation from the provider again,
//! and it converts the JWS `r || s` signature to DER only for OpenSSL to parse it back.
//! Here a key is an `EC_KEY` built once, and one verification is SHA-256 of the signing
//! input plus `ECDSA_do_verify` on the two integers: what `openssl speed ecdsap256`
//! measures, plus the hash. josekit keeps everything else: JOSE parsing, the other
//! algorithms, and key files.
//!
//! Not here: deciding whether a key is acceptable for a proof (`dpop::jwk`), and which
//! algorithms are allowed (configuration).

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::nid::Nid;
use openssl::pkey::{Private, Public};

/// The size of one coordinate, one scalar and one half of a JWS signature (RFC 7518 §3.4).
const FIELD_BYTES: usize = 32;

/// Why a key could not be built or a signature made.
#[derive(Debug, thiserror::Error)]
pub enum Es256Error {
    #[error("not a point on P-256")]
    NotOnCurve,
    #[error("the key is not an EC key on P-256")]
    WrongCurve,
    #[error("ECDSA signing failed")]
    Sign(#[source] openssl::error::ErrorStack),
}

fn p256() -> Result<EcGroup, Es256Error> {
    EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|_| Es256Error::WrongCurve)
}

/// A P-256 public key, parsed and checked once.
pub struct Es256PublicKey {
    key: EcKey<Public>,
}

impl Es256PublicKey {
    /// The key with these affine coordinates (the decoded JWK `x` and `y`, 32 bytes each).
    /// OpenSSL refuses a point that is not on the curve.
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<Es256PublicKey, Es256Error> {
        if x.len() != FIELD_BYTES || y.len() != FIELD_BYTES {
            return Err(Es256Error::NotOnCurve);
        }
        let group = p256()?;
        let x = BigNum::from_slice(x).map_err(|_| Es256Error::NotOnCurve)?;
        let y = BigNum::from_slice(y).map_err(|_| Es256Error::NotOnCurve)?;
        let key = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
            .map_err(|_| Es256Error::NotOnCurve)?;
        key.check_key().map_err(|_| Es256Error::NotOnCurve)?;
        Ok(Es256PublicKey { key })
    }

    /// Whether `signature` (the JWS form: `r || s`, 32 bytes each) is a valid ES256
    /// signature of `signing_input` under this key. Any malformed signature is `false`.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        let Some((r, s)) = split_signature(signature) else {
            return false;
        };
        let digest = openssl::sha::sha256(signing_input);
        let (Ok(r), Ok(s)) = (BigNum::from_slice(r), BigNum::from_slice(s)) else {
            return false;
        };
        let Ok(signature) = EcdsaSig::from_private_components(r, s) else {
            return false;
        };
        signature.verify(&digest, &self.key).unwrap_or(false)
    }
}

fn split_signature(signature: &[u8]) -> Option<(&[u8], &[u8])> {
    (signature.len() == 2 * FIELD_BYTES).then(|| signature.split_at(FIELD_BYTES))
}

/// A P-256 private key, parsed once, that signs in the JWS form.
pub struct Es256PrivateKey {
    key: EcKey<Private>,
}

impl std::fmt::Debug for Es256PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Es256PrivateKey(<redacted>)")
    }
}

impl Es256PrivateKey {
    /// A fresh random key (benchmarks and tests).
    pub fn generate() -> Result<Es256PrivateKey, Es256Error> {
        let group = p256()?;
        let key = EcKey::generate(&group).map_err(Es256Error::Sign)?;
        Ok(Es256PrivateKey { key })
    }

    /// The key of a PEM private key (PKCS#8 or SEC 1), which must be on P-256.
    pub fn from_pem(pem: &[u8]) -> Result<Es256PrivateKey, Es256Error> {
        let key = openssl::pkey::PKey::private_key_from_pem(pem)
            .and_then(|k| k.ec_key())
            .map_err(|_| Es256Error::WrongCurve)?;
        if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err(Es256Error::WrongCurve);
        }
        Ok(Es256PrivateKey { key })
    }

    /// The public half.
    pub fn public_key(&self) -> Result<Es256PublicKey, Es256Error> {
        let mut ctx = BigNumContext::new().map_err(Es256Error::Sign)?;
        let (mut x, mut y) = (
            BigNum::new().map_err(Es256Error::Sign)?,
            BigNum::new().map_err(Es256Error::Sign)?,
        );
        self.key
            .public_key()
            .affine_coordinates(self.key.group(), &mut x, &mut y, &mut ctx)
            .map_err(Es256Error::Sign)?;
        let (x, y) = (
            x.to_vec_padded(FIELD_BYTES as i32)
                .map_err(Es256Error::Sign)?,
            y.to_vec_padded(FIELD_BYTES as i32)
                .map_err(Es256Error::Sign)?,
        );
        Es256PublicKey::from_coordinates(&x, &y)
    }

    /// The ES256 signature of `signing_input` in the JWS form (`r || s`).
    pub fn sign(&self, signing_input: &[u8]) -> Result<[u8; 2 * FIELD_BYTES], Es256Error> {
        let digest = openssl::sha::sha256(signing_input);
        let signature = EcdsaSig::sign(&digest, &self.key).map_err(Es256Error::Sign)?;
        let mut out = [0u8; 2 * FIELD_BYTES];
        let r = signature.r().to_vec_padded(FIELD_BYTES as i32);
        let s = signature.s().to_vec_padded(FIELD_BYTES as i32);
        let (Ok(r), Ok(s)) = (r, s) else {
            return Err(Es256Error::Sign(openssl::error::ErrorStack::get()));
        };
        out[..FIELD_BYTES].copy_from_slice(&r);
        out[FIELD_BYTES..].copy_from_slice(&s);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::ProofKey;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn coordinate(jwk: &serde_json::Value, name: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(jwk[name].as_str().unwrap()).unwrap()
    }

    /// A proof signed by the client library (josekit) verifies here; any change to the
    /// input or the signature does not.
    #[test]
    fn agrees_with_josekit_on_a_real_proof() {
        let key = ProofKey::es256().unwrap();
        let jwk = key.public_jwk();
        let public =
            Es256PublicKey::from_coordinates(&coordinate(&jwk, "x"), &coordinate(&jwk, "y"))
                .unwrap();
        let proof = key
            .proof("POST", "https://as.example/token", None, None)
            .unwrap();
        let (input, signature) = proof.rsplit_once('.').unwrap();
        let signature = URL_SAFE_NO_PAD.decode(signature).unwrap();
        assert!(public.verify(input.as_bytes(), &signature));

        let mut other_input = input.as_bytes().to_vec();
        other_input[5] ^= 1;
        assert!(!public.verify(&other_input, &signature));
        for i in [0, 31, 32, 63] {
            let mut bad = signature.clone();
            bad[i] ^= 0x80;
            assert!(!public.verify(input.as_bytes(), &bad), "byte {i} flipped");
        }
        assert!(!public.verify(input.as_bytes(), &signature[..63]));
        assert!(!public.verify(input.as_bytes(), &[0u8; 64]), "r = s = 0");
        assert!(!public.verify(input.as_bytes(), &[0xffu8; 64]), "r, s >= n");
    }

    /// What this module signs, josekit verifies (so tokens signed here are ordinary JWS).
    #[test]
    fn josekit_verifies_what_it_signs() {
        use josekit::jws::JwsVerifier;
        let key = Es256PrivateKey::generate().unwrap();
        let signature = key.sign(b"header.claims").unwrap();
        assert!(key
            .public_key()
            .unwrap()
            .verify(b"header.claims", &signature));
        let pem = key.key.public_key_to_pem().unwrap();
        let verifier = josekit::jws::ES256.verifier_from_pem(&pem).unwrap();
        verifier.verify(b"header.claims", &signature).unwrap();
        assert!(verifier.verify(b"header.claimz", &signature).is_err());
    }

    #[test]
    fn a_point_off_the_curve_is_refused() {
        let key = Es256PrivateKey::generate().unwrap().public_key().unwrap();
        let mut ctx = BigNumContext::new().unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        key.key
            .public_key()
            .affine_coordinates(key.key.group(), &mut x, &mut y, &mut ctx)
            .unwrap();
        let x = x.to_vec_padded(32).unwrap();
        let mut y = y.to_vec_padded(32).unwrap();
        assert!(Es256PublicKey::from_coordinates(&x, &y).is_ok());
        y[31] ^= 1;
        assert!(matches!(
            Es256PublicKey::from_coordinates(&x, &y),
            Err(Es256Error::NotOnCurve)
        ));
        assert!(Es256PublicKey::from_coordinates(&x[..31], &y).is_err());
    }
}
