//! argon2id password hashes (PHC strings): making one (`sealkit user hash`), checking one
//! found in a users file, and verifying a password against one.
//!
//! Verification reads the cost parameters from the hash itself, so a hash made with other
//! parameters verifies as it was made. It is deliberately slow (tens of milliseconds of a
//! core), so [`Verifier`] runs it on the blocking pool behind a semaphore of a few permits:
//! a flood of sign-ins waits its turn instead of starving the async runtime.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Memory cost in KiB of the hashes `sealkit user hash` makes (OWASP's argon2id
/// recommendation: 19 MiB, 2 passes, 1 lane).
pub const STANDARD_MEMORY_KIB: u32 = 19 * 1024;
pub const STANDARD_PASSES: u32 = 2;
/// Below this memory cost a hash in a users file is refused as too weak.
pub const MINIMUM_MEMORY_KIB: u32 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot hash the password: {0}")]
    Hash(String),
    #[error("the password verifier is gone (shutting down)")]
    Closed,
}

/// Hashes `password` with argon2id, `memory_kib` and `passes` (use the `STANDARD_`
/// values; tests use cheaper ones).
pub fn hash_password(
    password: &str,
    memory_kib: u32,
    passes: u32,
) -> Result<String, PasswordError> {
    let params =
        Params::new(memory_kib, passes, 1, None).map_err(|e| PasswordError::Hash(e.to_string()))?;
    let mut salt = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `phc` is an argon2id hash this authority accepts; the reason if not.
pub fn check_phc(phc: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(phc)
        .map_err(|_| "not a PHC string (make one with `sealkit user hash`)".to_string())?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(format!(
            "algorithm `{}`: only argon2id is accepted",
            parsed.algorithm
        ));
    }
    let params = Params::try_from(&parsed).map_err(|e| format!("bad argon2 parameters: {e}"))?;
    if params.m_cost() < MINIMUM_MEMORY_KIB {
        return Err(format!(
            "memory cost {} KiB is too weak (at least {MINIMUM_MEMORY_KIB} KiB)",
            params.m_cost()
        ));
    }
    if parsed.hash.is_none() {
        return Err("the hash has no output".into());
    }
    Ok(())
}

/// Verifies `password` against `phc` (constant-time comparison inside argon2). A hash
/// that does not parse never verifies.
pub fn verify_password(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash with the standard parameters of a password nobody has, verified for unknown
/// users so that the answer takes as long as for a known one.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        hash_password("sealkit-decoy", STANDARD_MEMORY_KIB, STANDARD_PASSES).unwrap_or_default()
    })
}

/// Runs verifications on the blocking pool, at most `permits` at a time.
#[derive(Clone)]
pub struct Verifier {
    permits: Arc<Semaphore>,
}

impl Verifier {
    pub fn new(permits: usize) -> Verifier {
        Verifier {
            permits: Arc::new(Semaphore::new(permits.max(1))),
        }
    }

    /// Verifies `password` against `phc` (`None`: an unknown user; a decoy hash is
    /// verified so the time taken does not reveal it).
    pub async fn verify(
        &self,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Closed)?;
        tokio::task::spawn_blocking(move || match phc {
            Some(phc) => verify_password(&password, &phc),
            None => {
                let _ = verify_password(&password, decoy_hash());
                false
            }
        })
        .await
        .map_err(|_| PasswordError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_and_no_other() {
        let phc = hash_password("correct horse", MINIMUM_MEMORY_KIB, 1).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{phc}");
        check_phc(&phc).unwrap();
        assert!(verify_password("correct horse", &phc));
        assert!(!verify_password("correct horse ", &phc));
        assert!(!verify_password("correct horse", "plain"));
    }

    #[test]
    fn weak_or_foreign_hashes_are_refused() {
        let weak = hash_password("x", 64, 1).unwrap();
        assert!(check_phc(&weak).unwrap_err().contains("too weak"));
        assert!(check_phc("$2b$12$abcdefghijklmnopqrstuv").is_err());
        assert!(check_phc("hunter2").is_err());
    }

    #[tokio::test]
    async fn the_verifier_runs_off_the_runtime() {
        let phc = hash_password("pw", MINIMUM_MEMORY_KIB, 1).unwrap();
        let v = Verifier::new(1);
        assert!(v.verify("pw".into(), Some(phc.clone())).await.unwrap());
        assert!(!v.verify("nope".into(), Some(phc)).await.unwrap());
    }
}
