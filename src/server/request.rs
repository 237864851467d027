//! Request parsing shared by the endpoints: the form body (RFC 6749 §3.2: each parameter at
//! most once) and client authentication (`client_secret_basic`, `client_secret_post`,
//! `tls_client_auth`, `self_signed_tls_client_auth`).

use super::error::OAuthError;
use super::RequestCertificate;
use crate::config::{ClientAuth, ClientSettings, Settings};
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
}

fn invalid_client(basic: bool) -> OAuthError {
    OAuthError::InvalidClient {
        description: "client authentication failed".into(),
        basic_challenge: basic,
    }
}

/// Authenticates the calling client. Exactly one method may be used: a secret (Basic or in
/// the body), or — for clients registered for it — the TLS client certificate.
pub fn authenticate_client(
    settings: &Settings,
    headers: &HeaderMap,
    form: &Form,
    certificate: &RequestCertificate,
    metrics: &Metrics,
) -> Result<(Arc<ClientSettings>, AuthMethod), OAuthError> {
    let authorization = headers.get(http::header::AUTHORIZATION);
    if authorization.is_none() && form.get("client_secret").is_none() {
        return authenticate_by_certificate(settings, form, certificate, metrics);
    }
    let (client_id, secret, method) = match authorization {
        Some(value) => {
            if form.get("client_secret").is_some() {
                return Err(OAuthError::InvalidRequest(
                    "use one client authentication method, not two".into(),
                ));
            }
            let text = value.to_str().map_err(|_| invalid_client(true))?;
            let (scheme, credentials) = text.split_once(' ').ok_or_else(|| invalid_client(true))?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(invalid_client(true));
            }
            let decoded = STANDARD
                .decode(credentials.trim())
                .map_err(|_| invalid_client(true))?;
            let decoded = String::from_utf8(decoded).map_err(|_| invalid_client(true))?;
            let (id, secret) = decoded
                .split_once(':')
                .ok_or_else(|| invalid_client(true))?;
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
            let id = form.get("client_id").ok_or_else(|| invalid_client(false))?;
            let secret = form
                .get("client_secret")
                .ok_or_else(|| invalid_client(false))?;
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
    match client {
        Some(client) if matched => Ok((client.clone(), method)),
        _ => Err(invalid_client(basic)),
    }
}

/// RFC 8705 §2: `client_id` in the body, the certificate as the credential.
fn authenticate_by_certificate(
    settings: &Settings,
    form: &Form,
    certificate: &RequestCertificate,
    metrics: &Metrics,
) -> Result<(Arc<ClientSettings>, AuthMethod), OAuthError> {
    let client = form
        .get("client_id")
        .and_then(|id| settings.clients.get(id))
        .ok_or_else(|| invalid_client(false))?;
    let ClientAuth::Certificate(identity) = &client.auth else {
        return Err(invalid_client(false));
    };
    let reason = match certificate {
        RequestCertificate::Present(c) if identity.matches(c) => {
            return Ok((client.clone(), AuthMethod::Certificate))
        }
        RequestCertificate::Present(c) => {
            tracing::info!(
                event = crate::telemetry::events::SENDER_CONSTRAINT, client = %client.id, decision = "reject",
                reason = "certificate-does-not-authenticate-client", chain = ?c.chain,
            );
            return Err(OAuthError::InvalidClient {
                description: "the client certificate does not authenticate this client".into(),
                basic_challenge: false,
            });
        }
        RequestCertificate::Absent => "missing-certificate",
        RequestCertificate::ContextMissing => "context-missing",
    };
    metrics
        .mtls_mismatch
        .get_or_create(&ReasonLabel { reason })
        .inc();
    Err(OAuthError::InvalidClient {
        description:
            "this client authenticates with its TLS client certificate, and none was presented"
                .into(),
        basic_challenge: false,
    })
}
