//! When to retry: exponential backoff with jitter, mapped onto the fixed-delay tier queues.

use crate::config::WorkerSettings;
use crate::handlers::{Handlers, OrderingPolicy, RetryOverride};
use std::collections::HashMap;

/// Chooses the delay tier for the next attempt.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    tiers_ms: Vec<u64>,
    base_ms: u64,
    jitter: f64,
    /// Attempts before giving up (1 = no retry).
    pub max_attempts: u32,
    /// What a dead ordered command does to its key.
    pub ordering: OrderingPolicy,
}

impl RetryPolicy {
    /// The policy the settings describe.
    pub fn new(s: &WorkerSettings) -> Self {
        let mut tiers_ms = s.retry_tiers_ms.clone();
        tiers_ms.sort_unstable();
        tiers_ms.dedup();
        Self {
            tiers_ms,
            base_ms: s.retry_base_ms.max(1),
            jitter: s.retry_jitter,
            max_attempts: s.max_attempts,
            ordering: OrderingPolicy::Halt,
        }
    }

    /// This policy with a type's own settings over it.
    pub fn with(&self, o: RetryOverride) -> Self {
        let mut p = self.clone();
        p.max_attempts = o.max_attempts.unwrap_or(p.max_attempts).max(1);
        p.base_ms = o.base_ms.unwrap_or(p.base_ms).max(1);
        p.ordering = o.ordering.unwrap_or(p.ordering);
        p
    }

    /// Whether a command that failed on `attempt` gets another one.
    pub fn allows_another(&self, attempt: u32) -> bool {
        attempt < self.max_attempts
    }

    /// Delay (one of the tiers, in ms) before the attempt after `attempt`. `unit` is a random
    /// number in [0, 1): the target delay is base·2^(attempt−1), capped at the largest tier,
    /// spread by ±jitter, then rounded to the nearest tier on a log scale.
    pub fn delay_ms(&self, attempt: u32, unit: f64) -> u64 {
        let cap = *self.tiers_ms.last().unwrap_or(&self.base_ms) as f64;
        let exp = attempt.saturating_sub(1).min(62);
        let ideal = (self.base_ms as f64 * 2f64.powi(exp as i32)).min(cap);
        let target = ideal * (1.0 + self.jitter * (2.0 * unit - 1.0));
        self.tiers_ms
            .iter()
            .copied()
            .min_by(|a, b| {
                let da = ((*a as f64) / target).ln().abs();
                let db = ((*b as f64) / target).ln().abs();
                da.total_cmp(&db)
            })
            .unwrap_or(self.base_ms)
    }
}

/// The policy of each command type: `[worker]`'s, or a declared type's own.
#[derive(Clone, Debug)]
pub struct Policies {
    default: RetryPolicy,
    by_kind: HashMap<String, RetryPolicy>,
}

impl Policies {
    /// `[worker]`'s policy, with the overrides `handlers` carry.
    pub fn new(s: &WorkerSettings, handlers: &Handlers) -> Self {
        let default = RetryPolicy::new(s);
        let by_kind = handlers
            .kinds()
            .into_iter()
            .filter_map(|k| handlers.retry(k).map(|o| (k.to_owned(), default.with(o))))
            .collect();
        Self { default, by_kind }
    }

    /// The policy of `kind`.
    pub fn of(&self, kind: &str) -> &RetryPolicy {
        self.by_kind.get(kind).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(jitter: f64) -> RetryPolicy {
        RetryPolicy {
            tiers_ms: vec![100, 200, 400, 800, 1600],
            base_ms: 100,
            jitter,
            max_attempts: 5,
            ordering: OrderingPolicy::Halt,
        }
    }

    #[test]
    fn delays_double_with_each_attempt_until_the_largest_tier() {
        let p = policy(0.0);
        let delays: Vec<u64> = (1..=7).map(|a| p.delay_ms(a, 0.5)).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1600, 1600, 1600]);
    }

    #[test]
    fn jitter_moves_the_delay_to_a_neighbouring_tier_at_most() {
        let p = policy(0.45);
        for unit in [0.0, 0.25, 0.5, 0.75, 0.999] {
            let d = p.delay_ms(3, unit);
            assert!((200..=800).contains(&d), "attempt 3 jittered to {d}");
        }
        assert_ne!(p.delay_ms(3, 0.0), p.delay_ms(3, 0.999));
    }

    #[test]
    fn a_types_own_settings_change_attempts_and_base_delay_only() {
        let p = policy(0.0).with(RetryOverride { max_attempts: Some(8), base_ms: Some(400), ordering: None });
        assert!(p.allows_another(7) && !p.allows_another(8));
        assert_eq!(p.delay_ms(1, 0.5), 400);
        assert_eq!(p.delay_ms(3, 0.5), 1600);
    }

    #[test]
    fn the_last_allowed_attempt_gets_no_retry() {
        let p = policy(0.0);
        assert!(p.allows_another(4));
        assert!(!p.allows_another(5));
    }
}
