//! Authorization codes (RFC 6749 §4.1) with PKCE (RFC 7636, `S256` only) and the
//! `dpop_jkt` binding (RFC 9449 §10): the authorization requests waiting for a person to
//! sign in and consent, and the one-time, short-lived codes they end with.
//!
//! Both are kept in this process's memory, codes by their SHA-256; a code is taken out of
//! the table by its first exchange, so a second one finds nothing.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

const MAX_ENTRIES: usize = 10_000;

/// A validated authorization request, waiting for sign-in and consent.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub state: Option<String>,
    pub scope: Option<String>,
    pub code_challenge: String,
    pub dpop_jkt: Option<String>,
    pub expires_at: i64,
}

/// What a code was issued for.
#[derive(Debug, Clone)]
pub struct CodeGrant {
    pub client_id: String,
    pub redirect_uri: String,
    pub code_challenge: String,
    pub dpop_jkt: Option<String>,
    pub user: String,
    pub scope: String,
    pub expires_at: i64,
}

/// Why a code exchange is refused (`invalid_grant` with this description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeError {
    Unknown,
    OtherClient,
    RedirectMismatch,
    Expired,
    VerifierMismatch,
}
impl CodeError {
    pub fn description(self) -> &'static str {
        match self {
            CodeError::Unknown => "unknown or already used authorization code",
            CodeError::OtherClient => "this code was issued to another client",
            CodeError::RedirectMismatch => "redirect_uri differs from the authorization request",
            CodeError::Expired => "the authorization code expired",
            CodeError::VerifierMismatch => "code_verifier does not match code_challenge (S256)",
        }
    }
}

#[derive(Default)]
pub struct Codes {
    requests: Mutex<HashMap<String, AuthorizationRequest>>,
    codes: Mutex<HashMap<[u8; 32], CodeGrant>>,
}

fn hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

/// RFC 7636 §4.2 `S256`: BASE64URL(SHA256(ASCII(code_verifier))).
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 §4.1: 43–128 characters of `A-Z a-z 0-9 - . _ ~`.
pub fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

impl Codes {
    /// Files a request; returns its id (carried by the pages' forms).
    pub fn file_request(&self, request: AuthorizationRequest, now: i64) -> Option<String> {
        let mut table = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= MAX_ENTRIES {
            table.retain(|_, r| r.expires_at > now);
            if table.len() >= MAX_ENTRIES {
                return None;
            }
        }
        let id = super::random_secret();
        table.insert(id.clone(), request);
        Some(id)
    }

    pub fn request(&self, id: &str, now: i64) -> Option<AuthorizationRequest> {
        let table = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        table.get(id).filter(|r| r.expires_at > now).cloned()
    }

    /// Ends a request (decided); returns it if it was live.
    pub fn take_request(&self, id: &str, now: i64) -> Option<AuthorizationRequest> {
        let mut table = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        table.remove(id).filter(|r| r.expires_at > now)
    }

    /// Issues a code; `None` when the table is full.
    pub fn issue(&self, grant: CodeGrant, now: i64) -> Option<String> {
        let mut table = self.codes.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= MAX_ENTRIES {
            table.retain(|_, c| c.expires_at > now);
            if table.len() >= MAX_ENTRIES {
                return None;
            }
        }
        let code = super::random_secret();
        table.insert(hash(&code), grant);
        Some(code)
    }

    /// Exchanges a code (once): checks client, redirect URI, expiry and PKCE.
    pub fn exchange(
        &self,
        code: &str,
        client_id: &str,
        redirect_uri: Option<&str>,
        verifier: &str,
        now: i64,
    ) -> Result<CodeGrant, CodeError> {
        let grant = self
            .codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&hash(code))
            .ok_or(CodeError::Unknown)?;
        if grant.client_id != client_id {
            return Err(CodeError::OtherClient);
        }
        if redirect_uri != Some(grant.redirect_uri.as_str()) {
            return Err(CodeError::RedirectMismatch);
        }
        if grant.expires_at <= now {
            return Err(CodeError::Expired);
        }
        let expected = s256(verifier);
        if !valid_verifier(verifier)
            || !bool::from(subtle::ConstantTimeEq::ct_eq(
                expected.as_bytes(),
                grant.code_challenge.as_bytes(),
            ))
        {
            return Err(CodeError::VerifierMismatch);
        }
        Ok(grant)
    }

    /// Drops expired requests and codes.
    pub fn sweep(&self, now: i64) {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, r| r.expires_at > now);
        self.codes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| c.expires_at > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 Appendix B.
    #[test]
    fn s256_vector() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    fn grant(now: i64) -> CodeGrant {
        CodeGrant {
            client_id: "web".into(),
            redirect_uri: "http://127.0.0.1:9/cb".into(),
            code_challenge: s256(&"v".repeat(43)),
            dpop_jkt: None,
            user: "ann".into(),
            scope: "read".into(),
            expires_at: now + 60,
        }
    }

    #[test]
    fn a_code_is_exchanged_once_with_its_verifier() {
        let codes = Codes::default();
        let verifier = "v".repeat(43);
        let code = codes.issue(grant(100), 100).unwrap();
        let wrong = codes.issue(grant(100), 100).unwrap();
        assert_eq!(
            codes
                .exchange(
                    &wrong,
                    "web",
                    Some("http://127.0.0.1:9/cb"),
                    &"w".repeat(43),
                    110
                )
                .unwrap_err(),
            CodeError::VerifierMismatch
        );
        assert!(codes
            .exchange(&code, "web", Some("http://127.0.0.1:9/cb"), &verifier, 110)
            .is_ok());
        assert_eq!(
            codes
                .exchange(&code, "web", Some("http://127.0.0.1:9/cb"), &verifier, 110)
                .unwrap_err(),
            CodeError::Unknown
        );
        let late = codes.issue(grant(100), 100).unwrap();
        assert_eq!(
            codes
                .exchange(&late, "web", Some("http://127.0.0.1:9/cb"), &verifier, 161)
                .unwrap_err(),
            CodeError::Expired
        );
        let other = codes.issue(grant(100), 100).unwrap();
        assert_eq!(
            codes
                .exchange(
                    &other,
                    "web",
                    Some("http://127.0.0.1:9/other"),
                    &verifier,
                    110
                )
                .unwrap_err(),
            CodeError::RedirectMismatch
        );
    }
}
