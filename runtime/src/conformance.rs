//! The store conformance suite: the protocol's promises, checked against any `RunStore`.
//!
//! Owns one claim per function (idempotent start, conditional append with fencing token,
//! activity leases and their tokens, stale tokens after a restart, signals once per id,
//! acknowledged writes surviving a restart). Every store runs the same suite: the SQLite
//! store, and the engine's `Store` over the simulator's disk (runtime/tests/conformance.rs),
//! and a Postgres store would too. It drives time explicitly and never sleeps.

use crate::builtin;
use crate::store::RunStore;
use serde_json::json;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use tempest_engine::history::Kind;
use tempest_engine::run::AttemptReport;
use tempest_engine::services::Activities;
use tempest_engine::store::{Ack, SignalStatus, WorkflowCompletion};
use tempest_engine::worker::{Outcome, WorkflowWorker};
use tempest_engine::{Registry, Time};

/// A store under test, and how to crash and recover it.
pub trait Subject {
    fn store(&self) -> &dyn RunStore;
    /// Drops the store as a crash would (in-memory state and leases gone) and recovers a new
    /// one from what was durable.
    fn restart(&mut self) -> Pin<Box<dyn Future<Output = ()> + '_>>;
}

const WORKER: &str = "conformance-worker";
const T0: Time = Time(1_000_000);

fn registry() -> Registry {
    let mut registry = Registry::new();
    builtin::register(&mut registry, &mut Activities::new());
    registry
}

/// Runs every claim in order; panics naming the claim that does not hold.
pub async fn run_all(subject: &mut dyn Subject) {
    start_is_idempotent_by_workflow_id(subject).await;
    workflow_append_needs_token_and_base_length(subject).await;
    activity_report_needs_current_lease(subject).await;
    restart_makes_old_tokens_stale(subject).await;
    signals_are_recorded_once_per_id(subject).await;
    acknowledged_writes_survive_restart(subject).await;
}

/// Completes the next workflow task with a fresh worker (full replay); `None` if none.
async fn workflow_step(store: &dyn RunStore, worker: &mut WorkflowWorker, now: Time) -> Option<Ack> {
    let completion = loop {
        let task = store.poll_workflow_task(now, WORKER).await.expect("poll")?;
        let (run_id, token) = (task.run_id.clone(), task.token);
        match worker.process(task) {
            Outcome::Complete(completion) => break completion,
            // A sticky delta for a machine this worker never had: take the full history.
            Outcome::Abandon { .. } => {
                store.abandon_workflow_task(&run_id, token).await.expect("abandon");
            }
            Outcome::Fail(error) => panic!("run {run_id}: the steps workflow fails to replay: {error}"),
        }
    };
    let run_id = completion.run_id.clone();
    let ack = store.complete_workflow_task(now, WORKER, completion).await.expect("complete");
    worker.acknowledged(&run_id, ack == Ack::Accepted);
    Some(ack)
}

/// Drives every run to where it waits: workflow tasks, and activities completed at once.
async fn drive(store: &dyn RunStore, now: Time) {
    let mut worker = WorkflowWorker::new(registry(), 64);
    loop {
        let mut progressed = workflow_step(store, &mut worker, now).await.is_some();
        if let Some(lease) = store.poll_activity_task(now, WORKER, &BTreeSet::new()).await.expect("poll") {
            let output = json!(format!("step{}", lease.task.input.to_value()["index"]));
            let report = AttemptReport::Completed { output: output.into() };
            let ack = store
                .complete_activity_task(now, &lease.task.run_id, lease.task.seq, lease.token, report, WORKER)
                .await
                .expect("complete");
            assert_eq!(ack, Ack::Accepted, "a fresh lease's report is accepted");
            progressed = true;
        }
        if !progressed {
            return;
        }
    }
}

async fn history_kinds(store: &dyn RunStore, workflow_id: &str) -> Vec<Kind> {
    let history = store.history(workflow_id).await.expect("history").expect("the run has a history");
    history.events.into_iter().map(|e| e.kind).collect()
}

pub async fn start_is_idempotent_by_workflow_id(subject: &mut dyn Subject) {
    let store = subject.store();
    let input = json!({ "step_count": 1 });
    let first = store.start(T0, "idem-a", builtin::WORKFLOW_TYPE, input.clone()).await.expect("start");
    let again = store.start(T0, "idem-a", builtin::WORKFLOW_TYPE, input.clone()).await.expect("start");
    let other = store.start(T0, "idem-b", builtin::WORKFLOW_TYPE, input.clone()).await.expect("start");
    assert_eq!(first, again, "start_is_idempotent_by_workflow_id: a retried start names the same run");
    assert_ne!(first, other, "start_is_idempotent_by_workflow_id: two workflow ids, two runs");
    subject.restart().await;
    let after = subject.store().start(T0, "idem-a", builtin::WORKFLOW_TYPE, input).await.expect("start");
    assert_eq!(first, after, "start_is_idempotent_by_workflow_id: a start after a restart names the same run");
    drive(subject.store(), T0).await;
    let started = history_kinds(subject.store(), "idem-a")
        .await
        .iter()
        .filter(|k| matches!(k, Kind::WorkflowStarted { .. }))
        .count();
    assert_eq!(started, 1, "start_is_idempotent_by_workflow_id: one workflow_started");
}

pub async fn workflow_append_needs_token_and_base_length(subject: &mut dyn Subject) {
    let store = subject.store();
    store.start(T0, "append", builtin::WORKFLOW_TYPE, json!({ "step_count": 1 })).await.expect("start");
    let mut worker = WorkflowWorker::new(registry(), 8);
    let task = loop {
        let task = store.poll_workflow_task(T0, WORKER).await.expect("poll").expect("the start waits for a task");
        if task.history.is_empty() && task.base_len == 0 {
            break task;
        }
        // Another claim's run: leave it for `drive`.
        store.abandon_workflow_task(&task.run_id, task.token).await.expect("abandon");
    };
    let Outcome::Complete(completion) = worker.process(task) else { panic!("the first task completes") };
    let wrong_token = WorkflowCompletion { token: completion.token ^ 1, ..completion.clone() };
    let ack = store.complete_workflow_task(T0, WORKER, wrong_token).await.expect("complete");
    assert!(matches!(ack, Ack::Rejected(_)), "workflow_append_needs_token_and_base_length: wrong token accepted");
    let wrong_base = WorkflowCompletion { base_len: completion.base_len + 1, ..completion.clone() };
    let ack = store.complete_workflow_task(T0, WORKER, wrong_base).await.expect("complete");
    assert!(matches!(ack, Ack::Rejected(_)), "workflow_append_needs_token_and_base_length: wrong base accepted");
    let ack = store.complete_workflow_task(T0, WORKER, completion.clone()).await.expect("complete");
    assert_eq!(ack, Ack::Accepted, "workflow_append_needs_token_and_base_length: the right append");
    let ack = store.complete_workflow_task(T0, WORKER, completion).await.expect("complete");
    assert!(matches!(ack, Ack::Rejected(_)), "workflow_append_needs_token_and_base_length: an append twice");
    drive(store, T0).await;
}

pub async fn activity_report_needs_current_lease(subject: &mut dyn Subject) {
    let store = subject.store();
    store.start(T0, "lease", builtin::WORKFLOW_TYPE, json!({ "step_count": 1 })).await.expect("start");
    let mut worker = WorkflowWorker::new(registry(), 8);
    while workflow_step(store, &mut worker, T0).await.is_some() {}
    let first = store.poll_activity_task(T0, WORKER, &BTreeSet::new()).await.expect("poll").expect("a step is due");
    let (run_id, seq) = (first.task.run_id.clone(), first.task.seq);
    let ack = store.heartbeat(T0, &run_id, seq, first.token ^ 1).await.expect("heartbeat");
    assert!(matches!(ack, Ack::Rejected(_)), "activity_report_needs_current_lease: a wrong token's heartbeat");
    assert_eq!(store.heartbeat(T0, &run_id, seq, first.token).await.expect("heartbeat"), Ack::Accepted);
    // The lease lapses: the attempt times out and a retry is leased with a new token.
    let later = Time(first.expires_at.0 + 60_000);
    store.tick(later).await.expect("tick");
    while workflow_step(store, &mut worker, later).await.is_some() {}
    let retry_at = Time(later.0 + 120_000);
    store.tick(retry_at).await.expect("tick");
    let second = store.poll_activity_task(retry_at, WORKER, &BTreeSet::new()).await.expect("poll").expect("a retry");
    assert_eq!((second.task.run_id.as_str(), second.task.seq), (run_id.as_str(), seq));
    assert_ne!(second.token, first.token, "activity_report_needs_current_lease: a new lease, a new token");
    let report = || AttemptReport::Completed { output: json!("step0").into() };
    let ack = store.complete_activity_task(retry_at, &run_id, seq, first.token, report(), WORKER).await.expect("c");
    assert!(matches!(ack, Ack::Rejected(_)), "activity_report_needs_current_lease: the expired lease's report");
    let ack = store.complete_activity_task(retry_at, &run_id, seq, second.token, report(), WORKER).await.expect("c");
    assert_eq!(ack, Ack::Accepted, "activity_report_needs_current_lease: the current lease's report");
    let ack = store.complete_activity_task(retry_at, &run_id, seq, second.token, report(), WORKER).await.expect("c");
    assert!(matches!(ack, Ack::Rejected(_)), "activity_report_needs_current_lease: a report twice");
    drive(store, retry_at).await;
    let completed =
        history_kinds(store, "lease").await.iter().filter(|k| matches!(k, Kind::ActivityCompleted { .. })).count();
    assert_eq!(completed, 1, "activity_report_needs_current_lease: the result recorded once");
}

pub async fn restart_makes_old_tokens_stale(subject: &mut dyn Subject) {
    let store = subject.store();
    store.start(T0, "stale", builtin::WORKFLOW_TYPE, json!({ "step_count": 1 })).await.expect("start");
    let mut worker = WorkflowWorker::new(registry(), 8);
    while workflow_step(store, &mut worker, T0).await.is_some() {}
    let old = store.poll_activity_task(T0, WORKER, &BTreeSet::new()).await.expect("poll").expect("a step is due");
    subject.restart().await;
    let store = subject.store();
    let (run_id, seq) = (old.task.run_id.clone(), old.task.seq);
    let ack = store.heartbeat(T0, &run_id, seq, old.token).await.expect("heartbeat");
    assert!(matches!(ack, Ack::Rejected(_)), "restart_makes_old_tokens_stale: an old epoch's heartbeat");
    let report = AttemptReport::Completed { output: json!("step0").into() };
    let ack = store.complete_activity_task(T0, &run_id, seq, old.token, report, WORKER).await.expect("complete");
    assert!(matches!(ack, Ack::Rejected(_)), "restart_makes_old_tokens_stale: an old epoch's report");
    // In-process workers' appends are not awaited for durability (they die with the store),
    // so the crash may have taken the append that scheduled the step: the workflow task is
    // then redone and schedules the same step again.
    let mut worker = WorkflowWorker::new(registry(), 8);
    while workflow_step(store, &mut worker, T0).await.is_some() {}
    let new = store.poll_activity_task(T0, WORKER, &BTreeSet::new()).await.expect("poll");
    let new = new.expect("restart_makes_old_tokens_stale: the unfinished attempt is claimable again");
    assert_eq!((&new.task.run_id, new.task.seq), (&run_id, seq), "restart_makes_old_tokens_stale: the same step");
    assert_ne!(new.token >> 32, old.token >> 32, "restart_makes_old_tokens_stale: tokens carry the new epoch");
    let report = AttemptReport::Completed { output: json!("step0").into() };
    let ack = store.complete_activity_task(T0, &run_id, seq, new.token, report, WORKER).await.expect("complete");
    assert_eq!(ack, Ack::Accepted);
    drive(store, T0).await;
}

pub async fn signals_are_recorded_once_per_id(subject: &mut dyn Subject) {
    let store = subject.store();
    let input = json!({ "step_count": 0, "signal": "go" });
    store.start(T0, "signal", builtin::WORKFLOW_TYPE, input).await.expect("start");
    let status = store.signal(T0, "nobody", "s", "go", json!(1)).await.expect("signal");
    assert_eq!(status, SignalStatus::UnknownWorkflow, "signals_are_recorded_once_per_id: an unknown workflow");
    drive(store, T0).await;
    let first = store.signal(T0, "signal", "s1", "go", json!(1)).await.expect("signal");
    let again = store.signal(T0, "signal", "s1", "go", json!(1)).await.expect("signal");
    assert_eq!(first, SignalStatus::Pending, "signals_are_recorded_once_per_id: accepted");
    assert_eq!(again, SignalStatus::Pending, "signals_are_recorded_once_per_id: a retry is the same signal");
    drive(store, T0).await;
    let recorded = store.signal(T0, "signal", "s1", "go", json!(1)).await.expect("signal");
    assert_eq!(recorded, SignalStatus::Recorded, "signals_are_recorded_once_per_id: recorded after the task");
    let kinds = history_kinds(store, "signal").await;
    let count =
        kinds.iter().filter(|k| matches!(k, Kind::SignalReceived { signal_id, .. } if signal_id == "s1")).count();
    assert_eq!(count, 1, "signals_are_recorded_once_per_id: in the history once");
    let view = store.run("signal").await.expect("run").expect("known");
    assert_eq!(view.status, "completed", "signals_are_recorded_once_per_id: the signal let the run finish");
    let late = store.signal(T0, "signal", "s2", "go", json!(2)).await.expect("signal");
    assert_eq!(late, SignalStatus::RunClosed, "signals_are_recorded_once_per_id: a closed run takes no signal");
}

pub async fn acknowledged_writes_survive_restart(subject: &mut dyn Subject) {
    let store = subject.store();
    let input = json!({ "step_count": 2, "signal": "go" });
    store.start(T0, "durable", builtin::WORKFLOW_TYPE, input).await.expect("start");
    drive(store, T0).await;
    let status = store.signal(T0, "durable", "d1", "go", json!("x")).await.expect("signal");
    assert_eq!(status, SignalStatus::Pending);
    let before = store.history("durable").await.expect("history");
    subject.restart().await;
    let store = subject.store();
    assert_eq!(store.history("durable").await.expect("history"), before, "acknowledged_writes_survive_restart");
    let status = store.signal(T0, "durable", "d1", "go", json!("x")).await.expect("signal");
    assert_eq!(status, SignalStatus::Pending, "acknowledged_writes_survive_restart: the accepted signal is kept");
    drive(store, T0).await;
    let view = store.run("durable").await.expect("run").expect("known");
    assert_eq!(view.status, "completed", "acknowledged_writes_survive_restart: the run finishes after a restart");
    assert_eq!(view.result, Some(json!("step0,step1,signal:\"x\"")));
}
