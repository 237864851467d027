//! The validated configuration the program runs on ([`Settings`] and its sections). Only
//! validation (`super::validate`) builds these; nothing here parses or judges.

use super::schema::StorageKind;
use crate::dpop::ProofAlgorithm;
use crate::policy::TenantPolicy;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    /// `none`: a public client (RFC 6749 §2.1), identified by `client_id` alone.
    None,
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
    /// Device, authorization-code and refresh grants (`config::people`).
    pub user_grants: super::people::UserGrantSettings,
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
                    ClientAuth::None => "none (public)".to_string(),
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
    /// The loopback plain-HTTP listener that serves `/metrics` (always on).
    pub metrics_listen: SocketAddr,
    /// `metrics.public`: the public TLS listener serves `/metrics` too.
    pub metrics_public: bool,
    pub storage: StorageKind,
    /// The backend's connection settings (`storage` above is `storage_settings.kind`).
    pub storage_settings: StorageSettings,
    pub dpop: DpopSettings,
    pub tenants: BTreeMap<String, TenantPolicy>,
    pub clients: BTreeMap<String, Arc<ClientSettings>>,
    /// Users and the user grants' settings.
    pub people: super::people::PeopleSettings,
}
