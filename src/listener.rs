//! The HTTPS connection loop shared by the authority (`server`) and `sealkit guard`:
//! accept with a connection cap, the TLS handshake within its deadline, the client
//! certificate judged once per connection, HTTP/1.1 with header limits, and a shutdown
//! that drains requests in flight until a deadline (or ends them at once), then aborts and
//! joins every connection task — so the caller can close its store knowing no request can
//! still claim a jti.
//!
//! What a request means is the [`Handler`]'s business; this module knows no endpoint.

use crate::config::LimitsSettings;
use crate::mtls::PeerCertificate;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// What the accept loop does about its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    Serving,
    /// Stop accepting; let requests in flight finish until then.
    Until(tokio::time::Instant),
    /// End every connection now (a second SIGTERM).
    Now,
}

/// What is known about the connection a request arrived on, fixed at the handshake.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    pub peer: SocketAddr,
    /// The client certificate presented in the handshake (RFC 8705), judged once.
    pub client_certificate: Option<Arc<PeerCertificate>>,
}

/// How new connections are served, read from the current configuration at each accept (a
/// reload may swap it).
pub struct ConnectionPolicy {
    pub tls: Arc<rustls::ServerConfig>,
    /// Judges client-certificate chains, when client certificates are configured.
    pub client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    pub limits: LimitsSettings,
    pub max_headers: usize,
}

/// The requests' side of a listener.
pub trait Handler: Send + Sync + 'static {
    type Body: hyper::body::Body<Data = Bytes> + Send + 'static;

    /// The policy for the next connection.
    fn connection_policy(&self) -> ConnectionPolicy;

    /// Answers one request.
    fn handle(
        self: Arc<Self>,
        connection: Arc<ConnectionContext>,
        request: Request<Incoming>,
    ) -> impl Future<Output = Response<Self::Body>> + Send;

    /// A connection ended with a protocol or I/O error (for the log).
    fn connection_error(&self, peer: SocketAddr, error: &dyn std::fmt::Display);
}

/// Serves `listener` until `drain` leaves [`Drain::Serving`], then drains and joins.
pub async fn accept_loop<H: Handler>(
    listener: TcpListener,
    handler: Arc<H>,
    max_connections: usize,
    mut drain: watch::Receiver<Drain>,
) where
    <H::Body as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = Arc::new(Semaphore::new(max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    // Every connection task, so a shutdown can wait for (or end) all of them before the
    // store is closed.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    handler.connection_error(SocketAddr::from(([0, 0, 0, 0], 0)), &e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = drain.changed() => break,
        };
        // Forget the tasks that have ended (the set keeps their results until joined).
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            drop(tcp); // over the connection cap: refuse rather than queue without bound
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let policy = handler.connection_policy();
        let acceptor = tokio_rustls::TlsAcceptor::from(policy.tls.clone());
        let handler = handler.clone();
        let watcher = graceful.watcher();
        tasks.spawn(async move {
            let _permit = permit;
            let limits = &policy.limits;
            let tls =
                match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        handler.connection_error(peer, &e);
                        return;
                    }
                    Err(_) => return,
                };
            let client_certificate =
                match (tls.get_ref().1.peer_certificates(), &policy.client_verifier) {
                    (Some(chain), Some(verifier)) => {
                        PeerCertificate::inspect(chain, verifier.as_ref()).map(Arc::new)
                    }
                    _ => None,
                };
            let context = Arc::new(ConnectionContext {
                peer,
                client_certificate,
            });
            let serving = handler.clone();
            let service = service_fn(move |request| {
                let handler = serving.clone();
                let context = context.clone();
                async move { Ok::<_, Infallible>(handler.handle(context, request).await) }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .max_buf_size(limits.max_header_bytes)
                .max_headers(policy.max_headers)
                // Head and body in one buffer: over TLS that is one record and one
                // write, where vectored writes made two records per response.
                .writev(false)
                .keep_alive(true);
            let connection = builder.serve_connection(TokioIo::new(tls), service);
            if let Err(e) = watcher.watch(connection).await {
                handler.connection_error(peer, &e);
            }
        });
    }
    drop(listener);
    // Idle keep-alive connections close at once; requests in flight may finish until the
    // deadline, or until a second signal says now.
    let drained = graceful.shutdown();
    tokio::pin!(drained);
    loop {
        let state = *drain.borrow_and_update();
        match state {
            Drain::Now => break,
            Drain::Serving => {
                if drain.changed().await.is_err() {
                    break;
                }
            }
            Drain::Until(deadline) => {
                tokio::select! {
                    _ = &mut drained => break,
                    _ = tokio::time::sleep_until(deadline) => break,
                    changed = drain.changed() => if changed.is_err() { break },
                }
            }
        }
    }
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
}

/// A plain-HTTP listener for the operational endpoints (`/metrics`, and the guard's
/// `/health` and `/ready`), loopback only by configuration; `answer` serves each request.
pub async fn serve_plain<F, Fut, B>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    answer: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<B>> + Send + 'static,
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted { Ok(pair) => pair, Err(_) => continue },
            _ = shutdown.changed() => return,
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = answer(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
