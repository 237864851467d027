//! The stall meter: a thread of the load generator that asks to run every millisecond and
//! records how much later than that it ran, so a soak interval can tell "the whole machine
//! stood still" from "the server or the generator was slow".
//!
//! Why: the host can stop this virtual machine, both CPUs at once. `steal` in
//! `/proc/stat` counts the time so taken but not how it came: 0.7% of a 10 s interval on
//! two CPUs is one 70 ms stop, or seventy 1 ms ones, and only the first spoils a p99. A
//! stop holds up every thread alike, this one included, so no stop in an interval lasted
//! longer than the meter's longest wait (plus its millisecond). The converse does not
//! hold: the meter runs at normal priority, so a long wait can also be a wait for a CPU
//! that the server and the generator were using. Where the generator was late and the
//! meter was not, the lateness is the generator's or the server's, not the machine's.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long the meter sleeps between two looks at the clock.
const PERIOD: Duration = Duration::from_millis(1);

/// A running stall meter; stops when dropped.
pub struct StallMeter {
    longest_us: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl StallMeter {
    /// Starts the meter's thread.
    pub fn start() -> std::io::Result<StallMeter> {
        Self::start_with(std::thread::sleep)
    }

    /// Starts the meter with `sleep` in place of `std::thread::sleep` (a test stands the
    /// meter still with it).
    fn start_with(sleep: impl Fn(Duration) + Send + 'static) -> std::io::Result<StallMeter> {
        let longest_us = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let longest_us = longest_us.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("bench-stall-meter".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let asked = Instant::now();
                        sleep(PERIOD);
                        let late = asked.elapsed().saturating_sub(PERIOD);
                        longest_us.fetch_max(late.as_micros() as u64, Ordering::Relaxed);
                    }
                })?
        };
        Ok(StallMeter {
            longest_us,
            stop,
            thread: Some(thread),
        })
    }

    /// The longest the thread ran late since the last call (or the start), and starts
    /// the next interval.
    pub fn take_longest(&self) -> Duration {
        Duration::from_micros(self.longest_us.swap(0, Ordering::Relaxed))
    }
}

impl Drop for StallMeter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn a_wait_of_the_meters_thread_is_its_interval_longest_and_is_reset_when_taken() {
        // The tenth look at the clock comes 40 ms late, as if the machine had stopped.
        let looks = Arc::new(AtomicUsize::new(0));
        let counted = looks.clone();
        let meter = StallMeter::start_with(move |period| {
            let look = counted.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(if look == 10 {
                Duration::from_millis(40)
            } else {
                period
            });
        })
        .unwrap();
        while looks.load(Ordering::Relaxed) < 20 {
            std::thread::sleep(Duration::from_millis(5));
        }
        let longest = meter.take_longest();
        assert!(
            longest >= Duration::from_millis(39),
            "the 40 ms stop is the interval's longest wait: {longest:?}"
        );
        // The next interval starts from nothing: the stop is not counted twice.
        let next = meter.take_longest();
        assert!(next < Duration::from_millis(39), "{next:?}");
        drop(meter);
        let after = looks.load(Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            looks.load(Ordering::Relaxed),
            after,
            "dropping stops the thread"
        );
    }
}
