//! CloudWatch Logs (JSON 1.1: `POST /` with `X-Amz-Target: Logs_20140328.<Operation>`): create
//! a log stream, put a batch of events in it, and filter events back (for `bastion audit`).
//! The limits of `PutLogEvents` are [`MAX_BATCH_EVENTS`], [`MAX_BATCH_BYTES`] (each event counts
//! its UTF-8 message plus [`EVENT_OVERHEAD`]) and [`MAX_BATCH_SPAN_MS`]; events must be in
//! time order. Batching is the caller's (the appliance's `cloudwatch::queue`). `CreateLogStream`
//! and `PutLogEvents` retry once only: their caller keeps the batch and backs off itself.

use crate::client::{Call, Client};
use crate::error::AwsError;

/// Events per `PutLogEvents` call at most.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// Bytes per call at most: the sum of the messages' UTF-8 bytes plus 26 per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What each event adds to the batch size.
pub const EVENT_OVERHEAD: usize = 26;
/// One message at most (bytes); longer ones are cut by the caller.
pub const MAX_EVENT_BYTES: usize = 256 * 1024 - EVENT_OVERHEAD;
/// The events of one call may span 24 hours at most.
pub const MAX_BATCH_SPAN_MS: i64 = 24 * 3600 * 1000;

/// One log event: milliseconds since the Unix epoch, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    pub timestamp_ms: i64,
    pub message: String,
}

/// One event read back, with the stream it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundEvent {
    pub stream: String,
    pub timestamp_ms: i64,
    pub message: String,
}

/// What `FilterLogEvents` asks for.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub group: String,
    /// Only these streams (instance ids); empty: all.
    pub streams: Vec<String>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// A CloudWatch filter pattern (`{ $.audit = * }`), or none.
    pub pattern: Option<String>,
}

fn call(operation: &str, body: serde_json::Value) -> Call {
    Call::json("logs", "Logs_20140328", operation, body.to_string().into_bytes())
}

/// A call of the shipper's: one retry at most (it keeps the batch and backs off itself).
fn shipping_call(operation: &str, body: Vec<u8>) -> Call {
    let mut call = Call::json("logs", "Logs_20140328", operation, body);
    call.retry = crate::retry::RetryPolicy::ONCE_MORE;
    call
}

/// The `PutLogEvents` call, its body written straight from the events (no JSON tree in
/// between: a batch can be a megabyte, and it waits in memory while CloudWatch does not answer).
fn put_call(group: &str, stream: &str, events: &[LogEvent]) -> Call {
    #[derive(serde::Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        log_group_name: &'a str,
        log_stream_name: &'a str,
        log_events: Vec<Event<'a>>,
    }
    #[derive(serde::Serialize)]
    struct Event<'a> {
        timestamp: i64,
        message: &'a str,
    }
    let body = Body {
        log_group_name: group,
        log_stream_name: stream,
        log_events: events.iter().map(|e| Event { timestamp: e.timestamp_ms, message: &e.message }).collect(),
    };
    shipping_call("PutLogEvents", serde_json::to_vec(&body).unwrap_or_default())
}

fn bad(action: &str, why: impl Into<String>) -> AwsError {
    AwsError::BadAnswer { action: action.into(), why: why.into() }
}

/// The size `events` count for against [`MAX_BATCH_BYTES`].
pub fn batch_bytes<'a>(events: impl IntoIterator<Item = &'a LogEvent>) -> usize {
    events.into_iter().map(|e| e.message.len() + EVENT_OVERHEAD).sum()
}

/// Why a `PutLogEvents` answer refused some events (too old, too new, expired), if it did.
pub fn parse_put_answer(text: &str) -> Result<Option<String>, AwsError> {
    let action = "logs:PutLogEvents";
    if text.trim().is_empty() {
        return Ok(None);
    }
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(action, format!("not JSON: {e}")))?;
    Ok(json.get("rejectedLogEventsInfo").filter(|r| r.is_object()).map(|r| r.to_string()))
}

/// One page of `FilterLogEvents`: the events and the next page's token.
pub fn parse_filter_page(text: &str) -> Result<(Vec<FoundEvent>, Option<String>), AwsError> {
    let action = "logs:FilterLogEvents";
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| bad(action, format!("not JSON: {e}")))?;
    let list = json.get("events").and_then(|e| e.as_array()).ok_or_else(|| bad(action, "no events list"))?;
    let events = list
        .iter()
        .map(|e| {
            Ok(FoundEvent {
                stream: e.get("logStreamName").and_then(|s| s.as_str()).unwrap_or_default().to_string(),
                timestamp_ms: e
                    .get("timestamp")
                    .and_then(|t| t.as_i64())
                    .ok_or_else(|| bad(action, "an event without timestamp"))?,
                message: e
                    .get("message")
                    .and_then(|m| m.as_str())
                    .ok_or_else(|| bad(action, "an event without message"))?
                    .to_string(),
            })
        })
        .collect::<Result<Vec<_>, AwsError>>()?;
    let next = json.get("nextToken").and_then(|t| t.as_str()).filter(|t| !t.is_empty()).map(str::to_string);
    Ok((events, next))
}

impl Client {
    /// `CreateLogStream`; a stream that exists already is fine.
    pub fn create_log_stream(&self, group: &str, stream: &str) -> Result<(), AwsError> {
        let body = serde_json::json!({"logGroupName": group, "logStreamName": stream}).to_string().into_bytes();
        match self.call(&shipping_call("CreateLogStream", body)) {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `PutLogEvents` of one batch (in time order, within the limits above); what the service
    /// refused, if anything.
    pub fn put_log_events(&self, group: &str, stream: &str, events: &[LogEvent]) -> Result<Option<String>, AwsError> {
        let answer = self.call(&put_call(group, stream, events))?;
        parse_put_answer(&answer.text())
    }

    /// Every event `filter` matches, in time order, at most `limit`.
    pub fn filter_log_events(&self, filter: &Filter, limit: usize) -> Result<Vec<FoundEvent>, AwsError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut body = serde_json::json!({"logGroupName": filter.group, "interleaved": true});
            if !filter.streams.is_empty() {
                body["logStreamNames"] = serde_json::json!(filter.streams);
            }
            if let Some(start) = filter.start_ms {
                body["startTime"] = start.into();
            }
            if let Some(end) = filter.end_ms {
                body["endTime"] = end.into();
            }
            if let Some(pattern) = &filter.pattern {
                body["filterPattern"] = pattern.clone().into();
            }
            if let Some(t) = &token {
                body["nextToken"] = t.clone().into();
            }
            let (events, next) = parse_filter_page(&self.call(&call("FilterLogEvents", body))?.text())?;
            all.extend(events);
            match next {
                Some(next) if all.len() < limit && Some(&next) != token.as_ref() => token = Some(next),
                _ => break,
            }
        }
        all.truncate(limit);
        all.sort_by_key(|e| e.timestamp_ms);
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_or_refused() {
        assert_eq!(parse_put_answer("{}").unwrap(), None);
        assert_eq!(parse_put_answer("").unwrap(), None);
        assert!(parse_put_answer(r#"{"rejectedLogEventsInfo":{"tooOldLogEventEndIndex":2}}"#).unwrap().is_some());
        assert!(parse_put_answer("<html>").is_err());
        let page = r#"{"events":[{"logStreamName":"i-1","timestamp":5,"message":"m"}],"nextToken":"t"}"#;
        let (events, next) = parse_filter_page(page).unwrap();
        assert_eq!(events, [FoundEvent { stream: "i-1".into(), timestamp_ms: 5, message: "m".into() }]);
        assert_eq!(next.as_deref(), Some("t"));
        assert!(parse_filter_page(r#"{"events":[{"timestamp":5}]}"#).is_err());
        assert!(parse_filter_page("[]").is_err());
    }

    #[test]
    fn the_put_body_is_what_the_api_reference_shows() {
        let events = [LogEvent { timestamp_ms: 5, message: "a \"quoted\" line".into() }];
        let body: serde_json::Value = serde_json::from_slice(&put_call("g", "s", &events).body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"logGroupName": "g", "logStreamName": "s", "logEvents": [{"timestamp": 5, "message": "a \"quoted\" line"}]})
        );
    }

    #[test]
    fn batch_size_counts_the_overhead() {
        let e = LogEvent { timestamp_ms: 0, message: "abc".into() };
        assert_eq!(batch_bytes([&e, &e]), 2 * (3 + EVENT_OVERHEAD));
    }
}
