//! Where `bastion audit` reads records from: a log file (the console capture, or `bastion run`'s
//! standard error; text or JSON lines), or a CloudWatch Logs group (`FilterLogEvents`, with the
//! operator's credentials and region as the AWS CLI finds them).

use std::io::BufRead;
use std::path::Path;

use super::query::record_of_line;
use super::Record;

/// Sessions can be long: records this much before `--since` are read too, so a session that
/// began before the window still shows where it began.
pub const LOOK_BACK_MS: i64 = 24 * 3600 * 1000;
/// Events read from CloudWatch at most.
const MAX_EVENTS: usize = 1_000_000;

/// Every audit record of the file (`-`: standard input); other lines are skipped.
pub fn from_file(path: &Path) -> Result<Vec<Record>, String> {
    let reader: Box<dyn BufRead> = if path == Path::new("-") {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Box::new(std::io::BufReader::new(file))
    };
    let mut records = Vec::new();
    for (number, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| format!("{}: line {}: {e}", path.display(), number + 1))?;
        if let Some(record) = record_of_line(&String::from_utf8_lossy(&line)) {
            records.push(record);
        }
    }
    Ok(records)
}

/// The audit records of `group` (only `bastion`'s stream when given) from `since -
/// LOOK_BACK_MS` to `until + LOOK_BACK_MS` (a session that began in the window ends after it).
/// Only events with the term `audit` are fetched (CloudWatch's filter pattern).
pub fn from_cloudwatch(
    group: &str,
    bastion: Option<&str>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
) -> Result<Vec<Record>, String> {
    let env = bastion_aws::Environment::from_vars(std::env::vars().collect::<Vec<(String, String)>>());
    let region = env.region().ok_or("no AWS region: set AWS_REGION (or a profile's region)")?;
    let client = bastion_aws::Client::new(env, region);
    let filter = bastion_aws::logs::Filter {
        group: group.to_string(),
        streams: bastion.map(|b| vec![b.to_string()]).unwrap_or_default(),
        start_ms: since_ms.map(|s| s.saturating_sub(LOOK_BACK_MS)),
        end_ms: until_ms.map(|u| u.saturating_add(LOOK_BACK_MS)),
        pattern: Some("audit".into()),
    };
    let events = client.filter_log_events(&filter, MAX_EVENTS).map_err(|e| e.to_string())?;
    if events.len() >= MAX_EVENTS {
        return Err(format!(
            "more than {MAX_EVENTS} audit events in that time: narrow it with --since/--until or --bastion"
        ));
    }
    Ok(events.iter().filter_map(|e| record_of_line(&e.message)).collect())
}
