//! Fresh authentication: before a sensitive operation, a client re-proves possession of
//! what its access token is bound to; the answer says until when its authentication counts
//! as fresh (`security.freshAuth.window`).
//!
//! A DPoP-bound token comes with a proof carrying `ath`, signed by the token's `cnf.jkt`
//! key (RFC 9449 §7), admitted by the same gate as at `/token`: nonce when the client's
//! policy or the restart fence requires one, jti claimed, replays audited. A
//! certificate-bound token comes over the very certificate it is bound to (RFC 8705 §3). A
//! token bound to nothing proves nothing and is refused.

use super::certificate::{check_binding, RequestCertificate};
use super::gate::{Presenter, ProofCheck};
use super::{Core, Denied};
use crate::config::Settings;
use crate::dpop::EndpointUrl;
use crate::store::TokenId;
use crate::telemetry::events;
use crate::telemetry::metrics::ReasonLabel;
use crate::token::Confirmation;

/// How the token was presented (`Authorization: DPoP …` or `Bearer …`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Dpop,
    Bearer,
}

impl Scheme {
    pub fn name(self) -> &'static str {
        match self {
            Self::Dpop => "DPoP",
            Self::Bearer => "Bearer",
        }
    }
}

pub struct FreshAuthRequest<'a> {
    pub scheme: Scheme,
    pub access_token: &'a str,
    pub proof_headers: &'a [&'a [u8]],
    pub certificate: &'a RequestCertificate,
    /// The `/fresh-auth` URL, as `htu` must name it.
    pub target: &'a EndpointUrl,
    pub peer: std::net::SocketAddr,
}

#[derive(Debug)]
pub struct FreshAuth {
    pub fresh_until: i64,
    pub client_id: String,
    pub sub: String,
    pub tenant: String,
    pub cnf: Confirmation,
    /// A nonce for the client's next proof, when its policy requires nonces.
    pub next_nonce: Option<String>,
}

impl Core {
    pub async fn fresh_auth(
        &self,
        settings: &Settings,
        request: &FreshAuthRequest<'_>,
    ) -> Result<FreshAuth, Denied> {
        let scheme = request.scheme.name();
        let invalid = |description| Denied::InvalidToken {
            description,
            scheme,
        };
        let now = self.clock.now();
        let claims = self
            .signing_key
            .verify(request.access_token)
            .ok_or_else(|| invalid("the access token is not valid"))?;
        let record = self
            .store()
            .get_token(TokenId::of(request.access_token))
            .await
            .map_err(|e| self.unavailable(e))?
            .filter(|r| !r.revoked && r.exp > now)
            .ok_or_else(|| invalid("the access token is not active"))?;
        // The client's current policy decides the nonce; a client no longer registered
        // cannot be freshly authenticated.
        let client = settings
            .clients
            .get(&record.client_id)
            .ok_or_else(|| invalid("the access token's client is no longer registered"))?;
        if record.cnf_jkt.is_none() && record.sender_certificate.is_none() {
            return Err(invalid(
                "the token is not sender-constrained, so it cannot prove a fresh authentication",
            ));
        }

        // The certificate binding (RFC 8705 §3).
        if let Some(bound) = &record.sender_certificate {
            if let Err(mismatch) = check_binding(bound, request.certificate) {
                self.metrics
                    .mtls_mismatch
                    .get_or_create(&ReasonLabel {
                        reason: mismatch.reason(),
                    })
                    .inc();
                tracing::warn!(
                    event = events::SENDER_CONSTRAINT, endpoint = "fresh-auth", client = %record.client_id,
                    tenant = %record.tenant, decision = "reject", reason = mismatch.reason(),
                );
                return Err(invalid(mismatch.description()));
            }
        }

        // The DPoP binding (RFC 9449 §7), through the gate.
        match (&record.cnf_jkt, request.scheme) {
            (Some(_), Scheme::Bearer) => {
                return Err(Denied::InvalidToken {
                    description: "a DPoP-bound token must be presented with the DPoP scheme",
                    scheme: "DPoP",
                })
            }
            (None, Scheme::Dpop) => {
                return Err(Denied::InvalidToken {
                    description: "the token is not DPoP-bound",
                    scheme: "Bearer",
                })
            }
            (Some(_), Scheme::Dpop) if !settings.dpop.enabled => {
                return Err(invalid("DPoP is disabled at this authority"))
            }
            (Some(jkt), Scheme::Dpop) => {
                let check = ProofCheck {
                    proof_headers: request.proof_headers,
                    method: "POST",
                    target: request.target,
                    access_token: Some(request.access_token),
                    bound_jkt: Some(jkt),
                    nonce_required: client.policy.require_nonce,
                    now,
                };
                let presenter = Presenter {
                    tenant: &record.tenant,
                    client: &record.client_id,
                    peer: request.peer,
                    endpoint: "fresh-auth",
                };
                self.gate
                    .admit(&settings.dpop, &check, &presenter)
                    .await
                    .map_err(|e| self.gate_denial(e, settings, true))?;
            }
            (None, Scheme::Bearer) => {}
        }

        let fresh_until = now + settings.fresh_auth_window.as_secs() as i64;
        tracing::info!(
            event = events::FRESH_AUTH, client = %record.client_id, tenant = %record.tenant, fresh_until,
        );
        let next_nonce = if client.policy.require_nonce && record.cnf_jkt.is_some() {
            Some(
                self.gate
                    .current_nonce(&settings.dpop, now)
                    .await
                    .map_err(|e| self.unavailable(e))?,
            )
        } else {
            None
        };
        Ok(FreshAuth {
            fresh_until,
            cnf: Confirmation::of_record(&record),
            client_id: record.client_id,
            sub: claims.sub,
            tenant: record.tenant,
            next_nonce,
        })
    }
}
