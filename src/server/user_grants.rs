//! The user grants at the edge: `POST /device_authorization` (RFC 8628 §3.1–3.2) and the
//! `device_code` and `refresh_token` grants at `/token` (RFC 8628 §3.4–3.5, RFC 6749 §6).
//!
//! Each handler parses, identifies the client, asks `crate::grants` for the decision and
//! `Core::issue` for the token (the one place a DPoP proof is admitted), and writes the
//! answer. A refresh token comes only with a DPoP-bound access token (RFC 9449 §5).

use super::authority::Authority;
use super::error::OAuthError;
use super::request::{authenticate_client, Form};
use super::response::{json_response, Response};
use super::ConnectionContext;
use crate::config::people::GrantType;
use crate::config::ClientSettings;
use crate::core::issue::{TokenRequest, UserGrant};
use crate::grants::device::PollError;
use crate::grants::refresh::{self, FamilyStart, RefreshError};
use crate::telemetry::events;
use crate::telemetry::metrics::GrantLabel;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;
use std::sync::Arc;

fn grant_error(code: &'static str, description: impl Into<String>) -> OAuthError {
    OAuthError::Grant {
        code,
        description: description.into(),
    }
}

/// Identifies the client of a request and checks that it may use `grant`.
fn client_for(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    form: &Form,
    grant: GrantType,
) -> Result<Arc<ClientSettings>, OAuthError> {
    let snapshot = authority.current();
    let certificate = super::request_certificate(&snapshot, connection, headers);
    let (client, _) = authenticate_client(
        &snapshot.settings,
        headers,
        form,
        &certificate,
        authority.metrics(),
        connection,
    )?;
    if !client.user_grants.allows(grant) {
        return Err(OAuthError::UnauthorizedClient(format!(
            "this client may not use {}",
            grant.as_str()
        )));
    }
    Ok(client)
}

/// The scope a user gets through `client`: their groups' scopes, narrowed to `requested`
/// when one is asked (RFC 8628 §3.1: `scope` is optional).
pub(super) fn user_scope(
    client: &ClientSettings,
    groups: &[String],
    requested: Option<&str>,
) -> Result<String, OAuthError> {
    let allowed = client.user_grants.scopes_for(groups);
    let Some(requested) = requested else {
        return Ok(allowed.join(" "));
    };
    let mut out: Vec<&str> = Vec::new();
    for s in requested.split(' ').filter(|s| !s.is_empty()) {
        if !client.scopes.iter().any(|c| c == s) {
            return Err(OAuthError::InvalidScope(format!(
                "scope `{s}` is not registered for this client"
            )));
        }
        if allowed.iter().any(|a| a == s) && !out.contains(&s) {
            out.push(s);
        }
    }
    Ok(out.join(" "))
}

/// `POST /device_authorization`.
pub async fn device_authorization(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, OAuthError> {
    let form = Form::parse(headers, body)?;
    let client = client_for(authority, connection, headers, &form, GrantType::DeviceCode)?;
    let snapshot = authority.current();
    let people = &snapshot.settings.people;
    if let Some(scope) = form.get("scope") {
        // Checked now so a device learns of a typo before a person signs in.
        user_scope(&client, &[], Some(scope))?;
    }
    let now = authority.core.clock.now();
    let started = authority
        .people
        .devices
        .start(
            &client.id,
            form.get("scope").map(str::to_string),
            people.device_code_lifetime.as_secs() as i64,
            people.device_poll_interval.as_secs() as i64,
            now,
        )
        .ok_or(OAuthError::TemporarilyUnavailable)?;
    tracing::info!(event = events::DEVICE_AUTHORIZATION, client = %client.id, peer = %connection.peer);
    let verification_uri = format!("{}/device", snapshot.settings.issuer);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "device_code": started.device_code,
            "user_code": started.user_code,
            "verification_uri": verification_uri,
            "verification_uri_complete": format!("{verification_uri}?user_code={}", started.user_code),
            "expires_in": started.expires_in,
            "interval": started.interval,
        }),
    ))
}

/// The `device_code` and `refresh_token` grants at `/token`.
pub async fn token(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    form: &Form,
    grant: &str,
) -> Result<Response, OAuthError> {
    let now = authority.core.clock.now();
    let store = authority.store().clone();
    let unavailable = |e| OAuthError::from(authority.core.unavailable(e));
    if grant == "refresh_token" {
        let client = client_for(
            authority,
            connection,
            headers,
            form,
            GrantType::RefreshToken,
        )?;
        let token = form
            .get("refresh_token")
            .ok_or_else(|| OAuthError::InvalidRequest("refresh_token is required".into()))?;
        let presented = match refresh::look_up(store.as_ref(), token, &client.id, now).await {
            Ok(p) => p,
            Err(e) => return Err(refresh_refused(authority, e).await),
        };
        // RFC 6749 §6: a narrower scope may be asked; never a wider one.
        let scope = match form.get("scope") {
            None => presented.record.scope.clone(),
            Some(asked) => {
                let had: Vec<&str> = presented.record.scope.split(' ').collect();
                if let Some(s) = asked.split(' ').find(|s| !s.is_empty() && !had.contains(s)) {
                    return Err(OAuthError::InvalidScope(format!(
                        "scope `{s}` was not granted to this sign-in"
                    )));
                }
                asked.to_string()
            }
        };
        let user = UserGrant {
            subject: presented.record.subject.clone().unwrap_or_default(),
            scope,
            family: presented.record.family.clone(),
            bound_jkt: presented.record.cnf_jkt.clone(),
            require_proof: true,
        };
        // The proof (by the bound key) is admitted before the token is consumed: a
        // request with a wrong or replayed proof does not burn the refresh token.
        let issued = issue(authority, connection, headers, &client, &user).await?;
        if let Err(e) = refresh::consume(store.as_ref(), &presented, now).await {
            // Lost a race with another use of the same token: that is a reuse too; the
            // access token just minted dies with the family.
            return Err(refresh_refused(authority, e).await);
        }
        let idle = client.user_grants.refresh_idle.as_secs() as i64;
        let (refresh_token, _) = refresh::mint(store.as_ref(), &presented.family, idle, now)
            .await
            .map_err(unavailable)?;
        return Ok(answer(
            authority,
            issued,
            Some(refresh_token),
            "refresh_token",
        ));
    }

    if grant == "authorization_code" {
        let client = client_for(
            authority,
            connection,
            headers,
            form,
            GrantType::AuthorizationCode,
        )?;
        let required = |name: &str| {
            form.get(name)
                .ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
        };
        let code = required("code")?;
        let verifier = required("code_verifier")?;
        let granted = authority
            .people
            .codes
            .exchange(code, &client.id, form.get("redirect_uri"), verifier, now)
            .map_err(|e| grant_error("invalid_grant", e.description()))?;
        return finish(
            authority,
            connection,
            headers,
            &client,
            granted.user,
            granted.scope,
            granted.dpop_jkt,
            "authorization_code",
        )
        .await;
    }

    // urn:ietf:params:oauth:grant-type:device_code
    let client = client_for(authority, connection, headers, form, GrantType::DeviceCode)?;
    let device_code = form
        .get("device_code")
        .ok_or_else(|| OAuthError::InvalidRequest("device_code is required".into()))?;
    let (subject, scope) = authority
        .people
        .devices
        .poll(device_code, &client.id, now)
        .map_err(|e: PollError| {
            grant_error(
                e.code(),
                match e {
                    PollError::Invalid => "unknown or used device code",
                    PollError::Pending => "the user has not yet approved this request",
                    PollError::SlowDown => "polling too fast: wait 5 more seconds between polls",
                    PollError::Expired => "the device code expired; start again",
                    PollError::Denied => "the user denied this request",
                },
            )
        })?;
    finish(
        authority,
        connection,
        headers,
        &client,
        subject,
        scope,
        None,
        "device_code",
    )
    .await
}

/// Issues the tokens of a decided user grant: the access token through the core (the
/// proof, by `bound_jkt` when the code was bound with `dpop_jkt`), and — when the client
/// may refresh and the token is DPoP-bound — a new refresh family bound to the same key.
#[allow(clippy::too_many_arguments)]
async fn finish(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    client: &ClientSettings,
    subject: String,
    scope: String,
    bound_jkt: Option<String>,
    grant: &'static str,
) -> Result<Response, OAuthError> {
    let now = authority.core.clock.now();
    let store = authority.store().clone();
    let unavailable = |e| OAuthError::from(authority.core.unavailable(e));
    let refresh_allowed = client.user_grants.allows(GrantType::RefreshToken);
    // The family id is reserved before the access token is minted so its record names
    // the family; the family itself is filed once the gate has admitted the proof's key.
    // (With `dpop.enabled: false` proofs are ignored, so no token is bound: no family.)
    let family_id = (refresh_allowed
        && headers.contains_key("dpop")
        && authority.current().settings.dpop.enabled)
        .then(crate::secret::token_id);
    let user = UserGrant {
        subject: subject.clone(),
        scope,
        family: family_id.clone(),
        require_proof: bound_jkt.is_some(),
        bound_jkt,
    };
    let issued = issue(authority, connection, headers, client, &user).await?;
    let mut refresh_token = None;
    if let (Some(family_id), Some(jkt)) = (family_id, issued.cnf_jkt.clone()) {
        let absolute_end = now + client.user_grants.refresh_absolute.as_secs() as i64;
        let record = refresh::family_record(
            &FamilyStart {
                client_id: &client.id,
                tenant: &client.tenant,
                subject: &subject,
                scope: &issued.scope,
                audience: &client.audience,
                jkt: &jkt,
                absolute_end,
            },
            &family_id,
            now,
        );
        refresh::file_family(store.as_ref(), &record)
            .await
            .map_err(unavailable)?;
        let idle = client.user_grants.refresh_idle.as_secs() as i64;
        let (token, _) = refresh::mint(store.as_ref(), &record, idle, now)
            .await
            .map_err(unavailable)?;
        refresh_token = Some(token);
    }
    Ok(answer(authority, issued, refresh_token, grant))
}

/// Issues the access token of a user grant through the core (proof, policy, `cnf`).
async fn issue(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    client: &ClientSettings,
    user: &UserGrant,
) -> Result<crate::core::issue::IssuedToken, OAuthError> {
    let snapshot = authority.current();
    let certificate = super::request_certificate(&snapshot, connection, headers);
    let proof_headers: Vec<&[u8]> = headers
        .get_all("dpop")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    Ok(authority
        .core
        .issue(
            &snapshot.settings,
            &TokenRequest {
                client,
                authenticated_by_certificate: false,
                scope: None,
                proof_headers: &proof_headers,
                certificate: &certificate,
                target: &snapshot.token_url,
                peer: connection.peer,
                user: Some(user),
            },
        )
        .await?)
}

/// A refresh refused: `invalid_grant`; on reuse the family is revoked first (counted,
/// audited).
async fn refresh_refused(authority: &Authority, error: RefreshError) -> OAuthError {
    match error {
        RefreshError::Invalid(why) => grant_error("invalid_grant", why),
        RefreshError::Store(e) => authority.core.unavailable(e).into(),
        RefreshError::Reused {
            family,
            client,
            subject,
        } => {
            if let Err(e) = refresh::revoke_family(authority.store().as_ref(), &family).await {
                return authority.core.unavailable(e).into();
            }
            authority.metrics().refresh_reuse.inc();
            tracing::warn!(
                event = events::REFRESH_REUSE,
                client = %client, user = %subject, family = %family,
                "a refresh token was used twice: its family (refresh and access tokens) is revoked"
            );
            grant_error(
                "invalid_grant",
                "this refresh token was already used; the sign-in is revoked",
            )
        }
    }
}

fn answer(
    authority: &Authority,
    issued: crate::core::issue::IssuedToken,
    refresh_token: Option<String>,
    grant: &'static str,
) -> Response {
    authority
        .metrics()
        .user_grants
        .get_or_create(&GrantLabel { grant })
        .inc();
    let mut body = json!({
        "access_token": issued.access_token,
        "token_type": issued.token_type,
        "expires_in": issued.expires_in,
    });
    if !issued.scope.is_empty() {
        body["scope"] = json!(issued.scope);
    }
    if let Some(r) = refresh_token {
        body["refresh_token"] = json!(r);
    }
    let mut response = json_response(StatusCode::OK, &body);
    if let Some(nonce) = issued
        .next_nonce
        .and_then(|n| HeaderValue::from_str(&n).ok())
    {
        response.headers_mut().insert("dpop-nonce", nonce);
    }
    response
}
