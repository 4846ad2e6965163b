//! A client doing "a request every 100 ms": `ping -D -O -i 0.1 -c N -W 1` in a namespace, and
//! what came back, by sequence number and time. Used by the failover tests and the failover
//! bench (outage = the longest run of requests without an answer).

use std::path::Path;
use std::time::Duration;

use crate::netns::Netns;
use crate::process::Process;

pub struct Pinger {
    process: Process,
    pub interval: Duration,
    pub count: u32,
}

/// One answered request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Reply {
    pub seq: u32,
    /// When the reply arrived (ping's `-D`: seconds since the Unix epoch).
    pub at: f64,
}

#[derive(Clone, Debug)]
pub struct PingReport {
    pub sent: u32,
    pub replies: Vec<Reply>,
}

impl Pinger {
    /// Starts `count` requests to `address` from `ns`, one every `interval`, each waiting up to
    /// 1 s for its answer; the output goes to `log`.
    pub fn start(ns: &Netns, address: &str, interval: Duration, count: u32, log: &Path) -> Pinger {
        let argv = [
            "ping".to_string(),
            "-n".into(),
            "-D".into(),
            "-O".into(),
            "-i".into(),
            format!("{:.3}", interval.as_secs_f64()),
            "-W".into(),
            "1".into(),
            "-c".into(),
            count.to_string(),
            address.to_string(),
        ];
        let process = ns.spawn(&format!("ping {address}"), &argv, &[], log);
        Pinger { process, interval, count }
    }

    /// How long all the requests take.
    pub fn duration(&self) -> Duration {
        self.interval * self.count + Duration::from_secs(2)
    }

    /// Waits until ping is done (up to its duration + `slack`) and reads its output.
    pub fn finish(self, slack: Duration) -> Result<PingReport, String> {
        let _ = self.process.wait_exit(self.duration() + slack);
        let report = parse(&self.process.log(), self.count);
        if report.replies.is_empty() && !self.process.log().contains("icmp_seq") {
            return Err(format!("ping printed nothing useful:\n{}", self.process.log_report()));
        }
        Ok(report)
    }

    /// The output so far.
    pub fn log(&self) -> String {
        self.process.log()
    }
}

/// Reads ping's lines `[1701.123456] 64 bytes from 10.0.1.10: icmp_seq=5 ttl=63 time=0.5 ms`.
pub fn parse(output: &str, sent: u32) -> PingReport {
    let mut replies = Vec::new();
    for line in output.lines() {
        if !line.contains(" bytes from ") {
            continue;
        }
        let at = line.strip_prefix('[').and_then(|l| l.split(']').next()).and_then(|t| t.parse::<f64>().ok());
        let seq = line.split_whitespace().find_map(|w| w.strip_prefix("icmp_seq=")).and_then(|s| s.parse::<u32>().ok());
        if let (Some(at), Some(seq)) = (at, seq) {
            if !replies.iter().any(|r: &Reply| r.seq == seq) {
                replies.push(Reply { seq, at });
            }
        }
    }
    PingReport { sent, replies }
}

impl PingReport {
    /// Requests that got no answer.
    pub fn lost(&self) -> u32 {
        self.sent.saturating_sub(self.replies.len() as u32)
    }

    /// The longest gap between two consecutive answers (the outage a user saw), and the time of
    /// the answer that ended it.
    pub fn longest_gap(&self) -> Option<(f64, f64)> {
        self.replies.windows(2).map(|w| (w[1].at - w[0].at, w[1].at)).max_by(|a, b| a.0.total_cmp(&b.0))
    }

    /// The longest run of requests in a row that got no answer (also at the end, when the
    /// answers stopped for good).
    pub fn longest_unanswered_run(&self) -> u32 {
        let mut answered: Vec<u32> = self.replies.iter().map(|r| r.seq).collect();
        answered.sort_unstable();
        let mut longest = 0;
        let mut previous = 0;
        for seq in answered.into_iter().chain([self.sent + 1]) {
            longest = longest.max(seq.saturating_sub(previous + 1));
            previous = previous.max(seq);
        }
        longest
    }

    /// The first answer after `time` (seconds since the epoch).
    pub fn first_reply_after(&self, time: f64) -> Option<Reply> {
        self.replies.iter().copied().find(|r| r.at > time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_output_is_read() {
        let out = "PING 10.0.1.10 (10.0.1.10) 56(84) bytes of data.\n\
                   [1701.100000] 64 bytes from 10.0.1.10: icmp_seq=1 ttl=63 time=0.51 ms\n\
                   [1701.300000] no answer yet for icmp_seq=2\n\
                   [1703.400000] 64 bytes from 10.0.1.10: icmp_seq=4 ttl=63 time=0.40 ms\n\
                   [1703.500000] 64 bytes from 10.0.1.10: icmp_seq=5 ttl=63 time=0.40 ms\n";
        let r = parse(out, 5);
        assert_eq!(r.replies.len(), 3);
        assert_eq!(r.lost(), 2);
        let (gap, ended) = r.longest_gap().unwrap();
        assert!((gap - 2.3).abs() < 1e-9 && ended == 1703.4, "{gap} {ended}");
        assert_eq!(r.first_reply_after(1702.0).unwrap().seq, 4);
        assert_eq!(r.longest_unanswered_run(), 2);
        assert_eq!(parse(out, 9).longest_unanswered_run(), 4, "requests 6-9 never answered");
        assert_eq!(parse("", 3).longest_unanswered_run(), 3);
    }
}
