//! Fault plans: which faults a world injects, how strong, and when.
//!
//! Owns the serializable plan of one world: the swarm knobs (probabilities and strengths, see
//! `swarm`), the length of the fault phase after which everything heals, and faults scheduled
//! at fixed times (crashes). A plan is drawn from a seed or read from a file; the same plan
//! and seed give the same world. It never runs anything.

use crate::rng::Rng;
use crate::swarm::{fault, FaultConfig};
use serde::{Deserialize, Serialize};

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

/// A host crash at a fixed time of the fault phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledCrash {
    pub at_ms: u64,
    /// `store` or `worker-N` (1-based).
    pub host: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    pub config: FaultConfig,
    /// Faults happen during the first `fault_phase_ms` of simulated time; then every host is
    /// restarted, faults stop, and every accepted run must finish within the scenario's bound.
    pub fault_phase_ms: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub crashes: Vec<ScheduledCrash>,
}

impl FaultPlan {
    /// No faults; the world still has latency.
    pub fn none() -> FaultPlan {
        FaultPlan { config: FaultConfig::none(), fault_phase_ms: 0, crashes: Vec::new() }
    }

    /// The swarm plan of `seed`: a subset of fault kinds at drawn strengths, a fault phase of
    /// ten minutes to three hours, and up to three scheduled crashes of hosts whose crash kind
    /// is on.
    pub fn draw(seed: u64) -> FaultPlan {
        let rng = Rng::new(seed).fork("plan");
        let config = FaultConfig::draw(&rng.fork("swarm"));
        let mut r = rng.fork("schedule");
        let fault_phase_ms = r.range_inclusive(10 * MINUTE_MS, 3 * HOUR_MS);
        let mut hosts = Vec::new();
        if config.worker_crash_probability > 0.0 {
            hosts.extend(["worker-1", "worker-2", "worker-3"]);
        }
        if config.store_crash_probability > 0.0 {
            hosts.push("store");
        }
        let mut crashes = Vec::new();
        if !hosts.is_empty() {
            for _ in 0..r.below(4) {
                let at_ms = r.below(fault_phase_ms);
                crashes.push(ScheduledCrash { at_ms, host: (*r.pick(&hosts)).to_owned() });
            }
            crashes.sort_by(|a, b| (a.at_ms, &a.host).cmp(&(b.at_ms, &b.host)));
        }
        FaultPlan { config, fault_phase_ms, crashes }
    }

    /// Fault kinds this plan can inject, for summaries.
    pub fn kinds_on(&self) -> Vec<&'static str> {
        let c = &self.config;
        let mut kinds = Vec::new();
        let mut on = |yes: bool, kind| {
            if yes {
                kinds.push(kind);
            }
        };
        on(c.network.message_drop_probability > 0.0, fault::MESSAGE_DROPPED);
        on(c.network.message_duplicate_probability > 0.0, fault::MESSAGE_DUPLICATED);
        on(c.network.message_delay_probability > 0.0, fault::MESSAGE_DELAYED);
        on(c.partition_probability > 0.0, fault::PARTITION);
        on(c.worker_crash_probability > 0.0, fault::WORKER_CRASH);
        on(c.store_crash_probability > 0.0, fault::STORE_CRASH);
        on(c.lease_expiry_probability > 0.0, fault::LEASE_EXPIRED);
        on(c.llm.rate_limit_rpm.is_some(), fault::LLM_RATE_LIMITED);
        on(c.llm.server_error_probability > 0.0, fault::LLM_SERVER_ERROR);
        on(c.llm.timeout_probability > 0.0, fault::LLM_TIMEOUT);
        on(c.llm.invalid_output_probability > 0.0, fault::LLM_INVALID_OUTPUT);
        on(c.tool.failure_probability > 0.0, fault::TOOL_FAILURE);
        kinds
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("plans serialize") + "\n"
    }

    /// Reads a plan, naming the field at fault on error.
    pub fn from_json(text: &str) -> Result<FaultPlan, String> {
        let plan: FaultPlan = serde_json::from_str(text).map_err(|e| format!("not a fault plan: {e}"))?;
        plan.config.validate().map_err(|e| e.to_string())?;
        for crash in &plan.crashes {
            let known = crash.host == "store"
                || crash
                    .host
                    .strip_prefix("worker-")
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|n| (1..=3).contains(&n));
            if !known {
                return Err(format!(
                    "crash at {} ms names unknown host {:?} (store, worker-1, worker-2 or worker-3)",
                    crash.at_ms, crash.host
                ));
            }
        }
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drawn_plans_round_trip_through_json() {
        for seed in 0..50 {
            let plan = FaultPlan::draw(seed);
            assert_eq!(FaultPlan::from_json(&plan.to_json()).unwrap(), plan, "seed {seed}");
        }
    }

    #[test]
    fn unknown_crash_host_is_named() {
        let mut plan = FaultPlan::none();
        plan.crashes.push(ScheduledCrash { at_ms: 5, host: "worker-9".into() });
        let error = FaultPlan::from_json(&plan.to_json()).unwrap_err();
        assert!(error.contains("worker-9"), "{error}");
    }
}
