//! What the authority exports about itself for monitoring, beyond its request counters:
//! build facts (`sealkit_build_info`), process metrics read from `/proc/self`
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//! `process_max_fds`, `process_start_time_seconds`), and the dates things run out, as Unix
//! timestamps (`…_timestamp_seconds`, the Prometheus convention):
//! the server certificate's `notAfter`, the client CRLs' earliest `nextUpdate`, the active
//! bundle's `expires` and the signing key's creation.
//!
//! It also owns the choice of exposition format (content negotiation): Prometheus text
//! 0.0.4 for `Accept: text/plain` (what `promtool check metrics` lints), OpenMetrics 1.0
//! when the scraper asks for `application/openmetrics-text`.
//!
//! Not responsible for the request metrics themselves (`telemetry::metrics`) nor for
//! serving them (`server`).

use crate::telemetry::metrics::Metrics;
use std::fmt::Write as _;
use std::path::Path;

/// The exposition format a scraper asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
    /// `text/plain; version=0.0.4`.
    PrometheusText,
}

impl Format {
    /// From an `Accept` header: OpenMetrics when it is asked for (Prometheus asks for it
    /// first), else the classic text; no header → OpenMetrics (what `/metrics` always
    /// served before).
    pub fn negotiate(accept: Option<&str>) -> Format {
        match accept {
            None => Format::OpenMetrics,
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            Some(_) => Format::PrometheusText,
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The whole exposition: the registry, then build and process facts, in `format`.
pub fn render(metrics: &Metrics, format: Format) -> String {
    let open_metrics = metrics.render();
    let body = open_metrics
        .strip_suffix("# EOF\n")
        .unwrap_or(&open_metrics);
    let mut out = match format {
        Format::OpenMetrics => body.to_string(),
        Format::PrometheusText => to_prometheus_text(body),
    };
    push_build_info(&mut out);
    push_process(&mut out);
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// OpenMetrics text (without `# EOF`) as Prometheus text 0.0.4: a counter family's
/// `HELP`/`TYPE` lines name the `_total` series, `# UNIT` lines are dropped, and OpenMetrics
/// `info`/`stateset` types are written as gauges.
fn to_prometheus_text(open_metrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in open_metrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            }
        }
    }
    let mut out = String::with_capacity(open_metrics.len() + 256);
    for line in open_metrics.lines() {
        if line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            let tail = match tail {
                "info" | "stateset" => "gauge",
                t => t,
            };
            if counters.contains(name) {
                Some(format!("{prefix}{name}_total {tail}"))
            } else {
                Some(format!("{prefix}{name} {tail}"))
            }
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

fn push_family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value in the exposition's escaping (backslash, quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn push_build_info(out: &mut String) {
    let info = crate::build_info::current();
    push_family(
        out,
        "sealkit_build_info",
        "gauge",
        "Always 1; the labels say which build is running (version, commit, target, linkage)",
    );
    let _ = writeln!(
        out,
        "sealkit_build_info{{version=\"{}\",commit=\"{}\",target=\"{}\",linkage=\"{}\"}} 1",
        label(info.version),
        label(info.commit.unwrap_or("unknown")),
        label(info.target),
        info.linkage()
    );
}

/// Process facts from `/proc/self`, as the Prometheus client libraries name them. A fact
/// `/proc` does not give (another OS, a hardened mount) is left out rather than faked.
fn push_process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").ok();
    // `getconf CLK_TCK` once per process, not once per scrape.
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let ticks = *TICKS.get_or_init(|| crate::bench::procfs::clock_ticks().per_second) as f64;
    if let Some(cpu) = stat
        .as_deref()
        .and_then(crate::bench::procfs::parse_cpu_ticks)
    {
        push_family(
            out,
            "process_cpu_seconds_total",
            "counter",
            "User and system CPU time spent by the authority, in seconds",
        );
        let _ = writeln!(out, "process_cpu_seconds_total {}", cpu as f64 / ticks);
    }
    if let Some(rss) = crate::bench::procfs::rss_bytes(std::process::id()) {
        push_family(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory of the authority, in bytes",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {rss}");
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        push_family(
            out,
            "process_open_fds",
            "gauge",
            "Open file descriptors (connections, store files, logs)",
        );
        let _ = writeln!(out, "process_open_fds {}", fds.count());
    }
    if let Some(max) = max_fds() {
        push_family(
            out,
            "process_max_fds",
            "gauge",
            "The open file descriptor limit (RLIMIT_NOFILE, soft)",
        );
        let _ = writeln!(out, "process_max_fds {max}");
    }
    if let Some(start) = stat.as_deref().and_then(|s| start_time(s, ticks)) {
        push_family(
            out,
            "process_start_time_seconds",
            "gauge",
            "When the authority's process started, in Unix seconds",
        );
        let _ = writeln!(out, "process_start_time_seconds {start}");
    }
}

/// The soft `Max open files` limit from `/proc/self/limits`.
fn max_fds() -> Option<u64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Field 22 of `/proc/self/stat` (start time in ticks after boot) plus `btime`.
fn start_time(stat: &str, ticks: f64) -> Option<u64> {
    // The command name (field 2) may hold spaces: count from after its `)`.
    let after = &stat[stat.rfind(')')? + 2..];
    let start_ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: u64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + (start_ticks as f64 / ticks) as u64)
}

/// Sets the expiry gauges from the files the running configuration names: 0 for a date
/// that does not apply (no CRL configured, a configuration outside a bundle) or that
/// cannot be read (the reason is logged).
pub fn refresh_expiry(
    metrics: &Metrics,
    settings: &crate::config::Settings,
    config_path: Option<&Path>,
) {
    let set = |gauge: &prometheus_client::metrics::gauge::Gauge, value: Option<i64>| {
        gauge.set(value.unwrap_or(0));
    };
    set(
        &metrics.tls_certificate_not_after,
        certificate_not_after(&settings.tls_certificate),
    );
    set(
        &metrics.client_crl_next_update,
        settings.tls_client_crl.as_deref().and_then(crl_next_update),
    );
    set(
        &metrics.bundle_expires,
        config_path.and_then(bundle_expires),
    );
}

/// The earliest `notAfter` of the PEM certificates in `path` (the leaf's, or an
/// intermediate's if that runs out first).
pub fn certificate_not_after(path: &Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    x509_parser::pem::Pem::iter_from_buffer(&pem)
        .filter_map(Result::ok)
        .filter(|p| p.label == "CERTIFICATE")
        .filter_map(|p| {
            let (_, cert) = x509_parser::parse_x509_certificate(&p.contents).ok()?;
            Some(cert.validity().not_after.timestamp())
        })
        .min()
}

/// The earliest `nextUpdate` of the CRLs in `path` (PEM): after it, a CRL-checking
/// verifier refuses every client certificate.
pub fn crl_next_update(path: &Path) -> Option<i64> {
    let pem = std::fs::read(path).ok()?;
    x509_parser::pem::Pem::iter_from_buffer(&pem)
        .filter_map(Result::ok)
        .filter(|p| p.label == "X509 CRL")
        .filter_map(|p| {
            let (_, crl) = x509_parser::parse_x509_crl(&p.contents).ok()?;
            Some(crl.next_update()?.timestamp())
        })
        .min()
}

/// `expires` of the bundle generation holding `config` (its `manifest.json`), if any.
pub fn bundle_expires(config: &Path) -> Option<i64> {
    let manifest = config
        .parent()?
        .join(crate::bundle::manifest::MANIFEST_NAME);
    let text = std::fs::read_to_string(manifest).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    crate::bundle::manifest::parse_time(value.get("expires")?.as_str()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_chooses_the_format() {
        assert_eq!(Format::negotiate(None), Format::OpenMetrics);
        assert_eq!(
            Format::negotiate(Some(
                "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            )),
            Format::OpenMetrics
        );
        assert_eq!(
            Format::negotiate(Some("text/plain")),
            Format::PrometheusText
        );
        assert_eq!(Format::negotiate(Some("*/*")), Format::PrometheusText);
    }

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let metrics = Metrics::new();
        metrics.dpop_replay.inc();
        let text = render(&metrics, Format::PrometheusText);
        assert!(
            text.contains("# HELP authority_dpop_replay_total "),
            "{text}"
        );
        assert!(text.contains("# TYPE authority_dpop_replay_total counter"));
        assert!(text.contains("\nauthority_dpop_replay_total 1\n"));
        assert!(!text.contains("# EOF"));
        assert!(text.contains("# TYPE sealkit_build_info gauge"));
        assert!(text.contains("process_resident_memory_bytes "));
        assert!(text.contains("process_start_time_seconds "));
        let open = render(&metrics, Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"));
        assert_eq!(open.matches("# EOF").count(), 1);
    }

    #[test]
    fn every_series_has_help() {
        let text = render(&Metrics::new(), Format::PrometheusText);
        let helped: std::collections::HashSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# HELP "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| helped.contains(f))
                .unwrap_or(name);
            assert!(helped.contains(family), "{name} has no HELP");
        }
    }
}
