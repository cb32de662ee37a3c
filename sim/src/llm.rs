//! A simulated LLM provider: quota, outages, timeouts, bad output and token-bound latency.
//!
//! Owns the provider's side of a request: whether its rate limits admit it, whether it fails
//! and how, and how long it takes. It never produces the answer's content (scenarios script
//! that) and never schedules anything: the world turns an `LlmOutcome` into agenda events.

use crate::plan::{Decided, Gate};
use crate::rng::Rng;
use crate::swarm::{self, fault, FaultCounts};
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use tempest_engine::Time;

/// The window real providers state their limits over.
pub const RATE_LIMIT_WINDOW_MS: u64 = 60_000;

/// How long a hung request stays open before the provider's gateway cuts it, like OpenAI's
/// 600 s default. Clients with a shorter activity timeout give up first.
pub const HUNG_REQUEST_CUT_MS: u64 = 600_000;

/// How the provider behaves. Probabilities are per request it admits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LlmFaults {
    /// Chance an admitted request starts an outage (HTTP 500/503/529). Range [0, 1]; default
    /// 0; realistic 0.001-0.02, far higher during an incident.
    pub server_error_probability: f64,
    /// Mean number of consecutive requests an outage fails, the first included. Unit requests;
    /// range 1..; default 1; realistic 1-20.
    pub server_error_burst_len_mean: u64,
    /// Chance an admitted request hangs until `HUNG_REQUEST_CUT_MS`. Range [0, 1]; default 0;
    /// realistic 0.001-0.01.
    pub timeout_probability: f64,
    /// Chance an answer is malformed or fails its schema. Range [0, 1]; default 0; realistic
    /// 0.01-0.1 for structured output without constrained decoding.
    pub invalid_output_probability: f64,
    /// Latency before the first token, and of an error response. Unit ms; range 0..; default
    /// 300; realistic 200-2000.
    pub latency_ms_base: u64,
    /// Latency added per token of the request, averaged over prompt and completion. Unit ms;
    /// range 0..; default 5; realistic 1-30.
    pub latency_ms_per_token: u64,
    /// Requests per minute the provider admits; `None` is unlimited. Range 1..; default None;
    /// realistic 50-10_000 depending on the account tier.
    pub rate_limit_rpm: Option<u64>,
    /// Tokens per minute the provider admits; `None` is unlimited. Range 1..; default None;
    /// realistic 10_000-2_000_000. A single request may not need more than this.
    pub rate_limit_tpm: Option<u64>,
}

impl LlmFaults {
    /// A provider that always answers, with realistic latency and no quota.
    pub fn none() -> LlmFaults {
        LlmFaults {
            server_error_probability: 0.0,
            server_error_burst_len_mean: 1,
            timeout_probability: 0.0,
            invalid_output_probability: 0.0,
            latency_ms_base: 300,
            latency_ms_per_token: 5,
            rate_limit_rpm: None,
            rate_limit_tpm: None,
        }
    }
}

impl LlmFaults {
    pub fn validate(&self) -> Result<(), swarm::Error> {
        swarm::check_probability("llm.server_error_probability", self.server_error_probability)?;
        swarm::check_at_least("llm.server_error_burst_len_mean", self.server_error_burst_len_mean, 1)?;
        swarm::check_probability("llm.timeout_probability", self.timeout_probability)?;
        swarm::check_probability("llm.invalid_output_probability", self.invalid_output_probability)?;
        if let Some(rpm) = self.rate_limit_rpm {
            swarm::check_at_least("llm.rate_limit_rpm", rpm, 1)?;
        }
        if let Some(tpm) = self.rate_limit_tpm {
            swarm::check_at_least("llm.rate_limit_tpm", tpm, 1)?;
        }
        Ok(())
    }
}

impl Default for LlmFaults {
    fn default() -> LlmFaults {
        LlmFaults::none()
    }
}

/// What the caller sees of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LlmOutcome {
    Answered {
        latency_ms: u64,
    },
    /// HTTP 429; `retry_after_ms` is the `Retry-After` header, a whole number of seconds.
    RateLimited {
        retry_after_ms: u64,
    },
    ServerError {
        latency_ms: u64,
    },
    TimedOut {
        after_ms: u64,
    },
    /// An answer arrived but is malformed or fails validation.
    InvalidOutput {
        latency_ms: u64,
    },
}

/// A token bucket holding up to one minute's allowance, refilled continuously.
///
/// Levels are kept in 1/60_000ths of a unit, so a limit of `per_minute` refills by exactly
/// `per_minute` per millisecond and all arithmetic stays in integers.
#[derive(Debug)]
struct Bucket {
    per_minute: u64,
    level: u64,
    refilled_at: Time,
}

impl Bucket {
    fn full(per_minute: u64) -> Bucket {
        assert!(per_minute > 0, "a rate limit of 0 per minute admits nothing");
        Bucket { per_minute, level: per_minute * RATE_LIMIT_WINDOW_MS, refilled_at: Time::ZERO }
    }

    fn refill(&mut self, now: Time) {
        assert!(now >= self.refilled_at, "bucket refilled at {now}, after {}", self.refilled_at);
        let elapsed_ms = now.as_ms() - self.refilled_at.as_ms();
        let capacity = self.per_minute * RATE_LIMIT_WINDOW_MS;
        self.level = self.level.saturating_add(elapsed_ms.saturating_mul(self.per_minute));
        self.level = self.level.min(capacity);
        self.refilled_at = now;
    }

    /// Milliseconds until `units` fit, 0 if they fit now.
    fn wait_ms(&self, units: u64) -> u64 {
        let cost = units * RATE_LIMIT_WINDOW_MS;
        cost.saturating_sub(self.level).div_ceil(self.per_minute)
    }

    fn take(&mut self, units: u64) {
        self.level -= units * RATE_LIMIT_WINDOW_MS;
    }
}

#[derive(Debug)]
pub struct LlmProvider {
    faults: LlmFaults,
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    /// Requests the current outage will still fail.
    server_error_burst_remaining: u64,
    /// When each request admitted in the last `RATE_LIMIT_WINDOW_MS` was admitted, oldest first.
    accepted_at: VecDeque<Time>,
    fault_counts: FaultCounts,
    /// Decides outages, timeouts and invalid answers (see `plan::Gate`).
    pub gate: Gate,
}

impl LlmProvider {
    /// A provider whose buckets start full at `Time::ZERO`.
    pub fn new(faults: LlmFaults) -> LlmProvider {
        if let Err(error) = faults.validate() {
            panic!("{error}");
        }
        LlmProvider {
            requests: faults.rate_limit_rpm.map(Bucket::full),
            tokens: faults.rate_limit_tpm.map(Bucket::full),
            faults,
            server_error_burst_remaining: 0,
            accepted_at: VecDeque::new(),
            fault_counts: FaultCounts::new(),
            gate: Gate::default(),
        }
    }

    pub fn faults(&self) -> &LlmFaults {
        &self.faults
    }

    pub fn fault_counts(&self) -> &FaultCounts {
        &self.fault_counts
    }

    /// The heal phase: no more errors, timeouts or invalid output, and any outage ends. The
    /// rate limits stay: a quota is the provider's contract, and runs must finish within it.
    pub fn heal(&mut self) {
        self.faults = LlmFaults {
            latency_ms_base: self.faults.latency_ms_base,
            latency_ms_per_token: self.faults.latency_ms_per_token,
            rate_limit_rpm: self.faults.rate_limit_rpm,
            rate_limit_tpm: self.faults.rate_limit_tpm,
            ..LlmFaults::none()
        };
        self.server_error_burst_remaining = 0;
        self.gate.heal();
    }

    /// The most requests the buckets can admit within any `RATE_LIMIT_WINDOW_MS`: a full
    /// bucket drained at once, plus one minute of refill. `None` without a request limit.
    pub fn requests_accepted_in_window_max(&self) -> Option<u64> {
        self.faults.rate_limit_rpm.map(|rpm| 2 * rpm)
    }

    /// Requests admitted in the window `(now - RATE_LIMIT_WINDOW_MS, now]`, for the check that
    /// the provider held its limit. `now` must not be earlier than the last request.
    pub fn requests_accepted_in_window(&self, now: Time) -> u64 {
        let start_ms = now.as_ms().saturating_sub(RATE_LIMIT_WINDOW_MS);
        self.accepted_at.iter().filter(|at| at.as_ms() > start_ms).count() as u64
    }

    /// One request of `tokens` tokens (prompt plus expected completion) arriving at `now`.
    pub fn request(&mut self, now: Time, tokens: u64, rng: &mut Rng) -> LlmOutcome {
        if let Some(tpm) = self.faults.rate_limit_tpm {
            assert!(tokens <= tpm, "request of {tokens} tokens can never fit {tpm} per minute");
        }
        let mut wait_ms = 0;
        for (bucket, units) in [(&mut self.requests, 1), (&mut self.tokens, tokens)] {
            if let Some(bucket) = bucket {
                bucket.refill(now);
                wait_ms = wait_ms.max(bucket.wait_ms(units));
            }
        }
        if wait_ms > 0 {
            self.fault_counts.add(fault::LLM_RATE_LIMITED);
            return LlmOutcome::RateLimited { retry_after_ms: wait_ms.div_ceil(1000) * 1000 };
        }
        self.admit(now, tokens);

        let latency_ms_base = self.faults.latency_ms_base;
        if self.server_error_burst_remaining == 0
            && self.gate.decide(Decided::LlmServerError, now, rng.chance(self.faults.server_error_probability))
        {
            // The outage's length counts this request too, so its mean is the knob.
            self.server_error_burst_remaining = 1 + rng.exp_ms(self.faults.server_error_burst_len_mean - 1);
        }
        if self.server_error_burst_remaining > 0 {
            self.server_error_burst_remaining -= 1;
            self.fault_counts.add(fault::LLM_SERVER_ERROR);
            return LlmOutcome::ServerError { latency_ms: latency_ms_base };
        }
        if self.gate.decide(Decided::LlmTimeout, now, rng.chance(self.faults.timeout_probability)) {
            self.fault_counts.add(fault::LLM_TIMEOUT);
            return LlmOutcome::TimedOut { after_ms: HUNG_REQUEST_CUT_MS };
        }
        // Up to 50% jitter, so equal requests in flight together can finish in either order.
        let latency_ms_nominal = latency_ms_base + self.faults.latency_ms_per_token * tokens;
        let latency_ms = latency_ms_nominal + rng.range_inclusive(0, latency_ms_nominal / 2);
        if self.gate.decide(Decided::LlmInvalidOutput, now, rng.chance(self.faults.invalid_output_probability)) {
            self.fault_counts.add(fault::LLM_INVALID_OUTPUT);
            return LlmOutcome::InvalidOutput { latency_ms };
        }
        LlmOutcome::Answered { latency_ms }
    }

    fn admit(&mut self, now: Time, tokens: u64) {
        if let Some(bucket) = &mut self.requests {
            bucket.take(1);
        }
        if let Some(bucket) = &mut self.tokens {
            bucket.take(tokens);
        }
        while self.accepted_at.front().is_some_and(|at| at.as_ms() + RATE_LIMIT_WINDOW_MS <= now.as_ms()) {
            self.accepted_at.pop_front();
        }
        self.accepted_at.push_back(now);
        if let Some(accepted_max) = self.requests_accepted_in_window_max() {
            let accepted = self.accepted_at.len() as u64;
            assert!(accepted <= accepted_max, "{accepted} requests admitted within a minute at {now}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider(change: impl FnOnce(&mut LlmFaults)) -> LlmProvider {
        let mut faults = LlmFaults::none();
        change(&mut faults);
        LlmProvider::new(faults)
    }

    #[test]
    fn healthy_provider_answers_with_latency_growing_with_tokens() {
        let mut llm = provider(|_| {});
        let mut rng = Rng::new(1);
        let LlmOutcome::Answered { latency_ms: short } = llm.request(Time(0), 10, &mut rng) else {
            panic!("healthy provider failed");
        };
        let LlmOutcome::Answered { latency_ms: long } = llm.request(Time(0), 1000, &mut rng) else {
            panic!("healthy provider failed");
        };
        assert!((350..=525).contains(&short), "{short}");
        assert!((5300..=7950).contains(&long), "{long}");
    }

    #[test]
    fn rpm_limit_rejects_with_retry_after_in_whole_seconds() {
        let mut llm = provider(|f| f.rate_limit_rpm = Some(60));
        let mut rng = Rng::new(2);
        for _ in 0..60 {
            assert!(matches!(llm.request(Time(0), 1, &mut rng), LlmOutcome::Answered { .. }));
        }
        // One request refills every second; 400 ms in, the next has 600 ms to wait.
        assert_eq!(llm.request(Time(400), 1, &mut rng), LlmOutcome::RateLimited { retry_after_ms: 1000 });
        assert!(matches!(llm.request(Time(1000), 1, &mut rng), LlmOutcome::Answered { .. }));
        assert_eq!(llm.fault_counts().get(fault::LLM_RATE_LIMITED), 1);
    }

    #[test]
    fn tpm_limit_waits_for_enough_tokens() {
        let mut llm = provider(|f| f.rate_limit_tpm = Some(6000));
        let mut rng = Rng::new(3);
        assert!(matches!(llm.request(Time(0), 5000, &mut rng), LlmOutcome::Answered { .. }));
        // 1000 tokens left, 100 refilled per second: 3000 more need 30 s.
        assert_eq!(llm.request(Time(0), 4000, &mut rng), LlmOutcome::RateLimited { retry_after_ms: 30_000 });
    }

    #[test]
    fn provider_never_admits_more_than_its_bound_in_any_window() {
        let mut llm = provider(|f| f.rate_limit_rpm = Some(30));
        let mut rng = Rng::new(4);
        let mut now = Time(0);
        for _ in 0..5000 {
            now = Time(now.as_ms() + rng.below(500));
            llm.request(now, 1, &mut rng);
            assert!(llm.requests_accepted_in_window(now) <= 60);
        }
        assert!(llm.requests_accepted_in_window(now) >= 25, "the limit was not used");
    }

    #[test]
    fn server_errors_come_in_bursts() {
        let mut llm = provider(|f| {
            f.server_error_probability = 0.05;
            f.server_error_burst_len_mean = 8;
        });
        let mut rng = Rng::new(5);
        let errors: Vec<bool> =
            (0..4000).map(|_| matches!(llm.request(Time(0), 1, &mut rng), LlmOutcome::ServerError { .. })).collect();
        let error_count = errors.iter().filter(|e| **e).count();
        let burst_count = errors.windows(2).filter(|w| w[1] && !w[0]).count();
        let burst_len_mean = error_count as f64 / burst_count as f64;
        assert!((5.0..11.0).contains(&burst_len_mean), "mean burst {burst_len_mean}");
    }

    #[test]
    fn certain_timeout_and_invalid_output_are_reported() {
        let mut rng = Rng::new(6);
        let mut hung = provider(|f| f.timeout_probability = 1.0);
        assert_eq!(hung.request(Time(0), 1, &mut rng), LlmOutcome::TimedOut { after_ms: HUNG_REQUEST_CUT_MS });
        let mut sloppy = provider(|f| f.invalid_output_probability = 1.0);
        assert!(matches!(sloppy.request(Time(0), 1, &mut rng), LlmOutcome::InvalidOutput { .. }));
        assert_eq!(sloppy.fault_counts().get(fault::LLM_INVALID_OUTPUT), 1);
    }

    #[test]
    fn heal_ends_outage_but_keeps_quota() {
        let mut llm = provider(|f| {
            f.server_error_probability = 1.0;
            f.server_error_burst_len_mean = 1000;
            f.rate_limit_rpm = Some(1);
        });
        let mut rng = Rng::new(7);
        assert!(matches!(llm.request(Time(0), 1, &mut rng), LlmOutcome::ServerError { .. }));
        llm.heal();
        assert!(matches!(llm.request(Time(0), 1, &mut rng), LlmOutcome::RateLimited { .. }));
        assert!(matches!(llm.request(Time(60_000), 1, &mut rng), LlmOutcome::Answered { .. }));
    }
}
