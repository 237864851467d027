//! People in the configuration: the `people:` section of `authority.yaml` (where the users
//! file is, lockout, login rate limits, device and code lifetimes), the users file itself
//! (`users.yaml` beside it in the bundle), and the per-client keys of the user grants
//! (`grantTypes`, `groupScopes`, `redirectUris`, `refreshToken`).
//!
//! Every problem is reported with its key path, as for the rest of the configuration; a
//! problem inside the users file is reported as `people.users: users[2].passwordHash: ...`.
//! Password hashes and TOTP secrets are kept in types whose `Debug` prints `<redacted>`.
//!
//! Not responsible for: verifying passwords or counting failures (`crate::people`).

use super::duration::HumanDuration;
use super::{resolve, valid_identifier, ConfigProblem, Problems};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

// --- schema -------------------------------------------------------------------------------

/// `people:` in `authority.yaml`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeopleFile {
    /// The users file, relative to the configuration file (absent: no users, and no user
    /// grant can be completed).
    pub users: Option<PathBuf>,
    #[serde(default)]
    pub lockout: LockoutFile,
    #[serde(default)]
    pub login_rate_limit: LoginRateLimitFile,
    /// How long a device code and its user code live (RFC 8628 §3.2 `expires_in`).
    pub device_code_lifetime: Option<HumanDuration>,
    /// The polling interval a device is told (RFC 8628 §3.2 `interval`).
    pub device_poll_interval: Option<HumanDuration>,
    /// How long an authorization code lives (RFC 6749 §4.1.2: short, one use).
    pub authorization_code_lifetime: Option<HumanDuration>,
    /// How long a sign-in (the session cookie of the login pages) lasts.
    pub session_lifetime: Option<HumanDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockoutFile {
    /// Failed sign-ins in a row after which an account is locked (default 5).
    pub max_failed_attempts: Option<u32>,
    /// How long a locked account stays locked (default 15m).
    pub duration: Option<HumanDuration>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRateLimitFile {
    /// Sign-in attempts per minute for one user id (default 10).
    pub per_user_per_minute: Option<u32>,
    /// Sign-in attempts per minute from one address (default 30).
    pub per_address_per_minute: Option<u32>,
}

/// The users file.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsersFile {
    #[serde(default)]
    pub users: Vec<UserFile>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UserFile {
    pub id: String,
    pub display_name: Option<String>,
    /// An argon2id PHC string (`sealkit user hash`).
    pub password_hash: String,
    #[serde(default)]
    pub groups: Vec<String>,
    /// Base32 (RFC 4648) TOTP secret (RFC 6238, SHA-1, 6 digits, 30 s); when present the
    /// sign-in needs the current code too.
    pub totp_secret: Option<String>,
}
impl fmt::Debug for UserFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserFile")
            .field("id", &self.id)
            .field("groups", &self.groups)
            .field("password_hash", &"<redacted>")
            .field(
                "totp_secret",
                &self.totp_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `clients[].refreshToken`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshTokenFile {
    /// A refresh token unused this long expires (default 24h).
    pub idle_lifetime: Option<HumanDuration>,
    /// No refresh of a family after this long since the sign-in (default 7d).
    pub absolute_lifetime: Option<HumanDuration>,
}

// --- settings -----------------------------------------------------------------------------

/// A password hash (argon2id PHC string); never printed.
#[derive(Clone)]
pub struct PasswordHash(pub String);
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// A TOTP secret (the decoded key bytes); never printed.
#[derive(Clone)]
pub struct TotpSecret(pub Vec<u8>);
impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Debug, Clone)]
pub struct UserSettings {
    pub id: String,
    pub display_name: String,
    pub password_hash: PasswordHash,
    pub groups: Vec<String>,
    pub totp: Option<TotpSecret>,
}

#[derive(Debug, Clone)]
pub struct PeopleSettings {
    pub users: BTreeMap<String, Arc<UserSettings>>,
    pub lockout_max_failed: u32,
    pub lockout_duration: Duration,
    pub login_per_user_per_minute: u32,
    pub login_per_address_per_minute: u32,
    pub device_code_lifetime: Duration,
    pub device_poll_interval: Duration,
    pub authorization_code_lifetime: Duration,
    pub session_lifetime: Duration,
}

/// The grant types a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantType {
    ClientCredentials,
    DeviceCode,
    AuthorizationCode,
    RefreshToken,
}
impl GrantType {
    pub fn parse(name: &str) -> Option<GrantType> {
        Some(match name {
            "client_credentials" => GrantType::ClientCredentials,
            "urn:ietf:params:oauth:grant-type:device_code" | "device_code" => GrantType::DeviceCode,
            "authorization_code" => GrantType::AuthorizationCode,
            "refresh_token" => GrantType::RefreshToken,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::ClientCredentials => "client_credentials",
            GrantType::DeviceCode => "urn:ietf:params:oauth:grant-type:device_code",
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
        }
    }
}

/// What a client registered for the user grants.
#[derive(Debug, Clone, Default)]
pub struct UserGrantSettings {
    /// The grant types this client may use.
    pub grant_types: Vec<GrantType>,
    /// group → the scopes its members may get through this client.
    pub group_scopes: BTreeMap<String, Vec<String>>,
    /// Exact redirect URIs (authorization code).
    pub redirect_uris: Vec<String>,
    pub refresh_idle: Duration,
    pub refresh_absolute: Duration,
}
impl UserGrantSettings {
    pub fn allows(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }
    /// The scopes a user in `groups` may get through this client.
    pub fn scopes_for(&self, groups: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for g in groups {
            for s in self.group_scopes.get(g).into_iter().flatten() {
                if !out.contains(s) {
                    out.push(s.clone());
                }
            }
        }
        out
    }
}

// --- validation ---------------------------------------------------------------------------

const DEFAULT_MAX_FAILED: u32 = 5;
const DEFAULT_LOCKOUT: Duration = Duration::from_secs(15 * 60);

pub(super) fn validate_people(
    file: &PeopleFile,
    base: &Path,
    problems: &mut Problems,
) -> PeopleSettings {
    const P: &str = "people";
    let mut users = BTreeMap::new();
    if let Some(path) = &file.users {
        let path = resolve(base, path);
        match load_users(&path) {
            Ok(found) => users = found,
            Err(found) => {
                for p in found {
                    problems.add(format!("{P}.users"), p.to_string());
                }
            }
        }
    }
    let lockout_max_failed = file
        .lockout
        .max_failed_attempts
        .unwrap_or(DEFAULT_MAX_FAILED);
    if !(1..=100).contains(&lockout_max_failed) {
        problems.add(
            format!("{P}.lockout.maxFailedAttempts"),
            "must be between 1 and 100",
        );
    }
    let lockout_duration = file
        .lockout
        .duration
        .map(|d| d.0)
        .unwrap_or(DEFAULT_LOCKOUT);
    if lockout_duration < Duration::from_secs(1) || lockout_duration > Duration::from_secs(86_400) {
        problems.add(
            format!("{P}.lockout.duration"),
            "must be between 1s and 24h",
        );
    }
    let per_user = file.login_rate_limit.per_user_per_minute.unwrap_or(10);
    let per_address = file.login_rate_limit.per_address_per_minute.unwrap_or(30);
    if per_user == 0 {
        problems.add(
            format!("{P}.loginRateLimit.perUserPerMinute"),
            "must be at least 1",
        );
    }
    if per_address == 0 {
        problems.add(
            format!("{P}.loginRateLimit.perAddressPerMinute"),
            "must be at least 1",
        );
    }
    let mut bounded =
        |key: &str, value: Option<HumanDuration>, default: u64, min: u64, max: u64| {
            let d = value.map(|d| d.0).unwrap_or(Duration::from_secs(default));
            if d < Duration::from_secs(min) || d > Duration::from_secs(max) {
                problems.add(
                    format!("{P}.{key}"),
                    format!(
                        "must be between {} and {}",
                        HumanDuration::secs(min),
                        HumanDuration::secs(max)
                    ),
                );
            }
            d
        };
    let device_code_lifetime = bounded(
        "deviceCodeLifetime",
        file.device_code_lifetime,
        600,
        60,
        3600,
    );
    let device_poll_interval = bounded("devicePollInterval", file.device_poll_interval, 5, 1, 60);
    let authorization_code_lifetime = bounded(
        "authorizationCodeLifetime",
        file.authorization_code_lifetime,
        60,
        10,
        600,
    );
    let session_lifetime = bounded("sessionLifetime", file.session_lifetime, 600, 60, 86_400);
    PeopleSettings {
        users,
        lockout_max_failed,
        lockout_duration,
        login_per_user_per_minute: per_user,
        login_per_address_per_minute: per_address,
        device_code_lifetime,
        device_poll_interval,
        authorization_code_lifetime,
        session_lifetime,
    }
}

/// Reads and validates a users file; every problem comes back with its key path inside
/// the file.
pub fn load_users(path: &Path) -> Result<BTreeMap<String, Arc<UserSettings>>, Vec<ConfigProblem>> {
    let problem = |message: String| {
        vec![ConfigProblem {
            path: path.display().to_string(),
            message,
        }]
    };
    let text = std::fs::read_to_string(path).map_err(|e| problem(format!("cannot read: {e}")))?;
    parse_users(&text).map_err(|found| {
        found
            .into_iter()
            .map(|p| ConfigProblem {
                path: format!("{}: {}", path.display(), p.path),
                message: p.message,
            })
            .collect()
    })
}

/// Validates the text of a users file.
pub fn parse_users(text: &str) -> Result<BTreeMap<String, Arc<UserSettings>>, Vec<ConfigProblem>> {
    let value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| {
        vec![ConfigProblem {
            path: "(file)".into(),
            message: e.to_string(),
        }]
    })?;
    let lenient = super::lenient::deserialize::<UsersFile>(value);
    let mut problems = Problems(lenient.problems);
    let Some(file) = lenient.file else {
        return Err(problems.0);
    };
    let mut users = BTreeMap::new();
    for (i, user) in file.users.iter().enumerate() {
        let path = format!("users[{i}]");
        if !valid_identifier(&user.id) {
            problems.add(format!("{path}.id"), "must be 1-128 of A-Z a-z 0-9 - _ . :");
        }
        if let Err(message) = crate::people::password::check_phc(&user.password_hash) {
            problems.add(format!("{path}.passwordHash"), message);
        }
        for (j, group) in user.groups.iter().enumerate() {
            if !valid_identifier(group) {
                problems.add(
                    format!("{path}.groups[{j}]"),
                    "must be 1-128 of A-Z a-z 0-9 - _ . :",
                );
            }
        }
        let totp = match &user.totp_secret {
            None => None,
            Some(secret) => match crate::people::totp::decode_secret(secret) {
                Some(bytes) => Some(TotpSecret(bytes)),
                None => {
                    problems.add(
                        format!("{path}.totpSecret"),
                        "must be base32 (RFC 4648) of at least 10 bytes",
                    );
                    None
                }
            },
        };
        let settings = UserSettings {
            id: user.id.clone(),
            display_name: user.display_name.clone().unwrap_or_else(|| user.id.clone()),
            password_hash: PasswordHash(user.password_hash.clone()),
            groups: user.groups.clone(),
            totp,
        };
        if users.insert(user.id.clone(), Arc::new(settings)).is_some() {
            problems.add(
                format!("{path}.id"),
                format!("duplicate user `{}`", user.id),
            );
        }
    }
    if problems.0.is_empty() {
        Ok(users)
    } else {
        Err(problems.0)
    }
}

/// Validates a client's user-grant keys (`path` is `clients[i]`).
pub(super) fn validate_client_grants(
    client: &super::schema::ClientFile,
    path: &str,
    public: bool,
    problems: &mut Problems,
) -> UserGrantSettings {
    let mut grant_types = Vec::new();
    let mut client_credentials = client.grant_types.is_empty() && !public;
    for (i, name) in client.grant_types.iter().enumerate() {
        match GrantType::parse(name) {
            Some(GrantType::ClientCredentials) => client_credentials = true,
            Some(g) if !grant_types.contains(&g) => grant_types.push(g),
            Some(_) => problems.add(format!("{path}.grantTypes[{i}]"), format!("`{name}` listed twice")),
            None => problems.add(
                format!("{path}.grantTypes[{i}]"),
                format!("unknown grant type `{name}` (client_credentials, device_code, authorization_code, refresh_token)"),
            ),
        }
    }
    if public && client_credentials {
        problems.add(
            format!("{path}.grantTypes"),
            "a public client (authMethod: none) may use only device_code, authorization_code and refresh_token",
        );
    }
    let user_grant = grant_types
        .iter()
        .any(|g| matches!(g, GrantType::DeviceCode | GrantType::AuthorizationCode));
    if grant_types.contains(&GrantType::RefreshToken) && !user_grant {
        problems.add(
            format!("{path}.grantTypes"),
            "refresh_token needs device_code or authorization_code",
        );
    }
    if user_grant && client.group_scopes.is_empty() {
        problems.add(
            format!("{path}.groupScopes"),
            "map at least one group to scopes for the user grants",
        );
    }
    for (group, scopes) in &client.group_scopes {
        for (j, scope) in scopes.iter().enumerate() {
            if !client.scopes.contains(scope) {
                problems.add(
                    format!("{path}.groupScopes.{group}[{j}]"),
                    format!("`{scope}` is not in this client's scopes"),
                );
            }
        }
    }
    if grant_types.contains(&GrantType::AuthorizationCode) && client.redirect_uris.is_empty() {
        problems.add(
            format!("{path}.redirectUris"),
            "authorization_code needs at least one redirect URI",
        );
    }
    for (i, uri) in client.redirect_uris.iter().enumerate() {
        match url::Url::parse(uri) {
            Ok(u) if u.fragment().is_some() => problems.add(
                format!("{path}.redirectUris[{i}]"),
                "must not have a fragment (RFC 6749 §3.1.2)",
            ),
            Ok(u) if u.scheme() == "https" => {}
            Ok(u)
                if u.scheme() == "http"
                    && matches!(u.host_str(), Some("127.0.0.1" | "[::1]" | "localhost")) => {}
            Ok(_) => problems.add(
                format!("{path}.redirectUris[{i}]"),
                "must be https, or http on a loopback address",
            ),
            Err(e) => problems.add(
                format!("{path}.redirectUris[{i}]"),
                format!("not a URL: {e}"),
            ),
        }
    }
    let refresh = client.refresh_token.as_ref();
    let refresh_idle = refresh
        .and_then(|r| r.idle_lifetime)
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(86_400));
    let refresh_absolute = refresh
        .and_then(|r| r.absolute_lifetime)
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(7 * 86_400));
    if refresh_idle < Duration::from_secs(60) || refresh_idle > refresh_absolute {
        problems.add(
            format!("{path}.refreshToken.idleLifetime"),
            "must be at least 1m and at most absoluteLifetime",
        );
    }
    if refresh_absolute > Duration::from_secs(90 * 86_400) {
        problems.add(
            format!("{path}.refreshToken.absoluteLifetime"),
            "must be at most 90d",
        );
    }
    if client_credentials {
        grant_types.insert(0, GrantType::ClientCredentials);
    }
    UserGrantSettings {
        grant_types,
        group_scopes: client.group_scopes.clone(),
        redirect_uris: client.redirect_uris.clone(),
        refresh_idle,
        refresh_absolute,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash() -> String {
        crate::people::password::hash_password("pw", 1024, 1).unwrap()
    }

    #[test]
    fn every_problem_of_a_users_file_has_its_key_path() {
        let hash = hash();
        let text = format!(
            "users:\n  - id: 'bad id'\n    passwordHash: 'plain'\n    groups: ['ok', '']\n    totpSecret: '!!'\n  - id: ann\n    passwordHash: '{hash}'\n    colour: blue\n"
        );
        let problems = parse_users(&text).unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "users[0].id",
            "users[0].passwordHash",
            "users[0].groups[1]",
            "users[0].totpSecret",
            "users[1].colour",
        ] {
            assert!(paths.contains(&want), "{want} not in {paths:?}");
        }
    }

    #[test]
    fn debug_of_a_user_shows_no_secret() {
        let hash = hash();
        let users = parse_users(&format!(
            "users:\n  - id: ann\n    passwordHash: '{hash}'\n    totpSecret: JBSWY3DPEHPK3PXPJBSWY3DP\n"
        ))
        .unwrap();
        let shown = format!("{:?}", users["ann"]);
        assert!(!shown.contains("argon2id"), "{shown}");
        assert!(!shown.contains("JBSW"), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
