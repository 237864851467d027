//! `POST /token`: parse the form, authenticate the client, hand the rest to the core
//! ([`crate::core::issue`]), and write its answer (RFC 6749 §5.1, RFC 9449 §5).

use super::authority::Authority;
use super::error::OAuthError;
use super::request::{authenticate_client, AuthMethod, Form};
use super::response::{json_bytes, Response};
use super::ConnectionContext;
use crate::core::issue::TokenRequest;
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
        Some(
            grant @ ("urn:ietf:params:oauth:grant-type:device_code"
            | "refresh_token"
            | "authorization_code"),
        ) => return super::user_grants::token(authority, connection, headers, &form, grant).await,
        Some(other) => {
            return Err(refused(
                authority,
                connection,
                OAuthError::UnsupportedGrantType,
                other,
                None,
            ))
        }
        None => return Err(OAuthError::InvalidRequest("grant_type is required".into())),
    }
    let certificate = super::request_certificate(&snapshot, connection, headers);
    let (client, method) = authenticate_client(
        settings,
        headers,
        &form,
        &certificate,
        authority.metrics(),
        connection,
    )?;
    if !client
        .user_grants
        .allows(crate::config::people::GrantType::ClientCredentials)
    {
        return Err(OAuthError::UnauthorizedClient(
            "this client may not use client_credentials".into(),
        ));
    }
    let proof_headers: Vec<&[u8]> = headers
        .get_all("dpop")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let issued = authority
        .core
        .issue(
            settings,
            &TokenRequest {
                client: &client,
                authenticated_by_certificate: method == AuthMethod::Certificate,
                scope: form.get("scope"),
                proof_headers: &proof_headers,
                certificate: &certificate,
                target: &snapshot.token_url,
                peer: connection.peer,
                user: None,
            },
        )
        .await
        .map_err(|e| match OAuthError::from(e) {
            e @ OAuthError::InvalidScope(_) => {
                let grant = form.get("grant_type").unwrap_or("");
                refused(authority, connection, e, grant, Some(&client.id))
            }
            other => other,
        })?;
    let body = serde_json::to_vec(&TokenResponse {
        access_token: &issued.access_token,
        token_type: issued.token_type,
        expires_in: issued.expires_in,
        scope: &issued.scope,
    })
    .map_err(|e| {
        tracing::error!(error = %e, "cannot serialise a token response");
        OAuthError::ServerError
    })?;
    let mut response = json_bytes(StatusCode::OK, body);
    if let Some(nonce) = issued
        .next_nonce
        .and_then(|n| HeaderValue::from_str(&n).ok())
    {
        response.headers_mut().insert("dpop-nonce", nonce);
    }
    Ok(response)
}

/// Logs (`authority.token.refused`) and counts (`authority_token_requests_refused_total`)
/// a refusal worth auditing: `unsupported_grant_type`, `invalid_scope`.
fn refused(
    authority: &Authority,
    connection: &ConnectionContext,
    error: OAuthError,
    grant_type: &str,
    client: Option<&str>,
) -> OAuthError {
    let code: &'static str = match &error {
        OAuthError::UnsupportedGrantType => "unsupported_grant_type",
        OAuthError::InvalidScope(_) => "invalid_scope",
        _ => return error,
    };
    authority
        .metrics()
        .token_requests_refused
        .get_or_create(&crate::telemetry::metrics::ErrorLabel { error: code })
        .inc();
    // The grant type is the caller's text: at most 64 characters of it.
    let grant_type: String = grant_type.chars().take(64).collect();
    tracing::info!(
        event = crate::telemetry::events::REQUEST_REFUSED,
        error = code,
        grant_type = %grant_type,
        client = client.unwrap_or(""),
        peer = %connection.peer,
        detail = %error_detail(&error),
    );
    error
}

fn error_detail(error: &OAuthError) -> &str {
    match error {
        OAuthError::InvalidScope(d) => d,
        _ => "",
    }
}
