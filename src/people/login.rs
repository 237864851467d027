//! Sign-in attempts: rate limits (per user id and per peer address, per minute), the
//! lockout (after `people.lockout.maxFailedAttempts` failures in a row an account is
//! locked for `people.lockout.duration`, and even the right password is refused), the
//! password (and TOTP) check, and an audit event plus a counter for every attempt.
//!
//! The state is this process's memory: a restart forgets failures and locks, and on a
//! multi-node site each node counts its own (docs/people.md says so). It is bounded: the
//! entries whose minute and lock are over are dropped when the table grows.

use super::password::{PasswordError, Verifier};
use crate::config::people::{PeopleSettings, UserSettings};
use crate::telemetry::events;
use crate::telemetry::metrics::ResultLabel;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Why a sign-in was refused (the page shows the same words for the first two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Unknown user, wrong password or wrong TOTP code.
    WrongCredentials,
    /// The account is locked.
    Locked,
    /// Too many attempts for this user or from this address in the last minute.
    RateLimited,
}

#[derive(Debug)]
pub enum LoginOutcome {
    SignedIn(Arc<UserSettings>),
    Refused(Refusal),
}

/// The credentials of an attempt. `Debug` shows neither the password nor the code.
pub struct Credentials {
    pub user: String,
    pub password: String,
    pub totp: Option<String>,
}
impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("totp", &self.totp.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[derive(Default)]
struct Window {
    minute: i64,
    count: u32,
}
impl Window {
    /// Counts one attempt in the minute of `now`; whether it is within `limit`.
    fn admit(&mut self, now: i64, limit: u32) -> bool {
        let minute = now.div_euclid(60);
        if self.minute != minute {
            self.minute = minute;
            self.count = 0;
        }
        self.count += 1;
        self.count <= limit
    }
}

#[derive(Default)]
struct Account {
    window: Window,
    failures: u32,
    locked_until: i64,
}

#[derive(Default)]
struct State {
    accounts: HashMap<String, Account>,
    addresses: HashMap<IpAddr, Window>,
}

/// Entries kept before old ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

impl State {
    fn prune(&mut self, now: i64) {
        let minute = now.div_euclid(60);
        if self.accounts.len() > PRUNE_ABOVE {
            self.accounts
                .retain(|_, a| a.locked_until > now || a.window.minute == minute || a.failures > 0);
        }
        if self.addresses.len() > PRUNE_ABOVE {
            self.addresses.retain(|_, w| w.minute == minute);
        }
    }
}

/// The authority's sign-in service.
pub struct Logins {
    verifier: Verifier,
    state: Mutex<State>,
    counter: Family<ResultLabel, Counter>,
}

impl Logins {
    /// `counter`: `authority_logins_total{result}`.
    pub fn new(counter: Family<ResultLabel, Counter>) -> Logins {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Logins {
            verifier: Verifier::new(cores),
            state: Mutex::default(),
            counter,
        }
    }

    fn audit(&self, user: &str, peer: IpAddr, result: &'static str, reason: &'static str) {
        self.counter.get_or_create(&ResultLabel { result }).inc();
        tracing::info!(event = events::LOGIN_ATTEMPT, user, peer = %peer, result, reason);
    }

    /// Judges one sign-in attempt at `now` (Unix seconds) from `peer`.
    pub async fn attempt(
        &self,
        people: &PeopleSettings,
        credentials: Credentials,
        peer: IpAddr,
        now: i64,
    ) -> Result<LoginOutcome, PasswordError> {
        let user_id = credentials.user.as_str();
        // Rate limits and the lock first: a refused attempt costs no hashing.
        {
            let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
            state.prune(now);
            let address_ok = state
                .addresses
                .entry(peer)
                .or_default()
                .admit(now, people.login_per_address_per_minute);
            let account = state.accounts.entry(user_id.to_string()).or_default();
            let user_ok = account.window.admit(now, people.login_per_user_per_minute);
            if account.locked_until > now {
                drop(state);
                self.audit(user_id, peer, "locked", "account-locked");
                return Ok(LoginOutcome::Refused(Refusal::Locked));
            }
            if !address_ok || !user_ok {
                drop(state);
                let reason = if address_ok {
                    "rate-limited-user"
                } else {
                    "rate-limited-address"
                };
                self.audit(user_id, peer, "rate-limited", reason);
                return Ok(LoginOutcome::Refused(Refusal::RateLimited));
            }
        }
        let user = people.users.get(user_id).cloned();
        let password_ok = self
            .verifier
            .verify(
                credentials.password,
                user.as_ref().map(|u| u.password_hash.0.clone()),
            )
            .await?;
        let (ok, reason) = match (&user, password_ok) {
            (None, _) => (false, "unknown-user"),
            (Some(_), false) => (false, "wrong-password"),
            (Some(u), true) => match &u.totp {
                None => (true, ""),
                Some(secret) => match credentials.totp.as_deref() {
                    Some(code) if super::totp::verify(&secret.0, code, now) => (true, ""),
                    Some(_) => (false, "wrong-totp-code"),
                    None => (false, "totp-code-missing"),
                },
            },
        };
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let account = state.accounts.entry(user_id.to_string()).or_default();
        if ok {
            account.failures = 0;
            drop(state);
            self.audit(user_id, peer, "success", "");
            return Ok(match user {
                Some(u) => LoginOutcome::SignedIn(u),
                None => LoginOutcome::Refused(Refusal::WrongCredentials),
            });
        }
        account.failures += 1;
        let failures = account.failures;
        let lock = failures >= people.lockout_max_failed;
        if lock {
            account.failures = 0;
            account.locked_until = now + people.lockout_duration.as_secs() as i64;
        }
        drop(state);
        self.audit(user_id, peer, "failure", reason);
        if lock {
            tracing::warn!(
                event = events::LOGIN_LOCKED,
                user = user_id, peer = %peer, failures,
                locked_for_secs = people.lockout_duration.as_secs(),
            );
        }
        Ok(LoginOutcome::Refused(Refusal::WrongCredentials))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::people::{PasswordHash, UserSettings};
    use std::collections::BTreeMap;
    use std::time::Duration;

    fn people(max: u32) -> PeopleSettings {
        let phc = crate::people::password::hash_password("right", 1024, 1).unwrap();
        let mut users = BTreeMap::new();
        users.insert(
            "ann".to_string(),
            Arc::new(UserSettings {
                id: "ann".into(),
                display_name: "Ann".into(),
                password_hash: PasswordHash(phc),
                groups: vec![],
                totp: None,
            }),
        );
        PeopleSettings {
            users,
            lockout_max_failed: max,
            lockout_duration: Duration::from_secs(900),
            login_per_user_per_minute: 100,
            login_per_address_per_minute: 100,
            device_code_lifetime: Duration::from_secs(600),
            device_poll_interval: Duration::from_secs(5),
            authorization_code_lifetime: Duration::from_secs(60),
            session_lifetime: Duration::from_secs(600),
        }
    }

    fn creds(password: &str) -> Credentials {
        Credentials {
            user: "ann".into(),
            password: password.into(),
            totp: None,
        }
    }

    #[tokio::test]
    async fn lockout_refuses_even_the_right_password_until_it_ends() {
        let p = people(3);
        let logins = Logins::new(Family::default());
        let peer: IpAddr = "127.0.0.1".parse().unwrap();
        let now = 1_000_000;
        assert!(matches!(
            logins.attempt(&p, creds("right"), peer, now).await.unwrap(),
            LoginOutcome::SignedIn(_)
        ));
        for _ in 0..3 {
            assert!(matches!(
                logins.attempt(&p, creds("wrong"), peer, now).await.unwrap(),
                LoginOutcome::Refused(Refusal::WrongCredentials)
            ));
        }
        assert!(matches!(
            logins
                .attempt(&p, creds("right"), peer, now + 899)
                .await
                .unwrap(),
            LoginOutcome::Refused(Refusal::Locked)
        ));
        assert!(matches!(
            logins
                .attempt(&p, creds("right"), peer, now + 900)
                .await
                .unwrap(),
            LoginOutcome::SignedIn(_)
        ));
    }

    #[tokio::test]
    async fn rate_limit_per_address() {
        let mut p = people(100);
        p.login_per_address_per_minute = 2;
        let logins = Logins::new(Family::default());
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let now = 6_000_000;
        for _ in 0..2 {
            logins.attempt(&p, creds("wrong"), peer, now).await.unwrap();
        }
        assert!(matches!(
            logins.attempt(&p, creds("right"), peer, now).await.unwrap(),
            LoginOutcome::Refused(Refusal::RateLimited)
        ));
        assert!(matches!(
            logins
                .attempt(&p, creds("right"), peer, now + 60)
                .await
                .unwrap(),
            LoginOutcome::SignedIn(_)
        ));
    }
}
