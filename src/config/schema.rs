//! The file schema of `authority.yaml`: serde structs, camelCase keys, unknown keys
//! rejected, defaults. What the values mean is judged by [`super::validate`]; what the
//! program runs on is [`super::settings`].

use super::duration::HumanDuration;
use crate::policy::SenderConstraint;
use serde::Deserialize;
use std::path::PathBuf;

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
    /// Users, sign-in lockout and the lifetimes of the user grants (`config::people`).
    #[serde(default)]
    pub people: super::people::PeopleFile,
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
    /// The plain-HTTP listener that serves `/metrics` (must be loopback). Absent: the
    /// authority listens on [`super::DEFAULT_METRICS_LISTEN`]; the guard serves
    /// `/metrics` on its TLS listener.
    pub listen: Option<String>,
    /// Authority only: also serve `/metrics` on the public TLS listener (default false:
    /// the exposition names tenants and clients, so it stays on loopback unless asked).
    pub public: Option<bool>,
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
    /// `tls_client_auth` or `self_signed_tls_client_auth` (RFC 8705 §2), or `none` (a
    /// public client: user grants only, every token DPoP-bound).
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
    /// Grant types (default `[client_credentials]`); see `config::people`.
    #[serde(default)]
    pub grant_types: Vec<String>,
    /// group → scopes a member of the group may get through this client (user grants).
    #[serde(default)]
    pub group_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// Exact redirect URIs for `authorization_code`.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Refresh-token lifetimes (user grants).
    pub refresh_token: Option<super::people::RefreshTokenFile>,
}
