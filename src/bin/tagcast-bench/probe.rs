//! What the kernel says about a process: CPU time, resident memory and write calls, from
//! `/proc/PID`.

use std::path::PathBuf;

/// Linux reports CPU times in `/proc/PID/stat` in units of `USER_HZ`, fixed at 100 per second
/// for the `/proc` interface on every architecture tagcast targets.
const TICKS_PER_SECOND: f64 = 100.0;

/// A process's CPU time, resident memory and write calls at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Sample {
    /// User plus system CPU time, in seconds.
    pub cpu_seconds: f64,
    /// Resident set size, in KiB.
    pub rss_kib: u64,
    /// The largest resident set size since the process started or [`reset_peak`], in KiB.
    pub peak_rss_kib: u64,
    /// `write`/`writev` system calls made so far (`syscw` of `/proc/PID/io`); `None` when the
    /// kernel does not let this process read it.
    pub write_calls: Option<u64>,
}

/// Starts the peak of process `pid`'s resident memory over from now (Linux ≥ 4.0; the
/// process's owner only). Returns false when it could not.
pub fn reset_peak(pid: u32) -> bool {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok()
}

/// Reading `/proc` failed: the process is gone, or this is not Linux.
#[derive(Debug, thiserror::Error)]
#[error("cannot read {path}: {reason}")]
pub struct ProbeError {
    path: String,
    reason: String,
}

/// Samples process `pid` (`None`: this process).
pub fn sample(pid: Option<u32>) -> Result<Sample, ProbeError> {
    let dir = match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}")),
        None => PathBuf::from("/proc/self"),
    };
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|error| ProbeError {
            path: path.display().to_string(),
            reason: error.to_string(),
        })
    };
    let stat = read("stat")?;
    let status = read("status")?;
    let malformed = |what: &str| ProbeError {
        path: dir.display().to_string(),
        reason: format!("no {what}"),
    };
    let cpu_seconds = cpu_seconds(&stat).ok_or_else(|| malformed("utime/stime in stat"))?;
    let rss_kib = kib(&status, "VmRSS:").ok_or_else(|| malformed("VmRSS in status"))?;
    let peak_rss_kib = kib(&status, "VmHWM:").ok_or_else(|| malformed("VmHWM in status"))?;
    let write_calls = read("io").ok().and_then(|io| counter(&io, "syscw:"));
    Ok(Sample {
        cpu_seconds,
        rss_kib,
        peak_rss_kib,
        write_calls,
    })
}

/// utime + stime (fields 14 and 15), counted after the `)` that ends the command name.
fn cpu_seconds(stat: &str) -> Option<f64> {
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / TICKS_PER_SECOND)
}

/// The value of `key` (e.g. `VmRSS:`) in `/proc/PID/status`, in KiB.
fn kib(status: &str, key: &str) -> Option<u64> {
    counter(status, key)
}

/// The number after `key` on its line of a `/proc` file of `key value` lines.
fn counter(lines: &str, key: &str) -> Option<u64> {
    let line = lines.lines().find(|line| line.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_command_name_with_spaces_and_parentheses() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1";
        assert_eq!(cpu_seconds(stat), Some(3.0));
    }

    #[test]
    fn samples_this_process() {
        let sample = sample(None).unwrap();
        assert!(sample.rss_kib > 0);
        assert!(sample.peak_rss_kib >= sample.rss_kib);
        assert!(sample.write_calls.is_some());
    }
}
