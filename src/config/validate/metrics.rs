//! `metrics:`: where `/metrics` is served. The authority serves it on a loopback
//! plain-HTTP listener (default [`DEFAULT_METRICS_LISTEN`]) and on the public TLS listener
//! only when `metrics.public` says so; the guard keeps its own rule (`validate_guard_metrics`).

use crate::config::schema::MetricsFile;
use crate::config::Problems;
use std::net::{Ipv4Addr, SocketAddr};

/// The authority's metrics listener when `metrics.listen` is absent: loopback, the port
/// OpenTelemetry's Prometheus exporter uses (nothing else in the kit claims it). A host
/// running two authorities gives each its own `metrics.listen`.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// `metrics.listen`: a plain-HTTP loopback address (refused otherwise: the exposition names
/// tenants and clients and is served without TLS).
fn validate_listen(file: &MetricsFile, problems: &mut Problems) -> Option<SocketAddr> {
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

/// The authority's `metrics:` block: the loopback listener (always on) and whether the
/// public listener serves `/metrics` too.
pub(super) fn validate_metrics(file: &MetricsFile, problems: &mut Problems) -> (SocketAddr, bool) {
    let listen = validate_listen(file, problems).unwrap_or(DEFAULT_METRICS_LISTEN);
    (listen, file.public.unwrap_or(false))
}

/// The guard's `metrics:` block: an optional loopback listener; absent, the guard serves
/// `/metrics` on its own listener (the resource side's metrics name no tenant).
pub(super) fn validate_guard_metrics(
    file: &MetricsFile,
    problems: &mut Problems,
) -> Option<SocketAddr> {
    if file.public.is_some() {
        problems.add(
            "metrics.public",
            "is an authority setting; the guard serves /metrics on its listener unless metrics.listen is set",
        );
    }
    validate_listen(file, problems)
}
