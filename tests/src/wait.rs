//! Bounded waiting: every wait in the tests has a deadline and, when it passes, says what it
//! was waiting for and what it saw last.

use std::time::{Duration, Instant};

/// Calls `attempt` every `POLL` until it returns `Ok`, or until `timeout` has passed; then the
/// error names `what` and carries the last attempt's error (which should show what was seen).
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(last) => {
                if Instant::now() >= deadline {
                    return Err(format!(
                        "timed out after {:.1} s waiting for {what}; last seen:\n{last}",
                        timeout.as_secs_f64()
                    ));
                }
            }
        }
        std::thread::sleep(POLL);
    }
}

/// How often [`wait_until`] retries: short against the timeouts used (seconds), long enough not
/// to busy the two cores the tests share.
pub const POLL: Duration = Duration::from_millis(50);
