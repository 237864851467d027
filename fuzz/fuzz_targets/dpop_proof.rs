//! RFC 9449 §4.3 proof validation (`sealkit::dpop::validate_proof`). Mode 0: the input is
//! the `DPoP` header value. Mode 1: the input is `header JSON 0xff claims JSON`, signed with
//! a fixed ES256 key so the checks after the signature are reached (the seeds carry that
//! key's JWK in the header).
#![no_main]
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use sealkit::dpop::{validate_proof, EndpointUrl, KeyCache, RequestFacts};
use std::sync::OnceLock;

fn target() -> &'static EndpointUrl {
    static URL: OnceLock<EndpointUrl> = OnceLock::new();
    URL.get_or_init(|| EndpointUrl::parse("https://127.0.0.1:8443/token").expect("url"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let proof = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        let (header, claims) = sealkit_fuzz::split(rest);
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims)
        );
        let Ok(signature) = sealkit_fuzz::dpop_key().signer.sign(input.as_bytes()) else {
            return;
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)).into_bytes()
    };
    let settings = &sealkit_fuzz::site().settings.dpop;
    let keys = KeyCache::default();
    let facts = RequestFacts {
        method: "POST",
        target: target(),
        now: 1_800_000_000,
        access_token: (mode & 2 != 0).then_some("an-access-token"),
    };
    let _ = validate_proof(&[&proof], &facts, settings, &keys);
    // The same proof twice through one cache (a cached header must judge alike).
    let again = validate_proof(&[&proof], &facts, settings, &keys);
    let fresh = validate_proof(&[&proof], &facts, settings, &KeyCache::default());
    assert_eq!(again.is_ok(), fresh.is_ok(), "the key cache changed a decision");
});
