//! `guard.yaml`: the configuration of `sealkit guard`, its schema and its validation into
//! [`GuardSettings`]. The sections it shares with `authority.yaml` (logging, limits,
//! metrics, storage, DPoP) are validated by the same rules (`config::validate_shared`);
//! every problem is reported with its key path.

use crate::config::duration::HumanDuration;
use crate::config::{
    ConfigError, ConfigProblem, DpopFile, DpopSettings, LimitsFile, LimitsSettings, LoggingFile,
    LoggingSettings, MetricsFile, StorageFile, StorageSettings,
};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The name of the guard's configuration inside a bundle, beside `authority.yaml`.
pub const GUARD_FILE: &str = "guard.yaml";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardFile {
    pub listen: String,
    /// The guard's URL as clients address it (`htu` is this + the request path).
    pub external_url: String,
    pub tls: GuardTlsFile,
    pub data_dir: PathBuf,
    /// The authority's issuer identifier: access tokens must carry it as `iss`.
    pub issuer: String,
    pub keys: KeysFile,
    #[serde(default)]
    pub introspection: Option<IntrospectionFile>,
    /// `http://127.0.0.1:PORT` (loopback) or `unix:/path/to.sock`.
    pub upstream: String,
    #[serde(default = "default_upstream_timeout")]
    pub upstream_timeout: HumanDuration,
    /// Tolerance for the token's `exp`, `nbf` and `iat`.
    #[serde(default = "default_token_skew")]
    pub token_clock_skew: HumanDuration,
    /// Proxies in front of the guard allowed to forward `Client-Cert` (RFC 9440).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// More identity headers to remove from every request before it is forwarded.
    #[serde(default)]
    pub strip_headers: Vec<String>,
    #[serde(default)]
    pub max_upstream_body_bytes: Option<usize>,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub logging: LoggingFile,
    #[serde(default)]
    pub metrics: MetricsFile,
    #[serde(default)]
    pub storage: StorageFile,
    #[serde(default)]
    pub dpop: GuardDpopFile,
    pub routes: Vec<RouteFile>,
}

fn default_upstream_timeout() -> HumanDuration {
    HumanDuration::secs(30)
}
fn default_token_skew() -> HumanDuration {
    HumanDuration::secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardTlsFile {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Client certificates (optional) are verified against this CA (the site CA).
    pub client_ca: Option<PathBuf>,
    pub client_crl: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KeysFile {
    /// A JWKS file carried in the bundle (offline: the keys never need fetching).
    pub jwks_file: Option<PathBuf>,
    /// Or the authority's `/jwks`, fetched over TLS pinned to `caFile`.
    pub jwks_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    /// How often a fetched JWKS is refreshed.
    #[serde(default = "default_refresh")]
    pub refresh: HumanDuration,
    /// The least time between two fetches caused by an unknown `kid`.
    #[serde(default = "default_min_refetch")]
    pub min_refetch: HumanDuration,
}
fn default_refresh() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_min_refetch() -> HumanDuration {
    HumanDuration::secs(30)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IntrospectionFile {
    /// The authority's `/introspect` (RFC 7662), over TLS pinned to `keys.caFile`.
    pub url: String,
    pub client_id: String,
    /// A file holding the guard's client secret (one line); never the secret itself.
    pub client_secret_file: PathBuf,
    /// How long an answer is reused (revocation is seen within this time).
    #[serde(default = "default_introspection_cache")]
    pub cache_ttl: HumanDuration,
}
fn default_introspection_cache() -> HumanDuration {
    HumanDuration::secs(5)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GuardDpopFile {
    #[serde(default = "default_algorithms")]
    pub allowed_algorithms: Vec<String>,
    #[serde(default = "default_proof_lifetime")]
    pub proof_lifetime: HumanDuration,
    #[serde(default = "default_proof_skew")]
    pub allowed_clock_skew: HumanDuration,
    #[serde(default = "default_replay_window")]
    pub replay_window: HumanDuration,
    #[serde(default = "default_nonce_ttl")]
    pub nonce_ttl: HumanDuration,
}
impl Default for GuardDpopFile {
    fn default() -> Self {
        GuardDpopFile {
            allowed_algorithms: default_algorithms(),
            proof_lifetime: default_proof_lifetime(),
            allowed_clock_skew: default_proof_skew(),
            replay_window: default_replay_window(),
            nonce_ttl: default_nonce_ttl(),
        }
    }
}
fn default_algorithms() -> Vec<String> {
    vec!["ES256".into(), "EdDSA".into()]
}
fn default_proof_lifetime() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_proof_skew() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_replay_window() -> HumanDuration {
    HumanDuration::secs(120)
}
fn default_nonce_ttl() -> HumanDuration {
    HumanDuration::secs(300)
}

/// What a route accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Constraint {
    /// DPoP-bound tokens (`cnf.jkt`), with a proof (RFC 9449 §7).
    Dpop,
    /// Certificate-bound tokens (`cnf.x5t#S256`) over their certificate (RFC 8705 §3).
    Mtls,
    /// Unbound tokens.
    Bearer,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteFile {
    /// A path prefix, starting with `/`.
    pub prefix: String,
    /// Methods this route covers; empty or absent: every method.
    #[serde(default)]
    pub methods: Vec<String>,
    /// The audience access tokens must carry (`aud`).
    pub audience: String,
    /// Scopes the token must all carry.
    #[serde(default)]
    pub scopes: Vec<String>,
    pub accept: Vec<Constraint>,
    #[serde(default)]
    pub require_nonce: bool,
    /// Ask the authority (RFC 7662) on every request (with a short cache): for resources
    /// where a revocation must take effect at once. Fails closed.
    #[serde(default)]
    pub introspect: bool,
}

/// Where requests are forwarded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    /// `http://host:port` on loopback.
    Http {
        authority: String,
        addr: SocketAddr,
    },
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Route {
    pub prefix: String,
    pub methods: Vec<http::Method>,
    pub audience: String,
    pub scopes: Vec<String>,
    pub accept: Vec<Constraint>,
    pub require_nonce: bool,
    pub introspect: bool,
}

#[derive(Debug, Clone)]
pub struct KeysSettings {
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub refresh: Duration,
    pub min_refetch: Duration,
}

#[derive(Debug, Clone)]
pub struct IntrospectionSettings {
    pub url: String,
    pub client_id: String,
    pub client_secret_file: PathBuf,
    pub cache_ttl: Duration,
}

/// The validated guard configuration.
#[derive(Debug, Clone)]
pub struct GuardSettings {
    pub listen: SocketAddr,
    /// Scheme, host and port clients use, without a trailing slash.
    pub external_url: String,
    pub tls_certificate: PathBuf,
    pub tls_private_key: PathBuf,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_crl: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub issuer: String,
    pub keys: KeysSettings,
    pub introspection: Option<IntrospectionSettings>,
    pub upstream: Upstream,
    pub upstream_timeout: Duration,
    pub token_clock_skew: Duration,
    pub trusted_proxies: Vec<IpAddr>,
    /// Lower-case names of the headers removed before forwarding (besides the fixed set).
    pub strip_headers: Vec<http::HeaderName>,
    pub max_upstream_body_bytes: usize,
    pub limits: LimitsSettings,
    pub logging: LoggingSettings,
    pub metrics_listen: Option<SocketAddr>,
    pub storage: StorageSettings,
    pub dpop: DpopSettings,
    pub routes: Vec<Route>,
}

impl GuardSettings {
    pub fn load(path: &Path) -> Result<GuardSettings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        let file: GuardFile = serde_yaml::from_str(&text).map_err(|e| ConfigError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        validate(file, base, crate::clock::unix_now()).map_err(|problems| ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        })
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

/// Identity headers proxies commonly set; never forwarded from a client.
pub const IDENTITY_HEADERS: [&str; 4] = [
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "remote-user",
];

fn validate(file: GuardFile, base: &Path, now: i64) -> Result<GuardSettings, Vec<ConfigProblem>> {
    let mut problems: Vec<ConfigProblem> = Vec::new();
    let mut add = |path: &str, message: String| {
        problems.push(ConfigProblem {
            path: path.to_string(),
            message,
        })
    };
    let listen = file.listen.parse::<SocketAddr>().unwrap_or_else(|_| {
        add("listen", "must be IP:PORT, e.g. 0.0.0.0:9443".into());
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let external_url = file.external_url.trim_end_matches('/').to_string();
    match url::Url::parse(&external_url) {
        Ok(u) if u.scheme() == "https" && u.host().is_some() && u.path() == "/" => {}
        Ok(_) => add(
            "externalUrl",
            "must be https://host[:port] with no path, query or fragment".into(),
        ),
        Err(e) => add("externalUrl", format!("not a URL: {e}")),
    }
    let issuer = file.issuer.trim_end_matches('/').to_string();
    if !issuer.starts_with("https://") || url::Url::parse(&issuer).is_err() {
        add("issuer", "must be the authority's https issuer URL".into());
    }
    let tls_certificate = resolve(base, &file.tls.certificate);
    let tls_private_key = resolve(base, &file.tls.private_key);
    let tls_client_ca = file.tls.client_ca.as_ref().map(|p| resolve(base, p));
    let tls_client_crl = file.tls.client_crl.as_ref().map(|p| resolve(base, p));
    if tls_client_crl.is_some() && tls_client_ca.is_none() {
        add("tls.clientCrl", "a CRL needs tls.clientCa".into());
    }
    for (key, path) in [
        ("tls.certificate", Some(&tls_certificate)),
        ("tls.privateKey", Some(&tls_private_key)),
        ("tls.clientCa", tls_client_ca.as_ref()),
        ("tls.clientCrl", tls_client_crl.as_ref()),
    ] {
        if let Some(path) = path.filter(|p| !p.is_file()) {
            add(key, format!("{} is not a readable file", path.display()));
        }
    }
    let data_dir = resolve(base, &file.data_dir);

    let keys = KeysSettings {
        jwks_file: file.keys.jwks_file.as_ref().map(|p| resolve(base, p)),
        jwks_url: file.keys.jwks_url.clone(),
        ca_file: file.keys.ca_file.as_ref().map(|p| resolve(base, p)),
        refresh: file.keys.refresh.0,
        min_refetch: file.keys.min_refetch.0,
    };
    match (&keys.jwks_file, &keys.jwks_url) {
        (Some(_), Some(_)) | (None, None) => {
            add("keys", "name exactly one of jwksFile and jwksUrl".into())
        }
        (Some(f), None) if !f.is_file() => add(
            "keys.jwksFile",
            format!("{} is not a readable file", f.display()),
        ),
        (None, Some(u)) => {
            if !u.starts_with("https://") || url::Url::parse(u).is_err() {
                add("keys.jwksUrl", "must be an https URL".into());
            }
            match &keys.ca_file {
                None => add(
                    "keys.caFile",
                    "a fetched JWKS needs the site CA to pin the authority's certificate".into(),
                ),
                Some(f) if !f.is_file() => add(
                    "keys.caFile",
                    format!("{} is not a readable file", f.display()),
                ),
                Some(_) => {}
            }
        }
        _ => {}
    }
    if keys.refresh < Duration::from_secs(10) || keys.refresh > Duration::from_secs(86_400) {
        add("keys.refresh", "must be between 10s and 24h".into());
    }
    if keys.min_refetch < Duration::from_secs(1) || keys.min_refetch > keys.refresh {
        add(
            "keys.minRefetch",
            "must be between 1s and keys.refresh".into(),
        );
    }
    let introspection = file.introspection.as_ref().map(|i| {
        let secret = resolve(base, &i.client_secret_file);
        if !i.url.starts_with("https://") || url::Url::parse(&i.url).is_err() {
            add("introspection.url", "must be an https URL".into());
        }
        if keys.ca_file.is_none() {
            add(
                "introspection.url",
                "introspection is pinned to keys.caFile, which is missing".into(),
            );
        }
        if !secret.is_file() {
            add(
                "introspection.clientSecretFile",
                format!("{} is not a readable file", secret.display()),
            );
        }
        if i.cache_ttl.0 > Duration::from_secs(60) {
            add("introspection.cacheTtl", "must be at most 1m".into());
        }
        IntrospectionSettings {
            url: i.url.clone(),
            client_id: i.client_id.clone(),
            client_secret_file: secret,
            cache_ttl: i.cache_ttl.0,
        }
    });

    let upstream = match file.upstream.strip_prefix("unix:") {
        Some(path) => Upstream::Unix(resolve(base, Path::new(path))),
        None => match url::Url::parse(&file.upstream) {
            Ok(u) if u.scheme() == "http" && u.path() == "/" => {
                let host = u.host_str().unwrap_or_default().to_string();
                let port = u.port_or_known_default().unwrap_or(80);
                match format!("{host}:{port}").parse::<SocketAddr>() {
                    Ok(addr) if addr.ip().is_loopback() => Upstream::Http {
                        authority: format!("{host}:{port}"),
                        addr,
                    },
                    _ => {
                        add(
                            "upstream",
                            "must be http://<loopback IP>:PORT or unix:/path (the guard forwards in plain HTTP, so only on this host)".into(),
                        );
                        Upstream::Unix(PathBuf::new())
                    }
                }
            }
            _ => {
                add(
                    "upstream",
                    "must be http://127.0.0.1:PORT or unix:/path/to.sock".into(),
                );
                Upstream::Unix(PathBuf::new())
            }
        },
    };
    let upstream_timeout = file.upstream_timeout.0;
    if upstream_timeout < Duration::from_secs(1) || upstream_timeout > Duration::from_secs(600) {
        add("upstreamTimeout", "must be between 1s and 10m".into());
    }
    let token_clock_skew = file.token_clock_skew.0;
    if token_clock_skew > Duration::from_secs(300) {
        add("tokenClockSkew", "must be at most 5m".into());
    }
    let mut trusted_proxies = Vec::new();
    for (i, text) in file.trusted_proxies.iter().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) => trusted_proxies.push(ip),
            Err(_) => add(
                &format!("trustedProxies[{i}]"),
                "must be an IP address".into(),
            ),
        }
    }
    if !trusted_proxies.is_empty() && tls_client_ca.is_none() {
        add(
            "trustedProxies",
            "forwarded client certificates are verified against tls.clientCa, which is missing"
                .into(),
        );
    }
    let mut strip_headers = Vec::new();
    for (i, name) in file.strip_headers.iter().enumerate() {
        match http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) {
            Ok(h) => strip_headers.push(h),
            Err(_) => add(&format!("stripHeaders[{i}]"), "not a header name".into()),
        }
    }
    let max_upstream_body_bytes = file.max_upstream_body_bytes.unwrap_or(16 * 1024 * 1024);

    // The sections shared with authority.yaml, by the same rules.
    let dpop_file = DpopFile {
        enabled: true,
        allowed_algorithms: file.dpop.allowed_algorithms.clone(),
        proof_lifetime: file.dpop.proof_lifetime,
        allowed_clock_skew: file.dpop.allowed_clock_skew,
        replay_window: file.dpop.replay_window,
        nonce: crate::config::NonceFile {
            required: false,
            ttl: file.dpop.nonce_ttl,
            store: None,
        },
        allow_temporary_bypass: crate::config::BypassFile::Absent,
    };
    let (shared, shared_problems) = crate::config::validate_shared(
        &crate::config::SharedFiles {
            logging: &file.logging,
            limits: &file.limits,
            metrics: &file.metrics,
            storage: &file.storage,
            dpop: &dpop_file,
        },
        base,
        &data_dir,
        &issuer,
        now,
    );
    problems.extend(shared_problems.into_iter().map(|p| {
        ConfigProblem {
            // The guard's DPoP settings are a top-level `dpop:` section.
            path: p
                .path
                .replace("security.senderConstraints.dpop.nonce.ttl", "dpop.nonceTtl")
                .replace("security.senderConstraints.dpop", "dpop"),
            message: p.message,
        }
    }));
    // Where paths may point, by the authority's rules: no data or log directory and no
    // secret inside a bundle root (a later import deletes generations; bundles are signed,
    // not encrypted).
    use crate::config::paths::{judge_all, Use};
    problems.extend(judge_all(
        base,
        &[
            ("dataDir", Some(file.data_dir.as_path()), Use::HostDirectory),
            (
                "logging.directory",
                file.logging.directory.as_deref(),
                Use::HostDirectory,
            ),
            (
                "tls.privateKey",
                Some(file.tls.private_key.as_path()),
                Use::HostSecret,
            ),
            (
                "introspection.clientSecretFile",
                file.introspection
                    .as_ref()
                    .map(|i| i.client_secret_file.as_path()),
                Use::HostSecret,
            ),
            (
                "storage.passwordFile",
                file.storage.password_file.as_deref(),
                Use::HostSecret,
            ),
            (
                "tls.certificate",
                Some(file.tls.certificate.as_path()),
                Use::Shippable,
            ),
            (
                "tls.clientCa",
                file.tls.client_ca.as_deref(),
                Use::Shippable,
            ),
            (
                "tls.clientCrl",
                file.tls.client_crl.as_deref(),
                Use::Shippable,
            ),
            (
                "keys.jwksFile",
                file.keys.jwks_file.as_deref(),
                Use::Shippable,
            ),
            ("keys.caFile", file.keys.ca_file.as_deref(), Use::Shippable),
        ],
    ));
    let mut storage = shared.storage;
    if let Some(redis) = storage.redis.as_mut() {
        // The guard's claims live apart from the authority's: a resource proof and a token
        // proof are different proofs, and neither may block the other.
        redis.site = format!("{}:guard", redis.site);
    }

    let mut routes = Vec::new();
    if file.routes.is_empty() {
        problems.push(ConfigProblem {
            path: "routes".into(),
            message: "name at least one route; requests matching none get 404".into(),
        });
    }
    for (i, route) in file.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let mut add = |key: &str, message: &str| {
            problems.push(ConfigProblem {
                path: format!("{path}.{key}"),
                message: message.into(),
            })
        };
        if !route.prefix.starts_with('/') || route.prefix.contains(['?', '#']) {
            add("prefix", "must be a path starting with /");
        }
        let mut methods = Vec::new();
        for m in &route.methods {
            match http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
                Ok(m) => methods.push(m),
                Err(_) => add("methods", "not an HTTP method"),
            }
        }
        if route.audience.is_empty() {
            add("audience", "must name the audience tokens are issued for");
        }
        if route.accept.is_empty() {
            add("accept", "name at least one of dpop, mtls, bearer");
        }
        if route.accept.contains(&Constraint::Mtls) && tls_client_ca.is_none() {
            add(
                "accept",
                "mtls needs tls.clientCa (client certificates are verified against it)",
            );
        }
        if route.require_nonce && !route.accept.contains(&Constraint::Dpop) {
            add(
                "requireNonce",
                "nonces are for DPoP proofs: accept dpop too",
            );
        }
        if route.introspect && introspection.is_none() {
            add("introspect", "needs the introspection section");
        }
        routes.push(Route {
            prefix: route.prefix.clone(),
            methods,
            audience: route.audience.clone(),
            scopes: route.scopes.clone(),
            accept: route.accept.clone(),
            require_nonce: route.require_nonce,
            introspect: route.introspect,
        });
    }

    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(GuardSettings {
        listen,
        external_url,
        tls_certificate,
        tls_private_key,
        tls_client_ca,
        tls_client_crl,
        data_dir,
        issuer,
        keys,
        introspection,
        upstream,
        upstream_timeout,
        token_clock_skew,
        trusted_proxies,
        strip_headers,
        max_upstream_body_bytes,
        limits: shared.limits,
        logging: shared.logging,
        metrics_listen: shared.metrics_listen,
        storage,
        dpop: shared.dpop,
        routes,
    })
}
