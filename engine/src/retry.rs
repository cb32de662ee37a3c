//! Retry policy: decides when a failed activity attempt may run again.
//!
//! Only arithmetic on attempt counts and engine time. It never waits: the engine turns the
//! answer into a timer or a delayed task. Jitter is a hash of the activity's idempotency key
//! and attempt number, so replay after a crash chooses the same delay.

use crate::activity::Failure;
use crate::hash;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How an activity is retried. Defaults follow Temporal's: 1 s, doubling, capped at 100 s.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Delay before the second attempt, in ms.
    pub interval_ms_initial: u64,
    /// Each further delay is the previous one times this (>= 1.0).
    pub backoff_coefficient: f64,
    /// Cap on the computed delay, in ms. A longer `Retry-After` still wins.
    pub interval_ms_max: u64,
    /// Attempts in all, including the first; 0 means unlimited.
    pub attempt_count_max: u32,
    /// Failure kinds (see `Failure::kind`) that are never retried.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub non_retryable_kinds: Vec<String>,
    /// Fraction in [0, 1) by which a delay may be shortened, spread by a stable hash.
    #[serde(default)]
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            interval_ms_initial: 1_000,
            backoff_coefficient: 2.0,
            interval_ms_max: 100_000,
            attempt_count_max: 0,
            non_retryable_kinds: Vec::new(),
            jitter: 0.0,
        }
    }
}

/// What to do after attempt `attempt` (1-based) failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    RetryAfter(Duration),
    GiveUp(GiveUpReason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GiveUpReason {
    NonRetryable,
    AttemptsExhausted,
}

impl RetryPolicy {
    /// A policy with the given attempt limit and otherwise default settings.
    pub fn attempts(attempt_count_max: u32) -> RetryPolicy {
        RetryPolicy { attempt_count_max, ..RetryPolicy::default() }
    }

    pub fn initial_interval(mut self, interval: Duration) -> Self {
        self.interval_ms_initial = crate::time::duration_ms(interval);
        self
    }

    pub fn max_interval(mut self, interval: Duration) -> Self {
        self.interval_ms_max = crate::time::duration_ms(interval);
        self
    }

    pub fn backoff(mut self, coefficient: f64) -> Self {
        self.backoff_coefficient = coefficient;
        self
    }

    pub fn non_retryable(mut self, kind: &str) -> Self {
        self.non_retryable_kinds.push(kind.to_owned());
        self
    }

    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Decides the fate of attempt `attempt` (1-based) that failed with `failure`.
    /// `jitter_key` must be stable across replays (the idempotency key).
    pub fn decide(&self, attempt: u32, failure: &Failure, jitter_key: &str) -> Decision {
        assert!(attempt >= 1, "attempts are 1-based");
        if !failure.is_retryable() || self.non_retryable_kinds.iter().any(|k| k == failure.kind()) {
            return Decision::GiveUp(GiveUpReason::NonRetryable);
        }
        if self.attempt_count_max != 0 && attempt >= self.attempt_count_max {
            return Decision::GiveUp(GiveUpReason::AttemptsExhausted);
        }
        let delay = self.backoff_delay_ms(attempt, jitter_key);
        let delay = delay.max(failure.retry_after_ms().unwrap_or(0));
        Decision::RetryAfter(Duration::from_millis(delay))
    }

    /// The delay after attempt `attempt` from backoff alone, with jitter applied.
    fn backoff_delay_ms(&self, attempt: u32, jitter_key: &str) -> u64 {
        assert!(self.backoff_coefficient >= 1.0, "backoff coefficient below 1");
        assert!((0.0..1.0).contains(&self.jitter), "jitter outside [0, 1)");
        let exponent = i32::try_from(attempt - 1).unwrap_or(i32::MAX);
        let raw = self.interval_ms_initial as f64 * self.backoff_coefficient.powi(exponent);
        let capped = raw.min(self.interval_ms_max as f64);
        let unit = (hash::hash_parts(&[jitter_key, &attempt.to_string()]) >> 11) as f64 / (1u64 << 53) as f64;
        (capped * (1.0 - self.jitter * unit)) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_until_capped() {
        let policy = RetryPolicy::attempts(10).max_interval(Duration::from_secs(5));
        let delays: Vec<_> = (1..6)
            .map(|a| match policy.decide(a, &Failure::TimedOut, "k") {
                Decision::RetryAfter(d) => d.as_millis(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(delays, vec![1000, 2000, 4000, 5000, 5000]);
    }

    #[test]
    fn retry_after_longer_than_backoff_wins() {
        let policy = RetryPolicy::attempts(3);
        let failure = Failure::RateLimited { retry_after_ms: Some(30_000) };
        assert_eq!(policy.decide(1, &failure, "k"), Decision::RetryAfter(Duration::from_secs(30)));
    }

    #[test]
    fn refused_is_never_retried_and_attempts_run_out() {
        let policy = RetryPolicy::attempts(2);
        let refused = Failure::Refused { message: "no".into() };
        assert_eq!(policy.decide(1, &refused, "k"), Decision::GiveUp(GiveUpReason::NonRetryable));
        assert_eq!(policy.decide(2, &Failure::TimedOut, "k"), Decision::GiveUp(GiveUpReason::AttemptsExhausted));
    }

    #[test]
    fn non_retryable_kind_listed_in_policy_is_not_retried() {
        let policy = RetryPolicy::attempts(5).non_retryable("quota_exhausted");
        let failure = Failure::Application { kind: "quota_exhausted".into(), message: "m".into() };
        assert_eq!(policy.decide(1, &failure, "k"), Decision::GiveUp(GiveUpReason::NonRetryable));
    }

    #[test]
    fn jitter_is_stable_per_key_and_bounded() {
        let policy = RetryPolicy::attempts(0).with_jitter(0.5);
        let a = policy.decide(1, &Failure::TimedOut, "run-1:3");
        assert_eq!(a, policy.decide(1, &Failure::TimedOut, "run-1:3"));
        let Decision::RetryAfter(d) = a else { panic!("expected a retry") };
        assert!(d.as_millis() > 500 && d.as_millis() <= 1000, "{d:?}");
    }
}
