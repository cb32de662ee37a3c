//! What the client of a full-stack world does: which runs it starts when, which signals it
//! sends, and how long runs may take after the heal; and the workflow code the server runs.
//!
//! Owns the built-in `steps` workload (the runtime's own workflow with flaky activities, a
//! timer and a signal) and the adapter that turns a simulator scenario (hello_llm, ...) into
//! a workload, its start times compressed into the fault phase. It never talks to the network.

use super::faults::FAULT_PHASE_MS;
use crate::builtin;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tempest_engine::history::History;
use tempest_engine::services::Activities;
use tempest_engine::Registry;
use tempest_sim::rng::Rng;
use tempest_sim::scenario::Finished;

/// Starts are spread over this much of the fault phase, in ms.
const START_WINDOW_MS: u64 = FAULT_PHASE_MS * 2 / 3;

/// A scenario's own check of the final histories.
pub type BusinessCheck = Arc<dyn Fn(&[History]) -> Result<(), String> + Send + Sync>;

/// One start the client sends (and retries until the server acknowledges it).
#[derive(Clone, Debug)]
pub struct Start {
    pub at_ms: u64,
    pub workflow_id: String,
    pub workflow_type: String,
    pub input: Value,
    /// Send the start once more after it was acknowledged, as a client that lost the answer
    /// would: the server must answer with the same run.
    pub repeat: bool,
}

/// One signal the client sends to a started run, retried under the same signal id.
#[derive(Clone, Debug)]
pub struct Signal {
    /// Not before the run's start was acknowledged.
    pub at_ms: u64,
    pub workflow_id: String,
    pub name: String,
    pub signal_id: String,
    pub payload: Value,
}

#[derive(Clone)]
pub struct Workload {
    pub scenario: String,
    pub registry: Registry,
    pub activities: Vec<Activities>,
    pub starts: Vec<Start>,
    pub signals: Vec<Signal>,
    /// After the heal, every accepted run must have closed within this.
    pub liveness_bound: Duration,
    pub business_check: Option<BusinessCheck>,
}

/// The runtime's `steps` workflow: a few runs with flaky activities, some with a durable
/// sleep, some waiting for a signal the client sends.
pub fn steps(seed: u64) -> Workload {
    let mut rng = Rng::new(seed).fork("full-stack-steps");
    let mut registry = Registry::new();
    let mut activities = Activities::new();
    builtin::register(&mut registry, &mut activities);
    let mut starts = Vec::new();
    let mut signals = Vec::new();
    for index in 0..rng.range_inclusive(3, 6) {
        let workflow_id = format!("steps-{index}");
        let at_ms = rng.below(START_WINDOW_MS);
        let signal = rng.chance(0.5).then(|| "approve".to_owned());
        let sleep_ms = if rng.chance(0.5) { rng.range_inclusive(100, 5_000) } else { 0 };
        let input = json!({
            "step_count": rng.range_inclusive(1, 4),
            "fail_attempt_count": rng.range_inclusive(0, 2),
            "sleep_ms": sleep_ms,
            "signal": signal,
        });
        if let Some(name) = signal {
            signals.push(Signal {
                at_ms: at_ms + rng.below(FAULT_PHASE_MS),
                workflow_id: workflow_id.clone(),
                name,
                signal_id: format!("{workflow_id}-approval"),
                payload: json!({ "approved_by": format!("user-{index}") }),
            });
        }
        starts.push(Start {
            at_ms,
            workflow_id,
            workflow_type: builtin::WORKFLOW_TYPE.to_owned(),
            input,
            repeat: rng.chance(0.3),
        });
    }
    Workload {
        scenario: builtin::WORKFLOW_TYPE.to_owned(),
        registry,
        activities: vec![activities],
        starts,
        signals,
        liveness_bound: Duration::from_secs(60),
        business_check: None,
    }
}

/// A simulator scenario whose runs need nothing but the LLM and the built-in tools (no
/// humans): its workload of `seed`, start times compressed into the fault phase, and its
/// business check over the final histories. The LLM is the mock provider (it echoes, never
/// calls tools) and the tools are `services::MockTools`, whose side effects the check does not
/// see: it is given none.
pub fn from_scenario(scenario: Arc<dyn tempest_sim::Scenario>, seed: u64) -> Workload {
    let mut rng = Rng::new(seed).fork("workload");
    let mut repeats = Rng::new(seed).fork("full-stack-repeats");
    let starts = scenario
        .workload(&mut rng)
        .into_iter()
        .map(|start| Start {
            at_ms: start.at.0 % START_WINDOW_MS,
            workflow_id: start.workflow_id,
            workflow_type: start.workflow_type,
            input: start.input,
            repeat: repeats.chance(0.3),
        })
        .collect();
    let checked = scenario.clone();
    Workload {
        scenario: scenario.name().to_owned(),
        registry: scenario.registry(),
        activities: vec![scenario.activities()],
        starts,
        signals: Vec::new(),
        // The scenario's own bound is sized for its simulated LLM's quotas and latencies; the
        // mock provider here answers at once, so a few of its retry intervals are enough.
        liveness_bound: Duration::from_secs(300).min(scenario.liveness_bound()),
        business_check: Some(Arc::new(move |histories: &[History]| {
            checked.check(&Finished { histories, tool_effects: &[] })
        })),
    }
}
