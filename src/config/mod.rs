//! Configuration: the `authority.yaml` file schema and its validation into [`Settings`].
//!
//! The file schema (`*File` structs: serde, camelCase keys, unknown keys rejected) is kept
//! apart from the validated [`Settings`] the rest of the program uses. Validation collects
//! *every* problem with its key path, so an operator fixes a file in one pass. This module
//! knows nothing of HTTP, storage or cryptography beyond naming algorithms.

pub mod duration;

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

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StorageFile {
    #[serde(default)]
    pub kind: StorageKind,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecurityFile {
    #[serde(default)]
    pub sender_constraints: SenderConstraintsFile,
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
    /// `sha256:<base64url>` of the secret `sealkit secret generate` printed.
    pub secret_hash: Option<String>,
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

/// Signature algorithms a DPoP proof may use. `none` and MACs are not representable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProofAlgorithm {
    ES256,
    ES384,
    EdDSA,
    PS256,
    RS256,
}
impl ProofAlgorithm {
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            // RFC 9864's fully-specified name for EdDSA over Ed25519, the only EdDSA curve
            // accepted; current clients (e.g. oauth4webapi 3) label their proofs with it.
            "Ed25519" => Self::EdDSA,
            "PS256" => Self::PS256,
            "RS256" => Self::RS256,
            _ => return None,
        })
    }
    /// The names this algorithm is advertised under (`dpop_signing_alg_values_supported`).
    pub fn advertised_names(self) -> &'static [&'static str] {
        match self {
            Self::EdDSA => &["EdDSA", "Ed25519"],
            Self::ES256 => &["ES256"],
            Self::ES384 => &["ES384"],
            Self::PS256 => &["PS256"],
            Self::RS256 => &["RS256"],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::EdDSA => "EdDSA",
            Self::PS256 => "PS256",
            Self::RS256 => "RS256",
        }
    }
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
    pub bypass: Option<BypassWindow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BypassWindow {
    /// Unix seconds at which the bypass ends by itself.
    pub until: i64,
    pub reason: String,
}

#[derive(Clone)]
pub struct ClientSettings {
    pub id: String,
    pub tenant: String,
    pub secret_hash: Option<crate::secret::SecretHash>,
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
            .field("secret_hash", &"<redacted>")
            .field("policy", &self.policy)
            .finish()
    }
}

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
    pub data_dir: PathBuf,
    pub token_lifetime: Duration,
    pub logging: LoggingSettings,
    pub limits: LimitsSettings,
    pub metrics_listen: Option<SocketAddr>,
    pub storage: StorageKind,
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
    pub fn from_yaml(text: &str, base: &Path, now: i64) -> Result<Settings, ConfigError> {
        let file: AuthorityFile = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        validate(file, base, now).map_err(|problems| ConfigError::Invalid {
            path: PathBuf::new(),
            problems,
        })
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
    for (key, path) in [
        ("tls.certificate", Some(&tls_certificate)),
        ("tls.privateKey", Some(&tls_private_key)),
        ("tls.clientCa", tls_client_ca.as_ref()),
    ] {
        if let Some(path) = path {
            if !path.is_file() {
                problems.add(key, format!("{} is not a readable file", path.display()));
            }
        }
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

    let logging = LoggingSettings {
        directory: file
            .logging
            .directory
            .as_ref()
            .map(|p| resolve(base, p))
            .unwrap_or_else(|| data_dir.join("logs")),
        rotation: file
            .logging
            .rotation
            .clone()
            .unwrap_or_else(|| "daily".into()),
        retention: file.logging.retention.unwrap_or(14),
        level: file.logging.level.clone().unwrap_or_else(|| "info".into()),
        stderr: file.logging.stderr.unwrap_or(true),
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

    let limits = LimitsSettings {
        max_header_bytes: file.limits.max_header_bytes.unwrap_or(16 * 1024),
        max_body_bytes: file.limits.max_body_bytes.unwrap_or(16 * 1024),
        header_read_timeout: file
            .limits
            .header_read_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        handshake_timeout: file
            .limits
            .handshake_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        max_connections: file.limits.max_connections.unwrap_or(4096),
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

    let metrics_listen = match &file.metrics.listen {
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
    };

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
        let secret_hash = match &client.secret_hash {
            Some(text) => match crate::secret::SecretHash::parse(text) {
                Ok(h) => Some(h),
                Err(e) => {
                    problems.add(format!("{path}.secretHash"), e.to_string());
                    None
                }
            },
            None => None,
        };
        if client.secret_hash.is_none() {
            problems.add(
                format!("{path}.secretHash"),
                "a client needs a credential (sealkit secret generate)",
            );
        }
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
        let settings = ClientSettings {
            id: client.id.clone(),
            tenant: client.tenant.clone(),
            secret_hash,
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
        data_dir,
        token_lifetime,
        logging,
        limits,
        metrics_listen,
        storage: file.storage.kind,
        dpop,
        tenants,
        clients,
    })
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
    let bypass = match &file.allow_temporary_bypass {
        BypassFile::Absent | BypassFile::Flag(false) => None,
        BypassFile::Flag(true) => {
            problems.add(
                format!("{P}.allowTemporaryBypass"),
                "a bypass needs an expiry: write {until: <RFC 3339 time>, reason: <text>}",
            );
            None
        }
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
        bypass,
    }
}
