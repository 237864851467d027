//! Latency percentiles over recorded samples (microseconds), nearest-rank.

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Latency {
    pub samples: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Percentiles of `samples_us` (sorted in place).
pub fn latency(samples_us: &mut [u32]) -> Latency {
    if samples_us.is_empty() {
        return Latency::default();
    }
    samples_us.sort_unstable();
    let n = samples_us.len();
    let rank = |p: f64| -> f64 {
        // Nearest rank: the smallest sample with at least p of the samples at or below it.
        let index = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
        f64::from(samples_us[index]) / 1000.0
    };
    let sum: u64 = samples_us.iter().map(|&s| u64::from(s)).sum();
    Latency {
        samples: n as u64,
        p50_ms: rank(0.50),
        p90_ms: rank(0.90),
        p99_ms: rank(0.99),
        max_ms: f64::from(samples_us[n - 1]) / 1000.0,
        mean_ms: sum as f64 / n as f64 / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let mut samples: Vec<u32> = (1..=100).rev().map(|ms| ms * 1000).collect();
        let l = latency(&mut samples);
        assert_eq!(l.samples, 100);
        assert_eq!(l.p50_ms, 50.0);
        assert_eq!(l.p90_ms, 90.0);
        assert_eq!(l.p99_ms, 99.0);
        assert_eq!(l.max_ms, 100.0);
        assert_eq!(latency(&mut []), Latency::default());
    }
}
