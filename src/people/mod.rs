//! People: signing users in. Password verification (argon2id, off the async runtime and
//! bounded), TOTP (RFC 6238), the per-user and per-address rate limits and the lockout,
//! and the audit of every attempt.
//!
//! Not responsible for: where users come from (`config::people` validates the users file
//! into settings), sessions and pages (the server's `people_pages`), or grants
//! (`crate::grants`).
//!
//! Nothing here logs a password, a TOTP code or a hash: the audit event of an attempt
//! names the user id, the peer address, the result and the reason.

pub mod login;
pub mod password;
pub mod totp;
pub mod users_file;

pub use login::{LoginOutcome, Logins};
