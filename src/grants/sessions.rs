//! Sign-in sessions of the login and consent pages: a random session id in a cookie
//! (`__Host-sealkit-session`: `Secure`, `HttpOnly`, `SameSite=Strict`, `Path=/`) and a CSRF
//! token bound to it that every form carries back. Kept by the SHA-256 of the id.
//!
//! Before sign-in the same cookie names an anonymous session, so the login form is
//! CSRF-protected too.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    /// The signed-in user, once signed in.
    pub user: Option<String>,
    pub csrf: String,
    pub expires_at: i64,
}

#[derive(Default)]
pub struct Sessions {
    table: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new anonymous session: (id, its CSRF token).
    pub fn create(&self, lifetime: i64, now: i64) -> (String, String) {
        let mut table = self.lock();
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, s| s.expires_at > now);
            if table.len() >= MAX_SESSIONS {
                // Drop the oldest-expiring half rather than refuse every new visitor.
                let mut ends: Vec<i64> = table.values().map(|s| s.expires_at).collect();
                ends.sort_unstable();
                let cut = ends[ends.len() / 2];
                table.retain(|_, s| s.expires_at > cut);
            }
        }
        let id = super::random_secret();
        let csrf = super::random_secret();
        table.insert(
            key(&id),
            Session {
                user: None,
                csrf: csrf.clone(),
                expires_at: now + lifetime,
            },
        );
        (id, csrf)
    }

    pub fn get(&self, id: &str, now: i64) -> Option<Session> {
        self.lock()
            .get(&key(id))
            .filter(|s| s.expires_at > now)
            .cloned()
    }

    /// Whether `csrf` is the token of the live session `id` (constant time).
    pub fn csrf_matches(&self, id: &str, csrf: &str, now: i64) -> bool {
        self.get(id, now).is_some_and(|s| {
            bool::from(subtle::ConstantTimeEq::ct_eq(
                s.csrf.as_bytes(),
                csrf.as_bytes(),
            ))
        })
    }

    /// Marks the session signed in as `user` and gives it a new id and CSRF token (no
    /// session fixation): returns (new id, new CSRF token).
    pub fn sign_in(&self, old_id: &str, user: &str, lifetime: i64, now: i64) -> (String, String) {
        self.lock().remove(&key(old_id));
        let (id, csrf) = self.create(lifetime, now);
        if let Some(s) = self.lock().get_mut(&key(&id)) {
            s.user = Some(user.to_string());
        }
        (id, csrf)
    }

    pub fn end(&self, id: &str) {
        self.lock().remove(&key(id));
    }
}
