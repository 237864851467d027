//! `POST /fresh-auth`: read the presented token, its proof and certificate, and let the
//! core judge them ([`crate::core::fresh_auth`]): the same gate as `/token`.

use super::authority::Authority;
use super::error::OAuthError;
use super::response::{json_response, Response};
use super::{request_certificate, ConnectionContext};
use crate::core::fresh_auth::{FreshAuthRequest, Scheme};
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::json;

fn invalid_token(description: &str) -> OAuthError {
    OAuthError::InvalidToken {
        description: description.to_string(),
        scheme: "Bearer",
    }
}

pub async fn handle(
    authority: &Authority,
    connection: &ConnectionContext,
    headers: &HeaderMap,
    _body: &[u8],
) -> Result<Response, OAuthError> {
    let snapshot = authority.current();
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| invalid_token("an access token is required"))?;
    let (scheme, token) = authorization
        .split_once(' ')
        .ok_or_else(|| invalid_token("malformed Authorization header"))?;
    let scheme = if scheme.eq_ignore_ascii_case("dpop") {
        Scheme::Dpop
    } else if scheme.eq_ignore_ascii_case("bearer") {
        Scheme::Bearer
    } else {
        return Err(invalid_token("use the DPoP or Bearer scheme"));
    };
    let proof_headers: Vec<&[u8]> = headers
        .get_all("dpop")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let certificate = request_certificate(&snapshot, connection, headers);
    let fresh = authority
        .core
        .fresh_auth(
            &snapshot.settings,
            &FreshAuthRequest {
                scheme,
                access_token: token.trim(),
                proof_headers: &proof_headers,
                certificate: &certificate,
                target: &snapshot.fresh_auth_url,
                peer: connection.peer,
            },
        )
        .await?;
    let mut response = json_response(
        StatusCode::OK,
        &json!({
            "fresh_until": fresh.fresh_until,
            "client_id": fresh.client_id,
            "sub": fresh.sub,
            "tenant": fresh.tenant,
            "cnf": fresh.cnf,
        }),
    );
    if let Some(nonce) = fresh
        .next_nonce
        .and_then(|n| HeaderValue::from_str(&n).ok())
    {
        response.headers_mut().insert("dpop-nonce", nonce);
    }
    Ok(response)
}
