//! `logging:`: directory, rotation, retention, level.

use crate::config::schema::LoggingFile;
use crate::config::settings::LoggingSettings;
use crate::config::{resolve, Problems};
use std::path::Path;

/// `logging:`: where and how the JSON log lines go (default `<dataDir>/logs`).
pub(super) fn validate_logging(
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
    if crate::telemetry::parse_filter(&logging.level).is_none() {
        problems.add("logging.level", "not a tracing filter (try info or debug)");
    }

    logging
}
