//! `sealkit bench`: the benchmark of the hot path. It starts an authority as a separate
//! process on a demo site in a temporary directory (or targets a running one), prepares
//! requests ahead of time (unique DPoP proofs are signed before any clock starts), drives
//! `POST /token` (or `/introspect`) over keep-alive TLS connections, and measures what an
//! operator budgets for: tokens per second, latency percentiles, the server's CPU time per
//! token read from `/proc/<pid>/stat`, its start-up time and memory, and the crypto floor
//! (one ES256 verify + one ES256 sign, through josekit and bare, measured in the same run)
//! to hold the CPU figure against.
//!
//! Owns measuring and the figures; printing them is `cli::bench`'s job. Speed is never
//! asserted here or in the tests: these are figures for `docs/performance.md`.
//!
//! By concern: `scenario` (what is measured), `site` (the authority under test and its
//! credentials), `server` (starting it), `plan` (keys, proofs and tokens prepared before the
//! clock starts), `load` (the connections driving requests), `run` (one closed-loop run),
//! `soak` (a steady rate, interval by interval), `stall_meter` (how long the machine stood
//! still), `floor` (the crypto floors), `procfs` and `stats` (CPU, memory, percentiles),
//! `report` (the figures).

mod floor;
mod load;
mod plan;
pub mod procfs;
mod report;
mod run;
mod scenario;
mod server;
mod site;
mod soak;
mod stall_meter;
mod stats;

pub use floor::CryptoFloor;
pub use load::Stop;
use plan::*;
use report::*;
pub use report::{Report, ServerFigures};
pub use run::run;
pub use scenario::Scenario;
use site::*;
pub use site::{Credentials, Target};
pub use soak::{soak, store_entries, SoakInterval, SoakReport};
use stall_meter::StallMeter;
pub use stats::Latency;

use crate::client::https::{basic_auth, Connection, TlsTarget};
use crate::client::ProofKey;
use bytes::Bytes;
use http::HeaderValue;
use load::{Outcome, Prepared, Workload};
use serde::Serialize;
use server::ServerProcess;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Client(String),
}

fn client_error(e: impl std::fmt::Display) -> BenchError {
    BenchError::Client(e.to_string())
}

#[derive(Debug, Clone)]
pub struct Options {
    pub connections: usize,
    pub stop: Stop,
    pub warmup: Duration,
    /// Distinct DPoP keys the proofs are signed with (a client reuses its key).
    pub keys: usize,
    pub floor_iterations: u32,
    pub target: Target,
    pub redis_url: Option<String>,
    /// The redis-server's pid, for its CPU time (the redis scenario).
    pub redis_pid: Option<u32>,
    /// The most proofs pre-generated for one run.
    pub max_proofs: usize,
    /// Worker threads of the load generator's runtime (for the report only).
    pub client_threads: usize,
    /// `logging.level` for the server this benchmark starts (default: the demo's, info),
    /// to measure what the per-request log lines cost.
    pub log_level: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_gauges_are_read_from_the_exposition() {
        let text = "# HELP authority_store_entries Live entries\n# TYPE authority_store_entries gauge\nauthority_store_entries{kind=\"nonce\"} 1\nauthority_store_entries{kind=\"jti\"} 15000\nauthority_store_entries{kind=\"token\"} 14990\nauthority_store_errors_total 0\n";
        let entries = store_entries(text);
        assert_eq!(entries.get("jti"), Some(&15000));
        assert_eq!(entries.get("token"), Some(&14990));
        assert_eq!(entries.get("nonce"), Some(&1));
        assert_eq!(entries.len(), 3);
    }

    #[test]
    fn scenarios_round_trip_their_names() {
        for s in Scenario::ALL {
            assert_eq!(Scenario::parse(s.name()), Some(s));
        }
        assert_eq!(Scenario::parse("nope"), None);
    }

    #[test]
    fn soak_edit_shortens_windows_and_redis_adds_storage() {
        let mut yaml =
            "logging:\n  directory: logs\ntokens:\n  lifetime: 5m\nsecurity:\n      replayWindow: 5m\n"
                .to_string();
        site_edit(
            Scenario::Redis,
            Some("redis://127.0.0.1:1"),
            Some("warn"),
            true,
        )(&mut yaml);
        assert!(yaml.contains("lifetime: 1m"), "{yaml}");
        assert!(yaml.contains("replayWindow: 75s"), "{yaml}");
        assert!(yaml.contains("kind: redis"), "{yaml}");
        assert!(
            yaml.contains("logging:\n  level: \"warn\"\n  directory"),
            "{yaml}"
        );
    }
}
