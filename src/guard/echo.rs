//! The demo's upstream: answers every request with 200 and a JSON object of the method,
//! path and headers it received, so an operator sees exactly what the guard forwards.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map, Value};
use std::convert::Infallible;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The echo's answer to one request.
pub async fn answer(request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let mut headers = Map::new();
    for (name, value) in &parts.headers {
        headers.insert(
            name.as_str().to_string(),
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let doc = json!({
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "bodyBytes": body.len(),
    });
    let mut response = Response::new(Full::new(Bytes::from(
        serde_json::to_vec(&doc).unwrap_or_default(),
    )));
    *response.status_mut() = StatusCode::OK;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves the echo on `listener` (plain HTTP) until the task is dropped.
pub async fn serve(listener: TcpListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((tcp, _)) = accepted {
                    connections.spawn(serve_connection(tcp));
                }
            }
            // Finished connections are reaped so the set does not grow.
            Some(_) = connections.join_next() => {}
        }
    }
}

/// Binds the echo's Unix socket, replacing a stale one.
pub fn bind_unix(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)?;
    }
    tokio::net::UnixListener::bind(path)
}

/// Serves the echo on a Unix socket until the task is dropped.
pub async fn serve_unix(listener: tokio::net::UnixListener) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((stream, _)) = accepted {
                    connections.spawn(serve_connection(stream));
                }
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

/// One connection's requests. The connections belong to the serving task's `JoinSet`, so
/// stopping the echo closes them too, as a stopped upstream's would be (the guard keeps
/// its upstream connections open between requests).
async fn serve_connection<S>(stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(|request| async move { Ok::<_, Infallible>(answer(request).await) });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
