//! Simulated tools: the outside world's side effects, keyed by idempotency key.
//!
//! Owns the ledger of side effects a tool has carried out, so checks can prove each one
//! happened once per idempotency key however often the engine retried. It never decides
//! whether a call fails or how long it takes; the world draws that from `ToolFaults`.

use crate::swarm;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How tools misbehave. Probabilities are per call.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFaults {
    /// Chance a call fails (an HTTP 5xx, a refused connection). Range [0, 1]; default 0;
    /// realistic 0.001-0.05 for third-party APIs.
    pub failure_probability: f64,
    /// Mean latency of a call, exponentially distributed. Unit ms; range 0..; default 100;
    /// realistic 20-500 for an API, seconds for a browser or code sandbox.
    pub latency_ms_mean: u64,
}

impl ToolFaults {
    pub fn none() -> ToolFaults {
        ToolFaults { failure_probability: 0.0, latency_ms_mean: 100 }
    }

    pub fn validate(&self) -> Result<(), swarm::Error> {
        swarm::check_probability("tool.failure_probability", self.failure_probability)
    }
}

impl Default for ToolFaults {
    fn default() -> ToolFaults {
        ToolFaults::none()
    }
}

/// Whether an `apply` carried out the effect or recognised a key it had seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    First,
    /// The key was seen before; a tool honouring idempotency keys does nothing again.
    Duplicate,
}

#[derive(Debug)]
struct Entry {
    effect: String,
    apply_count: u64,
}

/// Every side effect a tool was asked for, keyed by idempotency key.
#[derive(Debug, Default)]
pub struct ToolLedger {
    entries: BTreeMap<String, Entry>,
}

impl ToolLedger {
    pub fn new() -> ToolLedger {
        ToolLedger::default()
    }

    /// Records one call. `effect` describes what the call does (not which attempt made it): a
    /// key reused for a different effect means two activities share a key, which is a bug.
    pub fn apply(&mut self, key: &str, effect: &str) -> Applied {
        match self.entries.get_mut(key) {
            None => {
                let entry = Entry { effect: effect.to_owned(), apply_count: 1 };
                self.entries.insert(key.to_owned(), entry);
                Applied::First
            }
            Some(entry) => {
                assert_eq!(entry.effect, effect, "idempotency key {key} reused for another effect");
                entry.apply_count += 1;
                Applied::Duplicate
            }
        }
    }

    /// Keys applied more than once, in key order, each with how many times it was applied.
    pub fn duplicates(&self) -> Vec<(&str, u64)> {
        self.entries
            .iter()
            .filter(|(_, entry)| entry.apply_count > 1)
            .map(|(key, entry)| (key.as_str(), entry.apply_count))
            .collect()
    }

    /// Distinct keys applied.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_apply_carries_out_effect_and_retries_are_duplicates() {
        let mut ledger = ToolLedger::new();
        assert_eq!(ledger.apply("run-1/3", "email bob"), Applied::First);
        assert_eq!(ledger.apply("run-1/3", "email bob"), Applied::Duplicate);
        assert_eq!(ledger.apply("run-1/3", "email bob"), Applied::Duplicate);
        assert_eq!(ledger.apply("run-1/4", "email ann"), Applied::First);
        assert_eq!(ledger.len(), 2);
    }

    #[test]
    fn duplicates_lists_only_keys_applied_more_than_once_with_counts() {
        let mut ledger = ToolLedger::new();
        for key in ["b", "a", "b", "c", "b", "a"] {
            ledger.apply(key, "charge card");
        }
        assert_eq!(ledger.duplicates(), [("a", 2), ("b", 3)]);
    }

    #[test]
    fn key_reused_for_another_effect_panics() {
        let mut ledger = ToolLedger::new();
        ledger.apply("k", "email bob");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            ledger.apply("k", "email ann");
        }));
        assert!(result.is_err());
    }
}
