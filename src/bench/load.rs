//! Driving load: keep-alive HTTPS connections sending prepared requests, either as fast
//! as each connection can (closed loop: `--duration` / `--requests`) or at a fixed rate
//! (open loop: the soak).
//!
//! Requests are built before they are timed: a DPoP proof is signed before the clock of
//! its request starts, so the latency is the server's answer and the connection's
//! round-trip, never the client's signing.

use crate::client::https::Connection;
use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::Full;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A request to send, built ahead of time.
pub type Prepared = Request<Full<Bytes>>;

/// The requests a closed-loop run sends.
pub enum Workload {
    /// Request `i` carries proof `i` (and `Authorization` `i` when the proofs go with
    /// access tokens, at a resource); the run ends early when they are used up.
    Unique {
        method: http::Method,
        path: String,
        headers: Vec<(&'static str, HeaderValue)>,
        body: Bytes,
        proofs: Vec<HeaderValue>,
        /// Empty, or one per proof (cheap clones of shared bytes).
        authorizations: Vec<HeaderValue>,
    },
    /// Request `i` sends body `i mod len`, for ever.
    Cycle {
        path: &'static str,
        headers: Vec<(&'static str, HeaderValue)>,
        bodies: Vec<Bytes>,
    },
}

fn build(
    method: http::Method,
    path: &str,
    headers: &[(&'static str, HeaderValue)],
    body: Bytes,
    proof: Option<&HeaderValue>,
) -> Option<Prepared> {
    let has_body = !body.is_empty();
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .body(Full::new(body))
        .ok()?;
    let map = request.headers_mut();
    if has_body {
        map.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
    }
    for (name, value) in headers {
        map.insert(*name, value.clone());
    }
    if let Some(proof) = proof {
        map.insert("dpop", proof.clone());
    }
    Some(request)
}

impl Workload {
    /// The `i`th request, or `None` when a `Unique` workload is used up.
    pub fn request(&self, i: usize) -> Option<Prepared> {
        match self {
            Workload::Unique {
                method,
                path,
                headers,
                body,
                proofs,
                authorizations,
            } => {
                let mut request = build(
                    method.clone(),
                    path,
                    headers,
                    body.clone(),
                    Some(proofs.get(i)?),
                )?;
                if let Some(authorization) = authorizations.get(i) {
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, authorization.clone());
                }
                Some(request)
            }
            Workload::Cycle {
                path,
                headers,
                bodies,
            } => {
                if bodies.is_empty() {
                    return None;
                }
                build(
                    http::Method::POST,
                    path,
                    headers,
                    bodies[i % bodies.len()].clone(),
                    None,
                )
            }
        }
    }
}

/// When a closed-loop run ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many requests (across all connections).
    Count(u64),
    /// When this much time has passed (in-flight requests finish).
    After(Duration),
}

/// What one run saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ok: u64,
    pub non_ok: u64,
    /// Transport failures (connection lost, protocol errors).
    pub errors: u64,
    /// The first non-200 answer or transport error, with its body.
    pub first_error: Option<String>,
    pub latencies_us: Vec<u32>,
    pub elapsed: Duration,
    /// The run ended because the prepared requests were used up.
    pub exhausted: bool,
    /// The next unused request index.
    pub next_index: usize,
}

impl Outcome {
    fn merge(&mut self, other: Outcome) {
        self.ok += other.ok;
        self.non_ok += other.non_ok;
        self.errors += other.errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies_us.extend(other.latencies_us);
        self.exhausted |= other.exhausted;
    }
}

/// How long one request may take before the benchmark gives up on its connection (a
/// stalled server must end the run with an error, not hang it).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `request` on `connection` within [`REQUEST_TIMEOUT`].
pub async fn send(
    connection: &mut Connection,
    request: Prepared,
) -> Result<crate::client::https::Reply, String> {
    match tokio::time::timeout(REQUEST_TIMEOUT, connection.send(request)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())),
    }
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

fn describe(reply: &crate::client::https::Reply) -> String {
    let body = String::from_utf8_lossy(&reply.body);
    format!(
        "HTTP {}: {}",
        reply.status.as_u16(),
        body.chars().take(500).collect::<String>()
    )
}

/// Sends `workload` over `connections` (one task each) from request index `first` until
/// `stop`; gives the connections back for the next run.
pub async fn closed_loop(
    connections: Vec<Connection>,
    workload: Arc<Workload>,
    first: usize,
    stop: Stop,
) -> (Outcome, Vec<Connection>) {
    let next = Arc::new(AtomicUsize::new(first));
    let started = Instant::now();
    let limit = match stop {
        Stop::Count(n) => first.saturating_add(usize::try_from(n).unwrap_or(usize::MAX)),
        Stop::After(_) => usize::MAX,
    };
    let deadline = match stop {
        Stop::After(d) => Some(started + d),
        Stop::Count(_) => None,
    };
    let mut tasks = Vec::with_capacity(connections.len());
    for mut connection in connections {
        let next = next.clone();
        let workload = workload.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcome = Outcome::default();
            let mut alive = true;
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= limit {
                    break;
                }
                let Some(request) = workload.request(i) else {
                    outcome.exhausted = true;
                    break;
                };
                let sent = Instant::now();
                match send(&mut connection, request).await {
                    Ok(reply) => {
                        outcome.latencies_us.push(micros(sent.elapsed()));
                        if reply.status == http::StatusCode::OK {
                            outcome.ok += 1;
                        } else {
                            outcome.non_ok += 1;
                            if outcome.first_error.is_none() {
                                outcome.first_error = Some(describe(&reply));
                            }
                        }
                    }
                    Err(e) => {
                        outcome.errors += 1;
                        if outcome.first_error.is_none() {
                            outcome.first_error = Some(format!("transport: {e}"));
                        }
                        alive = false;
                        break;
                    }
                }
            }
            (outcome, alive.then_some(connection))
        }));
    }
    let mut total = Outcome::default();
    let mut returned = Vec::new();
    for task in tasks {
        if let Ok((outcome, connection)) = task.await {
            total.merge(outcome);
            returned.extend(connection);
        }
    }
    total.elapsed = started.elapsed();
    total.next_index = next.load(Ordering::Relaxed).min(limit);
    (total, returned)
}

/// What an open-loop run collects between two reports.
#[derive(Debug, Default)]
pub struct IntervalStats {
    pub ok: u64,
    pub non_ok: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    /// From the instant each request was *due*, so a stalled server shows up as latency
    /// rather than as requests quietly not sent (coordinated omission).
    pub latencies_us: Vec<u32>,
    /// From the instant each request was due to the instant a connection took it up to
    /// send it: the load generator's own lateness (its dispatcher thread or connection
    /// tasks not running in time, or every connection busy), part of `latencies_us`.
    pub pickup_us: Vec<u32>,
}

/// Shared between the open-loop tasks and the reporter.
pub struct OpenLoop {
    pub stats: Mutex<IntervalStats>,
    /// The latest `DPoP-Nonce` the server sent (for proofs made during the run).
    pub nonce: Mutex<Option<String>>,
    /// Requests due but not yet taken by a connection at the last look.
    pub backlog: AtomicUsize,
}

impl OpenLoop {
    pub fn new(nonce: Option<String>) -> Arc<OpenLoop> {
        Arc::new(OpenLoop {
            stats: Mutex::new(IntervalStats::default()),
            nonce: Mutex::new(nonce),
            backlog: AtomicUsize::new(0),
        })
    }

    /// The figures since the last call.
    pub fn take(&self) -> IntervalStats {
        self.stats
            .lock()
            .map(|mut s| std::mem::take(&mut *s))
            .unwrap_or_default()
    }

    pub fn current_nonce(&self) -> Option<String> {
        self.nonce.lock().ok().and_then(|n| n.clone())
    }
}

/// Sends requests from `source` at `rate` per second over `connections` until `until`.
/// The source is filled ahead of time by a generator thread.
pub async fn open_loop(
    connections: Vec<Connection>,
    mut source: tokio::sync::mpsc::Receiver<Prepared>,
    rate: f64,
    until: Instant,
    shared: Arc<OpenLoop>,
) {
    let (work_tx, work_rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Prepared)>();
    let work_rx = Arc::new(tokio::sync::Mutex::new(work_rx));
    let mut tasks = Vec::new();
    for mut connection in connections {
        let work_rx = work_rx.clone();
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let item = work_rx.lock().await.recv().await;
                let Some((due, request)) = item else { break };
                let pickup = micros(due.elapsed());
                shared.backlog.fetch_sub(1, Ordering::Relaxed);
                let result = send(&mut connection, request).await;
                let latency = micros(due.elapsed());
                let Ok(mut stats) = shared.stats.lock() else {
                    break;
                };
                match result {
                    Ok(reply) => {
                        stats.latencies_us.push(latency);
                        stats.pickup_us.push(pickup);
                        if reply.status == http::StatusCode::OK {
                            stats.ok += 1;
                        } else {
                            stats.non_ok += 1;
                            if stats.first_error.is_none() {
                                stats.first_error = Some(describe(&reply));
                            }
                        }
                        if let Some(nonce) = reply.header("dpop-nonce") {
                            if let Ok(mut current) = shared.nonce.lock() {
                                if current.as_deref() != Some(nonce) {
                                    *current = Some(nonce.to_string());
                                }
                            }
                        }
                    }
                    Err(e) => {
                        stats.errors += 1;
                        if stats.first_error.is_none() {
                            stats.first_error = Some(format!("transport: {e}"));
                        }
                        break;
                    }
                }
            }
        }));
    }
    // The dispatcher: request k is due at start + k / rate. It is a thread of its own that
    // sleeps to each due instant: on tokio's timer, which ticks by the millisecond, requests
    // left in bursts up to ~2 ms after they were due, and that lag was counted as latency.
    let dispatcher = std::thread::Builder::new()
        .name("bench-dispatch".into())
        .spawn(move || {
            let start = Instant::now();
            let mut sent: u64 = 0;
            loop {
                let due = start + Duration::from_secs_f64(sent as f64 / rate);
                if due >= until {
                    return;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                let Some(request) = source.blocking_recv() else {
                    return;
                };
                shared.backlog.fetch_add(1, Ordering::Relaxed);
                if work_tx.send((due, request)).is_err() {
                    return;
                }
                sent += 1;
            }
        });
    // The thread owns `work_tx`: the connections stop once it has sent the last request.
    for task in tasks {
        let _ = task.await;
    }
    if let Ok(thread) = dispatcher {
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }
}
