//! [`ModelBudget`]: how many model calls and tokens one invocation may use.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::ModelError;
use crate::types::Usage;

/// The per-invocation model budget and its counters. Create one per invocation (it is cheap)
/// and share it by reference; the counters are atomics so concurrent calls from one guest
/// cannot race past the limit.
#[derive(Debug)]
pub struct ModelBudget {
    max_calls: u32,
    max_tokens: u64,
    calls: AtomicU32,
    input_tokens: AtomicU64,
    output_tokens: AtomicU64,
}

/// What an invocation has used so far, for its audit record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetUsage {
    /// Model calls started (failed ones included: a guest looping on errors still stops).
    pub calls: u32,
    /// Input tokens reported by the provider.
    pub input_tokens: u64,
    /// Output tokens reported by the provider.
    pub output_tokens: u64,
}

impl BudgetUsage {
    /// Input plus output tokens: what `max_tokens` limits.
    pub fn tokens(&self) -> u64 {
        self.input_tokens + self.output_tokens
    }
}

impl ModelBudget {
    /// A fresh budget allowing `max_calls` calls and `max_tokens` input+output tokens.
    pub fn new(max_calls: u32, max_tokens: u64) -> Self {
        Self {
            max_calls,
            max_tokens,
            calls: AtomicU32::new(0),
            input_tokens: AtomicU64::new(0),
            output_tokens: AtomicU64::new(0),
        }
    }

    /// Charges one call, or fails with `budget-exceeded` when the calls or tokens are used up.
    /// Call it before every provider call.
    pub fn check_call(&self) -> Result<(), ModelError> {
        let used = self.used();
        if used.tokens() >= self.max_tokens {
            return Err(ModelError::budget(format!(
                "model token budget of {} used up ({} tokens)",
                self.max_tokens,
                used.tokens()
            )));
        }
        // fetch_update so two concurrent calls cannot both take the last slot.
        self.calls
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| (c < self.max_calls).then_some(c + 1))
            .map(|_| ())
            .map_err(|_| ModelError::budget(format!("model call budget of {} calls used up", self.max_calls)))
    }

    /// Adds a call's usage to the counters.
    pub fn record(&self, usage: &Usage) {
        self.input_tokens.fetch_add(u64::from(usage.input_tokens), Ordering::SeqCst);
        self.output_tokens.fetch_add(u64::from(usage.output_tokens), Ordering::SeqCst);
    }

    /// Tokens still available, so a caller can cap `max_tokens` of the next request.
    pub fn remaining_tokens(&self) -> u64 {
        self.max_tokens.saturating_sub(self.used().tokens())
    }

    /// What has been used so far.
    pub fn used(&self) -> BudgetUsage {
        BudgetUsage {
            calls: self.calls.load(Ordering::SeqCst),
            input_tokens: self.input_tokens.load(Ordering::SeqCst),
            output_tokens: self.output_tokens.load(Ordering::SeqCst),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::error::ModelErrorKind;

    #[test]
    fn calls_are_bounded() {
        let b = ModelBudget::new(2, 1000);
        b.check_call().unwrap();
        b.check_call().unwrap();
        let e = b.check_call().unwrap_err();
        assert_eq!(e.kind, ModelErrorKind::BudgetExceeded);
        assert!(!e.retryable);
        assert_eq!(b.used().calls, 2);
    }

    #[test]
    fn tokens_are_bounded_after_the_call_that_crossed_the_limit() {
        let b = ModelBudget::new(10, 100);
        b.check_call().unwrap();
        b.record(&Usage { input_tokens: 60, output_tokens: 30, total_tokens: 90 });
        assert_eq!(b.remaining_tokens(), 10);
        b.check_call().unwrap();
        b.record(&Usage { input_tokens: 60, output_tokens: 30, total_tokens: 90 });
        assert_eq!(b.remaining_tokens(), 0);
        assert_eq!(b.check_call().unwrap_err().kind, ModelErrorKind::BudgetExceeded);
        assert_eq!(b.used(), BudgetUsage { calls: 2, input_tokens: 120, output_tokens: 60 });
    }
}
