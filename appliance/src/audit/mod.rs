//! The audit trail: who connected, when, from where, for how long, with how many bytes; what
//! each reload changed; what was refused; what `[siblings]` did. [`event`] is the vocabulary,
//! [`sessions`] turns the data plane's counters into session events (no I/O), [`query`] reads
//! records back for `bastion audit` (no I/O) from what [`read`] finds in a file or CloudWatch. A [`Recorder`] writes each record as one JSON
//! object on the log (and so to CloudWatch when `[log] cloudwatch_group` is set).

pub mod event;
pub mod query;
pub mod read;
pub mod sessions;

pub use event::{AuditEvent, Record};

/// Writes audit records for one bastion and interface.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub bastion: String,
    pub interface: String,
}

impl Recorder {
    pub fn record(&self, event: AuditEvent) {
        let time_ms = crate::log::unix_ms();
        let record = Record { time_ms, bastion: self.bastion.clone(), interface: self.interface.clone(), event };
        crate::log::write_audit(&serde_json::to_value(&record).unwrap_or_default());
    }
}
