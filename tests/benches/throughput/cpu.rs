//! CPU time as the kernel counts it: a process's utime+stime (all its threads), each thread's,
//! and the whole machine's busy time, read from `/proc` before and after a measurement.

use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of the `/proc` counters.
fn ticks_per_second() -> f64 {
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

/// The whole machine's busy CPU seconds (all CPUs), from `/proc/stat`.
#[derive(Clone, Copy, Debug, Default)]
pub struct MachineCpu {
    pub busy: f64,
}

impl MachineCpu {
    pub fn sample() -> MachineCpu {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
            return MachineCpu::default();
        };
        let v: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is already in user).
        let total: f64 = v.iter().take(8).sum();
        let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
        let hz = ticks_per_second();
        MachineCpu { busy: (total - idle) / hz }
    }
}

/// A thread's share of one CPU over a window.
#[derive(Clone, Debug)]
pub struct ThreadLoad {
    pub name: String,
    /// CPU seconds per wall second (1.0 = one core all the time).
    pub load: f64,
}

/// What a window cost: CPU seconds of each watched process, per-thread loads of the first
/// (the bastion), and the machine's busy fraction.
#[derive(Clone, Debug)]
pub struct Window {
    pub wall: f64,
    /// CPU seconds of each watched process, in the order given.
    pub process_seconds: Vec<f64>,
    /// The first process's threads, busiest first.
    pub threads: Vec<ThreadLoad>,
    /// Busy CPU seconds of the whole machine per wall second (2.0 = both cores all the time).
    pub machine_load: f64,
}

/// A measurement in progress over a set of processes.
pub struct Meter {
    pids: Vec<i32>,
    start: Instant,
    before: Vec<ProcessCpu>,
    machine: MachineCpu,
}

impl Meter {
    pub fn start(pids: &[i32]) -> Meter {
        Meter {
            pids: pids.to_vec(),
            start: Instant::now(),
            before: pids.iter().map(|&p| ProcessCpu::sample(p)).collect(),
            machine: MachineCpu::sample(),
        }
    }

    pub fn stop(self) -> Window {
        let after: Vec<ProcessCpu> = self.pids.iter().map(|&p| ProcessCpu::sample(p)).collect();
        let machine = MachineCpu::sample();
        let wall = self.start.elapsed().as_secs_f64();
        let process_seconds = self
            .before
            .iter()
            .zip(&after)
            .map(|(b, a)| (a.seconds - b.seconds).max(0.0))
            .collect();
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
            machine_load: (machine.busy - self.machine.busy).max(0.0) / wall,
        }
    }
}

