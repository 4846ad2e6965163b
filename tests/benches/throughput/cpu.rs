//! CPU time as the kernel counts it: a process's utime+stime (all its threads) and each
//! thread's, read from `/proc` before and after a measurement, and how long runnable tasks
//! waited for a CPU (`/proc/pressure/cpu`).
//!
//! The per-process figures are exact (the kernel scales them to the scheduler's runtime); the
//! machine-wide busy time of `/proc/stat` is not used: it is sampled at the tick, and paced
//! traffic (iperf3's UDP) can fall between ticks, so it read 0.04 busy cores on these VMs while
//! the bastion alone used 0.1.

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of the `/proc` counters.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf(3) takes a name and returns a value or -1.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime+stime in seconds and the thread name, from one `/proc/.../stat` file.
fn stat_cpu(path: &str) -> Option<(String, f64)> {
    let text = std::fs::read_to_string(path).ok()?;
    // The name is in parentheses and may itself hold spaces or parentheses.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // After the name: field 3 (state) is fields[0], utime (14) fields[11], stime (15) fields[12].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, (utime + stime) as f64 / ticks_per_second()))
}

/// One process's CPU seconds so far, in total and per thread.
#[derive(Clone, Debug, Default)]
pub struct ProcessCpu {
    pub seconds: f64,
    /// tid → (thread name, CPU seconds).
    pub threads: BTreeMap<u32, (String, f64)>,
}

impl ProcessCpu {
    pub fn sample(pid: i32) -> ProcessCpu {
        let seconds = stat_cpu(&format!("/proc/{pid}/stat")).map(|(_, s)| s).unwrap_or(0.0);
        let mut threads = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for entry in entries.flatten() {
                let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                    continue;
                };
                if let Some(sample) = stat_cpu(&format!("/proc/{pid}/task/{tid}/stat")) {
                    threads.insert(tid, sample);
                }
            }
        }
        ProcessCpu { seconds, threads }
    }
}

/// Microseconds during which at least one runnable task waited for a CPU (PSI `some`), since
/// boot; 0 when the kernel has no PSI.
fn cpu_pressure_us() -> f64 {
    std::fs::read_to_string("/proc/pressure/cpu")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("some "))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
        .and_then(|t| t.parse().ok())
        .unwrap_or(0.0)
}

/// A thread's share of one CPU over a window.
#[derive(Clone, Debug)]
pub struct ThreadLoad {
    pub name: String,
    /// CPU seconds per wall second (1.0 = one core all the time).
    pub load: f64,
}

/// What a window cost: CPU seconds of each watched process, per-thread loads of the first
/// (the bastion), and how contended the machine's CPUs were.
#[derive(Clone, Debug)]
pub struct Window {
    pub wall: f64,
    /// CPU seconds of each watched process, in the order given.
    pub process_seconds: Vec<f64>,
    /// The first process's threads, busiest first.
    pub threads: Vec<ThreadLoad>,
    /// Share of the window (0–1) in which some runnable task waited for a CPU: the machine was
    /// CPU-bound (by this benchmark or by anything else running on it).
    pub cpu_pressure: f64,
}

/// A measurement in progress over a set of processes.
pub struct Meter {
    pids: Vec<i32>,
    start: Instant,
    before: Vec<ProcessCpu>,
    pressure_us: f64,
}

impl Meter {
    pub fn start(pids: &[i32]) -> Meter {
        Meter {
            pids: pids.to_vec(),
            start: Instant::now(),
            before: pids.iter().map(|&p| ProcessCpu::sample(p)).collect(),
            pressure_us: cpu_pressure_us(),
        }
    }

    pub fn stop(self) -> Window {
        let after: Vec<ProcessCpu> = self.pids.iter().map(|&p| ProcessCpu::sample(p)).collect();
        let pressure_us = cpu_pressure_us();
        let wall = self.start.elapsed().as_secs_f64();
        let process_seconds = self.before.iter().zip(&after).map(|(b, a)| (a.seconds - b.seconds).max(0.0)).collect();
        let mut threads: Vec<ThreadLoad> = match (self.before.first(), after.first()) {
            (Some(b), Some(a)) => a
                .threads
                .iter()
                .map(|(tid, (name, s))| {
                    let before = b.threads.get(tid).map(|(_, s)| *s).unwrap_or(0.0);
                    ThreadLoad { name: name.clone(), load: (s - before).max(0.0) / wall }
                })
                .collect(),
            _ => Vec::new(),
        };
        threads.sort_by(|x, y| y.load.total_cmp(&x.load));
        Window {
            wall,
            process_seconds,
            threads,
            cpu_pressure: ((pressure_us - self.pressure_us) / 1e6 / wall).clamp(0.0, 1.0),
        }
    }
}
