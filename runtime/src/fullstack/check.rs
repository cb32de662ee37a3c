//! The checks of a full-stack world, as named functions over what the client saw, the
//! histories it fetched over HTTP and the server's durable records.
//!
//! Owns the evidence a world gathers (run ids the server answered starts with, acknowledged
//! signals, activity attempts the store leased, runs the client saw closed) and the checks
//! over it. The checks that apply to final histories are the simulator's own
//! (`tempest_sim::check`), so both modes hold the same guarantees under the same names. Checks
//! only read; they never repair.

use super::workload::Workload;
use std::collections::{BTreeMap, BTreeSet};
use tempest_engine::history::History;
use tempest_engine::store::{Record, Store};
use tempest_engine::Registry;
use tempest_sim::check as sim;
use tempest_sim::world::CheckFailure;

/// What the world saw happen.
#[derive(Clone, Debug, Default)]
pub struct Evidence {
    /// Workflow id -> every run id the server answered a start of it with.
    pub started: BTreeMap<String, BTreeSet<String>>,
    /// Workflow ids whose start the client could not get acknowledged in time.
    pub never_accepted: BTreeSet<String>,
    /// (workflow id, signal id) the server acknowledged.
    pub acked_signals: BTreeSet<(String, String)>,
    /// (run id, seq, attempt) -> workers the store leased that attempt to.
    pub grants: BTreeMap<(String, u32, u32), BTreeSet<String>>,
    /// Workflow id -> (status, time in ms) when the client saw its run closed.
    pub closed: BTreeMap<String, (String, u64)>,
    /// Latest history of each workflow id, as fetched over HTTP.
    pub histories: BTreeMap<String, History>,
    /// Answers the client did not expect (a 4xx to a valid request), with the workflow id.
    pub unexpected: Vec<String>,
}

fn failure(check: &str, message: String) -> CheckFailure {
    CheckFailure { check: check.to_owned(), message }
}

/// Every check, the more specific first (as in the simulator), liveness last: a broken
/// invariant explains a stuck run better than the stuck run does.
pub fn run_all(
    workload: &Workload,
    evidence: &Evidence,
    records: &[Record],
    heal_deadline_ms: u64,
) -> Result<(), CheckFailure> {
    let histories: Vec<History> = evidence.histories.values().cloned().collect();
    let mut sim_evidence = sim::Evidence::default();
    sim_evidence.accepted_starts = evidence.started.keys().cloned().collect();
    sim_evidence.acked_signals = evidence.acked_signals.clone();
    sim_evidence.grants = evidence.grants.clone();
    sim::check_runs_complete_exactly_once(&histories)?;
    sim::check_histories_well_formed(&histories)?;
    check_starts_exactly_once(evidence, records)?;
    check_answers_expected(evidence)?;
    sim::check_signals_recorded_once(&histories, &sim_evidence)?;
    sim::check_activity_results_recorded_once(&histories, &sim_evidence)?;
    check_replay_reproduces(&workload.registry, &histories)?;
    if let Some(business) = &workload.business_check {
        business(&histories).map_err(|message| failure(&format!("check_{}", workload.scenario), message))?;
    }
    check_liveness_after_heal(evidence, heal_deadline_ms)?;
    Ok(())
}

/// Every start the server acknowledged has exactly one run: every answer to a workflow id
/// (retries and repeats included) named the same run, and the durable records hold one first
/// run per workflow id (the simulator's check over the store rebuilt from those records).
pub fn check_starts_exactly_once(evidence: &Evidence, records: &[Record]) -> Result<(), CheckFailure> {
    for (workflow_id, run_ids) in &evidence.started {
        if run_ids.len() > 1 {
            return Err(failure(
                "check_starts_exactly_once",
                format!("workflow {workflow_id}: starts were answered with {} runs {run_ids:?}", run_ids.len()),
            ));
        }
    }
    let (store, _) = Store::recover(Default::default(), records.iter().cloned());
    let mut sim_evidence = sim::Evidence::default();
    sim_evidence.accepted_starts = evidence.started.keys().cloned().collect();
    sim::check_starts_exactly_once(&store, &sim_evidence)
}

/// The server answered every valid request with success or a retryable error.
pub fn check_answers_expected(evidence: &Evidence) -> Result<(), CheckFailure> {
    match evidence.unexpected.first() {
        Some(first) => Err(failure(
            "check_answers_expected",
            format!("{} unexpected answers, first: {first}", evidence.unexpected.len()),
        )),
        None => Ok(()),
    }
}

/// Replaying each fetched history with the workflow code reproduces it exactly.
pub fn check_replay_reproduces(registry: &Registry, histories: &[History]) -> Result<(), CheckFailure> {
    for history in histories {
        sim::replay_reproduces(registry, history).map_err(|message| failure("check_replay_reproduces", message))?;
    }
    Ok(())
}

/// After the heal, every start was acknowledged, and the client saw every accepted run closed
/// by `deadline_ms`, and fetched its history.
pub fn check_liveness_after_heal(evidence: &Evidence, deadline_ms: u64) -> Result<(), CheckFailure> {
    if let Some(workflow_id) = evidence.never_accepted.first() {
        return Err(failure(
            "check_liveness_after_heal",
            format!("workflow {workflow_id}: start not acknowledged by {deadline_ms} ms"),
        ));
    }
    for workflow_id in evidence.started.keys() {
        match evidence.closed.get(workflow_id) {
            None => {
                return Err(failure(
                    "check_liveness_after_heal",
                    format!("workflow {workflow_id}: run still open at {deadline_ms} ms"),
                ))
            }
            Some((_, at_ms)) if *at_ms > deadline_ms => {
                return Err(failure(
                    "check_liveness_after_heal",
                    format!("workflow {workflow_id}: run closed at {at_ms} ms, after the bound {deadline_ms} ms"),
                ))
            }
            Some(_) => {}
        }
        if !evidence.histories.contains_key(workflow_id) {
            return Err(failure(
                "check_liveness_after_heal",
                format!("workflow {workflow_id}: history could not be fetched after the heal"),
            ));
        }
    }
    Ok(())
}
