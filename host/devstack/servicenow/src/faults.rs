//! Fault switches for tests: make the next N Table API requests fail the ways a real
//! instance (or what stands in front of it) fails, so clients' retry and error paths can be
//! exercised without timing tricks.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One injected failure, answered instead of the real response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// 429 with `Retry-After: secs` and ServiceNow's rate-limit envelope.
    TooManyRequests { retry_after_secs: u64 },
    /// The given 5xx status with an error envelope.
    ServerError { status: u16 },
    /// 200 with `Content-Type: application/json` and a truncated JSON body.
    MalformedJson,
    /// 200 with an HTML page (what a hibernating developer instance answers).
    WrongContentType,
}

#[derive(Debug, Default)]
struct Queue {
    next: Vec<(Fault, u32)>,
    delay: Option<Duration>,
}

/// The fault switches of one sandbox (see [`ServiceNow::faults`](crate::ServiceNow::faults)).
#[derive(Debug, Default)]
pub struct Faults {
    queue: Mutex<Queue>,
    requests: AtomicU64,
}

impl Faults {
    fn push(&self, fault: Fault, times: u32) {
        if times == 0 {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        q.next.push((fault, times));
    }

    /// The next `times` requests get 429 with `Retry-After: retry_after_secs`.
    pub fn fail_with_429(&self, times: u32, retry_after_secs: u64) {
        self.push(Fault::TooManyRequests { retry_after_secs }, times);
    }

    /// The next `times` requests get `status` (meant for 500, 502, 503, 504).
    pub fn fail_with_status(&self, times: u32, status: u16) {
        self.push(Fault::ServerError { status }, times);
    }

    /// The next `times` requests get 200 with a truncated JSON body.
    pub fn malformed_json(&self, times: u32) {
        self.push(Fault::MalformedJson, times);
    }

    /// The next `times` requests get 200 with an HTML body and `Content-Type: text/html`.
    pub fn wrong_content_type(&self, times: u32) {
        self.push(Fault::WrongContentType, times);
    }

    /// Every request waits `delay` before it is handled (`None` turns it off).
    pub fn set_delay(&self, delay: Option<Duration>) {
        let mut q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        q.delay = delay;
    }

    /// Clears every queued fault and the delay.
    pub fn clear(&self) {
        let mut q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *q = Queue::default();
    }

    /// How many Table API requests arrived (every one, failed or not), since start.
    pub fn request_count(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// Counts one request and takes the fault (and delay) it gets, faults in FIFO order.
    pub(crate) fn on_request(&self) -> (Option<Fault>, Option<Duration>) {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let mut q = self.queue.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let delay = q.delay;
        let fault = match q.next.first_mut() {
            Some((fault, remaining)) => {
                let fault = *fault;
                *remaining -= 1;
                if *remaining == 0 {
                    q.next.remove(0);
                }
                Some(fault)
            }
            None => None,
        };
        (fault, delay)
    }
}
