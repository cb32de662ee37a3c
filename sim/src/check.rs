//! Checks: the invariants every world must keep, as named functions.
//!
//! Owns the evidence the world gathers while it runs (accepted starts, acknowledged signals,
//! which worker was granted which activity attempt, rate-limited dispatches, applied tool
//! effects, "sometimes" facts) and the checks over it and the final store. Each check returns
//! the first violation it finds with the ids involved. Checks only read; they never repair.

use crate::scenario::Scenario;
use crate::world::CheckFailure;
use std::collections::{BTreeMap, BTreeSet};
use tempest_engine::history::{History, Kind};
use tempest_engine::machine::Machine;
use tempest_engine::ratelimit::Limit;
use tempest_engine::store::Store;
use tempest_engine::{Registry, Time};

/// The rate-limiter key scenarios put on their LLM activities.
pub const LLM_KEY: &str = "llm:sim-model";
/// The most tokens one LLM request of a scenario may use (the smallest drawn TPM quota).
pub const TOKENS_PER_REQUEST_MAX: u64 = 20_000;

/// What the world saw happen, for the checks at the end.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Workflow ids whose start the client saw acknowledged.
    pub accepted_starts: BTreeSet<String>,
    /// (workflow id, signal id) the store acknowledged as recorded.
    pub acked_signals: BTreeSet<(String, String)>,
    /// (run id, seq, attempt) -> workers the store leased that attempt to.
    pub grants: BTreeMap<(String, u32, u32), BTreeSet<String>>,
    /// (worker, key, time, tokens) of every rate-limited dispatch.
    pub dispatches: Vec<(String, String, Time, u64)>,
    pub worker_limits: BTreeMap<String, Limit>,
    /// Business effects applied by tools, in order.
    pub effects: Vec<String>,
    applied: BTreeSet<String>,
    pub sometimes: BTreeMap<&'static str, u64>,
}

impl Evidence {
    pub fn grant(&mut self, run_id: &str, seq: u32, attempt: u32, worker: &str) {
        let workers = self.grants.entry((run_id.to_owned(), seq, attempt)).or_default();
        if !workers.is_empty() && !workers.contains(worker) {
            *self.sometimes.entry(sometimes::LEASE_TAKEN_OVER).or_insert(0) += 1;
        }
        workers.insert(worker.to_owned());
    }

    pub fn dispatched(&mut self, worker: &str, key: &str, time: Time, tokens: u64) {
        self.dispatches.push((worker.to_owned(), key.to_owned(), time, tokens));
    }

    /// Records a tool's side effect; `false` if it was already applied once.
    pub fn apply_effect(&mut self, effect: &str) -> bool {
        self.effects.push(effect.to_owned());
        self.applied.insert(effect.to_owned())
    }

    pub fn sometimes_add(&mut self, fact: &'static str) {
        *self.sometimes.entry(fact).or_insert(0) += 1;
    }
}

/// The "sometimes" facts a sweep must reach: outcomes the checks only test if they happen.
/// A sweep of 10,000 seeds over every scenario reaches each (a test asserts it).
pub mod sometimes {
    pub const RETRIED_AFTER_429: &str = "retried_after_429_waiting_retry_after";
    pub const WORKER_CRASHED_MID_ACTIVITY: &str = "worker_crashed_mid_activity";
    pub const LEASE_TAKEN_OVER: &str = "lease_expired_and_another_worker_took_over";
    pub const SIGNAL_BEFORE_WAIT: &str = "signal_arrived_before_its_wait";
    pub const HUMAN_NEVER_ANSWERED: &str = "human_never_answered";
    pub const STORE_CRASH_LOST_WRITES: &str = "store_crash_lost_unsynced_writes";
    pub const LLM_ANSWER_FAILED_VALIDATION: &str = "llm_answer_failed_validation";
    /// Reported by scenarios with compensations (`Scenario::sometimes`).
    pub const COMPENSATION_RAN: &str = "compensation_ran";

    pub const ALL: [&str; 8] = [
        RETRIED_AFTER_429,
        WORKER_CRASHED_MID_ACTIVITY,
        LEASE_TAKEN_OVER,
        SIGNAL_BEFORE_WAIT,
        HUMAN_NEVER_ANSWERED,
        STORE_CRASH_LOST_WRITES,
        LLM_ANSWER_FAILED_VALIDATION,
        COMPENSATION_RAN,
    ];
}

fn failure(check: &str, message: String) -> CheckFailure {
    CheckFailure { check: check.to_owned(), message }
}

/// Every check over the finished world, in a fixed order.
pub fn run_all(
    scenario: &dyn Scenario,
    store: &Store,
    histories: &[History],
    evidence: &Evidence,
) -> Result<Replayed, CheckFailure> {
    run_all_judged(scenario, check_starts_exactly_once(store, evidence), histories, evidence)
}

/// `run_all` with the one check that reads the store itself already judged (`starts`): a
/// finished world can then hand its histories over from the store instead of copying them.
/// The verdicts come in the same order as `run_all`'s.
pub fn run_all_judged(
    scenario: &dyn Scenario,
    starts: Result<(), CheckFailure>,
    histories: &[History],
    evidence: &Evidence,
) -> Result<Replayed, CheckFailure> {
    // The more specific check first: a second ending is also malformed, but says more.
    check_runs_complete_exactly_once(histories)?;
    check_histories_well_formed(histories)?;
    starts?;
    check_signals_recorded_once(histories, evidence)?;
    check_activity_results_recorded_once(histories, evidence)?;
    check_rate_limits_held(evidence)?;
    let replayed = check_replay_reproduces(scenario, histories)?;
    Ok(replayed)
}

/// Every history is well formed: numbered, ordered in time, and each event allowed where it is.
pub fn check_histories_well_formed(histories: &[History]) -> Result<(), CheckFailure> {
    for history in histories {
        history
            .validate()
            .map_err(|e| failure("check_histories_well_formed", format!("run {}: {e}", history.run_id)))?;
    }
    Ok(())
}

/// Every accepted start has exactly one run chain: one first run, then only runs continued
/// from the one before.
pub fn check_starts_exactly_once(store: &Store, evidence: &Evidence) -> Result<(), CheckFailure> {
    for workflow_id in &evidence.accepted_starts {
        if store.chain(workflow_id).is_empty() {
            return Err(failure(
                "check_starts_exactly_once",
                format!("workflow {workflow_id}: start acknowledged but no run exists"),
            ));
        }
    }
    for workflow_id in store.workflow_ids() {
        let chain = store.chain(workflow_id);
        for (position, run_id) in chain.iter().enumerate() {
            let run = store.run(run_id).expect("chains name known runs");
            let started = run.events.first().map(|e| &e.kind).or_else(|| run.inbox.front().map(|(_, k)| k));
            let Some(Kind::WorkflowStarted { continued_from, .. }) = started else {
                return Err(failure("check_starts_exactly_once", format!("run {run_id} has no workflow_started")));
            };
            let expected = position.checked_sub(1).map(|p| chain[p].clone());
            if *continued_from != expected {
                return Err(failure("check_starts_exactly_once", format!("workflow {workflow_id}: run {run_id} (run {} of {}) continues {continued_from:?}, expected {expected:?}: the workflow was started twice", position + 1, chain.len())));
            }
        }
    }
    Ok(())
}

/// No run records more than one ending, and an ending is its last event.
pub fn check_runs_complete_exactly_once(histories: &[History]) -> Result<(), CheckFailure> {
    for history in histories {
        let endings: Vec<u64> = history.events.iter().filter(|e| e.kind.is_terminal()).map(|e| e.index).collect();
        if endings.len() > 1 {
            return Err(failure(
                "check_runs_complete_exactly_once",
                format!("run {} completed {} times (events {endings:?})", history.run_id, endings.len()),
            ));
        }
    }
    Ok(())
}

/// Every acknowledged signal is in its workflow's histories exactly once.
pub fn check_signals_recorded_once(histories: &[History], evidence: &Evidence) -> Result<(), CheckFailure> {
    let mut counts: BTreeMap<(&str, &str), u32> = BTreeMap::new();
    for history in histories {
        for event in &history.events {
            if let Kind::SignalReceived { signal_id, .. } = &event.kind {
                *counts.entry((history.workflow_id.as_str(), signal_id.as_str())).or_default() += 1;
            }
        }
    }
    for ((workflow_id, signal_id), count) in &counts {
        if *count > 1 {
            return Err(failure(
                "check_signals_recorded_once",
                format!("workflow {workflow_id}: signal {signal_id} recorded {count} times"),
            ));
        }
    }
    for (workflow_id, signal_id) in &evidence.acked_signals {
        if !counts.contains_key(&(workflow_id.as_str(), signal_id.as_str())) {
            return Err(failure(
                "check_signals_recorded_once",
                format!("workflow {workflow_id}: signal {signal_id} was acknowledged but is in no history"),
            ));
        }
    }
    Ok(())
}

/// Every activity result is recorded once, and only from a worker that held that attempt.
pub fn check_activity_results_recorded_once(histories: &[History], evidence: &Evidence) -> Result<(), CheckFailure> {
    for history in histories {
        let mut closed: BTreeMap<u32, u64> = BTreeMap::new();
        // The grant key of the event at hand: the run id is copied once per history, not
        // once per event.
        let mut grant_key = (history.run_id.clone(), 0, 0);
        for event in &history.events {
            let (seq, attempt, worker, closes) = match &event.kind {
                Kind::ActivityCompleted { seq, attempt, worker, .. }
                | Kind::ActivityFailed { seq, attempt, worker, .. } => (*seq, *attempt, worker, true),
                Kind::ActivityAttemptFailed { seq, attempt, worker, .. } => (*seq, *attempt, worker, false),
                _ => continue,
            };
            if closes {
                if let Some(first) = closed.insert(seq, event.index) {
                    return Err(failure(
                        "check_activity_results_recorded_once",
                        format!(
                            "run {} activity seq {seq}: result recorded at events {first} and {}",
                            history.run_id, event.index
                        ),
                    ));
                }
            }
            if let Some(worker) = worker {
                (grant_key.1, grant_key.2) = (seq, attempt);
                let granted = evidence.grants.get(&grant_key);
                if !granted.is_some_and(|workers| workers.contains(worker)) {
                    return Err(failure(
                        "check_activity_results_recorded_once",
                        format!("run {} activity seq {seq}: event {} records attempt {attempt} from {worker}, which never held that attempt (held by {granted:?})", history.run_id, event.index),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Each worker dispatched within its own limits in every 60 s window.
pub fn check_rate_limits_held(evidence: &Evidence) -> Result<(), CheckFailure> {
    let mut by_worker_key: BTreeMap<(&str, &str), Vec<(Time, u64)>> = BTreeMap::new();
    for (worker, key, time, tokens) in &evidence.dispatches {
        by_worker_key.entry((worker.as_str(), key.as_str())).or_default().push((*time, *tokens));
    }
    for ((worker, key), dispatches) in by_worker_key {
        let Some(limit) = evidence.worker_limits.get(key) else {
            continue;
        };
        let mut start = 0;
        let mut tokens_in_window = 0;
        for (end, (time, tokens)) in dispatches.iter().enumerate() {
            tokens_in_window += tokens;
            while dispatches[start].0.as_ms() + 60_000 <= time.as_ms() {
                tokens_in_window -= dispatches[start].1;
                start += 1;
            }
            let count = (end - start + 1) as u64;
            if limit.requests_per_minute.is_some_and(|rpm| count > rpm) {
                return Err(failure(
                    "check_rate_limits_held",
                    format!(
                        "{worker} dispatched {count} requests under {key} in the minute to {time}, over its limit {:?}",
                        limit.requests_per_minute
                    ),
                ));
            }
            if limit.tokens_per_minute.is_some_and(|tpm| tokens_in_window > tpm) {
                return Err(failure("check_rate_limits_held", format!("{worker} dispatched {tokens_in_window} tokens under {key} in the minute to {time}, over its limit {:?}", limit.tokens_per_minute)));
            }
        }
    }
    Ok(())
}

/// What the replay check saw besides its verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Replayed {
    /// Signals that arrived while the workflow was not waiting for them and that a later wait
    /// took from the buffer (the "signal before its wait" case).
    pub signals_taken_after_arriving_early: u64,
}

/// Replaying each final history with today's workflow code reproduces it exactly.
pub fn check_replay_reproduces(scenario: &dyn Scenario, histories: &[History]) -> Result<Replayed, CheckFailure> {
    let registry = scenario.registry();
    let mut replayed = Replayed::default();
    for history in histories {
        let one =
            replay_reproduces(&registry, history).map_err(|message| failure("check_replay_reproduces", message))?;
        replayed.signals_taken_after_arriving_early += one.signals_taken_after_arriving_early;
    }
    Ok(replayed)
}

/// Replays one history with the workflow code of `registry`: it must issue exactly the
/// recorded commands, nothing past the end, and end where the history ends. The error names
/// the run, and the event and command at the first divergence.
pub fn replay_reproduces(registry: &Registry, history: &History) -> Result<Replayed, String> {
    let mut replayed = Replayed::default();
    // Signal names with a buffered signal, and how many were buffered after the arrival.
    let mut early: BTreeMap<&str, usize> = BTreeMap::new();
    let watch = |index: usize, machine: &Machine| {
        if let Kind::SignalReceived { name, .. } = &history.events[index].kind {
            let buffered = machine.buffered_signal_count(name);
            if buffered > 0 {
                early.insert(name.as_str(), buffered);
            }
        }
    };
    let (machine, extra) = Machine::replay_observing(registry, &history.events, watch).map_err(|e| e.to_string())?;
    for (name, buffered) in &early {
        if machine.buffered_signal_count(name) < *buffered {
            replayed.signals_taken_after_arriving_early += 1;
        }
    }
    if let Some(first) = extra.first() {
        return Err(format!(
            "run {}: replay issues {} commands past the end of the history, first {first}",
            history.run_id,
            extra.len(),
        ));
    }
    let ended = history.events.last().is_some_and(|e| e.kind.is_terminal());
    if ended != machine.is_closed() {
        return Err(format!(
            "run {}: history ended={ended} but replayed code ended={}",
            history.run_id,
            machine.is_closed()
        ));
    }
    Ok(replayed)
}
