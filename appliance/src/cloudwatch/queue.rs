//! The bounded queue between the appliance's log lines and `PutLogEvents`, and the batches taken
//! from it. The decision only (sans-I/O): what fits in a batch (CloudWatch's limits: events,
//! bytes, a 24-hour span, time order), what is dropped when the queue is full (the newest:
//! what is queued keeps its order and nothing waits), and what a failed batch does (it goes back
//! to the front, within the same bound).

use std::collections::VecDeque;

use bastion_aws::logs::{self, LogEvent};

/// The queue's default bound: over a minute of a bastion logging 100 lines a second (about
/// 300 bytes each as JSON), and a fixed ceiling on the memory CloudWatch's absence can cost.
pub const DEFAULT_MAX_BYTES: usize = 2 * 1024 * 1024;
/// A batch's default size at most: a quarter of what the API takes, since a batch waits in
/// memory (with its request body) outside the queue's bound while CloudWatch does not answer.
pub const DEFAULT_BATCH_BYTES: usize = 256 * 1024;

#[derive(Debug)]
pub struct ShipQueue {
    events: VecDeque<LogEvent>,
    bytes: usize,
    max_bytes: usize,
    batch_bytes: usize,
    /// Events dropped because the queue was full, in all and since the last [`Self::take_dropped`].
    dropped_total: u64,
    dropped_since: u64,
}

impl ShipQueue {
    /// A queue of `max_bytes` at most whose batches hold `batch_bytes` at most (and never more
    /// than `PutLogEvents` takes).
    pub fn new(max_bytes: usize, batch_bytes: usize) -> ShipQueue {
        let batch_bytes = batch_bytes.min(logs::MAX_BATCH_BYTES);
        ShipQueue { events: VecDeque::new(), bytes: 0, max_bytes, batch_bytes, dropped_total: 0, dropped_since: 0 }
    }

    /// Queues one event (its message cut to CloudWatch's limit); false when it was dropped.
    pub fn push(&mut self, mut event: LogEvent) -> bool {
        if event.message.len() > logs::MAX_EVENT_BYTES {
            let mut cut = logs::MAX_EVENT_BYTES;
            while !event.message.is_char_boundary(cut) {
                cut -= 1;
            }
            event.message.truncate(cut);
        }
        let size = event.message.len() + logs::EVENT_OVERHEAD;
        if self.bytes + size > self.max_bytes {
            self.dropped_total += 1;
            self.dropped_since += 1;
            return false;
        }
        self.bytes += size;
        self.events.push_back(event);
        true
    }

    /// The next batch: the oldest events, as many as fit (at least one), in time order.
    pub fn take_batch(&mut self) -> Vec<LogEvent> {
        let mut batch: Vec<LogEvent> = Vec::new();
        let mut bytes = 0;
        let (mut first_ms, mut last_ms) = (i64::MAX, i64::MIN);
        while let Some(next) = self.events.front() {
            let size = next.message.len() + logs::EVENT_OVERHEAD;
            let span = last_ms.max(next.timestamp_ms) - first_ms.min(next.timestamp_ms);
            // The first event always goes (the cut keeps it within what the API takes).
            if batch.len() == logs::MAX_BATCH_EVENTS
                || (!batch.is_empty() && bytes + size > self.batch_bytes)
                || span > logs::MAX_BATCH_SPAN_MS
            {
                break;
            }
            bytes += size;
            self.bytes -= size;
            first_ms = first_ms.min(next.timestamp_ms);
            last_ms = last_ms.max(next.timestamp_ms);
            batch.push(self.events.pop_front().expect("front"));
        }
        // Threads log concurrently: a line may carry a time a millisecond before the previous one.
        batch.sort_by_key(|e| e.timestamp_ms);
        batch
    }

    /// A batch that could not be sent goes back to the front; what no longer fits is dropped
    /// (the oldest of it) and counted.
    pub fn put_back(&mut self, batch: Vec<LogEvent>) {
        for event in batch.into_iter().rev() {
            let size = event.message.len() + logs::EVENT_OVERHEAD;
            if self.bytes + size > self.max_bytes {
                self.dropped_total += 1;
                self.dropped_since += 1;
                continue;
            }
            self.bytes += size;
            self.events.push_front(event);
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn dropped_total(&self) -> u64 {
        self.dropped_total
    }

    /// Dropped since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        std::mem::take(&mut self.dropped_since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ms: i64, text: &str) -> LogEvent {
        LogEvent { timestamp_ms: ms, message: text.into() }
    }

    #[test]
    fn a_full_queue_drops_the_newest_and_counts_it() {
        let mut q = ShipQueue::new(3 * (10 + logs::EVENT_OVERHEAD), DEFAULT_BATCH_BYTES);
        for i in 0..5 {
            q.push(event(i, "0123456789"));
        }
        assert_eq!((q.len(), q.dropped_total()), (3, 2));
        assert_eq!(q.take_dropped(), 2);
        assert_eq!(q.take_dropped(), 0);
        let batch = q.take_batch();
        assert_eq!(batch.iter().map(|e| e.timestamp_ms).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(q.is_empty() && q.bytes() == 0);
    }

    #[test]
    fn batches_keep_to_cloudwatchs_limits_and_time_order() {
        let mut q = ShipQueue::new(64 * 1024 * 1024, logs::MAX_BATCH_BYTES);
        for i in 0..(logs::MAX_BATCH_EVENTS as i64 + 5) {
            q.push(event(1_000 - (i % 2), "x"));
        }
        let first = q.take_batch();
        assert_eq!(first.len(), logs::MAX_BATCH_EVENTS);
        assert!(first.windows(2).all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
        assert_eq!(q.take_batch().len(), 5);

        let big = "y".repeat(300_000);
        for i in 0..5 {
            q.push(event(i, &big));
        }
        let batch = q.take_batch();
        assert!(logs::batch_bytes(&batch) <= logs::MAX_BATCH_BYTES);
        assert_eq!(batch.len(), 4, "262,144 bytes each with the overhead after the cut: four fill 1 MiB");
        assert_eq!(batch[0].message.len(), logs::MAX_EVENT_BYTES);

        let mut small = ShipQueue::new(64 * 1024 * 1024, DEFAULT_BATCH_BYTES);
        for i in 0..3 {
            small.push(event(i, &big));
        }
        assert_eq!(small.take_batch().len(), 1, "one cut event fills a batch of the default bound");
        assert_eq!(small.take_batch().len(), 1);

        let mut q = ShipQueue::new(64 * 1024 * 1024, logs::MAX_BATCH_BYTES);
        q.push(event(0, "a"));
        q.push(event(logs::MAX_BATCH_SPAN_MS + 1, "b"));
        assert_eq!(q.take_batch().len(), 1, "a batch spans 24 hours at most");
        assert_eq!(q.take_batch().len(), 1);
    }

    #[test]
    fn a_failed_batch_goes_back_first_within_the_bound() {
        let mut q = ShipQueue::new(4 * (1 + logs::EVENT_OVERHEAD), DEFAULT_BATCH_BYTES);
        q.push(event(0, "a"));
        q.push(event(1, "b"));
        let batch = q.take_batch();
        q.push(event(2, "c"));
        q.push(event(3, "d"));
        q.push(event(4, "e"));
        q.put_back(batch);
        let order: Vec<String> = q.take_batch().into_iter().map(|e| e.message).collect();
        assert_eq!(order, ["b", "c", "d", "e"], "the oldest of the batch is what no longer fits");
        assert_eq!(q.dropped_total(), 1);
    }
}
