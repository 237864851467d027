//! `sealkit bench`: runs the benchmark scenarios (or a soak) and prints the figures, as
//! text or as JSON for scripts (`scripts/bench.sh` writes `docs/performance.md` from it).

use crate::bench::{self, Credentials, Options, Report, Scenario, SoakInterval, Stop, Target};
use crate::config::duration::HumanDuration;
use anyhow::{bail, Context};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Scenarios, comma-separated: dpop, dpop-nonce, bearer, introspect, mtls, redis, guard, or all
    #[arg(long, value_delimiter = ',', default_value = "dpop")]
    scenario: Vec<String>,
    /// Keep-alive TLS connections driving the load
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// How long each timed run lasts (default 10s)
    #[arg(long, value_name = "DURATION", conflicts_with = "requests")]
    duration: Option<HumanDuration>,
    /// How many requests each timed run sends (instead of --duration)
    #[arg(long, value_name = "N")]
    requests: Option<u64>,
    /// Untimed warm-up before each run
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    warmup: HumanDuration,
    /// Distinct DPoP keys the proofs are signed with
    #[arg(long, default_value_t = 16)]
    keys: usize,
    /// Iterations of each crypto-floor measurement (ES256 verify, ES256 sign)
    #[arg(long, default_value_t = 2000)]
    floor_iterations: u32,
    /// Upper bound on proofs signed ahead of one run
    #[arg(long, default_value_t = 400_000)]
    max_proofs: usize,
    /// Benchmark a running authority at this base URL instead of starting one
    #[arg(long, value_name = "URL", requires = "ca")]
    target: Option<String>,
    /// The site CA certificate that signed the target's server certificate
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// Client id used for every role against --target
    #[arg(long, requires = "client_secret")]
    client_id: Option<String>,
    /// Its secret (or SEALKIT_BENCH_CLIENT_SECRET)
    #[arg(long, env = "SEALKIT_BENCH_CLIENT_SECRET", hide_env_values = true)]
    client_secret: Option<String>,
    /// A demo.env naming the clients of each role, for --target
    #[arg(long, value_name = "FILE")]
    demo_env: Option<PathBuf>,
    /// The target's process id, for its CPU time and memory
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// Redis URL for the redis scenario (skipped without it)
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
    /// The redis-server's process id (on this machine), for its CPU per token in the
    /// redis scenario: the store's side of the cost
    #[arg(long, value_name = "PID", requires = "redis_url")]
    redis_pid: Option<u32>,
    /// Soak: a steady --rate for this long, reporting every --interval
    #[arg(long, value_name = "DURATION")]
    soak: Option<HumanDuration>,
    /// Requests per second during a soak
    #[arg(long, default_value_t = 2000.0)]
    rate: f64,
    /// Reporting interval of a soak
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    interval: HumanDuration,
    /// Worker threads of the load generator (default: one per core)
    #[arg(long)]
    client_threads: Option<usize>,
    /// logging.level of the server the benchmark starts (e.g. warn, to measure the cost of
    /// the per-token info lines)
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Keep the temporary site directories (logs, store) for inspection
    #[arg(long)]
    keep: bool,
    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

fn scenarios(names: &[String]) -> anyhow::Result<Vec<Scenario>> {
    let mut out = Vec::new();
    for name in names {
        if name == "all" {
            out.extend(Scenario::ALL);
            continue;
        }
        match Scenario::parse(name) {
            Some(s) => out.push(s),
            None => bail!(
                "unknown scenario `{name}` (dpop, dpop-nonce, bearer, introspect, mtls, redis, guard, all)"
            ),
        }
    }
    Ok(out)
}

fn options(args: &BenchArgs, threads: usize) -> anyhow::Result<Options> {
    let target = match &args.target {
        None => Target::Spawn { keep: args.keep },
        Some(url) => {
            let mut credentials = match &args.demo_env {
                Some(path) => Credentials::from_demo_env(path)?,
                None => Credentials::default(),
            };
            if let (Some(id), Some(secret)) = (&args.client_id, &args.client_secret) {
                credentials.single = Some((id.clone(), secret.clone()));
            }
            Target::Existing {
                url: url.clone(),
                ca: args.ca.clone().context("--target needs --ca")?,
                credentials,
                server_pid: args.server_pid,
            }
        }
    };
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    Ok(Options {
        connections: args.connections,
        stop: match (args.requests, args.duration) {
            (Some(n), _) => Stop::Count(n),
            (None, Some(d)) => Stop::After(d.0),
            (None, None) => Stop::After(Duration::from_secs(10)),
        },
        warmup: args.warmup.0,
        keys: args.keys.max(1),
        floor_iterations: args.floor_iterations,
        target,
        redis_url: args.redis_url.clone(),
        redis_pid: args.redis_pid,
        max_proofs: args.max_proofs,
        client_threads: threads,
        log_level: args.log_level.clone(),
    })
}

pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let scenarios = scenarios(&args.scenario)?;
    let threads = args.client_threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let options = options(&args, threads)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    if let Some(duration) = args.soak {
        let scenario = match scenarios.as_slice() {
            [one] => *one,
            _ => bail!("a soak runs one scenario"),
        };
        return soak(&runtime, scenario, &options, &args, duration.0);
    }
    let mut reports = Vec::new();
    let mut failed = false;
    for scenario in scenarios {
        if !args.json {
            errln!("sealkit bench: running {} …", scenario.name());
        }
        let report = match runtime.block_on(interruptible(bench::run(scenario, &options))) {
            Some(outcome) => outcome.unwrap_or_else(|e| Report::failed(scenario, &options, &e)),
            None => bail!("interrupted (the server the benchmark started was stopped)"),
        };
        failed |= report.non_200 > 0 || report.transport_errors > 0 || report.error.is_some();
        if !args.json {
            print_report(&report);
        }
        reports.push(report);
    }
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "reports": reports }))?
        );
    }
    Ok(if failed {
        ExitCode::from(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// Runs `work` unless SIGINT or SIGTERM comes first (`None`). Dropping the unfinished work
/// drops the server process it started, which stops that server.
async fn interruptible<T>(work: impl std::future::Future<Output = T>) -> Option<T> {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return Some(work.await);
    };
    tokio::select! {
        outcome = work => Some(outcome),
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
    }
}

fn opt(value: Option<f64>, digits: usize, unit: &str) -> String {
    match value {
        Some(v) => format!("{v:.digits$}{unit}"),
        None => "n/a".into(),
    }
}

fn print_report(r: &Report) {
    outln!();
    outln!("== {} ({} store)", r.scenario, r.store);
    if let Some(why) = &r.skipped {
        outln!("  skipped: {why}");
        return;
    }
    if let Some(error) = &r.error {
        outln!("  FAILED: {error}");
        return;
    }
    outln!(
        "  load              {} connections, {} client threads, {:.1} s, {} requests prepared ahead in {:.1} s",
        r.connections, r.client_threads, r.elapsed_s, r.prepared, r.preparation_s
    );
    outln!("  {:<17} {:.0}", format!("{}/s", r.unit), r.per_second);
    outln!(
        "  latency           p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
        r.latency.p50_ms,
        r.latency.p90_ms,
        r.latency.p99_ms,
        r.latency.max_ms
    );
    outln!(
        "  non-200           {}{}",
        r.non_200 + r.transport_errors,
        if r.transport_errors > 0 {
            format!(" ({} transport errors)", r.transport_errors)
        } else {
            String::new()
        }
    );
    if let Some(e) = &r.first_error {
        outln!("  first error       {e}");
    }
    let tick_note = if r.clk_tck_assumed {
        format!("CLK_TCK assumed {} (getconf unavailable)", r.clk_tck)
    } else {
        format!("CLK_TCK {} from getconf", r.clk_tck)
    };
    match &r.server {
        Some(s) => {
            outln!(
                "  server CPU        {} per {} ({} in the kernel; {}; {} cores busy)",
                opt(s.cpu_us_per_request, 1, " µs"),
                r.unit.trim_end_matches('s'),
                opt(s.system_us_per_request, 1, " µs"),
                tick_note,
                opt(s.cores_busy, 2, "")
            );
            if !s.cpu_us_per_request_by_thread.is_empty() {
                let split: Vec<String> = s
                    .cpu_us_per_request_by_thread
                    .iter()
                    .map(|(name, us)| format!("{name} {us:.1}"))
                    .collect();
                outln!("  by thread (µs)    {}", split.join(", "));
            }
            outln!(
                "  server            pid {}, start-up to ready {}, idle RSS {}, RSS after {}, {} threads",
                s.pid,
                opt(s.startup_ms, 0, " ms"),
                opt(s.idle_rss_mb, 1, " MB"),
                opt(s.rss_after_mb, 1, " MB"),
                s.threads.map_or("n/a".into(), |t| t.to_string())
            );
        }
        None => outln!("  server CPU        n/a (no --server-pid)"),
    }
    outln!(
        "  client CPU        {} per request (load generator, same machine)",
        opt(r.client_cpu_us_per_request, 1, " µs")
    );
    outln!(
        "  machine           {} of its CPU time stolen by the host during the run",
        opt(r.machine_steal_percent, 1, "%")
    );
    if r.store == "redis" {
        outln!(
            "  redis-server CPU  {} per request{}",
            opt(r.redis_cpu_us_per_request, 1, " µs"),
            if r.redis_cpu_us_per_request.is_none() {
                " (no --redis-pid)"
            } else {
                ""
            }
        );
    }
    if let Some(f) = &r.floor {
        outln!(
            "  crypto floor      ES256 verify {:.1} µs, ES256 sign {:.1} µs (josekit, {}, {} iterations, single thread, {})",
            f.es256_verify_us, f.es256_sign_us, r.floor_method, f.iterations, f.clock
        );
        outln!(
            "  bare floor        ES256 verify {:.1} µs, ES256 sign {:.1} µs (the server's own ES256, ring, on prepared keys)",
            f.bare_verify_us, f.bare_sign_us
        );
        outln!(
            "  OpenSSL floor     ES256 verify {:.1} µs, ES256 sign {:.1} µs (SHA-256 + ECDSA on prepared OpenSSL keys, as `openssl speed ecdsap256` plus the hash)",
            f.openssl_verify_us, f.openssl_sign_us
        );
        outln!(
            "  CPU / bare floor  {} (bare floor for this request: {}); against the OpenSSL floor {} ({})",
            opt(r.cpu_over_bare_floor, 2, "×"),
            opt(r.bare_floor_us, 1, " µs"),
            opt(r.cpu_over_openssl_floor, 2, "×"),
            opt(r.openssl_floor_us, 1, " µs"),
        );
        outln!(
            "  CPU / floor       {} (floor for this request: {} = {}; {} before the run, {} after)",
            opt(r.cpu_over_floor, 2, "×"),
            r.floor_kind,
            opt(r.floor_us, 1, " µs"),
            opt(r.floor_before_after_us.map(|b| b.0), 1, " µs"),
            opt(r.floor_before_after_us.map(|b| b.1), 1, " µs"),
        );
    }
    for note in &r.notes {
        outln!("  note              {note}");
    }
}

fn print_interval(p: &SoakInterval) {
    let store: Vec<String> = p
        .store_entries
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    outln!(
        "  t={:>5.0}s  {:>6.0}/s  p99 {:>6.2} ms (server {}, its slowest ≤ {}, slowest commit ≤ {}, generator {})  p50 {:>5.2} ms  store {}  RSS {}  data {}  CPU {}  stolen {}  longest stall {}  non-200 {}  backlog {}",
        p.t_s,
        p.rate,
        p.latency.p99_ms,
        opt(p.server_p99_ms, 2, " ms"),
        opt(p.server_slowest_ms, 1, " ms"),
        opt(p.slowest_commit_ms, 1, " ms"),
        opt(p.pickup_p99_ms, 2, " ms"),
        p.latency.p50_ms,
        if store.is_empty() { "n/a".into() } else { store.join(" ") },
        opt(p.rss_mb, 1, " MB"),
        opt(p.data_dir_mb, 1, " MB"),
        opt(p.cpu_us_per_request, 0, " µs/req"),
        opt(p.machine_steal_percent, 1, "%"),
        opt(p.longest_stall_ms, 1, " ms"),
        p.non_200 + p.transport_errors,
        p.backlog,
    );
    if let Some(e) = &p.first_error {
        outln!("           first error: {e}");
    }
}

fn soak(
    runtime: &tokio::runtime::Runtime,
    scenario: Scenario,
    options: &Options,
    args: &BenchArgs,
    duration: Duration,
) -> anyhow::Result<ExitCode> {
    let json = args.json;
    if !json {
        outln!(
            "== soak: {} at {:.0}/s for {:.0} s, {} connections (latency from the instant each request was due)",
            scenario.name(),
            args.rate,
            duration.as_secs_f64(),
            options.connections
        );
    }
    let mut each = |p: &SoakInterval| {
        if json {
            if let Ok(line) = serde_json::to_string(p) {
                errln!("{line}");
            }
        } else {
            print_interval(p);
        }
    };
    let report = runtime
        .block_on(interruptible(bench::soak(
            scenario,
            options,
            duration,
            args.rate,
            args.interval.0,
            &mut each,
        )))
        .context("interrupted (the server the benchmark started was stopped)")??;
    let failed = report
        .intervals
        .iter()
        .any(|p| p.non_200 > 0 || p.transport_errors > 0);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "soak": report }))?
        );
    } else {
        outln!(
            "  server: start-up to ready {}, idle RSS {}",
            opt(report.startup_ms, 0, " ms"),
            opt(report.idle_rss_mb, 1, " MB")
        );
        for note in &report.notes {
            outln!("  note: {note}");
        }
    }
    Ok(if failed {
        ExitCode::from(super::EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}
