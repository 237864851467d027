//! `storage:`: sled or Redis, and how to reach Redis (never a password inline).

use crate::config::schema::{StorageFile, StorageKind};
use crate::config::settings::{RedisSettings, StorageSettings, DEFAULT_REDIS_TIMEOUT};
use crate::config::{resolve, Problems};
use std::path::Path;
use std::time::Duration;

/// The `storage:` block: Redis settings only with `kind: redis`, never a password inline.
pub(super) fn validate_storage(
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
