//! The top of the file: `issuer`, `listen`, `dataDir`, `tokens`, `security.freshAuth`.

use crate::config::schema::AuthorityFile;
use crate::config::{resolve, Problems};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What the top of the file says, validated.
pub(super) struct Server {
    /// No trailing slash.
    pub issuer: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub token_lifetime: Duration,
    pub fresh_auth_window: Duration,
}

pub(super) fn validate_server(
    file: &AuthorityFile,
    base: &Path,
    problems: &mut Problems,
) -> Server {
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
    Server {
        issuer,
        listen,
        data_dir,
        token_lifetime,
        fresh_auth_window,
    }
}
