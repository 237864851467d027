//! ES256 (ECDSA on P-256 with SHA-256, RFC 7518 §3.4) on the hot path, with each key
//! parsed once: the verification of every DPoP proof (`dpop`), the signature of every
//! access token (`token`), and the bare crypto floor the benchmark compares the server
//! against (`bench`).
//!
//! The arithmetic is ring's (already in the binary for rustls): it verifies and signs the
//! JWS form (`r || s`) directly. Measured on the same machine, alternated, the server
//! spent 14–21% less CPU per DPoP token with ring than with OpenSSL's `ECDSA_do_verify` /
//! `ECDSA_do_sign` on keys prepared once (docs/performance.md, "Session 9"), which in
//! turn had replaced josekit's verifier (an OpenSSL `EVP_PKEY_CTX` per call, the
//! signature converted to DER and back). OpenSSL keeps two jobs here, both once per key:
//! reading PEM key files, and refusing a public point that is not on the curve (ring
//! checks the point on every verification too). josekit keeps everything else: JOSE
//! parsing, the other algorithms, and key files.
//!
//! Not here: deciding whether a key is acceptable for a proof (`dpop::jwk`), and which
//! algorithms are allowed (configuration).

use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use ring::signature::{
    EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use zeroize::Zeroizing;

/// The size of one coordinate, one scalar and one half of a JWS signature (RFC 7518 §3.4).
const FIELD_BYTES: usize = 32;

/// A point in SEC 1 uncompressed form: `04 || x || y`.
type UncompressedPoint = [u8; 1 + 2 * FIELD_BYTES];

/// Why a key could not be built or a signature made.
#[derive(Debug, thiserror::Error)]
pub enum Es256Error {
    #[error("not a point on P-256")]
    NotOnCurve,
    #[error("the key is not an EC key on P-256")]
    WrongCurve,
    #[error("ECDSA signing failed")]
    Sign,
}

/// A P-256 public key, checked once.
pub struct Es256PublicKey {
    point: UncompressedPoint,
}

impl Es256PublicKey {
    /// The key with these affine coordinates (the decoded JWK `x` and `y`, 32 bytes each).
    /// OpenSSL refuses a point that is not on the curve (or not in its prime-order group).
    pub fn from_coordinates(x: &[u8], y: &[u8]) -> Result<Es256PublicKey, Es256Error> {
        if x.len() != FIELD_BYTES || y.len() != FIELD_BYTES {
            return Err(Es256Error::NotOnCurve);
        }
        let group =
            EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).map_err(|_| Es256Error::WrongCurve)?;
        let (Ok(x_number), Ok(y_number)) = (BigNum::from_slice(x), BigNum::from_slice(y)) else {
            return Err(Es256Error::NotOnCurve);
        };
        EcKey::from_public_key_affine_coordinates(&group, &x_number, &y_number)
            .and_then(|key| key.check_key())
            .map_err(|_| Es256Error::NotOnCurve)?;
        let mut point = [0u8; 1 + 2 * FIELD_BYTES];
        point[0] = 0x04;
        point[1..=FIELD_BYTES].copy_from_slice(x);
        point[1 + FIELD_BYTES..].copy_from_slice(y);
        Ok(Es256PublicKey { point })
    }

    /// The affine coordinates (`x`, `y`), 32 bytes each (tests build JWKs from them).
    #[cfg(test)]
    fn coordinates(&self) -> (&[u8], &[u8]) {
        self.point[1..].split_at(FIELD_BYTES)
    }

    /// Whether `signature` (the JWS form: `r || s`, 32 bytes each) is a valid ES256
    /// signature of `signing_input` under this key. Any malformed signature (wrong length,
    /// `r` or `s` zero or not below the group order) is `false`.
    pub fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &self.point[..])
            .verify(signing_input, signature)
            .is_ok()
    }
}

/// A P-256 private key, parsed once, that signs in the JWS form.
pub struct Es256PrivateKey {
    signer: EcdsaKeyPair,
    /// The nonce source of every signature (the kernel's `getrandom`).
    random: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Es256PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Es256PrivateKey(<redacted>)")
    }
}

impl Es256PrivateKey {
    /// A fresh random key (benchmarks and tests).
    pub fn generate() -> Result<Es256PrivateKey, Es256Error> {
        let random = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &random)
            .map_err(|_| Es256Error::Sign)?;
        Es256PrivateKey::from_pkcs8(pkcs8.as_ref(), random)
    }

    /// The key of a PEM private key (PKCS#8 or SEC 1), which must be on P-256.
    pub fn from_pem(pem: &[u8]) -> Result<Es256PrivateKey, Es256Error> {
        let key = openssl::pkey::PKey::private_key_from_pem(pem)
            .and_then(|k| k.ec_key())
            .map_err(|_| Es256Error::WrongCurve)?;
        if key.group().curve_name() != Some(Nid::X9_62_PRIME256V1) {
            return Err(Es256Error::WrongCurve);
        }
        // ring reads PKCS#8 only; the DER holds the secret scalar, so it is wiped after.
        let pkcs8 = openssl::pkey::PKey::from_ec_key(key)
            .and_then(|k| k.private_key_to_pkcs8())
            .map(Zeroizing::new)
            .map_err(|_| Es256Error::WrongCurve)?;
        Es256PrivateKey::from_pkcs8(&pkcs8, ring::rand::SystemRandom::new())
    }

    fn from_pkcs8(
        pkcs8: &[u8],
        random: ring::rand::SystemRandom,
    ) -> Result<Es256PrivateKey, Es256Error> {
        let signer = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8, &random)
            .map_err(|_| Es256Error::WrongCurve)?;
        Ok(Es256PrivateKey { signer, random })
    }

    /// The public half.
    pub fn public_key(&self) -> Result<Es256PublicKey, Es256Error> {
        let point = self.signer.public_key().as_ref();
        if point.len() != 1 + 2 * FIELD_BYTES {
            return Err(Es256Error::WrongCurve);
        }
        let (x, y) = point[1..].split_at(FIELD_BYTES);
        Es256PublicKey::from_coordinates(x, y)
    }

    /// The ES256 signature of `signing_input` in the JWS form (`r || s`).
    pub fn sign(&self, signing_input: &[u8]) -> Result<[u8; 2 * FIELD_BYTES], Es256Error> {
        let signature = self
            .signer
            .sign(&self.random, signing_input)
            .map_err(|_| Es256Error::Sign)?;
        <[u8; 2 * FIELD_BYTES]>::try_from(signature.as_ref()).map_err(|_| Es256Error::Sign)
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
        let public = key.public_key().unwrap();
        let (x, y) = public.coordinates();
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256",
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        });
        let jwk = josekit::jwk::Jwk::from_map(jwk.as_object().unwrap().clone()).unwrap();
        let verifier = josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap();
        verifier.verify(b"header.claims", &signature).unwrap();
        assert!(verifier.verify(b"header.claimz", &signature).is_err());
    }

    /// The token signing key comes as a PEM file in either form; a key on another curve
    /// is refused. Both forms sign what josekit (OpenSSL) verifies.
    #[test]
    fn pem_keys_load_in_both_forms_and_other_curves_are_refused() {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let sec1 = key.private_key_to_pem().unwrap();
        let pkcs8 = openssl::pkey::PKey::from_ec_key(key.clone())
            .unwrap()
            .private_key_to_pem_pkcs8()
            .unwrap();
        let public = key.public_key_to_pem().unwrap();
        let verifier = josekit::jws::ES256.verifier_from_pem(&public).unwrap();
        for pem in [sec1, pkcs8] {
            let signer = Es256PrivateKey::from_pem(&pem).unwrap();
            let signature = signer.sign(b"header.claims").unwrap();
            josekit::jws::JwsVerifier::verify(&verifier, b"header.claims", &signature).unwrap();
        }
        let p384 = EcKey::generate(&EcGroup::from_curve_name(Nid::SECP384R1).unwrap()).unwrap();
        assert!(matches!(
            Es256PrivateKey::from_pem(&p384.private_key_to_pem().unwrap()),
            Err(Es256Error::WrongCurve)
        ));
        assert!(Es256PrivateKey::from_pem(b"not a key").is_err());
    }

    #[test]
    fn a_point_off_the_curve_is_refused() {
        let key = Es256PrivateKey::generate().unwrap().public_key().unwrap();
        let (x, y) = key.coordinates();
        let (x, mut y) = (x.to_vec(), y.to_vec());
        assert!(Es256PublicKey::from_coordinates(&x, &y).is_ok());
        y[31] ^= 1;
        assert!(matches!(
            Es256PublicKey::from_coordinates(&x, &y),
            Err(Es256Error::NotOnCurve)
        ));
        assert!(Es256PublicKey::from_coordinates(&x[..31], &y).is_err());
    }
}
