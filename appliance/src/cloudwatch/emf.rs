//! CloudWatch metrics without a scraper: an Embedded Metric Format record (a JSON log event
//! with an `_aws` member) that CloudWatch Logs turns into metrics in namespace [`NAMESPACE`],
//! once with the dimension `LogGroup` (the fleet: alarms on "any bastion") and once with
//! `LogGroup` + `InstanceId` (each bastion). The record only (sans-I/O); the shipper queues it.
//! Format: <https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/CloudWatch_Embedded_Metric_Format_Specification.html>

use serde_json::{json, Map, Value};

pub const NAMESPACE: &str = "Bastion";

/// One period's figures of one bastion. Gauges are "now"; the counts are what happened in the
/// period (differences of the running totals).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    /// 1 when health answers 200.
    pub healthy: u64,
    pub live_sessions: u64,
    pub handshakes: u64,
    pub failover_handshakes: u64,
    pub dropped_datagrams: u64,
    /// 1 when the last read of the config source failed.
    pub config_source_failing: u64,
    /// 1 when a reload is waiting for a restart.
    pub restart_pending: u64,
    pub audit_events_dropped: u64,
}

impl Figures {
    fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("Healthy", self.healthy),
            ("LiveSessions", self.live_sessions),
            ("Handshakes", self.handshakes),
            ("FailoverHandshakes", self.failover_handshakes),
            ("DroppedDatagrams", self.dropped_datagrams),
            ("ConfigSourceFailing", self.config_source_failing),
            ("RestartPending", self.restart_pending),
            ("AuditEventsDropped", self.audit_events_dropped),
        ]
    }
}

/// The record for `figures` at `time_ms`, as one log event's text.
pub fn record(time_ms: i64, log_group: &str, instance_id: &str, figures: &Figures) -> String {
    let named = figures.named();
    let metrics: Vec<Value> = named.iter().map(|(name, _)| json!({"Name": name, "Unit": "Count"})).collect();
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": time_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [["LogGroup"], ["LogGroup", "InstanceId"]],
                "Metrics": metrics,
            }],
        }),
    );
    root.insert("LogGroup".into(), log_group.into());
    root.insert("InstanceId".into(), instance_id.into());
    for (name, value) in named {
        root.insert(name.into(), value.into());
    }
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_named_has_a_value_and_every_dimension_a_member() {
        let text = record(
            1_700_000_000_000,
            "bastion-logs",
            "i-0abc",
            &Figures { healthy: 1, live_sessions: 3, ..Figures::default() },
        );
        let v: Value = serde_json::from_str(&text).unwrap();
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], NAMESPACE);
        for name in directive["Metrics"].as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()) {
            assert!(v[name].is_u64(), "{name} has no value in {text}");
        }
        for set in directive["Dimensions"].as_array().unwrap() {
            for dimension in set.as_array().unwrap() {
                assert!(v[dimension.as_str().unwrap()].is_string(), "{dimension} in {text}");
            }
        }
        assert_eq!((v["Healthy"].as_u64(), v["LiveSessions"].as_u64()), (Some(1), Some(3)));
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
    }
}
