//! Activities as the workflow sees them: options, classified failures, final errors.
//!
//! Owns the vocabulary of how an attempt can fail (rate limited, overloaded, timed out,
//! invalid output, refused, application error) and whether each kind may be retried. It never
//! runs an activity: hosts do, and report back through `engine::Input`.

use crate::retry::{GiveUpReason, RetryPolicy};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// How one attempt failed. The world misbehaving is data, not a Rust error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Failure {
    /// HTTP 429: the provider asks us to wait `retry_after_ms` (its `Retry-After`).
    RateLimited {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// HTTP 5xx or "overloaded": retryable, optionally with a suggested delay.
    Overloaded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after_ms: Option<u64>,
    },
    /// No answer within the attempt's start-to-close timeout (or a client timeout).
    TimedOut,
    /// The answer did not validate; `message` is handed to the next attempt.
    InvalidOutput { message: String },
    /// The provider refused or the request was bad: retrying cannot help.
    Refused { message: String },
    /// Any other error raised by activity code, retryable unless its kind is listed as
    /// non-retryable in the policy.
    Application { kind: String, message: String },
}

impl Failure {
    pub fn is_retryable(&self) -> bool {
        match self {
            Failure::RateLimited { .. }
            | Failure::Overloaded { .. }
            | Failure::TimedOut
            | Failure::InvalidOutput { .. }
            | Failure::Application { .. } => true,
            Failure::Refused { .. } => false,
        }
    }

    /// The failure's kind name, as matched by `RetryPolicy::non_retryable_kinds`.
    pub fn kind(&self) -> &str {
        match self {
            Failure::RateLimited { .. } => "rate_limited",
            Failure::Overloaded { .. } => "overloaded",
            Failure::TimedOut => "timed_out",
            Failure::InvalidOutput { .. } => "invalid_output",
            Failure::Refused { .. } => "refused",
            Failure::Application { kind, .. } => kind,
        }
    }

    /// A delay the failure itself suggests (HTTP `Retry-After`).
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Failure::RateLimited { retry_after_ms } | Failure::Overloaded { retry_after_ms } => *retry_after_ms,
            Failure::TimedOut
            | Failure::InvalidOutput { .. }
            | Failure::Refused { .. }
            | Failure::Application { .. } => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::RateLimited { retry_after_ms: Some(ms) } => {
                write!(f, "rate limited (retry after {ms} ms)")
            }
            Failure::RateLimited { retry_after_ms: None } => write!(f, "rate limited"),
            Failure::Overloaded { .. } => write!(f, "overloaded"),
            Failure::TimedOut => write!(f, "timed out"),
            Failure::InvalidOutput { message } => write!(f, "invalid output: {message}"),
            Failure::Refused { message } => write!(f, "refused: {message}"),
            Failure::Application { kind, message } => write!(f, "{kind}: {message}"),
        }
    }
}

/// Per-activity options, recorded in the `activity_scheduled` event.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Options {
    pub retry: RetryPolicy,
    /// Limit on one attempt, in ms; a late attempt counts as `Failure::TimedOut`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_to_close_ms: Option<u64>,
    /// Limit on all attempts together, from scheduling, in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_to_close_ms: Option<u64>,
    /// Rate-limiter key (e.g. `llm:gpt-4o`) that workers dispatch this activity under.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit_key: Option<String>,
    /// Tokens this activity is expected to use, counted against a tokens-per-minute limit.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub token_count: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Options {
    pub fn start_to_close(&self) -> Option<Duration> {
        self.start_to_close_ms.map(Duration::from_millis)
    }
}

/// Why an activity finally failed, as the workflow sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    NonRetryable,
    AttemptsExhausted,
    ScheduleToCloseTimeout,
    Canceled,
}

impl From<GiveUpReason> for Cause {
    fn from(reason: GiveUpReason) -> Cause {
        match reason {
            GiveUpReason::NonRetryable => Cause::NonRetryable,
            GiveUpReason::AttemptsExhausted => Cause::AttemptsExhausted,
        }
    }
}

/// The final failure of an activity, after its retries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("activity {activity_type} (seq {seq}) failed after {attempt_count} attempts ({cause:?}): {last_failure}")]
pub struct Error {
    pub activity_type: String,
    pub seq: u32,
    pub attempt_count: u32,
    pub cause: Cause,
    pub last_failure: Failure,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_serializes_with_kind_tag() {
        let f = Failure::RateLimited { retry_after_ms: Some(2000) };
        assert_eq!(serde_json::to_string(&f).unwrap(), r#"{"type":"rate_limited","retry_after_ms":2000}"#);
        let back: Failure = serde_json::from_str(r#"{"type":"timed_out"}"#).unwrap();
        assert_eq!(back, Failure::TimedOut);
    }

    #[test]
    fn only_refused_is_not_retryable() {
        assert!(!Failure::Refused { message: "x".into() }.is_retryable());
        assert!(Failure::InvalidOutput { message: "x".into() }.is_retryable());
        assert!(Failure::Overloaded { retry_after_ms: None }.is_retryable());
    }
}
