//! The user grants' state machines, with no HTTP in them: device codes (RFC 8628),
//! sign-in sessions of the pages, and DPoP-bound refresh tokens with rotation and reuse
//! detection (RFC 9449 §5, RFC 9700 §4.14).
//!
//! Device codes and sessions live in this process's memory: they last minutes, and a
//! restart only makes a person start the flow again (a multi-node site routes a flow to
//! one node; docs/people.md). Refresh tokens live in the store (sled or Redis) like access
//! tokens, because they live for days.
//!
//! Not responsible for: DPoP proofs (the core's gate admits every one, through
//! `Core::issue`), passwords (`crate::people`), pages and endpoints (`server`).

pub mod codes;
pub mod device;
pub mod refresh;
pub mod sessions;

use rand::RngCore;

/// 256 random bits, base64url: device codes, refresh tokens, session ids, CSRF tokens.
pub fn random_secret() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
