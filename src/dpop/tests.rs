//! Negative paths first: each numbered check of RFC 9449 §4.3 is shown to fail.

use super::*;
use crate::client::ProofKey;
use crate::config::DpopSettings;
use serde_json::json;
use std::time::Duration;

const NOW: i64 = 1_800_000_000;
const TOKEN_URL: &str = "https://auth.example:443/token";

fn settings() -> DpopSettings {
    DpopSettings {
        enabled: true,
        allowed_algorithms: vec![
            ProofAlgorithm::ES256,
            ProofAlgorithm::EdDSA,
            ProofAlgorithm::RS256,
        ],
        algs_header: "ES256 EdDSA RS256".into(),
        proof_lifetime: Duration::from_secs(60),
        clock_skew: Duration::from_secs(5),
        replay_window: Duration::from_secs(120),
        nonce_required: false,
        nonce_ttl: Duration::from_secs(300),
        bypass_allowed: false,
        bypass: None,
    }
}

fn check(proof: &str) -> Result<ValidatedProof, ProofError> {
    check_with(proof, None)
}

fn check_with(proof: &str, access_token: Option<&str>) -> Result<ValidatedProof, ProofError> {
    let target = EndpointUrl::parse("https://AUTH.example/token").unwrap();
    let facts = RequestFacts {
        method: "POST",
        target: &target,
        now: NOW,
        access_token,
    };
    validate_proof(
        &[proof.as_bytes()],
        &facts,
        &settings(),
        &KeyCache::default(),
    )
}

fn claims() -> serde_json::Value {
    json!({"jti": "j-1", "htm": "POST", "htu": TOKEN_URL, "iat": NOW})
}

#[test]
fn es256_and_eddsa_proofs_are_accepted_and_bound_to_their_thumbprint() {
    for key in [ProofKey::es256().unwrap(), ProofKey::ed25519().unwrap()] {
        let proof = key.sign(&claims()).unwrap();
        let validated = check(&proof).unwrap();
        assert_eq!(validated.jkt, key.thumbprint());
        assert_eq!(validated.jti, "j-1");
    }
}

#[test]
fn step1_exactly_one_header() {
    let proof = ProofKey::es256().unwrap().sign(&claims()).unwrap();
    let target = EndpointUrl::parse(TOKEN_URL).unwrap();
    let facts = RequestFacts {
        method: "POST",
        target: &target,
        now: NOW,
        access_token: None,
    };
    let two = [proof.as_bytes(), proof.as_bytes()];
    assert_eq!(
        validate_proof(&two, &facts, &settings(), &KeyCache::default()),
        Err(ProofError::NotExactlyOneHeader)
    );
    assert_eq!(
        validate_proof(&[], &facts, &settings(), &KeyCache::default()),
        Err(ProofError::NotExactlyOneHeader)
    );
}

#[test]
fn step2_garbage_is_malformed() {
    for garbage in [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "!!.??.**",
        "W10.e30.",
        &"A".repeat(MAX_PROOF_BYTES + 1),
    ] {
        assert!(
            matches!(check(garbage), Err(ProofError::Malformed(_))),
            "{garbage:.20}"
        );
    }
    // `{}.{}.` is well-formed JSON without a typ.
    assert_eq!(check("e30.e30."), Err(ProofError::WrongType));
}

#[test]
fn step4_typ_must_be_dpop_jwt() {
    let key = ProofKey::es256().unwrap();
    assert_eq!(
        check(
            &key.sign_with_header(&claims(), |h| {
                h["typ"] = json!("JWT");
            })
            .unwrap()
        ),
        Err(ProofError::WrongType)
    );
    assert_eq!(
        check(
            &key.sign_with_header(&claims(), |h| {
                h.as_object_mut().unwrap().remove("typ");
            })
            .unwrap()
        ),
        Err(ProofError::WrongType)
    );
}

#[test]
fn step5_alg_none_and_hs256_are_refused() {
    let key = ProofKey::es256().unwrap();
    // alg none: header says none, no signature.
    let header = json!({"typ": "dpop+jwt", "alg": "none", "jwk": key.public_jwk()});
    let unsigned = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert_eq!(check(&unsigned), Err(ProofError::AlgorithmNotAllowed));
    // HS256 "signed" with the public key as the MAC secret (key confusion).
    let header = json!({"typ": "dpop+jwt", "alg": "HS256", "jwk": key.public_jwk()});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    let signer = josekit::jws::HS256
        .signer_from_bytes(key.public_jwk().to_string().as_bytes())
        .unwrap();
    use josekit::jws::JwsSigner;
    let mac = signer.sign(input.as_bytes()).unwrap();
    assert_eq!(
        check(&format!("{input}.{}", URL_SAFE_NO_PAD.encode(mac))),
        Err(ProofError::AlgorithmNotAllowed)
    );
}

#[test]
fn step5_alg_outside_the_allow_list_is_refused() {
    let key = ProofKey::es256().unwrap();
    let mut narrow = settings();
    narrow.allowed_algorithms = vec![ProofAlgorithm::EdDSA];
    let target = EndpointUrl::parse(TOKEN_URL).unwrap();
    let facts = RequestFacts {
        method: "POST",
        target: &target,
        now: NOW,
        access_token: None,
    };
    let proof = key.sign(&claims()).unwrap();
    assert_eq!(
        validate_proof(&[proof.as_bytes()], &facts, &narrow, &KeyCache::default()),
        Err(ProofError::AlgorithmNotAllowed)
    );
}

#[test]
fn step7_rs256_header_on_an_ec_key_is_refused() {
    let key = ProofKey::es256().unwrap();
    let proof = key
        .sign_with_header(&claims(), |h| {
            h["alg"] = json!("RS256");
        })
        .unwrap();
    assert_eq!(
        check(&proof),
        Err(ProofError::Key(jwk::KeyError::TypeMismatch("RS256")))
    );
}

#[test]
fn step7_private_key_in_jwk_is_refused() {
    let key = ProofKey::es256().unwrap();
    let private = key.private_jwk();
    let proof = key
        .sign_with_header(&claims(), |h| {
            h["jwk"] = private.clone();
        })
        .unwrap();
    assert_eq!(
        check(&proof),
        Err(ProofError::Key(jwk::KeyError::PrivateMaterial("d")))
    );
}

#[test]
fn step7_oct_jwk_is_refused() {
    let key = ProofKey::es256().unwrap();
    let proof = key
        .sign_with_header(&claims(), |h| {
            h["jwk"] = json!({"kty": "oct", "k": "c2VjcmV0"});
        })
        .unwrap();
    assert!(matches!(check(&proof), Err(ProofError::Key(_))));
}

#[test]
fn step6_signature_by_another_key_is_refused() {
    let (signer, other) = (ProofKey::es256().unwrap(), ProofKey::es256().unwrap());
    let proof = signer
        .sign_with_header(&claims(), |h| {
            h["jwk"] = other.public_jwk();
        })
        .unwrap();
    assert_eq!(check(&proof), Err(ProofError::BadSignature));
    // One flipped bit in the payload breaks the signature too.
    let proof = signer.sign(&claims()).unwrap();
    let mut parts: Vec<String> = proof.split('.').map(String::from).collect();
    parts[1] = URL_SAFE_NO_PAD
        .encode(json!({"jti": "j-2", "htm": "POST", "htu": TOKEN_URL, "iat": NOW}).to_string());
    assert_eq!(check(&parts.join(".")), Err(ProofError::BadSignature));
}

#[test]
fn step3_required_claims() {
    let key = ProofKey::es256().unwrap();
    for claim in ["jti", "htm", "htu", "iat"] {
        let mut c = claims();
        c.as_object_mut().unwrap().remove(claim);
        assert!(
            matches!(
                check(&key.sign(&c).unwrap()),
                Err(ProofError::MissingClaim(_))
            ),
            "{claim}"
        );
    }
    let mut c = claims();
    c["jti"] = json!("");
    assert_eq!(
        check(&key.sign(&c).unwrap()),
        Err(ProofError::MissingClaim("jti"))
    );
}

#[test]
fn step8_htm_must_match() {
    let mut c = claims();
    c["htm"] = json!("GET");
    assert_eq!(
        check(&ProofKey::es256().unwrap().sign(&c).unwrap()),
        Err(ProofError::WrongMethod)
    );
}

#[test]
fn step9_htu_must_match_after_normalisation() {
    let key = ProofKey::es256().unwrap();
    for same in [
        "https://auth.example/token",
        "HTTPS://Auth.Example:443/token",
        "https://auth.example/token?x=1#frag",
        "https://auth.example/%74oken",
        "https://auth.example/a/../token",
    ] {
        let mut c = claims();
        c["htu"] = json!(same);
        assert!(check(&key.sign(&c).unwrap()).is_ok(), "{same}");
    }
    for other in [
        "https://auth.example/introspect",
        "https://evil.example/token",
        "http://auth.example/token",
        "https://auth.example:8443/token",
        "https://auth.example/token/",
        "not a url",
    ] {
        let mut c = claims();
        c["htu"] = json!(other);
        assert_eq!(
            check(&key.sign(&c).unwrap()),
            Err(ProofError::WrongTarget),
            "{other}"
        );
    }
}

#[test]
fn step11_iat_window() {
    let key = ProofKey::es256().unwrap();
    for (iat, expected) in [
        (NOW - 600, Err(ProofError::TooOld)),
        (NOW + 600, Err(ProofError::FromTheFuture)),
        (NOW - 66, Err(ProofError::TooOld)),
        (NOW + 6, Err(ProofError::FromTheFuture)),
    ] {
        let mut c = claims();
        c["iat"] = json!(iat);
        assert_eq!(
            check(&key.sign(&c).unwrap()).map(|_| ()),
            expected,
            "iat offset {}",
            iat - NOW
        );
    }
    for ok in [NOW - 65, NOW + 5, NOW] {
        let mut c = claims();
        c["iat"] = json!(ok);
        assert!(
            check(&key.sign(&c).unwrap()).is_ok(),
            "iat offset {}",
            ok - NOW
        );
    }
}

#[test]
fn step12_ath_binds_the_access_token() {
    let key = ProofKey::es256().unwrap();
    let mut c = claims();
    assert_eq!(
        check_with(&key.sign(&c).unwrap(), Some("tok")),
        Err(ProofError::MissingClaim("ath"))
    );
    c["ath"] = json!(access_token_hash("other"));
    assert_eq!(
        check_with(&key.sign(&c).unwrap(), Some("tok")),
        Err(ProofError::WrongAccessTokenHash)
    );
    c["ath"] = json!(access_token_hash("tok"));
    assert!(check_with(&key.sign(&c).unwrap(), Some("tok")).is_ok());
}

#[test]
fn ed25519_is_accepted_as_the_fully_specified_name_of_eddsa() {
    let key = ProofKey::ed25519().unwrap();
    let proof = key
        .sign_with_header(&claims(), |h| h["alg"] = json!("Ed25519"))
        .unwrap();
    assert_eq!(check(&proof).unwrap().jkt, key.thumbprint());
    // ...but never for a key of another type.
    let ec = ProofKey::es256().unwrap();
    let proof = ec
        .sign_with_header(&claims(), |h| h["alg"] = json!("Ed25519"))
        .unwrap();
    assert!(matches!(check(&proof), Err(ProofError::Key(_))));
}

#[test]
fn crit_headers_are_refused() {
    let key = ProofKey::es256().unwrap();
    let proof = key
        .sign_with_header(&claims(), |h| {
            h["crit"] = json!(["exp"]);
        })
        .unwrap();
    assert_eq!(check(&proof), Err(ProofError::UnknownCritical));
}
