//! Whether the store can answer, and if not, why and since when: what `/ready`, the
//! `authority_store_*` gauges and the housekeeping task read. Each backend keeps one
//! [`HealthTracker`] and records into it as its calls succeed or fail; nothing here decides
//! what a request gets (callers fail closed on any store error by themselves).

use prometheus_client::metrics::histogram::Histogram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The state of the store as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    /// Calls are being answered.
    Available,
    /// Calls fail (requests get 503); the backend retries by itself.
    Unavailable,
    /// The backend cannot recover inside this process (e.g. its database cannot be
    /// reopened): the server should exit with [`EXIT_STORE_FAILED`] so the supervisor
    /// starts a fresh process.
    Fatal,
}

/// Exit status of `sealkit serve` when the store failed in a way only a new process can
/// repair (`EX_TEMPFAIL` of sysexits.h: "try again later"). The systemd unit restarts the
/// service on it (`Restart=on-failure`).
pub const EXIT_STORE_FAILED: u8 = 75;

/// Why the store is unavailable, as a short fixed label (the metric's `cause`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The file system is full (ENOSPC) or over quota (EDQUOT).
    StorageFull,
    /// The file system is read-only (EROFS, e.g. remounted read-only after an error).
    ReadOnly,
    /// Any other I/O error of the embedded database.
    Io,
    /// The Redis server cannot be reached or does not answer in time.
    Unreachable,
    /// Anything else (corrupt data, an unexpected reply).
    Other,
}

impl Cause {
    /// Every cause, for metrics that show all of them (0 or 1).
    pub const ALL: [Cause; 5] = [
        Cause::StorageFull,
        Cause::ReadOnly,
        Cause::Io,
        Cause::Unreachable,
        Cause::Other,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Cause::StorageFull => "storage-full",
            Cause::ReadOnly => "read-only",
            Cause::Io => "io-error",
            Cause::Unreachable => "unreachable",
            Cause::Other => "other",
        }
    }

    /// Classifies an I/O error by its errno (sealkit runs on Linux).
    pub fn of_io(error: &std::io::Error) -> Cause {
        use rustix::io::Errno;
        match Errno::from_io_error(error) {
            Some(Errno::NOSPC) | Some(Errno::DQUOT) => Cause::StorageFull,
            Some(Errno::ROFS) => Cause::ReadOnly,
            _ => Cause::Io,
        }
    }
}

/// A snapshot of the store's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    pub state: StoreState,
    /// Unix time (seconds) the current outage began; `None` while available.
    pub since: Option<i64>,
    /// Why (while unavailable or fatal).
    pub cause: Option<Cause>,
    /// The error as the backend saw it (while unavailable or fatal).
    pub reason: Option<String>,
    /// How many times this process found that the store may have lost acknowledged jti
    /// claims (each raised the restart fence once).
    pub claims_lost: u64,
    /// How many times the backend reopened itself after an error (sled).
    pub reopened: u64,
    /// How many durable commits (one `fdatasync` each, failed ones not counted) the
    /// backend made for token records and revocations (sled; each carries every writer
    /// that joined it).
    pub commits: u64,
}

impl StoreHealth {
    pub fn available() -> StoreHealth {
        StoreHealth {
            state: StoreState::Available,
            since: None,
            cause: None,
            reason: None,
            claims_lost: 0,
            reopened: 0,
            commits: 0,
        }
    }
}

#[derive(Default)]
struct Outage {
    since: i64,
    cause: Option<Cause>,
    reason: String,
    fatal: bool,
}

/// Records outcomes of store calls. `ok` is called on every successful call, so it only
/// takes the lock while an outage is recorded.
pub struct HealthTracker {
    degraded: AtomicBool,
    outage: Mutex<Option<Outage>>,
    claims_lost: AtomicU64,
    reopened: AtomicU64,
    commits: AtomicU64,
    /// How long each durable commit took (`authority_store_commit_seconds`): the disk's
    /// `fdatasync` latency as every token answered waits for it.
    commit_seconds: Histogram,
}

impl Default for HealthTracker {
    fn default() -> HealthTracker {
        HealthTracker {
            degraded: AtomicBool::default(),
            outage: Mutex::default(),
            claims_lost: AtomicU64::default(),
            reopened: AtomicU64::default(),
            commits: AtomicU64::default(),
            commit_seconds: crate::telemetry::metrics::latency_histogram(),
        }
    }
}

impl HealthTracker {
    /// A call succeeded: any outage is over (a fatal state stays until the process ends).
    pub fn ok(&self) {
        if !self.degraded.load(Ordering::Relaxed) {
            return;
        }
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if outage.as_ref().is_some_and(|o| !o.fatal) {
            *outage = None;
            self.degraded.store(false, Ordering::Relaxed);
        }
    }

    /// A call failed with `cause`; the outage starts now unless one is already recorded
    /// (its start and first cause are kept, the latest reason is shown).
    pub fn failed(&self, cause: Cause, reason: impl Into<String>) {
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        let reason = reason.into();
        match outage.as_mut() {
            Some(o) => o.reason = reason,
            None => {
                *outage = Some(Outage {
                    since: crate::clock::unix_now(),
                    cause: Some(cause),
                    reason,
                    fatal: false,
                })
            }
        }
        self.degraded.store(true, Ordering::Relaxed);
    }

    /// The backend cannot recover inside this process.
    pub fn fatal(&self, cause: Cause, reason: impl Into<String>) {
        self.failed(cause, String::new());
        let mut outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(o) = outage.as_mut() {
            o.fatal = true;
            o.reason = reason.into();
        }
    }

    pub fn claims_lost(&self) {
        self.claims_lost.fetch_add(1, Ordering::Relaxed);
    }

    pub fn reopened(&self) {
        self.reopened.fetch_add(1, Ordering::Relaxed);
    }

    /// A durable commit succeeded after `took` (journal write and `fdatasync`).
    pub fn committed(&self, took: Duration) {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// The histogram of commit durations, shared (the metrics registry renders it).
    pub fn commit_seconds(&self) -> Histogram {
        self.commit_seconds.clone()
    }

    /// The outage's start and reason, for error messages while it lasts.
    pub fn describe(&self) -> Option<String> {
        let outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        outage.as_ref().map(|o| {
            format!(
                "{} since {}: {}",
                o.cause.map(Cause::label).unwrap_or("unavailable"),
                rfc3339(o.since),
                o.reason
            )
        })
    }

    pub fn snapshot(&self) -> StoreHealth {
        let outage = self.outage.lock().unwrap_or_else(|e| e.into_inner());
        let mut health = StoreHealth::available();
        health.claims_lost = self.claims_lost.load(Ordering::Relaxed);
        health.reopened = self.reopened.load(Ordering::Relaxed);
        health.commits = self.commits.load(Ordering::Relaxed);
        if let Some(o) = outage.as_ref() {
            health.state = if o.fatal {
                StoreState::Fatal
            } else {
                StoreState::Unavailable
            };
            health.since = Some(o.since);
            health.cause = o.cause;
            health.reason = Some(o.reason.clone());
        }
        health
    }
}

/// A possible loss of jti claims that a backend found and reports once, from the next
/// `claim_jti` or `nonce_is_valid` (as [`StoreError::ClaimsLost`](super::StoreError)).
#[derive(Default)]
pub struct LossReport {
    pending: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl LossReport {
    /// Remembers a loss to report (a later one replaces an unreported earlier one: one
    /// report raises the fence for both).
    pub fn set(&self, reason: impl Into<String>) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.into());
        self.pending.store(true, Ordering::Release);
    }

    /// `Err(ClaimsLost)` once after [`LossReport::set`], `Ok` otherwise.
    pub fn take(&self) -> Result<(), super::StoreError> {
        if !self.pending.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        Err(super::StoreError::ClaimsLost(reason))
    }
}

/// Unix seconds as RFC 3339 (UTC), for messages and `/ready`.
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("@{unix}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_keeps_its_start_until_a_call_succeeds() {
        let tracker = HealthTracker::default();
        tracker.ok();
        assert_eq!(tracker.snapshot().state, StoreState::Available);
        tracker.failed(Cause::StorageFull, "first");
        let first = tracker.snapshot();
        assert_eq!(first.state, StoreState::Unavailable);
        assert_eq!(first.cause, Some(Cause::StorageFull));
        tracker.failed(Cause::Io, "second");
        let second = tracker.snapshot();
        assert_eq!(second.since, first.since);
        assert_eq!(
            second.cause,
            Some(Cause::StorageFull),
            "the first cause stays"
        );
        assert_eq!(second.reason.as_deref(), Some("second"));
        assert!(tracker
            .describe()
            .unwrap()
            .starts_with("storage-full since "));
        tracker.ok();
        assert_eq!(tracker.snapshot(), StoreHealth::available());
    }

    #[test]
    fn a_fatal_state_does_not_end_with_a_successful_call() {
        let tracker = HealthTracker::default();
        tracker.fatal(Cause::Io, "cannot reopen");
        tracker.ok();
        let health = tracker.snapshot();
        assert_eq!(health.state, StoreState::Fatal);
        assert_eq!(health.reason.as_deref(), Some("cannot reopen"));
    }

    #[test]
    fn a_loss_is_reported_once() {
        let report = LossReport::default();
        assert!(report.take().is_ok());
        report.set("first");
        report.set("second");
        assert!(
            matches!(report.take(), Err(crate::store::StoreError::ClaimsLost(r)) if r == "second")
        );
        assert!(report.take().is_ok());
    }

    #[test]
    fn io_errors_are_classified_by_errno() {
        let io = |code| std::io::Error::from_raw_os_error(code);
        assert_eq!(
            Cause::of_io(&io(rustix::io::Errno::NOSPC.raw_os_error())),
            Cause::StorageFull
        );
        assert_eq!(
            Cause::of_io(&io(rustix::io::Errno::ROFS.raw_os_error())),
            Cause::ReadOnly
        );
        assert_eq!(
            Cause::of_io(&io(rustix::io::Errno::IO.raw_os_error())),
            Cause::Io
        );
    }
}
