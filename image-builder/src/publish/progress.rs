//! What `publish` says on stderr: one line per step, and during the upload a progress bar that
//! redraws itself on a terminal, or a plain line every 10 % otherwise (a CI log stays readable).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

pub struct Progress {
    terminal: bool,
    total_blocks: AtomicU64,
    done_blocks: AtomicU64,
    done_bytes: AtomicU64,
    started: Mutex<Option<Instant>>,
    last_tenth: AtomicU64,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            terminal: std::io::stderr().is_terminal(),
            total_blocks: AtomicU64::new(0),
            done_blocks: AtomicU64::new(0),
            done_bytes: AtomicU64::new(0),
            started: Mutex::new(None),
            last_tenth: AtomicU64::new(0),
        }
    }

    /// One step's line.
    pub fn step(&self, line: impl std::fmt::Display) {
        let _ = writeln!(std::io::stderr().lock(), "publish: {line}");
    }

    pub fn start_upload(&self, blocks: u64) {
        self.total_blocks.store(blocks, Ordering::Relaxed);
        *self.started.lock().unwrap() = Some(Instant::now());
    }

    pub fn block_done(&self, bytes: u64) {
        let done = self.done_blocks.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.done_bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
        let total = self.total_blocks.load(Ordering::Relaxed).max(1);
        let seconds = self.started.lock().unwrap().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0).max(0.001);
        let rate = bytes as f64 / (1 << 20) as f64 / seconds;
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let width = 30;
            let filled = (done * width / total) as usize;
            let _ = write!(
                err,
                "\rpublish: [{}{}] {done}/{total} blocks, {:.1} MiB, {rate:.1} MiB/s",
                "#".repeat(filled),
                ".".repeat(width as usize - filled),
                bytes as f64 / (1 << 20) as f64
            );
            if done == total {
                let _ = writeln!(err);
            }
        } else {
            let tenth = done * 10 / total;
            if tenth > self.last_tenth.swap(tenth, Ordering::Relaxed) || done == total {
                let _ = writeln!(
                    err,
                    "publish: uploaded {done}/{total} blocks ({:.1} MiB, {rate:.1} MiB/s)",
                    bytes as f64 / (1 << 20) as f64
                );
            }
        }
    }

    pub fn seconds(&self) -> f64 {
        self.started.lock().unwrap().map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0)
    }
}
