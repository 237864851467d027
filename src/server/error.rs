//! The one place OAuth errors become HTTP responses: status code, `error` code,
//! `WWW-Authenticate`, `DPoP-Nonce`, `Cache-Control: no-store`.
//!
//! Handlers return [`OAuthError`]; nothing else in the server chooses an error status. The
//! core's domain errors ([`Denied`]) become OAuth errors in the one `From` below.

use super::response::{json_response, Response};
use crate::core::Denied;
use http::{HeaderValue, StatusCode};
use serde_json::json;

/// An error answered to a client. `Display` prints the RFC error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// RFC 6749 §5.2.
    #[error("invalid_request")]
    InvalidRequest(String),
    /// RFC 6749 §5.2: 401; `basic_challenge` when the client used the Authorization header.
    #[error("invalid_client")]
    InvalidClient {
        description: String,
        basic_challenge: bool,
    },
    /// RFC 6749 §5.2.
    #[error("unsupported_grant_type")]
    UnsupportedGrantType,
    /// RFC 6749 §5.2.
    #[error("invalid_scope")]
    InvalidScope(String),
    /// RFC 6749 §5.2.
    #[error("unauthorized_client")]
    UnauthorizedClient(String),
    /// RFC 9449 §8: the client must (re)try with this server nonce. With an access token
    /// (§9, `resource_algs` set): 401 + `WWW-Authenticate: DPoP error="use_dpop_nonce"`.
    #[error("use_dpop_nonce")]
    UseDpopNonce {
        description: String,
        nonce: String,
        resource_algs: Option<String>,
    },
    /// RFC 9449 §7.1: a proof that failed a check (400 at the token endpoint), or that was
    /// replayed or came with an access token (`unauthorized`: 401 + `WWW-Authenticate`).
    #[error("invalid_dpop_proof")]
    InvalidDpopProof {
        description: String,
        unauthorized: bool,
        algs: String,
    },
    /// RFC 6750 §3.1: a token that is not (or no longer) acceptable for this sender.
    #[error("invalid_token")]
    InvalidToken {
        description: String,
        scheme: &'static str,
    },
    /// RFC 6749 §5.2 / RFC 9110: the store cannot answer; fail closed.
    #[error("temporarily_unavailable")]
    TemporarilyUnavailable,
    #[error("not_found")]
    NotFound,
    #[error("method_not_allowed")]
    MethodNotAllowed(&'static str),
    #[error("invalid_request")]
    PayloadTooLarge,
    /// RFC 9110 §15.5.9: the body did not arrive within `limits.bodyReadTimeout`; the
    /// connection is closed.
    #[error("invalid_request")]
    RequestTimeout,
    /// RFC 6749 §5.2 / RFC 9110 §15.6.1: something failed that valid state never makes fail.
    #[error("server_error")]
    ServerError,
    /// A user-grant answer at the token endpoint, 400 with `code`: `invalid_grant`
    /// (RFC 6749 §5.2), `authorization_pending`, `slow_down`, `expired_token`,
    /// `access_denied` (RFC 8628 §3.5).
    #[error("{code}")]
    Grant {
        code: &'static str,
        description: String,
    },
}

impl From<Denied> for OAuthError {
    fn from(denied: Denied) -> OAuthError {
        match denied {
            Denied::InvalidScope(d) => OAuthError::InvalidScope(d),
            Denied::UseDpopNonce {
                description,
                nonce,
                with_access_token,
                algs,
            } => OAuthError::UseDpopNonce {
                description: description.to_string(),
                nonce,
                resource_algs: with_access_token.then_some(algs),
            },
            Denied::InvalidDpopProof {
                description,
                unauthorized,
                algs,
            } => OAuthError::InvalidDpopProof {
                description,
                unauthorized,
                algs,
            },
            Denied::CertificateRequired { description } => OAuthError::InvalidClient {
                description,
                basic_challenge: false,
            },
            Denied::InvalidToken {
                description,
                scheme,
            } => OAuthError::InvalidToken {
                description: description.to_string(),
                scheme,
            },
            Denied::Unavailable => OAuthError::TemporarilyUnavailable,
            Denied::Internal => OAuthError::ServerError,
        }
    }
}

impl OAuthError {
    /// The response for this error.
    pub fn into_response(self) -> Response {
        let code = self.to_string();
        let (status, description) = match &self {
            Self::InvalidRequest(d) => (StatusCode::BAD_REQUEST, d.clone()),
            Self::InvalidClient { description, .. } => {
                (StatusCode::UNAUTHORIZED, description.clone())
            }
            Self::UnsupportedGrantType => (
                StatusCode::BAD_REQUEST,
                "this grant type is not supported".to_string(),
            ),
            Self::Grant { description, .. } => (StatusCode::BAD_REQUEST, description.clone()),
            Self::InvalidScope(d) | Self::UnauthorizedClient(d) => {
                (StatusCode::BAD_REQUEST, d.clone())
            }
            Self::UseDpopNonce {
                description,
                resource_algs,
                ..
            } => (
                if resource_algs.is_some() {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::BAD_REQUEST
                },
                description.clone(),
            ),
            Self::InvalidDpopProof {
                description,
                unauthorized,
                ..
            } => (
                if *unauthorized {
                    StatusCode::UNAUTHORIZED
                } else {
                    StatusCode::BAD_REQUEST
                },
                description.clone(),
            ),
            Self::InvalidToken { description, .. } => {
                (StatusCode::UNAUTHORIZED, description.clone())
            }
            Self::TemporarilyUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "the authority cannot check this request right now; retry shortly".to_string(),
            ),
            Self::NotFound => (StatusCode::NOT_FOUND, "no such endpoint".to_string()),
            Self::MethodNotAllowed(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed".to_string(),
            ),
            Self::PayloadTooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large".to_string(),
            ),
            Self::RequestTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time".to_string(),
            ),
            Self::ServerError => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the authority failed to answer this request".to_string(),
            ),
        };
        let mut response = json_response(
            status,
            &json!({"error": code, "error_description": description}),
        );
        let headers = response.headers_mut();
        match &self {
            Self::InvalidClient {
                basic_challenge: true,
                ..
            } => {
                headers.insert(
                    http::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"sealkit\""),
                );
            }
            Self::UseDpopNonce {
                nonce,
                resource_algs,
                ..
            } => {
                if let Ok(value) = HeaderValue::from_str(nonce) {
                    headers.insert("dpop-nonce", value);
                }
                if let Some(algs) = resource_algs {
                    if let Ok(value) = HeaderValue::from_str(&format!(
                        "DPoP error=\"use_dpop_nonce\", algs=\"{algs}\""
                    )) {
                        headers.insert(http::header::WWW_AUTHENTICATE, value);
                    }
                }
            }
            Self::InvalidDpopProof {
                unauthorized: true,
                algs,
                ..
            } => {
                if let Ok(value) = HeaderValue::from_str(&format!(
                    "DPoP error=\"invalid_dpop_proof\", algs=\"{algs}\""
                )) {
                    headers.insert(http::header::WWW_AUTHENTICATE, value);
                }
            }
            Self::InvalidToken { scheme, .. } => {
                if let Ok(value) =
                    HeaderValue::from_str(&format!("{scheme} error=\"invalid_token\""))
                {
                    headers.insert(http::header::WWW_AUTHENTICATE, value);
                }
            }
            Self::TemporarilyUnavailable => {
                headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::MethodNotAllowed(allow) => {
                headers.insert(http::header::ALLOW, HeaderValue::from_static(allow));
            }
            Self::RequestTimeout => {
                headers.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (error, status, `error`, `WWW-Authenticate`, `DPoP-Nonce`, `Retry-After`)
    type Row = (
        OAuthError,
        u16,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        Option<&'static str>,
    );

    /// Every OAuth error against the README's matrix: status, `error`, and the headers a
    /// client acts on.
    #[test]
    fn every_error_maps_to_its_status_and_headers() {
        let algs = || "ES256 EdDSA".to_string();
        // (error, status, code, WWW-Authenticate, DPoP-Nonce, Retry-After)
        let table: Vec<Row> = vec![
            (
                OAuthError::InvalidRequest("x".into()),
                400,
                "invalid_request",
                None,
                None,
                None,
            ),
            (
                OAuthError::InvalidClient {
                    description: "x".into(),
                    basic_challenge: false,
                },
                401,
                "invalid_client",
                None,
                None,
                None,
            ),
            (
                OAuthError::InvalidClient {
                    description: "x".into(),
                    basic_challenge: true,
                },
                401,
                "invalid_client",
                Some("Basic realm=\"sealkit\""),
                None,
                None,
            ),
            (
                OAuthError::UnsupportedGrantType,
                400,
                "unsupported_grant_type",
                None,
                None,
                None,
            ),
            (
                OAuthError::InvalidScope("x".into()),
                400,
                "invalid_scope",
                None,
                None,
                None,
            ),
            (
                OAuthError::UnauthorizedClient("x".into()),
                400,
                "unauthorized_client",
                None,
                None,
                None,
            ),
            // DPoP required without a proof, or nonce missing/stale: 400 + DPoP-Nonce.
            (
                OAuthError::UseDpopNonce {
                    description: "x".into(),
                    nonce: "n1".into(),
                    resource_algs: None,
                },
                400,
                "use_dpop_nonce",
                None,
                Some("n1"),
                None,
            ),
            // With an access token (RFC 9449 §9): 401 and a DPoP challenge with algs.
            (
                OAuthError::UseDpopNonce {
                    description: "x".into(),
                    nonce: "n2".into(),
                    resource_algs: Some(algs()),
                },
                401,
                "use_dpop_nonce",
                Some("DPoP error=\"use_dpop_nonce\", algs=\"ES256 EdDSA\""),
                Some("n2"),
                None,
            ),
            // A proof failing a check at the token endpoint: 400.
            (
                OAuthError::InvalidDpopProof {
                    description: "x".into(),
                    unauthorized: false,
                    algs: algs(),
                },
                400,
                "invalid_dpop_proof",
                None,
                None,
                None,
            ),
            // A replayed proof: 401 + challenge.
            (
                OAuthError::InvalidDpopProof {
                    description: "x".into(),
                    unauthorized: true,
                    algs: algs(),
                },
                401,
                "invalid_dpop_proof",
                Some("DPoP error=\"invalid_dpop_proof\", algs=\"ES256 EdDSA\""),
                None,
                None,
            ),
            // A token used with another certificate.
            (
                OAuthError::InvalidToken {
                    description: "x".into(),
                    scheme: "Bearer",
                },
                401,
                "invalid_token",
                Some("Bearer error=\"invalid_token\""),
                None,
                None,
            ),
            // The store cannot answer: fail closed.
            (
                OAuthError::TemporarilyUnavailable,
                503,
                "temporarily_unavailable",
                None,
                None,
                Some("1"),
            ),
            (
                OAuthError::ServerError,
                500,
                "server_error",
                None,
                None,
                None,
            ),
            (
                OAuthError::RequestTimeout,
                408,
                "invalid_request",
                None,
                None,
                None,
            ),
            (
                OAuthError::PayloadTooLarge,
                413,
                "invalid_request",
                None,
                None,
                None,
            ),
            (OAuthError::NotFound, 404, "not_found", None, None, None),
        ];
        for (error, status, code, www, nonce, retry) in table {
            let label = format!("{error:?}");
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status, "{label}");
            let header = |name: &str| {
                response
                    .headers()
                    .get(name)
                    .map(|v| v.to_str().unwrap().to_string())
            };
            assert_eq!(header("www-authenticate").as_deref(), www, "{label}");
            assert_eq!(header("dpop-nonce").as_deref(), nonce, "{label}");
            assert_eq!(header("retry-after").as_deref(), retry, "{label}");
            assert_eq!(
                header("cache-control").as_deref(),
                Some("no-store"),
                "{label}"
            );
            let body = response.body().clone();
            let body = futures_body(body);
            let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(json["error"], code, "{label}");
        }
    }

    fn futures_body(body: http_body_util::Full<bytes::Bytes>) -> bytes::Bytes {
        use http_body_util::BodyExt;
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(body.collect())
            .unwrap()
            .to_bytes()
    }
}
