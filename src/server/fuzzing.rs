//! Entry points for the fuzz targets only (`cargo fuzz` builds with `--cfg fuzzing`): the
//! server's own form parser and client authentication, which are private to `server`, so
//! `fuzz/fuzz_targets/client_auth.rs` runs exactly what `/token`, `/introspect` and
//! `/revoke` run.

use super::request::{authenticate_client, Form};
use super::ConnectionContext;
use crate::config::Settings;
use crate::core::certificate::RequestCertificate;
use crate::mtls::PeerCertificate;
use crate::telemetry::metrics::Metrics;
use http::{HeaderMap, HeaderValue};
use std::sync::{Arc, OnceLock};

/// Parses `body` as the server does (with `content_type` as the request's
/// `Content-Type`), then authenticates the client with the optional `Authorization` value
/// and TLS client certificate. Returns the authenticated client's id.
pub fn client_auth(
    settings: &Settings,
    content_type: &[u8],
    authorization: Option<&[u8]>,
    body: &[u8],
    certificate: Option<Arc<PeerCertificate>>,
) -> Option<String> {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    let metrics = METRICS.get_or_init(Metrics::new);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(content_type) {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    if let Some(Ok(value)) = authorization.map(HeaderValue::from_bytes) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    let form = Form::parse(&headers, body).ok()?;
    let connection = ConnectionContext {
        peer: std::net::SocketAddr::from(([192, 0, 2, 1], 40000)),
        client_certificate: certificate.clone(),
    };
    let request_certificate = match certificate {
        Some(peer) => RequestCertificate::Present(peer),
        None => RequestCertificate::Absent,
    };
    authenticate_client(
        settings,
        &headers,
        &form,
        &request_certificate,
        metrics,
        &connection,
    )
    .ok()
    .map(|(client, _)| client.id.clone())
}
