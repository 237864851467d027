//! The HTTPS server: rustls listener, one task per connection (peer certificate captured
//! once, at the handshake), routing, limits and timeouts, housekeeping, graceful shutdown.
//!
//! Handlers live in their own modules and return `Result<Response, OAuthError>`; the
//! mapping of errors to HTTP is `error.rs` alone. Nothing below this module knows HTTP.

pub mod authority;
mod authorize;
mod control_listener;
pub mod error;
mod fresh_auth;
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod fuzzing;
mod introspection;
pub mod meta;
mod people_pages;
mod request;
mod response;
mod token_endpoint;
mod user_grants;

use crate::clock::Clock;
use crate::config::Settings;
use crate::core::certificate::{CertificateSources, RequestCertificate};
use crate::store::SenderStore;
use crate::telemetry::events;
use crate::telemetry::metrics::{EndpointLabel, KindLabel, Metrics};
use authority::Authority;
use authority::Snapshot;
use bytes::Bytes;
use error::OAuthError;
use http::{Method, Request};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use response::Response;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Token(#[from] crate::token::TokenError),
    #[error(transparent)]
    KeySet(#[from] crate::keyset::KeySetError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("the configured issuer does not give a usable token endpoint URL")]
    Issuer,
    /// The store failed in a way only a new process can repair (see
    /// `store::health::EXIT_STORE_FAILED`, the exit status `sealkit serve` gives it).
    #[error("the store failed and cannot recover in this process: {0}")]
    StoreFailed(String),
}

pub use crate::listener::ConnectionContext;
use crate::listener::Drain;

/// Decides which client certificate a request carries: the connection's own, or — only
/// from a configured trusted proxy — the one in its RFC 9440 `Client-Cert` header.
pub fn request_certificate(
    snapshot: &Snapshot,
    connection: &ConnectionContext,
    headers: &http::HeaderMap,
) -> RequestCertificate {
    let from_trusted_proxy = snapshot
        .settings
        .trusted_proxies
        .contains(&connection.peer.ip());
    let forwarded = headers.get("client-cert").map(|v| v.as_bytes());
    if !from_trusted_proxy && forwarded.is_some() {
        tracing::warn!(
            event = events::SENDER_CONSTRAINT, decision = "ignored", reason = "client-cert-header-from-untrusted-peer",
            peer = %connection.peer,
        );
    }
    crate::core::certificate::request_certificate(&CertificateSources {
        connection: connection.client_certificate.as_ref(),
        from_trusted_proxy,
        client_cert_header: forwarded,
        client_cert_chain_header: headers.get("client-cert-chain").map(|v| v.as_bytes()),
        verifier: snapshot.client_verifier.as_deref(),
    })
}

/// Creates `dir` (and parents) with mode 0700 when missing; it holds keys and the store.
pub(crate) fn create_private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// How long a graceful shutdown lets the requests in flight finish before their
/// connections are cut (systemd's `TimeoutStopSec` in kit/sealkit.service is longer).
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How long closing the store may take at the end of a shutdown.
const END_RUN_DEADLINE: Duration = Duration::from_secs(10);

/// A server started in this process, stopped with [`RunningServer::shutdown`].
pub struct RunningServer {
    pub addr: SocketAddr,
    /// Where the loopback metrics listener is bound (`metrics.listen`, its port resolved).
    pub metrics_addr: SocketAddr,
    pub authority: Arc<Authority>,
    shutdown: watch::Sender<bool>,
    drain: Arc<watch::Sender<Drain>>,
    /// Set by the housekeeping task when the store failed for good (its reason).
    store_failed: watch::Receiver<Option<String>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Options a test or benchmark may change; `serve` uses the defaults.
#[derive(Default, Clone)]
pub struct StartOptions {
    pub clock: Clock,
    /// The configuration file, re-read on reload (SIGHUP or the control socket).
    pub config_path: Option<std::path::PathBuf>,
}

/// Opens the store and key, builds the authority and starts serving on `listener`.
pub async fn start(
    settings: Settings,
    listener: TcpListener,
    options: StartOptions,
) -> Result<RunningServer, ServerError> {
    create_private_dir(&settings.data_dir).map_err(|source| ServerError::Io {
        context: format!(
            "cannot create the data directory {}",
            settings.data_dir.display()
        ),
        source,
    })?;
    let snapshot = authority::Snapshot::build(settings)?;
    let settings = snapshot.settings.clone();
    let signing_key =
        crate::keyset::KeyRing::load_or_create(&settings.data_dir, options.clock.now())?;
    let store: Arc<dyn SenderStore> = crate::store::open_store(&settings).await?;
    let metrics = Arc::new(Metrics::with_store_commits(store.commit_seconds()));
    let authority = Arc::new(
        Authority::start(
            snapshot,
            options.config_path,
            signing_key,
            store,
            metrics,
            options.clock,
        )
        .await?,
    );
    let addr = listener.local_addr().map_err(|source| ServerError::Io {
        context: "listener address".into(),
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (drain, drain_rx) = watch::channel(Drain::Serving);
    let (store_failed_tx, store_failed) = watch::channel(None);

    let mut tasks = Vec::new();
    // The loopback plain-HTTP listener that serves only `/metrics` (always on; the public
    // listener serves it too only with `metrics.public`).
    let metrics_listener = TcpListener::bind(settings.metrics_listen)
        .await
        .map_err(|source| ServerError::Io {
            context: format!(
                "cannot listen on {} for metrics (metrics.listen)",
                settings.metrics_listen
            ),
            source,
        })?;
    let metrics_addr = metrics_listener
        .local_addr()
        .map_err(|source| ServerError::Io {
            context: "metrics listener address".into(),
            source,
        })?;
    {
        let authority = authority.clone();
        tasks.push(tokio::spawn(crate::listener::serve_plain(
            metrics_listener,
            shutdown_rx.clone(),
            move |request: Request<Incoming>| {
                let authority = authority.clone();
                async move {
                    if request.uri().path() == "/metrics" {
                        meta::metrics(&authority, request.headers())
                    } else {
                        OAuthError::NotFound.into_response()
                    }
                }
            },
        )));
    }
    let socket_path = crate::control::socket_path(&settings.data_dir);
    let control = control_listener::bind(&socket_path).map_err(|source| ServerError::Io {
        context: format!("cannot open the control socket {}", socket_path.display()),
        source,
    })?;
    tasks.push(tokio::spawn(control_listener::serve(
        control,
        control_listener::owner_uid(&socket_path),
        authority.clone(),
        shutdown_rx.clone(),
    )));
    tasks.push(tokio::spawn(housekeeping(
        authority.clone(),
        shutdown_rx,
        store_failed_tx,
    )));
    tasks.push(tokio::spawn(crate::listener::accept_loop(
        listener,
        authority.clone(),
        settings.limits.max_connections,
        drain_rx,
    )));
    tracing::info!(event = events::SERVER_STARTED, addr = %addr, metrics_addr = %metrics_addr, issuer = %settings.issuer, signing_kid = authority.core.signing_key.kid());
    Ok(RunningServer {
        addr,
        metrics_addr,
        authority,
        shutdown,
        drain: Arc::new(drain),
        store_failed,
        tasks,
    })
}

impl RunningServer {
    /// Stops accepting, lets in-flight requests finish (up to [`DRAIN_DEADLINE`]), ends
    /// every connection task, then closes the store cleanly.
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown_within(DRAIN_DEADLINE).await
    }

    /// [`RunningServer::shutdown`] with another drain deadline.
    ///
    /// The store is marked clean only after every connection task has ended: a task still
    /// running could claim a jti after the final flush, and the next start would then
    /// trust a store that lacks that claim (no fence). Tasks still busy at the deadline
    /// are cut; a request cut short gets no answer, so nothing it did was promised.
    pub async fn shutdown_within(self, drain: Duration) -> Result<(), ServerError> {
        let _ = self
            .drain
            .send(Drain::Until(tokio::time::Instant::now() + drain));
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        match tokio::time::timeout(END_RUN_DEADLINE, self.authority.store().end_run()).await {
            Ok(result) => result?,
            Err(_) => {
                // Not marked clean: the next start raises the restart fence.
                return Err(ServerError::Store(crate::store::StoreError::Unavailable(
                    format!("closing the store took longer than {END_RUN_DEADLINE:?}"),
                )));
            }
        }
        let socket = crate::control::socket_path(&self.authority.current().settings.data_dir);
        let _ = std::fs::remove_file(socket);
        tracing::info!(event = events::SERVER_STOPPED, addr = %self.addr);
        Ok(())
    }
}

/// `sealkit serve`: binds, serves until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn run(settings: Settings, config_path: std::path::PathBuf) -> Result<(), ServerError> {
    let server = bind_and_start(settings, config_path).await?;
    server.serve_until_signal().await
}

/// Binds the configured address and starts serving (what `run` does before waiting).
pub async fn bind_and_start(
    settings: Settings,
    config_path: std::path::PathBuf,
) -> Result<RunningServer, ServerError> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| ServerError::Io {
            context: format!("cannot listen on {}", settings.listen),
            source,
        })?;
    let options = StartOptions {
        config_path: Some(config_path),
        ..StartOptions::default()
    };
    let server = start(settings, listener, options).await?;
    // The line supervisors and tests wait for; a stdout nobody reads must not panic the
    // server (`println!` would), so a failed write is ignored.
    let _ = std::io::Write::write_fmt(
        &mut std::io::stdout(),
        format_args!(
            "sealkit listening on https://{} (metrics: http://{}/metrics)\n",
            server.addr, server.metrics_addr
        ),
    );
    Ok(server)
}

impl RunningServer {
    /// Serves until SIGTERM or SIGINT (SIGHUP reloads), then shuts down gracefully; a
    /// second SIGTERM or SIGINT cuts the drain short. Also stops when the store failed for
    /// good, and then returns [`ServerError::StoreFailed`].
    pub async fn serve_until_signal(self) -> Result<(), ServerError> {
        let mut store_failed = self.store_failed.clone();
        let failed = tokio::select! {
            _ = wait_for_termination(&self.authority) => None,
            reason = store_failed.wait_for(Option::is_some) => match reason {
                Ok(reason) => reason.clone(),
                Err(_) => None,
            },
        };
        let drain = self.drain.clone();
        let second = tokio::spawn(async move {
            wait_for_second_signal().await;
            tracing::warn!(
                event = events::SERVER_STOPPED,
                "second termination signal: ending every connection now"
            );
            let _ = drain.send(Drain::Now);
        });
        let result = self.shutdown().await;
        second.abort();
        match failed {
            Some(reason) => Err(ServerError::StoreFailed(reason)),
            None => result,
        }
    }
}

/// Waits for SIGTERM or SIGINT.
async fn wait_for_second_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Waits for SIGTERM or SIGINT; SIGHUP reloads the configuration meanwhile.
async fn wait_for_termination(authority: &Authority) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hangup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
            _ = hangup.recv() => {
                if let Err(e) = authority.reload() {
                    tracing::error!(event = events::CONFIG_RELOAD_FAILED, error = %e, "reload refused; the running configuration is unchanged");
                }
            }
        }
    }
}

impl crate::listener::Handler for Authority {
    type Body = http_body_util::Full<Bytes>;

    fn connection_policy(&self) -> crate::listener::ConnectionPolicy {
        // The TLS configuration and limits of the current snapshot (a reload may swap them).
        let snapshot = self.current();
        crate::listener::ConnectionPolicy {
            tls: snapshot.tls.clone(),
            client_verifier: snapshot.client_verifier.clone(),
            limits: snapshot.settings.limits.clone(),
            max_headers: 64,
        }
    }

    async fn handle(
        self: Arc<Self>,
        connection: Arc<ConnectionContext>,
        request: Request<Incoming>,
    ) -> Response {
        dispatch(&self, &connection, request).await
    }

    fn connection_error(&self, peer: SocketAddr, error: &dyn std::fmt::Display) {
        tracing::debug!(event = events::CONNECTION_ERROR, peer = %peer, error = %error);
    }
}

/// Routes one request and records its latency.
async fn dispatch(
    authority: &Authority,
    connection: &ConnectionContext,
    request: Request<Incoming>,
) -> Response {
    let started = Instant::now();
    let (parts, body) = request.into_parts();
    let path = parts.uri.path();
    let (endpoint, result): (&'static str, Result<Response, OAuthError>) = match path {
        "/token" | "/introspect" | "/revoke" | "/fresh-auth" => {
            let endpoint = match path {
                "/token" => "token",
                "/introspect" => "introspect",
                "/fresh-auth" => "fresh-auth",
                _ => "revoke",
            };
            if parts.method != Method::POST {
                (endpoint, Err(OAuthError::MethodNotAllowed("POST")))
            } else {
                let limits = authority.current().settings.limits.clone();
                match read_body(body, limits.max_body_bytes, limits.body_read_timeout).await {
                    Err(e) => (endpoint, Err(e)),
                    Ok(body) => {
                        let result = match endpoint {
                            "token" => {
                                token_endpoint::handle(authority, connection, &parts.headers, &body)
                                    .await
                            }
                            "introspect" => {
                                introspection::introspect(
                                    authority,
                                    connection,
                                    &parts.headers,
                                    &body,
                                )
                                .await
                            }
                            "fresh-auth" => {
                                fresh_auth::handle(authority, connection, &parts.headers, &body)
                                    .await
                            }
                            _ => {
                                introspection::revoke(authority, connection, &parts.headers, &body)
                                    .await
                            }
                        };
                        (endpoint, result)
                    }
                }
            }
        }
        "/authorize" | "/authorize/login" | "/authorize/decision" => {
            let limits = authority.current().settings.limits.clone();
            let result =
                match read_body(body, limits.max_body_bytes, limits.body_read_timeout).await {
                    Err(e) => Err(e),
                    Ok(body) => {
                        authorize::handle(
                            authority,
                            connection,
                            &parts.method,
                            path,
                            parts.uri.query(),
                            &parts.headers,
                            &body,
                        )
                        .await
                    }
                };
            ("authorize", result)
        }
        "/device_authorization" | "/device" | "/device/decision" => {
            // The user grants' endpoints and pages (`user_grants`, `people_pages`).
            let endpoint = if path == "/device_authorization" {
                "device_authorization"
            } else {
                "device"
            };
            let limits = authority.current().settings.limits.clone();
            let result = match read_body(body, limits.max_body_bytes, limits.body_read_timeout)
                .await
            {
                Err(e) => Err(e),
                Ok(_) if path == "/device_authorization" && parts.method != Method::POST => {
                    Err(OAuthError::MethodNotAllowed("POST"))
                }
                Ok(body) if path == "/device_authorization" => {
                    user_grants::device_authorization(authority, connection, &parts.headers, &body)
                        .await
                }
                Ok(body) => {
                    people_pages::device(
                        authority,
                        connection,
                        &parts.method,
                        path,
                        parts.uri.query(),
                        &parts.headers,
                        &body,
                    )
                    .await
                }
            };
            (endpoint, result)
        }
        _ if parts.method != Method::GET && parts.method != Method::HEAD => {
            ("other", Err(OAuthError::NotFound))
        }
        "/jwks" => ("jwks", Ok(meta::jwks(authority))),
        // RFC 8414 only: this authority issues no ID token, so it does not pretend to be an
        // OpenID provider (`openid-configuration` is 404).
        "/.well-known/oauth-authorization-server" => ("discovery", Ok(meta::discovery(authority))),
        "/health" => ("health", Ok(meta::health())),
        "/ready" => ("ready", Ok(meta::ready(authority).await)),
        "/metrics" if authority.current().settings.metrics_public => {
            ("metrics", Ok(meta::metrics(authority, &parts.headers)))
        }
        _ => ("other", Err(OAuthError::NotFound)),
    };
    let response = result.unwrap_or_else(OAuthError::into_response);
    authority
        .metrics()
        .request_seconds
        .get_or_create(&EndpointLabel { endpoint })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// Reads a request body of at most `limit` bytes within `deadline` (from the end of the
/// headers): a client that dribbles its body gets 408 and loses the connection instead of
/// holding a connection slot.
async fn read_body(body: Incoming, limit: usize, deadline: Duration) -> Result<Bytes, OAuthError> {
    let collected = match tokio::time::timeout(deadline, Limited::new(body, limit).collect()).await
    {
        Ok(collected) => collected,
        Err(_) => return Err(OAuthError::RequestTimeout),
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(OAuthError::PayloadTooLarge)
        }
        Err(_) => Err(OAuthError::InvalidRequest(
            "the request body could not be read".into(),
        )),
    }
}

/// Every second: the store's health into its gauges, and a stop request when the store
/// failed for good (`serve_until_signal` then exits with `EXIT_STORE_FAILED`). Every
/// fifth second: sweeps expired store entries (which is also what retries a failed
/// store when no request arrives), refreshes the store size gauges and ends expired
/// bypasses.
async fn housekeeping(
    authority: Arc<Authority>,
    mut shutdown: watch::Receiver<bool>,
    store_failed: watch::Sender<Option<String>>,
) {
    const SWEEP_EVERY_TICKS: u64 = 5;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut published = PublishedHealth::default();
    for n in 0u64.. {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        authority.follow_key_schedule();
        let health = authority.store().health();
        published.publish(authority.metrics(), &health);
        if health.state == crate::store::StoreState::Fatal && store_failed.borrow().is_none() {
            let reason = health.reason.unwrap_or_default();
            tracing::error!(event = events::STORE_FAILED, reason = %reason, "the store cannot recover in this process: stopping so the supervisor starts a new one");
            let _ = store_failed.send(Some(reason));
        }
        if n % SWEEP_EVERY_TICKS != 0 {
            continue;
        }
        authority.core.bypass.expire(authority.core.clock.now());
        authority.refresh_bypass_gauge();
        if let Err(e) = authority.store().sweep(authority.core.clock.now()).await {
            authority.metrics().store_errors.inc();
            tracing::error!(event = events::STORE_ERROR, error = %e, "sweep failed");
        }
        let size = authority.store().size();
        for (kind, value) in [
            ("nonce", size.nonces),
            ("jti", size.jti_claims),
            ("token", size.tokens),
        ] {
            authority
                .metrics()
                .store_entries
                .get_or_create(&KindLabel { kind })
                .set(value as i64);
        }
    }
}

/// The store's cumulative counts already added to the metrics' counters.
#[derive(Default)]
struct PublishedHealth {
    claims_lost: u64,
    reopened: u64,
    commits: u64,
}

impl PublishedHealth {
    fn publish(&mut self, metrics: &Metrics, health: &crate::store::StoreHealth) {
        use crate::store::health::Cause;
        use crate::telemetry::metrics::CauseLabel;
        let up = health.state == crate::store::StoreState::Available;
        metrics.store_up.set(i64::from(up));
        metrics.store_down_since.set(health.since.unwrap_or(0));
        for cause in Cause::ALL {
            let current = !up && health.cause == Some(cause);
            metrics
                .store_down
                .get_or_create(&CauseLabel {
                    cause: cause.label(),
                })
                .set(i64::from(current));
        }
        metrics
            .store_claims_lost
            .inc_by(health.claims_lost.saturating_sub(self.claims_lost));
        metrics
            .store_reopened
            .inc_by(health.reopened.saturating_sub(self.reopened));
        metrics
            .store_commits
            .inc_by(health.commits.saturating_sub(self.commits));
        self.commits = self.commits.max(health.commits);
        self.claims_lost = self.claims_lost.max(health.claims_lost);
        self.reopened = self.reopened.max(health.reopened);
    }
}
