//! Forwarding an admitted request to the upstream (HTTP on loopback, or a Unix socket).
//!
//! Before forwarding, the credentials (`Authorization`, `DPoP`), every incoming
//! `X-Sealkit-*` header, the identity headers proxies commonly set (and any configured),
//! `Client-Cert*` and the hop-by-hop headers (RFC 9110 §7.6.1) are removed, so a client can
//! never make the upstream believe it is someone else; then the guard's own identity
//! headers are added. Bodies are streamed both ways, the request body capped.

use super::config::{GuardSettings, Upstream, IDENTITY_HEADERS};
use super::enforce::Identity;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// Why the upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// 502: cannot connect, or the connection failed.
    #[error("the upstream is unreachable: {0}")]
    Unreachable(String),
    /// 504: no response head within `upstreamTimeout`.
    #[error("the upstream did not answer in time")]
    Timeout,
}

/// The identity headers the guard sets (and removes from every incoming request).
pub const IDENTITY_CLIENT: &str = "x-sealkit-client";
pub const IDENTITY_TENANT: &str = "x-sealkit-tenant";
pub const IDENTITY_SCOPE: &str = "x-sealkit-scope";
pub const IDENTITY_TOKEN_TYPE: &str = "x-sealkit-token-type";
pub const IDENTITY_CNF: &str = "x-sealkit-cnf";

/// Hop-by-hop headers (RFC 9110 §7.6.1), never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Removes every header a client must not pass through the guard.
pub fn strip_request_headers(headers: &mut HeaderMap, extra: &[HeaderName]) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP
        .iter()
        .chain(IDENTITY_HEADERS.iter())
        .chain(["authorization", "dpop", "client-cert", "client-cert-chain"].iter())
    {
        headers.remove(*name);
    }
    for name in extra {
        headers.remove(name);
    }
    let sealkit: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("x-sealkit-"))
        .cloned()
        .collect();
    for name in sealkit {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers from an upstream response.
pub fn strip_response_headers(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    // Values come from a verified token; anything not representable is left out rather
    // than forwarded altered.
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

/// Adds the identity headers of an admitted request.
pub fn add_identity(headers: &mut HeaderMap, identity: &Identity) {
    set(headers, IDENTITY_CLIENT, &identity.client);
    set(headers, IDENTITY_TENANT, &identity.tenant);
    set(headers, IDENTITY_SCOPE, &identity.scope);
    set(headers, IDENTITY_TOKEN_TYPE, identity.token_type);
    set(headers, IDENTITY_CNF, &identity.cnf);
}

/// Sends requests to the configured upstream, reusing TCP connections.
pub struct Forwarder {
    http: Client<HttpConnector, Body>,
}

impl Default for Forwarder {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Forwarder {
            http: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Forwarder {
    /// Forwards `parts` + `body` (already stripped and annotated) and returns the upstream's
    /// response head and streamed body.
    pub async fn forward(
        &self,
        settings: &GuardSettings,
        mut parts: http::request::Parts,
        body: Incoming,
    ) -> Result<http::Response<Incoming>, UpstreamError> {
        let body: Body = Limited::new(body, settings.max_upstream_body_bytes).boxed();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        let send = async {
            match &settings.upstream {
                Upstream::Http { authority, .. } => {
                    parts.uri = format!("http://{authority}{path}").parse().map_err(
                        |e: http::uri::InvalidUri| UpstreamError::Unreachable(e.to_string()),
                    )?;
                    self.http
                        .request(Request::from_parts(parts, body))
                        .await
                        .map_err(|e| UpstreamError::Unreachable(e.to_string()))
                }
                Upstream::Unix(socket) => {
                    parts.uri = path.parse().map_err(|e: http::uri::InvalidUri| {
                        UpstreamError::Unreachable(e.to_string())
                    })?;
                    let stream = tokio::net::UnixStream::connect(socket)
                        .await
                        .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
                    let (mut sender, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(stream))
                            .await
                            .map_err(|e| UpstreamError::Unreachable(e.to_string()))?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    sender
                        .send_request(Request::from_parts(parts, body))
                        .await
                        .map_err(|e| UpstreamError::Unreachable(e.to_string()))
                }
            }
        };
        tokio::time::timeout(settings.upstream_timeout, send)
            .await
            .map_err(|_| UpstreamError::Timeout)?
    }
}

/// A response body from fixed bytes (the guard's own answers).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// The upstream's streamed body, as the guard's body type.
pub fn streamed(body: Incoming) -> Body {
    body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_spoofed_identity_and_hop_by_hop_headers_never_pass() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("authorization", "DPoP abc"),
            ("dpop", "proof"),
            ("x-sealkit-client", "admin"),
            ("X-Sealkit-Anything", "x"),
            ("x-forwarded-user", "root"),
            ("x-forwarded-email", "root@site"),
            ("remote-user", "root"),
            ("x-custom-user", "root"),
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("upgrade", "websocket"),
            ("accept", "application/json"),
        ] {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        strip_request_headers(&mut headers, &[HeaderName::from_static("x-custom-user")]);
        let left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }
}
