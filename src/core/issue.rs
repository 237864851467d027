//! `client_credentials` issuance (RFC 6749 §4.4) for an already authenticated client, with
//! the sender constraints of its policy: DPoP (RFC 9449) and certificate binding (RFC 8705).
//!
//! The order is deliberate: the scope (cheap), then a proof if one was sent (a present
//! proof is always fully admitted by the gate, bypass or not), then the policy decision,
//! then `cnf`, minting and the record. A request refused before the gate never burns its
//! jti; a token is answered only after its record is filed.

use super::certificate::RequestCertificate;
use super::gate::{GateError, NonceStatus, Presenter, ProofCheck};
use super::{Core, Denied};
use crate::config::{ClientAuth, ClientSettings, Settings};
use crate::dpop::{EndpointUrl, ValidatedProof};
use crate::store::{TokenId, TokenRecord};
use crate::telemetry::events;
use crate::telemetry::metrics::{IssuedLabels, ReasonLabel, ResultLabel};
use crate::token::{AccessTokenClaims, Confirmation};

/// A token request of a client that has authenticated.
pub struct TokenRequest<'a> {
    pub client: &'a ClientSettings,
    /// The client authenticated with its certificate (`tls_client_auth`,
    /// `self_signed_tls_client_auth`): the token is bound to it (RFC 8705 §3).
    pub authenticated_by_certificate: bool,
    /// The `scope` parameter, if any.
    pub scope: Option<&'a str>,
    /// Every `DPoP` header value of the request.
    pub proof_headers: &'a [&'a [u8]],
    pub certificate: &'a RequestCertificate,
    /// The token endpoint, as `htu` must name it.
    pub target: &'a EndpointUrl,
    pub peer: std::net::SocketAddr,
    /// A user grant (device code, authorization code, refresh): whom the token is for.
    pub user: Option<&'a UserGrant>,
}

/// What a user grant decided before the token is minted (`crate::grants`).
#[derive(Debug, Clone)]
pub struct UserGrant {
    /// The user id: the token's `sub`.
    pub subject: String,
    /// The scope already granted (the user's groups through this client).
    pub scope: String,
    /// The refresh-token family the token belongs to (revoking it revokes the token).
    pub family: Option<String>,
    /// The key the proof must be signed with (a refresh token's binding).
    pub bound_jkt: Option<String>,
    /// `authorization_code` with `dpop_jkt`: a proof is required, signed by this key.
    pub require_proof: bool,
}

/// A token that was minted and recorded.
#[derive(Debug)]
pub struct IssuedToken {
    pub access_token: String,
    /// `DPoP` or `Bearer`.
    pub token_type: &'static str,
    pub expires_in: u64,
    pub scope: String,
    /// A nonce for the client's next proof, when its policy requires nonces.
    pub next_nonce: Option<String>,
    /// `cnf.jkt` of the token (what a refresh token is bound to).
    pub cnf_jkt: Option<String>,
    pub jti: String,
}

/// The outcome labels of `authority.dpop.request`.
struct DpopJudgement<'a> {
    tenant: &'a str,
    client: &'a str,
    jkt: Option<String>,
    nonce: &'static str,
}

impl DpopJudgement<'_> {
    fn log(&self, core: &Core, result: &'static str, reason: &str) {
        core.metrics
            .dpop_requests
            .get_or_create(&ResultLabel { result })
            .inc();
        tracing::info!(
            event = events::DPOP_REQUEST,
            tenant = self.tenant,
            client = self.client,
            cnf_jkt = self.jkt.as_deref().unwrap_or(""),
            nonce = self.nonce,
            result,
            reason,
        );
    }
}

/// The granted scope: a subset of the registered scopes; all of them when none is asked.
fn granted_scope(client: &ClientSettings, requested: Option<&str>) -> Result<String, Denied> {
    let Some(requested) = requested else {
        return Ok(client.scopes.join(" "));
    };
    let mut granted = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !client.scopes.iter().any(|r| r == s) {
            return Err(Denied::InvalidScope(format!(
                "scope `{s}` is not registered for this client"
            )));
        }
        if !granted.contains(&s) {
            granted.push(s);
        }
    }
    Ok(granted.join(" "))
}

impl Core {
    /// Turns a gate refusal into the answer for a request that presented a proof
    /// (`with_access_token`: at `/fresh-auth` or a resource, where errors are 401).
    pub(super) fn gate_denial(
        &self,
        error: GateError,
        settings: &Settings,
        with_access_token: bool,
    ) -> Denied {
        let algs = settings.dpop.algs_header.clone();
        match error {
            GateError::Invalid(e) => Denied::InvalidDpopProof {
                description: e.to_string(),
                unauthorized: with_access_token,
                algs,
            },
            GateError::UseNonce { nonce, status } => Denied::UseDpopNonce {
                description: if status == NonceStatus::FenceRaised {
                    "the authority may have lost replay records: retry with this server nonce"
                } else {
                    "a fresh server nonce is required in the DPoP proof"
                },
                nonce,
                with_access_token,
                algs,
            },
            GateError::KeyMismatch => Denied::InvalidDpopProof {
                description: "the DPoP proof is signed by another key than the token is bound to"
                    .into(),
                unauthorized: true,
                algs,
            },
            GateError::Replayed => Denied::InvalidDpopProof {
                description: "this DPoP proof was already used".into(),
                unauthorized: true,
                algs,
            },
            GateError::Store(e) => self.unavailable(e),
        }
    }

    /// Issues a token to an authenticated client, or says why not.
    pub async fn issue(
        &self,
        settings: &Settings,
        request: &TokenRequest<'_>,
    ) -> Result<IssuedToken, Denied> {
        let client = request.client;
        let scope = match request.user {
            Some(user) => user.scope.clone(),
            None => granted_scope(client, request.scope)?,
        };
        let policy = client.policy;
        let now = self.clock.now();
        // `dpop.enabled: false`: proofs are ignored (the configuration refuses any policy
        // that would then need one).
        let proof_headers: &[&[u8]] = if settings.dpop.enabled {
            request.proof_headers
        } else {
            &[]
        };
        let dpop_involved = !proof_headers.is_empty() || policy.constraint.needs_dpop();
        let nonce_required = policy.require_nonce;
        let mut judgement = DpopJudgement {
            tenant: &client.tenant,
            client: &client.id,
            jkt: None,
            nonce: if nonce_required || self.fence_active() {
                "required"
            } else {
                "not-required"
            },
        };

        // --- DPoP: the gate --------------------------------------------------------------
        let mut proof: Option<ValidatedProof> = None;
        if !proof_headers.is_empty() {
            let check = ProofCheck {
                proof_headers,
                method: "POST",
                target: request.target,
                access_token: None,
                bound_jkt: request.user.and_then(|u| u.bound_jkt.as_deref()),
                nonce_required,
                now,
            };
            let presenter = Presenter {
                tenant: &client.tenant,
                client: &client.id,
                peer: request.peer,
                endpoint: "token",
            };
            match self.gate.admit(&settings.dpop, &check, &presenter).await {
                Ok(admitted) => {
                    judgement.jkt = Some(admitted.proof.jkt.clone());
                    judgement.nonce = admitted.nonce.as_str();
                    proof = Some(admitted.proof);
                }
                Err(error) => {
                    let reason = match &error {
                        GateError::Invalid(_) | GateError::KeyMismatch => "invalid-proof",
                        GateError::UseNonce { status, .. } => {
                            judgement.nonce = status.as_str();
                            "nonce"
                        }
                        GateError::Replayed => "replay",
                        GateError::Store(_) => "store",
                    };
                    judgement.log(self, "rejected", reason);
                    return Err(self.gate_denial(error, settings, false));
                }
            }
        }

        // --- Policy ------------------------------------------------------------------------
        // A certificate proves possession for this client when its chain verified against
        // the site CA, or when it is the self-signed certificate this client registered.
        let certificate = request.certificate.certificate().filter(|c| {
            c.chain_verified()
                || matches!(&client.auth, ClientAuth::Certificate(identity) if identity.matches(c))
        });
        let has_dpop = proof.is_some();
        let has_mtls = certificate.is_some();
        // A refresh token bound to a key, or a code bound by `dpop_jkt`, needs its proof:
        // the gate checked the key when one came; none may not come (RFC 9449 §5, §10).
        if !has_dpop
            && request
                .user
                .is_some_and(|u| u.bound_jkt.is_some() || u.require_proof)
        {
            judgement.log(self, "rejected", "missing-proof");
            return Err(Denied::InvalidDpopProof {
                description: "this grant is bound to a DPoP key: present a proof signed by it"
                    .into(),
                unauthorized: false,
                algs: settings.dpop.algs_header.clone(),
            });
        }
        let mut bypassed = false;
        if !policy.constraint.is_satisfied(has_dpop, has_mtls) {
            let dpop_would_satisfy = policy.constraint.is_satisfied(true, has_mtls);
            if !has_dpop && dpop_would_satisfy && self.bypass.lets_through_missing_proof(now) {
                bypassed = true;
            } else if !has_dpop && dpop_would_satisfy {
                // The plan's matrix: no proof where DPoP is required → 400 use_dpop_nonce.
                judgement.log(self, "rejected", "missing-proof");
                tracing::info!(
                    event = events::SENDER_CONSTRAINT,
                    tenant = %client.tenant, client = %client.id,
                    decision = "reject", reason = "dpop-proof-missing", required = %policy.constraint,
                );
                let nonce = self
                    .gate
                    .current_nonce(&settings.dpop, now)
                    .await
                    .map_err(|e| self.unavailable(e))?;
                return Err(Denied::UseDpopNonce {
                    description: "this client must present a DPoP proof",
                    nonce,
                    with_access_token: false,
                    algs: settings.dpop.algs_header.clone(),
                });
            } else {
                return Err(self.certificate_required(request, dpop_involved, &judgement));
            }
        }

        // --- Mint --------------------------------------------------------------------------
        // RFC 8705 §3: bind when the policy involves the certificate or the client
        // authenticated with it.
        let binds_certificate =
            has_mtls && (policy.constraint.mentions_mtls() || request.authenticated_by_certificate);
        let cnf = Confirmation {
            jkt: proof.as_ref().map(|p| p.jkt.clone()),
            x5t_s256: certificate
                .filter(|_| binds_certificate)
                .map(|c| c.thumbprint.clone()),
        };
        let token_type = if cnf.jkt.is_some() { "DPoP" } else { "Bearer" };
        let lifetime = settings.token_lifetime.as_secs();
        let claims = AccessTokenClaims {
            iss: settings.issuer.clone(),
            sub: request
                .user
                .map_or_else(|| client.id.clone(), |u| u.subject.clone()),
            aud: client.audience.clone(),
            client_id: client.id.clone(),
            scope,
            tenant: client.tenant.clone(),
            iat: now,
            exp: now + lifetime as i64,
            jti: crate::secret::token_id(),
            cnf: (!cnf.is_empty()).then(|| cnf.clone()),
        };
        let access_token = self.signing_key.mint(&claims).map_err(|e| {
            tracing::error!(error = %e, "token signing failed");
            Denied::Internal
        })?;
        let record = TokenRecord {
            client_id: claims.client_id.clone(),
            tenant: claims.tenant.clone(),
            scope: claims.scope.clone(),
            audience: claims.aud.clone(),
            iat: claims.iat,
            exp: claims.exp,
            jti: claims.jti.clone(),
            token_type: token_type.to_string(),
            cnf_jkt: cnf.jkt.clone(),
            sender_certificate: cnf.x5t_s256.clone(),
            revoked: false,
            subject: request.user.map(|u| u.subject.clone()),
            family: request.user.and_then(|u| u.family.clone()),
        };
        self.store()
            .put_token(TokenId::of(&access_token), &record)
            .await
            .map_err(|e| self.unavailable(e))?;

        if bypassed {
            tracing::warn!(
                event = events::DPOP_BYPASS,
                tenant = %client.tenant, client = %client.id,
                authority.dpop_result = "bypass",
                "token issued without a DPoP proof while a bypass drill is active; it carries no cnf"
            );
        }
        if dpop_involved {
            judgement.log(self, if bypassed { "bypass" } else { "accepted" }, "");
        }
        self.metrics
            .tokens_issued
            .get_or_create(&IssuedLabels {
                tenant: client.tenant.clone(),
                token_type,
            })
            .inc();
        tracing::info!(
            event = events::TOKEN_ISSUED,
            tenant = %client.tenant, client = %client.id, token_type,
            jti = %claims.jti,
            cnf_jkt = cnf.jkt.as_deref().unwrap_or(""),
            cnf_x5t = cnf.x5t_s256.as_deref().unwrap_or(""),
            exp = claims.exp,
        );
        let next_nonce = if policy.require_nonce {
            Some(
                self.gate
                    .current_nonce(&settings.dpop, now)
                    .await
                    .map_err(|e| self.unavailable(e))?,
            )
        } else {
            None
        };
        Ok(IssuedToken {
            access_token,
            token_type,
            expires_in: lifetime,
            scope: claims.scope,
            next_nonce,
            cnf_jkt: cnf.jkt,
            jti: claims.jti,
        })
    }

    /// The policy needs a client certificate and none usable came: absent, lost behind a
    /// proxy, or presented but neither chained to the site CA nor registered.
    fn certificate_required(
        &self,
        request: &TokenRequest<'_>,
        dpop_involved: bool,
        judgement: &DpopJudgement<'_>,
    ) -> Denied {
        let client = request.client;
        let (reason, description) = match request.certificate {
            RequestCertificate::ContextMissing => (
                "context-missing",
                "the proxy forwarded no client certificate".to_string(),
            ),
            RequestCertificate::Present(c) => (
                "untrusted-certificate",
                format!(
                    "the client certificate is not accepted: {}",
                    c.chain.clone().err().unwrap_or_default()
                ),
            ),
            RequestCertificate::Absent => (
                "missing-certificate",
                "this client must present a client certificate (mutual TLS)".to_string(),
            ),
        };
        if reason != "untrusted-certificate" {
            self.metrics
                .mtls_mismatch
                .get_or_create(&ReasonLabel { reason })
                .inc();
        }
        if dpop_involved {
            judgement.log(self, "rejected", reason);
        }
        tracing::info!(
            event = events::SENDER_CONSTRAINT,
            tenant = %client.tenant, client = %client.id,
            decision = "reject", reason, required = %client.policy.constraint,
        );
        Denied::CertificateRequired { description }
    }
}
