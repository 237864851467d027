//! Request parsing shared by the endpoints: the form body (RFC 6749 §3.2: each parameter at
//! most once) and client authentication (`client_secret_basic`, `client_secret_post`,
//! `tls_client_auth`, `self_signed_tls_client_auth`).
//!
//! Every failed client authentication gets the same answer, byte for byte (RFC 6749 §5.2
//! `invalid_client`, "client authentication failed"), so a caller learns neither whether a
//! client id exists nor how it authenticates; the reason goes to the log
//! (`authority.client.authentication.failed`).

use super::error::OAuthError;
use super::ConnectionContext;
use crate::config::{ClientAuth, ClientSettings, Settings};
use crate::core::certificate::RequestCertificate;
use crate::telemetry::metrics::{Metrics, ReasonLabel};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::HeaderMap;
use std::collections::HashMap;
use std::sync::Arc;

/// A parsed `application/x-www-form-urlencoded` body.
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<Form, OAuthError> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(OAuthError::InvalidRequest(
                "the body must be application/x-www-form-urlencoded".into(),
            ));
        }
        let mut fields = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            if fields
                .insert(name.to_string(), value.into_owned())
                .is_some()
            {
                return Err(OAuthError::InvalidRequest(format!(
                    "parameter `{name}` appears more than once"
                )));
            }
        }
        Ok(Form(fields))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// How the client authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    /// `tls_client_auth` or `self_signed_tls_client_auth`.
    Certificate,
    /// A public client (`none`): its `client_id` alone.
    None,
}

fn invalid_client(basic: bool) -> OAuthError {
    OAuthError::InvalidClient {
        description: "client authentication failed".into(),
        basic_challenge: basic,
    }
}

/// Logs why a client authentication failed (never the credential), counts it in
/// `authority_client_auth_failures_total{reason}` (reasons are this file's fixed strings,
/// never the presented client id) and returns the one answer every failure gets.
fn failed(
    metrics: &Metrics,
    connection: &ConnectionContext,
    client_id: Option<&str>,
    method: &'static str,
    reason: &'static str,
    basic: bool,
) -> OAuthError {
    metrics
        .client_auth_failures
        .get_or_create(&ReasonLabel { reason })
        .inc();
    tracing::info!(
        event = crate::telemetry::events::CLIENT_AUTH_FAILED,
        client = client_id.map(bounded).unwrap_or(""),
        method,
        reason,
        peer = %connection.peer,
    );
    invalid_client(basic)
}

/// At most 128 bytes of a presented client id (it is the caller's text), cut at a character
/// boundary.
fn bounded(id: &str) -> &str {
    let mut end = id.len().min(128);
    while !id.is_char_boundary(end) {
        end -= 1;
    }
    &id[..end]
}

/// Authenticates the calling client. Exactly one method may be used: a secret (Basic or in
/// the body), or — for clients registered for it — the TLS client certificate.
pub fn authenticate_client(
    settings: &Settings,
    headers: &HeaderMap,
    form: &Form,
    certificate: &RequestCertificate,
    metrics: &Metrics,
    connection: &ConnectionContext,
) -> Result<(Arc<ClientSettings>, AuthMethod), OAuthError> {
    let authorization = headers.get(http::header::AUTHORIZATION);
    if authorization.is_none() && form.get("client_secret").is_none() {
        return authenticate_by_certificate(settings, form, certificate, metrics, connection);
    }
    let (client_id, secret, method) = match authorization {
        Some(value) => {
            if form.get("client_secret").is_some() {
                return Err(OAuthError::InvalidRequest(
                    "use one client authentication method, not two".into(),
                ));
            }
            let malformed = || {
                failed(
                    metrics,
                    connection,
                    None,
                    "client_secret_basic",
                    "malformed-header",
                    true,
                )
            };
            let text = value.to_str().map_err(|_| malformed())?;
            let (scheme, credentials) = text.split_once(' ').ok_or_else(malformed)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(malformed());
            }
            let decoded = STANDARD
                .decode(credentials.trim())
                .map_err(|_| malformed())?;
            let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
            let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
            // RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
            let decode = |s: &str| -> String {
                url::form_urlencoded::parse(format!("x={s}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default()
            };
            let id = decode(id);
            if let Some(body_id) = form.get("client_id") {
                if body_id != id {
                    return Err(OAuthError::InvalidRequest(
                        "client_id in the body differs from the Authorization header".into(),
                    ));
                }
            }
            (id, decode(secret), AuthMethod::ClientSecretBasic)
        }
        None => {
            let id = form.get("client_id").ok_or_else(|| {
                failed(
                    metrics,
                    connection,
                    None,
                    "client_secret_post",
                    "no-client-id",
                    false,
                )
            })?;
            let secret = form.get("client_secret").ok_or_else(|| {
                failed(
                    metrics,
                    connection,
                    Some(id),
                    "client_secret_post",
                    "no-secret",
                    false,
                )
            })?;
            (
                id.to_string(),
                secret.to_string(),
                AuthMethod::ClientSecretPost,
            )
        }
    };
    let basic = method == AuthMethod::ClientSecretBasic;
    let client = settings.clients.get(&client_id);
    // Compare against something even for an unknown client so response time does not
    // reveal which client ids exist.
    let matched = match client.map(|c| &c.auth) {
        Some(ClientAuth::Secret(hash)) => hash.matches(&secret),
        _ => {
            let _ = crate::secret::SecretHash::of("").matches(&secret);
            false
        }
    };
    let method_name = if basic {
        "client_secret_basic"
    } else {
        "client_secret_post"
    };
    match client {
        Some(client) if matched => Ok((client.clone(), method)),
        Some(client) if matches!(client.auth, ClientAuth::Secret(_)) => Err(failed(
            metrics,
            connection,
            Some(&client_id),
            method_name,
            "wrong-secret",
            basic,
        )),
        Some(_) => Err(failed(
            metrics,
            connection,
            Some(&client_id),
            method_name,
            "client-authenticates-with-certificate",
            basic,
        )),
        None => Err(failed(
            metrics,
            connection,
            Some(&client_id),
            method_name,
            "unknown-client",
            basic,
        )),
    }
}

/// RFC 8705 §2: `client_id` in the body, the certificate as the credential. An unknown
/// client id never moves `authority_mtls_mismatch_total` (anyone could page the operator);
/// a registered certificate client that presented none counts as `missing-certificate`.
fn authenticate_by_certificate(
    settings: &Settings,
    form: &Form,
    certificate: &RequestCertificate,
    metrics: &Metrics,
    connection: &ConnectionContext,
) -> Result<(Arc<ClientSettings>, AuthMethod), OAuthError> {
    const METHOD: &str = "tls_client_auth";
    let Some(id) = form.get("client_id") else {
        return Err(failed(
            metrics,
            connection,
            None,
            METHOD,
            "no-credentials",
            false,
        ));
    };
    let Some(client) = settings.clients.get(id) else {
        return Err(failed(
            metrics,
            connection,
            Some(id),
            METHOD,
            "unknown-client",
            false,
        ));
    };
    if matches!(client.auth, ClientAuth::None) {
        // RFC 6749 §2.1: a public client is identified, not authenticated; what it may do
        // is limited to the user grants (checked by each grant) and DPoP-bound tokens.
        return Ok((client.clone(), AuthMethod::None));
    }
    let ClientAuth::Certificate(identity) = &client.auth else {
        return Err(failed(
            metrics,
            connection,
            Some(id),
            METHOD,
            "client-authenticates-with-secret",
            false,
        ));
    };
    let reason = match certificate {
        RequestCertificate::Present(c) if identity.matches(c) => {
            return Ok((client.clone(), AuthMethod::Certificate))
        }
        RequestCertificate::Present(_) => {
            return Err(failed(
                metrics,
                connection,
                Some(id),
                METHOD,
                "certificate-does-not-authenticate-client",
                false,
            ))
        }
        RequestCertificate::Absent => "missing-certificate",
        RequestCertificate::ContextMissing => "context-missing",
    };
    metrics
        .mtls_mismatch
        .get_or_create(&ReasonLabel { reason })
        .inc();
    Err(failed(metrics, connection, Some(id), METHOD, reason, false))
}
