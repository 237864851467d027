//! `sealkit guard`: the resource side. A reverse proxy in front of the site's resource
//! services that enforces what the authority's tokens are bound to: it verifies access
//! tokens offline against the authority's keys (RFC 9068), admits the request's DPoP proof
//! through the same core gate as the authority (RFC 9449 §7: `ath`, `htm`/`htu` of this
//! request, jti claimed in the guard's own store, resource nonces, restart fence) or checks
//! the certificate binding (RFC 8705 §3), applies the route's audience and scopes, strips
//! credentials and spoofable identity headers, and forwards with `X-Sealkit-*` identity
//! headers.
//!
//! Modules: [`config`] (guard.yaml), [`keys`] (JWKS, last known good, token verification),
//! [`enforce`] (the decision, no HTTP), [`introspect`] (RFC 7662 for sensitive routes),
//! [`forward`] (upstream), [`metrics`], [`echo`] (the demo's upstream). This module owns the
//! listener, the error answers and reload.

pub mod config;
pub mod echo;
pub mod enforce;
pub mod forward;
pub mod introspect;
pub mod keys;
pub mod metrics;

use crate::clock::Clock;
use crate::core::certificate::{CertificateSources, RequestCertificate};
use crate::core::gate::{Gate, GateTelemetry};
use crate::listener::Drain;
use crate::mtls::PeerCertificate;
use crate::store::{PreviousShutdown, SenderStore};
use arc_swap::ArcSwap;
use config::GuardSettings;
use enforce::{Enforcer, Refusal, ResourceRequest};
use forward::{full, Body, Forwarder, UpstreamError};
use http::{HeaderValue, Request, StatusCode};
use hyper::body::Incoming;
use keys::AccessTokenKeys;
use metrics::GuardMetrics;
use serde_json::json;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Stable event names of the guard's log lines.
pub mod events {
    pub const REQUEST: &str = "guard.request";
    pub const DPOP_REPLAY: &str = "guard.dpop.replay";
    pub const FENCE: &str = "guard.store.restartFence";
    pub const STORE_ERROR: &str = "guard.store.error";
    pub const KEYS: &str = "guard.keys";
    pub const INTROSPECTION: &str = "guard.introspection";
    pub const STARTED: &str = "guard.started";
    pub const STOPPED: &str = "guard.stopped";
    pub const RELOADED: &str = "guard.config.reloaded";
    pub const RELOAD_FAILED: &str = "guard.config.reloadFailed";
    pub const CONNECTION_ERROR: &str = "guard.connection.error";
    pub const STORE_FAILED: &str = "guard.store.failed";
}

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Introspection(#[from] introspect::IntrospectionError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    #[error("{0} changed; that needs a restart, not a reload")]
    NeedsRestart(&'static str),
    /// The store failed in a way only a new process can repair (exit status
    /// `store::health::EXIT_STORE_FAILED`, as for `sealkit serve`).
    #[error("the store failed and cannot recover in this process: {0}")]
    StoreFailed(String),
}

/// How long requests in flight may finish after SIGTERM.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Everything derived from one guard.yaml; a reload swaps it whole.
pub struct GuardSnapshot {
    pub settings: Arc<GuardSettings>,
    tls: Arc<rustls::ServerConfig>,
    client_verifier: Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>,
    keys: Arc<AccessTokenKeys>,
    introspection: Option<Arc<introspect::Introspector>>,
}

impl GuardSnapshot {
    async fn build(settings: GuardSettings) -> Result<GuardSnapshot, GuardError> {
        let client_verifier = crate::tls::client_verifier_for(
            settings.tls_client_ca.as_deref(),
            settings.tls_client_crl.as_deref(),
        )?;
        let tls = crate::tls::server_config_for(
            &settings.tls_certificate,
            &settings.tls_private_key,
            client_verifier.clone(),
        )?;
        let keys = Arc::new(AccessTokenKeys::load(&settings.keys, &settings.data_dir).await);
        let introspection = match (&settings.introspection, &settings.keys.ca_file) {
            (Some(i), Some(ca)) => Some(Arc::new(introspect::Introspector::new(i, ca)?)),
            _ => None,
        };
        Ok(GuardSnapshot {
            settings: Arc::new(settings),
            tls,
            client_verifier,
            keys,
            introspection,
        })
    }
}

/// The guard's shared state.
pub struct Guard {
    snapshot: ArcSwap<GuardSnapshot>,
    config_path: Option<PathBuf>,
    pub gate: Gate,
    pub metrics: Arc<GuardMetrics>,
    pub clock: Clock,
    forwarder: Forwarder,
}

impl Guard {
    pub fn current(&self) -> Arc<GuardSnapshot> {
        self.snapshot.load_full()
    }

    /// Re-reads guard.yaml and swaps it in, or changes nothing and says why.
    pub async fn reload(&self) -> Result<(), GuardError> {
        let path = self
            .config_path
            .as_ref()
            .ok_or(GuardError::NeedsRestart("the configuration source"))?;
        let settings = GuardSettings::load(path)?;
        let running = self.current().settings.clone();
        if settings.listen != running.listen {
            return Err(GuardError::NeedsRestart("listen"));
        }
        if settings.data_dir != running.data_dir {
            return Err(GuardError::NeedsRestart("dataDir"));
        }
        if settings.storage != running.storage {
            return Err(GuardError::NeedsRestart("storage"));
        }
        if settings.metrics_listen != running.metrics_listen {
            return Err(GuardError::NeedsRestart("metrics.listen"));
        }
        let snapshot = GuardSnapshot::build(settings).await?;
        self.metrics.keys.set(snapshot.keys.count() as i64);
        let routes = snapshot.settings.routes.len();
        self.snapshot.store(Arc::new(snapshot));
        tracing::info!(event = events::RELOADED, routes);
        Ok(())
    }
}

/// A guard started in this process.
pub struct RunningGuard {
    pub addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub guard: Arc<Guard>,
    shutdown: watch::Sender<bool>,
    drain: Arc<watch::Sender<Drain>>,
    /// Set by the housekeeping task when the store failed for good (its reason).
    store_failed: watch::Receiver<Option<String>>,
    listener_task: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

/// Options a test may change.
#[derive(Default, Clone)]
pub struct GuardOptions {
    pub clock: Clock,
    pub config_path: Option<PathBuf>,
}

/// Opens the guard's store and keys and starts serving on `listener`.
pub async fn start(
    settings: GuardSettings,
    listener: TcpListener,
    options: GuardOptions,
) -> Result<RunningGuard, GuardError> {
    crate::server::create_private_dir(&settings.data_dir).map_err(|source| GuardError::Io {
        context: format!("cannot create {}", settings.data_dir.display()),
        source,
    })?;
    let store: Arc<dyn SenderStore> = crate::store::open_store_for(
        &settings.storage,
        &settings.data_dir,
        settings.dpop.replay_window,
    )
    .await?;
    let previous = store.begin_run().await?;
    let metrics = Arc::new(GuardMetrics::new());
    let gate = Gate::new(
        store,
        GateTelemetry {
            nonce_miss: metrics.dpop_nonce_miss.clone(),
            replay: metrics.dpop_replay.clone(),
            replay_event: events::DPOP_REPLAY,
            fence_event: events::FENCE,
        },
    );
    if previous == PreviousShutdown::Unclean {
        gate.raise_fence(
            options.clock.now(),
            settings.dpop.replay_window.as_secs() as i64,
            "the previous run ended uncleanly",
        );
    }
    let snapshot = GuardSnapshot::build(settings).await?;
    metrics.keys.set(snapshot.keys.count() as i64);
    let settings = snapshot.settings.clone();
    let guard = Arc::new(Guard {
        snapshot: ArcSwap::from_pointee(snapshot),
        config_path: options.config_path,
        gate,
        metrics,
        clock: options.clock,
        forwarder: Forwarder::default(),
    });
    let addr = listener.local_addr().map_err(|source| GuardError::Io {
        context: "listener address".into(),
        source,
    })?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let (drain, drain_rx) = watch::channel(Drain::Serving);
    let (store_failed_tx, store_failed) = watch::channel(None);
    let mut tasks = Vec::new();
    let metrics_addr = match settings.metrics_listen {
        Some(at) => {
            let listener = TcpListener::bind(at)
                .await
                .map_err(|source| GuardError::Io {
                    context: format!("cannot listen on {at} for metrics"),
                    source,
                })?;
            let bound = listener.local_addr().ok();
            let local = guard.clone();
            // The plain-HTTP loopback listener for `/metrics`, `/health`, `/ready`.
            tasks.push(tokio::spawn(crate::listener::serve_plain(
                listener,
                shutdown_rx.clone(),
                move |request: Request<Incoming>| {
                    let guard = local.clone();
                    async move {
                        let path = request.uri().path().to_string();
                        match path.as_str() {
                            "/health" | "/ready" | "/metrics" => {
                                local_endpoint(&guard, &path).await
                            }
                            _ => json_answer(StatusCode::NOT_FOUND, json!({"error": "not_found"})),
                        }
                    }
                },
            )));
            bound
        }
        None => None,
    };
    tasks.push(tokio::spawn(housekeeping(
        guard.clone(),
        shutdown_rx,
        store_failed_tx,
    )));
    let listener_task = tokio::spawn(crate::listener::accept_loop(
        listener,
        guard.clone(),
        settings.limits.max_connections,
        drain_rx,
    ));
    tracing::info!(event = events::STARTED, addr = %addr, routes = settings.routes.len(), keys = guard.current().keys.count());
    Ok(RunningGuard {
        addr,
        metrics_addr,
        guard,
        shutdown,
        drain: Arc::new(drain),
        store_failed,
        listener_task,
        tasks,
    })
}

impl RunningGuard {
    /// Stops accepting, lets requests in flight finish (up to 10 s), ends and joins every
    /// connection, then closes the store cleanly: no request can claim a jti after the
    /// store is marked clean.
    pub async fn shutdown(self) -> Result<(), GuardError> {
        let _ = self
            .drain
            .send(Drain::Until(tokio::time::Instant::now() + DRAIN_DEADLINE));
        let _ = self.listener_task.await;
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        self.guard.gate.store().end_run().await?;
        tracing::info!(event = events::STOPPED, addr = %self.addr);
        Ok(())
    }

    /// Serves until SIGTERM or SIGINT (SIGHUP reloads), then shuts down; a second signal
    /// ends the drain at once. Also stops when the store failed for good.
    pub async fn serve_until_signal(self) -> Result<(), GuardError> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut store_failed = self.store_failed.clone();
        let failed = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            (Ok(mut term), Ok(mut hangup)) => loop {
                tokio::select! {
                    _ = term.recv() => break None,
                    _ = tokio::signal::ctrl_c() => break None,
                    reason = store_failed.wait_for(Option::is_some) => {
                        break reason.ok().and_then(|r| r.clone())
                    }
                    _ = hangup.recv() => {
                        if let Err(e) = self.guard.reload().await {
                            tracing::error!(event = events::RELOAD_FAILED, error = %e, "reload refused; the running configuration is unchanged");
                        }
                    }
                }
            },
            _ => {
                let _ = tokio::signal::ctrl_c().await;
                None
            }
        };
        let drain = self.drain.clone();
        let second = tokio::spawn(async move {
            if let Ok(mut term) = signal(SignalKind::terminate()) {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                let _ = drain.send(Drain::Now);
            }
        });
        let result = self.shutdown().await;
        second.abort();
        match failed {
            Some(reason) => Err(GuardError::StoreFailed(reason)),
            None => result,
        }
    }
}

/// `sealkit guard --config FILE`: binds, serves until SIGTERM.
pub async fn run(settings: GuardSettings, config_path: PathBuf) -> Result<(), GuardError> {
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| GuardError::Io {
            context: format!("cannot listen on {}", settings.listen),
            source,
        })?;
    let guard = start(
        settings,
        listener,
        GuardOptions {
            config_path: Some(config_path),
            ..GuardOptions::default()
        },
    )
    .await?;
    // The line supervisors and tests wait for; a stdout nobody reads must not panic the
    // server (`println!` would), so a failed write is ignored.
    let _ = std::io::Write::write_fmt(
        &mut std::io::stdout(),
        format_args!("sealkit guard listening on https://{}\n", guard.addr),
    );
    guard.serve_until_signal().await
}

impl crate::listener::Handler for Guard {
    type Body = Body;

    fn connection_policy(&self) -> crate::listener::ConnectionPolicy {
        let snapshot = self.current();
        crate::listener::ConnectionPolicy {
            tls: snapshot.tls.clone(),
            client_verifier: snapshot.client_verifier.clone(),
            limits: snapshot.settings.limits.clone(),
            max_headers: 100,
        }
    }

    async fn handle(
        self: Arc<Self>,
        connection: Arc<crate::listener::ConnectionContext>,
        request: Request<Incoming>,
    ) -> Response {
        handle(
            &self,
            connection.peer,
            connection.client_certificate.as_ref(),
            request,
        )
        .await
    }

    fn connection_error(&self, peer: SocketAddr, error: &dyn std::fmt::Display) {
        tracing::debug!(event = events::CONNECTION_ERROR, peer = %peer, error = %error);
    }
}

type Response = http::Response<Body>;

fn json_answer(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = http::Response::new(full(serde_json::to_vec(&body).unwrap_or_default()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response.headers_mut().insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    response
}

/// The answer to a refused request: RFC 6750 §3 / RFC 9449 §7.1, the error always in the
/// `WWW-Authenticate` header; every DPoP challenge carries `algs`.
fn refusal_response(refusal: &Refusal, dpop_route: bool, algs: &str) -> Response {
    let challenge = |error: Option<&str>, description: &str, dpop: bool| -> String {
        let scheme = if dpop { "DPoP" } else { "Bearer" };
        let mut parts = Vec::new();
        if let Some(error) = error {
            parts.push(format!("error=\"{error}\""));
            parts.push(format!(
                "error_description=\"{}\"",
                description.replace(['"', '\\'], "'")
            ));
        }
        if dpop {
            parts.push(format!("algs=\"{algs}\""));
        }
        if parts.is_empty() {
            scheme.to_string()
        } else {
            format!("{scheme} {}", parts.join(", "))
        }
    };
    let (status, code, description, www, nonce) = match refusal {
        Refusal::NoRoute => (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such resource".to_string(),
            None,
            None,
        ),
        Refusal::NoToken => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "an access token is required".to_string(),
            Some(challenge(None, "", dpop_route)),
            None,
        ),
        Refusal::InvalidRequest { description, .. } => (
            StatusCode::BAD_REQUEST,
            "invalid_request",
            description.to_string(),
            Some(challenge(Some("invalid_request"), description, dpop_route)),
            None,
        ),
        Refusal::InvalidToken { description, .. } => (
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            description.to_string(),
            Some(challenge(Some("invalid_token"), description, dpop_route)),
            None,
        ),
        Refusal::InvalidDpopProof { description, .. } => (
            StatusCode::UNAUTHORIZED,
            "invalid_dpop_proof",
            description.clone(),
            Some(challenge(Some("invalid_dpop_proof"), description, true)),
            None,
        ),
        Refusal::UseDpopNonce { nonce } => (
            StatusCode::UNAUTHORIZED,
            "use_dpop_nonce",
            "a resource nonce is required in the DPoP proof".to_string(),
            Some(challenge(
                Some("use_dpop_nonce"),
                "a resource nonce is required in the DPoP proof",
                true,
            )),
            Some(nonce.clone()),
        ),
        Refusal::InsufficientScope { scope } => (
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this request needs the scope `{scope}`"),
            Some(format!(
                "{}, scope=\"{scope}\"",
                challenge(
                    Some("insufficient_scope"),
                    "the token lacks a scope",
                    dpop_route
                )
            )),
            None,
        ),
        Refusal::Unavailable { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the guard cannot check this request right now; retry shortly".to_string(),
            None,
            None,
        ),
    };
    let mut response = json_answer(
        status,
        json!({"error": code, "error_description": description}),
    );
    let headers = response.headers_mut();
    if let Some(value) = www.and_then(|w| HeaderValue::from_str(&w).ok()) {
        headers.insert(http::header::WWW_AUTHENTICATE, value);
    }
    if let Some(value) = nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
        headers.insert("dpop-nonce", value);
    }
    if matches!(refusal, Refusal::Unavailable { .. }) {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    response
}

/// Judges one request and forwards it or answers the refusal.
async fn handle(
    guard: &Guard,
    peer: SocketAddr,
    connection_certificate: Option<&Arc<PeerCertificate>>,
    request: Request<Incoming>,
) -> Response {
    let snapshot = guard.current();
    let settings = &snapshot.settings;
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let local = matches!(path.as_str(), "/health" | "/ready" | "/metrics");
    if local && enforce::route_for(&settings.routes, &parts.method, &path).is_none() {
        return local_endpoint(guard, &path).await;
    }
    let from_trusted_proxy = settings.trusted_proxies.contains(&peer.ip());
    let certificate: RequestCertificate =
        crate::core::certificate::request_certificate(&CertificateSources {
            connection: connection_certificate,
            from_trusted_proxy,
            client_cert_header: parts.headers.get("client-cert").map(|v| v.as_bytes()),
            client_cert_chain_header: parts.headers.get("client-cert-chain").map(|v| v.as_bytes()),
            verifier: snapshot.client_verifier.as_deref(),
        });
    let proof_headers: Vec<&[u8]> = parts
        .headers
        .get_all("dpop")
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    let enforcer = Enforcer {
        settings,
        keys: &snapshot.keys,
        gate: &guard.gate,
        metrics: &guard.metrics,
        introspection: snapshot.introspection.as_deref(),
    };
    let decision = enforcer
        .decide(&ResourceRequest {
            method: &parts.method,
            path: &path,
            authorization: parts
                .headers
                .get(http::header::AUTHORIZATION)
                .map(HeaderValue::as_bytes),
            proof_headers: &proof_headers,
            certificate: &certificate,
            peer,
            now: guard.clock.now(),
        })
        .await;
    drop(proof_headers);
    let identity = match decision {
        Ok(identity) => identity,
        Err(refusal) => {
            let reason = refusal.reason();
            guard.metrics.count("refused", reason);
            tracing::info!(event = events::REQUEST, decision = "refused", reason, method = %parts.method, path = %path, peer = %peer);
            let dpop_route = enforce::route_for(&settings.routes, &parts.method, &path)
                .is_some_and(|r| r.accept.contains(&config::Constraint::Dpop));
            return refusal_response(&refusal, dpop_route, &settings.dpop.algs_header);
        }
    };
    forward::strip_request_headers(&mut parts.headers, &settings.strip_headers);
    forward::add_identity(&mut parts.headers, &identity);
    let started = Instant::now();
    match guard.forwarder.forward(settings, parts, body).await {
        Ok(response) => {
            guard
                .metrics
                .upstream_seconds
                .observe(started.elapsed().as_secs_f64());
            guard.metrics.count("allowed", "ok");
            tracing::info!(
                event = events::REQUEST, decision = "allowed", reason = "ok", path = %path,
                client = %identity.client, tenant = %identity.tenant, token_type = identity.token_type,
                status = response.status().as_u16(),
            );
            let (mut head, body) = response.into_parts();
            forward::strip_response_headers(&mut head.headers);
            http::Response::from_parts(head, forward::streamed(body))
        }
        Err(e) => {
            // The client learns which of the two; the cause (a socket path, an address)
            // stays in the log line.
            let (status, reason, description) = match &e {
                UpstreamError::Unreachable(_) => (
                    StatusCode::BAD_GATEWAY,
                    "unreachable",
                    "the upstream is unreachable",
                ),
                UpstreamError::Timeout => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "timeout",
                    "the upstream did not answer in time",
                ),
            };
            guard
                .metrics
                .upstream_errors
                .get_or_create(&crate::telemetry::metrics::ReasonLabel { reason })
                .inc();
            guard.metrics.count("allowed", "upstream-error");
            tracing::warn!(event = events::REQUEST, decision = "allowed", reason = "upstream-error", error = %e, path = %path);
            json_answer(
                status,
                json!({"error": "upstream_error", "error_description": description}),
            )
        }
    }
}

/// `/health`, `/ready` and `/metrics`.
async fn local_endpoint(guard: &Guard, path: &str) -> Response {
    match path {
        "/health" => json_answer(StatusCode::OK, json!({"status": "ok"})),
        "/ready" => {
            let store = guard.gate.store().probe().await;
            let keys = guard.current().keys.count();
            let ready = store.is_ok() && keys > 0;
            json_answer(
                if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                },
                json!({
                    "ready": ready,
                    "store": match &store { Ok(()) => "ok".to_string(), Err(e) => e.to_string() },
                    "signingKeys": keys,
                    "restartFence": guard.gate.fence().is_up(guard.clock.now()),
                }),
            )
        }
        _ => {
            let mut response = http::Response::new(full(guard.metrics.render()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
    }
}

/// Sweeps the store, refreshes fetched keys, keeps the gauges current.
async fn housekeeping(
    guard: Arc<Guard>,
    mut shutdown: watch::Receiver<bool>,
    store_failed: watch::Sender<Option<String>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut last_refresh = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let health = guard.gate.store().health();
        if health.state == crate::store::StoreState::Fatal && store_failed.borrow().is_none() {
            let reason = health.reason.unwrap_or_default();
            tracing::error!(event = events::STORE_FAILED, reason = %reason, "the store cannot recover in this process: stopping so the supervisor starts a new one");
            let _ = store_failed.send(Some(reason));
        }
        if let Err(e) = guard.gate.store().sweep(guard.clock.now()).await {
            guard.metrics.store_errors.inc();
            tracing::error!(event = events::STORE_ERROR, error = %e, "sweep failed");
        }
        let snapshot = guard.current();
        if snapshot.settings.keys.jwks_url.is_some()
            && last_refresh.elapsed() >= snapshot.settings.keys.refresh
        {
            last_refresh = Instant::now();
            if let Err(e) = snapshot.keys.refresh().await {
                tracing::warn!(event = events::KEYS, error = %e, "refresh failed; keeping the keys held");
            }
        }
        guard.metrics.keys.set(snapshot.keys.count() as i64);
    }
}

/// The sealkit `PreviousShutdown` marker is shared: a guard that was `kill -9`ed raises its
/// fence at the next start like the authority does.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_carries_its_error_in_the_challenge() {
        let response = refusal_response(
            &Refusal::UseDpopNonce { nonce: "n".into() },
            true,
            "ES256 EdDSA",
        );
        assert_eq!(response.status(), 401);
        let www = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(www.starts_with("DPoP error=\"use_dpop_nonce\""), "{www}");
        assert!(www.contains("algs=\"ES256 EdDSA\""), "{www}");
        assert_eq!(response.headers()["dpop-nonce"], "n");
        let response = refusal_response(
            &Refusal::InsufficientScope {
                scope: "write".into(),
            },
            false,
            "ES256",
        );
        assert_eq!(response.status(), 403);
        let www = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            www.starts_with("Bearer error=\"insufficient_scope\"")
                && www.ends_with("scope=\"write\""),
            "{www}"
        );
    }
}
