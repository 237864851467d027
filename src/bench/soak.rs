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
    pub rss_mb: Option<f64>,
    pub cpu_us_per_request: Option<f64>,
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
    let data_dir = endpoint.process.as_ref().map(ServerProcess::data_dir);
    let mut next = started + interval;
    while next <= until + Duration::from_millis(500) {
        tokio::time::sleep_until(next.into()).await;
        let mut stats = shared.take();
        let cpu_after = endpoint.pid.and_then(procfs::cpu_ticks);
        let store = match &metrics_url {
            Some(url) => match crate::client::https::get_url(url, &endpoint.ca_file, &[]).await {
                Ok(reply) if reply.status == 200 => {
                    store_entries(&String::from_utf8_lossy(&reply.body))
                }
                _ => BTreeMap::new(),
            },
            None => BTreeMap::new(),
        };
        let cpu = match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if stats.ok > 0 => {
                Some(a.saturating_sub(b) as f64 * 1e6 / ticks.per_second as f64 / stats.ok as f64)
            }
            _ => None,
        };
        cpu_before = cpu_after;
        let point = SoakInterval {
            t_s: started.elapsed().as_secs_f64(),
            ok: stats.ok,
            non_200: stats.non_ok,
            transport_errors: stats.errors,
            rate: stats.ok as f64 / interval.as_secs_f64(),
            latency: stats::latency(&mut stats.latencies_us),
            store_entries: store,
            rss_mb: mb(endpoint.pid.and_then(procfs::rss_bytes)),
            cpu_us_per_request: cpu,
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
