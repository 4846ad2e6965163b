//! Every log line off the box: `[log] cloudwatch_group` ships the appliance's lines (as JSON,
//! audit records included) and an Embedded Metric Format record a minute ([`emf`]) to
//! CloudWatch Logs, stream = the instance id. The log group and its retention are the stack's;
//! the appliance creates only its stream.
//!
//! The data plane never waits for CloudWatch: a line is pushed into a bounded in-memory queue
//! ([`queue`], a mutex held for microseconds) and one thread ships batches every
//! [`FLUSH_EVERY`]. When CloudWatch is unreachable or throttles, the batch goes back to the
//! queue and the thread backs off (1 s doubling to 60 s); when the queue is full, the newest
//! lines are dropped and counted (`AuditEventsDropped` in the next metric record, and a line
//! once a minute).

pub mod emf;
pub mod queue;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bastion_aws::logs::LogEvent;
use bastion_aws::Client;

use crate::init::backoff::Backoff;
use crate::log;
use queue::ShipQueue;

/// How often a batch goes out (sooner when the queue holds a full batch's worth).
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);
/// How long the service's stop waits for the last batch (and for a request under way).
const LAST_FLUSH: Duration = Duration::from_secs(3);
/// Each request's bound: a batch does not wait longer for an endpoint that does not answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one line about failing or dropping this often.
const COMPLAINT_EVERY: Duration = Duration::from_secs(60);

/// Where lines go: the group and this bastion's stream in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub group: String,
    pub stream: String,
}

/// A running shipper; [`Shipper::stop`] sends what is queued (for up to 3 s) and ends it.
pub struct Shipper {
    queue: Arc<Mutex<ShipQueue>>,
    stopping: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Shipper {
    pub fn start(client: Client, destination: Destination, max_bytes: usize, batch_bytes: usize) -> Shipper {
        let queue = Arc::new(Mutex::new(ShipQueue::new(max_bytes, batch_bytes)));
        let stopping = Arc::new(AtomicBool::new(false));
        let thread = {
            let (queue, stopping) = (queue.clone(), stopping.clone());
            std::thread::Builder::new()
                .name("cloudwatch".into())
                .spawn(move || Loop::new(client, destination, queue).run(&stopping))
                .ok()
        };
        Shipper { queue, stopping, thread: Mutex::new(thread) }
    }

    /// Queues one line (never blocks on the network).
    pub fn push(&self, timestamp_ms: i64, message: &str) {
        let event = LogEvent { timestamp_ms, message: message.to_string() };
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).push(event);
    }

    /// Events dropped since the last call (for the metric record).
    pub fn take_dropped(&self) -> u64 {
        self.queue.lock().unwrap_or_else(|e| e.into_inner()).take_dropped()
    }

    /// Asks the thread to send what is queued and end, and waits for that at most
    /// [`LAST_FLUSH`] and one request; a thread still blocked on the network then is left to
    /// finish on its own (the process is ending). Works through any `Arc` of the shipper.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let Some(thread) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        thread.thread().unpark();
        let started = Instant::now();
        let deadline = started + LAST_FLUSH + REQUEST_TIMEOUT;
        while !thread.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        if thread.is_finished() {
            let _ = thread.join();
        } else {
            log!(
                "cloudwatch: the last batch is still on its way after {} s; not waiting for it",
                started.elapsed().as_secs()
            );
        }
    }
}

struct Loop {
    client: Client,
    destination: Destination,
    queue: Arc<Mutex<ShipQueue>>,
    stream_ready: bool,
    backoff: Backoff,
    next_send: Instant,
    last_complaint: Option<Instant>,
    failures_since_complaint: u64,
    shipped: u64,
}

impl Loop {
    fn new(client: Client, destination: Destination, queue: Arc<Mutex<ShipQueue>>) -> Loop {
        Loop {
            client,
            destination,
            queue,
            stream_ready: false,
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60), Duration::MAX),
            next_send: Instant::now() + FLUSH_EVERY,
            last_complaint: None,
            failures_since_complaint: 0,
            shipped: 0,
        }
    }

    fn run(mut self, stopping: &AtomicBool) {
        log!(
            "cloudwatch: shipping log lines to group {} stream {} every {} s",
            self.destination.group,
            self.destination.stream,
            FLUSH_EVERY.as_secs()
        );
        while !stopping.load(Ordering::Relaxed) {
            std::thread::park_timeout(Duration::from_millis(250));
            let full =
                self.queue.lock().unwrap_or_else(|e| e.into_inner()).bytes() >= bastion_aws::logs::MAX_BATCH_BYTES;
            if Instant::now() >= self.next_send || full {
                self.send_one_batch();
            }
        }
        let deadline = Instant::now() + LAST_FLUSH;
        while Instant::now() < deadline && !self.queue.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            if !self.send_one_batch() {
                break;
            }
        }
    }

    /// Sends the oldest batch; false when it failed (it is back in the queue).
    fn send_one_batch(&mut self) -> bool {
        let batch = self.queue.lock().unwrap_or_else(|e| e.into_inner()).take_batch();
        if batch.is_empty() {
            self.next_send = Instant::now() + FLUSH_EVERY;
            return true;
        }
        match self.put(&batch) {
            Ok(()) => {
                self.shipped += batch.len() as u64;
                self.backoff.reset();
                self.next_send = Instant::now() + FLUSH_EVERY;
                if self.failures_since_complaint > 0 {
                    log!("cloudwatch: shipping again after {} failed attempt(s)", self.failures_since_complaint);
                    self.failures_since_complaint = 0;
                }
                true
            }
            Err(why) => {
                let count = batch.len();
                let delay = self.backoff.after_failure(Duration::ZERO);
                self.next_send = Instant::now() + delay;
                let (queued, dropped) = {
                    let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    queue.put_back(batch);
                    (queue.len(), queue.dropped_total())
                };
                self.failures_since_complaint += 1;
                if self.last_complaint.is_none_or(|at| at.elapsed() >= COMPLAINT_EVERY) {
                    self.last_complaint = Some(Instant::now());
                    log!(
                        "cloudwatch: PutLogEvents of {count} event(s) failed ({why}); {queued} queued, {dropped} dropped \
                         in all (queue full); retrying in {} s; logged at most once a minute",
                        delay.as_secs()
                    );
                }
                false
            }
        }
    }

    fn put(&mut self, batch: &[LogEvent]) -> Result<(), String> {
        let (group, stream) = (&self.destination.group, &self.destination.stream);
        if !self.stream_ready {
            self.client.create_log_stream(group, stream).map_err(|e| e.to_string())?;
            self.stream_ready = true;
        }
        match self.client.put_log_events(group, stream, batch) {
            Ok(None) => Ok(()),
            Ok(Some(rejected)) => {
                // Too old or too new for CloudWatch: sending them again would not help.
                log!("cloudwatch: CloudWatch refused part of a batch: {rejected}");
                Ok(())
            }
            Err(e) if e.code() == Some("ResourceNotFoundException") => {
                self.stream_ready = false;
                Err(format!("{e}; the stream will be created again"))
            }
            Err(e) => Err(e.to_string()),
        }
    }
}
