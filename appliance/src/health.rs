//! The health check: `GET`/`HEAD /` answers 200 with a one-line body (`wg0 up`) only when the
//! judge says every condition holds, else 503 with one line per failing condition. The judge
//! (the service's `judge`, or init's while no service runs) decides; this module says what the
//! conditions are and how a verdict is answered, and [`start`] puts it on the bounded HTTP port
//! ([`crate::http_port`]), on its own thread so it stays responsive while the data plane is busy.

use crate::http_port::exchange::{response, Body, Method, Received, Refusal, MAX_REQUEST_BYTES};
use crate::http_port::HttpResponder;
use std::io;
use std::net::SocketAddr;

/// A condition the service's health depends on: every failing line of a 503 is about one, and
/// each is a `bastion_health_condition_failing` series. Typed, so that rewording a line never
/// changes a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    Draining,
    Tun,
    Udp,
    Nat,
    Forwarding,
    EventLoop,
    Selftest,
}

impl Condition {
    pub const ALL: [Condition; 7] = [
        Condition::Draining,
        Condition::Tun,
        Condition::Udp,
        Condition::Nat,
        Condition::Forwarding,
        Condition::EventLoop,
        Condition::Selftest,
    ];

    /// How its lines start (`event loop: ...`).
    pub fn name(self) -> &'static str {
        match self {
            Condition::Draining => "draining",
            Condition::Tun => "tun",
            Condition::Udp => "udp",
            Condition::Nat => "nat",
            Condition::Forwarding => "forwarding",
            Condition::EventLoop => "event loop",
            Condition::Selftest => "selftest",
        }
    }

    /// Its metrics label and status JSON name (`event_loop`).
    pub fn label(self) -> &'static str {
        match self {
            Condition::EventLoop => "event_loop",
            other => other.name(),
        }
    }
}

/// One failing condition and the line that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failing {
    pub condition: Condition,
    pub line: String,
}

/// What the health check says right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthVerdict {
    /// 200, with this one-line body (`wg0 up`).
    Healthy(String),
    /// 503, one line per failing condition.
    Unhealthy(Vec<String>),
}

impl HealthVerdict {
    pub fn status(&self) -> u16 {
        match self {
            HealthVerdict::Healthy(_) => 200,
            HealthVerdict::Unhealthy(_) => 503,
        }
    }

    /// One line per reason; key-like fragments hidden (the port is open to the whole VPC).
    pub fn body(&self) -> String {
        let lines = match self {
            HealthVerdict::Healthy(line) => format!("{line}\n"),
            HealthVerdict::Unhealthy(reasons) => reasons.iter().map(|r| format!("{r}\n")).collect(),
        };
        crate::keys::redact_key_like(&lines).into_owned()
    }
}

/// The health port's responder.
pub type HealthResponder = HttpResponder;

/// The health check on `listen`: `GET /` answered from `judge`.
pub fn start(listen: SocketAddr, judge: impl Fn() -> HealthVerdict + Send + 'static) -> io::Result<HealthResponder> {
    HttpResponder::serve("health", listen, move |received| answer(received, &judge))
}

/// The whole answer to what was received (not `Incomplete`): status line, headers, body.
/// `verdict` is asked only for a `GET`/`HEAD /`.
pub fn answer(received: &Received, verdict: impl FnOnce() -> HealthVerdict) -> Vec<u8> {
    let (status, body, omit_body, allow) = match received {
        Received::Incomplete => (400, "incomplete request\n".to_string(), false, false),
        Received::Refused(Refusal::Malformed) => (400, "bad request: expected GET / HTTP/1.1\n".into(), false, false),
        Received::Refused(Refusal::TooLarge) => {
            (431, format!("request too large: at most {MAX_REQUEST_BYTES} bytes of head\n"), false, false)
        }
        Received::Request { path, .. } if path != "/" => {
            (404, "not found: the health check is at /\n".into(), false, false)
        }
        Received::Request { method: Method::Other, .. } => {
            (405, "method not allowed: use GET or HEAD\n".into(), false, true)
        }
        Received::Request { method, .. } => {
            let verdict = verdict();
            (verdict.status(), verdict.body(), *method == Method::Head, false)
        }
    };
    let omitted = if omit_body { Body::Omitted } else { Body::Sent };
    response(status, "text/plain; charset=utf-8", body.as_bytes(), omitted, allow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http_port::exchange::receive;
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn healthy() -> HealthVerdict {
        HealthVerdict::Healthy("wg0 up".into())
    }

    fn text(received: &Received) -> String {
        String::from_utf8(answer(received, healthy)).unwrap()
    }

    use crate::http_port::test_get as get;

    #[test]
    fn answers_close_the_connection_and_carry_the_verdict() {
        let get = text(&receive(b"GET / HTTP/1.1\r\n\r\n"));
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(get.contains("\r\nConnection: close\r\n"), "{get}");
        assert!(get.contains("\r\nContent-Length: 7\r\n"), "{get}");
        assert!(get.ends_with("\r\n\r\nwg0 up\n"), "{get}");
        let down = String::from_utf8(answer(&receive(b"GET / HTTP/1.1\r\n\r\n"), || {
            HealthVerdict::Unhealthy(vec!["tun: wg0 is down".into(), "draining".into()])
        }))
        .unwrap();
        assert!(down.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{down}");
        assert!(down.ends_with("\r\n\r\ntun: wg0 is down\ndraining\n"), "{down}");
        // HEAD: GET's status and length, no body.
        let head = text(&receive(b"HEAD / HTTP/1.1\r\n\r\n"));
        assert!(head.contains("\r\nContent-Length: 7\r\n") && head.ends_with("\r\n\r\n"), "{head}");
        let not_allowed = text(&receive(b"DELETE / HTTP/1.1\r\n\r\n"));
        assert!(not_allowed.starts_with("HTTP/1.1 405 ") && not_allowed.contains("\r\nAllow: GET, HEAD\r\n"));
        assert!(text(&receive(b"GET /x HTTP/1.1\r\n\r\n")).starts_with("HTTP/1.1 404 "));
        assert!(text(&Received::Refused(Refusal::TooLarge)).starts_with("HTTP/1.1 431 "));
        assert!(text(&Received::Refused(Refusal::Malformed)).starts_with("HTTP/1.1 400 "));
    }

    #[test]
    fn the_judge_is_asked_only_for_the_health_path() {
        for request in [&b"GET /x HTTP/1.1\r\n\r\n"[..], b"PUT / HTTP/1.1\r\n\r\n", b"garbage\r\n\r\n"] {
            answer(&receive(request), || panic!("judge asked for {:?}", String::from_utf8_lossy(request)));
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        // A deterministic sweep of mostly HTTP-shaped bytes.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..600 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    // Mostly printable, with the bytes HTTP cares about.
                    match state % 8 {
                        0 => b'\r',
                        1 => b'\n',
                        2 => b' ',
                        3 => b':',
                        _ => (state >> 8) as u8,
                    }
                })
                .collect();
            let received = receive(&bytes);
            let _ = answer(&received, healthy);
        }
    }
    #[test]
    fn answers_200_and_503_with_reasons_over_real_http() {
        let flag = Arc::new(AtomicBool::new(true));
        let judge_flag = flag.clone();
        let probe = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = probe.local_addr().unwrap();
        drop(probe);
        let responder = start(address, move || {
            if judge_flag.load(Ordering::Relaxed) {
                HealthVerdict::Healthy("wg0 up".into())
            } else {
                HealthVerdict::Unhealthy(vec!["tun: wg0 is down".into(), "draining".into()])
            }
        })
        .unwrap();
        let ok = get(address, "GET / HTTP/1.0\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.0 200") || ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.ends_with("wg0 up\n"), "{ok}");
        flag.store(false, Ordering::Relaxed);
        let bad = get(address, "GET / HTTP/1.0\r\n\r\n");
        assert!(bad.contains(" 503 "), "{bad}");
        assert!(bad.ends_with("tun: wg0 is down\ndraining\n"), "{bad}");
        let head = get(address, "HEAD / HTTP/1.0\r\n\r\n");
        assert!(head.contains(" 503 "), "{head}");
        assert!(!head.contains("draining"), "{head}");
        assert!(get(address, "GET /x HTTP/1.0\r\n\r\n").contains(" 404 "));
        assert!(get(address, "POST / HTTP/1.0\r\nContent-Length: 0\r\n\r\n").contains(" 405 "));
        // Garbage is answered (or closed), never a crash: the next request still works.
        let _ = get(address, "\x00\x01garbage\r\n\r\n");
        assert!(get(address, "GET / HTTP/1.0\r\n\r\n").contains(" 503 "));
        responder.stop();
        assert!(TcpStream::connect(address).is_err());
    }
}
