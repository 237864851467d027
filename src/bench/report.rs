//! The figures of one scenario, as measured (printing them is `cli::bench`'s job).

use super::*;

/// The server-side figures (absent when the server's pid is unknown).
#[derive(Debug, Clone, Serialize)]
pub struct ServerFigures {
    pub pid: u32,
    /// Spawn until `/ready` answered 200 (only when the benchmark started the server).
    pub startup_ms: Option<f64>,
    pub idle_rss_mb: Option<f64>,
    pub rss_after_mb: Option<f64>,
    pub threads: Option<u64>,
    /// (utime + stime) delta × 1e6 / CLK_TCK / successful requests.
    pub cpu_us_per_request: Option<f64>,
    /// Server CPU time over wall time during the run (1.0 = one core busy).
    pub cores_busy: Option<f64>,
    /// The kernel's part of it (`stime`): syscalls, and on loopback also TCP work done
    /// for the load generator's sockets.
    pub system_us_per_request: Option<f64>,
    /// The server's CPU per request split by thread name (`tokio-rt-worker`: request
    /// handling; `tracing-appende`: the log writer; `log flusher`/`sled-io`: the store).
    pub cpu_us_per_request_by_thread: BTreeMap<String, f64>,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub scenario: &'static str,
    pub store: &'static str,
    /// Why the scenario was not run.
    pub skipped: Option<String>,
    /// Why the scenario failed (set up, server start, client), when it did.
    pub error: Option<String>,
    pub connections: usize,
    pub client_threads: usize,
    pub elapsed_s: f64,
    pub ok: u64,
    pub non_200: u64,
    pub transport_errors: u64,
    pub first_error: Option<String>,
    /// Successful requests per second (`tokens/s`, or introspections per second).
    pub per_second: f64,
    pub unit: &'static str,
    pub latency: Latency,
    pub server: Option<ServerFigures>,
    pub clk_tck: u64,
    pub clk_tck_assumed: bool,
    /// The load generator's own CPU per request (it shares the machine).
    pub client_cpu_us_per_request: Option<f64>,
    /// The redis-server's CPU per request (the redis scenario with `--redis-pid`): the
    /// store's side of a token, beside the authority's `server.cpu_us_per_request`.
    pub redis_cpu_us_per_request: Option<f64>,
    pub floor: Option<CryptoFloor>,
    /// Samples taken while the load ran; with 3 or more, `floor` is their median.
    pub floor_samples_during_run: usize,
    /// How `floor` was obtained, in words.
    pub floor_method: String,
    /// Measurements just before and just after the run (their mean is `floor` when
    /// the run was too short for samples during it).
    pub floor_before_after_us: Option<(f64, f64)>,
    pub floor_kind: &'static str,
    pub floor_us: Option<f64>,
    pub cpu_over_floor: Option<f64>,
    /// The same request's bare floor (`bench::floor`), and the server's CPU over it.
    pub bare_floor_us: Option<f64>,
    pub cpu_over_bare_floor: Option<f64>,
    /// Its OpenSSL bare floor (`bench::floor`), and the server's CPU over it.
    pub openssl_floor_us: Option<f64>,
    pub cpu_over_openssl_floor: Option<f64>,
    /// The machine's stolen time during the run, in percent of its CPU time (`steal` in
    /// `/proc/stat`): on a shared virtual machine, how much the host took away.
    pub machine_steal_percent: Option<f64>,
    /// Requests prepared before the run (DPoP proofs signed ahead), and how long that took.
    pub prepared: usize,
    pub preparation_s: f64,
    /// The run ended early because the prepared proofs were used up.
    pub exhausted: bool,
    pub notes: Vec<String>,
}

impl Report {
    /// The report of a scenario that could not be measured.
    pub fn failed(scenario: Scenario, options: &Options, error: &BenchError) -> Report {
        let mut report = Report::skipped(scenario, options, String::new());
        report.skipped = None;
        report.error = Some(error.to_string());
        report
    }

    pub(super) fn skipped(scenario: Scenario, options: &Options, why: String) -> Report {
        let ticks = procfs::clock_ticks();
        Report {
            scenario: scenario.name(),
            store: if scenario == Scenario::Redis {
                "redis"
            } else {
                "sled"
            },
            skipped: Some(why),
            error: None,
            connections: options.connections,
            client_threads: options.client_threads,
            elapsed_s: 0.0,
            ok: 0,
            non_200: 0,
            transport_errors: 0,
            first_error: None,
            per_second: 0.0,
            unit: scenario.unit(),
            latency: Latency::default(),
            server: None,
            clk_tck: ticks.per_second,
            clk_tck_assumed: !ticks.measured,
            client_cpu_us_per_request: None,
            redis_cpu_us_per_request: None,
            floor: None,
            floor_samples_during_run: 0,
            floor_method: String::new(),
            floor_before_after_us: None,
            floor_kind: "",
            floor_us: None,
            cpu_over_floor: None,
            bare_floor_us: None,
            cpu_over_bare_floor: None,
            openssl_floor_us: None,
            cpu_over_openssl_floor: None,
            machine_steal_percent: None,
            prepared: 0,
            preparation_s: 0.0,
            exhausted: false,
            notes: Vec::new(),
        }
    }
}

pub(super) fn mb(bytes: Option<u64>) -> Option<f64> {
    bytes.map(|b| b as f64 / (1024.0 * 1024.0))
}
