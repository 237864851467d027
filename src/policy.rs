//! Sender-constraint policy: which proof of possession a tenant or client requires, and
//! whether server nonces are required.
//!
//! Owns the lattice of constraints (`none` ⊇ `dpop-or-mtls` ⊇ {`dpop`, `mtls`} ⊇
//! `dpop-and-mtls`, read as "the set of requests accepted") and the rule that a client may
//! tighten, never loosen, its tenant. Does not validate proofs or certificates.

use serde::Deserialize;
use std::fmt;

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
    fn requirements() {
        assert!(Dpop.needs_dpop() && DpopAndMtls.needs_dpop());
        assert!(!DpopOrMtls.needs_dpop() && !None.needs_dpop());
        assert!(Mtls.needs_mtls() && !DpopOrMtls.needs_mtls());
        assert_eq!(Mtls.and_dpop(), DpopAndMtls);
    }
}
