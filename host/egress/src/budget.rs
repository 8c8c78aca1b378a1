//! Per-invocation egress caps: how many requests a plugin may make and how many bytes may
//! flow, so one invocation cannot turn the host into a bulk downloader or amplifier.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// The caps for one invocation (operator configuration, per plugin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EgressLimits {
    /// Maximum outbound requests.
    pub max_requests: u32,
    /// Maximum request body bytes, summed over all requests.
    pub max_request_bytes: u64,
    /// Maximum response body bytes, summed over all requests.
    pub max_response_bytes: u64,
    /// Time limit for each request, from send to the end of the response body.
    pub request_timeout: Duration,
}

impl Default for EgressLimits {
    fn default() -> Self {
        Self {
            max_requests: 64,
            max_request_bytes: 1 << 20,
            max_response_bytes: 16 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// Which cap was hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BudgetExceeded {
    /// Too many requests.
    #[error("outbound request limit of {0} per invocation reached")]
    Requests(u32),
    /// Too many request body bytes.
    #[error("outbound request body limit of {0} bytes per invocation reached")]
    RequestBytes(u64),
    /// Too many response body bytes.
    #[error("inbound response body limit of {0} bytes per invocation reached")]
    ResponseBytes(u64),
}

impl BudgetExceeded {
    /// A stable code for audit records.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Requests(_) => "request_limit",
            Self::RequestBytes(_) => "request_bytes_limit",
            Self::ResponseBytes(_) => "response_bytes_limit",
        }
    }
}

/// The running totals of one invocation. Shared (`Arc`) by all its concurrent requests;
/// counters are atomic so concurrent requests cannot both slip under a cap.
#[derive(Debug)]
pub struct EgressBudget {
    limits: EgressLimits,
    requests: AtomicU32,
    request_bytes: AtomicU64,
    response_bytes: AtomicU64,
}

impl EgressBudget {
    /// A fresh budget.
    pub fn new(limits: EgressLimits) -> Self {
        Self {
            limits,
            requests: AtomicU32::new(0),
            request_bytes: AtomicU64::new(0),
            response_bytes: AtomicU64::new(0),
        }
    }

    /// The configured limits.
    pub fn limits(&self) -> &EgressLimits {
        &self.limits
    }

    /// Per-request timeout.
    pub fn request_timeout(&self) -> Duration {
        self.limits.request_timeout
    }

    /// Counts one request; refuses it (without counting) when the cap is reached.
    pub fn begin_request(&self) -> Result<(), BudgetExceeded> {
        let max = self.limits.max_requests;
        self.requests
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map(drop)
            .map_err(|_| BudgetExceeded::Requests(max))
    }

    /// Counts request body bytes; refuses (without counting) when they would exceed the cap.
    pub fn add_request_bytes(&self, n: u64) -> Result<(), BudgetExceeded> {
        add_capped(&self.request_bytes, n, self.limits.max_request_bytes)
            .map_err(|()| BudgetExceeded::RequestBytes(self.limits.max_request_bytes))
    }

    /// Counts response body bytes; refuses (without counting) when they would exceed the cap.
    pub fn add_response_bytes(&self, n: u64) -> Result<(), BudgetExceeded> {
        add_capped(&self.response_bytes, n, self.limits.max_response_bytes)
            .map_err(|()| BudgetExceeded::ResponseBytes(self.limits.max_response_bytes))
    }

    /// Requests counted so far.
    pub fn requests(&self) -> u32 {
        self.requests.load(Ordering::Acquire)
    }

    /// Request body bytes counted so far.
    pub fn request_bytes(&self) -> u64 {
        self.request_bytes.load(Ordering::Acquire)
    }

    /// Response body bytes counted so far.
    pub fn response_bytes(&self) -> u64 {
        self.response_bytes.load(Ordering::Acquire)
    }
}

fn add_capped(counter: &AtomicU64, n: u64, max: u64) -> Result<(), ()> {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
            cur.checked_add(n).filter(|&total| total <= max)
        })
        .map(drop)
        .map_err(drop)
}
