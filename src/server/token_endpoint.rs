//! `POST /token`, grant `client_credentials` (RFC 6749 §4.4), with the sender constraints
//! of the client's policy: DPoP (RFC 9449) and certificate binding (RFC 8705).
//!
//! The order is deliberate: authenticate the client (cheap, no crypto), validate a proof if
//! one was sent (a present proof is always fully validated, bypass or not), check the nonce,
//! *then* claim the jti, so a request refused earlier never burns its jti.

use super::authority::Authority;
use super::error::OAuthError;
use super::request::{authenticate_client, Form};
use super::response::{json_bytes, Response};
use super::ConnectionContext;
use crate::dpop::{validate_proof, RequestFacts, ValidatedProof};
use crate::store::{Claim, TokenId, TokenRecord};
use crate::telemetry::events;
use crate::telemetry::metrics::{IssuedLabels, ReasonLabel, ResultLabel};
use crate::token::{AccessTokenClaims, Confirmation};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::Serialize;

#[derive(Serialize)]
struct TokenResponse<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    #[serde(skip_serializing_if = "str::is_empty")]
    scope: &'a str,
}

/// Outcome labels for `authority.dpop.request`.
struct Judgement<'a> {
    tenant: &'a str,
    client: &'a str,
    jkt: Option<String>,
    nonce_status: &'static str,
}

fn log_dpop(j: &Judgement<'_>, result: &'static str, reason: &str) {
    tracing::info!(
        event = events::DPOP_REQUEST,
        tenant = j.tenant,
        client = j.client,
        cnf_jkt = j.jkt.as_deref().unwrap_or(""),
        nonce = j.nonce_status,
        result,
        reason,
    );
}

pub async fn handle(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let snapshot = authority.current();
    let settings = &snapshot.settings;
    let form = Form::parse(headers, body)?;
    match form.get("grant_type") {
        Some("client_credentials") => {}
        Some(_) => return Err(OAuthError::UnsupportedGrantType),
        None => return Err(OAuthError::InvalidRequest("grant_type is required".into())),
    }
    let request_cert = super::request_certificate(&snapshot, connection, headers);
    let (client, method) =
        authenticate_client(settings, headers, &form, &request_cert, &authority.metrics)?;

    // Scope: a subset of the registered scopes; all of them when none is asked for.
    let scope = match form.get("scope") {
        None => client.scopes.join(" "),
        Some(requested) => {
            let mut granted = Vec::new();
            for s in requested.split(' ').filter(|s| !s.is_empty()) {
                if !client.scopes.iter().any(|r| r == s) {
                    return Err(OAuthError::InvalidScope(format!(
                        "scope `{s}` is not registered for this client"
                    )));
                }
                if !granted.contains(&s) {
                    granted.push(s);
                }
            }
            granted.join(" ")
        }
    };

    let policy = client.policy;
    let now = authority.clock.now();
    let proof_headers: Vec<&[u8]> = headers
        .get_all("dpop")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let dpop_involved = !proof_headers.is_empty() || policy.constraint.needs_dpop();
    let nonce_required = policy.require_nonce || authority.fence_active();
    let mut judgement = Judgement {
        tenant: &client.tenant,
        client: &client.id,
        jkt: None,
        nonce_status: if nonce_required {
            "required"
        } else {
            "not-required"
        },
    };
    let rejected = |j: &Judgement<'_>, reason: &str| {
        authority
            .metrics
            .dpop_requests
            .get_or_create(&ResultLabel { result: "rejected" })
            .inc();
        log_dpop(j, "rejected", reason);
    };

    // --- DPoP ---------------------------------------------------------------------------
    let mut proof: Option<ValidatedProof> = None;
    if !proof_headers.is_empty() {
        let facts = RequestFacts {
            method: "POST",
            target: &snapshot.token_url,
            now,
            access_token: None,
        };
        let validated =
            match validate_proof(&proof_headers, &facts, &settings.dpop, &authority.keys) {
                Ok(p) => p,
                Err(e) => {
                    rejected(&judgement, "invalid-proof");
                    return Err(OAuthError::InvalidDpopProof {
                        description: e.to_string(),
                        unauthorized: false,
                        algs: settings.dpop.algs_header.clone(),
                    });
                }
            };
        judgement.jkt = Some(validated.jkt.clone());
        // §4.3 (10): the nonce, when the server requires one (or the proof carries one).
        if nonce_required || validated.nonce.is_some() {
            let valid = match &validated.nonce {
                Some(n) => authority
                    .store
                    .nonce_is_valid(n, now)
                    .await
                    .map_err(|e| authority.store_failure(e))?,
                None => false,
            };
            if !valid {
                authority.metrics.dpop_nonce_miss.inc();
                judgement.nonce_status = if validated.nonce.is_some() {
                    "invalid"
                } else {
                    "missing"
                };
                rejected(&judgement, "nonce");
                let nonce = authority
                    .current_nonce()
                    .await
                    .map_err(|e| authority.store_failure(e))?;
                return Err(OAuthError::UseDpopNonce {
                    description: "a fresh server nonce is required in the DPoP proof".into(),
                    nonce,
                });
            }
            judgement.nonce_status = "valid";
        }
        // §4.3 (12): the jti has not been seen within the window; claimed atomically.
        let expires_at = now + settings.dpop.replay_window.as_secs() as i64;
        match authority
            .store
            .claim_jti(&validated.jkt, &validated.jti, expires_at, now)
            .await
            .map_err(|e| authority.store_failure(e))?
        {
            Claim::Fresh => {}
            Claim::Replayed => {
                authority.metrics.dpop_replay.inc();
                rejected(&judgement, "replay");
                // The audit entry: who replayed, with which key; the jti is hashed so the
                // log does not carry a reusable proof identifier.
                tracing::warn!(
                    event = events::DPOP_REPLAY,
                    tenant = %client.tenant,
                    client = %client.id,
                    cnf_jkt = %validated.jkt,
                    jti_sha256 = %crate::dpop::access_token_hash(&validated.jti),
                    iat = validated.iat,
                    peer = %connection.peer,
                    "DPoP proof replayed within the replay window"
                );
                return Err(OAuthError::InvalidDpopProof {
                    description: "this DPoP proof was already used".into(),
                    unauthorized: true,
                    algs: settings.dpop.algs_header.clone(),
                });
            }
        }
        proof = Some(validated);
    }

    // --- Policy -----------------------------------------------------------------------------
    // A certificate proves possession for this client when its chain verified against the
    // site CA, or when it is the self-signed certificate this client registered.
    let certificate = request_cert.certificate().filter(|c| {
        c.chain_verified()
            || matches!(&client.auth, crate::config::ClientAuth::Certificate(identity) if identity.matches(c))
    });
    let has_dpop = proof.is_some();
    let has_mtls = certificate.is_some();
    let mut bypassed = false;
    if !policy.constraint.is_satisfied(has_dpop, has_mtls) {
        let dpop_would_satisfy = policy.constraint.is_satisfied(true, has_mtls);
        let bypass = authority.active_bypass();
        if !has_dpop && dpop_would_satisfy && bypass.is_some() {
            bypassed = true;
        } else if !has_dpop && dpop_would_satisfy {
            // The plan's matrix: no proof where DPoP is required → 400 use_dpop_nonce + a nonce.
            rejected(&judgement, "missing-proof");
            tracing::info!(
                event = events::SENDER_CONSTRAINT,
                tenant = %client.tenant, client = %client.id,
                decision = "reject", reason = "dpop-proof-missing", required = %policy.constraint,
            );
            let nonce = authority
                .current_nonce()
                .await
                .map_err(|e| authority.store_failure(e))?;
            return Err(OAuthError::UseDpopNonce {
                description: "this client must present a DPoP proof".into(),
                nonce,
            });
        } else {
            // No usable certificate: absent, lost behind a proxy, or presented but neither
            // chained to the site CA (expired, revoked, unknown issuer) nor registered.
            let (reason, description) = match (&request_cert, request_cert.certificate()) {
                (super::RequestCertificate::ContextMissing, _) => (
                    "context-missing",
                    "the proxy forwarded no client certificate".to_string(),
                ),
                (_, Some(c)) => (
                    "untrusted-certificate",
                    format!(
                        "the client certificate is not accepted: {}",
                        c.chain.clone().err().unwrap_or_default()
                    ),
                ),
                _ => (
                    "missing-certificate",
                    "this client must present a client certificate (mutual TLS)".to_string(),
                ),
            };
            if reason != "untrusted-certificate" {
                authority
                    .metrics
                    .mtls_mismatch
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
            }
            if dpop_involved {
                rejected(&judgement, reason);
            }
            tracing::info!(
                event = events::SENDER_CONSTRAINT,
                tenant = %client.tenant, client = %client.id,
                decision = "reject", reason, required = %policy.constraint,
            );
            return Err(OAuthError::InvalidClient {
                description,
                basic_challenge: false,
            });
        }
    }

    // --- Mint ---------------------------------------------------------------------------------
    // RFC 8705 §3: bind when the policy involves the certificate or the client
    // authenticated with it.
    let binds_certificate = has_mtls
        && (policy.constraint.mentions_mtls() || method == super::request::AuthMethod::Certificate);
    let cnf = Confirmation {
        jkt: proof.as_ref().map(|p| p.jkt.clone()),
        x5t_s256: if binds_certificate {
            certificate.map(|c| c.thumbprint.clone())
        } else {
            None
        },
    };
    let token_type = if cnf.jkt.is_some() { "DPoP" } else { "Bearer" };
    let lifetime = settings.token_lifetime.as_secs();
    let claims = AccessTokenClaims {
        iss: settings.issuer.clone(),
        sub: client.id.clone(),
        aud: client.audience.clone(),
        client_id: client.id.clone(),
        scope,
        tenant: client.tenant.clone(),
        iat: now,
        exp: now + lifetime as i64,
        jti: crate::secret::token_id(),
        cnf: if cnf.is_empty() {
            None
        } else {
            Some(cnf.clone())
        },
    };
    let access_token = authority.signing_key.mint(&claims).map_err(|e| {
        tracing::error!(error = %e, "token signing failed");
        OAuthError::TemporarilyUnavailable
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
    };
    authority
        .store
        .put_token(TokenId::of(&access_token), &record)
        .await
        .map_err(|e| authority.store_failure(e))?;

    let result = if bypassed { "bypass" } else { "accepted" };
    if bypassed {
        tracing::warn!(
            event = events::DPOP_BYPASS,
            tenant = %client.tenant, client = %client.id,
            authority.dpop_result = "bypass",
            "token issued without a DPoP proof while a bypass drill is active; it carries no cnf"
        );
    }
    if dpop_involved {
        authority
            .metrics
            .dpop_requests
            .get_or_create(&ResultLabel { result })
            .inc();
        log_dpop(&judgement, result, "");
    }
    authority
        .metrics
        .tokens_issued
        .get_or_create(&IssuedLabels {
            tenant: client.tenant.clone(),
            token_type,
        })
        .inc();
    tracing::info!(
        event = events::TOKEN_ISSUED,
        tenant = %client.tenant, client = %client.id, token_type,
        cnf_jkt = cnf.jkt.as_deref().unwrap_or(""),
        cnf_x5t = cnf.x5t_s256.as_deref().unwrap_or(""),
        exp = claims.exp,
    );

    let body = serde_json::to_vec(&TokenResponse {
        access_token: &access_token,
        token_type,
        expires_in: lifetime,
        scope: &claims.scope,
    })
    .unwrap_or_default();
    let mut response = json_bytes(StatusCode::OK, body);
    if policy.require_nonce {
        let nonce = authority
            .current_nonce()
            .await
            .map_err(|e| authority.store_failure(e))?;
        if let Ok(value) = HeaderValue::from_str(&nonce) {
            response.headers_mut().insert("dpop-nonce", value);
        }
    }
    Ok(response)
}
