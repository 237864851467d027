//! Telemetry: structured JSON logs (tracing, to stderr and to rolling files through a
//! tracing-appender's rolling files, written in batches by `batch_writer`) and the Prometheus metrics registry.
//!
//! Events carry a stable `event` field (`authority.dpop.request`, `authority.dpop.replay`,
//! …) so operators can alert on them; the list lives in `events`. Nothing here ever logs a
//! secret, a token or a proof: callers pass thumbprints and identifiers only.

pub mod audit;
pub mod batch_writer;
pub(crate) mod json_lines;
pub mod metrics;

use crate::config::LoggingSettings;
use batch_writer::BatchGuard;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Stable event names, the `event` field of each log line.
pub mod events {
    pub const DPOP_REQUEST: &str = "authority.dpop.request";
    pub const DPOP_BYPASS: &str = "authority.dpop.proof.bypass";
    pub const DPOP_REPLAY: &str = "authority.dpop.replay";
    pub const SENDER_CONSTRAINT: &str = "authority.security.senderConstraint";
    pub const TOKEN_ISSUED: &str = "authority.token.issued";
    pub const TOKEN_REVOKED: &str = "authority.token.revoked";
    pub const BYPASS_STARTED: &str = "authority.dpop.bypass.started";
    pub const BYPASS_ENDED: &str = "authority.dpop.bypass.ended";
    pub const BYPASS_REFUSED: &str = "authority.dpop.bypass.refused";
    pub const CLIENT_AUTH_FAILED: &str = "authority.client.authentication.failed";
    pub const FRESH_AUTH: &str = "authority.freshAuth.succeeded";
    pub const CONFIG_RELOADED: &str = "authority.config.reloaded";
    pub const CONFIG_RELOAD_FAILED: &str = "authority.config.reloadFailed";
    pub const CONTROL: &str = "authority.control.request";
    pub const SERVER_STARTED: &str = "authority.server.started";
    pub const SERVER_STOPPED: &str = "authority.server.stopped";
    pub const STORE_FENCE: &str = "authority.store.restartFence";
    pub const STORE_ERROR: &str = "authority.store.error";
    /// The store failed as a whole (I/O error, Redis lost): refused until it recovers.
    pub const STORE_FAILED: &str = "authority.store.failed";
    /// The sled store reopened itself after a failure.
    pub const STORE_REOPENED: &str = "authority.store.reopened";
    /// Opening the sled store put back what its journal held (after a crash or power loss).
    pub const STORE_JOURNAL_REPLAYED: &str = "authority.store.journalReplayed";
    /// A durable commit of the sled store took 20 ms or more (fields: `ms` and its parts
    /// `filing_ms`, `journal_ms`, `checkpoint_ms`).
    pub const STORE_SLOW_COMMIT: &str = "authority.store.slowCommit";
    /// The jti claims snapshot of the last clean shutdown could not be read (fence raised).
    pub const STORE_CLAIMS_SNAPSHOT_DAMAGED: &str = "authority.store.claimsSnapshotDamaged";
    /// Log lines were dropped because the log file could not keep up (field `count`).
    pub const LOG_DROPPED: &str = "authority.log.dropped";
    /// The store found it may have lost acknowledged jti claims (restart fence raised).
    pub const STORE_CLAIMS_LOST: &str = "authority.store.claimsLost";
    pub const CONNECTION_ERROR: &str = "authority.connection.error";
    /// A sign-in attempt (user, peer, result, reason; never the password or a code).
    pub const LOGIN_ATTEMPT: &str = "authority.login.attempt";
    /// An account was locked after too many failed sign-ins.
    pub const LOGIN_LOCKED: &str = "authority.login.locked";
    /// A device authorization request got its codes (client, never the codes).
    pub const DEVICE_AUTHORIZATION: &str = "authority.device.authorization";
    /// A signed-in user approved or denied a device or an authorization request.
    pub const CONSENT: &str = "authority.consent";
    /// A refresh token was used a second time: its whole family was revoked.
    pub const REFRESH_REUSE: &str = "authority.refresh.reuse";
    /// An operator revoked tokens on the control socket (by `jti`, or all of a client's).
    pub const TOKENS_REVOKED_BY_OPERATOR: &str = "authority.token.revokedByOperator";
    /// A token request refused before any client was authenticated for a reason worth
    /// auditing (`unsupported_grant_type`, `invalid_scope`): field `error`.
    pub const REQUEST_REFUSED: &str = "authority.token.refused";
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot open the log directory {dir}: {message}")]
    LogDirectory { dir: String, message: String },
    #[error("logging is already initialised in this process")]
    AlreadyInitialised,
}

/// Parses a tracing filter (`info`, `sealkit=debug,warn`), or `None` if it is not one.
///
/// Only ASCII is accepted: tracing-subscriber 0.3's directive parser takes byte offsets in
/// the trimmed directive and slices the untrimmed one, so a directive with a space before
/// it and a multi-byte character before its `=` (`info, µ=x`) panics (found by the
/// `config` fuzz target, docs/fuzzing.md). Such a level would have crashed `config check`,
/// a bundle import and `serve`. No valid filter needs anything but ASCII.
pub fn parse_filter(text: &str) -> Option<EnvFilter> {
    if !text.is_ascii() {
        return None;
    }
    EnvFilter::try_new(text).ok()
}

/// The filter named by the environment variable `SEALKIT_LOG`, or `default`.
fn filter_from_env(default: &str) -> EnvFilter {
    std::env::var("SEALKIT_LOG")
        .ok()
        .and_then(|text| parse_filter(&text))
        .unwrap_or_else(|| EnvFilter::new(default))
}

/// The most verbose level of `filter`, as the `log` crate spells it (`trace` when the
/// filter cannot say, e.g. with span-field directives).
fn log_crate_level(filter: &EnvFilter) -> log::LevelFilter {
    use tracing_subscriber::filter::LevelFilter;
    match filter.max_level_hint() {
        Some(LevelFilter::OFF) => log::LevelFilter::Off,
        Some(LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(LevelFilter::INFO) => log::LevelFilter::Info,
        Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
}

/// Keeps the log writer threads alive; dropping it writes what is buffered.
pub struct LogGuard {
    _file: BatchGuard,
    _audit: BatchGuard,
}

/// Installs the global subscriber: JSON lines to the rolling file and (optionally) stderr.
pub fn init_logging(settings: &LoggingSettings) -> Result<LogGuard, TelemetryError> {
    std::fs::create_dir_all(&settings.directory).map_err(|e| TelemetryError::LogDirectory {
        dir: settings.directory.display().to_string(),
        message: e.to_string(),
    })?;
    let rotation = match settings.rotation.as_str() {
        "hourly" => Rotation::HOURLY,
        "never" => Rotation::NEVER,
        _ => Rotation::DAILY,
    };
    let appender = RollingFileAppender::builder()
        .rotation(rotation)
        .filename_prefix("sealkit")
        .filename_suffix("log")
        .max_log_files(settings.retention)
        .build(&settings.directory)
        .map_err(|e| TelemetryError::LogDirectory {
            dir: settings.directory.display().to_string(),
            message: e.to_string(),
        })?;
    let writeback = batch_writer::Writeback {
        dir: settings.directory.clone(),
        prefix: "sealkit.".into(),
    };
    let (file_writer, guard) =
        batch_writer::batching_with_writeback(appender, "sealkit-log", Some(writeback)).map_err(
            |e| TelemetryError::LogDirectory {
                dir: settings.directory.display().to_string(),
                message: e.to_string(),
            },
        )?;
    let filter = || parse_filter(&settings.level).unwrap_or_else(|| EnvFilter::new("info"));
    let log_crate_level = log_crate_level(&filter());
    let file_layer = tracing_subscriber::fmt::layer()
        .event_format(json_lines::JsonLines)
        .with_writer(file_writer)
        .with_filter(filter());
    let stderr_layer = settings.stderr.then(|| {
        tracing_subscriber::fmt::layer()
            .event_format(json_lines::JsonLines)
            .with_writer(std::io::stderr)
            .with_filter(filter())
    });
    let (audit_layer, audit_guard) =
        audit::AuditLayer::writer(&settings.directory).map_err(|e| {
            TelemetryError::LogDirectory {
                dir: settings.directory.display().to_string(),
                message: format!("{e}: {}", e.source),
            }
        })?;
    tracing_subscriber::registry()
        .with(file_layer)
        .with(stderr_layer)
        .with(audit_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInitialised)?;
    // `try_init` lets every record of the `log` crate through (the audit layer, which
    // must see audited events at any level, gives no level hint), and sled logs at
    // `trace` inside every insert: each record then went through the subscriber only to
    // be dropped, 1–2% of a DPoP token's CPU. Such records only ever reach the file and
    // stderr layers (the audit stream takes events named `event = …`), so their filter's
    // level bounds them.
    log::set_max_level(log_crate_level);
    Ok(LogGuard {
        _file: guard,
        _audit: audit_guard,
    })
}

/// Plain stderr logging for commands other than `serve` (warnings and errors only), and the
/// audit stream: audit events go to the files the command registered with
/// [`audit::also_to`], whatever the stderr level.
pub fn init_cli_logging() {
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter_from_env("warn"));
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(audit::AuditLayer::command())
        .try_init();
}

/// Logging for audited commands (`bundle import`, …): their events as JSON lines on stderr
/// at `info` (`SEALKIT_LOG` overrides), and the audit stream as [`init_cli_logging`].
pub fn init_audited_command_logging() {
    let stderr = tracing_subscriber::fmt::layer()
        .event_format(json_lines::JsonLines)
        .with_writer(std::io::stderr)
        .with_filter(filter_from_env("info"));
    let _ = tracing_subscriber::registry()
        .with(stderr)
        .with(audit::AuditLayer::command())
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_the_log_crate_are_bounded_by_the_most_verbose_directive() {
        let level = |text: &str| log_crate_level(&parse_filter(text).unwrap());
        assert_eq!(level("info"), log::LevelFilter::Info);
        assert_eq!(level("warn"), log::LevelFilter::Warn);
        assert_eq!(level("warn,sled=debug"), log::LevelFilter::Debug);
        assert_eq!(level("info,sled::pagecache=trace"), log::LevelFilter::Trace);
        assert_eq!(level("off"), log::LevelFilter::Off);
    }
}
