//! `sealkit bench`: the benchmark of the hot path. It starts an authority as a separate
//! process on a demo site in a temporary directory (or targets a running one), prepares
//! requests ahead of time (unique DPoP proofs are signed before any clock starts), drives
//! `POST /token` (or `/introspect`) over keep-alive TLS connections, and measures what an
//! operator budgets for: tokens per second, latency percentiles, the server's CPU time per
//! token read from `/proc/<pid>/stat`, its start-up time and memory, and the crypto floor
//! (one ES256 verify + one ES256 sign, josekit, measured in the same run) to hold the CPU
//! figure against.
//!
//! Owns measuring and the figures; printing them is `cli::bench`'s job. Speed is never
//! asserted here or in the tests: these are figures for `docs/performance.md`.

mod floor;
mod load;
pub mod procfs;
mod server;
mod stats;

pub use floor::CryptoFloor;
pub use load::Stop;
pub use stats::Latency;

use crate::client::https::{basic_auth, Connection, TlsTarget};
use crate::client::ProofKey;
use bytes::Bytes;
use http::HeaderValue;
use load::{Outcome, Prepared, Workload};
use serde::Serialize;
use server::ServerProcess;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Client(String),
}

fn client_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Client(e.to_string())
}

/// What is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// DPoP-bound tokens, sled store, no nonce.
    Dpop,
    /// DPoP-bound tokens for the nonce tenant (proofs carry a server nonce).
    DpopNonce,
    /// Bearer tokens for the unconstrained tenant (no proof).
    Bearer,
    /// `/introspect` on pre-issued tokens with the demo's resource client.
    Introspect,
    /// Certificate-bound tokens (needs an mTLS client in the demo site).
    Mtls,
    /// DPoP-bound tokens with the Redis store (needs `--redis-url`).
    Redis,
    /// Resource requests through `sealkit guard` (DPoP proof with `ath` per request, the
    /// token's signature remembered after its first use) to the echo upstream.
    Guard,
}

impl Scenario {
    pub const ALL: [Scenario; 7] = [
        Scenario::Dpop,
        Scenario::DpopNonce,
        Scenario::Bearer,
        Scenario::Introspect,
        Scenario::Mtls,
        Scenario::Redis,
        Scenario::Guard,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Dpop => "dpop",
            Scenario::DpopNonce => "dpop-nonce",
            Scenario::Bearer => "bearer",
            Scenario::Introspect => "introspect",
            Scenario::Mtls => "mtls",
            Scenario::Redis => "redis",
            Scenario::Guard => "guard",
        }
    }

    pub fn parse(text: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == text)
    }

    /// The cryptography one request needs at the least: its name, its cost through josekit
    /// and its bare cost.
    fn floor_us(self, floor: &CryptoFloor) -> (&'static str, f64, f64) {
        match self {
            Scenario::Dpop | Scenario::DpopNonce | Scenario::Redis => (
                "ES256 verify + sign",
                floor.dpop_token_us(),
                floor.bare_dpop_token_us(),
            ),
            Scenario::Bearer | Scenario::Mtls => {
                ("ES256 sign", floor.es256_sign_us, floor.bare_sign_us)
            }
            Scenario::Introspect | Scenario::Guard => {
                ("ES256 verify", floor.es256_verify_us, floor.bare_verify_us)
            }
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Scenario::Introspect => "introspections",
            Scenario::Guard => "requests",
            _ => "tokens",
        }
    }
}

/// Client ids and secrets by role (`DPOP`, `NONCE`, `BEARER`, `INTROSPECT`, `MTLS`), as in
/// a demo site's `demo.env`; a single `--client-id`/`--client-secret` serves every role.
#[derive(Clone, Default)]
pub struct Credentials {
    pub env: BTreeMap<String, String>,
    pub single: Option<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

impl Credentials {
    pub fn from_demo_env(path: &std::path::Path) -> Result<Credentials, BenchError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| BenchError::Setup(format!("cannot read {}: {e}", path.display())))?;
        Ok(Credentials {
            env: text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            single: None,
        })
    }

    fn var(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn client(&self, role: &str) -> Option<(String, String)> {
        let id = self.var(&format!("SEALKIT_{role}_CLIENT_ID"));
        let secret = self.var(&format!("SEALKIT_{role}_CLIENT_SECRET"));
        match (id, secret, &self.single) {
            (Some(id), Some(secret), _) => Some((id.to_string(), secret.to_string())),
            (_, _, Some(single)) => Some(single.clone()),
            _ => None,
        }
    }

    fn basic(&self, role: &str) -> Result<HeaderValue, BenchError> {
        let (id, secret) = self.client(role).ok_or_else(|| {
            BenchError::Setup(format!(
                "no credentials for the {role} client (give --client-id/--client-secret or --demo-env)"
            ))
        })?;
        HeaderValue::from_str(&basic_auth(&id, &secret)).map_err(client_error)
    }
}

/// Which authority to measure.
#[derive(Debug, Clone)]
pub enum Target {
    /// Start one per scenario: `sealkit serve` on a fresh demo site in a temporary directory.
    Spawn { keep: bool },
    /// An authority that is already running.
    Existing {
        url: String,
        ca: PathBuf,
        credentials: Credentials,
        /// Its process id, for CPU and memory figures (none: not reported).
        server_pid: Option<u32>,
    },
}

#[derive(Debug, Clone)]
pub struct Options {
    pub connections: usize,
    pub stop: Stop,
    pub warmup: Duration,
    /// Distinct DPoP keys the proofs are signed with (a client reuses its key).
    pub keys: usize,
    pub floor_iterations: u32,
    pub target: Target,
    pub redis_url: Option<String>,
    /// The most proofs pre-generated for one run.
    pub max_proofs: usize,
    /// Worker threads of the load generator's runtime (for the report only).
    pub client_threads: usize,
    /// `logging.level` for the server this benchmark starts (default: the demo's, info),
    /// to measure what the per-request log lines cost.
    pub log_level: Option<String>,
}

/// The server-side figures (absent when the server's pid is unknown).
#[derive(Debug, Clone, Serialize)]
pub struct ServerFigures {
    pub pid: u32,
    /// Spawn until `/ready` answered 200 (only when the benchmark started the server).
    pub startup_ms: Option<f64>,
    pub idle_rss_mb: Option<f64>,
    pub rss_after_mb: Option<f64>,
    pub threads: Option<u64>,
    /// (utime + stime) delta × 1e6 / CLK_TCK / successful requests.
    pub cpu_us_per_request: Option<f64>,
    /// Server CPU time over wall time during the run (1.0 = one core busy).
    pub cores_busy: Option<f64>,
    /// The kernel's part of it (`stime`): syscalls, and on loopback also TCP work done
    /// for the load generator's sockets.
    pub system_us_per_request: Option<f64>,
    /// The server's CPU per request split by thread name (`tokio-rt-worker`: request
    /// handling; `tracing-appende`: the log writer; `log flusher`/`sled-io`: the store).
    pub cpu_us_per_request_by_thread: BTreeMap<String, f64>,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub store: &'static str,
    /// Why the scenario was not run.
    pub skipped: Option<String>,
    /// Why the scenario failed (set up, server start, client), when it did.
    pub error: Option<String>,
    pub connections: usize,
    pub client_threads: usize,
    pub elapsed_s: f64,
    pub ok: u64,
    pub non_200: u64,
    pub transport_errors: u64,
    pub first_error: Option<String>,
    /// Successful requests per second (`tokens/s`, or introspections per second).
    pub per_second: f64,
    pub unit: &'static str,
    pub latency: Latency,
    pub server: Option<ServerFigures>,
    pub clk_tck: u64,
    pub clk_tck_assumed: bool,
    /// The load generator's own CPU per request (it shares the machine).
    pub client_cpu_us_per_request: Option<f64>,
    pub floor: Option<CryptoFloor>,
    /// Samples taken while the load ran; with 3 or more, `floor` is their median.
    pub floor_samples_during_run: usize,
    /// How `floor` was obtained, in words.
    pub floor_method: String,
    /// Measurements just before and just after the run (their mean is `floor` when
    /// the run was too short for samples during it).
    pub floor_before_after_us: Option<(f64, f64)>,
    pub floor_kind: &'static str,
    pub floor_us: Option<f64>,
    pub cpu_over_floor: Option<f64>,
    /// The same request's bare floor (`bench::floor`), and the server's CPU over it.
    pub bare_floor_us: Option<f64>,
    pub cpu_over_bare_floor: Option<f64>,
    /// Requests prepared before the run (DPoP proofs signed ahead), and how long that took.
    pub prepared: usize,
    pub preparation_s: f64,
    /// The run ended early because the prepared proofs were used up.
    pub exhausted: bool,
    pub notes: Vec<String>,
}

impl Report {
    /// The report of a scenario that could not be measured.
    pub fn failed(scenario: Scenario, options: &Options, error: &BenchError) -> Report {
        let mut report = Report::skipped(scenario, options, String::new());
        report.skipped = None;
        report.error = Some(error.to_string());
        report
    }

    fn skipped(scenario: Scenario, options: &Options, why: String) -> Report {
        let ticks = procfs::clock_ticks();
        Report {
            scenario: scenario.name(),
            store: if scenario == Scenario::Redis {
                "redis"
            } else {
                "sled"
            },
            skipped: Some(why),
            error: None,
            connections: options.connections,
            client_threads: options.client_threads,
            elapsed_s: 0.0,
            ok: 0,
            non_200: 0,
            transport_errors: 0,
            first_error: None,
            per_second: 0.0,
            unit: scenario.unit(),
            latency: Latency::default(),
            server: None,
            clk_tck: ticks.per_second,
            clk_tck_assumed: !ticks.measured,
            client_cpu_us_per_request: None,
            floor: None,
            floor_samples_during_run: 0,
            floor_method: String::new(),
            floor_before_after_us: None,
            floor_kind: "",
            floor_us: None,
            cpu_over_floor: None,
            bare_floor_us: None,
            cpu_over_bare_floor: None,
            prepared: 0,
            preparation_s: 0.0,
            exhausted: false,
            notes: Vec::new(),
        }
    }
}

/// Where requests go and how to reach it, for one scenario.
struct Endpoint {
    target: TlsTarget,
    base_url: String,
    credentials: Credentials,
    pid: Option<u32>,
    /// Present when the benchmark started the server.
    process: Option<ServerProcess>,
    /// The guard scenario's guard (then `target` and `pid` are the guard's).
    guard: Option<server::GuardProcess>,
}

impl Endpoint {
    fn token_url(&self) -> String {
        format!("{}/token", self.base_url.trim_end_matches('/'))
    }

    async fn connect(&self, n: usize) -> Result<Vec<Connection>, BenchError> {
        let mut connections = Vec::with_capacity(n);
        for _ in 0..n {
            connections.push(self.target.connect().await.map_err(client_error)?);
        }
        Ok(connections)
    }
}

/// Changes to the demo configuration a scenario needs.
fn site_edit(
    scenario: Scenario,
    redis_url: Option<&str>,
    log_level: Option<&str>,
    soak: bool,
) -> impl FnOnce(&mut String) {
    let redis = redis_url.map(str::to_string);
    let log_level = log_level.map(str::to_string);
    move |yaml: &mut String| {
        if let Some(level) = log_level {
            *yaml = yaml.replacen(
                "logging:\n",
                &format!("logging:\n  level: \"{level}\"\n"),
                1,
            );
        }
        if scenario == Scenario::Redis {
            if let Some(url) = redis {
                yaml.push_str(&format!("storage:\n  kind: redis\n  url: \"{url}\"\n"));
            }
        }
        if soak {
            // Short windows, so a soak of a few minutes reaches the steady state where
            // the sweeper removes as much as is added (size = rate × window).
            *yaml = yaml
                .replace("replayWindow: 5m", "replayWindow: 75s")
                .replace("tokens:\n  lifetime: 5m", "tokens:\n  lifetime: 1m");
        }
    }
}

async fn endpoint(
    scenario: Scenario,
    options: &Options,
    soak: bool,
) -> Result<Endpoint, BenchError> {
    match &options.target {
        Target::Spawn { keep } => {
            let process = ServerProcess::start(
                site_edit(
                    scenario,
                    options.redis_url.as_deref(),
                    options.log_level.as_deref(),
                    soak,
                ),
                *keep,
            )
            .await?;
            let target = TlsTarget::new(&process.site.issuer, &process.site.ca_file, None)
                .map_err(client_error)?;
            Ok(Endpoint {
                target,
                base_url: process.site.issuer.clone(),
                credentials: Credentials {
                    env: process.site.env.clone(),
                    single: None,
                },
                pid: Some(process.pid),
                process: Some(process),
                guard: None,
            })
        }
        Target::Existing {
            url,
            ca,
            credentials,
            server_pid,
        } => Ok(Endpoint {
            target: TlsTarget::new(url, ca, None).map_err(client_error)?,
            base_url: url.clone(),
            credentials: credentials.clone(),
            pid: *server_pid,
            process: None,
            guard: None,
        }),
    }
}

/// The mTLS client's certificate and key files, from demo.env.
fn mtls_identity(credentials: &Credentials) -> Option<(PathBuf, PathBuf)> {
    let pick = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| credentials.var(n))
            .map(PathBuf::from)
    };
    Some((
        pick(["SEALKIT_MTLS_CERT", "SEALKIT_MTLS_CLIENT_CERT"])?,
        pick(["SEALKIT_MTLS_KEY", "SEALKIT_MTLS_CLIENT_KEY"])?,
    ))
}

/// Why a scenario cannot run here, if it cannot.
fn unavailable(scenario: Scenario, options: &Options, credentials: &Credentials) -> Option<String> {
    match scenario {
        Scenario::Guard if matches!(options.target, Target::Existing { .. }) => Some(
            "the guard scenario starts its own authority and guard (no --url)".into(),
        ),
        Scenario::Redis if options.redis_url.is_none() => Some(
            "not available: give --redis-url redis://HOST:PORT (the Redis store is configured as storage: {kind: redis, url: ...})".into(),
        ),
        Scenario::Redis if matches!(options.target, Target::Existing { .. }) => Some(
            "not available with --target: point --target at a Redis-backed authority and run the dpop scenario".into(),
        ),
        Scenario::Mtls if credentials.var("SEALKIT_MTLS_CLIENT_ID").is_none() => Some(
            "not available yet: the demo site has no mTLS client (no SEALKIT_MTLS_CLIENT_ID in demo.env)".into(),
        ),
        Scenario::Mtls if mtls_identity(credentials).is_none() => Some(
            "not available yet: demo.env names an mTLS client but no SEALKIT_MTLS_CERT / SEALKIT_MTLS_KEY".into(),
        ),
        _ => None,
    }
}

/// DPoP proofs to sign ahead of the run.
struct ProofPlan {
    keys: Vec<ProofKey>,
    /// `POST` at the token endpoint; `GET` at a resource behind the guard.
    method: http::Method,
    htu: String,
    nonce: Option<String>,
    headers: Vec<(&'static str, HeaderValue)>,
    body: Bytes,
    /// At a resource: the DPoP-bound token of each key (`Authorization: DPoP`, `ath`).
    tokens: Vec<Bytes>,
}

impl ProofPlan {
    /// Signs `count` proofs (proof `i` with key `(first + i) mod keys`), on every core.
    fn generate(&self, first: usize, count: usize) -> Result<Vec<HeaderValue>, BenchError> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .min(count.max(1));
        let chunk = count.div_ceil(threads);
        let results: Vec<Result<Vec<HeaderValue>, BenchError>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    scope.spawn(move || {
                        let start = t * chunk;
                        let end = ((t + 1) * chunk).min(count);
                        (start..end)
                            .map(|i| self.proof(first + i, self.nonce.as_deref()))
                            .collect::<Result<Vec<_>, _>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(BenchError::Client("proof thread panicked".into())))
                })
                .collect()
        });
        let mut proofs = Vec::with_capacity(count);
        for part in results {
            proofs.extend(part?);
        }
        Ok(proofs)
    }

    fn proof(&self, i: usize, nonce: Option<&str>) -> Result<HeaderValue, BenchError> {
        let key = &self.keys[i % self.keys.len()];
        let token = match self.tokens.get(i % self.keys.len()) {
            Some(token) => Some(std::str::from_utf8(token).map_err(client_error)?),
            None => None,
        };
        let proof = key
            .proof(self.method.as_str(), &self.htu, nonce, token)
            .map_err(client_error)?;
        HeaderValue::from_str(&proof).map_err(client_error)
    }

    /// The `Authorization: DPoP <token>` of proof `i` (resource requests only).
    fn authorization(&self, i: usize) -> Option<HeaderValue> {
        let token = self.tokens.get(i % self.keys.len())?;
        let mut value = bytes::BytesMut::with_capacity(token.len() + 5);
        value.extend_from_slice(b"DPoP ");
        value.extend_from_slice(token);
        HeaderValue::from_maybe_shared(value.freeze()).ok()
    }

    /// The requests for proofs `first ..`, as generated by [`ProofPlan::generate`].
    fn workload(&self, first: usize, proofs: Vec<HeaderValue>) -> Workload {
        let authorizations = if self.tokens.is_empty() {
            Vec::new()
        } else {
            (0..proofs.len())
                .filter_map(|j| self.authorization(first + j))
                .collect()
        };
        let path = url::Url::parse(&self.htu)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| "/token".into());
        Workload::Unique {
            method: self.method.clone(),
            path,
            headers: self.headers.clone(),
            body: self.body.clone(),
            proofs,
            authorizations,
        }
    }
}

/// What a scenario sends.
enum Plan {
    Proofs(ProofPlan),
    Fixed(Arc<Workload>),
}

const TOKEN_FORM: &str = "grant_type=client_credentials";

fn proof_keys(n: usize) -> Result<Vec<ProofKey>, BenchError> {
    (0..n.max(1))
        .map(|_| ProofKey::es256().map_err(client_error))
        .collect()
}

/// Asks for a token without a proof to learn the server nonce (`400 use_dpop_nonce`).
async fn fetch_nonce(endpoint: &Endpoint, auth: &HeaderValue) -> Result<String, BenchError> {
    let mut connection = endpoint.target.connect().await.map_err(client_error)?;
    let auth = auth.to_str().map_err(client_error)?;
    let reply = connection
        .post_form(
            "/token",
            &[("grant_type", "client_credentials")],
            &[("authorization", auth)],
        )
        .await
        .map_err(client_error)?;
    reply
        .header("dpop-nonce")
        .map(str::to_string)
        .ok_or_else(|| {
            BenchError::Client(format!(
                "no DPoP-Nonce from the nonce tenant (HTTP {}: {})",
                reply.status,
                String::from_utf8_lossy(&reply.body)
            ))
        })
}

/// Issues `count` DPoP-bound tokens for the introspection scenario.
async fn issue_tokens(
    endpoint: &Endpoint,
    plan: &ProofPlan,
    count: usize,
    connections: usize,
) -> Result<Vec<String>, BenchError> {
    let proofs = Arc::new(plan.generate(0, count)?);
    let headers = Arc::new(plan.headers.clone());
    let per = count.div_ceil(connections.max(1));
    let mut tasks = Vec::new();
    for (c, mut connection) in endpoint.connect(connections).await?.into_iter().enumerate() {
        let proofs = proofs.clone();
        let headers = headers.clone();
        let body = plan.body.clone();
        tasks.push(tokio::spawn(async move {
            let mut tokens = Vec::new();
            for proof in proofs.iter().skip(c * per).take(per) {
                let workload = Workload::Unique {
                    method: http::Method::POST,
                    path: "/token".into(),
                    headers: headers.to_vec(),
                    body: body.clone(),
                    proofs: vec![proof.clone()],
                    authorizations: Vec::new(),
                };
                let Some(request) = workload.request(0) else {
                    continue;
                };
                let reply = load::send(&mut connection, request)
                    .await
                    .map_err(BenchError::Client)?;
                let token = reply.json()["access_token"].as_str().map(str::to_string);
                match token {
                    Some(token) => tokens.push(token),
                    None => {
                        return Err(BenchError::Client(format!(
                            "could not pre-issue a token: HTTP {}: {}",
                            reply.status,
                            String::from_utf8_lossy(&reply.body)
                        )))
                    }
                }
            }
            Ok(tokens)
        }));
    }
    let mut tokens = Vec::with_capacity(count);
    for task in tasks {
        tokens.extend(
            task.await
                .map_err(|e| BenchError::Client(e.to_string()))??,
        );
    }
    Ok(tokens)
}

fn form_body(pairs: &[(&str, &str)]) -> Bytes {
    Bytes::from(
        url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish(),
    )
}

/// Builds what `scenario` sends (pre-issuing tokens for introspection; not timed).
async fn plan(
    scenario: Scenario,
    endpoint: &mut Endpoint,
    options: &Options,
) -> Result<Plan, BenchError> {
    let credentials = endpoint.credentials.clone();
    let dpop_plan = |role: &str, nonce: Option<String>| -> Result<ProofPlan, BenchError> {
        Ok(ProofPlan {
            keys: proof_keys(options.keys)?,
            method: http::Method::POST,
            htu: endpoint.token_url(),
            nonce,
            headers: vec![("authorization", credentials.basic(role)?)],
            body: Bytes::from_static(TOKEN_FORM.as_bytes()),
            tokens: Vec::new(),
        })
    };
    match scenario {
        Scenario::Dpop => Ok(Plan::Proofs(dpop_plan("DPOP", None)?)),
        Scenario::Guard => {
            // One DPoP-bound token per key, issued by the authority; then the guard starts
            // and every request is a fresh proof (with `ath`) for the resource URL.
            let issuing = dpop_plan("DPOP", None)?;
            let tokens = issue_tokens(endpoint, &issuing, issuing.keys.len(), 1).await?;
            let process = endpoint.process.as_ref().ok_or_else(|| {
                BenchError::Setup("the guard scenario starts its own authority".into())
            })?;
            let guard = server::GuardProcess::start(&process.site).await?;
            let plan = ProofPlan {
                keys: issuing.keys,
                method: http::Method::GET,
                htu: guard.resource_url.clone(),
                nonce: None,
                headers: Vec::new(),
                body: Bytes::new(),
                tokens: tokens.into_iter().map(Bytes::from).collect(),
            };
            endpoint.target = guard.target.clone();
            endpoint.pid = Some(guard.pid);
            endpoint.guard = Some(guard);
            Ok(Plan::Proofs(plan))
        }
        Scenario::Redis => {
            // A Redis database that does not know this site yet may have lost its data, so
            // the authority raises its restart fence: every proof needs a nonce of this
            // run for one replay window (docs/multi-node.md). A multi-node site runs with
            // nonces anyway; the proofs carry one either way.
            let nonce = fetch_nonce(endpoint, &credentials.basic("DPOP")?).await?;
            Ok(Plan::Proofs(dpop_plan("DPOP", Some(nonce))?))
        }
        Scenario::DpopNonce => {
            let nonce = fetch_nonce(endpoint, &credentials.basic("NONCE")?).await?;
            Ok(Plan::Proofs(dpop_plan("NONCE", Some(nonce))?))
        }
        Scenario::Bearer => Ok(Plan::Fixed(Arc::new(Workload::Cycle {
            path: "/token",
            headers: vec![("authorization", credentials.basic("BEARER")?)],
            bodies: vec![Bytes::from_static(TOKEN_FORM.as_bytes())],
        }))),
        Scenario::Introspect => {
            let issuing = dpop_plan("DPOP", None)?;
            let tokens = issue_tokens(endpoint, &issuing, 1000, options.connections).await?;
            let auth = credentials.basic("INTROSPECT")?;
            // One check that the answers are what an operator expects (active tokens).
            let mut connection = endpoint.target.connect().await.map_err(client_error)?;
            let first = tokens
                .first()
                .ok_or_else(|| BenchError::Client("no token was pre-issued".into()))?;
            let reply = connection
                .post_form(
                    "/introspect",
                    &[("token", first)],
                    &[("authorization", auth.to_str().map_err(client_error)?)],
                )
                .await
                .map_err(client_error)?;
            if reply.json()["active"] != serde_json::Value::Bool(true) {
                return Err(BenchError::Client(format!(
                    "a pre-issued token does not introspect as active: HTTP {}: {}",
                    reply.status,
                    String::from_utf8_lossy(&reply.body)
                )));
            }
            Ok(Plan::Fixed(Arc::new(Workload::Cycle {
                path: "/introspect",
                headers: vec![("authorization", auth)],
                bodies: tokens.iter().map(|t| form_body(&[("token", t)])).collect(),
            })))
        }
        Scenario::Mtls => {
            let (cert, key) = mtls_identity(&credentials).ok_or_else(|| {
                BenchError::Setup("no mTLS client certificate in demo.env".into())
            })?;
            let ca = match (&options.target, &endpoint.process) {
                (_, Some(process)) => process.site.ca_file.clone(),
                (Target::Existing { ca, .. }, None) => ca.clone(),
                (Target::Spawn { .. }, None) => PathBuf::new(),
            };
            endpoint.target = TlsTarget::new(&endpoint.base_url, &ca, Some((&cert, &key)))
                .map_err(client_error)?;
            let id = credentials.var("SEALKIT_MTLS_CLIENT_ID").unwrap_or("");
            let (headers, body) = match credentials.var("SEALKIT_MTLS_CLIENT_SECRET") {
                Some(secret) => (
                    vec![(
                        "authorization",
                        HeaderValue::from_str(&basic_auth(id, secret)).map_err(client_error)?,
                    )],
                    Bytes::from_static(TOKEN_FORM.as_bytes()),
                ),
                // tls_client_auth: the certificate authenticates, the body names the client.
                None => (
                    Vec::new(),
                    form_body(&[("grant_type", "client_credentials"), ("client_id", id)]),
                ),
            };
            Ok(Plan::Fixed(Arc::new(Workload::Cycle {
                path: "/token",
                headers,
                bodies: vec![body],
            })))
        }
    }
}

fn mb(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| b as f64 / (1024.0 * 1024.0))
}

/// Runs one scenario and returns its figures (a skipped scenario is a report too).
pub async fn run(scenario: Scenario, options: &Options) -> Result<Report, BenchError> {
    let pre_credentials = match &options.target {
        Target::Existing { credentials, .. } => credentials.clone(),
        // A demo site made by this binary: detect what it offers from a probe of the demo
        // module's variables (an mTLS client appears there once the demo has one).
        Target::Spawn { .. } => Credentials::default(),
    };
    if scenario != Scenario::Mtls {
        if let Some(why) = unavailable(scenario, options, &pre_credentials) {
            return Ok(Report::skipped(scenario, options, why));
        }
    } else if let Target::Existing { .. } = options.target {
        if let Some(why) = unavailable(scenario, options, &pre_credentials) {
            return Ok(Report::skipped(scenario, options, why));
        }
    }
    let mut endpoint = endpoint(scenario, options, false).await?;
    if let Some(why) = unavailable(scenario, options, &endpoint.credentials) {
        return Ok(Report::skipped(scenario, options, why));
    }
    let ticks = procfs::clock_ticks();
    let mut report = Report::skipped(scenario, options, String::new());
    report.skipped = None;
    if let (Some(level), Some(_)) = (&options.log_level, &endpoint.process) {
        report
            .notes
            .push(format!("the server ran with logging.level {level}"));
    }
    let startup_ms = endpoint
        .process
        .as_ref()
        .map(|p| p.startup.as_secs_f64() * 1e3);
    let idle_rss = endpoint.pid.and_then(procfs::rss_bytes);

    let plan = plan(scenario, &mut endpoint, options).await?;
    let mut connections = endpoint.connect(options.connections).await?;

    // Warm-up (connections established, key cache and allocator warm), which also
    // measures the rate the proofs for a timed run are sized by.
    let preparation = Instant::now();
    let mut prepared = 0;
    // `--warmup 0s` still sends one request per connection: the warm-up is also the
    // check that the scenario works at all.
    let warmup_stop = if options.warmup.is_zero() {
        Stop::Count(options.connections as u64)
    } else {
        Stop::After(options.warmup)
    };
    let (workload, first) = match &plan {
        Plan::Fixed(workload) => {
            let (_, back) = load::closed_loop(connections, workload.clone(), 0, warmup_stop).await;
            connections = back;
            (workload.clone(), 0)
        }
        Plan::Proofs(proofs) => {
            let warm = proofs.generate(0, 4000)?;
            let (warmup, back) = load::closed_loop(
                connections,
                Arc::new(proofs.workload(0, warm)),
                0,
                warmup_stop,
            )
            .await;
            connections = back;
            if warmup.ok == 0 {
                return Err(BenchError::Client(format!(
                    "the warm-up got no token: {}",
                    warmup.first_error.unwrap_or_default()
                )));
            }
            let needed = match options.stop {
                Stop::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Stop::After(d) => {
                    if d > Duration::from_secs(40) {
                        return Err(BenchError::Setup(
                            "proofs are signed before the run and live 60 s: a DPoP run is at most 40 s (use --soak for longer)".into(),
                        ));
                    }
                    let rate = warmup.ok as f64 / warmup.elapsed.as_secs_f64().max(1e-3);
                    (rate * d.as_secs_f64() * 1.4) as usize + 64 * options.connections
                }
            };
            let count = needed.min(options.max_proofs);
            if count < needed {
                report.notes.push(format!(
                    "proofs capped at {count} (--max-proofs); the run may end early"
                ));
            }
            let started = Instant::now();
            let proofs_now = proofs.generate(4000, count)?;
            report.preparation_s = started.elapsed().as_secs_f64();
            prepared = proofs_now.len();
            (Arc::new(proofs.workload(4000, proofs_now)), 0)
        }
    };
    if report.preparation_s == 0.0 {
        report.preparation_s = preparation.elapsed().as_secs_f64();
    }
    report.prepared = prepared;

    let floor_before = floor::measure(options.floor_iterations)?;
    let threads_before = endpoint
        .pid
        .map(procfs::cpu_ticks_by_thread)
        .unwrap_or_default();
    let server_before = endpoint.pid.and_then(procfs::cpu_ticks);
    let system_before = endpoint.pid.and_then(procfs::system_ticks);
    let client_before = procfs::cpu_ticks(std::process::id());
    let sampler = floor::Sampler::start()?;
    let (outcome, connections) =
        load::closed_loop(connections, workload.clone(), first, options.stop).await;
    let (floor_during, floor_samples, sampler_cpu_s) = sampler.finish()?;
    let server_after = endpoint.pid.and_then(procfs::cpu_ticks);
    let system_after = endpoint.pid.and_then(procfs::system_ticks);
    let threads_after = endpoint
        .pid
        .map(procfs::cpu_ticks_by_thread)
        .unwrap_or_default();
    let client_after = procfs::cpu_ticks(std::process::id());
    drop(connections);
    let rss_after = endpoint.pid.and_then(procfs::rss_bytes);
    let threads = endpoint.pid.and_then(procfs::threads);
    let floor_after = floor::measure(options.floor_iterations)?;
    // The floor measured alongside the load when there are enough samples (a run of a
    // second or two has few); otherwise what was measured just before and after it.
    let (floor, floor_method) = match floor_during {
        Some(during) if floor_samples >= 3 => (
            during,
            format!("median of {floor_samples} samples during the run"),
        ),
        _ => (
            floor_before.mean(floor_after),
            "mean of before and after the run".to_string(),
        ),
    };

    let Outcome {
        ok,
        non_ok,
        errors,
        first_error,
        mut latencies_us,
        elapsed,
        exhausted,
        ..
    } = outcome;
    let per_request = |before: Option<u64>, after: Option<u64>| -> Option<f64> {
        let delta = after?.checked_sub(before?)?;
        (ok > 0).then(|| delta as f64 * 1e6 / ticks.per_second as f64 / ok as f64)
    };
    let server_cpu = per_request(server_before, server_after);
    let cores = match (server_before, server_after) {
        (Some(b), Some(a)) => Some(
            a.saturating_sub(b) as f64 / ticks.per_second as f64 / elapsed.as_secs_f64().max(1e-9),
        ),
        _ => None,
    };
    let (floor_kind, floor_us, bare_floor_us) = scenario.floor_us(&floor);
    report.elapsed_s = elapsed.as_secs_f64();
    report.ok = ok;
    report.non_200 = non_ok;
    report.transport_errors = errors;
    report.first_error = first_error;
    report.per_second = ok as f64 / elapsed.as_secs_f64().max(1e-9);
    report.latency = stats::latency(&mut latencies_us);
    report.server = endpoint.pid.map(|pid| ServerFigures {
        pid,
        startup_ms,
        idle_rss_mb: mb(idle_rss),
        rss_after_mb: mb(rss_after),
        threads,
        cpu_us_per_request: server_cpu,
        system_us_per_request: per_request(system_before, system_after),
        cores_busy: cores,
        cpu_us_per_request_by_thread: threads_after
            .iter()
            .filter_map(|(name, &after)| {
                let before = threads_before.get(name).copied().unwrap_or(0);
                let delta = after.saturating_sub(before);
                (delta > 0 && ok > 0).then(|| {
                    (
                        name.clone(),
                        delta as f64 * 1e6 / ticks.per_second as f64 / ok as f64,
                    )
                })
            })
            .collect(),
    });
    report.clk_tck = ticks.per_second;
    report.clk_tck_assumed = !ticks.measured;
    // The floor sampler ran in this process; its CPU is not the load generator's.
    report.client_cpu_us_per_request = per_request(client_before, client_after)
        .map(|us| (us - sampler_cpu_s * 1e6 / ok.max(1) as f64).max(0.0));
    report.floor_samples_during_run = floor_samples;
    report.floor_method = floor_method;
    report.floor = Some(floor);
    report.floor_before_after_us = Some((
        scenario.floor_us(&floor_before).1,
        scenario.floor_us(&floor_after).1,
    ));
    report.floor_kind = floor_kind;
    report.floor_us = Some(floor_us);
    report.cpu_over_floor = server_cpu.map(|c| c / floor_us);
    report.bare_floor_us = Some(bare_floor_us);
    report.cpu_over_bare_floor = server_cpu.map(|c| c / bare_floor_us);
    report.exhausted = exhausted;
    if exhausted {
        report.notes.push(format!(
            "the pre-generated proofs ran out after {:.1} s; the rate is over that time",
            elapsed.as_secs_f64()
        ));
    }
    if let Some(process) = endpoint.process.take() {
        process.stop()?;
    }
    Ok(report)
}

/// One soak interval.
#[derive(Debug, Clone, Serialize)]
pub struct SoakInterval {
    pub t_s: f64,
    pub ok: u64,
    pub non_200: u64,
    pub transport_errors: u64,
    pub rate: f64,
    pub latency: Latency,
    /// `authority_store_entries{kind=...}` from `/metrics`.
    pub store_entries: BTreeMap<String, u64>,
    pub rss_mb: Option<f64>,
    pub cpu_us_per_request: Option<f64>,
    /// Size of the server's data directory (store files), when the benchmark started it.
    pub data_dir_mb: Option<f64>,
    /// Requests due but not yet sent when the interval ended.
    pub backlog: usize,
    pub first_error: Option<String>,
}

/// The soak's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub scenario: &'static str,
    pub rate: f64,
    pub duration_s: f64,
    pub connections: usize,
    pub startup_ms: Option<f64>,
    pub idle_rss_mb: Option<f64>,
    pub intervals: Vec<SoakInterval>,
    pub notes: Vec<String>,
}

/// Parses `authority_store_entries{kind="jti"} 123` lines of the metrics exposition.
pub fn store_entries(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("authority_store_entries{kind=\"")?;
            let (kind, rest) = rest.split_once('"')?;
            let value = rest.rsplit(' ').next()?.trim();
            Some((kind.to_string(), value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// A steady request rate for `duration`, reporting every `interval` through `each`.
pub async fn soak(
    scenario: Scenario,
    options: &Options,
    duration: Duration,
    rate: f64,
    interval: Duration,
    each: &mut (dyn FnMut(&SoakInterval) + Send),
) -> Result<SoakReport, BenchError> {
    if !matches!(
        scenario,
        Scenario::Dpop | Scenario::DpopNonce | Scenario::Bearer | Scenario::Redis
    ) {
        return Err(BenchError::Setup(format!(
            "the soak runs the dpop, dpop-nonce, bearer or redis scenario, not {}",
            scenario.name()
        )));
    }
    if let Some(why) = unavailable(scenario, options, &Credentials::default())
        .filter(|_| scenario == Scenario::Redis)
    {
        return Err(BenchError::Setup(why));
    }
    let mut endpoint = endpoint(scenario, options, true).await?;
    let mut notes = Vec::new();
    if endpoint.process.is_some() {
        notes.push(
            "the soak's site uses replayWindow 75s and token lifetime 1m so the store reaches its steady state (rate × window) within the run".into(),
        );
    }
    let startup_ms = endpoint
        .process
        .as_ref()
        .map(|p| p.startup.as_secs_f64() * 1e3);
    let idle_rss_mb = mb(endpoint.pid.and_then(procfs::rss_bytes));
    let plan = plan(scenario, &mut endpoint, options).await?;
    let connections = endpoint.connect(options.connections).await?;
    let mut metrics_connection = endpoint.target.connect().await.map_err(client_error)?;
    let nonce = match &plan {
        Plan::Proofs(p) => p.nonce.clone(),
        Plan::Fixed(_) => None,
    };
    let shared = load::OpenLoop::new(nonce);

    // The generator: proofs are signed at most ~2 s before they are due.
    let buffer = (rate * 2.0).max(16.0) as usize;
    let (tx, rx) = tokio::sync::mpsc::channel::<Prepared>(buffer);
    let generator_shared = shared.clone();
    let generator = std::thread::spawn(move || -> Result<(), BenchError> {
        let mut i = 0usize;
        loop {
            let request = match &plan {
                Plan::Fixed(workload) => workload.request(i),
                Plan::Proofs(proofs) => {
                    let nonce = generator_shared.current_nonce();
                    let proof = proofs.proof(i, nonce.as_deref())?;
                    proofs.workload(i, vec![proof]).request(0)
                }
            };
            let Some(request) = request else {
                return Ok(());
            };
            if tx.blocking_send(request).is_err() {
                return Ok(());
            }
            i += 1;
        }
    });

    let ticks = procfs::clock_ticks();
    let started = Instant::now();
    let until = started + duration;
    let driver = tokio::spawn(load::open_loop(
        connections,
        rx,
        rate,
        until,
        shared.clone(),
    ));
    let mut intervals = Vec::new();
    let mut cpu_before = endpoint.pid.and_then(procfs::cpu_ticks);
    let data_dir = endpoint.process.as_ref().map(ServerProcess::data_dir);
    let mut next = started + interval;
    while next <= until + Duration::from_millis(500) {
        tokio::time::sleep_until(next.into()).await;
        let mut stats = shared.take();
        let cpu_after = endpoint.pid.and_then(procfs::cpu_ticks);
        let store = match metrics_connection.get("/metrics").await {
            Ok(reply) => store_entries(&String::from_utf8_lossy(&reply.body)),
            Err(_) => {
                // The metrics connection may have timed out; one reconnect.
                match endpoint.target.connect().await {
                    Ok(mut c) => {
                        let entries = match c.get("/metrics").await {
                            Ok(reply) => store_entries(&String::from_utf8_lossy(&reply.body)),
                            Err(_) => BTreeMap::new(),
                        };
                        metrics_connection = c;
                        entries
                    }
                    Err(_) => BTreeMap::new(),
                }
            }
        };
        let cpu = match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if stats.ok > 0 => {
                Some(a.saturating_sub(b) as f64 * 1e6 / ticks.per_second as f64 / stats.ok as f64)
            }
            _ => None,
        };
        cpu_before = cpu_after;
        let point = SoakInterval {
            t_s: started.elapsed().as_secs_f64(),
            ok: stats.ok,
            non_200: stats.non_ok,
            transport_errors: stats.errors,
            rate: stats.ok as f64 / interval.as_secs_f64(),
            latency: stats::latency(&mut stats.latencies_us),
            store_entries: store,
            rss_mb: mb(endpoint.pid.and_then(procfs::rss_bytes)),
            cpu_us_per_request: cpu,
            data_dir_mb: data_dir
                .as_deref()
                .map(|d| server::disk_usage(d) as f64 / (1024.0 * 1024.0)),
            backlog: shared.backlog.load(std::sync::atomic::Ordering::Relaxed),
            first_error: stats.first_error.take(),
        };
        each(&point);
        intervals.push(point);
        next += interval;
    }
    let _ = driver.await;
    match generator.join() {
        Ok(Err(e)) => notes.push(format!("proof generator stopped: {e}")),
        Err(_) => notes.push("proof generator panicked".into()),
        Ok(Ok(())) => {}
    }
    if let Some(process) = endpoint.process.take() {
        process.stop()?;
    }
    Ok(SoakReport {
        scenario: scenario.name(),
        rate,
        duration_s: duration.as_secs_f64(),
        connections: options.connections,
        startup_ms,
        idle_rss_mb,
        intervals,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_gauges_are_read_from_the_exposition() {
        let text = "# HELP authority_store_entries Live entries\n# TYPE authority_store_entries gauge\nauthority_store_entries{kind=\"nonce\"} 1\nauthority_store_entries{kind=\"jti\"} 15000\nauthority_store_entries{kind=\"token\"} 14990\nauthority_store_errors_total 0\n";
        let entries = store_entries(text);
        assert_eq!(entries.get("jti"), Some(&15000));
        assert_eq!(entries.get("token"), Some(&14990));
        assert_eq!(entries.get("nonce"), Some(&1));
        assert_eq!(entries.len(), 3);
    }

    #[test]
    fn scenarios_round_trip_their_names() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Some(s));
        }
        assert_eq!(Scenario::parse("nope"), None);
    }

    #[test]
    fn soak_edit_shortens_windows_and_redis_adds_storage() {
        let mut yaml =
            "logging:\n  directory: logs\ntokens:\n  lifetime: 5m\nsecurity:\n      replayWindow: 5m\n"
                .to_string();
        site_edit(
            Scenario::Redis,
            Some("redis://127.0.0.1:1"),
            Some("warn"),
            true,
        )(&mut yaml);
        assert!(yaml.contains("lifetime: 1m"), "{yaml}");
        assert!(yaml.contains("replayWindow: 75s"), "{yaml}");
        assert!(yaml.contains("kind: redis"), "{yaml}");
        assert!(
            yaml.contains("logging:\n  level: \"warn\"\n  directory"),
            "{yaml}"
        );
    }
}
