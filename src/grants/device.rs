//! Device authorization (RFC 8628): a device code for the device, a user code for the
//! person, the person's decision, and the polling answers (`authorization_pending`,
//! `slow_down`, `expired_token`, `access_denied`).
//!
//! Codes are kept by their SHA-256, never as issued; a device code is exchanged once.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;

/// User codes use 20 consonants (no vowels: no words; RFC 8628 §6.1), 8 of them, shown
/// as `BCDF-GHJK`: 20^8 ≈ 2^34.6, with the attempts a person can make rate-limited.
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";
/// The most pending device codes kept (a flood of requests is refused beyond it).
const MAX_PENDING: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Pending,
    Approved { user: String, scope: String },
    Denied,
}

struct Entry {
    client_id: String,
    scope: Option<String>,
    user_code: String,
    expires_at: i64,
    interval: i64,
    last_poll: Option<i64>,
    decision: Decision,
}

/// What a device gets from `/device_authorization`.
pub struct Started {
    pub device_code: String,
    pub user_code: String,
    pub expires_in: i64,
    pub interval: i64,
}

/// What the verification page shows about a user code.
#[derive(Debug, Clone)]
pub struct Pending {
    pub client_id: String,
    /// The scope the device asked for (`None`: the client's defaults for the user).
    pub scope: Option<String>,
    pub user_code: String,
}

/// A poll's answer when no token is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollError {
    /// Unknown device code, another client's, or already exchanged: `invalid_grant`.
    Invalid,
    Pending,
    SlowDown,
    Expired,
    Denied,
}
impl PollError {
    pub fn code(self) -> &'static str {
        match self {
            PollError::Invalid => "invalid_grant",
            PollError::Pending => "authorization_pending",
            PollError::SlowDown => "slow_down",
            PollError::Expired => "expired_token",
            PollError::Denied => "access_denied",
        }
    }
}

#[derive(Default)]
struct Table {
    by_device: HashMap<[u8; 32], Entry>,
    /// normalised user code → device code hash.
    by_user: HashMap<String, [u8; 32]>,
}

/// The device codes of this process.
#[derive(Default)]
pub struct DeviceCodes {
    table: Mutex<Table>,
}

fn hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.as_bytes()).into()
}

/// `bcdf-ghjk`, `BCDFGHJK`, `BCDF GHJK` → `BCDFGHJK`.
pub fn normalise_user_code(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

fn new_user_code() -> String {
    use rand::Rng;
    let mut rng = rand::rngs::OsRng;
    (0..8)
        .map(|_| USER_CODE_ALPHABET[rng.gen_range(0..USER_CODE_ALPHABET.len())] as char)
        .collect()
}

/// `BCDFGHJK` → `BCDF-GHJK`.
pub fn display_user_code(code: &str) -> String {
    if code.len() == 8 {
        format!("{}-{}", &code[..4], &code[4..])
    } else {
        code.to_string()
    }
}

impl DeviceCodes {
    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a flow for `client_id`; `None` when too many are pending.
    pub fn start(
        &self,
        client_id: &str,
        scope: Option<String>,
        lifetime: i64,
        interval: i64,
        now: i64,
    ) -> Option<Started> {
        let mut table = self.lock();
        if table.by_device.len() >= MAX_PENDING {
            Self::sweep_locked(&mut table, now);
            if table.by_device.len() >= MAX_PENDING {
                return None;
            }
        }
        let device_code = super::random_secret();
        let mut user_code = new_user_code();
        while table.by_user.contains_key(&user_code) {
            user_code = new_user_code();
        }
        let key = hash(&device_code);
        table.by_user.insert(user_code.clone(), key);
        table.by_device.insert(
            key,
            Entry {
                client_id: client_id.to_string(),
                scope,
                user_code: user_code.clone(),
                expires_at: now + lifetime,
                interval,
                last_poll: None,
                decision: Decision::Pending,
            },
        );
        Some(Started {
            device_code,
            user_code: display_user_code(&user_code),
            expires_in: lifetime,
            interval,
        })
    }

    /// The pending flow a user code names (`None`: unknown, expired or already decided).
    pub fn pending(&self, user_code: &str, now: i64) -> Option<Pending> {
        let table = self.lock();
        let key = table.by_user.get(&normalise_user_code(user_code))?;
        let entry = table.by_device.get(key)?;
        (entry.expires_at > now && entry.decision == Decision::Pending).then(|| Pending {
            client_id: entry.client_id.clone(),
            scope: entry.scope.clone(),
            user_code: display_user_code(&entry.user_code),
        })
    }

    /// Records the person's decision on a pending user code; false if there is none.
    pub fn decide(&self, user_code: &str, decision: Decision, now: i64) -> bool {
        let mut table = self.lock();
        let Some(key) = table.by_user.get(&normalise_user_code(user_code)).copied() else {
            return false;
        };
        match table.by_device.get_mut(&key) {
            Some(entry) if entry.expires_at > now && entry.decision == Decision::Pending => {
                entry.decision = decision;
                true
            }
            _ => false,
        }
    }

    /// A device polls with its device code: the approval (once), or why not.
    pub fn poll(
        &self,
        device_code: &str,
        client_id: &str,
        now: i64,
    ) -> Result<(String, String), PollError> {
        let mut table = self.lock();
        let key = hash(device_code);
        let Some(entry) = table.by_device.get_mut(&key) else {
            return Err(PollError::Invalid);
        };
        if entry.client_id != client_id {
            return Err(PollError::Invalid);
        }
        if entry.expires_at <= now {
            return Err(PollError::Expired);
        }
        match entry.decision.clone() {
            Decision::Pending => {
                // RFC 8628 §3.5: polling faster than the interval → slow_down, and the
                // interval grows by 5 s.
                let too_fast = entry
                    .last_poll
                    .is_some_and(|last| now - last < entry.interval);
                entry.last_poll = Some(now);
                if too_fast {
                    entry.interval += 5;
                    Err(PollError::SlowDown)
                } else {
                    Err(PollError::Pending)
                }
            }
            Decision::Denied => {
                let user_code = entry.user_code.clone();
                table.by_device.remove(&key);
                table.by_user.remove(&user_code);
                Err(PollError::Denied)
            }
            Decision::Approved { user, scope } => {
                let user_code = entry.user_code.clone();
                table.by_device.remove(&key);
                table.by_user.remove(&user_code);
                Ok((user, scope))
            }
        }
    }

    fn sweep_locked(table: &mut Table, now: i64) {
        table.by_device.retain(|_, e| e.expires_at > now);
        let live: std::collections::HashSet<[u8; 32]> = table.by_device.keys().copied().collect();
        table.by_user.retain(|_, k| live.contains(k));
    }

    /// Drops expired flows.
    pub fn sweep(&self, now: i64) {
        Self::sweep_locked(&mut self.lock(), now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flow_from_start_to_token() {
        let codes = DeviceCodes::default();
        let s = codes.start("cli", None, 600, 5, 1000).unwrap();
        assert_eq!(
            codes.poll(&s.device_code, "cli", 1000),
            Err(PollError::Pending)
        );
        assert_eq!(
            codes.poll(&s.device_code, "cli", 1002),
            Err(PollError::SlowDown)
        );
        assert_eq!(
            codes.poll(&s.device_code, "other", 1020),
            Err(PollError::Invalid)
        );
        assert!(codes.pending(&s.user_code.to_lowercase(), 1020).is_some());
        assert!(!codes.decide("BBBB-BBBB", Decision::Denied, 1020));
        assert!(codes.decide(
            &s.user_code,
            Decision::Approved {
                user: "ann".into(),
                scope: "read".into()
            },
            1020
        ));
        assert!(codes.pending(&s.user_code, 1020).is_none());
        assert_eq!(
            codes.poll(&s.device_code, "cli", 1040),
            Ok(("ann".into(), "read".into()))
        );
        assert_eq!(
            codes.poll(&s.device_code, "cli", 1060),
            Err(PollError::Invalid)
        );
    }

    #[test]
    fn denied_and_expired() {
        let codes = DeviceCodes::default();
        let a = codes.start("cli", None, 600, 5, 1000).unwrap();
        assert!(codes.decide(&a.user_code, Decision::Denied, 1001));
        assert_eq!(
            codes.poll(&a.device_code, "cli", 1010),
            Err(PollError::Denied)
        );
        let b = codes.start("cli", None, 600, 5, 1000).unwrap();
        assert_eq!(
            codes.poll(&b.device_code, "cli", 1600),
            Err(PollError::Expired)
        );
        assert!(!codes.decide(&b.user_code, Decision::Denied, 1600));
    }
}
