//! `tls:` and the files and paths of the whole configuration: the client CA, CRL and
//! trusted proxies rules, every referenced file read by the one loader
//! ([`crate::config::files`]) and every path judged where it leads
//! ([`crate::config::paths`]).

use crate::config::schema::{AuthorityFile, StorageFile};
use crate::config::settings::StorageSettings;
use crate::config::{files, paths, resolve, Problems};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The `tls:` section, validated.
pub(super) struct Tls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    pub client_ca: Option<PathBuf>,
    pub client_crl: Option<PathBuf>,
    pub trusted_proxies: Vec<IpAddr>,
}

pub(super) fn validate_tls(file: &AuthorityFile, base: &Path, problems: &mut Problems) -> Tls {
    let tls = &file.tls;
    let client_ca = tls.client_ca.as_ref().map(|p| resolve(base, p));
    let client_crl = tls.client_crl.as_ref().map(|p| resolve(base, p));
    if client_crl.is_some() && client_ca.is_none() {
        problems.add("tls.clientCrl", "a CRL needs tls.clientCa");
    }
    let mut trusted_proxies = Vec::new();
    for (i, text) in tls.trusted_proxies.iter().enumerate() {
        match text.parse::<IpAddr>() {
            Ok(ip) => trusted_proxies.push(ip),
            Err(_) => problems.add(format!("tls.trustedProxies[{i}]"), "must be an IP address"),
        }
    }
    if !trusted_proxies.is_empty() && client_ca.is_none() {
        problems.add(
            "tls.trustedProxies",
            "forwarded client certificates are verified against tls.clientCa, which is missing",
        );
    }
    Tls {
        certificate: resolve(base, &tls.certificate),
        private_key: resolve(base, &tls.private_key),
        client_ca,
        client_crl,
        trusted_proxies,
    }
}

/// Every file as `serve` will read it (one loader: config check, import, serve), and
/// every path judged where it really leads.
pub(super) fn check_files(
    file: &AuthorityFile,
    base: &Path,
    tls: &Tls,
    storage: &StorageSettings,
    problems: &mut Problems,
) {
    files::check(
        &files::FilePaths {
            certificate: Some(tls.certificate.clone()),
            private_key: Some(tls.private_key.clone()),
            client_ca: tls.client_ca.clone(),
            client_crl: tls.client_crl.clone(),
            redis_ca: storage.redis.as_ref().and_then(|r| r.ca_file.clone()),
        },
        problems,
    );
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
            paths::judge(key, configured, &joined, usage, &placement, problems);
        }
    }
}
