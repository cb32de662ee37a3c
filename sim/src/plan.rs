//! Fault plans: which faults a world injects, how strong, and when.
//!
//! Owns the serializable plan of one world: the swarm knobs (probabilities and strengths, see
//! `swarm`), the length of the fault phase after which everything heals, faults scheduled at
//! fixed times (crashes), and, in an explicit plan, the exact list of faults to inject. Also
//! owns the `Gate` through which every fault decision of the world passes. A plan is drawn
//! from a seed or read from a file; the same plan and seed give the same world. It never runs
//! anything.
//!
//! Explicit plans are what shrinking edits. The world meets fault *decision points* (each
//! message sent, each LLM request admitted, each lease granted, ...). In a swarm plan the
//! seed's generator decides each one; an explicit plan names the decision points that inject,
//! as `(kind, nth)`: the `nth` decision about a fault of that `kind`. A run records the faults
//! it injected in that form, so the explicit plan of a run replays it exactly (the generator
//! is drawn the same way in both modes), and removing an entry removes one fault.

use crate::rng::Rng;
use crate::swarm::{fault, FaultConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tempest_engine::Time;

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 60 * MINUTE_MS;

/// A host crash at a fixed time of the fault phase.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduledCrash {
    pub at_ms: u64,
    /// `store` or `worker-N` (1-based).
    pub host: String,
}

/// Fault kinds the world decides at decision points, which an explicit plan can name. The
/// others follow from these or from the config (`disk_unsynced_lost` from a store crash,
/// `llm_rate_limited` from the provider's quota).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Decided {
    MessageDropped,
    MessageDuplicated,
    MessageDelayed,
    Partition,
    WorkerCrash,
    StoreCrash,
    DiskTornWrite,
    LeaseExpired,
    LlmServerError,
    LlmTimeout,
    LlmInvalidOutput,
    ToolFailure,
    HumanLate,
    HumanDuplicate,
    HumanNever,
}

impl Decided {
    pub const ALL: [Decided; 15] = [
        Decided::MessageDropped,
        Decided::MessageDuplicated,
        Decided::MessageDelayed,
        Decided::Partition,
        Decided::WorkerCrash,
        Decided::StoreCrash,
        Decided::DiskTornWrite,
        Decided::LeaseExpired,
        Decided::LlmServerError,
        Decided::LlmTimeout,
        Decided::LlmInvalidOutput,
        Decided::ToolFailure,
        Decided::HumanLate,
        Decided::HumanDuplicate,
        Decided::HumanNever,
    ];

    /// The fault kind's name in plans and summaries (`swarm::fault`).
    pub fn name(self) -> &'static str {
        match self {
            Decided::MessageDropped => fault::MESSAGE_DROPPED,
            Decided::MessageDuplicated => fault::MESSAGE_DUPLICATED,
            Decided::MessageDelayed => fault::MESSAGE_DELAYED,
            Decided::Partition => fault::PARTITION,
            Decided::WorkerCrash => fault::WORKER_CRASH,
            Decided::StoreCrash => fault::STORE_CRASH,
            Decided::DiskTornWrite => fault::DISK_TORN_WRITE,
            Decided::LeaseExpired => fault::LEASE_EXPIRED,
            Decided::LlmServerError => fault::LLM_SERVER_ERROR,
            Decided::LlmTimeout => fault::LLM_TIMEOUT,
            Decided::LlmInvalidOutput => fault::LLM_INVALID_OUTPUT,
            Decided::ToolFailure => fault::TOOL_FAILURE,
            Decided::HumanLate => fault::HUMAN_LATE,
            Decided::HumanDuplicate => fault::HUMAN_DUPLICATE,
            Decided::HumanNever => fault::HUMAN_NEVER,
        }
    }

    fn from_name(name: &str) -> Option<Decided> {
        Decided::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One injected fault of an explicit plan: the `nth` (0-based) decision about `kind` injects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    pub kind: String,
    pub nth: u64,
    /// When the recorded run met this decision point; for people reading the plan.
    pub at_ms: u64,
    /// How long a partition lasts; shrinking shortens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
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
    /// Present in an explicit plan: exactly the faults to inject at decision points; the
    /// config's probabilities then decide nothing (they still shape the generator's draws).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Vec<ScheduledFault>>,
}

impl FaultPlan {
    /// No faults; the world still has latency.
    pub fn none() -> FaultPlan {
        FaultPlan { config: FaultConfig::none(), fault_phase_ms: 0, crashes: Vec::new(), schedule: None }
    }

    /// This plan made explicit with the faults a run of it injected.
    pub fn explicit(&self, injected: &[ScheduledFault]) -> FaultPlan {
        FaultPlan { schedule: Some(injected.to_vec()), ..self.clone() }
    }

    /// How many faults an explicit plan injects: scheduled faults, crashes and quota limits.
    /// None for a swarm plan, whose faults depend on the draws.
    pub fn fault_count(&self) -> Option<usize> {
        let schedule = self.schedule.as_ref()?;
        let quotas = usize::from(self.config.llm.rate_limit_rpm.is_some())
            + usize::from(self.config.llm.rate_limit_tpm.is_some());
        Some(schedule.len() + self.crashes.len() + quotas)
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
        FaultPlan { config, fault_phase_ms, crashes, schedule: None }
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
        for (i, entry) in plan.schedule.iter().flatten().enumerate() {
            if Decided::from_name(&entry.kind).is_none() {
                let names: Vec<&str> = Decided::ALL.iter().map(|kind| kind.name()).collect();
                return Err(format!(
                    "schedule[{i}] names fault kind {:?}, which is not decided at a decision point (one of {})",
                    entry.kind,
                    names.join(", ")
                ));
            }
        }
        Ok(plan)
    }
}

/// Every fault decision of one component of the world passes through its gate: a swarm plan's
/// gate lets the generator's draw decide, an explicit plan's gate injects exactly at the
/// scheduled decision points. Either way the gate records what it injected.
#[derive(Clone, Debug, Default)]
pub struct Gate {
    /// Explicit plans only: the decision points that inject, with a partition's duration.
    explicit: Option<BTreeMap<(Decided, u64), Option<u64>>>,
    /// Decisions met so far, by `Decided` in declaration order.
    decisions_seen: [u64; Decided::ALL.len()],
    injected: Vec<ScheduledFault>,
    healed: bool,
}

impl Gate {
    pub fn new(plan: &FaultPlan) -> Gate {
        let explicit = plan.schedule.as_ref().map(|schedule| {
            schedule
                .iter()
                .filter_map(|entry| Some(((Decided::from_name(&entry.kind)?, entry.nth), entry.duration_ms)))
                .collect()
        });
        Gate { explicit, ..Gate::default() }
    }

    /// Whether the decision point met at `at` injects a fault of `kind`. `drawn` is the
    /// generator's draw for it, which callers make in both modes so that an explicit plan
    /// consumes the generator exactly like the run it was recorded from.
    pub fn decide(&mut self, kind: Decided, at: Time, drawn: bool) -> bool {
        let seen = &mut self.decisions_seen[kind as usize];
        let nth = *seen;
        *seen += 1;
        let (inject, duration_ms) = match &self.explicit {
            _ if self.healed => (false, None),
            None => (drawn, None),
            Some(schedule) => match schedule.get(&(kind, nth)) {
                Some(duration_ms) => (true, *duration_ms),
                None => (false, None),
            },
        };
        if inject {
            self.injected.push(ScheduledFault { kind: kind.name().to_owned(), nth, at_ms: at.as_ms(), duration_ms });
        }
        inject
    }

    /// The scheduled duration of the fault just injected, if the plan fixes one.
    pub fn scheduled_duration_ms(&self) -> Option<u64> {
        self.injected.last().and_then(|entry| entry.duration_ms)
    }

    /// Records how long the fault just injected lasts.
    pub fn record_duration_ms(&mut self, duration_ms: u64) {
        if let Some(entry) = self.injected.last_mut() {
            entry.duration_ms = Some(duration_ms);
        }
    }

    /// The heal phase: no decision injects any more.
    pub fn heal(&mut self) {
        self.healed = true;
    }

    pub fn injected(&self) -> &[ScheduledFault] {
        &self.injected
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
    fn explicit_gate_injects_exactly_the_scheduled_decisions() {
        let mut plan = FaultPlan::none();
        plan.schedule = Some(vec![
            ScheduledFault { kind: fault::MESSAGE_DROPPED.into(), nth: 1, at_ms: 0, duration_ms: None },
            ScheduledFault { kind: fault::PARTITION.into(), nth: 0, at_ms: 0, duration_ms: Some(40) },
        ]);
        let mut gate = Gate::new(&plan);
        let drops: Vec<bool> = (0..3).map(|i| gate.decide(Decided::MessageDropped, Time(i), true)).collect();
        assert_eq!(drops, [false, true, false]);
        assert!(gate.decide(Decided::Partition, Time(9), false));
        assert_eq!(gate.scheduled_duration_ms(), Some(40));
        gate.heal();
        assert!(!gate.decide(Decided::MessageDropped, Time(10), true));
        assert_eq!(gate.injected().len(), 2);
        assert_eq!(gate.injected()[0].at_ms, 1);
    }

    #[test]
    fn swarm_gate_follows_the_draw_and_records_it() {
        let mut gate = Gate::new(&FaultPlan::none());
        assert!(!gate.decide(Decided::ToolFailure, Time(1), false));
        assert!(gate.decide(Decided::ToolFailure, Time(2), true));
        assert_eq!(
            gate.injected(),
            [ScheduledFault { kind: fault::TOOL_FAILURE.into(), nth: 1, at_ms: 2, duration_ms: None }]
        );
        let plan = FaultPlan::none().explicit(gate.injected());
        assert_eq!(FaultPlan::from_json(&plan.to_json()).unwrap(), plan);
        assert_eq!(plan.fault_count(), Some(1));
    }

    #[test]
    fn unknown_scheduled_kind_is_named() {
        let mut plan = FaultPlan::none();
        plan.schedule =
            Some(vec![ScheduledFault { kind: "disk_unsynced_lost".into(), nth: 0, at_ms: 0, duration_ms: None }]);
        let error = FaultPlan::from_json(&plan.to_json()).unwrap_err();
        assert!(error.contains("schedule[0]") && error.contains("disk_unsynced_lost"), "{error}");
    }

    #[test]
    fn unknown_crash_host_is_named() {
        let mut plan = FaultPlan::none();
        plan.crashes.push(ScheduledCrash { at_ms: 5, host: "worker-9".into() });
        let error = FaultPlan::from_json(&plan.to_json()).unwrap_err();
        assert!(error.contains("worker-9"), "{error}");
    }
}
