//! Configuration: the `authority.yaml` file schema and its validation into [`Settings`].
//!
//! The file schema (`*File` structs: serde, camelCase keys, unknown keys rejected) is kept
//! apart from the validated [`Settings`] the rest of the program uses. Validation collects
//! *every* problem with its key path, so an operator fixes a file in one pass. This module
//! knows nothing of HTTP, storage or cryptography beyond naming algorithms.

pub mod duration;
pub mod files;
mod lenient;
pub mod paths;

use crate::dpop::ProofAlgorithm;
use crate::policy::{SenderConstraint, TenantPolicy};
use duration::HumanDuration;
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The longest a bypass drill may be configured to last.
pub const MAX_BYPASS: Duration = Duration::from_secs(4 * 3600);

/// Bounds of `limits.headerReadTimeout`, `bodyReadTimeout` and `handshakeTimeout`: `0s`
/// would refuse every request, hours would let slow clients hold every connection slot.
pub const MIN_IO_TIMEOUT: Duration = Duration::from_secs(1);
pub const MAX_IO_TIMEOUT: Duration = Duration::from_secs(120);

/// The longest `replayWindow`: the store holds rate × window claims, and the restart
/// fence lasts one window.
pub const MAX_REPLAY_WINDOW: Duration = Duration::from_secs(3600);

// ---------------------------------------------------------------------------------------
// File schema
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AuthorityFile {
    pub issuer: String,
    pub listen: String,
    pub tls: TlsFile,
    pub data_dir: PathBuf,
    #[serde(default)]
    pub tokens: TokensFile,
    #[serde(default)]
    pub logging: LoggingFile,
    #[serde(default)]
    pub limits: LimitsFile,
    #[serde(default)]
    pub metrics: MetricsFile,
    #[serde(default)]
    pub storage: StorageFile,
    #[serde(default)]
    pub security: SecurityFile,
    #[serde(default)]
    pub tenants: Vec<TenantFile>,
    #[serde(default)]
    pub clients: Vec<ClientFile>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsFile {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// Trust anchors for client certificates (RFC 8705); absent = no client certificates.
    pub client_ca: Option<PathBuf>,
    /// CRLs (PEM, one or more) checked for every client certificate.
    pub client_crl: Option<PathBuf>,
    /// TLS-terminating proxies whose RFC 9440 `Client-Cert` header is honoured; from any
    /// other peer the header is ignored (and logged).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokensFile {
    #[serde(default = "default_token_lifetime")]
    pub lifetime: HumanDuration,
    #[serde(default = "default_signing_algorithm")]
    pub signing_algorithm: String,
}
impl Default for TokensFile {
    fn default() -> Self {
        TokensFile {
            lifetime: default_token_lifetime(),
            signing_algorithm: default_signing_algorithm(),
        }
    }
}
fn default_token_lifetime() -> HumanDuration {
    HumanDuration::secs(300)
}
fn default_signing_algorithm() -> String {
    "ES256".into()
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoggingFile {
    /// Directory of the rolling JSON log files; default `<dataDir>/../logs`.
    pub directory: Option<PathBuf>,
    /// `hourly`, `daily` (default) or `never`.
    pub rotation: Option<String>,
    /// How many rotated files to keep (default 14).
    pub retention: Option<usize>,
    /// tracing filter directive for both sinks, default `info`.
    pub level: Option<String>,
    /// Also write JSON lines to stderr (default true).
    pub stderr: Option<bool>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsFile {
    pub max_header_bytes: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub header_read_timeout: Option<HumanDuration>,
    pub body_read_timeout: Option<HumanDuration>,
    pub handshake_timeout: Option<HumanDuration>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MetricsFile {
    /// A separate plain-HTTP listener for `/metrics` (must be loopback). Absent: `/metrics`
    /// is served on the main TLS listener.
    pub listen: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum StorageKind {
    #[default]
    Sled,
    Redis,
}

/// `storage:`: where nonces, jti claims and token records live. `sled` (default) needs
/// nothing more; `redis` (multi-node sites, see docs/multi-node.md) needs `url`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageFile {
    #[serde(default)]
    pub kind: StorageKind,
    /// `redis://host:port/db`, `rediss://host:port/db` (TLS) or `unix:///path/redis.sock`.
    pub url: Option<String>,
    /// The namespace of this site's keys (`sealkit:<site>:…`); default: the issuer's host.
    pub site: Option<String>,
    /// The Redis ACL user (default: Redis's `default` user).
    pub username: Option<String>,
    /// A file holding the Redis password (one line); never the password itself.
    pub password_file: Option<PathBuf>,
    /// For `rediss://`: the CA certificate(s) that signed the Redis server certificate.
    pub ca_file: Option<PathBuf>,
    /// How long one store call may take before it fails (the request then gets a 503).
    pub timeout: Option<HumanDuration>,
    /// Never accepted: read only so that an inline password is refused with a reason rather
    /// than an "unknown field". `IgnoredAny` keeps the value itself out of memory.
    #[serde(default)]
    pub password: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityFile {
    #[serde(default)]
    pub sender_constraints: SenderConstraintsFile,
    #[serde(default)]
    pub fresh_auth: FreshAuthFile,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FreshAuthFile {
    /// How long a successful `/fresh-auth` counts as fresh.
    #[serde(default = "default_fresh_auth_window")]
    pub window: HumanDuration,
}
impl Default for FreshAuthFile {
    fn default() -> Self {
        FreshAuthFile {
            window: default_fresh_auth_window(),
        }
    }
}
fn default_fresh_auth_window() -> HumanDuration {
    HumanDuration::secs(300)
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SenderConstraintsFile {
    #[serde(default)]
    pub dpop: DpopFile,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DpopFile {
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default = "default_dpop_algorithms")]
    pub allowed_algorithms: Vec<String>,
    #[serde(default = "default_proof_lifetime")]
    pub proof_lifetime: HumanDuration,
    #[serde(default = "default_clock_skew")]
    pub allowed_clock_skew: HumanDuration,
    #[serde(default = "default_replay_window")]
    pub replay_window: HumanDuration,
    #[serde(default)]
    pub nonce: NonceFile,
    /// `false` (default) or `{until: <RFC 3339 time>, reason: <text>}`.
    #[serde(default)]
    pub allow_temporary_bypass: BypassFile,
}
impl Default for DpopFile {
    fn default() -> Self {
        DpopFile {
            enabled: true,
            allowed_algorithms: default_dpop_algorithms(),
            proof_lifetime: default_proof_lifetime(),
            allowed_clock_skew: default_clock_skew(),
            replay_window: default_replay_window(),
            nonce: NonceFile::default(),
            allow_temporary_bypass: BypassFile::default(),
        }
    }
}
fn yes() -> bool {
    true
}
fn default_dpop_algorithms() -> Vec<String> {
    vec!["ES256".into(), "EdDSA".into()]
}
fn default_proof_lifetime() -> HumanDuration {
    HumanDuration::secs(60)
}
fn default_clock_skew() -> HumanDuration {
    HumanDuration::secs(5)
}
fn default_replay_window() -> HumanDuration {
    HumanDuration::secs(120)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NonceFile {
    /// Require server nonces for every tenant (tenants may also require them one by one).
    #[serde(default)]
    pub required: bool,
    #[serde(default = "default_nonce_ttl")]
    pub ttl: HumanDuration,
    /// Which store holds nonces; it must be the authority's `storage.kind`.
    pub store: Option<StorageKind>,
}
impl Default for NonceFile {
    fn default() -> Self {
        NonceFile {
            required: false,
            ttl: default_nonce_ttl(),
            store: None,
        }
    }
}
fn default_nonce_ttl() -> HumanDuration {
    HumanDuration::secs(300)
}

#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
pub enum BypassFile {
    /// `allowTemporaryBypass: false` (or absent).
    #[default]
    #[serde(skip)]
    Absent,
    Flag(bool),
    Window(BypassWindowFile),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BypassWindowFile {
    /// RFC 3339 instant at which the bypass ends by itself.
    pub until: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenantFile {
    pub id: String,
    #[serde(default)]
    pub sender_constraint: SenderConstraint,
    #[serde(default)]
    pub require_nonce: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientFile {
    pub id: String,
    pub tenant: String,
    /// `client_secret_basic` (default; `client_secret_post` is accepted too),
    /// `tls_client_auth` or `self_signed_tls_client_auth` (RFC 8705 §2).
    pub auth_method: Option<String>,
    /// `sha256:<base64url>` of the secret `sealkit secret generate` printed.
    pub secret_hash: Option<String>,
    /// `tls_client_auth`: the SAN URI the certificate must carry (exactly).
    pub tls_client_auth_san_uri: Option<String>,
    /// `tls_client_auth`: the subject DN (RFC 4514) the certificate must carry (exactly).
    pub tls_client_auth_subject_dn: Option<String>,
    /// `self_signed_tls_client_auth`: `x5t#S256` of the registered certificate(s).
    #[serde(default)]
    pub certificate_thumbprints: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub audience: Vec<String>,
    /// Tighten the tenant's sender constraint (never loosen it).
    pub sender_constraint: Option<SenderConstraint>,
    /// Require nonces even if the tenant does not.
    pub require_nonce: Option<bool>,
    /// RFC 9449 §5.2: the client always uses DPoP (same as `senderConstraint: dpop`).
    #[serde(default)]
    pub dpop_bound_access_tokens: bool,
    /// Whether this client may call `/introspect` (resource servers).
    #[serde(default)]
    pub may_introspect: bool,
}

// ---------------------------------------------------------------------------------------
// Validated settings
// ---------------------------------------------------------------------------------------

/// One problem found in a configuration file, with the key path it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub path: String,
    pub message: String,
}
impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{} problem(s) in {}:\n  {}", .problems.len(), .path.display(), .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<ConfigProblem>,
    },
}

#[derive(Debug, Clone)]
pub struct DpopSettings {
    pub enabled: bool,
    pub allowed_algorithms: Vec<ProofAlgorithm>,
    /// `algs="..."` value for `WWW-Authenticate`, precomputed.
    pub algs_header: String,
    pub proof_lifetime: Duration,
    pub clock_skew: Duration,
    pub replay_window: Duration,
    pub nonce_required: bool,
    pub nonce_ttl: Duration,
    /// `allowTemporaryBypass` is `true` or a window: bypass drills may be started.
    pub bypass_allowed: bool,
    /// The window the file itself opens (`allowTemporaryBypass: {until, reason}`).
    pub bypass: Option<BypassWindow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BypassWindow {
    /// Unix seconds at which the bypass ends by itself.
    pub until: i64,
    pub reason: String,
}

/// How a client authenticates.
#[derive(Clone)]
pub enum ClientAuth {
    /// `client_secret_basic` / `client_secret_post`.
    Secret(crate::secret::SecretHash),
    /// `tls_client_auth` / `self_signed_tls_client_auth`.
    Certificate(crate::mtls::CertificateIdentity),
}

#[derive(Clone)]
pub struct ClientSettings {
    pub id: String,
    pub tenant: String,
    pub auth: ClientAuth,
    pub scopes: Vec<String>,
    pub audience: Vec<String>,
    /// The effective policy: the tenant's, tightened by the client's registration.
    pub policy: TenantPolicy,
    pub may_introspect: bool,
}
impl fmt::Debug for ClientSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientSettings")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field(
                "auth",
                &match &self.auth {
                    ClientAuth::Secret(_) => "secret <redacted>".to_string(),
                    ClientAuth::Certificate(c) => format!("{c:?}"),
                },
            )
            .field("policy", &self.policy)
            .finish()
    }
}

/// The validated `storage:` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageSettings {
    pub kind: StorageKind,
    /// Present exactly when `kind` is `redis`.
    pub redis: Option<RedisSettings>,
}

/// How to reach the site's Redis. Holds no secret: the password stays in its file until the
/// store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// The URL as configured (it carries no credentials: validation refuses them).
    pub url: String,
    /// The key namespace: every key is `sealkit:<site>:…`.
    pub site: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// The deadline of every store call.
    pub timeout: Duration,
}

/// The default deadline of one Redis call.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct LoggingSettings {
    pub directory: PathBuf,
    pub rotation: String,
    pub retention: usize,
    pub level: String,
    pub stderr: bool,
}

#[derive(Debug, Clone)]
pub struct LimitsSettings {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_read_timeout: Duration,
    /// From the end of the headers to the end of the body (a client dribbling its body
    /// holds a connection slot; at the deadline it gets 408 and the connection is closed).
    pub body_read_timeout: Duration,
    pub handshake_timeout: Duration,
    pub max_connections: usize,
}

/// The validated configuration the authority runs on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The issuer identifier exactly as configured (no trailing slash).
    pub issuer: String,
    pub token_endpoint: String,
    pub listen: SocketAddr,
    pub tls_certificate: PathBuf,
    pub tls_private_key: PathBuf,
    pub tls_client_ca: Option<PathBuf>,
    pub tls_client_crl: Option<PathBuf>,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub fresh_auth_window: Duration,
    pub data_dir: PathBuf,
    pub token_lifetime: Duration,
    pub logging: LoggingSettings,
    pub limits: LimitsSettings,
    pub metrics_listen: Option<SocketAddr>,
    pub storage: StorageKind,
    /// The backend's connection settings (`storage` above is `storage_settings.kind`).
    pub storage_settings: StorageSettings,
    pub dpop: DpopSettings,
    pub tenants: BTreeMap<String, TenantPolicy>,
    pub clients: BTreeMap<String, Arc<ClientSettings>>,
}

impl Settings {
    /// Reads and validates `path`; relative paths inside are relative to its directory.
    pub fn load(path: &Path) -> Result<Settings, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_yaml(&text, base, crate::clock::unix_now()).map_err(|e| match e {
            ConfigError::Syntax { message, .. } => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid { problems, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                problems,
            },
            other => other,
        })
    }

    /// Parses and validates configuration text; `now` (unix seconds) judges bypass expiry.
    /// Every problem is reported: schema problems (unknown keys, wrong types, missing keys)
    /// each with its full key path, then what validation finds in the rest.
    pub fn from_yaml(text: &str, base: &Path, now: i64) -> Result<Settings, ConfigError> {
        let value: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
                path: PathBuf::new(),
                message: e.to_string(),
            })?;
        let lenient = lenient::deserialize::<AuthorityFile>(value);
        let invalid = |problems| ConfigError::Invalid {
            path: PathBuf::new(),
            problems,
        };
        let Some(file) = lenient.file else {
            return Err(invalid(lenient.problems));
        };
        let mut problems = lenient.problems;
        match validate(file, base, now) {
            Ok(settings) if problems.is_empty() => return Ok(settings),
            Ok(_) => {}
            Err(found) => {
                // Validation does not report on the placeholders of repaired keys.
                let repaired = |path: &str| {
                    lenient.repaired.iter().any(|r| {
                        path == r
                            || path
                                .strip_prefix(r.as_str())
                                .is_some_and(|rest| rest.starts_with(['.', '[']))
                    })
                };
                problems.extend(found.into_iter().filter(|p| !repaired(&p.path)));
            }
        }
        Err(invalid(problems))
    }
}

struct Problems(Vec<ConfigProblem>);
impl Problems {
    fn add(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem {
            path: path.into(),
            message: message.into(),
        });
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

fn valid_identifier(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn validate(file: AuthorityFile, base: &Path, now: i64) -> Result<Settings, Vec<ConfigProblem>> {
    let mut problems = Problems(Vec::new());

    // issuer: an https URL without query or fragment (RFC 8414 §2).
    let issuer = file.issuer.trim_end_matches('/').to_string();
    match url::Url::parse(&issuer) {
        Ok(u) if u.scheme() != "https" => problems.add("issuer", "must be an https URL"),
        Ok(u) if u.query().is_some() || u.fragment().is_some() => {
            problems.add("issuer", "must not have a query or fragment")
        }
        Ok(u) if u.host().is_none() => problems.add("issuer", "must name a host"),
        Ok(_) => {}
        Err(e) => problems.add("issuer", format!("not a URL: {e}")),
    }
    let listen = match file.listen.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            problems.add("listen", "must be IP:PORT, e.g. 0.0.0.0:8443");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };

    let tls_certificate = resolve(base, &file.tls.certificate);
    let tls_private_key = resolve(base, &file.tls.private_key);
    let tls_client_ca = file.tls.client_ca.as_ref().map(|p| resolve(base, p));
    let tls_client_crl = file.tls.client_crl.as_ref().map(|p| resolve(base, p));
    if tls_client_crl.is_some() && tls_client_ca.is_none() {
        problems.add("tls.clientCrl", "a CRL needs tls.clientCa");
    }
    let mut trusted_proxies = Vec::new();
    for (i, text) in file.tls.trusted_proxies.iter().enumerate() {
        match text.parse::<std::net::IpAddr>() {
            Ok(ip) => trusted_proxies.push(ip),
            Err(_) => problems.add(format!("tls.trustedProxies[{i}]"), "must be an IP address"),
        }
    }
    if !trusted_proxies.is_empty() && tls_client_ca.is_none() {
        problems.add(
            "tls.trustedProxies",
            "forwarded client certificates are verified against tls.clientCa, which is missing",
        );
    }
    let fresh_auth_window = file.security.fresh_auth.window.0;
    if fresh_auth_window < Duration::from_secs(10) || fresh_auth_window > Duration::from_secs(3600)
    {
        problems.add("security.freshAuth.window", "must be between 10s and 1h");
    }
    let data_dir = resolve(base, &file.data_dir);

    let token_lifetime = file.tokens.lifetime.0;
    if token_lifetime < Duration::from_secs(10) || token_lifetime > Duration::from_secs(86_400) {
        problems.add("tokens.lifetime", "must be between 10s and 24h");
    }
    if file.tokens.signing_algorithm != "ES256" {
        problems.add(
            "tokens.signingAlgorithm",
            "only ES256 is supported for access tokens",
        );
    }

    let logging = validate_logging(&file.logging, base, &data_dir, &mut problems);
    let limits = validate_limits(&file.limits, &mut problems);
    let metrics_listen = validate_metrics(&file.metrics, &mut problems);

    let storage_settings = validate_storage(&file.storage, base, &issuer, &mut problems);

    // Every file as `serve` will read it (one loader: config check, import, serve) ...
    files::check(
        &files::FilePaths {
            certificate: Some(tls_certificate.clone()),
            private_key: Some(tls_private_key.clone()),
            client_ca: tls_client_ca.clone(),
            client_crl: tls_client_crl.clone(),
            redis_ca: storage_settings
                .redis
                .as_ref()
                .and_then(|r| r.ca_file.clone()),
        },
        &mut problems,
    );
    // ... and every path judged where it really leads.
    let placement = paths::Placement::of(base);
    let redis_file = |f: fn(&StorageFile) -> &Option<PathBuf>| f(&file.storage).as_deref();
    for (key, configured, usage) in [
        (
            "dataDir",
            Some(file.data_dir.as_path()),
            paths::Use::HostDirectory,
        ),
        (
            "logging.directory",
            file.logging.directory.as_deref(),
            paths::Use::HostDirectory,
        ),
        (
            "tls.privateKey",
            Some(file.tls.private_key.as_path()),
            paths::Use::HostSecret,
        ),
        (
            "storage.passwordFile",
            redis_file(|s| &s.password_file),
            paths::Use::HostSecret,
        ),
        (
            "tls.certificate",
            Some(file.tls.certificate.as_path()),
            paths::Use::Shippable,
        ),
        (
            "tls.clientCa",
            file.tls.client_ca.as_deref(),
            paths::Use::Shippable,
        ),
        (
            "tls.clientCrl",
            file.tls.client_crl.as_deref(),
            paths::Use::Shippable,
        ),
        (
            "storage.caFile",
            redis_file(|s| &s.ca_file),
            paths::Use::Shippable,
        ),
    ] {
        if let Some(configured) = configured {
            let joined = resolve(base, configured);
            paths::judge(key, configured, &joined, usage, &placement, &mut problems);
        }
    }

    let dpop = validate_dpop(
        &file.security.sender_constraints.dpop,
        file.storage.kind,
        now,
        &mut problems,
    );

    let mut tenants = BTreeMap::new();
    for (i, tenant) in file.tenants.iter().enumerate() {
        let path = format!("tenants[{i}]");
        if !valid_identifier(&tenant.id) {
            problems.add(format!("{path}.id"), "must be 1-128 of A-Z a-z 0-9 - _ . :");
        }
        let policy = TenantPolicy {
            constraint: tenant.sender_constraint,
            require_nonce: tenant.require_nonce || dpop.nonce_required,
        };
        if policy.constraint.needs_dpop() && !dpop.enabled {
            problems.add(
                format!("{path}.senderConstraint"),
                "requires DPoP but security.senderConstraints.dpop.enabled is false",
            );
        }
        if tenants.insert(tenant.id.clone(), policy).is_some() {
            problems.add(
                format!("{path}.id"),
                format!("duplicate tenant `{}`", tenant.id),
            );
        }
    }

    let mut clients = BTreeMap::new();
    for (i, client) in file.clients.iter().enumerate() {
        let path = format!("clients[{i}]");
        if !valid_identifier(&client.id) {
            problems.add(format!("{path}.id"), "must be 1-128 of A-Z a-z 0-9 - _ . :");
        }
        let Some(tenant_policy) = tenants.get(&client.tenant).copied() else {
            problems.add(
                format!("{path}.tenant"),
                format!("unknown tenant `{}`", client.tenant),
            );
            continue;
        };
        let auth = validate_client_auth(client, &path, tls_client_ca.is_some(), &mut problems);
        if client.audience.is_empty() {
            problems.add(
                format!("{path}.audience"),
                "list at least one audience for its tokens",
            );
        }
        for (j, scope) in client.scopes.iter().enumerate() {
            if scope.is_empty()
                || !scope
                    .bytes()
                    .all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\')
            {
                problems.add(
                    format!("{path}.scopes[{j}]"),
                    "not a valid scope token (RFC 6749 §3.3)",
                );
            }
        }
        let mut constraint = client.sender_constraint.unwrap_or(tenant_policy.constraint);
        if client.dpop_bound_access_tokens && !constraint.needs_dpop() {
            constraint = constraint.and_dpop();
        }
        if !constraint.is_at_least_as_strict_as(tenant_policy.constraint) {
            problems.add(
                format!("{path}.senderConstraint"),
                format!(
                    "`{}` would loosen tenant `{}`'s `{}`; a client may only tighten it",
                    constraint, client.tenant, tenant_policy.constraint
                ),
            );
        }
        if client.require_nonce == Some(false) && tenant_policy.require_nonce {
            problems.add(
                format!("{path}.requireNonce"),
                format!(
                    "tenant `{}` requires nonces; a client may not turn them off",
                    client.tenant
                ),
            );
        }
        if constraint.needs_dpop() && !dpop.enabled {
            problems.add(
                format!("{path}.senderConstraint"),
                "requires DPoP but security.senderConstraints.dpop.enabled is false",
            );
        }
        if constraint.mentions_mtls() && tls_client_ca.is_none() {
            problems.add(
                format!("{path}.senderConstraint"),
                format!("`{constraint}` needs client certificates: set tls.clientCa"),
            );
        }
        let settings = ClientSettings {
            id: client.id.clone(),
            tenant: client.tenant.clone(),
            auth: auth.unwrap_or(ClientAuth::Secret(crate::secret::SecretHash::of(""))),
            scopes: client.scopes.clone(),
            audience: client.audience.clone(),
            policy: TenantPolicy {
                constraint,
                require_nonce: tenant_policy.require_nonce || client.require_nonce.unwrap_or(false),
            },
            may_introspect: client.may_introspect,
        };
        if clients
            .insert(client.id.clone(), Arc::new(settings))
            .is_some()
        {
            problems.add(
                format!("{path}.id"),
                format!("duplicate client `{}`", client.id),
            );
        }
    }
    let mut secret_hashes = HashSet::new();
    for (i, client) in file.clients.iter().enumerate() {
        if let Some(h) = &client.secret_hash {
            if !secret_hashes.insert(h.as_str()) {
                problems.add(
                    format!("clients[{i}].secretHash"),
                    "the same secret is registered twice",
                );
            }
        }
    }

    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let token_endpoint = format!("{issuer}/token");
    Ok(Settings {
        issuer,
        token_endpoint,
        listen,
        tls_certificate,
        tls_private_key,
        tls_client_ca,
        tls_client_crl,
        trusted_proxies,
        fresh_auth_window,
        data_dir,
        token_lifetime,
        logging,
        limits,
        metrics_listen,
        storage: file.storage.kind,
        storage_settings,
        dpop,
        tenants,
        clients,
    })
}

/// `logging:`: where and how the JSON log lines go (default `<dataDir>/logs`).
fn validate_logging(
    file: &LoggingFile,
    base: &Path,
    data_dir: &Path,
    problems: &mut Problems,
) -> LoggingSettings {
    let logging = LoggingSettings {
        directory: file
            .directory
            .as_ref()
            .map(|p| resolve(base, p))
            .unwrap_or_else(|| data_dir.join("logs")),
        rotation: file.rotation.clone().unwrap_or_else(|| "daily".into()),
        retention: file.retention.unwrap_or(14),
        level: file.level.clone().unwrap_or_else(|| "info".into()),
        stderr: file.stderr.unwrap_or(true),
    };
    if !matches!(logging.rotation.as_str(), "hourly" | "daily" | "never") {
        problems.add("logging.rotation", "must be hourly, daily or never");
    }
    if logging.retention == 0 {
        problems.add("logging.retention", "must keep at least one file");
    }
    if tracing_subscriber::EnvFilter::try_new(&logging.level).is_err() {
        problems.add("logging.level", "not a tracing filter (try info or debug)");
    }

    logging
}

/// `limits:`: request sizes, timeouts (each within [`MIN_IO_TIMEOUT`, `MAX_IO_TIMEOUT`]),
/// connections.
fn validate_limits(file: &LimitsFile, problems: &mut Problems) -> LimitsSettings {
    let limits = LimitsSettings {
        max_header_bytes: file.max_header_bytes.unwrap_or(16 * 1024),
        max_body_bytes: file.max_body_bytes.unwrap_or(16 * 1024),
        header_read_timeout: file
            .header_read_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        body_read_timeout: file
            .body_read_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        handshake_timeout: file
            .handshake_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        max_connections: file.max_connections.unwrap_or(4096),
    };
    if !(8192..=1024 * 1024).contains(&limits.max_header_bytes) {
        problems.add("limits.maxHeaderBytes", "must be between 8192 and 1048576");
    }
    if !(1024..=1024 * 1024).contains(&limits.max_body_bytes) {
        problems.add("limits.maxBodyBytes", "must be between 1024 and 1048576");
    }
    if limits.max_connections == 0 {
        problems.add("limits.maxConnections", "must be at least 1");
    }
    for (key, value) in [
        ("limits.headerReadTimeout", limits.header_read_timeout),
        ("limits.bodyReadTimeout", limits.body_read_timeout),
        ("limits.handshakeTimeout", limits.handshake_timeout),
    ] {
        if value < MIN_IO_TIMEOUT || value > MAX_IO_TIMEOUT {
            problems.add(
                key,
                format!(
                    "must be between {} and {}",
                    HumanDuration(MIN_IO_TIMEOUT),
                    HumanDuration(MAX_IO_TIMEOUT)
                ),
            );
        }
    }

    limits
}

/// `metrics.listen`: an optional plain-HTTP loopback listener for `/metrics`.
fn validate_metrics(file: &MetricsFile, problems: &mut Problems) -> Option<SocketAddr> {
    match &file.listen {
        None => None,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Some(a),
            Ok(_) => {
                problems.add("metrics.listen", "must be a loopback address (plain HTTP)");
                None
            }
            Err(_) => {
                problems.add("metrics.listen", "must be IP:PORT, e.g. 127.0.0.1:9464");
                None
            }
        },
    }
}

/// The sections `sealkit guard`'s configuration shares with the authority's, validated by
/// the same rules (`guard::config`).
pub(crate) struct SharedSections {
    pub logging: LoggingSettings,
    pub limits: LimitsSettings,
    pub metrics_listen: Option<SocketAddr>,
    pub storage: StorageSettings,
    pub dpop: DpopSettings,
}

/// The files of the shared sections, as a guard's configuration holds them.
pub(crate) struct SharedFiles<'a> {
    pub logging: &'a LoggingFile,
    pub limits: &'a LimitsFile,
    pub metrics: &'a MetricsFile,
    pub storage: &'a StorageFile,
    pub dpop: &'a DpopFile,
}

/// Validates the shared sections; every problem is returned with its key path.
pub(crate) fn validate_shared(
    files: &SharedFiles<'_>,
    base: &Path,
    data_dir: &Path,
    issuer: &str,
    now: i64,
) -> (SharedSections, Vec<ConfigProblem>) {
    let mut problems = Problems(Vec::new());
    let sections = SharedSections {
        logging: validate_logging(files.logging, base, data_dir, &mut problems),
        limits: validate_limits(files.limits, &mut problems),
        metrics_listen: validate_metrics(files.metrics, &mut problems),
        storage: validate_storage(files.storage, base, issuer, &mut problems),
        dpop: validate_dpop(files.dpop, files.storage.kind, now, &mut problems),
    };
    (sections, problems.0)
}

/// The `storage:` block: Redis settings only with `kind: redis`, never a password inline.
fn validate_storage(
    file: &StorageFile,
    base: &Path,
    issuer: &str,
    problems: &mut Problems,
) -> StorageSettings {
    const P: &str = "storage";
    if file.password.is_some() {
        problems.add(
            format!("{P}.password"),
            "a password is never written in the configuration (the file is copied into \
             bundles, backups and diffs); put it alone in a file readable only by sealkit \
             and name that file with storage.passwordFile",
        );
    }
    if file.kind == StorageKind::Sled {
        for (key, present) in [
            ("url", file.url.is_some()),
            ("site", file.site.is_some()),
            ("username", file.username.is_some()),
            ("passwordFile", file.password_file.is_some()),
            ("caFile", file.ca_file.is_some()),
            ("timeout", file.timeout.is_some()),
        ] {
            if present {
                problems.add(format!("{P}.{key}"), "only used with storage.kind: redis");
            }
        }
        return StorageSettings {
            kind: StorageKind::Sled,
            redis: None,
        };
    }

    let url = file.url.clone().unwrap_or_default();
    let mut tls = false;
    if file.url.is_none() {
        problems.add(
            format!("{P}.url"),
            "storage.kind: redis needs a url (redis://host:port/db, rediss://host:port/db or unix:///path/redis.sock)",
        );
    } else {
        match url::Url::parse(&url) {
            Err(e) => problems.add(format!("{P}.url"), format!("not a URL: {e}")),
            Ok(u) => {
                if u.password().is_some() {
                    problems.add(
                        format!("{P}.url"),
                        "must not carry a password: the configuration is no place for it; use storage.passwordFile",
                    );
                } else if !u.username().is_empty() {
                    problems.add(
                        format!("{P}.url"),
                        "must not carry a user name; use storage.username",
                    );
                }
                if u.fragment().is_some() {
                    problems.add(
                        format!("{P}.url"),
                        "must not have a #fragment (`#insecure` would turn off certificate checks)",
                    );
                }
                match u.scheme() {
                    "redis" | "rediss" => {
                        tls = u.scheme() == "rediss";
                        if u.host_str().map_or(true, str::is_empty) {
                            problems.add(format!("{P}.url"), "must name the Redis host");
                        }
                        let db = u.path().trim_start_matches('/');
                        if !db.is_empty() && db.parse::<u16>().is_err() {
                            problems.add(
                                format!("{P}.url"),
                                "the path is the database number, e.g. redis://10.0.0.5:6379/0",
                            );
                        }
                        if u.query().is_some() {
                            problems.add(format!("{P}.url"), "must not have a query");
                        }
                    }
                    "unix" => {
                        if !u.path().starts_with('/') || u.path().len() < 2 {
                            problems.add(
                                format!("{P}.url"),
                                "must name the socket by its absolute path, e.g. unix:///run/redis/redis.sock",
                            );
                        }
                        for (key, value) in u.query_pairs() {
                            if key != "db" || value.parse::<u16>().is_err() {
                                problems.add(
                                    format!("{P}.url"),
                                    "the only query a unix URL may have is ?db=<number>",
                                );
                            }
                        }
                    }
                    other => problems.add(
                        format!("{P}.url"),
                        format!("scheme `{other}` is not redis://, rediss:// or unix://"),
                    ),
                }
            }
        }
    }

    // The site: a key namespace that an ACL pattern `~sealkit:<site>:*` can grant exactly.
    let site = match &file.site {
        Some(site) => {
            if site.is_empty()
                || site.len() > 64
                || !site
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            {
                problems.add(
                    format!("{P}.site"),
                    "must be 1-64 of A-Z a-z 0-9 - _ . (no `:`, `*` or spaces: it is a key namespace)",
                );
            }
            site.clone()
        }
        None => url::Url::parse(issuer)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .map(|host| {
                host.trim_matches(['[', ']'])
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                            c
                        } else {
                            '-'
                        }
                    })
                    .take(64)
                    .collect::<String>()
            })
            .unwrap_or_default(),
    };

    if let Some(user) = &file.username {
        if user.is_empty() || user.chars().any(|c| c.is_whitespace() || c.is_control()) {
            problems.add(
                format!("{P}.username"),
                "must be a non-empty name without spaces",
            );
        }
    }

    let password_file = file.password_file.as_ref().map(|p| resolve(base, p));
    if let Some(path) = &password_file {
        use std::os::unix::fs::PermissionsExt;
        match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => {
                if meta.permissions().mode() & 0o004 != 0 {
                    problems.add(
                        format!("{P}.passwordFile"),
                        format!(
                            "{} is readable by every user; chmod 600 it (or 640 with sealkit's group)",
                            path.display()
                        ),
                    );
                }
            }
            _ => problems.add(
                format!("{P}.passwordFile"),
                format!("{} is not a readable file", path.display()),
            ),
        }
    }

    let ca_file = file.ca_file.as_ref().map(|p| resolve(base, p));
    match &ca_file {
        Some(path) if !tls => problems.add(
            format!("{P}.caFile"),
            format!(
                "only used with rediss:// URLs (TLS); {} would be ignored",
                path.display()
            ),
        ),
        None if tls => problems.add(
            format!("{P}.caFile"),
            "rediss:// needs caFile: the site CA that signed the Redis server certificate \
             (the system trust store is not consulted)",
        ),
        _ => {}
    }

    let timeout = file.timeout.map(|d| d.0).unwrap_or(DEFAULT_REDIS_TIMEOUT);
    if timeout < Duration::from_millis(10) || timeout > Duration::from_secs(10) {
        problems.add(format!("{P}.timeout"), "must be between 10ms and 10s");
    }

    StorageSettings {
        kind: StorageKind::Redis,
        redis: Some(RedisSettings {
            url,
            site,
            username: file.username.clone(),
            password_file,
            ca_file,
            timeout,
        }),
    }
}

fn validate_dpop(
    file: &DpopFile,
    storage: StorageKind,
    now: i64,
    problems: &mut Problems,
) -> DpopSettings {
    const P: &str = "security.senderConstraints.dpop";
    let mut allowed = Vec::new();
    for (i, name) in file.allowed_algorithms.iter().enumerate() {
        match ProofAlgorithm::parse(name) {
            Some(alg) if !allowed.contains(&alg) => allowed.push(alg),
            Some(_) => problems.add(format!("{P}.allowedAlgorithms[{i}]"), format!("`{name}` listed twice")),
            None if name.eq_ignore_ascii_case("none") || name.to_ascii_uppercase().starts_with("HS") => {
                problems.add(
                    format!("{P}.allowedAlgorithms[{i}]"),
                    format!("`{name}` can never be allowed: DPoP proofs need an asymmetric signature (RFC 9449 §4.2)"),
                )
            }
            None => problems.add(
                format!("{P}.allowedAlgorithms[{i}]"),
                format!("unknown algorithm `{name}` (ES256, ES384, EdDSA, PS256, RS256)"),
            ),
        }
    }
    if file.enabled && allowed.is_empty() {
        problems.add(
            format!("{P}.allowedAlgorithms"),
            "must list at least one algorithm",
        );
    }
    let lifetime = file.proof_lifetime.0;
    let skew = file.allowed_clock_skew.0;
    if lifetime < Duration::from_secs(1) || lifetime > Duration::from_secs(600) {
        problems.add(format!("{P}.proofLifetime"), "must be between 1s and 10m");
    }
    if skew > Duration::from_secs(300) {
        problems.add(format!("{P}.allowedClockSkew"), "must be at most 5m");
    }
    // A proof dated `skew` in the future stays acceptable until iat + lifetime + skew, so
    // the jti must be remembered at least that long after it was first seen.
    let minimum_window = lifetime + skew * 2;
    if file.replay_window.0 > MAX_REPLAY_WINDOW {
        problems.add(
            format!("{P}.replayWindow"),
            format!("must be at most {}", HumanDuration(MAX_REPLAY_WINDOW)),
        );
    }
    if file.replay_window.0 < minimum_window {
        problems.add(
            format!("{P}.replayWindow"),
            format!(
                "must be ≥ proofLifetime + 2 × allowedClockSkew ({}), or a replay could outlive its record",
                HumanDuration(minimum_window)
            ),
        );
    }
    let nonce_ttl = file.nonce.ttl.0;
    if nonce_ttl < Duration::from_secs(10) || nonce_ttl > Duration::from_secs(86_400) {
        problems.add(format!("{P}.nonce.ttl"), "must be between 10s and 24h");
    }
    if let Some(store) = file.nonce.store {
        if store != storage {
            problems.add(
                format!("{P}.nonce.store"),
                "nonces must live in the authority's storage (storage.kind)",
            );
        }
    }
    let bypass_allowed = !matches!(
        file.allow_temporary_bypass,
        BypassFile::Absent | BypassFile::Flag(false)
    );
    let bypass = match &file.allow_temporary_bypass {
        // `true` allows `sealkit drill bypass` windows (each at most MAX_BYPASS); only a
        // window written in the file starts one by itself.
        BypassFile::Absent | BypassFile::Flag(_) => None,
        BypassFile::Window(window) => {
            match time::OffsetDateTime::parse(
                &window.until,
                &time::format_description::well_known::Rfc3339,
            ) {
                Ok(until) => {
                    let until = until.unix_timestamp();
                    if window.reason.trim().is_empty() {
                        problems.add(
                            format!("{P}.allowTemporaryBypass.reason"),
                            "say why the bypass is on",
                        );
                    }
                    if until > now + MAX_BYPASS.as_secs() as i64 {
                        problems.add(
                            format!("{P}.allowTemporaryBypass.until"),
                            format!(
                                "a bypass may last at most {} from now",
                                HumanDuration(MAX_BYPASS)
                            ),
                        );
                    }
                    Some(BypassWindow {
                        until,
                        reason: window.reason.clone(),
                    })
                }
                Err(_) => {
                    problems.add(
                        format!("{P}.allowTemporaryBypass.until"),
                        "must be an RFC 3339 time, e.g. 2026-11-28T15:00:00Z",
                    );
                    None
                }
            }
        }
    };
    DpopSettings {
        enabled: file.enabled,
        algs_header: allowed
            .iter()
            .map(|a| a.name())
            .collect::<Vec<_>>()
            .join(" "),
        allowed_algorithms: allowed,
        proof_lifetime: lifetime,
        clock_skew: skew,
        replay_window: file.replay_window.0,
        nonce_required: file.nonce.required,
        nonce_ttl,
        bypass_allowed,
        bypass,
    }
}

/// The client's authentication method and credential, or `None` after recording problems.
fn validate_client_auth(
    client: &ClientFile,
    path: &str,
    client_ca: bool,
    problems: &mut Problems,
) -> Option<ClientAuth> {
    use crate::mtls::CertificateIdentity;
    let method = client
        .auth_method
        .as_deref()
        .unwrap_or("client_secret_basic");
    let has_tls_fields = client.tls_client_auth_san_uri.is_some()
        || client.tls_client_auth_subject_dn.is_some()
        || !client.certificate_thumbprints.is_empty();
    match method {
        "client_secret_basic" | "client_secret_post" => {
            if has_tls_fields {
                problems.add(format!("{path}.authMethod"), "certificate fields need authMethod tls_client_auth or self_signed_tls_client_auth");
            }
            match client
                .secret_hash
                .as_deref()
                .map(crate::secret::SecretHash::parse)
            {
                Some(Ok(hash)) => Some(ClientAuth::Secret(hash)),
                Some(Err(e)) => {
                    problems.add(format!("{path}.secretHash"), e.to_string());
                    None
                }
                None => {
                    problems.add(
                        format!("{path}.secretHash"),
                        "a client needs a credential (sealkit secret generate)",
                    );
                    None
                }
            }
        }
        "tls_client_auth" | "self_signed_tls_client_auth" => {
            if client.secret_hash.is_some() {
                problems.add(
                    format!("{path}.secretHash"),
                    format!("{method} clients authenticate with their certificate, not a secret"),
                );
            }
            if !client_ca {
                problems.add(
                    format!("{path}.authMethod"),
                    format!("{method} needs client certificates: set tls.clientCa"),
                );
            }
            if method == "tls_client_auth" {
                let (uri, dn) = (
                    &client.tls_client_auth_san_uri,
                    &client.tls_client_auth_subject_dn,
                );
                if uri.is_some() == dn.is_some() {
                    problems.add(format!("{path}.authMethod"), "tls_client_auth needs exactly one of tlsClientAuthSanUri, tlsClientAuthSubjectDn");
                    return None;
                }
                let subject_dn = match dn.as_deref().map(crate::dn::DistinguishedName::parse) {
                    Some(Ok(name)) => Some(name),
                    Some(Err(e)) => {
                        problems.add(
                            format!("{path}.tlsClientAuthSubjectDn"),
                            format!("not an RFC 4514 name: {e}"),
                        );
                        return None;
                    }
                    None => None,
                };
                Some(ClientAuth::Certificate(CertificateIdentity::Pki {
                    san_uri: uri.clone(),
                    subject_dn,
                }))
            } else {
                let valid = |t: &String| {
                    t.len() == 43
                        && base64::Engine::decode(
                            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                            t,
                        )
                        .is_ok()
                };
                if client.certificate_thumbprints.is_empty()
                    || !client.certificate_thumbprints.iter().all(valid)
                {
                    problems.add(format!("{path}.certificateThumbprints"), "list the x5t#S256 (43 base64url characters) of each registered certificate");
                    return None;
                }
                Some(ClientAuth::Certificate(CertificateIdentity::SelfSigned {
                    thumbprints: client.certificate_thumbprints.clone(),
                }))
            }
        }
        other => {
            problems.add(format!("{path}.authMethod"), format!("unknown method `{other}` (client_secret_basic, client_secret_post, tls_client_auth, self_signed_tls_client_auth)"));
            None
        }
    }
}
