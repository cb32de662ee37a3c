//! The faults of one full-stack world, drawn from its seed: link latency, partitions between
//! the client and the server and between the server and the LLM provider, server crashes
//! with restarts, and error replies of the provider.
//!
//! Owns the draw (swarm style: each fault kind is on or off per seed, at its own strength)
//! and the timeline the world applies. Everything happens inside the fault phase; at its end
//! every link is repaired and the server is up. It never applies a fault itself.

use serde::Serialize;
use std::collections::BTreeMap;
use tempest_sim::rng::Rng;

/// How long faults may happen, from the start of the world, in ms. Workloads start their
/// runs inside it, so faults meet runs in every state.
pub const FAULT_PHASE_MS: u64 = 15_000;

/// The simulated hosts.
pub const CLIENT: &str = "client";
pub const SERVER: &str = "server";
pub const LLM: &str = "llm";

/// A two-way partition between two hosts, repaired after `duration_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Partition {
    pub between: (&'static str, &'static str),
    pub at_ms: u64,
    pub duration_ms: u64,
}

/// The server's process is killed at `at_ms` and started again `down_ms` later; it keeps only
/// its durable records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Crash {
    pub at_ms: u64,
    pub down_ms: u64,
}

/// Error replies the LLM provider gives to its first requests, before it answers normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum LlmError {
    /// 429 with `Retry-After: 1`.
    RateLimited,
    /// 503.
    Overloaded,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FaultPlan {
    /// Message latency on every link, in ms: each message takes between min and max.
    /// Realistic: 1 to 50 within a region; at most 200 here.
    pub latency_min_ms: u64,
    pub latency_max_ms: u64,
    pub partitions: Vec<Partition>,
    /// In time order, never overlapping.
    pub crashes: Vec<Crash>,
    pub llm_errors: Vec<LlmError>,
}

/// What the world does at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Partition(&'static str, &'static str),
    Repair(&'static str, &'static str),
    Crash,
    Restart,
}

impl FaultPlan {
    /// No faults at all: 1 ms links, nothing else.
    pub fn none() -> FaultPlan {
        FaultPlan {
            latency_min_ms: 1,
            latency_max_ms: 1,
            partitions: Vec::new(),
            crashes: Vec::new(),
            llm_errors: Vec::new(),
        }
    }

    /// The faults of `seed`.
    pub fn draw(seed: u64) -> FaultPlan {
        let mut rng = Rng::new(seed).fork("full-stack-faults");
        let mut plan = FaultPlan::none();
        if rng.chance(0.7) {
            plan.latency_min_ms = rng.range_inclusive(1, 10);
            plan.latency_max_ms = plan.latency_min_ms + rng.range_inclusive(0, 190);
        }
        if rng.chance(0.6) {
            for _ in 0..rng.range_inclusive(1, 3) {
                let between = *rng.pick(&[(CLIENT, SERVER), (SERVER, LLM)]);
                let at_ms = rng.below(FAULT_PHASE_MS - 1_000);
                let duration_ms = rng.range_inclusive(200, 6_000).min(FAULT_PHASE_MS - at_ms);
                plan.partitions.push(Partition { between, at_ms, duration_ms });
            }
        }
        if rng.chance(0.6) {
            let mut at_ms = rng.range_inclusive(500, 6_000);
            for _ in 0..rng.range_inclusive(1, 2) {
                let down_ms = rng.range_inclusive(50, 3_000);
                if at_ms + down_ms >= FAULT_PHASE_MS {
                    break;
                }
                plan.crashes.push(Crash { at_ms, down_ms });
                at_ms += down_ms + rng.range_inclusive(500, 5_000);
            }
        }
        if rng.chance(0.4) {
            for _ in 0..rng.range_inclusive(1, 3) {
                plan.llm_errors.push(*rng.pick(&[LlmError::RateLimited, LlmError::Overloaded]));
            }
        }
        plan
    }

    /// Faults by kind, as sweep summaries count them.
    pub fn counts(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        if self.latency_max_ms > 1 {
            counts.insert("link_latency".to_owned(), 1);
        }
        for partition in &self.partitions {
            let kind = format!("partition_{}_{}", partition.between.0, partition.between.1);
            *counts.entry(kind).or_default() += 1;
        }
        if !self.crashes.is_empty() {
            counts.insert("server_crash_restart".to_owned(), self.crashes.len() as u64);
        }
        for error in &self.llm_errors {
            let kind = match error {
                LlmError::RateLimited => "llm_rate_limited_reply",
                LlmError::Overloaded => "llm_overloaded_reply",
            };
            *counts.entry(kind.to_owned()).or_default() += 1;
        }
        counts
    }

    /// Every action with its time in ms, in time order, ending with the heal at
    /// `FAULT_PHASE_MS` (every link repaired; a crashed server was restarted by then).
    pub fn timeline(&self) -> Vec<(u64, Action)> {
        let mut timeline = Vec::new();
        for partition in &self.partitions {
            let (a, b) = partition.between;
            timeline.push((partition.at_ms, Action::Partition(a, b)));
            timeline.push((partition.at_ms + partition.duration_ms, Action::Repair(a, b)));
        }
        for crash in &self.crashes {
            timeline.push((crash.at_ms, Action::Crash));
            timeline.push((crash.at_ms + crash.down_ms, Action::Restart));
        }
        timeline.push((FAULT_PHASE_MS, Action::Repair(CLIENT, SERVER)));
        timeline.push((FAULT_PHASE_MS, Action::Repair(SERVER, LLM)));
        // Stable: actions at the same time keep the order above (a repair after its partition).
        timeline.sort_by_key(|(at_ms, _)| *at_ms);
        timeline
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_fault_ends_inside_the_fault_phase() {
        for seed in 0..500 {
            let plan = FaultPlan::draw(seed);
            assert!(plan.latency_min_ms <= plan.latency_max_ms, "seed {seed}");
            for (at_ms, _) in plan.timeline() {
                assert!(at_ms <= FAULT_PHASE_MS, "seed {seed}: {plan:?}");
            }
            for pair in plan.crashes.windows(2) {
                assert!(pair[0].at_ms + pair[0].down_ms < pair[1].at_ms, "seed {seed}: overlapping crashes");
            }
        }
    }

    #[test]
    fn seeds_draw_every_fault_kind() {
        let mut kinds = BTreeMap::new();
        for seed in 0..100 {
            for (kind, count) in FaultPlan::draw(seed).counts() {
                *kinds.entry(kind).or_insert(0) += count;
            }
        }
        let names: Vec<&str> = kinds.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "link_latency",
                "llm_overloaded_reply",
                "llm_rate_limited_reply",
                "partition_client_server",
                "partition_server_llm",
                "server_crash_restart"
            ]
        );
    }
}
