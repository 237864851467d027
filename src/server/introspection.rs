//! `POST /introspect` (RFC 7662, with RFC 9449 §6.2 and RFC 8705 `cnf`) and
//! `POST /revoke` (RFC 7009).
//!
//! A token is active only if this authority signed it, its record is known, it is not
//! revoked and not expired. Anything else is `{"active": false}` and nothing more.

use super::authority::Authority;
use super::error::OAuthError;
use super::request::{authenticate_client, Form};
use super::response::{json_response, Response};
use super::{request_certificate, ConnectionContext};
use crate::store::TokenId;
use crate::telemetry::events;
use crate::telemetry::metrics::ReasonLabel;
use http::{HeaderMap, StatusCode};
use serde_json::json;

fn inactive() -> Response {
    json_response(StatusCode::OK, &json!({"active": false}))
}

/// Parses the form and authenticates the calling client, as both endpoints require.
fn authenticated_form(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Form, std::sync::Arc<crate::config::ClientSettings>), OAuthError> {
    let form = Form::parse(headers, body)?;
    let snapshot = authority.current();
    let certificate = request_certificate(&snapshot, connection, headers);
    let (caller, _) = authenticate_client(
        &snapshot.settings,
        headers,
        &form,
        &certificate,
        authority.metrics(),
        connection,
    )?;
    Ok((form, caller))
}

pub async fn introspect(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let (form, caller) = authenticated_form(authority, connection, headers, body)?;
    if !caller.may_introspect {
        return Err(OAuthError::UnauthorizedClient(
            "this client may not introspect tokens".into(),
        ));
    }
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
    // The record first: a token this authority never recorded is inactive without the
    // cost of a signature verification (a flood of made-up tokens stays cheap).
    let id = TokenId::of(token);
    let core = &authority.core;
    let record = match core.store().get_token(id).await {
        Ok(Some(record)) => record,
        Ok(None) => return Ok(inactive()),
        Err(e) => return Err(core.unavailable(e).into()),
    };
    let now = core.clock.now();
    if record.revoked || record.exp <= now {
        return Ok(inactive());
    }
    // A user-grant token dies with its refresh family (reuse, revocation, absolute end).
    if let Some(family) = &record.family {
        match crate::grants::refresh::live_family(core.store().as_ref(), family, now).await {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(inactive()),
            Err(e) => return Err(core.unavailable(e).into()),
        }
    }
    // A refresh token is opaque: its record (filed by the token's hash) is all there is.
    if record.token_type == crate::grants::refresh::REFRESH_TYPE {
        let mut body = json!({
            "active": true,
            "scope": record.scope,
            "client_id": record.client_id,
            "sub": record.subject,
            "exp": record.exp,
            "iat": record.iat,
            "token_type": "refresh_token",
            "tenant": record.tenant,
        });
        if let Some(jkt) = &record.cnf_jkt {
            body["cnf"] = json!({"jkt": jkt});
        }
        return Ok(json_response(StatusCode::OK, &body));
    }
    if record.token_type == crate::grants::refresh::FAMILY_TYPE {
        return Ok(inactive());
    }
    let Some(claims) = core.signing_key.verify_remembered(token) else {
        return Ok(inactive());
    };
    // sealkit extension (RFC 8705 §3 for resource servers that see the certificate
    // themselves): the caller passes the thumbprint it saw; a mismatch is inactive.
    if let Some(seen) = form.get("cnf_x5t_s256") {
        if record.sender_certificate.as_deref() != Some(seen) {
            core.metrics
                .mtls_mismatch
                .get_or_create(&ReasonLabel {
                    reason: "thumbprint-mismatch",
                })
                .inc();
            tracing::warn!(
                event = events::SENDER_CONSTRAINT,
                client = %record.client_id, decision = "inactive", reason = "thumbprint-mismatch",
                caller = %caller.id,
            );
            return Ok(inactive());
        }
    }
    let mut body = json!({
        "active": true,
        "scope": record.scope,
        "client_id": record.client_id,
        "sub": claims.sub,
        "aud": record.audience,
        "iss": claims.iss,
        "exp": record.exp,
        "iat": record.iat,
        "jti": record.jti,
        "tenant": record.tenant,
        "token_type": record.token_type,
    });
    let cnf = crate::token::Confirmation::of_record(&record);
    if !cnf.is_empty() {
        body["cnf"] = json!(cnf);
    }
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn revoke(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let (form, caller) = authenticated_form(authority, connection, headers, body)?;
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::InvalidRequest("token is required".into()))?;
    let id = TokenId::of(token);
    let core = &authority.core;
    let fail = |e| OAuthError::from(core.unavailable(e));
    // RFC 7009 §2.1: only the client the token was issued to may revoke it; another
    // client's request is refused (it holds the token, so the refusal reveals nothing it
    // did not know). An unknown token gets 200: it is as revoked as it will ever be.
    match core.store().get_token(id).await.map_err(fail)? {
        Some(record) if record.client_id == caller.id && !record.revoked => {
            core.store().revoke_token(id).await.map_err(fail)?;
            // Revoking a refresh token ends its sign-in: the family and every token in it.
            if record.token_type == crate::grants::refresh::REFRESH_TYPE {
                if let Some(family) = &record.family {
                    crate::grants::refresh::revoke_family(core.store().as_ref(), family)
                        .await
                        .map_err(fail)?;
                }
            }
            tracing::info!(
                event = events::TOKEN_REVOKED,
                client = %record.client_id, tenant = %record.tenant, token_jti = %record.jti,
            );
        }
        Some(record) if record.client_id == caller.id => {} // already revoked
        Some(record) => {
            tracing::warn!(
                event = events::TOKEN_REVOKED,
                decision = "refused", reason = "not-the-owner",
                caller = %caller.id, owner = %record.client_id,
            );
            return Err(OAuthError::UnauthorizedClient(
                "this token was not issued to this client".into(),
            ));
        }
        None => {}
    }
    Ok(json_response(StatusCode::OK, &json!({})))
}
