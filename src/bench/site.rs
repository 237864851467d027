//! The authority under test and how to reach it: the credentials of each role, a demo
//! site edited for a scenario (started by `server`), or a running authority (`--target`).

use super::*;

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

    pub(super) fn var(&self, key: &str) -> Option<&str> {
        self.env
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(super) fn client(&self, role: &str) -> Option<(String, String)> {
        let id = self.var(&format!("SEALKIT_{role}_CLIENT_ID"));
        let secret = self.var(&format!("SEALKIT_{role}_CLIENT_SECRET"));
        match (id, secret, &self.single) {
            (Some(id), Some(secret), _) => Some((id.to_string(), secret.to_string())),
            (_, _, Some(single)) => Some(single.clone()),
            _ => None,
        }
    }

    pub(super) fn basic(&self, role: &str) -> Result<HeaderValue, BenchError> {
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

/// Where requests go and how to reach it, for one scenario.
pub(super) struct Endpoint {
    pub(super) target: TlsTarget,
    pub(super) base_url: String,
    pub(super) credentials: Credentials,
    pub(super) pid: Option<u32>,
    /// Present when the benchmark started the server.
    pub(super) process: Option<ServerProcess>,
    /// The guard scenario's guard (then `target` and `pid` are the guard's).
    pub(super) guard: Option<server::GuardProcess>,
    /// The site CA (for an `https://` metrics URL).
    pub(super) ca_file: PathBuf,
}

impl Endpoint {
    /// The authority's `/metrics` (`SEALKIT_METRICS_URL`: its loopback listener, or the
    /// public one when `metrics.public` is on), when known.
    pub(super) fn metrics_url(&self) -> Option<&str> {
        self.credentials.var("SEALKIT_METRICS_URL")
    }

    pub(super) fn token_url(&self) -> String {
        format!("{}/token", self.base_url.trim_end_matches('/'))
    }

    pub(super) async fn connect(&self, n: usize) -> Result<Vec<Connection>, BenchError> {
        let mut connections = Vec::with_capacity(n);
        for _ in 0..n {
            connections.push(self.target.connect().await.map_err(client_error)?);
        }
        Ok(connections)
    }
}

/// Changes to the demo configuration a scenario needs.
pub(super) fn site_edit(
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
                // A namespace of its own: every bench site has a fresh signing key set,
                // and a node whose set differs from the one a namespace recorded is not
                // ready (docs/multi-node.md), so a second run on the same Redis would wait.
                let site = format!("bench-{:016x}", rand::random::<u64>());
                yaml.push_str(&format!(
                    "storage:\n  kind: redis\n  url: \"{url}\"\n  site: {site}\n"
                ));
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

pub(super) async fn endpoint(
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
                ca_file: process.site.ca_file.clone(),
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
            ca_file: ca.clone(),
        }),
    }
}

/// The mTLS client's certificate and key files, from demo.env.
pub(super) fn mtls_identity(credentials: &Credentials) -> Option<(PathBuf, PathBuf)> {
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
pub(super) fn unavailable(
    scenario: Scenario,
    options: &Options,
    credentials: &Credentials,
) -> Option<String> {
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
