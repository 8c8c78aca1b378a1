//! The concurrency limit and the `/ping` status derived from it.
//!
//! `time_of_last_update` changes only when the status changes: an always-fresh value would
//! look like continuous activity to AgentCore and keep sessions alive until their maximum
//! lifetime.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// `/ping` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Slots are free.
    Healthy,
    /// Every slot is busy.
    HealthyBusy,
}

impl Status {
    /// The AgentCore spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::HealthyBusy => "HealthyBusy",
        }
    }
}

/// Invocation slots.
pub struct Load {
    slots: Arc<Semaphore>,
    status: Mutex<(Status, u64)>,
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Load {
    /// `max` concurrent invocations.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(max)),
            status: Mutex::new((Status::Healthy, now_secs())),
        })
    }

    /// Takes a slot, or `None` when all are busy (never waits: a full server answers 503).
    pub fn try_acquire(self: &Arc<Self>) -> Option<LoadPermit> {
        let permit = Arc::clone(&self.slots).try_acquire_owned().ok()?;
        self.refresh();
        Some(LoadPermit { permit: Some(permit), load: Arc::clone(self) })
    }

    /// Current status and when it last changed (Unix seconds).
    pub fn status(&self) -> (Status, u64) {
        *self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn refresh(&self) {
        let mut s = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let now = if self.slots.available_permits() == 0 { Status::HealthyBusy } else { Status::Healthy };
        if s.0 != now {
            *s = (now, now_secs());
        }
    }
}

/// A held slot; released on drop.
pub struct LoadPermit {
    permit: Option<OwnedSemaphorePermit>,
    load: Arc<Load>,
}

impl Drop for LoadPermit {
    fn drop(&mut self) {
        drop(self.permit.take());
        self.load.refresh();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn status_flips_only_at_saturation() {
        let load = Load::new(2);
        assert_eq!(load.status().0, Status::Healthy);
        let a = load.try_acquire().unwrap();
        assert_eq!(load.status().0, Status::Healthy);
        let b = load.try_acquire().unwrap();
        assert_eq!(load.status().0, Status::HealthyBusy);
        assert!(load.try_acquire().is_none());
        drop(a);
        assert_eq!(load.status().0, Status::Healthy);
        drop(b);
        assert_eq!(load.status().0, Status::Healthy);
    }
}
