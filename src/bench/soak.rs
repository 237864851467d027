//! The soak: a steady open-loop rate for a long time, reported interval by interval, with
//! the store's gauges, to find stalls that closed-loop runs hide.

use super::*;

/// One soak interval.
#[derive(Debug, Clone, Serialize)]
pub struct SoakInterval {
    pub t_s: f64,
    pub ok: u64,
    pub non_200: u64,
    pub transport_errors: u64,
    pub rate: f64,
    pub latency: Latency,
    /// `authority_store_entries{kind=...}` from `/metrics`.
    pub store_entries: BTreeMap<String, u64>,
    /// The 99th percentile of the same interval by the authority's own histogram
    /// (`authority_request_duration_seconds` of the scenario's endpoint, from reading the
    /// request to its answer; interpolated within buckets that double from 50 µs, as
    /// Prometheus's `histogram_quantile` does), to tell a stall in the server from one in
    /// the network stack, TLS or the load generator.
    pub server_p99_ms: Option<f64>,
    /// The upper bound of the histogram bucket of the interval's slowest request by the
    /// same histogram ([`slowest_between`]).
    pub server_slowest_ms: Option<f64>,
    /// The upper bound of the bucket of the interval's slowest durable commit of the store
    /// (`authority_store_commit_seconds`: journal write and `fdatasync`), when the store
    /// makes commits: every token answered waited for one, so a slow disk shows here.
    pub slowest_commit_ms: Option<f64>,
    /// The 99th percentile of the load generator's own lateness in the interval (from a
    /// request's due instant until a connection took it up; `IntervalStats::pickup_us`).
    pub pickup_p99_ms: Option<f64>,
    pub rss_mb: Option<f64>,
    pub cpu_us_per_request: Option<f64>,
    /// The machine's stolen time in this interval, in percent (`procfs::steal_percent`).
    pub machine_steal_percent: Option<f64>,
    /// The longest a thread that asks to run every millisecond ran late in this interval
    /// ([`StallMeter`]): no stop of the whole machine in the interval lasted longer.
    pub longest_stall_ms: Option<f64>,
    /// Size of the server's data directory (store files), when the benchmark started it.
    pub data_dir_mb: Option<f64>,
    /// Requests due but not yet sent when the interval ended.
    pub backlog: usize,
    pub first_error: Option<String>,
}

/// The soak's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub scenario: &'static str,
    pub rate: f64,
    pub duration_s: f64,
    pub connections: usize,
    pub startup_ms: Option<f64>,
    pub idle_rss_mb: Option<f64>,
    pub intervals: Vec<SoakInterval>,
    pub notes: Vec<String>,
}

/// Parses `authority_store_entries{kind="jti"} 123` lines of the metrics exposition.
pub fn store_entries(metrics: &str) -> BTreeMap<String, u64> {
    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("authority_store_entries{kind=\"")?;
            let (kind, rest) = rest.split_once('"')?;
            let value = rest.rsplit(' ').next()?.trim();
            Some((kind.to_string(), value.parse::<f64>().ok()? as u64))
        })
        .collect()
}

/// The cumulative buckets `(upper bound in seconds, count)` of
/// `authority_request_duration_seconds` for `endpoint`, in exposition order (ascending).
pub fn duration_buckets(metrics: &str, endpoint: &str) -> Vec<(f64, u64)> {
    histogram_buckets(
        metrics,
        "authority_request_duration_seconds",
        Some(endpoint),
    )
}

/// The cumulative buckets of `authority_store_commit_seconds` (empty when the store makes
/// no commits of its own).
pub fn commit_buckets(metrics: &str) -> Vec<(f64, u64)> {
    histogram_buckets(metrics, "authority_store_commit_seconds", None)
}

/// The cumulative buckets of histogram `name`, of the series whose `endpoint` label is
/// `endpoint` (any series when `None`), in exposition order (ascending).
fn histogram_buckets(metrics: &str, name: &str, endpoint: Option<&str>) -> Vec<(f64, u64)> {
    let prefix = format!("{name}_bucket{{");
    metrics
        .lines()
        .filter_map(|line| {
            let labels = line.strip_prefix(prefix.as_str())?;
            let (labels, value) = labels.split_once("} ")?;
            let mut le = None;
            let mut matches = endpoint.is_none();
            for label in labels.split(',') {
                match label.split_once('=')? {
                    ("endpoint", v) => matches = Some(v.trim_matches('"')) == endpoint,
                    ("le", v) => le = Some(v.trim_matches('"')),
                    _ => {}
                }
            }
            let le = match le? {
                "+Inf" => f64::INFINITY,
                bound => bound.parse().ok()?,
            };
            let count = value.split(' ').next()?.trim().parse::<f64>().ok()? as u64;
            matches.then_some((le, count))
        })
        .collect()
}

/// The cumulative bucket counts of the observations made between two scrapes.
fn counts_between(before: &[(f64, u64)], after: &[(f64, u64)]) -> Vec<(f64, u64)> {
    after
        .iter()
        .map(|&(le, n)| {
            let earlier = before.iter().find(|(b, _)| *b == le).map_or(0, |&(_, n)| n);
            // Saturating: a server restarted between the scrapes resets its counts.
            (le, n.saturating_sub(earlier))
        })
        .collect()
}

/// The upper bound in milliseconds of the bucket of the slowest observation made between
/// two scrapes; `None` without observations or when it is in the `+Inf` bucket.
/// With a fixed number of connections only that many requests are in the server at once,
/// so a stall of the server touches too few of them to move its p99; its slowest request
/// still shows it.
pub fn slowest_between(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<f64> {
    let counts = counts_between(before, after);
    let total = counts.last()?.1;
    if total == 0 {
        return None;
    }
    counts
        .iter()
        .find(|&&(_, cumulative)| cumulative >= total)
        .filter(|&&(le, _)| le.is_finite())
        .map(|&(le, _)| le * 1e3)
}

/// The `q` quantile in milliseconds of the observations made between two scrapes of the
/// same buckets, interpolated linearly within its bucket; `None` without observations or
/// when it falls in the `+Inf` bucket.
pub fn quantile_between(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let counts = counts_between(before, after);
    let total = counts.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(le, cumulative) in &counts {
        if cumulative as f64 >= rank {
            if le.is_infinite() {
                return None;
            }
            // Saturating: a server restarted between the scrapes resets its counts.
            let in_bucket = cumulative.saturating_sub(lower.1) as f64;
            let fraction = if in_bucket > 0.0 {
                (rank - lower.1 as f64) / in_bucket
            } else {
                1.0
            };
            return Some((lower.0 + (le - lower.0) * fraction) * 1e3);
        }
        lower = (le, cumulative);
    }
    None
}

/// A steady request rate for `duration`, reporting every `interval` through `each`.
pub async fn soak(
    scenario: Scenario,
    options: &Options,
    duration: Duration,
    rate: f64,
    interval: Duration,
    each: &mut (dyn FnMut(&SoakInterval) + Send),
) -> Result<SoakReport, BenchError> {
    if !matches!(
        scenario,
        Scenario::Dpop | Scenario::DpopNonce | Scenario::Bearer | Scenario::Redis
    ) {
        return Err(BenchError::Setup(format!(
            "the soak runs the dpop, dpop-nonce, bearer or redis scenario, not {}",
            scenario.name()
        )));
    }
    if let Some(why) = unavailable(scenario, options, &Credentials::default())
        .filter(|_| scenario == Scenario::Redis)
    {
        return Err(BenchError::Setup(why));
    }
    let mut endpoint = endpoint(scenario, options, true).await?;
    let mut notes = Vec::new();
    if endpoint.process.is_some() {
        notes.push(
            "the soak's site uses replayWindow 75s and token lifetime 1m so the store reaches its steady state (rate × window) within the run".into(),
        );
    }
    let startup_ms = endpoint
        .process
        .as_ref()
        .map(|p| p.startup.as_secs_f64() * 1e3);
    let idle_rss_mb = mb(endpoint.pid.and_then(procfs::rss_bytes));
    let plan = plan(scenario, &mut endpoint, options).await?;
    let connections = endpoint.connect(options.connections).await?;
    // The store sizes come from the authority's /metrics, on its loopback listener by
    // default: a new connection per sample (one per interval costs nothing measurable).
    let metrics_url = endpoint.metrics_url().map(str::to_string);
    let nonce = match &plan {
        Plan::Proofs(p) => p.nonce.clone(),
        Plan::Fixed(_) => None,
    };
    let shared = load::OpenLoop::new(nonce);

    // The generator: proofs are signed at most ~2 s before they are due.
    let buffer = (rate * 2.0).max(16.0) as usize;
    let (tx, rx) = tokio::sync::mpsc::channel::<Prepared>(buffer);
    let generator_shared = shared.clone();
    let generator = std::thread::spawn(move || -> Result<(), BenchError> {
        let mut i = 0usize;
        loop {
            let request = match &plan {
                Plan::Fixed(workload) => workload.request(i),
                Plan::Proofs(proofs) => {
                    let nonce = generator_shared.current_nonce();
                    let proof = proofs.proof(i, nonce.as_deref())?;
                    proofs.workload(i, vec![proof]).request(0)
                }
            };
            let Some(request) = request else {
                return Ok(());
            };
            if tx.blocking_send(request).is_err() {
                return Ok(());
            }
            i += 1;
        }
    });

    let ticks = procfs::clock_ticks();
    let stall_meter = match StallMeter::start() {
        Ok(meter) => Some(meter),
        Err(e) => {
            notes.push(format!("no stall meter (its thread did not start: {e})"));
            None
        }
    };
    let started = Instant::now();
    let until = started + duration;
    let driver = tokio::spawn(load::open_loop(
        connections,
        rx,
        rate,
        until,
        shared.clone(),
    ));
    let mut intervals = Vec::new();
    let mut cpu_before = endpoint.pid.and_then(procfs::cpu_ticks);
    let mut machine_before = procfs::machine_ticks();
    let data_dir = endpoint.process.as_ref().map(ServerProcess::data_dir);
    let mut next = started + interval;
    let scrape = || async {
        let url = metrics_url.as_deref()?;
        match crate::client::https::get_url(url, &endpoint.ca_file, &[]).await {
            Ok(reply) if reply.status == 200 => {
                Some(String::from_utf8_lossy(&reply.body).into_owned())
            }
            _ => None,
        }
    };
    let buckets = |scrape: Option<&str>| match (scrape, scenario.endpoint_label()) {
        (Some(text), Some(label)) => duration_buckets(text, label),
        _ => Vec::new(),
    };
    // The histograms as of the start: the soak's own requests only, not the plan's.
    let first = scrape().await;
    let mut buckets_before = buckets(first.as_deref());
    let mut commits_before = first.as_deref().map(commit_buckets).unwrap_or_default();
    while next <= until + Duration::from_millis(500) {
        tokio::time::sleep_until(next.into()).await;
        let mut stats = shared.take();
        let cpu_after = endpoint.pid.and_then(procfs::cpu_ticks);
        let exposition = scrape().await;
        let store = exposition.as_deref().map(store_entries).unwrap_or_default();
        let buckets_now = buckets(exposition.as_deref());
        let server_p99_ms = quantile_between(&buckets_before, &buckets_now, 0.99);
        let server_slowest_ms = slowest_between(&buckets_before, &buckets_now);
        buckets_before = buckets_now;
        let commits_now = exposition
            .as_deref()
            .map(commit_buckets)
            .unwrap_or_default();
        let slowest_commit_ms = slowest_between(&commits_before, &commits_now);
        commits_before = commits_now;
        let cpu = match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if stats.ok > 0 => {
                Some(a.saturating_sub(b) as f64 * 1e6 / ticks.per_second as f64 / stats.ok as f64)
            }
            _ => None,
        };
        cpu_before = cpu_after;
        let machine_after = procfs::machine_ticks();
        let machine_steal_percent = procfs::steal_percent(machine_before, machine_after);
        machine_before = machine_after;
        let longest_stall_ms = stall_meter
            .as_ref()
            .map(|meter| meter.take_longest().as_secs_f64() * 1e3);
        let point = SoakInterval {
            t_s: started.elapsed().as_secs_f64(),
            ok: stats.ok,
            non_200: stats.non_ok,
            transport_errors: stats.errors,
            rate: stats.ok as f64 / interval.as_secs_f64(),
            latency: stats::latency(&mut stats.latencies_us),
            pickup_p99_ms: (!stats.pickup_us.is_empty())
                .then(|| stats::latency(&mut stats.pickup_us).p99_ms),
            store_entries: store,
            server_p99_ms,
            server_slowest_ms,
            slowest_commit_ms,
            rss_mb: mb(endpoint.pid.and_then(procfs::rss_bytes)),
            cpu_us_per_request: cpu,
            machine_steal_percent,
            longest_stall_ms,
            data_dir_mb: data_dir
                .as_deref()
                .map(|d| server::disk_usage(d) as f64 / (1024.0 * 1024.0)),
            backlog: shared.backlog.load(std::sync::atomic::Ordering::Relaxed),
            first_error: stats.first_error.take(),
        };
        each(&point);
        intervals.push(point);
        next += interval;
    }
    let _ = driver.await;
    match generator.join() {
        Ok(Err(e)) => notes.push(format!("proof generator stopped: {e}")),
        Err(_) => notes.push("proof generator panicked".into()),
        Ok(Ok(())) => {}
    }
    if let Some(process) = endpoint.process.take() {
        process.stop()?;
    }
    Ok(SoakReport {
        scenario: scenario.name(),
        rate,
        duration_s: duration.as_secs_f64(),
        connections: options.connections,
        startup_ms,
        idle_rss_mb,
        intervals,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::metrics::{EndpointLabel, Metrics};

    /// The slowest commit of an interval comes from the store's histogram alone: not from
    /// commits before the interval, nor from the request durations.
    #[test]
    fn the_slowest_commit_is_read_from_the_store_histogram_between_two_scrapes() {
        let commits = crate::telemetry::metrics::latency_histogram();
        let metrics = Metrics::with_store_commits(Some(commits.clone()));
        commits.observe(0.5); // before the interval
        metrics
            .request_seconds
            .get_or_create(&EndpointLabel { endpoint: "token" })
            .observe(0.9);
        let before = commit_buckets(&metrics.render());
        assert!(before.len() >= 16, "buckets: {before:?}");
        for _ in 0..200 {
            commits.observe(0.0009);
        }
        commits.observe(0.060); // a 60 ms fdatasync: the 51.2–102.4 ms bucket
        let after = commit_buckets(&metrics.render());
        let slowest = slowest_between(&before, &after).unwrap();
        assert!((slowest - 102.4).abs() < 1e-6, "{slowest}");
        // Without commits in the interval there is no slowest; a store without commits
        // (Redis) renders no such histogram.
        assert_eq!(slowest_between(&after, &after), None);
        assert!(commit_buckets(&Metrics::new().render()).is_empty());
    }

    /// The parser reads what the authority's own registry renders, and the quantile
    /// counts only the observations between the two scrapes.
    #[test]
    fn the_server_p99_comes_from_the_rendered_histogram_between_two_scrapes() {
        let metrics = Metrics::new();
        // A guard of `get_or_create` holds the family's lock: take one per observation.
        let observe = |endpoint: &'static str, seconds: f64| {
            metrics
                .request_seconds
                .get_or_create(&EndpointLabel { endpoint })
                .observe(seconds)
        };
        // Before: slow requests that must not count in the interval.
        for _ in 0..1000 {
            observe("token", 0.5);
        }
        let before = duration_buckets(&metrics.render(), "token");
        assert!(before.len() >= 16, "buckets: {before:?}");
        assert_eq!(before.last().unwrap(), &(f64::INFINITY, 1000));

        // The interval: 990 requests of 1 ms (bucket 0.8–1.6 ms), 10 of 5 ms (3.2–6.4 ms),
        // and other endpoints' requests, which must not count.
        for _ in 0..990 {
            observe("token", 0.001);
        }
        for _ in 0..10 {
            observe("token", 0.005);
        }
        for _ in 0..500 {
            observe("jwks", 2.0);
        }
        let after = duration_buckets(&metrics.render(), "token");
        let p99 = quantile_between(&before, &after, 0.99).unwrap();
        // The 990th of 1000 is the last of the 1 ms bucket: its upper bound, 1.6 ms.
        assert!((p99 - 1.6).abs() < 1e-9, "p99 {p99}");
        let p999 = quantile_between(&before, &after, 0.999).unwrap();
        assert!(p999 > 3.2 && p999 <= 6.4, "p99.9 {p999}");
        assert_eq!(
            quantile_between(&after, &after, 0.99),
            None,
            "no observations"
        );
        // The slowest of the interval is a 5 ms one: its bucket ends at 6.4 ms (the 0.5 s
        // requests before the interval do not count).
        let slowest = slowest_between(&before, &after).unwrap();
        assert!((slowest - 6.4).abs() < 1e-9, "slowest {slowest}");
        assert_eq!(slowest_between(&after, &after), None, "no observations");
    }
}
