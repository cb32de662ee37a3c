//! The full-stack mode end to end: seeds of the runtime's real HTTP API, API client and LLM
//! client over turmoil, under partitions, latency, server crashes and provider errors, with
//! every check; the same seed gives the same digest; and each check fails when the property
//! it guards is broken (by a store that breaks it, written here).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tempest_engine::history::History;
use tempest_engine::run::AttemptReport;
use tempest_engine::store::{Ack, ActivityLease, SignalStatus, TickReport, WorkflowCompletion, WorkflowTask};
use tempest_engine::{Ctx, Registry, Time, WorkflowResult};
use tempest_runtime::fullstack::faults::FaultPlan;
use tempest_runtime::fullstack::{self, check, workload, Options, Outcome, Workload};
use tempest_runtime::store::{RunStore, RunView, StoreFuture};
use tokio::sync::watch;

fn scenario(name: &str, seed: u64) -> Workload {
    let scenario: Arc<dyn tempest_sim::Scenario> = tempest_scenarios::find(name).expect("built in").into();
    workload::from_scenario(scenario, seed)
}

fn hello_llm(seed: u64) -> Workload {
    scenario("hello_llm", seed)
}

fn assert_passed(outcome: &Outcome) {
    if let Some(failure) = &outcome.failure {
        panic!(
            "{} seed {} failed {}: {}\nrerun with: tempest run {} --seed {} --mode full-stack",
            outcome.scenario, outcome.seed, failure.check, failure.message, outcome.scenario, outcome.seed
        );
    }
}

#[test]
fn full_stack_seeds_pass_every_check_under_faults() {
    let mut faults: BTreeMap<String, u64> = BTreeMap::new();
    let mut runs_completed = 0;
    let others = ["agent_loop", "rag_ingest", "validated_output"];
    let worlds = (0..24)
        .map(|seed| (workload::steps(seed), seed))
        .chain((0..12).map(|seed| (hello_llm(seed), seed)))
        .chain(others.iter().flat_map(|name| (0..3).map(move |seed| (scenario(name, seed), seed))));
    for (workload, seed) in worlds {
        let outcome = fullstack::run(&workload, &Options::seeded(seed));
        assert_passed(&outcome);
        assert_eq!(outcome.runs_completed, workload.starts.len() as u64, "seed {seed}: every run closed");
        runs_completed += outcome.runs_completed;
        for (kind, count) in outcome.faults {
            *faults.entry(kind).or_default() += count;
        }
    }
    // The seeds met every fault kind, so passing means something.
    for kind in [
        "link_latency",
        "partition_client_server",
        "partition_server_llm",
        "server_crash_restart",
        "llm_rate_limited_reply",
        "llm_overloaded_reply",
    ] {
        assert!(faults.get(kind).is_some_and(|count| *count > 0), "no {kind} injected: {faults:?}");
    }
    assert!(runs_completed > 100, "{runs_completed} runs completed");
}

#[test]
fn same_seed_same_digest() {
    for seed in [3, 7] {
        let first = fullstack::run(&workload::steps(seed), &Options::seeded(seed));
        let second = fullstack::run(&workload::steps(seed), &Options::seeded(seed));
        assert_eq!(first.digest, second.digest, "steps seed {seed}");
        assert_eq!(first.simulated_ms, second.simulated_ms, "steps seed {seed}");
        let first = fullstack::run(&hello_llm(seed), &Options::seeded(seed));
        let second = fullstack::run(&hello_llm(seed), &Options::seeded(seed));
        assert_eq!(first.digest, second.digest, "hello_llm seed {seed}");
    }
}

/// A `steps` workload with every start repeated, a signal per run, and no faults, so a
/// broken store is the only thing that can go wrong.
fn plain_steps(seed: u64) -> Workload {
    let mut workload = workload::steps(seed);
    for start in &mut workload.starts {
        start.repeat = true;
    }
    workload.liveness_bound = Duration::from_secs(10);
    workload
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Breakage {
    /// A start of a workflow id seen before makes a new run instead of returning the first.
    NewRunPerStart,
    /// Signals are acknowledged without being recorded.
    AckSignalsUnrecorded,
    /// A closed run's history is served with its ending twice.
    EndingServedTwice,
    /// A history is served with its last event misnumbered.
    MisnumberedHistory,
    /// Activity results are reported under a worker that never held the attempt.
    ForeignWorker,
    /// No workflow task is ever handed out.
    StarveWorkflowTasks,
    /// Every run reads back as a run of another workflow type, so starts are refused (409).
    WrongTypeOnRead,
}

/// The server's store with one property broken.
struct Broken {
    inner: Arc<dyn RunStore>,
    breakage: Breakage,
    started: Mutex<BTreeSet<String>>,
}

fn broken(breakage: Breakage) -> fullstack::StoreWrapper {
    Arc::new(move |inner| Arc::new(Broken { inner, breakage, started: Mutex::new(BTreeSet::new()) }))
}

impl RunStore for Broken {
    fn start(&self, now: Time, workflow_id: &str, workflow_type: &str, input: Value) -> StoreFuture<'_, String> {
        let again = !self.started.lock().unwrap().insert(workflow_id.to_owned());
        if again && self.breakage == Breakage::NewRunPerStart {
            return self.inner.start(now, &format!("{workflow_id}-again"), workflow_type, input);
        }
        self.inner.start(now, workflow_id, workflow_type, input)
    }
    fn signal(
        &self,
        now: Time,
        workflow_id: &str,
        signal_id: &str,
        name: &str,
        payload: Value,
    ) -> StoreFuture<'_, SignalStatus> {
        if self.breakage == Breakage::AckSignalsUnrecorded {
            return Box::pin(async { Ok(SignalStatus::Recorded) });
        }
        self.inner.signal(now, workflow_id, signal_id, name, payload)
    }
    fn cancel(&self, now: Time, workflow_id: &str, reason: &str) -> StoreFuture<'_, bool> {
        self.inner.cancel(now, workflow_id, reason)
    }
    fn poll_workflow_task(&self, now: Time, worker: &str) -> StoreFuture<'_, Option<WorkflowTask>> {
        if self.breakage == Breakage::StarveWorkflowTasks {
            return Box::pin(async { Ok(None) });
        }
        self.inner.poll_workflow_task(now, worker)
    }
    fn complete_workflow_task(&self, now: Time, worker: &str, completion: WorkflowCompletion) -> StoreFuture<'_, Ack> {
        self.inner.complete_workflow_task(now, worker, completion)
    }
    fn abandon_workflow_task(&self, run_id: &str, token: u64) -> StoreFuture<'_, Ack> {
        self.inner.abandon_workflow_task(run_id, token)
    }
    fn poll_activity_task(
        &self,
        now: Time,
        worker: &str,
        blocked_keys: &BTreeSet<String>,
    ) -> StoreFuture<'_, Option<ActivityLease>> {
        self.inner.poll_activity_task(now, worker, blocked_keys)
    }
    fn heartbeat(&self, now: Time, run_id: &str, seq: u32, token: u64) -> StoreFuture<'_, Ack> {
        self.inner.heartbeat(now, run_id, seq, token)
    }
    fn complete_activity_task(
        &self,
        now: Time,
        run_id: &str,
        seq: u32,
        token: u64,
        report: AttemptReport,
        worker: &str,
    ) -> StoreFuture<'_, Ack> {
        let worker = if self.breakage == Breakage::ForeignWorker { "intruder" } else { worker };
        self.inner.complete_activity_task(now, run_id, seq, token, report, worker)
    }
    fn tick(&self, now: Time) -> StoreFuture<'_, TickReport> {
        self.inner.tick(now)
    }
    fn next_wakeup(&self, now: Time) -> Option<Time> {
        self.inner.next_wakeup(now)
    }
    fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes()
    }
    fn run(&self, workflow_id: &str) -> StoreFuture<'_, Option<RunView>> {
        let view = self.inner.run(workflow_id);
        let breakage = self.breakage;
        Box::pin(async move {
            let mut view = view.await?;
            if breakage == Breakage::WrongTypeOnRead {
                let mut other = view.unwrap_or(RunView {
                    workflow_id: String::new(),
                    run_id: String::new(),
                    workflow_type: String::new(),
                    status: "running",
                    result: None,
                    error: None,
                    event_count: 0,
                });
                other.workflow_type = "another_type".to_owned();
                view = Some(other);
            }
            Ok(view)
        })
    }
    fn runs(&self, status: Option<&str>) -> StoreFuture<'_, Vec<RunView>> {
        self.inner.runs(status)
    }
    fn history(&self, workflow_id: &str) -> StoreFuture<'_, Option<History>> {
        let history = self.inner.history(workflow_id);
        let breakage = self.breakage;
        Box::pin(async move {
            let mut history = history.await?;
            if let Some(history) = &mut history {
                let closed = history.events.last().is_some_and(|e| e.kind.is_terminal());
                match breakage {
                    Breakage::EndingServedTwice if closed => {
                        let mut again = history.events.last().cloned().expect("a closed run has events");
                        again.index += 1;
                        history.events.push(again);
                    }
                    Breakage::MisnumberedHistory => {
                        if let Some(last) = history.events.last_mut() {
                            last.index += 5;
                        }
                    }
                    _ => {}
                }
            }
            Ok(history)
        })
    }
    fn wait_closed(&self, workflow_id: &str) -> StoreFuture<'_, Option<RunView>> {
        self.inner.wait_closed(workflow_id)
    }
}

/// Runs seeds of `plain_steps` with the store broken until one fails; returns its check.
fn failed_check(breakage: Breakage) -> String {
    for seed in 0..10 {
        let mut workload = plain_steps(seed);
        if breakage == Breakage::StarveWorkflowTasks {
            // An acknowledged signal in a run that never moved is the signal check's to name.
            workload.signals.clear();
            for start in &mut workload.starts {
                start.input["signal"] = Value::Null;
            }
        }
        let options = Options { seed, faults: FaultPlan::none(), wrap_store: Some(broken(breakage)) };
        if let Some(failure) = fullstack::run(&workload, &options).failure {
            return failure.check;
        }
    }
    panic!("{breakage:?}: no seed failed")
}

#[test]
fn the_unbroken_store_passes_the_plain_workload() {
    for seed in 0..3 {
        let options = Options { seed, faults: FaultPlan::none(), wrap_store: None };
        assert_passed(&fullstack::run(&plain_steps(seed), &options));
    }
}

#[test]
fn check_starts_exactly_once_can_fail() {
    assert_eq!(failed_check(Breakage::NewRunPerStart), "check_starts_exactly_once");
}

#[test]
fn check_signals_recorded_once_can_fail() {
    assert_eq!(failed_check(Breakage::AckSignalsUnrecorded), "check_signals_recorded_once");
}

#[test]
fn check_runs_complete_exactly_once_can_fail() {
    assert_eq!(failed_check(Breakage::EndingServedTwice), "check_runs_complete_exactly_once");
}

#[test]
fn check_histories_well_formed_can_fail() {
    assert_eq!(failed_check(Breakage::MisnumberedHistory), "check_histories_well_formed");
}

#[test]
fn check_activity_results_recorded_once_can_fail() {
    assert_eq!(failed_check(Breakage::ForeignWorker), "check_activity_results_recorded_once");
}

#[test]
fn check_answers_expected_can_fail() {
    assert_eq!(failed_check(Breakage::WrongTypeOnRead), "check_answers_expected");
}

#[test]
fn check_liveness_after_heal_can_fail() {
    assert_eq!(failed_check(Breakage::StarveWorkflowTasks), "check_liveness_after_heal");
}

/// `steps` as a later build might have changed it: no activities at all.
async fn steps_without_activities(_ctx: Ctx, _input: Value) -> WorkflowResult<String> {
    Ok(String::new())
}

#[test]
fn check_replay_reproduces_can_fail() {
    let outcome = fullstack::run(&workload::steps(1), &Options::seeded(1));
    assert_passed(&outcome);
    let mut changed = Registry::new();
    changed.register("steps", steps_without_activities);
    let failure = check::check_replay_reproduces(&changed, &outcome.histories).expect_err("changed code diverges");
    assert_eq!(failure.check, "check_replay_reproduces");
}
