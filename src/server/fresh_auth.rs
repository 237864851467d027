//! `POST /fresh-auth`: before a sensitive operation, a client re-proves possession of what
//! its access token is bound to; the answer says until when its authentication counts as
//! fresh (`security.freshAuth.window`).
//!
//! A DPoP-bound token comes as `Authorization: DPoP <token>` with a proof carrying `ath`,
//! signed by the token's `cnf.jkt` key (RFC 9449 §7). A certificate-bound token comes over
//! the very certificate it is bound to (RFC 8705 §3): another certificate is a
//! `thumbprint-mismatch`, none a `missing-certificate`, a proxy that lost it a
//! `context-missing`. A token bound to nothing proves nothing and is refused.

use super::authority::Authority;
use super::error::OAuthError;
use super::response::{json_response, Response};
use super::{request_certificate, ConnectionContext, RequestCertificate};
use crate::dpop::{validate_proof, EndpointUrl, RequestFacts};
use crate::store::{Claim, TokenId};
use crate::telemetry::events;
use crate::telemetry::metrics::ReasonLabel;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

fn invalid_token(scheme: &'static str, description: &str) -> OAuthError {
    OAuthError::InvalidToken {
        description: description.to_string(),
        scheme,
    }
}

pub async fn handle(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    _body: &[u8],
) -> Result<Response, OAuthError> {
    let snapshot = authority.current();
    let settings = &snapshot.settings;
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid_token("Bearer", "an access token is required"))?;
    let (scheme, token) = authorization
        .split_once(' ')
        .ok_or_else(|| invalid_token("Bearer", "malformed Authorization header"))?;
    let scheme = if scheme.eq_ignore_ascii_case("dpop") {
        "DPoP"
    } else if scheme.eq_ignore_ascii_case("bearer") {
        "Bearer"
    } else {
        return Err(invalid_token("Bearer", "use the DPoP or Bearer scheme"));
    };
    let token = token.trim();
    let now = authority.clock.now();
    let claims = authority
        .signing_key
        .verify(token)
        .ok_or_else(|| invalid_token(scheme, "the access token is not valid"))?;
    let record = authority
        .store
        .get_token(TokenId::of(token))
        .await
        .map_err(|e| authority.store_failure(e))?
        .filter(|r| !r.revoked && r.exp > now)
        .ok_or_else(|| invalid_token(scheme, "the access token is not active"))?;

    let mismatch = |reason: &'static str, description: &str| {
        authority
            .metrics
            .mtls_mismatch
            .get_or_create(&ReasonLabel { reason })
            .inc();
        tracing::warn!(
            event = events::SENDER_CONSTRAINT, endpoint = "fresh-auth", client = %record.client_id,
            tenant = %record.tenant, decision = "reject", reason,
        );
        invalid_token(scheme, description)
    };

    // The certificate binding (RFC 8705 §3).
    if let Some(bound) = &record.sender_certificate {
        match request_certificate(&snapshot, connection, headers) {
            RequestCertificate::Present(c) if c.thumbprint == *bound => {}
            RequestCertificate::Present(_) => {
                return Err(mismatch(
                    "thumbprint-mismatch",
                    "the token is bound to another client certificate",
                ))
            }
            RequestCertificate::Absent => {
                return Err(mismatch(
                    "missing-certificate",
                    "the token is bound to a client certificate; present it",
                ))
            }
            RequestCertificate::ContextMissing => {
                return Err(mismatch(
                    "context-missing",
                    "the client certificate was lost before reaching the authority",
                ))
            }
        }
    }

    // The DPoP binding (RFC 9449 §7).
    if let Some(jkt) = &record.cnf_jkt {
        if scheme != "DPoP" {
            return Err(invalid_token(
                "DPoP",
                "a DPoP-bound token must be presented with the DPoP scheme",
            ));
        }
        let proof_headers: Vec<&[u8]> = headers
            .get_all("dpop")
            .iter()
            .map(HeaderValue::as_bytes)
            .collect();
        let target = EndpointUrl::parse(&format!("{}/fresh-auth", settings.issuer))
            .ok_or(OAuthError::NotFound)?;
        let facts = RequestFacts {
            method: "POST",
            target: &target,
            now,
            access_token: Some(token),
        };
        let invalid_proof = |description: String| OAuthError::InvalidDpopProof {
            description,
            unauthorized: true,
            algs: settings.dpop.algs_header.clone(),
        };
        let proof = validate_proof(&proof_headers, &facts, &settings.dpop, &authority.keys)
            .map_err(|e| invalid_proof(e.to_string()))?;
        if proof.jkt != *jkt {
            return Err(invalid_proof(
                "the DPoP proof is signed by another key than the token is bound to".into(),
            ));
        }
        let expires_at = now + settings.dpop.replay_window.as_secs() as i64;
        if authority
            .store
            .claim_jti(&proof.jkt, &proof.jti, expires_at, now)
            .await
            .map_err(|e| authority.store_failure(e))?
            == Claim::Replayed
        {
            authority.metrics.dpop_replay.inc();
            tracing::warn!(event = events::DPOP_REPLAY, endpoint = "fresh-auth", client = %record.client_id, cnf_jkt = %proof.jkt);
            return Err(invalid_proof("this DPoP proof was already used".into()));
        }
    } else if scheme == "DPoP" {
        return Err(invalid_token("Bearer", "the token is not DPoP-bound"));
    }

    if record.cnf_jkt.is_none() && record.sender_certificate.is_none() {
        return Err(invalid_token(
            scheme,
            "the token is not sender-constrained, so it cannot prove a fresh authentication",
        ));
    }
    let fresh_until = now + settings.fresh_auth_window.as_secs() as i64;
    tracing::info!(
        event = events::FRESH_AUTH, client = %record.client_id, tenant = %record.tenant, fresh_until,
    );
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "fresh_until": fresh_until,
            "client_id": record.client_id,
            "sub": claims.sub,
            "tenant": record.tenant,
            "cnf": record.confirmation(),
        }),
    ))
}
