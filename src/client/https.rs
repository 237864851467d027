//! A small HTTPS/1.1 client over rustls and hyper: one keep-alive connection per
//! [`Connection`], trusting only the site CA given, optionally presenting a client
//! certificate; and plain HTTP for the authority's loopback metrics listener
//! ([`connect_plain`], [`get_url`]). Used by the drill, the benchmark and the tests; not a
//! general HTTP client.

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum HttpsError {
    #[error("bad target URL {0}")]
    Url(String),
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error("TLS client configuration: {0}")]
    Config(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("request failed: {0}")]
    Request(String),
}

/// Where to connect and how to trust it.
#[derive(Clone)]
pub struct TlsTarget {
    addr: SocketAddr,
    host: String,
    server_name: ServerName<'static>,
    config: Arc<rustls::ClientConfig>,
}

/// A response, fully read.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TlsTarget {
    /// `base_url` is `https://host:port`; `ca_file` the site's root certificate(s).
    pub fn new(
        base_url: &str,
        ca_file: &Path,
        client_identity: Option<(&Path, &Path)>,
    ) -> Result<TlsTarget, HttpsError> {
        let url = url::Url::parse(base_url).map_err(|_| HttpsError::Url(base_url.to_string()))?;
        let host = url
            .host_str()
            .ok_or_else(|| HttpsError::Url(base_url.to_string()))?
            .to_string();
        let port = url.port_or_known_default().unwrap_or(443);
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&(host.trim_matches(['[', ']']), port))
            .map_err(|_| HttpsError::Resolve(host.clone()))?
            .next()
            .ok_or_else(|| HttpsError::Resolve(host.clone()))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in crate::tls::load_certificates(ca_file)? {
            roots
                .add(cert)
                .map_err(|e| HttpsError::Config(e.to_string()))?;
        }
        let builder = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match client_identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(
                    crate::tls::load_certificates(cert)?,
                    crate::tls::load_private_key(key)?,
                )
                .map_err(|e| match e {
                    rustls::Error::InconsistentKeys(_) => HttpsError::Config(format!(
                        "the key {} does not match the certificate {}",
                        key.display(),
                        cert.display()
                    )),
                    other => HttpsError::Config(other.to_string()),
                })?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(host.trim_matches(['[', ']']).to_string())
            .map_err(|_| HttpsError::Url(base_url.to_string()))?;
        Ok(TlsTarget {
            addr,
            host,
            server_name,
            config: Arc::new(config),
        })
    }

    /// Opens a new keep-alive connection.
    pub async fn connect(&self) -> Result<Connection, HttpsError> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| HttpsError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| HttpsError::Connect(e.to_string()))?;
        http1(tls, self.host.clone()).await
    }
}

/// The HTTP/1.1 handshake on an open stream (TLS or plain); the connection is driven by
/// its own task.
async fn http1<IO>(io: IO, host: String) -> Result<Connection, HttpsError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| HttpsError::Connect(e.to_string()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Connection { sender, host })
}

/// One HTTP/1.1 keep-alive connection.
pub struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl Connection {
    /// Sends a request (the `Host` header is added) and reads the whole response.
    pub async fn send(&mut self, mut request: Request<Full<Bytes>>) -> Result<Reply, HttpsError> {
        if !request.headers().contains_key(http::header::HOST) {
            if let Ok(host) = http::HeaderValue::from_str(&self.host) {
                request.headers_mut().insert(http::header::HOST, host);
            }
        }
        self.sender
            .ready()
            .await
            .map_err(|e| HttpsError::Request(e.to_string()))?;
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| HttpsError::Request(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| HttpsError::Request(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }

    /// `POST path` with a form body and extra headers.
    pub async fn post_form(
        &mut self,
        path: &str,
        form: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Result<Reply, HttpsError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut builder = Request::post(path).header(
            http::header::CONTENT_TYPE,
            "application/x-www-form-urlencoded",
        );
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let request = builder
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpsError::Request(e.to_string()))?;
        self.send(request).await
    }

    /// `GET path`.
    pub async fn get(&mut self, path: &str) -> Result<Reply, HttpsError> {
        let request = Request::get(path)
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpsError::Request(e.to_string()))?;
        self.send(request).await
    }
}

/// Opens a plain-HTTP keep-alive connection to `addr`: only for loopback listeners such as
/// `metrics.listen`, which carry no credentials.
pub async fn connect_plain(addr: SocketAddr) -> Result<Connection, HttpsError> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| HttpsError::Connect(e.to_string()))?;
    http1(tcp, addr.to_string()).await
}

/// `GET url` on a new connection: `http://` plainly (a metrics listener), `https://`
/// trusting `ca_file`.
pub async fn get_url(
    url: &str,
    ca_file: &Path,
    headers: &[(&str, &str)],
) -> Result<Reply, HttpsError> {
    let parsed = url::Url::parse(url).map_err(|_| HttpsError::Url(url.to_string()))?;
    let mut conn = match parsed.scheme() {
        "http" => {
            let host = parsed
                .host_str()
                .ok_or_else(|| HttpsError::Url(url.to_string()))?;
            let port = parsed.port_or_known_default().unwrap_or(80);
            let addr =
                std::net::ToSocketAddrs::to_socket_addrs(&(host.trim_matches(['[', ']']), port))
                    .map_err(|_| HttpsError::Resolve(host.to_string()))?
                    .next()
                    .ok_or_else(|| HttpsError::Resolve(host.to_string()))?;
            connect_plain(addr).await?
        }
        "https" => {
            let base = format!(
                "https://{}:{}",
                parsed.host_str().unwrap_or_default(),
                parsed.port_or_known_default().unwrap_or(443)
            );
            TlsTarget::new(&base, ca_file, None)?.connect().await?
        }
        _ => return Err(HttpsError::Url(url.to_string())),
    };
    let mut builder = Request::get(parsed.path());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| HttpsError::Request(e.to_string()))?;
    conn.send(request).await
}

/// `Authorization: Basic` for `client_secret_basic` (RFC 6749 §2.3.1: form-encode, then base64).
pub fn basic_auth(client_id: &str, secret: &str) -> String {
    use base64::Engine;
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            encode(client_id),
            encode(secret)
        ))
    )
}
