//! The authority's token-signing keys as the guard holds them, and offline verification of
//! JWT access tokens (RFC 9068) against them.
//!
//! Keys come from a JWKS file carried in the bundle, or from the authority's `/jwks`
//! fetched over TLS pinned to the site CA. A fetched set is written to
//! `<dataDir>/jwks.json` (the last known good copy): a guard restarted while the authority
//! is down starts from it, and a failed refresh keeps the keys it has. A token signed
//! under an unknown `kid` triggers one refetch (at most every `keys.minRefetch`), so a key
//! the authority starts using is followed without a restart.

use super::config::KeysSettings;
use crate::token::AccessTokenClaims;
use arc_swap::ArcSwap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use josekit::jws::JwsVerifier;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Why keys could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the JWKS is not usable: {0}")]
    Invalid(String),
    #[error("cannot fetch the JWKS from {url}: {message}")]
    Fetch { url: String, message: String },
}

/// Why an access token was refused (the text goes to the log and the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRejection {
    Malformed,
    WrongType,
    UnknownKey,
    BadSignature,
    WrongIssuer,
    Expired,
    NotYetValid,
    /// No keys at all yet (never fetched, no cached copy): fail closed.
    NoKeys,
}

impl TokenRejection {
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "token-malformed",
            Self::WrongType => "token-type",
            Self::UnknownKey => "token-unknown-key",
            Self::BadSignature => "token-signature",
            Self::WrongIssuer => "token-issuer",
            Self::Expired => "token-expired",
            Self::NotYetValid => "token-not-yet-valid",
            Self::NoKeys => "no-keys",
        }
    }
}

/// A set of ES256 verification keys by `kid`.
#[derive(Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<dyn JwsVerifier>>,
}

impl KeySet {
    /// Reads the ES256 signing keys of a JWKS (RFC 7517); other keys are skipped.
    pub fn from_jwks(bytes: &[u8]) -> Result<KeySet, KeysError> {
        let doc: Value =
            serde_json::from_slice(bytes).map_err(|e| KeysError::Invalid(e.to_string()))?;
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| KeysError::Invalid("no `keys` array".into()))?;
        let mut keys = HashMap::new();
        for key in list {
            let Some(map) = key.as_object() else { continue };
            let Some(kid) = map.get("kid").and_then(Value::as_str) else {
                continue;
            };
            let usable = map.get("kty").and_then(Value::as_str) == Some("EC")
                && map.get("crv").and_then(Value::as_str) == Some("P-256")
                && map
                    .get("alg")
                    .and_then(Value::as_str)
                    .map_or(true, |a| a == "ES256")
                && map
                    .get("use")
                    .and_then(Value::as_str)
                    .map_or(true, |u| u == "sig");
            if !usable {
                continue;
            }
            let mut public = serde_json::Map::new();
            for name in ["kty", "crv", "x", "y"] {
                if let Some(v) = map.get(name) {
                    public.insert(name.into(), v.clone());
                }
            }
            let jwk = josekit::jwk::Jwk::from_map(public)
                .map_err(|e| KeysError::Invalid(format!("key {kid}: {e}")))?;
            let verifier = josekit::jws::ES256
                .verifier_from_jwk(&jwk)
                .map_err(|e| KeysError::Invalid(format!("key {kid}: {e}")))?;
            keys.insert(kid.to_string(), Arc::new(verifier) as Arc<dyn JwsVerifier>);
        }
        if keys.is_empty() {
            return Err(KeysError::Invalid("no ES256 signing key with a kid".into()));
        }
        Ok(KeySet { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[derive(Deserialize)]
struct TokenHeader {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
}

/// The claims the guard reads from an access token.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifiedToken {
    #[serde(flatten)]
    pub claims: AccessTokenClaims,
    #[serde(default)]
    pub nbf: Option<i64>,
}

/// How many verified tokens are remembered (by SHA-256): a client calls a resource many
/// times with one token; the first call costs a signature verification.
const REMEMBERED: usize = 16_384;

/// The keys and where they come from.
pub struct AccessTokenKeys {
    settings: KeysSettings,
    cache_file: PathBuf,
    current: ArcSwap<KeySet>,
    last_fetch: Mutex<Option<Instant>>,
    remembered: RwLock<HashMap<[u8; 32], Arc<VerifiedToken>>>,
}

impl AccessTokenKeys {
    /// Loads the keys: the JWKS file, or a fetch from the authority, or else the last
    /// known good copy. With none of them the guard still starts, refusing every token
    /// (fail closed) until a refresh succeeds.
    pub async fn load(settings: &KeysSettings, data_dir: &Path) -> AccessTokenKeys {
        let keys = AccessTokenKeys {
            settings: settings.clone(),
            cache_file: data_dir.join("jwks.json"),
            current: ArcSwap::from_pointee(KeySet::default()),
            last_fetch: Mutex::new(None),
            remembered: RwLock::new(HashMap::new()),
        };
        if let Err(e) = keys.refresh().await {
            tracing::warn!(event = super::events::KEYS, error = %e, "could not load the authority's keys");
            if let Ok(bytes) = std::fs::read(&keys.cache_file) {
                match KeySet::from_jwks(&bytes) {
                    Ok(set) => {
                        tracing::warn!(
                            event = super::events::KEYS,
                            keys = set.len(),
                            source = "last-known-good",
                            "verifying tokens with the cached keys"
                        );
                        keys.current.store(Arc::new(set));
                    }
                    Err(e) => {
                        tracing::error!(event = super::events::KEYS, error = %e, "the cached JWKS is unusable")
                    }
                }
            }
        }
        keys
    }

    /// How many keys are held now (0: every token is refused).
    pub fn count(&self) -> usize {
        self.current.load().len()
    }

    /// Re-reads the file or refetches the URL; on failure the keys held stay.
    pub async fn refresh(&self) -> Result<usize, KeysError> {
        if let Ok(mut last) = self.last_fetch.lock() {
            *last = Some(Instant::now());
        }
        let bytes = match (&self.settings.jwks_file, &self.settings.jwks_url) {
            (Some(file), _) => std::fs::read(file).map_err(|source| KeysError::Read {
                path: file.clone(),
                source,
            })?,
            (None, Some(url)) => self.fetch(url).await?,
            (None, None) => return Err(KeysError::Invalid("no key source".into())),
        };
        let set = KeySet::from_jwks(&bytes)?;
        let count = set.len();
        if self.settings.jwks_url.is_some() {
            // The last known good copy, for a restart while the authority is unreachable.
            if let Err(e) = crate::token::write_private_file(&self.cache_file, &bytes) {
                tracing::warn!(event = super::events::KEYS, error = %e, "cannot write the JWKS cache");
            }
        }
        self.current.store(Arc::new(set));
        tracing::info!(
            event = super::events::KEYS,
            keys = count,
            "authority keys loaded"
        );
        Ok(count)
    }

    async fn fetch(&self, url: &str) -> Result<Vec<u8>, KeysError> {
        let fail = |message: String| KeysError::Fetch {
            url: url.to_string(),
            message,
        };
        let parsed = url::Url::parse(url).map_err(|e| fail(e.to_string()))?;
        let base = format!(
            "https://{}:{}",
            parsed.host_str().unwrap_or_default(),
            parsed.port_or_known_default().unwrap_or(443)
        );
        let ca = self
            .settings
            .ca_file
            .as_ref()
            .ok_or_else(|| fail("no keys.caFile".into()))?;
        let target = crate::client::https::TlsTarget::new(&base, ca, None)
            .map_err(|e| fail(e.to_string()))?;
        let request = async {
            let mut conn = target.connect().await.map_err(|e| fail(e.to_string()))?;
            conn.get(parsed.path())
                .await
                .map_err(|e| fail(e.to_string()))
        };
        let reply = tokio::time::timeout(std::time::Duration::from_secs(5), request)
            .await
            .map_err(|_| fail("timed out".into()))??;
        if reply.status != 200 {
            return Err(fail(format!("status {}", reply.status)));
        }
        Ok(reply.body.to_vec())
    }

    /// Whether a refetch for an unknown `kid` is allowed now (rate limit).
    fn may_refetch(&self) -> bool {
        self.settings.jwks_url.is_some()
            && self
                .last_fetch
                .lock()
                .is_ok_and(|last| last.map_or(true, |t| t.elapsed() >= self.settings.min_refetch))
    }

    /// Verifies an access token's signature, `typ`, `iss`, `exp`, `nbf` and `iat` (RFC 9068
    /// §4); the audience, scope and binding are the caller's (they depend on the route).
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        now: i64,
        skew: i64,
    ) -> Result<Arc<VerifiedToken>, TokenRejection> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let remembered = self
            .remembered
            .read()
            .ok()
            .and_then(|r| r.get(&digest).cloned());
        let verified = match remembered {
            Some(v) => v,
            None => {
                let verified = match self.verify_signature(token) {
                    // No keys yet (the authority was unreachable at start) or a kid not
                    // seen before: fetch again, at most every `keys.minRefetch`.
                    Err(TokenRejection::UnknownKey | TokenRejection::NoKeys)
                        if self.may_refetch() =>
                    {
                        let _ = self.refresh().await;
                        self.verify_signature(token)?
                    }
                    other => other?,
                };
                if verified.claims.iss != issuer {
                    return Err(TokenRejection::WrongIssuer);
                }
                let verified = Arc::new(verified);
                if let Ok(mut r) = self.remembered.write() {
                    if r.len() >= REMEMBERED {
                        r.clear();
                    }
                    r.insert(digest, verified.clone());
                }
                verified
            }
        };
        // Time is checked on every use, remembered or not.
        if verified.claims.exp <= now - skew {
            return Err(TokenRejection::Expired);
        }
        if verified.nbf.is_some_and(|nbf| nbf > now + skew) || verified.claims.iat > now + skew {
            return Err(TokenRejection::NotYetValid);
        }
        Ok(verified)
    }

    fn verify_signature(&self, token: &str) -> Result<VerifiedToken, TokenRejection> {
        let (signing_input, signature_b64) =
            token.rsplit_once('.').ok_or(TokenRejection::Malformed)?;
        let (header_b64, payload_b64) = signing_input
            .split_once('.')
            .ok_or(TokenRejection::Malformed)?;
        let header: TokenHeader = URL_SAFE_NO_PAD
            .decode(header_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenRejection::Malformed)?;
        // RFC 9068 §4: typ is at+jwt (or its media type); only ES256 is ever issued.
        if !matches!(
            header.typ.as_deref(),
            Some("at+jwt") | Some("application/at+jwt")
        ) {
            return Err(TokenRejection::WrongType);
        }
        if header.alg.as_deref() != Some("ES256") {
            return Err(TokenRejection::BadSignature);
        }
        let keys = self.current.load();
        if keys.is_empty() {
            return Err(TokenRejection::NoKeys);
        }
        let verifier = header
            .kid
            .as_deref()
            .and_then(|kid| keys.keys.get(kid))
            .ok_or(TokenRejection::UnknownKey)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature_b64)
            .map_err(|_| TokenRejection::Malformed)?;
        verifier
            .verify(signing_input.as_bytes(), &signature)
            .map_err(|_| TokenRejection::BadSignature)?;
        URL_SAFE_NO_PAD
            .decode(payload_b64)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or(TokenRejection::Malformed)
    }
}
