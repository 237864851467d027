//! `limits:`: request sizes, I/O timeouts, connections.

use crate::config::duration::HumanDuration;
use crate::config::schema::LimitsFile;
use crate::config::settings::LimitsSettings;
use crate::config::{Problems, MAX_IO_TIMEOUT, MIN_IO_TIMEOUT};
use std::time::Duration;

/// `limits:`: request sizes, timeouts (each within [`MIN_IO_TIMEOUT`, `MAX_IO_TIMEOUT`]),
/// connections.
pub(super) fn validate_limits(file: &LimitsFile, problems: &mut Problems) -> LimitsSettings {
    let limits = LimitsSettings {
        max_header_bytes: file.max_header_bytes.unwrap_or(16 * 1024),
        max_body_bytes: file.max_body_bytes.unwrap_or(16 * 1024),
        header_read_timeout: file
            .header_read_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        body_read_timeout: file
            .body_read_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        handshake_timeout: file
            .handshake_timeout
            .map(|d| d.0)
            .unwrap_or(Duration::from_secs(10)),
        max_connections: file.max_connections.unwrap_or(4096),
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
    for (key, value) in [
        ("limits.headerReadTimeout", limits.header_read_timeout),
        ("limits.bodyReadTimeout", limits.body_read_timeout),
        ("limits.handshakeTimeout", limits.handshake_timeout),
    ] {
        if value < MIN_IO_TIMEOUT || value > MAX_IO_TIMEOUT {
            problems.add(
                key,
                format!(
                    "must be between {} and {}",
                    HumanDuration(MIN_IO_TIMEOUT),
                    HumanDuration(MAX_IO_TIMEOUT)
                ),
            );
        }
    }

    limits
}
