//! `metrics:`: the optional loopback listener for `/metrics`.

use crate::config::schema::MetricsFile;
use crate::config::Problems;
use std::net::SocketAddr;

/// `metrics.listen`: an optional plain-HTTP loopback listener for `/metrics`.
pub(super) fn validate_metrics(file: &MetricsFile, problems: &mut Problems) -> Option<SocketAddr> {
    match &file.listen {
        None => None,
        Some(text) => match text.parse::<SocketAddr>() {
            Ok(a) if a.ip().is_loopback() => Some(a),
            Ok(_) => {
                problems.add("metrics.listen", "must be a loopback address (plain HTTP)");
                None
            }
            Err(_) => {
                problems.add("metrics.listen", "must be IP:PORT, e.g. 127.0.0.1:9464");
                None
            }
        },
    }
}
