//! DPoP proof validation (RFC 9449 §4.3) as a pure function of the proof, the request's
//! method and URL, the current time and the settings.
//!
//! The checks are numbered after RFC 9449 §4.3 so a reader can hold the code against the
//! RFC. What needs shared state is left to the caller, which owns the store: the server
//! nonce (step 9) and the atomic jti claim (step 12) are checked by `server` *after* this
//! function accepts the proof, so a proof that fails here never consumes a jti.
//!
//! This module does not know HTTP types; the caller passes the raw `DPoP` header values.

pub mod jwk;
pub mod nonce;

use crate::config::DpopSettings;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jws::JwsVerifier;
use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// The longest `DPoP` header accepted (an RSA-8192 key fits comfortably).
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// Why a proof was refused. Every variant is `invalid_dpop_proof` on the wire; the text
/// becomes the `error_description`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("exactly one DPoP header is allowed")]
    NotExactlyOneHeader,
    #[error("the DPoP proof is not a well-formed JWS: {0}")]
    Malformed(&'static str),
    #[error("the DPoP proof typ must be dpop+jwt")]
    WrongType,
    #[error("the DPoP proof alg is not one this authority accepts")]
    AlgorithmNotAllowed,
    #[error("the DPoP proof header has a crit member this authority does not understand")]
    UnknownCritical,
    #[error("{0}")]
    Key(#[from] jwk::KeyError),
    #[error("the DPoP proof signature does not verify with its jwk")]
    BadSignature,
    #[error("the DPoP proof lacks the {0} claim")]
    MissingClaim(&'static str),
    #[error("the DPoP proof htm does not match the request method")]
    WrongMethod,
    #[error("the DPoP proof htu does not match the endpoint URL")]
    WrongTarget,
    #[error("the DPoP proof iat is too old")]
    TooOld,
    #[error("the DPoP proof iat is in the future")]
    FromTheFuture,
    #[error("the DPoP proof ath does not match the access token")]
    WrongAccessTokenHash,
}

/// Signature algorithms a DPoP proof may use. `none` and MACs are not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProofAlgorithm {
    ES256,
    ES384,
    EdDSA,
    PS256,
    RS256,
}
impl ProofAlgorithm {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            // RFC 9864's fully-specified name for EdDSA over Ed25519, the only EdDSA curve
            // accepted; current clients (e.g. oauth4webapi 3) label their proofs with it.
            "Ed25519" => Self::EdDSA,
            "PS256" => Self::PS256,
            "RS256" => Self::RS256,
            _ => return None,
        })
    }
    /// The names this algorithm is advertised under (`dpop_signing_alg_values_supported`).
    pub fn advertised_names(self) -> &'static [&'static str] {
        match self {
            Self::EdDSA => &["EdDSA", "Ed25519"],
            Self::ES256 => &["ES256"],
            Self::ES384 => &["ES384"],
            Self::PS256 => &["PS256"],
            Self::RS256 => &["RS256"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::PS256 => "PS256",
            Self::RS256 => "RS256",
        }
    }
}

/// What the request claims to be, for comparing against the proof.
pub struct RequestFacts<'a> {
    /// HTTP method, e.g. `POST`.
    pub method: &'a str,
    /// The endpoint this request was addressed to.
    pub target: &'a EndpointUrl,
    /// Unix seconds.
    pub now: i64,
    /// The access token presented with the proof, when there is one (resource requests).
    pub access_token: Option<&'a str>,
}

/// A proof that passed every stateless check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedProof {
    /// RFC 7638 thumbprint of the proof key, the token's `cnf.jkt`.
    pub jkt: String,
    pub jti: String,
    pub iat: i64,
    pub nonce: Option<String>,
}

#[derive(Deserialize)]
struct ProofHeader {
    typ: Option<String>,
    alg: Option<String>,
    jwk: Option<Map<String, Value>>,
    crit: Option<Value>,
}

#[derive(Deserialize)]
struct ProofClaims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<serde_json::Number>,
    ath: Option<String>,
    nonce: Option<String>,
}

/// An endpoint URL reduced to what RFC 3986 §6.2.2/§6.2.3 normalisation says is
/// significant: lower-case scheme and host, explicit port, path with percent-encoded
/// unreserved characters decoded and dot segments removed. Query and fragment are dropped.
///
/// Equality compares the normalised parts only. The text it was parsed from is kept so a
/// proof whose `htu` is exactly that text (what every client sends) is matched without
/// parsing it again: parsing is deterministic, so equal text means an equal URL.
#[derive(Debug, Clone)]
pub struct EndpointUrl {
    scheme: String,
    host: String,
    port: u16,
    path: String,
    text: String,
}

impl PartialEq for EndpointUrl {
    fn eq(&self, other: &Self) -> bool {
        self.scheme == other.scheme
            && self.host == other.host
            && self.port == other.port
            && self.path == other.path
    }
}

impl Eq for EndpointUrl {}

impl EndpointUrl {
    pub fn parse(text: &str) -> Option<EndpointUrl> {
        let url = url::Url::parse(text).ok()?;
        if url.cannot_be_a_base() || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        Some(EndpointUrl {
            scheme: url.scheme().to_string(),
            host: url.host_str()?.to_ascii_lowercase(),
            port: url.port_or_known_default()?,
            path: decode_unreserved(url.path()),
            text: text.to_string(),
        })
    }

    /// Whether `htu` names this endpoint (RFC 9449 §4.3 (9), after normalisation).
    fn matches(&self, htu: &str) -> bool {
        htu == self.text || EndpointUrl::parse(htu).as_ref() == Some(self)
    }
}

/// Decodes percent-encoded unreserved characters (RFC 3986 §2.3), which are equivalent to
/// their literal form; normalises the hex case of the remaining escapes.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = path.get(i + 1..i + 3).unwrap_or("");
            let is_escape = hex.len() == 2 && hex.bytes().all(|b| b.is_ascii_hexdigit());
            if let (true, Ok(value)) = (is_escape, u8::from_str_radix(hex, 16)) {
                if value.is_ascii_alphanumeric() || matches!(value, b'-' | b'.' | b'_' | b'~') {
                    out.push(value as char);
                } else {
                    out.push('%');
                    out.push_str(&hex.to_ascii_uppercase());
                }
                i += 3;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// Proof headers already judged, found by the SHA-256 of their exact base64url text.
///
/// A client signs every proof with the same key under the same header, so after its first
/// proof, decoding and parsing the header, checking its `typ`, `crit` and `jwk` (§4.3 (4),
/// (7)), building the key (an EC point validation costs about as much as a signature
/// verification) and computing its RFC 7638 thumbprint is one lookup. The entry is keyed by
/// the header's exact bytes, so it holds the decision those bytes got and would get again;
/// the one input that can change, the configured algorithm list (§4.3 (5)), is checked
/// on every proof. A header is cached only after a proof under it passed every check of
/// [`validate_proof`] (signature included), so made-up headers never take a place, and
/// dropping the cache changes no decision. The signature is verified on every proof.
///
/// The cache is bounded in bytes ([`KEY_CACHE_BUDGET`]) and evicts one entry at a time by
/// the CLOCK rule (second chance): an entry used since the hand last passed survives one
/// more round, so the keys of active clients stay while a flood of one-shot keys cycles
/// through the rest.
#[derive(Default)]
pub struct KeyCache {
    inner: RwLock<KeyCacheInner>,
}

#[derive(Default)]
struct KeyCacheInner {
    entries: HashMap<[u8; 32], CachedHeader>,
    /// Insertion order; the CLOCK hand is the front.
    order: std::collections::VecDeque<[u8; 32]>,
    bytes: usize,
}

struct CachedHeader {
    judged: JudgedHeader,
    cost: usize,
    /// Set on every hit (under the read lock), cleared when the hand passes.
    referenced: std::sync::atomic::AtomicBool,
}

#[derive(Clone)]
struct JudgedHeader {
    alg: ProofAlgorithm,
    verifier: ProofVerifier,
    jkt: Arc<str>,
}

/// The parsed key of a judged header. ES256, what nearly every client sends, is verified
/// with the key prepared once (`es256`: no per-call OpenSSL context, the cost the
/// benchmark's bare floor measures); the other algorithms go through josekit.
#[derive(Clone)]
enum ProofVerifier {
    Es256(Arc<crate::es256::Es256PublicKey>),
    Jose(Arc<dyn JwsVerifier>),
}

impl ProofVerifier {
    fn verify(&self, signing_input: &[u8], signature: &[u8]) -> bool {
        match self {
            ProofVerifier::Es256(key) => key.verify(signing_input, signature),
            ProofVerifier::Jose(verifier) => verifier.verify(signing_input, signature).is_ok(),
        }
    }
}

/// The most memory the judged headers may take (estimated per entry from the header's
/// size plus the parsed key): 8 MiB is ~20,000 EC keys or ~4,000 RSA-4096 keys.
pub const KEY_CACHE_BUDGET: usize = 8 * 1024 * 1024;

/// What one cached header costs: its digest and thumbprint, the map and queue slots, and
/// the parsed key, which is about as large as the key's base64url text in the header.
fn entry_cost(header_b64_len: usize) -> usize {
    const FIXED: usize = 32 + 43 + 160 + 256;
    FIXED + header_b64_len * 2
}

impl KeyCache {
    fn get(&self, header_digest: &[u8; 32]) -> Option<JudgedHeader> {
        let inner = self.inner.read().ok()?;
        let entry = inner.entries.get(header_digest)?;
        entry
            .referenced
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Some(entry.judged.clone())
    }

    fn insert(&self, header_digest: [u8; 32], judged: JudgedHeader, header_b64_len: usize) {
        let cost = entry_cost(header_b64_len);
        if cost > KEY_CACHE_BUDGET {
            return;
        }
        let Ok(mut inner) = self.inner.write() else {
            return;
        };
        if inner.entries.contains_key(&header_digest) {
            return;
        }
        while inner.bytes + cost > KEY_CACHE_BUDGET {
            let Some(candidate) = inner.order.pop_front() else {
                break;
            };
            let second_chance = inner.entries.get(&candidate).is_some_and(|e| {
                e.referenced
                    .swap(false, std::sync::atomic::Ordering::Relaxed)
            });
            if second_chance {
                inner.order.push_back(candidate);
            } else if let Some(evicted) = inner.entries.remove(&candidate) {
                inner.bytes -= evicted.cost;
            }
        }
        inner.entries.insert(
            header_digest,
            CachedHeader {
                judged,
                cost,
                referenced: std::sync::atomic::AtomicBool::new(false),
            },
        );
        inner.order.push_back(header_digest);
        inner.bytes += cost;
    }

    /// How many headers are cached and the bytes they are estimated to take.
    pub fn usage(&self) -> (usize, usize) {
        self.inner
            .read()
            .map(|i| (i.entries.len(), i.bytes))
            .unwrap_or_default()
    }
}

/// A proof header: judged on an earlier proof, or decoded from this one.
enum Header {
    Judged(JudgedHeader),
    Parsed(ProofHeader),
}

/// The header checks of §4.3 (4), (5), (7) on a decoded header, and the key they accept.
fn judge_header(header: ProofHeader, settings: &DpopSettings) -> Result<JudgedHeader, ProofError> {
    // §4.3 (4): typ is dpop+jwt.
    if header.typ.as_deref() != Some("dpop+jwt") {
        return Err(ProofError::WrongType);
    }
    // §4.3 (5): alg is an asymmetric algorithm the server accepts (never none or a MAC:
    // they are not representable in `ProofAlgorithm`).
    let alg = header
        .alg
        .as_deref()
        .and_then(ProofAlgorithm::parse)
        .filter(|a| settings.allowed_algorithms.contains(a))
        .ok_or(ProofError::AlgorithmNotAllowed)?;
    // RFC 7515 §4.1.11: extensions we do not understand must make the JWS invalid.
    if header.crit.is_some() {
        return Err(ProofError::UnknownCritical);
    }
    // §4.3 (7): jwk is a public key (no private member), of the type alg names.
    let jwk = header.jwk.ok_or(ProofError::MissingClaim("jwk"))?;
    let canonical = jwk::check_public_key(&jwk, alg)?;
    Ok(JudgedHeader {
        alg,
        verifier: build_verifier(alg, &jwk)?,
        jkt: Arc::from(jwk::thumbprint_of_canonical(&canonical)),
    })
}

fn build_verifier(
    alg: ProofAlgorithm,
    jwk: &Map<String, Value>,
) -> Result<ProofVerifier, ProofError> {
    use josekit::jws;
    if alg == ProofAlgorithm::ES256 {
        // `jwk::check_public_key` has checked the members' shape; the curve check is here.
        let coordinate = |name: &str| {
            jwk.get(name)
                .and_then(Value::as_str)
                .and_then(|v| URL_SAFE_NO_PAD.decode(v).ok())
                .ok_or(ProofError::BadSignature)
        };
        let key =
            crate::es256::Es256PublicKey::from_coordinates(&coordinate("x")?, &coordinate("y")?)
                .map_err(|_| ProofError::BadSignature)?;
        return Ok(ProofVerifier::Es256(Arc::new(key)));
    }
    // Only the members that define the key go to the parser: `use`, `key_ops` or `alg`
    // members were not part of the decision and must not make a valid key fail later.
    let mut public = Map::new();
    for name in ["kty", "crv", "x", "y", "n", "e"] {
        if let Some(v) = jwk.get(name) {
            public.insert(name.to_string(), v.clone());
        }
    }
    let jwk = josekit::jwk::Jwk::from_map(public).map_err(|_| ProofError::BadSignature)?;
    let bad = |_| ProofError::BadSignature;
    let verifier: Arc<dyn JwsVerifier> = match alg {
        ProofAlgorithm::ES384 => Arc::new(jws::ES384.verifier_from_jwk(&jwk).map_err(bad)?),
        ProofAlgorithm::EdDSA => Arc::new(jws::EdDSA.verifier_from_jwk(&jwk).map_err(bad)?),
        ProofAlgorithm::PS256 => Arc::new(jws::PS256.verifier_from_jwk(&jwk).map_err(bad)?),
        ProofAlgorithm::RS256 => Arc::new(jws::RS256.verifier_from_jwk(&jwk).map_err(bad)?),
        // Handled above; kept so that the match names every algorithm.
        ProofAlgorithm::ES256 => Arc::new(jws::ES256.verifier_from_jwk(&jwk).map_err(bad)?),
    };
    Ok(ProofVerifier::Jose(verifier))
}

/// base64url(SHA-256(access token)), the `ath` claim (RFC 9449 §4.2).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// Runs the stateless checks of RFC 9449 §4.3 on the `DPoP` header values of one request.
pub fn validate_proof(
    header_values: &[&[u8]],
    request: &RequestFacts<'_>,
    settings: &DpopSettings,
    keys: &KeyCache,
) -> Result<ValidatedProof, ProofError> {
    // §4.3 (1): exactly one DPoP HTTP request header field.
    let [proof] = header_values else {
        return Err(ProofError::NotExactlyOneHeader);
    };
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::Malformed("too long"));
    }
    let proof = std::str::from_utf8(proof).map_err(|_| ProofError::Malformed("not ASCII"))?;

    // §4.3 (2): the value is a single well-formed JWT (compact JWS, three parts).
    let mut parts = proof.split('.');
    let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ProofError::Malformed("expected three dot-separated parts"));
    };
    // A header seen before was judged then (see `KeyCache`): it is not decoded again.
    let header_digest: [u8; 32] = Sha256::digest(header_b64.as_bytes()).into();
    let cached = keys.get(&header_digest);
    let header_json = match cached {
        Some(_) => None,
        None => Some(
            URL_SAFE_NO_PAD
                .decode(header_b64)
                .map_err(|_| ProofError::Malformed("header is not base64url"))?,
        ),
    };
    let claims_json = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| ProofError::Malformed("payload is not base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature_b64)
        .map_err(|_| ProofError::Malformed("signature is not base64url"))?;
    let header = match (cached, header_json) {
        (Some(judged), _) => Header::Judged(judged),
        (None, json) => Header::Parsed(
            serde_json::from_slice(json.as_deref().unwrap_or_default())
                .map_err(|_| ProofError::Malformed("header is not a JSON object"))?,
        ),
    };
    let claims: ProofClaims = serde_json::from_slice(&claims_json)
        .map_err(|_| ProofError::Malformed("payload is not a JSON object"))?;

    // §4.3 (4), (5), (7): typ, alg, crit and jwk, judged now or when this header was first
    // seen; the algorithm list is the current one either way.
    let (judged, newly_judged) = match header {
        Header::Judged(judged) => {
            if !settings.allowed_algorithms.contains(&judged.alg) {
                return Err(ProofError::AlgorithmNotAllowed);
            }
            (judged, false)
        }
        Header::Parsed(header) => (judge_header(header, settings)?, true),
    };
    let JudgedHeader { verifier, jkt, .. } = &judged;

    // §4.3 (6): the signature verifies with the key in jwk.
    let signing_input_len = header_b64.len() + 1 + claims_b64.len();
    if !verifier.verify(&proof.as_bytes()[..signing_input_len], &signature) {
        return Err(ProofError::BadSignature);
    }

    // §4.3 (3): all required claims are present.
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(ProofError::MissingClaim("jti"))?;
    let htm = claims.htm.ok_or(ProofError::MissingClaim("htm"))?;
    let htu = claims.htu.ok_or(ProofError::MissingClaim("htu"))?;
    let iat = claims
        .iat
        .and_then(|n| {
            n.as_i64().or_else(|| {
                n.as_f64()
                    .filter(|f| f.is_finite())
                    .map(|f| f.floor() as i64)
            })
        })
        .ok_or(ProofError::MissingClaim("iat"))?;

    // §4.3 (8): htm matches the method of the request.
    if htm != request.method {
        return Err(ProofError::WrongMethod);
    }
    // §4.3 (9): htu matches the target URI, ignoring query and fragment, after normalisation.
    if !request.target.matches(&htu) {
        return Err(ProofError::WrongTarget);
    }
    // §4.3 (11): iat within the acceptable window (lifetime + skew back, skew forward).
    let skew = settings.clock_skew.as_secs() as i64;
    let lifetime = settings.proof_lifetime.as_secs() as i64;
    if iat > request.now.saturating_add(skew) {
        return Err(ProofError::FromTheFuture);
    }
    if request.now.saturating_sub(iat) > lifetime + skew {
        return Err(ProofError::TooOld);
    }
    // §4.3 (12)(a): with an access token, ath is its hash. (Key binding to the token's
    // cnf is the caller's check: it owns the token.)
    if let Some(token) = request.access_token {
        match claims.ath {
            Some(ath) if ath == access_token_hash(token) => {}
            Some(_) => return Err(ProofError::WrongAccessTokenHash),
            None => return Err(ProofError::MissingClaim("ath")),
        }
    }

    // Every check passed: the header is worth remembering (see `KeyCache`).
    if newly_judged {
        keys.insert(header_digest, judged.clone(), header_b64.len());
    }
    Ok(ValidatedProof {
        jkt: jkt.to_string(),
        jti,
        iat,
        nonce: claims.nonce,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fast_path_tests {
    use super::*;

    /// The exact-text shortcut gives the same answers as normalising and comparing.
    #[test]
    fn htu_matching_is_normalising_equality() {
        let target = EndpointUrl::parse("https://Auth.Example:443/token").unwrap();
        for (htu, expected) in [
            ("https://Auth.Example:443/token", true),
            ("https://auth.example/token", true),
            ("https://auth.example/%74oken?x=1#f", true),
            ("https://auth.example/token/", false),
            ("https://auth.example:8443/token", false),
            ("http://auth.example/token", false),
            ("https://evil.example/token", false),
            ("not a url", false),
        ] {
            assert_eq!(target.matches(htu), expected, "{htu}");
            assert_eq!(
                EndpointUrl::parse(htu).as_ref() == Some(&target),
                expected,
                "{htu}"
            );
        }
    }

    fn settings(algs: Vec<ProofAlgorithm>) -> DpopSettings {
        DpopSettings {
            enabled: true,
            allowed_algorithms: algs,
            algs_header: String::new(),
            proof_lifetime: std::time::Duration::from_secs(60),
            clock_skew: std::time::Duration::from_secs(5),
            replay_window: std::time::Duration::from_secs(120),
            nonce_required: false,
            nonce_ttl: std::time::Duration::from_secs(300),
            bypass_allowed: false,
            bypass: None,
        }
    }

    fn proof(key: &crate::client::ProofKey, jti: &str) -> String {
        key.sign(&serde_json::json!({
            "jti": jti, "htm": "POST", "htu": "https://auth.example/token", "iat": 1_800_000_000
        }))
        .unwrap()
    }

    fn check(
        proof: &str,
        keys: &KeyCache,
        algs: Vec<ProofAlgorithm>,
    ) -> Result<String, ProofError> {
        let target = EndpointUrl::parse("https://auth.example/token").unwrap();
        let facts = RequestFacts {
            method: "POST",
            target: &target,
            now: 1_800_000_000,
            access_token: None,
        };
        validate_proof(&[proof.as_bytes()], &facts, &settings(algs), keys).map(|p| p.jkt)
    }

    /// With the header already judged, the signature is still verified on every proof and
    /// the configured algorithms still apply.
    #[test]
    fn a_cached_header_still_needs_a_valid_signature_and_an_allowed_alg() {
        let keys = KeyCache::default();
        let es256 = vec![ProofAlgorithm::ES256];
        let a = crate::client::ProofKey::es256().unwrap();
        let b = crate::client::ProofKey::es256().unwrap();
        assert_eq!(
            check(&proof(&a, "1"), &keys, es256.clone()).unwrap(),
            a.thumbprint()
        );
        assert_eq!(
            check(&proof(&a, "2"), &keys, es256.clone()).unwrap(),
            a.thumbprint()
        );
        assert_eq!(keys.usage().0, 1, "one header, judged once");

        // A's (cached) header over B's claims and signature: B signed other bytes.
        let pa = proof(&a, "3");
        let pb = proof(&b, "3");
        let (pa, pb): (Vec<&str>, Vec<&str>) = (pa.split('.').collect(), pb.split('.').collect());
        let spliced = format!("{}.{}.{}", pa[0], pb[1], pb[2]);
        assert_eq!(
            check(&spliced, &keys, es256.clone()),
            Err(ProofError::BadSignature)
        );
        // A's header and claims with a signature over other claims.
        let other = proof(&a, "4");
        let other_sig = other.rsplit('.').next().unwrap();
        let resigned = format!("{}.{}.{}", pa[0], pa[1], other_sig);
        assert_eq!(
            check(&resigned, &keys, es256),
            Err(ProofError::BadSignature)
        );
        // The operator removes ES256: the cached header is refused too.
        assert_eq!(
            check(&proof(&a, "5"), &keys, vec![ProofAlgorithm::EdDSA]),
            Err(ProofError::AlgorithmNotAllowed)
        );
    }

    /// A refused header is never cached: the same bytes are refused again.
    #[test]
    fn refused_headers_are_not_cached() {
        let keys = KeyCache::default();
        let a = crate::client::ProofKey::es256().unwrap();
        let p = proof(&a, "1");
        assert_eq!(
            check(&p, &keys, vec![ProofAlgorithm::EdDSA]),
            Err(ProofError::AlgorithmNotAllowed)
        );
        assert_eq!(keys.usage().0, 0);
        assert_eq!(
            check(&p, &keys, vec![ProofAlgorithm::ES256]).unwrap(),
            a.thumbprint()
        );
    }

    /// A header whose first proof carries a bad signature is not cached: a made-up header
    /// never takes a place, and the decision for the next proof is made from scratch.
    #[test]
    fn a_header_is_cached_only_after_its_signature_verified() {
        let keys = KeyCache::default();
        let es256 = vec![ProofAlgorithm::ES256];
        let a = crate::client::ProofKey::es256().unwrap();
        let good = proof(&a, "1");
        let parts: Vec<&str> = good.split('.').collect();
        let other = proof(&a, "2");
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            parts[1],
            other.rsplit('.').next().unwrap()
        );
        assert_eq!(
            check(&forged, &keys, es256.clone()),
            Err(ProofError::BadSignature)
        );
        assert_eq!(keys.usage().0, 0, "nothing cached for a forged proof");
        assert_eq!(check(&good, &keys, es256).unwrap(), a.thumbprint());
        assert_eq!(keys.usage().0, 1);
    }

    /// The cache stays within its byte budget under a flood of distinct keys, evicting one
    /// entry at a time, and a key in use keeps its place (second chance).
    #[test]
    fn the_key_cache_is_bounded_in_bytes_and_keeps_hot_keys() {
        let keys = KeyCache::default();
        let judged = |jkt: &str| JudgedHeader {
            alg: ProofAlgorithm::ES256,
            verifier: build_verifier(
                ProofAlgorithm::ES256,
                crate::client::ProofKey::es256()
                    .unwrap()
                    .public_jwk()
                    .as_object()
                    .unwrap(),
            )
            .unwrap(),
            jkt: Arc::from(jkt),
        };
        let template = judged("hot");
        let digest = |i: u32| -> [u8; 32] { Sha256::digest(i.to_be_bytes()).into() };
        keys.insert(digest(0), template.clone(), 300);
        let per_entry = entry_cost(300);
        let capacity = KEY_CACHE_BUDGET / per_entry;
        for i in 1..(capacity as u32 * 3) {
            // Client 0 keeps sending proofs while the flood goes on.
            assert!(
                keys.get(&digest(0)).is_some(),
                "hot key evicted after {i} inserts"
            );
            keys.insert(digest(i), template.clone(), 300);
            let (count, bytes) = keys.usage();
            assert!(bytes <= KEY_CACHE_BUDGET, "{bytes} bytes over budget");
            assert!(
                count >= capacity.min(i as usize) - 1,
                "evicted more than needed: {count}"
            );
        }
        assert_eq!(keys.usage().0, capacity);
    }
}
