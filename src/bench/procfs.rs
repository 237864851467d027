//! What the benchmark reads from `/proc`: the server process's CPU time (`utime` +
//! `stime`, all threads, in clock ticks) and resident memory (`VmRSS`), and the machine's
//! stolen time (a virtual machine's CPUs lent to other guests by the host).

use std::path::PathBuf;

/// CPU ticks and the tick rate used to turn them into time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickRate {
    pub per_second: u64,
    /// False when `getconf CLK_TCK` could not be run and 100 was assumed.
    pub measured: bool,
}

/// `getconf CLK_TCK`, or 100 (the Linux default) when it cannot be read.
pub fn clock_ticks() -> TickRate {
    let measured = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|&t| t > 0);
    match measured {
        Some(per_second) => TickRate {
            per_second,
            measured: true,
        },
        None => TickRate {
            per_second: 100,
            measured: false,
        },
    }
}

fn proc_file(pid: u32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{name}"))
}

/// `stime` alone (time in the kernel on the process's behalf: syscalls, and on loopback
/// also the TCP receive work for the peer), in clock ticks.
pub fn system_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_file(pid, "stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_whitespace().nth(12)?.parse().ok()
}

/// `utime + stime` of the whole process (every thread), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_file(pid, "stat")).ok()?;
    parse_cpu_ticks(&text)
}

/// Parses `/proc/<pid>/stat`: the command name (field 2) may contain spaces and
/// parentheses, so fields are counted after the *last* `)`. utime and stime are fields
/// 14 and 15 (proc(5)), i.e. the 12th and 13th after the name.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// CPU ticks per thread name (`comm`: `tokio-rt-worker`, `tracing-appende`, `log flusher`,
/// `sled-io-0`, …) summed over the process's threads, with numbered suffixes folded
/// (`sled-io-3` counts as `sled-io`), so the server's time can be split by what does it.
pub fn cpu_ticks_by_thread(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close]
            .trim_end_matches(|c: char| c.is_ascii_digit())
            .trim_end_matches('-')
            .to_string();
        if let Some(ticks) = parse_cpu_ticks(&stat) {
            *out.entry(name).or_insert(0) += ticks;
        }
    }
    out
}

/// `VmRSS` of the process, in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_file(pid, "status")).ok()?;
    parse_rss(&text)
}

pub fn parse_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line
        .trim_start_matches("VmRSS:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Number of threads of the process (`Threads:` in status).
pub fn threads(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(proc_file(pid, "status")).ok()?;
    text.lines()
        .find(|l| l.starts_with("Threads:"))?
        .trim_start_matches("Threads:")
        .trim()
        .parse()
        .ok()
}

/// The machine's CPU ticks since boot as `(stolen, all)`, from the first line of
/// `/proc/stat` (`cpu  user nice system idle iowait irq softirq steal …`).
pub fn machine_ticks() -> Option<(u64, u64)> {
    parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// Parses the text of `/proc/stat` for [`machine_ticks`]: `None` unless its first line is
/// the machine's `cpu` line with at least eight numbers.
pub fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    // guest and guest_nice (fields 9 and 10) are already counted in user and nice.
    let fields: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    (fields.len() == 8).then(|| (fields[7], fields.iter().sum()))
}

/// The share (percent) of the machine's CPU time between two `machine_ticks` readings
/// that the host gave to someone else: the noise a shared virtual machine adds to every
/// figure of the run.
pub fn steal_percent(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((steal_0, all_0), (steal_1, all_1)) = (before?, after?);
    let all = all_1.checked_sub(all_0).filter(|&all| all > 0)?;
    Some(steal_1.saturating_sub(steal_0) as f64 * 100.0 / all as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_last_parenthesis() {
        let stat = "4242 (sealkit (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 567 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn rss_is_read_in_bytes() {
        let status = "Name:\tsealkit\nVmPeak:\t  100 kB\nVmRSS:\t   12345 kB\nThreads:\t5\n";
        assert_eq!(parse_rss(status), Some(12345 * 1024));
        assert_eq!(parse_rss("Name: x\n"), None);
    }

    #[test]
    fn stolen_time_is_the_eighth_field_of_the_cpu_line() {
        let stat = "cpu  100 0 50 800 10 0 5 35 7 0\ncpu0 50 0 25 400 5 0 2 18 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((35, 1000)));
        assert_eq!(parse_machine_ticks("cpu0 1 2 3\n"), None);
        assert_eq!(parse_machine_ticks("cpu  1 2 3\n"), None, "too few fields");
        let share = steal_percent(Some((35, 1000)), Some((85, 2000))).unwrap();
        assert!((share - 5.0).abs() < 1e-9, "{share}");
        assert_eq!(steal_percent(Some((35, 1000)), Some((35, 1000))), None);
        assert!(machine_ticks().is_some(), "this machine's /proc/stat");
    }

    #[test]
    fn this_process_is_readable() {
        let pid = std::process::id();
        assert!(cpu_ticks(pid).is_some());
        assert!(system_ticks(pid).unwrap() <= cpu_ticks(pid).unwrap());
        assert!(rss_bytes(pid).unwrap() > 0);
        assert!(!cpu_ticks_by_thread(pid).is_empty());
    }
}
