//! Sender-constraint policy: which proof of possession a tenant or client requires, and
//! whether server nonces are required.
//!
//! Owns the lattice of constraints (`none` ⊇ `dpop-or-mtls` ⊇ {`dpop`, `mtls`} ⊇
//! `dpop-and-mtls`, read as "the set of requests accepted") and the rule that a client may
//! tighten, never loosen, its tenant; and the DPoP **bypass drill**: whether one may run
//! (`allowTemporaryBypass`), the active window, and the decision that a request without a
//! proof is let through during it. Does not validate proofs or certificates.

use crate::config::{BypassWindow, MAX_BYPASS};
use crate::telemetry::events;
use serde::Deserialize;
use std::fmt;
use std::sync::RwLock;

/// What a request must prove to get a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SenderConstraint {
    /// Bearer tokens allowed; a valid DPoP proof, if sent, still binds the token.
    #[default]
    None,
    /// A DPoP proof (RFC 9449) is required; the token carries `cnf.jkt`.
    Dpop,
    /// A client certificate (RFC 8705) is required; the token carries `cnf.x5t#S256`.
    Mtls,
    /// Either proof is enough.
    DpopOrMtls,
    /// Both proofs are required.
    DpopAndMtls,
}

impl SenderConstraint {
    /// The requests this constraint accepts, as (needs DPoP?, needs mTLS?) alternatives.
    fn accepts(self, has_dpop: bool, has_mtls: bool) -> bool {
        match self {
            Self::None => true,
            Self::Dpop => has_dpop,
            Self::Mtls => has_mtls,
            Self::DpopOrMtls => has_dpop || has_mtls,
            Self::DpopAndMtls => has_dpop && has_mtls,
        }
    }

    /// True when every request this constraint accepts is also accepted by `other`.
    pub fn is_at_least_as_strict_as(self, other: SenderConstraint) -> bool {
        [(false, false), (true, false), (false, true), (true, true)]
            .into_iter()
            .all(|(d, m)| !self.accepts(d, m) || other.accepts(d, m))
    }

    /// Whether a request with no DPoP proof can never satisfy it.
    pub fn needs_dpop(self) -> bool {
        !self.accepts(false, true)
    }

    /// Whether a request without a client certificate can never satisfy it.
    pub fn needs_mtls(self) -> bool {
        !self.accepts(true, false)
    }

    /// Whether a client certificate takes part in this constraint (and so binds tokens).
    pub fn mentions_mtls(self) -> bool {
        matches!(self, Self::Mtls | Self::DpopOrMtls | Self::DpopAndMtls)
    }

    /// The constraint tightened so that DPoP is always required.
    pub fn and_dpop(self) -> SenderConstraint {
        match self {
            Self::None | Self::Dpop | Self::DpopOrMtls => Self::Dpop,
            Self::Mtls | Self::DpopAndMtls => Self::DpopAndMtls,
        }
    }

    /// Decide whether a request carrying these proofs satisfies the constraint.
    pub fn is_satisfied(self, has_dpop: bool, has_mtls: bool) -> bool {
        self.accepts(has_dpop, has_mtls)
    }
}

impl fmt::Display for SenderConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Dpop => "dpop",
            Self::Mtls => "mtls",
            Self::DpopOrMtls => "dpop-or-mtls",
            Self::DpopAndMtls => "dpop-and-mtls",
        })
    }
}

/// The effective policy for one client: its tenant's, tightened by its own registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantPolicy {
    pub constraint: SenderConstraint,
    pub require_nonce: bool,
}

/// Why a bypass drill was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BypassRefused {
    #[error("this site forbids bypass drills (security.senderConstraints.dpop.allowTemporaryBypass is false)")]
    NotAllowed,
    #[error("a bypass lasts between 1s and {}s", MAX_BYPASS.as_secs())]
    BadDuration,
    #[error("say why the bypass is on (--reason)")]
    NoReason,
}

/// The bypass state of a running authority. A bypass always has an end and reverts by
/// itself; its start, end and every refusal are audit events.
#[derive(Debug, Default)]
pub struct Bypass {
    state: RwLock<BypassState>,
}

#[derive(Debug, Default)]
struct BypassState {
    /// `allowTemporaryBypass` is `true` or a window: drills may be started.
    allowed: bool,
    window: Option<BypassWindow>,
}

impl Bypass {
    /// The state a configuration starts with: drills allowed or not, and the window the
    /// file itself opens (`allowTemporaryBypass: {until, reason}`).
    pub fn new(allowed: bool, window: Option<BypassWindow>) -> Bypass {
        let bypass = Bypass::default();
        bypass.configure(allowed, window, 0);
        bypass
    }

    /// Applies a (re)loaded configuration: a window the file opens starts (or replaces the
    /// one the file opened before); forbidding drills ends any bypass at once.
    pub fn configure(&self, allowed: bool, window: Option<BypassWindow>, now: i64) {
        let Ok(mut state) = self.state.write() else {
            return;
        };
        state.allowed = allowed || window.is_some();
        let live = |w: &Option<BypassWindow>| w.as_ref().is_some_and(|w| w.until > now);
        match window {
            Some(w) if state.window.as_ref() != Some(&w) => {
                if w.until > now {
                    tracing::warn!(event = events::BYPASS_STARTED, until = w.until, reason = %w.reason, source = "config", operator = "configuration");
                }
                state.window = Some(w);
            }
            Some(_) => {}
            None if !state.allowed && live(&state.window) => {
                tracing::warn!(
                    event = events::BYPASS_ENDED,
                    cause = "forbidden by the configuration",
                    source = "config"
                );
                state.window = None;
            }
            None => {}
        }
    }

    /// Starts a drill of `seconds` (control socket, `sealkit drill bypass`), or says why not.
    pub fn start(
        &self,
        seconds: u64,
        reason: &str,
        operator: &str,
        now: i64,
    ) -> Result<BypassWindow, BypassRefused> {
        let refused = |why: BypassRefused| {
            tracing::warn!(event = events::BYPASS_REFUSED, reason = %why, operator, requested_seconds = seconds);
            why
        };
        let Ok(mut state) = self.state.write() else {
            return Err(refused(BypassRefused::NotAllowed));
        };
        if !state.allowed {
            return Err(refused(BypassRefused::NotAllowed));
        }
        if seconds == 0 || seconds > MAX_BYPASS.as_secs() {
            return Err(refused(BypassRefused::BadDuration));
        }
        if reason.trim().is_empty() {
            return Err(refused(BypassRefused::NoReason));
        }
        let window = BypassWindow {
            until: now + seconds as i64,
            reason: reason.to_string(),
        };
        tracing::warn!(event = events::BYPASS_STARTED, until = window.until, reason = %window.reason, source = "drill", operator);
        state.window = Some(window.clone());
        Ok(window)
    }

    /// Ends the bypass early (`sealkit drill bypass --off`); a no-op when none is on.
    pub fn stop(&self, operator: &str, now: i64) {
        if let Ok(mut state) = self.state.write() {
            if state.window.as_ref().is_some_and(|w| w.until > now) {
                tracing::warn!(
                    event = events::BYPASS_ENDED,
                    cause = "ended early",
                    source = "drill",
                    operator
                );
            }
            state.window = None;
        }
    }

    /// Ends an expired bypass (the housekeeping task calls this), with the audit event.
    pub fn expire(&self, now: i64) {
        if let Ok(mut state) = self.state.write() {
            if state.window.as_ref().is_some_and(|w| w.until <= now) {
                state.window = None;
                tracing::warn!(event = events::BYPASS_ENDED, cause = "expired");
            }
        }
    }

    /// The active window, if a bypass is on and not expired.
    pub fn active(&self, now: i64) -> Option<BypassWindow> {
        self.state
            .read()
            .ok()
            .and_then(|s| s.window.clone())
            .filter(|w| w.until > now)
    }

    /// Whether drills may be started at all.
    pub fn allowed(&self) -> bool {
        self.state.read().map(|s| s.allowed).unwrap_or(false)
    }

    /// The decision: a request without a proof, where a proof would satisfy the policy,
    /// is let through only while a bypass is active.
    pub fn lets_through_missing_proof(&self, now: i64) -> bool {
        self.active(now).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::SenderConstraint::*;

    #[test]
    fn tightening_is_allowed_loosening_is_not() {
        assert!(Dpop.is_at_least_as_strict_as(None));
        assert!(DpopAndMtls.is_at_least_as_strict_as(Dpop));
        assert!(Dpop.is_at_least_as_strict_as(DpopOrMtls));
        assert!(!None.is_at_least_as_strict_as(Dpop));
        assert!(!DpopOrMtls.is_at_least_as_strict_as(Dpop));
        assert!(!Mtls.is_at_least_as_strict_as(Dpop));
        assert!(!Dpop.is_at_least_as_strict_as(Mtls));
    }

    #[test]
    fn a_forbidden_bypass_cannot_start_and_an_allowed_one_ends_by_itself() {
        use super::{Bypass, BypassRefused};
        let forbidden = Bypass::new(false, Option::None);
        assert_eq!(
            forbidden.start(60, "drill", "ops", 1_000),
            Err(BypassRefused::NotAllowed)
        );
        assert!(forbidden.active(1_000).is_none());

        let allowed = Bypass::new(true, Option::None);
        assert_eq!(
            allowed.start(4 * 3600 + 1, "drill", "ops", 1_000),
            Err(BypassRefused::BadDuration)
        );
        assert_eq!(
            allowed.start(60, " ", "ops", 1_000),
            Err(BypassRefused::NoReason)
        );
        let window = allowed.start(60, "drill", "ops", 1_000).unwrap();
        assert_eq!(window.until, 1_060);
        assert!(allowed.lets_through_missing_proof(1_059));
        assert!(!allowed.lets_through_missing_proof(1_060));
        allowed.expire(1_060);
        assert!(allowed.active(1_000).is_none(), "expired window is gone");

        // A reload that forbids drills ends a running one at once.
        allowed.start(600, "drill", "ops", 2_000).unwrap();
        allowed.configure(false, Option::None, 2_001);
        assert!(allowed.active(2_001).is_none());
        assert!(!allowed.allowed());
    }

    #[test]
    fn requirements() {
        assert!(Dpop.needs_dpop() && DpopAndMtls.needs_dpop());
        assert!(!DpopOrMtls.needs_dpop() && !None.needs_dpop());
        assert!(Mtls.needs_mtls() && !DpopOrMtls.needs_mtls());
        assert_eq!(Mtls.and_dpop(), DpopAndMtls);
    }
}
