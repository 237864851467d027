//! Response building shared by the handlers: JSON bodies with the headers every
//! authorization-server response carries (`Cache-Control: no-store`, RFC 6749 §5.1).

use bytes::Bytes;
use http::{HeaderValue, StatusCode};
use http_body_util::Full;

pub type Response = http::Response<Full<Bytes>>;

pub fn json_bytes(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    headers.insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    json_bytes(status, serde_json::to_vec(body).unwrap_or_default())
}

/// A cacheable public document (discovery metadata, JWKS).
pub fn public_json(body: Bytes) -> Response {
    let mut response = http::Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    response
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Response {
    let mut response = http::Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static(content_type),
    );
    response
}
