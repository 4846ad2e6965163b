//! Runs of datagrams for UDP GSO: what the TUN side encrypts in one batch is sent as few
//! `sendmsg` calls as possible. Consecutive datagrams along the same path and of the same size
//! (a bulk transfer's full-MTU packets) form one run, sent with `UDP_SEGMENT` as one call that
//! the kernel cuts into datagrams (the way wireguard-go and the kernel's own WireGuard send);
//! a shorter datagram may end a run, as the kernel allows. The decision only (sans-I/O): the
//! caller's `send` gets each run when it is complete, in the order the datagrams came, so a
//! flow's packets keep their order.

use super::udp::Path;

/// Segments per run at most (the kernel's UDP_MAX_SEGMENTS is 64 on older kernels).
pub const MAX_SEGMENTS: usize = 64;
/// Bytes per run at most: one UDP payload (65,507 bytes over IPv4) with room to spare.
pub const MAX_RUN_BYTES: usize = 65_000;

/// One run: `count` datagrams of `segment` bytes (the last may be shorter) along `path`, back
/// to back.
#[derive(Debug, PartialEq, Eq)]
pub struct Run<'a> {
    pub path: Path,
    pub segment: usize,
    pub count: usize,
    pub bytes: &'a [u8],
}

/// Room after the last datagram of a run for one more to be written in place, and for what a
/// `Tunn` may write instead (a handshake initiation, 148 bytes).
const SLOT_SPARE: usize = 148;

#[derive(Debug, Default)]
pub struct SendRuns {
    /// Always `MAX_RUN_BYTES + SLOT_SPARE` long; the run is `bytes[..used]`.
    bytes: Vec<u8>,
    used: usize,
    path: Option<Path>,
    segment: usize,
    count: usize,
    /// A shorter datagram ended the run: nothing more may join it.
    closed: bool,
}

impl SendRuns {
    pub fn new() -> SendRuns {
        SendRuns { bytes: vec![0; MAX_RUN_BYTES + SLOT_SPARE], ..SendRuns::default() }
    }

    fn accepts(&self, path: Path, len: usize) -> bool {
        self.count > 0
            && !self.closed
            && self.path == Some(path)
            && len <= self.segment
            && self.count < MAX_SEGMENTS
            && self.used + len <= MAX_RUN_BYTES
    }

    /// Adds one datagram; a run it cannot join is handed to `send` first.
    pub fn push(&mut self, path: Path, datagram: &[u8], send: &mut impl FnMut(Run)) {
        self.push_in_place(path, datagram.len(), send, |slot| {
            slot[..datagram.len()].copy_from_slice(datagram);
            true
        });
    }

    /// Adds one datagram of `len` bytes that `write` puts in place (no copy: a `Tunn` seals
    /// straight into the run). `write` gets at least `len` bytes of room (and at least
    /// `SLOT_SPARE`) and says whether it wrote the datagram; when it did not, nothing is added.
    /// A run the datagram cannot join is handed to `send` first. Returns what `write` said.
    pub fn push_in_place(
        &mut self,
        path: Path,
        len: usize,
        send: &mut impl FnMut(Run),
        write: impl FnOnce(&mut [u8]) -> bool,
    ) -> bool {
        if !self.accepts(path, len) {
            self.flush(send);
            self.path = Some(path);
            self.segment = len;
        }
        let room = len.max(SLOT_SPARE);
        if self.bytes.len() < self.used + room {
            // Only a datagram bigger than a run (jumbo MTUs) gets here.
            self.bytes.resize(self.used + room, 0);
        }
        if !write(&mut self.bytes[self.used..self.used + room]) {
            return false;
        }
        self.used += len;
        self.count += 1;
        if len < self.segment {
            self.closed = true;
        }
        true
    }

    /// Hands the open run, if any, to `send`.
    pub fn flush(&mut self, send: &mut impl FnMut(Run)) {
        if let Some(path) = self.path.filter(|_| self.count > 0) {
            send(Run { path, segment: self.segment, count: self.count, bytes: &self.bytes[..self.used] });
        }
        self.used = 0;
        self.path = None;
        self.count = 0;
        self.closed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(pushes: &[(&str, usize)]) -> Vec<(String, usize, usize, usize)> {
        let mut runs = SendRuns::new();
        let mut sent = Vec::new();
        let mut send = |run: Run| {
            sent.push((run.path.remote.to_string(), run.segment, run.count, run.bytes.len()));
        };
        for (i, (to, len)) in pushes.iter().enumerate() {
            runs.push(Path::to(to.parse().unwrap()), &vec![i as u8; *len], &mut send);
        }
        runs.flush(&mut send);
        sent
    }

    const A: &str = "192.0.2.1:1";
    const B: &str = "192.0.2.2:2";

    #[test]
    fn same_size_to_the_same_endpoint_is_one_run_and_a_shorter_one_ends_it() {
        let sent = collect(&[(A, 1452), (A, 1452), (A, 1452), (A, 300), (A, 1452)]);
        assert_eq!(sent, [(A.into(), 1452, 4, 3 * 1452 + 300), (A.into(), 1452, 1, 1452)]);
    }

    #[test]
    fn another_endpoint_or_a_longer_datagram_starts_a_new_run_in_order() {
        let sent = collect(&[(A, 1452), (B, 1452), (A, 1452), (A, 148), (A, 1452), (A, 1500)]);
        let shape: Vec<(String, usize)> = sent.iter().map(|s| (s.0.clone(), s.2)).collect();
        assert_eq!(shape, [(A.into(), 1), (B.into(), 1), (A.into(), 2), (A.into(), 1), (A.into(), 1)]);
    }

    #[test]
    fn runs_keep_to_the_kernels_limits() {
        let sent = collect(&vec![(A, 1000); 70]);
        assert_eq!(sent.iter().map(|s| s.2).collect::<Vec<_>>(), [64, 6]);
        let sent = collect(&vec![(A, 9000); 10]);
        assert!(sent.iter().all(|s| s.3 <= MAX_RUN_BYTES), "{sent:?}");
        assert_eq!(sent.iter().map(|s| s.2).sum::<usize>(), 10);
    }

    #[test]
    fn the_bytes_are_the_datagrams_back_to_back() {
        let mut runs = SendRuns::new();
        let mut seen = Vec::new();
        let mut send = |run: Run| seen.extend_from_slice(run.bytes);
        runs.push(Path::to(A.parse().unwrap()), &[1, 1], &mut send);
        runs.push(Path::to(A.parse().unwrap()), &[2, 2], &mut send);
        runs.push(Path::to(A.parse().unwrap()), &[3], &mut send);
        runs.flush(&mut send);
        assert_eq!(seen, [1, 1, 2, 2, 3]);
    }
}
