//! Validation of the file schema into [`Settings`]: one module per section, each recording
//! *every* problem with its key path into the shared list; [`validate`] runs them in file
//! order and builds the settings only when none was found.

mod clients;
mod dpop;
mod limits;
mod logging;
mod metrics;

pub use metrics::DEFAULT_METRICS_LISTEN;
mod server;
mod storage;
mod tenants;
mod tls;

#[cfg(test)]
mod tests;

use super::schema::{AuthorityFile, DpopFile, LimitsFile, LoggingFile, MetricsFile, StorageFile};
use super::settings::{DpopSettings, LimitsSettings, LoggingSettings, Settings, StorageSettings};
use super::{files, ConfigProblem, Problems};
use std::net::SocketAddr;
use std::path::Path;

/// Validates a deserialised file; `base` is the file's directory, `now` (unix seconds)
/// judges bypass windows.
pub(super) fn validate(
    file: AuthorityFile,
    base: &Path,
    now: i64,
) -> Result<Settings, Vec<ConfigProblem>> {
    let mut problems = Problems(Vec::new());
    let server = server::validate_server(&file, base, &mut problems);
    let tls = tls::validate_tls(&file, base, &mut problems);
    let logging = logging::validate_logging(&file.logging, base, &server.data_dir, &mut problems);
    let limits = limits::validate_limits(&file.limits, &mut problems);
    let (metrics_listen, metrics_public) = metrics::validate_metrics(&file.metrics, &mut problems);
    let storage_settings =
        storage::validate_storage(&file.storage, base, &server.issuer, &mut problems);
    tls::check_files(&file, base, &tls, &storage_settings, &mut problems);
    let dpop = dpop::validate_dpop(
        &file.security.sender_constraints.dpop,
        file.storage.kind,
        now,
        &mut problems,
    );
    let tenants = tenants::validate_tenants(&file.tenants, &dpop, &mut problems);
    let clients = clients::validate_clients(
        &file.clients,
        &tenants,
        &dpop,
        tls.client_ca.is_some(),
        &mut problems,
    );
    let people = crate::config::people::validate_people(&file.people, base, &mut problems);
    if !problems.0.is_empty() {
        return Err(problems.0);
    }
    let token_endpoint = format!("{}/token", server.issuer);
    Ok(Settings {
        issuer: server.issuer,
        token_endpoint,
        listen: server.listen,
        tls_certificate: tls.certificate,
        tls_private_key: tls.private_key,
        tls_client_ca: tls.client_ca,
        tls_client_crl: tls.client_crl,
        trusted_proxies: tls.trusted_proxies,
        fresh_auth_window: server.fresh_auth_window,
        data_dir: server.data_dir,
        token_lifetime: server.token_lifetime,
        logging,
        limits,
        metrics_listen,
        metrics_public,
        storage: file.storage.kind,
        storage_settings,
        dpop,
        tenants,
        clients,
        people,
    })
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

/// Validates the shared sections; every problem is returned with its key path. The Redis
/// CA, when configured, is read by the same loader as the authority's.
pub(crate) fn validate_shared(
    shared: &SharedFiles<'_>,
    base: &Path,
    data_dir: &Path,
    issuer: &str,
    now: i64,
) -> (SharedSections, Vec<ConfigProblem>) {
    let mut problems = Problems(Vec::new());
    let sections = SharedSections {
        logging: logging::validate_logging(shared.logging, base, data_dir, &mut problems),
        limits: limits::validate_limits(shared.limits, &mut problems),
        metrics_listen: metrics::validate_guard_metrics(shared.metrics, &mut problems),
        storage: storage::validate_storage(shared.storage, base, issuer, &mut problems),
        dpop: dpop::validate_dpop(shared.dpop, shared.storage.kind, now, &mut problems),
    };
    let redis_ca = sections
        .storage
        .redis
        .as_ref()
        .and_then(|r| r.ca_file.clone());
    if redis_ca.is_some() {
        files::check(
            &files::FilePaths {
                redis_ca,
                ..files::FilePaths::default()
            },
            &mut problems,
        );
    }
    (sections, problems.0)
}
