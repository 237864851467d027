//! Forwarding an admitted request to the upstream (HTTP on loopback, or a Unix socket).
//!
//! Before forwarding, the credentials (`Authorization`, `DPoP`), every incoming
//! `X-Sealkit-*` header, the identity headers proxies commonly set (and any configured),
//! `Client-Cert*` and the hop-by-hop headers (RFC 9110 §7.6.1) are removed, so a client can
//! never make the upstream believe it is someone else; then the guard's own identity
//! headers are added. Bodies are streamed both ways, the request body capped.
//!
//! Connections to the upstream are kept open and reused, over TCP and over a Unix socket
//! alike (hyper-util's pool): a connection per request would cost the guard and the
//! upstream a connect, an accept and a task each time.

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
use std::future::Future;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::net::UnixStream;

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

/// Sends requests to the configured upstream, reusing connections.
pub struct Forwarder {
    http: Client<HttpConnector, Body>,
    unix: Client<UnixConnector, Body>,
}

/// How long a connection to the upstream may stay idle before the guard closes it. Below
/// the shortest keep-alive timeout upstreams commonly use (Node.js: 5 s), so the guard
/// closes an idle connection before the upstream does: a request sent on a connection the
/// upstream is closing at that moment would be answered 502.
const UPSTREAM_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

fn pooled_client() -> hyper_util::client::legacy::Builder {
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .pool_idle_timeout(UPSTREAM_IDLE_TIMEOUT)
        .pool_timer(hyper_util::rt::TokioTimer::new());
    builder
}

impl Default for Forwarder {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let mut unix = pooled_client();
        // The URI's host only names the socket (see `unix_uri`); the upstream gets the Host
        // header the client sent, as before connections were pooled, and never that name.
        unix.set_host(false);
        Forwarder {
            http: pooled_client().build(connector),
            unix: unix.build(UnixConnector),
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
            .map(|p| p.as_str())
            .unwrap_or("/");
        let unreachable = |e: http::uri::InvalidUri| UpstreamError::Unreachable(e.to_string());
        let send = match &settings.upstream {
            Upstream::Http { authority, .. } => {
                parts.uri = format!("http://{authority}{path}")
                    .parse()
                    .map_err(unreachable)?;
                self.http.request(Request::from_parts(parts, body))
            }
            Upstream::Unix(socket) => {
                parts.uri = unix_uri(socket, path).map_err(unreachable)?;
                self.unix.request(Request::from_parts(parts, body))
            }
        };
        tokio::time::timeout(settings.upstream_timeout, send)
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(|e| UpstreamError::Unreachable(upstream_error_text(&e)))
    }
}

/// hyper-util's error says only "client error (Connect)"; the cause says which socket and
/// why.
fn upstream_error_text(error: &hyper_util::client::legacy::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The URI of `path` on the Unix socket `socket`: the socket's path, hex-encoded, is the
/// host, so the pool keeps the connections of each socket apart (a reload may name another)
/// and [`UnixConnector`] knows where to connect.
fn unix_uri(socket: &Path, path: &str) -> Result<http::Uri, http::uri::InvalidUri> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let name = socket.as_os_str().as_bytes();
    let mut uri = String::with_capacity(7 + 2 * name.len() + path.len());
    uri.push_str("http://");
    for byte in name {
        uri.push(char::from(HEX[usize::from(byte >> 4)]));
        uri.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    uri.push_str(path);
    uri.parse()
}

/// The socket path a [`unix_uri`] names.
fn socket_of(uri: &http::Uri) -> Option<PathBuf> {
    let host = uri.host()?.as_bytes();
    if host.len() % 2 != 0 {
        return None;
    }
    let digit = |c: u8| char::from(c).to_digit(16).map(|d| d as u8);
    let bytes = host
        .chunks(2)
        .map(|pair| Some(digit(pair[0])? << 4 | digit(pair[1])?))
        .collect::<Option<Vec<u8>>>()?;
    Some(PathBuf::from(std::ffi::OsString::from_vec(bytes)))
}

/// Opens a connection to the Unix socket a [`unix_uri`] names, for the pool.
#[derive(Clone, Copy)]
struct UnixConnector;

type Connecting = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<UnixStream>>> + Send>>;
impl tower_service::Service<http::Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        Box::pin(async move {
            let socket = socket_of(&uri).ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a Unix socket URI")
            })?;
            let stream = UnixStream::connect(&socket)
                .await
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", socket.display())))?;
            Ok(TokioIo::new(stream))
        })
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

    #[test]
    fn a_unix_socket_path_survives_the_trip_through_the_uri() {
        for socket in ["/run/app/upstream.sock", "/tmp/a b/ü.sock", "relative.sock"] {
            let uri = unix_uri(Path::new(socket), "/api/echo?x=1&y=%20").unwrap();
            assert_eq!(
                uri.path_and_query().unwrap().as_str(),
                "/api/echo?x=1&y=%20"
            );
            assert_eq!(socket_of(&uri).unwrap(), PathBuf::from(socket), "{uri}");
        }
        // Another socket is another host, so the pool never lends one socket's connection
        // for the other's requests.
        let a = unix_uri(Path::new("/run/a.sock"), "/").unwrap();
        let b = unix_uri(Path::new("/run/b.sock"), "/").unwrap();
        assert_ne!(a.host(), b.host());
    }
}
