//! The result of one self-test run and the one line that tells the operator about it.
//!
//! Owns the wording of `selftest: PASS …` / `selftest: FAIL …` (console, log, health body, status);
//! it does not run anything or decide what passed.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// The step of a run that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The plan could not be carried out at all (address families that cannot work together).
    Setup,
    /// The WireGuard handshake with the service over loopback.
    Handshake,
    /// The ICMP echo to the bastion's own tunnel address, through the TUN.
    Ping(IpAddr),
    /// The TCP connection to a probe target in a private subnet.
    Probe(SocketAddr),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Step::Setup => f.write_str("setup"),
            Step::Handshake => f.write_str("handshake"),
            Step::Ping(target) => write!(f, "ping {target}"),
            Step::Probe(target) => write!(f, "probe {target}"),
        }
    }
}

/// What one run proved, with the time each step took (real time, from the request leaving the
/// client to the answer arriving).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfTestOutcome {
    Pass {
        handshake: Duration,
        ping: Duration,
        probes: Vec<(SocketAddr, Duration)>,
    },
    /// The first step that failed, why, and the steps that passed before it.
    Fail {
        step: Step,
        reason: String,
        handshake: Option<Duration>,
        ping: Option<Duration>,
        probes: Vec<(SocketAddr, Duration)>,
    },
}

impl SelfTestOutcome {
    pub fn passed(&self) -> bool {
        matches!(self, SelfTestOutcome::Pass { .. })
    }
}

/// `0.6 ms`: always milliseconds with one decimal, so console lines compare at a glance and a
/// test can match them with one pattern.
pub(super) struct Millis(pub Duration);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{:.1} ms", self.0.as_secs_f64() * 1000.0)
    }
}

/// A timeout as an operator wrote it: `5 s`, `1.5 s`, `300 ms`.
pub(super) struct Wait(pub Duration);

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let d = self.0;
        if d >= Duration::from_secs(1) {
            if d.subsec_millis() == 0 {
                write!(f, "{} s", d.as_secs())
            } else {
                write!(f, "{} s", d.as_secs_f64())
            }
        } else {
            write!(f, "{} ms", d.as_millis())
        }
    }
}

fn write_timings(
    f: &mut fmt::Formatter,
    handshake: Option<Duration>,
    ping: Option<Duration>,
    probes: &[(SocketAddr, Duration)],
) -> fmt::Result {
    let mut parts = Vec::new();
    if let Some(d) = handshake {
        parts.push(format!("handshake {}", Millis(d)));
    }
    if let Some(d) = ping {
        parts.push(format!("ping {}", Millis(d)));
    }
    for (target, d) in probes {
        parts.push(format!("probe {target} {}", Millis(*d)));
    }
    f.write_str(&parts.join(", "))
}

impl fmt::Display for SelfTestOutcome {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SelfTestOutcome::Pass { handshake, ping, probes } => {
                f.write_str("selftest: PASS ")?;
                write_timings(f, Some(*handshake), Some(*ping), probes)
            }
            SelfTestOutcome::Fail { step, reason, handshake, ping, probes } => {
                write!(f, "selftest: FAIL {step}: {reason}")?;
                if handshake.is_some() || ping.is_some() || !probes.is_empty() {
                    f.write_str(" (")?;
                    write_timings(f, *handshake, *ping, probes)?;
                    f.write_str(")")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(micros: u64) -> Duration {
        Duration::from_micros(micros)
    }

    #[test]
    fn pass_line_has_every_step_in_order() {
        let outcome = SelfTestOutcome::Pass {
            handshake: us(600),
            ping: us(310),
            probes: vec![("10.0.1.5:443".parse().unwrap(), us(1_240))],
        };
        assert_eq!(outcome.to_string(), "selftest: PASS handshake 0.6 ms, ping 0.3 ms, probe 10.0.1.5:443 1.2 ms");
        assert!(outcome.passed());
    }

    #[test]
    fn pass_without_probes() {
        let outcome = SelfTestOutcome::Pass { handshake: us(1_500_000), ping: us(40), probes: vec![] };
        assert_eq!(outcome.to_string(), "selftest: PASS handshake 1500.0 ms, ping 0.0 ms");
    }

    #[test]
    fn fail_line_names_step_reason_and_what_passed_before() {
        let outcome = SelfTestOutcome::Fail {
            step: Step::Probe("10.0.1.5:443".parse().unwrap()),
            reason: "connection refused".into(),
            handshake: Some(us(600)),
            ping: Some(us(300)),
            probes: vec![],
        };
        assert_eq!(
            outcome.to_string(),
            "selftest: FAIL probe 10.0.1.5:443: connection refused (handshake 0.6 ms, ping 0.3 ms)"
        );
        assert!(!outcome.passed());
    }

    #[test]
    fn fail_at_handshake_has_no_parenthesis() {
        let outcome = SelfTestOutcome::Fail {
            step: Step::Handshake,
            reason: format!("no response from 127.0.0.1:51820 within {}", Wait(us(5_000_000))),
            handshake: None,
            ping: None,
            probes: vec![],
        };
        assert_eq!(outcome.to_string(), "selftest: FAIL handshake: no response from 127.0.0.1:51820 within 5 s");
    }

    #[test]
    fn ipv6_targets_are_bracketed() {
        let outcome = SelfTestOutcome::Fail {
            step: Step::Ping("fd00::1".parse().unwrap()),
            reason: "no echo reply within 300 ms".into(),
            handshake: Some(us(700)),
            ping: None,
            probes: vec![],
        };
        assert_eq!(outcome.to_string(), "selftest: FAIL ping fd00::1: no echo reply within 300 ms (handshake 0.7 ms)");
        let probe = Step::Probe("[fd00:1::5]:443".parse().unwrap());
        assert_eq!(probe.to_string(), "probe [fd00:1::5]:443");
    }

    #[test]
    fn waits_read_like_config_values() {
        assert_eq!(Wait(Duration::from_secs(5)).to_string(), "5 s");
        assert_eq!(Wait(Duration::from_millis(1500)).to_string(), "1.5 s");
        assert_eq!(Wait(Duration::from_millis(300)).to_string(), "300 ms");
    }
}
