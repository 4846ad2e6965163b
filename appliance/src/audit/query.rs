//! `bastion audit`: audit records read back (from a console capture, a JSON log, or CloudWatch
//! Logs messages), filtered by peer, bastion and time, and put together as sessions: who was
//! connected between two times, from which addresses, with how many bytes. No I/O: lines in,
//! rows out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::event::{AuditEvent, Record};

/// The audit record a log line carries, if it carries one: `… bastion: audit {json}` (text
/// format) or `{"time":…, "audit": {json}}` (JSON format, and what CloudWatch holds).
pub fn record_of_line(line: &str) -> Option<Record> {
    let line = line.trim();
    if let Some(at) = line.find("bastion: audit {") {
        return serde_json::from_str(&line[at + "bastion: audit ".len()..]).ok();
    }
    if line.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        return serde_json::from_value(value.get("audit")?.clone()).ok();
    }
    None
}

/// What to keep.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    pub peer: Option<String>,
    pub bastion: Option<String>,
    /// Unix ms: sessions (and events) that overlap [since, until].
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

impl Selection {
    fn peer_matches(&self, record: &Record) -> bool {
        self.peer.as_ref().is_none_or(|p| record.event.peer() == Some(p.as_str()))
            && self.bastion.as_ref().is_none_or(|b| &record.bastion == b)
    }

    fn overlaps(&self, from_ms: i64, to_ms: Option<i64>) -> bool {
        self.until_ms.is_none_or(|until| from_ms <= until)
            && self.since_ms.is_none_or(|since| to_ms.is_none_or(|to| to >= since))
    }

    /// The records that match, in time order.
    pub fn events(&self, records: &[Record]) -> Vec<Record> {
        let mut kept: Vec<Record> = records
            .iter()
            .filter(|r| self.peer_matches(r) && self.overlaps(r.time_ms, Some(r.time_ms)))
            .cloned()
            .collect();
        kept.sort_by_key(|r| r.time_ms);
        kept
    }
}

/// One session as the table shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    pub peer: String,
    pub key: String,
    pub bastion: String,
    /// Every endpoint the session was seen at, first first.
    pub endpoints: Vec<String>,
    pub started_ms: i64,
    /// None: still open when the records end.
    pub ended_ms: Option<i64>,
    pub reason: Option<String>,
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
}

impl SessionRow {
    /// A session as its first record shows it: not ended yet.
    fn begun(bastion: &str, peer: &str, key: &str, endpoint: &Option<String>, started_ms: i64) -> SessionRow {
        SessionRow {
            peer: peer.to_string(),
            key: key.to_string(),
            bastion: bastion.to_string(),
            endpoints: endpoint.iter().cloned().collect(),
            started_ms,
            ended_ms: None,
            reason: None,
            rx_bytes: None,
            tx_bytes: None,
        }
    }
}

/// Sessions put together from their start, endpoint and end events, that `selection` keeps.
pub fn sessions(records: &[Record], selection: &Selection) -> Vec<SessionRow> {
    let mut ordered: Vec<&Record> = records.iter().filter(|r| selection.peer_matches(r)).collect();
    ordered.sort_by_key(|r| r.time_ms);
    let mut open: BTreeMap<(String, String), SessionRow> = BTreeMap::new();
    let mut rows = Vec::new();
    for record in ordered {
        match &record.event {
            AuditEvent::SessionStarted { peer, key, endpoint, started_ms, .. } => {
                let row = SessionRow::begun(&record.bastion, peer, key, endpoint, *started_ms);
                // A start while one is open: the first never got its end (the bastion crashed, or
                // its records were lost). It ended at the latest when this one began.
                if let Some(mut unended) = open.insert((record.bastion.clone(), key.clone()), row) {
                    unended.ended_ms = Some(*started_ms);
                    unended.reason = Some("unknown".into());
                    rows.push(unended);
                }
            }
            AuditEvent::EndpointChanged { key, to, .. } => {
                if let Some(row) = open.get_mut(&(record.bastion.clone(), key.clone())) {
                    if !row.endpoints.contains(to) {
                        row.endpoints.push(to.clone());
                    }
                }
            }
            AuditEvent::SessionEnded {
                peer, key, endpoint, reason, started_ms, ended_ms, rx_bytes, tx_bytes, ..
            } => {
                // An end without its start (the records begin later): the end says when it began.
                let mut row = open
                    .remove(&(record.bastion.clone(), key.clone()))
                    .unwrap_or_else(|| SessionRow::begun(&record.bastion, peer, key, endpoint, *started_ms));
                row.ended_ms = Some(*ended_ms);
                row.reason = serde_json::to_value(reason).ok().and_then(|v| v.as_str().map(str::to_string));
                row.rx_bytes = Some(*rx_bytes);
                row.tx_bytes = Some(*tx_bytes);
                rows.push(row);
            }
            _ => {}
        }
    }
    rows.extend(open.into_values());
    rows.retain(|row| selection.overlaps(row.started_ms, row.ended_ms));
    rows.sort_by_key(|row| row.started_ms);
    rows
}

fn time(ms: i64) -> String {
    bastion_aws::time::UtcTime(ms.div_euclid(1000)).rfc3339()
}

/// The rows as a table for a terminal.
pub fn render_table(rows: &[SessionRow]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<16} {:<20} {:<22} {:<20} {:<20} {:>9} {:>12} {:>12}  END",
        "PEER", "BASTION", "ENDPOINT", "STARTED", "ENDED", "SECONDS", "RX BYTES", "TX BYTES"
    );
    for row in rows {
        let ended = row.ended_ms.map(time).unwrap_or_else(|| "(open)".into());
        let seconds = row.ended_ms.map(|e| format!("{:.1}", (e - row.started_ms) as f64 / 1000.0)).unwrap_or_default();
        let bytes = |b: Option<u64>| b.map(|b| b.to_string()).unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<16} {:<20} {:<22} {:<20} {:<20} {:>9} {:>12} {:>12}  {}",
            row.peer,
            row.bastion,
            row.endpoints.join(" "),
            time(row.started_ms),
            ended,
            seconds,
            bytes(row.rx_bytes),
            bytes(row.tx_bytes),
            row.reason.as_deref().unwrap_or("")
        );
    }
    out
}

/// `2026-12-05T02:00:00Z` (or with a fraction / `+00:00`), or Unix seconds: Unix ms.
pub fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(seconds) = text.parse::<i64>() {
        return seconds.checked_mul(1000).ok_or_else(|| format!("{text:?}: too far in time"));
    }
    bastion_aws::time::UtcTime::parse_rfc3339(text)
        .map(|t| t.0 * 1000)
        .ok_or_else(|| format!("{text:?}: expected a UTC time like 2026-12-05T02:00:00Z, or Unix seconds"))
}

#[cfg(test)]
mod tests {
    use super::super::event::{Began, Ended};
    use super::*;

    fn record(time_ms: i64, bastion: &str, event: AuditEvent) -> Record {
        Record { time_ms, bastion: bastion.into(), interface: "wg0".into(), event }
    }

    fn start(peer: &str, at: i64, endpoint: &str) -> AuditEvent {
        AuditEvent::SessionStarted {
            peer: peer.into(),
            key: format!("sha256:{peer}"),
            endpoint: Some(endpoint.into()),
            began: Began::Handshake,
            started_ms: at,
        }
    }

    fn end(peer: &str, started: i64, at: i64, rx: u64) -> AuditEvent {
        AuditEvent::SessionEnded {
            peer: peer.into(),
            key: format!("sha256:{peer}"),
            endpoint: None,
            reason: Ended::Idle,
            started_ms: started,
            ended_ms: at,
            duration_seconds: (at - started) as f64 / 1000.0,
            rx_bytes: rx,
            tx_bytes: rx / 2,
        }
    }

    #[test]
    fn lines_of_either_format_carry_their_record() {
        let r = record(5, "i-1", start("alice", 5, "192.0.2.1:1"));
        let json = r.to_json();
        assert_eq!(record_of_line(&format!("[   12.000000] bastion: audit {json}")), Some(r.clone()));
        assert_eq!(record_of_line(&format!(r#"{{"time":"x","uptime":1.0,"audit":{json}}}"#)), Some(r));
        assert_eq!(record_of_line("[   12.000000] bastion: tunnel: wg0 up"), None);
        assert_eq!(record_of_line(r#"{"time":"x","message":"audit {"}"#), None);
        assert_eq!(record_of_line("bastion: audit {not json"), None);
    }

    #[test]
    fn who_was_connected_in_a_window() {
        let records = vec![
            record(1_000, "i-1", start("alice", 1_000, "192.0.2.1:1")),
            record(
                2_000,
                "i-1",
                AuditEvent::EndpointChanged {
                    peer: "alice".into(),
                    key: "sha256:alice".into(),
                    from: Some("192.0.2.1:1".into()),
                    to: "198.51.100.2:9".into(),
                },
            ),
            record(3_000, "i-2", start("bob", 3_000, "192.0.2.3:3")),
            record(9_000, "i-1", end("alice", 1_000, 8_000, 1_000)),
            record(20_000, "i-2", start("carol", 20_000, "192.0.2.4:4")),
        ];
        let window = Selection { since_ms: Some(4_000), until_ms: Some(10_000), ..Selection::default() };
        let rows = sessions(&records, &window);
        let who: Vec<&str> = rows.iter().map(|r| r.peer.as_str()).collect();
        assert_eq!(who, ["alice", "bob"], "carol started after the window");
        assert_eq!(rows[0].endpoints, ["192.0.2.1:1", "198.51.100.2:9"]);
        assert_eq!((rows[0].ended_ms, rows[0].rx_bytes), (Some(8_000), Some(1_000)));
        assert_eq!(rows[1].ended_ms, None, "bob is still connected");
        // A second start without an end closes the first at the second's start.
        let mut restarted = records.clone();
        restarted.push(record(30_000, "i-2", start("bob", 30_000, "192.0.2.3:3")));
        let bob: Vec<SessionRow> =
            sessions(&restarted, &Selection { peer: Some("bob".into()), ..Selection::default() });
        assert_eq!(bob.len(), 2);
        assert_eq!((bob[0].ended_ms, bob[0].reason.as_deref()), (Some(30_000), Some("unknown")));
        assert_eq!(bob[1].ended_ms, None);
        let only_bob = Selection { peer: Some("bob".into()), ..Selection::default() };
        assert_eq!(sessions(&records, &only_bob).len(), 1);
        let on_i1 = Selection { bastion: Some("i-1".into()), ..Selection::default() };
        assert_eq!(sessions(&records, &on_i1).len(), 1);
        let table = render_table(&rows);
        assert!(table.contains("alice") && table.contains("(open)") && table.contains("7.0"), "{table}");
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("1700000000").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_time("2023-11-14T22:13:20Z").unwrap(), 1_700_000_000_000);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time(&i64::MAX.to_string()).is_err());
    }
}
