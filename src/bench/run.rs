//! One closed-loop run: warm-up, the timed load over keep-alive connections, the server's
//! CPU and memory before and after, and the crypto floor sampled meanwhile.

use super::*;

/// Runs one scenario and returns its figures (a skipped scenario is a report too).
pub async fn run(scenario: Scenario, options: &Options) -> Result<Report, BenchError> {
    let pre_credentials = match &options.target {
        Target::Existing { credentials, .. } => credentials.clone(),
        // A demo site made by this binary: detect what it offers from a probe of the demo
        // module's variables (an mTLS client appears there once the demo has one).
        Target::Spawn { .. } => Credentials::default(),
    };
    if scenario != Scenario::Mtls {
        if let Some(why) = unavailable(scenario, options, &pre_credentials) {
            return Ok(Report::skipped(scenario, options, why));
        }
    } else if let Target::Existing { .. } = options.target {
        if let Some(why) = unavailable(scenario, options, &pre_credentials) {
            return Ok(Report::skipped(scenario, options, why));
        }
    }
    let mut endpoint = endpoint(scenario, options, false).await?;
    if let Some(why) = unavailable(scenario, options, &endpoint.credentials) {
        return Ok(Report::skipped(scenario, options, why));
    }
    let ticks = procfs::clock_ticks();
    let mut report = Report::skipped(scenario, options, String::new());
    report.skipped = None;
    if let (Some(level), Some(_)) = (&options.log_level, &endpoint.process) {
        report
            .notes
            .push(format!("the server ran with logging.level {level}"));
    }
    let startup_ms = endpoint
        .process
        .as_ref()
        .map(|p| p.startup.as_secs_f64() * 1e3);
    let idle_rss = endpoint.pid.and_then(procfs::rss_bytes);

    let plan = plan(scenario, &mut endpoint, options).await?;
    let mut connections = endpoint.connect(options.connections).await?;

    // Warm-up (connections established, key cache and allocator warm), which also
    // measures the rate the proofs for a timed run are sized by.
    let preparation = Instant::now();
    let mut prepared = 0;
    // `--warmup 0s` still sends one request per connection: the warm-up is also the
    // check that the scenario works at all.
    let warmup_stop = if options.warmup.is_zero() {
        Stop::Count(options.connections as u64)
    } else {
        Stop::After(options.warmup)
    };
    let (workload, first) = match &plan {
        Plan::Fixed(workload) => {
            let (_, back) = load::closed_loop(connections, workload.clone(), 0, warmup_stop).await;
            connections = back;
            (workload.clone(), 0)
        }
        Plan::Proofs(proofs) => {
            let warm = proofs.generate(0, 4000)?;
            let (warmup, back) = load::closed_loop(
                connections,
                Arc::new(proofs.workload(0, warm)),
                0,
                warmup_stop,
            )
            .await;
            connections = back;
            if warmup.ok == 0 {
                return Err(BenchError::Client(format!(
                    "the warm-up got no token: {}",
                    warmup.first_error.unwrap_or_default()
                )));
            }
            let needed = match options.stop {
                Stop::Count(n) => usize::try_from(n).unwrap_or(usize::MAX),
                Stop::After(d) => {
                    if d > Duration::from_secs(40) {
                        return Err(BenchError::Setup(
                            "proofs are signed before the run and live 60 s: a DPoP run is at most 40 s (use --soak for longer)".into(),
                        ));
                    }
                    let rate = warmup.ok as f64 / warmup.elapsed.as_secs_f64().max(1e-3);
                    (rate * d.as_secs_f64() * 1.4) as usize + 64 * options.connections
                }
            };
            let count = needed.min(options.max_proofs);
            if count < needed {
                report.notes.push(format!(
                    "proofs capped at {count} (--max-proofs); the run may end early"
                ));
            }
            let started = Instant::now();
            let proofs_now = proofs.generate(4000, count)?;
            report.preparation_s = started.elapsed().as_secs_f64();
            prepared = proofs_now.len();
            (Arc::new(proofs.workload(4000, proofs_now)), 0)
        }
    };
    if report.preparation_s == 0.0 {
        report.preparation_s = preparation.elapsed().as_secs_f64();
    }
    report.prepared = prepared;

    let floor_before = floor::measure(options.floor_iterations)?;
    let threads_before = endpoint
        .pid
        .map(procfs::cpu_ticks_by_thread)
        .unwrap_or_default();
    let server_before = endpoint.pid.and_then(procfs::cpu_ticks);
    let system_before = endpoint.pid.and_then(procfs::system_ticks);
    let client_before = procfs::cpu_ticks(std::process::id());
    let redis_pid = options.redis_pid.filter(|_| scenario == Scenario::Redis);
    let redis_before = redis_pid.and_then(procfs::cpu_ticks);
    let machine_before = procfs::machine_ticks();
    let sampler = floor::Sampler::start()?;
    let (outcome, connections) =
        load::closed_loop(connections, workload.clone(), first, options.stop).await;
    let machine_after = procfs::machine_ticks();
    let (floor_during, floor_samples, sampler_cpu_s) = sampler.finish()?;
    let server_after = endpoint.pid.and_then(procfs::cpu_ticks);
    let system_after = endpoint.pid.and_then(procfs::system_ticks);
    let threads_after = endpoint
        .pid
        .map(procfs::cpu_ticks_by_thread)
        .unwrap_or_default();
    let client_after = procfs::cpu_ticks(std::process::id());
    let redis_after = redis_pid.and_then(procfs::cpu_ticks);
    drop(connections);
    let rss_after = endpoint.pid.and_then(procfs::rss_bytes);
    let threads = endpoint.pid.and_then(procfs::threads);
    let floor_after = floor::measure(options.floor_iterations)?;
    // The floor measured alongside the load when there are enough samples (a run of a
    // second or two has few); otherwise what was measured just before and after it.
    let (floor, floor_method) = match floor_during {
        Some(during) if floor_samples >= 3 => (
            during,
            format!("median of {floor_samples} samples during the run"),
        ),
        _ => (
            floor_before.mean(floor_after),
            "mean of before and after the run".to_string(),
        ),
    };

    let Outcome {
        ok,
        non_ok,
        errors,
        first_error,
        mut latencies_us,
        elapsed,
        exhausted,
        ..
    } = outcome;
    let per_request = |before: Option<u64>, after: Option<u64>| -> Option<f64> {
        let delta = after?.checked_sub(before?)?;
        (ok > 0).then(|| delta as f64 * 1e6 / ticks.per_second as f64 / ok as f64)
    };
    let server_cpu = per_request(server_before, server_after);
    let cores = match (server_before, server_after) {
        (Some(b), Some(a)) => Some(
            a.saturating_sub(b) as f64 / ticks.per_second as f64 / elapsed.as_secs_f64().max(1e-9),
        ),
        _ => None,
    };
    let request_floor = scenario.floor_us(&floor);
    report.elapsed_s = elapsed.as_secs_f64();
    report.ok = ok;
    report.non_200 = non_ok;
    report.transport_errors = errors;
    report.first_error = first_error;
    report.per_second = ok as f64 / elapsed.as_secs_f64().max(1e-9);
    report.latency = stats::latency(&mut latencies_us);
    report.server = endpoint.pid.map(|pid| ServerFigures {
        pid,
        startup_ms,
        idle_rss_mb: mb(idle_rss),
        rss_after_mb: mb(rss_after),
        threads,
        cpu_us_per_request: server_cpu,
        system_us_per_request: per_request(system_before, system_after),
        cores_busy: cores,
        cpu_us_per_request_by_thread: threads_after
            .iter()
            .filter_map(|(name, &after)| {
                let before = threads_before.get(name).copied().unwrap_or(0);
                let delta = after.saturating_sub(before);
                (delta > 0 && ok > 0).then(|| {
                    (
                        name.clone(),
                        delta as f64 * 1e6 / ticks.per_second as f64 / ok as f64,
                    )
                })
            })
            .collect(),
    });
    report.clk_tck = ticks.per_second;
    report.clk_tck_assumed = !ticks.measured;
    report.redis_cpu_us_per_request = per_request(redis_before, redis_after);
    // The floor sampler ran in this process; its CPU is not the load generator's.
    report.client_cpu_us_per_request = per_request(client_before, client_after)
        .map(|us| (us - sampler_cpu_s * 1e6 / ok.max(1) as f64).max(0.0));
    report.floor_samples_during_run = floor_samples;
    report.floor_method = floor_method;
    report.floor = Some(floor);
    report.floor_before_after_us = Some((
        scenario.floor_us(&floor_before).josekit_us,
        scenario.floor_us(&floor_after).josekit_us,
    ));
    report.floor_kind = request_floor.kind;
    report.floor_us = Some(request_floor.josekit_us);
    report.cpu_over_floor = server_cpu.map(|c| c / request_floor.josekit_us);
    report.bare_floor_us = Some(request_floor.bare_us);
    report.cpu_over_bare_floor = server_cpu.map(|c| c / request_floor.bare_us);
    report.openssl_floor_us = Some(request_floor.openssl_us);
    report.cpu_over_openssl_floor = server_cpu.map(|c| c / request_floor.openssl_us);
    report.machine_steal_percent = procfs::steal_percent(machine_before, machine_after);
    report.exhausted = exhausted;
    if exhausted {
        report.notes.push(format!(
            "the pre-generated proofs ran out after {:.1} s; the rate is over that time",
            elapsed.as_secs_f64()
        ));
    }
    if let Some(process) = endpoint.process.take() {
        process.stop()?;
    }
    Ok(report)
}
